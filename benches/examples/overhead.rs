//! Interleaved timing of heartgate issue/validate against raw ring, to see where the
//! overhead goes without criterion's noise. `cargo run --release --example overhead`.
#![allow(missing_docs, clippy::unwrap_used)] // reason: measurement script

use std::sync::Arc;
use std::time::Instant;

use heartgate_core::clock::UnixTime;
use heartgate_core::jose::{b64, Algorithm, KeyRing, SigningKey};
use heartgate_core::token::{
    AccessTokenGrant, AccessTokenValidator, RevokedJtis, TokenFormat, TokenIssuer,
};
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair as _};

fn main() {
    let now = UnixTime(1_700_000_000);
    for alg in [Algorithm::ES256, Algorithm::EdDSA] {
        let key = SigningKey::generate(alg).unwrap();
        let pkcs8 = key.to_pkcs8_der();
        let issuer = TokenIssuer::new("https://as.example", Arc::new(KeyRing::new(key)));
        let g = AccessTokenGrant {
            client_id: "client-1".into(),
            sub: "user-42".into(),
            pairwise_sub: None,
            scope: "patient/Observation.rs openid".into(),
            aud: vec!["https://fhir.example".into()],
            cnf: None,
            lifetime: 300,
            format: TokenFormat::Jwt,
            auth_time: None,
            acr: None,
            family_id: None,
            context: Default::default(),
        };
        let t = issuer.issue_access_token(&g, now).unwrap();
        let token = t.token.expose().to_owned();
        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig = b64::decode(sig).unwrap();
        let rng = SystemRandom::new();
        type Op = Box<dyn Fn()>;
        let (sign, verify): (Op, Op) = match alg {
            Algorithm::ES256 => {
                let k = signature::EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &pkcs8,
                    &rng,
                )
                .unwrap();
                let p = k.public_key().as_ref().to_vec();
                let input2 = input.to_owned();
                let sig2 = sig.clone();
                let input3 = input.to_owned();
                let rng2 = SystemRandom::new();
                (
                    Box::new(move || {
                        k.sign(&rng2, input2.as_bytes()).unwrap();
                    }),
                    Box::new(move || {
                        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &p)
                            .verify(input3.as_bytes(), &sig2)
                            .unwrap()
                    }),
                )
            }
            _ => {
                let k = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).unwrap();
                let p = k.public_key().as_ref().to_vec();
                let input2 = input.to_owned();
                let input3 = input.to_owned();
                let sig2 = sig.clone();
                (
                    Box::new(move || {
                        k.sign(input2.as_bytes());
                    }),
                    Box::new(move || {
                        signature::UnparsedPublicKey::new(&signature::ED25519, &p)
                            .verify(input3.as_bytes(), &sig2)
                            .unwrap()
                    }),
                )
            }
        };
        let v = AccessTokenValidator::new("https://as.example", "https://fhir.example");
        let revoked = RevokedJtis::new();
        let state = issuer.keys().snapshot();
        let n = 4000;
        let mut totals = [0u128; 4];
        // Alternate single calls so that drift in the machine's speed hits both sides.
        for _ in 0..5 {
            for _ in 0..n {
                let t0 = Instant::now();
                issuer.issue_access_token(&g, now).unwrap();
                let t1 = Instant::now();
                sign();
                let t2 = Instant::now();
                v.validate(&token, &*state, &revoked, now).unwrap();
                let t3 = Instant::now();
                verify();
                let t4 = Instant::now();
                totals[0] += (t1 - t0).as_nanos();
                totals[1] += (t2 - t1).as_nanos();
                totals[2] += (t3 - t2).as_nanos();
                totals[3] += (t4 - t3).as_nanos();
            }
        }
        let per = |x: u128| x as f64 / (5.0 * n as f64);
        println!(
            "{alg}: issue {:.0} ns vs raw sign {:.0} ns (ratio {:.2}); validate {:.0} ns vs raw verify {:.0} ns (ratio {:.2})",
            per(totals[0]), per(totals[1]), per(totals[1]) / per(totals[0]),
            per(totals[2]), per(totals[3]), per(totals[3]) / per(totals[2])
        );
    }
}
