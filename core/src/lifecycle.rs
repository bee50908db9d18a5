//! What the authorization server answers about a token it issued, and how it takes one
//! back: RFC 7662 introspection (with the RFC 9701 JWT response) and RFC 7009
//! revocation, for the three access-token formats and refresh tokens.
//!
//! Finding a token: an opaque token or refresh token by the SHA-256 of the whole string;
//! a JWT access token by (iss, jti) after its signature and claims check out; a wrapper
//! token by its reference, after checking the wrapper agrees with the stored record (J30,
//! M8). A token is active only while its record exists and is live and its family is not
//! revoked: revocation deletes the record and, for refresh tokens, marks the family, which
//! every access token minted from it carries (V5).
//!
//! Who may see what (RFC 7662 §4): a client always sees its own tokens; a resource server
//! sees a token whose `aud` names its `client_id` or one of its registered `resources`;
//! anyone else, and any public client asking about another client's token, gets
//! `{"active": false}` and nothing more (I2, I3). Refresh tokens are visible to their
//! client only.
//!
//! Caching: responses for access tokens go through the [`IntrospectionCache`] under the
//! SHA-256 of the full token (I9), tagged with (iss, jti) and family; the audience check
//! runs on every answer, cached or not. Every revocation invalidates what it affects in
//! the local cache and returns a [`Revoked`] value the server publishes to the other
//! nodes' caches. Refresh-token answers are never cached (rotation changes them).

use std::sync::Arc;

use crate::audit::{AuditEvent, AuditSink, EventKind, NoAudit, Outcome};
use crate::client::{AuthMethod, AuthenticatedClient};
use crate::clock::UnixTime;
use crate::error::{ToWire, WireError};
use crate::introspect::{
    CacheKey, IntrospectionCache, IntrospectionResponse, InvalidationTags,
    TOKEN_INTROSPECTION_JWT_TYP,
};
use crate::jose::{sign_jwt, ACCESS_TOKEN_MAX_LEN};
use crate::oidc::PairwiseSubjects;
use crate::store::{Namespace, Store};
use crate::token::{
    check_wrapper_against_record, has_opaque_shape, AccessTokenValidator, RecordKey, RecordKind,
    RefreshRecord, RefreshState, RevocationList, RevocationStatus, TokenHash, TokenIssuer,
    TokenRecord, ValidatedToken, OPAQUE_PREFIX, REFERENCE_PREFIX, REFRESH_PREFIX,
};

/// How long a family-revocation marker outlives the revocation: longer than any refresh
/// token of the family can live (refresh lifetimes are capped at a year).
const FAMILY_MARKER_LIFETIME: i64 = 366 * 24 * 3600;

/// What introspection and revocation need.
pub struct LifecycleContext<'a> {
    /// The issuer and its keys (JWT and wrapper tokens are verified with them).
    pub issuer: &'a TokenIssuer,
    /// Where the records are.
    pub store: &'a dyn Store,
    /// This node's introspection cache, if any.
    pub cache: Option<&'a IntrospectionCache>,
    /// Where each decision is recorded.
    pub audit: &'a dyn AuditSink,
    /// The secret behind the audit log's pseudonyms of users and patients.
    pub pairwise: Option<&'a PairwiseSubjects>,
    /// The time.
    pub now: UnixTime,
}

impl<'a> LifecycleContext<'a> {
    /// A context without cache or audit sink.
    pub fn new(issuer: &'a TokenIssuer, store: &'a dyn Store, now: UnixTime) -> Self {
        LifecycleContext {
            issuer,
            store,
            cache: None,
            audit: &NoAudit,
            pairwise: None,
            now,
        }
    }
}

/// Why an introspection request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntrospectionError {
    /// 400 `invalid_request`: no `token` parameter (I4).
    #[error("invalid_request (token missing)")]
    InvalidRequest,
    /// The caller registered `introspection_signed_response_alg` for an algorithm the AS
    /// holds no active key for: 500 `server_error` (a configuration error).
    #[error("no signing key for the client's introspection_signed_response_alg")]
    SigningAlgorithm,
    /// 503: the store failed; nothing is claimed about the token.
    #[error("unavailable")]
    Unavailable,
}

