//! PAR → user step → code → JARM → redemption, inside core (THREATS A1-A8, A12-A13, P12).
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use std::collections::HashMap;
use std::sync::Arc;

use heartgate_core::authorize::code::*;
use heartgate_core::authorize::par::*;
use heartgate_core::authorize::pkce::CodeChallenge;
use heartgate_core::client::*;
use heartgate_core::clock::UnixTime;
use heartgate_core::jose::*;
use heartgate_core::profile::Profile;
use heartgate_core::scope::ScopeSet;
use heartgate_core::store::{MemoryStore, Store};
use serde_json::{json, Map, Value};

const ISS: &str = "https://as.example";
const NOW: UnixTime = UnixTime(1_700_000_000);
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

mod common;
use common::Dir;

struct F {
    dir: Dir,
    store: MemoryStore,
    as_keys: KeyRing,
}

fn fixture() -> F {
    let mut m = HashMap::new();
    for id in ["app", "jarm"] {
        m.insert(
            id.to_owned(),
            Arc::new(
                ClientMetadata::from_json(
                    json!({"client_id": id, "profile": "smart", "redirect_uris": ["https://app.example/cb?tenant=1"],
                        "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"]})
                    .to_string()
                    .as_bytes(),
                )
                .unwrap()
                .validate()
                .unwrap(),
            ),
        );
    }
    F {
        dir: Dir(m),
        store: MemoryStore::new(),
        as_keys: KeyRing::new(SigningKey::generate(Algorithm::ES256).unwrap()),
    }
}

impl F {
    fn client(&self, id: &str) -> AuthenticatedClient {
        let e = Endpoints {
            issuer: ISS.into(),
            token: format!("{ISS}/token"),
            par: format!("{ISS}/par"),
        };
        authenticate(
            &ClientCredentials {
                client_id: Some(id),
                ..Default::default()
            },
            &self.dir,
            &e,
            &self.store,
            NOW,
            &heartgate_core::audit::NoAudit,
        )
        .unwrap()
    }

