//! The application: server state and every endpoint. Handlers parse HTTP, call core, and
//! answer through [`crate::wire`]; no protocol decision is made here that core could make.

// A handler's early return is its response, built once per request; boxing it buys nothing.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use heartgate_core::audit::AuditSink;
use heartgate_core::authorize::code::{complete, error_response, Approval, Redirect};
use heartgate_core::authorize::par::{
    consume, front_channel, lookup, push, FrontChannelError, ParConfig, Params,
};
use heartgate_core::client::{
    authenticate, AuthenticatedClient, ClientAuthError, ClientCredentials, ClientDirectory,
    Endpoints, Provenance, Registrar, RegistrarConfig, StoreClientDirectory, ValidatedClient,
};
use heartgate_core::clock::UnixTime;
use heartgate_core::error::{ToWire, WireError};
use heartgate_core::grant::{self, GrantContext, GrantError, TokenResponse};
use heartgate_core::introspect::{IntrospectionCache, TOKEN_INTROSPECTION_JWT_MEDIA_TYPE};
use heartgate_core::jose::{Algorithm, AlgorithmSet, JwkSet};
use heartgate_core::lifecycle::{self, LifecycleContext};
use heartgate_core::mtls::CertificateFacts;
use heartgate_core::oidc::PairwiseSubjects;
use heartgate_core::scope::{Scope, ScopeSet};
use heartgate_core::store::{Namespace, Store};
use heartgate_core::token::{RefreshPolicy, TokenFormat, TokenIssuer};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use rustls::pki_types::CertificateDer;
use serde_json::{json, Map, Value};

use crate::metrics::Metrics;
use crate::pages;
use crate::session::{self, Sessions};
use crate::tls::ClientCas;
use crate::wire::{self, Resp};

/// The current time (the only place the server reads the system clock for protocol
/// decisions).
pub fn now() -> UnixTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    UnixTime(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// A user who signed in.
#[derive(Debug, Clone)]
pub struct User {
    /// Stable local subject.
    pub subject: String,
    /// Name to show.
    pub display_name: String,
    /// SMART `fhirUser`, e.g. `Practitioner/7`.
    pub fhir_user: Option<String>,
    /// Patients this user may pick as launch context, as (FHIR id, label).
    pub patients: Vec<(String, String)>,
}

/// Why a login failed (the page shows one fixed message per case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    /// Unknown user or wrong password: indistinguishable.
    InvalidCredentials,
    /// Too many failures recently.
    TooManyAttempts,
}

/// The local users.
pub trait Users: Send + Sync {
    /// Check a password.
    fn login(
        &self,
        username: &str,
        password: &str,
        ip: IpAddr,
        now: i64,
    ) -> Result<User, LoginFailure>;
    /// The user with this subject.
    fn by_subject(&self, subject: &str) -> Option<User>;
    /// The user with this login name (a CIBA `login_hint`).
    fn by_username(&self, username: &str) -> Option<User>;
    /// Whether `code` is the CIBA `user_code` of the user with this subject (false when
    /// the user has none, or after too many wrong codes).
    fn verify_user_code(&self, subject: &str, code: &str, now: i64) -> bool;
}

mod ciba;
pub use ciba::{spawn_sweeper as spawn_ciba_sweeper, PairingLimiter};

/// Where a request came from: one per connection, shared by its requests.
#[derive(Debug)]
pub struct Conn {
    /// The peer address.
    pub remote: SocketAddr,
    /// The TLS client certificate chain, leaf first, if one was presented.
    pub peer_chain: Option<Arc<Vec<CertificateDer<'static>>>>,
    /// The chain's check against the client CAs, made by the connection's first request
    /// that needs it and reused by the others while it holds.
    chain_verdict: std::sync::OnceLock<Option<ChainVerdict>>,
    /// What client authentication needs of the leaf, read by the first request that asks.
    facts: std::sync::OnceLock<Option<CertificateFacts>>,
}

/// A request's client certificate.
struct PresentedCert<'c> {
    /// The leaf, DER.
    der: std::borrow::Cow<'c, [u8]>,
    /// Whether its chain leads to a configured client CA.
    verified: bool,
    /// Its facts, kept by the connection (TLS certificates only).
    facts: Option<&'c CertificateFacts>,
}

impl Conn {
    /// A connection from `remote` that presented `peer_chain` in its TLS handshake.
    pub fn new(remote: SocketAddr, peer_chain: Option<Arc<Vec<CertificateDer<'static>>>>) -> Self {
        Conn {
            remote,
            peer_chain,
            chain_verdict: std::sync::OnceLock::new(),
            facts: std::sync::OnceLock::new(),
        }
    }

    /// The leaf certificate's [`CertificateFacts`], read once per connection; `None`
    /// without a certificate or when it does not parse (core then refuses it).
    fn facts(&self) -> Option<&CertificateFacts> {
        self.facts
            .get_or_init(|| {
                let leaf = self.peer_chain.as_deref()?.first()?;
                CertificateFacts::of(leaf.as_ref()).ok()
            })
            .as_ref()
    }

    /// Whether the TLS chain leads to one of `cas` at `now`: checked by the connection's
    /// first request that asks, then reused while that answer holds ([`ChainVerdict`]).
    fn chain_verified(&self, cas: &ClientCas, now: UnixTime) -> bool {
        let Some(chain) = self.peer_chain.as_deref() else {
            return false;
        };
        let mut fresh = None;
        let kept = self.chain_verdict.get_or_init(|| {
            let (ok, keep) = ChainVerdict::check(cas, chain, now);
            fresh = Some(ok);
            keep
        });
        match (fresh, kept) {
            (Some(ok), _) => ok,
            (None, Some(v)) if v.holds_at(now) => v.ok,
            (None, _) => ChainVerdict::check(cas, chain, now).0,
        }
    }
}

/// Whether a TLS connection's certificate chain leads to a client CA, and the time
/// window over which that answer cannot change: from the latest `notBefore` to the
/// earliest `notAfter` of the certificates presented (no CRLs are configured, so the
/// validity periods are the only time-dependent part of the check). Outside the window
/// the chain is verified again, on every request.
#[derive(Debug, Clone, Copy)]
struct ChainVerdict {
    ok: bool,
    from: i64,
    until: i64,
}

impl ChainVerdict {
    /// The check made at `now`, to be kept only if `now` is inside its window.
    fn check(cas: &ClientCas, chain: &[CertificateDer<'_>], now: UnixTime) -> (bool, Option<Self>) {
        let ok = cas.verify(chain, u64::try_from(now.secs()).unwrap_or(0));
        let mut from = i64::MIN;
        let mut until = i64::MAX;
        for c in chain {
            let Ok((_, cert)) = x509_parser::parse_x509_certificate(c.as_ref()) else {
                return (ok, None);
            };
            from = from.max(cert.validity().not_before.timestamp());
            until = until.min(cert.validity().not_after.timestamp());
        }
        let v = ChainVerdict { ok, from, until };
        (ok, v.holds_at(now).then_some(v))
    }

    fn holds_at(&self, now: UnixTime) -> bool {
        (self.from..=self.until).contains(&now.secs())
    }
}

/// Server settings the handlers need.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The issuer identifier.
    pub issuer: String,
    /// Audience of tokens when no resource was named.
    pub default_audience: String,
    /// Default access-token format for clients that registered none.
    pub default_format: TokenFormat,
    /// PAR lifetime, seconds.
    pub par_lifetime: u32,
    /// Refresh grace window for confidential clients, if configured.
    pub refresh_grace: Option<u32>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Body read timeout.
    pub body_timeout: std::time::Duration,
    /// Proxies trusted for `Client-Cert`.
    pub trusted_proxies: Vec<IpAddr>,
    /// Whether dynamic registration is open.
    pub registration_open: bool,
    /// The backchannel authentication endpoint's settings (CIBA).
    pub ciba: heartgate_core::ciba::CibaConfig,
    /// The Redis channel of a cluster's cache invalidations (nodes on a Redis store).
    pub cluster: Option<crate::cluster::Link>,
}

