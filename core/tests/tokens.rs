//! The three access-token formats and refresh tokens: issue, validate, records,
//! wrapper/reference agreement and revocation by (iss, jti).
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use std::sync::Arc;

use heartgate_core::clock::UnixTime;
use heartgate_core::jose::{
    b64, sign_jwt, Algorithm, AlgorithmSet, JoseError, KeyRing, SigningKey,
};
use heartgate_core::mtls::Confirmation;
use heartgate_core::token::*;
use serde_json::{json, Map, Value};

const ISS: &str = "https://as.example";
const RS: &str = "https://fhir.example";
const NOW: UnixTime = UnixTime(1_700_000_000);

fn issuer(alg: Algorithm) -> TokenIssuer {
    TokenIssuer::new(
        ISS,
        Arc::new(KeyRing::new(SigningKey::generate(alg).unwrap())),
    )
}

fn cnf() -> Confirmation {
    Confirmation {
        x5t_s256: "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2".into(),
    }
}

fn grant(format: TokenFormat) -> AccessTokenGrant {
    let mut context = Map::new();
    context.insert("patient".into(), json!("Patient/123"));
    context.insert(
        "fhirUser".into(),
        json!("https://fhir.example/Practitioner/7"),
    );
    AccessTokenGrant {
        client_id: "client-1".into(),
        sub: "user-42".into(),
        pairwise_sub: Some("pw-9f3a".into()),
        scope: "patient/Observation.rs openid".into(),
        aud: vec![RS.into()],
        cnf: Some(cnf()),
        lifetime: 300,
        format,
        auth_time: Some(UnixTime(NOW.0 - 10)),
        acr: Some("urn:acr:mfa".into()),
        family_id: Some("fam-1".into()),
        context,
    }
}

fn validator() -> AccessTokenValidator {
    AccessTokenValidator::new(ISS, RS)
}

fn payload_of(token: &str) -> Map<String, Value> {
    let p = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&b64::decode(p).unwrap()).unwrap()
}

fn header_of(token: &str) -> Map<String, Value> {
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(&b64::decode(h).unwrap()).unwrap()
}

#[test]
fn jwt_access_token_has_rfc9068_header_and_claims() {
    let iss = issuer(Algorithm::ES256);
    let t = iss
        .issue_access_token(&grant(TokenFormat::Jwt), NOW)
        .unwrap();
    let h = header_of(t.token.expose());
    assert_eq!(h["typ"], "at+jwt");
    assert_eq!(h["alg"], "ES256");
    assert_eq!(h["kid"], iss.keys().load().active().kid());
    let c = payload_of(t.token.expose());
    for name in [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "jti",
        "client_id",
        "scope",
        "cnf",
        "auth_time",
        "acr",
        "patient",
        "fhirUser",
    ] {
        assert!(c.contains_key(name), "missing {name}");
    }
    assert_eq!(c["aud"], RS, "a single audience is a string");
    assert_eq!(c["exp"], NOW.0 + 300);
    assert_eq!(c["cnf"]["x5t#S256"], cnf().x5t_s256);
    assert_eq!(t.expires_in, 300);
    assert_eq!(
        t.record_key,
        RecordKey::Jti {
            iss: ISS.into(),
            jti: t.jti.clone()
        }
    );
    assert_eq!(t.record.kind, RecordKind::AccessJwt);
}

#[test]
fn jwt_access_token_validates_for_every_algorithm() {
    for alg in Algorithm::ALL {
        let iss = issuer(alg);
        let t = iss
            .issue_access_token(&grant(TokenFormat::Jwt), NOW)
            .unwrap();
        let state = iss.keys().load();
        let v = validator()
            .validate(t.token.expose(), &**state, &RevokedJtis::new(), NOW)
            .unwrap();
        let ValidatedToken::Jwt(claims) = v else {
            panic!("not a JWT")
        };
        assert_eq!(claims.sub, "user-42");
        assert_eq!(claims.client_id, "client-1");
        assert_eq!(claims.jti, t.jti);
        assert_eq!(claims.cnf, Some(cnf()));
        assert_eq!(claims.claims.get("patient"), Some(&json!("Patient/123")));
    }
}

