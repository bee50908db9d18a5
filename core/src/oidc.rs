//! OpenID Connect ID tokens (OIDC Core §2, §3.1.3.6) and pairwise subject identifiers
//! (§8.1).
//!
//! An ID token is issued with the tokens of an authorization-code grant whose scope holds
//! `openid`: `iss`, `sub`, `aud` = client_id, `exp`, `iat`, `auth_time`, `nonce` when the
//! request had one, `acr` when known, `azp`, and SMART's `fhirUser` when granted. It lives
//! [`ID_TOKEN_LIFETIME`] seconds (iGov, inherited by HEART: "SHOULD have an active
//! lifetime no longer than five minutes") and is signed with the AS's active key; a client
//! that registered `id_token_signed_response_alg` for another algorithm is refused, as for
//! JARM.
//!
//! Pairwise `sub` (clients with `subject_type: pairwise`): HMAC-SHA-256 under a server
//! secret of (sector, local subject), base64url — stable for one sector, unlinkable across
//! sectors without the secret. The sector is the host of the client's redirect URIs
//! ([`crate::client::ClientMetadata::sector_identifier`]).

use ring::hmac;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::client::{ClientMetadata, SubjectType};
use crate::clock::UnixTime;
use crate::jose::{b64, sign_jwt, Algorithm, KeyRing};

/// Lifetime of ID tokens, seconds (iGov / HEART: at most five minutes).
pub const ID_TOKEN_LIFETIME: i64 = 300;

/// Smallest pairwise secret accepted, bytes (256 bits).
pub const MIN_PAIRWISE_SECRET_LEN: usize = 32;

/// Why an ID token was not issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdTokenError {
    /// The client registered an `id_token_signed_response_alg` the AS has no active key
    /// for.
    #[error("no signing key for the client's id_token_signed_response_alg")]
    Algorithm,
    /// A pairwise client, but the server has no pairwise secret, or the client no sector.
    #[error("pairwise subject not available")]
    Pairwise,
    /// Signing failed.
    #[error("signing failed")]
    Signing,
}

/// The server secret behind pairwise subject identifiers. Losing or changing it changes
/// every pairwise `sub`, so it is configuration, kept like a signing key.
pub struct PairwiseSubjects {
    key: hmac::Key,
}

impl std::fmt::Debug for PairwiseSubjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairwiseSubjects([redacted])")
    }
}

impl PairwiseSubjects {
    /// From a secret of at least [`MIN_PAIRWISE_SECRET_LEN`] bytes; `None` if shorter.
    pub fn new(secret: &[u8]) -> Option<Self> {
        if secret.len() < MIN_PAIRWISE_SECRET_LEN {
            return None;
        }
        let secret = Zeroizing::new(secret.to_vec());
        Some(PairwiseSubjects {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        })
    }

    /// The pairwise `sub` of `local_sub` for `sector`. Both are length-prefixed, so no
    /// (sector, sub) pair can be spelled as another.
    pub fn subject(&self, sector: &str, local_sub: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        for part in [sector, local_sub] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        b64::encode(ctx.sign().as_ref())
    }

    /// The pseudonym of a person in the audit log (`kind` is `subject` or `patient`):
    /// stable, so one person's events can be followed by someone holding the secret, and
    /// unlinkable to any client's pairwise `sub` (its own sector label).
    pub fn audit_ref(&self, kind: &str, value: &str) -> String {
        self.subject(&format!("heartgate-audit:{kind}"), value)
    }

    /// The `sub` this client sees for `local_sub`: pairwise for pairwise clients, the
    /// local subject otherwise.
    pub fn for_client(
        pairwise: Option<&PairwiseSubjects>,
        client: &ClientMetadata,
        local_sub: &str,
    ) -> Result<String, IdTokenError> {
        match client.subject_type {
            SubjectType::Public => Ok(local_sub.to_owned()),
            SubjectType::Pairwise => {
                let p = pairwise.ok_or(IdTokenError::Pairwise)?;
                let sector = client.sector_identifier().ok_or(IdTokenError::Pairwise)?;
                Ok(p.subject(&sector, local_sub))
            }
        }
    }
}

