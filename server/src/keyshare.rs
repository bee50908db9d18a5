//! Signing keys and node secrets shared by the nodes of a cluster (DESIGN.md
//! "scale-out").
//!
//! Nodes on one Redis must act as one server: a JWT signed on node A verifies on node B,
//! a pairwise subject is the same on both, a login cookie set by A is read by B. So the
//! signing keys (private parts included), the pairwise secret, the session secret and the
//! registration initial access token live in the store as one record, sealed with
//! AES-256-GCM (ring) under a key-encryption key (KEK) that every node reads from its
//! configuration (`[redis] key_encryption_key_file`). Redis never holds them in clear; a
//! Redis dump without the KEK reveals nothing, and a record sealed for one `key_prefix`
//! does not open under another (the prefix is the associated data).
//!
//! The first node to start on an empty Redis seals its own data directory's keys and
//! secrets (so a single node moved onto Redis keeps its keys); every later node takes
//! the shared record and ignores its own. `heartgate keys rotate` on any node makes a new
//! generation by compare-and-swap and announces it on `{key_prefix}:keys`; every node
//! swaps its key ring when the announcement arrives, and at the latest after
//! `key_refresh_secs` (pub/sub may lose a message). Until then a node keeps signing with
//! the previous key, which stays published: what it signs still verifies everywhere.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use heartgate_core::clock::UnixTime;
use heartgate_core::jose::{Algorithm, KeyRing, SigningKey};
use heartgate_core::store::{Inserted, Namespace, Store, StoreError, Swapped};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::setup::{LocalKeys, KEEP_PUBLISHED};

/// The store key of the sealed record (namespace `SigningKey`).
const RECORD_KEY: &[u8] = b"shared";
/// Format version, the first byte of a sealed record.
const SEALED_V1: u8 = 1;
/// Associated data: this label, then the deployment's key prefix.
const AAD_LABEL: &[u8] = b"heartgate shared keys v1\0";
/// The record does not expire (a century, as far as the store is concerned).
const LIFETIME_SECS: i64 = 100 * 365 * 24 * 3600;
/// Attempts at a compare-and-swap against other nodes' concurrent changes.
const CAS_ATTEMPTS: usize = 8;

/// Why the shared keys could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// The key-encryption key file is missing, unreadable or not 32 bytes.
    #[error("key-encryption key {path}: {reason}")]
    Kek {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The store could not be reached (fail closed).
    #[error("the store holding the shared keys is unavailable")]
    Store(#[from] StoreError),
    /// The record does not open under this KEK and prefix, or its content is unusable.
    #[error("the shared keys in the store do not open with this key-encryption key and key_prefix (wrong KEK, or a record of another deployment)")]
    Sealed,
    /// The record opened but holds something unusable.
    #[error("the shared keys in the store are unusable: {0}")]
    Corrupt(String),
    /// Other nodes kept changing the record.
    #[error("the shared keys kept changing under this node; try again")]
    Contended,
    /// Randomness or key generation failed.
    #[error("key generation failed: {0}")]
    Generate(String),
}

/// The key-encryption key.
pub struct Kek(LessSafeKey);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek([redacted])")
    }
}

