//! The audit log: core's audit events as JSON lines, each carrying its position (`seq`,
//! from 1) and the SHA-256 of the previous line (`prev`, lowercase hex; 64 zeros for the
//! first line). Editing, inserting, deleting or reordering lines breaks the chain at the
//! first line touched, which `heartgate audit verify FILE` reports.
//!
//! Writing never blocks a request on disk: events go over a bounded channel to one
//! writer thread, which appends, flushes each batch, and fsyncs at least every
//! [`SYNC_EVERY`] lines or [`SYNC_INTERVAL`], and on close. When the channel is full the
//! request waits for room (back-pressure) rather than dropping an event: an audit trail
//! with silent gaps would be worse than a slower request. Reopening an existing file
//! continues its chain; a file whose chain is broken is refused rather than extended.
//!
//! What a chain cannot prove on its own: that nobody cut or rewrote its *end* (the last
//! line has no successor to vouch for it). `verify` reports the last line's hash; keep
//! it somewhere else (a SIEM, a ticket, a WORM bucket) to anchor the tail.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use heartgate_core::audit::{AuditEvent, AuditSink};
use parking_lot::Mutex;
use ring::digest;

/// Lines between fsyncs at most.
pub const SYNC_EVERY: usize = 256;
/// Time between fsyncs at most.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(500);
/// Events queued before callers wait.
pub const QUEUE: usize = 8192;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn line_hash(line: &str) -> String {
    hex(digest::digest(&digest::SHA256, line.as_bytes()).as_ref())
}

enum Msg {
    Event(Box<AuditEvent>),
    Close(SyncSender<()>),
}

/// The audit log writer.
pub struct AuditLog {
    tx: Mutex<Option<SyncSender<Msg>>>,
    path: PathBuf,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
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
    #[error("existing audit log does not verify: {0}")]
    Broken(VerifyError),
}

impl AuditLog {
    /// Open (or create) the log at `path`, continuing an existing chain. An existing file
    /// whose chain is broken is refused.
    pub fn open(path: impl Into<PathBuf>) -> Result<AuditLog, AuditLogError> {
        let path = path.into();
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
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("heartgate-audit".into())
            .spawn(move || writer(file, rx, seq, prev))?;
        Ok(AuditLog {
            tx: Mutex::new(Some(tx)),
            path,
        })
    }

    /// Flush, fsync and stop the writer. Events recorded afterwards are logged as lost.
    pub fn close(&self) {
        let tx = self.tx.lock().take();
        if let Some(tx) = tx {
            let (done_tx, done_rx) = sync_channel(1);
            if tx.send(Msg::Close(done_tx)).is_ok() {
                let _ = done_rx.recv_timeout(Duration::from_secs(10));
            }
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

impl AuditSink for AuditLog {
    fn record(&self, event: AuditEvent) {
        let tx = self.tx.lock().clone();
        match tx {
            Some(tx) => {
                if tx.send(Msg::Event(Box::new(event))).is_err() {
                    tracing::error!("audit writer stopped; an audit event was lost");
                }
            }
            None => tracing::error!("audit log closed; an audit event was lost"),
        }
    }
}

fn writer(file: std::fs::File, rx: Receiver<Msg>, mut seq: usize, mut prev: String) {
    let mut out = std::io::BufWriter::new(file);
    let mut unsynced = 0usize;
    let mut last_sync = Instant::now();
    let sync = |out: &mut std::io::BufWriter<std::fs::File>| {
        if out.flush().is_err() || out.get_ref().sync_data().is_err() {
            tracing::error!("audit log write failed");
        }
    };
    loop {
        let msg = match rx.recv_timeout(SYNC_INTERVAL) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                sync(&mut out);
                return;
            }
        };
        match msg {
            Some(Msg::Event(e)) => {
                let mut v = match serde_json::to_value(&*e) {
                    Ok(serde_json::Value::Object(m)) => m,
                    _ => continue,
                };
                seq += 1;
                v.insert("seq".into(), seq.into());
                v.insert("prev".into(), prev.clone().into());
                let line = serde_json::Value::Object(v).to_string();
                if writeln!(out, "{line}").is_err() {
                    tracing::error!("audit log write failed");
                }
                prev = line_hash(&line);
                unsynced += 1;
            }
            Some(Msg::Close(done)) => {
                sync(&mut out);
                let _ = done.send(());
                return;
            }
            None => {}
        }
        if unsynced > 0 && (unsynced >= SYNC_EVERY || last_sync.elapsed() >= SYNC_INTERVAL) {
            sync(&mut out);
            unsynced = 0;
            last_sync = Instant::now();
        }
    }
}

/// A log that verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Lines in the file.
    pub lines: usize,
    /// SHA-256 of the last line (the next line's `prev`).
    pub last_hash: String,
}

/// What is wrong at the first bad line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyErrorKind {
    /// The file could not be read.
    Io(String),
    /// Not a JSON object, or the last line is cut short.
    Malformed,
    /// `seq` is not the line's position: a line was inserted, deleted or moved before it.
    Sequence {
        /// The position.
        expected: usize,
        /// What the line says.
        found: Option<u64>,
    },
    /// `prev` is not the hash of the line before: that line was edited (or replaced).
    Chain,
}

/// The first line that does not verify (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind:?}")]
pub struct VerifyError {
    /// The first bad line (0 when the file could not be read).
    pub line: usize,
    /// What is wrong.
    pub kind: VerifyErrorKind,
}

