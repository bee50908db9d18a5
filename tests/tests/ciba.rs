//! CIBA through the server (OpenID CIBA Core 1.0; SPECS b.6; THREATS B*): discovery,
//! `/bc-authorize` with its §13 errors, polling with `authorization_pending` and
//! `slow_down`, the web approval page (sign-in, CSRF, binding-message check, one decision
//! per request), tokens for an approved request with the `auth_req_id` claim in the ID
//! token, `access_denied` for a denied one, and a reused `auth_req_id` refused.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use heartgate_core::jose::{sign_jwt, Algorithm, SigningKey};
use heartgate_e2e::{ciba_decide, ciba_request_form, cookie_pair, hidden_input, TestServer};
use serde_json::{json, Value};

const CIBA: &str = "urn:openid:params:grant-type:ciba";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Clinic {
    id: &'static str,
    key: SigningKey,
    n: std::sync::atomic::AtomicU32,
}

impl Clinic {
    fn assertion(&self, s: &TestServer) -> String {
        let n = self.n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = now();
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

    /// POST to `path` with this client's assertion and `fields`.
    async fn post(&self, s: &TestServer, path: &str, fields: &[(&str, &str)]) -> (u16, Value) {
        let a = self.assertion(s);
        let mut f = vec![
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", a.as_str()),
        ];
        f.extend_from_slice(fields);
        let r = s.form(path, &f, None).await;
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
        let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status, v)
    }

    async fn start(&self, s: &TestServer, fields: &[(&str, &str)]) -> (u16, Value) {
        self.post(s, "/bc-authorize", fields).await
    }

    async fn poll(&self, s: &TestServer, auth_req_id: &str) -> (u16, Value) {
        self.post(
            s,
            "/token",
            &[("grant_type", CIBA), ("auth_req_id", auth_req_id)],
        )
        .await
    }
}

async fn server() -> (TestServer, Clinic, Clinic) {
    let (s, clinic, other, _) = server_with_kiosk().await;
    (s, clinic, other)
}

/// The server, and a third client (`kiosk`) that registered for user codes.
async fn server_with_kiosk() -> (TestServer, Clinic, Clinic, Clinic) {
    server_with_limits(json!({})).await
}

/// [`server_with_kiosk`] with `[limits]` settings.
async fn server_with_limits(limits: Value) -> (TestServer, Clinic, Clinic, Clinic) {
    let clinic = SigningKey::generate(Algorithm::ES256).unwrap();
    let other = SigningKey::generate(Algorithm::ES256).unwrap();
    let kiosk = SigningKey::generate(Algorithm::ES256).unwrap();
    let hash = heartgate_server::users::hash_password("correct horse battery").unwrap();
    let code_hash = heartgate_server::users::hash_password("2468-1357").unwrap();
    let doc = json!({
        "clients": [
            {"client_id": "clinic", "client_name": "Riverside Clinic", "profile": "smart",
             "token_endpoint_auth_method": "private_key_jwt",
             "jwks": {"keys": [clinic.verifying_key().to_jwk()]},
             "grant_types": [CIBA], "backchannel_token_delivery_mode": "poll",
             "scope": "openid fhirUser patient/Observation.rs"},
            {"client_id": "backend", "profile": "smart-backend",
             "token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"],
             "jwks": {"keys": [other.verifying_key().to_jwk()]}, "scope": "system/Observation.rs"},
            {"client_id": "kiosk", "profile": "smart",
             "token_endpoint_auth_method": "private_key_jwt",
             "jwks": {"keys": [kiosk.verifying_key().to_jwk()]},
             "grant_types": [CIBA], "backchannel_token_delivery_mode": "poll",
             "backchannel_user_code_parameter": true},
        ],
        "users": [{"username": "jane", "password_hash": hash, "subject": "patient-user-1",
            "display_name": "Jane Doe", "ciba_user_code_hash": code_hash}],
        "limits": limits,
    });
    let s = TestServer::start(&toml::to_string(&doc).unwrap()).await;
    let mk = |id, key| Clinic {
        id,
        key,
        n: Default::default(),
    };
    (
        s,
        mk("clinic", clinic),
        mk("backend", other),
        mk("kiosk", kiosk),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_registered_for_user_codes_must_send_the_users_code() {
    let (s, _, _, kiosk) = server_with_kiosk().await;
    let hint = [("scope", "openid"), ("login_hint", "jane")];
    let (st, e) = kiosk.start(&s, &hint).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("missing_user_code")));
    let mut wrong = hint.to_vec();
    wrong.push(("user_code", "0000-0000"));
    let (st, e) = kiosk.start(&s, &wrong).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_user_code")));
    let mut right = hint.to_vec();
    right.push(("user_code", "2468-1357"));
    let (st, r) = kiosk.start(&s, &right).await;
    assert_eq!(st, 200, "{r}");
    // Wrong codes are limited per user: after five, even the right one is refused for
    // the rest of the window (and the user's password sign-in is untouched).
    for _ in 0..5 {
        let (st, _) = kiosk.start(&s, &wrong).await;
        assert_eq!(st, 400);
    }
    let (st, e) = kiosk.start(&s, &right).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_user_code")));
    sign_in(&s).await;
    s.stop().await;
}

