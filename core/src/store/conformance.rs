//! The store conformance suite: every backend runs exactly these checks.
//!
//! Use [`store_conformance_tests!`](crate::store_conformance_tests) in a backend's test
//! module with an expression that builds a fresh, empty store:
//!
//! ```ignore
//! heartgate_core::store_conformance_tests!(MemoryStore::new());
//! ```
//!
//! Each check panics with a message naming the violated rule; the macro turns each into
//! its own `#[test]`. The race checks run 64 threads against one key, many rounds.

#![allow(clippy::unwrap_used)] // reason: a test suite; a failed unwrap is a failed check

use std::sync::Barrier;

use super::{Inserted, Namespace, Store, StoreError, Swapped};
use crate::clock::UnixTime;

const T0: UnixTime = UnixTime(1_700_000_000);
const LATER: UnixTime = UnixTime(1_700_000_600);

/// A store under test together with what must live as long as it (a temporary
/// directory, a private server process), delegating every call to `store`.
#[derive(Debug)]
pub struct Kept<S, K> {
    /// The store.
    pub store: S,
    /// Kept alive with it; dropped after it.
    pub keep: K,
}

impl<S: Store, K: Send + Sync> Store for Kept<S, K> {
    fn put(
        &self,
        ns: Namespace,
        key: &[u8],
        value: &[u8],
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        self.store.put(ns, key, value, expires_at)
    }

    fn insert_new(
        &self,
        ns: Namespace,
        key: &[u8],
        value: &[u8],
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<Inserted, StoreError> {
        self.store.insert_new(ns, key, value, expires_at, now)
    }

    fn get(&self, ns: Namespace, key: &[u8], now: UnixTime) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.get(ns, key, now)
    }

    fn take(
        &self,
        ns: Namespace,
        key: &[u8],
        now: UnixTime,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.take(ns, key, now)
    }

    fn compare_and_swap(
        &self,
        ns: Namespace,
        key: &[u8],
        expected: &[u8],
        new: Option<(&[u8], UnixTime)>,
        now: UnixTime,
    ) -> Result<Swapped, StoreError> {
        self.store.compare_and_swap(ns, key, expected, new, now)
    }

    fn delete(&self, ns: Namespace, key: &[u8]) -> Result<(), StoreError> {
        self.store.delete(ns, key)
    }

    fn scan_prefix(
        &self,
        ns: Namespace,
        prefix: &[u8],
        limit: usize,
        now: UnixTime,
    ) -> Result<Vec<super::Entry>, StoreError> {
        self.store.scan_prefix(ns, prefix, limit, now)
    }

    fn purge_expired(&self, now: UnixTime) -> Result<usize, StoreError> {
        self.store.purge_expired(now)
    }

    fn snapshot(&self, now: UnixTime) -> Result<Vec<super::SnapshotEntry>, StoreError> {
        self.store.snapshot(now)
    }
}

/// A store that is down: every call fails with [`StoreError::Unavailable`], for tests
/// that show a caller fails closed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unavailable;

impl Store for Unavailable {
    fn put(&self, _: Namespace, _: &[u8], _: &[u8], _: UnixTime) -> Result<(), StoreError> {
        Err(StoreError::Unavailable)
    }

    fn insert_new(
        &self,
        _: Namespace,
        _: &[u8],
        _: &[u8],
        _: UnixTime,
        _: UnixTime,
    ) -> Result<Inserted, StoreError> {
        Err(StoreError::Unavailable)
    }

    fn get(&self, _: Namespace, _: &[u8], _: UnixTime) -> Result<Option<Vec<u8>>, StoreError> {
        Err(StoreError::Unavailable)
    }

    fn take(&self, _: Namespace, _: &[u8], _: UnixTime) -> Result<Option<Vec<u8>>, StoreError> {
        Err(StoreError::Unavailable)
    }

    fn compare_and_swap(
        &self,
        _: Namespace,
        _: &[u8],
        _: &[u8],
        _: Option<(&[u8], UnixTime)>,
        _: UnixTime,
    ) -> Result<Swapped, StoreError> {
        Err(StoreError::Unavailable)
    }

    fn delete(&self, _: Namespace, _: &[u8]) -> Result<(), StoreError> {
        Err(StoreError::Unavailable)
    }

    fn scan_prefix(
        &self,
        _: Namespace,
        _: &[u8],
        _: usize,
        _: UnixTime,
    ) -> Result<Vec<super::Entry>, StoreError> {
        Err(StoreError::Unavailable)
    }

    fn purge_expired(&self, _: UnixTime) -> Result<usize, StoreError> {
        Err(StoreError::Unavailable)
    }

    fn snapshot(&self, _: UnixTime) -> Result<Vec<super::SnapshotEntry>, StoreError> {
        Err(StoreError::Unavailable)
    }
}

