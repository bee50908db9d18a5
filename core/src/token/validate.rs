//! Resource-server validation of access tokens in all three formats.
//!
//! JWT access tokens are checked as RFC 9068 §4 says: `typ` must be `at+jwt`, `iss`
//! exact, `aud` must name this resource server, the signature must verify with a key of
//! an allowed algorithm, `exp` enforced, and the token must not be revoked (FAPI 2.0
//! §5.3.4). Wrapper tokens get the same offline check under their own `typ`; their full
//! claims need introspection of the reference, and [`check_wrapper_against_record`] then
//! makes sure wrapper and reference agree (J30, M8). Opaque tokens cannot be checked
//! offline at all: the validator only recognises them and hands back their hash.
//!
//! Revocation is looked up by (iss, jti), never by the token string (J16, J32).

use dashmap::DashMap;

use super::record::{RecordKind, TokenRecord};
use super::{
    has_opaque_shape, SecretToken, TokenError, TokenHash, ACCESS_TOKEN_TYP, OPAQUE_PREFIX,
    REFERENCE_PREFIX, WRAPPER_REF_CLAIM, WRAPPER_TOKEN_TYP,
};
use crate::clock::UnixTime;
use crate::jose::{
    parse_compact, typ_matches, validate_claims, AlgorithmSet, AudienceRule, Claims, JoseError,
    KeyResolver, TypRule, Validation, Verified, ACCESS_TOKEN_MAX_LEN,
};
use crate::mtls::{check_binding, Bound, Confirmation, MtlsError};

/// Whether a token id has been revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationStatus {
    /// No revocation is known.
    NotRevoked,
    /// The token was revoked.
    Revoked,
}

/// A source of revocations, keyed by (issuer, jti).
pub trait RevocationList: Send + Sync {
    /// The status of the token `jti` of issuer `iss`.
    fn status(&self, iss: &str, jti: &str) -> RevocationStatus;
}

/// An in-memory revocation list: (iss, jti) → the token's expiry, after which the entry
/// is useless and [`RevokedJtis::purge`] drops it.
#[derive(Debug, Default)]
pub struct RevokedJtis {
    entries: DashMap<[u8; 32], i64>,
}

fn revocation_key(iss: &str, jti: &str) -> [u8; 32] {
    *crate::introspect::CacheKey::for_jti(iss, jti).as_bytes()
}

impl RevokedJtis {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record that token `jti` of `iss`, valid until `exp`, is revoked.
    pub fn revoke(&self, iss: &str, jti: &str, exp: UnixTime) {
        self.entries.insert(revocation_key(iss, jti), exp.secs());
    }

    /// Drop entries of tokens that have expired by `now` (they fail on `exp` anyway).
    pub fn purge(&self, now: UnixTime) {
        self.entries.retain(|_, exp| *exp > now.secs());
    }

    /// How many revocations are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no revocation is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl RevocationList for RevokedJtis {
    fn status(&self, iss: &str, jti: &str) -> RevocationStatus {
        if self.entries.contains_key(&revocation_key(iss, jti)) {
            RevocationStatus::Revoked
        } else {
            RevocationStatus::NotRevoked
        }
    }
}

/// The claims of a verified RFC 9068 access token.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessTokenClaims {
    /// Issuer.
    pub iss: String,
    /// Subject.
    pub sub: String,
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry.
    pub exp: UnixTime,
    /// Issued at.
    pub iat: UnixTime,
    /// Token id.
    pub jti: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// Granted scopes, space-separated, if any.
    pub scope: Option<String>,
    /// Certificate binding.
    pub cnf: Option<Confirmation>,
    /// Every claim, including profile claims (`patient`, `fhirUser`...).
    pub claims: Claims,
}

/// The claims of a verified wrapper token.
#[derive(Debug, Clone, PartialEq)]
pub struct WrapperClaims {
    /// Issuer.
    pub iss: String,
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry.
    pub exp: UnixTime,
    /// Issued at.
    pub iat: UnixTime,
    /// Token id.
    pub jti: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// Granted scopes, space-separated, if any.
    pub scope: Option<String>,
    /// Certificate binding.
    pub cnf: Option<Confirmation>,
    /// Pairwise pseudonym of the subject, if any.
    pub sub: Option<String>,
    /// The wrapped opaque reference (introspect it for the full claims).
    pub reference: SecretToken,
}

impl AccessTokenClaims {
    /// RFC 8705 §3.1: the certificate presented on the connection must match the token's
    /// `cnf`; an unbound token gives [`Binding::NotBound`](crate::mtls::Binding) and the
    /// caller's profile decides whether that is acceptable.
    pub fn check_binding(&self, presented_cert_der: Option<&[u8]>) -> Result<Bound, MtlsError> {
        check_binding(self.cnf.as_ref(), presented_cert_der)
    }
}

