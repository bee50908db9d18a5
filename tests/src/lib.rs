//! End-to-end test harness: a real `heartgate` server on 127.0.0.1 (a free port), over
//! TLS with its development PKI, in a temporary data directory, stopped when the test
//! ends; and a small HTTPS client that can present client certificates.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test harness; a failure is a failed test

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use heartgate_server::config::{Config, Env};
use heartgate_server::http::Running;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

pub mod child;
pub mod redis;

/// A client identity: certificate chain and key.
#[derive(Clone)]
pub struct Identity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// DER of the leaf.
    pub der: Vec<u8>,
    key_der: Vec<u8>,
}

impl Identity {
    /// A self-signed certificate for `name`.
    pub fn self_signed(name: &str) -> Identity {
        let c = rcgen::generate_simple_self_signed(vec![name.into()]).unwrap();
        let der = c.cert.der().to_vec();
        Identity {
            chain: vec![CertificateDer::from(der.clone())],
            der,
            key_der: c.signing_key.serialize_der(),
        }
    }
}

/// A test PKI: a CA that issues client certificates (for `tls_client_auth`).
pub struct TestCa {
    /// PEM of the CA certificate.
    pub pem: String,
    key: rcgen::KeyPair,
    params: rcgen::CertificateParams,
}

impl TestCa {
    /// A new CA.
    pub fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "e2e client CA");
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            key,
            params,
        }
    }

    /// A client certificate whose subject reads `CN=<cn>,O=Clinic` (RFC 4514).
    pub fn issue(&self, cn: &str) -> Identity {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        // ASN.1 order O, CN: the RFC 4514 string (most specific first) is `CN=…,O=Clinic`.
        // (A fresh name: rcgen's default one already holds a CN, which would stay first.)
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "Clinic");
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = p.signed_by(&key, &issuer).unwrap();
        let der = cert.der().to_vec();
        Identity {
            chain: vec![CertificateDer::from(der.clone())],
            der,
            key_der: key.serialize_der(),
        }
    }
}

