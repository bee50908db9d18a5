//! RFC 7662 introspection and RFC 7009 revocation as the authorization server answers
//! them, for JWT, opaque and wrapper access tokens and refresh tokens: who may see what
//! (I1–I5, I8, I9), what revocation takes back (V1, V2, V4, V5) and the cache following
//! every revocation.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

use common::{client, Dir, FlakyStore};
use heartgate_core::audit::{EventKind, MemoryAuditSink, Outcome};
use heartgate_core::client::*;
use heartgate_core::clock::UnixTime;
use heartgate_core::introspect::{CacheConfig, IntrospectionCache, IntrospectionResponse};
use heartgate_core::jose::{
    sign_jwt, verify_jwt, Algorithm, AlgorithmSet, AudienceRule, KeyRing, SigningKey, TypRule,
    Validation,
};
use heartgate_core::lifecycle::*;
use heartgate_core::store::{Namespace, Store};
use heartgate_core::token::*;
use serde_json::{json, Map};

const ISS: &str = "https://as.example";
const RS: &str = "https://fhir.example";
const NOW: UnixTime = UnixTime(1_700_000_000);

struct F {
    dir: Dir,
    store: FlakyStore,
    issuer: TokenIssuer,
    cache: IntrospectionCache,
    keys: HashMap<&'static str, SigningKey>,
}

fn confidential(id: &str, key: &SigningKey, resources: &[&str]) -> Arc<ValidatedClient> {
    client(json!({"client_id": id, "profile": "smart-backend",
        "token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"],
        "jwks": {"keys": [key.verifying_key().to_jwk()]}, "resources": resources}))
}

fn fixture() -> F {
    let mut m = HashMap::new();
    let mut keys = HashMap::new();
    for (id, resources) in [
        ("owner", &[][..]),
        ("rs", &[RS][..]),
        ("rs2", &["https://billing.example"][..]),
        ("es384", &[][..]),
    ] {
        let k = SigningKey::generate(Algorithm::ES256).unwrap();
        m.insert(id.to_owned(), confidential(id, &k, resources));
        keys.insert(id, k);
    }
    let k = SigningKey::generate(Algorithm::ES256).unwrap();
    m.insert(
        "signed-rs".to_owned(),
        client(json!({"client_id": "signed-rs", "profile": "smart-backend",
            "token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"],
            "jwks": {"keys": [k.verifying_key().to_jwk()]}, "resources": [RS],
            "introspection_signed_response_alg": "ES256"})),
    );
    keys.insert("signed-rs", k);
    let k = SigningKey::generate(Algorithm::ES256).unwrap();
    m.insert(
        "ps-rs".to_owned(),
        client(json!({"client_id": "ps-rs", "profile": "smart-backend",
            "token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"],
            "jwks": {"keys": [k.verifying_key().to_jwk()]}, "resources": [RS],
            "introspection_signed_response_alg": "PS256"})),
    );
    keys.insert("ps-rs", k);
    for id in ["app", "app2"] {
        m.insert(
            id.to_owned(),
            client(json!({"client_id": id, "profile": "smart",
                "redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"]})),
        );
    }
    F {
        dir: Dir(m),
        store: FlakyStore::default(),
        issuer: TokenIssuer::new(
            ISS,
            Arc::new(KeyRing::new(
                SigningKey::generate(Algorithm::ES256).unwrap(),
            )),
        ),
        cache: IntrospectionCache::new(CacheConfig::default()).unwrap(),
        keys,
    }
}

impl F {
    fn endpoints() -> Endpoints {
        Endpoints {
            issuer: ISS.into(),
            token: format!("{ISS}/token"),
            par: format!("{ISS}/par"),
        }
    }

    /// Authenticate `id`: public clients by id, confidential ones with a fresh assertion.
    fn caller(&self, id: &str) -> AuthenticatedClient {
        let assertion;
        let creds = match self.keys.get(id) {
            None => ClientCredentials {
                client_id: Some(id),
                ..Default::default()
            },
            Some(k) => {
                let jti = format!("{id}-{}", rand_id());
                assertion = sign_jwt(
                    k,
                    None,
                    json!({"iss": id, "sub": id, "aud": format!("{ISS}/token"),
                        "exp": NOW.0 + 60, "jti": jti})
                    .as_object()
                    .unwrap(),
                )
                .unwrap();
                ClientCredentials {
                    client_assertion_type: Some(JWT_BEARER_ASSERTION_TYPE),
                    client_assertion: Some(&assertion),
                    ..Default::default()
                }
            }
        };
        authenticate(
            &creds,
            &self.dir,
            &Self::endpoints(),
            &self.store,
            NOW,
            &heartgate_core::audit::NoAudit,
        )
        .unwrap()
    }

