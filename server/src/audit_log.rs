//! The audit log: core's audit events as JSON lines, each carrying its position (`seq`,
//! from 1) and the SHA-256 of the previous line's exact bytes (`prev`, lowercase hex; 64
//! zeros for the first line). A line holds the event's own fields and those two, nothing
//! else. Editing, inserting, deleting or reordering lines breaks the chain at the first
//! line touched, which `heartgate audit verify FILE` reports.
//!
//! Writing never blocks a request on disk: events go over a bounded channel to one
//! writer thread, which appends each batch of queued events and flushes it to the
//! operating system, and fsyncs at least every [`AuditLogOptions::sync_every`] lines or
//! [`AuditLogOptions::sync_interval`], and on [`AuditLog::close`] (or drop).
//!
//! The writer is not woken once per event. While events keep coming it drains the
//! queue, writes the batch and rests [`BATCH_TICK`] before the next drain; only an
//! event whose caller waits for its line ([`AuditSink::record_required`]) wakes it at
//! once. When a drain finds the queue empty it sleeps until the next event. An event
//! nobody waits for (introspection, refusals) thus reaches the file within about
//! `BATCH_TICK` under load, and a burst costs the writer one wake-up per tick instead of
//! one per event (a thread switch per introspection was a fifth of the server's CPU on
//! a cache hit).
//!
//! When the channel is full, the request waits for room (back-pressure) rather than
//! dropping the event: an audit trail with silent gaps would be worse than a slower
//! request. Each wait is counted ([`AuditCounters::waited`]) and logged as a warning (the
//! first and every 1024th, so a burst does not flood the log).
//!
//! # A full disk (THREATS S8): fail closed, no holes
//!
//! Events about work being acknowledged (tokens, codes, `request_uri`s, CIBA requests
//! and decisions, devices, registrations, revocations) come through
//! [`AuditSink::record_required`]: the caller waits until its line was written to the
//! file (handed to the operating system; fsync follows as above) and fails closed — the
//! flow answers 503 and hands nothing out — when it was not. Refusals and introspection
//! come through [`AuditSink::record`] and do not wait, so reads of existing state go on
//! while the disk is full; such an event that cannot be written is counted in
//! [`AuditCounters::lost`] and logged as an error, never dropped silently.
//!
//! The writer appends each batch with one write. If that fails (no space, an I/O
//! error), the file is cut back to the end of the last whole batch and the chain rolls
//! back with it, so the next line chains from the last line really in the file: the log
//! never holds a torn line or a hole, and keeps verifying. Every later batch tries
//! again, so the log resumes by itself once the disk has room. Only if the cut itself
//! fails does the writer stop appending (the tail is then unknown; a restart repairs a
//! torn tail or refuses a broken chain, below). A failed fsync is logged; what it
//! leaves on disk is up to the kernel.
//!
//! Reopening an existing file continues its chain and its `seq`; a file whose chain is
//! broken (including a last line cut short by a crash) is refused rather than extended,
//! so a tampered or damaged log is looked at by a person before anything is added to it.
//!
//! What a chain cannot prove on its own: that nobody cut or rewrote its *end* (the last
//! line has no successor to vouch for it; anyone can recompute SHA-256 from any line
//! onwards). `verify` reports the last line's hash; keep it somewhere else (a SIEM, a
//! ticket, a WORM bucket) to anchor the tail.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{
    sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

use heartgate_core::audit::{AuditEvent, AuditSink, AuditUnavailable};
use parking_lot::RwLock;
use ring::digest;

/// Default for [`AuditLogOptions::sync_every`]: lines between fsyncs at most.
pub const SYNC_EVERY: usize = 256;
/// Default for [`AuditLogOptions::sync_interval`]: time a written line waits for its
/// fsync at most.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(500);
/// Default for [`AuditLogOptions::queue`]: events queued before callers wait.
pub const QUEUE: usize = 8192;
/// How long the writer rests between drains while events keep coming (see the module
/// documentation); a caller waiting for its line wakes it at once.
pub const BATCH_TICK: Duration = Duration::from_millis(2);

/// `prev` of the first line.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Longest line `verify` reads; anything longer is not one of ours (an event is well
/// under a kilobyte) and is reported as malformed rather than read into memory.
const MAX_LINE: u64 = 1 << 20;
/// How long `close` waits for the writer to finish.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

fn hex(d: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(d.len() * 2);
    for b in d {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

fn line_hash(line: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, line).as_ref())
}

/// When the writer fsyncs, and how many events may wait for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditLogOptions {
    /// fsync after at most this many lines (at least 1).
    pub sync_every: usize,
    /// fsync when a written line has waited this long.
    pub sync_interval: Duration,
    /// Events queued for the writer before [`AuditSink::record`] waits (at least 1).
    pub queue: usize,
    /// How long the writer rests between drains while events keep coming
    /// ([`BATCH_TICK`]; see the module documentation).
    pub batch_tick: Duration,
}

impl Default for AuditLogOptions {
    fn default() -> Self {
        AuditLogOptions {
            sync_every: SYNC_EVERY,
            sync_interval: SYNC_INTERVAL,
            queue: QUEUE,
            batch_tick: BATCH_TICK,
        }
    }
}

/// What the log had to do besides writing: see the module documentation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditCounters {
    /// Events whose caller found the queue full and waited for room.
    pub waited: u64,
    /// Events that could not be written and nobody waited for (each also logged as an
    /// error).
    pub lost: u64,
    /// Events [`AuditSink::record_required`] could not write: their callers failed
    /// closed (503) instead of acknowledging the work.
    pub refused: u64,
    /// Batches written (each one `write`): far fewer than events under load.
    pub batches: u64,
}

