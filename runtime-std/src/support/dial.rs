//! Dialing a new upstream connection, as steps: which backend of the pool to resolve, which
//! address to connect to and for how long, what to report when an attempt ends. The engine
//! names the backend; the others follow it as failover, every address of each in turn.
//! Nothing here blocks or awaits: a runtime performs each step (async or blocking) and
//! feeds back its outcome, so both runtimes share one order, one time budget and one set
//! of reports.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mxgate_core::config::Backend;
use mxgate_core::PoolId;

use super::backend::BackendAddrs;
use super::health::HealthReporter;
use super::metrics::Metrics;

/// What the runtime does next.
#[derive(Debug)]
pub enum DialStep {
    /// Resolve this backend's name (a blocking resolver: off any event loop), then call
    /// [`DialPlan::resolved`].
    Resolve(Backend),
    /// Connect to `addr`, giving up after `timeout`, then call [`DialPlan::connected`] or
    /// [`DialPlan::connect_failed`].
    Connect { addr: SocketAddr, timeout: Duration },
    /// Every address of every backend failed (the last error), or the deadline passed
    /// (`TimedOut`).
    GiveUp(io::Error),
}

/// The backend being tried and its addresses not tried yet.
struct Attempt {
    backend: usize,
    candidates: std::vec::IntoIter<SocketAddr>,
    /// Each address's share of the connect time.
    share: Duration,
}

/// One new connection's way through the pool's backends.
pub struct DialPlan<'a> {
    pool: PoolId,
    addrs: &'a [BackendAddrs],
    health: &'a HealthReporter,
    metrics: &'a Metrics,
    /// Backends still to try, in order.
    order: std::vec::IntoIter<usize>,
    attempt: Option<Attempt>,
    /// The backend whose name is being resolved.
    resolving: Option<usize>,
    connect_timeout: Duration,
    deadline: Option<Instant>,
    last_err: io::Error,
}

