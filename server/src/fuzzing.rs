//! The `http_service` fuzz target body (THREATS §4.1), behind the `fuzzing` feature:
//! raw HTTP/1.1 request bytes fed to the server's hyper service in-process.
//!
//! Each input gets a fresh [`App`] (memory store, a small introspection cache, two static
//! clients, a test user, registration open with [`INITIAL_ACCESS_TOKEN`]); the bytes are
//! written into one end of a [`tokio::io::duplex`] pipe whose other end is served by
//! `hyper::server::conn::http1` with [`handle`], on a current-thread runtime; the write
//! side is then closed and everything the server answers is read back.
//!
//! Oracle: what comes back is a sequence of well-formed HTTP/1.1 responses (HTTP/1.0 for
//! an HTTP/1.0 request; status line
//! and headers parse with `httparse`, the body framing adds up); none has a 5xx status
//! (client bytes are never the server's fault; 505 for an unsupported HTTP version is
//! hyper's protocol answer and allowed); a complete request head always gets an answer
//! (unless the bytes hold the HTTP/2 preface, on which hyper closes silently); the
//! exchange finishes within [`EXCHANGE_TIMEOUT`].
//!
//! What it never does: listen on a socket, or reach the network (outbound fetches are
//! given a 50 ms budget; in a sandbox they fail at once).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use heartgate_core::audit::{AuditSink, NoAudit};
use heartgate_core::ciba::CibaConfig;
use heartgate_core::client::{ClientMetadata, RegistrarConfig, ValidatedClient};
use heartgate_core::introspect::{CacheConfig, IntrospectionCache};
use heartgate_core::jose::{Algorithm, KeyRing, SigningKey};
use heartgate_core::oidc::PairwiseSubjects;
use heartgate_core::store::MemoryStore;
use heartgate_core::token::{TokenFormat, TokenHash, TokenIssuer};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::app::{
    discovery, handle, App, Conn, LoginFailure, PairingLimiter, Settings, User, Users,
};
use crate::metrics::Metrics;
use crate::outbound::{JwksCache, OutboundClient, OutboundPolicy};
use crate::session::Sessions;
use crate::tls::ClientCas;

/// The issuer of the fuzzed server.
pub const ISSUER: &str = "https://as.example";
/// The initial access token that opens `/register`.
pub const INITIAL_ACCESS_TOKEN: &str = "hg-fuzz-initial-access-token";
/// The test user's password (login name `demo`).
pub const DEMO_PASSWORD: &str = "demo-password";
/// Longest one exchange may take before it counts as a hang.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest header section, as `[limits] max_header_bytes` defaults.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// One user, checked without argon2 (a fuzz harness must not spend 50 ms per login).
struct FuzzUsers;

fn demo() -> User {
    User {
        subject: "u-demo".into(),
        display_name: "Demo".into(),
        fhir_user: Some("Practitioner/7".into()),
        patients: vec![("123".into(), "Test Patient".into())],
    }
}

impl Users for FuzzUsers {
    fn login(
        &self,
        username: &str,
        password: &str,
        _ip: IpAddr,
        _now: i64,
    ) -> Result<User, LoginFailure> {
        if username == "demo" && password == DEMO_PASSWORD {
            Ok(demo())
        } else {
            Err(LoginFailure::InvalidCredentials)
        }
    }
    fn by_subject(&self, subject: &str) -> Option<User> {
        (subject == "u-demo").then(demo)
    }
    fn by_username(&self, username: &str) -> Option<User> {
        (username == "demo").then(demo)
    }
    fn verify_user_code(&self, subject: &str, code: &str, _now: i64) -> bool {
        subject == "u-demo" && code == "4711"
    }
}

/// What every input's [`App`] shares: built once per process.
struct Shared {
    keys: Arc<KeyRing>,
    statics: HashMap<String, Arc<ValidatedClient>>,
    users: Arc<dyn Users>,
    jwks: Arc<JwksCache>,
    outbound: Arc<OutboundClient>,
    discovery: Bytes,
    runtime: tokio::runtime::Runtime,
}

