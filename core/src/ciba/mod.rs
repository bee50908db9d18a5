//! Client-Initiated Backchannel Authentication (OpenID CIBA Core 1.0, with the FAPI-CIBA
//! restrictions): the core half, sans I/O.
//!
//! The flow, as an explicit state machine stored under [`Namespace::Ciba`]:
//!
//! ```text
//!   start ──► Pending ──decide──► Approved ──redeem──► Redeemed
//!                │  └───decide──► Denied
//!                └────expire────► Expired     (and any state past `expires_at` is expired)
//! ```
//!
//! - [`start`] (CIBA §7): the backchannel authentication request of an authenticated
//!   client with the CIBA grant (B18); optional signed `request` (§7.1.1), required under
//!   FAPI (B13); exactly one hint (B9); `id_token_hint` verified against this issuer's
//!   keys; `login_hint` resolved by the caller's [`CibaUsers`] (B10); `binding_message`
//!   (B8), `user_code`, `requested_expiry` (B12) and `client_notification_token` (B16)
//!   checked. It stores one CBOR record under SHA-256 of a fresh 256-bit `auth_req_id`
//!   (B1) plus a per-user index entry, and answers `auth_req_id`, `expires_in`,
//!   `interval`. A refused request stores nothing.
//! - [`decide`] (the user's approval or denial, usually through [`device`]): only the
//!   target user, only with the SHA-256 of the binding message the user was shown, and
//!   only once: Pending → Approved | Denied by compare-and-swap, so the first decision
//!   wins (B7). [`pending_for_user`] lists what a user may decide.
//! - The token endpoint's `urn:openid:params:grant-type:ciba` ([`crate::grant::ciba`],
//!   §10-§11): `authorization_pending`, `slow_down` with the interval grown by 5 s and
//!   stored with the request (B3), `expired_token` (B4), `access_denied` (B6, and B17: a
//!   user no longer active when the tokens are asked for), `invalid_grant` for an unknown
//!   id or another client's (B1, B2: the owner's request is untouched), and exactly one
//!   redemption (B5: a later one revokes every token issued from the request).
//! - [`Decided::notification`]: what the server sends to a ping or push client (§10.2,
//!   §10.3), as plain data ([`Notification`]).
//!
//! What it never does: send anything (notifications are values; the server posts them
//! with its SSRF-guarded client, re-checking the resolved address, B14/B15), read the
//! clock, know how users log in (the [`CibaUsers`] trait answers), or put an
//! `auth_req_id`, a notification token or a user id into an audit event.
//!
//! Naming: the client knows a request by its `auth_req_id`; everyone else (the user's
//! device, the pages, the audit log) by its [`RequestRef`], the base64url SHA-256 of the
//! `auth_req_id`. A reference cannot be redeemed for tokens; an `auth_req_id` can only
//! by its client (B2). The `auth_req_id` itself is kept in the record only for ping and
//! push clients, because the notification must carry it (§10.2).
//!
//! NOTE: `login_hint_token` (whose format CIBA leaves to the OP) is a JWT the client
//! signs with its registered keys: `iss` = client_id, `aud` = the issuer, `sub` = the
//! user's login name, `exp` required. Past its `exp` it is `expired_login_hint_token`.
//! It says who the client means, for as long as the client vouches for it — useful when
//! the client learnt the user from its own sign-in. Covered by
//! `b11_login_hint_token_is_a_client_signed_jwt_naming_the_user` in `core/tests/ciba.rs`.

pub mod device;

mod decision;
mod notify;
mod poll;
mod request;

use ring::digest;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::audit::AuditSink;
use crate::client::{ClientDirectory, DeliveryMode};
use crate::clock::UnixTime;
use crate::jose::{b64, KeyRing};
use crate::oidc::PairwiseSubjects;
use crate::store::{Namespace, Store};

pub(crate) use decision::decide_by;
pub use decision::{
    decide, expire, expire_due, lookup, pending_for_user, poll_state, Decided, Decision,
    DecisionError, PendingRequest, MAX_PENDING_LISTED,
};
pub use notify::Notification;
pub use poll::PollError;
pub(crate) use poll::{redeem, Redeemer};
pub use request::{
    start, BackchannelError, BackchannelResponse, MAX_ACR_VALUES_LEN, MAX_LOGIN_HINT_LEN,
    MAX_NOTIFICATION_TOKEN_LEN, MAX_USER_CODE_LEN,
};

