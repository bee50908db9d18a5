//! CIBA authentication devices (the user's phone): pairing, listing, removal, and the
//! device's signed requests, decisions included.
//!
//! Pairing: a signed-in user asks for a pairing code ([`start_pairing`]: 8 characters
//! from an alphabet without look-alikes, ~40 bits, one-time, 5 minutes, stored only as
//! its SHA-256); the device sends it with its P-256 public key and a name
//! ([`complete_pairing`]), which consumes the code atomically and returns a fresh
//! device id. Only public EC P-256 keys are accepted: a JWK with private members, RSA,
//! OKP or another curve is refused. The server must rate-limit [`complete_pairing`] (the
//! code is short so a person can type it).
//!
//! Device requests: a compact JWS, ES256 only, header `kid` = device id, claims
//! `iss` = device id, `aud` = the issuer, `iat`, `exp` at most
//! [`MAX_DEVICE_JWT_LIFETIME`] after `iat`, and a `jti` used once
//! ([`authenticate_device`]; the `jti` is recorded only after every other check passed).
//! A decision ([`decide_with_device`]) carries `request_ref` (the [`RequestRef`] of the
//! request, as listed by [`super::pending_for_user`]), `approve` (a boolean) and
//! `binding_message_hash` (base64url SHA-256 of the binding message shown; absent when
//! the request has none).
//!
//! NOTE: the decision names the request by `request_ref`, not by the `auth_req_id` the
//! brief suggested: the device never holds a value the client redeems for tokens, and
//! no `auth_req_id` has to be kept for poll clients. Covered by
//! `device_decision_jwt_signed_by_the_device_key_approves` in `core/tests/ciba.rs`.
//!
//! Store layout in [`Namespace::Device`]: `0x00 ‖ SHA-256(code)` → pairing;
//! `0x01 ‖ device id` → device; `0x02 ‖ SHA-256(user id) ‖ device id` → the user's
//! index entry. Devices do not expire.

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::{
    decide_by, sha256, CibaContext, Decided, Decision, DecisionError, RequestRef, UserStatus,
};
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::clock::UnixTime;
use crate::error::{ToWire, WireError};
use crate::jose::{
    check_typ, parse_compact, parse_jwk, validate_claims, Algorithm, AlgorithmSet, AudienceRule,
    Claims, JwkSetOptions, KeyError, TypRule, Validation, VerifyingKey, ACCESS_TOKEN_MAX_LEN,
    DEFAULT_LEEWAY, MAX_NUMERIC_DATE,
};
use crate::store::{Inserted, Namespace};

/// Characters of a pairing code: digits and capitals without 0/O, 1/I/L.
pub const PAIRING_ALPHABET: &[u8; 31] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Length of a pairing code.
pub const PAIRING_CODE_LEN: usize = 8;
/// Lifetime of a pairing code, seconds.
pub const PAIRING_CODE_LIFETIME: i64 = 300;
/// Longest `exp - iat` of a device JWT, seconds.
pub const MAX_DEVICE_JWT_LIFETIME: u32 = 120;
/// Most devices one user may pair.
pub const MAX_DEVICES_PER_USER: usize = 10;
/// Longest device name, in characters.
pub const MAX_DEVICE_NAME_CHARS: usize = 64;
/// Longest `jti` of a device JWT.
pub const MAX_DEVICE_JTI_LEN: usize = 256;
/// Length of a device id (128 random bits, base64url).
pub const DEVICE_ID_LEN: usize = 22;

const KEY_PAIRING: u8 = 0x00;
const KEY_DEVICE: u8 = 0x01;
const KEY_USER_DEVICE: u8 = 0x02;

