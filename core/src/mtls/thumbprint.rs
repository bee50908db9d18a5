//! `x5t#S256` thumbprints and the `cnf` confirmation claim (RFC 8705 §3.1, RFC 7800 §3.1).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use x509_parser::certificate::X509Certificate;
use x509_parser::pem::Pem;

use super::MtlsError;

/// Length of a base64url (no padding) encoding of 32 bytes.
const X5T_S256_B64_LEN: usize = 43;

/// `x5t#S256`: SHA-256 of the DER leaf certificate (RFC 8705 §3.1).
///
/// Equality is constant-time (`subtle`).
#[derive(Clone, Copy)]
pub struct X5tS256(pub [u8; 32]);

impl X5tS256 {
    /// The thumbprint of one DER certificate; same as [`thumbprint`].
    pub fn of_certificate(cert_der: &[u8]) -> Result<Self, MtlsError> {
        thumbprint(cert_der)
    }

    /// The raw 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// base64url without padding (RFC 8705 §3.1, RFC 7515 §2), as it appears in `cnf`.
    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Reads a thumbprint strictly: base64url alphabet, no padding, no non-zero trailing
    /// bits, exactly 32 bytes (M5). Standard base64 (`+`, `/`, `=`) is rejected.
    pub fn from_base64url(s: &str) -> Result<Self, MtlsError> {
        // Length first: never decode an attacker-sized string.
        if s.len() != X5T_S256_B64_LEN {
            return Err(MtlsError::BadConfirmation);
        }
        // URL_SAFE_NO_PAD rejects padding, non-url-safe symbols and non-zero trailing bits.
        let bytes = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| MtlsError::BadConfirmation)?;
        let digest: [u8; 32] = bytes.try_into().map_err(|_| MtlsError::BadConfirmation)?;
        Ok(X5tS256(digest))
    }

    /// SHA-256 of arbitrary bytes, without parsing them (for exact-DER comparisons).
    pub(super) fn digest_of(bytes: &[u8]) -> Self {
        let d = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        X5tS256(out)
    }
}

impl ConstantTimeEq for X5tS256 {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        self.0.ct_eq(&other.0)
    }
}

impl PartialEq for X5tS256 {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for X5tS256 {}

impl std::hash::Hash for X5tS256 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl std::fmt::Debug for X5tS256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "X5tS256(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

impl std::fmt::Display for X5tS256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_base64url())
    }
}

/// The `cnf` claim of a certificate-bound token (RFC 8705 §3.1, RFC 7800).
///
/// The field holds the JSON text as received; [`Confirmation::thumbprint`] reads it strictly.
/// Equality is constant-time over the text. Because the encoding is strict (one canonical
/// string per digest), text equality of two valid values is digest equality.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Confirmation {
    /// base64url(SHA-256(DER)) without padding, as it appears in JSON.
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

impl Confirmation {
    /// The confirmation for a thumbprint.
    pub fn from_thumbprint(x5t_s256: X5tS256) -> Self {
        Confirmation {
            x5t_s256: x5t_s256.to_base64url(),
        }
    }

    /// The confirmation binding a token to this DER leaf certificate (RFC 8705 §3.1).
    pub fn for_certificate(cert_der: &[u8]) -> Result<Self, MtlsError> {
        thumbprint(cert_der).map(Self::from_thumbprint)
    }

    /// Reads `x5t#S256` strictly (see [`X5tS256::from_base64url`]).
    pub fn thumbprint(&self) -> Result<X5tS256, MtlsError> {
        X5tS256::from_base64url(&self.x5t_s256)
    }
}

impl From<X5tS256> for Confirmation {
    fn from(x5t_s256: X5tS256) -> Self {
        Self::from_thumbprint(x5t_s256)
    }
}

impl TryFrom<&Confirmation> for X5tS256 {
    type Error = MtlsError;

    fn try_from(cnf: &Confirmation) -> Result<Self, Self::Error> {
        cnf.thumbprint()
    }
}

impl ConstantTimeEq for Confirmation {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        self.x5t_s256.as_bytes().ct_eq(other.x5t_s256.as_bytes())
    }
}