/// The fetched keys of `jwks_uri` clients, as the outbound module keeps them.
pub trait RemoteKeys: Send + Sync {
    /// The cached key set of `uri`, if any.
    fn cached(&self, uri: &str) -> Option<Arc<JwkSet>>;
}

/// The server.
pub struct App {
    /// Settings.
    pub settings: Settings,
    /// Issues and signs tokens.
    pub tokens: TokenIssuer,
    /// Shared state.
    pub store: Arc<dyn Store>,
    /// Introspection cache.
    pub cache: IntrospectionCache,
    /// Audit sink.
    pub audit: Arc<dyn AuditSink>,
    /// The audit log behind `audit`, for its counters in `/metrics` (`None` when the
    /// events go elsewhere).
    pub audit_log: Option<Arc<crate::audit_log::AuditLog>>,
    /// Pairwise subjects and audit pseudonyms.
    pub pairwise: PairwiseSubjects,
    /// Statically configured clients.
    pub statics: HashMap<String, Arc<ValidatedClient>>,
    /// Registration endpoint configuration.
    pub registrar: RegistrarConfig,
    /// Local users.
    pub users: Arc<dyn Users>,
    /// Cookies and CSRF.
    pub sessions: Sessions,
    /// Client CAs for `tls_client_auth`.
    pub client_cas: ClientCas,
    /// Fetched `jwks_uri` key sets.
    pub jwks: Arc<crate::outbound::JwksCache>,
    /// Outbound calls other than key fetching (CIBA notifications), under the same policy.
    pub outbound: Arc<crate::outbound::OutboundClient>,
    /// Failed CIBA device pairing attempts by address.
    pub pairing: ciba::PairingLimiter,
    /// Metrics.
    pub metrics: Metrics,
    /// Discovery document, built once.
    pub discovery: Bytes,
    /// Bounds the password hash checks running at once.
    pub password_checks: PasswordChecks,
    /// Pushed authorization requests per client (THREATS P19).
    pub par_quota: ClientQuota,
    /// Backchannel authentication requests per client (THREATS B10).
    pub ciba_quota: ClientQuota,
}

/// How many requests of one kind each authenticated client may make: a generic cell rate
/// algorithm (governor) per client_id, N a minute with a burst of N, beyond which the
/// endpoint answers 429 with `Retry-After`. Used for `/par` (RFC 9126 §2.3 "429 Too
/// Many Requests", THREATS P19: a client flooding `/par` must not fill the store with
/// request_uris; `[limits] par_per_client_per_minute`) and `/bc-authorize` (THREATS B10:
/// a client probing `login_hint`s for which users exist; `[limits]
/// ciba_per_client_per_minute`). Only requests that authenticated count, so nobody can
/// spend another client's quota by naming it, and one client over its quota never slows
/// another. Kept per node, in memory: with N nodes a client gets up to N times the quota.
pub struct ClientQuota(Option<governor::DefaultKeyedRateLimiter<String>>);

impl ClientQuota {
    /// `per_minute` requests a minute per client; 0: no limit.
    pub fn new(per_minute: u32) -> ClientQuota {
        ClientQuota(
            std::num::NonZeroU32::new(per_minute)
                .map(|n| governor::RateLimiter::keyed(governor::Quota::per_minute(n))),
        )
    }

    /// Count one request by `client_id`; `Err(seconds)` to wait when it is over its
    /// quota.
    fn admit(&self, client_id: &str) -> Result<(), u64> {
        use governor::clock::Clock as _;
        let Some(limiter) = &self.0 else {
            return Ok(());
        };
        // One entry per client seen recently; clients back at a full quota are forgotten
        // once many have been seen (registered clients bound the count anyway).
        if limiter.len() > 10_000 {
            limiter.retain_recent();
        }
        limiter
            .check_key(&client_id.to_owned())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
            })
    }
}

impl Default for ClientQuota {
    /// No limit.
    fn default() -> Self {
        ClientQuota::new(0)
    }
}

/// Password checks (argon2id, tens of milliseconds of a core and 19 MiB each by default)
/// run on tokio's blocking pool, never on the async workers, so a burst of sign-ins
/// cannot stall every other request; at most one per CPU runs at once (further ones wait
/// their turn without holding a thread), which also bounds their memory.
#[derive(Debug, Clone)]
pub struct PasswordChecks(Arc<tokio::sync::Semaphore>);

impl Default for PasswordChecks {
    fn default() -> Self {
        let n = std::thread::available_parallelism().map_or(1, usize::from);
        PasswordChecks(Arc::new(tokio::sync::Semaphore::new(n)))
    }
}

impl PasswordChecks {
    /// Run `check` (one that verifies a password or user-code hash) on the blocking pool
    /// when its turn comes. `None` when it could not run (the blocking task failed).
    async fn run<T: Send + 'static>(
        &self,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        // The semaphore is never closed.
        let _turn = self.0.acquire().await.ok()?;
        tokio::task::spawn_blocking(check).await.ok()
    }
}

impl App {
    /// [`Users::login`] with a sign-in form's `username` and `password`, from the
    /// connection's address, off the async workers and bounded by [`PasswordChecks`].
    /// `None` when the check could not run (the blocking task failed): the caller
    /// answers 503.
    async fn login(
        &self,
        form: &Wiped,
        conn: &Conn,
        now: UnixTime,
    ) -> Option<Result<User, LoginFailure>> {
        let field = |k: &str| zeroize::Zeroizing::new(form.0.get(k).cloned().unwrap_or_default());
        let (username, password) = (field("username"), field("password"));
        let (ip, now) = (conn.remote.ip(), now.secs());
        let users = self.users.clone();
        self.password_checks
            .run(move || users.login(&username, &password, ip, now))
            .await
    }
}

/// The directory handlers use: static clients, then the store; `jwks_uri` keys from the
/// outbound cache.
struct Directory<'a> {
    inner: StoreClientDirectory<'a>,
    remote: &'a dyn RemoteKeys,
}

impl ClientDirectory for Directory<'_> {
    fn client(&self, client_id: &str) -> Option<Arc<ValidatedClient>> {
        self.inner.client(client_id)
    }
    fn keys(&self, client: &ValidatedClient) -> Option<Arc<JwkSet>> {
        if let Some(k) = self.inner.keys(client) {
            return Some(k);
        }
        client
            .metadata()
            .jwks_uri
            .as_deref()
            .and_then(|u| self.remote.cached(u))
    }
}

/// The endpoint label of a path, for metrics.
fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/.well-known/openid-configuration" | "/.well-known/oauth-authorization-server" => {
            "discovery"
        }
        "/jwks" => "jwks",
        "/par" => "par",
        "/authorize" => "authorize",
        "/login" => "login",
        "/consent" => "consent",
        "/token" => "token",
        "/bc-authorize" => "bc-authorize",
        p if p == "/ciba" || p.starts_with("/ciba/") => "ciba",
        p if p.starts_with("/device/") => "device",
        "/introspect" => "introspect",
        "/revoke" => "revoke",
        "/userinfo" => "userinfo",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        p if p == "/register" || p.starts_with("/register/") => "register",
        _ => "other",
    }
}

/// Overwrite the body of a request that held a password with zeros, once it has been
/// handled (best effort: when no other reference to its buffer remains; copies made by
/// the HTTP and TLS layers are theirs to drop).
fn wipe(r: Req) {
    use zeroize::Zeroize as _;
    if let Ok(mut b) = r.body.try_into_mut() {
        b[..].zeroize();
    }
}

