#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

//! The embedded store's purge under volume (issue 9, THREATS §4.5 "redb file size bounded
//! by TTL sweeps"): the soak test saw `store.redb` double at each 5-minute purge while the
//! purge removed every expired record in one write transaction. These tests run the store
//! on an in-memory redb backend that counts commits (`sync_data` calls) and records the
//! file length redb asks for, so they need no disk and no timing.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use heartgate_core::clock::UnixTime;
use heartgate_core::store::{Namespace, Store};
use heartgate_server::stores::redb::{RedbStore, PURGE_BATCH};

const T0: UnixTime = UnixTime(1_700_000_000);
/// When the first round's records expire, and a time at which they all have.
const EXPIRY: UnixTime = UnixTime(1_700_000_060);
const AFTER: UnixTime = UnixTime(1_700_000_120);
const LATER: UnixTime = UnixTime(1_700_001_000);
/// Records per round, about what the soak's 5 minutes leave in the `jti` and
/// access-token namespaces between two purges.
const RECORDS: usize = 50_000;
/// Writers putting records at once, so that group commit packs them (256 a transaction).
const WRITERS: usize = 64;

/// What the store did to its storage.
#[derive(Debug, Default)]
struct Meter {
    /// `sync_data` calls: one per durable commit.
    syncs: AtomicUsize,
    /// The file length redb last set (it never shrinks the file itself).
    len: AtomicU64,
    /// The largest length ever set.
    max_len: AtomicU64,
}

/// redb's in-memory backend, metered.
#[derive(Debug)]
struct MeteredBackend {
    inner: redb::backends::InMemoryBackend,
    meter: Arc<Meter>,
}

impl redb::StorageBackend for MeteredBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.inner.read(offset, len)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.meter.len.store(len, Ordering::SeqCst);
        self.meter.max_len.fetch_max(len, Ordering::SeqCst);
        self.inner.set_len(len)
    }

    fn sync_data(&self, eventual: bool) -> std::io::Result<()> {
        self.meter.syncs.fetch_add(1, Ordering::SeqCst);
        self.inner.sync_data(eventual)
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.inner.write(offset, data)
    }
}

fn metered_store() -> (RedbStore, Arc<Meter>) {
    let meter = Arc::new(Meter::default());
    let store = RedbStore::open_backend(MeteredBackend {
        inner: redb::backends::InMemoryBackend::new(),
        meter: Arc::clone(&meter),
    })
    .unwrap();
    (store, meter)
}

/// A key of record `i` of `round`: 32 bytes, like the store's hashed token keys.
fn key(round: u8, i: usize) -> Vec<u8> {
    let mut k = format!("r{round}-{i:08}-").into_bytes();
    k.resize(32, b'k');
    k
}

/// Put `RECORDS` records of `round` into `ns`, expiring at `expires_at`, from `WRITERS`
/// threads at once.
fn fill(store: &RedbStore, ns: Namespace, round: u8, expires_at: UnixTime) {
    let value = [0x5a_u8; 48];
    std::thread::scope(|scope| {
        for w in 0..WRITERS {
            scope.spawn(move || {
                for i in (w..RECORDS).step_by(WRITERS) {
                    store.put(ns, &key(round, i), &value, expires_at).unwrap();
                }
            });
        }
    });
}

#[test]
fn s4_5_purging_many_expired_records_takes_several_transactions_and_keeps_the_file_bounded() {
    let (store, meter) = metered_store();
    // Live records beside the expired ones: the purge must keep them.
    for i in 0..100 {
        store
            .put(Namespace::Client, &key(9, i), b"live", LATER)
            .unwrap();
    }
    fill(&store, Namespace::Jti, 1, EXPIRY);
    let filled = meter.len.load(Ordering::SeqCst);

    let syncs = meter.syncs.load(Ordering::SeqCst);
    assert_eq!(store.purge_expired(AFTER), Ok(RECORDS), "the purge count");
    let commits = meter.syncs.load(Ordering::SeqCst) - syncs;
    let purged = meter.max_len.load(Ordering::SeqCst);
    // The same amount again, into the pages the purge freed.
    fill(&store, Namespace::Jti, 2, LATER);
    let refilled = meter.max_len.load(Ordering::SeqCst);
    eprintln!(
        "file: {} KiB after {RECORDS} records, {} KiB at most during the purge ({commits} commits), {} KiB at most after {RECORDS} more",
        filled / 1024,
        purged / 1024,
        refilled / 1024
    );
    assert!(
        commits >= RECORDS / PURGE_BATCH,
        "{RECORDS} expired records removed in {commits} commit(s); at most {PURGE_BATCH} a transaction"
    );
    // The old single-transaction purge grew a 10 MiB file to over 100 MiB here: each removal
    // copied its whole B-tree path and kept the copies until the end of the transaction.
    assert!(
        purged <= 2 * filled,
        "the purge grew the file from {filled} to {purged} bytes"
    );
    assert!(
        refilled <= 2 * filled,
        "a second round of {RECORDS} records grew the file from {filled} to {refilled} bytes"
    );

    // Nothing live was removed, nothing expired is left, and a second purge finds nothing.
    for i in 0..100 {
        assert_eq!(
            store.get(Namespace::Client, &key(9, i), AFTER).unwrap(),
            Some(b"live".to_vec())
        );
    }
    assert_eq!(store.get(Namespace::Jti, &key(1, 0), T0).unwrap(), None);
    assert_eq!(
        store
            .get(Namespace::Jti, &key(2, RECORDS - 1), AFTER)
            .unwrap(),
        Some(vec![0x5a; 48])
    );
    assert_eq!(store.purge_expired(AFTER), Ok(0));
    assert_eq!(store.snapshot(AFTER).unwrap().len(), 100 + RECORDS);
}

