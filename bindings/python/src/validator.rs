//! The resource-server validator: RFC 9068 JWT access tokens offline against a JWKS,
//! wrapper tokens offline and then by introspection of their reference, opaque tokens by
//! introspection (RFC 7662), RFC 8705 certificate binding and SMART scopes.
//!
//! Split in two steps so that the Python layer does the HTTP (httpx, sync or async):
//! [`CoreValidator::check`] runs core's offline validation and looks the introspection
//! cache up; [`CoreValidator::complete`] takes the introspection answer (cached, or the
//! response body the Python layer fetched), caches it, and applies binding, agreement
//! (wrapper vs reference, THREATS J30/M8) and scope checks.
//!
//! What a wrapper token's introspection sends: by default the whole wrapper token, which
//! is what the heartgate server's endpoint resolves (it checks the wrapper against the
//! reference's record itself); with `wrapper_reference` the bare `ref`, as the README's
//! wrapper-format section describes for third-party issuers. Either way the answer must
//! agree with the wrapper here too.

use std::sync::Arc;

use heartgate_core::clock::UnixTime;
use heartgate_core::introspect::{
    CacheConfig, CacheKey, Generation, IntrospectionCache, IntrospectionResponse, InvalidationTags,
};
use heartgate_core::jose::{AlgorithmSet, JoseError, JwkSet, RefetchLimiter, MAX_LEEWAY};
use heartgate_core::mtls::{check_binding, Confirmation};
use heartgate_core::scope::{Compartment, Scope, ScopeSet};
use heartgate_core::token::{
    AccessTokenValidator, RevokedJtis, SecretToken, TokenError, ValidatedToken,
};
use parking_lot::RwLock;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::{Map, Value};

use crate::convert::{map_to_py, value_to_py};
use crate::keys::{Alg, PyKeySet};
use crate::{guarded, now, Error};

/// Whether `s` could be an opaque bearer token of another authorization server (RFC 6750
/// §2.1 token68, no dots): such tokens go to introspection as they are.
fn is_foreign_opaque(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_~+/=".contains(&c))
}

/// The offline result of one token, and what it still needs.
#[pyclass(frozen, module = "heartgate._heartgate", name = "_Check")]
pub struct Check {
    validated: ValidatedToken,
    introspect: Option<(SecretToken, CacheKey)>,
    cached: Option<Arc<IntrospectionResponse>>,
    generation: Option<Generation>,
}

#[pymethods]
impl Check {
    /// `jwt`, `wrapper` or `opaque`.
    #[getter]
    fn format(&self) -> &'static str {
        format_name(&self.validated)
    }

    /// The token to send to the introspection endpoint, when introspection is needed and
    /// the cache has no answer.
    #[getter]
    fn introspection_token(&self) -> Option<String> {
        match (&self.introspect, &self.cached) {
            (Some((t, _)), None) => Some(t.expose().to_owned()),
            _ => None,
        }
    }
}

fn format_name(v: &ValidatedToken) -> &'static str {
    match v {
        ValidatedToken::Jwt(_) => "jwt",
        ValidatedToken::Wrapper(_) => "wrapper",
        _ => "opaque",
    }
}

/// The core of `heartgate.Validator` (the Python class adds HTTP).
#[pyclass(frozen, module = "heartgate._heartgate", name = "_Validator")]
pub struct CoreValidator {
    issuer: String,
    audience: String,
    leeway: u32,
    tokens: AccessTokenValidator,
    keys: RwLock<Arc<JwkSet>>,
    refetch: RefetchLimiter,
    cache: Option<IntrospectionCache>,
    revoked: RevokedJtis,
    /// Introspect a wrapper's bare reference (README "Wrapper token format") instead of
    /// the whole wrapper token (what the heartgate server's endpoint expects).
    wrapper_reference: bool,
}

