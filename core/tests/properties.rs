#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code
//! Property tests of issue #9 (THREATS.md §4.2) beyond the JOSE layer, whose round trip,
//! bit-flip and `validate_claims` boundary properties live in `jose_props.rs`. Each
//! proptest runs 256 cases by default (`PROPTEST_CASES` overrides, e.g. 10,000 nightly);
//! the races run 1,000 rounds of 64 threads.
//!
//! - §4.2 item 3, one-time values (A1, P12, C1, B5, R5): exactly one winner among 64
//!   concurrent redeemers, every round, for each kind (`support/one_time.rs`, shared with
//!   the redb store's run in `server/tests/redb_properties.rs`).
//! - §4.2 item 2, time claims through the client-assertion path (C3, C4, J20–J24): an
//!   assertion authenticates exactly when `now ≤ exp + leeway ∧ nbf ≤ now + leeway ∧
//!   iat ≤ now + leeway ∧ exp − (iat or now) ≤ 300`; a rejection records no jti; an
//!   accepted jti stays recorded for as long as the assertion would be accepted.
//! - P6/P7 request objects: pushed exactly when `exp` and `nbf` are present, `now ≤ exp +
//!   leeway ∧ nbf ≤ now + leeway ∧ nbf ≥ now − 60 min ∧ exp − nbf ≤ 60 min`; a refused one
//!   issues no request_uri.
//! - §4.2 item 4, state unchanged on reject (A3–A5, A7): a code redemption with any wrong
//!   client, redirect_uri, verifier or code changes nothing and leaves the code usable.
//! - §4.2 item 9, redirect URIs (A9–A11, P10): a mutated registered URI (case, dot
//!   segments, userinfo, percent-encoding, port, trailing slash, fragment, whitespace)
//!   matches only when byte-equal to a registered one, or when it is a registered
//!   loopback IP-literal `http` URI with only the port changed (RFC 8252 §7.3).
//! - §4.2 item 6, scope algebra on refresh (R6, A19): any covered request is granted
//!   exactly, in any order; anything wider is `invalid_scope` and changes nothing.
//! - The introspection cache (I6, I9, S10): an entry is served only for the key it was
//!   stored under, from its insertion until `min(insert + TTL, exp, insert + (exp−iat)/2)`,
//!   never before its insertion, and always while live when the cache has room.
//! - §4.2 item 5, base64url canonicality (J14).
//! - §4.2 item 7, revocation coverage (V5, I6, R4): revoking any refresh token of a
//!   family (JWT, opaque or wrapper access tokens, after any number of rotations) makes
//!   every access and refresh token of the family inactive at once on the node that
//!   revoked, and within the cache TTL on a node that missed the invalidation.
//! - §4.2 item 8, CIBA interval (B3): under any poll schedule, `slow_down` exactly when a
//!   poll comes sooner than the enforced interval, which grows by 5 s and never shrinks.

mod common;
#[path = "support/one_time.rs"]
mod one_time;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{client, Dir};
use heartgate_core::audit::NoAudit;
use heartgate_core::client::{
    authenticate, ClientAuthError, ClientCredentials, Endpoints, JWT_BEARER_ASSERTION_TYPE,
};
use heartgate_core::clock::UnixTime;
use heartgate_core::grant::{self, GrantError};
use heartgate_core::introspect::{
    CacheConfig, CacheKey, IntrospectError, IntrospectionCache, IntrospectionResponse,
    InvalidationTags,
};
use heartgate_core::jose::{
    b64, sign_jwt, validate_claims, Algorithm, AlgorithmSet, AudienceRule, Claims, JoseError,
    SigningKey, TypRule, Validation, DEFAULT_LEEWAY, MAX_NUMERIC_DATE,
};
use heartgate_core::scope::ScopeSet;
use heartgate_core::store::{MemoryStore, Namespace, Store};
use one_time::{Fixture, Kind, NOW, ROUNDS};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Map, Value};

// ------------------------------------------------------------------------------------------
// §4.2 item 3: one-time values under concurrency
// ------------------------------------------------------------------------------------------

fn one_time_race(kind: Kind) {
    let store = MemoryStore::new();
    Fixture::new(&store)
        .race(kind, ROUNDS)
        .assert_exactly_one_winner(kind);
}

#[test]
fn a1_code_has_exactly_one_redeemer_among_64_every_round() {
    one_time_race(Kind::Code);
}

#[test]
fn p12_request_uri_has_exactly_one_consumer_among_64_every_round() {
    one_time_race(Kind::RequestUri);
}

#[test]
fn c1_assertion_jti_authenticates_exactly_one_of_64_every_round() {
    one_time_race(Kind::Jti);
}

#[test]
fn b5_auth_req_id_gives_exactly_one_token_response_among_64_every_round() {
    one_time_race(Kind::AuthReqId);
}

#[test]
fn r5_refresh_token_rotates_for_exactly_one_of_64_every_round() {
    one_time_race(Kind::RefreshToken);
}

// ------------------------------------------------------------------------------------------
// §4.2 item 2: time claims through the client-assertion path (C3, C4, J20–J24)
// ------------------------------------------------------------------------------------------