impl Kek {
    /// The KEK in `bytes`.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Kek, ShareError> {
        UnboundKey::new(&AES_256_GCM, bytes)
            .map(|k| Kek(LessSafeKey::new(k)))
            .map_err(|_| ShareError::Generate("AES-256-GCM key".into()))
    }

    /// Read the KEK from `path`: 32 bytes as base64url (43 characters, what
    /// `heartgate keys generate-kek` writes; surrounding whitespace ignored).
    pub fn from_file(path: &std::path::Path) -> Result<Kek, ShareError> {
        let bad = |reason: &str| ShareError::Kek {
            path: path.display().to_string(),
            reason: reason.into(),
        };
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| bad(&e.to_string()))?);
        let raw = Zeroizing::new(
            heartgate_core::jose::b64::decode(text.trim())
                .map_err(|_| bad("expected 32 bytes in base64url"))?,
        );
        let arr: &[u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| bad("expected 32 bytes in base64url"))?;
        Kek::from_bytes(arr)
    }

    /// A new random KEK, as the text `from_file` reads.
    pub fn generate_text() -> Result<Zeroizing<String>, ShareError> {
        let mut b = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(&mut *b)
            .map_err(|_| ShareError::Generate("randomness".into()))?;
        Ok(Zeroizing::new(format!(
            "{}\n",
            heartgate_core::jose::b64::encode(*b)
        )))
    }

    fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, ShareError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| ShareError::Generate("randomness".into()))?;
        let mut buf = plain.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| ShareError::Generate("sealing".into()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        buf.zeroize();
        Ok(out)
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, ShareError> {
        let (version, rest) = sealed.split_first().ok_or(ShareError::Sealed)?;
        if *version != SEALED_V1 || rest.len() < NONCE_LEN {
            return Err(ShareError::Sealed);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| ShareError::Sealed)?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let len = self
            .0
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| ShareError::Sealed)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// One private key in the shared record.
#[derive(Serialize, Deserialize)]
struct StoredKey {
    alg: String,
    pkcs8: Vec<u8>,
}

impl Drop for StoredKey {
    fn drop(&mut self) {
        self.pkcs8.zeroize();
    }
}

impl StoredKey {
    fn copy(&self) -> StoredKey {
        StoredKey {
            alg: self.alg.clone(),
            pkcs8: self.pkcs8.clone(),
        }
    }

    fn of(k: &SigningKey) -> StoredKey {
        StoredKey {
            alg: k.algorithm().as_str().to_owned(),
            pkcs8: k.to_pkcs8_der().to_vec(),
        }
    }

    fn key(&self) -> Result<SigningKey, ShareError> {
        let alg = Algorithm::from_name(&self.alg)
            .map_err(|_| ShareError::Corrupt(format!("unknown algorithm {}", self.alg)))?;
        SigningKey::from_pkcs8_der(alg, &self.pkcs8).map_err(|e| ShareError::Corrupt(e.to_string()))
    }
}

/// What the nodes share, in clear only in their memory.
#[derive(Serialize, Deserialize)]
pub struct SharedSet {
    generation: u64,
    active: StoredKey,
    signers: Vec<StoredKey>,
    published: Vec<StoredKey>,
    pairwise: Vec<u8>,
    session: Vec<u8>,
    initial_access_token: String,
}

impl Drop for SharedSet {
    fn drop(&mut self) {
        self.pairwise.zeroize();
        self.session.zeroize();
        self.initial_access_token.zeroize();
    }
}

impl std::fmt::Debug for SharedSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSet")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl SharedSet {
    /// A first generation from a node's own data directory.
    pub fn from_local(
        keys: &LocalKeys,
        pairwise: &[u8; 32],
        session: &[u8; 32],
        initial_access_token: &str,
    ) -> SharedSet {
        SharedSet {
            generation: 1,
            active: StoredKey::of(&keys.active),
            signers: keys.signers.iter().map(StoredKey::of).collect(),
            published: keys.published.iter().map(StoredKey::of).collect(),
            pairwise: pairwise.to_vec(),
            session: session.to_vec(),
            initial_access_token: initial_access_token.to_owned(),
        }
    }

    /// The generation: 1 for the first record, one more per change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The kid of the active key.
    pub fn active_kid(&self) -> Result<String, ShareError> {
        Ok(self.active.key()?.kid().to_owned())
    }

    /// The pairwise / audit pseudonym secret.
    pub fn pairwise_secret(&self) -> Result<Zeroizing<[u8; 32]>, ShareError> {
        secret32(&self.pairwise)
    }

    /// The cookie and CSRF secret.
    pub fn session_secret(&self) -> Result<Zeroizing<[u8; 32]>, ShareError> {
        secret32(&self.session)
    }

    /// The registration initial access token.
    pub fn initial_access_token(&self) -> Zeroizing<String> {
        Zeroizing::new(self.initial_access_token.clone())
    }

    fn parts(&self) -> Result<(SigningKey, Vec<SigningKey>, Vec<SigningKey>), ShareError> {
        let signers = self
            .signers
            .iter()
            .map(StoredKey::key)
            .collect::<Result<_, _>>()?;
        let published = self
            .published
            .iter()
            .map(StoredKey::key)
            .collect::<Result<_, _>>()?;
        Ok((self.active.key()?, signers, published))
    }

    /// A key ring holding these keys.
    pub fn ring(&self) -> Result<Arc<KeyRing>, ShareError> {
        let (active, _, _) = self.parts()?;
        let ring = Arc::new(KeyRing::new(active));
        self.apply(&ring)?;
        Ok(ring)
    }

    /// Make `ring` hold exactly these keys.
    pub fn apply(&self, ring: &KeyRing) -> Result<(), ShareError> {
        let (active, signers, published) = self.parts()?;
        let others = published
            .iter()
            .map(|k| k.verifying_key().clone())
            .collect();
        ring.replace(active, signers, others)
            .map_err(|e| ShareError::Corrupt(e.to_string()))
    }

    /// The next generation: a new active key of the same algorithm, the previous one
    /// published for verification (at most `KEEP_PUBLISHED` kept).
    fn rotated(&self) -> Result<SharedSet, ShareError> {
        let current = self.active.key()?;
        let next = SigningKey::generate(current.algorithm())
            .map_err(|e| ShareError::Generate(e.to_string()))?;
        let mut published = vec![self.active.copy()];
        published.extend(
            self.published
                .iter()
                .take(KEEP_PUBLISHED.saturating_sub(1))
                .map(StoredKey::copy),
        );
        Ok(self.next_with(StoredKey::of(&next), self.signers_copy(), published))
    }

    /// The next generation with a signer for every algorithm of `wanted` it lacks, or
    /// `None` when nothing lacks.
    fn with_signers(&self, wanted: &[Algorithm]) -> Result<Option<SharedSet>, ShareError> {
        let (active, signers, _) = self.parts()?;
        let mut have: Vec<Algorithm> = std::iter::once(&active)
            .chain(&signers)
            .map(SigningKey::algorithm)
            .collect();
        let mut added = self.signers_copy();
        for alg in wanted {
            if !have.contains(alg) {
                let k =
                    SigningKey::generate(*alg).map_err(|e| ShareError::Generate(e.to_string()))?;
                added.push(StoredKey::of(&k));
                have.push(*alg);
            }
        }
        if added.len() == self.signers.len() {
            return Ok(None);
        }
        let published = self.published.iter().map(StoredKey::copy).collect();
        Ok(Some(self.next_with(self.active.copy(), added, published)))
    }

    fn signers_copy(&self) -> Vec<StoredKey> {
        self.signers.iter().map(StoredKey::copy).collect()
    }

    fn next_with(
        &self,
        active: StoredKey,
        signers: Vec<StoredKey>,
        published: Vec<StoredKey>,
    ) -> SharedSet {
        SharedSet {
            generation: self.generation.saturating_add(1),
            active,
            signers,
            published,
            pairwise: self.pairwise.clone(),
            session: self.session.clone(),
            initial_access_token: self.initial_access_token.clone(),
        }
    }
}

