//! Token-endpoint grants (RFC 6749 §4.1.3, §4.4, §6; CIBA Core §10): authorization_code,
//! client_credentials, refresh_token and `urn:openid:params:grant-type:ciba`, turning an
//! authenticated client into tokens whose records are stored before the response exists
//! (no token without its record; a store failure is `Unavailable` → 503, never a token).
//!
//! Sender constraint (RFC 8705 §3): a client registered with
//! `tls_client_certificate_bound_access_tokens` (always under FAPI 2.0) gets `cnf` with
//! the thumbprint of the certificate it presented on this request, and is refused
//! without one (OIDF `ensure-holder-of-key-required`).

use serde_json::Map;

use crate::audit::{AuditEvent, AuditSink, EventKind, NoAudit, Outcome};
use crate::authorize::code::{redeem, CodeError};
use crate::ciba::{CibaUsers, UserStatus};
use crate::client::{AuthenticatedClient, GrantType};
use crate::clock::UnixTime;
use crate::error::{ToWire, WireError};
use crate::introspect::IntrospectionCache;
use crate::mtls::Confirmation;
use crate::oidc::{issue_id_token, IdTokenInput, PairwiseSubjects};
use crate::scope::{Scope, ScopeSet};
use crate::store::{Namespace, Store};
use crate::token::{
    AccessTokenGrant, IssuedAccessToken, RefreshPolicy, RefreshTokenGrant, SecretToken, TokenIssuer,
};

/// Why a grant was refused, by RFC 6749 §5.2 error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    /// 400 `invalid_request`.
    #[error("invalid_request ({0})")]
    InvalidRequest(&'static str),
    /// 400 `invalid_grant`.
    #[error("invalid_grant ({0})")]
    InvalidGrant(&'static str),
    /// 400 `unauthorized_client`: the client may not use this grant type.
    #[error("unauthorized_client")]
    UnauthorizedClient,
    /// 400 `invalid_scope`.
    #[error("invalid_scope")]
    InvalidScope,
    /// 400 `authorization_pending` (CIBA §11): the user has not decided yet.
    #[error("authorization_pending")]
    AuthorizationPending,
    /// 400 `slow_down` (CIBA §11, THREATS B3): polled sooner than the interval, which
    /// has now grown by 5 s.
    #[error("slow_down")]
    SlowDown,
    /// 400 `expired_token` (CIBA §11, THREATS B4): the `auth_req_id` has expired.
    #[error("expired_token")]
    ExpiredToken,
    /// 400 `access_denied` (CIBA §11, THREATS B6, B17): the user denied, or can no longer
    /// be issued tokens for.
    #[error("access_denied")]
    AccessDenied,
    /// 503: store or signing failed; nothing was issued.
    #[error("unavailable")]
    Unavailable,
}

impl ToWire for GrantError {
    fn to_wire(&self) -> WireError {
        match self {
            GrantError::InvalidRequest(d) => WireError::new(400, "invalid_request", d),
            // Which check refused a code or refresh token is for the audit log only.
            GrantError::InvalidGrant(_) => WireError::bare(400, "invalid_grant"),
            GrantError::UnauthorizedClient => WireError::bare(400, "unauthorized_client"),
            GrantError::InvalidScope => WireError::bare(400, "invalid_scope"),
            GrantError::AuthorizationPending => WireError::bare(400, "authorization_pending"),
            GrantError::SlowDown => WireError::bare(400, "slow_down"),
            GrantError::ExpiredToken => WireError::bare(400, "expired_token"),
            GrantError::AccessDenied => WireError::bare(400, "access_denied"),
            GrantError::Unavailable => WireError::UNAVAILABLE,
        }
    }
}

/// A successful token response (RFC 6749 §5.1, SMART launch context).
#[derive(Debug)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: SecretToken,
    /// `Bearer` (RFC 8705-bound tokens are still Bearer tokens).
    pub token_type: &'static str,
    /// Lifetime in seconds.
    pub expires_in: u32,
    /// Granted scopes.
    pub scope: String,
    /// The refresh token, if the grant includes one.
    pub refresh_token: Option<SecretToken>,
    /// SMART launch context for the response (`patient`, `encounter`...).
    pub context: Map<String, serde_json::Value>,
    /// The OpenID Connect ID token, for authorization-code and CIBA grants with `openid`.
    pub id_token: Option<String>,
    /// The issued access token's id.
    pub jti: String,
    /// The local subject, for the audit pseudonym only (never serialised).
    subject: String,
}

