"""PyJWT-compatible encode/decode: round trips, interop with PyJWT and joserfc, and every
rejection (THREATS §2.1 J-cases, RFC 7515 / 7519 / 7518 sections in the names)."""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import jwt as pyjwt
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

import heartgate
from conftest import ASYM, KeyPair

NOW = int(time.time())
SECRET = b"s" * 32


def claims(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "patient-123", "iat": NOW, "exp": NOW + 300}
    base.update(extra)
    return base


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], sig: bytes = b"x" * 64) -> str:
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(sig)])


def joserfc_key(k: KeyPair) -> Any:
    cls: Any = {"ES256": ECKey, "EdDSA": OKPKey}.get(k.alg, RSAKey)
    return cls.import_key(k.private_pem)


# --- round trips and interop ---------------------------------------------------------------


@pytest.mark.parametrize("alg", ASYM)
def test_round_trip_with_signing_key_and_pem(keys: dict[str, KeyPair], alg: str) -> None:
    k = keys[alg]
    token = heartgate.encode(claims(), k.signing_key)
    assert heartgate.decode(token, k.public_pem, algorithms=[alg]) == claims()
    token = heartgate.encode(claims(), k.private_pem, algorithm=alg)
    assert heartgate.decode(token, k.signing_key.public_key(), algorithms=[alg])["sub"] == "patient-123"
    assert heartgate.decode(token, k.signing_key.public_jwk(), algorithms=[alg])["exp"] == NOW + 300


@pytest.mark.parametrize("alg", ASYM)
def test_heartgate_tokens_verify_with_pyjwt(keys: dict[str, KeyPair], alg: str) -> None:
    k = keys[alg]
    token = heartgate.encode(claims(aud="rs"), k.signing_key)
    assert pyjwt.decode(token, k.public, algorithms=[alg], audience="rs") == claims(aud="rs")


@pytest.mark.parametrize("alg", ASYM)
def test_pyjwt_tokens_verify_with_heartgate(keys: dict[str, KeyPair], alg: str) -> None:
    k = keys[alg]
    token = pyjwt.encode(claims(aud="rs"), k.private, algorithm=alg, headers={"kid": "k1"})
    assert heartgate.decode(token, k.public_pem, algorithms=[alg], audience="rs") == claims(aud="rs")


@pytest.mark.parametrize("alg", ASYM)
def test_heartgate_tokens_verify_with_joserfc(keys: dict[str, KeyPair], alg: str) -> None:
    k = keys[alg]
    token = heartgate.encode(claims(), k.signing_key)
    decoded = jose_jwt.decode(token, joserfc_key(k), algorithms=[alg])
    assert decoded.claims == claims()


@pytest.mark.parametrize("alg", ASYM)
def test_joserfc_tokens_verify_with_heartgate(keys: dict[str, KeyPair], alg: str) -> None:
    k = keys[alg]
    token = jose_jwt.encode({"alg": alg}, claims(), joserfc_key(k), algorithms=[alg])
    assert heartgate.decode(token, k.public_pem, algorithms=[alg]) == claims()


def test_hs256_interop_with_pyjwt_both_ways() -> None:
    token = heartgate.encode(claims(), SECRET, algorithm="HS256")
    assert pyjwt.decode(token, SECRET, algorithms=["HS256"]) == claims()
    theirs = pyjwt.encode(claims(), SECRET, algorithm="HS256")
    assert heartgate.decode(theirs, SECRET, algorithms=["HS256"]) == claims()
    assert heartgate.decode(theirs, SECRET.decode(), algorithms=["HS256"]) == claims()


def test_datetime_time_claims_become_numeric_dates_rfc7519_2(keys: dict[str, KeyPair]) -> None:
    exp = datetime.now(timezone.utc) + timedelta(minutes=5)
    token = heartgate.encode({"sub": "a", "exp": exp}, keys["ES256"].signing_key)
    assert heartgate.decode(token, keys["ES256"].public_pem, algorithms=["ES256"])["exp"] == int(exp.timestamp())


