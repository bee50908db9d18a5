//! The shared store: [`RedisStore`], a [`Store`] on one Redis 7 server, so that several
//! heartgate nodes can share codes, `jti`s, refresh families and CIBA requests. It has the
//! semantics of [`heartgate_core::store::MemoryStore`] and passes the same conformance
//! suite, against a real `redis-server`, 64-way races included.
//!
//! # Layout
//!
//! An entry of namespace `ns` and key `k` is the Redis string at
//! `{prefix}:{ns.as_str()}:` followed by the raw bytes of `k` (binary-safe). The prefix
//! (`[redis] key_prefix`, default `heartgate`) lets several deployments share one Redis;
//! it may not contain `:` or glob characters, so no prefix's keys are a subset of another's.
//! The value is a *record*, as in the redb store: the entry's absolute expiry as an 8-byte
//! big-endian `i64` (Unix seconds), then the caller's value bytes.
//!
//! # Expiry
//!
//! Expiry is decided by the caller's `now`, never by Redis's clock: every operation reads
//! the expiry from the record and treats `now >= expiry` as absent (a clock that jumps back
//! must not resurrect, one that disagrees with Redis's must not shorten a replay window).
//! Redis TTLs are only cleanup: a write sets `PXAT expiry + ttl_margin`, unless that instant
//! is already past by Redis's clock (then Redis would drop the key at once, while the
//! caller may still consider it live): such a key gets no TTL and is removed by
//! [`Store::purge_expired`]. The margin (default 300 s) is how far the nodes' clocks may run
//! behind Redis's before Redis evicts an entry the nodes still consider live.
//!
//! # Atomicity
//!
//! `insert_new`, `take`, `compare_and_swap`, `put` and `purge_expired` are Lua scripts
//! (`EVALSHA`, falling back to `EVAL` after a Redis restart flushed the script cache):
//! Redis runs a script alone, so each is atomic per key across every connection of every
//! node. `get` is one `GET`, `delete` one `DEL`. `scan_prefix` and `snapshot` `SCAN` the
//! prefix and read each key (`MGET`): atomic per key, not a point-in-time copy of the whole
//! keyspace. A single Redis (or a primary with replicas) is supported; Redis Cluster is not
//! (scripts touch keys of several hash slots in `purge_expired`).
//!
//! # Failure
//!
//! Every call is bounded: connecting (TCP, TLS, `AUTH`, `SELECT`) by the connect timeout,
//! each command by the read/write timeout. Any failure — refused, timed out, dropped, an
//! error reply, a record too short to hold its expiry — is [`StoreError::Unavailable`]
//! (fail closed: callers answer 503). A connection that failed is discarded together with
//! every idle one (they are likely to point at the same dead server), and the next call
//! connects afresh, so the store recovers by itself once Redis is back. A command is never
//! retried: a `take` whose answer was lost may have been applied, and must not be run
//! twice. So a connection broken while idle costs one failed call.
//!
//! Calls block their thread (the server runs them on its async workers), so a Redis
//! that hangs must not hold every worker for a timeout per request. After a call fails
//! for a connection-level reason (refused, timed out, dropped), the store's breaker
//! opens: every call fails at once with `Unavailable`, and one background thread PINGs
//! Redis every [`PROBE_INTERVAL`]; the first answer closes the breaker. A hung or dead
//! Redis thus costs one timeout, not one per request, and recovery follows within a
//! probe interval of Redis answering again.
//!
//! # Replicas and failover (THREATS S3, S4)
//!
//! Redis replicates asynchronously: a write the primary acknowledged may be missing on a
//! replica promoted after a failover. For one-time values the record and its consumption
//! are one key (`take` deletes it), so a lost write makes a value *unknown* or, if only
//! the deletion was lost, usable once more. With [`RedisOptions::wait_replicas`] > 0
//! every write (`put`, `insert_new`, `take`, `compare_and_swap`, `delete`) is followed on
//! the same connection by `WAIT replicas timeout`, and the call fails closed
//! (`Unavailable`, 503) when fewer replicas confirmed it within
//! [`RedisOptions::wait_timeout`]: nothing is acknowledged that a promoted replica does
//! not hold (a refused `take` has still consumed the value on the primary — the caller
//! is told 503, never handed the value). Redis documents that `WAIT` "does not make
//! Redis a strongly consistent store" (a replica that confirmed may still lose the write
//! in its own crash before a later promotion); it closes the common failover window.
//!
//! What it never does: return an expired value, log the Redis URL (it may hold a password),
//! or wait without a bound.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::record::encode;
use heartgate_core::clock::UnixTime;
use heartgate_core::store::{
    check_sizes, Entry, Inserted, Namespace, SnapshotEntry, Store, StoreError, Swapped, MAX_KEY_LEN,
};
use parking_lot::Mutex;
use redis::{Client, Connection, RedisError, Script};

