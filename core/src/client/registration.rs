//! Dynamic client registration (RFC 7591) and its management protocol (RFC 7592), with
//! no I/O: every call takes the [`Store`] and `now`, and returns values the server turns
//! into HTTP responses (THREATS §2.10, D1-D10).
//!
//! What it does:
//! - [`Registrar::register`] (RFC 7591 §3): refuses a request without the configured
//!   initial access token (401 `invalid_token`, RFC 6750 §3.1; registration is closed when
//!   none is configured, D10); parses the body strictly (at most
//!   [`MAX_REGISTRATION_BODY_LEN`], no duplicate members, bounded depth); verifies a
//!   software statement (RFC 7591 §2.3, D5) whose values then override the request's
//!   (§3.1.1); ignores members it does not know (§2) and the client's own `client_id`
//!   (D7: the server assigns 128 random bits); validates the result against the client's
//!   profile with [`ClientMetadata::validate`] (D1, D3, D4, D6); stores it under
//!   `client_id` in [`Namespace::Client`]; and answers with the RFC 7591 §3.2.1 /
//!   RFC 7592 §3 client information ([`ClientInformation`]).
//! - [`Registrar::read`], [`Registrar::update`], [`Registrar::delete`] (RFC 7592 §2): an
//!   absent, wrong, expired or other client's registration access token, an unknown or
//!   deleted client all give the one error [`RegistrationError::InvalidToken`] (D8: no
//!   existence leak; the precise reason goes to the audit log only). An update replaces
//!   the metadata entirely and re-validates it from scratch (D9), and rotates the
//!   registration access token (RFC 7592 §2.2 allows it): the old token stops working at
//!   the moment the new one starts. A delete removes the one record that makes the client
//!   exist, so the next [`super::authenticate`] fails (C19).
//! - [`StoreClientDirectory`]: the [`ClientDirectory`] over the store, so that client
//!   authentication finds dynamically registered clients, optionally layered under the
//!   operator's static clients.
//!
//! What is stored: one CBOR record per client (version byte, `token::record`) holding the
//! metadata, `client_id_issued_at`, the SHA-256 of the current registration access token
//! (never the token), its optional expiry, and the software statement used, if any. The
//! record is the single source of truth for "may this token manage this client": RFC 7592
//! requests always name the client in the path, so the record is found by `client_id` and
//! the token's hash compared in constant time. Rotation and deletion are then one atomic
//! compare-and-swap on that record; a separate token → client index
//! ([`Namespace::RegistrationToken`]) would be a second copy that can disagree with the
//! first after a crash between two writes, so none is kept.
//!
//! What it never does: issue, store or return a `client_secret` (heartgate has none; D8),
//! store a registration access token in the clear, fetch `jwks_uri`, `logo_uri` or any
//! other URL (D2, D7: that is the server's, SSRF-guarded), let a dynamically registered
//! client obtain `client_credentials` or grant itself [`ClientMetadata::resources`], or
//! read the clock.
//!
//! NOTE: HEART §3.2 forbids dynamic registration for `client_credentials`; heartgate
//! refuses it under every profile, because a self-registered client could otherwise
//! grant itself system-level access to every patient's data with no user involved
//! (such clients are registered by the operator). Covered by
//! `client_credentials_is_refused_under_every_profile` in `core/tests/registration.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::auth::ClientDirectory;
use super::metadata::{ClientMetadata, GrantType, MetadataError, ValidatedClient};
use crate::audit::{AuditEvent, AuditSink, EventKind, Outcome};
use crate::clock::UnixTime;
use crate::error::{ToWire, WireError};
use crate::jose::{
    parse_compact, verify_jwt, Algorithm, AlgorithmSet, AudienceRule, Claims, JoseError, JwkSet,
    TypRule, Validation, MAX_NUMERIC_DATE, REQUEST_OBJECT_MAX_LEN,
};
use crate::profile::Profile;
use crate::store::{Inserted, Namespace, Store, StoreError, Swapped};
use crate::token::record::{decode, encode};
use crate::token::{random_id, random_secret, SecretToken, TokenHash, ID_RANDOM_BYTES};

/// Largest registration or update body accepted, in bytes (checked before parsing).
pub const MAX_REGISTRATION_BODY_LEN: usize = 64 * 1024;
/// Prefix of registration access tokens (followed by 256 random bits, base64url).
pub const REGISTRATION_TOKEN_PREFIX: &str = "hgrat_";
/// Longest `client_id` looked up: longer ones are refused before touching the store.
pub const MAX_CLIENT_ID_LEN: usize = 256;
/// Expiry given to client records: 9999-12-31T23:59:59Z, the latest NumericDate. Clients
/// do not expire (heartgate issues no client secret, so RFC 7591's
/// `client_secret_expires_at` has nothing to apply to); the store needs an absolute
/// expiry per entry, and this one keeps its sweeper away from them.
pub const CLIENT_RECORD_EXPIRY: UnixTime = UnixTime(MAX_NUMERIC_DATE);

