//! The embedded file store: [`RedbStore`], a [`Store`] kept in one `redb` file in the data
//! directory. It is the server's default backend and has exactly the semantics of
//! [`heartgate_core::store::MemoryStore`]; both pass the same conformance suite.
//!
//! # Layout
//!
//! One redb table per [`Namespace`], named by [`Namespace::as_str`] (`code`, `jti`, ...),
//! so namespaces are isolated by construction. Keys are the caller's bytes; a value is a
//! *record*: the entry's absolute expiry as an 8-byte big-endian `i64` (Unix seconds)
//! followed by the caller's value bytes. A table `heartgate_meta` holds the layout version
//! ([`LAYOUT_VERSION`]). New files are created in redb's v3 file format, which redb 3 and
//! later open without an upgrade step.
//!
//! Opening refuses, with an [`OpenError`] and never a panic:
//! - a file that is not a redb database, which is left untouched;
//! - a redb file truncated or damaged so that redb cannot read it (redb 2 panics on some
//!   of those; `open` catches that, relying on the workspace's `panic = "unwind"`);
//! - a redb database that holds tables but no `heartgate_meta` (another program's), or a
//!   layout version other than ours;
//! - a file already open, in this or another process.
//!
//! A file that does not exist, or is empty, becomes a new store. Nothing read from the file
//! is `unwrap`ped: a record too short to hold its expiry makes the operation that meets it
//! fail with [`StoreError::Unavailable`] (fail closed: a damaged revocation record must not
//! read as "not revoked"). Damage that redb only detects later, by panicking, is not caught
//! on reads: the panic ends the caller's request, never answers it.
//!
//! # Durability
//!
//! A write call returns `Ok` only after the redb transaction holding it was committed with
//! [`Durability::Immediate`]: redb has written the new commit slot and `fsync`ed the file,
//! so an acknowledged write survives SIGKILL and power loss (as far as the disk honours
//! `fsync`). redb's default one-phase commit with checksums is used: after a crash, the
//! newest commit slot whose checksum verifies wins, so every commit that returned is there;
//! a commit cut short by the crash may or may not be (its callers were never answered).
//! Two-phase commit is not enabled: it costs a second `fsync` per commit and guards only
//! against an attacker who controls the order pages reach the disk and can crash the
//! machine mid-`fsync`. Quick repair is not enabled either (it implies two-phase commit):
//! the price is that the first open after a crash walks the whole file, which for a store
//! of short-lived tokens stays small. Neither is observable through [`Store`].
//!
//! # Group commit
//!
//! Every write (`put`, `insert_new`, `take`, `compare_and_swap`, `delete`, `purge_expired`)
//! is sent over a bounded channel to one dedicated writer thread and the caller blocks for
//! its own answer. The writer takes the first queued request and whatever else is already
//! queued, up to [`MAX_BATCH`] requests or about [`MAX_BATCH_BYTES`] of keys and values,
//! applies them in arrival order inside ONE write transaction, commits it durably once,
//! then answers each caller. So the `fsync` cost is shared by every request that arrived
//! while the previous one was running, and per-operation atomicity is that of a single
//! writer: `insert_new`, `take` and `compare_and_swap` each read and decide against the
//! state left by the operations before them in the same transaction, so 64 racing callers
//! still get exactly one winner. If applying or committing a batch fails, the transaction
//! is aborted and *every* operation of the batch gets [`StoreError::Unavailable`]; none of
//! it is applied or visible to readers. After a failed commit redb refuses every further
//! write transaction until the file is reopened, so the store stays closed for writes
//! (fail closed) until the process restarts; a batch whose commit failed may or may not be
//! found on that next open (the disk may have taken it before reporting the error), but it
//! was never acknowledged. If the writer thread is gone (it only stops when the store is
//! dropped, or if redb panicked), every later write gets [`StoreError::Unavailable`].
//! Dropping the store closes the channel and joins the writer. An operation that meets a
//! malformed record fails alone and changes nothing; the rest of its batch goes ahead.
//!
//! Reads (`get`, `scan_prefix`, `snapshot`) do not go through the writer: each opens a redb
//! read transaction on the caller's thread (MVCC, never blocked by the writer). A write has
//! been committed before its caller is answered, so every read that starts after a write
//! returned sees it.
//!
//! # Expiry
//!
//! Expiry is absolute and chosen by the caller (never "now + ttl" here). Every operation
//! takes `now` from the caller and treats a record with `now >= expiry` as absent, whether or
//! not it has been purged: `get`, `scan_prefix` and `snapshot` skip it, `take` removes it
//! and returns `None`, `insert_new` overwrites it, `compare_and_swap` reports a conflict.
//!
//! # Purge cost
//!
//! Expired records stay in the file until [`Store::purge_expired`] removes them; calling it
//! periodically is the caller's job. A purge reads every record of every table (O(number of
//! entries), no expiry index is kept, so that a put writes one record and nothing else), in
//! namespace and key order, in *passes*. A pass reads at most [`PURGE_SCAN`] records in a
//! read transaction on the purging thread (MVCC: the writer is not held while it reads),
//! collects at most [`PURGE_BATCH`] expired keys, and only then sends their removal to the
//! writer as one operation, which removes each key that is *still* expired (a record
//! rewritten since the scan is kept) and is committed like any write. So writes wait for
//! at most one pass's removals, never for the scan: with a million live tokens and few
//! expired ones the scan is long but the writer barely notices it (the soak saw the
//! scanning-in-the-writer version stall writes, and with them the async workers, for
//! seconds). A pass that found nothing expired writes nothing. The pages a pass frees are
//! reused by later commits, so the file needs room for one pass's copied pages at a time,
//! not for the whole purge's (`remove_expired` says why redb's `extract_if` is not used).
//! The count returned is the sum of the passes'. A record written behind the purge's
//! position while it runs (already expired when written) is left to the next purge; if a
//! pass fails, the purge returns [`StoreError::Unavailable`] and the passes before it stay
//! committed (they removed only records that were expired, which no operation returns
//! anyway). Between passes the purging thread rests three times as long as the pass took
//! ([`PURGE_REST`]), so a purge uses at most a quarter of a core and leaves the rest to
//! requests. Run it at a modest interval (minutes) rather than per request. Until purged,
//! expired records cost file space and make prefix scans step over them.
//!
//! redb keeps a page cache of at most [`CACHE_SIZE`] bytes (its default of 1 GiB let the
//! process's memory follow the file).
//!
//! What it never does: return an expired value, acknowledge a write before it is durable,
//! apply part of a failed batch, or open a file it does not recognise.

