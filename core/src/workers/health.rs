//! Whether each backend of a pool may get traffic: a sans-IO state machine fed with probe
//! results and connection outcomes, publishing one atomic state per backend.
//!
//! Two signals, combined:
//! - **Active probes** (`GET /health`, performed by the runtime): a backend goes down after
//!   `fall` consecutive failed probes and comes back after `rise` consecutive good ones.
//! - **Passive ejection** (a circuit breaker on connection attempts and answers):
//!   `eject_after` consecutive connect failures — or answers that could not be passed on
//!   (a broken head or body, an unasked `101`, a close mid-response), which a later good
//!   connect does not wipe out — eject the backend for `eject_for`; then it is half-open:
//!   exactly one request may try it (claimed with a compare-and-swap on the hot path). A
//!   success closes the breaker, a failure ejects it again. A backend that connects fine but
//!   answers garbage thus leaves the rotation before a health probe notices.
//!
//! ## Ownership
//! One [`PoolHealth`] per pool, owned by a single task of the runtime (the pool's health
//! task): every transition takes `&mut self`. Connections never lock it: they read the
//! [`HealthFlags`] (`Arc`, atomics) through [`crate::workers::balance::pick`], and send
//! their connect outcomes to the owner (a channel), which calls
//! [`PoolHealth::connect_ok`]/[`PoolHealth::connect_failed`]/[`PoolHealth::answer_failed`].
//!
//! ## The owner's loop
//! 1. Feed one input: `probe_ok`, `probe_failed`, `connect_ok`, `connect_failed`,
//!    `answer_failed`, or
//!    `handle_timeout(now)` (extra calls are harmless).
//! 2. Drain `poll_event()` (log, count) and `poll_probe(now)` (start a `GET /health` to
//!    that backend, with a timeout; report exactly one result for it).
//! 3. Sleep until `poll_timeout()` or the next report. Go to 1.
//!
//! Backends start up (traffic flows before the first probe answers).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The published state of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Up,
    Down,
    /// Ejection over: the next request may try it.
    HalfOpen,
    /// Half-open, and a request is trying it now: no more until it reports.
    Trial,
}

const UP: u8 = 0;
const DOWN: u8 = 1;
const HALF_OPEN: u8 = 2;
const TRIAL: u8 = 3;

/// The hot-path view of a pool's health: one atomic byte per backend, written only by the
/// owning [`PoolHealth`], read by every connection. Relaxed ordering: it is a hint that
/// guards no other memory.
#[derive(Debug)]
pub struct HealthFlags {
    states: Box<[AtomicU8]>,
}

