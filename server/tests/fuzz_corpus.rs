//! Replays the committed corpus of the `http_service` fuzz target
//! (`fuzz/corpus/http_service/`) and every crash found so far
//! (`fuzz/regressions/http_service/`) through `heartgate_server::fuzzing::http_service`,
//! on the stable toolchain with no libFuzzer (THREATS §4.1).
//!
//! `write_seed_corpus` (ignored) regenerates the seeds:
//! `cargo test -p heartgate-server --features fuzzing --test fuzz_corpus -- --ignored`.
#![cfg(feature = "fuzzing")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use std::path::{Path, PathBuf};

use heartgate_server::fuzzing::{exchange, http_service, DEMO_PASSWORD, INITIAL_ACCESS_TOKEN};
use ring::digest;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn committed_corpus_and_regressions_replay_without_a_finding() {
    let corpus = files(&fuzz_dir().join("corpus/http_service"));
    assert!(!corpus.is_empty(), "fuzz/corpus/http_service is empty");
    assert!(fuzz_dir().join("fuzz_targets/http_service.rs").is_file());
    let regressions = files(&fuzz_dir().join("regressions/http_service"));
    for file in corpus.iter().chain(&regressions) {
        let data = std::fs::read(file).unwrap();
        let r = std::panic::catch_unwind(|| http_service(&data));
        assert!(
            r.is_ok(),
            "http_service: {} fails its oracle",
            file.display()
        );
    }
}

/// The oracle is not vacuous: a well-formed request gets a 200, and a 4xx is seen.
#[test]
fn the_service_answers_in_process() {
    let out =
        exchange(b"GET /.well-known/openid-configuration HTTP/1.1\r\nHost: as.example\r\n\r\n")
            .unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let out = exchange(b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\na=b").unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 4"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

fn write(data: &[u8]) {
    let dir = fuzz_dir().join("corpus/http_service");
    std::fs::create_dir_all(&dir).unwrap();
    let h = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, data);
    let name: String = h.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(dir.join(name), data).unwrap();
}

fn post(path: &str, content_type: &str, extra: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: as.example\r\nContent-Type: {content_type}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
#[ignore = "writes fuzz/corpus; run by hand to regenerate the seeds"]
fn write_seed_corpus() {
    let form = "application/x-www-form-urlencoded";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let par = format!("response_type=code&client_id=app&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&scope=openid+patient%2F*.rs&code_challenge={challenge}&code_challenge_method=S256&state=xyz");
    let bearer = format!("Authorization: Bearer {INITIAL_ACCESS_TOKEN}\r\n");
    let mut seeds = vec![];
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/jwks",
        "/healthz",
        "/readyz",
        "/metrics",
        "/login",
        "/consent",
        "/userinfo",
        "/nope",
        "/register/abc",
        "/ciba/pending",
        &format!("/authorize?{par}"),
        "/authorize?client_id=app&request_uri=urn%3Aietf%3Aparams%3Aoauth%3Arequest_uri%3Ax",
    ] {
        seeds.push(format!("GET {path} HTTP/1.1\r\nHost: as.example\r\n\r\n"));
    }
    seeds.push(post("/par", form, "", &par));
    seeds.push(post(
        "/token",
        form,
        "",
        "grant_type=authorization_code&client_id=app&code=x&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
    ));
    seeds.push(post(
        "/token",
        form,
        "",
        "grant_type=client_credentials&client_id=backend",
    ));
    seeds.push(post("/introspect", form, "", "token=abc"));
    seeds.push(post("/revoke", form, "", "token=abc&client_id=app"));
    seeds.push(post(
        "/bc-authorize",
        form,
        "",
        "scope=openid&login_hint=demo&client_id=backend",
    ));
    seeds.push(post(
        "/login",
        form,
        "",
        &format!("username=demo&password={DEMO_PASSWORD}&csrf=x"),
    ));
    seeds.push(post(
        "/register",
        "application/json",
        &bearer,
        r#"{"profile":"smart","redirect_uris":["https://app.example/cb"],"token_endpoint_auth_method":"none","grant_types":["authorization_code"]}"#,
    ));
    seeds.push(post("/register", "application/json", "", "{}"));
    seeds.push(
        "GET /userinfo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer eyJhbGciOiJub25lIn0.e30.\r\n\r\n"
            .to_owned(),
    );
    seeds.push(format!(
        "POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: {form}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\ngrant\r\n0\r\n\r\n"
    ));
    seeds.push(format!(
        "GET /jwks HTTP/1.1\r\nHost: x\r\n\r\nHEAD /jwks HTTP/1.1\r\nHost: x\r\n\r\n{}",
        post("/introspect", form, "", "token=x")
    ));
    seeds.push("HEAD /jwks HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n".to_owned());
    seeds.push("GET /jwks HTTP/1.0\r\n\r\n".to_owned());
    seeds.push("GET /jwks HTTP/2.0\r\n\r\n".to_owned());
    seeds.push("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_owned());
    seeds.push("GARBAGE\r\n\r\n".to_owned());
    seeds.push(format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(9000)));
    seeds.push(format!(
        "POST /token HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\nContent-Type: {form}\r\n\r\nabcdef"
    ));
    seeds.push(format!(
        "POST /token HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nContent-Type: {form}\r\n\r\n0\r\n\r\n"
    ));
    seeds.push(format!(
        "POST /token HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 7\r\nContent-Type: {form}\r\n\r\ntoken=x"
    ));
    seeds.push(format!(
        "POST /token HTTP/1.1\r\nContent-Length: 100\r\nContent-Type: {form}\r\n\r\nshort"
    ));
    seeds.push("OPTIONS * HTTP/1.1\r\n\r\n".to_owned());
    seeds.push("CONNECT as.example:443 HTTP/1.1\r\n\r\n".to_owned());
    seeds.push("GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n".to_owned());
    seeds.push(
        "GET /jwks HTTP/1.1\r\nHost: a\r\nHost: b\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n".to_owned(),
    );
    seeds.push(String::new());
    for s in seeds {
        write(s.as_bytes());
    }
}
