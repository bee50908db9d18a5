#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

//! The Redis store against a real `redis-server` that this test binary starts on a free
//! port of 127.0.0.1 (no persistence) and kills when it ends: the conformance suite, key
//! prefixes that keep deployments apart, failing closed while Redis is down and recovering
//! by itself when it is back, and malformed records.
//!
//! `redis-server` must be on PATH (tests/run-all installs it): without it these tests fail,
//! they are never skipped.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use heartgate_core::clock::UnixTime;
use heartgate_core::store::conformance::Kept;
use heartgate_core::store::{Inserted, Namespace, Store, StoreError};
use heartgate_server::stores::redis::{RedisOptions, RedisStore};

const T0: UnixTime = UnixTime(1_700_000_000);
const LATER: UnixTime = UnixTime(1_700_000_600);

/// A `redis-server` child process, killed on drop, its files (a replica's `dump.rdb`)
/// in a directory of its own.
struct RedisServer {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    /// Start on `port`; `None` if it exits at once (the port is taken).
    fn try_start(port: u16) -> Option<RedisServer> {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .arg("--dir")
            .arg(dir.path())
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): the Redis store tests need it on PATH \
                     (Debian: apt-get install redis-server; tests/run-all installs it)"
                )
            });
        let mut server = RedisServer {
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        // Ours is up when the server on the port reports our child's pid (another test's
        // server may have taken the port first: then ours exits).
        let ours = format!("process_id:{}\r\n", server.child.id());
        while !server.answers_as(&ours) {
            if let Ok(Some(_)) = server.child.try_wait() {
                return None;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    fn answers_as(&self, process_id_line: &str) -> bool {
        if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err() {
            return false;
        }
        let info = redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
            .and_then(|mut c| redis::cmd("INFO").arg("server").query::<String>(&mut c));
        info.is_ok_and(|i| i.contains(process_id_line))
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A store on its own `redis-server`, killed when this is dropped (also when the test
/// panics). A server per test costs a few milliseconds and keeps tests apart.
type TestStore = Kept<RedisStore, RedisServer>;

fn options(prefix: &str) -> RedisOptions {
    RedisOptions {
        key_prefix: prefix.into(),
        connect_timeout: Duration::from_millis(500),
        io_timeout: Duration::from_millis(500),
        ..RedisOptions::default()
    }
}

fn test_store() -> TestStore {
    let server = RedisServer::start_on_a_free_port();
    let store = RedisStore::open(&server.url(), options("heartgate")).unwrap();
    Kept {
        store,
        keep: server,
    }
}

impl RedisServer {
    /// Another process may take the free port before redis-server binds it: try again.
    fn start_on_a_free_port() -> RedisServer {
        for _ in 0..5 {
            if let Some(s) = RedisServer::try_start(free_port()) {
                return s;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }
}

mod conformance {
    heartgate_core::store_conformance_tests!(super::test_store());
}

/// A raw connection to the test server, to look behind the store's back.
fn raw(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap()
}

#[test]
fn two_prefixes_never_see_each_others_keys() {
    let t = test_store();
    let a = RedisStore::open(&t.keep.url(), options("deploy-a")).unwrap();
    let b = RedisStore::open(&t.keep.url(), options("deploy-a.b")).unwrap();
    a.put(Namespace::Code, b"k", b"from-a", LATER).unwrap();
    b.put(Namespace::Code, b"k2", b"from-b", LATER).unwrap();
    assert_eq!(b.get(Namespace::Code, b"k", T0).unwrap(), None);
    assert_eq!(b.take(Namespace::Code, b"k", T0).unwrap(), None);
    assert_eq!(
        b.insert_new(Namespace::Code, b"k", b"b", LATER, T0)
            .unwrap(),
        Inserted::New
    );
    assert_eq!(
        a.get(Namespace::Code, b"k", T0).unwrap(),
        Some(b"from-a".to_vec()),
        "b's insert did not touch a's entry"
    );
    assert_eq!(
        a.scan_prefix(Namespace::Code, b"", 10, T0).unwrap().len(),
        1
    );
    assert_eq!(a.snapshot(T0).unwrap().len(), 1);
    assert_eq!(b.snapshot(T0).unwrap().len(), 2);
    assert_eq!(a.purge_expired(UnixTime(LATER.0 + 1)).unwrap(), 1);
    assert_eq!(b.snapshot(T0).unwrap().len(), 2, "a's purge left b alone");
}

#[test]
fn keys_are_binary_safe_and_glob_characters_are_literal() {
    let t = test_store();
    let s = &t.store;
    let keys: [&[u8]; 6] = [b"a*", b"a?x", b"a[b]", b"a\\", b"a\x00\xff:z", b"ab"];
    for k in keys {
        s.put(Namespace::Grant, k, k, LATER).unwrap();
    }
    for k in keys {
        assert_eq!(s.get(Namespace::Grant, k, T0).unwrap(), Some(k.to_vec()));
    }
    let star = s.scan_prefix(Namespace::Grant, b"a*", 10, T0).unwrap();
    assert_eq!(
        star,
        vec![(b"a*".to_vec(), b"a*".to_vec())],
        "`*` is not a wildcard"
    );
    let q = s.scan_prefix(Namespace::Grant, b"a?", 10, T0).unwrap();
    assert_eq!(q.len(), 1, "`?` is not a wildcard: {q:?}");
    let br = s.scan_prefix(Namespace::Grant, b"a[", 10, T0).unwrap();
    assert_eq!(br.len(), 1, "`[` is literal: {br:?}");
    assert_eq!(
        s.scan_prefix(Namespace::Grant, b"a", 10, T0).unwrap().len(),
        6
    );
}

#[test]
fn redis_ttls_clean_up_after_expiry_plus_margin() {
    let t = test_store();
    let mut c = raw(&t.keep);
    let now = UnixTime(
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap(),
    );
    t.store
        .put(Namespace::Code, b"fresh", b"v", UnixTime(now.0 + 60))
        .unwrap();
    t.store.put(Namespace::Code, b"old", b"v", T0).unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg("heartgate:code:fresh")
        .query(&mut c)
        .unwrap();
    assert!(
        (300..=360).contains(&ttl),
        "expiry + 300 s margin, got {ttl}"
    );
    let ttl_old: i64 = redis::cmd("TTL")
        .arg("heartgate:code:old")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        ttl_old, -1,
        "past by Redis's clock: no TTL, left to purge_expired"
    );
}

#[test]
fn a_malformed_record_fails_closed() {
    let t = test_store();
    let mut c = raw(&t.keep);
    let () = redis::cmd("SET")
        .arg("heartgate:revoked:jti")
        .arg(b"\x01".as_slice())
        .query(&mut c)
        .unwrap();
    let (s, ns) = (&t.store, Namespace::Revocation);
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
        s.compare_and_swap(ns, b"jti", b"", None, T0),
        Err(StoreError::Unavailable)
    );
    assert_eq!(
        s.purge_expired(LATER),
        Ok(0),
        "purge keeps what it cannot judge"
    );
    assert_eq!(s.get(ns, b"jti", T0), Err(StoreError::Unavailable));
    // The connection that met the error reply is still good.
    s.put(Namespace::Code, b"ok", b"v", LATER).unwrap();
}

fn every_call(s: &RedisStore) -> Vec<Result<(), StoreError>> {
    vec![
        s.put(Namespace::Code, b"k", b"v", LATER),
        s.insert_new(Namespace::Jti, b"j", b"v", LATER, T0)
            .map(|_| ()),
        s.get(Namespace::Code, b"k", T0).map(|_| ()),
        s.take(Namespace::Code, b"k", T0).map(|_| ()),
        s.compare_and_swap(Namespace::Code, b"k", b"v", None, T0)
            .map(|_| ()),
        s.delete(Namespace::Code, b"k"),
        s.scan_prefix(Namespace::Code, b"", 10, T0).map(|_| ()),
        s.purge_expired(T0).map(|_| ()),
        s.snapshot(T0).map(|_| ()),
        s.ping(),
    ]
}

#[test]
fn with_redis_down_every_call_fails_closed_quickly_and_recovers_when_it_is_back() {
    let mut t = test_store();
    let s = &t.store;
    s.put(Namespace::Code, b"before", b"v", LATER).unwrap();
    // Warm the pool with several connections, all of which go stale below.
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| s.get(Namespace::Code, b"before", T0).unwrap());
        }
    });

    let port = t.keep.port;
    t.keep.kill();
    for round in 0..3 {
        let started = Instant::now();
        for (i, r) in every_call(s).into_iter().enumerate() {
            assert_eq!(r, Err(StoreError::Unavailable), "round {round}, call {i}");
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "10 calls took {took:?}");
    }

    // Same port, same store object: it reconnects by itself (the new server is empty: no
    // persistence in these tests).
    t.keep = RedisServer::try_start(port).expect("restart on the same port");
    // The breaker's probe notices within a probe interval or two.
    let back = Instant::now();
    while s.ping().is_err() {
        assert!(back.elapsed() < Duration::from_secs(2), "no recovery");
        std::thread::sleep(Duration::from_millis(10));
    }
    for (i, r) in every_call(s).into_iter().enumerate() {
        assert_eq!(r, Ok(()), "call {i} after the restart");
    }
    assert_eq!(
        s.insert_new(Namespace::Jti, b"after", b"v", LATER, T0),
        Ok(Inserted::New),
        "scripts are loaded again after the restart flushed them"
    );
}

/// `open` connects nothing: a store opened while Redis is not running opens, its first
/// calls fail closed at once, and it starts working by itself once Redis starts, without
/// being opened again.
#[test]
fn a_store_opened_before_redis_starts_fails_closed_then_works_once_it_is_up() {
    let port = free_port();
    let started = Instant::now();
    let s = RedisStore::open(&format!("redis://127.0.0.1:{port}/0"), options("heartgate")).unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "open waited"
    );
    for round in 0..2 {
        let started = Instant::now();
        for (i, r) in every_call(&s).into_iter().enumerate() {
            assert_eq!(r, Err(StoreError::Unavailable), "round {round}, call {i}");
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "10 calls took {took:?}");
    }
    let server = RedisServer::try_start(port).expect("redis-server on the chosen port");
    let up = Instant::now();
    while s.ping().is_err() {
        assert!(up.elapsed() < Duration::from_secs(2), "no recovery");
        std::thread::sleep(Duration::from_millis(10));
    }
    for (i, r) in every_call(&s).into_iter().enumerate() {
        assert_eq!(r, Ok(()), "call {i} once Redis is up");
    }
    assert_eq!(
        s.insert_new(Namespace::Jti, b"j", b"v", LATER, T0),
        Ok(Inserted::AlreadyPresent),
        "every_call's insert landed in the Redis that started late"
    );
    drop(server);
}

