//! RFC 7662 introspection responses and the lock-light introspection cache.
//! (Skeleton: filled in by the foundation work.)

/// Errors of the introspection cache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The entry is not cacheable (already expired).
    #[error("entry is not cacheable")]
    NotCacheable,
}
