//! Fuzz target bodies (THREATS §4.1), one plain `pub fn name(data: &[u8])` per target.
//!
//! `fuzz/fuzz_targets/<name>.rs` calls these under libFuzzer, and
//! `core/tests/fuzz_corpus.rs` replays the committed corpus through them on stable. Each
//! function is its own oracle: besides "no panic, no abort" it asserts a property of the
//! code under test and panics when it is violated. The `assert!`s and `panic!`s here are
//! the oracle, not error handling.
//!
//! What it never does: I/O. Keys are generated once per process (so a token that
//! verifies must have been signed in this run), time is the fixed [`NOW`], state lives in
//! a fresh [`MemoryStore`] per input.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use ring::digest;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Map, Value};

use crate::audit::NoAudit;
use crate::authorize::par::{self, ParConfig, REQUEST_URI_PREFIX};
use crate::ciba::{
    CibaConfig, CibaContext, CibaUsers, UnknownUserPolicy, UserCodeCheck, UserStatus,
    UsersUnavailable,
};
use crate::client::{
    authenticate, forbidden_ip, AuthMethod, AuthenticatedClient, ClientAuthError,
    ClientCredentials, ClientDirectory, ClientMetadata, DeliveryMode, Endpoints, GrantType,
    Registrar, RegistrarConfig, StoreClientDirectory, ValidatedClient, JWT_BEARER_ASSERTION_TYPE,
    REGISTRATION_TOKEN_PREFIX,
};
use crate::clock::UnixTime;
use crate::error::ToWire;
use crate::form::{parse_form, FormError, MAX_PARAMS};
use crate::grant::{self, GrantContext};
use crate::introspect::{CacheConfig, IntrospectionCache};
use crate::jose::{
    parse_compact, parse_jwk, sign_jwt, validate_claims, verify_jwt, Algorithm, AlgorithmSet,
    AudienceRule, Claims, JoseError, JwkSet, JwkSetOptions, KeyRing, SigningKey, TypRule,
    Validation, VerifyingKey, ACCESS_TOKEN_MAX_LEN,
};
use crate::lifecycle::{self, LifecycleContext, Revoked};
use crate::mtls::{
    certificate_public_key, match_tls_client_auth, parse_client_cert_header, CertificateFacts,
    Confirmation, SubjectDn, TlsClientAuthRule, X5tS256, MAX_CLIENT_CERT_HEADER_LEN,
};
use crate::scope::{Scope, ScopeSet};
use crate::store::{MemoryStore, Namespace, Store};
use crate::token::record::{decode, encode};
use crate::token::{
    check_wrapper_against_record, AccessTokenGrant, AccessTokenValidator, RecordKey, RecordKind,
    RefreshTokenGrant, RevokedJtis, TokenError, TokenFormat, TokenHash, TokenIssuer, TokenRecord,
    ValidatedToken, ACCESS_TOKEN_TYP, OPAQUE_PREFIX, OPAQUE_RANDOM_BYTES, RECORD_VERSION,
    WRAPPER_REF_CLAIM, WRAPPER_TOKEN_TYP,
};

/// The issuer of the fuzzing fixture.
pub const ISS: &str = "https://as.example";
/// The resource server (access-token audience) of the fixture.
pub const RS: &str = "https://fhir.example";
/// The fixed time of every target.
pub const NOW: UnixTime = UnixTime(1_700_000_000);

/// JWK members that make a key private or symmetric (J33).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Reads structure out of the fuzzer's bytes; past the end everything is zero.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn i64(&mut self) -> i64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.byte();
        }
        i64::from_le_bytes(b)
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }

    fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// Registered clients; their keys are the inline `jwks`.
struct Directory(HashMap<String, Arc<ValidatedClient>>);

impl ClientDirectory for Directory {
    fn client(&self, id: &str) -> Option<Arc<ValidatedClient>> {
        self.0.get(id).cloned()
    }
    fn keys(&self, c: &ValidatedClient) -> Option<Arc<JwkSet>> {
        c.shared_jwks()
    }
}

/// Keys, clients and an issuer, made once per process.
struct Fixture {
    /// The ES256 and EdDSA keys of `jwt_verify` (its PS256 key is [`rsa`]).
    es256: SigningKey,
    eddsa: SigningKey,
    /// Their public keys.
    fast_keys: Vec<VerifyingKey>,
    /// Client keys by client id.
    client_keys: HashMap<&'static str, SigningKey>,
    /// A key no client registered (C9).
    stranger: SigningKey,
    dir: Directory,
    /// Authenticated clients, for the endpoints that come after client authentication.
    authed: HashMap<&'static str, AuthenticatedClient>,
    issuer: TokenIssuer,
}

fn key(alg: Algorithm) -> SigningKey {
    match SigningKey::generate(alg) {
        Ok(k) => k,
        Err(e) => panic!("fixture: key generation failed: {e}"),
    }
}

fn client(v: &Value) -> Arc<ValidatedClient> {
    let md = match ClientMetadata::from_json(v.to_string().as_bytes()) {
        Ok(m) => m,
        Err(e) => panic!("fixture: client metadata refused: {e:?}"),
    };
    match md.validate() {
        Ok(c) => Arc::new(c),
        Err(e) => panic!("fixture: client metadata invalid: {e:?}"),
    }
}

fn endpoints() -> Endpoints {
    Endpoints {
        issuer: ISS.into(),
        token: format!("{ISS}/token"),
        par: format!("{ISS}/par"),
    }
}

fn sign(key: &SigningKey, typ: Option<&str>, claims: &Map<String, Value>) -> String {
    match sign_jwt(key, typ, claims) {
        Ok(t) => t,
        Err(e) => panic!("fixture: signing failed: {e}"),
    }
}

