//! Interoperability with the `jsonwebtoken` crate (dev-dependency only): its tokens
//! verify with heartgate, and heartgate's with it, for ES256, EdDSA, PS256 and RS256.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use heartgate_core::clock::UnixTime;
use heartgate_core::jose::*;
use serde_json::{json, Value};

const NOW: i64 = 1_700_000_000;

fn peer_alg(a: Algorithm) -> jsonwebtoken::Algorithm {
    match a {
        Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        Algorithm::PS256 => jsonwebtoken::Algorithm::PS256,
        _ => jsonwebtoken::Algorithm::RS256,
    }
}

fn peer_keys(k: &SigningKey) -> (jsonwebtoken::EncodingKey, jsonwebtoken::DecodingKey) {
    let pem = k.to_pkcs8_pem();
    let jwk = k.verifying_key().to_jwk();
    let s = |n: &str| jwk[n].as_str().unwrap().to_owned();
    match k.algorithm() {
        Algorithm::ES256 => (
            jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            jsonwebtoken::DecodingKey::from_ec_components(&s("x"), &s("y")).unwrap(),
        ),
        Algorithm::EdDSA => (
            jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
            jsonwebtoken::DecodingKey::from_ed_components(&s("x")).unwrap(),
        ),
        _ => (
            jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            jsonwebtoken::DecodingKey::from_rsa_components(&s("n"), &s("e")).unwrap(),
        ),
    }
}

fn claims() -> Value {
    json!({"iss": "https://as", "aud": "rs", "sub": "u", "exp": NOW + 60, "iat": NOW})
}

#[test]
fn heartgate_tokens_verify_with_jsonwebtoken() {
    for alg in Algorithm::ALL {
        let k = SigningKey::generate(alg).unwrap();
        let (_, dec) = peer_keys(&k);
        let token = sign_jwt(&k, Some("at+jwt"), claims().as_object().unwrap()).unwrap();
        let mut v = jsonwebtoken::Validation::new(peer_alg(alg));
        v.set_audience(&["rs"]);
        v.validate_exp = false; // fixed timestamps; heartgate's side checks time
        let data = jsonwebtoken::decode::<Value>(&token, &dec, &v).unwrap();
        assert_eq!(data.claims, claims(), "{alg}");
        assert_eq!(data.header.kid.as_deref(), Some(k.kid()));
    }
}

#[test]
fn jsonwebtoken_tokens_verify_with_heartgate() {
    for alg in Algorithm::ALL {
        let k = SigningKey::generate(alg).unwrap();
        let (enc, _) = peer_keys(&k);
        let mut header = jsonwebtoken::Header::new(peer_alg(alg));
        header.kid = Some(k.kid().to_owned());
        let token = jsonwebtoken::encode(&header, &claims(), &enc).unwrap();
        let v = Validation::new(
            AlgorithmSet::ALL,
            TypRule::OptionalOneOf(&["JWT"]),
            AudienceRule::Contains("rs".into()),
        )
        .issuer("https://as");
        let ok = verify_jwt(&token, k.verifying_key(), &v, UnixTime(NOW)).unwrap();
        assert_eq!(Value::Object(ok.as_map().clone()), claims(), "{alg}");
    }
}