/// The CIBA grant type (CIBA §10.1).
pub const GRANT_TYPE: &str = "urn:openid:params:grant-type:ciba";
/// Default `expires_in` of a request when the client asks for none, seconds.
pub const DEFAULT_EXPIRY: u32 = 300;
/// Longest `expires_in`: a `requested_expiry` above it is capped (B12).
pub const MAX_EXPIRY: u32 = 600;
/// Default polling `interval`, seconds (CIBA §7.3: the client's default is 5).
pub const DEFAULT_INTERVAL: u32 = 5;
/// How much `slow_down` adds to the interval, seconds (B3, RFC 8628 §3.5).
pub const SLOW_DOWN_STEP: u32 = 5;
/// Largest interval `slow_down` grows to, seconds.
pub const MAX_INTERVAL: u32 = 600;
/// How long a record outlives its `expires_at`, seconds: a late poll is told
/// `expired_token` rather than `invalid_grant` (B4), and a reused `auth_req_id` is still
/// recognised and its tokens revoked (B5).
pub const RETENTION: i64 = 600;
/// Default longest `binding_message`, in characters (oidc-provider's default rule, B8).
pub const DEFAULT_BINDING_MESSAGE_MAX: usize = 20;
/// The most a deployment may raise the `binding_message` limit to.
pub const MAX_BINDING_MESSAGE_MAX: usize = 200;
/// Random bytes in an `auth_req_id` (256 bits; CIBA conformance asks ≥ 160 recommended).
pub const AUTH_REQ_ID_BYTES: usize = 32;
/// Longest `auth_req_id` looked up: longer ones are refused before hashing.
pub const MAX_AUTH_REQ_ID_LEN: usize = 128;

/// What to answer for a `login_hint` or `id_token_hint` naming no user the OP can
/// authenticate (THREATS B10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownUserPolicy {
    /// `unknown_user_id` as CIBA §13 says (the default). An authenticated client with the
    /// CIBA grant can then learn whether a hint names a user: the server rate-limits
    /// per client and every refusal is audited with the client id.
    #[default]
    Reveal,
    /// Answer as if the user existed: an `auth_req_id` that no user can approve, polled
    /// as `authorization_pending` until `expired_token`. Nothing is learned from the
    /// answer (timing aside), at the cost of a stored record per probe and of clients
    /// waiting out the expiry on a typo.
    Conceal,
}

/// Settings of the backchannel authentication endpoint.
#[derive(Debug, Clone)]
pub struct CibaConfig {
    /// The issuer identifier (`aud` of signed requests, `iss` of `id_token_hint`s).
    pub issuer: String,
    /// `expires_in` when the client sends no `requested_expiry` (capped at
    /// [`MAX_EXPIRY`]).
    pub default_expiry: u32,
    /// The polling interval given to new requests (1..=[`MAX_INTERVAL`]).
    pub interval: u32,
    /// Longest `binding_message` in characters (1..=[`MAX_BINDING_MESSAGE_MAX`]).
    pub binding_message_max: usize,
    /// Unknown users: reveal (CIBA) or conceal (B10).
    pub unknown_users: UnknownUserPolicy,
}

impl CibaConfig {
    /// The defaults: 300 s expiry, 5 s interval, 20-character binding messages,
    /// `unknown_user_id` for unknown users.
    pub fn new(issuer: impl Into<String>) -> Self {
        CibaConfig {
            issuer: issuer.into(),
            default_expiry: DEFAULT_EXPIRY,
            interval: DEFAULT_INTERVAL,
            binding_message_max: DEFAULT_BINDING_MESSAGE_MAX,
            unknown_users: UnknownUserPolicy::Reveal,
        }
    }

    fn expiry(&self) -> u32 {
        self.default_expiry.clamp(1, MAX_EXPIRY)
    }

    fn interval(&self) -> u32 {
        self.interval.clamp(1, MAX_INTERVAL)
    }

    fn binding_message_max(&self) -> usize {
        self.binding_message_max.clamp(1, MAX_BINDING_MESSAGE_MAX)
    }
}

/// Whether a user may be authenticated now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    /// Known and allowed to log in.
    Active,
    /// Known, but locked, disabled or otherwise not to be issued tokens (B17).
    Inactive,
    /// No such user.
    Unknown,
}

/// The outcome of checking a `user_code` (CIBA §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserCodeCheck {
    /// The code is the user's.
    Match,
    /// It is not (or the user has none).
    Mismatch,
}

/// The user directory could not answer: the request fails closed (503).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("user directory unavailable")]
pub struct UsersUnavailable;

/// The deployment's users, as CIBA needs them. Implemented by the caller (the server's
/// user store, an LDAP bridge...). Rate limits on `user_code` guesses belong there too.
pub trait CibaUsers: Send + Sync {
    /// The local user id a `login_hint` names, or `None` (→ `unknown_user_id`, B10).
    fn resolve_login_hint(&self, login_hint: &str) -> Result<Option<String>, UsersUnavailable>;
    /// Whether `user_id` may be authenticated now (checked at the request, at the
    /// decision and again when tokens are issued, B17).
    fn status(&self, user_id: &str) -> Result<UserStatus, UsersUnavailable>;
    /// Whether `user_code` is this user's code (CIBA §7.1). Compare in constant time.
    fn verify_user_code(
        &self,
        user_id: &str,
        user_code: &str,
    ) -> Result<UserCodeCheck, UsersUnavailable>;
}

