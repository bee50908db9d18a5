//! `tls_client_auth_subject_dn` (RFC 8705 §2.1.2): an RFC 4514 string, compared with the
//! certificate subject per RFC 5280 §7.1 and the RFC 4518 string preparation.
//!
//! The registered string is parsed into attribute types (by OID) and values; the
//! certificate subject is read from its DER structure. Strings are never compared as a
//! whole, in either direction: `CN=a\,O=b` is one RDN with a comma in its value, never two.
//!
//! Rules:
//!
//! * RFC 4514 §2.1: the string lists RDNs **last first**, so it is reversed into the ASN.1
//!   order of the certificate. The number and the order of RDNs must be the same: a
//!   reordered DN does not match (RFC 5280 §7.1).
//! * RFC 4514 §3: escapes `\,` `\+` `\"` `\\` `\<` `\>` `\;` `\ ` `\#` `\=` and `\XX` hex
//!   pairs (a UTF-8 byte each); `#` + hex is the BER encoding of the value; `+` joins the
//!   attributes of a multi-valued RDN, compared as a set (X.501 §9.3).
//! * Attribute types: the short names `CN`, `O`, `OU`, `C`, `L`, `ST`, `STREET`, `DC`, `UID`,
//!   `SERIALNUMBER`, `emailAddress`/`E` (and a few long names), case-insensitively, or a
//!   dotted OID. An unknown name is a registration error, never a guess.
//! * Values of these types use caseIgnoreMatch / caseIgnoreIA5Match (RFC 4517 §4.2.11,
//!   §4.2.13) after RFC 4518 preparation: whitespace mapped to SPACE, case folded, leading
//!   and trailing spaces dropped, inner runs collapsed (§2.6.1). The ASN.1 string type
//!   (PrintableString, UTF8String, ...) does not matter (RFC 5280 §7.1). A string value for
//!   a dotted OID this module does not know is compared exactly (fail closed).
//! * A NUL anywhere (registered, `\00`, or in a certificate subject string) is rejected (C14).
//!
//! NOTE: three deliberate departures from RFC 4518, each failing closed (fewer matches):
//! no NFKC normalization (a precomposed and a decomposed character do not match; test
//! `dn_without_nfkc_decomposed_value_does_not_match`), case folding is Unicode lowercase
//! mapping rather than RFC 3454 table B.2, and characters that RFC 4518 §2.2 maps to nothing
//! (soft hyphen, zero-width space, variation selectors) are kept and must match exactly;
//! control characters and U+FFFD make a value unmatchable instead (test
//! `dn_control_character_in_certificate_value_does_not_match`). An empty registered DN is
//! rejected (it would match every certificate with an empty subject; test
//! `dn_empty_registered_string_is_rejected`).

use x509_parser::asn1_rs::{Any, Class, FromDer, Oid, Tag};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

use super::MtlsError;

/// Upper bound on the registered string; bounds the (quadratic) RDN set matching.
const MAX_DN_LEN: usize = 4096;

/// How values of an attribute type are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchingRule {
    /// caseIgnoreMatch / caseIgnoreIA5Match after RFC 4518 preparation.
    CaseIgnore,
    /// Exact code points: for attribute types this module does not know.
    Exact,
}

/// Attribute types recognised by name: (names, OID arcs, matching rule).
const KNOWN_TYPES: &[(&[&str], &[u64], MatchingRule)] = &[
    (
        &["CN", "commonName"],
        &[2, 5, 4, 3],
        MatchingRule::CaseIgnore,
    ),
    (&["SERIALNUMBER"], &[2, 5, 4, 5], MatchingRule::CaseIgnore),
    (
        &["C", "countryName"],
        &[2, 5, 4, 6],
        MatchingRule::CaseIgnore,
    ),
    (
        &["L", "localityName"],
        &[2, 5, 4, 7],
        MatchingRule::CaseIgnore,
    ),
    (
        &["ST", "stateOrProvinceName"],
        &[2, 5, 4, 8],
        MatchingRule::CaseIgnore,
    ),
    (
        &["STREET", "street"],
        &[2, 5, 4, 9],
        MatchingRule::CaseIgnore,
    ),
    (
        &["O", "organizationName"],
        &[2, 5, 4, 10],
        MatchingRule::CaseIgnore,
    ),
    (
        &["OU", "organizationalUnitName"],
        &[2, 5, 4, 11],
        MatchingRule::CaseIgnore,
    ),
    (
        &["DC", "domainComponent"],
        &[0, 9, 2342, 19200300, 100, 1, 25],
        MatchingRule::CaseIgnore,
    ),
    (
        &["UID", "userId"],
        &[0, 9, 2342, 19200300, 100, 1, 1],
        MatchingRule::CaseIgnore,
    ),
    (
        &["emailAddress", "E"],
        &[1, 2, 840, 113549, 1, 9, 1],
        MatchingRule::CaseIgnore,
    ),
];

