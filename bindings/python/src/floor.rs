//! The benchmark's floor (benches/bench.py): `ring` alone, one signature or one
//! verification per call, with nothing around it that heartgate does (no JOSE header, no
//! JSON, no base64, no claim checks, no GIL release), so that the benchmark can show in
//! the same run how much of `encode`/`decode` is the cryptography and how much is
//! heartgate's own work. Not part of the public API; never used by `encode`/`decode`.

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};

use heartgate_core::jose::Algorithm;

use crate::keys::PySigningKey;
use crate::Error;

enum Pair {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair, &'static dyn signature::RsaEncoding),
}

/// ring's own key pair for a `SigningKey` (the same PKCS#8 document), and its public key
/// as ring's verifier takes it.
#[pyclass(frozen, module = "heartgate", name = "_RingFloor")]
pub struct RingFloor {
    pair: Pair,
    public: Vec<u8>,
    verify_alg: &'static dyn signature::VerificationAlgorithm,
    rng: SystemRandom,
}

#[pymethods]
impl RingFloor {
    #[new]
    fn new(key: &Bound<'_, PySigningKey>) -> PyResult<Self> {
        let inner = &key.get().inner;
        let der = inner.to_pkcs8_der();
        let rng = SystemRandom::new();
        let bad = |_| Error::Internal;
        let (pair, verify_alg): (Pair, &'static dyn signature::VerificationAlgorithm) = match inner
            .algorithm()
        {
            Algorithm::ES256 => (
                Pair::Ecdsa(
                    EcdsaKeyPair::from_pkcs8(
                        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                        &der,
                        &rng,
                    )
                    .map_err(bad)?,
                ),
                &signature::ECDSA_P256_SHA256_FIXED,
            ),
            Algorithm::EdDSA => (
                Pair::Ed25519(Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(bad)?),
                &signature::ED25519,
            ),
            Algorithm::PS256 => (
                Pair::Rsa(
                    RsaKeyPair::from_pkcs8(&der).map_err(bad)?,
                    &signature::RSA_PSS_SHA256,
                ),
                &signature::RSA_PSS_2048_8192_SHA256,
            ),
            Algorithm::RS256 => (
                Pair::Rsa(
                    RsaKeyPair::from_pkcs8(&der).map_err(bad)?,
                    &signature::RSA_PKCS1_SHA256,
                ),
                &signature::RSA_PKCS1_2048_8192_SHA256,
            ),
            _ => return Err(Error::Argument("the floor covers ES256, EdDSA, PS256, RS256").into()),
        };
        let public = match &pair {
            Pair::Ecdsa(p) => p.public_key().as_ref().to_vec(),
            Pair::Ed25519(p) => p.public_key().as_ref().to_vec(),
            Pair::Rsa(p, _) => p.public_key().as_ref().to_vec(),
        };
        Ok(RingFloor {
            pair,
            public,
            verify_alg,
            rng,
        })
    }

    /// One ring signature over `message`.
    fn sign<'py>(&self, py: Python<'py>, message: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let sig = match &self.pair {
            Pair::Ecdsa(p) => p
                .sign(&self.rng, message)
                .map_err(|_| Error::Internal)?
                .as_ref()
                .to_vec(),
            Pair::Ed25519(p) => p.sign(message).as_ref().to_vec(),
            Pair::Rsa(p, padding) => {
                let mut sig = vec![0; p.public().modulus_len()];
                p.sign(*padding, &self.rng, message, &mut sig)
                    .map_err(|_| Error::Internal)?;
                sig
            }
        };
        Ok(PyBytes::new(py, &sig))
    }

    /// One ring verification of `sig` over `message`.
    fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(self.verify_alg, &self.public)
            .verify(message, sig)
            .is_ok()
    }

    /// Release and re-acquire the GIL once, doing nothing in between: what `guarded`
    /// adds to every call.
    #[staticmethod]
    fn gil_round_trip(py: Python<'_>) {
        py.detach(|| ());
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RingFloor>()
}
