//! Local users: argon2id password hashes, logins without account enumeration, and a
//! limit on password guessing. It never keeps a password, never logs one, and its
//! `Debug` output shows neither passwords nor hashes.
//!
//! - Hashes are argon2id PHC strings. [`PasswordParams::OWASP_2024`] (the default) follows
//!   the OWASP Password Storage Cheat Sheet (2024): m = 19 MiB, t = 2, p = 1. Verification
//!   uses the parameters stored in each hash, so older hashes keep working.
//! - An unknown user costs the same argon2 verification as a known one (against a dummy
//!   hash computed once, with the parameters most of the users' hashes have) and gets the
//!   same [`LoginFailure::InvalidCredentials`].
//! - Guessing is limited per username and per client address ([`LoginLimits`]): after
//!   [`MAX_FAILURES`] failures for one username, or [`MAX_FAILURES_PER_ADDRESS`] from one
//!   address, within [`WINDOW_SECS`] of the first, further attempts are refused with
//!   [`LoginFailure::TooManyAttempts`] without checking the password, until the window
//!   passes. Unknown usernames are counted like known ones, so a lockout reveals nothing.
//!   An attempt is counted *before* its password is checked, so parallel guesses cannot
//!   slip past the limit while argon2 runs; a success clears the username's count and
//!   gives back the address's attempt. Usernames are counted by their SHA-256 (a long
//!   username costs no memory), IPv6 addresses by their /64 (one host usually holds a
//!   whole /64).
//! - The counts are bounded ([`MAX_TRACKED`] entries per map). When a map is full, entries
//!   whose window passed are dropped; if that is not enough, it is cut to 7/8 of the bound,
//!   dropping entries that are not locked before locked ones, oldest first. So a flood of
//!   fresh names must lock thousands of them before it can push out a locked one; the
//!   bound is what memory safety costs.
//! - Time comes in as a parameter (`now`, Unix seconds): the logic reads no clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::app::{LoginFailure, User, Users};

/// Failures allowed per username within the window (default of
/// [`LoginLimits::per_username`]).
pub const MAX_FAILURES: u32 = 5;
/// Failures allowed per client address within the window (default of
/// [`LoginLimits::per_address`]). Higher than per username because one address is often
/// a whole clinic behind NAT or a proxy: five typos there should not lock out everyone.
/// Guessing one username stays at [`MAX_FAILURES`] whatever the addresses.
pub const MAX_FAILURES_PER_ADDRESS: u32 = 20;
/// The failure-counting window, seconds.
pub const WINDOW_SECS: i64 = 15 * 60;
/// Most usernames (and addresses) tracked at once: about 1 MB per map at most.
pub const MAX_TRACKED: usize = 10_000;

/// Why a user file or entry could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// Reading or writing the users file.
    #[error("{0}")]
    Io(String),
    /// A bad entry.
    #[error("{0}")]
    Invalid(String),
}

/// A patient a user may choose as launch context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientEntry {
    /// FHIR id, e.g. `Patient/123`.
    pub id: String,
    /// What the consent page shows.
    pub label: String,
}

/// A user as configured or stored in `users.json`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// Login name.
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Stable local subject (the `sub` of tokens).
    pub subject: String,
    /// Name to show.
    #[serde(default)]
    pub display_name: Option<String>,
    /// SMART `fhirUser`.
    #[serde(default)]
    pub fhir_user: Option<String>,
    /// Patients the user may pick.
    #[serde(default)]
    pub patients: Vec<PatientEntry>,
    /// argon2id PHC string of the user's CIBA `user_code` (a PIN the user gives the
    /// caller, CIBA §7.1), if the user has one.
    #[serde(default)]
    pub ciba_user_code_hash: Option<String>,
}