#[derive(Debug, Clone)]
struct AttrType {
    oid: Oid<'static>,
    rule: MatchingRule,
}

/// A value given as `#` + hex: one BER element, compared with the certificate's encoding.
#[derive(Debug, Clone)]
struct BerValue {
    class: Class,
    constructed: bool,
    tag: Tag,
    content: Vec<u8>,
}

#[derive(Debug, Clone)]
enum AvaValue {
    /// A string value, already unescaped; `key` is its RFC 4518 form for CaseIgnore types.
    Text {
        raw: String,
        key: Option<String>,
    },
    Ber(BerValue),
}

#[derive(Debug, Clone)]
struct Ava {
    attr: AttrType,
    value: AvaValue,
}

#[derive(Debug, Clone)]
struct Rdn {
    avas: Vec<Ava>,
}

/// A registered subject DN, parsed from its RFC 4514 string (RFC 8705 §2.1.2).
///
/// Parse it when the client registers, so a malformed value is refused then
/// ([`MtlsError::InvalidRegisteredDn`]) rather than at every authentication.
#[derive(Debug, Clone)]
pub struct SubjectDn {
    /// In ASN.1 order (the reverse of the string).
    rdns: Vec<Rdn>,
}

impl SubjectDn {
    /// Parses an RFC 4514 distinguished name string, strictly (RFC 4514 §3: no spaces
    /// around `,`, `+` or `=`, no `;` separators, no unescaped leading or trailing space).
    pub fn parse(s: &str) -> Result<Self, MtlsError> {
        if s.is_empty() || s.len() > MAX_DN_LEN {
            return Err(MtlsError::InvalidRegisteredDn);
        }
        let mut p = Parser {
            b: s.as_bytes(),
            i: 0,
        };
        let mut rdns = Vec::new();
        loop {
            let mut avas = Vec::new();
            loop {
                let attr = p.attribute_type()?;
                p.expect(b'=')?;
                let value = p.attribute_value(attr.rule)?;
                avas.push(Ava { attr, value });
                if !p.eat(b'+') {
                    break;
                }
            }
            rdns.push(Rdn { avas });
            if p.at_end() {
                break;
            }
            p.expect(b',')?;
        }
        rdns.reverse();
        Ok(SubjectDn { rdns })
    }

    /// Compares with a certificate subject (RFC 5280 §7.1).
    pub(super) fn check(&self, subject: &X509Name<'_>) -> Result<(), MtlsError> {
        // Decode every certificate value first, so a NUL anywhere in the subject is an
        // error (C14) whatever the registered DN looks like.
        let cert_rdns = subject
            .iter()
            .map(|rdn| rdn.iter().map(CertAva::new).collect::<Result<Vec<_>, _>>())
            .collect::<Result<Vec<_>, _>>()?;
        if cert_rdns.len() != self.rdns.len() {
            return Err(MtlsError::SubjectDnMismatch);
        }
        for (registered, presented) in self.rdns.iter().zip(&cert_rdns) {
            if !rdn_matches(registered, presented) {
                return Err(MtlsError::SubjectDnMismatch);
            }
        }
        Ok(())
    }
}

/// A multi-valued RDN is a set: same size, and each registered attribute matches a
/// distinct certificate attribute. Greedy assignment is exact while the registered values of
/// one type are all text (matching is then an equivalence); mixing `#hex` and text values of
/// one type in one RDN can only make it miss a match, never accept a wrong one.
fn rdn_matches(registered: &Rdn, presented: &[CertAva<'_, '_>]) -> bool {
    if registered.avas.len() != presented.len() {
        return false;
    }
    let mut used = vec![false; presented.len()];
    for ava in &registered.avas {
        let found = presented
            .iter()
            .enumerate()
            .find(|(j, cert)| !used.get(*j).copied().unwrap_or(true) && ava_matches(ava, cert));
        match found.and_then(|(j, _)| used.get_mut(j)) {
            Some(slot) => *slot = true,
            None => return false,
        }
    }
    true
}

