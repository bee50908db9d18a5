//! Pushed Authorization Requests (RFC 9126) with signed request objects (RFC 9101).
//!
//! [`push`] validates a pushed request exactly as the authorization endpoint would
//! (RFC 9126 §2.1): client authentication happened before (the caller passes the
//! [`AuthenticatedClient`]); `request_uri` in the body is refused (P3); a `request`
//! object is verified with the client's keys and its claims are the only parameters
//! used (RFC 9101 §6.3, FAPI 2.0 MS; P4, P6-P8, P17); unsigned requests are refused
//! where the profile requires signing (P5); PKCE S256 (P9), the redirect URI (P10),
//! `response_type=code` (P11), scopes and response mode are checked. Only then is a
//! record stored under SHA-256 of a fresh `request_uri` (`urn:ietf:params:oauth:
//! request_uri:` + 256 random bits, P18), bound to the client and the issuer (P15, P20),
//! living `expires_in` seconds (default 60, 5–599). A refused push stores nothing (P6),
//! and the record never holds a client credential (P21).

use std::collections::BTreeMap;

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::pkce::CodeChallenge;
use super::redirect_uri::match_registered;
use crate::audit::{AuditEvent, AuditSink, EventKind, Outcome};
use crate::client::{AuthenticatedClient, ClientDirectory, ValidatedClient};
use crate::clock::UnixTime;
use crate::error::ToWire;
use crate::jose::{
    b64, check_typ, parse_compact, validate_claims, AudienceRule, Claims, TypRule, Validation,
    REQUEST_OBJECT_MAX_LEN,
};
use crate::scope::ScopeSet;
use crate::store::{Namespace, Store};

/// Form parameters of a request, after the server refused duplicates (H6) and dropped
/// empty values (H7).
pub type Params = BTreeMap<String, String>;

/// The `request_uri` prefix (RFC 9126 §2.2).
pub const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";
/// Default `expires_in` of a pushed request, seconds.
pub const DEFAULT_PAR_LIFETIME: u32 = 60;
/// Longest `state` accepted (A8: echoed exactly, never truncated).
pub const MAX_STATE_LEN: usize = 4096;
/// Longest `nonce` accepted.
pub const MAX_NONCE_LEN: usize = 512;

/// Why a pushed request was refused, by RFC error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParError {
    /// 400 `invalid_request`.
    #[error("invalid_request ({0})")]
    InvalidRequest(&'static str),
    /// 400 `invalid_request_object`.
    #[error("invalid_request_object ({0})")]
    InvalidRequestObject(&'static str),
    /// 400 `unsupported_response_type`.
    #[error("unsupported_response_type")]
    UnsupportedResponseType,
    /// 400 `invalid_scope`.
    #[error("invalid_scope")]
    InvalidScope,
    /// 400 `unauthorized_client` (grant not registered).
    #[error("unauthorized_client")]
    UnauthorizedClient,
    /// 503: the store failed; nothing was stored.
    #[error("store unavailable")]
    Unavailable,
}

impl crate::error::ToWire for ParError {
    fn to_wire(&self) -> crate::error::WireError {
        use crate::error::WireError;
        match self {
            ParError::InvalidRequest(d) => WireError::new(400, "invalid_request", d),
            ParError::InvalidRequestObject(d) => WireError::new(400, "invalid_request_object", d),
            ParError::UnsupportedResponseType => WireError::bare(400, "unsupported_response_type"),
            ParError::InvalidScope => WireError::bare(400, "invalid_scope"),
            ParError::UnauthorizedClient => WireError::bare(400, "unauthorized_client"),
            ParError::Unavailable => WireError::UNAVAILABLE,
        }
    }
}

/// How the authorization response is delivered (RFC 6749, JARM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseMode {
    /// Query parameters (plain).
    #[serde(rename = "query")]
    Query,
    /// JARM `jwt` (query for `code`).
    #[serde(rename = "jwt")]
    Jwt,
    /// JARM `query.jwt`.
    #[serde(rename = "query.jwt")]
    QueryJwt,
    /// JARM `fragment.jwt`.
    #[serde(rename = "fragment.jwt")]
    FragmentJwt,
    /// JARM `form_post.jwt`.
    #[serde(rename = "form_post.jwt")]
    FormPostJwt,
}

