//! Remembered consent: a user who ticks "remember" is not asked again by the same client
//! for the same (or fewer) scopes and patient; more scopes, `prompt=consent`, or a
//! consent given without ticking bring the page back. Kept in the store.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use heartgate_core::authorize::pkce::CodeChallenge;
use heartgate_core::jose::{sign_jwt, Algorithm, SigningKey};
use heartgate_e2e::{cookie_pair, hidden_input, TestServer};
use serde_json::json;

const REDIRECT: &str = "https://app.example/cb";
const VERIFIER: &str = "consent-verifier-0123456789abcdefghijklmnopqrstuvwxyz-ABC";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct App {
    key: SigningKey,
    n: std::sync::atomic::AtomicU32,
}

impl App {
    /// PAR for `scope` (and `prompt`), the request_uri.
    async fn par(&self, s: &TestServer, scope: &str, prompt: Option<&str>) -> String {
        let n = self.n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = now();
        let assertion = sign_jwt(
            &self.key,
            None,
            json!({"iss": "bedside", "sub": "bedside", "aud": format!("{}/par", s.issuer),
                "iat": t, "exp": t + 60, "jti": format!("c-{t}-{n}")})
            .as_object()
            .unwrap(),
        )
        .unwrap();
        let challenge = CodeChallenge::for_verifier(VERIFIER);
        let mut f = vec![
            ("response_type", "code"),
            ("response_mode", "jwt"),
            ("redirect_uri", REDIRECT),
            ("scope", scope),
            ("state", "s"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &assertion),
        ];
        if let Some(p) = prompt {
            f.push(("prompt", p));
        }
        let r = s.form("/par", &f, None).await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["request_uri"].as_str().unwrap().to_owned()
    }
}

/// `/authorize` with the session cookie, then the page it sends the browser to.
async fn authorize(
    s: &TestServer,
    request_uri: &str,
    session: &str,
) -> (String, heartgate_e2e::Resp) {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", "bedside")
        .append_pair("request_uri", request_uri)
        .finish();
    let cookie = [("cookie", session)];
    let r = s
        .send("GET", &format!("/authorize?{q}"), &cookie, Vec::new(), None)
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let next = r.header("location").unwrap().to_owned();
    let page = s.send("GET", &next, &cookie, Vec::new(), None).await;
    (next, page)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remembered_consent_skips_the_page_until_more_is_asked() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let hash = heartgate_server::users::hash_password("correct horse battery").unwrap();
    let doc = json!({
        "clients": [{"client_id": "bedside", "profile": "smart",
            "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [key.verifying_key().to_jwk()]},
            "authorization_signed_response_alg": "ES256",
            "grant_types": ["authorization_code"]}],
        "users": [{"username": "nurse", "password_hash": hash, "subject": "user-42",
            "patients": [{"id": "Patient/123", "label": "Jane Doe"}]}],
    });
    let s = TestServer::start(&toml::to_string(&doc).unwrap()).await;
    let app = App {
        key,
        n: Default::default(),
    };
    let scope = "launch/patient patient/Observation.rs";

    // First time: sign in, then the consent page; allow and remember.
    let ru = app.par(&s, scope, None).await;
    let (login_url, page) = authorize(&s, &ru, "").await;
    assert!(login_url.starts_with("/login?"));
    let pre = cookie_pair(page.header("set-cookie").unwrap(), "__Host-hg_pre").unwrap();
    let html = page.text();
    let ok = s
        .form_with(
            "/login",
            &[
                ("interaction", &hidden_input(&html, "interaction").unwrap()),
                ("csrf", &hidden_input(&html, "csrf").unwrap()),
                ("username", "nurse"),
                ("password", "correct horse battery"),
            ],
            &[("cookie", &pre)],
            None,
        )
        .await;
    assert_eq!(ok.status, 303);
    let session = cookie_pair(ok.header("set-cookie").unwrap(), "__Host-hg_session").unwrap();
    let consent = |html: String, remember: bool| {
        let s = &s;
        let session = session.clone();
        async move {
            let mut f = vec![
                ("interaction", hidden_input(&html, "interaction").unwrap()),
                ("csrf", hidden_input(&html, "csrf").unwrap()),
                ("patient", "Patient/123".to_owned()),
                ("decision", "allow".to_owned()),
            ];
            if remember {
                f.push(("remember", "1".to_owned()));
            }
            let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            s.form_with("/consent", &f, &[("cookie", &session)], None)
                .await
        }
    };
    let page = s
        .send(
            "GET",
            ok.header("location").unwrap(),
            &[("cookie", &session)],
            Vec::new(),
            None,
        )
        .await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("id=\"remember\""));
    let done = consent(page.text(), true).await;
    assert_eq!(done.status, 303);
    assert!(done.header("location").unwrap().starts_with(REDIRECT));

    // Again, same scopes: no page, straight back to the app with a response.
    let ru = app.par(&s, scope, None).await;
    let (consent_url, back) = authorize(&s, &ru, &session).await;
    assert!(consent_url.starts_with("/consent?"));
    assert_eq!(back.status, 303, "{}", back.text());
    let location = back.header("location").unwrap();
    assert!(location.starts_with(REDIRECT) && location.contains("response="));
    // Fewer scopes: covered too.
    let ru = app.par(&s, "launch/patient", None).await;
    assert_eq!(authorize(&s, &ru, &session).await.1.status, 303);

    // prompt=consent: the page, whatever was remembered (OIDC Core §3.1.2.1).
    let ru = app.par(&s, scope, Some("consent")).await;
    let (_, page) = authorize(&s, &ru, &session).await;
    assert_eq!(page.status, 200);
    // Allowed without ticking "remember": the earlier consent no longer holds.
    assert_eq!(consent(page.text(), false).await.status, 303);
    let ru = app.par(&s, scope, None).await;
    let (_, page) = authorize(&s, &ru, &session).await;
    assert_eq!(page.status, 200, "asked again");
    assert_eq!(consent(page.text(), true).await.status, 303);

    // More scopes than remembered: the page.
    let ru = app
        .par(
            &s,
            "launch/patient patient/Observation.rs patient/Condition.rs",
            None,
        )
        .await;
    let (_, page) = authorize(&s, &ru, &session).await;
    assert_eq!(page.status, 200);
    s.stop().await;
}
