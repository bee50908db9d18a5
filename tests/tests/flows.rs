//! The server end to end over TLS on 127.0.0.1: discovery and JWKS; registration;
//! private_key_jwt client_credentials verified against /jwks; PAR + signed request
//! object + PKCE → login → consent → JARM → code → bound tokens → introspection →
//! refresh → revocation → inactive; binding refused for another certificate; wrapper and
//! opaque tokens; RFC 9440 Client-Cert only from trusted proxies; the main error paths
//! with their exact RFC error codes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use heartgate_core::authorize::pkce::CodeChallenge;
use heartgate_core::clock::UnixTime;
use heartgate_core::jose::{
    sign_jwt, verify_jwt, Algorithm, AlgorithmSet, AudienceRule, JwkSet, JwkSetOptions, SigningKey,
    TypRule, Validation,
};
use heartgate_e2e::{cookie_pair, hidden_input, url_param, Identity, TestCa, TestServer};
use serde_json::{json, Value};

const FHIR: &str = "https://fhir.example/r4";
const VERIFIER: &str = "e2e-verifier-0123456789abcdefghijklmnopqrstuvwxyz-ABCDEFG";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Static clients and a user, as TOML.
fn config(rs_key: &SigningKey, backend_key: &SigningKey, extra_clients: Vec<Value>) -> String {
    let mut clients = vec![
        json!({"client_id": "fhir-server", "profile": "smart-backend",
            "token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"],
            "jwks": {"keys": [rs_key.verifying_key().to_jwk()]}, "resources": [FHIR]}),
        json!({"client_id": "backend", "profile": "smart-backend",
            "token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"],
            "jwks": {"keys": [backend_key.verifying_key().to_jwk()]},
            "scope": "system/Observation.rs system/Patient.r"}),
    ];
    clients.extend(extra_clients);
    let hash = heartgate_server::users::hash_password("correct horse battery").unwrap();
    let doc = json!({
        "tokens": {"default_audience": FHIR},
        "clients": clients,
        "users": [{"username": "nurse", "password_hash": hash, "subject": "user-42",
            "display_name": "Nurse Joy", "fhir_user": "Practitioner/7",
            "patients": [{"id": "Patient/123", "label": "Jane Doe"}]}],
    });
    toml::to_string(&doc).unwrap()
}

struct KeyClient {
    id: String,
    key: SigningKey,
    n: std::sync::atomic::AtomicU32,
}

impl KeyClient {
    fn new(id: &str, key: SigningKey) -> Self {
        KeyClient {
            id: id.into(),
            key,
            n: Default::default(),
        }
    }

    fn assertion(&self, aud: &str) -> String {
        let n = self.n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = now();
        sign_jwt(
            &self.key,
            None,
            json!({"iss": self.id, "sub": self.id, "aud": aud, "iat": t, "exp": t + 60,
                "jti": format!("{}-{n}-{t}", self.id)})
            .as_object()
            .unwrap(),
        )
        .unwrap()
    }
}

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

