//! THREATS §4.2 item 3, atomic one-time values: for each of {authorization code,
//! request_uri, client-assertion jti, CIBA auth_req_id, refresh token (public client,
//! rotation with reuse detection)}, [`RACERS`] threads redeem the same value at once through
//! the real core API, for many rounds, and exactly one of them wins each round.
//!
//! Shared by `core/tests/properties.rs` (against `MemoryStore`) and
//! `server/tests/redb_properties.rs` (against the redb file store), which include this file
//! with `#[path]`: one definition of the property, run against every backend, like the
//! store conformance suite.
//!
//! The racers are 64 threads started once and reused across rounds (a `Barrier` starts
//! each round), so 64,000 redemptions per kind cost thread wake-ups, not thread starts.
//! Values are prepared before the race through the same APIs a real flow uses (PAR push,
//! `complete`, the code grant, CIBA `start` + `decide`); all at one fixed `now`.
//!
//! A worker never panics (a panic would leave the others waiting at the barrier): every
//! outcome is counted, and the caller asserts on the counts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use heartgate_core::audit::NoAudit;
use heartgate_core::authorize::code::{self, complete, Approval, CodeError};
use heartgate_core::authorize::par::{self, push, ParConfig, Params, RequestUriError};
use heartgate_core::authorize::pkce::CodeChallenge;
use heartgate_core::ciba::{
    self, binding_message_hash, CibaConfig, CibaContext, CibaUsers, Decision, UserCodeCheck,
    UserStatus, UsersUnavailable,
};
use heartgate_core::client::{
    authenticate, AuthenticatedClient, ClientAuthError, ClientCredentials, ClientDirectory,
    ClientMetadata, Endpoints, ValidatedClient, JWT_BEARER_ASSERTION_TYPE,
};
use heartgate_core::clock::UnixTime;
use heartgate_core::grant::{self, GrantContext, GrantError};
use heartgate_core::jose::{sign_jwt, Algorithm, JwkSet, KeyRing, SigningKey};
use heartgate_core::profile::Profile;
use heartgate_core::scope::ScopeSet;
use heartgate_core::store::Store;
use heartgate_core::token::TokenIssuer;
use serde_json::{json, Map};

/// Concurrent redeemers per round.
pub const RACERS: usize = 64;
/// Rounds per kind (THREATS §4.2: 1,000 iterations).
pub const ROUNDS: usize = 1000;

const ISS: &str = "https://as.example";
const RS: &str = "https://fhir.example";
const CB: &str = "https://app.example/cb";
/// The fixed time of every race (and of the start of every CIBA request).
pub const NOW: UnixTime = UnixTime(1_700_000_000);
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CIBA_GRANT: &str = "urn:openid:params:grant-type:ciba";
const BINDING: &str = "W4SCT";

/// The one-time values raced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A1: `code::redeem`.
    Code,
    /// P12: `par::consume`.
    RequestUri,
    /// C1: `client::authenticate` with one `private_key_jwt` assertion.
    Jti,
    /// B5: `grant::ciba` on one approved `auth_req_id`.
    AuthReqId,
    /// R5: `grant::refresh_token` of a public client (rotation with reuse detection).
    RefreshToken,
}

/// What the racers of one kind did, over all rounds.
#[derive(Debug)]
pub struct RaceReport {
    /// Winners per round.
    pub winners: Vec<usize>,
    /// Losers refused with the expected error (`invalid_grant`, `invalid_client`,
    /// `invalid_request_uri`, code reuse).
    pub refused: usize,
    /// Any other outcome (store unavailable, a wrong error): must be zero.
    pub unexpected: usize,
}

