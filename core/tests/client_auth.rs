//! Client authentication (THREATS C1-C19) through the public API, with the in-memory
//! store: every rejection is asserted together with an unchanged store.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use std::collections::HashMap;
use std::sync::Arc;

use heartgate_core::client::*;
use heartgate_core::clock::UnixTime;
use heartgate_core::jose::{b64, Algorithm, SigningKey};
use heartgate_core::store::{MemoryStore, Store};
use serde_json::{json, Value};

const ISS: &str = "https://as.example";
const TOKEN: &str = "https://as.example/token";
const PAR: &str = "https://as.example/par";
const NOW: UnixTime = UnixTime(1_700_000_000);

mod common;
use common::Dir;

fn endpoints() -> Endpoints {
    Endpoints {
        issuer: ISS.into(),
        token: TOKEN.into(),
        par: PAR.into(),
    }
}

struct Fixture {
    dir: Dir,
    store: MemoryStore,
    fapi_key: SigningKey,
    heart_key: SigningKey,
    other_key: SigningKey,
    mtls_cert: Vec<u8>,
    self_signed: Vec<u8>,
}

fn cert_with_dn(cn: &str) -> Vec<u8> {
    let mut p = rcgen::CertificateParams::new(vec![]).unwrap();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "Clinic");
    dn.push(rcgen::DnType::CommonName, cn);
    p.distinguished_name = dn;
    let kp = rcgen::KeyPair::generate().unwrap();
    p.self_signed(&kp).unwrap().der().to_vec()
}

fn client(v: Value) -> Arc<ValidatedClient> {
    Arc::new(
        ClientMetadata::from_json(v.to_string().as_bytes())
            .unwrap()
            .validate()
            .unwrap(),
    )
}

