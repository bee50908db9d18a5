//! The listener's limits: a client that dribbles its TLS handshake or headers is cut off
//! (slowloris, THREATS H2), connections beyond the cap wait until one closes (H16), and
//! /metrics reports what happened. More of H2 and H16 in http_hostile.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::net::IpAddr;

use heartgate_e2e::{cookie_pair, hidden_input, TestServer};
use heartgate_server::app::{LoginFailure, User, Users};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMITS: &str = "[limits]\nheader_read_timeout_ms = 500\nmax_connections = 2\n";
/// Idle connections are closed after the header timeout (H16): a longer one here, so the
/// two held connections keep their slots while the test looks.
const CAP: &str = "[limits]\nheader_read_timeout_ms = 5000\nmax_connections = 2\n";

fn tls(s: &TestServer) -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(s.client_tls())
}

#[tokio::test(flavor = "multi_thread")]
async fn h2_slowloris_handshakes_and_headers_are_cut_off() {
    let s = TestServer::start(LIMITS).await;
    // A TCP connection that never starts TLS.
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("closed by the server")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(start.elapsed() < Duration::from_secs(3));

    // TLS done, then headers one byte at a time, slower than the header timeout.
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let mut conn = tls(&s)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let start = Instant::now();
    let mut cut = false;
    for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter() {
        if conn.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if start.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    if !cut {
        let mut rest = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(3), conn.read_to_end(&mut rest)).await;
        cut = matches!(r, Ok(Ok(_)) | Ok(Err(_)));
    }
    assert!(cut, "the dribbling client was disconnected");
    assert!(start.elapsed() < Duration::from_secs(5));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn h16_connections_beyond_the_cap_wait_for_one_to_close() {
    let s = TestServer::start(CAP).await;
    // Two idle keep-alive connections take both slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let c = tls(&s)
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        held.push(c);
    }
    let waiting = tokio::time::timeout(Duration::from_millis(800), s.get("/healthz")).await;
    assert!(
        waiting.is_err(),
        "a third connection is not served while two are open"
    );
    drop(held.pop());
    let served = tokio::time::timeout(Duration::from_secs(5), s.get("/healthz"))
        .await
        .expect("served once a slot is free");
    assert_eq!(served.status, 200);
    drop(held);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_report_requests_latency_tokens_and_failures() {
    let s = TestServer::start("").await;
    assert_eq!(s.get("/healthz").await.status, 200);
    let r = s
        .form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "nobody"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 401);
    let m = s.get("/metrics").await;
    assert_eq!(m.status, 200);
    let text = m.text();
    for line in [
        "heartgate_requests_total{endpoint=\"healthz\",status=\"200\"} 1",
        "heartgate_requests_total{endpoint=\"token\",status=\"401\"} 1",
        "heartgate_client_auth_failures_total{endpoint=\"token\"} 1",
        "heartgate_request_duration_seconds_count{endpoint=\"token\"} 1",
        "heartgate_tokens_issued_total{format=\"jwt\"} 0",
        "heartgate_introspection_cache_hit_ratio",
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
    s.stop().await;
}

/// A [`Users`] whose password and user-code checks wait at a gate the test opens, then ask the real
/// users. `timed_out` says that a check gave up waiting (5 s) before the gate opened.
#[derive(Default)]
struct Gate {
    inner: std::sync::OnceLock<Arc<dyn Users>>,
    entered: std::sync::atomic::AtomicBool,
    timed_out: std::sync::atomic::AtomicBool,
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
}

struct GatedUsers(Arc<Gate>);

impl Gate {
    /// Say a check has started, then wait until the test opens the gate (5 s at most).
    fn pass(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.entered.store(true, SeqCst);
        let open = self.open.lock().unwrap();
        let (_open, waited) = self
            .opened
            .wait_timeout_while(open, Duration::from_secs(5), |o| !*o)
            .unwrap();
        if waited.timed_out() {
            self.timed_out.store(true, SeqCst);
        }
    }

    /// Once a `what` check has reached the gate, `/healthz` must be answered while it is
    /// held there (the check does not occupy the server's worker); then open the gate.
    async fn healthz_is_answered_while_held(&self, s: &TestServer, what: &str) {
        use std::sync::atomic::Ordering::SeqCst;
        let start = Instant::now();
        while !self.entered.load(SeqCst) {
            assert!(start.elapsed() < Duration::from_secs(10), "no {what} check");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let health = s.get("/healthz").await;
        assert_eq!(health.status, 200);
        assert!(
            !self.timed_out.load(SeqCst),
            "/healthz was answered only after the {what} check gave up: the check held the server's worker"
        );
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// A server whose users' password and user-code checks wait at the returned gate.
async fn gated_server(toml: &str) -> (TestServer, Arc<Gate>) {
    let gate = Arc::new(Gate::default());
    let g = gate.clone();
    let s = TestServer::start_adjusted(toml, move |app| {
        let _ = g.inner.set(app.users.clone());
        app.users = Arc::new(GatedUsers(g));
    })
    .await;
    (s, gate)
}

impl Users for GatedUsers {
    fn login(
        &self,
        username: &str,
        password: &str,
        ip: IpAddr,
        now: i64,
    ) -> Result<User, LoginFailure> {
        self.0.pass();
        self.0
            .inner
            .get()
            .unwrap()
            .login(username, password, ip, now)
    }
    fn by_subject(&self, subject: &str) -> Option<User> {
        self.0.inner.get().unwrap().by_subject(subject)
    }
    fn by_username(&self, username: &str) -> Option<User> {
        self.0.inner.get().unwrap().by_username(username)
    }
    fn verify_user_code(&self, subject: &str, code: &str, now: i64) -> bool {
        self.0.pass();
        self.0
            .inner
            .get()
            .unwrap()
            .verify_user_code(subject, code, now)
    }
}

/// Password checks (argon2id: tens of milliseconds of a core each) run off the async
/// workers: while one is in progress, other requests are answered. On a one-thread
/// runtime a check run on the worker holds the whole server until it ends; here it
/// holds nothing (a burst of sign-ins, or of guesses, must not stall token and
/// introspection traffic).
#[tokio::test(flavor = "current_thread")]
async fn a_password_check_in_progress_does_not_hold_other_requests() {
    let hash = heartgate_server::users::hash_password("gate-keeper-pw").unwrap();
    let users = format!(
        "[[users]]\nusername = \"nurse\"\nsubject = \"nurse-1\"\npassword_hash = \"{hash}\"\n"
    );
    let (s, gate) = gated_server(&users).await;
    let page = s.get("/ciba").await;
    let pre = cookie_pair(page.header("set-cookie").unwrap(), "__Host-hg_pre").unwrap();
    let csrf = hidden_input(&page.text(), "csrf").unwrap();
    let client = s.clone_client();
    let sign_in = tokio::spawn(async move {
        let fields = [
            ("csrf", csrf.as_str()),
            ("username", "nurse"),
            ("password", "gate-keeper-pw"),
        ];
        client
            .form_with("/ciba/login", &fields, &[("cookie", &pre)], None)
            .await
            .status
    });
    gate.healthz_is_answered_while_held(&s, "password").await;
    assert_eq!(sign_in.await.unwrap(), 303, "the sign-in itself succeeds");
    s.stop().await;
}

/// The same for a CIBA user code (checked against its argon2id hash like a password):
/// while a `/bc-authorize` with a `user_code` is being checked, other requests are
/// answered, on a one-thread runtime.
#[tokio::test(flavor = "current_thread")]
async fn a_user_code_check_in_progress_does_not_hold_other_requests() {
    use heartgate_core::jose::{sign_jwt, Algorithm, SigningKey};
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let code_hash = heartgate_server::users::hash_password("2468-1357").unwrap();
    let password_hash = heartgate_server::users::hash_password("gate-keeper-pw").unwrap();
    let doc = serde_json::json!({
        "clients": [{"client_id": "kiosk", "profile": "smart",
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [key.verifying_key().to_jwk()]},
            "grant_types": ["urn:openid:params:grant-type:ciba"],
            "backchannel_token_delivery_mode": "poll",
            "backchannel_user_code_parameter": true}],
        "users": [{"username": "jane", "password_hash": password_hash,
            "subject": "patient-1", "ciba_user_code_hash": code_hash}],
    });
    let (s, gate) = gated_server(&toml::to_string(&doc).unwrap()).await;
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let assertion = sign_jwt(
        &key,
        None,
        serde_json::json!({"iss": "kiosk", "sub": "kiosk", "aud": s.issuer,
            "iat": t, "exp": t + 60, "jti": "gate-1"})
        .as_object()
        .unwrap(),
    )
    .unwrap();
    let client = s.clone_client();
    let start_request = tokio::spawn(async move {
        let fields = [
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
            ("scope", "openid"),
            ("login_hint", "jane"),
            ("user_code", "2468-1357"),
        ];
        let r = client.form("/bc-authorize", &fields, None).await;
        (r.status, r.text())
    });
    gate.healthz_is_answered_while_held(&s, "user code").await;
    let (status, body) = start_request.await.unwrap();
    assert_eq!(status, 200, "the request itself starts: {body}");
    s.stop().await;
}

/// Send `n` GET /healthz on one HTTP/1.1 keep-alive connection, one after another.
async fn sequential_on_one_connection(s: &TestServer, n: usize) -> Vec<u16> {
    let tls = s.raw_tls(&[b"http/1.1"]).await;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut statuses = Vec::new();
    for _ in 0..n {
        let req = hyper::Request::get("/healthz")
            .header("host", "127.0.0.1")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        statuses.push(resp.status().as_u16());
        http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap();
        tx.ready().await.unwrap();
    }
    statuses
}

/// THREATS §4.5 (abuse under load: a flood of valid requests), H-class: a connection's
/// requests beyond `requests_per_second_per_connection` are paced — served, later — and
/// another connection's requests are not held behind them.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_over_its_request_rate_is_paced_and_others_are_not() {
    let s = TestServer::start(
        "[limits]\nrequests_per_second_per_connection = 10\nrequest_burst_per_connection = 5\n",
    )
    .await;
    // HTTP/1.1: 25 requests at 10/s after a burst of 5 take at least 2 s.
    let start = Instant::now();
    let flood = {
        let c = s.clone_client();
        tokio::spawn(async move { sequential_on_one_connection(&c, 25).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Meanwhile a second connection's five requests go through on its own burst.
    let other = sequential_on_one_connection(&s, 5).await;
    let other_done = start.elapsed();
    assert_eq!(other, vec![200; 5]);
    let flooded = flood.await.unwrap();
    let flood_done = start.elapsed();
    assert_eq!(flooded, vec![200; 25], "paced, never refused");
    assert!(
        flood_done >= Duration::from_millis(1900),
        "25 requests at 10/s with a burst of 5 took {flood_done:?}"
    );
    assert!(
        other_done < flood_done,
        "the other connection ({other_done:?}) waited for the flooding one ({flood_done:?})"
    );

    // HTTP/2: 30 concurrent streams on one connection are paced the same way.
    let tls = s.raw_tls(&[b"h2"]).await;
    let (tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let start = Instant::now();
    let mut streams = Vec::new();
    for _ in 0..30 {
        let mut tx = tx.clone();
        streams.push(tokio::spawn(async move {
            let req = hyper::Request::get(format!("{}/healthz", "https://127.0.0.1"))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            tx.send_request(req).await.unwrap().status().as_u16()
        }));
    }
    for st in streams {
        assert_eq!(st.await.unwrap(), 200);
    }
    let h2_done = start.elapsed();
    assert!(
        h2_done >= Duration::from_millis(2400),
        "30 streams at 10/s with a burst of 5 took {h2_done:?}"
    );
    let m = s.get("/metrics").await.text();
    let paced: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("heartgate_requests_paced_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(paced >= 20 + 25, "paced requests counted: {paced}\n{m}");
    s.stop().await;
}

/// Without the limit (0), the same 25 requests are not paced.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_rate_of_zero_turns_pacing_off() {
    let s = TestServer::start("[limits]\nrequests_per_second_per_connection = 0\n").await;
    assert_eq!(sequential_on_one_connection(&s, 25).await, vec![200; 25]);
    let m = s.get("/metrics").await.text();
    assert!(m.contains("heartgate_requests_paced_total 0\n"), "{m}");
    s.stop().await;
}
