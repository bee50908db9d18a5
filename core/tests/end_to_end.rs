//! The flows end to end inside core, with a fake clock and the in-memory store, as the
//! server will drive them: register → PAR (signed request object) → interaction →
//! JARM response → code → tokens → resource server → introspect → refresh → revoke →
//! introspect inactive → delete the registration. Once for a FAPI 2.0 Message Signing
//! client (private_key_jwt + mTLS-bound wrapper tokens, no refresh rotation), once for a
//! SMART public native app (front channel, loopback redirect, opaque tokens, rotation).
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use std::collections::HashMap;
use std::sync::Arc;

use heartgate_core::audit::{EventKind, MemoryAuditSink, Outcome};
use heartgate_core::authorize::code::{complete, Approval, Redirect};
use heartgate_core::authorize::par::{front_channel, lookup, push, ParConfig, Params};
use heartgate_core::authorize::pkce::CodeChallenge;
use heartgate_core::client::*;
use heartgate_core::clock::{Clock, ManualClock, UnixTime};
use heartgate_core::grant::{authorization_code, refresh_token, GrantContext, GrantError};
use heartgate_core::introspect::{CacheConfig, IntrospectionCache};
use heartgate_core::jose::{
    sign_jwt, verify_jwt, Algorithm, AlgorithmSet, AudienceRule, KeyRing, SigningKey, TypRule,
    Validation,
};
use heartgate_core::lifecycle::{introspect, revoke, LifecycleContext, Revoked};
use heartgate_core::oidc::PairwiseSubjects;
use heartgate_core::profile::Profile;
use heartgate_core::scope::ScopeSet;
use heartgate_core::store::MemoryStore;
use heartgate_core::token::{
    AccessTokenValidator, RevokedJtis, TokenHash, TokenIssuer, ValidatedToken,
};
use serde_json::{json, Map};

const ISS: &str = "https://as.example";
const FHIR: &str = "https://fhir.example/r4";
const IAT: &str = "initial-access-token-for-the-clinic";

/// The authorization server's state, as the server process holds it.
struct As {
    store: MemoryStore,
    issuer: TokenIssuer,
    cache: IntrospectionCache,
    audit: MemoryAuditSink,
    clock: ManualClock,
    statics: HashMap<String, Arc<ValidatedClient>>,
    pseudonyms: PairwiseSubjects,
}

fn endpoints() -> Endpoints {
    Endpoints {
        issuer: ISS.into(),
        token: format!("{ISS}/token"),
        par: format!("{ISS}/par"),
    }
}

fn cert(name: &str) -> Vec<u8> {
    rcgen::generate_simple_self_signed(vec![name.into()])
        .unwrap()
        .cert
        .der()
        .to_vec()
}

impl As {
    fn new(rs_key: &SigningKey) -> Self {
        // The FHIR server is a statically configured confidential client serving FHIR.
        let rs = ClientMetadata::from_json(
            json!({"client_id": "fhir-server", "profile": "smart-backend",
                "token_endpoint_auth_method": "private_key_jwt",
                "grant_types": ["client_credentials"],
                "jwks": {"keys": [rs_key.verifying_key().to_jwk()]}, "resources": [FHIR]})
            .to_string()
            .as_bytes(),
        )
        .unwrap()
        .validate()
        .unwrap();
        let mut statics = HashMap::new();
        statics.insert("fhir-server".to_owned(), Arc::new(rs));
        As {
            store: MemoryStore::new(),
            issuer: TokenIssuer::new(
                ISS,
                Arc::new(KeyRing::new(
                    SigningKey::generate(Algorithm::ES256).unwrap(),
                )),
            ),
            cache: IntrospectionCache::new(CacheConfig::default()).unwrap(),
            audit: MemoryAuditSink::new(),
            clock: ManualClock::new(1_700_000_000),
            statics,
            pseudonyms: PairwiseSubjects::new(&[42u8; 32]).unwrap(),
        }
    }

    fn now(&self) -> UnixTime {
        self.clock.now()
    }

