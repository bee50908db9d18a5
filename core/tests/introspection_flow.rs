//! Introspection of all three token formats through the store and the cache, the way an
//! authorization server composes them: wrapper/reference agreement (J30, J31), `cnf`
//! identical cached and uncached (M3, M4), and revocation reaching the cache (V5, I5).
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use std::sync::Arc;

use heartgate_core::clock::UnixTime;
use heartgate_core::introspect::{
    CacheConfig, CacheKey, IntrospectionCache, IntrospectionResponse, InvalidationTags,
};
use heartgate_core::jose::{Algorithm, KeyRing, SigningKey};
use heartgate_core::mtls::Confirmation;
use heartgate_core::store::{MemoryStore, Namespace, Store};
use heartgate_core::token::*;
use serde_json::{json, Map};

const ISS: &str = "https://as.example";
const RS: &str = "https://fhir.example";
const NOW: UnixTime = UnixTime(1_700_000_000);

/// A miniature authorization-server introspection path over core pieces.
struct As {
    issuer: TokenIssuer,
    store: MemoryStore,
    cache: IntrospectionCache,
    revoked: RevokedJtis,
}

fn store_key(k: &RecordKey) -> Vec<u8> {
    k.store_key()
}

impl As {
    fn new() -> Self {
        As {
            issuer: TokenIssuer::new(
                ISS,
                Arc::new(KeyRing::new(
                    SigningKey::generate(Algorithm::ES256).unwrap(),
                )),
            ),
            store: MemoryStore::new(),
            cache: IntrospectionCache::new(CacheConfig::default()).unwrap(),
            revoked: RevokedJtis::new(),
        }
    }

    fn issue(&self, g: &AccessTokenGrant) -> IssuedAccessToken {
        let t = self.issuer.issue_access_token(g, NOW).unwrap();
        self.store
            .put(
                Namespace::AccessToken,
                &store_key(&t.record_key),
                &t.record.to_bytes().unwrap(),
                t.expires_at,
            )
            .unwrap();
        t
    }

    fn record(&self, key: &RecordKey, now: UnixTime) -> Option<TokenRecord> {
        let bytes = self
            .store
            .get(Namespace::AccessToken, &store_key(key), now)
            .unwrap()?;
        TokenRecord::from_bytes(&bytes).ok()
    }

    /// Uncached introspection: validate offline what can be, then consult the record.
    fn lookup(&self, token: &str, now: UnixTime) -> IntrospectionResponse {
        let v = AccessTokenValidator::new(ISS, RS);
        let keys = self.issuer.keys().snapshot();
        let inactive = IntrospectionResponse::inactive();
        match v.validate(token, &*keys, &self.revoked, now) {
            Ok(ValidatedToken::Jwt(c)) => {
                match self.record(
                    &RecordKey::Jti {
                        iss: c.iss.clone(),
                        jti: c.jti.clone(),
                    },
                    now,
                ) {
                    Some(r) => r.introspection_response(now).unwrap(),
                    None => inactive,
                }
            }
            Ok(ValidatedToken::Opaque(h)) => match self.record(&RecordKey::Hash(h), now) {
                Some(r) => r.introspection_response(now).unwrap(),
                None => inactive,
            },
            Ok(ValidatedToken::Wrapper(w)) => {
                match self.record(&RecordKey::Hash(w.reference_hash()), now) {
                    Some(r) if check_wrapper_against_record(&w, &r, now).is_ok() => {
                        r.introspection_response(now).unwrap()
                    }
                    _ => inactive,
                }
            }
            Err(_) => inactive,
        }
    }

    fn introspect(&self, token: &str, now: UnixTime) -> Arc<IntrospectionResponse> {
        let key = CacheKey::for_token(token);
        if let Some(hit) = self.cache.get(&key, now) {
            return hit;
        }
        let generation = self.cache.generation();
        let resp = Arc::new(self.lookup(token, now));
        let mut tags = InvalidationTags::from_response(&resp);
        if let Some(f) = resp.jti().and_then(|_| self.family_of(token, now)) {
            tags = tags.with_family(f);
        }
        let _ = self.cache.insert(key, resp.clone(), tags, generation, now);
        resp
    }

    fn family_of(&self, token: &str, now: UnixTime) -> Option<String> {
        let v = AccessTokenValidator::new(ISS, RS);
        let keys = self.issuer.keys().snapshot();
        let key = match v.validate(token, &*keys, &self.revoked, now).ok()? {
            ValidatedToken::Jwt(c) => RecordKey::Jti {
                iss: c.iss.clone(),
                jti: c.jti.clone(),
            },
            ValidatedToken::Opaque(h) => RecordKey::Hash(h),
            ValidatedToken::Wrapper(w) => RecordKey::Hash(w.reference_hash()),
        };
        self.record(&key, now)?.family_id
    }

    /// Revoke one access token: delete its record, remember (iss, jti), drop cache entries.
    fn revoke(&self, t: &IssuedAccessToken) {
        self.store
            .delete(Namespace::AccessToken, &store_key(&t.record_key))
            .unwrap();
        self.revoked.revoke(ISS, &t.jti, t.expires_at);
        self.cache.invalidate_jti(ISS, &t.jti);
    }
}

fn cnf() -> Confirmation {
    Confirmation {
        x5t_s256: "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2".into(),
    }
}

fn grant(format: TokenFormat) -> AccessTokenGrant {
    let mut context = Map::new();
    context.insert("patient".into(), json!("Patient/123"));
    AccessTokenGrant {
        client_id: "client-1".into(),
        sub: "user-42".into(),
        pairwise_sub: Some("pw-1".into()),
        scope: "patient/Observation.rs".into(),
        aud: vec![RS.into()],
        cnf: Some(cnf()),
        lifetime: 600,
        format,
        auth_time: None,
        acr: None,
        family_id: Some("family-A".into()),
        context,
    }
}

