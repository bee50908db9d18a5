//! Client authentication at the token, PAR, introspection, revocation and backchannel
//! endpoints: `private_key_jwt` (RFC 7523 §3, §2.2), `tls_client_auth` and
//! `self_signed_tls_client_auth` (RFC 8705 §2), and `none` for public clients.
//!
//! - Exactly one method per request (RFC 6749 §2.3; C8). heartgate supports no client
//!   secrets, so `client_secret` or an `Authorization: Basic` header is refused: alone as
//!   `invalid_client` (C10, C18), next to another method as `invalid_request`.
//!   NOTE: a TLS client certificate next to an assertion is *not* a second method — FAPI
//!   2.0 clients authenticate with `private_key_jwt` and bind tokens with mTLS (RFC 8705
//!   §3 is independent of the auth method). Covered by
//!   `assertion_with_binding_certificate_is_one_method`.
//! - An unknown client, a wrong key, a bad assertion: all [`ClientAuthError::InvalidClient`]
//!   with the same body (C12); the reason is kept for the audit log only.
//! - The assertion `jti` is recorded (insert-if-absent, until `exp` + leeway) only after
//!   every other check passed, so a rejected assertion leaves no state (C1, THREATS §2).

use std::sync::Arc;

use super::metadata::{AuthMethod, ValidatedClient};
use crate::audit::{AuditEvent, AuditSink, EventKind, Outcome};
use crate::clock::UnixTime;
use crate::error::ToWire;
use crate::jose::{
    parse_compact, validate_claims, AudienceRule, JwkSet, TypRule, Validation,
    ACCESS_TOKEN_MAX_LEN, DEFAULT_LEEWAY,
};
use crate::mtls::{match_self_signed_jwks_facts, match_tls_client_auth, CertificateFacts, X5tS256};
use crate::profile::AssertionAudience;
use crate::store::{Inserted, Namespace, Store};

/// RFC 7523 §2.2 `client_assertion_type`.
pub const JWT_BEARER_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Longest `jti` accepted in an assertion.
pub const MAX_JTI_LEN: usize = 256;

/// What a request carried to authenticate its client (parsed by the server).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientCredentials<'a> {
    /// The `client_id` form parameter.
    pub client_id: Option<&'a str>,
    /// `client_assertion_type`.
    pub client_assertion_type: Option<&'a str>,
    /// `client_assertion`.
    pub client_assertion: Option<&'a str>,
    /// `client_secret` (never accepted).
    pub client_secret: Option<&'a str>,
    /// Whether an `Authorization: Basic` header was sent (never accepted).
    pub basic_authorization: bool,
    /// The DER leaf certificate of the TLS connection (or of a trusted proxy's
    /// `Client-Cert` header).
    pub certificate: Option<&'a [u8]>,
    /// Whether the server validated `certificate`'s chain to one of its configured client
    /// CAs. `tls_client_auth` (RFC 8705 §2.1, PKI) requires it; self-signed
    /// certificates (§2.2) and token binding do not.
    pub certificate_chain_verified: bool,
    /// The [`CertificateFacts`] of `certificate`, if the caller keeps them (a server, per
    /// TLS connection). Used only when they are the facts of `certificate` (checked by its
    /// SHA-256); otherwise they are read from `certificate` here.
    pub certificate_facts: Option<&'a CertificateFacts>,
}

/// Where the request arrived, for the assertion `aud` rule.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The issuer identifier.
    pub issuer: String,
    /// Token endpoint URL.
    pub token: String,
    /// PAR endpoint URL.
    pub par: String,
}

/// Registered clients and their current keys.
pub trait ClientDirectory {
    /// The client with this id, if registered and enabled (C19: re-checked every call).
    fn client(&self, client_id: &str) -> Option<Arc<ValidatedClient>>;
    /// The client's keys: inline `jwks`, or the cached `jwks_uri` fetch.
    fn keys(&self, client: &ValidatedClient) -> Option<Arc<JwkSet>>;
}

