//! Token responses (RFC 6749 §5.1), offline validation of heartgate's access tokens
//! (RFC 9068 JWTs and wrapper tokens, with core's `AccessTokenValidator`), and the
//! `x5t#S256` of a certificate (RFC 8705 §3.1).
//!
//! What it never does: call an introspection endpoint (opaque tokens are refused here
//! with a reason that says to introspect them), or let a token's header pick the key or
//! algorithm (J4).

use std::sync::Arc;

use heartgate_core::clock::UnixTime;
use heartgate_core::jose::JwkSet;
use heartgate_core::token::{
    AccessTokenValidator as CoreValidator, RevokedJtis, TokenError, ValidatedToken,
};
use serde_json::Value;

use crate::client::parse_jwks;
use crate::error::{HeartgateError, Result};
use crate::{error_from_body, json_object, now};

/// A successful token response. `Debug` is not derived: it holds bearer secrets.
#[derive(uniffi::Record)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// `Bearer` (compared case-insensitively, RFC 6749 §5.1).
    pub token_type: String,
    /// Lifetime in seconds, when the server sent one (it may not:
    /// `client-test-token-endpoint-response-without-expires_in`).
    pub expires_in: Option<u64>,
    /// The refresh token, if any.
    pub refresh_token: Option<String>,
    /// Granted scopes, when they differ from the requested ones or the server says so.
    pub scope: Option<String>,
    /// The OpenID Connect ID token, if any (verify it before trusting its claims).
    pub id_token: Option<String>,
    /// The SMART launch context `patient`, if any.
    pub patient: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("scope", &self.scope)
            .field("id_token", &self.id_token.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

fn opt_string(m: &serde_json::Map<String, Value>, name: &'static str) -> Result<Option<String>> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(HeartgateError::verification(name)),
    }
}

/// Check a token-endpoint response: `200` with `access_token` and `token_type` Bearer
/// (RFC 6749 §5.1), or the server's OAuth error (§5.2) as [`HeartgateError::ServerError`].
#[uniffi::export]
pub fn parse_token_response(status: u16, body: String) -> Result<TokenResponse> {
    if status != 200 {
        return Err(error_from_body(status, &body));
    }
    let m = json_object(&body)?;
    let access_token = opt_string(&m, "access_token")?
        .filter(|t| !t.is_empty())
        .ok_or(HeartgateError::verification("access_token"))?;
    let token_type = opt_string(&m, "token_type")?
        .filter(|t| t.eq_ignore_ascii_case("bearer"))
        .ok_or(HeartgateError::verification("token_type"))?;
    let expires_in = match m.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or(HeartgateError::verification("expires_in"))?,
        ),
    };
    Ok(TokenResponse {
        access_token,
        token_type,
        expires_in,
        refresh_token: opt_string(&m, "refresh_token")?,
        scope: opt_string(&m, "scope")?,
        id_token: opt_string(&m, "id_token")?,
        patient: opt_string(&m, "patient")?,
    })
}

/// The format of a validated access token.
#[derive(uniffi::Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFormat {
    /// RFC 9068 JWT (`typ` `at+jwt`): every claim checked offline.
    Jwt,
    /// heartgate's wrapper token: the first-check claims only; introspect for the rest.
    Wrapper,
}

/// The claims of an access token that passed offline validation.
#[derive(uniffi::Record, Debug)]
pub struct ValidatedAccessToken {
    /// JWT or wrapper.
    pub format: TokenFormat,
    /// Issuer.
    pub iss: String,
    /// Subject (a wrapper token may carry none).
    pub sub: Option<String>,
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Token id.
    pub jti: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// Granted scopes, space-separated.
    pub scope: Option<String>,
    /// `cnf.x5t#S256` when the token is bound to a certificate (RFC 8705 §3.1): compare
    /// with [`x5t_s256`] of the certificate the token is presented with.
    pub x5t_s256: Option<String>,
}

