//! Client profiles: HEART, SMART App Launch v2 (apps and Backend Services), FAPI 2.0
//! Security Profile and FAPI 2.0 Message Signing.
//!
//! The profiles disagree (SPECS.md b.12): RS256 is a MUST for HEART and forbidden by
//! FAPI 2.0; SMART asks the AS to validate ES384 or RS384 client assertions, which
//! neither HEART nor FAPI 2.0 lists; FAPI 2.0 forbids refresh-token rotation that HEART and
//! RFC 9700 recommend for public clients; SMART Backend Services wants 5-minute tokens. heartgate resolves
//! each conflict per client, never globally: a client names its profile at registration,
//! and every request of that client is judged by the [`ProfilePolicy`] of that profile.

use serde::{Deserialize, Serialize};

use crate::jose::AlgorithmSet;
use crate::token::RefreshPolicy;

/// The profile a client is registered under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// HEART OAuth 2.0 profile (openid-heart-oauth2-1_0).
    Heart,
    /// SMART App Launch v2, user-facing apps.
    Smart,
    /// SMART Backend Services (client_credentials, `system/` scopes).
    SmartBackend,
    /// FAPI 2.0 Security Profile.
    Fapi2Security,
    /// FAPI 2.0 Message Signing (signed requests and responses on top of Security).
    Fapi2MessageSigning,
}

/// Which `aud` values a client assertion may carry (C2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionAudience {
    /// The issuer identifier, the token endpoint URL or the PAR endpoint URL, as a string
    /// or in an array (RFC 7523 §3, RFC 9126 §2).
    IssuerOrEndpoint,
    /// Only the issuer identifier, and only as a JSON string (FAPI 2.0 §5.3.2.1 item 7).
    IssuerStringOnly,
}

/// Everything a profile fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfilePolicy {
    /// Algorithms accepted for client-signed JWTs (assertions, request objects) and for
    /// the client's registered keys, and the ones a client may register for AS-signed
    /// responses. The AS itself always signs with its own active key's algorithm, whatever
    /// this set holds.
    pub algorithms: AlgorithmSet,
    /// Longest access-token lifetime, seconds.
    pub max_access_token_lifetime: u32,
    /// Default access-token lifetime, seconds.
    pub default_access_token_lifetime: u32,
    /// Refresh-token lifetime, seconds; `None` means no refresh tokens at all.
    pub refresh_token_lifetime: Option<u32>,
    /// Authorization-code lifetime, seconds (≤ 60, FAPI 2.0 §5.3.2.1 item 10).
    pub code_lifetime: u32,
    /// Authorization requests must arrive through PAR (FAPI 2.0 §5.3.2.2 item 14).
    pub par_required: bool,
    /// PKCE with S256 is required (always; `plain` is never supported, SMART).
    pub pkce_required: bool,
    /// Request objects must be signed (FAPI 2.0 Message Signing §5.3.1).
    pub signed_request_object_required: bool,
    /// Authorization responses must be JARM (FAPI 2.0 Message Signing §5.4).
    pub jarm_required: bool,
    /// Access tokens must be sender-constrained (FAPI 2.0 §5.3.2.1 item 4).
    pub sender_constraint_required: bool,
    /// Public clients (`token_endpoint_auth_method: none`) may register.
    pub public_clients_allowed: bool,
    /// The client-assertion `aud` rule.
    pub assertion_audience: AssertionAudience,
    /// Longest client-assertion lifetime (`exp − iat`), seconds.
    pub max_assertion_lifetime: u32,
    /// Longest request-object lifetime (`exp − nbf`), seconds.
    pub max_request_object_lifetime: u32,
    /// Refresh behaviour of confidential, sender-constrained clients.
    pub confidential_refresh: RefreshPolicy,
    /// Refresh behaviour of public clients.
    pub public_refresh: RefreshPolicy,
    /// `client_credentials` is the only grant (SMART Backend Services).
    pub client_credentials_only: bool,
    /// Whether the CIBA push delivery mode may be used (FAPI-CIBA forbids it).
    pub ciba_push_allowed: bool,
}