use std::fmt;
use std::ops::Bound::{Excluded, Unbounded};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::record::{encode, live_value};
use ::redb::{
    Database, DatabaseError, Durability, ReadableTable, StorageBackend, TableDefinition,
    TableError, TableHandle, WriteTransaction,
};
use heartgate_core::clock::UnixTime;
use heartgate_core::store::{
    check_sizes, Entry, Inserted, Namespace, SnapshotEntry, Store, StoreError, Swapped,
};

/// The version of the layout described in the module documentation, kept in the file.
pub const LAYOUT_VERSION: u64 = 1;
/// Most write requests committed in one transaction.
pub const MAX_BATCH: usize = 256;
/// A batch stops taking more requests once its keys and values reach this many bytes.
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Most expired records one purge pass removes, in one write operation (see "Purge cost"
/// in the module documentation).
pub const PURGE_BATCH: usize = 1024;
/// Most records one purge pass reads (in a read transaction), expired or not, so that a
/// pass over live records is bounded too.
pub const PURGE_SCAN: usize = 16 * PURGE_BATCH;
/// After each purge pass the purging thread rests this many times the pass's own
/// duration, so that a purge takes at most a quarter of a core however many records it
/// reads: on a busy server a purge run flat out took the CPU the requests needed (the soak
/// saw p99 jump to about a second at each 5-minute purge). A purge lasts four times as
/// long; it runs every few minutes.
pub const PURGE_REST: u32 = 3;
/// redb's page cache, in bytes (redb's default is 1 GiB, which the process's RSS then
/// follows as the file is read). The store's working set is small, short-lived records.
pub const CACHE_SIZE: usize = 64 * 1024 * 1024;
/// Write requests that may wait for the writer before callers block on sending.
const QUEUE_DEPTH: usize = 1024;
type Records = TableDefinition<'static, &'static [u8], &'static [u8]>;

const META: TableDefinition<'static, &'static str, u64> = TableDefinition::new("heartgate_meta");
const META_LAYOUT_KEY: &str = "layout_version";

fn records(ns: Namespace) -> Records {
    TableDefinition::new(ns.as_str())
}

/// Why [`RedbStore::open`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file cannot be opened or created, or is not a readable redb database (a
    /// foreign, truncated or damaged file).
    #[error("the store file cannot be opened as a redb database")]
    Database(#[source] Box<DatabaseError>),
    /// Another process (or another `RedbStore` in this one) has the file open.
    #[error("the store file is already open")]
    Locked,
    /// redb panicked while reading the file: it is damaged.
    #[error("the store file is damaged")]
    Damaged,
    /// The file is a redb database, but not a heartgate store of a layout we know.
    #[error("the store file is not a heartgate store of layout version {LAYOUT_VERSION}")]
    ForeignLayout,
    /// Preparing the tables failed.
    #[error("the store file cannot be initialised")]
    Init(#[source] Box<redb::Error>),
    /// The writer thread could not be started.
    #[error("the store writer thread cannot be started")]
    Writer(#[source] std::io::Error),
}

/// A durable [`Store`] in one redb file, with group commit (see the module documentation).
pub struct RedbStore {
    /// The file, if the store is in one (for `Debug` and logs).
    path: Option<PathBuf>,
    db: Arc<Database>,
    /// `None` only while dropping.
    requests: Option<SyncSender<Request>>,
    /// `None` only while dropping.
    writer: Option<JoinHandle<()>>,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Open the store in the file `path`, creating the file if it does not exist (or is
    /// empty), and start its writer thread.
    pub fn open(path: impl AsRef<Path>) -> Result<RedbStore, OpenError> {
        let path = path.as_ref().to_path_buf();
        Self::start(Some(path.clone()), || {
            Database::builder()
                .create_with_file_format_v3(true)
                .set_cache_size(CACHE_SIZE)
                .create(&path)
        })
    }

    /// Open the store on any redb storage backend (tests use redb's `InMemoryBackend` or a
    /// backend that injects I/O failures). The same checks and durability rules apply, as
    /// far as the backend's `sync_data` keeps its promise.
    pub fn open_backend(backend: impl StorageBackend) -> Result<RedbStore, OpenError> {
        Self::start(None, move || {
            Database::builder()
                .create_with_file_format_v3(true)
                .set_cache_size(CACHE_SIZE)
                .create_with_backend(backend)
        })
    }

    fn start(
        path: Option<PathBuf>,
        create: impl FnOnce() -> Result<Database, DatabaseError>,
    ) -> Result<RedbStore, OpenError> {
        // redb 2 can panic on some damaged files instead of returning an error; a damaged
        // file must be an error for the operator, not a crash loop. Nothing outlives the
        // closure if it unwinds, so no state is left half-built.
        let db = panic::catch_unwind(AssertUnwindSafe(|| open_database(create)))
            .map_err(|_| OpenError::Damaged)??;
        let db = Arc::new(db);
        let (requests, queue) = mpsc::sync_channel(QUEUE_DEPTH);
        let writer_db = Arc::clone(&db);
        let writer = std::thread::Builder::new()
            .name("heartgate-redb-writer".into())
            .spawn(move || run_writer(&writer_db, &queue))
            .map_err(OpenError::Writer)?;
        Ok(RedbStore {
            path,
            db,
            requests: Some(requests),
            writer: Some(writer),
        })
    }

    fn submit(&self, op: Op) -> Result<Outcome, StoreError> {
        let requests = self.requests.as_ref().ok_or(StoreError::Unavailable)?;
        let (reply, answer) = mpsc::sync_channel(1);
        requests
            .send(Request { op, reply })
            .map_err(|_| StoreError::Unavailable)?;
        // A writer that died drops `reply` unanswered: fail closed.
        answer.recv().map_err(|_| StoreError::Unavailable)?
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer's loop; no request can be in flight, since
        // every caller borrows the store until its answer arrives.
        drop(self.requests.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!(path = ?self.path, "redb store writer thread had panicked");
            }
        }
    }
}

fn open_database(
    create: impl FnOnce() -> Result<Database, DatabaseError>,
) -> Result<Database, OpenError> {
    let db = create().map_err(|e| match e {
        DatabaseError::DatabaseAlreadyOpen => OpenError::Locked,
        e => OpenError::Database(Box::new(e)),
    })?;
    init_tables(&db)?;
    Ok(db)
}

/// Refuse a redb database that is not a heartgate store of our layout, then write the
/// layout marker into a new file and create every namespace's table, so that readers find
/// them.
fn init_tables(db: &Database) -> Result<(), OpenError> {
    let init = |e: redb::Error| OpenError::Init(Box::new(e));
    {
        let txn = db.begin_read().map_err(|e| init(e.into()))?;
        let mut tables = 0usize;
        let mut has_meta = false;
        for table in txn.list_tables().map_err(|e| init(e.into()))? {
            tables += 1;
            has_meta |= table.name() == META.name();
        }
        if has_meta {
            let meta = txn.open_table(META).map_err(|e| init(e.into()))?;
            let version = meta
                .get(META_LAYOUT_KEY)
                .map_err(|e| init(e.into()))?
                .map(|v| v.value());
            if version != Some(LAYOUT_VERSION) {
                return Err(OpenError::ForeignLayout);
            }
        } else if tables > 0 {
            return Err(OpenError::ForeignLayout);
        }
    }
    let txn = db.begin_write().map_err(|e| init(e.into()))?;
    {
        let mut meta = txn.open_table(META).map_err(|e| init(e.into()))?;
        meta.insert(META_LAYOUT_KEY, LAYOUT_VERSION)
            .map_err(|e| init(e.into()))?;
        for ns in Namespace::ALL {
            txn.open_table(records(ns)).map_err(|e| init(e.into()))?;
        }
    }
    txn.commit().map_err(|e| init(e.into()))
}

// ---- records ----

/// Log the cause for the operator; the caller only learns that the store is unavailable.
fn unavailable(e: impl fmt::Display) -> StoreError {
    tracing::error!(error = %e, "redb store failure");
    StoreError::Unavailable
}

// ---- the writer ----

enum Op {
    Put {
        ns: Namespace,
        key: Vec<u8>,
        record: Vec<u8>,
    },
    InsertNew {
        ns: Namespace,
        key: Vec<u8>,
        record: Vec<u8>,
        now: UnixTime,
    },
    Take {
        ns: Namespace,
        key: Vec<u8>,
        now: UnixTime,
    },
    CompareAndSwap {
        ns: Namespace,
        key: Vec<u8>,
        expected: Vec<u8>,
        /// The new record, or `None` to delete.
        new: Option<Vec<u8>>,
        now: UnixTime,
    },
    Delete {
        ns: Namespace,
        key: Vec<u8>,
    },
    /// The removals of one purge pass: each of `keys` whose record is expired at `now`
    /// when the writer gets to it.
    RemoveExpired {
        ns: Namespace,
        keys: Vec<Vec<u8>>,
        now: UnixTime,
    },
}

impl Op {
    /// Bytes this operation carries, for bounding a batch.
    fn size(&self) -> usize {
        match self {
            Op::Put { key, record, .. } | Op::InsertNew { key, record, .. } => {
                key.len() + record.len()
            }
            Op::Take { key, .. } | Op::Delete { key, .. } => key.len(),
            Op::CompareAndSwap {
                key, expected, new, ..
            } => key.len() + expected.len() + new.as_ref().map_or(0, Vec::len),
            Op::RemoveExpired { keys, .. } => keys.iter().map(Vec::len).sum(),
        }
    }
}

enum Outcome {
    Written,
    Inserted(Inserted),
    Taken(Option<Vec<u8>>),
    Swapped(Swapped),
    /// Records a purge pass removed.
    Purged(usize),
}

struct Request {
    op: Op,
    reply: SyncSender<Result<Outcome, StoreError>>,
}

fn run_writer(db: &Database, queue: &Receiver<Request>) {
    while let Ok(first) = queue.recv() {
        let mut bytes = first.op.size();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match queue.try_recv() {
                Ok(next) => {
                    bytes += next.op.size();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        match commit_batch(db, &batch) {
            Ok(answers) => {
                for (request, answer) in batch.into_iter().zip(answers) {
                    // A caller that went away has nobody to tell.
                    let _ = request.reply.send(answer);
                }
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    ops = batch.len(),
                    "redb store batch failed; none of it was applied"
                );
                for request in batch {
                    let _ = request.reply.send(Err(StoreError::Unavailable));
                }
            }
        }
    }
}

/// A redb failure inside the writer: the batch is abandoned (boxed: redb's error is large
/// and this path is rare).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct Failure(Box<redb::Error>);

macro_rules! failure_from {
    ($($e:ty),*) => {$(
        impl From<$e> for Failure {
            fn from(e: $e) -> Failure {
                Failure(Box::new(e.into()))
            }
        }
    )*};
}
failure_from!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError
);

/// One operation's answer: its outcome, or its own failure (a malformed record it met),
/// which changed nothing and does not affect the rest of the batch.
type Answer = Result<Outcome, StoreError>;

/// Apply the batch in order in one transaction and commit it durably, or apply none of it.
fn commit_batch(db: &Database, batch: &[Request]) -> Result<Vec<Answer>, Failure> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    let answers = batch
        .iter()
        .map(|request| apply(&txn, &request.op))
        .collect::<Result<Vec<_>, _>>();
    match answers {
        Ok(answers) => {
            txn.commit()?;
            Ok(answers)
        }
        Err(e) => {
            if let Err(abort) = txn.abort() {
                tracing::error!(error = %abort, "redb store abort failed");
            }
            Err(e)
        }
    }
}

/// Apply one operation. Each decides from the record before changing anything, so an
/// operation that meets a malformed record fails alone without having changed the state.
fn apply(txn: &WriteTransaction, op: &Op) -> Result<Answer, Failure> {
    let answer = match op {
        Op::Put { ns, key, record } => {
            txn.open_table(records(*ns))?
                .insert(key.as_slice(), record.as_slice())?;
            Ok(Outcome::Written)
        }
        Op::InsertNew {
            ns,
            key,
            record,
            now,
        } => {
            let mut table = txn.open_table(records(*ns))?;
            let live = match table.get(key.as_slice())? {
                Some(existing) => live_value(existing.value(), *now).map(|v| v.is_some()),
                None => Ok(false),
            };
            match live {
                Ok(true) => Ok(Outcome::Inserted(Inserted::AlreadyPresent)),
                Ok(false) => {
                    // Absent, or expired and not purged yet: both count as absent.
                    table.insert(key.as_slice(), record.as_slice())?;
                    Ok(Outcome::Inserted(Inserted::New))
                }
                Err(e) => Err(unavailable(e)),
            }
        }
        Op::Take { ns, key, now } => {
            let mut table = txn.open_table(records(*ns))?;
            let value = match table.get(key.as_slice())? {
                Some(record) => {
                    live_value(record.value(), *now).map(|v| Some(v.map(<[u8]>::to_vec)))
                }
                None => Ok(None),
            };
            match value {
                // Removed whether live or expired, as MemoryStore does.
                Ok(Some(taken)) => {
                    table.remove(key.as_slice())?;
                    Ok(Outcome::Taken(taken))
                }
                Ok(None) => Ok(Outcome::Taken(None)),
                Err(e) => Err(unavailable(e)),
            }
        }
        Op::CompareAndSwap {
            ns,
            key,
            expected,
            new,
            now,
        } => {
            let mut table = txn.open_table(records(*ns))?;
            let matches = match table.get(key.as_slice())? {
                Some(existing) => {
                    live_value(existing.value(), *now).map(|live| live == Some(expected.as_slice()))
                }
                None => Ok(false),
            };
            match matches {
                Ok(true) => {
                    match new {
                        Some(record) => {
                            table.insert(key.as_slice(), record.as_slice())?;
                        }
                        None => {
                            table.remove(key.as_slice())?;
                        }
                    }
                    Ok(Outcome::Swapped(Swapped::Done))
                }
                Ok(false) => Ok(Outcome::Swapped(Swapped::Conflict)),
                Err(e) => Err(unavailable(e)),
            }
        }
        Op::Delete { ns, key } => {
            txn.open_table(records(*ns))?.remove(key.as_slice())?;
            Ok(Outcome::Written)
        }
        Op::RemoveExpired { ns, keys, now } => remove_expired(txn, *ns, keys, *now).map(Ok)?,
    };
    Ok(answer)
}

/// The writer's half of a purge pass (see "Purge cost" in the module documentation):
/// remove each of `keys` whose record is expired at `now` now, keep the others (rewritten
/// since the pass read them) and skip the ones already gone.
///
/// Plain `remove`s: redb's `extract_if` (what the purge used before) cannot change the
/// tree it iterates, so it copies the whole path of every removed record into fresh pages
/// and keeps the copies until the end of the transaction. That made a purge of N records
/// need about N × (tree depth) new pages; the soak test saw the file double at each purge.
/// A `remove` changes pages this transaction already copied in place.
fn remove_expired(
    txn: &WriteTransaction,
    ns: Namespace,
    keys: &[Vec<u8>],
    now: UnixTime,
) -> Result<Outcome, Failure> {
    let mut table = txn.open_table(records(ns))?;
    let mut removed = 0;
    for key in keys {
        let expired = match table.get(key.as_slice())? {
            // A malformed record is kept: purge cannot tell whether it expired, and the
            // operations that meet it fail closed.
            Some(record) => matches!(live_value(record.value(), now), Ok(None)),
            None => false,
        };
        if expired {
            table.remove(key.as_slice())?;
            removed += 1;
        }
    }
    Ok(Outcome::Purged(removed))
}

/// What the reading half of a purge pass found.
#[derive(Debug, Default)]
struct Scanned {
    /// Keys of records expired at the pass's `now`.
    expired: Vec<Vec<u8>>,
    /// The last key read, if the pass stopped before the end of the table.
    stopped_at: Option<Vec<u8>>,
}

/// The reading half of a purge pass, in a read transaction on the caller's thread: from
/// the key after `after` (or the first) in `ns`, read at most [`PURGE_SCAN`] records and
/// collect at most [`PURGE_BATCH`] expired keys.
fn scan_expired(
    db: &Database,
    ns: Namespace,
    after: Option<&[u8]>,
    now: UnixTime,
) -> Result<Scanned, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let table = match txn.open_table(records(ns)) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Scanned::default()),
        Err(e) => return Err(unavailable(e)),
    };
    let range = match after {
        Some(key) => table.range::<&[u8]>((Excluded(key), Unbounded)),
        None => table.range::<&[u8]>(..),
    }
    .map_err(unavailable)?;
    let mut expired = Vec::new();
    let mut read = 0;
    for item in range {
        let (key, record) = item.map_err(unavailable)?;
        read += 1;
        if matches!(live_value(record.value(), now), Ok(None)) {
            expired.push(key.value().to_vec());
        }
        if expired.len() >= PURGE_BATCH || read >= PURGE_SCAN {
            return Ok(Scanned {
                expired,
                stopped_at: Some(key.value().to_vec()),
            });
        }
    }
    Ok(Scanned {
        expired,
        stopped_at: None,
    })
}