/// A request with its body read (bounded in size and time).
struct Req {
    method: Method,
    path: String,
    query: Option<String>,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Req {
    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn form(&self) -> Result<Params, Resp> {
        let ct = self.header(header::CONTENT_TYPE).unwrap_or("");
        if !wire::is_form_media_type(ct) {
            return Err(wire::invalid_request(
                "Content-Type must be application/x-www-form-urlencoded (UTF-8)",
            ));
        }
        wire::parse_form(&self.body).map_err(wire::form_error)
    }

    fn query(&self) -> Result<Params, Resp> {
        wire::parse_form(self.query.as_deref().unwrap_or("").as_bytes()).map_err(wire::form_error)
    }

    fn bearer(&self) -> Option<&str> {
        let v = self.header(header::AUTHORIZATION)?;
        let (scheme, token) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty())
    }
}

/// Entry point: one request.
pub async fn handle(app: Arc<App>, conn: Arc<Conn>, req: Request<Incoming>) -> Resp {
    let start = Instant::now();
    let label = endpoint_label(req.uri().path());
    let resp = match read(&app, req).await {
        Ok(r) => route(&app, &conn, r).await,
        Err(resp) => resp,
    };
    app.metrics
        .request(label, resp.status().as_u16(), start.elapsed().as_secs_f64());
    resp
}

/// Read the request: headers checked, body bounded in size and time. A refusal here
/// closes the connection (`wire::closing`): the rest of the body is never read, so
/// nothing left of it can be taken for a next request (THREATS H1, H2).
async fn read(app: &App, req: Request<Incoming>) -> Result<Req, Resp> {
    let (parts, body) = req.into_parts();
    // H12: a second Authorization header is ambiguous about who the caller is.
    if parts
        .headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(wire::closing(wire::invalid_request(
            "more than one Authorization header",
        )));
    }
    let too_large = || {
        wire::closing(wire::error(WireError::new(
            413,
            "invalid_request",
            "request body too large",
        )))
    };
    // H1: a declared length over the limit is refused before a byte of it is read.
    let declared = hyper::body::Body::size_hint(&body).lower();
    if usize::try_from(declared).map_or(true, |n| n > app.settings.max_body_bytes) {
        return Err(too_large());
    }
    let limited = Limited::new(body, app.settings.max_body_bytes);
    let collected = tokio::time::timeout(app.settings.body_timeout, limited.collect()).await;
    let body = match collected {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) => {
            let over = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return Err(if over {
                too_large()
            } else {
                wire::closing(wire::invalid_request("unreadable body"))
            });
        }
        Err(_) => {
            return Err(wire::closing(wire::error(WireError::new(
                408,
                "invalid_request",
                "request body timeout",
            ))))
        }
    };
    Ok(Req {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
    })
}

/// Member `name` of part `index` (0: header, 1: payload) of a compact JWS, unverified:
/// for choosing which keys to fetch.
fn jws_member(token: &str, index: usize, name: &str) -> Option<String> {
    let part = token.split('.').nth(index)?;
    if part.len() > 8192 {
        return None;
    }
    let b = heartgate_core::jose::b64::decode(part).ok()?;
    let m: serde_json::Map<String, Value> = serde_json::from_slice(&b).ok()?;
    m.get(name).and_then(Value::as_str).map(str::to_owned)
}

impl App {
    /// For a client registered with `jwks_uri`, fetch (or refresh, rate-limited) its keys
    /// before core reads them: core's directory is synchronous.
    async fn prefetch_client_keys(&self, form: &Params) {
        let assertion = form.get("client_assertion");
        let client_id = form
            .get("client_id")
            .cloned()
            .or_else(|| assertion.and_then(|a| jws_member(a, 1, "iss")));
        let Some(client_id) = client_id else {
            return;
        };
        let Some(client) = self.directory(now()).client(&client_id) else {
            return;
        };
        let Some(uri) = client.metadata().jwks_uri.clone() else {
            return;
        };
        let kids = [
            assertion.and_then(|a| jws_member(a, 0, "kid")),
            form.get("request").and_then(|t| jws_member(t, 0, "kid")),
        ];
        let mut any = false;
        for kid in kids.iter().flatten() {
            any = true;
            if let Err(e) = self.jwks.prefetch(&uri, Some(kid)).await {
                tracing::warn!(client_id = %client_id, error = %e, "jwks_uri fetch failed");
            }
        }
        if !any {
            if let Err(e) = self.jwks.prefetch(&uri, None).await {
                tracing::warn!(client_id = %client_id, error = %e, "jwks_uri fetch failed");
            }
        }
    }
}

async fn route(app: &Arc<App>, conn: &Conn, r: Req) -> Resp {
    let m = &r.method;
    // The client-authenticated endpoints: the form is parsed once, for the key prefetch
    // and the handler.
    if m == Method::POST
        && matches!(
            r.path.as_str(),
            "/par" | "/token" | "/introspect" | "/revoke" | "/bc-authorize"
        )
    {
        let form = match r.form() {
            Ok(f) => f,
            Err(resp) => return resp,
        };
        app.prefetch_client_keys(&form).await;
        return match r.path.as_str() {
            "/par" => par(app, conn, &r, form),
            "/token" => token(app, conn, &r, &form),
            "/bc-authorize" => ciba::bc_authorize(app, conn, &r, form).await,
            "/introspect" => introspect(app, conn, &r, &form),
            _ => revoke(app, conn, &r, &form),
        };
    }
    match r.path.as_str() {
        "/.well-known/openid-configuration" | "/.well-known/oauth-authorization-server"
            if m == Method::GET =>
        {
            let mut resp = wire::json_text(StatusCode::OK, app.discovery.clone());
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            );
            resp
        }
        "/jwks" if m == Method::GET => {
            let text = app.tokens.keys().snapshot().jwks_json().to_string();
            let mut resp = wire::typed(StatusCode::OK, "application/jwk-set+json", text);
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            resp
        }
        "/authorize" if m == Method::GET || m == Method::POST => authorize(app, &r),
        "/login" if m == Method::GET => login_page(app, &r),
        "/login" if m == Method::POST => {
            let resp = login_submit(app, conn, &r).await;
            wipe(r);
            resp
        }
        "/consent" if m == Method::GET => consent_page(app, &r),
        "/consent" if m == Method::POST => consent_submit(app, &r),
        "/ciba" if m == Method::GET => ciba::approval_page(app, &r),
        "/ciba/login" if m == Method::POST => {
            let resp = ciba::login_submit(app, conn, &r).await;
            wipe(r);
            resp
        }
        "/ciba/decide" if m == Method::POST => ciba::decide(app, &r),
        "/ciba/devices" if m == Method::GET => ciba::devices_page(app, &r),
        "/ciba/devices/pair" if m == Method::POST => ciba::devices_submit(app, &r, true),
        "/ciba/devices/remove" if m == Method::POST => ciba::devices_submit(app, &r, false),
        "/device/pair" if m == Method::POST => ciba::device_pair(app, conn, &r),
        "/device/requests" if m == Method::GET => ciba::device_requests(app, &r),
        "/device/decision" if m == Method::POST => ciba::device_decision(app, &r),
        "/register" if m == Method::POST => register(app, &r),
        p if p.starts_with("/register/") => manage_registration(app, &r),
        "/userinfo" if m == Method::GET || m == Method::POST => userinfo(app, conn, &r),
        "/healthz" if m == Method::GET => wire::typed(StatusCode::OK, "text/plain", "ok"),
        "/readyz" if m == Method::GET => readyz(app),
        "/metrics" if m == Method::GET => wire::typed(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            app.metrics.render(
                &app.cache.stats(),
                app.audit_log.as_ref().map(|a| a.counters()),
            ),
        ),
        "/.well-known/openid-configuration"
        | "/.well-known/oauth-authorization-server"
        | "/jwks"
        | "/par"
        | "/authorize"
        | "/login"
        | "/consent"
        | "/token"
        | "/bc-authorize"
        | "/introspect"
        | "/revoke"
        | "/register"
        | "/userinfo"
        | "/healthz"
        | "/readyz"
        | "/metrics" => {
            let mut resp =
                wire::error(WireError::new(405, "invalid_request", "method not allowed"));
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
            resp
        }
        _ => wire::error(WireError::new(404, "not_found", "no such endpoint")),
    }
}

