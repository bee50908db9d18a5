//! Keys as Python objects, and how `encode`/`decode` read the keys PyJWT users pass:
//! PKCS#8 / SPKI / certificate PEM (str or bytes), JWK dicts, JWK Sets, key objects, and
//! for HS256 only, an explicit shared secret.
//!
//! A key is bound to one algorithm when it is read (core's rule, STYLE.md "Trust by
//! construction"): an RSA PEM given with `algorithms=["RS256", "PS256"]` becomes two
//! keys, one per algorithm, and the token's `alg` only chooses between keys the caller
//! allowed. Anything that looks like an asymmetric key (PEM, `ssh-` line, JWK JSON) is
//! never an HMAC secret (THREATS J2).
//!
//! Parsed PEM keys are kept in a small bounded cache keyed by SHA-256 of the PEM text and
//! the algorithms, because PyJWT-style callers pass the same PEM string on every call.

use std::sync::Arc;

use heartgate_core::jose::{
    b64, parse_jwk, Algorithm, JoseError, JwkSet, JwkSetOptions, KeyError, KeyResolver, SigningKey,
    VerifyingKey,
};
use heartgate_core::mtls::{certificate_public_key, CertPublicKey};
use parking_lot::Mutex;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use ring::digest;
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

use crate::convert::{map_to_py, to_json_text};
use crate::{guarded, Error};

/// The algorithm of an `encode`/`decode` call: one of core's, or HS256 (binding only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    /// An asymmetric algorithm core implements.
    Asym(Algorithm),
    /// HMAC-SHA256 with an explicit shared secret.
    Hs256,
}

impl Alg {
    pub(crate) fn parse(name: &str) -> Result<Self, Error> {
        if name == "HS256" {
            return Ok(Alg::Hs256);
        }
        Ok(Alg::Asym(Algorithm::from_name(name)?))
    }
}

/// `str` or `bytes` as bytes (wiped when dropped: it may be a secret or a private key).
pub(crate) fn text_or_bytes(obj: &Bound<'_, PyAny>) -> PyResult<Zeroizing<Vec<u8>>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Zeroizing::new(s.to_cow()?.as_bytes().to_vec()));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Zeroizing::new(b.as_bytes().to_vec()));
    }
    Err(PyTypeError::new_err("expected str or bytes"))
}

/// Whether `text` looks like an asymmetric key in any encoding, so that it is never taken
/// as an HMAC secret (THREATS J2, CVE-2015-9235 class; PyJWT refuses the same markers).
pub(crate) fn looks_asymmetric(text: &[u8]) -> bool {
    let t = text.trim_ascii_start();
    t.windows(10).any(|w| w == b"-----BEGIN")
        || t.starts_with(b"ssh-")
        || t.starts_with(b"ecdsa-sha2-")
        || t.starts_with(b"{")
}

fn alg_name(a: Algorithm) -> &'static str {
    a.as_str()
}

/// Public key material read from an SPKI or a certificate.
enum Material {
    EcP256(Vec<u8>),
    Ed25519([u8; 32]),
    Rsa(Vec<u8>, Vec<u8>),
}

const PLACEHOLDER_KID: &str = "explicit-key";

impl Material {
    /// One verification key per allowed algorithm that fits this material.
    fn keys(&self, algs: &[Algorithm]) -> Result<Vec<VerifyingKey>, Error> {
        let mut out = Vec::new();
        for &alg in algs {
            let k = match (self, alg) {
                (Material::EcP256(p), Algorithm::ES256) => {
                    VerifyingKey::from_ec_point(PLACEHOLDER_KID.into(), p)?
                }
                (Material::Ed25519(x), Algorithm::EdDSA) => {
                    VerifyingKey::from_ed25519(PLACEHOLDER_KID.into(), *x)?
                }
                (Material::Rsa(n, e), Algorithm::PS256 | Algorithm::RS256 | Algorithm::RS384) => {
                    VerifyingKey::from_rsa(alg, PLACEHOLDER_KID.into(), n, e)?
                }
                _ => continue,
            };
            out.push(k);
        }
        if out.is_empty() {
            return Err(Error::UnsupportedKey(
                "the key fits none of the allowed algorithms",
            ));
        }
        Ok(out)
    }