const ISS: &str = "https://as.example";
/// The SMART profile's longest assertion lifetime (`exp − iat`), seconds.
const MAX_ASSERTION_LIFETIME: i64 = 300;
const LEEWAY: i64 = DEFAULT_LEEWAY as i64;

struct Pkjwt {
    dir: Dir,
    key: SigningKey,
}

fn pkjwt() -> &'static Pkjwt {
    static P: OnceLock<Pkjwt> = OnceLock::new();
    P.get_or_init(|| {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let c = client(json!({"client_id": "svc", "profile": "smart",
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [key.verifying_key().to_jwk()]},
            "grant_types": ["client_credentials"], "scope": "system/Observation.rs"}));
        Pkjwt {
            dir: Dir([("svc".to_owned(), c)].into_iter().collect()),
            key,
        }
    })
}

fn authenticate_at(
    assertion: &str,
    store: &dyn Store,
    now: i64,
) -> Result<heartgate_core::client::AuthenticatedClient, ClientAuthError> {
    let creds = ClientCredentials {
        client_assertion_type: Some(JWT_BEARER_ASSERTION_TYPE),
        client_assertion: Some(assertion),
        ..Default::default()
    };
    let endpoints = Endpoints {
        issuer: ISS.into(),
        token: format!("{ISS}/token"),
        par: format!("{ISS}/par"),
    };
    authenticate(
        &creds,
        &pkjwt().dir,
        &endpoints,
        store,
        UnixTime(now),
        &NoAudit,
    )
}

#[derive(Debug, Clone)]
struct AssertionTimes {
    now: i64,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
}

impl AssertionTimes {
    /// THREATS §4.2 item 2, written independently of the implementation.
    fn acceptable(&self) -> bool {
        let Some(exp) = self.exp else {
            return false; // J21
        };
        let now = self.now;
        now <= exp + LEEWAY
            && self.nbf.is_none_or(|nbf| nbf <= now + LEEWAY)
            && self.iat.is_none_or(|iat| iat <= now + LEEWAY)
            && exp - self.iat.unwrap_or(now) <= MAX_ASSERTION_LIFETIME
    }
}

/// An offset from `now` that lands on or next to a boundary most of the time.
fn offset(boundaries: &'static [i64]) -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => (0..boundaries.len(), -2i64..=2).prop_map(move |(i, d)| boundaries[i] + d),
        1 => -1_000i64..=1_000,
    ]
}

prop_compose! {
    fn assertion_times()(now in 1_000_000_000i64..=4_000_000_000)(
        now in Just(now),
        exp in prop::option::weighted(0.95, offset(&[-LEEWAY, 0, MAX_ASSERTION_LIFETIME, MAX_ASSERTION_LIFETIME - LEEWAY, 48 * 3600])),
        nbf in prop::option::of(offset(&[LEEWAY, 0, 8, 60])),
        iat in prop::option::of(offset(&[LEEWAY, 0, 8, -MAX_ASSERTION_LIFETIME])),
    ) -> AssertionTimes {
        AssertionTimes { now, exp: exp.map(|d| now + d), nbf: nbf.map(|d| now + d), iat: iat.map(|d| now + d) }
    }
}

static JTI: AtomicU64 = AtomicU64::new(0);

fn signed_assertion(t: &AssertionTimes) -> String {
    let mut claims = Map::new();
    claims.insert("iss".into(), "svc".into());
    claims.insert("sub".into(), "svc".into());
    claims.insert("aud".into(), format!("{ISS}/token").into());
    let jti = format!("jti-{}", JTI.fetch_add(1, Ordering::Relaxed));
    claims.insert("jti".into(), jti.into());
    for (name, v) in [("exp", t.exp), ("nbf", t.nbf), ("iat", t.iat)] {
        if let Some(v) = v {
            claims.insert(name.into(), v.into());
        }
    }
    sign_jwt(&pkjwt().key, None, &claims).unwrap()
}

/// A claim value of the wrong JSON type or out of range for a NumericDate (J20).
fn malformed_date() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0i64..=4_000_000_000).prop_map(|v| Value::from(v.to_string())),
        (1.0e9f64..4.0e9).prop_map(Value::from),
        Just(json!(1.7e9)),
        Just(json!(-1)),
        (MAX_NUMERIC_DATE + 1..=i64::MAX).prop_map(Value::from),
        any::<u64>()
            .prop_filter("beyond i64", |v| *v > i64::MAX as u64)
            .prop_map(Value::from),
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        Just(json!([1_700_000_000])),
        Just(json!({"t": 1_700_000_000})),
    ]
}