impl RaceReport {
    /// Panic unless every round had exactly one winner and every loser the expected error.
    pub fn assert_exactly_one_winner(&self, kind: Kind) {
        let bad: Vec<(usize, usize)> = self
            .winners
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, w)| *w != 1)
            .collect();
        assert!(
            bad.is_empty(),
            "{kind:?}: {} of {} rounds without exactly one winner; first (round, winners): {:?}",
            bad.len(),
            self.winners.len(),
            &bad[..bad.len().min(8)]
        );
        assert_eq!(self.unexpected, 0, "{kind:?}: unexpected outcomes");
        assert_eq!(
            self.refused,
            self.winners.len() * (RACERS - 1),
            "{kind:?}: every loser is refused"
        );
    }
}

/// Outcome of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Won,
    Refused,
    Unexpected,
}

/// Run `rounds` rounds of [`RACERS`] threads calling `attempt(round)` at once.
fn race<F>(rounds: usize, attempt: F) -> RaceReport
where
    F: Fn(usize) -> Outcome + Sync,
{
    let winners: Vec<AtomicUsize> = (0..rounds).map(|_| AtomicUsize::new(0)).collect();
    let refused = AtomicUsize::new(0);
    let unexpected = AtomicUsize::new(0);
    let barrier = Barrier::new(RACERS);
    std::thread::scope(|s| {
        for _ in 0..RACERS {
            s.spawn(|| {
                for (round, wins) in winners.iter().enumerate() {
                    barrier.wait();
                    let counter = match attempt(round) {
                        Outcome::Won => wins,
                        Outcome::Refused => &refused,
                        Outcome::Unexpected => &unexpected,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    RaceReport {
        winners: winners.into_iter().map(AtomicUsize::into_inner).collect(),
        refused: refused.into_inner(),
        unexpected: unexpected.into_inner(),
    }
}

struct Dir(HashMap<String, Arc<ValidatedClient>>);

impl ClientDirectory for Dir {
    fn client(&self, id: &str) -> Option<Arc<ValidatedClient>> {
        self.0.get(id).cloned()
    }
    fn keys(&self, c: &ValidatedClient) -> Option<Arc<JwkSet>> {
        c.shared_jwks()
    }
}

/// One active user, alice.
struct Users;

impl CibaUsers for Users {
    fn resolve_login_hint(&self, hint: &str) -> Result<Option<String>, UsersUnavailable> {
        Ok((hint == "alice@clinic.example").then(|| "alice".to_owned()))
    }
    fn status(&self, user_id: &str) -> Result<UserStatus, UsersUnavailable> {
        Ok(if user_id == "alice" {
            UserStatus::Active
        } else {
            UserStatus::Unknown
        })
    }
    fn verify_user_code(&self, _: &str, _: &str) -> Result<UserCodeCheck, UsersUnavailable> {
        Ok(UserCodeCheck::Mismatch)
    }
}

fn registered(v: serde_json::Value) -> Arc<ValidatedClient> {
    Arc::new(
        ClientMetadata::from_json(v.to_string().as_bytes())
            .unwrap()
            .validate()
            .unwrap(),
    )
}

/// Clients, keys and issuer shared by the races; the store is the backend under test.
pub struct Fixture<'s> {
    store: &'s dyn Store,
    dir: Dir,
    issuer: TokenIssuer,
    key: SigningKey,
    ciba: CibaConfig,
}

fn endpoints() -> Endpoints {
    Endpoints {
        issuer: ISS.into(),
        token: format!("{ISS}/token"),
        par: format!("{ISS}/par"),
    }
}

impl<'s> Fixture<'s> {
    /// A public SMART app (`app`, opaque access tokens so that the race does not time
    /// ES256 signing) and a `private_key_jwt` CIBA poll client (`svc`).
    pub fn new(store: &'s dyn Store) -> Self {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let mut m = HashMap::new();
        m.insert(
            "app".to_owned(),
            registered(json!({"client_id": "app", "profile": "smart",
                "redirect_uris": [CB], "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "access_token_format": "opaque"})),
        );
        // The same app with the other access-token formats (revocation coverage).
        for (id, format) in [("app-jwt", "jwt"), ("app-wrapper", "wrapper")] {
            m.insert(
                id.to_owned(),
                registered(json!({"client_id": id, "profile": "smart",
                    "redirect_uris": [CB], "token_endpoint_auth_method": "none",
                    "grant_types": ["authorization_code", "refresh_token"],
                    "access_token_format": format})),
            );
        }
        // A resource server that introspects tokens for its audience.
        m.insert(
            "rs".to_owned(),
            registered(json!({"client_id": "rs", "profile": "smart-backend",
                "token_endpoint_auth_method": "private_key_jwt",
                "grant_types": ["client_credentials"],
                "jwks": {"keys": [key.verifying_key().to_jwk()]}, "resources": [RS]})),
        );
        m.insert(
            "svc".to_owned(),
            registered(json!({"client_id": "svc", "profile": "smart",
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [key.verifying_key().to_jwk()]},
                "grant_types": [CIBA_GRANT], "backchannel_token_delivery_mode": "poll",
                "access_token_format": "opaque"})),
        );
        Fixture {
            store,
            dir: Dir(m),
            issuer: TokenIssuer::new(
                ISS,
                Arc::new(KeyRing::new(
                    SigningKey::generate(Algorithm::ES256).unwrap(),
                )),
            ),
            key,
            ciba: CibaConfig::new(ISS),
        }
    }

    fn app(&self) -> AuthenticatedClient {
        self.public("app")
    }

    /// A public client (`app`, `app-jwt`, `app-wrapper`), authenticated by its id.
    pub fn public(&self, id: &str) -> AuthenticatedClient {
        let creds = ClientCredentials {
            client_id: Some(id),
            ..Default::default()
        };
        authenticate(&creds, &self.dir, &endpoints(), self.store, NOW, &NoAudit).unwrap()
    }

    fn assertion(&self, jti: &str) -> String {
        self.assertion_of("svc", jti)
    }

    fn assertion_of(&self, id: &str, jti: &str) -> String {
        let claims = json!({"iss": id, "sub": id, "aud": ISS, "exp": NOW.0 + 60, "jti": jti});
        sign_jwt(&self.key, None, claims.as_object().unwrap()).unwrap()
    }

    fn svc_with(&self, assertion: &str) -> Result<AuthenticatedClient, ClientAuthError> {
        let creds = ClientCredentials {
            client_assertion_type: Some(JWT_BEARER_ASSERTION_TYPE),
            client_assertion: Some(assertion),
            ..Default::default()
        };
        authenticate(&creds, &self.dir, &endpoints(), self.store, NOW, &NoAudit)
    }

    /// A token-endpoint context at the fixed time.
    #[allow(dead_code)] // reason: only core's scope property uses it, not the redb races
    pub fn grant_context(&self) -> GrantContext<'_> {
        self.grants()
    }

    /// The public app, authenticated (it has no credentials: a client_id).
    #[allow(dead_code)] // reason: only core's scope property uses it, not the redb races
    pub fn public_app(&self) -> AuthenticatedClient {
        self.app()
    }

    /// A refresh token of the public app, from a full PAR → code → token flow granting
    /// `scope` (which must include `offline_access`).
    #[allow(dead_code)] // reason: only core's scope property uses it, not the redb races
    pub fn refresh_token_for(&self, scope: &str) -> String {
        self.tokens_for(&self.app(), scope)
            .refresh_token
            .unwrap()
            .expose()
            .to_owned()
    }

    /// The token response of a full PAR → code → token flow of the public `app` granting
    /// `scope`.
    pub fn tokens_for(&self, app: &AuthenticatedClient, scope: &str) -> grant::TokenResponse {
        let code = self.code(app, scope);
        grant::authorization_code(app, Some(&code), Some(CB), Some(VERIFIER), &self.grants())
            .unwrap()
    }

    /// A fresh authorization code of `app` granting `scope` (PAR → user step).
    #[allow(dead_code)] // reason: only core's state-unchanged property uses it
    pub fn code_for(&self, app: &AuthenticatedClient, scope: &str) -> String {
        self.code(app, scope)
    }

    /// The resource server `rs`, authenticated once.
    #[allow(dead_code)] // reason: only core's revocation property uses it
    pub fn rs_caller(&self) -> AuthenticatedClient {
        self.svc_with(&self.assertion_of("rs", "rs-caller"))
            .unwrap()
    }

    /// Introspection and revocation at `now` on a node with `cache`.
    #[allow(dead_code)] // reason: only core's revocation property uses it
    pub fn lifecycle<'c>(
        &'c self,
        now: UnixTime,
        cache: &'c heartgate_core::introspect::IntrospectionCache,
    ) -> heartgate_core::lifecycle::LifecycleContext<'c> {
        let mut ctx =
            heartgate_core::lifecycle::LifecycleContext::new(&self.issuer, self.store, now);
        ctx.cache = Some(cache);
        ctx
    }

    /// A token-endpoint context at `now`.
    #[allow(dead_code)] // reason: only core's revocation property uses it
    pub fn grant_context_at(&self, now: UnixTime) -> GrantContext<'_> {
        GrantContext::new(&self.issuer, self.store, RS, now)
    }

    fn grants(&self) -> GrantContext<'_> {
        GrantContext::new(&self.issuer, self.store, RS, NOW)
    }

    fn push(&self, app: &AuthenticatedClient, scope: &str) -> String {
        let mut p = Params::new();
        for (k, v) in [
            ("response_type", "code"),
            ("redirect_uri", CB),
            ("scope", scope),
            ("code_challenge_method", "S256"),
        ] {
            p.insert(k.into(), v.into());
        }
        p.insert(
            "code_challenge".into(),
            CodeChallenge::for_verifier(VERIFIER).as_str().into(),
        );
        let config = ParConfig {
            issuer: ISS.into(),
            lifetime: 60,
        };
        push(app, &p, &self.dir, &config, self.store, NOW, &NoAudit)
            .unwrap()
            .request_uri
    }

    fn code(&self, app: &AuthenticatedClient, scope: &str) -> String {
        let request_uri = self.push(app, scope);
        let approval = Approval {
            subject: "user-1".into(),
            auth_time: NOW,
            acr: None,
            granted_scope: ScopeSet::parse(scope).unwrap(),
            context: Map::from_iter([("patient".to_owned(), json!("123"))]),
        };
        complete(
            ISS,
            app.client_id(),
            &request_uri,
            Profile::Smart,
            &approval,
            self.store,
            NOW,
            &NoAudit,
        )
        .unwrap()
        .0
    }

    fn approved_auth_req_id(&self, svc: &AuthenticatedClient) -> String {
        let users = Users;
        let ctx = CibaContext::new(
            &self.ciba,
            self.store,
            &users,
            &self.dir,
            self.issuer.keys(),
            NOW,
        );
        let mut p = Params::new();
        p.insert("scope".into(), "openid user/Observation.rs".into());
        p.insert("login_hint".into(), "alice@clinic.example".into());
        p.insert("binding_message".into(), BINDING.into());
        let r = ciba::start(svc, &p, &ctx).unwrap();
        ciba::decide(
            &ctx,
            &r.request_ref(),
            "alice",
            Decision::Approve,
            Some(&binding_message_hash(BINDING)),
        )
        .unwrap();
        r.auth_req_id.expose().to_owned()
    }

    /// The CIBA poll client, authenticated once (the capability is reusable).
    #[allow(dead_code)] // reason: only core's CIBA interval property uses it
    pub fn ciba_client(&self) -> AuthenticatedClient {
        self.svc_with(&self.assertion("ciba-client")).unwrap()
    }

    /// A pending (undecided) CIBA request of `svc` for alice, made at the fixed time.
    #[allow(dead_code)] // reason: only core's CIBA interval property uses it
    pub fn pending_auth_req_id(&self, svc: &AuthenticatedClient) -> String {
        let users = Users;
        let ctx = CibaContext::new(
            &self.ciba,
            self.store,
            &users,
            &self.dir,
            self.issuer.keys(),
            NOW,
        );
        let mut p = Params::new();
        p.insert("scope".into(), "openid user/Observation.rs".into());
        p.insert("login_hint".into(), "alice@clinic.example".into());
        ciba::start(svc, &p, &ctx)
            .unwrap()
            .auth_req_id
            .expose()
            .to_owned()
    }

    /// One poll of `auth_req_id` by `svc` at `now`, and the enforced interval afterwards.
    #[allow(dead_code)] // reason: only core's CIBA interval property uses it
    pub fn poll(
        &self,
        svc: &AuthenticatedClient,
        auth_req_id: &str,
        now: UnixTime,
    ) -> (Result<(), GrantError>, Option<u32>) {
        let users = Users;
        let grants = GrantContext::new(&self.issuer, self.store, RS, now);
        let r = grant::ciba(svc, Some(auth_req_id), &users, &grants).map(|_| ());
        let ctx = CibaContext::new(
            &self.ciba,
            self.store,
            &users,
            &self.dir,
            self.issuer.keys(),
            now,
        );
        let state = ciba::poll_state(&ctx, &ciba::RequestRef::of(auth_req_id)).unwrap();
        (r, state.map(|s| s.interval))
    }

    /// Prepare `rounds` fresh values of `kind`, race [`RACERS`] redeemers on each.
    pub fn race(&self, kind: Kind, rounds: usize) -> RaceReport {
        let app = self.app();
        // The CIBA client authenticates once; the capability is reused by every racer.
        let svc = self.svc_with(&self.assertion("setup")).unwrap();
        let prepared: Vec<String> = (0..rounds)
            .map(|r| match kind {
                Kind::Code => self.code(&app, "patient/Observation.rs"),
                Kind::RequestUri => self.push(&app, "patient/Observation.rs"),
                Kind::Jti => self.assertion(&format!("race-{r}")),
                Kind::AuthReqId => self.approved_auth_req_id(&svc),
                Kind::RefreshToken => {
                    self.refresh_token_for("offline_access patient/Observation.rs")
                }
            })
            .collect();
        let grants = self.grants();
        let users = Users;
        race(rounds, |round| {
            let value = prepared[round].as_str();
            match kind {
                Kind::Code => {
                    match code::redeem(value, &app, Some(CB), Some(VERIFIER), self.store, NOW) {
                        Ok(_) => Outcome::Won,
                        Err(CodeError::Reused { .. }) => Outcome::Refused,
                        Err(_) => Outcome::Unexpected,
                    }
                }
                Kind::RequestUri => match par::consume(ISS, "app", value, self.store, NOW) {
                    Ok(_) => Outcome::Won,
                    Err(RequestUriError::Invalid) => Outcome::Refused,
                    Err(_) => Outcome::Unexpected,
                },
                Kind::Jti => match self.svc_with(value) {
                    Ok(_) => Outcome::Won,
                    Err(ClientAuthError::InvalidClient("assertion replayed")) => Outcome::Refused,
                    Err(_) => Outcome::Unexpected,
                },
                Kind::AuthReqId => match grant::ciba(&svc, Some(value), &users, &grants) {
                    Ok(_) => Outcome::Won,
                    Err(GrantError::InvalidGrant(_)) => Outcome::Refused,
                    Err(_) => Outcome::Unexpected,
                },
                Kind::RefreshToken => {
                    match grant::refresh_token(&app, Some(value), None, &grants) {
                        Ok(r) if r.refresh_token.is_some() => Outcome::Won,
                        Err(GrantError::InvalidGrant(_)) => Outcome::Refused,
                        _ => Outcome::Unexpected,
                    }
                }
            }
        })
    }
}