impl HealthFlags {
    /// All up.
    pub fn new(backends: usize) -> Self {
        HealthFlags {
            states: (0..backends).map(|_| AtomicU8::new(UP)).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// A backend index out of range reads as down.
    pub fn state(&self, backend: usize) -> Availability {
        match self.states.get(backend).map(|s| s.load(Ordering::Relaxed)) {
            Some(UP) => Availability::Up,
            Some(HALF_OPEN) => Availability::HalfOpen,
            Some(TRIAL) => Availability::Trial,
            _ => Availability::Down,
        }
    }

    /// Up, or half-open with its trial still free.
    pub fn is_usable(&self, backend: usize) -> bool {
        matches!(
            self.state(backend),
            Availability::Up | Availability::HalfOpen
        )
    }

    /// Claims the backend for one request: true when up, or when half-open and this call
    /// won the single trial.
    pub fn try_use(&self, backend: usize) -> bool {
        let Some(s) = self.states.get(backend) else {
            return false;
        };
        match s.load(Ordering::Relaxed) {
            UP => true,
            HALF_OPEN => s
                .compare_exchange(HALF_OPEN, TRIAL, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok(),
            _ => false,
        }
    }

    fn set(&self, backend: usize, state: u8) {
        if let Some(s) = self.states.get(backend) {
            s.store(state, Ordering::Relaxed);
        }
    }
}

/// Thresholds and intervals (the proposed config key after each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Between two probes of a backend (config: `health_interval`); `None`: no active probes.
    pub probe_interval: Option<Duration>,
    /// Consecutive good probes that bring a down backend up (config: `health_rise`).
    pub rise: u32,
    /// Consecutive failed probes that take an up backend down (config: `health_fall`).
    pub fall: u32,
    /// Consecutive connect failures that eject a backend; 0 disables ejection (config: `eject_after`).
    pub eject_after: u32,
    /// How long an ejected backend gets no traffic before a trial (config: `eject_for`).
    pub eject_for: Duration,
}

impl HealthConfig {
    /// No active probes; a backend is still ejected after repeated connect failures.
    pub fn passive() -> Self {
        HealthConfig {
            probe_interval: None,
            ..HealthConfig::default()
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            probe_interval: Some(Duration::from_secs(5)),
            rise: 2,
            fall: 3,
            eject_after: 3,
            eject_for: Duration::from_secs(10),
        }
    }
}

/// Why a probe failed (reported by the runtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeFailure {
    Connect,
    Timeout,
    /// Answered, but not 200.
    Status(u16),
    /// Answered with something that is not HTTP.
    Invalid,
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeFailure::Connect => f.write_str("connect failed"),
            ProbeFailure::Timeout => f.write_str("timed out"),
            ProbeFailure::Status(s) => write!(f, "status {s}"),
            ProbeFailure::Invalid => f.write_str("invalid response"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownReason {
    /// `failures` consecutive probes failed, the last one so.
    ProbeFailed { failures: u32, last: ProbeFailure },
    /// `connect_failures` consecutive connection attempts failed, or with
    /// `answer_failures` answers that could not be passed on, (or the half-open trial did).
    Ejected {
        connect_failures: u32,
        answer_failures: u32,
        duration: Duration,
    },
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownReason::ProbeFailed { failures, last } => {
                write!(f, "{failures} health probes failed (last: {last})")
            }
            DownReason::Ejected {
                connect_failures,
                answer_failures: 0,
                duration,
            } => write!(
                f,
                "ejected for {}s after {connect_failures} failed connections",
                duration.as_secs()
            ),
            DownReason::Ejected {
                connect_failures,
                answer_failures,
                duration,
            } => write!(
                f,
                "ejected for {}s after {connect_failures} failed connections and \
                 {answer_failures} answers that could not be passed on",
                duration.as_secs()
            ),
        }
    }
}

/// A change of a backend's availability, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthEvent {
    BackendDown {
        backend: usize,
        reason: DownReason,
    },
    /// Ejection over; one trial request allowed.
    BackendHalfOpen {
        backend: usize,
    },
    BackendUp {
        backend: usize,
    },
}

/// The passive circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Breaker {
    Closed,
    Open { until: Instant },
    HalfOpen { since: Instant },
}

#[derive(Debug, Clone)]
struct Backend {
    probe_up: bool,
    probe_oks: u32,
    probe_fails: u32,
    last_probe_failure: ProbeFailure,
    connect_fails: u32,
    /// Answers that could not be passed on, the last at `last_answer_fault`: counted with
    /// the connect failures, and not reset by a good connect (a backend that accepts
    /// connections and answers garbage connects fine every time).
    answer_fails: u32,
    last_answer_fault: Option<Instant>,
    breaker: Breaker,
    next_probe: Option<Instant>,
    probe_in_flight: bool,
    /// What was last published, as UP/DOWN/HALF_OPEN (TRIAL counts as HALF_OPEN).
    published: u8,
}

/// The health of one pool's backends. See the module doc for the owner's loop.
#[derive(Debug)]
pub struct PoolHealth {
    config: HealthConfig,
    flags: Arc<HealthFlags>,
    backends: Vec<Backend>,
    events: VecDeque<HealthEvent>,
}