impl App {
    fn directory(&self, now: UnixTime) -> Directory<'_> {
        Directory {
            inner: StoreClientDirectory::new(self.store.as_ref(), now)
                .with_static_clients(&self.statics),
            remote: self.jwks.as_ref(),
        }
    }

    fn endpoints(&self) -> Endpoints {
        let i = &self.settings.issuer;
        Endpoints {
            issuer: i.clone(),
            token: format!("{i}/token"),
            par: format!("{i}/par"),
        }
    }

    fn grants(&self, now: UnixTime) -> GrantContext<'_> {
        let mut g = GrantContext::new(
            &self.tokens,
            self.store.as_ref(),
            &self.settings.default_audience,
            now,
        );
        g.audit = self.audit.as_ref();
        g.pairwise = Some(&self.pairwise);
        g.cache = Some(&self.cache);
        g.confidential_refresh = self
            .settings
            .refresh_grace
            .map(|grace_secs| RefreshPolicy::RotateWithGrace { grace_secs });
        g
    }

    fn lifecycle(&self, now: UnixTime) -> LifecycleContext<'_> {
        let mut l = LifecycleContext::new(&self.tokens, self.store.as_ref(), now);
        l.audit = self.audit.as_ref();
        l.pairwise = Some(&self.pairwise);
        l.cache = Some(&self.cache);
        l
    }

    fn par_config(&self) -> ParConfig {
        ParConfig {
            issuer: self.settings.issuer.clone(),
            lifetime: self.settings.par_lifetime,
        }
    }

    /// The client certificate of the request: from the TLS handshake, or from a trusted
    /// proxy's RFC 9440 `Client-Cert` header (ignored from anyone else).
    fn client_certificate<'c>(
        &self,
        conn: &'c Conn,
        r: &Req,
        now: UnixTime,
    ) -> Option<PresentedCert<'c>> {
        let from_proxy = self.settings.trusted_proxies.contains(&conn.remote.ip());
        if from_proxy {
            if let Some(h) = r.headers.get("client-cert").and_then(|v| v.to_str().ok()) {
                let der = heartgate_core::mtls::parse_client_cert_header(h).ok()?;
                let chain = [CertificateDer::from(der.as_slice())];
                let verified = self
                    .client_cas
                    .verify(&chain, u64::try_from(now.secs()).unwrap_or(0));
                return Some(PresentedCert {
                    der: std::borrow::Cow::Owned(der),
                    verified,
                    facts: None,
                });
            }
        }
        let leaf = conn.peer_chain.as_ref()?.first()?;
        Some(PresentedCert {
            der: std::borrow::Cow::Borrowed(leaf.as_ref()),
            verified: conn.chain_verified(&self.client_cas, now),
            facts: conn.facts(),
        })
    }

    /// Authenticate the client of a back-channel request; the response on failure.
    fn authenticate(
        &self,
        conn: &Conn,
        r: &Req,
        form: &Params,
        endpoint: &'static str,
        now: UnixTime,
    ) -> Result<AuthenticatedClient, Resp> {
        let cert = self.client_certificate(conn, r, now);
        let basic = r
            .header(header::AUTHORIZATION)
            .is_some_and(|v| v.len() > 6 && v[..6].eq_ignore_ascii_case("basic "));
        let get = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let creds = ClientCredentials {
            client_id: get("client_id"),
            client_assertion_type: get("client_assertion_type"),
            client_assertion: get("client_assertion"),
            client_secret: get("client_secret"),
            basic_authorization: basic,
            certificate: cert.as_ref().map(|c| c.der.as_ref()),
            certificate_chain_verified: cert.as_ref().is_some_and(|c| c.verified),
            certificate_facts: cert.as_ref().and_then(|c| c.facts),
        };
        let dir = self.directory(now);
        match authenticate(
            &creds,
            &dir,
            &self.endpoints(),
            self.store.as_ref(),
            now,
            self.audit.as_ref(),
        ) {
            Ok(c) => Ok(c),
            Err(e) => {
                self.metrics.auth_failure(endpoint);
                if dir.inner.store_status().is_err() {
                    return Err(wire::unavailable());
                }
                if matches!(e, ClientAuthError::InvalidClient(_)) {
                    tracing::info!(endpoint, "client authentication refused");
                }
                Err(wire::flow_error(&e))
            }
        }
    }
}

fn par(app: &App, conn: &Conn, r: &Req, form: Params) -> Resp {
    let now = now();
    let client = match app.authenticate(conn, r, &form, "par", now) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    if let Err(wait) = app.par_quota.admit(client.client_id()) {
        return wire::too_many_requests(
            "too many pushed authorization requests from this client; retry later",
            wait,
        );
    }
    // The client's own credentials are not request parameters.
    let mut body = form;
    for k in ["client_assertion", "client_assertion_type"] {
        body.remove(k);
    }
    match push(
        &client,
        &body,
        &app.directory(now),
        &app.par_config(),
        app.store.as_ref(),
        now,
        app.audit.as_ref(),
    ) {
        Ok(p) => wire::json(
            StatusCode::CREATED,
            &json!({"request_uri": p.request_uri, "expires_in": p.expires_in}),
        ),
        Err(e) => wire::flow_error(&e),
    }
}

fn client_alg(c: &ValidatedClient) -> Option<Algorithm> {
    c.metadata()
        .authorization_signed_response_alg
        .as_deref()
        .and_then(|a| Algorithm::from_name(a).ok())
}

/// Send an authorization response (code or error) back to the client.
fn respond(
    app: &App,
    resp: heartgate_core::authorize::code::AuthorizationResponse,
    now: UnixTime,
) -> Resp {
    let alg = app
        .statics
        .get(&resp.client_id)
        .cloned()
        .or_else(|| app.directory(now).client(&resp.client_id))
        .and_then(|c| client_alg(&c));
    match resp.into_redirect(&app.settings.issuer, app.tokens.keys(), alg, now) {
        Ok(Redirect::SeeOther(url)) => wire::see_other(&url),
        Ok(Redirect::FormPost { action, fields }) => {
            wire::html(StatusCode::OK, pages::form_post(&action, &fields))
        }
        Err(e) => wire::flow_error(&e),
    }
}

fn interaction_url(page: &str, client_id: &str, interaction: &str) -> String {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", client_id)
        .append_pair("interaction", interaction)
        .finish();
    format!("{page}?{q}")
}

fn error_page(status: StatusCode, message: &str) -> Resp {
    wire::html(status, pages::error(message))
}

