//! JWT access tokens, side by side in one run: heartgate's issue and validate against
//! raw `ring` sign/verify of the same signing input (the floor: heartgate adds claim
//! building, JSON, base64 and checks), and against the `jsonwebtoken` crate encoding
//! and decoding the same claims (peer; RustCrypto backend). Also opaque and wrapper
//! issuance against their floors (256 random bits + SHA-256; one ES256 signature).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // reason: benchmark code

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use heartgate_core::clock::UnixTime;
use heartgate_core::jose::{b64, Algorithm, KeyRing, SigningKey};
use heartgate_core::token::{
    AccessTokenGrant, AccessTokenValidator, RevokedJtis, TokenFormat, TokenIssuer,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, KeyPair as _};
use serde_json::{json, Map, Value};

const ISS: &str = "https://as.example";
const RS: &str = "https://fhir.example";
const NOW: UnixTime = UnixTime(1_700_000_000);

fn grant(format: TokenFormat) -> AccessTokenGrant {
    AccessTokenGrant {
        client_id: "client-1".into(),
        sub: "user-42".into(),
        pairwise_sub: None,
        scope: "patient/Observation.rs openid".into(),
        aud: vec![RS.into()],
        cnf: None,
        lifetime: 300,
        format,
        auth_time: None,
        acr: None,
        family_id: None,
        context: Map::new(),
    }
}

/// The raw-ring peer for one algorithm: sign or verify `msg` with the same key material.
enum RawRing {
    Ecdsa(signature::EcdsaKeyPair, Vec<u8>),
    Ed(signature::Ed25519KeyPair, Vec<u8>),
    Rsa(
        signature::RsaKeyPair,
        signature::RsaPublicKeyComponents<Vec<u8>>,
    ),
}

impl RawRing {
    fn new(alg: Algorithm, pkcs8: &[u8]) -> Self {
        let rng = SystemRandom::new();
        match alg {
            Algorithm::ES256 => {
                let k = signature::EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    pkcs8,
                    &rng,
                )
                .unwrap();
                let p = k.public_key().as_ref().to_vec();
                RawRing::Ecdsa(k, p)
            }
            Algorithm::EdDSA => {
                let k = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).unwrap();
                let p = k.public_key().as_ref().to_vec();
                RawRing::Ed(k, p)
            }
            _ => {
                let k = signature::RsaKeyPair::from_pkcs8(pkcs8).unwrap();
                let p = k.public().into();
                RawRing::Rsa(k, p)
            }
        }
    }

    fn sign(&self, rng: &SystemRandom, msg: &[u8]) -> Vec<u8> {
        match self {
            RawRing::Ecdsa(k, _) => k.sign(rng, msg).unwrap().as_ref().to_vec(),
            RawRing::Ed(k, _) => k.sign(msg).as_ref().to_vec(),
            RawRing::Rsa(k, _) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PSS_SHA256, rng, msg, &mut sig)
                    .unwrap();
                sig
            }
        }
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) {
        match self {
            RawRing::Ecdsa(_, p) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, p)
                    .verify(msg, sig)
                    .unwrap()
            }
            RawRing::Ed(_, p) => signature::UnparsedPublicKey::new(&signature::ED25519, p)
                .verify(msg, sig)
                .unwrap(),
            RawRing::Rsa(_, p) => p
                .verify(&signature::RSA_PSS_2048_8192_SHA256, msg, sig)
                .unwrap(),
        }
    }
}

fn jwt_alg(alg: Algorithm) -> jsonwebtoken::Algorithm {
    match alg {
        Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        _ => jsonwebtoken::Algorithm::PS256,
    }
}

