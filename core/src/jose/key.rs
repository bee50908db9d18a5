//! Signing and verification keys, each bound to one algorithm when it is loaded.
//!
//! Every `ring` signature type stays inside this module. A [`SigningKey`] is a PKCS#8
//! private key plus its algorithm and `kid`; a [`VerifyingKey`] is public key material plus
//! its algorithm and `kid`. The algorithm of a token's header never chooses how a key is
//! used: it must equal the key's own algorithm (J4).
//!
//! RSA keys must be at least 2048 bits (J17, FAPI 2.0 §5.4.1); EdDSA keys are Ed25519
//! only, with small-order and non-canonical points refused.
//!
//! EC keys are P-256 or P-384, and the curve fixes the algorithm: P-256 is ES256 only,
//! P-384 is ES384 only. NOTE: THREATS.md J17 says "EC curve other than P-256 rejected";
//! heartgate departs from it for P-384 alone, because SMART App Launch asks the AS to
//! validate ES384 client assertions (SPECS.md b.2 item 10). Every other curve (P-521,
//! secp256k1, ...) is still refused, and only the SMART profiles allow ES384 at all
//! (`AlgorithmSet::SMART`). Covered by `j17_ec_curve_other_than_p256_or_p384_is_refused`
//! and `j17_p384_is_accepted_only_for_es384` (tests/jose_threats.rs).

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use zeroize::Zeroizing;

use super::{b64, jwk, Algorithm, JoseError, KeyError};

/// Smallest RSA modulus accepted anywhere, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits (ring's verification limit).
pub const MAX_RSA_BITS: usize = 8192;
/// Longest `kid` accepted, in bytes (J5).
pub const MAX_KID_LEN: usize = 256;

enum Pair {
    Ecdsa(EcdsaKeyPair),
    /// The padding and digest are fixed when the key is loaded, from its algorithm.
    Rsa(RsaKeyPair, &'static dyn signature::RsaEncoding),
    Ed25519(Ed25519KeyPair),
}

/// A private signing key bound to one algorithm, with a key id.
pub struct SigningKey {
    alg: Algorithm,
    pair: Pair,
    pkcs8: Zeroizing<Vec<u8>>,
    public: VerifyingKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.public.kid)
            .field("private", &"[redacted]")
            .finish()
    }
}