proptest! {
    /// THREATS C3, C4, J22, J24: every time boundary, property-tested.
    #[test]
    fn c3_c4_j22_j24_assertion_accepted_exactly_within_time_bounds(t in assertion_times()) {
        let store = MemoryStore::new();
        let assertion = signed_assertion(&t);
        let r = authenticate_at(&assertion, &store, t.now);
        prop_assert_eq!(r.is_ok(), t.acceptable(), "{:?}: {:?}", t, r.as_ref().err());
        let recorded = store.snapshot(UnixTime(t.now)).unwrap();
        match r {
            Err(e) => {
                prop_assert!(matches!(e, ClientAuthError::InvalidClient(_)), "{:?}", e);
                // THREATS §2 conventions: a rejected assertion records no jti.
                prop_assert!(recorded.is_empty(), "{:?}", recorded);
            }
            Ok(_) => {
                prop_assert_eq!(recorded.len(), 1);
                prop_assert_eq!(recorded[0].0, Namespace::Jti);
                // C1/S10: replayed at any moment the assertion is still acceptable, the
                // jti is still recorded.
                let last = t.exp.unwrap() + LEEWAY;
                for later in [t.now, (t.now + last) / 2, last] {
                    prop_assert_eq!(
                        authenticate_at(&assertion, &store, later).err(),
                        Some(ClientAuthError::InvalidClient("assertion replayed")),
                        "replay at {}", later
                    );
                }
            }
        }
    }

    #[test]
    fn j20_malformed_time_claims_are_invalid_never_absent(
        name_i in 0usize..3, bad in malformed_date(), now in 0i64..=4_000_000_000,
    ) {
        let name = ["exp", "nbf", "iat"][name_i];
        let mut m = Map::new();
        m.insert("exp".into(), (now + 60).into());
        m.insert(name.into(), bad.clone());
        let v = Validation::new(AlgorithmSet::ALL, TypRule::OptionalOneOf(&[]), AudienceRule::MustBeAbsent);
        prop_assert_eq!(
            validate_claims(&Claims::new(m), &v, UnixTime(now)),
            Err(JoseError::InvalidClaim(name)),
            "{} = {}", name, bad
        );
    }
}

/// FAPI 2.0 Message Signing / OIDF: the longest request-object lifetime and the oldest
/// `nbf`, seconds (P6).
const MAX_REQUEST_OBJECT_LIFETIME: i64 = 3600;

struct Jar {
    dir: Dir,
    key: SigningKey,
}

fn jar() -> &'static Jar {
    static J: OnceLock<Jar> = OnceLock::new();
    J.get_or_init(|| {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let c = client(json!({"client_id": "ms", "profile": "fapi2-message-signing",
            "redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [key.verifying_key().to_jwk()]}, "require_pushed_authorization_requests": true,
            "tls_client_certificate_bound_access_tokens": true, "request_object_signing_alg": "ES256",
            "authorization_signed_response_alg": "ES256"}));
        Jar {
            dir: Dir([("ms".to_owned(), c)].into_iter().collect()),
            key,
        }
    })
}

#[derive(Debug, Clone)]
struct RequestObjectTimes {
    now: i64,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
}

impl RequestObjectTimes {
    /// P6/P7 and THREATS §4.2 item 2 for request objects.
    fn acceptable(&self) -> bool {
        let (Some(exp), Some(nbf)) = (self.exp, self.nbf) else {
            return false; // J21, P6: exp and nbf are required
        };
        let now = self.now;
        now <= exp + LEEWAY
            && nbf <= now + LEEWAY
            && self.iat.is_none_or(|iat| iat <= now + LEEWAY)
            && nbf >= now - MAX_REQUEST_OBJECT_LIFETIME
            && exp - nbf <= MAX_REQUEST_OBJECT_LIFETIME
    }
}

prop_compose! {
    fn request_object_times()(now in 1_000_000_000i64..=4_000_000_000)(
        now in Just(now),
        nbf in prop::option::weighted(0.95, offset(&[LEEWAY, 8, 0, -MAX_REQUEST_OBJECT_LIFETIME, -600])),
        lifetime in offset(&[MAX_REQUEST_OBJECT_LIFETIME, 300, 0]),
        exp_near_now in prop::option::weighted(0.3, offset(&[-LEEWAY, 0])),
        has_exp in prop::bool::weighted(0.95),
        iat in prop::option::of(offset(&[LEEWAY, 0, -60])),
    ) -> RequestObjectTimes {
        let nbf = nbf.map(|d| now + d);
        let exp = match (has_exp, exp_near_now, nbf) {
            (false, _, _) => None,
            (true, Some(d), _) => Some(now + d),
            (true, None, Some(n)) => Some(n + lifetime),
            (true, None, None) => Some(now + lifetime),
        };
        RequestObjectTimes { now, exp, nbf, iat: iat.map(|d| now + d) }
    }
}

