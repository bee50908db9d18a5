//! Conformance-style negative suite (issue #9; THREATS.md §4.3 and its appendix "OIDF
//! conformance modules to mirror"). The OpenID Foundation suite cannot run here, so its
//! server-side modules are rebuilt against the real server over real TLS with real client
//! certificates: one test per module, named after it (the plan prefix dropped), asserting
//! the exact HTTP status and RFC `error` code (with `Cache-Control: no-store`, and
//! `WWW-Authenticate` on 401), and that a refused request left the observable state
//! unchanged (a code, a `request_uri` or an `auth_req_id` still works for its owner).
//!
//! The client matrix is {private_key_jwt, tls_client_auth} × {plain response, JARM}: the
//! plain-response clients use the `fapi2-security` profile, the JARM ones
//! `fapi2-message-signing` (signed request objects and JARM). Modules that apply to every
//! variant run over [`World::matrix`]. DPoP is not built yet, so its modules are not here
//! (README, "Conformance-style negative suite").
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use heartgate_core::authorize::pkce::CodeChallenge;
use heartgate_core::clock::UnixTime;
use heartgate_core::jose::{
    b64, sign_jwt, verify_jwt, Algorithm, AlgorithmSet, AudienceRule, JwkSet, JwkSetOptions,
    SigningKey, TypRule, Validation,
};
use heartgate_e2e::{
    consent, hidden_input, sign_in, url_param, Identity, Resp, SignedIn, TestCa, TestServer,
};
use serde_json::{json, Map, Value};

const PASSWORD: &str = "correct horse battery";
const VERIFIER: &str = "conformance-verifier-0123456789abcdefghijklmnopqrstuvwxyz-ABCD";
const REDIRECT: &str = "https://client.example/cb";
const SCOPE: &str = "openid offline_access";
const SMART_REDIRECT: &str = "https://app.example/cb";
const SMART_REDIRECT_WITH_QUERY: &str = "https://app.example/cb2?x=1";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const CIBA: &str = "urn:openid:params:grant-type:ciba";
const MIN: i64 = 60;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// argon2id in a debug build is slow: the one password, hashed once per test binary with
/// parameters far below any real setting (verification uses the hash's own).
fn password_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| {
        let cheap = heartgate_server::users::PasswordParams {
            memory_kib: 8,
            iterations: 1,
            lanes: 1,
        };
        heartgate_server::users::hash_password_with(PASSWORD, cheap).unwrap()
    })
}

/// A test-only RSA key (made once with `openssl genpkey`, 2048 bits: generating one in
/// a debug build is slow). Every client registers it for PS256; the RS256 modules sign
/// with it (the right key, the wrong algorithm).
const RSA_TEST_KEY: &str = "\
-----BEGIN PRIVATE KEY-----
MIIEvwIBADANBgkqhkiG9w0BAQEFAASCBKkwggSlAgEAAoIBAQCpMzA73CnOFWh0
MeYDAn5OdK360bbps3cN/ctF/tVA/b7JZRxmSzbyKeIR4rusUvaoFa0UvneqJFuA
aLyytzi1X0IWn5gfgjEuYZvjCMUKZm92WaNPdz35hi0/TF7t/JcciAaA6ulGqQ/3
lWGMiA3OkbaLwq10I1Y/xQbJfx1BLDaK0kBefQlNH9Jcd8YX8anXOQTPqqaSW5Y8
ZaDfWveKbuV7KFaPdg1hZ7Jwq3Qi6SPqQ2/+DkcDc+1PSGIHb00Li2YcqtTNylW3
V1w+AnCyHa1UZEsYxczIzsj2AZGnxKlkEWgZzF7IWP5SUNKeST55arjjUiYOD/lp
8BP+A1mXAgMBAAECggEAK8K3eOPqVAipaVP2f1THwhbfYH2Y5zypUA8R4dqU4Sg/
jer+u148qck3VRTlIR6b+MEScMkKPhEFMWLlWvuUSSSH/T3tpEiR28MXBFMiUxxH
O77XRBg9CSowzaw86SRpGNH9jJ41Ezdqj8gs4KHXoFODeQYywlTZW8jjhn2/3Tjb
7L8uvPFju/LhCBz5JNT8dCT4XBL/l2aacAbQDolrDX1tEZwAQhGyp2gsouJY6TiA
mBBcifpPJMKDxD+2Cs56ZDAeTjxug7mTAjXAu9XemR4cu7y5bXYVfk6DsDjLT3X7
X6npbfTH9w/r8G8lYFmXLo1HTMHTvWX+cNOO+taLgQKBgQDm+J/eeTq1/CxRa5o/
cAGPWzcfcV23KNW7FIWtFZ43KZvTNWl2++7aPJswFyg+L9ugl1NzqP+q5IKNTB81
bHoEFmhPepRrtSsXiU1GG+kjF0ZUduRRlNLYR5O0HTwqPLoB3RhzWo8nFeKCfIA4
oO7JBPaUm1U+c2KNR4RrJRW54QKBgQC7iPeUAZdBgR8L76gxS5/59xPNAZOIZuwT
yI3wvzu+6iLO3bp+0ubpySPOJubdc3BxKUxojpZudnTLqCBZe/0XIxLMtmfGhcG6
RXfXs93CdXcNFFU3A1ZR7XXkvzWJm6eQg+b3d7T8y/0whmpyL2QSUKbry2Y6K5T8
3x7Y7hwydwKBgQCIXX/d1MtSCLmNtK7UB2gUYHFSEheXfPd7RamKwDmyLdG/SEil
JCcoGCIzqWhsFstfrBhsL/oKxnFBxRCj9RCw+x3I1wFr+gGgGsNRwkbKHgK6+Zrh
g7FcWh4deCk+cq4LTaMS8AOWuvgJvEHjrTht3I1Mvcz9Wxhzeyb2L2X9YQKBgQCD
lAARSmRzw0KjP01E+QiPe3nbFsYKqBvvbYGZbrNeqiwt9IhLP3JgiY2jsMu+iKZV
32IK4jBN5LLhyV6ZKlNTDnq8QybgtSxNozwIjdyD+aLD/IYliSPha7iR/E519E5H
KSS+cLD9xaoph8Xbw8B00T2spxNcsQNhwLKGBdqm1QKBgQDJDMoxx/UZ1EXkBpaM
j9jJ5hA3+zaf5hT7FbIM/isvfvYo1e8yNhAnhHv2gQHSsUjkg7wg0Et1yzhfKNrr
mrZpVQqDYO962xmJ5FsVkOxaspzrDERRnaRsCIwCvlkKQeDUpx63GJG23TVIIaLg
ntSUzYt4qsPUnYlZaDVToI1lQA==
-----END PRIVATE KEY-----
";

fn rsa_key(alg: Algorithm) -> SigningKey {
    SigningKey::from_pkcs8_pem(alg, RSA_TEST_KEY)
        .unwrap()
        .with_kid("rsa-1")
        .unwrap()
}

/// `base` with `patch` applied: a member set to `null` is removed.
fn merged(base: Value, patch: &Value) -> Value {
    let mut o = base.as_object().unwrap().clone();
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            o.remove(k);
        } else {
            o.insert(k.clone(), v.clone());
        }
    }
    Value::Object(o)
}

/// A compact JWS by hand, for the headers no signer makes (`alg: none`).
fn unsigned_jwt(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64::encode(header.to_string()),
        b64::encode(claims.to_string())
    )
}

/// `jwt` with the signature of another message by the same key: a bad signature.
fn with_bad_signature(jwt: &str, other: &str) -> String {
    let (signed, _) = jwt.rsplit_once('.').unwrap();
    let (_, sig) = other.rsplit_once('.').unwrap();
    format!("{signed}.{sig}")
}

/// The error response of a back-channel endpoint: status, `error`, no-store, and a
/// `WWW-Authenticate` challenge with 401 (RFC 6749 §5.2).
#[track_caller]
fn assert_error(r: &Resp, status: u16, code: &str, what: &str) {
    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    assert_eq!(
        (r.status, body["error"].as_str()),
        (status, Some(code)),
        "{what}: {}",
        r.text()
    );
    assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
    // RFC 6749 §5.2: `error` and `error_description` are printable ASCII without `"` and
    // `\` (the suite's ValidateErrorDescriptionFrom…ResponseError conditions).
    for member in ["error", "error_description"] {
        if let Some(v) = body.get(member) {
            let ok = v.as_str().is_some_and(|t| {
                t.bytes()
                    .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
            });
            assert!(ok, "{what}: {member} {v}");
        }
    }
    if status == 401 {
        assert!(r.header("www-authenticate").is_some(), "{what}");
    }
}

/// The authorization endpoint refused with its error page: no redirect to anyone
/// (RFC 6749 §4.1.2.1: the redirect URI cannot be trusted, or PAR is required).
#[track_caller]
fn assert_error_page(r: &Resp, what: &str) {
    assert_eq!(r.status, 400, "{what}: {}", r.text());
    assert!(r.header("location").is_none(), "{what}");
    assert!(
        r.header("content-type").unwrap().starts_with("text/html"),
        "{what}"
    );
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Auth {
    PrivateKeyJwt,
    TlsClientAuth,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Response {
    /// `fapi2-security`: form parameters at PAR, the code in the query.
    Plain,
    /// `fapi2-message-signing`: a signed request object at PAR, the code in JARM.
    Jarm,
}

/// A static client of the test server: its keys, its certificate, how it authenticates.
struct Client {
    id: String,
    auth: Auth,
    response: Response,
    key: SigningKey,
    cert: Identity,
    n: AtomicU32,
}

impl Client {
    fn new(ca: &TestCa, id: &str, auth: Auth, response: Response) -> Client {
        Client {
            id: id.to_owned(),
            auth,
            response,
            key: SigningKey::generate(Algorithm::ES256).unwrap(),
            cert: ca.issue(id),
            n: AtomicU32::new(0),
        }
    }

    fn jwks(&self) -> Value {
        json!({"keys": [self.key.verifying_key().to_jwk(),
            rsa_key(Algorithm::PS256).verifying_key().to_jwk()]})
    }

    /// Client metadata for the configuration.
    fn metadata(&self) -> Value {
        let profile = match self.response {
            Response::Plain => "fapi2-security",
            Response::Jarm => "fapi2-message-signing",
        };
        let mut m = json!({"client_id": self.id, "profile": profile,
            "jwks": self.jwks(), "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "require_pushed_authorization_requests": true,
            "tls_client_certificate_bound_access_tokens": true, "scope": SCOPE});
        self.auth_metadata(&mut m);
        if self.response == Response::Jarm {
            m["request_object_signing_alg"] = json!("ES256");
            m["authorization_signed_response_alg"] = json!("ES256");
        }
        m
    }

    /// A FAPI-CIBA poll client.
    fn ciba_metadata(&self) -> Value {
        let mut m = json!({"client_id": self.id, "profile": "fapi2-security",
            "jwks": self.jwks(), "grant_types": [CIBA],
            "backchannel_token_delivery_mode": "poll",
            "tls_client_certificate_bound_access_tokens": true, "scope": "openid"});
        self.auth_metadata(&mut m);
        m
    }

    fn auth_metadata(&self, m: &mut Value) {
        match self.auth {
            Auth::PrivateKeyJwt => m["token_endpoint_auth_method"] = json!("private_key_jwt"),
            Auth::TlsClientAuth => {
                m["token_endpoint_auth_method"] = json!("tls_client_auth");
                m["tls_client_auth_subject_dn"] = json!(format!("CN={},O=Clinic", self.id));
            }
        }
    }

    fn unique(&self) -> String {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}-{}", self.id, now())
    }

    fn sign(&self, claims: &Value, typ: Option<&str>) -> String {
        sign_jwt(&self.key, typ, claims.as_object().unwrap()).unwrap()
    }

    /// A client assertion (RFC 7523) with `patch` applied to the FAPI 2.0 claims.
    fn assertion_with(&self, s: &TestServer, patch: &Value) -> String {
        let t = now();
        let claims = json!({"iss": self.id, "sub": self.id, "aud": s.issuer,
            "iat": t, "exp": t + MIN, "jti": self.unique()});
        self.sign(&merged(claims, patch), None)
    }

    fn assertion(&self, s: &TestServer) -> String {
        self.assertion_with(s, &json!({}))
    }

    /// How this client authenticates a back-channel request.
    fn auth_fields(&self, s: &TestServer) -> Vec<(String, String)> {
        match self.auth {
            Auth::PrivateKeyJwt => vec![
                ("client_assertion_type".into(), ASSERTION_TYPE.into()),
                ("client_assertion".into(), self.assertion(s)),
            ],
            Auth::TlsClientAuth => vec![("client_id".into(), self.id.clone())],
        }
    }

    /// POST `fields` plus this client's authentication, over TLS with its certificate.
    async fn post(&self, s: &TestServer, path: &str, fields: &[(&str, &str)]) -> Resp {
        let auth = self.auth_fields(s);
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        // A field the request already carries (a `client_id`) is not sent twice.
        all.extend(
            auth.iter()
                .filter(|(k, _)| !fields.iter().any(|(f, _)| f == k))
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        s.form(path, &all, Some(&self.cert)).await
    }

    /// The authorization request's parameters (request object claims).
    fn request_claims(&self, s: &TestServer) -> Value {
        let t = now();
        let n = self.unique();
        let mut c = json!({"iss": self.id, "aud": s.issuer, "client_id": self.id,
            "exp": t + 300, "nbf": t, "iat": t, "jti": n,
            "response_type": "code", "redirect_uri": REDIRECT, "scope": SCOPE,
            "state": format!("st-{n}"), "nonce": format!("n-{n}"),
            "code_challenge": CodeChallenge::for_verifier(VERIFIER).as_str(),
            "code_challenge_method": "S256"});
        if self.response == Response::Jarm {
            c["response_mode"] = json!("jwt");
        }
        c
    }

    /// PAR fields for `claims`: a signed request object (JARM clients), or the claims as
    /// form parameters (plain clients).
    fn par_fields(&self, claims: &Value) -> Vec<(String, String)> {
        match self.response {
            Response::Jarm => vec![
                ("client_id".into(), self.id.clone()),
                (
                    "request".into(),
                    self.sign(claims, Some("oauth-authz-req+jwt")),
                ),
            ],
            Response::Plain => claims
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| !["iss", "aud", "exp", "nbf", "iat", "jti"].contains(&k.as_str()))
                .map(|(k, v)| {
                    let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                    (k.clone(), v)
                })
                .collect(),
        }
    }

    async fn par_fields_post(&self, s: &TestServer, fields: &[(String, String)]) -> Resp {
        let f: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.post(s, "/par", &f).await
    }

    /// PAR with `patch` applied to the request's parameters.
    async fn par_with(&self, s: &TestServer, patch: &Value) -> Resp {
        let fields = self.par_fields(&merged(self.request_claims(s), patch));
        self.par_fields_post(s, &fields).await
    }

    /// A pushed request with `patch`: its `request_uri`.
    async fn push_with(&self, s: &TestServer, patch: &Value) -> String {
        let r = self.par_with(s, patch).await;
        assert_eq!(r.status, 201, "{}: {}", self.id, r.text());
        assert_eq!(r.header("cache-control"), Some("no-store"));
        r.json()["request_uri"].as_str().unwrap().to_owned()
    }

    async fn push(&self, s: &TestServer) -> String {
        self.push_with(s, &json!({})).await
    }

    /// The token request for `code`, with `patch` on its fields.
    async fn redeem_with(&self, s: &TestServer, code: &str, extra: &[(&str, &str)]) -> Resp {
        let mut f = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ];
        for (k, v) in extra {
            f.retain(|(fk, _)| fk != k);
            if !v.is_empty() {
                f.push((k, v));
            }
        }
        self.post(s, "/token", &f).await
    }

    async fn redeem(&self, s: &TestServer, code: &str) -> Resp {
        self.redeem_with(s, code, &[]).await
    }

    /// A signed CIBA authentication request (FAPI-CIBA: signed requests only).
    fn ciba_request(&self, s: &TestServer, patch: &Value) -> String {
        let t = now();
        let claims = json!({"iss": self.id, "aud": s.issuer, "exp": t + 300, "nbf": t,
            "iat": t, "jti": self.unique(), "scope": "openid", "login_hint": "nurse",
            "binding_message": "CONF-1"});
        self.sign(&merged(claims, patch), None)
    }

    async fn bc_authorize(&self, s: &TestServer, patch: &Value) -> Resp {
        let request = self.ciba_request(s, patch);
        self.post(s, "/bc-authorize", &[("request", &request)])
            .await
    }

    /// A started CIBA request: its `auth_req_id`.
    async fn ciba_start(&self, s: &TestServer, patch: &Value) -> String {
        let r = self.bc_authorize(s, patch).await;
        assert_eq!(r.status, 200, "{}: {}", self.id, r.text());
        r.json()["auth_req_id"].as_str().unwrap().to_owned()
    }

    async fn poll(&self, s: &TestServer, auth_req_id: &str) -> Resp {
        self.post(
            s,
            "/token",
            &[("grant_type", CIBA), ("auth_req_id", auth_req_id)],
        )
        .await
    }
}

