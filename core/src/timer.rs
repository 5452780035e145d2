//! Deadlines as data: one optional instant per [`TimerKind`].

use std::time::Instant;

use crate::output::TimerKind;

const KINDS: [TimerKind; 5] = [
    TimerKind::ClientHeader,
    TimerKind::ClientIdle,
    TimerKind::ClientBody,
    TimerKind::UpstreamConnect,
    TimerKind::UpstreamResponse,
];

#[derive(Debug, Default, Clone)]
pub struct Timers {
    deadlines: [Option<Instant>; 5],
}

fn index(kind: TimerKind) -> usize {
    match kind {
        TimerKind::ClientHeader => 0,
        TimerKind::ClientIdle => 1,
        TimerKind::ClientBody => 2,
        TimerKind::UpstreamConnect => 3,
        TimerKind::UpstreamResponse => 4,
    }
}

impl Timers {
    pub fn set(&mut self, kind: TimerKind, at: Instant) {
        self.deadlines[index(kind)] = Some(at);
    }

    pub fn stop(&mut self, kind: TimerKind) {
        self.deadlines[index(kind)] = None;
    }

    pub fn clear(&mut self) {
        self.deadlines = [None; 5];
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<(Instant, TimerKind)> {
        KINDS
            .iter()
            .filter_map(|&k| self.deadlines[index(k)].map(|t| (t, k)))
            .min_by_key(|(t, _)| *t)
    }

    /// A timer whose deadline is at or before `now`, if any.
    pub fn expired(&self, now: Instant) -> Option<TimerKind> {
        self.next().filter(|(t, _)| *t <= now).map(|(_, k)| k)
    }
}
