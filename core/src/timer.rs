//! Deadlines as data: one optional instant per [`TimerKind`].
//!
//! Stored in three slots, as the engine never runs both timers of a pair at once: the
//! client's header or idle timer (one waits for a head, the other for its first byte), the
//! body timer, and the upstream's connect or response timer (one before the connection is
//! made, the other after). A connection holds these even while idle, so they are kept small
//! (the kinds apart from the instants: with them, each slot would take 24 bytes, not 16).

use std::time::Instant;

use crate::output::TimerKind;

const CLIENT: usize = 0;
const BODY: usize = 1;
const UPSTREAM: usize = 2;

#[derive(Debug, Clone)]
pub struct Timers {
    deadlines: [Option<Instant>; 3],
    /// Which kind each slot's deadline is for.
    kinds: [TimerKind; 3],
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            deadlines: [None; 3],
            kinds: [
                TimerKind::ClientHeader,
                TimerKind::ClientBody,
                TimerKind::UpstreamConnect,
            ],
        }
    }
}

fn slot(kind: TimerKind) -> usize {
    match kind {
        TimerKind::ClientHeader | TimerKind::ClientIdle => CLIENT,
        TimerKind::ClientBody => BODY,
        TimerKind::UpstreamConnect | TimerKind::UpstreamResponse => UPSTREAM,
    }
}

impl Timers {
    pub fn set(&mut self, kind: TimerKind, at: Instant) {
        let slot = slot(kind);
        debug_assert!(
            self.deadlines[slot].is_none() || self.kinds[slot] == kind,
            "{kind:?} set while {:?} runs: they share a slot",
            self.kinds[slot]
        );
        self.deadlines[slot] = Some(at);
        self.kinds[slot] = kind;
    }

    pub fn stop(&mut self, kind: TimerKind) {
        let slot = slot(kind);
        if self.kinds[slot] == kind {
            self.deadlines[slot] = None;
        }
    }

    pub fn clear(&mut self) {
        self.deadlines = [None; 3];
    }

    /// The earliest deadline (of equal ones, the first in `TimerKind` order, which the
    /// slots keep).
    pub fn next(&self) -> Option<(Instant, TimerKind)> {
        self.deadlines
            .iter()
            .zip(self.kinds)
            .filter_map(|(at, kind)| at.map(|at| (at, kind)))
            .min_by_key(|(t, _)| *t)
    }

    /// A timer whose deadline is at or before `now`, if any.
    pub fn expired(&self, now: Instant) -> Option<TimerKind> {
        self.next().filter(|(t, _)| *t <= now).map(|(_, k)| k)
    }
}
