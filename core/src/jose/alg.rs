//! JWS algorithms heartgate signs and verifies, and allow-lists of them per context.
//!
//! There is deliberately no HMAC and no `none` (J1, J2): a verifier for them does not
//! exist, so no header can select one. Which of these algorithms a context accepts is an
//! [`AlgorithmSet`] chosen by the caller's profile (SPECS.md b.12), never by the token.
//!
//! ES384 and RS384 exist for one reason: SMART App Launch asks the AS to validate client
//! assertions signed with them (SPECS.md b.2 item 10). Only the SMART profiles allow them
//! ([`AlgorithmSet::SMART`]); HEART and FAPI 2.0 do not.

use super::JoseError;

/// A JWS signature algorithm (RFC 7518 §3, RFC 8037 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// ECDSA P-256 with SHA-256, fixed-length r‖s signatures.
    ES256,
    /// RSASSA-PSS with SHA-256 and MGF1-SHA-256, salt length 32.
    PS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (HEART, SMART, RFC 9068 interop; not FAPI 2.0).
    RS256,
    /// EdDSA over Ed25519.
    EdDSA,
    /// ECDSA P-384 with SHA-384, fixed-length r‖s signatures (SMART client assertions).
    ES384,
    /// RSASSA-PKCS1-v1_5 with SHA-384 (SMART client assertions).
    RS384,
}

impl Algorithm {
    /// Every algorithm heartgate implements.
    pub const ALL: [Algorithm; 6] = [
        Algorithm::ES256,
        Algorithm::PS256,
        Algorithm::RS256,
        Algorithm::EdDSA,
        Algorithm::ES384,
        Algorithm::RS384,
    ];