impl TokenResponse {
    /// The RFC 6749 §5.1 response body (also the body of a CIBA push, CIBA §10.3.1, with
    /// `auth_req_id` added). SMART launch context members never override the others.
    pub fn to_json(&self) -> serde_json::Value {
        let mut o = Map::new();
        o.insert("access_token".into(), self.access_token.expose().into());
        o.insert("token_type".into(), self.token_type.into());
        o.insert("expires_in".into(), self.expires_in.into());
        if !self.scope.is_empty() {
            o.insert("scope".into(), self.scope.clone().into());
        }
        if let Some(rt) = &self.refresh_token {
            o.insert("refresh_token".into(), rt.expose().into());
        }
        if let Some(id) = &self.id_token {
            o.insert("id_token".into(), id.clone().into());
        }
        for (k, v) in &self.context {
            if !o.contains_key(k) {
                o.insert(k.clone(), v.clone());
            }
        }
        serde_json::Value::Object(o)
    }
}

/// What a grant needs besides the client.
pub struct GrantContext<'a> {
    /// Issues and signs tokens.
    pub issuer: &'a TokenIssuer,
    /// Where records go.
    pub store: &'a dyn Store,
    /// The audience of tokens when the request named no resource.
    pub default_audience: &'a str,
    /// The time.
    pub now: UnixTime,
    /// Where each grant's decision is recorded.
    pub audit: &'a dyn AuditSink,
    /// The secret behind pairwise subjects (and the audit's subject pseudonyms).
    pub pairwise: Option<&'a PairwiseSubjects>,
    /// The operator's refresh policy for confidential clients, overriding the profile's
    /// (FAPI 2.0 §5.3.2.1 item 8 allows no rotation or rotation with a grace window).
    pub confidential_refresh: Option<RefreshPolicy>,
    /// This node's introspection cache: a family revoked on code or refresh reuse is
    /// dropped from it at once.
    pub cache: Option<&'a IntrospectionCache>,
    /// The user directory: a refresh for a user who is no longer active (removed,
    /// disabled) is refused at redemption (THREATS R7). `None`: not checked.
    pub users: Option<&'a dyn CibaUsers>,
}

impl<'a> GrantContext<'a> {
    /// A context with no audit sink, no pairwise secret and the profiles' refresh policies.
    pub fn new(
        issuer: &'a TokenIssuer,
        store: &'a dyn Store,
        default_audience: &'a str,
        now: UnixTime,
    ) -> Self {
        GrantContext {
            issuer,
            store,
            default_audience,
            now,
            audit: &NoAudit,
            pairwise: None,
            confidential_refresh: None,
            cache: None,
            users: None,
        }
    }

    /// Audit `result` and return it; a success whose event cannot be written becomes
    /// 503 (fail closed, THREATS S8; [`crate::audit::settle`]).
    fn settle(
        &self,
        kind: EventKind,
        client: &AuthenticatedClient,
        result: Result<TokenResponse, GrantError>,
    ) -> Result<TokenResponse, GrantError> {
        self.settle_for(kind, client.client_id(), client.certificate(), result)
    }

    fn settle_for(
        &self,
        kind: EventKind,
        client_id: &str,
        certificate: Option<crate::mtls::X5tS256>,
        result: Result<TokenResponse, GrantError>,
    ) -> Result<TokenResponse, GrantError> {
        let mut e = match &result {
            Ok(r) => {
                let mut e = AuditEvent::new(self.now, kind, Outcome::Success, "issued")
                    .scope(r.scope.clone())
                    .token_ref(r.jti.clone());
                if let Some(p) = self.pairwise {
                    e = e.subject_ref(p.audit_ref("subject", &r.subject));
                    if let Some(patient) = r.context.get("patient").and_then(|v| v.as_str()) {
                        e = e.patient_ref(p.audit_ref("patient", patient));
                    }
                }
                e
            }
            Err(e) => AuditEvent::new(self.now, kind, Outcome::Failure, e.to_wire().code),
        }
        .client(client_id);
        if let Some(t) = certificate {
            e = e.cert(Confirmation::from_thumbprint(t).x5t_s256);
        }
        crate::audit::settle(self.audit, e, result, || GrantError::Unavailable)
    }
}