impl std::fmt::Debug for UserEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserEntry")
            .field("username", &self.username)
            .field("password_hash", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PasswordParams {
    /// Memory, KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub lanes: u32,
}

impl PasswordParams {
    /// OWASP Password Storage Cheat Sheet (2024): argon2id with 19 MiB, 2 iterations,
    /// 1 lane. About 20 to 50 ms per hash on a server core: slow for a guesser, cheap for
    /// one login.
    pub const OWASP_2024: PasswordParams = PasswordParams {
        memory_kib: 19 * 1024,
        iterations: 2,
        lanes: 1,
    };

    /// Refuse parameters weaker than the weakest row of the OWASP Password Storage Cheat
    /// Sheet's argon2id table (m = 7 MiB with t = 5; every row has m × t ≥ 35,840 KiB
    /// passes), and absurd ones (more than 4 GiB, 100 passes or 16 lanes; at least 8 KiB
    /// per lane, argon2's own floor).
    pub fn check(&self) -> Result<(), &'static str> {
        if !(1..=16).contains(&self.lanes) {
            return Err("lanes: 1 to 16");
        }
        if !(1..=100).contains(&self.iterations) {
            return Err("iterations: 1 to 100");
        }
        if self.memory_kib > 4 * 1024 * 1024 {
            return Err("memory: at most 4 GiB (4194304 KiB)");
        }
        if self.memory_kib < 7168
            || u64::from(self.memory_kib) * u64::from(self.iterations) < 35_840
            || self.memory_kib < 8 * self.lanes
        {
            return Err("weaker than OWASP's minimum: memory_kib ≥ 7168 and memory_kib × iterations ≥ 35840 (e.g. 19456 × 2, 12288 × 3, 7168 × 5)");
        }
        Ok(())
    }

    fn of(hash: &PasswordHash<'_>) -> Option<PasswordParams> {
        let p = Params::try_from(hash).ok()?;
        Some(PasswordParams {
            memory_kib: p.m_cost(),
            iterations: p.t_cost(),
            lanes: p.p_cost(),
        })
    }
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self::OWASP_2024
    }
}

/// Hash a password as an argon2id PHC string with [`PasswordParams::OWASP_2024`].
pub fn hash_password(password: &str) -> Result<String, UsersError> {
    hash_password_with(password, PasswordParams::OWASP_2024)
}

/// Hash a password as an argon2id PHC string with explicit parameters (a fresh random
/// 16-byte salt each time).
pub fn hash_password_with(password: &str, params: PasswordParams) -> Result<String, UsersError> {
    let argon2_params = Params::new(params.memory_kib, params.iterations, params.lanes, None)
        .map_err(|e| UsersError::Invalid(format!("argon2 parameters: {e}")))?;
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| UsersError::Invalid("randomness".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| UsersError::Invalid(e.to_string()))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, argon2_params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Invalid(e.to_string()))
}

/// Check `password` against a PHC string (with the parameters the string holds). A
/// mismatch and a malformed hash are the same [`LoginFailure::InvalidCredentials`].
pub fn verify_password(password: &str, phc: &str) -> Result<(), LoginFailure> {
    let hash = PasswordHash::new(phc).map_err(|_| LoginFailure::InvalidCredentials)?;
    Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .map_err(|_| LoginFailure::InvalidCredentials)
}

/// The limits on password guessing; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failures allowed per username within the window.
    pub per_username: u32,
    /// Failures allowed per client address (IPv6: per /64) within the window.
    pub per_address: u32,
    /// The window, seconds from the first counted failure.
    pub window_secs: i64,
    /// Most usernames (and, separately, addresses) tracked at once.
    pub max_tracked: usize,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            per_username: MAX_FAILURES,
            per_address: MAX_FAILURES_PER_ADDRESS,
            window_secs: WINDOW_SECS,
            max_tracked: MAX_TRACKED,
        }
    }
}

/// Failures of one key in its current window.
#[derive(Debug, Clone, Copy)]
struct Count {
    failures: u32,
    since: i64,
}

impl Count {
    /// Whether the window that began at `since` is still running at `now`.
    fn current(&self, now: i64, window: i64) -> bool {
        now.saturating_sub(self.since) < window
    }
}

/// Failure counts per key, bounded.
struct Failures<K> {
    map: HashMap<K, Count>,
    limit: u32,
    window: i64,
    cap: usize,
}