/// Validates access tokens of one issuer for one audience, offline, against the AS's
/// JWK Set. Thread-safe; build it once and reuse it.
#[derive(uniffi::Object)]
pub struct AccessTokenValidator {
    inner: CoreValidator,
    keys: JwkSet,
}

#[uniffi::export]
impl AccessTokenValidator {
    /// A validator for tokens of `issuer` meant for `audience`, with the AS's keys
    /// (`jwks`, JSON).
    #[uniffi::constructor]
    pub fn new(issuer: String, audience: String, jwks: String) -> Result<Arc<Self>> {
        if issuer.is_empty() || audience.is_empty() {
            return Err(HeartgateError::argument("issuer_or_audience"));
        }
        Ok(Arc::new(AccessTokenValidator {
            inner: CoreValidator::new(issuer, audience),
            keys: parse_jwks(&jwks)?,
        }))
    }

    /// Validate `token` now (RFC 9068 §4: `typ`, signature, `iss`, `aud`, `exp`).
    pub fn validate(&self, token: String) -> Result<ValidatedAccessToken> {
        self.validate_at(&token, now()?)
    }
}

fn token_reason(e: &TokenError) -> &'static str {
    match e {
        TokenError::Jose(j) => crate::client::jarm_reason(j),
        TokenError::UnknownFormat => "unknown_format",
        TokenError::Revoked => "revoked",
        TokenError::Expired => "exp",
        _ => "claims",
    }
}

impl AccessTokenValidator {
    pub(crate) fn validate_at(&self, token: &str, t: UnixTime) -> Result<ValidatedAccessToken> {
        // This app has no revocation feed: nothing is known revoked offline.
        let revoked = RevokedJtis::new();
        let v = self
            .inner
            .validate(token, &self.keys, &revoked, t)
            .map_err(|e| HeartgateError::VerificationFailed {
                reason: token_reason(&e).to_owned(),
            })?;
        Ok(match v {
            ValidatedToken::Jwt(c) => ValidatedAccessToken {
                format: TokenFormat::Jwt,
                iss: c.iss.clone(),
                sub: Some(c.sub.clone()),
                aud: c.aud.clone(),
                exp: c.exp.secs(),
                iat: c.iat.secs(),
                jti: c.jti.clone(),
                client_id: c.client_id.clone(),
                scope: c.scope.clone(),
                x5t_s256: c.cnf.as_ref().map(|c| c.x5t_s256.clone()),
            },
            ValidatedToken::Wrapper(c) => ValidatedAccessToken {
                format: TokenFormat::Wrapper,
                iss: c.iss.clone(),
                sub: c.sub.clone(),
                aud: c.aud.clone(),
                exp: c.exp.secs(),
                iat: c.iat.secs(),
                jti: c.jti.clone(),
                client_id: c.client_id.clone(),
                scope: c.scope.clone(),
                x5t_s256: c.cnf.as_ref().map(|c| c.x5t_s256.clone()),
            },
            // Nothing of an opaque token can be checked offline: never "valid" here.
            ValidatedToken::Opaque(_) => {
                return Err(HeartgateError::verification("opaque_token_introspect_it"))
            }
        })
    }
}

/// `x5t#S256` of a DER certificate: base64url(SHA-256(DER)), no padding (RFC 8705 §3.1;
/// THREATS M5: the input must be one well-formed certificate).
#[uniffi::export]
pub fn x5t_s256(certificate_der: Vec<u8>) -> Result<String> {
    heartgate_core::mtls::thumbprint(&certificate_der)
        .map(|t| t.to_base64url())
        .map_err(|_| HeartgateError::argument("certificate"))
}

/// `x5t#S256` of the first (leaf) certificate of a PEM chain (THREATS M6).
#[uniffi::export]
pub fn x5t_s256_of_pem(pem: String) -> Result<String> {
    let der = heartgate_core::mtls::leaf_from_pem(&pem)
        .map_err(|_| HeartgateError::argument("certificate"))?;
    x5t_s256(der)
}
