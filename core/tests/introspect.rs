//! Introspection cache under concurrency, and its TTL rule as a property.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly on purpose

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use heartgate_core::clock::UnixTime;
use heartgate_core::introspect::{
    CacheConfig, CacheKey, IntrospectError, IntrospectionCache, IntrospectionResponse,
    InvalidationTags,
};
use proptest::prelude::*;

const T0: i64 = 1_700_000_000;
const ISS: &str = "https://as.example";

fn config(max_entries: usize, max_negative_entries: usize) -> CacheConfig {
    CacheConfig {
        positive_ttl: Duration::from_secs(60),
        negative_ttl: Duration::from_secs(5),
        max_entries,
        max_negative_entries,
    }
}

fn active() -> Arc<IntrospectionResponse> {
    Arc::new(
        IntrospectionResponse::builder()
            .active(true)
            .exp(UnixTime(T0 + 3600))
            .build()
            .unwrap(),
    )
}

#[test]
fn entry_count_never_exceeds_the_bound_from_four_threads() {
    let cache = IntrospectionCache::new(config(1000, 100)).unwrap();
    let rounds = 5;
    let barrier = Barrier::new(4);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (cache, barrier) = (&cache, &barrier);
            s.spawn(move || {
                for round in 0..rounds {
                    for i in 0..10_000 {
                        let key = CacheKey::for_token(&format!("{t}-{round}-{i}"));
                        let r = if i % 4 == 0 {
                            Arc::new(IntrospectionResponse::inactive())
                        } else {
                            active()
                        };
                        let tags = InvalidationTags::none().with_jti(ISS, format!("{i}"));
                        let g = cache.generation();
                        let _ = cache.insert(key, r, tags, g, UnixTime(T0));
                        let _ = cache.get(&key, UnixTime(T0));
                        if i % 1000 == 0 {
                            cache.invalidate_jti(ISS, &format!("{}", i + 1));
                        }
                    }
                    // Quiescent point: no insert in flight, so the count is exact.
                    barrier.wait();
                    assert!(cache.len() <= 1000, "len {}", cache.len());
                    assert!(cache.negative_len() <= 100);
                    barrier.wait();
                }
            });
        }
    });
    assert!(cache.len() <= 1000);
    assert!(cache.stats().evictions > 100_000);
}

/// The revocation race, for real: the revoker invalidates token i only after the inserter
/// has taken its generation snapshot for token i, while the inserter's insert may run
/// before, during or after the invalidation. No token may end up cached.
fn race(invalidate: impl Fn(&IntrospectionCache, usize) + Sync) {
    const N: usize = 40_000;
    let cache = IntrospectionCache::new(config(100_000, 1000)).unwrap();
    let snapshots_taken = AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..N {
                let g = cache.generation();
                snapshots_taken.store(i + 1, Ordering::Release);
                // a "lookup" of varying length
                for _ in 0..(i * 7919) % 61 * 4 {
                    std::hint::spin_loop();
                }
                let tags = InvalidationTags::none()
                    .with_jti(ISS, format!("jti-{i}"))
                    .with_family(format!("fam-{i}"));
                let key = CacheKey::for_token(&format!("token-{i}"));
                let _ = cache.insert(key, active(), tags, g, UnixTime(T0));
            }
        });
        s.spawn(|| {
            for i in 0..N {
                while snapshots_taken.load(Ordering::Acquire) <= i {
                    std::hint::spin_loop();
                }
                invalidate(&cache, i);
            }
        });
    });
    let stale: Vec<usize> = (0..N)
        .filter(|i| {
            cache
                .get(&CacheKey::for_token(&format!("token-{i}")), UnixTime(T0))
                .is_some()
        })
        .collect();
    assert!(stale.is_empty(), "stale entries survived: {stale:?}");
    assert!(cache.is_empty());
}

#[test]
fn revocation_racing_inserts_never_leaves_stale_entries() {
    race(|c, i| {
        c.invalidate_jti(ISS, &format!("jti-{i}"));
    });
}

#[test]
fn family_revocation_racing_inserts_never_leaves_stale_entries() {
    race(|c, i| {
        c.invalidate_family(&format!("fam-{i}"));
    });
}

#[test]
fn key_invalidation_racing_inserts_never_leaves_stale_entries() {
    race(|c, i| {
        c.invalidate_key(&CacheKey::for_token(&format!("token-{i}")));
    });
}

#[test]
fn flush_racing_inserts_never_leaves_stale_entries_s5() {
    race(|c, i| {
        if i % 50 == 0 {
            c.clear();
        } else {
            c.invalidate_jti(ISS, &format!("jti-{i}"));
        }
    });
}

