//! The RFC 7662 §2.2 introspection response and the RFC 9701 §5 JWT response claim set.
//!
//! What it does: models the response object with typed members, builds it
//! ([`IntrospectionBuilder`]), serializes it exactly as RFC 7662 §2.2 shows (absent members
//! omitted, `scope` as one space-separated string, `aud` as a string or an array as it was
//! given) and parses it strictly for a resource server ([`IntrospectionResponse::from_json`]).
//!
//! What it never does: decide whether a token is active, sign anything (RFC 9701 signing is
//! `jose`'s), or let an inactive response carry any member but `"active": false`: RFC 7662
//! §2.2 says the AS SHOULD NOT include anything else, and THREATS I2/I5 make that a MUST for
//! heartgate. The builder discards everything it was given when `active` is false, and the
//! parser drops every other member of an inactive response.
//!
//! `Debug` redacts `username`, `sub` and extension values (they are PII: SMART `patient`,
//! `fhirUser`), so a response can be debug-printed into a log without leaking them.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::IntrospectError;
use crate::clock::UnixTime;
use crate::mtls::Confirmation;

/// The JOSE header `typ` of an RFC 9701 JWT introspection response (RFC 9701 §5, §8.1).
pub const TOKEN_INTROSPECTION_JWT_TYP: &str = "token-introspection+jwt";

/// The media type a resource server sends in `Accept` to ask for an RFC 9701 JWT response,
/// and the `Content-Type` of that response (RFC 9701 §4, §5).
pub const TOKEN_INTROSPECTION_JWT_MEDIA_TYPE: &str = "application/token-introspection+jwt";

/// The response members this module models, which an extension member may never be named:
/// the RFC 7662 §2.2 members plus `cnf` (RFC 8705 §3.2, RFC 7800).
pub const REGISTERED_MEMBERS: [&str; 13] = [
    "active",
    "scope",
    "client_id",
    "username",
    "token_type",
    "exp",
    "iat",
    "nbf",
    "sub",
    "aud",
    "iss",
    "jti",
    "cnf",
];

/// The `aud` member: one audience string, or an array of them (RFC 7662 §2.2, RFC 7519
/// §4.1.3). Which of the two the response used is preserved on a round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// `"aud": "https://rs.example"`.
    Single(String),
    /// `"aud": ["https://rs1.example", "https://rs2.example"]` (never empty).
    Multiple(Vec<String>),
}

impl Audience {
    /// Every audience value, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let (single, multiple) = match self {
            Audience::Single(s) => (Some(s.as_str()), &[][..]),
            Audience::Multiple(v) => (None, v.as_slice()),
        };
        single
            .into_iter()
            .chain(multiple.iter().map(String::as_str))
    }

    /// Whether `audience` is one of the values (exact string comparison, RFC 7519 §4.1.3).
    pub fn contains(&self, audience: &str) -> bool {
        self.iter().any(|a| a == audience)
    }
}

/// An RFC 7662 §2.2 introspection response.
///
/// Either inactive, in which case it holds nothing at all and serializes to exactly
/// `{"active":false}`, or active with the optional members below plus extension members
/// (SMART `patient`, `fhirUser`, `fhirContext`, ...) whose names never collide with
/// [`REGISTERED_MEMBERS`]. Build one with [`IntrospectionResponse::builder`] or
/// [`IntrospectionResponse::inactive`]; parse one with [`IntrospectionResponse::from_json`].
#[derive(Clone, PartialEq, Eq)]
pub struct IntrospectionResponse {
    active: bool,
    scope: Option<String>,
    client_id: Option<String>,
    username: Option<String>,
    token_type: Option<String>,
    exp: Option<UnixTime>,
    iat: Option<UnixTime>,
    nbf: Option<UnixTime>,
    sub: Option<String>,
    aud: Option<Audience>,
    iss: Option<String>,
    jti: Option<String>,
    cnf: Option<Confirmation>,
    extensions: Map<String, Value>,
    /// The wire form, written on first use: a cached response is served many times.
    json: JsonText,
}

/// A response's JSON text, written once. Not part of the value: two responses are equal
/// whether or not either has been written yet.
#[derive(Clone, Default)]
struct JsonText(std::sync::OnceLock<Box<str>>);

