//! PKCE (RFC 7636) with `S256` only: SMART App Launch v2 forbids `plain` and FAPI 2.0
//! §5.3.2.2 requires S256. The challenge is exactly the base64url of a SHA-256 digest
//! (43 characters); the verifier is 43–128 characters of `[A-Za-z0-9-._~]` (§4.1).
//! Comparison is constant time.

use ring::digest;
use subtle::ConstantTimeEq;

use crate::jose::b64;

/// Why PKCE input was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PkceError {
    /// No `code_challenge` in the authorization request (P9) → `invalid_request`.
    #[error("code_challenge missing")]
    MissingChallenge,
    /// `code_challenge_method` other than `S256` (`plain`, absent...) (P9) → `invalid_request`.
    #[error("code_challenge_method must be S256")]
    UnsupportedMethod,
    /// The challenge is not 43 base64url characters of a SHA-256 digest (P9) → `invalid_request`.
    #[error("malformed code_challenge")]
    MalformedChallenge,
    /// No `code_verifier` at the token endpoint (A5) → `invalid_grant`.
    #[error("code_verifier missing")]
    MissingVerifier,
    /// A verifier of the wrong length or alphabet (A5) → `invalid_grant`.
    #[error("malformed code_verifier")]
    MalformedVerifier,
    /// The verifier does not hash to the challenge (A5, A7) → `invalid_grant`.
    #[error("code_verifier does not match")]
    Mismatch,
    /// A verifier sent for a code issued without a challenge (A6, RFC 9700 §4.8.2).
    #[error("code_verifier without a challenge")]
    Downgrade,
}

/// A checked S256 code challenge, as stored with the authorization request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CodeChallenge(String);

impl CodeChallenge {
    /// Check `code_challenge` and `code_challenge_method` from an authorization request.
    pub fn parse(challenge: Option<&str>, method: Option<&str>) -> Result<Self, PkceError> {
        let challenge = challenge.ok_or(PkceError::MissingChallenge)?;
        if method != Some("S256") {
            return Err(PkceError::UnsupportedMethod);
        }
        if challenge.len() != 43 || b64::decode_array::<32>(challenge).is_err() {
            return Err(PkceError::MalformedChallenge);
        }
        Ok(CodeChallenge(challenge.to_owned()))
    }

    /// The challenge for `verifier` (for clients and tests).
    pub fn for_verifier(verifier: &str) -> Self {
        CodeChallenge(b64::encode(digest::digest(
            &digest::SHA256,
            verifier.as_bytes(),
        )))
    }

    /// The challenge string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Check `code_verifier` from the token request against this challenge.
    pub fn verify(&self, verifier: Option<&str>) -> Result<(), PkceError> {
        let verifier = verifier.ok_or(PkceError::MissingVerifier)?;
        check_verifier(verifier)?;
        let computed = b64::encode(digest::digest(&digest::SHA256, verifier.as_bytes()));
        if bool::from(computed.as_bytes().ct_eq(self.0.as_bytes())) {
            Ok(())
        } else {
            Err(PkceError::Mismatch)
        }
    }
}

/// RFC 7636 §4.1: 43–128 characters of the unreserved set.
pub fn check_verifier(verifier: &str) -> Result<(), PkceError> {
    let ok = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if ok {
        Ok(())
    } else {
        Err(PkceError::MalformedVerifier)
    }
}

/// The token-endpoint check for a code: with a stored challenge the verifier must match;
/// without one, a verifier is a downgrade attempt (A6).
pub fn verify_for_code(
    challenge: Option<&CodeChallenge>,
    verifier: Option<&str>,
) -> Result<(), PkceError> {
    match (challenge, verifier) {
        (Some(c), v) => c.verify(v),
        (None, Some(_)) => Err(PkceError::Downgrade),
        (None, None) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636 Appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc7636_appendix_b_vector() {
        assert_eq!(CodeChallenge::for_verifier(VERIFIER).as_str(), CHALLENGE);
        let c = CodeChallenge::parse(Some(CHALLENGE), Some("S256")).unwrap();
        assert_eq!(c.verify(Some(VERIFIER)), Ok(()));
    }

    #[test]
    fn p9_missing_challenge_plain_method_and_malformed_challenges_are_refused() {
        assert_eq!(
            CodeChallenge::parse(None, Some("S256")),
            Err(PkceError::MissingChallenge)
        );
        for m in [None, Some("plain"), Some("s256"), Some("S512")] {
            assert_eq!(
                CodeChallenge::parse(Some(CHALLENGE), m),
                Err(PkceError::UnsupportedMethod),
                "{m:?}"
            );
        }
        for bad in [
            &CHALLENGE[..42],
            &format!("{CHALLENGE}A"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN",
        ] {
            assert_eq!(
                CodeChallenge::parse(Some(bad), Some("S256")),
                Err(PkceError::MalformedChallenge),
                "{bad}"
            );
        }
    }

    #[test]
    fn a5_missing_wrong_and_malformed_verifiers_are_refused() {
        let c = CodeChallenge::parse(Some(CHALLENGE), Some("S256")).unwrap();
        assert_eq!(c.verify(None), Err(PkceError::MissingVerifier));
        assert_eq!(c.verify(Some(&"a".repeat(43))), Err(PkceError::Mismatch));
        assert_eq!(
            c.verify(Some(&"a".repeat(42))),
            Err(PkceError::MalformedVerifier)
        );
        assert_eq!(
            c.verify(Some(&"a".repeat(129))),
            Err(PkceError::MalformedVerifier)
        );
        assert_eq!(
            c.verify(Some(&format!("{}+", "a".repeat(43)))),
            Err(PkceError::MalformedVerifier)
        );
        assert!(check_verifier(&"a~._-".repeat(20)).is_ok());
    }

    #[test]
    fn a7_stolen_code_with_the_attackers_verifier_fails() {
        let victim = CodeChallenge::for_verifier(VERIFIER);
        let attacker = "attacker-verifier-attacker-verifier-attacker";
        assert_eq!(victim.verify(Some(attacker)), Err(PkceError::Mismatch));
    }

    #[test]
    fn a6_verifier_for_a_code_without_challenge_is_a_downgrade() {
        assert_eq!(
            verify_for_code(None, Some(VERIFIER)),
            Err(PkceError::Downgrade)
        );
        assert_eq!(verify_for_code(None, None), Ok(()));
        let c = CodeChallenge::for_verifier(VERIFIER);
        assert_eq!(
            verify_for_code(Some(&c), None),
            Err(PkceError::MissingVerifier)
        );
        assert_eq!(verify_for_code(Some(&c), Some(VERIFIER)), Ok(()));
    }
}