impl ToWire for IntrospectionError {
    fn to_wire(&self) -> WireError {
        match self {
            IntrospectionError::InvalidRequest => {
                WireError::new(400, "invalid_request", "token missing")
            }
            IntrospectionError::SigningAlgorithm => WireError::new(
                500,
                "server_error",
                "no signing key for the registered introspection_signed_response_alg",
            ),
            IntrospectionError::Unavailable => WireError::UNAVAILABLE,
        }
    }
}

/// Why a revocation request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// 400 `invalid_request`: no `token` parameter.
    #[error("invalid_request (token missing)")]
    InvalidRequest,
    /// 400 `unauthorized_client`: a confidential client tried to revoke another client's
    /// token (V1; RFC 7009 §2.1 "the request is refused"). The token stays valid.
    #[error("unauthorized_client")]
    UnauthorizedClient,
    /// 503 with `Retry-After`: the store failed; nothing is claimed revoked (V4).
    #[error("unavailable")]
    Unavailable,
}

impl ToWire for RevocationError {
    fn to_wire(&self) -> WireError {
        match self {
            RevocationError::InvalidRequest => {
                WireError::new(400, "invalid_request", "token missing")
            }
            RevocationError::UnauthorizedClient => WireError::new(
                400,
                "unauthorized_client",
                "the token was not issued to this client",
            ),
            RevocationError::Unavailable => WireError::UNAVAILABLE,
        }
    }
}

/// What a successful revocation took back, for the other nodes' caches (the server
/// publishes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// Nothing: unknown, expired or garbage token (V2), or another client's token asked
    /// by a public client (V1). The answer is still 200.
    Nothing,
    /// One access token.
    AccessToken {
        /// The cache key of the presented token string.
        key: CacheKey,
        /// Issuer.
        iss: String,
        /// Token id.
        jti: String,
    },
    /// A refresh token, hence its whole family and every access token minted from it.
    Family {
        /// The family id.
        family: String,
    },
}

impl Revoked {
    /// Drop what this revocation affects from `cache` (also what a node does on receiving
    /// the published value).
    pub fn invalidate(&self, cache: &IntrospectionCache) {
        match self {
            Revoked::Nothing => {}
            Revoked::AccessToken { key, iss, jti } => {
                cache.invalidate_key(key);
                cache.invalidate_jti(iss, jti);
            }
            Revoked::Family { family } => {
                cache.invalidate_family(family);
            }
        }
    }
}

/// A token found in the store.
enum Found {
    Access {
        record: TokenRecord,
        key: Vec<u8>,
    },
    Refresh {
        record: RefreshRecord,
        key: [u8; 32],
    },
    Nothing,
}

struct NotRevoked;

impl RevocationList for NotRevoked {
    fn status(&self, _iss: &str, _jti: &str) -> RevocationStatus {
        RevocationStatus::NotRevoked
    }
}

type Unavailable = ();

pub(crate) fn family_revoked(
    store: &dyn Store,
    family: &str,
    now: UnixTime,
) -> Result<bool, Unavailable> {
    Ok(store
        .get(Namespace::RefreshFamily, family.as_bytes(), now)
        .map_err(|_| ())?
        .is_some())
}

/// Mark a refresh family revoked (refresh reuse, code reuse, revocation of a refresh
/// token) and drop its entries from `cache`.
pub(crate) fn revoke_family(
    store: &dyn Store,
    cache: Option<&IntrospectionCache>,
    family: &str,
    now: UnixTime,
) -> Result<(), Unavailable> {
    store
        .put(
            Namespace::RefreshFamily,
            family.as_bytes(),
            b"revoked",
            UnixTime(now.secs().saturating_add(FAMILY_MARKER_LIFETIME)),
        )
        .map_err(|_| ())?;
    if let Some(c) = cache {
        c.invalidate_family(family);
    }
    Ok(())
}