fn ava_matches(registered: &Ava, presented: &CertAva<'_, '_>) -> bool {
    if registered.attr.oid != *presented.ava.attr_type() {
        return false;
    }
    match &registered.value {
        AvaValue::Ber(ber) => {
            let any = presented.ava.attr_value();
            any.header.class() == ber.class
                && any.header.is_constructed() == ber.constructed
                && any.header.tag() == ber.tag
                && any.data == ber.content.as_slice()
        }
        AvaValue::Text { raw, key } => {
            let Some(text) = presented.text.as_deref() else {
                return false;
            };
            match registered.attr.rule {
                MatchingRule::Exact => text == raw,
                MatchingRule::CaseIgnore => match (key, &presented.key) {
                    (Some(a), Some(b)) => a == b,
                    _ => false,
                },
            }
        }
    }
}

/// A certificate subject attribute with its value decoded, if it is a string type, and
/// its RFC 4518 form computed once (not once per comparison).
struct CertAva<'r, 'a> {
    ava: &'r AttributeTypeAndValue<'a>,
    text: Option<String>,
    key: Option<String>,
}

impl<'r, 'a> CertAva<'r, 'a> {
    fn new(ava: &'r AttributeTypeAndValue<'a>) -> Result<Self, MtlsError> {
        let text = directory_string(ava.attr_value())?;
        if text.as_deref().is_some_and(|t| t.contains('\0')) {
            return Err(MtlsError::NulInCertificateName);
        }
        let key = text.as_deref().and_then(case_ignore_key);
        Ok(CertAva { ava, text, key })
    }
}

/// Decodes the string types of X.520 DirectoryString, IA5String and friends to Unicode
/// (RFC 4518 §2.1). `None` for other types (including TeletexString, whose character set is
/// ambiguous in practice: it can match only through an RFC 4514 `#` hex value).
fn directory_string(any: &Any<'_>) -> Result<Option<String>, MtlsError> {
    if any.header.class() != Class::Universal || any.header.is_constructed() {
        return Ok(None);
    }
    let data = any.data;
    let bad = || MtlsError::BadCertificate;
    let text = match any.header.tag() {
        Tag::Utf8String => String::from_utf8(data.to_vec()).map_err(|_| bad())?,
        Tag::PrintableString | Tag::Ia5String | Tag::NumericString | Tag::VisibleString => {
            if !data.is_ascii() {
                return Err(bad());
            }
            String::from_utf8(data.to_vec()).map_err(|_| bad())?
        }
        Tag::BmpString => {
            if data.len() % 2 != 0 {
                return Err(bad());
            }
            let units = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .map_err(|_| bad())?
        }
        Tag::UniversalString => {
            if data.len() % 4 != 0 {
                return Err(bad());
            }
            data.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect::<Option<String>>()
                .ok_or_else(bad)?
        }
        _ => return Ok(None),
    };
    Ok(Some(text))
}

/// RFC 4518 preparation for caseIgnoreMatch, as one comparable string.
///
/// §2.2 map: the whitespace characters (U+0009–000D, U+0085, Zs, Zl, Zp) become SPACE,
/// letters are lowercased. §2.6.1: leading and trailing spaces are dropped and inner runs
/// collapse, so two values are equal iff their space-separated words are. `None`: the value
/// holds a control character or U+FFFD and matches nothing (NOTE in the module doc).
fn case_ignore_key(s: &str) -> Option<String> {
    let mut mapped = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_whitespace() {
            mapped.push(' ');
        } else if c.is_control() || c == '\u{FFFD}' {
            return None;
        } else {
            mapped.extend(c.to_lowercase());
        }
    }
    let words: Vec<&str> = mapped.split(' ').filter(|w| !w.is_empty()).collect();
    Some(words.join(" "))
}