/// Threads racing for one value in the race checks.
pub const RACERS: usize = 64;
/// Rounds of each race check.
pub const ROUNDS: usize = 20;

/// put then get returns the value; a missing key is `None`.
pub fn put_get_round_trip(s: &dyn Store) {
    s.put(Namespace::Code, b"k1", b"v1", LATER).unwrap();
    assert_eq!(
        s.get(Namespace::Code, b"k1", T0).unwrap(),
        Some(b"v1".to_vec())
    );
    assert_eq!(s.get(Namespace::Code, b"nope", T0).unwrap(), None);
    s.put(Namespace::Code, b"k1", b"v2", LATER).unwrap();
    assert_eq!(
        s.get(Namespace::Code, b"k1", T0).unwrap(),
        Some(b"v2".to_vec()),
        "put replaces"
    );
}

/// The same key in two namespaces is two entries.
pub fn namespaces_are_isolated(s: &dyn Store) {
    s.put(Namespace::Code, b"k", b"code", LATER).unwrap();
    s.put(Namespace::ParRequest, b"k", b"par", LATER).unwrap();
    assert_eq!(
        s.get(Namespace::Code, b"k", T0).unwrap(),
        Some(b"code".to_vec())
    );
    assert_eq!(
        s.get(Namespace::ParRequest, b"k", T0).unwrap(),
        Some(b"par".to_vec())
    );
    assert_eq!(
        s.take(Namespace::Code, b"k", T0).unwrap(),
        Some(b"code".to_vec())
    );
    assert_eq!(
        s.get(Namespace::ParRequest, b"k", T0).unwrap(),
        Some(b"par".to_vec())
    );
    assert_eq!(s.get(Namespace::Jti, b"k", T0).unwrap(), None);
}

/// An entry is live strictly before its expiry and never returned at or after it, by
/// any operation, swept or not.
pub fn expired_entries_are_never_returned(s: &dyn Store) {
    let exp = UnixTime(T0.0 + 60);
    s.put(Namespace::Code, b"e", b"v", exp).unwrap();
    assert!(
        s.get(Namespace::Code, b"e", UnixTime(exp.0 - 1))
            .unwrap()
            .is_some(),
        "live at exp-1"
    );
    assert_eq!(
        s.get(Namespace::Code, b"e", exp).unwrap(),
        None,
        "dead at exp"
    );
    assert_eq!(
        s.take(Namespace::Code, b"e", exp).unwrap(),
        None,
        "take at exp"
    );
    s.put(Namespace::Code, b"e2", b"v", exp).unwrap();
    assert_eq!(
        s.compare_and_swap(Namespace::Code, b"e2", b"v", None, exp)
            .unwrap(),
        Swapped::Conflict,
        "cas on an expired entry"
    );
    assert!(
        s.scan_prefix(Namespace::Code, b"e", 10, exp)
            .unwrap()
            .is_empty(),
        "scan at exp"
    );
    assert!(s.snapshot(exp).unwrap().is_empty(), "snapshot at exp");
}

/// S10: expiry is absolute; a clock that jumps back does not resurrect or shorten.
pub fn expiry_is_absolute_under_clock_jumps(s: &dyn Store) {
    let exp = UnixTime(T0.0 + 60);
    s.put(Namespace::Jti, b"j", b"1", exp).unwrap();
    let back = UnixTime(T0.0 - 3600);
    assert!(s.get(Namespace::Jti, b"j", back).unwrap().is_some());
    assert_eq!(
        s.insert_new(Namespace::Jti, b"j", b"2", UnixTime(back.0 + 60), back)
            .unwrap(),
        Inserted::AlreadyPresent,
        "a jti is not evicted early when the clock jumps back"
    );
    let ahead = UnixTime(T0.0 + 3600);
    assert_eq!(s.get(Namespace::Jti, b"j", ahead).unwrap(), None);
}

/// insert_new inserts once; a live entry is left untouched; an expired one is replaced.
pub fn insert_new_is_insert_if_absent(s: &dyn Store) {
    assert_eq!(
        s.insert_new(Namespace::Jti, b"j", b"first", LATER, T0)
            .unwrap(),
        Inserted::New
    );
    assert_eq!(
        s.insert_new(Namespace::Jti, b"j", b"second", LATER, T0)
            .unwrap(),
        Inserted::AlreadyPresent
    );
    assert_eq!(
        s.get(Namespace::Jti, b"j", T0).unwrap(),
        Some(b"first".to_vec())
    );
    let exp = UnixTime(T0.0 + 1);
    s.put(Namespace::Jti, b"x", b"old", exp).unwrap();
    assert_eq!(
        s.insert_new(Namespace::Jti, b"x", b"new", LATER, exp)
            .unwrap(),
        Inserted::New,
        "an expired entry counts as absent"
    );
    assert_eq!(
        s.get(Namespace::Jti, b"x", exp).unwrap(),
        Some(b"new".to_vec())
    );
}

