//! The user step's outcome, authorization codes, and the authorization response.
//!
//! [`complete`] turns a pushed request plus the user's approval (from the server's login
//! and consent pages) into a code: the request_uri is consumed here, at completion (P12),
//! the code is 256 random bits stored under its SHA-256 for at most the profile's code
//! lifetime (≤ 60 s, A2), bound to the client, redirect URI and PKCE challenge. The
//! response carries `iss` (RFC 9207) and goes back as plain query parameters or as a
//! JARM JWT (`iss`, `aud` = client_id, `exp` 120 s, every response parameter; errors
//! too) in the requested mode.
//!
//! [`redeem`] is the token endpoint's half (RFC 6749 §4.1.3): a code of another client
//! is refused without being consumed (A3); redirect URI (A4) and PKCE verifier (A5-A7)
//! must match; of concurrent redemptions exactly one wins, and a later reuse returns the
//! grant id so that every token issued from the code can be revoked (A1).

use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::par::{consume, AuthorizationRequest, RequestUriError, ResponseMode};
use super::pkce::verify_for_code;
use crate::audit::{AuditEvent, AuditSink, EventKind, Outcome};
use crate::client::AuthenticatedClient;
use crate::clock::UnixTime;
use crate::error::ToWire;
use crate::jose::{sign_jwt, Algorithm, KeyRing};
use crate::profile::Profile;
use crate::scope::ScopeSet;
use crate::store::{Namespace, Store, Swapped};

/// Lifetime of a JARM response JWT, seconds (node-oidc-provider uses 120; JARM ≤ 10 min).
pub const JARM_LIFETIME: i64 = 120;

/// What the user decided on the consent page.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    /// The authenticated user.
    pub subject: String,
    /// When the user authenticated.
    pub auth_time: UnixTime,
    /// Authentication context class.
    pub acr: Option<String>,
    /// Scopes the user granted (a subset of the requested ones).
    pub granted_scope: ScopeSet,
    /// Launch context: SMART `patient`, `encounter`, `fhirContext`...
    pub context: Map<String, Value>,
}

/// State of a stored code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CodeState {
    /// Not redeemed yet.
    Issued,
    /// Redeemed; tokens issued from it belong to this grant id.
    Redeemed {
        /// The grant (refresh family) the tokens were issued under.
        grant_id: String,
    },
}

/// What is stored for an authorization code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeRecord {
    /// The validated authorization request.
    pub request: AuthorizationRequest,
    /// The user.
    pub subject: String,
    /// Authentication time.
    pub auth_time: i64,
    /// Authentication context class.
    pub acr: Option<String>,
    /// Granted scopes.
    pub scope: String,
    /// Launch context.
    pub context: Map<String, Value>,
    /// Code expiry.
    pub expires_at: i64,
    /// Issued or redeemed.
    pub state: CodeState,
    /// The grant id the tokens will carry (refresh family; revocation on reuse).
    pub grant_id: String,
}

impl CodeRecord {
    fn to_bytes(&self) -> Result<Vec<u8>, CodeError> {
        crate::token::record::encode(self).map_err(|_| CodeError::Unavailable)
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        crate::token::record::decode(b).ok()
    }
}

/// Errors of the code flow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodeError {
    /// The request_uri is unknown, used, expired or foreign → `invalid_request_uri`.
    #[error("invalid_request_uri")]
    InvalidRequestUri,
    /// The approval grants scopes that were not requested, or lacks a required patient.
    #[error("approval does not fit the request ({0})")]
    InvalidApproval(&'static str),
    /// Unknown, expired, foreign code; redirect URI or verifier mismatch → `invalid_grant`.
    #[error("invalid_grant ({0})")]
    InvalidGrant(&'static str),
    /// The code was already redeemed: revoke every token of this grant (A1).
    #[error("invalid_grant (code reused)")]
    Reused {
        /// The grant whose tokens must be revoked.
        grant_id: String,
    },
    /// The client's JARM algorithm is not the AS's active signing algorithm.
    #[error("no signing key for the client's JARM algorithm")]
    JarmAlgorithm,
    /// Store or randomness failure → 503.
    #[error("unavailable")]
    Unavailable,
}

impl crate::error::ToWire for CodeError {
    fn to_wire(&self) -> crate::error::WireError {
        use crate::error::WireError;
        match self {
            CodeError::InvalidRequestUri => WireError::bare(400, "invalid_request_uri"),
            CodeError::InvalidApproval(d) => WireError::new(400, "invalid_request", d),
            CodeError::InvalidGrant(_) | CodeError::Reused { .. } => {
                WireError::bare(400, "invalid_grant")
            }
            CodeError::JarmAlgorithm => WireError::new(
                500,
                "server_error",
                "no signing key for the registered authorization_signed_response_alg",
            ),
            CodeError::Unavailable => WireError::UNAVAILABLE,
        }
    }
}

fn hash(code: &str) -> [u8; 32] {
    crate::token::TokenHash::of(code).0
}

fn random(prefix: &str) -> Result<String, CodeError> {
    crate::token::random_secret(&SystemRandom::new(), prefix)
        .map(|s| s.expose().to_owned())
        .map_err(|_| CodeError::Unavailable)
}

/// An authorization response, before encoding for the redirect.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthorizationResponse {
    /// Where to send the user back.
    pub redirect_uri: String,
    /// How.
    pub response_mode: ResponseMode,
    /// The client (JARM `aud`).
    pub client_id: String,
    /// Response parameters: `code` or `error`, `state`, and `iss`.
    pub params: Vec<(String, String)>,
}