/// Idle connections kept for reuse; more are opened under load and closed after use.
pub const MAX_IDLE_CONNECTIONS: usize = 64;
/// Keys asked for per `SCAN` step and read per `MGET` or purge script.
const SCAN_BATCH: usize = 512;
/// Longest key prefix.
pub const MAX_PREFIX_LEN: usize = 64;
/// How often the breaker's probe asks an unreachable Redis whether it is back.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// Settings of a [`RedisStore`] besides its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// The first part of every key (see the module documentation).
    pub key_prefix: String,
    /// Bound on opening a connection (TCP, TLS, `AUTH`, `SELECT`).
    pub connect_timeout: Duration,
    /// Bound on each command's write and on waiting for its reply.
    pub io_timeout: Duration,
    /// How long after an entry's expiry Redis itself deletes it.
    pub ttl_margin: Duration,
    /// Replicas that must confirm every write (`WAIT`) before it is acknowledged; 0 (the
    /// default) waits for none. See "Replicas and failover".
    pub wait_replicas: u32,
    /// How long a write waits for those confirmations; shorter than `io_timeout`.
    pub wait_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            key_prefix: "heartgate".into(),
            connect_timeout: Duration::from_millis(1000),
            io_timeout: Duration::from_millis(1000),
            ttl_margin: Duration::from_secs(300),
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(100),
        }
    }
}

/// Why [`RedisStore::open`] refused its settings. Nothing is connected by `open`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL is not a `redis://` or `rediss://` URL the client understands.
    #[error("the Redis URL is invalid")]
    Url,
    /// The key prefix is empty, too long, or has characters other than ASCII letters,
    /// digits, `_`, `-` and `.`.
    #[error("the Redis key prefix must be 1 to {MAX_PREFIX_LEN} of A-Z a-z 0-9 _ - .")]
    Prefix,
    /// A timeout is zero.
    #[error("Redis timeouts must be greater than zero")]
    Timeout,
}

/// Whether `prefix` is a valid key prefix (see [`OpenError::Prefix`]).
pub fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_LEN
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Shared helpers of the scripts: the record's expiry, a write with a cleanup TTL.
const LUA_HELPERS: &str = r#"
local function expiry(record)
  if #record < 8 then
    return redis.error_reply('heartgate: malformed record')
  end
  local n = 0
  for i = 1, 8 do n = n * 256 + string.byte(record, i) end
  if string.byte(record, 1) >= 128 then n = n - 18446744073709551616 end
  return n
end
local function write(key, record, cleanup_ms)
  local t = redis.call('TIME')
  local redis_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if tonumber(cleanup_ms) > redis_ms then
    redis.call('SET', key, record, 'PXAT', cleanup_ms)
  else
    redis.call('SET', key, record)
  end
end
"#;

/// KEYS[1] key; ARGV[1] record, ARGV[2] cleanup instant (ms).
const LUA_PUT: &str = "write(KEYS[1], ARGV[1], ARGV[2]) return 1";

/// KEYS[1] key; ARGV[1] record, ARGV[2] cleanup ms, ARGV[3] now (s). 1 inserted, 0 present.
const LUA_INSERT_NEW: &str = r#"
local v = redis.call('GET', KEYS[1])
if v then
  local e = expiry(v)
  if type(e) == 'table' then return e end
  if e > tonumber(ARGV[3]) then return 0 end
end
write(KEYS[1], ARGV[1], ARGV[2])
return 1
"#;

/// KEYS[1] key; ARGV[1] now (s). The live record, or nil; the key is deleted either way.
const LUA_TAKE: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return false end
local e = expiry(v)
if type(e) == 'table' then return e end
redis.call('DEL', KEYS[1])
if e <= tonumber(ARGV[1]) then return false end
return v
"#;