/// Why a device operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The pairing code is unknown, used or expired → 400 `invalid_grant`.
    #[error("invalid pairing code")]
    InvalidPairingCode,
    /// The key is not a public EC P-256 JWK → 400 `invalid_request`.
    #[error("invalid device key ({0})")]
    InvalidKey(&'static str),
    /// The device name is empty, too long or has control characters → 400.
    #[error("invalid device name")]
    InvalidName,
    /// The user already has [`MAX_DEVICES_PER_USER`] devices → 400.
    #[error("too many devices")]
    TooManyDevices,
    /// The device JWT is missing, malformed, badly signed, expired, replayed, or of an
    /// unknown device → 401 `invalid_token` (the reason goes to the audit log).
    #[error("invalid device token ({0})")]
    InvalidToken(&'static str),
    /// The user may not pair or use devices now (locked, disabled) → 403.
    #[error("forbidden")]
    Forbidden,
    /// No such device of this user → 404.
    #[error("device not found")]
    NotFound,
    /// The decision itself was refused.
    #[error(transparent)]
    Decision(#[from] DecisionError),
    /// The store, the user directory or randomness failed → 503.
    #[error("unavailable")]
    Unavailable,
}

impl DeviceError {
    fn reason(self) -> &'static str {
        match self {
            DeviceError::InvalidPairingCode => "invalid_pairing_code",
            DeviceError::InvalidKey(r) | DeviceError::InvalidToken(r) => r,
            DeviceError::InvalidName => "invalid_device_name",
            DeviceError::TooManyDevices => "too_many_devices",
            DeviceError::Forbidden => "forbidden",
            DeviceError::NotFound => "not_found",
            DeviceError::Decision(_) => "decision_refused",
            DeviceError::Unavailable => "temporarily_unavailable",
        }
    }
}

impl ToWire for DeviceError {
    /// heartgate's device API: a 401 also carries `WWW-Authenticate: Bearer
    /// error="invalid_token"` (RFC 6750 §3).
    fn to_wire(&self) -> WireError {
        match self {
            DeviceError::InvalidPairingCode => {
                WireError::new(400, "invalid_grant", "invalid or expired pairing code")
            }
            DeviceError::InvalidKey(_) => {
                WireError::new(400, "invalid_request", "a public EC P-256 key is required")
            }
            DeviceError::InvalidName => WireError::new(400, "invalid_request", "device name"),
            DeviceError::TooManyDevices => {
                WireError::new(400, "invalid_request", "too many devices")
            }
            DeviceError::InvalidToken(_) => WireError::bare(401, "invalid_token"),
            DeviceError::Forbidden => WireError::bare(403, "access_denied"),
            DeviceError::NotFound => WireError::bare(404, "not_found"),
            DeviceError::Decision(d) => d.to_wire(),
            DeviceError::Unavailable => WireError::UNAVAILABLE,
        }
    }
}

/// A one-time pairing code; `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct PairingCode(String);

impl PairingCode {
    /// The code, to show the user.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PairingCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairingCode([redacted])")
    }
}

/// A paired device, as its user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device id (the `kid` and `iss` of its JWTs).
    pub device_id: String,
    /// The name given at pairing.
    pub name: String,
    /// When it was paired.
    pub created_at: i64,
}

/// A device request that passed [`authenticate_device`]. Only this module builds one.
#[derive(Debug, Clone)]
pub struct AuthenticatedDevice {
    device_id: String,
    user_id: String,
    claims: Claims,
}

