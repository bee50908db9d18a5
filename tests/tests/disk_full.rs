//! A full disk under the data directory (THREATS S8): a small tmpfs is filled to the last
//! byte while the server runs.
//!
//! - Work that must be on the audit trail is refused with 503 `temporarily_unavailable`
//!   when its line cannot be written: no token is handed out that the log does not show
//!   (the documented fail-closed policy). Counted exactly: every `/token` 200 has its
//!   `token_issued` line, and no other line exists.
//! - Reads of existing state go on: introspection of a token issued before still answers.
//! - Nothing is corrupted: the audit chain verifies afterwards, the embedded store opens
//!   again after a restart with every acknowledged token in it, and once space returns the
//!   server issues again (at once with the memory store; after a restart with the
//!   embedded store, which closes for writes after a failed commit).
//!
//! Mounting a tmpfs needs root (or password-less sudo), as the test command's package
//! installs do.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use heartgate_e2e::{Identity, TestCa, TestServer};
use serde_json::json;

const FHIR: &str = "https://fhir.example/r4";

/// A tmpfs of `size` MiB on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mib: u32) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().display().to_string();
        let opts = format!("size={size_mib}m,mode=0700");
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let mut cmd = if root {
            Command::new("mount")
        } else {
            let mut c = Command::new("sudo");
            c.args(["-n", "mount"]);
            c
        };
        let status = cmd
            .args(["-t", "tmpfs", "-o", &opts, "tmpfs", &path])
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "THREATS S8 needs a small tmpfs: run the tests as root or with password-less sudo"
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write a filler file until the file system refuses (ENOSPC).
    fn fill(&self) -> PathBuf {
        let p = self.path().join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            if let Err(e) = f.write_all(&chunk) {
                assert_eq!(e.raw_os_error(), Some(28), "ENOSPC expected, got {e}");
                break;
            }
        }
        // The last partial chunk may have left a few bytes: fill those too.
        while f.write_all(&[0u8]).is_ok() {}
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let path = self.dir.path().display().to_string();
        let _ = Command::new("umount").args(["-l", &path]).status();
        let _ = Command::new("sudo")
            .args(["-n", "umount", "-l", &path])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

struct Setup {
    ca: TestCa,
    /// Holds the client CA file outside the tmpfs.
    _files: tempfile::TempDir,
    config: String,
    backend: Identity,
    rs: Identity,
}

fn setup() -> Setup {
    let ca = TestCa::new();
    let files = tempfile::tempdir().unwrap();
    let ca_path = files.path().join("client-ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let doc = json!({
        "tokens": {"default_audience": FHIR},
        "clients": [
            {"client_id": "backend", "profile": "smart",
             "token_endpoint_auth_method": "tls_client_auth",
             "tls_client_certificate_bound_access_tokens": true,
             "tls_client_auth_subject_dn": "CN=backend,O=Clinic",
             "grant_types": ["client_credentials"], "scope": "system/Observation.rs",
             "access_token_format": "opaque"},
            {"client_id": "fhir-server", "profile": "smart",
             "token_endpoint_auth_method": "tls_client_auth",
             "tls_client_auth_subject_dn": "CN=fhir-server,O=Clinic",
             "grant_types": ["client_credentials"], "resources": [FHIR]},
        ],
    });
    let config = format!(
        "{}\n[tls]\nclient_ca = [{:?}]\n",
        toml::to_string(&doc).unwrap(),
        ca_path.display().to_string()
    );
    let backend = ca.issue("backend");
    let rs = ca.issue("fhir-server");
    Setup {
        ca,
        _files: files,
        config,
        backend,
        rs,
    }
}

/// One `/token` request: the token, or the error answer's status and code.
async fn token(s: &TestServer, id: &Identity) -> Result<String, (u16, String)> {
    let r = s
        .form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "backend"),
                ("scope", "system/Observation.rs"),
            ],
            Some(id),
        )
        .await;
    if r.status == 200 {
        return Ok(r.json()["access_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let code = r.json()["error"].as_str().unwrap_or_default().to_owned();
    Err((r.status, code))
}

async fn active(s: &TestServer, rs: &Identity, token: &str) -> bool {
    let r = s
        .form(
            "/introspect",
            &[("token", token), ("client_id", "fhir-server")],
            Some(rs),
        )
        .await;
    assert_eq!(r.status, 200, "introspection answers: {}", r.text());
    r.json()["active"] == true
}

/// `token_issued` lines with outcome success in the log, after checking the chain.
fn issued_lines(log: &Path) -> usize {
    let report = heartgate_server::audit_log::verify(log)
        .unwrap_or_else(|e| panic!("the audit chain verifies after the full disk: {e}"));
    let text = std::fs::read_to_string(log).unwrap();
    assert_eq!(text.lines().count(), report.lines);
    text.lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["kind"] == "token_issued" && v["outcome"] == "success"
        })
        .count()
}