/// KEYS[1] key; ARGV[1] now (s), ARGV[2] expected value, ARGV[3] `set` or `del`,
/// ARGV[4] new record, ARGV[5] cleanup ms. 1 swapped, 0 conflict.
const LUA_CAS: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local e = expiry(v)
if type(e) == 'table' then return e end
if e <= tonumber(ARGV[1]) then return 0 end
if string.sub(v, 9) ~= ARGV[2] then return 0 end
if ARGV[3] == 'del' then
  redis.call('DEL', KEYS[1])
else
  write(KEYS[1], ARGV[4], ARGV[5])
end
return 1
"#;

/// KEYS: candidates; ARGV[1] now (s). Deletes those expired at now; malformed records are
/// kept (purge keeps what it cannot judge). Returns how many were deleted.
const LUA_PURGE: &str = r#"
local n = 0
local now = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v then
    local e = expiry(v)
    if type(e) ~= 'table' and e <= now then
      redis.call('DEL', key)
      n = n + 1
    end
  end
end
return n
"#;

struct Scripts {
    put: Script,
    insert_new: Script,
    take: Script,
    cas: Script,
    purge: Script,
}

impl Scripts {
    fn new() -> Scripts {
        let s = |body: &str| Script::new(&format!("{LUA_HELPERS}\n{body}"));
        Scripts {
            put: s(LUA_PUT),
            insert_new: s(LUA_INSERT_NEW),
            take: s(LUA_TAKE),
            cas: s(LUA_CAS),
            purge: s(LUA_PURGE),
        }
    }
}

/// A [`Store`] on Redis (see the module documentation).
pub struct RedisStore {
    client: Client,
    /// Where the server is, without credentials (for `Debug` and logs).
    endpoint: String,
    /// `{key_prefix}:`.
    prefix: Vec<u8>,
    options: RedisOptions,
    idle: Mutex<Vec<Connection>>,
    scripts: Scripts,
    breaker: Arc<Breaker>,
}