async fn jwks(s: &TestServer) -> JwkSet {
    let r = s.get("/jwks").await;
    assert_eq!(r.status, 200);
    JwkSet::from_json(&r.body, &JwkSetOptions::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_publishes_every_endpoint_and_no_weak_algorithm() {
    let rs = SigningKey::generate(Algorithm::ES256).unwrap();
    let be = SigningKey::generate(Algorithm::ES256).unwrap();
    let s = TestServer::start(&config(&rs, &be, vec![])).await;
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let r = s.get(path).await;
        assert_eq!(r.status, 200);
        let d = r.json();
        assert_eq!(d["issuer"], s.issuer);
        for ep in [
            "authorization_endpoint",
            "token_endpoint",
            "pushed_authorization_request_endpoint",
            "introspection_endpoint",
            "revocation_endpoint",
            "registration_endpoint",
            "userinfo_endpoint",
            "jwks_uri",
        ] {
            assert!(d[ep].as_str().unwrap().starts_with(&s.issuer), "{ep}");
        }
        assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(d["authorization_response_iss_parameter_supported"], true);
        assert_eq!(d["tls_client_certificate_bound_access_tokens"], true);
        assert!(d["mtls_endpoint_aliases"]["token_endpoint"].is_string());
        assert!(d["response_modes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("form_post.jwt")));
        for (k, v) in d.as_object().unwrap() {
            if k.contains("alg_values_supported") {
                for a in v.as_array().unwrap() {
                    let a = a.as_str().unwrap();
                    assert!(a != "none" && !a.starts_with("HS"), "{k}: {a}");
                }
            }
        }
    }
    assert!(!jwks(&s).await.is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn private_key_jwt_client_credentials_token_verifies_against_jwks() {
    let rs = SigningKey::generate(Algorithm::ES256).unwrap();
    let be = SigningKey::generate(Algorithm::ES256).unwrap();
    let s = TestServer::start(&config(&rs, &be, vec![])).await;
    let backend = KeyClient::new("backend", be);
    let aud = format!("{}/token", s.issuer);
    let r = s
        .form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "system/Observation.rs"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &backend.assertion(&aud)),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let t = r.json();
    assert_eq!(t["token_type"], "Bearer");
    assert!(
        t["expires_in"].as_u64().unwrap() <= 300,
        "SMART backend: ≤ 5 min"
    );
    assert!(t.get("refresh_token").is_none());
    let v = Validation::new(
        AlgorithmSet::ALL,
        TypRule::Required("at+jwt"),
        AudienceRule::Contains(FHIR.into()),
    )
    .issuer(s.issuer.clone());
    let claims = verify_jwt(
        t["access_token"].as_str().unwrap(),
        &jwks(&s).await,
        &v,
        UnixTime(now()),
    )
    .unwrap();
    assert_eq!(claims.get("client_id"), Some(&json!("backend")));
    assert_eq!(claims.get("scope"), Some(&json!("system/Observation.rs")));

    // The same assertion again: replay (C1).
    let a = backend.assertion(&aud);
    let ok = s
        .form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &a),
            ],
            None,
        )
        .await;
    assert_eq!(ok.status, 200);
    let replay = s
        .form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &a),
            ],
            None,
        )
        .await;
    assert_eq!(replay.status, 401);
    assert_eq!(replay.json()["error"], "invalid_client");
    assert!(replay.header("www-authenticate").is_some());
    s.stop().await;
}

