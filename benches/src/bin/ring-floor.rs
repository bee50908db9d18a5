//! The floor under every JWT benchmark: how long `ring` alone takes for one signature and
//! one verification (P-256 ECDSA, Ed25519, RSA-PSS and PKCS#1 v1.5 at 2048 bits) on this
//! machine, with no JOSE, JSON or base64 around it, and for one side of a TLS 1.3 X25519
//! key exchange. Prints µs per operation, best of 7 rounds of ~0.3 s each.
//!
//!     cargo run --release -p heartgate-benches --bin ring-floor

use std::hint::black_box;
use std::time::Instant;

use heartgate_core::jose::{Algorithm, SigningKey};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};

/// A JWT-sized signing input: the base64url header and payload of a typical access token.
const MESSAGE: &[u8] = &[b'a'; 260];

fn best_of(mut f: impl FnMut()) -> f64 {
    let mut n = 1u32;
    loop {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        if t.elapsed().as_secs_f64() > 0.04 {
            break;
        }
        n *= 2;
    }
    let mut best = f64::INFINITY;
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / f64::from(n) * 1e6);
    }
    best
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rng = SystemRandom::new();
    println!("| ring 0.17 alone | sign µs | verify µs |");
    println!("| --- | ---: | ---: |");
    for alg in [
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::PS256,
        Algorithm::RS256,
    ] {
        let der = SigningKey::generate(alg)?.to_pkcs8_der();
        let (sign, verify) = match alg {
            Algorithm::ES256 => {
                let k = EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &der,
                    &rng,
                )
                .map_err(|e| e.to_string())?;
                let sig = k.sign(&rng, MESSAGE).map_err(|e| e.to_string())?;
                let pk = signature::UnparsedPublicKey::new(
                    &signature::ECDSA_P256_SHA256_FIXED,
                    k.public_key().as_ref().to_vec(),
                );
                (
                    best_of(|| {
                        let _ = black_box(k.sign(&rng, black_box(MESSAGE)));
                    }),
                    best_of(|| {
                        let _ = black_box(pk.verify(black_box(MESSAGE), sig.as_ref()));
                    }),
                )
            }
            Algorithm::EdDSA => {
                let k =
                    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| e.to_string())?;
                let sig = k.sign(MESSAGE);
                let pk = signature::UnparsedPublicKey::new(
                    &signature::ED25519,
                    k.public_key().as_ref().to_vec(),
                );
                (
                    best_of(|| {
                        let _ = black_box(k.sign(black_box(MESSAGE)));
                    }),
                    best_of(|| {
                        let _ = black_box(pk.verify(black_box(MESSAGE), sig.as_ref()));
                    }),
                )
            }
            _ => {
                let (pad, vp): (
                    &'static dyn signature::RsaEncoding,
                    &'static signature::RsaParameters,
                ) = if alg == Algorithm::PS256 {
                    (
                        &signature::RSA_PSS_SHA256,
                        &signature::RSA_PSS_2048_8192_SHA256,
                    )
                } else {
                    (
                        &signature::RSA_PKCS1_SHA256,
                        &signature::RSA_PKCS1_2048_8192_SHA256,
                    )
                };
                let k = RsaKeyPair::from_pkcs8(&der).map_err(|e| e.to_string())?;
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(pad, &rng, MESSAGE, &mut sig)
                    .map_err(|e| e.to_string())?;
                let pk = signature::UnparsedPublicKey::new(vp, k.public_key().as_ref().to_vec());
                let mut out = vec![0; k.public().modulus_len()];
                (
                    best_of(|| {
                        let _ = black_box(k.sign(pad, &rng, black_box(MESSAGE), &mut out));
                    }),
                    best_of(|| {
                        let _ = black_box(pk.verify(black_box(MESSAGE), &sig));
                    }),
                )
            }
        };
        println!("| {} | {sign:.1} | {verify:.1} |", alg.as_str());
    }
    // What each side of a TLS 1.3 handshake (full or resumed: PSK with ECDHE) spends on
    // its X25519 key share: a fresh key pair and one agreement.
    let peer = ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::X25519, &rng)
        .map_err(|e| e.to_string())?;
    let peer_public = peer.compute_public_key().map_err(|e| e.to_string())?;
    let share = best_of(|| {
        let k = ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::X25519, &rng);
        let Ok(k) = k else { return };
        let _ = black_box(k.compute_public_key());
        let theirs =
            ring::agreement::UnparsedPublicKey::new(&ring::agreement::X25519, peer_public.as_ref());
        let _ = black_box(ring::agreement::agree_ephemeral(k, &theirs, |s| s[0]));
    });
    println!("\n| ring 0.17 alone | µs per handshake side |\n| --- | ---: |");
    println!("| X25519 key pair + agreement | {share:.1} |");
    Ok(())
}
