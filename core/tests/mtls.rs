//! RFC 8705 / RFC 9440 vectors made independently with OpenSSL (see
//! `tests/data/mtls/README.md`), run against the public API of `heartgate_core::mtls`.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test setup failures should panic"
)]

use heartgate_core::mtls::{
    certificate_public_key, check_binding, leaf_from_pem, match_self_signed, match_self_signed_x5c,
    match_tls_client_auth, parse_client_cert_header, require_binding, thumbprint, Binding,
    CertPublicKey, Confirmation, MatchedBy, MtlsError, SubjectDn, TlsClientAuthRule, X5tS256,
};

const RSA_DER: &[u8] = include_bytes!("data/mtls/rsa2048.der");
const RSA_PEM: &str = include_str!("data/mtls/rsa2048.pem");
const RSA_X5T: &str = include_str!("data/mtls/rsa2048.x5t-s256.txt");
const RSA_X5T_STD: &str = include_str!("data/mtls/rsa2048.x5t-s256.std-base64.txt");
const RSA_PEM_TEXT_SHA256: &str = include_str!("data/mtls/rsa2048.pem-text-sha256.txt");
const RSA_MODULUS_HEX: &str = include_str!("data/mtls/rsa2048.modulus.hex");
const RSA_CLIENT_CERT_HEADER: &str = include_str!("data/mtls/rsa2048.client-cert-header.txt");
const MULTI_PEM: &str = include_str!("data/mtls/multi-rdn.pem");
const MULTI_X5T: &str = include_str!("data/mtls/multi-rdn.x5t-s256.txt");

fn hex_decode(s: &str) -> Vec<u8> {
    let s = s.trim();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2).expect("hex pair"), 16).expect("hex"))
        .collect()
}

fn multi_der() -> Vec<u8> {
    leaf_from_pem(MULTI_PEM).expect("multi-rdn.pem")
}

// --- M5: thumbprint = base64url(SHA-256(DER)), no padding -------------------------------

#[test]
fn m5_thumbprint_of_der_matches_openssl_vector() {
    let t = thumbprint(RSA_DER).expect("thumbprint");
    assert_eq!(t.to_base64url(), RSA_X5T.trim());
    assert_eq!(X5tS256::from_base64url(RSA_X5T.trim()), Ok(t));
}

#[test]
fn m5_thumbprint_of_second_vector_matches_openssl() {
    assert_eq!(
        thumbprint(&multi_der()).map(|t| t.to_base64url()),
        Ok(MULTI_X5T.trim().to_string())
    );
}

#[test]
fn m5_confirmation_json_carries_the_vector() {
    let cnf = Confirmation::for_certificate(RSA_DER).expect("cnf");
    let json = serde_json::to_string(&cnf).expect("json");
    assert_eq!(json, format!("{{\"x5t#S256\":\"{}\"}}", RSA_X5T.trim()));
}

#[test]
fn m5_thumbprint_over_pem_text_is_rejected() {
    assert_eq!(
        thumbprint(RSA_PEM.as_bytes()),
        Err(MtlsError::BadCertificate)
    );
}

#[test]
fn m5_pem_leaf_is_the_der_vector() {
    assert_eq!(leaf_from_pem(RSA_PEM).as_deref(), Ok(RSA_DER));
}

#[test]
fn m5_cnf_computed_over_pem_text_does_not_match() {
    let cnf = Confirmation {
        x5t_s256: RSA_PEM_TEXT_SHA256.trim().into(),
    };
    assert_eq!(
        check_binding(Some(&cnf), Some(RSA_DER)),
        Err(MtlsError::ThumbprintMismatch)
    );
}

#[test]
fn m5_standard_base64_with_padding_is_rejected() {
    let std = RSA_X5T_STD.trim();
    assert!(std.ends_with('=') && (std.contains('+') || std.contains('/')));
    assert_eq!(
        X5tS256::from_base64url(std),
        Err(MtlsError::BadConfirmation)
    );
    let cnf = Confirmation {
        x5t_s256: std.into(),
    };
    assert_eq!(
        check_binding(Some(&cnf), Some(RSA_DER)),
        Err(MtlsError::BadConfirmation)
    );
}

