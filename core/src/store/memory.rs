//! The in-memory [`Store`]: for tests, benchmarks and single-process deployments that
//! accept losing state on restart. One `DashMap` per namespace; each key's operations
//! run under that key's shard lock, which makes them atomic.

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;

use super::{check_sizes, Entry, Inserted, Namespace, SnapshotEntry, Store, StoreError, Swapped};
use crate::clock::UnixTime;

#[derive(Debug, Clone)]
struct Item {
    value: Vec<u8>,
    expires_at: i64,
}

impl Item {
    fn live(&self, now: UnixTime) -> bool {
        now.secs() < self.expires_at
    }
}

/// An in-memory store.
#[derive(Debug)]
pub struct MemoryStore {
    tables: Vec<DashMap<Vec<u8>, Item>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            tables: Namespace::ALL.iter().map(|_| DashMap::new()).collect(),
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn table(&self, ns: Namespace) -> Result<&DashMap<Vec<u8>, Item>, StoreError> {
        let i = Namespace::ALL
            .iter()
            .position(|n| *n == ns)
            .ok_or(StoreError::Unavailable)?;
        self.tables.get(i).ok_or(StoreError::Unavailable)
    }
}

impl Store for MemoryStore {
    fn put(
        &self,
        ns: Namespace,
        key: &[u8],
        value: &[u8],
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        check_sizes(key, value)?;
        self.table(ns)?.insert(
            key.to_vec(),
            Item {
                value: value.to_vec(),
                expires_at: expires_at.secs(),
            },
        );
        Ok(())
    }

    fn insert_new(
        &self,
        ns: Namespace,
        key: &[u8],
        value: &[u8],
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<Inserted, StoreError> {
        check_sizes(key, value)?;
        let item = Item {
            value: value.to_vec(),
            expires_at: expires_at.secs(),
        };
        // An expired entry that was not swept yet counts as absent.
        match self.table(ns)?.entry(key.to_vec()) {
            MapEntry::Vacant(v) => {
                v.insert(item);
                Ok(Inserted::New)
            }
            MapEntry::Occupied(mut o) => {
                if !o.get().live(now) {
                    o.insert(item);
                    Ok(Inserted::New)
                } else {
                    Ok(Inserted::AlreadyPresent)
                }
            }
        }
    }

    fn get(&self, ns: Namespace, key: &[u8], now: UnixTime) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .table(ns)?
            .get(key)
            .filter(|i| i.live(now))
            .map(|i| i.value.clone()))
    }

    fn take(
        &self,
        ns: Namespace,
        key: &[u8],
        now: UnixTime,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .table(ns)?
            .remove(key)
            .filter(|(_, i)| i.live(now))
            .map(|(_, i)| i.value))
    }

    fn compare_and_swap(
        &self,
        ns: Namespace,
        key: &[u8],
        expected: &[u8],
        new: Option<(&[u8], UnixTime)>,
        now: UnixTime,
    ) -> Result<Swapped, StoreError> {
        if let Some((v, _)) = new {
            check_sizes(key, v)?;
        }
        match self.table(ns)?.entry(key.to_vec()) {
            MapEntry::Occupied(mut o) if o.get().live(now) && o.get().value == expected => {
                match new {
                    Some((v, exp)) => {
                        o.insert(Item {
                            value: v.to_vec(),
                            expires_at: exp.secs(),
                        });
                    }
                    None => {
                        o.remove();
                    }
                }
                Ok(Swapped::Done)
            }
            _ => Ok(Swapped::Conflict),
        }
    }

    fn delete(&self, ns: Namespace, key: &[u8]) -> Result<(), StoreError> {
        self.table(ns)?.remove(key);
        Ok(())
    }

    fn scan_prefix(
        &self,
        ns: Namespace,
        prefix: &[u8],
        limit: usize,
        now: UnixTime,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut out: Vec<Entry> = self
            .table(ns)?
            .iter()
            .filter(|e| e.key().starts_with(prefix) && e.value().live(now))
            .map(|e| (e.key().clone(), e.value().value.clone()))
            .collect();
        out.sort();
        out.truncate(limit);
        Ok(out)
    }

    fn purge_expired(&self, now: UnixTime) -> Result<usize, StoreError> {
        let mut n = 0;
        for t in &self.tables {
            let before = t.len();
            t.retain(|_, i| i.live(now));
            n += before.saturating_sub(t.len());
        }
        Ok(n)
    }

    fn snapshot(&self, now: UnixTime) -> Result<Vec<SnapshotEntry>, StoreError> {
        let mut out = Vec::new();
        for (ns, t) in Namespace::ALL.iter().zip(&self.tables) {
            for e in t.iter().filter(|e| e.value().live(now)) {
                out.push((*ns, e.key().clone(), e.value().value.clone()));
            }
        }
        out.sort();
        Ok(out)
    }
}
