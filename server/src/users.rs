//! Local users: argon2id password hashes, logins without account enumeration, and a
//! limit on password guessing.
//!
//! - Hashes are argon2id PHC strings (OWASP 2024 parameters: m = 19 MiB, t = 2, p = 1).
//! - An unknown user costs the same argon2 verification as a known one (against a dummy
//!   hash computed once) and gets the same [`LoginFailure::InvalidCredentials`].
//! - Guessing is limited per username and per client address: after
//!   [`MAX_FAILURES`] failures within [`WINDOW_SECS`], further attempts are refused with
//!   [`LoginFailure::TooManyAttempts`] without checking the password, until the window
//!   passes. A success clears the username's count. The tracking maps are bounded
//!   ([`MAX_TRACKED`] entries each; when full, entries whose window passed are dropped,
//!   then the oldest).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::app::{LoginFailure, User, Users};

/// Failures allowed per username or address within the window.
pub const MAX_FAILURES: u32 = 5;
/// The failure-counting window, seconds.
pub const WINDOW_SECS: i64 = 15 * 60;
/// Most usernames (and addresses) tracked at once.
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
}

impl std::fmt::Debug for UserEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserEntry")
            .field("username", &self.username)
            .field("password_hash", &"[redacted]")
            .finish_non_exhaustive()
    }
}

fn argon2() -> Argon2<'static> {
    // OWASP Password Storage Cheat Sheet (2024): argon2id, 19 MiB, 2 iterations, 1 lane.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hash a password as an argon2id PHC string.
pub fn hash_password(password: &str) -> Result<String, UsersError> {
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| UsersError::Invalid("randomness".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| UsersError::Invalid(e.to_string()))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Invalid(e.to_string()))
}

fn verify(password: &str, phc: &PasswordHash<'_>) -> bool {
    argon2().verify_password(password.as_bytes(), phc).is_ok()
}

#[derive(Default)]
struct Failures {
    map: HashMap<String, (u32, i64)>,
}

impl Failures {
    fn blocked(&self, key: &str, now: i64) -> bool {
        self.map
            .get(key)
            .is_some_and(|(n, since)| *n >= MAX_FAILURES && now - since < WINDOW_SECS)
    }

    fn fail(&mut self, key: &str, now: i64) {
        if !self.map.contains_key(key) && self.map.len() >= MAX_TRACKED {
            self.map.retain(|_, (_, since)| now - *since < WINDOW_SECS);
            if self.map.len() >= MAX_TRACKED {
                if let Some(oldest) = self
                    .map
                    .iter()
                    .min_by_key(|(_, (_, since))| *since)
                    .map(|(k, _)| k.clone())
                {
                    self.map.remove(&oldest);
                }
            }
        }
        let e = self.map.entry(key.to_owned()).or_insert((0, now));
        if now - e.1 >= WINDOW_SECS {
            *e = (0, now);
        }
        e.0 += 1;
    }

    fn clear(&mut self, key: &str) {
        self.map.remove(key);
    }
}

/// The local users.
pub struct UserDirectory {
    by_name: HashMap<String, UserEntry>,
    dummy: String,
    by_user: Mutex<Failures>,
    by_ip: Mutex<Failures>,
}

impl std::fmt::Debug for UserDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserDirectory")
            .field("users", &self.by_name.len())
            .finish_non_exhaustive()
    }
}

