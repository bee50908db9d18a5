//! The load driver: many concurrent HTTPS clients against one server for a fixed time,
//! reporting requests/s, p50 and p99 as one JSON line. `benches/load` runs it against
//! heartgate, oidc-provider and a bare hyper server in the same run.
//!
//! ```text
//! load keygen DIR
//! load SCENARIO --url URL --ca CA.pem [--key DIR/client-key.pem --client ID]
//!      [--path P] [--introspect-path P] [--resource R] [--duration S] [--concurrency N]
//!      [--new-connections] [--also URL]... [--issuer URL]
//!      [--authorize-path P] [--token-path P] [--user U --password P]
//!      [--rate R] [--requests N] [--pending N]
//! SCENARIO: token | token-mtls | par | flow | flow-sso | ciba-poll | introspect-hit
//!           | introspect-miss | get
//! ```
//!
//! `token-mtls`: client_credentials authenticated by the TLS client certificate of
//! `--mtls DIR` (`self_signed_tls_client_auth`, the token bound to it). `par`: one pushed
//! authorization request (RFC 9126) per request — PKCE S256 challenge, redirect URI,
//! scope `openid`, the client authenticated by a fresh assertion — answered 201.
//!
//! `flow`: the whole authorization code flow as a browser and a client do it, one flow per
//! request: the pushed request (`--path`), `/authorize` with its `request_uri`
//! (`--authorize-path`), then whatever pages the server shows — every redirect followed
//! on the same host, every HTML form filled in (its hidden fields, `username` and
//! `password` from `--user`/`--password`, `{i}` in the user replaced by the client's
//! number, a `decision` button's `allow`) and posted with
//! the cookies the server set — until the redirect to the client's redirect URI, whose
//! `code` is redeemed at `--token-path` with the PKCE verifier and a fresh assertion (200
//! with an access token and an ID token). Each flow starts with an empty cookie jar, so
//! it includes a sign-in (a password hash verification) and a consent. `flow-sso`: the
//! same with the cookie jar kept per client and consent remembered: each client signs
//! in once before the measured window, then its flows are PAR → `/authorize` → redirect
//! with the code → token, the path of an app that comes back for a new token.
//!
//! With `--also`, the clients are spread over several nodes of one cluster (client `i` on
//! node `i mod n`); `--issuer` is then the cluster's issuer, the audience of assertions.
//! The token of `introspect-hit` is issued by the first node and introspected on all.
//!
//! `ciba-poll` (THREATS §4.5 scenario 5, a CIBA poll storm): before the window the
//! clients start `--pending` backchannel requests (`/bc-authorize`, `login_hint` =
//! `--user`, never approved); in the window each request is polled at the token endpoint
//! every half of its announced `interval`, twice as often as allowed, so the answers are
//! `authorization_pending` or, mostly, `slow_down` (both 400, counted as expected; any
//! other answer is an error). The output adds the share of `slow_down`.
//!
//! The window ends after `--duration` seconds or `--requests` requests, whichever comes
//! first. Without `--rate` every client sends its next request as soon as the last one
//! is answered (closed loop: the server's maximum). With `--rate R` the clients together
//! start R requests a second on a fixed schedule, each latency counted from the request's
//! scheduled start, so a server that falls behind shows it in p99 (open loop, for latency
//! under a given load).
//!
//! Every request that authenticates the client carries a fresh ES256 assertion (unique
//! `jti`), the same work against every server. The assertions of `flow`, `flow-sso` and
//! `ciba-poll` are addressed to the issuer (`--issuer`, else `--url`), which RFC 7523
//! servers accept for every endpoint; the others to the endpoint's URL.
//!
//! The assertions are signed before the measured window (`--presign N`, by default
//! enough for 15,000 requests a second; see `presign_count`), on every core, and each
//! is used once: a real client signs on its own machine, and a driver signing in the
//! window would take the cores from the server it measures — from a server that uses
//! both cores more than from one Node process. A window that outruns the list signs
//! the rest as it goes, counted in the output (`signed_in_window`).
//!
//! Each client has its own TLS session cache, and the output counts the window's full
//! and resumed handshakes (`tls_full`, `tls_resumed`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: a benchmark tool; failures abort the run

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// `flow`: the authorization endpoint.
    authorize_path: String,
    /// `flow`: the token endpoint.
    token_path: String,
    /// `flow`: the user who signs in.
    user: String,
    password: String,
    /// Requests a second of all clients together (open loop); 0: closed loop.
    rate: f64,
    /// Stop after this many requests (0: no bound but the duration).
    requests: u64,
    /// `ciba-poll`: backchannel requests started before the window.
    pending: usize,
    /// Assertions to sign before the window (None: by the scenario, see `presign_count`).
    presign: Option<usize>,
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
        authorize_path: "/authorize".into(),
        token_path: "/token".into(),
        user: String::new(),
        password: String::new(),
        rate: 0.0,
        requests: 0,
        pending: 500,
        presign: None,
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
            "--authorize-path" => o.authorize_path = v(),
            "--token-path" => o.token_path = v(),
            "--user" => o.user = v(),
            "--password" => o.password = v(),
            "--rate" => o.rate = v().parse().expect("requests a second"),
            "--requests" => o.requests = v().parse().expect("count"),
            "--pending" => o.pending = v().parse().expect("count"),
            "--presign" => o.presign = Some(v().parse().expect("count")),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

