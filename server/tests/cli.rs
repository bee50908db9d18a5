//! The `heartgate` command's subcommands, run as a user would.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use std::io::Write;
use std::process::{Command, Stdio};

fn heartgate(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_heartgate"))
        .args(args)
        .env(
            "HEARTGATE_DATA_DIR",
            format!("{:?}", dir.display().to_string()),
        )
        .env("HEARTGATE_STORE", "memory")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        c.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(c.stdin.take());
    let out = c.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn check_config_accepts_the_example_and_names_a_bad_setting() {
    let d = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../heartgate.example.toml");
    let (ok, out) = heartgate(d.path(), &["check-config", "--config", example], None);
    assert!(ok, "{out}");
    assert!(out.contains("configuration ok"));
    let bad = d.path().join("bad.toml");
    std::fs::write(&bad, "[tokens]\npar_lifetime = 9999\n").unwrap();
    let (ok, out) = heartgate(
        d.path(),
        &["check-config", "--config", bad.to_str().unwrap()],
        None,
    );
    assert!(!ok);
    assert!(out.contains("tokens.par_lifetime"), "{out}");
}

#[test]
fn check_config_names_the_redis_store_without_its_password() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("redis.toml");
    std::fs::write(
        &file,
        "[redis]\nkey_prefix = \"prod\"\nkey_encryption_key_file = \"/etc/heartgate/kek\"\n",
    )
    .unwrap();
    // The `heartgate` helper pins the memory store; this one names the store itself.
    let out = Command::new(env!("CARGO_BIN_EXE_heartgate"))
        .args(["check-config", "--config", file.to_str().unwrap()])
        .env("HEARTGATE_STORE", "redis://app:hunter2@10.0.0.7:6380/2")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("store redis://app:[redacted]@10.0.0.7:6380/2"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn users_add_and_keys_rotate_change_the_data_directory() {
    let d = tempfile::tempdir().unwrap();
    let (ok, out) = heartgate(
        d.path(),
        &[
            "users",
            "add",
            "ward-nurse",
            "--name",
            "Ward Nurse",
            "--patient",
            "Patient/1=Jane",
        ],
        Some("a long enough password\n"),
    );
    assert!(ok, "{out}");
    let users = std::fs::read_to_string(d.path().join("users.json")).unwrap();
    assert!(users.contains("ward-nurse") && users.contains("$argon2id$"));
    assert!(!users.contains("a long enough password"));
    let (ok, _) = heartgate(d.path(), &["users", "add", "x"], Some("short\n"));
    assert!(!ok, "short passwords are refused");

    let (ok, out) = heartgate(d.path(), &["keys", "rotate"], None);
    assert!(ok, "{out}");
    let state = std::fs::read_to_string(d.path().join("keys/state.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(
        v["published"].as_array().unwrap().len(),
        1,
        "previous key kept"
    );
    assert!(out.contains(v["active"].as_str().unwrap()));
}

#[test]
fn audit_verify_reports_intact_and_tampered_logs() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("audit.log");
    {
        let a = heartgate_server::audit_log::AuditLog::open(&log).unwrap();
        for i in 0..3 {
            heartgate_core::audit::AuditSink::record(
                &a,
                heartgate_core::audit::AuditEvent::new(
                    heartgate_core::clock::UnixTime(i),
                    heartgate_core::audit::EventKind::Revocation,
                    heartgate_core::audit::Outcome::Success,
                    "ok",
                ),
            );
        }
        a.close();
    }
    let (ok, out) = heartgate(d.path(), &["audit", "verify", log.to_str().unwrap()], None);
    assert!(ok, "{out}");
    assert!(out.contains("3 line(s)"));
    let text = std::fs::read_to_string(&log)
        .unwrap()
        .replacen("\"ok\"", "\"no\"", 1);
    std::fs::write(&log, text).unwrap();
    let (ok, out) = heartgate(d.path(), &["audit", "verify", log.to_str().unwrap()], None);
    assert!(!ok);
    assert!(out.contains("BROKEN at line 1"), "{out}");
}

#[test]
fn keys_generate_kek_writes_a_private_key_file_once() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("kek");
    let f = file.to_str().unwrap();
    let (ok, out) = heartgate(d.path(), &["keys", "generate-kek", f], None);
    assert!(ok, "{out}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!out.contains(text.trim()), "the key is not printed");
    heartgate_server::keyshare::Kek::from_file(&file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Never overwritten: a replaced KEK would lock a cluster out of its keys.
    let (ok, out) = heartgate(d.path(), &["keys", "generate-kek", f], None);
    assert!(!ok, "{out}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
}