impl ResponseMode {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "query" => ResponseMode::Query,
            "jwt" => ResponseMode::Jwt,
            "query.jwt" => ResponseMode::QueryJwt,
            "fragment.jwt" => ResponseMode::FragmentJwt,
            "form_post.jwt" => ResponseMode::FormPostJwt,
            _ => return None,
        })
    }

    /// Whether the response is a JARM JWT.
    pub fn is_jwt(self) -> bool {
        self != ResponseMode::Query
    }
}

/// A validated authorization request, as stored behind a `request_uri`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    /// The issuer the request was pushed to (P20).
    pub issuer: String,
    /// The client it belongs to (P15).
    pub client_id: String,
    /// The redirect URI, exactly as registered-and-presented.
    pub redirect_uri: String,
    /// Requested scopes, canonical.
    pub scope: String,
    /// `state`, echoed exactly.
    pub state: Option<String>,
    /// `nonce`, for the ID token.
    pub nonce: Option<String>,
    /// PKCE challenge.
    pub code_challenge: CodeChallenge,
    /// Response mode.
    pub response_mode: ResponseMode,
    /// RFC 8707 `resource` / SMART `aud`: the resource servers asked for.
    pub resource: Vec<String>,
    /// SMART EHR-launch handle.
    pub launch: Option<String>,
    /// `prompt`.
    pub prompt: Option<String>,
    /// `max_age`, seconds.
    pub max_age: Option<u32>,
    /// Whether the parameters came from a verified request object.
    pub signed: bool,
    /// When the request_uri expires.
    pub expires_at: i64,
}

impl AuthorizationRequest {
    /// Encode for the store (version byte + CBOR).
    pub fn to_bytes(&self) -> Result<Vec<u8>, ParError> {
        crate::token::record::encode(self).map_err(|_| ParError::Unavailable)
    }

    /// Decode a stored record; anything else is "missing" (S12).
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        crate::token::record::decode(b).ok()
    }
}

/// The PAR success response (RFC 9126 §2.2, HTTP 201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParResponse {
    /// The single-use reference.
    pub request_uri: String,
    /// Seconds until it expires.
    pub expires_in: u32,
}

/// Settings of the PAR endpoint.
#[derive(Debug, Clone)]
pub struct ParConfig {
    /// The issuer identifier.
    pub issuer: String,
    /// `expires_in` of request URIs (clamped to 5..=599, FAPI 2.0 < 600).
    pub lifetime: u32,
}

/// The store key of a request_uri: SHA-256 of the full string.
pub fn request_uri_key(request_uri: &str) -> [u8; 32] {
    crate::token::TokenHash::of(request_uri).0
}

fn param<'p>(p: &'p Params, name: &str) -> Option<&'p str> {
    p.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

