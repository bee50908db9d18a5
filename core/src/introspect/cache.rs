//! The lock-light introspection cache.
//!
//! What it does: holds `Arc<IntrospectionResponse>` values under a [`CacheKey`] (SHA-256 of
//! the full token, or of `(iss, jti)`), serves them until their expiry, bounds how many it
//! holds, and forgets them on revocation (`invalidate_*`) or on a pub/sub reconnect
//! ([`IntrospectionCache::clear`], THREATS S5).
//!
//! What it never does: read the clock (every call takes `now`), key anything by the raw
//! token string (THREATS I9), take a global lock or allocate on [`IntrospectionCache::get`],
//! or serve an entry at or after its expiry.
//!
//! # TTL (RFC 7662 §4, HEART OAuth 2.0 §4.4)
//!
//! An active response is cached for `min(positive_ttl, exp − now, (exp − iat) / 2)`; the
//! last term only when both `exp` and `iat` are known, the second only when `exp` is. A
//! response whose `exp` is at or before `now` (or whose allowed time rounds to zero
//! seconds) is not cached. An inactive response is cached for `negative_ttl` (default 5 s)
//! in a separate, separately capped pool. An entry is served only while
//! `inserted ≤ now < expires`: a clock stepped backwards (THREATS S10) makes entries miss
//! rather than live longer. The positive TTL is also the documented staleness bound for a
//! revocation whose pub/sub message was lost (THREATS I6).
//!
//! # Bounded size and eviction (THREATS I10)
//!
//! `max_entries` bounds the entry count exactly; `max_negative_entries` of it is a separate
//! pool for inactive responses, so a flood of garbage tokens only recycles negative
//! entries and never evicts an active one. Keys are split over up to 64 stripes by one key
//! byte; each stripe owns a fixed share of each pool's capacity as a ring of slots behind a
//! `parking_lot` mutex that only writers take. An insert reuses a freed slot, or grows the
//! ring, or, when the stripe's share is full, evicts: the first *expired* entry among the
//! next [`EVICTION_PROBE`] slots from the ring's hand, else the entry under the hand
//! (approximately FIFO: the oldest insertion, which with uniform TTLs is also the closest
//! to expiry). Insert cost is O(1); nothing scans the cache except
//! [`IntrospectionCache::purge_expired`], meant for a periodic sweep. Hits do not reorder
//! anything (no LRU bookkeeping on the read path). The price of striping is that a stripe
//! may evict while others still have room; with SHA-256 keys the stripes fill evenly.
//!
//! # Revocation racing a lookup
//!
//! The race: a lookup reads `active: true` from the store, a revocation then lands and
//! invalidates the cache (nothing to remove yet), then the lookup inserts its now stale
//! `active: true`. Every invalidation (`invalidate_jti`, `invalidate_family`,
//! `invalidate_key`, `clear`) first bumps a generation counter; callers take
//! [`IntrospectionCache::generation`] *before* the store lookup and pass it to
//! [`IntrospectionCache::insert`], which re-checks it while holding the key's `dashmap`
//! shard write lock and refuses ([`IntrospectError::Superseded`]) if any invalidation
//! happened in between. Index entries are written before that check and read by the
//! invalidation after its bump, so either the invalidation sees the entry and removes it,
//! or the insert sees the new generation: there is no interleaving in which a stale value
//! survives (test `revocation_racing_inserts_never_leaves_stale_entries`).
//!
//! The counter is global: a burst of revocations also refuses unrelated inserts that
//! overlapped them. That costs a miss later, never correctness: with R invalidations per
//! second and lookups taking L seconds, about R·L of inserts are refused (50/s × 2 ms = 10%).
//!
//! A failed insert also removes whatever entry the key had: the caller has just looked up
//! a fresher answer than it, so an inactive result always displaces a cached active one,
//! even when negative caching is off.
//!
//! # Invalidation indexes
//!
//! `jti → keys` and `family → keys` indexes are written on insert and cleaned when an entry
//! is replaced, evicted, expires or is invalidated; each index item carries the entry's
//! insert ticket, so cleaning one entry never removes another's item. They therefore
//! cannot outgrow the cache (test `indexes_are_cleaned_on_every_removal`).
//!
//! # Memory per entry
//!
//! Computed for a 64-bit target, then measured as the RSS growth over 10⁶ entries
//! (`benches/benches/introspect_cache.rs` prints it):
//!
//! | part | bytes |
//! | --- | --- |
//! | `dashmap` bucket: 32 B key + 32 B entry (`Arc` 8, expiry 8, TTL 4, slot 4, tags 8) + 1 control byte; hashbrown keeps tables 44–87 % full (48 % at 10⁶ entries over 8 shards) | 65 raw, ≈ 135 at 10⁶ |
//! | eviction ring slot (`Option<CacheKey>`) | 33–36 |
//! | tags box (ticket + two optional index keys), only when tagged | 80 (malloc size class) |
//! | `jti` index: one bucket (32 B key + 24 B `Vec`) at the same fill, plus one 40 B item | ≈ 170 |
//! | the `Arc<IntrospectionResponse>` (shared with the caller, not copied) | 1 480 measured for a typical SMART response (13 members, 2 extensions; the extension `Map` is most of it) |
//!
//! Measured: **≈ 175 B per untagged entry, ≈ 450 B per `jti`-tagged entry** of cache
//! overhead, ≈ 1.9 KB per entry including a typical response (a bare
//! `DashMap<[u8; 32], Arc<_>>` costs ≈ 90 B). The default 100 000 entries are thus
//! ≈ 190 MB at most with typical responses; size `max_entries` from that.
//!
//! # Hashing
//!
//! Keys are already SHA-256 outputs, so the maps use [`KeyHasherBuilder`]: a keyed
//! multiply-fold of the key bytes with a per-cache random seed (from std's `RandomState`),
//! cheaper than SipHash on the hit path while an attacker who grinds tokens cannot aim at
//! one bucket without knowing the seed.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
use parking_lot::{Mutex, MutexGuard};
use ring::digest;

use super::response::IntrospectionResponse;
use super::IntrospectError;
use crate::clock::UnixTime;

/// How many slots from the ring's hand an eviction looks at for an expired entry.
pub const EVICTION_PROBE: usize = 4;

/// Most stripes (eviction rings with their mutex) a cache is split into.
const MAX_STRIPES: usize = 64;

/// Hit/miss counter stripes (a power of two), so two threads rarely share a cache line.
const COUNTER_STRIPES: usize = 64;

/// Largest entry count: slot numbers are 31 bits (the top bit marks the negative pool).
const MAX_ENTRIES: usize = (1 << 31) - 1;

/// Largest TTL accepted in a [`CacheConfig`], in seconds (fits the entry's `u32`).
const MAX_TTL_SECS: u64 = u32::MAX as u64;

/// The first byte of every derived (non-token) key: 0xFF never occurs in UTF-8, so no
/// `&str` token can hash to the same input as a `(iss, jti)` or family key.
const DERIVED_KEY_MARKER: u8 = 0xFF;

// ---------------------------------------------------------------------------------------
// Keys and hashing

/// A cache key: 32 bytes of SHA-256. Never the token itself (THREATS I9; STYLE anti-pattern 5).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The key of an opaque (or any) token: SHA-256 over the *full* token string, so a
    /// prefix, a truncation or any near-duplicate spelling is a different key (THREATS I9).
    pub fn for_token(token: &str) -> Self {
        let d = digest::digest(&digest::SHA256, token.as_bytes());
        CacheKey(to_array(d.as_ref()))
    }

    /// The key of a JWT by `(iss, jti)`: immune to the several spellings one ECDSA-signed
    /// token can have (DESIGN.md, "Token formats").
    ///
    /// SHA-256 over `0xFF "jti" ‖ len(iss) ‖ iss ‖ len(jti) ‖ jti` with 8-byte big-endian
    /// lengths: `("a", "bc")` and `("ab", "c")` differ, and the leading 0xFF keeps it apart
    /// from every [`CacheKey::for_token`] key.
    pub fn for_jti(iss: &str, jti: &str) -> Self {
        CacheKey(derived_hash(b"jti", &[iss, jti]))
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn stripe_byte(&self) -> usize {
        usize::from(self.0[31])
    }

    fn counter_byte(&self) -> usize {
        usize::from(self.0[30])
    }
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.0);
    }
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CacheKey(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

fn family_key(family: &str) -> CacheKey {
    CacheKey(derived_hash(b"family", &[family]))
}

fn derived_hash(label: &[u8], parts: &[&str]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[DERIVED_KEY_MARKER]);
    ctx.update(label);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p.as_bytes());
    }
    to_array(ctx.finish().as_ref())
}

