//! Pushed authorization requests and request objects: THREATS P1-P21 (those that live in
//! core), each rejection with an unchanged store.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use std::collections::HashMap;
use std::sync::Arc;

use heartgate_core::authorize::par::*;
use heartgate_core::authorize::pkce::CodeChallenge;
use heartgate_core::client::*;
use heartgate_core::clock::UnixTime;
use heartgate_core::jose::{b64, sign_jwt, Algorithm, SigningKey};
use heartgate_core::store::{MemoryStore, Store};
use serde_json::{json, Value};

const ISS: &str = "https://as.example";
const NOW: UnixTime = UnixTime(1_700_000_000);
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

mod common;
use common::Dir;

struct F {
    dir: Dir,
    store: MemoryStore,
    ms_key: SigningKey,
    sp_key: SigningKey,
    other_key: SigningKey,
}

fn client(v: Value) -> Arc<ValidatedClient> {
    Arc::new(
        ClientMetadata::from_json(v.to_string().as_bytes())
            .unwrap()
            .validate()
            .unwrap(),
    )
}

fn fixture() -> F {
    let ms_key = SigningKey::generate(Algorithm::ES256).unwrap();
    let sp_key = SigningKey::generate(Algorithm::ES256).unwrap();
    let other_key = SigningKey::generate(Algorithm::ES256).unwrap();
    let mut m = HashMap::new();
    m.insert("ms".to_owned(), client(json!({"client_id": "ms", "profile": "fapi2-message-signing",
        "redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [ms_key.verifying_key().to_jwk()]}, "require_pushed_authorization_requests": true,
        "tls_client_certificate_bound_access_tokens": true, "request_object_signing_alg": "ES256",
        "authorization_signed_response_alg": "ES256", "scope": "openid patient/*.rs launch/patient"})));
    m.insert("sp".to_owned(), client(json!({"client_id": "sp", "profile": "fapi2-security",
        "redirect_uris": ["https://app.example/cb", "https://app.example/cb2"], "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [sp_key.verifying_key().to_jwk()]}, "require_pushed_authorization_requests": true,
        "tls_client_certificate_bound_access_tokens": true})));
    m.insert("other".to_owned(), client(json!({"client_id": "other", "profile": "heart",
        "redirect_uris": ["https://other.example/cb"], "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [other_key.verifying_key().to_jwk()]}})));
    m.insert(
        "native".to_owned(),
        client(json!({"client_id": "native", "profile": "smart",
        "redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"})),
    );
    m.insert(
        "backend".to_owned(),
        client(json!({"client_id": "backend", "profile": "smart-backend",
        "token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"],
        "jwks": {"keys": [other_key.verifying_key().to_jwk()]}})),
    );
    F {
        dir: Dir(m),
        store: MemoryStore::new(),
        ms_key,
        sp_key,
        other_key,
    }
}

impl F {
    fn authed(&self, id: &str) -> AuthenticatedClient {
        // Authenticate the way the endpoint does: public clients by id, others by assertion.
        let endpoints = Endpoints {
            issuer: ISS.into(),
            token: format!("{ISS}/token"),
            par: format!("{ISS}/par"),
        };
        let store = MemoryStore::new();
        let key = match id {
            "ms" => &self.ms_key,
            "sp" => &self.sp_key,
            _ => &self.other_key,
        };
        let a = sign_jwt(
            key,
            None,
            json!({"iss": id, "sub": id, "aud": ISS, "exp": NOW.0 + 60, "jti": "j"})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        let creds = match self
            .dir
            .client(id)
            .unwrap()
            .metadata()
            .token_endpoint_auth_method
        {
            AuthMethod::None => ClientCredentials {
                client_id: Some(id),
                ..Default::default()
            },
            _ => ClientCredentials {
                client_assertion_type: Some(JWT_BEARER_ASSERTION_TYPE),
                client_assertion: Some(&a),
                ..Default::default()
            },
        };
        authenticate(
            &creds,
            &self.dir,
            &endpoints,
            &store,
            NOW,
            &heartgate_core::audit::NoAudit,
        )
        .unwrap()
    }

    fn push(&self, id: &str, body: &Params) -> Result<ParResponse, ParError> {
        push(
            &self.authed(id),
            body,
            &self.dir,
            &ParConfig {
                issuer: ISS.into(),
                lifetime: 60,
            },
            &self.store,
            NOW,
            &heartgate_core::audit::NoAudit,
        )
    }

    fn refused(&self, id: &str, body: &Params) -> ParError {
        let before = self.store.snapshot(NOW).unwrap();
        let err = self.push(id, body).unwrap_err();
        assert_eq!(
            self.store.snapshot(NOW).unwrap(),
            before,
            "a refused push stored something"
        );
        err
    }
}

fn plain() -> Params {
    let mut p = Params::new();
    p.insert("response_type".into(), "code".into());
    p.insert("redirect_uri".into(), "https://app.example/cb".into());
    p.insert("scope".into(), "openid patient/Observation.rs".into());
    p.insert("state".into(), "s-123".into());
    p.insert(
        "code_challenge".into(),
        CodeChallenge::for_verifier(VERIFIER).as_str().into(),
    );
    p.insert("code_challenge_method".into(), "S256".into());
    p
}

fn ro_claims() -> Value {
    let mut c = json!({"iss": "ms", "aud": ISS, "exp": NOW.0 + 300, "nbf": NOW.0, "iat": NOW.0, "jti": "ro-1", "client_id": "ms"});
    for (k, v) in plain() {
        c[k] = json!(v);
    }
    c
}

fn signed(key: &SigningKey, claims: Value, typ: Option<&str>) -> Params {
    let mut p = Params::new();
    p.insert("client_id".into(), "ms".into());
    p.insert(
        "request".into(),
        sign_jwt(key, typ, claims.as_object().unwrap()).unwrap(),
    );
    p
}

fn with(mut p: Params, k: &str, v: &str) -> Params {
    p.insert(k.into(), v.into());
    p
}

fn without(mut p: Params, k: &str) -> Params {
    p.remove(k);
    p
}

#[test]
fn plain_push_stores_a_bound_single_use_reference() {
    let f = fixture();
    let r = f.push("sp", &plain()).unwrap();
    assert!(r.request_uri.starts_with(REQUEST_URI_PREFIX));
    let random = &r.request_uri[REQUEST_URI_PREFIX.len()..];
    assert_eq!(
        b64::decode(random).unwrap().len(),
        32,
        "P18: 256 random bits"
    );
    assert_eq!(r.expires_in, 60);
    let req = lookup(ISS, "sp", &r.request_uri, &f.store, NOW).unwrap();
    assert_eq!(req.redirect_uri, "https://app.example/cb");
    assert_eq!(req.state.as_deref(), Some("s-123"));
    assert_eq!(req.response_mode, ResponseMode::Query);
    assert!(!req.signed);
}

#[test]
fn signed_push_uses_only_the_request_object() {
    let f = fixture();
    // P17: a different scope and state outside the request object are ignored.
    let body = with(
        with(
            signed(&f.ms_key, ro_claims(), Some("oauth-authz-req+jwt")),
            "scope",
            "patient/*.cruds",
        ),
        "state",
        "outside",
    );
    let r = f.push("ms", &body).unwrap();
    let req = lookup(ISS, "ms", &r.request_uri, &f.store, NOW).unwrap();
    assert!(req.signed);
    assert_eq!(
        heartgate_core::scope::ScopeSet::parse(&req.scope).unwrap(),
        heartgate_core::scope::ScopeSet::parse("openid patient/Observation.rs").unwrap()
    );
    assert_eq!(req.state.as_deref(), Some("s-123"));
    assert_eq!(
        req.response_mode,
        ResponseMode::Jwt,
        "JARM by default where the profile requires it"
    );
}

#[test]
fn p21_the_stored_record_holds_no_client_credential() {
    let f = fixture();
    let body = signed(&f.ms_key, ro_claims(), None);
    f.push("ms", &body).unwrap();
    let dump = f.store.snapshot(NOW).unwrap();
    let request = body["request"].as_bytes();
    for (_, _, v) in dump {
        assert!(
            !v.windows(40).any(|w| request.windows(40).any(|r| r == w)),
            "request object stored"
        );
    }
}

#[test]
fn p3_request_uri_in_the_body_is_refused() {
    let f = fixture();
    assert!(matches!(
        f.refused("sp", &with(plain(), "request_uri", "urn:x")),
        ParError::InvalidRequest(_)
    ));
}

#[test]
fn p5_unsigned_request_where_signing_is_required_is_refused() {
    let f = fixture();
    assert!(matches!(
        f.refused("ms", &plain()),
        ParError::InvalidRequest(_)
    ));
}

#[test]
fn p4_p6_bad_request_objects_are_invalid_request_object() {
    let f = fixture();
    let mut cases: Vec<(&str, Params)> = vec![];
    let mut nested = ro_claims();
    nested["request_uri"] = json!("urn:x");
    cases.push(("P4 nested request_uri", signed(&f.ms_key, nested, None)));
    let mut nested = ro_claims();
    nested["request"] = json!("a.b.c");
    cases.push(("P4 nested request", signed(&f.ms_key, nested, None)));
    cases.push((
        "signed by another client",
        signed(&f.other_key, ro_claims(), None),
    ));
    cases.push((
        "RS256",
        signed(
            &SigningKey::generate(Algorithm::RS256).unwrap(),
            ro_claims(),
            None,
        ),
    ));
    for (label, field, value) in [
        ("exp missing", "exp", Value::Null),
        ("expired", "exp", json!(NOW.0 - 60)),
        ("exp > 60 min after nbf", "exp", json!(NOW.0 + 70 * 60)),
        ("nbf missing", "nbf", Value::Null),
        ("nbf 70 min old", "nbf", json!(NOW.0 - 70 * 60)),
        ("aud not the issuer", "aud", json!("https://evil.example")),
        ("iss not the client", "iss", json!("other")),
        ("client_id claim differs", "client_id", json!("other")),
    ] {
        let mut c = ro_claims();
        if value.is_null() {
            c.as_object_mut().unwrap().remove(field);
        } else {
            c[field] = value;
        }
        cases.push((label, signed(&f.ms_key, c, None)));
    }
    cases.push(("typ at+jwt", signed(&f.ms_key, ro_claims(), Some("at+jwt"))));
    let none = format!(
        "{}.{}.",
        b64::encode(r#"{"alg":"none"}"#),
        b64::encode(ro_claims().to_string())
    );
    cases.push(("alg none", with(Params::new(), "request", &none)));
    let mut bad_sig = signed(&f.ms_key, ro_claims(), None);
    let t = bad_sig["request"].clone();
    bad_sig.insert("request".into(), format!("{}AA", &t[..t.len() - 2]));
    cases.push(("bad signature", bad_sig));
    for (label, body) in cases {
        assert!(
            matches!(f.refused("ms", &body), ParError::InvalidRequestObject(_)),
            "{label}"
        );
    }
}

#[test]
fn p7_p8_nbf_8s_ahead_and_multiple_audiences_are_accepted() {
    let f = fixture();
    let mut c = ro_claims();
    c["nbf"] = json!(NOW.0 + 8);
    assert!(f.push("ms", &signed(&f.ms_key, c, None)).is_ok());
    let mut c = ro_claims();
    c["aud"] = json!([ISS, "https://evil.example"]);
    assert!(f.push("ms", &signed(&f.ms_key, c, None)).is_ok());
}

#[test]
fn p9_missing_or_plain_pkce_is_refused() {
    let f = fixture();
    for body in [
        without(plain(), "code_challenge"),
        with(plain(), "code_challenge_method", "plain"),
        without(plain(), "code_challenge_method"),
        with(plain(), "code_challenge", "short"),
    ] {
        assert!(matches!(
            f.refused("sp", &body),
            ParError::InvalidRequest(_)
        ));
    }
}

#[test]
fn p10_unregistered_or_missing_redirect_uri_is_refused() {
    let f = fixture();
    for r in [
        "https://evil.example/cb",
        "https://app.example/cb#x",
        "javascript:alert(1)",
        "https://app.example/cb?code=x",
    ] {
        assert!(
            matches!(
                f.refused("sp", &with(plain(), "redirect_uri", r)),
                ParError::InvalidRequest(_)
            ),
            "{r}"
        );
    }
    assert!(
        matches!(
            f.refused("sp", &without(plain(), "redirect_uri")),
            ParError::InvalidRequest(_)
        ),
        "FAPI requires it"
    );
}

#[test]
fn loopback_client_may_present_any_port() {
    let f = fixture();
    let r = f
        .push(
            "native",
            &with(plain(), "redirect_uri", "http://127.0.0.1:54321/cb"),
        )
        .unwrap();
    assert_eq!(
        lookup(ISS, "native", &r.request_uri, &f.store, NOW)
            .unwrap()
            .redirect_uri,
        "http://127.0.0.1:54321/cb"
    );
}

#[test]
fn p11_response_types_other_than_code_are_refused() {
    let f = fixture();
    for rt in ["token", "code id_token", "id_token"] {
        assert_eq!(
            f.refused("sp", &with(plain(), "response_type", rt)),
            ParError::UnsupportedResponseType,
            "{rt}"
        );
    }
    assert!(matches!(
        f.refused("sp", &without(plain(), "response_type")),
        ParError::InvalidRequest(_)
    ));
}

#[test]
fn scopes_outside_the_grammar_or_the_registration_are_invalid_scope() {
    let f = fixture();
    assert_eq!(
        f.refused("sp", &with(plain(), "scope", "user/../Patient.r")),
        ParError::InvalidScope
    );
    let mut c = ro_claims();
    c["scope"] = json!("user/*.cruds");
    assert_eq!(
        f.refused("ms", &signed(&f.ms_key, c, None)),
        ParError::InvalidScope
    );
}

#[test]
fn jarm_clients_cannot_ask_for_a_plain_response() {
    let f = fixture();
    let mut c = ro_claims();
    c["response_mode"] = json!("query");
    assert!(matches!(
        f.refused("ms", &signed(&f.ms_key, c, None)),
        ParError::InvalidRequest(_)
    ));
    let mut c = ro_claims();
    c["response_mode"] = json!("form_post.jwt");
    assert!(f.push("ms", &signed(&f.ms_key, c, None)).is_ok());
}

#[test]
fn a8_long_state_is_kept_exactly_or_refused() {
    let f = fixture();
    let long = "s".repeat(2048);
    let r = f.push("sp", &with(plain(), "state", &long)).unwrap();
    assert_eq!(
        lookup(ISS, "sp", &r.request_uri, &f.store, NOW)
            .unwrap()
            .state
            .unwrap(),
        long
    );
    assert!(matches!(
        f.refused(
            "sp",
            &with(plain(), "state", &"s".repeat(MAX_STATE_LEN + 1))
        ),
        ParError::InvalidRequest(_)
    ));
}

#[test]
fn clients_without_the_code_grant_cannot_push() {
    let f = fixture();
    assert_eq!(f.refused("backend", &plain()), ParError::UnauthorizedClient);
}

#[test]
fn p12_p13_reusable_until_completion_then_never() {
    let f = fixture();
    let r = f.push("sp", &plain()).unwrap();
    assert!(lookup(ISS, "sp", &r.request_uri, &f.store, NOW).is_ok());
    assert!(
        lookup(ISS, "sp", &r.request_uri, &f.store, NOW).is_ok(),
        "P13: page reload before login"
    );
    assert!(consume(ISS, "sp", &r.request_uri, &f.store, NOW).is_ok());
    assert_eq!(
        consume(ISS, "sp", &r.request_uri, &f.store, NOW).unwrap_err(),
        RequestUriError::Invalid
    );
    assert_eq!(
        lookup(ISS, "sp", &r.request_uri, &f.store, NOW).unwrap_err(),
        RequestUriError::Invalid
    );
}

#[test]
fn p12_sixty_four_concurrent_completions_consume_once() {
    let f = fixture();
    let r = f.push("sp", &plain()).unwrap();
    let wins = std::thread::scope(|s| {
        let hs: Vec<_> = (0..64)
            .map(|_| s.spawn(|| consume(ISS, "sp", &r.request_uri, &f.store, NOW).is_ok()))
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .filter(|w| *w)
            .count()
    });
    assert_eq!(wins, 1);
}

#[test]
fn p14_p15_p18_p20_expired_foreign_guessed_or_cross_issuer_references_are_refused() {
    let f = fixture();
    let r = f.push("sp", &plain()).unwrap();
    assert_eq!(
        lookup(ISS, "sp", &r.request_uri, &f.store, UnixTime(NOW.0 + 60)).unwrap_err(),
        RequestUriError::Invalid,
        "P14"
    );
    assert!(lookup(ISS, "sp", &r.request_uri, &f.store, UnixTime(NOW.0 + 59)).is_ok());
    assert_eq!(
        consume(ISS, "other", &r.request_uri, &f.store, NOW).unwrap_err(),
        RequestUriError::Invalid,
        "P15"
    );
    assert!(
        lookup(ISS, "sp", &r.request_uri, &f.store, NOW).is_ok(),
        "P15: not consumed by the other client"
    );
    assert_eq!(
        lookup(
            "https://tenant-b.example",
            "sp",
            &r.request_uri,
            &f.store,
            NOW
        )
        .unwrap_err(),
        RequestUriError::Invalid,
        "P20"
    );
    for guess in [
        format!("{REQUEST_URI_PREFIX}1"),
        format!("{REQUEST_URI_PREFIX}{}", "A".repeat(43)),
        "https://evil/x".to_owned(),
    ] {
        assert_eq!(
            lookup(ISS, "sp", &guess, &f.store, NOW).unwrap_err(),
            RequestUriError::Invalid,
            "P18 {guess}"
        );
    }
}

#[test]
fn par_lifetime_is_clamped_below_600s() {
    let f = fixture();
    let r = push(
        &f.authed("sp"),
        &plain(),
        &f.dir,
        &ParConfig {
            issuer: ISS.into(),
            lifetime: 3600,
        },
        &f.store,
        NOW,
        &heartgate_core::audit::NoAudit,
    )
    .unwrap();
    assert_eq!(r.expires_in, 599);
    let r = push(
        &f.authed("sp"),
        &plain(),
        &f.dir,
        &ParConfig {
            issuer: ISS.into(),
            lifetime: 1,
        },
        &f.store,
        NOW,
        &heartgate_core::audit::NoAudit,
    )
    .unwrap();
    assert_eq!(r.expires_in, 5);
}

// --- front-channel requests (no PAR) ---------------------------------------------------

fn native_query() -> Params {
    let mut p = with(plain(), "client_id", "native");
    p.insert("redirect_uri".into(), "http://127.0.0.1:51234/cb".into());
    p
}

impl F {
    fn front(&self, q: &Params) -> Result<ParResponse, FrontChannelError> {
        front_channel(
            q,
            &self.dir,
            &ParConfig {
                issuer: ISS.into(),
                lifetime: 60,
            },
            &self.store,
            NOW,
            &heartgate_core::audit::NoAudit,
        )
    }

    fn front_refused(&self, q: &Params) -> FrontChannelError {
        let before = self.store.snapshot(NOW).unwrap();
        let e = self.front(q).unwrap_err();
        assert_eq!(self.store.snapshot(NOW).unwrap(), before);
        e
    }
}

#[test]
fn front_channel_request_of_a_smart_app_becomes_a_pending_interaction() {
    let f = fixture();
    let r = f.front(&native_query()).unwrap();
    let req = lookup(ISS, "native", &r.request_uri, &f.store, NOW).unwrap();
    assert_eq!(
        req.redirect_uri, "http://127.0.0.1:51234/cb",
        "RFC 8252 §7.3: any loopback port, kept as sent"
    );
    assert_eq!(req.state.as_deref(), Some("s-123"));
    assert!(!req.signed);
}

#[test]
fn a9_a12_untrusted_client_or_redirect_uri_gets_an_error_page_never_a_redirect() {
    let f = fixture();
    for q in [
        without(native_query(), "client_id"),
        with(native_query(), "client_id", "nobody"),
        with(
            native_query(),
            "redirect_uri",
            "https://attacker.example/cb",
        ),
        with(
            native_query(),
            "request_uri",
            "urn:ietf:params:oauth:request_uri:x",
        ),
    ] {
        assert!(
            matches!(f.front_refused(&q), FrontChannelError::ErrorPage(_)),
            "{q:?}"
        );
    }
}

#[test]
fn rfc9126_s5_clients_that_must_push_are_refused_at_the_front_channel() {
    let f = fixture();
    for id in ["ms", "sp"] {
        let q = with(
            with(plain(), "client_id", id),
            "redirect_uri",
            "https://app.example/cb",
        );
        assert_eq!(
            f.front_refused(&q),
            FrontChannelError::ErrorPage(ParError::InvalidRequest(
                "pushed authorization request required"
            ))
        );
    }
}

#[test]
fn front_channel_errors_after_the_redirect_uri_is_trusted_go_back_to_the_client() {
    let f = fixture();
    let cases = [
        (without(native_query(), "code_challenge"), "invalid_request"),
        (
            with(native_query(), "scope", "openid bogus"),
            "invalid_scope",
        ),
        (
            with(native_query(), "response_type", "token"),
            "unsupported_response_type",
        ),
    ];
    for (q, code) in cases {
        let FrontChannelError::Redirect(resp) = f.front_refused(&q) else {
            panic!("redirect expected for {code}")
        };
        assert_eq!(resp.redirect_uri, "http://127.0.0.1:51234/cb");
        assert_eq!(
            resp.params,
            vec![
                ("error".to_owned(), code.to_owned()),
                ("state".to_owned(), "s-123".to_owned()),
                ("iss".to_owned(), ISS.to_owned()),
            ]
        );
    }
}
