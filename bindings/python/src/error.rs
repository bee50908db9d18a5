//! The one error type of the binding and its one mapping to Python exceptions.
//!
//! Exception names follow PyJWT's (`InvalidTokenError`, `DecodeError`, ...) with the same
//! hierarchy, so that `except` clauses port over; heartgate adds a few for what PyJWT does
//! not check (certificate binding, scopes, introspection). Messages are fixed texts: no
//! token, claim value, secret or dependency message ever appears in one.

use heartgate_core::introspect::IntrospectError;
use heartgate_core::jose::{JoseError, KeyError};
use heartgate_core::mtls::MtlsError;
use heartgate_core::scope::ScopeError;
use heartgate_core::token::TokenError;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::PyTypeInfo;

pyo3::create_exception!(
    heartgate,
    PyJWTError,
    PyException,
    "Base of every heartgate error (named as PyJWT's base)."
);
pyo3::create_exception!(
    heartgate,
    InvalidTokenError,
    PyJWTError,
    "The token is not acceptable."
);
pyo3::create_exception!(
    heartgate,
    DecodeError,
    InvalidTokenError,
    "The token is malformed."
);
pyo3::create_exception!(
    heartgate,
    InvalidSignatureError,
    DecodeError,
    "The signature does not verify."
);
pyo3::create_exception!(
    heartgate,
    UnknownKeyError,
    InvalidSignatureError,
    "No key of the key set has the token's `kid` (or algorithm)."
);
pyo3::create_exception!(
    heartgate,
    ExpiredSignatureError,
    InvalidTokenError,
    "`exp` has passed."
);
pyo3::create_exception!(
    heartgate,
    InvalidAudienceError,
    InvalidTokenError,
    "`aud` does not name the expected audience."
);
pyo3::create_exception!(
    heartgate,
    InvalidIssuerError,
    InvalidTokenError,
    "`iss` is not the expected issuer."
);
pyo3::create_exception!(
    heartgate,
    InvalidIssuedAtError,
    InvalidTokenError,
    "`iat` is malformed."
);
pyo3::create_exception!(
    heartgate,
    ImmatureSignatureError,
    InvalidTokenError,
    "`nbf` (or `iat`) is in the future."
);
pyo3::create_exception!(
    heartgate,
    InvalidKeyError,
    PyJWTError,
    "The key cannot be used (malformed, wrong type, or an asymmetric key for HS256)."
);
pyo3::create_exception!(
    heartgate,
    InvalidAlgorithmError,
    InvalidTokenError,
    "The token's algorithm is not allowed (alg none, HS256 with a public key, ...)."
);
pyo3::create_exception!(
    heartgate,
    MissingRequiredClaimError,
    InvalidTokenError,
    "A required claim is absent; `.claim` names it."
);
pyo3::create_exception!(
    heartgate,
    InactiveTokenError,
    InvalidTokenError,
    "Introspection says the token is not active (revoked, expired or unknown)."
);
pyo3::create_exception!(
    heartgate,
    CertificateBindingError,
    InvalidTokenError,
    "RFC 8705 certificate binding failed (no certificate, or another certificate)."
);
pyo3::create_exception!(
    heartgate,
    InsufficientScopeError,
    PyJWTError,
    "The token is valid but its scopes do not allow the request (RFC 6750 §3.1)."
);
pyo3::create_exception!(
    heartgate,
    IntrospectionError,
    PyJWTError,
    "The introspection endpoint or the JWKS could not be used (not the token's fault)."
);
pyo3::create_exception!(
    heartgate,
    InternalError,
    PyJWTError,
    "A bug in heartgate (a caught Rust panic); the operation did not succeed."
);