fn binding(client: &AuthenticatedClient) -> Result<Option<Confirmation>, GrantError> {
    let md = client.client().metadata();
    if md.tls_client_certificate_bound_access_tokens
        || md.profile.policy().sender_constraint_required
    {
        let t = client.certificate().ok_or(GrantError::InvalidRequest(
            "a client certificate is required for bound tokens",
        ))?;
        Ok(Some(Confirmation::from_thumbprint(t)))
    } else {
        Ok(None)
    }
}

fn store_access_token(ctx: &GrantContext<'_>, t: &IssuedAccessToken) -> Result<(), GrantError> {
    let bytes = t.record.to_bytes().map_err(|_| GrantError::Unavailable)?;
    ctx.store
        .put(
            Namespace::AccessToken,
            &t.record_key.store_key(),
            &bytes,
            t.expires_at,
        )
        .map_err(|_| GrantError::Unavailable)
}

/// `grant_type=client_credentials` (SMART Backend Services: `system/` scopes, ≤ 300 s).
pub fn client_credentials(
    client: &AuthenticatedClient,
    scope: Option<&str>,
    ctx: &GrantContext<'_>,
) -> Result<TokenResponse, GrantError> {
    let r = client_credentials_inner(client, scope, ctx);
    ctx.settle(EventKind::TokenIssued, client, r)
}

fn client_credentials_inner(
    client: &AuthenticatedClient,
    scope: Option<&str>,
    ctx: &GrantContext<'_>,
) -> Result<TokenResponse, GrantError> {
    let md = client.client().metadata();
    if !md.grant_types.contains(&GrantType::ClientCredentials) {
        return Err(GrantError::UnauthorizedClient);
    }
    let allowed =
        ScopeSet::parse(md.scope.as_deref().unwrap_or("")).map_err(|_| GrantError::InvalidScope)?;
    let granted = allowed
        .narrow(scope)
        .map_err(|_| GrantError::InvalidScope)?;
    // A client acting on its own has no user: only system/ resource scopes make sense.
    if granted.iter().any(
        |s| !matches!(s, Scope::Resource(r) if r.compartment == crate::scope::Compartment::System),
    ) {
        return Err(GrantError::InvalidScope);
    }
    let policy = md.profile.policy();
    let grant = AccessTokenGrant {
        client_id: md.client_id.clone(),
        sub: md.client_id.clone(),
        pairwise_sub: None,
        scope: granted.to_string(),
        aud: vec![ctx.default_audience.to_owned()],
        cnf: binding(client)?,
        lifetime: policy
            .default_access_token_lifetime
            .min(policy.max_access_token_lifetime),
        format: md.access_token_format,
        auth_time: None,
        acr: None,
        family_id: None,
        context: Map::new(),
    };
    let t = ctx
        .issuer
        .issue_access_token(&grant, ctx.now)
        .map_err(|_| GrantError::Unavailable)?;
    store_access_token(ctx, &t)?;
    Ok(TokenResponse {
        token_type: "Bearer",
        expires_in: t.expires_in,
        scope: grant.scope,
        refresh_token: None,
        context: Map::new(),
        id_token: None,
        jti: t.jti.clone(),
        access_token: t.token,
        subject: grant.sub,
    })
}

/// `grant_type=authorization_code` (RFC 6749 §4.1.3 with PKCE, RFC 7636 §4.6).
pub fn authorization_code(
    client: &AuthenticatedClient,
    code: Option<&str>,
    redirect_uri: Option<&str>,
    code_verifier: Option<&str>,
    ctx: &GrantContext<'_>,
) -> Result<TokenResponse, GrantError> {
    let r = authorization_code_inner(client, code, redirect_uri, code_verifier, ctx);
    ctx.settle(EventKind::CodeRedeemed, client, r)
}

