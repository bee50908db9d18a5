//! JOSE: JWS compact serialization (RFC 7515), JWT claims (RFC 7519), JWK and JWK Set
//! (RFC 7517), JWK thumbprints (RFC 7638) and the signing key ring.
//!
//! What it never does: fetch a key from a URL in a token (`jku`, `x5u`), take a key from
//! a token (`jwk`, `x5c`), let a token's header pick an algorithm for a key, implement
//! HMAC or `none`, or answer "is this valid?" with a `bool`: verification returns a
//! [`Verified`] value only this module can build.

mod alg;
pub mod b64;
pub mod json;
mod jwk;
mod jws;
mod jwt;
mod key;
mod keyring;
mod refetch;

pub use alg::{Algorithm, AlgorithmSet};
pub use json::JsonError;
pub use jwk::{parse_jwk, JwkSet, JwkSetOptions, MAX_JWKS_KEYS, MAX_JWKS_LEN};
pub use jws::{
    parse_compact, sign_compact, CompactJws, Header, VerifiedJws, ACCESS_TOKEN_MAX_LEN,
    REQUEST_OBJECT_MAX_LEN,
};
pub use jwt::{
    check_typ, sign_jwt, typ_matches, validate_claims, verify_jwt, Audience, AudienceRule, Claims,
    TypRule, Validation, Verified, DEFAULT_LEEWAY, MAX_LEEWAY, MAX_NUMERIC_DATE,
};
pub use key::{SigningKey, VerifyingKey, MAX_KID_LEN, MAX_RSA_BITS, MIN_RSA_BITS};
pub use keyring::{KeyRing, KeyRingState};
pub use refetch::{RefetchLimiter, RefetchPermit, DEFAULT_REFETCH_INTERVAL};

/// Finds the verification key for a JWS: by `kid` when the header has one, otherwise the
/// single key of the header's algorithm (several candidates are ambiguous and refused).
pub trait KeyResolver {
    /// The key for (`kid`, `alg`). A key found by `kid` whose algorithm differs from
    /// `alg` is an error (J4), not a fallback.
    fn resolve(&self, kid: Option<&str>, alg: Algorithm) -> Result<&VerifyingKey, JoseError>;
}

/// (A slice cannot become a `&dyn KeyResolver`; a `Vec` can.)
impl KeyResolver for Vec<VerifyingKey> {
    fn resolve(&self, kid: Option<&str>, alg: Algorithm) -> Result<&VerifyingKey, JoseError> {
        resolve_in(self, kid, alg)
    }
}

impl KeyResolver for VerifyingKey {
    fn resolve(&self, kid: Option<&str>, alg: Algorithm) -> Result<&VerifyingKey, JoseError> {
        resolve_in(std::slice::from_ref(self), kid, alg)
    }
}

pub(crate) fn resolve_in<'k>(
    keys: &'k [VerifyingKey],
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<&'k VerifyingKey, JoseError> {
    match kid {
        Some(kid) => {
            let key = keys
                .iter()
                .find(|k| k.kid() == kid)
                .ok_or(JoseError::UnknownKey)?;
            if key.algorithm() != alg {
                return Err(JoseError::AlgorithmKeyMismatch);
            }
            Ok(key)
        }
        None => {
            let mut candidates = keys.iter().filter(|k| k.algorithm() == alg);
            match (candidates.next(), candidates.next()) {
                (Some(k), None) => Ok(k),
                (None, _) => Err(JoseError::UnknownKey),
                (Some(_), Some(_)) => Err(JoseError::AmbiguousKey),
            }
        }
    }
}