impl PartialEq for JsonText {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for JsonText {}

impl IntrospectionResponse {
    /// `{"active": false}`: the answer for an inactive, expired, revoked, unknown or
    /// not-allowed token (RFC 7662 §2.2, §2.3). It carries nothing else.
    pub fn inactive() -> Self {
        IntrospectionResponse {
            active: false,
            scope: None,
            client_id: None,
            username: None,
            token_type: None,
            exp: None,
            iat: None,
            nbf: None,
            sub: None,
            aud: None,
            iss: None,
            jti: None,
            cnf: None,
            extensions: Map::new(),
            json: JsonText::default(),
        }
    }

    /// A builder. It starts inactive (fail closed): call
    /// [`IntrospectionBuilder::active`]`(true)` for an active response.
    pub fn builder() -> IntrospectionBuilder {
        IntrospectionBuilder::default()
    }

    /// The REQUIRED `active` member.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// `scope`, as the space-separated string of the wire.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// The individual scope tokens of `scope` (RFC 6749 §3.3); empty when absent.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.as_deref().into_iter().flat_map(|s| s.split(' '))
    }

    /// `client_id`: the client the token was issued to.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// `username`: a human-readable identifier of the resource owner (PII).
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// `token_type` (RFC 6749 §5.1, e.g. `Bearer`).
    pub fn token_type(&self) -> Option<&str> {
        self.token_type.as_deref()
    }

    /// `exp`: when the token expires.
    pub fn exp(&self) -> Option<UnixTime> {
        self.exp
    }

    /// `iat`: when the token was issued.
    pub fn iat(&self) -> Option<UnixTime> {
        self.iat
    }

    /// `nbf`: before when the token must not be used.
    pub fn nbf(&self) -> Option<UnixTime> {
        self.nbf
    }

    /// `sub`: the subject of the token (PII).
    pub fn sub(&self) -> Option<&str> {
        self.sub.as_deref()
    }

    /// `aud`: the token's audience(s).
    pub fn aud(&self) -> Option<&Audience> {
        self.aud.as_ref()
    }

    /// `iss`: the issuer of the token.
    pub fn iss(&self) -> Option<&str> {
        self.iss.as_deref()
    }

    /// `jti`: the token's identifier.
    pub fn jti(&self) -> Option<&str> {
        self.jti.as_deref()
    }

    /// `cnf`: the certificate the token is bound to (RFC 8705 §3.2; THREATS M3).
    pub fn cnf(&self) -> Option<&Confirmation> {
        self.cnf.as_ref()
    }

    /// One extension member (e.g. SMART `patient`), by name.
    pub fn extension(&self, name: &str) -> Option<&Value> {
        self.extensions.get(name)
    }

    /// All extension members. Never contains a name from [`REGISTERED_MEMBERS`].
    pub fn extensions(&self) -> &Map<String, Value> {
        &self.extensions
    }