fn build_fixture() -> Fixture {
    let (es256, eddsa) = (key(Algorithm::ES256), key(Algorithm::EdDSA));
    let fast_keys = vec![es256.verifying_key().clone(), eddsa.verifying_key().clone()];
    let mut client_keys = HashMap::new();
    for id in ["ms", "heart", "backend"] {
        client_keys.insert(id, key(Algorithm::ES256));
    }
    let jwks = |id: &str| json!({"keys": [client_keys[id].verifying_key().to_jwk()]});
    let mut m = HashMap::new();
    m.insert(
        "ms".to_owned(),
        client(&json!({"client_id": "ms", "profile": "fapi2-message-signing",
        "redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "private_key_jwt",
        "jwks": jwks("ms"), "require_pushed_authorization_requests": true,
        "tls_client_certificate_bound_access_tokens": true, "request_object_signing_alg": "ES256",
        "authorization_signed_response_alg": "ES256", "scope": "openid patient/*.rs launch/patient"})),
    );
    m.insert(
        "heart".to_owned(),
        client(&json!({"client_id": "heart", "profile": "heart",
        "redirect_uris": ["https://heart.example/cb"], "token_endpoint_auth_method": "private_key_jwt",
        "jwks": jwks("heart")})),
    );
    m.insert(
        "backend".to_owned(),
        client(&json!({"client_id": "backend", "profile": "smart-backend",
        "token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"],
        "jwks": jwks("backend"), "scope": "system/Observation.rs system/Patient.r"})),
    );
    m.insert(
        "app".to_owned(),
        client(&json!({"client_id": "app", "profile": "smart",
        "redirect_uris": ["https://app.example/cb", "http://127.0.0.1/cb"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"]})),
    );
    let dir = Directory(m);
    let mut authed = HashMap::new();
    for id in ["ms", "heart", "backend", "app"] {
        let assertion;
        let creds = if id == "app" {
            ClientCredentials {
                client_id: Some(id),
                ..Default::default()
            }
        } else {
            let claims = json!({"iss": id, "sub": id, "aud": ISS, "exp": NOW.0 + 60,
                "iat": NOW.0, "jti": "fixture"});
            assertion = sign(&client_keys[id], None, as_object(&claims));
            ClientCredentials {
                client_assertion_type: Some(JWT_BEARER_ASSERTION_TYPE),
                client_assertion: Some(&assertion),
                ..Default::default()
            }
        };
        let store = MemoryStore::new();
        match authenticate(&creds, &dir, &endpoints(), &store, NOW, &NoAudit) {
            Ok(c) => {
                authed.insert(id, c);
            }
            Err(e) => panic!("fixture: {id} does not authenticate: {e}"),
        }
    }
    let issuer = TokenIssuer::new(ISS, Arc::new(KeyRing::new(key(Algorithm::ES256))));
    Fixture {
        es256,
        eddsa,
        fast_keys,
        client_keys,
        stranger: key(Algorithm::ES256),
        dir,
        authed,
        issuer,
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(build_fixture)
}

/// A throwaway RSA-2048 key used only by `jwt_verify`, fixed because generating one under
/// coverage instrumentation takes about 20 s, longer than a CI smoke run. The differential
/// oracle does not depend on the key being fresh: a verified token must equal the token
/// signed in the same execution, and the fuzzer never sees a signature to reuse.
const FUZZ_PS256_PKCS8_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDWBvhD07qC3CLR\n\
x1c+xy50RZ1fcGtxjLtmypT5526X/Y4nhijA3OD4E/FAsbScX64n1PdE+Q8+ac7X\n\
WI1BzPRL0fej/KCsKGhY6rCf7jvUfnSIydKSzbM7gs9m1iHizh/HfFKcvuNHvotJ\n\
jmwlH9P7EpRa1qd3mR+/LaYnTuWodh0XLJN2Wgx8zTCOe5UGO3Cm4y90W2lKCMCR\n\
4cJm5Dd93fvQOFzAGxZ+mc9klrcmvMY8c97df8fzzWicuKXlrC093EwianFIXs3X\n\
xQndu8qGwff3hP+mIjAXKVCZRsTNRZxQlidT+h7dQyJ3Iethn0I/V9lAVTC3yE0y\n\
zSl8mNUXAgMBAAECggEAJ1ZpnCHWxoWKes8uOHIoliNTbP6/KMQqj5aNci840wO9\n\
9ILCi8wtJzuXHIJtBU7KtjR87Dbwt9J/u3HhqKXwgt0JLKFasLnOkAU2yHZjlcdW\n\
SOv7YZMgLcB5uVeDK+ohyisODhRBtuaNOExOkTY74opELTwF1MQWoy9TOidUq7UP\n\
0OW3iR/0M/W8ANIq2Rb7IzpDso23RtSH5e6jYW87V/hsIYihQlhTgytJMecoZKEr\n\
bsRWUMnuXgmkiK4uTAs0oYjKq+g0Ghn3a2OutZgt0Bsg1D1dQueT0ozw3F7sxljL\n\
rUR5bulK/Ql4IDPKCbAQ9e4Psl8YbK1+TNukw2KZpQKBgQDq2Kjs4PMbAKTgZ25i\n\
8c4V7BDs6G627BIhUaWy7u3AcM4IPDkiLspV8TwTdoQjQk03fCLTIwMgZDenvFs+\n\
28GBjngWvqpDbNUcK5KBuLV4nfcZ2TriUXExu++zgNRysQIpASG/qUeMevdvl2m4\n\
RikVnIFvIaAqXQTExLrCDwy1DQKBgQDpTj2XquONRPyWGtPc3IaDSUUchMZe+xw8\n\
DfMoJvHjyVL7AcMLnu/HZUxiVcHafOQbO7cGf2NvUO6A3e1GAdcwVD1zJVrzvEYL\n\
zElwr7OFbjql2r6BVy5u4FYHzIaSTybVRglZv6iYhN077eLkLM/xXLwiAAs4PVSa\n\
y6YhGhnxswKBgGAV8Vep2g2MP+lIqFN3V7iEc5BasSHKiMh1HXSOaVw5SzL3YPDp\n\
cAOlxcy4yuuaLvmqopz8UEUqe9L3L+YSB6Q4ZE36CLO5jaAO+8xzhFwrVXSP+pWq\n\
eMO+fx5UcZfTcGzSd7pxSkLh9OcFbk3k9t5OwG51tZBfqpnPXBIWEj7pAoGBANaB\n\
eV/ZXx6kLxhT0jdfCs3qsABok3sAphURPl/MbtpgYEsoc4xbtVo/aNuAvZuE+LWR\n\
UdZHicTvRFp3sZCMYK2uxlD4J4exszVlvqA863Hix0l2tXF2Ftsap/7DrXcYDzxI\n\
CJDcBsc0YbSYI+Rmz0m7Wb5pC+fJe+BXHYeR2AjBAoGBAKqAIXMDs+FbwrDrE1eg\n\
1tDtIUraoTPc7wgIRgOrDFSIIYzgs0a/b3Q0iN0jEDTq+2jm3D8Pf3XwmkVTtnj+\n\
z65JiihoeceP5kFFi1t2JpYJXXHTs4uOB1ZfJkY0vT38tiXtEeDKAeTtygQYPb2K\n\
LmnhkhDhFD0LOT+7qUKBebyH\n\
-----END PRIVATE KEY-----\n\
";

/// The PS256 key of `jwt_verify` and all three of its public keys.
fn rsa() -> &'static (SigningKey, Vec<VerifyingKey>) {
    static R: OnceLock<(SigningKey, Vec<VerifyingKey>)> = OnceLock::new();
    R.get_or_init(|| {
        let ps256 = match SigningKey::from_pkcs8_pem(Algorithm::PS256, FUZZ_PS256_PKCS8_PEM) {
            Ok(k) => k,
            Err(e) => panic!("fixture: the PS256 key does not load: {e}"),
        };
        let mut all = fixture().fast_keys.clone();
        all.push(ps256.verifying_key().clone());
        (ps256, all)
    })
}

fn as_object(v: &Value) -> &Map<String, Value> {
    match v.as_object() {
        Some(m) => m,
        None => panic!("fixture: not a JSON object"),
    }
}

fn snapshot(store: &MemoryStore) -> Vec<crate::store::SnapshotEntry> {
    match store.snapshot(NOW) {
        Ok(s) => s,
        Err(e) => panic!("memory store snapshot failed: {e}"),
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, b).as_ref());
    out
}

// ---------------------------------------------------------------------------------------
// JOSE

/// `jws_compact` ★: raw bytes as a compact JWS (J1, J9-J14, J18, J29).
///
/// Oracle: a token over the size limit is `TooLarge`; anything but exactly two dots is
/// refused (J13); a parsed header never names a key by reference, a critical or
/// unencoded-payload extension or a nested token; and nothing verifies with this run's
/// keys (the input was not signed by them).
pub fn jws_compact(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let r = parse_compact(s, ACCESS_TOKEN_MAX_LEN);
    if s.len() > ACCESS_TOKEN_MAX_LEN {
        assert!(matches!(r, Err(JoseError::TooLarge)), "J18: {r:?}");
        return;
    }
    let dots = s.bytes().filter(|&b| b == b'.').count();
    let Ok(jws) = r else {
        return;
    };
    assert_eq!(dots, 2, "J13: a token with {dots} dots parsed");
    let header_b64 = s.split('.').next().unwrap_or_default();
    let header = crate::jose::b64::decode(header_b64)
        .ok()
        .and_then(|h| serde_json::from_slice::<Map<String, Value>>(&h).ok());
    let Some(header) = header else {
        panic!("J12/J14: a header that is not strict base64url JSON parsed");
    };
    for refused in [
        "crit", "b64", "jku", "x5u", "jwk", "x5c", "cty", "enc", "zip",
    ] {
        assert!(
            !header.contains_key(refused),
            "J7-J10/J29: header member {refused} accepted"
        );
    }
    assert!(
        matches!(header.get("alg"), Some(Value::String(a)) if a == jws.header().alg().as_str()),
        "J1/J3: the parsed alg is not the header's alg"
    );
    let f = fixture();
    let all = AlgorithmSet::of(&Algorithm::ALL);
    assert!(
        jws.verify(&f.fast_keys, all).is_err(),
        "a JWS not signed in this run verified"
    );
}

/// The JWT claims every `jwt_verify` token starts from.
fn base_claims() -> Map<String, Value> {
    let v = json!({"iss": ISS, "aud": RS, "exp": NOW.0 + 300, "iat": NOW.0, "jti": "fuzz",
        "sub": "user", "client_id": "app", "scope": "patient/*.rs"});
    as_object(&v).clone()
}

/// `jwt_verify` ★: mutations of a valid ES256 / PS256 / EdDSA token (J1-J4, J11-J16).
///
/// Input: key selector, typ flag, extra claims (JSON object) merged into a valid claim
/// set, then a list of mutations (bit flips, byte edits, truncation, a replaced header
/// or signature segment). Oracle (differential, THREATS §4.1): the untouched token
/// verifies when the extra claims are plain scalars under unregistered names, and a
/// verified token is byte-identical to the one our signer produced in this run.
pub fn jwt_verify(data: &[u8]) {
    let f = fixture();
    let (ps256, jwt_keys) = rsa();
    let mut u = Cursor(data);
    let key = match u.byte() % 3 {
        0 => &f.es256,
        1 => ps256,
        _ => &f.eddsa,
    };
    let flags = u.byte();
    let extra_len = usize::from(u.u16() % 1024);
    let extra = u.take(extra_len);
    let mut claims = base_claims();
    let mut plain = true;
    if let Ok(Value::Object(extra)) = serde_json::from_slice::<Value>(extra) {
        for (k, v) in extra {
            plain &= !claims.contains_key(&k)
                && !matches!(k.as_str(), "nbf")
                && matches!(v, Value::String(_) | Value::Bool(_) | Value::Null);
            claims.insert(k, v);
        }
    }
    let typ = (flags & 1 == 0).then_some("at+jwt");
    let token = sign(key, typ, &claims);
    let v = Validation::new(
        AlgorithmSet::of(&[Algorithm::ES256, Algorithm::PS256, Algorithm::EdDSA]),
        TypRule::Required("at+jwt"),
        AudienceRule::Contains(RS.into()),
    )
    .issuer(ISS)
    .max_lifetime(3600);
    let original = verify_jwt(&token, jwt_keys, &v, NOW);
    if typ.is_some() && plain {
        assert!(
            original.is_ok(),
            "our own token did not verify: {original:?}"
        );
    }
    let mut t = token.clone().into_bytes();
    for _ in 0..u.byte() % 8 {
        let op = u.byte();
        let pos = usize::from(u.u16());
        let len = t.len().max(1);
        match op % 7 {
            0 => {
                let bit = u.byte() % 8;
                if let Some(b) = t.get_mut(pos % len) {
                    *b ^= 1 << bit;
                }
            }
            1 => {
                let x = u.byte();
                if let Some(b) = t.get_mut(pos % len) {
                    *b = x;
                }
            }
            2 => {
                let x = u.byte();
                t.insert(pos % (t.len() + 1), x);
            }
            3 => {
                if !t.is_empty() {
                    t.remove(pos % len);
                }
            }
            4 => t.truncate(pos % len),
            // Replace a whole segment (header, payload or signature) with the base64url
            // of fuzzer bytes: alg/kid confusion (J1-J5), claim edits without re-signing,
            // DER or short signatures (J15).
            _ => {
                let n = usize::from(u.byte());
                let seg = crate::jose::b64::encode(u.take(n));
                let s = String::from_utf8_lossy(&t).into_owned();
                let mut parts: Vec<String> = s.split('.').map(str::to_owned).collect();
                let i = usize::from(op % 3);
                if let Some(p) = parts.get_mut(i) {
                    *p = seg;
                }
                t = parts.join(".").into_bytes();
            }
        }
    }
    let Ok(mutated) = String::from_utf8(t) else {
        return;
    };
    if let Ok(verified) = verify_jwt(&mutated, jwt_keys, &v, NOW) {
        // J16: an ES256 (r, n-s) variant would also verify; no mutation here computes
        // one, so any other accepted change is a forgery.
        assert_eq!(
            mutated, token,
            "a token that is not the one we signed verified"
        );
        assert_eq!(verified.as_map(), &claims, "verified claims differ");
    }
}

/// `jwk_jwks` ★: JWK and JWK Set JSON (J17, J33, J34).
///
/// Oracle: private or symmetric members are never accepted as client keys, key ids in an
/// accepted set are unique, and an accepted set or key round-trips through its published
/// form (which carries no private member).
pub fn jwk_jwks(data: &[u8]) {
    let raw: Option<Map<String, Value>> = serde_json::from_slice(data).ok();
    let private = |m: &Map<String, Value>| {
        PRIVATE_MEMBERS.iter().any(|p| m.contains_key(*p))
            || m.get("kty").and_then(Value::as_str) == Some("oct")
    };
    for opts in [
        JwkSetOptions::default(),
        JwkSetOptions {
            rsa_alg_when_absent: Some(Algorithm::PS256),
        },
    ] {
        if let Ok(set) = JwkSet::from_json(data, &opts) {
            if let Some(Value::Array(keys)) = raw.as_ref().and_then(|d| d.get("keys")) {
                for k in keys.iter().filter_map(Value::as_object) {
                    assert!(
                        !private(k),
                        "J33: a JWKS with a private or symmetric key was accepted"
                    );
                }
            }
            let kids: std::collections::HashSet<&str> =
                set.keys().iter().map(VerifyingKey::kid).collect();
            assert_eq!(kids.len(), set.keys().len(), "J34: duplicate kid accepted");
            let published = set.to_json();
            let doc: Value = match serde_json::from_str(&published) {
                Ok(d) => d,
                Err(e) => panic!("published JWKS is not JSON: {e}"),
            };
            for k in doc["keys"].as_array().into_iter().flatten() {
                assert!(
                    !k.as_object().is_some_and(private),
                    "J33: our published JWKS carries a private member"
                );
            }
            match JwkSet::from_json(published.as_bytes(), &JwkSetOptions::default()) {
                Ok(again) => assert_eq!(again.keys(), set.keys(), "JWKS round trip differs"),
                Err(e) => panic!("our published JWKS does not parse: {e}"),
            }
        }
        if let Ok(k) = parse_jwk(data, &opts) {
            assert!(
                !raw.as_ref().is_some_and(private),
                "J33: a private or symmetric JWK was accepted"
            );
            let published = Value::Object(k.to_jwk()).to_string();
            match parse_jwk(published.as_bytes(), &JwkSetOptions::default()) {
                Ok(again) => assert_eq!(again, k, "JWK round trip differs"),
                Err(e) => panic!("our published JWK does not parse: {e}"),
            }
        }
    }
}

/// `jwt_claims`: a claim set validated under several policies at a fuzzed time
/// (J20-J24, J26, J27).
///
/// Oracle: an accepted claim set satisfies, recomputed here in `i128`, `now ≤ exp +
/// leeway`, `nbf ≤ now + leeway`, `iat ≤ now + leeway`, the lifetime cap, exact `iss`, and
/// an `aud` that is a string or an array of strings naming the audience.
pub fn jwt_claims(data: &[u8]) {
    let mut u = Cursor(data);
    let sel = u.byte();
    let now = match sel % 4 {
        0 => NOW.0,
        1 => NOW.0 + i64::from(u.u16()) - 32768,
        _ => u.i64(),
    };
    let Ok(claims) = Claims::from_json(u.rest()) else {
        return;
    };
    let algs = AlgorithmSet::of(&[Algorithm::ES256]);
    let typ = TypRule::OptionalOneOf(&["JWT"]);
    let policies = [
        Validation::new(algs, typ, AudienceRule::Contains(RS.into()))
            .issuer(ISS)
            .max_lifetime(3600),
        Validation::new(algs, typ, AudienceRule::ExactString(ISS.into()))
            .leeway(u32::from(sel))
            .require(&["jti", "sub"]),
        Validation::new(
            algs,
            typ,
            AudienceRule::AnyOf(vec![ISS.into(), format!("{ISS}/token")]),
        )
        .max_lifetime(60)
        .leeway(u32::MAX),
        Validation::new(algs, typ, AudienceRule::MustBeAbsent),
        Validation::new(algs, typ, AudienceRule::Present).require(&["nbf"]),
    ];
    let m = claims.as_map();
    for v in &policies {
        if validate_claims(&claims, v, UnixTime(now)).is_err() {
            continue;
        }
        let leeway = i128::from(v.leeway.min(crate::jose::MAX_LEEWAY));
        let date = |name: &'static str| -> Option<i128> {
            match claims.numeric_date(name) {
                Ok(d) => d.map(|d| i128::from(d.secs())),
                Err(_) => panic!("J20: {name} accepted but not a NumericDate"),
            }
        };
        for name in ["exp", "nbf", "iat"] {
            if let Some(x) = m.get(name) {
                assert!(x.is_number(), "J20: non-numeric {name} accepted");
            }
        }
        let now = i128::from(now);
        let Some(exp) = date("exp") else {
            panic!("J21: accepted without exp");
        };
        assert!(now <= exp + leeway, "J22: expired accepted");
        if let Some(nbf) = date("nbf") {
            assert!(nbf <= now + leeway, "J22: nbf in the future accepted");
        }
        if let Some(iat) = date("iat") {
            assert!(iat <= now + leeway, "J22: iat in the future accepted");
        }
        if let Some(max) = v.max_lifetime {
            let start = date("iat").unwrap_or(now);
            assert!(exp - start <= i128::from(max), "J24: lifetime cap exceeded");
        }
        if let Some(iss) = &v.issuer {
            assert_eq!(
                m.get("iss").and_then(Value::as_str),
                Some(iss.as_str()),
                "J26"
            );
        }
        let aud = m.get("aud");
        let names: Option<Vec<&str>> = match aud {
            None => None,
            Some(Value::String(s)) => Some(vec![s.as_str()]),
            Some(Value::Array(a)) => {
                let n: Vec<&str> = a.iter().filter_map(Value::as_str).collect();
                assert_eq!(
                    n.len(),
                    a.len(),
                    "J27: aud array with a non-string accepted"
                );
                Some(n)
            }
            Some(other) => panic!("J27: aud {other} accepted"),
        };
        match &v.audience {
            AudienceRule::MustBeAbsent => assert!(names.is_none(), "J27: aud accepted"),
            AudienceRule::Present => assert!(names.is_some(), "J27: no aud accepted"),
            AudienceRule::Contains(e) => {
                assert!(names.is_some_and(|n| n.contains(&e.as_str())), "J27")
            }
            AudienceRule::AnyOf(es) => assert!(
                names.is_some_and(|n| es.iter().any(|e| n.contains(&e.as_str()))),
                "J27"
            ),
            AudienceRule::ExactString(e) => {
                assert!(matches!(aud, Some(Value::String(s)) if s == e), "C2")
            }
        }
        for r in &v.required {
            assert!(
                m.contains_key(*r),
                "required claim {r} missing but accepted"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Endpoints: forms, PAR and request objects, client assertions, token and introspection

/// `form_params` ★: an `application/x-www-form-urlencoded` body or query (H6, H7, H8).
///
/// Oracle: a repeated name among the first [`MAX_PARAMS`] pairs is always `Repeated`,
/// more pairs than that is `TooMany`, `Encoding` (H8) only with an escape, a non-UTF-8
/// byte or NUL in the input, everything else parses; accepted parameters serialize and
/// parse back to the same map.
pub fn form_params(data: &[u8]) {
    let r = parse_form(data);
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(data)
        .take(MAX_PARAMS + 1)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let head = &pairs[..pairs.len().min(MAX_PARAMS)];
    let names: std::collections::BTreeSet<&str> = head.iter().map(|(k, _)| k.as_str()).collect();
    let repeated = names.len() != head.len();
    match &r {
        Err(FormError::Repeated) => assert!(repeated, "H6: Repeated without a repeat"),
        Err(FormError::Encoding) => assert!(
            data.contains(&b'%') || std::str::from_utf8(data).is_err() || data.contains(&0),
            "H8: Encoding without an escape, a non-UTF-8 byte or NUL"
        ),
        Err(FormError::TooMany) => {
            assert!(
                !repeated && pairs.len() > MAX_PARAMS,
                "TooMany at {}",
                pairs.len()
            )
        }
        Ok(p) => {
            assert!(!repeated, "H6: a repeated parameter was accepted");
            assert!(pairs.len() <= MAX_PARAMS, "too many parameters accepted");
            assert_eq!(p.len(), pairs.len());
            let again = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(p.iter())
                .finish();
            assert_eq!(
                parse_form(again.as_bytes()).as_ref(),
                Ok(p),
                "form round trip"
            );
        }
    }
}

/// Split `data` at the first newline: (form, rest).
fn split_line(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    }
}

/// `authorize_request` ★: a pushed authorization request (RFC 9126) with an optional
/// request object (RFC 9101), and the same parameters at the authorization endpoint
/// (P3-P11, P15, P17, P21, A8).
///
/// Input: client selector, flags, then the form body; after a newline, request object
/// claims (JSON) that are signed with the client's key (or, by flag, a stranger's) and
/// sent as `request`. Oracle: errors are typed (every one maps to a 400 code); a refused
/// push or front-channel request stores nothing; an accepted push stores one record
/// under a `request_uri` that only its client can look up and consume once.
pub fn authorize_request(data: &[u8]) {
    let f = fixture();
    let mut u = Cursor(data);
    let id = ["ms", "heart", "app"][usize::from(u.byte() % 3)];
    let flags = u.byte();
    let (form, object) = split_line(u.rest());
    let Ok(mut params) = parse_form(form) else {
        return;
    };
    if let Some(object) = object {
        if let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(object) {
            let key = match (flags & 1, f.client_keys.get(id)) {
                (0, Some(k)) => k,
                _ => &f.stranger,
            };
            let typ = (flags & 2 == 0).then_some("oauth-authz-req+jwt");
            params.insert("request".into(), sign(key, typ, &claims));
        }
    }
    let config = ParConfig {
        issuer: ISS.into(),
        lifetime: 60,
    };
    let client = &f.authed[id];
    let store = MemoryStore::new();
    match par::push(client, &params, &f.dir, &config, &store, NOW, &NoAudit) {
        Err(e) => {
            assert_eq!(e.to_wire().status, 400, "{e:?}");
            assert!(
                snapshot(&store).is_empty(),
                "P6: a refused push stored state"
            );
        }
        Ok(resp) => {
            assert!(resp.request_uri.starts_with(REQUEST_URI_PREFIX), "P18");
            assert_eq!(snapshot(&store).len(), 1, "one record per push");
            assert!(
                par::lookup(ISS, "other", &resp.request_uri, &store, NOW).is_err(),
                "P15: another client looked the request up"
            );
            assert!(
                par::lookup("https://other.example", id, &resp.request_uri, &store, NOW).is_err(),
                "P20: another issuer looked the request up"
            );
            let req = match par::consume(ISS, id, &resp.request_uri, &store, NOW) {
                Ok(r) => r,
                Err(e) => panic!("a pushed request cannot be consumed: {e}"),
            };
            assert_eq!(req.client_id, id, "P15");
            if let Some(state) = params.get("state").filter(|s| !s.is_empty()) {
                if !req.signed {
                    assert_eq!(req.state.as_deref(), Some(state.as_str()), "A8: state");
                }
            }
            assert!(
                par::consume(ISS, id, &resp.request_uri, &store, NOW).is_err(),
                "P12: a request_uri was consumed twice"
            );
        }
    }
    let store = MemoryStore::new();
    if let Err(e) = par::front_channel(&params, &f.dir, &config, &store, NOW, &NoAudit) {
        if let par::FrontChannelError::ErrorPage(e) = &e {
            assert_eq!(e.to_wire().status, 400, "{e:?}");
        }
        assert!(
            snapshot(&store).is_empty(),
            "a refused authorization request stored state"
        );
    }
}

/// `client_assertion` ★: `private_key_jwt` client authentication (C1-C9, C12, C18).
///
/// Input: named client, flags (own or stranger's key, `client_id` sent or not, wrong
/// assertion type, a secret too, raw unsigned assertion), then the assertion claims
/// (JSON) or raw assertion text. Oracle: a refused assertion records no `jti` (the store
/// is unchanged); an accepted one is from the client named in `iss` and `sub`, records
/// exactly one `jti`, and is refused when replayed (C1).
pub fn client_assertion(data: &[u8]) {
    let f = fixture();
    let mut u = Cursor(data);
    let id = ["ms", "heart", "backend", "app", "nobody"][usize::from(u.byte() % 5)];
    let flags = u.byte();
    let rest = u.rest();
    let assertion = if flags & 16 != 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(rest) else {
            return;
        };
        let key = match (flags & 1, f.client_keys.get(id)) {
            (0, Some(k)) => k,
            _ => &f.stranger,
        };
        sign(key, (flags & 32 != 0).then_some("JWT"), &claims)
    };
    let creds = ClientCredentials {
        client_id: (flags & 2 != 0).then_some(id),
        client_assertion_type: Some(if flags & 4 == 0 {
            JWT_BEARER_ASSERTION_TYPE
        } else {
            "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"
        }),
        client_assertion: Some(&assertion),
        client_secret: (flags & 8 != 0).then_some("secret"),
        ..Default::default()
    };
    let store = MemoryStore::new();
    match authenticate(&creds, &f.dir, &endpoints(), &store, NOW, &NoAudit) {
        Err(e) => {
            assert!(matches!(e.to_wire().status, 400 | 401), "{e:?}");
            assert!(
                snapshot(&store).is_empty(),
                "C1: a refused assertion recorded its jti"
            );
        }
        Ok(c) => {
            assert_eq!(c.method(), AuthMethod::PrivateKeyJwt);
            assert_eq!(c.client_id(), id, "C5/C9: authenticated as another client");
            assert!(flags & 16 == 0, "an unsigned assertion authenticated");
            assert!(flags & 8 == 0, "C8: two methods authenticated");
            assert!(
                flags & 4 == 0,
                "C7: a wrong client_assertion_type authenticated"
            );
            assert!(
                f.client_keys.contains_key(id) && flags & 1 == 0,
                "C9: a stranger's key authenticated"
            );
            let snap = snapshot(&store);
            assert_eq!(snap.len(), 1, "exactly one jti per assertion");
            assert!(matches!(snap[0].0, Namespace::Jti));
            let again = authenticate(&creds, &f.dir, &endpoints(), &store, NOW, &NoAudit);
            assert!(
                matches!(again, Err(ClientAuthError::InvalidClient(_))),
                "C1: a replayed assertion authenticated"
            );
        }
    }
}

/// `token_request`: token, introspection and revocation request bodies, from the form
/// to the core grant, introspection and revocation functions, the way the server
/// dispatches them (I1-I7, V1-V5, A1-A5, R1-R6).
///
/// Input: endpoint and client selector, then the form body. Client authentication reads
/// the form like the server (and falls back to the selected client when it fails); `$AT` in a value is replaced by an access token issued to `backend`
/// for this input. Oracle: errors are typed with a 4xx status; a refused token request
/// leaves the store unchanged; introspection of anything but the issued token is
/// inactive, and the issued token is active only for its audience's owner.
pub fn token_request(data: &[u8]) {
    let f = fixture();
    let mut u = Cursor(data);
    let sel = u.byte();
    let endpoint = sel % 3;
    let fallback = ["app", "backend", "heart", "ms"][usize::from(sel / 3 % 4)];
    let Ok(mut form) = parse_form(u.rest()) else {
        return;
    };
    let store = MemoryStore::new();
    let ctx = GrantContext::new(&f.issuer, &store, RS, NOW);
    let issued = match grant::client_credentials(
        &f.authed["backend"],
        Some("system/Observation.rs"),
        &ctx,
    ) {
        Ok(t) => t,
        Err(e) => panic!("fixture: client_credentials failed: {e:?}"),
    };
    let at = issued.access_token.expose().to_owned();
    for v in form.values_mut() {
        if v.contains("$AT") {
            *v = v.replace("$AT", &at);
        }
    }
    let get = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let creds = ClientCredentials {
        client_id: get("client_id"),
        client_assertion_type: get("client_assertion_type"),
        client_assertion: get("client_assertion"),
        client_secret: get("client_secret"),
        ..Default::default()
    };
    let client = match authenticate(&creds, &f.dir, &endpoints(), &store, NOW, &NoAudit) {
        Ok(c) => c,
        Err(_) => f.authed[fallback].clone(),
    };
    let before = snapshot(&store);
    match endpoint {
        0 => {
            let r = match get("grant_type") {
                Some("authorization_code") => grant::authorization_code(
                    &client,
                    get("code"),
                    get("redirect_uri"),
                    get("code_verifier"),
                    &ctx,
                ),
                Some("refresh_token") => {
                    grant::refresh_token(&client, get("refresh_token"), get("scope"), &ctx)
                }
                Some("client_credentials") => {
                    grant::client_credentials(&client, get("scope"), &ctx)
                }
                _ => return,
            };
            if let Err(e) = r {
                let w = e.to_wire();
                assert!((400..500).contains(&w.status), "{e:?} → {}", w.status);
                assert_eq!(
                    snapshot(&store),
                    before,
                    "a refused token request changed the store"
                );
            }
        }
        1 => {
            let lctx = LifecycleContext::new(&f.issuer, &store, NOW);
            let token = form.get("token").map(String::as_str);
            match lifecycle::introspect(&client, token, &lctx) {
                Ok(resp) => {
                    if resp.is_active() {
                        assert_eq!(token, Some(at.as_str()), "I2: an unknown token is active");
                    }
                }
                Err(e) => assert!((400..500).contains(&e.to_wire().status), "{e:?}"),
            }
        }
        _ => {
            let lctx = LifecycleContext::new(&f.issuer, &store, NOW);
            if let Err(e) = lifecycle::revoke(&client, form.get("token").map(String::as_str), &lctx)
            {
                assert!((400..500).contains(&e.to_wire().status), "{e:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Stored records

fn record_round_trip<T: Serialize + DeserializeOwned>(data: &[u8], what: &str) {
    match decode::<T>(data) {
        Ok(v) => {
            let bytes = match encode(&v) {
                Ok(b) => b,
                Err(e) => panic!("S12: a decoded {what} does not encode: {e}"),
            };
            let again = match decode::<T>(&bytes) {
                Ok(a) => a,
                Err(e) => panic!("S12: a re-encoded {what} does not decode: {e}"),
            };
            let twice = match encode(&again) {
                Ok(b) => b,
                Err(e) => panic!("S12: {what}: {e}"),
            };
            assert_eq!(bytes, twice, "{what}: encoding is not a fixed point");
        }
        Err(e) => {
            if let Some(&v) = data.first() {
                if v != RECORD_VERSION && data.len() <= 256 * 1024 {
                    assert_eq!(
                        e,
                        TokenError::UnknownRecordVersion(v),
                        "S12: unknown version not typed"
                    );
                }
            }
        }
    }
}

/// Record bytes as the flows store them (pushed request, authorization code, access and
/// refresh token records), to seed `cbor_record`.
pub fn seed_records() -> Vec<Vec<u8>> {
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let f = fixture();
    let store = MemoryStore::new();
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut keep = |store: &MemoryStore| {
        for (_, _, v) in snapshot(store) {
            if !out.contains(&v) {
                out.push(v);
            }
        }
    };
    let challenge = crate::authorize::pkce::CodeChallenge::for_verifier(VERIFIER);
    let params: par::Params = [
        ("response_type", "code"),
        ("client_id", "app"),
        ("redirect_uri", "https://app.example/cb"),
        ("scope", "openid offline_access patient/*.rs"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("state", "s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = ParConfig {
        issuer: ISS.into(),
        lifetime: 60,
    };
    let app = &f.authed["app"];
    let pushed = par::push(app, &params, &f.dir, &config, &store, NOW, &NoAudit);
    if let Ok(pushed) = pushed {
        keep(&store);
        let approval = crate::authorize::code::Approval {
            subject: "user".into(),
            auth_time: NOW,
            acr: None,
            granted_scope: ScopeSet::parse("openid offline_access patient/*.rs")
                .unwrap_or_default(),
            context: as_object(&json!({"patient": "123"})).clone(),
        };
        let profile = app.client().metadata().profile;
        let done = crate::authorize::code::complete(
            ISS,
            "app",
            &pushed.request_uri,
            profile,
            &approval,
            &store,
            NOW,
            &NoAudit,
        );
        keep(&store);
        if let Ok((code, _)) = done {
            let ctx = GrantContext::new(&f.issuer, &store, RS, NOW);
            let r = grant::authorization_code(
                app,
                Some(&code),
                Some("https://app.example/cb"),
                Some(VERIFIER),
                &ctx,
            );
            if let Err(e) = r {
                panic!("seed: code grant failed: {e:?}");
            }
            keep(&store);
        } else {
            panic!("seed: complete failed: {done:?}");
        }
    } else {
        panic!("seed: push failed: {pushed:?}");
    }
    let ctx = GrantContext::new(&f.issuer, &store, RS, NOW);
    let _ = grant::client_credentials(&f.authed["backend"], Some("system/Patient.r"), &ctx);
    keep(&store);
    out
}

/// `cbor_record`: stored record bytes (version byte + CBOR) of every record type:
/// access token, refresh token, pushed request, authorization code, CIBA request and poll
/// state, cache invalidation (S12).
///
/// Oracle: an unknown version byte is the typed `UnknownRecordVersion` error; a decoded
/// record re-encodes to bytes that decode again and re-encode identically.
pub fn cbor_record(data: &[u8]) {
    record_round_trip::<crate::token::TokenRecord>(data, "token record");
    record_round_trip::<crate::token::RefreshRecord>(data, "refresh record");
    record_round_trip::<par::AuthorizationRequest>(data, "pushed request");
    record_round_trip::<crate::authorize::code::CodeRecord>(data, "code record");
    record_round_trip::<crate::ciba::CibaRecord>(data, "CIBA record");
    record_round_trip::<crate::ciba::PollState>(data, "CIBA poll state");
    if let Some(inv) = crate::introspect::Invalidation::from_bytes(data) {
        let b = inv.to_bytes();
        assert_eq!(
            crate::introspect::Invalidation::from_bytes(&b).map(|i| i.to_bytes()),
            Some(b),
            "invalidation round trip"
        );
    }
}

// ---------------------------------------------------------------------------------------
// mTLS and scopes

/// `client_cert_header`: RFC 9440 `Client-Cert` header values (C17).
///
/// Oracle: an accepted value is within the size limit, is one DER certificate whose
/// canonical re-encoding parses to the same bytes, and its `x5t#S256` is SHA-256 of the
/// DER.
pub fn client_cert_header(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(der) = parse_client_cert_header(s) else {
        return;
    };
    assert!(
        s.len() <= MAX_CLIENT_CERT_HEADER_LEN,
        "C17: oversized header accepted"
    );
    use base64::Engine as _;
    let canonical = format!(
        ":{}:",
        base64::engine::general_purpose::STANDARD.encode(&der)
    );
    assert_eq!(
        parse_client_cert_header(&canonical).as_ref(),
        Ok(&der),
        "canonical re-encoding differs"
    );
    assert_eq!(
        s.trim_matches([' ', '\t']),
        canonical,
        "C17: a non-canonical header was accepted"
    );
    match X5tS256::of_certificate(&der) {
        Ok(t) => assert_eq!(t.0, sha256(&der), "x5t#S256 is not SHA-256 of the DER"),
        Err(e) => panic!("an accepted header's certificate has no thumbprint: {e}"),
    }
}

/// `x509_binding`: a DER certificate → `x5t#S256`, public key, subject and SAN matching
/// against a registered `tls_client_auth_*` value (C14, C16).
///
/// Input: rule kind, rule length, rule text, then the DER. Oracle: the thumbprint is
/// SHA-256 of the DER and round-trips through base64url; a match is only reported for a
/// registered value that validates, with the certificate's own thumbprint; a DN that
/// parses and matches is matched again (determinism).
pub fn x509_binding(data: &[u8]) {
    let mut u = Cursor(data);
    let kind = u.byte();
    let n = usize::from(u.byte());
    let rule_text = String::from_utf8_lossy(u.take(n)).into_owned();
    let der = u.rest();
    let thumb = X5tS256::of_certificate(der);
    if let Ok(t) = &thumb {
        assert_eq!(t.0, sha256(der), "x5t#S256 is not SHA-256 of the DER");
        assert_eq!(
            X5tS256::from_base64url(&t.to_base64url()).as_ref(),
            Ok(t),
            "x5t#S256 base64url round trip"
        );
    }
    let _ = certificate_public_key(der);
    if let Ok(facts) = CertificateFacts::of(der) {
        assert!(
            facts.describe(der),
            "facts do not describe their certificate"
        );
        if let Ok(t) = &thumb {
            assert_eq!(&facts.thumbprint(), t);
        }
    }
    let _ = SubjectDn::parse(&rule_text);
    let rule = match kind % 5 {
        0 => TlsClientAuthRule::SubjectDn(rule_text),
        1 => TlsClientAuthRule::SanDns(rule_text),
        2 => TlsClientAuthRule::SanUri(rule_text),
        3 => TlsClientAuthRule::SanEmail(rule_text),
        _ => match rule_text.parse() {
            Ok(ip) => TlsClientAuthRule::SanIp(ip),
            Err(_) => return,
        },
    };
    let valid = rule.validate().is_ok();
    if let Ok(m) = match_tls_client_auth(der, &rule) {
        assert!(valid, "C14: an invalid registered value matched");
        match &thumb {
            Ok(t) => assert_eq!(&m.thumbprint(), t, "matched with another thumbprint"),
            Err(_) => panic!("a certificate without a thumbprint matched"),
        }
        assert!(
            match_tls_client_auth(der, &rule).is_ok(),
            "C14: matching is not deterministic"
        );
    }
}

/// `smart_scope`: a scope string in the SMART v1/v2 grammar.
///
/// Oracle: parse → serialize → parse is a fixed point (same set, same string); every
/// scope round-trips on its own; a set covers itself and narrowing to itself is itself.
pub fn smart_scope(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(set) = ScopeSet::parse(s) else {
        return;
    };
    let out = set.to_string();
    match ScopeSet::parse(&out) {
        Ok(again) => {
            assert_eq!(again, set, "scope parse → serialize → parse differs");
            assert_eq!(
                again.to_string(),
                out,
                "scope serialization is not a fixed point"
            );
        }
        Err(e) => panic!("serialized scopes {out:?} do not parse: {e:?}"),
    }
    for sc in set.iter() {
        let text = sc.to_string();
        match text.parse::<Scope>() {
            Ok(again) => assert_eq!(&again, sc, "scope {text:?} round trip differs"),
            Err(e) => panic!("serialized scope {text:?} does not parse: {e:?}"),
        }
    }
    assert!(set.covers(&set), "a scope set does not cover itself");
    match set.narrow(Some(s)) {
        Ok(n) => assert_eq!(n, set, "narrowing to itself changed the set"),
        Err(e) => panic!("narrowing to itself failed: {e:?}"),
    }
}

/// The raw URI with the port of an `http://` authority removed, and its host, computed
/// independently of `redirect_uri` for the oracle below.
fn loopback_without_port(raw: &str) -> Option<(String, String)> {
    let rest = raw.strip_prefix("http://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (auth, tail) = rest.split_at(end);
    let host = match auth.rfind(':') {
        Some(i) if auth[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &auth[..i],
        _ => auth,
    };
    Some((format!("http://{host}{tail}"), host.to_owned()))
}

/// `redirect_uri_match`: a (registered, presented) redirect URI pair (P10, A9-A11).
///
/// Input: the registered URI, a newline, the presented one. Oracle: a match is the
/// registered URI byte for byte, or (RFC 8252 §7.3) an `http` URI on the IP literal
/// `127.0.0.1` or `[::1]` that equals the registered one byte for byte once the port is
/// removed from both.
pub fn redirect_uri_match(data: &[u8]) {
    use crate::authorize::redirect_uri::{
        match_registered, validate_for_registration, PrivateUseSchemes,
    };
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (registered, presented) = s.split_once('\n').unwrap_or((s, s));
    let valid = validate_for_registration(registered, PrivateUseSchemes::Allowed).is_ok();
    let list = [registered.to_owned()];
    let Ok(matched) = match_registered(&list, presented) else {
        assert!(
            registered != presented,
            "A9: a byte-equal redirect_uri was refused"
        );
        return;
    };
    assert_eq!(matched, registered);
    if matched == presented || !valid {
        return;
    }
    let (Some((r, host)), Some((p, _))) = (
        loopback_without_port(registered),
        loopback_without_port(presented),
    ) else {
        panic!("A10/A11: {presented:?} matched {registered:?} without being loopback http");
    };
    assert_eq!(p, r, "A10/A11: more than the port differs");
    let literal = host
        .parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| ip.is_loopback())
        || host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .and_then(|h| h.parse::<std::net::Ipv6Addr>().ok())
            .is_some_and(|ip| ip.is_loopback());
    assert!(literal, "A11: loopback port rule applied to host {host:?}");
}

// ---------------------------------------------------------------------------------------
// Token formats: wrapper and opaque tokens

/// A token the fixture issuer produced in this run, with the record stored for it.
struct Issued {
    token: String,
    /// The client it was issued to.
    client: &'static str,
    /// The wrapped reference (wrapper tokens only).
    reference: Option<String>,
    store_key: Vec<u8>,
    record: TokenRecord,
}

/// The confirmation of a certificate that exists only as a thumbprint here.
fn confirmation(seed: &str) -> Confirmation {
    Confirmation {
        x5t_s256: crate::jose::b64::encode(sha256(seed.as_bytes())),
    }
}

fn issue(format: TokenFormat, client: &'static str, cnf: Option<Confirmation>) -> Issued {
    let f = fixture();
    let grant = AccessTokenGrant {
        client_id: client.into(),
        sub: "user".into(),
        pairwise_sub: (client == "ms").then(|| "pw-user".to_owned()),
        scope: "openid patient/*.rs".into(),
        aud: vec![RS.into()],
        cnf,
        lifetime: 300,
        format,
        auth_time: Some(NOW),
        acr: None,
        family_id: None,
        context: as_object(&json!({"patient": "123"})).clone(),
    };
    let t = match f.issuer.issue_access_token(&grant, NOW) {
        Ok(t) => t,
        Err(e) => panic!("fixture: issuing a {format:?} token failed: {e}"),
    };
    let token = t.token.expose().to_owned();
    let reference = (format == TokenFormat::Wrapper).then(|| {
        match jwt_payload(&token)
            .as_ref()
            .and_then(|p| p.get(WRAPPER_REF_CLAIM))
            .and_then(Value::as_str)
        {
            Some(r) => r.to_owned(),
            None => panic!("fixture: a wrapper token without a reference"),
        }
    });
    Issued {
        token,
        client,
        reference,
        store_key: t.record_key.store_key(),
        record: t.record,
    }
}

/// The payload of a compact JWS, decoded here independently of `jose`.
fn jwt_payload(token: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let _header = parts.next()?;
    let payload = crate::jose::b64::decode(parts.next()?).ok()?;
    serde_json::from_slice(&payload).ok()
}

fn put_access_record(store: &MemoryStore, key: &[u8], record: &TokenRecord, until: UnixTime) {
    let bytes = match record.to_bytes() {
        Ok(b) => b,
        Err(e) => panic!("fixture: a token record does not encode: {e}"),
    };
    if let Err(e) = store.put(Namespace::AccessToken, key, &bytes, until) {
        panic!("memory store put failed: {e}");
    }
}

/// Wrapper tokens of three clients: a public one without binding, two certificate-bound.
fn wrappers() -> &'static [Issued; 3] {
    static W: OnceLock<[Issued; 3]> = OnceLock::new();
    W.get_or_init(|| {
        [
            issue(TokenFormat::Wrapper, "app", None),
            issue(TokenFormat::Wrapper, "ms", Some(confirmation("ms cert"))),
            issue(
                TokenFormat::Wrapper,
                "heart",
                Some(confirmation("heart cert")),
            ),
        ]
    })
}

/// How `wrapper_token` changes the stored record of the reference before the check.
const RECORD_EDITS: u8 = 11;

fn edit_record(op: u8, r: &mut TokenRecord) -> Option<UnixTime> {
    match op % RECORD_EDITS {
        1 => r.client_id = if r.client_id == "app" { "ms" } else { "app" }.into(),
        2 => {
            r.cnf = match r.cnf {
                Some(_) if op & 0x80 != 0 => None,
                _ => Some(confirmation("another cert")),
            }
        }
        3 => r.kind = RecordKind::AccessOpaque,
        4 => r.aud = vec![format!("{RS}/other")],
        5 => r.scope = "openid patient/*.cruds".into(),
        6 => r.exp = NOW.0 + 10,
        7 => r.jti.push('x'),
        8 => r.iss.push('/'),
        // Expired record still in the store (its retention outlives `exp`).
        9 => r.exp = NOW.0 - 1,
        10 => return None,
        _ => {}
    }
    Some(UnixTime(NOW.0 + 3600))
}

/// `wrapper_token`: a wrapper JWT (`typ: hg-wrapper+jwt`) and the stored record of its
/// inner reference (J28, J30, M8).
///
/// Input: wrapper selector and `typ` choice, a record edit (client, `cnf`, kind,
/// audience, scope, expiry, jti, issuer, deletion), a reference edit (truncated,
/// extended, case-flipped, another wrapper's, an opaque token), then a JSON object whose
/// members replace the wrapper's claims (`null` removes one); the result is re-signed
/// with the issuer's key. Oracle: the resource server's check (`validate` +
/// [`check_wrapper_against_record`]) and the authorization server's introspection
/// agree, and an accepted wrapper carries exactly the reference we issued, a record that
/// was not edited, and the record's `client_id`, `cnf`, issuer, jti and audiences, with
/// an expiry not after the record's. The untouched wrapper is accepted.
pub fn wrapper_token(data: &[u8]) {
    let f = fixture();
    let all = wrappers();
    let mut u = Cursor(data);
    let sel = u.byte();
    let w = &all[usize::from(sel % 3)];
    let typ = match (sel >> 2) % 4 {
        0 => Some(WRAPPER_TOKEN_TYP),
        1 => Some("application/hg-wrapper+jwt"),
        2 => Some(ACCESS_TOKEN_TYP),
        _ => None,
    };
    let rec_op = u.byte();
    let ref_op = u.byte();
    let n = usize::from(u.u16() % 4096);
    let overlay = u.take(n);

    let mut record = w.record.clone();
    let until = edit_record(rec_op, &mut record);
    let record_untouched = rec_op % RECORD_EDITS == 0;
    let store = MemoryStore::new();
    if let Some(until) = until {
        put_access_record(&store, &w.store_key, &record, until);
    }

    let Some(mut claims) = jwt_payload(&w.token) else {
        panic!("fixture: our wrapper does not decode");
    };
    let genuine_ref = w.reference.clone().unwrap_or_default();
    let edited_ref = match ref_op % 8 {
        1 => {
            let mut r = genuine_ref.clone();
            r.truncate(usize::from(ref_op >> 3) % (r.len() + 1));
            Some(r)
        }
        2 => Some(format!(
            "{genuine_ref}{}",
            char::from(b'A' + (ref_op >> 3) % 26)
        )),
        3 => {
            let i = usize::from(ref_op >> 3) % genuine_ref.len().max(1);
            let flipped: String = genuine_ref
                .char_indices()
                .map(|(j, c)| {
                    if j == i {
                        if c.is_ascii_lowercase() {
                            c.to_ascii_uppercase()
                        } else {
                            c.to_ascii_lowercase()
                        }
                    } else {
                        c
                    }
                })
                .collect();
            Some(flipped)
        }
        4 => all[usize::from(sel.wrapping_add(1) % 3)].reference.clone(),
        5 => Some(opaque_tokens()[0].token.clone()),
        _ => None,
    };
    if let Some(r) = &edited_ref {
        claims.insert(WRAPPER_REF_CLAIM.into(), Value::String(r.clone()));
    }
    if let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(overlay) {
        for (k, v) in o {
            if v.is_null() {
                claims.remove(&k);
            } else {
                claims.insert(k, v);
            }
        }
    }
    let untouched = record_untouched
        && edited_ref.is_none()
        && overlay.is_empty()
        && typ == Some(WRAPPER_TOKEN_TYP);
    let key = Arc::clone(f.issuer.keys().load().active());
    let token = sign(&key, typ, &claims);

    // The resource server: offline check, then the record of the reference.
    let keys = f.issuer.keys().snapshot();
    let validator = AccessTokenValidator::new(ISS, RS);
    let rs_accepted = match validator.validate(&token, &*keys, &RevokedJtis::new(), NOW) {
        Ok(ValidatedToken::Wrapper(v)) => {
            let v = v.into_inner();
            let k = RecordKey::Hash(v.reference_hash()).store_key();
            let stored = match store.get(Namespace::AccessToken, &k, NOW) {
                Ok(b) => b.and_then(|b| TokenRecord::from_bytes(&b).ok()),
                Err(e) => panic!("memory store get failed: {e}"),
            };
            match stored {
                Some(r) if check_wrapper_against_record(&v, &r, NOW).is_ok() => {
                    assert_eq!(v.client_id, r.client_id, "J30: client_id differs");
                    assert_eq!(v.cnf, r.cnf, "J30/M8: cnf differs");
                    true
                }
                _ => false,
            }
        }
        Ok(ValidatedToken::Jwt(_)) => {
            assert!(
                typ.is_some_and(|t| crate::jose::typ_matches(t, ACCESS_TOKEN_TYP)),
                "J25: a wrapper-typed token validated as an RFC 9068 token"
            );
            false
        }
        Ok(ValidatedToken::Opaque(_)) => panic!("a signed JWT validated as an opaque token"),
        Err(_) => false,
    };
    if untouched {
        assert!(rs_accepted, "our own wrapper token was refused");
    }

    // The authorization server: introspection by the client the record names.
    let lctx = LifecycleContext::new(&f.issuer, &store, NOW);
    let caller = f
        .authed
        .get(record.client_id.as_str())
        .unwrap_or(&f.authed[w.client]);
    let active = match lifecycle::introspect(caller, Some(&token), &lctx) {
        Ok(r) => r,
        Err(e) => panic!("introspection failed on a memory store: {e:?}"),
    };
    if rs_accepted {
        assert!(
            active.is_active(),
            "a wrapper the resource server accepts is inactive at introspection"
        );
    }
    if !active.is_active() {
        return;
    }
    // Independently of the code under test: the accepted wrapper (the claims we signed)
    // and the record of its reference agree.
    let said = |name: &str| claims.get(name).and_then(Value::as_str);
    assert_eq!(
        said(WRAPPER_REF_CLAIM),
        Some(genuine_ref.as_str()),
        "J30: accepted with another reference"
    );
    assert_eq!(
        said("client_id"),
        Some(record.client_id.as_str()),
        "J30: client_id differs"
    );
    assert_eq!(active.client_id(), said("client_id"), "J30: introspection");
    let wrapper_cnf = claims
        .get("cnf")
        .and_then(|c| c.get("x5t#S256"))
        .and_then(Value::as_str);
    let record_cnf = record.cnf.as_ref().map(|c| c.x5t_s256.as_str());
    assert_eq!(wrapper_cnf, record_cnf, "J30/M8: cnf differs");
    assert_eq!(
        active.cnf().map(|c| c.x5t_s256.as_str()),
        record_cnf,
        "J30/M8: introspected cnf differs"
    );
    assert_eq!(record.kind, RecordKind::AccessWrapper, "J30: kind");
    assert_eq!(said("iss"), Some(record.iss.as_str()), "J26: iss differs");
    assert_eq!(said("jti"), Some(record.jti.as_str()), "J30: jti differs");
    assert_eq!(
        said("scope").unwrap_or_default(),
        record.scope,
        "J30: scope differs"
    );
    let mut aud: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => panic!("J27: accepted without a string aud"),
    };
    let mut want: Vec<&str> = record.aud.iter().map(String::as_str).collect();
    aud.sort_unstable();
    want.sort_unstable();
    assert_eq!(aud, want, "J30: audiences differ");
    match claims.get("exp").and_then(Value::as_f64) {
        Some(exp) => assert!(
            exp <= record.exp as f64 && NOW.0 < record.exp,
            "J30: wrapper outlives its record, or the record is dead"
        ),
        None => panic!("J21: accepted without a numeric exp"),
    }
}

/// Genuine opaque strings of this run: an opaque access token, a wrapper's reference
/// and a refresh token, all of client `app`.
fn opaque_tokens() -> &'static [Issued; 2] {
    static O: OnceLock<[Issued; 2]> = OnceLock::new();
    O.get_or_init(|| {
        [
            issue(TokenFormat::Opaque, "app", None),
            issue(TokenFormat::Wrapper, "app", None),
        ]
    })
}

fn refresh_token() -> &'static (String, TokenHash, Vec<u8>, UnixTime) {
    static R: OnceLock<(String, TokenHash, Vec<u8>, UnixTime)> = OnceLock::new();
    R.get_or_init(|| {
        let grant = RefreshTokenGrant {
            client_id: "app".into(),
            sub: "user".into(),
            scope: "openid offline_access patient/*.rs".into(),
            aud: vec![RS.into()],
            cnf: None,
            lifetime: 3600,
            family_id: None,
            generation: 0,
            auth_time: Some(NOW),
            acr: None,
            context: Map::new(),
        };
        match fixture().issuer.issue_refresh_token(&grant, NOW) {
            Ok(t) => match t.record.to_bytes() {
                Ok(b) => (
                    t.token.expose().to_owned(),
                    t.hash,
                    b,
                    UnixTime(t.record.exp),
                ),
                Err(e) => panic!("fixture: refresh record does not encode: {e}"),
            },
            Err(e) => panic!("fixture: refresh token not issued: {e}"),
        }
    })
}

/// `opaque_token`: an opaque token string → its lookup key (I2, I9, V2).
///
/// Input: an operation (raw string; a genuine token truncated, with a byte replaced, or
/// `$T` in the input replaced by it) and its bytes. Oracle: every lookup key is SHA-256
/// of the whole string (cache key, store key, the validator's hash); the validator
/// recognises exactly the `hgat_` + 43 strict base64url shape; introspection (with and
/// without the cache, and the `userinfo` lookup) is active for a genuine string and
/// for nothing else, so no prefix, suffix or near-miss ever hits; revoking anything else
/// changes nothing; revoking a genuine string makes it inactive, cache included.
pub fn opaque_token(data: &[u8]) {
    let f = fixture();
    let (rt, rt_hash, rt_bytes, rt_exp) = refresh_token();
    let ot = opaque_tokens();
    let genuine: [&str; 3] = [
        &ot[0].token,
        ot[1].reference.as_deref().unwrap_or_default(),
        rt,
    ];
    let mut u = Cursor(data);
    let op = u.byte();
    let g = genuine[usize::from(op >> 2) % 3];
    let s: String = match op % 4 {
        0 => String::from_utf8_lossy(u.rest()).into_owned(),
        1 => {
            let n = usize::from(u.byte()) % (g.len() + 1);
            format!("{}{}", &g[..n], String::from_utf8_lossy(u.rest()))
        }
        2 => {
            let i = usize::from(u.byte()) % g.len();
            let mut b = g.as_bytes().to_vec();
            b[i] = u.byte();
            String::from_utf8_lossy(&b).into_owned()
        }
        _ => String::from_utf8_lossy(u.rest()).replace("$T", g),
    };

    // Keys: SHA-256 of the whole string, nothing shorter.
    let h = sha256(s.as_bytes());
    assert_eq!(
        crate::introspect::CacheKey::for_token(&s).as_bytes(),
        &h,
        "I9: cache key"
    );
    assert_eq!(TokenHash::of(&s).0, h, "token hash");
    let mut store_key = vec![0u8];
    store_key.extend_from_slice(&h);
    assert_eq!(
        RecordKey::Hash(TokenHash::of(&s)).store_key(),
        store_key,
        "store key"
    );
    let shape = s.strip_prefix(OPAQUE_PREFIX).is_some_and(|r| {
        r.len() == 43 && crate::jose::b64::decode(r).is_ok_and(|b| b.len() == OPAQUE_RANDOM_BYTES)
    });
    let keys = f.issuer.keys().snapshot();
    match AccessTokenValidator::new(ISS, RS).validate(&s, &*keys, &RevokedJtis::new(), NOW) {
        Ok(ValidatedToken::Opaque(th)) => {
            assert!(shape, "{s:?} recognised as an opaque token");
            assert_eq!(th.0, h, "the validator's hash is not SHA-256 of the token");
        }
        Ok(_) => assert!(
            !s.starts_with(OPAQUE_PREFIX),
            "an hgat_ string validated as a JWT"
        ),
        Err(_) => assert!(!shape, "a well-formed opaque token was refused offline"),
    }

    let store = MemoryStore::new();
    for t in ot {
        put_access_record(&store, &t.store_key, &t.record, UnixTime(t.record.exp));
    }
    if let Err(e) = store.put(Namespace::RefreshToken, &rt_hash.0, rt_bytes, *rt_exp) {
        panic!("memory store put failed: {e}");
    }
    let cache = match IntrospectionCache::new(CacheConfig {
        max_entries: 64,
        max_negative_entries: 16,
        ..CacheConfig::default()
    }) {
        Ok(c) => c,
        Err(e) => panic!("cache: {e}"),
    };
    let app = &f.authed["app"];
    let plain = LifecycleContext::new(&f.issuer, &store, NOW);
    let mut cached = LifecycleContext::new(&f.issuer, &store, NOW);
    cached.cache = Some(&cache);
    let introspect = |ctx: &LifecycleContext<'_>, t: &str| -> bool {
        match lifecycle::introspect(app, Some(t), ctx) {
            Ok(r) => r.is_active(),
            Err(e) => panic!("introspection failed on a memory store: {e:?}"),
        }
    };
    // Warm the cache with every genuine answer first: a near-miss must not hit it.
    for t in genuine {
        assert!(introspect(&cached, t), "a genuine token is inactive");
    }
    let is_genuine = genuine.contains(&s.as_str());
    assert_eq!(
        introspect(&cached, &s),
        is_genuine,
        "I9: {s:?} active through the cache"
    );
    assert_eq!(introspect(&plain, &s), is_genuine, "I2: {s:?} active");
    let userinfo = match lifecycle::inspect(&s, &plain) {
        Ok(r) => r.is_active(),
        Err(e) => panic!("inspect failed on a memory store: {e:?}"),
    };
    assert_eq!(userinfo, is_genuine && s != *rt, "{s:?} active at userinfo");

    let before = snapshot(&store);
    let revoked = match lifecycle::revoke(app, Some(&s), &cached) {
        Ok(r) => r,
        Err(e) => panic!("revocation of app's own or unknown token failed: {e:?}"),
    };
    revoked.invalidate(&cache);
    if is_genuine {
        assert!(
            !introspect(&cached, &s),
            "V: revoked but active in the cache"
        );
        assert!(!introspect(&plain, &s), "V: revoked but active");
    } else {
        assert_eq!(revoked, Revoked::Nothing, "V2: {s:?} revoked something");
        assert_eq!(
            snapshot(&store),
            before,
            "V2: revoking {s:?} changed the store"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Dynamic registration and the SSRF guard

/// An IPv4 network in the reference table below.
fn in_v4(ip: std::net::Ipv4Addr, net: [u8; 4], bits: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    u32::from(ip) & mask == u32::from_be_bytes(net) & mask
}

fn in_v6(ip: std::net::Ipv6Addr, net: [u16; 8], bits: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
    let net = std::net::Ipv6Addr::from(net);
    u128::from(ip) & mask == u128::from(net) & mask
}

/// The reference classification of the SSRF guard (D2, B14), written from the IANA
/// special-purpose address registries (every block not globally reachable), multicast,
/// and the deprecated IPv6 site-local block, independently of [`forbidden_ip`]: an
/// address outbound calls must never reach. IPv4-mapped, IPv4-compatible, NAT64 and 6to4
/// forms carry an IPv4 address and are judged by it; the guard may refuse those blocks
/// whole ([`guard_may_refuse`]).
fn reference_forbidden(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => [
            ([0, 0, 0, 0], 8),       // "this network"
            ([10, 0, 0, 0], 8),      // private
            ([100, 64, 0, 0], 10),   // shared address space (CGNAT)
            ([127, 0, 0, 0], 8),     // loopback
            ([169, 254, 0, 0], 16),  // link local, cloud metadata
            ([172, 16, 0, 0], 12),   // private
            ([192, 0, 0, 0], 24),    // IETF protocol assignments
            ([192, 0, 2, 0], 24),    // TEST-NET-1
            ([192, 168, 0, 0], 16),  // private
            ([198, 18, 0, 0], 15),   // benchmarking
            ([198, 51, 100, 0], 24), // TEST-NET-2
            ([203, 0, 113, 0], 24),  // TEST-NET-3
            ([224, 0, 0, 0], 4),     // multicast
            ([240, 0, 0, 0], 4),     // reserved, broadcast
        ]
        .iter()
        .any(|(n, b)| in_v4(v4, *n, *b)),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let v4 = |hi: u16, lo: u16| {
                reference_forbidden(IpAddr::V4(std::net::Ipv4Addr::from(
                    (u32::from(hi) << 16) | u32::from(lo),
                )))
            };
            // IPv4-mapped ::ffff:0:0/96 and IPv4-compatible ::/96 (:: and ::1 included).
            if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
                return s[5] == 0 || v4(s[6], s[7]);
            }
            // NAT64 64:ff9b::/96 (globally reachable when the IPv4 address is).
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return v4(s[6], s[7]);
            }
            // 6to4 2002::/16 carries an IPv4 address in its next 32 bits.
            if s[0] == 0x2002 {
                return v4(s[1], s[2]);
            }
            [
                ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),  // local-use NAT64
                ([0x100, 0, 0, 0, 0, 0, 0, 0], 64),      // discard-only
                ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),     // IETF protocol assignments, Teredo
                ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
                ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),     // documentation (RFC 9637)
                ([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16),     // SRv6 SIDs
                ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),      // unique local
                ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),     // link local
                ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),     // site local (deprecated)
                ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),      // multicast
            ]
            .iter()
            .any(|(n, b)| in_v6(v6, *n, *b))
        }
    }
}

