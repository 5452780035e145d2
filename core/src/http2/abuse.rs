//! Abuse counters: how often a client did each costly-but-legal thing within a time
//! window, and which limit it passed first.

use std::time::Instant;

use super::limits::Limits;

/// A kind of frame or event that costs us work without doing the client any good when
/// repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abuse {
    /// A stream reset by the client, or reset by us because of what the client sent.
    Reset,
    Settings,
    Ping,
    /// PRIORITY and unknown frame types.
    Ignored,
    EmptyData,
    WindowUpdate,
    OversizedHeaders,
}

impl Abuse {
    pub fn describe(self) -> &'static str {
        match self {
            Abuse::Reset => "too many stream resets (rapid reset)",
            Abuse::Settings => "SETTINGS flood",
            Abuse::Ping => "PING flood",
            Abuse::Ignored => "PRIORITY or unknown frame flood",
            Abuse::EmptyData => "empty DATA flood",
            Abuse::WindowUpdate => "WINDOW_UPDATE flood",
            Abuse::OversizedHeaders => "repeated oversized header lists",
        }
    }
}

/// Counts per window; the window restarts when `now` passes its end.
#[derive(Debug, Clone)]
pub struct Counters {
    window_end: Option<Instant>,
    counts: [u32; 7],
    /// DATA frames we sent in this window: each earns the client two WINDOW_UPDATEs.
    data_sent: u32,
}

impl Counters {
    pub fn new() -> Self {
        Counters {
            window_end: None,
            counts: [0; 7],
            data_sent: 0,
        }
    }

    fn roll(&mut self, now: Instant, limits: &Limits) {
        if self.window_end.is_none_or(|end| now >= end) {
            self.window_end = Some(super::limits::after(now, limits.abuse_window));
            self.counts = [0; 7];
            self.data_sent = 0;
        }
    }

    /// We sent a DATA frame (WINDOW_UPDATEs in reply are expected).
    pub fn data_sent(&mut self, n: u32) {
        self.data_sent = self.data_sent.saturating_add(n);
    }

    /// Counts one `what`; `Err` once its limit for the window is passed.
    pub fn count(&mut self, what: Abuse, now: Instant, limits: &Limits) -> Result<(), Abuse> {
        self.roll(now, limits);
        let slot = &mut self.counts[what as usize];
        *slot = slot.saturating_add(1);
        let n = *slot;
        let over = match what {
            Abuse::Reset => n > limits.max_resets,
            Abuse::Settings => n > limits.max_settings,
            Abuse::Ping => n > limits.max_pings,
            Abuse::Ignored => n > limits.max_ignored_frames,
            Abuse::EmptyData => n > limits.max_empty_data,
            Abuse::WindowUpdate => {
                n.saturating_sub(self.data_sent.saturating_mul(2)) > limits.max_window_updates
            }
            Abuse::OversizedHeaders => n > limits.max_oversized_headers,
        };
        if over {
            Err(what)
        } else {
            Ok(())
        }
    }
}

impl Default for Counters {
    fn default() -> Self {
        Counters::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_limit_bites_within_a_window_and_resets_after_it() {
        let limits = Limits {
            max_pings: 3,
            ..Limits::default()
        };
        let mut c = Counters::new();
        let t0 = crate::tests::epoch();
        for _ in 0..3 {
            assert_eq!(c.count(Abuse::Ping, t0, &limits), Ok(()));
        }
        assert_eq!(c.count(Abuse::Ping, t0, &limits), Err(Abuse::Ping));
        let later = t0 + limits.abuse_window + Duration::from_millis(1);
        assert_eq!(c.count(Abuse::Ping, later, &limits), Ok(()));
    }

    #[test]
    fn window_updates_are_allowed_two_per_data_frame_sent() {
        let limits = Limits {
            max_window_updates: 2,
            ..Limits::default()
        };
        let mut c = Counters::new();
        let t0 = crate::tests::epoch();
        assert_eq!(c.count(Abuse::WindowUpdate, t0, &limits), Ok(()));
        c.data_sent(10);
        for _ in 0..21 {
            assert_eq!(c.count(Abuse::WindowUpdate, t0, &limits), Ok(()));
        }
        assert_eq!(
            c.count(Abuse::WindowUpdate, t0, &limits),
            Err(Abuse::WindowUpdate)
        );
    }
}
