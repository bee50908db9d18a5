//! TLS: one rustls listener where client certificates are optional.
//!
//! A client that presents no certificate is served (public clients, browsers,
//! `private_key_jwt` without binding). A client that presents one must prove possession
//! of its key in the handshake (the CertificateVerify signature is checked here), but
//! the certificate itself is not judged at the TLS layer: self-signed certificates are
//! legitimate (RFC 8705 §2.2) and binding needs only the thumbprint. Whether the chain
//! leads to a configured client CA — what `tls_client_auth` (§2.1) needs — is checked by
//! [`ClientCas::verify`] when a request asks for it, with the same webpki verifier rustls
//! would have used.
//!
//! Protocol versions: TLS 1.3 and TLS 1.2, the latter only with the ECDHE AEAD suites of
//! BCP 195 (RFC 9325 §4.2) that ring provides.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime as TlsTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{0}: {1}")]
    Pem(String, String),
    /// rustls refused the configuration.
    #[error("tls: {0}")]
    Rustls(String),
}

/// The crypto provider: ring, with the BCP 195 cipher suites only.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

/// Read every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let name = path.display().to_string();
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Pem(name.clone(), e.to_string()))?
        .collect();
    let certs = certs.map_err(|e| TlsError::Pem(name.clone(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(name, "no certificate".into()));
    }
    Ok(certs)
}

/// Read a private key from a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| TlsError::Pem(path.display().to_string(), e.to_string()))
}

/// Accepts any client certificate whose key signed the handshake; judging the
/// certificate is the application's job (module docs).
#[derive(Debug)]
struct AnyClientCert {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: TlsTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The server's TLS configuration: certificate chain, key, optional client certificates,
/// ALPN h2 and http/1.1.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(Arc::new(AnyClientCert { provider }))
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Our order of [`provider`]'s suites, not the client's: AES-128-GCM with SHA-256 first
    // (BCP 195 allows each suite listed; SHA-256 runs on the CPU's SHA extensions where
    // SHA-384 does not, and it was 6 % of the server's CPU on new connections when the
    // client's AES-256/SHA-384 preference decided).
    cfg.ignore_client_order = true;
    // Session resumption (RFC 8446 §2.2, PSK with (EC)DHE: still forward secret) spares a
    // returning client the certificate signature and its chain check. Tickets are
    // encrypted by the server (rustls' ticketer: ChaCha20-Poly1305 under random keys
    // rotated every 6 hours, tickets valid 12 hours) instead of kept in its memory: the
    // default cache of 256 sessions (two tickets per connection) was full after ~128
    // connections, a device reconnecting after that paid a full handshake again, and a
    // larger cache costs a linear search of its eviction queue per resumption. No early
    // data (0-RTT) is accepted, so a ticket used twice buys nothing but a handshake.
    cfg.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(Arc::new(cfg))
}

/// The CAs whose client certificates `tls_client_auth` accepts.
#[derive(Clone)]
pub struct ClientCas {
    verifier: Option<Arc<dyn ClientCertVerifier>>,
}

impl std::fmt::Debug for ClientCas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCas")
            .field("configured", &self.verifier.is_some())
            .finish()
    }
}

impl ClientCas {
    /// No client CA: `tls_client_auth` never succeeds.
    pub fn none() -> Self {
        ClientCas { verifier: None }
    }

    /// From PEM bundles.
    pub fn load(paths: &[impl AsRef<Path>]) -> Result<Self, TlsError> {
        if paths.is_empty() {
            return Ok(Self::none());
        }
        let mut roots = RootCertStore::empty();
        for p in paths {
            for c in load_certs(p.as_ref())? {
                roots
                    .add(c)
                    .map_err(|e| TlsError::Pem(p.as_ref().display().to_string(), e.to_string()))?;
            }
        }
        let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        Ok(ClientCas { verifier: Some(v) })
    }

    /// Whether `chain` (leaf first) leads to a configured client CA at `now`.
    pub fn verify(&self, chain: &[CertificateDer<'_>], now_secs: u64) -> bool {
        let (Some(v), Some((leaf, rest))) = (&self.verifier, chain.split_first()) else {
            return false;
        };
        v.verify_client_cert(
            leaf,
            rest,
            TlsTime::since_unix_epoch(std::time::Duration::from_secs(now_secs)),
        )
        .is_ok()
    }
}
