//! RFC 8705: certificate thumbprints, `cnf` confirmation and mTLS client authentication.
//!
//! What it does:
//!
//! * computes the `x5t#S256` thumbprint of a leaf certificate (RFC 8705 §3.1) and reads it
//!   back from a `cnf` claim strictly (base64url, no padding, exactly 32 bytes);
//! * checks that a certificate-bound token is presented with the certificate it is bound to
//!   (RFC 8705 §3.1, §3.2), returning a [`Bound`] / [`CertificateBound`] proof;
//! * matches a presented client certificate against the registered metadata of a
//!   `tls_client_auth` client (RFC 8705 §2.1.2: subject DN per RFC 4514 / RFC 5280 §7.1,
//!   or one SAN entry) or of a `self_signed_tls_client_auth` client (RFC 8705 §2.2: public key
//!   or exact certificate), returning a [`ClientCertMatch`] proof;
//! * parses an RFC 9440 `Client-Cert` header value (an RFC 8941 §3.3.5 byte sequence).
//!
//! What it never does:
//!
//! * **no chain validation.** Whether the certificate chains to a trusted CA, is within its
//!   validity period, is unrevoked and has a client-auth EKU (C15) is the TLS layer's job; for
//!   `tls_client_auth` the caller must only hand over a certificate the TLS layer has
//!   already validated. For `self_signed_tls_client_auth` no chain validation happens at all,
//!   by design (RFC 8705 §2.2).
//! * **no trust decision about the `Client-Cert` header.** Whether the header came from a
//!   trusted TLS-terminating proxy, and stripping it from untrusted input (C17, Keycloak
//!   CVE-2024-10039), is the server's job; [`parse_client_cert_header`] only parses.
//! * no I/O, no clock, no global state; no hand-written DER (all certificate parsing is
//!   `x509-parser`).
//!
//! Every check that passes returns a value only this module can construct ([`Bound`],
//! [`CertificateBound`], [`ClientCertMatch`]); no function answers a security question with a
//! `bool`. Thumbprints are compared in constant time (`subtle`).

mod binding;
mod client_auth;
mod dn;
mod header;
mod public_key;
mod thumbprint;

#[cfg(test)]
mod test_support;

pub use binding::{check_binding, require_binding, Binding, Bound, CertificateBound};
pub use client_auth::{match_tls_client_auth, ClientCertMatch, MatchedBy, TlsClientAuthRule};
pub use dn::SubjectDn;
pub use header::{parse_client_cert_header, HeaderDefect, MAX_CLIENT_CERT_HEADER_LEN};
pub(crate) use public_key::match_self_signed_jwks_facts;
pub use public_key::{
    certificate_public_key, match_self_signed, match_self_signed_jwks, match_self_signed_x5c,
    CertPublicKey, CertificateFacts,
};
pub use thumbprint::{leaf_from_pem, thumbprint, Confirmation, X5tS256};

/// Errors of certificate binding and mTLS client authentication.
///
/// The variants are precise for tests and the audit log. What a remote party learns is only
/// the coarse RFC code: `invalid_token` (RFC 6750 §3.1) for the binding variants,
/// `invalid_client` (RFC 6749 §5.2) for the client-authentication variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MtlsError {
    // --- The presented material is malformed (the client or the proxy is at fault). ---
    /// The input is not exactly one DER-encoded X.509 certificate (PEM text, trailing bytes,
    /// broken DER, duplicate extensions, a negative RSA modulus, ...).
    #[error("certificate could not be parsed")]
    BadCertificate,
    /// The PEM text holds no `CERTIFICATE` block first, or the block is broken.
    #[error("PEM certificate could not be parsed")]
    BadPem,
    /// An RFC 9440 `Client-Cert` header value is malformed (C17).
    #[error("malformed Client-Cert header")]
    MalformedClientCertHeader(HeaderDefect),
    /// A name in the certificate (a subject attribute or the compared SAN) contains a NUL
    /// character (C14).
    #[error("certificate name contains NUL")]
    NulInCertificateName,
    /// The certificate's public key is not P-256, RSA or Ed25519 (RFC 8705 §2.2).
    #[error("unsupported certificate key type")]
    UnsupportedKeyType,

    // --- Sender constraint (RFC 8705 §3.1): 401 `invalid_token`. ---
    /// The token is bound but no client certificate was presented (M2).
    #[error("no client certificate presented")]
    CertificateMissing,
    /// The presented certificate is not the one the token is bound to (M1, M6).
    #[error("certificate thumbprint mismatch")]
    ThumbprintMismatch,
    /// The profile requires a sender-constrained token but the token has no `cnf`.
    #[error("token is not certificate-bound")]
    ConfirmationMissing,
    /// `cnf.x5t#S256` is not base64url without padding of exactly 32 bytes (M5).
    #[error("malformed x5t#S256")]
    BadConfirmation,

    // --- Client authentication (RFC 8705 §2): 401 `invalid_client`. ---
    /// The certificate subject DN does not match `tls_client_auth_subject_dn` (C14).
    #[error("subject DN mismatch")]
    SubjectDnMismatch,
    /// No SAN entry of the registered kind matches (C14).
    #[error("subject alternative name mismatch")]
    SanMismatch,
    /// The certificate's public key is not among the registered keys (C16).
    #[error("public key not registered")]
    PublicKeyMismatch,
    /// The certificate is not among the registered `x5c` certificates (C16).
    #[error("certificate not registered")]
    CertificateMismatch,

    // --- The registered client metadata is unusable (our configuration is at fault). ---
    /// `tls_client_auth_subject_dn` is not a usable RFC 4514 string.
    #[error("registered subject DN is invalid")]
    InvalidRegisteredDn,
    /// A registered SAN value or public key is empty or malformed.
    #[error("registered value is invalid")]
    InvalidRegisteredValue,
}