/// Blocks the guard refuses whole although the reference would judge some addresses in
/// them reachable: stricter, never a hole (NAT64 /32 and 6to4, whose IPv4 part a relay
/// reaches).
fn guard_may_refuse(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(_) => false,
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] == 0x64 && s[1] == 0xff9b) || s[0] == 0x2002
        }
    }
}

/// Every IP literal in a JSON document: strings that are addresses, and the hosts of
/// strings that are URLs.
fn ip_literals(v: &Value, out: &mut Vec<std::net::IpAddr>) {
    match v {
        Value::String(s) => {
            if let Ok(ip) = s.trim_start_matches('[').trim_end_matches(']').parse() {
                out.push(ip);
            }
            match url::Url::parse(s)
                .ok()
                .and_then(|u| u.host().map(|h| h.to_owned()))
            {
                Some(url::Host::Ipv4(ip)) => out.push(ip.into()),
                Some(url::Host::Ipv6(ip)) => out.push(ip.into()),
                _ => {}
            }
        }
        Value::Array(a) => a.iter().for_each(|x| ip_literals(x, out)),
        Value::Object(o) => o.values().for_each(|x| ip_literals(x, out)),
        _ => {}
    }
}

fn check_guard(ip: std::net::IpAddr) {
    let guard = forbidden_ip(ip);
    if reference_forbidden(ip) {
        assert!(guard, "D2/B14: the SSRF guard lets {ip} through");
    } else if !guard_may_refuse(ip) {
        assert!(!guard, "the SSRF guard refuses the public address {ip}");
    }
}