    fn from_cert(der: &[u8]) -> Result<Self, Error> {
        Ok(match certificate_public_key(der)? {
            CertPublicKey::EcP256 { point } => Material::EcP256(point),
            CertPublicKey::Ed25519(x) => Material::Ed25519(x),
            CertPublicKey::Rsa { n, e } => Material::Rsa(n, e),
            _ => return Err(Error::UnsupportedKey("certificate key type")),
        })
    }

    /// An RFC 5280 SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`): P-256, Ed25519 or
    /// RSA, read the way core reads a certificate's key (mtls::public_key).
    fn from_spki(der: &[u8]) -> Result<Self, Error> {
        use x509_parser::oid_registry::{
            OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
        };
        use x509_parser::public_key::PublicKey;
        use x509_parser::x509::SubjectPublicKeyInfo;
        let bad = Error::UnsupportedKey("malformed public key");
        let (rest, spki) =
            SubjectPublicKeyInfo::from_der(der).map_err(|_| Error::Key(KeyError::Rejected))?;
        if !rest.is_empty() || spki.subject_public_key.unused_bits != 0 {
            return Err(bad);
        }
        let alg = &spki.algorithm.algorithm;
        let bytes: &[u8] = &spki.subject_public_key.data;
        if *alg == OID_PKCS1_RSAENCRYPTION {
            let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
                return Err(bad);
            };
            let negative = |b: &[u8]| b.first().is_some_and(|&x| x & 0x80 != 0);
            if negative(rsa.modulus) || negative(rsa.exponent) {
                return Err(bad);
            }
            let strip = |b: &[u8]| -> Vec<u8> {
                let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
                b.get(first..).unwrap_or_default().to_vec()
            };
            return Ok(Material::Rsa(strip(rsa.modulus), strip(rsa.exponent)));
        }
        if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| x509_parser::asn1_rs::Oid::try_from(p).ok());
            if curve.as_ref() != Some(&OID_EC_P256) {
                return Err(Error::Key(KeyError::UnsupportedCurve));
            }
            if bytes.len() == 65 && bytes.first() == Some(&0x04) {
                return Ok(Material::EcP256(bytes.to_vec()));
            }
            return Err(bad);
        }
        if *alg == OID_SIG_ED25519 {
            if spki.algorithm.parameters.is_some() {
                return Err(bad);
            }
            return <[u8; 32]>::try_from(bytes)
                .map(Material::Ed25519)
                .map_err(|_| bad);
        }
        Err(Error::UnsupportedKey("public key type"))
    }
}

/// Verification keys from PEM text: `PUBLIC KEY` (SPKI), `CERTIFICATE`, or a PKCS#8
/// `PRIVATE KEY` (its public half).
fn pem_verifying_keys(text: &[u8], algs: &[Algorithm]) -> Result<Vec<VerifyingKey>, Error> {
    let block = pem::parse(text).map_err(|_| Error::Key(KeyError::Pem))?;
    match block.tag() {
        "PUBLIC KEY" => Material::from_spki(block.contents())?.keys(algs),
        "CERTIFICATE" => Material::from_cert(block.contents())?.keys(algs),
        "PRIVATE KEY" => {
            let der = Zeroizing::new(block.into_contents());
            let keys: Vec<VerifyingKey> = algs
                .iter()
                .filter_map(|&a| SigningKey::from_pkcs8_der(a, &der).ok())
                .map(|k| k.verifying_key().clone())
                .collect();
            if keys.is_empty() {
                return Err(Error::UnsupportedKey(
                    "the key fits none of the allowed algorithms",
                ));
            }
            Ok(keys)
        }
        _ => Err(Error::UnsupportedKey(
            "PEM must be PUBLIC KEY (SPKI), CERTIFICATE or PRIVATE KEY (PKCS#8)",
        )),
    }
}

