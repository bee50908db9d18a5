//! RFC 7662 introspection responses and the lock-light introspection cache.
//!
//! What it does:
//!
//! - [`IntrospectionResponse`]: the RFC 7662 §2.2 response object. It is built with
//!   [`IntrospectionBuilder`] (or [`IntrospectionResponse::inactive`]), serialized exactly
//!   as §2.2 shows (absent members are omitted), and parsed strictly by a resource server
//!   ([`IntrospectionResponse::from_json`]): a member of the wrong type is a typed
//!   [`IntrospectError`], never "absent". An inactive response carries nothing but
//!   `"active": false` (§2.2 SHOULD; THREATS I2, I5), whatever it was built from.
//! - [`IntrospectionResponse::jwt_introspection_claims`]: the claim set of the RFC 9701 §5
//!   JWT response (`iss`, `aud`, `iat`, `token_introspection`), as data; signing happens in
//!   `jose`, with the header `typ` [`TOKEN_INTROSPECTION_JWT_TYP`].
//! - [`IntrospectionCache`]: a bounded, TTL-respecting, revocation-aware cache of responses
//!   on `dashmap`, keyed by [`CacheKey`] (SHA-256 of the full token, or of `(iss, jti)`).
//!   See the [`cache`] module docs for the TTL rule (RFC 7662 §4, HEART §4.4), eviction,
//!   the revocation race and the memory cost per entry.
//!
//! What it never does: I/O, reading the clock (time is a [`crate::clock::UnixTime`]
//! parameter), keying anything by the raw token string (THREATS I9), or deciding whether a
//! token is active: that is the issuer's job; this module only carries and caches the
//! answer.
//!
//! RFC sections: RFC 7662 §2.2 (response members), §2.3 (inactive is not an error), §4
//! (never cache beyond `exp`); RFC 9701 §5 (JWT response claims), §8.1 (`typ`); HEART OAuth
//! 2.0 §4.4 (cache for at most half the token lifetime); RFC 8705 §3.2 (`cnf` in
//! introspection responses, THREATS M3/M4).

pub mod cache;
pub mod response;

pub use cache::{
    CacheConfig, CacheKey, CacheStats, Generation, IntrospectionCache, Invalidation,
    InvalidationSink, InvalidationTags, KeyHasherBuilder, MAX_INVALIDATION_LEN,
};
pub use response::{
    Audience, IntrospectionBuilder, IntrospectionResponse, REGISTERED_MEMBERS,
    TOKEN_INTROSPECTION_JWT_MEDIA_TYPE, TOKEN_INTROSPECTION_JWT_TYP,
};

/// Errors of introspection responses and of the introspection cache.
///
/// Grouped by who is at fault: the response document (a remote authorization server, or
/// the caller's builder input), the cache's configuration, and cache insertions that were
/// refused. None of them carries text from a dependency or from the parsed input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntrospectError {
    // --- the response document ---
    /// The response is not syntactically valid JSON.
    #[error("introspection response is not valid JSON")]
    MalformedJson,
    /// The response is JSON but not a JSON object.
    #[error("introspection response is not a JSON object")]
    NotAnObject,
    /// The response object names the same member twice (a parser-differential hazard).
    #[error("introspection response repeats a member")]
    DuplicateMember,
    /// The REQUIRED `active` member is absent (RFC 7662 §2.2).
    #[error("introspection response lacks `active`")]
    MissingActive,
    /// A registered member has the wrong JSON type (e.g. `"active": "true"`, `"exp": 1.5`).
    #[error("member `{member}` has the wrong type")]
    WrongType {
        /// The registered member name.
        member: &'static str,
    },
    /// A registered member has the right type but an invalid value (e.g. a `scope` that is
    /// not RFC 6749 §3.3 syntax, an empty `aud` array).
    #[error("member `{member}` has an invalid value")]
    InvalidValue {
        /// The registered member name.
        member: &'static str,
    },
    /// An extension member was given a registered member's name (it would shadow it).
    #[error("extension member collides with registered member `{member}`")]
    ReservedExtensionName {
        /// The registered member name the extension collided with.
        member: &'static str,
    },

    // --- the cache's configuration ---
    /// A [`CacheConfig`] field is out of range.
    #[error("cache configuration `{field}` is out of range")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
    },

    // --- refused cache insertions (the response itself is fine; it is just not cached) ---
    /// The entry is not cacheable: already expired, a zero TTL, half its lifetime already
    /// under one second, or its pool has capacity zero.
    #[error("entry is not cacheable")]
    NotCacheable,
    /// An invalidation (revocation, family revocation, flush) happened after the
    /// [`Generation`] snapshot the insert was based on, so the looked-up value may be stale.
    #[error("entry superseded by an invalidation during the lookup")]
    Superseded,
}