#[pymethods]
impl CoreValidator {
    #[new]
    #[pyo3(signature = (issuer, audience, leeway = 10, cache_ttl = 30, cache_entries = 10_000, refetch_interval = 60, algorithms = None, wrapper_reference = false))]
    #[allow(clippy::too_many_arguments)] // reason: one keyword argument per setting
    fn new(
        issuer: String,
        audience: String,
        leeway: u32,
        cache_ttl: u64,
        cache_entries: usize,
        refetch_interval: u32,
        algorithms: Option<Vec<String>>,
        wrapper_reference: bool,
    ) -> PyResult<Self> {
        if leeway > MAX_LEEWAY {
            return Err(
                Error::Argument("leeway must be between 0 and 60 seconds (FAPI 2.0)").into(),
            );
        }
        if issuer.is_empty() || audience.is_empty() {
            return Err(Error::Argument("issuer and audience must not be empty").into());
        }
        let mut tokens = AccessTokenValidator::new(issuer.clone(), audience.clone()).leeway(leeway);
        if let Some(names) = algorithms {
            let mut algs = Vec::new();
            for n in &names {
                match Alg::parse(n)? {
                    Alg::Asym(a) => algs.push(a),
                    Alg::Hs256 => {
                        return Err(
                            Error::Argument("access tokens are never HS256 (THREATS J2)").into(),
                        )
                    }
                }
            }
            tokens = tokens.algorithms(AlgorithmSet::of(&algs));
        }
        let cache = if cache_ttl == 0 {
            None
        } else {
            let config = CacheConfig {
                positive_ttl: std::time::Duration::from_secs(cache_ttl),
                max_entries: cache_entries.max(10),
                max_negative_entries: (cache_entries / 10).max(1),
                ..CacheConfig::default()
            };
            Some(IntrospectionCache::new(config).map_err(Error::from)?)
        };
        Ok(CoreValidator {
            issuer,
            audience,
            leeway,
            tokens,
            keys: RwLock::new(Arc::new(JwkSet::default())),
            refetch: RefetchLimiter::new(refetch_interval),
            cache,
            revoked: RevokedJtis::new(),
            wrapper_reference,
        })
    }

    /// Replace the verification keys (after a JWKS fetch).
    fn set_keys(&self, keys: &Bound<'_, PyKeySet>) {
        *self.keys.write() = Arc::clone(&keys.get().inner);
    }

    /// How many verification keys are held.
    fn key_count(&self) -> usize {
        self.keys.read().keys().len()
    }

    /// Whether the JWKS may be fetched now (at most once per interval, THREATS J6).
    fn may_refetch(&self) -> bool {
        self.refetch.try_acquire(now()).is_some()
    }

    /// Offline checks, and the introspection cache lookup.
    fn check(&self, py: Python<'_>, token: &str) -> PyResult<Check> {
        let t = now();
        let validated = guarded(py, || {
            let keys = Arc::clone(&self.keys.read());
            match self.tokens.validate(token, keys.as_ref(), &self.revoked, t) {
                // Another issuer's opaque token (no heartgate prefix): only introspection
                // can tell; the Python layer refuses it when none is configured.
                Err(TokenError::Jose(JoseError::NotCompactJws)) if is_foreign_opaque(token) => {
                    Ok(ValidatedToken::Opaque(SecretToken::new(token).hash()))
                }
                r => Ok(r?),
            }
        })?;
        let introspect = match &validated {
            ValidatedToken::Wrapper(w) if self.wrapper_reference => Some(w.reference.clone()),
            ValidatedToken::Jwt(_) => None,
            _ => Some(SecretToken::new(token)),
        }
        .map(|s| {
            let key = CacheKey::for_token(s.expose());
            (s, key)
        });
        let (cached, generation) = match (&introspect, &self.cache) {
            (Some((_, key)), Some(cache)) => (cache.get(key, t), Some(cache.generation())),
            _ => (None, None),
        };
        Ok(Check {
            validated,
            introspect,
            cached,
            generation,
        })
    }

    /// Finish validation with the introspection response body (when one was fetched).
    #[pyo3(signature = (check, response = None, client_cert = None, required_scopes = Vec::new()))]
    fn complete(
        &self,
        py: Python<'_>,
        check: &Check,
        response: Option<Vec<u8>>,
        client_cert: Option<&Bound<'_, PyAny>>,
        required_scopes: Vec<String>,
    ) -> PyResult<AccessToken> {
        let t = now();
        let client_cert = client_cert.map(crate::issuer::cert_der).transpose()?;
        let token = guarded(py, || {
            let answer = match (&check.cached, response) {
                (Some(c), _) => Some(Arc::clone(c)),
                (None, Some(body)) => Some(self.remember(check, &body, t)?),
                (None, None) => None,
            };
            let cert = client_cert.as_deref();
            let (claims, cnf) = match &check.validated {
                ValidatedToken::Jwt(v) => {
                    v.check_binding(cert)?;
                    (v.claims.as_map().clone(), v.cnf.clone())
                }
                ValidatedToken::Wrapper(w) => {
                    // The wrapper's own binding first: a stolen wrapper fails offline.
                    w.check_binding(cert)?;
                    let r = answer.ok_or(Error::Argument("wrapper tokens need introspection"))?;
                    self.check_answer(&r, t)?;
                    agree(w, &r)?;
                    (answer_claims(&r), r.cnf().cloned())
                }
                _ => {
                    let r = answer.ok_or(Error::Argument("opaque tokens need introspection"))?;
                    self.check_answer(&r, t)?;
                    check_binding(r.cnf(), cert)?;
                    (answer_claims(&r), r.cnf().cloned())
                }
            };
            let token = AccessToken::new(format_name(&check.validated), claims, cnf);
            token.require_all(&required_scopes)?;
            Ok(token)
        })?;
        Ok(token)
    }