const HOUR: u32 = 3600;

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 5] = [
        Profile::Heart,
        Profile::Smart,
        Profile::SmartBackend,
        Profile::Fapi2Security,
        Profile::Fapi2MessageSigning,
    ];

    /// The name used in client metadata and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Heart => "heart",
            Profile::Smart => "smart",
            Profile::SmartBackend => "smart-backend",
            Profile::Fapi2Security => "fapi2-security",
            Profile::Fapi2MessageSigning => "fapi2-message-signing",
        }
    }

    /// Whether this is one of the FAPI 2.0 profiles.
    pub fn is_fapi(self) -> bool {
        matches!(self, Profile::Fapi2Security | Profile::Fapi2MessageSigning)
    }

    /// The policy of the profile.
    pub fn policy(self) -> ProfilePolicy {
        // Common ground: RFC 9700 and the FAPI/HEART profiles all allow these.
        let base = ProfilePolicy {
            // ES256, PS256, RS256, EdDSA: HEART's set, and the base of SMART's.
            algorithms: AlgorithmSet::HEART,
            max_access_token_lifetime: HOUR,
            default_access_token_lifetime: 600,
            refresh_token_lifetime: Some(24 * HOUR),
            code_lifetime: 60,
            par_required: false,
            pkce_required: true,
            signed_request_object_required: false,
            jarm_required: false,
            sender_constraint_required: false,
            public_clients_allowed: true,
            assertion_audience: AssertionAudience::IssuerOrEndpoint,
            max_assertion_lifetime: 5 * 60,
            max_request_object_lifetime: HOUR,
            confidential_refresh: RefreshPolicy::RotateWithReuseDetection,
            public_refresh: RefreshPolicy::RotateWithReuseDetection,
            client_credentials_only: false,
            ciba_push_allowed: true,
        };
        let fapi = ProfilePolicy {
            // FAPI 2.0 §5.4.1: PS256, ES256, EdDSA only.
            algorithms: AlgorithmSet::FAPI2,
            par_required: true,
            sender_constraint_required: true,
            public_clients_allowed: false,
            assertion_audience: AssertionAudience::IssuerStringOnly,
            // §5.3.2.1 item 8: no rotation for sender-constrained confidential clients.
            confidential_refresh: RefreshPolicy::NoRotation,
            ciba_push_allowed: false,
            ..base
        };
        match self {
            // HEART §4.3: code-flow AT ≤ 1 h, RT ≤ 24 h (client_credentials ≤ 6 h is
            // not exposed: HEART forbids dynamic registration for client_credentials).
            Profile::Heart => base,
            // SMART client-confidential-asymmetric: the AS SHALL validate RS384 or ES384
            // client assertions (SPECS.md b.2 item 10); both are accepted.
            Profile::Smart => ProfilePolicy {
                algorithms: AlgorithmSet::SMART,
                ..base
            },
            // SMART Backend Services: expires_in SHOULD NOT exceed 300, no refresh tokens.
            Profile::SmartBackend => ProfilePolicy {
                algorithms: AlgorithmSet::SMART,
                max_access_token_lifetime: 300,
                default_access_token_lifetime: 300,
                refresh_token_lifetime: None,
                public_clients_allowed: false,
                client_credentials_only: true,
                ..base
            },
            Profile::Fapi2Security => fapi,
            Profile::Fapi2MessageSigning => ProfilePolicy {
                signed_request_object_required: true,
                jarm_required: true,
                ..fapi
            },
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or(UnknownProfile)
    }
}

