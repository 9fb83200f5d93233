//! State shared with threads that wait for it to change: the syncer waiting for requests, the
//! checkpointer for pokes, the console's writers for lines (and whoever drains them).
//!
//! A change wakes the waiters only if one waits, and only after the lock is released: a notify
//! is a system call even with nobody waiting (under load the syncer and the writers are nearly
//! always busy, and take every change made meanwhile when they look again), and a thread woken
//! while the changer still holds the lock blocks on it at once, one more context switch each
//! way. A waiter marks that it waits before each wait, under the lock, so no change made after
//! it looked is missed.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub struct Watched<T> {
    inner: Mutex<Inner<T>>,
    changed: Condvar,
}

struct Inner<T> {
    value: T,
    /// Somebody waits (or waited: a waiter that timed out may leave it set, which costs one
    /// notify nobody needs, never a missed one).
    waited: bool,
}

impl<T> Watched<T> {
    pub fn new(value: T) -> Watched<T> {
        Watched {
            inner: Mutex::new(Inner {
                value,
                waited: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the value, then wakes whoever waits for it.
    pub fn change<R>(&self, change: impl FnOnce(&mut T) -> R) -> R {
        let (result, wake) = {
            let mut inner = self.lock();
            let result = change(&mut inner.value);
            (result, std::mem::take(&mut inner.waited))
        };
        if wake {
            self.changed.notify_all();
        }
        result
    }

    /// Reads or changes the value without waking anyone.
    pub fn with<R>(&self, look: impl FnOnce(&mut T) -> R) -> R {
        look(&mut self.lock().value)
    }

    /// Waits until `ready` holds, then runs `then` under the same lock.
    pub fn wait_until<R>(&self, ready: impl Fn(&T) -> bool, then: impl FnOnce(&mut T) -> R) -> R {
        let mut inner = self.lock();
        while !ready(&inner.value) {
            inner.waited = true;
            inner = self.changed.wait(inner).unwrap_or_else(|p| p.into_inner());
        }
        then(&mut inner.value)
    }

    /// Waits until `ready` holds or `wait` has passed; whether it holds.
    pub fn wait_for(&self, ready: impl Fn(&T) -> bool, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut inner = self.lock();
        while !ready(&inner.value) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            inner.waited = true;
            inner = self
                .changed
                .wait_timeout(inner, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}