// --- the bounded caches of parsed PEM keys -------------------------------------------

const CACHE_ENTRIES: usize = 64;

struct Bounded<T>(Mutex<Vec<([u8; 32], T)>>);

impl<T: Clone> Bounded<T> {
    const fn new() -> Self {
        Bounded(parking_lot::const_mutex(Vec::new()))
    }

    fn get_or_try(
        &self,
        key: [u8; 32],
        make: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        if let Some((_, v)) = self.0.lock().iter().find(|(k, _)| *k == key) {
            return Ok(v.clone());
        }
        let v = make()?;
        let mut entries = self.0.lock();
        if entries.len() >= CACHE_ENTRIES {
            entries.clear();
        }
        entries.push((key, v.clone()));
        Ok(v)
    }
}

static VERIFY_CACHE: Bounded<Arc<Vec<VerifyingKey>>> = Bounded::new();
static SIGN_CACHE: Bounded<Arc<SigningKey>> = Bounded::new();

fn cache_key(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn algs_tag(algs: &[Algorithm]) -> Vec<u8> {
    algs.iter()
        .flat_map(|a| [a.as_str().as_bytes(), b","].concat())
        .collect()
}

// --- what decode verifies with --------------------------------------------------------

/// The key material of a `decode` call.
pub(crate) enum VerifyMaterial {
    /// Keys given explicitly: the token's `kid` is not consulted (as in PyJWT), only its
    /// `alg`, which must be the algorithm of one of these keys (J4).
    Keys(Arc<Vec<VerifyingKey>>),
    /// A key set: the key is found by `kid` (core's resolver).
    Set(Arc<JwkSet>),
    /// An explicit HS256 shared secret.
    Secret(Zeroizing<Vec<u8>>),
}

/// Resolves the explicit keys of a `decode` call by algorithm only.
pub(crate) struct ExplicitKeys<'a>(pub &'a [VerifyingKey]);

impl KeyResolver for ExplicitKeys<'_> {
    fn resolve(&self, _kid: Option<&str>, alg: Algorithm) -> Result<&VerifyingKey, JoseError> {
        self.0
            .iter()
            .find(|k| k.algorithm() == alg)
            .ok_or(JoseError::AlgorithmKeyMismatch)
    }
}

fn jwk_options(algs: &[Algorithm]) -> JwkSetOptions {
    let mut rsa = algs
        .iter()
        .copied()
        .filter(|a| matches!(a, Algorithm::PS256 | Algorithm::RS256 | Algorithm::RS384));
    let only = match (rsa.next(), rsa.next()) {
        (Some(a), None) => Some(a),
        _ => None,
    };
    JwkSetOptions {
        rsa_alg_when_absent: only,
    }
}

fn jwk_dict_material(d: &Bound<'_, PyDict>, algs: &[Algorithm]) -> PyResult<VerifyMaterial> {
    if d.contains("keys")? {
        let text = to_json_text(d.as_any())?;
        let set = JwkSet::from_json(text.as_bytes(), &jwk_options(algs)).map_err(Error::from)?;
        return Ok(VerifyMaterial::Set(Arc::new(set)));
    }
    if let Some(kty) = d.get_item("kty")? {
        if kty.extract::<String>().ok().as_deref() == Some("oct") {
            let k: String = d
                .get_item("k")?
                .ok_or(Error::Key(KeyError::InvalidJwk("k")))?
                .extract()?;
            let secret = b64::decode(&k).map_err(|_| Error::Key(KeyError::InvalidJwk("k")))?;
            return Ok(VerifyMaterial::Secret(Zeroizing::new(secret)));
        }
    }
    let text = to_json_text(d.as_any())?;
    let key = parse_jwk(text.as_bytes(), &jwk_options(algs)).map_err(Error::from)?;
    Ok(VerifyMaterial::Keys(Arc::new(vec![key])))
}