fn to_array(d: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // SHA-256 output is always 32 bytes; `zip` makes a length mismatch impossible to panic on.
    for (o, i) in out.iter_mut().zip(d) {
        *o = *i;
    }
    out
}

/// The [`BuildHasher`] of the cache's maps: a keyed multiply-fold over the key bytes.
///
/// Keys are SHA-256 outputs, so they need mixing, not SipHash's full PRF; the random
/// per-instance seed keeps an attacker from steering keys into one bucket. Public so the
/// benchmark can give a bare `DashMap` the same hasher.
#[derive(Clone, Copy, Debug)]
pub struct KeyHasherBuilder {
    k0: u64,
    k1: u64,
}

impl KeyHasherBuilder {
    /// A builder with a fresh random seed (drawn through std's `RandomState`).
    pub fn new() -> Self {
        let s = std::collections::hash_map::RandomState::new();
        KeyHasherBuilder {
            k0: s.hash_one(0x243F_6A88_85A3_08D3_u64),
            k1: s.hash_one(0x1319_8A2E_0370_7344_u64),
        }
    }
}

impl Default for KeyHasherBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BuildHasher for KeyHasherBuilder {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher {
            k0: self.k0,
            k1: self.k1,
            acc: self.k0.rotate_left(23),
        }
    }
}

/// The hasher built by [`KeyHasherBuilder`].
#[derive(Debug)]
pub struct KeyHasher {
    k0: u64,
    k1: u64,
    acc: u64,
}

#[inline]
fn folded_multiply(x: u64, y: u64) -> u64 {
    let p = u128::from(x) * u128::from(y);
    (p as u64) ^ ((p >> 64) as u64)
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(16) {
            let mut buf = [0u8; 16];
            for (b, c) in buf.iter_mut().zip(chunk) {
                *b = *c;
            }
            let (lo, hi) = buf.split_at(8);
            let mut a = [0u8; 8];
            let mut b = [0u8; 8];
            a.copy_from_slice(lo);
            b.copy_from_slice(hi);
            self.acc = folded_multiply(
                u64::from_le_bytes(a) ^ self.acc,
                u64::from_le_bytes(b) ^ self.k1,
            );
        }
        self.acc = self.acc.wrapping_add(bytes.len() as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        folded_multiply(self.acc ^ self.k1, self.k0 | 1)
    }
}

// ---------------------------------------------------------------------------------------
// Configuration, tags, generations, stats

/// How the cache is sized and how long it keeps answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Longest time an active response is cached, further capped per entry by `exp` and
    /// half the token lifetime. Also the staleness bound when a revocation message is lost
    /// (THREATS I6, S5). Whole seconds (sub-second parts are dropped); at least 1 s.
    pub positive_ttl: Duration,
    /// How long an inactive response is cached; zero disables negative caching.
    pub negative_ttl: Duration,
    /// Most entries held at once, active and inactive together (at most 2³¹ − 1).
    pub max_entries: usize,
    /// Most inactive entries held at once, a share of `max_entries` that inactive
    /// responses can never exceed nor take from active ones (THREATS I10).
    pub max_negative_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            // 30 s: short because it is how long a revoked token can still pass on a node
            // that missed the revocation message (I6).
            positive_ttl: Duration::from_secs(30),
            // 5 s: enough to absorb a retry storm on one bad token, too short to hide a
            // token that was issued right after being (wrongly) probed.
            negative_ttl: Duration::from_secs(5),
            max_entries: 100_000,
            // 10 % of the cache for garbage: a flood recycles these only (I10).
            max_negative_entries: 10_000,
        }
    }
}

/// What an entry can be invalidated by, besides its own key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvalidationTags {
    /// `(iss, jti)` of the token, for [`IntrospectionCache::invalidate_jti`].
    pub jti: Option<(String, String)>,
    /// Token family (e.g. the refresh-token family an access token was minted from), for
    /// [`IntrospectionCache::invalidate_family`].
    pub family: Option<String>,
}

impl InvalidationTags {
    /// No tags: the entry is invalidated only by key or by `clear`.
    pub fn none() -> Self {
        Self::default()
    }

    /// The `(iss, jti)` of `response`, when it has both.
    pub fn from_response(response: &IntrospectionResponse) -> Self {
        InvalidationTags {
            jti: response
                .iss()
                .zip(response.jti())
                .map(|(i, j)| (i.to_owned(), j.to_owned())),
            family: None,
        }
    }

    /// With `(iss, jti)`.
    pub fn with_jti(mut self, iss: impl Into<String>, jti: impl Into<String>) -> Self {
        self.jti = Some((iss.into(), jti.into()));
        self
    }

    /// With a family id.
    pub fn with_family(mut self, family: impl Into<String>) -> Self {
        self.family = Some(family.into());
        self
    }
}

/// A snapshot of the cache's invalidation counter, taken before a store lookup and handed
/// to [`IntrospectionCache::insert`] (see the module docs on the revocation race).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation(u64);

/// Counters for metrics. All are monotonic except `entries` and `negative_entries`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// `get` calls that returned an entry.
    pub hits: u64,
    /// `get` calls that returned nothing (absent, expired or not yet valid).
    pub misses: u64,
    /// Successful inserts.
    pub inserts: u64,
    /// Inserts refused because an invalidation overlapped their lookup.
    pub superseded: u64,
    /// Inserts refused as not cacheable (expired, zero TTL, zero capacity).
    pub not_cacheable: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
    /// Expired entries removed (by `get` or `purge_expired`).
    pub expired: u64,
    /// Entries removed by `invalidate_*` (not counting `clear`).
    pub invalidated: u64,
    /// Times `clear` ran.
    pub clears: u64,
    /// Entries now held.
    pub entries: usize,
    /// Inactive entries now held.
    pub negative_entries: usize,
}

// ---------------------------------------------------------------------------------------
// Entries and eviction rings

/// Which pool an entry lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    Positive,
    Negative,
}

const NEGATIVE_BIT: u32 = 1 << 31;

/// One cached answer: 32 bytes, so a map bucket (key + entry) is 64 bytes.
struct Entry {
    response: Arc<IntrospectionResponse>,
    /// Served while `expires - ttl <= now < expires`.
    expires: i64,
    ttl: u32,
    /// Ring slot, with [`NEGATIVE_BIT`] set for the negative pool.
    slot_word: u32,
    tags: Option<Box<EntryTags>>,
}

struct EntryTags {
    /// Unique per key among this cache's inserts; names this entry's index items.
    ticket: u64,
    jti: Option<CacheKey>,
    family: Option<CacheKey>,
}

impl Entry {
    #[inline]
    fn live_at(&self, now: i64) -> bool {
        now < self.expires && now >= self.expires - i64::from(self.ttl)
    }

    fn pool(&self) -> Pool {
        if self.slot_word & NEGATIVE_BIT != 0 {
            Pool::Negative
        } else {
            Pool::Positive
        }
    }

    fn slot(&self) -> usize {
        (self.slot_word & !NEGATIVE_BIT) as usize
    }
}

/// A ring of slots: which keys of one stripe occupy one pool. `slots[i] == Some(k)` iff the
/// map holds `k` with slot `i` in this pool (kept so under the stripe's mutex).
#[derive(Default)]
struct Ring {
    slots: Vec<Option<CacheKey>>,
    free: Vec<u32>,
    hand: usize,
    cap: usize,
}

impl Ring {
    fn with_cap(cap: usize) -> Self {
        Ring {
            cap,
            ..Ring::default()
        }
    }