/// [`AuditCounters`] as they are kept, shared with the writer thread.
#[derive(Default)]
struct Counters {
    waited: AtomicU64,
    lost: AtomicU64,
    refused: AtomicU64,
    batches: AtomicU64,
}

impl Counters {
    fn lost(&self, why: &'static str) {
        let lost = self.lost.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::error!(lost, "{why}; an audit event was lost");
    }
}

enum Msg {
    /// An event; with a sender when the caller waits to learn whether it was written.
    Event(Box<AuditEvent>, Option<SyncSender<bool>>),
    Close(SyncSender<()>),
}

/// How long a caller of [`AuditSink::record_required`] waits for its line at most; a
/// writer stuck longer (a hung disk) makes it fail closed. The line may still be written
/// later: the trail then shows work that was never acknowledged, never the reverse.
const REQUIRED_WAIT: Duration = Duration::from_secs(5);

/// The audit log writer: an [`AuditSink`] appending to one hash-chained file.
pub struct AuditLog {
    tx: RwLock<Option<SyncSender<Msg>>>,
    /// The writer thread, to wake it for an event whose caller waits.
    writer: std::thread::Thread,
    path: PathBuf,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("counters", &self.counters())
            .finish()
    }
}

/// Why the audit log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AuditLogError {
    /// I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The existing file's chain is broken: appending would hide it.
    #[error("the existing audit log is broken at {0}; it is not appended to")]
    Broken(VerifyError),
}

/// A crash can leave the log's last line cut short (no newline; THREATS S7). If the
/// complete lines before it verify, the torn bytes are moved to `<log>.torn-<line>`
/// (kept for inspection, never lost) and the log is truncated to its last complete
/// line, so that the chain goes on; the caller records the repair. A tail that is in
/// fact a whole, chained line missing only its newline gets the newline instead. If
/// the lines before it do not verify, nothing is touched (the open then fails).
/// The file the torn bytes were saved to, if any.
fn settle_torn_tail(path: &Path) -> Result<Option<PathBuf>, AuditLogError> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let Ok(mut file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    else {
        return Ok(None);
    };
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(None);
    }
    // Where the torn line starts: after the last newline.
    let mut start = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while start > 0 {
        let from = start.saturating_sub(chunk.len() as u64);
        let n = usize::try_from(start - from).unwrap_or(0);
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut chunk[..n])?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            start = from + i as u64 + 1;
            break;
        }
        start = from;
    }
    if len - start > MAX_LINE {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(0))?;
    let Ok(report) = verify_reader(std::io::BufReader::new((&file).take(start))) else {
        return Ok(None);
    };
    let mut tail = Vec::new();
    file.seek(SeekFrom::Start(start))?;
    (&file).read_to_end(&mut tail)?;
    let whole = Lines::<&[u8]>::parse(&tail).is_ok_and(|l| {
        l.seq == u64::try_from(report.lines + 1).ok()
            && l.prev.as_deref() == Some(report.last_hash.as_str())
    });
    if whole {
        file.seek(SeekFrom::End(0))?;
        file.write_all(b"\n")?;
        file.sync_data()?;
        return Ok(None);
    }
    let aside = PathBuf::from(format!("{}.torn-{}", path.display(), report.lines + 1));
    crate::setup::write_atomic(&aside, &tail, true)
        .map_err(|e| AuditLogError::Io(std::io::Error::other(e.to_string())))?;
    file.set_len(start)?;
    file.sync_all()?;
    Ok(Some(aside))
}

impl AuditLog {
    /// Open (or create) the log at `path` with the default [`AuditLogOptions`],
    /// continuing an existing chain. An existing file whose chain is broken is refused.
    pub fn open(path: impl Into<PathBuf>) -> Result<AuditLog, AuditLogError> {
        Self::open_with(path, AuditLogOptions::default())
    }

    /// [`AuditLog::open`] with explicit options.
    pub fn open_with(
        path: impl Into<PathBuf>,
        options: AuditLogOptions,
    ) -> Result<AuditLog, AuditLogError> {
        Self::open_on(path.into(), options, |f| f)
    }