/// A profile name heartgate does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown profile")]
pub struct UnknownProfile;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::Algorithm;

    #[test]
    fn fapi_profiles_forbid_rs256_heart_and_smart_allow_it() {
        for p in Profile::ALL {
            let rs256 = p.policy().algorithms.contains(Algorithm::RS256);
            assert_eq!(rs256, !p.is_fapi(), "{p:?}");
        }
    }

    #[test]
    fn spec_b2_10_smart_profiles_allow_es384_and_rs384_heart_and_fapi_do_not() {
        for p in Profile::ALL {
            let algs = p.policy().algorithms;
            let smart = matches!(p, Profile::Smart | Profile::SmartBackend);
            for a in [Algorithm::ES384, Algorithm::RS384] {
                assert_eq!(algs.contains(a), smart, "{p:?} {a}");
            }
        }
    }

    #[test]
    fn profile_algorithm_sets_are_exactly_as_specified() {
        // SPECS.md b.12: FAPI 2.0 PS256/ES256/EdDSA only; HEART unchanged by SMART's pair.
        assert_eq!(Profile::Heart.policy().algorithms, AlgorithmSet::HEART);
        assert_eq!(Profile::Smart.policy().algorithms, AlgorithmSet::SMART);
        assert_eq!(
            Profile::SmartBackend.policy().algorithms,
            AlgorithmSet::SMART
        );
        for p in [Profile::Fapi2Security, Profile::Fapi2MessageSigning] {
            assert_eq!(
                p.policy().algorithms.iter().collect::<Vec<_>>(),
                [Algorithm::ES256, Algorithm::PS256, Algorithm::EdDSA]
            );
        }
        assert_eq!(
            AlgorithmSet::HEART.iter().collect::<Vec<_>>(),
            [
                Algorithm::ES256,
                Algorithm::PS256,
                Algorithm::RS256,
                Algorithm::EdDSA
            ]
        );
    }

    #[test]
    fn fapi_requires_par_pkce_and_sender_constraint_and_no_public_clients() {
        for p in [Profile::Fapi2Security, Profile::Fapi2MessageSigning] {
            let pol = p.policy();
            assert!(pol.par_required && pol.pkce_required && pol.sender_constraint_required);
            assert!(!pol.public_clients_allowed);
            assert_eq!(pol.assertion_audience, AssertionAudience::IssuerStringOnly);
            assert_eq!(pol.confidential_refresh, RefreshPolicy::NoRotation);
            assert!(!pol.ciba_push_allowed);
        }
        let ms = Profile::Fapi2MessageSigning.policy();
        assert!(ms.signed_request_object_required && ms.jarm_required);
        let sp = Profile::Fapi2Security.policy();
        assert!(!sp.signed_request_object_required && !sp.jarm_required);
    }

    #[test]
    fn every_profile_keeps_codes_at_most_60s_and_requires_pkce() {
        for p in Profile::ALL {
            assert!(p.policy().code_lifetime <= 60);
            assert!(p.policy().pkce_required);
            assert!(
                p.policy().default_access_token_lifetime <= p.policy().max_access_token_lifetime
            );
        }
    }

    #[test]
    fn smart_backend_is_short_lived_client_credentials_without_refresh() {
        let p = Profile::SmartBackend.policy();
        assert_eq!(p.max_access_token_lifetime, 300);
        assert_eq!(p.refresh_token_lifetime, None);
        assert!(p.client_credentials_only && !p.public_clients_allowed);
    }

    #[test]
    fn heart_caps_access_tokens_at_one_hour_and_refresh_at_24h() {
        let p = Profile::Heart.policy();
        assert_eq!(p.max_access_token_lifetime, 3600);
        assert_eq!(p.refresh_token_lifetime, Some(86_400));
    }

    #[test]
    fn profile_names_round_trip_and_unknown_names_fail() {
        for p in Profile::ALL {
            assert_eq!(p.as_str().parse::<Profile>(), Ok(p));
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        assert_eq!("fapi1".parse::<Profile>(), Err(UnknownProfile));
    }
}
