#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

//! The redb file store: the conformance suite, durability across reopen and SIGKILL, group
//! commit under concurrency, fail-closed commits, and refusal of files that are not ours.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use heartgate_core::clock::UnixTime;
use heartgate_core::store::conformance::Kept;
use heartgate_core::store::{Inserted, Namespace, Store, StoreError, Swapped};
use heartgate_server::stores::redb::{OpenError, RedbStore};
use tempfile::TempDir;

const T0: UnixTime = UnixTime(1_700_000_000);
const LATER: UnixTime = UnixTime(1_700_000_600);

/// A fresh store in its own temporary directory, removed when the store is dropped (the
/// store is dropped first: fields drop in declaration order).
/// A redb store in a temporary directory, removed with it.
type TempStore = Kept<RedbStore, TempDir>;

fn temp_store() -> TempStore {
    let dir = TempDir::new().unwrap();
    let store = RedbStore::open(dir.path().join("store.redb")).unwrap();
    Kept { store, keep: dir }
}

mod conformance {
    use super::temp_store;

    heartgate_core::store_conformance_tests!(temp_store());
}

fn store_path(dir: &TempDir) -> PathBuf {
    dir.path().join("store.redb")
}

#[test]
fn acknowledged_writes_of_every_kind_survive_reopen() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    let before = {
        let s = RedbStore::open(&path).unwrap();
        s.put(Namespace::Client, b"put", b"v-put", LATER).unwrap();
        assert_eq!(
            s.insert_new(Namespace::Jti, b"jti", b"v-jti", LATER, T0)
                .unwrap(),
            Inserted::New
        );
        s.put(Namespace::Code, b"taken", b"v-code", LATER).unwrap();
        s.put(Namespace::Code, b"kept", b"v-kept", LATER).unwrap();
        assert_eq!(
            s.take(Namespace::Code, b"taken", T0).unwrap(),
            Some(b"v-code".to_vec())
        );
        s.put(Namespace::RefreshToken, b"rt", b"active", LATER)
            .unwrap();
        assert_eq!(
            s.compare_and_swap(
                Namespace::RefreshToken,
                b"rt",
                b"active",
                Some((b"superseded", LATER)),
                T0
            )
            .unwrap(),
            Swapped::Done
        );
        s.put(Namespace::Ciba, b"gone", b"pending", LATER).unwrap();
        assert_eq!(
            s.compare_and_swap(Namespace::Ciba, b"gone", b"pending", None, T0)
                .unwrap(),
            Swapped::Done
        );
        s.put(Namespace::Grant, b"deleted", b"v", LATER).unwrap();
        s.delete(Namespace::Grant, b"deleted").unwrap();
        s.snapshot(T0).unwrap()
    };

    let s = RedbStore::open(&path).unwrap();
    assert_eq!(
        s.get(Namespace::Client, b"put", T0).unwrap(),
        Some(b"v-put".to_vec())
    );
    assert_eq!(
        s.get(Namespace::Jti, b"jti", T0).unwrap(),
        Some(b"v-jti".to_vec())
    );
    assert_eq!(
        s.get(Namespace::Code, b"taken", T0).unwrap(),
        None,
        "a taken code stays taken"
    );
    assert_eq!(
        s.take(Namespace::Code, b"taken", T0).unwrap(),
        None,
        "and cannot be redeemed again after a restart"
    );
    assert_eq!(
        s.get(Namespace::Code, b"kept", T0).unwrap(),
        Some(b"v-kept".to_vec())
    );
    assert_eq!(
        s.get(Namespace::RefreshToken, b"rt", T0).unwrap(),
        Some(b"superseded".to_vec())
    );
    assert_eq!(s.get(Namespace::Ciba, b"gone", T0).unwrap(), None);
    assert_eq!(s.get(Namespace::Grant, b"deleted", T0).unwrap(), None);
    assert_eq!(s.snapshot(T0).unwrap(), before, "the whole state survives");
}

#[test]
fn expiry_survives_reopen() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    let exp = UnixTime(T0.0 + 60);
    RedbStore::open(&path)
        .unwrap()
        .put(Namespace::Code, b"c", b"v", exp)
        .unwrap();
    let s = RedbStore::open(&path).unwrap();
    assert!(s
        .get(Namespace::Code, b"c", UnixTime(exp.0 - 1))
        .unwrap()
        .is_some());
    assert_eq!(s.get(Namespace::Code, b"c", exp).unwrap(), None);
}

/// The environment variable that makes [`sigkill_child_writer`] act as the child.
const CHILD_ENV: &str = "HEARTGATE_REDB_SIGKILL_CHILD_STORE";
/// Writer threads in the child, so that it is killed with group commits in flight.
const CHILD_THREADS: usize = 8;
/// Acknowledgements the parent waits for before killing the child.
const KILL_AFTER_ACKS: usize = 400;