    fn open_on<F: LogFile>(
        path: PathBuf,
        options: AuditLogOptions,
        wrap: impl FnOnce(std::fs::File) -> F,
    ) -> Result<AuditLog, AuditLogError> {
        let torn = settle_torn_tail(&path)?;
        let (seq, prev) = match verify(&path) {
            Ok(r) => (r.lines, r.last_hash),
            Err(VerifyError {
                kind: VerifyErrorKind::Io(_),
                ..
            }) if !path.exists() => (0, GENESIS.to_owned()),
            Err(e) => return Err(AuditLogError::Broken(e)),
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let options = AuditLogOptions {
            sync_every: options.sync_every.max(1),
            queue: options.queue.max(1),
            ..options
        };
        let (tx, rx) = sync_channel(options.queue);
        let counters = Arc::new(Counters::default());
        let len = file.metadata()?.len();
        let writer = Writer {
            file: wrap(file),
            len,
            seq,
            prev,
            batch: Vec::new(),
            waiting: Vec::new(),
            lines: 0,
            batch_start: (0, String::new()),
            unsynced: 0,
            last_sync: Instant::now(),
            broken: false,
            options,
            counters: counters.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("heartgate-audit".into())
            .spawn(move || writer.run(rx))?;
        let log = AuditLog {
            tx: RwLock::new(Some(tx)),
            writer: thread.thread().clone(),
            path,
            counters,
        };
        if let Some(aside) = torn {
            // THREATS S7: the repair is itself on the record, first thing after it.
            tracing::warn!(saved_as = %aside.display(), "audit log: a torn last line was set aside");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            log.record(AuditEvent::new(
                heartgate_core::clock::UnixTime(now),
                heartgate_core::audit::EventKind::AuditLog,
                heartgate_core::audit::Outcome::Failure,
                "torn_line_set_aside",
            ));
        }
        Ok(log)
    }

    /// Write what is queued, fsync and stop the writer. Events recorded afterwards are
    /// counted and logged as lost. Calling it again does nothing.
    pub fn close(&self) {
        let tx = self.tx.write().take();
        if let Some(tx) = tx {
            let (done_tx, done_rx) = sync_channel(1);
            let sent = tx.send(Msg::Close(done_tx)).is_ok();
            self.writer.unpark();
            if !sent || done_rx.recv_timeout(CLOSE_WAIT).is_err() {
                tracing::error!("audit writer did not confirm the final fsync");
            }
        }
    }

    /// How often callers waited for room, and how many events were lost.
    pub fn counters(&self) -> AuditCounters {
        AuditCounters {
            waited: self.counters.waited.load(Ordering::Relaxed),
            lost: self.counters.lost.load(Ordering::Relaxed),
            refused: self.counters.refused.load(Ordering::Relaxed),
            batches: self.counters.batches.load(Ordering::Relaxed),
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

impl AuditLog {
    /// Hand `msg` to the writer, waiting for room when the queue is full. `false` when
    /// the writer is gone (the event is then not written).
    fn send(&self, msg: Msg) -> bool {
        let (tx, msg) = {
            let tx = self.tx.read();
            let Some(tx) = tx.as_ref() else {
                return false;
            };
            match tx.try_send(msg) {
                Err(TrySendError::Full(msg)) => (tx.clone(), msg),
                other => return other.is_ok(),
            }
        };
        // The queue is full: wake the writer, and wait for room holding a clone of the
        // sender, not the lock.
        let waited = self.counters.waited.fetch_add(1, Ordering::Relaxed) + 1;
        if waited % 1024 == 1 {
            tracing::warn!(
                waited,
                "audit queue full: requests wait for the audit writer"
            );
        }
        self.writer.unpark();
        tx.send(msg).is_ok()
    }
}

impl AuditSink for AuditLog {
    fn record(&self, event: AuditEvent) {
        if !self.send(Msg::Event(Box::new(event), None)) {
            self.counters.lost("audit log closed or its writer stopped");
        }
    }

    /// Waits until the writer has handed the event's line to the operating system (not
    /// for its fsync, which follows within [`AuditLogOptions::sync_interval`]).
    fn record_required(&self, event: AuditEvent) -> Result<(), AuditUnavailable> {
        let (ack, written) = sync_channel(1);
        let sent = self.send(Msg::Event(Box::new(event), Some(ack)));
        if sent {
            // Its caller waits: no resting until the next tick.
            self.writer.unpark();
        }
        let ok = sent && written.recv_timeout(REQUIRED_WAIT).unwrap_or(false);
        if ok {
            Ok(())
        } else {
            let refused = self.counters.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if refused % 1024 == 1 {
                tracing::error!(
                    refused,
                    "audit log unavailable: work it cannot record is refused (503)"
                );
            }
            Err(AuditUnavailable)
        }
    }
}

/// What the writer needs of its file; a test wraps the real file to make writes fail.
trait LogFile: Write + Send + 'static {
    fn set_len(&self, len: u64) -> std::io::Result<()>;
    fn sync_data(&self) -> std::io::Result<()>;
}

impl LogFile for std::fs::File {
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        std::fs::File::set_len(self, len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        std::fs::File::sync_data(self)
    }
}

/// The writer thread's state: the open file and where the chain stands.
struct Writer<F> {
    file: F,
    /// The file's length after the last batch that was written whole: a failed batch is
    /// cut back to it, so the file only ever holds whole, chained lines.
    len: u64,
    seq: usize,
    prev: String,
    /// The batch being assembled: its lines, and the callers waiting for them.
    batch: Vec<u8>,
    waiting: Vec<SyncSender<bool>>,
    /// Lines in the batch (those of `waiting` and those nobody waits for, which are
    /// counted as lost if the batch fails).
    lines: usize,
    /// Where the chain stood before the batch, to roll back to.
    batch_start: (usize, String),
    unsynced: usize,
    last_sync: Instant,
    /// A failed batch could not be cut back: the file's tail is unknown, nothing more is
    /// appended to it (a restart repairs or refuses it).
    broken: bool,
    options: AuditLogOptions,
    counters: Arc<Counters>,
}

impl<F: LogFile> Writer<F> {
    fn run(mut self, rx: Receiver<Msg>) {
        // Whether the last drain found events: then rest a tick instead of sleeping in
        // the channel (module documentation).
        let mut busy = false;
        loop {
            let mut msg = if busy {
                std::thread::park_timeout(self.options.batch_tick);
                match rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => return self.sync(),
                }
            } else {
                // Nothing to fsync: sleep until an event comes. Otherwise wake for the
                // deadline.
                let next = if self.unsynced == 0 {
                    rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
                } else {
                    let waited = self.last_sync.elapsed();
                    rx.recv_timeout(self.options.sync_interval.saturating_sub(waited))
                };
                match next {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return self.sync(),
                }
            };
            busy = msg.is_some();
            // Take what is queued, up to `sync_every` lines a batch, and write each batch
            // with one write: it reaches the file whole or not at all.
            while let Some(m) = msg {
                match m {
                    Msg::Event(e, ack) => self.append(&e, ack),
                    Msg::Close(done) => {
                        self.write_batch();
                        self.sync();
                        let _ = done.send(());
                        return;
                    }
                }
                // A batch is written at `sync_every` lines; and the clock is read every 32
                // lines, not per line, so that a queue that never empties still gets its
                // lines written and fsynced within `sync_interval`.
                if self.lines >= self.options.sync_every
                    || (self.lines % 32 == 0
                        && self.last_sync.elapsed() >= self.options.sync_interval)
                {
                    self.write_batch();
                    self.sync();
                }
                msg = rx.try_recv().ok();
            }
            self.write_batch();
            if self.unsynced >= self.options.sync_every
                || (self.unsynced > 0 && self.last_sync.elapsed() >= self.options.sync_interval)
            {
                self.sync();
            }
        }
    }

    fn append(&mut self, event: &AuditEvent, ack: Option<SyncSender<bool>>) {
        // The event's own members, then `seq` and `prev`: written straight from the
        // struct (no intermediate map), by closing the object one member later.
        let mut line = Vec::with_capacity(384);
        if serde_json::to_writer(&mut line, event).is_err() || line.pop() != Some(b'}') {
            if let Some(ack) = ack {
                let _ = ack.send(false);
            } else {
                self.counters.lost("audit event did not serialize");
            }
            return;
        }
        if self.lines == 0 {
            self.batch_start = (self.seq, self.prev.clone());
        }
        self.seq += 1;
        let tail = format!(r#","seq":{},"prev":"{}"}}"#, self.seq, self.prev);
        line.extend_from_slice(tail.as_bytes());
        self.prev = line_hash(&line);
        line.push(b'\n');
        self.batch.extend_from_slice(&line);
        self.lines += 1;
        self.waiting.extend(ack);
    }

    /// Write the assembled batch in one `write_all`. On failure (a full disk, an I/O
    /// error) the file is cut back to its last whole batch and the chain rolls back, so
    /// the next batch chains from the last line really in the file and the log keeps
    /// verifying; the waiting callers learn the events were not written (they answer
    /// 503, THREATS S8) and events nobody waits for are counted as lost. The next batch
    /// tries again: the log resumes by itself once the disk has room.
    fn write_batch(&mut self) {
        if self.lines == 0 {
            return;
        }
        let lines = self.lines;
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        let written = !self.broken && self.file.write_all(&self.batch).is_ok();
        if written {
            self.len += self.batch.len() as u64;
            self.unsynced += lines;
        } else {
            if !self.broken {
                tracing::error!(lines, "audit log write failed; the batch is not on record");
                if self.file.set_len(self.len).is_err() {
                    tracing::error!("audit log could not be cut back to its last whole line; nothing more is appended until a restart");
                    self.broken = true;
                }
            }
            (self.seq, self.prev) = std::mem::take(&mut self.batch_start);
            for _ in self.waiting.len()..lines {
                self.counters.lost("audit log write failed");
            }
        }
        for ack in self.waiting.drain(..) {
            let _ = ack.send(written);
        }
        self.lines = 0;
        self.batch.clear();
    }

    fn sync(&mut self) {
        if self.unsynced > 0 && self.file.sync_data().is_err() {
            tracing::error!("audit log fsync failed");
        }
        self.unsynced = 0;
        self.last_sync = Instant::now();
    }
}

/// A log that verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Lines in the file.
    pub lines: usize,
    /// SHA-256 of the last line (the next line's `prev`); keep it elsewhere to anchor the
    /// tail, which the chain alone cannot vouch for.
    pub last_hash: String,
}

/// What is wrong at the first bad line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyErrorKind {
    /// The file could not be read.
    Io(String),
    /// Not a JSON object on one complete line (edited into something else, or cut short:
    /// a last line without its newline).
    Malformed,
    /// `seq` is not the line's position: a line was deleted or moved here, or this line
    /// was inserted.
    Sequence {
        /// The position.
        expected: usize,
        /// What the line says.
        found: Option<u64>,
    },
    /// The chain breaks at this line: it was edited (the next line's `prev` no longer
    /// matches it, or its own `prev` no longer matches the line before it).
    Chain,
}

/// The first line that does not verify (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    /// The first bad line (0 when the file could not be opened).
    pub line: usize,
    /// What is wrong.
    pub kind: VerifyErrorKind,
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = self.line;
        match &self.kind {
            VerifyErrorKind::Io(m) if line == 0 => write!(f, "the file: {m}"),
            VerifyErrorKind::Io(m) => write!(f, "line {line}: {m}"),
            VerifyErrorKind::Malformed => write!(
                f,
                "line {line}: not a complete JSON line (edited, or cut short)"
            ),
            VerifyErrorKind::Sequence { expected, found } => write!(
                f,
                "line {line}: sequence {} where {expected} was expected (a line was deleted, inserted or moved here)",
                found.map_or("missing".to_owned(), |f| f.to_string())
            ),
            VerifyErrorKind::Chain => write!(
                f,
                "line {line}: the line was edited (the hash chain breaks there)"
            ),
        }
    }
}