/// Every member [`ClientMetadata`] knows. Anything else in a registration is ignored
/// (RFC 7591 §2); the unit test `known_members_are_exactly_the_struct_fields` fails
/// when a field is added to the struct but not here.
const KNOWN_MEMBERS: [&str; 29] = [
    "client_id",
    "client_name",
    "profile",
    "redirect_uris",
    "grant_types",
    "response_types",
    "token_endpoint_auth_method",
    "jwks",
    "jwks_uri",
    "tls_client_auth_subject_dn",
    "tls_client_auth_san_dns",
    "tls_client_auth_san_uri",
    "tls_client_auth_san_ip",
    "tls_client_auth_san_email",
    "token_endpoint_auth_signing_alg",
    "request_object_signing_alg",
    "authorization_signed_response_alg",
    "require_pushed_authorization_requests",
    "tls_client_certificate_bound_access_tokens",
    "access_token_format",
    "scope",
    "backchannel_token_delivery_mode",
    "backchannel_client_notification_endpoint",
    "backchannel_authentication_request_signing_alg",
    "backchannel_user_code_parameter",
    "subject_type",
    "id_token_signed_response_alg",
    "introspection_signed_response_alg",
    "resources",
];

/// Members the server provisions: RFC 7592 §2.2 says an update request MUST NOT carry
/// them, so an update that does is refused (`invalid_client_metadata`).
const SERVER_MEMBERS: [&str; 4] = [
    "registration_access_token",
    "registration_client_uri",
    "client_secret_expires_at",
    "client_id_issued_at",
];

/// JWT claims of a software statement that describe the statement, not the client: they
/// are not copied into the metadata.
const STATEMENT_ONLY_CLAIMS: [&str; 7] = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti"];

/// Why a registration request was refused; [`ToWire`] is the one mapping to the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// 401 `invalid_token` (RFC 6750 §3.1): no or a wrong initial access token
    /// (registration closed included), or a registration access token that is absent,
    /// wrong, expired, another client's, or of a deleted client. Deliberately one value
    /// without detail (D8); the reason is in the audit event.
    #[error("invalid_token")]
    InvalidToken,
    /// 400 `invalid_redirect_uri` or `invalid_client_metadata` (RFC 7591 §3.2.2).
    #[error(transparent)]
    Metadata(MetadataError),
    /// 400 `invalid_software_statement`: malformed, badly signed, expired, or absent
    /// where one is required.
    #[error("invalid_software_statement ({0})")]
    InvalidSoftwareStatement(&'static str),
    /// 400 `unapproved_software_statement`: signed by an issuer this server does not
    /// trust.
    #[error("unapproved_software_statement")]
    UnapprovedSoftwareStatement,
    /// 503 `temporarily_unavailable`: the store (or randomness) failed; nothing was
    /// changed (fail closed).
    #[error("temporarily_unavailable")]
    Unavailable,
}

impl ToWire for RegistrationError {
    /// A 401 also carries `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750 §3).
    fn to_wire(&self) -> WireError {
        match self {
            RegistrationError::InvalidToken => WireError::bare(401, "invalid_token"),
            RegistrationError::Metadata(MetadataError::InvalidRedirectUri(_)) => {
                WireError::bare(400, "invalid_redirect_uri")
            }
            RegistrationError::Metadata(MetadataError::InvalidClientMetadata(d)) => {
                WireError::new(400, "invalid_client_metadata", d)
            }
            RegistrationError::Metadata(_) => WireError::bare(400, "invalid_client_metadata"),
            RegistrationError::InvalidSoftwareStatement(d) => {
                WireError::new(400, "invalid_software_statement", d)
            }
            RegistrationError::UnapprovedSoftwareStatement => {
                WireError::bare(400, "unapproved_software_statement")
            }
            RegistrationError::Unavailable => WireError::UNAVAILABLE,
        }
    }
}

/// An issuer whose software statements this server accepts (RFC 7591 §2.3).
#[derive(Debug, Clone)]
pub struct TrustedStatementIssuer {
    /// The statement's `iss`, compared byte for byte.
    pub issuer: String,
    /// The issuer's public keys.
    pub keys: JwkSet,
    /// The `aud` its statements carry: `Some(a)` means `aud` must name `a`; `None` means
    /// its statements carry no `aud` (one carrying one is refused, never ignored).
    pub audience: Option<String>,
}

/// Which software statements are accepted, and whether one is required (D5).
#[derive(Debug, Clone, Default)]
pub struct SoftwareStatementPolicy {
    /// Trusted issuers. A statement from anyone else is `unapproved_software_statement`.
    pub trusted_issuers: Vec<TrustedStatementIssuer>,
    /// Whether every registration and update must carry a statement. A client registered
    /// with a statement always needs one to update, whatever this says, so that a PUT
    /// cannot shed what the statement fixed.
    pub required: bool,
}

