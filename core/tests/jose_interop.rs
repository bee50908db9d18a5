#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code
//! Interoperability with an independent implementation, the `jsonwebtoken` crate (v10,
//! RustCrypto backend): tokens heartgate signs verify there, tokens it signs with our PKCS#8
//! keys verify here, for ES256, EdDSA, PS256, RS256, and SMART's ES384 and RS384 (SPECS.md
//! b.2 item 10). Its hostile outputs (an embedded `jwk`, HMAC keyed with our public key, an
//! ES384 header over a P-256 key) are refused here.

use std::sync::OnceLock;

use heartgate_core::clock::UnixTime;
use heartgate_core::jose::{
    sign_jwt, verify_jwt, Algorithm, AlgorithmSet, AudienceRule, JoseError, SigningKey, TypRule,
    Validation,
};
use jsonwebtoken::{DecodingKey, EncodingKey, Header};
use serde_json::{json, Value};

const ISS: &str = "https://as.example";
const AUD: &str = "https://rs.example";
/// heartgate verifies at this fixed time; `jsonwebtoken` checks `exp` against the system
/// clock, so the tokens expire far in the future (2096) and carry an `iat` in the past.
const NOW: i64 = 1_700_000_000;
const EXP: i64 = 4_000_000_000;

fn key(alg: Algorithm) -> &'static SigningKey {
    static ES256: OnceLock<SigningKey> = OnceLock::new();
    static ES384: OnceLock<SigningKey> = OnceLock::new();
    static EDDSA: OnceLock<SigningKey> = OnceLock::new();
    static RSA: OnceLock<SigningKey> = OnceLock::new();
    static RS256: OnceLock<SigningKey> = OnceLock::new();
    static RS384: OnceLock<SigningKey> = OnceLock::new();
    // The RSA algorithms share one generated key (generation is slow).
    let rsa_for =
        |alg| SigningKey::from_pkcs8_der(alg, &key(Algorithm::PS256).to_pkcs8_der()).unwrap();
    match alg {
        Algorithm::ES256 => ES256.get_or_init(|| SigningKey::generate(alg).unwrap()),
        Algorithm::ES384 => ES384.get_or_init(|| SigningKey::generate(alg).unwrap()),
        Algorithm::EdDSA => EDDSA.get_or_init(|| SigningKey::generate(alg).unwrap()),
        Algorithm::PS256 => RSA.get_or_init(|| SigningKey::generate(alg).unwrap()),
        Algorithm::RS256 => RS256.get_or_init(|| rsa_for(alg)),
        Algorithm::RS384 => RS384.get_or_init(|| rsa_for(alg)),
        other => panic!("no interop key for {other}"),
    }
}

fn their_alg(alg: Algorithm) -> jsonwebtoken::Algorithm {
    match alg {
        Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        Algorithm::ES384 => jsonwebtoken::Algorithm::ES384,
        Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        Algorithm::PS256 => jsonwebtoken::Algorithm::PS256,
        Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        Algorithm::RS384 => jsonwebtoken::Algorithm::RS384,
        other => panic!("no jsonwebtoken algorithm for {other}"),
    }
}

fn claims() -> Value {
    json!({
        "iss": ISS, "aud": AUD, "sub": "alice", "client_id": "c1", "scope": "openid",
        "iat": NOW, "exp": EXP, "jti": "0b8e2a9c", "name": "Zoë \u{202e}",
    })
}

fn our_rules() -> Validation {
    Validation::new(
        AlgorithmSet::ALL,
        TypRule::Required("at+jwt"),
        AudienceRule::Contains(AUD.into()),
    )
    .issuer(ISS)
}

fn their_rules(alg: Algorithm) -> jsonwebtoken::Validation {
    let mut v = jsonwebtoken::Validation::new(their_alg(alg));
    v.set_audience(&[AUD]);
    v.set_issuer(&[ISS]);
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    v
}