impl std::error::Error for VerifyError {}

/// One line read back: its exact bytes' hash and the two chain fields.
struct Line {
    hash: String,
    seq: Option<u64>,
    prev: Option<String>,
}

/// The lines of a log, one at a time.
struct Lines<R> {
    reader: R,
    n: usize,
    buf: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    /// The next line as its position and what it says; `None` at the end.
    fn next_line(&mut self) -> Option<(usize, Result<Line, VerifyErrorKind>)> {
        self.buf.clear();
        let read = (&mut self.reader)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut self.buf);
        self.n += 1;
        let line = match read {
            Ok(0) => return None,
            Ok(_) => match self.buf.strip_suffix(b"\n") {
                Some(line) => Self::parse(line),
                // Cut short (a crash or a truncation), or longer than any line we write.
                None => Err(VerifyErrorKind::Malformed),
            },
            Err(e) => Err(VerifyErrorKind::Io(e.to_string())),
        };
        Some((self.n, line))
    }

    fn parse(line: &[u8]) -> Result<Line, VerifyErrorKind> {
        let v: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(line).map_err(|_| VerifyErrorKind::Malformed)?;
        Ok(Line {
            hash: line_hash(line),
            seq: v.get("seq").and_then(serde_json::Value::as_u64),
            prev: v.get("prev").and_then(|p| p.as_str()).map(str::to_owned),
        })
    }
}

