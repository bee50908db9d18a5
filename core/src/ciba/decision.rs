//! The user's side of a CIBA request: what is pending for a user, and their decision
//! (THREATS B7, B8, B17).
//!
//! A decision names the request by its [`RequestRef`], comes from the request's own user
//! (anyone else: [`DecisionError::Forbidden`], whatever the request's state), carries the
//! SHA-256 of the binding message the user was shown (another message, or none where
//! there was one: [`DecisionError::BindingMessageMismatch`]), and moves the record from
//! Pending by compare-and-swap, so that of an approval and a denial racing, or two
//! approvals, exactly one wins and the others get [`DecisionError::AlreadyDecided`]
//! (409). A poll that updated the record in between is not a decision: the swap is
//! retried on the fresh record.

use super::{
    load, user_index_key, user_index_prefix, CibaContext, CibaRecord, CibaState, Notification,
    NotificationTarget, PollState, RequestRef, UserStatus, MAX_CAS_ATTEMPTS,
};
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::client::DeliveryMode;
use crate::error::{ToWire, WireError};
use crate::store::{Namespace, Swapped};

/// Most pending requests listed for one user.
pub const MAX_PENDING_LISTED: usize = 50;

/// What the user decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Approve: the client may get tokens.
    Approve,
    /// Deny: the client gets `access_denied` (B6).
    Deny,
}

/// Why a decision (or a look at a request) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecisionError {
    /// No such request (or its record is gone) → 404.
    #[error("not found")]
    NotFound,
    /// Not the request's user, or a user who may not approve now (B7, B17) → 403.
    #[error("forbidden")]
    Forbidden,
    /// The request was already decided (the first decision won, B7) → 409.
    #[error("already decided")]
    AlreadyDecided,
    /// The request expired before the decision → 400 `expired_token`.
    #[error("expired")]
    Expired,
    /// The decision is for another binding message than the request's (B8) → 400.
    #[error("binding message mismatch")]
    BindingMessageMismatch,
    /// The store or the user directory failed → 503.
    #[error("unavailable")]
    Unavailable,
}

impl DecisionError {
    fn reason(self) -> &'static str {
        match self {
            DecisionError::NotFound => "not_found",
            DecisionError::Forbidden => "forbidden",
            DecisionError::AlreadyDecided => "already_decided",
            DecisionError::Expired => "expired_token",
            DecisionError::BindingMessageMismatch => "invalid_binding_message",
            DecisionError::Unavailable => "temporarily_unavailable",
        }
    }
}

impl ToWire for DecisionError {
    /// heartgate's own device API (no RFC defines it): RFC 6749-style codes where one
    /// fits, plain HTTP meanings otherwise.
    fn to_wire(&self) -> WireError {
        match self {
            DecisionError::NotFound => WireError::bare(404, "not_found"),
            DecisionError::Forbidden => WireError::bare(403, "access_denied"),
            DecisionError::AlreadyDecided => WireError::new(
                409,
                "already_decided",
                "the request was already approved or denied",
            ),
            DecisionError::Expired => WireError::bare(400, "expired_token"),
            DecisionError::BindingMessageMismatch => WireError::new(
                400,
                "invalid_binding_message",
                "the decision is not for this binding message",
            ),
            DecisionError::Unavailable => WireError::UNAVAILABLE,
        }
    }
}

/// A decision that was recorded. [`Decided::notification`] says what to tell a ping or
/// push client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// The request.
    pub request_ref: RequestRef,
    /// What was decided.
    pub decision: Decision,
    /// The request's client.
    pub client_id: String,
    /// The client's delivery mode.
    pub mode: DeliveryMode,
    pub(crate) target: Option<NotificationTarget>,
}

/// A request a user may decide, as their device or the approval page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRequest {
    /// What the decision names.
    pub request_ref: RequestRef,
    /// The asking client.
    pub client_id: String,
    /// Its registered name, if any (escape it when rendering).
    pub client_name: Option<String>,
    /// Requested scopes.
    pub scope: String,
    /// Requested authentication context classes.
    pub acr_values: Option<String>,
    /// The binding message to show (B8: plain ASCII by construction).
    pub binding_message: Option<String>,
    /// When the request was made.
    pub created_at: i64,
    /// When it expires.
    pub expires_at: i64,
}

/// Record the decision of `user_id` on a request. `binding_message_hash` is
/// [`super::binding_message_hash`] of the message the user was shown, `None` when the
/// request has none.
pub fn decide(
    ctx: &CibaContext<'_>,
    request: &RequestRef,
    user_id: &str,
    decision: Decision,
    binding_message_hash: Option<&str>,
) -> Result<Decided, DecisionError> {
    decide_by(ctx, request, user_id, decision, binding_message_hash, None)
}

