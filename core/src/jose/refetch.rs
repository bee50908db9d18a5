//! Rate limit for re-fetching a remote JWK Set when a token names an unknown `kid` (J6,
//! S11): at most one refetch per interval, however many tokens with unknown key ids
//! arrive. The fetch itself is the adapter's (core does no I/O); this only decides, lock
//! free, who may fetch.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::clock::UnixTime;

/// Default minimum interval between two refetches of one JWK Set, in seconds.
pub const DEFAULT_REFETCH_INTERVAL: u32 = 60;

/// Decides when a JWK Set may be fetched again.
#[derive(Debug)]
pub struct RefetchLimiter {
    interval: i64,
    last: AtomicI64,
}

/// Permission to fetch the JWK Set once. Only [`RefetchLimiter::try_acquire`] makes one.
#[derive(Debug)]
pub struct RefetchPermit(());

impl RefetchLimiter {
    /// A limiter allowing one refetch per `interval_secs` (the first is allowed at once).
    pub fn new(interval_secs: u32) -> Self {
        RefetchLimiter {
            interval: i64::from(interval_secs),
            last: AtomicI64::new(i64::MIN),
        }
    }

    /// A permit if no refetch happened within the interval before `now`; of several
    /// concurrent callers exactly one wins.
    pub fn try_acquire(&self, now: UnixTime) -> Option<RefetchPermit> {
        let last = self.last.load(Ordering::Acquire);
        if last != i64::MIN && now.secs() < last.saturating_add(self.interval) && now.secs() >= last
        {
            return None;
        }
        // A clock that jumped backwards (S10) is treated as "interval elapsed" once.
        self.last
            .compare_exchange(last, now.secs(), Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| RefetchPermit(()))
    }
}

impl Default for RefetchLimiter {
    fn default() -> Self {
        RefetchLimiter::new(DEFAULT_REFETCH_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn j6_unknown_kid_refetches_at_most_once_per_interval() {
        let l = RefetchLimiter::new(60);
        assert!(l.try_acquire(UnixTime(1000)).is_some());
        assert!(l.try_acquire(UnixTime(1000)).is_none());
        assert!(l.try_acquire(UnixTime(1059)).is_none());
        assert!(l.try_acquire(UnixTime(1060)).is_some());
        assert!(l.try_acquire(UnixTime(1061)).is_none());
    }

    #[test]
    fn j6_concurrent_unknown_kids_get_one_permit() {
        let l = RefetchLimiter::new(60);
        let wins = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| l.try_acquire(UnixTime(5)).is_some()))
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or(false))
                .filter(|w| *w)
                .count()
        });
        assert_eq!(wins, 1);
    }

    #[test]
    fn s10_clock_jumping_back_does_not_block_refetch_forever() {
        let l = RefetchLimiter::new(60);
        assert!(l.try_acquire(UnixTime(10_000)).is_some());
        assert!(l.try_acquire(UnixTime(6_400)).is_some());
        assert!(l.try_acquire(UnixTime(6_401)).is_none());
    }
}