fn secret32(b: &[u8]) -> Result<Zeroizing<[u8; 32]>, ShareError> {
    let arr: [u8; 32] = b
        .try_into()
        .map_err(|_| ShareError::Corrupt("secret of the wrong length".into()))?;
    Ok(Zeroizing::new(arr))
}

/// A node's handle on the shared record: the KEK, the deployment's associated data and
/// the generation its key ring holds.
#[derive(Debug)]
pub struct KeyShare {
    kek: Kek,
    aad: Vec<u8>,
    seen: AtomicU64,
    /// The sealed record this node holds, to put back if the store lost it.
    held: parking_lot::Mutex<Option<Vec<u8>>>,
    /// How often a node re-reads the record even without an announcement.
    pub refresh: std::time::Duration,
}

impl KeyShare {
    /// The share of the deployment whose Redis keys start with `key_prefix`.
    pub fn new(kek: Kek, key_prefix: &str, refresh: std::time::Duration) -> KeyShare {
        let mut aad = AAD_LABEL.to_vec();
        aad.extend_from_slice(key_prefix.as_bytes());
        KeyShare {
            kek,
            aad,
            seen: AtomicU64::new(0),
            held: parking_lot::Mutex::new(None),
            refresh,
        }
    }

    fn seal(&self, set: &SharedSet) -> Result<Vec<u8>, ShareError> {
        let plain = Zeroizing::new(
            cbor4ii::serde::to_vec(Vec::new(), set)
                .map_err(|e| ShareError::Corrupt(e.to_string()))?,
        );
        self.kek.seal(&self.aad, &plain)
    }

