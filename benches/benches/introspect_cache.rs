//! The introspection cache's read path, side by side with a bare `DashMap`.
//!
//! 10⁶ entries, 2 threads each doing gets of random keys; throughput counts the gets of
//! both threads. Every variant returns an owned `Arc` (the bare maps clone it out of the
//! `Ref`), so each does the same work a caller needs:
//!
//! - `cache_hit_2threads/heartgate`: `IntrospectionCache::get` on present keys.
//! - `cache_hit_2threads/bare_dashmap`: `DashMap<[u8; 32], Arc<_>>` with its default
//!   hasher (SipHash-1-3), the reference the cache is held to (≥ 0.8×).
//! - `cache_hit_2threads/bare_dashmap_keyed_hasher`: the same bare map with the cache's
//!   hasher, to show how much of the difference is hashing.
//! - `cache_miss_2threads/{heartgate,bare_dashmap}`: absent keys.
//!
//! Before measuring it prints the resident memory the 10⁶ responses and each structure
//! added (Linux `/proc/self/statm`), the figures quoted in the cache's module docs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: a bench aborts on setup failure

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_main, Criterion, Throughput};
use dashmap::DashMap;
use heartgate_core::clock::UnixTime;
use heartgate_core::introspect::{
    Audience, CacheConfig, CacheKey, IntrospectionCache, IntrospectionResponse, InvalidationTags,
    KeyHasherBuilder,
};
use heartgate_core::mtls::Confirmation;
use serde_json::json;

const ENTRIES: usize = 1_000_000;
const NOW: UnixTime = UnixTime(1_700_000_000);
const ISS: &str = "https://as.example.org";

/// A typical SMART-on-FHIR introspection response for a certificate-bound token.
fn typical_response(i: usize) -> IntrospectionResponse {
    IntrospectionResponse::builder()
        .active(true)
        .scope("launch/patient openid fhirUser patient/Observation.rs patient/Patient.r")
        .client_id("ehr-app-7f3c2a")
        .token_type("Bearer")
        .exp(UnixTime(NOW.secs() + 3600))
        .iat(UnixTime(NOW.secs() - 60))
        .sub(format!("user-{i:08}"))
        .aud(Audience::Single("https://fhir.example.org/r4".into()))
        .iss(ISS)
        .jti(format!("b1f0c6d2-{i:012}"))
        .cnf(Confirmation {
            x5t_s256: "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2".into(),
        })
        .extension("patient", json!(format!("Patient/{i}")))
        .extension("fhirUser", json!("Practitioner/9876"))
        .build()
        .expect("valid response")
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// RSS growth between two readings (0 where `/proc` is unavailable).
fn delta(before: Option<u64>, after: Option<u64>) -> u64 {
    before.zip(after).map_or(0, |(b, a)| a.saturating_sub(b))
}

fn report(what: &str, bytes: u64) {
    let per = bytes as f64 / ENTRIES as f64;
    eprintln!(
        "memory: {what}: {per:.0} B per entry (RSS +{} MiB)",
        bytes >> 20
    );
}

struct Fixture {
    present: Vec<CacheKey>,
    absent: Vec<CacheKey>,
    cache: IntrospectionCache,
    bare: DashMap<[u8; 32], Arc<IntrospectionResponse>>,
    bare_keyed: DashMap<CacheKey, Arc<IntrospectionResponse>, KeyHasherBuilder>,
}

fn fixture() -> Fixture {
    let present: Vec<CacheKey> = (0..ENTRIES)
        .map(|i| CacheKey::for_token(&format!("opaque-token-{i}")))
        .collect();
    let absent: Vec<CacheKey> = (0..ENTRIES)
        .map(|i| CacheKey::for_token(&format!("absent-token-{i}")))
        .collect();

    let r0 = rss_bytes();
    let responses: Vec<Arc<IntrospectionResponse>> = (0..ENTRIES)
        .map(|i| Arc::new(typical_response(i)))
        .collect();
    let r1 = rss_bytes();
    let response_bytes = delta(r0, r1);
    report(
        "Arc<IntrospectionResponse> (typical SMART, bound)",
        response_bytes,
    );

    let bare = DashMap::new();
    for (k, r) in present.iter().zip(&responses) {
        bare.insert(*k.as_bytes(), Arc::clone(r));
    }
    let r2 = rss_bytes();
    report("bare DashMap<[u8;32], Arc<_>>", delta(r1, r2));

    let bare_keyed = DashMap::with_hasher(KeyHasherBuilder::new());
    for (k, r) in present.iter().zip(&responses) {
        bare_keyed.insert(*k, Arc::clone(r));
    }
    let r3 = rss_bytes();
    report(
        "bare DashMap<CacheKey, Arc<_>, KeyHasherBuilder>",
        delta(r2, r3),
    );

    let cache = IntrospectionCache::new(CacheConfig {
        positive_ttl: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(5),
        max_entries: ENTRIES + ENTRIES / 10 + 10_000,
        max_negative_entries: 10_000,
    })
    .expect("valid config");
    let g = cache.generation();
    for (k, r) in present.iter().zip(&responses) {
        let tags = InvalidationTags::from_response(r);
        cache
            .insert(*k, Arc::clone(r), tags, g, NOW)
            .expect("cacheable");
    }
    let r4 = rss_bytes();
    let cache_bytes = delta(r3, r4);
    report("IntrospectionCache (jti-tagged, incl. index)", cache_bytes);
    report(
        "all in: response + IntrospectionCache",
        response_bytes + cache_bytes,
    );
    assert_eq!(cache.len(), ENTRIES, "no entry was evicted while filling");
    Fixture {
        present,
        absent,
        cache,
        bare,
        bare_keyed,
    }
}

/// Runs `per_thread(seed, iters)` on 2 threads at once; the wall time of both.
fn two_threads(iters: u64, per_thread: impl Fn(u64, u64) + Sync) -> Duration {
    let per_thread = &per_thread;
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..2u64 {
            s.spawn(move || per_thread(0x9E37_79B9_7F4A_7C15 ^ (t + 1), iters));
        }
    });
    start.elapsed()
}