    /// Drop a cached introspection answer (e.g. on a revocation notice).
    fn forget(&self, token: &str) -> usize {
        self.cache
            .as_ref()
            .map(|c| c.invalidate_key(&CacheKey::for_token(token)))
            .unwrap_or(0)
    }

    /// (hits, misses, entries) of the introspection cache.
    fn cache_stats(&self) -> (u64, u64, usize) {
        match &self.cache {
            Some(c) => {
                let s = c.stats();
                (s.hits, s.misses, c.len())
            }
            None => (0, 0, 0),
        }
    }
}

impl CoreValidator {
    /// Parse an introspection body and cache it (a refused insertion is not an error:
    /// the answer is still used, just not remembered).
    fn remember(
        &self,
        check: &Check,
        body: &[u8],
        t: UnixTime,
    ) -> Result<Arc<IntrospectionResponse>, Error> {
        let r = Arc::new(IntrospectionResponse::from_json(body)?);
        if let (Some(cache), Some((_, key)), Some(generation)) =
            (&self.cache, &check.introspect, check.generation)
        {
            let tags = InvalidationTags::from_response(&r);
            let _ = cache.insert(*key, Arc::clone(&r), tags, generation, t);
        }
        Ok(r)
    }

    /// RFC 7662 §2.2 answer checks on this resource server's side: active, not expired,
    /// of our issuer, for our audience (THREATS I2: the AS should check it too).
    fn check_answer(&self, r: &IntrospectionResponse, t: UnixTime) -> Result<(), Error> {
        if !r.is_active() {
            return Err(Error::Inactive);
        }
        let leeway = i64::from(self.leeway);
        let exp = r.exp().ok_or(Error::IntrospectionMismatch("exp"))?;
        if t.secs() > exp.secs().saturating_add(leeway) {
            return Err(JoseError::Expired.into());
        }
        if let Some(nbf) = r.nbf() {
            if nbf.secs() > t.secs().saturating_add(leeway) {
                return Err(JoseError::NotYetValid.into());
            }
        }
        if let Some(iss) = r.iss() {
            if iss != self.issuer {
                return Err(JoseError::IssuerMismatch.into());
            }
        }
        match r.aud() {
            Some(aud) if aud.contains(&self.audience) => Ok(()),
            Some(_) => Err(JoseError::AudienceMismatch.into()),
            None => Err(JoseError::MissingClaim("aud").into()),
        }
    }
}

/// A wrapper token and the introspection of its reference must describe the same grant
/// (THREATS J30, M8): same jti, client and binding, and the wrapper must not outlive it.
fn agree(w: &heartgate_core::token::WrapperClaims, r: &IntrospectionResponse) -> Result<(), Error> {
    if r.jti() != Some(w.jti.as_str()) {
        return Err(Error::IntrospectionMismatch("jti"));
    }
    if r.client_id() != Some(w.client_id.as_str()) {
        return Err(Error::IntrospectionMismatch("client_id"));
    }
    if r.cnf() != w.cnf.as_ref() {
        return Err(Error::IntrospectionMismatch("cnf"));
    }
    match r.exp() {
        Some(exp) if w.exp.secs() <= exp.secs() => Ok(()),
        _ => Err(Error::IntrospectionMismatch("exp")),
    }
}

fn answer_claims(r: &IntrospectionResponse) -> Map<String, Value> {
    let mut m = r.to_json_object();
    m.remove("active");
    m
}

/// A validated access token: its claims, parsed SMART scopes, patient / fhirUser context
/// and certificate binding.
#[pyclass(frozen, module = "heartgate", name = "AccessToken")]
pub struct AccessToken {
    format: &'static str,
    claims: Map<String, Value>,
    scopes: Vec<String>,
    smart: ScopeSet,
    cnf: Option<Confirmation>,
}

fn compartment(name: &str) -> Result<Compartment, Error> {
    match name {
        "patient" => Ok(Compartment::Patient),
        "user" => Ok(Compartment::User),
        "system" => Ok(Compartment::System),
        _ => Err(Error::Argument(
            "compartment must be patient, user or system",
        )),
    }
}

impl AccessToken {
    pub(crate) fn new(
        format: &'static str,
        claims: Map<String, Value>,
        cnf: Option<Confirmation>,
    ) -> Self {
        let scope = claims.get("scope").and_then(Value::as_str).unwrap_or("");
        let scopes: Vec<String> = scope
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        // Scopes outside the SMART grammar stay in `scopes` but grant no FHIR access.
        let smart_text = scopes
            .iter()
            .filter(|s| s.parse::<Scope>().is_ok())
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        let smart = ScopeSet::parse(&smart_text).unwrap_or_default();
        AccessToken {
            format,
            claims,
            scopes,
            smart,
            cnf,
        }
    }