impl WrapperClaims {
    /// RFC 8705 §3.1 binding check of the wrapper's `cnf` (M1, M2, M8).
    pub fn check_binding(&self, presented_cert_der: Option<&[u8]>) -> Result<Bound, MtlsError> {
        check_binding(self.cnf.as_ref(), presented_cert_der)
    }

    /// The store and cache key of the wrapped reference.
    pub fn reference_hash(&self) -> TokenHash {
        self.reference.hash()
    }
}

/// An access token that passed the offline checks its format allows. An opaque token's
/// binding is unknown until introspection: there is deliberately no `cnf()` here that
/// could read "unknown" as "unbound".
#[derive(Debug, Clone)]
pub enum ValidatedToken {
    /// A JWT access token: fully checked offline.
    Jwt(Verified<AccessTokenClaims>),
    /// A wrapper token: checked offline; introspect the reference for the full claims.
    Wrapper(Verified<WrapperClaims>),
    /// An opaque token: nothing can be checked offline; introspect it by this hash.
    Opaque(TokenHash),
}

/// Validates access tokens for one resource server.
#[derive(Debug, Clone)]
pub struct AccessTokenValidator {
    algorithms: AlgorithmSet,
    max_len: usize,
    /// The claim policies, built once (not per token) for `at+jwt` and wrapper tokens.
    jwt: Validation,
    wrapper: Validation,
}

fn audience_list(claims: &Claims) -> Result<Vec<String>, TokenError> {
    match claims.audience()? {
        Some(a) => Ok(match a {
            crate::jose::Audience::One(s) => vec![s.to_owned()],
            crate::jose::Audience::Many(v) => v.into_iter().map(str::to_owned).collect(),
        }),
        None => Err(JoseError::MissingClaim("aud").into()),
    }
}

fn cnf_of(claims: &Claims) -> Result<Option<Confirmation>, TokenError> {
    match claims.get("cnf") {
        None => Ok(None),
        Some(v) => {
            let obj = v.as_object().ok_or(TokenError::Claims("cnf"))?;
            let t = obj
                .get("x5t#S256")
                .and_then(|t| t.as_str())
                .ok_or(TokenError::Claims("cnf"))?;
            Ok(Some(Confirmation {
                x5t_s256: t.to_owned(),
            }))
        }
    }
}

fn required_date(claims: &Claims, name: &'static str) -> Result<UnixTime, TokenError> {
    Ok(claims
        .numeric_date(name)?
        .ok_or(JoseError::MissingClaim(name))?)
}

