//! CIBA (OpenID CIBA Core 1.0 + FAPI-CIBA), core half: THREATS B1-B18 (those that live
//! in core), poll/ping/push happy paths, device pairing and device decisions, with a
//! manual clock and an in-memory store. Every refused request is asserted with its
//! error variant and RFC code, and with an unchanged store.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::{client, Dir, FlakyStore};
use heartgate_core::audit::{EventKind, MemoryAuditSink, Outcome};
use heartgate_core::ciba::device::*;
use heartgate_core::ciba::*;
use heartgate_core::client::*;
use heartgate_core::clock::{Clock, ManualClock, UnixTime};
use heartgate_core::error::ToWire;
use heartgate_core::grant::{self, GrantContext, GrantError, TokenResponse};
use heartgate_core::jose::{
    b64, sign_jwt, verify_jwt, Algorithm, AlgorithmSet, AudienceRule, Claims, KeyRing, SigningKey,
    TypRule, Validation,
};
use heartgate_core::oidc::{issue_id_token, IdTokenInput, PairwiseSubjects};
use heartgate_core::store::{Namespace, Store};
use heartgate_core::token::{RecordKey, TokenIssuer, TokenRecord};
use parking_lot::Mutex;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Map, Value};

const ISS: &str = "https://as.example";
const RS: &str = "https://fhir.example";
const T0: i64 = 1_700_000_000;
const CIBA: &str = "urn:openid:params:grant-type:ciba";
const NOTIFY_TOKEN: &str = "8d67dc78-7faa-4d41-aabd-67707b374255";

// ---------------------------------------------------------------- the user directory

struct Users {
    status: Mutex<HashMap<String, UserStatus>>,
}

impl Users {
    fn new() -> Self {
        let mut m = HashMap::new();
        m.insert("alice".to_owned(), UserStatus::Active);
        m.insert("bob".to_owned(), UserStatus::Active);
        m.insert("carol".to_owned(), UserStatus::Inactive);
        Users {
            status: Mutex::new(m),
        }
    }

    fn set(&self, user: &str, s: UserStatus) {
        self.status.lock().insert(user.to_owned(), s);
    }
}

impl CibaUsers for Users {
    fn resolve_login_hint(&self, hint: &str) -> Result<Option<String>, UsersUnavailable> {
        Ok(match hint {
            "alice@clinic.example" => Some("alice".into()),
            "bob@clinic.example" => Some("bob".into()),
            "carol@clinic.example" => Some("carol".into()),
            "ghost@clinic.example" => Some("ghost".into()),
            "down@clinic.example" => return Err(UsersUnavailable),
            _ => None,
        })
    }

    fn status(&self, user_id: &str) -> Result<UserStatus, UsersUnavailable> {
        Ok(self
            .status
            .lock()
            .get(user_id)
            .copied()
            .unwrap_or(UserStatus::Unknown))
    }

    fn verify_user_code(
        &self,
        user_id: &str,
        code: &str,
    ) -> Result<UserCodeCheck, UsersUnavailable> {
        Ok(if user_id == "alice" && code == "4711" {
            UserCodeCheck::Match
        } else {
            UserCodeCheck::Mismatch
        })
    }
}

// ---------------------------------------------------------------- the fixture

struct F {
    dir: Dir,
    store: FlakyStore,
    /// Client assertions' jtis live here, so that `store` snapshots see CIBA state only.
    auth_store: heartgate_core::store::MemoryStore,
    users: Users,
    issuer: TokenIssuer,
    clock: ManualClock,
    config: CibaConfig,
    audit: MemoryAuditSink,
    pairwise: PairwiseSubjects,
    key: SigningKey,
    other_key: SigningKey,
    cert: Vec<u8>,
    jti: AtomicU64,
}

fn ciba_client(id: &str, k: &SigningKey, extra: Value) -> Arc<ValidatedClient> {
    let mut v = json!({"client_id": id, "profile": "smart", "client_name": format!("{id} app"),
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [k.verifying_key().to_jwk()]},
        "grant_types": [CIBA, "refresh_token"], "backchannel_token_delivery_mode": "poll"});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    client(v)
}

fn fixture() -> F {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let other_key = SigningKey::generate(Algorithm::ES256).unwrap();
    let mut m = HashMap::new();
    let ping = json!({"backchannel_token_delivery_mode": "ping",
        "backchannel_client_notification_endpoint": "https://clinic.example/ciba/ping"});
    let push = json!({"backchannel_token_delivery_mode": "push",
        "backchannel_client_notification_endpoint": "https://clinic.example/ciba/push"});
    m.insert("poll".into(), ciba_client("poll", &key, json!({})));
    m.insert("other".into(), ciba_client("other", &other_key, json!({})));
    m.insert("ping".into(), ciba_client("ping", &key, ping));
    m.insert("push".into(), ciba_client("push", &key, push));
    m.insert(
        "usercode".into(),
        ciba_client(
            "usercode",
            &key,
            json!({"backchannel_user_code_parameter": true}),
        ),
    );
    m.insert(
        "signed".into(),
        ciba_client(
            "signed",
            &key,
            json!({"profile": "heart", "grant_types": [CIBA],
                "backchannel_authentication_request_signing_alg": "ES256"}),
        ),
    );
    m.insert(
        "fapi".into(),
        ciba_client(
            "fapi",
            &key,
            json!({"profile": "fapi2-security", "grant_types": [CIBA],
                "tls_client_certificate_bound_access_tokens": true,
                "backchannel_token_delivery_mode": "ping",
                "backchannel_client_notification_endpoint": "https://bank.example/ciba"}),
        ),
    );
    m.insert(
        "pairwise".into(),
        ciba_client(
            "pairwise",
            &key,
            json!({"subject_type": "pairwise", "redirect_uris": ["https://pw.example/cb"]}),
        ),
    );
    m.insert(
        "narrow".into(),
        ciba_client(
            "narrow",
            &key,
            json!({"scope": "openid user/Observation.rs"}),
        ),
    );
    m.insert(
        "nociba".into(),
        client(json!({"client_id": "nociba", "profile": "smart",
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [key.verifying_key().to_jwk()]},
            "redirect_uris": ["https://app.example/cb"], "grant_types": ["authorization_code"]})),
    );
    F {
        dir: Dir(m),
        store: FlakyStore::default(),
        auth_store: heartgate_core::store::MemoryStore::new(),
        users: Users::new(),
        issuer: TokenIssuer::new(
            ISS,
            Arc::new(KeyRing::new(
                SigningKey::generate(Algorithm::ES256).unwrap(),
            )),
        ),
        clock: ManualClock::new(T0),
        config: CibaConfig::new(ISS),
        audit: MemoryAuditSink::new(),
        pairwise: PairwiseSubjects::new(&[9u8; 32]).unwrap(),
        key,
        other_key,
        cert: rcgen::generate_simple_self_signed(vec!["client.example".into()])
            .unwrap()
            .cert
            .der()
            .to_vec(),
        jti: AtomicU64::new(0),
    }
}

type P = BTreeMap<String, String>;

fn params(kv: &[(&str, &str)]) -> P {
    kv.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A valid poll-mode request for alice.
fn alice(extra: &[(&str, &str)]) -> P {
    let mut p = params(&[
        ("scope", "openid offline_access user/Observation.rs"),
        ("login_hint", "alice@clinic.example"),
        ("binding_message", "W4SCT"),
    ]);
    for (k, v) in extra {
        p.insert((*k).to_owned(), (*v).to_owned());
    }
    p
}

impl F {
    fn now(&self) -> UnixTime {
        self.clock.now()
    }

    fn ctx(&self) -> CibaContext<'_> {
        let mut c = CibaContext::new(
            &self.config,
            &self.store,
            &self.users,
            &self.dir,
            self.issuer.keys(),
            self.now(),
        );
        c.audit = &self.audit;
        c.pairwise = Some(&self.pairwise);
        c
    }

    fn grants(&self) -> GrantContext<'_> {
        let mut g = GrantContext::new(&self.issuer, &self.store, RS, self.now());
        g.audit = &self.audit;
        g.pairwise = Some(&self.pairwise);
        g
    }

    fn authed(&self, id: &str) -> AuthenticatedClient {
        let key = if id == "other" {
            &self.other_key
        } else {
            &self.key
        };
        let jti = format!("a{}", self.jti.fetch_add(1, Ordering::SeqCst));
        let a = sign_jwt(
            key,
            None,
            json!({"iss": id, "sub": id, "aud": ISS, "exp": self.now().0 + 60, "jti": jti})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        let creds = ClientCredentials {
            client_assertion_type: Some(JWT_BEARER_ASSERTION_TYPE),
            client_assertion: Some(&a),
            certificate: Some(self.cert.as_slice()),
            ..Default::default()
        };
        let endpoints = Endpoints {
            issuer: ISS.into(),
            token: format!("{ISS}/token"),
            par: format!("{ISS}/par"),
        };
        authenticate(
            &creds,
            &self.dir,
            &endpoints,
            &self.auth_store,
            self.now(),
            &heartgate_core::audit::NoAudit,
        )
        .unwrap()
    }

    fn start(&self, id: &str, p: &P) -> Result<BackchannelResponse, BackchannelError> {
        start(&self.authed(id), p, &self.ctx())
    }

    /// Run a start that must be refused, assert the store did not change, return the error.
    fn refused(&self, id: &str, p: &P) -> BackchannelError {
        let client = self.authed(id);
        let before = self.store.snapshot(self.now()).unwrap();
        let e = start(&client, p, &self.ctx()).unwrap_err();
        assert_eq!(
            self.store.snapshot(self.now()).unwrap(),
            before,
            "a refused request changed the store: {e:?}"
        );
        e
    }

    fn poll(&self, id: &str, auth_req_id: &str) -> Result<TokenResponse, GrantError> {
        grant::ciba(
            &self.authed(id),
            Some(auth_req_id),
            &self.users,
            &self.grants(),
        )
    }

    fn decide(
        &self,
        r: &BackchannelResponse,
        user: &str,
        d: Decision,
        message: Option<&str>,
    ) -> Result<Decided, DecisionError> {
        let hash = message.map(binding_message_hash);
        decide(&self.ctx(), &r.request_ref(), user, d, hash.as_deref())
    }

    fn approve(&self, r: &BackchannelResponse) -> Decided {
        self.decide(r, "alice", Decision::Approve, Some("W4SCT"))
            .unwrap()
    }

    fn record(&self, r: &BackchannelResponse) -> CibaRecord {
        lookup(&self.ctx(), &r.request_ref()).unwrap().unwrap()
    }

    fn interval(&self, r: &BackchannelResponse) -> u32 {
        poll_state(&self.ctx(), &r.request_ref())
            .unwrap()
            .unwrap()
            .interval
    }

    fn advance(&self, secs: i64) {
        self.clock.advance(secs);
    }

    fn id_token_claims(&self, t: &TokenResponse, aud: &str) -> Claims {
        let v = Validation::new(
            AlgorithmSet::ALL,
            TypRule::OptionalOneOf(&["JWT"]),
            AudienceRule::ExactString(aud.into()),
        )
        .issuer(ISS);
        verify_jwt(
            t.id_token.as_deref().unwrap(),
            &**self.issuer.keys().load(),
            &v,
            self.now(),
        )
        .unwrap()
        .into_inner()
    }
}