fn fixture() -> Fixture {
    let fapi_key = SigningKey::generate(Algorithm::ES256).unwrap();
    let heart_key = SigningKey::generate(Algorithm::RS256).unwrap();
    let other_key = SigningKey::generate(Algorithm::ES256).unwrap();
    let ss = rcgen::generate_simple_self_signed(vec!["device.example".into()]).unwrap();
    let ss_point = ss.signing_key.public_key_raw().to_vec();
    let ss_jwk = heartgate_core::jose::VerifyingKey::from_ec_point("dev".into(), &ss_point)
        .unwrap()
        .to_jwk();
    let mut m = HashMap::new();
    m.insert("fapi".to_owned(), client(json!({"client_id": "fapi", "profile": "fapi2-security",
        "redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [fapi_key.verifying_key().to_jwk()]}, "require_pushed_authorization_requests": true,
        "tls_client_certificate_bound_access_tokens": true})));
    m.insert("heart".to_owned(), client(json!({"client_id": "heart", "profile": "heart",
        "redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [heart_key.verifying_key().to_jwk()]}})));
    m.insert("other".to_owned(), client(json!({"client_id": "other", "profile": "heart",
        "redirect_uris": ["https://other.example/cb"], "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [other_key.verifying_key().to_jwk()]}})));
    m.insert("mtls".to_owned(), client(json!({"client_id": "mtls", "profile": "fapi2-security",
        "redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "tls_client_auth",
        "tls_client_auth_subject_dn": "CN=client,O=Clinic", "require_pushed_authorization_requests": true,
        "tls_client_certificate_bound_access_tokens": true})));
    m.insert("selfsigned".to_owned(), client(json!({"client_id": "selfsigned", "profile": "heart",
        "redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "self_signed_tls_client_auth",
        "jwks": {"keys": [ss_jwk]}})));
    m.insert(
        "public".to_owned(),
        client(json!({"client_id": "public", "profile": "smart",
        "redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"})),
    );
    Fixture {
        dir: Dir(m),
        store: MemoryStore::new(),
        fapi_key,
        heart_key,
        other_key,
        mtls_cert: cert_with_dn("client"),
        self_signed: ss.cert.der().to_vec(),
    }
}

fn assertion(k: &SigningKey, claims: Value) -> String {
    heartgate_core::jose::sign_jwt(k, None, claims.as_object().unwrap()).unwrap()
}

fn claims(client: &str, aud: Value) -> Value {
    json!({"iss": client, "sub": client, "aud": aud, "exp": NOW.0 + 60, "iat": NOW.0,
        "jti": b64::encode(NOW.0.to_be_bytes()) + client + &aud.to_string()})
}

fn pkjwt(token: &str) -> ClientCredentials<'_> {
    ClientCredentials {
        client_assertion_type: Some(JWT_BEARER_ASSERTION_TYPE),
        client_assertion: Some(token),
        ..Default::default()
    }
}

impl Fixture {
    fn auth(&self, c: &ClientCredentials<'_>) -> Result<AuthenticatedClient, ClientAuthError> {
        authenticate(
            c,
            &self.dir,
            &endpoints(),
            &self.store,
            NOW,
            &heartgate_core::audit::NoAudit,
        )
    }

    /// Assert a rejection and that it left the store untouched.
    fn refused(&self, c: &ClientCredentials<'_>) -> ClientAuthError {
        let before = self.store.snapshot(NOW).unwrap();
        let err = self.auth(c).unwrap_err();
        assert_eq!(
            self.store.snapshot(NOW).unwrap(),
            before,
            "store changed by a rejected request"
        );
        err
    }
}

fn is_invalid_client(e: &ClientAuthError) -> bool {
    matches!(e, ClientAuthError::InvalidClient(_))
}

#[test]
fn private_key_jwt_authenticates_and_consumes_the_jti() {
    let f = fixture();
    let t = assertion(&f.fapi_key, claims("fapi", json!(ISS)));
    let ok = f.auth(&pkjwt(&t)).unwrap();
    assert_eq!(ok.client_id(), "fapi");
    assert_eq!(ok.method(), AuthMethod::PrivateKeyJwt);
    assert_eq!(f.store.snapshot(NOW).unwrap().len(), 1, "jti recorded");
}

#[test]
fn c1_replayed_assertion_is_refused() {
    let f = fixture();
    let t = assertion(&f.fapi_key, claims("fapi", json!(ISS)));
    f.auth(&pkjwt(&t)).unwrap();
    assert!(is_invalid_client(&f.refused(&pkjwt(&t))));
}

#[test]
fn c1_sixty_four_concurrent_copies_authenticate_once() {
    let f = fixture();
    let t = assertion(&f.fapi_key, claims("fapi", json!(ISS)));
    let wins = std::thread::scope(|s| {
        let hs: Vec<_> = (0..64)
            .map(|_| s.spawn(|| f.auth(&pkjwt(&t)).is_ok()))
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .filter(|w| *w)
            .count()
    });
    assert_eq!(wins, 1);
}

#[test]
fn c2_fapi_accepts_only_the_issuer_as_a_string() {
    let f = fixture();
    for aud in [
        json!(TOKEN),
        json!(PAR),
        json!([ISS]),
        json!("https://other-as.example"),
    ] {
        let t = assertion(&f.fapi_key, claims("fapi", aud.clone()));
        assert!(is_invalid_client(&f.refused(&pkjwt(&t))), "{aud}");
    }
}

#[test]
fn c2_non_fapi_accepts_issuer_token_and_par_endpoint() {
    let f = fixture();
    for aud in [json!(ISS), json!(TOKEN), json!(PAR), json!([ISS, "x"])] {
        let t = assertion(&f.heart_key, claims("heart", aud.clone()));
        assert!(f.auth(&pkjwt(&t)).is_ok(), "{aud}");
    }
    let t = assertion(
        &f.heart_key,
        claims("heart", json!("https://other-as.example")),
    );
    assert!(is_invalid_client(&f.refused(&pkjwt(&t))));
}

#[test]
fn c3_expired_missing_or_far_exp_is_refused() {
    let f = fixture();
    for (exp, iat) in [
        (Some(NOW.0 - 300), NOW.0 - 360),
        (Some(NOW.0 - 11), NOW.0 - 60),
        (None, NOW.0),
        (Some(NOW.0 + 48 * 3600), NOW.0),
    ] {
        let mut c = claims("fapi", json!(ISS));
        c["iat"] = json!(iat);
        match exp {
            Some(e) => c["exp"] = json!(e),
            None => {
                c.as_object_mut().unwrap().remove("exp");
            }
        }
        let t = assertion(&f.fapi_key, c);
        assert!(is_invalid_client(&f.refused(&pkjwt(&t))), "{exp:?}");
    }
}

#[test]
fn c4_iat_and_nbf_8s_ahead_are_accepted_70s_ahead_refused() {
    let f = fixture();
    let mut c = claims("fapi", json!(ISS));
    c["iat"] = json!(NOW.0 + 8);
    c["nbf"] = json!(NOW.0 + 8);
    assert!(f.auth(&pkjwt(&assertion(&f.fapi_key, c))).is_ok());
    let mut c = claims("fapi", json!(ISS));
    c["jti"] = json!("later");
    c["nbf"] = json!(NOW.0 + 70);
    assert!(is_invalid_client(
        &f.refused(&pkjwt(&assertion(&f.fapi_key, c)))
    ));
}

#[test]
fn c5_iss_sub_mismatch_or_missing_sub_is_refused() {
    let f = fixture();
    let mut c = claims("fapi", json!(ISS));
    c["iss"] = json!("other");
    assert!(is_invalid_client(
        &f.refused(&pkjwt(&assertion(&f.fapi_key, c)))
    ));
    let mut c = claims("fapi", json!(ISS));
    c.as_object_mut().unwrap().remove("sub");
    assert!(is_invalid_client(
        &f.refused(&pkjwt(&assertion(&f.fapi_key, c)))
    ));
    let mut c = claims("fapi", json!(ISS));
    c.as_object_mut().unwrap().remove("jti");
    assert!(is_invalid_client(
        &f.refused(&pkjwt(&assertion(&f.fapi_key, c)))
    ));
}

#[test]
fn c6_body_client_id_differing_from_the_assertion_is_refused() {
    let f = fixture();
    let t = assertion(&f.fapi_key, claims("fapi", json!(ISS)));
    let creds = ClientCredentials {
        client_id: Some("heart"),
        ..pkjwt(&t)
    };
    assert!(is_invalid_client(&f.refused(&creds)));
}

/// THREATS C7: `client_assertion_type` missing or not the JWT bearer type.
#[test]
fn c7_missing_or_wrong_assertion_type_is_invalid_request() {
    let f = fixture();
    let t = assertion(&f.fapi_key, claims("fapi", json!(ISS)));
    for ty in [
        None,
        Some("urn:ietf:params:oauth:client-assertion-type:saml2-bearer"),
    ] {
        let creds = ClientCredentials {
            client_assertion_type: ty,
            ..pkjwt(&t)
        };
        assert!(
            matches!(f.refused(&creds), ClientAuthError::InvalidRequest(_)),
            "{ty:?}"
        );
    }
}

#[test]
fn c8_two_methods_at_once_are_invalid_request() {
    let f = fixture();
    let t = assertion(&f.fapi_key, claims("fapi", json!(ISS)));
    let with_secret = ClientCredentials {
        client_secret: Some("s"),
        ..pkjwt(&t)
    };
    assert!(matches!(
        f.refused(&with_secret),
        ClientAuthError::InvalidRequest(_)
    ));
    let with_basic = ClientCredentials {
        basic_authorization: true,
        ..pkjwt(&t)
    };
    assert!(matches!(
        f.refused(&with_basic),
        ClientAuthError::InvalidRequest(_)
    ));
}

#[test]
fn assertion_with_binding_certificate_is_one_method() {
    let f = fixture();
    let t = assertion(&f.fapi_key, claims("fapi", json!(ISS)));
    let creds = ClientCredentials {
        certificate: Some(&f.mtls_cert),
        ..pkjwt(&t)
    };
    let ok = f.auth(&creds).unwrap();
    assert!(
        ok.certificate().is_some(),
        "the certificate is kept for token binding"
    );
}

/// THREATS C9: an assertion signed with client B's key, claiming to be A.
#[test]
fn c9_assertion_signed_with_another_clients_key_is_refused() {
    let f = fixture();
    let t = assertion(&f.other_key, claims("heart", json!(ISS)));
    assert!(is_invalid_client(&f.refused(&pkjwt(&t))));
}

#[test]
fn fapi_assertion_signed_with_rs256_is_refused() {
    let f = fixture();
    // The heart client's RS256 key, but claiming to be the FAPI client: wrong key and alg.
    let t = assertion(&f.heart_key, claims("fapi", json!(ISS)));
    assert!(is_invalid_client(&f.refused(&pkjwt(&t))));
}

// ------------------------------------------------------------------------------------------
// SPECS.md b.2 item 10: SMART asymmetric client auth with ES384 and RS384 (J17 resolution)
// ------------------------------------------------------------------------------------------

/// A SMART Backend Services client registered with `key`'s public JWK.
fn smart_backend(id: &str, key: &SigningKey) -> Value {
    json!({"client_id": id, "profile": "smart-backend", "token_endpoint_auth_method": "private_key_jwt",
        "grant_types": ["client_credentials"], "scope": "system/Observation.rs",
        "jwks": {"keys": [key.verifying_key().to_jwk()]}})
}

/// A FAPI 2.0 client registered with `key`'s public JWK.
fn fapi_client(id: &str, key: &SigningKey) -> Value {
    json!({"client_id": id, "profile": "fapi2-security",
        "redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [key.verifying_key().to_jwk()]}, "require_pushed_authorization_requests": true,
        "tls_client_certificate_bound_access_tokens": true})
}

fn register(v: &Value) -> Result<ValidatedClient, MetadataError> {
    ClientMetadata::from_json(v.to_string().as_bytes())?.validate()
}

fn spec_b2_10_smart_backend_assertion_is_accepted(alg: Algorithm) {
    let mut f = fixture();
    let k = SigningKey::generate(alg).unwrap();
    f.dir
        .0
        .insert("backend".into(), client(smart_backend("backend", &k)));
    let t = assertion(&k, claims("backend", json!(TOKEN)));
    assert_eq!(
        heartgate_core::jose::parse_compact(&t, heartgate_core::jose::ACCESS_TOKEN_MAX_LEN)
            .unwrap()
            .header()
            .alg(),
        alg
    );
    let ok = f.auth(&pkjwt(&t)).unwrap();
    assert_eq!(ok.client_id(), "backend");
    assert_eq!(ok.method(), AuthMethod::PrivateKeyJwt);
    // The jti is consumed as for any assertion (C1).
    assert!(is_invalid_client(&f.refused(&pkjwt(&t))));
}

#[test]
fn spec_b2_10_smart_backend_assertion_signed_with_es384_is_accepted() {
    spec_b2_10_smart_backend_assertion_is_accepted(Algorithm::ES384);
}

#[test]
fn spec_b2_10_smart_backend_assertion_signed_with_rs384_is_accepted() {
    spec_b2_10_smart_backend_assertion_is_accepted(Algorithm::RS384);
}

#[test]
fn spec_b2_10_smart_app_assertion_signed_with_es384_is_accepted() {
    // client-confidential-asymmetric for a user-facing SMART app, not only Backend Services.
    let mut f = fixture();
    let k = SigningKey::generate(Algorithm::ES384).unwrap();
    f.dir.0.insert("app".into(), client(json!({"client_id": "app", "profile": "smart",
        "redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "private_key_jwt",
        "token_endpoint_auth_signing_alg": "ES384",
        "jwks": {"keys": [k.verifying_key().to_jwk()]}})));
    let t = assertion(&k, claims("app", json!(TOKEN)));
    assert_eq!(f.auth(&pkjwt(&t)).unwrap().client_id(), "app");
}

#[test]
fn spec_b2_10_es384_and_rs384_keys_are_refused_for_a_fapi2_client_at_registration() {
    // The same kind of key that a SMART backend client registers: outside the FAPI 2.0
    // algorithm set (PS256/ES256/EdDSA), so the FAPI client cannot even register it.
    for alg in [Algorithm::ES384, Algorithm::RS384] {
        let k = SigningKey::generate(alg).unwrap();
        assert!(register(&smart_backend("backend", &k)).is_ok(), "{alg}");
        assert_eq!(
            register(&fapi_client("fapi", &k)).unwrap_err(),
            MetadataError::InvalidClientMetadata("jwks algorithm"),
            "{alg}"
        );
        let mut with_alg = fapi_client("fapi", &SigningKey::generate(Algorithm::ES256).unwrap());
        with_alg["token_endpoint_auth_signing_alg"] = json!(alg.as_str());
        assert_eq!(
            register(&with_alg).unwrap_err(),
            MetadataError::InvalidClientMetadata("token_endpoint_auth_signing_alg"),
            "{alg}"
        );
    }
}

#[test]
fn spec_b2_10_es384_key_is_refused_for_a_heart_client_at_registration() {
    let k = SigningKey::generate(Algorithm::ES384).unwrap();
    let heart = json!({"client_id": "h", "profile": "heart",
        "redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [k.verifying_key().to_jwk()]}});
    assert_eq!(
        register(&heart).unwrap_err(),
        MetadataError::InvalidClientMetadata("jwks algorithm")
    );
}

#[test]
fn j17_p521_jwk_is_refused_at_registration_even_under_smart() {
    let c = b64::encode([1u8; 66]);
    let mut v = smart_backend("backend", &SigningKey::generate(Algorithm::ES256).unwrap());
    v["jwks"] = json!({"keys": [{"kty": "EC", "crv": "P-521", "x": c, "y": c}]});
    assert_eq!(
        register(&v).unwrap_err(),
        MetadataError::InvalidJwks(heartgate_core::jose::KeyError::UnsupportedCurve)
    );
}

#[test]
fn j4_assertion_in_es384_is_refused_for_a_client_registered_for_rs384() {
    // The registered token_endpoint_auth_signing_alg narrows the SMART set to one algorithm.
    let mut f = fixture();
    let ec = SigningKey::generate(Algorithm::ES384).unwrap();
    let rsa = SigningKey::generate(Algorithm::RS384).unwrap();
    let mut v = smart_backend("backend", &rsa);
    v["jwks"]["keys"]
        .as_array_mut()
        .unwrap()
        .push(Value::Object(ec.verifying_key().to_jwk()));
    v["token_endpoint_auth_signing_alg"] = json!("RS384");
    f.dir.0.insert("backend".into(), client(v));
    let t = assertion(&ec, claims("backend", json!(TOKEN)));
    assert!(is_invalid_client(&f.refused(&pkjwt(&t))));
    let t = assertion(&rsa, claims("backend", json!(TOKEN)));
    assert_eq!(f.auth(&pkjwt(&t)).unwrap().client_id(), "backend");
}

/// THREATS C10, C18: no secret, in the body or in Basic, is ever a credential. So C11
/// (brute-forcing a client secret) has nothing to guess: heartgate has no client
/// secrets; its password guessing limits are the users' (`[login]`, users.rs tests).
#[test]
fn c10_c18_client_secrets_are_never_accepted() {
    let f = fixture();
    for creds in [
        ClientCredentials {
            client_id: Some("public"),
            client_secret: Some("s"),
            ..Default::default()
        },
        ClientCredentials {
            client_id: Some("fapi"),
            basic_authorization: true,
            ..Default::default()
        },
    ] {
        assert!(is_invalid_client(&f.refused(&creds)));
    }
}

#[test]
fn c12_unknown_client_gets_the_same_error_kind_as_a_bad_credential() {
    let f = fixture();
    let unknown = f.refused(&ClientCredentials {
        client_id: Some("nobody"),
        ..Default::default()
    });
    let t = assertion(&f.fapi_key, claims("nobody", json!(ISS)));
    let unknown_pkjwt = f.refused(&pkjwt(&t));
    let wrong = f.refused(&pkjwt(&assertion(&f.other_key, claims("fapi", json!(ISS)))));
    for e in [unknown, unknown_pkjwt, wrong] {
        assert!(is_invalid_client(&e));
    }
}

/// THREATS C13 (no certificate at all) and C14 (a certificate whose subject does not
/// match): `invalid_client`.
#[test]
fn c13_c14_tls_client_auth_needs_the_matching_certificate() {
    let f = fixture();
    let ok = f
        .auth(&ClientCredentials {
            client_id: Some("mtls"),
            certificate: Some(&f.mtls_cert),
            certificate_chain_verified: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(ok.method(), AuthMethod::TlsClientAuth);
    // RFC 8705 §2.1: the right subject is not enough without a chain to a client CA.
    assert!(is_invalid_client(&f.refused(&ClientCredentials {
        client_id: Some("mtls"),
        certificate: Some(&f.mtls_cert),
        ..Default::default()
    })));
    assert!(is_invalid_client(&f.refused(&ClientCredentials {
        client_id: Some("mtls"),
        ..Default::default()
    })));
    let other = cert_with_dn("intruder");
    assert!(is_invalid_client(&f.refused(&ClientCredentials {
        client_id: Some("mtls"),
        certificate: Some(&other),
        certificate_chain_verified: true,
        ..Default::default()
    })));
    assert!(is_invalid_client(&f.refused(&ClientCredentials {
        certificate: Some(&f.mtls_cert),
        ..Default::default()
    })));
}

#[test]
fn c16_self_signed_client_needs_its_registered_key() {
    let f = fixture();
    assert!(f
        .auth(&ClientCredentials {
            client_id: Some("selfsigned"),
            certificate: Some(&f.self_signed),
            ..Default::default()
        })
        .is_ok());
    assert!(is_invalid_client(&f.refused(&ClientCredentials {
        client_id: Some("selfsigned"),
        certificate: Some(&f.mtls_cert),
        ..Default::default()
    })));
}

#[test]
fn c16_kept_certificate_facts_are_used_only_for_their_own_certificate() {
    use heartgate_core::mtls::{thumbprint, CertificateFacts};
    let f = fixture();
    let own = CertificateFacts::of(&f.self_signed).unwrap();
    let c = f
        .auth(&ClientCredentials {
            client_id: Some("selfsigned"),
            certificate: Some(&f.self_signed),
            certificate_facts: Some(&own),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(c.certificate(), Some(thumbprint(&f.self_signed).unwrap()));
    // Facts of the registered certificate next to another certificate: they describe
    // something else, so the presented certificate is read and refused (M3).
    assert!(!own.describe(&f.mtls_cert));
    assert!(is_invalid_client(&f.refused(&ClientCredentials {
        client_id: Some("selfsigned"),
        certificate: Some(&f.mtls_cert),
        certificate_facts: Some(&own),
        ..Default::default()
    })));
    // M5: facts are only made of exactly one well-formed certificate.
    let mut trailing = f.self_signed.clone();
    trailing.push(0);
    assert!(CertificateFacts::of(&trailing).is_err());
    assert!(CertificateFacts::of(b"not a certificate").is_err());
}

#[test]
fn public_clients_authenticate_by_id_and_confidential_ones_cannot() {
    let f = fixture();
    assert_eq!(
        f.auth(&ClientCredentials {
            client_id: Some("public"),
            ..Default::default()
        })
        .unwrap()
        .method(),
        AuthMethod::None
    );
    assert!(is_invalid_client(&f.refused(&ClientCredentials {
        client_id: Some("fapi"),
        ..Default::default()
    })));
}

#[test]
fn c19_a_client_removed_between_calls_is_refused() {
    let mut f = fixture();
    f.dir.0.remove("public");
    assert!(is_invalid_client(&f.refused(&ClientCredentials {
        client_id: Some("public"),
        ..Default::default()
    })));
}

#[test]
fn a_store_failure_fails_closed() {
    // The shared FlakyStore, not `store::conformance::Unavailable`: that one needs the
    // `store-conformance` feature, which `cargo clippy -p heartgate-core` alone lacks.
    let down = common::FlakyStore::default();
    down.set_down(true);
    let f = fixture();
    let t = assertion(&f.fapi_key, claims("fapi", json!(ISS)));
    assert_eq!(
        authenticate(
            &pkjwt(&t),
            &f.dir,
            &endpoints(),
            &down,
            NOW,
            &heartgate_core::audit::NoAudit
        )
        .unwrap_err(),
        ClientAuthError::Unavailable
    );
}

#[test]
fn every_authentication_failure_is_audited_with_its_reason_and_never_the_assertion() {
    use heartgate_core::audit::{EventKind, MemoryAuditSink, Outcome};
    let f = fixture();
    let sink = MemoryAuditSink::new();
    let good = assertion(&f.fapi_key, claims("fapi", json!(ISS)));
    let bad = assertion(&f.other_key, claims("fapi", json!(ISS)));
    for a in [&good, &bad] {
        let _ = authenticate(&pkjwt(a), &f.dir, &endpoints(), &f.store, NOW, &sink);
    }
    let unknown = ClientCredentials {
        client_id: Some("nobody"),
        ..Default::default()
    };
    let _ = authenticate(&unknown, &f.dir, &endpoints(), &f.store, NOW, &sink);
    let ev = sink.events();
    // The success is not an event of its own (DESIGN.md §Audit): what the client does
    // next is, with its client_id and certificate.
    assert_eq!(ev.len(), 2);
    assert!(ev.iter().all(|e| e.kind == EventKind::ClientAuthentication));
    assert!(ev.iter().all(|e| e.outcome == Outcome::Failure));
    // An assertion names its client only inside the unverified JWT: no id is recorded.
    assert_eq!(ev[0].client_id, None);
    assert_eq!(ev[1].client_id.as_deref(), Some("nobody"), "claimed id");
    // The audit keeps the precise reason the caller is not told (C12).
    assert_ne!(ev[0].reason, ev[1].reason);
    let all = serde_json::to_string(&ev).unwrap();
    assert!(!all.contains(&good) && !all.contains(&bad));
}
