//! Deadlines as data: when the engine wants to be woken, and why.
//!
//! A connection holds one [`Deadline`] even while idle: the client's header or idle timer
//! (one waits for a head, the other for its first byte). The body and upstream timers
//! exist only during an exchange, so they live in it ([`ExchangeTimers`]): an idle
//! connection does not carry them, and they end with their exchange.

use std::time::Instant;

use crate::output::TimerKind;

/// One optional deadline and the kind it is for. A slot serves a pair of kinds that never
/// run at once; setting one while the other runs is a bug (asserted in debug builds).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Option<Instant>,
    kind: TimerKind,
}

impl Deadline {
    pub fn new(kind: TimerKind) -> Self {
        Deadline { at: None, kind }
    }

    pub fn set(&mut self, kind: TimerKind, at: Instant) {
        debug_assert!(
            self.at.is_none() || self.kind == kind,
            "{kind:?} set while {:?} runs: they share a slot",
            self.kind
        );
        self.at = Some(at);
        self.kind = kind;
    }

    /// Stops the deadline if it is for `kind`.
    pub fn stop(&mut self, kind: TimerKind) {
        if self.kind == kind {
            self.at = None;
        }
    }

    pub fn clear(&mut self) {
        self.at = None;
    }

    pub fn get(&self) -> Option<(Instant, TimerKind)> {
        self.at.map(|at| (at, self.kind))
    }
}

/// The deadlines of one exchange: the request body's, and the upstream's connect or
/// response timer (one before the connection is made, the other after).
#[derive(Debug, Clone, Copy)]
pub struct ExchangeTimers {
    pub body: Deadline,
    pub upstream: Deadline,
}

impl Default for ExchangeTimers {
    fn default() -> Self {
        ExchangeTimers {
            body: Deadline::new(TimerKind::ClientBody),
            upstream: Deadline::new(TimerKind::UpstreamConnect),
        }
    }
}

/// The earliest of `deadlines`; of equal ones, the first given (callers list them in
/// `TimerKind` order).
pub fn earliest(
    deadlines: impl IntoIterator<Item = Option<(Instant, TimerKind)>>,
) -> Option<(Instant, TimerKind)> {
    deadlines.into_iter().flatten().min_by_key(|(at, _)| *at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_slot_stops_only_its_own_kind() {
        let now = crate::tests::epoch();
        let mut slot = Deadline::new(TimerKind::ClientHeader);
        slot.set(TimerKind::ClientIdle, now);
        slot.stop(TimerKind::ClientHeader);
        assert_eq!(slot.get(), Some((now, TimerKind::ClientIdle)));
        slot.stop(TimerKind::ClientIdle);
        assert_eq!(slot.get(), None);
    }

    #[test]
    fn the_earliest_wins_and_ties_keep_order() {
        let now = crate::tests::epoch();
        let later = now + Duration::from_secs(1);
        let picked = earliest([
            Some((later, TimerKind::ClientIdle)),
            None,
            Some((now, TimerKind::ClientBody)),
            Some((now, TimerKind::UpstreamResponse)),
        ]);
        assert_eq!(picked, Some((now, TimerKind::ClientBody)));
        assert_eq!(earliest([None, None]), None);
    }
}
