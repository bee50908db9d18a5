//! `tls_client_auth` (RFC 8705 §2.1): match a CA-issued client certificate against the one
//! registered subject DN or SAN value.
//!
//! The certificate handed in must already have been validated by the TLS layer (chain to a
//! trusted CA, validity, revocation, EKU: C15). This module only compares names.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::dn::SubjectDn;
use super::thumbprint::{parse_certificate, Confirmation, X5tS256};
use super::MtlsError;

/// The registered `tls_client_auth_*` value of a client (RFC 8705 §2.1.2). A client registers
/// exactly one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsClientAuthRule {
    /// `tls_client_auth_subject_dn`: an RFC 4514 string, compared per RFC 5280 §7.1 (see
    /// [`SubjectDn`]).
    SubjectDn(String),
    /// `tls_client_auth_san_dns`: a dNSName SAN entry, ASCII case-insensitive, no wildcard
    /// expansion in either direction.
    SanDns(String),
    /// `tls_client_auth_san_uri`: a uniformResourceIdentifier SAN entry, exact string.
    SanUri(String),
    /// `tls_client_auth_san_ip`: an iPAddress SAN entry (4 or 16 bytes), address equality.
    /// An IPv4 address does not match its IPv4-mapped IPv6 form.
    SanIp(IpAddr),
    /// `tls_client_auth_san_email`: an rfc822Name SAN entry; the local part exact, the
    /// domain ASCII case-insensitive (RFC 5280 §7.5).
    SanEmail(String),
}

impl TlsClientAuthRule {
    /// Checks the registered value itself, for use at registration time: a DN must parse,
    /// a DNS name must be non-empty ASCII, a URI non-empty, an email `local@domain`.
    /// Errors are [`MtlsError::InvalidRegisteredDn`] / [`MtlsError::InvalidRegisteredValue`].
    pub fn validate(&self) -> Result<(), MtlsError> {
        match self {
            TlsClientAuthRule::SubjectDn(dn) => SubjectDn::parse(dn).map(|_| ()),
            TlsClientAuthRule::SanDns(dns) => registered_dns(dns).map(|_| ()),
            TlsClientAuthRule::SanUri(uri) => registered_text(uri).map(|_| ()),
            TlsClientAuthRule::SanIp(_) => Ok(()),
            TlsClientAuthRule::SanEmail(email) => registered_email(email).map(|_| ()),
        }
    }
}

/// Which registered value a [`ClientCertMatch`] matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MatchedBy {
    /// `tls_client_auth_subject_dn`.
    SubjectDn,
    /// `tls_client_auth_san_dns`.
    SanDns,
    /// `tls_client_auth_san_uri`.
    SanUri,
    /// `tls_client_auth_san_ip`.
    SanIp,
    /// `tls_client_auth_san_email`.
    SanEmail,
    /// `self_signed_tls_client_auth`, by a registered public key (RFC 8705 §2.2).
    SelfSignedPublicKey,
    /// `self_signed_tls_client_auth`, by a registered `x5c` certificate (RFC 8705 §2.2).
    SelfSignedCertificate,
}

/// Proof that a presented client certificate matched the client's registration (RFC 8705
/// §2). Only this module can construct it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertMatch {
    x5t_s256: X5tS256,
    matched_by: MatchedBy,
}

impl ClientCertMatch {
    pub(super) fn new(x5t_s256: X5tS256, matched_by: MatchedBy) -> Self {
        ClientCertMatch {
            x5t_s256,
            matched_by,
        }
    }

    /// Thumbprint of the matched certificate.
    pub fn thumbprint(&self) -> X5tS256 {
        self.x5t_s256
    }

    /// Which registered value it matched.
    pub fn matched_by(&self) -> MatchedBy {
        self.matched_by
    }

    /// The `cnf` to bind tokens issued on this connection to the same certificate (RFC 8705
    /// §3).
    pub fn confirmation(&self) -> Confirmation {
        Confirmation::from_thumbprint(self.x5t_s256)
    }
}

