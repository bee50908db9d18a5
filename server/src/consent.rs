//! Remembered consent: a user who ticked "remember" on the consent page is not asked
//! again by the same client for the same scopes (or fewer) and the same patient, for
//! [`REMEMBER_FOR`]. Kept in the store (`Namespace::Grant`), so it survives restarts and
//! is shared by the nodes of a cluster. `prompt=consent` always shows the page.

use heartgate_core::clock::UnixTime;
use heartgate_core::scope::ScopeSet;
use heartgate_core::store::{Namespace, Store, StoreError};
use serde::{Deserialize, Serialize};

/// How long a remembered consent lasts: 90 days.
pub const REMEMBER_FOR: i64 = 90 * 86_400;

/// What the user consented to for one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    /// The scopes granted.
    pub scope: String,
    /// The patient chosen, when the scopes needed one.
    pub patient: Option<String>,
    /// When the user consented.
    pub at: i64,
}

impl Remembered {
    /// Whether this consent covers a request for `scope` (every requested scope was
    /// granted) with `patient` (the same patient, when one is needed).
    pub fn covers(&self, scope: &ScopeSet, patient_needed: bool) -> bool {
        let Ok(granted) = ScopeSet::parse(&self.scope) else {
            return false;
        };
        scope.iter().all(|s| granted.contains(s)) && (!patient_needed || self.patient.is_some())
    }
}

fn key(subject: &str, client_id: &str) -> Vec<u8> {
    let mut k = b"consent\0".to_vec();
    k.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, subject.as_bytes()).as_ref());
    k.extend_from_slice(client_id.as_bytes());
    k
}

/// Remember a consent of `subject` for `client_id` from `now`.
pub fn remember(
    store: &dyn Store,
    subject: &str,
    client_id: &str,
    consent: &Remembered,
    now: UnixTime,
) -> Result<(), StoreError> {
    let value = serde_json::to_vec(consent).map_err(|_| StoreError::TooLarge)?;
    let until = UnixTime(now.secs().saturating_add(REMEMBER_FOR));
    store.put(Namespace::Grant, &key(subject, client_id), &value, until)
}

/// The remembered consent of `subject` for `client_id`, if any.
pub fn recall(
    store: &dyn Store,
    subject: &str,
    client_id: &str,
    now: UnixTime,
) -> Result<Option<Remembered>, StoreError> {
    Ok(store
        .get(Namespace::Grant, &key(subject, client_id), now)?
        .and_then(|v| serde_json::from_slice(&v).ok()))
}

/// Forget it (the user denied, or asked again with `prompt=consent` and changed it).
pub fn forget(store: &dyn Store, subject: &str, client_id: &str) -> Result<(), StoreError> {
    store.delete(Namespace::Grant, &key(subject, client_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartgate_core::store::MemoryStore;

    #[test]
    fn a_consent_covers_the_same_or_fewer_scopes_for_90_days() {
        let store = MemoryStore::new();
        let now = UnixTime(1_000);
        let c = Remembered {
            scope: "openid patient/Observation.rs launch/patient".into(),
            patient: Some("Patient/1".into()),
            at: now.secs(),
        };
        remember(&store, "user-1", "app", &c, now).unwrap();
        let got = recall(&store, "user-1", "app", now).unwrap().unwrap();
        assert_eq!(got, c);
        let fewer = ScopeSet::parse("openid patient/Observation.rs").unwrap();
        let more = ScopeSet::parse("openid patient/Observation.rs patient/Condition.rs").unwrap();
        assert!(got.covers(&fewer, true));
        assert!(!got.covers(&more, true));
        // Another user, another client: nothing.
        assert!(recall(&store, "user-2", "app", now).unwrap().is_none());
        assert!(recall(&store, "user-1", "other", now).unwrap().is_none());
        // After 90 days: gone.
        let later = UnixTime(now.secs() + REMEMBER_FOR);
        assert!(recall(&store, "user-1", "app", later).unwrap().is_none());
        forget(&store, "user-1", "app").unwrap();
        assert!(recall(&store, "user-1", "app", now).unwrap().is_none());
    }

    #[test]
    fn a_consent_without_a_patient_does_not_cover_a_request_that_needs_one() {
        let c = Remembered {
            scope: "openid patient/Observation.rs".into(),
            patient: None,
            at: 0,
        };
        let s = ScopeSet::parse("patient/Observation.rs").unwrap();
        assert!(c.covers(&s, false));
        assert!(!c.covers(&s, true));
    }
}