/// Read the `key` argument of `decode`.
pub(crate) fn verify_material(
    key: &Bound<'_, PyAny>,
    algs: &[Algorithm],
) -> PyResult<VerifyMaterial> {
    if let Ok(k) = key.cast::<PySigningKey>() {
        return Ok(VerifyMaterial::Keys(Arc::new(vec![k
            .get()
            .inner
            .verifying_key()
            .clone()])));
    }
    if let Ok(k) = key.cast::<PyVerifyingKey>() {
        return Ok(VerifyMaterial::Keys(Arc::new(vec![k.get().inner.clone()])));
    }
    if let Ok(s) = key.cast::<PyKeySet>() {
        return Ok(VerifyMaterial::Set(Arc::clone(&s.get().inner)));
    }
    if let Ok(d) = key.cast::<PyDict>() {
        return jwk_dict_material(d, algs);
    }
    let text = text_or_bytes(key).map_err(|_| {
        PyTypeError::new_err("key must be str, bytes, a JWK dict or a heartgate key")
    })?;
    if !looks_asymmetric(&text) {
        return Ok(VerifyMaterial::Secret(text));
    }
    let trimmed = text.trim_ascii_start();
    if trimmed.starts_with(b"{") {
        let key = parse_jwk(trimmed, &jwk_options(algs)).map_err(Error::from)?;
        return Ok(VerifyMaterial::Keys(Arc::new(vec![key])));
    }
    if !trimmed.starts_with(b"-----BEGIN") {
        return Err(
            Error::UnsupportedKey("SSH public keys are not supported; use PEM or JWK").into(),
        );
    }
    let ck = cache_key(&[b"verify", &text, &algs_tag(algs)]);
    let keys = VERIFY_CACHE.get_or_try(ck, || pem_verifying_keys(&text, algs).map(Arc::new))?;
    Ok(VerifyMaterial::Keys(keys))
}

// --- what encode signs with -----------------------------------------------------------

/// The key material of an `encode` call.
pub(crate) enum SignMaterial {
    /// An asymmetric private key bound to the call's algorithm.
    Key(Arc<SigningKey>),
    /// An explicit HS256 shared secret.
    Secret(Zeroizing<Vec<u8>>),
}

fn reload_with_kid(key: &SigningKey, kid: &str) -> Result<Arc<SigningKey>, Error> {
    let der = key.to_pkcs8_der();
    let ck = cache_key(&[
        b"sign-kid",
        &der,
        key.algorithm().as_str().as_bytes(),
        kid.as_bytes(),
    ]);
    SIGN_CACHE.get_or_try(ck, || {
        Ok(Arc::new(
            SigningKey::from_pkcs8_der(key.algorithm(), &der)?.with_kid(kid)?,
        ))
    })
}

/// Read the `key` argument of `encode` for `alg`, with an optional `kid` override.
pub(crate) fn sign_material(
    key: &Bound<'_, PyAny>,
    alg: Alg,
    kid: Option<&str>,
) -> PyResult<SignMaterial> {
    if let Ok(k) = key.cast::<PySigningKey>() {
        let inner = &k.get().inner;
        let Alg::Asym(a) = alg else {
            return Err(Error::HmacWithAsymmetricKey.into());
        };
        if inner.algorithm() != a {
            return Err(Error::Jose(JoseError::AlgorithmKeyMismatch).into());
        }
        return Ok(SignMaterial::Key(match kid {
            Some(kid) if kid != inner.kid() => reload_with_kid(inner, kid)?,
            _ => Arc::clone(inner),
        }));
    }
    if key.cast::<PyVerifyingKey>().is_ok() || key.cast::<PyKeySet>().is_ok() {
        return Err(match alg {
            Alg::Hs256 => Error::HmacWithAsymmetricKey,
            Alg::Asym(_) => Error::UnsupportedKey("a public key cannot sign"),
        }
        .into());
    }
    if key.cast::<PyDict>().is_ok() {
        return Err(match alg {
            Alg::Hs256 => Error::UnsupportedKey("give the HS256 secret as bytes or str"),
            Alg::Asym(_) => Error::UnsupportedKey(
                "private JWKs are not supported; use PKCS#8 PEM or SigningKey",
            ),
        }
        .into());
    }
    let text = text_or_bytes(key)
        .map_err(|_| PyTypeError::new_err("key must be str, bytes or a heartgate SigningKey"))?;
    match alg {
        Alg::Hs256 => {
            if looks_asymmetric(&text) {
                return Err(Error::HmacWithAsymmetricKey.into());
            }
            Ok(SignMaterial::Secret(text))
        }
        Alg::Asym(a) => {
            if !looks_asymmetric(&text) {
                return Err(Error::SecretForAsymmetric.into());
            }
            let ck = cache_key(&[
                b"sign",
                &text,
                a.as_str().as_bytes(),
                kid.unwrap_or("").as_bytes(),
            ]);
            let k = SIGN_CACHE.get_or_try(ck, || {
                let s = std::str::from_utf8(&text).map_err(|_| Error::Key(KeyError::Pem))?;
                let k = SigningKey::from_pkcs8_pem(a, s)?;
                Ok(Arc::new(match kid {
                    Some(kid) => k.with_kid(kid)?,
                    None => k,
                }))
            })?;
            Ok(SignMaterial::Key(k))
        }
    }
}

