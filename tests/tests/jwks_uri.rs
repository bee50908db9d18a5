//! Clients registered with `jwks_uri`: the server fetches their keys over https under
//! the outbound policy (D2), caches them, and refetches once for an unknown `kid` (J6,
//! key rotation at the client). A loopback `jwks_uri` is refused unless allow-listed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use heartgate_core::jose::{sign_jwt, Algorithm, SigningKey};
use heartgate_e2e::{https_server, Answer, TestCa, TestServer};
use serde_json::json;

/// An https server publishing a JWK Set that the test can change; counts fetches.
async fn jwks_server(ca: &TestCa, doc: Arc<Mutex<String>>, hits: Arc<AtomicUsize>) -> u16 {
    https_server(ca, move |_| {
        hits.fetch_add(1, Ordering::SeqCst);
        let body = doc.lock().unwrap().clone();
        async move { Answer::new(200, body) }
    })
    .await
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn assertion(key: &SigningKey, aud: &str, jti: &str) -> String {
    let t = now();
    sign_jwt(
        key,
        None,
        json!({"iss": "remote", "sub": "remote", "aud": aud, "iat": t, "exp": t + 60, "jti": jti})
            .as_object()
            .unwrap(),
    )
    .unwrap()
}

async fn token(s: &TestServer, a: &str) -> u16 {
    s.form(
        "/token",
        &[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", a),
        ],
        None,
    )
    .await
    .status
}

#[tokio::test(flavor = "multi_thread")]
async fn jwks_uri_keys_are_fetched_cached_and_refetched_once_for_a_new_kid() {
    let ca = TestCa::new();
    let k1 = SigningKey::generate(Algorithm::ES256).unwrap();
    let k2 = SigningKey::generate(Algorithm::ES256).unwrap();
    let doc = Arc::new(Mutex::new(
        json!({"keys": [k1.verifying_key().to_jwk()]}).to_string(),
    ));
    let hits = Arc::new(AtomicUsize::new(0));
    let port = jwks_server(&ca, doc.clone(), hits.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("partner-ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let client = json!({"clients": [{"client_id": "remote", "profile": "smart-backend",
        "token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"],
        "jwks_uri": format!("https://127.0.0.1:{port}/jwks")}]});
    let allowed = format!(
        "{}[outbound]\nallow_hosts = [\"127.0.0.1\"]\ntrust_anchors = [{:?}]\n",
        toml::to_string(&client).unwrap(),
        ca_path.display().to_string()
    );
    let s = TestServer::start(&allowed).await;
    let aud = format!("{}/token", s.issuer);
    assert_eq!(token(&s, &assertion(&k1, &aud, "r1")).await, 200);
    assert_eq!(token(&s, &assertion(&k1, &aud, "r2")).await, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1, "cached");
    // The client rotates to k2: the unknown kid triggers one refetch.
    *doc.lock().unwrap() = json!({"keys": [k2.verifying_key().to_jwk()]}).to_string();
    assert_eq!(token(&s, &assertion(&k2, &aud, "r3")).await, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // Another unknown kid within the interval: no fetch (J6), refused.
    let k3 = SigningKey::generate(Algorithm::ES256).unwrap();
    assert_eq!(token(&s, &assertion(&k3, &aud, "r4")).await, 401);
    assert_eq!(token(&s, &assertion(&k3, &aud, "r5")).await, 401);
    assert_eq!(hits.load(Ordering::SeqCst), 2, "refetch is rate-limited");
    s.stop().await;

    // Not allow-listed: the loopback destination is refused (D2), nothing fetched.
    let before = hits.load(Ordering::SeqCst);
    let refused = format!(
        "{}[outbound]\ntrust_anchors = [{:?}]\n",
        toml::to_string(&client).unwrap(),
        ca_path.display().to_string()
    );
    let s = TestServer::start(&refused).await;
    assert_eq!(token(&s, &assertion(&k2, &aud_of(&s), "r6")).await, 401);
    assert_eq!(hits.load(Ordering::SeqCst), before);
    s.stop().await;
}

fn aud_of(s: &TestServer) -> String {
    format!("{}/token", s.issuer)
}

/// An https server on 127.0.0.1 answering every request with `status`, `headers` and
/// `body` after `stall`; its port and a count of requests.
async fn fixed_server(
    ca: &TestCa,
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    stall: std::time::Duration,
) -> (u16, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let answer = Answer {
        status,
        headers,
        body,
        stall,
    };
    let port = https_server(ca, move |_| {
        h.fetch_add(1, Ordering::SeqCst);
        let a = answer.clone();
        async move { a }
    })
    .await;
    (port, hits)
}

fn client_for(ca: &TestCa, timeout_ms: u64) -> heartgate_server::outbound::OutboundClient {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ca.pem");
    std::fs::write(&p, &ca.pem).unwrap();
    let policy = heartgate_server::outbound::OutboundPolicy {
        allow_hosts: vec!["127.0.0.1".into()],
        trust_anchors: vec![p],
        timeout_ms,
        max_response_bytes: 64 * 1024,
    };
    heartgate_server::outbound::OutboundClient::new(policy).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn d2_redirects_big_slow_and_untrusted_servers_are_refused() {
    use heartgate_server::outbound::OutboundError;
    let ca = TestCa::new();
    let c = client_for(&ca, 400);
    // A redirect is an error; its target is never asked.
    let (target, target_hits) =
        fixed_server(&ca, 200, vec![], b"{}".to_vec(), Default::default()).await;
    let (port, _) = fixed_server(
        &ca,
        302,
        vec![("location", format!("https://127.0.0.1:{target}/jwks"))],
        Vec::new(),
        Default::default(),
    )
    .await;
    assert_eq!(
        c.get(&format!("https://127.0.0.1:{port}/jwks"))
            .await
            .unwrap_err(),
        OutboundError::Status(302)
    );
    assert_eq!(target_hits.load(Ordering::SeqCst), 0);
    // A body beyond the cap.
    let (port, _) = fixed_server(
        &ca,
        200,
        vec![],
        vec![b'x'; 1024 * 1024],
        Default::default(),
    )
    .await;
    assert_eq!(
        c.get(&format!("https://127.0.0.1:{port}/jwks"))
            .await
            .unwrap_err(),
        OutboundError::TooLarge
    );
    // A server that stalls: the total timeout (400 ms) ends it.
    let (port, _) = fixed_server(
        &ca,
        200,
        vec![],
        b"{}".to_vec(),
        std::time::Duration::from_secs(5),
    )
    .await;
    let start = std::time::Instant::now();
    assert_eq!(
        c.get(&format!("https://127.0.0.1:{port}/jwks"))
            .await
            .unwrap_err(),
        OutboundError::Timeout
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
    // A certificate from a CA that is not a trust anchor.
    let other = TestCa::new();
    let (port, _) = fixed_server(&other, 200, vec![], b"{}".to_vec(), Default::default()).await;
    assert!(matches!(
        c.get(&format!("https://127.0.0.1:{port}/jwks"))
            .await
            .unwrap_err(),
        OutboundError::Connect(_)
    ));
}