impl TestCa {
    /// A TLS server certificate for 127.0.0.1 and localhost, with its PKCS#8 key.
    pub fn issue_server(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p =
            rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = p.signed_by(&key, &issuer).unwrap();
        (
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// A response.
#[derive(Debug)]
pub struct Resp {
    /// Status.
    pub status: u16,
    /// Headers (lowercase names; the last value of repeated ones, `set-cookie` joined by
    /// newlines).
    pub headers: HashMap<String, String>,
    /// Body.
    pub body: Bytes,
}

impl Resp {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}), status {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A running server.
pub struct TestServer {
    /// `https://127.0.0.1:<port>`.
    pub issuer: String,
    /// The address.
    pub addr: SocketAddr,
    /// The development CA.
    pub ca_pem: String,
    /// The initial access token.
    pub iat: String,
    /// The data directory, when the server owns a temporary one.
    pub data_dir: Option<tempfile::TempDir>,
    running: Option<Running>,
    /// The server's audit log, closed (written and fsynced) by `stop`.
    audit_log: Option<Arc<heartgate_server::audit_log::AuditLog>>,
}

/// A change a test makes to the application before it serves.
type Adjust = Box<dyn FnOnce(&mut heartgate_server::app::App)>;

impl TestServer {
    /// Start a server with extra TOML configuration (appended to the defaults: memory
    /// store, a free port on 127.0.0.1, a temporary data directory).
    pub async fn start(extra_toml: &str) -> TestServer {
        Self::start_in(tempfile::tempdir().unwrap(), extra_toml, "memory").await
    }

    /// [`TestServer::start`], with `adjust` applied to the application before it serves
    /// (to put a test double in place of one of its parts).
    pub async fn start_adjusted(
        extra_toml: &str,
        adjust: impl FnOnce(&mut heartgate_server::app::App) + 'static,
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in_adjusted(dir, extra_toml, "memory", Some(Box::new(adjust))).await
    }

    /// Start with the embedded store in `dir` (for restart tests).
    pub async fn start_in(dir: tempfile::TempDir, extra_toml: &str, store: &str) -> TestServer {
        Self::start_in_adjusted(dir, extra_toml, store, None).await
    }

    async fn start_in_adjusted(
        dir: tempfile::TempDir,
        extra_toml: &str,
        store: &str,
        adjust: Option<Adjust>,
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let path = dir.path().display().to_string();
        let mut s = Self::serve(listener, &path, extra_toml, store, adjust).await;
        s.data_dir = Some(dir);
        s
    }

    /// Start on `port` with the embedded store in the directory `dir` (not removed).
    pub async fn start_at(dir: &str, extra_toml: &str, port: u16) -> TestServer {
        Self::start_at_with(dir, extra_toml, port, "embedded").await
    }

    /// Start on `port` with `store` and the data directory `dir` (not removed).
    pub async fn start_at_with(dir: &str, extra_toml: &str, port: u16, store: &str) -> TestServer {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        Self::serve(listener, dir, extra_toml, store, None).await
    }

    async fn serve(
        listener: tokio::net::TcpListener,
        dir: &str,
        extra_toml: &str,
        store: &str,
        adjust: Option<Adjust>,
    ) -> TestServer {
        let addr = listener.local_addr().unwrap();
        // The nodes of one cluster share an issuer: extra TOML may name it.
        let issuer = match extra_toml
            .lines()
            .find_map(|l| l.trim().strip_prefix("issuer = "))
        {
            Some(quoted) => quoted.trim_matches('"').to_owned(),
            None => format!("https://127.0.0.1:{}", addr.port()),
        };
        let text =
            format!("listen = \"{addr}\"\ndata_dir = {dir:?}\nstore = \"{store}\"\n{extra_toml}",);
        let text = if extra_toml.contains("issuer = ") {
            text
        } else {
            format!("issuer = \"{issuer}\"\n{text}")
        };
        let resolved = Config::parse(&text, &Env::new())
            .unwrap()
            .resolve()
            .unwrap();
        let mut server = heartgate_server::run::build(&resolved).unwrap();
        if let Some(adjust) = adjust {
            adjust(Arc::get_mut(&mut server.app).expect("the application is not shared yet"));
        }
        let running = Running::spawn(
            listener,
            server.tls.clone(),
            server.app.clone(),
            server.limits.clone(),
        )
        .unwrap();
        let mut s = Self::connect(dir, addr.port());
        s.issuer = issuer;
        s.running = Some(running);
        s.audit_log = server.audit_log.clone();
        s
    }

    /// A client for a server (maybe in another process) serving the data directory `dir`
    /// on 127.0.0.1:`port`.
    pub fn connect(dir: &str, port: u16) -> TestServer {
        let d = std::path::Path::new(dir);
        let ca_pem = std::fs::read_to_string(d.join("pki/ca.pem")).unwrap();
        let iat = std::fs::read_to_string(d.join("initial-access-token"))
            .unwrap()
            .trim()
            .to_owned();
        TestServer {
            issuer: format!("https://127.0.0.1:{port}"),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            ca_pem,
            iat,
            data_dir: None,
            running: None,
            audit_log: None,
        }
    }

    /// A client of the same server that does not own it (for tasks that outlive a
    /// borrow; the server stops with the original).
    pub fn clone_client(&self) -> TestServer {
        TestServer {
            issuer: self.issuer.clone(),
            addr: self.addr,
            ca_pem: self.ca_pem.clone(),
            iat: self.iat.clone(),
            data_dir: None,
            running: None,
            audit_log: None,
        }
    }

    /// Stop the server and wait for it; returns its temporary data directory, if any.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        // Connections still winding down may hold the app (and the log) a little longer;
        // a test reading the log after `stop` must see every event.
        if let Some(a) = self.audit_log.take() {
            a.close();
        }
        self.data_dir.take()
    }

    /// A client TLS configuration trusting the server's CA, without a client certificate:
    /// a new one per call, with its own session store (a new TLS client).
    pub fn client_tls(&self) -> Arc<rustls::ClientConfig> {
        self.tls(None)
    }

    fn tls(&self, id: Option<&Identity>) -> Arc<rustls::ClientConfig> {
        self.tls_with(id, rustls::crypto::ring::default_provider())
    }

    fn tls_with(
        &self,
        id: Option<&Identity>,
        provider: rustls::crypto::CryptoProvider,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let cfg = match id {
            None => b.with_no_client_auth(),
            Some(i) => b
                .with_client_auth_cert(
                    i.chain.clone(),
                    PrivateKeyDer::try_from(i.key_der.clone()).unwrap(),
                )
                .unwrap(),
        };
        Arc::new(cfg)
    }

    /// A TLS connection to the server offering the ALPN protocols `alpn`, no client
    /// certificate, no HTTP on top: for tests that write exact bytes.
    pub async fn raw_tls(
        &self,
        alpn: &[&[u8]],
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        self.raw_tls_with_suites(alpn, rustls::crypto::ring::default_provider().cipher_suites)
            .await
    }

    /// [`TestServer::raw_tls`] offering only the cipher suites `suites`, in that order.
    pub async fn raw_tls_with_suites(
        &self,
        alpn: &[&[u8]],
        suites: Vec<rustls::SupportedCipherSuite>,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: suites,
            ..rustls::crypto::ring::default_provider()
        };
        let mut cfg = (*self.tls_with(None, provider)).clone();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        self.tls_connect(Arc::new(cfg)).await
    }

    /// A TLS connection to the server with the client configuration `cfg` (its session
    /// store decides whether the handshake resumes), no HTTP on top.
    pub async fn tls_connect(
        &self,
        cfg: Arc<rustls::ClientConfig>,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        tokio_rustls::TlsConnector::from(cfg)
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// Send one request on a fresh connection.
    pub async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        id: Option<&Identity>,
    ) -> Resp {
        self.try_send(method, path_and_query, headers, body, id)
            .await
            .unwrap()
    }

    /// [`TestServer::send`], with a failure of the exchange (connection refused, reset,
    /// broken pipe, no response) as an error instead of a panic.
    pub async fn try_send(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        id: Option<&Identity>,
    ) -> Result<Resp, String> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let connector = tokio_rustls::TlsConnector::from(self.tls(id));
        let tls = connector
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let mut b = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header("host", format!("127.0.0.1:{}", self.addr.port()));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = sender
            .send_request(b.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .map_err(|e| format!("request: {e:?}"))?;
        let status = resp.status().as_u16();
        let mut hs = HashMap::new();
        for (k, v) in resp.headers() {
            let v = v.to_str().unwrap_or("").to_owned();
            hs.entry(k.as_str().to_owned())
                .and_modify(|e: &mut String| {
                    e.push('\n');
                    e.push_str(&v);
                })
                .or_insert(v);
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e:?}"))?
            .to_bytes();
        Ok(Resp {
            status,
            headers: hs,
            body,
        })
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, &[], Vec::new(), None).await
    }

