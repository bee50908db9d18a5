//! The backchannel authentication request (CIBA Core §7.1, §7.1.1, §7.3, §13; FAPI-CIBA
//! §5.2.2), validated in full before anything is stored.

use ring::rand::{SecureRandom, SystemRandom};

use super::{
    user_index_key, AuthReqId, CibaContext, CibaRecord, CibaState, NotificationTarget, RequestRef,
    UnknownUserPolicy, UserCodeCheck, UserStatus, AUTH_REQ_ID_BYTES, MAX_EXPIRY,
};
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::authorize::par::Params;
use crate::client::{AuthMethod, AuthenticatedClient, DeliveryMode, GrantType, ValidatedClient};
use crate::clock::UnixTime;
use crate::error::{ToWire, WireError};
use crate::jose::{
    b64, check_typ, parse_compact, validate_claims, AlgorithmSet, AudienceRule, Claims, TypRule,
    Validation, ACCESS_TOKEN_MAX_LEN, DEFAULT_LEEWAY, REQUEST_OBJECT_MAX_LEN,
};
use crate::scope::{Scope, ScopeSet};
use crate::store::{Inserted, Namespace};

/// Longest `login_hint` accepted.
pub const MAX_LOGIN_HINT_LEN: usize = 256;
/// Longest `user_code` accepted.
pub const MAX_USER_CODE_LEN: usize = 256;
/// Longest `acr_values` accepted.
pub const MAX_ACR_VALUES_LEN: usize = 512;
/// Longest `client_notification_token` accepted (oidc-provider's bound, B16).
pub const MAX_NOTIFICATION_TOKEN_LEN: usize = 1024;
/// Longest `jti` of a signed request accepted.
pub const MAX_JTI_LEN: usize = 256;

/// Why a backchannel authentication request was refused: exactly the CIBA §13 codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackchannelError {
    /// 400 `invalid_request`: malformed, missing or contradictory parameters, two hints or
    /// none (B9), a bad `id_token_hint` (B11) or signed request (B13), a bad
    /// `requested_expiry` (B12) or `client_notification_token` (B16).
    #[error("invalid_request ({0})")]
    InvalidRequest(&'static str),
    /// 400 `invalid_scope`.
    #[error("invalid_scope")]
    InvalidScope,
    /// 400 `expired_login_hint_token`: a `login_hint_token` past its `exp` (B11).
    #[error("expired_login_hint_token")]
    ExpiredLoginHintToken,
    /// 400 `unknown_user_id` (B10).
    #[error("unknown_user_id")]
    UnknownUserId,
    /// 400 `unauthorized_client`: no CIBA grant (B18).
    #[error("unauthorized_client")]
    UnauthorizedClient,
    /// 400 `missing_user_code`.
    #[error("missing_user_code")]
    MissingUserCode,
    /// 400 `invalid_user_code`.
    #[error("invalid_user_code")]
    InvalidUserCode,
    /// 400 `invalid_binding_message` (B8).
    #[error("invalid_binding_message")]
    InvalidBindingMessage,
    /// 401 `invalid_client`: a client that cannot authenticate (a public client).
    #[error("invalid_client")]
    InvalidClient,
    /// 403 `access_denied`: the hinted user may not be authenticated (locked, disabled).
    #[error("access_denied")]
    AccessDenied,
    /// 503: the store, the user directory or randomness failed; nothing was stored.
    #[error("unavailable")]
    Unavailable,
}

impl ToWire for BackchannelError {
    fn to_wire(&self) -> WireError {
        match self {
            BackchannelError::InvalidRequest(d) => WireError::new(400, "invalid_request", d),
            BackchannelError::InvalidScope => WireError::bare(400, "invalid_scope"),
            BackchannelError::ExpiredLoginHintToken => {
                WireError::bare(400, "expired_login_hint_token")
            }
            BackchannelError::UnknownUserId => WireError::bare(400, "unknown_user_id"),
            BackchannelError::UnauthorizedClient => WireError::bare(400, "unauthorized_client"),
            BackchannelError::MissingUserCode => WireError::bare(400, "missing_user_code"),
            BackchannelError::InvalidUserCode => WireError::bare(400, "invalid_user_code"),
            BackchannelError::InvalidBindingMessage => {
                WireError::bare(400, "invalid_binding_message")
            }
            BackchannelError::InvalidClient => {
                WireError::new(401, "invalid_client", "client authentication failed")
            }
            BackchannelError::AccessDenied => WireError::bare(403, "access_denied"),
            BackchannelError::Unavailable => WireError::UNAVAILABLE,
        }
    }
}