def test_headers_kid_and_typ_rfc7515_4_1(keys: dict[str, KeyPair]) -> None:
    token = heartgate.encode(claims(), keys["ES256"].signing_key, headers={"kid": "key-2024", "typ": "at+jwt"})
    header = heartgate.get_unverified_header(token)
    assert header == {"alg": "ES256", "kid": "key-2024", "typ": "at+jwt"}
    assert pyjwt.get_unverified_header(token) == header
    with pytest.raises(ValueError):
        heartgate.encode(claims(), keys["ES256"].signing_key, headers={"x5u": "https://evil"})


def test_key_set_is_searched_by_kid_rfc7517_5(keys: dict[str, KeyPair], other_keys: dict[str, KeyPair]) -> None:
    ks = heartgate.KeySet.of([keys["ES256"].signing_key.public_key(), other_keys["ES256"].signing_key.public_key()])
    assert len(ks) == 2
    token = heartgate.encode(claims(), other_keys["ES256"].signing_key)
    assert heartgate.decode(token, ks, algorithms=["ES256"])["sub"] == "patient-123"
    assert heartgate.decode(token, json.loads(ks.to_json()), algorithms=["ES256"])["sub"] == "patient-123"


def test_certificate_pem_is_a_verification_key(client_cert: tuple[str, bytes]) -> None:
    # Keys also come from certificates (x5c-style distribution).
    key = heartgate.VerifyingKey.from_pem(client_cert[0])
    assert key.algorithm == "ES256"


def test_audience_list_and_issuer(keys: dict[str, KeyPair]) -> None:
    token = heartgate.encode(claims(aud=["a", "b"], iss="https://as"), keys["ES256"].signing_key)
    got = heartgate.decode(token, keys["ES256"].public_pem, algorithms=["ES256"], audience=["x", "b"], issuer="https://as")
    assert got["aud"] == ["a", "b"]


def test_require_option_pyjwt_compatible(keys: dict[str, KeyPair]) -> None:
    token = heartgate.encode(claims(), keys["ES256"].signing_key)
    with pytest.raises(heartgate.MissingRequiredClaimError) as e:
        heartgate.decode(token, keys["ES256"].public_pem, algorithms=["ES256"], options={"require": ["jti"]})
    assert e.value.claim == "jti"  # type: ignore[attr-defined]  # set at raise time, like PyJWT


def test_leeway_accepts_recently_expired_j22(keys: dict[str, KeyPair]) -> None:
    token = heartgate.encode(claims(exp=NOW - 5), keys["ES256"].signing_key)
    assert heartgate.decode(token, keys["ES256"].public_pem, algorithms=["ES256"], leeway=timedelta(seconds=30))
    with pytest.raises(heartgate.ExpiredSignatureError):
        heartgate.decode(token, keys["ES256"].public_pem, algorithms=["ES256"])


def test_subject_check(keys: dict[str, KeyPair]) -> None:
    token = heartgate.encode(claims(), keys["ES256"].signing_key)
    with pytest.raises(heartgate.InvalidSubjectError):
        heartgate.decode(token, keys["ES256"].public_pem, algorithms=["ES256"], subject="someone-else")


# --- rejections -----------------------------------------------------------------------------


def decode_es(token: str, keys: dict[str, KeyPair], **kw: Any) -> dict[str, Any]:
    return heartgate.decode(token, keys["ES256"].public_pem, algorithms=["ES256"], **kw)


def test_expired_is_refused_rfc7519_4_1_4(keys: dict[str, KeyPair]) -> None:
    token = heartgate.encode(claims(exp=NOW - 120), keys["ES256"].signing_key)
    with pytest.raises(heartgate.ExpiredSignatureError):
        decode_es(token, keys)


def test_not_yet_valid_is_refused_j22_rfc7519_4_1_5(keys: dict[str, KeyPair]) -> None:
    token = heartgate.encode(claims(nbf=NOW + 600), keys["ES256"].signing_key)
    with pytest.raises(heartgate.ImmatureSignatureError):
        decode_es(token, keys)


