//! The shared store: [`RedisStore`], a [`Store`] on Redis 7 (or Valkey) — one server, a
//! primary with replicas, or a Redis Cluster — so that several heartgate nodes can share
//! codes, `jti`s, refresh families and CIBA requests. It has the semantics of
//! [`heartgate_core::store::MemoryStore`] and passes the same conformance suite, against
//! a real `redis-server` and a real three-primary cluster, 64-way races included.
//!
//! # Connections
//!
//! I/O is asynchronous: one multiplexed connection per Redis server (more with `WAIT`, below; the `redis` crate's
//! `ConnectionManager`, which reconnects by itself after a connection is lost, or its
//! cluster connection, which follows the cluster's slot map, `MOVED` and `ASK`),
//! driven by a small Tokio runtime of the store's own (one thread, `heartgate-redis`).
//! Concurrent calls share the connection and are pipelined on it. [`Store`] is
//! synchronous (the core has no async runtime): a call hands its commands to that
//! runtime and waits for the answer, bounded. The runtime is the store's own, never the
//! caller's, so a caller that blocks a worker of the server's runtime cannot starve
//! the task that would answer it.
//!
//! # Layout
//!
//! An entry of namespace `ns` and key `k` is the Redis string at
//! `{prefix}:{ns.as_str()}:` followed by the raw bytes of `k` (binary-safe). The prefix
//! (`[redis] key_prefix`, default `heartgate`) lets several deployments share one Redis;
//! it may not contain `:`, braces or glob characters, so no prefix's keys are a subset of
//! another's and the prefix never pins keys to one cluster slot. The value is a
//! *record*, as in the redb store: the entry's absolute expiry as an 8-byte big-endian
//! `i64` (Unix seconds), then the caller's value bytes.
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
//! `insert_new`, `take`, `compare_and_swap` and `put` are Lua scripts of one key
//! (`EVALSHA`, falling back to `EVAL` after a restart flushed the script cache): Redis
//! runs a script alone, so each is atomic per key across every connection of every node,
//! and in a cluster each runs on the primary of its key's slot. `get` is one `GET`,
//! `delete` one `DEL`. `scan_prefix` and `snapshot` `SCAN` the prefix (on every primary of
//! a cluster) and read each key (`MGET`, split by slot in a cluster): atomic per key, not
//! a point-in-time copy of the whole keyspace. `purge_expired` re-checks each candidate in
//! a script, by batches of one slot.
//!
//! # Failure
//!
//! Every call is bounded: connecting (TCP, TLS, `AUTH`, `SELECT`) by the connect timeout,
//! each command by the read/write timeout, the whole call by their sum. Any failure —
//! refused, timed out, dropped, an error reply, a record too short to hold its expiry —
//! is [`StoreError::Unavailable`] (fail closed: callers answer 503). A lost connection is
//! re-established in the background (the next calls wait for it, within their bound), so
//! the store recovers by itself once Redis is back.
//!
//! A command is not re-sent by the single-server connection. The cluster connection
//! re-sends a command after a redirect (`MOVED`, `ASK`, a primary demoted during a
//! failover) and may re-send one whose connection broke; for these scripts a second run
//! after a first that was applied never hands a value out twice: `take` then finds the
//! key gone (absent), `insert_new` finds it present (refused as a replay), `compare_and_swap`
//! finds the new value (conflict) — a lost answer turns into a refusal, never into a
//! second use.
//!
//! A Redis that hangs must not cost a timeout per request. After a call fails for a
//! connection-level reason (refused, timed out, dropped), the store's breaker opens:
//! every call fails at once with `Unavailable`, and one probe on the store's runtime
//! PINGs Redis every [`PROBE_INTERVAL`]; the first answer closes the breaker. A hung or
//! dead Redis thus costs one timeout, not one per request, and recovery follows within a
//! probe interval of Redis answering again.
//!
//! # Replicas and failover (THREATS S3, S4)
//!
//! Redis replicates asynchronously: a write the primary acknowledged may be missing on a
//! replica promoted after a failover. For one-time values the record and its consumption
//! are one key (`take` deletes it), so a lost write makes a value *unknown* or, if only
//! the deletion was lost, usable once more. With [`RedisOptions::wait_replicas`] > 0
//! every write (`put`, `insert_new`, `take`, `compare_and_swap`, `delete`) is followed on
//! the same connection (in a cluster: the connection to the key's primary) by
//! `WAIT replicas timeout`, and the call fails closed (`Unavailable`, 503) when fewer
//! replicas confirmed it within [`RedisOptions::wait_timeout`]: nothing is acknowledged
//! that a promoted replica does not hold (a refused `take` has still consumed the value on
//! the primary — the caller is told 503, never handed the value). `WAIT` holds its
//! connection until the replicas answer, so with it on the store keeps
//! [`WAIT_CONNECTIONS`] connections and takes them in turn: the calls sharing a
//! connection queue behind its confirmations. Redis documents that `WAIT` "does not make
//! Redis a strongly consistent store" (a replica that confirmed may still lose the write
//! in its own crash before a later promotion); it closes the common failover window.
//!
//! What it never does: return an expired value, log a Redis URL (it may hold a password),
//! or wait without a bound.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::record::encode;
use heartgate_core::clock::UnixTime;
use heartgate_core::store::{
    check_sizes, Entry, Inserted, Namespace, SnapshotEntry, Store, StoreError, Swapped, MAX_KEY_LEN,
};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{Client, Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, Script, Value};