/// Matches a DER client certificate (already chain-validated by the TLS layer) against the
/// registered `tls_client_auth` value (RFC 8705 §2.1.2).
///
/// Errors: [`MtlsError::SubjectDnMismatch`] / [`MtlsError::SanMismatch`] when nothing matches
/// (a certificate without the SAN extension has no matching SAN), and
/// [`MtlsError::NulInCertificateName`] when a compared name holds a NUL (C14).
pub fn match_tls_client_auth(
    cert_der: &[u8],
    rule: &TlsClientAuthRule,
) -> Result<ClientCertMatch, MtlsError> {
    let cert = parse_certificate(cert_der)?;
    let matched_by = match rule {
        TlsClientAuthRule::SubjectDn(dn) => {
            SubjectDn::parse(dn)?.check(cert.subject())?;
            MatchedBy::SubjectDn
        }
        TlsClientAuthRule::SanDns(dns) => {
            let want = registered_dns(dns)?;
            match_san(&cert, |name| match name {
                GeneralName::DNSName(have) => Some(have.eq_ignore_ascii_case(want)),
                _ => None,
            })?;
            MatchedBy::SanDns
        }
        TlsClientAuthRule::SanUri(uri) => {
            let want = registered_text(uri)?;
            match_san(&cert, |name| match name {
                GeneralName::URI(have) => Some(*have == want),
                _ => None,
            })?;
            MatchedBy::SanUri
        }
        TlsClientAuthRule::SanIp(want) => {
            match_san(&cert, |name| match name {
                GeneralName::IPAddress(bytes) => Some(ip_from_san(bytes) == Some(*want)),
                _ => None,
            })?;
            MatchedBy::SanIp
        }
        TlsClientAuthRule::SanEmail(email) => {
            let (want_local, want_domain) = registered_email(email)?;
            match_san(&cert, |name| match name {
                GeneralName::RFC822Name(have) => Some(match have.rsplit_once('@') {
                    Some((local, domain)) => {
                        local == want_local && domain.eq_ignore_ascii_case(want_domain)
                    }
                    None => false,
                }),
                _ => None,
            })?;
            MatchedBy::SanEmail
        }
    };
    Ok(ClientCertMatch::new(
        X5tS256::digest_of(cert_der),
        matched_by,
    ))
}

/// Runs `compare` over the SAN entries; it returns `None` for entries of other kinds.
/// An entry of the compared kind holding a NUL is an error, wherever it sits (C14).
fn match_san(
    cert: &X509Certificate<'_>,
    compare: impl Fn(&GeneralName<'_>) -> Option<bool>,
) -> Result<(), MtlsError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|_| MtlsError::BadCertificate)?
        .ok_or(MtlsError::SanMismatch)?;
    let mut matched = false;
    for name in &san.value.general_names {
        let Some(is_match) = compare(name) else {
            continue;
        };
        if has_nul(name) {
            return Err(MtlsError::NulInCertificateName);
        }
        matched |= is_match;
    }
    if matched {
        Ok(())
    } else {
        Err(MtlsError::SanMismatch)
    }
}

fn has_nul(name: &GeneralName<'_>) -> bool {
    match name {
        GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
            s.contains('\0')
        }
        _ => false,
    }
}

/// An iPAddress SAN is 4 (IPv4) or 16 (IPv6) octets (RFC 5280 §4.2.1.6); anything else
/// matches nothing.
fn ip_from_san(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        return Some(IpAddr::V6(Ipv6Addr::from(v6)));
    }
    None
}

fn registered_text(s: &str) -> Result<&str, MtlsError> {
    if s.is_empty() || s.contains('\0') {
        return Err(MtlsError::InvalidRegisteredValue);
    }
    Ok(s)
}

/// A dNSName is an IA5String (RFC 5280 §4.2.1.6): non-empty ASCII (A-labels for IDNs).
fn registered_dns(s: &str) -> Result<&str, MtlsError> {
    let s = registered_text(s)?;
    if !s.is_ascii() {
        return Err(MtlsError::InvalidRegisteredValue);
    }
    Ok(s)
}