    fn registrar(&self) -> Registrar<'_> {
        Registrar::new(
            RegistrarConfig::new(format!("{ISS}/register"), Some(TokenHash::of(IAT))),
            &self.audit,
        )
    }

    fn directory(&self) -> StoreClientDirectory<'_> {
        StoreClientDirectory::new(&self.store, self.now()).with_static_clients(&self.statics)
    }

    fn authenticate(
        &self,
        creds: &ClientCredentials<'_>,
    ) -> Result<AuthenticatedClient, ClientAuthError> {
        authenticate(
            creds,
            &self.directory(),
            &endpoints(),
            &self.store,
            self.now(),
            &self.audit,
        )
    }

    fn grants(&self) -> GrantContext<'_> {
        let mut g = GrantContext::new(&self.issuer, &self.store, FHIR, self.now());
        g.audit = &self.audit;
        g.cache = Some(&self.cache);
        g.pairwise = Some(&self.pseudonyms);
        g
    }

    fn lifecycle(&self) -> LifecycleContext<'_> {
        let mut l = LifecycleContext::new(&self.issuer, &self.store, self.now());
        l.audit = &self.audit;
        l.cache = Some(&self.cache);
        l.pairwise = Some(&self.pseudonyms);
        l
    }

    fn par_config() -> ParConfig {
        ParConfig {
            issuer: ISS.into(),
            lifetime: 60,
        }
    }
}

/// A private_key_jwt client: a fresh assertion per request (`jti` single-use).
struct KeyClient<'k> {
    id: String,
    key: &'k SigningKey,
    aud: String,
    n: std::cell::Cell<u32>,
}

