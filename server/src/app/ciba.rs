//! CIBA at the edge (OpenID CIBA Core 1.0): the backchannel authentication endpoint, the
//! users the CIBA calls see, the web approval page, and ping/push notifications sent off
//! the request path. The rules live in `heartgate_core::ciba`; this maps HTTP onto them.

use std::sync::Arc;
use std::time::Duration;

use heartgate_core::audit::{AuditEvent, AuditSink, EventKind, Outcome};
use heartgate_core::authorize::par::Params;
use heartgate_core::ciba::{
    self, CibaContext, CibaUsers, Decision, Notification, RequestRef, UserCodeCheck, UserStatus,
    UsersUnavailable,
};
use heartgate_core::client::AuthenticatedClient;
use heartgate_core::clock::UnixTime;
use hyper::header::{self, HeaderValue};
use hyper::StatusCode;

use super::{error_page, now, signed_in, App, Conn, Req, Users};
use crate::outbound::{deliver_notification, Delivery, OutboundClient};
use crate::pages;
use crate::session;
use crate::wire::{self, Resp};

/// The CIBA grant type (CIBA Core §10.1).
pub(super) const GRANT_TYPE: &str = "urn:openid:params:grant-type:ciba";

/// Notification attempts: the first at once, then after 1, 2, 4 and 8 s.
const NOTIFY_ATTEMPTS: u32 = 5;

/// The local users, as CIBA sees them: a `login_hint` is a username; a `user_code` is
/// checked against the user's `ciba_user_code_hash` (argon2id, wrong codes limited).
pub(super) struct LocalUsers<'a>(pub(super) &'a dyn Users);

impl CibaUsers for LocalUsers<'_> {
    fn resolve_login_hint(&self, login_hint: &str) -> Result<Option<String>, UsersUnavailable> {
        Ok(self.0.by_username(login_hint).map(|u| u.subject))
    }

    fn status(&self, user_id: &str) -> Result<UserStatus, UsersUnavailable> {
        Ok(match self.0.by_subject(user_id) {
            Some(_) => UserStatus::Active,
            None => UserStatus::Unknown,
        })
    }

    fn verify_user_code(
        &self,
        user_id: &str,
        user_code: &str,
    ) -> Result<UserCodeCheck, UsersUnavailable> {
        Ok(
            if self.0.verify_user_code(user_id, user_code, now().secs()) {
                UserCodeCheck::Match
            } else {
                UserCodeCheck::Mismatch
            },
        )
    }
}

impl App {
    pub(super) fn ciba_context<'a>(
        &'a self,
        users: &'a LocalUsers<'a>,
        directory: &'a super::Directory<'a>,
        now: UnixTime,
    ) -> CibaContext<'a> {
        CibaContext {
            config: &self.settings.ciba,
            store: self.store.as_ref(),
            users,
            directory,
            keys: self.tokens.keys(),
            audit: self.audit.as_ref(),
            pairwise: Some(&self.pairwise),
            now,
        }
    }
}

/// `POST /bc-authorize` (CIBA Core §7): a client-authenticated form; 200 with
/// `auth_req_id`, `expires_in` and `interval`, or the §13 error.
pub(super) async fn bc_authorize(app: &Arc<App>, conn: &Conn, r: &Req, form: Params) -> Resp {
    let now = now();
    let client = match app.authenticate(conn, r, &form, "bc-authorize", now) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    if let Err(wait) = app.ciba_quota.admit(client.client_id()) {
        return wire::too_many_requests(
            "too many backchannel authentication requests from this client; retry later",
            wait,
        );
    }
    if !form.contains_key("user_code") {
        return start(app, &client, &form, now);
    }
    // A user code is checked against its argon2id hash (tens of milliseconds of a core):
    // off the async workers and in turn with the password checks, like a sign-in.
    let shared = Arc::clone(app);
    app.password_checks
        .run(move || start(&shared, &client, &form, now))
        .await
        .unwrap_or_else(wire::unavailable)
}