    /// The JOSE name, as in the `alg` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::ES256 => "ES256",
            Algorithm::PS256 => "PS256",
            Algorithm::RS256 => "RS256",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::ES384 => "ES384",
            Algorithm::RS384 => "RS384",
        }
    }

    /// Parse an `alg` value. Names are case-sensitive (RFC 7515 §4.1.1); any spelling of
    /// `none` gets its own error so that audits can tell the attack apart (J1).
    pub fn from_name(name: &str) -> Result<Self, JoseError> {
        match name {
            "ES256" => Ok(Algorithm::ES256),
            "PS256" => Ok(Algorithm::PS256),
            "RS256" => Ok(Algorithm::RS256),
            "EdDSA" => Ok(Algorithm::EdDSA),
            "ES384" => Ok(Algorithm::ES384),
            "RS384" => Ok(Algorithm::RS384),
            n if n.eq_ignore_ascii_case("none") => Err(JoseError::AlgNone),
            _ => Err(JoseError::UnsupportedAlgorithm),
        }
    }

    const fn bit(self) -> u8 {
        match self {
            Algorithm::ES256 => 1,
            Algorithm::PS256 => 2,
            Algorithm::RS256 => 4,
            Algorithm::EdDSA => 8,
            Algorithm::ES384 => 16,
            Algorithm::RS384 => 32,
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of algorithms a context accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AlgorithmSet(u8);

impl AlgorithmSet {
    /// The empty set.
    pub const NONE: AlgorithmSet = AlgorithmSet(0);
    /// Every implemented algorithm, [`Algorithm::ALL`]. For verifiers whose keys alone
    /// decide (an access-token validator checks the AS's own published keys); a profile
    /// names its own set instead, so that a new algorithm never joins a profile unseen.
    pub const ALL: AlgorithmSet = AlgorithmSet(1 | 2 | 4 | 8 | 16 | 32);
    /// FAPI 2.0 Security Profile §5.4.1: PS256, ES256, EdDSA; never RS256, ES384, RS384.
    pub const FAPI2: AlgorithmSet = AlgorithmSet::NONE
        .with(Algorithm::PS256)
        .with(Algorithm::ES256)
        .with(Algorithm::EdDSA);
    /// HEART: ES256, PS256, EdDSA and RS256 (RS256 is a HEART MUST, and RFC 9068 interop
    /// needs it); not ES384 or RS384.
    pub const HEART: AlgorithmSet = AlgorithmSet::FAPI2.with(Algorithm::RS256);
    /// SMART App Launch v2 and Backend Services: the HEART set plus ES384 and RS384, which
    /// the AS must validate in client assertions (SPECS.md b.2 item 10).
    pub const SMART: AlgorithmSet = AlgorithmSet::HEART
        .with(Algorithm::ES384)
        .with(Algorithm::RS384);

    /// A set of the given algorithms.
    pub fn of(algs: &[Algorithm]) -> Self {
        AlgorithmSet(algs.iter().fold(0, |acc, a| acc | a.bit()))
    }

    /// Whether `alg` is in the set.
    pub fn contains(self, alg: Algorithm) -> bool {
        self.0 & alg.bit() != 0
    }

    /// The set with `alg` added.
    pub const fn with(self, alg: Algorithm) -> Self {
        AlgorithmSet(self.0 | alg.bit())
    }

    /// The algorithms in the set, in [`Algorithm::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Algorithm> {
        Algorithm::ALL
            .into_iter()
            .filter(move |a| self.contains(*a))
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn j1_every_spelling_of_none_is_alg_none() {
        for n in ["none", "None", "NONE", "nOnE"] {
            assert_eq!(Algorithm::from_name(n), Err(JoseError::AlgNone));
        }
    }

    #[test]
    fn j2_j3_hmac_and_unimplemented_algorithms_do_not_parse() {
        for n in [
            "HS256", "HS512", "ES512", "PS384", "Ed448", "es256", "RS256 ", "",
        ] {
            assert_eq!(
                Algorithm::from_name(n),
                Err(JoseError::UnsupportedAlgorithm),
                "{n}"
            );
        }
    }

    #[test]
    fn every_algorithm_name_round_trips_and_has_its_own_bit() {
        let mut seen = AlgorithmSet::NONE;
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(a.as_str()), Ok(a));
            assert_eq!(a.to_string(), a.as_str());
            assert!(!seen.contains(a), "{a} shares a bit");
            seen = seen.with(a);
        }
        assert_eq!(seen, AlgorithmSet::ALL);
        assert_eq!(AlgorithmSet::ALL.iter().count(), Algorithm::ALL.len());
    }

    #[test]
    fn fapi2_set_excludes_rs256() {
        assert!(!AlgorithmSet::FAPI2.contains(Algorithm::RS256));
        assert!(AlgorithmSet::FAPI2.contains(Algorithm::PS256));
        assert_eq!(AlgorithmSet::FAPI2.iter().count(), 3);
        assert_eq!(
            AlgorithmSet::of(&[Algorithm::RS256])
                .with(Algorithm::EdDSA)
                .iter()
                .count(),
            2
        );
    }

    #[test]
    fn es384_and_rs384_are_in_all_and_smart_but_not_heart_or_fapi2() {
        // SPECS.md b.2 item 10, b.12: the 384-bit pair is for SMART client assertions only.
        for a in [Algorithm::ES384, Algorithm::RS384] {
            assert!(AlgorithmSet::ALL.contains(a), "{a}");
            assert!(AlgorithmSet::SMART.contains(a), "{a}");
            assert!(!AlgorithmSet::HEART.contains(a), "{a}");
            assert!(!AlgorithmSet::FAPI2.contains(a), "{a}");
        }
        assert_eq!(
            AlgorithmSet::FAPI2.iter().collect::<Vec<_>>(),
            [Algorithm::ES256, Algorithm::PS256, Algorithm::EdDSA]
        );
        assert_eq!(
            AlgorithmSet::HEART.iter().collect::<Vec<_>>(),
            [
                Algorithm::ES256,
                Algorithm::PS256,
                Algorithm::RS256,
                Algorithm::EdDSA
            ]
        );
        assert_eq!(
            AlgorithmSet::SMART,
            AlgorithmSet::HEART
                .with(Algorithm::ES384)
                .with(Algorithm::RS384)
        );
        assert_eq!(
            Algorithm::from_name("es384"),
            Err(JoseError::UnsupportedAlgorithm)
        );
        assert_eq!(
            Algorithm::from_name("RS384 "),
            Err(JoseError::UnsupportedAlgorithm)
        );
    }
}
