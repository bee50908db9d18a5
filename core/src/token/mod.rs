//! Access tokens in three formats, refresh tokens, and the records stored for them.
//!
//! - **JWT access token** (RFC 9068): `typ: at+jwt`; iss, sub, aud, exp, iat, jti,
//!   client_id, scope, `cnf` when certificate-bound (RFC 8705 §3.1), optional auth_time,
//!   acr and profile claims (SMART `patient`, `fhirUser`...).
//! - **Opaque token**: `hgat_` + 256 random bits in base64url. Only the SHA-256 of the
//!   token is ever stored, next to the claim set ([`TokenRecord`]); introspection reveals it.
//! - **Wrapper token**: a JWT (`typ: hg-wrapper+jwt`) with only iss, aud, exp, iat, jti,
//!   scope, client_id, `cnf` and, in the claim `ref`, an opaque reference (`hgref_` + 256
//!   bits). `sub`, when present, is a pairwise pseudonym. The full claim set (user,
//!   patient, PII) is reachable only by introspecting the reference. The README specifies
//!   the format for third parties.
//! - **Refresh token**: opaque (`hgrt_` + 256 bits) with a family id; the rotation
//!   policy is per profile ([`RefreshPolicy`]).
//!
//! What it never does: store or key anything by a raw token string (records are keyed
//! by SHA-256 of the token, or by (iss, jti): ES256 signatures are malleable, so one JWT
//! can have several valid spellings, J16), or put a secret in a `Debug` output.

mod issue;
pub(crate) mod record;
mod refresh;
mod validate;

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::jose::{b64, JoseError};

pub use issue::{
    AccessTokenGrant, IssuedAccessToken, IssuedRefreshToken, RefreshTokenGrant, TokenIssuer,
    MAX_ACCESS_TOKEN_LIFETIME,
};
pub use record::{RecordKind, RefreshRecord, RefreshState, TokenRecord, RECORD_VERSION};
pub use refresh::{RefreshPlan, RefreshPolicy};
pub use validate::{
    check_wrapper_against_record, AccessTokenClaims, AccessTokenValidator, RevocationList,
    RevocationStatus, RevokedJtis, ValidatedToken, WrapperClaims,
};

/// `typ` of JWT access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// `typ` of wrapper tokens.
pub const WRAPPER_TOKEN_TYP: &str = "hg-wrapper+jwt";
/// The wrapper-token claim that carries the opaque reference.
pub const WRAPPER_REF_CLAIM: &str = "ref";
/// Prefix of opaque access tokens.
pub const OPAQUE_PREFIX: &str = "hgat_";
/// Prefix of the opaque references inside wrapper tokens.
pub const REFERENCE_PREFIX: &str = "hgref_";
/// Prefix of refresh tokens.
pub const REFRESH_PREFIX: &str = "hgrt_";
/// Random bytes in an opaque token, reference or refresh token (256 bits).
pub const OPAQUE_RANDOM_BYTES: usize = 32;
/// Random bytes in a `jti` or family id (128 bits, HEART §4.2 and FAPI 2.0 §5.4.1).
pub const ID_RANDOM_BYTES: usize = 16;

/// The format of an access token, chosen per client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TokenFormat {
    /// RFC 9068 JWT.
    #[default]
    Jwt,
    /// Opaque reference token.
    Opaque,
    /// Wrapper JWT around an opaque reference.
    Wrapper,
}

