//! RFC 8705: certificate thumbprints, `cnf` confirmation and mTLS client authentication.
//! (Skeleton: filled in by the foundation work.)

use serde::{Deserialize, Serialize};

/// `x5t#S256`: SHA-256 of the DER leaf certificate (RFC 8705 §3.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct X5tS256(pub [u8; 32]);

impl std::fmt::Debug for X5tS256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "X5tS256(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// The `cnf` claim of a certificate-bound token (RFC 8705 §3.1, RFC 7800).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// base64url(SHA-256(DER)) without padding, as it appears in JSON.
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

/// Errors of certificate binding and mTLS client authentication.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MtlsError {
    /// The certificate could not be parsed.
    #[error("certificate could not be parsed")]
    BadCertificate,
}
