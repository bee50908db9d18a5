#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code
//! Rust tests of every exported function and its errors: these carry the weight
//! (STYLE.md, application-services); the Kotlin tests check the mapping and one real flow.

use std::sync::Arc;

use heartgate_core::authorize::pkce::CodeChallenge;
use heartgate_core::ciba::device::{authenticate_device, complete_pairing, start_pairing};
use heartgate_core::ciba::{CibaConfig, CibaContext, CibaUsers, UserCodeCheck, UserStatus};
use heartgate_core::client::{ClientDirectory, ValidatedClient};
use heartgate_core::clock::UnixTime;
use heartgate_core::jose::{
    b64, sign_jwt as core_sign, verify_jwt, Algorithm, AlgorithmSet, AudienceRule, JwkSet, KeyRing,
    SigningKey, TypRule, Validation,
};
use heartgate_core::store::MemoryStore;
use serde_json::{json, Value};

use crate::client::AuthorizationParams;
use crate::*;

const ISS: &str = "https://as.example";
const CLIENT: &str = "clinic-app";
const CB: &str = "https://clinic.example/cb";
const T: i64 = 1_700_000_000;

fn err_reason(e: HeartgateError) -> String {
    match e {
        HeartgateError::InvalidArgument { reason }
        | HeartgateError::VerificationFailed { reason }
        | HeartgateError::SignerFailed { reason }
        | HeartgateError::Internal { reason } => reason,
        HeartgateError::ServerError { error, .. } => error,
    }
}

fn signer() -> Arc<dyn Signer> {
    software_signer(generate_p256_private_key().unwrap(), None).unwrap()
}

fn config() -> ClientConfig {
    ClientConfig {
        issuer: ISS.into(),
        client_id: CLIENT.into(),
        redirect_uri: CB.into(),
        authorization_endpoint: format!("{ISS}/authorize"),
        par_endpoint: format!("{ISS}/par"),
        token_endpoint: format!("{ISS}/token"),
    }
}

fn client_with(s: Arc<dyn Signer>) -> Arc<FapiClient> {
    FapiClient::new(config(), s).unwrap()
}

fn keys_of(s: &dyn Signer) -> JwkSet {
    JwkSet::new(vec![crate::signer::public_key(s).unwrap()]).unwrap()
}

fn params() -> AuthorizationParams {
    AuthorizationParams {
        scope: "openid patient/Observation.rs".into(),
        state: "st-1".into(),
        code_challenge: pkce_pair().unwrap().challenge,
        nonce: Some("n-1".into()),
        resource: vec!["https://fhir.example/r4".into()],
    }
}

// ------------------------------------------------------------------ signer

/// A foreign signer stand-in: a core key behind the callback, with a chosen defect.
struct TestSigner {
    key: SigningKey,
    jwk: String,
    defect: Defect,
}

#[derive(Clone, Copy, PartialEq)]
enum Defect {
    None,
    Der,
    Throws,
    WrongKey,
}

impl TestSigner {
    fn signer(alg: Algorithm, defect: Defect) -> Arc<dyn Signer> {
        let key = SigningKey::generate(alg).unwrap();
        let jwk = Value::Object(key.verifying_key().to_jwk()).to_string();
        Arc::new(TestSigner { key, jwk, defect })
    }
}

impl Signer for TestSigner {
    fn public_jwk(&self) -> error::Result<String> {
        Ok(self.jwk.clone())
    }
    fn sign(&self, message: Vec<u8>) -> error::Result<Vec<u8>> {
        match self.defect {
            Defect::None => Ok(self.key.sign(&message).unwrap()),
            // ASN.1 DER of (r, s): what Android Keystore returns (THREATS J15).
            Defect::Der => {
                let raw = self.key.sign(&message).unwrap();
                let mut der = vec![0x30, 68, 0x02, 32];
                der.extend_from_slice(&raw[..32]);
                der.extend_from_slice(&[0x02, 32]);
                der.extend_from_slice(&raw[32..]);
                Ok(der)
            }
            Defect::Throws => Err(HeartgateError::signer("user_cancelled")),
            Defect::WrongKey => Ok(SigningKey::generate(Algorithm::ES256)
                .unwrap()
                .sign(&message)
                .unwrap()),
        }
    }
}

