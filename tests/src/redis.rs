//! A private `redis-server` for a test: on a free port of 127.0.0.1, append-only with an
//! fsync per write (so that a SIGKILL loses nothing acknowledged), in a temporary
//! directory; killed when dropped. Without `redis-server` on PATH it panics with how to
//! get it (tests/run-all installs it). [`RedisCluster`] starts several such servers as
//! the primaries of one Redis Cluster.

use std::net::{Ipv4Addr, TcpStream};

use crate::free_port;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server process.
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The cluster bus port, for a cluster node.
    bus: Option<u16>,
}

impl RedisServer {
    /// Start on a free port (retrying if another process takes the port first).
    pub fn start() -> RedisServer {
        Self::start_as(false)
    }

    /// Start on free ports as a node of a cluster not formed yet (no slots, knows no
    /// other node): see [`RedisCluster`].
    pub fn start_cluster_node() -> RedisServer {
        Self::start_as(true)
    }

    fn start_as(cluster: bool) -> RedisServer {
        let mut s = RedisServer {
            port: 0,
            dir: tempfile::tempdir().unwrap(),
            child: None,
            bus: None,
        };
        for _ in 0..5 {
            s.port = free_port();
            s.bus = cluster.then(free_port);
            if s.spawn() {
                return s;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Start the process on this port and directory (replaying its append-only file);
    /// false if it exits at once (the port is taken).
    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", &self.dir.path().display().to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args(["--daemonize", "no"])
            .args(self.bus.iter().flat_map(|bus| {
                [
                    "--cluster-enabled".to_owned(),
                    "yes".to_owned(),
                    "--cluster-port".to_owned(),
                    bus.to_string(),
                    "--cluster-node-timeout".to_owned(),
                    "2000".to_owned(),
                ]
            }))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): install it (Debian: apt-get install \
                     redis-server; tests/run-all does)"
                )
            });
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let ours = format!("process_id:{pid}\r\n");
        loop {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            if self.answers_as(&ours) {
                return true;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers_as(&self, process_id_line: &str) -> bool {
        if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err() {
            return false;
        }
        let info = redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
            .and_then(|mut c| redis::cmd("INFO").arg("server").query::<String>(&mut c));
        info.is_ok_and(|i| i.contains(process_id_line) && !i.contains("loading:1"))
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kill the process with SIGKILL (nothing flushed beyond what each write fsynced).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A paused process must go on to die.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop the process with SIGSTOP: connections are accepted by the kernel, nothing
    /// answers (a hung Redis).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Let a paused process go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(ok.success(), "kill {sig} {pid}");
    }

    /// Start it again on the same port and directory, replaying the append-only file.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(Instant::now() < deadline, "redis-server did not restart");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Start it again on the same port with nothing kept: the append-only file is
    /// removed first (a Redis without persistence, or a replica promoted before it had
    /// the latest writes).
    pub fn restart_empty(&mut self) {
        self.kill();
        for e in std::fs::read_dir(self.dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(Instant::now() < deadline, "redis-server did not restart");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A raw connection, to look behind the store's back.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of `n` primaries (no replicas), each a [`RedisServer`] on free ports of
/// 127.0.0.1 with its own directory and append-only file, the 16,384 slots split evenly.
/// Killed when dropped.
pub struct RedisCluster {
    /// The primaries, in slot order (the first holds slot 0).
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Start `n` nodes, give each its share of the slots, introduce them to each other
    /// and wait until every node reports the cluster formed (`cluster_state:ok`, all
    /// nodes known, every slot covered).
    pub fn start(n: usize) -> RedisCluster {
        assert!(n >= 1);
        let nodes: Vec<RedisServer> = (0..n).map(|_| RedisServer::start_cluster_node()).collect();
        let per = 16_384 / n;
        for (i, node) in nodes.iter().enumerate() {
            let first = i * per;
            let last = if i + 1 == n {
                16_383
            } else {
                (i + 1) * per - 1
            };
            let _: () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(first)
                .arg(last)
                .query(&mut node.connection())
                .unwrap();
        }
        for other in &nodes[1..] {
            let _: () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(other.port)
                .arg(other.bus.unwrap())
                .query(&mut nodes[0].connection())
                .unwrap();
        }
        let c = RedisCluster { nodes };
        c.wait_formed();
        c
    }

    /// Wait (at most 30 s) until every node answers `cluster_state:ok` and knows all the
    /// others.
    pub fn wait_formed(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let known = format!("cluster_known_nodes:{}\r\n", self.nodes.len());
        loop {
            let formed = self.nodes.iter().all(|node| {
                let info = redis::Client::open(node.url())
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c));
                info.is_ok_and(|i| {
                    i.contains("cluster_state:ok\r\n")
                        && i.contains(&known)
                        && i.contains("cluster_slots_ok:16384\r\n")
                })
            });
            if formed {
                return;
            }
            assert!(Instant::now() < deadline, "the Redis Cluster did not form");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The first node's URL (`redis://127.0.0.1:<port>/0`): any node will do to start.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// Keys (of any database) each node holds, in node order.
    pub fn key_counts(&self) -> Vec<i64> {
        self.nodes
            .iter()
            .map(|n| redis::cmd("DBSIZE").query(&mut n.connection()).unwrap())
            .collect()
    }
}
