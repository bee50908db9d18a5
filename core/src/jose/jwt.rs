//! JWT claim sets (RFC 7519) and their validation against a [`Validation`] policy.
//!
//! Every check is explicit and a missing required claim is an error, never a pass
//! (STYLE.md, anti-pattern 2). Time claims are typed NumericDates: integers in
//! `0..=MAX_NUMERIC_DATE`; strings, floats, `null`, booleans, negatives and values out of
//! range are a typed [`JoseError::InvalidClaim`] (J20, J23; CVE-2026-25537 was exactly
//! "wrong type treated as absent"). `iss` is compared byte for byte (J26), `aud` must be
//! a string or a non-empty array of strings (J27), and `typ` is compared
//! case-insensitively with an optional `application/` prefix (J25, RFC 7515 §4.1.9).
//!
//! NOTE: RFC 7519 §2 allows non-integer NumericDates; we refuse them. Pinned by
//! `core/tests/jose_threats.rs::j20_integral_float_is_refused`.

use std::ops::Deref;

use serde_json::{Map, Value};

use super::jws::{parse_compact, Header, ACCESS_TOKEN_MAX_LEN};
use super::{json, AlgorithmSet, JoseError, KeyResolver, SigningKey};
use crate::clock::UnixTime;

/// Latest NumericDate accepted: 9999-12-31T23:59:59Z. Bounding dates here keeps every
/// later addition (`exp + leeway`) far from overflow (J23).
pub const MAX_NUMERIC_DATE: i64 = 253_402_300_799;

/// Default clock-skew leeway, in seconds: FAPI 2.0 §5.3.2.1 asks to accept `iat`/`nbf` up
/// to 10 s in the future.
pub const DEFAULT_LEEWAY: u32 = 10;

/// Most leeway a policy may configure, in seconds (FAPI 2.0: reject beyond 60 s).
pub const MAX_LEEWAY: u32 = 60;

/// A JWT claim set with typed accessors.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Claims(Map<String, Value>);

/// The `aud` claim as it appeared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience<'a> {
    /// A single string.
    One(&'a str),
    /// A non-empty array of strings.
    Many(Vec<&'a str>),
}

impl Audience<'_> {
    /// Whether `aud` names `expected` (a string equal to it, or an array containing it).
    pub fn contains(&self, expected: &str) -> bool {
        match self {
            Audience::One(a) => *a == expected,
            Audience::Many(v) => v.contains(&expected),
        }
    }
}

impl Claims {
    /// Wrap a claim map.
    pub fn new(map: Map<String, Value>) -> Self {
        Claims(map)
    }

    /// Parse a claim set strictly (duplicate names, depth, UTF-8: see `json`).
    pub fn from_json(bytes: &[u8]) -> Result<Self, JoseError> {
        json::parse_object(bytes)
            .map(Claims)
            .map_err(JoseError::Json)
    }

    /// The underlying map.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The underlying map, owned.
    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }

    /// The raw value of a claim.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// A string claim; present with another type is an error.
    pub fn string(&self, name: &'static str) -> Result<Option<&str>, JoseError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(JoseError::InvalidClaim(name)),
        }
    }

    /// A string claim that must be present.
    pub fn required_string(&self, name: &'static str) -> Result<&str, JoseError> {
        self.string(name)?.ok_or(JoseError::MissingClaim(name))
    }

    /// A NumericDate claim (integer seconds in `0..=MAX_NUMERIC_DATE`).
    pub fn numeric_date(&self, name: &'static str) -> Result<Option<UnixTime>, JoseError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) if (0..=MAX_NUMERIC_DATE).contains(&v) => Ok(Some(UnixTime(v))),
                _ => Err(JoseError::InvalidClaim(name)),
            },
            Some(_) => Err(JoseError::InvalidClaim(name)),
        }
    }

    /// The `aud` claim, type-checked (J27): a string, or a non-empty array of strings.
    pub fn audience(&self) -> Result<Option<Audience<'_>>, JoseError> {
        match self.0.get("aud") {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(Audience::One(s))),
            Some(Value::Array(items)) if !items.is_empty() => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(i.as_str().ok_or(JoseError::InvalidClaim("aud"))?);
                }
                Ok(Some(Audience::Many(out)))
            }
            Some(_) => Err(JoseError::InvalidClaim("aud")),
        }
    }
}