/// Their decoding key, built from the members of our published JWK.
fn their_key_from_components(alg: Algorithm) -> DecodingKey {
    let jwk = key(alg).verifying_key().to_jwk();
    let m = |name: &str| jwk[name].as_str().unwrap().to_owned();
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => {
            DecodingKey::from_ec_components(&m("x"), &m("y")).unwrap()
        }
        Algorithm::EdDSA => DecodingKey::from_ed_components(&m("x")).unwrap(),
        _ => DecodingKey::from_rsa_components(&m("n"), &m("e")).unwrap(),
    }
}

/// Their decoding key, parsed by their JWK reader from our published JWK.
fn their_key_from_jwk(alg: Algorithm) -> DecodingKey {
    let text = Value::Object(key(alg).verifying_key().to_jwk()).to_string();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(&text).unwrap();
    DecodingKey::from_jwk(&jwk).unwrap()
}

fn their_encoding_key(alg: Algorithm, pem: &str) -> EncodingKey {
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    }
}

fn their_header(alg: Algorithm, kid: &str) -> Header {
    let mut h = Header::new(their_alg(alg));
    h.typ = Some("at+jwt".into());
    h.kid = Some(kid.into());
    h
}

// ------------------------------------------------------------------------------------------
// heartgate signs, jsonwebtoken verifies
// ------------------------------------------------------------------------------------------

fn ours_verify_in_theirs(alg: Algorithm) {
    let k = key(alg);
    let token = sign_jwt(k, Some("at+jwt"), claims().as_object().unwrap()).unwrap();
    for (how, their_key) in [
        ("components", their_key_from_components(alg)),
        ("JWK", their_key_from_jwk(alg)),
    ] {
        let data = jsonwebtoken::decode::<Value>(&token, &their_key, &their_rules(alg))
            .unwrap_or_else(|e| panic!("{alg:?} via {how}: {e:?}"));
        assert_eq!(data.claims, claims(), "{alg:?} via {how}");
        assert_eq!(data.header.alg, their_alg(alg));
        assert_eq!(data.header.kid.as_deref(), Some(k.kid()));
        assert_eq!(data.header.typ.as_deref(), Some("at+jwt"));
    }
}

#[test]
fn es256_token_signed_by_heartgate_verifies_in_jsonwebtoken() {
    ours_verify_in_theirs(Algorithm::ES256);
}

#[test]
fn eddsa_token_signed_by_heartgate_verifies_in_jsonwebtoken() {
    ours_verify_in_theirs(Algorithm::EdDSA);
}

#[test]
fn ps256_token_signed_by_heartgate_verifies_in_jsonwebtoken() {
    ours_verify_in_theirs(Algorithm::PS256);
}

#[test]
fn rs256_token_signed_by_heartgate_verifies_in_jsonwebtoken() {
    ours_verify_in_theirs(Algorithm::RS256);
}

#[test]
fn es384_token_signed_by_heartgate_verifies_in_jsonwebtoken() {
    ours_verify_in_theirs(Algorithm::ES384);
}

#[test]
fn rs384_token_signed_by_heartgate_verifies_in_jsonwebtoken() {
    ours_verify_in_theirs(Algorithm::RS384);
}

#[test]
fn heartgate_p384_jwk_reads_as_p384_in_jsonwebtoken() {
    let text = Value::Object(key(Algorithm::ES384).verifying_key().to_jwk()).to_string();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(&text).unwrap();
    let jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec) = &jwk.algorithm else {
        panic!("not an EC JWK: {text}");
    };
    assert_eq!(ec.curve, jsonwebtoken::jwk::EllipticCurve::P384);
    assert_eq!(
        jwk.common.key_algorithm,
        Some(jsonwebtoken::jwk::KeyAlgorithm::ES384)
    );
}

#[test]
fn heartgate_token_with_a_changed_payload_fails_in_jsonwebtoken() {
    let token = sign_jwt(
        key(Algorithm::ES256),
        Some("at+jwt"),
        claims().as_object().unwrap(),
    )
    .unwrap();
    let mut forged_claims = claims();
    forged_claims["sub"] = json!("mallory");
    let forged_payload = heartgate_core::jose::b64::encode(forged_claims.to_string());
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[1] = &forged_payload;
    let forged = parts.join(".");
    let e = jsonwebtoken::decode::<Value>(
        &forged,
        &their_key_from_components(Algorithm::ES256),
        &their_rules(Algorithm::ES256),
    )
    .unwrap_err();
    assert_eq!(e.kind(), &jsonwebtoken::errors::ErrorKind::InvalidSignature);
}