/// The backchannel authentication request of an authenticated client, in core.
fn start(app: &App, client: &AuthenticatedClient, form: &Params, now: UnixTime) -> Resp {
    let users = LocalUsers(app.users.as_ref());
    let dir = app.directory(now);
    let ctx = app.ciba_context(&users, &dir, now);
    match ciba::start(client, form, &ctx) {
        Ok(resp) => wire::json(StatusCode::OK, &resp.to_json()),
        Err(e) => {
            if dir.inner.store_status().is_err() {
                return wire::unavailable();
            }
            wire::flow_error(&e)
        }
    }
}

/// `GET /ciba`: the signed-in user's pending requests, each with its binding message and
/// Approve / Deny; the sign-in form otherwise.
pub(super) fn approval_page(app: &App, r: &Req) -> Resp {
    let now = now();
    let Some((s, cookie)) = signed_in(app, r, now) else {
        return login_form(app, None, StatusCode::OK);
    };
    let users = LocalUsers(app.users.as_ref());
    let dir = app.directory(now);
    let ctx = app.ciba_context(&users, &dir, now);
    let pending = match ciba::pending_for_user(&ctx, &s.subject) {
        Ok(p) => p,
        Err(_) => return wire::unavailable(),
    };
    let name = app
        .users
        .by_subject(&s.subject)
        .map_or_else(|| s.subject.clone(), |u| u.display_name);
    let items: Vec<pages::CibaItem> = pending
        .iter()
        .map(|p| {
            let id = p.request_ref.to_b64();
            pages::CibaItem {
                csrf: app.sessions.csrf("ciba", &id, &cookie),
                request: id,
                client: p.client_name.clone().unwrap_or_else(|| p.client_id.clone()),
                scope: p.scope.clone(),
                binding_message: p.binding_message.clone(),
                binding_hash: p.binding_message.as_deref().map(ciba::binding_message_hash),
            }
        })
        .collect();
    wire::html(StatusCode::OK, pages::ciba_requests(&name, &items))
}

