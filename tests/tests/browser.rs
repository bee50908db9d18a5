//! The login and consent pages in a real browser: headless Chromium (Debian's
//! `chromium`), driven through `chromedriver` with fantoccini, completes
//! PAR → login → consent → redirect, and the JARM response that reaches the client's
//! callback verifies against the server's JWKS. `tests/run-all` installs Chromium.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fantoccini::{ClientBuilder, Locator};
use heartgate_core::authorize::pkce::CodeChallenge;
use heartgate_core::clock::UnixTime;
use heartgate_core::jose::{
    sign_jwt, verify_jwt, Algorithm, AlgorithmSet, AudienceRule, JwkSet, JwkSetOptions, SigningKey,
    TypRule, Validation,
};
use heartgate_e2e::{url_param, TestServer};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::sync::Mutex;

const VERIFIER: &str = "browser-verifier-0123456789abcdefghijklmnopqrstuvwxyz-ABC";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The client application's callback: records the query it was called with.
async fn callback_server() -> (SocketAddr, Arc<Mutex<Option<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Option<String>>> = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let s = s.clone();
                    async move {
                        if req.uri().path() == "/cb" {
                            *s.lock().await = req.uri().query().map(str::to_owned);
                        }
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(
                                b"<html><body id=\"done\">back at the app</body></html>",
                            ),
                        )))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

struct Driver(tokio::process::Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

async fn chromedriver() -> Driver {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = tokio::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver must be installed (tests/run-all installs Debian's chromium-driver)");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Driver(child, port);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start");
}

/// Fill the sign-in form on the current page and submit it.
async fn sign_in(c: &fantoccini::Client, username: &str) {
    c.find(Locator::Id("username"))
        .await
        .unwrap()
        .send_keys(username)
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys("correct horse battery")
        .await
        .unwrap();
    c.find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// chromedriver and a headless Chromium session (accepting the development CA's
/// certificates), with its profile directory.
async fn browser() -> (Driver, fantoccini::Client, tempfile::TempDir) {
    let driver = chromedriver().await;
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert("acceptInsecureCerts".into(), json!(true));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium", "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
            format!("--user-data-dir={}", profile.path().display())]}),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let c = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("WebDriver session");
    (driver, c, profile)
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_completes_par_login_consent_and_gets_a_verifiable_jarm_response() {
    let (cb, seen) = callback_server().await;
    let redirect = format!("http://127.0.0.1:{}/cb", cb.port());
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let hash = heartgate_server::users::hash_password("correct horse battery").unwrap();
    let doc = json!({
        "clients": [{"client_id": "bedside", "client_name": "Bedside <b>app</b>", "profile": "smart",
            "redirect_uris": [redirect], "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [key.verifying_key().to_jwk()]},
            "require_pushed_authorization_requests": true,
            "authorization_signed_response_alg": "ES256",
            "grant_types": ["authorization_code"]}],
        "users": [{"username": "nurse", "password_hash": hash, "subject": "user-42",
            "display_name": "Nurse Joy",
            "patients": [{"id": "Patient/123", "label": "Jane Doe"}]}],
    });
    let s = TestServer::start(&toml::to_string(&doc).unwrap()).await;
    let assertion = |aud: &str| {
        let t = now();
        sign_jwt(
            &key,
            None,
            json!({"iss": "bedside", "sub": "bedside", "aud": aud, "iat": t, "exp": t + 60,
                "jti": format!("b-{t}-{aud}")})
            .as_object()
            .unwrap(),
        )
        .unwrap()
    };
    let challenge = CodeChallenge::for_verifier(VERIFIER);
    let par = s
        .form(
            "/par",
            &[
                ("response_type", "code"),
                ("response_mode", "jwt"),
                ("redirect_uri", &redirect),
                ("scope", "launch/patient patient/Observation.rs"),
                ("state", "browser-state"),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion(&format!("{}/par", s.issuer))),
            ],
            None,
        )
        .await;
    assert_eq!(par.status, 201, "{}", par.text());
    let request_uri = par.json()["request_uri"].as_str().unwrap().to_owned();

    let (driver, c, _profile) = browser().await;

    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", "bedside")
        .append_pair("request_uri", &request_uri)
        .finish();
    c.goto(&format!("{}/authorize?{q}", s.issuer))
        .await
        .unwrap();
    let at = c.current_url().await.unwrap();
    c.wait()
        .for_element(Locator::Id("username"))
        .await
        .unwrap_or_else(|e| panic!("login page expected at {at}: {e}"));
    let body = c.source().await.unwrap();
    assert!(
        body.contains("Bedside &lt;b&gt;app&lt;/b&gt;"),
        "escaped name: {body}"
    );
    sign_in(&c, "nurse").await;
    c.wait()
        .for_element(Locator::Id("allow"))
        .await
        .expect("consent page");
    let consent = c.source().await.unwrap();
    assert!(
        consent.contains("Read and search the patient's lab results and vital signs (Observation)")
    );
    assert!(consent.contains("Jane Doe"));
    c.find(Locator::Id("allow"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Id("done"))
        .await
        .expect("back at the client's callback");
    let url = c.current_url().await.unwrap();
    assert!(url.as_str().starts_with(&redirect), "{url}");
    c.close().await.unwrap();

    let query = seen.lock().await.clone().expect("the callback was called");
    let jarm = url_param(&format!("?{query}"), "response").expect("a JARM response");
    let keys = JwkSet::from_json(&s.get("/jwks").await.body, &JwkSetOptions::default()).unwrap();
    let v = Validation::new(
        AlgorithmSet::ALL,
        TypRule::OptionalOneOf(&["JWT"]),
        AudienceRule::ExactString("bedside".into()),
    )
    .issuer(s.issuer.clone());
    let claims = verify_jwt(&jarm, &keys, &v, UnixTime(now())).unwrap();
    assert_eq!(claims.get("state"), Some(&json!("browser-state")));
    let code = claims.string("code").unwrap().unwrap().to_owned();
    let tok = s
        .form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &redirect),
                ("code_verifier", VERIFIER),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                (
                    "client_assertion",
                    &assertion(&format!("{}/token", s.issuer)),
                ),
            ],
            None,
        )
        .await;
    assert_eq!(tok.status, 200, "{}", tok.text());
    assert_eq!(tok.json()["patient"], "Patient/123");
    drop(driver);
    s.stop().await;
}