/// How the browser is sent back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// An HTTP 303 to this URL (never 307, FAPI 2.0 §5.3.2.2 item 20).
    SeeOther(String),
    /// An auto-submitting HTML form POSTing these fields to this URL (`form_post.jwt`).
    FormPost {
        /// The redirect URI.
        action: String,
        /// The fields (`response`).
        fields: Vec<(String, String)>,
    },
}

/// Complete the user step: consume the pushed request and issue a code.
#[allow(clippy::too_many_arguments)] // reason: one value per input of the step, no bag
pub fn complete(
    issuer: &str,
    client_id: &str,
    request_uri: &str,
    profile: Profile,
    approval: &Approval,
    store: &dyn Store,
    now: UnixTime,
    audit: &dyn AuditSink,
) -> Result<(String, AuthorizationResponse), CodeError> {
    let r = complete_inner(
        issuer,
        client_id,
        request_uri,
        profile,
        approval,
        store,
        now,
    );
    let w;
    let (outcome, reason) = match &r {
        Ok(_) => (Outcome::Success, "issued"),
        Err(e) => {
            w = e.to_wire();
            (Outcome::Failure, w.description.unwrap_or(w.code))
        }
    };
    let e = AuditEvent::new(now, EventKind::CodeIssued, outcome, reason)
        .client(client_id)
        .scope(approval.granted_scope.to_string());
    crate::audit::settle(audit, e, r, || CodeError::Unavailable)
}

fn complete_inner(
    issuer: &str,
    client_id: &str,
    request_uri: &str,
    profile: Profile,
    approval: &Approval,
    store: &dyn Store,
    now: UnixTime,
) -> Result<(String, AuthorizationResponse), CodeError> {
    let request = consume(issuer, client_id, request_uri, store, now).map_err(|e| match e {
        RequestUriError::Unavailable => CodeError::Unavailable,
        _ => CodeError::InvalidRequestUri,
    })?;
    let requested =
        ScopeSet::parse(&request.scope).map_err(|_| CodeError::InvalidApproval("scope"))?;
    if !requested.covers(&approval.granted_scope) {
        return Err(CodeError::InvalidApproval("granted more than requested"));
    }
    // SMART: a patient/ scope requires a patient in context.
    if approval.granted_scope.needs_patient_context() && !approval.context.contains_key("patient") {
        return Err(CodeError::InvalidApproval("patient context required"));
    }
    let code = random("hgc_")?;
    let expires_at = now.secs() + i64::from(profile.policy().code_lifetime.min(60));
    let record = CodeRecord {
        request: request.clone(),
        subject: approval.subject.clone(),
        auth_time: approval.auth_time.secs(),
        acr: approval.acr.clone(),
        scope: approval.granted_scope.to_string(),
        context: approval.context.clone(),
        expires_at,
        state: CodeState::Issued,
        grant_id: random("")?,
    };
    store
        .put(
            Namespace::Code,
            &hash(&code),
            &record.to_bytes()?,
            UnixTime(expires_at),
        )
        .map_err(|_| CodeError::Unavailable)?;
    let mut params = vec![("code".to_owned(), code.clone())];
    if let Some(s) = &request.state {
        params.push(("state".to_owned(), s.clone()));
    }
    params.push(("iss".to_owned(), issuer.to_owned()));
    Ok((
        code,
        AuthorizationResponse {
            redirect_uri: request.redirect_uri,
            response_mode: request.response_mode,
            client_id: request.client_id,
            params,
        },
    ))
}

/// An error response for a request whose client and redirect URI are trusted (otherwise
/// the server shows an error page and does not redirect, A9/A12).
pub fn error_response(
    issuer: &str,
    request: &AuthorizationRequest,
    error: &'static str,
) -> AuthorizationResponse {
    let mut params = vec![("error".to_owned(), error.to_owned())];
    if let Some(s) = &request.state {
        params.push(("state".to_owned(), s.clone()));
    }
    params.push(("iss".to_owned(), issuer.to_owned()));
    AuthorizationResponse {
        redirect_uri: request.redirect_uri.clone(),
        response_mode: request.response_mode,
        client_id: request.client_id.clone(),
        params,
    }
}

