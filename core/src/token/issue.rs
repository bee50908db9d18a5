//! One issuing API for every token format: given a grant, return the token string and
//! the record to store. Nothing is written anywhere: the caller stores the record (and
//! must do so before handing the token out, so that no token exists without its record).

use std::sync::Arc;

use ring::rand::SystemRandom;
use serde::Serialize;
use serde_json::{Map, Value};

use super::record::{RecordKind, RefreshRecord, RefreshState, TokenRecord};
use super::{
    random_id, random_secret, RecordKey, SecretToken, TokenError, TokenFormat, TokenHash,
    ACCESS_TOKEN_TYP, ID_RANDOM_BYTES, OPAQUE_PREFIX, REFERENCE_PREFIX, REFRESH_PREFIX,
    WRAPPER_TOKEN_TYP,
};
use crate::clock::UnixTime;
use crate::jose::{sign_compact, KeyRing};
use crate::mtls::Confirmation;

/// Longest access-token lifetime the issuer accepts (profiles set lower ceilings).
pub const MAX_ACCESS_TOKEN_LIFETIME: u32 = 24 * 3600;
/// Longest refresh-token lifetime the issuer accepts.
pub const MAX_REFRESH_TOKEN_LIFETIME: u32 = 366 * 24 * 3600;

/// Claim names that profile context may not override.
const REGISTERED: [&str; 14] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "client_id",
    "scope",
    "cnf",
    "auth_time",
    "acr",
    "ref",
    "active",
];

/// What an access token is issued for.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessTokenGrant {
    /// The client the token is issued to.
    pub client_id: String,
    /// The subject: the user, or the client id for client_credentials (RFC 9068 §2.2).
    pub sub: String,
    /// For wrapper tokens: a pairwise pseudonym to show as `sub` (never the user id).
    pub pairwise_sub: Option<String>,
    /// Granted scopes, space-separated (empty for none).
    pub scope: String,
    /// Audiences (resource server identifiers); at least one.
    pub aud: Vec<String>,
    /// Certificate binding (RFC 8705 §3).
    pub cnf: Option<Confirmation>,
    /// Lifetime in seconds (1..=MAX_ACCESS_TOKEN_LIFETIME).
    pub lifetime: u32,
    /// Token format.
    pub format: TokenFormat,
    /// Time of the user's authentication.
    pub auth_time: Option<UnixTime>,
    /// Authentication context class reference.
    pub acr: Option<String>,
    /// The refresh family this token comes from, if any.
    pub family_id: Option<String>,
    /// Profile claims (SMART `patient`, `encounter`, `fhirUser`, `fhirContext`...).
    /// In JWT tokens they are claims; in opaque and wrapper tokens only the record has them.
    pub context: Map<String, Value>,
}

/// An access token just issued.
#[derive(Debug)]
pub struct IssuedAccessToken {
    /// The token string for the client.
    pub token: SecretToken,
    /// The format.
    pub format: TokenFormat,
    /// The token id.
    pub jti: String,
    /// Expiry.
    pub expires_at: UnixTime,
    /// Seconds to expiry (the token response's `expires_in`).
    pub expires_in: u32,
    /// Where to store the record.
    pub record_key: RecordKey,
    /// The record to store.
    pub record: TokenRecord,
}

/// What a refresh token is issued for.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshTokenGrant {
    /// The client.
    pub client_id: String,
    /// The subject.
    pub sub: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// Audiences.
    pub aud: Vec<String>,
    /// Certificate binding.
    pub cnf: Option<Confirmation>,
    /// Lifetime in seconds; for a successor, the caller passes what remains of the family.
    pub lifetime: u32,
    /// The family to continue, or `None` to start a new one.
    pub family_id: Option<String>,
    /// Generation within the family.
    pub generation: u32,
    /// Time of the user's authentication.
    pub auth_time: Option<UnixTime>,
    /// Authentication context class reference.
    pub acr: Option<String>,
    /// Launch context.
    pub context: Map<String, Value>,
}

/// A refresh token just issued.
#[derive(Debug)]
pub struct IssuedRefreshToken {
    /// The token string for the client.
    pub token: SecretToken,
    /// Its hash, the store key.
    pub hash: TokenHash,
    /// The record to store.
    pub record: RefreshRecord,
}

/// Issues tokens for one issuer with the active key of a key ring.
#[derive(Debug)]
pub struct TokenIssuer {
    issuer: String,
    keys: Arc<KeyRing>,
    rng: SystemRandom,
}

#[derive(Serialize)]
#[serde(untagged)]
enum AudOut<'a> {
    One(&'a str),
    Many(&'a [String]),
}

impl<'a> AudOut<'a> {
    fn of(aud: &'a [String]) -> Self {
        match aud {
            [one] => AudOut::One(one),
            many => AudOut::Many(many),
        }
    }
}

/// RFC 9068 §2.2 claims, serialised without building a map.
#[derive(Serialize)]
struct JwtAccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: AudOut<'a>,
    exp: i64,
    iat: i64,
    jti: &'a str,
    client_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<&'a Confirmation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acr: Option<&'a str>,
    #[serde(flatten)]
    context: &'a Map<String, Value>,
}

/// Wrapper-token claims: only what a first check needs, plus the reference.
#[derive(Serialize)]
struct WrapperClaimsOut<'a> {
    iss: &'a str,
    aud: AudOut<'a>,
    exp: i64,
    iat: i64,
    jti: &'a str,
    client_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<&'a Confirmation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(rename = "ref")]
    reference: &'a str,
}

impl TokenIssuer {
    /// An issuer named `issuer` (exact string, as in discovery) signing with `keys`.
    pub fn new(issuer: impl Into<String>, keys: Arc<KeyRing>) -> Self {
        TokenIssuer {
            issuer: issuer.into(),
            keys,
            rng: SystemRandom::new(),
        }
    }

