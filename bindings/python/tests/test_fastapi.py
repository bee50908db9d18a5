"""heartgate.fastapi and the example FHIR API, through FastAPI's test client: RFC 6750
§3 challenges (401 / 403 with WWW-Authenticate), SMART patient context, RFC 8705 binding
through an RFC 9440 Client-Cert header from a trusted proxy."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import heartgate
from conftest import AUDIENCE, CLIENT_ID, ISSUER, FakeAS, introspection_for
from test_validator import issue

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from fhir_api import create_app  # noqa: E402 - importable only after the sys.path line above


def client_for(state: FakeAS, **kw: Any) -> TestClient:
    v = heartgate.Validator(
        issuer=ISSUER, audience=AUDIENCE, jwks_uri=state.url + "/jwks", introspection=introspection_for(state)
    )
    return TestClient(create_app(v, **kw))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_no_token_gets_401_with_a_bare_challenge_rfc6750_3_1(auth_server: FakeAS) -> None:
    r = client_for(auth_server).get("/Patient/p-1/Observation")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="heartgate"'


def test_basic_auth_is_not_a_bearer_token(auth_server: FakeAS) -> None:
    r = client_for(auth_server).get("/Patient/p-1/Observation", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401


def test_invalid_token_gets_401_invalid_token(auth_server: FakeAS) -> None:
    r = client_for(auth_server).get("/Patient/p-1/Observation", headers=bearer("not.a.token"))
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


@pytest.mark.parametrize("fmt", ["jwt", "wrapper", "opaque"])
def test_patient_token_reads_its_own_patient(auth_server: FakeAS, fmt: str) -> None:
    r = client_for(auth_server).get("/Patient/p-1/Observation", headers=bearer(issue(auth_server, fmt).token))
    assert r.status_code == 200
    assert r.json()["total"] == 1 and r.json()["entry"][0]["resource"]["id"] == "o-1"


def test_patient_token_cannot_read_another_patient(auth_server: FakeAS) -> None:
    r = client_for(auth_server).get("/Patient/p-2/Observation", headers=bearer(issue(auth_server).token))
    assert r.status_code == 403
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]


def test_user_scope_reads_any_patient(auth_server: FakeAS) -> None:
    token = issue(auth_server, scope="user/Observation.rs", context={}).token
    assert client_for(auth_server).get("/Patient/p-2/Observation", headers=bearer(token)).status_code == 200


def test_token_without_observation_scope_is_refused(auth_server: FakeAS) -> None:
    token = issue(auth_server, scope="patient/Patient.r").token
    assert client_for(auth_server).get("/Patient/p-1/Observation", headers=bearer(token)).status_code == 403


def test_required_scopes_answer_403_with_the_scope(auth_server: FakeAS) -> None:
    r = client_for(auth_server).get("/admin/audit", headers=bearer(issue(auth_server).token))
    assert r.status_code == 403
    assert r.headers["www-authenticate"] == 'Bearer realm="heartgate", error="insufficient_scope", scope="system/AuditEvent.rs"'
    ok = issue(auth_server, scope="system/AuditEvent.rs", context={}).token
    assert client_for(auth_server).get("/admin/audit", headers=bearer(ok)).status_code == 200


def test_revoked_token_gets_401(auth_server: FakeAS) -> None:
    issued = issue(auth_server, "opaque")
    auth_server.revoke(issued.token)
    assert client_for(auth_server).get("/Patient/p-1/Observation", headers=bearer(issued.token)).status_code == 401


def client_cert_header(der: bytes) -> str:
    return ":" + base64.b64encode(der).decode() + ":"


def test_bound_token_with_client_cert_header_from_trusted_proxy_rfc9440(
    auth_server: FakeAS, client_cert: tuple[str, bytes], other_cert: tuple[str, bytes]
) -> None:
    token = issue(auth_server, client_cert=client_cert[0]).token
    trusted = client_for(auth_server, trust_client_cert_header=True)
    ok = trusted.get("/Patient/p-1/Observation", headers={**bearer(token), "Client-Cert": client_cert_header(client_cert[1])})
    assert ok.status_code == 200
    stolen = trusted.get("/Patient/p-1/Observation", headers={**bearer(token), "Client-Cert": client_cert_header(other_cert[1])})
    assert stolen.status_code == 401
    assert trusted.get("/Patient/p-1/Observation", headers=bearer(token)).status_code == 401
    malformed = trusted.get("/Patient/p-1/Observation", headers={**bearer(token), "Client-Cert": "garbage"})
    assert malformed.status_code == 400


def test_client_cert_header_is_ignored_unless_trusted_c17(auth_server: FakeAS, client_cert: tuple[str, bytes]) -> None:
    token = issue(auth_server, client_cert=client_cert[0]).token
    r = client_for(auth_server).get("/Patient/p-1/Observation", headers={**bearer(token), "Client-Cert": client_cert_header(client_cert[1])})
    assert r.status_code == 401


def test_introspection_down_is_503(auth_server: FakeAS) -> None:
    dead = heartgate.Introspection("http://127.0.0.1:9/introspect", CLIENT_ID, client_key=auth_server.client_key, timeout=1)
    v = heartgate.Validator(issuer=ISSUER, audience=AUDIENCE, jwks=auth_server.jwks, introspection=dead)
    r = TestClient(create_app(v)).get("/Patient/p-1/Observation", headers=bearer(issue(auth_server, "opaque").token))
    assert r.status_code == 503


async def test_certificate_from_the_asgi_tls_extension(auth_server: FakeAS, client_cert: tuple[str, bytes]) -> None:
    from fastapi import HTTPException, Request

    from heartgate.fastapi import require_token

    v = heartgate.Validator(issuer=ISSUER, audience=AUDIENCE, jwks=auth_server.jwks)
    token = issue(auth_server, client_cert=client_cert[0]).token

    def request(chain: list[str]) -> Request:
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(b"authorization", f"Bearer {token}".encode())],
            "extensions": {"tls": {"client_cert_chain": chain}},
        }
        return Request(scope)

    dep = require_token(v, scopes=["patient/Observation.r"])
    got = await dep(request([client_cert[0]]))
    assert got.certificate_thumbprint == heartgate.thumbprint(client_cert[0])
    with pytest.raises(HTTPException) as e:
        await dep(request([]))
    assert e.value.status_code == 401
