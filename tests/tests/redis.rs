//! The server on the Redis store: it starts, registers a client into Redis (under its key
//! prefix), answers 503 while Redis is down, and recovers when Redis is back, without a
//! restart. The server's Redis is a private `redis-server` on a free port, killed when the
//! test ends; without `redis-server` on PATH the test fails (tests/run-all installs it).
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use std::time::{Duration, Instant};

use heartgate_core::clock::UnixTime;
use heartgate_core::store::{Namespace, Store};
use heartgate_e2e::redis::RedisServer;
use heartgate_e2e::TestServer;
use heartgate_server::stores::redis::{RedisOptions, RedisStore};
use serde_json::json;

/// A key-encryption key file for the nodes of one test (`[redis]
/// key_encryption_key_file`), and the TOML line naming it.
fn kek(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("kek");
    if !path.exists() {
        let text = heartgate_server::keyshare::Kek::generate_text().unwrap();
        std::fs::write(&path, text.as_bytes()).unwrap();
    }
    format!(
        "key_encryption_key_file = {:?}\n",
        path.display().to_string()
    )
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
    let mut redis = RedisServer::start();
    let url = redis.url();
    let keys = tempfile::tempdir().unwrap();
    let s = TestServer::start_in(
        tempfile::tempdir().unwrap(),
        &format!(
            "[redis]\nkey_prefix = \"e2e\"\ntimeout_ms = 500\nconnect_timeout_ms = 500\n{}",
            kek(&keys)
        ),
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

    redis.kill();
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

    redis.restart();
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
    let redis = RedisServer::start();
    let url = redis.url();
    let keys = tempfile::tempdir().unwrap();
    let be = SigningKey::generate(Algorithm::ES256).unwrap();
    let rs = SigningKey::generate(Algorithm::ES256).unwrap();
    let doc = json!({
        "redis": {"key_prefix": "two", "timeout_ms": 500, "connect_timeout_ms": 500,
            "key_encryption_key_file": keys.path().join("kek")},
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
    kek(&keys);
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

/// The kid in a JWT's header.
fn kid_of(jwt: &str) -> String {
    let header = jwt.split('.').next().unwrap();
    let h: serde_json::Value =
        serde_json::from_slice(&heartgate_core::jose::b64::decode(header).unwrap()).unwrap();
    h["kid"].as_str().unwrap().to_owned()
}

fn kids(jwks: &serde_json::Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Scale-out: the nodes sign with one key set, kept in Redis only sealed under the KEK.
/// A JWT access token issued on A verifies (introspects active) on B; `heartgate keys
/// rotate` on a cluster reaches both running nodes without a restart; the previous key
/// stays published, so tokens it signed stay valid; nothing in Redis holds a private key
/// in clear.
#[tokio::test(flavor = "multi_thread")]
async fn the_nodes_share_sealed_signing_keys_and_a_rotation_reaches_every_running_node() {
    use heartgate_core::jose::{Algorithm, SigningKey};
    let redis = RedisServer::start();
    let url = redis.url();
    let keys = tempfile::tempdir().unwrap();
    let be = SigningKey::generate(Algorithm::ES256).unwrap();
    let rs = SigningKey::generate(Algorithm::ES256).unwrap();
    kek(&keys);
    let doc = json!({
        "issuer": "https://heartgate.test",
        "redis": {"key_prefix": "keys", "timeout_ms": 500, "connect_timeout_ms": 500,
            "key_encryption_key_file": keys.path().join("kek")},
        "tokens": {"default_audience": "https://fhir.example/r4"},
        "clients": [
            {"client_id": "backend", "profile": "smart-backend",
             "token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"],
             "jwks": {"keys": [be.verifying_key().to_jwk()]}, "scope": "system/Observation.rs",
             "access_token_format": "jwt"},
            {"client_id": "fhir-server", "profile": "smart-backend",
             "token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"],
             "jwks": {"keys": [rs.verifying_key().to_jwk()]},
             "resources": ["https://fhir.example/r4"]},
        ],
    });
    let toml = toml::to_string(&doc).unwrap();
    let a = TestServer::start_in(tempfile::tempdir().unwrap(), &toml, &url).await;
    let b = TestServer::start_in(tempfile::tempdir().unwrap(), &toml, &url).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let token_aud = format!("{}/token", a.issuer);
    let n = std::sync::atomic::AtomicU32::new(0);
    let next = || n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);

    // One key set: the same JWKS on both nodes, the same registration token.
    let jwks_a = a.get("/jwks").await.json();
    assert_eq!(jwks_a, b.get("/jwks").await.json());
    assert_eq!(a.iat, b.iat, "the initial access token is the cluster's");

    let issue = |s: &TestServer, n: u32| {
        let mut f = vec![("grant_type", "client_credentials".to_owned())];
        f.extend(signed(&be, "backend", &token_aud, n));
        let s = s.clone_client();
        async move {
            let t = post(&s, "/token", &f).await;
            assert_eq!(t.status, 200, "{}", t.text());
            t.json()["access_token"].as_str().unwrap().to_owned()
        }
    };
    let active_on = |s: &TestServer, token: &str, n: u32| {
        let mut f = vec![("token", token.to_owned())];
        f.extend(signed(&rs, "fhir-server", &token_aud, n));
        let s = s.clone_client();
        async move {
            let r = post(&s, "/introspect", &f).await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["active"].as_bool().unwrap()
        }
    };
    let first = issue(&a, next()).await;
    let old_kid = kid_of(&first);
    assert_eq!(kids(&jwks_a)[0], old_kid);
    assert!(active_on(&b, &first, next()).await, "A's JWT verifies on B");

    // Nothing in Redis holds a private key or a node secret in clear.
    let mut raw = redis.connection();
    let all: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut raw).unwrap();
    for k in &all {
        let kind: String = redis::cmd("TYPE").arg(k).query(&mut raw).unwrap();
        if kind != "string" {
            continue;
        }
        let v: Vec<u8> = redis::cmd("GET").arg(k).query(&mut raw).unwrap();
        for needle in [&b"PRIVATE KEY"[..], b"\"d\":", a.iat.as_bytes()] {
            assert!(
                !v.windows(needle.len()).any(|w| w == needle),
                "{} holds {}",
                String::from_utf8_lossy(k),
                String::from_utf8_lossy(needle)
            );
        }
    }

    // Rotate as an operator would (`heartgate keys rotate` with the cluster's config).
    let cfg = format!(
        "data_dir = {:?}\nstore = {url:?}\n{toml}",
        tempfile::tempdir().unwrap().keep().display().to_string()
    );
    let resolved =
        heartgate_server::config::Config::parse(&cfg, &heartgate_server::config::Env::new())
            .unwrap()
            .resolve()
            .unwrap();
    let new_kid = match heartgate_server::run::rotate_keys(&resolved).unwrap() {
        heartgate_server::run::Rotated::Shared { kid, listening } => {
            assert_eq!(listening, Some(2), "both nodes heard the announcement");
            kid
        }
        other => panic!("a Redis cluster rotates its shared keys, not {other:?}"),
    };
    assert_ne!(new_kid, old_kid);
    let rotated = Instant::now();
    for node in [&a, &b] {
        loop {
            let ks = kids(&node.get("/jwks").await.json());
            if ks[0] == new_kid {
                assert!(ks.contains(&old_kid), "the previous key stays published");
                break;
            }
            assert!(
                rotated.elapsed() < Duration::from_secs(5),
                "a node still signs with the old key: {ks:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let second = issue(&b, next()).await;
    assert_eq!(kid_of(&second), new_kid, "B signs with the rotated key");
    assert!(active_on(&a, &second, next()).await);
    assert!(
        active_on(&a, &first, next()).await,
        "tokens of the previous key stay valid"
    );

    // A node with another KEK cannot open the keys and does not start.
    let other_keys = tempfile::tempdir().unwrap();
    let wrong = toml.replace(
        &keys.path().join("kek").display().to_string(),
        &other_keys.path().join("kek").display().to_string(),
    );
    kek(&other_keys);
    let cfg = format!(
        "data_dir = {:?}\nstore = {url:?}\nlisten = \"127.0.0.1:0\"\n{wrong}",
        other_keys.path().join("data").display().to_string()
    );
    let resolved =
        heartgate_server::config::Config::parse(&cfg, &heartgate_server::config::Env::new())
            .unwrap()
            .resolve()
            .unwrap();
    let e = heartgate_server::run::build(&resolved)
        .err()
        .expect("refused");
    assert!(
        e.to_string()
            .contains("do not open with this key-encryption key"),
        "{e}"
    );
    // And a Redis store without a KEK is a configuration error naming the setting.
    let no_kek = format!("store = {url:?}\n");
    let e = heartgate_server::config::Config::parse(&no_kek, &heartgate_server::config::Env::new())
        .and_then(|c| c.resolve())
        .map(|_| ())
        .expect_err("refused");
    assert!(
        e.to_string().contains("redis.key_encryption_key_file"),
        "{e}"
    );
    a.stop().await;
    b.stop().await;
}
