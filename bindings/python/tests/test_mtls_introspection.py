"""Introspection with mutual-TLS client authentication (RFC 8705 §2) over a real TLS
socket on 127.0.0.1: the authorization server only answers the client whose certificate
it registered."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import heartgate
from conftest import AUDIENCE, CLIENT_ID, ISSUER, KeyPair


def write_cert(dir: Path, name: str, ip: bool = False) -> tuple[Path, Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        ).add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    cert = builder.sign(key, hashes.SHA256())
    cert_path, key_path = dir / f"{name}.crt", dir / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path, cert.public_bytes(serialization.Encoding.DER)


class TlsAS:
    def __init__(self, tmp: Path, keys: dict[str, KeyPair]) -> None:
        self.server_cert, self.server_key, _ = write_cert(tmp, "as", ip=True)
        self.client_cert, self.client_key, client_der = write_cert(tmp, "rs-client")
        self.registered = hashlib.sha256(client_der).hexdigest()
        self.issuer = heartgate.TokenIssuer(ISSUER, keys["ES256"].signing_key)
        self.active: dict[str, str] = {}
        self.clients: list[str] = []


@pytest.fixture()
def tls_as(tmp_path: Path, keys: dict[str, KeyPair]) -> Iterator[tuple[TlsAS, str]]:
    state = TlsAS(tmp_path, keys)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            der = self.connection.getpeercert(binary_form=True)
            form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            ok = der is not None and hashlib.sha256(der).hexdigest() == state.registered and form.get("client_id") == [CLIENT_ID]
            state.clients.append("ok" if ok else "refused")
            body = state.active.get(form["token"][0], '{"active":false}') if ok else json.dumps({"error": "invalid_client"})
            data = body.encode()
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(state.server_cert, state.server_key)
    ctx.verify_mode = ssl.CERT_OPTIONAL  # refusals are answered as invalid_client
    ctx.load_verify_locations(state.client_cert)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state, f"https://127.0.0.1:{server.server_address[1]}/introspect"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_introspection_with_mtls_client_authentication_rfc8705_2(tls_as: tuple[TlsAS, str]) -> None:
    state, url = tls_as
    issued = state.issuer.issue("user-1", CLIENT_ID, AUDIENCE, scope="patient/Observation.rs", format="opaque", context={"patient": "p-9"})
    state.active[issued.token] = issued.introspection_response()
    intro = heartgate.Introspection(url, CLIENT_ID, client_cert=(str(state.client_cert), str(state.client_key)), verify=str(state.server_cert))
    v = heartgate.Validator(issuer=ISSUER, audience=AUDIENCE, introspection=intro)
    token = v.validate(issued.token)
    assert token.patient == "p-9"
    assert state.clients == ["ok"]


async def test_async_introspection_with_mtls(tls_as: tuple[TlsAS, str]) -> None:
    state, url = tls_as
    issued = state.issuer.issue("user-1", CLIENT_ID, AUDIENCE, format="opaque")
    state.active[issued.token] = issued.introspection_response()
    intro = heartgate.Introspection(url, CLIENT_ID, client_cert=(str(state.client_cert), str(state.client_key)), verify=str(state.server_cert))
    v = heartgate.Validator(issuer=ISSUER, audience=AUDIENCE, introspection=intro)
    assert (await v.validate_async(issued.token)).format == "opaque"


def test_unregistered_client_certificate_is_refused(tls_as: tuple[TlsAS, str], tmp_path: Path) -> None:
    state, url = tls_as
    other_cert, other_key, _ = write_cert(tmp_path, "intruder")
    issued = state.issuer.issue("user-1", CLIENT_ID, AUDIENCE, format="opaque")
    state.active[issued.token] = issued.introspection_response()
    intro = heartgate.Introspection(url, CLIENT_ID, client_cert=(str(other_cert), str(other_key)), verify=str(state.server_cert))
    v = heartgate.Validator(issuer=ISSUER, audience=AUDIENCE, introspection=intro)
    with pytest.raises(heartgate.IntrospectionError):
        v.validate(issued.token)


def test_untrusted_server_certificate_is_refused(tls_as: tuple[TlsAS, str]) -> None:
    state, url = tls_as
    intro = heartgate.Introspection(url, CLIENT_ID, client_cert=(str(state.client_cert), str(state.client_key)))
    v = heartgate.Validator(issuer=ISSUER, audience=AUDIENCE, introspection=intro)
    with pytest.raises(heartgate.IntrospectionError):
        v.validate("hgat_" + "A" * 43)