#[test]
fn m5_standard_base64_without_padding_is_rejected() {
    let cnf = Confirmation {
        x5t_s256: RSA_X5T_STD.trim().trim_end_matches('=').into(),
    };
    assert_eq!(
        check_binding(Some(&cnf), Some(RSA_DER)),
        Err(MtlsError::BadConfirmation)
    );
}

#[test]
fn m1_vector_certificate_does_not_satisfy_other_binding() {
    let cnf = Confirmation {
        x5t_s256: MULTI_X5T.trim().into(),
    };
    assert_eq!(
        check_binding(Some(&cnf), Some(RSA_DER)),
        Err(MtlsError::ThumbprintMismatch)
    );
}

#[test]
fn rfc8705_3_1_vector_binding_passes() {
    let cnf = Confirmation {
        x5t_s256: RSA_X5T.trim().into(),
    };
    let bound = check_binding(Some(&cnf), Some(RSA_DER)).expect("bound");
    assert_eq!(
        bound.binding(),
        Binding::Certificate(thumbprint(RSA_DER).expect("thumbprint"))
    );
    assert!(require_binding(Some(&cnf), Some(RSA_DER)).is_ok());
}

// --- RFC 9440 Client-Cert ----------------------------------------------------------------

#[test]
fn rfc9440_client_cert_vector_decodes_to_der() {
    assert_eq!(
        parse_client_cert_header(RSA_CLIENT_CERT_HEADER).as_deref(),
        Ok(RSA_DER)
    );
}

#[test]
fn m2_rfc9440_client_cert_vector_satisfies_binding() {
    let der = parse_client_cert_header(RSA_CLIENT_CERT_HEADER).expect("header");
    let cnf = Confirmation {
        x5t_s256: RSA_X5T.trim().into(),
    };
    assert!(check_binding(Some(&cnf), Some(&der)).is_ok());
    assert_eq!(
        check_binding(Some(&cnf), None),
        Err(MtlsError::CertificateMissing)
    );
}

// --- RFC 8705 §2.2: RSA public key ------------------------------------------------------

#[test]
fn rsa_public_key_matches_openssl_modulus() {
    let CertPublicKey::Rsa { n, e } = certificate_public_key(RSA_DER).expect("key") else {
        panic!("expected RSA");
    };
    assert_eq!(n, hex_decode(RSA_MODULUS_HEX));
    assert_eq!(n.len(), 256);
    assert_eq!(e, vec![1, 0, 1]);
}

#[test]
fn c16_rsa_self_signed_matches_jwk_with_leading_zero() {
    let mut n = vec![0];
    n.extend(hex_decode(RSA_MODULUS_HEX));
    let registered = CertPublicKey::Rsa {
        n,
        e: vec![0, 1, 0, 1],
    };
    let m = match_self_signed(RSA_DER, &[registered]).expect("match");
    assert_eq!(m.matched_by(), MatchedBy::SelfSignedPublicKey);
}

#[test]
fn c16_rsa_self_signed_with_other_modulus_is_rejected() {
    let mut n = hex_decode(RSA_MODULUS_HEX);
    if let Some(last) = n.last_mut() {
        *last ^= 2;
    }
    let registered = CertPublicKey::rsa(&n, &[1, 0, 1]).expect("rsa");
    assert_eq!(
        match_self_signed(RSA_DER, &[registered]),
        Err(MtlsError::PublicKeyMismatch)
    );
}

#[test]
fn c16_rsa_self_signed_x5c_matches_exact_der() {
    let m = match_self_signed_x5c(RSA_DER, &[multi_der(), RSA_DER.to_vec()]).expect("match");
    assert_eq!(m.matched_by(), MatchedBy::SelfSignedCertificate);
    assert_eq!(
        match_self_signed_x5c(RSA_DER, &[multi_der()]),
        Err(MtlsError::CertificateMismatch)
    );
}

// --- RFC 8705 §2.1.2 against the OpenSSL certificates ------------------------------------

