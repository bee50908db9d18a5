//! The client side of the FAPI 2.0 code flow (FAPI 2.0 Security Profile and Message
//! Signing): PKCE S256 (RFC 7636 §4), a signed request object pushed with PAR (RFC 9101
//! §4, RFC 9126 §2.1), a `private_key_jwt` assertion per request (RFC 7523 §3, FAPI 2.0
//! §5.3.2.1 item 7: `aud` is the issuer as a string), the authorization URL (RFC 9126 §4),
//! the JARM response verified against the AS's JWKS (JARM §4.4: signature, `iss`, `aud`,
//! `exp`; then `state`), the RFC 9207 `iss` check, and the token requests.
//!
//! Built to match exactly what heartgate's server checks: `core/src/client/auth.rs`
//! (assertion: `iss` = `sub` = client_id, `aud`, `exp` − `iat` ≤ 60 s, fresh `jti`) and
//! `core/src/authorize/par.rs` (request object: `iss`, `aud`, `nbf`, `exp` ≤ 60 min after
//! `nbf`, `typ` `oauth-authz-req+jwt`).
//!
//! What it never does: send anything (the app does the HTTP), accept an unsigned
//! authorization response where JARM was asked for, or compare issuers loosely (J26).

use std::sync::Arc;

use heartgate_core::authorize::pkce::{check_verifier, CodeChallenge};
use heartgate_core::clock::UnixTime;
use heartgate_core::jose::{
    verify_jwt, AlgorithmSet, AudienceRule, JwkSet, JwkSetOptions, TypRule, Validation,
};
use serde_json::{json, Map, Value};

use crate::error::{HeartgateError, Result};
use crate::signer::{sign_jwt, Signer};
use crate::{error_from_body, json_object, now, random_b64};

/// RFC 7523 §2.2 `client_assertion_type`.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Lifetime of a client assertion, seconds (heartgate's FAPI profiles accept ≤ 60).
const ASSERTION_LIFETIME: i64 = 60;
/// Lifetime of a request object, seconds (FAPI 2.0 MS: at most 60 min after `nbf`).
const REQUEST_OBJECT_LIFETIME: i64 = 300;
/// Longest JARM lifetime accepted, seconds (JARM §2.1: short-lived, ≤ 10 min).
const MAX_JARM_LIFETIME: u32 = 600;
/// Longest JWKS or token-response body parsed.
const MAX_BODY_LEN: usize = 256 * 1024;

/// A PKCE pair (RFC 7636 §4.1, §4.2): keep `verifier` in the app until the token request;
/// `challenge` goes into the request object.
#[derive(uniffi::Record)]
pub struct PkcePair {
    /// 43 characters of base64url (256 random bits).
    pub verifier: String,
    /// base64url(SHA-256(verifier)).
    pub challenge: String,
    /// Always `S256` (FAPI 2.0 §5.3.2.2 item 5; `plain` is never used).
    pub method: String,
}

/// A fresh PKCE S256 pair.
#[uniffi::export]
pub fn pkce_pair() -> Result<PkcePair> {
    let verifier = random_b64(32)?;
    check_verifier(&verifier).map_err(|_| HeartgateError::internal("pkce"))?;
    let challenge = CodeChallenge::for_verifier(&verifier).as_str().to_owned();
    Ok(PkcePair {
        verifier,
        challenge,
        method: "S256".to_owned(),
    })
}

/// Where the client talks to and who it is.
#[derive(uniffi::Record, Clone)]
pub struct ClientConfig {
    /// The issuer identifier (exactly as in the AS metadata, RFC 8414 §2).
    pub issuer: String,
    /// The client id.
    pub client_id: String,
    /// The registered redirect URI.
    pub redirect_uri: String,
    /// The authorization endpoint.
    pub authorization_endpoint: String,
    /// The PAR endpoint (its mTLS alias when the client uses a certificate).
    pub par_endpoint: String,
    /// The token endpoint (its mTLS alias when the client uses a certificate).
    pub token_endpoint: String,
}