    /// The response as a JSON object, members absent when `None`: what [`Serialize`]
    /// writes, and what RFC 9701 wraps under `token_introspection`.
    pub fn to_json_object(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            // Serializing strings, integers and JSON values into a value cannot fail.
            _ => Map::new(),
        }
    }

    /// The members to write, sorted by name (the order of a JSON object in this crate),
    /// borrowed from `self`: serializing writes them straight to the output.
    fn members(&self) -> Vec<(&str, Member<'_>)> {
        let mut m: Vec<(&str, Member<'_>)> = vec![("active", Member::Bool(self.active))];
        if !self.active {
            // Belt and braces: an inactive value is built empty, but never emit more.
            return m;
        }
        let strings = [
            ("scope", &self.scope),
            ("client_id", &self.client_id),
            ("username", &self.username),
            ("token_type", &self.token_type),
            ("sub", &self.sub),
            ("iss", &self.iss),
            ("jti", &self.jti),
        ];
        for (name, v) in strings {
            if let Some(v) = v {
                m.push((name, Member::Str(v)));
            }
        }
        for (name, t) in [("exp", self.exp), ("iat", self.iat), ("nbf", self.nbf)] {
            if let Some(t) = t {
                m.push((name, Member::Int(t.secs())));
            }
        }
        if let Some(aud) = &self.aud {
            m.push(("aud", Member::Aud(aud)));
        }
        if let Some(cnf) = &self.cnf {
            m.push(("cnf", Member::Cnf(&cnf.x5t_s256)));
        }
        let registered = m.len();
        for (k, v) in &self.extensions {
            // Extension names never collide (checked at construction); the registered
            // member wins should that invariant ever break.
            if !m[..registered].iter().any(|(n, _)| n == k) {
                m.push((k, Member::Ext(v)));
            }
        }
        m.sort_unstable_by(|a, b| a.0.cmp(b.0));
        m
    }

    /// The response as compact JSON text, e.g. `{"active":false}`.
    pub fn to_json_string(&self) -> String {
        self.json_text().to_owned()
    }

    /// [`IntrospectionResponse::to_json_string`] without a copy: written on the first call,
    /// kept with the response.
    pub fn json_text(&self) -> &str {
        self.json.0.get_or_init(|| {
            serde_json::to_string(self)
                .unwrap_or_else(|_| r#"{"active":false}"#.to_owned())
                .into_boxed_str()
        })
    }

    /// The claim set of an RFC 9701 §5 JWT introspection response:
    /// `{"iss": issuer, "aud": audience, "iat": iat, "token_introspection": {...}}`.
    ///
    /// `audience` is the calling resource server's client_id (THREATS I8). The JWS header
    /// must carry `typ` [`TOKEN_INTROSPECTION_JWT_TYP`]; signing is done by `jose`.
    pub fn jwt_introspection_claims(
        &self,
        issuer: &str,
        audience: &str,
        iat: UnixTime,
    ) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("iss".into(), Value::String(issuer.to_owned()));
        m.insert("aud".into(), Value::String(audience.to_owned()));
        m.insert("iat".into(), Value::from(iat.secs()));
        m.insert(
            "token_introspection".into(),
            Value::Object(self.to_json_object()),
        );
        m
    }

    /// Parse a response body strictly (what a resource server does with the AS's answer).
    ///
    /// `active` must be a JSON boolean, `exp`/`iat`/`nbf` JSON integers, the string members
    /// strings, `aud` a string or a non-empty array of strings, `scope` RFC 6749 §3.3
    /// syntax, `cnf` an object with a string `x5t#S256`; `null` is a wrong type, not
    /// "absent". A repeated member is rejected. Members of an inactive response other than
    /// `active` are dropped unread (they could only be a non-conforming AS's leftovers).
    pub fn from_json(body: &[u8]) -> Result<Self, IntrospectError> {
        let obj: StrictObject = serde_json::from_slice(body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => IntrospectError::NotAnObject,
            _ => IntrospectError::MalformedJson,
        })?;
        if obj.duplicate {
            return Err(IntrospectError::DuplicateMember);
        }
        Self::from_object(obj.map)
    }

    /// Parse an already-decoded JSON object with the rules of [`Self::from_json`] (for
    /// example the `token_introspection` claim of a verified RFC 9701 JWT).
    pub fn from_object(mut obj: Map<String, Value>) -> Result<Self, IntrospectError> {
        let active = match obj.remove("active") {
            None => return Err(IntrospectError::MissingActive),
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(IntrospectError::WrongType { member: "active" }),
        };
        if !active {
            return Ok(Self::inactive());
        }
        let scope = take_string(&mut obj, "scope")?;
        if let Some(s) = &scope {
            if !is_valid_scope(s) {
                return Err(IntrospectError::InvalidValue { member: "scope" });
            }
        }
        let client_id = take_string(&mut obj, "client_id")?;
        let username = take_string(&mut obj, "username")?;
        let token_type = take_string(&mut obj, "token_type")?;
        let exp = take_time(&mut obj, "exp")?;
        let iat = take_time(&mut obj, "iat")?;
        let nbf = take_time(&mut obj, "nbf")?;
        let sub = take_string(&mut obj, "sub")?;
        let aud = take_audience(&mut obj)?;
        let iss = take_string(&mut obj, "iss")?;
        let jti = take_string(&mut obj, "jti")?;
        let cnf = take_cnf(&mut obj)?;
        Ok(IntrospectionResponse {
            active: true,
            scope,
            client_id,
            username,
            token_type,
            exp,
            iat,
            nbf,
            sub,
            aud,
            iss,
            jti,
            cnf,
            // Every registered member has been removed above, so the rest are extensions.
            extensions: obj,
            json: JsonText::default(),
        })
    }
}

impl TryFrom<Map<String, Value>> for IntrospectionResponse {
    type Error = IntrospectError;

    fn try_from(obj: Map<String, Value>) -> Result<Self, Self::Error> {
        Self::from_object(obj)
    }
}

impl Serialize for IntrospectionResponse {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // One source of truth for the wire form, written without an intermediate map.
        use serde::ser::SerializeMap;
        let members = self.members();
        let mut map = serializer.serialize_map(Some(members.len()))?;
        for (name, v) in &members {
            match v {
                Member::Bool(b) => map.serialize_entry(name, b)?,
                Member::Str(s) => map.serialize_entry(name, s)?,
                Member::Int(i) => map.serialize_entry(name, i)?,
                Member::Aud(Audience::Single(a)) => map.serialize_entry(name, a)?,
                Member::Aud(Audience::Multiple(a)) => map.serialize_entry(name, a)?,
                Member::Cnf(t) => map.serialize_entry(name, &CnfMember { x5t_s256: t })?,
                Member::Ext(v) => map.serialize_entry(name, v)?,
            }
        }
        map.end()
    }
}