/// `local@domain`, both non-empty; split at the last `@` (a quoted local part may hold one).
fn registered_email(s: &str) -> Result<(&str, &str), MtlsError> {
    let s = registered_text(s)?;
    match s.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => Ok((local, domain)),
        _ => Err(MtlsError::InvalidRegisteredValue),
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "test setup failures should panic")]
mod tests {
    use super::*;
    use crate::mtls::test_support::{bare_params, cert_with_sans, cert_with_subject, self_signed};
    use crate::mtls::thumbprint::thumbprint;
    use rcgen::{DnType, SanType};

    fn dns(s: &str) -> SanType {
        SanType::DnsName(s.to_string().try_into().expect("ia5"))
    }
    fn uri(s: &str) -> SanType {
        SanType::URI(s.to_string().try_into().expect("ia5"))
    }
    fn email(s: &str) -> SanType {
        SanType::Rfc822Name(s.to_string().try_into().expect("ia5"))
    }
    fn ip(s: &str) -> SanType {
        SanType::IpAddress(s.parse().expect("ip"))
    }
    fn rule_ip(s: &str) -> TlsClientAuthRule {
        TlsClientAuthRule::SanIp(s.parse().expect("ip"))
    }

    #[test]
    fn rfc8705_2_1_2_subject_dn_match_returns_proof_with_thumbprint() {
        let cert = cert_with_subject(|dn| {
            dn.push(DnType::OrganizationName, "Example");
            dn.push(DnType::CommonName, "client");
        });
        let rule = TlsClientAuthRule::SubjectDn("CN=client,O=Example".into());
        let m = match_tls_client_auth(&cert.der, &rule).expect("match");
        assert_eq!(m.matched_by(), MatchedBy::SubjectDn);
        assert_eq!(Ok(m.thumbprint()), thumbprint(&cert.der));
        assert_eq!(
            Ok(m.confirmation()),
            Confirmation::for_certificate(&cert.der)
        );
    }

    #[test]
    fn c14_subject_dn_mismatch_is_rejected() {
        let cert = cert_with_subject(|dn| dn.push(DnType::CommonName, "client"));
        let rule = TlsClientAuthRule::SubjectDn("CN=other".into());
        assert_eq!(
            match_tls_client_auth(&cert.der, &rule),
            Err(MtlsError::SubjectDnMismatch)
        );
    }

    #[test]
    fn c14_subject_dn_is_not_matched_against_san() {
        let cert = cert_with_sans(vec![dns("client")]); // subject is CN=san-test
        let rule = TlsClientAuthRule::SubjectDn("CN=client".into());
        assert_eq!(
            match_tls_client_auth(&cert.der, &rule),
            Err(MtlsError::SubjectDnMismatch)
        );
    }

    #[test]
    fn invalid_registered_subject_dn_is_a_registration_error() {
        let cert = cert_with_subject(|dn| dn.push(DnType::CommonName, "client"));
        let rule = TlsClientAuthRule::SubjectDn("CN=client;".into());
        assert_eq!(
            match_tls_client_auth(&cert.der, &rule),
            Err(MtlsError::InvalidRegisteredDn)
        );
        assert_eq!(rule.validate(), Err(MtlsError::InvalidRegisteredDn));
    }

    #[test]
    fn c13_garbage_certificate_is_rejected() {
        let rule = TlsClientAuthRule::SanDns("a.example".into());
        assert_eq!(
            match_tls_client_auth(b"", &rule),
            Err(MtlsError::BadCertificate)
        );
    }

    #[test]
    fn san_dns_matches_case_insensitively() {
        let cert = cert_with_sans(vec![dns("other.example"), dns("Client.Example.COM")]);
        let rule = TlsClientAuthRule::SanDns("client.example.com".into());
        let m = match_tls_client_auth(&cert.der, &rule).expect("match");
        assert_eq!(m.matched_by(), MatchedBy::SanDns);
    }

