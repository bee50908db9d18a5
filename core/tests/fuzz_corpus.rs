//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and every crash found so
//! far (`fuzz/regressions/<target>/`) through the target bodies of
//! `heartgate_core::fuzzing`, on the stable toolchain with no libFuzzer (THREATS §4.1).
//!
//! `write_seed_corpus` (ignored) regenerates the seeds:
//! `cargo test -p heartgate-core --features fuzzing --test fuzz_corpus -- --ignored`.
#![cfg(feature = "fuzzing")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use std::path::{Path, PathBuf};

use heartgate_core::fuzzing::{self, ISS, NOW, TARGETS};
use heartgate_core::jose::{b64, sign_jwt, Algorithm, JwkSet, SigningKey};
use ring::digest;
use serde_json::{json, Value};

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
fn every_target_has_a_seed_corpus() {
    for (name, _) in TARGETS {
        let n = files(&fuzz_dir().join("corpus").join(name)).len();
        assert!(n > 0, "fuzz/corpus/{name} is empty");
        assert!(
            fuzz_dir().join(format!("fuzz_targets/{name}.rs")).is_file(),
            "fuzz/fuzz_targets/{name}.rs is missing"
        );
    }
}

#[test]
fn committed_corpus_and_regressions_replay_without_a_finding() {
    let mut total = 0;
    for (name, target) in TARGETS {
        for kind in ["corpus", "regressions"] {
            for file in files(&fuzz_dir().join(kind).join(name)) {
                let data = std::fs::read(&file).unwrap();
                let r = std::panic::catch_unwind(|| target(&data));
                assert!(r.is_ok(), "{name}: {} fails its oracle", file.display());
                total += 1;
            }
        }
    }
    assert!(total > 0);
}

// ---------------------------------------------------------------------------------------
// Seed generation

/// libFuzzer names corpus files by the SHA-1 of their content.
fn write(target: &str, data: &[u8]) {
    let dir = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    let h = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, data);
    let name: String = h.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(dir.join(name), data).unwrap();
}

fn with_prefix(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut v = prefix.to_vec();
    v.extend_from_slice(rest);
    v
}

fn cert(cn: &str, san: &str) -> Vec<u8> {
    let mut p = rcgen::CertificateParams::new(vec![san.to_owned()]).unwrap();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "Clinic");
    dn.push(rcgen::DnType::CommonName, cn);
    p.distinguished_name = dn;
    let kp = rcgen::KeyPair::generate().unwrap();
    p.self_signed(&kp).unwrap().der().to_vec()
}

