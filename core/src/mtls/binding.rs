//! Sender constraint: is a certificate-bound token presented with its certificate?
//! (RFC 8705 §3.1 at the resource server, §3.2 for introspection responses.)

use subtle::ConstantTimeEq;

use super::thumbprint::{thumbprint, Confirmation, X5tS256};
use super::MtlsError;

/// What a passed binding check established. Plain data; the proof is [`Bound`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// The token carries no `cnf`: it is a bearer token, not sender-constrained.
    NotBound,
    /// The token is bound to this certificate and the caller presented it.
    Certificate(X5tS256),
}

/// Proof that [`check_binding`] ran and passed. Only this module can construct it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    binding: Binding,
}

impl Bound {
    /// What the check established.
    pub fn binding(&self) -> Binding {
        self.binding
    }

    /// The thumbprint the token is bound to, if it is bound.
    pub fn certificate_thumbprint(&self) -> Option<X5tS256> {
        match self.binding {
            Binding::NotBound => None,
            Binding::Certificate(t) => Some(t),
        }
    }
}

/// Proof that [`require_binding`] ran and passed: the token **is** certificate-bound and the
/// caller presented that certificate. Only this module can construct it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateBound {
    x5t_s256: X5tS256,
}

impl CertificateBound {
    /// The thumbprint of the presented (and bound) certificate.
    pub fn thumbprint(&self) -> X5tS256 {
        self.x5t_s256
    }

    /// The `cnf` claim to carry forward, e.g. into a refreshed or wrapped token.
    pub fn confirmation(&self) -> Confirmation {
        Confirmation::from_thumbprint(self.x5t_s256)
    }
}

impl From<CertificateBound> for Bound {
    fn from(proof: CertificateBound) -> Self {
        Bound {
            binding: Binding::Certificate(proof.x5t_s256),
        }
    }
}

/// Checks the sender constraint of a token (RFC 8705 §3.1).
///
/// * `cnf` absent: the token is not bound; returns [`Binding::NotBound`] whatever the
///   caller presented. Use [`require_binding`] where the profile demands sender constraint.
/// * `cnf` present: the presented leaf certificate (DER, from the mTLS connection or a
///   trusted `Client-Cert` header) must have exactly that `x5t#S256`; absence
///   ([`MtlsError::CertificateMissing`], M2) and mismatch ([`MtlsError::ThumbprintMismatch`],
///   M1) are errors. The digests are compared in constant time.
pub fn check_binding(
    cnf: Option<&Confirmation>,
    presented_cert_der: Option<&[u8]>,
) -> Result<Bound, MtlsError> {
    match cnf {
        None => Ok(Bound {
            binding: Binding::NotBound,
        }),
        Some(cnf) => require_binding(Some(cnf), presented_cert_der).map(Bound::from),
    }
}

/// Like [`check_binding`], but a token without `cnf` is an error
/// ([`MtlsError::ConfirmationMissing`]): for profiles that require sender-constrained tokens
/// (FAPI 2.0, `tls_client_certificate_bound_access_tokens` clients). A missing `cnf` where one
/// is required is never a pass.
pub fn require_binding(
    cnf: Option<&Confirmation>,
    presented_cert_der: Option<&[u8]>,
) -> Result<CertificateBound, MtlsError> {
    let expected = cnf.ok_or(MtlsError::ConfirmationMissing)?.thumbprint()?;
    let presented = presented_cert_der.ok_or(MtlsError::CertificateMissing)?;
    let actual = thumbprint(presented)?;
    if bool::from(expected.ct_eq(&actual)) {
        Ok(CertificateBound { x5t_s256: actual })
    } else {
        Err(MtlsError::ThumbprintMismatch)
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "test setup failures should panic")]
mod tests {
    use super::*;
    use crate::mtls::test_support::{ca_and_leaf, p256_cert};
    use crate::mtls::thumbprint::leaf_from_pem;

    #[test]
    fn rfc8705_3_1_bound_token_with_its_certificate_passes() {
        let cert = p256_cert("client.example");
        let cnf = Confirmation::for_certificate(&cert.der).expect("cnf");
        let bound = check_binding(Some(&cnf), Some(&cert.der)).expect("bound");
        let t = thumbprint(&cert.der).expect("thumbprint");
        assert_eq!(bound.binding(), Binding::Certificate(t));
        assert_eq!(bound.certificate_thumbprint(), Some(t));
    }

    #[test]
    fn m1_bound_token_with_different_certificate_is_rejected() {
        let bound_to = p256_cert("client.example");
        let other = p256_cert("client.example"); // same names, different key (M7 too)
        let cnf = Confirmation::for_certificate(&bound_to.der).expect("cnf");
        assert_eq!(
            check_binding(Some(&cnf), Some(&other.der)),
            Err(MtlsError::ThumbprintMismatch)
        );
    }

    #[test]
    fn m2_bound_token_without_certificate_is_rejected() {
        let cert = p256_cert("client.example");
        let cnf = Confirmation::for_certificate(&cert.der).expect("cnf");
        assert_eq!(
            check_binding(Some(&cnf), None),
            Err(MtlsError::CertificateMissing)
        );
    }