impl SigningKey {
    /// Generate a new key for `alg`: P-256 for ES256, P-384 for ES384, Ed25519 for
    /// EdDSA, and 2048-bit RSA for PS256, RS256 and RS384.
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = match alg {
            Algorithm::ES256 | Algorithm::ES384 => {
                EcdsaKeyPair::generate_pkcs8(ecdsa_signing(alg)?, &rng)
                    .map_err(|_| KeyError::Generation)?
                    .as_ref()
                    .to_vec()
            }
            Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| KeyError::Generation)?
                .as_ref()
                .to_vec(),
            Algorithm::PS256 | Algorithm::RS256 | Algorithm::RS384 => {
                generate_rsa_pkcs8(MIN_RSA_BITS)?
            }
        };
        Self::from_pkcs8_der(alg, &pkcs8)
    }

    /// Load a PKCS#8 DER private key for `alg`. The key id is the RFC 7638 thumbprint.
    /// An EC key must be on the curve of `alg` (P-256 for ES256, P-384 for ES384).
    pub fn from_pkcs8_der(alg: Algorithm, der: &[u8]) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let (pair, material) = match alg {
            Algorithm::ES256 | Algorithm::ES384 => {
                // ring checks the PKCS#8 curve OID against the signing algorithm's, so a
                // P-384 key never loads for ES256 nor a P-256 key for ES384.
                let p = EcdsaKeyPair::from_pkcs8(ecdsa_signing(alg)?, der, &rng)
                    .map_err(|_| KeyError::Rejected)?;
                let point = p.public_key().as_ref().to_vec();
                let curve = EcCurve::of(alg).ok_or(KeyError::Rejected)?;
                (Pair::Ecdsa(p), PublicMaterial::ec(curve, point)?)
            }
            Algorithm::PS256 | Algorithm::RS256 | Algorithm::RS384 => {
                let p = RsaKeyPair::from_pkcs8(der).map_err(|_| KeyError::Rejected)?;
                let c: signature::RsaPublicKeyComponents<Vec<u8>> = p.public().into();
                let material = PublicMaterial::rsa(&c.n, &c.e)?;
                (Pair::Rsa(p, rsa_signing(alg)?), material)
            }
            Algorithm::EdDSA => {
                // OpenSSL writes PKCS#8 v1 (no public key inside); ring's own is v2. Both
                // are accepted; "maybe_unchecked" only skips the v2 public-key consistency
                // check that v1 documents cannot have.
                let p = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(|_| KeyError::Rejected)?;
                let x: [u8; 32] = p
                    .public_key()
                    .as_ref()
                    .try_into()
                    .map_err(|_| KeyError::Rejected)?;
                (Pair::Ed25519(p), PublicMaterial::ed25519(x)?)
            }
        };
        let kid = jwk::thumbprint(&material);
        Ok(SigningKey {
            alg,
            pair,
            pkcs8: Zeroizing::new(der.to_vec()),
            public: VerifyingKey { alg, kid, material },
            rng,
        })
    }

    /// Load a PEM `PRIVATE KEY` (PKCS#8) for `alg`.
    pub fn from_pkcs8_pem(alg: Algorithm, pem_text: &str) -> Result<Self, KeyError> {
        let block = pem::parse(pem_text).map_err(|_| KeyError::Pem)?;
        if block.tag() != "PRIVATE KEY" {
            return Err(KeyError::Pem);
        }
        let der = Zeroizing::new(block.into_contents());
        Self::from_pkcs8_der(alg, &der)
    }

    /// Replace the key id (the default is the RFC 7638 thumbprint).
    pub fn with_kid(mut self, kid: impl Into<String>) -> Result<Self, KeyError> {
        let kid = kid.into();
        check_kid(&kid)?;
        self.public.kid = kid;
        Ok(self)
    }

    /// The PKCS#8 DER encoding of the private key.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        self.pkcs8.clone()
    }

    /// The PKCS#8 PEM encoding (`-----BEGIN PRIVATE KEY-----`).
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        let block = pem::Pem::new("PRIVATE KEY", self.pkcs8.to_vec());
        Zeroizing::new(pem::encode(&block))
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.public.kid
    }

    /// The public half, for verification and publication.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// Sign `msg` with this key's algorithm. ES256 and ES384 signatures are fixed-length
    /// r‖s (64 and 96 bytes).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, JoseError> {
        match &self.pair {
            Pair::Ecdsa(p) => p
                .sign(&self.rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| JoseError::SigningFailed),
            Pair::Ed25519(p) => Ok(p.sign(msg).as_ref().to_vec()),
            Pair::Rsa(p, padding) => {
                let mut sig = vec![0; p.public().modulus_len()];
                p.sign(*padding, &self.rng, msg, &mut sig)
                    .map_err(|_| JoseError::SigningFailed)?;
                Ok(sig)
            }
        }
    }
}

/// The ECDSA signing parameters of an EC algorithm.
fn ecdsa_signing(alg: Algorithm) -> Result<&'static signature::EcdsaSigningAlgorithm, KeyError> {
    match alg {
        Algorithm::ES256 => Ok(&signature::ECDSA_P256_SHA256_FIXED_SIGNING),
        Algorithm::ES384 => Ok(&signature::ECDSA_P384_SHA384_FIXED_SIGNING),
        Algorithm::PS256 | Algorithm::RS256 | Algorithm::RS384 | Algorithm::EdDSA => {
            Err(KeyError::AlgorithmMismatch)
        }
    }
}

/// The RSA padding and digest of an RSA algorithm.
fn rsa_signing(alg: Algorithm) -> Result<&'static dyn signature::RsaEncoding, KeyError> {
    match alg {
        Algorithm::PS256 => Ok(&signature::RSA_PSS_SHA256),
        Algorithm::RS256 => Ok(&signature::RSA_PKCS1_SHA256),
        Algorithm::RS384 => Ok(&signature::RSA_PKCS1_SHA384),
        Algorithm::ES256 | Algorithm::ES384 | Algorithm::EdDSA => Err(KeyError::AlgorithmMismatch),
    }
}

/// The EC curves heartgate accepts, each bound to exactly one algorithm (J17: P-256 for
/// ES256, P-384 for ES384; every other curve is refused where it is parsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EcCurve {
    /// NIST P-256 (secp256r1), for ES256.
    P256,
    /// NIST P-384 (secp384r1), for ES384.
    P384,
}