/// One server with every client of the suite, and the user's browser session.
struct World {
    s: TestServer,
    clients: Vec<Client>,
    ca: TestCa,
    session: Mutex<Option<String>>,
    /// Notifications the ping clients' endpoint received.
    pings: Arc<AtomicU32>,
    /// Requests at the address the endpoint redirects to (none, if never followed).
    redirected: Arc<AtomicU32>,
    _ca_dir: tempfile::TempDir,
}

/// What the ping clients' notification endpoint answers.
#[derive(Clone, Copy)]
enum PingAnswer {
    /// This status, with a small JSON body.
    Status(u16),
    /// 301 to another https endpoint (which counts its requests).
    Redirect,
}

const MATRIX: [&str; 4] = ["sp-pkjwt", "sp-mtls", "ms-pkjwt", "ms-mtls"];

impl World {
    async fn start() -> World {
        Self::start_with(60, None).await
    }

    /// A server whose pushed requests live `par_lifetime` seconds; with `ping`, two more
    /// FAPI-CIBA clients in ping mode (`ciba-ping-pkjwt`, `ciba-ping-mtls`) whose
    /// notification endpoint (on 127.0.0.1, allowed to the outbound guard) answers so.
    async fn start_with(par_lifetime: u32, ping: Option<PingAnswer>) -> World {
        use Auth::{PrivateKeyJwt as Pk, TlsClientAuth as Tls};
        use Response::{Jarm, Plain};
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("client-ca.pem");
        std::fs::write(&ca_path, &ca.pem).unwrap();
        let clients: Vec<Client> = [
            ("sp-pkjwt", Pk, Plain),
            ("sp-mtls", Tls, Plain),
            ("ms-pkjwt", Pk, Jarm),
            ("ms-mtls", Tls, Jarm),
            ("sp-pkjwt-2", Pk, Plain),
            ("sp-mtls-2", Tls, Plain),
            ("ms-pkjwt-2", Pk, Jarm),
            ("ms-mtls-2", Tls, Jarm),
            ("ciba-pkjwt", Pk, Plain),
            ("ciba-mtls", Tls, Plain),
            ("ciba-pkjwt-2", Pk, Plain),
            ("ciba-mtls-2", Tls, Plain),
        ]
        .into_iter()
        .map(|(id, a, r)| Client::new(&ca, id, a, r))
        .collect();
        let mut metadata: Vec<Value> = clients
            .iter()
            .map(|c| {
                if c.id.starts_with("ciba") {
                    c.ciba_metadata()
                } else {
                    c.metadata()
                }
            })
            .collect();
        let (pings, redirected) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let mut clients = clients;
        let mut outbound = json!({});
        if let Some(answer) = ping {
            let answer = match answer {
                PingAnswer::Status(status) => {
                    heartgate_e2e::Answer::new(status, br#"{"note":"ignored"}"#.to_vec())
                }
                PingAnswer::Redirect => {
                    let hits = redirected.clone();
                    let target = heartgate_e2e::https_server(&ca, move |_| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        async { heartgate_e2e::Answer::new(204, Vec::new()) }
                    })
                    .await;
                    let mut a = heartgate_e2e::Answer::new(301, Vec::new());
                    a.headers
                        .push(("location", format!("https://127.0.0.1:{target}/elsewhere")));
                    a
                }
            };
            let hits = pings.clone();
            let port = heartgate_e2e::https_server(&ca, move |_| {
                hits.fetch_add(1, Ordering::SeqCst);
                let a = answer.clone();
                async move { a }
            })
            .await;
            for (id, auth) in [
                ("ciba-ping-pkjwt", Auth::PrivateKeyJwt),
                ("ciba-ping-mtls", Auth::TlsClientAuth),
            ] {
                let c = Client::new(&ca, id, auth, Response::Plain);
                let mut m = c.ciba_metadata();
                m["backchannel_token_delivery_mode"] = json!("ping");
                m["backchannel_client_notification_endpoint"] =
                    json!(format!("https://127.0.0.1:{port}/ciba-callback"));
                metadata.push(m);
                clients.push(c);
            }
            outbound = json!({"allow_hosts": ["127.0.0.1"],
                "trust_anchors": [ca_path.display().to_string()]});
        }
        // A SMART app without PAR, for the OIDC-core front-channel modules.
        metadata.push(json!({"client_id": "smart-app", "profile": "smart",
            "token_endpoint_auth_method": "none", "grant_types": ["authorization_code"],
            "redirect_uris": [SMART_REDIRECT, SMART_REDIRECT_WITH_QUERY], "scope": "openid"}));
        let doc = json!({
            "outbound": outbound,
            "tls": {"client_ca": [ca_path.display().to_string()]},
            "tokens": {"default_audience": "https://fhir.example/r4",
                "par_lifetime": par_lifetime},
            "clients": metadata,
            "users": [{"username": "nurse", "password_hash": password_hash(),
                "subject": "user-42", "display_name": "Nurse Joy"}],
        });
        let s = TestServer::start(&toml::to_string(&doc).unwrap()).await;
        World {
            s,
            clients,
            ca,
            session: Mutex::new(None),
            pings,
            redirected,
            _ca_dir: dir,
        }
    }

    fn c(&self, id: &str) -> &Client {
        self.clients.iter().find(|c| c.id == id).unwrap()
    }

    /// The {private_key_jwt, tls_client_auth} × {plain response, JARM} clients.
    fn matrix(&self) -> impl Iterator<Item = &Client> {
        MATRIX.iter().map(|id| self.c(id))
    }

    /// The other client of the same kind (for cross-client modules).
    fn other(&self, c: &Client) -> &Client {
        self.c(&format!("{}-2", c.id))
    }

    /// The front channel for a pushed request up to the consent page: sign in (once per
    /// world), or the authorization endpoint with the session.
    async fn signed_in(&self, c: &Client, request_uri: &str) -> SignedIn {
        let session = self.session.lock().unwrap().clone();
        match session {
            None => {
                let si = sign_in(&self.s, &c.id, request_uri, "nurse", PASSWORD).await;
                *self.session.lock().unwrap() = Some(si.session.clone());
                si
            }
            Some(session) => {
                let r = self
                    .s
                    .send(
                        "GET",
                        &authorize_path(&c.id, request_uri),
                        &[("cookie", &session)],
                        Vec::new(),
                        None,
                    )
                    .await;
                assert_eq!(r.status, 303, "{}", r.text());
                SignedIn {
                    session,
                    next: r.header("location").unwrap().to_owned(),
                }
            }
        }
    }

    /// The whole front channel, the user allowing: where the server sends the browser.
    async fn authorize(&self, c: &Client, request_uri: &str) -> String {
        consent(&self.s, &self.signed_in(c, request_uri).await, &[]).await
    }

    /// The session cookie of the world's user (signed in by an earlier flow).
    fn session_cookie(&self) -> String {
        self.session.lock().unwrap().clone().expect("signed in")
    }

    /// GET the authorization endpoint for a pushed request with the session cookie.
    async fn authorize_signed_in(&self, c: &Client, request_uri: &str) -> Resp {
        let cookie = self.session_cookie();
        self.s
            .send(
                "GET",
                &authorize_path(&c.id, request_uri),
                &[("cookie", &cookie)],
                Vec::new(),
                None,
            )
            .await
    }

    /// The authorization response's parameters: the verified JARM claims, or the query.
    async fn response(&self, c: &Client, location: &str) -> Map<String, Value> {
        assert!(location.starts_with(REDIRECT), "{location}");
        match c.response {
            Response::Jarm => {
                let jarm = url_param(location, "response").expect("a JARM response");
                let v = Validation::new(
                    AlgorithmSet::FAPI2,
                    TypRule::OptionalOneOf(&["JWT"]),
                    AudienceRule::ExactString(c.id.clone()),
                )
                .issuer(self.s.issuer.clone());
                verify_jwt(&jarm, &self.jwks().await, &v, UnixTime(now()))
                    .unwrap()
                    .as_map()
                    .clone()
            }
            Response::Plain => {
                let (_, q) = location.split_once('?').unwrap();
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), Value::from(v.into_owned())))
                    .collect()
            }
        }
    }

    async fn jwks(&self) -> JwkSet {
        let r = self.s.get("/jwks").await;
        JwkSet::from_json(&r.body, &JwkSetOptions::default()).unwrap()
    }

    /// The authorization response of a whole front channel for `patch`.
    async fn respond_with(&self, c: &Client, patch: &Value) -> Map<String, Value> {
        let ru = c.push_with(&self.s, patch).await;
        let location = self.authorize(c, &ru).await;
        self.response(c, &location).await
    }

    /// A fresh authorization code of `c`.
    async fn code(&self, c: &Client) -> String {
        let r = self.respond_with(c, &json!({})).await;
        assert_eq!(r["iss"], json!(self.s.issuer), "RFC 9207");
        r["code"].as_str().unwrap().to_owned()
    }

    /// Tokens for `c`, through the whole flow.
    async fn tokens(&self, c: &Client) -> Value {
        let code = self.code(c).await;
        let r = c.redeem(&self.s, &code).await;
        assert_eq!(r.status, 200, "{}: {}", c.id, r.text());
        assert_eq!(r.header("cache-control"), Some("no-store"), "RFC 6749 §5.1");
        r.json()
    }

    /// GET /userinfo with `authorization`, over TLS with `cert`.
    async fn userinfo(&self, authorization: &str, cert: Option<&Identity>) -> Resp {
        self.s
            .send(
                "GET",
                "/userinfo",
                &[("authorization", authorization)],
                Vec::new(),
                cert,
            )
            .await
    }

    async fn stop(self) {
        self.s.stop().await;
    }
}

fn authorize_path(client_id: &str, request_uri: &str) -> String {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", client_id)
        .append_pair("request_uri", request_uri)
        .finish();
    format!("/authorize?{q}")
}

/// FAPI 2.0 Security Profile, server-side modules (`fapi2-security-profile-final-…`),
/// over the whole client matrix; the Message Signing plan runs the same modules with its
/// signed request objects and JARM (the `ms-*` clients).
mod fapi2_security_profile {
    use super::*;