/// Verify the chain of the log at `path`, reporting the first line touched:
///
/// - an edited line: the line itself (found through its successor's `prev`; when the
///   line's own `prev` was edited, its successor no longer matches it either, which
///   tells the two apart). The last line has no successor: an edit to it is only
///   detected against [`VerifyReport::last_hash`] kept elsewhere;
/// - a deleted line: its position (the line now there has the wrong `seq`);
/// - an inserted line: the inserted line (wrong `seq`);
/// - reordered lines: the first position holding the wrong line;
/// - a line cut short (no newline) or not a JSON object: that line.
///
/// An empty file verifies, with 0 lines.
pub fn verify(path: &Path) -> Result<VerifyReport, VerifyError> {
    let file = std::fs::File::open(path).map_err(|e| VerifyError {
        line: 0,
        kind: VerifyErrorKind::Io(e.to_string()),
    })?;
    verify_reader(std::io::BufReader::new(file))
}

/// [`verify`] of the lines `reader` yields.
fn verify_reader(reader: impl BufRead) -> Result<VerifyReport, VerifyError> {
    let mut lines = Lines {
        reader,
        n: 0,
        buf: Vec::new(),
    };
    // The hash the next line's `prev` must equal.
    let mut prev = GENESIS.to_owned();
    let mut count = 0;
    while let Some((n, line)) = lines.next_line() {
        let bad = |line, kind| Err(VerifyError { line, kind });
        let line = match line {
            Ok(l) => l,
            Err(kind) => return bad(n, kind),
        };
        if line.seq != u64::try_from(n).ok() {
            return bad(
                n,
                VerifyErrorKind::Sequence {
                    expected: n,
                    found: line.seq,
                },
            );
        }
        if line.prev.as_deref() != Some(prev.as_str()) {
            // Either the line before was edited, or this line's own `prev` was. If this
            // line is intact, the next one still vouches for it: then it was the line
            // before. Without a next line to ask, the earlier candidate is reported.
            let next_vouches = match lines.next_line() {
                Some((_, Ok(next))) => Some(next.prev.as_deref() == Some(line.hash.as_str())),
                _ => None,
            };
            let edited = match next_vouches {
                Some(false) => n,
                Some(true) | None => n.saturating_sub(1).max(1),
            };
            return bad(edited, VerifyErrorKind::Chain);
        }
        prev = line.hash;
        count = n;
    }
    Ok(VerifyReport {
        lines: count,
        last_hash: prev,
    })
}

