//! `self_signed_tls_client_auth` (RFC 8705 §2.2): match the presented certificate's public
//! key, or the certificate itself, against the client's registered JWKS.
//!
//! No chain validation happens here or anywhere for this method: the TLS handshake proves
//! possession of the private key, and the registration says which key is the client's.

use subtle::{Choice, ConstantTimeEq};
use x509_parser::asn1_rs::Oid;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::public_key::PublicKey;

use super::client_auth::{ClientCertMatch, MatchedBy};
use super::thumbprint::{parse_certificate, thumbprint, X5tS256};
use super::MtlsError;
use x509_parser::certificate::X509Certificate;

/// A public key as it can appear both in a certificate and in a registered JWK.
///
/// Comparison is canonical: RSA `n` and `e` are compared without leading zero bytes, so a
/// JWK converted by another module compares equal to the certificate's key however it was
/// padded. Prefer the checked constructors ([`CertPublicKey::rsa`],
/// [`CertPublicKey::ec_p256`], [`CertPublicKey::ed25519`]).
#[derive(Debug, Clone)]
pub enum CertPublicKey {
    /// A P-256 point (JWK `kty: EC`, `crv: P-256`).
    EcP256 {
        /// 65-byte uncompressed SEC1 point: `04 || x || y`.
        point: Vec<u8>,
    },
    /// A P-384 point (JWK `kty: EC`, `crv: P-384`, registered for ES384). Only a
    /// registered JWK converts to this: [`certificate_public_key`] does not read P-384
    /// certificates (RFC 8705 §2.2 matching stays P-256, RSA and Ed25519), so such a key
    /// never matches a presented certificate's key.
    EcP384 {
        /// 97-byte uncompressed SEC1 point: `04 || x || y`.
        point: Vec<u8>,
    },
    /// An RSA key (JWK `kty: RSA`).
    Rsa {
        /// Modulus, big-endian, leading zero bytes stripped.
        n: Vec<u8>,
        /// Public exponent, big-endian, leading zero bytes stripped.
        e: Vec<u8>,
    },
    /// An Ed25519 key (JWK `kty: OKP`, `crv: Ed25519`, RFC 8037).
    Ed25519([u8; 32]),
}

impl CertPublicKey {
    /// A P-256 key from the JWK `x` and `y` coordinates (RFC 7518 §6.2.1.2: exactly 32
    /// bytes each).
    pub fn ec_p256(x: &[u8], y: &[u8]) -> Result<Self, MtlsError> {
        if x.len() != 32 || y.len() != 32 {
            return Err(MtlsError::InvalidRegisteredValue);
        }
        let mut point = Vec::with_capacity(65);
        point.push(0x04);
        point.extend_from_slice(x);
        point.extend_from_slice(y);
        Ok(CertPublicKey::EcP256 { point })
    }

    /// An RSA key from big-endian `n` and `e` (leading zeros are stripped). Zero is refused.
    pub fn rsa(n: &[u8], e: &[u8]) -> Result<Self, MtlsError> {
        let (n, e) = (strip_leading_zeros(n), strip_leading_zeros(e));
        if n.is_empty() || e.is_empty() {
            return Err(MtlsError::InvalidRegisteredValue);
        }
        Ok(CertPublicKey::Rsa {
            n: n.to_vec(),
            e: e.to_vec(),
        })
    }

    /// An Ed25519 key from the JWK `x` (RFC 8037 §2: exactly 32 bytes).
    pub fn ed25519(x: &[u8]) -> Result<Self, MtlsError> {
        <[u8; 32]>::try_from(x)
            .map(CertPublicKey::Ed25519)
            .map_err(|_| MtlsError::InvalidRegisteredValue)
    }
}