/// How a [`Registrar`] is set up.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    /// The registration endpoint URL; `registration_client_uri` is
    /// `{registration_endpoint}/{client_id}` (RFC 7592 §3).
    pub registration_endpoint: String,
    /// SHA-256 of the initial access token (RFC 7591 §3). `None`: registration is closed
    /// and every request is refused (open registration is never offered, D10).
    pub initial_access_token: Option<TokenHash>,
    /// Software statements.
    pub software_statements: SoftwareStatementPolicy,
    /// The profiles a client may register under dynamically.
    pub profiles: Vec<Profile>,
    /// The profile of a request that names none; `None` makes `profile` required.
    pub default_profile: Option<Profile>,
    /// Lifetime of a registration access token, seconds; `None`: it lives until the next
    /// update rotates it or the client is deleted.
    pub registration_token_lifetime: Option<u32>,
}

impl RegistrarConfig {
    /// A configuration with no software statements, no default profile, registration
    /// tokens that do not expire, and every profile open except SMART Backend Services
    /// (client_credentials only, which dynamic registration refuses anyway).
    pub fn new(
        registration_endpoint: impl Into<String>,
        initial_access_token: Option<TokenHash>,
    ) -> Self {
        RegistrarConfig {
            registration_endpoint: registration_endpoint.into(),
            initial_access_token,
            software_statements: SoftwareStatementPolicy::default(),
            profiles: vec![
                Profile::Heart,
                Profile::Smart,
                Profile::Fapi2Security,
                Profile::Fapi2MessageSigning,
            ],
            default_profile: None,
            registration_token_lifetime: None,
        }
    }
}

/// The client information response (RFC 7591 §3.2.1, RFC 7592 §3): every registered
/// member, `client_id`, `client_id_issued_at`, `registration_access_token`,
/// `registration_client_uri`, and `software_statement` when one was used. Never a
/// `client_secret`.
#[derive(Debug, Clone)]
pub struct ClientInformation {
    metadata: ClientMetadata,
    client_id_issued_at: UnixTime,
    registration_access_token: SecretToken,
    registration_client_uri: String,
    software_statement: Option<String>,
    /// The response body without the token.
    body: Map<String, Value>,
}

impl ClientInformation {
    fn new(record: &ClientRecord, token: SecretToken, uri: String) -> Result<Self, Failure> {
        // Serialising the metadata cannot fail (plain fields and a `Value`); if it ever
        // did, answer with a retryable error rather than a partial registration.
        let Ok(Value::Object(mut body)) = serde_json::to_value(&record.metadata) else {
            return Err(Failure::unavailable("encoding the response"));
        };
        body.insert(
            "client_id_issued_at".into(),
            Value::from(record.client_id_issued_at),
        );
        body.insert("registration_client_uri".into(), Value::from(uri.clone()));
        if let Some(s) = &record.software_statement {
            // RFC 7591 §3.2.1: returned unmodified.
            body.insert("software_statement".into(), Value::from(s.clone()));
        }
        Ok(ClientInformation {
            metadata: record.metadata.clone(),
            client_id_issued_at: UnixTime(record.client_id_issued_at),
            registration_access_token: token,
            registration_client_uri: uri,
            software_statement: record.software_statement.clone(),
            body,
        })
    }

    /// The registered metadata.
    pub fn metadata(&self) -> &ClientMetadata {
        &self.metadata
    }

    /// The server-assigned client id.
    pub fn client_id(&self) -> &str {
        &self.metadata.client_id
    }

    /// When the client id was issued.
    pub fn client_id_issued_at(&self) -> UnixTime {
        self.client_id_issued_at
    }

    /// The registration access token to present at `registration_client_uri`.
    pub fn registration_access_token(&self) -> &SecretToken {
        &self.registration_access_token
    }

    /// The client configuration endpoint of this client.
    pub fn registration_client_uri(&self) -> &str {
        &self.registration_client_uri
    }

    /// The software statement used, exactly as presented.
    pub fn software_statement(&self) -> Option<&str> {
        self.software_statement.as_deref()
    }

    /// The JSON response body, token included (wiped from memory when dropped). Sent with
    /// `Cache-Control: no-store` (RFC 7591 §3.2.1).
    pub fn to_json(&self) -> Zeroizing<String> {
        let mut body = self.body.clone();
        body.insert(
            "registration_access_token".into(),
            Value::from(self.registration_access_token.expose()),
        );
        Zeroizing::new(Value::Object(body).to_string())
    }
}

/// What the store keeps per dynamically registered client.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClientRecord {
    metadata: ClientMetadata,
    client_id_issued_at: i64,
    /// SHA-256 of the current registration access token.
    registration_token_hash: TokenHash,
    registration_token_expires_at: Option<i64>,
    /// The software statement used at the last registration or update, as presented.
    software_statement: Option<String>,
    /// Its issuer (HEART §3.2: the user is told a statement was used).
    software_statement_issuer: Option<String>,
}

