#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code
//! THREATS.md §2.1: one test per hostile input J1–J29 and J33–J35 (J30–J32 are about the
//! token layer and the revocation list, not JOSE), plus key-ring rotation (S11).
//!
//! Hostile tokens are built by hand (`b64(header) . b64(payload)`) and signed with the
//! public `SigningKey::sign`, and every forged signature is checked with the key's public
//! half before use (`sign_input`). So when a token below is refused, the refusal comes
//! from the check under test, never from a bad signature.

use std::cell::Cell;
use std::sync::{Arc, OnceLock};

use heartgate_core::clock::UnixTime;
use heartgate_core::jose::{
    b64, parse_compact, parse_jwk, sign_jwt, validate_claims, verify_jwt, Algorithm, AlgorithmSet,
    AudienceRule, Claims, JoseError, JsonError, JwkSet, JwkSetOptions, KeyError, KeyResolver,
    KeyRing, SigningKey, TypRule, Validation, Verified, VerifyingKey, ACCESS_TOKEN_MAX_LEN,
    DEFAULT_LEEWAY, MAX_JWKS_KEYS, MAX_JWKS_LEN, MAX_KID_LEN, MAX_LEEWAY, MAX_NUMERIC_DATE,
    REQUEST_OBJECT_MAX_LEN,
};
use serde_json::{json, Map, Value};

// ------------------------------------------------------------------------------------------
// Fixtures
// ------------------------------------------------------------------------------------------

const NOW: i64 = 1_700_000_000;
const ISS: &str = "https://as.example";
const AUD: &str = "https://rs.example";

/// P-256 group order n (SEC 2, FIPS 186-4 D.1.2.3).
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

fn es256() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| SigningKey::generate(Algorithm::ES256).unwrap())
}

fn es256_b() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| SigningKey::generate(Algorithm::ES256).unwrap())
}

fn eddsa() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| SigningKey::generate(Algorithm::EdDSA).unwrap())
}

/// One RSA key per test run (generation is slow), registered for PS256.
fn ps256() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| SigningKey::generate(Algorithm::PS256).unwrap())
}

/// The same RSA private key, loaded for RS256 under its own kid.
fn rs256() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| {
        SigningKey::from_pkcs8_der(Algorithm::RS256, &ps256().to_pkcs8_der())
            .unwrap()
            .with_kid(format!("rs256-{}", ps256().kid()))
            .unwrap()
    })
}

/// The same RSA private key, loaded for RS384 under its own kid (SMART, SPECS b.2 item 10).
fn rs384() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| {
        SigningKey::from_pkcs8_der(Algorithm::RS384, &ps256().to_pkcs8_der())
            .unwrap()
            .with_kid(format!("rs384-{}", ps256().kid()))
            .unwrap()
    })
}

/// A P-384 key, which is an ES384 key (J17 resolution, SPECS b.2 item 10).
fn es384() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| SigningKey::generate(Algorithm::ES384).unwrap())
}

fn set(keys: &[&SigningKey]) -> JwkSet {
    JwkSet::new(keys.iter().map(|k| k.verifying_key().clone()).collect()).unwrap()
}

/// Access-token rules (RFC 9068): `typ` at+jwt, our issuer, our resource server.
fn access_token_rules() -> Validation {
    Validation::new(
        AlgorithmSet::ALL,
        TypRule::Required("at+jwt"),
        AudienceRule::Contains(AUD.into()),
    )
    .issuer(ISS)
}

/// Request-object rules (RFC 9101): `typ` oauth-authz-req+jwt, audience is the AS.
fn request_object_rules() -> Validation {
    Validation::new(
        AlgorithmSet::FAPI2,
        TypRule::OptionalOneOf(&["oauth-authz-req+jwt"]),
        AudienceRule::Contains(ISS.into()),
    )
    .max_len(REQUEST_OBJECT_MAX_LEN)
    .max_lifetime(3600)
}

fn verify_with(token: &str, keys: &dyn KeyResolver, v: &Validation) -> Result<Claims, JoseError> {
    verify_jwt(token, keys, v, UnixTime(NOW)).map(Verified::into_inner)
}

fn verify(token: &str, keys: &dyn KeyResolver) -> Result<Claims, JoseError> {
    verify_with(token, keys, &access_token_rules())
}

fn claims() -> Value {
    json!({
        "iss": ISS, "aud": AUD, "sub": "alice", "client_id": "c1",
        "exp": NOW + 300, "iat": NOW, "jti": "jti-1",
    })
}

/// The standard claims with `changes` applied; a `null` change removes the member.
fn claims_with(changes: Value) -> Value {
    merge(claims(), changes)
}

fn header(key: &SigningKey) -> Value {
    json!({"alg": key.algorithm().as_str(), "kid": key.kid(), "typ": "at+jwt"})
}

/// `key`'s header with `changes` applied; a `null` change removes the member.
fn header_with(key: &SigningKey, changes: Value) -> Value {
    merge(header(key), changes)
}

fn merge(base: Value, changes: Value) -> Value {
    let mut m: Map<String, Value> = base.as_object().unwrap().clone();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            m.remove(k);
        } else {
            m.insert(k.clone(), v.clone());
        }
    }
    Value::Object(m)
}

/// Sign an arbitrary signing input and append the signature. The signature is checked with
/// the public key first, so a refusal of the result is never a signature failure.
fn sign_input(key: &SigningKey, signing_input: &str) -> String {
    let sig = key.sign(signing_input.as_bytes()).unwrap();
    key.verifying_key()
        .verify(key.algorithm(), signing_input.as_bytes(), &sig)
        .expect("the forged token carries a valid signature");
    format!("{signing_input}.{}", b64::encode(sig))
}

/// `b64(header) . b64(payload) . sig` over arbitrary header and payload bytes.
fn forge_raw(key: &SigningKey, header: &[u8], payload: &[u8]) -> String {
    sign_input(
        key,
        &format!("{}.{}", b64::encode(header), b64::encode(payload)),
    )
}

fn forge(key: &SigningKey, header: &Value, payload: &Value) -> String {
    forge_raw(
        key,
        header.to_string().as_bytes(),
        payload.to_string().as_bytes(),
    )
}

/// A good access token signed by `key` with the standard claims changed by `changes`.
fn token_with_claims(key: &SigningKey, changes: Value) -> String {
    forge(key, &header(key), &claims_with(changes))
}

fn parts(token: &str) -> (&str, &str, &str) {
    let mut it = token.split('.');
    let p = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    assert!(it.next().is_none());
    p
}

/// A resolver that counts lookups: shows that a rejection came before any key lookup.
struct CountingResolver<'a> {
    inner: &'a JwkSet,
    lookups: Cell<usize>,
}

impl<'a> CountingResolver<'a> {
    fn new(inner: &'a JwkSet) -> Self {
        CountingResolver {
            inner,
            lookups: Cell::new(0),
        }
    }
}

impl KeyResolver for CountingResolver<'_> {
    fn resolve(&self, kid: Option<&str>, alg: Algorithm) -> Result<&VerifyingKey, JoseError> {
        self.lookups.set(self.lookups.get() + 1);
        self.inner.resolve(kid, alg)
    }
}

#[test]
fn control_forged_tokens_verify_when_nothing_is_wrong() {
    // The hand-built tokens used below are accepted when nothing hostile is in them, for
    // every algorithm: each refusal in this file is therefore caused by the check it names.
    let all = [es256(), eddsa(), ps256(), rs256(), es384(), rs384()];
    assert_eq!(all.len(), Algorithm::ALL.len());
    let keys = set(&all);
    for key in all {
        let t = forge(key, &header(key), &claims());
        let c = verify(&t, &keys).unwrap_or_else(|e| panic!("{:?}: {e:?}", key.algorithm()));
        assert_eq!(c.required_string("sub").unwrap(), "alice");
    }
}

// ------------------------------------------------------------------------------------------
// J1 alg none
// ------------------------------------------------------------------------------------------

#[test]
fn j1_alg_none_in_any_spelling_is_rejected_before_key_lookup() {
    let keys = set(&[es256()]);
    for none in ["none", "None", "NONE", "nOnE"] {
        let t = forge(
            es256(),
            &header_with(es256(), json!({"alg": none})),
            &claims(),
        );
        let r = CountingResolver::new(&keys);
        assert_eq!(
            verify(&t, &r).unwrap_err(),
            JoseError::AlgNone,
            "alg {none}"
        );
        assert_eq!(r.lookups.get(), 0, "alg {none}: no key lookup");
    }
}

#[test]
fn j1_empty_signature_segment_is_rejected() {
    let keys = set(&[es256()]);
    // RFC 7515 Appendix A.5, the unsecured JWS, verbatim.
    let rfc_a5 = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.";
    let ours_none = format!(
        "{}.{}.",
        b64::encode(header_with(es256(), json!({"alg": "none"})).to_string()),
        b64::encode(claims().to_string())
    );
    let ours_es256 = format!(
        "{}.{}.",
        b64::encode(header(es256()).to_string()),
        b64::encode(claims().to_string())
    );
    for t in [rfc_a5, ours_none.as_str(), ours_es256.as_str()] {
        let r = CountingResolver::new(&keys);
        assert_eq!(verify(t, &r).unwrap_err(), JoseError::NotCompactJws, "{t}");
        assert_eq!(r.lookups.get(), 0);
    }
}

// ------------------------------------------------------------------------------------------
// J2 HMAC with a public key as the secret (CVE-2015-9235 class)
// ------------------------------------------------------------------------------------------

fn hmac_token(alg: &str, kid: &str, secret: &[u8]) -> String {
    let h = json!({"alg": alg, "kid": kid, "typ": "at+jwt"});
    let input = format!(
        "{}.{}",
        b64::encode(h.to_string()),
        b64::encode(claims().to_string())
    );
    let algorithm = match alg {
        "HS256" => ring::hmac::HMAC_SHA256,
        "HS384" => ring::hmac::HMAC_SHA384,
        _ => ring::hmac::HMAC_SHA512,
    };
    let tag = ring::hmac::sign(&ring::hmac::Key::new(algorithm, secret), input.as_bytes());
    format!("{input}.{}", b64::encode(tag.as_ref()))
}

#[test]
fn j2_hs256_keyed_with_the_public_key_or_jwks_is_rejected() {
    let keys = set(&[es256(), ps256()]);
    let secrets: [(&str, &SigningKey, Vec<u8>); 3] = [
        (
            "EC public point",
            es256(),
            es256().verifying_key().public_key_bytes().to_vec(),
        ),
        (
            "RSA modulus",
            ps256(),
            ps256().verifying_key().public_key_bytes().to_vec(),
        ),
        ("JWKS JSON", es256(), keys.to_json().into_bytes()),
    ];
    for (what, key, secret) in &secrets {
        for alg in ["HS256", "HS384", "HS512"] {
            let t = hmac_token(alg, key.kid(), secret);
            let r = CountingResolver::new(&keys);
            assert_eq!(
                verify(&t, &r).unwrap_err(),
                JoseError::UnsupportedAlgorithm,
                "{alg} keyed with the {what}"
            );
            assert_eq!(r.lookups.get(), 0);
        }
    }
}

// ------------------------------------------------------------------------------------------
// J3 algorithm outside the context's allow-list
// ------------------------------------------------------------------------------------------

#[test]
fn j3_rs256_is_not_allowed_under_fapi2() {
    let keys = set(&[rs256()]);
    let t = forge(rs256(), &header(rs256()), &claims());
    let mut fapi = access_token_rules();
    fapi.algorithms = AlgorithmSet::FAPI2;
    assert_eq!(
        verify_with(&t, &keys, &fapi).unwrap_err(),
        JoseError::AlgorithmNotAllowed
    );
    // Under HEART/SMART (RS256 configured) the same token verifies.
    assert!(verify(&t, &keys).is_ok());
}

#[test]
fn j3_algorithm_missing_from_a_narrow_set_is_not_allowed() {
    let keys = set(&[eddsa()]);
    let t = forge(eddsa(), &header(eddsa()), &claims());
    for algorithms in [AlgorithmSet::of(&[Algorithm::ES256]), AlgorithmSet::NONE] {
        let mut v = access_token_rules();
        v.algorithms = algorithms;
        assert_eq!(
            verify_with(&t, &keys, &v).unwrap_err(),
            JoseError::AlgorithmNotAllowed
        );
    }
}