/// Sign in at the approval page; the session cookie.
async fn sign_in(s: &TestServer) -> String {
    let page = s.get("/ciba").await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("action=\"/ciba/login\""));
    let pre = cookie_pair(page.header("set-cookie").unwrap(), "__Host-hg_pre").unwrap();
    let csrf = hidden_input(&page.text(), "csrf").unwrap();
    let creds = |pw: &'static str| {
        [
            ("csrf", csrf.clone()),
            ("username", "jane".to_owned()),
            ("password", pw.to_owned()),
        ]
    };
    let form = |c: &[(&'static str, String); 3]| -> Vec<(&'static str, String)> { c.to_vec() };
    let send = |fields: Vec<(&'static str, String)>, cookie: Option<String>| async move {
        let f: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        match cookie {
            Some(c) => {
                s.form_with("/ciba/login", &f, &[("cookie", &c)], None)
                    .await
            }
            None => s.form("/ciba/login", &f, None).await,
        }
    };
    // A wrong password: the form again, one fixed message, no session.
    let bad = send(form(&creds("wrong")), Some(pre.clone())).await;
    assert_eq!(bad.status, 401);
    assert!(bad.text().contains("Wrong username or password"));
    assert!(!bad
        .header("set-cookie")
        .unwrap_or("")
        .contains("__Host-hg_session"));
    // Without the pre-login cookie the form is forged: refused.
    let forged = send(form(&creds("correct horse battery")), None).await;
    assert_eq!(forged.status, 403);
    let ok = send(form(&creds("correct horse battery")), Some(pre)).await;
    assert_eq!(ok.status, 303, "{}", ok.text());
    assert_eq!(ok.header("location"), Some("/ciba"));
    cookie_pair(ok.header("set-cookie").unwrap(), "__Host-hg_session").unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_publishes_the_backchannel_endpoint_and_modes() {
    let (s, _, _) = server().await;
    let d = s.get("/.well-known/openid-configuration").await.json();
    assert_eq!(
        d["backchannel_authentication_endpoint"],
        format!("{}/bc-authorize", s.issuer)
    );
    assert_eq!(
        d["backchannel_token_delivery_modes_supported"],
        json!(["poll", "ping", "push"])
    );
    assert_eq!(d["backchannel_user_code_parameter_supported"], true);
    assert!(d["grant_types_supported"]
        .as_array()
        .unwrap()
        .contains(&json!(CIBA)));
    let algs = d["backchannel_authentication_request_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    assert!(!algs.is_empty());
    assert!(algs
        .iter()
        .all(|a| a != "none" && !a.as_str().unwrap().starts_with("HS")));
    s.stop().await;
}

/// THREATS B10: `unknown_user_id` tells a client which users exist (CIBA §13 requires the
/// code), so how fast a client may ask is limited per client: beyond
/// `ciba_per_client_per_minute`, 429 with `Retry-After` and no request started. Requests
/// that fail authentication do not spend the quota of the client they name, and another
/// client is not held back.
#[tokio::test(flavor = "multi_thread")]
async fn b10_login_hint_probing_is_limited_per_client() {
    let (s, clinic, _, kiosk) = server_with_limits(json!({"ciba_per_client_per_minute": 3})).await;
    for _ in 0..5 {
        let r = s
            .form(
                "/bc-authorize",
                &[
                    ("client_id", "clinic"),
                    ("scope", "openid"),
                    ("login_hint", "x"),
                ],
                None,
            )
            .await;
        assert_eq!(r.status, 401, "unauthenticated: {}", r.text());
    }
    for hint in ["alice", "bob", "carol"] {
        let (st, e) = clinic
            .start(&s, &[("scope", "openid"), ("login_hint", hint)])
            .await;
        assert_eq!(
            (st, e["error"].as_str()),
            (400, Some("unknown_user_id")),
            "{hint}"
        );
    }
    for hint in ["dave", "jane"] {
        let a = clinic.assertion(&s);
        let r = s
            .form(
                "/bc-authorize",
                &[
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", a.as_str()),
                    ("scope", "openid"),
                    ("login_hint", hint),
                ],
                None,
            )
            .await;
        assert_eq!(r.status, 429, "{hint}: {}", r.text());
        let e: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(e["error"], "invalid_request");
        assert!(e.get("auth_req_id").is_none());
        let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "Retry-After {wait}");
    }
    // Another client goes on.
    let (st, r) = kiosk
        .start(
            &s,
            &[
                ("scope", "openid"),
                ("login_hint", "jane"),
                ("user_code", "2468-1357"),
            ],
        )
        .await;
    assert_eq!(st, 200, "{r}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn backchannel_requests_are_refused_with_the_ciba_error_codes() {
    let (s, clinic, backend) = server().await;
    let ok = [("scope", "openid"), ("login_hint", "jane")];
    // B10: an unknown user.
    let (st, e) = clinic
        .start(&s, &[("scope", "openid"), ("login_hint", "nobody")])
        .await;
    assert_eq!((st, e["error"].as_str()), (400, Some("unknown_user_id")));
    // B9: two hints, no hint.
    let (st, e) = clinic
        .start(
            &s,
            &[
                ("scope", "openid"),
                ("login_hint", "jane"),
                ("login_hint_token", "x"),
            ],
        )
        .await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_request")));
    let (st, e) = clinic.start(&s, &[("scope", "openid")]).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_request")));
    // SPECS b.6 item 3: scope must hold openid.
    let (st, e) = clinic
        .start(
            &s,
            &[("scope", "patient/Observation.rs"), ("login_hint", "jane")],
        )
        .await;
    assert_eq!(st, 400);
    assert!(
        matches!(
            e["error"].as_str(),
            Some("invalid_scope" | "invalid_request")
        ),
        "{e}"
    );
    // B8: markup and over-long binding messages.
    for m in ["<b>hi</b>", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "\u{202e}evil"] {
        let mut f = ok.to_vec();
        f.push(("binding_message", m));
        let (st, e) = clinic.start(&s, &f).await;
        assert_eq!(
            (st, e["error"].as_str()),
            (400, Some("invalid_binding_message")),
            "{m}"
        );
    }
    // B11: a login_hint_token (a JWT the client signs naming the user), and one expired.
    let lht = |exp: i64| {
        let t = now();
        sign_jwt(
            &clinic.key,
            None,
            json!({"iss": "clinic", "aud": s.issuer, "sub": "jane", "iat": t, "exp": t + exp})
                .as_object()
                .unwrap(),
        )
        .unwrap()
    };
    let fresh = lht(300);
    let (st, r) = clinic
        .start(&s, &[("scope", "openid"), ("login_hint_token", &fresh)])
        .await;
    assert_eq!(st, 200, "{r}");
    let stale = lht(-300);
    let (st, e) = clinic
        .start(&s, &[("scope", "openid"), ("login_hint_token", &stale)])
        .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("expired_login_hint_token"))
    );
    // B18: a client without the CIBA grant.
    let (st, e) = backend.start(&s, &ok).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    // No client authentication: 401 invalid_client.
    let r = s
        .form(
            "/bc-authorize",
            &[
                ("client_id", "clinic"),
                ("scope", "openid"),
                ("login_hint", "jane"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_client");
    // B1: a guessed auth_req_id; B2: another client's.
    let (st, e) = clinic.poll(&s, "guessed-0123456789").await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_grant")));
    let (_, started) = clinic.start(&s, &ok).await;
    let id = started["auth_req_id"].as_str().unwrap();
    let (st, e) = backend.poll(&s, id).await;
    assert_eq!(st, 400);
    assert!(
        matches!(
            e["error"].as_str(),
            Some("invalid_grant" | "unauthorized_client")
        ),
        "{e}"
    );
    // ... and the owner's request is unaffected.
    let (st, e) = clinic.poll(&s, id).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn approve_deny_poll_and_slow_down_through_the_approval_page() {
    let (s, clinic, _) = server().await;
    let start = |m: &'static str| {
        let clinic = &clinic;
        let s = &s;
        async move {
            let (st, r) = clinic
                .start(
                    s,
                    &[
                        ("scope", "openid fhirUser"),
                        ("login_hint", "jane"),
                        ("binding_message", m),
                    ],
                )
                .await;
            assert_eq!(st, 200, "{r}");
            // SPECS b.6 item 6: id, expiry, interval; the id long and random (B1).
            assert!(r["auth_req_id"].as_str().unwrap().len() >= 27);
            assert!(r["expires_in"].as_u64().unwrap() > 0);
            assert_eq!(r["interval"], 5);
            r["auth_req_id"].as_str().unwrap().to_owned()
        }
    };
    // B4 / B12: a request that asked for a 1-second life.
    let (st, short) = clinic
        .start(
            &s,
            &[
                ("scope", "openid"),
                ("login_hint", "jane"),
                ("requested_expiry", "1"),
            ],
        )
        .await;
    assert_eq!(
        (st, short["expires_in"].as_u64()),
        (200, Some(1)),
        "{short}"
    );
    let short = short["auth_req_id"].as_str().unwrap().to_owned();
    let a = start("ALPHA-1").await;
    let b = start("BRAVO-2").await;
    let c = start("CHARLIE-3").await;

    // Polled once: pending. Polled again at once: slow_down (B3).
    for id in [&a, &b, &c] {
        let (st, e) = clinic.poll(&s, id).await;
        assert_eq!(
            (st, e["error"].as_str()),
            (400, Some("authorization_pending"))
        );
    }
    let (st, e) = clinic.poll(&s, &c).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("slow_down")));

    // The patient signs in on their own device and sees the three requests, each with
    // its binding message and the client's name.
    let session = sign_in(&s).await;
    let page = s
        .send("GET", "/ciba", &[("cookie", &session)], Vec::new(), None)
        .await;
    assert_eq!(page.status, 200);
    let html = page.text();
    for m in ["ALPHA-1", "BRAVO-2", "CHARLIE-3", "Riverside Clinic"] {
        assert!(html.contains(m), "{m}");
    }
    let fa = ciba_request_form(&html, "ALPHA-1");
    let fb = ciba_request_form(&html, "BRAVO-2");
    // A decision naming a binding message other than the one shown is refused (B7/B8).
    let wrong = (fa.0.clone(), fa.1.clone(), fb.2.clone());
    assert_eq!(ciba_decide(&s, &session, &wrong, "approve").await, 400);
    // A decision with another request's CSRF token is refused.
    let crossed = (fa.0.clone(), fb.1.clone(), fa.2.clone());
    assert_eq!(ciba_decide(&s, &session, &crossed, "approve").await, 403);
    // Without the session: the sign-in form, nothing decided.
    let anon = s
        .form(
            "/ciba/decide",
            &[
                ("request", &fa.0),
                ("csrf", &fa.1),
                ("binding", &fa.2),
                ("decision", "approve"),
            ],
            None,
        )
        .await;
    assert_eq!(anon.status, 401);
    assert_eq!(ciba_decide(&s, &session, &fa, "approve").await, 200);
    // The first decision wins; a second is refused (B7).
    assert_eq!(ciba_decide(&s, &session, &fa, "deny").await, 409);
    assert_eq!(ciba_decide(&s, &session, &fb, "deny").await, 200);
    let left = s
        .send("GET", "/ciba", &[("cookie", &session)], Vec::new(), None)
        .await
        .text();
    assert!(!left.contains("ALPHA-1") && !left.contains("BRAVO-2"));
    assert!(left.contains("CHARLIE-3"));

    // Polling sooner than the interval is slow_down even once decided; after the
    // interval, the tokens (approved) and access_denied (denied, B6).
    tokio::time::sleep(std::time::Duration::from_millis(5_200)).await;
    let (st, t) = clinic.poll(&s, &a).await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    let id_token = t["id_token"].as_str().unwrap();
    let payload = id_token.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&heartgate_core::jose::b64::decode(payload).unwrap()).unwrap();
    assert_eq!(claims["aud"], "clinic");
    // CIBA §10.3.1: the ID token names the request it answers.
    assert_eq!(
        claims["urn:openid:params:jwt:claim:auth_req_id"],
        a.as_str()
    );
    // B11: that ID token names Jane as an id_token_hint; tampered, it is refused.
    let (st, r) = clinic
        .start(&s, &[("scope", "openid"), ("id_token_hint", id_token)])
        .await;
    assert_eq!(st, 200, "{r}");
    let mut forged = id_token.to_owned();
    forged.pop();
    forged.push(if id_token.ends_with('A') { 'B' } else { 'A' });
    let (st, e) = clinic
        .start(&s, &[("scope", "openid"), ("id_token_hint", &forged)])
        .await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_request")));
    let (st, e) = clinic.poll(&s, &b).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("access_denied")));
    let (st, e) = clinic.poll(&s, &short).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("expired_token")));
    // B5: the auth_req_id was redeemed: a second redemption is invalid_grant.
    tokio::time::sleep(std::time::Duration::from_millis(5_200)).await;
    let (st, e) = clinic.poll(&s, &a).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_grant")));
    s.stop().await;
}