/// The successful acknowledgement (CIBA §7.3, HTTP 200).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackchannelResponse {
    /// The client's handle on the request.
    pub auth_req_id: AuthReqId,
    /// Seconds until the request expires.
    pub expires_in: u32,
    /// Seconds to wait between polls (poll and ping clients; push clients never poll).
    pub interval: Option<u32>,
}

impl BackchannelResponse {
    /// The JSON body.
    pub fn to_json(&self) -> serde_json::Value {
        let mut o = serde_json::Map::new();
        o.insert("auth_req_id".into(), self.auth_req_id.expose().into());
        o.insert("expires_in".into(), self.expires_in.into());
        if let Some(i) = self.interval {
            o.insert("interval".into(), i.into());
        }
        serde_json::Value::Object(o)
    }

    /// The reference of the new request (for the server's own bookkeeping).
    pub fn request_ref(&self) -> RequestRef {
        self.auth_req_id.request_ref()
    }
}

/// The CIBA authentication request parameters (CIBA §7.1). With a signed `request`, none
/// of them may also appear outside it (§7.1.1: the JWT carries them all).
const CIBA_PARAMS: [&str; 10] = [
    "scope",
    "client_notification_token",
    "acr_values",
    "login_hint_token",
    "id_token_hint",
    "login_hint",
    "binding_message",
    "user_code",
    "requested_expiry",
    "request_context",
];

fn param<'p>(p: &'p Params, name: &str) -> Option<&'p str> {
    p.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

/// Process a backchannel authentication request of an authenticated client.
///
/// `body` is the form, after the server refused duplicate parameters; it may hold the
/// client-authentication parameters too (they are ignored here).
pub fn start(
    client: &AuthenticatedClient,
    body: &Params,
    ctx: &CibaContext<'_>,
) -> Result<BackchannelResponse, BackchannelError> {
    let r = start_inner(client, body, ctx);
    let (outcome, reason) = match &r {
        Ok(_) => (Outcome::Success, "started"),
        Err(e) => (Outcome::Failure, e.to_wire().code),
    };
    let mut e = AuditEvent::new(ctx.now, EventKind::CibaRequest, outcome, reason)
        .client(client.client_id());
    if let Ok((resp, user)) = &r {
        e = e.token_ref(resp.request_ref().audit_ref());
        if let Some(s) = ctx.subject_ref(user.as_deref()) {
            e = e.subject_ref(s);
        }
    }
    if let Some(t) = client.certificate() {
        e = e.cert(crate::mtls::Confirmation::from_thumbprint(t).x5t_s256);
    }
    crate::audit::settle(ctx.audit, e, r, || BackchannelError::Unavailable).map(|(resp, _)| resp)
}

/// A user named by the request's hint.
enum Hinted {
    /// A local user id.
    User(String),
    /// No user (concealed, B10).
    Nobody,
}