impl PartialEq for Confirmation {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for Confirmation {}

/// Parses exactly one DER certificate: no trailing bytes, no PEM text (M5).
pub(super) fn parse_certificate(cert_der: &[u8]) -> Result<X509Certificate<'_>, MtlsError> {
    match x509_parser::parse_x509_certificate(cert_der) {
        Ok(([], cert)) => Ok(cert),
        _ => Err(MtlsError::BadCertificate),
    }
}

/// `x5t#S256` of a leaf certificate: SHA-256 over its DER (RFC 8705 §3.1).
///
/// The input must parse as one X.509 certificate with no trailing bytes, so PEM text,
/// a concatenated chain or garbage is rejected with [`MtlsError::BadCertificate`] (M5).
pub fn thumbprint(cert_der: &[u8]) -> Result<X5tS256, MtlsError> {
    parse_certificate(cert_der)?;
    Ok(X5tS256::digest_of(cert_der))
}

/// The DER of the **first** certificate of a PEM chain: the leaf (M6, RFC 8705 §3.1 binds
/// to the leaf only; TLS sends the leaf first, RFC 8446 §4.4.2).
///
/// Text before the first block is ignored (RFC 7468 §2). The first block must be labelled
/// `CERTIFICATE` and hold one well-formed certificate; a chain whose first block is anything
/// else (a key, `TRUSTED CERTIFICATE`, ...) is rejected rather than searched, so a
/// mis-ordered input fails closed. Later blocks are not inspected: the TLS layer validates
/// the chain.
pub fn leaf_from_pem(pem: &str) -> Result<Vec<u8>, MtlsError> {
    let first = Pem::iter_from_buffer(pem.as_bytes())
        .next()
        .ok_or(MtlsError::BadPem)?
        .map_err(|_| MtlsError::BadPem)?;
    if first.label != "CERTIFICATE" {
        return Err(MtlsError::BadPem);
    }
    parse_certificate(&first.contents)?;
    Ok(first.contents)
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "test setup failures should panic")]
mod tests {
    use super::*;
    use crate::mtls::test_support::{ca_and_leaf, p256_cert};

    #[test]
    fn thumbprint_is_sha256_of_der_rfc8705_3_1() {
        let cert = p256_cert("client.example.com");
        let expected = ring::digest::digest(&ring::digest::SHA256, &cert.der);
        let t = thumbprint(&cert.der).expect("thumbprint");
        assert_eq!(t.as_bytes().as_slice(), expected.as_ref());
    }

    #[test]
    fn thumbprint_round_trips_through_base64url() {
        let t = thumbprint(&p256_cert("a.example").der).expect("thumbprint");
        let s = t.to_base64url();
        assert_eq!(s.len(), 43);
        assert!(!s.contains('='));
        assert_eq!(X5tS256::from_base64url(&s), Ok(t));
    }

    #[test]
    fn m5_thumbprint_over_pem_text_is_rejected() {
        let cert = p256_cert("a.example");
        assert_eq!(
            thumbprint(cert.pem.as_bytes()),
            Err(MtlsError::BadCertificate)
        );
    }

    #[test]
    fn m5_thumbprint_rejects_trailing_bytes() {
        let mut der = p256_cert("a.example").der;
        der.push(0);
        assert_eq!(thumbprint(&der), Err(MtlsError::BadCertificate));
    }

    #[test]
    fn m6_thumbprint_rejects_concatenated_chain() {
        let (ca, leaf) = ca_and_leaf();
        let mut chain = leaf.der.clone();
        chain.extend_from_slice(&ca.der);
        assert_eq!(thumbprint(&chain), Err(MtlsError::BadCertificate));
    }

    #[test]
    fn thumbprint_rejects_empty_input() {
        assert_eq!(thumbprint(&[]), Err(MtlsError::BadCertificate));
    }

    #[test]
    fn m5_from_base64url_rejects_padding() {
        let t = thumbprint(&p256_cert("a.example").der).expect("thumbprint");
        let padded = format!("{}=", t.to_base64url());
        assert_eq!(
            X5tS256::from_base64url(&padded),
            Err(MtlsError::BadConfirmation)
        );
    }