// ------------------------------------------------------------------------------------------
// jsonwebtoken signs, heartgate verifies
// ------------------------------------------------------------------------------------------

fn theirs_verify_in_ours(alg: Algorithm, pem: &str, our_key: &SigningKey) {
    let token = jsonwebtoken::encode(
        &their_header(alg, our_key.kid()),
        &claims(),
        &their_encoding_key(alg, pem),
    )
    .unwrap_or_else(|e| panic!("{alg:?}: {e:?}"));
    let ok = verify_jwt(&token, our_key.verifying_key(), &our_rules(), UnixTime(NOW))
        .unwrap_or_else(|e| panic!("{alg:?}: {e:?}"));
    assert_eq!(Value::Object(ok.as_map().clone()), claims());
    assert_eq!(ok.kid(), our_key.kid());
    assert_eq!(ok.header().alg(), alg);
}

#[test]
fn es256_token_signed_by_jsonwebtoken_verifies_in_heartgate() {
    let k = key(Algorithm::ES256);
    theirs_verify_in_ours(Algorithm::ES256, &k.to_pkcs8_pem(), k);
}

#[test]
fn eddsa_token_signed_by_jsonwebtoken_verifies_in_heartgate() {
    // ring writes PKCS#8 v2 (with the public key).
    let k = key(Algorithm::EdDSA);
    theirs_verify_in_ours(Algorithm::EdDSA, &k.to_pkcs8_pem(), k);
}

#[test]
fn eddsa_token_signed_by_jsonwebtoken_with_an_openssl_v1_key_verifies_in_heartgate() {
    // OpenSSL writes PKCS#8 v1 (no public key); both sides load it.
    let pem = include_str!("data/jose/openssl_ed25519_pkcs8.pem");
    let k = SigningKey::from_pkcs8_pem(Algorithm::EdDSA, pem).unwrap();
    theirs_verify_in_ours(Algorithm::EdDSA, pem, &k);
}

#[test]
fn ps256_token_signed_by_jsonwebtoken_verifies_in_heartgate() {
    let k = key(Algorithm::PS256);
    theirs_verify_in_ours(Algorithm::PS256, &k.to_pkcs8_pem(), k);
}

#[test]
fn rs256_token_signed_by_jsonwebtoken_verifies_in_heartgate() {
    let k = key(Algorithm::RS256);
    theirs_verify_in_ours(Algorithm::RS256, &k.to_pkcs8_pem(), k);
}

#[test]
fn es384_token_signed_by_jsonwebtoken_verifies_in_heartgate() {
    let k = key(Algorithm::ES384);
    theirs_verify_in_ours(Algorithm::ES384, &k.to_pkcs8_pem(), k);
}

#[test]
fn rs384_token_signed_by_jsonwebtoken_verifies_in_heartgate() {
    let k = key(Algorithm::RS384);
    theirs_verify_in_ours(Algorithm::RS384, &k.to_pkcs8_pem(), k);
}

#[test]
fn jsonwebtoken_rs384_signature_is_byte_identical_to_heartgates() {
    // RSASSA-PKCS1-v1_5 is deterministic: two implementations must agree byte for byte.
    let k = key(Algorithm::RS384);
    let token = jsonwebtoken::encode(
        &their_header(Algorithm::RS384, k.kid()),
        &claims(),
        &their_encoding_key(Algorithm::RS384, &k.to_pkcs8_pem()),
    )
    .unwrap();
    let (input, sig) = token.rsplit_once('.').unwrap();
    assert_eq!(
        heartgate_core::jose::b64::encode(k.sign(input.as_bytes()).unwrap()),
        sig
    );
}