/// take returns the value once and removes it.
pub fn take_is_take_and_delete(s: &dyn Store) {
    s.put(Namespace::Code, b"c", b"v", LATER).unwrap();
    assert_eq!(
        s.take(Namespace::Code, b"c", T0).unwrap(),
        Some(b"v".to_vec())
    );
    assert_eq!(s.take(Namespace::Code, b"c", T0).unwrap(), None);
    assert_eq!(s.get(Namespace::Code, b"c", T0).unwrap(), None);
    assert_eq!(s.take(Namespace::Code, b"never", T0).unwrap(), None);
}

/// compare_and_swap replaces or deletes only the expected live value.
pub fn compare_and_swap_checks_the_expected_value(s: &dyn Store) {
    s.put(Namespace::RefreshToken, b"r", b"active", LATER)
        .unwrap();
    assert_eq!(
        s.compare_and_swap(
            Namespace::RefreshToken,
            b"r",
            b"other",
            Some((b"x", LATER)),
            T0
        )
        .unwrap(),
        Swapped::Conflict
    );
    assert_eq!(
        s.get(Namespace::RefreshToken, b"r", T0).unwrap(),
        Some(b"active".to_vec())
    );
    assert_eq!(
        s.compare_and_swap(
            Namespace::RefreshToken,
            b"r",
            b"active",
            Some((b"superseded", LATER)),
            T0
        )
        .unwrap(),
        Swapped::Done
    );
    assert_eq!(
        s.get(Namespace::RefreshToken, b"r", T0).unwrap(),
        Some(b"superseded".to_vec())
    );
    assert_eq!(
        s.compare_and_swap(Namespace::RefreshToken, b"r", b"superseded", None, T0)
            .unwrap(),
        Swapped::Done
    );
    assert_eq!(
        s.get(Namespace::RefreshToken, b"r", T0).unwrap(),
        None,
        "None deletes"
    );
    assert_eq!(
        s.compare_and_swap(
            Namespace::RefreshToken,
            b"missing",
            b"",
            Some((b"x", LATER)),
            T0
        )
        .unwrap(),
        Swapped::Conflict,
        "no entry is not an empty value"
    );
}

/// delete removes; deleting a missing key is fine.
pub fn delete_removes(s: &dyn Store) {
    s.put(Namespace::Client, b"c", b"v", LATER).unwrap();
    s.delete(Namespace::Client, b"c").unwrap();
    assert_eq!(s.get(Namespace::Client, b"c", T0).unwrap(), None);
    s.delete(Namespace::Client, b"c").unwrap();
}

/// scan_prefix returns live entries of that prefix, in key order, up to the limit.
pub fn scan_prefix_is_ordered_bounded_and_live_only(s: &dyn Store) {
    for k in [b"u1/c", b"u1/a", b"u1/b", b"u2/a"] {
        s.put(Namespace::Grant, k, k, LATER).unwrap();
    }
    s.put(Namespace::Grant, b"u1/z", b"dead", UnixTime(T0.0))
        .unwrap();
    let all = s.scan_prefix(Namespace::Grant, b"u1/", 10, T0).unwrap();
    let keys: Vec<&[u8]> = all.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(keys, [&b"u1/a"[..], b"u1/b", b"u1/c"]);
    assert_eq!(all[0].1, b"u1/a");
    assert_eq!(
        s.scan_prefix(Namespace::Grant, b"u1/", 2, T0)
            .unwrap()
            .len(),
        2
    );
    assert!(s
        .scan_prefix(Namespace::Client, b"u1/", 10, T0)
        .unwrap()
        .is_empty());
}

/// purge_expired drops exactly the expired entries.
pub fn purge_drops_only_expired(s: &dyn Store) {
    s.put(Namespace::Code, b"a", b"1", UnixTime(T0.0 + 1))
        .unwrap();
    s.put(Namespace::Jti, b"b", b"2", UnixTime(T0.0 + 1))
        .unwrap();
    s.put(Namespace::Code, b"c", b"3", LATER).unwrap();
    assert_eq!(s.purge_expired(UnixTime(T0.0 + 1)).unwrap(), 2);
    assert_eq!(
        s.get(Namespace::Code, b"c", T0).unwrap(),
        Some(b"3".to_vec())
    );
    assert_eq!(s.snapshot(T0).unwrap().len(), 1);
}