/// The parameters of a verified request object (RFC 9101 §4): claims, as strings.
fn request_object_params(
    token: &str,
    client: &ValidatedClient,
    directory: &dyn ClientDirectory,
    issuer: &str,
    now: UnixTime,
) -> Result<Params, ParError> {
    use ParError::InvalidRequestObject as Bad;
    let md = client.metadata();
    let policy = md.profile.policy();
    let algorithms = md.algorithms_for(md.request_object_signing_alg.as_deref());
    let jws = parse_compact(token, REQUEST_OBJECT_MAX_LEN).map_err(|_| Bad("malformed"))?;
    let typ = TypRule::OptionalOneOf(&["oauth-authz-req+jwt", "JWT"]);
    check_typ(jws.header(), typ).map_err(|_| Bad("typ"))?;
    let keys = directory.keys(client).ok_or(Bad("no client keys"))?;
    let verified = jws
        .verify(&*keys, algorithms)
        .map_err(|_| Bad("signature"))?;
    let claims = Claims::from_json(verified.payload()).map_err(|_| Bad("claims"))?;
    let rule = Validation::new(algorithms, typ, AudienceRule::Contains(issuer.to_owned()))
        .issuer(md.client_id.clone())
        .require(&["nbf"]);
    validate_claims(&claims, &rule, now).map_err(|_| Bad("claims"))?;
    // FAPI 2.0 MS §5.3.1 / OIDF: nbf no older than 60 min, exp at most 60 min after nbf.
    let nbf = claims
        .numeric_date("nbf")
        .ok()
        .flatten()
        .ok_or(Bad("nbf"))?;
    let exp = claims
        .numeric_date("exp")
        .ok()
        .flatten()
        .ok_or(Bad("exp"))?;
    let max = i64::from(policy.max_request_object_lifetime);
    if nbf.secs() < now.secs() - max || exp.secs() - nbf.secs() > max {
        return Err(Bad("lifetime"));
    }
    if claims.get("request").is_some() || claims.get("request_uri").is_some() {
        return Err(Bad("nested request"));
    }
    let mut out = Params::new();
    for (k, v) in claims.as_map() {
        match (k.as_str(), v) {
            ("iss" | "aud" | "exp" | "nbf" | "iat" | "jti", _) => {}
            ("max_age", serde_json::Value::Number(n)) => {
                out.insert(k.clone(), n.to_string());
            }
            ("resource", serde_json::Value::Array(items)) => {
                let mut all = Vec::new();
                for i in items {
                    all.push(i.as_str().ok_or(Bad("resource"))?.to_owned());
                }
                out.insert(k.clone(), all.join(" "));
            }
            (_, serde_json::Value::String(s)) => {
                out.insert(k.clone(), s.clone());
            }
            // Structured members (claims, authorization_details) are not supported yet;
            // refusing is safer than ignoring what the client asked for.
            _ => return Err(Bad("unsupported member")),
        }
    }
    if out.get("client_id").is_some_and(|c| c != &md.client_id) {
        return Err(Bad("client_id"));
    }
    Ok(out)
}

/// Validate and store a pushed authorization request.
pub fn push(
    client: &AuthenticatedClient,
    body: &Params,
    directory: &dyn ClientDirectory,
    config: &ParConfig,
    store: &dyn Store,
    now: UnixTime,
    audit: &dyn AuditSink,
) -> Result<ParResponse, ParError> {
    let r = if body.contains_key("request_uri") {
        Err(ParError::InvalidRequest(
            "request_uri is not allowed at the PAR endpoint",
        ))
    } else {
        validate_and_store(client.client(), body, directory, config, store, now)
    };
    let w;
    let (outcome, reason) = match &r {
        Ok(_) => (Outcome::Success, "pushed"),
        Err(e) => {
            w = e.to_wire();
            (Outcome::Failure, w.description.unwrap_or(w.code))
        }
    };
    let mut e = AuditEvent::new(now, EventKind::PushedAuthorizationRequest, outcome, reason)
        .client(client.client_id());
    if let Some(t) = client.certificate() {
        e = e.cert(crate::mtls::Confirmation::from_thumbprint(t).x5t_s256);
    }
    crate::audit::settle(audit, e, r, || ParError::Unavailable)
}

/// Why a front-channel authorization request (no PAR) was refused.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum FrontChannelError {
    /// The client or its redirect URI cannot be trusted (missing or unknown `client_id`,
    /// a `redirect_uri` that is not registered), or the client must use PAR: the server
    /// shows an error page and never redirects (RFC 6749 §4.1.2.1; A9, A12; RFC 9126 §5).
    ErrorPage(ParError),
    /// Everything else goes back to the client's verified redirect URI, with `state` and
    /// `iss`, in the requested response mode (JARM included).
    Redirect(crate::authorize::code::AuthorizationResponse),
    /// The store failed: 503, nothing is stored.
    Unavailable,
}