/// Whether Redis is known to be unreachable, and whether a probe is running.
#[derive(Debug, Default)]
struct Breaker {
    open: AtomicBool,
    probing: AtomicBool,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("endpoint", &self.endpoint)
            .field("key_prefix", &self.options.key_prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: RedisError) -> StoreError {
    // The kind only: error text may quote server replies.
    tracing::warn!(kind = ?e.kind(), timeout = e.is_timeout(), "redis store call failed");
    StoreError::Unavailable
}

/// A failure that says Redis cannot be reached (rather than a refusal of one command).
fn unreachable(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_refusal() || e.is_connection_dropped()
}

fn connect(client: &Client, options: &RedisOptions) -> Result<Connection, RedisError> {
    let c = client.get_connection_with_timeout(options.connect_timeout)?;
    c.set_read_timeout(Some(options.io_timeout))?;
    c.set_write_timeout(Some(options.io_timeout))?;
    Ok(c)
}

/// The breaker's probe: PING every [`PROBE_INTERVAL`] until Redis answers, then close the
/// breaker. Ends early when the store is dropped.
fn probe(client: &Client, options: &RedisOptions, breaker: &Weak<Breaker>) {
    loop {
        std::thread::sleep(PROBE_INTERVAL);
        let Some(b) = breaker.upgrade() else {
            return;
        };
        let answered = connect(client, options)
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok();
        if answered {
            // In this order: a call that trips in between then starts a new probe
            // (the other order could leave the breaker open with no probe to close it).
            b.probing.store(false, Ordering::Release);
            b.open.store(false, Ordering::Release);
            tracing::info!("redis store reachable again");
            return;
        }
    }
}

/// The value of `record` if it is live at `now`; a record too short fails closed.
fn live_value(record: &[u8], now: UnixTime) -> Result<Option<&[u8]>, StoreError> {
    super::record::live_value(record, now).map_err(|_| {
        tracing::warn!("redis store: a record too short to hold its expiry");
        StoreError::Unavailable
    })
}

/// `pattern` with Redis glob metacharacters escaped, for `SCAN MATCH`.
fn glob_escape(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\' | b'^' | b'-') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

impl RedisStore {
    /// A store on the Redis at `url` (`redis://[user:password@]host[:port][/db]` or
    /// `rediss://...`). Nothing is connected here: the first call connects, and a Redis that
    /// is down makes calls fail with [`StoreError::Unavailable`] until it is back.
    pub fn open(url: &str, options: RedisOptions) -> Result<RedisStore, OpenError> {
        if !valid_prefix(&options.key_prefix) {
            return Err(OpenError::Prefix);
        }
        if options.connect_timeout.is_zero() || options.io_timeout.is_zero() {
            return Err(OpenError::Timeout);
        }
        let parsed = url::Url::parse(url).map_err(|_| OpenError::Url)?;
        if !matches!(parsed.scheme(), "redis" | "rediss") || parsed.host_str().is_none() {
            return Err(OpenError::Url);
        }
        let endpoint = format!(
            "{}://{}:{}{}",
            parsed.scheme(),
            parsed.host_str().unwrap_or_default(),
            parsed.port().unwrap_or(6379),
            parsed.path()
        );
        let client = Client::open(url).map_err(|_| OpenError::Url)?;
        let mut prefix = options.key_prefix.as_bytes().to_vec();
        prefix.push(b':');
        Ok(RedisStore {
            client,
            endpoint,
            prefix,
            options,
            idle: Mutex::new(Vec::new()),
            scripts: Scripts::new(),
            breaker: Arc::new(Breaker::default()),
        })
    }

    /// The server's address without credentials, e.g. `redis://127.0.0.1:6379/0`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether Redis answers `PING` now.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.with_connection(|c| redis::cmd("PING").query::<String>(c).map(|_| ()))
    }

    fn connect(&self) -> Result<Connection, RedisError> {
        connect(&self.client, &self.options)
    }

    /// Open the breaker and start the probe, unless one runs already.
    fn trip(&self) {
        self.breaker.open.store(true, Ordering::Release);
        if self.breaker.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(
            endpoint = %self.endpoint,
            "redis store unreachable: failing fast until it answers again"
        );
        let (client, options) = (self.client.clone(), self.options.clone());
        let breaker = Arc::downgrade(&self.breaker);
        let spawned = std::thread::Builder::new()
            .name("heartgate-redis-probe".into())
            .spawn(move || probe(&client, &options, &breaker));
        if spawned.is_err() {
            // No probe: let calls try Redis themselves rather than fail forever.
            self.breaker.open.store(false, Ordering::Release);
            self.breaker.probing.store(false, Ordering::Release);
        }
    }

    /// Run `f` on an idle connection or a new one. A connection is reused only after `f`
    /// succeeded; after a failure, every idle connection is dropped too.
    fn with_connection<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, StoreError> {
        if self.breaker.open.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable);
        }
        let pooled = self.idle.lock().pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => match self.connect() {
                Ok(c) => c,
                Err(e) => {
                    if unreachable(&e) {
                        self.trip();
                    }
                    return Err(unavailable(e));
                }
            },
        };
        let result = f(&mut conn);
        if let Err(e) = &result {
            if unreachable(e) {
                self.trip();
            }
        }
        // An error reply (a script refusing a malformed record) leaves the connection
        // usable; anything else (I/O, timeout, a reply we could not parse) may have left
        // it mid-reply or pointing at a dead server, and so may the idle ones.
        let reusable = match &result {
            Ok(_) => true,
            Err(e) => {
                matches!(e.kind(), redis::ErrorKind::Server(_)) && !e.is_unrecoverable_error()
            }
        };
        if reusable {
            let mut idle = self.idle.lock();
            if idle.len() < MAX_IDLE_CONNECTIONS {
                idle.push(conn);
            }
        } else {
            self.idle.lock().clear();
        }
        result.map_err(unavailable)
    }

    fn key(&self, ns: Namespace, key: &[u8]) -> Vec<u8> {
        let mut k = self.ns_prefix(ns);
        k.extend_from_slice(key);
        k
    }

    fn ns_prefix(&self, ns: Namespace) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + 16 + MAX_KEY_LEN);
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(ns.as_str().as_bytes());
        k.push(b':');
        k
    }

    /// After a write on `c`: whether the configured replicas confirmed it (`WAIT`).
    fn replicated(&self, c: &mut Connection) -> Result<bool, RedisError> {
        let n = self.options.wait_replicas;
        if n == 0 {
            return Ok(true);
        }
        let ms = u64::try_from(self.options.wait_timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let acked: i64 = redis::cmd("WAIT").arg(n).arg(ms).query(c)?;
        Ok(acked >= i64::from(n))
    }

    /// Run the write `f` on a connection ([`RedisStore::with_connection`]) and answer
    /// only if the configured replicas confirmed it; `Unavailable` otherwise.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, StoreError> {
        let (value, replicated) = self.with_connection(|c| {
            let value = f(c)?;
            Ok((value, self.replicated(c)?))
        })?;
        if replicated {
            Ok(value)
        } else {
            tracing::warn!(
                replicas = self.options.wait_replicas,
                "Redis replicas did not confirm a write in time; answered as unavailable"
            );
            Err(StoreError::Unavailable)
        }
    }

    /// When Redis may delete an entry that expires at `expires_at` (ms since the epoch).
    fn cleanup_ms(&self, expires_at: UnixTime) -> i64 {
        let margin = i64::try_from(self.options.ttl_margin.as_secs()).unwrap_or(i64::MAX);
        expires_at.0.saturating_add(margin).saturating_mul(1000)
    }

    /// Every key matching `raw_prefix` followed by anything (SCAN, so never blocking Redis).
    fn scan_keys(
        &self,
        conn: &mut Connection,
        raw_prefix: &[u8],
    ) -> Result<Vec<Vec<u8>>, RedisError> {
        let mut pattern = Vec::with_capacity(raw_prefix.len() * 2 + 1);
        glob_escape(&mut pattern, raw_prefix);
        pattern.push(b'*');
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH)
                .query(conn)?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup(); // SCAN may return a key more than once
        Ok(keys)
    }

    /// The records of `keys` (absent ones as `None`).
    fn read_all(
        conn: &mut Connection,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, RedisError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(SCAN_BATCH) {
            let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(chunk).query(conn)?;
            out.extend(values);
        }
        Ok(out)
    }

    /// Live (key, value) pairs under `raw_prefix`, keys in full, in key order.
    fn live_under(&self, raw_prefix: &[u8], now: UnixTime) -> Result<Vec<Entry>, StoreError> {
        let (keys, records) = self.with_connection(|c| {
            let keys = self.scan_keys(c, raw_prefix)?;
            let records = Self::read_all(c, &keys)?;
            Ok((keys, records))
        })?;
        let mut out = Vec::new();
        for (key, record) in keys.into_iter().zip(records) {
            if let Some(record) = record {
                if let Some(value) = live_value(&record, now)? {
                    out.push((key, value.to_vec()));
                }
            }
        }
        Ok(out)
    }
}