// --- Python classes ---------------------------------------------------------------------

/// ring's Ed25519 PKCS#8 v2 prefix (RFC 5958 OneAsymmetricKey, version 1) up to the seed.
const ED25519_V2_PREFIX: [u8; 16] = [
    0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// The PKCS#8 v1 prefix of the same key (RFC 8410 §7), up to the seed.
const ED25519_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The PKCS#8 v1 form of a ring Ed25519 v2 document, or `None` for any other document.
fn ed25519_pkcs8_v1(der: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let seed = der.strip_prefix(&ED25519_V2_PREFIX[..])?.get(..32)?;
    if der.len() != 83 {
        return None;
    }
    let mut v1 = Zeroizing::new(Vec::with_capacity(48));
    v1.extend_from_slice(&ED25519_V1_PREFIX);
    v1.extend_from_slice(seed);
    Some(v1)
}

fn algorithm_arg(name: &str) -> Result<Algorithm, Error> {
    match Alg::parse(name)? {
        Alg::Asym(a) => Ok(a),
        Alg::Hs256 => Err(Error::Argument(
            "HS256 keys are plain secrets (bytes), not key objects",
        )),
    }
}

/// A private signing key bound to one algorithm (ES256, PS256, RS256, EdDSA, ES384, RS384).
#[pyclass(frozen, module = "heartgate", name = "SigningKey")]
pub struct PySigningKey {
    pub(crate) inner: Arc<SigningKey>,
}

#[pymethods]
impl PySigningKey {
    /// Generate a new key (P-256, Ed25519, or 2048-bit RSA).
    #[staticmethod]
    #[pyo3(signature = (algorithm = "ES256", kid = None))]
    fn generate(py: Python<'_>, algorithm: &str, kid: Option<String>) -> PyResult<Self> {
        let alg = algorithm_arg(algorithm)?;
        let key = guarded(py, || {
            let k = SigningKey::generate(alg)?;
            Ok(match kid {
                Some(kid) => k.with_kid(kid)?,
                None => k,
            })
        })?;
        Ok(PySigningKey {
            inner: Arc::new(key),
        })
    }

    /// Load a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`) for `algorithm`.
    #[staticmethod]
    #[pyo3(signature = (pem, algorithm = "ES256", kid = None))]
    fn from_pem(
        py: Python<'_>,
        pem: &Bound<'_, PyAny>,
        algorithm: &str,
        kid: Option<String>,
    ) -> PyResult<Self> {
        let alg = algorithm_arg(algorithm)?;
        let text = text_or_bytes(pem)?;
        let key = guarded(py, || {
            let s = std::str::from_utf8(&text).map_err(|_| Error::Key(KeyError::Pem))?;
            let k = SigningKey::from_pkcs8_pem(alg, s)?;
            Ok(match kid {
                Some(kid) => k.with_kid(kid)?,
                None => k,
            })
        })?;
        Ok(PySigningKey {
            inner: Arc::new(key),
        })
    }

    /// The algorithm this key signs with.
    #[getter]
    fn algorithm(&self) -> &'static str {
        alg_name(self.inner.algorithm())
    }

    /// The key id (default: the RFC 7638 thumbprint).
    #[getter]
    fn kid(&self) -> String {
        self.inner.kid().to_owned()
    }

    /// The public half.
    fn public_key(&self) -> PyVerifyingKey {
        PyVerifyingKey {
            inner: self.inner.verifying_key().clone(),
        }
    }

    /// The public key as a JWK dict (kty, crv/x/y or n/e, kid, alg, use).
    fn public_jwk<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        map_to_py(py, &self.inner.verifying_key().to_jwk())
    }

    /// The PKCS#8 PEM of the private key. Ed25519 keys are written as PKCS#8 v1 (RFC 8410
    /// §7, seed only), the form OpenSSL and `cryptography` read; ring's own v2 document
    /// (with the public key) is refused by `cryptography`.
    fn to_pem(&self) -> String {
        let der = self.inner.to_pkcs8_der();
        let v1 = ed25519_pkcs8_v1(&der);
        let body = v1.as_deref().map_or(&der[..], |v| &v[..]);
        let block = pem::Pem::new("PRIVATE KEY", body.to_vec());
        Zeroizing::new(pem::encode(&block)).to_string()
    }

    fn __repr__(&self) -> String {
        format!(
            "SigningKey(algorithm={:?}, kid={:?})",
            self.inner.algorithm().as_str(),
            self.inner.kid()
        )
    }
}