/// What `aud` must be in a given context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudienceRule {
    /// `aud` must name this audience (string equal, or array containing it).
    Contains(String),
    /// `aud` must name at least one of these (client assertions outside FAPI 2.0: the
    /// issuer, the token endpoint or the PAR endpoint, RFC 9126 §2).
    AnyOf(Vec<String>),
    /// `aud` must be exactly this JSON string, not an array (FAPI 2.0 §5.3.2.1 item 7
    /// for client assertions; OIDF `par-test-array-as-audience-fails`).
    ExactString(String),
    /// `aud` must be absent (J27: "present where none is expected").
    MustBeAbsent,
    /// `aud` must be present; who may use the token is decided afterwards by the caller
    /// (the authorization server's introspection, which checks the audience against the
    /// calling resource server, RFC 7662 §4). Never for a resource server's own checks.
    Present,
}

/// What the header's `typ` must be in a given context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypRule {
    /// `typ` must be present and equal (e.g. `at+jwt`, RFC 9068 §2.1).
    Required(&'static str),
    /// `typ` may be absent; if present it must be one of these.
    OptionalOneOf(&'static [&'static str]),
}

/// Compare media types as RFC 7515 §4.1.9 says: case-insensitive, `application/` optional.
pub fn typ_matches(actual: &str, expected: &str) -> bool {
    fn bare(s: &str) -> &str {
        match s.get(..12) {
            Some(p) if p.eq_ignore_ascii_case("application/") => &s[12..],
            _ => s,
        }
    }
    bare(actual).eq_ignore_ascii_case(bare(expected))
}

/// A validation policy for one context (access token, client assertion, request object...).
#[derive(Debug, Clone)]
pub struct Validation {
    /// Algorithms accepted in this context.
    pub algorithms: AlgorithmSet,
    /// The `typ` rule.
    pub typ: TypRule,
    /// When set, `iss` must be present and byte-equal.
    pub issuer: Option<String>,
    /// The `aud` rule.
    pub audience: AudienceRule,
    /// Clock-skew leeway in seconds (capped at [`MAX_LEEWAY`]).
    pub leeway: u32,
    /// Longest accepted lifetime: `exp - iat` (or `exp - now` without `iat`), seconds (J24).
    pub max_lifetime: Option<u32>,
    /// Claims that must be present besides `exp` (always required, J21).
    pub required: Vec<&'static str>,
    /// Longest accepted token, checked before decoding (J18).
    pub max_len: usize,
}

impl Validation {
    /// A policy with the default leeway, no lifetime cap, the access-token size limit and
    /// no issuer requirement.
    pub fn new(algorithms: AlgorithmSet, typ: TypRule, audience: AudienceRule) -> Self {
        Validation {
            algorithms,
            typ,
            issuer: None,
            audience,
            leeway: DEFAULT_LEEWAY,
            max_lifetime: None,
            required: Vec::new(),
            max_len: ACCESS_TOKEN_MAX_LEN,
        }
    }

    /// Require `iss` to equal `issuer`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Set the leeway (capped at [`MAX_LEEWAY`]).
    pub fn leeway(mut self, secs: u32) -> Self {
        self.leeway = secs.min(MAX_LEEWAY);
        self
    }

    /// Cap the lifetime.
    pub fn max_lifetime(mut self, secs: u32) -> Self {
        self.max_lifetime = Some(secs);
        self
    }

    /// Require these claims to be present.
    pub fn require(mut self, claims: &[&'static str]) -> Self {
        self.required.extend_from_slice(claims);
        self
    }

    /// Set the size limit.
    pub fn max_len(mut self, len: usize) -> Self {
        self.max_len = len;
        self
    }
}

/// A value that passed verification. Only this crate's verifiers construct one.
#[derive(Debug, Clone)]
pub struct Verified<T> {
    value: T,
    header: Header,
    kid: String,
}

impl<T> Verified<T> {
    pub(crate) fn new(value: T, header: Header, kid: String) -> Self {
        Verified { value, header, kid }
    }

