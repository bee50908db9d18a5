//! The signing key ring: one active signing key plus older and newer public keys that
//! stay published for verification (RFC 7517 JWKS, OIDF `oidcc-server-rotate-keys`).
//!
//! Profiles disagree on algorithms (SPECS b.12: HEART wants RS256, FAPI 2.0 forbids it),
//! and a client registers the algorithm it expects for JARM responses, ID tokens and
//! signed introspection responses. So besides the active key (the default algorithm,
//! used for access tokens) the ring may hold one further signing key per other algorithm
//! ([`KeyRing::add_signer`]); [`KeyRingState::signer_for`] picks the key for a client's
//! registered algorithm. Every signing key is published.
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
    /// Further signing keys, one per algorithm other than the active key's.
    signers: Vec<Arc<SigningKey>>,
    published: JwkSet,
    jwks_json: Arc<str>,
}

impl KeyRingState {
    fn build(
        active: Arc<SigningKey>,
        signers: Vec<Arc<SigningKey>>,
        others: Vec<VerifyingKey>,
    ) -> Result<Self, KeyError> {
        let mut keys = Vec::with_capacity(others.len() + signers.len() + 1);
        keys.push(active.verifying_key().clone());
        keys.extend(signers.iter().map(|s| s.verifying_key().clone()));
        // Drop only the signing keys themselves (re-published, or published ahead of
        // rotation); a different key under a signing key's kid is a duplicate and refused
        // below.
        let signing: Vec<VerifyingKey> = keys.clone();
        keys.extend(others.into_iter().filter(|k| !signing.contains(k)));
        let published = JwkSet::new(keys)?;
        let jwks_json = published.to_json().into();
        Ok(KeyRingState {
            active,
            signers,
            published,
            jwks_json,
        })
    }

    /// The key new tokens are signed with.
    pub fn active(&self) -> &Arc<SigningKey> {
        &self.active
    }

    /// The signing key for `alg`: the active key or the further signer of that algorithm.
    pub fn signer(&self, alg: Algorithm) -> Option<&Arc<SigningKey>> {
        if self.active.algorithm() == alg {
            return Some(&self.active);
        }
        self.signers.iter().find(|s| s.algorithm() == alg)
    }

    /// The signing key for a client that registered `registered` (e.g.
    /// `authorization_signed_response_alg`): the active key when it registered nothing,
    /// `None` when the ring has no key of that algorithm or the name is unknown.
    pub fn signer_for(&self, registered: Option<&str>) -> Option<&Arc<SigningKey>> {
        match registered {
            None => Some(&self.active),
            Some(name) => self.signer(Algorithm::from_name(name).ok()?),
        }
    }