/// Errors of the token layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The JWT layer refused the token.
    #[error(transparent)]
    Jose(#[from] JoseError),
    /// Not a token of any format we issue.
    #[error("unrecognised token format")]
    UnknownFormat,
    /// A required claim is missing or malformed for this token type.
    #[error("malformed token claims ({0})")]
    Claims(&'static str),
    /// The token was revoked.
    #[error("token revoked")]
    Revoked,
    /// The token (or refresh family) has expired.
    #[error("token expired")]
    Expired,
    /// A wrapper token does not agree with the record of its reference (J30, M8).
    #[error("wrapper does not match its reference ({0})")]
    WrapperMismatch(&'static str),
    /// A superseded refresh token was presented again (family revoked, R4).
    #[error("refresh token reuse")]
    RefreshReuse,
    /// The refresh token belongs to another client (R1).
    #[error("refresh token of another client")]
    WrongClient,
    /// The grant cannot be issued as asked (lifetime, empty audience...).
    #[error("invalid grant for issuance ({0})")]
    InvalidGrant(&'static str),
    /// The stored record is corrupt or of an unknown version (S12): treat as missing.
    #[error("corrupt record")]
    CorruptRecord,
    /// A stored record has a format version this build does not know (S12).
    #[error("unknown record version {0}")]
    UnknownRecordVersion(u8),
    /// No randomness available.
    #[error("randomness unavailable")]
    Random,
}

/// A bearer secret (access, reference or refresh token). `Debug` never shows it and it
/// is wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken(String);

impl SecretToken {
    /// Wrap a token string received from a caller.
    pub fn new(s: impl Into<String>) -> Self {
        SecretToken(s.into())
    }

    /// The token string, to hand to its holder.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of the token, the only form in which it is stored.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

impl std::fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretToken([redacted])")
    }
}

impl Drop for SecretToken {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// SHA-256 of a full token string: the store key of opaque tokens, references and
/// refresh tokens, and the introspection-cache key (I9: never a prefix).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Hash a token string.
    pub fn of(token: &str) -> Self {
        let d = digest::digest(&digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        TokenHash(out)
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TokenHash({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// Where a token's record lives in the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordKey {
    /// JWT access tokens: keyed by issuer and `jti` (J32: never by jti alone).
    Jti {
        /// Issuer.
        iss: String,
        /// Token id.
        jti: String,
    },
    /// Opaque tokens, wrapper references and refresh tokens: keyed by the token's hash.
    Hash(TokenHash),
}

impl RecordKey {
    /// The key bytes in the store: a tag byte (`0x00` hash, `0xff` jti) so that the two
    /// kinds can never collide, then the 32-byte hash or a length-prefixed (iss, jti).
    pub fn store_key(&self) -> Vec<u8> {
        match self {
            RecordKey::Hash(h) => {
                let mut k = Vec::with_capacity(33);
                k.push(0x00);
                k.extend_from_slice(&h.0);
                k
            }
            RecordKey::Jti { iss, jti } => {
                let mut k = Vec::with_capacity(1 + 8 + iss.len() + jti.len());
                k.push(0xff);
                k.extend_from_slice(&(iss.len() as u64).to_be_bytes());
                k.extend_from_slice(iss.as_bytes());
                k.extend_from_slice(jti.as_bytes());
                k
            }
        }
    }
}

pub(crate) fn random_id(rng: &SystemRandom, bytes: usize) -> Result<String, TokenError> {
    let mut buf = [0u8; OPAQUE_RANDOM_BYTES];
    let buf = &mut buf[..bytes.min(OPAQUE_RANDOM_BYTES)];
    rng.fill(buf).map_err(|_| TokenError::Random)?;
    Ok(b64::encode(buf))
}

pub(crate) fn random_secret(rng: &SystemRandom, prefix: &str) -> Result<SecretToken, TokenError> {
    let mut buf = [0u8; OPAQUE_RANDOM_BYTES];
    rng.fill(&mut buf).map_err(|_| TokenError::Random)?;
    let mut s = String::with_capacity(prefix.len() + 43);
    s.push_str(prefix);
    b64::encode_into(buf, &mut s);
    buf.zeroize();
    Ok(SecretToken(s))
}

/// Whether `token` has the shape of one of our opaque strings with `prefix`:
/// the prefix and exactly 43 base64url characters (256 bits).
pub(crate) fn has_opaque_shape(token: &str, prefix: &str) -> bool {
    token
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == 43 && b64::decode(rest).is_ok())
}
