//! The signing key ring: one active signing key plus older and newer public keys that
//! stay published for verification (RFC 7517 JWKS, OIDF `oidcc-server-rotate-keys`).
//!
//! Readers (every signature and every verification) take an `arc-swap` snapshot: no lock,
//! no waiting on a rotation. Writers (rotation, publication, retirement) serialise on a
//! `parking_lot` mutex that readers never touch, build a new state and swap it in.

use std::ops::Deref;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::{
    resolve_in, Algorithm, JoseError, JwkSet, KeyError, KeyResolver, SigningKey, VerifyingKey,
};

/// One immutable state of the key ring.
#[derive(Debug)]
pub struct KeyRingState {
    active: Arc<SigningKey>,
    published: JwkSet,
    jwks_json: Arc<str>,
}

impl KeyRingState {
    fn build(active: Arc<SigningKey>, others: Vec<VerifyingKey>) -> Result<Self, KeyError> {
        let mut keys = Vec::with_capacity(others.len() + 1);
        keys.push(active.verifying_key().clone());
        // Drop only the active key itself (re-published, or published ahead of rotation); a
        // different key under the active key's kid is a duplicate and refused below.
        let active_public = active.verifying_key();
        keys.extend(others.into_iter().filter(|k| k != active_public));
        let published = JwkSet::new(keys)?;
        let jwks_json = published.to_json().into();
        Ok(KeyRingState {
            active,
            published,
            jwks_json,
        })
    }

    /// The key new tokens are signed with.
    pub fn active(&self) -> &Arc<SigningKey> {
        &self.active
    }

    /// Every published verification key, the active one first.
    pub fn jwks(&self) -> &JwkSet {
        &self.published
    }

    /// The published JWK Set document, serialised once per state.
    pub fn jwks_json(&self) -> &Arc<str> {
        &self.jwks_json
    }

    fn others(&self) -> Vec<VerifyingKey> {
        self.published.keys()[1..].to_vec()
    }
}

impl KeyResolver for KeyRingState {
    fn resolve(&self, kid: Option<&str>, alg: Algorithm) -> Result<&VerifyingKey, JoseError> {
        resolve_in(self.published.keys(), kid, alg)
    }
}

/// A lock-free-to-read ring of signing and verification keys.
#[derive(Debug)]
pub struct KeyRing {
    state: ArcSwap<KeyRingState>,
    writer: Mutex<()>,
}

impl KeyRing {
    /// A ring whose only key is `active`.
    pub fn new(active: SigningKey) -> Self {
        let active = Arc::new(active);
        let published = JwkSet::new(vec![active.verifying_key().clone()]).unwrap_or_default();
        let jwks_json = published.to_json().into();
        KeyRing {
            state: ArcSwap::from_pointee(KeyRingState {
                active,
                published,
                jwks_json,
            }),
            writer: Mutex::new(()),
        }
    }

    /// A ring with `active` and further published verification keys (older keys whose
    /// tokens are still live, or announced future keys). Duplicate key ids are refused.
    pub fn with_published(active: SigningKey, others: Vec<VerifyingKey>) -> Result<Self, KeyError> {
        let state = KeyRingState::build(Arc::new(active), others)?;
        Ok(KeyRing {
            state: ArcSwap::from_pointee(state),
            writer: Mutex::new(()),
        })
    }

    /// The current state, without taking any lock. Hold it only for one operation.
    pub fn load(&self) -> impl Deref<Target = Arc<KeyRingState>> + '_ {
        self.state.load()
    }

    /// The current state as an owned `Arc`.
    pub fn snapshot(&self) -> Arc<KeyRingState> {
        self.state.load_full()
    }

    /// Make `next` the active signing key. The previous active key stays published so
    /// that tokens it signed keep verifying until they expire (S11).
    pub fn rotate(&self, next: SigningKey) -> Result<(), KeyError> {
        let _w = self.writer.lock();
        let cur = self.state.load_full();
        let mut others = vec![cur.active.verifying_key().clone()];
        others.extend(cur.others());
        let state = KeyRingState::build(Arc::new(next), others)?;
        self.state.store(Arc::new(state));
        Ok(())
    }

    /// Publish a verification key (e.g. the next signing key, ahead of rotation).
    pub fn publish(&self, key: VerifyingKey) -> Result<(), KeyError> {
        let _w = self.writer.lock();
        let cur = self.state.load_full();
        let mut others = cur.others();
        others.push(key);
        let state = KeyRingState::build(cur.active.clone(), others)?;
        self.state.store(Arc::new(state));
        Ok(())
    }

    /// Stop publishing the key `kid`. The active key cannot be retired.
    pub fn retire(&self, kid: &str) -> Result<(), KeyError> {
        let _w = self.writer.lock();
        let cur = self.state.load_full();
        if cur.active.kid() == kid {
            return Err(KeyError::ActiveKey);
        }
        let others: Vec<_> = cur
            .others()
            .into_iter()
            .filter(|k| k.kid() != kid)
            .collect();
        let state = KeyRingState::build(cur.active.clone(), others)?;
        self.state.store(Arc::new(state));
        Ok(())
    }
}