/// The RFC 4514 §3 grammar over bytes (UTF-8 passes through inside values).
struct Parser<'s> {
    b: &'s [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn at_end(&self) -> bool {
        self.i >= self.b.len()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), MtlsError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(MtlsError::InvalidRegisteredDn)
        }
    }

    /// `attributeType = descr / numericoid` (RFC 4512 §1.4).
    fn attribute_type(&mut self) -> Result<AttrType, MtlsError> {
        let err = MtlsError::InvalidRegisteredDn;
        let start = self.i;
        match self.peek() {
            Some(c) if c.is_ascii_alphabetic() => {
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'-') {
                    self.i += 1;
                }
                let name = self.b.get(start..self.i).ok_or(err)?;
                let (_, arcs, rule) = KNOWN_TYPES
                    .iter()
                    .find(|(names, _, _)| {
                        names
                            .iter()
                            .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
                    })
                    .ok_or(err)?;
                let oid = Oid::from(arcs).map_err(|_| err)?;
                Ok(AttrType { oid, rule: *rule })
            }
            Some(c) if c.is_ascii_digit() => {
                let mut arcs: Vec<u64> = Vec::new();
                loop {
                    let n_start = self.i;
                    while matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
                        self.i += 1;
                    }
                    let digits = self.b.get(n_start..self.i).ok_or(err)?;
                    // number = DIGIT / ( LDIGIT 1*DIGIT ): no leading zeros.
                    if digits.is_empty() || (digits.len() > 1 && digits.first() == Some(&b'0')) {
                        return Err(err);
                    }
                    let mut n: u64 = 0;
                    for d in digits {
                        n = n
                            .checked_mul(10)
                            .and_then(|n| n.checked_add(u64::from(d - b'0')))
                            .ok_or(err)?;
                    }
                    arcs.push(n);
                    if !self.eat(b'.') {
                        break;
                    }
                }
                // X.660: the first arc is 0, 1 or 2; under 0 and 1 the second is < 40.
                // (asn1-rs would otherwise silently truncate the first encoded byte.)
                match arcs.as_slice() {
                    [first, second, ..] if *first <= 2 && *second < 40 => {}
                    _ => return Err(err),
                }
                let oid = Oid::from(&arcs).map_err(|_| err)?;
                let rule = KNOWN_TYPES
                    .iter()
                    .find(|(_, known, _)| Oid::from(known).is_ok_and(|k| k == oid))
                    .map_or(MatchingRule::Exact, |(_, _, rule)| *rule);
                Ok(AttrType { oid, rule })
            }
            _ => Err(err),
        }
    }

    /// `attributeValue = string / hexstring` (RFC 4514 §3).
    fn attribute_value(&mut self, rule: MatchingRule) -> Result<AvaValue, MtlsError> {
        let err = MtlsError::InvalidRegisteredDn;
        if self.eat(b'#') {
            return self.hex_value();
        }
        let mut out = Vec::new();
        let mut trailing_unescaped_space = false;
        loop {
            match self.peek() {
                None | Some(b',' | b'+') => break,
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(
                            c @ (b'\\' | b'"' | b'+' | b',' | b';' | b'<' | b'>' | b' ' | b'#'
                            | b'='),
                        ) => {
                            self.i += 1;
                            out.push(c);
                        }
                        Some(_) => out.push(self.hex_pair()?),
                        None => return Err(err),
                    }
                    trailing_unescaped_space = false;
                }
                // Must be escaped anywhere; NUL is never allowed (C14).
                Some(b'"' | b';' | b'<' | b'>' | 0) => return Err(err),
                Some(b' ') => {
                    // leadchar excludes SPACE.
                    if out.is_empty() {
                        return Err(err);
                    }
                    self.i += 1;
                    out.push(b' ');
                    trailing_unescaped_space = true;
                }
                Some(c) => {
                    self.i += 1;
                    out.push(c);
                    trailing_unescaped_space = false;
                }
            }
        }
        // trailchar excludes SPACE; an empty value can match no DirectoryString (SIZE 1..).
        if trailing_unescaped_space || out.is_empty() {
            return Err(err);
        }
        let raw = String::from_utf8(out).map_err(|_| err)?;
        if raw.chars().any(char::is_control) {
            // Covers NUL from `\00` (C14) and every other control character.
            return Err(err);
        }
        let key = match rule {
            MatchingRule::CaseIgnore => Some(case_ignore_key(&raw).ok_or(err)?),
            MatchingRule::Exact => None,
        };
        Ok(AvaValue::Text { raw, key })
    }

    /// `hexstring = SHARP 1*hexpair`: one BER element, nothing after it.
    fn hex_value(&mut self) -> Result<AvaValue, MtlsError> {
        let err = MtlsError::InvalidRegisteredDn;
        let mut bytes = Vec::new();
        while !matches!(self.peek(), None | Some(b',' | b'+')) {
            bytes.push(self.hex_pair()?);
        }
        let (rest, any) = Any::from_der(&bytes).map_err(|_| err)?;
        if !rest.is_empty() {
            return Err(err);
        }
        Ok(AvaValue::Ber(BerValue {
            class: any.header.class(),
            constructed: any.header.is_constructed(),
            tag: any.header.tag(),
            content: any.data.to_vec(),
        }))
    }

    fn hex_pair(&mut self) -> Result<u8, MtlsError> {
        let hi = self.hex_digit()?;
        let lo = self.hex_digit()?;
        Ok(hi << 4 | lo)
    }

    fn hex_digit(&mut self) -> Result<u8, MtlsError> {
        let v = match self.peek() {
            Some(c @ b'0'..=b'9') => c - b'0',
            Some(c @ b'a'..=b'f') => c - b'a' + 10,
            Some(c @ b'A'..=b'F') => c - b'A' + 10,
            _ => return Err(MtlsError::InvalidRegisteredDn),
        };
        self.i += 1;
        Ok(v)
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "test setup failures should panic")]
mod tests {
    use super::*;
    use crate::mtls::test_support::cert_with_subject;
    use crate::mtls::thumbprint::parse_certificate;
    use rcgen::{DistinguishedName, DnType, DnValue};

