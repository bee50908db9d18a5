//! The token endpoint's half of CIBA (CIBA Core §10.1, §11): one poll of an
//! `auth_req_id`, or the server redeeming it for a push delivery (§10.3).
//!
//! Order of the checks: unknown or another client's id → `invalid_grant` with nothing
//! written (B1, B2); a push client polling → `unauthorized_client` (§11); already redeemed
//! → reuse (B5); past expiry → `expired_token` (B4); denied → `access_denied` (B6);
//! pending → `slow_down` if polled sooner than the interval (which grows by 5 s and is
//! written to the store next to the record, so it holds on every node, B3), else
//! `authorization_pending`;
//! approved → the user is re-checked (B17) and the record moves to Redeemed by
//! compare-and-swap: of concurrent redeemers exactly one gets the record.

use super::{
    load, CibaRecord, CibaState, PollState, RequestRef, UserStatus, MAX_AUTH_REQ_ID_LEN,
    MAX_CAS_ATTEMPTS, MAX_INTERVAL, SLOW_DOWN_STEP,
};
use crate::client::DeliveryMode;
use crate::clock::UnixTime;
use crate::error::{ToWire, WireError};
use crate::grant::GrantError;
use crate::store::{Inserted, Namespace, Store, Swapped};

/// Why a CIBA token request got no tokens: the CIBA §11 codes at the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    /// 400 `authorization_pending`.
    #[error("authorization_pending")]
    AuthorizationPending,
    /// 400 `slow_down` (B3).
    #[error("slow_down")]
    SlowDown,
    /// 400 `expired_token` (B4).
    #[error("expired_token")]
    ExpiredToken,
    /// 400 `access_denied` (B6, B17).
    #[error("access_denied")]
    AccessDenied,
    /// 400 `unauthorized_client`: a push-mode client may not poll (§11).
    #[error("unauthorized_client")]
    UnauthorizedClient,
    /// 400 `invalid_grant`: unknown, malformed or another client's `auth_req_id` (B1, B2).
    #[error("invalid_grant ({0})")]
    InvalidGrant(&'static str),
    /// 400 `invalid_grant`: already redeemed; every token of `grant_id` must be revoked
    /// (B5).
    #[error("invalid_grant (auth_req_id reused)")]
    Reused {
        /// The grant (refresh family) whose tokens are revoked.
        grant_id: String,
    },
    /// 503: the store or the user directory failed.
    #[error("unavailable")]
    Unavailable,
}

impl ToWire for PollError {
    fn to_wire(&self) -> WireError {
        match self {
            PollError::AuthorizationPending => WireError::bare(400, "authorization_pending"),
            PollError::SlowDown => WireError::bare(400, "slow_down"),
            PollError::ExpiredToken => WireError::bare(400, "expired_token"),
            PollError::AccessDenied => WireError::bare(400, "access_denied"),
            PollError::UnauthorizedClient => WireError::bare(400, "unauthorized_client"),
            PollError::InvalidGrant(_) | PollError::Reused { .. } => {
                WireError::bare(400, "invalid_grant")
            }
            PollError::Unavailable => WireError::UNAVAILABLE,
        }
    }
}

impl From<PollError> for GrantError {
    fn from(e: PollError) -> Self {
        match e {
            PollError::AuthorizationPending => GrantError::AuthorizationPending,
            PollError::SlowDown => GrantError::SlowDown,
            PollError::ExpiredToken => GrantError::ExpiredToken,
            PollError::AccessDenied => GrantError::AccessDenied,
            PollError::UnauthorizedClient => GrantError::UnauthorizedClient,
            PollError::InvalidGrant(d) => GrantError::InvalidGrant(d),
            PollError::Reused { .. } => GrantError::InvalidGrant("auth_req_id reused"),
            PollError::Unavailable => GrantError::Unavailable,
        }
    }
}

/// Who is redeeming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Redeemer {
    /// The client, at the token endpoint (poll and ping clients).
    Poll,
    /// The server, delivering a push (push clients only).
    Push,
}

fn unavailable<E>(_: E) -> PollError {
    PollError::Unavailable
}