/// A refusal with the reason that goes to the audit log (never to the client).
#[derive(Debug)]
struct Failure {
    error: RegistrationError,
    reason: &'static str,
}

impl Failure {
    fn token(reason: &'static str) -> Self {
        Failure {
            error: RegistrationError::InvalidToken,
            reason,
        }
    }

    fn unavailable(reason: &'static str) -> Self {
        Failure {
            error: RegistrationError::Unavailable,
            reason,
        }
    }

    fn statement(reason: &'static str) -> Self {
        Failure {
            error: RegistrationError::InvalidSoftwareStatement(reason),
            reason,
        }
    }

    fn metadata(rule: &'static str) -> Self {
        MetadataError::InvalidClientMetadata(rule).into()
    }
}

impl From<MetadataError> for Failure {
    fn from(e: MetadataError) -> Self {
        let reason = match &e {
            MetadataError::InvalidClientMetadata(rule) => rule,
            MetadataError::InvalidRedirectUri(_) => "invalid_redirect_uri",
            MetadataError::InvalidJwks(_) => "invalid jwks",
        };
        Failure {
            error: RegistrationError::Metadata(e),
            reason,
        }
    }
}

/// A software statement that verified.
struct Statement {
    jwt: String,
    issuer: String,
    alg: Algorithm,
}

/// Registers clients and manages their registrations (RFC 7591, RFC 7592).
pub struct Registrar<'a> {
    config: RegistrarConfig,
    audit: &'a dyn AuditSink,
    rng: SystemRandom,
}