fn code(e: &impl ToWire) -> (u16, &'static str) {
    let w = e.to_wire();
    (w.status, w.code)
}

// ---------------------------------------------------------------- happy paths

#[test]
fn poll_happy_path_issues_tokens_with_the_auth_req_id_claim() {
    let f = fixture();
    let r = f.start("poll", &alice(&[])).unwrap();
    assert_eq!(r.expires_in, DEFAULT_EXPIRY);
    assert_eq!(r.interval, Some(DEFAULT_INTERVAL));
    // B1: 256 random bits, base64url.
    assert_eq!(r.auth_req_id.expose().len(), 43);
    assert!(b64::decode(r.auth_req_id.expose()).is_ok());
    let body = r.to_json();
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["interval"], 5);
    assert_eq!(body["auth_req_id"], r.auth_req_id.expose());
    assert!(!format!("{r:?}").contains(r.auth_req_id.expose()));

    let id = r.auth_req_id.expose();
    assert_eq!(
        f.poll("poll", id).unwrap_err(),
        GrantError::AuthorizationPending
    );
    // The user's device sees it, with the binding message.
    let pending = pending_for_user(&f.ctx(), "alice").unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].request_ref, r.request_ref());
    assert_eq!(pending[0].binding_message.as_deref(), Some("W4SCT"));
    assert_eq!(pending[0].client_name.as_deref(), Some("poll app"));
    assert!(pending_for_user(&f.ctx(), "bob").unwrap().is_empty());

    let d = f.approve(&r);
    assert_eq!(d.decision, Decision::Approve);
    assert_eq!(d.client_id, "poll");
    // Poll clients are told nothing.
    assert!(d
        .notification(&f.users, &f.dir, &f.grants())
        .unwrap()
        .is_none());
    assert!(pending_for_user(&f.ctx(), "alice").unwrap().is_empty());

    f.advance(5);
    let t = f.poll("poll", id).unwrap();
    assert!(
        t.refresh_token.is_some(),
        "offline_access and refresh grant"
    );
    let granted = heartgate_core::scope::ScopeSet::parse(&t.scope).unwrap();
    assert_eq!(
        granted,
        heartgate_core::scope::ScopeSet::parse("openid offline_access user/Observation.rs")
            .unwrap()
    );
    let c = f.id_token_claims(&t, "poll");
    assert_eq!(c.get("sub"), Some(&json!("alice")));
    assert_eq!(
        c.get("urn:openid:params:jwt:claim:auth_req_id"),
        Some(&json!(id))
    );
    assert_eq!(c.get("auth_time"), Some(&json!(T0)));
    assert!(c.get("at_hash").is_some());
    assert!(c.get("urn:openid:params:jwt:claim:rt_hash").is_some());
    assert_eq!(
        c.get("at_hash").unwrap(),
        &json!(heartgate_core::oidc::token_hash(
            Algorithm::ES256,
            t.access_token.expose()
        ))
    );
    // The access token's record is stored, for the user, in the request's family.
    let rec = f
        .store
        .get(
            Namespace::AccessToken,
            &RecordKey::Jti {
                iss: ISS.into(),
                jti: t.jti.clone(),
            }
            .store_key(),
            f.now(),
        )
        .unwrap()
        .unwrap();
    let rec = TokenRecord::from_bytes(&rec).unwrap();
    assert_eq!(rec.sub, "alice");
    assert_eq!(rec.client_id, "poll");
    assert_eq!(
        rec.family_id.as_deref(),
        Some(f.record(&r).grant_id.as_str())
    );
}

#[test]
fn ping_happy_path_notifies_then_the_client_fetches() {
    let f = fixture();
    let r = f
        .start(
            "ping",
            &alice(&[("client_notification_token", NOTIFY_TOKEN)]),
        )
        .unwrap();
    assert_eq!(r.interval, Some(DEFAULT_INTERVAL), "ping clients may poll");
    let d = f.approve(&r);
    let n = d
        .notification(&f.users, &f.dir, &f.grants())
        .unwrap()
        .unwrap();
    assert_eq!(n.endpoint, "https://clinic.example/ciba/ping");
    assert_eq!(n.bearer.expose(), NOTIFY_TOKEN);
    let body: Value = serde_json::from_str(&n.body).unwrap();
    assert_eq!(body, json!({"auth_req_id": r.auth_req_id.expose()}));
    assert!(!format!("{n:?}").contains(NOTIFY_TOKEN));
    let t = f.poll("ping", r.auth_req_id.expose()).unwrap();
    assert!(t.id_token.is_some());
}

#[test]
fn ping_denial_is_notified_and_the_fetch_says_access_denied() {
    let f = fixture();
    let r = f
        .start(
            "ping",
            &alice(&[("client_notification_token", NOTIFY_TOKEN)]),
        )
        .unwrap();
    let d = f
        .decide(&r, "alice", Decision::Deny, Some("W4SCT"))
        .unwrap();
    let n = d
        .notification(&f.users, &f.dir, &f.grants())
        .unwrap()
        .unwrap();
    let body: Value = serde_json::from_str(&n.body).unwrap();
    assert_eq!(body, json!({"auth_req_id": r.auth_req_id.expose()}));
    assert_eq!(
        f.poll("ping", r.auth_req_id.expose()).unwrap_err(),
        GrantError::AccessDenied
    );
}

#[test]
fn push_happy_path_delivers_the_token_response_in_the_notification() {
    let f = fixture();
    let r = f
        .start(
            "push",
            &alice(&[("client_notification_token", NOTIFY_TOKEN)]),
        )
        .unwrap();
    assert_eq!(r.interval, None, "push clients never poll");
    assert!(r.to_json().get("interval").is_none());
    // A push client may not poll (CIBA §11), and polling changes nothing.
    let before = f.store.snapshot(f.now()).unwrap();
    let e = f.poll("push", r.auth_req_id.expose()).unwrap_err();
    assert_eq!(e, GrantError::UnauthorizedClient);
    assert_eq!(code(&e), (400, "unauthorized_client"));
    assert_eq!(f.store.snapshot(f.now()).unwrap(), before);

    let d = f.approve(&r);
    let n = d
        .notification(&f.users, &f.dir, &f.grants())
        .unwrap()
        .unwrap();
    assert_eq!(n.endpoint, "https://clinic.example/ciba/push");
    assert_eq!(n.bearer.expose(), NOTIFY_TOKEN);
    let body: Value = serde_json::from_str(&n.body).unwrap();
    assert_eq!(body["auth_req_id"], r.auth_req_id.expose());
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["access_token"].is_string());
    assert!(body["refresh_token"].is_string());
    let id_token = body["id_token"].as_str().unwrap();
    let v = Validation::new(
        AlgorithmSet::ALL,
        TypRule::OptionalOneOf(&["JWT"]),
        AudienceRule::ExactString("push".into()),
    )
    .issuer(ISS);
    let c = verify_jwt(id_token, &**f.issuer.keys().load(), &v, f.now()).unwrap();
    assert_eq!(
        c.get("urn:openid:params:jwt:claim:auth_req_id"),
        Some(&json!(r.auth_req_id.expose()))
    );
    // CIBA §10.3.1: at_hash and rt_hash over the delivered tokens.
    assert_eq!(
        c.get("at_hash"),
        Some(&json!(heartgate_core::oidc::token_hash(
            Algorithm::ES256,
            body["access_token"].as_str().unwrap()
        )))
    );
    assert_eq!(
        c.get("urn:openid:params:jwt:claim:rt_hash"),
        Some(&json!(heartgate_core::oidc::token_hash(
            Algorithm::ES256,
            body["refresh_token"].as_str().unwrap()
        )))
    );
    assert!(!format!("{n:?}").contains(body["access_token"].as_str().unwrap()));
    // Delivered once: a second delivery is a reuse (B5).
    assert_eq!(
        d.notification(&f.users, &f.dir, &f.grants()).unwrap_err(),
        GrantError::InvalidGrant("auth_req_id reused")
    );
}

