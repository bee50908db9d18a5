//! Logs never carry tokens, secrets, assertions or personal data: a full flow runs with
//! every log level on (trace, including hyper's and rustls's), and the captured output
//! is searched for each secret the flow handled.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use std::io::Write;
use std::sync::{Arc, Mutex};

use heartgate_core::jose::{sign_jwt, Algorithm, SigningKey};
use heartgate_e2e::TestServer;
use serde_json::json;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_logs_of_a_full_flow_hold_no_token_secret_or_personal_data() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
        .with_writer(move || writer.clone())
        .init();

    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let hash = heartgate_server::users::hash_password("correct horse battery").unwrap();
    let cfg = toml::to_string(&json!({
        "clients": [{"client_id": "backend", "profile": "smart-backend",
            "token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"],
            "jwks": {"keys": [key.verifying_key().to_jwk()]}, "scope": "system/Observation.rs",
            "resources": ["https://fhir.example/r4"], "access_token_format": "opaque"}],
        "users": [{"username": "nurse", "password_hash": hash, "subject": "user-42",
            "display_name": "Jane Nurse-Secretname"}],
    }))
    .unwrap();
    let s = TestServer::start(&cfg).await;
    let aud = format!("{}/token", s.issuer);
    let assertion = |jti: &str| {
        let t = now();
        sign_jwt(
            &key,
            None,
            json!({"iss": "backend", "sub": "backend", "aud": aud, "iat": t, "exp": t + 60, "jti": jti})
                .as_object()
                .unwrap(),
        )
        .unwrap()
    };
    let a1 = assertion("log-1");
    let tok = s
        .form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &a1),
            ],
            None,
        )
        .await
        .json();
    let access = tok["access_token"].as_str().unwrap().to_owned();
    let a2 = assertion("log-2");
    let r = s
        .form(
            "/introspect",
            &[
                ("token", &access),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &a2),
            ],
            None,
        )
        .await;
    assert_eq!(r.json()["active"], true);
    // A refused assertion is logged as refused, without the assertion.
    let _ = s
        .form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &a2),
            ],
            None,
        )
        .await;
    let reg = s
        .json_post(
            "/register",
            &s.iat,
            &json!({"profile": "smart", "redirect_uris": ["http://127.0.0.1/cb"],
                "token_endpoint_auth_method": "none"}),
        )
        .await
        .json();
    let rat = reg["registration_access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let a3 = assertion("log-3");
    let _ = s
        .form(
            "/revoke",
            &[
                ("token", &access),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &a3),
            ],
            None,
        )
        .await;
    let iat = s.iat.clone();
    s.stop().await;

    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("client authentication refused"),
        "the capture works and the refusal is logged"
    );
    for (what, secret) in [
        ("access token", access.as_str()),
        ("assertion", a1.as_str()),
        ("assertion", a2.as_str()),
        ("assertion", a3.as_str()),
        ("initial access token", iat.as_str()),
        ("registration access token", rat.as_str()),
        ("password", "correct horse battery"),
        ("password hash", hash.as_str()),
        ("user name", "Jane Nurse-Secretname"),
    ] {
        assert!(!text.contains(secret), "the logs contain the {what}");
    }
}
