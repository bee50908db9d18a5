//! Clock faults (THREATS S9, S10; issue 9 "fault injection"): a server on the embedded
//! store holds a pending PAR request_uri, an unredeemed code, a pending CIBA request, an
//! access token and a refresh token; it is killed with SIGKILL and started again on the
//! same data directory under `faketime` (libfaketime, Debian's `faketime`), its wall clock
//! an hour ahead or an hour behind.
//!
//! - +10 min, then +1 h (S9): everything short-lived has expired — the request_uri is
//!   refused at `/authorize` (`invalid_request_uri`), the code is `invalid_grant`, the
//!   CIBA request `expired_token` (and, past its 10-minute retention, unknown:
//!   `invalid_grant`), the access token introspects inactive — while the refresh token
//!   (24 h) still works once; no 5xx, no panic.
//! - −1 h (S10): nothing expires early — the request_uri is still usable, the code
//!   redeems exactly once, the CIBA request is still pending; assertions the server now
//!   sees as issued an hour in the future are refused (the skew rule, C3).
//!
//! The server runs in a child process (heartgate_e2e::child) under `faketime -m -f ±1h`;
//! tests/run-all installs `faketime`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use heartgate_core::authorize::pkce::CodeChallenge;
use heartgate_core::jose::{sign_jwt, Algorithm, SigningKey};
use heartgate_e2e::child::{spawn_child, ChildServer, ChildSpec};
use heartgate_e2e::{consent, free_port, sign_in, url_param, TestServer};
use serde_json::{json, Value};

const VERIFIER: &str = "clock-verifier-0123456789abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJ";
const CIBA: &str = "urn:openid:params:grant-type:ciba";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const REDIRECT: &str = "https://clinic.example/cb";
const HOUR: i64 = 3600;

/// In the child: serve until killed.
#[test]
#[ignore = "the child process of the clock tests, which run it with --ignored"]
fn clock_child_server() {
    heartgate_e2e::child::serve_child();
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A client with its key; assertions are dated on the server's clock (`skew` seconds
/// from ours).
struct Client {
    id: &'static str,
    key: SigningKey,
    n: std::sync::atomic::AtomicU32,
}

impl Client {
    fn assertion(&self, s: &TestServer, skew: i64) -> String {
        let n = self.n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = now() + skew;
        sign_jwt(
            &self.key,
            None,
            json!({"iss": self.id, "sub": self.id, "aud": format!("{}/token", s.issuer),
                "iat": t, "exp": t + 60, "jti": format!("{}-{n}-{t}", self.id)})
            .as_object()
            .unwrap(),
        )
        .unwrap()
    }

    async fn post(
        &self,
        s: &TestServer,
        skew: i64,
        path: &str,
        fields: &[(&str, &str)],
    ) -> (u16, Value) {
        let a = self.assertion(s, skew);
        let mut f = vec![
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", a.as_str()),
        ];
        f.extend_from_slice(fields);
        let r = s.form(path, &f, None).await;
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }

    async fn push(&self, s: &TestServer, skew: i64) -> String {
        let ch = CodeChallenge::for_verifier(VERIFIER);
        let (st, v) = self
            .post(
                s,
                skew,
                "/par",
                &[
                    ("response_type", "code"),
                    ("redirect_uri", REDIRECT),
                    ("scope", "offline_access user/Observation.rs"),
                    ("code_challenge", ch.as_str()),
                    ("code_challenge_method", "S256"),
                ],
            )
            .await;
        assert_eq!(st, 201, "{v}");
        v["request_uri"].as_str().unwrap().to_owned()
    }

    async fn redeem(&self, s: &TestServer, skew: i64, code: &str) -> (u16, Value) {
        self.post(
            s,
            skew,
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ],
        )
        .await
    }
}

struct Setup {
    app: Client,
    clinic: Client,
    config: String,
}