/// Everything the CIBA calls need besides their own arguments.
pub struct CibaContext<'a> {
    /// The endpoint's settings.
    pub config: &'a CibaConfig,
    /// Where requests, indexes, devices and used `jti`s live.
    pub store: &'a dyn Store,
    /// The deployment's users.
    pub users: &'a dyn CibaUsers,
    /// Registered clients (their keys verify signed requests).
    pub directory: &'a dyn ClientDirectory,
    /// This issuer's signing keys (they verify `id_token_hint`s).
    pub keys: &'a KeyRing,
    /// Where each decision is recorded.
    pub audit: &'a dyn AuditSink,
    /// The secret behind the audit log's user pseudonyms.
    pub pairwise: Option<&'a PairwiseSubjects>,
    /// The time.
    pub now: UnixTime,
}

impl<'a> CibaContext<'a> {
    /// A context with no audit sink and no pseudonym secret.
    pub fn new(
        config: &'a CibaConfig,
        store: &'a dyn Store,
        users: &'a dyn CibaUsers,
        directory: &'a dyn ClientDirectory,
        keys: &'a KeyRing,
        now: UnixTime,
    ) -> Self {
        CibaContext {
            config,
            store,
            users,
            directory,
            keys,
            audit: &crate::audit::NoAudit,
            pairwise: None,
            now,
        }
    }

    fn subject_ref(&self, user_id: Option<&str>) -> Option<String> {
        Some(self.pairwise?.audit_ref("subject", user_id?))
    }
}

/// An `auth_req_id` (CIBA §7.3): 256 random bits, base64url. It is the client's handle
/// on its request; `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthReqId(String);

impl AuthReqId {
    /// Wrap a value received from a client.
    pub fn new(s: impl Into<String>) -> Self {
        AuthReqId(s.into())
    }

    /// The value, for the client.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The reference everyone but the client uses.
    pub fn request_ref(&self) -> RequestRef {
        RequestRef::of(&self.0)
    }
}

impl std::fmt::Debug for AuthReqId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthReqId([redacted])")
    }
}

/// How a CIBA request is named outside its client: SHA-256 of the `auth_req_id`,
/// base64url on the wire. It names the request to the user's device and in the audit
/// log; it cannot be redeemed for tokens.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestRef([u8; 32]);

impl RequestRef {
    /// The reference of an `auth_req_id`.
    pub fn of(auth_req_id: &str) -> Self {
        let d = digest::digest(&digest::SHA256, auth_req_id.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        RequestRef(out)
    }

    /// Parse the base64url form (43 characters); anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 43 {
            return None;
        }
        b64::decode_array::<32>(s).ok().map(RequestRef)
    }

    /// The base64url form.
    pub fn to_b64(&self) -> String {
        b64::encode(self.0)
    }

    /// A short prefix for the audit log's `token_ref`.
    fn audit_ref(&self) -> String {
        let mut s = self.to_b64();
        s.truncate(12);
        s
    }

    fn store_key(&self) -> [u8; 33] {
        let mut k = [0u8; 33];
        k[0] = KEY_REQUEST;
        k[1..].copy_from_slice(&self.0);
        k
    }

    fn poll_key(&self) -> [u8; 33] {
        let mut k = [0u8; 33];
        k[0] = KEY_POLL_STATE;
        k[1..].copy_from_slice(&self.0);
        k
    }
}

impl std::fmt::Debug for RequestRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestRef({}…)", self.audit_ref())
    }
}

/// Key tags inside [`Namespace::Ciba`], so that a request and an index entry can never
/// be read as one another.
const KEY_REQUEST: u8 = 0x00;
const KEY_USER_INDEX: u8 = 0x01;
const KEY_POLL_STATE: u8 = 0x02;

fn sha256(s: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, s.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The prefix of a user's index entries: tag ‖ SHA-256(user id) (no user id in keys).
fn user_index_prefix(user_id: &str) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = KEY_USER_INDEX;
    k[1..].copy_from_slice(&sha256(user_id));
    k
}

fn user_index_key(user_id: &str, r: &RequestRef) -> [u8; 65] {
    let mut k = [0u8; 65];
    k[..33].copy_from_slice(&user_index_prefix(user_id));
    k[33..].copy_from_slice(&r.0);
    k
}

/// base64url SHA-256 of a binding message: what the user's device signs to say which
/// message it showed.
pub fn binding_message_hash(binding_message: &str) -> String {
    b64::encode(sha256(binding_message))
}