struct Ctx {
    o: Opts,
    /// One TLS client per concurrent client, each with its own session cache: client
    /// `i` resumes with the tickets of its own earlier connections, as separate clients
    /// do (one shared cache had clients take each other's tickets, and a server that
    /// sends fewer of them paid more full handshakes).
    tls: Vec<tokio_rustls::TlsConnector>,
    addrs: Vec<std::net::SocketAddr>,
    host: String,
    sni: String,
    key: Option<SigningKey>,
    aud: String,
    issuer: String,
    n: AtomicU64,
    /// Requests started, against `--requests`.
    sent: AtomicU64,
    /// `ciba-poll`: `slow_down` answers.
    slow_down: AtomicU64,
    token: std::sync::OnceLock<String>,
    /// Assertions signed before the window, for `presigned_aud`; each used once.
    presigned: Vec<String>,
    presigned_aud: String,
    next_presigned: AtomicUsize,
    /// Assertions signed in the window (the list ran out, or another audience).
    signed_in_window: AtomicU64,
    /// TLS handshakes in the window: [full, resumed].
    handshakes: [AtomicU64; 2],
    /// When the window began, for all clients together (assertions signed and
    /// handshakes made before it are not counted).
    start: std::sync::OnceLock<Instant>,
}

/// One client assertion (RFC 7523 §3) of `client` for `aud`, its `jti` unique by `n`.
fn sign_assertion(key: &SigningKey, client: &str, aud: &str, n: u64) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    sign_jwt(
        key,
        None,
        serde_json::json!({"iss": client, "sub": client, "aud": aud,
            "iat": t, "exp": t + 120, "jti": format!("load-{}-{n}-{t}", std::process::id())})
        .as_object()
        .unwrap(),
    )
    .unwrap()
}

/// How many assertions a scenario signs before its window: enough for 15,000 requests
/// a second (400 for `flow`, whose sign-ins are slow, 2,000 for `ciba-poll`, whose
/// polls are paced by the server), or twice `--rate` (a flow takes two), none where the
/// client authenticates by its certificate; at most `--requests` (plus the `ciba-poll`
/// starts), and at most [`PRESIGN_MAX`]. None for a window over a minute: an assertion
/// is valid for two minutes from its signature.
fn presign_count(o: &Opts) -> usize {
    if let Some(n) = o.presign {
        return n;
    }
    if o.duration > 60 {
        return 0;
    }
    let mut per_second = match o.scenario.as_str() {
        _ if o.key.is_none() => 0,
        "token-mtls" | "get" => 0,
        "introspect-hit" | "introspect-miss" if o.mtls.is_some() => 0,
        "flow" => 400,
        // Polls are paced by the server's interval: a few hundred a second.
        "ciba-poll" => 2_000,
        _ => 15_000,
    };
    if o.rate > 0.0 {
        per_second = per_second.min((o.rate * 2.0).ceil() as usize);
    }
    let n = (per_second * o.duration as usize).min(PRESIGN_MAX);
    match o.requests {
        0 => n,
        r => n.min(r as usize * 2 + o.pending),
    }
}