#[test]
fn generated_key_loads_and_signs_es256_with_thumbprint_kid() {
    let pem = generate_p256_private_key().unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let s = software_signer(pem.clone(), None).unwrap();
    let jwk: Value = serde_json::from_str(&s.public_jwk().unwrap()).unwrap();
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert!(
        jwk.get("d").is_none(),
        "no private member in the public JWK"
    );
    let core = SigningKey::from_pkcs8_pem(Algorithm::ES256, &pem).unwrap();
    assert_eq!(jwk["kid"], core.kid());
    let sig = s.sign(b"hello".to_vec()).unwrap();
    assert_eq!(sig.len(), 64, "JOSE r||s, RFC 7518 §3.4");
    core.verifying_key()
        .verify(Algorithm::ES256, b"hello", &sig)
        .unwrap();
}

#[test]
fn software_signer_takes_a_chosen_kid() {
    let s = software_signer(generate_p256_private_key().unwrap(), Some("k1".into())).unwrap();
    let jwk: Value = serde_json::from_str(&s.public_jwk().unwrap()).unwrap();
    assert_eq!(jwk["kid"], "k1");
}

#[test]
fn software_signer_refuses_bad_pem_and_bad_kid() {
    for pem in [
        "",
        "not a key",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ] {
        let e = software_signer(pem.into(), None).err().unwrap();
        assert!(matches!(e, HeartgateError::InvalidArgument { .. }), "{pem}");
    }
    let e = software_signer(generate_p256_private_key().unwrap(), Some(String::new()))
        .err()
        .unwrap();
    assert_eq!(err_reason(e), "kid");
}

#[test]
fn j15_der_signature_from_the_callback_is_refused() {
    let c = client_with(TestSigner::signer(Algorithm::ES256, Defect::Der));
    let e = c.client_assertion().unwrap_err();
    assert_eq!(e, HeartgateError::signer("signature_does_not_verify"));
}

#[test]
fn signature_of_another_key_is_refused() {
    let c = client_with(TestSigner::signer(Algorithm::ES256, Defect::WrongKey));
    assert_eq!(
        c.client_assertion().unwrap_err(),
        HeartgateError::signer("signature_does_not_verify")
    );
}

#[test]
fn signer_error_is_passed_through() {
    let c = client_with(TestSigner::signer(Algorithm::ES256, Defect::Throws));
    assert_eq!(
        c.client_assertion().unwrap_err(),
        HeartgateError::signer("user_cancelled")
    );
}

#[test]
fn fapi2_5_4_1_rs256_signer_is_refused() {
    let c = client_with(TestSigner::signer(Algorithm::RS256, Defect::None));
    assert_eq!(
        err_reason(c.client_assertion().unwrap_err()),
        "algorithm_not_allowed"
    );
}