impl PoolHealth {
    /// All backends up; with probes on, each is due for a probe at `now`.
    pub fn new(backends: usize, config: HealthConfig, now: Instant) -> Self {
        PoolHealth::with_flags(Arc::new(HealthFlags::new(backends)), config, now)
    }

    /// Like [`PoolHealth::new`], publishing into existing `flags` (the ones the pool's
    /// balancer reads: [`super::balance::PoolRuntime::health_flags`]).
    pub fn with_flags(flags: Arc<HealthFlags>, config: HealthConfig, now: Instant) -> Self {
        let backends = flags.len();
        let next_probe = config.probe_interval.map(|_| now);
        PoolHealth {
            flags,
            backends: vec![
                Backend {
                    probe_up: true,
                    probe_oks: 0,
                    probe_fails: 0,
                    last_probe_failure: ProbeFailure::Connect,
                    connect_fails: 0,
                    answer_fails: 0,
                    last_answer_fault: None,
                    breaker: Breaker::Closed,
                    next_probe,
                    probe_in_flight: false,
                    published: UP,
                };
                backends
            ],
            config,
            events: VecDeque::new(),
        }
    }

    /// The shared view connections read.
    pub fn flags(&self) -> Arc<HealthFlags> {
        Arc::clone(&self.flags)
    }

    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// A `GET /health` answered 200. Indices out of range are ignored.
    pub fn probe_ok(&mut self, backend: usize, now: Instant) {
        let interval = self.config.probe_interval;
        let rise = self.config.rise.max(1);
        let Some(b) = self.backends.get_mut(backend) else {
            return;
        };
        b.probe_in_flight = false;
        b.next_probe = interval.map(|i| now + i);
        b.probe_fails = 0;
        b.probe_oks = b.probe_oks.saturating_add(1);
        if !b.probe_up && b.probe_oks >= rise {
            b.probe_up = true;
        }
        // A good probe is a good connection: it ends a half-open trial period.
        if matches!(b.breaker, Breaker::HalfOpen { .. }) && b.probe_oks >= rise {
            b.breaker = Breaker::Closed;
            b.connect_fails = 0;
        }
        self.publish(backend);
    }

    /// A `GET /health` failed.
    pub fn probe_failed(&mut self, backend: usize, failure: ProbeFailure, now: Instant) {
        let interval = self.config.probe_interval;
        let fall = self.config.fall.max(1);
        let Some(b) = self.backends.get_mut(backend) else {
            return;
        };
        b.probe_in_flight = false;
        b.next_probe = interval.map(|i| now + i);
        b.probe_oks = 0;
        b.probe_fails = b.probe_fails.saturating_add(1);
        b.last_probe_failure = failure;
        if b.probe_up && b.probe_fails >= fall {
            b.probe_up = false;
        }
        self.publish(backend);
    }

    /// A connection to the backend was established.
    pub fn connect_ok(&mut self, backend: usize, _now: Instant) {
        let Some(b) = self.backends.get_mut(backend) else {
            return;
        };
        match b.breaker {
            // A success that started before the ejection does not end it.
            Breaker::Open { .. } => {}
            Breaker::Closed | Breaker::HalfOpen { .. } => {
                b.connect_fails = 0;
                b.breaker = Breaker::Closed;
            }
        }
        self.publish(backend);
    }

    /// A connection attempt to the backend failed (refused, unreachable, timed out).
    pub fn connect_failed(&mut self, backend: usize, now: Instant) {
        let Some(b) = self.backends.get_mut(backend) else {
            return;
        };
        b.connect_fails = b.connect_fails.saturating_add(1);
        self.count_failure(backend, now);
    }