/// One form field.
#[derive(uniffi::Record, Clone)]
pub struct FormField {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// An `application/x-www-form-urlencoded` POST for the app to send.
#[derive(uniffi::Record)]
pub struct FormPost {
    /// Where to POST.
    pub url: String,
    /// The fields, in order (for OkHttp's `FormBody.Builder`).
    pub fields: Vec<FormField>,
    /// The same fields, encoded (for URLSession's `httpBody`).
    pub body: String,
}

/// The PAR response (RFC 9126 §2.2).
#[derive(uniffi::Record, Debug)]
pub struct ParResponse {
    /// The `request_uri` to put in the authorization URL.
    pub request_uri: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// What the app asks for in one authorization request.
#[derive(uniffi::Record)]
pub struct AuthorizationParams {
    /// Space-separated scopes.
    pub scope: String,
    /// A fresh, unguessable `state` the app keeps to check the response.
    pub state: String,
    /// The PKCE challenge ([`pkce_pair`]).
    pub code_challenge: String,
    /// An OpenID Connect `nonce`, if the app asks for an ID token.
    pub nonce: Option<String>,
    /// RFC 8707 resource indicators (https URLs), if any.
    pub resource: Vec<String>,
}

/// A FAPI 2.0 client: the app's side of PAR → authorization → JARM → token.
#[derive(uniffi::Object)]
pub struct FapiClient {
    config: ClientConfig,
    signer: Arc<dyn Signer>,
}

fn https_url(s: &str, what: &'static str) -> Result<url::Url> {
    match url::Url::parse(s) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() && u.fragment().is_none() => Ok(u),
        _ => Err(HeartgateError::argument(what)),
    }
}

fn form_post(url: &str, fields: Vec<(&str, String)>) -> FormPost {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    FormPost {
        url: url.to_owned(),
        fields: fields
            .into_iter()
            .map(|(name, value)| FormField {
                name: name.to_owned(),
                value,
            })
            .collect(),
        body,
    }
}

fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<String>> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(HeartgateError::verification("malformed_response")),
    }
}

#[uniffi::export]
impl FapiClient {
    /// A client for `config`, signing with `signer` (its key must be registered with the
    /// AS, and be PS256, ES256 or EdDSA: FAPI 2.0 §5.4.1).
    #[uniffi::constructor]
    pub fn new(config: ClientConfig, signer: Arc<dyn Signer>) -> Result<Arc<Self>> {
        https_url(&config.issuer, "issuer")?;
        https_url(&config.authorization_endpoint, "authorization_endpoint")?;
        https_url(&config.par_endpoint, "par_endpoint")?;
        https_url(&config.token_endpoint, "token_endpoint")?;
        if config.client_id.is_empty() {
            return Err(HeartgateError::argument("client_id"));
        }
        if url::Url::parse(&config.redirect_uri).is_err() {
            return Err(HeartgateError::argument("redirect_uri"));
        }
        Ok(Arc::new(FapiClient { config, signer }))
    }

    /// A `private_key_jwt` client assertion (RFC 7523 §3): `iss` = `sub` = client_id,
    /// `aud` = the issuer as a string, 60 s lifetime, a fresh random `jti` (THREATS C1:
    /// the server accepts each `jti` once, so never reuse an assertion).
    pub fn client_assertion(&self) -> Result<String> {
        self.client_assertion_at(now()?)
    }

    /// The signed request object (RFC 9101 §4; `typ` `oauth-authz-req+jwt`, §10.8) for
    /// `params`: `response_type=code`, `response_mode=jwt` (JARM), PKCE S256.
    pub fn request_object(&self, params: AuthorizationParams) -> Result<String> {
        self.request_object_at(&params, now()?)
    }

    /// The PAR request (RFC 9126 §2.1): `client_id`, the signed `request`, and a fresh
    /// client assertion. Send it over the client's mTLS connection when tokens are bound.
    pub fn par_request(&self, params: AuthorizationParams) -> Result<FormPost> {
        let t = now()?;
        let request = self.request_object_at(&params, t)?;
        Ok(form_post(
            &self.config.par_endpoint,
            vec![
                ("client_id", self.config.client_id.clone()),
                ("request", request),
                ("client_assertion_type", JWT_BEARER.to_owned()),
                ("client_assertion", self.client_assertion_at(t)?),
            ],
        ))
    }