impl std::fmt::Debug for Registrar<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<'a> Registrar<'a> {
    /// A registrar that reports every decision to `audit`.
    pub fn new(config: RegistrarConfig, audit: &'a dyn AuditSink) -> Self {
        Registrar {
            config,
            audit,
            rng: SystemRandom::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RegistrarConfig {
        &self.config
    }

    /// RFC 7591 §3.1: register a client from the JSON `body`, authorized by the bearer
    /// `initial_access_token`. Answer 201 with [`ClientInformation::to_json`].
    pub fn register(
        &self,
        initial_access_token: Option<&str>,
        body: &[u8],
        store: &dyn Store,
        now: UnixTime,
    ) -> Result<ClientInformation, RegistrationError> {
        let result = self.register_inner(initial_access_token, body, store, now);
        let client_id = result.as_ref().ok().map(|i| i.client_id().to_owned());
        self.finish(now, "registered", client_id.as_deref(), result)
    }

    /// RFC 7592 §2.1: the current registration of `client_id`. Answer 200 with
    /// [`ClientInformation::to_json`]; the token in it is the one presented.
    pub fn read(
        &self,
        client_id: &str,
        registration_access_token: Option<&str>,
        store: &dyn Store,
        now: UnixTime,
    ) -> Result<ClientInformation, RegistrationError> {
        let result = self
            .authorize(client_id, registration_access_token, store, now)
            .and_then(|(record, _, presented)| {
                ClientInformation::new(&record, presented, self.client_uri(client_id))
            });
        self.finish(now, "read", Some(client_id), result)
    }

    /// RFC 7592 §2.2: replace the registration of `client_id` with `body`, validated
    /// from scratch, and rotate the registration access token. Answer 200 with
    /// [`ClientInformation::to_json`]; the token presented no longer works.
    pub fn update(
        &self,
        client_id: &str,
        registration_access_token: Option<&str>,
        body: &[u8],
        store: &dyn Store,
        now: UnixTime,
    ) -> Result<ClientInformation, RegistrationError> {
        let result = self.update_inner(client_id, registration_access_token, body, store, now);
        self.finish(now, "updated", Some(client_id), result)
    }

    /// RFC 7592 §2.3: delete the registration of `client_id`. Answer 204.
    pub fn delete(
        &self,
        client_id: &str,
        registration_access_token: Option<&str>,
        store: &dyn Store,
        now: UnixTime,
    ) -> Result<(), RegistrationError> {
        let result = self
            .authorize(client_id, registration_access_token, store, now)
            .and_then(|(_, old, _)| {
                // RFC 7592 §2.3: the tokens issued to the client go with it. Marked first,
                // so a failure never leaves a deleted client with live tokens.
                crate::lifecycle::revoke_client_tokens(store, client_id, now)
                    .map_err(|_| Failure::unavailable("store"))?;
                match store.compare_and_swap(
                    Namespace::Client,
                    client_id.as_bytes(),
                    &old,
                    None,
                    now,
                ) {
                    Ok(Swapped::Done) => Ok(()),
                    // Updated (token rotated) or deleted since we read it.
                    Ok(Swapped::Conflict) => Err(Failure::token("changed concurrently")),
                    Err(_) => Err(Failure::unavailable("store")),
                }
            });
        self.finish(now, "deleted", Some(client_id), result)
    }

    fn register_inner(
        &self,
        initial_access_token: Option<&str>,
        body: &[u8],
        store: &dyn Store,
        now: UnixTime,
    ) -> Result<ClientInformation, Failure> {
        self.check_initial_access_token(initial_access_token)?;
        let mut members = parse_body(body)?;
        let statement =
            self.apply_statement(&mut members, self.config.software_statements.required, now)?;
        let client_id = random_id(&self.rng, ID_RANDOM_BYTES)
            .map_err(|_| Failure::unavailable("randomness"))?;
        let validated = self.metadata_from(members, &client_id, statement.as_ref())?;
        let token = random_secret(&self.rng, REGISTRATION_TOKEN_PREFIX)
            .map_err(|_| Failure::unavailable("randomness"))?;
        let record = self.record(validated, now.secs(), &token, statement, now);
        // The response exists before the client does: a client nobody can manage is
        // never left behind.
        let info = ClientInformation::new(&record, token, self.client_uri(&client_id))?;
        let bytes = encode(&record).map_err(|_| Failure::unavailable("encoding the record"))?;
        match store.insert_new(
            Namespace::Client,
            client_id.as_bytes(),
            &bytes,
            CLIENT_RECORD_EXPIRY,
            now,
        ) {
            Ok(Inserted::New) => Ok(info),
            // 128 random bits collided: the generator is broken. Fail closed.
            Ok(Inserted::AlreadyPresent) => Err(Failure::unavailable("client_id collision")),
            Err(_) => Err(Failure::unavailable("store")),
        }
    }

    fn update_inner(
        &self,
        client_id: &str,
        registration_access_token: Option<&str>,
        body: &[u8],
        store: &dyn Store,
        now: UnixTime,
    ) -> Result<ClientInformation, Failure> {
        // Authorization first: nothing about the body is said to a caller without it.
        let (old, old_bytes, _) =
            self.authorize(client_id, registration_access_token, store, now)?;
        let mut members = parse_body(body)?;
        // RFC 7592 §2.2: the body's client_id MUST be the one issued.
        match members.get("client_id") {
            Some(Value::String(c)) if c == client_id => {}
            _ => return Err(Failure::metadata("client_id must be the registered one")),
        }
        if SERVER_MEMBERS.iter().any(|m| members.contains_key(*m)) {
            return Err(Failure::metadata("server-provisioned member in an update"));
        }
        // RFC 7592 §2.2: a client_secret in the body MUST match the one issued; none
        // ever is, so none can match.
        if members.contains_key("client_secret") {
            return Err(Failure::metadata("client_secret"));
        }
        let needed = self.config.software_statements.required || old.software_statement.is_some();
        let statement = self.apply_statement(&mut members, needed, now)?;
        let validated = self.metadata_from(members, client_id, statement.as_ref())?;
        let token = random_secret(&self.rng, REGISTRATION_TOKEN_PREFIX)
            .map_err(|_| Failure::unavailable("randomness"))?;
        let record = self.record(validated, old.client_id_issued_at, &token, statement, now);
        let info = ClientInformation::new(&record, token, self.client_uri(client_id))?;
        let bytes = encode(&record).map_err(|_| Failure::unavailable("encoding the record"))?;
        match store.compare_and_swap(
            Namespace::Client,
            client_id.as_bytes(),
            &old_bytes,
            Some((&bytes, CLIENT_RECORD_EXPIRY)),
            now,
        ) {
            Ok(Swapped::Done) => Ok(info),
            // Another update (which rotated this token) or a delete won the race.
            Ok(Swapped::Conflict) => Err(Failure::token("changed concurrently")),
            Err(_) => Err(Failure::unavailable("store")),
        }
    }

    fn record(
        &self,
        validated: ValidatedClient,
        issued_at: i64,
        token: &SecretToken,
        statement: Option<Statement>,
        now: UnixTime,
    ) -> ClientRecord {
        let (software_statement, software_statement_issuer) = match statement {
            Some(s) => (Some(s.jwt), Some(s.issuer)),
            None => (None, None),
        };
        ClientRecord {
            metadata: validated.metadata().clone(),
            client_id_issued_at: issued_at,
            registration_token_hash: token.hash(),
            registration_token_expires_at: self
                .config
                .registration_token_lifetime
                .map(|l| now.secs().saturating_add(i64::from(l))),
            software_statement,
            software_statement_issuer,
        }
    }

    fn client_uri(&self, client_id: &str) -> String {
        format!(
            "{}/{}",
            self.config.registration_endpoint.trim_end_matches('/'),
            client_id
        )
    }

    fn check_initial_access_token(&self, presented: Option<&str>) -> Result<(), Failure> {
        let Some(expected) = &self.config.initial_access_token else {
            return Err(Failure::token("registration closed"));
        };
        let presented = presented.ok_or(Failure::token("no initial access token"))?;
        if bool::from(TokenHash::of(presented).0.ct_eq(&expected.0)) {
            Ok(())
        } else {
            Err(Failure::token("wrong initial access token"))
        }
    }

    /// The record of `client_id` if `presented` is its current, unexpired registration
    /// access token, with the exact bytes read (for compare-and-swap) and the token.
    fn authorize(
        &self,
        client_id: &str,
        presented: Option<&str>,
        store: &dyn Store,
        now: UnixTime,
    ) -> Result<(ClientRecord, Vec<u8>, SecretToken), Failure> {
        let presented = presented.ok_or(Failure::token("no registration access token"))?;
        let hash = TokenHash::of(presented);
        if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_LEN {
            return Err(Failure::token("malformed client_id"));
        }
        let bytes = store
            .get(Namespace::Client, client_id.as_bytes(), now)
            .map_err(|_| Failure::unavailable("store"))?
            .ok_or(Failure::token("unknown client"))?;
        // S12: a corrupt record is a missing one.
        let record: ClientRecord = decode(&bytes).map_err(|_| Failure::token("corrupt record"))?;
        if record.metadata.client_id != client_id {
            return Err(Failure::token("corrupt record"));
        }
        if !bool::from(record.registration_token_hash.0.ct_eq(&hash.0)) {
            return Err(Failure::token("wrong registration access token"));
        }
        if record
            .registration_token_expires_at
            .is_some_and(|exp| now.secs() >= exp)
        {
            return Err(Failure::token("registration access token expired"));
        }
        Ok((record, bytes, SecretToken::new(presented)))
    }

    /// Take `software_statement` out of `members`, verify it, and let its values
    /// override the request's (RFC 7591 §3.1.1).
    fn apply_statement(
        &self,
        members: &mut Map<String, Value>,
        needed: bool,
        now: UnixTime,
    ) -> Result<Option<Statement>, Failure> {
        let jwt = match members.remove("software_statement") {
            None if needed => return Err(Failure::statement("absent")),
            None => return Ok(None),
            Some(Value::String(s)) => s,
            Some(_) => return Err(Failure::statement("not a string")),
        };
        let (issuer, claims, alg) = self.verify_statement(&jwt, now)?;
        for (k, v) in claims.into_map() {
            if !STATEMENT_ONLY_CLAIMS.contains(&k.as_str()) {
                members.insert(k, v);
            }
        }
        Ok(Some(Statement { jwt, issuer, alg }))
    }

    fn verify_statement(
        &self,
        jwt: &str,
        now: UnixTime,
    ) -> Result<(String, Claims, Algorithm), Failure> {
        let jws = parse_compact(jwt, REQUEST_OBJECT_MAX_LEN)
            .map_err(|_| Failure::statement("malformed"))?;
        // Whose keys? `iss`, read before verification for this lookup only (as `sub` is
        // for client assertions); verify_jwt then requires the same `iss`.
        let peek = jws
            .unverified_claims()
            .map_err(|_| Failure::statement("malformed"))?;
        let iss = peek
            .string("iss")
            .ok()
            .flatten()
            .ok_or(Failure::statement("no iss"))?;
        let trusted = self
            .config
            .software_statements
            .trusted_issuers
            .iter()
            .find(|t| t.issuer == iss)
            .ok_or(Failure {
                error: RegistrationError::UnapprovedSoftwareStatement,
                reason: "untrusted issuer",
            })?;
        let audience = match &trusted.audience {
            Some(a) => AudienceRule::Contains(a.clone()),
            None => AudienceRule::MustBeAbsent,
        };
        // NOTE: RFC 7591 §2.3 does not require `exp`; heartgate does (J21: a missing `exp`
        // is an error, never a pass), so a statement cannot be valid forever. Covered by
        // `d5_statement_without_exp_is_invalid`.
        let rule = Validation::new(
            AlgorithmSet::ALL,
            TypRule::OptionalOneOf(&["JWT"]),
            audience,
        )
        .issuer(trusted.issuer.clone())
        .max_len(REQUEST_OBJECT_MAX_LEN);
        let verified = verify_jwt(jwt, &trusted.keys, &rule, now).map_err(|e| {
            Failure::statement(match e {
                JoseError::Expired => "expired",
                JoseError::BadSignature
                | JoseError::UnknownKey
                | JoseError::AmbiguousKey
                | JoseError::AlgorithmKeyMismatch => "signature",
                _ => "invalid",
            })
        })?;
        let alg = verified.header().alg();
        Ok((trusted.issuer.clone(), verified.into_inner(), alg))
    }

    /// Turn the request members into validated metadata for `client_id`.
    fn metadata_from(
        &self,
        mut members: Map<String, Value>,
        client_id: &str,
        statement: Option<&Statement>,
    ) -> Result<ValidatedClient, Failure> {
        // NOTE: OIDC Registration §2 makes the OP fetch `sector_identifier_uri` and check
        // the redirect URIs against it; heartgate does not fetch it, and ignoring it would
        // give the client pairwise subjects of another sector than it asked for. Refused
        // (test `oidcc_registration_sector_bad`).
        if members
            .get("sector_identifier_uri")
            .is_some_and(|v| !v.is_null())
        {
            return Err(Failure::metadata("sector_identifier_uri is not supported"));
        }
        // RFC 7591 §2: unknown members are ignored (and so never echoed); RFC 7592 §2.2:
        // null is an omitted member. D7: the client's own client_id is never used.
        members
            .retain(|k, v| k != "client_id" && KNOWN_MEMBERS.contains(&k.as_str()) && !v.is_null());
        if let Some(p) = self.config.default_profile {
            members
                .entry("profile")
                .or_insert_with(|| Value::from(p.as_str()));
        }
        let mut md: ClientMetadata = serde_json::from_value(Value::Object(members))
            .map_err(|_| Failure::metadata("member"))?;
        md.client_id = client_id.to_owned();
        if !self.config.profiles.contains(&md.profile) {
            return Err(Failure::metadata(
                "profile not open to dynamic registration",
            ));
        }
        // HEART §3.2 (and every profile here, see the module NOTE).
        if md.grant_types.contains(&GrantType::ClientCredentials) {
            return Err(Failure::metadata(
                "client_credentials is not open to dynamic registration",
            ));
        }
        // I2: which resource servers a client speaks for is the operator's to say.
        if !md.resources.is_empty() {
            return Err(Failure::metadata(
                "resources is not open to dynamic registration",
            ));
        }
        if let Some(s) = statement {
            if !md.profile.policy().algorithms.contains(s.alg) {
                return Err(Failure::statement("algorithm not allowed by the profile"));
            }
        }
        Ok(md.validate()?)
    }

    fn finish<T>(
        &self,
        now: UnixTime,
        done: &'static str,
        client_id: Option<&str>,
        result: Result<T, Failure>,
    ) -> Result<T, RegistrationError> {
        let (outcome, reason) = match &result {
            Ok(_) => (Outcome::Success, done),
            Err(f) => (Outcome::Failure, f.reason),
        };
        let mut event = AuditEvent::new(now, EventKind::Registration, outcome, reason);
        if let Some(c) = client_id.filter(|c| !c.is_empty() && c.len() <= MAX_CLIENT_ID_LEN) {
            event = event.client(c);
        }
        crate::audit::settle(self.audit, event, result.map_err(|f| f.error), || {
            RegistrationError::Unavailable
        })
    }
}

/// Parse a registration body: bounded, one JSON object, no duplicate members.
fn parse_body(body: &[u8]) -> Result<Map<String, Value>, Failure> {
    if body.len() > MAX_REGISTRATION_BODY_LEN {
        return Err(Failure::metadata("body too large"));
    }
    crate::jose::json::parse_object(body).map_err(|_| Failure::metadata("json"))
}

/// Where a client's registration came from (HEART §3.2: the user is shown that a client
/// registered itself, and whether a software statement vouched for it).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Provenance {
    /// Configured by the operator.
    Static,
    /// Registered through [`Registrar::register`].
    Dynamic {
        /// When.
        issued_at: UnixTime,
        /// The issuer of the software statement used, if any.
        software_statement_issuer: Option<String>,
    },
}

/// The [`ClientDirectory`] over the store: the operator's static clients first (when
/// given), then the dynamically registered ones.
///
/// Built per request with that request's `now`. Every lookup reads the store (C19: a
/// deleted client is gone at the next call) and re-validates the stored metadata against
/// today's profile policy, so a client that no longer passes is not found (fail closed).
/// Keys are the inline `jwks` only: a `jwks_uri` client gets `None` here, because fetching
/// is the server's (SSRF-guarded, cached, D2); the server wraps this directory for that.
/// The trait has no error channel, so a store failure reads as "no such client"; the
/// server asks [`StoreClientDirectory::store_status`] afterwards to answer 503 instead.
pub struct StoreClientDirectory<'a> {
    store: &'a dyn Store,
    now: UnixTime,
    statics: Option<&'a HashMap<String, Arc<ValidatedClient>>>,
    failed: AtomicBool,
}