impl Store for RedisStore {
    fn put(
        &self,
        ns: Namespace,
        key: &[u8],
        value: &[u8],
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        check_sizes(key, value)?;
        let (k, r, at) = (
            self.key(ns, key),
            encode(value, expires_at),
            self.cleanup_ms(expires_at),
        );
        self.write(|c| {
            self.scripts
                .put
                .key(&k)
                .arg(&r)
                .arg(at)
                .invoke::<i64>(c)
                .map(|_| ())
        })
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
        let (k, r, at) = (
            self.key(ns, key),
            encode(value, expires_at),
            self.cleanup_ms(expires_at),
        );
        let inserted = self.write(|c| {
            self.scripts
                .insert_new
                .key(&k)
                .arg(&r)
                .arg(at)
                .arg(now.0)
                .invoke::<i64>(c)
        })?;
        Ok(if inserted == 1 {
            Inserted::New
        } else {
            Inserted::AlreadyPresent
        })
    }

    fn get(&self, ns: Namespace, key: &[u8], now: UnixTime) -> Result<Option<Vec<u8>>, StoreError> {
        let k = self.key(ns, key);
        let record: Option<Vec<u8>> =
            self.with_connection(|c| redis::cmd("GET").arg(&k).query(c))?;
        match record {
            None => Ok(None),
            Some(r) => Ok(live_value(&r, now)?.map(<[u8]>::to_vec)),
        }
    }

