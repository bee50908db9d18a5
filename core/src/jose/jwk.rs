//! JWK and JWK Set (RFC 7517) for public verification keys, and RFC 7638 thumbprints.
//!
//! What is refused (J17, J33, J34): private members (`d`, `p`, `q`, `dp`, `dq`, `qi`,
//! `oth`, `k`), symmetric keys (`kty: oct`), RSA under 2048 bits, curves other than P-256,
//! P-384 and Ed25519, small-order Ed25519 keys, duplicate `kid`s in a set, a JWK `alg`
//! that does not fit its key type (an EC key's curve fixes it: P-256 is ES256, P-384 is
//! ES384), and any malformed member. Keys marked `use: enc` or whose
//! `key_ops` lack `verify` are skipped, never used to verify. `x5u`/`jku` are never
//! fetched; `x5c` is kept (as DER) only for RFC 8705 §2.2 self-signed certificate matching.

use ring::digest;
use serde_json::{Map, Value};

use super::key::{b64_field, check_kid, EcCurve, PublicMaterial, VerifyingKey};
use super::{b64, json, Algorithm, KeyError};

/// Largest JWK Set document accepted, in bytes.
pub const MAX_JWKS_LEN: usize = 64 * 1024;
/// Most keys accepted in one JWK Set.
pub const MAX_JWKS_KEYS: usize = 64;

/// How to read a JWK Set.
#[derive(Debug, Clone, Copy, Default)]
pub struct JwkSetOptions {
    /// The algorithm of RSA keys that carry no `alg` member. `None` makes such keys an
    /// error (RS256 and PS256 both fit an RSA key: the key, not the token, must decide).
    pub rsa_alg_when_absent: Option<Algorithm>,
}

/// RFC 7638 thumbprint of public key material: SHA-256 over the required members in
/// lexicographic order with no whitespace, base64url.
pub(crate) fn thumbprint(m: &PublicMaterial) -> String {
    let canonical = match m {
        PublicMaterial::Ec { curve, point } => {
            let (x, y) = PublicMaterial::ec_coordinates(*curve, point);
            format!(
                r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
                curve.jwk_name(),
                b64::encode(x),
                b64::encode(y)
            )
        }
        PublicMaterial::Rsa { n, e } => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            b64::encode(e),
            b64::encode(n)
        ),
        PublicMaterial::Ed25519(x) => {
            format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                b64::encode(x)
            )
        }
    };
    b64::encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
}

pub(crate) fn to_jwk(k: &VerifyingKey) -> Map<String, Value> {
    let mut m = Map::new();
    match k.material() {
        PublicMaterial::Ec { curve, point } => {
            let (x, y) = PublicMaterial::ec_coordinates(*curve, point);
            m.insert("kty".into(), "EC".into());
            m.insert("crv".into(), curve.jwk_name().into());
            m.insert("x".into(), b64_field(x));
            m.insert("y".into(), b64_field(y));
        }
        PublicMaterial::Rsa { n, e } => {
            m.insert("kty".into(), "RSA".into());
            m.insert("n".into(), b64_field(n));
            m.insert("e".into(), b64_field(e));
        }
        PublicMaterial::Ed25519(x) => {
            m.insert("kty".into(), "OKP".into());
            m.insert("crv".into(), "Ed25519".into());
            m.insert("x".into(), b64_field(x));
        }
    }
    m.insert("kid".into(), k.kid().into());
    m.insert("alg".into(), k.algorithm().as_str().into());
    m.insert("use".into(), "sig".into());
    m
}

const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// What a JWK turned out to be.
enum Parsed {
    /// A verification key (and the DER certificates of its `x5c`, if any).
    Key(VerifyingKey, Vec<Vec<u8>>),
    /// A valid public key not meant for signature verification (`use: enc`).
    NotForSignatures,
}

fn str_member<'a>(
    m: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, KeyError> {
    match m.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(KeyError::InvalidJwk(name)),
    }
}