/// An https receiver for notifications: each request's Authorization header and JSON
/// body arrive on the channel; it answers 204.
async fn receiver(
    ca: &heartgate_e2e::TestCa,
) -> (u16, tokio::sync::mpsc::UnboundedReceiver<(String, Value)>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let port = heartgate_e2e::https_server(ca, move |seen| {
        let _ = tx.send((
            seen.authorization.unwrap_or_default(),
            serde_json::from_slice(&seen.body).unwrap(),
        ));
        async { heartgate_e2e::Answer::new(204, Vec::new()) }
    })
    .await;
    (port, rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn ping_and_push_clients_are_notified_at_their_endpoint() {
    let ca = heartgate_e2e::TestCa::new();
    let (port, mut rx) = receiver(&ca).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("partner-ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let keys = [
        SigningKey::generate(Algorithm::ES256).unwrap(),
        SigningKey::generate(Algorithm::ES256).unwrap(),
    ];
    let hash = heartgate_server::users::hash_password("correct horse battery").unwrap();
    let endpoint = format!("https://127.0.0.1:{port}/ciba-callback");
    let client = |id: &str, mode: &str, key: &SigningKey| {
        json!({"client_id": id, "profile": "smart", "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [key.verifying_key().to_jwk()]}, "grant_types": [CIBA],
            "backchannel_token_delivery_mode": mode,
            "backchannel_client_notification_endpoint": endpoint, "scope": "openid"})
    };
    let doc = json!({
        "clients": [client("pinger", "ping", &keys[0]), client("pusher", "push", &keys[1])],
        "users": [{"username": "jane", "password_hash": hash, "subject": "patient-user-1"}],
    });
    // The partner's host is private (loopback here): the operator allows it (B14).
    let s = TestServer::start(&format!(
        "{}[outbound]\nallow_hosts = [\"127.0.0.1\"]\ntrust_anchors = [{:?}]\n",
        toml::to_string(&doc).unwrap(),
        ca_path.display().to_string()
    ))
    .await;
    let [k0, k1] = keys;
    let pinger = Clinic {
        id: "pinger",
        key: k0,
        n: Default::default(),
    };
    let pusher = Clinic {
        id: "pusher",
        key: k1,
        n: Default::default(),
    };
    // B16 / CIBA §7.1: ping and push need a client_notification_token.
    let (st, e) = pinger
        .start(&s, &[("scope", "openid"), ("login_hint", "jane")])
        .await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_request")));
    let long = "a".repeat(1025);
    let (st, _) = pinger
        .start(
            &s,
            &[
                ("scope", "openid"),
                ("login_hint", "jane"),
                ("client_notification_token", &long),
            ],
        )
        .await;
    assert_eq!(st, 400);

    let mut ids = Vec::new();
    for (c, token, msg) in [
        (&pinger, "ping-bearer-0123456789", "PING-1"),
        (&pusher, "push-bearer-0123456789", "PUSH-2"),
    ] {
        let (st, r) = c
            .start(
                &s,
                &[
                    ("scope", "openid"),
                    ("login_hint", "jane"),
                    ("binding_message", msg),
                    ("client_notification_token", token),
                ],
            )
            .await;
        assert_eq!(st, 200, "{r}");
        ids.push(r["auth_req_id"].as_str().unwrap().to_owned());
    }
    // A push client never polls.
    let (st, e) = pusher.poll(&s, &ids[1]).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("unauthorized_client"))
    );

    let session = sign_in(&s).await;
    let html = s
        .send("GET", "/ciba", &[("cookie", &session)], Vec::new(), None)
        .await
        .text();
    let wait = std::time::Duration::from_secs(10);
    // Ping: {"auth_req_id"} with the client's bearer token; then the client fetches.
    assert_eq!(
        ciba_decide(&s, &session, &ciba_request_form(&html, "PING-1"), "approve").await,
        200
    );
    let (auth, body) = tokio::time::timeout(wait, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(auth, "Bearer ping-bearer-0123456789");
    assert_eq!(body, json!({"auth_req_id": ids[0]}));
    let (st, t) = pinger.poll(&s, &ids[0]).await;
    assert_eq!(st, 200, "{t}");
    assert!(t["id_token"].is_string());
    // Push: the token response itself, with the auth_req_id (CIBA §10.3.1).
    assert_eq!(
        ciba_decide(&s, &session, &ciba_request_form(&html, "PUSH-2"), "approve").await,
        200
    );
    let (auth, body) = tokio::time::timeout(wait, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(auth, "Bearer push-bearer-0123456789");
    assert_eq!(body["auth_req_id"], ids[1].as_str());
    assert!(body["access_token"].is_string() && body["id_token"].is_string());
    // The pushed tokens exist once: the id cannot be redeemed again (B5).
    let (st, _) = pusher.poll(&s, &ids[1]).await;
    assert_eq!(st, 400);
    // A push request left undecided: at expiry the client is told (CIBA §10.3.1.2).
    let (st, r) = pusher
        .start(
            &s,
            &[
                ("scope", "openid"),
                ("login_hint", "jane"),
                ("requested_expiry", "1"),
                ("client_notification_token", "push-bearer-0123456789"),
            ],
        )
        .await;
    assert_eq!(st, 200, "{r}");
    let (auth, body) = tokio::time::timeout(std::time::Duration::from_secs(15), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(auth, "Bearer push-bearer-0123456789");
    assert_eq!(
        body,
        json!({"error": "expired_token", "auth_req_id": r["auth_req_id"]})
    );
    // Every step is in the audit log: requested, approved, notified, redeemed, expired.
    let dir = s.stop().await.unwrap();
    let log = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    for reason in [
        "\"started\"",
        "\"approved\"",
        "\"notified\"",
        "\"expired_token\"",
    ] {
        assert!(log.contains(reason), "{reason}");
    }
    assert!(
        !log.contains("push-bearer-0123456789"),
        "no bearer token in the audit"
    );
}

/// A device's JWT (ES256, `kid` = `iss` = device id, `aud` = issuer, ≤ 120 s).
fn device_jwt(key: &SigningKey, s: &TestServer, jti: &str, extra: Value) -> String {
    let t = now();
    let mut c = json!({"iss": key.kid(), "aud": s.issuer, "iat": t, "exp": t + 60, "jti": jti});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    sign_jwt(key, None, c.as_object().unwrap()).unwrap()
}

async fn device_call(s: &TestServer, method: &str, path: &str, jwt: &str) -> (u16, Value) {
    let auth = format!("Bearer {jwt}");
    let r = s
        .send(method, path, &[("authorization", &auth)], Vec::new(), None)
        .await;
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paired_phone_lists_and_approves_its_users_requests() {
    let (s, clinic, _) = server().await;
    let session = sign_in(&s).await;
    let cookie = [("cookie", session.as_str())];
    // The devices page: none yet, and a pairing form.
    let page = s
        .send("GET", "/ciba/devices", &cookie, Vec::new(), None)
        .await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("no-devices"));
    let csrf = hidden_input(&page.text(), "csrf").unwrap();
    // A forged pairing form is refused.
    let forged = s
        .form_with("/ciba/devices/pair", &[("csrf", "x")], &cookie, None)
        .await;
    assert_eq!(forged.status, 403);
    let shown = s
        .form_with("/ciba/devices/pair", &[("csrf", &csrf)], &cookie, None)
        .await;
    assert_eq!(shown.status, 200);
    let html = shown.text();
    let start = html.find("id=\"pairing-code\">").unwrap() + "id=\"pairing-code\">".len();
    let code = html[start..start + 8].to_owned();

    // The phone completes pairing with the code, its public key and a name.
    let phone = SigningKey::generate(Algorithm::ES256).unwrap();
    let pair = |code: &str, jwk: Value| {
        let body = json!({"code": code, "jwk": jwk, "name": "Jane's phone"}).to_string();
        let s = &s;
        async move {
            s.send(
                "POST",
                "/device/pair",
                &[("content-type", "application/json")],
                body.into_bytes(),
                None,
            )
            .await
        }
    };
    // A private key is refused, and the code is not used up by the refusal.
    let jwk = Value::Object(phone.verifying_key().to_jwk());
    let mut private = jwk.clone();
    private["d"] = json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(pair(&code, private).await.status, 400);
    let r = pair(&code, jwk.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let device_id = r.json()["device_id"].as_str().unwrap().to_owned();
    // The code works once.
    let again = pair(&code, jwk.clone()).await;
    assert_eq!(
        (again.status, again.json()["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let listed = s
        .send("GET", "/ciba/devices", &cookie, Vec::new(), None)
        .await
        .text();
    assert!(listed.contains("Jane&#x27;s phone") || listed.contains("Jane's phone"));

    // A request for Jane reaches her phone.
    let (st, started) = clinic
        .start(
            &s,
            &[
                ("scope", "openid"),
                ("login_hint", "jane"),
                ("binding_message", "PHONE-7"),
            ],
        )
        .await;
    assert_eq!(st, 200);
    let auth_req_id = started["auth_req_id"].as_str().unwrap().to_owned();
    let phone = phone.with_kid(device_id.clone()).unwrap();
    let list_jwt = device_jwt(&phone, &s, "list-1", json!({}));
    let (st, list) = device_call(&s, "GET", "/device/requests", &list_jwt).await;
    assert_eq!(st, 200, "{list}");
    let req = &list["requests"][0];
    assert_eq!(req["binding_message"], "PHONE-7");
    assert_eq!(req["client_name"], "Riverside Clinic");
    // The same JWT twice: refused (single-use jti); none, or another key's: refused.
    let (st, _) = device_call(&s, "GET", "/device/requests", &list_jwt).await;
    assert_eq!(st, 401);
    let (st, _) = device_call(&s, "GET", "/device/requests", "").await;
    assert_eq!(st, 401);
    let stranger = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid(device_id.clone())
        .unwrap();
    let (st, _) = device_call(
        &s,
        "GET",
        "/device/requests",
        &device_jwt(&stranger, &s, "list-2", json!({})),
    )
    .await;
    assert_eq!(st, 401);

    // The decision covers the request and the hash of the message the phone showed.
    let hash = heartgate_core::ciba::binding_message_hash("PHONE-7");
    let wrong = device_jwt(
        &phone,
        &s,
        "decide-0",
        json!({"request_ref": req["request_ref"], "approve": true,
            "binding_message_hash": heartgate_core::ciba::binding_message_hash("OTHER")}),
    );
    let (st, _) = device_call(&s, "POST", "/device/decision", &wrong).await;
    assert_eq!(st, 400);
    let ok = device_jwt(
        &phone,
        &s,
        "decide-1",
        json!({"request_ref": req["request_ref"], "approve": true,
            "binding_message_hash": hash}),
    );
    let (st, d) = device_call(&s, "POST", "/device/decision", &ok).await;
    assert_eq!((st, d["decision"].as_str()), (200, Some("approved")));
    // A second decision from the phone: the first one stands (B7).
    let again = device_jwt(
        &phone,
        &s,
        "decide-2",
        json!({"request_ref": req["request_ref"], "approve": false,
            "binding_message_hash": heartgate_core::ciba::binding_message_hash("PHONE-7")}),
    );
    let (st, _) = device_call(&s, "POST", "/device/decision", &again).await;
    assert_eq!(st, 409);
    let (st, t) = clinic.poll(&s, &auth_req_id).await;
    assert_eq!(st, 200, "{t}");

    // Removed from the devices page: the phone's JWTs no longer authenticate.
    let page = s
        .send("GET", "/ciba/devices", &cookie, Vec::new(), None)
        .await
        .text();
    let section = page.split("class=\"device\"").nth(1).unwrap();
    let remove_csrf = hidden_input(section, "csrf").unwrap();
    let r = s
        .form_with(
            "/ciba/devices/remove",
            &[("device", &device_id), ("csrf", &remove_csrf)],
            &cookie,
            None,
        )
        .await;
    assert_eq!(r.status, 303);
    let (st, _) = device_call(
        &s,
        "GET",
        "/device/requests",
        &device_jwt(&phone, &s, "list-3", json!({})),
    )
    .await;
    assert_eq!(st, 401);
    // The audit says which device approved.
    let dir = s.stop().await.unwrap();
    let log = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    let approved = log.lines().find(|l| l.contains("\"approved\"")).unwrap();
    assert!(approved.contains(&format!("\"device_id\":\"{device_id}\"")));
}

#[tokio::test(flavor = "multi_thread")]
async fn pairing_guesses_are_throttled_per_address() {
    let (s, _, _) = server().await;
    let phone = SigningKey::generate(Algorithm::ES256).unwrap();
    let jwk = Value::Object(phone.verifying_key().to_jwk());
    let mut statuses = Vec::new();
    for i in 0..12 {
        let body = json!({"code": format!("ZZZZZZ{:02}", i), "jwk": jwk, "name": "x"}).to_string();
        let r = s
            .send(
                "POST",
                "/device/pair",
                &[("content-type", "application/json")],
                body.into_bytes(),
                None,
            )
            .await;
        statuses.push(r.status);
    }
    assert!(statuses[..10].iter().all(|&st| st == 400), "{statuses:?}");
    assert!(statuses[10..].iter().all(|&st| st == 429), "{statuses:?}");
    s.stop().await;
}