    /// The algorithms this ring can sign with, the active key's first (for discovery's
    /// `*_signing_alg_values_supported`).
    pub fn signing_algorithms(&self) -> Vec<Algorithm> {
        std::iter::once(&self.active)
            .chain(&self.signers)
            .map(|k| k.algorithm())
            .collect()
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
        self.published.keys()[1 + self.signers.len()..].to_vec()
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
                signers: Vec::new(),
                published,
                jwks_json,
            }),
            writer: Mutex::new(()),
        }
    }

    /// A ring with `active` and further published verification keys (older keys whose
    /// tokens are still live, or announced future keys). Duplicate key ids are refused.
    pub fn with_published(active: SigningKey, others: Vec<VerifyingKey>) -> Result<Self, KeyError> {
        let state = KeyRingState::build(Arc::new(active), Vec::new(), others)?;
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
    ///
    /// A further signer of `next`'s algorithm is replaced by it (and stays published).
    pub fn rotate(&self, next: SigningKey) -> Result<(), KeyError> {
        let _w = self.writer.lock();
        let cur = self.state.load_full();
        let mut others = vec![cur.active.verifying_key().clone()];
        let alg = next.algorithm();
        let (replaced, signers): (Vec<_>, Vec<_>) = cur
            .signers
            .iter()
            .cloned()
            .partition(|s| s.algorithm() == alg);
        others.extend(replaced.iter().map(|s| s.verifying_key().clone()));
        others.extend(cur.others());
        let state = KeyRingState::build(Arc::new(next), signers, others)?;
        self.state.store(Arc::new(state));
        Ok(())
    }

    /// Add (or rotate) the signing key for `key`'s algorithm, for clients that registered
    /// that algorithm. A previous signer of the same algorithm stays published. The active
    /// key's algorithm is changed with [`KeyRing::rotate`] only.
    pub fn add_signer(&self, key: SigningKey) -> Result<(), KeyError> {
        let _w = self.writer.lock();
        let cur = self.state.load_full();
        let alg = key.algorithm();
        if cur.active.algorithm() == alg {
            return Err(KeyError::ActiveKey);
        }
        let (replaced, mut signers): (Vec<_>, Vec<_>) = cur
            .signers
            .iter()
            .cloned()
            .partition(|s| s.algorithm() == alg);
        signers.push(Arc::new(key));
        let mut others: Vec<VerifyingKey> =
            replaced.iter().map(|s| s.verifying_key().clone()).collect();
        others.extend(cur.others());
        let state = KeyRingState::build(cur.active.clone(), signers, others)?;
        self.state.store(Arc::new(state));
        Ok(())
    }

    /// Replace the whole ring at once: `active`, the further `signers` (at most one per
    /// algorithm other than the active key's) and further published verification keys.
    /// Nodes of a cluster use it to take a ring shared through their store; readers see
    /// either the old state or the new one, never a mix.
    pub fn replace(
        &self,
        active: SigningKey,
        signers: Vec<SigningKey>,
        others: Vec<VerifyingKey>,
    ) -> Result<(), KeyError> {
        let mut algs = vec![active.algorithm()];
        for s in &signers {
            if algs.contains(&s.algorithm()) {
                return Err(KeyError::DuplicateAlgorithm);
            }
            algs.push(s.algorithm());
        }
        let _w = self.writer.lock();
        let state = KeyRingState::build(
            Arc::new(active),
            signers.into_iter().map(Arc::new).collect(),
            others,
        )?;
        self.state.store(Arc::new(state));
        Ok(())
    }

    /// Publish a verification key (e.g. the next signing key, ahead of rotation).
    pub fn publish(&self, key: VerifyingKey) -> Result<(), KeyError> {
        let _w = self.writer.lock();
        let cur = self.state.load_full();
        let mut others = cur.others();
        others.push(key);
        let state = KeyRingState::build(cur.active.clone(), cur.signers.clone(), others)?;
        self.state.store(Arc::new(state));
        Ok(())
    }

    /// Stop publishing the key `kid`. A signing key (active or further signer) cannot be
    /// retired.
    pub fn retire(&self, kid: &str) -> Result<(), KeyError> {
        let _w = self.writer.lock();
        let cur = self.state.load_full();
        if cur.active.kid() == kid || cur.signers.iter().any(|s| s.kid() == kid) {
            return Err(KeyError::ActiveKey);
        }
        let others: Vec<_> = cur
            .others()
            .into_iter()
            .filter(|k| k.kid() != kid)
            .collect();
        let state = KeyRingState::build(cur.active.clone(), cur.signers.clone(), others)?;
        self.state.store(Arc::new(state));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(alg: Algorithm) -> SigningKey {
        SigningKey::generate(alg).unwrap()
    }

    #[test]
    fn a_further_signer_serves_its_algorithm_and_is_published() {
        let ring = KeyRing::new(key(Algorithm::ES256));
        let active_kid = ring.load().active().kid().to_owned();
        assert!(ring.load().signer(Algorithm::RS256).is_none());
        assert!(ring.load().signer_for(Some("RS256")).is_none());
        let rs = key(Algorithm::RS256);
        let rs_kid = rs.kid().to_owned();
        ring.add_signer(rs).unwrap();
        let s = ring.snapshot();
        assert_eq!(s.active().kid(), active_kid, "the default key is unchanged");
        assert_eq!(s.signer(Algorithm::RS256).unwrap().kid(), rs_kid);
        assert_eq!(s.signer_for(Some("RS256")).unwrap().kid(), rs_kid);
        assert_eq!(s.signer_for(None).unwrap().kid(), active_kid);
        assert!(s.signer_for(Some("HS256")).is_none());
        assert!(s.signer_for(Some("none")).is_none());
        assert_eq!(
            s.signing_algorithms(),
            vec![Algorithm::ES256, Algorithm::RS256]
        );
        assert!(s.jwks().keys().iter().any(|k| k.kid() == rs_kid));
    }

    #[test]
    fn replacing_a_signer_keeps_the_old_one_published_and_signers_cannot_be_retired() {
        let ring = KeyRing::new(key(Algorithm::ES256));
        let first = key(Algorithm::PS256);
        let first_kid = first.kid().to_owned();
        ring.add_signer(first).unwrap();
        assert_eq!(ring.retire(&first_kid), Err(KeyError::ActiveKey));
        let second = key(Algorithm::PS256);
        let second_kid = second.kid().to_owned();
        ring.add_signer(second).unwrap();
        let s = ring.snapshot();
        assert_eq!(s.signer(Algorithm::PS256).unwrap().kid(), second_kid);
        assert!(s.jwks().keys().iter().any(|k| k.kid() == first_kid));
        ring.retire(&first_kid).unwrap();
        assert!(!ring
            .snapshot()
            .jwks()
            .keys()
            .iter()
            .any(|k| k.kid() == first_kid));
        // The active key's algorithm is changed by rotation only.
        assert_eq!(
            ring.add_signer(key(Algorithm::ES256)),
            Err(KeyError::ActiveKey)
        );
    }

    #[test]
    fn replace_swaps_the_whole_ring_and_refuses_two_signers_of_one_algorithm() {
        let ring = KeyRing::new(key(Algorithm::ES256));
        let old = ring.load().active().kid().to_owned();
        let active = key(Algorithm::ES256);
        let active_kid = active.kid().to_owned();
        let ps = key(Algorithm::PS256);
        let ps_kid = ps.kid().to_owned();
        let previous = key(Algorithm::ES256).verifying_key().clone();
        let previous_kid = previous.kid().to_owned();
        ring.replace(active, vec![ps], vec![previous]).unwrap();
        let s = ring.snapshot();
        assert_eq!(s.active().kid(), active_kid);
        assert_eq!(s.signer(Algorithm::PS256).unwrap().kid(), ps_kid);
        let published: Vec<&str> = s.jwks().keys().iter().map(|k| k.kid()).collect();
        assert_eq!(published, vec![&*active_kid, &*ps_kid, &*previous_kid]);
        assert!(
            !published.contains(&&*old),
            "the old state is gone entirely"
        );
        // A signer of the active key's algorithm, or two of one algorithm: refused, and
        // the ring is unchanged.
        assert_eq!(
            ring.replace(key(Algorithm::ES256), vec![key(Algorithm::ES256)], vec![]),
            Err(KeyError::DuplicateAlgorithm)
        );
        assert_eq!(
            ring.replace(
                key(Algorithm::ES256),
                vec![key(Algorithm::RS256), key(Algorithm::RS256)],
                vec![]
            ),
            Err(KeyError::DuplicateAlgorithm)
        );
        assert_eq!(ring.load().active().kid(), active_kid);
    }

    #[test]
    fn rotating_to_a_signers_algorithm_makes_it_the_default_and_keeps_others() {
        let ring = KeyRing::new(key(Algorithm::ES256));
        let old_active = ring.load().active().kid().to_owned();
        ring.add_signer(key(Algorithm::RS256)).unwrap();
        ring.add_signer(key(Algorithm::EdDSA)).unwrap();
        let next = key(Algorithm::RS256);
        let next_kid = next.kid().to_owned();
        ring.rotate(next).unwrap();
        let s = ring.snapshot();
        assert_eq!(s.active().kid(), next_kid);
        assert!(
            s.signer(Algorithm::ES256).is_none(),
            "old default: verify only"
        );
        assert!(s.signer(Algorithm::EdDSA).is_some());
        assert!(s.jwks().keys().iter().any(|k| k.kid() == old_active));
        assert_eq!(s.signing_algorithms().len(), 2);
    }
}