#[test]
fn push_denial_and_expiry_send_error_payloads() {
    let f = fixture();
    let p = alice(&[("client_notification_token", NOTIFY_TOKEN)]);
    let denied = f.start("push", &p).unwrap();
    let d = f
        .decide(&denied, "alice", Decision::Deny, Some("W4SCT"))
        .unwrap();
    let n = d
        .notification(&f.users, &f.dir, &f.grants())
        .unwrap()
        .unwrap();
    let body: Value = serde_json::from_str(&n.body).unwrap();
    assert_eq!(
        body,
        json!({"error": "access_denied", "auth_req_id": denied.auth_req_id.expose()})
    );

    let late = f.start("push", &p).unwrap();
    assert!(
        expire(&f.ctx(), &late.request_ref()).unwrap().is_none(),
        "not yet"
    );
    f.advance(i64::from(DEFAULT_EXPIRY));
    let n = expire(&f.ctx(), &late.request_ref()).unwrap().unwrap();
    let body: Value = serde_json::from_str(&n.body).unwrap();
    assert_eq!(
        body,
        json!({"error": "expired_token", "auth_req_id": late.auth_req_id.expose()})
    );
    assert_eq!(f.record(&late).state, CibaState::Expired);
    // Once only; and a decided request is never "expired".
    assert!(expire(&f.ctx(), &late.request_ref()).unwrap().is_none());
    assert!(expire(&f.ctx(), &denied.request_ref()).unwrap().is_none());
    // Poll clients learn expiry by polling: nothing to send.
    let polled = f.start("poll", &alice(&[])).unwrap();
    f.advance(i64::from(DEFAULT_EXPIRY));
    assert!(expire(&f.ctx(), &polled.request_ref()).unwrap().is_none());
}

#[test]
fn b17_push_user_locked_after_approval_gets_access_denied_payload() {
    let f = fixture();
    let r = f
        .start(
            "push",
            &alice(&[("client_notification_token", NOTIFY_TOKEN)]),
        )
        .unwrap();
    let d = f.approve(&r);
    f.users.set("alice", UserStatus::Inactive);
    let n = d
        .notification(&f.users, &f.dir, &f.grants())
        .unwrap()
        .unwrap();
    let body: Value = serde_json::from_str(&n.body).unwrap();
    assert_eq!(body["error"], "access_denied");
    assert!(body.get("access_token").is_none());
}

// ---------------------------------------------------------------- token endpoint: B1-B6

#[test]
fn b1_unknown_or_malformed_auth_req_id_is_invalid_grant() {
    let f = fixture();
    let _live = f.start("poll", &alice(&[])).unwrap();
    let before = f.store.snapshot(f.now()).unwrap();
    let guessed = b64::encode([7u8; 32]);
    for id in [guessed.as_str(), "x", &"a".repeat(129)] {
        let e = f.poll("poll", id).unwrap_err();
        assert!(matches!(e, GrantError::InvalidGrant(_)), "{id}: {e:?}");
        assert_eq!(code(&e), (400, "invalid_grant"));
    }
    assert_eq!(f.store.snapshot(f.now()).unwrap(), before);
    let e = grant::ciba(&f.authed("poll"), None, &f.users, &f.grants()).unwrap_err();
    assert_eq!(code(&e), (400, "invalid_request"));
}

#[test]
fn b2_another_clients_auth_req_id_is_invalid_grant_and_leaves_it_intact() {
    let f = fixture();
    let r = f.start("poll", &alice(&[])).unwrap();
    f.approve(&r);
    let before = f.store.snapshot(f.now()).unwrap();
    let e = f.poll("other", r.auth_req_id.expose()).unwrap_err();
    assert_eq!(e, GrantError::InvalidGrant("auth_req_id of another client"));
    assert_eq!(code(&e), (400, "invalid_grant"));
    assert_eq!(f.store.snapshot(f.now()).unwrap(), before);
    // The owner still redeems it.
    assert!(f.poll("poll", r.auth_req_id.expose()).is_ok());
}

#[test]
fn b3_poll_faster_than_interval_slows_down_and_persists() {
    let f = fixture();
    let r = f.start("poll", &alice(&[])).unwrap();
    let id = r.auth_req_id.expose();
    assert_eq!(
        f.poll("poll", id).unwrap_err(),
        GrantError::AuthorizationPending
    );
    f.advance(2);
    let e = f.poll("poll", id).unwrap_err();
    assert_eq!(e, GrantError::SlowDown);
    assert_eq!(code(&e), (400, "slow_down"));
    assert_eq!(f.interval(&r), 10, "grown by 5 s and stored");

    // Another node (its own issuer and contexts, the same store) enforces the new
    // interval: 6 s is more than the old 5 but less than the new 10.
    let node_b = TokenIssuer::new(ISS, f.issuer.keys().clone());
    f.advance(6);
    let g = GrantContext::new(&node_b, &f.store, RS, f.now());
    assert_eq!(
        grant::ciba(&f.authed("poll"), Some(id), &f.users, &g).unwrap_err(),
        GrantError::SlowDown
    );
    assert_eq!(f.interval(&r), 15);
    f.advance(15);
    let g = GrantContext::new(&node_b, &f.store, RS, f.now());
    assert_eq!(
        grant::ciba(&f.authed("poll"), Some(id), &f.users, &g).unwrap_err(),
        GrantError::AuthorizationPending
    );
    assert_eq!(f.interval(&r), 15, "a well-behaved poll keeps it");
}

#[test]
fn b4_poll_after_expiry_is_expired_token_then_unknown_after_retention() {
    let f = fixture();
    let r = f
        .start("poll", &alice(&[("requested_expiry", "60")]))
        .unwrap();
    assert_eq!(r.expires_in, 60);
    f.approve(&r);
    f.advance(60);
    let e = f.poll("poll", r.auth_req_id.expose()).unwrap_err();
    assert_eq!(e, GrantError::ExpiredToken);
    assert_eq!(code(&e), (400, "expired_token"));
    // Too late to decide, too.
    let pending = f.start("poll", &alice(&[])).unwrap();
    f.advance(i64::from(DEFAULT_EXPIRY));
    assert_eq!(
        f.decide(&pending, "alice", Decision::Approve, Some("W4SCT"))
            .unwrap_err(),
        DecisionError::Expired
    );
    assert_eq!(
        f.poll("poll", pending.auth_req_id.expose()).unwrap_err(),
        GrantError::ExpiredToken
    );
    f.advance(RETENTION);
    assert!(matches!(
        f.poll("poll", r.auth_req_id.expose()).unwrap_err(),
        GrantError::InvalidGrant(_)
    ));
}