    fn open(&self, sealed: &[u8]) -> Result<SharedSet, ShareError> {
        let plain = self.kek.open(&self.aad, sealed)?;
        cbor4ii::serde::from_slice(&plain).map_err(|_| ShareError::Corrupt("not a key set".into()))
    }

    /// The record as stored now, sealed and opened.
    fn read(
        &self,
        store: &dyn Store,
        now: UnixTime,
    ) -> Result<Option<(Vec<u8>, SharedSet)>, ShareError> {
        match store.get(Namespace::SigningKey, RECORD_KEY, now)? {
            None => Ok(None),
            Some(sealed) => {
                let set = self.open(&sealed)?;
                Ok(Some((sealed, set)))
            }
        }
    }

    fn expiry(now: UnixTime) -> UnixTime {
        UnixTime(now.0.saturating_add(LIFETIME_SECS))
    }

    /// Join the cluster: take the shared record, creating it from `local()` when the
    /// store has none, and add a signer for any algorithm of `wanted` it lacks.
    pub fn join(
        &self,
        store: &dyn Store,
        local: impl FnOnce() -> Result<SharedSet, ShareError>,
        wanted: &[Algorithm],
        now: UnixTime,
    ) -> Result<SharedSet, ShareError> {
        let mut local = Some(local);
        for _ in 0..CAS_ATTEMPTS {
            let (sealed, set) = match self.read(store, now)? {
                Some(found) => found,
                None => {
                    let Some(make) = local.take() else {
                        return Err(ShareError::Contended);
                    };
                    let set = make()?;
                    let sealed = self.seal(&set)?;
                    match store.insert_new(
                        Namespace::SigningKey,
                        RECORD_KEY,
                        &sealed,
                        Self::expiry(now),
                        now,
                    )? {
                        Inserted::New => (sealed, set),
                        // Another node created it first: take theirs.
                        Inserted::AlreadyPresent => continue,
                    }
                }
            };
            match set.with_signers(wanted)? {
                None => {
                    self.hold(set.generation, sealed);
                    return Ok(set);
                }
                Some(next) => {
                    if let Some(sealed) = self.swap(store, &sealed, &next, now)? {
                        self.hold(next.generation, sealed);
                        return Ok(next);
                    }
                }
            }
        }
        Err(ShareError::Contended)
    }

    fn hold(&self, generation: u64, sealed: Vec<u8>) {
        self.seen.store(generation, Ordering::Release);
        *self.held.lock() = Some(sealed);
    }

    /// Replace `expected` by `next`; the new sealed record if this call won.
    fn swap(
        &self,
        store: &dyn Store,
        expected: &[u8],
        next: &SharedSet,
        now: UnixTime,
    ) -> Result<Option<Vec<u8>>, ShareError> {
        let sealed = self.seal(next)?;
        let swapped = store.compare_and_swap(
            Namespace::SigningKey,
            RECORD_KEY,
            expected,
            Some((&sealed, Self::expiry(now))),
            now,
        )?;
        Ok((swapped == Swapped::Done).then_some(sealed))
    }

    /// `heartgate keys rotate` on a cluster: the next generation with a new active key.
    /// Returns the new generation's active kid.
    pub fn rotate(&self, store: &dyn Store, now: UnixTime) -> Result<String, ShareError> {
        for _ in 0..CAS_ATTEMPTS {
            let (sealed, set) = self.read(store, now)?.ok_or_else(|| {
                ShareError::Corrupt("no shared keys yet: start a node first".into())
            })?;
            let next = set.rotated()?;
            if self.swap(store, &sealed, &next, now)?.is_some() {
                return next.active_kid();
            }
        }
        Err(ShareError::Contended)
    }

    /// Re-read the record and swap `ring` to it if it is newer than what this node
    /// holds. Returns whether the ring changed.
    ///
    /// If the store lost the record (a Redis restarted without persistence, a failover
    /// to a replica that had not received it), the node puts back the sealed record it
    /// holds, so that a node joining later takes the cluster's keys instead of making
    /// its own.
    pub fn refresh(
        &self,
        store: &dyn Store,
        ring: &KeyRing,
        now: UnixTime,
    ) -> Result<bool, ShareError> {
        let Some((sealed, set)) = self.read(store, now)? else {
            let held = self.held.lock().clone();
            if let Some(held) = held {
                if store.insert_new(
                    Namespace::SigningKey,
                    RECORD_KEY,
                    &held,
                    Self::expiry(now),
                    now,
                )? == Inserted::New
                {
                    tracing::warn!("shared keys: the store had lost them; put back");
                }
            }
            return Ok(false);
        };
        if set.generation <= self.seen.load(Ordering::Acquire) {
            return Ok(false);
        }
        set.apply(ring)?;
        self.hold(set.generation, sealed);
        Ok(true)
    }