#[test]
fn rsa_vector_matches_each_registered_san_kind() {
    let rules = [
        TlsClientAuthRule::SanDns("RSA-CLIENT.example.com".into()),
        TlsClientAuthRule::SanUri("https://rsa-client.example.com/id".into()),
        TlsClientAuthRule::SanIp("192.0.2.7".parse().expect("ip")),
        TlsClientAuthRule::SanEmail("Client.Ops@example.com".into()),
        TlsClientAuthRule::SubjectDn("CN=rsa-client,O=Heartgate Test,C=US".into()),
    ];
    for rule in rules {
        assert!(match_tls_client_auth(RSA_DER, &rule).is_ok(), "{rule:?}");
    }
}

#[test]
fn c14_rsa_vector_rejects_near_misses() {
    let cases = [
        (
            TlsClientAuthRule::SanDns("rsa-client.example.co".into()),
            MtlsError::SanMismatch,
        ),
        (
            TlsClientAuthRule::SanEmail("client.ops@example.com".into()),
            MtlsError::SanMismatch,
        ),
        (
            TlsClientAuthRule::SubjectDn("C=US,O=Heartgate Test,CN=rsa-client".into()),
            MtlsError::SubjectDnMismatch,
        ),
    ];
    for (rule, want) in cases {
        assert_eq!(match_tls_client_auth(RSA_DER, &rule), Err(want), "{rule:?}");
    }
}

const MULTI_DN: &str = "UID=42+CN=client,OU=Ops,OU=Eng,O=Example\\, Inc.,C=US,DC=Example,DC=org";

fn multi(dn: &str) -> Result<MatchedBy, MtlsError> {
    match_tls_client_auth(&multi_der(), &TlsClientAuthRule::SubjectDn(dn.into()))
        .map(|m| m.matched_by())
}

#[test]
fn c14_multi_valued_rdn_matches_openssl_rfc4514_output() {
    assert_eq!(multi(MULTI_DN), Ok(MatchedBy::SubjectDn));
}

#[test]
fn c14_multi_valued_rdn_is_compared_as_a_set() {
    assert_eq!(
        multi("CN=client+UID=42,OU=Ops,OU=Eng,O=Example\\, Inc.,C=US,DC=Example,DC=org"),
        Ok(MatchedBy::SubjectDn)
    );
}

#[test]
fn c14_multi_valued_rdn_split_into_two_rdns_does_not_match() {
    assert_eq!(
        multi("UID=42,CN=client,OU=Ops,OU=Eng,O=Example\\, Inc.,C=US,DC=Example,DC=org"),
        Err(MtlsError::SubjectDnMismatch)
    );
}

#[test]
fn c14_multi_valued_rdn_with_a_missing_member_does_not_match() {
    assert_eq!(
        multi("CN=client,OU=Ops,OU=Eng,O=Example\\, Inc.,C=US,DC=Example,DC=org"),
        Err(MtlsError::SubjectDnMismatch)
    );
}

#[test]
fn c14_multi_valued_rdn_with_duplicated_member_does_not_match() {
    assert_eq!(
        multi("CN=client+CN=client,OU=Ops,OU=Eng,O=Example\\, Inc.,C=US,DC=Example,DC=org"),
        Err(MtlsError::SubjectDnMismatch)
    );
}

#[test]
fn c14_reordered_repeated_rdns_do_not_match() {
    assert_eq!(
        multi("UID=42+CN=client,OU=Eng,OU=Ops,O=Example\\, Inc.,C=US,DC=Example,DC=org"),
        Err(MtlsError::SubjectDnMismatch)
    );
    assert_eq!(
        multi("UID=42+CN=client,OU=Ops,OU=Eng,O=Example\\, Inc.,C=US,DC=org,DC=Example"),
        Err(MtlsError::SubjectDnMismatch)
    );
}

#[test]
fn c14_multi_rdn_vector_hex_escaped_comma_and_case_match() {
    assert_eq!(
        multi("uid=42+cn=CLIENT,ou=ops,ou=eng,o=example\\2c inc.,c=us,dc=example,dc=ORG"),
        Ok(MatchedBy::SubjectDn)
    );
}