    /// The issuer identifier.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The key ring.
    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    /// Issue an access token in the grant's format at `now`.
    pub fn issue_access_token(
        &self,
        grant: &AccessTokenGrant,
        now: UnixTime,
    ) -> Result<IssuedAccessToken, TokenError> {
        if grant.lifetime == 0 || grant.lifetime > MAX_ACCESS_TOKEN_LIFETIME {
            return Err(TokenError::InvalidGrant("lifetime"));
        }
        if grant.aud.is_empty() || grant.aud.iter().any(String::is_empty) {
            return Err(TokenError::InvalidGrant("aud"));
        }
        if grant.client_id.is_empty() || grant.sub.is_empty() {
            return Err(TokenError::InvalidGrant("client_id/sub"));
        }
        if grant
            .context
            .keys()
            .any(|k| REGISTERED.contains(&k.as_str()))
        {
            return Err(TokenError::InvalidGrant(
                "context overrides a registered claim",
            ));
        }
        let iat = now.secs();
        let exp = now
            .checked_add(i64::from(grant.lifetime))
            .ok_or(TokenError::InvalidGrant("lifetime"))?
            .secs();
        let jti = random_id(&self.rng, ID_RANDOM_BYTES)?;
        let (kind, token, record_key) = match grant.format {
            TokenFormat::Jwt => {
                let claims = JwtAccessClaims {
                    iss: &self.issuer,
                    sub: &grant.sub,
                    aud: AudOut::of(&grant.aud),
                    exp,
                    iat,
                    jti: &jti,
                    client_id: &grant.client_id,
                    scope: &grant.scope,
                    cnf: grant.cnf.as_ref(),
                    auth_time: grant.auth_time.map(UnixTime::secs),
                    acr: grant.acr.as_deref(),
                    context: &grant.context,
                };
                let token = self.sign(ACCESS_TOKEN_TYP, &claims)?;
                let key = RecordKey::Jti {
                    iss: self.issuer.clone(),
                    jti: jti.clone(),
                };
                (RecordKind::AccessJwt, token, key)
            }
            TokenFormat::Opaque => {
                let token = random_secret(&self.rng, OPAQUE_PREFIX)?;
                let key = RecordKey::Hash(token.hash());
                (RecordKind::AccessOpaque, token, key)
            }
            TokenFormat::Wrapper => {
                let reference = random_secret(&self.rng, REFERENCE_PREFIX)?;
                let claims = WrapperClaimsOut {
                    iss: &self.issuer,
                    aud: AudOut::of(&grant.aud),
                    exp,
                    iat,
                    jti: &jti,
                    client_id: &grant.client_id,
                    scope: &grant.scope,
                    cnf: grant.cnf.as_ref(),
                    sub: grant.pairwise_sub.as_deref(),
                    reference: reference.expose(),
                };
                let token = self.sign(WRAPPER_TOKEN_TYP, &claims)?;
                (
                    RecordKind::AccessWrapper,
                    token,
                    RecordKey::Hash(reference.hash()),
                )
            }
        };
        let record = TokenRecord {
            kind,
            iss: self.issuer.clone(),
            jti: jti.clone(),
            client_id: grant.client_id.clone(),
            sub: grant.sub.clone(),
            pairwise_sub: grant.pairwise_sub.clone(),
            scope: grant.scope.clone(),
            aud: grant.aud.clone(),
            iat,
            exp,
            cnf: grant.cnf.clone(),
            auth_time: grant.auth_time.map(UnixTime::secs),
            acr: grant.acr.clone(),
            family_id: grant.family_id.clone(),
            context: grant.context.clone(),
        };
        Ok(IssuedAccessToken {
            token,
            format: grant.format,
            jti,
            expires_at: UnixTime(exp),
            expires_in: grant.lifetime,
            record_key,
            record,
        })
    }

    /// Issue a refresh token at `now`, starting a new family unless one is given.
    pub fn issue_refresh_token(
        &self,
        grant: &RefreshTokenGrant,
        now: UnixTime,
    ) -> Result<IssuedRefreshToken, TokenError> {
        if grant.lifetime == 0 || grant.lifetime > MAX_REFRESH_TOKEN_LIFETIME {
            return Err(TokenError::InvalidGrant("lifetime"));
        }
        let exp = now
            .checked_add(i64::from(grant.lifetime))
            .ok_or(TokenError::InvalidGrant("lifetime"))?
            .secs();
        let family_id = match &grant.family_id {
            Some(f) => f.clone(),
            None => random_id(&self.rng, ID_RANDOM_BYTES)?,
        };
        let token = random_secret(&self.rng, REFRESH_PREFIX)?;
        let record = RefreshRecord {
            iss: self.issuer.clone(),
            client_id: grant.client_id.clone(),
            sub: grant.sub.clone(),
            scope: grant.scope.clone(),
            aud: grant.aud.clone(),
            family_id,
            generation: grant.generation,
            state: RefreshState::Active,
            cnf: grant.cnf.clone(),
            iat: now.secs(),
            exp,
            auth_time: grant.auth_time.map(UnixTime::secs),
            acr: grant.acr.clone(),
            context: grant.context.clone(),
        };
        Ok(IssuedRefreshToken {
            hash: token.hash(),
            token,
            record,
        })
    }

    fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<SecretToken, TokenError> {
        let payload = serde_json::to_vec(claims).map_err(|_| TokenError::Claims("serialise"))?;
        let state = self.keys.load();
        let token = sign_compact(state.active(), Some(typ), &payload)?;
        Ok(SecretToken::new(token))
    }
}