fn authorization_code_inner(
    client: &AuthenticatedClient,
    code: Option<&str>,
    redirect_uri: Option<&str>,
    code_verifier: Option<&str>,
    ctx: &GrantContext<'_>,
) -> Result<TokenResponse, GrantError> {
    let md = client.client().metadata();
    if !md.grant_types.contains(&GrantType::AuthorizationCode) {
        return Err(GrantError::UnauthorizedClient);
    }
    let code = code.ok_or(GrantError::InvalidRequest("code missing"))?;
    let cnf = binding(client)?;
    let grant = match redeem(
        code,
        client,
        redirect_uri,
        code_verifier,
        ctx.store,
        ctx.now,
    ) {
        Ok(g) => g.record,
        Err(CodeError::Reused { grant_id }) => {
            // A1: revoke the family of every token issued from this code.
            revoke_family(ctx, &grant_id)?;
            return Err(GrantError::InvalidGrant("code reused"));
        }
        Err(CodeError::Unavailable) => return Err(GrantError::Unavailable),
        Err(_) => return Err(GrantError::InvalidGrant("code")),
    };
    issue_for_user(
        md,
        cnf,
        &UserGrant {
            subject: &grant.subject,
            scope: &grant.scope,
            auth_time: UnixTime(grant.auth_time),
            acr: grant.acr.as_deref(),
            nonce: grant.request.nonce.as_deref(),
            resource: &grant.request.resource,
            context: &grant.context,
            grant_id: &grant.grant_id,
            auth_req_id: None,
        },
        ctx,
    )
}

/// What a user's grant (an authorization code, an approved CIBA request) issues tokens
/// for.
struct UserGrant<'g> {
    subject: &'g str,
    scope: &'g str,
    auth_time: UnixTime,
    acr: Option<&'g str>,
    nonce: Option<&'g str>,
    resource: &'g [String],
    context: &'g Map<String, serde_json::Value>,
    /// The refresh family every token carries (revoked on reuse, A1, B5).
    grant_id: &'g str,
    /// CIBA: the request, for the ID token's claims (and `at_hash`/`rt_hash`).
    auth_req_id: Option<&'g str>,
}