impl AuthenticatedDevice {
    /// The device.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The device's user.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The verified claims.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PairingRecord {
    user_id: String,
    expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DeviceRecord {
    user_id: String,
    name: String,
    /// The uncompressed P-256 point (65 bytes).
    public_key: Vec<u8>,
    created_at: i64,
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, DeviceError> {
    crate::token::record::encode(v).map_err(|_| DeviceError::Unavailable)
}

fn pairing_key(code: &str) -> Vec<u8> {
    let mut k = vec![KEY_PAIRING];
    k.extend_from_slice(&sha256(code));
    k
}

fn device_key(device_id: &str) -> Vec<u8> {
    let mut k = vec![KEY_DEVICE];
    k.extend_from_slice(device_id.as_bytes());
    k
}

fn user_prefix(user_id: &str) -> Vec<u8> {
    let mut k = vec![KEY_USER_DEVICE];
    k.extend_from_slice(&sha256(user_id));
    k
}

fn user_device_key(user_id: &str, device_id: &str) -> Vec<u8> {
    let mut k = user_prefix(user_id);
    k.extend_from_slice(device_id.as_bytes());
    k
}

/// Audit `r`; a success whose event cannot be written becomes `Unavailable` (fail
/// closed, THREATS S8; [`crate::audit::settle`]).
fn audit(
    ctx: &CibaContext<'_>,
    kind: EventKind,
    user: Option<&str>,
    r: Result<(), DeviceError>,
) -> Result<(), DeviceError> {
    let (outcome, reason) = match r {
        Ok(()) => (Outcome::Success, "ok"),
        Err(e) => (Outcome::Failure, e.reason()),
    };
    let mut e = AuditEvent::new(ctx.now, kind, outcome, reason);
    if let Some(s) = ctx.subject_ref(user) {
        e = e.subject_ref(s);
    }
    crate::audit::settle(ctx.audit, e, r, || DeviceError::Unavailable)
}

fn active(ctx: &CibaContext<'_>, user_id: &str) -> Result<(), DeviceError> {
    match ctx
        .users
        .status(user_id)
        .map_err(|_| DeviceError::Unavailable)?
    {
        UserStatus::Active => Ok(()),
        UserStatus::Inactive | UserStatus::Unknown => Err(DeviceError::Forbidden),
    }
}

/// A fresh pairing code for `user_id` (who has just signed in on the server's page).
pub fn start_pairing(ctx: &CibaContext<'_>, user_id: &str) -> Result<PairingCode, DeviceError> {
    let r = start_pairing_inner(ctx, user_id);
    audit(
        ctx,
        EventKind::DeviceEnrollment,
        Some(user_id),
        r.as_ref().map(|_| ()).map_err(|e| *e),
    )?;
    r
}

fn start_pairing_inner(ctx: &CibaContext<'_>, user_id: &str) -> Result<PairingCode, DeviceError> {
    active(ctx, user_id)?;
    let rng = SystemRandom::new();
    let expires_at = ctx.now.secs() + PAIRING_CODE_LIFETIME;
    let record = encode(&PairingRecord {
        user_id: user_id.to_owned(),
        expires_at,
    })?;
    // A collision with a live code is astronomically rare; a second draw settles it.
    for _ in 0..2 {
        let code = random_code(&rng)?;
        match ctx
            .store
            .insert_new(
                Namespace::Device,
                &pairing_key(&code),
                &record,
                UnixTime(expires_at),
                ctx.now,
            )
            .map_err(|_| DeviceError::Unavailable)?
        {
            Inserted::New => return Ok(PairingCode(code)),
            Inserted::AlreadyPresent => continue,
        }
    }
    Err(DeviceError::Unavailable)
}

/// Uniform over [`PAIRING_ALPHABET`] by rejection sampling.
fn random_code(rng: &SystemRandom) -> Result<String, DeviceError> {
    let n = PAIRING_ALPHABET.len();
    let limit = 256 - 256 % n; // 248: bytes at or above it would bias the draw
    let mut out = String::with_capacity(PAIRING_CODE_LEN);
    while out.len() < PAIRING_CODE_LEN {
        let mut buf = [0u8; 16];
        rng.fill(&mut buf).map_err(|_| DeviceError::Unavailable)?;
        for b in buf {
            if usize::from(b) < limit && out.len() < PAIRING_CODE_LEN {
                out.push(char::from(PAIRING_ALPHABET[usize::from(b) % n]));
            }
        }
    }
    Ok(out)
}

/// A typed code, normalised: case-insensitive, spaces and dashes ignored; anything
/// outside the alphabet or of the wrong length is `None`.
fn normalise_code(code: &str) -> Option<String> {
    if code.len() > 4 * PAIRING_CODE_LEN {
        return None;
    }
    let c: String = code
        .chars()
        .filter(|c| *c != ' ' && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let ok = c.len() == PAIRING_CODE_LEN && c.bytes().all(|b| PAIRING_ALPHABET.contains(&b));
    ok.then_some(c)
}

fn check_name(name: &str) -> Result<(), DeviceError> {
    let n = name.chars().count();
    let bad_char = name
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'));
    if n == 0 || n > MAX_DEVICE_NAME_CHARS || bad_char || name.trim() != name {
        return Err(DeviceError::InvalidName);
    }
    Ok(())
}

/// The P-256 point of a public JWK (private members, other key types and curves refused).
fn device_public_key(jwk: &[u8]) -> Result<Vec<u8>, DeviceError> {
    let key = parse_jwk(jwk, &JwkSetOptions::default()).map_err(|e| {
        DeviceError::InvalidKey(match e {
            KeyError::PrivateMembers | KeyError::Symmetric => "private key material",
            KeyError::UnsupportedCurve | KeyError::UnsupportedKeyType => "not EC P-256",
            _ => "invalid JWK",
        })
    })?;
    if key.algorithm() != Algorithm::ES256 {
        return Err(DeviceError::InvalidKey("not EC P-256"));
    }
    Ok(key.public_key_bytes().to_vec())
}

/// Pair a device: consume `code`, register `jwk` (a public EC P-256 JWK, JSON) under
/// `name`, and return the new device id.
pub fn complete_pairing(
    ctx: &CibaContext<'_>,
    code: &str,
    jwk: &[u8],
    name: &str,
) -> Result<String, DeviceError> {
    let r = complete_pairing_inner(ctx, code, jwk, name);
    let user = r.as_ref().ok().map(|(_, u)| u.as_str());
    audit(
        ctx,
        EventKind::DeviceEnrollment,
        user,
        r.as_ref().map(|_| ()).map_err(|e| *e),
    )?;
    r.map(|(d, _)| d)
}

fn complete_pairing_inner(
    ctx: &CibaContext<'_>,
    code: &str,
    jwk: &[u8],
    name: &str,
) -> Result<(String, String), DeviceError> {
    // Everything the caller sent is checked before the code is spent.
    let code = normalise_code(code).ok_or(DeviceError::InvalidPairingCode)?;
    check_name(name)?;
    let public_key = device_public_key(jwk)?;
    let bytes = ctx
        .store
        .take(Namespace::Device, &pairing_key(&code), ctx.now)
        .map_err(|_| DeviceError::Unavailable)?
        .ok_or(DeviceError::InvalidPairingCode)?;
    let pairing: PairingRecord =
        crate::token::record::decode(&bytes).map_err(|_| DeviceError::InvalidPairingCode)?;
    if ctx.now.secs() >= pairing.expires_at {
        return Err(DeviceError::InvalidPairingCode);
    }
    let user_id = pairing.user_id;
    active(ctx, &user_id)?;
    let existing = ctx
        .store
        .scan_prefix(
            Namespace::Device,
            &user_prefix(&user_id),
            MAX_DEVICES_PER_USER,
            ctx.now,
        )
        .map_err(|_| DeviceError::Unavailable)?;
    if existing.len() >= MAX_DEVICES_PER_USER {
        return Err(DeviceError::TooManyDevices);
    }
    let device_id = crate::token::random_id(&SystemRandom::new(), crate::token::ID_RANDOM_BYTES)
        .map_err(|_| DeviceError::Unavailable)?;
    let record = encode(&DeviceRecord {
        user_id: user_id.clone(),
        name: name.to_owned(),
        public_key,
        created_at: ctx.now.secs(),
    })?;
    let forever = UnixTime(MAX_NUMERIC_DATE);
    ctx.store
        .put(Namespace::Device, &device_key(&device_id), &record, forever)
        .map_err(|_| DeviceError::Unavailable)?;
    if ctx
        .store
        .put(
            Namespace::Device,
            &user_device_key(&user_id, &device_id),
            b"1",
            forever,
        )
        .is_err()
    {
        let _ = ctx.store.delete(Namespace::Device, &device_key(&device_id));
        return Err(DeviceError::Unavailable);
    }
    Ok((device_id, user_id))
}

fn device(ctx: &CibaContext<'_>, device_id: &str) -> Result<Option<DeviceRecord>, DeviceError> {
    if device_id.len() != DEVICE_ID_LEN {
        return Ok(None);
    }
    Ok(ctx
        .store
        .get(Namespace::Device, &device_key(device_id), ctx.now)
        .map_err(|_| DeviceError::Unavailable)?
        .and_then(|b| crate::token::record::decode(&b).ok()))
}

/// The devices of `user_id`.
pub fn list_devices(ctx: &CibaContext<'_>, user_id: &str) -> Result<Vec<DeviceInfo>, DeviceError> {
    let prefix = user_prefix(user_id);
    let entries = ctx
        .store
        .scan_prefix(Namespace::Device, &prefix, MAX_DEVICES_PER_USER, ctx.now)
        .map_err(|_| DeviceError::Unavailable)?;
    let mut out = Vec::new();
    for (key, _) in entries {
        let Some(id) = key
            .get(prefix.len()..)
            .and_then(|b| std::str::from_utf8(b).ok())
        else {
            continue;
        };
        if let Some(d) = device(ctx, id)?.filter(|d| d.user_id == user_id) {
            out.push(DeviceInfo {
                device_id: id.to_owned(),
                name: d.name,
                created_at: d.created_at,
            });
        }
    }
    out.sort_by_key(|d| d.created_at);
    Ok(out)
}

/// Remove a device of `user_id`: its JWTs stop verifying at once.
pub fn remove_device(
    ctx: &CibaContext<'_>,
    user_id: &str,
    device_id: &str,
) -> Result<(), DeviceError> {
    let r = remove_inner(ctx, user_id, device_id);
    audit(ctx, EventKind::DeviceEnrollment, Some(user_id), r)
}

fn remove_inner(ctx: &CibaContext<'_>, user_id: &str, device_id: &str) -> Result<(), DeviceError> {
    let d = device(ctx, device_id)?.ok_or(DeviceError::NotFound)?;
    if d.user_id != user_id {
        return Err(DeviceError::NotFound);
    }
    // The device record first: once it is gone, nothing verifies.
    ctx.store
        .delete(Namespace::Device, &device_key(device_id))
        .map_err(|_| DeviceError::Unavailable)?;
    ctx.store
        .delete(Namespace::Device, &user_device_key(user_id, device_id))
        .map_err(|_| DeviceError::Unavailable)
}

/// Verify a device's signed request (see the module doc) and consume its `jti`.
pub fn authenticate_device(
    ctx: &CibaContext<'_>,
    jwt: &str,
) -> Result<AuthenticatedDevice, DeviceError> {
    let r = authenticate_inner(ctx, jwt);
    if let Err(e) = &r {
        // A refusal: recorded without waiting, the error stays the answer.
        let _ = audit(ctx, EventKind::DeviceAuthentication, None, Err(*e));
    }
    r
}

fn authenticate_inner(
    ctx: &CibaContext<'_>,
    jwt: &str,
) -> Result<AuthenticatedDevice, DeviceError> {
    use DeviceError::InvalidToken as Bad;
    let jws = parse_compact(jwt, ACCESS_TOKEN_MAX_LEN).map_err(|_| Bad("malformed"))?;
    let typ = TypRule::OptionalOneOf(&["JWT"]);
    check_typ(jws.header(), typ).map_err(|_| Bad("typ"))?;
    let device_id = jws.header().kid().ok_or(Bad("kid missing"))?.to_owned();
    let record = device(ctx, &device_id)?.ok_or(Bad("unknown device"))?;
    let key = VerifyingKey::from_ec_point(device_id.clone(), &record.public_key)
        .map_err(|_| Bad("device key"))?;
    let es256 = AlgorithmSet::of(&[Algorithm::ES256]);
    let verified = jws.verify(&key, es256).map_err(|_| Bad("signature"))?;
    let claims = Claims::from_json(verified.payload()).map_err(|_| Bad("claims"))?;
    let rule = Validation::new(
        es256,
        typ,
        AudienceRule::Contains(ctx.config.issuer.clone()),
    )
    .issuer(device_id.clone())
    .max_lifetime(MAX_DEVICE_JWT_LIFETIME)
    .require(&["iat", "jti"]);
    validate_claims(&claims, &rule, ctx.now).map_err(|_| Bad("claims"))?;
    let jti = claims
        .required_string("jti")
        .map_err(|_| Bad("jti"))?
        .to_owned();
    if jti.is_empty() || jti.len() > MAX_DEVICE_JTI_LEN {
        return Err(Bad("jti"));
    }
    let exp = claims
        .numeric_date("exp")
        .ok()
        .flatten()
        .ok_or(Bad("exp"))?;
    active(ctx, &record.user_id)?;
    // Everything checked: now, and only now, consume the jti.
    let mut key = b"ciba-device\0".to_vec();
    key.extend_from_slice(device_id.as_bytes());
    key.push(0);
    key.extend_from_slice(jti.as_bytes());
    let until = UnixTime(exp.secs().saturating_add(i64::from(DEFAULT_LEEWAY) + 1));
    match ctx
        .store
        .insert_new(Namespace::Jti, &key, b"ciba-device", until, ctx.now)
    {
        Ok(Inserted::New) => {}
        Ok(Inserted::AlreadyPresent) => return Err(Bad("jti replayed")),
        Err(_) => return Err(DeviceError::Unavailable),
    }
    Ok(AuthenticatedDevice {
        device_id,
        user_id: record.user_id,
        claims,
    })
}

/// A decision JWT from a device (claims `request_ref`, `approve`,
/// `binding_message_hash`): authenticate the device, then [`decide`] as its user.
pub fn decide_with_device(ctx: &CibaContext<'_>, jwt: &str) -> Result<Decided, DeviceError> {
    use DeviceError::InvalidToken as Bad;
    let device = authenticate_device(ctx, jwt)?;
    let claims = device.claims();
    let request = claims
        .string("request_ref")
        .ok()
        .flatten()
        .and_then(RequestRef::parse)
        .ok_or(Bad("request_ref"))?;
    let decision = match claims.get("approve") {
        Some(serde_json::Value::Bool(true)) => Decision::Approve,
        Some(serde_json::Value::Bool(false)) => Decision::Deny,
        _ => return Err(Bad("approve")),
    };
    let hash = claims
        .string("binding_message_hash")
        .map_err(|_| Bad("binding_message_hash"))?;
    Ok(decide_by(
        ctx,
        &request,
        device.user_id(),
        decision,
        hash,
        Some(device.device_id()),
    )?)
}