    fn check(
        registered: &str,
        build: impl FnOnce(&mut DistinguishedName),
    ) -> Result<(), MtlsError> {
        let cert = cert_with_subject(build);
        let parsed = parse_certificate(&cert.der).expect("parse");
        SubjectDn::parse(registered)?.check(parsed.subject())
    }

    fn client_dn(dn: &mut DistinguishedName) {
        dn.push(DnType::CountryName, "US");
        dn.push(DnType::OrganizationName, "Example");
        dn.push(DnType::CommonName, "client");
    }

    #[test]
    fn rfc4514_dn_matches_in_reverse_string_order() {
        assert_eq!(check("CN=client,O=Example,C=US", client_dn), Ok(()));
    }

    #[test]
    fn c14_dn_with_reordered_rdns_does_not_match() {
        assert_eq!(
            check("C=US,O=Example,CN=client", client_dn),
            Err(MtlsError::SubjectDnMismatch)
        );
        assert_eq!(
            check("O=Example,CN=client,C=US", client_dn),
            Err(MtlsError::SubjectDnMismatch)
        );
    }

    #[test]
    fn c14_dn_with_different_case_matches_case_ignore_rfc4517() {
        assert_eq!(check("cn=CLIENT,o=eXample,c=us", client_dn), Ok(()));
    }

    #[test]
    fn dn_insignificant_space_is_collapsed_rfc4518_2_6_1() {
        let build = |dn: &mut DistinguishedName| {
            dn.push(DnType::OrganizationName, "  Example   Corp ");
        };
        assert_eq!(check("O=Example Corp", build), Ok(()));
        assert_eq!(check("O=\\ Example\\20\\20Corp\\ ", build), Ok(()));
    }

    #[test]
    fn dn_inner_space_is_significant_between_words() {
        let build = |dn: &mut DistinguishedName| {
            dn.push(DnType::OrganizationName, "Example Corp");
        };
        assert_eq!(
            check("O=ExampleCorp", build),
            Err(MtlsError::SubjectDnMismatch)
        );
    }

    #[test]
    fn c14_dn_escaped_comma_is_part_of_the_value() {
        let build = |dn: &mut DistinguishedName| {
            dn.push(DnType::OrganizationName, "Example, Inc.");
            dn.push(DnType::CommonName, "client");
        };
        assert_eq!(check("CN=client,O=Example\\, Inc.", build), Ok(()));
        assert_eq!(check("CN=client,O=Example\\2C Inc.", build), Ok(()));
    }

    #[test]
    fn c14_dn_unescaped_comma_is_not_the_value() {
        // "O=Example, Inc." parses as two RDNs (and " Inc." is not a type): never a match.
        let build = |dn: &mut DistinguishedName| {
            dn.push(DnType::OrganizationName, "Example, Inc.");
        };
        assert_eq!(
            check("O=Example, Inc.", build),
            Err(MtlsError::InvalidRegisteredDn)
        );
    }