fn login_form(app: &App, error: Option<&str>, status: StatusCode) -> Resp {
    let Some(pre) = session::Sessions::nonce() else {
        return wire::unavailable();
    };
    let csrf = app.sessions.csrf("login", "ciba", &pre);
    let mut resp = wire::html(status, pages::ciba_login(&csrf, error));
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(session::PRE_COOKIE, &pre, 900)) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /ciba/login`: sign in to review requests (same checks and limits as `/login`).
pub(super) async fn login_submit(app: &App, conn: &Conn, r: &Req) -> Resp {
    let now = now();
    let Ok(f) = r.form() else {
        return error_page(StatusCode::BAD_REQUEST, "The request is malformed.");
    };
    let f = super::Wiped(f);
    let get = |k: &str| f.0.get(k).map(String::as_str).unwrap_or("");
    let pre = session::cookie(r.header(header::COOKIE), session::PRE_COOKIE).unwrap_or("");
    if !app.sessions.check_csrf("login", "ciba", pre, get("csrf")) {
        return error_page(
            StatusCode::FORBIDDEN,
            "The form expired or did not come from this site. Open the page again.",
        );
    }
    match app.login(&f, conn, now).await {
        None => wire::unavailable(),
        Some(Ok(user)) => super::signed_in_redirect(app, &user.subject, now, "/ciba"),
        Some(Err(failure)) => login_form(
            app,
            Some(super::login_message(failure)),
            StatusCode::UNAUTHORIZED,
        ),
    }
}

/// `POST /ciba/decide`: the signed-in user approves or denies one request. The form
/// carries the hash of the binding message the page showed: a request whose message is
/// not the one shown is not decided (CIBA §7.1, THREATS B7/B8).
pub(super) fn decide(app: &App, r: &Req) -> Resp {
    let now = now();
    let Some((s, cookie)) = signed_in(app, r, now) else {
        return login_form(app, None, StatusCode::UNAUTHORIZED);
    };
    let Ok(f) = r.form() else {
        return error_page(StatusCode::BAD_REQUEST, "The request is malformed.");
    };
    let get = |k: &str| f.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let request = get("request").unwrap_or("");
    if !app
        .sessions
        .check_csrf("ciba", request, &cookie, get("csrf").unwrap_or(""))
    {
        return error_page(
            StatusCode::FORBIDDEN,
            "The form expired or did not come from this site. Open the page again.",
        );
    }
    let Some(request_ref) = RequestRef::parse(request) else {
        return error_page(StatusCode::BAD_REQUEST, "The request is malformed.");
    };
    let decision = match get("decision") {
        Some("approve") => Decision::Approve,
        Some("deny") => Decision::Deny,
        _ => return error_page(StatusCode::BAD_REQUEST, "The request is malformed."),
    };
    let users = LocalUsers(app.users.as_ref());
    let dir = app.directory(now);
    let ctx = app.ciba_context(&users, &dir, now);
    let decided = match ciba::decide(&ctx, &request_ref, &s.subject, decision, get("binding")) {
        Ok(d) => d,
        Err(e) => {
            let w = heartgate_core::error::ToWire::to_wire(&e);
            let status = StatusCode::from_u16(w.status).unwrap_or(StatusCode::BAD_REQUEST);
            let message = match w.status {
                404 => "This request has expired or does not exist.",
                409 => "This request was already decided.",
                403 => "This request is not yours to decide.",
                503 => return wire::unavailable(),
                _ => "This request cannot be decided as shown. Open the page again.",
            };
            return error_page(status, message);
        }
    };
    notify(app, &decided, &users, &dir, now);
    wire::html(
        StatusCode::OK,
        pages::ciba_done(decision == Decision::Approve),
    )
}

/// After a decision: the ping or push notification, if the client's mode has one, sent
/// off the request path.
fn notify(
    app: &App,
    decided: &ciba::Decided,
    users: &LocalUsers<'_>,
    dir: &super::Directory<'_>,
    now: UnixTime,
) {
    let grants = app.grants(now);
    match decided.notification(users, dir, &grants) {
        Ok(Some(n)) => spawn_notification(
            app.outbound.clone(),
            app.audit.clone(),
            n,
            Some(decided.client_id.clone()),
            now,
        ),
        Ok(None) => {}
        Err(_) => {
            // The tokens of a push could not be made (store down, client deleted): the
            // decision stands; the client learns nothing more and its request expires.
            tracing::warn!("CIBA push notification could not be prepared");
        }
    }
}

/// Send a notification off the request path, retried with backoff; never after a
/// 401/403 (THREATS B15). Delivery is audited (`notified`); a notification that keeps
/// failing is logged (without its token or body) and audited; a ping client can still
/// poll.
fn spawn_notification(
    out: Arc<OutboundClient>,
    audit: Arc<dyn AuditSink>,
    n: Notification,
    client_id: Option<String>,
    now: UnixTime,
) {
    tokio::spawn(async move {
        let outcome = deliver_notification(
            &out,
            &n.endpoint,
            n.bearer.expose(),
            &n.body,
            NOTIFY_ATTEMPTS,
            Duration::from_secs(1),
        )
        .await;
        let (outcome, reason) = match outcome {
            Delivery::Delivered(attempt) => {
                tracing::info!(attempt, "CIBA notification delivered");
                (Outcome::Success, "notified")
            }
            Delivery::Refused => (Outcome::Failure, "notification_refused"),
            Delivery::GaveUp => (Outcome::Failure, "notification_failed"),
        };
        if outcome == Outcome::Failure {
            tracing::warn!(reason, "CIBA notification given up");
        }
        let mut e = AuditEvent::new(now, EventKind::Ciba, outcome, reason);
        if let Some(c) = client_id {
            e = e.client(c);
        }
        audit.record(e);
    });
}

/// Failed pairing attempts allowed per client address (IPv6 per /64) in
/// [`PAIRING_WINDOW`]: the code is short enough to type, so guessing is throttled.
pub(super) const PAIRING_FAILURES: u32 = 10;
/// The pairing-attempt window, seconds.
pub(super) const PAIRING_WINDOW: i64 = 900;

/// Failed pairing attempts by address.
#[derive(Debug, Default)]
pub struct PairingLimiter(parking_lot::Mutex<std::collections::HashMap<[u8; 8], (u32, i64)>>);

impl PairingLimiter {
    fn key(ip: std::net::IpAddr) -> [u8; 8] {
        match ip {
            std::net::IpAddr::V4(v4) => {
                let mut k = [0u8; 8];
                k[..4].copy_from_slice(&v4.octets());
                k
            }
            std::net::IpAddr::V6(v6) => {
                let mut k = [0u8; 8];
                k.copy_from_slice(&v6.octets()[..8]);
                k[0] |= 0x80; // never equal to an IPv4 key
                k
            }
        }
    }

    /// Count an attempt before it is checked; `false` when the address is over the limit.
    fn admit(&self, ip: std::net::IpAddr, now: i64) -> bool {
        let mut m = self.0.lock();
        if m.len() > 100_000 {
            m.retain(|_, (_, start)| now - *start < PAIRING_WINDOW);
        }
        let e = m.entry(Self::key(ip)).or_insert((0, now));
        if now - e.1 >= PAIRING_WINDOW {
            *e = (0, now);
        }
        if e.0 >= PAIRING_FAILURES {
            return false;
        }
        e.0 += 1;
        true
    }

    /// A success takes its attempt back.
    fn succeeded(&self, ip: std::net::IpAddr) {
        if let Some(e) = self.0.lock().get_mut(&Self::key(ip)) {
            e.0 = e.0.saturating_sub(1);
        }
    }
}

/// `GET /ciba/devices`: the signed-in user's paired devices, a button to pair another and
/// one to remove each.
pub(super) fn devices_page(app: &App, r: &Req) -> Resp {
    let now = now();
    let Some((s, cookie)) = signed_in(app, r, now) else {
        return login_form(app, None, StatusCode::OK);
    };
    let users = LocalUsers(app.users.as_ref());
    let dir = app.directory(now);
    let ctx = app.ciba_context(&users, &dir, now);
    let Ok(list) = ciba::device::list_devices(&ctx, &s.subject) else {
        return wire::unavailable();
    };
    let items: Vec<pages::DeviceItem> = list
        .into_iter()
        .map(|d| pages::DeviceItem {
            csrf: app.sessions.csrf("devices", &d.device_id, &cookie),
            device_id: d.device_id,
            name: d.name,
            created_at: d.created_at,
        })
        .collect();
    let pair_csrf = app.sessions.csrf("devices", "pair", &cookie);
    wire::html(StatusCode::OK, pages::devices(&items, &pair_csrf))
}

/// `POST /ciba/devices/pair` and `/ciba/devices/remove`: the page's two forms.
pub(super) fn devices_submit(app: &App, r: &Req, pair: bool) -> Resp {
    let now = now();
    let Some((s, cookie)) = signed_in(app, r, now) else {
        return login_form(app, None, StatusCode::UNAUTHORIZED);
    };
    let Ok(f) = r.form() else {
        return error_page(StatusCode::BAD_REQUEST, "The request is malformed.");
    };
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    let target = if pair { "pair" } else { get("device") };
    if !app
        .sessions
        .check_csrf("devices", target, &cookie, get("csrf"))
    {
        return error_page(
            StatusCode::FORBIDDEN,
            "The form expired or did not come from this site. Open the page again.",
        );
    }
    let users = LocalUsers(app.users.as_ref());
    let dir = app.directory(now);
    let ctx = app.ciba_context(&users, &dir, now);
    if pair {
        return match ciba::device::start_pairing(&ctx, &s.subject) {
            Ok(code) => wire::html(StatusCode::OK, pages::pairing_code(code.expose())),
            Err(_) => wire::unavailable(),
        };
    }
    match ciba::device::remove_device(&ctx, &s.subject, target) {
        Ok(()) => wire::see_other("/ciba/devices"),
        Err(ciba::device::DeviceError::Unavailable) => wire::unavailable(),
        Err(_) => error_page(StatusCode::NOT_FOUND, "No such device."),
    }
}

/// `POST /device/pair` (JSON `{"code", "jwk", "name"}`): the device completes pairing
/// with the code its user read on the devices page; `201 {"device_id"}`.
pub(super) fn device_pair(app: &App, conn: &Conn, r: &Req) -> Resp {
    let now = now();
    let ip = conn.remote.ip();
    if !app.pairing.admit(ip, now.secs()) {
        return wire::error(heartgate_core::error::WireError::new(
            429,
            "slow_down",
            "too many pairing attempts",
        ));
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Pair {
        code: String,
        jwk: serde_json::Value,
        name: String,
    }
    let Ok(p) = serde_json::from_slice::<Pair>(&r.body) else {
        return wire::invalid_request("a JSON object with code, jwk and name");
    };
    let jwk = p.jwk.to_string();
    let users = LocalUsers(app.users.as_ref());
    let dir = app.directory(now);
    let ctx = app.ciba_context(&users, &dir, now);
    match ciba::device::complete_pairing(&ctx, &p.code, jwk.as_bytes(), &p.name) {
        Ok(device_id) => {
            app.pairing.succeeded(ip);
            wire::json(
                StatusCode::CREATED,
                &serde_json::json!({"device_id": device_id}),
            )
        }
        Err(e) => wire::flow_error(&e),
    }
}

/// The device JWT of a device API call: `Authorization: Bearer <jwt>`.
fn device_jwt(r: &Req) -> Option<&str> {
    r.bearer()
}

/// `GET /device/requests`: the requests the device's user may decide.
pub(super) fn device_requests(app: &App, r: &Req) -> Resp {
    let now = now();
    let users = LocalUsers(app.users.as_ref());
    let dir = app.directory(now);
    let ctx = app.ciba_context(&users, &dir, now);
    let Some(jwt) = device_jwt(r) else {
        return wire::flow_error(&ciba::device::DeviceError::InvalidToken("missing"));
    };
    let device = match ciba::device::authenticate_device(&ctx, jwt) {
        Ok(d) => d,
        Err(e) => return wire::flow_error(&e),
    };
    let pending = match ciba::pending_for_user(&ctx, device.user_id()) {
        Ok(p) => p,
        Err(e) => return wire::flow_error(&e),
    };
    let list: Vec<serde_json::Value> = pending
        .iter()
        .map(|p| {
            serde_json::json!({
                "request_ref": p.request_ref.to_b64(),
                "client_id": p.client_id,
                "client_name": p.client_name,
                "scope": p.scope,
                "acr_values": p.acr_values,
                "binding_message": p.binding_message,
                "created_at": p.created_at,
                "expires_at": p.expires_at,
            })
        })
        .collect();
    wire::json(StatusCode::OK, &serde_json::json!({"requests": list}))
}

/// `POST /device/decision` with `Authorization: Bearer <decision JWT>` (claims
/// `request_ref`, `approve`, `binding_message_hash`).
pub(super) fn device_decision(app: &App, r: &Req) -> Resp {
    let now = now();
    let users = LocalUsers(app.users.as_ref());
    let dir = app.directory(now);
    let ctx = app.ciba_context(&users, &dir, now);
    let Some(jwt) = device_jwt(r) else {
        return wire::flow_error(&ciba::device::DeviceError::InvalidToken("missing"));
    };
    match ciba::device::decide_with_device(&ctx, jwt) {
        Ok(decided) => {
            notify(app, &decided, &users, &dir, now);
            let d = if decided.decision == Decision::Approve {
                "approved"
            } else {
                "denied"
            };
            wire::json(StatusCode::OK, &serde_json::json!({"decision": d}))
        }
        Err(e) => wire::flow_error(&e),
    }
}

/// How often undecided requests past their expiry are marked expired (audited, and push
/// clients told `expired_token`).
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Request records read per sweep.
const SWEEP_LIMIT: usize = 10_000;

/// The expiry sweeper, for the life of the server.
pub fn spawn_sweeper(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tick.tick().await;
            let a = app.clone();
            let swept = tokio::task::spawn_blocking(move || {
                let now = now();
                let users = LocalUsers(a.users.as_ref());
                let dir = a.directory(now);
                let ctx = a.ciba_context(&users, &dir, now);
                ciba::expire_due(&ctx, SWEEP_LIMIT).map(|n| (n, now))
            })
            .await;
            match swept {
                Ok(Ok((notifications, now))) => {
                    for n in notifications {
                        spawn_notification(app.outbound.clone(), app.audit.clone(), n, None, now);
                    }
                }
                Ok(Err(_)) => tracing::warn!("CIBA expiry sweep failed (store unavailable)"),
                Err(_) => tracing::warn!("CIBA expiry sweep task failed"),
            }
        }
    })
}