/// A public verification key bound to one algorithm.
#[pyclass(frozen, module = "heartgate", name = "VerifyingKey")]
pub struct PyVerifyingKey {
    pub(crate) inner: VerifyingKey,
}

fn single_key(keys: Vec<VerifyingKey>, kid: Option<String>) -> Result<VerifyingKey, Error> {
    let Some(k) = keys.into_iter().next() else {
        return Err(Error::UnsupportedKey("no usable key"));
    };
    let kid = kid.unwrap_or_else(|| k.thumbprint());
    let jwk = k.to_jwk();
    let mut jwk = jwk;
    jwk.insert("kid".into(), kid.into());
    let text = serde_json::Value::Object(jwk).to_string();
    Ok(parse_jwk(text.as_bytes(), &JwkSetOptions::default())?)
}

#[pymethods]
impl PyVerifyingKey {
    /// Load an SPKI public key (`-----BEGIN PUBLIC KEY-----`) or a certificate's key.
    /// `algorithm` is needed for RSA keys (RS256 or PS256), implied for EC and Ed25519.
    #[staticmethod]
    #[pyo3(signature = (pem, algorithm = None, kid = None))]
    fn from_pem(
        pem: &Bound<'_, PyAny>,
        algorithm: Option<&str>,
        kid: Option<String>,
    ) -> PyResult<Self> {
        let text = text_or_bytes(pem)?;
        let algs: Vec<Algorithm> = match algorithm {
            Some(a) => vec![algorithm_arg(a)?],
            None => vec![Algorithm::ES256, Algorithm::EdDSA],
        };
        let keys = pem_verifying_keys(&text, &algs).map_err(|e| match (algorithm, e) {
            (None, Error::UnsupportedKey(_)) => {
                Error::Argument("RSA keys need an explicit algorithm (RS256 or PS256)")
            }
            (_, e) => e,
        })?;
        Ok(PyVerifyingKey {
            inner: single_key(keys, kid)?,
        })
    }