#[test]
#[ignore = "writes fuzz/corpus; run by hand to regenerate the seeds"]
fn write_seed_corpus() {
    let keys: Vec<SigningKey> = [
        Algorithm::ES256,
        Algorithm::PS256,
        Algorithm::EdDSA,
        Algorithm::ES384,
    ]
    .into_iter()
    .map(|a| SigningKey::generate(a).unwrap())
    .collect();
    let at = json!({"iss": ISS, "aud": fuzzing::RS, "exp": NOW.0 + 300, "iat": NOW.0,
        "jti": "j1", "sub": "user", "client_id": "app", "scope": "patient/*.rs"});

    // jws_compact: tokens of every algorithm and the J-cases' shapes.
    for k in &keys {
        let t = sign_jwt(k, Some("at+jwt"), at.as_object().unwrap()).unwrap();
        write("jws_compact", t.as_bytes());
    }
    for h in [
        r#"{"alg":"none"}"#,
        r#"{"alg":"HS256","kid":"k"}"#,
        r#"{"alg":"ES256","crit":["exp"]}"#,
        r#"{"alg":"ES256","b64":false}"#,
        r#"{"alg":"ES256","jku":"https://evil"}"#,
        r#"{"alg":"ES256","alg":"none"}"#,
        r#"{"alg":"PS256","kid":"../../etc/passwd","typ":"at+jwt"}"#,
    ] {
        let t = format!(
            "{}.{}.{}",
            b64::encode(h),
            b64::encode("{}"),
            b64::encode([0u8; 64])
        );
        write("jws_compact", t.as_bytes());
    }
    write("jws_compact", b"a.b");
    write("jws_compact", b"a.b.c.d.e");
    write("jws_compact", b"eyJhbGciOiJFUzI1NiJ9.e30=.AA");

    // jwt_verify: [key][flags][len u16][extra claims][n mutations][mutations...]
    for k in 0u8..3 {
        write("jwt_verify", &[k, 0, 0, 0]);
        let extra = br#"{"patient":"123","cnf":null}"#;
        let mut v = vec![k, 0, extra.len() as u8, 0];
        v.extend_from_slice(extra);
        v.extend_from_slice(&[
            2, 0, 10, 0, 3, 6, 0, 0, 8, b'{', b'"', b'a', b'l', b'g', b'"', b':', b'1', b'}',
        ]);
        write("jwt_verify", &v);
    }

    // jwk_jwks: our published sets, and the J17/J33/J34 refusals.
    let set = JwkSet::new(keys.iter().map(|k| k.verifying_key().clone()).collect()).unwrap();
    write("jwk_jwks", set.to_json().as_bytes());
    for k in &keys {
        write(
            "jwk_jwks",
            Value::Object(k.verifying_key().to_jwk())
                .to_string()
                .as_bytes(),
        );
    }
    let mut private = keys[0].verifying_key().to_jwk();
    private.insert("d".into(), json!("AAAA"));
    write(
        "jwk_jwks",
        json!({"keys": [private]}).to_string().as_bytes(),
    );
    let mut enc = keys[0].verifying_key().to_jwk();
    enc.insert("use".into(), json!("enc"));
    write("jwk_jwks", json!({"keys": [enc]}).to_string().as_bytes());
    write("jwk_jwks", br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#);
    let one = keys[0].verifying_key().to_jwk();
    write(
        "jwk_jwks",
        json!({"keys": [one.clone(), one]}).to_string().as_bytes(),
    );

    // jwt_claims: [selector][claims]
    for c in [
        at.clone(),
        json!({"exp": 1.7e9, "aud": ["x", fuzzing::RS], "iss": ISS}),
        json!({"exp": "99999999999", "aud": fuzzing::RS}),
        json!({"exp": 9223372036854775807i64, "nbf": -1, "aud": [null]}),
        json!({"exp": NOW.0 + 30, "iat": NOW.0, "aud": ISS, "jti": "j", "sub": "c"}),
    ] {
        write("jwt_claims", &with_prefix(&[0], c.to_string().as_bytes()));
        write(
            "jwt_claims",
            &with_prefix(
                &[2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
                c.to_string().as_bytes(),
            ),
        );
    }

    // form_params
    for f in [
        "grant_type=authorization_code&code=abc&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        "response_type=code&client_id=app&scope=openid+patient%2F*.rs&state=x&state=y",
        "a=&b&=c&%FF=%FE&+=%20",
        "token=abc&token_type_hint=access_token",
    ] {
        write("form_params", f.as_bytes());
    }

    // authorize_request: [client][flags] form \n request-object claims
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let front = format!("response_type=code&client_id=app&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&scope=openid+launch%2Fpatient+patient%2F*.rs&code_challenge={challenge}&code_challenge_method=S256&state=xyz&aud=https%3A%2F%2Ffhir.example");
    write("authorize_request", &with_prefix(&[2, 0], front.as_bytes()));
    for (sel, id, cb) in [
        (0u8, "ms", "https://app.example/cb"),
        (1, "heart", "https://heart.example/cb"),
    ] {
        let ro = json!({"iss": id, "aud": ISS, "exp": NOW.0 + 60, "nbf": NOW.0, "iat": NOW.0,
            "jti": "r1", "response_type": "code", "client_id": id, "redirect_uri": cb,
            "scope": "openid patient/*.rs", "code_challenge": challenge,
            "code_challenge_method": "S256", "state": "s1", "nonce": "n1"});
        let body = format!("client_id={id}\n{ro}");
        write(
            "authorize_request",
            &with_prefix(&[sel, 0], body.as_bytes()),
        );
        let plain = format!("response_type=code&client_id={id}&redirect_uri={cb}&scope=openid&code_challenge={challenge}&code_challenge_method=S256");
        write(
            "authorize_request",
            &with_prefix(&[sel, 0], plain.as_bytes()),
        );
    }

    // client_assertion: [client][flags] claims
    for (sel, id) in [(0u8, "ms"), (1, "heart"), (2, "backend")] {
        let c =
            json!({"iss": id, "sub": id, "aud": ISS, "exp": NOW.0 + 60, "iat": NOW.0, "jti": "a1"});
        write(
            "client_assertion",
            &with_prefix(&[sel, 0], c.to_string().as_bytes()),
        );
        write(
            "client_assertion",
            &with_prefix(&[sel, 2 | 32], c.to_string().as_bytes()),
        );
    }
    let c = json!({"iss": "heart", "sub": "heart", "aud": [ISS, format!("{ISS}/token")], "exp": NOW.0 + 60, "jti": "a2"});
    write(
        "client_assertion",
        &with_prefix(&[1, 0], c.to_string().as_bytes()),
    );
    write(
        "client_assertion",
        &with_prefix(&[0, 16], b"eyJhbGciOiJub25lIn0.e30."),
    );

    // token_request: [endpoint + 3*client][form]
    for (sel, f) in [
        (1u8, "token=$AT&client_id=app"),
        (1 + 3, "token=$AT"),
        (1, "token=garbage"),
        (2 + 3, "token=$AT&token_type_hint=access_token"),
        (3, "grant_type=client_credentials&scope=system%2FObservation.rs"),
        (0, "grant_type=authorization_code&client_id=app&code=x&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        (0, "grant_type=refresh_token&client_id=app&refresh_token=rt&scope=patient%2F*.rs"),
    ] {
        write("token_request", &with_prefix(&[sel], f.as_bytes()));
    }

    // cbor_record: records as the flows store them, plus other versions.
    let records = fuzzing::seed_records();
    assert!(records.len() >= 4, "only {} seed records", records.len());
    for r in records {
        write("cbor_record", &r);
    }
    write("cbor_record", &[2, 0xa0]);
    write("cbor_record", &[1, 0xa0]);
    write("cbor_record", &[1, 0x83, 1, 2, 3]);
    write("cbor_record", &[]);

    // client_cert_header and x509_binding
    use base64::Engine as _;
    let der = cert("client", "client.example");
    let b64std = base64::engine::general_purpose::STANDARD.encode(&der);
    write("client_cert_header", format!(":{b64std}:").as_bytes());
    write("client_cert_header", format!(" :{b64std}: ").as_bytes());
    write(
        "client_cert_header",
        format!(":{}:", b64std.trim_end_matches('=')).as_bytes(),
    );
    write("client_cert_header", format!(":{b64std}:;a=b").as_bytes());
    for (kind, rule) in [
        (0u8, "CN=client,O=Clinic"),
        (0, "O=Clinic+CN=client"),
        (1, "client.example"),
        (2, "https://client.example"),
        (3, "a@client.example"),
        (4, "127.0.0.1"),
    ] {
        let mut v = vec![kind, rule.len() as u8];
        v.extend_from_slice(rule.as_bytes());
        v.extend_from_slice(&der);
        write("x509_binding", &v);
    }

    // redirect_uri_match: registered \n presented
    for (r, p) in [
        ("https://app.example/cb", "https://app.example/cb"),
        ("https://app.example/cb", "https://APP.example/cb"),
        ("http://127.0.0.1/cb", "http://127.0.0.1:51004/cb"),
        ("http://[::1]/cb", "http://[::1]:8080/cb"),
        ("http://127.0.0.1/cb", "http://127.1:8080/cb"),
        ("http://localhost/cb", "http://localhost:8080/cb"),
        ("com.example.app:/cb", "com.example.app:/cb?x=1"),
    ] {
        write("redirect_uri_match", format!("{r}\n{p}").as_bytes());
    }

    // smart_scope
    for s in [
        "openid fhirUser launch launch/patient offline_access",
        "patient/*.rs user/Observation.cruds system/Patient.read",
        "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
        "user/*.* patient/Patient.write",
    ] {
        write("smart_scope", s.as_bytes());
    }
}