/// The operator's allow-listed notification host of `dcr_metadata`.
const OPERATOR_HOST: &str = "ciba.internal.example";

fn registrar_config() -> RegistrarConfig {
    RegistrarConfig::new(
        format!("{ISS}/register"),
        Some(TokenHash::of(INITIAL_ACCESS_TOKEN)),
    )
}

/// The initial access token `dcr_metadata` registers with.
pub const INITIAL_ACCESS_TOKEN: &str = "hg-fuzz-initial-access-token";

/// `dcr_metadata`: registration JSON (RFC 7591) through profile validation and dynamic
/// registration (D1-D10, B14), and every IP literal in it through the SSRF guard.
///
/// Oracle: validation and registration are total (typed 4xx errors, never a panic or a
/// 503 on a memory store); a refused registration stores nothing; an accepted one is
/// stored once, re-validates, never has `client_credentials`, resources, a client
/// secret or the client's own `client_id`; metadata valid without the operator's
/// allow-list stays valid with it; an accepted CIBA notification endpoint is `https`
/// without userinfo on a host that is not `localhost` or a forbidden IP literal (unless
/// allow-listed); and [`forbidden_ip`] agrees with an independent reference table on
/// every IP literal in the document and on the address in the input's last 4 and 16
/// bytes.
pub fn dcr_metadata(data: &[u8]) {
    // The guard on raw addresses: the whole address space, not only what parses.
    if let Some(b) = data.len().checked_sub(16).and_then(|i| data.get(i..)) {
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        check_guard(std::net::Ipv6Addr::from(a).into());
        let mut a4 = [0u8; 4];
        a4.copy_from_slice(&b[12..]);
        check_guard(std::net::Ipv4Addr::from(a4).into());
    }
    let doc: Option<Value> = serde_json::from_slice(data).ok();
    if let Some(doc) = &doc {
        let mut ips = Vec::new();
        ip_literals(doc, &mut ips);
        for ip in ips {
            check_guard(ip);
        }
    }

    // Profile validation, as the operator's static clients get it.
    if let Ok(md) = ClientMetadata::from_json(data) {
        let hosts = [OPERATOR_HOST.to_owned()];
        let strict = md.clone().validate();
        let lenient = md.validate_with(&hosts);
        if let Ok(c) = &strict {
            assert!(lenient.is_ok(), "the operator allow-list refused more");
            check_validated(c, &[]);
        }
        if let Ok(c) = &lenient {
            check_validated(c, &hosts);
        }
    }

    // Dynamic registration.
    let store = MemoryStore::new();
    let registrar = Registrar::new(registrar_config(), &NoAudit);
    let before = snapshot(&store);
    match registrar.register(Some(INITIAL_ACCESS_TOKEN), data, &store, NOW) {
        Err(e) => {
            let status = e.to_wire().status;
            assert!((400..500).contains(&status), "{e:?} → {status}");
            assert_eq!(snapshot(&store), before, "D: a refused registration stored");
        }
        Ok(info) => {
            let after = snapshot(&store);
            assert_eq!(
                after.len(),
                before.len() + 1,
                "one client record per registration"
            );
            let md = info.metadata();
            assert!(
                !md.grant_types.contains(&GrantType::ClientCredentials),
                "D: client_credentials registered dynamically"
            );
            assert!(
                md.resources.is_empty(),
                "D: a client granted itself resources"
            );
            let asked = doc
                .as_ref()
                .and_then(|d| d.get("client_id"))
                .and_then(Value::as_str);
            assert!(
                asked.is_none_or(|a| a != info.client_id()),
                "D7: the client chose its client_id"
            );
            assert!(
                info.registration_access_token()
                    .expose()
                    .starts_with(REGISTRATION_TOKEN_PREFIX),
                "registration access token shape"
            );
            let json = info.to_json();
            match serde_json::from_str::<Map<String, Value>>(&json) {
                Ok(o) => assert!(!o.contains_key("client_secret"), "D8: a client_secret"),
                Err(e) => panic!("the client information is not a JSON object: {e}"),
            }
            match md.clone().validate() {
                Ok(c) => check_validated(&c, &[]),
                Err(e) => panic!("D9: registered metadata does not validate again: {e:?}"),
            }
            // The client now exists for client authentication, and only it.
            let dir = StoreClientDirectory::new(&store, NOW);
            assert!(
                dir.client(info.client_id()).is_some(),
                "registered client missing"
            );
        }
    }
}