#[test]
fn j4_jsonwebtoken_es384_token_is_refused_by_a_p256_key_and_vice_versa() {
    // Their ES384 token, kid of our ES256 key (and the reverse): the key's curve decides.
    for (signer, named) in [
        (Algorithm::ES384, Algorithm::ES256),
        (Algorithm::ES256, Algorithm::ES384),
    ] {
        let token = jsonwebtoken::encode(
            &their_header(signer, key(named).kid()),
            &claims(),
            &their_encoding_key(signer, &key(signer).to_pkcs8_pem()),
        )
        .unwrap();
        assert_eq!(
            verify_jwt(
                &token,
                key(named).verifying_key(),
                &our_rules(),
                UnixTime(NOW)
            )
            .unwrap_err(),
            JoseError::AlgorithmKeyMismatch,
            "{signer} token, {named} key"
        );
    }
}

#[test]
fn openssl_keys_sign_in_jsonwebtoken_and_verify_in_heartgate() {
    for (alg, pem) in [
        (
            Algorithm::ES256,
            include_str!("data/jose/openssl_p256_pkcs8.pem"),
        ),
        (
            Algorithm::PS256,
            include_str!("data/jose/openssl_rsa2048_pkcs8.pem"),
        ),
        (
            Algorithm::RS256,
            include_str!("data/jose/openssl_rsa2048_pkcs8.pem"),
        ),
        (
            Algorithm::ES384,
            include_str!("data/jose/openssl_p384_pkcs8.pem"),
        ),
        (
            Algorithm::RS384,
            include_str!("data/jose/openssl_rsa2048_pkcs8.pem"),
        ),
    ] {
        let k = SigningKey::from_pkcs8_pem(alg, pem).unwrap();
        theirs_verify_in_ours(alg, pem, &k);
    }
}

// ------------------------------------------------------------------------------------------
// jsonwebtoken's hostile outputs are refused by heartgate
// ------------------------------------------------------------------------------------------

#[test]
fn j8_jsonwebtoken_token_with_an_embedded_jwk_is_refused() {
    // An attacker signs with their own key and embeds it in the header.
    let attacker = SigningKey::generate(Algorithm::ES256).unwrap();
    let victim = key(Algorithm::ES256);
    let mut h = their_header(Algorithm::ES256, victim.kid());
    let jwk_text = Value::Object(attacker.verifying_key().to_jwk()).to_string();
    h.jwk = Some(serde_json::from_str(&jwk_text).unwrap());
    let token = jsonwebtoken::encode(
        &h,
        &claims(),
        &their_encoding_key(Algorithm::ES256, &attacker.to_pkcs8_pem()),
    )
    .unwrap();
    assert_eq!(
        verify_jwt(&token, victim.verifying_key(), &our_rules(), UnixTime(NOW)).unwrap_err(),
        JoseError::HeaderKeyReference
    );
}

#[test]
fn j2_jsonwebtoken_hs256_keyed_with_our_public_jwk_is_refused() {
    let victim = key(Algorithm::ES256);
    let secret = Value::Object(victim.verifying_key().to_jwk()).to_string();
    let mut h = Header::new(jsonwebtoken::Algorithm::HS256);
    h.typ = Some("at+jwt".into());
    h.kid = Some(victim.kid().into());
    let token =
        jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_secret(secret.as_bytes())).unwrap();
    assert_eq!(
        verify_jwt(&token, victim.verifying_key(), &our_rules(), UnixTime(NOW)).unwrap_err(),
        JoseError::UnsupportedAlgorithm
    );
}

#[test]
fn j25_jsonwebtoken_default_typ_jwt_is_not_an_access_token() {
    let k = key(Algorithm::ES256);
    let mut h = Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some(k.kid().into());
    assert_eq!(h.typ.as_deref(), Some("JWT"));
    let token = jsonwebtoken::encode(
        &h,
        &claims(),
        &their_encoding_key(Algorithm::ES256, &k.to_pkcs8_pem()),
    )
    .unwrap();
    assert_eq!(
        verify_jwt(&token, k.verifying_key(), &our_rules(), UnixTime(NOW)).unwrap_err(),
        JoseError::WrongType
    );
}
