//! Upstream connections: obtaining one for a pool (an idle keep-alive connection of the
//! round-robin backend, or a new one, trying each backend and each of its addresses in
//! turn), returning it to the idle pool, and sweeping out expired or closed idle ones.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mxgate_core::{Config, PoolId, UpstreamPool};
use mxgate_std::support::backend::{self, BackendAddrs};
use mxgate_std::support::dial::{DialPlan, DialStep};
use mxgate_std::support::health::HealthReporter;
use mxgate_std::support::metrics::Metrics;
use mxgate_std::support::net;
use mxgate_std::support::pool::IdlePool;
use smol::Async;

use crate::stream::bounded;

/// A connection to one backend of one pool.
pub(crate) struct UpstreamConn {
    pub stream: Async<TcpStream>,
    pub pool: PoolId,
    pub backend: usize,
    pub addr: SocketAddr,
    /// Bytes queued for writing (empty while the connection is idle; its capacity is kept
    /// for the next request on it).
    pub queue: VecDeque<Bytes>,
}

/// An idle connection, boxed so that handing it to a connection task and back moves a
/// pointer (the task keeps only that while it holds the connection).
type IdleConn = Box<UpstreamConn>;

struct PoolState {
    idle: IdlePool<IdleConn>,
    addrs: Vec<BackendAddrs>,
    /// A reload dropped or changed the pool: connections released into it are closed.
    retired: AtomicBool,
}

/// Every pool's idle connections and backend addresses, for one configuration generation.
/// A reload's generation shares the state of the pools it keeps unchanged
/// ([`Upstreams::reconfigured`]), so their idle connections serve both.
pub(crate) struct Upstreams {
    pools: Vec<Arc<PoolState>>,
    /// `timeouts.upstream_connect`, shared out among the addresses of a backend.
    connect_timeout: Duration,
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
            health,
        }
    }

    /// The pools of a reloaded `config`: `kept[p]` names the pool of this generation that
    /// pool `p` continues (sharing its idle connections and resolved addresses); the other
    /// pools of this generation are retired (their idle connections closed now, and those
    /// released into them later too).
    pub fn reconfigured(
        &self,
        config: &Config,
        kept: &[Option<PoolId>],
        health: HealthReporter,
    ) -> Upstreams {
        let pools = mxgate_std::support::reload::carry_pools(
            &self.pools,
            config,
            kept,
            PoolState::new,
            |old| {
                old.retired.store(true, Ordering::Release);
                drop(old.idle.clear());
            },
        );
        Upstreams {
            pools,
            connect_timeout: config.timeouts.upstream_connect,
            health,
        }
    }

    /// Where connect outcomes and broken answers are reported (passive ejection).
    pub(crate) fn health(&self) -> &HealthReporter {
        &self.health
    }

    /// An idle connection to the first backend the engine's choice `backend` stands for, if
    /// one is parked (never when `fresh`). Synchronous: the usual case of a request needs no
    /// future (and no allocation) to get its upstream connection.
    pub fn take_idle(&self, pool: PoolId, backend: usize, fresh: bool) -> Option<IdleConn> {
        if fresh {
            return None;
        }
        let state = self.pools.get(pool)?;
        let first = state.idle.backend_order_from(backend).next()?;
        let mut conn =
            state
                .idle
                .take_recent_unchecked(first, Instant::now(), PROBE_AFTER, still_open)?;
        // Parked by a connection on an earlier configuration, the pool's id may differ.
        conn.pool = pool;
        Some(conn)
    }

    /// A new connection to `backend` of `pool` (the engine's choice; the others are tried
    /// after it as failover). Errors when every address of every backend failed.
    pub async fn connect(
        &self,
        pool: PoolId,
        backend: usize,
        metrics: &Metrics,
    ) -> io::Result<IdleConn> {
        let state = self.pools.get(pool).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no upstream pool {pool}"),
            )
        })?;
        let order: Vec<usize> = state.idle.backend_order_from(backend).collect();
        // No deadline of its own: the driver races this future against the engine's
        // connect deadline and drops it when that comes first.
        let mut plan = DialPlan::new(
            pool,
            order,
            &state.addrs,
            self.connect_timeout,
            None,
            &self.health,
            metrics,
        );
        loop {
            match plan.next_step(Instant::now()) {
                DialStep::Resolve(backend) => {
                    let found = smol::unblock(move || backend::resolve_blocking(&backend)).await;
                    plan.resolved(found, Instant::now());
                }
                DialStep::Connect { addr, timeout } => {
                    match bounded(Async::<TcpStream>::connect(addr), timeout).await {
                        Ok(stream) => {
                            if let Err(err) = net::tune(stream.get_ref()) {
                                tracing::debug!(%addr, error = %err, "cannot set upstream socket options");
                            }
                            let backend = plan.connected(addr);
                            return Ok(Box::new(UpstreamConn {
                                stream,
                                pool,
                                backend,
                                addr,
                                queue: VecDeque::new(),
                            }));
                        }
                        Err(err) => plan.connect_failed(addr, err),
                    }
                }
                DialStep::GiveUp(err) => return Err(err),
            }
        }
    }

    /// Parks a connection the engine called reusable.
    pub fn release(&self, conn: IdleConn) {
        if let Some(state) = self.pools.get(conn.pool) {
            if state.retired.load(Ordering::Acquire) {
                return;
            }
            // An evicted (oldest) connection is closed by dropping it here, outside the lock.
            let backend = conn.backend;
            drop(state.idle.put(backend, conn, Instant::now()));
        }
    }

    /// Closes idle connections that expired or that the backend closed.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        self.pools
            .iter()
            .map(|p| p.idle.sweep(now, still_open).len())
            .sum()
    }

    /// Closes every idle connection.
    pub fn clear(&self) {
        for p in &self.pools {
            drop(p.idle.clear());
        }
    }
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

/// Idle connections parked for less than this are reused without the liveness probe (a
/// `recv(MSG_PEEK)` per reuse, ~1 of 7 syscalls of a small keep-alive exchange). Under load
/// the pool hands back the most recently parked connection within microseconds. A backend
/// that closes a connection within this time of answering on it costs at worst a retry
/// (idempotent requests) or a 502, as a close racing the probe would anyway.
const PROBE_AFTER: Duration = Duration::from_millis(10);

/// An idle connection is usable while reading it would block: the backend neither closed it
/// (read returns 0) nor sent anything unasked (a stray byte would corrupt the next response).
fn still_open(conn: &IdleConn) -> bool {
    net::idle_usable(conn.stream.get_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn closed_idle_connections_are_noticed() {
        smol::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let stream = Async::<TcpStream>::connect(addr).await.unwrap();
            let (server, _) = listener.accept().unwrap();
            let client = Box::new(UpstreamConn {
                stream,
                pool: 0,
                backend: 0,
                addr,
                queue: VecDeque::new(),
            });
            assert!(still_open(&client));
            drop(server);
            // The FIN arrives asynchronously.
            for _ in 0..100 {
                if !still_open(&client) {
                    return;
                }
                smol::Timer::after(Duration::from_millis(10)).await;
            }
            panic!("close not noticed");
        });
    }
}