def test_wrong_audience_is_refused_j27(keys: dict[str, KeyPair]) -> None:
    token = heartgate.encode(claims(aud="other-rs"), keys["ES256"].signing_key)
    with pytest.raises(heartgate.InvalidAudienceError):
        decode_es(token, keys, audience="my-rs")
    with pytest.raises(heartgate.InvalidAudienceError):
        decode_es(token, keys)  # aud present where none is expected
    with pytest.raises(heartgate.InvalidAudienceError):
        decode_es(heartgate.encode(claims(aud=[]), keys["ES256"].signing_key), keys, audience="my-rs")


def test_strict_aud_refuses_an_array(keys: dict[str, KeyPair]) -> None:
    token = heartgate.encode(claims(aud=["rs"]), keys["ES256"].signing_key)
    with pytest.raises(heartgate.InvalidAudienceError):
        decode_es(token, keys, audience="rs", options={"strict_aud": True})


def test_issuer_prefix_variant_is_refused_j26(keys: dict[str, KeyPair]) -> None:
    token = heartgate.encode(claims(iss="https://as/"), keys["ES256"].signing_key)
    with pytest.raises(heartgate.InvalidIssuerError):
        decode_es(token, keys, issuer="https://as")


def test_tampered_payload_is_refused_rfc7515_5_2(keys: dict[str, KeyPair]) -> None:
    token = heartgate.encode(claims(), keys["ES256"].signing_key)
    h, _, s = token.split(".")
    tampered = ".".join([h, b64(json.dumps(claims(sub="admin")).encode()), s])
    with pytest.raises(heartgate.InvalidSignatureError):
        decode_es(tampered, keys)


def test_signature_of_another_key_is_refused(keys: dict[str, KeyPair], other_keys: dict[str, KeyPair]) -> None:
    token = heartgate.encode(claims(), other_keys["ES256"].signing_key)
    with pytest.raises(heartgate.InvalidSignatureError):
        decode_es(token, keys)


@pytest.mark.parametrize("none", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused_j1(keys: dict[str, KeyPair], none: str) -> None:
    token = forge({"alg": none, "typ": "JWT"}, claims(), b"") + "A"
    with pytest.raises(heartgate.InvalidAlgorithmError):
        heartgate.decode(token, keys["ES256"].public_pem, algorithms=["ES256", none])
    unsigned = pyjwt.encode(claims(), None, algorithm="none")  # type: ignore[arg-type]  # PyJWT needs None for alg none
    with pytest.raises(heartgate.DecodeError):  # empty signature segment: not a compact JWS
        decode_es(unsigned, keys)


def test_hs256_with_public_key_as_secret_is_refused_j2(keys: dict[str, KeyPair]) -> None:
    import hashlib
    import hmac

    pem = keys["RS256"].public_pem
    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims()).encode())
    sig = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    token = signing_input + "." + b64(sig)
    for algorithms in (["HS256"], ["RS256", "HS256"]):
        with pytest.raises(heartgate.InvalidAlgorithmError):
            heartgate.decode(token, pem, algorithms=algorithms)
    with pytest.raises(heartgate.InvalidAlgorithmError):
        heartgate.decode(token, keys["RS256"].signing_key.public_jwk(), algorithms=["HS256"])
    with pytest.raises(heartgate.InvalidAlgorithmError):
        heartgate.encode(claims(), pem, algorithm="HS256")
    with pytest.raises(heartgate.InvalidAlgorithmError):
        heartgate.encode(claims(), keys["RS256"].signing_key, algorithm="HS256")


def test_short_hs256_secret_is_refused_rfc7518_3_2() -> None:
    with pytest.raises(heartgate.InvalidKeyError):
        heartgate.encode(claims(), b"short", algorithm="HS256")
    token = pyjwt.encode(claims(), "short", algorithm="HS256")
    with pytest.raises(heartgate.InvalidKeyError):
        heartgate.decode(token, "short", algorithms=["HS256"])


def test_hs256_wrong_secret_and_tamper_are_refused() -> None:
    token = heartgate.encode(claims(), SECRET, algorithm="HS256")
    with pytest.raises(heartgate.InvalidSignatureError):
        heartgate.decode(token, b"t" * 32, algorithms=["HS256"])
    with pytest.raises(heartgate.InvalidAlgorithmError):  # HS256 not allowed by the caller
        heartgate.decode(token, SECRET, algorithms=["ES256"])