#[test]
fn jti_has_at_least_128_bits() {
    let t = issuer(Algorithm::EdDSA)
        .issue_access_token(&grant(TokenFormat::Jwt), NOW)
        .unwrap();
    assert!(b64::decode(&t.jti).unwrap().len() >= 16);
}

#[test]
fn access_token_for_another_resource_server_is_refused() {
    let iss = issuer(Algorithm::ES256);
    let t = iss
        .issue_access_token(&grant(TokenFormat::Jwt), NOW)
        .unwrap();
    let other = AccessTokenValidator::new(ISS, "https://other-rs");
    let err = other
        .validate(
            t.token.expose(),
            &**iss.keys().load(),
            &RevokedJtis::new(),
            NOW,
        )
        .unwrap_err();
    assert_eq!(err, TokenError::Jose(JoseError::AudienceMismatch));
}

#[test]
fn expired_access_token_is_refused_one_second_past_leeway() {
    let iss = issuer(Algorithm::ES256);
    let t = iss
        .issue_access_token(&grant(TokenFormat::Jwt), NOW)
        .unwrap();
    let keys = iss.keys().snapshot();
    let exp = NOW.0 + 300;
    let leeway = i64::from(heartgate_core::jose::DEFAULT_LEEWAY);
    assert!(validator()
        .validate(
            t.token.expose(),
            &*keys,
            &RevokedJtis::new(),
            UnixTime(exp + leeway)
        )
        .is_ok());
    assert_eq!(
        validator()
            .validate(
                t.token.expose(),
                &*keys,
                &RevokedJtis::new(),
                UnixTime(exp + leeway + 1)
            )
            .unwrap_err(),
        TokenError::Jose(JoseError::Expired)
    );
}

#[test]
fn fapi2_validator_refuses_rs256_access_tokens() {
    let iss = issuer(Algorithm::RS256);
    let t = iss
        .issue_access_token(&grant(TokenFormat::Jwt), NOW)
        .unwrap();
    let v = validator().algorithms(AlgorithmSet::FAPI2);
    assert_eq!(
        v.validate(
            t.token.expose(),
            &*iss.keys().snapshot(),
            &RevokedJtis::new(),
            NOW
        )
        .unwrap_err(),
        TokenError::Jose(JoseError::AlgorithmNotAllowed)
    );
}

#[test]
fn opaque_token_is_prefixed_256_bit_random_and_stored_by_hash() {
    let t = issuer(Algorithm::ES256)
        .issue_access_token(&grant(TokenFormat::Opaque), NOW)
        .unwrap();
    let s = t.token.expose();
    assert!(s.starts_with("hgat_"));
    assert_eq!(b64::decode(&s[5..]).unwrap().len(), 32);
    assert_eq!(t.record_key, RecordKey::Hash(TokenHash::of(s)));
    assert_eq!(t.record.kind, RecordKind::AccessOpaque);
    // The full claim set lives in the record, which never contains the token itself.
    assert_eq!(t.record.sub, "user-42");
    assert_eq!(t.record.context["patient"], "Patient/123");
    let bytes = t.record.to_bytes().unwrap();
    assert!(!bytes.windows(s.len()).any(|w| w == s.as_bytes()));
    assert!(!bytes.windows(20).any(|w| w == &s.as_bytes()[5..25]));
}

#[test]
fn opaque_token_validates_only_to_its_hash() {
    let iss = issuer(Algorithm::ES256);
    let t = iss
        .issue_access_token(&grant(TokenFormat::Opaque), NOW)
        .unwrap();
    let v = validator()
        .validate(
            t.token.expose(),
            &*iss.keys().snapshot(),
            &RevokedJtis::new(),
            NOW,
        )
        .unwrap();
    assert!(matches!(v, ValidatedToken::Opaque(h) if RecordKey::Hash(h) == t.record_key));
}

