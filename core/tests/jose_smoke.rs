//! Round trips through the public JOSE API for every algorithm.
#![allow(clippy::unwrap_used)] // reason: test code; a failed unwrap is a failed test

use heartgate_core::clock::UnixTime;
use heartgate_core::jose::*;
use serde_json::json;

#[test]
fn sign_verify_round_trip_every_algorithm() {
    for alg in Algorithm::ALL {
        let key = SigningKey::generate(alg).unwrap();
        let claims = json!({"iss":"https://as","aud":"rs","exp":2000,"iat":1000,"sub":"s"});
        let token = sign_jwt(&key, Some("at+jwt"), claims.as_object().unwrap()).unwrap();
        let v = Validation::new(
            AlgorithmSet::ALL,
            TypRule::Required("at+jwt"),
            AudienceRule::Contains("rs".into()),
        )
        .issuer("https://as");
        let ok = verify_jwt(&token, key.verifying_key(), &v, UnixTime(1500)).unwrap();
        assert_eq!(ok.required_string("sub").unwrap(), "s");
        assert_eq!(ok.kid(), key.kid());
        // PKCS#8 PEM round trip keeps the key.
        let again = SigningKey::from_pkcs8_pem(alg, &key.to_pkcs8_pem()).unwrap();
        assert_eq!(again.kid(), key.kid());
        // JWK round trip.
        let jwks = JwkSet::new(vec![key.verifying_key().clone()]).unwrap();
        let parsed =
            JwkSet::from_json(jwks.to_json().as_bytes(), &JwkSetOptions::default()).unwrap();
        assert_eq!(parsed.keys()[0], *key.verifying_key());
        assert!(verify_jwt(&token, &parsed, &v, UnixTime(1500)).is_ok());
    }
}