/// Oversized or empty keys and oversized values are refused, and change nothing.
pub fn sizes_are_bounded(s: &dyn Store) {
    let big_key = vec![b'k'; super::MAX_KEY_LEN + 1];
    let big_value = vec![0u8; super::MAX_VALUE_LEN + 1];
    assert_eq!(
        s.put(Namespace::Code, &big_key, b"v", LATER),
        Err(StoreError::TooLarge)
    );
    assert_eq!(
        s.put(Namespace::Code, b"", b"v", LATER),
        Err(StoreError::TooLarge)
    );
    assert_eq!(
        s.put(Namespace::Code, b"k", &big_value, LATER),
        Err(StoreError::TooLarge)
    );
    assert_eq!(
        s.insert_new(Namespace::Code, &big_key, b"v", LATER, T0),
        Err(StoreError::TooLarge)
    );
    assert!(s.snapshot(T0).unwrap().is_empty());
}

/// The snapshot is a faithful, ordered copy of the live state.
pub fn snapshot_reflects_live_state(s: &dyn Store) {
    s.put(Namespace::Code, b"a", b"1", LATER).unwrap();
    s.put(Namespace::Jti, b"b", b"2", LATER).unwrap();
    let before = s.snapshot(T0).unwrap();
    assert_eq!(before.len(), 2);
    // Failed operations leave it unchanged.
    let _ = s.insert_new(Namespace::Code, b"a", b"x", LATER, T0);
    let _ = s.compare_and_swap(Namespace::Code, b"a", b"wrong", None, T0);
    let _ = s.take(Namespace::Code, b"zz", T0);
    assert_eq!(s.snapshot(T0).unwrap(), before);
}

fn race<F>(rounds: usize, setup: impl Fn(usize), attempt: F) -> Vec<usize>
where
    F: Fn(usize) -> bool + Sync,
{
    let mut winners = Vec::with_capacity(rounds);
    for round in 0..rounds {
        setup(round);
        let barrier = Barrier::new(RACERS);
        let wins = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..RACERS)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        attempt(round)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(false))
                .filter(|w| *w)
                .count()
        });
        winners.push(wins);
    }
    winners
}

/// A1/P12/B5: 64 threads taking one code → exactly one gets it, every round.
pub fn race_take_has_exactly_one_winner(s: &dyn Store) {
    let wins = race(
        ROUNDS,
        |r| {
            s.put(Namespace::Code, format!("code-{r}").as_bytes(), b"v", LATER)
                .unwrap()
        },
        |r| {
            s.take(Namespace::Code, format!("code-{r}").as_bytes(), T0)
                .unwrap()
                .is_some()
        },
    );
    assert!(
        wins.iter().all(|w| *w == 1),
        "take winners per round: {wins:?}"
    );
}

/// C1: 64 threads inserting one jti → exactly one `New`, every round.
pub fn race_insert_new_has_exactly_one_winner(s: &dyn Store) {
    let wins = race(
        ROUNDS,
        |_| {},
        |r| {
            s.insert_new(
                Namespace::Jti,
                format!("jti-{r}").as_bytes(),
                b"v",
                LATER,
                T0,
            )
            .unwrap()
                == Inserted::New
        },
    );
    assert!(
        wins.iter().all(|w| *w == 1),
        "insert_new winners per round: {wins:?}"
    );
}

/// R5/B7: 64 threads swapping one state → exactly one `Done`, every round.
pub fn race_compare_and_swap_has_exactly_one_winner(s: &dyn Store) {
    let wins = race(
        ROUNDS,
        |r| {
            s.put(
                Namespace::Ciba,
                format!("req-{r}").as_bytes(),
                b"pending",
                LATER,
            )
            .unwrap()
        },
        |r| {
            s.compare_and_swap(
                Namespace::Ciba,
                format!("req-{r}").as_bytes(),
                b"pending",
                Some((b"approved", LATER)),
                T0,
            )
            .unwrap()
                == Swapped::Done
        },
    );
    assert!(
        wins.iter().all(|w| *w == 1),
        "cas winners per round: {wins:?}"
    );
}

/// Expands to one `#[test]` per conformance check, each on a fresh store built by `$make`.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@tests $make;
            put_get_round_trip,
            namespaces_are_isolated,
            expired_entries_are_never_returned,
            expiry_is_absolute_under_clock_jumps,
            insert_new_is_insert_if_absent,
            take_is_take_and_delete,
            compare_and_swap_checks_the_expected_value,
            delete_removes,
            scan_prefix_is_ordered_bounded_and_live_only,
            purge_drops_only_expired,
            sizes_are_bounded,
            snapshot_reflects_live_state,
            race_take_has_exactly_one_winner,
            race_insert_new_has_exactly_one_winner,
            race_compare_and_swap_has_exactly_one_winner
        );
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                let store = $make;
                $crate::store::conformance::$name(&store);
            }
        )*
    };
}