    #[test]
    fn c14_dn_value_with_comma_does_not_match_two_rdns() {
        // Certificate has two RDNs O=Example and CN=x; the registered value is one O with a comma.
        let build = |dn: &mut DistinguishedName| {
            dn.push(DnType::OrganizationName, "Example");
            dn.push(DnType::CommonName, "x");
        };
        assert_eq!(
            check("O=CN\\=x\\,O\\=Example", build),
            Err(MtlsError::SubjectDnMismatch)
        );
    }

    #[test]
    fn c14_dn_embedded_nul_in_certificate_is_rejected() {
        let build = |dn: &mut DistinguishedName| {
            dn.push(
                DnType::CommonName,
                DnValue::Utf8String("client\0.evil".into()),
            );
        };
        assert_eq!(
            check("CN=client", build),
            Err(MtlsError::NulInCertificateName)
        );
        assert_eq!(
            check("CN=client\\00.evil", build),
            Err(MtlsError::InvalidRegisteredDn)
        );
    }

    #[test]
    fn c14_dn_embedded_nul_in_registered_string_is_rejected() {
        assert_eq!(
            SubjectDn::parse("CN=client\\00").map(|_| ()),
            Err(MtlsError::InvalidRegisteredDn)
        );
        assert_eq!(
            SubjectDn::parse("CN=client\0").map(|_| ()),
            Err(MtlsError::InvalidRegisteredDn)
        );
    }

    #[test]
    fn dn_different_value_does_not_match() {
        assert_eq!(
            check("CN=client2,O=Example,C=US", client_dn),
            Err(MtlsError::SubjectDnMismatch)
        );
    }

    #[test]
    fn dn_different_attribute_type_does_not_match() {
        assert_eq!(
            check("CN=client,OU=Example,C=US", client_dn),
            Err(MtlsError::SubjectDnMismatch)
        );
    }

    #[test]
    fn dn_missing_or_extra_rdn_does_not_match() {
        assert_eq!(
            check("CN=client,O=Example", client_dn),
            Err(MtlsError::SubjectDnMismatch)
        );
        assert_eq!(
            check("CN=client,O=Example,C=US,DC=com", client_dn),
            Err(MtlsError::SubjectDnMismatch)
        );
    }

    #[test]
    fn dn_prefix_or_substring_does_not_match() {
        assert_eq!(
            check("CN=clien,O=Example,C=US", client_dn),
            Err(MtlsError::SubjectDnMismatch)
        );
        assert_eq!(
            check("CN=client x,O=Example,C=US", client_dn),
            Err(MtlsError::SubjectDnMismatch)
        );
    }

    #[test]
    fn dn_dotted_oid_type_matches_known_attribute() {
        assert_eq!(
            check("2.5.4.3=CLIENT,2.5.4.10=Example,2.5.4.6=US", client_dn),
            Ok(())
        );
    }

    #[test]
    fn dn_hex_value_matches_ber_encoding_rfc4514_2_4() {
        // UTF8String "client" = 0C 06 63 6C 69 65 6E 74
        let build = |dn: &mut DistinguishedName| {
            dn.push(DnType::CommonName, DnValue::Utf8String("client".into()));
        };
        assert_eq!(check("CN=#0C06636C69656E74", build), Ok(()));
        // Same text as PrintableString (13): different encoding, no match.
        assert_eq!(
            check("CN=#1306636C69656E74", build),
            Err(MtlsError::SubjectDnMismatch)
        );
    }

    #[test]
    fn dn_unknown_oid_string_value_is_compared_exactly() {
        let build = |dn: &mut DistinguishedName| {
            dn.push(
                DnType::CustomDnType(vec![1, 3, 6, 1, 4, 1, 99999, 1]),
                DnValue::Utf8String("Tenant-A".into()),
            );
        };
        assert_eq!(check("1.3.6.1.4.1.99999.1=Tenant-A", build), Ok(()));
        assert_eq!(
            check("1.3.6.1.4.1.99999.1=tenant-a", build),
            Err(MtlsError::SubjectDnMismatch)
        );
    }

    #[test]
    fn dn_string_type_does_not_matter_rfc5280_7_1() {
        let build = |dn: &mut DistinguishedName| {
            dn.push(
                DnType::CommonName,
                DnValue::PrintableString("Client".try_into().expect("printable")),
            );
            dn.push(
                DnType::OrganizationName,
                DnValue::BmpString("Exämple".try_into().expect("bmp")),
            );
        };
        assert_eq!(check("O=exämple,CN=client", build), Ok(()));
    }

