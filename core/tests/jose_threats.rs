//! THREATS.md §2.1 (J1–J29, J33–J35) against the public JOSE API. Hostile tokens carry
//! VALID signatures (signed by hand over the crafted header and payload), so each
//! rejection is shown to come from the check named in the test, not from a bad signature.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use heartgate_core::clock::UnixTime;
use heartgate_core::jose::*;
use serde_json::json;

const NOW: UnixTime = UnixTime(1_700_000_000);
const ISS: &str = "https://as.example";
const RS: &str = "https://rs.example";

fn key(alg: Algorithm) -> SigningKey {
    SigningKey::generate(alg).unwrap()
}

/// Sign arbitrary header and payload bytes.
fn forge(k: &SigningKey, header: &str, payload: &[u8]) -> String {
    let input = format!("{}.{}", b64::encode(header), b64::encode(payload));
    let sig = k.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64::encode(sig))
}

fn good_claims() -> String {
    json!({"iss": ISS, "aud": RS, "sub": "s", "exp": NOW.0 + 60, "iat": NOW.0, "jti": "j"})
        .to_string()
}

fn header(k: &SigningKey, extra: &str) -> String {
    format!(
        r#"{{"alg":"{}","kid":"{}","typ":"at+jwt"{extra}}}"#,
        k.algorithm(),
        k.kid()
    )
}

fn policy() -> Validation {
    Validation::new(
        AlgorithmSet::ALL,
        TypRule::Required("at+jwt"),
        AudienceRule::Contains(RS.into()),
    )
    .issuer(ISS)
}

fn check(k: &SigningKey, token: &str) -> Result<Verified<Claims>, JoseError> {
    verify_jwt(token, k.verifying_key(), &policy(), NOW)
}

fn check_with(k: &SigningKey, token: &str, v: &Validation) -> Result<Verified<Claims>, JoseError> {
    verify_jwt(token, k.verifying_key(), v, NOW)
}

#[test]
fn baseline_forged_token_with_clean_header_verifies() {
    let k = key(Algorithm::ES256);
    assert!(check(&k, &forge(&k, &header(&k, ""), good_claims().as_bytes())).is_ok());
}