/// One member of a response being written.
enum Member<'a> {
    Bool(bool),
    Str(&'a str),
    Int(i64),
    Aud(&'a Audience),
    Cnf(&'a str),
    Ext(&'a Value),
}

#[derive(serde::Serialize)]
struct CnfMember<'a> {
    #[serde(rename = "x5t#S256")]
    x5t_s256: &'a str,
}

impl<'de> Deserialize<'de> for IntrospectionResponse {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let obj = StrictObject::deserialize(deserializer)?;
        if obj.duplicate {
            return Err(de::Error::custom(IntrospectError::DuplicateMember));
        }
        Self::from_object(obj.map).map_err(de::Error::custom)
    }
}

impl fmt::Debug for IntrospectionResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const REDACTED: &str = "[redacted]";
        let redact = |v: &Option<String>| v.as_ref().map(|_| REDACTED);
        let extension_names: Vec<&str> = self.extensions.keys().map(String::as_str).collect();
        f.debug_struct("IntrospectionResponse")
            .field("active", &self.active)
            .field("scope", &self.scope)
            .field("client_id", &self.client_id)
            .field("username", &redact(&self.username))
            .field("token_type", &self.token_type)
            .field("exp", &self.exp)
            .field("iat", &self.iat)
            .field("nbf", &self.nbf)
            .field("sub", &redact(&self.sub))
            .field("aud", &self.aud)
            .field("iss", &self.iss)
            .field("jti", &self.jti)
            .field("cnf", &self.cnf)
            .field("extensions (values redacted)", &extension_names)
            .finish()
    }
}

/// Builds an [`IntrospectionResponse`]. Starts inactive; when `active` is false at
/// [`build`](Self::build), everything else given is discarded.
#[derive(Clone, Default)]
pub struct IntrospectionBuilder {
    active: bool,
    scope: Option<String>,
    client_id: Option<String>,
    username: Option<String>,
    token_type: Option<String>,
    exp: Option<UnixTime>,
    iat: Option<UnixTime>,
    nbf: Option<UnixTime>,
    sub: Option<String>,
    aud: Option<Audience>,
    iss: Option<String>,
    jti: Option<String>,
    cnf: Option<Confirmation>,
    extensions: Map<String, Value>,
}