fn start_inner(
    client: &AuthenticatedClient,
    body: &Params,
    ctx: &CibaContext<'_>,
) -> Result<(BackchannelResponse, Option<String>), BackchannelError> {
    use BackchannelError::InvalidRequest as Bad;
    let validated = client.client();
    let md = validated.metadata();
    // Who may ask at all (B18): confidential clients registered for the CIBA grant.
    if client.method() == AuthMethod::None || md.token_endpoint_auth_method == AuthMethod::None {
        return Err(BackchannelError::InvalidClient);
    }
    if !md.grant_types.contains(&GrantType::Ciba) {
        return Err(BackchannelError::UnauthorizedClient);
    }
    let mode = md
        .backchannel_token_delivery_mode
        .ok_or(BackchannelError::UnauthorizedClient)?;
    if body.get("client_id").is_some_and(|c| c != &md.client_id) {
        return Err(Bad("client_id"));
    }
    if body.contains_key("request_uri") {
        return Err(Bad("request_uri is not supported"));
    }

    // Signed requests (§7.1.1): required under FAPI and when the client registered an
    // algorithm (B13); their claims are then the only parameters.
    let signed_required =
        md.profile.is_fapi() || md.backchannel_authentication_request_signing_alg.is_some();
    let (params, jti) = match body.get("request") {
        Some(ro) => {
            if CIBA_PARAMS.iter().any(|p| body.contains_key(*p)) {
                return Err(Bad("parameters outside the signed request"));
            }
            let (params, jti) = request_object_params(ro, validated, ctx)?;
            (params, Some(jti))
        }
        None if signed_required => return Err(Bad("a signed request is required")),
        None => (body.clone(), None),
    };

    // Scope (§7.1): required, with openid, within what the client may ask for.
    let scope_text = param(&params, "scope").ok_or(Bad("scope missing"))?;
    let scope = ScopeSet::parse(scope_text).map_err(|_| BackchannelError::InvalidScope)?;
    if !scope.contains(&Scope::OpenId) {
        return Err(Bad("the openid scope is required"));
    }
    if let Some(allowed) = md.scope.as_deref() {
        let allowed = ScopeSet::parse(allowed).map_err(|_| BackchannelError::InvalidScope)?;
        if !allowed.covers(&scope) {
            return Err(BackchannelError::InvalidScope);
        }
    }
    // No launch step in CIBA: nothing can put a patient in context.
    if scope.needs_patient_context() {
        return Err(BackchannelError::InvalidScope);
    }

    // Exactly one hint (§7.1, B9).
    let hints = ["login_hint", "id_token_hint", "login_hint_token"]
        .iter()
        .filter(|h| params.contains_key(**h))
        .count();
    if hints != 1 {
        return Err(Bad(
            "exactly one of login_hint, id_token_hint, login_hint_token",
        ));
    }

    // binding_message (B8): an empty one is present and invalid, not absent.
    let binding_message = match params.get("binding_message") {
        Some(m) => {
            check_binding_message(m, ctx.config.binding_message_max())?;
            Some(m.clone())
        }
        None if md.profile.is_fapi() => {
            // FAPI-CIBA §5.2.2 item 5: a unique authorization context or a binding
            // message; heartgate has no authorization context, so the message.
            return Err(Bad("binding_message is required"));
        }
        None => None,
    };

    // requested_expiry (B12).
    let expires_in = match params.get("requested_expiry") {
        Some(v) => parse_requested_expiry(v).ok_or(Bad("requested_expiry"))?,
        None => ctx.config.expiry(),
    };

    // client_notification_token (§7.1, B16): ping and push only.
    let notification = match mode {
        DeliveryMode::Poll => None,
        DeliveryMode::Ping | DeliveryMode::Push => {
            let token = params
                .get("client_notification_token")
                .ok_or(Bad("client_notification_token missing"))?;
            if !is_b64token(token) || token.len() > MAX_NOTIFICATION_TOKEN_LEN {
                return Err(Bad("client_notification_token"));
            }
            let endpoint = md
                .backchannel_client_notification_endpoint
                .clone()
                .ok_or(BackchannelError::UnauthorizedClient)?;
            Some((endpoint, token.clone()))
        }
    };

    let acr_values = match params.get("acr_values") {
        None => None,
        Some(a) => {
            let printable = a.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
            if a.is_empty() || a.len() > MAX_ACR_VALUES_LEN || !printable {
                return Err(Bad("acr_values"));
            }
            Some(a.clone())
        }
    };

    // user_code (§7.1): present exactly when the client registered for it.
    let user_code = params.get("user_code");
    match (md.backchannel_user_code_parameter, user_code) {
        (true, None) => return Err(BackchannelError::MissingUserCode),
        (true, Some(c)) if c.is_empty() => return Err(BackchannelError::MissingUserCode),
        (true, Some(c)) if c.len() > MAX_USER_CODE_LEN => {
            return Err(BackchannelError::InvalidUserCode)
        }
        (false, Some(_)) => return Err(Bad("user_code is not registered for this client")),
        _ => {}
    }

    // The user (B10, B11).
    let resolve = |h: &str| -> Result<Hinted, BackchannelError> {
        if h.is_empty() || h.len() > MAX_LOGIN_HINT_LEN || h.chars().any(char::is_control) {
            return Err(Bad("login_hint"));
        }
        match ctx
            .users
            .resolve_login_hint(h)
            .map_err(|_| BackchannelError::Unavailable)?
        {
            Some(u) => Ok(Hinted::User(u)),
            None => unknown(ctx),
        }
    };
    let hinted = match (
        params.get("login_hint"),
        params.get("id_token_hint"),
        params.get("login_hint_token"),
    ) {
        (Some(h), None, None) => resolve(h)?,
        (None, Some(t), None) => Hinted::User(id_token_hint_subject(t, validated, ctx)?),
        (None, None, Some(t)) => resolve(&login_hint_token_subject(t, validated, ctx)?)?,
        _ => return Err(Bad("hint")),
    };
    let user_id = match hinted {
        Hinted::Nobody => None,
        Hinted::User(u) => {
            let status = ctx
                .users
                .status(&u)
                .map_err(|_| BackchannelError::Unavailable)?;
            match (status, ctx.config.unknown_users) {
                (UserStatus::Active, _) => Some(u),
                (UserStatus::Inactive, UnknownUserPolicy::Reveal) => {
                    return Err(BackchannelError::AccessDenied)
                }
                (UserStatus::Unknown, UnknownUserPolicy::Reveal) => {
                    return Err(BackchannelError::UnknownUserId)
                }
                // Concealed: a request nobody can approve.
                (UserStatus::Inactive | UserStatus::Unknown, UnknownUserPolicy::Conceal) => None,
            }
        }
    };
    // A concealed unknown user's code cannot be checked; nobody can approve anyway.
    if let (Some(u), Some(code)) = (&user_id, user_code) {
        let check = ctx
            .users
            .verify_user_code(u, code)
            .map_err(|_| BackchannelError::Unavailable)?;
        if check != UserCodeCheck::Match {
            return Err(BackchannelError::InvalidUserCode);
        }
    }

    // Everything checked: now, and only now, consume the signed request's jti (B13).
    if let Some((jti, exp)) = jti {
        let mut key = b"ciba-request\0".to_vec();
        key.extend_from_slice(&(md.client_id.len() as u64).to_be_bytes());
        key.extend_from_slice(md.client_id.as_bytes());
        key.extend_from_slice(jti.as_bytes());
        let until = UnixTime(exp.secs().saturating_add(i64::from(DEFAULT_LEEWAY) + 1));
        match ctx
            .store
            .insert_new(Namespace::Jti, &key, b"ciba-request", until, ctx.now)
        {
            Ok(Inserted::New) => {}
            Ok(Inserted::AlreadyPresent) => return Err(Bad("request jti replayed")),
            Err(_) => return Err(BackchannelError::Unavailable),
        }
    }

    let rng = SystemRandom::new();
    let mut random = [0u8; AUTH_REQ_ID_BYTES];
    rng.fill(&mut random)
        .map_err(|_| BackchannelError::Unavailable)?;
    let auth_req_id = AuthReqId(b64::encode(random));
    let grant_id = crate::token::random_id(&rng, crate::token::ID_RANDOM_BYTES)
        .map_err(|_| BackchannelError::Unavailable)?;
    let interval = ctx.config.interval();
    let record = CibaRecord {
        issuer: ctx.config.issuer.clone(),
        client_id: md.client_id.clone(),
        user_id: user_id.clone(),
        scope: scope.to_string(),
        acr_values,
        binding_message,
        mode,
        notification: notification.map(|(endpoint, token)| NotificationTarget {
            endpoint,
            token,
            auth_req_id: auth_req_id.expose().to_owned(),
        }),
        created_at: ctx.now.secs(),
        expires_at: ctx.now.secs() + i64::from(expires_in),
        interval,
        state: CibaState::Pending,
        grant_id,
    };
    let r = auth_req_id.request_ref();
    let bytes = record
        .to_bytes()
        .map_err(|_| BackchannelError::Unavailable)?;
    ctx.store
        .put(
            Namespace::Ciba,
            &r.store_key(),
            &bytes,
            record.store_until(),
        )
        .map_err(|_| BackchannelError::Unavailable)?;
    if let Some(u) = &user_id {
        // The index lives exactly as long as the request can be decided.
        let written = ctx.store.put(
            Namespace::Ciba,
            &user_index_key(u, &r),
            b"1",
            UnixTime(record.expires_at),
        );
        if written.is_err() {
            let _ = ctx.store.delete(Namespace::Ciba, &r.store_key());
            return Err(BackchannelError::Unavailable);
        }
    }
    Ok((
        BackchannelResponse {
            auth_req_id,
            expires_in,
            interval: (mode != DeliveryMode::Push).then_some(interval),
        },
        user_id,
    ))
}

