#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code
//! Property tests of the JOSE layer (THREATS.md §4.2): 256 cases each by default
//! (`PROPTEST_CASES` raises it, e.g. to 10,000 nightly).
//!
//! 1. Sign/verify round trip for every algorithm with random claims; any single-bit flip in
//!    the header, payload or signature (in the token text or in the decoded bytes) fails.
//! 2. Time boundaries: `validate_claims` accepts exactly when
//!    `now <= exp + leeway && nbf <= now + leeway && iat <= now + leeway &&
//!    exp - (iat or now) <= max_lifetime`, with the typed error of the first failed check,
//!    and never panics, for any clock reading.
//! 5. Encoding canonicality: an accepted base64url string re-encodes to itself.

use std::sync::OnceLock;

use heartgate_core::clock::UnixTime;
use heartgate_core::jose::{
    b64, sign_jwt, validate_claims, verify_jwt, Algorithm, AlgorithmSet, AudienceRule, Claims,
    JoseError, JwkSet, SigningKey, TypRule, Validation, MAX_LEEWAY, MAX_NUMERIC_DATE,
};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value};

const NOW: i64 = 1_700_000_000;
const ISS: &str = "https://as.example";
const AUD: &str = "https://rs.example";

/// One key per algorithm per test run; the RSA algorithms (PS256, RS256, RS384) share one
/// generated key (RSA generation is slow), under distinct kids.
fn key(alg: Algorithm) -> &'static SigningKey {
    static ES256: OnceLock<SigningKey> = OnceLock::new();
    static ES384: OnceLock<SigningKey> = OnceLock::new();
    static EDDSA: OnceLock<SigningKey> = OnceLock::new();
    static PS256: OnceLock<SigningKey> = OnceLock::new();
    static RS256: OnceLock<SigningKey> = OnceLock::new();
    static RS384: OnceLock<SigningKey> = OnceLock::new();
    let rsa_for = |alg: Algorithm| {
        let ps = key(Algorithm::PS256);
        SigningKey::from_pkcs8_der(alg, &ps.to_pkcs8_der())
            .unwrap()
            .with_kid(format!(
                "{}-{}",
                alg.as_str().to_ascii_lowercase(),
                ps.kid()
            ))
            .unwrap()
    };
    match alg {
        Algorithm::ES256 => ES256.get_or_init(|| SigningKey::generate(alg).unwrap()),
        Algorithm::ES384 => ES384.get_or_init(|| SigningKey::generate(alg).unwrap()),
        Algorithm::EdDSA => EDDSA.get_or_init(|| SigningKey::generate(alg).unwrap()),
        Algorithm::PS256 => PS256.get_or_init(|| SigningKey::generate(alg).unwrap()),
        Algorithm::RS256 => RS256.get_or_init(|| rsa_for(alg)),
        Algorithm::RS384 => RS384.get_or_init(|| rsa_for(alg)),
        other => panic!("no test key for {other}"),
    }
}

fn all_keys() -> &'static JwkSet {
    static SET: OnceLock<JwkSet> = OnceLock::new();
    SET.get_or_init(|| {
        JwkSet::new(
            Algorithm::ALL
                .iter()
                .map(|a| key(*a).verifying_key().clone())
                .collect(),
        )
        .unwrap()
    })
}

fn access_token_rules() -> Validation {
    Validation::new(
        AlgorithmSet::ALL,
        TypRule::Required("at+jwt"),
        AudienceRule::Contains(AUD.into()),
    )
    .issuer(ISS)
}

fn verify(token: &str) -> Result<Claims, JoseError> {
    verify_jwt(token, all_keys(), &access_token_rules(), UnixTime(NOW)).map(|v| v.into_inner())
}

// ------------------------------------------------------------------------------------------
// 1. Round trip and single-bit flips
// ------------------------------------------------------------------------------------------

fn claim_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
        Just(Value::Null),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

