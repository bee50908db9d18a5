//! A heartgate server for the Kotlin flow test (`tests/mobile.sh`): starts on a free port
//! of 127.0.0.1 over TLS with its development CA, memory store and one demo user, writes
//! what the Kotlin test needs as a Java properties file (the path given as the only
//! argument), and stops when its standard input closes or after ten minutes, whichever
//! comes first.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test harness; a failure is a failed test

use std::io::Read;
use std::time::Duration;

use heartgate_core::jose::{Algorithm, SigningKey};
use heartgate_e2e::TestServer;
use serde_json::json;

const FHIR: &str = "https://fhir.example/r4";
const PASSWORD: &str = "correct horse battery";
const MAX_LIFETIME: Duration = Duration::from_secs(600);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let out = std::env::args()
        .nth(1)
        .expect("usage: mobile-test-server PROPERTIES_FILE");
    let hash = heartgate_server::users::hash_password(PASSWORD).unwrap();
    // A static CIBA client (poll mode) whose key the Kotlin test signs assertions with.
    let ciba_key = SigningKey::generate(Algorithm::ES256).unwrap();
    let doc = json!({
        "tokens": {"default_audience": FHIR},
        "clients": [{"client_id": "ciba-clinic", "client_name": "Riverside Clinic",
            "profile": "smart", "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [ciba_key.verifying_key().to_jwk()]},
            "grant_types": ["urn:openid:params:grant-type:ciba"],
            "backchannel_token_delivery_mode": "poll", "scope": "openid user/Observation.rs"}],
        "users": [{"username": "nurse", "password_hash": hash, "subject": "user-42",
            "display_name": "Nurse Joy", "fhir_user": "Practitioner/7",
            "patients": [{"id": "Patient/123", "label": "Jane Doe"}]}],
    });
    let s = TestServer::start(&toml::to_string(&doc).unwrap()).await;
    let dir = s.data_dir.as_ref().unwrap().path().to_owned();
    // The app's TLS client certificate (self-signed, RFC 8705 §2.2 binding).
    let cert = rcgen::generate_simple_self_signed(vec!["clinic.example".into()]).unwrap();
    std::fs::write(dir.join("client.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("client-key.pem"), cert.signing_key.serialize_pem()).unwrap();
    std::fs::write(
        dir.join("ciba-client-key.pem"),
        ciba_key.to_pkcs8_pem().as_str(),
    )
    .unwrap();
    let props = [
        ("issuer", s.issuer.clone()),
        ("ca", dir.join("pki/ca.pem").display().to_string()),
        ("initial_access_token", s.iat.clone()),
        ("client_cert", dir.join("client.pem").display().to_string()),
        (
            "client_key",
            dir.join("client-key.pem").display().to_string(),
        ),
        (
            "ciba_client_key",
            dir.join("ciba-client-key.pem").display().to_string(),
        ),
        ("ciba_client_id", "ciba-clinic".to_owned()),
        ("username", "nurse".to_owned()),
        ("password", PASSWORD.to_owned()),
        ("audience", FHIR.to_owned()),
    ];
    let text: String = props
        .iter()
        // Properties files treat backslash and colon specially; none of these values
        // has a backslash, and `=` separates.
        .map(|(k, v)| format!("{k}={}\n", v.replace(':', "\\:")))
        .collect();
    let tmp = format!("{out}.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &out).unwrap();
    println!("mobile-test-server: listening on {}", s.issuer);
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    });
    tokio::select! {
        _ = stdin_closed => {}
        _ = tokio::time::sleep(MAX_LIFETIME) => {}
    }
    s.stop().await;
    // The stdin reader may still be blocked: leave without waiting for it.
    std::process::exit(0);
}