fn client_marker_key(client_id: &str) -> Vec<u8> {
    let mut k = b"client\0".to_vec();
    k.extend_from_slice(client_id.as_bytes());
    k
}

/// Revoke every token issued to `client_id` up to `now` (RFC 7592 §2.3: a deleted
/// client's tokens SHOULD be revoked). There is no per-client token index: a marker
/// "issued at or before `now`" is kept as long as any token can live, and
/// introspection checks it.
pub fn revoke_client_tokens(
    store: &dyn Store,
    client_id: &str,
    now: UnixTime,
) -> Result<(), crate::store::StoreError> {
    store.put(
        Namespace::Revocation,
        &client_marker_key(client_id),
        &now.secs().to_be_bytes(),
        UnixTime(now.secs().saturating_add(FAMILY_MARKER_LIFETIME)),
    )
}

/// Whether tokens of `client_id` issued at `iat` were revoked with their client.
fn client_revoked(
    store: &dyn Store,
    client_id: &str,
    iat: i64,
    now: UnixTime,
) -> Result<bool, Unavailable> {
    let Some(v) = store
        .get(Namespace::Revocation, &client_marker_key(client_id), now)
        .map_err(|_| ())?
    else {
        return Ok(false);
    };
    // A corrupt marker revokes everything (fail closed).
    let before = <[u8; 8]>::try_from(v.as_slice()).map_or(i64::MAX, i64::from_be_bytes);
    Ok(iat <= before)
}

fn access_record(
    ctx: &LifecycleContext<'_>,
    key: &RecordKey,
) -> Result<Option<(TokenRecord, Vec<u8>)>, Unavailable> {
    let k = key.store_key();
    let Some(bytes) = ctx
        .store
        .get(Namespace::AccessToken, &k, ctx.now)
        .map_err(|_| ())?
    else {
        return Ok(None);
    };
    // S12: a corrupt record is a missing one.
    Ok(TokenRecord::from_bytes(&bytes).ok().map(|r| (r, k)))
}

fn find(ctx: &LifecycleContext<'_>, token: &str) -> Result<Found, Unavailable> {
    if token.is_empty() || token.len() > ACCESS_TOKEN_MAX_LEN {
        return Ok(Found::Nothing);
    }
    let found = if has_opaque_shape(token, REFRESH_PREFIX) {
        let key = TokenHash::of(token).0;
        match ctx
            .store
            .get(Namespace::RefreshToken, &key, ctx.now)
            .map_err(|_| ())?
            .and_then(|b| RefreshRecord::from_bytes(&b).ok())
        {
            Some(record) if record.iss == ctx.issuer.issuer() => Found::Refresh { record, key },
            _ => Found::Nothing,
        }
    } else if has_opaque_shape(token, OPAQUE_PREFIX) {
        match access_record(ctx, &RecordKey::Hash(TokenHash::of(token)))? {
            Some((record, key)) if record.kind == RecordKind::AccessOpaque => {
                Found::Access { record, key }
            }
            _ => Found::Nothing,
        }
    } else if has_opaque_shape(token, REFERENCE_PREFIX) {
        // A wrapper's bare `ref` (README "Wrapper token format": resource servers
        // introspect the reference for the full claim set).
        match access_record(ctx, &RecordKey::Hash(TokenHash::of(token)))? {
            Some((record, key)) if record.kind == RecordKind::AccessWrapper => {
                Found::Access { record, key }
            }
            _ => Found::Nothing,
        }
    } else {
        let validator = AccessTokenValidator::for_authorization_server(ctx.issuer.issuer());
        let keys = ctx.issuer.keys().snapshot();
        match validator.validate(token, &*keys, &NotRevoked, ctx.now) {
            Ok(ValidatedToken::Jwt(c)) => {
                let key = RecordKey::Jti {
                    iss: c.iss.clone(),
                    jti: c.jti.clone(),
                };
                match access_record(ctx, &key)? {
                    Some((record, key))
                        if record.kind == RecordKind::AccessJwt
                            && record.client_id == c.client_id
                            && record.sub == c.sub =>
                    {
                        Found::Access { record, key }
                    }
                    _ => Found::Nothing,
                }
            }
            Ok(ValidatedToken::Wrapper(w)) => {
                match access_record(ctx, &RecordKey::Hash(w.reference_hash()))? {
                    Some((record, key))
                        if check_wrapper_against_record(&w, &record, ctx.now).is_ok() =>
                    {
                        Found::Access { record, key }
                    }
                    _ => Found::Nothing,
                }
            }
            // Opaque tokens were handled above; anything that does not verify is unknown.
            Ok(ValidatedToken::Opaque(_)) | Err(_) => Found::Nothing,
        }
    };
    let (family, client, iat) = match &found {
        Found::Access { record, .. } => (
            record.family_id.as_deref(),
            record.client_id.as_str(),
            record.iat,
        ),
        Found::Refresh { record, .. } => (
            Some(record.family_id.as_str()),
            record.client_id.as_str(),
            record.iat,
        ),
        Found::Nothing => return Ok(found),
    };
    if let Some(f) = family {
        if family_revoked(ctx.store, f, ctx.now)? {
            return Ok(Found::Nothing);
        }
    }
    if client_revoked(ctx.store, client, iat, ctx.now)? {
        return Ok(Found::Nothing);
    }
    Ok(found)
}