fn b64_member(m: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, KeyError> {
    let s = str_member(m, name)?.ok_or(KeyError::InvalidJwk(name))?;
    b64::decode(s).map_err(|_| KeyError::InvalidJwk(name))
}

fn parse_one(m: &Map<String, Value>, opts: &JwkSetOptions) -> Result<Parsed, KeyError> {
    let kty = str_member(m, "kty")?.ok_or(KeyError::InvalidJwk("kty"))?;
    if kty == "oct" {
        return Err(KeyError::Symmetric);
    }
    if PRIVATE_MEMBERS.iter().any(|p| m.contains_key(*p)) {
        return Err(KeyError::PrivateMembers);
    }
    let declared_alg = match str_member(m, "alg")? {
        None => None,
        Some(a) => Some(Algorithm::from_name(a).map_err(|_| KeyError::UnsupportedAlgorithm)?),
    };
    let (material, implied) = match kty {
        "EC" => {
            // J17: P-256 and P-384 only (P-384 for SMART's ES384, SPECS.md b.2 item 10);
            // P-521, secp256k1 and every other curve are refused.
            let curve = str_member(m, "crv")?
                .and_then(EcCurve::from_jwk_name)
                .ok_or(KeyError::UnsupportedCurve)?;
            let x = b64_member(m, "x")?;
            let y = b64_member(m, "y")?;
            let len = curve.coordinate_len();
            if x.len() != len || y.len() != len {
                return Err(KeyError::InvalidJwk("EC coordinate length"));
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            // The curve fixes the algorithm; a declared `alg` of another curve is refused
            // below (AlgorithmMismatch).
            (PublicMaterial::ec(curve, point)?, Some(curve.algorithm()))
        }
        "RSA" => {
            let n = b64_member(m, "n")?;
            let e = b64_member(m, "e")?;
            // RFC 7518 §6.3.1.1: n MUST NOT carry leading zero octets.
            if n.first() == Some(&0) || e.first() == Some(&0) {
                return Err(KeyError::InvalidJwk("RSA leading zero"));
            }
            (PublicMaterial::rsa(&n, &e)?, opts.rsa_alg_when_absent)
        }
        "OKP" => {
            if str_member(m, "crv")? != Some("Ed25519") {
                return Err(KeyError::UnsupportedCurve);
            }
            let x: [u8; 32] = b64_member(m, "x")?
                .try_into()
                .map_err(|_| KeyError::InvalidJwk("OKP x length"))?;
            (PublicMaterial::ed25519(x)?, Some(Algorithm::EdDSA))
        }
        _ => return Err(KeyError::UnsupportedKeyType),
    };
    let alg = match (declared_alg, kty) {
        (Some(a), _) => a,
        (None, "RSA") => implied.ok_or(KeyError::AmbiguousAlgorithm)?,
        (None, _) => implied.ok_or(KeyError::AmbiguousAlgorithm)?,
    };
    let kid = match str_member(m, "kid")? {
        Some(k) => {
            check_kid(k)?;
            k.to_owned()
        }
        None => thumbprint(&material),
    };
    let key = VerifyingKey::new(alg, kid, material)?;

    // Usage restrictions: a key for encryption is never used to verify.
    let for_sig = match str_member(m, "use")? {
        None | Some("sig") => true,
        Some(_) => false,
    };
    let ops_allow = match m.get("key_ops") {
        None => true,
        Some(Value::Array(ops)) => {
            let mut verify = false;
            for op in ops {
                match op {
                    Value::String(s) => verify |= s == "verify",
                    _ => return Err(KeyError::InvalidJwk("key_ops")),
                }
            }
            verify
        }
        Some(_) => return Err(KeyError::InvalidJwk("key_ops")),
    };
    if !(for_sig && ops_allow) {
        return Ok(Parsed::NotForSignatures);
    }

    let x5c = match m.get("x5c") {
        None => Vec::new(),
        Some(Value::Array(certs)) => {
            use base64::Engine as _;
            let mut out = Vec::with_capacity(certs.len());
            for c in certs {
                let s = c.as_str().ok_or(KeyError::InvalidJwk("x5c"))?;
                // RFC 7517 §4.7: standard base64 (with padding), not base64url.
                let der = base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|_| KeyError::InvalidJwk("x5c"))?;
                out.push(der);
            }
            out
        }
        Some(_) => return Err(KeyError::InvalidJwk("x5c")),
    };
    Ok(Parsed::Key(key, x5c))
}

/// Parse one public JWK (a JSON object) into a verification key.
pub fn parse_jwk(json_text: &[u8], opts: &JwkSetOptions) -> Result<VerifyingKey, KeyError> {
    if json_text.len() > MAX_JWKS_LEN {
        return Err(KeyError::TooLarge);
    }
    let m = json::parse_object(json_text).map_err(KeyError::Json)?;
    match parse_one(&m, opts)? {
        Parsed::Key(k, _) => Ok(k),
        Parsed::NotForSignatures => Err(KeyError::NotForSignatures),
    }
}

/// A set of public verification keys with unique key ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwkSet {
    keys: Vec<VerifyingKey>,
    x5c: Vec<Vec<Vec<u8>>>,
    /// SHA-256 of each key's `x5c` leaf, taken once when the set is read: RFC 8705 §2.2
    /// matching compares it with every presented certificate's.
    x5c_leaf_sha256: Vec<Option<[u8; 32]>>,
}