proptest! {
    #[test]
    fn p6_p7_request_object_accepted_exactly_within_time_bounds(t in request_object_times()) {
        use heartgate_core::authorize::par::{push, ParConfig, ParError, Params};
        use heartgate_core::authorize::pkce::CodeChallenge;
        let mut claims = Map::new();
        for (k, v) in [
            ("iss", "ms"), ("aud", ISS), ("client_id", "ms"), ("response_type", "code"),
            ("redirect_uri", "https://app.example/cb"), ("scope", "openid"),
            ("code_challenge_method", "S256"),
        ] {
            claims.insert(k.into(), v.into());
        }
        claims.insert(
            "code_challenge".into(),
            CodeChallenge::for_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk").as_str().into(),
        );
        for (name, v) in [("exp", t.exp), ("nbf", t.nbf), ("iat", t.iat)] {
            if let Some(v) = v {
                claims.insert(name.into(), v.into());
            }
        }
        let mut body = Params::new();
        body.insert("client_id".into(), "ms".into());
        body.insert("request".into(), sign_jwt(&jar().key, Some("oauth-authz-req+jwt"), &claims).unwrap());
        // The client authenticated (its assertion is not what is tested here).
        let auth_store = MemoryStore::new();
        let assertion = sign_jwt(&jar().key, None, json!({"iss": "ms", "sub": "ms", "aud": ISS,
            "exp": t.now + 60, "jti": "a"}).as_object().unwrap()).unwrap();
        let creds = ClientCredentials {
            client_assertion_type: Some(JWT_BEARER_ASSERTION_TYPE),
            client_assertion: Some(&assertion),
            ..Default::default()
        };
        let endpoints = Endpoints { issuer: ISS.into(), token: format!("{ISS}/token"), par: format!("{ISS}/par") };
        let ms = authenticate(&creds, &jar().dir, &endpoints, &auth_store, UnixTime(t.now), &NoAudit).unwrap();

        let store = MemoryStore::new();
        let config = ParConfig { issuer: ISS.into(), lifetime: 60 };
        let r = push(&ms, &body, &jar().dir, &config, &store, UnixTime(t.now), &NoAudit);
        prop_assert_eq!(r.is_ok(), t.acceptable(), "{:?}: {:?}", t, r.as_ref().err());
        if let Err(e) = r {
            prop_assert!(matches!(e, ParError::InvalidRequestObject(_)), "{:?}", e);
            prop_assert!(store.snapshot(UnixTime(t.now)).unwrap().is_empty(), "a request_uri was issued");
        }
    }
}

// ------------------------------------------------------------------------------------------
// §4.2 item 4: state unchanged on reject (A3, A4, A5, A7)
// ------------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn a3_a5_a7_refused_code_redemption_changes_nothing_and_leaves_the_code_usable(
        wrong_client in any::<bool>(),
        redirect in prop::sample::select(vec![
            Some("https://app.example/cb"), None, Some("https://app.example/cb/"),
            Some("https://APP.example/cb"), Some("https://app.example/cb?x=1"),
            Some("https://app.example/cb#"), Some("http://app.example/cb"),
        ]),
        verifier in prop_oneof![
            3 => Just(Some("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".to_owned())),
            1 => Just(None),
            2 => "[A-Za-z0-9._~-]{43,128}".prop_map(Some),
            1 => "[A-Za-z0-9._~-]{0,42}".prop_map(Some),
            1 => "\\PC{43,60}".prop_map(Some),
        ],
        code_flip in prop::option::of((any::<Index>(), 0u8..6)),
    ) {
        use heartgate_core::authorize::code::redeem;
        const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let store = MemoryStore::new();
        let f = Fixture::new(&store);
        let app = f.public("app");
        let code = f.code_for(&app, "patient/Observation.rs");
        let presented = match code_flip {
            None => code.clone(),
            Some((i, bit)) => {
                let mut b = code.clone().into_bytes();
                let i = i.index(b.len());
                b[i] ^= 1 << bit;
                String::from_utf8_lossy(&b).into_owned()
            }
        };
        let client = if wrong_client { f.public("app-jwt") } else { app.clone() };
        let honest = !wrong_client && presented == code && redirect == Some("https://app.example/cb")
            && verifier.as_deref() == Some(VERIFIER);
        let before = store.snapshot(NOW).unwrap();
        let r = redeem(&presented, &client, redirect, verifier.as_deref(), &store, NOW);
        if honest {
            prop_assert!(r.is_ok(), "{:?}", r.err());
        } else {
            prop_assert!(r.is_err(), "a mutated redemption succeeded");
            prop_assert_eq!(store.snapshot(NOW).unwrap(), before, "a refused redemption changed the store");
            // A3: the rightful client can still redeem it.
            prop_assert!(redeem(&code, &app, Some("https://app.example/cb"), Some(VERIFIER), &store, NOW).is_ok());
        }
    }
}

// ------------------------------------------------------------------------------------------
// §4.2 item 6: scope downscoping on refresh never widens (R6, A19)
// ------------------------------------------------------------------------------------------

/// A SMART v2 resource scope as a model: compartment, resource (`None` = `*`), the set of
/// permissions among `cruds`, and a constraint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ModelScope {
    compartment: &'static str,
    resource: Option<&'static str>,
    perms: BTreeSet<char>,
    constraint: Option<&'static str>,
}

impl ModelScope {
    fn text(&self) -> String {
        let perms: String = "cruds".chars().filter(|c| self.perms.contains(c)).collect();
        let mut s = format!(
            "{}/{}.{perms}",
            self.compartment,
            self.resource.unwrap_or("*")
        );
        if let Some(c) = self.constraint {
            s.push('?');
            s.push_str(c);
        }
        s
    }

