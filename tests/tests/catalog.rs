//! Rows of the threat catalog (THREATS.md §2) that the other suites did not cite, against
//! the real server over TLS: PAR without client authentication (P2), an oversized request
//! object (P19), framing of the pages (A17), no input reflected in `error_description`
//! (A18), an unknown `token_type_hint` at revocation (V3), and hostile TLS handshakes
//! (M9).
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use std::time::{Duration, Instant};

use heartgate_core::authorize::pkce::CodeChallenge;
use heartgate_core::jose::{sign_jwt, Algorithm, SigningKey};
use heartgate_e2e::{cookie_pair, hidden_input, url_param, Resp, TestServer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const REDIRECT: &str = "https://app.example/cb";
const VERIFIER: &str = "catalog-verifier-0123456789abcdefghijklmnopqrstuvwxyz-ABCDE";
const PASSWORD: &str = "correct horse battery";
/// What an attacker puts in every parameter: markup, quotes, a backslash and CRLF.
const HOSTILE: &str = "<script>alert(1)</script>\"'\\\r\nSet-Cookie: pwned=1";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A server with a confidential `private_key_jwt` client "conf" (code, client
/// credentials), a SMART app "smart-app" on the front channel, and the user "nurse".
struct World {
    s: TestServer,
    key: SigningKey,
    n: std::sync::atomic::AtomicU32,
}

impl World {
    async fn start() -> World {
        Self::start_with(json!({})).await
    }

    /// With `[limits]` settings, and a second private_key_jwt client "conf2" (same key).
    async fn start_with(limits: Value) -> World {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let cheap = heartgate_server::users::PasswordParams {
            memory_kib: 8,
            iterations: 1,
            lanes: 1,
        };
        let hash = heartgate_server::users::hash_password_with(PASSWORD, cheap).unwrap();
        let doc = json!({
            "tokens": {"default_audience": "https://fhir.example/r4"},
            "clients": [
                {"client_id": "conf", "profile": "smart",
                    "token_endpoint_auth_method": "private_key_jwt",
                    "grant_types": ["authorization_code", "client_credentials"],
                    "redirect_uris": [REDIRECT],
                    "jwks": {"keys": [key.verifying_key().to_jwk()]},
                    "scope": "openid system/Patient.r patient/Observation.rs"},
                {"client_id": "conf2", "profile": "smart",
                    "token_endpoint_auth_method": "private_key_jwt",
                    "grant_types": ["authorization_code"],
                    "redirect_uris": [REDIRECT],
                    "jwks": {"keys": [key.verifying_key().to_jwk()]},
                    "scope": "openid patient/Observation.rs"},
                {"client_id": "smart-app", "profile": "smart",
                    "token_endpoint_auth_method": "none", "grant_types": ["authorization_code"],
                    "redirect_uris": [REDIRECT], "scope": "openid"},
            ],
            "users": [{"username": "nurse", "password_hash": hash, "subject": "user-42",
                "display_name": "Nurse Joy"}],
            "limits": limits,
        });
        let s = TestServer::start(&toml::to_string(&doc).unwrap()).await;
        World {
            s,
            key,
            n: Default::default(),
        }
    }

    fn assertion(&self, endpoint: &str) -> String {
        self.assertion_of("conf", endpoint)
    }

    fn assertion_of(&self, client: &str, endpoint: &str) -> String {
        let n = self.n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = now();
        sign_jwt(
            &self.key,
            None,
            json!({"iss": client, "sub": client, "aud": format!("{}{endpoint}", self.s.issuer),
                "iat": t, "exp": t + 60, "jti": format!("catalog-{n}-{t}")})
            .as_object()
            .unwrap(),
        )
        .unwrap()
    }

    fn par_fields(&self) -> Vec<(String, String)> {
        let challenge = CodeChallenge::for_verifier(VERIFIER);
        [
            ("client_id", "conf"),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("scope", "openid patient/Observation.rs"),
            ("state", "st"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    async fn post(&self, path: &str, fields: &[(String, String)]) -> Resp {
        let f: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (&**k, &**v)).collect();
        self.s.form(path, &f, None).await
    }

    fn auth(&self, endpoint: &str) -> Vec<(String, String)> {
        vec![
            ("client_assertion_type".into(), ASSERTION_TYPE.into()),
            ("client_assertion".into(), self.assertion(endpoint)),
        ]
    }

    async fn client_credentials(&self) -> String {
        let mut f = vec![
            ("grant_type".to_owned(), "client_credentials".to_owned()),
            ("scope".into(), "system/Patient.r".into()),
        ];
        f.extend(self.auth("/token"));
        let r = self.post("/token", &f).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["access_token"].as_str().unwrap().to_owned()
    }

    async fn userinfo_status(&self, token: &str) -> u16 {
        let auth = format!("Bearer {token}");
        self.s
            .send(
                "GET",
                "/userinfo",
                &[("authorization", &auth)],
                Vec::new(),
                None,
            )
            .await
            .status
    }
}

#[track_caller]
fn assert_error(r: &Resp, status: u16, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_eq!(r.json()["error"], code, "{what}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
}

/// THREATS P2: PAR without client authentication, or with a broken one, from a
/// confidential client: 401 `invalid_client` with a challenge, and no request_uri.
#[tokio::test(flavor = "multi_thread")]
async fn p2_par_without_client_authentication_is_invalid_client() {
    let w = World::start().await;
    let plain = w.par_fields();
    let r = w.post("/par", &plain).await;
    assert_error(&r, 401, "invalid_client", "no authentication");
    assert!(r.header("www-authenticate").is_some());
    assert!(r.json().get("request_uri").is_none());
    // An unsigned assertion is no authentication either.
    let mut f = plain.clone();
    f.push(("client_assertion_type".into(), ASSERTION_TYPE.into()));
    f.push(("client_assertion".into(), "e30.e30.".into()));
    let r = w.post("/par", &f).await;
    assert_error(&r, 401, "invalid_client", "alg none assertion");
    // Authenticated, the same request is pushed.
    let mut f = plain;
    f.extend(w.auth("/par"));
    let r = w.post("/par", &f).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r.json()["request_uri"].is_string());
    w.s.stop().await;
}

/// THREATS P19, the flood half (RFC 9126 §2.3): pushes beyond a client's quota are 429
/// with `Retry-After` and no request_uri; pushes that fail authentication do not spend
/// the quota of the client they name; another client is not held back.
#[tokio::test(flavor = "multi_thread")]
async fn p19_a_par_flood_by_one_client_is_429_and_other_clients_go_on() {
    let w = World::start_with(json!({"par_per_client_per_minute": 5})).await;
    // Unauthenticated pushes naming "conf": refused, and not counted against "conf".
    for _ in 0..10 {
        let r = w.post("/par", &w.par_fields()).await;
        assert_error(&r, 401, "invalid_client", "no authentication");
    }
    let push = |client: &'static str| {
        let mut f: Vec<(String, String)> = w
            .par_fields()
            .into_iter()
            .map(|(k, v)| {
                if k == "client_id" {
                    (k, client.to_owned())
                } else {
                    (k, v)
                }
            })
            .collect();
        f.push(("client_assertion_type".into(), ASSERTION_TYPE.into()));
        f.push(("client_assertion".into(), w.assertion_of(client, "/par")));
        f
    };
    for i in 0..5 {
        let r = w.post("/par", &push("conf")).await;
        assert_eq!(r.status, 201, "push {i} within the quota: {}", r.text());
    }
    for _ in 0..3 {
        let r = w.post("/par", &push("conf")).await;
        assert_error(&r, 429, "invalid_request", "over the quota");
        assert!(r.json().get("request_uri").is_none());
        let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "Retry-After {wait}");
    }
    // Another client is not locked out by "conf"'s flood.
    let r = w.post("/par", &push("conf2")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    w.s.stop().await;
}

/// With the quota off (0), the same pushes all succeed.
#[tokio::test(flavor = "multi_thread")]
async fn p19_a_par_quota_of_zero_is_no_limit() {
    let w = World::start_with(json!({"par_per_client_per_minute": 0})).await;
    for i in 0..12 {
        let mut f = w.par_fields();
        f.extend(w.auth("/par"));
        let r = w.post("/par", &f).await;
        assert_eq!(r.status, 201, "push {i}: {}", r.text());
    }
    w.s.stop().await;
}

/// THREATS P19, the size half: a 1 MB request object is refused with 413 before it is
/// read (the body limit).
#[tokio::test(flavor = "multi_thread")]
async fn p19_a_1_mb_request_object_is_413() {
    let w = World::start().await;
    let big = "a".repeat(1 << 20);
    let body = format!("client_id=conf&request={big}");
    let head = format!(
        "POST /par HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let conn = w.s.raw_tls(&[b"http/1.1"]).await;
    let (mut rd, mut wr) = tokio::io::split(conn);
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(body.as_bytes()).await;
        std::future::pending::<()>().await;
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline.into(), rd.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    writer.abort();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    w.s.stop().await;
}

/// THREATS A17: every page a user sees (the error page, sign-in, consent, the CIBA
/// approval page) forbids framing.
#[tokio::test(flavor = "multi_thread")]
async fn a17_pages_cannot_be_framed() {
    let w = World::start().await;
    let s = &w.s;
    #[track_caller]
    fn assert_unframeable(r: &Resp, what: &str) {
        assert!(
            r.header("content-type").unwrap().starts_with("text/html"),
            "{what}"
        );
        let csp = r.header("content-security-policy").unwrap_or("");
        assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}");
    }
    // An error page: an unknown client.
    let r = s
        .get("/authorize?client_id=nobody&response_type=code")
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_unframeable(&r, "error page");
    // The sign-in page of a front-channel request.
    let challenge = CodeChallenge::for_verifier(VERIFIER);
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", "smart-app")
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", "openid")
        .append_pair("state", "st")
        .append_pair("code_challenge", challenge.as_str())
        .append_pair("code_challenge_method", "S256")
        .finish();
    let r = s.get(&format!("/authorize?{q}")).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let login = s.get(r.header("location").unwrap()).await;
    assert_eq!(login.status, 200, "{}", login.text());
    assert_unframeable(&login, "sign-in page");
    // The consent page, after signing in.
    let pre = cookie_pair(login.header("set-cookie").unwrap(), "__Host-hg_pre").unwrap();
    let html = login.text();
    let ok = s
        .form_with(
            "/login",
            &[
                ("interaction", &hidden_input(&html, "interaction").unwrap()),
                ("csrf", &hidden_input(&html, "csrf").unwrap()),
                ("username", "nurse"),
                ("password", PASSWORD),
            ],
            &[("cookie", &pre)],
            None,
        )
        .await;
    assert_eq!(ok.status, 303, "{}", ok.text());
    let session = cookie_pair(ok.header("set-cookie").unwrap(), "__Host-hg_session").unwrap();
    let page = s
        .send(
            "GET",
            ok.header("location").unwrap(),
            &[("cookie", &session)],
            Vec::new(),
            None,
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("name=\"decision\""), "a consent page");
    assert_unframeable(&page, "consent page");
    // The CIBA approval page.
    let r = s.get("/ciba").await;
    assert_eq!(r.status, 200);
    assert_unframeable(&r, "CIBA approval page");
    w.s.stop().await;
}

/// RFC 6749 §5.2: `error_description` is %x20-21 / %x23-5B / %x5D-7E.
#[track_caller]
fn assert_clean_description(d: &str, what: &str) {
    assert!(
        d.bytes()
            .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E)),
        "{what}: {d:?}"
    );
    for reflected in ["<script", "alert(1)", "pwned", "Set-Cookie"] {
        assert!(!d.contains(reflected), "{what} reflects input: {d:?}");
    }
}

/// THREATS A18: hostile values (markup, quotes, backslash, CRLF) in every parameter of
/// the back-channel endpoints and of the authorization endpoint: no error description
/// repeats them or leaves the RFC 6749 character set, no header is injected, and the
/// error page does not render them as markup.
#[tokio::test(flavor = "multi_thread")]
async fn a18_error_descriptions_reflect_no_input() {
    let w = World::start().await;
    let names = [
        "grant_type",
        "client_id",
        "scope",
        "redirect_uri",
        "code",
        "code_verifier",
        "refresh_token",
        "token",
        "token_type_hint",
        "request",
        "response_type",
        "state",
        "client_assertion",
        "client_assertion_type",
        "login_hint",
        "binding_message",
    ];
    let mut seen = 0;
    for path in ["/token", "/par", "/introspect", "/revoke", "/bc-authorize"] {
        for name in names {
            // One hostile parameter in an otherwise well-formed, authenticated request.
            let mut f: Vec<(String, String)> = vec![
                ("grant_type".into(), "client_credentials".into()),
                ("client_id".into(), "conf".into()),
            ];
            f.retain(|(k, _)| k != name);
            f.push((name.into(), HOSTILE.into()));
            if name != "client_assertion" && name != "client_assertion_type" {
                // The issuer as audience: accepted at every endpoint (C2, non-FAPI).
                f.extend(w.auth(""));
            }
            let r = w.post(path, &f).await;
            let what = format!("{path} {name}");
            assert!(!r.headers.values().any(|v| v.contains("pwned")), "{what}");
            if r.status >= 400 {
                let body: Value = r.json();
                if let Some(d) = body["error_description"].as_str() {
                    assert_clean_description(d, &what);
                    seen += 1;
                }
                assert!(!r.text().contains("<script"), "{what}: {}", r.text());
            }
        }
    }
    assert!(seen > 20, "only {seen} error descriptions looked at");
    // The authorization endpoint: redirect errors and the error page.
    for name in [
        "scope",
        "response_type",
        "code_challenge",
        "prompt",
        "state",
    ] {
        let challenge = CodeChallenge::for_verifier(VERIFIER);
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("client_id", "smart-app"),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("scope", "openid"),
            ("state", "st"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("prompt", "none"),
        ] {
            q.append_pair(k, if k == name { HOSTILE } else { v });
        }
        let r = w.s.get(&format!("/authorize?{}", q.finish())).await;
        // `state` comes back percent-encoded in the Location (A8); nowhere else.
        assert!(
            !r.headers
                .iter()
                .any(|(k, v)| k != "location" && v.contains("pwned")),
            "/authorize {name}: a header injected"
        );
        if let Some(location) = r.header("location") {
            if let Some(d) = url_param(location, "error_description") {
                assert_clean_description(&d, &format!("/authorize {name}"));
            }
            if name == "state" {
                // state is echoed exactly (A8), percent-encoded in the URL, never raw.
                assert!(!location.contains('<') && !location.contains('\n'));
            }
        } else {
            assert!(!r.text().contains("<script"), "/authorize {name}");
        }
    }
    // An untrusted client_id and redirect_uri: the error page escapes them, if shown.
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", HOSTILE)
        .append_pair("redirect_uri", HOSTILE)
        .finish();
    let r = w.s.get(&format!("/authorize?{q}")).await;
    assert!(r.status >= 400);
    assert!(!r.text().contains("<script"), "{}", r.text());
    w.s.stop().await;
}

/// THREATS V3: an unknown `token_type_hint` does not stop revocation (RFC 7009 §2.1: the
/// server may ignore the hint): 200, and the token is revoked.
#[tokio::test(flavor = "multi_thread")]
async fn v3_unknown_token_type_hint_still_revokes() {
    let w = World::start().await;
    for hint in ["foo", "refresh_token", ""] {
        let token = w.client_credentials().await;
        // Active: userinfo accepts it (and refuses for want of `openid`).
        assert_eq!(w.userinfo_status(&token).await, 403);
        let mut f = vec![
            ("token".to_owned(), token.clone()),
            ("token_type_hint".into(), hint.into()),
        ];
        f.extend(w.auth(""));
        let r = w.post("/revoke", &f).await;
        assert_eq!(r.status, 200, "hint {hint:?}: {}", r.text());
        assert_eq!(w.userinfo_status(&token).await, 401, "hint {hint:?}");
    }
    w.s.stop().await;
}

// ---------------------------------------------------------------------------------------
// M9: hostile TLS handshakes

/// A ClientHello record: `version` in the record and the hello, the cipher `suites`,
/// and optionally the TLS 1.3 `supported_versions` extension.
fn client_hello(version: [u8; 2], suites: &[u16]) -> Vec<u8> {
    let mut hello = Vec::new();
    hello.extend(version);
    hello.extend([7u8; 32]); // random
    hello.push(0); // no session id
    let s: Vec<u8> = suites.iter().flat_map(|s| s.to_be_bytes()).collect();
    hello.extend(u16::try_from(s.len()).unwrap().to_be_bytes());
    hello.extend(s);
    hello.extend([1, 0]); // null compression only
                          // supported_groups (x25519, P-256), ec_point_formats, signature_algorithms.
    let mut ext = Vec::new();
    ext.extend([0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]);
    ext.extend([0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    ext.extend([0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x08, 0x04]);
    hello.extend(u16::try_from(ext.len()).unwrap().to_be_bytes());
    hello.extend(ext);
    let mut hs = vec![0x01];
    hs.extend(&u32::try_from(hello.len()).unwrap().to_be_bytes()[1..]);
    hs.extend(hello);
    let mut record = vec![0x16];
    record.extend(version);
    record.extend(u16::try_from(hs.len()).unwrap().to_be_bytes());
    record.extend(hs);
    record
}

/// Send `bytes` on a bare TCP connection; what the server sent back before it closed
/// (closing within 5 s is asserted).
async fn handshake_bytes(s: &TestServer, bytes: &[u8], then_close: bool) -> Vec<u8> {
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    if then_close {
        let _ = tcp.shutdown().await;
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline.into(), tcp.read(&mut buf)).await {
            Err(_) => panic!("the server kept the connection open: {got:02x?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// BCP 195 (RFC 9325 §4.2): the server picks the TLS 1.3 suite by its own order, not the
/// client's. rustls' default client order puts AES-256-GCM/SHA-384 first; the server
/// answers with AES-128-GCM/SHA-256 (SHA-256 runs on the CPU's SHA extensions), and a
/// client offering only ChaCha20-Poly1305 still gets it.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_chooses_the_tls13_suite_by_its_own_order() {
    use rustls::crypto::ring::cipher_suite as cs;
    let w = World::start().await;
    let tls = w.s.raw_tls(&[b"http/1.1"]).await;
    let (_, conn) = tls.get_ref();
    assert_eq!(
        conn.negotiated_cipher_suite().map(|s| s.suite()),
        Some(cs::TLS13_AES_128_GCM_SHA256.suite()),
        "the client preferred {:?}",
        rustls::crypto::ring::default_provider().cipher_suites[0].suite()
    );
    let chacha =
        w.s.raw_tls_with_suites(&[b"http/1.1"], vec![cs::TLS13_CHACHA20_POLY1305_SHA256])
            .await;
    assert_eq!(
        chacha
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .map(|s| s.suite()),
        Some(cs::TLS13_CHACHA20_POLY1305_SHA256.suite())
    );
}

/// RFC 8446 §2.2: a returning client resumes its session (no certificate signature or
/// chain check again), also after many other clients came and went: more than 256
/// sessions in between (rustls' default session cache, full after ~128 connections) and
/// it still resumes, as the server's tickets are encrypted, not kept (`tls.rs`).
#[tokio::test(flavor = "multi_thread")]
async fn a_returning_client_resumes_its_tls_session_after_hundreds_of_others() {
    use rustls::HandshakeKind;
    let w = World::start().await;
    async fn healthz(
        w: &World,
        cfg: &std::sync::Arc<rustls::ClientConfig>,
    ) -> Option<HandshakeKind> {
        let mut tls = w.s.tls_connect(cfg.clone()).await;
        let kind = tls.get_ref().1.handshake_kind();
        tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: h\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        // Reading to the end takes in the session tickets sent after the handshake.
        let mut got = Vec::new();
        let _ = tls.read_to_end(&mut got).await;
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
        kind
    }
    let returning = w.s.client_tls();
    assert_eq!(healthz(&w, &returning).await, Some(HandshakeKind::Full));
    assert_eq!(healthz(&w, &returning).await, Some(HandshakeKind::Resumed));
    for _ in 0..300 {
        assert_eq!(
            healthz(&w, &w.s.client_tls()).await,
            Some(HandshakeKind::Full)
        );
    }
    assert_eq!(
        healthz(&w, &returning).await,
        Some(HandshakeKind::Resumed),
        "the session was evicted by 300 other clients' sessions"
    );
}

/// THREATS M9: TLS 1.0 and 1.1 ClientHellos, a TLS 1.2 one offering only suites outside
/// BCP 195 (RSA key exchange, CBC, 3DES, RC4), and a close_notify straight after a
/// ClientHello are refused: an alert or a bare close, never a ServerHello, and the
/// server goes on serving. A ClientHello split into many small records is fine.
#[tokio::test(flavor = "multi_thread")]
async fn m9_old_protocols_weak_suites_and_odd_handshakes_are_refused() {
    let w = World::start().await;
    let s = &w.s;
    let modern = [0xc02b, 0xc02f, 0xcca8, 0xcca9];
    let weak = [0x002f, 0x0035, 0x009c, 0x000a, 0x0005, 0xc013, 0xc027];
    for (what, hello) in [
        ("TLS 1.0", client_hello([3, 1], &modern)),
        ("TLS 1.1", client_hello([3, 2], &modern)),
        ("TLS 1.2, weak suites only", client_hello([3, 3], &weak)),
        ("SSL 3.0", client_hello([3, 0], &modern)),
    ] {
        let got = handshake_bytes(s, &hello, false).await;
        assert!(
            got.is_empty() || got[0] == 0x15,
            "{what}: not an alert: {:02x?}",
            &got[..got.len().min(16)]
        );
    }
    // close_notify right after a ClientHello.
    let mut bytes = client_hello([3, 3], &modern);
    bytes.extend([0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00]);
    let got = handshake_bytes(s, &bytes, true).await;
    assert!(got.len() < 16 * 1024, "{} bytes", got.len());
    // Garbage where a ClientHello should be.
    let got = handshake_bytes(s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false).await;
    assert!(!String::from_utf8_lossy(&got).contains("200"), "{got:02x?}");

    // A ClientHello fragmented into 64-byte records: a legal handshake.
    let mut cfg = (*s.client_tls()).clone();
    cfg.max_fragment_size = Some(64);
    // (`tls_connect` panics if the fragmented ClientHello does not complete.)
    let mut t = s.tls_connect(std::sync::Arc::new(cfg)).await;
    t.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), t.read_to_end(&mut out)).await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    let r = tokio::time::timeout(Duration::from_secs(5), s.get("/healthz"))
        .await
        .expect("still serving");
    assert_eq!(r.status, 200);
    w.s.stop().await;
}