/// What an ID token says about the authentication.
#[derive(Debug, Clone)]
pub struct IdTokenInput<'a> {
    /// The `sub` the client sees (already pairwise where it must be).
    pub sub: &'a str,
    /// When the user authenticated.
    pub auth_time: UnixTime,
    /// The request's `nonce`, echoed exactly.
    pub nonce: Option<&'a str>,
    /// Authentication context class reference.
    pub acr: Option<&'a str>,
    /// SMART `fhirUser`, when the `fhirUser` scope was granted.
    pub fhir_user: Option<&'a str>,
    /// CIBA §10.3.1: the `auth_req_id` the tokens were issued for, as the claim
    /// `urn:openid:params:jwt:claim:auth_req_id`.
    pub auth_req_id: Option<&'a str>,
    /// The access token issued alongside, for `at_hash` (OIDC Core §3.3.2.11; required
    /// in CIBA push mode, CIBA §10.3.1).
    pub access_token: Option<&'a str>,
    /// The refresh token issued alongside, for `urn:openid:params:jwt:claim:rt_hash`
    /// (CIBA §10.3.1).
    pub refresh_token: Option<&'a str>,
}

/// The CIBA claim naming the request an ID token answers (CIBA §10.3.1).
pub const AUTH_REQ_ID_CLAIM: &str = "urn:openid:params:jwt:claim:auth_req_id";
/// The CIBA claim carrying the refresh-token hash (CIBA §10.3.1).
pub const RT_HASH_CLAIM: &str = "urn:openid:params:jwt:claim:rt_hash";

/// OIDC Core §3.3.2.11: base64url of the left half of the hash of `token`, with the hash
/// of the ID token's signing algorithm (SHA-256 for ES256/PS256/RS256, SHA-384 for
/// ES384/RS384, SHA-512 for EdDSA over Ed25519).
pub fn token_hash(alg: Algorithm, token: &str) -> String {
    use ring::digest;
    let h = match alg {
        Algorithm::ES384 | Algorithm::RS384 => &digest::SHA384,
        Algorithm::EdDSA => &digest::SHA512,
        _ => &digest::SHA256,
    };
    let d = digest::digest(h, token.as_bytes());
    let d = d.as_ref();
    b64::encode(&d[..d.len() / 2])
}

