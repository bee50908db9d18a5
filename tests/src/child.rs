//! A server in a child process, so that a test can kill it with SIGKILL: the test binary
//! re-executes itself running one `#[ignore]`d entry test (named by the caller) with a
//! spec in `HEARTGATE_CHILD_SPEC`; the entry calls [`serve_child`], which starts the
//! server in-process and waits to be killed.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::TestServer;

const SPEC: &str = "HEARTGATE_CHILD_SPEC";

/// What the child serves.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The data directory (not removed by the child).
    pub dir: String,
    /// Extra TOML configuration.
    pub config: String,
    /// The port on 127.0.0.1.
    pub port: u16,
    /// The store (`embedded`, `redis://...`).
    pub store: String,
    /// Extra environment of the child, e.g. libfaketime's `LD_PRELOAD` and `FAKETIME`
    /// for a server whose clock is an hour ahead (THREATS S9). (Not a wrapper command: the
    /// child must be the process that SIGKILL reaches.)
    pub env: Vec<(String, String)>,
}

/// The child server; killed with SIGKILL when dropped, so a failing test leaves no
/// process behind.
pub struct ChildServer(Child);

impl ChildServer {
    /// Kill it with SIGKILL and wait for it.
    pub fn sigkill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// Start `spec` in a child: this test binary running the ignored test `entry`, which
/// must call [`serve_child`]. Returns once the server listens.
pub fn spawn_child(entry: &str, spec: &ChildSpec) -> ChildServer {
    let json = serde_json::json!({
        "dir": spec.dir, "config": spec.config, "port": spec.port, "store": spec.store,
    });
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    let mut child = ChildServer(
        cmd.args([
            "--exact",
            entry,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SPEC, json.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let out = child.0.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    loop {
        let l = lines.next().expect("child exited").unwrap();
        // libtest may print `test <entry> ... ` on the same line.
        if l.contains("READY ") {
            return child;
        }
    }
}

/// In the child: serve the spec until killed.
pub fn serve_child() {
    let spec = std::env::var(SPEC).expect("run by the parent test, which sets the spec");
    let v: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = TestServer::start_at_with(
            v["dir"].as_str().unwrap(),
            v["config"].as_str().unwrap(),
            v["port"].as_u64().unwrap() as u16,
            v["store"].as_str().unwrap(),
        )
        .await;
        println!("READY {}", s.addr);
        std::future::pending::<()>().await;
    });
}