    /// An answer from the backend could not be passed on (a broken head or body, an unasked
    /// `101`, a close mid-response): counted toward ejection like a failed connect. Faults
    /// further apart than `eject_for` do not add up.
    pub fn answer_failed(&mut self, backend: usize, now: Instant) {
        let duration = self.config.eject_for;
        let Some(b) = self.backends.get_mut(backend) else {
            return;
        };
        if b.last_answer_fault
            .is_some_and(|last| now.saturating_duration_since(last) > duration)
        {
            b.answer_fails = 0;
        }
        b.last_answer_fault = Some(now);
        b.answer_fails = b.answer_fails.saturating_add(1);
        self.count_failure(backend, now);
    }

    /// After a failure was counted: the breaker opens once connect and answer failures
    /// reach `eject_after`, or at once when it failed its half-open trial.
    fn count_failure(&mut self, backend: usize, now: Instant) {
        let (after, duration) = (self.config.eject_after, self.config.eject_for);
        let Some(b) = self.backends.get_mut(backend) else {
            return;
        };
        let failures = b.connect_fails.saturating_add(b.answer_fails);
        let open = match b.breaker {
            Breaker::Closed => after > 0 && failures >= after,
            Breaker::HalfOpen { .. } => true,
            Breaker::Open { .. } => false,
        };
        if open {
            b.breaker = Breaker::Open {
                until: now + duration,
            };
        }
        self.publish(backend);
    }

    /// Ends ejections whose time is over; frees a half-open trial whose outcome never came.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.backends.len() {
            let b = &mut self.backends[i];
            match b.breaker {
                Breaker::Open { until } if until <= now => {
                    b.breaker = Breaker::HalfOpen { since: now };
                    self.publish(i);
                }
                Breaker::HalfOpen { since }
                    if since + self.config.eject_for <= now
                        && self.flags.state(i) == Availability::Trial =>
                {
                    b.breaker = Breaker::HalfOpen { since: now };
                    self.flags.set(i, HALF_OPEN);
                }
                _ => {}
            }
        }
    }

    /// The next availability change, oldest first.
    pub fn poll_event(&mut self) -> Option<HealthEvent> {
        self.events.pop_front()
    }

    /// A backend due for a probe now: the runtime probes it and reports exactly one
    /// `probe_ok`/`probe_failed` for it (its own timeout included).
    pub fn poll_probe(&mut self, now: Instant) -> Option<usize> {
        let (i, b) = self
            .backends
            .iter_mut()
            .enumerate()
            .find(|(_, b)| !b.probe_in_flight && b.next_probe.is_some_and(|t| t <= now))?;
        b.probe_in_flight = true;
        Some(i)
    }

    /// When the next probe is due (`None`: probes off, or all in flight).
    pub fn next_probe_due(&self) -> Option<Instant> {
        self.backends
            .iter()
            .filter(|b| !b.probe_in_flight)
            .filter_map(|b| b.next_probe)
            .min()
    }

    /// The earliest instant at which `handle_timeout` or `poll_probe` has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let breakers = self
            .backends
            .iter()
            .enumerate()
            .filter_map(|(i, b)| match b.breaker {
                Breaker::Open { until } => Some(until),
                // Only a trial in flight can time out; an untried half-open backend has
                // nothing due (reporting its old deadline would make an owner loop spin).
                Breaker::HalfOpen { since } if self.flags.state(i) == Availability::Trial => {
                    Some(since + self.config.eject_for)
                }
                Breaker::HalfOpen { .. } | Breaker::Closed => None,
            });
        breakers.chain(self.next_probe_due()).min()
    }

    /// Publishes the backend's state and queues an event if its availability changed.
    fn publish(&mut self, i: usize) {
        let b = &mut self.backends[i];
        let state = if !b.probe_up {
            DOWN
        } else {
            match b.breaker {
                Breaker::Closed => UP,
                Breaker::Open { .. } => DOWN,
                Breaker::HalfOpen { .. } => HALF_OPEN,
            }
        };
        if state == b.published {
            return;
        }
        b.published = state;
        self.flags.set(i, state);
        let event = match state {
            UP => HealthEvent::BackendUp { backend: i },
            HALF_OPEN => HealthEvent::BackendHalfOpen { backend: i },
            _ => HealthEvent::BackendDown {
                backend: i,
                reason: if !b.probe_up {
                    DownReason::ProbeFailed {
                        failures: b.probe_fails,
                        last: b.last_probe_failure,
                    }
                } else {
                    DownReason::Ejected {
                        connect_failures: b.connect_fails,
                        answer_failures: b.answer_fails,
                        duration: self.config.eject_for,
                    }
                },
            },
        };
        self.events.push_back(event);
    }
}