fn unknown(ctx: &CibaContext<'_>) -> Result<Hinted, BackchannelError> {
    match ctx.config.unknown_users {
        UnknownUserPolicy::Reveal => Err(BackchannelError::UnknownUserId),
        UnknownUserPolicy::Conceal => Ok(Hinted::Nobody),
    }
}

/// The default `binding_message` rule (B8), oidc-provider's with a space and a
/// configurable length: 1..=`max` characters from `A-Z a-z 0-9 - . _ + / ! ? #` and
/// space, not starting or ending with a space. Being ASCII-only, it refuses every control
/// character, bidi override (U+202E), emoji, look-alike letter and HTML markup, so the
/// message reads the same on both devices whatever they render.
fn check_binding_message(m: &str, max: usize) -> Result<(), BackchannelError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._+/!?# ".contains(&b);
    let ok = !m.is_empty()
        && m.len() <= max
        && m.bytes().all(allowed)
        && !m.starts_with(' ')
        && !m.ends_with(' ');
    if ok {
        Ok(())
    } else {
        Err(BackchannelError::InvalidBindingMessage)
    }
}

/// `requested_expiry` (CIBA §7.1, B12): a positive integer, as a string of digits (a form
/// parameter, or a string claim) or a JSON integer (already turned into digits by
/// [`request_object_params`]); capped at [`MAX_EXPIRY`]. Signs, decimals, exponents,
/// spaces, zero and anything else are `None`.
fn parse_requested_expiry(v: &str) -> Option<u32> {
    if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = v.trim_start_matches('0');
    if digits.is_empty() {
        return None;
    }
    // More than nine digits is certainly above the cap.
    if digits.len() > 9 {
        return Some(MAX_EXPIRY);
    }
    let n: u32 = digits.parse().ok()?;
    Some(n.min(MAX_EXPIRY))
}