#[test]
fn b5_second_redemption_is_invalid_grant_and_revokes_the_tokens() {
    let f = fixture();
    let r = f.start("poll", &alice(&[])).unwrap();
    f.approve(&r);
    let t = f.poll("poll", r.auth_req_id.expose()).unwrap();
    let family = f.record(&r).grant_id;
    assert!(f
        .store
        .get(Namespace::RefreshFamily, family.as_bytes(), f.now())
        .unwrap()
        .is_none());
    f.advance(10);
    let e = f.poll("poll", r.auth_req_id.expose()).unwrap_err();
    assert_eq!(e, GrantError::InvalidGrant("auth_req_id reused"));
    assert_eq!(code(&e), (400, "invalid_grant"));
    // Every token of the request's family is revoked (the issued access token carries it).
    assert!(f
        .store
        .get(Namespace::RefreshFamily, family.as_bytes(), f.now())
        .unwrap()
        .is_some());
    let rec = f
        .store
        .get(
            Namespace::AccessToken,
            &RecordKey::Jti {
                iss: ISS.into(),
                jti: t.jti,
            }
            .store_key(),
            f.now(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        TokenRecord::from_bytes(&rec).unwrap().family_id,
        Some(family)
    );
}

#[test]
fn b5_sixty_four_parallel_redemptions_give_exactly_one_token_response() {
    let f = fixture();
    let r = f.start("poll", &alice(&[])).unwrap();
    f.approve(&r);
    let clients: Vec<AuthenticatedClient> = (0..64).map(|_| f.authed("poll")).collect();
    let g = f.grants();
    let results: Vec<Result<TokenResponse, GrantError>> = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter()
            .map(|c| {
                let (g, users, id) = (&g, &f.users, r.auth_req_id.expose());
                s.spawn(move || grant::ciba(c, Some(id), users, g))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(code(e), (400, "invalid_grant"), "{e:?}");
    }
}

#[test]
fn b6_user_denial_is_access_denied() {
    let f = fixture();
    let r = f.start("poll", &alice(&[])).unwrap();
    let d = f
        .decide(&r, "alice", Decision::Deny, Some("W4SCT"))
        .unwrap();
    assert_eq!(d.decision, Decision::Deny);
    for _ in 0..2 {
        f.advance(5);
        let e = f.poll("poll", r.auth_req_id.expose()).unwrap_err();
        assert_eq!(e, GrantError::AccessDenied);
        assert_eq!(code(&e), (400, "access_denied"));
    }
}

// ---------------------------------------------------------------- decisions: B7, B8, B17

#[test]
fn b7_first_decision_wins_later_ones_conflict_and_other_users_are_forbidden() {
    let f = fixture();
    let r = f.start("poll", &alice(&[])).unwrap();
    // Another user, before and after the decision: 403, nothing learned, nothing changed.
    let before = f.store.snapshot(f.now()).unwrap();
    let e = f
        .decide(&r, "bob", Decision::Approve, Some("W4SCT"))
        .unwrap_err();
    assert_eq!(e, DecisionError::Forbidden);
    assert_eq!(code(&e), (403, "access_denied"));
    assert_eq!(f.store.snapshot(f.now()).unwrap(), before);
    f.approve(&r);
    for d in [Decision::Deny, Decision::Approve] {
        let e = f.decide(&r, "alice", d, Some("W4SCT")).unwrap_err();
        assert_eq!(e, DecisionError::AlreadyDecided);
        assert_eq!(code(&e).0, 409);
    }
    assert_eq!(
        f.decide(&r, "bob", Decision::Deny, Some("W4SCT"))
            .unwrap_err(),
        DecisionError::Forbidden
    );
    assert!(matches!(f.record(&r).state, CibaState::Approved { .. }));
    let unknown = RequestRef::of("never issued");
    assert_eq!(
        decide(&f.ctx(), &unknown, "alice", Decision::Approve, None).unwrap_err(),
        DecisionError::NotFound
    );
}

#[test]
fn b7_sixty_four_parallel_decisions_have_exactly_one_winner() {
    let f = fixture();
    let r = f.start("poll", &alice(&[])).unwrap();
    let hash = binding_message_hash("W4SCT");
    let results: Vec<Result<Decided, DecisionError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let (f, hash, rr) = (&f, hash.as_str(), r.request_ref());
                let d = if i % 2 == 0 {
                    Decision::Approve
                } else {
                    Decision::Deny
                };
                s.spawn(move || decide(&f.ctx(), &rr, "alice", d, Some(hash)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<&Decided> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1);
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| *e == DecisionError::AlreadyDecided));
    // The stored state is the winner's.
    let polled = f.poll("poll", r.auth_req_id.expose());
    match winners[0].decision {
        Decision::Approve => assert!(polled.is_ok(), "{polled:?}"),
        Decision::Deny => assert_eq!(polled.unwrap_err(), GrantError::AccessDenied),
    }
}

#[test]
fn b7_decisions_racing_with_polls_are_not_lost() {
    let f = fixture();
    let r = f.start("poll", &alice(&[])).unwrap();
    let hash = binding_message_hash("W4SCT");
    let clients: Vec<AuthenticatedClient> = (0..32).map(|_| f.authed("poll")).collect();
    let g = f.grants();
    let decided = std::thread::scope(|s| {
        for c in &clients {
            let (g, users, id) = (&g, &f.users, r.auth_req_id.expose());
            s.spawn(move || {
                let _ = grant::ciba(c, Some(id), users, g);
            });
        }
        s.spawn(|| {
            decide(
                &f.ctx(),
                &r.request_ref(),
                "alice",
                Decision::Deny,
                Some(&hash),
            )
        })
        .join()
        .unwrap()
    });
    assert!(decided.is_ok(), "{decided:?}");
    assert!(matches!(f.record(&r).state, CibaState::Denied { .. }));
}

#[test]
fn b8_decision_must_carry_the_hash_of_the_binding_message_shown() {
    let f = fixture();
    let r = f.start("poll", &alice(&[])).unwrap();
    let before = f.store.snapshot(f.now()).unwrap();
    for shown in [Some("W4SCU"), None, Some("")] {
        let e = f.decide(&r, "alice", Decision::Approve, shown).unwrap_err();
        assert_eq!(e, DecisionError::BindingMessageMismatch, "{shown:?}");
        assert_eq!(code(&e), (400, "invalid_binding_message"));
    }
    // A raw message instead of its hash does not match either.
    let e = decide(
        &f.ctx(),
        &r.request_ref(),
        "alice",
        Decision::Approve,
        Some("W4SCT"),
    )
    .unwrap_err();
    assert_eq!(e, DecisionError::BindingMessageMismatch);
    assert_eq!(f.store.snapshot(f.now()).unwrap(), before);
    // Without a binding message, the decision must carry none.
    let mut p = alice(&[]);
    p.remove("binding_message");
    let plain = f.start("poll", &p).unwrap();
    assert_eq!(
        f.decide(&plain, "alice", Decision::Approve, Some("W4SCT"))
            .unwrap_err(),
        DecisionError::BindingMessageMismatch
    );
    assert!(f.decide(&plain, "alice", Decision::Approve, None).is_ok());
}

#[test]
fn b17_user_locked_after_approval_gets_access_denied_at_redemption() {
    let f = fixture();
    let r = f.start("poll", &alice(&[])).unwrap();
    f.approve(&r);
    f.users.set("alice", UserStatus::Inactive);
    let e = f.poll("poll", r.auth_req_id.expose()).unwrap_err();
    assert_eq!(e, GrantError::AccessDenied);
    // It stays denied, even if the user is unlocked again.
    f.users.set("alice", UserStatus::Active);
    f.advance(5);
    assert_eq!(
        f.poll("poll", r.auth_req_id.expose()).unwrap_err(),
        GrantError::AccessDenied
    );
    assert!(matches!(f.record(&r).state, CibaState::Denied { .. }));
}

#[test]
fn b17_user_locked_before_deciding_cannot_approve_but_can_deny() {
    let f = fixture();
    let r = f.start("poll", &alice(&[])).unwrap();
    f.users.set("alice", UserStatus::Inactive);
    assert_eq!(
        f.decide(&r, "alice", Decision::Approve, Some("W4SCT"))
            .unwrap_err(),
        DecisionError::Forbidden
    );
    assert!(f.decide(&r, "alice", Decision::Deny, Some("W4SCT")).is_ok());
}

// ---------------------------------------------------------------- the request: B8-B18

#[test]
fn b8_bad_binding_messages_are_invalid_binding_message() {
    let f = fixture();
    for m in [
        "",
        " ",
        "123456789012345678901",
        "line\nbreak",
        "tab\t",
        "\u{7}bell",
        "Pay\u{202e}evil",
        "ok 😀",
        "<script>x</script>",
        "Раураl", // Cyrillic look-alikes
        " leading",
        "trailing ",
        "a\u{0}b",
    ] {
        let e = f.refused("poll", &alice(&[("binding_message", m)]));
        assert_eq!(e, BackchannelError::InvalidBindingMessage, "{m:?}");
        assert_eq!(code(&e), (400, "invalid_binding_message"));
    }
    for m in ["W4SCT", "Transfer 42.00/EUR", "a-b_c.d+e/f!g?h#i", "x"] {
        assert!(
            f.start("poll", &alice(&[("binding_message", m)])).is_ok(),
            "{m}"
        );
    }
}

#[test]
fn b8_binding_message_limit_is_configurable() {
    let mut f = fixture();
    let long = "Approve login on PC 7";
    assert_eq!(
        f.refused("poll", &alice(&[("binding_message", long)])),
        BackchannelError::InvalidBindingMessage
    );
    f.config.binding_message_max = 40;
    assert!(f
        .start("poll", &alice(&[("binding_message", long)]))
        .is_ok());
    // The configured maximum itself is capped.
    f.config.binding_message_max = 100_000;
    let huge = "a".repeat(MAX_BINDING_MESSAGE_MAX + 1);
    assert_eq!(
        f.refused("poll", &alice(&[("binding_message", &huge)])),
        BackchannelError::InvalidBindingMessage
    );
}

#[test]
fn b8_fapi_clients_must_send_a_binding_message() {
    let f = fixture();
    let mut claims = fapi_claims(&f, "j-fapi-1");
    claims.remove("binding_message");
    let e = f.refused("fapi", &signed_request(&f.key, &claims));
    assert_eq!(
        e,
        BackchannelError::InvalidRequest("binding_message is required")
    );
    assert_eq!(code(&e), (400, "invalid_request"));
}

#[test]
fn b9_two_hints_or_none_is_invalid_request() {
    let f = fixture();
    let hint = id_token_hint(&f, "alice", "poll", f.now().0);
    let mut none = alice(&[]);
    none.remove("login_hint");
    for p in [
        alice(&[("id_token_hint", &hint)]),
        alice(&[("login_hint_token", "eyJ.x.y")]),
        none,
    ] {
        let e = f.refused("poll", &p);
        assert_eq!(
            e,
            BackchannelError::InvalidRequest(
                "exactly one of login_hint, id_token_hint, login_hint_token"
            )
        );
        assert_eq!(code(&e), (400, "invalid_request"));
    }
}

#[test]
fn b10_unknown_login_hint_is_unknown_user_id_and_locked_users_access_denied() {
    let f = fixture();
    for hint in ["nobody@clinic.example", "ghost@clinic.example"] {
        let e = f.refused("poll", &alice(&[("login_hint", hint)]));
        assert_eq!(e, BackchannelError::UnknownUserId, "{hint}");
        assert_eq!(code(&e), (400, "unknown_user_id"));
    }
    let e = f.refused("poll", &alice(&[("login_hint", "carol@clinic.example")]));
    assert_eq!(e, BackchannelError::AccessDenied);
    assert_eq!(code(&e), (403, "access_denied"));
    let e = f.refused("poll", &alice(&[("login_hint", &"x".repeat(257))]));
    assert_eq!(code(&e), (400, "invalid_request"));
    // Every refusal is audited with the client, for per-client rate limits.
    let refusals = f
        .audit
        .events()
        .into_iter()
        .filter(|e| e.kind == EventKind::CibaRequest && e.reason == "unknown_user_id")
        .collect::<Vec<_>>();
    assert_eq!(refusals.len(), 2);
    assert!(refusals
        .iter()
        .all(|e| e.client_id.as_deref() == Some("poll")));
    // A failing directory fails closed.
    let e = f.refused("poll", &alice(&[("login_hint", "down@clinic.example")]));
    assert_eq!(code(&e), (503, "temporarily_unavailable"));
}

#[test]
fn b10_concealed_unknown_users_get_a_request_nobody_can_approve() {
    let mut f = fixture();
    f.config.unknown_users = UnknownUserPolicy::Conceal;
    for hint in ["nobody@clinic.example", "carol@clinic.example"] {
        let r = f.start("poll", &alice(&[("login_hint", hint)])).unwrap();
        assert_eq!(
            f.poll("poll", r.auth_req_id.expose()).unwrap_err(),
            GrantError::AuthorizationPending
        );
        assert_eq!(
            f.decide(&r, "carol", Decision::Approve, Some("W4SCT"))
                .unwrap_err(),
            DecisionError::Forbidden
        );
        assert!(pending_for_user(&f.ctx(), "carol").unwrap().is_empty());
    }
    f.advance(i64::from(DEFAULT_EXPIRY));
    let r = f.start("poll", &alice(&[("login_hint", "x@y")])).unwrap();
    f.advance(i64::from(DEFAULT_EXPIRY));
    assert_eq!(
        f.poll("poll", r.auth_req_id.expose()).unwrap_err(),
        GrantError::ExpiredToken
    );
}

/// An ID token this issuer signed for `aud`, issued at `iat` (so expired 5 min later).
fn id_token_hint(f: &F, sub: &str, aud: &str, iat: i64) -> String {
    let md = f.dir.client(aud).unwrap();
    let input = IdTokenInput {
        sub,
        auth_time: UnixTime(iat),
        nonce: None,
        acr: None,
        fhir_user: None,
        auth_req_id: None,
        access_token: None,
        refresh_token: None,
    };
    issue_id_token(ISS, f.issuer.keys(), md.metadata(), &input, UnixTime(iat)).unwrap()
}

#[test]
fn b11_id_token_hint_names_the_user_even_when_expired() {
    let f = fixture();
    let old = id_token_hint(&f, "alice", "poll", T0 - 86_400);
    let mut p = alice(&[("id_token_hint", &old)]);
    p.remove("login_hint");
    let r = f.start("poll", &p).unwrap();
    assert_eq!(f.record(&r).user_id.as_deref(), Some("alice"));
    let mut p = alice(&[("id_token_hint", &id_token_hint(&f, "ghost", "poll", T0))]);
    p.remove("login_hint");
    assert_eq!(f.refused("poll", &p), BackchannelError::UnknownUserId);
}

#[test]
fn b11_bad_id_token_hints_are_invalid_request() {
    let f = fixture();
    let forged = {
        let mut c = Map::new();
        for (k, v) in [
            ("iss", json!(ISS)),
            ("sub", json!("alice")),
            ("aud", json!("poll")),
            ("exp", json!(T0 + 300)),
            ("iat", json!(T0)),
        ] {
            c.insert(k.into(), v);
        }
        // Signed by someone else's key with the issuer's kid.
        let kid = f.issuer.keys().load().active().kid().to_owned();
        let k = SigningKey::generate(Algorithm::ES256)
            .unwrap()
            .with_kid(kid)
            .unwrap();
        sign_jwt(&k, None, &c).unwrap()
    };
    let other_iss = {
        let mut c = Map::new();
        c.insert("iss".into(), json!("https://evil.example"));
        c.insert("sub".into(), json!("alice"));
        c.insert("aud".into(), json!("poll"));
        c.insert("exp".into(), json!(T0 + 300));
        sign_jwt(f.issuer.keys().load().active(), None, &c).unwrap()
    };
    let good = id_token_hint(&f, "alice", "poll", T0);
    let signing_input = &good[..good.rfind('.').unwrap()];
    let bad_sig = format!("{signing_input}.{}", b64::encode([0u8; 64]));
    for (what, hint) in [
        ("forged", forged),
        ("another issuer", other_iss),
        ("another client's", id_token_hint(&f, "alice", "other", T0)),
        ("bad signature", bad_sig),
        ("not a JWT", "not-a-jwt".to_owned()),
    ] {
        let mut params = alice(&[("id_token_hint", &hint)]);
        params.remove("login_hint");
        let e = f.refused("poll", &params);
        assert_eq!(code(&e), (400, "invalid_request"), "{what}: {e:?}");
    }
    // Pairwise clients see pseudonyms, which cannot name a user.
    let mut params = alice(&[("id_token_hint", &id_token_hint(&f, "alice", "pairwise", T0))]);
    params.remove("login_hint");
    assert_eq!(
        code(&f.refused("pairwise", &params)),
        (400, "invalid_request")
    );
}

#[test]
fn b11_login_hint_token_is_a_client_signed_jwt_naming_the_user() {
    let f = fixture();
    let now = f.now().0;
    let token = |k: &SigningKey, claims: Value| {
        let mut p = alice(&[(
            "login_hint_token",
            &sign_jwt(k, None, claims.as_object().unwrap()).unwrap(),
        )]);
        p.remove("login_hint");
        p
    };
    let good = json!({"iss": "poll", "aud": ISS, "sub": "alice@clinic.example",
        "iat": now, "exp": now + 300});
    let r = f.start("poll", &token(&f.key, good.clone())).unwrap();
    assert_eq!(f.record(&r).user_id.as_deref(), Some("alice"));
    // Past its exp: expired_login_hint_token (CIBA §13).
    let mut expired = good.clone();
    expired["exp"] = json!(now - 120);
    assert_eq!(
        f.refused("poll", &token(&f.key, expired)),
        BackchannelError::ExpiredLoginHintToken
    );
    // Another key, another audience, another issuer, no sub: invalid_request.
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("https://other.example");
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("other");
    let mut no_sub = good.clone();
    no_sub.as_object_mut().unwrap().remove("sub");
    for (k, c) in [
        (&f.other_key, good.clone()),
        (&f.key, wrong_aud),
        (&f.key, wrong_iss),
        (&f.key, no_sub),
    ] {
        assert!(matches!(
            f.refused("poll", &token(k, c)),
            BackchannelError::InvalidRequest(_)
        ));
    }
    let mut p = alice(&[("login_hint_token", "eyJhbGciOiJFUzI1NiJ9.e30.c2ln")]);
    p.remove("login_hint");
    assert!(matches!(
        f.refused("poll", &p),
        BackchannelError::InvalidRequest(_)
    ));
    // A well-signed token naming nobody: unknown_user_id (B10).
    let mut nobody = good;
    nobody["sub"] = json!("nobody@clinic.example");
    assert_eq!(
        f.refused("poll", &token(&f.key, nobody)),
        BackchannelError::UnknownUserId
    );
}

#[test]
fn b12_requested_expiry_string_or_number_capped_invalid_refused() {
    let f = fixture();
    for (v, expected) in [("120", 120), ("1", 1), ("600", 600), ("1000000000000", 600)] {
        let r = f.start("poll", &alice(&[("requested_expiry", v)])).unwrap();
        assert_eq!(r.expires_in, expected, "{v}");
        assert_eq!(f.record(&r).expires_at, f.now().0 + i64::from(expected));
    }
    for v in ["0", "-5", "abc", "1.5", "1e3", " 60", "", "0x20"] {
        let e = f.refused("poll", &alice(&[("requested_expiry", v)]));
        assert_eq!(
            e,
            BackchannelError::InvalidRequest("requested_expiry"),
            "{v:?}"
        );
    }
    // As a JSON number or string in a signed request.
    for (v, ok) in [
        (json!(120), Some(120)),
        (json!("90"), Some(90)),
        (json!(1_000_000_000_000i64), Some(600)),
        (json!(0), None),
        (json!(-5), None),
        (json!(12.5), None),
        (json!(true), None),
    ] {
        let mut c = signed_claims(&f, "signed", &format!("j-exp-{v}"));
        c.insert("requested_expiry".into(), v.clone());
        let p = signed_request(&f.key, &c);
        match ok {
            Some(e) => assert_eq!(f.start("signed", &p).unwrap().expires_in, e, "{v}"),
            None => assert_eq!(
                code(&f.refused("signed", &p)),
                (400, "invalid_request"),
                "{v}"
            ),
        }
    }
}

fn signed_claims(f: &F, client_id: &str, jti: &str) -> Map<String, Value> {
    let now = f.now().0;
    json!({"iss": client_id, "aud": ISS, "iat": now, "nbf": now, "exp": now + 300,
        "jti": jti, "scope": "openid user/Observation.rs",
        "login_hint": "alice@clinic.example", "binding_message": "W4SCT"})
    .as_object()
    .unwrap()
    .clone()
}

fn fapi_claims(f: &F, jti: &str) -> Map<String, Value> {
    let mut c = signed_claims(f, "fapi", jti);
    c.insert("client_notification_token".into(), json!(NOTIFY_TOKEN));
    c
}

fn signed_request(k: &SigningKey, claims: &Map<String, Value>) -> P {
    params(&[("request", &sign_jwt(k, None, claims).unwrap())])
}

#[test]
fn b13_signed_requests_are_required_and_checked() {
    let f = fixture();
    let now = f.now().0;
    // A valid one, FAPI and a client that registered an algorithm.
    let r = f
        .start("fapi", &signed_request(&f.key, &fapi_claims(&f, "j-ok")))
        .unwrap();
    assert_eq!(f.record(&r).user_id.as_deref(), Some("alice"));
    assert!(f
        .start(
            "signed",
            &signed_request(&f.key, &signed_claims(&f, "signed", "j-ok"))
        )
        .is_ok());
    // Unsigned: refused under FAPI and for a client that registered an algorithm.
    let unsigned = alice(&[("client_notification_token", NOTIFY_TOKEN)]);
    for id in ["fapi", "signed"] {
        assert_eq!(
            f.refused(id, &unsigned),
            BackchannelError::InvalidRequest("a signed request is required")
        );
    }
    let es384 = SigningKey::generate(Algorithm::ES384).unwrap();
    let mut cases: Vec<(String, Map<String, Value>, &SigningKey)> = Vec::new();
    for missing in ["exp", "iat", "nbf", "jti", "aud", "iss"] {
        let mut c = fapi_claims(&f, &format!("j-{missing}"));
        c.remove(missing);
        cases.push((format!("without {missing}"), c, &f.key));
    }
    let edits: Vec<(&str, &str, Value)> = vec![
        ("expired", "exp", json!(now - 61)),
        ("exp 70 min ahead", "exp", json!(now + 70 * 60)),
        ("nbf 10 min ahead", "nbf", json!(now + 600)),
        ("nbf 70 min old", "nbf", json!(now - 70 * 60)),
        ("iat 10 min ahead", "iat", json!(now + 600)),
        ("another audience", "aud", json!("https://other.example")),
        ("another issuer", "iss", json!("poll")),
        ("exp as a string", "exp", json!(format!("{}", now + 60))),
        ("structured member", "request_context", json!({"a": 1})),
        ("nested request", "request", json!("x.y.z")),
        ("another client_id", "client_id", json!("poll")),
    ];
    for (what, claim, v) in edits {
        let mut c = fapi_claims(&f, &format!("j-{what}"));
        c.insert(claim.into(), v);
        cases.push((what.to_owned(), c, &f.key));
    }
    cases.push((
        "signed by another client".into(),
        fapi_claims(&f, "j-other"),
        &f.other_key,
    ));
    cases.push((
        "ES384, outside FAPI".into(),
        fapi_claims(&f, "j-es384"),
        &es384,
    ));
    for (what, c, key) in cases {
        let e = f.refused("fapi", &signed_request(key, &c));
        assert_eq!(code(&e), (400, "invalid_request"), "{what}: {e:?}");
    }
    // alg none and garbage.
    let none = format!(
        "{}.{}.",
        b64::encode(br#"{"alg":"none"}"#),
        b64::encode(serde_json::to_vec(&fapi_claims(&f, "j-none")).unwrap())
    );
    for token in [none.as_str(), "a.b.c", "x"] {
        let e = f.refused("fapi", &params(&[("request", token)]));
        assert_eq!(code(&e), (400, "invalid_request"), "{token}");
    }
    // Parameters outside the signed request.
    let mut p = signed_request(&f.key, &fapi_claims(&f, "j-outside"));
    p.insert("login_hint".into(), "bob@clinic.example".into());
    assert_eq!(
        f.refused("fapi", &p),
        BackchannelError::InvalidRequest("parameters outside the signed request")
    );
    // Replay: the jti is single-use; a refused request does not spend it.
    let mut bad = fapi_claims(&f, "j-replay");
    bad.insert("binding_message".into(), json!("<b>"));
    assert_eq!(
        f.refused("fapi", &signed_request(&f.key, &bad)),
        BackchannelError::InvalidBindingMessage
    );
    let once = signed_request(&f.key, &fapi_claims(&f, "j-replay"));
    assert!(f.start("fapi", &once).is_ok());
    assert_eq!(
        f.refused("fapi", &once),
        BackchannelError::InvalidRequest("request jti replayed")
    );
}

#[test]
fn b16_client_notification_token_is_required_bounded_and_b64token() {
    let f = fixture();
    let e = f.refused("ping", &alice(&[]));
    assert_eq!(
        e,
        BackchannelError::InvalidRequest("client_notification_token missing")
    );
    for t in [
        "a".repeat(1025),
        "has space".into(),
        "ünïcode".into(),
        "a=b".into(),
        "quote\"d".into(),
        "==".into(),
    ] {
        let e = f.refused("ping", &alice(&[("client_notification_token", &t)]));
        assert_eq!(
            e,
            BackchannelError::InvalidRequest("client_notification_token"),
            "{t}"
        );
    }
    for t in ["a".repeat(1024), "abc-._~+/==".into()] {
        assert!(f
            .start("ping", &alice(&[("client_notification_token", &t)]))
            .is_ok());
    }
    // Poll clients have no use for one: it is not stored.
    let r = f
        .start(
            "poll",
            &alice(&[("client_notification_token", NOTIFY_TOKEN)]),
        )
        .unwrap();
    assert!(f.record(&r).notification.is_none());
}

#[test]
fn b18_client_without_the_ciba_grant_is_unauthorized_client() {
    let f = fixture();
    let e = f.refused("nociba", &alice(&[]));
    assert_eq!(e, BackchannelError::UnauthorizedClient);
    assert_eq!(code(&e), (400, "unauthorized_client"));
    let r = f.start("poll", &alice(&[])).unwrap();
    let e = f.poll("nociba", r.auth_req_id.expose()).unwrap_err();
    assert_eq!(e, GrantError::UnauthorizedClient);
}

#[test]
fn scope_must_hold_openid_and_fit_the_client() {
    let f = fixture();
    let mut none = alice(&[]);
    none.remove("scope");
    assert_eq!(
        f.refused("poll", &none),
        BackchannelError::InvalidRequest("scope missing")
    );
    assert_eq!(
        f.refused("poll", &alice(&[("scope", "user/Observation.rs")])),
        BackchannelError::InvalidRequest("the openid scope is required")
    );
    for s in ["openid bad//scope", "openid  double"] {
        let e = f.refused("poll", &alice(&[("scope", s)]));
        assert_eq!(e, BackchannelError::InvalidScope, "{s}");
        assert_eq!(code(&e), (400, "invalid_scope"));
    }
    // No launch step: a patient/ scope cannot get a patient.
    assert_eq!(
        f.refused(
            "poll",
            &alice(&[("scope", "openid patient/Observation.rs")])
        ),
        BackchannelError::InvalidScope
    );
    // Within the client's registered scope.
    assert_eq!(
        f.refused("narrow", &alice(&[("scope", "openid user/Patient.rs")])),
        BackchannelError::InvalidScope
    );
    assert!(f
        .start("narrow", &alice(&[("scope", "openid user/Observation.r")]))
        .is_ok());
}

#[test]
fn user_code_is_required_and_verified_for_clients_that_registered_it() {
    let f = fixture();
    let e = f.refused("usercode", &alice(&[]));
    assert_eq!(e, BackchannelError::MissingUserCode);
    assert_eq!(code(&e), (400, "missing_user_code"));
    let e = f.refused("usercode", &alice(&[("user_code", "0000")]));
    assert_eq!(e, BackchannelError::InvalidUserCode);
    assert_eq!(code(&e), (400, "invalid_user_code"));
    assert!(f
        .start("usercode", &alice(&[("user_code", "4711")]))
        .is_ok());
    // A client that did not register for it may not send one.
    assert_eq!(
        code(&f.refused("poll", &alice(&[("user_code", "4711")]))),
        (400, "invalid_request")
    );
}

#[test]
fn other_malformed_parameters_are_invalid_request() {
    let f = fixture();
    for (what, p) in [
        ("client_id mismatch", alice(&[("client_id", "other")])),
        ("request_uri", alice(&[("request_uri", "urn:x")])),
        (
            "acr_values with a control",
            alice(&[("acr_values", "a\u{1}b")]),
        ),
        (
            "acr_values too long",
            alice(&[("acr_values", &"a".repeat(513))]),
        ),
    ] {
        assert_eq!(
            code(&f.refused("poll", &p)),
            (400, "invalid_request"),
            "{what}"
        );
    }
    let r = f
        .start(
            "poll",
            &alice(&[("acr_values", "urn:mace:incommon:iap:silver")]),
        )
        .unwrap();
    assert_eq!(
        f.record(&r).acr_values.as_deref(),
        Some("urn:mace:incommon:iap:silver")
    );
}

#[test]
fn a_store_failure_fails_closed() {
    let f = fixture();
    let client = f.authed("poll");
    f.store.set_down(true);
    let e = start(&client, &alice(&[]), &f.ctx()).unwrap_err();
    assert_eq!(e, BackchannelError::Unavailable);
    assert_eq!(code(&e).0, 503);
    f.store.set_down(false);
    let r = f.start("poll", &alice(&[])).unwrap();
    f.store.set_down(true);
    assert_eq!(
        f.decide(&r, "alice", Decision::Approve, Some("W4SCT"))
            .unwrap_err(),
        DecisionError::Unavailable
    );
    assert_eq!(
        f.poll("poll", r.auth_req_id.expose()).unwrap_err(),
        GrantError::Unavailable
    );
}

#[test]
fn error_codes_and_statuses_are_exactly_the_ciba_ones() {
    use BackchannelError as B;
    for (e, status, c) in [
        (B::InvalidRequest("x"), 400, "invalid_request"),
        (B::InvalidScope, 400, "invalid_scope"),
        (B::ExpiredLoginHintToken, 400, "expired_login_hint_token"),
        (B::UnknownUserId, 400, "unknown_user_id"),
        (B::UnauthorizedClient, 400, "unauthorized_client"),
        (B::MissingUserCode, 400, "missing_user_code"),
        (B::InvalidUserCode, 400, "invalid_user_code"),
        (B::InvalidBindingMessage, 400, "invalid_binding_message"),
        (B::InvalidClient, 401, "invalid_client"),
        (B::AccessDenied, 403, "access_denied"),
        (B::Unavailable, 503, "temporarily_unavailable"),
    ] {
        assert_eq!(code(&e), (status, c), "{e:?}");
    }
    for (e, c) in [
        (PollError::AuthorizationPending, "authorization_pending"),
        (PollError::SlowDown, "slow_down"),
        (PollError::ExpiredToken, "expired_token"),
        (PollError::AccessDenied, "access_denied"),
        (PollError::UnauthorizedClient, "unauthorized_client"),
        (PollError::InvalidGrant("x"), "invalid_grant"),
        (
            PollError::Reused {
                grant_id: "g".into(),
            },
            "invalid_grant",
        ),
    ] {
        assert_eq!(code(&e), (400, c), "{e:?}");
        // The token endpoint says the same through GrantError.
        assert_eq!(code(&GrantError::from(e.clone())), (400, c), "{e:?}");
    }
}

// ---------------------------------------------------------------- audit

#[test]
fn audit_events_name_clients_and_pseudonyms_never_ids_or_tokens() {
    let f = fixture();
    let r = f
        .start(
            "ping",
            &alice(&[("client_notification_token", NOTIFY_TOKEN)]),
        )
        .unwrap();
    f.approve(&r);
    let t = f.poll("ping", r.auth_req_id.expose()).unwrap();
    let events = f.audit.events();
    let kinds: Vec<(EventKind, Outcome, &str)> = events
        .iter()
        .map(|e| (e.kind, e.outcome, e.reason))
        .collect();
    assert!(kinds.contains(&(EventKind::CibaRequest, Outcome::Success, "started")));
    assert!(kinds.contains(&(EventKind::Ciba, Outcome::Success, "approved")));
    assert!(kinds.contains(&(EventKind::CibaRedeemed, Outcome::Success, "issued")));
    let alice_ref = f.pairwise.audit_ref("subject", "alice");
    for e in &events {
        if matches!(e.kind, EventKind::CibaRequest | EventKind::Ciba) {
            assert_eq!(e.subject_ref.as_deref(), Some(alice_ref.as_str()), "{e:?}");
            assert_eq!(
                e.token_ref.as_deref(),
                Some(&r.request_ref().to_b64()[..12])
            );
        }
        let line = serde_json::to_string(e).unwrap();
        for secret in [
            r.auth_req_id.expose(),
            NOTIFY_TOKEN,
            "alice",
            "W4SCT",
            t.access_token.expose(),
        ] {
            assert!(!line.contains(secret), "{secret} in {line}");
        }
    }
}

// ---------------------------------------------------------------- devices

/// A device: a P-256 key made with ring, and its JWK.
struct Phone {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Phone {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Phone { pair, rng }
    }

    fn jwk(&self) -> Value {
        let p = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "x": b64::encode(&p[1..33]), "y": b64::encode(&p[33..65])})
    }

    fn jwt(&self, header: Value, claims: Value) -> String {
        let input = format!(
            "{}.{}",
            b64::encode(header.to_string()),
            b64::encode(claims.to_string())
        );
        let sig = self.pair.sign(&self.rng, input.as_bytes()).unwrap();
        format!("{input}.{}", b64::encode(sig.as_ref()))
    }

    /// A well-formed device JWT with `extra` claims.
    fn signed(&self, device_id: &str, now: i64, jti: &str, extra: Value) -> String {
        let mut c = json!({"iss": device_id, "aud": ISS, "iat": now, "exp": now + 60, "jti": jti});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        self.jwt(json!({"alg": "ES256", "kid": device_id, "typ": "JWT"}), c)
    }
}