fn refresh_response(record: &RefreshRecord, now: UnixTime) -> Arc<IntrospectionResponse> {
    let live = record.state == RefreshState::Active && now.secs() < record.exp;
    if !live {
        // I5: consumed (superseded) or expired.
        return Arc::new(IntrospectionResponse::inactive());
    }
    let mut b = IntrospectionResponse::builder()
        .active(true)
        .client_id(record.client_id.clone())
        .token_type("refresh_token")
        .exp(UnixTime(record.exp))
        .iat(UnixTime(record.iat))
        .sub(record.sub.clone())
        .iss(record.iss.clone());
    if !record.scope.is_empty() {
        b = b.scope(record.scope.clone());
    }
    if let Some(cnf) = &record.cnf {
        b = b.cnf(cnf.clone());
    }
    Arc::new(
        b.build()
            .unwrap_or_else(|_| IntrospectionResponse::inactive()),
    )
}

/// Whether `caller` may learn about a token described by `response` (RFC 7662 §4).
fn visible_to(caller: &AuthenticatedClient, response: &IntrospectionResponse) -> bool {
    let me = caller.client_id();
    if response.client_id() == Some(me) {
        return true;
    }
    // I3: a public client proves nothing about itself; it sees its own tokens only.
    if caller.client().metadata().token_endpoint_auth_method == AuthMethod::None {
        return false;
    }
    let served = &caller.client().metadata().resources;
    match response.aud() {
        Some(aud) => aud.iter().any(|a| a == me || served.iter().any(|s| s == a)),
        None => false,
    }
}

/// What the authorization server itself knows about an access token, for its own
/// endpoints (`/userinfo`): the full answer, with no caller filter and no cache. Refresh
/// tokens are never accepted here (inactive).
pub fn inspect(
    token: &str,
    ctx: &LifecycleContext<'_>,
) -> Result<IntrospectionResponse, IntrospectionError> {
    match find(ctx, token).map_err(|_| IntrospectionError::Unavailable)? {
        Found::Access { record, .. } => Ok(record
            .introspection_response(ctx.now)
            .unwrap_or_else(|_| IntrospectionResponse::inactive())),
        Found::Refresh { .. } | Found::Nothing => Ok(IntrospectionResponse::inactive()),
    }
}

