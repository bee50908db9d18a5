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