    fn occupied(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// A slot for `key`, and the key evicted to free it, if any. `None` if capacity is 0.
    fn allocate(
        &mut self,
        key: CacheKey,
        mut is_expired: impl FnMut(&CacheKey) -> bool,
    ) -> Option<(usize, Option<CacheKey>)> {
        if self.cap == 0 {
            return None;
        }
        if let Some(i) = self.free.pop() {
            let i = i as usize;
            if let Some(s) = self.slots.get_mut(i) {
                *s = Some(key);
                return Some((i, None));
            }
        }
        if self.slots.len() < self.cap {
            if self.slots.len() == self.slots.capacity() {
                // Grow by doubling, but never past the share this ring may hold.
                let extra = self.slots.len().max(16).min(self.cap - self.slots.len());
                self.slots.reserve_exact(extra);
            }
            self.slots.push(Some(key));
            return Some((self.slots.len() - 1, None));
        }
        // Full: the first expired entry among the next EVICTION_PROBE slots, else the hand.
        let cap = self.cap;
        let mut chosen = self.hand;
        for d in 0..EVICTION_PROBE.min(cap) {
            let i = (self.hand + d) % cap;
            if self
                .slots
                .get(i)
                .and_then(Option::as_ref)
                .is_some_and(&mut is_expired)
            {
                chosen = i;
                break;
            }
        }
        if chosen == self.hand {
            self.hand = (self.hand + 1) % cap;
        }
        let victim = self.slots.get_mut(chosen).and_then(|s| s.replace(key));
        Some((chosen, victim))
    }

    fn release(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            if s.take().is_some() {
                // `slot` < cap ≤ MAX_ENTRIES < 2³¹, so it fits.
                self.free.push(slot as u32);
            }
        }
    }

    fn keys(&self) -> impl Iterator<Item = &CacheKey> {
        self.slots.iter().flatten()
    }
}

struct Stripe {
    positive: Ring,
    negative: Ring,
    next_ticket: u64,
}

impl Stripe {
    fn ring(&mut self, pool: Pool) -> &mut Ring {
        match pool {
            Pool::Positive => &mut self.positive,
            Pool::Negative => &mut self.negative,
        }
    }
}

/// Keeps neighbouring mutexes and counters on separate cache lines.
#[repr(align(128))]
struct Padded<T>(T);

#[derive(Default)]
struct HitMiss {
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Default)]
struct Counters {
    inserts: AtomicU64,
    superseded: AtomicU64,
    not_cacheable: AtomicU64,
    evictions: AtomicU64,
    expired: AtomicU64,
    invalidated: AtomicU64,
    clears: AtomicU64,
}

fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

type Index = DashMap<CacheKey, Vec<(CacheKey, u64)>, KeyHasherBuilder>;

// ---------------------------------------------------------------------------------------
// The cache

/// A bounded, TTL-respecting, revocation-aware cache of introspection responses.
///
/// `get` takes one `dashmap` shard read lock and nothing else; writers additionally take
/// one stripe mutex. See the [module docs](self) for TTLs, eviction and the revocation race.
pub struct IntrospectionCache {
    map: DashMap<CacheKey, Entry, KeyHasherBuilder>,
    jti_index: Index,
    family_index: Index,
    stripes: Box<[Padded<Mutex<Stripe>>]>,
    stripe_mask: usize,
    generation: AtomicU64,
    positive_ttl: i64,
    negative_ttl: i64,
    hit_miss: Box<[Padded<HitMiss>]>,
    counters: Counters,
    /// Told of every local invalidation, to pass it to the other nodes of a cluster.
    observer: std::sync::OnceLock<std::sync::Arc<dyn InvalidationSink>>,
}

/// One invalidation of cached introspection results, as the nodes of a cluster tell
/// each other (DESIGN.md: revocations reach every node's cache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// The entry under this key.
    Key(CacheKey),
    /// Every entry of the JWT `(iss, jti)`.
    Jti {
        /// Issuer.
        iss: String,
        /// JWT id.
        jti: String,
    },
    /// Every entry of a refresh family.
    Family(String),
}

/// Longest encoded [`Invalidation`] accepted.
pub const MAX_INVALIDATION_LEN: usize = 2048;

impl Invalidation {
    /// A compact encoding: a tag byte, then the fields (length-prefixed strings).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Invalidation::Key(k) => {
                out.push(1);
                out.extend_from_slice(k.as_bytes());
            }
            Invalidation::Jti { iss, jti } => {
                out.push(2);
                let n = u16::try_from(iss.len()).unwrap_or(u16::MAX);
                out.extend_from_slice(&n.to_be_bytes());
                out.extend_from_slice(iss.as_bytes());
                out.extend_from_slice(jti.as_bytes());
            }
            Invalidation::Family(f) => {
                out.push(3);
                out.extend_from_slice(f.as_bytes());
            }
        }
        out
    }

    /// Decode [`Invalidation::to_bytes`]; `None` for anything else.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() > MAX_INVALIDATION_LEN {
            return None;
        }
        let (tag, rest) = b.split_first()?;
        let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_owned);
        match tag {
            1 => Some(Invalidation::Key(CacheKey(
                <[u8; 32]>::try_from(rest).ok()?,
            ))),
            2 => {
                let n = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
                let iss = text(rest.get(2..2 + n)?)?;
                let jti = text(rest.get(2 + n..)?)?;
                Some(Invalidation::Jti { iss, jti })
            }
            3 => Some(Invalidation::Family(text(rest)?)),
            _ => None,
        }
    }
}

/// Where a cache reports its local invalidations (a cluster's publisher).
pub trait InvalidationSink: Send + Sync {
    /// `i` was just applied to this node's cache.
    fn invalidated(&self, i: &Invalidation);
}

impl std::fmt::Debug for IntrospectionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectionCache")
            .field("entries", &self.map.len())
            .field("stripes", &self.stripes.len())
            .field("positive_ttl", &self.positive_ttl)
            .field("negative_ttl", &self.negative_ttl)
            .finish_non_exhaustive()
    }
}

impl IntrospectionCache {
    /// A cache with `config`, or [`IntrospectError::InvalidConfig`] when a field is out of
    /// range (`positive_ttl` < 1 s, a TTL over `u32::MAX` s, `max_entries` ≥ 2³¹,
    /// `max_negative_entries` > `max_entries`).
    pub fn new(config: CacheConfig) -> Result<Self, IntrospectError> {
        let positive = config.positive_ttl.as_secs();
        if positive == 0 || positive > MAX_TTL_SECS {
            return Err(IntrospectError::InvalidConfig {
                field: "positive_ttl",
            });
        }
        let negative = config.negative_ttl.as_secs();
        if negative > MAX_TTL_SECS {
            return Err(IntrospectError::InvalidConfig {
                field: "negative_ttl",
            });
        }
        if config.max_entries > MAX_ENTRIES {
            return Err(IntrospectError::InvalidConfig {
                field: "max_entries",
            });
        }
        if config.max_negative_entries > config.max_entries {
            return Err(IntrospectError::InvalidConfig {
                field: "max_negative_entries",
            });
        }
        let negative_cap = config.max_negative_entries;
        let positive_cap = config.max_entries - negative_cap;

        // As many stripes as possible (≤ 64, a power of two) while every stripe still gets
        // at least one slot of each non-empty pool.
        let smallest = [positive_cap, negative_cap]
            .into_iter()
            .filter(|c| *c > 0)
            .min()
            .unwrap_or(1);
        let mut stripes_n = 1;
        while stripes_n * 2 <= smallest.min(MAX_STRIPES) {
            stripes_n *= 2;
        }
        let share = |cap: usize, s: usize| cap / stripes_n + usize::from(s < cap % stripes_n);
        let stripes = (0..stripes_n)
            .map(|s| {
                Padded(Mutex::new(Stripe {
                    positive: Ring::with_cap(share(positive_cap, s)),
                    negative: Ring::with_cap(share(negative_cap, s)),
                    next_ticket: 0,
                }))
            })
            .collect();
        let hasher = KeyHasherBuilder::new();
        Ok(IntrospectionCache {
            map: DashMap::with_hasher(hasher),
            jti_index: DashMap::with_hasher(hasher),
            family_index: DashMap::with_hasher(hasher),
            stripes,
            stripe_mask: stripes_n - 1,
            generation: AtomicU64::new(0),
            // Both bounded by MAX_TTL_SECS above, so they fit.
            positive_ttl: positive as i64,
            negative_ttl: negative as i64,
            hit_miss: (0..COUNTER_STRIPES)
                .map(|_| Padded(HitMiss::default()))
                .collect(),
            counters: Counters::default(),
            observer: std::sync::OnceLock::new(),
        })
    }