fn pair(f: &F, user: &str, phone: &Phone) -> String {
    let pc = start_pairing(&f.ctx(), user).unwrap();
    complete_pairing(
        &f.ctx(),
        pc.expose(),
        phone.jwk().to_string().as_bytes(),
        "Alice's phone",
    )
    .unwrap()
}

#[test]
fn device_decision_jwt_signed_by_the_device_key_approves() {
    let f = fixture();
    let phone = Phone::new();
    let pc = start_pairing(&f.ctx(), "alice").unwrap();
    assert_eq!(pc.expose().len(), PAIRING_CODE_LEN);
    assert!(pc.expose().bytes().all(|b| PAIRING_ALPHABET.contains(&b)));
    assert!(!format!("{pc:?}").contains(pc.expose()));
    // Typed loosely: lower case, with a dash.
    let typed = format!("{}-{}", &pc.expose()[..4].to_lowercase(), &pc.expose()[4..]);
    let device_id = complete_pairing(
        &f.ctx(),
        &typed,
        phone.jwk().to_string().as_bytes(),
        "Alice's phone",
    )
    .unwrap();
    assert_eq!(device_id.len(), DEVICE_ID_LEN);
    let devices = list_devices(&f.ctx(), "alice").unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].device_id, device_id);
    assert_eq!(devices[0].name, "Alice's phone");
    assert!(list_devices(&f.ctx(), "bob").unwrap().is_empty());

    let r = f.start("poll", &alice(&[])).unwrap();
    // The device lists what is pending, then signs its decision.
    let listed = phone.signed(&device_id, f.now().0, "list-1", json!({}));
    let dev = authenticate_device(&f.ctx(), &listed).unwrap();
    assert_eq!(dev.user_id(), "alice");
    assert_eq!(dev.device_id(), device_id);
    let pending = pending_for_user(&f.ctx(), dev.user_id()).unwrap();
    let shown = pending[0].binding_message.as_deref().unwrap();
    let decision = phone.signed(
        &device_id,
        f.now().0,
        "decide-1",
        json!({"request_ref": pending[0].request_ref.to_b64(), "approve": true,
            "binding_message_hash": binding_message_hash(shown)}),
    );
    let d = decide_with_device(&f.ctx(), &decision).unwrap();
    assert_eq!(d.decision, Decision::Approve);
    // The audit says which device decided.
    let ev = f.audit.events();
    let decided = ev
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::Ciba && e.reason == "approved")
        .unwrap();
    assert_eq!(decided.device_id.as_deref(), Some(device_id.as_str()));
    assert!(f.poll("poll", r.auth_req_id.expose()).is_ok());
}