    /// POST a form.
    pub async fn form(&self, path: &str, fields: &[(&str, &str)], id: Option<&Identity>) -> Resp {
        self.form_with(path, fields, &[], id).await
    }

    /// POST a form with extra headers.
    pub async fn form_with(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
        id: Option<&Identity>,
    ) -> Resp {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut h = vec![("content-type", "application/x-www-form-urlencoded")];
        h.extend_from_slice(headers);
        self.send("POST", path, &h, body.into_bytes(), id).await
    }

    /// POST JSON with a bearer token.
    pub async fn json_post(&self, path: &str, bearer: &str, body: &serde_json::Value) -> Resp {
        let auth = format!("Bearer {bearer}");
        self.send(
            "POST",
            path,
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
            ],
            body.to_string().into_bytes(),
            None,
        )
        .await
    }
}

/// A user signed in at the login page of a pushed request: the session cookie and the
/// page the login sent the browser to (consent).
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// `__Host-hg_session=...`.
    pub session: String,
    /// The next page's URL.
    pub next: String,
}

/// The sign-in step of the pages, over plain HTTP: `/authorize` with `request_uri`, the
/// login page, the login form with the user's password.
pub async fn sign_in(
    s: &TestServer,
    client_id: &str,
    request_uri: &str,
    username: &str,
    password: &str,
) -> SignedIn {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", client_id)
        .append_pair("request_uri", request_uri)
        .finish();
    let r = s.get(&format!("/authorize?{q}")).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let page = s.get(r.header("location").unwrap()).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let pre = cookie_pair(page.header("set-cookie").unwrap(), "__Host-hg_pre").unwrap();
    let html = page.text();
    let ok = s
        .form_with(
            "/login",
            &[
                ("interaction", &hidden_input(&html, "interaction").unwrap()),
                ("csrf", &hidden_input(&html, "csrf").unwrap()),
                ("username", username),
                ("password", password),
            ],
            &[("cookie", &pre)],
            None,
        )
        .await;
    assert_eq!(ok.status, 303, "{}", ok.text());
    SignedIn {
        session: cookie_pair(ok.header("set-cookie").unwrap(), "__Host-hg_session").unwrap(),
        next: ok.header("location").unwrap().to_owned(),
    }
}

