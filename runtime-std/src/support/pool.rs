//! Idle keep-alive upstream connections, per backend of one pool: bounded in number
//! (`max_idle_per_backend`) and in age (`idle_timeout`). Generic over the connection type so
//! both runtimes (and tests) use the same bookkeeping; connections leave the lock before they
//! are dropped, so closing sockets never happens under it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mxgate_core::{Config, UpstreamPool};

/// The idle connections of one upstream pool.
#[derive(Debug)]
pub struct IdlePool<C> {
    max_idle: usize,
    idle_timeout: Duration,
    /// Round-robin counter for [`UpstreamPool::pick_backend`].
    counter: AtomicUsize,
    /// Per backend, oldest first.
    idle: Mutex<Vec<VecDeque<Idle<C>>>>,
}

#[derive(Debug)]
struct Idle<C> {
    conn: C,
    since: Instant,
}

impl<C> IdlePool<C> {
    pub fn new(pool: &UpstreamPool) -> IdlePool<C> {
        IdlePool::with_limits(
            pool.backends.len(),
            pool.max_idle_per_backend,
            pool.idle_timeout,
        )
    }

    pub fn with_limits(backends: usize, max_idle: usize, idle_timeout: Duration) -> IdlePool<C> {
        IdlePool {
            max_idle,
            idle_timeout,
            counter: AtomicUsize::new(0),
            idle: Mutex::new((0..backends).map(|_| VecDeque::new()).collect()),
        }
    }