    fn take(
        &self,
        ns: Namespace,
        key: &[u8],
        now: UnixTime,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let k = self.key(ns, key);
        let record: Option<Vec<u8>> =
            self.write(|c| self.scripts.take.key(&k).arg(now.0).invoke(c))?;
        match record {
            None => Ok(None),
            Some(r) => Ok(live_value(&r, now)?.map(<[u8]>::to_vec)),
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
        let k = self.key(ns, key);
        let (op, r, at) = match new {
            Some((value, exp)) => {
                check_sizes(key, value)?;
                ("set", encode(value, exp), self.cleanup_ms(exp))
            }
            None => ("del", Vec::new(), 0),
        };
        let swapped = self.write(|c| {
            self.scripts
                .cas
                .key(&k)
                .arg(now.0)
                .arg(expected)
                .arg(op)
                .arg(&r)
                .arg(at)
                .invoke::<i64>(c)
        })?;
        Ok(if swapped == 1 {
            Swapped::Done
        } else {
            Swapped::Conflict
        })
    }

    fn delete(&self, ns: Namespace, key: &[u8]) -> Result<(), StoreError> {
        let k = self.key(ns, key);
        self.write(|c| redis::cmd("DEL").arg(&k).query::<i64>(c).map(|_| ()))
    }

    fn scan_prefix(
        &self,
        ns: Namespace,
        prefix: &[u8],
        limit: usize,
        now: UnixTime,
    ) -> Result<Vec<Entry>, StoreError> {
        let ns_prefix = self.ns_prefix(ns);
        let mut raw = ns_prefix.clone();
        raw.extend_from_slice(prefix);
        let mut out = self.live_under(&raw, now)?;
        // Keys came sorted from `scan_keys`; stripping a common prefix keeps the order.
        out.truncate(limit);
        for (k, _) in &mut out {
            k.drain(..ns_prefix.len());
        }
        Ok(out)
    }

    fn purge_expired(&self, now: UnixTime) -> Result<usize, StoreError> {
        let prefix = self.prefix.clone();
        self.with_connection(|c| {
            let keys = self.scan_keys(c, &prefix)?;
            let mut purged = 0usize;
            for chunk in keys.chunks(SCAN_BATCH) {
                let mut inv = self.scripts.purge.prepare_invoke();
                for k in chunk {
                    inv.key(k);
                }
                let n: i64 = inv.arg(now.0).invoke(c)?;
                purged += usize::try_from(n).unwrap_or(0);
            }
            Ok(purged)
        })
    }

    fn snapshot(&self, now: UnixTime) -> Result<Vec<SnapshotEntry>, StoreError> {
        let entries = self.live_under(&self.prefix, now)?;
        let mut out = Vec::with_capacity(entries.len());
        for (full, value) in entries {
            let rest = &full[self.prefix.len()..];
            // A key under our prefix but of no namespace we know is not ours to report.
            let Some(ns) = Namespace::ALL.into_iter().find(|ns| {
                rest.strip_prefix(ns.as_str().as_bytes())
                    .is_some_and(|r| r.first() == Some(&b':'))
            }) else {
                continue;
            };
            let key = rest[ns.as_str().len() + 1..].to_vec();
            out.push((ns, key, value));
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_metacharacters_are_escaped() {
        let mut out = Vec::new();
        glob_escape(&mut out, b"a*b?c[d]e\\f\x00");
        assert_eq!(out, b"a\\*b\\?c\\[d\\]e\\\\f\x00");
    }

    #[test]
    fn prefixes_are_restricted() {
        assert!(valid_prefix("heartgate"));
        assert!(valid_prefix("prod-eu.1_a"));
        for bad in ["", "a:b", "a*", "a b", &"x".repeat(MAX_PREFIX_LEN + 1)] {
            assert!(!valid_prefix(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_endpoint_never_holds_the_password() {
        let s = RedisStore::open(
            "redis://user:s3cret@127.0.0.1:6390/2",
            RedisOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.endpoint(), "redis://127.0.0.1:6390/2");
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(matches!(
            RedisStore::open("http://127.0.0.1", RedisOptions::default()),
            Err(OpenError::Url)
        ));
        let o = RedisOptions {
            io_timeout: Duration::ZERO,
            ..RedisOptions::default()
        };
        assert!(matches!(
            RedisStore::open("redis://127.0.0.1", o),
            Err(OpenError::Timeout)
        ));
    }
}