fn fixture_panic(what: &str, e: impl std::fmt::Debug) -> ! {
    panic!("http_service fixture: {what}: {e:?}")
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let key =
            SigningKey::generate(Algorithm::ES256).unwrap_or_else(|e| fixture_panic("key", e));
        let keys = Arc::new(KeyRing::new(key));
        let client_key =
            SigningKey::generate(Algorithm::ES256).unwrap_or_else(|e| fixture_panic("key", e));
        let mut statics = HashMap::new();
        for v in [
            json!({"client_id": "app", "profile": "smart",
                "redirect_uris": ["https://app.example/cb", "http://127.0.0.1/cb"],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"]}),
            json!({"client_id": "backend", "profile": "smart-backend",
                "token_endpoint_auth_method": "private_key_jwt",
                "grant_types": ["client_credentials"],
                "jwks": {"keys": [client_key.verifying_key().to_jwk()]},
                "scope": "system/Observation.rs"}),
        ] {
            let md = ClientMetadata::from_json(v.to_string().as_bytes())
                .unwrap_or_else(|e| fixture_panic("client", e));
            let c = md.validate().unwrap_or_else(|e| fixture_panic("client", e));
            statics.insert(c.metadata().client_id.clone(), Arc::new(c));
        }
        let policy = OutboundPolicy {
            timeout_ms: 50,
            ..OutboundPolicy::default()
        };
        let client =
            || OutboundClient::new(policy.clone()).unwrap_or_else(|e| fixture_panic("outbound", e));
        let signing = keys.snapshot().signing_algorithms();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| fixture_panic("runtime", e));
        Shared {
            keys,
            statics,
            users: Arc::new(FuzzUsers),
            jwks: Arc::new(JwksCache::new(client())),
            outbound: Arc::new(client()),
            discovery: discovery(ISSUER, &signing),
            runtime,
        }
    })
}

/// A fresh application: nothing one input did is seen by the next.
fn app(s: &Shared) -> Arc<App> {
    let audit: Arc<dyn AuditSink> = Arc::new(NoAudit);
    let cache = IntrospectionCache::new(CacheConfig {
        max_entries: 64,
        max_negative_entries: 16,
        ..CacheConfig::default()
    })
    .unwrap_or_else(|e| fixture_panic("cache", e));
    let pairwise =
        PairwiseSubjects::new(&[7u8; 32]).unwrap_or_else(|| fixture_panic("pairwise", ()));
    Arc::new(App {
        settings: Settings {
            issuer: ISSUER.into(),
            default_audience: "https://fhir.example".into(),
            default_format: TokenFormat::Jwt,
            par_lifetime: 60,
            refresh_grace: None,
            max_body_bytes: 64 * 1024,
            body_timeout: Duration::from_secs(2),
            trusted_proxies: Vec::new(),
            registration_open: true,
            ciba: CibaConfig::new(ISSUER),
            cluster: None,
        },
        tokens: TokenIssuer::new(ISSUER, Arc::clone(&s.keys)),
        store: Arc::new(MemoryStore::new()),
        cache,
        audit,
        audit_log: None,
        pairwise,
        statics: s.statics.clone(),
        registrar: RegistrarConfig::new(
            format!("{ISSUER}/register"),
            Some(TokenHash::of(INITIAL_ACCESS_TOKEN)),
        ),
        users: Arc::clone(&s.users),
        sessions: Sessions::new(&[9u8; 32]),
        client_cas: ClientCas::none(),
        jwks: Arc::clone(&s.jwks),
        outbound: Arc::clone(&s.outbound),
        pairing: PairingLimiter::default(),
        metrics: Metrics::default(),
        discovery: s.discovery.clone(),
        password_checks: Default::default(),
        par_quota: Default::default(),
        ciba_quota: Default::default(),
    })
}

/// Serve `request` on one in-process HTTP/1.1 connection; everything the server wrote.
/// `None` when the exchange did not finish within [`EXCHANGE_TIMEOUT`].
pub fn exchange(request: &[u8]) -> Option<Vec<u8>> {
    let s = shared();
    let app = app(s);
    s.runtime.block_on(async move {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let conn = Arc::new(Conn::new(SocketAddr::from(([192, 0, 2, 1], 40_000)), None));
        let svc = service_fn(move |req| {
            let app = Arc::clone(&app);
            let conn = Arc::clone(&conn);
            async move { Ok::<_, std::convert::Infallible>(handle(app, conn, req).await) }
        });
        let serving = tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .max_buf_size(MAX_HEADER_BYTES.max(8192))
                .serve_connection(TokioIo::new(server), svc)
                .await;
        });
        let (mut rd, mut wr) = tokio::io::split(client);
        let write = async {
            let _ = wr.write_all(request).await;
            let _ = wr.shutdown().await;
        };
        let read = async {
            let mut out = Vec::new();
            let _ = rd.read_to_end(&mut out).await;
            out
        };
        let done = tokio::time::timeout(EXCHANGE_TIMEOUT, async {
            let ((), out) = tokio::join!(write, read);
            out
        })
        .await;
        serving.abort();
        done.ok()
    })
}

