//! RFC 9440 `Client-Cert` header field values: the client certificate forwarded by a
//! TLS-terminating proxy, as an RFC 8941 §3.3.5 byte sequence (`:base64:`).
//!
//! This module only parses. Accepting the header **only** from a trusted proxy, stripping it
//! from every other request, and refusing two `Client-Cert` fields are the server's job
//! (C17; RFC 9440 §2.3, §4; Keycloak CVE-2024-10039). `Client-Cert-Chain` is not parsed: the
//! proxy has validated the chain and only the leaf is bound (M6).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::thumbprint::parse_certificate;
use super::MtlsError;

/// Largest accepted `Client-Cert` field value, in bytes (about 12 KiB of DER). Bounds the
/// work done on input that a misconfigured proxy might pass through.
pub const MAX_CLIENT_CERT_HEADER_LEN: usize = 16 * 1024;

/// What is wrong with a `Client-Cert` value (C17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderDefect {
    /// The value, or the byte sequence in it, is empty.
    Empty,
    /// The value is longer than [`MAX_CLIENT_CERT_HEADER_LEN`].
    TooLong,
    /// The value is not `:` base64 `:` (RFC 8941 §3.3.5).
    NotByteSequence,
    /// The base64 is not canonical standard base64 with padding (RFC 8941 §3.3.5).
    BadBase64,
    /// Something follows the byte sequence: parameters, a second combined field value, junk.
    TrailingData,
}

fn defect(d: HeaderDefect) -> MtlsError {
    MtlsError::MalformedClientCertHeader(d)
}

/// Parses one RFC 9440 `Client-Cert` field value into the DER of one certificate.
///
/// Accepted: optional SP/HTAB around (HTTP OWS), then `:`, standard base64 with padding
/// (RFC 4648 §4, canonical: no missing padding, no non-zero trailing bits), `:`, nothing
/// else. The bytes must be exactly one DER X.509 certificate
/// ([`MtlsError::BadCertificate`] otherwise).
///
/// NOTE: RFC 8941 §4.2.7 says parsers SHOULD NOT fail on missing padding or non-zero pad
/// bits; RFC 8941 §4.1.8 makes serializers pad, and a proxy that does otherwise is
/// misconfigured, so this parser is strict (tests
/// `c17_client_cert_without_padding_is_rejected`,
/// `c17_client_cert_with_non_zero_pad_bits_is_rejected`). It also rejects Item parameters
/// (`;key=value`), which RFC 9440 does not define (test
/// `c17_client_cert_with_parameters_is_rejected`).
pub fn parse_client_cert_header(value: &str) -> Result<Vec<u8>, MtlsError> {
    if value.len() > MAX_CLIENT_CERT_HEADER_LEN {
        return Err(defect(HeaderDefect::TooLong));
    }
    let v = value.trim_matches([' ', '\t']);
    if v.is_empty() {
        return Err(defect(HeaderDefect::Empty));
    }
    let inner = v
        .strip_prefix(':')
        .ok_or(defect(HeaderDefect::NotByteSequence))?;
    let (b64, after) = inner
        .split_once(':')
        .ok_or(defect(HeaderDefect::NotByteSequence))?;
    if !after.is_empty() {
        return Err(defect(HeaderDefect::TrailingData));
    }
    if b64.is_empty() {
        return Err(defect(HeaderDefect::Empty));
    }
    // RFC 8941 §4.2.7: only ALPHA, DIGIT, "+", "/" and "=" may appear.
    if !b64
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
    {
        return Err(defect(HeaderDefect::BadBase64));
    }
    let der = STANDARD
        .decode(b64)
        .map_err(|_| defect(HeaderDefect::BadBase64))?;
    parse_certificate(&der)?;
    Ok(der)
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "test setup failures should panic")]
mod tests {
    use super::*;
    use crate::mtls::test_support::{ca_and_leaf, p256_cert};

    fn header_for(der: &[u8]) -> String {
        format!(":{}:", STANDARD.encode(der))
    }

    #[test]
    fn rfc9440_client_cert_byte_sequence_is_parsed() {
        let cert = p256_cert("a.example");
        assert_eq!(
            parse_client_cert_header(&header_for(&cert.der)),
            Ok(cert.der)
        );
    }

    #[test]
    fn client_cert_surrounding_ows_is_ignored() {
        let cert = p256_cert("a.example");
        let v = format!(" \t{} ", header_for(&cert.der));
        assert_eq!(parse_client_cert_header(&v), Ok(cert.der));
    }