    /// Load a public JWK (dict or JSON text). RSA JWKs without `alg` need `algorithm`.
    #[staticmethod]
    #[pyo3(signature = (jwk, algorithm = None))]
    fn from_jwk(jwk: &Bound<'_, PyAny>, algorithm: Option<&str>) -> PyResult<Self> {
        let text = if jwk.cast::<PyDict>().is_ok() {
            Zeroizing::new(to_json_text(jwk)?.into_bytes())
        } else {
            text_or_bytes(jwk)?
        };
        let opts = JwkSetOptions {
            rsa_alg_when_absent: algorithm.map(algorithm_arg).transpose()?,
        };
        let inner = parse_jwk(&text, &opts).map_err(Error::from)?;
        if let Some(a) = algorithm {
            if inner.algorithm() != algorithm_arg(a)? {
                return Err(Error::Key(KeyError::AlgorithmMismatch).into());
            }
        }
        Ok(PyVerifyingKey { inner })
    }

    /// The algorithm this key verifies.
    #[getter]
    fn algorithm(&self) -> &'static str {
        alg_name(self.inner.algorithm())
    }

    /// The key id.
    #[getter]
    fn kid(&self) -> String {
        self.inner.kid().to_owned()
    }

    /// The RFC 7638 JWK thumbprint.
    fn thumbprint(&self) -> String {
        self.inner.thumbprint()
    }

    /// The key as a JWK dict.
    fn to_jwk<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        map_to_py(py, &self.inner.to_jwk())
    }

    fn __repr__(&self) -> String {
        format!(
            "VerifyingKey(algorithm={:?}, kid={:?})",
            self.inner.algorithm().as_str(),
            self.inner.kid()
        )
    }
}

/// A JWK Set of public keys with unique key ids (RFC 7517 §5).
#[pyclass(frozen, module = "heartgate", name = "KeySet")]
pub struct PyKeySet {
    pub(crate) inner: Arc<JwkSet>,
}

/// Read a JWK Set given as dict, str or bytes.
pub(crate) fn parse_jwks(jwks: &Bound<'_, PyAny>, rsa_algorithm: Option<&str>) -> PyResult<JwkSet> {
    let text = if jwks.cast::<PyDict>().is_ok() {
        Zeroizing::new(to_json_text(jwks)?.into_bytes())
    } else {
        text_or_bytes(jwks)?
    };
    let opts = JwkSetOptions {
        rsa_alg_when_absent: rsa_algorithm.map(algorithm_arg).transpose()?,
    };
    Ok(JwkSet::from_json(&text, &opts).map_err(Error::from)?)
}

#[pymethods]
impl PyKeySet {
    /// Parse a JWK Set (`{"keys": [...]}`) strictly: private members, symmetric keys,
    /// small RSA keys, unknown curves and duplicate `kid`s are refused (J17, J33, J34).
    #[staticmethod]
    #[pyo3(signature = (jwks, rsa_algorithm = None))]
    fn from_jwks(jwks: &Bound<'_, PyAny>, rsa_algorithm: Option<&str>) -> PyResult<Self> {
        Ok(PyKeySet {
            inner: Arc::new(parse_jwks(jwks, rsa_algorithm)?),
        })
    }

    /// A set of the given public keys.
    #[staticmethod]
    fn of(keys: Vec<Bound<'_, PyVerifyingKey>>) -> PyResult<Self> {
        let keys = keys.iter().map(|k| k.get().inner.clone()).collect();
        Ok(PyKeySet {
            inner: Arc::new(JwkSet::new(keys).map_err(Error::from)?),
        })
    }

    /// The JWK Set document.
    fn to_json(&self) -> String {
        self.inner.to_json()
    }

    /// The key ids.
    fn kids(&self) -> Vec<String> {
        self.inner
            .keys()
            .iter()
            .map(|k| k.kid().to_owned())
            .collect()
    }

    fn __len__(&self) -> usize {
        self.inner.keys().len()
    }