    fn ctx(&self) -> LifecycleContext<'_> {
        let mut c = LifecycleContext::new(&self.issuer, &self.store, NOW);
        c.cache = Some(&self.cache);
        c
    }

    /// Issue and store an access token of `format` for `client_id`, meant for `RS`.
    fn access(&self, client_id: &str, format: TokenFormat, family: Option<&str>) -> String {
        let mut g = grant(format);
        g.client_id = client_id.into();
        g.cnf = None;
        g.pairwise_sub = None;
        g.family_id = family.map(str::to_owned);
        self.issue(&g).token.expose().to_owned()
    }

    /// Issue `g` and store its record, as the grants do.
    fn issue(&self, g: &AccessTokenGrant) -> IssuedAccessToken {
        let t = self.issuer.issue_access_token(g, NOW).unwrap();
        self.store
            .put(
                Namespace::AccessToken,
                &t.record_key.store_key(),
                &t.record.to_bytes().unwrap(),
                t.expires_at,
            )
            .unwrap();
        t
    }

    fn record(&self, t: &IssuedAccessToken) -> TokenRecord {
        let b = self
            .store
            .get(Namespace::AccessToken, &t.record_key.store_key(), NOW)
            .unwrap()
            .unwrap();
        TokenRecord::from_bytes(&b).unwrap()
    }

    fn at(&self, caller: &str, token: &str, now: UnixTime) -> Arc<IntrospectionResponse> {
        let mut ctx = self.ctx();
        ctx.now = now;
        introspect(&self.caller(caller), Some(token), &ctx).unwrap()
    }

    fn refresh(&self, client_id: &str, family: &str) -> String {
        let r = self
            .issuer
            .issue_refresh_token(
                &RefreshTokenGrant {
                    client_id: client_id.into(),
                    sub: "user-1".into(),
                    scope: "offline_access patient/Observation.rs".into(),
                    aud: vec![RS.into()],
                    cnf: None,
                    lifetime: 3600,
                    family_id: Some(family.into()),
                    generation: 0,
                    auth_time: Some(NOW),
                    acr: None,
                    context: Map::new(),
                },
                NOW,
            )
            .unwrap();
        self.store
            .put(
                Namespace::RefreshToken,
                &r.hash.0,
                &r.record.to_bytes().unwrap(),
                UnixTime(r.record.exp),
            )
            .unwrap();
        r.token.expose().to_owned()
    }

    fn introspect(&self, caller: &str, token: &str) -> Arc<IntrospectionResponse> {
        introspect(&self.caller(caller), Some(token), &self.ctx()).unwrap()
    }

    fn active(&self, caller: &str, token: &str) -> bool {
        self.introspect(caller, token).is_active()
    }
}

fn cnf() -> heartgate_core::mtls::Confirmation {
    heartgate_core::mtls::Confirmation {
        x5t_s256: "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2".into(),
    }
}

/// A SMART grant for `owner`, certificate-bound, with a pairwise pseudonym for wrappers.
fn grant(format: TokenFormat) -> AccessTokenGrant {
    let mut context = Map::new();
    context.insert("patient".into(), json!("123"));
    AccessTokenGrant {
        client_id: "owner".into(),
        sub: "user-1".into(),
        pairwise_sub: Some("pw-1".into()),
        scope: "patient/Observation.rs".into(),
        aud: vec![RS.into()],
        cnf: Some(cnf()),
        lifetime: 600,
        format,
        auth_time: Some(NOW),
        acr: None,
        family_id: Some("family-A".into()),
        context,
    }
}

fn rand_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

const FORMATS: [TokenFormat; 3] = [TokenFormat::Jwt, TokenFormat::Opaque, TokenFormat::Wrapper];