/// Sign an ID token for `client` at `now`.
pub fn issue_id_token(
    issuer: &str,
    keys: &KeyRing,
    client: &ClientMetadata,
    input: &IdTokenInput<'_>,
    now: UnixTime,
) -> Result<String, IdTokenError> {
    let state = keys.load();
    let key = state
        .signer_for(client.id_token_signed_response_alg.as_deref())
        .ok_or(IdTokenError::Algorithm)?;
    let mut c = Map::new();
    c.insert("iss".into(), issuer.into());
    c.insert("sub".into(), input.sub.into());
    c.insert("aud".into(), client.client_id.clone().into());
    c.insert("azp".into(), client.client_id.clone().into());
    c.insert("iat".into(), now.secs().into());
    c.insert("exp".into(), (now.secs() + ID_TOKEN_LIFETIME).into());
    c.insert("auth_time".into(), input.auth_time.secs().into());
    if let Some(n) = input.nonce {
        c.insert("nonce".into(), n.into());
    }
    if let Some(a) = input.acr {
        c.insert("acr".into(), a.into());
    }
    if let Some(f) = input.fhir_user {
        c.insert("fhirUser".into(), Value::from(f));
    }
    if let Some(id) = input.auth_req_id {
        c.insert(AUTH_REQ_ID_CLAIM.into(), id.into());
    }
    if let Some(at) = input.access_token {
        c.insert("at_hash".into(), token_hash(key.algorithm(), at).into());
    }
    if let Some(rt) = input.refresh_token {
        c.insert(RT_HASH_CLAIM.into(), token_hash(key.algorithm(), rt).into());
    }
    sign_jwt(key, None, &c).map_err(|_| IdTokenError::Signing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::{verify_jwt, AlgorithmSet, AudienceRule, SigningKey, TypRule, Validation};
    use serde_json::json;

    fn client(extra: Value) -> ClientMetadata {
        let mut v = json!({"client_id": "app", "profile": "smart",
            "redirect_uris": ["https://app.example.com/cb", "https://app.example.com/cb2"],
            "token_endpoint_auth_method": "none"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        ClientMetadata::from_json(v.to_string().as_bytes())
            .unwrap()
            .validate()
            .unwrap()
            .metadata()
            .clone()
    }

    #[test]
    fn id_token_carries_the_oidc_claims_and_lives_five_minutes() {
        let ring = KeyRing::new(SigningKey::generate(Algorithm::ES256).unwrap());
        let now = UnixTime(1_700_000_000);
        let input = IdTokenInput {
            sub: "user-1",
            auth_time: UnixTime(now.secs() - 30),
            nonce: Some("n-0S6_WzA2Mj"),
            acr: Some("urn:mace:incommon:iap:silver"),
            fhir_user: Some("Practitioner/7"),
            auth_req_id: None,
            access_token: None,
            refresh_token: None,
        };
        let jwt = issue_id_token("https://as", &ring, &client(json!({})), &input, now).unwrap();
        let v = Validation::new(
            AlgorithmSet::ALL,
            TypRule::OptionalOneOf(&["JWT"]),
            AudienceRule::ExactString("app".into()),
        )
        .issuer("https://as");
        let c = verify_jwt(&jwt, &**ring.load(), &v, now).unwrap();
        assert_eq!(c.get("sub"), Some(&json!("user-1")));
        assert_eq!(c.get("nonce"), Some(&json!("n-0S6_WzA2Mj")));
        assert_eq!(c.get("auth_time"), Some(&json!(now.secs() - 30)));
        assert_eq!(c.get("acr"), Some(&json!("urn:mace:incommon:iap:silver")));
        assert_eq!(c.get("fhirUser"), Some(&json!("Practitioner/7")));
        assert_eq!(c.get("exp"), Some(&json!(now.secs() + 300)));
        // Expired after five minutes.
        assert!(verify_jwt(&jwt, &**ring.load(), &v, UnixTime(now.secs() + 300 + 61)).is_err());
    }

    #[test]
    fn id_token_refused_for_an_algorithm_the_as_does_not_sign_with() {
        let ring = KeyRing::new(SigningKey::generate(Algorithm::ES256).unwrap());
        let input = IdTokenInput {
            sub: "u",
            auth_time: UnixTime(0),
            nonce: None,
            acr: None,
            fhir_user: None,
            auth_req_id: None,
            access_token: None,
            refresh_token: None,
        };
        let c = client(json!({"id_token_signed_response_alg": "RS256"}));
        assert_eq!(
            issue_id_token("https://as", &ring, &c, &input, UnixTime(1)),
            Err(IdTokenError::Algorithm)
        );
        let c = client(json!({"id_token_signed_response_alg": "ES256"}));
        assert!(issue_id_token("https://as", &ring, &c, &input, UnixTime(1)).is_ok());
        // HEART asks for RS256 ID tokens: with an RS256 signer in the ring, it works.
        ring.add_signer(SigningKey::generate(Algorithm::RS256).unwrap())
            .unwrap();
        let c = client(json!({"id_token_signed_response_alg": "RS256"}));
        let jwt = issue_id_token("https://as", &ring, &c, &input, UnixTime(1)).unwrap();
        let jws = crate::jose::parse_compact(&jwt, 8192).unwrap();
        assert_eq!(jws.header().alg(), Algorithm::RS256);
    }

    #[test]
    fn ciba_id_token_names_the_request_and_hashes_the_tokens() {
        let ring = KeyRing::new(SigningKey::generate(Algorithm::ES256).unwrap());
        let input = IdTokenInput {
            sub: "u",
            auth_time: UnixTime(1),
            nonce: None,
            acr: None,
            fhir_user: None,
            auth_req_id: Some("1c266114-a1be-4252-8ad1-04986c5b9ac1"),
            access_token: Some("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            refresh_token: Some("hgrt_r"),
        };
        let jwt =
            issue_id_token("https://as", &ring, &client(json!({})), &input, UnixTime(1)).unwrap();
        let v = Validation::new(
            AlgorithmSet::ALL,
            TypRule::OptionalOneOf(&["JWT"]),
            AudienceRule::ExactString("app".into()),
        );
        let c = verify_jwt(&jwt, &**ring.load(), &v, UnixTime(1)).unwrap();
        assert_eq!(
            c.get(AUTH_REQ_ID_CLAIM),
            Some(&json!("1c266114-a1be-4252-8ad1-04986c5b9ac1"))
        );
        // OIDC Core §3.3.2.11: left half of SHA-256, base64url (16 bytes → 22 chars).
        let at = token_hash(
            Algorithm::ES256,
            "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y",
        );
        assert_eq!(c.get("at_hash"), Some(&json!(at)));
        assert_eq!(at.len(), 22);
        assert!(c.get(RT_HASH_CLAIM).is_some());
        assert_eq!(token_hash(Algorithm::ES384, "x").len(), 32);
        assert_eq!(token_hash(Algorithm::EdDSA, "x").len(), 43);
        // Without CIBA inputs, none of these claims.
        let plain = IdTokenInput {
            auth_req_id: None,
            access_token: None,
            refresh_token: None,
            ..input
        };
        let jwt =
            issue_id_token("https://as", &ring, &client(json!({})), &plain, UnixTime(1)).unwrap();
        let c = verify_jwt(&jwt, &**ring.load(), &v, UnixTime(1)).unwrap();
        assert!(c.get(AUTH_REQ_ID_CLAIM).is_none() && c.get("at_hash").is_none());
    }

    #[test]
    fn pairwise_sub_is_stable_per_sector_and_differs_across_sectors() {
        let p = PairwiseSubjects::new(&[7u8; 32]).unwrap();
        let a1 = p.subject("app.example.com", "user-1");
        assert_eq!(a1, p.subject("app.example.com", "user-1"));
        assert_ne!(a1, p.subject("other.example.net", "user-1"));
        assert_ne!(a1, p.subject("app.example.com", "user-2"));
        assert_ne!(a1, "user-1");
        // Length prefixes: ("ab", "c") and ("a", "bc") differ.
        assert_ne!(p.subject("ab", "c"), p.subject("a", "bc"));
        // Another secret, other pseudonyms.
        let q = PairwiseSubjects::new(&[8u8; 32]).unwrap();
        assert_ne!(a1, q.subject("app.example.com", "user-1"));
    }

    #[test]
    fn pairwise_needs_a_long_secret_and_applies_only_to_pairwise_clients() {
        assert!(PairwiseSubjects::new(&[1u8; 31]).is_none());
        let p = PairwiseSubjects::new(&[1u8; 32]).unwrap();
        let public = client(json!({}));
        assert_eq!(
            PairwiseSubjects::for_client(Some(&p), &public, "user-1").unwrap(),
            "user-1"
        );
        let pw = client(json!({"subject_type": "pairwise"}));
        let s = PairwiseSubjects::for_client(Some(&p), &pw, "user-1").unwrap();
        assert_eq!(s, p.subject("app.example.com", "user-1"));
        assert_eq!(
            PairwiseSubjects::for_client(None, &pw, "user-1"),
            Err(IdTokenError::Pairwise)
        );
    }
}