/// Drive the browser part of the flow with plain HTTP: authorize → login → consent.
async fn browser_flow(s: &TestServer, client_id: &str, request_uri: &str) -> String {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", client_id)
        .append_pair("request_uri", request_uri)
        .finish();
    let r = s.get(&format!("/authorize?{q}")).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let login_url = r.header("location").unwrap().to_owned();
    assert!(login_url.starts_with("/login?"));
    let page = s.get(&login_url).await;
    assert_eq!(page.status, 200);
    let pre = cookie_pair(page.header("set-cookie").unwrap(), "__Host-hg_pre").unwrap();
    let html = page.text();
    let interaction = hidden_input(&html, "interaction").unwrap();
    let csrf = hidden_input(&html, "csrf").unwrap();
    // A wrong password first: same page, fixed message, no session.
    let bad = s
        .form_with(
            "/login",
            &[
                ("interaction", &interaction),
                ("csrf", &csrf),
                ("username", "nurse"),
                ("password", "wrong"),
            ],
            &[("cookie", &pre)],
            None,
        )
        .await;
    assert_eq!(bad.status, 401);
    assert!(bad.text().contains("Wrong username or password"));
    assert!(bad.header("set-cookie").is_none());
    // A forged form (no pre-login cookie): refused.
    let forged = s
        .form(
            "/login",
            &[
                ("interaction", &interaction),
                ("csrf", &csrf),
                ("username", "nurse"),
                ("password", "correct horse battery"),
            ],
            None,
        )
        .await;
    assert_eq!(forged.status, 403);
    let ok = s
        .form_with(
            "/login",
            &[
                ("interaction", &interaction),
                ("csrf", &csrf),
                ("username", "nurse"),
                ("password", "correct horse battery"),
            ],
            &[("cookie", &pre)],
            None,
        )
        .await;
    assert_eq!(ok.status, 303, "{}", ok.text());
    let session = cookie_pair(ok.header("set-cookie").unwrap(), "__Host-hg_session").unwrap();
    assert!(ok.header("set-cookie").unwrap().contains("HttpOnly"));
    assert!(ok.header("set-cookie").unwrap().contains("Secure"));
    let consent_url = ok.header("location").unwrap().to_owned();
    let page = s
        .send(
            "GET",
            &consent_url,
            &[("cookie", &session)],
            Vec::new(),
            None,
        )
        .await;
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(
        html.contains("lab results and vital signs (Observation)"),
        "{html}"
    );
    assert!(html.contains("Jane Doe"));
    let interaction = hidden_input(&html, "interaction").unwrap();
    let csrf = hidden_input(&html, "csrf").unwrap();
    let done = s
        .form_with(
            "/consent",
            &[
                ("interaction", &interaction),
                ("csrf", &csrf),
                ("patient", "Patient/123"),
                ("decision", "allow"),
            ],
            &[("cookie", &session)],
            None,
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.text());
    done.header("location").unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn fapi2_message_signing_flow_from_registration_to_revocation() {
    let rs_key = SigningKey::generate(Algorithm::ES256).unwrap();
    let be = SigningKey::generate(Algorithm::ES256).unwrap();
    let s = TestServer::start(&config(&rs_key, &be, vec![])).await;
    let cert = Identity::self_signed("clinic.example");
    let client_key = SigningKey::generate(Algorithm::ES256).unwrap();

    // Registration with the initial access token.
    let reg = s
        .json_post(
            "/register",
            &s.iat,
            &json!({"profile": "fapi2-message-signing", "client_name": "Clinic portal",
                "redirect_uris": ["https://clinic.example/cb"],
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [client_key.verifying_key().to_jwk()]},
                "grant_types": ["authorization_code", "refresh_token"],
                "require_pushed_authorization_requests": true,
                "tls_client_certificate_bound_access_tokens": true,
                "request_object_signing_alg": "ES256",
                "authorization_signed_response_alg": "ES256",
                "access_token_format": "wrapper",
                "scope": "openid offline_access launch/patient patient/Observation.rs"}),
        )
        .await;
    assert_eq!(reg.status, 201, "{}", reg.text());
    let reg = reg.json();
    let client_id = reg["client_id"].as_str().unwrap().to_owned();
    assert!(reg.get("client_secret").is_none());
    let client = KeyClient::new(&client_id, client_key);

    // PAR with a signed request object, over mTLS. FAPI: aud is the issuer string.
    let t = now();
    let mut ro = json!({"iss": client_id, "aud": s.issuer, "client_id": client_id,
        "exp": t + 300, "nbf": t, "iat": t, "jti": "ro-1",
        "response_type": "code", "response_mode": "jwt",
        "redirect_uri": "https://clinic.example/cb",
        "scope": "openid offline_access launch/patient patient/Observation.rs",
        "state": "st-1", "nonce": "n-1", "code_challenge_method": "S256"});
    ro["code_challenge"] = json!(CodeChallenge::for_verifier(VERIFIER).as_str());
    let request = sign_jwt(
        &client.key,
        Some("oauth-authz-req+jwt"),
        ro.as_object().unwrap(),
    )
    .unwrap();
    let par = s
        .form(
            "/par",
            &[
                ("client_id", &client_id),
                ("request", &request),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &client.assertion(&s.issuer)),
            ],
            Some(&cert),
        )
        .await;
    assert_eq!(par.status, 201, "{}", par.text());
    let request_uri = par.json()["request_uri"].as_str().unwrap().to_owned();

    // Browser: login, consent, JARM back to the client.
    let location = browser_flow(&s, &client_id, &request_uri).await;
    assert!(location.starts_with("https://clinic.example/cb?response="));
    let jarm = url_param(&location, "response").unwrap();
    let v = Validation::new(
        AlgorithmSet::FAPI2,
        TypRule::OptionalOneOf(&["JWT"]),
        AudienceRule::ExactString(client_id.clone()),
    )
    .issuer(s.issuer.clone());
    let keys = jwks(&s).await;
    let claims = verify_jwt(&jarm, &keys, &v, UnixTime(now())).unwrap();
    assert_eq!(claims.get("state"), Some(&json!("st-1")));
    let code = claims.string("code").unwrap().unwrap().to_owned();

    // Token: same certificate, fresh assertion.
    let tok = s
        .form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "https://clinic.example/cb"),
                ("code_verifier", VERIFIER),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &client.assertion(&s.issuer)),
            ],
            Some(&cert),
        )
        .await;
    assert_eq!(tok.status, 200, "{}", tok.text());
    let tok = tok.json();
    assert_eq!(tok["patient"], "Patient/123", "SMART launch context");
    let access = tok["access_token"].as_str().unwrap().to_owned();
    let refresh = tok["refresh_token"].as_str().unwrap().to_owned();
    let id = verify_jwt(
        tok["id_token"].as_str().unwrap(),
        &keys,
        &Validation::new(
            AlgorithmSet::FAPI2,
            TypRule::OptionalOneOf(&["JWT"]),
            AudienceRule::ExactString(client_id.clone()),
        )
        .issuer(s.issuer.clone()),
        UnixTime(now()),
    )
    .unwrap();
    assert_eq!(id.get("nonce"), Some(&json!("n-1")));
    assert_eq!(id.get("fhirUser"), None, "fhirUser scope not requested");

    // The FHIR server introspects: active, with cnf and the patient.
    let rs = KeyClient::new("fhir-server", rs_key);
    let aud = format!("{}/token", s.issuer);
    let intro = |token: String| {
        let a = rs.assertion(&aud);
        let s = &s;
        async move {
            s.form(
                "/introspect",
                &[
                    ("token", &token),
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", &a),
                ],
                None,
            )
            .await
        }
    };
    let r = intro(access.clone()).await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["active"], true);
    assert_eq!(body["patient"], "Patient/123");
    let thumb = heartgate_core::mtls::thumbprint(&cert.der)
        .unwrap()
        .to_string();
    assert_eq!(body["cnf"]["x5t#S256"], json!(thumb));

    // Userinfo: with the certificate the token is bound to, and only with it.
    let bearer = format!("Bearer {access}");
    let ui = s
        .send(
            "GET",
            "/userinfo",
            &[("authorization", &bearer)],
            Vec::new(),
            Some(&cert),
        )
        .await;
    assert_eq!(ui.status, 200, "{}", ui.text());
    assert!(ui.json()["sub"].is_string());
    let thief = Identity::self_signed("thief.example");
    let stolen = s
        .send(
            "GET",
            "/userinfo",
            &[("authorization", &bearer)],
            Vec::new(),
            Some(&thief),
        )
        .await;
    assert_eq!(stolen.status, 401);
    assert_eq!(
        stolen.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );

    // Refresh (FAPI 2.0: no rotation); a second access token of the same family.
    let rr = s
        .form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &client.assertion(&s.issuer)),
            ],
            Some(&cert),
        )
        .await;
    assert_eq!(rr.status, 200, "{}", rr.text());
    let second = rr.json()["access_token"].as_str().unwrap().to_owned();
    // The code is spent; using it again revokes every token issued from it (A1).
    let again = s
        .form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "https://clinic.example/cb"),
                ("code_verifier", VERIFIER),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &client.assertion(&s.issuer)),
            ],
            Some(&cert),
        )
        .await;
    assert_eq!(again.status, 400);
    assert_eq!(again.json()["error"], "invalid_grant");

    for t in [&access, &second] {
        let r = intro(t.clone()).await;
        assert_eq!(
            r.text(),
            r#"{"active":false}"#,
            "A1: the family went with the code"
        );
    }

    // Revoking the (already dead) refresh token is still a 200.
    let rv = s
        .form(
            "/revoke",
            &[
                ("token", &refresh),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &client.assertion(&s.issuer)),
            ],
            Some(&cert),
        )
        .await;
    assert_eq!(rv.status, 200);

    // RFC 7592: read, then delete with the registration access token.
    let rat = reg["registration_access_token"].as_str().unwrap();
    let path = format!("/register/{client_id}");
    let auth = format!("Bearer {rat}");
    let read = s
        .send("GET", &path, &[("authorization", &auth)], Vec::new(), None)
        .await;
    assert_eq!(read.status, 200);
    let del = s
        .send(
            "DELETE",
            &path,
            &[("authorization", &auth)],
            Vec::new(),
            None,
        )
        .await;
    assert_eq!(del.status, 204);
    let read = s
        .send("GET", &path, &[("authorization", &auth)], Vec::new(), None)
        .await;
    assert_eq!(read.status, 401);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrapper_and_opaque_tokens_introspect_and_jwt_introspection_response() {
    let rs_key = SigningKey::generate(Algorithm::ES256).unwrap();
    let be = SigningKey::generate(Algorithm::ES256).unwrap();
    let wk = SigningKey::generate(Algorithm::ES256).unwrap();
    let ok = SigningKey::generate(Algorithm::ES256).unwrap();
    let extra = vec![
        json!({"client_id": "wrapper-backend", "profile": "smart-backend",
            "token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"],
            "jwks": {"keys": [wk.verifying_key().to_jwk()]}, "scope": "system/Observation.rs",
            "access_token_format": "wrapper"}),
        json!({"client_id": "opaque-backend", "profile": "smart-backend",
            "token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"],
            "jwks": {"keys": [ok.verifying_key().to_jwk()]}, "scope": "system/Observation.rs",
            "access_token_format": "opaque"}),
    ];
    let s = TestServer::start(&config(&rs_key, &be, extra)).await;
    let aud = format!("{}/token", s.issuer);
    let rs = KeyClient::new("fhir-server", rs_key);
    for (id, key, prefix) in [
        ("wrapper-backend", wk, "ey"),
        ("opaque-backend", ok, "hgat_"),
    ] {
        let c = KeyClient::new(id, key);
        let t = s
            .form(
                "/token",
                &[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", &c.assertion(&aud)),
                ],
                None,
            )
            .await
            .json();
        let token = t["access_token"].as_str().unwrap().to_owned();
        assert!(token.starts_with(prefix), "{id}");
        let r = s
            .form(
                "/introspect",
                &[
                    ("token", &token),
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", &rs.assertion(&aud)),
                ],
                None,
            )
            .await;
        let b = r.json();
        assert_eq!(b["active"], true, "{id}");
        assert_eq!(b["client_id"], id);
        assert_eq!(b["scope"], "system/Observation.rs");
        // RFC 9701.
        let r = s
            .form_with(
                "/introspect",
                &[
                    ("token", &token),
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", &rs.assertion(&aud)),
                ],
                &[("accept", "application/token-introspection+jwt")],
                None,
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-type"),
            Some("application/token-introspection+jwt")
        );
        let text = r.text();
        let jws = heartgate_core::jose::parse_compact(&text, 65536).unwrap();
        assert_eq!(jws.header().typ(), Some("token-introspection+jwt"));
        let verified = jws.verify(&jwks(&s).await, AlgorithmSet::ALL).unwrap();
        let claims: Value = serde_json::from_slice(verified.payload()).unwrap();
        assert_eq!(claims["aud"], "fhir-server");
        assert_eq!(claims["token_introspection"]["active"], true);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_cert_header_is_honoured_only_from_trusted_proxies() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("client-ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let mtls_client = json!({"client_id": "mtls-backend", "profile": "smart",
        "token_endpoint_auth_method": "tls_client_auth",
        "tls_client_auth_subject_dn": "CN=lab-system,O=Clinic",
        "redirect_uris": ["https://lab.example/cb"],
        "tls_client_certificate_bound_access_tokens": true});
    let rs = SigningKey::generate(Algorithm::ES256).unwrap();
    let be = SigningKey::generate(Algorithm::ES256).unwrap();
    let base = config(&rs, &be, vec![mtls_client]);
    let tls = format!("[tls]\nclient_ca = [{:?}]\n", ca_path.display().to_string());
    let lab = ca.issue("lab-system");
    let header = format!(":{}:", base64_std(&lab.der));
    let revoke_form = [("client_id", "mtls-backend"), ("token", "nothing")];

    // Untrusted source: the header is ignored, the request has no certificate.
    let s = TestServer::start(&format!("{base}{tls}")).await;
    let r = s
        .form_with("/revoke", &revoke_form, &[("client-cert", &header)], None)
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    // The real TLS certificate from the client CA works.
    let r = s.form("/revoke", &revoke_form, Some(&lab)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A self-signed certificate with the right subject is not from the CA (RFC 8705 §2.1).
    let fake = Identity::self_signed("lab-system");
    assert_eq!(
        s.form("/revoke", &revoke_form, Some(&fake)).await.status,
        401
    );
    s.stop().await;

    // 127.0.0.1 configured as a trusted proxy: the header counts.
    let trusted = format!(
        "{base}[tls]\nclient_ca = [{:?}]\ntrusted_proxies = [\"127.0.0.1\"]\n",
        ca_path.display().to_string()
    );
    let s = TestServer::start(&trusted).await;
    let r = s
        .form_with("/revoke", &revoke_form, &[("client-cert", &header)], None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    s.stop().await;
}

fn base64_std(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn error_paths_answer_with_their_exact_rfc_codes() {
    let rs = SigningKey::generate(Algorithm::ES256).unwrap();
    let be = SigningKey::generate(Algorithm::ES256).unwrap();
    let s = TestServer::start(&config(&rs, &be, vec![])).await;
    let backend = KeyClient::new("backend", be);
    let aud = format!("{}/token", s.issuer);

    // No client authentication: 401 invalid_client with a challenge (RFC 6749 §5.2).
    let r = s
        .form("/token", &[("grant_type", "client_credentials")], None)
        .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(r.header("www-authenticate").is_some());
    // Unknown grant type.
    let r = s.form("/token", &[("grant_type", "password")], None).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    // A scope outside the registration.
    let r = s
        .form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "system/Patient.cruds"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &backend.assertion(&aud)),
            ],
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    // A repeated parameter (RFC 6749 §3.1).
    let r = s
        .send(
            "POST",
            "/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            b"grant_type=client_credentials&grant_type=client_credentials".to_vec(),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("invalid_request"))
    );
    // Wrong method, unknown path, body too large.
    assert_eq!(s.get("/token").await.status, 405);
    assert_eq!(s.get("/nope").await.status, 404);
    let big = vec![b'a'; 70 * 1024];
    let r = s
        .send(
            "POST",
            "/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            big,
            None,
        )
        .await;
    assert_eq!(r.status, 413);
    // Introspection without token: invalid_request; revocation of garbage: 200 (V2).
    let r = s
        .form(
            "/introspect",
            &[
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &backend.assertion(&aud)),
            ],
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let r = s
        .form(
            "/revoke",
            &[
                ("token", "garbage"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &backend.assertion(&aud)),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    // Registration: no token → 401 invalid_token; bad redirect → invalid_redirect_uri.
    let r = s
        .send(
            "POST",
            "/register",
            &[("content-type", "application/json")],
            b"{}".to_vec(),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("invalid_token"))
    );
    let r = s
        .json_post(
            "/register",
            &s.iat,
            &json!({"profile": "smart", "redirect_uris": ["http://evil.example/cb"],
                "token_endpoint_auth_method": "none"}),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("invalid_redirect_uri"))
    );
    // A PAR from a client whose profile needs a signed request object, without one.
    let r = s
        .form(
            "/par",
            &[
                ("response_type", "code"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &backend.assertion(&aud)),
            ],
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    // The authorization endpoint with an unknown client: an error page, not a redirect.
    let r = s
        .get("/authorize?client_id=nobody&response_type=code&redirect_uri=https%3A%2F%2Fevil.example%2F")
        .await;
    assert_eq!(r.status, 400);
    assert!(r.header("location").is_none());
    s.stop().await;
}