/// Access token, refresh token (when the scope asks for one and the client and profile
/// allow it) and ID token (with `openid`) for a user grant; records stored first.
fn issue_for_user(
    md: &crate::client::ClientMetadata,
    cnf: Option<Confirmation>,
    grant: &UserGrant<'_>,
    ctx: &GrantContext<'_>,
) -> Result<TokenResponse, GrantError> {
    let policy = md.profile.policy();
    let scope = ScopeSet::parse(grant.scope).map_err(|_| GrantError::InvalidScope)?;
    let aud = if grant.resource.is_empty() {
        vec![ctx.default_audience.to_owned()]
    } else {
        grant.resource.to_vec()
    };
    // The `sub` this client sees: pairwise for pairwise clients (OIDC Core §8.1). A
    // wrapper token shows it; a JWT access token carries the local subject for the
    // resource server.
    let visible_sub = PairwiseSubjects::for_client(ctx.pairwise, md, grant.subject)
        .map_err(|_| GrantError::Unavailable)?;
    let pairwise_sub = (visible_sub != grant.subject).then(|| visible_sub.clone());
    let access = AccessTokenGrant {
        client_id: md.client_id.clone(),
        sub: grant.subject.to_owned(),
        pairwise_sub,
        scope: grant.scope.to_owned(),
        aud: aud.clone(),
        cnf: cnf.clone(),
        lifetime: policy
            .default_access_token_lifetime
            .min(policy.max_access_token_lifetime),
        format: md.access_token_format,
        auth_time: Some(grant.auth_time),
        acr: grant.acr.map(str::to_owned),
        family_id: Some(grant.grant_id.to_owned()),
        context: grant.context.clone(),
    };
    let t = ctx
        .issuer
        .issue_access_token(&access, ctx.now)
        .map_err(|_| GrantError::Unavailable)?;
    let wants_refresh =
        scope.contains(&Scope::OfflineAccess) || scope.contains(&Scope::OnlineAccess);
    let refresh = match policy.refresh_token_lifetime {
        Some(lifetime) if wants_refresh && md.grant_types.contains(&GrantType::RefreshToken) => {
            Some(
                ctx.issuer
                    .issue_refresh_token(
                        &RefreshTokenGrant {
                            client_id: md.client_id.clone(),
                            sub: grant.subject.to_owned(),
                            scope: grant.scope.to_owned(),
                            aud,
                            cnf,
                            lifetime,
                            family_id: Some(grant.grant_id.to_owned()),
                            generation: 0,
                            auth_time: Some(grant.auth_time),
                            acr: grant.acr.map(str::to_owned),
                            context: grant.context.clone(),
                        },
                        ctx.now,
                    )
                    .map_err(|_| GrantError::Unavailable)?,
            )
        }
        _ => None,
    };
    let id_token = if scope.contains(&Scope::OpenId) {
        let fhir_user = if scope.contains(&Scope::FhirUser) {
            grant.context.get("fhirUser").and_then(|v| v.as_str())
        } else {
            None
        };
        // CIBA §10.3.1: the ID token names the request and hashes the tokens it came
        // with (required for push, harmless for poll and ping).
        let ciba = grant.auth_req_id.is_some();
        let input = IdTokenInput {
            sub: &visible_sub,
            auth_time: grant.auth_time,
            nonce: grant.nonce,
            acr: grant.acr,
            fhir_user,
            auth_req_id: grant.auth_req_id,
            access_token: ciba.then(|| t.token.expose()),
            refresh_token: refresh.as_ref().filter(|_| ciba).map(|r| r.token.expose()),
        };
        Some(
            issue_id_token(ctx.issuer.issuer(), ctx.issuer.keys(), md, &input, ctx.now)
                .map_err(|_| GrantError::Unavailable)?,
        )
    } else {
        None
    };
    store_access_token(ctx, &t)?;
    if let Some(r) = &refresh {
        let bytes = r.record.to_bytes().map_err(|_| GrantError::Unavailable)?;
        ctx.store
            .put(
                Namespace::RefreshToken,
                &r.hash.0,
                &bytes,
                UnixTime(r.record.exp),
            )
            .map_err(|_| GrantError::Unavailable)?;
    }
    Ok(TokenResponse {
        token_type: "Bearer",
        expires_in: t.expires_in,
        scope: grant.scope.to_owned(),
        refresh_token: refresh.map(|r| r.token),
        context: grant.context.clone(),
        id_token,
        jti: t.jti.clone(),
        access_token: t.token,
        subject: grant.subject.to_owned(),
    })
}

fn family_revoked(ctx: &GrantContext<'_>, family: &str) -> Result<bool, GrantError> {
    crate::lifecycle::family_revoked(ctx.store, family, ctx.now)
        .map_err(|_| GrantError::Unavailable)
}

fn revoke_family(ctx: &GrantContext<'_>, family: &str) -> Result<(), GrantError> {
    crate::lifecycle::revoke_family(ctx.store, ctx.cache, family, ctx.now)
        .map_err(|_| GrantError::Unavailable)
}

/// `grant_type=refresh_token` (RFC 6749 §6) under the client's [`RefreshPolicy`]:
/// rotation with reuse detection for public clients, none (or a grace window) for
/// sender-constrained confidential clients (FAPI 2.0 §5.3.2.1). Refused: another
/// client's token (R1), a bound token without its certificate (R3), reuse of a
/// superseded token — which revokes the family (R4) —, a wider scope (R6), an expired
/// token or a revoked family.
///
/// [`RefreshPolicy`]: crate::token::RefreshPolicy
pub fn refresh_token(
    client: &AuthenticatedClient,
    refresh_token: Option<&str>,
    scope: Option<&str>,
    ctx: &GrantContext<'_>,
) -> Result<TokenResponse, GrantError> {
    let r = refresh_token_inner(client, refresh_token, scope, ctx);
    ctx.settle(EventKind::Refresh, client, r)
}

