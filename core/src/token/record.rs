//! Records at rest: what the store keeps for a token, encoded as CBOR (cbor4ii) behind
//! a one-byte format version. A record never contains the token it describes (only its
//! hash is used as the key), nor any client credential (P21).
//!
//! Decoding is total: a wrong version, a truncated or fuzzed record is a typed error that
//! callers treat as "missing" (fail closed, S12), never a panic.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{Map, Value};

use super::TokenError;
use crate::clock::UnixTime;
use crate::introspect::{Audience, IntrospectError, IntrospectionResponse};
use crate::mtls::Confirmation;

/// Format version of the records this build writes.
pub const RECORD_VERSION: u8 = 1;

/// Largest record accepted when decoding, in bytes.
const MAX_RECORD_LEN: usize = 256 * 1024;

/// What a [`TokenRecord`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A JWT access token, stored by (iss, jti) for introspection and revocation.
    AccessJwt,
    /// An opaque access token, stored by hash.
    AccessOpaque,
    /// The reference inside a wrapper token, stored by hash of the reference.
    AccessWrapper,
}

/// The full claim set of an access token, as introspection reveals it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Which format the token has.
    pub kind: RecordKind,
    /// Issuer.
    pub iss: String,
    /// Token id (for wrappers: the wrapper JWT's `jti`).
    pub jti: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// The subject (user, or the client itself for client_credentials).
    pub sub: String,
    /// The pairwise pseudonym shown in a wrapper's `sub`, if any.
    pub pairwise_sub: Option<String>,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// Audiences (resource servers).
    pub aud: Vec<String>,
    /// Issued at.
    pub iat: i64,
    /// Expires at.
    pub exp: i64,
    /// Certificate binding.
    pub cnf: Option<Confirmation>,
    /// Time of the user's authentication.
    pub auth_time: Option<i64>,
    /// Authentication context class.
    pub acr: Option<String>,
    /// The refresh family the token was issued from, for family revocation (V5).
    pub family_id: Option<String>,
    /// Profile claims: SMART launch context (`patient`, `encounter`, `fhirUser`,
    /// `fhirContext`...). Stored here, in a wrapper reachable only by introspection.
    pub context: Map<String, Value>,
}

impl TokenRecord {
    /// Encode for the store: version byte, then CBOR.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TokenError> {
        encode(self)
    }

    /// Decode a stored record (S12: any corruption is an error).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TokenError> {
        decode(bytes)
    }

    /// Expiry as a time.
    pub fn expires_at(&self) -> UnixTime {
        UnixTime(self.exp)
    }

    /// Whether the token is within its lifetime at `now` (`iat ≤ now < exp`).
    pub fn is_live(&self, now: UnixTime) -> bool {
        now.secs() < self.exp
    }

    /// The RFC 7662 response for this record at `now`: inactive (and nothing else) once
    /// expired; otherwise every member, with the profile context (SMART `patient`,
    /// `fhirUser`, `fhirContext`...) and `auth_time`/`acr` as extensions. Revocation is
    /// the caller's to check first: a revoked token's record is deleted or marked.
    pub fn introspection_response(
        &self,
        now: UnixTime,
    ) -> Result<IntrospectionResponse, IntrospectError> {
        if !self.is_live(now) {
            return Ok(IntrospectionResponse::inactive());
        }
        let aud = match self.aud.as_slice() {
            [one] => Audience::Single(one.clone()),
            many => Audience::Multiple(many.to_vec()),
        };
        let mut b = IntrospectionResponse::builder()
            .active(true)
            .client_id(self.client_id.clone())
            .token_type("Bearer")
            .exp(UnixTime(self.exp))
            .iat(UnixTime(self.iat))
            .sub(self.sub.clone())
            .aud(aud)
            .iss(self.iss.clone())
            .jti(self.jti.clone());
        if !self.scope.is_empty() {
            b = b.scope(self.scope.clone());
        }
        if let Some(cnf) = &self.cnf {
            b = b.cnf(cnf.clone());
        }
        if let Some(t) = self.auth_time {
            b = b.extension("auth_time", Value::from(t));
        }
        if let Some(acr) = &self.acr {
            b = b.extension("acr", Value::from(acr.clone()));
        }
        for (k, v) in &self.context {
            b = b.extension(k.clone(), v.clone());
        }
        b.build()
    }
}

