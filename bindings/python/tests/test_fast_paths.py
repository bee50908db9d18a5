"""The two shortcuts encode/decode take, and proof that they change nothing but the time:

* ``encode`` writes a plain-JSON payload in Rust (``_heartgate._encode_claims``) instead of
  calling ``json.dumps``: the bytes signed must be exactly those ``json.dumps(payload,
  separators=(",", ":"), allow_nan=False)`` gives, and anything else must take the
  ``json.dumps`` path with its usual result or error.
* PEM keys given as str/bytes are parsed once and kept in a bounded cache keyed by the PEM
  text and the algorithms: the right key for each PEM, never a cached key for a changed
  PEM, never a key of another algorithm, and still right once the cache has turned over.
"""

from __future__ import annotations

import base64
import enum
import json
import time
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import heartgate
from heartgate import _heartgate
from conftest import ASYM, KeyPair

NOW = int(time.time())
SECRET = b"s" * 32


def payload_bytes(token: str) -> bytes:
    p = token.split(".")[1]
    return base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


PLAIN_PAYLOADS: list[dict[str, Any]] = [
    {"sub": "patient-123", "iat": NOW, "exp": NOW + 300},
    {"exp": NOW, "s": "é ü \u2028 \U0001f600 \x7f \x00 \x1f \" \\ / \n \r \t \b \f"},
    {"exp": NOW, "n": None, "t": True, "f": False, "zero": 0, "neg": -(2**63), "big": 2**64 - 1},
    {"exp": NOW, "floats": [0.1, -0.0, 1e16, 1.5e-10, 123456789.125, 2.5]},
    {"exp": NOW, "nested": {"a": [1, [2, (3, 4)], {"x": {}}], "e": [], "t": ()}},
    {"exp": NOW, "scope": "patient/Observation.rs", "cnf": {"x5t#S256": "abc"}, "aud": ["a", "b"]},
    {"exp": NOW, "": "empty name", "deep": json.loads("[" * 30 + "1" + "]" * 30)},
]


@pytest.mark.parametrize("payload", PLAIN_PAYLOADS)
@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "HS256"])
def test_rust_payload_json_is_byte_identical_to_json_dumps(keys: dict[str, KeyPair], payload: dict[str, Any], alg: str) -> None:
    key: Any = SECRET if alg == "HS256" else keys[alg].signing_key
    fast = _heartgate._encode_claims(payload, key, alg, "JWT", None)
    assert fast is not None
    assert payload_bytes(fast) == dumps(payload)
    assert payload_bytes(heartgate.encode(payload, key, algorithm=alg)) == dumps(payload)


class Colour(enum.IntEnum):
    RED = 1


class Name(str):
    pass


FALLBACK_PAYLOADS: list[dict[Any, Any]] = [
    {"exp": datetime.now(timezone.utc) + timedelta(minutes=5)},
    {"exp": NOW, "huge": 2**70},
    {"exp": NOW, 1: "int key", None: "null key"},
    {"exp": NOW, "ordered": OrderedDict([("b", 1), ("a", 2)])},
    {"exp": NOW, "sub": Name("subclass of str"), "colour": Colour.RED},
    {"exp": NOW, Name("k"): "subclass key"},
    {"exp": NOW, "deep": json.loads("[" * 40 + "]" * 40)},
]


@pytest.mark.parametrize("payload", FALLBACK_PAYLOADS)
def test_other_payloads_take_the_json_dumps_path_unchanged(keys: dict[str, KeyPair], payload: dict[Any, Any]) -> None:
    key = keys["EdDSA"].signing_key
    assert _heartgate._encode_claims(payload, key, "EdDSA", "JWT", None) is None
    expected = dict(payload)
    if isinstance(expected["exp"], datetime):
        expected["exp"] = int(expected["exp"].timestamp())
    assert payload_bytes(heartgate.encode(payload, key)) == dumps(expected)