    /// `fapi2-security-profile-final-discovery-end-point-verification`: the metadata a
    /// FAPI 2.0 client relies on (RFC 8414, RFC 9126, RFC 9207, RFC 8705).
    #[tokio::test(flavor = "multi_thread")]
    async fn discovery_end_point_verification() {
        let w = World::start().await;
        let r = w.s.get("/.well-known/openid-configuration").await;
        assert_eq!(r.status, 200);
        let d = r.json();
        assert_eq!(d["issuer"], json!(w.s.issuer));
        for ep in [
            "pushed_authorization_request_endpoint",
            "token_endpoint",
            "jwks_uri",
        ] {
            assert!(d[ep].as_str().unwrap().starts_with("https://"), "{ep}");
        }
        assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(d["response_types_supported"], json!(["code"]));
        assert_eq!(d["authorization_response_iss_parameter_supported"], true);
        assert_eq!(d["tls_client_certificate_bound_access_tokens"], true);
        let methods = d["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap();
        for m in ["private_key_jwt", "tls_client_auth"] {
            assert!(methods.contains(&json!(m)), "{m}");
        }
        for (k, v) in d.as_object().unwrap() {
            if k.ends_with("signing_alg_values_supported") {
                for a in v.as_array().unwrap() {
                    let a = a.as_str().unwrap();
                    assert!(a != "none" && !a.starts_with("HS"), "{k}: {a}");
                }
            }
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-attempt-reuse-authorization-code-after-one-second`
    /// (THREATS A1): `invalid_grant`, and the tokens issued from the code are revoked.
    #[tokio::test(flavor = "multi_thread")]
    async fn attempt_reuse_authorization_code_after_one_second() {
        let w = World::start().await;
        let mut issued = Vec::new();
        for c in w.matrix() {
            let code = w.code(c).await;
            let r = c.redeem(&w.s, &code).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let t = r.json();
            let access = t["access_token"].as_str().unwrap().to_owned();
            let refresh = t["refresh_token"].as_str().unwrap().to_owned();
            issued.push((c, code, access, refresh));
        }
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        for (c, code, access, refresh) in issued {
            let r = c.redeem(&w.s, &code).await;
            assert_error(&r, 400, "invalid_grant", &c.id);
            let f = [("grant_type", "refresh_token"), ("refresh_token", &refresh)];
            let r = c.post(&w.s, "/token", &f).await;
            assert_error(&r, 400, "invalid_grant", &format!("{}: refresh", c.id));
            let ui = w.userinfo(&format!("Bearer {access}"), Some(&c.cert)).await;
            assert_eq!(ui.status, 401, "{}: revoked with the code", c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-ensure-token-endpoint-fails-with-expired-auth-code`
    /// (the plan's `FAPI2SPFinalAttemptToUseExpiredAuthCode`; THREATS A2): codes live 60 s
    /// (FAPI 2.0 §5.3.2.1 item 10); after that, `invalid_grant`. The suite's one long
    /// wait (the lifetime is fixed by the profile, not configurable).
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_token_endpoint_fails_with_expired_auth_code() {
        let w = World::start().await;
        let mut codes = Vec::new();
        for c in w.matrix() {
            codes.push((c, w.code(c).await));
        }
        tokio::time::sleep(std::time::Duration::from_secs(62)).await;
        for (c, code) in codes {
            assert_error(&c.redeem(&w.s, &code).await, 400, "invalid_grant", &c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-ensure-authorization-code-is-bound-to-client`
    /// (THREATS A3): another client's attempt is `invalid_grant` and leaves the code
    /// intact for its owner.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_authorization_code_is_bound_to_client() {
        let w = World::start().await;
        for c in w.matrix() {
            let code = w.code(c).await;
            let r = w.other(c).redeem(&w.s, &code).await;
            assert_error(&r, 400, "invalid_grant", &c.id);
            assert_eq!(c.redeem(&w.s, &code).await.status, 200, "{}", c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-ensure-client-id-in-token-endpoint` (THREATS C12):
    /// a second client's `client_id` with the first one's credentials is `invalid_client`.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_client_id_in_token_endpoint() {
        let w = World::start().await;
        for c in w.matrix() {
            let code = w.code(c).await;
            let other = &w.other(c).id;
            let r = c.redeem_with(&w.s, &code, &[("client_id", other)]).await;
            assert_error(&r, 401, "invalid_client", &c.id);
            assert_eq!(c.redeem(&w.s, &code).await.status, 200, "{}", c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-ensure-holder-of-key-required` (THREATS M1, C13): no
    /// client certificate at the token endpoint. A private_key_jwt client has nothing to
    /// bind the tokens to (`invalid_request`); a tls_client_auth client cannot even
    /// authenticate (`invalid_client`). The code is not consumed.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_holder_of_key_required() {
        let w = World::start().await;
        for c in w.matrix() {
            let code = w.code(c).await;
            let auth = c.auth_fields(&w.s);
            let mut f = vec![
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ];
            f.extend(auth.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let r = w.s.form("/token", &f, None).await;
            match c.auth {
                Auth::PrivateKeyJwt => assert_error(&r, 400, "invalid_request", &c.id),
                Auth::TlsClientAuth => assert_error(&r, 401, "invalid_client", &c.id),
            }
            assert_eq!(c.redeem(&w.s, &code).await.status, 200, "{}", c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-par-ensure-pkce-code-verifier-required` and
    /// `…-par-incorrect-pkce-code-verifier-rejected` (THREATS A5): `invalid_grant`, the code
    /// still good for the right verifier.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_pkce_code_verifier_required_and_incorrect_pkce_code_verifier_rejected() {
        let w = World::start().await;
        for c in w.matrix() {
            let code = w.code(c).await;
            let r = c.redeem_with(&w.s, &code, &[("code_verifier", "")]).await;
            assert_error(&r, 400, "invalid_grant", &format!("{}: missing", c.id));
            let wrong = "x".repeat(64);
            let r = c
                .redeem_with(&w.s, &code, &[("code_verifier", &wrong)])
                .await;
            assert_error(&r, 400, "invalid_grant", &format!("{}: wrong", c.id));
            assert_eq!(c.redeem(&w.s, &code).await.status, 200, "{}", c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-ensure-response-type-code-idtoken-fails` and
    /// `…-ensure-response-type-token-fails` (THREATS P11): at PAR,
    /// `unsupported_response_type`.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_response_type_code_idtoken_fails_and_response_type_token_fails() {
        let w = World::start().await;
        for c in w.matrix() {
            for rt in ["code id_token", "token"] {
                let r = c.par_with(&w.s, &json!({"response_type": rt})).await;
                assert_error(&r, 400, "unsupported_response_type", &c.id);
            }
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-ensure-registered-redirect-uri` (THREATS P10, A9):
    /// an unregistered redirect URI is refused at PAR (`invalid_request`), and the
    /// authorization endpoint never redirects to it (error page).
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_registered_redirect_uri() {
        let w = World::start().await;
        for c in w.matrix() {
            let patch = json!({"redirect_uri": "https://attacker.example/cb"});
            let r = c.par_with(&w.s, &patch).await;
            assert_error(&r, 400, "invalid_request", &c.id);
            let q = format!(
                "/authorize?client_id={}&response_type=code&redirect_uri=https%3A%2F%2Fattacker.example%2Fcb",
                c.id
            );
            assert_error_page(&w.s.get(&q).await, &c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-ensure-request-object-without-redirect-uri-fails`
    /// (THREATS P10): FAPI 2.0 needs the redirect URI in the request: `invalid_request`.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_request_object_without_redirect_uri_fails() {
        let w = World::start().await;
        for c in w.matrix() {
            let r = c.par_with(&w.s, &json!({"redirect_uri": null})).await;
            assert_error(&r, 400, "invalid_request", &c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-ensure-unsigned-authorization-request-without-using-par-fails`
    /// (THREATS P16; FAPI 2.0 §5.3.2.2 item 2): front channel: the authorization
    /// endpoint shows its error page (`invalid_request`, PAR required) and redirects
    /// nowhere.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_unsigned_authorization_request_without_using_par_fails() {
        let w = World::start().await;
        for c in w.matrix() {
            let challenge = CodeChallenge::for_verifier(VERIFIER);
            let q = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("client_id", &c.id)
                .append_pair("response_type", "code")
                .append_pair("redirect_uri", REDIRECT)
                .append_pair("scope", SCOPE)
                .append_pair("code_challenge", challenge.as_str())
                .append_pair("code_challenge_method", "S256")
                .finish();
            let r = w.s.get(&format!("/authorize?{q}")).await;
            assert_error_page(&r, &c.id);
            assert!(r.text().contains("invalid_request"), "{}", r.text());
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-ensure-client-assertion-in-token-endpoint` (THREATS
    /// C8): a private_key_jwt client that sends only its `client_id`: `invalid_client`.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_client_assertion_in_token_endpoint() {
        let w = World::start().await;
        for c in w.matrix().filter(|c| c.auth == Auth::PrivateKeyJwt) {
            let code = w.code(c).await;
            let f = [
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", c.id.as_str()),
            ];
            let r = w.s.form("/token", &f, Some(&c.cert)).await;
            assert_error(&r, 401, "invalid_client", &c.id);
            assert_eq!(c.redeem(&w.s, &code).await.status, 200, "{}", c.id);
        }
        w.stop().await;
    }

    /// The client-assertion modules at the token endpoint, for every private_key_jwt
    /// client: each is `invalid_client` (401), the code intact.
    async fn assertion_refused(patch: Value, alg: Option<Algorithm>) {
        let w = World::start().await;
        for c in w.matrix().filter(|c| c.auth == Auth::PrivateKeyJwt) {
            let code = w.code(c).await;
            let a = match alg {
                None => c.assertion_with(&w.s, &patch),
                Some(alg) => {
                    let t = now();
                    let claims = json!({"iss": c.id, "sub": c.id, "aud": w.s.issuer,
                        "iat": t, "exp": t + MIN, "jti": c.unique()});
                    sign_jwt(&rsa_key(alg), None, claims.as_object().unwrap()).unwrap()
                }
            };
            let f = [
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", a.as_str()),
            ];
            let r = w.s.form("/token", &f, Some(&c.cert)).await;
            assert_error(&r, 401, "invalid_client", &c.id);
            assert_eq!(c.redeem(&w.s, &code).await.status, 200, "{}", c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-ensure-client-assertion-with-exp-is-5-minutes-in-past-fails`
    /// (THREATS J6, C3).
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_client_assertion_with_exp_is_5_minutes_in_past_fails() {
        let t = now();
        assertion_refused(json!({"iat": t - 6 * MIN, "exp": t - 5 * MIN}), None).await;
    }

    /// `fapi2-security-profile-final-ensure-client-assertion-with-no-sub-fails` (THREATS
    /// C4): `sub` is what tells an assertion from a request object.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_client_assertion_with_no_sub_fails() {
        assertion_refused(json!({"sub": null}), None).await;
    }

    /// `fapi2-security-profile-final-ensure-client-assertion-with-wrong-aud-fails`
    /// (THREATS C5).
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_client_assertion_with_wrong_aud_fails() {
        assertion_refused(json!({"aud": "https://other-as.example"}), None).await;
    }

    /// `fapi2-security-profile-final-ensure-signed-client-assertion-with-RS256-fails`
    /// (THREATS J3, C6): the client's own registered RSA key, signing RS256.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_signed_client_assertion_with_rs256_fails() {
        assertion_refused(json!({}), Some(Algorithm::RS256)).await;
    }

    /// `fapi2-security-profile-final-refresh-token` (THREATS R1–R4): the refresh token
    /// works for its client (FAPI 2.0: not rotated); another client's use is
    /// `invalid_grant`; no client authentication is `invalid_client` (R2); without the TLS
    /// client certificate (no proof of possession): `invalid_grant` for private_key_jwt,
    /// `invalid_client` for tls_client_auth.
    #[tokio::test(flavor = "multi_thread")]
    async fn refresh_token() {
        let w = World::start().await;
        for c in w.matrix() {
            // The module asks for consent with offline_access (OIDC Core §11).
            let resp = w.respond_with(c, &json!({"prompt": "consent"})).await;
            let t = c.redeem(&w.s, resp["code"].as_str().unwrap()).await.json();
            let rt = t["refresh_token"].as_str().expect("offline_access");
            let f = [
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("scope", SCOPE),
            ];
            let r = w.other(c).post(&w.s, "/token", &f).await;
            assert_error(&r, 400, "invalid_grant", &format!("{}: other client", c.id));
            let r = w.s.form("/token", &f, Some(&c.cert)).await;
            assert_error(&r, 401, "invalid_client", &format!("{}: no auth", c.id));
            // Without proof of possession (no TLS client certificate).
            let auth = c.auth_fields(&w.s);
            let mut g = f.to_vec();
            g.extend(auth.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let r = w.s.form("/token", &g, None).await;
            match c.auth {
                Auth::PrivateKeyJwt => {
                    assert_error(&r, 400, "invalid_grant", &format!("{}: no cert", c.id))
                }
                Auth::TlsClientAuth => {
                    assert_error(&r, 401, "invalid_client", &format!("{}: no cert", c.id))
                }
            }
            for _ in 0..2 {
                let r = c.post(&w.s, "/token", &f).await;
                assert_eq!(r.status, 200, "{}: {}", c.id, r.text());
                assert_eq!(r.header("cache-control"), Some("no-store"));
                assert!(r.json().get("refresh_token").is_none(), "no rotation");
            }
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-ensure-authorization-request-with-long-nonce` and
    /// `…-with-long-state` (THREATS A8): 384 characters, returned exactly (state in the
    /// response, nonce in the ID token), never truncated.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_authorization_request_with_long_nonce_and_long_state() {
        let w = World::start().await;
        let long = "N".repeat(384);
        for c in w.matrix() {
            let patch = json!({"state": long, "nonce": long});
            let r = w.respond_with(c, &patch).await;
            assert_eq!(r["state"], json!(long), "{}", c.id);
            let t = c.redeem(&w.s, r["code"].as_str().unwrap()).await.json();
            let id = t["id_token"].as_str().unwrap();
            let v = Validation::new(
                AlgorithmSet::FAPI2,
                TypRule::OptionalOneOf(&["JWT"]),
                AudienceRule::ExactString(c.id.clone()),
            )
            .issuer(w.s.issuer.clone());
            let claims = verify_jwt(id, &w.jwks().await, &v, UnixTime(now())).unwrap();
            assert_eq!(claims.get("nonce"), Some(&json!(long)), "{}", c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-access-token-type-header-case-sensitivity` (RFC
    /// 9110 §11.1): the auth scheme is case-insensitive at the resource (userinfo).
    #[tokio::test(flavor = "multi_thread")]
    async fn access_token_type_header_case_sensitivity() {
        let w = World::start().await;
        for c in w.matrix() {
            let t = w.tokens(c).await;
            let access = t["access_token"].as_str().unwrap();
            assert_eq!(t["token_type"], "Bearer");
            for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
                let r = w
                    .userinfo(&format!("{scheme} {access}"), Some(&c.cert))
                    .await;
                assert_eq!(r.status, 200, "{}: {scheme}: {}", c.id, r.text());
            }
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-ensure-other-scope-order-succeeds` (positive).
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_other_scope_order_succeeds() {
        let w = World::start().await;
        for c in w.matrix() {
            let r = w
                .respond_with(c, &json!({"scope": "offline_access openid"}))
                .await;
            let t = c.redeem(&w.s, r["code"].as_str().unwrap()).await;
            assert_eq!(t.status, 200, "{}: {}", c.id, t.text());
            let scope = t.json()["scope"].as_str().unwrap().to_owned();
            let mut got: Vec<&str> = scope.split(' ').collect();
            got.sort_unstable();
            assert_eq!(got, ["offline_access", "openid"], "{}", c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-ensure-authorization-request-without-state-success`
    /// (positive): no `state` in, none out.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_authorization_request_without_state_success() {
        let w = World::start().await;
        for c in w.matrix() {
            let r = w.respond_with(c, &json!({"state": null})).await;
            assert!(r.get("state").is_none(), "{}: {r:?}", c.id);
            let t = c.redeem(&w.s, r["code"].as_str().unwrap()).await;
            assert_eq!(t.status, 200, "{}: {}", c.id, t.text());
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-ensure-authorization-request-without-nonce-success`
    /// (positive; PKCE protects the code): no `nonce` in the ID token.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_authorization_request_without_nonce_success() {
        let w = World::start().await;
        for c in w.matrix() {
            let r = w.respond_with(c, &json!({"nonce": null})).await;
            let t = c.redeem(&w.s, r["code"].as_str().unwrap()).await;
            assert_eq!(t.status, 200, "{}: {}", c.id, t.text());
            let id = t.json()["id_token"].as_str().unwrap().to_owned();
            let (_, rest) = id.split_once('.').unwrap();
            let (payload, _) = rest.split_once('.').unwrap();
            let claims: Value = serde_json::from_slice(&b64::decode(payload).unwrap()).unwrap();
            assert!(claims.get("nonce").is_none(), "{}", c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-ensure-authorization-request-with-64-char-nonce-success`
    /// (positive).
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_authorization_request_with_64_char_nonce_success() {
        let w = World::start().await;
        let nonce = "n".repeat(64);
        for c in w.matrix() {
            let r = w.respond_with(c, &json!({"nonce": nonce})).await;
            let t = c.redeem(&w.s, r["code"].as_str().unwrap()).await;
            assert_eq!(t.status, 200, "{}: {}", c.id, t.text());
        }
        w.stop().await;
    }
}

/// How a module spoils a signed request (request object or CIBA request).
enum Tamper {
    /// Claims changed (a `null` removes one); signed properly.
    Claims(Value),
    /// `alg: none`, no signature.
    AlgNone,
    /// The client's own registered RSA key, signing RS256.
    Rs256,
    /// Another message's signature.
    BadSignature,
    /// Signed by another client's key.
    OtherClientKey,
}

/// `claims` signed by `c` as `tamper` says.
fn tampered(c: &Client, other: &Client, claims: Value, tamper: &Tamper, typ: &str) -> String {
    match tamper {
        Tamper::Claims(patch) => c.sign(&merged(claims, patch), Some(typ)),
        Tamper::AlgNone => unsigned_jwt(&json!({"alg": "none", "typ": typ}), &claims),
        Tamper::Rs256 => sign_jwt(
            &rsa_key(Algorithm::RS256),
            Some(typ),
            claims.as_object().unwrap(),
        )
        .unwrap(),
        Tamper::BadSignature => {
            let good = c.sign(&claims, Some(typ));
            let other_msg = c.sign(&json!({"iss": c.id}), Some(typ));
            with_bad_signature(&good, &other_msg)
        }
        Tamper::OtherClientKey => other.sign(&claims, Some(typ)),
    }
}

/// The consent page answered "deny": where the server sends the browser.
async fn deny(w: &World, c: &Client, request_uri: &str) -> String {
    let si = w.signed_in(c, request_uri).await;
    let cookie = [("cookie", si.session.as_str())];
    let page = w.s.send("GET", &si.next, &cookie, Vec::new(), None).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let html = page.text();
    let interaction = hidden_input(&html, "interaction").unwrap();
    let csrf = hidden_input(&html, "csrf").unwrap();
    let fields = [
        ("interaction", interaction.as_str()),
        ("csrf", csrf.as_str()),
        ("decision", "deny"),
    ];
    let done = w.s.form_with("/consent", &fields, &cookie, None).await;
    assert_eq!(done.status, 303, "{}", done.text());
    done.header("location").unwrap().to_owned()
}

/// FAPI 2.0 Message Signing, server-side modules (`fapi2-security-profile-final-…` run
/// by the `fapi2-message-signing-final-test-plan`): signed request objects at PAR, over
/// the two JARM clients {private_key_jwt, tls_client_auth}. A refused request object is
/// `invalid_request_object` at PAR (RFC 9126 §2.3); nothing is stored.
mod fapi2_message_signing {
    use super::*;

    fn signed(w: &World) -> impl Iterator<Item = &Client> {
        w.matrix().filter(|c| c.response == Response::Jarm)
    }

    async fn request_object_refused(tamper: Tamper) {
        let w = World::start().await;
        for c in signed(&w) {
            let claims = c.request_claims(&w.s);
            let request = tampered(c, w.other(c), claims, &tamper, "oauth-authz-req+jwt");
            let fields = [
                ("client_id".to_owned(), c.id.clone()),
                ("request".to_owned(), request),
            ];
            let r = c.par_fields_post(&w.s, &fields).await;
            assert_error(&r, 400, "invalid_request_object", &c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-ensure-request-object-without-exp-fails` (THREATS J6, P7).
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_request_object_without_exp_fails() {
        request_object_refused(Tamper::Claims(json!({"exp": null}))).await;
    }

    /// `fapi2-security-profile-final-ensure-request-object-without-nbf-fails` (THREATS P7).
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_request_object_without_nbf_fails() {
        request_object_refused(Tamper::Claims(json!({"nbf": null}))).await;
    }

    /// `fapi2-security-profile-final-ensure-expired-request-object-fails` (THREATS J6).
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_expired_request_object_fails() {
        let t = now();
        let patch = json!({"iat": t - 10 * MIN, "nbf": t - 10 * MIN, "exp": t - MIN});
        request_object_refused(Tamper::Claims(patch)).await;
    }

    /// `fapi2-security-profile-final-ensure-request-object-with-bad-aud-fails` (THREATS P8).
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_request_object_with_bad_aud_fails() {
        let patch = json!({"aud": "https://other-as.example"});
        request_object_refused(Tamper::Claims(patch)).await;
    }

    /// `fapi2-security-profile-final-ensure-request-object-with-exp-over-60-fails`
    /// (THREATS P7): exp 70 minutes after nbf.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_request_object_with_exp_over_60_fails() {
        let patch = json!({"exp": now() + 70 * MIN});
        request_object_refused(Tamper::Claims(patch)).await;
    }

    /// `fapi2-security-profile-final-ensure-request-object-with-nbf-over-60-fails`
    /// (THREATS P7): nbf 70 minutes in the past.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_request_object_with_nbf_over_60_fails() {
        let t = now();
        let patch = json!({"nbf": t - 70 * MIN, "iat": t - 70 * MIN});
        request_object_refused(Tamper::Claims(patch)).await;
    }

    /// `fapi2-security-profile-final-ensure-request-object-signature-algorithm-is-not-none`
    /// (THREATS J1).
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_request_object_signature_algorithm_is_not_none() {
        request_object_refused(Tamper::AlgNone).await;
    }

    /// `fapi2-security-profile-final-ensure-signed-request-object-with-RS256-fails`
    /// (THREATS J3): the client's registered RSA key, the wrong algorithm.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_signed_request_object_with_rs256_fails() {
        request_object_refused(Tamper::Rs256).await;
    }

    /// `fapi2-security-profile-final-ensure-request-object-with-invalid-signature-fails`
    /// (THREATS J9).
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_request_object_with_invalid_signature_fails() {
        request_object_refused(Tamper::BadSignature).await;
    }

    /// `fapi2-security-profile-final-ensure-matching-key-in-authorization-request`
    /// (THREATS P4): client 1's request object signed with client 2's key.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_matching_key_in_authorization_request() {
        request_object_refused(Tamper::OtherClientKey).await;
    }

    /// `fapi2-security-profile-final-ensure-unsigned-request-at-par-endpoint-fails`
    /// (THREATS P5): plain form parameters from a client that must sign:
    /// `invalid_request`.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_unsigned_request_at_par_endpoint_fails() {
        let w = World::start().await;
        for c in signed(&w) {
            let claims = c.request_claims(&w.s);
            let fields: Vec<(String, String)> = claims
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| !["iss", "aud", "exp", "nbf", "iat", "jti"].contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect();
            let r = c.par_fields_post(&w.s, &fields).await;
            assert_error(&r, 400, "invalid_request", &c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-ensure-different-state-inside-and-outside-request-object`
    /// and `…-ensure-different-nonce-inside-and-outside-request-object` (THREATS P6;
    /// RFC 9101 §6.3): only the request object's values are used.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_different_state_and_nonce_inside_and_outside_request_object() {
        let w = World::start().await;
        for c in signed(&w) {
            let claims = merged(
                c.request_claims(&w.s),
                &json!({"state": "inside", "nonce": "inside-nonce"}),
            );
            let mut fields = c.par_fields(&claims);
            fields.push(("state".into(), "outside".into()));
            fields.push(("nonce".into(), "outside-nonce".into()));
            let r = c.par_fields_post(&w.s, &fields).await;
            assert_eq!(r.status, 201, "{}: {}", c.id, r.text());
            let ru = r.json()["request_uri"].as_str().unwrap().to_owned();
            let resp = w.response(c, &w.authorize(c, &ru).await).await;
            assert_eq!(resp["state"], "inside", "{}", c.id);
            let t = c.redeem(&w.s, resp["code"].as_str().unwrap()).await.json();
            let id = t["id_token"].as_str().unwrap();
            let payload = id.split('.').nth(1).unwrap();
            let claims: Value = serde_json::from_slice(&b64::decode(payload).unwrap()).unwrap();
            assert_eq!(claims["nonce"], "inside-nonce", "{}", c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-state-only-outside-request-object-not-used`
    /// (THREATS P6): a `state` outside the request object is not echoed.
    #[tokio::test(flavor = "multi_thread")]
    async fn state_only_outside_request_object_not_used() {
        let w = World::start().await;
        for c in signed(&w) {
            let claims = merged(c.request_claims(&w.s), &json!({"state": null}));
            let mut fields = c.par_fields(&claims);
            fields.push(("state".into(), "outside".into()));
            let r = c.par_fields_post(&w.s, &fields).await;
            assert_eq!(r.status, 201, "{}: {}", c.id, r.text());
            let ru = r.json()["request_uri"].as_str().unwrap().to_owned();
            let resp = w.response(c, &w.authorize(c, &ru).await).await;
            assert!(resp.get("state").is_none(), "{}: {resp:?}", c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-ensure-server-accepts-request-object-with-multiple-aud`
    /// (positive; THREATS §4.3): an aud array holding the issuer and another value.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_request_object_with_multiple_aud_succeeds() {
        let w = World::start().await;
        for c in signed(&w) {
            let patch = json!({"aud": [w.s.issuer, "https://other-as.example"]});
            let resp = w.respond_with(c, &patch).await;
            let t = c.redeem(&w.s, resp["code"].as_str().unwrap()).await;
            assert_eq!(t.status, 200, "{}: {}", c.id, t.text());
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-ensure-request-object-with-nbf-8-seconds-in-the-future-is-accepted`
    /// (positive; clock skew).
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_request_object_with_nbf_8_seconds_in_the_future_is_accepted() {
        let w = World::start().await;
        for c in signed(&w) {
            let t = now();
            let patch = json!({"nbf": t + 8, "iat": t + 8, "exp": t + 300});
            let resp = w.respond_with(c, &patch).await;
            assert!(resp.get("code").is_some(), "{}", c.id);
        }
        w.stop().await;
    }
}

/// The PAR modules of the FAPI 2.0 plans (`fapi2-security-profile-final-par-…`, the same
/// checks as FAPI 1 Advanced's PAR variant; RFC 9126), over the client matrix.
mod par {
    use super::*;

    /// PAR for `c` with `assertion` as its client assertion.
    async fn par_with_assertion(w: &World, c: &Client, assertion: &str) -> Resp {
        let fields = c.par_fields(&c.request_claims(&w.s));
        let mut f: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        f.push(("client_assertion_type", ASSERTION_TYPE));
        f.push(("client_assertion", assertion));
        w.s.form("/par", &f, Some(&c.cert)).await
    }

    /// PAR with a client assertion whose claims `patch(issuer)` changes: `status`
    /// (201, or 401 `invalid_client`), for every private_key_jwt client.
    async fn assertion_at_par(patch: impl Fn(&str) -> Value, status: u16) {
        let w = World::start().await;
        for c in w.matrix().filter(|c| c.auth == Auth::PrivateKeyJwt) {
            let patch = patch(&w.s.issuer);
            let r = par_with_assertion(&w, c, &c.assertion_with(&w.s, &patch)).await;
            if status == 201 {
                assert_eq!(r.status, 201, "{}: {}", c.id, r.text());
            } else {
                assert_error(&r, status, "invalid_client", &c.id);
            }
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-par-test-array-as-audience-fails` (THREATS C5;
    /// FAPI 2.0 §5.3.2.1 item 7: the issuer as a string only).
    #[tokio::test(flavor = "multi_thread")]
    async fn par_test_array_as_audience_fails() {
        assertion_at_par(|i| json!({"aud": [i]}), 401).await;
    }

    /// `fapi2-security-profile-final-par-test-par-endpoint-url-as-audience-fails`.
    #[tokio::test(flavor = "multi_thread")]
    async fn par_test_par_endpoint_url_as_audience_fails() {
        assertion_at_par(|i| json!({"aud": format!("{i}/par")}), 401).await;
    }

    /// `fapi2-security-profile-final-par-test-token-endpoint-url-as-audience-fails`.
    #[tokio::test(flavor = "multi_thread")]
    async fn par_test_token_endpoint_url_as_audience_fails() {
        assertion_at_par(|i| json!({"aud": format!("{i}/token")}), 401).await;
    }

    /// `fapi2-security-profile-final-par-ensure-jwt-client-assertions-nbf-over-60-seconds-in-the-future-fails`
    /// (THREATS J7).
    #[tokio::test(flavor = "multi_thread")]
    async fn par_ensure_jwt_client_assertions_nbf_over_60_seconds_in_the_future_fails() {
        let t = now();
        assertion_at_par(
            |_| json!({"nbf": t + 70, "iat": t + 70, "exp": t + 130}),
            401,
        )
        .await;
    }

    /// `fapi2-security-profile-final-par-ensure-jwt-client-assertion-with-iat-nbf-8-seconds-in-the-future-is-accepted`
    /// (positive; clock skew).
    #[tokio::test(flavor = "multi_thread")]
    async fn par_ensure_jwt_client_assertion_with_iat_nbf_8_seconds_in_the_future_is_accepted() {
        let t = now();
        assertion_at_par(|_| json!({"nbf": t + 8, "iat": t + 8, "exp": t + 68}), 201).await;
    }

    /// `fapi2-security-profile-final-par-attempt-reuse-request_uri` (THREATS P12): once the
    /// flow completed, the `request_uri` is gone: the authorization endpoint's error page
    /// (front channel, `invalid_request_uri`), no redirect.
    #[tokio::test(flavor = "multi_thread")]
    async fn par_attempt_reuse_request_uri() {
        let w = World::start().await;
        for c in w.matrix() {
            let ru = c.push(&w.s).await;
            w.authorize(c, &ru).await;
            let r = w.s.get(&authorize_path(&c.id, &ru)).await;
            assert_error_page(&r, &c.id);
            assert!(r.text().contains("invalid_request_uri"), "{}", c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-par-ensure-reused-request-uri-prior-to-auth-completion-succeeds`
    /// (THREATS P13): the authorization endpoint twice before sign-in, then the flow
    /// completes.
    #[tokio::test(flavor = "multi_thread")]
    async fn par_ensure_reused_request_uri_prior_to_auth_completion_succeeds() {
        let w = World::start().await;
        for c in w.matrix() {
            let ru = c.push(&w.s).await;
            for _ in 0..2 {
                let r = w.s.get(&authorize_path(&c.id, &ru)).await;
                assert_eq!(r.status, 303, "{}: {}", c.id, r.text());
                assert!(r.header("location").unwrap().starts_with("/login?"));
            }
            let resp = w.response(c, &w.authorize(c, &ru).await).await;
            let t = c.redeem(&w.s, resp["code"].as_str().unwrap()).await;
            assert_eq!(t.status, 200, "{}: {}", c.id, t.text());
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-par-attempt-to-use-expired-request_uri` (THREATS
    /// P14): `expires_in` = 5 s (the shortest heartgate allows), used after 6 s: error page.
    #[tokio::test(flavor = "multi_thread")]
    async fn par_attempt_to_use_expired_request_uri() {
        let w = World::start_with(5, None).await;
        let mut pushed = Vec::new();
        for c in w.matrix() {
            let r = c.par_with(&w.s, &json!({})).await;
            assert_eq!(r.status, 201, "{}", r.text());
            assert_eq!(r.json()["expires_in"], 5);
            pushed.push((c, r.json()["request_uri"].as_str().unwrap().to_owned()));
        }
        tokio::time::sleep(std::time::Duration::from_secs(6)).await;
        for (c, ru) in pushed {
            assert_error_page(&w.s.get(&authorize_path(&c.id, &ru)).await, &c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-par-attempt-to-use-request_uri-for-different-client`
    /// (THREATS P15): error page; the owner's request is not consumed.
    #[tokio::test(flavor = "multi_thread")]
    async fn par_attempt_to_use_request_uri_for_different_client() {
        let w = World::start().await;
        for c in w.matrix() {
            let ru = c.push(&w.s).await;
            let other = &w.other(c).id;
            assert_error_page(&w.s.get(&authorize_path(other, &ru)).await, &c.id);
            let resp = w.response(c, &w.authorize(c, &ru).await).await;
            assert!(resp.get("code").is_some(), "{}", c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-par-authorization-request-containing-request_uri-form-param`
    /// (THREATS P3): `invalid_request`.
    #[tokio::test(flavor = "multi_thread")]
    async fn par_authorization_request_containing_request_uri_form_param() {
        let w = World::start().await;
        for c in w.matrix() {
            let mut fields = c.par_fields(&c.request_claims(&w.s));
            fields.push((
                "request_uri".into(),
                "urn:ietf:params:oauth:request_uri:abc".into(),
            ));
            let r = c.par_fields_post(&w.s, &fields).await;
            assert_error(&r, 400, "invalid_request", &c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-par-authorization-request-containing-request_uri`
    /// (THREATS P3): inside the request object: `invalid_request_object`.
    #[tokio::test(flavor = "multi_thread")]
    async fn par_authorization_request_containing_request_uri() {
        let w = World::start().await;
        for c in w.matrix().filter(|c| c.response == Response::Jarm) {
            let patch = json!({"request_uri": "urn:ietf:params:oauth:request_uri:abc"});
            let r = c.par_with(&w.s, &patch).await;
            assert_error(&r, 400, "invalid_request_object", &c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-par-without-duplicate-parameters` (positive; THREATS
    /// §4.3): `client_id` and `request_uri` alone at the authorization endpoint.
    #[tokio::test(flavor = "multi_thread")]
    async fn par_without_duplicate_parameters() {
        let w = World::start().await;
        for c in w.matrix() {
            let ru = c.push(&w.s).await;
            let r = w.s.get(&authorize_path(&c.id, &ru)).await;
            assert_eq!(r.status, 303, "{}: {}", c.id, r.text());
            let resp = w.response(c, &w.authorize(c, &ru).await).await;
            assert!(resp.get("code").is_some(), "{}", c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-par-ensure-pkce-required` (THREATS P9):
    /// `invalid_request`.
    #[tokio::test(flavor = "multi_thread")]
    async fn par_ensure_pkce_required() {
        let w = World::start().await;
        for c in w.matrix() {
            let patch = json!({"code_challenge": null, "code_challenge_method": null});
            let r = c.par_with(&w.s, &patch).await;
            assert_error(&r, 400, "invalid_request", &c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-par-plain-pkce-rejected` (THREATS P9):
    /// `invalid_request`.
    #[tokio::test(flavor = "multi_thread")]
    async fn par_plain_pkce_rejected() {
        let w = World::start().await;
        for c in w.matrix() {
            let patch = json!({"code_challenge": VERIFIER, "code_challenge_method": "plain"});
            let r = c.par_with(&w.s, &patch).await;
            assert_error(&r, 400, "invalid_request", &c.id);
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-par-reject-invalid-http-verb` (RFC 9126 §2.1: POST
    /// only): 405 with `Allow`.
    #[tokio::test(flavor = "multi_thread")]
    async fn par_reject_invalid_http_verb() {
        let w = World::start().await;
        let r = w.s.get("/par").await;
        assert_eq!(r.status, 405, "{}", r.text());
        assert!(r.header("allow").unwrap().contains("POST"));
        w.stop().await;
    }
}

/// JARM (FAPI 2.0 Message Signing §5.4, the JARM variant of the FAPI 2.0 plans): what the
/// happy flow and the user-rejects module check of the authorization response.
mod jarm {
    use super::*;

    /// `fapi2-security-profile-final-happy-flow`, response checks: a JARM response is a
    /// JWT signed by a key of `/jwks` with a FAPI 2.0 algorithm, `iss` the issuer, `aud`
    /// the client, a short `exp`, the code and state inside and nothing outside; a plain
    /// response carries `code`, `state` and `iss` (RFC 9207).
    #[tokio::test(flavor = "multi_thread")]
    async fn happy_flow() {
        let w = World::start().await;
        for c in w.matrix() {
            let ru = c.push(&w.s).await;
            let location = w.authorize(c, &ru).await;
            let resp = w.response(c, &location).await;
            assert!(resp["code"].is_string(), "{}", c.id);
            assert!(resp["state"].as_str().unwrap().starts_with("st-"));
            assert_eq!(resp["iss"], json!(w.s.issuer), "{}", c.id);
            if c.response == Response::Jarm {
                let (_, q) = location.split_once('?').unwrap();
                let names: Vec<String> = url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, _)| k.into_owned())
                    .collect();
                assert_eq!(names, ["response"], "{}: only the JWT", c.id);
                assert_eq!(resp["aud"], json!(c.id));
                let exp = resp["exp"].as_i64().unwrap();
                assert!(exp > now() && exp <= now() + 600, "{}", c.id);
                let jwt = url_param(&location, "response").unwrap();
                let header: Value =
                    serde_json::from_slice(&b64::decode(jwt.split('.').next().unwrap()).unwrap())
                        .unwrap();
                assert!(
                    ["PS256", "ES256", "EdDSA"].contains(&header["alg"].as_str().unwrap()),
                    "{header}"
                );
            }
            let t = c.redeem(&w.s, resp["code"].as_str().unwrap()).await;
            assert_eq!(t.status, 200, "{}: {}", c.id, t.text());
        }
        w.stop().await;
    }

    /// `fapi2-security-profile-final-user-rejects-authentication`: the user denies:
    /// `access_denied` back to the client with `state` and `iss` (inside the JARM JWT for
    /// JARM clients), no code.
    #[tokio::test(flavor = "multi_thread")]
    async fn user_rejects_authentication() {
        let w = World::start().await;
        for c in w.matrix() {
            let ru = c.push(&w.s).await;
            let location = deny(&w, c, &ru).await;
            let resp = w.response(c, &location).await;
            assert_eq!(resp["error"], "access_denied", "{}: {resp:?}", c.id);
            assert!(resp.get("code").is_none());
            assert!(resp["state"].as_str().unwrap().starts_with("st-"));
            assert_eq!(resp["iss"], json!(w.s.issuer), "{}", c.id);
        }
        w.stop().await;
    }

    /// FAPI 2.0 Message Signing §5.4.1: a JARM client that asks for a plain
    /// `response_mode=query` is refused at PAR (`invalid_request`). No OIDF module of its
    /// own; the JARM variant of every module assumes it.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_response_mode_query_refused_for_jarm_client() {
        let w = World::start().await;
        for c in w.matrix().filter(|c| c.response == Response::Jarm) {
            let r = c.par_with(&w.s, &json!({"response_mode": "query"})).await;
            assert_error(&r, 400, "invalid_request", &c.id);
        }
        w.stop().await;
    }
}

/// RFC 8705 (mTLS): the `mtls` sender-constraint and `tls_client_auth` variants of the
/// FAPI 2.0 happy flow and holder-of-key modules.
mod mtls {
    use super::*;

    /// `fapi2-security-profile-final-happy-flow`, mtls sender constraint (THREATS M1–M3):
    /// the access token's `cnf.x5t#S256` is the client certificate's thumbprint; the
    /// resource (userinfo) refuses it without a certificate and with another one
    /// (401 `invalid_token`).
    #[tokio::test(flavor = "multi_thread")]
    async fn happy_flow_access_token_is_certificate_bound() {
        let w = World::start().await;
        let thief = w.ca.issue("thief");
        for c in w.matrix() {
            let t = w.tokens(c).await;
            let access = t["access_token"].as_str().unwrap();
            let payload = access.split('.').nth(1).unwrap();
            let claims: Value = serde_json::from_slice(&b64::decode(payload).unwrap()).unwrap();
            let thumb = heartgate_core::mtls::thumbprint(&c.cert.der)
                .unwrap()
                .to_string();
            assert_eq!(claims["cnf"]["x5t#S256"], json!(thumb), "{}", c.id);
            let bearer = format!("Bearer {access}");
            assert_eq!(w.userinfo(&bearer, Some(&c.cert)).await.status, 200);
            for cert in [None, Some(&thief)] {
                let r = w.userinfo(&bearer, cert).await;
                assert_eq!(r.status, 401, "{}", c.id);
                assert_eq!(
                    r.header("www-authenticate"),
                    Some("Bearer error=\"invalid_token\"")
                );
            }
        }
        w.stop().await;
    }

    /// `tls_client_auth` (RFC 8705 §2.1; THREATS M5, M6): a certificate not issued by a
    /// configured client CA (self-signed, right subject) or from the CA with another
    /// subject is `invalid_client` at PAR and at the token endpoint; the code survives.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_tls_client_auth_certificate_must_match() {
        let w = World::start().await;
        for c in w.matrix().filter(|c| c.auth == Auth::TlsClientAuth) {
            let self_signed = Identity::self_signed(&c.id);
            let other_subject = w.ca.issue("someone-else");
            let code = w.code(c).await;
            for cert in [&self_signed, &other_subject] {
                let fields = c.par_fields(&c.request_claims(&w.s));
                let mut f: Vec<(&str, &str)> = fields
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                if !f.iter().any(|(k, _)| *k == "client_id") {
                    f.push(("client_id", &c.id));
                }
                let r = w.s.form("/par", &f, Some(cert)).await;
                assert_error(&r, 401, "invalid_client", &c.id);
                let f = [
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("redirect_uri", REDIRECT),
                    ("code_verifier", VERIFIER),
                    ("client_id", c.id.as_str()),
                ];
                let r = w.s.form("/token", &f, Some(cert)).await;
                assert_error(&r, 401, "invalid_client", &c.id);
            }
            assert_eq!(c.redeem(&w.s, &code).await.status, 200, "{}", c.id);
        }
        w.stop().await;
    }
}

/// FAPI-CIBA, server-side modules (`fapi-ciba-id1-…`), poll mode, over
/// {private_key_jwt, tls_client_auth}: signed authentication requests only, binding
/// message required, tokens bound to the client certificate. `/bc-authorize` errors are
/// the CIBA §13 codes, token-endpoint errors the §11 ones.
mod fapi_ciba {
    use super::*;

    const CLIENTS: [&str; 2] = ["ciba-pkjwt", "ciba-mtls"];

    fn clients(w: &World) -> impl Iterator<Item = &Client> {
        CLIENTS.iter().map(|id| w.c(id))
    }

    /// The user signs in at the CIBA approval page and decides on the request showing
    /// `binding_message`.
    async fn decide(s: &TestServer, binding_message: &str, decision: &str) {
        let page = s.get("/ciba").await;
        assert_eq!(page.status, 200);
        let pre = heartgate_e2e::cookie_pair(page.header("set-cookie").unwrap(), "__Host-hg_pre")
            .unwrap();
        let csrf = hidden_input(&page.text(), "csrf").unwrap();
        let ok = s
            .form_with(
                "/ciba/login",
                &[
                    ("csrf", &csrf),
                    ("username", "nurse"),
                    ("password", PASSWORD),
                ],
                &[("cookie", &pre)],
                None,
            )
            .await;
        assert_eq!(ok.status, 303, "{}", ok.text());
        let session =
            heartgate_e2e::cookie_pair(ok.header("set-cookie").unwrap(), "__Host-hg_session")
                .unwrap();
        let page = s
            .send("GET", "/ciba", &[("cookie", &session)], Vec::new(), None)
            .await;
        let html = page.text();
        let section = html
            .split("<section class=\"ciba-request\">")
            .find(|s| s.contains(binding_message))
            .unwrap_or_else(|| panic!("no request showing {binding_message}"));
        let r = s
            .form_with(
                "/ciba/decide",
                &[
                    ("request", &hidden_input(section, "request").unwrap()),
                    ("csrf", &hidden_input(section, "csrf").unwrap()),
                    ("binding", &hidden_input(section, "binding").unwrap()),
                    ("decision", decision),
                ],
                &[("cookie", &session)],
                None,
            )
            .await;
        assert!(r.status < 400, "{}", r.text());
    }

    /// Ping clients: each request approved, the notification endpoint answering as the
    /// world says; the client then polls its tokens (the flow completes whatever the
    /// endpoint answered). Waits 1.5 s after the last notification: a retry would come
    /// after 1 s.
    async fn ping_flow(answer: PingAnswer) -> World {
        let w = World::start_with(60, Some(answer)).await;
        for (n, id) in ["ciba-ping-pkjwt", "ciba-ping-mtls"]
            .into_iter()
            .enumerate()
        {
            let c = w.c(id);
            let message = format!("PING-{n}");
            let patch = json!({"binding_message": message,
                "client_notification_token": "notify-0123456789abcdef"});
            let rid = c.ciba_start(&w.s, &patch).await;
            decide(&w.s, &message, "approve").await;
            for _ in 0..100 {
                if w.pings.load(Ordering::SeqCst) > n as u32 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            assert!(
                w.pings.load(Ordering::SeqCst) > n as u32,
                "{id}: not notified"
            );
            let r = c.poll(&w.s, &rid).await;
            assert_eq!(r.status, 200, "{id}: {}", r.text());
            assert!(r.json()["access_token"].is_string());
        }
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        w
    }

    /// `fapi-ciba-id1-ping-backchannel-notification-endpoint-response-401` and
    /// `fapi-ciba-id1-ping-with-mtls-ciba-notification-endpoint-response-401-and-require-server-does-not-retry`
    /// (THREATS B15): the flow completes; the notification is not sent again.
    #[tokio::test(flavor = "multi_thread")]
    async fn ping_backchannel_notification_endpoint_response_401_and_server_does_not_retry() {
        let w = ping_flow(PingAnswer::Status(401)).await;
        assert_eq!(
            w.pings.load(Ordering::SeqCst),
            2,
            "one notification per request"
        );
        w.stop().await;
    }

    /// `fapi-ciba-id1-ping-backchannel-notification-endpoint-response-403` (THREATS B15).
    #[tokio::test(flavor = "multi_thread")]
    async fn ping_backchannel_notification_endpoint_response_403() {
        let w = ping_flow(PingAnswer::Status(403)).await;
        assert_eq!(
            w.pings.load(Ordering::SeqCst),
            2,
            "one notification per request"
        );
        w.stop().await;
    }

    /// `fapi-ciba-id1-ping-backchannel-notification-endpoint-response-has-body`: a 200
    /// with a body is delivered (the body ignored), once.
    #[tokio::test(flavor = "multi_thread")]
    async fn ping_backchannel_notification_endpoint_response_has_body() {
        let w = ping_flow(PingAnswer::Status(200)).await;
        assert_eq!(
            w.pings.load(Ordering::SeqCst),
            2,
            "one notification per request"
        );
        w.stop().await;
    }

    /// `fapi-ciba-id1-ping-backchannel-notification-endpoint-return-redirect-request`
    /// (THREATS B14): a 301 is never followed (the address it names sees nothing); the
    /// flow completes by polling.
    #[tokio::test(flavor = "multi_thread")]
    async fn ping_backchannel_notification_endpoint_return_redirect_request() {
        let w = ping_flow(PingAnswer::Redirect).await;
        assert_eq!(w.redirected.load(Ordering::SeqCst), 0, "redirect followed");
        w.stop().await;
    }

    /// `fapi-ciba-id1-auth-req-id-expired` (THREATS B4): `requested_expiry` = 1 s, the
    /// user never acts: `expired_token`.
    #[tokio::test(flavor = "multi_thread")]
    async fn auth_req_id_expired() {
        let w = World::start().await;
        let mut started = Vec::new();
        for c in clients(&w) {
            let id = c.ciba_start(&w.s, &json!({"requested_expiry": 1})).await;
            started.push((c, id));
        }
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        for (c, id) in started {
            assert_error(&c.poll(&w.s, &id).await, 400, "expired_token", &c.id);
        }
        w.stop().await;
    }

    /// `fapi-ciba-id1-ensure-wrong-auth-req-id-in-token-endpoint-request` (THREATS B2):
    /// client 1's `auth_req_id` polled by client 2: `invalid_grant`; client 1's request
    /// is untouched.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_wrong_auth_req_id_in_token_endpoint_request() {
        let w = World::start().await;
        for c in clients(&w) {
            let id = c.ciba_start(&w.s, &json!({})).await;
            let r = w.other(c).poll(&w.s, &id).await;
            assert_error(&r, 400, "invalid_grant", &c.id);
            let r = c.poll(&w.s, &id).await;
            assert_error(&r, 400, "authorization_pending", &c.id);
        }
        w.stop().await;
    }

    /// `fapi-ciba-id1-multiple-call-to-token-endpoint` (THREATS B3): polled before the
    /// user acts: `authorization_pending`; again at once: `slow_down`.
    #[tokio::test(flavor = "multi_thread")]
    async fn multiple_call_to_token_endpoint() {
        let w = World::start().await;
        for c in clients(&w) {
            let id = c.ciba_start(&w.s, &json!({})).await;
            assert_error(
                &c.poll(&w.s, &id).await,
                400,
                "authorization_pending",
                &c.id,
            );
            assert_error(&c.poll(&w.s, &id).await, 400, "slow_down", &c.id);
        }
        w.stop().await;
    }

    /// `fapi-ciba-id1-user-rejects-authentication` (THREATS B6): `access_denied`.
    #[tokio::test(flavor = "multi_thread")]
    async fn user_rejects_authentication() {
        let w = World::start().await;
        for (n, c) in clients(&w).enumerate() {
            let message = format!("DENY-{n}");
            let id = c
                .ciba_start(&w.s, &json!({"binding_message": message}))
                .await;
            decide(&w.s, &message, "deny").await;
            assert_error(&c.poll(&w.s, &id).await, 400, "access_denied", &c.id);
        }
        w.stop().await;
    }

    /// The approved request gives certificate-bound tokens (the FAPI-CIBA happy flow the
    /// negative modules build on): a second poll is `invalid_grant` (THREATS B5).
    #[tokio::test(flavor = "multi_thread")]
    async fn happy_flow_tokens_are_bound_and_auth_req_id_single_use() {
        let w = World::start().await;
        for (n, c) in clients(&w).enumerate() {
            let message = format!("ALLOW-{n}");
            let id = c
                .ciba_start(&w.s, &json!({"binding_message": message}))
                .await;
            decide(&w.s, &message, "approve").await;
            let r = c.poll(&w.s, &id).await;
            assert_eq!(r.status, 200, "{}: {}", c.id, r.text());
            let access = r.json()["access_token"].as_str().unwrap().to_owned();
            let bearer = format!("Bearer {access}");
            assert_eq!(w.userinfo(&bearer, Some(&c.cert)).await.status, 200);
            assert_eq!(w.userinfo(&bearer, None).await.status, 401);
            assert_error(&c.poll(&w.s, &id).await, 400, "invalid_grant", &c.id);
        }
        w.stop().await;
    }

    /// `/bc-authorize` with `tamper`: 400 `code` for every client.
    async fn bc_refused(tamper: Tamper, code: &str) {
        let w = World::start().await;
        for c in clients(&w) {
            let t = now();
            let claims = json!({"iss": c.id, "aud": w.s.issuer, "exp": t + 300, "nbf": t,
                "iat": t, "jti": c.unique(), "scope": "openid", "login_hint": "nurse",
                "binding_message": "CONF-1"});
            let request = tampered(c, w.other(c), claims, &tamper, "JWT");
            let r = c
                .post(&w.s, "/bc-authorize", &[("request", &request)])
                .await;
            assert_error(&r, 400, code, &c.id);
        }
        w.stop().await;
    }

    fn claims(patch: Value) -> Tamper {
        Tamper::Claims(patch)
    }

    /// `fapi-ciba-id1-ensure-authorization-request-with-multiple-hints-fails` (THREATS B9).
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_authorization_request_with_multiple_hints_fails() {
        bc_refused(claims(json!({"id_token_hint": "x.y.z"})), "invalid_request").await;
    }

    /// `fapi-ciba-id1-ensure-authorization-request-with-potentially-bad-binding-message`
    /// (THREATS B8): heartgate refuses it (`invalid_binding_message`) rather than show it.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_authorization_request_with_potentially_bad_binding_message() {
        let m = json!({"binding_message": "1234 <script>alert(1)</script> \u{202e}"});
        bc_refused(claims(m), "invalid_binding_message").await;
    }

    /// `fapi-ciba-id1-ensure-unsigned-backchannel-authorization-request-fails` (THREATS
    /// B13): `invalid_request`.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_unsigned_backchannel_authorization_request_fails() {
        let w = World::start().await;
        for c in clients(&w) {
            let f = [
                ("scope", "openid"),
                ("login_hint", "nurse"),
                ("binding_message", "CONF-1"),
            ];
            let r = c.post(&w.s, "/bc-authorize", &f).await;
            assert_error(&r, 400, "invalid_request", &c.id);
        }
        w.stop().await;
    }

    macro_rules! request_object_modules {
        ($($(#[$doc:meta])* $name:ident => $tamper:expr;)*) => {$(
            $(#[$doc])*
            #[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                bc_refused($tamper, "invalid_request").await;
            }
        )*};
    }

    request_object_modules! {
        /// `fapi-ciba-id1-ensure-request-object-missing-aud-fails` (THREATS B13).
        ensure_request_object_missing_aud_fails => claims(json!({"aud": null}));
        /// `fapi-ciba-id1-ensure-request-object-missing-exp-fails` (THREATS B13).
        ensure_request_object_missing_exp_fails => claims(json!({"exp": null}));
        /// `fapi-ciba-id1-ensure-request-object-missing-iat-fails` (THREATS B13).
        ensure_request_object_missing_iat_fails => claims(json!({"iat": null}));
        /// `fapi-ciba-id1-ensure-request-object-missing-iss-fails` (THREATS B13).
        ensure_request_object_missing_iss_fails => claims(json!({"iss": null}));
        /// `fapi-ciba-id1-ensure-request-object-missing-jti-fails` (THREATS B13).
        ensure_request_object_missing_jti_fails => claims(json!({"jti": null}));
        /// `fapi-ciba-id1-ensure-request-object-missing-nbf-fails` (THREATS B13).
        ensure_request_object_missing_nbf_fails => claims(json!({"nbf": null}));
        /// `fapi-ciba-id1-ensure-request-object-bad-aud-fails` (THREATS B13).
        ensure_request_object_bad_aud_fails => claims(json!({"aud": "https://other-as.example"}));
        /// `fapi-ciba-id1-ensure-request-object-bad-iss-fails` (THREATS B13).
        ensure_request_object_bad_iss_fails => claims(json!({"iss": "someone-else"}));
        /// `fapi-ciba-id1-ensure-request-object-expired-exp-fails` (THREATS B13).
        ensure_request_object_expired_exp_fails =>
            claims(json!({"exp": now() - MIN, "nbf": now() - 5 * MIN, "iat": now() - 5 * MIN}));
        /// `fapi-ciba-id1-ensure-request-object-exp-is-70-minutes-in-future-fails`.
        ensure_request_object_exp_is_70_minutes_in_future_fails =>
            claims(json!({"exp": now() + 70 * MIN}));
        /// `fapi-ciba-id1-ensure-request-object-nbf-is-10-minutes-in-future-fails`.
        ensure_request_object_nbf_is_10_minutes_in_future_fails =>
            claims(json!({"nbf": now() + 10 * MIN}));
        /// `fapi-ciba-id1-ensure-request-object-nbf-is-70-minutes-in-past-fails`.
        ensure_request_object_nbf_is_70_minutes_in_past_fails =>
            claims(json!({"nbf": now() - 70 * MIN}));
        /// `fapi-ciba-id1-ensure-request-object-signature-algorithm-is-none-fails` (J1).
        ensure_request_object_signature_algorithm_is_none_fails => Tamper::AlgNone;
        /// `fapi-ciba-id1-ensure-request-object-signature-algorithm-is-bad-fails` (J9).
        ensure_request_object_signature_algorithm_is_bad_fails => Tamper::BadSignature;
        /// `fapi-ciba-id1-ensure-request-object-signature-algorithm-is-RS256-fails` (J3).
        ensure_request_object_signature_algorithm_is_rs256_fails => Tamper::Rs256;
        /// `fapi-ciba-id1-ensure-request-object-signed-by-other-client-fails` (P4).
        ensure_request_object_signed_by_other_client_fails => Tamper::OtherClientKey;
    }

    /// `fapi-ciba-id1-ensure-different-client-id-and-issuer-in-backchannel-authorization-request`
    /// (mtls only; THREATS C12): client 1's signed request and certificate sent with
    /// client 2's `client_id`: 401 `invalid_client`.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_different_client_id_and_issuer_in_backchannel_authorization_request() {
        let w = World::start().await;
        let c = w.c("ciba-mtls");
        let request = c.ciba_request(&w.s, &json!({}));
        let f = [("request", request.as_str()), ("client_id", "ciba-mtls-2")];
        let r = w.s.form("/bc-authorize", &f, Some(&c.cert)).await;
        assert_error(&r, 401, "invalid_client", &c.id);
        w.stop().await;
    }

    /// `fapi-ciba-id1-ensure-wrong-client-id-in-backchannel-authorization-request` and
    /// `…-in-token-endpoint-request` (mtls only): an unknown `client_id` with the
    /// client's certificate: 401 `invalid_client`.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_wrong_client_id_in_backchannel_authorization_and_token_endpoint_request() {
        let w = World::start().await;
        let c = w.c("ciba-mtls");
        let id = c.ciba_start(&w.s, &json!({})).await;
        let request = c.ciba_request(&w.s, &json!({}));
        let f = [("request", request.as_str()), ("client_id", "wrong-client")];
        let r = w.s.form("/bc-authorize", &f, Some(&c.cert)).await;
        assert_error(&r, 401, "invalid_client", "bc-authorize");
        let f = [
            ("grant_type", CIBA),
            ("auth_req_id", id.as_str()),
            ("client_id", "wrong-client"),
        ];
        let r = w.s.form("/token", &f, Some(&c.cert)).await;
        assert_error(&r, 401, "invalid_client", "token");
        assert_error(
            &c.poll(&w.s, &id).await,
            400,
            "authorization_pending",
            "owner",
        );
        w.stop().await;
    }

    /// `fapi-ciba-id1-ensure-without-client-assertion-in-backchannel-authorization-request-fails`
    /// and `…-in-token-endpoint-request-fails` (private_key_jwt only): 401
    /// `invalid_client`.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_without_client_assertion_in_backchannel_authorization_and_token_endpoint_request_fails(
    ) {
        let w = World::start().await;
        let c = w.c("ciba-pkjwt");
        let id = c.ciba_start(&w.s, &json!({})).await;
        let request = c.ciba_request(&w.s, &json!({}));
        let f = [("request", request.as_str()), ("client_id", c.id.as_str())];
        let r = w.s.form("/bc-authorize", &f, Some(&c.cert)).await;
        assert_error(&r, 401, "invalid_client", "bc-authorize");
        let f = [
            ("grant_type", CIBA),
            ("auth_req_id", id.as_str()),
            ("client_id", c.id.as_str()),
        ];
        let r = w.s.form("/token", &f, Some(&c.cert)).await;
        assert_error(&r, 401, "invalid_client", "token");
        assert_error(
            &c.poll(&w.s, &id).await,
            400,
            "authorization_pending",
            "owner",
        );
        w.stop().await;
    }

    /// `fapi-ciba-id1-ensure-client-assertion-signature-algorithm-in-backchannel-authorization-request-is-RS256-fails`
    /// and `…-in-token-endpoint-request-is-RS256-fails` (private_key_jwt only; THREATS
    /// J3): the client's registered RSA key signing RS256: 401 `invalid_client`.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_client_assertion_signature_algorithm_in_backchannel_authorization_and_token_endpoint_request_is_rs256_fails(
    ) {
        let w = World::start().await;
        let c = w.c("ciba-pkjwt");
        let id = c.ciba_start(&w.s, &json!({})).await;
        let rs256 = || {
            let t = now();
            let claims = json!({"iss": c.id, "sub": c.id, "aud": w.s.issuer,
                "iat": t, "exp": t + MIN, "jti": c.unique()});
            sign_jwt(
                &rsa_key(Algorithm::RS256),
                None,
                claims.as_object().unwrap(),
            )
            .unwrap()
        };
        let request = c.ciba_request(&w.s, &json!({}));
        let a = rs256();
        let f = [
            ("request", request.as_str()),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", a.as_str()),
        ];
        let r = w.s.form("/bc-authorize", &f, Some(&c.cert)).await;
        assert_error(&r, 401, "invalid_client", "bc-authorize");
        let a = rs256();
        let f = [
            ("grant_type", CIBA),
            ("auth_req_id", id.as_str()),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", a.as_str()),
        ];
        let r = w.s.form("/token", &f, Some(&c.cert)).await;
        assert_error(&r, 401, "invalid_client", "token");
        w.stop().await;
    }

    /// `fapi-ciba-id1-ensure-mtls-holder-of-key-required` (THREATS M1, C13): polling with no
    /// TLS client certificate: private_key_jwt → `invalid_request` (nothing to bind the
    /// tokens to), tls_client_auth → `invalid_client`. The request is not consumed.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_mtls_holder_of_key_required() {
        let w = World::start().await;
        for c in clients(&w) {
            let id = c.ciba_start(&w.s, &json!({})).await;
            let auth = c.auth_fields(&w.s);
            let mut f = vec![("grant_type", CIBA), ("auth_req_id", id.as_str())];
            f.extend(auth.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let r = w.s.form("/token", &f, None).await;
            match c.auth {
                Auth::PrivateKeyJwt => assert_error(&r, 400, "invalid_request", &c.id),
                Auth::TlsClientAuth => assert_error(&r, 401, "invalid_client", &c.id),
            }
            assert_error(
                &c.poll(&w.s, &id).await,
                400,
                "authorization_pending",
                &c.id,
            );
        }
        w.stop().await;
    }

    /// `fapi-ciba-id1-ensure-requested-expiry-as-string-succeeds` (positive; THREATS
    /// §4.3): `requested_expiry` as a JSON string, and as a number.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_requested_expiry_as_string_succeeds() {
        let w = World::start().await;
        for c in clients(&w) {
            for v in [json!("30"), json!(30)] {
                let r = c.bc_authorize(&w.s, &json!({"requested_expiry": v})).await;
                assert_eq!(r.status, 200, "{}: {v}: {}", c.id, r.text());
                assert_eq!(r.json()["expires_in"], 30, "{}", c.id);
            }
        }
        w.stop().await;
    }
}

/// Dynamic client registration (RFC 7591/7592): the generic shape of the DCR modules of
/// the FAPI 2.0 plans (`fapi2-security-profile-final-brazildcr-…`; the Brazil directory
/// and its software statements are not part of them here). A refused request changes
/// nothing: the registration and its access token still work.
mod dcr {
    use super::*;

    fn good(key: &SigningKey) -> Value {
        json!({"profile": "fapi2-security", "redirect_uris": ["https://clinic.example/cb"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [key.verifying_key().to_jwk()]},
            "grant_types": ["authorization_code"],
            "require_pushed_authorization_requests": true,
            "tls_client_certificate_bound_access_tokens": true, "scope": "openid"})
    }

    async fn register(w: &World, body: &Value) -> Resp {
        w.s.json_post("/register", &w.s.iat, body).await
    }

    async fn manage(w: &World, method: &str, id: &str, token: &str, body: Option<&Value>) -> Resp {
        let auth = format!("Bearer {token}");
        let mut h = vec![("authorization", auth.as_str())];
        if body.is_some() {
            h.push(("content-type", "application/json"));
        }
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        w.s.send(method, &format!("/register/{id}"), &h, body, None)
            .await
    }

    async fn registration_refused(patch: Value, code: &str) {
        let w = World::start().await;
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let r = register(&w, &merged(good(&key), &patch)).await;
        assert_error(&r, 400, code, "registration");
        assert_eq!(register(&w, &good(&key)).await.status, 201);
        w.stop().await;
    }

    /// `…-brazildcr-invalid-redirect-uri` (THREATS D2): an `http` redirect URI.
    #[tokio::test(flavor = "multi_thread")]
    async fn dcr_invalid_redirect_uri() {
        let patch = json!({"redirect_uris": ["http://clinic.example/cb"]});
        registration_refused(patch, "invalid_redirect_uri").await;
    }

    /// `…-brazildcr-no-redirect-uri` (THREATS D2).
    #[tokio::test(flavor = "multi_thread")]
    async fn dcr_no_redirect_uri() {
        registration_refused(json!({"redirect_uris": null}), "invalid_redirect_uri").await;
    }

    /// `…-brazildcr-invalid-jwks-by-value` (THREATS D3): a private key member.
    #[tokio::test(flavor = "multi_thread")]
    async fn dcr_invalid_jwks_by_value() {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let mut jwk = key.verifying_key().to_jwk();
        jwk.insert("d".into(), json!("AAAA"));
        let patch = json!({"jwks": {"keys": [jwk]}});
        registration_refused(patch, "invalid_client_metadata").await;
    }

    /// `…-brazildcr-invalid-jwks-uri` (THREATS D4): not https.
    #[tokio::test(flavor = "multi_thread")]
    async fn dcr_invalid_jwks_uri() {
        let patch = json!({"jwks": null, "jwks_uri": "http://clinic.example/jwks"});
        registration_refused(patch, "invalid_client_metadata").await;
    }

    /// FAPI 2.0 §5.4.1 item 2 (the plans' `FAPI2FinalEnsureMinimumClientKeyLength`
    /// condition, checked in every module's setup): an RSA key below 2048 bits is refused.
    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_minimum_client_key_length() {
        let n = "n4Gf1vD-ovAiRvnsY8L-Dj49O2bFFAe7YnbojK1I8fJUJb-OXNBcpctUAMNyKtozEs50tZBhnm_\
            LoX-4SsrEeXmgMrkIyeObyxQ-wag30c5HpfrHQfkWmmwRbmV16xrG9dmS5_KaJ8s6cl0jKXJ4jNegDv\
            E2musP7mi_fXV7L3s";
        let jwk = json!({"kty": "RSA", "alg": "PS256", "kid": "rsa-1024", "n": n, "e": "AQAB"});
        let patch = json!({"jwks": {"keys": [jwk]}});
        registration_refused(patch, "invalid_client_metadata").await;
    }

    /// `oidcc-redirect-uri-regfrag` (RFC 6749 §3.1.2): a redirect URI with a fragment.
    #[tokio::test(flavor = "multi_thread")]
    async fn oidcc_redirect_uri_regfrag() {
        let patch = json!({"redirect_uris": ["https://clinic.example/cb#frag"]});
        registration_refused(patch, "invalid_redirect_uri").await;
    }

    /// `oidcc-registration-sector-bad` (OIDC Registration §2, OIDC Core §8.1): a
    /// `sector_identifier_uri` whose document the OP must fetch and check against the
    /// redirect URIs. heartgate does not fetch it, so it refuses the registration
    /// (`invalid_client_metadata`) rather than silently pairing subjects by another sector.
    #[tokio::test(flavor = "multi_thread")]
    async fn oidcc_registration_sector_bad() {
        let patch = json!({"subject_type": "pairwise",
            "sector_identifier_uri": "https://sector.example/redirect_uris.json"});
        registration_refused(patch, "invalid_client_metadata").await;
    }

    /// `…-brazildcr-update-client-config-invalid-redirect-uri` and
    /// `…-update-client-config-invalid-jwks-by-value` (RFC 7592 §2.2): 400
    /// `invalid_redirect_uri` / `invalid_client_metadata`; the old registration and its
    /// access token are unchanged.
    #[tokio::test(flavor = "multi_thread")]
    async fn dcr_update_client_config_invalid_redirect_uri_and_jwks_by_value() {
        let w = World::start().await;
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let reg = register(&w, &good(&key)).await.json();
        let id = reg["client_id"].as_str().unwrap();
        let token = reg["registration_access_token"].as_str().unwrap();
        let mut jwk = key.verifying_key().to_jwk();
        jwk.insert("d".into(), json!("AAAA"));
        for (patch, code) in [
            (
                json!({"redirect_uris": ["http://clinic.example/cb"]}),
                "invalid_redirect_uri",
            ),
            (json!({"jwks": {"keys": [jwk]}}), "invalid_client_metadata"),
        ] {
            let body = merged(good(&key), &merged(patch, &json!({"client_id": id})));
            let r = manage(&w, "PUT", id, token, Some(&body)).await;
            assert_error(&r, 400, code, "update");
        }
        let r = manage(&w, "GET", id, token, None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.json()["redirect_uris"],
            json!(["https://clinic.example/cb"])
        );
        w.stop().await;
    }

    /// `…-brazildcr-invalid-registration-access-token` (THREATS D5): GET, PUT and DELETE
    /// with another token: 401 `invalid_token`; the client is still there.
    #[tokio::test(flavor = "multi_thread")]
    async fn dcr_invalid_registration_access_token() {
        let w = World::start().await;
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let reg = register(&w, &good(&key)).await.json();
        let id = reg["client_id"].as_str().unwrap();
        let token = reg["registration_access_token"].as_str().unwrap();
        let body = merged(good(&key), &json!({"client_id": id}));
        for method in ["GET", "PUT", "DELETE"] {
            let r = manage(&w, method, id, "not-the-token", Some(&body)).await;
            assert_error(&r, 401, "invalid_token", method);
            assert_eq!(
                r.header("www-authenticate"),
                Some("Bearer error=\"invalid_token\"")
            );
        }
        assert_eq!(manage(&w, "GET", id, token, None).await.status, 200);
        w.stop().await;
    }

    /// `…-brazildcr-client-deletion` (RFC 7592 §2.3): 204, then GET and DELETE with the
    /// old token are 401.
    #[tokio::test(flavor = "multi_thread")]
    async fn dcr_client_deletion() {
        let w = World::start().await;
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let reg = register(&w, &good(&key)).await.json();
        let id = reg["client_id"].as_str().unwrap();
        let token = reg["registration_access_token"].as_str().unwrap();
        assert_eq!(manage(&w, "DELETE", id, token, None).await.status, 204);
        for method in ["GET", "DELETE"] {
            let r = manage(&w, method, id, token, None).await;
            assert_error(&r, 401, "invalid_token", method);
        }
        w.stop().await;
    }
}

/// OIDC-core modules (`oidcc-…`) at the authorization endpoint, for a SMART app that may
/// use the front channel without PAR: a redirect URI that is not exactly a registered one
/// gets the error page (front channel, no redirect); other errors go back to the verified
/// redirect URI with `state` and `iss`.
mod oidcc {
    use super::*;

    fn query(redirect_uri: &str, response_type: Option<&str>) -> String {
        let challenge = CodeChallenge::for_verifier(VERIFIER);
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("client_id", "smart-app")
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", "openid")
            .append_pair("state", "st-oidcc")
            .append_pair("code_challenge", challenge.as_str())
            .append_pair("code_challenge_method", "S256");
        if let Some(rt) = response_type {
            q.append_pair("response_type", rt);
        }
        format!("/authorize?{}", q.finish())
    }

    /// `oidcc-ensure-registered-redirect-uri` (THREATS A9).
    #[tokio::test(flavor = "multi_thread")]
    async fn oidcc_ensure_registered_redirect_uri() {
        let w = World::start().await;
        let r =
            w.s.get(&query("https://attacker.example/cb", Some("code")))
                .await;
        assert_error_page(&r, "unregistered");
        w.stop().await;
    }

    /// `oidcc-redirect-uri-query-added` and `oidcc-redirect-uri-query-mismatch` (THREATS
    /// A9, A10; exact matching).
    #[tokio::test(flavor = "multi_thread")]
    async fn oidcc_redirect_uri_query_added_and_query_mismatch() {
        let w = World::start().await;
        let added = format!("{SMART_REDIRECT}?foo=bar");
        assert_error_page(&w.s.get(&query(&added, Some("code"))).await, "added");
        let mismatch = "https://app.example/cb2?x=2";
        assert_error_page(&w.s.get(&query(mismatch, Some("code"))).await, "mismatch");
        // The registered ones are fine.
        for ok in [SMART_REDIRECT, SMART_REDIRECT_WITH_QUERY] {
            let r = w.s.get(&query(ok, Some("code"))).await;
            assert_eq!(r.status, 303, "{ok}: {}", r.text());
        }
        w.stop().await;
    }

    /// `oidcc-response-type-missing` (RFC 6749 §4.1.2.1): the redirect URI is verified, so
    /// the error goes back to it: `invalid_request`, with `state` and `iss`.
    #[tokio::test(flavor = "multi_thread")]
    async fn oidcc_response_type_missing() {
        let w = World::start().await;
        let r = w.s.get(&query(SMART_REDIRECT, None)).await;
        assert_eq!(r.status, 303, "{}", r.text());
        let location = r.header("location").unwrap();
        assert!(location.starts_with(SMART_REDIRECT), "{location}");
        assert_eq!(
            url_param(location, "error").as_deref(),
            Some("invalid_request")
        );
        assert_eq!(url_param(location, "state").as_deref(), Some("st-oidcc"));
        assert_eq!(url_param(location, "iss"), Some(w.s.issuer.clone()));
        w.stop().await;
    }
}

/// OIDC Core §3.1.2.1 `prompt` and `max_age` (the `oidcc-prompt-*` and `oidcc-max-age-*`
/// modules of the OIDC Basic plan), for the FAPI clients through PAR (the pushed
/// request's values) and for a SMART app on the front channel. THREATS A16: neither
/// `prompt=none` nor `max_age` ever skips the user or grants a new client silently.
mod oidcc_prompt {
    use super::*;

    /// `oidcc-prompt-none-not-logged-in`: no session and `prompt=none`: no page; the
    /// client gets `login_required` (with `state` and `iss`; in the JARM JWT for JARM
    /// clients) and the request is consumed. `none` with another value is
    /// `invalid_request` at PAR.
    #[tokio::test(flavor = "multi_thread")]
    async fn oidcc_prompt_none_not_logged_in() {
        let w = World::start().await;
        for c in w.matrix() {
            let ru = c.push_with(&w.s, &json!({"prompt": "none"})).await;
            let r = w.s.get(&authorize_path(&c.id, &ru)).await;
            assert_eq!(r.status, 303, "{}: {}", c.id, r.text());
            let resp = w.response(c, r.header("location").unwrap()).await;
            assert_eq!(resp["error"], "login_required", "{}: {resp:?}", c.id);
            assert!(resp["state"].as_str().unwrap().starts_with("st-"));
            assert_eq!(resp["iss"], json!(w.s.issuer));
            assert_error_page(&w.s.get(&authorize_path(&c.id, &ru)).await, &c.id);
            let r = c.par_with(&w.s, &json!({"prompt": "none login"})).await;
            assert_error(&r, 400, "invalid_request", &c.id);
        }
        // A SMART app on the front channel.
        let challenge = CodeChallenge::for_verifier(VERIFIER);
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", "smart-app")
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", SMART_REDIRECT)
            .append_pair("scope", "openid")
            .append_pair("state", "st-smart")
            .append_pair("prompt", "none")
            .append_pair("code_challenge", challenge.as_str())
            .append_pair("code_challenge_method", "S256")
            .finish();
        let r = w.s.get(&format!("/authorize?{q}")).await;
        assert_eq!(r.status, 303, "{}", r.text());
        let location = r.header("location").unwrap();
        assert!(location.starts_with(SMART_REDIRECT), "{location}");
        assert_eq!(
            url_param(location, "error").as_deref(),
            Some("login_required")
        );
        assert_eq!(url_param(location, "state").as_deref(), Some("st-smart"));
        w.stop().await;
    }

    /// `oidcc-prompt-none-logged-in`: signed in, with a remembered consent: the code comes
    /// back with no page. Signed in without one: `consent_required`, no page.
    #[tokio::test(flavor = "multi_thread")]
    async fn oidcc_prompt_none_logged_in() {
        let w = World::start().await;
        for c in w.matrix() {
            // First flow: the user consents and asks to be remembered.
            let ru = c.push(&w.s).await;
            let si = w.signed_in(c, &ru).await;
            consent(&w.s, &si, &[("remember", "1")]).await;
            let ru = c.push_with(&w.s, &json!({"prompt": "none"})).await;
            let r = w.authorize_signed_in(c, &ru).await;
            assert_eq!(r.status, 303, "{}: {}", c.id, r.text());
            let cookie = w.session_cookie();
            let r =
                w.s.send(
                    "GET",
                    r.header("location").unwrap(),
                    &[("cookie", &cookie)],
                    Vec::new(),
                    None,
                )
                .await;
            assert_eq!(r.status, 303, "{}: no page: {}", c.id, r.text());
            let resp = w.response(c, r.header("location").unwrap()).await;
            let t = c.redeem(&w.s, resp["code"].as_str().unwrap()).await;
            assert_eq!(t.status, 200, "{}: {}", c.id, t.text());
            // Another client the user never consented to.
            let other = w.other(c);
            let ru = other.push_with(&w.s, &json!({"prompt": "none"})).await;
            let r = w.authorize_signed_in(other, &ru).await;
            let r =
                w.s.send(
                    "GET",
                    r.header("location").unwrap(),
                    &[("cookie", &cookie)],
                    Vec::new(),
                    None,
                )
                .await;
            assert_eq!(r.status, 303, "{}: {}", other.id, r.text());
            let resp = w.response(other, r.header("location").unwrap()).await;
            assert_eq!(resp["error"], "consent_required", "{}: {resp:?}", other.id);
        }
        w.stop().await;
    }

    /// `oidcc-prompt-login`: signed in, `prompt=login` in the pushed request: the
    /// authorization endpoint asks the user to sign in again, and the consent page cannot
    /// be reached with the old session; after signing in, the flow completes.
    #[tokio::test(flavor = "multi_thread")]
    async fn oidcc_prompt_login() {
        let w = World::start().await;
        for c in w.matrix() {
            w.code(c).await; // a session
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
            let ru = c.push_with(&w.s, &json!({"prompt": "login"})).await;
            let r = w.authorize_signed_in(c, &ru).await;
            assert_eq!(r.status, 303);
            assert!(
                r.header("location").unwrap().starts_with("/login?"),
                "{}",
                c.id
            );
            let consent_url = format!(
                "/consent?{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("client_id", &c.id)
                    .append_pair("interaction", &ru)
                    .finish()
            );
            let cookie = w.session_cookie();
            let r =
                w.s.send(
                    "GET",
                    &consent_url,
                    &[("cookie", &cookie)],
                    Vec::new(),
                    None,
                )
                .await;
            assert_eq!(r.status, 303, "{}: {}", c.id, r.text());
            assert!(
                r.header("location").unwrap().starts_with("/login?"),
                "{}",
                c.id
            );
            let si = sign_in(&w.s, &c.id, &ru, "nurse", PASSWORD).await;
            let resp = w.response(c, &consent(&w.s, &si, &[]).await).await;
            assert!(resp.get("code").is_some(), "{}", c.id);
        }
        w.stop().await;
    }

    /// `oidcc-max-age-1`: a session older than `max_age` = 1 s: sign in again (and the
    /// consent page cannot be reached with it); `max_age` = 3600: straight to consent.
    #[tokio::test(flavor = "multi_thread")]
    async fn oidcc_max_age_1() {
        let w = World::start().await;
        let c = w.c("sp-pkjwt");
        w.code(c).await; // a session
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        for c in w.matrix() {
            let ru = c.push_with(&w.s, &json!({"max_age": 1})).await;
            let r = w.authorize_signed_in(c, &ru).await;
            assert!(
                r.header("location").unwrap().starts_with("/login?"),
                "{}",
                c.id
            );
            let ru = c.push_with(&w.s, &json!({"max_age": 3600})).await;
            let r = w.authorize_signed_in(c, &ru).await;
            assert!(
                r.header("location").unwrap().starts_with("/consent?"),
                "{}",
                c.id
            );
        }
        w.stop().await;
    }
}