impl std::fmt::Debug for StoreClientDirectory<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreClientDirectory")
            .field("now", &self.now)
            .field("static_clients", &self.statics.map(HashMap::len))
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<'a> StoreClientDirectory<'a> {
    /// The dynamically registered clients of `store`, as of `now`.
    pub fn new(store: &'a dyn Store, now: UnixTime) -> Self {
        StoreClientDirectory {
            store,
            now,
            statics: None,
            failed: AtomicBool::new(false),
        }
    }

    /// Put the operator's static clients in front (their ids win).
    pub fn with_static_clients(
        mut self,
        clients: &'a HashMap<String, Arc<ValidatedClient>>,
    ) -> Self {
        self.statics = Some(clients);
        self
    }

    /// `Err` if a lookup through this directory hit a store failure: a client reported
    /// missing may exist, and the request must fail with 503, not 401.
    pub fn store_status(&self) -> Result<(), StoreError> {
        if self.failed.load(Ordering::Relaxed) {
            Err(StoreError::Unavailable)
        } else {
            Ok(())
        }
    }

    /// Where the client with this id came from, if it exists.
    pub fn provenance(&self, client_id: &str) -> Option<Provenance> {
        if self.statics.is_some_and(|m| m.contains_key(client_id)) {
            return Some(Provenance::Static);
        }
        self.record(client_id).map(|r| Provenance::Dynamic {
            issued_at: UnixTime(r.client_id_issued_at),
            software_statement_issuer: r.software_statement_issuer,
        })
    }

    fn record(&self, client_id: &str) -> Option<ClientRecord> {
        if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_LEN {
            return None;
        }
        match self
            .store
            .get(Namespace::Client, client_id.as_bytes(), self.now)
        {
            Ok(Some(bytes)) => decode::<ClientRecord>(&bytes)
                .ok()
                .filter(|r| r.metadata.client_id == client_id),
            Ok(None) => None,
            Err(_) => {
                self.failed.store(true, Ordering::Relaxed);
                None
            }
        }
    }
}