fn authorize(app: &App, r: &Req) -> Resp {
    let now = now();
    let params = if r.method == Method::POST {
        match r.form() {
            Ok(p) => p,
            Err(_) => return error_page(StatusCode::BAD_REQUEST, "The request is malformed."),
        }
    } else {
        match r.query() {
            Ok(p) => p,
            Err(_) => return error_page(StatusCode::BAD_REQUEST, "The request is malformed."),
        }
    };
    let (client_id, interaction) = if let Some(ru) = params.get("request_uri") {
        let Some(cid) = params.get("client_id") else {
            return error_page(StatusCode::BAD_REQUEST, "The request names no client.");
        };
        match lookup(&app.settings.issuer, cid, ru, app.store.as_ref(), now) {
            Ok(_) => (cid.clone(), ru.clone()),
            Err(heartgate_core::authorize::par::RequestUriError::Unavailable) => {
                return wire::unavailable()
            }
            Err(_) => return error_page(
                StatusCode::BAD_REQUEST,
                "This authorization request has expired or was already used (invalid_request_uri).",
            ),
        }
    } else {
        match front_channel(
            &params,
            &app.directory(now),
            &app.par_config(),
            app.store.as_ref(),
            now,
            app.audit.as_ref(),
        ) {
            Ok(p) => (
                params.get("client_id").cloned().unwrap_or_default(),
                p.request_uri,
            ),
            Err(FrontChannelError::ErrorPage(e)) => {
                let w = e.to_wire();
                return error_page(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "The application sent an invalid request ({}: {}).",
                        w.code,
                        w.description.unwrap_or("")
                    ),
                );
            }
            Err(FrontChannelError::Redirect(resp)) => return respond(app, resp, now),
            Err(FrontChannelError::Unavailable) => return wire::unavailable(),
            Err(_) => return wire::unavailable(),
        }
    };
    // OIDC Core §3.1.2.1: `prompt` and `max_age` as the request was validated and stored
    // (a pushed request's own, never the query's: RFC 9126 §4).
    let req =
        match lookup(
            &app.settings.issuer,
            &client_id,
            &interaction,
            app.store.as_ref(),
            now,
        ) {
            Ok(q) => q,
            Err(heartgate_core::authorize::par::RequestUriError::Unavailable) => {
                return wire::unavailable()
            }
            Err(_) => return error_page(
                StatusCode::BAD_REQUEST,
                "This authorization request has expired or was already used (invalid_request_uri).",
            ),
        };
    let session = session::cookie(r.header(header::COOKIE), session::SESSION_COOKIE)
        .and_then(|c| app.sessions.read(c, now.secs()));
    let current = session
        .as_ref()
        .is_some_and(|s| !too_old(&req, s, now) && !prompts(&req, "login"));
    if prompts(&req, "none") && !current {
        // No page may be shown: the client hears `login_required` (OIDC Core §3.1.2.6).
        return refuse(app, &client_id, &interaction, "login_required", now);
    }
    let page = if current { "/consent" } else { "/login" };
    wire::see_other(&interaction_url(page, &client_id, &interaction))
}

/// Whether the stored request's `prompt` holds `value`.
fn prompts(req: &heartgate_core::authorize::par::AuthorizationRequest, value: &str) -> bool {
    req.prompt
        .as_deref()
        .is_some_and(|p| p.split(' ').any(|x| x == value))
}

/// The session authenticated longer ago than the request's `max_age` allows (OIDC Core
/// §3.1.2.1: the user must authenticate again).
fn too_old(
    req: &heartgate_core::authorize::par::AuthorizationRequest,
    s: &session::Session,
    now: UnixTime,
) -> bool {
    req.max_age
        .is_some_and(|m| now.secs().saturating_sub(s.auth_time) > i64::from(m))
}

/// End a pending request with `error` sent back to the client (its redirect URI is
/// verified): the request is consumed, so it cannot be completed later.
fn refuse(app: &App, cid: &str, ru: &str, error: &'static str, now: UnixTime) -> Resp {
    match consume(&app.settings.issuer, cid, ru, app.store.as_ref(), now) {
        Ok(req) => respond(app, error_response(&app.settings.issuer, &req, error), now),
        Err(heartgate_core::authorize::par::RequestUriError::Unavailable) => wire::unavailable(),
        Err(_) => error_page(
            StatusCode::BAD_REQUEST,
            "This authorization request has expired or was already used.",
        ),
    }
}

fn client_name(app: &App, client_id: &str, now: UnixTime) -> String {
    app.directory(now)
        .client(client_id)
        .and_then(|c| c.metadata().client_name.clone())
        .unwrap_or_else(|| client_id.to_owned())
}

fn login_page(app: &App, r: &Req) -> Resp {
    let now = now();
    let q = match r.query() {
        Ok(q) => q,
        Err(_) => return error_page(StatusCode::BAD_REQUEST, "The request is malformed."),
    };
    let (Some(cid), Some(ix)) = (q.get("client_id"), q.get("interaction")) else {
        return error_page(StatusCode::BAD_REQUEST, "The request is malformed.");
    };
    if lookup(&app.settings.issuer, cid, ix, app.store.as_ref(), now).is_err() {
        return error_page(
            StatusCode::BAD_REQUEST,
            "This authorization request has expired or was already used.",
        );
    }
    let Some(pre) = session::Sessions::nonce() else {
        return wire::unavailable();
    };
    let csrf = app.sessions.csrf("login", &format!("{cid} {ix}"), &pre);
    let mut resp = wire::html(
        StatusCode::OK,
        pages::login(
            &client_name(app, cid, now),
            &format!("{cid} {ix}"),
            &csrf,
            None,
        ),
    );
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(session::PRE_COOKIE, &pre, 900)) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// `client_id interaction` as carried by the forms.
fn split_interaction(v: &str) -> Option<(&str, &str)> {
    v.split_once(' ')
}

async fn login_submit(app: &App, conn: &Conn, r: &Req) -> Resp {
    let now = now();
    let Ok(f) = r.form() else {
        return error_page(StatusCode::BAD_REQUEST, "The request is malformed.");
    };
    let f = Wiped(f);
    let get = |k: &str| f.0.get(k).map(String::as_str).unwrap_or("");
    let ix = get("interaction");
    let pre = session::cookie(r.header(header::COOKIE), session::PRE_COOKIE).unwrap_or("");
    if !app.sessions.check_csrf("login", ix, pre, get("csrf")) {
        return error_page(
            StatusCode::FORBIDDEN,
            "The form expired or did not come from this site. Go back to the application and start again.",
        );
    }
    let Some((cid, ru)) = split_interaction(ix) else {
        return error_page(StatusCode::BAD_REQUEST, "The request is malformed.");
    };
    if lookup(&app.settings.issuer, cid, ru, app.store.as_ref(), now).is_err() {
        return error_page(
            StatusCode::BAD_REQUEST,
            "This authorization request has expired or was already used.",
        );
    }
    match app.login(&f, conn, now).await {
        None => wire::unavailable(),
        Some(Ok(user)) => signed_in_redirect(
            app,
            &user.subject,
            now,
            &interaction_url("/consent", cid, ru),
        ),
        Some(Err(failure)) => {
            let message = login_message(failure);
            let csrf = app.sessions.csrf("login", ix, pre);
            wire::html(
                StatusCode::UNAUTHORIZED,
                pages::login(&client_name(app, cid, now), ix, &csrf, Some(message)),
            )
        }
    }
}

/// A successful sign-in: the session cookie, the pre-login cookie cleared, and a 303 to
/// `location`.
fn signed_in_redirect(app: &App, subject: &str, now: UnixTime, location: &str) -> Resp {
    let cookie = app.sessions.issue(subject, now.secs());
    let mut resp = wire::see_other(location);
    let h = resp.headers_mut();
    for c in [
        session::set_cookie(session::SESSION_COOKIE, &cookie, session::SESSION_LIFETIME),
        session::set_cookie(session::PRE_COOKIE, "", 0),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// A parsed login form whose values are overwritten with zeros when dropped.
pub(crate) struct Wiped(pub(crate) Params);

impl Drop for Wiped {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        for v in self.0.values_mut() {
            v.zeroize();
        }
    }
}

/// What a login form says after a failure (one fixed message per case: no enumeration).
fn login_message(failure: LoginFailure) -> &'static str {
    match failure {
        LoginFailure::InvalidCredentials => "Wrong username or password.",
        LoginFailure::TooManyAttempts => {
            "Too many failed attempts. Wait a few minutes and try again."
        }
    }
}