fn refresh_token_inner(
    client: &AuthenticatedClient,
    refresh_token: Option<&str>,
    scope: Option<&str>,
    ctx: &GrantContext<'_>,
) -> Result<TokenResponse, GrantError> {
    use crate::token::{RefreshPlan, RefreshRecord, RefreshState, TokenError, TokenHash};
    let md = client.client().metadata();
    if !md.grant_types.contains(&GrantType::RefreshToken) {
        return Err(GrantError::UnauthorizedClient);
    }
    let token = refresh_token.ok_or(GrantError::InvalidRequest("refresh_token missing"))?;
    let key = TokenHash::of(token).0;
    let bytes = ctx
        .store
        .get(Namespace::RefreshToken, &key, ctx.now)
        .map_err(|_| GrantError::Unavailable)?
        .ok_or(GrantError::InvalidGrant("unknown refresh token"))?;
    let record = RefreshRecord::from_bytes(&bytes)
        .map_err(|_| GrantError::InvalidGrant("unknown refresh token"))?;
    if record.client_id != md.client_id {
        return Err(GrantError::InvalidGrant("refresh token of another client"));
    }
    if family_revoked(ctx, &record.family_id)? {
        return Err(GrantError::InvalidGrant("family revoked"));
    }
    if let Some(cnf) = &record.cnf {
        let presented = client.certificate().map(Confirmation::from_thumbprint);
        if presented.as_ref() != Some(cnf) {
            return Err(GrantError::InvalidGrant(
                "certificate does not match the refresh token",
            ));
        }
    }
    // R7: the user is checked again at every redemption, not only at the grant.
    if let Some(users) = ctx.users {
        let status = users
            .status(&record.sub)
            .map_err(|_| GrantError::Unavailable)?;
        if status != UserStatus::Active {
            return Err(GrantError::InvalidGrant("user no longer active"));
        }
    }
    let policy = md.profile.policy();
    let rotation = if md.token_endpoint_auth_method == crate::client::AuthMethod::None {
        policy.public_refresh
    } else {
        ctx.confidential_refresh
            .unwrap_or(policy.confidential_refresh)
    };
    let plan = match rotation.plan(&record, &md.client_id, ctx.now) {
        Ok(p) => p,
        Err(TokenError::RefreshReuse) => {
            revoke_family(ctx, &record.family_id)?;
            return Err(GrantError::InvalidGrant("refresh token reuse"));
        }
        Err(_) => return Err(GrantError::InvalidGrant("refresh token")),
    };
    let granted = ScopeSet::parse(&record.scope).map_err(|_| GrantError::InvalidScope)?;
    let scope = granted
        .narrow(scope)
        .map_err(|_| GrantError::InvalidScope)?
        .to_string();

    // On a grace retry the successor issued before must still be unused: a client that
    // received it and used it has no reason to come back with its parent (R4).
    let lost_successor = match (&plan, record.state) {
        (RefreshPlan::GraceRetry { .. }, RefreshState::Superseded { successor, .. }) => {
            if let Some(h) = successor {
                let used = match ctx
                    .store
                    .get(Namespace::RefreshToken, &h.0, ctx.now)
                    .map_err(|_| GrantError::Unavailable)?
                {
                    Some(b) => RefreshRecord::from_bytes(&b)
                        .map(|s| s.state != RefreshState::Active)
                        .unwrap_or(true),
                    None => false,
                };
                if used {
                    revoke_family(ctx, &record.family_id)?;
                    return Err(GrantError::InvalidGrant("refresh token reuse"));
                }
            }
            successor
        }
        _ => None,
    };
    let next = match plan {
        RefreshPlan::Keep => None,
        RefreshPlan::Rotate { next_generation } | RefreshPlan::GraceRetry { next_generation } => {
            let remaining = u32::try_from(record.exp - ctx.now.secs())
                .map_err(|_| GrantError::InvalidGrant("refresh token"))?;
            let rt = ctx
                .issuer
                .issue_refresh_token(
                    &RefreshTokenGrant {
                        client_id: record.client_id.clone(),
                        sub: record.sub.clone(),
                        scope: record.scope.clone(),
                        aud: record.aud.clone(),
                        cnf: record.cnf.clone(),
                        lifetime: remaining,
                        family_id: Some(record.family_id.clone()),
                        generation: next_generation,
                        auth_time: record.auth_time.map(UnixTime),
                        acr: record.acr.clone(),
                        context: record.context.clone(),
                    },
                    ctx.now,
                )
                .map_err(|_| GrantError::Unavailable)?;
            Some(rt)
        }
    };
    let access = AccessTokenGrant {
        client_id: md.client_id.clone(),
        sub: record.sub.clone(),
        pairwise_sub: None,
        scope: scope.clone(),
        aud: record.aud.clone(),
        cnf: record.cnf.clone(),
        lifetime: policy
            .default_access_token_lifetime
            .min(policy.max_access_token_lifetime),
        format: md.access_token_format,
        auth_time: record.auth_time.map(UnixTime),
        acr: record.acr.clone(),
        family_id: Some(record.family_id.clone()),
        context: record.context.clone(),
    };
    let t = ctx
        .issuer
        .issue_access_token(&access, ctx.now)
        .map_err(|_| GrantError::Unavailable)?;
    // Everything new is written first; superseding the presented token is the last,
    // atomic step. A failure before it leaves the presented token as it was (the client
    // can retry); a lost race removes what this request wrote (R5).
    store_access_token(ctx, &t)?;
    if let Some(r) = &next {
        let b = r.record.to_bytes().map_err(|_| GrantError::Unavailable)?;
        ctx.store
            .put(
                Namespace::RefreshToken,
                &r.hash.0,
                &b,
                UnixTime(r.record.exp),
            )
            .map_err(|_| GrantError::Unavailable)?;
        if let Some(lost) = lost_successor {
            // The successor whose response was lost is replaced, never kept alongside
            // (deleted before the swap: a failure later cannot leave two live tokens).
            ctx.store
                .delete(Namespace::RefreshToken, &lost.0)
                .map_err(|_| GrantError::Unavailable)?;
        }
        let at = match record.state {
            RefreshState::Superseded { at, .. } => at,
            RefreshState::Active => ctx.now.secs(),
        };
        let mut superseded = record.clone();
        superseded.state = RefreshState::Superseded {
            at,
            successor: Some(r.hash),
        };
        let new_bytes = superseded.to_bytes().map_err(|_| GrantError::Unavailable)?;
        let swapped = ctx.store.compare_and_swap(
            Namespace::RefreshToken,
            &key,
            &bytes,
            Some((&new_bytes, UnixTime(record.exp))),
            ctx.now,
        );
        match swapped {
            Ok(crate::store::Swapped::Done) => {}
            other => {
                let _ = ctx.store.delete(Namespace::RefreshToken, &r.hash.0);
                let _ = ctx
                    .store
                    .delete(Namespace::AccessToken, &t.record_key.store_key());
                return Err(match other {
                    // R5: a parallel use won; this one is a reuse.
                    Ok(_) => GrantError::InvalidGrant("refresh token already used"),
                    Err(_) => GrantError::Unavailable,
                });
            }
        }
    }
    Ok(TokenResponse {
        token_type: "Bearer",
        expires_in: t.expires_in,
        scope,
        refresh_token: next.map(|r| r.token),
        context: record.context,
        id_token: None,
        jti: t.jti.clone(),
        access_token: t.token,
        subject: record.sub,
    })
}