    #[test]
    fn c17_client_cert_empty_value_is_rejected() {
        for v in ["", "   ", "::"] {
            assert_eq!(
                parse_client_cert_header(v),
                Err(defect(HeaderDefect::Empty)),
                "{v:?}"
            );
        }
    }

    #[test]
    fn c17_client_cert_without_colons_is_rejected() {
        let cert = p256_cert("a.example");
        let bare = STANDARD.encode(&cert.der);
        for v in [
            bare.clone(),
            format!(":{bare}"),
            format!("{bare}:"),
            ":".into(),
        ] {
            assert_eq!(
                parse_client_cert_header(&v),
                Err(defect(HeaderDefect::NotByteSequence))
            );
        }
    }

    #[test]
    fn c17_client_cert_as_pem_is_rejected() {
        let cert = p256_cert("a.example");
        assert_eq!(
            parse_client_cert_header(&cert.pem),
            Err(defect(HeaderDefect::NotByteSequence))
        );
    }

    #[test]
    fn c17_client_cert_with_trailing_data_is_rejected() {
        let cert = p256_cert("a.example");
        let v = format!("{}x", header_for(&cert.der));
        assert_eq!(
            parse_client_cert_header(&v),
            Err(defect(HeaderDefect::TrailingData))
        );
    }

    #[test]
    fn c17_two_combined_client_cert_fields_are_rejected() {
        // Two field lines combined by an HTTP layer (RFC 9110 §5.3).
        let (ca, leaf) = ca_and_leaf();
        let v = format!("{}, {}", header_for(&leaf.der), header_for(&ca.der));
        assert_eq!(
            parse_client_cert_header(&v),
            Err(defect(HeaderDefect::TrailingData))
        );
    }

    #[test]
    fn c17_client_cert_with_parameters_is_rejected() {
        let cert = p256_cert("a.example");
        let v = format!("{};a=1", header_for(&cert.der));
        assert_eq!(
            parse_client_cert_header(&v),
            Err(defect(HeaderDefect::TrailingData))
        );
    }

    #[test]
    fn c17_client_cert_base64url_is_rejected() {
        use base64::engine::general_purpose::URL_SAFE;
        // Find a certificate whose encoding differs between the alphabets.
        let cert = (0..64)
            .map(|_| p256_cert("a.example"))
            .find(|c| STANDARD.encode(&c.der) != URL_SAFE.encode(&c.der))
            .expect("some certificate encodes with '+' or '/'");
        let v = format!(":{}:", URL_SAFE.encode(&cert.der));
        assert_eq!(
            parse_client_cert_header(&v),
            Err(defect(HeaderDefect::BadBase64))
        );
    }

    #[test]
    fn c17_client_cert_with_invalid_characters_is_rejected() {
        for v in [":AAAA AAAA:", ":AA*A:", ":AAAA\u{e9}:"] {
            assert_eq!(
                parse_client_cert_header(v),
                Err(defect(HeaderDefect::BadBase64)),
                "{v:?}"
            );
        }
    }

    #[test]
    fn c17_client_cert_without_padding_is_rejected() {
        // 2 bytes encode as "AAE=" with padding.
        assert_eq!(
            parse_client_cert_header(":AAE:"),
            Err(defect(HeaderDefect::BadBase64))
        );
    }

    #[test]
    fn c17_client_cert_with_non_zero_pad_bits_is_rejected() {
        // "AAF=": the last symbol carries bits beyond the 2 encoded bytes.
        assert_eq!(
            parse_client_cert_header(":AAF=:"),
            Err(defect(HeaderDefect::BadBase64))
        );
    }

    #[test]
    fn c17_client_cert_too_long_is_rejected() {
        let v = format!(":{}:", "A".repeat(MAX_CLIENT_CERT_HEADER_LEN));
        assert_eq!(
            parse_client_cert_header(&v),
            Err(defect(HeaderDefect::TooLong))
        );
    }

    #[test]
    fn c17_client_cert_that_is_not_a_certificate_is_rejected() {
        assert_eq!(
            parse_client_cert_header(":AAAA:"),
            Err(MtlsError::BadCertificate)
        );
    }

    #[test]
    fn m6_client_cert_with_concatenated_chain_is_rejected() {
        let (ca, leaf) = ca_and_leaf();
        let mut both = leaf.der.clone();
        both.extend_from_slice(&ca.der);
        assert_eq!(
            parse_client_cert_header(&header_for(&both)),
            Err(MtlsError::BadCertificate)
        );
    }
}