def test_payloads_json_refuses_are_refused_as_before(keys: dict[str, KeyPair]) -> None:
    key = keys["EdDSA"].signing_key
    cycle: dict[str, Any] = {"exp": NOW, "a": []}
    cycle["a"].append(cycle)
    cases: list[tuple[dict[Any, Any], type[Exception]]] = [
        ({"exp": NOW, "x": float("nan")}, ValueError),
        ({"exp": NOW, "x": float("inf")}, ValueError),
        (cycle, ValueError),
        ({"exp": NOW, "x": {1, 2}}, TypeError),
        ({"exp": NOW, "x": b"bytes"}, TypeError),
        ({"exp": NOW, (1, 2): "tuple key"}, TypeError),
    ]
    for bad, error in cases:
        assert _heartgate._encode_claims(bad, key, "EdDSA", "JWT", None) is None
        with pytest.raises(error):
            heartgate.encode(bad, key)


def test_a_lone_surrogate_takes_the_json_dumps_path(keys: dict[str, KeyPair]) -> None:
    key = keys["EdDSA"].signing_key
    payload = {"exp": NOW, "s": "\ud800"}
    assert _heartgate._encode_claims(payload, key, "EdDSA", "JWT", None) is None
    assert payload_bytes(heartgate.encode(payload, key)) == dumps(payload)


def test_json_encoder_argument_is_still_honoured(keys: dict[str, KeyPair]) -> None:
    class DecimalEncoder(json.JSONEncoder):
        def default(self, o: Any) -> Any:
            return str(o) if isinstance(o, Decimal) else super().default(o)

    token = heartgate.encode({"exp": NOW + 60, "amount": Decimal("1.10")}, keys["ES256"].signing_key, json_encoder=DecimalEncoder)
    assert json.loads(payload_bytes(token))["amount"] == "1.10"


def test_non_dict_mappings_are_still_accepted(keys: dict[str, KeyPair]) -> None:
    from types import MappingProxyType

    payload = MappingProxyType({"exp": NOW + 60, "sub": "a"})
    token = heartgate.encode(payload, keys["ES256"].signing_key)
    assert payload_bytes(token) == dumps(dict(payload))


def test_the_fast_path_makes_every_key_check_the_slow_path_makes(keys: dict[str, KeyPair]) -> None:
    payload = {"exp": NOW + 60}
    es = keys["ES256"]
    cases: list[tuple[Any, str, Any]] = [
        (es.public_pem, "HS256", None),  # J2: an asymmetric key as an HMAC secret
        (es.signing_key, "HS256", None),  # J2
        (b"short", "HS256", None),  # RFC 7518 §3.2
        (SECRET, "ES256", None),  # a secret for an asymmetric algorithm
        (es.signing_key, "EdDSA", None),  # J4: the key's algorithm is not the one asked for
        (es.signing_key, "none", None),  # J1
        (es.signing_key.public_key(), "ES256", None),  # a public key cannot sign
        (es.private_pem, "ES256", "\x00"),  # J5: a kid with NUL
    ]
    for key, alg, kid in cases:
        with pytest.raises(heartgate.PyJWTError) as slow:
            _heartgate._encode(dumps(payload), key, alg, "JWT", kid)
        with pytest.raises(heartgate.PyJWTError) as fast:
            _heartgate._encode_claims(payload, key, alg, "JWT", kid)
        assert (type(fast.value), str(fast.value)) == (type(slow.value), str(slow.value)), (alg, kid)


# --- the parsed-PEM-key cache ---------------------------------------------------------------