/// Why client authentication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientAuthError {
    /// The request is malformed (two methods, wrong assertion type) → 400 `invalid_request`.
    #[error("invalid_request ({0})")]
    InvalidRequest(&'static str),
    /// Authentication failed → 401 `invalid_client`; the reason is for the audit log.
    #[error("invalid_client ({0})")]
    InvalidClient(&'static str),
    /// The jti store is unavailable → 503, fail closed.
    #[error("store unavailable")]
    Unavailable,
}

impl crate::error::ToWire for ClientAuthError {
    fn to_wire(&self) -> crate::error::WireError {
        use crate::error::WireError;
        match self {
            ClientAuthError::InvalidRequest(d) => WireError::new(400, "invalid_request", d),
            // C-cases: an unknown client and a wrong credential read the same.
            ClientAuthError::InvalidClient(_) => {
                WireError::new(401, "invalid_client", "client authentication failed")
            }
            ClientAuthError::Unavailable => WireError::UNAVAILABLE,
        }
    }
}

/// Longest claimed client id copied into an audit event.
const MAX_CLIENT_ID_LEN: usize = 256;

/// A client that authenticated. Only [`authenticate`] builds one.
#[derive(Debug, Clone)]
pub struct AuthenticatedClient {
    client: Arc<ValidatedClient>,
    method: AuthMethod,
    certificate: Option<X5tS256>,
}

impl AuthenticatedClient {
    /// The client's validated metadata.
    pub fn client(&self) -> &Arc<ValidatedClient> {
        &self.client
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client.metadata().client_id
    }

    /// How it authenticated.
    pub fn method(&self) -> AuthMethod {
        self.method
    }

    /// Thumbprint of the TLS client certificate presented, if any (for token binding).
    pub fn certificate(&self) -> Option<X5tS256> {
        self.certificate
    }
}

fn invalid(reason: &'static str) -> ClientAuthError {
    ClientAuthError::InvalidClient(reason)
}

/// Authenticate the client of a request at `now`.
pub fn authenticate(
    creds: &ClientCredentials<'_>,
    directory: &dyn ClientDirectory,
    endpoints: &Endpoints,
    store: &dyn Store,
    now: UnixTime,
    audit: &dyn AuditSink,
) -> Result<AuthenticatedClient, ClientAuthError> {
    let r = authenticate_inner(creds, directory, endpoints, store, now);
    // DESIGN.md §Audit: failures are events of their own; a success is recorded by the
    // event of what the client then did (issuance, introspection, revocation, ...), which
    // names the client and its certificate, so a resource server's every call is one line.
    if let Err(err) = &r {
        let reason = match err {
            ClientAuthError::InvalidClient(why) => *why,
            e => e.to_wire().code,
        };
        let mut e = AuditEvent::new(
            now,
            EventKind::ClientAuthentication,
            Outcome::Failure,
            reason,
        );
        // The claimed id, unverified: client ids are not personal data.
        if let Some(id) = creds.client_id.filter(|id| id.len() <= MAX_CLIENT_ID_LEN) {
            e = e.client(id);
        }
        audit.record(e);
    }
    r
}

fn authenticate_inner(
    creds: &ClientCredentials<'_>,
    directory: &dyn ClientDirectory,
    endpoints: &Endpoints,
    store: &dyn Store,
    now: UnixTime,
) -> Result<AuthenticatedClient, ClientAuthError> {
    let secret = creds.client_secret.is_some() || creds.basic_authorization;
    let assertion = creds.client_assertion.is_some() || creds.client_assertion_type.is_some();
    if secret && assertion {
        return Err(ClientAuthError::InvalidRequest(
            "more than one client authentication method",
        ));
    }
    if secret {
        return Err(invalid("client secrets are not supported"));
    }
    let read;
    let facts = match (creds.certificate, creds.certificate_facts) {
        (Some(der), Some(f)) if f.describe(der) => Some(f),
        (Some(der), _) => {
            read = CertificateFacts::of(der).map_err(|_| invalid("certificate"))?;
            Some(&read)
        }
        (None, _) => None,
    };
    let certificate = facts.map(CertificateFacts::thumbprint);
    if assertion {
        return private_key_jwt(creds, directory, endpoints, store, now, certificate);
    }
    let client_id = creds.client_id.ok_or(invalid("no client_id"))?;
    let client = directory
        .client(client_id)
        .ok_or(invalid("unknown client"))?;
    let method = client.metadata().token_endpoint_auth_method;
    match method {
        AuthMethod::PrivateKeyJwt => return Err(invalid("assertion required")),
        AuthMethod::None => {}
        AuthMethod::TlsClientAuth => {
            let der = creds.certificate.ok_or(invalid("no client certificate"))?;
            if !creds.certificate_chain_verified {
                return Err(invalid("certificate not issued by a trusted client CA"));
            }
            let rule = client
                .tls_rule()
                .ok_or(invalid("no tls_client_auth rule"))?;
            match_tls_client_auth(der, rule).map_err(|_| invalid("certificate does not match"))?;
        }
        AuthMethod::SelfSignedTlsClientAuth => {
            let facts = facts.ok_or(invalid("no client certificate"))?;
            let keys = directory.keys(&client).ok_or(invalid("no keys"))?;
            match_self_signed_jwks_facts(facts, &keys)
                .map_err(|_| invalid("certificate not registered"))?;
        }
    }
    Ok(AuthenticatedClient {
        client,
        method,
        certificate,
    })
}

fn private_key_jwt(
    creds: &ClientCredentials<'_>,
    directory: &dyn ClientDirectory,
    endpoints: &Endpoints,
    store: &dyn Store,
    now: UnixTime,
    certificate: Option<X5tS256>,
) -> Result<AuthenticatedClient, ClientAuthError> {
    if creds.client_assertion_type != Some(JWT_BEARER_ASSERTION_TYPE) {
        return Err(ClientAuthError::InvalidRequest("client_assertion_type"));
    }
    let token = creds
        .client_assertion
        .ok_or(ClientAuthError::InvalidRequest("client_assertion missing"))?;
    let jws =
        parse_compact(token, ACCESS_TOKEN_MAX_LEN).map_err(|_| invalid("malformed assertion"))?;
    // Which client? `sub` (RFC 7523 §3 item B), checked again after verification.
    let peek = jws
        .unverified_claims()
        .map_err(|_| invalid("malformed assertion"))?;
    let named = peek
        .string("sub")
        .ok()
        .flatten()
        .ok_or(invalid("assertion without sub"))?;
    if creds.client_id.is_some_and(|c| c != named) {
        return Err(invalid("client_id differs from the assertion"));
    }
    let client = directory.client(named).ok_or(invalid("unknown client"))?;
    let md = client.metadata();
    if md.token_endpoint_auth_method != AuthMethod::PrivateKeyJwt {
        return Err(invalid("client is not registered for private_key_jwt"));
    }
    let policy = md.profile.policy();
    // The registered assertion algorithm, if any, narrows the profile's set.
    let algorithms = md.algorithms_for(md.token_endpoint_auth_signing_alg.as_deref());
    let keys = directory.keys(&client).ok_or(invalid("no keys"))?;
    let verified = jws
        .verify(&*keys, algorithms)
        .map_err(|_| invalid("assertion signature"))?;
    let claims = crate::jose::Claims::from_json(verified.payload())
        .map_err(|_| invalid("malformed assertion"))?;
    let audience = match policy.assertion_audience {
        AssertionAudience::IssuerStringOnly => AudienceRule::ExactString(endpoints.issuer.clone()),
        AssertionAudience::IssuerOrEndpoint => AudienceRule::AnyOf(vec![
            endpoints.issuer.clone(),
            endpoints.token.clone(),
            endpoints.par.clone(),
        ]),
    };
    let rule = Validation::new(
        algorithms,
        TypRule::OptionalOneOf(&["JWT", "client-authentication+jwt"]),
        audience,
    )
    .issuer(md.client_id.clone())
    .max_lifetime(policy.max_assertion_lifetime)
    .require(&["jti", "sub"]);
    crate::jose::check_typ(verified.header(), rule.typ).map_err(|_| invalid("assertion typ"))?;
    validate_claims(&claims, &rule, now).map_err(|_| invalid("assertion claims"))?;
    if claims.required_string("sub").ok() != Some(md.client_id.as_str()) {
        return Err(invalid("sub is not the client"));
    }
    let jti = claims.required_string("jti").map_err(|_| invalid("jti"))?;
    if jti.is_empty() || jti.len() > MAX_JTI_LEN {
        return Err(invalid("jti"));
    }
    let exp = claims
        .numeric_date("exp")
        .ok()
        .flatten()
        .ok_or(invalid("exp"))?;
    // Everything checked: now, and only now, consume the jti (C1).
    let mut key = Vec::with_capacity(md.client_id.len() + jti.len() + 9);
    key.extend_from_slice(&(md.client_id.len() as u64).to_be_bytes());
    key.extend_from_slice(md.client_id.as_bytes());
    key.push(0);
    key.extend_from_slice(jti.as_bytes());
    let until = UnixTime(exp.secs() + i64::from(DEFAULT_LEEWAY) + 1);
    match store.insert_new(Namespace::Jti, &key, b"client-assertion", until, now) {
        Ok(Inserted::New) => {}
        Ok(Inserted::AlreadyPresent) => return Err(invalid("assertion replayed")),
        Err(_) => return Err(ClientAuthError::Unavailable),
    }
    Ok(AuthenticatedClient {
        client,
        method: AuthMethod::PrivateKeyJwt,
        certificate,
    })
}
