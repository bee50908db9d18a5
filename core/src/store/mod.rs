//! State that must outlive a request, behind one small trait.
//!
//! [`Store`] is a key-value interface with per-entry expiry and the atomic primitives
//! one-time values need: insert-if-absent (a `jti` used once), take-and-delete (a code
//! or `request_uri` redeemed once), and compare-and-swap (state machines: refresh
//! rotation, CIBA pending → decided). Every backend — [`MemoryStore`] here, the embedded
//! `redb` file store and Redis in the adapters — must pass the same conformance suite
//! ([`conformance`]), including 64 threads racing for one value.
//!
//! Values are opaque bytes (CBOR records with a version byte, see `token::record`).
//! Expiry is an absolute [`UnixTime`] computed by the caller from the item's own
//! lifetime (`exp`), never "now + ttl" inside the store, so a clock jump does not shorten
//! a replay window (S10). An expired entry is never returned, whether or not it has been
//! swept yet. A backend failure is [`StoreError::Unavailable`]: callers fail closed (503),
//! never open.

mod memory;

#[cfg(any(test, feature = "store-conformance"))]
pub mod conformance;

pub use memory::MemoryStore;

use crate::clock::UnixTime;

/// Separate key spaces, so that a key of one kind can never be read as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Namespace {
    /// Registered clients, by client_id.
    Client,
    /// Registration access tokens (RFC 7592), by hash.
    RegistrationToken,
    /// Authorization codes, by hash.
    Code,
    /// Pushed authorization requests, by hash of the request_uri.
    ParRequest,
    /// Pending user interactions (login/consent), by id.
    Interaction,
    /// Access-token records: opaque and wrapper references by hash, JWTs by (iss, jti).
    AccessToken,
    /// Refresh tokens, by hash.
    RefreshToken,
    /// Refresh families: the family's state (revoked, current generation), by family id.
    RefreshFamily,
    /// Revoked token ids, by (iss, jti).
    Revocation,
    /// Used JWT ids of client assertions and request objects, by (issuer, jti).
    Jti,
    /// Grants and consents, by (subject, client).
    Grant,
    /// Signing keys (encrypted where the backend is shared).
    SigningKey,
    /// CIBA authentication requests, by hash of auth_req_id.
    Ciba,
    /// CIBA authentication devices.
    Device,
    /// Users (password hashes, lockout state).
    User,
    /// Everything tied to rate limits and lockouts.
    RateLimit,
}

impl Namespace {
    /// Every namespace, for backends that keep one table per namespace.
    pub const ALL: [Namespace; 16] = [
        Namespace::Client,
        Namespace::RegistrationToken,
        Namespace::Code,
        Namespace::ParRequest,
        Namespace::Interaction,
        Namespace::AccessToken,
        Namespace::RefreshToken,
        Namespace::RefreshFamily,
        Namespace::Revocation,
        Namespace::Jti,
        Namespace::Grant,
        Namespace::SigningKey,
        Namespace::Ciba,
        Namespace::Device,
        Namespace::User,
        Namespace::RateLimit,
    ];

    /// A stable short name (table names, key prefixes).
    pub fn as_str(self) -> &'static str {
        match self {
            Namespace::Client => "client",
            Namespace::RegistrationToken => "regtoken",
            Namespace::Code => "code",
            Namespace::ParRequest => "par",
            Namespace::Interaction => "interaction",
            Namespace::AccessToken => "at",
            Namespace::RefreshToken => "rt",
            Namespace::RefreshFamily => "rtfamily",
            Namespace::Revocation => "revoked",
            Namespace::Jti => "jti",
            Namespace::Grant => "grant",
            Namespace::SigningKey => "key",
            Namespace::Ciba => "ciba",
            Namespace::Device => "device",
            Namespace::User => "user",
            Namespace::RateLimit => "ratelimit",
        }
    }
}