/// Send `n` token requests on the full disk; each is a token or a 503
/// `temporarily_unavailable`, nothing else. Returns the tokens.
async fn tokens_on_a_full_disk(s: &TestServer, id: &Identity, n: usize) -> (Vec<String>, usize) {
    let mut ok = Vec::new();
    let mut refused = 0;
    for _ in 0..n {
        match token(s, id).await {
            Ok(t) => ok.push(t),
            Err((503, code)) if code == "temporarily_unavailable" => refused += 1,
            Err(other) => panic!("a full disk must answer 503, got {other:?}"),
        }
    }
    (ok, refused)
}

#[tokio::test(flavor = "multi_thread")]
async fn s8_audit_log_on_a_full_disk_fails_closed_and_resumes_when_space_returns() {
    let disk = Tmpfs::mount(16);
    let st = setup();
    let data = tempfile::tempdir_in(disk.path()).unwrap();
    let log = data.path().join("audit.log");
    // The memory store: only the audit log writes to the disk.
    let s = TestServer::start_in(data, &st.config, "memory").await;
    let before = token(&s, &st.backend).await.unwrap();

    let filler = disk.fill();
    // The log's last page may still take a few lines; then every issuance is refused.
    let (issued, refused) = tokens_on_a_full_disk(&s, &st.backend, 40).await;
    assert!(
        refused >= 30,
        "{refused} of 40 refused, {} issued",
        issued.len()
    );
    // Reads of existing state go on, on the full disk.
    assert!(active(&s, &st.rs, &before).await);
    assert_eq!(s.get("/healthz").await.status, 200);
    // Operators see it: every refusal is counted in /metrics.
    let metrics = s.get("/metrics").await.text();
    let counted: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("heartgate_audit_events_refused_total "))
        .expect("the audit counters are exposed")
        .parse()
        .unwrap();
    assert!(
        counted >= refused && refused > 0,
        "{counted} counted, {refused} refused"
    );

    // Space returns: issuance resumes by itself, no restart.
    std::fs::remove_file(filler).unwrap();
    let after = token(&s, &st.backend).await.unwrap();
    assert!(active(&s, &st.rs, &after).await);
    let _dir = s.stop().await;
    // Exactly the acknowledged tokens are on record, and the chain has no hole.
    assert_eq!(issued_lines(&log), 2 + issued.len());
    drop(st.ca);
}

#[tokio::test(flavor = "multi_thread")]
async fn s8_embedded_store_on_a_full_disk_refuses_writes_keeps_reads_and_is_whole_after() {
    let disk = Tmpfs::mount(32);
    let st = setup();
    let data = tempfile::tempdir_in(disk.path()).unwrap();
    let dir = data.path().display().to_string();
    let log = data.path().join("audit.log");
    let s = TestServer::start_in(data, &st.config, "embedded").await;
    let port = s.addr.port();
    let mut acknowledged = vec![token(&s, &st.backend).await.unwrap()];

    let filler = disk.fill();
    let (issued, refused) = tokens_on_a_full_disk(&s, &st.backend, 40).await;
    assert!(
        refused >= 30,
        "{refused} of 40 refused, {} issued",
        issued.len()
    );
    acknowledged.extend(issued);
    assert!(active(&s, &st.rs, &acknowledged[0]).await, "reads go on");
    std::fs::remove_file(filler).unwrap();
    let data = s.stop().await.unwrap();
    // Connections winding down hold the stopped server's store open a little longer.
    let file = data.path().join("store.redb");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while heartgate_server::stores::redb::RedbStore::open(&file).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the store file stays open"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Restart on the same files: the store opens (nothing corrupted), every acknowledged
    // token is there, and issuance works again.
    let s = TestServer::start_at_with(&dir, &st.config, port, "embedded").await;
    for t in &acknowledged {
        assert!(
            active(&s, &st.rs, t).await,
            "an acknowledged token was lost"
        );
    }
    token(&s, &st.backend).await.unwrap();
    s.stop().await;
    assert_eq!(issued_lines(&log), acknowledged.len() + 1);
    drop(data);
}