/// Keys asked for per `SCAN` step and read per `MGET` or purge script.
const SCAN_BATCH: usize = 512;
/// Longest key prefix.
pub const MAX_PREFIX_LEN: usize = 64;
/// Connections (each multiplexed) when writes wait for replicas (`WAIT`), so that one
/// write waiting for its replicas holds back only the calls sharing its connection.
pub const WAIT_CONNECTIONS: usize = 8;
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
    /// Whether the URL names a node of a Redis Cluster (then [`RedisOptions::cluster_nodes`]
    /// may name more nodes to start from; the store learns the rest from the cluster).
    pub cluster: bool,
    /// Further cluster nodes to try when the URL's is down (`redis://` or `rediss://`
    /// URLs; only with [`RedisOptions::cluster`]).
    pub cluster_nodes: Vec<String>,
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
            cluster: false,
            cluster_nodes: Vec::new(),
        }
    }
}

/// Why [`RedisStore::open`] refused its settings. Nothing is connected by `open`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL is not a `redis://` or `rediss://` URL the client understands (or, for a
    /// cluster, names a database other than 0: a cluster has only database 0).
    #[error("the Redis URL is invalid")]
    Url,
    /// The key prefix is empty, too long, or has characters other than ASCII letters,
    /// digits, `_`, `-` and `.`.
    #[error("the Redis key prefix must be 1 to {MAX_PREFIX_LEN} of A-Z a-z 0-9 _ - .")]
    Prefix,
    /// A timeout is zero.
    #[error("Redis timeouts must be greater than zero")]
    Timeout,
    /// Further cluster nodes were given for a store that is not a cluster.
    #[error("redis.cluster_nodes needs redis.cluster = true")]
    NodesWithoutCluster,
    /// The store's I/O runtime could not start (out of threads or memory).
    #[error("the Redis store's I/O thread could not start")]
    Runtime,
}

/// Whether `prefix` is a valid key prefix (see [`OpenError::Prefix`]).
pub fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_LEN
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `url` parsed if it is a `redis://` or `rediss://` URL with a host.
fn redis_url(url: &str) -> Result<url::Url, OpenError> {
    let parsed = url::Url::parse(url).map_err(|_| OpenError::Url)?;
    if !matches!(parsed.scheme(), "redis" | "rediss") || parsed.host_str().is_none() {
        return Err(OpenError::Url);
    }
    Ok(parsed)
}

/// Whether the Redis URL `url` names database 0 (or none, which is 0): the only one a
/// Redis Cluster has.
pub fn names_database_zero(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|p| matches!(p.path(), "" | "/" | "/0"))
}