fn header<'h>(headers: &'h [httparse::Header<'_>], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// The length of a chunked body at the start of `b`, trailers included.
fn chunked_len(b: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = b.get(at..)?.windows(2).position(|w| w == b"\r\n")? + at;
        let size_text = std::str::from_utf8(&b[at..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let end = b.get(at..)?.windows(2).position(|w| w == b"\r\n")? + at;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some(at);
                }
            }
        }
        at = at.checked_add(size)?;
        if b.get(at..at + 2)? != b"\r\n" {
            return None;
        }
        at += 2;
    }
}

/// The oracle on what the server wrote for `request`.
pub fn check_responses(request: &[u8], response: &[u8]) {
    let mut rest = response;
    let mut count = 0usize;
    // A response to HEAD carries no body whatever its Content-Length says.
    let head_possible = request.windows(4).any(|w| w.eq_ignore_ascii_case(b"HEAD"));
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                panic!(
                    "response {count}: truncated head {:?}",
                    String::from_utf8_lossy(rest)
                )
            }
            Err(e) => panic!(
                "response {count}: malformed ({e}): {:?}",
                String::from_utf8_lossy(rest)
            ),
        };
        // HTTP/1.0 only in answer to an HTTP/1.0 request (RFC 9110 §6.2).
        let http10 = request.windows(8).any(|w| w == b"HTTP/1.0");
        assert!(
            resp.version == Some(1) || (http10 && resp.version == Some(0)),
            "response {count}: not HTTP/1.1"
        );
        let code = resp.code.unwrap_or(0);
        assert!(
            !(500..600).contains(&code) || code == 505,
            "response {count}: {code} for client bytes; request {:?}",
            String::from_utf8_lossy(request)
        );
        let headers = resp.headers;
        let body = &rest[head_len..];
        let bodiless = (100..200).contains(&code) || code == 204 || code == 304;
        let chunked = header(headers, "transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"));
        let length = header(headers, "content-length").map(|v| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or_else(|| panic!("response {count}: bad Content-Length {v:?}"))
        });
        assert!(
            !(chunked && length.is_some()),
            "response {count}: both framings"
        );
        let body_len = if bodiless {
            0
        } else if chunked {
            chunked_len(body).unwrap_or_else(|| panic!("response {count}: bad chunked body"))
        } else {
            match length {
                // HEAD: the next response starts right after the head.
                Some(_) if head_possible && (body.starts_with(b"HTTP/1.") || body.is_empty()) => 0,
                Some(n) => {
                    assert!(
                        n <= body.len(),
                        "response {count}: body shorter than Content-Length"
                    );
                    n
                }
                // Close-delimited.
                None => body.len(),
            }
        };
        rest = &body[body_len..];
        count += 1;
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let complete_head = matches!(
        httparse::Request::new(&mut headers).parse(request),
        Ok(httparse::Status::Complete(_))
    );
    // hyper closes without an answer once it sees the HTTP/2 connection preface (an h2
    // client on an HTTP/1.1-only connection), even after a malformed HTTP/1.1 request
    // (fuzz/regressions/http_service/h2-preface-after-bad-request-…).
    let h2_preface = request.windows(14).any(|w| w == b"PRI * HTTP/2.0");
    if complete_head && !h2_preface {
        assert!(count > 0, "a complete request head got no answer");
    }
}

/// `http_service`: raw HTTP/1.1 request bytes → the hyper service, in-process.
pub fn http_service(data: &[u8]) {
    match exchange(data) {
        Some(out) => check_responses(data, &out),
        None => panic!(
            "the exchange did not finish within {EXCHANGE_TIMEOUT:?}: {:?}",
            String::from_utf8_lossy(data)
        ),
    }
}
