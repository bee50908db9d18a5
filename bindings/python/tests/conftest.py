"""Shared fixtures: keys in every algorithm (heartgate and `cryptography` views of the same
key), certificates, and a real HTTP server on 127.0.0.1 that plays the authorization
server (JWKS + RFC 7662 introspection with private_key_jwt client authentication)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

import heartgate

ISSUER = "https://as.example.test"
AUDIENCE = "https://fhir.example.test"
CLIENT_ID = "ehr-app"
ASYM = ["ES256", "PS256", "RS256", "EdDSA"]


class KeyPair:
    """One key: the heartgate SigningKey plus PEM and `cryptography` objects of it."""

    def __init__(self, alg: str, private: Any) -> None:
        self.alg = alg
        self.private = private
        self.public = private.public_key()
        self.private_pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self.public_pem = self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.signing_key = heartgate.SigningKey.from_pem(self.private_pem, alg)


def _private(alg: str) -> Any:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def keys() -> dict[str, KeyPair]:
    return {alg: KeyPair(alg, _private(alg)) for alg in ASYM}


@pytest.fixture(scope="session")
def other_keys() -> dict[str, KeyPair]:
    return {alg: KeyPair(alg, _private(alg)) for alg in ASYM}


def make_cert(cn: str) -> tuple[str, bytes]:
    """A self-signed P-256 client certificate: (PEM text, DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="session")
def client_cert() -> tuple[str, bytes]:
    return make_cert("ehr-app device")


@pytest.fixture(scope="session")
def other_cert() -> tuple[str, bytes]:
    return make_cert("thief")


class FakeAS:
    """State of the fake authorization server."""

    def __init__(self, issuer: heartgate.TokenIssuer, client_key: heartgate.SigningKey) -> None:
        self.issuer = issuer
        self.client_key = client_key
        self.jwks = issuer.jwks()
        self.active: dict[str, heartgate.IssuedToken] = {}
        self.introspections = 0
        self.jwks_fetches = 0
        self.url = ""

    def register(self, issued: heartgate.IssuedToken, reference: str | None = None) -> None:
        """Make introspection answer for this token (and for a wrapper's reference: the
        heartgate server takes the wrapper, the README's format also allows the `ref`)."""
        self.active[issued.token] = issued
        if reference is not None:
            self.active[reference] = issued

    def revoke(self, token: str) -> None:
        """Revoke the grant behind a token or reference (both spellings go inactive)."""
        issued = self.active.get(token)
        for k in [k for k, v in self.active.items() if v is issued]:
            del self.active[k]


def _handler(state: FakeAS) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # no token in any log
            pass

        def _send(self, status: int, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/jwks":
                state.jwks_fetches += 1
                self._send(200, state.jwks)
            else:
                self._send(404, "{}")

        def do_POST(self) -> None:
            if self.path != "/introspect":
                self._send(404, "{}")
                return
            length = int(self.headers.get("Content-Length", "0"))
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            state.introspections += 1
            # RFC 7523 private_key_jwt: the caller must prove it is the registered client.
            try:
                assertion = form["client_assertion"][0]
                heartgate.decode(
                    assertion,
                    state.client_key.public_key(),
                    algorithms=["ES256"],
                    audience=state.url + "/introspect",
                    issuer=CLIENT_ID,
                )
            except (KeyError, heartgate.PyJWTError):
                self._send(401, json.dumps({"error": "invalid_client"}))
                return
            token = form.get("token", [""])[0]
            issued = state.active.get(token)
            self._send(200, issued.introspection_response() if issued else '{"active":false}')

    return Handler


@pytest.fixture()
def auth_server(keys: dict[str, KeyPair]) -> Iterator[FakeAS]:
    """A real HTTP server on a free port; stopped at the end of the test."""
    issuer = heartgate.TokenIssuer(ISSUER, keys["ES256"].signing_key)
    state = FakeAS(issuer, heartgate.SigningKey.generate("ES256"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def introspection_for(state: FakeAS, wrapper: str = "token") -> heartgate.Introspection:
    return heartgate.Introspection(state.url + "/introspect", CLIENT_ID, client_key=state.client_key, wrapper=wrapper)