    /// THREATS R6: a granted scope covers a requested one when it is about the same
    /// compartment, the same resource (or all), has every requested permission, and is
    /// unconstrained or constrained identically.
    fn covers(&self, r: &ModelScope) -> bool {
        self.compartment == r.compartment
            && (self.resource.is_none() || self.resource == r.resource)
            && r.perms.is_subset(&self.perms)
            && (self.constraint.is_none() || self.constraint == r.constraint)
    }
}

fn model_scope() -> impl Strategy<Value = ModelScope> {
    (
        prop::sample::select(vec!["patient", "user"]),
        prop::sample::select(vec![None, Some("Observation"), Some("Patient")]),
        prop::sample::subsequence(vec!['c', 'r', 'u', 'd', 's'], 1..=5),
        prop::sample::select(vec![None, Some("category=laboratory")]),
    )
        .prop_map(|(compartment, resource, perms, constraint)| ModelScope {
            compartment,
            resource,
            perms: perms.into_iter().collect(),
            constraint,
        })
}

proptest! {
    #[test]
    fn r6_refresh_grants_any_covered_subset_exactly_and_refuses_anything_wider(
        granted in prop::collection::btree_set(model_scope(), 1..4),
        picks in prop::collection::vec((any::<Index>(), any::<bool>()), 1..4),
        extra in prop::collection::vec(model_scope(), 0..3),
        order in any::<Index>(),
    ) {
        let granted: Vec<ModelScope> = granted.into_iter().collect();
        // Requested: some granted scopes, each possibly with fewer permissions, plus
        // arbitrary extra scopes (which may or may not be covered).
        let mut requested: Vec<ModelScope> = picks
            .iter()
            .map(|(i, narrow)| {
                let mut s = granted[i.index(granted.len())].clone();
                if *narrow && s.perms.len() > 1 {
                    let first = *s.perms.iter().next().unwrap();
                    s.perms.remove(&first);
                }
                s
            })
            .collect();
        requested.extend(extra);
        let covered = requested.iter().all(|r| granted.iter().any(|g| g.covers(r)));
        // Order-insensitive: the request is sent rotated.
        let mut texts: Vec<String> = requested.iter().map(ModelScope::text).collect();
        let k = order.index(texts.len());
        texts.rotate_left(k);
        let request = texts.join(" ");

        let granted_text: Vec<String> = granted.iter().map(ModelScope::text).collect();
        let store = MemoryStore::new();
        let f = Fixture::new(&store);
        let rt = f.refresh_token_for(&format!("offline_access {}", granted_text.join(" ")));
        let before = store.snapshot(NOW).unwrap();
        let r = grant::refresh_token(&f.public_app(), Some(&rt), Some(&request), &f.grant_context());
        if covered {
            let r = r.unwrap();
            let got: BTreeSet<&str> = r.scope.split(' ').collect();
            let want: BTreeSet<&str> = texts.iter().map(String::as_str).collect();
            prop_assert_eq!(got, want, "request {:?} of {:?}", request, granted_text);
            // And what was granted is covered by the original grant, per the core's own
            // scope algebra too.
            let original = ScopeSet::parse(&granted_text.join(" ")).unwrap();
            prop_assert!(original.covers(&ScopeSet::parse(&r.scope).unwrap()));
        } else {
            prop_assert_eq!(r.err(), Some(GrantError::InvalidScope), "request {:?} of {:?}", request, granted_text);
            prop_assert_eq!(store.snapshot(NOW).unwrap(), before, "a refused refresh changed the store");
        }
    }
}

// ------------------------------------------------------------------------------------------
// The introspection cache never serves past its TTL or the token's exp
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum CacheOp {
    /// Insert an answer for token `key` at `at`: active with `exp`/`iat` offsets from
    /// `at`, or inactive.
    Insert {
        key: u8,
        active: bool,
        exp: Option<i64>,
        iat: Option<i64>,
    },
    /// Look token `key` up.
    Get { key: u8 },
    /// Move the clock (backwards too: S10).
    Tick(i64),
}

fn cache_op() -> impl Strategy<Value = CacheOp> {
    prop_oneof![
        3 => (0u8..6, any::<bool>(), prop::option::weighted(0.9, -5i64..120), prop::option::of(-120i64..5))
            .prop_map(|(key, active, exp, iat)| CacheOp::Insert { key, active, exp, iat }),
        4 => (0u8..6).prop_map(|key| CacheOp::Get { key }),
        3 => prop_oneof![4 => 0i64..20, 1 => -30i64..0].prop_map(CacheOp::Tick),
    ]
}

/// What the model remembers of the last insert of a key.
#[derive(Debug, Clone)]
struct Cached {
    response: Arc<IntrospectionResponse>,
    inserted: i64,
    until: i64,
}