/// `grant_type=urn:openid:params:grant-type:ciba` (CIBA Core §10.1, §11): one poll (or a
/// ping client's fetch) of `auth_req_id`. `authorization_pending`, `slow_down` (B3),
/// `expired_token` (B4) and `access_denied` (B6, B17) are errors here; `invalid_grant`
/// for an unknown id or another client's (B1, B2); a push client is
/// `unauthorized_client`. A reused `auth_req_id` revokes every token issued from it (B5).
/// Tokens are those of an authorization-code grant; the ID token also carries
/// `urn:openid:params:jwt:claim:auth_req_id`, `at_hash` and `rt_hash`.
pub fn ciba(
    client: &AuthenticatedClient,
    auth_req_id: Option<&str>,
    users: &dyn crate::ciba::CibaUsers,
    ctx: &GrantContext<'_>,
) -> Result<TokenResponse, GrantError> {
    let r = ciba_inner(client, auth_req_id, users, ctx);
    // A pending poll is routine; everything else (slow_down included) is audited.
    if matches!(r, Err(GrantError::AuthorizationPending)) {
        return r;
    }
    ctx.settle(EventKind::CibaRedeemed, client, r)
}

fn ciba_inner(
    client: &AuthenticatedClient,
    auth_req_id: Option<&str>,
    users: &dyn crate::ciba::CibaUsers,
    ctx: &GrantContext<'_>,
) -> Result<TokenResponse, GrantError> {
    let md = client.client().metadata();
    if !md.grant_types.contains(&GrantType::Ciba) {
        return Err(GrantError::UnauthorizedClient);
    }
    let id = auth_req_id.ok_or(GrantError::InvalidRequest("auth_req_id missing"))?;
    // Before redeeming: a missing certificate must not consume the request.
    let cnf = binding(client)?;
    let redeemed = crate::ciba::redeem(
        ctx.store,
        users,
        ctx.issuer.issuer(),
        &md.client_id,
        id,
        crate::ciba::Redeemer::Poll,
        ctx.now,
    );
    ciba_tokens(md, cnf, id, redeemed, ctx)
}