    fn __repr__(&self) -> String {
        format!("KeySet({} keys)", self.inner.keys().len())
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySigningKey>()?;
    m.add_class::<PyVerifyingKey>()?;
    m.add_class::<PyKeySet>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn j2_anything_key_shaped_is_never_an_hmac_secret() {
        for k in [
            &b"-----BEGIN PUBLIC KEY-----\nAAAA"[..],
            b"  \n-----BEGIN CERTIFICATE-----",
            b"ssh-rsa AAAAB3Nza",
            b"ecdsa-sha2-nistp256 AAAA",
            br#"{"kty":"RSA"}"#,
        ] {
            assert!(looks_asymmetric(k));
        }
        assert!(!looks_asymmetric(b"a plain shared secret of 32 bytes!"));
    }

    #[test]
    fn ed25519_v2_documents_become_v1_rfc8410_7() {
        let k = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let v1 = ed25519_pkcs8_v1(&k.to_pkcs8_der()).unwrap();
        assert_eq!(v1.len(), 48);
        let again = SigningKey::from_pkcs8_der(Algorithm::EdDSA, &v1).unwrap();
        assert_eq!(again.kid(), k.kid());
        let es = SigningKey::generate(Algorithm::ES256).unwrap();
        assert!(ed25519_pkcs8_v1(&es.to_pkcs8_der()).is_none());
    }

    #[test]
    fn an_rsa_public_pem_becomes_one_key_per_allowed_rsa_algorithm() {
        // The RSA public key of a generated key, as SPKI: build it from n and e.
        let k = SigningKey::generate(Algorithm::RS256).unwrap();
        let vk = k.verifying_key();
        let n = vk.public_key_bytes().to_vec();
        let e = vk.rsa_exponent().unwrap().to_vec();
        let m = Material::Rsa(n, e);
        let keys = m
            .keys(&[Algorithm::RS256, Algorithm::PS256, Algorithm::ES256])
            .unwrap();
        let algs: Vec<_> = keys.iter().map(VerifyingKey::algorithm).collect();
        assert_eq!(algs, vec![Algorithm::RS256, Algorithm::PS256]);
        assert!(matches!(
            m.keys(&[Algorithm::ES256]),
            Err(Error::UnsupportedKey(_))
        ));
    }

    #[test]
    fn explicit_keys_resolve_by_algorithm_only_j4() {
        let k = SigningKey::generate(Algorithm::ES256).unwrap();
        let keys = vec![k.verifying_key().clone()];
        let r = ExplicitKeys(&keys);
        assert!(r.resolve(Some("any-kid"), Algorithm::ES256).is_ok());
        assert_eq!(
            r.resolve(None, Algorithm::RS256).err(),
            Some(JoseError::AlgorithmKeyMismatch)
        );
    }

    #[test]
    fn the_pem_caches_are_bounded_and_return_what_was_stored_for_each_key() {
        let cache: Bounded<usize> = Bounded::new();
        for i in 0..(3 * CACHE_ENTRIES) {
            let k = cache_key(&[b"test", &i.to_be_bytes()]);
            assert_eq!(cache.get_or_try(k, || Ok(i)).unwrap(), i);
            // A hit returns the stored value, never a new one.
            assert_eq!(cache.get_or_try(k, || Ok(usize::MAX)).unwrap(), i);
            assert!(cache.0.lock().len() <= CACHE_ENTRIES);
        }
        // A failed parse is not stored.
        let k = cache_key(&[b"fails"]);
        assert!(cache
            .get_or_try(k, || Err(Error::Key(KeyError::Pem)))
            .is_err());
        assert_eq!(cache.get_or_try(k, || Ok(7)).unwrap(), 7);
    }

    #[test]
    fn cache_keys_separate_their_parts() {
        // Length-prefixed parts: ("ab", "c") and ("a", "bc") are different keys.
        assert_ne!(cache_key(&[b"ab", b"c"]), cache_key(&[b"a", b"bc"]));
        assert_ne!(
            cache_key(&[b"verify", b"pem", b"RS256,"]),
            cache_key(&[b"verify", b"pem", b"PS256,"])
        );
    }

    #[test]
    fn malformed_spki_is_refused() {
        assert!(Material::from_spki(b"\x30\x03\x02\x01\x00").is_err());
        assert!(pem_verifying_keys(
            b"-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n",
            &[Algorithm::RS256]
        )
        .is_err());
    }
}
