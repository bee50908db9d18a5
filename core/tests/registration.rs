//! Dynamic client registration and management (RFC 7591, RFC 7592; THREATS D1-D10, C19)
//! through the public API, with the in-memory store. Every refusal is asserted together
//! with its RFC code and, where it matters, an unchanged store.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use std::collections::HashMap;

mod common;

use common::FlakyStore;
use heartgate_core::audit::{EventKind, MemoryAuditSink, Outcome};
use heartgate_core::client::*;
use heartgate_core::clock::UnixTime;
use heartgate_core::error::ToWire;
use heartgate_core::jose::{b64, sign_jwt, Algorithm, JwkSet, SigningKey};
use heartgate_core::profile::Profile;
use heartgate_core::store::{MemoryStore, Namespace, SnapshotEntry, Store, StoreError};
use heartgate_core::token::TokenHash;
use serde_json::{json, Value};

const ISS: &str = "https://as.example";
const ENDPOINT: &str = "https://as.example/register";
const IAT: &str = "hgiat_the-initial-access-token-of-the-clinic";
const STATEMENT_ISS: &str = "https://statements.example";
const NOW: UnixTime = UnixTime(1_700_000_000);

fn config() -> RegistrarConfig {
    RegistrarConfig::new(ENDPOINT, Some(TokenHash::of(IAT)))
}

fn jwks(k: &SigningKey) -> Value {
    json!({"keys": [k.verifying_key().to_jwk()]})
}

/// A HEART confidential web client.
fn heart(k: &SigningKey) -> Value {
    json!({"profile": "heart", "client_name": "Clinic app",
        "redirect_uris": ["https://app.example/cb"],
        "token_endpoint_auth_method": "private_key_jwt", "jwks": jwks(k)})
}

/// A HEART public native client (PKCE, no keys).
fn heart_native() -> Value {
    json!({"profile": "heart", "redirect_uris": ["http://127.0.0.1/cb"],
        "token_endpoint_auth_method": "none"})
}

/// A complete FAPI 2.0 Security Profile client.
fn fapi(k: &SigningKey) -> Value {
    json!({"profile": "fapi2-security", "redirect_uris": ["https://app.example/cb"],
        "token_endpoint_auth_method": "private_key_jwt", "jwks": jwks(k),
        "require_pushed_authorization_requests": true,
        "tls_client_certificate_bound_access_tokens": true})
}

fn with(mut v: Value, k: &str, x: Value) -> Value {
    v[k] = x;
    v
}

fn without(mut v: Value, k: &str) -> Value {
    v.as_object_mut().unwrap().remove(k);
    v
}

fn bytes(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

struct Fixture {
    store: MemoryStore,
    audit: MemoryAuditSink,
    key: SigningKey,
    statement_key: SigningKey,
}

fn fixture() -> Fixture {
    Fixture {
        store: MemoryStore::new(),
        audit: MemoryAuditSink::new(),
        key: SigningKey::generate(Algorithm::ES256).unwrap(),
        statement_key: SigningKey::generate(Algorithm::ES256).unwrap(),
    }
}

impl Fixture {
    fn registrar(&self, config: RegistrarConfig) -> Registrar<'_> {
        Registrar::new(config, &self.audit)
    }

    /// A registrar that trusts `statement_key` for `STATEMENT_ISS`.
    fn statement_registrar(&self, required: bool) -> Registrar<'_> {
        let mut c = config();
        c.software_statements = SoftwareStatementPolicy {
            trusted_issuers: vec![TrustedStatementIssuer {
                issuer: STATEMENT_ISS.into(),
                keys: JwkSet::new(vec![self.statement_key.verifying_key().clone()]).unwrap(),
                audience: None,
            }],
            required,
        };
        self.registrar(c)
    }

    fn register(&self, r: &Registrar<'_>, body: &Value) -> ClientInformation {
        r.register(Some(IAT), &bytes(body), &self.store, NOW)
            .unwrap()
    }

    fn snapshot(&self) -> Vec<SnapshotEntry> {
        self.store.snapshot(NOW).unwrap()
    }

    /// Run `op`, assert it was refused and left the store exactly as it was.
    fn refused<T: std::fmt::Debug>(
        &self,
        op: impl FnOnce() -> Result<T, RegistrationError>,
    ) -> RegistrationError {
        let before = self.snapshot();
        let err = op().unwrap_err();
        assert_eq!(
            self.snapshot(),
            before,
            "store changed by a refused request"
        );
        err
    }

    /// Refused registration of `body` with the right initial access token.
    fn refused_registration(&self, r: &Registrar<'_>, body: &Value) -> RegistrationError {
        self.refused(|| r.register(Some(IAT), &bytes(body), &self.store, NOW))
    }
}

fn token(info: &ClientInformation) -> &str {
    info.registration_access_token().expose()
}

fn is_metadata(e: &RegistrationError) -> bool {
    e.to_wire().code == "invalid_client_metadata" && e.to_wire().status == 400
}