fn signed_in(app: &App, r: &Req, now: UnixTime) -> Option<(session::Session, String)> {
    let c = session::cookie(r.header(header::COOKIE), session::SESSION_COOKIE)?;
    let s = app.sessions.read(c, now.secs())?;
    Some((s, c.to_owned()))
}

fn needs_patient(scope: &ScopeSet) -> bool {
    scope.needs_patient_context() || scope.contains(&Scope::Launch("patient".into()))
}

fn consent_page(app: &App, r: &Req) -> Resp {
    let now = now();
    let Ok(q) = r.query() else {
        return error_page(StatusCode::BAD_REQUEST, "The request is malformed.");
    };
    let (Some(cid), Some(ru)) = (q.get("client_id"), q.get("interaction")) else {
        return error_page(StatusCode::BAD_REQUEST, "The request is malformed.");
    };
    let Some((s, cookie)) = signed_in(app, r, now) else {
        return wire::see_other(&interaction_url("/login", cid, ru));
    };
    let Some(user) = app.users.by_subject(&s.subject) else {
        return wire::see_other(&interaction_url("/login", cid, ru));
    };
    let req = match lookup(&app.settings.issuer, cid, ru, app.store.as_ref(), now) {
        Ok(q) => q,
        Err(_) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "This authorization request has expired or was already used.",
            )
        }
    };
    // The authorization endpoint sent the browser to sign in again when `max_age` or
    // `prompt=login` asked for it; coming here directly does not skip that. A sign-in
    // for `prompt=login` is one that happened after the request was made.
    let requested_at = req.expires_at - i64::from(app.settings.par_lifetime.clamp(5, 599));
    if too_old(&req, &s, now) || (prompts(&req, "login") && s.auth_time < requested_at) {
        if prompts(&req, "none") {
            return refuse(app, cid, ru, "login_required", now);
        }
        return wire::see_other(&interaction_url("/login", cid, ru));
    }
    let Ok(scopes) = ScopeSet::parse(&req.scope) else {
        return error_page(StatusCode::BAD_REQUEST, "The request is malformed.");
    };
    // A consent the user asked to remember covers this request: no page (unless the
    // client asked for one with prompt=consent).
    let prompt_consent = req
        .prompt
        .as_deref()
        .is_some_and(|p| p.split(' ').any(|x| x == "consent"));
    if !prompt_consent {
        let remembered = match crate::consent::recall(app.store.as_ref(), &s.subject, cid, now) {
            Ok(r) => r,
            Err(_) => return wire::unavailable(),
        };
        if let Some(r) = remembered {
            let patient = r
                .patient
                .as_deref()
                .filter(|p| user.patients.iter().any(|(id, _)| id == p));
            if r.covers(&scopes, needs_patient(&scopes))
                && (!needs_patient(&scopes) || patient.is_some())
            {
                return approve(app, cid, ru, &s, &user, scopes, patient, now);
            }
        }
    }
    if prompts(&req, "none") {
        // The page would have to ask: `consent_required` (OIDC Core §3.1.2.6).
        return refuse(app, cid, ru, "consent_required", now);
    }
    let ix = format!("{cid} {ru}");
    let patients: &[(String, String)] = if needs_patient(&scopes) {
        &user.patients
    } else {
        &[]
    };
    let dynamic = matches!(
        app.directory(now).inner.provenance(cid),
        Some(Provenance::Dynamic { .. })
    );
    wire::html(
        StatusCode::OK,
        pages::consent(&pages::Consent {
            client_name: &client_name(app, cid, now),
            dynamically_registered: dynamic,
            scopes: &scopes,
            patients,
            interaction: &ix,
            csrf: &app.sessions.csrf("consent", &ix, &cookie),
            user: &user.display_name,
        }),
    )
}

fn consent_submit(app: &App, r: &Req) -> Resp {
    let now = now();
    let Ok(f) = r.form() else {
        return error_page(StatusCode::BAD_REQUEST, "The request is malformed.");
    };
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    let ix = get("interaction");
    let Some((s, cookie)) = signed_in(app, r, now) else {
        return error_page(StatusCode::FORBIDDEN, "You are not signed in.");
    };
    if !app.sessions.check_csrf("consent", ix, &cookie, get("csrf")) {
        return error_page(
            StatusCode::FORBIDDEN,
            "The form expired or did not come from this site.",
        );
    }
    let Some((cid, ru)) = split_interaction(ix) else {
        return error_page(StatusCode::BAD_REQUEST, "The request is malformed.");
    };
    let Some(user) = app.users.by_subject(&s.subject) else {
        return error_page(StatusCode::FORBIDDEN, "You are not signed in.");
    };
    let req = match lookup(&app.settings.issuer, cid, ru, app.store.as_ref(), now) {
        Ok(q) => q,
        Err(_) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "This authorization request has expired or was already used.",
            )
        }
    };
    if app.directory(now).client(cid).is_none() {
        return error_page(StatusCode::BAD_REQUEST, "The application is unknown.");
    }
    if get("decision") != "allow" {
        // Consumed, so the denied request cannot be completed later.
        return match consume(&app.settings.issuer, cid, ru, app.store.as_ref(), now) {
            Ok(req) => respond(
                app,
                error_response(&app.settings.issuer, &req, "access_denied"),
                now,
            ),
            Err(_) => error_page(
                StatusCode::BAD_REQUEST,
                "This authorization request has expired or was already used.",
            ),
        };
    }
    let Ok(scopes) = ScopeSet::parse(&req.scope) else {
        return error_page(StatusCode::BAD_REQUEST, "The request is malformed.");
    };
    let patient = if needs_patient(&scopes) {
        let chosen = get("patient");
        if !user.patients.iter().any(|(id, _)| id == chosen) {
            return error_page(StatusCode::BAD_REQUEST, "Choose one of your patients.");
        }
        Some(chosen)
    } else {
        None
    };
    let remembered = crate::consent::Remembered {
        scope: scopes.to_string(),
        patient: patient.map(str::to_owned),
        at: now.secs(),
    };
    let kept = if get("remember") == "1" {
        crate::consent::remember(app.store.as_ref(), &s.subject, cid, &remembered, now)
    } else {
        // Asked again and not ticked: an earlier remembered consent no longer holds.
        crate::consent::forget(app.store.as_ref(), &s.subject, cid)
    };
    if kept.is_err() {
        return wire::unavailable();
    }
    approve(app, cid, ru, &s, &user, scopes, patient, now)
}

/// The user approved (on the page, or by a remembered consent): the code and the
/// redirect back to the client.
#[allow(clippy::too_many_arguments)] // reason: one call site per way of consenting
fn approve(
    app: &App,
    cid: &str,
    ru: &str,
    s: &session::Session,
    user: &User,
    scopes: ScopeSet,
    patient: Option<&str>,
    now: UnixTime,
) -> Resp {
    let profile = match app.directory(now).client(cid) {
        Some(c) => c.metadata().profile,
        None => return error_page(StatusCode::BAD_REQUEST, "The application is unknown."),
    };
    let mut context = Map::new();
    if let Some(p) = patient {
        context.insert("patient".into(), Value::from(p));
    }
    if let Some(fu) = &user.fhir_user {
        context.insert("fhirUser".into(), Value::from(fu.clone()));
    }
    let approval = Approval {
        subject: s.subject.clone(),
        auth_time: UnixTime(s.auth_time),
        acr: None,
        granted_scope: scopes,
        context,
    };
    match complete(
        &app.settings.issuer,
        cid,
        ru,
        profile,
        &approval,
        app.store.as_ref(),
        now,
        app.audit.as_ref(),
    ) {
        Ok((_, resp)) => respond(app, resp, now),
        Err(heartgate_core::authorize::code::CodeError::Unavailable) => wire::unavailable(),
        Err(e) => {
            let w = e.to_wire();
            error_page(
                StatusCode::BAD_REQUEST,
                &format!("The request cannot be completed ({}).", w.code),
            )
        }
    }
}