def test_each_pem_gets_its_own_key_from_the_cache(keys: dict[str, KeyPair], other_keys: dict[str, KeyPair]) -> None:
    for alg in ASYM:
        a, b = keys[alg], other_keys[alg]
        for _ in range(3):  # the second and third rounds are cache hits
            token_a = heartgate.encode({"exp": NOW + 60, "who": "a"}, a.private_pem, algorithm=alg)
            token_b = heartgate.encode({"exp": NOW + 60, "who": "b"}, b.private_pem.decode(), algorithm=alg)
            assert heartgate.decode(token_a, a.public_pem, algorithms=[alg])["who"] == "a"
            assert heartgate.decode(token_b, b.public_pem.decode(), algorithms=[alg])["who"] == "b"
            with pytest.raises(heartgate.InvalidSignatureError):
                heartgate.decode(token_a, b.public_pem, algorithms=[alg])
            with pytest.raises(heartgate.InvalidSignatureError):
                heartgate.decode(token_b, a.public_pem, algorithms=[alg])


def test_a_changed_pem_is_not_served_from_the_cache(keys: dict[str, KeyPair]) -> None:
    k = keys["ES256"]
    token = heartgate.encode({"exp": NOW + 60}, k.signing_key)
    assert heartgate.decode(token, k.public_pem, algorithms=["ES256"])["exp"] == NOW + 60  # now cached
    # The same key with one byte of the point changed: not on the curve, so refused.
    der = bytearray(k.public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    der[-1] ^= 0x01
    body = base64.encodebytes(bytes(der)).decode()
    changed = f"-----BEGIN PUBLIC KEY-----\n{body}-----END PUBLIC KEY-----\n"
    assert changed.encode() != k.public_pem
    with pytest.raises((heartgate.InvalidKeyError, heartgate.InvalidSignatureError)):
        heartgate.decode(token, changed, algorithms=["ES256"])
    # Another valid key in the same PEM shape: a signature failure, not the cached key.
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    other_pem = other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(heartgate.InvalidSignatureError):
        heartgate.decode(token, other_pem, algorithms=["ES256"])
    assert heartgate.decode(token, k.public_pem, algorithms=["ES256"])["exp"] == NOW + 60


def test_the_cache_keeps_keys_apart_by_algorithm_j4(keys: dict[str, KeyPair]) -> None:
    k = keys["RS256"]  # an RSA key serves RS256 and PS256: the cache key includes the algorithms
    rs = heartgate.encode({"exp": NOW + 60}, k.private_pem, algorithm="RS256")
    ps = heartgate.encode({"exp": NOW + 60}, k.private_pem, algorithm="PS256")
    assert heartgate.decode(ps, k.public_pem, algorithms=["PS256"])["exp"] == NOW + 60
    assert heartgate.decode(rs, k.public_pem, algorithms=["RS256"])["exp"] == NOW + 60
    with pytest.raises(heartgate.InvalidAlgorithmError):
        heartgate.decode(ps, k.public_pem, algorithms=["RS256"])
    with pytest.raises(heartgate.InvalidAlgorithmError):
        heartgate.decode(rs, k.public_pem, algorithms=["PS256"])
    assert heartgate.get_unverified_header(ps)["alg"] == "PS256"


def test_the_cache_is_bounded_and_stays_right_when_it_turns_over(keys: dict[str, KeyPair]) -> None:
    # More distinct PEMs than the cache holds (64 entries per cache): every key is still the
    # right one, whether it was served from the cache or parsed again after eviction.
    first = keys["EdDSA"]
    token = heartgate.encode({"exp": NOW + 60}, first.private_pem, algorithm="EdDSA")
    many = [heartgate.SigningKey.generate("EdDSA") for _ in range(150)]
    for i, key in enumerate(many):
        pem = key.to_pem()
        t = heartgate.encode({"exp": NOW + 60, "i": i}, pem, algorithm="EdDSA")
        public_pem = serialization.load_pem_private_key(pem.encode(), None).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert heartgate.decode(t, public_pem, algorithms=["EdDSA"])["i"] == i
        assert heartgate.decode(t, key.public_key(), algorithms=["EdDSA"])["i"] == i
    assert heartgate.decode(token, first.public_pem, algorithms=["EdDSA"])["exp"] == NOW + 60
    with pytest.raises(heartgate.InvalidSignatureError):
        heartgate.decode(token, many[0].public_key(), algorithms=["EdDSA"])