impl EcCurve {
    /// The curve of an EC algorithm; `None` for the others.
    pub(crate) fn of(alg: Algorithm) -> Option<Self> {
        match alg {
            Algorithm::ES256 => Some(EcCurve::P256),
            Algorithm::ES384 => Some(EcCurve::P384),
            Algorithm::PS256 | Algorithm::RS256 | Algorithm::RS384 | Algorithm::EdDSA => None,
        }
    }

    /// The curve named by a JWK `crv` (RFC 7518 §6.2.1.1; names are case-sensitive).
    pub(crate) fn from_jwk_name(crv: &str) -> Option<Self> {
        match crv {
            "P-256" => Some(EcCurve::P256),
            "P-384" => Some(EcCurve::P384),
            _ => None,
        }
    }

    /// The JWK `crv` name.
    pub(crate) fn jwk_name(self) -> &'static str {
        match self {
            EcCurve::P256 => "P-256",
            EcCurve::P384 => "P-384",
        }
    }

    /// The only algorithm a key on this curve verifies.
    pub(crate) fn algorithm(self) -> Algorithm {
        match self {
            EcCurve::P256 => Algorithm::ES256,
            EcCurve::P384 => Algorithm::ES384,
        }
    }

    /// The length of one coordinate in bytes (RFC 7518 §6.2.1.2: x and y are exactly
    /// this long, leading zeros included).
    pub(crate) fn coordinate_len(self) -> usize {
        match self {
            EcCurve::P256 => 32,
            EcCurve::P384 => 48,
        }
    }
}

/// Public key material of one of the supported key types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PublicMaterial {
    /// Uncompressed point (0x04 ‖ x ‖ y) on `curve`: 65 bytes for P-256, 97 for P-384.
    Ec { curve: EcCurve, point: Box<[u8]> },
    /// RSA modulus and exponent, big-endian without leading zeros.
    Rsa { n: Box<[u8]>, e: Box<[u8]> },
    /// Ed25519 public key.
    Ed25519([u8; 32]),
}

impl PublicMaterial {
    pub(crate) fn ec(curve: EcCurve, point: Vec<u8>) -> Result<Self, KeyError> {
        if point.len() != 1 + 2 * curve.coordinate_len() || point.first() != Some(&4) {
            return Err(KeyError::InvalidJwk("EC point"));
        }
        Ok(PublicMaterial::Ec {
            curve,
            point: point.into_boxed_slice(),
        })
    }

    /// The x and y coordinates of an EC point.
    pub(crate) fn ec_coordinates(curve: EcCurve, point: &[u8]) -> (&[u8], &[u8]) {
        let len = curve.coordinate_len();
        let xy = point.get(1..).unwrap_or_default();
        xy.split_at(len.min(xy.len()))
    }

    pub(crate) fn rsa(n: &[u8], e: &[u8]) -> Result<Self, KeyError> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        let bits = bit_len(n);
        if bits < MIN_RSA_BITS {
            return Err(KeyError::RsaTooSmall);
        }
        if bits > MAX_RSA_BITS {
            return Err(KeyError::InvalidJwk("RSA modulus too large"));
        }
        // ring accepts odd public exponents from 3 up to 2^33 - 1.
        if e.is_empty() || bit_len(e) > 33 || e[e.len() - 1] & 1 == 0 || (e.len() == 1 && e[0] < 3)
        {
            return Err(KeyError::InvalidJwk("RSA exponent"));
        }
        Ok(PublicMaterial::Rsa {
            n: n.into(),
            e: e.into(),
        })
    }

    pub(crate) fn ed25519(x: [u8; 32]) -> Result<Self, KeyError> {
        if ed25519_is_weak(&x) {
            return Err(KeyError::WeakKey);
        }
        Ok(PublicMaterial::Ed25519(x))
    }

    /// The algorithms this material can verify: an EC key only its curve's (J17), an
    /// RSA key any RSA algorithm (which one is fixed when the key is loaded).
    fn fits(&self, alg: Algorithm) -> bool {
        match self {
            PublicMaterial::Ec { curve, .. } => curve.algorithm() == alg,
            PublicMaterial::Rsa { .. } => {
                matches!(alg, Algorithm::PS256 | Algorithm::RS256 | Algorithm::RS384)
            }
            PublicMaterial::Ed25519(_) => alg == Algorithm::EdDSA,
        }
    }
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[first..]
}

