//! Upstream connections: an idle keep-alive socket of the backend the engine chose, or a new
//! connection trying that backend then the others, every address of each, within a deadline.
//! The bookkeeping (idle pools, the dial plan, address caches, health reports) is
//! `support`'s; only the blocking calls are here.

use std::io;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mxgate_core::{Config, PoolId, UpstreamPool};

use crate::support::backend::{self, BackendAddrs};
use crate::support::dial::{DialPlan, DialStep};
use crate::support::health::HealthReporter;
use crate::support::metrics::Metrics;
use crate::support::net;
use crate::support::pool::IdlePool;

struct PoolState {
    /// Idle sockets are kept in non-blocking mode, so that checking them never blocks.
    idle: IdlePool<TcpStream>,
    addrs: Vec<BackendAddrs>,
    /// A reload dropped or changed the pool: connections released into it are closed.
    retired: AtomicBool,
}

impl PoolState {
    fn new(pool: &UpstreamPool) -> PoolState {
        PoolState {
            idle: IdlePool::new(pool),
            addrs: pool.backends.iter().map(BackendAddrs::new).collect(),
            retired: AtomicBool::new(false),
        }
    }
}

/// Every pool's idle connections and backend addresses, for one configuration generation
/// (a reload's generation shares the pools it keeps: [`Upstreams::reconfigured`]).
pub(crate) struct Upstreams {
    pools: Vec<Arc<PoolState>>,
    /// `timeouts.upstream_connect`, shared out among the addresses of a backend.
    connect_timeout: Duration,
    /// A write to the upstream must make progress within `timeouts.send`.
    write_timeout: Duration,
    /// Connect outcomes per backend, for passive ejection.
    health: HealthReporter,
}

impl Upstreams {
    pub fn new(config: &Config, health: HealthReporter) -> Upstreams {
        Upstreams {
            pools: config
                .pools
                .iter()
                .map(|p| Arc::new(PoolState::new(p)))
                .collect(),
            connect_timeout: config.timeouts.upstream_connect,
            write_timeout: config.timeouts.send,
            health,
        }
    }

    /// The pools of a reloaded `config`: `kept[p]` names the pool of this generation that
    /// pool `p` continues (sharing its idle connections and resolved addresses); the other
    /// pools of this generation are retired (idle connections closed, later releases too).
    pub fn reconfigured(
        &self,
        config: &Config,
        kept: &[Option<PoolId>],
        health: HealthReporter,
    ) -> Upstreams {
        let pools =
            crate::support::reload::carry_pools(&self.pools, config, kept, PoolState::new, |old| {
                old.retired.store(true, Ordering::Release);
                drop(old.idle.clear());
            });
        Upstreams {
            pools,
            connect_timeout: config.timeouts.upstream_connect,
            write_timeout: config.timeouts.send,
            health,
        }
    }

    /// Where connect outcomes and broken answers are reported (passive ejection).
    pub(crate) fn health(&self) -> &HealthReporter {
        &self.health
    }

    /// A blocking connection to `backend` of `pool`, the others being tried after it as
    /// failover (never a pooled one when `fresh`): the socket, the backend it is to, and
    /// whether it was reused. Fails with `TimedOut` once `deadline` passes, or with the last
    /// error when every address of every backend failed.
    pub fn obtain(
        &self,
        pool: PoolId,
        backend: usize,
        fresh: bool,
        deadline: Instant,
        metrics: &Metrics,
    ) -> io::Result<(TcpStream, usize, bool)> {
        let state = &self.pools[pool];
        let order: Vec<usize> = state.idle.backend_order_from(backend).collect();
        if let (false, Some(&backend)) = (fresh, order.first()) {
            if let Some(stream) = state.idle.take(backend, Instant::now(), net::idle_usable) {
                stream.set_nonblocking(false)?;
                return Ok((stream, backend, true));
            }
        }
        let mut plan = DialPlan::new(
            pool,
            order,
            &state.addrs,
            self.connect_timeout,
            Some(deadline),
            &self.health,
            metrics,
        );
        loop {
            match plan.next_step(Instant::now()) {
                DialStep::Resolve(backend) => {
                    plan.resolved(backend::resolve_blocking(&backend), Instant::now());
                }
                DialStep::Connect { addr, timeout } => {
                    match TcpStream::connect_timeout(&addr, timeout) {
                        Ok(stream) => {
                            if let Err(err) = net::tune(&stream) {
                                tracing::debug!(%addr, error = %err, "cannot set upstream socket options");
                            }
                            stream.set_write_timeout(Some(self.write_timeout))?;
                            return Ok((stream, plan.connected(addr), false));
                        }
                        Err(err) => plan.connect_failed(addr, err),
                    }
                }
                DialStep::GiveUp(err) => return Err(err),
            }
        }
    }

    /// Parks a connection the engine called reusable (an evicted one is closed here).
    pub fn release(&self, pool: PoolId, backend: usize, stream: TcpStream) {
        let state = self.pools.get(pool);
        let state = state.filter(|s| !s.retired.load(Ordering::Acquire));
        if let (Some(state), Ok(())) = (state, stream.set_nonblocking(true)) {
            drop(state.idle.put(backend, stream, Instant::now()));
        }
    }

    /// Closes idle connections that expired or that the backend closed.
    pub fn sweep(&self) {
        for p in &self.pools {
            drop(p.idle.sweep(Instant::now(), net::idle_usable));
        }
    }

    /// Closes every idle connection.
    pub fn clear(&self) {
        for p in &self.pools {
            drop(p.idle.clear());
        }
    }
}