/// One poll or push redemption of `auth_req_id` by `client_id` of `issuer`: the record,
/// now Redeemed, when tokens are to be issued.
pub(crate) fn redeem(
    store: &dyn Store,
    users: &dyn super::CibaUsers,
    issuer: &str,
    client_id: &str,
    auth_req_id: &str,
    by: Redeemer,
    now: UnixTime,
) -> Result<CibaRecord, PollError> {
    if auth_req_id.is_empty() || auth_req_id.len() > MAX_AUTH_REQ_ID_LEN {
        return Err(PollError::InvalidGrant("malformed auth_req_id"));
    }
    let r = RequestRef::of(auth_req_id);
    let key = r.store_key();
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (bytes, record) = load(store, &r, now)
            .map_err(unavailable)?
            .ok_or(PollError::InvalidGrant("unknown auth_req_id"))?;
        // Checks that change nothing (B2: another client's attempt leaves it intact).
        if record.client_id != client_id || record.issuer != issuer {
            return Err(PollError::InvalidGrant("auth_req_id of another client"));
        }
        match (by, record.mode) {
            (Redeemer::Poll, DeliveryMode::Push) => return Err(PollError::UnauthorizedClient),
            (Redeemer::Push, DeliveryMode::Poll | DeliveryMode::Ping) => {
                return Err(PollError::UnauthorizedClient)
            }
            _ => {}
        }
        let swap = |next: &CibaRecord| -> Result<Swapped, PollError> {
            let new = next.to_bytes().map_err(unavailable)?;
            store
                .compare_and_swap(
                    Namespace::Ciba,
                    &key,
                    &bytes,
                    Some((&new, next.store_until())),
                    now,
                )
                .map_err(unavailable)
        };
        match record.state {
            CibaState::Redeemed { .. } => {
                return Err(PollError::Reused {
                    grant_id: record.grant_id,
                })
            }
            _ if now.secs() >= record.expires_at => return Err(PollError::ExpiredToken),
            CibaState::Expired => return Err(PollError::ExpiredToken),
            CibaState::Denied { .. } => return Err(PollError::AccessDenied),
            CibaState::Pending => return Err(pending_poll(store, &r, &record, now)?),
            CibaState::Approved { .. } => {
                // B17: the user may have been locked since approving.
                let active = match &record.user_id {
                    Some(u) => users.status(u).map_err(unavailable)? == UserStatus::Active,
                    None => false,
                };
                let mut next = record.clone();
                if !active {
                    next.state = CibaState::Denied { at: now.secs() };
                    // Best effort: later polls read Denied; access_denied either way.
                    let _ = swap(&next);
                    return Err(PollError::AccessDenied);
                }
                next.state = CibaState::Redeemed { at: now.secs() };
                match swap(&next)? {
                    Swapped::Done => return Ok(record),
                    // Another redemption (→ reuse) or a late decision: look again.
                    Swapped::Conflict => continue,
                }
            }
        }
    }
    Err(PollError::Unavailable)
}

/// A poll of a pending request (B3): `slow_down` when it comes sooner than the enforced
/// interval after the previous one (the interval then grows by [`SLOW_DOWN_STEP`]),
/// `authorization_pending` otherwise; either way the poll is recorded. The first poll is
/// never too soon (the interval is between polls, CIBA §7.3).
fn pending_poll(
    store: &dyn Store,
    r: &RequestRef,
    record: &CibaRecord,
    now: UnixTime,
) -> Result<PollError, PollError> {
    let key = r.poll_key();
    let until = record.store_until();
    for _ in 0..MAX_CAS_ATTEMPTS {
        let stored = store.get(Namespace::Ciba, &key, now).map_err(unavailable)?;
        let current = match &stored {
            Some(b) => PollState::from_bytes(b).ok_or(PollError::Unavailable)?,
            None => PollState {
                interval: record.interval,
                last_poll: None,
            },
        };
        let too_soon = current
            .last_poll
            .is_some_and(|t| now.secs().saturating_sub(t) < i64::from(current.interval));
        let next = PollState {
            interval: if too_soon {
                current
                    .interval
                    .saturating_add(SLOW_DOWN_STEP)
                    .min(MAX_INTERVAL)
            } else {
                current.interval
            },
            last_poll: Some(now.secs()),
        };
        let new = next.to_bytes().map_err(unavailable)?;
        let written = match &stored {
            None => {
                store
                    .insert_new(Namespace::Ciba, &key, &new, until, now)
                    .map_err(unavailable)?
                    == Inserted::New
            }
            Some(old) => {
                store
                    .compare_and_swap(Namespace::Ciba, &key, old, Some((&new, until)), now)
                    .map_err(unavailable)?
                    == Swapped::Done
            }
        };
        if written {
            return Ok(if too_soon {
                PollError::SlowDown
            } else {
                PollError::AuthorizationPending
            });
        }
        // A parallel poll of the same request won the write: this one was too soon.
    }
    Ok(PollError::SlowDown)
}