/// The child of `acknowledged_writes_survive_sigkill`: writes until killed, printing
/// `ack <key>` after each write has returned `Ok`.
#[test]
#[ignore = "the child process of acknowledged_writes_survive_sigkill, which runs it with --ignored"]
fn sigkill_child_writer() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = RedbStore::open(PathBuf::from(path)).unwrap();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..CHILD_THREADS {
            let store = &store;
            scope.spawn(move || {
                // Bounded, in case the parent fails to kill us.
                for i in 0.. {
                    if started.elapsed() > Duration::from_secs(60) {
                        return;
                    }
                    let key = format!("t{t}-{i}");
                    store
                        .put(Namespace::Code, key.as_bytes(), key.as_bytes(), LATER)
                        .unwrap();
                    // Straight to fd 1, past the test harness's capture.
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {key}").unwrap();
                    out.flush().unwrap();
                }
            });
        }
    });
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "sigkill_child_writer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked = Vec::new();
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(key) = line.strip_prefix("ack ") {
            acked.push(key.to_owned());
        }
        if !killed && acked.len() >= KILL_AFTER_ACKS {
            child.kill().unwrap(); // SIGKILL on Unix
            killed = true;
        }
        // Keep reading: every line printed before the kill is an acknowledgement too.
    }
    let status = child.wait().unwrap();
    assert!(
        killed,
        "the child stopped after {} acknowledgements: {status}, stderr: {}",
        acked.len(),
        std::io::read_to_string(child.stderr.take().unwrap()).unwrap_or_default()
    );

    let store = RedbStore::open(&path).unwrap();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|k| {
            store.get(Namespace::Code, k.as_bytes(), T0).unwrap() != Some(k.as_bytes().to_vec())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost: {missing:?}",
        missing.len(),
        acked.len()
    );
    println!(
        "{} acknowledged writes, {} entries after SIGKILL and reopen",
        acked.len(),
        store.snapshot(T0).unwrap().len()
    );
}

#[test]
fn group_commit_keeps_every_write_of_64_threads() {
    const THREADS: usize = 64;
    const PUTS: usize = 200;
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    {
        let store = RedbStore::open(&path).unwrap();
        let barrier = Barrier::new(THREADS);
        let started = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (store, barrier) = (&store, &barrier);
                    scope.spawn(move || {
                        let started = barrier.wait().is_leader().then(Instant::now);
                        for i in 0..PUTS {
                            let key = format!("{t:02}/{i:03}");
                            store
                                .put(Namespace::AccessToken, key.as_bytes(), b"v", LATER)
                                .unwrap();
                        }
                        started
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().unwrap())
                .next()
                .unwrap()
        });
        let elapsed = started.elapsed();
        println!(
            "{THREADS} threads x {PUTS} durable puts in {elapsed:?}: {:.0} puts/s",
            (THREADS * PUTS) as f64 / elapsed.as_secs_f64()
        );
    }
    let store = RedbStore::open(&path).unwrap();
    for t in 0..THREADS {
        let entries = store
            .scan_prefix(
                Namespace::AccessToken,
                format!("{t:02}/").as_bytes(),
                usize::MAX,
                T0,
            )
            .unwrap();
        assert_eq!(entries.len(), PUTS, "thread {t}'s writes after reopen");
    }
    assert_eq!(store.snapshot(T0).unwrap().len(), THREADS * PUTS);
}

#[test]
fn dropping_the_store_stops_the_writer_and_releases_the_file() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    let first = RedbStore::open(&path).unwrap();
    first.put(Namespace::Code, b"k", b"v", LATER).unwrap();
    assert!(
        matches!(RedbStore::open(&path), Err(OpenError::Locked)),
        "a second open of a file in use is refused"
    );
    drop(first);
    // Reopening works only if the writer thread let go of the database.
    let second = RedbStore::open(&path).unwrap();
    assert_eq!(
        second.get(Namespace::Code, b"k", T0).unwrap(),
        Some(b"v".to_vec())
    );
}

fn assert_refused_and_untouched(path: &Path, contents: &[u8]) {
    std::fs::write(path, contents).unwrap();
    let result = RedbStore::open(path);
    assert!(result.is_err(), "opened a foreign file: {result:?}");
    assert_eq!(
        std::fs::read(path).unwrap(),
        contents,
        "a refused file is left as it was"
    );
}

#[test]
fn a_file_that_is_not_a_redb_database_is_an_error() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    assert_refused_and_untouched(&path, b"issuer = \"https://as.example\"\n");
    let noise: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert_refused_and_untouched(&path, &noise);
    assert!(matches!(
        RedbStore::open(&path),
        Err(OpenError::Database(_))
    ));
}

#[test]
fn a_damaged_store_file_is_an_error_not_a_panic() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    {
        let s = RedbStore::open(&path).unwrap();
        for i in 0..100u32 {
            s.put(Namespace::Code, &i.to_be_bytes(), &[7; 100], LATER)
                .unwrap();
        }
    }
    let good = std::fs::read(&path).unwrap();
    // The magic number survives but the rest is cut off or overwritten.
    for len in [16, 100, 600, 4096, good.len() / 2] {
        assert_refused_and_untouched(&path, &good[..len.min(good.len())]);
    }
    let mut scribbled = good.clone();
    for b in scribbled.iter_mut().skip(16).take(4096) {
        *b = 0xA5;
    }
    std::fs::write(&path, &scribbled).unwrap();
    assert!(RedbStore::open(&path).is_err());
}

