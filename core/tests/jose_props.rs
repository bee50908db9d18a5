//! Property tests (THREATS §4.2 items 1 and 2): sign/verify round trips where any single
//! flipped bit fails, and the time-claim acceptance rule with skew and lifetime caps.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

use std::sync::OnceLock;

use heartgate_core::clock::UnixTime;
use heartgate_core::jose::*;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn keys() -> &'static [SigningKey] {
    static KEYS: OnceLock<Vec<SigningKey>> = OnceLock::new();
    // One key per algorithm for the whole run: RSA generation is slow.
    KEYS.get_or_init(|| {
        Algorithm::ALL
            .iter()
            .map(|a| SigningKey::generate(*a).unwrap())
            .collect()
    })
}

fn policy() -> Validation {
    Validation::new(
        AlgorithmSet::ALL,
        TypRule::Required("at+jwt"),
        AudienceRule::Contains("rs".into()),
    )
}

const NOW: UnixTime = UnixTime(1_700_000_000);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Item 1: a round trip verifies, and flipping any one bit of any decoded segment
    /// makes verification fail.
    #[test]
    fn round_trip_and_single_bit_flips(
        key_index in 0usize..4,
        extra in proptest::collection::btree_map("[a-z]{1,8}", "[ -~]{0,16}", 0..5),
        segment in 0usize..3,
        bit in any::<prop::sample::Index>(),
    ) {
        let k = &keys()[key_index];
        let mut claims = Map::new();
        for (name, v) in &extra {
            claims.insert(format!("x_{name}"), Value::String(v.clone()));
        }
        claims.insert("aud".into(), json!("rs"));
        claims.insert("exp".into(), json!(NOW.0 + 60));
        let token = sign_jwt(k, Some("at+jwt"), &claims).unwrap();
        let ok = verify_jwt(&token, k.verifying_key(), &policy(), NOW).unwrap();
        prop_assert_eq!(ok.as_map(), &claims);

        let mut parts: Vec<Vec<u8>> = token.split('.').map(|p| b64::decode(p).unwrap()).collect();
        let seg = &mut parts[segment];
        let i = bit.index(seg.len() * 8);
        seg[i / 8] ^= 1 << (i % 8);
        let flipped: Vec<String> = parts.iter().map(b64::encode).collect();
        let flipped = flipped.join(".");
        prop_assert!(verify_jwt(&flipped, k.verifying_key(), &policy(), NOW).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Item 2: accept ⇔ now ≤ exp+skew ∧ nbf ≤ now+skew ∧ iat ≤ now+skew ∧
    /// exp − (iat or now) ≤ max_lifetime.
    #[test]
    fn time_boundaries(
        exp_off in -200i64..200,
        nbf_off in proptest::option::of(-200i64..200),
        iat_off in proptest::option::of(-200i64..200),
        leeway in 0u32..=60,
        max_lifetime in proptest::option::of(0u32..400),
        now_off in -5i64..5,
    ) {
        let base = NOW.0;
        let now = base + now_off;
        let exp = base + exp_off;
        let mut m = json!({"aud": "rs", "exp": exp});
        if let Some(n) = nbf_off { m["nbf"] = json!(base + n); }
        if let Some(i) = iat_off { m["iat"] = json!(base + i); }
        let mut v = policy().leeway(leeway);
        v.max_lifetime = max_lifetime;
        let got = validate_claims(&Claims::new(m.as_object().unwrap().clone()), &v, UnixTime(now));
        let l = i64::from(leeway);
        let want = now <= exp + l
            && nbf_off.is_none_or(|n| base + n <= now + l)
            && iat_off.is_none_or(|i| base + i <= now + l)
            && max_lifetime.is_none_or(|max| exp - iat_off.map_or(now, |i| base + i) <= i64::from(max));
        prop_assert_eq!(got.is_ok(), want, "{:?}", got);
    }
}