impl UserDirectory {
    /// From entries; every hash must be a valid PHC string, usernames and subjects unique.
    pub fn new(entries: Vec<UserEntry>) -> Result<Self, UsersError> {
        let mut by_name = HashMap::new();
        let mut subjects = std::collections::HashSet::new();
        for e in entries {
            PasswordHash::new(&e.password_hash)
                .map_err(|_| UsersError::Invalid(format!("{}: bad password_hash", e.username)))?;
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
        Ok(UserDirectory {
            by_name,
            dummy: hash_password("heartgate-dummy-password")?,
            by_user: Mutex::default(),
            by_ip: Mutex::default(),
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
        let ip = ip.to_string();
        if self.by_user.lock().blocked(username, now) || self.by_ip.lock().blocked(&ip, now) {
            return Err(LoginFailure::TooManyAttempts);
        }
        let entry = self.by_name.get(username);
        let hash = entry.map_or(self.dummy.as_str(), |e| e.password_hash.as_str());
        let ok = PasswordHash::new(hash).is_ok_and(|h| verify(password, &h)) && entry.is_some();
        match (ok, entry) {
            (true, Some(e)) => {
                self.by_user.lock().clear(username);
                Ok(Self::user(e))
            }
            _ => {
                if username.len() <= 256 {
                    self.by_user.lock().fail(username, now);
                }
                self.by_ip.lock().fail(&ip, now);
                Err(LoginFailure::InvalidCredentials)
            }
        }
    }

    fn by_subject(&self, subject: &str) -> Option<User> {
        self.by_name
            .values()
            .find(|e| e.subject == subject)
            .map(Self::user)
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
pub fn demo_user() -> Result<(UserEntry, String), UsersError> {
    let mut b = [0u8; 12];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| UsersError::Invalid("randomness".into()))?;
    let password = heartgate_core::jose::b64::encode(b);
    let entry = UserEntry {
        username: "demo".into(),
        password_hash: hash_password(&password)?,
        subject: "demo-user".into(),
        display_name: Some("Demo User".into()),
        fhir_user: Some("Practitioner/demo".into()),
        patients: vec![PatientEntry {
            id: "Patient/example".into(),
            label: "Example Patient".into(),
        }],
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
        password_hash: hash_password(password)?,
        subject: format!("user-{}", heartgate_core::jose::b64::encode(id)),
        display_name,
        fhir_user,
        patients,
    });
    save_entries(path, &entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> UserDirectory {
        UserDirectory::new(vec![UserEntry {
            username: "nurse".into(),
            password_hash: hash_password("correct horse battery").unwrap(),
            subject: "user-42".into(),
            display_name: None,
            fhir_user: Some("Practitioner/7".into()),
            patients: vec![],
        }])
        .unwrap()
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn right_password_signs_in_and_wrong_or_unknown_read_the_same() {
        let d = dir();
        let u = d.login("nurse", "correct horse battery", IP, 0).unwrap();
        assert_eq!(u.subject, "user-42");
        assert_eq!(
            d.login("nurse", "wrong", IP, 0).unwrap_err(),
            LoginFailure::InvalidCredentials
        );
        assert_eq!(
            d.login("nobody", "correct horse battery", IP, 0)
                .unwrap_err(),
            LoginFailure::InvalidCredentials
        );
        assert_eq!(d.by_subject("user-42").unwrap().display_name, "nurse");
    }

    #[test]
    fn guessing_locks_the_username_until_the_window_passes_and_success_resets() {
        let d = dir();
        let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
        for i in 0..MAX_FAILURES {
            // From varying addresses: the username counter still adds up.
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 0, i as u8));
            assert_eq!(
                d.login("nurse", "guess", ip, 100).unwrap_err(),
                LoginFailure::InvalidCredentials
            );
        }
        assert_eq!(
            d.login("nurse", "correct horse battery", other, 101)
                .unwrap_err(),
            LoginFailure::TooManyAttempts,
            "locked even with the right password"
        );
        assert!(d
            .login("nurse", "correct horse battery", other, 100 + WINDOW_SECS)
            .is_ok());
        // The success cleared the count.
        assert_eq!(
            d.login("nurse", "guess", other, 100 + WINDOW_SECS)
                .unwrap_err(),
            LoginFailure::InvalidCredentials
        );
    }

    #[test]
    fn one_address_guessing_many_usernames_is_limited() {
        let d = dir();
        for i in 0..MAX_FAILURES {
            let _ = d.login(&format!("user{i}"), "x", IP, 0);
        }
        assert_eq!(
            d.login("nurse", "correct horse battery", IP, 1)
                .unwrap_err(),
            LoginFailure::TooManyAttempts
        );
    }

    #[test]
    fn tracking_stays_bounded() {
        let mut f = Failures::default();
        for i in 0..(MAX_TRACKED + 5_000) {
            f.fail(&format!("u{i}"), i as i64);
        }
        assert!(f.map.len() <= MAX_TRACKED);
    }

    #[test]
    fn bad_hashes_and_duplicates_are_refused_and_debug_hides_hashes() {
        let bad = UserEntry {
            username: "a".into(),
            password_hash: "plain".into(),
            subject: "s".into(),
            display_name: None,
            fhir_user: None,
            patients: vec![],
        };
        assert!(UserDirectory::new(vec![bad.clone()]).is_err());
        let good = UserEntry {
            password_hash: hash_password("pw-pw-pw-pw-pw").unwrap(),
            ..bad
        };
        assert!(UserDirectory::new(vec![good.clone(), good.clone()]).is_err());
        assert!(!format!("{good:?}").contains("argon2"));
    }

    #[test]
    fn users_add_writes_a_hash_and_refuses_duplicates_and_short_passwords() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("users.json");
        let pw = Zeroizing::new("a long enough password".to_owned());
        add_user(&p, "ward", &pw, None, None, vec!["Patient/1=Jane".into()]).unwrap();
        let e = load_entries(&p).unwrap();
        assert_eq!(e[0].patients[0].label, "Jane");
        assert!(e[0].password_hash.starts_with("$argon2id$"));
        assert!(!std::fs::read_to_string(&p)
            .unwrap()
            .contains("a long enough"));
        assert!(add_user(&p, "ward", &pw, None, None, vec![]).is_err());
        let short = Zeroizing::new("short".to_owned());
        assert!(add_user(&p, "x", &short, None, None, vec![]).is_err());
        let dir = UserDirectory::new(load_entries(&p).unwrap()).unwrap();
        assert!(dir.login("ward", "a long enough password", IP, 0).is_ok());
    }
}