#[test]
fn malformed_opaque_lookalikes_are_refused() {
    let iss = issuer(Algorithm::ES256);
    let keys = iss.keys().snapshot();
    let good = iss
        .issue_access_token(&grant(TokenFormat::Opaque), NOW)
        .unwrap();
    let s = good.token.expose();
    for bad in [
        &s[..s.len() - 1],
        &format!("{s}A"),
        "hgat_",
        &format!("{}!", &s[..s.len() - 1]),
    ] {
        assert_eq!(
            validator()
                .validate(bad, &*keys, &RevokedJtis::new(), NOW)
                .unwrap_err(),
            TokenError::UnknownFormat,
            "{bad}"
        );
    }
}

#[test]
fn wrapper_token_carries_only_first_check_claims_and_a_reference() {
    let t = issuer(Algorithm::ES256)
        .issue_access_token(&grant(TokenFormat::Wrapper), NOW)
        .unwrap();
    assert_eq!(header_of(t.token.expose())["typ"], "hg-wrapper+jwt");
    let c = payload_of(t.token.expose());
    let mut names: Vec<&str> = c.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "aud",
            "client_id",
            "cnf",
            "exp",
            "iat",
            "iss",
            "jti",
            "ref",
            "scope",
            "sub"
        ]
    );
    // sub is the pairwise pseudonym, never the user id; no patient, fhirUser, acr.
    assert_eq!(c["sub"], "pw-9f3a");
    let text = t.token.expose();
    let payload_json = serde_json::to_string(&c).unwrap();
    for pii in ["user-42", "Patient/123", "Practitioner/7"] {
        assert!(!payload_json.contains(pii), "{pii} leaked into the wrapper");
    }
    let reference = c["ref"].as_str().unwrap();
    assert!(reference.starts_with("hgref_"));
    assert_eq!(t.record_key, RecordKey::Hash(TokenHash::of(reference)));
    assert_eq!(t.record.kind, RecordKind::AccessWrapper);
    assert_eq!(t.record.sub, "user-42");
    assert!(!text.is_empty());
}

#[test]
fn wrapper_without_pairwise_sub_has_no_sub() {
    let mut g = grant(TokenFormat::Wrapper);
    g.pairwise_sub = None;
    let t = issuer(Algorithm::ES256)
        .issue_access_token(&g, NOW)
        .unwrap();
    assert!(!payload_of(t.token.expose()).contains_key("sub"));
}

fn validated_wrapper(iss: &TokenIssuer, g: &AccessTokenGrant) -> (WrapperClaims, TokenRecord) {
    let t = iss.issue_access_token(g, NOW).unwrap();
    let v = validator()
        .validate(
            t.token.expose(),
            &*iss.keys().snapshot(),
            &RevokedJtis::new(),
            NOW,
        )
        .unwrap();
    let ValidatedToken::Wrapper(w) = v else {
        panic!("not a wrapper")
    };
    (w.into_inner(), t.record)
}

#[test]
fn wrapper_agrees_with_its_reference_record() {
    let iss = issuer(Algorithm::EdDSA);
    let (w, record) = validated_wrapper(&iss, &grant(TokenFormat::Wrapper));
    assert_eq!(
        RecordKey::Hash(w.reference_hash()),
        RecordKey::Hash(w.reference.hash())
    );
    check_wrapper_against_record(&w, &record, NOW).unwrap();
}

#[test]
fn j30_wrapper_of_another_client_audience_or_cnf_is_refused() {
    let iss = issuer(Algorithm::ES256);
    let (w, record) = validated_wrapper(&iss, &grant(TokenFormat::Wrapper));
    let mut other_client = record.clone();
    other_client.client_id = "client-2".into();
    assert_eq!(
        check_wrapper_against_record(&w, &other_client, NOW),
        Err(TokenError::WrapperMismatch("client_id"))
    );
    let mut other_aud = record.clone();
    other_aud.aud = vec!["https://other".into()];
    assert_eq!(
        check_wrapper_against_record(&w, &other_aud, NOW),
        Err(TokenError::WrapperMismatch("aud"))
    );
    // M8: a different cnf inside than outside.
    let mut other_cnf = record.clone();
    other_cnf.cnf = Some(Confirmation {
        x5t_s256: "A".repeat(43),
    });
    assert_eq!(
        check_wrapper_against_record(&w, &other_cnf, NOW),
        Err(TokenError::WrapperMismatch("cnf"))
    );
    let mut unbound = record.clone();
    unbound.cnf = None;
    assert_eq!(
        check_wrapper_against_record(&w, &unbound, NOW),
        Err(TokenError::WrapperMismatch("cnf"))
    );
    let mut scope = record.clone();
    scope.scope = "patient/*.cruds".into();
    assert_eq!(
        check_wrapper_against_record(&w, &scope, NOW),
        Err(TokenError::WrapperMismatch("scope"))
    );
}