    /// The cached response for `key`, if one is live at `now`.
    ///
    /// Never returns an entry at or past its expiry, nor one inserted after `now` (a clock
    /// that went backwards). An expired entry found here is removed. No allocation, no
    /// clock read, no secondary map, no reordering on a hit.
    #[inline]
    pub fn get(&self, key: &CacheKey, now: UnixTime) -> Option<Arc<IntrospectionResponse>> {
        let counters = &self.hit_miss[key.counter_byte() & (COUNTER_STRIPES - 1)].0;
        let now = now.secs();
        if let Some(e) = self.map.get(key) {
            if e.live_at(now) {
                counters.hits.fetch_add(1, Ordering::Relaxed);
                return Some(Arc::clone(&e.response));
            }
            let expired = now >= e.expires;
            drop(e);
            if expired {
                self.remove_expired(key, now);
            }
        }
        counters.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// The current generation, to be taken *before* the store lookup whose result will be
    /// inserted (see [`IntrospectionCache::insert`]).
    pub fn generation(&self) -> Generation {
        Generation(self.generation.load(Ordering::Acquire))
    }

    /// Cache `response` under `key` until the time returned.
    ///
    /// `snapshot` is [`IntrospectionCache::generation`] as taken before the lookup that
    /// produced `response`; if any invalidation happened since, nothing is cached
    /// ([`IntrospectError::Superseded`]). [`IntrospectError::NotCacheable`] when the
    /// response's allowed lifetime (module docs) is zero or its pool has no capacity. On
    /// any refusal, an entry the key already had is removed (the caller's answer is newer).
    /// On success, an existing entry for `key` is replaced.
    pub fn insert(
        &self,
        key: CacheKey,
        response: Arc<IntrospectionResponse>,
        tags: InvalidationTags,
        snapshot: Generation,
        now: UnixTime,
    ) -> Result<UnixTime, IntrospectError> {
        let result = self.try_insert(key, response, &tags, snapshot, now);
        match &result {
            Ok(_) => bump(&self.counters.inserts, 1),
            Err(IntrospectError::Superseded) => bump(&self.counters.superseded, 1),
            Err(_) => bump(&self.counters.not_cacheable, 1),
        }
        result
    }

    fn try_insert(
        &self,
        key: CacheKey,
        response: Arc<IntrospectionResponse>,
        tags: &InvalidationTags,
        snapshot: Generation,
        now: UnixTime,
    ) -> Result<UnixTime, IntrospectError> {
        let mut stripe = self.lock_stripe(&key);
        let planned = match self.plan(&response, now) {
            Ok(_) if self.generation() != snapshot => Err(IntrospectError::Superseded),
            Ok((pool, _)) if stripe.ring(pool).cap == 0 => Err(IntrospectError::NotCacheable),
            other => other,
        };
        let (pool, ttl) = match planned {
            Ok(p) => p,
            Err(e) => {
                self.remove_locked(&mut stripe, &key);
                return Err(e);
            }
        };
        let now = now.secs();
        let expires = now + i64::from(ttl); // ttl ≤ exp − now or now + ttl checked in plan

        let ticket = stripe.next_ticket;
        stripe.next_ticket = stripe.next_ticket.wrapping_add(1);
        // Index items go in before the generation check below (module docs, race proof).
        let entry_tags = self.index(&key, ticket, tags);

        // Under the stripe mutex nobody else adds or removes keys of this stripe, so this
        // answer stays true until we write.
        let existing = self.map.get(&key).map(|e| (e.pool(), e.slot()));
        let (slot, newly_allocated) = match existing {
            Some((p, slot)) if p == pool => (slot, false),
            _ => {
                let allocated = stripe
                    .ring(pool)
                    .allocate(key, |k| self.map.get(k).is_none_or(|e| e.expires <= now));
                let Some((slot, victim)) = allocated else {
                    // Capacity was checked above; treat the impossible as not cacheable.
                    self.unindex_tags(&key, entry_tags.as_deref());
                    self.remove_locked(&mut stripe, &key);
                    return Err(IntrospectError::NotCacheable);
                };
                if let Some(victim) = victim {
                    // The victim's slot now belongs to `key`; only the map and indexes
                    // need cleaning.
                    if let Some((vk, ve)) = self.map.remove(&victim) {
                        self.unindex(&vk, &ve);
                        bump(&self.counters.evictions, 1);
                    }
                }
                (slot, true)
            }
        };
        let pool_bit = match pool {
            Pool::Positive => 0,
            Pool::Negative => NEGATIVE_BIT,
        };
        // slot < cap ≤ MAX_ENTRIES < 2³¹.
        let entry = Entry {
            response,
            expires,
            ttl,
            slot_word: slot as u32 | pool_bit,
            tags: entry_tags,
        };

        let outcome = match self.map.entry(key) {
            MapEntry::Occupied(mut o) => {
                if self.generation() != snapshot {
                    Err(entry)
                } else {
                    Ok(Some(std::mem::replace(o.get_mut(), entry)))
                }
            }
            MapEntry::Vacant(v) => {
                if self.generation() != snapshot {
                    Err(entry)
                } else {
                    v.insert(entry);
                    Ok(None)
                }
            }
        };
        match outcome {
            Ok(old) => {
                if let Some(old) = old {
                    if old.pool() != pool {
                        stripe.ring(old.pool()).release(old.slot());
                    }
                    self.unindex(&key, &old);
                }
                Ok(UnixTime(expires))
            }
            Err(refused) => {
                if newly_allocated {
                    stripe.ring(pool).release(slot);
                }
                self.unindex(&key, &refused);
                self.remove_locked(&mut stripe, &key);
                Err(IntrospectError::Superseded)
            }
        }
    }

    /// Pool and TTL (seconds, > 0) for `response` at `now`.
    fn plan(
        &self,
        response: &IntrospectionResponse,
        now: UnixTime,
    ) -> Result<(Pool, u32), IntrospectError> {
        let (pool, mut ttl) = if response.is_active() {
            let mut ttl = self.positive_ttl;
            if let Some(exp) = response.exp() {
                // RFC 7662 §4: never beyond `exp`.
                ttl = ttl.min(exp.secs().saturating_sub(now.secs()));
                if let Some(iat) = response.iat() {
                    // HEART §4.4: at most half the token's lifetime.
                    ttl = ttl.min(exp.secs().saturating_sub(iat.secs()) / 2);
                }
            }
            (Pool::Positive, ttl)
        } else {
            (Pool::Negative, self.negative_ttl)
        };
        if now.checked_add(ttl).is_none() {
            ttl = 0;
        }
        match u32::try_from(ttl) {
            Ok(t) if t > 0 => Ok((pool, t)),
            _ => Err(IntrospectError::NotCacheable),
        }
    }

    /// Remove every entry tagged with `(iss, jti)`, and the entry keyed by
    /// [`CacheKey::for_jti`]`(iss, jti)`. Returns how many were removed. Inserts whose
    /// lookup overlapped this call are refused.
    pub fn invalidate_jti(&self, iss: &str, jti: &str) -> usize {
        let removed = self.apply_jti(iss, jti);
        self.tell(|| Invalidation::Jti {
            iss: iss.to_owned(),
            jti: jti.to_owned(),
        });
        removed
    }

    fn apply_jti(&self, iss: &str, jti: &str) -> usize {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let ikey = CacheKey::for_jti(iss, jti);
        let mut removed = self.remove_key(&ikey);
        removed += self.remove_indexed(&self.jti_index, &ikey);
        bump(&self.counters.invalidated, removed as u64);
        removed
    }

    /// Remove every entry tagged with `family`. Returns how many were removed. Inserts
    /// whose lookup overlapped this call are refused.
    pub fn invalidate_family(&self, family: &str) -> usize {
        let removed = self.apply_family(family);
        self.tell(|| Invalidation::Family(family.to_owned()));
        removed
    }

    fn apply_family(&self, family: &str) -> usize {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let removed = self.remove_indexed(&self.family_index, &family_key(family));
        bump(&self.counters.invalidated, removed as u64);
        removed
    }

    /// Remove the entry under `key`. Returns how many were removed (0 or 1). Inserts whose
    /// lookup overlapped this call are refused.
    pub fn invalidate_key(&self, key: &CacheKey) -> usize {
        let removed = self.apply_key(key);
        self.tell(|| Invalidation::Key(*key));
        removed
    }

    fn apply_key(&self, key: &CacheKey) -> usize {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let removed = self.remove_key(key);
        bump(&self.counters.invalidated, removed as u64);
        removed
    }

    /// Report every later local invalidation to `sink` (once; later calls are ignored).
    pub fn set_observer(&self, sink: std::sync::Arc<dyn InvalidationSink>) {
        let _ = self.observer.set(sink);
    }

    fn tell(&self, i: impl FnOnce() -> Invalidation) {
        if let Some(o) = self.observer.get() {
            o.invalidated(&i());
        }
    }

    /// Apply an invalidation another node sent, without reporting it again. Returns how
    /// many entries were removed.
    pub fn apply(&self, i: &Invalidation) -> usize {
        match i {
            Invalidation::Key(k) => self.apply_key(k),
            Invalidation::Jti { iss, jti } => self.apply_jti(iss, jti),
            Invalidation::Family(f) => self.apply_family(f),
        }
    }

    /// Remove everything (on a pub/sub reconnect, THREATS S5: revocations may have been
    /// missed). Inserts whose lookup overlapped this call are refused. Readers are not
    /// blocked; writers wait until it is done.
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        // Lock every stripe (in index order; nothing else takes two) so no insert or
        // removal runs while the map, the indexes and the rings are reset together.
        let mut guards: Vec<MutexGuard<'_, Stripe>> =
            self.stripes.iter().map(|s| s.0.lock()).collect();
        self.map.clear();
        self.jti_index.clear();
        self.family_index.clear();
        for g in &mut guards {
            let (p, n) = (g.positive.cap, g.negative.cap);
            g.positive = Ring::with_cap(p);
            g.negative = Ring::with_cap(n);
        }
        bump(&self.counters.clears, 1);
    }