impl<K: Hash + Eq + Clone> Failures<K> {
    fn new(limit: u32, window: i64, cap: usize) -> Self {
        Failures {
            map: HashMap::new(),
            limit,
            window,
            cap: cap.max(1),
        }
    }

    fn blocked(&self, key: &K, now: i64) -> bool {
        self.map
            .get(key)
            .is_some_and(|c| c.failures >= self.limit && c.current(now, self.window))
    }

    /// Count one failure (or an attempt in progress).
    fn count(&mut self, key: K, now: i64) {
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            self.make_room(now);
        }
        let window = self.window;
        let c = self.map.entry(key).or_insert(Count {
            failures: 0,
            since: now,
        });
        if !c.current(now, window) {
            *c = Count {
                failures: 0,
                since: now,
            };
        }
        c.failures = c.failures.saturating_add(1);
    }

    /// Take back one counted attempt (it succeeded).
    fn uncount(&mut self, key: &K) {
        if let Some(c) = self.map.get_mut(key) {
            c.failures = c.failures.saturating_sub(1);
            if c.failures == 0 {
                self.map.remove(key);
            }
        }
    }

    fn clear(&mut self, key: &K) {
        self.map.remove(key);
    }

    /// Drop entries whose window passed; if still too many, cut to 7/8 of the bound,
    /// entries that are not locked first, oldest first. Cutting well below the bound
    /// keeps this O(n) pass rare (once per `cap / 8` new keys at most).
    fn make_room(&mut self, now: i64) {
        let window = self.window;
        self.map.retain(|_, c| c.current(now, window));
        let keep = self.cap - (self.cap / 8).max(1);
        let Some(excess) = self.map.len().checked_sub(keep).filter(|e| *e > 0) else {
            return;
        };
        let mut order: Vec<(bool, i64, K)> = self
            .map
            .iter()
            .map(|(k, c)| (c.failures >= self.limit, c.since, k.clone()))
            .collect();
        order.select_nth_unstable_by_key(excess - 1, |(locked, since, _)| (*locked, *since));
        for (_, _, k) in order.drain(..excess) {
            self.map.remove(&k);
        }
    }
}

/// The key a username is counted under: its SHA-256, so any length costs 32 bytes and no
/// mistyped password (typed into the username field) stays in memory as text.
fn username_key(username: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    key.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, username.as_bytes()).as_ref());
    key
}

/// The key an address is counted under: IPv4 as is (also when IPv4-mapped), IPv6 by its
/// /64, since one host or customer usually holds a whole /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(
                u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
            )),
        },
    }
}

/// The guessing counts, under one lock so that checking and counting are one step.
struct Tracking {
    usernames: Failures<[u8; 32]>,
    addresses: Failures<IpAddr>,
    /// Wrong CIBA user codes, by subject: counted apart from passwords, so that a client
    /// guessing codes cannot lock the user out of signing in.
    user_codes: Failures<[u8; 32]>,
}

/// The local users.
pub struct UserDirectory {
    by_name: HashMap<String, UserEntry>,
    dummy: String,
    tracking: Mutex<Tracking>,
}

impl std::fmt::Debug for UserDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserDirectory")
            .field("users", &self.by_name.len())
            .finish_non_exhaustive()
    }
}

impl UserDirectory {
    /// From entries, with the default [`LoginLimits`]; every hash must be an argon2id PHC
    /// string, usernames and subjects non-empty and unique.
    pub fn new(entries: Vec<UserEntry>) -> Result<Self, UsersError> {
        Self::with_limits(entries, LoginLimits::default())
    }