#[test]
fn j30_wrapper_outliving_its_reference_is_refused() {
    let iss = issuer(Algorithm::ES256);
    let (w, mut record) = validated_wrapper(&iss, &grant(TokenFormat::Wrapper));
    record.exp -= 1;
    assert_eq!(
        check_wrapper_against_record(&w, &record, NOW),
        Err(TokenError::WrapperMismatch("exp"))
    );
}

#[test]
fn j30_wrapper_checked_against_a_record_of_another_kind_or_token_is_refused() {
    let iss = issuer(Algorithm::ES256);
    let (w, record) = validated_wrapper(&iss, &grant(TokenFormat::Wrapper));
    let mut opaque = record.clone();
    opaque.kind = RecordKind::AccessOpaque;
    assert_eq!(
        check_wrapper_against_record(&w, &opaque, NOW),
        Err(TokenError::WrapperMismatch("kind"))
    );
    let (_, other_record) = validated_wrapper(&iss, &grant(TokenFormat::Wrapper));
    assert_eq!(
        check_wrapper_against_record(&w, &other_record, NOW),
        Err(TokenError::WrapperMismatch("iss/jti"))
    );
}

#[test]
fn wrapper_with_expired_record_is_refused() {
    let iss = issuer(Algorithm::ES256);
    let (w, record) = validated_wrapper(&iss, &grant(TokenFormat::Wrapper));
    assert_eq!(
        check_wrapper_against_record(&w, &record, UnixTime(record.exp)),
        Err(TokenError::Expired)
    );
}

#[test]
fn wrapper_with_malformed_reference_is_refused() {
    let iss = issuer(Algorithm::ES256);
    let key = iss.keys().snapshot();
    for bad_ref in [
        json!("hgref_short"),
        json!("hgat_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
        json!(12),
    ] {
        let claims = json!({"iss": ISS, "aud": RS, "exp": NOW.0 + 60, "iat": NOW.0, "jti": "j", "client_id": "c", "ref": bad_ref});
        let token = sign_jwt(
            key.active(),
            Some("hg-wrapper+jwt"),
            claims.as_object().unwrap(),
        )
        .unwrap();
        let err = validator()
            .validate(&token, &*key, &RevokedJtis::new(), NOW)
            .unwrap_err();
        assert!(
            matches!(
                err,
                TokenError::Claims("ref") | TokenError::Jose(JoseError::InvalidClaim("ref"))
            ),
            "{err:?}"
        );
    }
}

#[test]
fn j28_id_token_and_refresh_token_are_not_access_tokens() {
    let iss = issuer(Algorithm::ES256);
    let key = iss.keys().snapshot();
    let claims = json!({"iss": ISS, "aud": RS, "sub": "u", "exp": NOW.0 + 60, "iat": NOW.0, "jti": "j", "client_id": "c"});
    for typ in [None, Some("JWT"), Some("oauth-authz-req+jwt")] {
        let id_token = sign_jwt(key.active(), typ, claims.as_object().unwrap()).unwrap();
        assert_eq!(
            validator()
                .validate(&id_token, &*key, &RevokedJtis::new(), NOW)
                .unwrap_err(),
            TokenError::Jose(JoseError::WrongType),
            "{typ:?}"
        );
    }
    let rt = iss
        .issue_refresh_token(
            &RefreshTokenGrant {
                client_id: "c".into(),
                sub: "u".into(),
                scope: "openid".into(),
                aud: vec![RS.into()],
                cnf: None,
                lifetime: 3600,
                family_id: None,
                generation: 0,
                auth_time: None,
                acr: None,
                context: Map::new(),
            },
            NOW,
        )
        .unwrap();
    assert!(validator()
        .validate(rt.token.expose(), &*key, &RevokedJtis::new(), NOW)
        .is_err());
}

#[test]
fn access_token_missing_rfc9068_claims_is_refused() {
    let iss = issuer(Algorithm::ES256);
    let key = iss.keys().snapshot();
    let full = json!({"iss": ISS, "aud": RS, "sub": "u", "exp": NOW.0 + 60, "iat": NOW.0, "jti": "j", "client_id": "c"});
    for missing in ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"] {
        let mut c = full.as_object().unwrap().clone();
        c.remove(missing);
        let t = sign_jwt(key.active(), Some("at+jwt"), &c).unwrap();
        let err = validator()
            .validate(&t, &*key, &RevokedJtis::new(), NOW)
            .unwrap_err();
        assert!(
            matches!(err, TokenError::Jose(JoseError::MissingClaim(n)) if n == missing),
            "{missing}: {err:?}"
        );
    }
}

