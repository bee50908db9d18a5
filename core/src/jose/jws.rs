//! JWS Compact Serialization (RFC 7515 §3.1, §5.2, §7.1): sign, parse, verify.
//!
//! Parsing is strict and bounded: the length is checked before anything is split or
//! decoded (J13, J18); exactly three non-empty base64url parts (J13, J14, J29); the header
//! is a JSON object without duplicate names (J11, J12); `alg: none` and every algorithm we
//! do not implement are refused (J1-J3); `crit` (J9), `b64` (J10), the key-carrying
//! parameters `jku`, `x5u`, `jwk`, `x5c` (J7, J8) and `cty`/`enc`/`zip` (J29) are refused;
//! `kid` is a bounded string used only to look a key up (J5). The key, not the header,
//! decides the algorithm: the header's `alg` must equal the resolved key's (J4).

use super::key::MAX_KID_LEN;
use super::{b64, json, Algorithm, AlgorithmSet, JoseError, KeyResolver, SigningKey};

/// Default size limit for access tokens, client assertions and JARM responses.
pub const ACCESS_TOKEN_MAX_LEN: usize = 8 * 1024;
/// Default size limit for request objects (JAR).
pub const REQUEST_OBJECT_MAX_LEN: usize = 64 * 1024;

/// The protected header of a JWS, after strict checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    alg: Algorithm,
    kid: Option<String>,
    typ: Option<String>,
}

impl Header {
    /// The `alg` parameter.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The `kid` parameter, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The `typ` parameter, if any.
    pub fn typ(&self) -> Option<&str> {
        self.typ.as_deref()
    }
}

fn parse_header(bytes: &[u8]) -> Result<Header, JoseError> {
    let map = json::parse_object(bytes).map_err(JoseError::Json)?;
    let mut alg = None;
    let mut kid = None;
    let mut typ = None;
    for (name, value) in &map {
        match name.as_str() {
            "alg" => {
                let s = value.as_str().ok_or(JoseError::InvalidHeader("alg"))?;
                alg = Some(Algorithm::from_name(s)?);
            }
            "kid" => {
                let s = value.as_str().ok_or(JoseError::InvalidKid)?;
                if s.is_empty() || s.len() > MAX_KID_LEN || s.contains('\0') {
                    return Err(JoseError::InvalidKid);
                }
                kid = Some(s.to_owned());
            }
            "typ" => {
                let s = value.as_str().ok_or(JoseError::InvalidHeader("typ"))?;
                typ = Some(s.to_owned());
            }
            "crit" => return Err(JoseError::CritNotSupported),
            "b64" => return Err(JoseError::UnencodedPayload),
            "jku" | "x5u" | "jwk" | "x5c" => return Err(JoseError::HeaderKeyReference),
            "cty" | "enc" | "zip" => return Err(JoseError::NestedOrEncrypted),
            // RFC 7515 §4: other parameters are ignored (none is marked critical).
            _ => {}
        }
    }
    // `none` anywhere must be refused even when another member fails first; the loop
    // above already returns AlgNone as soon as it is seen.
    let alg = alg.ok_or(JoseError::InvalidHeader("alg"))?;
    Ok(Header { alg, kid, typ })
}

/// A parsed but not yet verified compact JWS. Its payload is not reachable until
/// [`CompactJws::verify`] succeeds.
#[derive(Debug)]
pub struct CompactJws<'a> {
    header: Header,
    signing_input: &'a str,
    payload_b64: &'a str,
    signature: Vec<u8>,
}

/// Split and check a compact JWS. `max_len` bounds the whole token, checked first.
pub fn parse_compact(token: &str, max_len: usize) -> Result<CompactJws<'_>, JoseError> {
    if token.len() > max_len {
        return Err(JoseError::TooLarge);
    }
    let mut parts = token.splitn(4, '.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JoseError::NotCompactJws);
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(JoseError::NotCompactJws);
    }
    let header = parse_header(&b64::decode(h)?)?;
    let signature = b64::decode(s)?;
    // Validate the payload encoding now so that a malformed token is refused as such
    // whatever the key lookup says.
    if !p
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        return Err(JoseError::Base64);
    }
    Ok(CompactJws {
        header,
        signing_input: &token[..h.len() + 1 + p.len()],
        payload_b64: p,
        signature,
    })
}

impl CompactJws<'_> {
    /// The checked header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The payload's claims BEFORE verification, for one purpose only: finding which
    /// client's keys to verify a client assertion with (RFC 7523 §3: `sub` names the
    /// client). Nothing read here may be trusted until [`CompactJws::verify`] succeeds.
    pub(crate) fn unverified_claims(&self) -> Result<super::Claims, JoseError> {
        super::Claims::from_json(&b64::decode(self.payload_b64)?)
    }

    /// Verify the signature with a key from `keys`, if the header's algorithm is in
    /// `allowed`. Only then is the payload decoded and returned.
    pub fn verify(
        self,
        keys: &dyn KeyResolver,
        allowed: AlgorithmSet,
    ) -> Result<VerifiedJws, JoseError> {
        let alg = self.header.alg;
        if !allowed.contains(alg) {
            return Err(JoseError::AlgorithmNotAllowed);
        }
        let key = keys.resolve(self.header.kid.as_deref(), alg)?;
        key.verify(alg, self.signing_input.as_bytes(), &self.signature)?;
        let payload = b64::decode(self.payload_b64)?;
        Ok(VerifiedJws {
            header: self.header,
            payload,
            kid: key.kid().to_owned(),
        })
    }
}

/// A JWS whose signature verified. Only [`CompactJws::verify`] builds one.
#[derive(Debug, Clone)]
pub struct VerifiedJws {
    header: Header,
    payload: Vec<u8>,
    kid: String,
}

impl VerifiedJws {
    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The verified payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The id of the key that verified the signature.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn into_parts(self) -> (Header, Vec<u8>, String) {
        (self.header, self.payload, self.kid)
    }
}

/// Sign `payload` as a compact JWS with header `{"alg","kid","typ"}`.
pub fn sign_compact(
    key: &SigningKey,
    typ: Option<&str>,
    payload: &[u8],
) -> Result<String, JoseError> {
    let mut header = String::with_capacity(96);
    header.push_str(r#"{"alg":""#);
    header.push_str(key.algorithm().as_str());
    header.push_str(r#"","kid":"#);
    header.push_str(&json_string(key.kid()));
    if let Some(t) = typ {
        header.push_str(r#","typ":"#);
        header.push_str(&json_string(t));
    }
    header.push('}');
    let mut out = String::with_capacity(header.len() * 4 / 3 + payload.len() * 4 / 3 + 100);
    b64::encode_into(header.as_bytes(), &mut out);
    out.push('.');
    b64::encode_into(payload, &mut out);
    let sig = key.sign(out.as_bytes())?;
    out.push('.');
    b64::encode_into(sig, &mut out);
    Ok(out)
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}
