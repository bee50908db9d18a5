//! Test certificates made with `rcgen` (ring backend). Test-only.
#![allow(clippy::expect_used, reason = "test setup failures should panic")]

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, SanType,
    SignatureAlgorithm,
};

/// A generated certificate: DER and PEM of the same bytes.
pub(crate) struct TestCert {
    pub der: Vec<u8>,
    pub pem: String,
}

/// Parameters with an empty subject and no SANs (rcgen's default CN is removed).
pub(crate) fn bare_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
}

/// Self-signs `params` with a fresh key of `alg`.
pub(crate) fn self_signed(
    params: &CertificateParams,
    alg: &'static SignatureAlgorithm,
) -> TestCert {
    let key = KeyPair::generate_for(alg).expect("key generation");
    let cert = params.self_signed(&key).expect("self-sign");
    TestCert {
        der: cert.der().to_vec(),
        pem: cert.pem(),
    }
}

/// Self-signs `params` with `key`.
pub(crate) fn self_signed_with(params: &CertificateParams, key: &KeyPair) -> TestCert {
    let cert = params.self_signed(key).expect("self-sign");
    TestCert {
        der: cert.der().to_vec(),
        pem: cert.pem(),
    }
}

/// A self-signed P-256 certificate with one DNS SAN and `CN=<dns>`.
pub(crate) fn p256_cert(dns: &str) -> TestCert {
    let mut params = bare_params();
    params.distinguished_name.push(DnType::CommonName, dns);
    params.subject_alt_names = vec![SanType::DnsName(
        dns.to_string().try_into().expect("IA5 DNS name"),
    )];
    self_signed(&params, &rcgen::PKCS_ECDSA_P256_SHA256)
}

/// A CA certificate and a leaf (`CN=leaf`) it signed, both P-256.
pub(crate) fn ca_and_leaf() -> (TestCert, TestCert) {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ca key");
    let mut ca_params = bare_params();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Test Intermediate CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca self-sign");
    let ca = TestCert {
        der: ca_cert.der().to_vec(),
        pem: ca_cert.pem(),
    };

    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("leaf key");
    let mut leaf_params = bare_params();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "leaf");
    let leaf_cert = leaf_params
        .signed_by(&leaf_key, &issuer)
        .expect("leaf signed");
    let leaf = TestCert {
        der: leaf_cert.der().to_vec(),
        pem: leaf_cert.pem(),
    };
    (ca, leaf)
}

/// A self-signed P-256 certificate whose subject is built by `build` (RDNs in ASN.1 order).
pub(crate) fn cert_with_subject(build: impl FnOnce(&mut DistinguishedName)) -> TestCert {
    let mut params = bare_params();
    build(&mut params.distinguished_name);
    self_signed(&params, &rcgen::PKCS_ECDSA_P256_SHA256)
}

/// A self-signed P-256 certificate with these SANs.
pub(crate) fn cert_with_sans(sans: Vec<SanType>) -> TestCert {
    let mut params = bare_params();
    params
        .distinguished_name
        .push(DnType::CommonName, "san-test");
    params.subject_alt_names = sans;
    self_signed(&params, &rcgen::PKCS_ECDSA_P256_SHA256)
}