    #[test]
    fn bound_token_with_unparseable_certificate_is_rejected() {
        let cert = p256_cert("client.example");
        let cnf = Confirmation::for_certificate(&cert.der).expect("cnf");
        assert_eq!(
            check_binding(Some(&cnf), Some(b"garbage")),
            Err(MtlsError::BadCertificate)
        );
    }

    #[test]
    fn m5_bound_token_presented_with_pem_text_is_rejected() {
        let cert = p256_cert("client.example");
        let cnf = Confirmation::for_certificate(&cert.der).expect("cnf");
        assert_eq!(
            check_binding(Some(&cnf), Some(cert.pem.as_bytes())),
            Err(MtlsError::BadCertificate)
        );
    }

    #[test]
    fn m5_cnf_computed_over_pem_text_does_not_match() {
        let cert = p256_cert("client.example");
        let wrong = Confirmation::from_thumbprint(X5tS256::digest_of(cert.pem.as_bytes()));
        assert_eq!(
            check_binding(Some(&wrong), Some(&cert.der)),
            Err(MtlsError::ThumbprintMismatch)
        );
    }

    #[test]
    fn m5_cnf_in_standard_base64_with_padding_is_rejected() {
        use base64::Engine as _;
        let cert = p256_cert("client.example");
        let t = thumbprint(&cert.der).expect("thumbprint");
        let cnf = Confirmation {
            x5t_s256: base64::engine::general_purpose::STANDARD.encode(t.as_bytes()),
        };
        assert_eq!(
            check_binding(Some(&cnf), Some(&cert.der)),
            Err(MtlsError::BadConfirmation)
        );
    }

    #[test]
    fn m5_cnf_with_hex_digest_is_rejected() {
        let cert = p256_cert("client.example");
        let hex: String = thumbprint(&cert.der)
            .expect("thumbprint")
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let cnf = Confirmation { x5t_s256: hex };
        assert_eq!(
            check_binding(Some(&cnf), Some(&cert.der)),
            Err(MtlsError::BadConfirmation)
        );
    }

    #[test]
    fn m6_token_bound_to_leaf_rejects_the_intermediate() {
        let (ca, leaf) = ca_and_leaf();
        let cnf = Confirmation::for_certificate(&leaf.der).expect("cnf");
        assert_eq!(
            check_binding(Some(&cnf), Some(&ca.der)),
            Err(MtlsError::ThumbprintMismatch)
        );
    }

    #[test]
    fn m6_token_bound_to_intermediate_rejects_the_leaf() {
        let (ca, leaf) = ca_and_leaf();
        let cnf = Confirmation::for_certificate(&ca.der).expect("cnf");
        assert_eq!(
            check_binding(Some(&cnf), Some(&leaf.der)),
            Err(MtlsError::ThumbprintMismatch)
        );
    }

    #[test]
    fn m6_binding_uses_leaf_of_pem_chain() {
        let (ca, leaf) = ca_and_leaf();
        let cnf = Confirmation::for_certificate(&leaf.der).expect("cnf");
        let presented = leaf_from_pem(&format!("{}{}", leaf.pem, ca.pem)).expect("leaf");
        assert!(check_binding(Some(&cnf), Some(&presented)).is_ok());
    }

    #[test]
    fn m6_chain_with_intermediate_first_does_not_match_the_leaf_binding() {
        let (ca, leaf) = ca_and_leaf();
        let cnf = Confirmation::for_certificate(&leaf.der).expect("cnf");
        let presented = leaf_from_pem(&format!("{}{}", ca.pem, leaf.pem)).expect("first");
        assert_eq!(
            check_binding(Some(&cnf), Some(&presented)),
            Err(MtlsError::ThumbprintMismatch)
        );
    }

    #[test]
    fn unbound_token_is_not_bound_with_or_without_certificate() {
        let cert = p256_cert("client.example");
        for presented in [None, Some(cert.der.as_slice())] {
            let bound = check_binding(None, presented).expect("unbound passes");
            assert_eq!(bound.binding(), Binding::NotBound);
            assert_eq!(bound.certificate_thumbprint(), None);
        }
    }

    #[test]
    fn require_binding_rejects_token_without_cnf() {
        let cert = p256_cert("client.example");
        assert_eq!(
            require_binding(None, Some(&cert.der)),
            Err(MtlsError::ConfirmationMissing)
        );
    }

    #[test]
    fn require_binding_passes_with_bound_certificate() {
        let cert = p256_cert("client.example");
        let cnf = Confirmation::for_certificate(&cert.der).expect("cnf");
        let proof = require_binding(Some(&cnf), Some(&cert.der)).expect("bound");
        assert_eq!(proof.confirmation(), cnf);
        assert_eq!(Some(proof.thumbprint()), cnf.thumbprint().ok());
    }

    #[test]
    fn require_binding_rejects_missing_certificate() {
        let cert = p256_cert("client.example");
        let cnf = Confirmation::for_certificate(&cert.der).expect("cnf");
        assert_eq!(
            require_binding(Some(&cnf), None),
            Err(MtlsError::CertificateMissing)
        );
    }
}
