"""heartgate.Validator: RFC 9068 JWT access tokens, wrapper tokens and opaque tokens
(RFC 7662 introspection over a real socket), RFC 8705 binding, SMART scopes, the JWKS
refetch limit (J6) and the introspection cache."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import pytest

import heartgate
from conftest import AUDIENCE, CLIENT_ID, ISSUER, FakeAS, KeyPair, introspection_for

SMART = "launch/patient patient/Observation.rs patient/Patient.r openid fhirUser"


def reference_of(wrapper: str) -> str:
    payload = wrapper.split(".")[1]
    ref: str = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["ref"]
    return ref


def issue(state: FakeAS, fmt: str = "jwt", **kw: Any) -> heartgate.IssuedToken:
    kw.setdefault("scope", SMART)
    kw.setdefault("context", {"patient": "p-1", "fhirUser": "Practitioner/7"})
    issued = state.issuer.issue("user-42", CLIENT_ID, AUDIENCE, format=fmt, **kw)
    if fmt == "wrapper":
        state.register(issued, reference=reference_of(issued.token))
    elif fmt == "opaque":
        state.register(issued)
    return issued


def validator(state: FakeAS, **kw: Any) -> heartgate.Validator:
    kw.setdefault("jwks_uri", state.url + "/jwks")
    kw.setdefault("introspection", introspection_for(state))
    return heartgate.Validator(issuer=ISSUER, audience=AUDIENCE, **kw)


# --- the three formats -------------------------------------------------------------------------


def test_jwt_access_token_is_validated_offline_rfc9068_4(auth_server: FakeAS) -> None:
    v = validator(auth_server)
    token = v.validate(issue(auth_server).token)
    assert token.format == "jwt"
    assert token.subject == "user-42" and token.client_id == CLIENT_ID and token.issuer == ISSUER
    assert token.patient == "p-1" and token.fhir_user == "Practitioner/7"
    assert token.claims["aud"] == AUDIENCE
    assert auth_server.introspections == 0 and auth_server.jwks_fetches == 1


def test_wrapper_token_is_checked_offline_then_introspected(auth_server: FakeAS) -> None:
    v = validator(auth_server)
    issued = issue(auth_server, "wrapper")
    token = v.validate(issued.token)
    assert token.format == "wrapper"
    # Patient and user context come only from introspection of the reference.
    assert token.patient == "p-1" and token.subject == "user-42"
    assert "patient" not in json.loads(base64.urlsafe_b64decode(issued.token.split(".")[1] + "=="))
    assert auth_server.introspections == 1


def test_opaque_token_is_introspected_rfc7662_2(auth_server: FakeAS) -> None:
    v = validator(auth_server)
    issued = issue(auth_server, "opaque")
    token = v.validate(issued.token)
    assert token.format == "opaque" and token.patient == "p-1"
    assert token.jti == issued.jti


def test_introspection_answers_are_cached(auth_server: FakeAS) -> None:
    v = validator(auth_server)
    issued = issue(auth_server, "opaque")
    for _ in range(5):
        v.validate(issued.token)
    assert auth_server.introspections == 1
    hits, _misses, entries = v.cache_stats()
    assert hits == 4 and entries == 1


def test_cache_disabled_introspects_every_time(auth_server: FakeAS) -> None:
    v = validator(auth_server, cache=0)
    issued = issue(auth_server, "opaque")
    v.validate(issued.token)
    v.validate(issued.token)
    assert auth_server.introspections == 2


def test_wrapper_introspection_by_bare_reference(auth_server: FakeAS) -> None:
    v = validator(auth_server, introspection=introspection_for(auth_server, wrapper="reference"))
    issued = issue(auth_server, "wrapper")
    auth_server.active = {reference_of(issued.token): issued}  # only the bare reference is known
    token = v.validate(issued.token)
    assert token.patient == "p-1"
    with pytest.raises(ValueError):
        heartgate.Introspection(auth_server.url, CLIENT_ID, client_key=auth_server.client_key, wrapper="ref")


def test_revoked_wrapper_reference_is_refused_j30_j31(auth_server: FakeAS) -> None:
    v = validator(auth_server)
    issued = issue(auth_server, "wrapper")
    auth_server.revoke(reference_of(issued.token))
    with pytest.raises(heartgate.InactiveTokenError):
        v.validate(issued.token)


def test_unknown_opaque_token_is_refused(auth_server: FakeAS) -> None:
    v = validator(auth_server)
    with pytest.raises(heartgate.InactiveTokenError):
        v.validate("hgat_" + "A" * 43)


def test_wrapper_of_another_grant_is_refused_j30(auth_server: FakeAS) -> None:
    v = validator(auth_server)
    a = issue(auth_server, "wrapper")
    b = issue(auth_server, "wrapper")
    # Point a (the wrapper and its reference) at b's record: same issuer, different jti.
    auth_server.active[a.token] = b
    auth_server.active[reference_of(a.token)] = b
    with pytest.raises(heartgate.InvalidTokenError):
        v.validate(a.token)


def test_opaque_token_without_introspection_is_refused(auth_server: FakeAS, keys: dict[str, KeyPair]) -> None:
    v = heartgate.Validator(issuer=ISSUER, audience=AUDIENCE, jwks=auth_server.jwks)
    with pytest.raises(heartgate.InvalidTokenError):
        v.validate(issue(auth_server, "opaque").token)


def test_introspection_endpoint_down_is_an_introspection_error(auth_server: FakeAS) -> None:
    dead = heartgate.Introspection("http://127.0.0.1:9/introspect", CLIENT_ID, client_key=auth_server.client_key, timeout=1)
    v = validator(auth_server, introspection=dead)
    with pytest.raises(heartgate.IntrospectionError):
        v.validate(issue(auth_server, "opaque").token)


def test_bad_client_assertion_is_an_introspection_error(auth_server: FakeAS) -> None:
    wrong = heartgate.Introspection(auth_server.url + "/introspect", CLIENT_ID, client_key=heartgate.SigningKey.generate())
    v = validator(auth_server, introspection=wrong)
    with pytest.raises(heartgate.IntrospectionError):
        v.validate(issue(auth_server, "opaque").token)


# --- offline refusals ------------------------------------------------------------------------


def at_jwt(keys: dict[str, KeyPair], **over: Any) -> str:
    now = int(time.time())
    c: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user-42",
        "aud": AUDIENCE,
        "exp": now + 300,
        "iat": now,
        "jti": "j-1",
        "client_id": CLIENT_ID,
        "scope": SMART,
    }
    c.update(over)
    return heartgate.encode(c, keys["ES256"].signing_key, headers={"typ": "at+jwt"})


def test_expired_access_token_is_refused_j22(auth_server: FakeAS, keys: dict[str, KeyPair]) -> None:
    with pytest.raises(heartgate.ExpiredSignatureError):
        validator(auth_server).validate(at_jwt(keys, exp=int(time.time()) - 120, iat=int(time.time()) - 400))


def test_wrong_audience_is_refused_j27(auth_server: FakeAS, keys: dict[str, KeyPair]) -> None:
    with pytest.raises(heartgate.InvalidAudienceError):
        validator(auth_server).validate(at_jwt(keys, aud="https://other-rs"))


def test_wrong_issuer_is_refused_j26(auth_server: FakeAS, keys: dict[str, KeyPair]) -> None:
    with pytest.raises(heartgate.InvalidIssuerError):
        validator(auth_server).validate(at_jwt(keys, iss=ISSUER + "/"))


def test_typ_jwt_is_not_an_access_token_j25(auth_server: FakeAS, keys: dict[str, KeyPair]) -> None:
    token = heartgate.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60}, keys["ES256"].signing_key)
    with pytest.raises(heartgate.DecodeError):
        validator(auth_server).validate(token)


def test_tampered_access_token_is_refused(auth_server: FakeAS) -> None:
    token = issue(auth_server).token
    h, p, s = token.split(".")
    with pytest.raises(heartgate.InvalidSignatureError):
        validator(auth_server).validate(f"{h}.{p}.{s[:-4]}AAAA")


def test_hs256_access_token_is_refused_j2(auth_server: FakeAS) -> None:
    token = heartgate.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60}, b"k" * 32, algorithm="HS256", headers={"typ": "at+jwt"})
    with pytest.raises(heartgate.InvalidAlgorithmError):
        validator(auth_server).validate(token)


# --- JWKS refetch (J6) -------------------------------------------------------------------------


def test_unknown_kid_refetches_the_jwks_then_succeeds_j6(auth_server: FakeAS, other_keys: dict[str, KeyPair]) -> None:
    v = validator(auth_server, refetch_interval=0)
    v.validate(issue(auth_server).token)
    rotated = heartgate.TokenIssuer(ISSUER, other_keys["ES256"].signing_key)
    auth_server.issuer, auth_server.jwks = rotated, rotated.jwks()
    v.validate(issue(auth_server).token)
    assert auth_server.jwks_fetches == 2


def test_unknown_kid_refetches_at_most_once_per_interval_j6(auth_server: FakeAS, other_keys: dict[str, KeyPair]) -> None:
    v = validator(auth_server, refetch_interval=3600)
    forged = heartgate.encode({"exp": int(time.time()) + 60}, other_keys["ES256"].signing_key, headers={"typ": "at+jwt"})
    for _ in range(20):
        with pytest.raises(heartgate.UnknownKeyError):
            v.validate(forged)
    assert auth_server.jwks_fetches == 2  # the first fetch, then one refetch


def test_static_jwks_and_key_set(auth_server: FakeAS) -> None:
    for jwks in (auth_server.jwks, json.loads(auth_server.jwks), auth_server.issuer.key_set()):
        v = heartgate.Validator(issuer=ISSUER, audience=AUDIENCE, jwks=jwks)
        assert v.validate(issue(auth_server).token).format == "jwt"


# --- certificate binding (RFC 8705 §3) -----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jwt", "wrapper", "opaque"])
def test_bound_token_with_its_certificate_is_accepted(auth_server: FakeAS, client_cert: tuple[str, bytes], fmt: str) -> None:
    v = validator(auth_server)
    issued = issue(auth_server, fmt, client_cert=client_cert[0])
    token = v.validate(issued.token, client_cert=client_cert[0])
    assert token.certificate_thumbprint == heartgate.thumbprint(client_cert[1])
    assert token.cnf == {"x5t#S256": heartgate.thumbprint(client_cert[0])}
    v.validate(issued.token, client_cert=client_cert[1])  # DER works too


@pytest.mark.parametrize("fmt", ["jwt", "wrapper", "opaque"])
def test_bound_token_without_certificate_is_refused_m2(auth_server: FakeAS, client_cert: tuple[str, bytes], fmt: str) -> None:
    issued = issue(auth_server, fmt, client_cert=client_cert[0])
    with pytest.raises(heartgate.CertificateBindingError):
        validator(auth_server).validate(issued.token)


@pytest.mark.parametrize("fmt", ["jwt", "wrapper", "opaque"])
def test_bound_token_with_another_certificate_is_refused_m1(
    auth_server: FakeAS, client_cert: tuple[str, bytes], other_cert: tuple[str, bytes], fmt: str
) -> None:
    issued = issue(auth_server, fmt, client_cert=client_cert[0])
    with pytest.raises(heartgate.CertificateBindingError):
        validator(auth_server).validate(issued.token, client_cert=other_cert[0])


def test_thumbprint_is_sha256_of_der_rfc8705_3_1(client_cert: tuple[str, bytes]) -> None:
    import hashlib

    expected = base64.urlsafe_b64encode(hashlib.sha256(client_cert[1]).digest()).rstrip(b"=").decode()
    assert heartgate.thumbprint(client_cert[0]) == expected == heartgate.thumbprint(client_cert[1])
    with pytest.raises(ValueError):
        heartgate.thumbprint(b"garbage")


# --- SMART scopes ---------------------------------------------------------------------------------


def test_smart_scopes_permit_and_refuse(auth_server: FakeAS) -> None:
    token = validator(auth_server).validate(issue(auth_server).token)
    assert token.permits("Observation", "r") and token.permits("Observation", "s", "patient")
    assert not token.permits("Observation", "c")
    assert not token.permits("Observation", "r", "user")
    assert not token.permits("Condition", "r")
    assert "patient/Observation.rs" in token.smart_scopes
    assert token.has_scope("openid")
    token.require_scopes(["patient/Observation.r"])
    with pytest.raises(heartgate.InsufficientScopeError):
        token.require_scopes(["patient/Observation.c"])
    with pytest.raises(ValueError):
        token.permits("Observation", "x")


def test_required_scopes_insufficient_scope_rfc6750_3_1(auth_server: FakeAS) -> None:
    v = validator(auth_server)
    issued = issue(auth_server, scope="patient/Patient.r")
    v.validate(issued.token, required_scopes=["patient/Patient.r"])
    with pytest.raises(heartgate.InsufficientScopeError):
        v.validate(issued.token, required_scopes=["patient/Observation.rs"])
    with pytest.raises(heartgate.InsufficientScopeError):
        v.validate(issued.token, required_scopes=["offline_access"])


def test_wildcard_scope_covers_a_resource(auth_server: FakeAS) -> None:
    token = validator(auth_server).validate(issue(auth_server, scope="user/*.cruds").token, required_scopes=["user/Observation.rs"])
    assert token.permits("Encounter", "d", "user")


# --- async ---------------------------------------------------------------------------------------


async def test_async_validation_of_all_formats(auth_server: FakeAS, client_cert: tuple[str, bytes]) -> None:
    v = validator(auth_server)
    for fmt in ("jwt", "wrapper", "opaque"):
        issued = issue(auth_server, fmt, client_cert=client_cert[0])
        token = await v.validate_async(issued.token, client_cert=client_cert[0], required_scopes=["patient/Observation.r"])
        assert token.format == fmt and token.patient == "p-1"


def test_mock_transport_sees_private_key_jwt(auth_server: FakeAS) -> None:
    seen: dict[str, Any] = {}

    def handle(request: httpx.Request) -> httpx.Response:
        from urllib.parse import parse_qs

        form = parse_qs(request.content.decode())
        seen.update(form)
        return httpx.Response(200, json={"active": False})

    intro = heartgate.Introspection(
        "https://as.example.test/introspect", CLIENT_ID, client_key=auth_server.client_key, transport=httpx.MockTransport(handle)
    )
    v = heartgate.Validator(issuer=ISSUER, audience=AUDIENCE, introspection=intro)
    with pytest.raises(heartgate.InactiveTokenError):
        v.validate("hgat_" + "A" * 43)
    assert seen["client_assertion_type"] == ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]
    assert seen["token_type_hint"] == ["access_token"]
    claims = heartgate.decode(
        seen["client_assertion"][0], auth_server.client_key.public_key(), algorithms=["ES256"], audience="https://as.example.test/introspect"
    )
    assert claims["iss"] == claims["sub"] == CLIENT_ID


def test_validator_needs_a_key_source() -> None:
    with pytest.raises(ValueError):
        heartgate.Validator(issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(ValueError):
        heartgate.Validator(issuer=ISSUER, audience=AUDIENCE, jwks={"keys": []}, algorithms=["HS256"])


# --- the rest of the public API ---------------------------------------------------------------


def test_forget_drops_a_cached_answer(auth_server: FakeAS) -> None:
    v = validator(auth_server)
    issued = issue(auth_server, "opaque")
    v.validate(issued.token)
    assert v.forget(issued.token) == 1
    v.validate(issued.token)
    assert auth_server.introspections == 2


def test_access_token_and_issued_token_accessors(auth_server: FakeAS) -> None:
    issued = issue(auth_server, context={"patient": "p-1", "encounter": "e-5", "fhirUser": "Practitioner/7"})
    assert issued.format == "jwt" and len(issued.jti) >= 22
    assert issued.expires_in == 300 and abs(issued.expires_at - (time.time() + 300)) < 5
    assert repr(issued) == 'IssuedToken(format="jwt", expires_in=300)'
    assert auth_server.issuer.issuer == ISSUER and repr(auth_server.issuer) == f'TokenIssuer(issuer="{ISSUER}")'
    token = validator(auth_server).validate(issued.token)
    assert token.encounter == "e-5" and token.expires_at == issued.expires_at
    assert token.cnf is None and token.certificate_thumbprint is None
    assert "user-42" not in repr(token)  # no claim values (PII) in the repr
    assert json.loads(issued.introspection_response())["active"] is True


def test_key_set_accessors(auth_server: FakeAS) -> None:
    ks = heartgate.KeySet.from_jwks(auth_server.jwks)
    assert len(ks) == 1 and ks.kids() == [json.loads(auth_server.jwks)["keys"][0]["kid"]]
    assert json.loads(ks.to_json()) == json.loads(auth_server.jwks)
    vk = heartgate.VerifyingKey.from_jwk(json.loads(auth_server.jwks)["keys"][0])
    assert vk.algorithm == "ES256" and vk.kid == ks.kids()[0]
    assert repr(ks) == "KeySet(1 keys)" and repr(vk).startswith("VerifyingKey(")


def test_bad_issue_arguments_are_refused(auth_server: FakeAS) -> None:
    with pytest.raises(ValueError):
        auth_server.issuer.issue("u", CLIENT_ID, AUDIENCE, format="jwe")
    with pytest.raises(ValueError):
        auth_server.issuer.issue("u", CLIENT_ID, AUDIENCE, lifetime=0)
    with pytest.raises(ValueError):
        auth_server.issuer.issue("u", CLIENT_ID, AUDIENCE, context={"iss": "https://evil"})


async def test_explicit_refresh_and_close(auth_server: FakeAS) -> None:
    intro = introspection_for(auth_server)
    v = validator(auth_server, introspection=intro)
    v.refresh_keys()
    await v.refresh_keys_async()
    assert auth_server.jwks_fetches == 2
    intro.close()
    await intro.aclose()
    with pytest.raises(ValueError):
        heartgate.Validator(issuer=ISSUER, audience=AUDIENCE, jwks=auth_server.jwks).refresh_keys()