def test_algorithm_outside_the_allow_list_is_refused_j3(keys: dict[str, KeyPair]) -> None:
    token = heartgate.encode(claims(), keys["RS256"].signing_key)
    with pytest.raises(heartgate.InvalidAlgorithmError):
        heartgate.decode(token, keys["RS256"].public_pem, algorithms=["PS256"])


def test_header_alg_differing_from_the_key_is_refused_j4(keys: dict[str, KeyPair]) -> None:
    token = heartgate.encode(claims(), keys["ES256"].signing_key)
    with pytest.raises(heartgate.InvalidAlgorithmError):
        heartgate.decode(token, keys["RS256"].public_pem, algorithms=["ES256", "RS256"])


@pytest.mark.parametrize(
    "member",
    [
        {"jku": "https://evil/jwks"},  # J7
        {"x5u": "https://evil/cert"},  # J7
        {"jwk": {"kty": "oct", "k": "AA"}},  # J8
        {"crit": ["exp"]},  # J9
        {"b64": False},  # J10
        {"cty": "JWT"},  # J29
    ],
)
def test_dangerous_header_parameters_are_refused_j7_to_j10(keys: dict[str, KeyPair], member: dict[str, Any]) -> None:
    token = pyjwt.encode(claims(), keys["ES256"].private, algorithm="ES256", headers=member)
    with pytest.raises(heartgate.DecodeError):
        decode_es(token, keys)


def test_duplicate_claim_names_are_refused_j11(keys: dict[str, KeyPair]) -> None:
    payload = '{"sub":"a","exp":%d,"exp":99999999999}' % (NOW + 60)
    signing_input = b64(b'{"alg":"HS256"}') + "." + b64(payload.encode())
    import hashlib
    import hmac

    token = signing_input + "." + b64(hmac.new(SECRET, signing_input.encode(), hashlib.sha256).digest())
    with pytest.raises(heartgate.DecodeError):
        heartgate.decode(token, SECRET, algorithms=["HS256"])


@pytest.mark.parametrize("shape", ["a.b", "a.b.c.d", "a.b.c.d.e", "..", "......"])
def test_wrong_part_count_is_refused_j13(keys: dict[str, KeyPair], shape: str) -> None:
    with pytest.raises(heartgate.DecodeError):
        decode_es(shape, keys)


def test_padded_base64_is_refused_j14(keys: dict[str, KeyPair]) -> None:
    token = heartgate.encode(claims(x="ab"), keys["ES256"].signing_key)
    h, p, s = token.split(".")
    with pytest.raises(heartgate.DecodeError):
        decode_es(f"{h}.{p}==.{s}", keys)


def test_oversized_token_is_refused_before_decoding_j18(keys: dict[str, KeyPair]) -> None:
    with pytest.raises(heartgate.DecodeError):
        decode_es("a" * (heartgate._heartgate.DECODE_MAX_LEN + 1), keys)


def test_exp_as_string_is_refused_j20(keys: dict[str, KeyPair]) -> None:
    token = heartgate.encode(claims(exp="99999999999"), keys["ES256"].signing_key)
    with pytest.raises(heartgate.DecodeError):
        decode_es(token, keys)


def test_missing_exp_is_refused_j21(keys: dict[str, KeyPair]) -> None:
    # NOTE: PyJWT accepts a token without exp; heartgate never does (THREATS J21).
    token = heartgate.encode({"sub": "a"}, keys["ES256"].signing_key)
    with pytest.raises(heartgate.MissingRequiredClaimError):
        decode_es(token, keys)


@pytest.mark.parametrize("option", ["verify_signature", "verify_exp", "verify_aud", "verify_iss"])
def test_disabling_verification_is_refused(keys: dict[str, KeyPair], option: str) -> None:
    token = heartgate.encode(claims(), keys["ES256"].signing_key)
    with pytest.raises(ValueError):
        decode_es(token, keys, options={option: False})


def test_algorithms_argument_is_required() -> None:
    with pytest.raises(heartgate.DecodeError):
        heartgate.decode("a.b.c", SECRET)


def test_leeway_beyond_sixty_seconds_is_refused(keys: dict[str, KeyPair]) -> None:
    token = heartgate.encode(claims(), keys["ES256"].signing_key)
    with pytest.raises(ValueError):
        decode_es(token, keys, leeway=3600)