#[test]
fn expire_due_expires_every_undecided_request_once_and_notifies_push_clients() {
    let f = fixture();
    let p = alice(&[("client_notification_token", NOTIFY_TOKEN)]);
    let push = f.start("push", &p).unwrap();
    let poll = f.start("poll", &alice(&[])).unwrap();
    let decided = f.start("poll", &alice(&[])).unwrap();
    f.decide(&decided, "alice", Decision::Deny, Some("W4SCT"))
        .unwrap();
    assert!(expire_due(&f.ctx(), 1000).unwrap().is_empty(), "not yet");
    f.advance(i64::from(DEFAULT_EXPIRY));
    let sent = expire_due(&f.ctx(), 1000).unwrap();
    assert_eq!(sent.len(), 1, "only the push client is told");
    let body: Value = serde_json::from_str(&sent[0].body).unwrap();
    assert_eq!(
        body,
        json!({"error": "expired_token", "auth_req_id": push.auth_req_id.expose()})
    );
    assert_eq!(f.record(&push).state, CibaState::Expired);
    assert_eq!(f.record(&poll).state, CibaState::Expired);
    assert_ne!(f.record(&decided).state, CibaState::Expired);
    let expired = f
        .audit
        .events()
        .iter()
        .filter(|e| e.kind == EventKind::Ciba && e.reason == "expired_token")
        .count();
    assert_eq!(expired, 2, "each expiry audited");
    // Once only.
    assert!(expire_due(&f.ctx(), 1000).unwrap().is_empty());
}