    #[test]
    fn m5_from_base64url_rejects_standard_alphabet() {
        // 43 chars from the standard alphabet ('+', '/').
        let s = "+".repeat(21) + &"/".repeat(21) + "A";
        assert_eq!(X5tS256::from_base64url(&s), Err(MtlsError::BadConfirmation));
    }

    #[test]
    fn m5_from_base64url_rejects_non_zero_trailing_bits() {
        // 43 chars encode 258 bits; the last char's low 2 bits must be zero.
        let s = "A".repeat(42) + "B";
        assert_eq!(X5tS256::from_base64url(&s), Err(MtlsError::BadConfirmation));
    }

    #[test]
    fn m5_from_base64url_rejects_wrong_length() {
        for s in [
            "",
            "AAAA",
            &"A".repeat(42),
            &"A".repeat(44),
            &"A".repeat(4096),
        ] {
            assert_eq!(X5tS256::from_base64url(s), Err(MtlsError::BadConfirmation));
        }
    }

    #[test]
    fn m5_from_base64url_rejects_non_ascii_of_right_byte_length() {
        // 41 ASCII + one 2-byte char = 43 bytes.
        let s = "A".repeat(41) + "é";
        assert_eq!(X5tS256::from_base64url(&s), Err(MtlsError::BadConfirmation));
    }

    #[test]
    fn confirmation_serializes_as_x5t_s256_member() {
        let cnf = Confirmation::for_certificate(&p256_cert("a.example").der).expect("cnf");
        let json = serde_json::to_value(&cnf).expect("json");
        assert_eq!(
            json.get("x5t#S256").and_then(|v| v.as_str()),
            Some(cnf.x5t_s256.as_str())
        );
        let back: Confirmation = serde_json::from_value(json).expect("parse");
        assert_eq!(back, cnf);
        assert_eq!(back.thumbprint(), cnf.thumbprint());
    }

    #[test]
    fn confirmation_with_malformed_thumbprint_is_rejected_on_read() {
        let cnf = Confirmation {
            x5t_s256: "not a thumbprint".into(),
        };
        assert_eq!(cnf.thumbprint(), Err(MtlsError::BadConfirmation));
        assert_eq!(X5tS256::try_from(&cnf), Err(MtlsError::BadConfirmation));
    }

    #[test]
    fn m6_leaf_from_pem_returns_first_certificate() {
        let (ca, leaf) = ca_and_leaf();
        let chain = format!("{}{}", leaf.pem, ca.pem);
        assert_eq!(leaf_from_pem(&chain), Ok(leaf.der));
    }

    #[test]
    fn leaf_from_pem_accepts_explanatory_text_before_the_block() {
        let cert = p256_cert("a.example");
        let text = format!("subject=CN=a.example\n{}", cert.pem);
        assert_eq!(leaf_from_pem(&text), Ok(cert.der));
    }

    #[test]
    fn leaf_from_pem_rejects_text_without_blocks() {
        assert_eq!(leaf_from_pem(""), Err(MtlsError::BadPem));
        assert_eq!(leaf_from_pem("hello"), Err(MtlsError::BadPem));
    }

    #[test]
    fn leaf_from_pem_rejects_non_certificate_first_block() {
        let cert = p256_cert("a.example");
        let key_first = format!(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{}",
            cert.pem
        );
        assert_eq!(leaf_from_pem(&key_first), Err(MtlsError::BadPem));
    }

    #[test]
    fn leaf_from_pem_rejects_bad_base64() {
        let pem = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert_eq!(leaf_from_pem(pem), Err(MtlsError::BadPem));
    }

    #[test]
    fn leaf_from_pem_rejects_unterminated_block() {
        let cert = p256_cert("a.example");
        let cut = cert
            .pem
            .split("-----END")
            .next()
            .expect("has END")
            .to_string();
        assert_eq!(leaf_from_pem(&cut), Err(MtlsError::BadPem));
    }

    #[test]
    fn leaf_from_pem_rejects_block_that_is_not_a_certificate() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(leaf_from_pem(pem), Err(MtlsError::BadCertificate));
    }

    #[test]
    fn x5t_s256_equality_is_by_value() {
        let a = X5tS256([7; 32]);
        let mut other = [7; 32];
        other[31] = 8;
        assert_eq!(a, X5tS256([7; 32]));
        assert_ne!(a, X5tS256(other));
    }
}
