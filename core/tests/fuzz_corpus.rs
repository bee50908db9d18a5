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

/// Seeds of `wrapper_token`, `opaque_token`, `dcr_metadata` and `ciba_request`, apart from
/// [`write_seed_corpus`] so that adding them did not re-key the other targets' seeds.
#[test]
#[ignore = "writes fuzz/corpus; run by hand to regenerate the seeds"]
fn write_seed_corpus_tokens_registration_ciba() {
    // wrapper_token: [wrapper + 4*typ][record edit][reference edit][len u16][claims overlay]
    let wrapper = |sel: u8, rec: u8, r: u8, overlay: &str| {
        let mut v = vec![sel, rec, r];
        v.extend_from_slice(&(overlay.len() as u16).to_le_bytes());
        v.extend_from_slice(overlay.as_bytes());
        write("wrapper_token", &v);
    };
    for sel in 0u8..16 {
        wrapper(sel, 0, 0, "");
    }
    for rec in 1u8..11 {
        wrapper(1, rec, 0, "");
        wrapper(0, rec | 0x80, 0, "");
    }
    for r in 1u8..6 {
        wrapper(2, 0, r, "");
        wrapper(0, 0, r | 0x28, "");
    }
    let later = NOW.0 + 5;
    for o in [
        r#"{"cnf":null}"#.to_owned(),
        r#"{"client_id":"ms"}"#.to_owned(),
        r#"{"cnf":{"x5t#S256":"AAAA"}}"#.to_owned(),
        r#"{"cnf":{"x5t#S256":null}}"#.to_owned(),
        format!(r#"{{"exp":{}}}"#, NOW.0 + 301),
        format!(r#"{{"aud":["{}","{}"]}}"#, fuzzing::RS, fuzzing::RS),
        format!(
            r#"{{"aud":["{}"],"scope":"openid patient/*.rs"}}"#,
            fuzzing::RS
        ),
        r#"{"ref":"hgref_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#.to_owned(),
        r#"{"sub":"user","patient":"123"}"#.to_owned(),
        r#"{"iss":"https://as.example/"}"#.to_owned(),
    ] {
        wrapper(0, 0, 0, &o);
        wrapper(1, 0, 0, &o);
    }
    // Edited record, and a wrapper that agrees with it.
    wrapper(0, 1, 0, r#"{"client_id":"ms"}"#);
    wrapper(1, 6, 0, &format!(r#"{{"exp":{later}}}"#));
    wrapper(1, 5, 0, r#"{"scope":"openid patient/*.cruds"}"#);
    wrapper(0, 2, 0, r#"{"cnf":{"x5t#S256":"placeholder"}}"#);

    // opaque_token: [op + 4*genuine][bytes]; op 0 raw, 1 truncate, 2 replace a byte, 3 $T.
    for g in 0u8..3 {
        let op = g << 2;
        write("opaque_token", &with_prefix(&[op | 3], b"$T"));
        write("opaque_token", &with_prefix(&[op | 3], b"$Tx"));
        write("opaque_token", &with_prefix(&[op | 3], b" $T"));
        write("opaque_token", &with_prefix(&[op | 3], b"$T$T"));
        write("opaque_token", &[op | 1, 20]);
        write("opaque_token", &[op | 1, 47]);
        write("opaque_token", &[op | 1, 48, b'A']);
        write("opaque_token", &[op | 2, 10, b'A']);
        write("opaque_token", &[op | 2, 47, b'=']);
    }
    for raw in [
        format!("hgat_{}", "A".repeat(43)),
        format!("hgat_{}", "A".repeat(42)),
        format!("hgat_{}=", "A".repeat(42)),
        format!("hgref_{}", "_".repeat(43)),
        format!("hgrt_{}", "-".repeat(43)),
        "hgat_".to_owned(),
        String::new(),
        "eyJhbGciOiJFUzI1NiJ9.e30.AA".to_owned(),
    ] {
        write("opaque_token", &with_prefix(&[0], raw.as_bytes()));
    }

    // dcr_metadata: registration JSON.
    let k = SigningKey::generate(Algorithm::ES256).unwrap();
    let jwks = json!({"keys": [k.verifying_key().to_jwk()]});
    let mut private = k.verifying_key().to_jwk();
    private.insert("d".into(), json!("AAAA"));
    let ciba = "urn:openid:params:grant-type:ciba";
    let mut docs = vec![
        json!({"profile": "smart", "redirect_uris": ["https://app.example/cb"],
            "token_endpoint_auth_method": "none", "grant_types": ["authorization_code"]}),
        json!({"profile": "heart", "redirect_uris": ["https://heart.example/cb"],
            "token_endpoint_auth_method": "private_key_jwt", "jwks": jwks,
            "grant_types": ["authorization_code"], "client_id": "mine"}),
        json!({"profile": "fapi2-message-signing", "redirect_uris": ["https://app.example/cb"],
            "token_endpoint_auth_method": "tls_client_auth", "tls_client_auth_san_ip": "192.0.2.7",
            "grant_types": ["authorization_code"], "require_pushed_authorization_requests": true,
            "tls_client_certificate_bound_access_tokens": true,
            "request_object_signing_alg": "PS256", "authorization_signed_response_alg": "PS256"}),
        json!({"profile": "smart", "token_endpoint_auth_method": "private_key_jwt",
            "jwks_uri": "https://10.0.0.1/jwks", "grant_types": ["client_credentials"]}),
        json!({"profile": "smart", "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [private]}, "redirect_uris": ["https://app.example/cb"]}),
        json!({"profile": "smart", "subject_type": "pairwise", "token_endpoint_auth_method": "none",
            "redirect_uris": ["https://a.example/cb", "https://b.example/cb"]}),
        json!({"profile": "smart", "redirect_uris": ["http://127.0.0.1/cb", "com.example.app:/cb"],
            "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"],
            "scope": "openid launch patient/*.rs"}),
    ];
    for host in [
        "clinic.example",
        "ciba.internal.example",
        "localhost",
        "127.0.0.1",
        "[::1]",
        "169.254.169.254",
        "[::ffff:10.0.0.1]",
        "2130706433",
        "[2002:7f00:1::]",
        "[fec0::1]",
        "[64:ff9b::808:808]",
        "93.184.216.34",
        "[2606:4700::1111]",
    ] {
        for mode in ["ping", "push"] {
            docs.push(
                json!({"profile": "smart", "token_endpoint_auth_method": "private_key_jwt",
                "jwks": jwks, "grant_types": [ciba], "backchannel_token_delivery_mode": mode,
                "backchannel_client_notification_endpoint": format!("https://{host}/cb")}),
            );
        }
    }
    for d in docs {
        write("dcr_metadata", d.to_string().as_bytes());
    }
    write("dcr_metadata", b"{}");
    write(
        "dcr_metadata",
        b"{\"profile\":\"smart\",\"profile\":\"heart\"}",
    );
    write("dcr_metadata", &[0x7f, 0, 0, 1]);
    write(
        "dcr_metadata",
        &[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    );

    // ciba_request: [client][flags] form. Clients: 0 poll, 1 ping, 2 push, 3 usercode,
    // 4 signed (heart), 5 fapi (ping), 6 narrow, 7 nociba. Flags: 1 signed request,
    // 2 requested_expiry as a number, 4 the form's claims win, 8 conceal, high nibble ×16
    // = binding_message limit.
    let alice = "scope=openid&login_hint=alice%40clinic.example";
    let ping = "&client_notification_token=abc123&binding_message=A1B2";
    let forms: Vec<(u8, u8, String)> = vec![
        (0, 0, alice.to_owned()),
        (
            0,
            0,
            format!("{alice}&requested_expiry=120&acr_values=urn%3Amace%3Aincommon%3Aiap%3Asilver"),
        ),
        (0, 0, format!("{alice}&requested_expiry=0")),
        (0, 0, format!("{alice}&requested_expiry=601")),
        (0, 0, format!("{alice}&requested_expiry=%2B5")),
        (0, 0x10, format!("{alice}&binding_message=Pay+42.00+EUR")),
        (
            0,
            0,
            "scope=openid&login_hint=ghost%40clinic.example".to_owned(),
        ),
        (
            0,
            8,
            "scope=openid&login_hint=ghost%40clinic.example".to_owned(),
        ),
        (
            0,
            8,
            "scope=openid&login_hint=carol%40clinic.example".to_owned(),
        ),
        (0, 0, "scope=openid&login_hint=x&id_token_hint=y".to_owned()),
        (0, 0, "scope=openid&id_token_hint=$IDT".to_owned()),
        (0, 0, "scope=openid&login_hint_token=$LHT".to_owned()),
        (1, 0, format!("{alice}{ping}")),
        (2, 0, format!("{alice}{ping}")),
        (1, 0, format!("{alice}&client_notification_token=a%20b")),
        (3, 0, format!("{alice}&user_code=4711")),
        (3, 0, format!("{alice}&user_code=0000")),
        (4, 0, alice.to_owned()),
        (
            4,
            1,
            format!("{alice}&requested_expiry=120&binding_message=Pay+42"),
        ),
        (4, 3, format!("{alice}&requested_expiry=0120")),
        (4, 5, format!("{alice}&exp=abc")),
        (5, 1, format!("{alice}{ping}")),
        (
            5,
            0x21,
            format!("{alice}&client_notification_token=abc&binding_message=Transfer+12+EUR+to+Bob"),
        ),
        (
            6,
            0,
            "scope=openid+user%2FObservation.rs&login_hint=alice%40clinic.example".to_owned(),
        ),
        (
            6,
            0,
            "scope=openid+patient%2F*.rs&login_hint=alice%40clinic.example".to_owned(),
        ),
        (7, 0, alice.to_owned()),
        (0, 0, format!("{alice}&client_id=ping")),
        (0, 0, format!("{alice}&request_uri=urn%3Ax")),
    ];
    for (sel, flags, f) in forms {
        write("ciba_request", &with_prefix(&[sel, flags], f.as_bytes()));
    }
}