/// What validated metadata always satisfies (D3, D6, B14).
fn check_validated(c: &ValidatedClient, hosts: &[String]) {
    let md = c.metadata();
    if let Some(u) = &md.backchannel_client_notification_endpoint {
        let Ok(p) = url::Url::parse(u) else {
            panic!("B14: an unparseable notification endpoint was accepted");
        };
        assert_eq!(p.scheme(), "https", "B14: notification endpoint scheme");
        assert!(
            p.username().is_empty() && p.password().is_none(),
            "B14: userinfo in the notification endpoint"
        );
        let allowed = p.host_str().is_some_and(|h| {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            hosts.iter().any(|a| a.eq_ignore_ascii_case(h))
        });
        if !allowed {
            match p.host() {
                Some(url::Host::Ipv4(ip)) => {
                    assert!(!reference_forbidden(ip.into()), "B14: endpoint on {ip}")
                }
                Some(url::Host::Ipv6(ip)) => {
                    assert!(!reference_forbidden(ip.into()), "B14: endpoint on {ip}")
                }
                Some(url::Host::Domain(d)) => {
                    let d = d.trim_end_matches('.').to_ascii_lowercase();
                    assert!(
                        d != "localhost" && !d.ends_with(".localhost"),
                        "B14: endpoint on localhost"
                    );
                }
                None => panic!("B14: notification endpoint without a host"),
            }
        }
    }
    if md.grant_types.contains(&GrantType::ClientCredentials) {
        assert_ne!(
            md.token_endpoint_auth_method,
            AuthMethod::None,
            "D6: a public client_credentials client"
        );
    }
    if let Some(jwks) = &md.jwks {
        for k in jwks["keys"].as_array().into_iter().flatten() {
            let private = k.as_object().is_some_and(|m| {
                PRIVATE_MEMBERS.iter().any(|p| m.contains_key(*p))
                    || m.get("kty").and_then(Value::as_str) == Some("oct")
            });
            assert!(
                !private,
                "J33: a private or symmetric client key registered"
            );
        }
    }
    assert!(
        md.jwks.is_none() || md.jwks_uri.is_none(),
        "D3: both jwks and jwks_uri"
    );
}

