//! Outbound https: fetching clients' `jwks_uri` documents (THREATS D2, J6).
//!
//! - https only; no userinfo in the URL; no redirects (a 3xx is an error).
//! - The host is resolved once; if any address is loopback, private (RFC 1918),
//!   link-local (incl. the 169.254.169.254 metadata address), unique-local, CGNAT,
//!   multicast, unspecified, broadcast or documentation space — or an IPv4-mapped IPv6
//!   form of those — the fetch is refused, unless the host is in `allow_hosts`. The
//!   connection then goes to the checked address (no second resolution: DNS rebinding),
//!   with the host name for SNI and certificate verification against the configured
//!   trust anchors (default: the web PKI roots).
//! - One total timeout covers connect, TLS, headers and body; the body is read against a
//!   size cap as it arrives (a 100 MB answer is cut at the cap, not buffered).
//!
//! [`JwksCache`] keeps each fetched key set for [`JWKS_TTL`] and refetches on an unknown
//! `kid` at most once per [`REFETCH_INTERVAL`] per URI, so a client cannot make heartgate
//! hammer a URI. The HTTP handlers `prefetch` before calling core, whose
//! `ClientDirectory::keys` is synchronous and reads [`JwksCache`]'s cache.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use heartgate_core::jose::{JwkSet, JwkSetOptions};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::Deserialize;

/// How long a fetched key set is used.
pub const JWKS_TTL: Duration = Duration::from_secs(600);
/// Least time between two refetches of one URI for an unknown `kid`.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(60);

/// The outbound policy (`[outbound]` in the configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundPolicy {
    /// Hosts (names or IP literals) allowed even when they resolve to loopback or private
    /// addresses (on-premises partners, tests).
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// PEM CA bundles to trust; none: the web PKI roots.
    #[serde(default)]
    pub trust_anchors: Vec<PathBuf>,
    /// Total time for one fetch, milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Largest response body, bytes.
    #[serde(default = "default_max")]
    pub max_response_bytes: usize,
}

fn default_timeout() -> u64 {
    5_000
}

fn default_max() -> usize {
    256 * 1024
}

impl Default for OutboundPolicy {
    fn default() -> Self {
        OutboundPolicy {
            allow_hosts: Vec::new(),
            trust_anchors: Vec::new(),
            timeout_ms: default_timeout(),
            max_response_bytes: default_max(),
        }
    }
}

/// Why a fetch failed. Never carries the response body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// Not an https URL without userinfo.
    #[error("only https URLs without userinfo are fetched")]
    Url,
    /// The host resolves to an address that is not allowed.
    #[error("destination address not allowed")]
    Forbidden,
    /// Name resolution, connection or TLS failed.
    #[error("connection failed: {0}")]
    Connect(String),
    /// Not a 200 (redirects are not followed).
    #[error("unexpected status {0}")]
    Status(u16),
    /// The body exceeds the cap.
    #[error("response too large")]
    TooLarge,
    /// The total time ran out.
    #[error("timeout")]
    Timeout,
    /// The document is not an acceptable JWK Set.
    #[error("invalid JWK Set")]
    InvalidJwks,
    /// The policy cannot be used (a trust anchor file).
    #[error("outbound policy: {0}")]
    Policy(String),
}

/// Whether an address is one outbound calls must not reach (unless allow-listed): core's
/// list, the one CIBA notification endpoints are checked against at registration.
pub fn forbidden_address(ip: IpAddr) -> bool {
    heartgate_core::client::forbidden_ip(ip)
}

/// An https client under an [`OutboundPolicy`].
pub struct OutboundClient {
    tls: Arc<rustls::ClientConfig>,
    policy: OutboundPolicy,
}

impl std::fmt::Debug for OutboundClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundClient")
            .field("policy", &self.policy)
            .finish()
    }
}