fn token_json(t: TokenResponse) -> Value {
    let mut o = Map::new();
    o.insert("access_token".into(), t.access_token.expose().into());
    o.insert("token_type".into(), t.token_type.into());
    o.insert("expires_in".into(), t.expires_in.into());
    if !t.scope.is_empty() {
        o.insert("scope".into(), t.scope.clone().into());
    }
    if let Some(rt) = &t.refresh_token {
        o.insert("refresh_token".into(), rt.expose().into());
    }
    if let Some(id) = &t.id_token {
        o.insert("id_token".into(), id.clone().into());
    }
    // SMART: launch context in the token response (never overriding a member above).
    for (k, v) in &t.context {
        if !o.contains_key(k) {
            o.insert(k.clone(), v.clone());
        }
    }
    Value::Object(o)
}

fn format_label(client: &AuthenticatedClient) -> &'static str {
    match client.client().metadata().access_token_format {
        TokenFormat::Jwt => "jwt",
        TokenFormat::Opaque => "opaque",
        TokenFormat::Wrapper => "wrapper",
    }
}

fn token(app: &App, conn: &Conn, r: &Req, form: &Params) -> Resp {
    let now = now();
    let get = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let Some(grant_type) = get("grant_type") else {
        return wire::invalid_request("grant_type missing");
    };
    if !matches!(
        grant_type,
        "authorization_code" | "refresh_token" | "client_credentials" | ciba::GRANT_TYPE
    ) {
        return wire::error(WireError::bare(400, "unsupported_grant_type"));
    }
    let client = match app.authenticate(conn, r, form, "token", now) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let users = ciba::LocalUsers(app.users.as_ref());
    let mut ctx = app.grants(now);
    // R7: a refresh re-checks the user.
    ctx.users = Some(&users);
    let result: Result<TokenResponse, GrantError> = match grant_type {
        "authorization_code" => grant::authorization_code(
            &client,
            get("code"),
            get("redirect_uri"),
            get("code_verifier"),
            &ctx,
        ),
        "refresh_token" => grant::refresh_token(&client, get("refresh_token"), get("scope"), &ctx),
        ciba::GRANT_TYPE => grant::ciba(&client, get("auth_req_id"), &users, &ctx),
        _ => grant::client_credentials(&client, get("scope"), &ctx),
    };
    match result {
        Ok(t) => {
            app.metrics.token_issued(format_label(&client));
            wire::json(StatusCode::OK, &token_json(t))
        }
        Err(e) => wire::flow_error(&e),
    }
}

fn introspect(app: &App, conn: &Conn, r: &Req, form: &Params) -> Resp {
    let now = now();
    let client = match app.authenticate(conn, r, form, "introspect", now) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let ctx = app.lifecycle(now);
    let token = form.get("token").map(String::as_str);
    let resp = match lifecycle::introspect(&client, token, &ctx) {
        Ok(r) => r,
        Err(e) => return wire::flow_error(&e),
    };
    let wants_jwt = r
        .header(header::ACCEPT)
        .is_some_and(|a| a.contains(TOKEN_INTROSPECTION_JWT_MEDIA_TYPE));
    if wants_jwt {
        match lifecycle::introspection_jwt(&client, &resp, &ctx) {
            Ok(jwt) => wire::typed(StatusCode::OK, TOKEN_INTROSPECTION_JWT_MEDIA_TYPE, jwt),
            Err(e) => wire::flow_error(&e),
        }
    } else {
        wire::json_text(StatusCode::OK, resp.to_json_string())
    }
}

fn revoke(app: &App, conn: &Conn, r: &Req, form: &Params) -> Resp {
    let now = now();
    let client = match app.authenticate(conn, r, form, "revoke", now) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    match lifecycle::revoke(
        &client,
        form.get("token").map(String::as_str),
        &app.lifecycle(now),
    ) {
        Ok(_) => wire::empty(StatusCode::OK),
        Err(e) => wire::flow_error(&e),
    }
}

fn registrar(app: &App) -> Registrar<'_> {
    Registrar::new(app.registrar.clone(), app.audit.as_ref())
}