/// [`decide`], recording which device acted (THREATS B7: the audit says by which device).
pub(crate) fn decide_by(
    ctx: &CibaContext<'_>,
    request: &RequestRef,
    user_id: &str,
    decision: Decision,
    binding_message_hash: Option<&str>,
    device_id: Option<&str>,
) -> Result<Decided, DecisionError> {
    let r = decide_inner(ctx, request, user_id, decision, binding_message_hash);
    let (outcome, reason) = match &r {
        Ok(d) if d.decision == Decision::Approve => (Outcome::Success, "approved"),
        Ok(_) => (Outcome::Success, "denied"),
        Err(e) => (Outcome::Failure, e.reason()),
    };
    let mut e =
        AuditEvent::new(ctx.now, EventKind::Ciba, outcome, reason).token_ref(request.audit_ref());
    if let Ok(d) = &r {
        e = e.client(d.client_id.clone());
    }
    if let Some(s) = ctx.subject_ref(Some(user_id)) {
        e = e.subject_ref(s);
    }
    if let Some(d) = device_id {
        e = e.device(d);
    }
    crate::audit::settle(ctx.audit, e, r, || DecisionError::Unavailable)
}

fn decide_inner(
    ctx: &CibaContext<'_>,
    request: &RequestRef,
    user_id: &str,
    decision: Decision,
    binding_message_hash: Option<&str>,
) -> Result<Decided, DecisionError> {
    let now = ctx.now;
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (bytes, record) = load(ctx.store, request, now)
            .map_err(|_| DecisionError::Unavailable)?
            .ok_or(DecisionError::NotFound)?;
        if record.issuer != ctx.config.issuer {
            return Err(DecisionError::NotFound);
        }
        // Before anything about the request's state is revealed: is it this user's?
        if record.user_id.as_deref() != Some(user_id) {
            return Err(DecisionError::Forbidden);
        }
        match record.state {
            CibaState::Pending => {}
            CibaState::Expired => return Err(DecisionError::Expired),
            _ => return Err(DecisionError::AlreadyDecided),
        }
        if now.secs() >= record.expires_at {
            return Err(DecisionError::Expired);
        }
        if !record.binding_matches(binding_message_hash) {
            return Err(DecisionError::BindingMessageMismatch);
        }
        // B17: a user locked since the request cannot approve (denying stays possible).
        if decision == Decision::Approve {
            let status = ctx
                .users
                .status(user_id)
                .map_err(|_| DecisionError::Unavailable)?;
            if status != UserStatus::Active {
                return Err(DecisionError::Forbidden);
            }
        }
        let mut next = record.clone();
        next.state = match decision {
            Decision::Approve => CibaState::Approved { at: now.secs() },
            Decision::Deny => CibaState::Denied { at: now.secs() },
        };
        let new = next.to_bytes().map_err(|_| DecisionError::Unavailable)?;
        let swapped = ctx
            .store
            .compare_and_swap(
                Namespace::Ciba,
                &request.store_key(),
                &bytes,
                Some((&new, next.store_until())),
                now,
            )
            .map_err(|_| DecisionError::Unavailable)?;
        match swapped {
            // Re-read: another decision (→ AlreadyDecided), a redemption or an expiry
            // came first.
            Swapped::Conflict => continue,
            Swapped::Done => {
                // Decided requests leave the user's list (best effort: the listing also
                // filters on state).
                let _ = ctx
                    .store
                    .delete(Namespace::Ciba, &user_index_key(user_id, request));
                return Ok(Decided {
                    request_ref: *request,
                    decision,
                    client_id: record.client_id,
                    mode: record.mode,
                    target: record.notification,
                });
            }
        }
    }
    Err(DecisionError::Unavailable)
}