prop_compose! {
    /// A valid access-token claim set with random subject, lifetime and private claims.
    fn claim_sets()(
        sub in "\\PC{1,32}",
        jti in "[A-Za-z0-9_-]{8,32}",
        lifetime in 1i64..=86_400,
        age in 0i64..=3_600,
        extra in prop::collection::btree_map("x_[a-z0-9_]{1,10}", claim_value(), 0..6),
    ) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("iss".into(), ISS.into());
        m.insert("aud".into(), AUD.into());
        m.insert("sub".into(), sub.into());
        m.insert("jti".into(), jti.into());
        m.insert("iat".into(), (NOW - age).into());
        m.insert("exp".into(), (NOW + lifetime).into());
        m.extend(extra);
        m
    }
}

/// Flip bit `bit` (0..=6, so the text stays ASCII) of one character of segment `seg`.
fn flip_in_text(token: &str, seg: usize, pos: Index, bit: u8) -> String {
    let mut parts: Vec<Vec<u8>> = token.split('.').map(|p| p.as_bytes().to_vec()).collect();
    let p = &mut parts[seg];
    let i = pos.index(p.len());
    p[i] ^= 1 << bit;
    String::from_utf8(parts.join(&b'.')).unwrap()
}

/// Flip one bit of the decoded bytes of segment `seg` and re-encode canonically.
fn flip_in_bytes(token: &str, seg: usize, pos: Index) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut bytes = b64::decode(&parts[seg]).unwrap();
    let bit = pos.index(bytes.len() * 8);
    bytes[bit / 8] ^= 1 << (bit % 8);
    parts[seg] = b64::encode(bytes);
    parts.join(".")
}

fn round_trip_and_flips(
    alg: Algorithm,
    claims: &Map<String, Value>,
    seg: usize,
    pos: Index,
    bit: u8,
) -> Result<(), TestCaseError> {
    let k = key(alg);
    let token = sign_jwt(k, Some("at+jwt"), claims).unwrap();
    let verified = verify(&token);
    prop_assert!(verified.is_ok(), "{alg:?}: {verified:?}");
    prop_assert_eq!(&verified.unwrap().into_map(), claims);

    let text = flip_in_text(&token, seg, pos, bit);
    prop_assert_ne!(&text, &token);
    let r = verify(&text);
    prop_assert!(r.is_err(), "{alg:?}: text flip in segment {seg} accepted");

    let bytes = flip_in_bytes(&token, seg, pos);
    prop_assert_ne!(&bytes, &token);
    let r = verify(&bytes);
    prop_assert!(r.is_err(), "{alg:?}: byte flip in segment {seg} accepted");
    if seg > 0 {
        // Payload and signature changes can only be caught by the signature.
        prop_assert_eq!(r.unwrap_err(), JoseError::BadSignature);
    }
    Ok(())
}

proptest! {
    #[test]
    fn es256_round_trip_and_any_bit_flip_fails(
        claims in claim_sets(), seg in 0usize..3, pos in any::<Index>(), bit in 0u8..7,
    ) {
        round_trip_and_flips(Algorithm::ES256, &claims, seg, pos, bit)?;
    }

    #[test]
    fn eddsa_round_trip_and_any_bit_flip_fails(
        claims in claim_sets(), seg in 0usize..3, pos in any::<Index>(), bit in 0u8..7,
    ) {
        round_trip_and_flips(Algorithm::EdDSA, &claims, seg, pos, bit)?;
    }

    #[test]
    fn ps256_round_trip_and_any_bit_flip_fails(
        claims in claim_sets(), seg in 0usize..3, pos in any::<Index>(), bit in 0u8..7,
    ) {
        round_trip_and_flips(Algorithm::PS256, &claims, seg, pos, bit)?;
    }

    #[test]
    fn rs256_round_trip_and_any_bit_flip_fails(
        claims in claim_sets(), seg in 0usize..3, pos in any::<Index>(), bit in 0u8..7,
    ) {
        round_trip_and_flips(Algorithm::RS256, &claims, seg, pos, bit)?;
    }

    #[test]
    fn es384_round_trip_and_any_bit_flip_fails(
        claims in claim_sets(), seg in 0usize..3, pos in any::<Index>(), bit in 0u8..7,
    ) {
        round_trip_and_flips(Algorithm::ES384, &claims, seg, pos, bit)?;
    }

    #[test]
    fn rs384_round_trip_and_any_bit_flip_fails(
        claims in claim_sets(), seg in 0usize..3, pos in any::<Index>(), bit in 0u8..7,
    ) {
        round_trip_and_flips(Algorithm::RS384, &claims, seg, pos, bit)?;
    }
}