impl AccessTokenValidator {
    /// A validator for tokens of `issuer` meant for `audience`, accepting every
    /// implemented algorithm (restrict with [`AccessTokenValidator::algorithms`]).
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self::with_audience_rule(issuer.into(), AudienceRule::Contains(audience.into()))
    }

    /// The authorization server's own validator: every audience is accepted here, and
    /// introspection then decides per caller (RFC 7662 §4, THREATS I2).
    pub(crate) fn for_authorization_server(issuer: impl Into<String>) -> Self {
        Self::with_audience_rule(issuer.into(), AudienceRule::Present)
    }

    fn with_audience_rule(issuer: String, audience: AudienceRule) -> Self {
        let policy = |typ| {
            let mut v =
                Validation::new(AlgorithmSet::ALL, TypRule::Required(typ), audience.clone())
                    .issuer(issuer.clone());
            v.max_lifetime = Some(super::MAX_ACCESS_TOKEN_LIFETIME);
            v
        };
        AccessTokenValidator {
            algorithms: AlgorithmSet::ALL,
            max_len: ACCESS_TOKEN_MAX_LEN,
            jwt: policy(ACCESS_TOKEN_TYP),
            wrapper: policy(WRAPPER_TOKEN_TYP),
        }
    }

    fn each(mut self, f: impl Fn(&mut Validation)) -> Self {
        f(&mut self.jwt);
        f(&mut self.wrapper);
        self
    }

    /// Restrict the accepted algorithms (e.g. [`AlgorithmSet::FAPI2`]).
    pub fn algorithms(mut self, algs: AlgorithmSet) -> Self {
        self.algorithms = algs;
        self.each(|v| v.algorithms = algs)
    }

    /// Set the clock-skew leeway in seconds (at most [`crate::jose::MAX_LEEWAY`]).
    pub fn leeway(self, secs: u32) -> Self {
        self.each(|v| v.leeway = secs.min(crate::jose::MAX_LEEWAY))
    }

    /// Refuse tokens whose lifetime exceeds `secs` (J24).
    pub fn max_lifetime(self, secs: u32) -> Self {
        self.each(|v| v.max_lifetime = Some(secs))
    }

    /// Set the size limit (default 8 KiB).
    pub fn max_len(mut self, len: usize) -> Self {
        self.max_len = len;
        self.each(|v| v.max_len = len)
    }

    /// Validate `token` at `now` with keys from `keys` and revocations from `revoked`.
    pub fn validate(
        &self,
        token: &str,
        keys: &dyn KeyResolver,
        revoked: &dyn RevocationList,
        now: UnixTime,
    ) -> Result<ValidatedToken, TokenError> {
        if token.len() > self.max_len {
            return Err(JoseError::TooLarge.into());
        }
        if token.starts_with(OPAQUE_PREFIX) {
            return if has_opaque_shape(token, OPAQUE_PREFIX) {
                Ok(ValidatedToken::Opaque(TokenHash::of(token)))
            } else {
                Err(TokenError::UnknownFormat)
            };
        }
        let jws = parse_compact(token, self.max_len)?;
        let typ = jws.header().typ().ok_or(JoseError::WrongType)?;
        let wrapper = if typ_matches(typ, ACCESS_TOKEN_TYP) {
            false
        } else if typ_matches(typ, WRAPPER_TOKEN_TYP) {
            true
        } else {
            return Err(JoseError::WrongType.into());
        };
        let (header, payload, kid) = jws.verify(keys, self.algorithms)?.into_parts();
        let claims = Claims::from_json(&payload)?;
        let policy = if wrapper { &self.wrapper } else { &self.jwt };
        validate_claims(&claims, policy, now)?;

        let iss = claims.required_string("iss")?.to_owned();
        let jti = claims.required_string("jti")?.to_owned();
        let client_id = claims.required_string("client_id")?.to_owned();
        let scope = claims.string("scope")?.map(str::to_owned);
        let exp = required_date(&claims, "exp")?;
        let iat = required_date(&claims, "iat")?;
        let aud = audience_list(&claims)?;
        let cnf = cnf_of(&claims)?;
        if revoked.status(&iss, &jti) == RevocationStatus::Revoked {
            return Err(TokenError::Revoked);
        }
        if wrapper {
            let reference = claims.required_string(WRAPPER_REF_CLAIM)?;
            if !has_opaque_shape(reference, REFERENCE_PREFIX) {
                return Err(TokenError::Claims("ref"));
            }
            let value = WrapperClaims {
                iss,
                aud,
                exp,
                iat,
                jti,
                client_id,
                scope,
                cnf,
                sub: claims.string("sub")?.map(str::to_owned),
                reference: SecretToken::new(reference),
            };
            Ok(ValidatedToken::Wrapper(Verified::new(value, header, kid)))
        } else {
            let sub = claims.required_string("sub")?.to_owned();
            let value = AccessTokenClaims {
                iss,
                sub,
                aud,
                exp,
                iat,
                jti,
                client_id,
                scope,
                cnf,
                claims,
            };
            Ok(ValidatedToken::Jwt(Verified::new(value, header, kid)))
        }
    }
}

/// Check that a wrapper token agrees with the stored record of its reference (J30, M8):
/// same kind, issuer, jti, client, audiences, scope and `cnf`; the wrapper does not
/// outlive the record; the record is live at `now`.
pub fn check_wrapper_against_record(
    wrapper: &WrapperClaims,
    record: &TokenRecord,
    now: UnixTime,
) -> Result<(), TokenError> {
    let mismatch = TokenError::WrapperMismatch;
    if record.kind != RecordKind::AccessWrapper {
        return Err(mismatch("kind"));
    }
    if record.iss != wrapper.iss || record.jti != wrapper.jti {
        return Err(mismatch("iss/jti"));
    }
    if record.client_id != wrapper.client_id {
        return Err(mismatch("client_id"));
    }
    let mut a = record.aud.clone();
    let mut b = wrapper.aud.clone();
    a.sort();
    b.sort();
    if a != b {
        return Err(mismatch("aud"));
    }
    if record.scope != wrapper.scope.clone().unwrap_or_default() {
        return Err(mismatch("scope"));
    }
    if record.cnf != wrapper.cnf {
        return Err(mismatch("cnf"));
    }
    if wrapper.exp.secs() > record.exp {
        return Err(mismatch("exp"));
    }
    if !record.is_live(now) {
        return Err(TokenError::Expired);
    }
    Ok(())
}