/// xorshift64 step and a multiply-shift pick in `0..len`: a few cycles, same for all variants.
#[inline]
fn next_index(state: &mut u64, len: usize) -> usize {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    ((u128::from(*state) * len as u128) >> 64) as usize
}

fn configure<'c>(
    c: &'c mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        // one iteration = one get on each of the 2 threads
        .throughput(Throughput::Elements(2));
    g
}

fn bench(c: &mut Criterion) {
    let f = fixture();

    let mut g = configure(c, "cache_hit_2threads");
    g.bench_function("heartgate", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |mut rng, n| {
                for _ in 0..n {
                    let k = &f.present[next_index(&mut rng, ENTRIES)];
                    black_box(f.cache.get(k, NOW));
                }
            })
        })
    });
    g.bench_function("bare_dashmap", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |mut rng, n| {
                for _ in 0..n {
                    let k = &f.present[next_index(&mut rng, ENTRIES)];
                    black_box(f.bare.get(k.as_bytes()).map(|r| Arc::clone(r.value())));
                }
            })
        })
    });
    g.bench_function("bare_dashmap_keyed_hasher", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |mut rng, n| {
                for _ in 0..n {
                    let k = &f.present[next_index(&mut rng, ENTRIES)];
                    black_box(f.bare_keyed.get(k).map(|r| Arc::clone(r.value())));
                }
            })
        })
    });
    g.finish();

    let mut g = configure(c, "cache_miss_2threads");
    g.bench_function("heartgate", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |mut rng, n| {
                for _ in 0..n {
                    let k = &f.absent[next_index(&mut rng, ENTRIES)];
                    black_box(f.cache.get(k, NOW));
                }
            })
        })
    });
    g.bench_function("bare_dashmap", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |mut rng, n| {
                for _ in 0..n {
                    let k = &f.absent[next_index(&mut rng, ENTRIES)];
                    black_box(f.bare.get(k.as_bytes()).map(|r| Arc::clone(r.value())));
                }
            })
        })
    });
    g.finish();

    let s = f.cache.stats();
    eprintln!(
        "heartgate cache stats: hits {} misses {} entries {}",
        s.hits, s.misses, s.entries
    );
}

/// The group `criterion_group!` would generate, written out so it carries a doc comment.
fn benches() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
}

criterion_main!(benches);
