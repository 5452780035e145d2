//! Which backend of a worker pool gets a request: the balancing policies, as one pure
//! function over the pool's backends, their health and shared counters.
//!
//! [`pick`] returns `None` when no backend is healthy: the caller then sends the request to
//! the main process (Synapse's main process can serve every worker endpoint), as ESS's
//! HAProxy does when a worker backend has no server up.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::hash::{self, BackendId, KeyKind, RequestParts};
use super::health::{Availability, HealthFlags};

/// How a pool spreads requests over its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Rendezvous hashing on a request key: the same key reaches the same backend.
    Hash(KeyKind),
    RoundRobin,
    /// The backend with the fewest requests in flight (ties rotate).
    LeastConnections,
}

impl Policy {
    /// The key a request must yield for this policy.
    pub fn key_kind(self) -> Option<KeyKind> {
        match self {
            Policy::Hash(k) => Some(k),
            _ => None,
        }
    }
}

/// `round_robin`, `least_connections`, or `hash:<key>` with a [`KeyKind`] name.
impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Hash(k) => write!(f, "hash:{k}"),
            Policy::RoundRobin => f.write_str("round_robin"),
            Policy::LeastConnections => f.write_str("least_connections"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("unknown balancing policy {0:?} (expected round_robin, least_connections or hash:<user|room|origin|client|uri>)")]
    Unknown(String),
    #[error(transparent)]
    Key(#[from] hash::UnknownKeyKind),
}

impl FromStr for Policy {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "round_robin" => Ok(Policy::RoundRobin),
            "least_connections" => Ok(Policy::LeastConnections),
            _ => match s.strip_prefix("hash:") {
                Some(key) => Ok(Policy::Hash(key.parse()?)),
                None => Err(PolicyError::Unknown(s.to_owned())),
            },
        }
    }
}

/// The policy for one request: an endpoint that must be sticky (`/sync` by user,
/// `/messages` by room, `/send/` by origin) hashes on its key whatever the pool's policy.
pub fn effective_policy(pool: Policy, sticky: Option<KeyKind>) -> Policy {
    sticky.map_or(pool, Policy::Hash)
}

/// Counters shared by every connection using a pool.
#[derive(Debug)]
pub struct PoolCounters {
    next: AtomicUsize,
    in_flight: Box<[AtomicUsize]>,
}