impl PartialEq for CertPublicKey {
    fn eq(&self, other: &Self) -> bool {
        // Public keys are not secret; `==` on bytes is fine here.
        match (self, other) {
            (CertPublicKey::EcP256 { point: a }, CertPublicKey::EcP256 { point: b }) => a == b,
            (CertPublicKey::EcP384 { point: a }, CertPublicKey::EcP384 { point: b }) => a == b,
            (CertPublicKey::Rsa { n: n1, e: e1 }, CertPublicKey::Rsa { n: n2, e: e2 }) => {
                strip_leading_zeros(n1) == strip_leading_zeros(n2)
                    && strip_leading_zeros(e1) == strip_leading_zeros(e2)
            }
            (CertPublicKey::Ed25519(a), CertPublicKey::Ed25519(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for CertPublicKey {}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b.get(first..).unwrap_or_default()
}

/// The public key of a DER certificate: P-256, RSA or Ed25519 (RFC 8705 §2.2).
///
/// Other key types, other curves and compressed points give
/// [`MtlsError::UnsupportedKeyType`]; a malformed key gives [`MtlsError::BadCertificate`].
pub fn certificate_public_key(cert_der: &[u8]) -> Result<CertPublicKey, MtlsError> {
    public_key_of(&parse_certificate(cert_der)?)
}

/// [`certificate_public_key`] of a parsed certificate.
fn public_key_of(cert: &X509Certificate<'_>) -> Result<CertPublicKey, MtlsError> {
    let spki = cert.public_key();
    if spki.subject_public_key.unused_bits != 0 {
        return Err(MtlsError::BadCertificate);
    }
    let alg = &spki.algorithm.algorithm;
    let key_bytes: &[u8] = &spki.subject_public_key.data;

    if *alg == OID_PKCS1_RSAENCRYPTION {
        let PublicKey::RSA(rsa) = spki.parsed().map_err(|_| MtlsError::BadCertificate)? else {
            return Err(MtlsError::BadCertificate);
        };
        // DER INTEGERs: a set top bit means negative, never a valid modulus or exponent.
        let negative = |b: &[u8]| b.first().is_some_and(|&x| x & 0x80 != 0);
        if negative(rsa.modulus) || negative(rsa.exponent) {
            return Err(MtlsError::BadCertificate);
        }
        return CertPublicKey::rsa(rsa.modulus, rsa.exponent)
            .map_err(|_| MtlsError::BadCertificate);
    }

    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        // RFC 5480 §2.1.1: parameters are the namedCurve OID.
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| Oid::try_from(p).ok())
            .ok_or(MtlsError::BadCertificate)?;
        if curve != OID_EC_P256 {
            return Err(MtlsError::UnsupportedKeyType);
        }
        return match key_bytes {
            [0x04, ..] if key_bytes.len() == 65 => Ok(CertPublicKey::EcP256 {
                point: key_bytes.to_vec(),
            }),
            // Compressed points are legal SEC1 but unused in practice and absent from JWK.
            [0x02 | 0x03, ..] if key_bytes.len() == 33 => Err(MtlsError::UnsupportedKeyType),
            _ => Err(MtlsError::BadCertificate),
        };
    }

    if *alg == OID_SIG_ED25519 {
        // RFC 8410 §3: parameters MUST be absent.
        if spki.algorithm.parameters.is_some() {
            return Err(MtlsError::BadCertificate);
        }
        return <[u8; 32]>::try_from(key_bytes)
            .map(CertPublicKey::Ed25519)
            .map_err(|_| MtlsError::BadCertificate);
    }

    Err(MtlsError::UnsupportedKeyType)
}

/// `self_signed_tls_client_auth` by public key (RFC 8705 §2.2, C16): the certificate's key
/// must equal one of the keys from the client's registered JWKS.
pub fn match_self_signed(
    cert_der: &[u8],
    registered: &[CertPublicKey],
) -> Result<ClientCertMatch, MtlsError> {
    match_self_signed_facts(&CertificateFacts::of(cert_der)?, registered)
}

fn match_self_signed_facts(
    facts: &CertificateFacts,
    registered: &[CertPublicKey],
) -> Result<ClientCertMatch, MtlsError> {
    let key = facts.public_key.as_ref().map_err(Clone::clone)?;
    if registered.contains(key) {
        Ok(ClientCertMatch::new(
            facts.thumbprint,
            MatchedBy::SelfSignedPublicKey,
        ))
    } else {
        Err(MtlsError::PublicKeyMismatch)
    }
}

/// `self_signed_tls_client_auth` by certificate (RFC 8705 §2.2, C16): the certificate must be
/// byte-for-byte one of the registered `x5c` certificates (DER), compared by SHA-256
/// thumbprint in constant time over the whole list.
pub fn match_self_signed_x5c<T: AsRef<[u8]>>(
    cert_der: &[u8],
    registered_cert_ders: &[T],
) -> Result<ClientCertMatch, MtlsError> {
    match_x5c(
        thumbprint(cert_der)?,
        registered_cert_ders
            .iter()
            .map(|r| X5tS256::digest_of(r.as_ref())),
    )
}

/// Whether `presented` is one of the `registered` certificate thumbprints, compared in
/// constant time over the whole list.
fn match_x5c(
    presented: X5tS256,
    registered: impl Iterator<Item = X5tS256>,
) -> Result<ClientCertMatch, MtlsError> {
    let found = registered.fold(Choice::from(0), |acc, r| acc | r.ct_eq(&presented));
    if bool::from(found) {
        Ok(ClientCertMatch::new(
            presented,
            MatchedBy::SelfSignedCertificate,
        ))
    } else {
        Err(MtlsError::CertificateMismatch)
    }
}

/// `self_signed_tls_client_auth` against a client's registered JWK Set (RFC 8705 §2.2):
/// the presented certificate must be one of the set's `x5c` leaf certificates, or carry
/// the public key of one of its keys.
pub fn match_self_signed_jwks(
    cert_der: &[u8],
    jwks: &crate::jose::JwkSet,
) -> Result<ClientCertMatch, MtlsError> {
    match_self_signed_jwks_facts(&CertificateFacts::of(cert_der)?, jwks)
}

/// [`match_self_signed_jwks`] with the certificate's [`CertificateFacts`].
pub(crate) fn match_self_signed_jwks_facts(
    facts: &CertificateFacts,
    jwks: &crate::jose::JwkSet,
) -> Result<ClientCertMatch, MtlsError> {
    // The registered leaves' digests were taken when the set was read.
    let leaves = (0..jwks.keys().len())
        .filter_map(|i| jwks.leaf_certificate_sha256(i))
        .map(|d| X5tS256(*d));
    if let Ok(m) = match_x5c(facts.thumbprint, leaves) {
        return Ok(m);
    }
    let keys: Vec<CertPublicKey> = jwks.keys().iter().map(CertPublicKey::from).collect();
    match_self_signed_facts(facts, &keys)
}

/// What client authentication and token binding need of a client certificate — its
/// `x5t#S256` (RFC 8705 §3.1) and its public key (§2.2) — read once, so that a server
/// can keep them for a TLS connection instead of parsing the certificate per request.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateFacts {
    thumbprint: X5tS256,
    public_key: Result<CertPublicKey, MtlsError>,
    /// The certificate itself, so that [`CertificateFacts::describe`] is a comparison of
    /// bytes, not a digest per request.
    der: Box<[u8]>,
}

/// The thumbprint and the key only: the certificate's subject may name a person.
impl std::fmt::Debug for CertificateFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateFacts")
            .field("thumbprint", &self.thumbprint)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl CertificateFacts {
    /// The facts of a DER certificate, which must parse as exactly one certificate (M5).
    /// A key of an unsupported type is kept as its error: the certificate can still be
    /// matched by `x5c` or bind a token.
    pub fn of(cert_der: &[u8]) -> Result<Self, MtlsError> {
        let cert = parse_certificate(cert_der)?;
        Ok(CertificateFacts {
            thumbprint: X5tS256::digest_of(cert_der),
            public_key: public_key_of(&cert),
            der: cert_der.into(),
        })
    }

    /// `x5t#S256` of the certificate.
    pub fn thumbprint(&self) -> X5tS256 {
        self.thumbprint
    }

    /// Whether these are the facts of `cert_der`: the very certificate they were read
    /// from, byte for byte (a certificate is public: no constant-time comparison needed).
    pub fn describe(&self, cert_der: &[u8]) -> bool {
        *self.der == *cert_der
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "test setup failures should panic")]
mod tests {
    use super::*;
    use crate::mtls::test_support::{bare_params, p256_cert, self_signed, self_signed_with};
    use rcgen::KeyPair;

