//! Time, passed in explicitly.
//!
//! Core never reads the system clock (no `SystemTime::now`): every function that
//! judges expiry, lifetimes or replay windows takes a [`Clock`] or a [`UnixTime`].
//! Adapters (the server, the bindings) provide a clock backed by the OS; tests use
//! [`ManualClock`] to step across expiry boundaries one second at a time.

use std::sync::atomic::{AtomicI64, Ordering};

/// Seconds since the Unix epoch (a JWT NumericDate, RFC 7519 §2, restricted to integers).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct UnixTime(pub i64);

impl UnixTime {
    /// The number of seconds since the epoch.
    pub fn secs(self) -> i64 {
        self.0
    }

    /// `self + secs`, or `None` on overflow (never wraps, never panics).
    pub fn checked_add(self, secs: i64) -> Option<UnixTime> {
        self.0.checked_add(secs).map(UnixTime)
    }

    /// `self - secs`, or `None` on overflow.
    pub fn checked_sub(self, secs: i64) -> Option<UnixTime> {
        self.0.checked_sub(secs).map(UnixTime)
    }
}

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> UnixTime;
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> UnixTime {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> UnixTime {
        (**self).now()
    }
}

/// A clock that only moves when told to. For tests and deterministic replays.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock standing at `t`.
    pub fn new(t: i64) -> Self {
        ManualClock(AtomicI64::new(t))
    }

    /// Set the time to `t` (may move backwards: clock jumps are a tested fault, S10).
    pub fn set(&self, t: i64) {
        self.0.store(t, Ordering::SeqCst);
    }

    /// Move the clock by `delta` seconds (saturating).
    pub fn advance(&self, delta: i64) {
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(delta))
            });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixTime {
        UnixTime(self.0.load(Ordering::SeqCst))
    }
}