/// The consent step: the consent page with the session, then "allow" with `extra`
/// fields (`remember`, `patient`...). Returns where the server redirects the browser.
pub async fn consent(s: &TestServer, signed_in: &SignedIn, extra: &[(&str, &str)]) -> String {
    let cookie = [("cookie", signed_in.session.as_str())];
    let page = s
        .send("GET", &signed_in.next, &cookie, Vec::new(), None)
        .await;
    assert_eq!(page.status, 200, "{}", page.text());
    let html = page.text();
    let interaction = hidden_input(&html, "interaction").unwrap();
    let csrf = hidden_input(&html, "csrf").unwrap();
    let mut fields = vec![
        ("interaction", interaction.as_str()),
        ("csrf", csrf.as_str()),
        ("decision", "allow"),
    ];
    fields.extend_from_slice(extra);
    let done = s.form_with("/consent", &fields, &cookie, None).await;
    assert_eq!(done.status, 303, "{}", done.text());
    done.header("location").unwrap().to_owned()
}

/// Sign in at the CIBA approval page (`/ciba`) with a password; the session cookie.
pub async fn ciba_sign_in(s: &TestServer, username: &str, password: &str) -> String {
    let page = s.get("/ciba").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let pre = cookie_pair(page.header("set-cookie").unwrap(), "__Host-hg_pre").unwrap();
    let csrf = hidden_input(&page.text(), "csrf").unwrap();
    let ok = s
        .form_with(
            "/ciba/login",
            &[
                ("csrf", csrf.as_str()),
                ("username", username),
                ("password", password),
            ],
            &[("cookie", &pre)],
            None,
        )
        .await;
    assert_eq!(ok.status, 303, "{}", ok.text());
    cookie_pair(ok.header("set-cookie").unwrap(), "__Host-hg_session").unwrap()
}

/// The approval form of the pending CIBA request whose section of the approval page
/// shows `message`: (request, csrf, binding).
pub fn ciba_request_form(html: &str, message: &str) -> (String, String, String) {
    let section = html
        .split("<section class=\"ciba-request\">")
        .find(|s| s.contains(message))
        .unwrap_or_else(|| panic!("no request showing {message}"));
    (
        hidden_input(section, "request").unwrap(),
        hidden_input(section, "csrf").unwrap(),
        hidden_input(section, "binding").unwrap(),
    )
}

/// Decide (`approve` / `deny`) a request at `/ciba/decide`; the status.
pub async fn ciba_decide(
    s: &TestServer,
    session: &str,
    (request, csrf, binding): &(String, String, String),
    decision: &str,
) -> u16 {
    s.form_with(
        "/ciba/decide",
        &[
            ("request", request),
            ("csrf", csrf),
            ("binding", binding),
            ("decision", decision),
        ],
        &[("cookie", session)],
        None,
    )
    .await
    .status
}

/// A query or fragment parameter of a URL.
pub fn url_param(url: &str, name: &str) -> Option<String> {
    let q = url
        .split_once('#')
        .map(|(_, f)| f)
        .or_else(|| url.split_once('?').map(|(_, q)| q))?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The value of a hidden input in an HTML page.
pub fn hidden_input(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(
        html[start..end]
            .replace("&quot;", "\"")
            .replace("&#x27;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// The `name=value` of a `Set-Cookie` header with that name.
pub fn cookie_pair(set_cookie: &str, name: &str) -> Option<String> {
    set_cookie
        .lines()
        .find(|l| l.starts_with(&format!("{name}=")))
        .and_then(|l| l.split(';').next())
        .map(str::to_owned)
}

/// What a test https server saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The body.
    pub body: Bytes,
}

/// What a test https server answers.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// A delay before answering.
    pub stall: std::time::Duration,
}

impl Answer {
    /// `status` with `body`, at once.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: body.into(),
            stall: std::time::Duration::ZERO,
        }
    }
}

/// An https server on 127.0.0.1 with a certificate issued by `ca`, answering each request
/// with `handler` (a partner's JWKS, a CIBA notification endpoint...). Its port; it
/// stops with the test's runtime.
pub async fn https_server<F, Fut>(ca: &TestCa, handler: F) -> u16
where
    F: Fn(Seen) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Answer> + Send + 'static,
{
    let (chain, key) = ca.issue_server();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, handler) = (acceptor.clone(), handler.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let handler = handler.clone();
                        async move {
                            let authorization = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let a = handler(Seen {
                                authorization,
                                body,
                            })
                            .await;
                            tokio::time::sleep(a.stall).await;
                            let mut r = hyper::Response::new(Full::new(Bytes::from(a.body)));
                            *r.status_mut() = hyper::StatusCode::from_u16(a.status).unwrap();
                            for (k, v) in a.headers {
                                r.headers_mut().insert(k, v.parse().unwrap());
                            }
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    port
}

/// A port of 127.0.0.1 free a moment ago (bound and released): for servers a test starts
/// in another process, which bind it themselves (retry if another process took it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