#[test]
fn revoked_jwt_is_refused_by_iss_and_jti() {
    let iss = issuer(Algorithm::ES256);
    let t = iss
        .issue_access_token(&grant(TokenFormat::Jwt), NOW)
        .unwrap();
    let revoked = RevokedJtis::new();
    revoked.revoke(ISS, &t.jti, t.expires_at);
    assert_eq!(
        validator()
            .validate(t.token.expose(), &*iss.keys().snapshot(), &revoked, NOW)
            .unwrap_err(),
        TokenError::Revoked
    );
    // Purging at expiry drops the entry; the token is refused by `exp` from then on.
    revoked.purge(UnixTime(t.expires_at.0 - 1));
    assert_eq!(revoked.len(), 1);
    revoked.purge(t.expires_at);
    assert!(revoked.is_empty());
}

/// THREATS J31 at a resource server: a wrapper whose token was revoked is refused.
#[test]
fn revoked_wrapper_is_refused() {
    let iss = issuer(Algorithm::ES256);
    let t = iss
        .issue_access_token(&grant(TokenFormat::Wrapper), NOW)
        .unwrap();
    let revoked = RevokedJtis::new();
    revoked.revoke(ISS, &t.jti, t.expires_at);
    assert_eq!(
        validator()
            .validate(t.token.expose(), &*iss.keys().snapshot(), &revoked, NOW)
            .unwrap_err(),
        TokenError::Revoked
    );
}

/// P-256 group order n, big-endian.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

fn n_minus(s: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(P256_N[i]) - i16::from(s[i]) - borrow;
        borrow = if d < 0 {
            d += 256;
            1
        } else {
            0
        };
        out[i] = d as u8;
    }
    out
}

#[test]
fn j16_high_s_variant_of_a_revoked_token_is_still_refused() {
    let iss = issuer(Algorithm::ES256);
    let t = iss
        .issue_access_token(&grant(TokenFormat::Jwt), NOW)
        .unwrap();
    let original = t.token.expose();
    let (input, sig) = original.rsplit_once('.').unwrap();
    let sig = b64::decode(sig).unwrap();
    let mut malleated = sig[..32].to_vec();
    malleated.extend_from_slice(&n_minus(&sig[32..]));
    let variant = format!("{input}.{}", b64::encode(&malleated));
    assert_ne!(variant, original);
    let keys = iss.keys().snapshot();
    // ECDSA is malleable: the variant verifies as a different string...
    assert!(validator()
        .validate(&variant, &*keys, &RevokedJtis::new(), NOW)
        .is_ok());
    // ...but revocation is keyed on (iss, jti), so it is caught all the same.
    let revoked = RevokedJtis::new();
    revoked.revoke(ISS, &t.jti, t.expires_at);
    assert_eq!(
        validator()
            .validate(&variant, &*keys, &revoked, NOW)
            .unwrap_err(),
        TokenError::Revoked
    );
    assert_ne!(
        TokenHash::of(&variant),
        TokenHash::of(original),
        "hashes differ: never key on them for JWTs"
    );
}

