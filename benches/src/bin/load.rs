//! The load driver: many concurrent HTTPS clients against one server for a fixed time,
//! reporting requests/s, p50 and p99 as one JSON line. `benches/load` runs it against
//! heartgate, oidc-provider and a bare hyper server in the same run.
//!
//! ```text
//! load keygen DIR
//! load SCENARIO --url URL --ca CA.pem [--key DIR/client-key.pem --client ID]
//!      [--path P] [--introspect-path P] [--resource R] [--duration S] [--concurrency N]
//!      [--new-connections] [--also URL]... [--issuer URL]
//! SCENARIO: token | token-mtls | par | introspect-hit | introspect-miss | get
//! ```
//!
//! `token-mtls`: client_credentials authenticated by the TLS client certificate of
//! `--mtls DIR` (`self_signed_tls_client_auth`, the token bound to it). `par`: one pushed
//! authorization request (RFC 9126) per request — PKCE S256 challenge, redirect URI,
//! scope `openid`, the client authenticated by a fresh assertion — answered 201.
//!
//! With `--also`, the clients are spread over several nodes of one cluster (client `i` on
//! node `i mod n`); `--issuer` is then the cluster's issuer, the audience of assertions.
//! The token of `introspect-hit` is issued by the first node and introspected on all.
//!
//! Every request that authenticates the client signs a fresh ES256 assertion (unique
//! `jti`), the same work against every server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: a benchmark tool; failures abort the run

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use heartgate_core::jose::{sign_jwt, Algorithm, SigningKey};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

struct Opts {
    scenario: String,
    url: String,
    ca: String,
    key: Option<String>,
    client: String,
    path: String,
    introspect_path: String,
    resource: Option<String>,
    duration: u64,
    concurrency: usize,
    new_connections: bool,
    /// Authenticate with the client certificate of the keygen directory (mTLS,
    /// `self_signed_tls_client_auth`) instead of assertions.
    mtls: Option<String>,
    /// The client that introspects (default: `--client`).
    introspect_client: Option<String>,
    /// Further nodes of the same cluster.
    also: Vec<String>,
    /// The issuer, when it is not `--url`.
    issuer: Option<String>,
}