impl KeyClient<'_> {
    fn assertion(&self, now: UnixTime) -> String {
        self.n.set(self.n.get() + 1);
        sign_jwt(
            self.key,
            None,
            json!({"iss": self.id, "sub": self.id, "aud": self.aud, "iat": now.0,
                "exp": now.0 + 60, "jti": format!("{}-{}", self.id, self.n.get())})
            .as_object()
            .unwrap(),
        )
        .unwrap()
    }

    fn authenticate(
        &self,
        at: &As,
        cert: Option<&[u8]>,
    ) -> Result<AuthenticatedClient, ClientAuthError> {
        let a = self.assertion(at.now());
        at.authenticate(&ClientCredentials {
            client_assertion_type: Some(JWT_BEARER_ASSERTION_TYPE),
            client_assertion: Some(&a),
            certificate: cert,
            ..Default::default()
        })
    }
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?').map(|(_, q)| q)?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[test]
fn fapi2_message_signing_client_from_registration_to_revocation() {
    let client_key = SigningKey::generate(Algorithm::ES256).unwrap();
    let rs_key = SigningKey::generate(Algorithm::ES256).unwrap();
    let at = As::new(&rs_key);
    let client_cert = cert("clinic.example");
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    // 1. Dynamic registration with the initial access token.
    let reg = at
        .registrar()
        .register(
            Some(IAT),
            json!({"profile": "fapi2-message-signing", "client_name": "Clinic portal",
                "redirect_uris": ["https://clinic.example/cb"],
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [client_key.verifying_key().to_jwk()]},
                "grant_types": ["authorization_code", "refresh_token"],
                "require_pushed_authorization_requests": true,
                "tls_client_certificate_bound_access_tokens": true,
                "request_object_signing_alg": "ES256",
                "authorization_signed_response_alg": "ES256",
                "access_token_format": "wrapper",
                "scope": "openid offline_access launch/patient patient/Observation.rs"})
            .to_string()
            .as_bytes(),
            &at.store,
            at.now(),
        )
        .unwrap();
    let client_id = reg.client_id().to_owned();
    let client = KeyClient {
        id: client_id.clone(),
        key: &client_key,
        aud: ISS.into(), // FAPI 2.0: the issuer, as a string
        n: Default::default(),
    };

    // 2. PAR with a signed request object, over mTLS.
    let now = at.now();
    let mut ro = json!({"iss": client_id, "aud": ISS, "client_id": client_id,
        "exp": now.0 + 300, "nbf": now.0, "iat": now.0, "jti": "ro-1",
        "response_type": "code", "response_mode": "jwt",
        "redirect_uri": "https://clinic.example/cb",
        "scope": "openid offline_access launch/patient patient/Observation.rs",
        "state": "st-1", "nonce": "n-1", "code_challenge_method": "S256"});
    ro["code_challenge"] = json!(CodeChallenge::for_verifier(verifier).as_str());
    let mut body = Params::new();
    body.insert("client_id".into(), client_id.clone());
    body.insert(
        "request".into(),
        sign_jwt(
            &client_key,
            Some("oauth-authz-req+jwt"),
            ro.as_object().unwrap(),
        )
        .unwrap(),
    );
    let pushed = push(
        &client.authenticate(&at, Some(&client_cert)).unwrap(),
        &body,
        &at.directory(),
        &As::par_config(),
        &at.store,
        at.now(),
        &at.audit,
    )
    .unwrap();

    // 3. The browser arrives with client_id + request_uri; the login page shows the
    //    request (and survives a reload), then the user approves with a patient.
    at.clock.advance(5);
    for _ in 0..2 {
        let req = lookup(ISS, &client_id, &pushed.request_uri, &at.store, at.now()).unwrap();
        assert_eq!(
            ScopeSet::parse(&req.scope).unwrap(),
            ScopeSet::parse("openid offline_access launch/patient patient/Observation.rs").unwrap()
        );
    }
    let mut context = Map::new();
    context.insert("patient".into(), json!("Patient/123"));
    at.clock.advance(20);
    let (_, response) = complete(
        ISS,
        &client_id,
        &pushed.request_uri,
        Profile::Fapi2MessageSigning,
        &Approval {
            subject: "user-42".into(),
            auth_time: at.now(),
            acr: None,
            granted_scope: ScopeSet::parse(
                "openid offline_access launch/patient patient/Observation.rs",
            )
            .unwrap(),
            context,
        },
        &at.store,
        at.now(),
        &at.audit,
    )
    .unwrap();
    let Redirect::SeeOther(url) = response
        .into_redirect(ISS, at.issuer.keys(), Some(Algorithm::ES256), at.now())
        .unwrap()
    else {
        panic!("303 expected")
    };
    assert!(url.starts_with("https://clinic.example/cb?response="));

    // 4. The client verifies the JARM response against the AS's JWKS.
    let jarm = query_param(&url, "response").unwrap();
    let v = Validation::new(
        AlgorithmSet::FAPI2,
        TypRule::OptionalOneOf(&["JWT"]),
        AudienceRule::ExactString(client_id.clone()),
    )
    .issuer(ISS);
    let claims = verify_jwt(&jarm, at.issuer.keys().snapshot().jwks(), &v, at.now()).unwrap();
    assert_eq!(claims.get("state"), Some(&json!("st-1")));
    let code = claims.string("code").unwrap().unwrap().to_owned();

    // 5. Token request: same certificate, fresh assertion.
    at.clock.advance(2);
    let tokens = authorization_code(
        &client.authenticate(&at, Some(&client_cert)).unwrap(),
        Some(&code),
        Some("https://clinic.example/cb"),
        Some(verifier),
        &at.grants(),
    )
    .unwrap();
    assert_eq!(tokens.context["patient"], "Patient/123");
    let id_token = tokens.id_token.as_deref().unwrap();
    let idv = Validation::new(
        AlgorithmSet::FAPI2,
        TypRule::OptionalOneOf(&["JWT"]),
        AudienceRule::ExactString(client_id.clone()),
    )
    .issuer(ISS);
    let id = verify_jwt(id_token, at.issuer.keys().snapshot().jwks(), &idv, at.now()).unwrap();
    assert_eq!(id.get("nonce"), Some(&json!("n-1")));
    let access = tokens.access_token.expose().to_owned();
    let refresh = tokens.refresh_token.as_ref().unwrap().expose().to_owned();

    // 6. The FHIR server validates the wrapper offline and checks the certificate
    //    binding; the stolen token is useless with another certificate.
    let rs_view = AccessTokenValidator::new(ISS, FHIR)
        .algorithms(AlgorithmSet::FAPI2)
        .validate(
            &access,
            at.issuer.keys().snapshot().jwks(),
            &RevokedJtis::new(),
            at.now(),
        )
        .unwrap();
    let ValidatedToken::Wrapper(w) = rs_view else {
        panic!("wrapper expected")
    };
    assert!(w.check_binding(Some(&client_cert)).is_ok());
    assert!(w.check_binding(Some(&cert("thief.example"))).is_err());
    assert!(w.check_binding(None).is_err());

    // 7. ... and introspects it for the full claims, which only introspection reveals.
    let rs = KeyClient {
        id: "fhir-server".into(),
        key: &rs_key,
        aud: format!("{ISS}/token"),
        n: Default::default(),
    };
    let r = introspect(
        &rs.authenticate(&at, None).unwrap(),
        Some(&access),
        &at.lifecycle(),
    )
    .unwrap();
    assert!(r.is_active());
    assert_eq!(r.sub(), Some("user-42"));
    assert_eq!(r.extension("patient"), Some(&json!("Patient/123")));
    assert_eq!(r.cnf(), w.cnf.as_ref());

    // 8. Refresh (FAPI 2.0: no rotation), bound to the same certificate.
    at.clock.advance(300);
    let again = refresh_token(
        &client.authenticate(&at, Some(&client_cert)).unwrap(),
        Some(&refresh),
        None,
        &at.grants(),
    )
    .unwrap();
    assert!(again.refresh_token.is_none());
    assert!(matches!(
        refresh_token(
            &client
                .authenticate(&at, Some(&cert("thief.example")))
                .unwrap(),
            Some(&refresh),
            None,
            &at.grants(),
        ),
        Err(GrantError::InvalidGrant(_))
    ));

    // 9. Revoking the refresh token takes back the family: both access tokens go
    //    inactive at once, though the first was cached as active.
    let second = again.access_token.expose().to_owned();
    let rsc = rs.authenticate(&at, None).unwrap();
    assert!(introspect(&rsc, Some(&second), &at.lifecycle())
        .unwrap()
        .is_active());
    let done = revoke(
        &client.authenticate(&at, Some(&client_cert)).unwrap(),
        Some(&refresh),
        &at.lifecycle(),
    )
    .unwrap();
    assert!(matches!(done, Revoked::Family { .. }));
    for t in [&access, &second, &refresh] {
        let r = introspect(&rsc, Some(t), &at.lifecycle()).unwrap();
        assert_eq!(r.to_json_string(), r#"{"active":false}"#);
    }
    assert!(refresh_token(
        &client.authenticate(&at, Some(&client_cert)).unwrap(),
        Some(&refresh),
        None,
        &at.grants(),
    )
    .is_err());

    // 10. The registration is deleted: the client no longer authenticates.
    at.registrar()
        .delete(
            &client_id,
            Some(reg.registration_access_token().expose()),
            &at.store,
            at.now(),
        )
        .unwrap();
    assert!(client.authenticate(&at, Some(&client_cert)).is_err());

    // Every step left an audit trail, and none of it carries a token or the user.
    let events = at.audit.events();
    for kind in [
        EventKind::Registration,
        EventKind::PushedAuthorizationRequest,
        EventKind::CodeIssued,
        EventKind::CodeRedeemed,
        EventKind::Refresh,
        EventKind::Introspection,
        EventKind::Revocation,
    ] {
        assert!(
            events
                .iter()
                .any(|e| e.kind == kind && e.outcome == Outcome::Success),
            "{kind:?}"
        );
    }
    // Client authentication is an event when it fails (the deleted client above), and a
    // success is carried by the event of what followed (DESIGN.md §Audit).
    assert!(events
        .iter()
        .any(|e| e.kind == EventKind::ClientAuthentication && e.outcome == Outcome::Failure));
    assert!(!events
        .iter()
        .any(|e| e.kind == EventKind::ClientAuthentication && e.outcome == Outcome::Success));
    // Users and patients appear as stable pseudonyms: the issuance and the introspection
    // of one token name the same person the same way.
    let issued = events
        .iter()
        .find(|e| e.kind == EventKind::CodeRedeemed && e.outcome == Outcome::Success)
        .unwrap();
    let seen = events
        .iter()
        .find(|e| e.kind == EventKind::Introspection && e.reason == "active")
        .unwrap();
    assert!(issued.subject_ref.is_some() && issued.patient_ref.is_some());
    assert_eq!(issued.subject_ref, seen.subject_ref);
    assert_eq!(issued.patient_ref, seen.patient_ref);
    assert_ne!(issued.subject_ref, issued.patient_ref);
    let log = serde_json::to_string(&events).unwrap();
    for secret in [
        access.as_str(),
        refresh.as_str(),
        code.as_str(),
        "user-42",
        "Patient/123",
    ] {
        assert!(!log.contains(secret));
    }
}