#[cfg(test)]
mod quiet_half_open {
    use super::*;

    #[test]
    fn an_untried_half_open_backend_has_no_past_deadline() {
        let t0 = crate::tests::epoch();
        let config = HealthConfig::passive();
        let eject_for = config.eject_for;
        let mut h = PoolHealth::new(1, config.clone(), t0);
        for _ in 0..config.eject_after {
            h.connect_failed(0, t0);
        }
        h.handle_timeout(t0 + eject_for * 2); // half-open now; nobody tries it
        let later = t0 + eject_for * 5;
        h.handle_timeout(later);
        assert!(
            h.poll_timeout().is_none_or(|t| t > later),
            "deadline in the past: an owner loop would spin"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(h: &mut PoolHealth) -> Vec<HealthEvent> {
        std::iter::from_fn(|| h.poll_event()).collect()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn probes_take_a_backend_down_after_fall_and_up_after_rise() {
        let t0 = crate::tests::epoch();
        let mut h = PoolHealth::new(2, HealthConfig::default(), t0);
        let flags = h.flags();
        assert!(flags.is_usable(0) && flags.is_usable(1));
        h.probe_failed(0, ProbeFailure::Timeout, t0);
        h.probe_failed(0, ProbeFailure::Status(502), t0);
        assert!(events(&mut h).is_empty());
        assert_eq!(flags.state(0), Availability::Up);
        h.probe_failed(0, ProbeFailure::Connect, t0);
        assert_eq!(
            events(&mut h),
            [HealthEvent::BackendDown {
                backend: 0,
                reason: DownReason::ProbeFailed {
                    failures: 3,
                    last: ProbeFailure::Connect
                }
            }]
        );
        assert_eq!(flags.state(0), Availability::Down);
        assert!(!flags.try_use(0));
        assert!(flags.is_usable(1));
        // One good probe is not enough; an interleaved failure resets the count.
        h.probe_ok(0, t0);
        h.probe_failed(0, ProbeFailure::Timeout, t0);
        h.probe_ok(0, t0);
        assert_eq!(flags.state(0), Availability::Down);
        h.probe_ok(0, t0);
        assert_eq!(events(&mut h), [HealthEvent::BackendUp { backend: 0 }]);
        assert!(flags.try_use(0));
        // A failure between good probes on an up backend does not take it down.
        h.probe_failed(0, ProbeFailure::Timeout, t0);
        h.probe_ok(0, t0);
        h.probe_failed(0, ProbeFailure::Timeout, t0);
        h.probe_failed(0, ProbeFailure::Timeout, t0);
        assert_eq!(flags.state(0), Availability::Up);
    }

    #[test]
    fn broken_answers_eject_although_every_connect_succeeds() {
        let t0 = crate::tests::epoch();
        let config = HealthConfig {
            probe_interval: None,
            ..HealthConfig::default()
        };
        let after = config.eject_after;
        let eject_for = config.eject_for;
        let mut h = PoolHealth::new(2, config, t0);
        let flags = h.flags();
        // Each exchange: a good connect, then an answer that cannot be passed on.
        for i in 1..after {
            h.connect_ok(0, t0);
            h.answer_failed(0, t0);
            assert_eq!(flags.state(0), Availability::Up, "{i} broken answers");
        }
        h.connect_ok(0, t0);
        h.answer_failed(0, t0);
        assert_eq!(
            events(&mut h),
            [HealthEvent::BackendDown {
                backend: 0,
                reason: DownReason::Ejected {
                    connect_failures: 0,
                    answer_failures: after,
                    duration: eject_for,
                }
            }]
        );
        assert!(!flags.try_use(0));
        assert!(flags.is_usable(1), "the other backend keeps serving");
        // The trial connects fine but answers garbage again: ejected again at once.
        h.handle_timeout(t0 + eject_for);
        assert!(flags.try_use(0));
        h.connect_ok(0, t0 + eject_for);
        h.answer_failed(0, t0 + eject_for);
        assert_eq!(flags.state(0), Availability::Down);
    }

    #[test]
    fn broken_answers_far_apart_do_not_add_up() {
        let t0 = crate::tests::epoch();
        let config = HealthConfig {
            probe_interval: None,
            ..HealthConfig::default()
        };
        let (after, eject_for) = (config.eject_after, config.eject_for);
        let mut h = PoolHealth::new(1, config, t0);
        let flags = h.flags();
        let mut now = t0;
        for _ in 0..after * 3 {
            h.answer_failed(0, now);
            now += eject_for + secs(1);
        }
        assert_eq!(flags.state(0), Availability::Up);
    }

    #[test]
    fn connect_failures_eject_then_half_open_admits_one_trial() {
        let t0 = crate::tests::epoch();
        let config = HealthConfig {
            probe_interval: None,
            ..HealthConfig::default()
        };
        let mut h = PoolHealth::new(1, config, t0);
        let flags = h.flags();
        assert_eq!(h.poll_timeout(), None);
        h.connect_failed(0, t0);
        h.connect_ok(0, t0); // resets the streak
        h.connect_failed(0, t0);
        h.connect_failed(0, t0);
        assert!(flags.is_usable(0));
        h.connect_failed(0, t0);
        assert_eq!(
            events(&mut h),
            [HealthEvent::BackendDown {
                backend: 0,
                reason: DownReason::Ejected {
                    connect_failures: 3,
                    answer_failures: 0,
                    duration: secs(10)
                }
            }]
        );
        assert!(!flags.try_use(0));
        assert_eq!(h.poll_timeout(), Some(t0 + secs(10)));
        // A late success from before the ejection does not end it.
        h.connect_ok(0, t0 + secs(1));
        assert_eq!(flags.state(0), Availability::Down);
        h.handle_timeout(t0 + secs(9));
        assert_eq!(flags.state(0), Availability::Down);
        h.handle_timeout(t0 + secs(10));
        assert_eq!(
            events(&mut h),
            [HealthEvent::BackendHalfOpen { backend: 0 }]
        );
        // Exactly one request gets the trial.
        assert!(flags.try_use(0));
        assert!(!flags.try_use(0));
        assert_eq!(flags.state(0), Availability::Trial);
        // The trial fails: ejected again.
        h.connect_failed(0, t0 + secs(11));
        assert!(matches!(
            events(&mut h)[..],
            [HealthEvent::BackendDown {
                reason: DownReason::Ejected { .. },
                ..
            }]
        ));
        assert_eq!(h.poll_timeout(), Some(t0 + secs(21)));
        h.handle_timeout(t0 + secs(21));
        assert!(flags.try_use(0));
        h.connect_ok(0, t0 + secs(21));
        assert_eq!(
            events(&mut h),
            [
                HealthEvent::BackendHalfOpen { backend: 0 },
                HealthEvent::BackendUp { backend: 0 }
            ]
        );
        assert!(flags.try_use(0) && flags.try_use(0));
        assert_eq!(h.poll_timeout(), None);
    }

    #[test]
    fn a_lost_trial_is_released_after_the_cool_down() {
        let t0 = crate::tests::epoch();
        let config = HealthConfig {
            probe_interval: None,
            eject_after: 1,
            ..HealthConfig::default()
        };
        let mut h = PoolHealth::new(1, config, t0);
        let flags = h.flags();
        h.connect_failed(0, t0);
        h.handle_timeout(t0 + secs(10));
        assert!(flags.try_use(0));
        assert!(!flags.try_use(0));
        // The trial never reports: after another cool-down a new trial is allowed.
        assert_eq!(h.poll_timeout(), Some(t0 + secs(20)));
        h.handle_timeout(t0 + secs(20));
        assert!(flags.try_use(0));
    }

    #[test]
    fn ejection_can_be_disabled() {
        let t0 = crate::tests::epoch();
        let config = HealthConfig {
            eject_after: 0,
            ..HealthConfig::default()
        };
        let mut h = PoolHealth::new(1, config, t0);
        for _ in 0..100 {
            h.connect_failed(0, t0);
        }
        assert!(h.flags().is_usable(0));
        assert!(events(&mut h).is_empty());
    }

    #[test]
    fn probes_are_scheduled_per_backend() {
        let t0 = crate::tests::epoch();
        let mut h = PoolHealth::new(2, HealthConfig::default(), t0);
        assert_eq!(h.next_probe_due(), Some(t0));
        assert_eq!(h.poll_probe(t0), Some(0));
        assert_eq!(h.poll_probe(t0), Some(1));
        assert_eq!(h.poll_probe(t0), None, "both in flight");
        assert_eq!(h.next_probe_due(), None);
        h.probe_ok(1, t0 + secs(1));
        assert_eq!(h.next_probe_due(), Some(t0 + secs(6)));
        h.probe_failed(0, ProbeFailure::Timeout, t0 + secs(2));
        assert_eq!(h.next_probe_due(), Some(t0 + secs(6)));
        assert_eq!(h.poll_timeout(), Some(t0 + secs(6)));
        assert_eq!(h.poll_probe(t0 + secs(5)), None);
        assert_eq!(h.poll_probe(t0 + secs(6)), Some(1));
        assert_eq!(h.poll_probe(t0 + secs(7)), Some(0));
        // Out-of-range reports are ignored.
        h.probe_ok(9, t0);
        h.connect_failed(9, t0);
        assert!(!h.flags().try_use(9));
        assert_eq!(h.flags().state(9), Availability::Down);
    }

    #[test]
    fn a_probe_down_backend_stays_down_through_a_closed_breaker() {
        let t0 = crate::tests::epoch();
        let mut h = PoolHealth::new(1, HealthConfig::default(), t0);
        for _ in 0..3 {
            h.probe_failed(0, ProbeFailure::Status(503), t0);
        }
        h.connect_ok(0, t0);
        assert_eq!(h.flags().state(0), Availability::Down);
        // Ejected while probe-down: no new event, and half-open is not published
        // while the probes say down.
        for _ in 0..3 {
            h.connect_failed(0, t0);
        }
        h.handle_timeout(t0 + secs(10));
        assert_eq!(h.flags().state(0), Availability::Down);
        assert_eq!(events(&mut h).len(), 1);
        // Probes recover: rise good probes close the half-open breaker too.
        h.probe_ok(0, t0 + secs(11));
        h.probe_ok(0, t0 + secs(12));
        assert_eq!(h.flags().state(0), Availability::Up);
        assert_eq!(events(&mut h), [HealthEvent::BackendUp { backend: 0 }]);
    }

    #[test]
    fn reasons_read_well_in_logs() {
        let r = DownReason::ProbeFailed {
            failures: 3,
            last: ProbeFailure::Status(502),
        };
        assert_eq!(r.to_string(), "3 health probes failed (last: status 502)");
        let r = DownReason::Ejected {
            connect_failures: 3,
            answer_failures: 0,
            duration: secs(10),
        };
        assert_eq!(r.to_string(), "ejected for 10s after 3 failed connections");
    }
}