impl PoolCounters {
    pub fn new(backends: usize) -> Self {
        PoolCounters {
            next: AtomicUsize::new(0),
            in_flight: (0..backends).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// A request to `backend` started (call once per picked request).
    pub fn started(&self, backend: usize) {
        if let Some(c) = self.in_flight.get(backend) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// That request ended (response done, failed or abandoned). Never underflows.
    pub fn finished(&self, backend: usize) {
        if let Some(c) = self.in_flight.get(backend) {
            let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    pub fn in_flight(&self, backend: usize) -> usize {
        self.in_flight
            .get(backend)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// Picks a healthy backend, claiming a half-open backend's single trial if it picks one.
/// `key` is the request's [`hash::routing_key`] hash (needed by `Hash` only; without it,
/// `Hash` falls back to round robin). `None`: no healthy backend.
pub fn pick(
    policy: Policy,
    backends: &[BackendId],
    health: &HealthFlags,
    key: Option<u64>,
    counters: &PoolCounters,
) -> Option<usize> {
    let n = backends.len();
    if n == 0 {
        return None;
    }
    match (policy, key) {
        (Policy::Hash(_), Some(key)) => hash::rendezvous(key, backends, |i| health.try_use(i)),
        (Policy::RoundRobin | Policy::Hash(_), _) => {
            // One backend: nothing to rotate (and no atomic operation per request).
            let start = if n == 1 {
                0
            } else {
                counters.next.fetch_add(1, Ordering::Relaxed)
            };
            (0..n)
                .map(|j| (start.wrapping_add(j)) % n)
                .find(|&i| health.try_use(i))
        }
        (Policy::LeastConnections, _) => {
            let start = counters.next.fetch_add(1, Ordering::Relaxed);
            // A failed claim only happens on a half-open backend whose trial someone
            // else took; it is then `Trial`, so the next round skips it.
            for _ in 0..=n {
                let best = (0..n)
                    .map(|j| (start.wrapping_add(j)) % n)
                    .filter(|&i| health.is_usable(i))
                    .min_by_key(|&i| {
                        // Prefer a half-open backend's trial: it must get one to recover.
                        let trial = health.state(i) != Availability::HalfOpen;
                        (trial, counters.in_flight(i))
                    })?;
                if health.try_use(best) {
                    return Some(best);
                }
            }
            None
        }
    }
}

/// One worker pool at run time: its backends, policy, health view and counters. Shared
/// (`Arc`) by every connection; nothing here needs a lock.
#[derive(Debug)]
pub struct PoolRuntime {
    identities: Vec<String>,
    backends: Vec<BackendId>,
    policy: Policy,
    health: Arc<HealthFlags>,
    counters: PoolCounters,
}

impl PoolRuntime {
    /// `identities` are the backends' `host:port` ([`crate::config::Backend::authority`]),
    /// in configuration order; `health` comes from the pool's
    /// [`super::health::PoolHealth::flags`] (or `HealthFlags::new(n)` without health checks).
    pub fn new(identities: Vec<String>, policy: Policy, health: Arc<HealthFlags>) -> Self {
        let backends = identities.iter().map(|s| BackendId::new(s)).collect();
        let counters = PoolCounters::new(identities.len());
        PoolRuntime {
            identities,
            backends,
            policy,
            health,
            counters,
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn identity(&self, backend: usize) -> Option<&str> {
        self.identities.get(backend).map(String::as_str)
    }

    pub fn health(&self) -> &HealthFlags {
        &self.health
    }

    /// The shared health view, for the runtime's [`super::health::PoolHealth::with_flags`].
    pub fn health_flags(&self) -> Arc<HealthFlags> {
        Arc::clone(&self.health)
    }

    pub fn counters(&self) -> &PoolCounters {
        &self.counters
    }

    /// A request to `backend` started: counted in flight when the pool's policy reads
    /// that count (least connections); other pools skip the atomic operation per request.
    /// Pair with [`PoolRuntime::exchange_finished`].
    pub fn exchange_started(&self, backend: usize) {
        if self.policy == Policy::LeastConnections {
            self.counters.started(backend);
        }
    }

    /// That request ended (response done, failed or abandoned).
    pub fn exchange_finished(&self, backend: usize) {
        if self.policy == Policy::LeastConnections {
            self.counters.finished(backend);
        }
    }

    /// Picks a backend for a request the router matched with `sticky`; computes the key
    /// only when the policy hashes. Call [`PoolCounters::started`]/`finished` around the
    /// exchange (least connections reads them).
    pub fn pick(&self, sticky: Option<KeyKind>, request: &RequestParts<'_>) -> Option<usize> {
        let policy = effective_policy(self.policy, sticky);
        let key = policy
            .key_kind()
            .map(|k| hash::routing_key(k, request).hash);
        pick(policy, &self.backends, &self.health, key, &self.counters)
    }
}

#[cfg(test)]
mod tests {
    use core::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use super::super::health::{HealthConfig, PoolHealth};
    use super::*;

    fn ids(n: usize) -> Vec<BackendId> {
        (0..n)
            .map(|i| BackendId::new(&format!("w{i}:8083")))
            .collect()
    }

    #[test]
    fn policies_parse_and_print() {
        for p in [
            Policy::RoundRobin,
            Policy::LeastConnections,
            Policy::Hash(KeyKind::User),
            Policy::Hash(KeyKind::Uri),
        ] {
            assert_eq!(p.to_string().parse::<Policy>(), Ok(p));
        }
        assert!("hash".parse::<Policy>().is_err());
        assert!("hash:ip".parse::<Policy>().is_err());
        assert!("random".parse::<Policy>().is_err());
        assert_eq!(
            effective_policy(Policy::LeastConnections, Some(KeyKind::Room)),
            Policy::Hash(KeyKind::Room)
        );
        assert_eq!(
            effective_policy(Policy::RoundRobin, None),
            Policy::RoundRobin
        );
    }

    #[test]
    fn round_robin_rotates_and_skips_unhealthy() {
        let b = ids(3);
        let health = HealthFlags::new(3);
        let c = PoolCounters::new(3);
        let got: Vec<_> = (0..6)
            .map(|_| pick(Policy::RoundRobin, &b, &health, None, &c).unwrap())
            .collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2]);
        // Take backend 1 down through a real health machine.
        let mut h = PoolHealth::new(
            3,
            HealthConfig {
                eject_after: 1,
                ..HealthConfig::default()
            },
            crate::tests::epoch(),
        );
        h.connect_failed(1, crate::tests::epoch());
        let flags = h.flags();
        let c = PoolCounters::new(3);
        let got: Vec<_> = (0..4)
            .map(|_| pick(Policy::RoundRobin, &b, &flags, None, &c).unwrap())
            .collect();
        assert_eq!(got, [0, 2, 2, 0]);
        for i in 0..3 {
            h.connect_failed(i, crate::tests::epoch());
        }
        assert_eq!(pick(Policy::RoundRobin, &b, &flags, None, &c), None);
        assert_eq!(pick(Policy::LeastConnections, &b, &flags, None, &c), None);
        assert_eq!(
            pick(Policy::Hash(KeyKind::User), &b, &flags, Some(7), &c),
            None
        );
        assert_eq!(
            pick(Policy::RoundRobin, &[], &HealthFlags::new(0), None, &c),
            None
        );
    }

    #[test]
    fn least_connections_prefers_the_idlest() {
        let b = ids(3);
        let health = HealthFlags::new(3);
        let c = PoolCounters::new(3);
        c.started(0);
        c.started(0);
        c.started(2);
        assert_eq!(
            pick(Policy::LeastConnections, &b, &health, None, &c),
            Some(1)
        );
        c.started(1);
        c.started(1);
        assert_eq!(
            pick(Policy::LeastConnections, &b, &health, None, &c),
            Some(2)
        );
        c.finished(0);
        c.finished(0);
        c.finished(0); // one too many: stays at zero
        assert_eq!(c.in_flight(0), 0);
        assert_eq!(
            pick(Policy::LeastConnections, &b, &health, None, &c),
            Some(0)
        );
        // Ties rotate.
        let c = PoolCounters::new(3);
        let mut seen = [0; 3];
        for _ in 0..30 {
            seen[pick(Policy::LeastConnections, &b, &health, None, &c).unwrap()] += 1;
        }
        assert_eq!(seen, [10, 10, 10]);
    }

    #[test]
    fn half_open_gets_exactly_one_trial() {
        let t0 = crate::tests::epoch();
        let mut h = PoolHealth::new(
            2,
            HealthConfig {
                probe_interval: None,
                eject_after: 1,
                ..HealthConfig::default()
            },
            t0,
        );
        h.connect_failed(0, t0);
        h.handle_timeout(t0 + Duration::from_secs(10));
        let flags = h.flags();
        let b = ids(2);
        let c = PoolCounters::new(2);
        assert_eq!(
            pick(Policy::LeastConnections, &b, &flags, None, &c),
            Some(0),
            "the trial first"
        );
        for _ in 0..5 {
            assert_eq!(
                pick(Policy::LeastConnections, &b, &flags, None, &c),
                Some(1)
            );
        }
        let mut trials = 0;
        h.handle_timeout(t0 + Duration::from_secs(30)); // lost trial released
        for _ in 0..6 {
            if pick(Policy::RoundRobin, &b, &flags, None, &c) == Some(0) {
                trials += 1;
            }
        }
        assert_eq!(trials, 1);
    }

    #[test]
    fn hash_is_sticky_and_fails_over_to_the_second_choice() {
        let b = ids(4);
        let health = HealthFlags::new(4);
        let c = PoolCounters::new(4);
        let policy = Policy::Hash(KeyKind::User);
        for key in 0..200u64 {
            let first = pick(policy, &b, &health, Some(key), &c).unwrap();
            assert_eq!(pick(policy, &b, &health, Some(key), &c), Some(first));
        }
        // Without a key, hashing degrades to round robin rather than one backend.
        let spread: std::collections::HashSet<_> = (0..4)
            .map(|_| pick(policy, &b, &health, None, &c).unwrap())
            .collect();
        assert_eq!(spread.len(), 4);
    }

    #[test]
    fn pool_runtime_routes_one_user_to_one_backend() {
        let pool = PoolRuntime::new(
            (1..=4).map(|i| format!("10.0.0.{i}:8083")).collect(),
            Policy::LeastConnections,
            Arc::new(HealthFlags::new(4)),
        );
        let request = |auth: &'static str| RequestParts {
            method: b"GET",
            target: b"/_matrix/client/v3/sync?since=s1",
            authorization: Some(auth.as_bytes()),
            client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let a = pool
            .pick(Some(KeyKind::User), &request("Bearer syt_YWxpY2U_aaa_1"))
            .unwrap();
        for _ in 0..10 {
            let b = pool
                .pick(Some(KeyKind::User), &request("Bearer syt_YWxpY2U_bbb_2"))
                .unwrap();
            pool.counters().started(b);
            assert_eq!(a, b);
        }
        // Not sticky: least connections moves away from the loaded backend.
        assert_ne!(pool.pick(None, &request("Bearer x")), Some(a));
        assert_eq!(pool.identity(0), Some("10.0.0.1:8083"));
        assert_eq!(pool.identity(4), None);
    }
}