fn append_query(uri: &str, params: &[(String, String)], sep_if_none: char) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        out.append_pair(k, v);
    }
    let encoded = out.finish();
    let sep = if sep_if_none == '?' && uri.contains('?') {
        '&'
    } else {
        sep_if_none
    };
    format!("{uri}{sep}{encoded}")
}

impl AuthorizationResponse {
    /// Encode the response. JARM modes sign with the active key of `keys`, whose
    /// algorithm must be the client's `authorization_signed_response_alg` when it names
    /// one.
    pub fn into_redirect(
        self,
        issuer: &str,
        keys: &KeyRing,
        client_alg: Option<Algorithm>,
        now: UnixTime,
    ) -> Result<Redirect, CodeError> {
        if !self.response_mode.is_jwt() {
            return Ok(Redirect::SeeOther(append_query(
                &self.redirect_uri,
                &self.params,
                '?',
            )));
        }
        let state = keys.load();
        let key = match client_alg {
            None => state.active(),
            Some(a) => state.signer(a).ok_or(CodeError::JarmAlgorithm)?,
        };
        let mut claims = Map::new();
        for (k, v) in &self.params {
            claims.insert(k.clone(), Value::String(v.clone()));
        }
        // JARM §4.1: iss, aud and exp; RFC 9207's iss is the same value, inside the JWT only.
        claims.insert("iss".into(), issuer.into());
        claims.insert("aud".into(), self.client_id.clone().into());
        claims.insert("exp".into(), (now.secs() + JARM_LIFETIME).into());
        let jwt = sign_jwt(key, None, &claims).map_err(|_| CodeError::Unavailable)?;
        let fields = vec![("response".to_owned(), jwt)];
        Ok(match self.response_mode {
            ResponseMode::FragmentJwt => {
                Redirect::SeeOther(append_query(&self.redirect_uri, &fields, '#'))
            }
            ResponseMode::FormPostJwt => Redirect::FormPost {
                action: self.redirect_uri,
                fields,
            },
            _ => Redirect::SeeOther(append_query(&self.redirect_uri, &fields, '?')),
        })
    }
}

/// What a redeemed code grants.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeGrant {
    /// The stored record (user, scopes, context, nonce...).
    pub record: CodeRecord,
}

/// Redeem a code at the token endpoint.
pub fn redeem(
    code: &str,
    client: &AuthenticatedClient,
    redirect_uri: Option<&str>,
    code_verifier: Option<&str>,
    store: &dyn Store,
    now: UnixTime,
) -> Result<CodeGrant, CodeError> {
    let key = hash(code);
    let bytes = store
        .get(Namespace::Code, &key, now)
        .map_err(|_| CodeError::Unavailable)?
        .ok_or(CodeError::InvalidGrant("unknown or expired code"))?;
    let record = CodeRecord::from_bytes(&bytes).ok_or(CodeError::InvalidGrant("unknown code"))?;
    // Checks that do not consume the code (A3: another client's attempt leaves it intact).
    if record.request.client_id != client.client_id() {
        return Err(CodeError::InvalidGrant("code of another client"));
    }
    if let CodeState::Redeemed { grant_id } = &record.state {
        return Err(CodeError::Reused {
            grant_id: grant_id.clone(),
        });
    }
    if now.secs() >= record.expires_at {
        return Err(CodeError::InvalidGrant("expired code"));
    }
    if redirect_uri != Some(record.request.redirect_uri.as_str()) {
        return Err(CodeError::InvalidGrant("redirect_uri"));
    }
    verify_for_code(Some(&record.request.code_challenge), code_verifier)
        .map_err(|_| CodeError::InvalidGrant("code_verifier"))?;
    // Consume: Issued → Redeemed, atomically; the marker lives as long as the code would
    // have, so a replay inside that window is detected (A1).
    let mut redeemed = record.clone();
    redeemed.state = CodeState::Redeemed {
        grant_id: record.grant_id.clone(),
    };
    let marker_until = UnixTime(record.expires_at + 600);
    match store
        .compare_and_swap(
            Namespace::Code,
            &key,
            &bytes,
            Some((&redeemed.to_bytes()?, marker_until)),
            now,
        )
        .map_err(|_| CodeError::Unavailable)?
    {
        Swapped::Done => Ok(CodeGrant { record }),
        Swapped::Conflict => Err(CodeError::Reused {
            grant_id: record.grant_id,
        }),
    }
}
