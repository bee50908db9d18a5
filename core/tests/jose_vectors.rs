//! RFC example vectors, stored as data files under tests/data/jose/.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use heartgate_core::jose::*;
use serde_json::Value;

fn load(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

fn key_of(v: &Value, opts: &JwkSetOptions) -> VerifyingKey {
    parse_jwk(v["jwk"].to_string().as_bytes(), opts).unwrap()
}

#[test]
fn rfc7638_3_1_rsa_thumbprint() {
    let v = load(include_str!("data/jose/rfc7638_3_1.json"));
    let k = key_of(&v, &JwkSetOptions::default());
    assert_eq!(k.thumbprint(), v["thumbprint"].as_str().unwrap());
    assert_eq!(k.kid(), "2011-04-29");
    assert_eq!(k.algorithm(), Algorithm::RS256);
}

#[test]
fn rfc7515_a3_es256_example_verifies() {
    let v = load(include_str!("data/jose/rfc7515_a3_es256.json"));
    let k = key_of(&v, &JwkSetOptions::default());
    let jws = parse_compact(v["jws"].as_str().unwrap(), ACCESS_TOKEN_MAX_LEN).unwrap();
    assert_eq!(jws.header().alg(), Algorithm::ES256);
    let ok = jws.verify(&k, AlgorithmSet::ALL).unwrap();
    let claims = Claims::from_json(ok.payload()).unwrap();
    assert_eq!(claims.required_string("iss").unwrap(), "joe");
    // One flipped signature bit fails.
    let mut bad = v["jws"].as_str().unwrap().to_owned();
    let last = bad.pop().unwrap();
    bad.push(if last == 'Q' { 'R' } else { 'Q' });
    let err = parse_compact(&bad, ACCESS_TOKEN_MAX_LEN)
        .and_then(|j| j.verify(&k, AlgorithmSet::ALL).map(|_| ()));
    assert!(err.is_err());
}

#[test]
fn rfc8037_a3_a4_ed25519_thumbprint_and_signature() {
    let v = load(include_str!("data/jose/rfc8037_a4_ed25519.json"));
    let k = key_of(&v, &JwkSetOptions::default());
    assert_eq!(k.thumbprint(), v["thumbprint"].as_str().unwrap());
    let jws = parse_compact(v["jws"].as_str().unwrap(), ACCESS_TOKEN_MAX_LEN).unwrap();
    let ok = jws.verify(&k, AlgorithmSet::ALL).unwrap();
    assert_eq!(ok.payload(), v["payload"].as_str().unwrap().as_bytes());
    // The same signature under an algorithm set without EdDSA is refused.
    let jws = parse_compact(v["jws"].as_str().unwrap(), ACCESS_TOKEN_MAX_LEN).unwrap();
    assert_eq!(
        jws.verify(&k, AlgorithmSet::of(&[Algorithm::ES256]))
            .unwrap_err(),
        JoseError::AlgorithmNotAllowed
    );
}

#[test]
fn exported_jwk_thumbprint_matches_rfc7638_computation_for_every_algorithm() {
    for alg in Algorithm::ALL {
        let k = SigningKey::generate(alg).unwrap();
        let jwk = k.verifying_key().to_jwk();
        let parsed = parse_jwk(
            serde_json::to_string(&jwk).unwrap().as_bytes(),
            &JwkSetOptions::default(),
        )
        .unwrap();
        assert_eq!(parsed.thumbprint(), k.kid());
        assert_eq!(parsed.algorithm(), alg);
    }
}

#[test]
fn rfc7517_a1_public_key_set_keeps_the_signature_key_and_skips_the_encryption_key() {
    let set = JwkSet::from_json(include_bytes!("data/jose/rfc7517_a1_public_keys.json"), &JwkSetOptions::default()).unwrap();
    assert_eq!(set.keys().len(), 1, "the `use: enc` EC key is never a verification key");
    assert_eq!(set.keys()[0].kid(), "2011-04-29");
    assert_eq!(set.keys()[0].algorithm(), Algorithm::RS256);
    assert!(set.get("1").is_none());
}