/// An authorization request that arrived at the authorization endpoint directly
/// (RFC 6749 §4.1.1; SMART apps without PAR): validated exactly as a pushed one, and
/// stored the same way behind a fresh `request_uri`, the pending interaction that the
/// login and consent pages look up ([`lookup`]) and complete
/// ([`crate::authorize::code::complete`]). A `request_uri` parameter is the pushed-request
/// path, not this one ([`lookup`]).
pub fn front_channel(
    query: &Params,
    directory: &dyn ClientDirectory,
    config: &ParConfig,
    store: &dyn Store,
    now: UnixTime,
    audit: &dyn AuditSink,
) -> Result<ParResponse, FrontChannelError> {
    let r = front_channel_inner(query, directory, config, store, now);
    let (outcome, reason) = match &r {
        Ok(_) => (Outcome::Success, "front_channel"),
        Err(FrontChannelError::ErrorPage(e)) => (Outcome::Failure, e.to_wire().code),
        Err(FrontChannelError::Redirect(_)) => (Outcome::Failure, "error_redirected"),
        Err(FrontChannelError::Unavailable) => (Outcome::Failure, "temporarily_unavailable"),
    };
    let mut e = AuditEvent::new(now, EventKind::PushedAuthorizationRequest, outcome, reason);
    if let Some(id) = param(query, "client_id").filter(|id| id.len() <= 256) {
        e = e.client(id);
    }
    crate::audit::settle(audit, e, r, || FrontChannelError::Unavailable)
}

fn front_channel_inner(
    query: &Params,
    directory: &dyn ClientDirectory,
    config: &ParConfig,
    store: &dyn Store,
    now: UnixTime,
) -> Result<ParResponse, FrontChannelError> {
    use FrontChannelError::ErrorPage;
    use ParError::InvalidRequest as Bad;
    if query.contains_key("request_uri") {
        return Err(ErrorPage(Bad("request_uri")));
    }
    let client_id = param(query, "client_id").ok_or(ErrorPage(Bad("client_id missing")))?;
    let client = directory
        .client(client_id)
        .ok_or(ErrorPage(Bad("unknown client")))?;
    let md = client.metadata();
    if md.require_pushed_authorization_requests || md.profile.policy().par_required {
        return Err(ErrorPage(Bad("pushed authorization request required")));
    }
    // A request object may carry the redirect URI; the outer one must then be absent or
    // equal. Only a verified registered URI is ever redirected to.
    let redirect_uri = match param(query, "redirect_uri") {
        Some(r) => {
            match_registered(&md.redirect_uris, r).map_err(|_| ErrorPage(Bad("redirect_uri")))?;
            r.to_owned()
        }
        None => match md.redirect_uris.as_slice() {
            [only] => only.clone(),
            _ => return Err(ErrorPage(Bad("redirect_uri required"))),
        },
    };
    validate_and_store(&client, query, directory, config, store, now).map_err(|e| match e {
        ParError::Unavailable => FrontChannelError::Unavailable,
        e => {
            let mut params = vec![("error".to_owned(), e.to_wire().code.to_owned())];
            if let Some(st) = param(query, "state").filter(|s| s.len() <= MAX_STATE_LEN) {
                params.push(("state".to_owned(), st.to_owned()));
            }
            params.push(("iss".to_owned(), config.issuer.clone()));
            FrontChannelError::Redirect(crate::authorize::code::AuthorizationResponse {
                redirect_uri: redirect_uri.clone(),
                response_mode: match param(query, "response_mode").and_then(ResponseMode::parse) {
                    Some(m) => m,
                    None if md.profile.policy().jarm_required => ResponseMode::Jwt,
                    None => ResponseMode::Query,
                },
                client_id: md.client_id.clone(),
                params,
            })
        }
    })
}

