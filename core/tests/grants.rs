//! Token-endpoint grants: authorization_code (A1, A3-A5 at the grant level, binding,
//! refresh issuance) and client_credentials (SMART Backend Services, scopes, binding).
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{client, Dir, FlakyStore};
use heartgate_core::authorize::code::{complete, Approval};
use heartgate_core::authorize::par::{push, ParConfig, Params};
use heartgate_core::authorize::pkce::CodeChallenge;
use heartgate_core::ciba::{CibaUsers, UserCodeCheck, UserStatus, UsersUnavailable};
use heartgate_core::client::*;
use heartgate_core::clock::UnixTime;
use heartgate_core::grant::*;
use heartgate_core::jose::{sign_jwt, Algorithm, KeyRing, SigningKey};
use heartgate_core::mtls::Confirmation;
use heartgate_core::profile::Profile;
use heartgate_core::scope::ScopeSet;
use heartgate_core::store::{Namespace, Store};
use heartgate_core::token::{
    AccessTokenValidator, RefreshPolicy, RevokedJtis, TokenIssuer, TokenRecord, ValidatedToken,
};
use serde_json::{json, Map};

const ISS: &str = "https://as.example";
const RS: &str = "https://fhir.example";
const NOW: UnixTime = UnixTime(1_700_000_000);
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

struct F {
    dir: Dir,
    store: FlakyStore,
    issuer: TokenIssuer,
    backend_key: SigningKey,
    fapi_key: SigningKey,
    cert: Vec<u8>,
}

fn fixture() -> F {
    let backend_key = SigningKey::generate(Algorithm::ES256).unwrap();
    let fapi_key = SigningKey::generate(Algorithm::ES256).unwrap();
    let mut m = HashMap::new();
    m.insert("fapi".to_owned(), client(json!({"client_id": "fapi", "profile": "fapi2-security",
        "redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [fapi_key.verifying_key().to_jwk()]}, "require_pushed_authorization_requests": true,
        "tls_client_certificate_bound_access_tokens": true, "grant_types": ["authorization_code", "refresh_token"]})));
    m.insert(
        "app".to_owned(),
        client(json!({"client_id": "app", "profile": "smart",
        "redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"]})),
    );
    m.insert(
        "bound".to_owned(),
        client(json!({"client_id": "bound", "profile": "smart",
        "redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none",
        "tls_client_certificate_bound_access_tokens": true, "access_token_format": "wrapper"})),
    );
    m.insert(
        "pw".to_owned(),
        client(
            json!({"client_id": "pw", "profile": "smart", "subject_type": "pairwise",
        "redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none",
        "access_token_format": "wrapper"}),
        ),
    );
    m.insert("backend".to_owned(), client(json!({"client_id": "backend", "profile": "smart-backend",
        "token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"],
        "jwks": {"keys": [backend_key.verifying_key().to_jwk()]}, "scope": "system/Observation.rs system/Patient.r",
        "tls_client_certificate_bound_access_tokens": true})));
    F {
        dir: Dir(m),
        store: FlakyStore::default(),
        issuer: TokenIssuer::new(
            ISS,
            Arc::new(KeyRing::new(
                SigningKey::generate(Algorithm::ES256).unwrap(),
            )),
        ),
        backend_key,
        fapi_key,
        cert: rcgen::generate_simple_self_signed(vec!["client.example".into()])
            .unwrap()
            .cert
            .der()
            .to_vec(),
    }
}