fn setup() -> Setup {
    let app = SigningKey::generate(Algorithm::ES256).unwrap();
    let clinic = SigningKey::generate(Algorithm::ES256).unwrap();
    let hash = heartgate_server::users::hash_password("correct horse battery").unwrap();
    let config = toml::to_string(&json!({
        "clients": [
            {"client_id": "app", "profile": "smart", "redirect_uris": [REDIRECT],
             "token_endpoint_auth_method": "private_key_jwt",
             "jwks": {"keys": [app.verifying_key().to_jwk()]},
             "grant_types": ["authorization_code", "refresh_token"],
             "access_token_format": "opaque"},
            {"client_id": "clinic", "profile": "smart",
             "token_endpoint_auth_method": "private_key_jwt",
             "jwks": {"keys": [clinic.verifying_key().to_jwk()]},
             "grant_types": [CIBA], "backchannel_token_delivery_mode": "poll",
             "scope": "openid patient/Observation.rs"},
        ],
        "users": [{"username": "nurse", "password_hash": hash, "subject": "user-42"}],
    }))
    .unwrap();
    let mk = |id, key| Client {
        id,
        key,
        n: Default::default(),
    };
    Setup {
        app: mk("app", app),
        clinic: mk("clinic", clinic),
        config,
    }
}

/// What the server holds when its clock jumps.
struct Pending {
    request_uri: String,
    code: String,
    auth_req_id: String,
    access_token: String,
    refresh_token: String,
}

async fn code_for(s: &TestServer, request_uri: &str) -> String {
    let signed_in = sign_in(s, "app", request_uri, "nurse", "correct horse battery").await;
    url_param(&consent(s, &signed_in, &[]).await, "code").unwrap()
}

async fn make_pending(s: &TestServer, u: &Setup) -> Pending {
    let request_uri = u.app.push(s, 0).await;
    let ru = u.app.push(s, 0).await;
    let code = code_for(s, &ru).await;
    let ru = u.app.push(s, 0).await;
    let (st, t) = u.app.redeem(s, 0, &code_for(s, &ru).await).await;
    assert_eq!(st, 200, "{t}");
    let (st, c) = u
        .clinic
        .post(
            s,
            0,
            "/bc-authorize",
            &[("scope", "openid"), ("login_hint", "nurse")],
        )
        .await;
    assert_eq!(st, 200, "{c}");
    Pending {
        request_uri,
        code,
        auth_req_id: c["auth_req_id"].as_str().unwrap().to_owned(),
        access_token: t["access_token"].as_str().unwrap().to_owned(),
        refresh_token: t["refresh_token"].as_str().unwrap().to_owned(),
    }
}

/// The environment that puts a process under libfaketime (Debian's `faketime` package)
/// with its clock moved by `offset` (`+1h`, `-10m`...).
fn faketime(offset: &str) -> Vec<(String, String)> {
    let lib = format!(
        "/usr/lib/{}-linux-gnu/faketime/libfaketimeMT.so.1",
        std::env::consts::ARCH
    );
    assert!(
        std::path::Path::new(&lib).exists(),
        "{lib} is needed (Debian: apt-get install faketime; tests/run-all installs it)"
    );
    vec![
        ("LD_PRELOAD".into(), lib),
        ("FAKETIME".into(), offset.into()),
        // Timers and timeouts keep the real monotonic clock; only the wall clock jumps.
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ]
}

/// Start the child on `dir`/`port`, under faketime when `offset` is given.
fn start(u: &Setup, dir: &str, port: u16, offset: Option<&str>) -> (ChildServer, TestServer) {
    let spec = ChildSpec {
        dir: dir.to_owned(),
        config: u.config.clone(),
        port,
        store: "embedded".into(),
        env: offset.map(faketime).unwrap_or_default(),
    };
    let child = spawn_child("clock_child_server", &spec);
    (child, TestServer::connect(dir, port))
}

async fn authorize_status(s: &TestServer, request_uri: &str) -> (u16, String) {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", "app")
        .append_pair("request_uri", request_uri)
        .finish();
    let r = s.get(&format!("/authorize?{q}")).await;
    (r.status, r.text())
}