fn jwt_keys(
    alg: Algorithm,
    key: &SigningKey,
) -> (jsonwebtoken::EncodingKey, jsonwebtoken::DecodingKey) {
    let pem = key.to_pkcs8_pem();
    let jwk = key.verifying_key().to_jwk();
    let s = |n: &str| jwk[n].as_str().unwrap().to_owned();
    match alg {
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

fn bench_alg(c: &mut Criterion, alg: Algorithm) {
    let key = SigningKey::generate(alg).unwrap();
    let raw = RawRing::new(alg, &key.to_pkcs8_der());
    let (enc, dec) = jwt_keys(alg, &key);
    let issuer = TokenIssuer::new(ISS, Arc::new(KeyRing::new(key)));
    let g = grant(TokenFormat::Jwt);
    let sample = issuer.issue_access_token(&g, NOW).unwrap();
    let token = sample.token.expose().to_owned();
    let (signing_input, sig_b64) = token.rsplit_once('.').unwrap();
    let sig = b64::decode(sig_b64).unwrap();
    let claims: Value =
        serde_json::from_slice(&b64::decode(signing_input.split('.').nth(1).unwrap()).unwrap())
            .unwrap();
    let rng = SystemRandom::new();

    let name = alg.as_str();
    let mut group = c.benchmark_group(format!("{name}_issue"));
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("heartgate", "jwt"), |b| {
        b.iter(|| issuer.issue_access_token(&g, NOW).unwrap())
    });
    group.bench_function(BenchmarkId::new("ring", "raw_sign"), |b| {
        b.iter(|| raw.sign(&rng, signing_input.as_bytes()))
    });
    {
        let header = jsonwebtoken::Header::new(jwt_alg(alg));
        group.bench_function(BenchmarkId::new("jsonwebtoken", "encode"), |b| {
            b.iter(|| jsonwebtoken::encode(&header, &claims, &enc).unwrap())
        });
    }
    group.finish();

    let validator = AccessTokenValidator::new(ISS, RS);
    let revoked = RevokedJtis::new();
    let state = issuer.keys().snapshot();
    let mut group = c.benchmark_group(format!("{name}_validate"));
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("heartgate", "jwt"), |b| {
        b.iter(|| validator.validate(&token, &*state, &revoked, NOW).unwrap())
    });
    group.bench_function(BenchmarkId::new("ring", "raw_verify"), |b| {
        b.iter(|| raw.verify(signing_input.as_bytes(), &sig))
    });
    {
        let mut v = jsonwebtoken::Validation::new(jwt_alg(alg));
        v.set_audience(&[RS]);
        v.set_issuer(&[ISS]);
        // The sample's exp is fixed in the past of the wall clock: compare at the same
        // footing by disabling only the time check of the peer (heartgate checks it).
        v.validate_exp = false;
        v.required_spec_claims.clear();
        group.bench_function(BenchmarkId::new("jsonwebtoken", "decode"), |b| {
            b.iter(|| jsonwebtoken::decode::<Value>(&token, &dec, &v).unwrap())
        });
    }
    group.finish();
}

fn jwt_benches(c: &mut Criterion) {
    for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::PS256] {
        bench_alg(c, alg);
    }
}

fn opaque_and_wrapper(c: &mut Criterion) {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let raw = RawRing::new(Algorithm::ES256, &key.to_pkcs8_der());
    let issuer = TokenIssuer::new(ISS, Arc::new(KeyRing::new(key)));
    let rng = SystemRandom::new();

    let mut group = c.benchmark_group("opaque_issue");
    group.throughput(Throughput::Elements(1));
    let g = grant(TokenFormat::Opaque);
    group.bench_function(BenchmarkId::new("heartgate", "opaque_with_record"), |b| {
        b.iter(|| {
            let t = issuer.issue_access_token(&g, NOW).unwrap();
            t.record.to_bytes().unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("ring", "random_256_and_sha256"), |b| {
        b.iter(|| {
            let mut buf = [0u8; 32];
            rng.fill(&mut buf).unwrap();
            let s = b64::encode(buf);
            ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        })
    });
    group.finish();

    let mut group = c.benchmark_group("wrapper_issue");
    group.throughput(Throughput::Elements(1));
    let g = grant(TokenFormat::Wrapper);
    group.bench_function(BenchmarkId::new("heartgate", "wrapper_with_record"), |b| {
        b.iter(|| {
            let t = issuer.issue_access_token(&g, NOW).unwrap();
            t.record.to_bytes().unwrap()
        })
    });
    let msg = json!({"iss": ISS, "aud": RS, "exp": 1, "iat": 1, "jti": "x".repeat(22), "client_id": "client-1",
        "scope": "patient/Observation.rs openid", "ref": format!("hgref_{}", "x".repeat(43))})
    .to_string();
    group.bench_function(BenchmarkId::new("ring", "raw_sign"), |b| {
        b.iter(|| raw.sign(&rng, msg.as_bytes()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = jwt_benches, opaque_and_wrapper
}
criterion_main!(benches);