#[test]
fn smart_native_app_front_channel_with_rotation_and_reuse_detection() {
    let rs_key = SigningKey::generate(Algorithm::ES256).unwrap();
    let at = As::new(&rs_key);
    let verifier = "native-app-verifier-0123456789-abcdefghijklmnopqrstuvwx";

    let reg = at
        .registrar()
        .register(
            Some(IAT),
            json!({"profile": "smart", "client_name": "Bedside app",
                "redirect_uris": ["http://127.0.0.1/cb"],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "access_token_format": "opaque"})
            .to_string()
            .as_bytes(),
            &at.store,
            at.now(),
        )
        .unwrap();
    let id = reg.client_id().to_owned();
    let app = || {
        at.authenticate(&ClientCredentials {
            client_id: Some(&id),
            ..Default::default()
        })
        .unwrap()
    };

    // The browser goes straight to /authorize (no PAR): a pending interaction.
    let mut q = Params::new();
    for (k, v) in [
        ("client_id", id.as_str()),
        ("response_type", "code"),
        ("redirect_uri", "http://127.0.0.1:49152/cb"),
        (
            "scope",
            "launch/patient patient/Observation.rs offline_access",
        ),
        ("state", "xyz"),
        ("code_challenge_method", "S256"),
    ] {
        q.insert(k.into(), v.into());
    }
    q.insert(
        "code_challenge".into(),
        CodeChallenge::for_verifier(verifier).as_str().into(),
    );
    let pending = front_channel(
        &q,
        &at.directory(),
        &As::par_config(),
        &at.store,
        at.now(),
        &at.audit,
    )
    .unwrap();
    let mut context = Map::new();
    context.insert("patient".into(), json!("Patient/7"));
    let (_, resp) = complete(
        ISS,
        &id,
        &pending.request_uri,
        Profile::Smart,
        &Approval {
            subject: "nurse-1".into(),
            auth_time: at.now(),
            acr: None,
            granted_scope: ScopeSet::parse("launch/patient patient/Observation.rs offline_access")
                .unwrap(),
            context,
        },
        &at.store,
        at.now(),
        &at.audit,
    )
    .unwrap();
    let Redirect::SeeOther(url) = resp
        .into_redirect(ISS, at.issuer.keys(), None, at.now())
        .unwrap()
    else {
        panic!("303 expected")
    };
    assert!(url.starts_with("http://127.0.0.1:49152/cb?"));
    assert_eq!(query_param(&url, "iss").as_deref(), Some(ISS), "RFC 9207");
    assert_eq!(query_param(&url, "state").as_deref(), Some("xyz"));
    let code = query_param(&url, "code").unwrap();

    let t = authorization_code(
        &app(),
        Some(&code),
        Some("http://127.0.0.1:49152/cb"),
        Some(verifier),
        &at.grants(),
    )
    .unwrap();
    assert!(t.access_token.expose().starts_with("hgat_"));
    assert!(t.id_token.is_none(), "no openid, no ID token");
    let rt1 = t.refresh_token.as_ref().unwrap().expose().to_owned();

    // Rotation; the stolen old refresh token, replayed, revokes the family (R4).
    at.clock.advance(60);
    let t2 = refresh_token(
        &app(),
        Some(&rt1),
        Some("patient/Observation.rs"),
        &at.grants(),
    )
    .unwrap();
    assert_eq!(t2.scope, "patient/Observation.rs", "narrowed (R6)");
    let rt2 = t2.refresh_token.as_ref().unwrap().expose().to_owned();
    assert!(
        introspect(&app(), Some(t2.access_token.expose()), &at.lifecycle())
            .unwrap()
            .is_active()
    );
    assert!(refresh_token(&app(), Some(&rt1), None, &at.grants()).is_err());
    for tok in [
        t.access_token.expose(),
        t2.access_token.expose(),
        rt2.as_str(),
    ] {
        assert!(!introspect(&app(), Some(tok), &at.lifecycle())
            .unwrap()
            .is_active());
    }
}
