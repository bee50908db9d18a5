//! PyJWT-compatible `encode` and `decode` over core's JWS/JWT code, plus HS256.
//!
//! Asymmetric tokens go through core unchanged: `parse_compact` (J1-J14, J18, J29),
//! `CompactJws::verify` with a key bound to its algorithm (J2-J4, J15), `Claims::from_json`
//! (J11, J12, J19, J35) and `validate_claims` (J20-J27). `typ` is not checked (PyJWT does
//! not either); `exp` is always required (J21).
//!
//! HS256 exists only here, only with an explicit shared secret of at least 32 bytes
//! (RFC 7518 §3.2), never with anything that looks like an asymmetric key (J2), and is
//! verified in constant time by `ring::hmac::verify`. Its header gets the same strict
//! checks as core's JWS header (RFC 7515 §4.1; J1, J5, J7-J10, J29).

use heartgate_core::clock::UnixTime;
use heartgate_core::jose::{
    b64, json, parse_compact, sign_compact, validate_claims, Algorithm, AlgorithmSet, AudienceRule,
    Claims, JoseError, KeyResolver, TypRule, Validation, MAX_KID_LEN, MAX_LEEWAY,
    REQUEST_OBJECT_MAX_LEN,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use ring::hmac;

use crate::convert::{compact_json, map_to_py};
use crate::keys::{
    sign_material, verify_material, Alg, ExplicitKeys, SignMaterial, VerifyMaterial,
};
use crate::{guarded, now, Error};

/// Longest token `decode` reads (checked before anything is decoded, J18). Larger than
/// core's 8 KiB access-token limit because `decode` is generic (ID tokens, assertions).
pub const DECODE_MAX_LEN: usize = REQUEST_OBJECT_MAX_LEN;

/// Shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash size).
pub const MIN_HMAC_SECRET_LEN: usize = 32;

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn hs256_sign(
    secret: &[u8],
    typ: Option<&str>,
    kid: Option<&str>,
    payload: &[u8],
) -> Result<String, Error> {
    if secret.len() < MIN_HMAC_SECRET_LEN {
        return Err(Error::WeakSecret);
    }
    let mut header = String::from(r#"{"alg":"HS256""#);
    if let Some(k) = kid {
        header.push_str(r#","kid":"#);
        header.push_str(&json_string(k));
    }
    if let Some(t) = typ {
        header.push_str(r#","typ":"#);
        header.push_str(&json_string(t));
    }
    header.push('}');
    let mut out = b64::encode(header.as_bytes());
    out.push('.');
    b64::encode_into(payload, &mut out);
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, out.as_bytes());
    out.push('.');
    b64::encode_into(tag.as_ref(), &mut out);
    Ok(out)
}

/// Strict HS256 verification; returns the verified payload bytes.
fn hs256_verify(token: &str, secret: &[u8], max_len: usize) -> Result<Vec<u8>, Error> {
    if token.len() > max_len {
        return Err(JoseError::TooLarge.into());
    }
    let mut parts = token.splitn(4, '.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JoseError::NotCompactJws.into());
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(JoseError::NotCompactJws.into());
    }
    let header = json::parse_object(&b64::decode(h)?).map_err(JoseError::Json)?;
    let mut alg_ok = false;
    for (name, value) in &header {
        match name.as_str() {
            "alg" => {
                let a = value.as_str().ok_or(JoseError::InvalidHeader("alg"))?;
                if a != "HS256" {
                    // `none` in any spelling, or an asymmetric algorithm presented to an
                    // HMAC key: both refused (J1, J2, J4).
                    Algorithm::from_name(a)?;
                    return Err(JoseError::AlgorithmKeyMismatch.into());
                }
                alg_ok = true;
            }
            "kid" => {
                let k = value.as_str().ok_or(JoseError::InvalidKid)?;
                if k.is_empty() || k.len() > MAX_KID_LEN || k.contains('\0') {
                    return Err(JoseError::InvalidKid.into());
                }
            }
            "typ" => {
                value.as_str().ok_or(JoseError::InvalidHeader("typ"))?;
            }
            "crit" => return Err(JoseError::CritNotSupported.into()),
            "b64" => return Err(JoseError::UnencodedPayload.into()),
            "jku" | "x5u" | "jwk" | "x5c" => return Err(JoseError::HeaderKeyReference.into()),
            "cty" | "enc" | "zip" => return Err(JoseError::NestedOrEncrypted.into()),
            _ => {}
        }
    }
    if !alg_ok {
        return Err(JoseError::InvalidHeader("alg").into());
    }
    let sig = b64::decode(s)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let signing_input = token
        .get(..h.len() + 1 + p.len())
        .ok_or(JoseError::NotCompactJws)?;
    hmac::verify(&key, signing_input.as_bytes(), &sig).map_err(|_| JoseError::BadSignature)?;
    Ok(b64::decode(p)?)
}

/// Sign `payload` (JSON text of an object, serialised by the Python layer).
#[pyfunction]
#[pyo3(signature = (payload, key, algorithm, typ = None, kid = None))]
fn _encode(
    py: Python<'_>,
    payload: &Bound<'_, PyBytes>,
    key: &Bound<'_, PyAny>,
    algorithm: &str,
    typ: Option<&str>,
    kid: Option<&str>,
) -> PyResult<String> {
    sign_payload(py, payload.as_bytes(), key, algorithm, typ, kid)
}

/// Sign the claims `payload` (a dict), serialising it here as `json.dumps(payload,
/// separators=(",", ":"), allow_nan=False)` would ([`compact_json`]). `None` when the
/// payload holds anything but plain JSON values: the Python layer then serialises it with
/// `json.dumps` and calls `_encode`.
#[pyfunction]
#[pyo3(signature = (payload, key, algorithm, typ = None, kid = None))]
fn _encode_claims(
    py: Python<'_>,
    payload: &Bound<'_, PyDict>,
    key: &Bound<'_, PyAny>,
    algorithm: &str,
    typ: Option<&str>,
    kid: Option<&str>,
) -> PyResult<Option<String>> {
    let Some(json) = compact_json(payload.as_any())? else {
        return Ok(None);
    };
    sign_payload(py, &json, key, algorithm, typ, kid).map(Some)
}

fn sign_payload(
    py: Python<'_>,
    payload: &[u8],
    key: &Bound<'_, PyAny>,
    algorithm: &str,
    typ: Option<&str>,
    kid: Option<&str>,
) -> PyResult<String> {
    let alg = Alg::parse(algorithm)?;
    let material = sign_material(key, alg, kid)?;
    let token = guarded(py, || match &material {
        SignMaterial::Key(k) => Ok(sign_compact(k, typ, payload)?),
        SignMaterial::Secret(s) => hs256_sign(s, typ, kid, payload),
    })?;
    Ok(token)
}

fn audience_rule(audience: Option<Vec<String>>, strict: bool) -> Result<AudienceRule, Error> {
    Ok(match audience {
        None => AudienceRule::MustBeAbsent,
        Some(mut a) if strict => {
            if a.len() != 1 {
                return Err(Error::Argument("strict_aud needs exactly one audience"));
            }
            AudienceRule::ExactString(a.remove(0))
        }
        Some(mut a) if a.len() == 1 => AudienceRule::Contains(a.remove(0)),
        Some(a) if a.is_empty() => return Err(Error::Argument("audience must not be empty")),
        Some(a) => AudienceRule::AnyOf(a),
    })
}

/// Verify `jwt` and return its claims as a dict.
#[pyfunction]
#[pyo3(signature = (jwt, key, algorithms, audience = None, issuer = None, leeway = 0, require = Vec::new(), strict_aud = false))]
#[allow(clippy::too_many_arguments)] // reason: mirrors PyJWT's keyword arguments one to one
fn _decode<'py>(
    py: Python<'py>,
    jwt: &Bound<'py, PyAny>,
    key: &Bound<'py, PyAny>,
    algorithms: Vec<String>,
    audience: Option<Vec<String>>,
    issuer: Option<String>,
    leeway: i64,
    require: Vec<String>,
    strict_aud: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let token: String = if let Ok(s) = jwt.cast::<PyString>() {
        // A str that is not valid Unicode (lone surrogates, F1) is a malformed token.
        s.to_cow()
            .map_err(|_| crate::error::DecodeError::new_err("token is not valid Unicode"))?
            .into_owned()
    } else if let Ok(b) = jwt.cast::<PyBytes>() {
        String::from_utf8(b.as_bytes().to_vec()).map_err(|_| Error::Jose(JoseError::Base64))?
    } else {
        return Err(crate::error::DecodeError::new_err(
            "Invalid token type; expected str or bytes",
        ));
    };
    if algorithms.is_empty() {
        return Err(Error::Argument("algorithms must name at least one algorithm").into());
    }
    let mut asym = Vec::new();
    let mut hs256 = false;
    for name in &algorithms {
        match Alg::parse(name) {
            Ok(Alg::Asym(a)) => asym.push(a),
            Ok(Alg::Hs256) => hs256 = true,
            // An algorithm we do not implement can never verify; ignoring it is safe.
            Err(_) => {}
        }
    }
    let leeway = u32::try_from(leeway)
        .ok()
        .filter(|l| *l <= MAX_LEEWAY)
        .ok_or(Error::Argument(
            "leeway must be between 0 and 60 seconds (FAPI 2.0)",
        ))?;
    let material = match verify_material(key, &asym) {
        Ok(VerifyMaterial::Secret(s)) => VerifyMaterial::Secret(s),
        // Only HS256 allowed but the key is asymmetric (PEM, JWK, key object): the
        // confusion attack, refused whatever the token says (THREATS J2).
        Ok(_) | Err(_) if asym.is_empty() && hs256 => {
            return Err(Error::HmacWithAsymmetricKey.into())
        }
        other => other?,
    };
    let mut v = Validation::new(
        AlgorithmSet::of(&asym),
        TypRule::OptionalOneOf(&[]),
        audience_rule(audience, strict_aud)?,
    )
    .leeway(leeway)
    .max_len(DECODE_MAX_LEN);
    if let Some(i) = issuer {
        v = v.issuer(i);
    }
    let t = now();
    let claims = guarded(py, || {
        let payload = match &material {
            VerifyMaterial::Secret(secret) => {
                if !hs256 {
                    // A secret, but HS256 was not allowed: nothing can verify.
                    return Err(JoseError::AlgorithmNotAllowed.into());
                }
                if secret.len() < MIN_HMAC_SECRET_LEN {
                    return Err(Error::WeakSecret);
                }
                hs256_verify(&token, secret, DECODE_MAX_LEN)?
            }
            VerifyMaterial::Keys(keys) => verify_asym(&token, &ExplicitKeys(keys), &v)?,
            VerifyMaterial::Set(set) => verify_asym(&token, set.as_ref(), &v)?,
        };
        let claims = Claims::from_json(&payload)?;
        check_claims(&claims, &v, &require, t)?;
        Ok(claims)
    })?;
    map_to_py(py, claims.as_map())
}

fn verify_asym(token: &str, keys: &dyn KeyResolver, v: &Validation) -> Result<Vec<u8>, Error> {
    let jws = parse_compact(token, v.max_len)?;
    Ok(jws.verify(keys, v.algorithms)?.payload().to_vec())
}

fn check_claims(
    claims: &Claims,
    v: &Validation,
    require: &[String],
    t: UnixTime,
) -> Result<(), Error> {
    // PyJWT reports a missing required claim before checking the others.
    for name in require {
        if claims.get(name).is_none() {
            return Err(Error::MissingClaim(name.clone()));
        }
    }
    validate_claims(claims, v, t)?;
    Ok(())
}

/// Read a token's header without verifying anything (PyJWT's `get_unverified_header`):
/// for routing only; nothing in it may be trusted.
#[pyfunction]
fn get_unverified_header<'py>(py: Python<'py>, jwt: &str) -> PyResult<Bound<'py, PyDict>> {
    if jwt.len() > DECODE_MAX_LEN {
        return Err(Error::Jose(JoseError::TooLarge).into());
    }
    let h = jwt.split('.').next().unwrap_or_default();
    let bytes = b64::decode(h).map_err(Error::from)?;
    let header = json::parse_object(&bytes).map_err(|e| Error::Jose(JoseError::Json(e)))?;
    map_to_py(py, &header)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_encode, m)?)?;
    m.add_function(wrap_pyfunction!(_encode_claims, m)?)?;
    m.add_function(wrap_pyfunction!(_decode, m)?)?;
    m.add_function(wrap_pyfunction!(get_unverified_header, m)?)?;
    m.add("DECODE_MAX_LEN", DECODE_MAX_LEN)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn hs256_round_trip_rfc7515_appendix_a1_shape() {
        let t = hs256_sign(SECRET, Some("JWT"), None, br#"{"exp":1}"#).unwrap();
        assert_eq!(t.split('.').count(), 3);
        assert_eq!(
            hs256_verify(&t, SECRET, DECODE_MAX_LEN).unwrap(),
            br#"{"exp":1}"#
        );
    }

    #[test]
    fn hs256_short_secret_is_refused_rfc7518_3_2() {
        assert!(matches!(
            hs256_sign(b"short", None, None, b"{}"),
            Err(Error::WeakSecret)
        ));
    }

    #[test]
    fn hs256_wrong_secret_is_a_bad_signature() {
        let t = hs256_sign(SECRET, None, None, b"{}").unwrap();
        let other = [b'x'; 32];
        assert!(matches!(
            hs256_verify(&t, &other, DECODE_MAX_LEN),
            Err(Error::Jose(JoseError::BadSignature))
        ));
    }

    fn with_header(header: &str) -> String {
        let mut t = b64::encode(header.as_bytes());
        t.push('.');
        t.push_str(&b64::encode(b"{}"));
        let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET);
        let tag = hmac::sign(&key, t.as_bytes());
        t.push('.');
        t.push_str(&b64::encode(tag.as_ref()));
        t
    }

    #[test]
    fn j1_alg_none_is_refused_by_the_hmac_path() {
        let e = hs256_verify(&with_header(r#"{"alg":"none"}"#), SECRET, DECODE_MAX_LEN);
        assert!(matches!(e, Err(Error::Jose(JoseError::AlgNone))));
    }

    #[test]
    fn j4_asymmetric_alg_on_the_hmac_path_is_refused() {
        let e = hs256_verify(&with_header(r#"{"alg":"RS256"}"#), SECRET, DECODE_MAX_LEN);
        assert!(matches!(
            e,
            Err(Error::Jose(JoseError::AlgorithmKeyMismatch))
        ));
    }

    #[test]
    fn j7_to_j10_key_references_crit_and_b64_are_refused_on_the_hmac_path() {
        for (h, want) in [
            (
                r#"{"alg":"HS256","jku":"x"}"#,
                JoseError::HeaderKeyReference,
            ),
            (r#"{"alg":"HS256","jwk":{}}"#, JoseError::HeaderKeyReference),
            (
                r#"{"alg":"HS256","crit":["b64"]}"#,
                JoseError::CritNotSupported,
            ),
            (
                r#"{"alg":"HS256","b64":false}"#,
                JoseError::UnencodedPayload,
            ),
            (
                r#"{"alg":"HS256","cty":"JWT"}"#,
                JoseError::NestedOrEncrypted,
            ),
        ] {
            match hs256_verify(&with_header(h), SECRET, DECODE_MAX_LEN) {
                Err(Error::Jose(got)) => assert_eq!(got, want, "{h}"),
                other => panic!("{h}: {other:?}"),
            }
        }
    }

    #[test]
    fn j11_duplicate_header_names_are_refused_on_the_hmac_path() {
        let e = hs256_verify(
            &with_header(r#"{"alg":"HS256","alg":"HS256"}"#),
            SECRET,
            DECODE_MAX_LEN,
        );
        assert!(matches!(e, Err(Error::Jose(JoseError::Json(_)))));
    }

    #[test]
    fn j13_j18_shape_and_size_are_checked_first() {
        assert!(matches!(
            hs256_verify("a.b", SECRET, DECODE_MAX_LEN),
            Err(Error::Jose(JoseError::NotCompactJws))
        ));
        assert!(matches!(
            hs256_verify(&"a".repeat(DECODE_MAX_LEN + 1), SECRET, DECODE_MAX_LEN),
            Err(Error::Jose(JoseError::TooLarge))
        ));
    }
}