#[test]
fn j32_revoking_a_jti_of_one_issuer_leaves_another_issuers_token_valid() {
    let a = issuer(Algorithm::ES256);
    let b = TokenIssuer::new(
        "https://other-as.example",
        Arc::new(KeyRing::new(
            SigningKey::generate(Algorithm::ES256).unwrap(),
        )),
    );
    let ta = a.issue_access_token(&grant(TokenFormat::Jwt), NOW).unwrap();
    // Forge the same jti at issuer B by signing the claims directly.
    let mut claims = payload_of(ta.token.expose());
    claims.insert("iss".into(), json!("https://other-as.example"));
    let tb = sign_jwt(b.keys().load().active(), Some("at+jwt"), &claims).unwrap();
    let revoked = RevokedJtis::new();
    revoked.revoke(ISS, &ta.jti, ta.expires_at);
    let vb = AccessTokenValidator::new("https://other-as.example", RS);
    assert!(vb
        .validate(&tb, &*b.keys().snapshot(), &revoked, NOW)
        .is_ok());
    assert_eq!(
        validator()
            .validate(ta.token.expose(), &*a.keys().snapshot(), &revoked, NOW)
            .unwrap_err(),
        TokenError::Revoked
    );
}

#[test]
fn grants_that_cannot_be_issued_are_refused() {
    let iss = issuer(Algorithm::ES256);
    type Mutation = Box<dyn Fn(&mut AccessTokenGrant)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("zero lifetime", Box::new(|g| g.lifetime = 0)),
        (
            "lifetime over the cap",
            Box::new(|g| g.lifetime = MAX_ACCESS_TOKEN_LIFETIME + 1),
        ),
        ("no audience", Box::new(|g| g.aud.clear())),
        ("empty audience", Box::new(|g| g.aud = vec![String::new()])),
        ("empty sub", Box::new(|g| g.sub.clear())),
        (
            "context overriding sub",
            Box::new(|g| {
                g.context.insert("sub".into(), json!("admin"));
            }),
        ),
        (
            "context overriding cnf",
            Box::new(|g| {
                g.context.insert("cnf".into(), json!({}));
            }),
        ),
    ];
    for (name, mutate) in cases {
        for format in [TokenFormat::Jwt, TokenFormat::Opaque, TokenFormat::Wrapper] {
            let mut g = grant(format);
            mutate(&mut g);
            assert!(
                matches!(
                    iss.issue_access_token(&g, NOW),
                    Err(TokenError::InvalidGrant(_))
                ),
                "{name} / {format:?}"
            );
        }
    }
}

#[test]
fn refresh_tokens_are_opaque_with_a_family() {
    let iss = issuer(Algorithm::ES256);
    let g = RefreshTokenGrant {
        client_id: "c".into(),
        sub: "u".into(),
        scope: "openid offline_access".into(),
        aud: vec![RS.into()],
        cnf: Some(cnf()),
        lifetime: 86_400,
        family_id: None,
        generation: 0,
        auth_time: None,
        acr: None,
        context: Map::new(),
    };
    let first = iss.issue_refresh_token(&g, NOW).unwrap();
    assert!(first.token.expose().starts_with("hgrt_"));
    assert_eq!(first.hash, TokenHash::of(first.token.expose()));
    assert_eq!(first.record.state, RefreshState::Active);
    assert!(b64::decode(&first.record.family_id).unwrap().len() >= 16);
    let next = iss
        .issue_refresh_token(
            &RefreshTokenGrant {
                family_id: Some(first.record.family_id.clone()),
                generation: 1,
                ..g.clone()
            },
            NOW,
        )
        .unwrap();
    assert_eq!(next.record.family_id, first.record.family_id);
    assert_ne!(next.token, first.token);
    let bytes = next.record.to_bytes().unwrap();
    assert_eq!(RefreshRecord::from_bytes(&bytes).unwrap(), next.record);
    assert!(matches!(
        iss.issue_refresh_token(&RefreshTokenGrant { lifetime: 0, ..g }, NOW),
        Err(TokenError::InvalidGrant(_))
    ));
}