/// RFC 6750 §2.1 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// The parameters of a verified signed authentication request (CIBA §7.1.1, B13), and
/// its `jti` and `exp` (consumed once everything else passed).
fn request_object_params(
    token: &str,
    client: &ValidatedClient,
    ctx: &CibaContext<'_>,
) -> Result<(Params, (String, UnixTime)), BackchannelError> {
    use BackchannelError::InvalidRequest as Bad;
    let md = client.metadata();
    let policy = md.profile.policy();
    let now = ctx.now;
    let algorithms =
        md.algorithms_for(md.backchannel_authentication_request_signing_alg.as_deref());
    let jws = parse_compact(token, REQUEST_OBJECT_MAX_LEN).map_err(|_| Bad("request"))?;
    let typ = TypRule::OptionalOneOf(&["JWT", "oauth-authz-req+jwt"]);
    check_typ(jws.header(), typ).map_err(|_| Bad("request typ"))?;
    let keys = ctx.directory.keys(client).ok_or(Bad("no client keys"))?;
    let verified = jws
        .verify(&*keys, algorithms)
        .map_err(|_| Bad("request signature"))?;
    let claims = Claims::from_json(verified.payload()).map_err(|_| Bad("request claims"))?;
    let max = policy.max_request_object_lifetime;
    let rule = Validation::new(
        algorithms,
        typ,
        AudienceRule::Contains(ctx.config.issuer.clone()),
    )
    .issuer(md.client_id.clone())
    .max_lifetime(max)
    .require(&["iat", "nbf", "jti"]);
    validate_claims(&claims, &rule, now).map_err(|_| Bad("request claims"))?;
    // FAPI-CIBA with FAPI 1 / OIDF: nbf no older than 60 min, exp at most 60 min after nbf.
    let date = |name: &'static str| claims.numeric_date(name).ok().flatten().ok_or(Bad(name));
    let (nbf, exp) = (date("nbf")?, date("exp")?);
    let max = i64::from(max);
    if nbf.secs() < now.secs().saturating_sub(max) || exp.secs() - nbf.secs() > max {
        return Err(Bad("request lifetime"));
    }
    let jti = claims
        .required_string("jti")
        .map_err(|_| Bad("request jti"))?;
    if jti.is_empty() || jti.len() > MAX_JTI_LEN {
        return Err(Bad("request jti"));
    }
    let mut out = Params::new();
    for (k, v) in claims.as_map() {
        match (k.as_str(), v) {
            ("iss" | "aud" | "exp" | "nbf" | "iat" | "jti", _) => {}
            ("request" | "request_uri", _) => return Err(Bad("nested request")),
            ("requested_expiry", serde_json::Value::Number(n)) => {
                let n = n.as_u64().ok_or(Bad("requested_expiry"))?;
                out.insert(k.clone(), n.to_string());
            }
            (_, serde_json::Value::String(s)) => {
                out.insert(k.clone(), s.clone());
            }
            // Structured members (request_context, claims...) are not supported;
            // refusing is safer than ignoring what the client asked for.
            _ => return Err(Bad("unsupported request member")),
        }
    }
    if out.get("client_id").is_some_and(|c| c != &md.client_id) {
        return Err(Bad("client_id"));
    }
    Ok((out, (jti.to_owned(), exp)))
}