/// Validate an authorization request of `client` (pushed, or at the authorization
/// endpoint) and store it behind a fresh `request_uri`.
fn validate_and_store(
    client: &ValidatedClient,
    body: &Params,
    directory: &dyn ClientDirectory,
    config: &ParConfig,
    store: &dyn Store,
    now: UnixTime,
) -> Result<ParResponse, ParError> {
    use ParError::InvalidRequest as Bad;
    let md = client.metadata();
    let policy = md.profile.policy();
    if body.get("client_id").is_some_and(|c| c != &md.client_id) {
        return Err(Bad("client_id"));
    }
    let params = match param(body, "request") {
        Some(ro) => request_object_params(ro, client, directory, &config.issuer, now)?,
        None if policy.signed_request_object_required
            || md.request_object_signing_alg.is_some() =>
        {
            return Err(Bad("a signed request object is required"))
        }
        None => body.clone(),
    };
    if !md
        .grant_types
        .contains(&crate::client::GrantType::AuthorizationCode)
    {
        return Err(ParError::UnauthorizedClient);
    }
    match param(&params, "response_type") {
        Some("code") => {}
        None => return Err(Bad("response_type missing")),
        Some(_) => return Err(ParError::UnsupportedResponseType),
    }
    // Stored exactly as presented (it matched byte for byte, or by the RFC 8252 §7.3
    // loopback-port rule): the token request must repeat this string (A4).
    let redirect_uri = match param(&params, "redirect_uri") {
        Some(r) => {
            match_registered(&md.redirect_uris, r).map_err(|_| Bad("redirect_uri"))?;
            r.to_owned()
        }
        None if policy.par_required => return Err(Bad("redirect_uri required")),
        None => match md.redirect_uris.as_slice() {
            [only] => only.clone(),
            _ => return Err(Bad("redirect_uri required")),
        },
    };
    let code_challenge = CodeChallenge::parse(
        param(&params, "code_challenge"),
        param(&params, "code_challenge_method"),
    )
    .map_err(|_| Bad("PKCE S256 code_challenge required"))?;
    let scope = ScopeSet::parse(param(&params, "scope").unwrap_or(""))
        .map_err(|_| ParError::InvalidScope)?;
    if let Some(allowed) = md.scope.as_deref() {
        let allowed = ScopeSet::parse(allowed).map_err(|_| ParError::InvalidScope)?;
        if !allowed.covers(&scope) {
            return Err(ParError::InvalidScope);
        }
    }
    let response_mode = match param(&params, "response_mode") {
        None if policy.jarm_required => ResponseMode::Jwt,
        None => ResponseMode::Query,
        Some(m) => ResponseMode::parse(m).ok_or(Bad("response_mode"))?,
    };
    if policy.jarm_required && !response_mode.is_jwt() {
        return Err(Bad("JARM response mode required"));
    }
    let state = param(&params, "state").map(str::to_owned);
    if state.as_ref().is_some_and(|s| s.len() > MAX_STATE_LEN) {
        return Err(Bad("state too long"));
    }
    let nonce = param(&params, "nonce").map(str::to_owned);
    if nonce.as_ref().is_some_and(|s| s.len() > MAX_NONCE_LEN) {
        return Err(Bad("nonce too long"));
    }
    // OIDC Core §3.1.2.1: `none` with any other value is an error.
    let prompt = param(&params, "prompt");
    if prompt.is_some_and(|p| p.split(' ').any(|x| x == "none") && p != "none") {
        return Err(Bad("prompt"));
    }
    let max_age = match param(&params, "max_age") {
        None => None,
        Some(m) => Some(m.parse::<u32>().map_err(|_| Bad("max_age"))?),
    };
    let mut resource: Vec<String> = Vec::new();
    for name in ["resource", "aud"] {
        if let Some(v) = param(&params, name) {
            for r in v.split(' ') {
                if !crate::client::https_url(r) {
                    return Err(Bad("resource"));
                }
                resource.push(r.to_owned());
            }
        }
    }

    let lifetime = config.lifetime.clamp(5, 599);
    let rng = SystemRandom::new();
    let mut random = [0u8; 32];
    rng.fill(&mut random).map_err(|_| ParError::Unavailable)?;
    let request_uri = format!("{REQUEST_URI_PREFIX}{}", b64::encode(random));
    let expires_at = now.secs() + i64::from(lifetime);
    let record = AuthorizationRequest {
        issuer: config.issuer.clone(),
        client_id: md.client_id.clone(),
        redirect_uri,
        scope: scope.to_string(),
        state,
        nonce,
        code_challenge,
        response_mode,
        resource,
        launch: param(&params, "launch").map(str::to_owned),
        prompt: prompt.map(str::to_owned),
        max_age,
        signed: param(body, "request").is_some(),
        expires_at,
    };
    store
        .put(
            Namespace::ParRequest,
            &request_uri_key(&request_uri),
            &record.to_bytes()?,
            UnixTime(expires_at),
        )
        .map_err(|_| ParError::Unavailable)?;
    Ok(ParResponse {
        request_uri,
        expires_in: lifetime,
    })
}