/// Everything that can go wrong in the binding.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The JOSE layer refused the token or key.
    #[error(transparent)]
    Jose(#[from] JoseError),
    /// A key was refused.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The token layer refused the token.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Certificate binding or a certificate failed.
    #[error(transparent)]
    Mtls(#[from] MtlsError),
    /// The introspection response was malformed.
    #[error(transparent)]
    Introspect(#[from] IntrospectError),
    /// A scope string is malformed.
    #[error(transparent)]
    Scope(#[from] ScopeError),
    /// A claim the caller requires is absent.
    #[error("token is missing the \"{0}\" claim")]
    MissingClaim(String),
    /// Introspection answered `active: false`.
    #[error("token is not active")]
    Inactive,
    /// Introspection's answer does not agree with the token or this resource server.
    #[error("introspection answer does not fit the token ({0})")]
    IntrospectionMismatch(&'static str),
    /// The token's scopes do not cover the request.
    #[error("insufficient scope")]
    InsufficientScope,
    /// HS256 asked for with an asymmetric key, PEM or JWK (THREATS J2).
    #[error("HS256 needs an explicit shared secret, never an asymmetric key")]
    HmacWithAsymmetricKey,
    /// An HMAC secret shorter than the hash (RFC 7518 §3.2).
    #[error("HS256 secrets must be at least 32 bytes (RFC 7518 §3.2)")]
    WeakSecret,
    /// A shared secret given for an asymmetric algorithm.
    #[error("a shared secret cannot be used with an asymmetric algorithm")]
    SecretForAsymmetric,
    /// The key's kind is not understood.
    #[error("unsupported key: {0}")]
    UnsupportedKey(&'static str),
    /// An argument is not acceptable (a programming error, not a bad token).
    #[error("{0}")]
    Argument(&'static str),
    /// A caught panic.
    #[error("internal error")]
    Internal,
}

fn jose_to_py(e: &JoseError) -> PyErr {
    let msg = e.to_string();
    match e {
        JoseError::TooLarge
        | JoseError::NotCompactJws
        | JoseError::Base64
        | JoseError::Json(_)
        | JoseError::CritNotSupported
        | JoseError::UnencodedPayload
        | JoseError::HeaderKeyReference
        | JoseError::NestedOrEncrypted
        | JoseError::InvalidKid
        | JoseError::InvalidHeader(_)
        | JoseError::WrongType
        | JoseError::LifetimeTooLong => DecodeError::new_err(msg),
        JoseError::AlgNone
        | JoseError::UnsupportedAlgorithm
        | JoseError::AlgorithmNotAllowed
        | JoseError::AlgorithmKeyMismatch => InvalidAlgorithmError::new_err(msg),
        JoseError::UnknownKey | JoseError::AmbiguousKey => UnknownKeyError::new_err(msg),
        JoseError::BadSignature => InvalidSignatureError::new_err(msg),
        JoseError::SigningFailed | JoseError::Key(_) => InvalidKeyError::new_err(msg),
        JoseError::MissingClaim(c) => missing_claim(c),
        JoseError::InvalidClaim("aud") => InvalidAudienceError::new_err(msg),
        JoseError::InvalidClaim("iat") => InvalidIssuedAtError::new_err(msg),
        JoseError::InvalidClaim("iss") => InvalidIssuerError::new_err(msg),
        JoseError::InvalidClaim(_) => DecodeError::new_err(msg),
        JoseError::Expired => ExpiredSignatureError::new_err("Signature has expired"),
        JoseError::NotYetValid | JoseError::IssuedInFuture => ImmatureSignatureError::new_err(msg),
        JoseError::IssuerMismatch => InvalidIssuerError::new_err("Invalid issuer"),
        JoseError::AudienceMismatch | JoseError::UnexpectedAudience => {
            InvalidAudienceError::new_err("Invalid audience")
        }
        _ => InvalidTokenError::new_err(msg),
    }
}

fn missing_claim(claim: &str) -> PyErr {
    let err = MissingRequiredClaimError::new_err(format!("Token is missing the \"{claim}\" claim"));
    Python::attach(|py| {
        // Setting an attribute on a fresh exception instance cannot fail in practice; if
        // it did, the exception is still raised, only without `.claim`.
        let _ = err.value(py).setattr("claim", claim);
    });
    err
}

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        let msg = e.to_string();
        match &e {
            Error::Jose(j) | Error::Token(TokenError::Jose(j)) => jose_to_py(j),
            Error::Key(_) | Error::UnsupportedKey(_) => InvalidKeyError::new_err(msg),
            Error::HmacWithAsymmetricKey => InvalidAlgorithmError::new_err(msg),
            Error::WeakSecret | Error::SecretForAsymmetric => InvalidKeyError::new_err(msg),
            Error::Token(TokenError::Revoked) | Error::Inactive => InactiveTokenError::new_err(msg),
            Error::Token(TokenError::Expired) => ExpiredSignatureError::new_err(msg),
            Error::Token(TokenError::UnknownFormat) | Error::Token(TokenError::Claims(_)) => {
                DecodeError::new_err(msg)
            }
            // A grant the issuer cannot issue is the caller's argument error, not a token's.
            Error::Token(TokenError::InvalidGrant(_)) => PyValueError::new_err(msg),
            Error::Token(_) => InvalidTokenError::new_err(msg),
            Error::Mtls(
                MtlsError::CertificateMissing
                | MtlsError::ThumbprintMismatch
                | MtlsError::ConfirmationMissing
                | MtlsError::BadConfirmation,
            ) => CertificateBindingError::new_err(msg),
            Error::Mtls(_) => PyValueError::new_err(format!("client certificate: {msg}")),
            Error::Introspect(_) => IntrospectionError::new_err(msg),
            Error::IntrospectionMismatch(_) => InvalidTokenError::new_err(msg),
            Error::Scope(_) => PyValueError::new_err(msg),
            Error::MissingClaim(c) => missing_claim(c),
            Error::InsufficientScope => InsufficientScopeError::new_err(msg),
            Error::Argument(_) => PyValueError::new_err(msg),
            Error::Internal => InternalError::new_err(msg),
        }
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    macro_rules! add {
        ($($t:ident),*) => { $( m.add(stringify!($t), $t::type_object(py))?; )* };
    }
    add!(
        PyJWTError,
        InvalidTokenError,
        DecodeError,
        InvalidSignatureError,
        UnknownKeyError,
        ExpiredSignatureError,
        InvalidAudienceError,
        InvalidIssuerError,
        InvalidIssuedAtError,
        ImmatureSignatureError,
        InvalidKeyError,
        InvalidAlgorithmError,
        MissingRequiredClaimError,
        InactiveTokenError,
        CertificateBindingError,
        InsufficientScopeError,
        IntrospectionError,
        InternalError
    );
    Ok(())
}