/// A push client's tokens, minted when its user approved (CIBA §10.3.1): no client
/// request, hence no certificate to bind to; registration refuses push for clients that
/// need bound tokens, and this refuses them again.
pub(crate) fn ciba_push(
    client: &crate::client::ValidatedClient,
    auth_req_id: &str,
    users: &dyn crate::ciba::CibaUsers,
    ctx: &GrantContext<'_>,
) -> Result<TokenResponse, GrantError> {
    let md = client.metadata();
    let r = if !md.grant_types.contains(&GrantType::Ciba)
        || md.tls_client_certificate_bound_access_tokens
        || md.profile.policy().sender_constraint_required
    {
        Err(GrantError::UnauthorizedClient)
    } else {
        let redeemed = crate::ciba::redeem(
            ctx.store,
            users,
            ctx.issuer.issuer(),
            &md.client_id,
            auth_req_id,
            crate::ciba::Redeemer::Push,
            ctx.now,
        );
        ciba_tokens(md, None, auth_req_id, redeemed, ctx)
    };
    ctx.settle_for(EventKind::CibaRedeemed, &md.client_id, None, r)
}

fn ciba_tokens(
    md: &crate::client::ClientMetadata,
    cnf: Option<Confirmation>,
    auth_req_id: &str,
    redeemed: Result<crate::ciba::CibaRecord, crate::ciba::PollError>,
    ctx: &GrantContext<'_>,
) -> Result<TokenResponse, GrantError> {
    use crate::ciba::{CibaState, PollError};
    let record = match redeemed {
        Ok(r) => r,
        Err(PollError::Reused { grant_id }) => {
            // B5: revoke the family of every token issued from this request.
            revoke_family(ctx, &grant_id)?;
            return Err(GrantError::InvalidGrant("auth_req_id reused"));
        }
        Err(e) => return Err(e.into()),
    };
    let (Some(subject), CibaState::Approved { at }) = (record.user_id.as_deref(), record.state)
    else {
        return Err(GrantError::InvalidGrant("auth_req_id"));
    };
    issue_for_user(
        md,
        cnf,
        &UserGrant {
            subject,
            scope: &record.scope,
            auth_time: UnixTime(at),
            acr: None,
            nonce: None,
            resource: &[],
            context: &Map::new(),
            grant_id: &record.grant_id,
            auth_req_id: Some(auth_req_id),
        },
        ctx,
    )
}