    /// The next round-robin counter value: hand it to [`UpstreamPool::pick_backend`] (or use
    /// [`IdlePool::backend_order`]).
    pub fn next_counter(&self) -> usize {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// Backend indices to try for one connection: the engine's choice first (its balancing
    /// policy and health decided), then the others as failover.
    pub fn backend_order_from(&self, preferred: usize) -> impl Iterator<Item = usize> {
        let n = self.backend_count();
        let first = if n == 0 { 0 } else { preferred % n };
        (0..n).map(move |i| (first + i) % n)
    }

    /// Backend indices to try for one connection: the round-robin pick first, then the others.
    pub fn backend_order(&self) -> impl Iterator<Item = usize> {
        let n = self.backend_count();
        let first = if n == 0 { 0 } else { self.next_counter() % n };
        (0..n).map(move |i| (first + i) % n)
    }

    pub fn backend_count(&self) -> usize {
        self.lock().len()
    }

    /// The most recently returned idle connection to `backend` that is younger than the idle
    /// timeout and passes `usable` (e.g. "the peer has not closed it"). Connections found
    /// expired or unusable on the way are dropped.
    pub fn take(
        &self,
        backend: usize,
        now: Instant,
        mut usable: impl FnMut(&C) -> bool,
    ) -> Option<C> {
        self.take_with(backend, now, |conn, _| usable(conn))
    }

    /// [`IdlePool::take`], but `usable` is only asked about connections parked for at least
    /// `check_after`: one returned a moment ago is taken as is (a liveness probe costs a
    /// syscall per reuse, and under load connections are reused within microseconds).
    pub fn take_recent_unchecked(
        &self,
        backend: usize,
        now: Instant,
        check_after: Duration,
        mut usable: impl FnMut(&C) -> bool,
    ) -> Option<C> {
        self.take_with(backend, now, |conn, since| {
            now.saturating_duration_since(since) < check_after || usable(conn)
        })
    }

    fn take_with(
        &self,
        backend: usize,
        now: Instant,
        mut usable: impl FnMut(&C, Instant) -> bool,
    ) -> Option<C> {
        let mut discard = Vec::new();
        let found = {
            let mut idle = self.lock();
            let list = idle.get_mut(backend)?;
            let mut found = None;
            while let Some(entry) = list.pop_back() {
                if now.saturating_duration_since(entry.since) < self.idle_timeout
                    && usable(&entry.conn, entry.since)
                {
                    found = Some(entry.conn);
                    break;
                }
                discard.push(entry.conn);
            }
            found
        };
        drop(discard);
        found
    }

    /// Parks `conn` as idle for `backend`. When the backend already has `max_idle` idle
    /// connections the oldest is evicted and returned (for the caller to close); with a limit
    /// of 0, `conn` itself comes back.
    pub fn put(&self, backend: usize, conn: C, now: Instant) -> Option<C> {
        if self.max_idle == 0 {
            return Some(conn);
        }
        let mut idle = self.lock();
        let Some(list) = idle.get_mut(backend) else {
            return Some(conn);
        };
        let evicted = if list.len() >= self.max_idle {
            list.pop_front().map(|e| e.conn)
        } else {
            None
        };
        list.push_back(Idle { conn, since: now });
        evicted
    }

    /// Removes and returns every connection idle for the idle timeout or longer, or failing
    /// `usable`. Call it periodically so closed sockets are not held.
    pub fn sweep(&self, now: Instant, mut usable: impl FnMut(&C) -> bool) -> Vec<C> {
        let mut removed = Vec::new();
        let mut idle = self.lock();
        for list in idle.iter_mut() {
            let mut keep = VecDeque::with_capacity(list.len());
            for entry in list.drain(..) {
                if now.saturating_duration_since(entry.since) < self.idle_timeout
                    && usable(&entry.conn)
                {
                    keep.push_back(entry);
                } else {
                    removed.push(entry.conn);
                }
            }
            *list = keep;
        }
        removed
    }

    /// How many connections are idle, over all backends.
    pub fn idle_count(&self) -> usize {
        self.lock().iter().map(VecDeque::len).sum()
    }

    /// Removes every idle connection (shutdown).
    pub fn clear(&self) -> Vec<C> {
        self.lock()
            .iter_mut()
            .flat_map(|list| list.drain(..).map(|e| e.conn))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<VecDeque<Idle<C>>>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How often idle pools should be swept ([`IdlePool::sweep`]): a quarter of the shortest
/// idle timeout, between 250 ms and 15 s.
pub fn sweep_interval(config: &Config) -> Duration {
    let shortest = config
        .pools
        .iter()
        .map(|p| p.idle_timeout)
        .min()
        .unwrap_or(Duration::from_secs(30));
    (shortest / 4).clamp(Duration::from_millis(250), Duration::from_secs(15))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn reuses_most_recent_first_and_bounds_per_backend() {
        let pool = IdlePool::with_limits(2, 2, 10 * SEC);
        let t = Instant::now();
        assert_eq!(pool.put(0, "a", t), None);
        assert_eq!(pool.put(0, "b", t + SEC), None);
        // Full: the oldest goes.
        assert_eq!(pool.put(0, "c", t + 2 * SEC), Some("a"));
        // Other backends have their own bound.
        assert_eq!(pool.put(1, "x", t), None);
        assert_eq!(pool.idle_count(), 3);
        assert_eq!(pool.take(0, t + 3 * SEC, |_| true), Some("c"));
        assert_eq!(pool.take(0, t + 3 * SEC, |_| true), Some("b"));
        assert_eq!(pool.take(0, t + 3 * SEC, |_| true), None);
        assert_eq!(pool.take(1, t + 3 * SEC, |_| true), Some("x"));
        assert_eq!(pool.take(7, t, |_| true), None);
    }

    #[test]
    fn expired_and_dead_connections_are_not_reused() {
        let pool = IdlePool::with_limits(1, 4, 10 * SEC);
        let t = Instant::now();
        pool.put(0, "old", t);
        pool.put(0, "dead", t + 5 * SEC);
        pool.put(0, "fresh", t + 6 * SEC);
        // Only `old` passes the liveness check, but it has expired.
        assert_eq!(pool.take(0, t + 10 * SEC, |c| *c == "old"), None);
        // `fresh` and `dead` were dropped as unusable, `old` as expired.
        assert_eq!(pool.idle_count(), 0);
    }

    #[test]
    fn recently_parked_connections_skip_the_liveness_check() {
        let pool = IdlePool::with_limits(1, 4, 10 * SEC);
        let t = Instant::now();
        pool.put(0, "old", t);
        pool.put(0, "new", t + 5 * SEC);
        // `new` was parked 100 ms ago: taken without asking.
        let mut asked = Vec::new();
        let got = pool.take_recent_unchecked(0, t + 5 * SEC + SEC / 10, SEC / 4, |c| {
            asked.push(*c);
            false
        });
        assert_eq!(got, Some("new"));
        assert!(asked.is_empty());
        // `old` is older than the threshold: asked, and dropped as unusable.
        let got = pool.take_recent_unchecked(0, t + 6 * SEC, SEC / 4, |c| {
            asked.push(*c);
            false
        });
        assert_eq!(got, None);
        assert_eq!(asked, ["old"]);
        assert_eq!(pool.idle_count(), 0);
    }

    #[test]
    fn sweep_removes_only_expired_or_unusable() {
        let pool = IdlePool::with_limits(2, 4, 10 * SEC);
        let t = Instant::now();
        pool.put(0, 1, t);
        pool.put(0, 2, t + 5 * SEC);
        pool.put(1, 3, t + 6 * SEC);
        pool.put(1, 4, t + 6 * SEC);
        let mut removed = pool.sweep(t + 10 * SEC, |c| *c != 4);
        removed.sort();
        assert_eq!(removed, [1, 4]);
        assert_eq!(pool.idle_count(), 2);
        assert_eq!(pool.clear().len(), 2);
        assert_eq!(pool.idle_count(), 0);
    }

    #[test]
    fn zero_limit_keeps_nothing() {
        let pool = IdlePool::with_limits(1, 0, 10 * SEC);
        assert_eq!(pool.put(0, "a", Instant::now()), Some("a"));
    }

    #[test]
    fn backend_order_is_round_robin_and_covers_all() {
        let pool: IdlePool<()> = IdlePool::with_limits(3, 1, SEC);
        let orders: Vec<Vec<usize>> = (0..4).map(|_| pool.backend_order().collect()).collect();
        assert_eq!(
            orders,
            [vec![0, 1, 2], vec![1, 2, 0], vec![2, 0, 1], vec![0, 1, 2]]
        );
    }
}