/// Why the store could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend is unreachable, timed out or failed: nothing was done (fail closed).
    #[error("store unavailable")]
    Unavailable,
    /// The key or value exceeds the backend's limits.
    #[error("store entry too large")]
    TooLarge,
}

/// Outcome of [`Store::insert_new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The key was absent (or expired) and now holds the value.
    New,
    /// A live entry already existed; nothing changed.
    AlreadyPresent,
}

/// Outcome of [`Store::compare_and_swap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swapped {
    /// The entry held the expected value and now holds the new one (or was deleted).
    Done,
    /// The entry held something else, or nothing: nothing changed.
    Conflict,
}

/// A (key, value) pair returned by [`Store::scan_prefix`].
pub type Entry = (Vec<u8>, Vec<u8>);
/// A (namespace, key, value) triple of [`Store::snapshot`].
pub type SnapshotEntry = (Namespace, Vec<u8>, Vec<u8>);

/// Largest key accepted by every backend, in bytes.
pub const MAX_KEY_LEN: usize = 512;
/// Largest value accepted by every backend, in bytes.
pub const MAX_VALUE_LEN: usize = 1024 * 1024;

/// A key-value store with expiry and atomic one-time operations.
///
/// Every method is atomic with respect to every other call on the same key, across
/// threads (and, for shared backends, across processes).
pub trait Store: Send + Sync {
    /// Insert or replace `key` with `value`, live until `expires_at`.
    fn put(
        &self,
        ns: Namespace,
        key: &[u8],
        value: &[u8],
        expires_at: UnixTime,
    ) -> Result<(), StoreError>;

    /// Insert `value` only if no entry live at `now` exists (a `jti` seen for the first
    /// time). Of many concurrent callers, exactly one gets [`Inserted::New`].
    fn insert_new(
        &self,
        ns: Namespace,
        key: &[u8],
        value: &[u8],
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<Inserted, StoreError>;

    /// The live value of `key` at `now`.
    fn get(&self, ns: Namespace, key: &[u8], now: UnixTime) -> Result<Option<Vec<u8>>, StoreError>;

    /// Remove `key` and return its live value: of many concurrent callers, exactly one
    /// gets `Some` (codes, request_uris, auth_req_ids).
    fn take(&self, ns: Namespace, key: &[u8], now: UnixTime)
        -> Result<Option<Vec<u8>>, StoreError>;

    /// Replace the live value `expected` by `new` (or delete it when `new` is `None`),
    /// atomically. Of many concurrent callers with the same `expected`, one wins.
    fn compare_and_swap(
        &self,
        ns: Namespace,
        key: &[u8],
        expected: &[u8],
        new: Option<(&[u8], UnixTime)>,
        now: UnixTime,
    ) -> Result<Swapped, StoreError>;

    /// Remove `key` (no error if absent).
    fn delete(&self, ns: Namespace, key: &[u8]) -> Result<(), StoreError>;

    /// Live entries whose key starts with `prefix`, at most `limit` of them, in key order.
    fn scan_prefix(
        &self,
        ns: Namespace,
        prefix: &[u8],
        limit: usize,
        now: UnixTime,
    ) -> Result<Vec<Entry>, StoreError>;

    /// Drop every entry expired at `now`; returns how many were dropped.
    fn purge_expired(&self, now: UnixTime) -> Result<usize, StoreError>;

    /// A point-in-time copy of every live entry, for tests that assert a rejected request
    /// left the store unchanged (THREATS §2 conventions).
    fn snapshot(&self, now: UnixTime) -> Result<Vec<SnapshotEntry>, StoreError>;
}

/// The size rule every backend applies: a key of 1 to [`MAX_KEY_LEN`] bytes, a value of at
/// most [`MAX_VALUE_LEN`] bytes; otherwise [`StoreError::TooLarge`].
pub fn check_sizes(key: &[u8], value: &[u8]) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || value.len() > MAX_VALUE_LEN {
        return Err(StoreError::TooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod memory_conformance {
    use super::MemoryStore;
    crate::store_conformance_tests!(MemoryStore::new());
}