    /// Remove every entry expired at `now`; returns how many. A full scan, stripe by
    /// stripe: for a periodic sweep that gives memory back, never for a request path.
    pub fn purge_expired(&self, now: UnixTime) -> usize {
        let now = now.secs();
        let mut removed = 0;
        for s in self.stripes.iter() {
            let mut stripe = s.0.lock();
            let expired: Vec<CacheKey> = stripe
                .positive
                .keys()
                .chain(stripe.negative.keys())
                .filter(|k| self.map.get(*k).is_some_and(|e| e.expires <= now))
                .copied()
                .collect();
            for k in expired {
                removed += self.remove_locked(&mut stripe, &k);
            }
        }
        bump(&self.counters.expired, removed as u64);
        removed
    }

    /// Entries now held (active and inactive).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Inactive entries now held.
    pub fn negative_len(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| s.0.lock().negative.occupied())
            .sum()
    }

    /// Counters for metrics (relaxed reads; each is exact, their sum is not a snapshot).
    pub fn stats(&self) -> CacheStats {
        let (hits, misses) = self.hit_miss.iter().fold((0, 0), |(h, m), c| {
            (
                h + c.0.hits.load(Ordering::Relaxed),
                m + c.0.misses.load(Ordering::Relaxed),
            )
        });
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheStats {
            hits,
            misses,
            inserts: load(&self.counters.inserts),
            superseded: load(&self.counters.superseded),
            not_cacheable: load(&self.counters.not_cacheable),
            evictions: load(&self.counters.evictions),
            expired: load(&self.counters.expired),
            invalidated: load(&self.counters.invalidated),
            clears: load(&self.counters.clears),
            entries: self.len(),
            negative_entries: self.negative_len(),
        }
    }

    // --- internals ----------------------------------------------------------------------

    fn lock_stripe(&self, key: &CacheKey) -> MutexGuard<'_, Stripe> {
        self.stripes[key.stripe_byte() & self.stripe_mask].0.lock()
    }

    fn remove_expired(&self, key: &CacheKey, now: i64) {
        let mut stripe = self.lock_stripe(key);
        if let Some((k, e)) = self.map.remove_if(key, |_, e| e.expires <= now) {
            stripe.ring(e.pool()).release(e.slot());
            self.unindex(&k, &e);
            bump(&self.counters.expired, 1);
        }
    }

    fn remove_key(&self, key: &CacheKey) -> usize {
        let mut stripe = self.lock_stripe(key);
        self.remove_locked(&mut stripe, key)
    }

    /// Remove `key` (map, ring slot, index items). The caller holds `key`'s stripe.
    fn remove_locked(&self, stripe: &mut Stripe, key: &CacheKey) -> usize {
        match self.map.remove(key) {
            Some((k, e)) => {
                stripe.ring(e.pool()).release(e.slot());
                self.unindex(&k, &e);
                1
            }
            None => 0,
        }
    }

    fn remove_indexed(&self, index: &Index, ikey: &CacheKey) -> usize {
        let Some((_, items)) = index.remove(ikey) else {
            return 0;
        };
        items.iter().map(|(key, _)| self.remove_key(key)).sum()
    }

    fn index(
        &self,
        key: &CacheKey,
        ticket: u64,
        tags: &InvalidationTags,
    ) -> Option<Box<EntryTags>> {
        let jti = tags
            .jti
            .as_ref()
            .map(|(iss, jti)| CacheKey::for_jti(iss, jti));
        let family = tags.family.as_deref().map(family_key);
        if jti.is_none() && family.is_none() {
            return None;
        }
        for (index, ikey) in [(&self.jti_index, jti), (&self.family_index, family)] {
            if let Some(ikey) = ikey {
                index
                    .entry(ikey)
                    .or_insert_with(|| Vec::with_capacity(1))
                    .push((*key, ticket));
            }
        }
        Some(Box::new(EntryTags {
            ticket,
            jti,
            family,
        }))
    }

    fn unindex(&self, key: &CacheKey, entry: &Entry) {
        self.unindex_tags(key, entry.tags.as_deref());
    }

    fn unindex_tags(&self, key: &CacheKey, tags: Option<&EntryTags>) {
        let Some(tags) = tags else { return };
        for (index, ikey) in [
            (&self.jti_index, tags.jti),
            (&self.family_index, tags.family),
        ] {
            let Some(ikey) = ikey else { continue };
            let now_empty = match index.get_mut(&ikey) {
                Some(mut items) => {
                    items.retain(|(k, t)| !(k == key && *t == tags.ticket));
                    items.is_empty()
                }
                None => false,
            };
            if now_empty {
                index.remove_if(&ikey, |_, items| items.is_empty());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly on purpose

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::mtls::Confirmation;

    const T0: i64 = 1_700_000_000;

    fn config(max_entries: usize, max_negative: usize) -> CacheConfig {
        CacheConfig {
            positive_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            max_entries,
            max_negative_entries: max_negative,
        }
    }

    fn cache() -> IntrospectionCache {
        IntrospectionCache::new(config(1000, 100)).unwrap()
    }

    fn active(exp: Option<i64>, iat: Option<i64>) -> Arc<IntrospectionResponse> {
        let mut b = IntrospectionResponse::builder()
            .active(true)
            .scope("patient/*.rs")
            .iss("https://as.example")
            .jti("jti-1");
        if let Some(e) = exp {
            b = b.exp(UnixTime(e));
        }
        if let Some(i) = iat {
            b = b.iat(UnixTime(i));
        }
        Arc::new(b.build().unwrap())
    }

    fn inactive() -> Arc<IntrospectionResponse> {
        Arc::new(IntrospectionResponse::inactive())
    }

    fn put(
        c: &IntrospectionCache,
        key: CacheKey,
        r: Arc<IntrospectionResponse>,
        now: i64,
    ) -> Result<UnixTime, IntrospectError> {
        c.insert(
            key,
            r,
            InvalidationTags::none(),
            c.generation(),
            UnixTime(now),
        )
    }

    #[test]
    fn entry_is_32_bytes_so_a_bucket_is_64() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
        assert_eq!(std::mem::size_of::<CacheKey>(), 32);
    }

    #[test]
    fn cache_never_serves_at_expiry() {
        let clock = ManualClock::new(T0);
        let c = cache();
        let k = CacheKey::for_token("tok");
        // exp − now = 10 is the binding bound (positive TTL 60, no iat).
        let until = put(&c, k, active(Some(T0 + 10), None), clock.now().secs()).unwrap();
        assert_eq!(until, UnixTime(T0 + 10));
        clock.set(T0 + 9);
        assert!(c.get(&k, clock.now()).is_some(), "served at expiry − 1");
        clock.set(T0 + 10);
        assert!(c.get(&k, clock.now()).is_none(), "not served at expiry");
        clock.set(T0 + 9);
        assert!(
            c.get(&k, clock.now()).is_none(),
            "expired entry was removed on get"
        );
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn ttl_is_capped_by_configured_positive_ttl() {
        let c = cache();
        let k = CacheKey::for_token("tok");
        let until = put(&c, k, active(Some(T0 + 10_000), None), T0).unwrap();
        assert_eq!(until, UnixTime(T0 + 60));
        assert!(c.get(&k, UnixTime(T0 + 59)).is_some());
        assert!(c.get(&k, UnixTime(T0 + 60)).is_none());
    }

    #[test]
    fn ttl_is_capped_by_half_the_token_lifetime_heart() {
        let c = cache();
        let k = CacheKey::for_token("tok");
        // lifetime 40 s → at most 20 s in the cache, though exp is 35 s away.
        let until = put(&c, k, active(Some(T0 + 35), Some(T0 - 5)), T0).unwrap();
        assert_eq!(until, UnixTime(T0 + 20));
        assert!(c.get(&k, UnixTime(T0 + 19)).is_some());
        assert!(c.get(&k, UnixTime(T0 + 20)).is_none());
    }

    #[test]
    fn active_without_exp_uses_positive_ttl_only() {
        let c = cache();
        let k = CacheKey::for_token("tok");
        // iat alone says nothing about the lifetime.
        assert_eq!(
            put(&c, k, active(None, Some(T0 - 1000)), T0),
            Ok(UnixTime(T0 + 60))
        );
    }

    #[test]
    fn expired_response_is_not_cached() {
        let c = cache();
        let k = CacheKey::for_token("tok");
        assert_eq!(
            put(&c, k, active(Some(T0), None), T0),
            Err(IntrospectError::NotCacheable)
        );
        assert_eq!(
            put(&c, k, active(Some(T0 - 1), None), T0),
            Err(IntrospectError::NotCacheable)
        );
        // a one-second lifetime has no half-life worth caching
        assert_eq!(
            put(&c, k, active(Some(T0 + 1), Some(T0)), T0),
            Err(IntrospectError::NotCacheable)
        );
        assert!(c.is_empty());
    }

    #[test]
    fn negative_entries_use_the_negative_ttl() {
        let c = cache();
        let k = CacheKey::for_token("garbage");
        assert_eq!(put(&c, k, inactive(), T0), Ok(UnixTime(T0 + 5)));
        assert!(!c.get(&k, UnixTime(T0 + 4)).unwrap().is_active());
        assert!(c.get(&k, UnixTime(T0 + 5)).is_none());
    }

    #[test]
    fn negative_entries_are_capped_i10() {
        let c = IntrospectionCache::new(config(1000, 50)).unwrap();
        for i in 0..20_000 {
            let _ = put(
                &c,
                CacheKey::for_token(&format!("garbage-{i}")),
                inactive(),
                T0,
            );
            assert!(c.negative_len() <= 50);
        }
        assert_eq!(c.negative_len(), 50);
        assert_eq!(c.len(), 50);
        assert!(c.stats().evictions >= 20_000 - 50);
    }

    #[test]
    fn negative_flood_never_evicts_active_entries_i10() {
        let c = IntrospectionCache::new(config(100, 10)).unwrap();
        let good: Vec<CacheKey> = (0..40)
            .map(|i| CacheKey::for_token(&format!("good-{i}")))
            .collect();
        for k in &good {
            put(&c, *k, active(None, None), T0).unwrap();
        }
        for i in 0..10_000 {
            let _ = put(
                &c,
                CacheKey::for_token(&format!("garbage-{i}")),
                inactive(),
                T0,
            );
        }
        for k in &good {
            assert!(c.get(k, UnixTime(T0 + 1)).is_some());
        }
    }

    #[test]
    fn disabled_negative_caching_caches_no_inactive_answer() {
        let mut cfg = config(100, 0);
        cfg.negative_ttl = Duration::ZERO;
        let c = IntrospectionCache::new(cfg).unwrap();
        let k = CacheKey::for_token("garbage");
        assert_eq!(
            put(&c, k, inactive(), T0),
            Err(IntrospectError::NotCacheable)
        );
        assert!(c.is_empty());
    }

    #[test]
    fn inactive_answer_displaces_cached_active_even_uncached() {
        // Negative pool of size 0: the inactive answer cannot be cached, yet the stale
        // active one must go.
        let c = IntrospectionCache::new(config(100, 0)).unwrap();
        let k = CacheKey::for_token("tok");
        put(&c, k, active(None, None), T0).unwrap();
        assert_eq!(
            put(&c, k, inactive(), T0 + 1),
            Err(IntrospectError::NotCacheable)
        );
        assert!(c.get(&k, UnixTime(T0 + 1)).is_none());
        // and with a negative pool, the inactive answer replaces it
        let c = cache();
        put(&c, k, active(None, None), T0).unwrap();
        put(&c, k, inactive(), T0 + 1).unwrap();
        assert!(!c.get(&k, UnixTime(T0 + 1)).unwrap().is_active());
        assert_eq!((c.len(), c.negative_len()), (1, 1));
        assert_eq!(
            c.stripes
                .iter()
                .map(|s| s.0.lock().positive.occupied())
                .sum::<usize>(),
            0
        );
    }

    #[test]
    fn prefix_token_does_not_hit_i9() {
        let c = cache();
        let token = "2YotnFZFEjr1zCsicMWpAA-long-opaque-token";
        let k = CacheKey::for_token(token);
        put(&c, k, active(None, None), T0).unwrap();
        let near = [
            &token[..token.len() - 1],
            &token[..8],
            "",
            "2YotnFZFEjr1zCsicMWpAA-long-opaque-tokeN",
            "2YotnFZFEjr1zCsicMWpAA-long-opaque-token ",
            " 2YotnFZFEjr1zCsicMWpAA-long-opaque-token",
            "2YotnFZFEjr1zCsicMWpAA-long-opaque-token\0",
        ];
        for n in near {
            assert_ne!(CacheKey::for_token(n), k, "{n:?}");
            assert!(
                c.get(&CacheKey::for_token(n), UnixTime(T0)).is_none(),
                "{n:?}"
            );
        }
        assert!(c.get(&CacheKey::for_token(token), UnixTime(T0)).is_some());
    }

    #[test]
    fn jti_key_is_length_prefixed() {
        assert_ne!(CacheKey::for_jti("a", "bc"), CacheKey::for_jti("ab", "c"));
        assert_ne!(CacheKey::for_jti("", "abc"), CacheKey::for_jti("abc", ""));
        assert_eq!(CacheKey::for_jti("a", "bc"), CacheKey::for_jti("a", "bc"));
    }

    #[test]
    fn token_key_is_plain_sha256_and_apart_from_jti_keys() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let hex: String = CacheKey::for_token("abc")
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, expected);
        // A token spelled like the derived encoding still cannot meet the jti key.
        let mut spelled = String::from("jti");
        spelled.push_str(std::str::from_utf8(&1u64.to_be_bytes()).unwrap());
        spelled.push('a');
        spelled.push_str(std::str::from_utf8(&1u64.to_be_bytes()).unwrap());
        spelled.push('b');
        assert_ne!(CacheKey::for_token(&spelled), CacheKey::for_jti("a", "b"));
        assert_ne!(family_key("x"), CacheKey::for_jti("x", ""));
    }

    #[test]
    fn revocation_during_lookup_does_not_cache_stale_active() {
        let c = cache();
        let k = CacheKey::for_token("tok");
        let tags = InvalidationTags::none().with_jti("https://as.example", "jti-1");
        let snapshot = c.generation(); // introspect starts
        assert_eq!(c.invalidate_jti("https://as.example", "jti-1"), 0); // revoke lands
                                                                        // the lookup finishes with its (now stale) active answer
        let r = c.insert(k, active(None, None), tags, snapshot, UnixTime(T0));
        assert_eq!(r, Err(IntrospectError::Superseded));
        assert!(c.get(&k, UnixTime(T0)).is_none());
        assert_eq!(c.stats().superseded, 1);
        // a lookup that starts after the revocation may cache again
        let fresh = c.generation();
        assert!(c
            .insert(k, inactive(), InvalidationTags::none(), fresh, UnixTime(T0))
            .is_ok());
    }

    #[test]
    fn flush_during_lookup_does_not_cache_stale_active_s5() {
        let c = cache();
        let k = CacheKey::for_token("tok");
        let snapshot = c.generation();
        c.clear();
        assert_eq!(
            c.insert(
                k,
                active(None, None),
                InvalidationTags::none(),
                snapshot,
                UnixTime(T0)
            ),
            Err(IntrospectError::Superseded)
        );
        assert!(c.is_empty());
    }

    #[test]
    fn superseded_insert_also_drops_the_older_entry() {
        let c = cache();
        let k = CacheKey::for_token("tok");
        put(&c, k, active(None, None), T0).unwrap();
        let snapshot = c.generation();
        c.invalidate_key(&CacheKey::for_token("other"));
        let r = c.insert(
            k,
            active(None, None),
            InvalidationTags::none(),
            snapshot,
            UnixTime(T0),
        );
        assert_eq!(r, Err(IntrospectError::Superseded));
        assert!(c.get(&k, UnixTime(T0)).is_none());
        assert_indexes_consistent(&c);
    }

    #[test]
    fn invalidate_jti_removes_tagged_and_jti_keyed_entries() {
        let c = cache();
        let by_token = CacheKey::for_token("opaque");
        let by_jti = CacheKey::for_jti("https://as.example", "jti-1");
        let other = CacheKey::for_token("other");
        let g = c.generation();
        let tags = InvalidationTags::from_response(&active(None, None));
        assert_eq!(
            tags.jti,
            Some(("https://as.example".into(), "jti-1".into()))
        );
        c.insert(by_token, active(None, None), tags, g, UnixTime(T0))
            .unwrap();
        c.insert(
            by_jti,
            active(None, None),
            InvalidationTags::none(),
            g,
            UnixTime(T0),
        )
        .unwrap();
        c.insert(
            other,
            active(None, None),
            InvalidationTags::none().with_jti("https://as.example", "jti-2"),
            g,
            UnixTime(T0),
        )
        .unwrap();
        assert_eq!(c.invalidate_jti("https://as.example", "jti-1"), 2);
        assert!(c.get(&by_token, UnixTime(T0)).is_none());
        assert!(c.get(&by_jti, UnixTime(T0)).is_none());
        assert!(c.get(&other, UnixTime(T0)).is_some());
        assert_eq!(c.stats().invalidated, 2);
        assert_indexes_consistent(&c);
    }

    #[test]
    fn invalidate_family_removes_the_whole_family() {
        let c = cache();
        let g = c.generation();
        for i in 0..5 {
            let tags = InvalidationTags::none()
                .with_family("fam-A")
                .with_jti("iss", format!("j{i}"));
            c.insert(
                CacheKey::for_token(&format!("a{i}")),
                active(None, None),
                tags,
                g,
                UnixTime(T0),
            )
            .unwrap();
        }
        c.insert(
            CacheKey::for_token("b"),
            active(None, None),
            InvalidationTags::none().with_family("fam-B"),
            g,
            UnixTime(T0),
        )
        .unwrap();
        assert_eq!(c.invalidate_family("fam-A"), 5);
        assert_eq!(c.len(), 1);
        assert_eq!(c.invalidate_family("fam-A"), 0);
        assert_indexes_consistent(&c);
        assert!(c.jti_index.is_empty());
    }

    #[test]
    fn invalidate_key_removes_one_entry() {
        let c = cache();
        let k = CacheKey::for_token("tok");
        put(&c, k, active(None, None), T0).unwrap();
        assert_eq!(c.invalidate_key(&k), 1);
        assert_eq!(c.invalidate_key(&k), 0);
        assert!(c.get(&k, UnixTime(T0)).is_none());
    }

    #[test]
    fn clear_flushes_everything_s5() {
        let c = cache();
        let g = c.generation();
        for i in 0..200 {
            let tags = InvalidationTags::none()
                .with_jti("iss", format!("j{i}"))
                .with_family("f");
            let r = if i % 2 == 0 {
                active(None, None)
            } else {
                inactive()
            };
            c.insert(
                CacheKey::for_token(&format!("t{i}")),
                r,
                tags,
                g,
                UnixTime(T0),
            )
            .unwrap();
        }
        c.clear();
        assert!(c.is_empty());
        assert_eq!(c.negative_len(), 0);
        assert!(c.jti_index.is_empty() && c.family_index.is_empty());
        // and it fills again to its bound afterwards
        for i in 0..2000 {
            let _ = put(
                &c,
                CacheKey::for_token(&format!("u{i}")),
                active(None, None),
                T0,
            );
        }
        assert_eq!(c.len(), 900);
    }

    #[test]
    fn cached_entry_returns_identical_cnf_m4() {
        let c = cache();
        let cnf = Confirmation {
            x5t_s256: "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2".into(),
        };
        let uncached = Arc::new(
            IntrospectionResponse::builder()
                .active(true)
                .exp(UnixTime(T0 + 100))
                .cnf(cnf.clone())
                .build()
                .unwrap(),
        );
        let k = CacheKey::for_token("bound");
        put(&c, k, Arc::clone(&uncached), T0).unwrap();
        let cached = c.get(&k, UnixTime(T0 + 1)).unwrap();
        assert_eq!(cached.cnf(), uncached.cnf());
        assert_eq!(cached.cnf(), Some(&cnf));
        assert_eq!(cached.to_json_string(), uncached.to_json_string());
    }

    #[test]
    fn clock_jump_backwards_does_not_extend_entry_lifetime_s10() {
        let clock = ManualClock::new(T0);
        let c = cache();
        let k = CacheKey::for_token("tok");
        put(&c, k, active(None, None), clock.now().secs()).unwrap();
        clock.advance(-3600);
        assert!(c.get(&k, clock.now()).is_none());
        clock.set(T0 + 30);
        assert!(
            c.get(&k, clock.now()).is_some(),
            "a miss before insert time does not evict"
        );
    }

    #[test]
    fn entry_count_never_exceeds_the_bound() {
        let c = IntrospectionCache::new(config(100, 10)).unwrap();
        for i in 0..10_000 {
            let r = if i % 3 == 0 {
                inactive()
            } else {
                active(None, None)
            };
            let _ = put(&c, CacheKey::for_token(&i.to_string()), r, T0);
            assert!(c.len() <= 100);
            assert!(c.negative_len() <= 10);
        }
        assert_eq!(c.len(), 100);
        assert_indexes_consistent(&c);
    }

    #[test]
    fn eviction_prefers_expired_entries() {
        // 64 stripes with 4 positive slots each; work inside stripe 0 only.
        let c = IntrospectionCache::new(config(256, 0)).unwrap();
        assert_eq!(c.stripes.len(), 64);
        let mut in_stripe_0 = (0..)
            .map(|i| CacheKey::for_token(&format!("k{i}")))
            .filter(|k| k.stripe_byte() & c.stripe_mask == 0);
        let keys: Vec<CacheKey> = in_stripe_0.by_ref().take(4).collect();
        for (i, k) in keys.iter().enumerate() {
            // the third one expires first; the hand points at the first one
            let exp = if i == 2 { T0 + 1 } else { T0 + 1000 };
            put(&c, *k, active(Some(exp), None), T0).unwrap();
        }
        let newcomer = in_stripe_0.next().unwrap();
        put(&c, newcomer, active(Some(T0 + 1000), None), T0 + 5).unwrap();
        let live: Vec<bool> = keys.iter().map(|k| c.map.contains_key(k)).collect();
        assert_eq!(
            live,
            [true, true, false, true],
            "the expired entry was the victim"
        );
        // with nothing expired, the oldest insertion (under the hand) goes
        let next = in_stripe_0.next().unwrap();
        put(&c, next, active(Some(T0 + 1000), None), T0 + 5).unwrap();
        assert!(!c.map.contains_key(&keys[0]));
        assert_eq!(c.stats().evictions, 2);
        assert_indexes_consistent(&c);
    }

    #[test]
    fn stripe_count_follows_the_smallest_pool() {
        let stripes = |m, n| IntrospectionCache::new(config(m, n)).unwrap().stripes.len();
        assert_eq!(stripes(1, 0), 1);
        assert_eq!(stripes(8, 0), 8);
        assert_eq!(stripes(100, 10), 8);
        assert_eq!(stripes(100_000, 10_000), 64);
        assert_eq!(stripes(0, 0), 1);
    }

    #[test]
    fn indexes_are_cleaned_on_every_removal() {
        let c = IntrospectionCache::new(config(64, 16)).unwrap();
        let g = c.generation();
        for i in 0..5000 {
            let tags = InvalidationTags::none()
                .with_jti("iss", format!("j{}", i % 300))
                .with_family(format!("f{}", i % 7));
            let r = match i % 4 {
                0 => inactive(),
                1 => active(Some(T0 + 3), None),
                _ => active(None, None),
            };
            let now = T0 + (i / 1000);
            let _ = c.insert(
                CacheKey::for_token(&format!("t{}", i % 900)),
                r,
                tags,
                g,
                UnixTime(now),
            );
            if i % 97 == 0 {
                c.invalidate_jti("iss", &format!("j{}", i % 300));
            }
            if i % 501 == 0 {
                c.invalidate_family(&format!("f{}", i % 7));
            }
            if i % 13 == 0 {
                let _ = c.get(
                    &CacheKey::for_token(&format!("t{}", (i * 7) % 900)),
                    UnixTime(now),
                );
            }
            if i % 1000 == 999 {
                c.purge_expired(UnixTime(now));
            }
        }
        assert_indexes_consistent(&c);
        c.purge_expired(UnixTime(T0 + 10_000));
        assert!(c.is_empty());
        assert!(c.jti_index.is_empty(), "jti index leaked");
        assert!(c.family_index.is_empty(), "family index leaked");
    }

    #[test]
    fn purge_expired_removes_only_expired() {
        let c = cache();
        put(
            &c,
            CacheKey::for_token("short"),
            active(Some(T0 + 2), None),
            T0,
        )
        .unwrap();
        put(
            &c,
            CacheKey::for_token("long"),
            active(Some(T0 + 100), None),
            T0,
        )
        .unwrap();
        put(&c, CacheKey::for_token("neg"), inactive(), T0).unwrap();
        assert_eq!(c.purge_expired(UnixTime(T0 + 5)), 2);
        assert_eq!(c.len(), 1);
        assert_eq!(c.negative_len(), 0);
        assert!(c
            .get(&CacheKey::for_token("long"), UnixTime(T0 + 5))
            .is_some());
    }

    #[test]
    fn stats_count_hits_and_misses() {
        let c = cache();
        let k = CacheKey::for_token("tok");
        assert!(c.get(&k, UnixTime(T0)).is_none());
        put(&c, k, active(None, None), T0).unwrap();
        for _ in 0..3 {
            assert!(c.get(&k, UnixTime(T0)).is_some());
        }
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.inserts, s.entries), (3, 1, 1, 1));
    }

    #[test]
    fn invalid_config_is_rejected() {
        let bad = [
            (
                CacheConfig {
                    positive_ttl: Duration::ZERO,
                    ..CacheConfig::default()
                },
                "positive_ttl",
            ),
            (
                CacheConfig {
                    positive_ttl: Duration::from_millis(999),
                    ..CacheConfig::default()
                },
                "positive_ttl",
            ),
            (
                CacheConfig {
                    negative_ttl: Duration::from_secs(u64::MAX),
                    ..CacheConfig::default()
                },
                "negative_ttl",
            ),
            (
                CacheConfig {
                    max_entries: 1 << 31,
                    max_negative_entries: 0,
                    ..CacheConfig::default()
                },
                "max_entries",
            ),
            (
                CacheConfig {
                    max_entries: 10,
                    max_negative_entries: 11,
                    ..CacheConfig::default()
                },
                "max_negative_entries",
            ),
        ];
        for (cfg, field) in bad {
            assert_eq!(
                IntrospectionCache::new(cfg).err(),
                Some(IntrospectError::InvalidConfig { field })
            );
        }
        assert!(IntrospectionCache::new(CacheConfig::default()).is_ok());
    }

    #[test]
    fn hasher_spreads_keys_and_is_seeded() {
        let a = KeyHasherBuilder::new();
        let b = KeyHasherBuilder::new();
        let k = CacheKey::for_token("x");
        assert_ne!(
            a.hash_one(k),
            b.hash_one(k),
            "two caches use different seeds"
        );
        let hashes: std::collections::HashSet<u64> = (0..10_000)
            .map(|i| a.hash_one(CacheKey::for_token(&i.to_string())))
            .collect();
        assert_eq!(hashes.len(), 10_000);
        // top 7 bits (hashbrown's tag) take many values
        let tags: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert_eq!(tags.len(), 128);
    }

    /// Map, rings and indexes agree: every map entry owns its ring slot, every ring slot's
    /// key is in the map with that slot, every index item names a live tagged entry.
    fn assert_indexes_consistent(c: &IntrospectionCache) {
        let mut ring_keys = 0;
        for (s, stripe) in c.stripes.iter().enumerate() {
            let mut st = stripe.0.lock();
            for pool in [Pool::Positive, Pool::Negative] {
                let ring = st.ring(pool);
                assert!(ring.occupied() <= ring.cap);
                for (i, k) in ring.slots.iter().enumerate() {
                    if let Some(k) = k {
                        ring_keys += 1;
                        assert_eq!(k.stripe_byte() & c.stripe_mask, s);
                        let e = c.map.get(k).expect("ring key in map");
                        assert_eq!((e.pool(), e.slot()), (pool, i));
                    }
                }
            }
        }
        assert_eq!(ring_keys, c.map.len());
        let mut tagged = 0;
        for e in c.map.iter() {
            if let Some(t) = &e.tags {
                tagged += 1;
                if let Some(j) = t.jti {
                    assert!(c.jti_index.get(&j).unwrap().contains(&(*e.key(), t.ticket)));
                }
                if let Some(f) = t.family {
                    assert!(c
                        .family_index
                        .get(&f)
                        .unwrap()
                        .contains(&(*e.key(), t.ticket)));
                }
            }
        }
        for index in [&c.jti_index, &c.family_index] {
            for items in index.iter() {
                assert!(!items.is_empty(), "empty index vectors are removed");
                for (k, t) in items.iter() {
                    let e = c.map.get(k).expect("index item names a live entry");
                    assert_eq!(e.tags.as_ref().map(|x| x.ticket), Some(*t));
                }
            }
        }
        let _ = tagged;
    }
}