#[test]
fn a_redb_database_of_another_program_is_refused() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, &str>::new("settings"))
            .unwrap()
            .insert("theme", "dark")
            .unwrap();
        txn.commit().unwrap();
    }
    assert!(matches!(
        RedbStore::open(&path),
        Err(OpenError::ForeignLayout)
    ));
}

#[test]
fn an_empty_file_becomes_a_new_store() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    std::fs::write(&path, b"").unwrap();
    let s = RedbStore::open(&path).unwrap();
    s.put(Namespace::Code, b"k", b"v", LATER).unwrap();
    assert_eq!(
        s.get(Namespace::Code, b"k", T0).unwrap(),
        Some(b"v".to_vec())
    );
}

#[test]
fn a_malformed_record_fails_closed() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    drop(RedbStore::open(&path).unwrap());
    {
        // A record too short to hold its expiry, written behind the store's back.
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&[u8], &[u8]>::new(
            Namespace::Revocation.as_str(),
        ))
        .unwrap()
        .insert(&b"jti"[..], &b"\x01"[..])
        .unwrap();
        txn.commit().unwrap();
    }
    let s = RedbStore::open(&path).unwrap();
    let ns = Namespace::Revocation;
    assert_eq!(s.get(ns, b"jti", T0), Err(StoreError::Unavailable));
    assert_eq!(
        s.scan_prefix(ns, b"j", 10, T0),
        Err(StoreError::Unavailable)
    );
    assert_eq!(s.snapshot(T0), Err(StoreError::Unavailable));
    assert_eq!(
        s.insert_new(ns, b"jti", b"v", LATER, T0),
        Err(StoreError::Unavailable)
    );
    assert_eq!(s.take(ns, b"jti", T0), Err(StoreError::Unavailable));
    assert_eq!(
        s.purge_expired(LATER),
        Ok(0),
        "purge keeps what it cannot judge"
    );
    assert_eq!(s.get(ns, b"jti", T0), Err(StoreError::Unavailable));
}

/// A storage backend whose writes and syncs fail while `failing` is set.
#[derive(Debug)]
struct FlakyBackend {
    inner: redb::backends::InMemoryBackend,
    failing: Arc<AtomicBool>,
}

impl FlakyBackend {
    fn check(&self) -> std::io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected failure"));
        }
        Ok(())
    }
}

impl redb::StorageBackend for FlakyBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.inner.read(offset, len)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.inner.set_len(len)
    }

    fn sync_data(&self, eventual: bool) -> std::io::Result<()> {
        self.check()?;
        self.inner.sync_data(eventual)
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.inner.write(offset, data)
    }
}

#[test]
fn a_failed_commit_fails_every_op_of_the_batch_and_the_store_fails_closed() {
    let failing = Arc::new(AtomicBool::new(false));
    let store = RedbStore::open_backend(FlakyBackend {
        inner: redb::backends::InMemoryBackend::new(),
        failing: Arc::clone(&failing),
    })
    .unwrap();
    store.put(Namespace::Code, b"code", b"v", LATER).unwrap();

    failing.store(true, Ordering::SeqCst);
    const THREADS: usize = 16;
    let barrier = Barrier::new(THREADS);
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (store, barrier) = (&store, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    let key = format!("k{t}");
                    [
                        store
                            .put(Namespace::Code, key.as_bytes(), b"v", LATER)
                            .map(|_| ()),
                        store
                            .insert_new(Namespace::Jti, key.as_bytes(), b"v", LATER, T0)
                            .map(|_| ()),
                        store.take(Namespace::Code, b"code", T0).map(|_| ()),
                        store
                            .compare_and_swap(Namespace::Code, b"code", b"v", None, T0)
                            .map(|_| ()),
                        store.delete(Namespace::Code, b"code"),
                    ]
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in results.iter().flatten() {
        assert_eq!(*r, Err(StoreError::Unavailable));
    }

    // The device recovers, but this store stays closed for writes until reopened, and no
    // failed write is visible to readers.
    failing.store(false, Ordering::SeqCst);
    assert_eq!(
        store.put(Namespace::Code, b"later", b"v", LATER),
        Err(StoreError::Unavailable)
    );
    for t in 0..THREADS {
        let key = format!("k{t}");
        assert!(!matches!(
            store.get(Namespace::Code, key.as_bytes(), T0),
            Ok(Some(_))
        ));
        assert!(!matches!(
            store.get(Namespace::Jti, key.as_bytes(), T0),
            Ok(Some(_))
        ));
    }
    assert!(
        !matches!(store.get(Namespace::Code, b"code", T0), Ok(None)),
        "the code was not taken"
    );
}