    #[test]
    fn c14_san_dns_mismatch_is_rejected() {
        let cert = cert_with_sans(vec![dns("client.example.com")]);
        for want in [
            "client.example.co",
            "lient.example.com",
            "client.example.com.",
        ] {
            let rule = TlsClientAuthRule::SanDns(want.into());
            assert_eq!(
                match_tls_client_auth(&cert.der, &rule),
                Err(MtlsError::SanMismatch),
                "{want}"
            );
        }
    }

    #[test]
    fn c14_san_dns_wildcard_in_certificate_is_not_expanded() {
        let cert = cert_with_sans(vec![dns("*.example.com")]);
        let rule = TlsClientAuthRule::SanDns("a.example.com".into());
        assert_eq!(
            match_tls_client_auth(&cert.der, &rule),
            Err(MtlsError::SanMismatch)
        );
        let literal = TlsClientAuthRule::SanDns("*.EXAMPLE.com".into());
        assert!(match_tls_client_auth(&cert.der, &literal).is_ok());
    }

    #[test]
    fn c14_san_dns_wildcard_in_registration_is_not_expanded() {
        let cert = cert_with_sans(vec![dns("a.example.com")]);
        let rule = TlsClientAuthRule::SanDns("*.example.com".into());
        assert_eq!(
            match_tls_client_auth(&cert.der, &rule),
            Err(MtlsError::SanMismatch)
        );
    }

    #[test]
    fn c14_san_dns_is_not_matched_against_subject_cn() {
        let cert = cert_with_subject(|dn| dn.push(DnType::CommonName, "client.example.com"));
        let rule = TlsClientAuthRule::SanDns("client.example.com".into());
        assert_eq!(
            match_tls_client_auth(&cert.der, &rule),
            Err(MtlsError::SanMismatch)
        );
    }

    #[test]
    fn c14_san_dns_with_embedded_nul_is_rejected() {
        let cert = cert_with_sans(vec![dns("client.example.com\0.evil.com")]);
        let rule = TlsClientAuthRule::SanDns("client.example.com".into());
        assert_eq!(
            match_tls_client_auth(&cert.der, &rule),
            Err(MtlsError::NulInCertificateName)
        );
    }

    #[test]
    fn c14_san_of_another_kind_does_not_match() {
        let cert = cert_with_sans(vec![
            uri("client.example.com"),
            email("a@client.example.com"),
        ]);
        let rule = TlsClientAuthRule::SanDns("client.example.com".into());
        assert_eq!(
            match_tls_client_auth(&cert.der, &rule),
            Err(MtlsError::SanMismatch)
        );
    }

    #[test]
    fn certificate_without_san_extension_has_no_matching_san() {
        let cert = cert_with_subject(|dn| dn.push(DnType::CommonName, "x"));
        let rule = TlsClientAuthRule::SanUri("https://x".into());
        assert_eq!(
            match_tls_client_auth(&cert.der, &rule),
            Err(MtlsError::SanMismatch)
        );
    }

    #[test]
    fn san_uri_matches_exactly() {
        let cert = cert_with_sans(vec![uri("https://client.example.com/id")]);
        let rule = TlsClientAuthRule::SanUri("https://client.example.com/id".into());
        let m = match_tls_client_auth(&cert.der, &rule).expect("match");
        assert_eq!(m.matched_by(), MatchedBy::SanUri);
    }

    #[test]
    fn c14_san_uri_differing_in_case_or_suffix_is_rejected() {
        let cert = cert_with_sans(vec![uri("https://client.example.com/id")]);
        for want in [
            "https://CLIENT.example.com/id",
            "https://client.example.com/id/",
            "https://client.example.com/",
            "https://client.example.com/id?x",
        ] {
            let rule = TlsClientAuthRule::SanUri(want.into());
            assert_eq!(
                match_tls_client_auth(&cert.der, &rule),
                Err(MtlsError::SanMismatch),
                "{want}"
            );
        }
    }

