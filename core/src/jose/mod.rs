//! JOSE: JWS compact serialization (RFC 7515), JWT claims (RFC 7519), JWK/JWKS (RFC 7517)
//! and the signing key ring. (Skeleton: filled in by the foundation work.)

/// Errors of the JOSE layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoseError {
    /// The token is malformed.
    #[error("malformed")]
    Malformed,
}