impl F {
    fn ctx(&self) -> GrantContext<'_> {
        GrantContext::new(&self.issuer, &self.store, RS, NOW)
    }

    fn endpoints() -> Endpoints {
        Endpoints {
            issuer: ISS.into(),
            token: format!("{ISS}/token"),
            par: format!("{ISS}/par"),
        }
    }

    fn public(&self, id: &str, cert: bool) -> AuthenticatedClient {
        let creds = ClientCredentials {
            client_id: Some(id),
            certificate: cert.then_some(self.cert.as_slice()),
            ..Default::default()
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

    fn backend(&self, jti: &str, cert: bool) -> AuthenticatedClient {
        self.signed("backend", &self.backend_key, jti, cert)
    }

    fn fapi(&self, jti: &str, cert: bool) -> AuthenticatedClient {
        self.signed("fapi", &self.fapi_key, jti, cert)
    }

    fn signed(&self, id: &str, key: &SigningKey, jti: &str, cert: bool) -> AuthenticatedClient {
        let aud = if id == "fapi" {
            ISS.to_owned()
        } else {
            format!("{ISS}/token")
        };
        let a = sign_jwt(
            key,
            None,
            json!({"iss": id, "sub": id, "aud": aud, "exp": NOW.0 + 60, "jti": jti})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        let creds = ClientCredentials {
            client_assertion_type: Some(JWT_BEARER_ASSERTION_TYPE),
            client_assertion: Some(&a),
            certificate: cert.then_some(self.cert.as_slice()),
            ..Default::default()
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

    fn code(&self, id: &str, scope: &str) -> String {
        self.code_for(&self.public(id, false), scope)
    }

    fn code_for(&self, who: &AuthenticatedClient, scope: &str) -> String {
        self.code_with(who, scope, None)
    }

    fn code_with(&self, who: &AuthenticatedClient, scope: &str, nonce: Option<&str>) -> String {
        let id = who.client_id().to_owned();
        let id = id.as_str();
        let mut p = Params::new();
        for (k, v) in [
            ("response_type", "code"),
            ("redirect_uri", "https://app.example/cb"),
            ("scope", scope),
            ("code_challenge_method", "S256"),
        ] {
            p.insert(k.into(), v.into());
        }
        p.insert(
            "code_challenge".into(),
            CodeChallenge::for_verifier(VERIFIER).as_str().into(),
        );
        if let Some(n) = nonce {
            p.insert("nonce".into(), n.into());
        }
        let ru = push(
            who,
            &p,
            &self.dir,
            &ParConfig {
                issuer: ISS.into(),
                lifetime: 60,
            },
            &self.store,
            NOW,
            &heartgate_core::audit::NoAudit,
        )
        .unwrap()
        .request_uri;
        let mut context = Map::new();
        context.insert("patient".into(), json!("123"));
        context.insert("fhirUser".into(), json!("Practitioner/7"));
        let approval = Approval {
            subject: "user-1".into(),
            auth_time: NOW,
            acr: None,
            granted_scope: ScopeSet::parse(scope).unwrap(),
            context,
        };
        complete(
            ISS,
            id,
            &ru,
            Profile::Smart,
            &approval,
            &self.store,
            NOW,
            &heartgate_core::audit::NoAudit,
        )
        .unwrap()
        .0
    }
}

const CB: Option<&str> = Some("https://app.example/cb");

#[test]
fn code_grant_issues_a_validating_token_with_launch_context_and_a_refresh_token() {
    let f = fixture();
    let code = f.code("app", "openid offline_access patient/Observation.rs");
    let r = authorization_code(
        &f.public("app", false),
        Some(&code),
        CB,
        Some(VERIFIER),
        &f.ctx(),
    )
    .unwrap();
    assert_eq!(r.token_type, "Bearer");
    assert_eq!(
        r.context["patient"], "123",
        "SMART: patient in the token response"
    );
    assert!(r
        .refresh_token
        .as_ref()
        .unwrap()
        .expose()
        .starts_with("hgrt_"));
    let v = AccessTokenValidator::new(ISS, RS)
        .validate(
            r.access_token.expose(),
            &*f.issuer.keys().snapshot(),
            &RevokedJtis::new(),
            NOW,
        )
        .unwrap();
    let ValidatedToken::Jwt(c) = v else {
        panic!("jwt expected")
    };
    assert_eq!(c.sub, "user-1");
    assert_eq!(c.claims.get("patient"), Some(&json!("123")));
    // The record exists before the response: introspection can find it.
    let key = heartgate_core::token::RecordKey::Jti {
        iss: ISS.into(),
        jti: r.jti.clone(),
    };
    let rec = TokenRecord::from_bytes(
        &f.store
            .get(Namespace::AccessToken, &key.store_key(), NOW)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(rec.introspection_response(NOW).unwrap().is_active());
}

#[test]
fn no_refresh_token_without_offline_access() {
    let f = fixture();
    let code = f.code("app", "openid patient/Observation.rs");
    let r = authorization_code(
        &f.public("app", false),
        Some(&code),
        CB,
        Some(VERIFIER),
        &f.ctx(),
    )
    .unwrap();
    assert!(r.refresh_token.is_none());
}

#[test]
fn a1_code_reuse_is_refused_and_revokes_the_family() {
    let f = fixture();
    let code = f.code("app", "openid offline_access");
    authorization_code(
        &f.public("app", false),
        Some(&code),
        CB,
        Some(VERIFIER),
        &f.ctx(),
    )
    .unwrap();
    assert_eq!(
        authorization_code(
            &f.public("app", false),
            Some(&code),
            CB,
            Some(VERIFIER),
            &f.ctx()
        )
        .unwrap_err(),
        GrantError::InvalidGrant("code reused")
    );
    let revoked: Vec<_> = f
        .store
        .snapshot(NOW)
        .unwrap()
        .into_iter()
        .filter(|(ns, _, _)| *ns == Namespace::RefreshFamily)
        .collect();
    assert_eq!(revoked.len(), 1, "the grant's family is marked revoked");
}

#[test]
fn code_errors_are_invalid_grant_or_invalid_request() {
    let f = fixture();
    let code = f.code("app", "openid");
    let c = f.public("app", false);
    assert_eq!(
        authorization_code(&c, None, CB, Some(VERIFIER), &f.ctx()).unwrap_err(),
        GrantError::InvalidRequest("code missing")
    );
    assert_eq!(
        authorization_code(&c, Some(&code), CB, Some("x".repeat(43).as_str()), &f.ctx())
            .unwrap_err(),
        GrantError::InvalidGrant("code")
    );
    assert_eq!(
        authorization_code(&c, Some(&code), None, Some(VERIFIER), &f.ctx()).unwrap_err(),
        GrantError::InvalidGrant("code")
    );
    assert_eq!(
        authorization_code(&c, Some("hgc_unknown"), CB, Some(VERIFIER), &f.ctx()).unwrap_err(),
        GrantError::InvalidGrant("code")
    );
    assert!(
        authorization_code(&c, Some(&code), CB, Some(VERIFIER), &f.ctx()).is_ok(),
        "failures did not consume the code"
    );
}

#[test]
fn clients_without_the_grant_type_are_unauthorized() {
    let f = fixture();
    assert_eq!(
        authorization_code(&f.backend("j1", true), Some("x"), CB, None, &f.ctx()).unwrap_err(),
        GrantError::UnauthorizedClient
    );
    assert_eq!(
        client_credentials(&f.public("app", false), None, &f.ctx()).unwrap_err(),
        GrantError::UnauthorizedClient
    );
}

#[test]
fn bound_client_gets_cnf_and_is_refused_without_a_certificate() {
    let f = fixture();
    let code = f.code("bound", "openid");
    assert_eq!(
        authorization_code(
            &f.public("bound", false),
            Some(&code),
            CB,
            Some(VERIFIER),
            &f.ctx()
        )
        .unwrap_err(),
        GrantError::InvalidRequest("a client certificate is required for bound tokens")
    );
    let r = authorization_code(
        &f.public("bound", true),
        Some(&code),
        CB,
        Some(VERIFIER),
        &f.ctx(),
    )
    .unwrap();
    assert!(
        r.access_token.expose().split('.').count() == 3,
        "wrapper format"
    );
    let v = AccessTokenValidator::new(ISS, RS)
        .validate(
            r.access_token.expose(),
            &*f.issuer.keys().snapshot(),
            &RevokedJtis::new(),
            NOW,
        )
        .unwrap();
    let ValidatedToken::Wrapper(w) = v else {
        panic!("wrapper expected")
    };
    assert_eq!(w.cnf, Some(Confirmation::for_certificate(&f.cert).unwrap()));
    assert!(w.check_binding(Some(&f.cert)).is_ok());
}

#[test]
fn smart_backend_client_credentials_are_short_lived_system_scoped_and_bound() {
    let f = fixture();
    let r = client_credentials(
        &f.backend("j2", true),
        Some("system/Observation.rs"),
        &f.ctx(),
    )
    .unwrap();
    assert_eq!(r.expires_in, 300);
    assert_eq!(r.scope, "system/Observation.rs");
    assert!(r.refresh_token.is_none());
    let all = client_credentials(&f.backend("j3", true), None, &f.ctx()).unwrap();
    assert_eq!(
        ScopeSet::parse(&all.scope).unwrap(),
        ScopeSet::parse("system/Observation.rs system/Patient.r").unwrap()
    );
}

#[test]
fn spec_b2_10_es384_and_rs384_backend_clients_get_tokens_signed_with_the_as_key_algorithm() {
    // SMART lets a backend client sign its assertions with ES384 or RS384; the AS still
    // signs the access token with its own active key (ES256 here), never the client's alg.
    let mut f = fixture();
    for (id, alg) in [("b384", Algorithm::ES384), ("r384", Algorithm::RS384)] {
        let k = SigningKey::generate(alg).unwrap();
        f.dir.0.insert(
            id.to_owned(),
            client(json!({"client_id": id, "profile": "smart-backend",
            "token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"],
            "token_endpoint_auth_signing_alg": alg.as_str(),
            "jwks": {"keys": [k.verifying_key().to_jwk()]}, "scope": "system/Observation.rs",
            "tls_client_certificate_bound_access_tokens": true})),
        );
        let c = f.signed(id, &k, &format!("jti-{id}"), true);
        let r = client_credentials(&c, None, &f.ctx()).unwrap();
        let token = r.access_token.expose();
        let header: serde_json::Value = serde_json::from_slice(
            &heartgate_core::jose::b64::decode(token.split('.').next().unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], "ES256", "{alg}");
        let v = AccessTokenValidator::new(ISS, RS)
            .validate(
                token,
                &*f.issuer.keys().snapshot(),
                &RevokedJtis::new(),
                NOW,
            )
            .unwrap();
        let ValidatedToken::Jwt(claims) = v else {
            panic!("JWT expected")
        };
        assert_eq!(claims.client_id, id);
    }
}

#[test]
fn client_credentials_refuse_wider_or_user_scopes_and_unbound_requests() {
    let f = fixture();
    for s in [
        "system/Observation.cruds",
        "system/*.rs",
        "patient/Observation.rs",
        "openid",
    ] {
        assert_eq!(
            client_credentials(&f.backend(s, true), Some(s), &f.ctx()).unwrap_err(),
            GrantError::InvalidScope,
            "{s}"
        );
    }
    assert!(matches!(
        client_credentials(&f.backend("nocert", false), None, &f.ctx()).unwrap_err(),
        GrantError::InvalidRequest(_)
    ));
}

fn refresh_of(r: &TokenResponse) -> String {
    r.refresh_token.as_ref().unwrap().expose().to_owned()
}

#[test]
fn public_client_refresh_rotates_and_reuse_revokes_the_family_r4() {
    let f = fixture();
    let code = f.code("app", "openid offline_access patient/Observation.rs");
    let first = authorization_code(
        &f.public("app", false),
        Some(&code),
        CB,
        Some(VERIFIER),
        &f.ctx(),
    )
    .unwrap();
    let rt1 = refresh_of(&first);
    let second = refresh_token(&f.public("app", false), Some(&rt1), None, &f.ctx()).unwrap();
    let rt2 = refresh_of(&second);
    assert_ne!(rt1, rt2, "rotated");
    assert_eq!(
        second.context["patient"], "123",
        "launch context carried over"
    );
    // Reuse of the superseded token: refused, and the whole family with it.
    assert_eq!(
        refresh_token(&f.public("app", false), Some(&rt1), None, &f.ctx()).unwrap_err(),
        GrantError::InvalidGrant("refresh token reuse")
    );
    assert_eq!(
        refresh_token(&f.public("app", false), Some(&rt2), None, &f.ctx()).unwrap_err(),
        GrantError::InvalidGrant("family revoked")
    );
}

/// A user directory with one user, "user-1", whose status a test sets (`None`: the
/// directory does not answer).
struct OneUser(parking_lot::Mutex<Option<UserStatus>>);

impl CibaUsers for OneUser {
    fn resolve_login_hint(&self, _: &str) -> Result<Option<String>, UsersUnavailable> {
        Ok(None)
    }

    fn status(&self, user_id: &str) -> Result<UserStatus, UsersUnavailable> {
        match (user_id, *self.0.lock()) {
            (_, None) => Err(UsersUnavailable),
            ("user-1", Some(s)) => Ok(s),
            _ => Ok(UserStatus::Unknown),
        }
    }

    fn verify_user_code(&self, _: &str, _: &str) -> Result<UserCodeCheck, UsersUnavailable> {
        Ok(UserCodeCheck::Mismatch)
    }
}

/// THREATS R7: the user is checked again when a refresh token is redeemed. Removed or
/// disabled since the grant: `invalid_grant`; the directory down: 503; neither consumes
/// the token, which works again once the user is active.
#[test]
fn r7_refresh_for_a_user_removed_or_disabled_since_the_grant_is_invalid_grant() {
    let f = fixture();
    let code = f.code("app", "openid offline_access patient/Observation.rs");
    let first = authorization_code(
        &f.public("app", false),
        Some(&code),
        CB,
        Some(VERIFIER),
        &f.ctx(),
    )
    .unwrap();
    let users = OneUser(parking_lot::Mutex::new(Some(UserStatus::Active)));
    let ctx = || {
        let mut c = f.ctx();
        c.users = Some(&users);
        c
    };
    let second = refresh_token(
        &f.public("app", false),
        Some(&refresh_of(&first)),
        None,
        &ctx(),
    )
    .unwrap();
    let rt = refresh_of(&second);
    for (status, expected) in [
        (
            Some(UserStatus::Inactive),
            GrantError::InvalidGrant("user no longer active"),
        ),
        (
            Some(UserStatus::Unknown),
            GrantError::InvalidGrant("user no longer active"),
        ),
        (None, GrantError::Unavailable),
    ] {
        *users.0.lock() = status;
        assert_eq!(
            refresh_token(&f.public("app", false), Some(&rt), None, &ctx()).unwrap_err(),
            expected,
            "{status:?}"
        );
    }
    *users.0.lock() = Some(UserStatus::Active);
    refresh_token(&f.public("app", false), Some(&rt), None, &ctx()).unwrap();
}

#[test]
fn r5_parallel_uses_of_one_refresh_token_never_fork_the_family() {
    let f = fixture();
    let code = f.code("app", "openid offline_access");
    let rt = refresh_of(
        &authorization_code(
            &f.public("app", false),
            Some(&code),
            CB,
            Some(VERIFIER),
            &f.ctx(),
        )
        .unwrap(),
    );
    let c = f.public("app", false);
    let wins = std::thread::scope(|s| {
        let hs: Vec<_> = (0..16)
            .map(|_| s.spawn(|| refresh_token(&c, Some(&rt), None, &f.ctx()).is_ok()))
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .filter(|w| *w)
            .count()
    });
    assert_eq!(wins, 1);
}

#[test]
fn fapi_refresh_does_not_rotate_and_is_bound_to_the_certificate_r3() {
    let f = fixture();
    let code = f.code_for(&f.fapi("par", true), "openid offline_access");
    let first = authorization_code(
        &f.fapi("t1", true),
        Some(&code),
        CB,
        Some(VERIFIER),
        &f.ctx(),
    )
    .unwrap();
    let rt = refresh_of(&first);
    for i in 0..3 {
        let r = refresh_token(&f.fapi(&format!("r{i}"), true), Some(&rt), None, &f.ctx()).unwrap();
        assert!(
            r.refresh_token.is_none(),
            "FAPI 2.0: the same refresh token keeps working"
        );
    }
    assert!(matches!(
        refresh_token(&f.fapi("nocert", false), Some(&rt), None, &f.ctx()).unwrap_err(),
        GrantError::InvalidGrant(_)
    ));
}

#[test]
fn r1_r6_refresh_of_another_client_or_with_wider_scope_is_refused() {
    let f = fixture();
    let code = f.code("app", "openid offline_access patient/Observation.rs");
    let rt = refresh_of(
        &authorization_code(
            &f.public("app", false),
            Some(&code),
            CB,
            Some(VERIFIER),
            &f.ctx(),
        )
        .unwrap(),
    );
    let other = f.fapi("x", true);
    let before = f.store.snapshot(NOW).unwrap();
    assert!(matches!(
        refresh_token(&other, Some(&rt), None, &f.ctx()).unwrap_err(),
        GrantError::InvalidGrant(_)
    ));
    assert_eq!(
        refresh_token(
            &f.public("app", false),
            Some(&rt),
            Some("patient/Observation.cruds"),
            &f.ctx()
        )
        .unwrap_err(),
        GrantError::InvalidScope
    );
    assert_eq!(
        f.store.snapshot(NOW).unwrap(),
        before,
        "refused refreshes changed nothing"
    );
    let narrowed = refresh_token(
        &f.public("app", false),
        Some(&rt),
        Some("patient/Observation.r"),
        &f.ctx(),
    )
    .unwrap();
    assert_eq!(narrowed.scope, "patient/Observation.r");
    assert_eq!(
        refresh_token(&f.public("app", false), None, None, &f.ctx()).unwrap_err(),
        GrantError::InvalidRequest("refresh_token missing")
    );
    assert!(matches!(
        refresh_token(
            &f.public("app", false),
            Some("hgrt_unknown"),
            None,
            &f.ctx()
        )
        .unwrap_err(),
        GrantError::InvalidGrant(_)
    ));
}

fn id_token_claims(f: &F, jwt: &str, aud: &str) -> heartgate_core::jose::Claims {
    use heartgate_core::jose::{verify_jwt, AlgorithmSet, AudienceRule, TypRule, Validation};
    let v = Validation::new(
        AlgorithmSet::ALL,
        TypRule::OptionalOneOf(&["JWT"]),
        AudienceRule::ExactString(aud.into()),
    )
    .issuer(ISS);
    verify_jwt(jwt, &*f.issuer.keys().snapshot(), &v, NOW)
        .unwrap()
        .into_inner()
}

#[test]
fn openid_code_grant_returns_an_id_token_with_nonce_auth_time_and_fhir_user() {
    let f = fixture();
    let app = f.public("app", false);
    let code = f.code_with(&app, "openid fhirUser patient/Observation.rs", Some("n-42"));
    let r = authorization_code(&app, Some(&code), CB, Some(VERIFIER), &f.ctx()).unwrap();
    let c = id_token_claims(&f, r.id_token.as_deref().unwrap(), "app");
    assert_eq!(c.get("sub"), Some(&json!("user-1")));
    assert_eq!(c.get("nonce"), Some(&json!("n-42")));
    assert_eq!(c.get("auth_time"), Some(&json!(NOW.0)));
    assert_eq!(c.get("fhirUser"), Some(&json!("Practitioner/7")));
    assert_eq!(c.get("exp"), Some(&json!(NOW.0 + 300)), "iGov: ≤ 5 minutes");

    // Without `fhirUser` granted, no fhirUser claim; without `openid`, no ID token.
    let code = f.code_with(&app, "openid patient/Observation.rs", None);
    let r = authorization_code(&app, Some(&code), CB, Some(VERIFIER), &f.ctx()).unwrap();
    let c = id_token_claims(&f, r.id_token.as_deref().unwrap(), "app");
    assert_eq!(c.get("fhirUser"), None);
    assert_eq!(c.get("nonce"), None);
    let code = f.code_with(&app, "patient/Observation.rs", None);
    let r = authorization_code(&app, Some(&code), CB, Some(VERIFIER), &f.ctx()).unwrap();
    assert!(r.id_token.is_none());
}

#[test]
fn pairwise_client_sees_a_pseudonym_in_id_token_and_wrapper_token() {
    use heartgate_core::oidc::PairwiseSubjects;
    let f = fixture();
    let pw = f.public("pw", false);
    let secret = PairwiseSubjects::new(&[9u8; 32]).unwrap();
    let mut ctx = f.ctx();
    ctx.pairwise = Some(&secret);
    let code = f.code_with(&pw, "openid patient/Observation.rs", None);
    let r = authorization_code(&pw, Some(&code), CB, Some(VERIFIER), &ctx).unwrap();
    let expected = secret.subject("app.example", "user-1");
    let c = id_token_claims(&f, r.id_token.as_deref().unwrap(), "pw");
    assert_eq!(c.get("sub"), Some(&json!(expected)));
    let v = AccessTokenValidator::new(ISS, RS)
        .validate(
            r.access_token.expose(),
            &*f.issuer.keys().snapshot(),
            &RevokedJtis::new(),
            NOW,
        )
        .unwrap();
    let ValidatedToken::Wrapper(w) = v else {
        panic!("wrapper expected")
    };
    assert_eq!(w.sub.as_deref(), Some(expected.as_str()));

    // A pairwise client with no pairwise secret configured gets nothing (503), never
    // the local subject.
    let code = f.code_with(&pw, "openid patient/Observation.rs", None);
    assert_eq!(
        authorization_code(&pw, Some(&code), CB, Some(VERIFIER), &f.ctx()).unwrap_err(),
        GrantError::Unavailable
    );
}

fn fapi_refresh(f: &F) -> String {
    let code = f.code_for(&f.fapi("par", true), "openid offline_access");
    refresh_of(
        &authorization_code(
            &f.fapi("t1", true),
            Some(&code),
            CB,
            Some(VERIFIER),
            &f.ctx(),
        )
        .unwrap(),
    )
}

#[test]
fn r4_grace_retry_replaces_the_lost_successor_instead_of_keeping_both() {
    let f = fixture();
    let rt1 = fapi_refresh(&f);
    let mut ctx = f.ctx();
    ctx.confidential_refresh = Some(RefreshPolicy::RotateWithGrace { grace_secs: 30 });
    let rt2 = refresh_of(&refresh_token(&f.fapi("a", true), Some(&rt1), None, &ctx).unwrap());
    // The response carrying rt2 was lost: the client retries with rt1 inside the window.
    ctx.now = UnixTime(NOW.0 + 10);
    let rt3 = refresh_of(&refresh_token(&f.fapi("b", true), Some(&rt1), None, &ctx).unwrap());
    assert_ne!(rt2, rt3);
    // rt2 is gone; rt3 is the family's one live token.
    assert_eq!(
        refresh_token(&f.fapi("c", true), Some(&rt2), None, &ctx).unwrap_err(),
        GrantError::InvalidGrant("unknown refresh token")
    );
    let rt4 = refresh_of(&refresh_token(&f.fapi("d", true), Some(&rt3), None, &ctx).unwrap());
    // rt3 has been used: its parent coming back now is a replay, not a lost response.
    assert_eq!(
        refresh_token(&f.fapi("e", true), Some(&rt1), None, &ctx).unwrap_err(),
        GrantError::InvalidGrant("refresh token reuse")
    );
    assert_eq!(
        refresh_token(&f.fapi("g", true), Some(&rt4), None, &ctx).unwrap_err(),
        GrantError::InvalidGrant("family revoked")
    );
}

#[test]
fn r4_grace_window_closes() {
    let f = fixture();
    let rt1 = fapi_refresh(&f);
    let mut ctx = f.ctx();
    ctx.confidential_refresh = Some(RefreshPolicy::RotateWithGrace { grace_secs: 30 });
    refresh_token(&f.fapi("a", true), Some(&rt1), None, &ctx).unwrap();
    ctx.now = UnixTime(NOW.0 + 31);
    assert_eq!(
        refresh_token(&f.fapi("b", true), Some(&rt1), None, &ctx).unwrap_err(),
        GrantError::InvalidGrant("refresh token reuse")
    );
}

#[test]
fn v4_store_failure_during_rotation_leaves_the_presented_token_usable() {
    use std::sync::atomic::Ordering::SeqCst;
    let f = fixture();
    let code = f.code("app", "openid offline_access");
    let app = f.public("app", false);
    let rt =
        refresh_of(&authorization_code(&app, Some(&code), CB, Some(VERIFIER), &f.ctx()).unwrap());
    // The final swap fails: 503, and nothing of this attempt survives.
    f.store.fail_cas.store(true, SeqCst);
    let before = f.store.snapshot(NOW).unwrap();
    assert_eq!(
        refresh_token(&app, Some(&rt), None, &f.ctx()).unwrap_err(),
        GrantError::Unavailable
    );
    assert_eq!(f.store.snapshot(NOW).unwrap(), before);
    // Every write fails: still 503, still nothing changed.
    f.store.fail_cas.store(false, SeqCst);
    f.store.fail_writes.store(true, SeqCst);
    assert_eq!(
        refresh_token(&app, Some(&rt), None, &f.ctx()).unwrap_err(),
        GrantError::Unavailable
    );
    f.store.fail_writes.store(false, SeqCst);
    assert_eq!(f.store.snapshot(NOW).unwrap(), before);
    // The store is back: the same token rotates normally (no reuse detected).
    let next = refresh_token(&app, Some(&rt), None, &f.ctx()).unwrap();
    assert!(next.refresh_token.is_some());
}

#[test]
fn every_grant_decision_is_audited_without_secrets() {
    use heartgate_core::audit::{EventKind, MemoryAuditSink, Outcome};
    let f = fixture();
    let sink = MemoryAuditSink::new();
    let mut ctx = f.ctx();
    ctx.audit = &sink;
    let app = f.public("app", false);
    let code = f.code("app", "openid offline_access patient/Observation.rs");
    let r = authorization_code(&app, Some(&code), CB, Some(VERIFIER), &ctx).unwrap();
    let _ = authorization_code(&app, Some(&code), CB, Some(VERIFIER), &ctx).unwrap_err();
    let _ = client_credentials(&f.backend("j1", true), Some("system/Patient.r"), &ctx).unwrap();
    let _ = refresh_token(&app, Some("hgrt_nope"), None, &ctx).unwrap_err();
    let events = sink.events();
    let kinds: Vec<_> = events
        .iter()
        .map(|e| (e.kind, e.outcome, e.reason))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::CodeRedeemed, Outcome::Success, "issued"),
            (EventKind::CodeRedeemed, Outcome::Failure, "invalid_grant"),
            (EventKind::TokenIssued, Outcome::Success, "issued"),
            (EventKind::Refresh, Outcome::Failure, "invalid_grant"),
        ]
    );
    assert_eq!(events[0].client_id.as_deref(), Some("app"));
    assert_eq!(events[0].token_ref.as_deref(), Some(r.jti.as_str()));
    assert!(
        events[2].cert_thumbprint.is_some(),
        "bound client's certificate"
    );
    let all = serde_json::to_string(&events).unwrap();
    for secret in [
        r.access_token.expose(),
        r.refresh_token.as_ref().unwrap().expose(),
        code.as_str(),
        "user-1",
        "123",
    ] {
        assert!(!all.contains(secret), "audit leaks {secret}");
    }
}

/// THREATS S8: a token whose audit event cannot be written is not handed out — the grant
/// answers 503 `temporarily_unavailable` — while refusals stay refusals; once the trail
/// takes events again, grants succeed again.
#[test]
fn s8_a_grant_whose_audit_event_cannot_be_written_is_not_issued() {
    use heartgate_core::audit::{EventKind, MemoryAuditSink, Outcome};
    use heartgate_core::error::ToWire;
    let f = fixture();
    let sink = MemoryAuditSink::new();
    let mut ctx = f.ctx();
    ctx.audit = &sink;
    let app = f.public("app", false);
    let code = f.code("app", "openid offline_access patient/Observation.rs");
    sink.set_unavailable(true);
    let e = client_credentials(&f.backend("j1", true), Some("system/Patient.r"), &ctx).unwrap_err();
    assert_eq!(e, GrantError::Unavailable);
    assert_eq!(e.to_wire().status, 503);
    assert_eq!(e.to_wire().code, "temporarily_unavailable");
    let e = authorization_code(&app, Some(&code), CB, Some(VERIFIER), &ctx).unwrap_err();
    assert_eq!(e, GrantError::Unavailable, "code redeemed, tokens withheld");
    // A refusal is still the refusal, not a 503.
    let e = refresh_token(&app, Some("hgrt_nope"), None, &ctx).unwrap_err();
    assert_ne!(e, GrantError::Unavailable);
    assert!(sink.events().is_empty());
    sink.set_unavailable(false);
    client_credentials(&f.backend("j2", true), Some("system/Patient.r"), &ctx).unwrap();
    // The withheld code stays consumed: one-time means one attempt, acknowledged or not.
    let e = authorization_code(&app, Some(&code), CB, Some(VERIFIER), &ctx).unwrap_err();
    assert_ne!(e, GrantError::Unavailable);
    let got: Vec<_> = sink.events().iter().map(|e| (e.kind, e.outcome)).collect();
    assert_eq!(
        got,
        vec![
            (EventKind::TokenIssued, Outcome::Success),
            (EventKind::CodeRedeemed, Outcome::Failure)
        ]
    );
}