#[test]
fn every_format_introspects_with_its_full_claims_for_its_client_and_its_resource_server() {
    let f = fixture();
    for format in FORMATS {
        let t = f.access("owner", format, None);
        for caller in ["owner", "rs"] {
            let r = f.introspect(caller, &t);
            assert!(r.is_active(), "{format:?} for {caller}");
            assert_eq!(r.client_id(), Some("owner"));
            assert_eq!(r.sub(), Some("user-1"));
            assert_eq!(r.scope(), Some("patient/Observation.rs"));
            assert_eq!(r.iss(), Some(ISS));
            assert_eq!(r.exp(), Some(UnixTime(NOW.0 + 600)));
            assert_eq!(
                r.extension("patient"),
                Some(&json!("123")),
                "SMART context through introspection"
            );
        }
    }
}

#[test]
fn i2_a_resource_server_not_in_the_audience_learns_only_active_false() {
    let f = fixture();
    for format in FORMATS {
        let t = f.access("owner", format, None);
        assert!(f.active("rs", &t), "warm the cache first");
        let r = f.introspect("rs2", &t);
        assert_eq!(r.to_json_string(), r#"{"active":false}"#, "{format:?}");
    }
}

#[test]
fn i3_a_public_client_sees_its_own_tokens_only() {
    let f = fixture();
    let own = f.access("app", TokenFormat::Opaque, None);
    let other = f.access("app2", TokenFormat::Opaque, None);
    assert!(f.active("app", &own));
    assert_eq!(
        f.introspect("app", &other).to_json_string(),
        r#"{"active":false}"#
    );
}

#[test]
fn i4_garbage_empty_oversized_and_missing_tokens() {
    let f = fixture();
    let c = f.caller("rs");
    for t in [
        "",
        "garbage",
        "hgat_short",
        "hgrt_short",
        "a.b.c",
        &"x".repeat(8 * 1024 + 1),
        &format!("hgat_{}", "A".repeat(43)),
    ] {
        let r = introspect(&c, Some(t), &f.ctx()).unwrap();
        assert_eq!(r.to_json_string(), r#"{"active":false}"#);
    }
    assert_eq!(
        introspect(&c, None, &f.ctx()).unwrap_err(),
        IntrospectionError::InvalidRequest
    );
    assert_eq!(
        revoke(&c, None, &f.ctx()).unwrap_err(),
        RevocationError::InvalidRequest
    );
}

#[test]
fn i5_refresh_tokens_active_for_their_client_inactive_once_expired_revoked_or_for_others() {
    let f = fixture();
    let rt = f.refresh("app", "fam-1");
    let r = f.introspect("app", &rt);
    assert!(r.is_active());
    assert_eq!(r.token_type(), Some("refresh_token"));
    assert!(!f.active("app2", &rt));
    assert!(
        !f.active("rs", &rt),
        "refresh tokens are not for resource servers"
    );
    let late = LifecycleContext::new(&f.issuer, &f.store, UnixTime(NOW.0 + 3600));
    assert!(!introspect(&f.caller("app"), Some(&rt), &late)
        .unwrap()
        .is_active());
    revoke(&f.caller("app"), Some(&rt), &f.ctx()).unwrap();
    assert!(!f.active("app", &rt));
}

#[test]
fn i8_rfc9701_jwt_response_is_signed_for_the_caller_with_its_typ() {
    let f = fixture();
    let t = f.access("owner", TokenFormat::Wrapper, None);
    let caller = f.caller("signed-rs");
    let ctx = f.ctx();
    let r = introspect(&caller, Some(&t), &ctx).unwrap();
    let jwt = introspection_jwt(&caller, &r, &ctx).unwrap();
    let v = Validation::new(
        AlgorithmSet::ALL,
        TypRule::Required("token-introspection+jwt"),
        AudienceRule::ExactString("signed-rs".into()),
    )
    .issuer(ISS);
    // RFC 9701 responses have no `exp`; accept that for this check only.
    let jws = heartgate_core::jose::parse_compact(&jwt, 64 * 1024).unwrap();
    assert_eq!(jws.header().typ(), Some("token-introspection+jwt"));
    let verified = jws
        .verify(&*f.issuer.keys().snapshot(), AlgorithmSet::ALL)
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(verified.payload()).unwrap();
    assert_eq!(claims["aud"], "signed-rs");
    assert_eq!(claims["iss"], ISS);
    assert_eq!(claims["token_introspection"]["active"], true);
    assert_eq!(claims["token_introspection"]["client_id"], "owner");
    // The usual JWT validation refuses it for want of `exp`, not for the signature.
    assert!(matches!(
        verify_jwt(&jwt, &*f.issuer.keys().snapshot(), &v, NOW),
        Err(heartgate_core::jose::JoseError::MissingClaim("exp"))
    ));
    // Registered for an algorithm the AS does not sign with: a configuration error.
    let ps = f.caller("ps-rs");
    assert_eq!(
        introspection_jwt(&ps, &r, &ctx).unwrap_err(),
        IntrospectionError::SigningAlgorithm
    );
    f.issuer
        .keys()
        .add_signer(SigningKey::generate(Algorithm::PS256).unwrap())
        .unwrap();
    let jwt = introspection_jwt(&ps, &r, &ctx).unwrap();
    let jws = heartgate_core::jose::parse_compact(&jwt, 64 * 1024).unwrap();
    assert_eq!(jws.header().alg(), Algorithm::PS256);
}

#[test]
fn i9_near_duplicate_tokens_never_hit_a_cached_answer() {
    let f = fixture();
    for format in FORMATS {
        let t = f.access("owner", format, None);
        assert!(f.active("rs", &t));
        let mut near = t.clone();
        let last = near.pop().unwrap();
        near.push(if last == 'A' { 'B' } else { 'A' });
        assert!(!f.active("rs", &near), "{format:?}");
        assert!(!f.active("rs", &t[..t.len() - 1]), "{format:?} prefix");
    }
}

#[test]
fn a_jwt_signed_by_another_key_is_unknown_even_with_a_stored_jti() {
    let f = fixture();
    let t = f.access("owner", TokenFormat::Jwt, None);
    let foreign = TokenIssuer::new(
        ISS,
        Arc::new(KeyRing::new(
            SigningKey::generate(Algorithm::ES256).unwrap(),
        )),
    );
    // Same claims, other key: a forger who knows a jti gets nothing.
    let payload = heartgate_core::jose::b64::decode(t.split('.').nth(1).unwrap()).unwrap();
    let forged = heartgate_core::jose::sign_compact(
        foreign.keys().snapshot().active(),
        Some("at+jwt"),
        &payload,
    )
    .unwrap();
    assert!(!f.active("owner", &forged));
    assert!(f.active("owner", &t));
}

#[test]
fn revoking_an_access_token_takes_it_back_in_every_format_and_clears_the_cache() {
    let f = fixture();
    for format in FORMATS {
        let t = f.access("owner", format, None);
        assert!(f.active("rs", &t), "cached active");
        let done = revoke(&f.caller("owner"), Some(&t), &f.ctx()).unwrap();
        assert!(matches!(done, Revoked::AccessToken { .. }), "{format:?}");
        assert!(!f.active("rs", &t), "{format:?} inactive at once");
        assert!(!f.active("owner", &t));
        // Revoking again: nothing left, still fine.
        assert_eq!(
            revoke(&f.caller("owner"), Some(&t), &f.ctx()).unwrap(),
            Revoked::Nothing
        );
    }
}

#[test]
fn v1_another_clients_token_refused_for_confidential_ignored_for_public() {
    let f = fixture();
    let t = f.access("owner", TokenFormat::Opaque, None);
    assert_eq!(
        revoke(&f.caller("rs"), Some(&t), &f.ctx()).unwrap_err(),
        RevocationError::UnauthorizedClient
    );
    assert_eq!(
        revoke(&f.caller("app"), Some(&t), &f.ctx()).unwrap(),
        Revoked::Nothing
    );
    assert!(f.active("owner", &t), "the token stays valid");
    let rt = f.refresh("app", "fam-v1");
    assert_eq!(
        revoke(&f.caller("app2"), Some(&rt), &f.ctx()).unwrap(),
        Revoked::Nothing
    );
    assert!(f.active("app", &rt));
}

#[test]
fn v2_unknown_or_garbage_tokens_revoke_nothing() {
    let f = fixture();
    for t in ["", "garbage", &format!("hgrt_{}", "A".repeat(43)), "a.b.c"] {
        assert_eq!(
            revoke(&f.caller("owner"), Some(t), &f.ctx()).unwrap(),
            Revoked::Nothing
        );
    }
}

#[test]
fn v4_store_failure_is_503_never_a_claim() {
    let f = fixture();
    let t = f.access("owner", TokenFormat::Opaque, None);
    let owner = f.caller("owner");
    let ctx = LifecycleContext::new(&f.issuer, &f.store, NOW);
    f.store.fail_writes.store(true, SeqCst);
    assert_eq!(
        revoke(&owner, Some(&t), &ctx).unwrap_err(),
        RevocationError::Unavailable
    );
    f.store.fail_writes.store(false, SeqCst);
    assert!(introspect(&owner, Some(&t), &ctx).unwrap().is_active());
    f.store.fail_reads.store(true, SeqCst);
    assert_eq!(
        introspect(&owner, Some(&t), &ctx).unwrap_err(),
        IntrospectionError::Unavailable
    );
    assert_eq!(
        revoke(&owner, Some(&t), &ctx).unwrap_err(),
        RevocationError::Unavailable
    );
}

#[test]
fn v5_revoking_a_refresh_token_takes_back_its_family_and_their_cached_answers() {
    let f = fixture();
    let rt = f.refresh("app", "fam-5");
    let tokens: Vec<String> = FORMATS
        .iter()
        .map(|fmt| f.access("app", *fmt, Some("fam-5")))
        .collect();
    let unrelated = f.access("app", TokenFormat::Opaque, Some("fam-other"));
    for t in &tokens {
        assert!(f.active("rs", t), "cached active");
    }
    let done = revoke(&f.caller("app"), Some(&rt), &f.ctx()).unwrap();
    assert_eq!(
        done,
        Revoked::Family {
            family: "fam-5".into()
        }
    );
    for t in &tokens {
        assert!(!f.active("rs", t));
        assert!(!f.active("app", t));
    }
    assert!(!f.active("app", &rt));
    assert!(f.active("rs", &unrelated), "other families untouched");
}

#[test]
fn a_revocation_published_by_another_node_clears_this_nodes_cache() {
    let f = fixture();
    let t = f.access("owner", TokenFormat::Jwt, None);
    let other_node = IntrospectionCache::new(CacheConfig::default()).unwrap();
    let mut there = f.ctx();
    there.cache = Some(&other_node);
    assert!(introspect(&f.caller("rs"), Some(&t), &there)
        .unwrap()
        .is_active());
    // This node revokes; the other applies the published value.
    let done = revoke(&f.caller("owner"), Some(&t), &f.ctx()).unwrap();
    done.invalidate(&other_node);
    assert!(!introspect(&f.caller("rs"), Some(&t), &there)
        .unwrap()
        .is_active());
}

#[test]
fn introspection_and_revocation_are_audited_without_tokens() {
    let f = fixture();
    let sink = MemoryAuditSink::new();
    let mut ctx = f.ctx();
    ctx.audit = &sink;
    let t = f.access("owner", TokenFormat::Opaque, None);
    let rs = f.caller("rs");
    introspect(&rs, Some(&t), &ctx).unwrap();
    introspect(&rs, Some("garbage"), &ctx).unwrap();
    revoke(&rs, Some(&t), &ctx).unwrap_err();
    revoke(&f.caller("owner"), Some(&t), &ctx).unwrap();
    let got: Vec<_> = sink
        .events()
        .iter()
        .map(|e| (e.kind, e.outcome, e.reason, e.client_id.clone().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                EventKind::Introspection,
                Outcome::Success,
                "active",
                "rs".into()
            ),
            (
                EventKind::Introspection,
                Outcome::Success,
                "inactive",
                "rs".into()
            ),
            (
                EventKind::Revocation,
                Outcome::Failure,
                "unauthorized_client",
                "rs".into()
            ),
            (
                EventKind::Revocation,
                Outcome::Success,
                "access_token",
                "owner".into()
            ),
        ]
    );
    let all = serde_json::to_string(&sink.events()).unwrap();
    assert!(!all.contains(&t) && !all.contains("user-1") && !all.contains("123"));
}

#[test]
fn m3_m4_cached_and_uncached_answers_are_identical_including_cnf() {
    let f = fixture();
    for format in FORMATS {
        let t = f.issue(&grant(format));
        let first = f.at("rs", t.token.expose(), NOW);
        assert_eq!(first.cnf(), Some(&cnf()), "{format:?}");
        assert_eq!(
            first.sub(),
            Some("user-1"),
            "{format:?}: the record's subject, not the wrapper's pseudonym"
        );
        let hits = f.cache.stats().hits;
        let cached = f.at("rs", t.token.expose(), UnixTime(NOW.0 + 1));
        assert_eq!(f.cache.stats().hits, hits + 1, "served from the cache");
        assert_eq!(first.to_json_string(), cached.to_json_string());
        let uncached = introspect(
            &f.caller("rs"),
            Some(t.token.expose()),
            &LifecycleContext::new(&f.issuer, &f.store, NOW),
        )
        .unwrap();
        assert_eq!(uncached.to_json_string(), first.to_json_string());
    }
}

#[test]
fn i6_a_node_that_missed_the_revocation_stops_answering_active_after_the_cache_ttl() {
    // S5, I6: no invalidation reached this cache; the positive TTL (30 s) bounds it.
    let f = fixture();
    let t = f.issue(&grant(TokenFormat::Wrapper));
    assert!(f.at("rs", t.token.expose(), NOW).is_active());
    f.store
        .delete(Namespace::AccessToken, &t.record_key.store_key())
        .unwrap();
    assert!(
        f.at("rs", t.token.expose(), UnixTime(NOW.0 + 29))
            .is_active(),
        "served from cache"
    );
    assert!(
        !f.at("rs", t.token.expose(), UnixTime(NOW.0 + 30))
            .is_active(),
        "TTL bound"
    );
}

#[test]
fn j30_wrapper_whose_reference_record_disagrees_or_is_missing_is_inactive() {
    let f = fixture();
    let t = f.issue(&grant(TokenFormat::Wrapper));
    let mut r = f.record(&t);
    r.cnf = None;
    f.store
        .put(
            Namespace::AccessToken,
            &t.record_key.store_key(),
            &r.to_bytes().unwrap(),
            t.expires_at,
        )
        .unwrap();
    assert!(!f.active("owner", t.token.expose()));
    let t = f.issue(&grant(TokenFormat::Wrapper));
    f.store
        .delete(Namespace::AccessToken, &t.record_key.store_key())
        .unwrap();
    assert!(!f.active("owner", t.token.expose()));
}

#[test]
fn s12_a_corrupt_record_reads_as_unknown() {
    let f = fixture();
    let t = f.issue(&grant(TokenFormat::Opaque));
    f.store
        .put(
            Namespace::AccessToken,
            &t.record_key.store_key(),
            b"\x09garbage",
            t.expires_at,
        )
        .unwrap();
    assert!(!f.active("owner", t.token.expose()));
}

#[test]
fn i5_expired_tokens_introspect_inactive_with_nothing_else() {
    let f = fixture();
    for format in FORMATS {
        let t = f.issue(&grant(format));
        let r = f.at("owner", t.token.expose(), t.expires_at);
        assert_eq!(r.to_json_string(), r#"{"active":false}"#, "{format:?}");
    }
}

#[test]
fn rfc7592_tokens_of_a_deleted_client_are_inactive_and_later_ones_unaffected() {
    let f = fixture();
    let tokens: Vec<String> = FORMATS
        .iter()
        .map(|fmt| f.access("owner", *fmt, None))
        .collect();
    let rt = f.refresh("owner", "fam-del");
    let other = f.access("app", TokenFormat::Opaque, None);
    for t in &tokens {
        assert!(f.active("rs", t));
    }
    revoke_client_tokens(&f.store, "owner", NOW).unwrap();
    let later = LifecycleContext::new(&f.issuer, &f.store, UnixTime(NOW.0 + 1));
    for t in tokens.iter().chain([&rt]) {
        let r = introspect(&f.caller("rs"), Some(t), &later).unwrap();
        assert!(!r.is_active());
    }
    assert!(f.active("app", &other), "other clients untouched");
    // A token issued after the marker (a client id is never reused, but the rule is by
    // time) is not affected.
    let t = f
        .issuer
        .issue_access_token(&grant(TokenFormat::Opaque), UnixTime(NOW.0 + 5))
        .unwrap();
    f.store
        .put(
            Namespace::AccessToken,
            &t.record_key.store_key(),
            &t.record.to_bytes().unwrap(),
            t.expires_at,
        )
        .unwrap();
    let after = LifecycleContext::new(&f.issuer, &f.store, UnixTime(NOW.0 + 6));
    assert!(introspect(&f.caller("rs"), Some(t.token.expose()), &after)
        .unwrap()
        .is_active());
}

#[test]
fn inspect_sees_access_tokens_only_and_without_a_caller() {
    let f = fixture();
    let t = f.access("owner", TokenFormat::Wrapper, None);
    let r = inspect(&t, &f.ctx()).unwrap();
    assert!(r.is_active());
    assert_eq!(r.sub(), Some("user-1"));
    let rt = f.refresh("owner", "fam-i");
    assert!(!inspect(&rt, &f.ctx()).unwrap().is_active());
    revoke(&f.caller("owner"), Some(&t), &f.ctx()).unwrap();
    assert!(!inspect(&t, &f.ctx()).unwrap().is_active());
}

/// README "Wrapper token format": a resource server introspects the wrapper's bare `ref`
/// for the full claim set; revoking the reference ends every wrapper around it, even
/// one whose active answer was cached (THREATS J31).
#[test]
fn a_wrappers_bare_reference_introspects_to_its_record_and_revoking_it_ends_the_wrapper() {
    let f = fixture();
    let t = f.issue(&grant(TokenFormat::Wrapper));
    let wrapper = t.token.expose();
    let payload = wrapper.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&heartgate_core::jose::b64::decode(payload).unwrap()).unwrap();
    let reference = claims["ref"].as_str().unwrap().to_owned();
    assert!(reference.starts_with("hgref_"));
    let by_ref = f.introspect("rs", &reference);
    assert!(by_ref.is_active());
    assert_eq!(
        by_ref.sub(),
        Some("user-1"),
        "the full claims, not the wrapper's"
    );
    assert_eq!(by_ref.cnf(), Some(&cnf()));
    // A reference-shaped string that names nothing, or an opaque token's secret under the
    // reference prefix: unknown.
    assert!(!f.active("rs", &format!("hgref_{}", "A".repeat(43))));
    let opaque = f.access("owner", TokenFormat::Opaque, None);
    assert!(!f.active("owner", &opaque.replacen("hgat_", "hgref_", 1)));

    assert!(
        f.active("rs", wrapper),
        "the wrapper is active (and cached)"
    );
    let done = revoke(&f.caller("owner"), Some(&reference), &f.ctx()).unwrap();
    assert!(matches!(done, Revoked::AccessToken { .. }), "{done:?}");
    assert!(!f.active("rs", &reference));
    assert!(
        !f.active("rs", wrapper),
        "every wrapper around it is inactive at once"
    );
}

/// THREATS S8: with the audit trail unavailable, reads of existing state go on
/// (introspection answers), while a revocation is answered 503 — it was applied, but
/// the client is told to retry (RFC 7009 revocation is idempotent) rather than being
/// acknowledged without a record.
#[test]
fn s8_without_an_audit_trail_introspection_goes_on_and_revocation_is_unavailable() {
    let f = fixture();
    let sink = MemoryAuditSink::new();
    let mut ctx = f.ctx();
    ctx.audit = &sink;
    let t = f.access("owner", TokenFormat::Opaque, None);
    sink.set_unavailable(true);
    assert!(introspect(&f.caller("rs"), Some(&t), &ctx).is_ok());
    assert_eq!(
        revoke(&f.caller("rs"), Some(&t), &ctx).unwrap_err(),
        RevocationError::UnauthorizedClient,
        "a refusal stays a refusal"
    );
    assert_eq!(
        revoke(&f.caller("owner"), Some(&t), &ctx).unwrap_err(),
        RevocationError::Unavailable
    );
    sink.set_unavailable(false);
    revoke(&f.caller("owner"), Some(&t), &ctx).unwrap();
    assert_eq!(sink.events().len(), 1);
}