/// Why a `request_uri` cannot be used at the authorization endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestUriError {
    /// Unknown, expired, used, of another client or issuer (P12, P14, P15, P18, P20)
    /// → `invalid_request_uri`.
    #[error("invalid_request_uri")]
    Invalid,
    /// The store failed → 503.
    #[error("store unavailable")]
    Unavailable,
}

fn fetch(
    issuer: &str,
    client_id: &str,
    request_uri: &str,
    store: &dyn Store,
    now: UnixTime,
) -> Result<(AuthorizationRequest, Vec<u8>), RequestUriError> {
    if !request_uri.starts_with(REQUEST_URI_PREFIX) || request_uri.len() > 256 {
        return Err(RequestUriError::Invalid);
    }
    let bytes = store
        .get(Namespace::ParRequest, &request_uri_key(request_uri), now)
        .map_err(|_| RequestUriError::Unavailable)?
        .ok_or(RequestUriError::Invalid)?;
    let r = AuthorizationRequest::from_bytes(&bytes).ok_or(RequestUriError::Invalid)?;
    if r.client_id != client_id || r.issuer != issuer || now.secs() >= r.expires_at {
        return Err(RequestUriError::Invalid);
    }
    Ok((r, bytes))
}

/// Look a pushed request up at the authorization endpoint, without consuming it: the
/// user may reload the page before finishing (P13; FAPI 2.0 §5.3.2.2 note 3).
pub fn lookup(
    issuer: &str,
    client_id: &str,
    request_uri: &str,
    store: &dyn Store,
    now: UnixTime,
) -> Result<AuthorizationRequest, RequestUriError> {
    fetch(issuer, client_id, request_uri, store, now).map(|(r, _)| r)
}

/// Consume a pushed request when the user step completes (P12): of concurrent callers
/// exactly one gets it. Another client's attempt does not consume it (P15).
pub fn consume(
    issuer: &str,
    client_id: &str,
    request_uri: &str,
    store: &dyn Store,
    now: UnixTime,
) -> Result<AuthorizationRequest, RequestUriError> {
    let (r, bytes) = fetch(issuer, client_id, request_uri, store, now)?;
    let key = request_uri_key(request_uri);
    match store.compare_and_swap(Namespace::ParRequest, &key, &bytes, None, now) {
        Ok(crate::store::Swapped::Done) => Ok(r),
        Ok(crate::store::Swapped::Conflict) => Err(RequestUriError::Invalid),
        Err(_) => Err(RequestUriError::Unavailable),
    }
}