    #[test]
    fn dn_non_ascii_case_is_ignored() {
        let build = |dn: &mut DistinguishedName| {
            dn.push(DnType::OrganizationName, "ÄRZTE");
        };
        assert_eq!(check("O=ärzte", build), Ok(()));
        assert_eq!(check("O=\\C3\\A4rzte", build), Ok(()));
    }

    #[test]
    fn dn_without_nfkc_decomposed_value_does_not_match() {
        let build = |dn: &mut DistinguishedName| {
            dn.push(DnType::OrganizationName, "\u{e4}rzte"); // precomposed ä
        };
        assert_eq!(
            check("O=a\u{308}rzte", build), // a + combining diaeresis
            Err(MtlsError::SubjectDnMismatch)
        );
    }

    #[test]
    fn dn_control_character_in_certificate_value_does_not_match() {
        let build = |dn: &mut DistinguishedName| {
            dn.push(
                DnType::CommonName,
                DnValue::Utf8String("cli\u{7}ent".into()),
            );
        };
        assert_eq!(check("CN=client", build), Err(MtlsError::SubjectDnMismatch));
    }

    #[test]
    fn dn_empty_registered_string_is_rejected() {
        assert_eq!(
            SubjectDn::parse("").map(|_| ()),
            Err(MtlsError::InvalidRegisteredDn)
        );
    }

    #[test]
    fn dn_malformed_registered_strings_are_rejected() {
        let bad = [
            "CN",                                 // no '='
            "CN=",                                // empty value
            "=client",                            // no type
            "CN=client,",                         // trailing separator
            ",CN=client",                         // leading separator
            "CN=a+",                              // dangling '+'
            "CN=client, O=x",                     // space before a type (RFC 4514 is strict)
            "CN = client",                        // space around '='
            "CN= client",                         // unescaped leading space
            "CN=client ",                         // unescaped trailing space
            "CN=a;O=b",                           // ';' separator (RFC 1779) is not RFC 4514
            "CN=a\"b",                            // unescaped quote
            "CN=a<b",                             // unescaped '<'
            "CN=a\\",                             // dangling escape
            "CN=a\\x",                            // bad escape
            "CN=a\\4",                            // half a hex pair
            "CN=\\FF",                            // not UTF-8
            "CN=#",                               // empty hexstring
            "CN=#0C0",                            // odd hex
            "CN=#0C0661",                         // BER length beyond the bytes
            "CN=#0C0161FF",                       // bytes after the BER element
            "XX=client",                          // unknown short name
            "SN=client",   // ambiguous (surname vs serialNumber): not accepted
            "1=client",    // one-arc OID
            "01.2=client", // leading zero
            "7.1=client",  // first arc > 2
            "1.40=client", // second arc >= 40 under 1
            "1.2.99999999999999999999999=client", // arc overflow
            "CN=a\\09b",   // control character
        ];
        // Every case is checked; the failures are reported together.
        let accepted: Vec<(&str, Result<(), MtlsError>)> = bad
            .iter()
            .map(|s| (*s, SubjectDn::parse(s).map(|_| ())))
            .filter(|(_, r)| *r != Err(MtlsError::InvalidRegisteredDn))
            .collect();
        assert!(accepted.is_empty(), "not rejected as invalid: {accepted:?}");
    }

    #[test]
    fn dn_registered_string_length_is_bounded() {
        let long = format!("CN={}", "a".repeat(MAX_DN_LEN));
        assert_eq!(
            SubjectDn::parse(&long).map(|_| ()),
            Err(MtlsError::InvalidRegisteredDn)
        );
    }

    #[test]
    fn dn_escapes_of_specials_are_accepted() {
        let build = |dn: &mut DistinguishedName| {
            dn.push(DnType::CommonName, "a+b=c#d\"e;f<g>h\\i");
        };
        assert_eq!(
            check("CN=a\\+b\\=c\\#d\\\"e\\;f\\<g\\>h\\\\i", build),
            Ok(())
        );
        assert_eq!(check("CN=a\\+b=c#d\\\"e\\;f\\<g\\>h\\\\i", build), Ok(()));
    }

    #[test]
    fn dn_leading_hash_must_be_escaped_for_text() {
        let build = |dn: &mut DistinguishedName| {
            dn.push(DnType::CommonName, "#1");
        };
        assert_eq!(check("CN=\\#1", build), Ok(()));
    }
}