    /// The verified header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The id of the key that verified the signature.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Give up the proof and keep the value.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// Check the header's `typ` against a rule.
pub fn check_typ(header: &Header, rule: TypRule) -> Result<(), JoseError> {
    match (rule, header.typ()) {
        (TypRule::Required(t), Some(actual)) if typ_matches(actual, t) => Ok(()),
        (TypRule::Required(_), _) => Err(JoseError::WrongType),
        (TypRule::OptionalOneOf(_), None) => Ok(()),
        (TypRule::OptionalOneOf(ts), Some(actual)) if ts.iter().any(|t| typ_matches(actual, t)) => {
            Ok(())
        }
        (TypRule::OptionalOneOf(_), Some(_)) => Err(JoseError::WrongType),
    }
}

/// Validate the claims of an already verified JWT against `v` at time `now`.
pub fn validate_claims(claims: &Claims, v: &Validation, now: UnixTime) -> Result<(), JoseError> {
    let leeway = i64::from(v.leeway.min(MAX_LEEWAY));
    let exp = claims
        .numeric_date("exp")?
        .ok_or(JoseError::MissingClaim("exp"))?;
    let nbf = claims.numeric_date("nbf")?;
    let iat = claims.numeric_date("iat")?;
    let now = now.secs();
    // Dates and leeway are bounded, so `exp + leeway` cannot overflow, and `now + leeway`
    // is only reached once `now <= exp + leeway`. `now` itself is not bounded (a faulty
    // clock, S10): the lifetime measured from it saturates instead of overflowing (J23).
    if now > exp.secs() + leeway {
        return Err(JoseError::Expired);
    }
    if let Some(nbf) = nbf {
        if nbf.secs() > now + leeway {
            return Err(JoseError::NotYetValid);
        }
    }
    if let Some(iat) = iat {
        if iat.secs() > now + leeway {
            return Err(JoseError::IssuedInFuture);
        }
    }
    if let Some(max) = v.max_lifetime {
        let start = iat.map(UnixTime::secs).unwrap_or(now);
        if exp.secs().saturating_sub(start) > i64::from(max) {
            return Err(JoseError::LifetimeTooLong);
        }
    }
    if let Some(expected) = &v.issuer {
        let iss = claims.required_string("iss")?;
        if iss.as_bytes() != expected.as_bytes() {
            return Err(JoseError::IssuerMismatch);
        }
    }
    let aud = claims.audience()?;
    match (&v.audience, aud) {
        (AudienceRule::MustBeAbsent, None) => {}
        (AudienceRule::MustBeAbsent, Some(_)) => return Err(JoseError::UnexpectedAudience),
        (_, None) => return Err(JoseError::MissingClaim("aud")),
        (AudienceRule::Present, Some(_)) => {}
        (AudienceRule::Contains(e), Some(a)) => {
            if !a.contains(e) {
                return Err(JoseError::AudienceMismatch);
            }
        }
        (AudienceRule::AnyOf(es), Some(a)) => {
            if !es.iter().any(|e| a.contains(e)) {
                return Err(JoseError::AudienceMismatch);
            }
        }
        (AudienceRule::ExactString(e), Some(a)) => {
            if a != Audience::One(e) {
                return Err(JoseError::AudienceMismatch);
            }
        }
    }
    for name in &v.required {
        if !claims.0.contains_key(*name) {
            return Err(JoseError::MissingClaim(name));
        }
    }
    Ok(())
}

/// Verify a compact JWT: size, structure, header, `typ`, signature (with a key from
/// `keys` whose algorithm is allowed), then the claims at `now`.
pub fn verify_jwt(
    token: &str,
    keys: &dyn KeyResolver,
    v: &Validation,
    now: UnixTime,
) -> Result<Verified<Claims>, JoseError> {
    let jws = parse_compact(token, v.max_len)?;
    check_typ(jws.header(), v.typ)?;
    let (header, payload, kid) = jws.verify(keys, v.algorithms)?.into_parts();
    let claims = Claims::from_json(&payload)?;
    validate_claims(&claims, v, now)?;
    Ok(Verified::new(claims, header, kid))
}

/// Sign a claim set as a compact JWT with the given `typ`.
pub fn sign_jwt(
    key: &SigningKey,
    typ: Option<&str>,
    claims: &Map<String, Value>,
) -> Result<String, JoseError> {
    let payload = serde_json::to_vec(claims).map_err(|_| JoseError::SigningFailed)?;
    super::jws::sign_compact(key, typ, &payload)
}