/// `url` without credentials, e.g. `redis://127.0.0.1:6379/0`.
fn endpoint_of(parsed: &url::Url) -> String {
    format!(
        "{}://{}:{}{}",
        parsed.scheme(),
        parsed.host_str().unwrap_or_default(),
        parsed.port().unwrap_or(6379),
        parsed.path()
    )
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

/// The connection every call goes through: one server (or primary) or a cluster. Both
/// are handles to connections driven by the store's runtime; a clone is cheap.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Where the store connects: what the connection is made from.
#[allow(clippy::large_enum_variant)] // reason: one per store, never moved after `open`
enum Target {
    Single(Client),
    Cluster(ClusterClient),
}

/// Everything a call needs on the store's runtime (shared with its tasks).
struct Shared {
    target: Target,
    options: RedisOptions,
    scripts: Scripts,
    /// The connections, each made by the first call that needs it (a failed attempt
    /// leaves it unset for the next call to try again), taken in turn. One, unless
    /// writes wait for replicas: then [`WAIT_CONNECTIONS`], since a `WAIT` holds its
    /// connection until the replicas answer.
    conns: Box<[tokio::sync::OnceCell<Conn>]>,
    /// Which connection the next call takes.
    turn: std::sync::atomic::AtomicUsize,
    breaker: Breaker,
}

/// Whether Redis is known to be unreachable, and whether a probe is running.
#[derive(Debug, Default)]
struct Breaker {
    open: AtomicBool,
    probing: AtomicBool,
}

/// A [`Store`] on Redis (see the module documentation).
pub struct RedisStore {
    shared: Arc<Shared>,
    /// The store's own I/O runtime; `None` only while being dropped.
    runtime: Option<tokio::runtime::Runtime>,
    /// Where the server is, without credentials (for `Debug` and logs).
    endpoint: String,
    /// `{key_prefix}:`.
    prefix: Vec<u8>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("endpoint", &self.endpoint)
            .field("cluster", &self.shared.options.cluster)
            .field("key_prefix", &self.shared.options.key_prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        // Not `Runtime::drop`, which may not run inside another runtime (a store dropped
        // by an async task): let the I/O thread wind down on its own.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn unavailable(e: &RedisError) -> StoreError {
    // The kind only: error text may quote server replies.
    tracing::warn!(kind = ?e.kind(), timeout = e.is_timeout(), "redis store call failed");
    StoreError::Unavailable
}

/// A failure that says Redis cannot be reached (rather than a refusal of one command).
fn unreachable(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_refusal() || e.is_connection_dropped()
}

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "redis store call timed out",
    ))
}