impl OutboundClient {
    /// A client for `policy`.
    pub fn new(policy: OutboundPolicy) -> Result<Self, OutboundError> {
        let mut roots = rustls::RootCertStore::empty();
        if policy.trust_anchors.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        } else {
            for p in &policy.trust_anchors {
                let certs =
                    crate::tls::load_certs(p).map_err(|e| OutboundError::Policy(e.to_string()))?;
                for c in certs {
                    roots
                        .add(c)
                        .map_err(|e| OutboundError::Policy(e.to_string()))?;
                }
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| OutboundError::Policy(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(OutboundClient {
            tls: Arc::new(tls),
            policy,
        })
    }

    fn allowed_host(&self, host: &str) -> bool {
        self.policy
            .allow_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
    }

    /// GET `url`, under the policy; the body on a 200.
    pub async fn get(&self, url: &str) -> Result<Bytes, OutboundError> {
        let timeout = Duration::from_millis(self.policy.timeout_ms);
        let (status, body) = tokio::time::timeout(timeout, self.send(url, None))
            .await
            .map_err(|_| OutboundError::Timeout)??;
        if status != 200 {
            return Err(OutboundError::Status(status));
        }
        Ok(body)
    }

    /// POST `body` as JSON to `url` with `Authorization: Bearer bearer`, under the
    /// policy (CIBA notifications, §10.2/§10.3); the status. Redirects are not followed:
    /// a 3xx is returned as it is (THREATS B15).
    pub async fn post_json(
        &self,
        url: &str,
        bearer: &str,
        body: &str,
    ) -> Result<u16, OutboundError> {
        let timeout = Duration::from_millis(self.policy.timeout_ms);
        let post = Post { bearer, body };
        tokio::time::timeout(timeout, self.send(url, Some(post)))
            .await
            .map_err(|_| OutboundError::Timeout)?
            .map(|(status, _)| status)
    }

    /// One request under the policy: https only, the resolved address checked, trust
    /// anchors, the response body bounded. Status and body.
    async fn send(&self, url: &str, post: Option<Post<'_>>) -> Result<(u16, Bytes), OutboundError> {
        let u = url::Url::parse(url).map_err(|_| OutboundError::Url)?;
        if u.scheme() != "https" || !u.username().is_empty() || u.password().is_some() {
            return Err(OutboundError::Url);
        }
        let host = u.host_str().ok_or(OutboundError::Url)?.to_owned();
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = u.port_or_known_default().unwrap_or(443);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare.as_str(), port))
            .await
            .map_err(|e| OutboundError::Connect(e.to_string()))?
            .collect();
        if addrs.is_empty() {
            return Err(OutboundError::Connect("no address".into()));
        }
        if !self.allowed_host(&bare) && addrs.iter().any(|a| forbidden_address(a.ip())) {
            return Err(OutboundError::Forbidden);
        }
        let tcp = tokio::net::TcpStream::connect(addrs[0])
            .await
            .map_err(|e| OutboundError::Connect(e.to_string()))?;
        let name = ServerName::try_from(bare.clone())
            .map_err(|e| OutboundError::Connect(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| OutboundError::Connect(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| OutboundError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        };
        let b = hyper::Request::builder()
            .uri(path)
            .header(hyper::header::HOST, u.host_str().unwrap_or(""))
            .header(hyper::header::USER_AGENT, "heartgate");
        let req = match post {
            None => b
                .method(hyper::Method::GET)
                .header(
                    hyper::header::ACCEPT,
                    "application/jwk-set+json, application/json",
                )
                .body(Full::new(Bytes::new())),
            Some(p) => b
                .method(hyper::Method::POST)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header(hyper::header::AUTHORIZATION, format!("Bearer {}", p.bearer))
                .body(Full::new(Bytes::from(p.body.to_owned()))),
        }
        .map_err(|e| OutboundError::Connect(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| OutboundError::Connect(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), self.policy.max_response_bytes)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    OutboundError::TooLarge
                } else {
                    OutboundError::Connect(e.to_string())
                }
            })?;
        Ok((status, body.to_bytes()))
    }
}

/// The JSON body and bearer token of a POST.
struct Post<'a> {
    bearer: &'a str,
    body: &'a str,
}

/// How a CIBA notification ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A 2xx answer, at this attempt (1-based).
    Delivered(u32),
    /// 401 or 403: the client refused the bearer token; not retried (THREATS B15).
    Refused,
    /// Every attempt failed (errors, timeouts, 3xx — never followed —, other statuses).
    GaveUp,
}

