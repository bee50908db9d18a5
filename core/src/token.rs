//! Access tokens (JWT, opaque, wrapper) and refresh tokens.
//! (Skeleton: filled in by the foundation work.)

/// Errors of the token formats.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is not valid.
    #[error("token is invalid")]
    Invalid,
}