#[test]
fn device_deny_and_binding_message_mismatch() {
    let f = fixture();
    let phone = Phone::new();
    let device_id = pair(&f, "alice", &phone);
    let r = f.start("poll", &alice(&[])).unwrap();
    let wrong = phone.signed(
        &device_id,
        f.now().0,
        "d-1",
        json!({"request_ref": r.request_ref().to_b64(), "approve": true,
            "binding_message_hash": binding_message_hash("OTHER")}),
    );
    assert_eq!(
        decide_with_device(&f.ctx(), &wrong).unwrap_err(),
        DeviceError::Decision(DecisionError::BindingMessageMismatch)
    );
    for (jti, approve) in [("d-2", json!("yes")), ("d-3", Value::Null)] {
        let bad = phone.signed(
            &device_id,
            f.now().0,
            jti,
            json!({"request_ref": r.request_ref().to_b64(), "approve": approve,
                "binding_message_hash": binding_message_hash("W4SCT")}),
        );
        assert_eq!(
            decide_with_device(&f.ctx(), &bad).unwrap_err(),
            DeviceError::InvalidToken("approve")
        );
    }
    let no_ref = phone.signed(&device_id, f.now().0, "d-4", json!({"approve": false}));
    assert_eq!(
        decide_with_device(&f.ctx(), &no_ref).unwrap_err(),
        DeviceError::InvalidToken("request_ref")
    );
    let deny = phone.signed(
        &device_id,
        f.now().0,
        "d-5",
        json!({"request_ref": r.request_ref().to_b64(), "approve": false,
            "binding_message_hash": binding_message_hash("W4SCT")}),
    );
    assert_eq!(
        decide_with_device(&f.ctx(), &deny).unwrap().decision,
        Decision::Deny
    );
    assert_eq!(
        f.poll("poll", r.auth_req_id.expose()).unwrap_err(),
        GrantError::AccessDenied
    );
}