    /// The generation this node's ring holds.
    pub fn generation(&self) -> u64 {
        self.seen.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code
    use super::*;
    use heartgate_core::store::MemoryStore;

    const NOW: UnixTime = UnixTime(1_800_000_000);

    fn local(alg: Algorithm) -> SharedSet {
        let keys = LocalKeys {
            active: SigningKey::generate(alg).unwrap(),
            signers: vec![],
            published: vec![],
        };
        SharedSet::from_local(&keys, &[1; 32], &[2; 32], "hgiat_x")
    }

    fn share(kek: u8, prefix: &str) -> KeyShare {
        KeyShare::new(
            Kek::from_bytes(&[kek; 32]).unwrap(),
            prefix,
            std::time::Duration::from_secs(30),
        )
    }

    #[test]
    fn the_first_node_seals_its_keys_and_the_second_takes_them() {
        let store = MemoryStore::new();
        let a = share(7, "p");
        let first = a
            .join(&store, || Ok(local(Algorithm::ES256)), &[], NOW)
            .unwrap();
        let b = share(7, "p");
        let mut called = false;
        let second = b
            .join(
                &store,
                || {
                    called = true;
                    Ok(local(Algorithm::ES256))
                },
                &[],
                NOW,
            )
            .unwrap();
        assert!(!called, "the second node does not make keys of its own");
        assert_eq!(first.active_kid().unwrap(), second.active_kid().unwrap());
        assert_eq!(*second.session_secret().unwrap(), [2; 32]);
        assert_eq!(*second.pairwise_secret().unwrap(), [1; 32]);
        assert_eq!(&*second.initial_access_token(), "hgiat_x");
    }

    #[test]
    fn redis_never_holds_the_keys_in_clear() {
        let store = MemoryStore::new();
        let set = local(Algorithm::ES256);
        let der = set.active.pkcs8.clone();
        share(7, "p").join(&store, || Ok(set), &[], NOW).unwrap();
        let sealed = store
            .get(Namespace::SigningKey, RECORD_KEY, NOW)
            .unwrap()
            .unwrap();
        assert!(
            !sealed.windows(32).any(|w| der.windows(32).any(|d| d == w)),
            "no 32-byte run of the PKCS#8 key appears in the stored record"
        );
        assert!(!sealed.windows(7).any(|w| w == b"hgiat_x"));
    }

    #[test]
    fn a_wrong_kek_or_another_deployments_prefix_does_not_open_the_record() {
        let store = MemoryStore::new();
        share(7, "p")
            .join(&store, || Ok(local(Algorithm::ES256)), &[], NOW)
            .unwrap();
        for other in [share(8, "p"), share(7, "q")] {
            let e = other
                .join(&store, || Ok(local(Algorithm::ES256)), &[], NOW)
                .unwrap_err();
            assert!(matches!(e, ShareError::Sealed), "{e}");
        }
        // A tampered record: one bit flipped.
        let mut sealed = store
            .get(Namespace::SigningKey, RECORD_KEY, NOW)
            .unwrap()
            .unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        store
            .put(
                Namespace::SigningKey,
                RECORD_KEY,
                &sealed,
                KeyShare::expiry(NOW),
            )
            .unwrap();
        assert!(matches!(
            share(7, "p").join(&store, || Ok(local(Algorithm::ES256)), &[], NOW),
            Err(ShareError::Sealed)
        ));
    }

    #[test]
    fn a_rotation_reaches_the_other_nodes_ring_and_keeps_the_old_key_published() {
        let store = MemoryStore::new();
        let a = share(7, "p");
        let b = share(7, "p");
        let set_a = a
            .join(&store, || Ok(local(Algorithm::ES256)), &[], NOW)
            .unwrap();
        let set_b = b
            .join(&store, || Ok(local(Algorithm::ES256)), &[], NOW)
            .unwrap();
        let ring_b = set_b.ring().unwrap();
        let old = set_a.active_kid().unwrap();
        assert!(!b.refresh(&store, &ring_b, NOW).unwrap(), "nothing new yet");

        let new = a.rotate(&store, NOW).unwrap();
        assert_ne!(new, old);
        assert!(b.refresh(&store, &ring_b, NOW).unwrap());
        assert_eq!(b.generation(), 2);
        let s = ring_b.snapshot();
        assert_eq!(s.active().kid(), new);
        assert!(
            s.jwks().get(&old).is_some(),
            "the previous key stays published"
        );
        // Rotations keep at most KEEP_PUBLISHED previous keys.
        for _ in 0..4 {
            a.rotate(&store, NOW).unwrap();
        }
        b.refresh(&store, &ring_b, NOW).unwrap();
        assert_eq!(ring_b.snapshot().jwks().keys().len(), 1 + KEEP_PUBLISHED);
    }

    #[test]
    fn a_record_the_store_lost_is_put_back_by_a_node_that_holds_it() {
        let store = MemoryStore::new();
        let a = share(7, "p");
        let set = a
            .join(&store, || Ok(local(Algorithm::ES256)), &[], NOW)
            .unwrap();
        let ring = set.ring().unwrap();
        store.delete(Namespace::SigningKey, RECORD_KEY).unwrap();
        assert!(!a.refresh(&store, &ring, NOW).unwrap());
        let joined = share(7, "p")
            .join(&store, || Ok(local(Algorithm::ES256)), &[], NOW)
            .unwrap();
        assert_eq!(
            joined.active_kid().unwrap(),
            set.active_kid().unwrap(),
            "a node joining after the loss takes the cluster's keys, not new ones"
        );
    }

    #[test]
    fn a_node_wanting_another_algorithm_adds_one_signer_for_everyone() {
        let store = MemoryStore::new();
        let a = share(7, "p");
        a.join(&store, || Ok(local(Algorithm::ES256)), &[], NOW)
            .unwrap();
        let b = share(7, "p");
        let set = b
            .join(
                &store,
                || Ok(local(Algorithm::ES256)),
                &[Algorithm::PS256],
                NOW,
            )
            .unwrap();
        assert_eq!(set.generation(), 2);
        let ring = set.ring().unwrap();
        assert!(ring.snapshot().signer(Algorithm::PS256).is_some());
        // Asking again adds nothing.
        let again = share(7, "p")
            .join(
                &store,
                || Ok(local(Algorithm::ES256)),
                &[Algorithm::PS256],
                NOW,
            )
            .unwrap();
        assert_eq!(again.generation(), 2);
    }

    #[test]
    fn concurrent_first_starts_agree_on_one_key_set() {
        let store = Arc::new(MemoryStore::new());
        let kids: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    let store = store.clone();
                    s.spawn(move || {
                        share(7, "p")
                            .join(&*store, || Ok(local(Algorithm::ES256)), &[], NOW)
                            .unwrap()
                            .active_kid()
                            .unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(kids.windows(2).all(|w| w[0] == w[1]), "{kids:?}");
    }

    #[test]
    fn a_store_outage_is_an_error_not_new_keys() {
        use heartgate_core::store::conformance::Unavailable as Down;
        let e = share(7, "p")
            .join(&Down, || Ok(local(Algorithm::ES256)), &[], NOW)
            .unwrap_err();
        assert!(matches!(e, ShareError::Store(StoreError::Unavailable)));
        assert!(matches!(
            share(7, "p").rotate(&Down, NOW),
            Err(ShareError::Store(_))
        ));
    }

    #[test]
    fn kek_files_must_hold_32_bytes_in_base64url() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("kek");
        std::fs::write(&good, Kek::generate_text().unwrap().as_bytes()).unwrap();
        Kek::from_file(&good).unwrap();
        for (name, content) in [("short", "AAAA"), ("junk", "not base64!"), ("empty", "")] {
            let p = dir.path().join(name);
            std::fs::write(&p, content).unwrap();
            assert!(
                matches!(Kek::from_file(&p), Err(ShareError::Kek { .. })),
                "{name}"
            );
        }
        assert!(matches!(
            Kek::from_file(&dir.path().join("missing")),
            Err(ShareError::Kek { .. })
        ));
    }
}
