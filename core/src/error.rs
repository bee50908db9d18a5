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