    /// [`UserDirectory::new`] with explicit limits.
    pub fn with_limits(entries: Vec<UserEntry>, limits: LoginLimits) -> Result<Self, UsersError> {
        let mut by_name = HashMap::new();
        let mut subjects = std::collections::HashSet::new();
        let mut params: HashMap<PasswordParams, usize> = HashMap::new();
        for e in entries {
            let bad_hash = || UsersError::Invalid(format!("{}: bad password_hash", e.username));
            let hash = PasswordHash::new(&e.password_hash).map_err(|_| bad_hash())?;
            if hash.algorithm != Algorithm::Argon2id.ident() {
                return Err(bad_hash());
            }
            *params
                .entry(PasswordParams::of(&hash).ok_or_else(bad_hash)?)
                .or_default() += 1;
            if let Some(h) = &e.ciba_user_code_hash {
                let ok =
                    PasswordHash::new(h).is_ok_and(|h| h.algorithm == Algorithm::Argon2id.ident());
                if !ok {
                    return Err(UsersError::Invalid(format!(
                        "{}: bad ciba_user_code_hash",
                        e.username
                    )));
                }
            }
            if e.username.is_empty() || e.subject.is_empty() {
                return Err(UsersError::Invalid("empty username or subject".into()));
            }
            if !subjects.insert(e.subject.clone()) {
                return Err(UsersError::Invalid(format!("subject {} twice", e.subject)));
            }
            if by_name.insert(e.username.clone(), e).is_some() {
                return Err(UsersError::Invalid("a username twice".into()));
            }
        }
        // The dummy costs what most users' hashes cost, so an unknown name takes as long.
        let dummy_params = params
            .into_iter()
            .max_by_key(|(p, n)| (*n, p.memory_kib, p.iterations, p.lanes))
            .map_or(PasswordParams::OWASP_2024, |(p, _)| p);
        let window = limits.window_secs;
        Ok(UserDirectory {
            by_name,
            dummy: hash_password_with("heartgate-dummy-password", dummy_params)?,
            tracking: Mutex::new(Tracking {
                usernames: Failures::new(limits.per_username, window, limits.max_tracked),
                addresses: Failures::new(limits.per_address, window, limits.max_tracked),
                user_codes: Failures::new(limits.per_username, window, limits.max_tracked),
            }),
        })
    }

    fn user(e: &UserEntry) -> User {
        User {
            subject: e.subject.clone(),
            display_name: e.display_name.clone().unwrap_or_else(|| e.username.clone()),
            fhir_user: e.fhir_user.clone(),
            patients: e
                .patients
                .iter()
                .map(|p| (p.id.clone(), p.label.clone()))
                .collect(),
        }
    }
}

impl Users for UserDirectory {
    fn login(
        &self,
        username: &str,
        password: &str,
        ip: IpAddr,
        now: i64,
    ) -> Result<User, LoginFailure> {
        let name = username_key(username);
        let address = address_key(ip);
        {
            let mut t = self.tracking.lock();
            if t.usernames.blocked(&name, now) || t.addresses.blocked(&address, now) {
                return Err(LoginFailure::TooManyAttempts);
            }
            // Counted now, taken back on success: parallel guesses see each other.
            t.usernames.count(name, now);
            t.addresses.count(address, now);
        }
        let entry = self.by_name.get(username);
        // One argon2 verification whether or not the user exists.
        let phc = entry.map_or(self.dummy.as_str(), |e| e.password_hash.as_str());
        let verified = verify_password(password, phc);
        match (verified, entry) {
            (Ok(()), Some(e)) => {
                let mut t = self.tracking.lock();
                t.usernames.clear(&name);
                t.addresses.uncount(&address);
                Ok(Self::user(e))
            }
            _ => Err(LoginFailure::InvalidCredentials),
        }
    }

    fn by_subject(&self, subject: &str) -> Option<User> {
        self.by_name
            .values()
            .find(|e| e.subject == subject)
            .map(Self::user)
    }

    fn by_username(&self, username: &str) -> Option<User> {
        self.by_name.get(username).map(Self::user)
    }

    fn verify_user_code(&self, subject: &str, code: &str, now: i64) -> bool {
        let key = username_key(subject);
        {
            let mut t = self.tracking.lock();
            if t.user_codes.blocked(&key, now) {
                return false;
            }
            t.user_codes.count(key, now);
        }
        let phc = self
            .by_name
            .values()
            .find(|e| e.subject == subject)
            .and_then(|e| e.ciba_user_code_hash.as_deref());
        // One argon2 verification whether or not the user has a code.
        let ok = verify_password(code, phc.unwrap_or(self.dummy.as_str())).is_ok() && phc.is_some();
        if ok {
            self.tracking.lock().user_codes.clear(&key);
        }
        ok
    }
}

