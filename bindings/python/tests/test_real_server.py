"""heartgate.Validator against the real `heartgate` server binary over TLS: client
credentials tokens in the three formats, validated with the server's JWKS and its
RFC 7662 introspection endpoint (private_key_jwt), then revocation (RFC 7009).

Needs the binary: `tests/python.sh` builds it and sets HG_SERVER_BIN (not HEARTGATE_*:
the server would read that as configuration); without it (a plain `pytest` run) the
test is skipped, with that reason."""

from __future__ import annotations

import json
import os
import secrets
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import heartgate

FHIR = "https://fhir.example/r4"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
BIN = os.environ.get("HG_SERVER_BIN", "")

pytestmark = pytest.mark.skipif(not BIN or not Path(BIN).exists(), reason="HG_SERVER_BIN not built (tests/python.sh builds it)")


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    def __init__(self, issuer: str, ca: str, keys: dict[str, heartgate.SigningKey]) -> None:
        self.issuer = issuer
        self.ca = ca
        self.tls = ssl.create_default_context(cafile=ca)
        self.keys = keys

    def assertion(self, client_id: str, aud: str) -> str:
        now = int(time.time())
        claims = {"iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + 60, "jti": secrets.token_urlsafe(16)}
        return heartgate.encode(claims, self.keys[client_id])

    def token(self, client_id: str) -> str:
        r = httpx.post(
            self.issuer + "/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.assertion(client_id, self.issuer + "/token"),
            },
            verify=self.tls,
        )
        assert r.status_code == 200, r.text
        token: str = r.json()["access_token"]
        return token

    def revoke(self, client_id: str, token: str) -> None:
        r = httpx.post(
            self.issuer + "/revoke",
            data={
                "token": token,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.assertion(client_id, self.issuer + "/token"),
            },
            verify=self.tls,
        )
        assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("heartgate-server")
    port = free_port()
    issuer = f"https://127.0.0.1:{port}"
    keys = {c: heartgate.SigningKey.generate("ES256") for c in ("fhir-server", "jwt-backend", "wrapper-backend", "opaque-backend")}
    clients = [
        {"client_id": "fhir-server", "profile": "smart-backend", "token_endpoint_auth_method": "private_key_jwt",
         "grant_types": ["client_credentials"], "jwks": {"keys": [keys["fhir-server"].public_jwk()]}, "resources": [FHIR]},
    ]
    for fmt in ("jwt", "wrapper", "opaque"):
        cid = f"{fmt}-backend"
        clients.append(
            {"client_id": cid, "profile": "smart-backend", "token_endpoint_auth_method": "private_key_jwt",
             "grant_types": ["client_credentials"], "jwks": {"keys": [keys[cid].public_jwk()]},
             "scope": "system/Observation.rs", "access_token_format": fmt}
        )
    lines = [
        f"issuer = {toml_value(issuer)}",
        f'listen = "127.0.0.1:{port}"',
        f"data_dir = {toml_value(str(tmp / 'data'))}",
        'store = "memory"',
        "[tokens]",
        f"default_audience = {toml_value(FHIR)}",
    ]
    for c in clients:
        lines.append("[[clients]]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in c.items())
    config = tmp / "heartgate.toml"
    config.write_text("\n".join(lines) + "\n")
    log = open(tmp / "server.log", "wb")
    # The server reads every HEARTGATE_* variable as configuration: pass none.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTGATE_")}
    proc = subprocess.Popen([BIN, "--config", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env)
    ca = tmp / "data" / "pki" / "ca.pem"
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError("heartgate exited: " + (tmp / "server.log").read_text()[-2000:])
            try:
                if ca.exists() and httpx.get(issuer + "/jwks", verify=ssl.create_default_context(cafile=str(ca))).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError("heartgate did not start: " + (tmp / "server.log").read_text()[-2000:])
            time.sleep(0.1)
        yield Server(issuer, str(ca), keys)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def validator(s: Server, wrapper: str = "token") -> heartgate.Validator:
    intro = heartgate.Introspection(
        s.issuer + "/introspect",
        "fhir-server",
        client_key=s.keys["fhir-server"],
        assertion_audience=s.issuer + "/token",
        verify=s.ca,
        wrapper=wrapper,
    )
    return heartgate.Validator(issuer=s.issuer, audience=FHIR, jwks_uri=s.issuer + "/jwks", introspection=intro, verify=s.ca, cache=0)


@pytest.mark.parametrize("fmt", ["jwt", "wrapper", "opaque"])
def test_server_tokens_validate_in_every_format(server: Server, fmt: str) -> None:
    token = validator(server).validate(server.token(f"{fmt}-backend"), required_scopes=["system/Observation.rs"])
    assert token.format == fmt
    assert token.client_id == f"{fmt}-backend"
    assert token.permits("Observation", "s", "system")


@pytest.mark.parametrize("mode", ["token", "reference"])
def test_wrapper_tokens_introspect_whole_or_by_bare_reference(server: Server, mode: str) -> None:
    # README "Wrapper token format": the server resolves the bare `ref` as well as the
    # whole wrapper; revoking the token ends both.
    v = validator(server, wrapper=mode)
    token = server.token("wrapper-backend")
    assert v.validate(token).format == "wrapper"
    server.revoke("wrapper-backend", token)
    with pytest.raises(heartgate.InactiveTokenError):
        v.validate(token)


@pytest.mark.parametrize("fmt", ["wrapper", "opaque"])
def test_revoked_server_tokens_are_refused_rfc7009(server: Server, fmt: str) -> None:
    v = validator(server)
    token = server.token(f"{fmt}-backend")
    v.validate(token)
    server.revoke(f"{fmt}-backend", token)
    with pytest.raises(heartgate.InactiveTokenError):
        v.validate(token)


async def test_server_tokens_validate_async(server: Server) -> None:
    token = await validator(server).validate_async(server.token("opaque-backend"))
    assert token.format == "opaque"