    /// Check the PAR response: `201` with `request_uri` and `expires_in` (RFC 9126 §2.2),
    /// or the server's OAuth error (§2.3) as [`HeartgateError::ServerError`].
    pub fn parse_par_response(&self, status: u16, body: String) -> Result<ParResponse> {
        if status != 201 {
            return Err(error_from_body(status, &body));
        }
        let m = json_object(&body)?;
        let request_uri = match m.get("request_uri") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(HeartgateError::verification("request_uri")),
        };
        let expires_in = m
            .get("expires_in")
            .and_then(Value::as_u64)
            .filter(|e| *e > 0)
            .ok_or(HeartgateError::verification("expires_in"))?;
        Ok(ParResponse {
            request_uri,
            expires_in,
        })
    }

    /// The URL to open in the browser: the authorization endpoint with `client_id` and
    /// `request_uri` only (RFC 9126 §4; THREATS P16).
    pub fn authorization_url(&self, request_uri: String) -> Result<String> {
        let mut u = https_url(
            &self.config.authorization_endpoint,
            "authorization_endpoint",
        )?;
        u.query_pairs_mut()
            .append_pair("client_id", &self.config.client_id)
            .append_pair("request_uri", &request_uri);
        Ok(u.into())
    }

    /// Verify the authorization response the browser brought back to the redirect URI and
    /// return the code. The `response` JWT (JARM §4.4) must verify with a key of the AS's
    /// `as_jwks` (JSON) under FAPI 2.0's algorithms, with `iss` = the issuer, `aud`
    /// containing the client id, a short `exp`; then `state` must equal `expected_state`.
    /// An `error` inside a verified response is [`HeartgateError::ServerError`]. An
    /// unsigned response is refused (THREATS A13, A14).
    pub fn verify_authorization_response(
        &self,
        redirect_url: String,
        expected_state: String,
        as_jwks: String,
    ) -> Result<String> {
        self.verify_authorization_response_at(&redirect_url, &expected_state, &as_jwks, now()?)
    }

    /// For a client that did not ask for JARM: check a plain authorization response
    /// (RFC 6749 §4.1.2) with the RFC 9207 §2.4 `iss` check (present and equal to the
    /// issuer, against mix-up) and the `state` check, and return the code.
    pub fn verify_plain_authorization_response(
        &self,
        redirect_url: String,
        expected_state: String,
    ) -> Result<String> {
        let params = self.response_params(&redirect_url)?;
        if params.contains_key("response") {
            return Err(HeartgateError::verification("jarm_response"));
        }
        // RFC 9207 §2.4: a response without iss, or with another issuer's, is refused.
        match params.get("iss") {
            Some(Value::String(i)) if *i == self.config.issuer => {}
            _ => return Err(HeartgateError::verification("iss")),
        }
        self.code_from(&params, &expected_state)
    }

    /// The token request for an authorization code (RFC 6749 §4.1.3, RFC 7636 §4.5) with
    /// a fresh client assertion.
    pub fn token_request(&self, code: String, code_verifier: String) -> Result<FormPost> {
        check_verifier(&code_verifier).map_err(|_| HeartgateError::argument("code_verifier"))?;
        Ok(form_post(
            &self.config.token_endpoint,
            vec![
                ("grant_type", "authorization_code".to_owned()),
                ("code", code),
                ("redirect_uri", self.config.redirect_uri.clone()),
                ("code_verifier", code_verifier),
                ("client_id", self.config.client_id.clone()),
                ("client_assertion_type", JWT_BEARER.to_owned()),
                ("client_assertion", self.client_assertion()?),
            ],
        ))
    }

    /// The refresh request (RFC 6749 §6) with a fresh client assertion.
    pub fn refresh_request(&self, refresh_token: String) -> Result<FormPost> {
        if refresh_token.is_empty() {
            return Err(HeartgateError::argument("refresh_token"));
        }
        Ok(form_post(
            &self.config.token_endpoint,
            vec![
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", refresh_token),
                ("client_id", self.config.client_id.clone()),
                ("client_assertion_type", JWT_BEARER.to_owned()),
                ("client_assertion", self.client_assertion()?),
            ],
        ))
    }
}

impl FapiClient {
    pub(crate) fn client_assertion_at(&self, t: UnixTime) -> Result<String> {
        let id = &self.config.client_id;
        let claims = json!({"iss": id, "sub": id, "aud": self.config.issuer,
            "iat": t.secs(), "exp": t.secs() + ASSERTION_LIFETIME, "jti": random_b64(16)?});
        sign_jwt(
            &*self.signer,
            None,
            None,
            claims.as_object().unwrap_or(&Map::new()),
            AlgorithmSet::FAPI2,
        )
    }

    pub(crate) fn request_object_at(&self, p: &AuthorizationParams, t: UnixTime) -> Result<String> {
        if p.state.is_empty() {
            return Err(HeartgateError::argument("state"));
        }
        heartgate_core::authorize::pkce::CodeChallenge::parse(
            Some(&p.code_challenge),
            Some("S256"),
        )
        .map_err(|_| HeartgateError::argument("code_challenge"))?;
        let id = &self.config.client_id;
        let mut claims = json!({"iss": id, "aud": self.config.issuer, "client_id": id,
            "iat": t.secs(), "nbf": t.secs(), "exp": t.secs() + REQUEST_OBJECT_LIFETIME,
            "jti": random_b64(16)?, "response_type": "code", "response_mode": "jwt",
            "redirect_uri": self.config.redirect_uri, "scope": p.scope, "state": p.state,
            "code_challenge": p.code_challenge, "code_challenge_method": "S256"});
        let Some(m) = claims.as_object_mut() else {
            return Err(HeartgateError::internal("claims_encoding"));
        };
        if let Some(n) = &p.nonce {
            m.insert("nonce".into(), n.clone().into());
        }
        if !p.resource.is_empty() {
            for r in &p.resource {
                https_url(r, "resource")?;
            }
            m.insert("resource".into(), p.resource.clone().into());
        }
        sign_jwt(
            &*self.signer,
            None,
            Some("oauth-authz-req+jwt"),
            m,
            AlgorithmSet::FAPI2,
        )
    }

