//! Durability (THREATS S6, S7): a server on the embedded store is killed with SIGKILL
//! while it holds a pending PAR request_uri, an issued (unredeemed) code, a redeemed
//! code, a refresh token, a revocation, a used assertion `jti`, a registered client, a
//! remembered consent, an approved and a pending CIBA request and a login session; a new
//! server on the same data directory has every one of them, no one-time value works
//! twice, and after a second SIGKILL the audit chain verifies.
//!
//! The server runs in a child process (heartgate_e2e::child): this test binary
//! re-executed to run `restart_child_server`, which serves until killed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use heartgate_core::authorize::pkce::CodeChallenge;
use heartgate_core::jose::{sign_jwt, Algorithm, SigningKey};
use heartgate_e2e::child::{ChildServer, ChildSpec};
use heartgate_e2e::{
    ciba_decide, ciba_request_form, ciba_sign_in, consent, sign_in, url_param, TestServer,
};
use serde_json::json;

const CIBA: &str = "urn:openid:params:grant-type:ciba";
const VERIFIER: &str = "restart-verifier-0123456789abcdefghijklmnopqrstuvwxyz-ABC";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// In the child: serve until killed.
#[test]
#[ignore = "the child process of nothing_acknowledged_is_lost_on_sigkill_..., which runs it with --ignored"]
fn restart_child_server() {
    heartgate_e2e::child::serve_child();
}