// ------------------------------------------------------------------------------------------
// 2. Time boundaries
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct TimeCase {
    now: i64,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
    leeway: u32,
    max_lifetime: Option<u32>,
}

/// The specification, in i128 so that it cannot overflow whatever the inputs.
fn expected(c: &TimeCase) -> Result<(), JoseError> {
    let in_range = |t: i64| (0..=MAX_NUMERIC_DATE).contains(&t);
    let exp = match c.exp {
        None => return Err(JoseError::MissingClaim("exp")),
        Some(t) if !in_range(t) => return Err(JoseError::InvalidClaim("exp")),
        Some(t) => i128::from(t),
    };
    if c.nbf.is_some_and(|t| !in_range(t)) {
        return Err(JoseError::InvalidClaim("nbf"));
    }
    if c.iat.is_some_and(|t| !in_range(t)) {
        return Err(JoseError::InvalidClaim("iat"));
    }
    let now = i128::from(c.now);
    let leeway = i128::from(c.leeway.min(MAX_LEEWAY));
    if now > exp + leeway {
        return Err(JoseError::Expired);
    }
    if c.nbf.is_some_and(|nbf| i128::from(nbf) > now + leeway) {
        return Err(JoseError::NotYetValid);
    }
    if c.iat.is_some_and(|iat| i128::from(iat) > now + leeway) {
        return Err(JoseError::IssuedInFuture);
    }
    if let Some(max) = c.max_lifetime {
        let start = c.iat.map_or(now, i128::from);
        if exp - start > i128::from(max) {
            return Err(JoseError::LifetimeTooLong);
        }
    }
    Ok(())
}

fn actual(c: &TimeCase) -> Result<(), JoseError> {
    let mut m = Map::new();
    for (name, v) in [("exp", c.exp), ("nbf", c.nbf), ("iat", c.iat)] {
        if let Some(v) = v {
            m.insert(name.into(), v.into());
        }
    }
    let mut v = Validation::new(
        AlgorithmSet::ALL,
        TypRule::OptionalOneOf(&[]),
        AudienceRule::MustBeAbsent,
    )
    .leeway(c.leeway);
    v.max_lifetime = c.max_lifetime;
    validate_claims(&Claims::new(m), &v, UnixTime(c.now))
}

/// A claim time near `now` (within a few leeways of it), anywhere in range, or out of range.
fn time_near(now: i64) -> impl Strategy<Value = Option<i64>> {
    prop_oneof![
        6 => (-150i64..=150).prop_map(move |d| Some(now.saturating_add(d))),
        2 => (0..=MAX_NUMERIC_DATE).prop_map(Some),
        1 => any::<i64>().prop_map(Some),
        2 => Just(None),
    ]
}

fn lifetime_cap() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![
        Just(None),
        (0u32..=400).prop_map(Some),
        any::<u32>().prop_map(Some),
    ]
}

prop_compose! {
    /// A clock reading in the range of real dates, with claims clustered around it so that
    /// every boundary (± leeway, ± 1 s) is hit often.
    fn near_cases()(now in 0i64..=4_000_000_000)(
        now in Just(now),
        exp in time_near(now),
        nbf in time_near(now),
        iat in time_near(now),
        leeway in 0u32..=MAX_LEEWAY,
        max_lifetime in lifetime_cap(),
    ) -> TimeCase {
        TimeCase { now, exp, nbf, iat, leeway, max_lifetime }
    }
}