/// RFC 7662 introspection of `token` by the authenticated `caller`.
///
/// `{"active": false}` (and nothing else) for anything unknown, garbage, expired,
/// revoked, consumed, of a revoked family, or not meant for the caller (I2–I5, I7: the
/// `token_type_hint` is not needed, every format is tried). A missing `token` is
/// `invalid_request`; a store failure is 503, never an answer.
pub fn introspect(
    caller: &AuthenticatedClient,
    token: Option<&str>,
    ctx: &LifecycleContext<'_>,
) -> Result<Arc<IntrospectionResponse>, IntrospectionError> {
    let r = introspect_inner(caller, token, ctx);
    let mut e = match &r {
        Ok(resp) if resp.is_active() => {
            let mut e = AuditEvent::new(
                ctx.now,
                EventKind::Introspection,
                Outcome::Success,
                "active",
            );
            if let Some(j) = resp.jti() {
                e = e.token_ref(j.to_owned());
            }
            if let Some(p) = ctx.pairwise {
                if let Some(sub) = resp.sub() {
                    e = e.subject_ref(p.audit_ref("subject", sub));
                }
                if let Some(patient) = resp.extension("patient").and_then(|v| v.as_str()) {
                    e = e.patient_ref(p.audit_ref("patient", patient));
                }
            }
            e
        }
        Ok(_) => AuditEvent::new(
            ctx.now,
            EventKind::Introspection,
            Outcome::Success,
            "inactive",
        ),
        Err(err) => AuditEvent::new(
            ctx.now,
            EventKind::Introspection,
            Outcome::Failure,
            err.to_wire().code,
        ),
    }
    .client(caller.client_id());
    if let Some(t) = caller.certificate() {
        e = e.cert(crate::mtls::Confirmation::from_thumbprint(t).x5t_s256);
    }
    ctx.audit.record(e);
    r
}

fn introspect_inner(
    caller: &AuthenticatedClient,
    token: Option<&str>,
    ctx: &LifecycleContext<'_>,
) -> Result<Arc<IntrospectionResponse>, IntrospectionError> {
    let token = token.ok_or(IntrospectionError::InvalidRequest)?;
    let inactive = || Arc::new(IntrospectionResponse::inactive());
    let cache_key = CacheKey::for_token(token);
    let cached = ctx.cache.and_then(|c| c.get(&cache_key, ctx.now));
    let response = match cached {
        Some(r) => r,
        None => {
            let generation = ctx.cache.map(IntrospectionCache::generation);
            let found = find(ctx, token).map_err(|_| IntrospectionError::Unavailable)?;
            let (response, family) = match found {
                Found::Access { record, .. } => {
                    let r = record
                        .introspection_response(ctx.now)
                        .map(Arc::new)
                        .unwrap_or_else(|_| inactive());
                    (r, record.family_id)
                }
                // Never cached: rotation changes the answer without an invalidation.
                Found::Refresh { record, .. } => {
                    return Ok(filter(caller, refresh_response(&record, ctx.now)))
                }
                Found::Nothing => (inactive(), None),
            };
            if let (Some(cache), Some(generation)) = (ctx.cache, generation) {
                let mut tags = InvalidationTags::from_response(&response);
                if let Some(f) = family {
                    tags = tags.with_family(f);
                }
                // Refused inserts (superseded by a revocation, not cacheable) only cost a
                // miss later.
                let _ = cache.insert(cache_key, Arc::clone(&response), tags, generation, ctx.now);
            }
            response
        }
    };
    Ok(filter(caller, response))
}

fn filter(
    caller: &AuthenticatedClient,
    response: Arc<IntrospectionResponse>,
) -> Arc<IntrospectionResponse> {
    if response.is_active() && !visible_to(caller, &response) {
        Arc::new(IntrospectionResponse::inactive())
    } else {
        response
    }
}

/// The RFC 9701 JWT introspection response for `caller`: `iss`, `aud` = the caller's
/// client_id, `iat`, `token_introspection`, header `typ: token-introspection+jwt`, signed
/// with the AS's active key (I8). A caller registered with
/// `introspection_signed_response_alg` for another algorithm is a configuration error.
/// (RFC 9701's default when nothing is registered is RS256; heartgate signs with its
/// active key instead, as RS256 is forbidden under FAPI 2.0.)
pub fn introspection_jwt(
    caller: &AuthenticatedClient,
    response: &IntrospectionResponse,
    ctx: &LifecycleContext<'_>,
) -> Result<String, IntrospectionError> {
    let state = ctx.issuer.keys().load();
    let key = state
        .signer_for(
            caller
                .client()
                .metadata()
                .introspection_signed_response_alg
                .as_deref(),
        )
        .ok_or(IntrospectionError::SigningAlgorithm)?;
    let claims =
        response.jwt_introspection_claims(ctx.issuer.issuer(), caller.client_id(), ctx.now);
    sign_jwt(key, Some(TOKEN_INTROSPECTION_JWT_TYP), &claims)
        .map_err(|_| IntrospectionError::Unavailable)
}