fn spawn_child(dir: &str, config: &str, port: u16) -> (ChildServer, String) {
    let spec = ChildSpec {
        dir: dir.to_owned(),
        config: config.to_owned(),
        port,
        store: "embedded".into(),
        env: vec![],
    };
    (
        heartgate_e2e::child::spawn_child("restart_child_server", &spec),
        format!("127.0.0.1:{port}"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_acknowledged_is_lost_on_sigkill_and_nothing_is_usable_twice() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().display().to_string();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let hash = heartgate_server::users::hash_password("correct horse battery").unwrap();
    let redirect = "https://clinic.example/cb";
    let config = toml::to_string(&json!({
        "clients": [{"client_id": "app", "profile": "smart",
            "redirect_uris": [redirect], "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [key.verifying_key().to_jwk()]},
            "grant_types": ["authorization_code", "refresh_token", CIBA],
            "backchannel_token_delivery_mode": "poll",
            "access_token_format": "opaque"}],
        "users": [{"username": "nurse", "password_hash": hash, "subject": "user-42"}],
    }))
    .unwrap();

    let (mut child, _) = spawn_child(&dir, &config, port);
    let s = TestServer::connect(&dir, port);
    let counter = std::sync::atomic::AtomicU32::new(0);
    let assertion = |aud: &str| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = now();
        sign_jwt(
            &key,
            None,
            json!({"iss": "app", "sub": "app", "aud": aud, "iat": t, "exp": t + 120,
                "jti": format!("app-{n}")})
            .as_object()
            .unwrap(),
        )
        .unwrap()
    };
    let token_aud = format!("{}/token", s.issuer);
    let push = |a: String| {
        let s = &s;
        async move {
            let ch = CodeChallenge::for_verifier(VERIFIER);
            let r = s
                .form(
                    "/par",
                    &[
                        ("response_type", "code"),
                        ("redirect_uri", redirect),
                        (
                            "scope",
                            "offline_access patient/Observation.rs launch/patient",
                        ),
                        ("code_challenge", ch.as_str()),
                        ("code_challenge_method", "S256"),
                        (
                            "client_assertion_type",
                            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        ),
                        ("client_assertion", &a),
                    ],
                    None,
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text());
            r.json()["request_uri"].as_str().unwrap().to_owned()
        }
    };
    // A code through the pages (requests without patient scopes: this user has no
    // patients to choose).
    let code_for = |ru: String, remember: bool| {
        let s = &s;
        async move {
            let signed_in = sign_in(s, "app", &ru, "nurse", "correct horse battery").await;
            let done = consent(
                s,
                &signed_in,
                &[("remember", if remember { "1" } else { "0" })],
            )
            .await;
            (url_param(&done, "code").unwrap(), signed_in.session)
        }
    };
    let redeem = |code: String, a: String| {
        let s = &s;
        async move {
            s.form(
                "/token",
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", redirect),
                    ("code_verifier", VERIFIER),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &a),
                ],
                None,
            )
            .await
        }
    };
    let par_aud = format!("{}/par", s.issuer);

    // State before the kill.
    let pending_ru = push(assertion(&par_aud)).await;
    let ru_a = push_simple(&s, &assertion(&par_aud), redirect).await;
    let (unredeemed_code, _) = code_for(ru_a, false).await;
    let ru_b = push_simple(&s, &assertion(&par_aud), redirect).await;
    let (redeemed_code, _) = code_for(ru_b, false).await;
    let t = redeem(redeemed_code.clone(), assertion(&token_aud)).await;
    assert_eq!(t.status, 200, "{}", t.text());
    let t = t.json();
    let refresh = t["refresh_token"].as_str().unwrap().to_owned();
    let revoked_access = t["access_token"].as_str().unwrap().to_owned();
    // A refresh token whose family nothing will touch.
    let ru_c = push_simple(&s, &assertion(&par_aud), redirect).await;
    // ... and a consent the user asked to remember.
    let (code_c, session) = code_for(ru_c, true).await;
    let kept = redeem(code_c, assertion(&token_aud)).await.json();
    let kept_rt = kept["refresh_token"].as_str().unwrap().to_owned();
    let rv = s
        .form(
            "/revoke",
            &[
                ("token", &revoked_access),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion(&token_aud)),
            ],
            None,
        )
        .await;
    assert_eq!(rv.status, 200);
    let used_assertion = assertion(&token_aud);
    let r = s
        .form(
            "/introspect",
            &[
                ("token", &revoked_access),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &used_assertion),
            ],
            None,
        )
        .await;
    assert_eq!(r.text(), r#"{"active":false}"#);
    let reg = s
        .json_post(
            "/register",
            &s.iat,
            &json!({"profile": "smart", "redirect_uris": ["http://127.0.0.1/cb"],
                "token_endpoint_auth_method": "none"}),
        )
        .await;
    assert_eq!(reg.status, 201);
    let registered = reg.json()["client_id"].as_str().unwrap().to_owned();

    // CIBA (S6): one request approved on the page but not yet polled, one pending.
    let ciba = |fields: Vec<(&'static str, String)>| {
        let s = &s;
        let a = assertion(&token_aud);
        async move {
            let mut f: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            f.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ));
            f.push(("client_assertion", &a));
            s.form(
                if f[0].0 == "grant_type" {
                    "/token"
                } else {
                    "/bc-authorize"
                },
                &f,
                None,
            )
            .await
        }
    };
    let start_ciba = |message: &'static str| {
        let ciba = &ciba;
        async move {
            let r = ciba(vec![
                ("scope", "openid".into()),
                ("login_hint", "nurse".into()),
                ("binding_message", message.into()),
            ])
            .await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["auth_req_id"].as_str().unwrap().to_owned()
        }
    };
    let poll = |id: String| {
        let ciba = &ciba;
        async move { ciba(vec![("grant_type", CIBA.into()), ("auth_req_id", id)]).await }
    };
    let approved_id = start_ciba("APPROVED-1").await;
    let pending_id = start_ciba("PENDING-2").await;
    let ciba_session = ciba_sign_in(&s, "nurse", "correct horse battery").await;
    let page = s
        .send("GET", "/ciba", &[("cookie", &ciba_session)], vec![], None)
        .await
        .text();
    let form = ciba_request_form(&page, "APPROVED-1");
    assert_eq!(ciba_decide(&s, &ciba_session, &form, "approve").await, 200);

    // SIGKILL: no shutdown, no flush.
    child.sigkill();
    let (mut child, _) = spawn_child(&dir, &config, port);
    let s = TestServer::connect(&dir, port);

    // The approved CIBA request gives its tokens once; the pending one is still pending,
    // is approved now, and gives its tokens once.
    let r = poll(approved_id.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = poll(approved_id).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("invalid_grant"))
    );
    let r = poll(pending_id.clone()).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("authorization_pending")),
        "{}",
        r.text()
    );
    let page = s
        .send("GET", "/ciba", &[("cookie", &ciba_session)], vec![], None)
        .await
        .text();
    let form = ciba_request_form(&page, "PENDING-2");
    assert_eq!(
        ciba_decide(&s, &ciba_session, &form, "approve").await,
        200,
        "the session cookie outlives the restart too"
    );
    // The interval (5 s) since the last poll of this request, or slow_down (B3).
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let r = poll(pending_id).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // The pending request_uri still leads to the login page.
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", "app")
        .append_pair("request_uri", &pending_ru)
        .finish();
    let r = s.get(&format!("/authorize?{q}")).await;
    assert_eq!(r.status, 303, "pending PAR survived: {}", r.text());
    // The remembered consent survived: the same session goes straight back to the app.
    let ru = push_simple(&s, &assertion(&par_aud), redirect).await;
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", "app")
        .append_pair("request_uri", &ru)
        .finish();
    let cookie = [("cookie", session.as_str())];
    let r = s
        .send("GET", &format!("/authorize?{q}"), &cookie, vec![], None)
        .await;
    assert_eq!(r.status, 303);
    let back = s
        .send("GET", r.header("location").unwrap(), &cookie, vec![], None)
        .await;
    assert_eq!(
        back.status,
        303,
        "remembered consent survived: {}",
        back.text()
    );
    assert!(back.header("location").unwrap().contains("code="));
    // The unredeemed code works once, and only once.
    let first = redeem(unredeemed_code.clone(), assertion(&token_aud)).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let second = redeem(unredeemed_code, assertion(&token_aud)).await;
    assert_eq!(second.json()["error"], "invalid_grant");
    // The code redeemed before the kill stays redeemed.
    let again = redeem(redeemed_code, assertion(&token_aud)).await;
    assert_eq!(again.json()["error"], "invalid_grant");
    // The refresh token of that code's family: its code was just reused (A1), so the
    // family is revoked; the token itself survived (it is found, and refused as revoked).
    let rr = s
        .form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion(&token_aud)),
            ],
            None,
        )
        .await;
    assert_eq!(rr.json()["error"], "invalid_grant");
    // A refresh token issued before the kill, of an untouched family, works.
    let rr = s
        .form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &kept_rt),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion(&token_aud)),
            ],
            None,
        )
        .await;
    assert_eq!(rr.status, 200, "{}", rr.text());
    // The used assertion is still used (C1 across restarts).
    let replay = s
        .form(
            "/introspect",
            &[
                ("token", &revoked_access),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &used_assertion),
            ],
            None,
        )
        .await;
    assert_eq!(replay.status, 401);
    // The revoked token stays revoked; the registered client is still registered.
    let r = s
        .form(
            "/introspect",
            &[
                ("token", &revoked_access),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion(&token_aud)),
            ],
            None,
        )
        .await;
    assert_eq!(r.text(), r#"{"active":false}"#);
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", &registered)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", "http://127.0.0.1:5555/cb")
        .append_pair(
            "code_challenge",
            CodeChallenge::for_verifier(VERIFIER).as_str(),
        )
        .append_pair("code_challenge_method", "S256")
        .finish();
    assert_eq!(s.get(&format!("/authorize?{q}")).await.status, 303);
    child.sigkill();

    // The audit chain (S7): after two SIGKILLs a server opens the log again (a line torn
    // by the kill is set aside), closes it cleanly, and the whole chain verifies.
    let s = TestServer::start_at(&dir, &config, port).await;
    assert_eq!(s.get("/healthz").await.status, 200);
    s.stop().await;
    let report = heartgate_server::audit_log::verify(&data.path().join("audit.log"))
        .expect("the audit chain verifies after two SIGKILLs");
    assert!(report.lines > 20, "{report:?}");
}

async fn push_simple(s: &TestServer, assertion: &str, redirect: &str) -> String {
    let ch = CodeChallenge::for_verifier(VERIFIER);
    let r = s
        .form(
            "/par",
            &[
                ("response_type", "code"),
                ("redirect_uri", redirect),
                ("scope", "offline_access user/Observation.rs"),
                ("code_challenge", ch.as_str()),
                ("code_challenge_method", "S256"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["request_uri"].as_str().unwrap().to_owned()
}