#[test]
fn all_three_formats_introspect_to_the_full_claim_set() {
    let a = As::new();
    for format in [TokenFormat::Jwt, TokenFormat::Opaque, TokenFormat::Wrapper] {
        let t = a.issue(&grant(format));
        let r = a.introspect(t.token.expose(), NOW);
        assert!(r.is_active(), "{format:?}");
        assert_eq!(
            r.sub(),
            Some("user-42"),
            "{format:?}: the record's subject, not the pseudonym"
        );
        assert_eq!(r.client_id(), Some("client-1"));
        assert_eq!(r.extension("patient"), Some(&json!("Patient/123")));
        assert_eq!(r.cnf(), Some(&cnf()));
        assert_eq!(r.exp(), Some(t.expires_at));
    }
}

#[test]
fn m3_m4_cached_and_uncached_responses_are_identical_including_cnf() {
    let a = As::new();
    for format in [TokenFormat::Jwt, TokenFormat::Opaque, TokenFormat::Wrapper] {
        let t = a.issue(&grant(format));
        let first = a.introspect(t.token.expose(), NOW);
        let cached = a.introspect(t.token.expose(), UnixTime(NOW.0 + 1));
        assert!(a.cache.stats().hits >= 1);
        assert_eq!(first.to_json_string(), cached.to_json_string());
        assert_eq!(cached.cnf(), Some(&cnf()));
        assert_eq!(
            cached.to_json_string(),
            a.lookup(t.token.expose(), NOW).to_json_string()
        );
    }
}

#[test]
fn j31_wrapper_is_inactive_once_its_reference_is_revoked_even_after_caching() {
    let a = As::new();
    let t = a.issue(&grant(TokenFormat::Wrapper));
    assert!(a.introspect(t.token.expose(), NOW).is_active());
    a.revoke(&t);
    let r = a.introspect(t.token.expose(), UnixTime(NOW.0 + 1));
    assert!(!r.is_active());
    assert_eq!(r.to_json_string(), r#"{"active":false}"#);
}

#[test]
fn j31_without_invalidation_staleness_is_bounded_by_the_cache_ttl() {
    // A node that missed the revocation message (S5, I6) still stops answering active
    // once the positive TTL (default 30 s) has passed.
    let a = As::new();
    let t = a.issue(&grant(TokenFormat::Wrapper));
    assert!(a.introspect(t.token.expose(), NOW).is_active());
    a.store
        .delete(Namespace::AccessToken, &store_key(&t.record_key))
        .unwrap();
    assert!(
        a.introspect(t.token.expose(), UnixTime(NOW.0 + 29))
            .is_active(),
        "served from cache"
    );
    assert!(
        !a.introspect(t.token.expose(), UnixTime(NOW.0 + 30))
            .is_active(),
        "TTL bound"
    );
}

#[test]
fn j30_wrapper_whose_reference_record_disagrees_is_inactive() {
    let a = As::new();
    let t = a.issue(&grant(TokenFormat::Wrapper));
    let mut r = a.record(&t.record_key, NOW).unwrap();
    r.cnf = None;
    a.store
        .put(
            Namespace::AccessToken,
            &store_key(&t.record_key),
            &r.to_bytes().unwrap(),
            t.expires_at,
        )
        .unwrap();
    assert!(!a.introspect(t.token.expose(), NOW).is_active());
}

#[test]
fn j30_wrapper_with_unknown_reference_is_inactive() {
    let a = As::new();
    let t = a.issue(&grant(TokenFormat::Wrapper));
    a.store
        .delete(Namespace::AccessToken, &store_key(&t.record_key))
        .unwrap();
    assert!(!a.introspect(t.token.expose(), NOW).is_active());
}

#[test]
fn v5_revoking_a_refresh_family_drops_every_cached_token_of_the_family() {
    let a = As::new();
    let tokens: Vec<_> = [TokenFormat::Jwt, TokenFormat::Opaque, TokenFormat::Wrapper]
        .into_iter()
        .map(|f| a.issue(&grant(f)))
        .collect();
    for t in &tokens {
        assert!(a.introspect(t.token.expose(), NOW).is_active());
    }
    // Revoke the family: records go, and the cache drops every entry tagged with it.
    for t in &tokens {
        a.store
            .delete(Namespace::AccessToken, &store_key(&t.record_key))
            .unwrap();
        a.revoked.revoke(ISS, &t.jti, t.expires_at);
    }
    assert_eq!(a.cache.invalidate_family("family-A"), 3);
    for t in &tokens {
        assert!(!a
            .introspect(t.token.expose(), UnixTime(NOW.0 + 1))
            .is_active());
    }
}

#[test]
fn i5_expired_token_introspects_inactive_with_nothing_else() {
    let a = As::new();
    for format in [TokenFormat::Jwt, TokenFormat::Opaque, TokenFormat::Wrapper] {
        let t = a.issue(&grant(format));
        let r = a.introspect(t.token.expose(), UnixTime(t.expires_at.0 + 60));
        assert_eq!(r.to_json_string(), r#"{"active":false}"#, "{format:?}");
        let rec = t.record.introspection_response(t.expires_at).unwrap();
        assert!(!rec.is_active(), "the record itself is inactive at exp");
    }
}

#[test]
fn i4_garbage_tokens_introspect_inactive() {
    let a = As::new();
    for g in ["", "garbage", "hgat_short", &"A".repeat(9000), "a.b.c"] {
        assert!(!a.introspect(g, NOW).is_active(), "{g:.20}");
    }
}
