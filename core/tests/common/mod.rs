//! Shared test scaffolding: an in-memory client directory.

use std::collections::HashMap;
use std::sync::Arc;

use heartgate_core::client::{ClientDirectory, ClientMetadata, ValidatedClient};
use heartgate_core::jose::JwkSet;

/// Clients by id; their keys are the inline `jwks`.
#[allow(dead_code)] // reason: not every test file uses a static directory
pub struct Dir(pub HashMap<String, Arc<ValidatedClient>>);

impl ClientDirectory for Dir {
    fn client(&self, id: &str) -> Option<Arc<ValidatedClient>> {
        self.0.get(id).cloned()
    }
    fn keys(&self, c: &ValidatedClient) -> Option<Arc<JwkSet>> {
        c.shared_jwks()
    }
}

/// Parse and validate client metadata, panicking on failure.
#[allow(dead_code)] // reason: not every test file registers clients from JSON
pub fn client(v: serde_json::Value) -> Arc<ValidatedClient> {
    Arc::new(
        ClientMetadata::from_json(v.to_string().as_bytes())
            .unwrap()
            .validate()
            .unwrap(),
    )
}

/// A store that delegates to a [`MemoryStore`] and fails the operations switched on,
/// for the "store unavailable" paths (THREATS V4, S-cases).
#[allow(dead_code)] // reason: not every test file injects store failures
#[derive(Default)]
pub struct FlakyStore {
    /// The real store.
    pub inner: heartgate_core::store::MemoryStore,
    /// Fail `put`, `insert_new`, `take`, `delete` and `compare_and_swap`.
    pub fail_writes: std::sync::atomic::AtomicBool,
    /// Fail only `compare_and_swap`.
    pub fail_cas: std::sync::atomic::AtomicBool,
    /// Fail reads too.
    pub fail_reads: std::sync::atomic::AtomicBool,
}

#[allow(dead_code)] // reason: not every test file injects store failures
mod flaky {
    use super::FlakyStore;
    use heartgate_core::clock::UnixTime;
    use heartgate_core::store::*;
    use std::sync::atomic::Ordering::SeqCst;

    impl FlakyStore {
        /// Fail every call (reads and writes) while `down`.
        pub fn set_down(&self, down: bool) {
            self.fail_writes.store(down, SeqCst);
            self.fail_reads.store(down, SeqCst);
        }

        fn w(&self) -> Result<(), StoreError> {
            if self.fail_writes.load(SeqCst) {
                Err(StoreError::Unavailable)
            } else {
                Ok(())
            }
        }
        fn r(&self) -> Result<(), StoreError> {
            if self.fail_reads.load(SeqCst) {
                Err(StoreError::Unavailable)
            } else {
                Ok(())
            }
        }
    }

    impl Store for FlakyStore {
        fn put(&self, ns: Namespace, k: &[u8], v: &[u8], e: UnixTime) -> Result<(), StoreError> {
            self.w()?;
            self.inner.put(ns, k, v, e)
        }
        fn insert_new(
            &self,
            ns: Namespace,
            k: &[u8],
            v: &[u8],
            e: UnixTime,
            now: UnixTime,
        ) -> Result<Inserted, StoreError> {
            self.w()?;
            self.inner.insert_new(ns, k, v, e, now)
        }
        fn get(
            &self,
            ns: Namespace,
            k: &[u8],
            now: UnixTime,
        ) -> Result<Option<Vec<u8>>, StoreError> {
            self.r()?;
            self.inner.get(ns, k, now)
        }
        fn take(
            &self,
            ns: Namespace,
            k: &[u8],
            now: UnixTime,
        ) -> Result<Option<Vec<u8>>, StoreError> {
            self.w()?;
            self.inner.take(ns, k, now)
        }
        fn compare_and_swap(
            &self,
            ns: Namespace,
            k: &[u8],
            expected: &[u8],
            new: Option<(&[u8], UnixTime)>,
            now: UnixTime,
        ) -> Result<Swapped, StoreError> {
            self.w()?;
            if self.fail_cas.load(SeqCst) {
                return Err(StoreError::Unavailable);
            }
            self.inner.compare_and_swap(ns, k, expected, new, now)
        }
        fn delete(&self, ns: Namespace, k: &[u8]) -> Result<(), StoreError> {
            self.w()?;
            self.inner.delete(ns, k)
        }
        fn scan_prefix(
            &self,
            ns: Namespace,
            p: &[u8],
            limit: usize,
            now: UnixTime,
        ) -> Result<Vec<Entry>, StoreError> {
            self.r()?;
            self.inner.scan_prefix(ns, p, limit, now)
        }
        fn purge_expired(&self, now: UnixTime) -> Result<usize, StoreError> {
            self.w()?;
            self.inner.purge_expired(now)
        }
        fn snapshot(&self, now: UnixTime) -> Result<Vec<SnapshotEntry>, StoreError> {
            self.inner.snapshot(now)
        }
    }
}