#[test]
fn secret_tokens_never_print() {
    let t = issuer(Algorithm::ES256)
        .issue_access_token(&grant(TokenFormat::Opaque), NOW)
        .unwrap();
    let dbg = format!("{t:?}");
    assert!(!dbg.contains(t.token.expose()));
    assert!(dbg.contains("[redacted]"));
}

#[test]
fn tokens_of_the_previous_key_verify_after_rotation() {
    let iss = issuer(Algorithm::ES256);
    let old = iss
        .issue_access_token(&grant(TokenFormat::Jwt), NOW)
        .unwrap();
    iss.keys()
        .rotate(SigningKey::generate(Algorithm::EdDSA).unwrap())
        .unwrap();
    let new = iss
        .issue_access_token(&grant(TokenFormat::Jwt), NOW)
        .unwrap();
    assert_eq!(header_of(new.token.expose())["alg"], "EdDSA");
    let keys = iss.keys().snapshot();
    assert!(validator()
        .validate(old.token.expose(), &*keys, &RevokedJtis::new(), NOW)
        .is_ok());
    assert!(validator()
        .validate(new.token.expose(), &*keys, &RevokedJtis::new(), NOW)
        .is_ok());
}

fn cert(name: &str) -> Vec<u8> {
    rcgen::generate_simple_self_signed(vec![name.to_owned()])
        .unwrap()
        .cert
        .der()
        .to_vec()
}

#[test]
fn m1_m2_bound_jwt_requires_the_same_certificate() {
    use heartgate_core::mtls::{Binding, MtlsError};
    let iss = issuer(Algorithm::ES256);
    let mine = cert("client.example");
    let theirs = cert("attacker.example");
    let mut g = grant(TokenFormat::Jwt);
    g.cnf = Some(Confirmation::for_certificate(&mine).unwrap());
    let t = iss.issue_access_token(&g, NOW).unwrap();
    let ValidatedToken::Jwt(v) = validator()
        .validate(
            t.token.expose(),
            &*iss.keys().snapshot(),
            &RevokedJtis::new(),
            NOW,
        )
        .unwrap()
    else {
        panic!("not a JWT")
    };
    assert!(matches!(
        v.check_binding(Some(&mine)).unwrap().binding(),
        Binding::Certificate(_)
    ));
    assert_eq!(
        v.check_binding(Some(&theirs)).unwrap_err(),
        MtlsError::ThumbprintMismatch
    );
    assert_eq!(
        v.check_binding(None).unwrap_err(),
        MtlsError::CertificateMissing
    );
}

#[test]
fn m1_m8_bound_wrapper_requires_the_same_certificate() {
    use heartgate_core::mtls::MtlsError;
    let iss = issuer(Algorithm::ES256);
    let mine = cert("client.example");
    let mut g = grant(TokenFormat::Wrapper);
    g.cnf = Some(Confirmation::for_certificate(&mine).unwrap());
    let (w, record) = validated_wrapper(&iss, &g);
    assert!(w.check_binding(Some(&mine)).is_ok());
    assert_eq!(
        w.check_binding(Some(&cert("other"))).unwrap_err(),
        MtlsError::ThumbprintMismatch
    );
    check_wrapper_against_record(&w, &record, NOW).unwrap();
}

#[test]
fn unbound_token_reports_not_bound() {
    use heartgate_core::mtls::Binding;
    let iss = issuer(Algorithm::ES256);
    let mut g = grant(TokenFormat::Jwt);
    g.cnf = None;
    let t = iss.issue_access_token(&g, NOW).unwrap();
    let ValidatedToken::Jwt(v) = validator()
        .validate(
            t.token.expose(),
            &*iss.keys().snapshot(),
            &RevokedJtis::new(),
            NOW,
        )
        .unwrap()
    else {
        panic!("not a JWT")
    };
    assert_eq!(v.check_binding(None).unwrap().binding(), Binding::NotBound);
}