/// Where and how a ping or push client is told (kept only for those modes).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationTarget {
    /// `backchannel_client_notification_endpoint` at the time of the request.
    pub endpoint: String,
    /// `client_notification_token`: the bearer the server presents (CIBA §10.2).
    pub token: String,
    /// The `auth_req_id` the notification names.
    pub auth_req_id: String,
}

impl std::fmt::Debug for NotificationTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationTarget")
            .field("endpoint", &self.endpoint)
            .field("token", &"[redacted]")
            .field("auth_req_id", &"[redacted]")
            .finish()
    }
}

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CibaState {
    /// Waiting for the user.
    Pending,
    /// The user approved at `at` (the `auth_time` of the tokens).
    Approved {
        /// When.
        at: i64,
    },
    /// The user denied at `at`, or was no longer active when tokens were asked for.
    Denied {
        /// When.
        at: i64,
    },
    /// Expired without a decision (recorded when a push client had to be told).
    Expired,
    /// Tokens were issued at `at`; every token carries the record's `grant_id` (B5).
    Redeemed {
        /// When.
        at: i64,
    },
}

/// What is stored for a CIBA request (version byte + CBOR), under its [`RequestRef`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CibaRecord {
    /// The issuer the request was made to.
    pub issuer: String,
    /// The client it belongs to (B2).
    pub client_id: String,
    /// The user to authenticate; `None` for a concealed unknown user (B10), whom nobody
    /// can approve.
    pub user_id: Option<String>,
    /// Requested scopes, canonical; always with `openid`.
    pub scope: String,
    /// `acr_values` as requested.
    pub acr_values: Option<String>,
    /// The binding message shown on both devices (B8).
    pub binding_message: Option<String>,
    /// The client's delivery mode at the time of the request.
    pub mode: DeliveryMode,
    /// Ping and push only.
    pub notification: Option<NotificationTarget>,
    /// When the request was accepted.
    pub created_at: i64,
    /// When it expires (`expires_in` after `created_at`).
    pub expires_at: i64,
    /// The polling interval the client was given; the enforced one is in the request's
    /// [`PollState`].
    pub interval: u32,
    /// The state.
    pub state: CibaState,
    /// The grant (refresh family) id the tokens will carry.
    pub grant_id: String,
}

impl CibaRecord {
    fn to_bytes(&self) -> Result<Vec<u8>, crate::token::TokenError> {
        crate::token::record::encode(self)
    }

    /// Decode a stored record; anything else is "missing" (S12).
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        crate::token::record::decode(b).ok()
    }

    /// The store keeps the record this long: [`RETENTION`] past its expiry.
    fn store_until(&self) -> UnixTime {
        UnixTime(self.expires_at.saturating_add(RETENTION))
    }

    /// Whether `presented` is the base64url SHA-256 of this request's binding message
    /// (`None` for none). Compared in constant time.
    fn binding_matches(&self, presented: Option<&str>) -> bool {
        match (&self.binding_message, presented) {
            (None, None) => true,
            (Some(m), Some(p)) => binding_message_hash(m)
                .as_bytes()
                .ct_eq(p.as_bytes())
                .into(),
            _ => false,
        }
    }
}

/// The polling bookkeeping of a request (B3): the enforced interval, grown by 5 s on
/// each `slow_down`, and the time of the last poll. Stored next to the request record
/// under its own key, for as long as the record.
///
/// NOTE: kept apart from [`CibaRecord`] (the brief put `interval` and `last_poll` in the
/// record) so that polls never contend with decisions: otherwise a client polling
/// non-stop could make every compare-and-swap of the user's decision fail. Covered by
/// `b7_decisions_racing_with_polls_are_not_lost` in `core/tests/ciba.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollState {
    /// The enforced interval, seconds.
    pub interval: u32,
    /// When the client last polled (Unix seconds).
    pub last_poll: Option<i64>,
}

impl PollState {
    fn to_bytes(self) -> Result<Vec<u8>, crate::token::TokenError> {
        crate::token::record::encode(&self)
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        crate::token::record::decode(b).ok()
    }
}

/// Read a request record: the stored bytes (for compare-and-swap) and the record.
fn load(
    store: &dyn Store,
    r: &RequestRef,
    now: UnixTime,
) -> Result<Option<(Vec<u8>, CibaRecord)>, crate::store::StoreError> {
    Ok(store
        .get(Namespace::Ciba, &r.store_key(), now)?
        .and_then(|b| CibaRecord::from_bytes(&b).map(|rec| (b, rec))))
}

/// How many times a compare-and-swap is retried when another writer (a poll, a
/// decision) changed the record in between.
const MAX_CAS_ATTEMPTS: usize = 16;