fn register(app: &App, r: &Req) -> Resp {
    let now = now();
    let json_body = r
        .header(header::CONTENT_TYPE)
        .and_then(|c| c.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !json_body {
        return wire::error(WireError::new(
            400,
            "invalid_client_metadata",
            "Content-Type must be application/json",
        ));
    }
    match registrar(app).register(r.bearer(), &r.body, app.store.as_ref(), now) {
        Ok(info) => {
            let mut resp = wire::json_text(StatusCode::CREATED, info.to_json().to_string());
            if let Ok(v) = HeaderValue::from_str(info.registration_client_uri()) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        Err(e) => wire::flow_error(&e),
    }
}

fn manage_registration(app: &App, r: &Req) -> Resp {
    let now = now();
    let id = r.path.trim_start_matches("/register/");
    let reg = registrar(app);
    let store = app.store.as_ref();
    match r.method {
        Method::GET => match reg.read(id, r.bearer(), store, now) {
            Ok(info) => wire::json_text(StatusCode::OK, info.to_json().to_string()),
            Err(e) => wire::flow_error(&e),
        },
        Method::PUT => match reg.update(id, r.bearer(), &r.body, store, now) {
            Ok(info) => wire::json_text(StatusCode::OK, info.to_json().to_string()),
            Err(e) => wire::flow_error(&e),
        },
        Method::DELETE => match reg.delete(id, r.bearer(), store, now) {
            Ok(()) => wire::empty(StatusCode::NO_CONTENT),
            Err(e) => wire::flow_error(&e),
        },
        _ => wire::error(WireError::new(405, "invalid_request", "method not allowed")),
    }
}

fn userinfo(app: &App, conn: &Conn, r: &Req) -> Resp {
    let now = now();
    let invalid = || wire::error(WireError::bare(401, "invalid_token"));
    let Some(token) = r.bearer() else {
        return invalid();
    };
    let info = match lifecycle::inspect(token, &app.lifecycle(now)) {
        Ok(i) => i,
        Err(e) => return wire::flow_error(&e),
    };
    if !info.is_active() {
        return invalid();
    }
    // A certificate-bound token is only good with its certificate (RFC 8705 §3).
    if let Some(cnf) = info.cnf() {
        let presented = app
            .client_certificate(conn, r, now)
            .and_then(|c| heartgate_core::mtls::Confirmation::for_certificate(&c.der).ok());
        if presented.as_ref() != Some(cnf) {
            return invalid();
        }
    }
    if !info.scopes().any(|s| s == "openid") {
        return wire::error(WireError::bare(403, "insufficient_scope"));
    }
    let (Some(sub), Some(client_id)) = (info.sub(), info.client_id()) else {
        return invalid();
    };
    let Some(client) = app.directory(now).client(client_id) else {
        return invalid();
    };
    let Ok(visible) = PairwiseSubjects::for_client(Some(&app.pairwise), client.metadata(), sub)
    else {
        return wire::unavailable();
    };
    let mut o = Map::new();
    o.insert("sub".into(), visible.into());
    if info.scopes().any(|s| s == "fhirUser") {
        if let Some(fu) = info.extension("fhirUser") {
            o.insert("fhirUser".into(), fu.clone());
        }
    }
    if info.scopes().any(|s| s == "profile") {
        if let Some(u) = app.users.by_subject(sub) {
            o.insert("name".into(), u.display_name.into());
        }
    }
    wire::json(StatusCode::OK, &Value::Object(o))
}

fn readyz(app: &App) -> Resp {
    match app.store.get(Namespace::RateLimit, b"readyz-probe", now()) {
        Ok(_) => wire::typed(StatusCode::OK, "text/plain", "ready"),
        Err(_) => wire::error(WireError::UNAVAILABLE),
    }
}

/// The discovery document (RFC 8414, OIDC Discovery), built once at start.
pub fn discovery(issuer: &str, signing: &[Algorithm]) -> Bytes {
    let u = |p: &str| format!("{issuer}{p}");
    let client_algs: Vec<&str> = [
        Algorithm::ES256,
        Algorithm::PS256,
        Algorithm::EdDSA,
        Algorithm::RS256,
        Algorithm::ES384,
        Algorithm::RS384,
    ]
    .into_iter()
    .filter(|a| AlgorithmSet::ALL.contains(*a))
    .map(Algorithm::as_str)
    .collect();
    let as_algs: Vec<&str> = signing.iter().map(|a| a.as_str()).collect();
    let back_channel_methods = [
        "private_key_jwt",
        "tls_client_auth",
        "self_signed_tls_client_auth",
    ];
    let doc = json!({
        "issuer": issuer,
        "authorization_endpoint": u("/authorize"),
        "token_endpoint": u("/token"),
        "pushed_authorization_request_endpoint": u("/par"),
        "introspection_endpoint": u("/introspect"),
        "revocation_endpoint": u("/revoke"),
        "registration_endpoint": u("/register"),
        "userinfo_endpoint": u("/userinfo"),
        "jwks_uri": u("/jwks"),
        "mtls_endpoint_aliases": {
            "token_endpoint": u("/token"),
            "pushed_authorization_request_endpoint": u("/par"),
            "introspection_endpoint": u("/introspect"),
            "revocation_endpoint": u("/revoke"),
            "userinfo_endpoint": u("/userinfo"),
            "backchannel_authentication_endpoint": u("/bc-authorize"),
        },
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "jwt", "query.jwt", "fragment.jwt", "form_post.jwt"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials", "urn:openid:params:grant-type:ciba"],
        "backchannel_authentication_endpoint": u("/bc-authorize"),
        "backchannel_token_delivery_modes_supported": ["poll", "ping", "push"],
        "backchannel_authentication_request_signing_alg_values_supported": client_algs,
        "backchannel_user_code_parameter_supported": true,
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "tls_client_auth", "self_signed_tls_client_auth", "none"],
        "token_endpoint_auth_signing_alg_values_supported": client_algs,
        "pushed_authorization_request_endpoint_auth_methods_supported": ["private_key_jwt", "tls_client_auth", "self_signed_tls_client_auth", "none"],
        "introspection_endpoint_auth_methods_supported": back_channel_methods,
        "introspection_endpoint_auth_signing_alg_values_supported": client_algs,
        "revocation_endpoint_auth_methods_supported": ["private_key_jwt", "tls_client_auth", "self_signed_tls_client_auth", "none"],
        "revocation_endpoint_auth_signing_alg_values_supported": client_algs,
        "request_object_signing_alg_values_supported": client_algs,
        "authorization_signing_alg_values_supported": as_algs,
        "id_token_signing_alg_values_supported": as_algs,
        "introspection_signing_alg_values_supported": as_algs,
        "require_pushed_authorization_requests": false,
        "request_parameter_supported": true,
        "request_uri_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
        "tls_client_certificate_bound_access_tokens": true,
        "subject_types_supported": ["public", "pairwise"],
        "scopes_supported": ["openid", "fhirUser", "profile", "offline_access", "online_access", "launch", "launch/patient", "launch/encounter"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr", "azp", "fhirUser", "name"],
        "capabilities": ["launch-standalone", "client-public", "client-confidential-asymmetric", "context-standalone-patient", "permission-patient", "permission-user", "permission-v2", "sso-openid-connect"],
    });
    Bytes::from(doc.to_string())
}

#[cfg(test)]
mod chain_verdict_tests {
    use super::*;

    const DAY: i64 = 86_400;

    /// A CA (its PEM) and a leaf it issued, valid from `nb` to `na` (Unix seconds).
    fn ca_and_leaf(nb: i64, na: i64) -> (String, CertificateDer<'static>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "test client CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, &ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut leaf = rcgen::CertificateParams::new(vec!["client.example".to_owned()]).unwrap();
        leaf.not_before = rcgen::date_time_ymd(2026, 1, 1) + time_offset(nb - jan1());
        leaf.not_after = rcgen::date_time_ymd(2026, 1, 1) + time_offset(na - jan1());
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        (ca_cert.pem(), cert.der().clone())
    }

    fn jan1() -> i64 {
        rcgen::date_time_ymd(2026, 1, 1).unix_timestamp()
    }

    fn time_offset(secs: i64) -> std::time::Duration {
        std::time::Duration::from_secs(u64::try_from(secs).unwrap())
    }

    fn cas(pem: &str) -> (tempfile::TempDir, ClientCas) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ca.pem");
        std::fs::write(&p, pem).unwrap();
        let cas = ClientCas::load(&[&p]).unwrap();
        (d, cas)
    }

    #[test]
    fn a_verified_chain_is_kept_for_its_validity_window_only() {
        let (nb, na) = (jan1() + DAY, jan1() + 30 * DAY);
        let (pem, leaf) = ca_and_leaf(nb, na);
        let (_d, cas) = cas(&pem);
        let chain = [leaf];
        let inside = UnixTime(nb + DAY);
        let (ok, kept) = ChainVerdict::check(&cas, &chain, inside);
        let kept = kept.expect("checked inside the window: kept");
        assert!(ok && kept.ok);
        assert_eq!((kept.from, kept.until), (nb, na));
        assert!(kept.holds_at(UnixTime(na)));
        // RFC 5280 §4.1.2.5: after notAfter the verdict no longer holds, and a fresh
        // check refuses the expired certificate and is not kept.
        let after = UnixTime(na + 1);
        assert!(!kept.holds_at(after));
        assert!(!ChainVerdict::check(&cas, &chain, after).0);
        assert!(ChainVerdict::check(&cas, &chain, after).1.is_none());
    }

    #[test]
    fn a_connection_reuses_its_verdict_and_checks_again_once_the_certificate_expires() {
        let (nb, na) = (jan1() + DAY, jan1() + 30 * DAY);
        let (pem, leaf) = ca_and_leaf(nb, na);
        let (_d, cas) = cas(&pem);
        let conn = Conn::new("127.0.0.1:1".parse().unwrap(), Some(Arc::new(vec![leaf])));
        let verdict = |now: i64| conn.chain_verified(&cas, UnixTime(now));
        assert!(verdict(nb + 10));
        assert!(verdict(nb + 20), "reused");
        assert!(conn.chain_verdict.get().unwrap().is_some());
        assert!(!verdict(na + 1), "expired mid-connection: refused");
    }

    #[test]
    fn a_chain_first_seen_before_its_window_is_not_kept() {
        let (nb, na) = (jan1() + DAY, jan1() + 30 * DAY);
        let (pem, leaf) = ca_and_leaf(nb, na);
        let (_d, cas) = cas(&pem);
        let (ok, kept) = ChainVerdict::check(&cas, std::slice::from_ref(&leaf), UnixTime(nb - 1));
        assert!(!ok, "not yet valid");
        assert!(kept.is_none(), "a refusal outside the window is not kept");
        assert!(ChainVerdict::check(&cas, &[leaf], UnixTime(nb)).0);
    }

    #[test]
    fn a_certificate_from_another_ca_is_refused_and_the_refusal_kept() {
        let (pem, _) = ca_and_leaf(jan1(), jan1() + DAY);
        let (_, stranger) = ca_and_leaf(jan1(), jan1() + 30 * DAY);
        let (_d, cas) = cas(&pem);
        let (ok, kept) = ChainVerdict::check(&cas, &[stranger], UnixTime(jan1() + 2));
        assert!(!ok);
        assert!(!kept.unwrap().ok);
    }
}