fn response(info: &ClientInformation) -> serde_json::Map<String, Value> {
    match serde_json::from_str(&info.to_json()).unwrap() {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn statement(k: &SigningKey, claims: Value) -> String {
    sign_jwt(k, None, claims.as_object().unwrap()).unwrap()
}

fn statement_claims() -> Value {
    json!({"iss": STATEMENT_ISS, "iat": NOW.0, "exp": NOW.0 + 3600,
        "client_name": "Vetted app", "redirect_uris": ["https://vetted.example/cb"],
        "software_id": "4NRB1-0XZABZI9E6-5SM3R"})
}

// --- registration and authentication ---------------------------------------------------

#[test]
fn register_then_authenticate_with_private_key_jwt_through_the_store_directory() {
    let f = fixture();
    let r = f.registrar(config());
    let info = f.register(&r, &heart(&f.key));
    let id = info.client_id().to_owned();
    assert!(
        b64::decode(&id).unwrap().len() >= 16,
        "D7: ≥ 128 random bits"
    );
    assert_eq!(info.registration_client_uri(), format!("{ENDPOINT}/{id}"));
    assert_eq!(info.client_id_issued_at(), NOW);
    assert!(token(&info).starts_with(REGISTRATION_TOKEN_PREFIX));
    assert_eq!(token(&info).len(), REGISTRATION_TOKEN_PREFIX.len() + 43);
    let body = response(&info);
    assert_eq!(body["client_id"], json!(id));
    assert_eq!(body["client_id_issued_at"], json!(NOW.0));
    assert_eq!(body["registration_access_token"], json!(token(&info)));
    assert_eq!(
        body["registration_client_uri"],
        json!(format!("{ENDPOINT}/{id}"))
    );
    assert_eq!(body["redirect_uris"], json!(["https://app.example/cb"]));
    assert_eq!(body["token_endpoint_auth_method"], json!("private_key_jwt"));

    let dir = StoreClientDirectory::new(&f.store, NOW);
    let claims = json!({"iss": id, "sub": id, "aud": ISS, "iat": NOW.0, "exp": NOW.0 + 60,
        "jti": "a-fresh-jti-with-enough-entropy-0001"});
    let assertion = sign_jwt(&f.key, None, claims.as_object().unwrap()).unwrap();
    let creds = ClientCredentials {
        client_assertion_type: Some(JWT_BEARER_ASSERTION_TYPE),
        client_assertion: Some(&assertion),
        ..Default::default()
    };
    let endpoints = Endpoints {
        issuer: ISS.into(),
        token: format!("{ISS}/token"),
        par: format!("{ISS}/par"),
    };
    let ok = authenticate(
        &creds,
        &dir,
        &endpoints,
        &f.store,
        NOW,
        &heartgate_core::audit::NoAudit,
    )
    .unwrap();
    assert_eq!(ok.client_id(), id);
    assert_eq!(ok.method(), AuthMethod::PrivateKeyJwt);
    assert_eq!(dir.store_status(), Ok(()));
    assert_eq!(
        dir.provenance(&id),
        Some(Provenance::Dynamic {
            issued_at: NOW,
            software_statement_issuer: None
        })
    );
}

#[test]
fn d8_only_the_hash_of_the_registration_token_is_stored() {
    let f = fixture();
    let r = f.registrar(config());
    let info = f.register(&r, &heart(&f.key));
    let snapshot = f.snapshot();
    assert_eq!(snapshot.len(), 1);
    let (ns, key, value) = &snapshot[0];
    assert_eq!(*ns, Namespace::Client);
    assert_eq!(key.as_slice(), info.client_id().as_bytes());
    let random_part = &token(&info).as_bytes()[REGISTRATION_TOKEN_PREFIX.len()..];
    assert!(
        !value.windows(random_part.len()).any(|w| w == random_part),
        "raw token at rest"
    );
}

#[test]
fn static_clients_are_layered_in_front_of_registered_ones() {
    let f = fixture();
    let r = f.registrar(config());
    let info = f.register(&r, &heart(&f.key));
    let mut statics = HashMap::new();
    statics.insert(
        "static-1".to_owned(),
        std::sync::Arc::new(
            ClientMetadata::from_json(&bytes(&with(heart(&f.key), "client_id", json!("static-1"))))
                .unwrap()
                .validate()
                .unwrap(),
        ),
    );
    let dir = StoreClientDirectory::new(&f.store, NOW).with_static_clients(&statics);
    assert_eq!(
        dir.client("static-1").unwrap().metadata().client_id,
        "static-1"
    );
    assert_eq!(
        dir.client(info.client_id()).unwrap().metadata().client_id,
        info.client_id()
    );
    assert_eq!(dir.provenance("static-1"), Some(Provenance::Static));
    assert!(dir.client("unknown").is_none());
    assert!(dir.provenance("unknown").is_none());
}

#[test]
fn jwks_uri_clients_get_no_keys_from_the_store_directory() {
    let f = fixture();
    let r = f.registrar(config());
    let body = with(
        without(heart(&f.key), "jwks"),
        "jwks_uri",
        json!("https://app.example/jwks"),
    );
    let info = f.register(&r, &body);
    let dir = StoreClientDirectory::new(&f.store, NOW);
    let client = dir.client(info.client_id()).unwrap();
    assert!(
        dir.keys(&client).is_none(),
        "fetching jwks_uri is the server's"
    );
}

// --- the initial access token (RFC 7591 §3, D10) ---------------------------------------

#[test]
fn d10_missing_initial_access_token_is_invalid_token() {
    let f = fixture();
    let r = f.registrar(config());
    let e = f.refused(|| r.register(None, &bytes(&heart(&f.key)), &f.store, NOW));
    assert_eq!(e, RegistrationError::InvalidToken);
    assert_eq!(
        (e.to_wire().code, e.to_wire().status),
        ("invalid_token", 401)
    );
}

#[test]
fn d10_wrong_initial_access_token_is_invalid_token() {
    let f = fixture();
    let r = f.registrar(config());
    for wrong in [
        "",
        "hgiat_the-initial-access-token-of-the-clinix",
        &IAT[..IAT.len() - 1],
    ] {
        let e = f.refused(|| r.register(Some(wrong), &bytes(&heart(&f.key)), &f.store, NOW));
        assert_eq!(e, RegistrationError::InvalidToken, "{wrong:?}");
    }
}

#[test]
fn d10_registration_without_an_initial_access_token_policy_is_closed() {
    let f = fixture();
    let r = f.registrar(RegistrarConfig::new(ENDPOINT, None));
    for t in [None, Some(IAT), Some("")] {
        let e = f.refused(|| r.register(t, &bytes(&heart(&f.key)), &f.store, NOW));
        assert_eq!(e, RegistrationError::InvalidToken);
    }
}

#[test]
fn the_body_is_not_judged_without_the_initial_access_token() {
    let f = fixture();
    let r = f.registrar(config());
    let e = f.refused(|| r.register(Some("wrong"), b"{not json", &f.store, NOW));
    assert_eq!(e, RegistrationError::InvalidToken);
}

// --- request parsing -------------------------------------------------------------------

#[test]
fn malformed_duplicate_and_oversized_bodies_are_invalid_client_metadata() {
    let f = fixture();
    let r = f.registrar(config());
    let mut big = heart(&f.key);
    big["client_name"] = json!("x".repeat(MAX_REGISTRATION_BODY_LEN));
    let dup = br#"{"profile":"heart","profile":"smart","token_endpoint_auth_method":"none","redirect_uris":["http://127.0.0.1/cb"]}"#;
    for body in [
        b"{not json".to_vec(),
        b"[]".to_vec(),
        dup.to_vec(),
        bytes(&big),
    ] {
        let e = f.refused(|| r.register(Some(IAT), &body, &f.store, NOW));
        assert!(is_metadata(&e), "{e:?}");
    }
}

#[test]
fn profile_is_required_unless_a_default_is_configured() {
    let f = fixture();
    let e = f.refused_registration(&f.registrar(config()), &without(heart_native(), "profile"));
    assert!(is_metadata(&e), "{e:?}");
    let mut c = config();
    c.default_profile = Some(Profile::Heart);
    let info = f.register(&f.registrar(c), &without(heart_native(), "profile"));
    assert_eq!(info.metadata().profile, Profile::Heart);
}

#[test]
fn a_profile_not_open_to_dynamic_registration_is_refused() {
    let f = fixture();
    let mut c = config();
    c.profiles = vec![Profile::Fapi2Security];
    let r = f.registrar(c);
    let e = f.refused_registration(&r, &heart(&f.key));
    assert_eq!(
        e,
        RegistrationError::Metadata(MetadataError::InvalidClientMetadata(
            "profile not open to dynamic registration"
        ))
    );
    f.register(&r, &fapi(&f.key));
}

// --- D1, D3, D4, D6: metadata that validate() refuses ---------------------------------

#[test]
fn d1_bad_redirect_uris_are_invalid_redirect_uri() {
    let f = fixture();
    let r = f.registrar(config());
    let long = format!("https://app.example/{}", "a".repeat(2048));
    for u in [
        "http://app.example/cb",
        "javascript:alert(1)",
        "data:text/html,hi",
        "file:///etc/passwd",
        "https://app.example/cb#frag",
        "https://*.example/cb",
        "https://user:pw@app.example/cb",
        "/relative/cb",
        long.as_str(),
    ] {
        let e = f.refused_registration(&r, &with(heart(&f.key), "redirect_uris", json!([u])));
        assert!(
            matches!(
                e,
                RegistrationError::Metadata(MetadataError::InvalidRedirectUri(_))
            ),
            "{u}: {e:?}"
        );
        assert_eq!(
            (e.to_wire().code, e.to_wire().status),
            ("invalid_redirect_uri", 400)
        );
    }
}

#[test]
fn d1_a_thousand_redirect_uris_are_refused() {
    let f = fixture();
    let r = f.registrar(config());
    let many: Vec<String> = (0..1000)
        .map(|i| format!("https://app.example/cb{i}"))
        .collect();
    let e = f.refused_registration(&r, &with(heart(&f.key), "redirect_uris", json!(many)));
    assert_eq!(
        (e.to_wire().status, e.to_wire().code),
        (400, "invalid_redirect_uri"),
        "THREATS D1"
    );
}

#[test]
fn d3_jwks_with_jwks_uri_is_invalid_client_metadata() {
    let f = fixture();
    let r = f.registrar(config());
    let e = f.refused_registration(
        &r,
        &with(heart(&f.key), "jwks_uri", json!("https://app.example/jwks")),
    );
    assert_eq!(
        e,
        RegistrationError::Metadata(MetadataError::InvalidClientMetadata("jwks and jwks_uri"))
    );
}

#[test]
fn d4_private_symmetric_weak_and_duplicate_keys_are_refused() {
    use heartgate_core::jose::KeyError;
    let f = fixture();
    let r = f.registrar(config());
    let mut private = jwks(&f.key);
    private["keys"][0]["d"] = json!("AAAA");
    let oct = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
    let weak_rsa = json!({"keys": [{"kty": "RSA", "alg": "RS256", "e": "AQAB",
        "n": b64::encode([0xc3u8; 128])}]});
    let a = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("a")
        .unwrap();
    let b = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("a")
        .unwrap();
    let dup = json!({"keys": [a.verifying_key().to_jwk(), b.verifying_key().to_jwk()]});
    for (set, expected) in [
        (private, KeyError::PrivateMembers),
        (oct, KeyError::Symmetric),
        (weak_rsa, KeyError::RsaTooSmall),
        (dup, KeyError::DuplicateKid),
    ] {
        let e = f.refused_registration(&r, &with(heart(&f.key), "jwks", set));
        assert_eq!(
            e,
            RegistrationError::Metadata(MetadataError::InvalidJwks(expected))
        );
        assert!(is_metadata(&e));
    }
}

#[test]
fn d6_metadata_that_breaks_the_profile_is_invalid_client_metadata() {
    let f = fixture();
    let r = f.registrar(config());
    let mtls = with(
        without(fapi(&f.key), "jwks"),
        "token_endpoint_auth_method",
        json!("tls_client_auth"),
    );
    let ciba = with(
        with(
            with(
                fapi(&f.key),
                "grant_types",
                json!(["urn:openid:params:grant-type:ciba"]),
            ),
            "backchannel_token_delivery_mode",
            json!("ping"),
        ),
        "backchannel_client_notification_endpoint",
        json!("http://clinic.example/ciba"),
    );
    for (what, body) in [
        (
            "none under FAPI",
            with(
                without(fapi(&f.key), "jwks"),
                "token_endpoint_auth_method",
                json!("none"),
            ),
        ),
        (
            "client_secret_basic under FAPI",
            with(
                fapi(&f.key),
                "token_endpoint_auth_method",
                json!("client_secret_basic"),
            ),
        ),
        (
            "implicit",
            with(fapi(&f.key), "grant_types", json!(["implicit"])),
        ),
        (
            "response_types token",
            with(fapi(&f.key), "response_types", json!(["token"])),
        ),
        ("http notification endpoint", ciba),
        ("tls_client_auth without a subject", mtls),
    ] {
        let e = f.refused_registration(&r, &body);
        assert!(is_metadata(&e), "{what}: {e:?}");
    }
}

/// A HEART CIBA client in ping mode.
fn ciba_ping(k: &SigningKey) -> Value {
    json!({"profile": "heart", "token_endpoint_auth_method": "private_key_jwt", "jwks": jwks(k),
        "grant_types": ["urn:openid:params:grant-type:ciba"],
        "backchannel_token_delivery_mode": "ping",
        "backchannel_client_notification_endpoint": "https://clinic.example/ciba"})
}

#[test]
fn ciba_clients_register_with_their_delivery_metadata() {
    let f = fixture();
    let r = f.registrar(config());
    let info = f.register(&r, &ciba_ping(&f.key));
    let md = info.metadata();
    assert_eq!(md.backchannel_token_delivery_mode, Some(DeliveryMode::Ping));
    assert_eq!(
        md.backchannel_client_notification_endpoint.as_deref(),
        Some("https://clinic.example/ciba")
    );
    let poll = with(
        with(
            without(
                ciba_ping(&f.key),
                "backchannel_client_notification_endpoint",
            ),
            "backchannel_token_delivery_mode",
            json!("poll"),
        ),
        "backchannel_user_code_parameter",
        json!(true),
    );
    let info = f.register(
        &r,
        &with(
            poll,
            "backchannel_authentication_request_signing_alg",
            json!("ES256"),
        ),
    );
    assert!(info.metadata().backchannel_user_code_parameter);
    let push = with(
        ciba_ping(&f.key),
        "backchannel_token_delivery_mode",
        json!("push"),
    );
    assert_eq!(
        f.register(&r, &push)
            .metadata()
            .backchannel_token_delivery_mode,
        Some(DeliveryMode::Push)
    );
}

#[test]
fn ciba_metadata_that_breaks_the_rules_is_invalid_client_metadata() {
    let f = fixture();
    let mut c = config();
    c.profiles = Profile::ALL.to_vec();
    let r = f.registrar(c);
    let ping = ciba_ping(&f.key);
    let fapi_ciba = with(
        with(
            with(
                fapi(&f.key),
                "grant_types",
                json!(["urn:openid:params:grant-type:ciba"]),
            ),
            "backchannel_token_delivery_mode",
            json!("ping"),
        ),
        "backchannel_client_notification_endpoint",
        json!("https://clinic.example/ciba"),
    );
    assert!(r
        .register(Some(IAT), &bytes(&fapi_ciba), &f.store, NOW)
        .is_ok());
    let cases = [
        (
            "no delivery mode",
            without(ping.clone(), "backchannel_token_delivery_mode"),
        ),
        (
            "unknown delivery mode",
            with(
                ping.clone(),
                "backchannel_token_delivery_mode",
                json!("email"),
            ),
        ),
        (
            "ping without endpoint",
            without(ping.clone(), "backchannel_client_notification_endpoint"),
        ),
        (
            "http endpoint",
            with(
                ping.clone(),
                "backchannel_client_notification_endpoint",
                json!("http://clinic.example/ciba"),
            ),
        ),
        (
            "fragment",
            with(
                ping.clone(),
                "backchannel_client_notification_endpoint",
                json!("https://clinic.example/ciba#x"),
            ),
        ),
        (
            "b14 loopback",
            with(
                ping.clone(),
                "backchannel_client_notification_endpoint",
                json!("https://127.0.0.1/ciba"),
            ),
        ),
        (
            "b14 rfc1918",
            with(
                ping.clone(),
                "backchannel_client_notification_endpoint",
                json!("https://192.168.0.10/ciba"),
            ),
        ),
        (
            "b14 metadata address",
            with(
                ping.clone(),
                "backchannel_client_notification_endpoint",
                json!("https://169.254.169.254/ciba"),
            ),
        ),
        (
            "b14 ipv6 ula",
            with(
                ping.clone(),
                "backchannel_client_notification_endpoint",
                json!("https://[fd12:3456::1]/ciba"),
            ),
        ),
        (
            "b14 localhost",
            with(
                ping.clone(),
                "backchannel_client_notification_endpoint",
                json!("https://localhost/ciba"),
            ),
        ),
        (
            "alg none",
            with(
                ping.clone(),
                "backchannel_authentication_request_signing_alg",
                json!("none"),
            ),
        ),
        (
            "alg HS256",
            with(
                ping.clone(),
                "backchannel_authentication_request_signing_alg",
                json!("HS256"),
            ),
        ),
        (
            "user code not a bool",
            with(
                ping.clone(),
                "backchannel_user_code_parameter",
                json!("yes"),
            ),
        ),
        (
            "public client",
            with(
                without(
                    with(
                        ping.clone(),
                        "backchannel_token_delivery_mode",
                        json!("poll"),
                    ),
                    "jwks",
                ),
                "token_endpoint_auth_method",
                json!("none"),
            ),
        ),
        (
            "push under FAPI",
            with(
                fapi_ciba.clone(),
                "backchannel_token_delivery_mode",
                json!("push"),
            ),
        ),
        (
            "RS256 under FAPI",
            with(
                fapi_ciba.clone(),
                "backchannel_authentication_request_signing_alg",
                json!("RS256"),
            ),
        ),
        (
            "push with bound tokens",
            with(
                with(ping, "backchannel_token_delivery_mode", json!("push")),
                "tls_client_certificate_bound_access_tokens",
                json!(true),
            ),
        ),
    ];
    for (what, body) in cases {
        let e = f.refused_registration(&r, &body);
        assert!(is_metadata(&e), "{what}: {e:?}");
    }
}

#[test]
fn heart_refuses_dynamic_client_credentials() {
    let f = fixture();
    let r = f.registrar(config());
    let body = with(
        without(heart(&f.key), "redirect_uris"),
        "grant_types",
        json!(["client_credentials"]),
    );
    let e = f.refused_registration(&r, &body);
    assert_eq!(
        e,
        RegistrationError::Metadata(MetadataError::InvalidClientMetadata(
            "client_credentials is not open to dynamic registration"
        ))
    );
}

#[test]
fn client_credentials_is_refused_under_every_profile() {
    let f = fixture();
    let mut c = config();
    c.profiles = Profile::ALL.to_vec();
    let r = f.registrar(c);
    let smart = json!({"profile": "smart", "token_endpoint_auth_method": "private_key_jwt",
        "jwks": jwks(&f.key), "grant_types": ["client_credentials"], "scope": "system/*.rs"});
    let backend = with(smart.clone(), "profile", json!("smart-backend"));
    for body in [smart, backend] {
        let e = f.refused_registration(&r, &body);
        assert!(is_metadata(&e), "{body}: {e:?}");
    }
}

#[test]
fn i2_a_dynamic_client_cannot_claim_to_serve_resources() {
    let f = fixture();
    let r = f.registrar(config());
    let e = f.refused_registration(
        &r,
        &with(
            heart(&f.key),
            "resources",
            json!(["https://fhir.example/r4"]),
        ),
    );
    assert!(is_metadata(&e), "{e:?}");
}

// --- D5: software statements -----------------------------------------------------------

#[test]
fn d5_statement_values_win_over_the_request_and_the_statement_is_echoed() {
    let f = fixture();
    let r = f.statement_registrar(false);
    let jwt = statement(&f.statement_key, statement_claims());
    let body = with(heart(&f.key), "software_statement", json!(jwt));
    let info = f.register(&r, &body);
    assert_eq!(info.metadata().client_name.as_deref(), Some("Vetted app"));
    assert_eq!(info.metadata().redirect_uris, ["https://vetted.example/cb"]);
    assert_eq!(info.software_statement(), Some(jwt.as_str()));
    let resp = response(&info);
    assert_eq!(
        resp["software_statement"],
        json!(jwt),
        "RFC 7591 §3.2.1: unmodified"
    );
    assert_eq!(resp["client_name"], json!("Vetted app"));
    assert!(
        !resp.contains_key("software_id"),
        "unknown members are not echoed"
    );
    let dir = StoreClientDirectory::new(&f.store, NOW);
    assert_eq!(
        dir.provenance(info.client_id()),
        Some(Provenance::Dynamic {
            issued_at: NOW,
            software_statement_issuer: Some(STATEMENT_ISS.into())
        })
    );
}

#[test]
fn d5_bad_signature_is_invalid_software_statement() {
    let f = fixture();
    let r = f.statement_registrar(false);
    let forged = statement(&f.key, statement_claims());
    let e = f.refused_registration(
        &r,
        &with(heart(&f.key), "software_statement", json!(forged)),
    );
    assert_eq!(e, RegistrationError::InvalidSoftwareStatement("signature"));
    assert_eq!(
        (e.to_wire().code, e.to_wire().status),
        ("invalid_software_statement", 400)
    );
    // A tampered payload under a genuine signature.
    let jwt = statement(&f.statement_key, statement_claims());
    let mut parts: Vec<String> = jwt.split('.').map(str::to_owned).collect();
    let mut claims = statement_claims();
    claims["redirect_uris"] = json!(["https://evil.example/cb"]);
    parts[1] = b64::encode(claims.to_string());
    let e = f.refused_registration(
        &r,
        &with(heart(&f.key), "software_statement", json!(parts.join("."))),
    );
    assert_eq!(e, RegistrationError::InvalidSoftwareStatement("signature"));
}

#[test]
fn d5_untrusted_issuer_is_unapproved_software_statement() {
    let f = fixture();
    let r = f.statement_registrar(false);
    let jwt = statement(
        &f.statement_key,
        with(statement_claims(), "iss", json!("https://evil.example")),
    );
    let e = f.refused_registration(&r, &with(heart(&f.key), "software_statement", json!(jwt)));
    assert_eq!(e, RegistrationError::UnapprovedSoftwareStatement);
    assert_eq!(
        (e.to_wire().code, e.to_wire().status),
        ("unapproved_software_statement", 400)
    );
    // With no trusted issuer configured at all, every statement is unapproved.
    let r = f.registrar(config());
    let jwt = statement(&f.statement_key, statement_claims());
    let e = f.refused_registration(&r, &with(heart(&f.key), "software_statement", json!(jwt)));
    assert_eq!(e, RegistrationError::UnapprovedSoftwareStatement);
}

#[test]
fn d5_expired_statement_is_invalid_software_statement() {
    let f = fixture();
    let r = f.statement_registrar(false);
    let claims = with(
        with(statement_claims(), "exp", json!(NOW.0 - 60)),
        "iat",
        json!(NOW.0 - 3600),
    );
    let jwt = statement(&f.statement_key, claims);
    let e = f.refused_registration(&r, &with(heart(&f.key), "software_statement", json!(jwt)));
    assert_eq!(e, RegistrationError::InvalidSoftwareStatement("expired"));
}

#[test]
fn d5_statement_without_exp_is_invalid() {
    let f = fixture();
    let r = f.statement_registrar(false);
    let jwt = statement(&f.statement_key, without(statement_claims(), "exp"));
    let e = f.refused_registration(&r, &with(heart(&f.key), "software_statement", json!(jwt)));
    assert!(
        matches!(e, RegistrationError::InvalidSoftwareStatement(_)),
        "{e:?}"
    );
}

#[test]
fn d5_statement_with_an_unexpected_aud_or_a_non_string_is_invalid() {
    let f = fixture();
    let r = f.statement_registrar(false);
    let jwt = statement(
        &f.statement_key,
        with(statement_claims(), "aud", json!(ISS)),
    );
    let e = f.refused_registration(&r, &with(heart(&f.key), "software_statement", json!(jwt)));
    assert!(
        matches!(e, RegistrationError::InvalidSoftwareStatement(_)),
        "{e:?}"
    );
    let e = f.refused_registration(
        &r,
        &with(
            heart(&f.key),
            "software_statement",
            json!({"iss": STATEMENT_ISS}),
        ),
    );
    assert_eq!(
        e,
        RegistrationError::InvalidSoftwareStatement("not a string")
    );
}

#[test]
fn d5_absent_statement_when_required_is_invalid_software_statement() {
    let f = fixture();
    let r = f.statement_registrar(true);
    let e = f.refused_registration(&r, &heart(&f.key));
    assert_eq!(e, RegistrationError::InvalidSoftwareStatement("absent"));
    let jwt = statement(&f.statement_key, statement_claims());
    f.register(&r, &with(heart(&f.key), "software_statement", json!(jwt)));
}

#[test]
fn d5_statement_algorithm_must_be_allowed_by_the_profile() {
    let f = fixture();
    let rsa = SigningKey::generate(Algorithm::RS256).unwrap();
    let mut c = config();
    c.software_statements.trusted_issuers = vec![TrustedStatementIssuer {
        issuer: STATEMENT_ISS.into(),
        keys: JwkSet::new(vec![rsa.verifying_key().clone()]).unwrap(),
        audience: None,
    }];
    let r = f.registrar(c);
    let claims = without(statement_claims(), "redirect_uris");
    let jwt = statement(&rsa, claims);
    // RS256 is fine for HEART, forbidden by FAPI 2.0 (§5.4.1).
    f.register(
        &r,
        &with(heart(&f.key), "software_statement", json!(jwt.clone())),
    );
    let e = f.refused_registration(&r, &with(fapi(&f.key), "software_statement", json!(jwt)));
    assert_eq!(
        e,
        RegistrationError::InvalidSoftwareStatement("algorithm not allowed by the profile")
    );
}

#[test]
fn d5_a_client_registered_with_a_statement_needs_one_to_update() {
    let f = fixture();
    let r = f.statement_registrar(false);
    let jwt = statement(&f.statement_key, statement_claims());
    let info = f.register(
        &r,
        &with(heart(&f.key), "software_statement", json!(jwt.clone())),
    );
    let id = info.client_id().to_owned();
    // Without the statement, the PUT would shed the vetted redirect URI.
    let body = with(heart(&f.key), "client_id", json!(id));
    let e = f.refused(|| r.update(&id, Some(token(&info)), &bytes(&body), &f.store, NOW));
    assert_eq!(e, RegistrationError::InvalidSoftwareStatement("absent"));
    let updated = r
        .update(
            &id,
            Some(token(&info)),
            &bytes(&with(body, "software_statement", json!(jwt))),
            &f.store,
            NOW,
        )
        .unwrap();
    assert_eq!(
        updated.metadata().redirect_uris,
        ["https://vetted.example/cb"]
    );
}

// --- D7: server-assigned ids, unknown members ----------------------------------------

#[test]
fn d7_client_chosen_client_id_is_ignored() {
    let f = fixture();
    let r = f.registrar(config());
    let info = f.register(
        &r,
        &with(heart(&f.key), "client_id", json!("i-choose-this")),
    );
    assert_ne!(info.client_id(), "i-choose-this");
    let again = f.register(
        &r,
        &with(heart(&f.key), "client_id", json!("i-choose-this")),
    );
    assert_ne!(again.client_id(), info.client_id());
    let dir = StoreClientDirectory::new(&f.store, NOW);
    assert!(dir.client("i-choose-this").is_none());
}

#[test]
fn d7_unknown_members_are_ignored_and_not_echoed() {
    let f = fixture();
    let r = f.registrar(config());
    let mut body = heart(&f.key);
    for (k, v) in [
        ("logo_uri", json!("https://app.example/logo.png")),
        ("client_name#ja-Jpan-JP", json!("クライアント名")),
        ("x_vendor_extension", json!({"nested": [1, 2, 3]})),
        ("client_secret", json!("chosen-by-the-client")),
        ("registration_access_token", json!("hgrat_chosen")),
        ("client_id_issued_at", json!(1)),
        ("tos_uri", Value::Null),
    ] {
        body[k] = v;
    }
    let info = f.register(&r, &body);
    let resp = response(&info);
    for k in [
        "logo_uri",
        "client_name#ja-Jpan-JP",
        "x_vendor_extension",
        "client_secret",
        "tos_uri",
    ] {
        assert!(!resp.contains_key(k), "{k} echoed");
    }
    assert_ne!(resp["registration_access_token"], json!("hgrat_chosen"));
    assert_eq!(resp["client_id_issued_at"], json!(NOW.0));
}

// --- D8: the registration access token -------------------------------------------------

/// Two registered clients and the registrar.
fn two_clients(f: &Fixture, r: &Registrar<'_>) -> (ClientInformation, ClientInformation) {
    (
        f.register(r, &heart(&f.key)),
        f.register(r, &heart_native()),
    )
}

#[test]
fn d8_read_returns_the_registration_and_never_a_client_secret() {
    let f = fixture();
    let r = f.registrar(config());
    let info = f.register(&r, &heart(&f.key));
    let read = r
        .read(info.client_id(), Some(token(&info)), &f.store, NOW)
        .unwrap();
    assert_eq!(read.metadata(), info.metadata());
    assert_eq!(read.client_id_issued_at(), NOW);
    assert_eq!(token(&read), token(&info));
    let updated = r
        .update(
            info.client_id(),
            Some(token(&info)),
            &bytes(&with(heart(&f.key), "client_id", json!(info.client_id()))),
            &f.store,
            NOW,
        )
        .unwrap();
    for resp in [response(&info), response(&read), response(&updated)] {
        assert!(
            resp.keys().all(|k| !k.starts_with("client_secret")),
            "{resp:?}"
        );
    }
}

#[test]
fn d8_wrong_other_clients_and_missing_tokens_are_the_same_invalid_token() {
    let f = fixture();
    let r = f.registrar(config());
    let (a, b) = two_clients(&f, &r);
    let id = a.client_id();
    let update = bytes(&with(heart(&f.key), "client_id", json!(id)));
    for t in [
        None,
        Some(""),
        Some(token(&b)),
        Some("hgrat_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        Some(IAT),
    ] {
        let e = f.refused(|| r.read(id, t, &f.store, NOW));
        assert_eq!(e, RegistrationError::InvalidToken, "read {t:?}");
        let e = f.refused(|| r.update(id, t, &update, &f.store, NOW));
        assert_eq!(e, RegistrationError::InvalidToken, "update {t:?}");
        let e = f.refused(|| r.delete(id, t, &f.store, NOW));
        assert_eq!(e, RegistrationError::InvalidToken, "delete {t:?}");
    }
    // A token valid for another client, with that client's id in the path: also the
    // same answer as an unknown client id.
    for path in [b.client_id(), "no-such-client", "", &"x".repeat(10_000)] {
        let e = f.refused(|| r.read(path, Some(token(&a)), &f.store, NOW));
        assert_eq!(e, RegistrationError::InvalidToken, "{path:.20}");
        assert_eq!(
            (e.to_wire().code, e.to_wire().status),
            ("invalid_token", 401)
        );
    }
}

#[test]
fn d8_after_delete_everything_is_the_same_invalid_token() {
    let f = fixture();
    let r = f.registrar(config());
    let (a, _b) = two_clients(&f, &r);
    let id = a.client_id();
    r.delete(id, Some(token(&a)), &f.store, NOW).unwrap();
    let left: Vec<_> = f.snapshot().into_iter().map(|(ns, _, _)| ns).collect();
    assert_eq!(
        left,
        vec![Namespace::Client, Namespace::Revocation],
        "only the other client is left, and the deleted one's token marker (RFC 7592 §2.3)"
    );
    let update = bytes(&with(heart(&f.key), "client_id", json!(id)));
    assert_eq!(
        f.refused(|| r.read(id, Some(token(&a)), &f.store, NOW)),
        RegistrationError::InvalidToken
    );
    assert_eq!(
        f.refused(|| r.update(id, Some(token(&a)), &update, &f.store, NOW)),
        RegistrationError::InvalidToken
    );
    assert_eq!(
        f.refused(|| r.delete(id, Some(token(&a)), &f.store, NOW)),
        RegistrationError::InvalidToken
    );
}

#[test]
fn d8_expired_registration_token_is_invalid_token() {
    let f = fixture();
    let mut c = config();
    c.registration_token_lifetime = Some(3600);
    let r = f.registrar(c);
    let info = f.register(&r, &heart(&f.key));
    let id = info.client_id();
    let last = UnixTime(NOW.0 + 3599);
    assert!(r.read(id, Some(token(&info)), &f.store, last).is_ok());
    let later = UnixTime(NOW.0 + 3600);
    let before = f.snapshot();
    assert_eq!(
        r.read(id, Some(token(&info)), &f.store, later).unwrap_err(),
        RegistrationError::InvalidToken
    );
    assert_eq!(
        r.delete(id, Some(token(&info)), &f.store, later)
            .unwrap_err(),
        RegistrationError::InvalidToken
    );
    assert_eq!(f.snapshot(), before);
}

#[test]
fn c19_a_deleted_client_no_longer_authenticates() {
    let f = fixture();
    let r = f.registrar(config());
    let info = f.register(&r, &heart_native());
    let id = info.client_id().to_owned();
    let creds = ClientCredentials {
        client_id: Some(&id),
        ..Default::default()
    };
    let endpoints = Endpoints {
        issuer: ISS.into(),
        token: format!("{ISS}/token"),
        par: format!("{ISS}/par"),
    };
    let dir = StoreClientDirectory::new(&f.store, NOW);
    assert!(authenticate(
        &creds,
        &dir,
        &endpoints,
        &f.store,
        NOW,
        &heartgate_core::audit::NoAudit
    )
    .is_ok());
    r.delete(&id, Some(token(&info)), &f.store, NOW).unwrap();
    let dir = StoreClientDirectory::new(&f.store, NOW);
    assert!(matches!(
        authenticate(
            &creds,
            &dir,
            &endpoints,
            &f.store,
            NOW,
            &heartgate_core::audit::NoAudit
        ),
        Err(ClientAuthError::InvalidClient(_))
    ));
    assert_eq!(dir.store_status(), Ok(()), "a real absence, not an outage");
}

// --- D9: updates -----------------------------------------------------------------------

fn update_body(v: Value, id: &str) -> Vec<u8> {
    bytes(&with(v, "client_id", json!(id)))
}

#[test]
fn d9_update_rotates_the_registration_access_token() {
    let f = fixture();
    let r = f.registrar(config());
    let info = f.register(&r, &heart(&f.key));
    let id = info.client_id();
    let updated = r
        .update(
            id,
            Some(token(&info)),
            &update_body(heart(&f.key), id),
            &f.store,
            NOW,
        )
        .unwrap();
    assert_ne!(token(&updated), token(&info));
    assert_eq!(updated.client_id(), id);
    assert_eq!(updated.client_id_issued_at(), NOW, "issued_at is kept");
    assert_eq!(
        f.refused(|| r.read(id, Some(token(&info)), &f.store, NOW)),
        RegistrationError::InvalidToken,
        "the old token stops working"
    );
    assert!(r.read(id, Some(token(&updated)), &f.store, NOW).is_ok());
}

#[test]
fn d9_update_replaces_the_metadata_entirely() {
    let f = fixture();
    let r = f.registrar(config());
    let info = f.register(&r, &heart(&f.key));
    let id = info.client_id();
    let body = with(
        without(heart(&f.key), "client_name"),
        "redirect_uris",
        json!(["https://app.example/cb2"]),
    );
    let updated = r
        .update(
            id,
            Some(token(&info)),
            &update_body(body, id),
            &f.store,
            NOW,
        )
        .unwrap();
    assert_eq!(
        updated.metadata().client_name,
        None,
        "omitted means removed"
    );
    assert_eq!(
        updated.metadata().redirect_uris,
        ["https://app.example/cb2"]
    );
    let read = r.read(id, Some(token(&updated)), &f.store, NOW).unwrap();
    assert_eq!(read.metadata(), updated.metadata());
}

#[test]
fn d9_swapping_to_none_under_fapi_is_refused_and_changes_nothing() {
    let f = fixture();
    let r = f.registrar(config());
    let info = f.register(&r, &fapi(&f.key));
    let id = info.client_id();
    let body = with(
        without(fapi(&f.key), "jwks"),
        "token_endpoint_auth_method",
        json!("none"),
    );
    let e = f.refused(|| {
        r.update(
            id,
            Some(token(&info)),
            &update_body(body, id),
            &f.store,
            NOW,
        )
    });
    assert!(is_metadata(&e), "{e:?}");
    let read = r.read(id, Some(token(&info)), &f.store, NOW).unwrap();
    assert_eq!(
        read.metadata(),
        info.metadata(),
        "old token and metadata still live"
    );
}

#[test]
fn d9_method_swap_and_public_to_confidential_are_revalidated() {
    let f = fixture();
    let r = f.registrar(config());
    let info = f.register(&r, &heart_native());
    let id = info.client_id();
    // Public → private_key_jwt without keys: refused.
    let no_keys = with(
        heart_native(),
        "token_endpoint_auth_method",
        json!("private_key_jwt"),
    );
    let e = f.refused(|| {
        r.update(
            id,
            Some(token(&info)),
            &update_body(no_keys, id),
            &f.store,
            NOW,
        )
    });
    assert!(is_metadata(&e), "{e:?}");
    // Public → tls_client_auth without a subject: refused.
    let no_subject = with(
        heart_native(),
        "token_endpoint_auth_method",
        json!("tls_client_auth"),
    );
    let e = f.refused(|| {
        r.update(
            id,
            Some(token(&info)),
            &update_body(no_subject, id),
            &f.store,
            NOW,
        )
    });
    assert!(is_metadata(&e), "{e:?}");
    // With its keys: accepted, and authenticates as such from then on.
    let confidential = with(
        heart(&f.key),
        "redirect_uris",
        json!(["http://127.0.0.1/cb"]),
    );
    let updated = r
        .update(
            id,
            Some(token(&info)),
            &update_body(confidential, id),
            &f.store,
            NOW,
        )
        .unwrap();
    let dir = StoreClientDirectory::new(&f.store, NOW);
    assert_eq!(
        dir.client(id)
            .unwrap()
            .metadata()
            .token_endpoint_auth_method,
        AuthMethod::PrivateKeyJwt
    );
    assert_eq!(
        updated.metadata().token_endpoint_auth_method,
        AuthMethod::PrivateKeyJwt
    );
}

#[test]
fn d9_profile_change_is_revalidated_against_the_new_profile() {
    let f = fixture();
    let r = f.registrar(config());
    let info = f.register(&r, &heart_native());
    let id = info.client_id();
    let public_fapi = with(heart_native(), "profile", json!("fapi2-security"));
    let e = f.refused(|| {
        r.update(
            id,
            Some(token(&info)),
            &update_body(public_fapi, id),
            &f.store,
            NOW,
        )
    });
    assert!(is_metadata(&e), "{e:?}");
    let rs256 = SigningKey::generate(Algorithm::RS256).unwrap();
    let rs256_fapi = fapi(&rs256);
    let e = f.refused(|| {
        r.update(
            id,
            Some(token(&info)),
            &update_body(rs256_fapi, id),
            &f.store,
            NOW,
        )
    });
    assert!(is_metadata(&e), "FAPI 2.0 refuses RS256 keys: {e:?}");
    let updated = r
        .update(
            id,
            Some(token(&info)),
            &update_body(fapi(&f.key), id),
            &f.store,
            NOW,
        )
        .unwrap();
    assert_eq!(updated.metadata().profile, Profile::Fapi2Security);
}

#[test]
fn update_body_client_id_must_be_the_registered_one() {
    let f = fixture();
    let r = f.registrar(config());
    let (a, b) = two_clients(&f, &r);
    let id = a.client_id();
    for body in [
        bytes(&heart(&f.key)),
        update_body(heart(&f.key), b.client_id()),
        bytes(&with(heart(&f.key), "client_id", json!(7))),
    ] {
        let e = f.refused(|| r.update(id, Some(token(&a)), &body, &f.store, NOW));
        assert_eq!(
            e,
            RegistrationError::Metadata(MetadataError::InvalidClientMetadata(
                "client_id must be the registered one"
            ))
        );
    }
}

#[test]
fn update_with_server_provisioned_members_or_a_client_secret_is_refused() {
    let f = fixture();
    let r = f.registrar(config());
    let info = f.register(&r, &heart(&f.key));
    let id = info.client_id();
    for (k, v) in [
        ("registration_access_token", json!(token(&info))),
        (
            "registration_client_uri",
            json!(info.registration_client_uri()),
        ),
        ("client_id_issued_at", json!(NOW.0)),
        ("client_secret_expires_at", json!(0)),
        ("client_secret", json!("anything")),
    ] {
        let body = update_body(with(heart(&f.key), k, v), id);
        let e = f.refused(|| r.update(id, Some(token(&info)), &body, &f.store, NOW));
        assert!(is_metadata(&e), "{k}: {e:?}");
    }
}

#[test]
fn the_update_body_is_not_judged_without_the_registration_token() {
    let f = fixture();
    let r = f.registrar(config());
    let info = f.register(&r, &heart(&f.key));
    let e = f.refused(|| r.update(info.client_id(), Some("wrong"), b"{not json", &f.store, NOW));
    assert_eq!(e, RegistrationError::InvalidToken);
}

#[test]
fn concurrent_updates_with_one_token_let_exactly_one_win() {
    let f = fixture();
    let r = f.registrar(config());
    let info = f.register(&r, &heart(&f.key));
    let id = info.client_id();
    let body = update_body(heart(&f.key), id);
    let wins = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| s.spawn(|| r.update(id, Some(token(&info)), &body, &f.store, NOW)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .filter_map(Result::ok)
            .collect::<Vec<_>>()
    });
    assert_eq!(wins.len(), 1);
    assert!(r.read(id, Some(token(&wins[0])), &f.store, NOW).is_ok());
}

// --- store failures --------------------------------------------------------------------

#[test]
fn store_failure_is_temporarily_unavailable_and_changes_nothing() {
    let f = fixture();
    let r = f.registrar(config());
    let store = FlakyStore::default();
    store.set_down(true);
    let e = r
        .register(Some(IAT), &bytes(&heart(&f.key)), &store, NOW)
        .unwrap_err();
    assert_eq!(e, RegistrationError::Unavailable);
    assert_eq!(
        (e.to_wire().code, e.to_wire().status),
        ("temporarily_unavailable", 503)
    );
    assert!(store.snapshot(NOW).unwrap().is_empty());

    store.set_down(false);
    let info = r
        .register(Some(IAT), &bytes(&heart(&f.key)), &store, NOW)
        .unwrap();
    let id = info.client_id();
    let before = store.snapshot(NOW).unwrap();
    store.set_down(true);
    let update = update_body(heart_native(), id);
    assert_eq!(
        r.read(id, Some(token(&info)), &store, NOW).unwrap_err(),
        RegistrationError::Unavailable
    );
    assert_eq!(
        r.update(id, Some(token(&info)), &update, &store, NOW)
            .unwrap_err(),
        RegistrationError::Unavailable
    );
    assert_eq!(
        r.delete(id, Some(token(&info)), &store, NOW).unwrap_err(),
        RegistrationError::Unavailable
    );
    assert_eq!(store.snapshot(NOW).unwrap(), before);
    store.set_down(false);
    assert!(r.read(id, Some(token(&info)), &store, NOW).is_ok());
}

#[test]
fn store_directory_reports_a_store_failure_instead_of_hiding_it() {
    let f = fixture();
    let r = f.registrar(config());
    let store = FlakyStore::default();
    let info = r
        .register(Some(IAT), &bytes(&heart_native()), &store, NOW)
        .unwrap();
    store.set_down(true);
    let dir = StoreClientDirectory::new(&store, NOW);
    assert!(dir.client(info.client_id()).is_none());
    assert_eq!(dir.store_status(), Err(StoreError::Unavailable));
}

// --- audit -----------------------------------------------------------------------------

#[test]
fn every_operation_emits_one_audit_event_without_secrets_or_values() {
    let f = fixture();
    let r = f.registrar(config());
    let info = f.register(&r, &heart(&f.key));
    let id = info.client_id().to_owned();
    r.read(&id, Some(token(&info)), &f.store, NOW).unwrap();
    let updated = r
        .update(
            &id,
            Some(token(&info)),
            &update_body(heart(&f.key), &id),
            &f.store,
            NOW,
        )
        .unwrap();
    r.read(&id, Some(token(&info)), &f.store, NOW).unwrap_err();
    r.register(Some("wrong"), &bytes(&heart(&f.key)), &f.store, NOW)
        .unwrap_err();
    r.register(
        Some(IAT),
        &bytes(&with(
            heart(&f.key),
            "redirect_uris",
            json!(["http://evil.example/cb"]),
        )),
        &f.store,
        NOW,
    )
    .unwrap_err();
    r.delete(&id, Some(token(&updated)), &f.store, NOW).unwrap();

    let events = f.audit.events();
    let summary: Vec<(Outcome, &str, Option<&str>)> = events
        .iter()
        .map(|e| (e.outcome, e.reason, e.client_id.as_deref()))
        .collect();
    assert_eq!(
        summary,
        [
            (Outcome::Success, "registered", Some(id.as_str())),
            (Outcome::Success, "read", Some(id.as_str())),
            (Outcome::Success, "updated", Some(id.as_str())),
            (
                Outcome::Failure,
                "wrong registration access token",
                Some(id.as_str())
            ),
            (Outcome::Failure, "wrong initial access token", None),
            (Outcome::Failure, "invalid_redirect_uri", None),
            (Outcome::Success, "deleted", Some(id.as_str())),
        ]
    );
    assert!(events.iter().all(|e| e.kind == EventKind::Registration));
    let log = serde_json::to_string(&events).unwrap();
    for secret_or_value in [
        token(&info),
        token(&updated),
        IAT,
        "Clinic app",
        "https://app.example/cb",
        "evil.example",
    ] {
        assert!(
            !log.contains(secret_or_value),
            "{secret_or_value} in the audit log"
        );
    }
    assert!(!log.contains(REGISTRATION_TOKEN_PREFIX));
}

/// THREATS S8: a registration whose audit event cannot be written is not acknowledged
/// (503); a refused one is still refused with its own error.
#[test]
fn s8_a_registration_whose_audit_event_cannot_be_written_is_unavailable() {
    let f = fixture();
    let r = f.registrar(config());
    f.audit.set_unavailable(true);
    let e = r
        .register(Some(IAT), &bytes(&heart(&f.key)), &f.store, NOW)
        .unwrap_err();
    assert_eq!(e, RegistrationError::Unavailable);
    assert_eq!(e.to_wire().status, 503);
    let e = r
        .register(Some("hgiat_wrong"), &bytes(&heart(&f.key)), &f.store, NOW)
        .unwrap_err();
    assert_ne!(e, RegistrationError::Unavailable);
    f.audit.set_unavailable(false);
    let info = f.register(&r, &heart(&f.key));
    assert!(!info.client_id().is_empty());
    assert_eq!(f.audit.events().len(), 1);
}