#[test]
fn j33_signer_jwk_with_private_members_is_refused() {
    struct Leaky;
    impl Signer for Leaky {
        fn public_jwk(&self) -> error::Result<String> {
            Ok(r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA","d":"AA"}"#.into())
        }
        fn sign(&self, _: Vec<u8>) -> error::Result<Vec<u8>> {
            Ok(vec![0; 64])
        }
    }
    let c = client_with(Arc::new(Leaky));
    assert_eq!(
        c.client_assertion().unwrap_err(),
        HeartgateError::signer("public_jwk")
    );
}

// ------------------------------------------------------------------ PKCE, client setup

#[test]
fn rfc7636_pkce_pair_is_s256_of_a_43_char_verifier() {
    let p = pkce_pair().unwrap();
    assert_eq!(p.verifier.len(), 43);
    assert_eq!(p.method, "S256");
    assert_eq!(
        p.challenge,
        CodeChallenge::for_verifier(&p.verifier).as_str()
    );
    assert_ne!(p.verifier, pkce_pair().unwrap().verifier);
}

#[test]
fn client_config_needs_https_endpoints_and_a_client_id() {
    type Edit = fn(&mut ClientConfig);
    let cases: Vec<(Edit, &str)> = vec![
        (|c| c.issuer = "http://as.example".into(), "issuer"),
        (|c| c.par_endpoint = "not a url".into(), "par_endpoint"),
        (
            |c| c.token_endpoint = "https://as.example/t#f".into(),
            "token_endpoint",
        ),
        (
            |c| c.authorization_endpoint = String::new(),
            "authorization_endpoint",
        ),
        (|c| c.client_id = String::new(), "client_id"),
        (|c| c.redirect_uri = "::".into(), "redirect_uri"),
    ];
    for (edit, reason) in cases {
        let mut c = config();
        edit(&mut c);
        let e = FapiClient::new(c, signer()).err().unwrap();
        assert_eq!(e, HeartgateError::argument(reason));
    }
}

#[test]
fn core_version_is_the_workspace_version() {
    assert_eq!(core_version(), env!("CARGO_PKG_VERSION"));
}

// ------------------------------------------------------------------ assertion, request object

#[test]
fn rfc7523_3_assertion_matches_what_the_server_checks() {
    let s = signer();
    let c = client_with(s.clone());
    let a = c.client_assertion_at(UnixTime(T)).unwrap();
    // core/src/client/auth.rs under FAPI 2.0: aud is the issuer *string* (§5.3.2.1 item 7).
    let rule = Validation::new(
        AlgorithmSet::FAPI2,
        TypRule::OptionalOneOf(&["JWT", "client-authentication+jwt"]),
        AudienceRule::ExactString(ISS.into()),
    )
    .issuer(CLIENT)
    .max_lifetime(60)
    .require(&["jti", "sub"]);
    let claims = verify_jwt(&a, &keys_of(&*s), &rule, UnixTime(T)).unwrap();
    assert_eq!(claims.string("sub").unwrap(), Some(CLIENT));
    // C1: a fresh jti each time.
    let b = c.client_assertion_at(UnixTime(T)).unwrap();
    let jb = verify_jwt(&b, &keys_of(&*s), &rule, UnixTime(T)).unwrap();
    assert_ne!(claims.get("jti"), jb.get("jti"));
}

#[test]
fn rfc9101_request_object_carries_every_parameter_and_verifies() {
    let s = signer();
    let c = client_with(s.clone());
    let ro = c.request_object_at(&params(), UnixTime(T)).unwrap();
    let jws = heartgate_core::jose::parse_compact(&ro, 65536).unwrap();
    assert_eq!(jws.header().typ(), Some("oauth-authz-req+jwt"));
    let rule = Validation::new(
        AlgorithmSet::FAPI2,
        TypRule::OptionalOneOf(&["oauth-authz-req+jwt", "JWT"]),
        AudienceRule::Contains(ISS.into()),
    )
    .issuer(CLIENT)
    .require(&["nbf"]);
    let claims = verify_jwt(&ro, &keys_of(&*s), &rule, UnixTime(T)).unwrap();
    for (k, v) in [
        ("response_type", json!("code")),
        ("response_mode", json!("jwt")),
        ("client_id", json!(CLIENT)),
        ("redirect_uri", json!(CB)),
        ("state", json!("st-1")),
        ("nonce", json!("n-1")),
        ("code_challenge_method", json!("S256")),
        ("resource", json!(["https://fhir.example/r4"])),
    ] {
        assert_eq!(claims.get(k), Some(&v), "{k}");
    }
}

#[test]
fn p9_request_object_refuses_bad_challenge_empty_state_and_http_resource() {
    let c = client_with(signer());
    let mut p = params();
    p.code_challenge = "short".into();
    assert_eq!(
        c.request_object(p).err().unwrap(),
        HeartgateError::argument("code_challenge")
    );
    let mut p = params();
    p.state = String::new();
    assert_eq!(
        c.request_object(p).err().unwrap(),
        HeartgateError::argument("state")
    );
    let mut p = params();
    p.resource = vec!["http://fhir.example".into()];
    assert_eq!(
        c.request_object(p).err().unwrap(),
        HeartgateError::argument("resource")
    );
}

#[test]
fn rfc9126_2_1_par_request_has_client_id_request_and_assertion() {
    let c = client_with(signer());
    let f = c.par_request(params()).unwrap();
    assert_eq!(f.url, format!("{ISS}/par"));
    let names: Vec<_> = f.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "client_id",
            "request",
            "client_assertion_type",
            "client_assertion"
        ]
    );
    let decoded: Vec<(String, String)> = url::form_urlencoded::parse(f.body.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(decoded.len(), 4);
    assert_eq!(
        decoded[2].1,
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(decoded[1].1, f.fields[1].value);
}

#[test]
fn rfc9126_2_2_par_response_is_parsed_and_errors_are_typed() {
    let c = client_with(signer());
    let ok = c
        .parse_par_response(
            201,
            r#"{"request_uri":"urn:ietf:params:oauth:request_uri:abc","expires_in":60}"#.into(),
        )
        .unwrap();
    assert_eq!(ok.request_uri, "urn:ietf:params:oauth:request_uri:abc");
    assert_eq!(ok.expires_in, 60);
    let e = c
        .parse_par_response(
            400,
            r#"{"error":"invalid_request_object","error_description":"signature"}"#.into(),
        )
        .unwrap_err();
    assert_eq!(
        e,
        HeartgateError::ServerError {
            error: "invalid_request_object".into(),
            description: Some("signature".into()),
            status: 400
        }
    );
    for (status, body, reason) in [
        (500, "<html>", "unexpected_response"),
        (201, "[]", "unexpected_response"),
        (201, r#"{"expires_in":60}"#, "request_uri"),
        (
            201,
            r#"{"request_uri":"u","expires_in":"60"}"#,
            "expires_in",
        ),
        (201, r#"{"request_uri":"u","expires_in":0}"#, "expires_in"),
    ] {
        let e = c.parse_par_response(status, body.into()).unwrap_err();
        assert_eq!(e, HeartgateError::verification(reason), "{body}");
    }
}

#[test]
fn rfc9126_4_authorization_url_has_client_id_and_request_uri_only() {
    let c = client_with(signer());
    let u = c
        .authorization_url("urn:ietf:params:oauth:request_uri:a b&c".into())
        .unwrap();
    let parsed = url::Url::parse(&u).unwrap();
    let q: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    assert_eq!(
        q,
        [
            ("client_id".to_owned(), CLIENT.to_owned()),
            (
                "request_uri".to_owned(),
                "urn:ietf:params:oauth:request_uri:a b&c".to_owned()
            )
        ]
    );
    assert!(u.starts_with(&format!("{ISS}/authorize?")));
}

// ------------------------------------------------------------------ JARM (THREATS A13, A14)

struct As {
    key: SigningKey,
    jwks: String,
}

fn authorization_server() -> As {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let jwks = JwkSet::new(vec![key.verifying_key().clone()])
        .unwrap()
        .to_json();
    As { key, jwks }
}

fn jarm_claims() -> Value {
    json!({"iss": ISS, "aud": CLIENT, "exp": T + 120, "code": "hgc_code", "state": "st-1"})
}

fn redirect(jwt: &str) -> String {
    format!("{CB}?response={jwt}")
}

fn verify(a: &As, url: &str) -> std::result::Result<String, HeartgateError> {
    client_with(signer()).verify_authorization_response_at(url, "st-1", &a.jwks, UnixTime(T))
}

fn jarm(a: &As, claims: Value) -> String {
    core_sign(&a.key, None, claims.as_object().unwrap()).unwrap()
}

#[test]
fn jarm_response_verifies_and_yields_the_code() {
    let a = authorization_server();
    assert_eq!(
        verify(&a, &redirect(&jarm(&a, jarm_claims()))).unwrap(),
        "hgc_code"
    );
    // fragment.jwt too; and aud as an array containing the client is accepted.
    let mut c = jarm_claims();
    c["aud"] = json!([CLIENT, "other"]);
    let url = format!("{CB}#response={}", jarm(&a, c));
    assert_eq!(verify(&a, &url).unwrap(), "hgc_code");
}

#[test]
fn a13_jarm_negative_modules_are_refused() {
    let a = authorization_server();
    let other = authorization_server();
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut c = jarm_claims();
        f(&mut c);
        jarm(&a, c)
    };
    let header = b64::encode(r#"{"alg":"none"}"#);
    let body = b64::encode(jarm_claims().to_string());
    let cases: Vec<(String, &str)> = vec![
        (format!("{header}.{body}.AAAA"), "alg"), // J1: alg none
        (jarm(&other, jarm_claims()), "signature"),
        (edit(&|c| c["iss"] = json!("https://as.example/")), "iss"), // J26
        (edit(&|c| c["iss"] = json!("https://evil.example")), "iss"), // A14 mix-up
        (edit(&|c| c["aud"] = json!("other-client")), "aud"),
        (edit(&|c| c["exp"] = json!(T - 3600)), "exp"),
        (edit(&|c| c["exp"] = json!(T + 86_400)), "exp"),
        (
            edit(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            "exp",
        ),
        (
            edit(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            }),
            "iss",
        ),
        (
            edit(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            "aud",
        ),
        (edit(&|c| c["state"] = json!("st-2")), "state"), // A15: state mismatch
        // A15: state missing
        (
            edit(&|c| {
                c.as_object_mut().unwrap().remove("state");
            }),
            "state",
        ),
        (
            edit(&|c| {
                c.as_object_mut().unwrap().remove("code");
            }),
            "code",
        ),
        ("not.a.jwt".into(), "malformed"),
    ];
    for (jwt, reason) in cases {
        let e = verify(&a, &redirect(&jwt)).unwrap_err();
        assert_eq!(e, HeartgateError::verification(reason), "{reason}");
    }
}

#[test]
fn jarm_error_response_is_a_typed_server_error() {
    let a = authorization_server();
    let jwt = jarm(
        &a,
        json!({"iss": ISS, "aud": CLIENT, "exp": T + 120, "error": "access_denied",
            "error_description": "the user said no", "state": "st-1"}),
    );
    assert_eq!(
        verify(&a, &redirect(&jwt)).unwrap_err(),
        HeartgateError::ServerError {
            error: "access_denied".into(),
            description: Some("the user said no".into()),
            status: 0
        }
    );
}

#[test]
fn a14_unsigned_response_other_redirect_and_outer_iss_are_refused() {
    let a = authorization_server();
    let good = jarm(&a, jarm_claims());
    for (url, reason) in [
        (format!("{CB}?code=c&state=st-1&iss={ISS}"), "jarm_required"),
        (
            format!("https://evil.example/cb?response={good}"),
            "redirect_uri",
        ),
        (format!("{CB}/x?response={good}"), "redirect_uri"),
        (
            format!("{CB}?response={good}&iss=https://evil.example"),
            "iss",
        ),
        (
            format!("{CB}?response={good}&response={good}"),
            "repeated_parameter",
        ),
    ] {
        assert_eq!(
            verify(&a, &url).unwrap_err(),
            HeartgateError::verification(reason),
            "{url}"
        );
    }
    let c = client_with(signer());
    for (url, state, jwks, reason) in [
        ("::", "st-1", a.jwks.as_str(), "url"),
        (CB, "", a.jwks.as_str(), "expected_state"),
        (CB, "st-1", "{}", "jwks"),
        (CB, "st-1", r#"{"keys":[{"kty":"oct","k":"AA"}]}"#, "jwks"),
    ] {
        let e = c
            .verify_authorization_response(url.into(), state.into(), jwks.into())
            .unwrap_err();
        assert_eq!(e, HeartgateError::argument(reason), "{reason}");
    }
}

#[test]
fn rfc9207_2_4_plain_response_needs_the_issuer() {
    let c = client_with(signer());
    let ok = c
        .verify_plain_authorization_response(
            format!("{CB}?code=c1&state=st-1&iss={ISS}"),
            "st-1".into(),
        )
        .unwrap();
    assert_eq!(ok, "c1");
    for (url, reason) in [
        (format!("{CB}?code=c1&state=st-1"), "iss"),
        (
            format!("{CB}?code=c1&state=st-1&iss=https://evil.example"),
            "iss",
        ),
        (format!("{CB}?code=c1&state=st-9&iss={ISS}"), "state"), // A15: mismatch
        (format!("{CB}?code=c1&iss={ISS}"), "state"),            // A15: missing
        (
            format!("{CB}?response=x.y.z&state=st-1&iss={ISS}"),
            "jarm_response",
        ),
    ] {
        let e = c
            .verify_plain_authorization_response(url.clone(), "st-1".into())
            .unwrap_err();
        assert_eq!(e, HeartgateError::verification(reason), "{url}");
    }
    let e = c
        .verify_plain_authorization_response(
            format!("{CB}?error=access_denied&state=st-1&iss={ISS}"),
            "st-1".into(),
        )
        .unwrap_err();
    assert!(matches!(e, HeartgateError::ServerError { ref error, .. } if error == "access_denied"));
}

// ------------------------------------------------------------------ token requests, responses

#[test]
fn rfc6749_4_1_3_token_request_has_code_verifier_and_assertion() {
    let c = client_with(signer());
    let p = pkce_pair().unwrap();
    let f = c.token_request("hgc_x".into(), p.verifier.clone()).unwrap();
    assert_eq!(f.url, format!("{ISS}/token"));
    let get = |n: &str| {
        f.fields
            .iter()
            .find(|f| f.name == n)
            .map(|f| f.value.clone())
    };
    assert_eq!(get("grant_type").unwrap(), "authorization_code");
    assert_eq!(get("code_verifier").unwrap(), p.verifier);
    assert_eq!(get("redirect_uri").unwrap(), CB);
    assert!(get("client_assertion").is_some());
    assert_eq!(
        c.token_request("c".into(), "short".into()).err().unwrap(),
        HeartgateError::argument("code_verifier")
    );
}

#[test]
fn rfc6749_6_refresh_request_and_its_error() {
    let c = client_with(signer());
    let f = c.refresh_request("hgrt_x".into()).unwrap();
    assert!(f.body.contains("grant_type=refresh_token"));
    assert!(f.body.contains("refresh_token=hgrt_x"));
    assert_eq!(
        c.refresh_request(String::new()).err().unwrap(),
        HeartgateError::argument("refresh_token")
    );
}

#[test]
fn rfc6749_5_1_token_response_is_parsed() {
    let r = parse_token_response(
        200,
        r#"{"access_token":"at","token_type":"bearer","expires_in":300,
            "refresh_token":"rt","scope":"openid","id_token":"id","patient":"Patient/1"}"#
            .into(),
    )
    .unwrap();
    assert_eq!(r.access_token, "at");
    assert_eq!(r.expires_in, Some(300));
    assert_eq!(r.patient.as_deref(), Some("Patient/1"));
    // client-test-token-endpoint-response-without-expires_in: accepted.
    let r =
        parse_token_response(200, r#"{"access_token":"at","token_type":"Bearer"}"#.into()).unwrap();
    assert_eq!(r.expires_in, None);
}

#[test]
fn rfc6749_5_2_token_errors_are_typed() {
    let e = parse_token_response(400, r#"{"error":"invalid_grant"}"#.into()).unwrap_err();
    assert_eq!(
        e,
        HeartgateError::ServerError {
            error: "invalid_grant".into(),
            description: None,
            status: 400
        }
    );
    for (body, reason) in [
        (r#"{"token_type":"Bearer"}"#, "access_token"),
        (r#"{"access_token":"a","token_type":"DPoP"}"#, "token_type"),
        (r#"{"access_token":"a"}"#, "token_type"),
        (
            r#"{"access_token":"a","token_type":"Bearer","expires_in":"300"}"#,
            "expires_in",
        ),
        (
            r#"{"access_token":1,"token_type":"Bearer"}"#,
            "access_token",
        ),
        ("not json", "unexpected_response"),
    ] {
        assert_eq!(
            parse_token_response(200, body.into()).unwrap_err(),
            HeartgateError::verification(reason),
            "{body}"
        );
    }
}

// ------------------------------------------------------------------ access tokens, x5t#S256

fn at_claims() -> Value {
    json!({"iss": ISS, "sub": "user-42", "aud": "https://fhir.example/r4", "exp": T + 300,
        "iat": T, "jti": "j1", "client_id": CLIENT, "scope": "openid",
        "cnf": {"x5t#S256": "abc"}})
}

#[test]
fn rfc9068_jwt_access_token_validates_offline() {
    let a = authorization_server();
    let v = AccessTokenValidator::new(ISS.into(), "https://fhir.example/r4".into(), a.jwks.clone())
        .unwrap();
    let token = core_sign(&a.key, Some("at+jwt"), at_claims().as_object().unwrap()).unwrap();
    let ok = v.validate_at(&token, UnixTime(T)).unwrap();
    assert_eq!(ok.format, TokenFormat::Jwt);
    assert_eq!(ok.sub.as_deref(), Some("user-42"));
    assert_eq!(ok.x5t_s256.as_deref(), Some("abc"));
    assert_eq!(ok.client_id, CLIENT);
    // A wrapper token: its own typ, a reference inside.
    let mut w = at_claims();
    w["ref"] = json!(format!("hgref_{}", b64::encode([7u8; 32])));
    let wrapper = core_sign(&a.key, Some("hg-wrapper+jwt"), w.as_object().unwrap()).unwrap();
    assert_eq!(
        v.validate_at(&wrapper, UnixTime(T)).unwrap().format,
        TokenFormat::Wrapper
    );
}

#[test]
fn rfc9068_4_access_token_rejections() {
    let a = authorization_server();
    let v = AccessTokenValidator::new(ISS.into(), "https://fhir.example/r4".into(), a.jwks.clone())
        .unwrap();
    let sign = |typ, c: Value| core_sign(&a.key, typ, c.as_object().unwrap()).unwrap();
    let mut aud = at_claims();
    aud["aud"] = json!("https://other.example");
    let cases = vec![
        (sign(Some("at+jwt"), aud), "aud"),
        (sign(Some("JWT"), at_claims()), "typ"), // J25
        (sign(Some("at+jwt"), at_claims()), "exp"),
        (
            format!("hgat_{}", b64::encode([1u8; 32])),
            "opaque_token_introspect_it",
        ),
        ("garbage".into(), "malformed"),
    ];
    for (i, (token, reason)) in cases.into_iter().enumerate() {
        let now = if reason == "exp" { T + 10_000 } else { T };
        assert_eq!(
            v.validate_at(&token, UnixTime(now)).unwrap_err(),
            HeartgateError::verification(reason),
            "case {i}"
        );
    }
    assert!(v.validate("garbage".into()).is_err());
    assert_eq!(
        AccessTokenValidator::new(ISS.into(), "a".into(), "[]".into())
            .err()
            .unwrap(),
        HeartgateError::argument("jwks")
    );
    assert_eq!(
        AccessTokenValidator::new(String::new(), "a".into(), a.jwks.clone())
            .err()
            .unwrap(),
        HeartgateError::argument("issuer_or_audience")
    );
}

#[test]
fn rfc8705_3_1_x5t_s256_of_der_and_pem() {
    let c = rcgen::generate_simple_self_signed(vec!["app.example".into()]).unwrap();
    let der = c.cert.der().to_vec();
    let want = heartgate_core::mtls::thumbprint(&der)
        .unwrap()
        .to_base64url();
    assert_eq!(x5t_s256(der.clone()).unwrap(), want);
    assert_eq!(x5t_s256_of_pem(c.cert.pem()).unwrap(), want);
    assert_eq!(want.len(), 43, "base64url, no padding");
    // M5: PEM text is not DER; garbage is refused.
    for bad in [c.cert.pem().into_bytes(), vec![], vec![0x30, 0x03, 1, 2, 3]] {
        assert_eq!(
            x5t_s256(bad).unwrap_err(),
            HeartgateError::argument("certificate")
        );
    }
    assert_eq!(
        x5t_s256_of_pem("nope".into()).unwrap_err(),
        HeartgateError::argument("certificate")
    );
}

// ------------------------------------------------------------------ CIBA device against core

struct OneUser;
impl CibaUsers for OneUser {
    fn resolve_login_hint(
        &self,
        _: &str,
    ) -> std::result::Result<Option<String>, heartgate_core::ciba::UsersUnavailable> {
        Ok(Some("alice".into()))
    }
    fn status(
        &self,
        _: &str,
    ) -> std::result::Result<UserStatus, heartgate_core::ciba::UsersUnavailable> {
        Ok(UserStatus::Active)
    }
    fn verify_user_code(
        &self,
        _: &str,
        _: &str,
    ) -> std::result::Result<UserCodeCheck, heartgate_core::ciba::UsersUnavailable> {
        Ok(UserCodeCheck::Mismatch)
    }
}

struct NoClients;
impl ClientDirectory for NoClients {
    fn client(&self, _: &str) -> Option<Arc<ValidatedClient>> {
        None
    }
    fn keys(&self, _: &ValidatedClient) -> Option<Arc<JwkSet>> {
        None
    }
}

fn now_secs() -> i64 {
    crate::now().unwrap().secs()
}

#[test]
fn ciba_device_pairs_and_authenticates_against_core() {
    let (config, store, keys) = (
        CibaConfig::new(ISS),
        MemoryStore::new(),
        KeyRing::new(SigningKey::generate(Algorithm::ES256).unwrap()),
    );
    let ctx = CibaContext::new(
        &config,
        &store,
        &OneUser,
        &NoClients,
        &keys,
        UnixTime(now_secs()),
    );
    let code = start_pairing(&ctx, "alice").unwrap();
    let s = signer();
    let post = device_pairing_request(
        ISS.into(),
        code.expose().into(),
        "Alice's phone".into(),
        s.clone(),
    )
    .unwrap();
    assert_eq!(post.url, format!("{ISS}/device/pair"));
    let body: Value = serde_json::from_str(&post.body).unwrap();
    let device_id = complete_pairing(
        &ctx,
        body["code"].as_str().unwrap(),
        body["jwk"].to_string().as_bytes(),
        body["name"].as_str().unwrap(),
    )
    .unwrap();
    let resp = format!(r#"{{"device_id":"{device_id}"}}"#);
    assert_eq!(parse_device_pairing_response(201, resp).unwrap(), device_id);

    let d = CibaDevice::new(ISS.into(), device_id.clone(), s).unwrap();
    assert_eq!(d.device_id(), device_id);
    let r = d.pending_requests_request().unwrap();
    assert_eq!(
        (r.method.as_str(), r.url.as_str()),
        ("GET", "https://as.example/device/requests")
    );
    let jwt = r.authorization.strip_prefix("Bearer ").unwrap();
    let ok = authenticate_device(&ctx, jwt).unwrap();
    assert_eq!(ok.user_id(), "alice");
    // The jti is single-use on the server.
    assert!(authenticate_device(&ctx, jwt).is_err());

    // A decision over request_ref and the binding message's hash (B14).
    let request_ref = b64::encode([3u8; 32]);
    let dr = d
        .decision_request(request_ref.clone(), true, Some("W4SCT".into()))
        .unwrap();
    assert_eq!(dr.method, "POST");
    let jwt = dr.authorization.strip_prefix("Bearer ").unwrap();
    let dev = authenticate_device(&ctx, jwt).unwrap();
    let c = dev.claims();
    assert_eq!(c.get("request_ref"), Some(&json!(request_ref)));
    assert_eq!(c.get("approve"), Some(&json!(true)));
    assert_eq!(
        c.get("binding_message_hash"),
        Some(&json!(heartgate_core::ciba::binding_message_hash("W4SCT")))
    );
    // No binding message: no hash claim.
    let dr = d.decision_request(request_ref, false, None).unwrap();
    let dev = authenticate_device(&ctx, dr.authorization.strip_prefix("Bearer ").unwrap()).unwrap();
    assert_eq!(dev.claims().get("binding_message_hash"), None);
    assert_eq!(dev.claims().get("approve"), Some(&json!(false)));
}

#[test]
fn ciba_device_input_errors() {
    let s = signer();
    let rsa = TestSigner::signer(Algorithm::PS256, Defect::None);
    for (issuer, code, name, sg, reason) in [
        (
            "http://as.example",
            "ABCD2345",
            "phone",
            s.clone(),
            "issuer",
        ),
        (ISS, " ", "phone", s.clone(), "pairing_code"),
        (ISS, "ABCD2345", "", s.clone(), "device_name"),
        (
            ISS,
            "ABCD2345",
            "phone",
            rsa.clone(),
            "device_key_must_be_p256",
        ),
    ] {
        let e = device_pairing_request(issuer.into(), code.into(), name.into(), sg)
            .err()
            .unwrap();
        assert_eq!(e, HeartgateError::argument(reason), "{reason}");
    }
    assert_eq!(
        parse_device_pairing_response(400, r#"{"error":"invalid_grant"}"#.into()).unwrap_err(),
        HeartgateError::ServerError {
            error: "invalid_grant".into(),
            description: None,
            status: 400
        }
    );
    assert_eq!(
        parse_device_pairing_response(201, r#"{"device_id":"x"}"#.into()).unwrap_err(),
        HeartgateError::verification("device_id")
    );
    let id = b64::encode([1u8; 16]);
    assert_eq!(
        CibaDevice::new(ISS.into(), "short".into(), s.clone())
            .err()
            .unwrap(),
        HeartgateError::argument("device_id")
    );
    assert!(CibaDevice::new(ISS.into(), id.clone(), rsa).is_err());
    let d = CibaDevice::new(ISS.into(), id, s).unwrap();
    assert_eq!(
        d.decision_request("nope".into(), true, None).err().unwrap(),
        HeartgateError::argument("request_ref")
    );
}

#[test]
fn ciba_device_parses_requests_and_decisions() {
    let d = CibaDevice::new(ISS.into(), b64::encode([1u8; 16]), signer()).unwrap();
    let body = json!({"requests": [{"request_ref": "r", "client_id": "c", "client_name": "App",
        "scope": "openid", "acr_values": null, "binding_message": "W4SCT",
        "created_at": T, "expires_at": T + 300}]});
    let list = d.parse_pending_requests(200, body.to_string()).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].binding_message.as_deref(), Some("W4SCT"));
    assert_eq!(list[0].acr_values, None);
    assert_eq!(
        d.parse_pending_requests(200, r#"{"requests":[{"client_id":"c"}]}"#.into())
            .unwrap_err(),
        HeartgateError::verification("requests")
    );
    assert_eq!(
        d.parse_pending_requests(200, "{}".into()).unwrap_err(),
        HeartgateError::verification("requests")
    );
    assert!(matches!(
        d.parse_pending_requests(401, r#"{"error":"invalid_token"}"#.into()),
        Err(HeartgateError::ServerError { status: 401, .. })
    ));
    assert_eq!(
        d.parse_decision_response(200, r#"{"decision":"approved"}"#.into())
            .unwrap(),
        DeviceDecision::Approved
    );
    assert_eq!(
        d.parse_decision_response(200, r#"{"decision":"denied"}"#.into())
            .unwrap(),
        DeviceDecision::Denied
    );
    assert_eq!(
        d.parse_decision_response(200, r#"{"decision":"maybe"}"#.into())
            .unwrap_err(),
        HeartgateError::verification("decision")
    );
    assert!(matches!(
        d.parse_decision_response(409, r#"{"error":"invalid_request"}"#.into()),
        Err(HeartgateError::ServerError { status: 409, .. })
    ));
}

#[test]
fn f3_huge_and_nul_inputs_are_typed_errors() {
    let c = client_with(signer());
    let big = "a".repeat(10 * 1024 * 1024);
    assert!(c
        .verify_authorization_response(format!("{CB}?response={big}"), "s".into(), "{}".into())
        .is_err());
    assert!(parse_token_response(200, big.clone()).is_err());
    assert!(AccessTokenValidator::new(ISS.into(), "a".into(), big).is_err());
    assert!(software_signer("\0".into(), None).is_err());
    assert!(x5t_s256_of_pem("\0".into()).is_err());
}
