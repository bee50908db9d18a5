//! The one core error, made of one focused enum per module.
//!
//! Callers (the server, the bindings) map it exactly once to an RFC error code.
//! The variants say precisely what went wrong, for tests and the audit log; what a
//! remote party is told is only the coarse RFC code (a bad token is just *invalid*).

use crate::introspect::IntrospectError;
use crate::jose::JoseError;
use crate::jose::KeyError;
use crate::mtls::MtlsError;
use crate::store::StoreError;
use crate::token::TokenError;

/// Any error heartgate-core can return.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// JOSE: keys, JWS, JWT claims.
    #[error(transparent)]
    Jose(#[from] JoseError),
    /// Token formats and records.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Certificate binding and mTLS client authentication.
    #[error(transparent)]
    Mtls(#[from] MtlsError),
    /// Keys and key sets.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Introspection responses and the introspection cache.
    #[error(transparent)]
    Introspect(#[from] IntrospectError),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How an error of an endpoint flow goes on the wire: HTTP status, the RFC error code
/// (RFC 6749 §5.2, RFC 7591 §3.2.2, RFC 9126 §2.3, RFC 6750 §3.1...) and a description
/// safe to show the caller. The server turns it into the response (JSON body,
/// `Cache-Control: no-store`, `WWW-Authenticate` on 401, `Retry-After` on 503) in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireError {
    /// HTTP status.
    pub status: u16,
    /// The `error` member.
    pub code: &'static str,
    /// The `error_description` member, when there is something safe to say.
    pub description: Option<&'static str>,
}

impl WireError {
    /// An error with a description.
    pub const fn new(status: u16, code: &'static str, description: &'static str) -> Self {
        WireError {
            status,
            code,
            description: Some(description),
        }
    }

    /// An error with no description.
    pub const fn bare(status: u16, code: &'static str) -> Self {
        WireError {
            status,
            code,
            description: None,
        }
    }

    /// 503 `temporarily_unavailable`: the store or signing failed; nothing was done.
    pub const UNAVAILABLE: WireError = WireError::bare(503, "temporarily_unavailable");
}

/// Errors that an endpoint reports to the caller.
pub trait ToWire {
    /// The status, code and description for the caller.
    fn to_wire(&self) -> WireError;
}