    fn push(&self, id: &str, mode: Option<&str>) -> String {
        let mut p = Params::new();
        p.insert("response_type".into(), "code".into());
        p.insert(
            "redirect_uri".into(),
            "https://app.example/cb?tenant=1".into(),
        );
        p.insert(
            "scope".into(),
            "openid launch/patient patient/Observation.rs".into(),
        );
        p.insert("state".into(), "st&ate=1".into());
        p.insert(
            "code_challenge".into(),
            CodeChallenge::for_verifier(VERIFIER).as_str().into(),
        );
        p.insert("code_challenge_method".into(), "S256".into());
        if let Some(m) = mode {
            p.insert("response_mode".into(), m.into());
        }
        push(
            &self.client(id),
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
        .request_uri
    }
}

fn approval(scope: &str) -> Approval {
    let mut context = Map::new();
    context.insert("patient".into(), json!("123"));
    Approval {
        subject: "user-1".into(),
        auth_time: NOW,
        acr: None,
        granted_scope: ScopeSet::parse(scope).unwrap(),
        context,
    }
}

fn query_param(url: &str, name: &str) -> Option<String> {
    // The fragment when there is one (fragment.jwt), else the query.
    let q = url
        .split_once('#')
        .map(|(_, f)| f)
        .or_else(|| url.split_once('?').map(|(_, q)| q))?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[test]
fn plain_response_carries_code_state_and_iss_and_keeps_the_registered_query() {
    let f = fixture();
    let ru = f.push("app", None);
    let (code, resp) = complete(
        ISS,
        "app",
        &ru,
        Profile::Smart,
        &approval("openid patient/Observation.rs"),
        &f.store,
        NOW,
        &heartgate_core::audit::NoAudit,
    )
    .unwrap();
    let Redirect::SeeOther(url) = resp.into_redirect(ISS, &f.as_keys, None, NOW).unwrap() else {
        panic!()
    };
    assert!(url.starts_with("https://app.example/cb?tenant=1&"));
    assert_eq!(query_param(&url, "code").as_deref(), Some(code.as_str()));
    assert_eq!(
        query_param(&url, "state").as_deref(),
        Some("st&ate=1"),
        "A8: state echoed exactly"
    );
    assert_eq!(query_param(&url, "iss").as_deref(), Some(ISS), "RFC 9207");
}

#[test]
fn a13_jarm_response_is_signed_with_iss_aud_exp_and_the_parameters() {
    let f = fixture();
    for (mode, sep) in [("jwt", '&'), ("query.jwt", '&'), ("fragment.jwt", '#')] {
        let ru = f.push("jarm", Some(mode));
        let (code, resp) = complete(
            ISS,
            "jarm",
            &ru,
            Profile::Smart,
            &approval("openid"),
            &f.store,
            NOW,
            &heartgate_core::audit::NoAudit,
        )
        .unwrap();
        let Redirect::SeeOther(url) = resp
            .into_redirect(ISS, &f.as_keys, Some(Algorithm::ES256), NOW)
            .unwrap()
        else {
            panic!()
        };
        assert!(url.contains(&format!("{sep}response=")), "{mode}: {url}");
        let jwt = query_param(&url, "response").unwrap();
        let v = Validation::new(
            AlgorithmSet::ALL,
            TypRule::OptionalOneOf(&["JWT"]),
            AudienceRule::Contains("jarm".into()),
        )
        .issuer(ISS)
        .max_lifetime(600);
        let claims = verify_jwt(&jwt, &**f.as_keys.load(), &v, NOW).unwrap();
        assert_eq!(claims.required_string("code").unwrap(), code);
        assert_eq!(claims.required_string("state").unwrap(), "st&ate=1");
        assert_eq!(
            claims.numeric_date("exp").unwrap(),
            Some(UnixTime(NOW.0 + JARM_LIFETIME))
        );
        assert!(
            query_param(&url, "code").is_none(),
            "{mode}: no bare code next to the JWT"
        );
    }
    let ru = f.push("jarm", Some("form_post.jwt"));
    let (_, resp) = complete(
        ISS,
        "jarm",
        &ru,
        Profile::Smart,
        &approval("openid"),
        &f.store,
        NOW,
        &heartgate_core::audit::NoAudit,
    )
    .unwrap();
    assert!(
        matches!(resp.into_redirect(ISS, &f.as_keys, None, NOW).unwrap(), Redirect::FormPost { action, .. } if action == "https://app.example/cb?tenant=1")
    );
}

#[test]
fn jarm_with_an_algorithm_the_as_does_not_sign_with_is_refused() {
    let f = fixture();
    let ru = f.push("jarm", Some("jwt"));
    let (_, resp) = complete(
        ISS,
        "jarm",
        &ru,
        Profile::Smart,
        &approval("openid"),
        &f.store,
        NOW,
        &heartgate_core::audit::NoAudit,
    )
    .unwrap();
    assert_eq!(
        resp.clone()
            .into_redirect(ISS, &f.as_keys, Some(Algorithm::PS256), NOW)
            .unwrap_err(),
        CodeError::JarmAlgorithm
    );
    // With a PS256 signer in the ring, the same response is signed with it (SPECS b.12).
    let ps = SigningKey::generate(Algorithm::PS256).unwrap();
    let ps_kid = ps.kid().to_owned();
    f.as_keys.add_signer(ps).unwrap();
    let Redirect::SeeOther(url) = resp
        .into_redirect(ISS, &f.as_keys, Some(Algorithm::PS256), NOW)
        .unwrap()
    else {
        panic!("redirect expected")
    };
    let jwt = query_param(&url, "response").unwrap();
    let jws = heartgate_core::jose::parse_compact(&jwt, 8192).unwrap();
    assert_eq!(jws.header().alg(), Algorithm::PS256);
    assert_eq!(jws.header().kid(), Some(ps_kid.as_str()));
    assert!(jws
        .verify(&*f.as_keys.snapshot(), AlgorithmSet::ALL)
        .is_ok());
}

#[test]
fn a13_error_responses_are_jwt_wrapped_too() {
    let f = fixture();
    let ru = f.push("jarm", Some("jwt"));
    let req = lookup(ISS, "jarm", &ru, &f.store, NOW).unwrap();
    let Redirect::SeeOther(url) = error_response(ISS, &req, "access_denied")
        .into_redirect(ISS, &f.as_keys, None, NOW)
        .unwrap()
    else {
        panic!()
    };
    assert!(query_param(&url, "error").is_none());
    let jwt = query_param(&url, "response").unwrap();
    let payload: Value =
        serde_json::from_slice(&b64::decode(jwt.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(payload["error"], "access_denied");
    assert_eq!(payload["aud"], "jarm");
}

#[test]
fn approval_may_not_widen_the_request_and_patient_scopes_need_a_patient() {
    let f = fixture();
    let ru = f.push("app", None);
    assert!(matches!(
        complete(
            ISS,
            "app",
            &ru,
            Profile::Smart,
            &approval("user/*.cruds"),
            &f.store,
            NOW,
            &heartgate_core::audit::NoAudit
        ),
        Err(CodeError::InvalidApproval(_))
    ));
    let ru = f.push("app", None);
    let mut a = approval("patient/Observation.rs");
    a.context.clear();
    assert!(matches!(
        complete(
            ISS,
            "app",
            &ru,
            Profile::Smart,
            &a,
            &f.store,
            NOW,
            &heartgate_core::audit::NoAudit
        ),
        Err(CodeError::InvalidApproval(_))
    ));
}

#[test]
fn p12_request_uri_is_consumed_by_completion() {
    let f = fixture();
    let ru = f.push("app", None);
    complete(
        ISS,
        "app",
        &ru,
        Profile::Smart,
        &approval("openid"),
        &f.store,
        NOW,
        &heartgate_core::audit::NoAudit,
    )
    .unwrap();
    assert_eq!(
        complete(
            ISS,
            "app",
            &ru,
            Profile::Smart,
            &approval("openid"),
            &f.store,
            NOW,
            &heartgate_core::audit::NoAudit
        )
        .unwrap_err(),
        CodeError::InvalidRequestUri
    );
}

fn issued(f: &F) -> String {
    let ru = f.push("app", None);
    complete(
        ISS,
        "app",
        &ru,
        Profile::Smart,
        &approval("openid patient/Observation.rs"),
        &f.store,
        NOW,
        &heartgate_core::audit::NoAudit,
    )
    .unwrap()
    .0
}

const REDIRECT: Option<&str> = Some("https://app.example/cb?tenant=1");

#[test]
fn code_redeems_once_and_reuse_names_the_grant_to_revoke() {
    let f = fixture();
    let code = issued(&f);
    let g = redeem(
        &code,
        &f.client("app"),
        REDIRECT,
        Some(VERIFIER),
        &f.store,
        NOW,
    )
    .unwrap();
    assert_eq!(g.record.subject, "user-1");
    assert_eq!(g.record.context["patient"], "123");
    let err = redeem(
        &code,
        &f.client("app"),
        REDIRECT,
        Some(VERIFIER),
        &f.store,
        UnixTime(NOW.0 + 1),
    )
    .unwrap_err();
    assert_eq!(
        err,
        CodeError::Reused {
            grant_id: g.record.grant_id.clone()
        },
        "A1"
    );
}

#[test]
fn a1_sixty_four_parallel_redemptions_give_one_success() {
    let f = fixture();
    let code = issued(&f);
    let client = f.client("app");
    let wins = std::thread::scope(|s| {
        let hs: Vec<_> = (0..64)
            .map(|_| {
                s.spawn(|| redeem(&code, &client, REDIRECT, Some(VERIFIER), &f.store, NOW).is_ok())
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .filter(|w| *w)
            .count()
    });
    assert_eq!(wins, 1);
}

#[test]
fn a2_code_expires_after_60s() {
    let f = fixture();
    let code = issued(&f);
    assert!(matches!(
        redeem(
            &code,
            &f.client("app"),
            REDIRECT,
            Some(VERIFIER),
            &f.store,
            UnixTime(NOW.0 + 60)
        ),
        Err(CodeError::InvalidGrant(_))
    ));
}

#[test]
fn a3_code_of_another_client_is_refused_and_not_consumed() {
    let f = fixture();
    let code = issued(&f);
    assert!(matches!(
        redeem(
            &code,
            &f.client("jarm"),
            REDIRECT,
            Some(VERIFIER),
            &f.store,
            NOW
        ),
        Err(CodeError::InvalidGrant(_))
    ));
    assert!(redeem(
        &code,
        &f.client("app"),
        REDIRECT,
        Some(VERIFIER),
        &f.store,
        NOW
    )
    .is_ok());
}

#[test]
fn a4_a5_a7_redirect_uri_and_verifier_must_match_and_failures_do_not_consume() {
    let f = fixture();
    let code = issued(&f);
    let before = f.store.snapshot(NOW).unwrap();
    for (redirect, verifier) in [
        (Some("https://app.example/cb"), Some(VERIFIER)),
        (None, Some(VERIFIER)),
        (REDIRECT, None),
        (
            REDIRECT,
            Some("attacker-verifier-attacker-verifier-attacker"),
        ),
        (REDIRECT, Some("short")),
    ] {
        assert!(
            matches!(
                redeem(&code, &f.client("app"), redirect, verifier, &f.store, NOW),
                Err(CodeError::InvalidGrant(_))
            ),
            "{redirect:?} {verifier:?}"
        );
        assert_eq!(
            f.store.snapshot(NOW).unwrap(),
            before,
            "a refused redemption changed the store"
        );
    }
    assert!(redeem(
        &code,
        &f.client("app"),
        REDIRECT,
        Some(VERIFIER),
        &f.store,
        NOW
    )
    .is_ok());
}

#[test]
fn unknown_codes_are_invalid_grant() {
    let f = fixture();
    for c in ["", "hgc_x", "garbage"] {
        assert!(matches!(
            redeem(c, &f.client("app"), REDIRECT, Some(VERIFIER), &f.store, NOW),
            Err(CodeError::InvalidGrant(_))
        ));
    }
}

#[test]
fn par_and_code_issuance_are_audited_without_the_code_or_the_user() {
    use heartgate_core::audit::{EventKind, MemoryAuditSink, Outcome};
    let f = fixture();
    let sink = MemoryAuditSink::new();
    let ru = f.push("app", None);
    let (code, _) = complete(
        ISS,
        "app",
        &ru,
        Profile::Smart,
        &approval("openid patient/Observation.rs"),
        &f.store,
        NOW,
        &sink,
    )
    .unwrap();
    // The request_uri is spent: a second completion is refused and audited as such.
    let _ = complete(
        ISS,
        "app",
        &ru,
        Profile::Smart,
        &approval("openid patient/Observation.rs"),
        &f.store,
        NOW,
        &sink,
    )
    .unwrap_err();
    let mut p = Params::new();
    p.insert("response_type".into(), "token".into());
    let _ = push(
        &f.client("app"),
        &p,
        &f.dir,
        &ParConfig {
            issuer: ISS.into(),
            lifetime: 60,
        },
        &f.store,
        NOW,
        &sink,
    )
    .unwrap_err();
    let ev = sink.events();
    let got: Vec<_> = ev.iter().map(|e| (e.kind, e.outcome, e.reason)).collect();
    assert_eq!(got[0], (EventKind::CodeIssued, Outcome::Success, "issued"));
    assert_eq!(
        got[1],
        (
            EventKind::CodeIssued,
            Outcome::Failure,
            "invalid_request_uri"
        )
    );
    assert_eq!(got[2].0, EventKind::PushedAuthorizationRequest);
    assert_eq!(got[2].1, Outcome::Failure);
    assert_eq!(
        ev[0].scope.as_deref(),
        Some("patient/Observation.rs openid")
    );
    let all = serde_json::to_string(&ev).unwrap();
    assert!(!all.contains(&code) && !all.contains(&ru) && !all.contains("user-1"));
}