// ---- the Store ----

impl Store for RedbStore {
    fn put(
        &self,
        ns: Namespace,
        key: &[u8],
        value: &[u8],
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        check_sizes(key, value)?;
        match self.submit(Op::Put {
            ns,
            key: key.to_vec(),
            record: encode(value, expires_at),
        })? {
            Outcome::Written => Ok(()),
            _ => Err(StoreError::Unavailable),
        }
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
        match self.submit(Op::InsertNew {
            ns,
            key: key.to_vec(),
            record: encode(value, expires_at),
            now,
        })? {
            Outcome::Inserted(inserted) => Ok(inserted),
            _ => Err(StoreError::Unavailable),
        }
    }

    fn get(&self, ns: Namespace, key: &[u8], now: UnixTime) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = match txn.open_table(records(ns)) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(unavailable(e)),
        };
        match table.get(key).map_err(unavailable)? {
            Some(record) => Ok(live_value(record.value(), now)
                .map_err(unavailable)?
                .map(<[u8]>::to_vec)),
            None => Ok(None),
        }
    }

    fn take(
        &self,
        ns: Namespace,
        key: &[u8],
        now: UnixTime,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match self.submit(Op::Take {
            ns,
            key: key.to_vec(),
            now,
        })? {
            Outcome::Taken(taken) => Ok(taken),
            _ => Err(StoreError::Unavailable),
        }
    }

    fn compare_and_swap(
        &self,
        ns: Namespace,
        key: &[u8],
        expected: &[u8],
        new: Option<(&[u8], UnixTime)>,
        now: UnixTime,
    ) -> Result<Swapped, StoreError> {
        if let Some((value, _)) = new {
            check_sizes(key, value)?;
        }
        match self.submit(Op::CompareAndSwap {
            ns,
            key: key.to_vec(),
            expected: expected.to_vec(),
            new: new.map(|(value, expires_at)| encode(value, expires_at)),
            now,
        })? {
            Outcome::Swapped(swapped) => Ok(swapped),
            _ => Err(StoreError::Unavailable),
        }
    }

    fn delete(&self, ns: Namespace, key: &[u8]) -> Result<(), StoreError> {
        match self.submit(Op::Delete {
            ns,
            key: key.to_vec(),
        })? {
            Outcome::Written => Ok(()),
            _ => Err(StoreError::Unavailable),
        }
    }

    fn scan_prefix(
        &self,
        ns: Namespace,
        prefix: &[u8],
        limit: usize,
        now: UnixTime,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = match txn.open_table(records(ns)) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(out),
            Err(e) => return Err(unavailable(e)),
        };
        // Keys are ordered bytewise, so the prefix's keys are one contiguous run from it.
        for item in table.range::<&[u8]>(prefix..).map_err(unavailable)? {
            let (key, record) = item.map_err(unavailable)?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            if let Some(value) = live_value(record.value(), now).map_err(unavailable)? {
                out.push((key.to_vec(), value.to_vec()));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Remove every record expired at `now`. Cost: one full read of every table, in passes
    /// that read in read transactions and send at most [`PURGE_BATCH`] removals at a time
    /// to the writer (see "Purge cost" in the module documentation); call it periodically,
    /// not per request.
    fn purge_expired(&self, now: UnixTime) -> Result<usize, StoreError> {
        let mut purged = 0usize;
        for ns in Namespace::ALL {
            let mut after: Option<Vec<u8>> = None;
            loop {
                let pass = std::time::Instant::now();
                let Scanned {
                    expired: keys,
                    stopped_at,
                } = scan_expired(&self.db, ns, after.as_deref(), now)?;
                if !keys.is_empty() {
                    // Goes to the back of the writer's queue like any write.
                    match self.submit(Op::RemoveExpired { ns, keys, now })? {
                        Outcome::Purged(n) => purged = purged.saturating_add(n),
                        _ => return Err(StoreError::Unavailable),
                    }
                }
                std::thread::sleep(pass.elapsed() * PURGE_REST);
                match stopped_at {
                    Some(key) => after = Some(key),
                    None => break,
                }
            }
        }
        Ok(purged)
    }

    fn snapshot(&self, now: UnixTime) -> Result<Vec<SnapshotEntry>, StoreError> {
        // One read transaction: a consistent point in time across namespaces.
        let txn = self.db.begin_read().map_err(unavailable)?;
        let mut out = Vec::new();
        for ns in Namespace::ALL {
            let table = match txn.open_table(records(ns)) {
                Ok(table) => table,
                Err(TableError::TableDoesNotExist(_)) => continue,
                Err(e) => return Err(unavailable(e)),
            };
            for item in table.iter().map_err(unavailable)? {
                let (key, record) = item.map_err(unavailable)?;
                if let Some(value) = live_value(record.value(), now).map_err(unavailable)? {
                    out.push((ns, key.value().to_vec(), value.to_vec()));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;

    /// A purge pass removes what its scan found expired only if it is still expired when
    /// the writer gets to it: a record rewritten with a later expiry in between (a
    /// `put` or `compare_and_swap` after the scan) is kept, one already gone is skipped.
    #[test]
    fn a_removal_keeps_a_record_rewritten_after_the_scan() {
        let store = RedbStore::open_backend(::redb::backends::InMemoryBackend::new()).unwrap();
        let (t0, t1, later) = (UnixTime(1_000), UnixTime(1_100), UnixTime(9_000));
        store.put(Namespace::Jti, b"rewritten", b"old", t1).unwrap();
        store.put(Namespace::Jti, b"expired", b"old", t1).unwrap();
        let scanned = scan_expired(&store.db, Namespace::Jti, None, t1).unwrap();
        let keys = scanned.expired;
        assert_eq!(keys, vec![b"expired".to_vec(), b"rewritten".to_vec()]);
        assert_eq!(scanned.stopped_at, None);
        // Between the scan and the removal: one record rewritten, a gone key added.
        store
            .put(Namespace::Jti, b"rewritten", b"new", later)
            .unwrap();
        let mut keys = keys;
        keys.push(b"never-there".to_vec());
        let out = store
            .submit(Op::RemoveExpired {
                ns: Namespace::Jti,
                keys,
                now: t1,
            })
            .unwrap();
        assert!(matches!(out, Outcome::Purged(1)));
        assert_eq!(
            store.get(Namespace::Jti, b"rewritten", t1).unwrap(),
            Some(b"new".to_vec())
        );
        assert_eq!(store.get(Namespace::Jti, b"expired", t0).unwrap(), None);
    }
}