/// Verify the chain of the log at `path`.
pub fn verify(path: &Path) -> Result<VerifyReport, VerifyError> {
    let f = std::fs::File::open(path).map_err(|e| VerifyError {
        line: 0,
        kind: VerifyErrorKind::Io(e.to_string()),
    })?;
    let mut reader = std::io::BufReader::new(f);
    let mut prev = GENESIS.to_owned();
    let mut n = 0usize;
    let mut buf = String::new();
    loop {
        buf.clear();
        let read = reader.read_line(&mut buf).map_err(|e| VerifyError {
            line: n + 1,
            kind: VerifyErrorKind::Io(e.to_string()),
        })?;
        if read == 0 {
            break;
        }
        n += 1;
        let bad = |kind| VerifyError { line: n, kind };
        // A last line without its newline was cut short (a crash or a truncation).
        let Some(line) = buf.strip_suffix('\n') else {
            return Err(bad(VerifyErrorKind::Malformed));
        };
        let v: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).map_err(|_| bad(VerifyErrorKind::Malformed))?;
        let seq = v.get("seq").and_then(serde_json::Value::as_u64);
        if seq != Some(n as u64) {
            return Err(bad(VerifyErrorKind::Sequence {
                expected: n,
                found: seq,
            }));
        }
        if v.get("prev").and_then(|p| p.as_str()) != Some(prev.as_str()) {
            // This line's predecessor is not what it was: report the edited line.
            return Err(VerifyError {
                line: n.saturating_sub(1).max(1),
                kind: VerifyErrorKind::Chain,
            });
        }
        prev = line_hash(line);
    }
    Ok(VerifyReport {
        lines: n,
        last_hash: prev,
    })
}

/// The one-line summary `heartgate audit verify` prints.
pub fn summary(r: &Result<VerifyReport, VerifyError>) -> String {
    match r {
        Ok(r) => format!(
            "audit log ok: {} line(s), chain intact; last line hash {}",
            r.lines, r.last_hash
        ),
        Err(e) => match &e.kind {
            VerifyErrorKind::Io(m) => format!("audit log unreadable: {m}"),
            VerifyErrorKind::Malformed => {
                format!("audit log BROKEN at line {}: not a complete JSON line", e.line)
            }
            VerifyErrorKind::Sequence { expected, found } => format!(
                "audit log BROKEN at line {}: sequence {} where {expected} was expected (a line was inserted, deleted or moved)",
                e.line,
                found.map_or("missing".to_owned(), |f| f.to_string())
            ),
            VerifyErrorKind::Chain => format!(
                "audit log BROKEN at line {}: the line was edited (the next line's hash does not match)",
                e.line
            ),
        },
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

    #[test]
    fn the_chain_continues_across_reopen_and_verifies() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        write(&p, 5);
        write(&p, 3);
        let r = verify(&p).unwrap();
        assert_eq!(r.lines, 8);
        let first: serde_json::Value = serde_json::from_str(&lines(&p)[0]).unwrap();
        assert_eq!(first["seq"], 1);
        assert_eq!(first["prev"], GENESIS);
        assert_eq!(first["client_id"], "c0");
        assert!(summary(&Ok(r)).contains("8 line(s)"));
        // Only the event's fields plus seq and prev.
        let keys: Vec<_> = first.as_object().unwrap().keys().cloned().collect();
        for k in &keys {
            assert!(
                [
                    "at",
                    "kind",
                    "outcome",
                    "reason",
                    "client_id",
                    "seq",
                    "prev"
                ]
                .contains(&k.as_str()),
                "{k}"
            );
        }
    }

    #[test]
    fn each_kind_of_tampering_is_reported_at_the_first_touched_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        write(&p, 6);
        let orig = lines(&p);

        // Edit line 3.
        let mut l = orig.clone();
        l[2] = l[2].replace("\"c2\"", "\"cX\"");
        put(&p, &l);
        let e = verify(&p).unwrap_err();
        assert_eq!((e.line, e.kind), (3, VerifyErrorKind::Chain));

        // Delete line 3: the line now at 3 says seq 4.
        let mut l = orig.clone();
        l.remove(2);
        put(&p, &l);
        let e = verify(&p).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(matches!(
            e.kind,
            VerifyErrorKind::Sequence {
                expected: 3,
                found: Some(4)
            }
        ));

        // Insert a line after line 2: reported at 3.
        let mut l = orig.clone();
        l.insert(2, l[1].clone());
        put(&p, &l);
        assert_eq!(verify(&p).unwrap_err().line, 3);

        // Swap lines 4 and 5.
        let mut l = orig.clone();
        l.swap(3, 4);
        put(&p, &l);
        assert_eq!(verify(&p).unwrap_err().line, 4);

        // Cut the last line short.
        let mut s = orig.join("\n");
        s.push('\n');
        s.truncate(s.len() - 10);
        std::fs::write(&p, s).unwrap();
        let e = verify(&p).unwrap_err();
        assert_eq!((e.line, e.kind), (6, VerifyErrorKind::Malformed));

        put(&p, &orig);
        assert!(verify(&p).is_ok());

        // Empty file: valid, zero lines.
        std::fs::write(&p, "").unwrap();
        assert_eq!(verify(&p).unwrap().lines, 0);
    }

    #[test]
    fn a_broken_log_is_not_appended_to() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        write(&p, 3);
        let mut l = lines(&p);
        l[0] = l[0].replace("\"c0\"", "\"cX\"");
        put(&p, &l);
        assert!(matches!(AuditLog::open(&p), Err(AuditLogError::Broken(_))));
    }

    #[test]
    fn concurrent_writers_keep_one_contiguous_chain() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        let log = std::sync::Arc::new(AuditLog::open(&p).unwrap());
        std::thread::scope(|s| {
            for t in 0..8 {
                let log = log.clone();
                s.spawn(move || {
                    for i in 0..1000 {
                        log.record(event(t * 10_000 + i));
                    }
                });
            }
        });
        log.close();
        assert_eq!(verify(&p).unwrap().lines, 8000);
    }
}