#[test]
fn j1_alg_none_in_every_spelling_is_refused_before_key_lookup() {
    let k = key(Algorithm::ES256);
    for none in ["none", "None", "NONE", "nOnE"] {
        let h = format!(r#"{{"alg":"{none}","typ":"at+jwt"}}"#);
        let t = format!("{}.{}.", b64::encode(&h), b64::encode(good_claims()));
        assert_eq!(
            check(&k, &t).unwrap_err(),
            JoseError::NotCompactJws,
            "empty signature: {none}"
        );
        let t = forge(&k, &h, good_claims().as_bytes());
        assert_eq!(check(&k, &t).unwrap_err(), JoseError::AlgNone, "{none}");
    }
}

#[test]
fn j2_hs256_with_a_public_key_as_secret_is_refused() {
    for alg in [Algorithm::ES256, Algorithm::RS256] {
        let k = key(alg);
        let h = format!(r#"{{"alg":"HS256","kid":"{}","typ":"at+jwt"}}"#, k.kid());
        let t = forge(&k, &h, good_claims().as_bytes());
        assert_eq!(check(&k, &t).unwrap_err(), JoseError::UnsupportedAlgorithm);
    }
}

#[test]
fn j3_algorithm_outside_the_context_allow_list_is_refused() {
    let k = key(Algorithm::RS256);
    let t = forge(&k, &header(&k, ""), good_claims().as_bytes());
    let mut v = policy();
    v.algorithms = AlgorithmSet::FAPI2;
    assert_eq!(
        check_with(&k, &t, &v).unwrap_err(),
        JoseError::AlgorithmNotAllowed
    );
    for alg in ["ES512", "PS384", "Ed448", "ES256K"] {
        let h = format!(r#"{{"alg":"{alg}","kid":"{}","typ":"at+jwt"}}"#, k.kid());
        assert_eq!(
            check(&k, &forge(&k, &h, good_claims().as_bytes())).unwrap_err(),
            JoseError::UnsupportedAlgorithm
        );
    }
}

#[test]
fn j4_header_alg_differing_from_the_key_is_refused() {
    let k = key(Algorithm::ES256);
    let h = format!(r#"{{"alg":"PS256","kid":"{}","typ":"at+jwt"}}"#, k.kid());
    assert_eq!(
        check(&k, &forge(&k, &h, good_claims().as_bytes())).unwrap_err(),
        JoseError::AlgorithmKeyMismatch
    );
    let rsa = key(Algorithm::PS256);
    let h = format!(r#"{{"alg":"RS256","kid":"{}","typ":"at+jwt"}}"#, rsa.kid());
    assert_eq!(
        check(&rsa, &forge(&rsa, &h, good_claims().as_bytes())).unwrap_err(),
        JoseError::AlgorithmKeyMismatch
    );
}

#[test]
fn j5_hostile_kids_are_refused() {
    let k = key(Algorithm::ES256);
    let long = "k".repeat(10 * 1024);
    let cases: Vec<(String, JoseError)> = vec![
        (r#""../../etc/passwd""#.into(), JoseError::UnknownKey),
        (r#""' OR 1=1; --""#.into(), JoseError::UnknownKey),
        (format!(r#""{long}""#), JoseError::TooLarge),
        (format!(r#""{}""#, "k".repeat(257)), JoseError::InvalidKid),
        (r#""a\u0000b""#.into(), JoseError::InvalidKid),
        ("12".into(), JoseError::InvalidKid),
        (r#"{"a":1}"#.into(), JoseError::InvalidKid),
        (r#""""#.into(), JoseError::InvalidKid),
    ];
    for (kid, want) in cases {
        let h = format!(r#"{{"alg":"ES256","kid":{kid},"typ":"at+jwt"}}"#);
        assert_eq!(
            check(&k, &forge(&k, &h, good_claims().as_bytes())).unwrap_err(),
            want,
            "{kid:.40}"
        );
    }
}

#[test]
fn j6_unknown_kid_is_refused() {
    let k = key(Algorithm::ES256);
    let h = r#"{"alg":"ES256","kid":"not-a-key","typ":"at+jwt"}"#;
    assert_eq!(
        check(&k, &forge(&k, h, good_claims().as_bytes())).unwrap_err(),
        JoseError::UnknownKey
    );
}

#[test]
fn j7_j8_key_references_and_embedded_keys_are_refused() {
    let k = key(Algorithm::ES256);
    let jwk = serde_json::to_string(&k.verifying_key().to_jwk()).unwrap();
    for extra in [
        r#","jku":"https://evil/jwks""#.to_owned(),
        r#","x5u":"https://evil/cert""#.to_owned(),
        format!(r#","jwk":{jwk}"#),
        r#","x5c":["MIIB"]"#.to_owned(),
    ] {
        let t = forge(&k, &header(&k, &extra), good_claims().as_bytes());
        assert_eq!(
            check(&k, &t).unwrap_err(),
            JoseError::HeaderKeyReference,
            "{extra:.30}"
        );
    }
}

#[test]
fn j9_crit_in_any_form_is_refused() {
    let k = key(Algorithm::ES256);
    for extra in [
        r#","crit":["exp"]"#,
        r#","crit":[]"#,
        r#","crit":"exp""#,
        r#","crit":null"#,
    ] {
        let t = forge(&k, &header(&k, extra), good_claims().as_bytes());
        assert_eq!(
            check(&k, &t).unwrap_err(),
            JoseError::CritNotSupported,
            "{extra}"
        );
    }
}

#[test]
fn j10_unencoded_payload_is_refused_with_or_without_crit() {
    let k = key(Algorithm::ES256);
    let t = forge(&k, &header(&k, r#","b64":false"#), good_claims().as_bytes());
    assert_eq!(check(&k, &t).unwrap_err(), JoseError::UnencodedPayload);
    let t = forge(
        &k,
        &header(&k, r#","b64":false,"crit":["b64"]"#),
        good_claims().as_bytes(),
    );
    assert!(matches!(
        check(&k, &t).unwrap_err(),
        JoseError::UnencodedPayload | JoseError::CritNotSupported
    ));
}

#[test]
fn j11_duplicate_header_and_claim_names_are_refused() {
    let k = key(Algorithm::ES256);
    let h = format!(
        r#"{{"alg":"ES256","alg":"none","kid":"{}","typ":"at+jwt"}}"#,
        k.kid()
    );
    assert_eq!(
        check(&k, &forge(&k, &h, good_claims().as_bytes())).unwrap_err(),
        JoseError::Json(JsonError::DuplicateMember)
    );
    for dup in [
        format!(
            r#"{{"iss":"{ISS}","aud":"{RS}","exp":{},"exp":{}}}"#,
            NOW.0 + 60,
            NOW.0 + 99999
        ),
        format!(
            r#"{{"iss":"{ISS}","aud":"{RS}","aud":"other","exp":{}}}"#,
            NOW.0 + 60
        ),
    ] {
        assert_eq!(
            check(&k, &forge(&k, &header(&k, ""), dup.as_bytes())).unwrap_err(),
            JoseError::Json(JsonError::DuplicateMember)
        );
    }
}

#[test]
fn j12_non_object_header_or_payload_bom_and_trailing_garbage_are_refused() {
    let k = key(Algorithm::ES256);
    for h in ["null", "[]", "\"str\"", "1"] {
        assert_eq!(
            check(&k, &forge(&k, h, good_claims().as_bytes())).unwrap_err(),
            JoseError::Json(JsonError::NotAnObject)
        );
    }
    let h = header(&k, "");
    for p in [&b"null"[..], b"[]", b"\"str\"", b"1"] {
        assert_eq!(
            check(&k, &forge(&k, &h, p)).unwrap_err(),
            JoseError::Json(JsonError::NotAnObject)
        );
    }
    let claims = good_claims();
    let mut bom = b"\xef\xbb\xbf".to_vec();
    bom.extend_from_slice(claims.as_bytes());
    let mut bad_utf8 = claims.as_bytes().to_vec();
    bad_utf8.insert(bad_utf8.len() - 2, 0xff);
    let trailing = format!("{claims} x");
    for p in [bom.as_slice(), bad_utf8.as_slice(), trailing.as_bytes()] {
        assert_eq!(
            check(&k, &forge(&k, &h, p)).unwrap_err(),
            JoseError::Json(JsonError::Syntax)
        );
    }
}

#[test]
fn j13_wrong_part_counts_and_dot_floods_are_refused() {
    let k = key(Algorithm::ES256);
    let t = forge(&k, &header(&k, ""), good_claims().as_bytes());
    let parts: Vec<&str> = t.split('.').collect();
    for bad in [
        format!("{}.{}", parts[0], parts[1]),
        format!("{t}.x"),
        format!("{}.{}.{}.{}.{}", parts[0], "e", parts[1], "iv", parts[2]),
        format!("{t}.."),
        ".".repeat(3),
        format!(r#"{{"payload":"{}","signatures":[]}}"#, parts[1]),
    ] {
        assert!(
            matches!(
                check(&k, &bad).unwrap_err(),
                JoseError::NotCompactJws | JoseError::Base64
            ),
            "{bad:.50}"
        );
    }
    assert_eq!(
        check(&k, &".".repeat(100 * 1024)).unwrap_err(),
        JoseError::TooLarge
    );
    assert_eq!(
        check(&k, &format!("Bearer {}", ".".repeat(100))).unwrap_err(),
        JoseError::NotCompactJws
    );
}

#[test]
fn j14_non_canonical_base64url_in_each_segment_is_refused() {
    let k = key(Algorithm::ES256);
    let t = forge(&k, &header(&k, ""), good_claims().as_bytes());
    let parts: Vec<String> = t.split('.').map(str::to_owned).collect();
    for i in 0..3 {
        for mutate in [
            |s: &str| format!("{s}="),
            |s: &str| format!("{s}\n"),
            |s: &str| format!(" {s}"),
            |s: &str| {
                s.replacen(
                    |c: char| c == '-' || c == '_' || c.is_ascii_alphanumeric(),
                    "+",
                    1,
                )
            },
            |s: &str| s.replacen(|c: char| c.is_ascii_alphanumeric(), "/", 1),
        ] {
            let mut p = parts.clone();
            p[i] = mutate(&p[i]);
            let bad = p.join(".");
            let err = check(&k, &bad).unwrap_err();
            assert!(
                matches!(err, JoseError::Base64 | JoseError::BadSignature),
                "segment {i}: {err:?}"
            );
            assert_ne!(
                err,
                JoseError::BadSignature,
                "segment {i} must fail as encoding, not signature"
            );
        }
    }
    // Non-zero trailing bits: a 64-byte ES256 signature encodes to 86 chars with 4 spare bits.
    let sig = &parts[2];
    let last = sig.chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.find(last).unwrap();
    let flipped = alphabet.as_bytes()[idx ^ 1] as char;
    let bad = format!(
        "{}.{}.{}{}",
        parts[0],
        parts[1],
        &sig[..sig.len() - 1],
        flipped
    );
    assert_eq!(check(&k, &bad).unwrap_err(), JoseError::Base64);
}

/// P-256 group order, big-endian.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

#[test]
fn j15_malformed_es256_signatures_are_refused() {
    let k = key(Algorithm::ES256);
    let t = forge(&k, &header(&k, ""), good_claims().as_bytes());
    let (input, sig) = t.rsplit_once('.').unwrap();
    let sig = b64::decode(sig).unwrap();
    // A DER encoding of (r, s).
    let mut der = vec![0x30, 0x44, 0x02, 0x20];
    der.extend_from_slice(&sig[..32]);
    der.extend_from_slice(&[0x02, 0x20]);
    der.extend_from_slice(&sig[32..]);
    let mut r_is_n = P256_N.to_vec();
    r_is_n.extend_from_slice(&sig[32..]);
    let mut s_is_n = sig[..32].to_vec();
    s_is_n.extend_from_slice(&P256_N);
    let cases: Vec<Vec<u8>> = vec![
        der,
        sig[..63].to_vec(),
        [sig.as_slice(), &[0]].concat(),
        vec![0; 64],
        r_is_n,
        s_is_n,
    ];
    for bad in cases {
        let token = format!("{input}.{}", b64::encode(&bad));
        assert_eq!(
            check(&k, &token).unwrap_err(),
            JoseError::BadSignature,
            "{} bytes",
            bad.len()
        );
    }
}

fn n_minus(s: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(P256_N[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    out
}

#[test]
fn j16_high_s_variant_verifies_with_the_same_jti() {
    let k = key(Algorithm::ES256);
    let t = forge(&k, &header(&k, ""), good_claims().as_bytes());
    let (input, sig) = t.rsplit_once('.').unwrap();
    let sig = b64::decode(sig).unwrap();
    let variant = format!(
        "{input}.{}",
        b64::encode([&sig[..32], &n_minus(&sig[32..])].concat())
    );
    assert_ne!(variant, t);
    let a = check(&k, &t).unwrap();
    let b = check(&k, &variant).unwrap();
    // Malleable: both spellings verify, and only the jti identifies the token (the
    // token layer's revocation test shows the variant refused after revocation).
    assert_eq!(
        a.required_string("jti").unwrap(),
        b.required_string("jti").unwrap()
    );
}

#[test]
fn j17_weak_and_unsupported_keys_are_refused() {
    let opts = JwkSetOptions::default();
    let rsa1024 = json!({"kty":"RSA","alg":"RS256","e":"AQAB","n": b64::encode([0xc1u8; 128])});
    assert_eq!(
        parse_jwk(rsa1024.to_string().as_bytes(), &opts).unwrap_err(),
        KeyError::RsaTooSmall
    );
    let p384 =
        json!({"kty":"EC","crv":"P-384","x": b64::encode([1u8; 48]),"y": b64::encode([2u8; 48])});
    assert_eq!(
        parse_jwk(p384.to_string().as_bytes(), &opts).unwrap_err(),
        KeyError::UnsupportedCurve
    );
    for crv in ["X25519", "Ed448"] {
        let okp = json!({"kty":"OKP","crv":crv,"x": b64::encode([9u8; 32])});
        assert_eq!(
            parse_jwk(okp.to_string().as_bytes(), &opts).unwrap_err(),
            KeyError::UnsupportedCurve
        );
    }
    let mut identity = [0u8; 32];
    identity[0] = 1;
    for x in [[0u8; 32], identity] {
        let okp = json!({"kty":"OKP","crv":"Ed25519","x": b64::encode(x)});
        assert_eq!(
            parse_jwk(okp.to_string().as_bytes(), &opts).unwrap_err(),
            KeyError::WeakKey
        );
    }
    let short_ec =
        json!({"kty":"EC","crv":"P-256","x": b64::encode([1u8; 31]),"y": b64::encode([2u8; 32])});
    assert!(matches!(
        parse_jwk(short_ec.to_string().as_bytes(), &opts).unwrap_err(),
        KeyError::InvalidJwk(_)
    ));
}

#[test]
fn j18_oversized_tokens_are_refused_before_decoding() {
    let k = key(Algorithm::ES256);
    let big =
        json!({"iss": ISS, "aud": RS, "exp": NOW.0 + 60, "pad": "x".repeat(9000)}).to_string();
    let t = forge(&k, &header(&k, ""), big.as_bytes());
    assert_eq!(check(&k, &t).unwrap_err(), JoseError::TooLarge);
    let ro = Validation::new(
        AlgorithmSet::ALL,
        TypRule::OptionalOneOf(&["oauth-authz-req+jwt"]),
        AudienceRule::Contains(RS.into()),
    )
    .max_len(REQUEST_OBJECT_MAX_LEN);
    let h = format!(r#"{{"alg":"ES256","kid":"{}"}}"#, k.kid());
    assert!(
        check_with(&k, &forge(&k, &h, big.as_bytes()), &ro).is_ok(),
        "fits the 64 KiB request-object limit"
    );
    let huge =
        json!({"iss": ISS, "aud": RS, "exp": NOW.0 + 60, "pad": "x".repeat(70_000)}).to_string();
    assert_eq!(
        check_with(&k, &forge(&k, &h, huge.as_bytes()), &ro).unwrap_err(),
        JoseError::TooLarge
    );
}

#[test]
fn j19_deeply_nested_claims_are_refused_without_overflow() {
    let k = key(Algorithm::ES256);
    let deep = format!(
        r#"{{"iss":"{ISS}","aud":"{RS}","exp":{},"a":{}1{}}}"#,
        NOW.0 + 60,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let v = policy().max_len(1 << 20);
    assert_eq!(
        check_with(&k, &forge(&k, &header(&k, ""), deep.as_bytes()), &v).unwrap_err(),
        JoseError::Json(JsonError::TooDeep)
    );
}

fn claims_with(name: &str, raw: &str) -> String {
    let mut base = json!({"iss": ISS, "aud": RS, "exp": NOW.0 + 60, "iat": NOW.0, "nbf": NOW.0});
    base.as_object_mut().unwrap().remove(name);
    let s = base.to_string();
    format!(r#"{{"{name}":{raw},{}"#, &s[1..])
}

#[test]
fn j20_j23_time_claims_of_the_wrong_type_or_range_are_typed_errors() {
    let k = key(Algorithm::ES256);
    for name in ["exp", "nbf", "iat"] {
        for raw in [
            "\"99999999999\"",
            "1.7e9",
            "-1",
            "null",
            "true",
            "9223372036854775807",
            "18446744073709551615",
            "99999999999999999999",
        ] {
            let t = forge(&k, &header(&k, ""), claims_with(name, raw).as_bytes());
            let err = check(&k, &t).unwrap_err();
            let want = JoseError::InvalidClaim(match name {
                "exp" => "exp",
                "nbf" => "nbf",
                _ => "iat",
            });
            assert_eq!(err, want, "{name}={raw}");
        }
        let t = forge(&k, &header(&k, ""), claims_with(name, "1e400").as_bytes());
        assert_eq!(
            check(&k, &t).unwrap_err(),
            JoseError::Json(JsonError::Syntax),
            "{name}=1e400"
        );
    }
}

#[test]
fn j20_integral_float_is_refused() {
    // NOTE: RFC 7519 allows non-integer NumericDates; we pin refusing them.
    let k = key(Algorithm::ES256);
    let t = forge(
        &k,
        &header(&k, ""),
        claims_with("exp", &format!("{}.0", NOW.0 + 60)).as_bytes(),
    );
    assert_eq!(check(&k, &t).unwrap_err(), JoseError::InvalidClaim("exp"));
}

#[test]
fn j21_missing_exp_is_refused() {
    let k = key(Algorithm::ES256);
    let c = json!({"iss": ISS, "aud": RS, "iat": NOW.0}).to_string();
    assert_eq!(
        check(&k, &forge(&k, &header(&k, ""), c.as_bytes())).unwrap_err(),
        JoseError::MissingClaim("exp")
    );
}

#[test]
fn j22_time_boundaries_accept_at_the_edge_and_refuse_one_second_past() {
    let l = i64::from(DEFAULT_LEEWAY);
    let v = policy();
    let at = |exp: i64, nbf: Option<i64>, iat: Option<i64>| {
        let mut m = json!({"iss": ISS, "aud": RS, "exp": exp});
        if let Some(n) = nbf {
            m["nbf"] = json!(n);
        }
        if let Some(i) = iat {
            m["iat"] = json!(i);
        }
        validate_claims(&Claims::new(m.as_object().unwrap().clone()), &v, NOW)
    };
    assert_eq!(at(NOW.0 - l, None, None), Ok(()));
    assert_eq!(at(NOW.0 - l - 1, None, None), Err(JoseError::Expired));
    assert_eq!(at(NOW.0 + 60, Some(NOW.0 + l), None), Ok(()));
    assert_eq!(
        at(NOW.0 + 60, Some(NOW.0 + l + 1), None),
        Err(JoseError::NotYetValid)
    );
    assert_eq!(at(NOW.0 + 60, None, Some(NOW.0 + l)), Ok(()));
    assert_eq!(
        at(NOW.0 + 60, None, Some(NOW.0 + l + 1)),
        Err(JoseError::IssuedInFuture)
    );
}

#[test]
fn j24_lifetime_above_the_context_cap_is_refused() {
    let k = key(Algorithm::ES256);
    let assertion = policy().max_lifetime(300);
    let c48h = json!({"iss": ISS, "aud": RS, "exp": NOW.0 + 48 * 3600, "iat": NOW.0}).to_string();
    assert_eq!(
        check_with(&k, &forge(&k, &header(&k, ""), c48h.as_bytes()), &assertion).unwrap_err(),
        JoseError::LifetimeTooLong
    );
    let ro = policy().max_lifetime(3600);
    let c70m = json!({"iss": ISS, "aud": RS, "exp": NOW.0 + 70 * 60}).to_string();
    assert_eq!(
        check_with(&k, &forge(&k, &header(&k, ""), c70m.as_bytes()), &ro).unwrap_err(),
        JoseError::LifetimeTooLong
    );
    let c60m = json!({"iss": ISS, "aud": RS, "exp": NOW.0 + 60 * 60}).to_string();
    assert!(check_with(&k, &forge(&k, &header(&k, ""), c60m.as_bytes()), &ro).is_ok());
}

#[test]
fn j25_typ_is_checked_per_context() {
    let k = key(Algorithm::ES256);
    let h = |typ: &str| format!(r#"{{"alg":"ES256","kid":"{}"{typ}}}"#, k.kid());
    let c = good_claims();
    for bad in [r#","typ":"JWT""#, "", r#","typ":"oauth-authz-req+jwt""#] {
        assert_eq!(
            check(&k, &forge(&k, &h(bad), c.as_bytes())).unwrap_err(),
            JoseError::WrongType,
            "{bad}"
        );
    }
    for good in [
        r#","typ":"at+jwt""#,
        r#","typ":"application/at+jwt""#,
        r#","typ":"AT+JWT""#,
        r#","typ":"Application/At+Jwt""#,
    ] {
        assert!(
            check(&k, &forge(&k, &h(good), c.as_bytes())).is_ok(),
            "{good}"
        );
    }
    let ro = Validation::new(
        AlgorithmSet::ALL,
        TypRule::OptionalOneOf(&["oauth-authz-req+jwt"]),
        AudienceRule::Contains(RS.into()),
    );
    assert_eq!(
        check_with(&k, &forge(&k, &h(r#","typ":"at+jwt""#), c.as_bytes()), &ro).unwrap_err(),
        JoseError::WrongType
    );
    assert!(check_with(&k, &forge(&k, &h(""), c.as_bytes()), &ro).is_ok());
    assert_eq!(
        check_with(&k, &forge(&k, &h(r#","typ":7"#), c.as_bytes()), &ro).unwrap_err(),
        JoseError::InvalidHeader("typ")
    );
}

#[test]
fn j26_issuer_variants_are_refused() {
    let k = key(Algorithm::ES256);
    for iss in [
        json!("https://as.example/"),
        json!("https://AS.example"),
        json!("https://as.example.evil"),
        json!("https://as.exampl"),
        json!("as.example"),
        json!([ISS]),
    ] {
        let c = json!({"iss": iss, "aud": RS, "exp": NOW.0 + 60}).to_string();
        let err = check(&k, &forge(&k, &header(&k, ""), c.as_bytes())).unwrap_err();
        assert!(
            matches!(
                err,
                JoseError::IssuerMismatch | JoseError::InvalidClaim("iss")
            ),
            "{iss}: {err:?}"
        );
    }
    let c = json!({"aud": RS, "exp": NOW.0 + 60}).to_string();
    assert_eq!(
        check(&k, &forge(&k, &header(&k, ""), c.as_bytes())).unwrap_err(),
        JoseError::MissingClaim("iss")
    );
}

#[test]
fn j27_audience_variants_are_refused() {
    let k = key(Algorithm::ES256);
    let cases = [
        (json!("https://other-rs"), JoseError::AudienceMismatch),
        (json!([]), JoseError::InvalidClaim("aud")),
        (json!([null]), JoseError::InvalidClaim("aud")),
        (json!([1, RS]), JoseError::InvalidClaim("aud")),
        (json!(""), JoseError::AudienceMismatch),
        (json!({"aud": RS}), JoseError::InvalidClaim("aud")),
    ];
    for (aud, want) in cases {
        let c = json!({"iss": ISS, "aud": aud, "exp": NOW.0 + 60}).to_string();
        assert_eq!(
            check(&k, &forge(&k, &header(&k, ""), c.as_bytes())).unwrap_err(),
            want,
            "{aud}"
        );
    }
    let c = json!({"iss": ISS, "exp": NOW.0 + 60}).to_string();
    assert_eq!(
        check(&k, &forge(&k, &header(&k, ""), c.as_bytes())).unwrap_err(),
        JoseError::MissingClaim("aud")
    );
    // An array containing the expected audience is fine; ExactString wants a string.
    let arr = json!({"iss": ISS, "aud": [RS, "x"], "exp": NOW.0 + 60}).to_string();
    assert!(check(&k, &forge(&k, &header(&k, ""), arr.as_bytes())).is_ok());
    let mut exact = policy();
    exact.audience = AudienceRule::ExactString(RS.into());
    let single = json!({"iss": ISS, "aud": [RS], "exp": NOW.0 + 60}).to_string();
    assert_eq!(
        check_with(&k, &forge(&k, &header(&k, ""), single.as_bytes()), &exact).unwrap_err(),
        JoseError::AudienceMismatch
    );
    let mut none = policy();
    none.audience = AudienceRule::MustBeAbsent;
    assert_eq!(
        check_with(
            &k,
            &forge(&k, &header(&k, ""), good_claims().as_bytes()),
            &none
        )
        .unwrap_err(),
        JoseError::UnexpectedAudience
    );
    let mut any = policy();
    any.audience = AudienceRule::AnyOf(vec!["a".into(), RS.into()]);
    assert!(check_with(
        &k,
        &forge(&k, &header(&k, ""), good_claims().as_bytes()),
        &any
    )
    .is_ok());
}

#[test]
fn j28_token_signed_by_another_key_is_refused() {
    let a = key(Algorithm::ES256);
    let b = key(Algorithm::ES256);
    // Header names b's kid, a signs.
    let h = format!(r#"{{"alg":"ES256","kid":"{}","typ":"at+jwt"}}"#, b.kid());
    let t = forge(&a, &h, good_claims().as_bytes());
    assert_eq!(check(&b, &t).unwrap_err(), JoseError::BadSignature);
}

#[test]
fn j29_nested_and_encrypted_jwts_are_refused() {
    let k = key(Algorithm::ES256);
    for extra in [r#","cty":"JWT""#, r#","enc":"A256GCM""#, r#","zip":"DEF""#] {
        let t = forge(&k, &header(&k, extra), good_claims().as_bytes());
        assert_eq!(
            check(&k, &t).unwrap_err(),
            JoseError::NestedOrEncrypted,
            "{extra}"
        );
    }
    assert_eq!(
        check(&k, "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d").unwrap_err(),
        JoseError::NotCompactJws
    );
}

#[test]
fn j33_private_or_symmetric_jwks_are_refused_and_ours_never_contain_them() {
    let opts = JwkSetOptions::default();
    let k = key(Algorithm::ES256);
    let mut jwk = k.verifying_key().to_jwk();
    for member in ["d", "p", "q", "dp", "dq", "qi", "oth"] {
        let mut m = jwk.clone();
        m.insert(member.into(), json!("AAAA"));
        let set = json!({"keys": [m]}).to_string();
        assert_eq!(
            JwkSet::from_json(set.as_bytes(), &opts).unwrap_err(),
            KeyError::PrivateMembers,
            "{member}"
        );
    }
    jwk.insert("kty".into(), json!("oct"));
    jwk.insert("k".into(), json!("c2VjcmV0"));
    let set = json!({"keys": [jwk]}).to_string();
    assert_eq!(
        JwkSet::from_json(set.as_bytes(), &opts).unwrap_err(),
        KeyError::Symmetric
    );
    // Our own published JWKS: only public members, for every algorithm.
    let ring = KeyRing::new(key(Algorithm::ES256));
    for alg in [Algorithm::PS256, Algorithm::RS256, Algorithm::EdDSA] {
        ring.rotate(key(alg)).unwrap();
    }
    let published: serde_json::Value = serde_json::from_str(ring.load().jwks_json()).unwrap();
    let keys = published["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 4);
    for k in keys {
        for member in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
            assert!(k.get(member).is_none(), "published JWKS carries {member}");
        }
    }
}

#[test]
fn j34_duplicate_kids_and_ambiguous_keys_are_refused() {
    let opts = JwkSetOptions::default();
    let a = key(Algorithm::ES256).with_kid("same").unwrap();
    let b = key(Algorithm::ES256).with_kid("same").unwrap();
    let set = json!({"keys": [a.verifying_key().to_jwk(), b.verifying_key().to_jwk()]}).to_string();
    assert_eq!(
        JwkSet::from_json(set.as_bytes(), &opts).unwrap_err(),
        KeyError::DuplicateKid
    );
    let mut rsa = key(Algorithm::RS256).verifying_key().to_jwk();
    rsa.remove("alg");
    let set = json!({"keys": [rsa]}).to_string();
    assert_eq!(
        JwkSet::from_json(set.as_bytes(), &opts).unwrap_err(),
        KeyError::AmbiguousAlgorithm
    );
    let with_default = JwkSetOptions {
        rsa_alg_when_absent: Some(Algorithm::PS256),
    };
    assert_eq!(
        JwkSet::from_json(set.as_bytes(), &with_default)
            .unwrap()
            .keys()[0]
            .algorithm(),
        Algorithm::PS256
    );
    // Two ES256 keys and a token without kid: ambiguous.
    let c = key(Algorithm::ES256);
    let d = key(Algorithm::ES256);
    let keys = JwkSet::new(vec![c.verifying_key().clone(), d.verifying_key().clone()]).unwrap();
    let t = forge(
        &c,
        r#"{"alg":"ES256","typ":"at+jwt"}"#,
        good_claims().as_bytes(),
    );
    assert_eq!(
        verify_jwt(&t, &keys, &policy(), NOW).unwrap_err(),
        JoseError::AmbiguousKey
    );
    // A JWK alg that does not fit the key type.
    let mut ec = c.verifying_key().to_jwk();
    ec.insert("alg".into(), json!("PS256"));
    assert_eq!(
        parse_jwk(serde_json::to_string(&ec).unwrap().as_bytes(), &opts).unwrap_err(),
        KeyError::AlgorithmMismatch
    );
}

#[test]
fn j34_encryption_keys_are_never_used_to_verify() {
    let k = key(Algorithm::ES256);
    let mut jwk = k.verifying_key().to_jwk();
    jwk.insert("use".into(), json!("enc"));
    let set = json!({"keys": [jwk]}).to_string();
    let parsed = JwkSet::from_json(set.as_bytes(), &JwkSetOptions::default()).unwrap();
    assert!(parsed.is_empty());
    let t = forge(&k, &header(&k, ""), good_claims().as_bytes());
    assert_eq!(
        verify_jwt(&t, &parsed, &policy(), NOW).unwrap_err(),
        JoseError::UnknownKey
    );
}

#[test]
fn j35_lone_surrogates_refused_other_strings_kept_byte_exact() {
    let k = key(Algorithm::ES256);
    let c = format!(
        r#"{{"iss":"{ISS}","aud":"{RS}","exp":{},"name":"\ud800"}}"#,
        NOW.0 + 60
    );
    assert_eq!(
        check(&k, &forge(&k, &header(&k, ""), c.as_bytes())).unwrap_err(),
        JoseError::Json(JsonError::Syntax)
    );
    let c = format!(
        r#"{{"iss":"{ISS}","aud":"{RS}","exp":{},"name":"a\u202eb\u0007c"}}"#,
        NOW.0 + 60
    );
    let ok = check(&k, &forge(&k, &header(&k, ""), c.as_bytes())).unwrap();
    assert_eq!(ok.required_string("name").unwrap(), "a\u{202e}b\u{7}c");
}

#[test]
fn s11_rotation_keeps_old_tokens_valid_until_retired() {
    let ring = KeyRing::new(key(Algorithm::ES256));
    let old = ring.load().active().clone();
    let t_old = forge(&old, &header(&old, ""), good_claims().as_bytes());
    ring.rotate(key(Algorithm::EdDSA)).unwrap();
    let new = ring.load().active().clone();
    assert_ne!(new.kid(), old.kid());
    let t_new = forge(&new, &header(&new, ""), good_claims().as_bytes());
    assert!(verify_jwt(&t_old, &**ring.load(), &policy(), NOW).is_ok());
    assert!(verify_jwt(&t_new, &**ring.load(), &policy(), NOW).is_ok());
    ring.retire(old.kid()).unwrap();
    assert_eq!(
        verify_jwt(&t_old, &**ring.load(), &policy(), NOW).unwrap_err(),
        JoseError::UnknownKey
    );
    assert_eq!(ring.retire(new.kid()).unwrap_err(), KeyError::ActiveKey);
    // Pre-published keys verify before they become active.
    let next = key(Algorithm::ES256);
    ring.publish(next.verifying_key().clone()).unwrap();
    let t_next = forge(&next, &header(&next, ""), good_claims().as_bytes());
    assert!(verify_jwt(&t_next, &**ring.load(), &policy(), NOW).is_ok());
}

#[test]
fn s11_verifiers_never_wait_on_rotation() {
    let ring = KeyRing::new(key(Algorithm::ES256));
    let keys: Vec<SigningKey> = (0..8).map(|_| key(Algorithm::EdDSA)).collect();
    let pinned = ring.load().active().clone();
    let t = forge(&pinned, &header(&pinned, ""), good_claims().as_bytes());
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for k in keys {
                ring.rotate(k).unwrap();
            }
        });
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..200 {
                    assert!(verify_jwt(&t, &**ring.load(), &policy(), NOW).is_ok());
                }
            });
        }
        writer.join().unwrap();
    });
}