fn parse() -> Opts {
    let mut a = std::env::args().skip(1);
    let scenario = a.next().expect("scenario");
    let mut o = Opts {
        scenario,
        url: String::new(),
        ca: String::new(),
        key: None,
        client: "backend".into(),
        path: "/token".into(),
        introspect_path: "/introspect".into(),
        resource: None,
        duration: 8,
        concurrency: 32,
        new_connections: false,
        mtls: None,
        introspect_client: None,
        also: Vec::new(),
        issuer: None,
    };
    while let Some(k) = a.next() {
        let mut v = || a.next().expect("value");
        match k.as_str() {
            "--url" => o.url = v(),
            "--ca" => o.ca = v(),
            "--key" => o.key = Some(v()),
            "--client" => o.client = v(),
            "--path" => o.path = v(),
            "--introspect-path" => o.introspect_path = v(),
            "--resource" => o.resource = Some(v()),
            "--duration" => o.duration = v().parse().expect("seconds"),
            "--concurrency" => o.concurrency = v().parse().expect("count"),
            "--new-connections" => o.new_connections = true,
            "--mtls" => o.mtls = Some(v()),
            "--introspect-client" => o.introspect_client = Some(v()),
            "--also" => o.also.push(v()),
            "--issuer" => o.issuer = Some(v()),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

struct Ctx {
    o: Opts,
    tls: tokio_rustls::TlsConnector,
    addrs: Vec<std::net::SocketAddr>,
    host: String,
    sni: String,
    key: Option<SigningKey>,
    aud: String,
    n: AtomicU64,
    token: std::sync::OnceLock<String>,
}

impl Ctx {
    fn assertion(&self) -> String {
        let key = self.key.as_ref().expect("--key");
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        sign_jwt(
            key,
            None,
            serde_json::json!({"iss": self.o.client, "sub": self.o.client, "aud": self.aud,
                "iat": t, "exp": t + 120, "jti": format!("load-{}-{n}-{t}", std::process::id())})
            .as_object()
            .unwrap(),
        )
        .unwrap()
    }

    fn form(&self, fields: &[(&str, &str)]) -> Vec<u8> {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish()
            .into_bytes()
    }

    fn token_body(&self) -> Vec<u8> {
        let a = self.assertion();
        let mut f = vec![
            ("grant_type", "client_credentials"),
            ("scope", "system/Observation.rs"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", a.as_str()),
        ];
        if let Some(r) = &self.o.resource {
            f.push(("resource", r));
        }
        self.form(&f)
    }

    /// client_credentials by the TLS client certificate: no assertion to sign.
    fn token_mtls_body(&self) -> Vec<u8> {
        let mut f = vec![
            ("grant_type", "client_credentials"),
            ("scope", "system/Observation.rs"),
            ("client_id", self.o.client.as_str()),
        ];
        if let Some(r) = &self.o.resource {
            f.push(("resource", r));
        }
        self.form(&f)
    }

    /// A pushed authorization request with a fresh PKCE challenge and `state`.
    fn par_body(&self) -> Vec<u8> {
        let a = self.assertion();
        let mut v = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut v).unwrap();
        let verifier = heartgate_core::jose::b64::encode(v);
        let challenge = heartgate_core::jose::b64::encode(
            ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref(),
        );
        let state = heartgate_core::jose::b64::encode(&v[..12]);
        self.form(&[
            ("response_type", "code"),
            ("client_id", self.o.client.as_str()),
            ("redirect_uri", "https://app.example/cb"),
            ("scope", "openid"),
            ("state", state.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", a.as_str()),
        ])
    }

    fn introspect_body(&self, token: &str) -> Vec<u8> {
        if self.o.mtls.is_some() {
            let id = self
                .o
                .introspect_client
                .as_deref()
                .unwrap_or(&self.o.client);
            return self.form(&[("token", token), ("client_id", id)]);
        }
        let a = self.assertion();
        self.form(&[
            ("token", token),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", a.as_str()),
        ])
    }

    /// One request: (method, path, body).
    fn next(&self) -> (&'static str, String, Vec<u8>) {
        match self.o.scenario.as_str() {
            "token" => ("POST", self.o.path.clone(), self.token_body()),
            "token-mtls" => ("POST", self.o.path.clone(), self.token_mtls_body()),
            "par" => ("POST", self.o.path.clone(), self.par_body()),
            "introspect-hit" => (
                "POST",
                self.o.introspect_path.clone(),
                self.introspect_body(self.token.get().expect("token")),
            ),
            "introspect-miss" => {
                let mut r = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r).unwrap();
                let t = format!("hgat_{}", heartgate_core::jose::b64::encode(r));
                (
                    "POST",
                    self.o.introspect_path.clone(),
                    self.introspect_body(&t),
                )
            }
            _ => ("GET", self.o.path.clone(), Vec::new()),
        }
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A connection to node `i mod n`.
async fn connect(c: &Ctx, i: usize) -> Sender {
    let tcp = tokio::net::TcpStream::connect(c.addrs[i % c.addrs.len()])
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    let tls = c
        .tls
        .connect(ServerName::try_from(c.sni.clone()).unwrap(), tcp)
        .await
        .unwrap();
    let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    s
}

async fn send(c: &Ctx, s: &mut Sender, method: &str, path: &str, body: Vec<u8>) -> (u16, Bytes) {
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", &c.host);
    if method == "POST" {
        b = b.header("content-type", "application/x-www-form-urlencoded");
    }
    let resp = s
        .send_request(b.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let st = resp.status().as_u16();
    (st, resp.into_body().collect().await.unwrap().to_bytes())
}

fn keygen(dir: &str) {
    let k = SigningKey::generate(Algorithm::ES256).unwrap();
    std::fs::write(format!("{dir}/client-key.pem"), k.to_pkcs8_pem().as_bytes()).unwrap();
    let jwks = serde_json::json!({"keys": [k.verifying_key().to_jwk()]});
    std::fs::write(format!("{dir}/client-jwks.json"), jwks.to_string()).unwrap();
    // A self-signed client certificate on its own key, for the mTLS caller.
    let m = SigningKey::generate(Algorithm::ES256).unwrap();
    let kp = rcgen::KeyPair::try_from(m.to_pkcs8_der().as_slice()).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["load-rs".into()])
        .unwrap()
        .self_signed(&kp)
        .unwrap();
    std::fs::write(format!("{dir}/mtls-cert.pem"), cert.pem()).unwrap();
    std::fs::write(format!("{dir}/mtls-key.pem"), kp.serialize_pem()).unwrap();
    // The key with its certificate (`x5c`): oidc-provider matches self-signed
    // certificates by `x5t#S256` of a registered `x5c` only; heartgate takes either.
    let mut jwk = m.verifying_key().to_jwk();
    use base64::Engine as _;
    jwk.insert(
        "x5c".into(),
        serde_json::json!([base64::engine::general_purpose::STANDARD.encode(cert.der())]),
    );
    let jwks = serde_json::json!({"keys": [jwk]});
    std::fs::write(format!("{dir}/mtls-jwks.json"), jwks.to_string()).unwrap();
}

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("keygen") {
        keygen(&std::env::args().nth(2).expect("dir"));
        return;
    }
    let o = parse();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&o.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let cfg = match &o.mtls {
        None => b.with_no_client_auth(),
        Some(dir) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(format!("{dir}/mtls-cert.pem"))
                    .unwrap()
                    .map(|c| c.unwrap())
                    .collect();
            let key =
                rustls::pki_types::PrivateKeyDer::from_pem_file(format!("{dir}/mtls-key.pem"))
                    .unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
    };
    let u = url::Url::parse(&o.url).unwrap();
    let host = u.host_str().unwrap().to_owned();
    let mut addrs = Vec::new();
    for node in std::iter::once(&o.url).chain(&o.also) {
        let u = url::Url::parse(node).unwrap();
        let a = (u.host_str().unwrap(), u.port().unwrap_or(443));
        addrs.push(tokio::net::lookup_host(a).await.unwrap().next().unwrap());
    }
    let addr = addrs[0];
    let key = o.key.as_ref().map(|p| {
        SigningKey::from_pkcs8_pem(Algorithm::ES256, &std::fs::read_to_string(p).unwrap()).unwrap()
    });
    let base = o.issuer.as_deref().unwrap_or(&o.url);
    let aud = format!("{}{}", base.trim_end_matches('/'), o.path);
    let ctx = Arc::new(Ctx {
        tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
        addrs,
        host: format!("{host}:{}", addr.port()),
        sni: host.clone(),
        key,
        aud,
        n: AtomicU64::new(0),
        token: std::sync::OnceLock::new(),
        o,
    });
    if ctx.o.scenario == "introspect-hit" {
        let mut s = connect(&ctx, 0).await;
        let (st, body) = send(&ctx, &mut s, "POST", &ctx.o.path, ctx.token_body()).await;
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let _ = ctx
            .token
            .set(v["access_token"].as_str().unwrap().to_owned());
    }
    // Warm-up, then the measured window.
    let deadline = Instant::now() + Duration::from_secs(ctx.o.duration);
    let mut tasks = Vec::new();
    for i in 0..ctx.o.concurrency {
        let c = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(4096);
            let (mut ok, mut bad) = (0u64, 0u64);
            let mut s = connect(&c, i).await;
            while Instant::now() < deadline {
                if c.o.new_connections {
                    s = connect(&c, i).await;
                }
                let (m, p, b) = c.next();
                let t = Instant::now();
                let (st, body) = send(&c, &mut s, m, &p, b).await;
                lat.push(t.elapsed());
                let good = st == if c.o.scenario == "par" { 201 } else { 200 }
                    && (c.o.scenario != "introspect-hit" || body.starts_with(b"{\"active\":true"))
                    && (c.o.scenario != "introspect-miss"
                        || body.as_ref() == b"{\"active\":false}");
                if good {
                    ok += 1;
                } else {
                    bad += 1;
                    if bad == 1 {
                        eprintln!("unexpected answer {st}: {}", String::from_utf8_lossy(&body));
                    }
                }
            }
            (lat, ok, bad)
        }));
    }
    let start = Instant::now();
    let mut all = Vec::new();
    let (mut ok, mut bad) = (0, 0);
    for t in tasks {
        let (l, o, b) = t.await.unwrap();
        all.extend(l);
        ok += o;
        bad += b;
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{}",
        serde_json::json!({"scenario": ctx.o.scenario, "rps": (ok as f64) / secs,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "ok": ok, "errors": bad,
            "concurrency": ctx.o.concurrency, "new_connections": ctx.o.new_connections})
    );
}