/// The requests `user_id` may decide now, oldest first by key order (at most
/// [`MAX_PENDING_LISTED`]).
pub fn pending_for_user(
    ctx: &CibaContext<'_>,
    user_id: &str,
) -> Result<Vec<PendingRequest>, DecisionError> {
    let entries = ctx
        .store
        .scan_prefix(
            Namespace::Ciba,
            &user_index_prefix(user_id),
            MAX_PENDING_LISTED,
            ctx.now,
        )
        .map_err(|_| DecisionError::Unavailable)?;
    let mut out = Vec::with_capacity(entries.len());
    for (key, _) in entries {
        let Some(Ok(hash)) = key.get(33..).map(<[u8; 32]>::try_from) else {
            continue;
        };
        let r = RequestRef(hash);
        let Some((_, rec)) =
            load(ctx.store, &r, ctx.now).map_err(|_| DecisionError::Unavailable)?
        else {
            continue;
        };
        let live = rec.state == CibaState::Pending && ctx.now.secs() < rec.expires_at;
        if !live || rec.user_id.as_deref() != Some(user_id) || rec.issuer != ctx.config.issuer {
            continue;
        }
        let client_name = ctx
            .directory
            .client(&rec.client_id)
            .and_then(|c| c.metadata().client_name.clone());
        out.push(PendingRequest {
            request_ref: r,
            client_id: rec.client_id,
            client_name,
            scope: rec.scope,
            acr_values: rec.acr_values,
            binding_message: rec.binding_message,
            created_at: rec.created_at,
            expires_at: rec.expires_at,
        });
    }
    out.sort_by_key(|p| p.created_at);
    Ok(out)
}

/// The stored record of a request (for the server's pages and for tests), `None` when
/// unknown or gone.
pub fn lookup(
    ctx: &CibaContext<'_>,
    request: &RequestRef,
) -> Result<Option<CibaRecord>, DecisionError> {
    Ok(load(ctx.store, request, ctx.now)
        .map_err(|_| DecisionError::Unavailable)?
        .map(|(_, rec)| rec))
}

/// The polling bookkeeping of a request (B3), `None` before its first poll or once gone.
pub fn poll_state(
    ctx: &CibaContext<'_>,
    request: &RequestRef,
) -> Result<Option<PollState>, DecisionError> {
    Ok(ctx
        .store
        .get(Namespace::Ciba, &request.poll_key(), ctx.now)
        .map_err(|_| DecisionError::Unavailable)?
        .and_then(|b| PollState::from_bytes(&b)))
}

/// [`expire`] every undecided request past its expiry, at most `limit` records read:
/// the server's sweeper, so that expiry is audited and push clients are told
/// `expired_token` (CIBA §10.3.1.2). The notifications to send.
pub fn expire_due(ctx: &CibaContext<'_>, limit: usize) -> Result<Vec<Notification>, DecisionError> {
    let entries = ctx
        .store
        .scan_prefix(Namespace::Ciba, &[super::KEY_REQUEST], limit, ctx.now)
        .map_err(|_| DecisionError::Unavailable)?;
    let mut out = Vec::new();
    for (key, value) in entries {
        let Some(Ok(hash)) = key.get(1..).map(<[u8; 32]>::try_from) else {
            continue;
        };
        let Some(record) = CibaRecord::from_bytes(&value) else {
            continue;
        };
        if record.state != CibaState::Pending
            || ctx.now.secs() < record.expires_at
            || record.issuer != ctx.config.issuer
        {
            continue;
        }
        if let Some(n) = expire(ctx, &RequestRef(hash))? {
            out.push(n);
        }
    }
    Ok(out)
}

/// Mark an undecided request past its expiry as Expired, and return the `expired_token`
/// notification a push client must be sent (CIBA §10.3.1.2). The server calls it when a
/// request it started expires; for poll and ping clients it returns `None` (they learn it
/// by polling). Idempotent: a decided or already expired request gives `None`.
pub fn expire(
    ctx: &CibaContext<'_>,
    request: &RequestRef,
) -> Result<Option<Notification>, DecisionError> {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let Some((bytes, record)) =
            load(ctx.store, request, ctx.now).map_err(|_| DecisionError::Unavailable)?
        else {
            return Ok(None);
        };
        if record.state != CibaState::Pending || ctx.now.secs() < record.expires_at {
            return Ok(None);
        }
        let mut next = record.clone();
        next.state = CibaState::Expired;
        let new = next.to_bytes().map_err(|_| DecisionError::Unavailable)?;
        match ctx
            .store
            .compare_and_swap(
                Namespace::Ciba,
                &request.store_key(),
                &bytes,
                Some((&new, next.store_until())),
                ctx.now,
            )
            .map_err(|_| DecisionError::Unavailable)?
        {
            Swapped::Conflict => continue,
            Swapped::Done => {
                ctx.audit.record(
                    AuditEvent::new(ctx.now, EventKind::Ciba, Outcome::Failure, "expired_token")
                        .client(record.client_id.clone())
                        .token_ref(request.audit_ref()),
                );
                return Ok(match (record.mode, &record.notification) {
                    (DeliveryMode::Push, Some(t)) => Some(Notification::error(t, "expired_token")),
                    _ => None,
                });
            }
        }
    }
    Err(DecisionError::Unavailable)
}