    fn string_claim(&self, name: &str) -> Option<String> {
        self.claims
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// Each required scope must be covered: a SMART resource scope by a granted one that
    /// covers it (`patient/*.rs` covers `patient/Observation.r`), any other exactly.
    pub(crate) fn require_all(&self, required: &[String]) -> Result<(), Error> {
        for r in required {
            let covered = match r.parse::<Scope>() {
                Ok(Scope::Resource(_)) => ScopeSet::parse(r)
                    .map(|req| self.smart.covers(&req))
                    .unwrap_or(false),
                _ => self.scopes.iter().any(|s| s == r),
            };
            if !covered {
                return Err(Error::InsufficientScope);
            }
        }
        Ok(())
    }

    fn permits_in(&self, resource: &str, op: char, c: Option<Compartment>) -> bool {
        let all = [Compartment::Patient, Compartment::User, Compartment::System];
        match c {
            Some(c) => self.smart.permits(c, resource, op),
            None => all.iter().any(|c| self.smart.permits(*c, resource, op)),
        }
    }
}

fn op_char(op: &str) -> Result<char, Error> {
    match op {
        "c" => Ok('c'),
        "r" => Ok('r'),
        "u" => Ok('u'),
        "d" => Ok('d'),
        "s" => Ok('s'),
        _ => Err(Error::Argument("op must be one of c, r, u, d, s")),
    }
}

#[pymethods]
impl AccessToken {
    /// `jwt`, `wrapper` or `opaque`.
    #[getter]
    fn format(&self) -> &'static str {
        self.format
    }

    /// Every claim (for wrapper and opaque tokens: the introspection response's members).
    #[getter]
    fn claims<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        map_to_py(py, &self.claims)
    }

    /// `sub`.
    #[getter]
    fn subject(&self) -> Option<String> {
        self.string_claim("sub")
    }

    /// `client_id`.
    #[getter]
    fn client_id(&self) -> Option<String> {
        self.string_claim("client_id")
    }

    /// `iss`.
    #[getter]
    fn issuer(&self) -> Option<String> {
        self.string_claim("iss")
    }

    /// `jti`.
    #[getter]
    fn jti(&self) -> Option<String> {
        self.string_claim("jti")
    }

    /// `exp`.
    #[getter]
    fn expires_at(&self) -> Option<i64> {
        self.claims.get("exp").and_then(Value::as_i64)
    }

    /// The granted scopes, as written.
    #[getter]
    fn scopes(&self) -> Vec<String> {
        self.scopes.clone()
    }

    /// The SMART resource scopes, normalised (`patient/Observation.rs`).
    #[getter]
    fn smart_scopes(&self) -> Vec<String> {
        self.smart.iter().map(|s| s.to_string()).collect()
    }

    /// SMART launch context: the patient in context (`patient` claim).
    #[getter]
    fn patient(&self) -> Option<String> {
        self.string_claim("patient")
    }

    /// SMART launch context: the encounter in context.
    #[getter]
    fn encounter(&self) -> Option<String> {
        self.string_claim("encounter")
    }

    /// The user's FHIR resource URL (`fhirUser`).
    #[getter]
    fn fhir_user(&self) -> Option<String> {
        self.string_claim("fhirUser")
    }

    /// The `cnf` claim (`{"x5t#S256": ...}`) of a certificate-bound token.
    #[getter]
    fn cnf<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        match self.claims.get("cnf") {
            Some(v) => Ok(Some(value_to_py(py, v)?)),
            None => Ok(None),
        }
    }

    /// `cnf.x5t#S256`, the thumbprint of the certificate the token is bound to.
    #[getter]
    fn certificate_thumbprint(&self) -> Option<String> {
        self.cnf.as_ref().map(|c| c.x5t_s256.clone())
    }

    /// Whether a SMART scope allows `op` (`c`, `r`, `u`, `d`, `s`) on `resource`, in
    /// `compartment` (`patient`, `user`, `system`) or any.
    #[pyo3(signature = (resource, op, compartment = None))]
    fn permits(&self, resource: &str, op: &str, compartment: Option<&str>) -> PyResult<bool> {
        let c = compartment.map(self::compartment).transpose()?;
        Ok(self.permits_in(resource, op_char(op)?, c))
    }

    /// Raise `InsufficientScopeError` unless every scope in `scopes` is covered.
    fn require_scopes(&self, scopes: Vec<String>) -> PyResult<()> {
        Ok(self.require_all(&scopes)?)
    }

    /// Whether `scope` is granted exactly as written.
    fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    fn __repr__(&self) -> String {
        // No claim values (PII) in the repr: only the format and how many scopes.
        format!(
            "AccessToken(format={:?}, scopes={})",
            self.format,
            self.scopes.len()
        )
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<CoreValidator>()?;
    m.add_class::<Check>()?;
    m.add_class::<AccessToken>()?;
    Ok(())
}