#[test]
fn c14_multi_rdn_vector_comma_is_not_a_separator() {
    // Without the escape the value becomes a new RDN " Inc." (invalid).
    assert_eq!(
        multi("UID=42+CN=client,OU=Ops,OU=Eng,O=Example, Inc.,C=US,DC=Example,DC=org"),
        Err(MtlsError::InvalidRegisteredDn)
    );
    // "O=Example,O=Inc." is two RDNs, never "Example, Inc.".
    assert_eq!(
        multi("UID=42+CN=client,OU=Ops,OU=Eng,O=Inc.,O=Example,C=US,DC=Example,DC=org"),
        Err(MtlsError::SubjectDnMismatch)
    );
}

#[test]
fn registered_dn_can_be_validated_at_registration() {
    assert!(SubjectDn::parse(MULTI_DN).is_ok());
    assert_eq!(
        SubjectDn::parse("CN=client\\00").map(|_| ()),
        Err(MtlsError::InvalidRegisteredDn)
    );
}

#[test]
fn c16_self_signed_client_matches_its_registered_jwks_key_only() {
    use heartgate_core::jose::{JwkSet, JwkSetOptions, VerifyingKey};
    use heartgate_core::mtls::match_self_signed_jwks;
    let ck = rcgen::generate_simple_self_signed(vec!["client.example".to_owned()]).unwrap();
    let der = ck.cert.der().to_vec();
    // The registered JWK is the certificate's own P-256 key.
    let point = ck.signing_key.public_key_raw().to_vec();
    let registered = JwkSet::new(vec![
        VerifyingKey::from_ec_point("k1".into(), &point).unwrap()
    ])
    .unwrap();
    let json = registered.to_json();
    let parsed = JwkSet::from_json(json.as_bytes(), &JwkSetOptions::default()).unwrap();
    assert!(match_self_signed_jwks(&der, &parsed).is_ok());
    // Another certificate with another key is refused.
    let other = rcgen::generate_simple_self_signed(vec!["client.example".to_owned()]).unwrap();
    assert_eq!(
        match_self_signed_jwks(other.cert.der(), &parsed).unwrap_err(),
        MtlsError::PublicKeyMismatch
    );
}

/// RFC 8705 §2.2 with a registered `x5c`: the set's leaf certificate matches itself (its
/// digest is taken when the set is read), and only itself.
#[test]
fn c16_a_jwks_x5c_leaf_matches_exactly_that_certificate() {
    use base64::Engine as _;
    use heartgate_core::jose::{JwkSet, JwkSetOptions};
    use heartgate_core::mtls::{match_self_signed_jwks, MatchedBy, X5tS256};
    let registered = rcgen::generate_simple_self_signed(vec!["client.example".to_owned()]).unwrap();
    let der = registered.cert.der().to_vec();
    // The JWK's own key is another certificate's: only the x5c can match.
    let other = rcgen::generate_simple_self_signed(vec!["x.example".to_owned()]).unwrap();
    let point = other.signing_key.public_key_raw().to_vec();
    let (x, y) = point[1..].split_at(32);
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = format!(
        r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"k1","x":"{}","y":"{}","x5c":["{}"]}}]}}"#,
        b64(x),
        b64(y),
        base64::engine::general_purpose::STANDARD.encode(&der)
    );
    let set = JwkSet::from_json(jwks.as_bytes(), &JwkSetOptions::default()).unwrap();
    assert_eq!(
        set.leaf_certificate_sha256(0)
            .map(|d| X5tS256(*d).to_base64url()),
        Some(X5tS256::of_certificate(&der).unwrap().to_base64url())
    );
    assert_eq!(set.leaf_certificate_sha256(1), None);
    let m = match_self_signed_jwks(&der, &set).expect("the registered x5c leaf");
    assert_eq!(m.matched_by(), MatchedBy::SelfSignedCertificate);
    // A certificate of the same subject with another key is neither the leaf nor the key.
    let stranger = rcgen::generate_simple_self_signed(vec!["client.example".to_owned()]).unwrap();
    assert_eq!(
        match_self_signed_jwks(stranger.cert.der(), &set).unwrap_err(),
        MtlsError::PublicKeyMismatch
    );
}