    /// The response parameters (query, or fragment for `fragment.jwt`) of a URL that
    /// must be the registered redirect URI.
    fn response_params(&self, redirect_url: &str) -> Result<Map<String, Value>> {
        let got = url::Url::parse(redirect_url).map_err(|_| HeartgateError::argument("url"))?;
        let want = url::Url::parse(&self.config.redirect_uri)
            .map_err(|_| HeartgateError::argument("redirect_uri"))?;
        if got.scheme() != want.scheme()
            || got.host() != want.host()
            || got.port() != want.port()
            || got.path() != want.path()
        {
            return Err(HeartgateError::verification("redirect_uri"));
        }
        let mut out = Map::new();
        let fragment_pairs = got
            .fragment()
            .map(|f| {
                url::form_urlencoded::parse(f.as_bytes())
                    .into_owned()
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for (k, v) in got.query_pairs().into_owned().chain(fragment_pairs) {
            // A repeated parameter is ambiguous: refuse rather than pick one (RFC 6749 §3.1).
            if out.insert(k, Value::String(v)).is_some() {
                return Err(HeartgateError::verification("repeated_parameter"));
            }
        }
        Ok(out)
    }

    fn code_from(&self, params: &Map<String, Value>, expected_state: &str) -> Result<String> {
        // THREATS `client-test-ensure-authorization-response-with-invalid-state-fails`.
        match string_claim(params, "state")? {
            Some(s) if s == expected_state => {}
            _ => return Err(HeartgateError::verification("state")),
        }
        if let Some(error) = string_claim(params, "error")? {
            return Err(HeartgateError::ServerError {
                error,
                description: string_claim(params, "error_description")?,
                status: 0,
            });
        }
        match string_claim(params, "code")? {
            Some(c) if !c.is_empty() => Ok(c),
            _ => Err(HeartgateError::verification("code")),
        }
    }

    pub(crate) fn verify_authorization_response_at(
        &self,
        redirect_url: &str,
        expected_state: &str,
        as_jwks: &str,
        t: UnixTime,
    ) -> Result<String> {
        if expected_state.is_empty() {
            return Err(HeartgateError::argument("expected_state"));
        }
        let keys = parse_jwks(as_jwks)?;
        let params = self.response_params(redirect_url)?;
        let jwt = match params.get("response") {
            Some(Value::String(r)) => r,
            _ => return Err(HeartgateError::verification("jarm_required")),
        };
        // RFC 9207: an `iss` next to the JWT must be the issuer too.
        if let Some(i) = params.get("iss") {
            if i.as_str() != Some(self.config.issuer.as_str()) {
                return Err(HeartgateError::verification("iss"));
            }
        }
        let rule = Validation::new(
            AlgorithmSet::FAPI2,
            TypRule::OptionalOneOf(&["JWT"]),
            AudienceRule::Contains(self.config.client_id.clone()),
        )
        .issuer(self.config.issuer.clone())
        .max_lifetime(MAX_JARM_LIFETIME);
        let claims =
            verify_jwt(jwt, &keys, &rule, t).map_err(|e| HeartgateError::VerificationFailed {
                reason: jarm_reason(&e).to_owned(),
            })?;
        self.code_from(claims.as_map(), expected_state)
    }
}

/// The AS's JWK Set (RFC 7517 §5), strictly parsed by core (J17, J33, J34).
pub(crate) fn parse_jwks(text: &str) -> Result<JwkSet> {
    if text.len() > MAX_BODY_LEN {
        return Err(HeartgateError::argument("jwks"));
    }
    JwkSet::from_json(text.as_bytes(), &JwkSetOptions::default())
        .map_err(|_| HeartgateError::argument("jwks"))
}

/// The JARM check that failed, as a fixed reason (A13's OIDF modules by name).
pub(crate) fn jarm_reason(e: &heartgate_core::jose::JoseError) -> &'static str {
    use heartgate_core::jose::JoseError as J;
    match e {
        J::AlgNone | J::UnsupportedAlgorithm | J::AlgorithmNotAllowed => "alg",
        J::BadSignature | J::UnknownKey | J::AmbiguousKey | J::AlgorithmKeyMismatch => "signature",
        J::Expired | J::NotYetValid | J::IssuedInFuture | J::LifetimeTooLong => "exp",
        J::IssuerMismatch => "iss",
        J::AudienceMismatch | J::UnexpectedAudience => "aud",
        J::MissingClaim("iss") => "iss",
        J::MissingClaim("aud") => "aud",
        J::MissingClaim("exp") => "exp",
        J::WrongType => "typ",
        _ => "malformed",
    }
}
