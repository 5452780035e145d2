//! The client connection limit (`runtime.max_connections`): accept loops take a permit per
//! connection and stop accepting while none is left; shutdown waits until all are returned.
//! Waiting uses `event-listener`, which works from async code and from plain threads alike.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use event_listener::{Event, EventListener};

/// Counts open client connections against a maximum.
#[derive(Debug)]
pub struct ConnectionLimit {
    max: usize,
    active: AtomicUsize,
    /// Notified whenever a permit is returned.
    released: Event,
    /// Set while the limit is reached and that has been logged.
    reported_full: AtomicBool,
}

/// One open connection; returns its slot when dropped.
#[derive(Debug)]
pub struct Permit {
    limit: Arc<ConnectionLimit>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limit.active.fetch_sub(1, Ordering::AcqRel);
        self.limit.released.notify(usize::MAX);
    }
}

impl ConnectionLimit {
    pub fn new(max: usize) -> Arc<ConnectionLimit> {
        Arc::new(ConnectionLimit {
            max: max.max(1),
            active: AtomicUsize::new(0),
            released: Event::new(),
            reported_full: AtomicBool::new(false),
        })
    }

    /// A permit if a slot is free (when none is, see [`ConnectionLimit::report_full`]).
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let mut current = self.active.load(Ordering::Acquire);
        loop {
            if current >= self.max {
                self.report_full();
                return None;
            }
            match self.active.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if current + 1 < self.max && self.reported_full.swap(false, Ordering::AcqRel) {
                        tracing::info!("below the connection limit again: accepting");
                    }
                    return Some(Permit {
                        limit: self.clone(),
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Whether a connection could be accepted now. Accept loops check this before
    /// accepting, so that the limit stops accepting instead of accepting and closing.
    pub fn has_room(&self) -> bool {
        self.active.load(Ordering::Acquire) < self.max
    }

    /// Logs (once until there is room again) that the limit was reached.
    pub fn report_full(&self) {
        if !self.reported_full.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                max_connections = self.max,
                "connection limit reached: not accepting new connections until some close"
            );
        }
    }

    /// A permit, or a listener that fires when one may be free (then try again). Registering
    /// before the second attempt means no release is missed.
    pub fn acquire_or_listen(self: &Arc<Self>) -> Result<Permit, EventListener> {
        if self.has_room() {
            if let Some(permit) = self.try_acquire() {
                return Ok(permit);
            }
        }
        let listener = self.released.listen();
        match self.try_acquire() {
            Some(permit) => Ok(permit),
            None => Err(listener),
        }
    }

    /// A listener that fires on the next release (for waiting until [`Self::active`] is 0).
    pub fn listen(&self) -> EventListener {
        self.released.listen()
    }

    /// Open connections now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_listener::Listener;

    #[test]
    fn permits_are_bounded_and_returned_on_drop() {
        let limit = ConnectionLimit::new(2);
        let a = limit.try_acquire().unwrap();
        let _b = limit.try_acquire().unwrap();
        assert!(limit.try_acquire().is_none());
        assert_eq!(limit.active(), 2);
        let listener = match limit.acquire_or_listen() {
            Err(l) => l,
            Ok(_) => panic!("limit exceeded"),
        };
        drop(a);
        // The release was notified (wait() would block forever otherwise).
        listener.wait();
        assert!(limit.try_acquire().is_some());
    }
}
