//! Keys through a callback: the app's [`Signer`] gives its public JWK and signs bytes, so
//! the private key can stay in Android Keystore or the Secure Enclave. A software P-256
//! signer over core's [`SigningKey`] serves tests and platforms without secure hardware.
//!
//! Signature format (decided here, documented in the README): `sign` returns the JWS
//! signature exactly as RFC 7518 §3.4 spells it, for ES256 the 64-byte `r ‖ s` (JOSE /
//! IEEE P1363), never ASN.1 DER. Every signature the callback returns is verified with the
//! callback's own public JWK before it leaves this crate (core's ring verifier, which
//! refuses DER, 63/65 bytes and r = s = 0: THREATS J15), so a wrong format or a key that
//! does not match the JWK is a [`HeartgateError::SignerFailed`], never a JWS the server
//! would refuse later.
//!
//! What it never does: implement a signature itself, take the algorithm from anywhere but
//! the key (J4), or keep a private key it did not create.

use std::sync::Arc;

use heartgate_core::jose::{
    b64, parse_jwk, Algorithm, AlgorithmSet, JwkSetOptions, SigningKey, VerifyingKey,
};
use serde_json::{Map, Value};

use crate::error::{HeartgateError, Result};

/// Signs for the app. Implemented in Kotlin or Swift (hardware keys), or by
/// [`software_signer`].
#[uniffi::export(with_foreign)]
pub trait Signer: Send + Sync {
    /// The public key as a JWK (JSON object text): `kty`, `crv`, `x`, `y`, and the
    /// `kid` the server knows the key by (RFC 7517 §4.5). No private members.
    fn public_jwk(&self) -> Result<String>;
    /// Sign `message` with the private key: for ES256 (P-256, SHA-256) the 64-byte
    /// `r ‖ s` of RFC 7518 §3.4, **not** DER. On the JVM: `SHA256withECDSAinP1363Format`;
    /// Android Keystore and CryptoKit's `derRepresentation` give DER, so convert (CryptoKit's
    /// `rawRepresentation` is already r ‖ s).
    fn sign(&self, message: Vec<u8>) -> Result<Vec<u8>>;
}

/// A software P-256 (ES256) key from core, for tests and devices without secure hardware.
struct SoftwareSigner {
    key: SigningKey,
    jwk: String,
}

impl Signer for SoftwareSigner {
    fn public_jwk(&self) -> Result<String> {
        Ok(self.jwk.clone())
    }

    fn sign(&self, message: Vec<u8>) -> Result<Vec<u8>> {
        self.key
            .sign(&message)
            .map_err(|_| HeartgateError::signer("signing_failed"))
    }
}

/// A new P-256 private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), for
/// [`software_signer`]. The app must store it encrypted (it is the device's identity);
/// prefer a hardware-backed [`Signer`] where the platform has one.
#[uniffi::export]
pub fn generate_p256_private_key() -> Result<String> {
    let key = SigningKey::generate(Algorithm::ES256)
        .map_err(|_| HeartgateError::internal("key_generation"))?;
    Ok(key.to_pkcs8_pem().to_string())
}

/// A [`Signer`] over a PKCS#8 PEM P-256 private key. Its `kid` is the RFC 7638
/// thumbprint of the public key unless `kid` names another.
#[uniffi::export]
pub fn software_signer(pkcs8_pem: String, kid: Option<String>) -> Result<Arc<dyn Signer>> {
    let key = SigningKey::from_pkcs8_pem(Algorithm::ES256, &pkcs8_pem)
        .map_err(|_| HeartgateError::argument("private_key"))?;
    let key = match kid {
        Some(k) => key
            .with_kid(k)
            .map_err(|_| HeartgateError::argument("kid"))?,
        None => key,
    };
    let jwk = Value::Object(key.verifying_key().to_jwk()).to_string();
    Ok(Arc::new(SoftwareSigner { key, jwk }))
}

/// The signer's public key, checked by core's JWK parser (no private members, an
/// implemented algorithm, P-256/P-384/Ed25519/RSA ≥ 2048: THREATS J17, J33).
pub(crate) fn public_key(signer: &dyn Signer) -> Result<VerifyingKey> {
    let jwk = signer.public_jwk()?;
    parse_jwk(jwk.as_bytes(), &JwkSetOptions::default())
        .map_err(|_| HeartgateError::signer("public_jwk"))
}

/// Sign `claims` as a compact JWS (RFC 7515 §7.1) with the signer's key, whose algorithm
/// must be in `allowed`; header `alg`, `kid` (`kid`, or else the JWK's) and `typ` (when
/// given).
pub(crate) fn sign_jwt(
    signer: &dyn Signer,
    kid: Option<&str>,
    typ: Option<&str>,
    claims: &Map<String, Value>,
    allowed: AlgorithmSet,
) -> Result<String> {
    let key = public_key(signer)?;
    let alg = key.algorithm();
    if !allowed.contains(alg) {
        return Err(HeartgateError::signer("algorithm_not_allowed"));
    }
    let mut header = Map::new();
    header.insert("alg".into(), alg.as_str().into());
    header.insert("kid".into(), kid.unwrap_or(key.kid()).into());
    if let Some(t) = typ {
        header.insert("typ".into(), t.into());
    }
    let payload =
        serde_json::to_vec(claims).map_err(|_| HeartgateError::internal("claims_encoding"))?;
    let mut out = b64::encode(Value::Object(header).to_string());
    out.push('.');
    b64::encode_into(payload, &mut out);
    let signature = signer.sign(out.as_bytes().to_vec())?;
    key.verify(alg, out.as_bytes(), &signature)
        .map_err(|_| HeartgateError::signer("signature_does_not_verify"))?;
    out.push('.');
    b64::encode_into(signature, &mut out);
    Ok(out)
}