fn bit_len(b: &[u8]) -> usize {
    match b.first() {
        None => 0,
        Some(top) => (b.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

/// Ed25519 public keys that must never be accepted (J17): points of small order, in
/// either sign, and encodings of y that are not reduced modulo p = 2^255 - 19.
/// The list is the one libsodium checks in `ge25519_has_small_order`.
fn ed25519_is_weak(x: &[u8; 32]) -> bool {
    const SMALL_ORDER: [[u8; 32]; 7] = [
        // 0 (order 4)
        [0; 32],
        // 1 (order 1)
        [
            1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0,
        ],
        // order 8
        [
            0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef,
            0x98, 0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88,
            0x6d, 0x53, 0xfc, 0x05,
        ],
        // order 8
        [
            0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10,
            0x67, 0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77,
            0x92, 0xac, 0x03, 0x7a,
        ],
        // p - 1 (order 2)
        [
            0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0x7f,
        ],
        // p (non-canonical 0)
        [
            0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0x7f,
        ],
        // p + 1 (non-canonical 1)
        [
            0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0x7f,
        ],
    ];
    let small = SMALL_ORDER
        .iter()
        .any(|bad| bad[..31] == x[..31] && (bad[31] & 0x7f) == (x[31] & 0x7f));
    // y (the low 255 bits) must be < p: reject 2^255-19 ..= 2^255-1.
    let non_canonical =
        (x[31] & 0x7f) == 0x7f && x[1..31].iter().all(|b| *b == 0xff) && x[0] >= 0xed;
    small || non_canonical
}

/// Generate an RSA key with the `rsa` crate (ring cannot generate RSA keys) and hand
/// its PKCS#8 encoding to ring. The randomness is ring's `SystemRandom`.
fn generate_rsa_pkcs8(bits: usize) -> Result<Vec<u8>, KeyError> {
    use rsa::pkcs8::EncodePrivateKey as _;
    struct RingRng(SystemRandom);
    impl rand_core::RngCore for RingRng {
        fn next_u32(&mut self) -> u32 {
            let mut b = [0u8; 4];
            self.fill_bytes(&mut b);
            u32::from_le_bytes(b)
        }
        fn next_u64(&mut self) -> u64 {
            let mut b = [0u8; 8];
            self.fill_bytes(&mut b);
            u64::from_le_bytes(b)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            // SystemRandom only fails if the OS has no entropy source; there is no way to
            // continue without randomness, and rand_core's infallible API has no error.
            #[allow(clippy::expect_used)] // reason: no OS randomness is unrecoverable
            ring::rand::SecureRandom::fill(&self.0, dest).expect("OS randomness");
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            ring::rand::SecureRandom::fill(&self.0, dest)
                .map_err(|_| rand_core::Error::from(std::num::NonZeroU32::MIN))
        }
    }
    impl rand_core::CryptoRng for RingRng {}
    let key = rsa::RsaPrivateKey::new(&mut RingRng(SystemRandom::new()), bits)
        .map_err(|_| KeyError::Generation)?;
    let doc = key.to_pkcs8_der().map_err(|_| KeyError::Generation)?;
    Ok(doc.as_bytes().to_vec())
}

pub(crate) fn check_kid(kid: &str) -> Result<(), KeyError> {
    if kid.is_empty() || kid.len() > MAX_KID_LEN || kid.contains('\0') {
        return Err(KeyError::InvalidJwk("kid"));
    }
    Ok(())
}

/// A public verification key bound to one algorithm, with a key id.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    alg: Algorithm,
    kid: String,
    material: PublicMaterial,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    pub(crate) fn new(
        alg: Algorithm,
        kid: String,
        material: PublicMaterial,
    ) -> Result<Self, KeyError> {
        if !material.fits(alg) {
            return Err(KeyError::AlgorithmMismatch);
        }
        check_kid(&kid)?;
        Ok(VerifyingKey { alg, kid, material })
    }

    pub(crate) fn material(&self) -> &PublicMaterial {
        &self.material
    }

    /// The algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The RFC 7638 JWK thumbprint (SHA-256, base64url).
    pub fn thumbprint(&self) -> String {
        jwk::thumbprint(&self.material)
    }

    /// Verify `sig` over `msg`. `alg` is the algorithm the message claims; it must be
    /// this key's own algorithm (J4), otherwise nothing is verified.
    pub fn verify(&self, alg: Algorithm, msg: &[u8], sig: &[u8]) -> Result<(), JoseError> {
        if alg != self.alg {
            return Err(JoseError::AlgorithmKeyMismatch);
        }
        let ok = match (&self.material, self.alg) {
            (
                PublicMaterial::Ec {
                    curve: EcCurve::P256,
                    point,
                },
                Algorithm::ES256,
            ) => {
                // FIXED: exactly 64 bytes r‖s; DER, r = s = 0, r or s ≥ n fail (J15).
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(msg, sig)
            }
            (
                PublicMaterial::Ec {
                    curve: EcCurve::P384,
                    point,
                },
                Algorithm::ES384,
            ) => {
                // FIXED: exactly 96 bytes r‖s; DER, r = s = 0, r or s ≥ n fail (J15).
                signature::UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
                    .verify(msg, sig)
            }
            (PublicMaterial::Ed25519(x), Algorithm::EdDSA) => {
                signature::UnparsedPublicKey::new(&signature::ED25519, x).verify(msg, sig)
            }
            (PublicMaterial::Rsa { n, e }, Algorithm::PS256) => {
                signature::RsaPublicKeyComponents { n: &**n, e: &**e }.verify(
                    &signature::RSA_PSS_2048_8192_SHA256,
                    msg,
                    sig,
                )
            }
            (PublicMaterial::Rsa { n, e }, Algorithm::RS256) => {
                signature::RsaPublicKeyComponents { n: &**n, e: &**e }.verify(
                    &signature::RSA_PKCS1_2048_8192_SHA256,
                    msg,
                    sig,
                )
            }
            (PublicMaterial::Rsa { n, e }, Algorithm::RS384) => {
                signature::RsaPublicKeyComponents { n: &**n, e: &**e }.verify(
                    &signature::RSA_PKCS1_2048_8192_SHA384,
                    msg,
                    sig,
                )
            }
            _ => return Err(JoseError::AlgorithmKeyMismatch),
        };
        ok.map_err(|_| JoseError::BadSignature)
    }

    /// The public key as JWK JSON members (kty, crv/x/y or n/e, kid, alg, use). An EC
    /// key's `crv` is `P-256` or `P-384`.
    pub fn to_jwk(&self) -> serde_json::Map<String, serde_json::Value> {
        jwk::to_jwk(self)
    }

    /// An ES256 verification key from an uncompressed P-256 point (65 bytes,
    /// `0x04 ‖ x ‖ y`). For keys from certificates and hardware signers.
    pub fn from_ec_point(kid: String, point: &[u8]) -> Result<Self, KeyError> {
        VerifyingKey::new(
            Algorithm::ES256,
            kid,
            PublicMaterial::ec(EcCurve::P256, point.to_vec())?,
        )
    }

    /// An ES384 verification key from an uncompressed P-384 point (97 bytes,
    /// `0x04 ‖ x ‖ y`). A P-384 key verifies ES384 only (J17, SPECS.md b.2 item 10).
    pub fn from_ec_p384_point(kid: String, point: &[u8]) -> Result<Self, KeyError> {
        VerifyingKey::new(
            Algorithm::ES384,
            kid,
            PublicMaterial::ec(EcCurve::P384, point.to_vec())?,
        )
    }

    /// An Ed25519 verification key from its 32 public bytes.
    pub fn from_ed25519(kid: String, x: [u8; 32]) -> Result<Self, KeyError> {
        VerifyingKey::new(Algorithm::EdDSA, kid, PublicMaterial::ed25519(x)?)
    }

    /// An RSA verification key for `alg` (PS256, RS256 or RS384) from modulus and exponent.
    pub fn from_rsa(alg: Algorithm, kid: String, n: &[u8], e: &[u8]) -> Result<Self, KeyError> {
        VerifyingKey::new(alg, kid, PublicMaterial::rsa(n, e)?)
    }

    /// The raw public key bytes: the uncompressed EC point (65 bytes for P-256, 97 for
    /// P-384), the Ed25519 key, or, for RSA, the big-endian modulus.
    pub fn public_key_bytes(&self) -> &[u8] {
        match &self.material {
            PublicMaterial::Ec { point, .. } => point,
            PublicMaterial::Rsa { n, .. } => n,
            PublicMaterial::Ed25519(x) => x,
        }
    }

    /// The RSA public exponent (big-endian, no leading zeros), for RSA keys.
    pub fn rsa_exponent(&self) -> Option<&[u8]> {
        match &self.material {
            PublicMaterial::Rsa { e, .. } => Some(e),
            _ => None,
        }
    }
}

/// RFC 8705 §2.2: the form in which a certificate's public key is compared with a
/// registered key.
impl From<&VerifyingKey> for crate::mtls::CertPublicKey {
    fn from(k: &VerifyingKey) -> Self {
        match &k.material {
            PublicMaterial::Ec {
                curve: EcCurve::P256,
                point,
            } => crate::mtls::CertPublicKey::EcP256 {
                point: point.to_vec(),
            },
            PublicMaterial::Ec {
                curve: EcCurve::P384,
                point,
            } => crate::mtls::CertPublicKey::EcP384 {
                point: point.to_vec(),
            },
            PublicMaterial::Rsa { n, e } => crate::mtls::CertPublicKey::Rsa {
                n: n.to_vec(),
                e: e.to_vec(),
            },
            PublicMaterial::Ed25519(x) => crate::mtls::CertPublicKey::Ed25519(*x),
        }
    }
}

pub(crate) fn b64_field(bytes: &[u8]) -> serde_json::Value {
    serde_json::Value::String(b64::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::edwards::CompressedEdwardsY;

    /// J17: every canonical entry of the blocklist really is a point of small order (an
    /// independent implementation says so), in both signs.
    #[test]
    fn j17_ed25519_blocklist_entries_are_small_order_points() {
        let canonical = [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }];
        let order8_a: [u8; 32] = [
            0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef,
            0x98, 0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88,
            0x6d, 0x53, 0xfc, 0x05,
        ];
        let order8_b: [u8; 32] = [
            0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10,
            0x67, 0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77,
            0x92, 0xac, 0x03, 0x7a,
        ];
        let mut minus_one = [0xffu8; 32];
        minus_one[0] = 0xec;
        minus_one[31] = 0x7f;
        for enc in canonical.iter().chain([&order8_a, &order8_b, &minus_one]) {
            for sign in [0u8, 0x80] {
                let mut e = *enc;
                e[31] |= sign;
                assert!(ed25519_is_weak(&e), "{e:02x?} not blocked");
                if let Some(p) = CompressedEdwardsY(e).decompress() {
                    assert!(p.is_small_order(), "{e:02x?} is not small order");
                }
            }
        }
    }

    #[test]
    fn j17_ed25519_non_canonical_y_is_refused() {
        // y = p + 2 .. 2^255 - 1 (top bit clear) are non-canonical encodings.
        for low in [0xedu8, 0xef, 0xff] {
            let mut e = [0xffu8; 32];
            e[0] = low;
            e[31] = 0x7f;
            assert!(ed25519_is_weak(&e));
        }
    }

    #[test]
    fn j17_random_ed25519_keys_are_not_weak() {
        for _ in 0..32 {
            let k = SigningKey::generate(Algorithm::EdDSA).unwrap();
            let x: [u8; 32] = k.verifying_key().public_key_bytes().try_into().unwrap();
            assert!(!ed25519_is_weak(&x));
            let p = CompressedEdwardsY(x).decompress().unwrap();
            assert!(!p.is_small_order());
        }
    }

    #[test]
    fn j17_rsa_modulus_under_2048_bits_is_refused() {
        let n = [0xffu8; 255]; // 2040 bits
        assert_eq!(
            PublicMaterial::rsa(&n, &[1, 0, 1]),
            Err(KeyError::RsaTooSmall)
        );
        let n = [0xffu8; 256];
        assert!(PublicMaterial::rsa(&n, &[1, 0, 1]).is_ok());
        let mut n = [0u8; 257]; // leading zero does not count
        n[1] = 0x7f;
        assert_eq!(
            PublicMaterial::rsa(&n, &[1, 0, 1]),
            Err(KeyError::RsaTooSmall)
        );
    }

    #[test]
    fn rsa_exponent_must_be_odd_and_at_least_3() {
        let n = [0xffu8; 256];
        for e in [&[][..], &[1], &[2], &[1, 0, 0], &[1, 0, 0, 0, 0, 1]] {
            assert!(PublicMaterial::rsa(&n, e).is_err(), "{e:?}");
        }
        assert!(PublicMaterial::rsa(&n, &[3]).is_ok());
    }

    #[test]
    fn signing_key_debug_is_redacted() {
        let k = SigningKey::generate(Algorithm::ES256).unwrap();
        let d = format!("{k:?}");
        assert!(d.contains("[redacted]"));
        assert!(!d.contains(&format!("{:?}", &k.to_pkcs8_der()[..8])));
    }

    #[test]
    fn key_loaded_for_one_algorithm_cannot_verify_another() {
        let k = SigningKey::generate(Algorithm::ES256).unwrap();
        let sig = k.sign(b"m").unwrap();
        assert_eq!(
            k.verifying_key().verify(Algorithm::PS256, b"m", &sig),
            Err(JoseError::AlgorithmKeyMismatch)
        );
        assert_eq!(
            k.verifying_key().verify(Algorithm::ES256, b"m", &sig),
            Ok(())
        );
    }

    #[test]
    fn pkcs8_of_one_algorithm_does_not_load_as_another() {
        let ec = SigningKey::generate(Algorithm::ES256).unwrap();
        let ed = SigningKey::generate(Algorithm::EdDSA).unwrap();
        assert_eq!(
            SigningKey::from_pkcs8_der(Algorithm::EdDSA, &ec.to_pkcs8_der()).unwrap_err(),
            KeyError::Rejected
        );
        assert_eq!(
            SigningKey::from_pkcs8_der(Algorithm::PS256, &ed.to_pkcs8_der()).unwrap_err(),
            KeyError::Rejected
        );
        assert_eq!(
            SigningKey::from_pkcs8_pem(Algorithm::ES256, "not pem").unwrap_err(),
            KeyError::Pem
        );
        let wrong_tag = pem::encode(&pem::Pem::new("CERTIFICATE", ec.to_pkcs8_der().to_vec()));
        assert_eq!(
            SigningKey::from_pkcs8_pem(Algorithm::ES256, &wrong_tag).unwrap_err(),
            KeyError::Pem
        );
    }

    #[test]
    fn j17_each_ec_curve_is_bound_to_exactly_one_algorithm() {
        for alg in Algorithm::ALL {
            match EcCurve::of(alg) {
                Some(curve) => {
                    assert_eq!(curve.algorithm(), alg);
                    assert_eq!(EcCurve::from_jwk_name(curve.jwk_name()), Some(curve));
                }
                None => assert!(!matches!(alg, Algorithm::ES256 | Algorithm::ES384)),
            }
        }
        assert_eq!(EcCurve::from_jwk_name("P-521"), None);
        assert_eq!(EcCurve::from_jwk_name("secp256k1"), None);
    }

    #[test]
    fn es384_signatures_are_96_bytes_and_es256_ones_64() {
        for (alg, len) in [(Algorithm::ES256, 64), (Algorithm::ES384, 96)] {
            let k = SigningKey::generate(alg).unwrap();
            let sig = k.sign(b"m").unwrap();
            assert_eq!(sig.len(), len, "{alg}");
            assert_eq!(k.verifying_key().verify(alg, b"m", &sig), Ok(()));
            assert_eq!(
                k.verifying_key().public_key_bytes().len(),
                1 + 2 * EcCurve::of(alg).unwrap().coordinate_len()
            );
        }
    }

    #[test]
    fn p384_key_becomes_a_p384_certificate_key_that_equals_no_p256_key() {
        // RFC 8705 §2.2 matching: the P-384 JWK keeps its curve; it can never be taken for
        // a P-256 certificate key (certificate_public_key does not read P-384 at all).
        let k = SigningKey::generate(Algorithm::ES384).unwrap();
        let c = crate::mtls::CertPublicKey::from(k.verifying_key());
        let crate::mtls::CertPublicKey::EcP384 { point } = &c else {
            panic!("expected P-384: {c:?}");
        };
        assert_eq!(point.as_slice(), k.verifying_key().public_key_bytes());
        let p256 = SigningKey::generate(Algorithm::ES256).unwrap();
        assert_ne!(c, crate::mtls::CertPublicKey::from(p256.verifying_key()));
        assert_eq!(c, c.clone());
    }

    #[test]
    fn kid_override_is_bounded() {
        let k = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let k = k.with_kid("2026-11").unwrap();
        assert_eq!(k.kid(), "2026-11");
        let k2 = SigningKey::generate(Algorithm::EdDSA).unwrap();
        assert!(k2.with_kid("x".repeat(257)).is_err());
        let k3 = SigningKey::generate(Algorithm::EdDSA).unwrap();
        assert!(k3.with_kid("").is_err());
    }
}