def test_malformed_keys_are_refused() -> None:
    with pytest.raises(heartgate.InvalidKeyError):
        heartgate.decode("a.b.c", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", algorithms=["ES256"])
    with pytest.raises(heartgate.InvalidKeyError):
        heartgate.SigningKey.from_pem("not a pem", "ES256")
    with pytest.raises(heartgate.InvalidKeyError):
        heartgate.KeySet.from_jwks({"keys": [{"kty": "oct", "k": "AAAA"}]})  # J33
    with pytest.raises(TypeError):
        heartgate.decode("a.b.c", 42, algorithms=["ES256"])  # type: ignore[arg-type]  # deliberately the wrong type


def test_private_jwk_members_are_refused_j33(keys: dict[str, KeyPair]) -> None:
    jwk = keys["ES256"].signing_key.public_jwk()
    jwk["d"] = "AAAA"
    with pytest.raises(heartgate.InvalidKeyError):
        heartgate.VerifyingKey.from_jwk(jwk)


# --- API shape --------------------------------------------------------------------------------

PYJWT_NAMES = [
    "PyJWTError",
    "InvalidTokenError",
    "DecodeError",
    "InvalidSignatureError",
    "ExpiredSignatureError",
    "InvalidAudienceError",
    "InvalidIssuerError",
    "InvalidIssuedAtError",
    "ImmatureSignatureError",
    "InvalidKeyError",
    "InvalidAlgorithmError",
    "MissingRequiredClaimError",
]


@pytest.mark.parametrize("name", PYJWT_NAMES)
def test_exception_names_and_hierarchy_match_pyjwt(name: str) -> None:
    ours = getattr(heartgate, name)
    theirs = getattr(pyjwt, name)
    our_bases = [c.__name__ for c in ours.__mro__ if c.__name__ in PYJWT_NAMES]
    their_bases = [c.__name__ for c in theirs.__mro__ if c.__name__ in PYJWT_NAMES]
    assert our_bases == their_bases


def test_no_input_raises_anything_but_a_heartgate_error(keys: dict[str, KeyPair]) -> None:
    # THREATS §2.13: no panic, no foreign exception, whatever the bytes.
    import random

    rng = random.Random(7)
    alphabet = "AZaz09-_.=+/ \x00{}\"'"
    for _ in range(2000):
        junk = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
        with pytest.raises(heartgate.PyJWTError):
            decode_es(junk, keys)


def test_decode_is_thread_safe_and_releases_the_gil(keys: dict[str, KeyPair]) -> None:
    token = heartgate.encode(claims(), keys["ES256"].signing_key)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(200):
                assert decode_es(token, keys)["sub"] == "patient-123"
                heartgate.encode(claims(), keys["EdDSA"].signing_key)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_key_objects_redact_and_expose_public_parts(keys: dict[str, KeyPair]) -> None:
    k = heartgate.SigningKey.generate("EdDSA", kid="k-1")
    assert repr(k) == 'SigningKey(algorithm="EdDSA", kid="k-1")'
    assert "d" not in k.public_jwk()
    assert k.public_key().to_jwk()["kid"] == "k-1"
    again = heartgate.SigningKey.from_pem(k.to_pem(), "EdDSA")
    assert again.public_key().thumbprint() == k.public_key().thumbprint()


@pytest.mark.parametrize("alg", ASYM)
def test_generated_keys_export_pem_that_cryptography_reads(alg: str) -> None:
    from cryptography.hazmat.primitives import serialization

    k = heartgate.SigningKey.generate(alg)
    private: Any = serialization.load_pem_private_key(k.to_pem().encode(), None)
    token = heartgate.encode(claims(), k)
    assert pyjwt.decode(token, private.public_key(), algorithms=[alg]) == claims()


def test_iat_as_string_is_invalid_issued_at_j20(keys: dict[str, KeyPair]) -> None:
    token = heartgate.encode(claims(iat="yesterday"), keys["ES256"].signing_key)
    with pytest.raises(heartgate.InvalidIssuedAtError):
        decode_es(token, keys)
