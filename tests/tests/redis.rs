//! The server on the Redis store: it starts, registers a client into Redis (under its key
//! prefix), answers 503 while Redis is down, and recovers when Redis is back, without a
//! restart. The server's Redis is a private `redis-server` on a free port, killed when the
//! test ends; without `redis-server` on PATH the test fails (tests/run-all installs it).
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use heartgate_core::clock::UnixTime;
use heartgate_core::store::{Namespace, Store};
use heartgate_e2e::TestServer;
use heartgate_server::stores::redis::{RedisOptions, RedisStore};
use serde_json::json;

/// A `redis-server` child process, killed on drop.
struct RedisServer(Child);

impl RedisServer {
    fn start(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it (tests/run-all does)")
            });
        let mut server = RedisServer(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(
                server.0.try_wait().unwrap().is_none(),
                "redis-server exited"
            );
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_on_redis_keeps_its_state_there_and_fails_closed_while_redis_is_down() {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = RedisServer::start(port);
    let url = format!("redis://127.0.0.1:{port}/0");
    let s = TestServer::start_in(
        tempfile::tempdir().unwrap(),
        "[redis]\nkey_prefix = \"e2e\"\ntimeout_ms = 500\nconnect_timeout_ms = 500\n",
        &url,
    )
    .await;
    assert_eq!(s.get("/readyz").await.status, 200);

    let reg = s
        .json_post(
            "/register",
            &s.iat,
            &json!({"profile": "smart", "redirect_uris": ["https://app.example/cb"],
                "token_endpoint_auth_method": "none"}),
        )
        .await;
    assert_eq!(reg.status, 201, "{}", reg.text());
    let client_id = reg.json()["client_id"].as_str().unwrap().to_owned();

    // The registration is in Redis, under the configured prefix.
    let look = RedisStore::open(
        &url,
        RedisOptions {
            key_prefix: "e2e".into(),
            ..RedisOptions::default()
        },
    )
    .unwrap();
    let clients = look
        .scan_prefix(Namespace::Client, b"", 100, now())
        .unwrap();
    assert!(
        clients.iter().any(|(k, _)| k == client_id.as_bytes()),
        "client {client_id} not among {:?}",
        clients
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k))
            .collect::<Vec<_>>()
    );

    drop(redis);
    let started = Instant::now();
    assert_eq!(s.get("/readyz").await.status, 503);
    let reg = s
        .json_post(
            "/register",
            &s.iat,
            &json!({"profile": "smart", "redirect_uris": ["https://app.example/cb2"],
                "token_endpoint_auth_method": "none"}),
        )
        .await;
    assert_eq!(reg.status, 503, "{}", reg.text());
    assert!(started.elapsed() < Duration::from_secs(5));

    let _redis = RedisServer::start(port);
    assert_eq!(
        s.get("/readyz").await.status,
        200,
        "recovers without a restart"
    );
    s.stop().await;
}

/// A private_key_jwt client's form fields with a fresh assertion for `aud`.
fn signed(
    key: &heartgate_core::jose::SigningKey,
    id: &str,
    aud: &str,
    n: u32,
) -> [(&'static str, String); 2] {
    let t = now().secs();
    let a = heartgate_core::jose::sign_jwt(
        key,
        None,
        json!({"iss": id, "sub": id, "aud": aud, "iat": t, "exp": t + 60,
            "jti": format!("{id}-{n}-{t}")})
        .as_object()
        .unwrap(),
    )
    .unwrap();
    [
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
        ),
        ("client_assertion", a),
    ]
}

async fn post(s: &TestServer, path: &str, fields: &[(&str, String)]) -> heartgate_e2e::Resp {
    let f: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    s.form(path, &f, None).await
}

/// Two nodes on one Redis act as one server: a token issued on A introspects on B, and
/// a revocation on A reaches B's introspection cache (pub/sub) well within the stated
/// bound (the cache TTL, 30 s).
#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_share_tokens_and_a_revocation_reaches_the_other_nodes_cache() {
    use heartgate_core::jose::{Algorithm, SigningKey};
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _redis = RedisServer::start(port);
    let url = format!("redis://127.0.0.1:{port}/0");
    let be = SigningKey::generate(Algorithm::ES256).unwrap();
    let rs = SigningKey::generate(Algorithm::ES256).unwrap();
    let doc = json!({
        "redis": {"key_prefix": "two", "timeout_ms": 500, "connect_timeout_ms": 500},
        "tokens": {"default_audience": "https://fhir.example/r4"},
        "clients": [
            {"client_id": "backend", "profile": "smart-backend",
             "token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"],
             "jwks": {"keys": [be.verifying_key().to_jwk()]}, "scope": "system/Observation.rs",
             "access_token_format": "opaque"},
            {"client_id": "fhir-server", "profile": "smart-backend",
             "token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"],
             "jwks": {"keys": [rs.verifying_key().to_jwk()]},
             "resources": ["https://fhir.example/r4"]},
        ],
    });
    let toml = toml::to_string(&doc).unwrap();
    let a = TestServer::start_in(tempfile::tempdir().unwrap(), &toml, &url).await;
    let b = TestServer::start_in(tempfile::tempdir().unwrap(), &toml, &url).await;
    // Let both nodes subscribe.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut fields = vec![("grant_type", "client_credentials".to_owned())];
    fields.extend(signed(&be, "backend", &format!("{}/token", a.issuer), 1));
    let t = post(&a, "/token", &fields).await;
    assert_eq!(t.status, 200, "{}", t.text());
    let token = t.json()["access_token"].as_str().unwrap().to_owned();

    let introspect_on_b = |n: u32| {
        let (b, rs, token) = (&b, &rs, token.clone());
        async move {
            let mut f = vec![("token", token)];
            f.extend(signed(rs, "fhir-server", &format!("{}/token", b.issuer), n));
            let r = post(b, "/introspect", &f).await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["active"].as_bool().unwrap()
        }
    };
    // Issued on A, active on B (and now in B's cache).
    assert!(introspect_on_b(10).await);
    assert!(introspect_on_b(11).await);

    // A revokes; B answers inactive at once (not after its 30 s cache TTL).
    let mut f = vec![("token", token.clone())];
    f.extend(signed(&be, "backend", &format!("{}/token", a.issuer), 2));
    assert_eq!(post(&a, "/revoke", &f).await.status, 200);
    let revoked = Instant::now();
    let mut n = 20;
    while introspect_on_b(n).await {
        n += 1;
        assert!(
            revoked.elapsed() < Duration::from_secs(3),
            "B still answers active: the invalidation did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.stop().await;
    b.stop().await;
}