/// POST a CIBA notification (CIBA Core §10.2/§10.3) under the policy, `attempts` times
/// at most, waiting `backoff`, then twice that, between attempts.
pub async fn deliver_notification(
    out: &OutboundClient,
    endpoint: &str,
    bearer: &str,
    body: &str,
    attempts: u32,
    backoff: Duration,
) -> Delivery {
    let mut delay = backoff;
    for attempt in 1..=attempts {
        match out.post_json(endpoint, bearer, body).await {
            Ok(s) if (200..300).contains(&s) => return Delivery::Delivered(attempt),
            Ok(401 | 403) => return Delivery::Refused,
            Ok(status) => tracing::info!(attempt, status, "CIBA notification not accepted"),
            Err(e) => tracing::info!(attempt, error = %e, "CIBA notification failed"),
        }
        if attempt < attempts {
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2);
        }
    }
    Delivery::GaveUp
}

struct Cached {
    keys: Arc<JwkSet>,
    fetched: Instant,
}

/// Fetched client key sets.
pub struct JwksCache {
    client: OutboundClient,
    entries: DashMap<String, Cached>,
    last_refetch: DashMap<String, Instant>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl JwksCache {
    /// A cache fetching through `client`.
    pub fn new(client: OutboundClient) -> Self {
        JwksCache {
            client,
            entries: DashMap::new(),
            last_refetch: DashMap::new(),
        }
    }

    async fn fetch(&self, uri: &str) -> Result<(), OutboundError> {
        let body = self.client.get(uri).await?;
        // Client keys are judged as at registration: RSA keys need their `alg`.
        let set = JwkSet::from_json(&body, &JwkSetOptions::default())
            .map_err(|_| OutboundError::InvalidJwks)?;
        self.entries.insert(
            uri.to_owned(),
            Cached {
                keys: Arc::new(set),
                fetched: Instant::now(),
            },
        );
        Ok(())
    }

    /// Make sure `uri`'s keys are cached and fresh, and hold `kid` when one is named: a
    /// missing `kid` triggers at most one refetch per [`REFETCH_INTERVAL`] (J6).
    pub async fn prefetch(&self, uri: &str, kid: Option<&str>) -> Result<(), OutboundError> {
        let state = self.entries.get(uri).map(|c| {
            let fresh = c.fetched.elapsed() < JWKS_TTL;
            let has_kid = kid.is_none_or(|k| c.keys.keys().iter().any(|key| key.kid() == k));
            (fresh, has_kid)
        });
        match state {
            Some((true, true)) => Ok(()),
            Some((true, false)) => {
                let allowed = match self.last_refetch.get(uri) {
                    Some(t) => t.elapsed() >= REFETCH_INTERVAL,
                    None => true,
                };
                if !allowed {
                    return Ok(());
                }
                self.last_refetch.insert(uri.to_owned(), Instant::now());
                self.fetch(uri).await
            }
            _ => self.fetch(uri).await,
        }
    }
}

impl crate::app::RemoteKeys for JwksCache {
    fn cached(&self, uri: &str) -> Option<Arc<JwkSet>> {
        self.entries.get(uri).map(|c| c.keys.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn d2_private_loopback_link_local_and_metadata_addresses_are_forbidden() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "2001:db8::1",
            "64:ff9b::a00:1",
            // Found or added with the dcr_metadata fuzz target (IANA special-purpose).
            "fec0::1",
            "100::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "3fff::1",
            "5f00::1",
        ] {
            assert!(forbidden_address(a.parse().unwrap()), "{a}");
        }
        for a in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!forbidden_address(a.parse().unwrap()), "{a}");
        }
    }

    #[tokio::test]
    async fn only_https_without_userinfo_is_fetched() {
        let c = OutboundClient::new(OutboundPolicy::default()).unwrap();
        for u in [
            "http://example.com/jwks",
            "ftp://example.com/jwks",
            "https://user:pw@example.com/jwks",
            "not a url",
        ] {
            assert_eq!(c.get(u).await.unwrap_err(), OutboundError::Url, "{u}");
        }
    }

    #[tokio::test]
    async fn loopback_is_refused_before_connecting_unless_allowed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let c = OutboundClient::new(OutboundPolicy::default()).unwrap();
        let url = format!("https://127.0.0.1:{port}/jwks");
        assert_eq!(c.get(&url).await.unwrap_err(), OutboundError::Forbidden);
        // Nothing connected.
        let none = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(none.is_err(), "no connection was made");
        let localhost = format!("https://localhost:{port}/jwks");
        assert_eq!(
            c.get(&localhost).await.unwrap_err(),
            OutboundError::Forbidden
        );
    }

    /// An https receiver on 127.0.0.1 answering the statuses of `script` in turn (the
    /// last one after that), recording each request's Authorization header and body.
    /// Returns its port and the PEM of the CA that issued its certificate.
    async fn receiver(
        script: Vec<(u16, Option<&'static str>)>,
        seen: Arc<parking_lot::Mutex<Vec<(String, String)>>>,
    ) -> (u16, tempfile::TempDir) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, &ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let script = Arc::new(script);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, seen, script) = (acceptor.clone(), seen.clone(), script.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (seen, script) = (seen.clone(), script.clone());
                            async move {
                                let auth = req
                                    .headers()
                                    .get(hyper::header::AUTHORIZATION)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_owned();
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let n = {
                                    let mut s = seen.lock();
                                    s.push((auth, String::from_utf8_lossy(&body).into_owned()));
                                    s.len()
                                };
                                let (status, location) = script[(n - 1).min(script.len() - 1)];
                                let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                                *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                                if let Some(l) = location {
                                    resp.headers_mut()
                                        .insert(hyper::header::LOCATION, l.parse().unwrap());
                                }
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        (port, dir)
    }

    fn client_for(dir: &tempfile::TempDir) -> OutboundClient {
        OutboundClient::new(OutboundPolicy {
            allow_hosts: vec!["127.0.0.1".into()],
            trust_anchors: vec![dir.path().join("ca.pem")],
            timeout_ms: 2_000,
            max_response_bytes: 4096,
        })
        .unwrap()
    }

    async fn run(script: Vec<(u16, Option<&'static str>)>) -> (Delivery, Vec<(String, String)>) {
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let (port, dir) = receiver(script, seen.clone()).await;
        let out = client_for(&dir);
        let d = deliver_notification(
            &out,
            &format!("https://127.0.0.1:{port}/cb"),
            "notif-token-1",
            r#"{"auth_req_id":"abc"}"#,
            4,
            Duration::from_millis(10),
        )
        .await;
        let s = seen.lock().clone();
        (d, s)
    }

    #[tokio::test]
    async fn ciba_notification_is_posted_with_the_bearer_and_retried_until_accepted() {
        let (d, seen) = run(vec![(503, None), (500, None), (204, None)]).await;
        assert_eq!(d, Delivery::Delivered(3));
        assert_eq!(seen.len(), 3);
        for (auth, body) in &seen {
            assert_eq!(auth, "Bearer notif-token-1", "CIBA §10.2");
            assert_eq!(body, r#"{"auth_req_id":"abc"}"#);
        }
    }

    #[tokio::test]
    async fn b15_a_refusing_client_is_not_retried_and_redirects_are_not_followed() {
        let (d, seen) = run(vec![(401, None)]).await;
        assert_eq!((d, seen.len()), (Delivery::Refused, 1));
        let (d, seen) = run(vec![(403, None)]).await;
        assert_eq!((d, seen.len()), (Delivery::Refused, 1));
        // A redirect is a failure, retried to the same endpoint, never followed.
        let (d, seen) = run(vec![(302, Some("https://169.254.169.254/"))]).await;
        assert_eq!((d, seen.len()), (Delivery::GaveUp, 4));
    }

    #[tokio::test]
    async fn ciba_notification_to_a_private_address_is_never_sent() {
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let (port, dir) = receiver(vec![(204, None)], seen.clone()).await;
        let out = OutboundClient::new(OutboundPolicy {
            trust_anchors: vec![dir.path().join("ca.pem")],
            ..OutboundPolicy::default()
        })
        .unwrap();
        let d = deliver_notification(
            &out,
            &format!("https://127.0.0.1:{port}/cb"),
            "t",
            "{}",
            2,
            Duration::from_millis(10),
        )
        .await;
        assert_eq!(d, Delivery::GaveUp);
        assert!(seen.lock().is_empty(), "B14: checked at send time");
    }
}