impl Shared {
    /// The connection, made now if no call made it yet.
    async fn conn(&self) -> Result<Conn, RedisError> {
        let i = self.turn.fetch_add(1, Ordering::Relaxed) % self.conns.len().max(1);
        let Some(cell) = self.conns.get(i) else {
            return Err(timed_out());
        };
        let conn = cell
            .get_or_try_init(|| async {
                let bound = self.options.connect_timeout;
                let made = match &self.target {
                    Target::Single(client) => {
                        let config = ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(self.options.connect_timeout))
                            .set_response_timeout(Some(self.options.io_timeout))
                            // Reconnect promptly, and give up an attempt soon: the next
                            // call (or the breaker's probe) starts another.
                            .set_min_delay(Duration::from_millis(20))
                            .set_max_delay(Duration::from_millis(200))
                            .set_number_of_retries(1);
                        tokio::time::timeout(
                            bound,
                            ConnectionManager::new_with_config(client.clone(), config),
                        )
                        .await
                        .map(|r| r.map(Conn::Single))
                    }
                    Target::Cluster(client) => {
                        tokio::time::timeout(bound, client.get_async_connection())
                            .await
                            .map(|r| r.map(Conn::Cluster))
                    }
                };
                made.unwrap_or_else(|_| Err(timed_out()))
            })
            .await?;
        Ok(conn.clone())
    }

    /// After a write on `conn` to `key`: whether the configured replicas confirmed it
    /// (`WAIT` on the same connection; in a cluster, on the key's primary).
    async fn replicated(&self, conn: &mut Conn, key: &[u8]) -> Result<bool, RedisError> {
        let n = self.options.wait_replicas;
        if n == 0 {
            return Ok(true);
        }
        let ms = u64::try_from(self.options.wait_timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut wait = redis::cmd("WAIT");
        wait.arg(n).arg(ms);
        let acked: i64 = match conn {
            Conn::Single(c) => wait.query_async(c).await?,
            Conn::Cluster(c) => {
                let route = Route::with_key(key, SlotAddr::Master);
                let v = c
                    .route_command(
                        wait,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                i64::from_redis_value(v)?
            }
        };
        Ok(acked >= i64::from(n))
    }

    /// Every key matching `raw_prefix` followed by anything, in order (SCAN, so never
    /// blocking Redis; on every primary of a cluster).
    async fn scan_keys(
        &self,
        conn: &mut Conn,
        raw_prefix: &[u8],
    ) -> Result<Vec<Vec<u8>>, RedisError> {
        let mut pattern = Vec::with_capacity(raw_prefix.len() * 2 + 1);
        glob_escape(&mut pattern, raw_prefix);
        pattern.push(b'*');
        let mut keys = Vec::new();
        let nodes: Vec<Option<(String, u16)>> = match conn {
            Conn::Single(_) => vec![None],
            Conn::Cluster(c) => primaries(c).await?.into_iter().map(Some).collect(),
        };
        for addr in &nodes {
            scan_node(conn, addr.as_ref(), &pattern, &mut keys).await?;
        }
        keys.sort();
        keys.dedup(); // SCAN may return a key more than once
        Ok(keys)
    }

    /// The records of `keys` (absent ones as `None`).
    async fn read_all(
        conn: &mut Conn,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, RedisError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(SCAN_BATCH) {
            // In a cluster the connection splits an MGET by slot and joins the answers.
            let values: Vec<Option<Vec<u8>>> =
                redis::cmd("MGET").arg(chunk).query_async(conn).await?;
            out.extend(values);
        }
        Ok(out)
    }

    /// Delete those of `keys` that are expired at `now` (re-checked by a script, by
    /// batches of one slot in a cluster: a script's keys must share one).
    async fn purge(
        &self,
        conn: &mut Conn,
        keys: Vec<Vec<u8>>,
        now: UnixTime,
    ) -> Result<usize, RedisError> {
        // The keys in groups a script may take together: all of them on one server,
        // those of one slot on a cluster.
        let groups: Vec<Vec<Vec<u8>>> = match conn {
            Conn::Single(_) => vec![keys],
            Conn::Cluster(_) => {
                let mut by_slot: std::collections::HashMap<Slot, Vec<Vec<u8>>> =
                    std::collections::HashMap::new();
                for k in keys {
                    by_slot.entry(Slot::for_key(&k)).or_default().push(k);
                }
                by_slot.into_values().collect()
            }
        };
        let mut purged = 0usize;
        for batch in groups.iter().flat_map(|g| g.chunks(SCAN_BATCH)) {
            let mut inv = self.scripts.purge.prepare_invoke();
            for k in batch {
                inv.key(k);
            }
            let deleted: i64 = inv.arg(now.0).invoke_async(conn).await?;
            purged += usize::try_from(deleted).unwrap_or(0);
        }
        Ok(purged)
    }
}

/// SCAN one node for keys matching `pattern`, appending them to `keys`: the single
/// server, or the cluster node at `addr`.
async fn scan_node(
    conn: &mut Conn,
    addr: Option<&(String, u16)>,
    pattern: &[u8],
    keys: &mut Vec<Vec<u8>>,
) -> Result<(), RedisError> {
    let mut cursor: u64 = 0;
    loop {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_BATCH);
        let (next, batch): (u64, Vec<Vec<u8>>) = match (&mut *conn, addr) {
            (Conn::Cluster(c), Some((host, port))) => {
                let at = SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                };
                FromRedisValue::from_redis_value(
                    c.route_command(scan, RoutingInfo::SingleNode(at)).await?,
                )?
            }
            (c, _) => scan.query_async(c).await?,
        };
        keys.extend(batch);
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// The addresses of a cluster's primaries, from `CLUSTER SLOTS` (the same source as the
/// connection's own slot map, so the connection knows each address).
async fn primaries(c: &mut ClusterConnection) -> Result<Vec<(String, u16)>, RedisError> {
    let v = c
        .route_command(
            redis::cmd("CLUSTER").arg("SLOTS").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await?;
    let ranges: Vec<Vec<Value>> = FromRedisValue::from_redis_value(v)?;
    let mut out = Vec::new();
    for range in ranges {
        // [start, end, [host, port, id, ...], replicas...]
        let Some(primary) = range.into_iter().nth(2) else {
            continue;
        };
        let node: Vec<Value> = FromRedisValue::from_redis_value(primary)?;
        let mut it = node.into_iter();
        let (Some(host), Some(port)) = (it.next(), it.next()) else {
            continue;
        };
        let host: String = FromRedisValue::from_redis_value(host)?;
        let port: u16 = FromRedisValue::from_redis_value(port)?;
        if !out.contains(&(host.clone(), port)) {
            out.push((host, port));
        }
    }
    Ok(out)
}

/// The breaker's probe: PING every [`PROBE_INTERVAL`] until Redis answers, then close the
/// breaker. Ends early when the store is dropped.
async fn probe(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(s) = shared.upgrade() else {
            return;
        };
        let ping = async {
            let mut c = s.conn().await?;
            redis::cmd("PING").query_async::<String>(&mut c).await
        };
        let bound = s.options.connect_timeout + s.options.io_timeout;
        if matches!(tokio::time::timeout(bound, ping).await, Ok(Ok(_))) {
            // In this order: a call that trips in between then starts a new probe
            // (the other order could leave the breaker open with no probe to close it).
            s.breaker.probing.store(false, Ordering::Release);
            s.breaker.open.store(false, Ordering::Release);
            tracing::info!("redis store reachable again");
            return;
        }
    }
}

impl RedisStore {
    /// A store on the Redis at `url` (`redis://[user:password@]host[:port][/db]` or
    /// `rediss://...`; with [`RedisOptions::cluster`], any node of the cluster). Nothing
    /// is connected here: the first call connects, and a Redis that is down makes calls
    /// fail with [`StoreError::Unavailable`] until it is back.
    pub fn open(url: &str, options: RedisOptions) -> Result<RedisStore, OpenError> {
        if !valid_prefix(&options.key_prefix) {
            return Err(OpenError::Prefix);
        }
        if options.connect_timeout.is_zero() || options.io_timeout.is_zero() {
            return Err(OpenError::Timeout);
        }
        let parsed = redis_url(url)?;
        let endpoint = endpoint_of(&parsed);
        let target = if options.cluster {
            let mut nodes = vec![url.to_owned()];
            for n in &options.cluster_nodes {
                redis_url(n)?;
                nodes.push(n.clone());
            }
            // A cluster has database 0 only.
            for n in &nodes {
                if !names_database_zero(n) {
                    return Err(OpenError::Url);
                }
            }
            let client = ClusterClientBuilder::new(nodes)
                .connection_timeout(options.connect_timeout)
                .response_timeout(options.io_timeout)
                // Room for a redirect or two during resharding or a failover (module
                // documentation: a re-sent script never hands a value out twice).
                .retries(2)
                .min_retry_wait(20)
                .max_retry_wait(200)
                .build()
                .map_err(|_| OpenError::Url)?;
            Target::Cluster(client)
        } else {
            if !options.cluster_nodes.is_empty() {
                return Err(OpenError::NodesWithoutCluster);
            }
            Target::Single(Client::open(url).map_err(|_| OpenError::Url)?)
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("heartgate-redis")
            .enable_all()
            .build()
            .map_err(|_| OpenError::Runtime)?;
        let mut prefix = options.key_prefix.as_bytes().to_vec();
        prefix.push(b':');
        let connections = if options.wait_replicas > 0 {
            WAIT_CONNECTIONS
        } else {
            1
        };
        Ok(RedisStore {
            shared: Arc::new(Shared {
                target,
                options,
                scripts: Scripts::new(),
                conns: (0..connections)
                    .map(|_| tokio::sync::OnceCell::new())
                    .collect(),
                turn: std::sync::atomic::AtomicUsize::new(0),
                breaker: Breaker::default(),
            }),
            runtime: Some(runtime),
            endpoint,
            prefix,
        })
    }

    /// The server's address without credentials, e.g. `redis://127.0.0.1:6379/0` (for a
    /// cluster, the first node's).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether Redis answers `PING` now (in a cluster, the node the connection picks).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.run(|_, mut c| async move {
            redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map(|_| ())
        })
    }

    /// Open the breaker and start the probe, unless one runs already.
    fn trip(&self) {
        let b = &self.shared.breaker;
        b.open.store(true, Ordering::Release);
        if b.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(
            endpoint = %self.endpoint,
            "redis store unreachable: failing fast until it answers again"
        );
        match &self.runtime {
            Some(rt) => {
                rt.spawn(probe(Arc::downgrade(&self.shared)));
            }
            None => {
                // No probe: let calls try Redis themselves rather than fail forever.
                b.open.store(false, Ordering::Release);
                b.probing.store(false, Ordering::Release);
            }
        }
    }

    /// Run `op` on the store's runtime with the connection, and wait for its answer
    /// (bounded by the connect and I/O timeouts together). Fails at once while the
    /// breaker is open; trips it on a connection-level failure.
    fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Shared>, Conn) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, RedisError>> + Send,
    {
        let shared = &self.shared;
        if shared.breaker.open.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable);
        }
        let Some(rt) = &self.runtime else {
            return Err(StoreError::Unavailable);
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let task = Arc::clone(shared);
        let bound = shared.options.connect_timeout + shared.options.io_timeout;
        rt.spawn(async move {
            let call = async {
                let conn = task.conn().await?;
                op(Arc::clone(&task), conn).await
            };
            let result = tokio::time::timeout(bound, call)
                .await
                .unwrap_or_else(|_| Err(timed_out()));
            let _ = tx.send(result);
        });
        // The task always answers within its bound (or is dropped with the runtime,
        // which closes the channel).
        let result = rx.recv().unwrap_or_else(|_| Err(timed_out()));
        result.map_err(|e| {
            if unreachable(&e) {
                self.trip();
            }
            unavailable(&e)
        })
    }

    /// Run the write `op` (see [`RedisStore::run`]) and answer only if the configured
    /// replicas confirmed it (`WAIT` after it, for `key`); `Unavailable` otherwise.
    fn write<T, F, Fut>(&self, key: Vec<u8>, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Shared>, Conn, Vec<u8>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, RedisError>> + Send,
    {
        let (value, replicated) = self.run(move |s, mut conn| async move {
            let value = op(Arc::clone(&s), conn.clone(), key.clone()).await?;
            let replicated = s.replicated(&mut conn, &key).await?;
            Ok((value, replicated))
        })?;
        if replicated {
            Ok(value)
        } else {
            tracing::warn!(
                replicas = self.shared.options.wait_replicas,
                "Redis replicas did not confirm a write in time; answered as unavailable"
            );
            Err(StoreError::Unavailable)
        }
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

    /// When Redis may delete an entry that expires at `expires_at` (ms since the epoch).
    fn cleanup_ms(&self, expires_at: UnixTime) -> i64 {
        let margin = i64::try_from(self.shared.options.ttl_margin.as_secs()).unwrap_or(i64::MAX);
        expires_at.0.saturating_add(margin).saturating_mul(1000)
    }

    /// Live (key, value) pairs under `raw_prefix`, keys in full, in key order.
    fn live_under(&self, raw_prefix: &[u8], now: UnixTime) -> Result<Vec<Entry>, StoreError> {
        let raw = raw_prefix.to_vec();
        let (keys, records) = self.run(move |s, mut c| async move {
            let keys = s.scan_keys(&mut c, &raw).await?;
            let records = Shared::read_all(&mut c, &keys).await?;
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

impl Store for RedisStore {
    fn put(
        &self,
        ns: Namespace,
        key: &[u8],
        value: &[u8],
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        check_sizes(key, value)?;
        let (r, at) = (encode(value, expires_at), self.cleanup_ms(expires_at));
        self.write(self.key(ns, key), move |s, mut c, k| async move {
            s.scripts
                .put
                .key(&k)
                .arg(&r)
                .arg(at)
                .invoke_async::<i64>(&mut c)
                .await
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
        let (r, at) = (encode(value, expires_at), self.cleanup_ms(expires_at));
        let inserted = self.write(self.key(ns, key), move |s, mut c, k| async move {
            s.scripts
                .insert_new
                .key(&k)
                .arg(&r)
                .arg(at)
                .arg(now.0)
                .invoke_async::<i64>(&mut c)
                .await
        })?;
        Ok(if inserted == 1 {
            Inserted::New
        } else {
            Inserted::AlreadyPresent
        })
    }

    fn get(&self, ns: Namespace, key: &[u8], now: UnixTime) -> Result<Option<Vec<u8>>, StoreError> {
        let k = self.key(ns, key);
        let record: Option<Vec<u8>> = self.run(move |_, mut c| async move {
            redis::cmd("GET").arg(&k).query_async(&mut c).await
        })?;
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
        let record: Option<Vec<u8>> =
            self.write(self.key(ns, key), move |s, mut c, k| async move {
                s.scripts.take.key(&k).arg(now.0).invoke_async(&mut c).await
            })?;
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
        let (op, r, at) = match new {
            Some((value, exp)) => {
                check_sizes(key, value)?;
                ("set", encode(value, exp), self.cleanup_ms(exp))
            }
            None => ("del", Vec::new(), 0),
        };
        let expected = expected.to_vec();
        let swapped = self.write(self.key(ns, key), move |s, mut c, k| async move {
            s.scripts
                .cas
                .key(&k)
                .arg(now.0)
                .arg(&expected)
                .arg(op)
                .arg(&r)
                .arg(at)
                .invoke_async::<i64>(&mut c)
                .await
        })?;
        Ok(if swapped == 1 {
            Swapped::Done
        } else {
            Swapped::Conflict
        })
    }

    fn delete(&self, ns: Namespace, key: &[u8]) -> Result<(), StoreError> {
        self.write(self.key(ns, key), |_, mut c, k| async move {
            redis::cmd("DEL")
                .arg(&k)
                .query_async::<i64>(&mut c)
                .await
                .map(|_| ())
        })
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
        self.run(move |s, mut c| async move {
            let keys = s.scan_keys(&mut c, &prefix).await?;
            s.purge(&mut c, keys, now).await
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

    #[test]
    fn bad_cluster_settings_are_refused() {
        let nodes = |cluster: bool, more: &[&str]| RedisOptions {
            cluster,
            cluster_nodes: more.iter().map(|n| (*n).to_owned()).collect(),
            ..RedisOptions::default()
        };
        assert!(matches!(
            RedisStore::open(
                "redis://127.0.0.1:7000",
                nodes(false, &["redis://127.0.0.1:7001"])
            ),
            Err(OpenError::NodesWithoutCluster)
        ));
        for (url, more) in [
            ("redis://127.0.0.1:7000/1", &[][..]),
            ("redis://127.0.0.1:7000", &["redis://127.0.0.1:7001/2"][..]),
            ("redis://127.0.0.1:7000", &["http://127.0.0.1:7001"][..]),
            // One cluster is reached over TLS or not, never both.
            ("redis://127.0.0.1:7000", &["rediss://127.0.0.1:7001"][..]),
        ] {
            assert!(
                matches!(
                    RedisStore::open(url, nodes(true, more)),
                    Err(OpenError::Url)
                ),
                "{url} {more:?}"
            );
        }
        assert!(
            RedisStore::open("redis://127.0.0.1:7000/0", nodes(true, &["redis://h:7001"])).is_ok()
        );
    }
}
