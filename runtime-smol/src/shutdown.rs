//! How connection tasks learn that shutdown began: one flag and one waker per connection
//! task in a shared slab, woken all at once when shutdown begins. Cheaper per connection than
//! an event listener on the shutdown channel (a separate allocation, plus a boxed future
//! holding it, for every connection's whole life).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::Waker;

use slab::Slab;

#[derive(Default)]
pub(crate) struct ShutdownWakers {
    begun: AtomicBool,
    wakers: Mutex<Slab<Waker>>,
}

impl ShutdownWakers {
    /// Whether shutdown began.
    pub fn begun(&self) -> bool {
        self.begun.load(Ordering::Acquire)
    }

    /// Registers a task's waker to be woken when shutdown begins. `None` when it already
    /// began (nothing was registered). A task's waker stays valid across its polls, so one
    /// registration per task is enough.
    pub fn register(&self, waker: &Waker) -> Option<usize> {
        let mut wakers = self.lock();
        // Checked under the lock: `begin` sets the flag before taking it, so a waker is
        // either registered before `begin` wakes them all, or sees the flag here.
        if self.begun() {
            return None;
        }
        Some(wakers.insert(waker.clone()))
    }

    /// Forgets a registration (the task ends).
    pub fn deregister(&self, key: usize) {
        // After `begin` the slab is empty, and no key is handed out again.
        self.lock().try_remove(key);
    }

    /// Marks shutdown as begun and wakes every registered task.
    pub fn begin(&self) {
        self.begun.store(true, Ordering::Release);
        let wakers = std::mem::take(&mut *self.lock());
        for (_, waker) in wakers {
            waker.wake();
        }
    }

    /// Wakes every registered task without beginning shutdown (a reload installed a new
    /// configuration generation); registrations stay.
    pub fn wake_all(&self) {
        for (_, waker) in self.lock().iter() {
            waker.wake_by_ref();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slab<Waker>> {
        // A panic while holding this lock leaves the slab consistent.
        self.wakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn begin_wakes_registered_tasks_once_and_refuses_late_ones() {
        let wakers = ShutdownWakers::default();
        let counts: Vec<_> = (0..3)
            .map(|_| Arc::new(CountingWaker(AtomicUsize::new(0))))
            .collect();
        let keys: Vec<_> = counts
            .iter()
            .map(|c| wakers.register(&Waker::from(c.clone())).unwrap())
            .collect();
        wakers.deregister(keys[1]);
        wakers.wake_all();
        let woken: Vec<_> = counts.iter().map(|c| c.0.load(Ordering::SeqCst)).collect();
        assert_eq!(woken, [1, 0, 1], "a reload wakes registered tasks");
        assert!(!wakers.begun());
        wakers.begin();
        assert!(wakers.begun());
        let woken: Vec<_> = counts.iter().map(|c| c.0.load(Ordering::SeqCst)).collect();
        assert_eq!(woken, [2, 0, 2]);
        assert!(wakers.register(&Waker::from(counts[0].clone())).is_none());
        // Deregistering after `begin` is harmless.
        wakers.deregister(keys[0]);
    }
}