#[test]
fn j3_es384_and_rs384_are_allowed_only_in_the_smart_set() {
    // SPECS.md b.2 item 10 / b.12: SMART accepts ES384 and RS384 client assertions; HEART
    // and FAPI 2.0 do not list them, so the same valid tokens are refused there.
    let keys = set(&[es384(), rs384()]);
    for key in [es384(), rs384()] {
        let t = forge(key, &header(key), &claims());
        for (set, ok) in [
            (AlgorithmSet::SMART, true),
            (AlgorithmSet::ALL, true),
            (AlgorithmSet::HEART, false),
            (AlgorithmSet::FAPI2, false),
        ] {
            let mut v = access_token_rules();
            v.algorithms = set;
            let got = verify_with(&t, &keys, &v);
            if ok {
                assert!(got.is_ok(), "{:?} {set:?}: {got:?}", key.algorithm());
            } else {
                assert_eq!(
                    got.unwrap_err(),
                    JoseError::AlgorithmNotAllowed,
                    "{:?} {set:?}",
                    key.algorithm()
                );
            }
        }
    }
}

#[test]
fn j3_unimplemented_algorithms_are_unsupported() {
    // ES384 and RS384 are implemented now (SMART); their siblings are not.
    let keys = set(&[es256()]);
    for alg in [
        "ES512", "PS384", "PS512", "RS512", "Ed448", "Ed25519", "es256", "es384", "rs384",
    ] {
        let t = forge(
            es256(),
            &header_with(es256(), json!({"alg": alg})),
            &claims(),
        );
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::UnsupportedAlgorithm,
            "alg {alg}"
        );
    }
}

#[test]
fn j3_missing_or_non_string_alg_is_an_invalid_header() {
    let keys = set(&[es256()]);
    for alg in [
        json!(null),
        json!(["ES256"]),
        json!(256),
        json!({"alg": "ES256"}),
    ] {
        let h = if alg.is_null() {
            header_with(es256(), json!({"alg": null}))
        } else {
            header_with(es256(), json!({ "alg": alg }))
        };
        let t = forge(es256(), &h, &claims());
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::InvalidHeader("alg"),
            "alg {alg}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// J4 header alg differs from the key's alg
// ------------------------------------------------------------------------------------------

#[test]
fn j4_ps256_header_naming_an_es256_key_is_a_mismatch() {
    let keys = set(&[es256(), ps256()]);
    // A valid PS256 signature, but the kid names the ES256 key.
    let t = forge(
        ps256(),
        &header_with(ps256(), json!({"kid": es256().kid()})),
        &claims(),
    );
    assert_eq!(
        verify(&t, &keys).unwrap_err(),
        JoseError::AlgorithmKeyMismatch
    );
}

#[test]
fn j4_rs256_signature_for_a_key_registered_as_ps256_is_a_mismatch() {
    // Same RSA private key, but the key was registered for PS256: a PKCS#1 v1.5 signature
    // must not be accepted for it, even though it is mathematically valid.
    let keys = set(&[ps256()]);
    let t = forge(
        rs256(),
        &header_with(rs256(), json!({"kid": ps256().kid()})),
        &claims(),
    );
    assert_eq!(
        verify(&t, &keys).unwrap_err(),
        JoseError::AlgorithmKeyMismatch
    );
}

#[test]
fn j4_es384_header_naming_an_es256_key_and_es256_header_naming_a_p384_key_are_mismatches() {
    // The curve fixes the algorithm: neither header can make a key of the other curve
    // verify, whatever the signature.
    let keys = set(&[es256(), es384()]);
    for (signer, named) in [(es384(), es256()), (es256(), es384())] {
        let t = forge(
            signer,
            &header_with(signer, json!({"kid": named.kid()})),
            &claims(),
        );
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::AlgorithmKeyMismatch,
            "{:?} header, {:?} key",
            signer.algorithm(),
            named.algorithm()
        );
    }
}

#[test]
fn j4_rs384_and_rs256_signatures_are_not_interchangeable() {
    // One RSA private key, registered once for RS256 and once for RS384: a header naming
    // the other registration is refused, and so is the other hash under the right kid.
    let keys = set(&[rs256(), rs384()]);
    for (signer, named) in [(rs384(), rs256()), (rs256(), rs384())] {
        let t = forge(
            signer,
            &header_with(signer, json!({"kid": named.kid()})),
            &claims(),
        );
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::AlgorithmKeyMismatch
        );
    }
    // An RS256 signature presented as RS384 with the RS384 key's kid.
    let (h, p) = {
        let hdr = header(rs384());
        (
            b64::encode(hdr.to_string()),
            b64::encode(claims().to_string()),
        )
    };
    let input = format!("{h}.{p}");
    let rs256_sig = rs256().sign(input.as_bytes()).unwrap();
    assert_eq!(
        verify(&format!("{input}.{}", b64::encode(rs256_sig)), &keys).unwrap_err(),
        JoseError::BadSignature
    );
}

#[test]
fn j4_verifying_key_refuses_a_foreign_algorithm() {
    let msg = b"input";
    let sig = ps256().sign(msg).unwrap();
    assert_eq!(
        ps256()
            .verifying_key()
            .verify(Algorithm::RS256, msg, &sig)
            .unwrap_err(),
        JoseError::AlgorithmKeyMismatch
    );
    assert_eq!(
        es256()
            .verifying_key()
            .verify(Algorithm::EdDSA, msg, &sig)
            .unwrap_err(),
        JoseError::AlgorithmKeyMismatch
    );
    let sig = es384().sign(msg).unwrap();
    for foreign in [Algorithm::ES256, Algorithm::RS384, Algorithm::EdDSA] {
        assert_eq!(
            es384()
                .verifying_key()
                .verify(foreign, msg, &sig)
                .unwrap_err(),
            JoseError::AlgorithmKeyMismatch,
            "{foreign}"
        );
    }
    assert_eq!(
        rs384()
            .verifying_key()
            .verify(Algorithm::RS256, msg, &rs384().sign(msg).unwrap())
            .unwrap_err(),
        JoseError::AlgorithmKeyMismatch
    );
}

// ------------------------------------------------------------------------------------------
// J5 hostile kid
// ------------------------------------------------------------------------------------------

#[test]
fn j5_kid_with_path_or_query_metacharacters_is_only_a_lookup_key() {
    let keys = set(&[es256()]);
    for kid in [
        "../../etc/passwd",
        "/dev/zero",
        "' OR '1'='1' --",
        "$(rm -rf /)",
        "key\u{202e}",
        "%00",
    ] {
        let t = forge(
            es256(),
            &header_with(es256(), json!({"kid": kid})),
            &claims(),
        );
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::UnknownKey,
            "kid {kid:?}"
        );
    }
}

#[test]
fn j5_kid_of_10_kb_is_invalid() {
    let keys = set(&[es256()]);
    let t = forge(
        es256(),
        &header_with(es256(), json!({"kid": "k".repeat(10 * 1024)})),
        &claims(),
    );
    // Under the access-token limit the size check refuses it first; under the request
    // object limit the kid check does.
    assert_eq!(verify(&t, &keys).unwrap_err(), JoseError::TooLarge);
    assert_eq!(
        parse_compact(&t, REQUEST_OBJECT_MAX_LEN).unwrap_err(),
        JoseError::InvalidKid
    );
}

#[test]
fn j5_kid_longer_than_256_bytes_is_invalid() {
    let keys = set(&[es256()]);
    let at_limit = forge(
        es256(),
        &header_with(es256(), json!({"kid": "k".repeat(MAX_KID_LEN)})),
        &claims(),
    );
    assert_eq!(verify(&at_limit, &keys).unwrap_err(), JoseError::UnknownKey);
    let over = forge(
        es256(),
        &header_with(es256(), json!({"kid": "k".repeat(MAX_KID_LEN + 1)})),
        &claims(),
    );
    assert_eq!(verify(&over, &keys).unwrap_err(), JoseError::InvalidKid);
}

#[test]
fn j5_kid_with_nul_or_empty_is_invalid() {
    let keys = set(&[es256()]);
    for kid in ["a\u{0}b", "\u{0}", ""] {
        let t = forge(
            es256(),
            &header_with(es256(), json!({"kid": kid})),
            &claims(),
        );
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::InvalidKid,
            "kid {kid:?}"
        );
    }
}

#[test]
fn j5_kid_that_is_not_a_string_is_invalid() {
    let keys = set(&[es256()]);
    for kid in [
        json!(1),
        json!({"kid": es256().kid()}),
        json!([es256().kid()]),
        json!(true),
    ] {
        let t = forge(
            es256(),
            &header_with(es256(), json!({"kid": kid})),
            &claims(),
        );
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::InvalidKid,
            "kid {kid}"
        );
    }
    // `"kid": null` is present with the wrong type (serde `null` removes in header_with, so
    // build the header by hand).
    let h = r#"{"alg":"ES256","kid":null,"typ":"at+jwt"}"#;
    let t = forge_raw(es256(), h.as_bytes(), claims().to_string().as_bytes());
    assert_eq!(verify(&t, &keys).unwrap_err(), JoseError::InvalidKid);
}

// ------------------------------------------------------------------------------------------
// J6 unknown kid
// ------------------------------------------------------------------------------------------

#[test]
fn j6_unknown_kid_is_rejected() {
    let keys = set(&[es256()]);
    let t = forge(
        es256(),
        &header_with(es256(), json!({"kid": "no-such-key"})),
        &claims(),
    );
    assert_eq!(verify(&t, &keys).unwrap_err(), JoseError::UnknownKey);
    // Also against the key ring.
    let ring = KeyRing::new(SigningKey::generate(Algorithm::ES256).unwrap());
    assert_eq!(
        verify(&t, &**ring.load()).unwrap_err(),
        JoseError::UnknownKey
    );
}

#[test]
fn j6_no_kid_and_no_key_of_the_algorithm_is_unknown() {
    let keys = set(&[es256()]);
    let t = forge(
        eddsa(),
        &header_with(eddsa(), json!({"kid": null})),
        &claims(),
    );
    assert_eq!(verify(&t, &keys).unwrap_err(), JoseError::UnknownKey);
}

// ------------------------------------------------------------------------------------------
// J7, J8 keys named or carried by the token
// ------------------------------------------------------------------------------------------

#[test]
fn j7_jku_and_x5u_are_rejected() {
    let keys = set(&[es256()]);
    for (name, value) in [
        ("jku", json!("https://attacker.example/jwks.json")),
        ("x5u", json!("https://attacker.example/cert.pem")),
    ] {
        let t = forge(
            es256(),
            &header_with(es256(), json!({ name: value })),
            &claims(),
        );
        let r = CountingResolver::new(&keys);
        assert_eq!(
            verify(&t, &r).unwrap_err(),
            JoseError::HeaderKeyReference,
            "{name}"
        );
        assert_eq!(r.lookups.get(), 0);
    }
}