impl fmt::Debug for IntrospectionBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionBuilder")
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl IntrospectionBuilder {
    /// Set `active`.
    pub fn active(mut self, active: bool) -> Self {
        self.active = active;
        self
    }

    /// Set `scope` from its space-separated wire form (checked at [`build`](Self::build)).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Set `scope` from individual scope tokens, joined with single spaces.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut joined = String::new();
        for s in scopes {
            if !joined.is_empty() {
                joined.push(' ');
            }
            joined.push_str(s.as_ref());
        }
        self.scope = Some(joined);
        self
    }

    /// Set `client_id`.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// Set `username`.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// Set `token_type`.
    pub fn token_type(mut self, token_type: impl Into<String>) -> Self {
        self.token_type = Some(token_type.into());
        self
    }

    /// Set `exp`.
    pub fn exp(mut self, exp: UnixTime) -> Self {
        self.exp = Some(exp);
        self
    }

    /// Set `iat`.
    pub fn iat(mut self, iat: UnixTime) -> Self {
        self.iat = Some(iat);
        self
    }

    /// Set `nbf`.
    pub fn nbf(mut self, nbf: UnixTime) -> Self {
        self.nbf = Some(nbf);
        self
    }

    /// Set `sub`.
    #[allow(clippy::should_implement_trait)] // reason: the RFC 7662 member name, not subtraction
    pub fn sub(mut self, sub: impl Into<String>) -> Self {
        self.sub = Some(sub.into());
        self
    }

    /// Set `aud` (a single string or an array; serialized in the same form).
    pub fn aud(mut self, aud: Audience) -> Self {
        self.aud = Some(aud);
        self
    }

    /// Set `iss`.
    pub fn iss(mut self, iss: impl Into<String>) -> Self {
        self.iss = Some(iss.into());
        self
    }

    /// Set `jti`.
    pub fn jti(mut self, jti: impl Into<String>) -> Self {
        self.jti = Some(jti.into());
        self
    }

    /// Set `cnf` (RFC 8705 §3.2: MUST be present for a certificate-bound token, M3).
    pub fn cnf(mut self, cnf: Confirmation) -> Self {
        self.cnf = Some(cnf);
        self
    }

    /// Add an extension member (e.g. SMART `patient`). A name from [`REGISTERED_MEMBERS`]
    /// makes [`build`](Self::build) fail.
    pub fn extension(mut self, name: impl Into<String>, value: Value) -> Self {
        self.extensions.insert(name.into(), value);
        self
    }

    /// Build the response.
    ///
    /// When `active` is false this returns [`IntrospectionResponse::inactive`] and ignores
    /// everything else (nothing is checked, nothing is kept). Otherwise: `scope` must be
    /// RFC 6749 §3.3 syntax, an `aud` array non-empty, and no extension may use a
    /// registered member name.
    pub fn build(self) -> Result<IntrospectionResponse, IntrospectError> {
        if !self.active {
            return Ok(IntrospectionResponse::inactive());
        }
        if let Some(s) = &self.scope {
            if !is_valid_scope(s) {
                return Err(IntrospectError::InvalidValue { member: "scope" });
            }
        }
        if matches!(&self.aud, Some(Audience::Multiple(v)) if v.is_empty()) {
            return Err(IntrospectError::InvalidValue { member: "aud" });
        }
        if let Some(member) = REGISTERED_MEMBERS
            .iter()
            .find(|m| self.extensions.contains_key(**m))
        {
            return Err(IntrospectError::ReservedExtensionName { member });
        }
        Ok(IntrospectionResponse {
            active: true,
            scope: self.scope,
            client_id: self.client_id,
            username: self.username,
            token_type: self.token_type,
            exp: self.exp,
            iat: self.iat,
            nbf: self.nbf,
            sub: self.sub,
            aud: self.aud,
            iss: self.iss,
            jti: self.jti,
            cnf: self.cnf,
            extensions: self.extensions,
            json: JsonText::default(),
        })
    }
}

/// RFC 6749 §3.3: `scope = scope-token *( SP scope-token )`,
/// `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
fn is_valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.split(' ').all(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
        })
}

fn take_string(
    obj: &mut Map<String, Value>,
    member: &'static str,
) -> Result<Option<String>, IntrospectError> {
    match obj.remove(member) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(IntrospectError::WrongType { member }),
    }
}

fn take_time(
    obj: &mut Map<String, Value>,
    member: &'static str,
) -> Result<Option<UnixTime>, IntrospectError> {
    match obj.remove(member) {
        None => Ok(None),
        Some(Value::Number(n)) if n.is_f64() => Err(IntrospectError::WrongType { member }),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(|t| Some(UnixTime(t)))
            .ok_or(IntrospectError::InvalidValue { member }),
        Some(_) => Err(IntrospectError::WrongType { member }),
    }
}

fn take_audience(obj: &mut Map<String, Value>) -> Result<Option<Audience>, IntrospectError> {
    const MEMBER: &str = "aud";
    match obj.remove(MEMBER) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(Audience::Single(s))),
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(IntrospectError::InvalidValue { member: MEMBER });
            }
            items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(IntrospectError::WrongType { member: MEMBER }),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|v| Some(Audience::Multiple(v)))
        }
        Some(_) => Err(IntrospectError::WrongType { member: MEMBER }),
    }
}

fn take_cnf(obj: &mut Map<String, Value>) -> Result<Option<Confirmation>, IntrospectError> {
    const MEMBER: &str = "cnf";
    match obj.remove(MEMBER) {
        None => Ok(None),
        Some(Value::Object(mut c)) => match c.remove("x5t#S256") {
            Some(Value::String(x5t_s256)) => Ok(Some(Confirmation { x5t_s256 })),
            // NOTE: a `cnf` without `x5t#S256` (e.g. DPoP `jkt`, RFC 9449) is not a
            // confirmation heartgate can check yet: an error, never an unbound token.
            // Covered by `cnf_without_x5t_is_invalid`.
            Some(_) => Err(IntrospectError::WrongType { member: MEMBER }),
            None => Err(IntrospectError::InvalidValue { member: MEMBER }),
        },
        Some(_) => Err(IntrospectError::WrongType { member: MEMBER }),
    }
}