/// S9: the server's clock jumps ahead across SIGKILL restarts — 10 minutes, then an hour.
#[tokio::test(flavor = "multi_thread")]
async fn s9_clock_ahead_every_short_lived_item_expires_and_nothing_breaks() {
    const TEN_MINUTES: i64 = 600;
    let u = setup();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().display().to_string();
    let port = free_port();
    let (mut child, s) = start(&u, &dir, port, None);
    let p = make_pending(&s, &u).await;
    child.sigkill();

    let (mut child, s) = start(&u, &dir, port, Some("+10m"));
    // Dated on our clock, assertions are already expired on the server's (C3/C4).
    let (st, e) = u
        .clinic
        .post(
            &s,
            0,
            "/token",
            &[("grant_type", CIBA), ("auth_req_id", &p.auth_req_id)],
        )
        .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (401, Some("invalid_client")),
        "{e}"
    );
    // Dated on the server's clock from here on.
    let (st, text) = authorize_status(&s, &p.request_uri).await;
    assert_eq!(st, 400);
    assert!(text.contains("invalid_request_uri"), "{text}");
    let (st, e) = u.app.redeem(&s, TEN_MINUTES, &p.code).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );
    // Past its expiry but within the record's retention: `expired_token` (B4).
    let (st, e) = u
        .clinic
        .post(
            &s,
            TEN_MINUTES,
            "/token",
            &[("grant_type", CIBA), ("auth_req_id", &p.auth_req_id)],
        )
        .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("expired_token")),
        "{e}"
    );
    let (st, i) = u
        .app
        .post(
            &s,
            TEN_MINUTES,
            "/introspect",
            &[("token", &p.access_token)],
        )
        .await;
    assert_eq!((st, i), (200, json!({"active": false})));
    assert_eq!(s.get("/healthz").await.status, 200);
    child.sigkill();

    let (_child, s) = start(&u, &dir, port, Some("+1h"));
    // Past the retention too: the request is unknown now (CIBA §11 `invalid_grant`).
    let (st, e) = u
        .clinic
        .post(
            &s,
            HOUR,
            "/token",
            &[("grant_type", CIBA), ("auth_req_id", &p.auth_req_id)],
        )
        .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );
    // The refresh token (24 h) has not expired: it works, once.
    let refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", p.refresh_token.as_str()),
    ];
    let (st, t) = u.app.post(&s, HOUR, "/token", &refresh).await;
    assert_eq!(st, 200, "{t}");
    let (st, i) = u
        .app
        .post(
            &s,
            HOUR,
            "/introspect",
            &[("token", t["access_token"].as_str().unwrap())],
        )
        .await;
    assert_eq!((st, &i["active"]), (200, &json!(true)), "{i}");
    assert_eq!(s.get("/healthz").await.status, 200);
}

/// S10: the server's clock jumps an hour behind across a SIGKILL restart.
#[tokio::test(flavor = "multi_thread")]
async fn s10_an_hour_behind_nothing_expires_early_and_future_dated_assertions_are_refused() {
    let u = setup();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().display().to_string();
    let port = free_port();
    let (mut child, s) = start(&u, &dir, port, None);
    let p = make_pending(&s, &u).await;
    child.sigkill();

    let (_child, s) = start(&u, &dir, port, Some("-1h"));
    // Dated on our clock, an assertion is an hour in the server's future: refused (C3).
    let (st, e) = u
        .app
        .post(&s, 0, "/introspect", &[("token", &p.access_token)])
        .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (401, Some("invalid_client")),
        "{e}"
    );

    // Nothing pending has expired early.
    let (st, text) = authorize_status(&s, &p.request_uri).await;
    assert_eq!(st, 303, "the request_uri is still usable: {text}");
    let (st, t) = u.app.redeem(&s, -HOUR, &p.code).await;
    assert_eq!(st, 200, "the code still redeems: {t}");
    let (st, e) = u.app.redeem(&s, -HOUR, &p.code).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "and only once: {e}"
    );
    let (st, e) = u
        .clinic
        .post(
            &s,
            -HOUR,
            "/token",
            &[("grant_type", CIBA), ("auth_req_id", &p.auth_req_id)],
        )
        .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("authorization_pending")),
        "{e}"
    );
    assert_eq!(s.get("/healthz").await.status, 200);
}