/// THREATS S4 under concurrency: 32 writers at once, each write followed on its
/// connection by its own `WAIT`: with the replica stopped, none of them is told its
/// write was confirmed (each fails closed, by `WAIT`'s count or by a timeout), and the
/// store confirms writes again by itself once the replica is back.
#[test]
fn concurrent_writes_the_replica_did_not_confirm_all_fail_closed() {
    let (primary, replica) = primary_and_replica();
    let store = RedisStore::open(&primary.url(), waiting(1)).unwrap();
    store.put(Namespace::Code, b"warm", b"v", LATER).unwrap();
    signal(&replica, "-STOP");
    let results: Vec<Result<(), StoreError>> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..32u32)
            .map(|t| {
                let store = &store;
                scope.spawn(move || {
                    let key = format!("k-{t}");
                    store.put(Namespace::AccessToken, key.as_bytes(), b"record", LATER)
                })
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    signal(&replica, "-CONT");
    assert!(
        results.iter().all(|r| *r == Err(StoreError::Unavailable)),
        "a write was acknowledged without the replica: {results:?}"
    );
    let back = Instant::now();
    while store.put(Namespace::Code, b"after", b"v", LATER).is_err() {
        assert!(back.elapsed() < Duration::from_secs(5), "no recovery");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(primary);
}

#[test]
fn a_redis_that_accepts_but_never_answers_times_out() {
    // A listener that accepts connections and never replies (a hung Redis).
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let s = RedisStore::open(&format!("redis://127.0.0.1:{port}/0"), options("hung")).unwrap();
    let started = Instant::now();
    assert_eq!(
        s.get(Namespace::Code, b"k", T0),
        Err(StoreError::Unavailable)
    );
    assert_eq!(
        s.take(Namespace::Code, b"k", T0),
        Err(StoreError::Unavailable)
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "two calls took {took:?}");
    // The breaker is open: further calls fail at once instead of waiting a timeout each
    // (a hung Redis must not hold every server worker).
    let started = Instant::now();
    for _ in 0..100 {
        assert_eq!(
            s.get(Namespace::Code, b"k", T0),
            Err(StoreError::Unavailable)
        );
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(200), "100 calls took {took:?}");
    drop(listener);
}

#[test]
fn the_password_is_not_in_debug_output() {
    let s = RedisStore::open(
        "redis://default:hunter2@127.0.0.1:1/0",
        RedisOptions::default(),
    )
    .unwrap();
    assert!(!format!("{s:?}").contains("hunter2"));
}

/// A primary and a replica following it, both ours.
fn primary_and_replica() -> (RedisServer, RedisServer) {
    let primary = RedisServer::start_on_a_free_port();
    let replica = RedisServer::start_on_a_free_port();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(primary.port)
        .query(&mut raw(&replica))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut raw(&replica))
            .unwrap();
        if info.contains("master_link_status:up") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica did not sync: {info}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (primary, replica)
}

fn signal(server: &RedisServer, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &server.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn waiting(replicas: u32) -> RedisOptions {
    RedisOptions {
        wait_replicas: replicas,
        wait_timeout: Duration::from_millis(200),
        ..options("heartgate")
    }
}

/// THREATS S4: with `wait_replicas = 1` a write is acknowledged only once the replica
/// holds it, so a failover right after loses nothing acknowledged: a consumed code is
/// gone on the promoted replica (not usable again), a stored record is there.
#[test]
fn s4_acknowledged_writes_are_on_the_replica_before_the_answer() {
    let (primary, replica) = primary_and_replica();
    let store = RedisStore::open(&primary.url(), waiting(1)).unwrap();
    for i in 0..50u32 {
        let code = format!("code-{i}");
        assert_eq!(
            store
                .insert_new(Namespace::Code, code.as_bytes(), b"grant", LATER, T0)
                .unwrap(),
            Inserted::New
        );
        store
            .put(Namespace::AccessToken, code.as_bytes(), b"record", LATER)
            .unwrap();
        assert_eq!(
            store.take(Namespace::Code, code.as_bytes(), T0).unwrap(),
            Some(b"grant".to_vec())
        );
    }
    // Failover, at once: promote the replica, stop the primary.
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut raw(&replica))
        .unwrap();
    drop(primary);
    let promoted = RedisStore::open(&replica.url(), options("heartgate")).unwrap();
    for i in 0..50u32 {
        let code = format!("code-{i}");
        assert_eq!(
            promoted.take(Namespace::Code, code.as_bytes(), T0).unwrap(),
            None,
            "a consumed code is usable again after the failover"
        );
        assert_eq!(
            promoted
                .get(Namespace::AccessToken, code.as_bytes(), T0)
                .unwrap(),
            Some(b"record".to_vec()),
            "an acknowledged record was lost in the failover"
        );
    }
}

/// THREATS S4: a replica that does not confirm in time makes the write fail closed
/// (503): a `take` then consumed the value on the primary but never handed it out, and
/// it stays consumed. Without `wait_replicas` the same `take` succeeds unconfirmed —
/// the window the option closes.
#[test]
fn s4_an_unconfirmed_write_fails_closed_and_is_never_handed_out() {
    let (primary, replica) = primary_and_replica();
    let waiting_store = RedisStore::open(&primary.url(), waiting(1)).unwrap();
    let plain = RedisStore::open(&primary.url(), options("heartgate")).unwrap();
    for key in [b"a".as_slice(), b"b"] {
        waiting_store
            .put(Namespace::Code, key, b"grant", LATER)
            .unwrap();
    }
    signal(&replica, "-STOP");
    let r = waiting_store.take(Namespace::Code, b"a", T0);
    let r2 = waiting_store.put(Namespace::Code, b"c", b"grant", LATER);
    let unconfirmed = plain.take(Namespace::Code, b"b", T0);
    signal(&replica, "-CONT");
    assert_eq!(r, Err(StoreError::Unavailable));
    assert_eq!(r2, Err(StoreError::Unavailable));
    assert_eq!(unconfirmed, Ok(Some(b"grant".to_vec())));
    assert_eq!(waiting_store.take(Namespace::Code, b"a", T0), Ok(None));
    // The store recovers as soon as the replica confirms again.
    waiting_store
        .put(Namespace::Code, b"d", b"grant", LATER)
        .unwrap();
    // Asking for more replicas than exist fails every write closed, never silently.
    let too_many = RedisStore::open(&primary.url(), waiting(2)).unwrap();
    assert_eq!(
        too_many.put(Namespace::Code, b"e", b"grant", LATER),
        Err(StoreError::Unavailable)
    );
}