/// Read `users.json` (an absent file is no users).
pub fn load_entries(path: &Path) -> Result<Vec<UserEntry>, UsersError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| UsersError::Invalid(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(UsersError::Io(format!("{}: {e}", path.display()))),
    }
}

/// Write `users.json` atomically.
pub fn save_entries(path: &Path, entries: &[UserEntry]) -> Result<(), UsersError> {
    let json =
        serde_json::to_vec_pretty(entries).map_err(|e| UsersError::Invalid(e.to_string()))?;
    crate::setup::write_atomic(path, &json, true).map_err(|e| UsersError::Io(e.to_string()))
}

/// The demo user of the first start, with a fresh random password (returned once).
pub fn demo_user(params: PasswordParams) -> Result<(UserEntry, String), UsersError> {
    let mut b = [0u8; 12];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| UsersError::Invalid("randomness".into()))?;
    let password = heartgate_core::jose::b64::encode(b);
    let entry = UserEntry {
        username: "demo".into(),
        password_hash: hash_password_with(&password, params)?,
        subject: "demo-user".into(),
        display_name: Some("Demo User".into()),
        fhir_user: Some("Practitioner/demo".into()),
        patients: vec![PatientEntry {
            id: "Patient/example".into(),
            label: "Example Patient".into(),
        }],
        ciba_user_code_hash: None,
    };
    Ok((entry, password))
}