#[test]
fn s4_5_repeated_fill_and_purge_rounds_reuse_the_freed_pages() {
    // The soak's pattern: records written, expired, purged, five minutes after five
    // minutes. The file must settle, not grow with every round.
    let (store, meter) = metered_store();
    let mut filled = None;
    let mut after_round = Vec::new();
    for round in 1..=4 {
        fill(&store, Namespace::AccessToken, round, EXPIRY);
        // The first round's records alone, before any purge: the baseline.
        filled.get_or_insert(meter.len.load(Ordering::SeqCst) / 1024);
        assert_eq!(store.purge_expired(AFTER), Ok(RECORDS), "round {round}");
        after_round.push(meter.max_len.load(Ordering::SeqCst) / 1024);
    }
    let filled = filled.unwrap_or_default();
    eprintln!("{filled} KiB for one round; largest file after each round (KiB): {after_round:?}");
    let last = after_round[after_round.len() - 1];
    assert!(
        last <= 2 * filled,
        "one round's records took {filled} KiB, the file grew to {last} KiB over the rounds: {after_round:?}"
    );
}

#[test]
fn s4_5_purge_counts_and_keeps_exactly_across_namespaces_and_batches() {
    let (store, _) = metered_store();
    // Expired and live records interleaved in key order, in several namespaces, so batch
    // boundaries fall between live records and inside and across tables.
    let spread = [Namespace::Client, Namespace::Jti, Namespace::RateLimit];
    let per_ns = 3 * PURGE_BATCH + 7;
    let mut expired = 0;
    for ns in spread {
        for i in 0..per_ns {
            let expires_at = if i % 3 == 0 { LATER } else { EXPIRY };
            expired += usize::from(expires_at == EXPIRY);
            store.put(ns, &key(1, i), b"v", expires_at).unwrap();
        }
    }
    // Expiry is `now >= expires_at`: purging at the expiry instant removes them too.
    assert_eq!(store.purge_expired(T0), Ok(0));
    assert_eq!(store.purge_expired(EXPIRY), Ok(expired));
    assert_eq!(store.purge_expired(EXPIRY), Ok(0));
    for ns in spread {
        // Read before the expiry: purged records are gone, not merely hidden.
        let left = store.scan_prefix(ns, b"r1-", usize::MAX, T0).unwrap();
        assert_eq!(left.len(), per_ns.div_ceil(3), "{ns:?}");
        assert!(left.iter().all(|(k, _)| {
            let i: usize = std::str::from_utf8(&k[3..11]).unwrap().parse().unwrap();
            i % 3 == 0
        }));
    }
}

#[test]
fn s4_5_a_write_queued_during_a_long_purge_is_committed_before_the_purge_ends() {
    let (store, meter) = metered_store();
    fill(&store, Namespace::Jti, 1, EXPIRY);
    // The purge goes through the namespaces in `Namespace::ALL` order and each table in key
    // order, so the last record of the last namespace is removed last.
    let last_ns = Namespace::ALL[Namespace::ALL.len() - 1];
    store.put(last_ns, b"removed-last", b"v", EXPIRY).unwrap();

    let before = meter.syncs.load(Ordering::SeqCst);
    std::thread::scope(|scope| {
        let purge = scope.spawn(|| store.purge_expired(AFTER));
        // Wait (no time limit) for the purge's first commit, then write.
        while meter.syncs.load(Ordering::SeqCst) == before && !purge.is_finished() {
            std::thread::yield_now();
        }
        store.put(Namespace::Code, b"during", b"v", LATER).unwrap();
        // Read as of before the expiry, so an expired record not yet purged is visible: the
        // write was acknowledged while the purge still had records to remove, i.e. it did
        // not wait behind the whole purge.
        let pending = store.get(last_ns, b"removed-last", T0).unwrap();
        assert_eq!(purge.join().unwrap(), Ok(RECORDS + 1));
        assert_eq!(
            pending,
            Some(b"v".to_vec()),
            "the write waited for the whole purge"
        );
    });
    assert_eq!(store.get(last_ns, b"removed-last", T0).unwrap(), None);
    assert_eq!(
        store.get(Namespace::Code, b"during", AFTER).unwrap(),
        Some(b"v".to_vec())
    );
}

/// The soak (THREATS §4.5) saw a purge over a million live tokens stall every write for
/// seconds while the writer scanned. The scan now runs in read transactions: a purge over
/// many live records and no expired one sends nothing to the writer and commits nothing,
/// and one with a few expired records commits only their removal.
#[test]
fn s4_5_the_purge_scan_does_not_go_through_the_writer() {
    let (store, meter) = metered_store();
    fill(&store, Namespace::AccessToken, 1, LATER);
    let syncs = meter.syncs.load(Ordering::SeqCst);
    assert_eq!(store.purge_expired(AFTER), Ok(0));
    assert_eq!(
        meter.syncs.load(Ordering::SeqCst),
        syncs,
        "a purge over {RECORDS} live records committed"
    );
    for i in 0..10 {
        store
            .put(Namespace::Jti, &key(7, i), b"short", EXPIRY)
            .unwrap();
    }
    let syncs = meter.syncs.load(Ordering::SeqCst);
    assert_eq!(store.purge_expired(AFTER), Ok(10));
    assert_eq!(
        meter.syncs.load(Ordering::SeqCst) - syncs,
        1,
        "ten expired records among {RECORDS} live ones: one removal commit"
    );
    assert_eq!(store.snapshot(AFTER).unwrap().len(), RECORDS);
}