/// The most assertions signed before a window (~120 MB, a few seconds of both cores).
const PRESIGN_MAX: usize = 300_000;

/// `count` assertions for `aud`, signed on every core; `jti`s 0..count.
fn presign(key: &SigningKey, client: &str, aud: &str, count: usize) -> Vec<String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = count.div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = (0..count)
            .step_by(chunk)
            .map(|from| {
                let to = (from + chunk).min(count);
                s.spawn(move || {
                    (from..to)
                        .map(|n| sign_assertion(key, client, aud, n as u64))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts.into_iter().flat_map(|p| p.join().unwrap()).collect()
    })
}

impl Ctx {
    fn assertion_to(&self, aud: &str) -> String {
        if aud == self.presigned_aud {
            let i = self.next_presigned.fetch_add(1, Ordering::Relaxed);
            if let Some(a) = self.presigned.get(i) {
                return a.clone();
            }
        }
        if self.start.get().is_some() {
            self.signed_in_window.fetch_add(1, Ordering::Relaxed);
        }
        let key = self.key.as_ref().expect("--key");
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        sign_assertion(key, &self.o.client, aud, n)
    }

    fn form(&self, fields: &[(&str, &str)]) -> Vec<u8> {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish()
            .into_bytes()
    }

    /// `fields` and the client's authentication: a fresh assertion addressed to `aud`
    /// (private_key_jwt, RFC 7523 §2.2).
    fn signed_form(&self, aud: &str, fields: &[(&str, &str)]) -> Vec<u8> {
        let a = self.assertion_to(aud);
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .append_pair(
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            )
            .append_pair("client_assertion", &a)
            .finish()
            .into_bytes()
    }

    fn token_body(&self) -> Vec<u8> {
        let mut f = vec![
            ("grant_type", "client_credentials"),
            ("scope", "system/Observation.rs"),
        ];
        if let Some(r) = &self.o.resource {
            f.push(("resource", r));
        }
        self.signed_form(&self.aud, &f)
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
        self.par_request(&self.aud).1
    }

    /// A pushed authorization request with its assertion addressed to `aud`: (PKCE
    /// verifier, body).
    fn par_request(&self, aud: &str) -> (String, Vec<u8>) {
        let mut v = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut v).unwrap();
        let verifier = heartgate_core::jose::b64::encode(v);
        let challenge = heartgate_core::jose::b64::encode(
            ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref(),
        );
        let state = heartgate_core::jose::b64::encode(&v[..12]);
        let body = self.signed_form(
            aud,
            &[
                ("response_type", "code"),
                ("client_id", self.o.client.as_str()),
                ("redirect_uri", REDIRECT_URI),
                ("scope", "openid"),
                ("state", state.as_str()),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ],
        );
        (verifier, body)
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
        self.signed_form(&self.aud, &[("token", token)])
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

/// The redirect URI of the `web` client of every server.
const REDIRECT_URI: &str = "https://app.example/cb";

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A connection to node `i mod n`.
async fn connect(c: &Ctx, i: usize) -> Sender {
    let tcp = tokio::net::TcpStream::connect(c.addrs[i % c.addrs.len()])
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    let tls = c.tls[i % c.tls.len()]
        .connect(ServerName::try_from(c.sni.clone()).unwrap(), tcp)
        .await
        .unwrap();
    if c.start.get().is_some() {
        let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        c.handshakes[usize::from(resumed)].fetch_add(1, Ordering::Relaxed);
    }
    let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    s
}

async fn send(c: &Ctx, s: &mut Sender, method: &str, path: &str, body: Vec<u8>) -> (u16, Bytes) {
    let (st, _, body) = exchange(c, s, method, path, &[], body).await.unwrap();
    (st, body)
}

/// One request with extra headers: (status, headers, body).
async fn exchange(
    c: &Ctx,
    s: &mut Sender,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<(u16, hyper::HeaderMap, Bytes), String> {
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", &c.host);
    if method == "POST" {
        b = b.header("content-type", "application/x-www-form-urlencoded");
    }
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    let resp = s
        .send_request(b.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("{method} {path}: {e}"))?
        .to_bytes();
    Ok((parts.status.as_u16(), parts.headers, body))
}

/// A browser's cookies for one server: name → value. Attributes (path, expiry) are not
/// tracked: both servers' cookies are host-wide or harmless elsewhere, and a cookie set
/// empty or with `Max-Age=0` is removed.
#[derive(Default)]
struct Jar(std::collections::BTreeMap<String, String>);

impl Jar {
    fn absorb(&mut self, headers: &hyper::HeaderMap) {
        for v in headers.get_all("set-cookie") {
            let Ok(v) = v.to_str() else { continue };
            let first = v.split(';').next().unwrap_or("");
            let Some((name, value)) = first.split_once('=') else {
                continue;
            };
            let lower = v.to_ascii_lowercase();
            if value.is_empty() || lower.contains("max-age=0") || lower.contains("1970") {
                self.0.remove(name.trim());
            } else {
                self.0
                    .insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
    }

    fn header(&self) -> Vec<(&'static str, String)> {
        if self.0.is_empty() {
            return Vec::new();
        }
        let v: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        vec![("cookie", v.join("; "))]
    }
}

/// The value of attribute `name` in one HTML tag, entities decoded.
fn attr(tag: &str, name: &str) -> Option<String> {
    let marker = format!(" {name}=\"");
    let start = tag.find(&marker)? + marker.len();
    let end = tag[start..].find('"')? + start;
    Some(
        tag[start..end]
            .replace("&quot;", "\"")
            .replace("&#x27;", "'")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// Fill in the page's first POST form as a user who signs in, allows, and (with
/// `remember`) asks to be remembered: (action, fields).
fn fill_form(
    html: &str,
    (user, password): (&str, &str),
    remember: bool,
) -> Result<(String, Vec<(String, String)>), String> {
    let start = html
        .find("<form")
        .ok_or_else(|| format!("a page without a form: {}", &html[..html.len().min(300)]))?;
    let end = html[start..]
        .find("</form>")
        .map_or(html.len(), |e| start + e);
    let form = &html[start..end];
    let head = &form[..form.find('>').unwrap_or(form.len())];
    let action = attr(head, "action").ok_or("a form without an action")?;
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut button: Option<(String, String)> = None;
    for (i, _) in form.match_indices('<') {
        let tag = &form[i..i + form[i..].find('>').unwrap_or(form.len() - i)];
        let Some(name) = attr(tag, "name") else {
            continue;
        };
        let kind = attr(tag, "type").unwrap_or_default();
        let value = attr(tag, "value").unwrap_or_default();
        if tag.starts_with("<button") {
            if button.is_none() || value == "allow" || value == "approve" {
                button = Some((name, value));
            }
            continue;
        }
        if !tag.starts_with("<input") {
            continue;
        }
        match (kind.as_str(), name.as_str()) {
            (_, "username") | (_, "login") => fields.push((name, user.to_owned())),
            (_, "password") => fields.push((name, password.to_owned())),
            ("checkbox", _) if remember => fields.push((name, value)),
            ("radio", _) if !fields.iter().any(|(n, _)| *n == name) => {
                fields.push((name, value));
            }
            ("hidden", _) | ("text", _) => fields.push((name, value)),
            _ => {}
        }
    }
    fields.extend(button);
    Ok((action, fields))
}

/// The path (and query) of a `Location`, which may be absolute.
fn local_path(location: &str) -> String {
    match location.strip_prefix("https://") {
        Some(rest) => rest.find('/').map_or("/".into(), |i| rest[i..].to_owned()),
        None => location.to_owned(),
    }
}

/// One authorization code flow (see the module documentation); `jar` holds the browser's
/// cookies, kept between flows by `flow-sso`. Ok: the pages shown on the way.
async fn flow(
    c: &Ctx,
    s: &mut Sender,
    jar: &mut Jar,
    remember: bool,
    user: &str,
) -> Result<u32, String> {
    let (verifier, body) = c.par_request(&c.issuer);
    let (st, _, b) = exchange(c, s, "POST", &c.o.path, &[], body).await?;
    if st != 201 {
        return Err(format!("PAR {st}: {}", String::from_utf8_lossy(&b)));
    }
    let v: serde_json::Value = serde_json::from_slice(&b).map_err(|e| e.to_string())?;
    let request_uri = v["request_uri"].as_str().ok_or("PAR without request_uri")?;
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", &c.o.client)
        .append_pair("request_uri", request_uri)
        .finish();
    let (mut method, mut path, mut body) =
        ("GET", format!("{}?{q}", c.o.authorize_path), Vec::new());
    let mut pages = 0;
    let code = loop {
        if pages > 8 {
            return Err("more than 8 pages".into());
        }
        let (st, h, b) = exchange(c, s, method, &path, &jar.header(), body).await?;
        jar.absorb(&h);
        match st {
            302 | 303 => {
                let loc = h
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .ok_or("a redirect without a location")?;
                if loc.starts_with(REDIRECT_URI) {
                    let u = url::Url::parse(loc).map_err(|e| e.to_string())?;
                    if let Some((_, e)) = u.query_pairs().find(|(k, _)| k == "error") {
                        return Err(format!("the flow ended with error={e}"));
                    }
                    break u
                        .query_pairs()
                        .find(|(k, _)| k == "code")
                        .map(|(_, v)| v.into_owned())
                        .ok_or("a redirect without a code")?;
                }
                (method, path, body) = ("GET", local_path(loc), Vec::new());
            }
            200 => {
                pages += 1;
                let (action, fields) = fill_form(
                    &String::from_utf8_lossy(&b),
                    (user, &c.o.password),
                    remember,
                )?;
                let encoded = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&fields)
                    .finish();
                (method, path, body) = ("POST", local_path(&action), encoded.into_bytes());
            }
            _ => {
                return Err(format!(
                    "{st} at {method} {path}: {}",
                    String::from_utf8_lossy(&b[..b.len().min(300)])
                ))
            }
        }
    };
    let token = c.signed_form(
        &c.issuer,
        &[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", verifier.as_str()),
        ],
    );
    let (st, _, b) = exchange(c, s, "POST", &c.o.token_path, &[], token).await?;
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
    if st != 200 || !v["access_token"].is_string() || !v["id_token"].is_string() {
        return Err(format!("token {st}: {}", String::from_utf8_lossy(&b)));
    }
    Ok(pages)
}

const CIBA_GRANT: &str = "urn:openid:params:grant-type:ciba";

/// Start one backchannel authentication request: (auth_req_id, interval).
async fn ciba_start(c: &Ctx, s: &mut Sender) -> Result<(String, u64), String> {
    let user = c.o.user.replace("{i}", "0");
    let body = c.signed_form(
        &c.issuer,
        &[
            ("scope", "openid"),
            ("login_hint", user.as_str()),
            ("binding_message", "LOAD-1"),
        ],
    );
    let (st, _, b) = exchange(c, s, "POST", &c.o.path, &[], body).await?;
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
    match (st, v["auth_req_id"].as_str()) {
        (200, Some(id)) => Ok((id.to_owned(), v["interval"].as_u64().unwrap_or(5))),
        _ => Err(format!(
            "bc-authorize {st}: {}",
            String::from_utf8_lossy(&b)
        )),
    }
}

/// Poll one request at the token endpoint: Ok(true) for `slow_down`, Ok(false) for
/// `authorization_pending`.
async fn ciba_poll(c: &Ctx, s: &mut Sender, auth_req_id: &str) -> Result<bool, String> {
    let body = c.signed_form(
        &c.issuer,
        &[("grant_type", CIBA_GRANT), ("auth_req_id", auth_req_id)],
    );
    let (st, _, b) = exchange(c, s, "POST", &c.o.token_path, &[], body).await?;
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
    match (st, v["error"].as_str()) {
        (400, Some("slow_down")) => Ok(true),
        (400, Some("authorization_pending")) => Ok(false),
        _ => Err(format!("poll {st}: {}", String::from_utf8_lossy(&b))),
    }
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
    let issuer = base.trim_end_matches('/').to_owned();
    let presigned_aud = match o.scenario.as_str() {
        "flow" | "flow-sso" | "ciba-poll" => issuer.clone(),
        _ => aud.clone(),
    };
    let presigned = match &key {
        Some(k) => presign(k, &o.client, &presigned_aud, presign_count(&o)),
        None => Vec::new(),
    };
    let ctx = Arc::new(Ctx {
        tls: (0..o.concurrency.max(1))
            .map(|_| {
                let mut cfg = cfg.clone();
                cfg.resumption = rustls::client::Resumption::in_memory_sessions(8);
                tokio_rustls::TlsConnector::from(Arc::new(cfg))
            })
            .collect(),
        addrs,
        host: format!("{host}:{}", addr.port()),
        sni: host.clone(),
        key,
        aud,
        issuer,
        n: AtomicU64::new(presigned.len() as u64),
        sent: AtomicU64::new(0),
        slow_down: AtomicU64::new(0),
        token: std::sync::OnceLock::new(),
        presigned_aud,
        next_presigned: AtomicUsize::new(0),
        signed_in_window: AtomicU64::new(0),
        start: std::sync::OnceLock::new(),
        handshakes: Default::default(),
        presigned,
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
    // Every client connects (and for `flow-sso` signs in once) before the measured
    // window, which starts for all of them together.
    let barrier = Arc::new(tokio::sync::Barrier::new(ctx.o.concurrency));
    let window = Duration::from_secs(ctx.o.duration);
    let mut tasks = Vec::new();
    for i in 0..ctx.o.concurrency {
        let c = ctx.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(4096);
            let (mut ok, mut bad, mut pages) = (0u64, 0u64, 0u64);
            let mut s = connect(&c, i).await;
            let mut jar = Jar::default();
            // `{i}` in --user: one user per client (a server limits concurrent sign-ins
            // of one username).
            let user = c.o.user.replace("{i}", &i.to_string());
            let flows = c.o.scenario.starts_with("flow");
            let sso = c.o.scenario == "flow-sso";
            if sso {
                if let Err(e) = flow(&c, &mut s, &mut jar, true, &user).await {
                    panic!("the sign-in before the window failed: {e}");
                }
            }
            // ciba-poll: this client's share of the pending requests, each with the
            // time of its next poll (half its interval apart).
            let mut polls = std::collections::VecDeque::new();
            if c.o.scenario == "ciba-poll" {
                let share =
                    c.o.pending / c.o.concurrency + usize::from(i < c.o.pending % c.o.concurrency);
                for _ in 0..share {
                    match ciba_start(&c, &mut s).await {
                        Ok((id, interval)) => {
                            polls.push_back((id, Duration::from_millis(interval * 500)))
                        }
                        Err(e) => panic!("starting the requests failed: {e}"),
                    }
                }
            }
            barrier.wait().await;
            let begin = *c.start.get_or_init(Instant::now);
            let deadline = begin + window;
            // Open loop: client i's k-th request is due at begin + (i + k·n) / rate.
            let step = (c.o.rate > 0.0)
                .then(|| Duration::from_secs_f64(c.o.concurrency as f64 / c.o.rate));
            let mut due = begin
                + step.map_or(Duration::ZERO, |d| {
                    d.mul_f64(i as f64 / c.o.concurrency as f64)
                });
            // ciba-poll: request k of this client is first polled k/share of a half
            // interval into the window, then every half interval.
            let share = polls.len().max(1) as f64;
            let mut poll_due: std::collections::VecDeque<(String, Duration, Instant)> = polls
                .into_iter()
                .enumerate()
                .map(|(k, (id, half))| (id, half, begin + half.mul_f64(k as f64 / share)))
                .collect();
            while Instant::now() < deadline {
                if c.o.requests > 0 && c.sent.fetch_add(1, Ordering::Relaxed) >= c.o.requests {
                    break;
                }
                if c.o.new_connections {
                    s = connect(&c, i).await;
                }
                let t = match step {
                    Some(d) => {
                        tokio::time::sleep_until(due.into()).await;
                        let t = due;
                        due += d;
                        t
                    }
                    None => Instant::now(),
                };
                let outcome = if let Some((id, half, at)) = poll_due.pop_front() {
                    tokio::time::sleep_until(at.into()).await;
                    if Instant::now() >= deadline {
                        break;
                    }
                    let t = Instant::now();
                    let r = ciba_poll(&c, &mut s, &id).await;
                    lat.push(t.elapsed());
                    poll_due.push_back((id, half, at + half));
                    match r {
                        Ok(slow) => {
                            if slow {
                                c.slow_down.fetch_add(1, Ordering::Relaxed);
                            }
                            ok += 1;
                        }
                        Err(e) => {
                            bad += 1;
                            if bad == 1 {
                                eprintln!("unexpected answer {e}");
                            }
                        }
                    }
                    continue;
                } else if flows {
                    if !sso {
                        jar = Jar::default();
                    }
                    flow(&c, &mut s, &mut jar, sso, &user)
                        .await
                        .map(|n| pages += u64::from(n))
                } else {
                    let (m, p, b) = c.next();
                    let (st, body) = send(&c, &mut s, m, &p, b).await;
                    let good = st == if c.o.scenario == "par" { 201 } else { 200 }
                        && (c.o.scenario != "introspect-hit"
                            || body.starts_with(b"{\"active\":true"))
                        && (c.o.scenario != "introspect-miss"
                            || body.as_ref() == b"{\"active\":false}");
                    if good {
                        Ok(())
                    } else {
                        Err(format!("{st}: {}", String::from_utf8_lossy(&body)))
                    }
                };
                lat.push(t.elapsed());
                match outcome {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        bad += 1;
                        if bad == 1 {
                            eprintln!("unexpected answer {e}");
                        }
                        // A failed flow may leave the connection mid-exchange.
                        if flows {
                            s = connect(&c, i).await;
                        }
                    }
                }
            }
            (lat, ok, bad, pages)
        }));
    }
    let mut all = Vec::new();
    let (mut ok, mut bad, mut pages) = (0, 0, 0);
    for t in tasks {
        let (l, o, b, p) = t.await.unwrap();
        all.extend(l);
        ok += o;
        bad += b;
        pages += p;
    }
    let secs = ctx
        .start
        .get()
        .map_or(0.0, |s| s.elapsed().as_secs_f64())
        .max(1e-9);
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{}",
        serde_json::json!({"scenario": ctx.o.scenario, "rps": (ok as f64) / secs,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "ok": ok, "errors": bad,
            "concurrency": ctx.o.concurrency, "new_connections": ctx.o.new_connections,
            "pages_per_flow": (pages as f64) / (ok.max(1) as f64),
            "slow_down_share": (ctx.slow_down.load(Ordering::Relaxed) as f64) / (ok.max(1) as f64),
            "presigned": ctx.presigned.len(),
            "signed_in_window": ctx.signed_in_window.load(Ordering::Relaxed),
            "tls_full": ctx.handshakes[0].load(Ordering::Relaxed),
            "tls_resumed": ctx.handshakes[1].load(Ordering::Relaxed)})
    );
}