/// RFC 7009 revocation of `token` by the authenticated `caller`.
///
/// An access token (any format): its record is deleted, so introspection answers
/// inactive everywhere; resource servers validating JWTs offline accept it until its
/// `exp` (documented bound). A refresh token: its family is marked revoked and its record
/// deleted, so the family's access tokens are inactive too (V5). Unknown or garbage
/// tokens: nothing, 200 (V2). Another client's token: refused for a confidential client
/// (V1, the token stays valid), nothing for a public one. Store failure: 503 (V4).
pub fn revoke(
    caller: &AuthenticatedClient,
    token: Option<&str>,
    ctx: &LifecycleContext<'_>,
) -> Result<Revoked, RevocationError> {
    let r = revoke_inner(caller, token, ctx);
    let mut e = match &r {
        Ok(Revoked::Nothing) => {
            AuditEvent::new(ctx.now, EventKind::Revocation, Outcome::Success, "nothing")
        }
        Ok(Revoked::AccessToken { jti, .. }) => AuditEvent::new(
            ctx.now,
            EventKind::Revocation,
            Outcome::Success,
            "access_token",
        )
        .token_ref(jti.clone()),
        Ok(Revoked::Family { .. }) => AuditEvent::new(
            ctx.now,
            EventKind::Revocation,
            Outcome::Success,
            "refresh_family",
        ),
        Err(err) => AuditEvent::new(
            ctx.now,
            EventKind::Revocation,
            Outcome::Failure,
            err.to_wire().code,
        ),
    }
    .client(caller.client_id());
    if let Some(t) = caller.certificate() {
        e = e.cert(crate::mtls::Confirmation::from_thumbprint(t).x5t_s256);
    }
    crate::audit::settle(ctx.audit, e, r, || RevocationError::Unavailable)
}

fn revoke_inner(
    caller: &AuthenticatedClient,
    token: Option<&str>,
    ctx: &LifecycleContext<'_>,
) -> Result<Revoked, RevocationError> {
    let token = token.ok_or(RevocationError::InvalidRequest)?;
    let found = find(ctx, token).map_err(|_| RevocationError::Unavailable)?;
    let owner = match &found {
        Found::Access { record, .. } => record.client_id.as_str(),
        Found::Refresh { record, .. } => record.client_id.as_str(),
        Found::Nothing => return Ok(Revoked::Nothing),
    };
    if owner != caller.client_id() {
        return if caller.client().metadata().token_endpoint_auth_method == AuthMethod::None {
            Ok(Revoked::Nothing)
        } else {
            Err(RevocationError::UnauthorizedClient)
        };
    }
    let revoked = match found {
        Found::Access { record, key } => {
            ctx.store
                .delete(Namespace::AccessToken, &key)
                .map_err(|_| RevocationError::Unavailable)?;
            Revoked::AccessToken {
                key: CacheKey::for_token(token),
                iss: record.iss,
                jti: record.jti,
            }
        }
        Found::Refresh { record, key } => {
            revoke_family(ctx.store, None, &record.family_id, ctx.now)
                .map_err(|_| RevocationError::Unavailable)?;
            ctx.store
                .delete(Namespace::RefreshToken, &key)
                .map_err(|_| RevocationError::Unavailable)?;
            Revoked::Family {
                family: record.family_id,
            }
        }
        Found::Nothing => Revoked::Nothing,
    };
    if let Some(c) = ctx.cache {
        revoked.invalidate(c);
    }
    Ok(revoked)
}