/// The login name a `login_hint_token` carries (CIBA §7.1 leaves its format to the OP).
/// heartgate's: a JWT the client signs with its registered keys (the algorithms its
/// signed requests may use), `iss` = client_id, `aud` = the issuer, `sub` = the user's
/// login name (what `login_hint` would carry), `exp` required — past it the answer is
/// `expired_login_hint_token` (B11). Anything else wrong is `invalid_request`. Not
/// single-use: a hint, not a credential (the user still approves on their device).
fn login_hint_token_subject(
    token: &str,
    client: &ValidatedClient,
    ctx: &CibaContext<'_>,
) -> Result<String, BackchannelError> {
    use BackchannelError::InvalidRequest as Bad;
    let md = client.metadata();
    let algorithms =
        md.algorithms_for(md.backchannel_authentication_request_signing_alg.as_deref());
    let jws = parse_compact(token, ACCESS_TOKEN_MAX_LEN).map_err(|_| Bad("login_hint_token"))?;
    let typ = TypRule::OptionalOneOf(&["JWT"]);
    check_typ(jws.header(), typ).map_err(|_| Bad("login_hint_token"))?;
    let keys = ctx.directory.keys(client).ok_or(Bad("no client keys"))?;
    let verified = jws
        .verify(&*keys, algorithms)
        .map_err(|_| Bad("login_hint_token"))?;
    let claims = Claims::from_json(verified.payload()).map_err(|_| Bad("login_hint_token"))?;
    let exp = claims
        .numeric_date("exp")
        .ok()
        .flatten()
        .ok_or(Bad("login_hint_token"))?;
    if exp
        .secs()
        .saturating_add(i64::from(crate::jose::DEFAULT_LEEWAY))
        <= ctx.now.secs()
    {
        return Err(BackchannelError::ExpiredLoginHintToken);
    }
    // Everything but expiry, with the expiry check made above.
    let rule = Validation::new(
        algorithms,
        typ,
        AudienceRule::Contains(ctx.config.issuer.clone()),
    )
    .issuer(md.client_id.clone());
    validate_claims(&claims, &rule, ctx.now).map_err(|_| Bad("login_hint_token"))?;
    match claims.string("sub") {
        Ok(Some(s)) if !s.is_empty() && s.len() <= MAX_LOGIN_HINT_LEN => Ok(s.to_owned()),
        _ => Err(Bad("login_hint_token")),
    }
}