/// Errors of the JOSE layer, grouped by what is wrong. To a remote party all of these
/// are just "invalid" in the RFC code of the context; the variant goes to the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoseError {
    // --- shape of the token (J12-J14, J18, J29)
    /// Longer than the context's limit; nothing was decoded.
    #[error("token too large")]
    TooLarge,
    /// Not exactly three non-empty dot-separated parts.
    #[error("not a compact JWS")]
    NotCompactJws,
    /// A part is not strict base64url.
    #[error("invalid base64url")]
    Base64,
    /// The header or payload is not an acceptable JSON object.
    #[error("invalid JSON: {0}")]
    Json(JsonError),

    // --- header (J1-J10, J25, J29)
    /// `alg: none`, in any spelling.
    #[error("alg none is refused")]
    AlgNone,
    /// An algorithm heartgate does not implement (HMAC, ES512, PS384, ...).
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// An implemented algorithm that this context does not allow (RS256 under FAPI 2.0,
    /// ES384 or RS384 outside the SMART profiles, ...).
    #[error("algorithm not allowed here")]
    AlgorithmNotAllowed,
    /// The header's algorithm is not the key's algorithm.
    #[error("algorithm does not match the key")]
    AlgorithmKeyMismatch,
    /// A `crit` header parameter (we understand no extension).
    #[error("crit is not supported")]
    CritNotSupported,
    /// A `b64` header parameter (RFC 7797 unencoded payloads are refused).
    #[error("b64 is not supported")]
    UnencodedPayload,
    /// `jku`, `x5u`, `jwk` or `x5c`: keys never come from the token.
    #[error("keys are never taken from the token")]
    HeaderKeyReference,
    /// `cty`, `enc` or `zip`: nested or encrypted JWTs are refused.
    #[error("nested or encrypted JWT")]
    NestedOrEncrypted,
    /// `kid` is not a string of 1..=256 bytes without NUL.
    #[error("invalid kid")]
    InvalidKid,
    /// Another header parameter has the wrong type, or `alg` is missing.
    #[error("invalid header parameter {0}")]
    InvalidHeader(&'static str),
    /// `typ` is wrong for this context.
    #[error("wrong typ for this context")]
    WrongType,

    // --- key and signature (J4, J6, J15, J34)
    /// No key with this `kid` (or of this algorithm).
    #[error("unknown key")]
    UnknownKey,
    /// No `kid`, and several keys could verify.
    #[error("ambiguous key")]
    AmbiguousKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Signing failed (key or randomness).
    #[error("signing failed")]
    SigningFailed,

    // --- claims (J20-J28)
    /// A required claim is absent.
    #[error("missing claim {0}")]
    MissingClaim(&'static str),
    /// A claim has the wrong type or is out of range.
    #[error("invalid claim {0}")]
    InvalidClaim(&'static str),
    /// `exp` has passed (beyond the leeway).
    #[error("expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("not yet valid")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("issued in the future")]
    IssuedInFuture,
    /// `exp` is further away than the context allows.
    #[error("lifetime too long")]
    LifetimeTooLong,
    /// `iss` is not the expected issuer.
    #[error("issuer mismatch")]
    IssuerMismatch,
    /// `aud` does not name the expected audience.
    #[error("audience mismatch")]
    AudienceMismatch,
    /// `aud` is present where none is expected.
    #[error("unexpected audience")]
    UnexpectedAudience,

    /// A key could not be loaded or used.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Why a key or key set was refused (J17, J33, J34).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// ring refused the key material.
    #[error("key rejected")]
    Rejected,
    /// Not a PEM `PRIVATE KEY` block.
    #[error("invalid PEM")]
    Pem,
    /// Key generation failed.
    #[error("key generation failed")]
    Generation,
    /// `kty` other than EC, RSA, OKP.
    #[error("unsupported key type")]
    UnsupportedKeyType,
    /// A curve other than P-256 or P-384 (EC) or Ed25519 (OKP) (J17).
    #[error("unsupported curve")]
    UnsupportedCurve,
    /// The JWK names an algorithm we do not implement.
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// Private members (`d`, `p`, `q`, ...) in a public key.
    #[error("private key material")]
    PrivateMembers,
    /// A symmetric key (`kty: oct`).
    #[error("symmetric key")]
    Symmetric,
    /// RSA modulus under 2048 bits.
    #[error("RSA key too small")]
    RsaTooSmall,
    /// A small-order or non-canonical Ed25519 key.
    #[error("weak key")]
    WeakKey,
    /// Two keys with the same `kid`.
    #[error("duplicate kid")]
    DuplicateKid,
    /// A member is missing or malformed.
    #[error("invalid JWK member {0}")]
    InvalidJwk(&'static str),
    /// The JWK's `alg` does not fit its key type.
    #[error("algorithm does not fit the key")]
    AlgorithmMismatch,
    /// An RSA key without `alg` where no default was configured.
    #[error("ambiguous algorithm")]
    AmbiguousAlgorithm,
    /// A key marked for encryption only.
    #[error("key is not for signatures")]
    NotForSignatures,
    /// Document or key set too large.
    #[error("too large")]
    TooLarge,
    /// Not an acceptable JSON object.
    #[error("invalid JSON: {0}")]
    Json(JsonError),
    /// The active key cannot be retired.
    #[error("the active key cannot be retired")]
    ActiveKey,
    /// Two signing keys of one algorithm in one ring.
    #[error("two signing keys for one algorithm")]
    DuplicateAlgorithm,
}