#[test]
fn j8_embedded_jwk_and_x5c_are_rejected() {
    let keys = set(&[es256()]);
    // The attacker embeds their own public key and signs with it, naming our kid.
    let attacker = es256_b();
    let jwk = Value::Object(attacker.verifying_key().to_jwk());
    let x5c = json!(["MIIBszCCAVmgAwIBAgIUEXAMPLE"]);
    for (name, value) in [("jwk", jwk), ("x5c", x5c)] {
        let t = forge(
            attacker,
            &header_with(attacker, json!({ name: value, "kid": es256().kid() })),
            &claims(),
        );
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::HeaderKeyReference,
            "{name}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// J9 crit, J10 b64
// ------------------------------------------------------------------------------------------

#[test]
fn j9_crit_with_any_value_is_rejected() {
    let keys = set(&[es256()]);
    for crit in [
        json!(["exp"]),
        json!(["http://example.com/ext"]),
        json!([]),
        json!("exp"),
        json!({}),
        json!(1),
        json!(false),
    ] {
        let t = forge(
            es256(),
            &header_with(es256(), json!({"crit": crit})),
            &claims(),
        );
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::CritNotSupported,
            "crit {crit}"
        );
    }
}

/// An RFC 7797 unencoded-payload JWS: the signing input holds the payload bytes as they
/// are, and so does the token.
fn unencoded_token(key: &SigningKey, extra_header: Value) -> String {
    let h = header_with(key, merge(json!({"b64": false}), extra_header));
    let payload = "sub-alice-exp-1700000300"; // base64url characters only
    sign_input(key, &format!("{}.{payload}", b64::encode(h.to_string())))
}

#[test]
fn j10_b64_false_without_crit_is_rejected() {
    let keys = set(&[es256()]);
    let t = unencoded_token(es256(), json!({}));
    assert_eq!(verify(&t, &keys).unwrap_err(), JoseError::UnencodedPayload);
}

#[test]
fn j10_b64_false_with_crit_is_rejected() {
    let keys = set(&[es256()]);
    let t = unencoded_token(es256(), json!({"crit": ["b64"]}));
    // Both members are refused on their own; which one is reported first depends only on
    // the order the header is walked in.
    let e = verify(&t, &keys).unwrap_err();
    assert!(
        matches!(e, JoseError::UnencodedPayload | JoseError::CritNotSupported),
        "{e:?}"
    );
}

#[test]
fn j10_b64_true_is_rejected_too() {
    let keys = set(&[es256()]);
    let h = header_with(es256(), json!({"b64": true}));
    let t = forge(es256(), &h, &claims());
    assert_eq!(verify(&t, &keys).unwrap_err(), JoseError::UnencodedPayload);
}

// ------------------------------------------------------------------------------------------
// J11 duplicate names
// ------------------------------------------------------------------------------------------

#[test]
fn j11_duplicate_header_members_are_rejected() {
    let keys = set(&[es256()]);
    let kid = es256().kid();
    for h in [
        format!(r#"{{"alg":"ES256","alg":"none","kid":"{kid}","typ":"at+jwt"}}"#),
        format!(r#"{{"alg":"ES256","alg":"ES256","kid":"{kid}","typ":"at+jwt"}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","kid":"other","typ":"at+jwt"}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","typ":"JWT","typ":"at+jwt"}}"#),
    ] {
        let t = forge_raw(es256(), h.as_bytes(), claims().to_string().as_bytes());
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::Json(JsonError::DuplicateMember),
            "{h}"
        );
    }
}

#[test]
fn j11_duplicate_claims_are_rejected() {
    let keys = set(&[es256()]);
    let h = header(es256()).to_string();
    let base = format!(r#""iss":"{ISS}","sub":"alice","iat":{NOW},"jti":"j""#);
    for p in [
        format!(
            r#"{{{base},"aud":"{AUD}","exp":{},"exp":{}}}"#,
            NOW + 300,
            NOW + 300
        ),
        format!(
            r#"{{{base},"aud":"{AUD}","exp":{},"exp":{}}}"#,
            NOW - 300,
            NOW + 300
        ),
        format!(
            r#"{{{base},"aud":"other","aud":"{AUD}","exp":{}}}"#,
            NOW + 300
        ),
        format!(
            r#"{{{base},"aud":"{AUD}","aud":"{AUD}","exp":{}}}"#,
            NOW + 300
        ),
        format!(
            r#"{{{base},"aud":"{AUD}","exp":{},"cnf":{{"jkt":"a","jkt":"b"}}}}"#,
            NOW + 300
        ),
    ] {
        let t = forge_raw(es256(), h.as_bytes(), p.as_bytes());
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::Json(JsonError::DuplicateMember),
            "{p}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// J12 header or payload not one JSON object
// ------------------------------------------------------------------------------------------

#[test]
fn j12_header_that_is_not_an_object_is_rejected() {
    let keys = set(&[es256()]);
    for h in [
        "null",
        "[]",
        "\"str\"",
        "1",
        "true",
        "[{\"alg\":\"ES256\"}]",
    ] {
        let t = forge_raw(es256(), h.as_bytes(), claims().to_string().as_bytes());
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::Json(JsonError::NotAnObject),
            "header {h}"
        );
    }
}

#[test]
fn j12_payload_that_is_not_an_object_is_rejected() {
    let keys = set(&[es256()]);
    let h = header(es256()).to_string();
    for p in ["null", "[]", "\"str\"", "1", "false"] {
        let t = forge_raw(es256(), h.as_bytes(), p.as_bytes());
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::Json(JsonError::NotAnObject),
            "payload {p}"
        );
    }
}

#[test]
fn j12_malformed_header_bytes_are_rejected() {
    let keys = set(&[es256()]);
    let good = header(es256()).to_string();
    let rows: [(&str, Vec<u8>); 5] = [
        (
            "BOM",
            [b"\xef\xbb\xbf".as_slice(), good.as_bytes()].concat(),
        ),
        ("trailing garbage", format!("{good} x").into_bytes()),
        ("second object", format!("{good}{{}}").into_bytes()),
        (
            "invalid UTF-8",
            format!(r#"{{"alg":"ES256","kid":"{}","x":"#, es256().kid())
                .into_bytes()
                .into_iter()
                .chain(*b"\"\xff\"}")
                .collect(),
        ),
        ("truncated", good.as_bytes()[..good.len() - 1].to_vec()),
    ];
    for (what, h) in &rows {
        let t = forge_raw(es256(), h, claims().to_string().as_bytes());
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::Json(JsonError::Syntax),
            "header: {what}"
        );
    }
}

#[test]
fn j12_malformed_payload_bytes_are_rejected() {
    let keys = set(&[es256()]);
    let h = header(es256()).to_string();
    let good = claims().to_string();
    let rows: [(&str, Vec<u8>); 5] = [
        (
            "BOM",
            [b"\xef\xbb\xbf".as_slice(), good.as_bytes()].concat(),
        ),
        ("trailing garbage", format!("{good} x").into_bytes()),
        ("second object", format!("{good}{{}}").into_bytes()),
        (
            "invalid UTF-8",
            [&good.as_bytes()[..good.len() - 1], b",\"x\":\"\xc3\x28\"}"].concat(),
        ),
        ("truncated", good.as_bytes()[..good.len() - 1].to_vec()),
    ];
    for (what, p) in &rows {
        let t = forge_raw(es256(), h.as_bytes(), p);
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::Json(JsonError::Syntax),
            "payload: {what}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// J13 part count
// ------------------------------------------------------------------------------------------

#[test]
fn j13_wrong_number_of_parts_is_rejected() {
    let keys = set(&[es256()]);
    let t = forge(es256(), &header(es256()), &claims());
    let (h, p, s) = parts(&t);
    for (what, bad) in [
        ("two parts", format!("{h}.{p}")),
        ("four parts", format!("{h}.{p}.{s}.{s}")),
        ("trailing dot", format!("{h}.{p}.{s}.")),
        ("leading dot", format!(".{h}.{p}.{s}")),
        ("one part", h.to_owned()),
        ("three dots only", "...".to_owned()),
        ("two dots only", "..".to_owned()),
    ] {
        assert_eq!(
            verify(&bad, &keys).unwrap_err(),
            JoseError::NotCompactJws,
            "{what}"
        );
    }
}

#[test]
fn j13_jwe_with_five_parts_is_rejected() {
    let keys = set(&[es256()]);
    // RFC 7516 Appendix A.3 shape: header.encrypted_key.iv.ciphertext.tag
    let jwe = "eyJhbGciOiJBMTI4S1ciLCJlbmMiOiJBMTI4Q0JDLUhTMjU2In0.\
               6KB707dM9YTIgHtLvtgWQ8mKwboJW3of9locizkDTHzBC2IlrT1oOQ.\
               AxY8DCtDaGlsbGljb3RoZQ.\
               KDlTtXchhZTGufMYmOYGS4HffxPSUrfmqCHXaI9wOGY.\
               U0m_YmjN04DJvceFICbCVQ";
    assert_eq!(verify(jwe, &keys).unwrap_err(), JoseError::NotCompactJws);
}

#[test]
fn j13_json_serialization_is_rejected() {
    let keys = set(&[es256()]);
    let t = forge(es256(), &header(es256()), &claims());
    let (h, p, s) = parts(&t);
    let flattened = json!({"payload": p, "protected": h, "signature": s}).to_string();
    let general =
        json!({"payload": p, "signatures": [{"protected": h, "signature": s}]}).to_string();
    for doc in [flattened, general] {
        assert_eq!(
            verify(&doc, &keys).unwrap_err(),
            JoseError::NotCompactJws,
            "{doc}"
        );
    }
}

#[test]
fn j13_100_kb_of_dots_is_too_large() {
    // CVE-2025-30204: `Bearer ......` cost one allocation per dot in golang-jwt. Here the
    // length is checked before anything is split, so nothing else is looked at. (Counting
    // allocations would need a global allocator, i.e. `unsafe`, which the crate forbids.)
    let keys = set(&[es256()]);
    let dots = ".".repeat(100 * 1024);
    assert_eq!(verify(&dots, &keys).unwrap_err(), JoseError::TooLarge);
    assert_eq!(
        parse_compact(&dots, ACCESS_TOKEN_MAX_LEN).unwrap_err(),
        JoseError::TooLarge
    );
}

#[test]
fn j13_many_dots_under_the_limit_are_not_a_jws() {
    // At or under the limit the split stops after the fourth part; any number of dots
    // beyond two is the same refusal.
    let keys = set(&[es256()]);
    for n in [3, 4, 100, ACCESS_TOKEN_MAX_LEN] {
        let dots = ".".repeat(n);
        assert_eq!(
            verify(&dots, &keys).unwrap_err(),
            JoseError::NotCompactJws,
            "{n} dots"
        );
    }
    let big = ".".repeat(1 << 20);
    assert_eq!(
        parse_compact(&big, big.len()).unwrap_err(),
        JoseError::NotCompactJws
    );
}

// ------------------------------------------------------------------------------------------
// J14 non-canonical base64url, in each of the three segments
// ------------------------------------------------------------------------------------------

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The same text with the lowest bit of the last character's value flipped: for a segment
/// whose length is 2 or 3 mod 4 this sets one of the unused trailing bits.
fn flip_trailing_bit(seg: &str) -> String {
    assert!(matches!(seg.len() % 4, 2 | 3), "segment has trailing bits");
    let last = *seg.as_bytes().last().unwrap();
    let idx = B64URL.iter().position(|c| *c == last).unwrap();
    let mut out = seg[..seg.len() - 1].to_owned();
    out.push(B64URL[idx ^ 1] as char);
    out
}

/// Mutations of one segment, each naming what it breaks.
fn segment_mutations(seg: &str) -> Vec<(&'static str, String)> {
    assert!(seg.contains('-') && seg.contains('_'), "{seg}");
    let mid = seg.len() / 2;
    vec![
        ("padding", format!("{seg}{}", "=".repeat(4 - seg.len() % 4))),
        ("one '='", format!("{seg}=")),
        ("'+' for '-'", seg.replace('-', "+")),
        ("'/' for '_'", seg.replace('_', "/")),
        ("space", format!("{} {}", &seg[..mid], &seg[mid..])),
        ("trailing newline", format!("{seg}\n")),
        ("CRLF inside", format!("{}\r\n{}", &seg[..mid], &seg[mid..])),
        ("tab", format!("{}\t{}", &seg[..mid], &seg[mid..])),
        ("non-zero trailing bits", flip_trailing_bit(seg)),
    ]
}

/// A header and claim set whose base64url forms contain both '-' and '_' and carry
/// trailing bits, so every mutation above applies to them.
fn awkward_header_and_claims(key: &SigningKey) -> (String, String) {
    let fits = |s: &str| {
        let e = b64::encode(s);
        e.contains('-') && e.contains('_') && matches!(e.len() % 4, 2 | 3)
    };
    let mut found_h = None;
    let mut found_p = None;
    for i in 0..400 {
        let pad = format!("{}{}", "~".repeat(i % 7 + 1), "?".repeat(i / 7 + 1));
        let h = header_with(key, json!({"x": pad})).to_string();
        let p = claims_with(json!({"x": pad})).to_string();
        if found_h.is_none() && fits(&h) {
            found_h = Some(h);
        }
        if found_p.is_none() && fits(&p) {
            found_p = Some(p);
        }
    }
    (found_h.unwrap(), found_p.unwrap())
}

#[test]
fn j14_non_canonical_header_segment_is_rejected() {
    let keys = set(&[es256()]);
    let (h, p) = awkward_header_and_claims(es256());
    let (h64, p64) = (b64::encode(&h), b64::encode(&p));
    assert!(verify(&sign_input(es256(), &format!("{h64}.{p64}")), &keys).is_ok());
    for (what, bad) in segment_mutations(&h64) {
        // Signed over the mutated text: the signature is valid for exactly this token.
        let t = sign_input(es256(), &format!("{bad}.{p64}"));
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::Base64,
            "header: {what}"
        );
    }
}

#[test]
fn j14_non_canonical_payload_segment_is_rejected() {
    let keys = set(&[es256()]);
    let (h, p) = awkward_header_and_claims(es256());
    let (h64, p64) = (b64::encode(&h), b64::encode(&p));
    assert!(verify(&sign_input(es256(), &format!("{h64}.{p64}")), &keys).is_ok());
    for (what, bad) in segment_mutations(&p64) {
        let t = sign_input(es256(), &format!("{h64}.{bad}"));
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::Base64,
            "payload: {what}"
        );
    }
}

#[test]
fn j14_non_canonical_signature_segment_is_rejected() {
    let keys = set(&[es256()]);
    // ES256 signatures are randomised: sign until the encoding has both '-' and '_'.
    let t = (0..200)
        .map(|_| forge(es256(), &header(es256()), &claims()))
        .find(|t| {
            let s = parts(t).2;
            s.contains('-') && s.contains('_')
        })
        .unwrap();
    assert!(verify(&t, &keys).is_ok());
    let (h, p, s) = parts(&t);
    assert_eq!(s.len() % 4, 2, "64 bytes encode to 86 characters");
    for (what, bad) in segment_mutations(s) {
        let t = format!("{h}.{p}.{bad}");
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::Base64,
            "signature: {what}"
        );
    }
}

#[test]
fn j14_empty_segment_is_rejected() {
    let keys = set(&[es256()]);
    let t = forge(es256(), &header(es256()), &claims());
    let (h, p, s) = parts(&t);
    for bad in [
        format!(".{p}.{s}"),
        format!("{h}..{s}"),
        format!("{h}.{p}."),
    ] {
        assert_eq!(
            verify(&bad, &keys).unwrap_err(),
            JoseError::NotCompactJws,
            "{bad}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// J15 malformed ECDSA signatures, J16 high-s
// ------------------------------------------------------------------------------------------

fn with_signature(token: &str, sig: &[u8]) -> String {
    let (h, p, _) = parts(token);
    format!("{h}.{p}.{}", b64::encode(sig))
}

fn der_integer(x: &[u8]) -> Vec<u8> {
    let first = x.iter().position(|b| *b != 0).unwrap_or(x.len() - 1);
    let mut v = x[first..].to_vec();
    if v[0] & 0x80 != 0 {
        v.insert(0, 0);
    }
    let mut out = vec![0x02, u8::try_from(v.len()).unwrap()];
    out.extend(v);
    out
}

/// The ASN.1 DER `ECDSA-Sig-Value` for a raw r‖s signature (P-256 or P-384).
fn to_der(raw: &[u8]) -> Vec<u8> {
    let half = raw.len() / 2;
    let body = [der_integer(&raw[..half]), der_integer(&raw[half..])].concat();
    let mut out = vec![0x30, u8::try_from(body.len()).unwrap()];
    out.extend(body);
    out
}

/// a − b for 256-bit big-endian integers with a ≥ b.
fn sub256(a: &[u8; 32], b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = 0;
        if d < 0 {
            d += 256;
            borrow = 1;
        }
        out[i] = u8::try_from(d).unwrap();
    }
    assert_eq!(borrow, 0);
    out
}

fn es256_token() -> (String, Vec<u8>) {
    let t = forge(es256(), &header(es256()), &claims());
    let sig = b64::decode(parts(&t).2).unwrap();
    assert_eq!(sig.len(), 64);
    (t, sig)
}

#[test]
fn j15_der_encoded_es256_signature_is_rejected() {
    let keys = set(&[es256()]);
    let (t, sig) = es256_token();
    let der = to_der(&sig);
    assert_eq!(
        verify(&with_signature(&t, &der), &keys).unwrap_err(),
        JoseError::BadSignature
    );
}

#[test]
fn j15_es256_signature_of_wrong_length_is_rejected() {
    let keys = set(&[es256()]);
    let (t, sig) = es256_token();
    let short = &sig[..63];
    let long = [sig.as_slice(), &[0]].concat();
    let long_front = [&[0], sig.as_slice()].concat();
    for (what, bad) in [
        ("63 bytes", short),
        ("65 bytes", long.as_slice()),
        ("65 bytes, leading zero", long_front.as_slice()),
    ] {
        assert_eq!(
            verify(&with_signature(&t, bad), &keys).unwrap_err(),
            JoseError::BadSignature,
            "{what}"
        );
    }
    // 0 bytes is an empty segment.
    assert_eq!(
        verify(&with_signature(&t, &[]), &keys).unwrap_err(),
        JoseError::NotCompactJws
    );
}

#[test]
fn j15_zero_r_and_s_is_rejected() {
    // CVE-2022-21449 ("psychic signatures").
    let keys = set(&[es256()]);
    let (t, _) = es256_token();
    assert_eq!(
        verify(&with_signature(&t, &[0u8; 64]), &keys).unwrap_err(),
        JoseError::BadSignature
    );
}

#[test]
fn j15_r_or_s_not_below_the_group_order_is_rejected() {
    let keys = set(&[es256()]);
    let (t, sig) = es256_token();
    let (r, s) = (&sig[..32], &sig[32..]);
    let all_ones = [0xffu8; 32];
    for (what, bad) in [
        ("r = n", [P256_N.as_slice(), s].concat()),
        ("s = n", [r, P256_N.as_slice()].concat()),
        ("r = s = n", [P256_N, P256_N].concat()),
        ("r = 2^256 - 1", [all_ones.as_slice(), s].concat()),
        ("s = 2^256 - 1", [r, all_ones.as_slice()].concat()),
        ("s = 0", [r, [0u8; 32].as_slice()].concat()),
    ] {
        assert_eq!(
            verify(&with_signature(&t, &bad), &keys).unwrap_err(),
            JoseError::BadSignature,
            "{what}"
        );
    }
}

/// P-384 group order n (SEC 2, FIPS 186-4 D.1.2.4).
const P384_N: [u8; 48] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf,
    0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73,
];

#[test]
fn j15_malformed_es384_signatures_are_rejected() {
    // The J15 cases for ES384 (ring ECDSA_P384_SHA384_FIXED: exactly 96 bytes r‖s).
    let keys = set(&[es384()]);
    let t = forge(es384(), &header(es384()), &claims());
    assert!(verify(&t, &keys).is_ok());
    let sig = b64::decode(parts(&t).2).unwrap();
    assert_eq!(sig.len(), 96);
    let (r, s) = (&sig[..48], &sig[48..]);
    let zero = [0u8; 48];
    let all_ones = [0xffu8; 48];
    for (what, bad) in [
        ("DER", to_der(&sig)),
        ("95 bytes", sig[..95].to_vec()),
        ("97 bytes", [sig.as_slice(), &[0]].concat()),
        ("64 bytes (an ES256 length)", sig[..64].to_vec()),
        ("r = s = 0", [zero, zero].concat()),
        ("s = 0", [r, zero.as_slice()].concat()),
        ("r = n", [P384_N.as_slice(), s].concat()),
        ("s = n", [r, P384_N.as_slice()].concat()),
        ("r = 2^384 - 1", [all_ones.as_slice(), s].concat()),
    ] {
        assert_eq!(
            verify(&with_signature(&t, &bad), &keys).unwrap_err(),
            JoseError::BadSignature,
            "{what}"
        );
    }
}

#[test]
fn j16_high_s_variant_still_verifies_and_keeps_the_jti() {
    // ECDSA signatures are malleable: (r, n - s) is valid too, and ring does not normalise
    // s. The malleated token is a different string with the same claims, so revocation and
    // replay must be keyed on jti, never on the token bytes (tested at the token layer).
    let keys = set(&[es256()]);
    let (t, sig) = es256_token();
    let s: [u8; 32] = sig[32..].try_into().unwrap();
    let neg_s = sub256(&P256_N, &s);
    let malleated = with_signature(&t, &[&sig[..32], neg_s.as_slice()].concat());
    assert_ne!(malleated, t);
    let original = verify(&t, &keys).unwrap();
    let twin = verify(&malleated, &keys).unwrap();
    assert_eq!(
        twin.required_string("jti").unwrap(),
        original.required_string("jti").unwrap()
    );
    assert_eq!(twin, original);
}

#[test]
fn j16_eddsa_signature_is_not_malleable() {
    // RFC 8032 §5.1.7: S must be below the group order L. (R, S + L) is the Ed25519
    // counterpart of ECDSA's (r, n - s) and must be refused.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let keys = set(&[eddsa()]);
    let t = forge(eddsa(), &header(eddsa()), &claims());
    assert!(verify(&t, &keys).is_ok());
    let mut sig = b64::decode(parts(&t).2).unwrap();
    let mut carry = 0u16;
    for (i, l) in L.iter().enumerate() {
        let v = u16::from(sig[32 + i]) + u16::from(*l) + carry;
        sig[32 + i] = (v & 0xff) as u8;
        carry = v >> 8;
    }
    assert_eq!(carry, 0);
    assert_eq!(
        verify(&with_signature(&t, &sig), &keys).unwrap_err(),
        JoseError::BadSignature
    );
}

// ------------------------------------------------------------------------------------------
// J17 weak or foreign keys
// ------------------------------------------------------------------------------------------

fn jwk(v: Value) -> Result<VerifyingKey, KeyError> {
    parse_jwk(v.to_string().as_bytes(), &JwkSetOptions::default())
}

/// An odd modulus of exactly `bits` bits (not a real RSA modulus: size checks come first).
fn modulus_of_bits(bits: usize) -> Vec<u8> {
    let mut n = vec![0xffu8; bits.div_ceil(8)];
    n[0] >>= n.len() * 8 - bits;
    n
}

#[test]
fn j17_rsa_key_under_2048_bits_is_refused() {
    for bits in [1024, 2047] {
        let n = b64::encode(modulus_of_bits(bits));
        assert_eq!(
            jwk(json!({"kty": "RSA", "alg": "PS256", "n": n, "e": "AQAB"})).unwrap_err(),
            KeyError::RsaTooSmall,
            "{bits} bits"
        );
        assert_eq!(
            VerifyingKey::from_rsa(
                Algorithm::PS256,
                "k".into(),
                &modulus_of_bits(bits),
                &[1, 0, 1]
            )
            .unwrap_err(),
            KeyError::RsaTooSmall
        );
    }
    let n = b64::encode(modulus_of_bits(2048));
    assert!(jwk(json!({"kty": "RSA", "alg": "PS256", "n": n, "e": "AQAB"})).is_ok());
}

#[test]
fn j17_rsa_1024_private_key_is_refused_for_signing() {
    let pem = include_str!("data/jose/openssl_rsa1024_pkcs8.pem");
    for alg in [Algorithm::PS256, Algorithm::RS256] {
        assert_eq!(
            SigningKey::from_pkcs8_pem(alg, pem).unwrap_err(),
            KeyError::Rejected
        );
    }
}

#[test]
fn j17_rsa_exponent_ring_cannot_use_is_refused_at_registration() {
    // ring verifies with odd exponents 3..=2^33-1 only; a larger one must be refused when
    // the key is registered, not discovered as a BadSignature on every token.
    let n = b64::encode(modulus_of_bits(2048));
    for e in [
        vec![0x02, 0x00, 0x00, 0x00, 0x01], // 2^33 + 1
        vec![0xff, 0xff, 0xff, 0xff, 0xff], // 2^40 - 1
        vec![0x01],                         // 1
        vec![0x01, 0x00, 0x00],             // even
    ] {
        assert_eq!(
            jwk(json!({"kty": "RSA", "alg": "PS256", "n": n, "e": b64::encode(&e)})).unwrap_err(),
            KeyError::InvalidJwk("RSA exponent"),
            "e = {e:02x?}"
        );
    }
    // 2^33 - 1 is the largest exponent ring accepts.
    let e = b64::encode([0x01, 0xff, 0xff, 0xff, 0xff]);
    assert!(jwk(json!({"kty": "RSA", "alg": "PS256", "n": n, "e": e})).is_ok());
}

#[test]
fn j17_ec_curve_other_than_p256_or_p384_is_refused() {
    // NOTE: J17 says "EC curve other than P-256"; P-384 is the one deliberate exception,
    // for SMART's ES384 (SPECS.md b.2 item 10), and only for ES384
    // (j17_p384_is_accepted_only_for_es384). Everything else stays refused.
    for (crv, len) in [
        (json!("P-521"), 66),
        (json!("secp256k1"), 32),
        (json!("brainpoolP384r1"), 48),
        (json!("p-256"), 32),
        (json!("p-384"), 48),
        (json!("P-384 "), 48),
        (json!("P384"), 48),
        (json!(null), 32),
    ] {
        let x = b64::encode(vec![7u8; len]);
        let mut k = json!({"kty": "EC", "x": x, "y": x});
        if !crv.is_null() {
            k["crv"] = crv.clone();
        }
        assert_eq!(jwk(k).unwrap_err(), KeyError::UnsupportedCurve, "crv {crv}");
    }
    let pem = include_str!("data/jose/openssl_p384_pkcs8.pem");
    assert_eq!(
        SigningKey::from_pkcs8_pem(Algorithm::ES256, pem).unwrap_err(),
        KeyError::Rejected
    );
}

#[test]
fn j17_p521_jwk_is_refused_whatever_its_alg() {
    // A well-formed P-521 public JWK (66-byte coordinates). ES512 is not implemented, and
    // claiming ES384 or ES256 does not make the curve acceptable.
    let c = b64::encode([1u8; 66]);
    let p521 = json!({"kty": "EC", "crv": "P-521", "x": c, "y": c, "kid": "p521"});
    assert_eq!(jwk(p521.clone()).unwrap_err(), KeyError::UnsupportedCurve);
    assert_eq!(
        jwk(merge(p521.clone(), json!({"alg": "ES512"}))).unwrap_err(),
        KeyError::UnsupportedAlgorithm
    );
    for alg in ["ES384", "ES256"] {
        assert_eq!(
            jwk(merge(p521.clone(), json!({"alg": alg}))).unwrap_err(),
            KeyError::UnsupportedCurve,
            "{alg}"
        );
    }
    let doc = json!({"keys": [p521]}).to_string();
    assert_eq!(
        JwkSet::from_json(doc.as_bytes(), &JwkSetOptions::default()).unwrap_err(),
        KeyError::UnsupportedCurve
    );
}

#[test]
fn j17_p384_is_accepted_only_for_es384() {
    // SPECS.md b.2 item 10: a P-384 key is an ES384 key and nothing else; a P-256 key is
    // never an ES384 key. The JWK's alg must agree with its curve (alg/kty mismatch).
    let p384 = es384().verifying_key().to_jwk();
    assert_eq!(p384["crv"], "P-384");
    assert_eq!(p384["alg"], "ES384");
    let p384 = Value::Object(p384);
    assert_eq!(jwk(p384.clone()).unwrap(), *es384().verifying_key());
    assert_eq!(
        jwk(merge(p384.clone(), json!({"alg": null})))
            .unwrap()
            .algorithm(),
        Algorithm::ES384
    );
    for alg in ["ES256", "RS384", "PS256", "RS256", "EdDSA"] {
        assert_eq!(
            jwk(merge(p384.clone(), json!({"alg": alg}))).unwrap_err(),
            KeyError::AlgorithmMismatch,
            "P-384 with alg {alg}"
        );
    }
    let p256 = Value::Object(es256().verifying_key().to_jwk());
    assert_eq!(
        jwk(merge(p256.clone(), json!({"alg": "ES384"}))).unwrap_err(),
        KeyError::AlgorithmMismatch
    );
    // Strict coordinate lengths: 48 bytes for P-384, 32 for P-256, no more, no less.
    let c32 = b64::encode([7u8; 32]);
    let c48 = b64::encode([7u8; 48]);
    let c49 = b64::encode([7u8; 49]);
    for (crv, x, y) in [
        ("P-384", &c32, &c32),
        ("P-384", &c48, &c32),
        ("P-384", &c49, &c48),
        ("P-256", &c48, &c48),
    ] {
        assert_eq!(
            jwk(json!({"kty": "EC", "crv": crv, "x": x, "y": y})).unwrap_err(),
            KeyError::InvalidJwk("EC coordinate length"),
            "{crv} {x} {y}"
        );
    }
    // Raw points: the P-384 constructor takes 97 bytes, the P-256 one 65.
    let point = es384().verifying_key().public_key_bytes();
    assert_eq!(point.len(), 97);
    assert!(VerifyingKey::from_ec_p384_point("k".into(), point).is_ok());
    assert_eq!(
        VerifyingKey::from_ec_point("k".into(), point).unwrap_err(),
        KeyError::InvalidJwk("EC point")
    );
    assert_eq!(
        VerifyingKey::from_ec_p384_point("k".into(), es256().verifying_key().public_key_bytes())
            .unwrap_err(),
        KeyError::InvalidJwk("EC point")
    );
    // PKCS#8: a P-384 key loads for ES384 only, a P-256 key never does.
    let pem = include_str!("data/jose/openssl_p384_pkcs8.pem");
    assert!(SigningKey::from_pkcs8_pem(Algorithm::ES384, pem).is_ok());
    assert_eq!(
        SigningKey::from_pkcs8_pem(
            Algorithm::ES384,
            include_str!("data/jose/openssl_p256_pkcs8.pem")
        )
        .unwrap_err(),
        KeyError::Rejected
    );
}

#[test]
fn j17_p384_point_off_the_curve_never_verifies() {
    for (x, y) in [([0u8; 48], [0u8; 48]), ([1u8; 48], [1u8; 48])] {
        let k = json!({"kty": "EC", "crv": "P-384", "x": b64::encode(x), "y": b64::encode(y), "kid": "bogus"});
        match jwk(k) {
            Err(e) => assert!(
                matches!(e, KeyError::InvalidJwk(_) | KeyError::Rejected),
                "{e:?}"
            ),
            Ok(bogus) => {
                let t = forge(
                    es384(),
                    &header_with(es384(), json!({"kid": "bogus"})),
                    &claims(),
                );
                let keys = JwkSet::new(vec![bogus]).unwrap();
                assert_eq!(verify(&t, &keys).unwrap_err(), JoseError::BadSignature);
            }
        }
    }
}

#[test]
fn j17_ec_point_off_the_curve_never_verifies() {
    // (0, 0) and (1, 1) are not on P-256. Whether the JWK is refused when it is loaded or
    // only when it is used, no signature may ever verify under it.
    for (x, y) in [([0u8; 32], [0u8; 32]), ([1u8; 32], [1u8; 32])] {
        let k = json!({"kty": "EC", "crv": "P-256", "x": b64::encode(x), "y": b64::encode(y), "kid": "bogus"});
        match jwk(k) {
            Err(e) => assert!(
                matches!(e, KeyError::InvalidJwk(_) | KeyError::Rejected),
                "{e:?}"
            ),
            Ok(bogus) => {
                let t = forge(
                    es256(),
                    &header_with(es256(), json!({"kid": "bogus"})),
                    &claims(),
                );
                let keys = JwkSet::new(vec![bogus]).unwrap();
                assert_eq!(verify(&t, &keys).unwrap_err(), JoseError::BadSignature);
            }
        }
    }
}

#[test]
fn j17_small_order_and_non_canonical_ed25519_keys_are_weak() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut identity_neg = identity;
    identity_neg[31] |= 0x80;
    let mut p_minus_1 = [0xffu8; 32];
    p_minus_1[0] = 0xec;
    p_minus_1[31] = 0x7f;
    let mut p_plus_2 = p_minus_1;
    p_plus_2[0] = 0xef; // y = p + 2, not reduced
    let order_8: [u8; 32] = [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ];
    for (what, x) in [
        ("all zero", [0u8; 32]),
        ("identity 01 00..", identity),
        ("identity, sign bit set", identity_neg),
        ("order 2 (p - 1)", p_minus_1),
        ("order 8", order_8),
        ("y = p + 2", p_plus_2),
    ] {
        assert_eq!(
            jwk(json!({"kty": "OKP", "crv": "Ed25519", "x": b64::encode(x)})).unwrap_err(),
            KeyError::WeakKey,
            "{what}"
        );
        assert_eq!(
            VerifyingKey::from_ed25519("k".into(), x).unwrap_err(),
            KeyError::WeakKey,
            "{what}"
        );
    }
}

#[test]
fn j17_okp_curves_other_than_ed25519_are_refused() {
    for (crv, len) in [("X25519", 32), ("Ed448", 57), ("X448", 56), ("ed25519", 32)] {
        assert_eq!(
            jwk(json!({"kty": "OKP", "crv": crv, "x": b64::encode(vec![9u8; len])})).unwrap_err(),
            KeyError::UnsupportedCurve,
            "crv {crv}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// J18 size limits
// ------------------------------------------------------------------------------------------

/// An ES256 token of exactly `len` characters with the given `typ`.
fn token_of_len(key: &SigningKey, typ: &str, aud: &str, len: usize) -> String {
    assert_eq!(key.algorithm(), Algorithm::ES256, "fixed 86-char signature");
    for hpad in 0..8 {
        let h = header_with(key, json!({"typ": typ, "x": "h".repeat(hpad)})).to_string();
        let h_len = b64::encode(&h).len();
        let Some(room) = len.checked_sub(h_len + 2 + 86) else {
            continue;
        };
        // Payload sizes around the target; base64url length of L bytes is ceil(4L/3).
        let base = claims_with(json!({"aud": aud, "x": ""})).to_string().len();
        for extra in (room * 3 / 4).saturating_sub(base + 4)..=(room * 3 / 4) {
            let p = claims_with(json!({"aud": aud, "x": "p".repeat(extra)})).to_string();
            if b64::encode(&p).len() == room {
                let t = forge_raw(key, h.as_bytes(), p.as_bytes());
                assert_eq!(t.len(), len);
                return t;
            }
        }
    }
    panic!("no token of length {len}");
}

#[test]
fn j18_access_token_over_8_kib_is_too_large() {
    let keys = set(&[es256()]);
    let at_limit = token_of_len(es256(), "at+jwt", AUD, ACCESS_TOKEN_MAX_LEN);
    assert!(verify(&at_limit, &keys).is_ok());
    let over = token_of_len(es256(), "at+jwt", AUD, ACCESS_TOKEN_MAX_LEN + 1);
    assert_eq!(verify(&over, &keys).unwrap_err(), JoseError::TooLarge);
}

#[test]
fn j18_size_is_checked_before_any_decoding() {
    let keys = set(&[es256()]);
    // Not base64url, not three parts: only the size can be reported.
    for junk in [
        "!".repeat(ACCESS_TOKEN_MAX_LEN + 1),
        format!(
            "{}.{}.{}",
            "*".repeat(4000),
            "*".repeat(4000),
            "*".repeat(200)
        ),
    ] {
        let r = CountingResolver::new(&keys);
        assert_eq!(verify(&junk, &r).unwrap_err(), JoseError::TooLarge);
        assert_eq!(r.lookups.get(), 0);
    }
}

#[test]
fn j18_request_object_limit_is_64_kib() {
    let keys = set(&[es256()]);
    let v = request_object_rules();
    let big = token_of_len(es256(), "oauth-authz-req+jwt", ISS, 40 * 1024);
    assert_eq!(
        verify_with(&big, &keys, &access_token_rules()).unwrap_err(),
        JoseError::TooLarge
    );
    assert!(verify_with(&big, &keys, &v).is_ok());
    let at_limit = token_of_len(es256(), "oauth-authz-req+jwt", ISS, REQUEST_OBJECT_MAX_LEN);
    assert!(verify_with(&at_limit, &keys, &v).is_ok());
    let over = token_of_len(
        es256(),
        "oauth-authz-req+jwt",
        ISS,
        REQUEST_OBJECT_MAX_LEN + 1,
    );
    assert_eq!(
        verify_with(&over, &keys, &v).unwrap_err(),
        JoseError::TooLarge
    );
    let mib = "a".repeat(1 << 20);
    assert_eq!(
        verify_with(&mib, &keys, &v).unwrap_err(),
        JoseError::TooLarge
    );
}

#[test]
fn j18_jwks_over_the_size_or_key_count_limit_is_too_large() {
    let one = Value::Object(es256().verifying_key().to_jwk());
    let many: Vec<Value> = (0..=MAX_JWKS_KEYS)
        .map(|i| merge(one.clone(), json!({"kid": format!("k{i}")})))
        .collect();
    let doc = json!({ "keys": many }).to_string();
    assert!(doc.len() <= MAX_JWKS_LEN);
    assert_eq!(
        JwkSet::from_json(doc.as_bytes(), &JwkSetOptions::default()).unwrap_err(),
        KeyError::TooLarge
    );
    let padded = merge(one, json!({"x5u": "h".repeat(MAX_JWKS_LEN)}));
    let doc = json!({ "keys": [padded] }).to_string();
    assert_eq!(
        JwkSet::from_json(doc.as_bytes(), &JwkSetOptions::default()).unwrap_err(),
        KeyError::TooLarge
    );
    assert_eq!(
        parse_jwk(doc.as_bytes(), &JwkSetOptions::default()).unwrap_err(),
        KeyError::TooLarge
    );
}

// ------------------------------------------------------------------------------------------
// J19 deep nesting
// ------------------------------------------------------------------------------------------

#[test]
fn j19_claim_nested_10000_deep_is_too_deep_without_stack_overflow() {
    // Run on a thread with a small stack: parsing must not recurse with the input's depth.
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(|| {
            let keys = set(&[es256()]);
            let v = request_object_rules();
            let mut base = claims_with(json!({"aud": ISS})).to_string();
            base.pop(); // drop the closing brace
            let arrays = format!(
                r#"{base},"a":{}1{}}}"#,
                "[".repeat(10_000),
                "]".repeat(10_000)
            );
            let objects = format!(
                r#"{base},"a":{}1{}}}"#,
                r#"{"a":"#.repeat(5_000),
                "}".repeat(5_000)
            );
            let h = header_with(es256(), json!({"typ": null})).to_string();
            for p in [arrays, objects] {
                let t = forge_raw(es256(), h.as_bytes(), p.as_bytes());
                assert!(t.len() <= REQUEST_OBJECT_MAX_LEN);
                assert_eq!(
                    verify_with(&t, &keys, &v).unwrap_err(),
                    JoseError::Json(JsonError::TooDeep)
                );
            }
            // The header is parsed with the same bound.
            let deep_h = format!(
                r#"{{"alg":"ES256","kid":"{}","x":{}0{}}}"#,
                es256().kid(),
                "[".repeat(10_000),
                "]".repeat(10_000)
            );
            let t = forge_raw(es256(), deep_h.as_bytes(), claims().to_string().as_bytes());
            assert_eq!(
                parse_compact(&t, REQUEST_OBJECT_MAX_LEN).unwrap_err(),
                JoseError::Json(JsonError::TooDeep)
            );
        })
        .unwrap()
        .join()
        .unwrap();
}

// ------------------------------------------------------------------------------------------
// J20-J24 time claims
// ------------------------------------------------------------------------------------------

/// A payload with the standard claims and `name` set to the raw JSON literal `literal`.
fn claims_with_literal(name: &str, literal: &str) -> String {
    let mut base = claims_with(json!({ name: null })).to_string();
    base.pop();
    format!(r#"{base},"{name}":{literal}}}"#)
}

#[test]
fn j20_time_claims_of_the_wrong_type_are_invalid() {
    let keys = set(&[es256()]);
    let h = header(es256()).to_string();
    for name in ["exp", "nbf", "iat"] {
        for literal in [
            r#""99999999999""#,
            r#""1700000300""#,
            "1.7e9",
            "1700000300.5",
            "-1",
            "-1700000000",
            "null",
            "true",
            "false",
            "[1700000300]",
            r#"{"t":1700000300}"#,
            "9223372036854775808",  // i64::MAX + 1
            "18446744073709551616", // u64::MAX + 1 (parsed as a float)
            "1e20",
        ] {
            let t = forge_raw(
                es256(),
                h.as_bytes(),
                claims_with_literal(name, literal).as_bytes(),
            );
            assert_eq!(
                verify(&t, &keys).unwrap_err(),
                JoseError::InvalidClaim(match name {
                    "exp" => "exp",
                    "nbf" => "nbf",
                    _ => "iat",
                }),
                "{name}: {literal}"
            );
        }
    }
}

#[test]
fn j20_out_of_range_float_literal_is_a_syntax_error() {
    let keys = set(&[es256()]);
    let h = header(es256()).to_string();
    for name in ["exp", "nbf", "iat"] {
        for literal in ["1e400", "-1e400"] {
            let t = forge_raw(
                es256(),
                h.as_bytes(),
                claims_with_literal(name, literal).as_bytes(),
            );
            assert_eq!(
                verify(&t, &keys).unwrap_err(),
                JoseError::Json(JsonError::Syntax),
                "{name}: {literal}"
            );
        }
    }
}

/// Pins the NOTE in `jwt.rs`: RFC 7519 allows non-integer NumericDates; heartgate refuses
/// them, integral or not.
#[test]
fn j20_integral_float_is_refused() {
    let keys = set(&[es256()]);
    let h = header(es256()).to_string();
    let t = forge_raw(
        es256(),
        h.as_bytes(),
        claims_with_literal("exp", &format!("{}.0", NOW + 300)).as_bytes(),
    );
    assert_eq!(
        verify(&t, &keys).unwrap_err(),
        JoseError::InvalidClaim("exp")
    );
}

#[test]
fn j21_missing_exp_is_rejected() {
    let keys = set(&[es256()]);
    let t = token_with_claims(es256(), json!({"exp": null}));
    assert_eq!(
        verify(&t, &keys).unwrap_err(),
        JoseError::MissingClaim("exp")
    );
    // Also under the request-object and an "anything goes" audience rule.
    let t = forge(
        es256(),
        &header_with(es256(), json!({"typ": "oauth-authz-req+jwt"})),
        &claims_with(json!({"exp": null, "aud": ISS})),
    );
    assert_eq!(
        verify_with(&t, &set(&[es256()]), &request_object_rules()).unwrap_err(),
        JoseError::MissingClaim("exp")
    );
}

/// THREATS J22: accepted at the boundary, refused one second past it.
#[test]
fn j22_exp_boundary_with_default_leeway() {
    let keys = set(&[es256()]);
    let leeway = i64::from(DEFAULT_LEEWAY);
    let at = token_with_claims(es256(), json!({"exp": NOW - leeway, "iat": NOW - 60}));
    assert!(verify(&at, &keys).is_ok(), "exp = now - leeway");
    let past = token_with_claims(es256(), json!({"exp": NOW - leeway - 1, "iat": NOW - 60}));
    assert_eq!(
        verify(&past, &keys).unwrap_err(),
        JoseError::Expired,
        "exp = now - leeway - 1"
    );
    let one_ago = token_with_claims(es256(), json!({"exp": NOW - 1, "iat": NOW - 60}));
    assert!(
        verify(&one_ago, &keys).is_ok(),
        "exp = now - 1 is inside the leeway"
    );
    let strict = access_token_rules().leeway(0);
    assert_eq!(
        verify_with(&one_ago, &keys, &strict).unwrap_err(),
        JoseError::Expired,
        "exp = now - 1 without leeway"
    );
}

#[test]
fn j22_nbf_boundary_with_default_leeway() {
    let keys = set(&[es256()]);
    let leeway = i64::from(DEFAULT_LEEWAY);
    let at = token_with_claims(es256(), json!({"nbf": NOW + leeway}));
    assert!(verify(&at, &keys).is_ok(), "nbf = now + leeway");
    let future = token_with_claims(es256(), json!({"nbf": NOW + leeway + 1}));
    assert_eq!(verify(&future, &keys).unwrap_err(), JoseError::NotYetValid);
}

#[test]
fn j22_iat_boundary_with_default_leeway() {
    let keys = set(&[es256()]);
    let leeway = i64::from(DEFAULT_LEEWAY);
    let at = token_with_claims(es256(), json!({"iat": NOW + leeway}));
    assert!(verify(&at, &keys).is_ok(), "iat = now + leeway");
    let future = token_with_claims(es256(), json!({"iat": NOW + leeway + 1}));
    assert_eq!(
        verify(&future, &keys).unwrap_err(),
        JoseError::IssuedInFuture
    );
}

#[test]
fn j22_configured_leeway_is_capped() {
    let keys = set(&[es256()]);
    let generous = access_token_rules().leeway(3600);
    assert_eq!(generous.leeway, MAX_LEEWAY);
    let max = i64::from(MAX_LEEWAY);
    let ok = token_with_claims(es256(), json!({"exp": NOW - max, "iat": NOW - 600}));
    assert!(verify_with(&ok, &keys, &generous).is_ok());
    let late = token_with_claims(es256(), json!({"exp": NOW - max - 1, "iat": NOW - 600}));
    assert_eq!(
        verify_with(&late, &keys, &generous).unwrap_err(),
        JoseError::Expired
    );
    // A policy built by hand with a huge leeway is capped all the same.
    let mut by_hand = access_token_rules();
    by_hand.leeway = u32::MAX;
    assert_eq!(
        verify_with(&late, &keys, &by_hand).unwrap_err(),
        JoseError::Expired
    );
}

#[test]
fn j23_exp_at_i64_max_or_u64_max_is_invalid_without_panic() {
    let keys = set(&[es256()]);
    let h = header(es256()).to_string();
    for literal in [
        i64::MAX.to_string(),
        u64::MAX.to_string(),
        (MAX_NUMERIC_DATE + 1).to_string(),
    ] {
        let t = forge_raw(
            es256(),
            h.as_bytes(),
            claims_with_literal("exp", &literal).as_bytes(),
        );
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::InvalidClaim("exp"),
            "exp = {literal}"
        );
    }
    let latest = token_with_claims(es256(), json!({"exp": MAX_NUMERIC_DATE}));
    assert!(verify(&latest, &keys).is_ok());
}

#[test]
fn j23_extreme_clock_readings_do_not_panic() {
    // A faulty clock is not a reason to panic (S10). Lifetime is measured from `now` when
    // there is no iat, so `exp - now` must not overflow for a clock far in the past.
    let v = Validation::new(
        AlgorithmSet::ALL,
        TypRule::OptionalOneOf(&[]),
        AudienceRule::MustBeAbsent,
    )
    .max_lifetime(300);
    let no_iat = Claims::new(json!({"exp": NOW}).as_object().unwrap().clone());
    let full = Claims::new(
        json!({"exp": MAX_NUMERIC_DATE, "nbf": 0, "iat": 0})
            .as_object()
            .unwrap()
            .clone(),
    );
    assert_eq!(
        validate_claims(&no_iat, &v, UnixTime(i64::MIN)),
        Err(JoseError::LifetimeTooLong)
    );
    assert_eq!(
        validate_claims(&no_iat, &v, UnixTime(i64::MAX)),
        Err(JoseError::Expired)
    );
    assert_eq!(
        validate_claims(&full, &v, UnixTime(i64::MAX)),
        Err(JoseError::Expired)
    );
    assert_eq!(
        validate_claims(&full, &v, UnixTime(i64::MIN)),
        Err(JoseError::NotYetValid)
    );
}

#[test]
fn j24_assertion_valid_for_48_hours_is_refused_under_a_5_minute_cap() {
    let keys = set(&[es256()]);
    let assertion = Validation::new(
        AlgorithmSet::FAPI2,
        TypRule::OptionalOneOf(&[]),
        AudienceRule::ExactString(ISS.into()),
    )
    .issuer("c1")
    .max_lifetime(300);
    let assertion_claims = |exp: i64| json!({"iss": "c1", "sub": "c1", "aud": ISS, "jti": "a", "iat": NOW, "exp": exp});
    let h = header_with(es256(), json!({"typ": null}));
    let long = forge(es256(), &h, &assertion_claims(NOW + 48 * 3600));
    assert_eq!(
        verify_with(&long, &keys, &assertion).unwrap_err(),
        JoseError::LifetimeTooLong
    );
    let ok = forge(es256(), &h, &assertion_claims(NOW + 300));
    assert!(verify_with(&ok, &keys, &assertion).is_ok());
}

#[test]
fn j24_request_object_valid_for_70_minutes_is_refused_under_60() {
    let keys = set(&[es256()]);
    let h = header_with(es256(), json!({"typ": "oauth-authz-req+jwt"}));
    let ro = |iat: Option<i64>, exp: i64| {
        let mut c = claims_with(json!({"aud": ISS, "exp": exp, "iat": null}));
        if let Some(iat) = iat {
            c["iat"] = json!(iat);
        }
        forge(es256(), &h, &c)
    };
    let v = request_object_rules();
    for (what, t, expected) in [
        (
            "70 min from iat",
            ro(Some(NOW), NOW + 70 * 60),
            Err(JoseError::LifetimeTooLong),
        ),
        ("60 min from iat", ro(Some(NOW), NOW + 60 * 60), Ok(())),
        (
            "70 min from now, no iat",
            ro(None, NOW + 70 * 60),
            Err(JoseError::LifetimeTooLong),
        ),
        ("60 min from now, no iat", ro(None, NOW + 60 * 60), Ok(())),
        // An old iat does not hide a long lifetime: exp - iat is what counts.
        (
            "iat an hour ago, exp in 5 min",
            ro(Some(NOW - 3600), NOW + 300),
            Err(JoseError::LifetimeTooLong),
        ),
    ] {
        assert_eq!(verify_with(&t, &keys, &v).map(|_| ()), expected, "{what}");
    }
}

// ------------------------------------------------------------------------------------------
// J25 typ
// ------------------------------------------------------------------------------------------

#[test]
fn j25_wrong_or_missing_typ_for_an_access_token_is_rejected() {
    let keys = set(&[es256()]);
    for typ in [
        json!("JWT"),
        json!("jwt"),
        json!("oauth-authz-req+jwt"),
        json!("application/jwt"),
        json!("at+jwt "),
        json!("application/"),
        json!("application/application/at+jwt"),
        json!("x-at+jwt"),
        json!(""),
        json!(null),
    ] {
        let t = forge(
            es256(),
            &header_with(es256(), json!({"typ": typ})),
            &claims(),
        );
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::WrongType,
            "typ {typ}"
        );
    }
}

#[test]
fn j25_typ_compares_case_insensitively_with_optional_application_prefix() {
    let keys = set(&[es256()]);
    for typ in [
        "at+jwt",
        "application/at+jwt",
        "AT+JWT",
        "Application/At+Jwt",
    ] {
        let t = forge(
            es256(),
            &header_with(es256(), json!({"typ": typ})),
            &claims(),
        );
        assert!(verify(&t, &keys).is_ok(), "typ {typ}");
    }
}

#[test]
fn j25_access_token_presented_as_request_object_is_rejected() {
    let keys = set(&[es256()]);
    let t = forge(es256(), &header(es256()), &claims_with(json!({"aud": ISS})));
    assert_eq!(
        verify_with(&t, &keys, &request_object_rules()).unwrap_err(),
        JoseError::WrongType
    );
}

#[test]
fn j25_typ_of_the_wrong_json_type_is_invalid() {
    let keys = set(&[es256()]);
    for typ in [json!(1), json!(["at+jwt"]), json!({"typ": "at+jwt"})] {
        let t = forge(
            es256(),
            &header_with(es256(), json!({"typ": typ})),
            &claims(),
        );
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::InvalidHeader("typ"),
            "typ {typ}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// J26 iss, J27 aud
// ------------------------------------------------------------------------------------------

#[test]
fn j26_issuer_variants_are_mismatches() {
    let keys = set(&[es256()]);
    for iss in [
        "https://as.example/",
        "https://as.example.evil",
        "https://as.exampl",
        "HTTPS://AS.EXAMPLE",
        "https://AS.example",
        "http://as.example",
        " https://as.example",
        "https://as.example/.",
        "https://as.example#",
        "",
    ] {
        let t = token_with_claims(es256(), json!({"iss": iss}));
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::IssuerMismatch,
            "iss {iss:?}"
        );
    }
}

#[test]
fn j26_issuer_of_the_wrong_type_or_missing_is_rejected() {
    let keys = set(&[es256()]);
    for iss in [json!([ISS]), json!(1), json!({"iss": ISS}), json!(true)] {
        let t = token_with_claims(es256(), json!({"iss": iss}));
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::InvalidClaim("iss"),
            "iss {iss}"
        );
    }
    let t = token_with_claims(es256(), json!({"iss": null}));
    assert_eq!(
        verify(&t, &keys).unwrap_err(),
        JoseError::MissingClaim("iss")
    );
}

#[test]
fn j27_audience_of_another_resource_server_is_a_mismatch() {
    let keys = set(&[es256()]);
    for aud in [
        json!("https://other-rs.example"),
        json!("https://rs.example/"),
        json!(["https://other-rs.example"]),
        json!([""]),
        json!(["https://RS.example"]),
    ] {
        let t = token_with_claims(es256(), json!({"aud": aud}));
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::AudienceMismatch,
            "aud {aud}"
        );
    }
    let ok = token_with_claims(es256(), json!({"aud": ["https://other-rs.example", AUD]}));
    assert!(verify(&ok, &keys).is_ok());
}

#[test]
fn j27_malformed_audience_is_invalid() {
    let keys = set(&[es256()]);
    for aud in [
        json!([]),
        json!([null]),
        json!([1, AUD]),
        json!([AUD, [AUD]]),
        json!(1),
        json!({}),
    ] {
        let t = token_with_claims(es256(), json!({"aud": aud}));
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::InvalidClaim("aud"),
            "aud {aud}"
        );
    }
    // `"aud": null` is present with the wrong type.
    let t = forge_raw(
        es256(),
        header(es256()).to_string().as_bytes(),
        claims_with_literal("aud", "null").as_bytes(),
    );
    assert_eq!(
        verify(&t, &keys).unwrap_err(),
        JoseError::InvalidClaim("aud")
    );
}

#[test]
fn j27_missing_audience_is_rejected() {
    let keys = set(&[es256()]);
    let t = token_with_claims(es256(), json!({"aud": null}));
    assert_eq!(
        verify(&t, &keys).unwrap_err(),
        JoseError::MissingClaim("aud")
    );
}

#[test]
fn j27_audience_where_none_is_expected_is_rejected() {
    let keys = set(&[es256()]);
    let mut v = access_token_rules();
    v.audience = AudienceRule::MustBeAbsent;
    let t = token_with_claims(es256(), json!({}));
    assert_eq!(
        verify_with(&t, &keys, &v).unwrap_err(),
        JoseError::UnexpectedAudience
    );
    let none = token_with_claims(es256(), json!({"aud": null}));
    assert!(verify_with(&none, &keys, &v).is_ok());
}

#[test]
fn j27_exact_string_audience_refuses_an_array() {
    let keys = set(&[es256()]);
    let mut v = access_token_rules();
    v.audience = AudienceRule::ExactString(AUD.into());
    let array = token_with_claims(es256(), json!({"aud": [AUD]}));
    assert_eq!(
        verify_with(&array, &keys, &v).unwrap_err(),
        JoseError::AudienceMismatch
    );
    let string = token_with_claims(es256(), json!({"aud": AUD}));
    assert!(verify_with(&string, &keys, &v).is_ok());
}

// ------------------------------------------------------------------------------------------
// J28 substitution, J29 nested / encrypted
// ------------------------------------------------------------------------------------------

#[test]
fn j28_token_signed_by_another_key_is_a_bad_signature() {
    let keys = set(&[es256(), es256_b()]);
    // Header names key B, signature is key A's.
    let t = forge(
        es256(),
        &header_with(es256(), json!({"kid": es256_b().kid()})),
        &claims(),
    );
    assert_eq!(verify(&t, &keys).unwrap_err(), JoseError::BadSignature);
    // Without a kid, against a set holding only the other key of that algorithm.
    let t = forge(
        es256(),
        &header_with(es256(), json!({"kid": null})),
        &claims(),
    );
    assert_eq!(
        verify(&t, &set(&[es256_b()])).unwrap_err(),
        JoseError::BadSignature
    );
}

#[test]
fn j28_id_token_presented_as_access_token_is_rejected() {
    let keys = set(&[es256()]);
    let id_token = forge(
        es256(),
        &header_with(es256(), json!({"typ": "JWT"})),
        &claims_with(json!({"aud": "c1", "nonce": "n"})),
    );
    assert_eq!(verify(&id_token, &keys).unwrap_err(), JoseError::WrongType);
}

#[test]
fn j29_nested_jwt_is_rejected() {
    let keys = set(&[es256()]);
    let inner = forge(es256(), &header(es256()), &claims());
    for cty in ["JWT", "jwt", "application/jwt"] {
        let t = forge_raw(
            es256(),
            header_with(es256(), json!({"cty": cty}))
                .to_string()
                .as_bytes(),
            inner.as_bytes(),
        );
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::NestedOrEncrypted,
            "cty {cty}"
        );
    }
}

#[test]
fn j29_encryption_header_parameters_are_rejected() {
    let keys = set(&[es256()]);
    for (name, value) in [("enc", "A256GCM"), ("zip", "DEF")] {
        let t = forge(
            es256(),
            &header_with(es256(), json!({ name: value })),
            &claims(),
        );
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::NestedOrEncrypted,
            "{name}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// J33 private or symmetric keys in a JWKS
// ------------------------------------------------------------------------------------------

const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

#[test]
fn j33_jwks_with_private_members_is_refused() {
    let ec = Value::Object(es256().verifying_key().to_jwk());
    let rsa = Value::Object(ps256().verifying_key().to_jwk());
    let ed = Value::Object(eddsa().verifying_key().to_jwk());
    for (base, member) in [
        (&ec, "d"),
        (&ed, "d"),
        (&rsa, "d"),
        (&rsa, "p"),
        (&rsa, "q"),
        (&rsa, "dp"),
        (&rsa, "dq"),
        (&rsa, "qi"),
        (&rsa, "oth"),
    ] {
        let key = merge(base.clone(), json!({ member: "AQAB" }));
        assert_eq!(
            jwk(key.clone()).unwrap_err(),
            KeyError::PrivateMembers,
            "{member}"
        );
        let doc = json!({"keys": [key]}).to_string();
        assert_eq!(
            JwkSet::from_json(doc.as_bytes(), &JwkSetOptions::default()).unwrap_err(),
            KeyError::PrivateMembers,
            "{member} in a set"
        );
    }
}

#[test]
fn j33_rfc_example_private_jwks_are_refused() {
    for doc in [
        include_str!("data/jose/rfc7515_a2_rs256.json"),
        include_str!("data/jose/rfc7515_a3_es256.json"),
    ] {
        let v: Value = serde_json::from_str(doc).unwrap();
        assert_eq!(jwk(v["jwk"].clone()).unwrap_err(), KeyError::PrivateMembers);
    }
}

#[test]
fn j33_symmetric_jwk_is_refused() {
    let oct = json!({"kty": "oct", "k": "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow", "alg": "HS256"});
    assert_eq!(jwk(oct.clone()).unwrap_err(), KeyError::Symmetric);
    let doc = json!({"keys": [Value::Object(es256().verifying_key().to_jwk()), oct]}).to_string();
    assert_eq!(
        JwkSet::from_json(doc.as_bytes(), &JwkSetOptions::default()).unwrap_err(),
        KeyError::Symmetric
    );
    // `k` on an asymmetric key type is a private member too.
    let ec_with_k = merge(
        Value::Object(es256().verifying_key().to_jwk()),
        json!({"k": "AQAB"}),
    );
    assert_eq!(jwk(ec_with_k).unwrap_err(), KeyError::PrivateMembers);
}

fn assert_public_only(doc: &str) {
    let v: Value = serde_json::from_str(doc).unwrap();
    let keys = v["keys"].as_array().unwrap();
    assert!(!keys.is_empty());
    for k in keys {
        let k = k.as_object().unwrap();
        for m in PRIVATE_MEMBERS {
            assert!(!k.contains_key(m), "published JWK has {m}: {doc}");
        }
        assert_ne!(k["kty"], "oct");
    }
    // And it reads back under our own strict rules.
    JwkSet::from_json(doc.as_bytes(), &JwkSetOptions::default()).unwrap();
}

#[test]
fn j33_our_published_jwks_never_contains_private_members() {
    let ring = KeyRing::with_published(
        SigningKey::generate(Algorithm::ES256).unwrap(),
        vec![
            eddsa().verifying_key().clone(),
            ps256().verifying_key().clone(),
            rs256().verifying_key().clone(),
        ],
    )
    .unwrap();
    let state = ring.snapshot();
    assert_eq!(state.jwks().keys().len(), 4);
    assert_public_only(state.jwks_json());
    assert_public_only(&state.jwks().to_json());
    for key in [es256(), eddsa(), ps256(), rs256()] {
        assert_public_only(&set(&[key]).to_json());
    }
    // After rotation too.
    ring.rotate(SigningKey::generate(Algorithm::EdDSA).unwrap())
        .unwrap();
    assert_public_only(ring.load().jwks_json());
}

// ------------------------------------------------------------------------------------------
// J34 duplicate or ambiguous keys
// ------------------------------------------------------------------------------------------

#[test]
fn j34_duplicate_kid_is_refused() {
    let a = merge(
        Value::Object(es256().verifying_key().to_jwk()),
        json!({"kid": "same"}),
    );
    let b = merge(
        Value::Object(es256_b().verifying_key().to_jwk()),
        json!({"kid": "same"}),
    );
    let doc = json!({"keys": [a, b]}).to_string();
    assert_eq!(
        JwkSet::from_json(doc.as_bytes(), &JwkSetOptions::default()).unwrap_err(),
        KeyError::DuplicateKid
    );
    let k1 = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("same")
        .unwrap();
    let k2 = SigningKey::generate(Algorithm::EdDSA)
        .unwrap()
        .with_kid("same")
        .unwrap();
    assert_eq!(
        JwkSet::new(vec![k1.verifying_key().clone(), k2.verifying_key().clone()]).unwrap_err(),
        KeyError::DuplicateKid
    );
    let k3 = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("same")
        .unwrap();
    let ring = KeyRing::new(SigningKey::generate(Algorithm::ES256).unwrap());
    assert_eq!(
        KeyRing::with_published(
            k1,
            vec![k2.verifying_key().clone(), k3.verifying_key().clone()]
        )
        .unwrap_err(),
        KeyError::DuplicateKid
    );
    ring.publish(k2.verifying_key().clone()).unwrap();
    assert_eq!(
        ring.publish(k3.verifying_key().clone()).unwrap_err(),
        KeyError::DuplicateKid
    );
}

#[test]
fn j34_rsa_jwk_without_alg_is_ambiguous_without_a_default() {
    let mut k = ps256().verifying_key().to_jwk();
    k.remove("alg");
    let k = Value::Object(k);
    assert_eq!(jwk(k.clone()).unwrap_err(), KeyError::AmbiguousAlgorithm);
    let doc = json!({"keys": [k.clone()]}).to_string();
    assert_eq!(
        JwkSet::from_json(doc.as_bytes(), &JwkSetOptions::default()).unwrap_err(),
        KeyError::AmbiguousAlgorithm
    );
    // With a configured default the key is bound to that algorithm, and only that one.
    let opts = JwkSetOptions {
        rsa_alg_when_absent: Some(Algorithm::PS256),
    };
    let key = parse_jwk(k.to_string().as_bytes(), &opts).unwrap();
    assert_eq!(key.algorithm(), Algorithm::PS256);
    let jwks = JwkSet::from_json(doc.as_bytes(), &opts).unwrap();
    let t = forge(
        rs256(),
        &header_with(rs256(), json!({"kid": ps256().kid()})),
        &claims(),
    );
    assert_eq!(
        verify(&t, &jwks).unwrap_err(),
        JoseError::AlgorithmKeyMismatch
    );
}

#[test]
fn j34_key_not_for_signatures_is_never_used_to_verify() {
    let base = Value::Object(es256().verifying_key().to_jwk());
    for (what, k) in [
        ("use enc", merge(base.clone(), json!({"use": "enc"}))),
        (
            "key_ops without verify",
            merge(base.clone(), json!({"key_ops": ["encrypt"]})),
        ),
        ("key_ops empty", merge(base.clone(), json!({"key_ops": []}))),
    ] {
        assert_eq!(
            jwk(k.clone()).unwrap_err(),
            KeyError::NotForSignatures,
            "{what}"
        );
        // In a set it is skipped, so a token naming it finds no key.
        let doc = json!({"keys": [k]}).to_string();
        let jwks = JwkSet::from_json(doc.as_bytes(), &JwkSetOptions::default()).unwrap();
        assert!(jwks.is_empty(), "{what}");
        let t = forge(es256(), &header(es256()), &claims());
        assert_eq!(
            verify(&t, &jwks).unwrap_err(),
            JoseError::UnknownKey,
            "{what}"
        );
    }
}

#[test]
fn j34_two_keys_of_the_algorithm_and_no_kid_is_ambiguous() {
    let t = forge(
        es256(),
        &header_with(es256(), json!({"kid": null})),
        &claims(),
    );
    assert_eq!(
        verify(&t, &set(&[es256(), es256_b()])).unwrap_err(),
        JoseError::AmbiguousKey
    );
    // One key of that algorithm (others of other algorithms) is not ambiguous.
    assert!(verify(&t, &set(&[es256(), eddsa()])).is_ok());
}

// ------------------------------------------------------------------------------------------
// J35 strings
// ------------------------------------------------------------------------------------------

#[test]
fn j35_lone_surrogate_in_a_claim_is_rejected() {
    let keys = set(&[es256()]);
    let h = header(es256()).to_string();
    for literal in [
        r#""\ud800""#,
        r#""\udfff""#,
        r#""a\udc00\ud800b""#,
        r#""\ud800x""#,
    ] {
        let t = forge_raw(
            es256(),
            h.as_bytes(),
            claims_with_literal("name", literal).as_bytes(),
        );
        assert_eq!(
            verify(&t, &keys).unwrap_err(),
            JoseError::Json(JsonError::Syntax),
            "{literal}"
        );
    }
    // A lone surrogate in a member name, too.
    let mut p = claims().to_string();
    p.pop();
    p.push_str(r#","\ud800":1}"#);
    let t = forge_raw(es256(), h.as_bytes(), p.as_bytes());
    assert_eq!(
        verify(&t, &keys).unwrap_err(),
        JoseError::Json(JsonError::Syntax)
    );
}

#[test]
fn j35_rtl_override_and_escaped_control_characters_are_kept_byte_exact() {
    let keys = set(&[es256()]);
    let h = header(es256()).to_string();
    for (literal, expected) in [
        (r#""admin\u202e\u0007""#, "admin\u{202e}\u{7}"),
        ("\"admin\u{202e}txt.exe\"", "admin\u{202e}txt.exe"),
        (r#""a\u0000b\u001bc\u007f""#, "a\u{0}b\u{1b}c\u{7f}"),
        (r#""\ud83d\ude00""#, "\u{1f600}"),
        (r#""e\u0301""#, "e\u{301}"),
    ] {
        let t = forge_raw(
            es256(),
            h.as_bytes(),
            claims_with_literal("name", literal).as_bytes(),
        );
        let c = verify(&t, &keys).unwrap();
        assert_eq!(
            c.get("name"),
            Some(&Value::String(expected.into())),
            "{literal}"
        );
    }
    // Raw (unescaped) control characters are not JSON.
    let t = forge_raw(
        es256(),
        h.as_bytes(),
        claims_with_literal("name", "\"a\u{1}b\"").as_bytes(),
    );
    assert_eq!(
        verify(&t, &keys).unwrap_err(),
        JoseError::Json(JsonError::Syntax)
    );
}

// ------------------------------------------------------------------------------------------
// S11 key-ring rotation
// ------------------------------------------------------------------------------------------

fn sign_access_token(key: &SigningKey) -> String {
    sign_jwt(key, Some("at+jwt"), claims().as_object().unwrap()).unwrap()
}

#[test]
fn s11_tokens_of_the_previous_key_verify_after_rotation() {
    let ring = KeyRing::new(SigningKey::generate(Algorithm::ES256).unwrap());
    let old_kid = ring.load().active().kid().to_owned();
    let old = sign_access_token(ring.load().active());
    let next = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let new_kid = next.kid().to_owned();
    ring.rotate(next).unwrap();

    let state = ring.snapshot();
    assert_eq!(state.active().kid(), new_kid);
    let new = sign_access_token(state.active());
    assert_eq!(
        parse_compact(&new, ACCESS_TOKEN_MAX_LEN)
            .unwrap()
            .header()
            .kid(),
        Some(new_kid.as_str())
    );
    assert_eq!(
        verify(&old, &*state).unwrap(),
        verify(&new, &*state).unwrap()
    );
    assert_eq!(
        verify_jwt(&old, &*state, &access_token_rules(), UnixTime(NOW))
            .unwrap()
            .kid(),
        old_kid
    );
    assert_eq!(
        verify_jwt(&new, &*state, &access_token_rules(), UnixTime(NOW))
            .unwrap()
            .kid(),
        new_kid
    );
}

#[test]
fn s11_retiring_the_old_key_makes_its_tokens_unknown() {
    let ring = KeyRing::new(SigningKey::generate(Algorithm::ES256).unwrap());
    let old_kid = ring.load().active().kid().to_owned();
    let old = sign_access_token(ring.load().active());
    ring.rotate(SigningKey::generate(Algorithm::ES256).unwrap())
        .unwrap();
    assert!(verify(&old, &**ring.load()).is_ok());
    // A state loaded before retirement is unaffected; a state loaded after refuses.
    let before = ring.snapshot();
    ring.retire(&old_kid).unwrap();
    assert!(verify(&old, &*before).is_ok());
    assert_eq!(
        verify(&old, &**ring.load()).unwrap_err(),
        JoseError::UnknownKey
    );
    assert!(!ring.load().jwks_json().contains(&old_kid));
    let new = sign_access_token(ring.load().active());
    assert!(verify(&new, &**ring.load()).is_ok());
}

#[test]
fn s11_the_active_key_cannot_be_retired() {
    let ring = KeyRing::new(SigningKey::generate(Algorithm::ES256).unwrap());
    let kid = ring.load().active().kid().to_owned();
    assert_eq!(ring.retire(&kid).unwrap_err(), KeyError::ActiveKey);
    ring.rotate(SigningKey::generate(Algorithm::ES256).unwrap())
        .unwrap();
    let kid = ring.load().active().kid().to_owned();
    assert_eq!(ring.retire(&kid).unwrap_err(), KeyError::ActiveKey);
}

#[test]
fn s11_rotation_to_a_key_with_the_active_kid_is_refused() {
    // Otherwise the previous key would vanish from the JWKS and its live tokens would stop
    // verifying before they expire.
    let ring = KeyRing::new(
        SigningKey::generate(Algorithm::ES256)
            .unwrap()
            .with_kid("signing")
            .unwrap(),
    );
    let old = sign_access_token(ring.load().active());
    let same_kid = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("signing")
        .unwrap();
    assert_eq!(ring.rotate(same_kid).unwrap_err(), KeyError::DuplicateKid);
    let other = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("signing")
        .unwrap();
    assert_eq!(
        ring.publish(other.verifying_key().clone()).unwrap_err(),
        KeyError::DuplicateKid
    );
    assert!(verify(&old, &**ring.load()).is_ok());
}

#[test]
fn s11_key_published_ahead_of_rotation_becomes_active_once() {
    let ring = KeyRing::new(SigningKey::generate(Algorithm::ES256).unwrap());
    let next = SigningKey::generate(Algorithm::ES256).unwrap();
    ring.publish(next.verifying_key().clone()).unwrap();
    // Publishing it a second time is a duplicate kid like any other.
    assert_eq!(
        ring.publish(next.verifying_key().clone()).unwrap_err(),
        KeyError::DuplicateKid
    );
    let early = sign_access_token(&next);
    assert!(verify(&early, &**ring.load()).is_ok());
    let next_kid = next.kid().to_owned();
    ring.rotate(next).unwrap();
    let state = ring.snapshot();
    assert_eq!(state.active().kid(), next_kid);
    assert_eq!(state.jwks().keys().len(), 2);
    assert!(verify(&early, &*state).is_ok());
    // Re-publishing the active key is harmless.
    ring.publish(state.active().verifying_key().clone())
        .unwrap();
    assert_eq!(ring.load().jwks().keys().len(), 2);
}

#[test]
fn s11_verification_during_concurrent_rotation_always_succeeds() {
    // Readers never take the writer's lock: three threads sign and verify while a fourth
    // keeps rotating. Keys are never retired here, so every verification must succeed.
    const ROTATIONS: usize = 40;
    const VERIFICATIONS: usize = 60;
    let ring = Arc::new(KeyRing::new(
        SigningKey::generate(Algorithm::ES256).unwrap(),
    ));
    let writer = {
        let ring = Arc::clone(&ring);
        std::thread::spawn(move || {
            for i in 0..ROTATIONS {
                let alg = if i % 2 == 0 {
                    Algorithm::EdDSA
                } else {
                    Algorithm::ES256
                };
                ring.rotate(SigningKey::generate(alg).unwrap()).unwrap();
            }
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let ring = Arc::clone(&ring);
            std::thread::spawn(move || {
                let mut results = Vec::with_capacity(VERIFICATIONS);
                for _ in 0..VERIFICATIONS {
                    let token = sign_access_token(ring.load().active());
                    // Verified against a state loaded after signing: the key may no longer
                    // be active, but it is still published.
                    let state = ring.snapshot();
                    results.push(verify(&token, &*state).map(|_| ()));
                }
                results
            })
        })
        .collect();
    writer.join().unwrap();
    for r in readers {
        let results = r.join().unwrap();
        assert_eq!(results.len(), VERIFICATIONS);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }
    assert_eq!(ring.load().jwks().keys().len(), ROTATIONS + 1);
}