impl ClientDirectory for StoreClientDirectory<'_> {
    fn client(&self, client_id: &str) -> Option<Arc<ValidatedClient>> {
        if let Some(c) = self.statics.and_then(|m| m.get(client_id)) {
            return Some(Arc::clone(c));
        }
        let record = self.record(client_id)?;
        record.metadata.validate().ok().map(Arc::new)
    }

    fn keys(&self, client: &ValidatedClient) -> Option<Arc<JwkSet>> {
        client.shared_jwks()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{AuthMethod, DeliveryMode, SubjectType};
    use crate::token::TokenFormat;

    /// Adding a field to `ClientMetadata` breaks this literal; then this test fails until
    /// the field is in `KNOWN_MEMBERS` (or a dynamic registration would drop it).
    #[test]
    fn known_members_are_exactly_the_struct_fields() {
        let s = || Some(String::new());
        let full = ClientMetadata {
            client_id: String::new(),
            client_name: s(),
            profile: Profile::Heart,
            redirect_uris: vec![],
            grant_types: vec![],
            response_types: vec![],
            token_endpoint_auth_method: AuthMethod::None,
            jwks: Some(Value::Null),
            jwks_uri: s(),
            tls_client_auth_subject_dn: s(),
            tls_client_auth_san_dns: s(),
            tls_client_auth_san_uri: s(),
            tls_client_auth_san_ip: s(),
            tls_client_auth_san_email: s(),
            token_endpoint_auth_signing_alg: s(),
            request_object_signing_alg: s(),
            authorization_signed_response_alg: s(),
            require_pushed_authorization_requests: false,
            tls_client_certificate_bound_access_tokens: false,
            access_token_format: TokenFormat::Jwt,
            scope: s(),
            backchannel_token_delivery_mode: Some(DeliveryMode::Poll),
            backchannel_client_notification_endpoint: s(),
            backchannel_authentication_request_signing_alg: s(),
            backchannel_user_code_parameter: false,
            subject_type: SubjectType::Public,
            id_token_signed_response_alg: s(),
            introspection_signed_response_alg: s(),
            resources: vec![String::new()],
        };
        let Value::Object(m) = serde_json::to_value(&full).unwrap() else {
            panic!("metadata is an object");
        };
        let mut fields: Vec<&str> = m.keys().map(String::as_str).collect();
        let mut known = KNOWN_MEMBERS.to_vec();
        fields.sort_unstable();
        known.sort_unstable();
        assert_eq!(fields, known);
    }

    #[test]
    fn error_codes_and_statuses_are_the_rfc_ones() {
        use crate::authorize::redirect_uri::RedirectUriError;
        let cases = [
            (RegistrationError::InvalidToken, "invalid_token", 401),
            (
                RegistrationError::Metadata(MetadataError::InvalidRedirectUri(
                    RedirectUriError::Scheme,
                )),
                "invalid_redirect_uri",
                400,
            ),
            (
                RegistrationError::Metadata(MetadataError::InvalidClientMetadata("x")),
                "invalid_client_metadata",
                400,
            ),
            (
                RegistrationError::Metadata(MetadataError::InvalidJwks(
                    crate::jose::KeyError::Symmetric,
                )),
                "invalid_client_metadata",
                400,
            ),
            (
                RegistrationError::InvalidSoftwareStatement("x"),
                "invalid_software_statement",
                400,
            ),
            (
                RegistrationError::UnapprovedSoftwareStatement,
                "unapproved_software_statement",
                400,
            ),
            (
                RegistrationError::Unavailable,
                "temporarily_unavailable",
                503,
            ),
        ];
        for (e, code, status) in cases {
            assert_eq!(e.to_wire().code, code, "{e:?}");
            assert_eq!(e.to_wire().status, status, "{e:?}");
        }
    }
}