// ---------------------------------------------------------------------------------------
// CIBA

/// The users of `ciba_request`: alice (active, user code 4711), carol (locked), ghost (a
/// login name whose account is gone); every other hint names nobody.
struct CibaFixtureUsers;

impl CibaUsers for CibaFixtureUsers {
    fn resolve_login_hint(&self, hint: &str) -> Result<Option<String>, UsersUnavailable> {
        Ok(match hint {
            "alice@clinic.example" => Some("alice".into()),
            "carol@clinic.example" => Some("carol".into()),
            "ghost@clinic.example" => Some("ghost".into()),
            _ => None,
        })
    }

    fn status(&self, user_id: &str) -> Result<UserStatus, UsersUnavailable> {
        Ok(match user_id {
            "alice" => UserStatus::Active,
            "carol" => UserStatus::Inactive,
            _ => UserStatus::Unknown,
        })
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

/// CIBA clients, all signing with one key.
struct CibaFixture {
    key: SigningKey,
    dir: Directory,
    authed: Vec<(&'static str, AuthenticatedClient)>,
}

const CIBA_ENDPOINT: &str = "https://clinic.example/ciba";

fn ciba_fixture() -> &'static CibaFixture {
    static C: OnceLock<CibaFixture> = OnceLock::new();
    C.get_or_init(|| {
        let key = self::key(Algorithm::ES256);
        let jwks = json!({"keys": [key.verifying_key().to_jwk()]});
        let grant = crate::ciba::GRANT_TYPE;
        let clients: [(&'static str, Value); 8] = [
            ("poll", json!({})),
            (
                "ping",
                json!({"backchannel_token_delivery_mode": "ping",
                "backchannel_client_notification_endpoint": CIBA_ENDPOINT}),
            ),
            (
                "push",
                json!({"backchannel_token_delivery_mode": "push",
                "backchannel_client_notification_endpoint": CIBA_ENDPOINT}),
            ),
            ("usercode", json!({"backchannel_user_code_parameter": true})),
            (
                "signed",
                json!({"profile": "heart", "grant_types": [grant],
                "backchannel_authentication_request_signing_alg": "ES256"}),
            ),
            (
                "fapi",
                json!({"profile": "fapi2-security", "grant_types": [grant],
                "tls_client_certificate_bound_access_tokens": true,
                "backchannel_token_delivery_mode": "ping",
                "backchannel_client_notification_endpoint": CIBA_ENDPOINT}),
            ),
            ("narrow", json!({"scope": "openid user/Observation.rs"})),
            (
                "nociba",
                json!({"redirect_uris": ["https://app.example/cb"],
                "grant_types": ["authorization_code"], "backchannel_token_delivery_mode": null}),
            ),
        ];
        let mut m = HashMap::new();
        for (id, extra) in &clients {
            let mut v = json!({"client_id": id, "profile": "smart",
                "token_endpoint_auth_method": "private_key_jwt", "jwks": jwks,
                "grant_types": [grant, "refresh_token"], "backchannel_token_delivery_mode": "poll"});
            for (k, x) in as_object(extra) {
                if x.is_null() {
                    if let Some(o) = v.as_object_mut() {
                        o.remove(k);
                    }
                } else {
                    v[k] = x.clone();
                }
            }
            m.insert((*id).to_owned(), client(&v));
        }
        let dir = Directory(m);
        let mut authed = Vec::new();
        for (id, _) in clients {
            let claims = json!({"iss": id, "sub": id, "aud": ISS, "exp": NOW.0 + 60,
                "iat": NOW.0, "jti": "fixture"});
            let assertion = sign(&key, None, as_object(&claims));
            let creds = ClientCredentials {
                client_assertion_type: Some(JWT_BEARER_ASSERTION_TYPE),
                client_assertion: Some(&assertion),
                ..Default::default()
            };
            match authenticate(&creds, &dir, &endpoints(), &MemoryStore::new(), NOW, &NoAudit) {
                Ok(c) => authed.push((id, c)),
                Err(e) => panic!("fixture: {id} does not authenticate: {e}"),
            }
        }
        CibaFixture { key, dir, authed }
    })
}

/// `requested_expiry` as CIBA §7.1 defines it, recomputed: digits only, positive, capped.
fn expected_expiry(v: &str) -> Option<u32> {
    if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = v.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    });
    (n > 0).then(|| u32::try_from(n.min(u64::from(crate::ciba::MAX_EXPIRY))).unwrap_or(0))
}

/// `ciba_request`: a backchannel authentication request (CIBA §7.1; B8-B13, B16, B18).
///
/// Input: client selector, flags (signed request, `requested_expiry` as a JSON number,
/// the request's own claims over ours, conceal unknown users, binding-message limit),
/// then the form body. In values, `$IDT` becomes an ID token of this issuer for the
/// client about alice, `$LHT` a `login_hint_token` the client signed. Oracle: a refusal
/// is a typed 4xx and stores nothing; an accepted request came from a CIBA client, has
/// exactly one hint, an `openid` scope, a binding message of the allowed alphabet and
/// length (required under FAPI), `expires_in` = the recomputed `requested_expiry` (or
/// the default), a valid notification token for ping and push, the right user (never an
/// unknown or locked one when they are revealed), and one stored record that says so;
/// a signed request is refused when replayed.
pub fn ciba_request(data: &[u8]) {
    let f = fixture();
    let c = ciba_fixture();
    let mut u = Cursor(data);
    let sel = u.byte();
    let flags = u.byte();
    let (id, caller) = &c.authed[usize::from(sel) % c.authed.len()];
    let md = caller.client().metadata();
    let Ok(form) = parse_form(u.rest()) else {
        return;
    };
    let needs = |p: &str| form.values().any(|v| v.contains(p));
    let id_token = needs("$IDT").then(|| {
        let claims = json!({"iss": ISS, "aud": id, "sub": "alice", "exp": NOW.0 + 60,
            "iat": NOW.0});
        let key = Arc::clone(f.issuer.keys().load().active());
        sign(&key, None, as_object(&claims))
    });
    let hint_token = needs("$LHT").then(|| {
        let claims = json!({"iss": id, "aud": ISS, "sub": "alice@clinic.example",
            "exp": NOW.0 + 60});
        sign(&c.key, None, as_object(&claims))
    });
    let form: par::Params = form
        .into_iter()
        .map(|(k, v)| {
            let mut v = v;
            if let Some(t) = &id_token {
                v = v.replace("$IDT", t);
            }
            if let Some(t) = &hint_token {
                v = v.replace("$LHT", t);
            }
            (k, v)
        })
        .collect();

    // What the request carries: the form, or the claims of a signed request made of it.
    let (body, effective) = if flags & 1 == 0 {
        (form.clone(), form)
    } else {
        let mut claims = Map::new();
        let base = json!({"iss": id, "aud": ISS, "exp": NOW.0 + 60, "nbf": NOW.0,
            "iat": NOW.0, "jti": format!("j{}", data.len())});
        if flags & 4 == 0 {
            claims.extend(
                form.iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.as_str()))),
            );
            claims.extend(as_object(&base).clone());
        } else {
            claims.extend(as_object(&base).clone());
            claims.extend(
                form.iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.as_str()))),
            );
        }
        if flags & 2 != 0 {
            if let Some(n) = claims
                .get("requested_expiry")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<u64>().ok())
            {
                claims.insert("requested_expiry".into(), n.into());
            }
        }
        let effective: par::Params = claims
            .iter()
            .filter(|(k, _)| !["iss", "aud", "exp", "nbf", "iat", "jti"].contains(&k.as_str()))
            .map(|(k, v)| match v {
                Value::String(s) => (k.clone(), s.clone()),
                other => (k.clone(), other.to_string()),
            })
            .collect();
        let mut body = par::Params::new();
        body.insert("request".into(), sign(&c.key, None, &claims));
        (body, effective)
    };

    let mut config = CibaConfig::new(ISS);
    if flags & 8 != 0 {
        config.unknown_users = UnknownUserPolicy::Conceal;
    }
    config.binding_message_max = usize::from(flags >> 4) * 16;
    let store = MemoryStore::new();
    let ctx = CibaContext::new(
        &config,
        &store,
        &CibaFixtureUsers,
        &c.dir,
        f.issuer.keys(),
        NOW,
    );
    let before = snapshot(&store);
    let resp = match crate::ciba::start(caller, &body, &ctx) {
        Ok(r) => r,
        Err(e) => {
            let status = e.to_wire().status;
            assert!((400..500).contains(&status), "{e:?} → {status}");
            assert_eq!(
                snapshot(&store),
                before,
                "B: a refused request stored something"
            );
            return;
        }
    };

    // Accepted: recompute every rule from the parameters.
    assert!(
        md.grant_types.contains(&GrantType::Ciba),
        "B18: a client without the CIBA grant started a request"
    );
    let get = |k: &str| effective.get(k).map(String::as_str);
    let hints = ["login_hint", "id_token_hint", "login_hint_token"]
        .iter()
        .filter(|h| effective.contains_key(**h))
        .count();
    assert_eq!(hints, 1, "B9: {hints} hints accepted");
    let scope = get("scope").unwrap_or_default();
    assert!(
        scope.split(' ').any(|s| s == "openid"),
        "CIBA §7.1: accepted without openid"
    );
    let max = config
        .binding_message_max
        .clamp(1, crate::ciba::MAX_BINDING_MESSAGE_MAX);
    match get("binding_message") {
        Some(m) => {
            let ok = !m.is_empty()
                && m.len() <= max
                && !m.starts_with(' ')
                && !m.ends_with(' ')
                && m.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._+/!?# ".contains(&b));
            assert!(ok, "B8: binding_message {m:?} accepted (max {max})");
        }
        None => assert!(!md.profile.is_fapi(), "FAPI-CIBA: no binding_message"),
    }
    let want = match get("requested_expiry") {
        Some(v) => match expected_expiry(v) {
            Some(e) => e,
            None => panic!("B12: requested_expiry {v:?} accepted"),
        },
        None => crate::ciba::DEFAULT_EXPIRY,
    };
    assert_eq!(resp.expires_in, want, "B12: expires_in");
    if md.backchannel_token_delivery_mode != Some(DeliveryMode::Poll) {
        let t = get("client_notification_token").unwrap_or_default();
        let body = t.trim_end_matches('=');
        assert!(
            !body.is_empty()
                && t.len() <= crate::ciba::MAX_NOTIFICATION_TOKEN_LEN
                && body
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)),
            "B16: notification token {t:?} accepted"
        );
    }
    if md.backchannel_user_code_parameter {
        assert!(get("user_code").is_some(), "user_code missing but accepted");
    } else {
        assert!(
            get("user_code").is_none(),
            "unregistered user_code accepted"
        );
    }
    let record = match crate::ciba::lookup(&ctx, &resp.request_ref()) {
        Ok(Some(r)) => r,
        Ok(None) => panic!("an accepted request was not stored"),
        Err(e) => panic!("lookup failed on a memory store: {e:?}"),
    };
    assert_eq!(
        record.client_id, md.client_id,
        "B2: stored for another client"
    );
    assert_eq!(
        record.binding_message.as_deref(),
        get("binding_message"),
        "B8"
    );
    assert_eq!(
        record.expires_at,
        NOW.0 + i64::from(want),
        "B12: stored expiry"
    );
    let reveal = config.unknown_users == UnknownUserPolicy::Reveal;
    match record.user_id.as_deref() {
        Some(u) => {
            assert_eq!(u, "alice", "B10/B17: a request for {u:?}");
            if md.backchannel_user_code_parameter {
                assert_eq!(get("user_code"), Some("4711"), "a wrong user_code accepted");
            }
        }
        None => assert!(!reveal, "B10: an unknown user accepted while revealed"),
    }
    match (&record.notification, md.backchannel_token_delivery_mode) {
        (None, Some(DeliveryMode::Poll)) => {}
        (Some(n), Some(DeliveryMode::Ping | DeliveryMode::Push)) => assert_eq!(
            Some(n.endpoint.as_str()),
            md.backchannel_client_notification_endpoint.as_deref(),
            "B14: notification endpoint"
        ),
        (n, m) => panic!("notification target {n:?} for mode {m:?}"),
    }
    if body.contains_key("request") {
        let stored = snapshot(&store);
        let again = crate::ciba::start(caller, &body, &ctx);
        assert!(again.is_err(), "B13: a signed request was replayed");
        assert_eq!(snapshot(&store), stored, "a replay stored something");
    }
}

/// The body of a fuzz target.
pub type Target = fn(&[u8]);

/// Every target by name, for the corpus replay.
pub const TARGETS: &[(&str, Target)] = &[
    ("jws_compact", jws_compact),
    ("jwt_verify", jwt_verify),
    ("jwk_jwks", jwk_jwks),
    ("jwt_claims", jwt_claims),
    ("form_params", form_params),
    ("authorize_request", authorize_request),
    ("client_assertion", client_assertion),
    ("token_request", token_request),
    ("cbor_record", cbor_record),
    ("client_cert_header", client_cert_header),
    ("x509_binding", x509_binding),
    ("smart_scope", smart_scope),
    ("redirect_uri_match", redirect_uri_match),
    ("wrapper_token", wrapper_token),
    ("opaque_token", opaque_token),
    ("dcr_metadata", dcr_metadata),
    ("ciba_request", ciba_request),
];