#[test]
fn insert_with_an_old_snapshot_is_refused_after_any_invalidation() {
    let cache = IntrospectionCache::new(config(100, 10)).unwrap();
    let key = CacheKey::for_token("t");
    let g = cache.generation();
    cache.invalidate_family("unrelated");
    assert_eq!(
        cache.insert(key, active(), InvalidationTags::none(), g, UnixTime(T0)),
        Err(IntrospectError::Superseded)
    );
}

proptest! {
    /// For any (ttl, exp, iat, now) the cache never serves outside
    /// [now, min(now + ttl, exp, now + (exp − iat) / 2)), and does serve inside it.
    #[test]
    fn cache_never_serves_past_min_of_ttl_exp_and_half_life(
        ttl in 1u64..500,
        exp_off in proptest::option::of(-50i64..2000),
        iat_off in proptest::option::of(-4000i64..50),
        probes in proptest::collection::vec(-20i64..2100, 1..20),
    ) {
        let now = T0;
        let cache = IntrospectionCache::new(CacheConfig {
            positive_ttl: Duration::from_secs(ttl),
            ..config(100, 10)
        }).unwrap();
        let mut b = IntrospectionResponse::builder().active(true);
        if let Some(e) = exp_off { b = b.exp(UnixTime(now + e)); }
        if let Some(i) = iat_off { b = b.iat(UnixTime(now + i)); }
        let response = Arc::new(b.build().unwrap());

        let mut bound = now + ttl as i64;
        if let Some(e) = exp_off {
            bound = bound.min(now + e);
            if let Some(i) = iat_off {
                bound = bound.min(now + (e - i) / 2);
            }
        }
        let key = CacheKey::for_token("tok");
        let g = cache.generation();
        let result = cache.insert(key, Arc::clone(&response), InvalidationTags::none(), g, UnixTime(now));
        if bound > now {
            prop_assert_eq!(result, Ok(UnixTime(bound)));
            // served inside the window (checked first: a later probe may remove the entry)
            prop_assert!(cache.get(&key, UnixTime(now)).is_some());
            prop_assert!(cache.get(&key, UnixTime(bound - 1)).is_some());
        } else {
            prop_assert_eq!(result, Err(IntrospectError::NotCacheable));
        }
        for p in probes {
            let t = now + p;
            if cache.get(&key, UnixTime(t)).is_some() {
                prop_assert!(t >= now && t < bound, "served at {} outside [{}, {})", t, now, bound);
            }
        }
    }
}

mod invalidation_messages {
    use heartgate_core::introspect::{
        CacheConfig, CacheKey, IntrospectionCache, Invalidation, InvalidationSink,
    };
    use parking_lot::Mutex;
    use std::sync::Arc;

    #[derive(Default)]
    struct Seen(Mutex<Vec<Invalidation>>);

    impl InvalidationSink for Seen {
        fn invalidated(&self, i: &Invalidation) {
            self.0.lock().push(i.clone());
        }
    }

    #[test]
    fn every_kind_round_trips_and_garbage_is_refused() {
        for i in [
            Invalidation::Key(CacheKey::for_token("hgat_abc")),
            Invalidation::Jti {
                iss: "https://as.example".into(),
                jti: "j-1".into(),
            },
            Invalidation::Family("fam-1".into()),
        ] {
            assert_eq!(Invalidation::from_bytes(&i.to_bytes()), Some(i));
        }
        for bad in [
            &b""[..],
            b"\x09abc",
            b"\x01short",
            b"\x02\xff\xffx",
            b"\x03\xff\xfe",
        ] {
            assert_eq!(Invalidation::from_bytes(bad), None, "{bad:?}");
        }
        assert_eq!(Invalidation::from_bytes(&vec![3u8; 4096]), None, "too long");
    }

    #[test]
    fn local_invalidations_are_reported_and_remote_ones_are_not_reported_again() {
        let cache = IntrospectionCache::new(CacheConfig::default()).unwrap();
        let seen = Arc::new(Seen::default());
        cache.set_observer(seen.clone());
        let key = CacheKey::for_token("hgat_abc");
        cache.invalidate_key(&key);
        cache.invalidate_jti("https://as.example", "j-1");
        cache.invalidate_family("fam-1");
        assert_eq!(
            *seen.0.lock(),
            vec![
                Invalidation::Key(key),
                Invalidation::Jti {
                    iss: "https://as.example".into(),
                    jti: "j-1".into()
                },
                Invalidation::Family("fam-1".into()),
            ]
        );
        cache.apply(&Invalidation::Family("fam-2".into()));
        assert_eq!(seen.0.lock().len(), 3, "a remote one is not echoed");
    }
}