/// The one-line summary `heartgate audit verify` prints.
pub fn summary(r: &Result<VerifyReport, VerifyError>) -> String {
    match r {
        Ok(r) => format!(
            "audit log ok: {} line(s), chain intact; last line hash {} (compare with the copy kept elsewhere: the chain cannot vouch for its own end)",
            r.lines, r.last_hash
        ),
        Err(
            e @ VerifyError {
                kind: VerifyErrorKind::Io(_),
                ..
            },
        ) => format!("audit log unreadable: {e}"),
        Err(e) => format!("audit log BROKEN at {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartgate_core::audit::{EventKind, Outcome};
    use heartgate_core::clock::UnixTime;

    fn event(i: i64) -> AuditEvent {
        AuditEvent::new(
            UnixTime(i),
            EventKind::TokenIssued,
            Outcome::Success,
            "issued",
        )
        .client(format!("c{i}"))
    }

    fn write(path: &Path, n: i64) {
        let log = AuditLog::open(path).unwrap();
        for i in 0..n {
            log.record(event(i));
        }
        log.close();
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn put(path: &Path, lines: &[String]) {
        let mut s = lines.join("\n");
        s.push('\n');
        std::fs::write(path, s).unwrap();
    }

    fn json(line: &str) -> serde_json::Value {
        serde_json::from_str(line).unwrap()
    }

    /// A log of 6 lines, and its lines.
    fn six() -> (tempfile::TempDir, PathBuf, Vec<String>) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        write(&p, 6);
        let l = lines(&p);
        (d, p, l)
    }

    #[test]
    fn the_chain_continues_across_reopen_and_verifies() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        write(&p, 5);
        write(&p, 3);
        let r = verify(&p).unwrap();
        assert_eq!(r.lines, 8);
        let l = lines(&p);
        assert_eq!(json(&l[0])["prev"], GENESIS);
        for (i, line) in l.iter().enumerate() {
            assert_eq!(json(line)["seq"], i + 1);
            if i > 0 {
                assert_eq!(json(line)["prev"], line_hash(l[i - 1].as_bytes()));
            }
        }
        // The sixth line is the reopened log's first: it chains to the fifth.
        assert_eq!(json(&l[5])["client_id"], "c0");
        assert_eq!(r.last_hash, line_hash(l[7].as_bytes()));
        assert!(summary(&Ok(r)).contains("8 line(s)"));
    }

    #[test]
    fn a_line_holds_the_event_and_seq_and_prev_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        let full = event(7)
            .cert("thumb")
            .scope("patient/Observation.rs")
            .subject_ref("sref")
            .patient_ref("pref")
            .token_ref("jti-1");
        let log = AuditLog::open(&p).unwrap();
        log.record(full.clone());
        log.record(event(8));
        log.close();
        let l = lines(&p);
        assert_eq!(l.len(), 2);
        for (line, sent) in l.iter().zip([full, event(8)]) {
            let mut got = json(line);
            let fields = got.as_object_mut().unwrap();
            assert!(fields.remove("seq").is_some());
            assert!(fields.remove("prev").is_some());
            assert_eq!(got, serde_json::to_value(&sent).unwrap());
        }
    }

    #[test]
    fn an_edited_line_is_reported_at_that_line() {
        let (_d, p, orig) = six();
        for k in 1..=5 {
            let mut l = orig.clone();
            l[k - 1] = l[k - 1].replace(&format!("\"c{}\"", k - 1), "\"cX\"");
            assert_ne!(l, orig);
            put(&p, &l);
            let e = verify(&p).unwrap_err();
            assert_eq!((e.line, e.kind), (k, VerifyErrorKind::Chain), "edit {k}");
        }
    }

    #[test]
    fn an_edited_prev_is_reported_at_its_own_line() {
        let (_d, p, orig) = six();
        for k in [1, 3, 5] {
            let mut l = orig.clone();
            let mut v = json(&l[k - 1]);
            v["prev"] = "ab".repeat(32).into();
            l[k - 1] = v.to_string();
            put(&p, &l);
            let e = verify(&p).unwrap_err();
            assert_eq!((e.line, e.kind), (k, VerifyErrorKind::Chain), "edit {k}");
        }
    }

    #[test]
    fn an_edit_that_breaks_json_or_seq_is_reported_at_that_line() {
        let (_d, p, orig) = six();
        let mut l = orig.clone();
        l[2].pop();
        put(&p, &l);
        let e = verify(&p).unwrap_err();
        assert_eq!((e.line, e.kind), (3, VerifyErrorKind::Malformed));

        let mut l = orig.clone();
        l[2] = l[2].replace("\"seq\":3", "\"seq\":33");
        put(&p, &l);
        let e = verify(&p).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(matches!(e.kind, VerifyErrorKind::Sequence { .. }));
    }

    #[test]
    fn a_deleted_line_is_reported_at_its_position() {
        let (_d, p, orig) = six();
        for k in 1..=5 {
            let mut l = orig.clone();
            l.remove(k - 1);
            put(&p, &l);
            let e = verify(&p).unwrap_err();
            assert_eq!(e.line, k, "delete {k}");
            assert_eq!(
                e.kind,
                VerifyErrorKind::Sequence {
                    expected: k,
                    found: Some(k as u64 + 1)
                }
            );
        }
    }

    #[test]
    fn a_deletion_renumbered_to_hide_it_is_still_reported_at_its_position() {
        let (_d, p, orig) = six();
        let mut l = orig.clone();
        l.remove(2);
        for (i, line) in l.iter_mut().enumerate().skip(2) {
            *line = line.replace(&format!("\"seq\":{}", i + 2), &format!("\"seq\":{}", i + 1));
        }
        put(&p, &l);
        let e = verify(&p).unwrap_err();
        assert_eq!((e.line, e.kind), (3, VerifyErrorKind::Chain));
    }

    #[test]
    fn an_inserted_line_is_reported_at_the_inserted_line() {
        let (_d, p, orig) = six();
        for k in 0..=5 {
            // A copy of line k inserted after it (at the very start: a copy of line 2; a
            // copy of line 1 there would leave line 1 as it was, and line 2 the copy).
            let mut l = orig.clone();
            let copy = if k == 0 { 1 } else { k - 1 };
            l.insert(k, orig[copy].clone());
            put(&p, &l);
            assert_eq!(verify(&p).unwrap_err().line, k + 1, "insert after {k}");
        }
        // A hand-written line.
        let mut l = orig.clone();
        l.insert(2, r#"{"at":0,"kind":"token_issued"}"#.into());
        put(&p, &l);
        let e = verify(&p).unwrap_err();
        assert_eq!(
            (e.line, e.kind),
            (
                3,
                VerifyErrorKind::Sequence {
                    expected: 3,
                    found: None
                }
            )
        );
    }

    #[test]
    fn reordered_lines_are_reported_at_the_first_moved_position() {
        let (_d, p, orig) = six();
        let mut l = orig.clone();
        l.swap(3, 4);
        put(&p, &l);
        assert_eq!(verify(&p).unwrap_err().line, 4);

        // The first line moved to the end.
        let mut l = orig.clone();
        l.rotate_left(1);
        put(&p, &l);
        assert_eq!(verify(&p).unwrap_err().line, 1);
    }

    #[test]
    fn a_last_line_cut_short_is_reported_at_that_line() {
        let (_d, p, orig) = six();
        let mut s = orig.join("\n");
        s.push('\n');
        for cut in [1, 10, orig[5].len()] {
            std::fs::write(&p, &s[..s.len() - cut]).unwrap();
            let e = verify(&p).unwrap_err();
            assert_eq!(
                (e.line, e.kind),
                (6, VerifyErrorKind::Malformed),
                "cut {cut}"
            );
        }
        put(&p, &orig);
        assert_eq!(verify(&p).unwrap().lines, 6);
    }

    #[test]
    fn s7_a_torn_last_line_is_set_aside_recorded_and_the_chain_goes_on() {
        let (d, p, orig) = six();
        let mut s = orig.join("\n");
        s.push('\n');
        let torn = &s[..s.len() - 10];
        std::fs::write(&p, torn).unwrap();
        let log = AuditLog::open(&p).unwrap();
        log.record(event(99));
        log.close();
        // The torn bytes are kept beside the log, byte for byte.
        let aside = d.path().join("audit.log.torn-6");
        let kept = std::fs::read_to_string(&aside).unwrap();
        assert_eq!(kept, &torn[torn.rfind('\n').unwrap() + 1..]);
        // The chain verifies: five old lines, the repair on record, then the new event.
        let r = verify(&p).unwrap();
        assert_eq!(r.lines, 7);
        let l = lines(&p);
        assert_eq!(&l[..5], &orig[..5]);
        let flag = json(&l[5]);
        assert_eq!(flag["kind"], "audit_log");
        assert_eq!(flag["reason"], "torn_line_set_aside");
        assert_eq!(json(&l[6])["client_id"], "c99");
    }

    #[test]
    fn s7_a_whole_last_line_missing_its_newline_is_completed() {
        let (d, p, orig) = six();
        std::fs::write(&p, orig.join("\n")).unwrap();
        let log = AuditLog::open(&p).unwrap();
        log.close();
        assert_eq!(verify(&p).unwrap().lines, 6);
        assert_eq!(lines(&p), orig);
        assert!(!d.path().join("audit.log.torn-7").exists());
    }

    #[test]
    fn s7_a_torn_tail_after_an_edited_line_is_left_alone_and_refused() {
        let (d, p, mut orig) = six();
        orig[1] = orig[1].replace("\"c1\"", "\"cX\"");
        let mut s = orig.join("\n");
        s.push('\n');
        let torn = s[..s.len() - 10].to_owned();
        std::fs::write(&p, &torn).unwrap();
        assert!(matches!(
            AuditLog::open(&p).unwrap_err(),
            AuditLogError::Broken(_)
        ));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), torn);
        assert!(!d.path().join("audit.log.torn-6").exists());
    }

    #[test]
    fn an_empty_file_verifies_with_zero_lines_and_a_missing_one_does_not() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        let e = verify(&p).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(matches!(e.kind, VerifyErrorKind::Io(_)));
        assert!(summary(&Err(e)).contains("unreadable"));
        std::fs::write(&p, "").unwrap();
        let r = verify(&p).unwrap();
        assert_eq!((r.lines, r.last_hash.as_str()), (0, GENESIS));
        // A log opened on an empty file starts the chain.
        write(&p, 1);
        assert_eq!(json(&lines(&p)[0])["prev"], GENESIS);
    }

    #[test]
    fn a_broken_log_is_not_appended_to() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        write(&p, 3);
        let mut l = lines(&p);
        l[0] = l[0].replace("\"c0\"", "\"cX\"");
        put(&p, &l);
        let before = std::fs::read(&p).unwrap();
        let e = AuditLog::open(&p).unwrap_err();
        assert!(matches!(
            e,
            AuditLogError::Broken(VerifyError { line: 1, .. })
        ));
        assert!(e.to_string().contains("broken at line 1"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), before);
    }

    #[test]
    fn events_reach_the_file_before_close() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        let log = AuditLog::open_with(
            &p,
            AuditLogOptions {
                sync_every: 1000,
                sync_interval: Duration::from_millis(20),
                queue: 16,
                ..AuditLogOptions::default()
            },
        )
        .unwrap();
        log.record(event(1));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&p).unwrap().ends_with('\n') {
            assert!(Instant::now() < deadline, "the event was not flushed");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(verify(&p).unwrap().lines, 1);
    }

    #[test]
    fn an_event_after_close_is_counted_as_lost() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        let log = AuditLog::open(&p).unwrap();
        log.record(event(1));
        log.close();
        log.close();
        log.record(event(2));
        assert_eq!(log.counters().lost, 1);
        assert_eq!(verify(&p).unwrap().lines, 1);
    }

    #[test]
    fn a_full_queue_makes_callers_wait_and_loses_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        let log = AuditLog::open_with(
            &p,
            AuditLogOptions {
                sync_every: 1,
                sync_interval: Duration::from_millis(1),
                queue: 1,
                ..AuditLogOptions::default()
            },
        )
        .unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let log = &log;
                s.spawn(move || (0..200).for_each(|i| log.record(event(t * 1000 + i))));
            }
        });
        log.close();
        assert_eq!(log.counters().lost, 0);
        assert_eq!(verify(&p).unwrap().lines, 800);
    }

    /// A writer that rests a long tick between drains (so that any wait on the tick
    /// shows), after a first burst has made it busy.
    fn resting_log(p: &Path, queue: usize) -> AuditLog {
        let log = AuditLog::open_with(
            p,
            AuditLogOptions {
                queue,
                batch_tick: Duration::from_secs(30),
                ..AuditLogOptions::default()
            },
        )
        .unwrap();
        for i in 0..queue.min(50) {
            log.record(event(i64::try_from(i).unwrap()));
        }
        // Let the writer drain the burst and start resting.
        std::thread::sleep(Duration::from_millis(200));
        log
    }

    /// THREATS S8 callers wait for their line: the writer resting between drains is
    /// woken at once for them (without the wake-up this waits the 30-s tick and fails
    /// closed after REQUIRED_WAIT).
    #[test]
    fn a_required_event_wakes_a_resting_writer_at_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        let log = resting_log(&p, 64);
        let asked = Instant::now();
        assert_eq!(log.record_required(event(1000)), Ok(()));
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "{:?}",
            asked.elapsed()
        );
        assert_eq!(verify(&p).unwrap().lines, 51);
    }

    /// A caller finding the queue full wakes a resting writer rather than waiting for
    /// its tick; and `close` does too, writing everything queued.
    #[test]
    fn a_full_queue_and_close_wake_a_resting_writer() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        let log = resting_log(&p, 4);
        let started = Instant::now();
        for i in 0..100 {
            log.record(event(100 + i));
        }
        log.close();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(log.counters().lost, 0);
        assert_eq!(verify(&p).unwrap().lines, 104);
    }

    /// Under a steady stream the writer takes events by the batch, resting between
    /// drains, instead of waking once per event; events nobody waits for still reach
    /// the file within a few ticks.
    #[test]
    fn a_stream_of_events_is_written_in_batches_within_a_few_ticks() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        let log = AuditLog::open_with(
            &p,
            AuditLogOptions {
                batch_tick: Duration::from_millis(20),
                ..AuditLogOptions::default()
            },
        )
        .unwrap();
        // 400 events, one every half millisecond or so, while the writer wakes every
        // 20 ms at most: a writer woken per event writes about 400 batches.
        for i in 0..400 {
            log.record(event(i));
            std::thread::sleep(Duration::from_micros(500));
        }
        let sent = Instant::now();
        while verify(&p).unwrap().lines < 400 {
            assert!(
                sent.elapsed() < Duration::from_secs(2),
                "not written in time"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let batches = log.counters().batches;
        assert!(batches < 100, "{batches} batches for 400 events");
    }

    #[test]
    fn concurrent_writers_keep_one_contiguous_chain() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        let log = AuditLog::open(&p).unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let log = &log;
                s.spawn(move || (0..1000).for_each(|i| log.record(event(t * 10_000 + i))));
            }
        });
        log.close();
        assert_eq!(verify(&p).unwrap().lines, 8000);
        // Every event exactly once, each thread's in the order it recorded them.
        let mut next = [0i64; 8];
        for (i, line) in lines(&p).iter().enumerate() {
            let v = json(line);
            assert_eq!(v["seq"], i + 1);
            let at = v["at"].as_i64().unwrap();
            let t = usize::try_from(at / 10_000).unwrap();
            assert_eq!(at % 10_000, next[t]);
            next[t] += 1;
        }
        assert_eq!(next, [1000; 8]);
        assert_eq!(log.counters().lost, 0);
    }

    /// The real file, except that while `full` is set a write lands half its bytes and
    /// then fails with ENOSPC (a disk filling mid-write), and while `stuck` is set the
    /// file cannot be cut back either.
    struct Flaky {
        file: std::fs::File,
        full: Arc<std::sync::atomic::AtomicBool>,
        stuck: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.full.load(Ordering::SeqCst) {
                self.file.write_all(&buf[..buf.len() / 2])?;
                return Err(std::io::Error::from_raw_os_error(28));
            }
            self.file.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.file.flush()
        }
    }

    impl LogFile for Flaky {
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            if self.stuck.load(Ordering::SeqCst) {
                return Err(std::io::Error::from_raw_os_error(5));
            }
            self.file.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.file.sync_data()
        }
    }

    type Switch = Arc<std::sync::atomic::AtomicBool>;

    fn flaky(path: &Path) -> (AuditLog, Switch, Switch) {
        let full = Switch::default();
        let stuck = Switch::default();
        let (f, s) = (full.clone(), stuck.clone());
        let log = AuditLog::open_on(
            path.to_path_buf(),
            AuditLogOptions::default(),
            move |file| Flaky {
                file,
                full: f,
                stuck: s,
            },
        )
        .unwrap();
        (log, full, stuck)
    }

    #[test]
    fn s8_a_write_that_fails_is_refused_cut_back_and_the_chain_resumes_with_space() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        let (log, full, _) = flaky(&p);
        for i in 0..3 {
            log.record_required(event(i)).unwrap();
        }
        full.store(true, Ordering::SeqCst);
        assert_eq!(log.record_required(event(3)), Err(AuditUnavailable));
        log.record(event(4));
        // The refused and the lost events are not in the file, not even half of them.
        assert_eq!(log.record_required(event(5)), Err(AuditUnavailable));
        assert_eq!(
            verify(&p).unwrap().lines,
            3,
            "{}",
            std::fs::read_to_string(&p).unwrap()
        );
        full.store(false, Ordering::SeqCst);
        log.record_required(event(6)).unwrap();
        log.close();
        let c = log.counters();
        assert_eq!((c.refused, c.lost), (2, 1));
        let l = lines(&p);
        assert_eq!(l.len(), 4);
        assert_eq!(
            json(&l[3])["at"],
            6,
            "the next line chains from the last one kept"
        );
        assert_eq!(json(&l[3])["seq"], 4);
        assert_eq!(verify(&p).unwrap().lines, 4);
    }

    #[test]
    fn s8_a_tail_that_cannot_be_cut_back_stops_the_log_and_a_restart_repairs_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        let (log, full, stuck) = flaky(&p);
        log.record_required(event(0)).unwrap();
        full.store(true, Ordering::SeqCst);
        stuck.store(true, Ordering::SeqCst);
        assert_eq!(log.record_required(event(1)), Err(AuditUnavailable));
        // Space returns, but the file's tail is unknown: nothing more is appended to it.
        full.store(false, Ordering::SeqCst);
        stuck.store(false, Ordering::SeqCst);
        assert_eq!(log.record_required(event(2)), Err(AuditUnavailable));
        log.close();
        assert!(verify(&p).is_err(), "a torn line is left");
        // THREATS S7 on reopen: the torn bytes are set aside and the chain goes on.
        let log = AuditLog::open(&p).unwrap();
        log.record_required(event(3)).unwrap();
        log.close();
        let r = verify(&p).unwrap();
        assert_eq!(r.lines, 3, "line 1, the repair event, line 3");
    }

    #[test]
    fn required_events_are_in_the_file_when_record_required_returns() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        let log = AuditLog::open(&p).unwrap();
        for i in 0..5 {
            log.record_required(event(i)).unwrap();
            assert_eq!(lines(&p).len(), usize::try_from(i + 1).unwrap());
        }
        log.close();
        assert_eq!(log.record_required(event(9)), Err(AuditUnavailable));
        assert_eq!(log.counters().refused, 1);
    }
}