    fn key_of(der: &[u8]) -> CertPublicKey {
        certificate_public_key(der).expect("key")
    }

    /// Facts kept for a connection never print the certificate: a clinician's client
    /// certificate names the clinician (STYLE: no personal data in logs).
    #[test]
    fn certificate_facts_debug_shows_no_certificate_content() {
        let cert = crate::mtls::test_support::cert_with_subject(|dn| {
            dn.push(rcgen::DnType::CommonName, "Dr Alice Example");
        });
        let facts = CertificateFacts::of(&cert.der).expect("facts");
        assert!(facts.describe(&cert.der));
        let printed = format!("{facts:?}");
        assert!(!printed.contains("Alice"), "{printed}");
        assert!(printed.len() < 400, "{printed}");
    }

    #[test]
    fn p256_key_is_read_as_uncompressed_point() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = self_signed_with(&bare_params(), &key);
        let CertPublicKey::EcP256 { point } = key_of(&cert.der) else {
            panic!("expected P-256");
        };
        assert_eq!(point.len(), 65);
        assert_eq!(point.as_slice(), key.public_key_raw());
    }

    #[test]
    fn ed25519_key_is_read_as_32_bytes() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        let cert = self_signed_with(&bare_params(), &key);
        assert_eq!(
            key_of(&cert.der),
            CertPublicKey::ed25519(key.public_key_raw()).expect("ed25519")
        );
    }

    #[test]
    fn p384_key_is_unsupported() {
        let cert = self_signed(&bare_params(), &rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(
            certificate_public_key(&cert.der),
            Err(MtlsError::UnsupportedKeyType)
        );
    }

    #[test]
    fn certificate_public_key_rejects_pem_text() {
        let cert = p256_cert("a.example");
        assert_eq!(
            certificate_public_key(cert.pem.as_bytes()),
            Err(MtlsError::BadCertificate)
        );
    }

    #[test]
    fn c16_self_signed_with_registered_key_matches() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = self_signed_with(&bare_params(), &key);
        let point = key.public_key_raw();
        let registered = CertPublicKey::ec_p256(&point[1..33], &point[33..]).expect("jwk");
        let other = key_of(&p256_cert("x").der);
        let m = match_self_signed(&cert.der, &[other, registered]).expect("match");
        assert_eq!(m.matched_by(), MatchedBy::SelfSignedPublicKey);
        assert_eq!(Ok(m.thumbprint()), thumbprint(&cert.der));
    }

    #[test]
    fn c16_self_signed_with_unregistered_key_is_rejected() {
        let cert = p256_cert("a.example");
        let registered = vec![key_of(&p256_cert("a.example").der)];
        assert_eq!(
            match_self_signed(&cert.der, &registered),
            Err(MtlsError::PublicKeyMismatch)
        );
    }

    #[test]
    fn c16_self_signed_with_no_registered_keys_is_rejected() {
        let cert = p256_cert("a.example");
        assert_eq!(
            match_self_signed(&cert.der, &[]),
            Err(MtlsError::PublicKeyMismatch)
        );
    }

    #[test]
    fn c16_same_bytes_of_another_key_type_do_not_match() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        let cert = self_signed_with(&bare_params(), &key);
        // An RSA "key" with the Ed25519 bytes as modulus is a different key.
        let confused = CertPublicKey::rsa(key.public_key_raw(), &[1, 0, 1]).expect("rsa");
        assert_eq!(
            match_self_signed(&cert.der, &[confused]),
            Err(MtlsError::PublicKeyMismatch)
        );
    }

    #[test]
    fn self_signed_with_unsupported_key_is_rejected() {
        let cert = self_signed(&bare_params(), &rcgen::PKCS_ECDSA_P384_SHA384);
        let registered = vec![key_of(&p256_cert("a").der)];
        assert_eq!(
            match_self_signed(&cert.der, &registered),
            Err(MtlsError::UnsupportedKeyType)
        );
    }

    #[test]
    fn rsa_comparison_ignores_leading_zeros() {
        let a = CertPublicKey::Rsa {
            n: vec![0, 0, 0xc1, 0x02],
            e: vec![0, 1, 0, 1],
        };
        let b = CertPublicKey::rsa(&[0xc1, 0x02], &[1, 0, 1]).expect("rsa");
        assert_eq!(a, b);
        assert_ne!(
            a,
            CertPublicKey::rsa(&[0xc1, 0x03], &[1, 0, 1]).expect("rsa")
        );
        assert_ne!(a, CertPublicKey::rsa(&[0xc1, 0x02], &[3]).expect("rsa"));
    }

    #[test]
    fn rsa_constructor_rejects_zero() {
        assert_eq!(
            CertPublicKey::rsa(&[0, 0], &[1, 0, 1]),
            Err(MtlsError::InvalidRegisteredValue)
        );
        assert_eq!(
            CertPublicKey::rsa(&[1], &[]),
            Err(MtlsError::InvalidRegisteredValue)
        );
    }

    #[test]
    fn ec_constructor_requires_32_byte_coordinates() {
        assert_eq!(
            CertPublicKey::ec_p256(&[1; 31], &[2; 32]),
            Err(MtlsError::InvalidRegisteredValue)
        );
        assert_eq!(
            CertPublicKey::ec_p256(&[1; 32], &[2; 33]),
            Err(MtlsError::InvalidRegisteredValue)
        );
    }

    #[test]
    fn ed25519_constructor_requires_32_bytes() {
        assert_eq!(
            CertPublicKey::ed25519(&[1; 33]),
            Err(MtlsError::InvalidRegisteredValue)
        );
    }

    #[test]
    fn c16_x5c_exact_certificate_matches() {
        let cert = p256_cert("a.example");
        let other = p256_cert("b.example");
        let m = match_self_signed_x5c(&cert.der, &[other.der, cert.der.clone()]).expect("match");
        assert_eq!(m.matched_by(), MatchedBy::SelfSignedCertificate);
    }

    #[test]
    fn c16_x5c_same_key_different_certificate_is_rejected() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = bare_params();
        params.serial_number = Some(vec![1].into());
        let first = self_signed_with(&params, &key);
        params.serial_number = Some(vec![2].into());
        let second = self_signed_with(&params, &key);
        assert_eq!(
            match_self_signed_x5c(&second.der, &[first.der]),
            Err(MtlsError::CertificateMismatch)
        );
    }

    #[test]
    fn c16_x5c_with_no_registered_certificates_is_rejected() {
        let cert = p256_cert("a.example");
        let none: [Vec<u8>; 0] = [];
        assert_eq!(
            match_self_signed_x5c(&cert.der, &none),
            Err(MtlsError::CertificateMismatch)
        );
    }

    #[test]
    fn x5c_rejects_unparseable_presented_certificate() {
        let cert = p256_cert("a.example");
        let junk = cert.pem.as_bytes().to_vec();
        assert_eq!(
            match_self_signed_x5c(&junk, std::slice::from_ref(&junk)),
            Err(MtlsError::BadCertificate)
        );
    }
}