fn run_cache(
    ops: &[CacheOp],
    positive_ttl: u64,
    negative_ttl: u64,
    roomy: bool,
) -> Result<(), TestCaseError> {
    let config = if roomy {
        CacheConfig {
            positive_ttl: Duration::from_secs(positive_ttl),
            negative_ttl: Duration::from_secs(negative_ttl),
            max_entries: 10_000,
            max_negative_entries: 5_000,
        }
    } else {
        CacheConfig {
            positive_ttl: Duration::from_secs(positive_ttl),
            negative_ttl: Duration::from_secs(negative_ttl),
            max_entries: 3,
            max_negative_entries: 1,
        }
    };
    let cache = IntrospectionCache::new(config).unwrap();
    let mut now = NOW.0;
    let mut model: [Option<Cached>; 6] = Default::default();
    let key = |k: u8| CacheKey::for_token(&format!("hgat_token-{k}"));
    for op in ops {
        match op {
            CacheOp::Tick(d) => now += d,
            CacheOp::Insert {
                key: k,
                active,
                exp,
                iat,
            } => {
                let response = Arc::new(if *active {
                    let mut b = IntrospectionResponse::builder().active(true);
                    if let Some(e) = exp {
                        b = b.exp(UnixTime(now + e));
                    }
                    if let Some(i) = iat {
                        b = b.iat(UnixTime(now + i));
                    }
                    b.build().unwrap()
                } else {
                    IntrospectionResponse::inactive()
                });
                // The TTL the module documents: min(positive_ttl, exp − now, (exp − iat)/2).
                let ttl = if *active {
                    let mut t = positive_ttl as i64;
                    if let Some(e) = exp {
                        t = t.min(*e);
                        if let Some(i) = iat {
                            t = t.min((e - i) / 2);
                        }
                    }
                    t
                } else {
                    negative_ttl as i64
                };
                let r = cache.insert(
                    key(*k),
                    Arc::clone(&response),
                    InvalidationTags::none(),
                    cache.generation(),
                    UnixTime(now),
                );
                if ttl > 0 {
                    prop_assert_eq!(r.clone(), Ok(UnixTime(now + ttl)), "{:?} at {}", op, now);
                } else {
                    prop_assert_eq!(r.clone(), Err(IntrospectError::NotCacheable), "{:?}", op);
                }
                model[usize::from(*k)] = r.ok().map(|until| Cached {
                    response,
                    inserted: now,
                    until: until.0,
                });
            }
            CacheOp::Get { key: k } => {
                let served = cache.get(&key(*k), UnixTime(now));
                let m = model[usize::from(*k)].clone();
                let live = m.as_ref().filter(|c| c.inserted <= now && now < c.until);
                if m.as_ref().is_some_and(|c| now >= c.until) {
                    // Seen expired: the cache drops it; a clock stepped back later does
                    // not bring it back.
                    model[usize::from(*k)] = None;
                }
                match (&served, live) {
                    (Some(s), Some(c)) => {
                        prop_assert!(Arc::ptr_eq(s, &c.response), "another key's answer");
                        if let Some(exp) = s.exp() {
                            prop_assert!(now < exp.0, "served at {} past exp {}", now, exp.0);
                        }
                    }
                    (Some(_), None) => {
                        return Err(TestCaseError::fail(format!(
                            "served at {now} outside its lifetime: {m:?}"
                        )))
                    }
                    (None, Some(c)) => prop_assert!(
                        !roomy,
                        "a live entry was not served from a cache with room: {:?} at {}",
                        c,
                        now
                    ),
                    (None, None) => {}
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn i6_cache_never_serves_past_ttl_or_exp_and_serves_while_live(
        ops in prop::collection::vec(cache_op(), 1..60),
        positive_ttl in 1u64..=40,
        negative_ttl in 0u64..=8,
    ) {
        run_cache(&ops, positive_ttl, negative_ttl, true)?;
    }

    #[test]
    fn i10_full_cache_evicts_but_never_serves_stale(
        ops in prop::collection::vec(cache_op(), 1..60),
        positive_ttl in 1u64..=40,
        negative_ttl in 0u64..=8,
    ) {
        run_cache(&ops, positive_ttl, negative_ttl, false)?;
    }
}

// ------------------------------------------------------------------------------------------
// §4.2 item 5: base64url canonicality (J14)
// ------------------------------------------------------------------------------------------

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

proptest! {
    #[test]
    fn j14_any_accepted_string_re_encodes_to_itself(s in "[A-Za-z0-9_=+/ \\-]{0,48}") {
        if let Ok(bytes) = b64::decode(&s) {
            prop_assert_eq!(b64::encode(bytes), s);
        }
    }

    #[test]
    fn j14_encoding_round_trips(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let s = b64::encode(&bytes);
        prop_assert!(s.bytes().all(|c| ALPHABET.contains(&c)));
        prop_assert_eq!(b64::decode(&s).unwrap(), bytes);
    }

    #[test]
    fn j14_non_zero_trailing_bits_are_refused(
        bytes in prop::collection::vec(any::<u8>(), 1..64).prop_filter("partial last group", |b| b.len() % 3 != 0),
        bits in 1u8..16,
    ) {
        let s = b64::encode(&bytes);
        // The last character carries 4 (one byte left over) or 2 (two bytes) unused bits.
        let unused = if bytes.len() % 3 == 1 { 4 } else { 2 };
        let bits = bits % (1 << unused);
        prop_assume!(bits != 0);
        let last = s.as_bytes()[s.len() - 1];
        let v = ALPHABET.iter().position(|c| *c == last).unwrap() as u8;
        prop_assert_eq!(v & ((1 << unused) - 1), 0, "the encoder's own output is canonical");
        let mut t = s[..s.len() - 1].to_owned();
        t.push(ALPHABET[usize::from(v | bits)] as char);
        prop_assert_eq!(b64::decode(&t), Err(JoseError::Base64), "{} accepted", t);
    }

    #[test]
    fn j14_padding_standard_alphabet_and_whitespace_are_refused(
        bytes in prop::collection::vec(any::<u8>(), 1..64),
        at in any::<Index>(),
        bad in prop::sample::select(vec!["=", "==", "+", "/", " ", "\n", "\t", "\r\n", "%3D", "."]),
    ) {
        let s = b64::encode(&bytes);
        let i = at.index(s.len() + 1);
        let mut t = s.clone();
        t.insert_str(i, bad);
        prop_assert_eq!(b64::decode(&t), Err(JoseError::Base64), "{} accepted", t);
        // And the standard alphabet never aliases the URL-safe one.
        let std_alias: String = s.chars().map(|c| match c { '-' => '+', '_' => '/', c => c }).collect();
        if std_alias != s {
            prop_assert_eq!(b64::decode(&std_alias), Err(JoseError::Base64));
        }
    }
}

// ------------------------------------------------------------------------------------------
// §4.2 item 8: CIBA polling interval (B3)
// ------------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn b3_slow_down_exactly_when_too_soon_and_the_interval_never_shrinks(
        gaps in prop::collection::vec(prop_oneof![3 => 0i64..=6, 2 => 5i64..=40], 1..24),
    ) {
        let store = MemoryStore::new();
        let f = Fixture::new(&store);
        let svc = f.ciba_client();
        let id = f.pending_auth_req_id(&svc);
        // The model: CIBA §7.3 interval between polls, +5 s per slow_down (THREATS B3).
        let mut interval: u32 = 5;
        let mut last: Option<i64> = None;
        let mut t = NOW.0;
        let mut pending_at: Vec<i64> = Vec::new();
        for gap in gaps {
            t += gap;
            if t >= NOW.0 + 300 {
                break; // the request expires (B4), another property
            }
            let too_soon = last.is_some_and(|l| t - l < i64::from(interval));
            if too_soon {
                interval = (interval + 5).min(600);
            }
            let (r, enforced) = f.poll(&svc, &id, UnixTime(t));
            let want = if too_soon { GrantError::SlowDown } else { GrantError::AuthorizationPending };
            prop_assert_eq!(r, Err(want), "poll at +{}", t - NOW.0);
            prop_assert_eq!(enforced, Some(interval), "enforced interval after +{}", t - NOW.0);
            if !too_soon {
                pending_at.push(t);
            }
            last = Some(t);
        }
        // Derived: answered polls are at least the initial interval apart.
        for w in pending_at.windows(2) {
            prop_assert!(w[1] - w[0] >= 5, "{:?}", pending_at);
        }
    }
}

// ------------------------------------------------------------------------------------------
// §4.2 item 7: revocation coverage (V5, I6, R4)
// ------------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn v5_revoking_any_refresh_token_ends_the_whole_family_within_the_cache_ttl(
        app_i in 0usize..3,
        rotations in 0usize..4,
        revoked_i in any::<Index>(),
        before in 0i64..30,
        ttl in 1u64..=30,
        probes in prop::collection::vec(0i64..=40, 1..6),
    ) {
        let app_id = ["app", "app-jwt", "app-wrapper"][app_i];
        let store = MemoryStore::new();
        let f = Fixture::new(&store);
        let app = f.public(app_id);
        let rs = f.rs_caller();
        let config = || CacheConfig { positive_ttl: Duration::from_secs(ttl), ..CacheConfig::default() };
        // Node A revokes; node B missed the invalidation message (I6).
        let (node_a, node_b) = (IntrospectionCache::new(config()).unwrap(), IntrospectionCache::new(config()).unwrap());

        let first = f.tokens_for(&app, "offline_access patient/Observation.rs");
        let mut access = vec![first.access_token.expose().to_owned()];
        let mut refresh = vec![first.refresh_token.as_ref().unwrap().expose().to_owned()];
        for _ in 0..rotations {
            let r = grant::refresh_token(&app, Some(refresh.last().unwrap()), None, &f.grant_context()).unwrap();
            access.push(r.access_token.expose().to_owned());
            refresh.push(r.refresh_token.unwrap().expose().to_owned());
        }
        let t0 = NOW.0 + before;
        let active = |node: &IntrospectionCache, token: &str, t: i64| {
            heartgate_core::lifecycle::introspect(&rs, Some(token), &f.lifecycle(UnixTime(t), node))
                .unwrap()
                .is_active()
        };
        for at in &access {
            prop_assert!(active(&node_a, at, t0) && active(&node_b, at, t0), "warm-up");
        }

        let victim = &refresh[revoked_i.index(refresh.len())];
        let revoked = heartgate_core::lifecycle::revoke(&app, Some(victim), &f.lifecycle(UnixTime(t0), &node_a)).unwrap();
        prop_assert!(matches!(revoked, heartgate_core::lifecycle::Revoked::Family { .. }), "{:?}", revoked);

        let mut probes = probes;
        probes.sort_unstable();
        for o in probes {
            let t = t0 + o;
            for (i, at) in access.iter().enumerate() {
                prop_assert!(!active(&node_a, at, t), "{}: access token {} active on the revoking node at +{}", app_id, i, o);
                if o >= ttl as i64 {
                    prop_assert!(!active(&node_b, at, t), "{}: access token {} active past the cache TTL at +{}", app_id, i, o);
                }
            }
            for (i, rt) in refresh.iter().enumerate() {
                prop_assert!(!active(&node_a, rt, t), "refresh token {} active at +{}", i, o);
                let r = grant::refresh_token(&app, Some(rt), None, &f.grant_context_at(UnixTime(t)));
                prop_assert!(matches!(r, Err(GrantError::InvalidGrant(_))), "refresh token {} still refreshes: {:?}", i, r.map(|_| ()));
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// §4.2 item 9: redirect URI matching (A9–A11, P10)
// ------------------------------------------------------------------------------------------

const REGISTERED: [&str; 5] = [
    "https://app.example/cb",
    "https://app.example/cb?tenant=1",
    "http://127.0.0.1/cb",
    "http://[::1]:8080/native/cb",
    "com.example.app:/oauth2redirect",
];

#[derive(Debug, Clone)]
enum UriMutation {
    FlipCase(Index),
    Insert(Index, &'static str),
    Delete(Index),
    Port(u32),
}

fn uri_mutation() -> impl Strategy<Value = UriMutation> {
    prop_oneof![
        2 => any::<Index>().prop_map(UriMutation::FlipCase),
        4 => (any::<Index>(), prop::sample::select(vec![
            "/.", "/..", "/./", "%2e", "%2E", "/", "@evil.example", "user@", ":8080", ":0",
            ":65536", ":", "#", "#f", "?", "&x=1", "\t", "\n", "%63", ".", "..;", "\\", " ",
            "127.0.0.1", ".evil.example", "%00",
        ])).prop_map(|(i, t)| UriMutation::Insert(i, t)),
        1 => any::<Index>().prop_map(UriMutation::Delete),
        3 => (0u32..70_000).prop_map(UriMutation::Port),
    ]
}

/// Split `http://<loopback literal>[:port]<rest>` into (host, port digits, rest).
fn loopback_parts(u: &str) -> Option<(&str, &str, &str)> {
    let after = u.strip_prefix("http://")?;
    let host = ["127.0.0.1", "[::1]"]
        .into_iter()
        .find(|h| after.starts_with(h))?;
    let after = &after[host.len()..];
    let (port, rest) = match after.strip_prefix(':') {
        Some(p) => {
            let n = p.bytes().take_while(u8::is_ascii_digit).count();
            (&p[..n], &p[n..])
        }
        None => ("", after),
    };
    Some((host, port, rest))
}

/// RFC 8252 §7.3, written independently: same loopback literal, same everything else byte
/// for byte, any valid port (digits, at most 65535; empty means the default port).
fn loopback_rule(registered: &str, presented: &str) -> bool {
    match (loopback_parts(registered), loopback_parts(presented)) {
        (Some((hr, _, rr)), Some((hp, pp, rp))) => {
            hr == hp
                && rr == rp
                && (rp.is_empty() || rp.starts_with('/') || rp.starts_with('?'))
                && (pp.is_empty() || pp.parse::<u32>().is_ok_and(|p| p <= 65_535))
        }
        _ => false,
    }
}

fn mutate(u: &str, m: &UriMutation) -> String {
    let mut b: Vec<char> = u.chars().collect();
    match m {
        UriMutation::FlipCase(i) => {
            let i = i.index(b.len());
            b[i] = if b[i].is_ascii_uppercase() {
                b[i].to_ascii_lowercase()
            } else {
                b[i].to_ascii_uppercase()
            };
        }
        UriMutation::Insert(i, t) => {
            let i = i.index(b.len() + 1);
            b.splice(i..i, t.chars());
        }
        UriMutation::Delete(i) => {
            let i = i.index(b.len());
            b.remove(i);
        }
        UriMutation::Port(p) => {
            let s: String = b.iter().collect();
            if let Some((host, _, rest)) = loopback_parts(&s) {
                return format!("http://{host}:{p}{rest}");
            }
        }
    }
    b.into_iter().collect()
}

proptest! {
    #[test]
    fn a9_a11_p10_mutated_redirect_uris_match_only_byte_equal_or_loopback_port(
        which in 0usize..REGISTERED.len(),
        mutations in prop::collection::vec(uri_mutation(), 1..4),
    ) {
        use heartgate_core::authorize::redirect_uri::match_registered;
        let registered: Vec<String> = REGISTERED.iter().map(|s| (*s).to_owned()).collect();
        let presented = mutations.iter().fold(REGISTERED[which].to_owned(), |u, m| mutate(&u, m));
        let expected = REGISTERED.iter().find(|r| **r == presented || loopback_rule(r, &presented));
        let got = match_registered(&registered, &presented).ok();
        prop_assert_eq!(got, expected.copied(), "presented {:?}", presented);
    }
}