impl<'a> DialPlan<'a> {
    /// A plan trying the backends of `pool` in `order`, each address with a share of
    /// `connect_timeout`, and nothing after `deadline` if one is given (a runtime whose
    /// engine timer does not cancel the dial).
    pub fn new(
        pool: PoolId,
        order: Vec<usize>,
        addrs: &'a [BackendAddrs],
        connect_timeout: Duration,
        deadline: Option<Instant>,
        health: &'a HealthReporter,
        metrics: &'a Metrics,
    ) -> DialPlan<'a> {
        DialPlan {
            pool,
            addrs,
            health,
            metrics,
            order: order.into_iter(),
            attempt: None,
            resolving: None,
            connect_timeout,
            deadline,
            last_err: io::Error::new(
                io::ErrorKind::NotFound,
                format!("upstream pool {pool} has no backends"),
            ),
        }
    }

    /// The next step at `now`.
    pub fn next_step(&mut self, now: Instant) -> DialStep {
        let left = self
            .deadline
            .map(|deadline| deadline.saturating_duration_since(now));
        if left.is_some_and(|left| left.is_zero()) {
            return DialStep::GiveUp(io::ErrorKind::TimedOut.into());
        }
        loop {
            if let Some(attempt) = &mut self.attempt {
                if let Some(addr) = attempt.candidates.next() {
                    let timeout = left.map_or(attempt.share, |left| attempt.share.min(left));
                    return DialStep::Connect { addr, timeout };
                }
                // Every address of this backend failed.
                self.health.connect_failed(self.pool, attempt.backend);
                self.attempt = None;
            }
            let Some(backend) = self.order.next() else {
                let err = std::mem::replace(&mut self.last_err, io::ErrorKind::NotFound.into());
                return DialStep::GiveUp(err);
            };
            let Some(addrs) = self.addrs.get(backend) else {
                continue;
            };
            match addrs.cached(now) {
                Some(candidates) => self.start(backend, candidates),
                None => {
                    self.resolving = Some(backend);
                    return DialStep::Resolve(addrs.backend.clone());
                }
            }
        }
    }

    /// The outcome of the last [`DialStep::Resolve`].
    pub fn resolved(&mut self, outcome: io::Result<Vec<SocketAddr>>, now: Instant) {
        let Some(backend) = self.resolving.take() else {
            return;
        };
        let Some(addrs) = self.addrs.get(backend) else {
            return;
        };
        match outcome {
            Ok(found) => {
                addrs.store(found, now);
                // As stored: without repeats, the last good address first.
                let candidates = addrs.cached(now).unwrap_or_default();
                self.start(backend, candidates);
            }
            Err(err) => {
                tracing::warn!(backend = %addrs.backend.authority(), error = %err, "cannot resolve backend");
                self.metrics.upstream_connect_failed(self.pool);
                self.health.connect_failed(self.pool, backend);
                self.last_err = err;
            }
        }
    }

    /// The last [`DialStep::Connect`] succeeded: returns the backend it is to.
    pub fn connected(&mut self, addr: SocketAddr) -> usize {
        let backend = self.attempt.as_ref().map_or(0, |a| a.backend);
        if let Some(addrs) = self.addrs.get(backend) {
            addrs.mark_good(addr);
        }
        self.health.connect_ok(self.pool, backend);
        backend
    }

    /// The last [`DialStep::Connect`] failed.
    pub fn connect_failed(&mut self, addr: SocketAddr, err: io::Error) {
        tracing::debug!(%addr, error = %err, "upstream connect failed");
        self.metrics.upstream_connect_failed(self.pool);
        self.last_err = err;
    }

    fn start(&mut self, backend: usize, candidates: Vec<SocketAddr>) {
        // With several addresses, one that drops SYNs must not use up the whole connect
        // time: each gets a share (at least a second). Refusals fail fast anyway.
        let share =
            (self.connect_timeout / candidates.len().max(1) as u32).max(Duration::from_secs(1));
        self.attempt = Some(Attempt {
            backend,
            candidates: candidates.into_iter(),
            share,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::testutil::config;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn backend(host: &str) -> BackendAddrs {
        BackendAddrs::new(&Backend {
            host: host.into(),
            port: 8008,
        })
    }

    /// What a plan reports to (reporting nowhere), with a 10 s connect time.
    struct Reports {
        health: HealthReporter,
        metrics: Metrics,
    }

    impl Reports {
        fn new() -> Reports {
            let config = config();
            Reports {
                health: HealthReporter::disabled(&config),
                metrics: Metrics::new(&config),
            }
        }

        fn plan<'a>(
            &'a self,
            addrs: &'a [BackendAddrs],
            order: Vec<usize>,
            deadline: Option<Instant>,
        ) -> DialPlan<'a> {
            let connect_timeout = Duration::from_secs(10);
            DialPlan::new(
                0,
                order,
                addrs,
                connect_timeout,
                deadline,
                &self.health,
                &self.metrics,
            )
        }
    }

    fn connect_to(step: DialStep) -> (SocketAddr, Duration) {
        match step {
            DialStep::Connect { addr, timeout } => (addr, timeout),
            other => panic!("expected a connect, got {other:?}"),
        }
    }

    #[test]
    fn the_chosen_backend_first_then_the_others_every_address_in_turn() {
        let reports = Reports::new();
        let addrs = [backend("localhost"), backend("10.0.0.7")];
        let now = Instant::now();
        let mut plan = reports.plan(&addrs, vec![1, 0], None);
        assert_eq!(
            connect_to(plan.next_step(now)),
            (sa("10.0.0.7:8008"), Duration::from_secs(10))
        );
        plan.connect_failed(sa("10.0.0.7:8008"), io::ErrorKind::ConnectionRefused.into());
        // Two addresses share the connect time.
        assert_eq!(
            connect_to(plan.next_step(now)),
            (sa("127.0.0.1:8008"), Duration::from_secs(5))
        );
        plan.connect_failed(
            sa("127.0.0.1:8008"),
            io::ErrorKind::ConnectionRefused.into(),
        );
        let (addr, _) = connect_to(plan.next_step(now));
        assert_eq!(addr, sa("[::1]:8008"));
        assert_eq!(plan.connected(addr), 0);
        // The address that worked is tried first next time.
        assert_eq!(addrs[0].cached(now).unwrap()[0], sa("[::1]:8008"));
    }

    #[test]
    fn giving_up_reports_the_last_error() {
        let reports = Reports::new();
        let addrs = [backend("10.0.0.7")];
        let now = Instant::now();
        let mut plan = reports.plan(&addrs, vec![0], None);
        let (addr, _) = connect_to(plan.next_step(now));
        plan.connect_failed(addr, io::ErrorKind::ConnectionRefused.into());
        match plan.next_step(now) {
            DialStep::GiveUp(err) => assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused),
            other => panic!("expected to give up, got {other:?}"),
        }
        let mut empty = reports.plan(&addrs, vec![], None);
        assert!(
            matches!(empty.next_step(now), DialStep::GiveUp(e) if e.kind() == io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn names_are_resolved_and_failures_move_on() {
        let reports = Reports::new();
        let addrs = [backend("synapse.internal"), backend("10.0.0.7")];
        let now = Instant::now();
        let mut plan = reports.plan(&addrs, vec![0, 1], None);
        assert!(
            matches!(plan.next_step(now), DialStep::Resolve(b) if b.host == "synapse.internal")
        );
        plan.resolved(Ok(vec![sa("10.0.0.2:8008"), sa("10.0.0.2:8008")]), now);
        // Stored without repeats: one address, the whole connect time.
        assert_eq!(
            connect_to(plan.next_step(now)),
            (sa("10.0.0.2:8008"), Duration::from_secs(10))
        );
        assert_eq!(addrs[0].cached(now).unwrap(), [sa("10.0.0.2:8008")]);

        let mut plan = reports.plan(&addrs, vec![0, 1], None);
        let later = now + super::super::backend::RESOLVE_TTL;
        assert!(matches!(plan.next_step(later), DialStep::Resolve(_)));
        plan.resolved(Err(io::ErrorKind::NotFound.into()), later);
        assert_eq!(connect_to(plan.next_step(later)).0, sa("10.0.0.7:8008"));
    }

    #[test]
    fn a_deadline_caps_each_attempt_and_ends_the_plan() {
        let reports = Reports::new();
        let addrs = [backend("localhost")];
        let now = Instant::now();
        let deadline = now + Duration::from_millis(1500);
        let mut plan = reports.plan(&addrs, vec![0], Some(deadline));
        assert_eq!(
            connect_to(plan.next_step(now)),
            (sa("127.0.0.1:8008"), Duration::from_millis(1500))
        );
        plan.connect_failed(sa("127.0.0.1:8008"), io::ErrorKind::TimedOut.into());
        assert!(matches!(
            plan.next_step(deadline),
            DialStep::GiveUp(e) if e.kind() == io::ErrorKind::TimedOut
        ));
    }
}