    #[test]
    fn san_ip_matches_v4_and_v6() {
        let cert = cert_with_sans(vec![ip("192.0.2.7"), ip("2001:db8::1")]);
        for want in ["192.0.2.7", "2001:db8:0:0::1"] {
            let m = match_tls_client_auth(&cert.der, &rule_ip(want)).expect("match");
            assert_eq!(m.matched_by(), MatchedBy::SanIp);
        }
    }

    #[test]
    fn c14_san_ip_mismatch_is_rejected() {
        let cert = cert_with_sans(vec![ip("192.0.2.7"), dns("192.0.2.8")]);
        for want in ["192.0.2.8", "::ffff:192.0.2.7", "2001:db8::7"] {
            assert_eq!(
                match_tls_client_auth(&cert.der, &rule_ip(want)),
                Err(MtlsError::SanMismatch),
                "{want}"
            );
        }
    }

    #[test]
    fn san_email_matches_with_case_insensitive_domain() {
        let cert = cert_with_sans(vec![email("Client.Ops@Example.COM")]);
        let rule = TlsClientAuthRule::SanEmail("Client.Ops@example.com".into());
        let m = match_tls_client_auth(&cert.der, &rule).expect("match");
        assert_eq!(m.matched_by(), MatchedBy::SanEmail);
    }

    #[test]
    fn c14_san_email_local_part_is_case_sensitive() {
        let cert = cert_with_sans(vec![email("Client.Ops@example.com")]);
        let rule = TlsClientAuthRule::SanEmail("client.ops@example.com".into());
        assert_eq!(
            match_tls_client_auth(&cert.der, &rule),
            Err(MtlsError::SanMismatch)
        );
    }

    #[test]
    fn c14_san_email_other_domain_is_rejected() {
        let cert = cert_with_sans(vec![email("ops@example.com.evil"), email("example.com")]);
        let rule = TlsClientAuthRule::SanEmail("ops@example.com".into());
        assert_eq!(
            match_tls_client_auth(&cert.der, &rule),
            Err(MtlsError::SanMismatch)
        );
    }

    #[test]
    fn invalid_registered_san_values_are_rejected() {
        let cert = cert_with_sans(vec![dns("a.example")]);
        for rule in [
            TlsClientAuthRule::SanDns(String::new()),
            TlsClientAuthRule::SanDns("bücher.example".into()),
            TlsClientAuthRule::SanDns("a.example\0".into()),
            TlsClientAuthRule::SanUri(String::new()),
            TlsClientAuthRule::SanEmail("no-at-sign".into()),
            TlsClientAuthRule::SanEmail("@example.com".into()),
            TlsClientAuthRule::SanEmail("ops@".into()),
        ] {
            assert_eq!(
                match_tls_client_auth(&cert.der, &rule),
                Err(MtlsError::InvalidRegisteredValue),
                "{rule:?}"
            );
            assert_eq!(rule.validate(), Err(MtlsError::InvalidRegisteredValue));
        }
    }

    #[test]
    fn valid_registrations_validate() {
        for rule in [
            TlsClientAuthRule::SubjectDn("CN=a".into()),
            TlsClientAuthRule::SanDns("a.example".into()),
            TlsClientAuthRule::SanUri("spiffe://example/a".into()),
            rule_ip("::1"),
            TlsClientAuthRule::SanEmail("a@example".into()),
        ] {
            assert_eq!(rule.validate(), Ok(()), "{rule:?}");
        }
    }

    #[test]
    fn ed25519_certificate_matches_by_san() {
        let mut params = bare_params();
        params.subject_alt_names = vec![dns("ed.example")];
        let cert = self_signed(&params, &rcgen::PKCS_ED25519);
        let rule = TlsClientAuthRule::SanDns("ed.example".into());
        assert!(match_tls_client_auth(&cert.der, &rule).is_ok());
    }
}
