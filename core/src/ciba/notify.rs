//! What the server sends to ping and push clients (CIBA Core §10.2, §10.3), as data.
//!
//! - Ping: `{"auth_req_id": ...}`; the client then fetches the tokens at the token
//!   endpoint. Sent for approvals and denials alike (the fetch tells which).
//! - Push: the full token response plus `auth_req_id` (the ID token carries the
//!   `urn:openid:params:jwt:claim:auth_req_id`, `at_hash` and `rt_hash` claims), or an
//!   error payload `{"error": "access_denied" | "expired_token", "auth_req_id": ...}`.
//!
//! Every notification is a POST of `body` as `application/json` to `endpoint` with
//! `Authorization: Bearer <bearer>` (the client's `client_notification_token`). The
//! server sends it with its outbound guard: resolved address re-checked (B14), no
//! redirects followed, bounded time and body, no retry after 401/403 (B15).

use serde_json::{Map, Value};

use super::{CibaUsers, Decided, Decision, NotificationTarget};
use crate::client::{ClientDirectory, DeliveryMode};
use crate::grant::{GrantContext, GrantError, TokenResponse};
use crate::token::SecretToken;

/// One notification to POST.
pub struct Notification {
    /// The client's `backchannel_client_notification_endpoint`.
    pub endpoint: String,
    /// The bearer token for the `Authorization` header.
    pub bearer: SecretToken,
    /// The JSON body (for push, it holds tokens: never log it).
    pub body: String,
}

impl std::fmt::Debug for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notification")
            .field("endpoint", &self.endpoint)
            .field("bearer", &self.bearer)
            .field("body", &"[redacted]")
            .finish()
    }
}

impl Notification {
    fn with_body(t: &NotificationTarget, body: Map<String, Value>) -> Self {
        Notification {
            endpoint: t.endpoint.clone(),
            bearer: SecretToken::new(t.token.clone()),
            body: Value::Object(body).to_string(),
        }
    }

    /// Ping (§10.2).
    pub(crate) fn ping(t: &NotificationTarget) -> Self {
        let mut o = Map::new();
        o.insert("auth_req_id".into(), t.auth_req_id.clone().into());
        Self::with_body(t, o)
    }

    /// Push error (§10.3.1.2).
    pub(crate) fn error(t: &NotificationTarget, code: &'static str) -> Self {
        let mut o = Map::new();
        o.insert("error".into(), code.into());
        o.insert("auth_req_id".into(), t.auth_req_id.clone().into());
        Self::with_body(t, o)
    }

    /// Push success (§10.3.1).
    pub(crate) fn tokens(t: &NotificationTarget, r: &TokenResponse) -> Self {
        let mut o = match r.to_json() {
            Value::Object(o) => o,
            _ => Map::new(),
        };
        o.insert("auth_req_id".into(), t.auth_req_id.clone().into());
        Self::with_body(t, o)
    }
}

impl Decided {
    /// What to send the client now: nothing for poll clients; a ping for ping clients;
    /// for push clients the error, or the tokens — issued here, through the same
    /// one-time redemption as a poll, so they exist at most once (B5). A push client's
    /// user locked since approving gets `access_denied` (B17).
    ///
    /// Call it once per decision, after [`super::decide`] succeeded.
    pub fn notification(
        &self,
        users: &dyn CibaUsers,
        directory: &dyn ClientDirectory,
        ctx: &GrantContext<'_>,
    ) -> Result<Option<Notification>, GrantError> {
        let Some(t) = &self.target else {
            return Ok(None);
        };
        match (self.mode, self.decision) {
            (DeliveryMode::Poll, _) => Ok(None),
            (DeliveryMode::Ping, _) => Ok(Some(Notification::ping(t))),
            (DeliveryMode::Push, Decision::Deny) => {
                Ok(Some(Notification::error(t, "access_denied")))
            }
            (DeliveryMode::Push, Decision::Approve) => {
                // A client deleted since the request gets nothing.
                let client = directory
                    .client(&self.client_id)
                    .ok_or(GrantError::UnauthorizedClient)?;
                match crate::grant::ciba_push(&client, &t.auth_req_id, users, ctx) {
                    Ok(r) => Ok(Some(Notification::tokens(t, &r))),
                    Err(GrantError::AccessDenied) => {
                        Ok(Some(Notification::error(t, "access_denied")))
                    }
                    Err(GrantError::ExpiredToken) => {
                        Ok(Some(Notification::error(t, "expired_token")))
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }
}