#[test]
fn b7_another_users_device_cannot_decide() {
    let f = fixture();
    let bobs = Phone::new();
    let bob_device = pair(&f, "bob", &bobs);
    let r = f.start("poll", &alice(&[])).unwrap();
    let jwt = bobs.signed(
        &bob_device,
        f.now().0,
        "b-1",
        json!({"request_ref": r.request_ref().to_b64(), "approve": true,
            "binding_message_hash": binding_message_hash("W4SCT")}),
    );
    let e = decide_with_device(&f.ctx(), &jwt).unwrap_err();
    assert_eq!(e, DeviceError::Decision(DecisionError::Forbidden));
    assert_eq!(code(&e), (403, "access_denied"));
    assert_eq!(f.record(&r).state, CibaState::Pending);
}

#[test]
fn replayed_and_malformed_device_jwts_are_refused() {
    let f = fixture();
    let phone = Phone::new();
    let device_id = pair(&f, "alice", &phone);
    let now = f.now().0;
    let ok = phone.signed(&device_id, now, "once", json!({}));
    assert!(authenticate_device(&f.ctx(), &ok).is_ok());
    let e = authenticate_device(&f.ctx(), &ok).unwrap_err();
    assert_eq!(e, DeviceError::InvalidToken("jti replayed"));
    assert_eq!(code(&e), (401, "invalid_token"));

    let stranger = Phone::new();
    let header = json!({"alg": "ES256", "kid": device_id});
    let claims = |edit: Value| {
        let mut c = json!({"iss": device_id, "aud": ISS, "iat": now, "exp": now + 60, "jti": "x"});
        for (k, v) in edit.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let cases = [
        (
            "another key",
            stranger.jwt(header.clone(), claims(json!({"jti": "1"}))),
        ),
        (
            "unknown kid",
            phone.jwt(
                json!({"alg": "ES256", "kid": "AAAAAAAAAAAAAAAAAAAAAA"}),
                claims(json!({"jti": "2"})),
            ),
        ),
        (
            "no kid",
            phone.jwt(json!({"alg": "ES256"}), claims(json!({"jti": "3"}))),
        ),
        (
            "wrong iss",
            phone.jwt(
                header.clone(),
                claims(json!({"iss": "someone", "jti": "4"})),
            ),
        ),
        (
            "wrong aud",
            phone.jwt(
                header.clone(),
                claims(json!({"aud": "https://evil.example", "jti": "5"})),
            ),
        ),
        (
            "lifetime over 120 s",
            phone.jwt(
                header.clone(),
                claims(json!({"exp": now + 121, "jti": "6"})),
            ),
        ),
        (
            "expired",
            phone.jwt(
                header.clone(),
                claims(json!({"iat": now - 200, "exp": now - 100, "jti": "7"})),
            ),
        ),
        (
            "no iat",
            phone.jwt(header.clone(), claims(json!({"iat": null, "jti": "8"}))),
        ),
        (
            "no jti",
            phone.jwt(header.clone(), claims(json!({"jti": null}))),
        ),
        (
            "no exp",
            phone.jwt(header.clone(), claims(json!({"exp": null, "jti": "9"}))),
        ),
        (
            "typ",
            phone.jwt(
                json!({"alg": "ES256", "kid": device_id, "typ": "at+jwt"}),
                claims(json!({"jti": "10"})),
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64::encode(json!({"alg": "none", "kid": device_id}).to_string()),
                b64::encode(claims(json!({"jti": "11"})).to_string())
            ),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (what, jwt) in cases {
        let e = authenticate_device(&f.ctx(), &jwt).unwrap_err();
        assert!(matches!(e, DeviceError::InvalidToken(_)), "{what}: {e:?}");
    }
    // A removed device stops working at once; removal is by its own user only.
    assert_eq!(
        remove_device(&f.ctx(), "bob", &device_id).unwrap_err(),
        DeviceError::NotFound
    );
    remove_device(&f.ctx(), "alice", &device_id).unwrap();
    assert!(list_devices(&f.ctx(), "alice").unwrap().is_empty());
    let after = phone.signed(&device_id, now, "after-removal", json!({}));
    assert_eq!(
        authenticate_device(&f.ctx(), &after).unwrap_err(),
        DeviceError::InvalidToken("unknown device")
    );
    // A locked user's device is refused too.
    let id2 = pair(&f, "bob", &phone);
    f.users.set("bob", UserStatus::Inactive);
    let jwt = phone.signed(&id2, now, "locked", json!({}));
    assert_eq!(
        authenticate_device(&f.ctx(), &jwt).unwrap_err(),
        DeviceError::Forbidden
    );
}

#[test]
fn pairing_codes_are_one_time_and_expire_and_keys_must_be_public_p256() {
    let f = fixture();
    let phone = Phone::new();
    let jwk = phone.jwk().to_string();
    let pc = start_pairing(&f.ctx(), "alice").unwrap();
    // Bad keys and names are refused without spending the code.
    let mut private = phone.jwk();
    private["d"] = json!(b64::encode([1u8; 32]));
    let p384 = SigningKey::generate(Algorithm::ES384).unwrap();
    let ed = SigningKey::generate(Algorithm::EdDSA).unwrap();
    for (what, key) in [
        ("private member", private.to_string()),
        (
            "P-384",
            Value::Object(p384.verifying_key().to_jwk()).to_string(),
        ),
        (
            "Ed25519",
            Value::Object(ed.verifying_key().to_jwk()).to_string(),
        ),
        (
            "symmetric",
            json!({"kty": "oct", "k": "c2VjcmV0"}).to_string(),
        ),
        ("not json", "{".to_owned()),
    ] {
        let e = complete_pairing(&f.ctx(), pc.expose(), key.as_bytes(), "phone").unwrap_err();
        assert!(matches!(e, DeviceError::InvalidKey(_)), "{what}: {e:?}");
        assert_eq!(code(&e), (400, "invalid_request"));
    }
    for name in ["", " padded", "tab\tname", "bidi\u{202e}", &"n".repeat(65)] {
        assert_eq!(
            complete_pairing(&f.ctx(), pc.expose(), jwk.as_bytes(), name).unwrap_err(),
            DeviceError::InvalidName,
            "{name:?}"
        );
    }
    // Wrong and malformed codes.
    for c in ["22222222", "short", "OOOOOOOO", "IIIIIIII"] {
        assert_eq!(
            complete_pairing(&f.ctx(), c, jwk.as_bytes(), "phone").unwrap_err(),
            DeviceError::InvalidPairingCode
        );
    }
    assert!(complete_pairing(&f.ctx(), pc.expose(), jwk.as_bytes(), "phone").is_ok());
    let e = complete_pairing(&f.ctx(), pc.expose(), jwk.as_bytes(), "phone").unwrap_err();
    assert_eq!(e, DeviceError::InvalidPairingCode);
    assert_eq!(code(&e), (400, "invalid_grant"));
    // Five minutes.
    let late = start_pairing(&f.ctx(), "alice").unwrap();
    f.advance(PAIRING_CODE_LIFETIME);
    assert_eq!(
        complete_pairing(&f.ctx(), late.expose(), jwk.as_bytes(), "phone").unwrap_err(),
        DeviceError::InvalidPairingCode
    );
    // Locked users cannot pair.
    assert_eq!(
        start_pairing(&f.ctx(), "carol").unwrap_err(),
        DeviceError::Forbidden
    );
}

#[test]
fn sixty_four_parallel_pairings_with_one_code_pair_one_device() {
    let f = fixture();
    let pc = start_pairing(&f.ctx(), "alice").unwrap();
    let jwk = Phone::new().jwk().to_string();
    let ok = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|_| {
                let (f, pc, jwk) = (&f, pc.expose(), jwk.as_bytes());
                s.spawn(move || complete_pairing(&f.ctx(), pc, jwk, "phone").is_ok())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|ok| *ok)
            .count()
    });
    assert_eq!(ok, 1);
    assert_eq!(list_devices(&f.ctx(), "alice").unwrap().len(), 1);
}