/// Any clock reading, with the extremes of the range well represented (a uniform i64 almost
/// never lands within 2^38 of `i64::MIN`, where `exp - now` would overflow).
fn clock_reading() -> impl Strategy<Value = i64> {
    const EDGE: i64 = 1 << 40;
    prop_oneof![
        any::<i64>(),
        Just(i64::MIN),
        Just(i64::MAX),
        i64::MIN..i64::MIN + EDGE,
        i64::MAX - EDGE..=i64::MAX,
        -EDGE..EDGE,
    ]
}

prop_compose! {
    /// Any clock reading at all (a faulty clock), any leeway a caller might configure.
    fn wild_cases()(
        now in clock_reading(),
        exp in prop::option::of(prop_oneof![any::<i64>(), 0..=MAX_NUMERIC_DATE]),
        nbf in prop::option::of(0..=MAX_NUMERIC_DATE),
        iat in prop::option::of(0..=MAX_NUMERIC_DATE),
        leeway in any::<u32>(),
        max_lifetime in lifetime_cap(),
    ) -> TimeCase {
        TimeCase { now, exp, nbf, iat, leeway, max_lifetime }
    }
}

proptest! {
    #[test]
    fn time_claims_are_accepted_exactly_within_their_bounds(c in near_cases()) {
        prop_assert_eq!(actual(&c), expected(&c), "{:?}", c);
    }

    #[test]
    fn time_checks_never_panic_for_any_clock_reading(c in wild_cases()) {
        prop_assert_eq!(actual(&c), expected(&c), "{:?}", c);
    }

    #[test]
    fn exp_boundary_is_exactly_now_minus_leeway(
        now in 100i64..=4_000_000_000, leeway in 0u32..=MAX_LEEWAY,
    ) {
        let at = TimeCase {
            now, exp: Some(now - i64::from(leeway)), nbf: None, iat: None, leeway,
            max_lifetime: None,
        };
        prop_assert_eq!(actual(&at), Ok(()));
        let past = TimeCase { exp: Some(now - i64::from(leeway) - 1), ..at.clone() };
        prop_assert_eq!(actual(&past), Err(JoseError::Expired));
        let nbf = TimeCase { exp: Some(MAX_NUMERIC_DATE), nbf: Some(now + i64::from(leeway)), ..at.clone() };
        prop_assert_eq!(actual(&nbf), Ok(()));
        let nbf = TimeCase { nbf: Some(now + i64::from(leeway) + 1), ..nbf };
        prop_assert_eq!(actual(&nbf), Err(JoseError::NotYetValid));
        let iat = TimeCase { exp: Some(MAX_NUMERIC_DATE), iat: Some(now + i64::from(leeway)), ..at.clone() };
        prop_assert_eq!(actual(&iat), Ok(()));
        let iat = TimeCase { iat: Some(now + i64::from(leeway) + 1), ..iat };
        prop_assert_eq!(actual(&iat), Err(JoseError::IssuedInFuture));
    }
}

// ------------------------------------------------------------------------------------------
// 5. Encoding canonicality
// ------------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn accepted_base64url_re_encodes_to_itself(s in "[A-Za-z0-9_\\-]{0,200}") {
        if let Ok(bytes) = b64::decode(&s) {
            prop_assert_eq!(b64::encode(bytes), s);
        }
    }

    #[test]
    fn arbitrary_text_is_accepted_only_if_canonical(s in "\\PC{0,64}") {
        if let Ok(bytes) = b64::decode(&s) {
            prop_assert_eq!(b64::encode(bytes), s);
        }
    }

    #[test]
    fn accepted_token_segments_are_canonical(claims in claim_sets(), alg_i in 0usize..Algorithm::ALL.len()) {
        let token = sign_jwt(key(Algorithm::ALL[alg_i]), Some("at+jwt"), &claims).unwrap();
        prop_assert!(verify(&token).is_ok());
        for seg in token.split('.') {
            prop_assert_eq!(b64::encode(b64::decode(seg).unwrap()), seg);
        }
    }
}