impl JwkSet {
    /// A set of the given keys; duplicate key ids are refused (J34).
    pub fn new(keys: Vec<VerifyingKey>) -> Result<Self, KeyError> {
        let x5c = vec![Vec::new(); keys.len()];
        let x5c_leaf_sha256 = vec![None; keys.len()];
        let set = JwkSet {
            keys,
            x5c,
            x5c_leaf_sha256,
        };
        set.check_unique()?;
        Ok(set)
    }

    fn check_unique(&self) -> Result<(), KeyError> {
        for (i, k) in self.keys.iter().enumerate() {
            if self.keys[..i].iter().any(|o| o.kid() == k.kid()) {
                return Err(KeyError::DuplicateKid);
            }
        }
        Ok(())
    }

    /// Parse a JWK Set document (`{"keys":[...]}`) strictly.
    pub fn from_json(json_text: &[u8], opts: &JwkSetOptions) -> Result<Self, KeyError> {
        if json_text.len() > MAX_JWKS_LEN {
            return Err(KeyError::TooLarge);
        }
        let m = json::parse_object(json_text).map_err(KeyError::Json)?;
        let Some(Value::Array(entries)) = m.get("keys") else {
            return Err(KeyError::InvalidJwk("keys"));
        };
        if entries.len() > MAX_JWKS_KEYS {
            return Err(KeyError::TooLarge);
        }
        let mut set = JwkSet::default();
        for e in entries {
            let Value::Object(obj) = e else {
                return Err(KeyError::InvalidJwk("keys"));
            };
            if let Parsed::Key(k, x5c) = parse_one(obj, opts)? {
                set.keys.push(k);
                set.x5c_leaf_sha256.push(x5c.first().map(|leaf| {
                    let mut d = [0u8; 32];
                    d.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, leaf).as_ref());
                    d
                }));
                set.x5c.push(x5c);
            }
        }
        set.check_unique()?;
        Ok(set)
    }

    /// The JWK Set document, public members only.
    pub fn to_json(&self) -> String {
        let keys: Vec<Value> = self.keys.iter().map(|k| Value::Object(to_jwk(k))).collect();
        let mut doc = Map::new();
        doc.insert("keys".into(), Value::Array(keys));
        Value::Object(doc).to_string()
    }

    /// The keys of the set.
    pub fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }

    /// The DER certificates (`x5c`) of the key at `index`, leaf first.
    pub fn certificates(&self, index: usize) -> &[Vec<u8>] {
        self.x5c.get(index).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The SHA-256 of the key at `index`'s `x5c` leaf certificate (its `x5t#S256`), if
    /// it has one.
    pub fn leaf_certificate_sha256(&self, index: usize) -> Option<&[u8; 32]> {
        self.x5c_leaf_sha256.get(index).and_then(Option::as_ref)
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key with this key id, if any.
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.iter().find(|k| k.kid() == kid)
    }
}

impl super::KeyResolver for JwkSet {
    fn resolve(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<&VerifyingKey, super::JoseError> {
        super::resolve_in(&self.keys, kid, alg)
    }
}