/// The user an `id_token_hint` names (CIBA §7.1): an ID token this issuer signed for this
/// client. Its signature must verify with the issuer's published keys; its expiry may
/// have passed (a hint, not a credential: the user still approves on their device).
/// A pairwise client's `sub` cannot be mapped back to a user, so pairwise clients must
/// use `login_hint`.
fn id_token_hint_subject(
    token: &str,
    client: &ValidatedClient,
    ctx: &CibaContext<'_>,
) -> Result<String, BackchannelError> {
    use BackchannelError::InvalidRequest as Bad;
    let md = client.metadata();
    if md.subject_type == crate::client::SubjectType::Pairwise {
        return Err(Bad("id_token_hint is not supported for pairwise clients"));
    }
    let jws = parse_compact(token, ACCESS_TOKEN_MAX_LEN).map_err(|_| Bad("id_token_hint"))?;
    check_typ(jws.header(), TypRule::OptionalOneOf(&["JWT"])).map_err(|_| Bad("id_token_hint"))?;
    let state = ctx.keys.load();
    // The AS's own keys decide which algorithms verify (AlgorithmSet::ALL is the set for
    // "only our keys", see its doc).
    let verified = jws
        .verify(&**state, AlgorithmSet::ALL)
        .map_err(|_| Bad("id_token_hint"))?;
    let claims = Claims::from_json(verified.payload()).map_err(|_| Bad("id_token_hint"))?;
    if claims.string("iss").ok().flatten() != Some(ctx.config.issuer.as_str()) {
        return Err(Bad("id_token_hint"));
    }
    let aud_ok = claims
        .audience()
        .ok()
        .flatten()
        .is_some_and(|a| a.contains(&md.client_id));
    if !aud_ok {
        return Err(Bad("id_token_hint"));
    }
    // A malformed exp is still refused; a past one is not.
    claims
        .numeric_date("exp")
        .ok()
        .flatten()
        .ok_or(Bad("id_token_hint"))?;
    match claims.string("sub") {
        Ok(Some(s)) if !s.is_empty() && s.len() <= MAX_LOGIN_HINT_LEN => Ok(s.to_owned()),
        _ => Err(Bad("id_token_hint")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_expiry_grammar() {
        assert_eq!(parse_requested_expiry("120"), Some(120));
        assert_eq!(parse_requested_expiry("0120"), Some(120));
        assert_eq!(parse_requested_expiry("600"), Some(600));
        assert_eq!(parse_requested_expiry("601"), Some(600));
        assert_eq!(parse_requested_expiry("1000000000000"), Some(600));
        assert_eq!(parse_requested_expiry(&"9".repeat(64)), Some(600));
        for bad in [
            "", "0", "000", "-5", "+5", "1.5", "1e3", " 5", "5 ", "abc", "0x10",
        ] {
            assert_eq!(parse_requested_expiry(bad), None, "{bad:?}");
        }
        assert_eq!(parse_requested_expiry(&"9".repeat(65)), None);
    }

    #[test]
    fn b64token_grammar() {
        for ok in ["abc", "a-b.c_d~e+f/g", "abc==", "Zm9v"] {
            assert!(is_b64token(ok), "{ok}");
        }
        for bad in ["", "==", "a b", "a=b", "a\u{0}", "ä", "a,b", "a\"b"] {
            assert!(!is_b64token(bad), "{bad:?}");
        }
    }

    #[test]
    fn binding_message_rule() {
        for ok in ["A1B2", "Pay 42.00 EUR", "ok/#?!+_-.", "x"] {
            assert!(check_binding_message(ok, 20).is_ok(), "{ok}");
        }
        for bad in [
            "",
            " ",
            " lead",
            "trail ",
            "123456789012345678901",
            "a\u{202e}b",
            "tab\there",
            "new\nline",
            "<b>x</b>",
            "😀",
            "Аpple", // Cyrillic А
            "a\u{0}",
        ] {
            assert_eq!(
                check_binding_message(bad, 20),
                Err(BackchannelError::InvalidBindingMessage),
                "{bad:?}"
            );
        }
        assert!(check_binding_message("123456789012345678901", 40).is_ok());
    }
}