/// `heartgate users add`: add a user to `users.json` (the subject is generated).
pub fn add_user(
    path: &Path,
    username: &str,
    password: &Zeroizing<String>,
    display_name: Option<String>,
    fhir_user: Option<String>,
    patients: Vec<String>,
    params: PasswordParams,
) -> Result<(), UsersError> {
    if username.is_empty() || username.len() > 128 {
        return Err(UsersError::Invalid("username: 1 to 128 characters".into()));
    }
    if password.chars().count() < 12 {
        return Err(UsersError::Invalid(
            "password: at least 12 characters".into(),
        ));
    }
    let mut entries = load_entries(path)?;
    if entries.iter().any(|e| e.username == username) {
        return Err(UsersError::Invalid(format!("user {username} exists")));
    }
    let mut id = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
        .map_err(|_| UsersError::Invalid("randomness".into()))?;
    let patients = patients
        .into_iter()
        .map(|p| match p.split_once('=') {
            Some((id, label)) => PatientEntry {
                id: id.to_owned(),
                label: label.to_owned(),
            },
            None => PatientEntry {
                label: p.clone(),
                id: p,
            },
        })
        .collect();
    entries.push(UserEntry {
        username: username.to_owned(),
        password_hash: hash_password_with(password, params)?,
        subject: format!("user-{}", heartgate_core::jose::b64::encode(id)),
        display_name,
        fhir_user,
        patients,
        ciba_user_code_hash: None,
    });
    save_entries(path, &entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// Far below any real setting: argon2 in an unoptimised test build is slow.
    const CHEAP: PasswordParams = PasswordParams {
        memory_kib: 8,
        iterations: 1,
        lanes: 1,
    };
    const PASSWORD: &str = "correct horse battery";
    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

    fn entry(username: &str, subject: &str) -> UserEntry {
        UserEntry {
            username: username.into(),
            password_hash: hash_password_with(PASSWORD, CHEAP).unwrap(),
            subject: subject.into(),
            display_name: None,
            fhir_user: Some("Practitioner/7".into()),
            patients: vec![],
            ciba_user_code_hash: None,
        }
    }

    fn dir_with(limits: LoginLimits) -> UserDirectory {
        UserDirectory::with_limits(vec![entry("nurse", "user-42")], limits).unwrap()
    }

    fn dir() -> UserDirectory {
        dir_with(LoginLimits::default())
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn hash_password_is_argon2id_with_the_owasp_2024_parameters() {
        let phc = hash_password(PASSWORD).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert_eq!(verify_password(PASSWORD, &phc), Ok(()));
        // A fresh salt each time.
        assert_ne!(
            hash_password_with(PASSWORD, CHEAP).unwrap(),
            hash_password_with(PASSWORD, CHEAP).unwrap()
        );
    }

    #[test]
    fn verify_password_accepts_only_the_password() {
        let phc = hash_password_with(PASSWORD, CHEAP).unwrap();
        assert_eq!(verify_password(PASSWORD, &phc), Ok(()));
        for (pw, hash) in [
            ("correct horse batter", phc.as_str()),
            ("", phc.as_str()),
            (PASSWORD, "not a hash"),
            (PASSWORD, ""),
        ] {
            assert_eq!(
                verify_password(pw, hash),
                Err(LoginFailure::InvalidCredentials)
            );
        }
        assert!(hash_password_with(
            PASSWORD,
            PasswordParams {
                memory_kib: 1,
                ..CHEAP
            }
        )
        .is_err());
    }

    #[test]
    fn right_password_signs_in_and_wrong_or_unknown_read_the_same() {
        let d = dir();
        let u = d.login("nurse", PASSWORD, IP, 0).unwrap();
        assert_eq!(u.subject, "user-42");
        assert_eq!(u.fhir_user.as_deref(), Some("Practitioner/7"));
        assert_eq!(
            d.login("nurse", "wrong", IP, 0).unwrap_err(),
            LoginFailure::InvalidCredentials
        );
        assert_eq!(
            d.login("nobody", PASSWORD, IP, 0).unwrap_err(),
            LoginFailure::InvalidCredentials
        );
        assert_eq!(d.by_subject("user-42").unwrap().display_name, "nurse");
    }

    #[test]
    fn unknown_users_are_checked_against_a_dummy_as_costly_as_the_users_hashes() {
        let d = UserDirectory::new(vec![
            entry("a", "1"),
            entry("b", "2"),
            UserEntry {
                password_hash: hash_password_with(
                    PASSWORD,
                    PasswordParams {
                        memory_kib: 16,
                        ..CHEAP
                    },
                )
                .unwrap(),
                ..entry("c", "3")
            },
        ])
        .unwrap();
        let dummy = PasswordHash::new(&d.dummy).unwrap();
        assert_eq!(dummy.algorithm, Algorithm::Argon2id.ident());
        assert_eq!(PasswordParams::of(&dummy), Some(CHEAP));
        // No users: the default parameters.
        let empty = UserDirectory::with_limits(vec![], LoginLimits::default()).unwrap();
        let dummy = PasswordHash::new(&empty.dummy).unwrap();
        assert_eq!(PasswordParams::of(&dummy), Some(PasswordParams::OWASP_2024));
    }

    #[test]
    fn guessing_locks_the_username_until_the_window_passes_and_success_resets() {
        let d = dir();
        let other = ip(1000);
        for i in 0..MAX_FAILURES {
            // From varying addresses: the username counter still adds up.
            assert_eq!(
                d.login("nurse", "guess", ip(i), 100).unwrap_err(),
                LoginFailure::InvalidCredentials
            );
        }
        assert_eq!(
            d.login("nurse", PASSWORD, other, 101).unwrap_err(),
            LoginFailure::TooManyAttempts,
            "locked even with the right password"
        );
        assert_eq!(
            d.login("nurse", PASSWORD, other, 100 + WINDOW_SECS - 1)
                .unwrap_err(),
            LoginFailure::TooManyAttempts,
            "until the window passes"
        );
        assert!(d.login("nurse", PASSWORD, other, 100 + WINDOW_SECS).is_ok());
        // The success cleared the count: a full allowance again.
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                d.login("nurse", "guess", other, 100 + WINDOW_SECS)
                    .unwrap_err(),
                LoginFailure::InvalidCredentials
            );
        }
        assert_eq!(
            d.login("nurse", "guess", other, 100 + WINDOW_SECS)
                .unwrap_err(),
            LoginFailure::TooManyAttempts
        );
    }

    #[test]
    fn unknown_usernames_lock_the_same_way() {
        let d = dir();
        for i in 0..MAX_FAILURES {
            let _ = d.login("nobody", "guess", ip(i), 0);
        }
        assert_eq!(
            d.login("nobody", "guess", IP, 1).unwrap_err(),
            LoginFailure::TooManyAttempts
        );
        // Also a name far too long to be anyone's.
        let long = "x".repeat(100_000);
        for i in 0..MAX_FAILURES {
            let _ = d.login(&long, "guess", ip(i), 0);
        }
        assert_eq!(
            d.login(&long, "guess", IP, 1).unwrap_err(),
            LoginFailure::TooManyAttempts
        );
    }

    #[test]
    fn one_address_guessing_many_usernames_is_limited() {
        let d = dir();
        for i in 0..MAX_FAILURES_PER_ADDRESS {
            assert_eq!(
                d.login(&format!("user{i}"), "x", IP, 0).unwrap_err(),
                LoginFailure::InvalidCredentials
            );
        }
        assert_eq!(
            d.login("nurse", PASSWORD, IP, 1).unwrap_err(),
            LoginFailure::TooManyAttempts
        );
        // Another address is not affected; this one is again once the window passed.
        assert!(d.login("nurse", PASSWORD, ip(2), 1).is_ok());
        assert!(d.login("nurse", PASSWORD, IP, WINDOW_SECS).is_ok());
    }

    #[test]
    fn an_ipv6_64_counts_as_one_address_and_ipv4_mapped_as_ipv4() {
        let d = dir();
        for i in 0..MAX_FAILURES_PER_ADDRESS {
            let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, u16::try_from(i).unwrap());
            let _ = d.login(&format!("user{i}"), "x", IpAddr::V6(v6), 0);
        }
        let same_64 = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0xffff, 1, 2, 3);
        assert_eq!(
            d.login("nurse", PASSWORD, IpAddr::V6(same_64), 1)
                .unwrap_err(),
            LoginFailure::TooManyAttempts
        );
        let next_64 = Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1);
        assert!(d.login("nurse", PASSWORD, IpAddr::V6(next_64), 1).is_ok());

        let d = dir();
        for i in 0..MAX_FAILURES_PER_ADDRESS {
            let _ = d.login(&format!("user{i}"), "x", IP, 0);
        }
        let mapped = Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped();
        assert_eq!(
            d.login("nurse", PASSWORD, IpAddr::V6(mapped), 1)
                .unwrap_err(),
            LoginFailure::TooManyAttempts
        );
    }

    #[test]
    fn successes_do_not_use_up_the_address_allowance() {
        let d = dir();
        for _ in 0..(3 * MAX_FAILURES_PER_ADDRESS) {
            assert!(d.login("nurse", PASSWORD, IP, 0).is_ok());
        }
        // The address's failures still count towards its limit.
        for i in 0..MAX_FAILURES_PER_ADDRESS {
            let _ = d.login(&format!("user{i}"), "x", IP, 0);
        }
        assert_eq!(
            d.login("nurse", PASSWORD, IP, 0).unwrap_err(),
            LoginFailure::TooManyAttempts
        );
    }

    #[test]
    fn parallel_guesses_cannot_exceed_the_limit() {
        let d = dir();
        let checked = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for t in 0..16 {
                let (d, checked) = (&d, &checked);
                s.spawn(move || {
                    for _ in 0..4 {
                        if let Err(LoginFailure::InvalidCredentials) =
                            d.login("nurse", "guess", ip(t), 0)
                        {
                            checked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(checked.into_inner(), MAX_FAILURES);
    }

    #[test]
    fn tracking_stays_bounded_under_100k_usernames() {
        // The counting itself, at full size: all within one window, then spread over time.
        for spread in [0, 1] {
            let mut f = Failures::new(MAX_FAILURES, WINDOW_SECS, MAX_TRACKED);
            for i in 0..100_000u32 {
                f.count(username_key(&format!("u{i}")), i64::from(i) * spread);
                assert!(f.map.len() <= MAX_TRACKED);
            }
        }
        // Through logins, with a small bound: a locked username outlasts the flood.
        let limits = LoginLimits {
            max_tracked: 64,
            ..LoginLimits::default()
        };
        let d = dir_with(limits);
        for i in 0..MAX_FAILURES {
            let _ = d.login("nurse", "guess", ip(i), 0);
        }
        for i in 0..1_000 {
            let _ = d.login(&format!("u{i}"), "x", ip(100 + i), 1);
        }
        {
            let t = d.tracking.lock();
            assert!(t.usernames.map.len() <= 64);
            assert!(t.addresses.map.len() <= 64);
        }
        assert_eq!(
            d.login("nurse", PASSWORD, IP, 2).unwrap_err(),
            LoginFailure::TooManyAttempts
        );
    }

    #[test]
    fn bad_hashes_and_duplicates_are_refused_and_debug_hides_hashes() {
        let bad = UserEntry {
            password_hash: "plain".into(),
            ..entry("a", "s")
        };
        assert!(UserDirectory::new(vec![bad.clone()]).is_err());
        // A PHC string of another algorithm.
        let other = UserEntry {
            password_hash: "$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$qf3Yqq5tDjUPHI0OwCVmBg".into(),
            ..entry("a", "s")
        };
        assert!(UserDirectory::new(vec![other]).is_err());
        let good = entry("a", "s");
        assert!(UserDirectory::new(vec![good.clone(), good.clone()]).is_err());
        assert!(UserDirectory::new(vec![good.clone(), entry("b", "s")]).is_err());
        assert!(UserDirectory::new(vec![entry("", "s")]).is_err());
        let shown = format!("{good:?}");
        assert!(!shown.contains("argon2") && !shown.contains(&good.password_hash));
        let d = UserDirectory::new(vec![good]).unwrap();
        assert!(!format!("{d:?}").contains("argon2"));
    }

    #[test]
    fn users_add_writes_a_hash_and_refuses_duplicates_and_short_passwords() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("users.json");
        let pw = Zeroizing::new("a long enough password".to_owned());
        let params = PasswordParams {
            memory_kib: 7168,
            iterations: 5,
            lanes: 1,
        };
        params.check().unwrap();
        add_user(
            &p,
            "ward",
            &pw,
            None,
            None,
            vec!["Patient/1=Jane".into()],
            params,
        )
        .unwrap();
        let e = load_entries(&p).unwrap();
        assert_eq!(e[0].patients[0].label, "Jane");
        assert!(e[0].password_hash.starts_with("$argon2id$"));
        assert!(!std::fs::read_to_string(&p)
            .unwrap()
            .contains("a long enough"));
        assert!(add_user(&p, "ward", &pw, None, None, vec![], params).is_err());
        let short = Zeroizing::new("short".to_owned());
        assert!(add_user(&p, "x", &short, None, None, vec![], params).is_err());
        let e = load_entries(&p).unwrap();
        assert!(
            e[0].password_hash
                .starts_with("$argon2id$v=19$m=7168,t=5,p=1$"),
            "the configured parameters are used"
        );
        let dir = UserDirectory::new(e).unwrap();
        assert!(dir.login("ward", "a long enough password", IP, 0).is_ok());
    }

    #[test]
    fn password_params_below_owasp_minimum_are_refused() {
        assert!(PasswordParams::OWASP_2024.check().is_ok());
        for (m, t, p) in [(47104, 1, 1), (12288, 3, 1), (9216, 4, 1), (7168, 5, 1)] {
            let ok = PasswordParams {
                memory_kib: m,
                iterations: t,
                lanes: p,
            };
            assert!(ok.check().is_ok(), "OWASP row {m} x {t}");
        }
        for (m, t, p) in [
            (7168, 4, 1),
            (4096, 20, 1),
            (19456, 0, 1),
            (19456, 2, 0),
            (19456, 2, 17),
            (19456, 101, 1),
            (4 * 1024 * 1024 + 1, 2, 1),
        ] {
            let weak = PasswordParams {
                memory_kib: m,
                iterations: t,
                lanes: p,
            };
            assert!(weak.check().is_err(), "{m} x {t} x {p} accepted");
        }
    }
}