/// The state of a refresh token within its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshState {
    /// The current token of its family.
    Active,
    /// Replaced by a newer token at the given time; its reuse is detected (R4).
    Superseded {
        /// When it was replaced.
        at: i64,
        /// The hash of the token that replaced it: on a grace-window retry (the client
        /// lost the response carrying it) that successor is deleted and replaced, so a
        /// family never has two live tokens.
        #[serde(default)]
        successor: Option<super::TokenHash>,
    },
}

/// What the store keeps for a refresh token (keyed by the hash of the token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshRecord {
    /// Issuer.
    pub iss: String,
    /// The client it belongs to (R1).
    pub client_id: String,
    /// The subject.
    pub sub: String,
    /// Granted scopes, space-separated: a refresh can narrow, never widen them (R6).
    pub scope: String,
    /// Audiences of the access tokens it may mint.
    pub aud: Vec<String>,
    /// The family: every refresh token descending from one grant.
    pub family_id: String,
    /// Position in the family (0 for the first token).
    pub generation: u32,
    /// Current or superseded.
    pub state: RefreshState,
    /// Certificate binding (R3).
    pub cnf: Option<Confirmation>,
    /// Issued at.
    pub iat: i64,
    /// Expires at (absolute; rotation does not extend the family's life).
    pub exp: i64,
    /// Time of the user's authentication.
    pub auth_time: Option<i64>,
    /// Authentication context class.
    pub acr: Option<String>,
    /// Launch context carried over to the access tokens it mints.
    pub context: Map<String, Value>,
}

impl RefreshRecord {
    /// Encode for the store: version byte, then CBOR.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TokenError> {
        encode(self)
    }

    /// Decode a stored record (S12).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TokenError> {
        decode(bytes)
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, TokenError> {
    cbor4ii::serde::to_vec(vec![RECORD_VERSION], value).map_err(|_| TokenError::CorruptRecord)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, TokenError> {
    if bytes.len() > MAX_RECORD_LEN {
        return Err(TokenError::CorruptRecord);
    }
    match bytes.split_first() {
        None => Err(TokenError::CorruptRecord),
        Some((&RECORD_VERSION, body)) => {
            cbor4ii::serde::from_slice(body).map_err(|_| TokenError::CorruptRecord)
        }
        Some((&v, _)) => Err(TokenError::UnknownRecordVersion(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TokenRecord {
        let mut context = Map::new();
        context.insert("patient".into(), "Patient/123".into());
        context.insert(
            "fhirContext".into(),
            serde_json::json!([{"reference": "Encounter/9"}]),
        );
        TokenRecord {
            kind: RecordKind::AccessOpaque,
            iss: "https://as".into(),
            jti: "j1".into(),
            client_id: "c1".into(),
            sub: "user-1".into(),
            pairwise_sub: None,
            scope: "patient/Observation.rs".into(),
            aud: vec!["https://fhir".into()],
            iat: 100,
            exp: 400,
            cnf: Some(Confirmation {
                x5t_s256: "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2".into(),
            }),
            auth_time: Some(90),
            acr: None,
            family_id: Some("fam".into()),
            context,
        }
    }

    #[test]
    fn record_round_trips_through_cbor_with_version_byte() {
        let r = sample();
        let bytes = r.to_bytes().unwrap();
        assert_eq!(bytes[0], RECORD_VERSION);
        assert_eq!(TokenRecord::from_bytes(&bytes).unwrap(), r);
    }

    #[test]
    fn s12_unknown_version_is_a_typed_error() {
        let mut bytes = sample().to_bytes().unwrap();
        bytes[0] = 9;
        assert_eq!(
            TokenRecord::from_bytes(&bytes),
            Err(TokenError::UnknownRecordVersion(9))
        );
    }

    #[test]
    fn s12_truncated_and_empty_records_are_corrupt() {
        let bytes = sample().to_bytes().unwrap();
        assert_eq!(TokenRecord::from_bytes(&[]), Err(TokenError::CorruptRecord));
        for cut in [1, 2, bytes.len() / 2, bytes.len() - 1] {
            assert_eq!(
                TokenRecord::from_bytes(&bytes[..cut]),
                Err(TokenError::CorruptRecord),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn s12_record_of_another_type_is_corrupt() {
        let bytes = sample().to_bytes().unwrap();
        assert_eq!(
            RefreshRecord::from_bytes(&bytes),
            Err(TokenError::CorruptRecord)
        );
    }

    #[test]
    fn s12_every_single_byte_corruption_is_handled_without_panic() {
        let bytes = sample().to_bytes().unwrap();
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                // Either decodes to some record or is refused; never panics.
                let _ = TokenRecord::from_bytes(&b);
            }
        }
    }
}