/// CIBA's web approval page in a real browser: the patient signs in, sees the request
/// with the clinic's name (escaped) and the binding message, approves; the clinic's poll
/// then gets tokens.
#[tokio::test(flavor = "multi_thread")]
async fn chromium_approves_a_ciba_request_on_the_approval_page() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let hash = heartgate_server::users::hash_password("correct horse battery").unwrap();
    let ciba = "urn:openid:params:grant-type:ciba";
    let doc = json!({
        "clients": [{"client_id": "clinic", "client_name": "Riverside <i>Clinic</i>",
            "profile": "smart", "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [key.verifying_key().to_jwk()]},
            "grant_types": [ciba], "backchannel_token_delivery_mode": "poll"}],
        "users": [{"username": "jane", "password_hash": hash, "subject": "patient-user-1",
            "display_name": "Jane Doe"}],
    });
    let s = TestServer::start(&toml::to_string(&doc).unwrap()).await;
    let aud = format!("{}/token", s.issuer);
    let assertion = |n: u32| {
        let t = now();
        sign_jwt(
            &key,
            None,
            json!({"iss": "clinic", "sub": "clinic", "aud": aud, "iat": t, "exp": t + 60,
                "jti": format!("c-{t}-{n}")})
            .as_object()
            .unwrap(),
        )
        .unwrap()
    };
    let type_ = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let started = s
        .form(
            "/bc-authorize",
            &[
                ("scope", "openid"),
                ("login_hint", "jane"),
                ("binding_message", "KX-4711"),
                ("client_assertion_type", type_),
                ("client_assertion", &assertion(1)),
            ],
            None,
        )
        .await;
    assert_eq!(started.status, 200, "{}", started.text());
    let auth_req_id = started.json()["auth_req_id"].as_str().unwrap().to_owned();

    let (driver, c, _profile) = browser().await;
    c.goto(&format!("{}/ciba", s.issuer)).await.unwrap();
    c.wait()
        .for_element(Locator::Id("username"))
        .await
        .expect("sign-in form");
    sign_in(&c, "jane").await;
    c.wait()
        .for_element(Locator::Css("button.approve"))
        .await
        .expect("the pending request");
    let page = c.source().await.unwrap();
    assert!(page.contains("KX-4711"), "the binding message is shown");
    assert!(
        page.contains("Riverside &lt;i&gt;Clinic&lt;/i&gt;"),
        "escaped name: {page}"
    );
    c.find(Locator::Css("button.approve"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Id("done"))
        .await
        .expect("decision recorded");
    assert!(c.source().await.unwrap().contains("You approved"));
    c.close().await.unwrap();

    let tok = s
        .form(
            "/token",
            &[
                ("grant_type", ciba),
                ("auth_req_id", &auth_req_id),
                ("client_assertion_type", type_),
                ("client_assertion", &assertion(2)),
            ],
            None,
        )
        .await;
    assert_eq!(tok.status, 200, "{}", tok.text());
    assert!(tok.json()["id_token"].is_string());
    drop(driver);
    s.stop().await;
}