/// A top-level JSON object that remembers whether a member name was repeated (serde_json's
/// `Map` would silently keep the last one: `{"active":false,"active":true}`).
struct StrictObject {
    map: Map<String, Value>,
    duplicate: bool,
}

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrictObject;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrictObject, A::Error> {
                let mut map = Map::new();
                let mut duplicate = false;
                while let Some(key) = access.next_key::<String>()? {
                    let value: Value = access.next_value()?;
                    if map.contains_key(&key) {
                        duplicate = true;
                    } else {
                        map.insert(key, value);
                    }
                }
                Ok(StrictObject { map, duplicate })
            }
        }
        deserializer.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly on purpose

    use super::*;
    use serde_json::json;

    fn cnf() -> Confirmation {
        Confirmation {
            x5t_s256: "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2".into(),
        }
    }

    fn full() -> IntrospectionResponse {
        IntrospectionResponse::builder()
            .active(true)
            .scope("patient/Observation.rs openid")
            .client_id("l238j323ds-23ij4")
            .username("jdoe")
            .token_type("Bearer")
            .exp(UnixTime(1_419_356_238))
            .iat(UnixTime(1_419_350_238))
            .nbf(UnixTime(1_419_350_238))
            .sub("Z5O3upPC88QrAjx00dis")
            .aud(Audience::Single(
                "https://protected.example.net/resource".into(),
            ))
            .iss("https://server.example.com/")
            .jti("JlbmMiOiJBMTI4Q0JDLUhTMjU2In")
            .cnf(cnf())
            .extension("patient", json!("123"))
            .extension("fhirUser", json!("Practitioner/9"))
            .build()
            .unwrap()
    }

    /// The JSON text is written once and kept (a cached response is served many times),
    /// it is the serializer's text, and having been written does not change equality.
    #[test]
    fn the_json_text_is_written_once_and_is_not_part_of_the_value() {
        let r = full();
        let unwritten = r.clone();
        let first = r.json_text();
        assert_eq!(first, serde_json::to_string(&unwritten).unwrap());
        assert!(std::ptr::eq(first, r.json_text()), "written again");
        assert_eq!(r, unwritten);
        assert_eq!(r.to_json_string(), first);
        // A parsed copy of the text is the same response.
        assert_eq!(
            IntrospectionResponse::from_json(first.as_bytes()).unwrap(),
            r
        );
    }

    #[test]
    fn inactive_response_serializes_to_active_false_only() {
        assert_eq!(
            IntrospectionResponse::inactive().to_json_string(),
            r#"{"active":false}"#
        );
        assert_eq!(
            serde_json::to_string(&IntrospectionResponse::inactive()).unwrap(),
            r#"{"active":false}"#
        );
    }

    #[test]
    fn inactive_builder_discards_everything_it_was_given_i2_i5() {
        let r = IntrospectionResponse::builder()
            .active(false)
            .scope("a b")
            .sub("someone")
            .exp(UnixTime(10))
            .cnf(cnf())
            .extension("patient", json!("123"))
            // even input that would fail validation is simply discarded
            .extension("active", json!(true))
            .build()
            .unwrap();
        assert_eq!(r, IntrospectionResponse::inactive());
        assert_eq!(r.to_json_string(), r#"{"active":false}"#);
        assert!(r.sub().is_none() && r.cnf().is_none() && r.extensions().is_empty());
    }

    #[test]
    fn builder_starts_inactive_fail_closed() {
        let r = IntrospectionResponse::builder().sub("x").build().unwrap();
        assert!(!r.is_active());
        assert_eq!(r.to_json_string(), r#"{"active":false}"#);
    }

    #[test]
    fn active_response_serializes_rfc7662_members_and_omits_absent_ones() {
        let v = serde_json::to_value(full()).unwrap();
        assert_eq!(
            v,
            json!({
                "active": true,
                "scope": "patient/Observation.rs openid",
                "client_id": "l238j323ds-23ij4",
                "username": "jdoe",
                "token_type": "Bearer",
                "exp": 1_419_356_238,
                "iat": 1_419_350_238,
                "nbf": 1_419_350_238,
                "sub": "Z5O3upPC88QrAjx00dis",
                "aud": "https://protected.example.net/resource",
                "iss": "https://server.example.com/",
                "jti": "JlbmMiOiJBMTI4Q0JDLUhTMjU2In",
                "cnf": {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"},
                "patient": "123",
                "fhirUser": "Practitioner/9"
            })
        );
        let minimal = IntrospectionResponse::builder()
            .active(true)
            .build()
            .unwrap();
        assert_eq!(minimal.to_json_string(), r#"{"active":true}"#);
    }

    #[test]
    fn serialize_and_to_json_object_agree() {
        let r = full();
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            Value::Object(r.to_json_object())
        );
    }

    #[test]
    fn rfc7662_section_2_2_example_parses() {
        // RFC 7662 §2.2, the example response.
        let body = br#"{
          "active": true,
          "client_id": "l238j323ds-23ij4",
          "username": "jdoe",
          "scope": "read write dolphin",
          "sub": "Z5O3upPC88QrAjx00dis",
          "aud": "https://protected.example.net/resource",
          "iss": "https://server.example.com/",
          "exp": 1419356238,
          "iat": 1419350238,
          "extension_field": "twenty-seven"
        }"#;
        let r = IntrospectionResponse::from_json(body).unwrap();
        assert!(r.is_active());
        assert_eq!(r.client_id(), Some("l238j323ds-23ij4"));
        assert_eq!(r.scopes().collect::<Vec<_>>(), ["read", "write", "dolphin"]);
        assert_eq!(r.exp(), Some(UnixTime(1_419_356_238)));
        assert_eq!(
            r.aud(),
            Some(&Audience::Single(
                "https://protected.example.net/resource".into()
            ))
        );
        assert_eq!(r.extension("extension_field"), Some(&json!("twenty-seven")));
        assert_eq!(r.extensions().len(), 1);
    }

    #[test]
    fn round_trip_preserves_everything() {
        let r = full();
        let back = IntrospectionResponse::from_json(r.to_json_string().as_bytes()).unwrap();
        assert_eq!(back, r);
        let via_serde: IntrospectionResponse =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(via_serde, r);
    }

    #[test]
    fn aud_array_form_is_preserved() {
        let body = br#"{"active":true,"aud":["https://a.example","https://b.example"]}"#;
        let r = IntrospectionResponse::from_json(body).unwrap();
        let aud = r.aud().unwrap();
        assert!(matches!(aud, Audience::Multiple(v) if v.len() == 2));
        assert!(aud.contains("https://b.example"));
        assert!(!aud.contains("https://c.example"));
        assert_eq!(
            r.to_json_string(),
            r#"{"active":true,"aud":["https://a.example","https://b.example"]}"#
        );
        let single = IntrospectionResponse::from_json(br#"{"active":true,"aud":"x"}"#).unwrap();
        assert_eq!(single.to_json_string(), r#"{"active":true,"aud":"x"}"#);
    }

    #[test]
    fn extension_named_like_a_registered_member_is_rejected() {
        for member in REGISTERED_MEMBERS {
            let err = IntrospectionResponse::builder()
                .active(true)
                .extension(member, json!("shadow"))
                .build()
                .unwrap_err();
            assert_eq!(err, IntrospectError::ReservedExtensionName { member });
        }
    }

    #[test]
    fn active_must_be_a_json_bool() {
        for body in [
            &br#"{"active":"true"}"#[..],
            br#"{"active":1}"#,
            br#"{"active":null}"#,
        ] {
            assert_eq!(
                IntrospectionResponse::from_json(body),
                Err(IntrospectError::WrongType { member: "active" })
            );
        }
    }

    #[test]
    fn missing_active_is_an_error() {
        assert_eq!(
            IntrospectionResponse::from_json(br#"{"sub":"x"}"#),
            Err(IntrospectError::MissingActive)
        );
    }

    #[test]
    fn wrong_member_types_are_typed_errors_not_absent() {
        let cases: [(&[u8], &str); 9] = [
            (br#"{"active":true,"exp":"1419356238"}"#, "exp"),
            (br#"{"active":true,"exp":1.5}"#, "exp"),
            (br#"{"active":true,"iat":1e9}"#, "iat"),
            (br#"{"active":true,"nbf":null}"#, "nbf"),
            (br#"{"active":true,"scope":["a"]}"#, "scope"),
            (br#"{"active":true,"client_id":7}"#, "client_id"),
            (br#"{"active":true,"aud":[1]}"#, "aud"),
            (br#"{"active":true,"aud":{}}"#, "aud"),
            (br#"{"active":true,"cnf":"abc"}"#, "cnf"),
        ];
        for (body, member) in cases {
            assert_eq!(
                IntrospectionResponse::from_json(body),
                Err(IntrospectError::WrongType { member }),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn out_of_range_exp_is_invalid_value() {
        assert_eq!(
            IntrospectionResponse::from_json(br#"{"active":true,"exp":18446744073709551615}"#),
            Err(IntrospectError::InvalidValue { member: "exp" })
        );
    }

    #[test]
    fn invalid_scope_syntax_is_rejected() {
        for body in [
            &br#"{"active":true,"scope":""}"#[..],
            br#"{"active":true,"scope":"a  b"}"#,
            br#"{"active":true,"scope":" a"}"#,
            br#"{"active":true,"scope":"a\"b"}"#,
            br#"{"active":true,"scope":"a\\b"}"#,
            br#"{"active":true,"scope":"caf\u00e9"}"#,
        ] {
            assert_eq!(
                IntrospectionResponse::from_json(body),
                Err(IntrospectError::InvalidValue { member: "scope" }),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            IntrospectionResponse::builder()
                .active(true)
                .scopes(["a", ""])
                .build(),
            Err(IntrospectError::InvalidValue { member: "scope" })
        );
    }

    #[test]
    fn empty_aud_array_is_invalid() {
        assert_eq!(
            IntrospectionResponse::from_json(br#"{"active":true,"aud":[]}"#),
            Err(IntrospectError::InvalidValue { member: "aud" })
        );
        assert_eq!(
            IntrospectionResponse::builder()
                .active(true)
                .aud(Audience::Multiple(vec![]))
                .build(),
            Err(IntrospectError::InvalidValue { member: "aud" })
        );
    }

    #[test]
    fn cnf_without_x5t_is_invalid() {
        assert_eq!(
            IntrospectionResponse::from_json(br#"{"active":true,"cnf":{"jkt":"abc"}}"#),
            Err(IntrospectError::InvalidValue { member: "cnf" })
        );
        assert_eq!(
            IntrospectionResponse::from_json(br#"{"active":true,"cnf":{"x5t#S256":5}}"#),
            Err(IntrospectError::WrongType { member: "cnf" })
        );
    }

    #[test]
    fn duplicate_member_is_rejected() {
        assert_eq!(
            IntrospectionResponse::from_json(br#"{"active":false,"active":true}"#),
            Err(IntrospectError::DuplicateMember)
        );
        assert!(
            serde_json::from_str::<IntrospectionResponse>(r#"{"active":true,"active":true}"#)
                .is_err()
        );
    }

    #[test]
    fn non_object_and_malformed_bodies_are_distinguished() {
        assert_eq!(
            IntrospectionResponse::from_json(b"[true]"),
            Err(IntrospectError::NotAnObject)
        );
        assert_eq!(
            IntrospectionResponse::from_json(b"true"),
            Err(IntrospectError::NotAnObject)
        );
        assert_eq!(
            IntrospectionResponse::from_json(br#"{"active":true"#),
            Err(IntrospectError::MalformedJson)
        );
        assert_eq!(
            IntrospectionResponse::from_json(br#"{"active":true} x"#),
            Err(IntrospectError::MalformedJson)
        );
        assert_eq!(
            IntrospectionResponse::from_json(b""),
            Err(IntrospectError::MalformedJson)
        );
    }

    #[test]
    fn parsed_inactive_response_drops_other_members() {
        let r = IntrospectionResponse::from_json(
            br#"{"active":false,"sub":"leaked","exp":"not even checked"}"#,
        )
        .unwrap();
        assert_eq!(r, IntrospectionResponse::inactive());
        assert_eq!(r.to_json_string(), r#"{"active":false}"#);
    }

    #[test]
    fn jwt_introspection_claims_wrap_the_response_rfc9701() {
        let claims = full().jwt_introspection_claims(
            "https://as.example",
            "rs-client-1",
            UnixTime(1_700_000_000),
        );
        assert_eq!(claims.len(), 4);
        assert_eq!(claims["iss"], json!("https://as.example"));
        assert_eq!(claims["aud"], json!("rs-client-1"));
        assert_eq!(claims["iat"], json!(1_700_000_000));
        assert_eq!(
            claims["token_introspection"],
            Value::Object(full().to_json_object())
        );
        let inactive = IntrospectionResponse::inactive().jwt_introspection_claims(
            "https://as.example",
            "rs",
            UnixTime(1),
        );
        assert_eq!(inactive["token_introspection"], json!({"active": false}));
        assert_eq!(TOKEN_INTROSPECTION_JWT_TYP, "token-introspection+jwt");
    }

    #[test]
    fn debug_redacts_pii() {
        let text = format!("{:?}", full());
        assert!(!text.contains("jdoe"));
        assert!(!text.contains("Z5O3upPC88QrAjx00dis"));
        assert!(!text.contains("Practitioner/9"));
        assert!(text.contains("patient"));
    }
}
