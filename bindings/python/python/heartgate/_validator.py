"""The resource-server validator: the HTTP half (httpx) around the Rust ``_Validator``.

Rust does every check (RFC 9068 offline validation, the introspection cache, wrapper /
reference agreement, RFC 8705 binding, SMART scopes); this module only fetches the JWKS
and calls the RFC 7662 introspection endpoint, synchronously or with ``async``.
Nothing here logs a token.
"""

from __future__ import annotations

import secrets
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Optional, Union

import httpx

from . import _heartgate
from ._heartgate import (
    AccessToken,
    IntrospectionError,
    InvalidTokenError,
    KeySet,
    SigningKey,
    UnknownKeyError,
)

Cert = Union[str, bytes]
Verify = Union[bool, str, ssl.SSLContext]

_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_MAX_BODY = 64 * 1024


def _ssl_context(verify: Verify, client_cert: Optional[tuple[str, str]]) -> Union[bool, ssl.SSLContext]:
    if isinstance(verify, ssl.SSLContext):
        ctx = verify
    elif client_cert is None:
        return verify if isinstance(verify, bool) else ssl.create_default_context(cafile=verify)
    elif verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    if client_cert is not None:
        ctx.load_cert_chain(client_cert[0], client_cert[1])
    return ctx


def _body(response: httpx.Response, what: str) -> bytes:
    if response.status_code != 200:
        raise IntrospectionError(f"{what} answered HTTP {response.status_code}")
    body = response.content
    if len(body) > _MAX_BODY:
        raise IntrospectionError(f"{what} answer too large")
    return body


class _Clients:
    """httpx clients, made on first use (an SSL context costs a few milliseconds)."""

    def __init__(
        self,
        verify: Union[bool, ssl.SSLContext, str],
        timeout: float,
        transport: Optional[httpx.BaseTransport],
        async_transport: Optional[httpx.AsyncBaseTransport],
    ) -> None:
        self._verify = verify
        self._timeout = timeout
        self._transport = transport
        self._async_transport = async_transport
        self._sync: Optional[httpx.Client] = None
        self._async: Optional[httpx.AsyncClient] = None
        self._lock = threading.Lock()

    def _tls(self) -> Union[bool, ssl.SSLContext]:
        if isinstance(self._verify, str):
            return ssl.create_default_context(cafile=self._verify)
        return self._verify

    def sync(self) -> httpx.Client:
        with self._lock:
            if self._sync is None:
                self._sync = httpx.Client(verify=self._tls(), timeout=self._timeout, transport=self._transport)
            return self._sync

    def async_(self) -> httpx.AsyncClient:
        with self._lock:
            if self._async is None:
                self._async = httpx.AsyncClient(
                    verify=self._tls(), timeout=self._timeout, transport=self._async_transport
                )
            return self._async

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.aclose()


class Introspection:
    """An RFC 7662 introspection client.

    Client authentication is ``private_key_jwt`` (RFC 7523, with ``client_key``) or
    mutual TLS (RFC 8705 §2, with ``client_cert=(certfile, keyfile)``), or both.
    ``wrapper`` says what a wrapper token's introspection sends: ``"token"`` (the whole
    wrapper) or ``"reference"`` (its bare ``ref``); the heartgate server resolves both.
    ``transport`` / ``async_transport`` are httpx transports (for tests and proxies).
    """

    def __init__(
        self,
        endpoint: str,
        client_id: str,
        *,
        client_key: Optional[SigningKey] = None,
        client_cert: Optional[tuple[str, str]] = None,
        assertion_audience: Optional[str] = None,
        verify: Verify = True,
        timeout: float = 5.0,
        wrapper: str = "token",
        transport: Optional[httpx.BaseTransport] = None,
        async_transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        if wrapper not in ("token", "reference"):
            raise ValueError('wrapper must be "token" or "reference"')
        self.wrapper = wrapper
        if client_key is None and client_cert is None:
            raise ValueError("introspection needs client authentication: client_key (private_key_jwt) or client_cert (mTLS)")
        self.endpoint = endpoint
        self.client_id = client_id
        self._client_key = client_key
        self._assertion_audience = assertion_audience or endpoint
        self._http = _Clients(_ssl_context(verify, client_cert), timeout, transport, async_transport)

    def _form(self, token: str) -> dict[str, str]:
        form = {"token": token, "token_type_hint": "access_token", "client_id": self.client_id}
        if self._client_key is not None:
            now = int(time.time())
            claims = {
                "iss": self.client_id,
                "sub": self.client_id,
                "aud": self._assertion_audience,
                "jti": secrets.token_urlsafe(16),
                "iat": now,
                "exp": now + 60,
            }
            from . import encode

            form["client_assertion_type"] = _ASSERTION_TYPE
            form["client_assertion"] = encode(claims, self._client_key)
        return form

    def introspect(self, token: str) -> bytes:
        """POST ``token`` to the endpoint; the response body (JSON)."""
        try:
            r = self._http.sync().post(self.endpoint, data=self._form(token), headers={"Accept": "application/json"})
        except httpx.HTTPError as e:
            raise IntrospectionError(f"introspection request failed: {type(e).__name__}") from None
        return _body(r, "introspection endpoint")

    async def introspect_async(self, token: str) -> bytes:
        """``introspect`` with ``await``."""
        try:
            r = await self._http.async_().post(
                self.endpoint, data=self._form(token), headers={"Accept": "application/json"}
            )
        except httpx.HTTPError as e:
            raise IntrospectionError(f"introspection request failed: {type(e).__name__}") from None
        return _body(r, "introspection endpoint")

    def close(self) -> None:
        """Close the synchronous HTTP client."""
        self._http.close()

    async def aclose(self) -> None:
        """Close the asynchronous HTTP client."""
        await self._http.aclose()


class Validator:
    """Validates access tokens for one resource server.

    ``issuer`` and ``audience`` are compared exactly (THREATS J26, J27). Keys come from
    ``jwks`` (a JWK Set dict / JSON text / ``KeySet``) or are fetched from ``jwks_uri``,
    then refetched on an unknown ``kid`` at most once per ``refetch_interval`` seconds
    (J6). ``introspection`` is needed for wrapper and opaque tokens; answers are cached in
    Rust for at most ``cache`` seconds (0 disables the cache).
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks: Union[KeySet, Mapping[str, Any], str, bytes, None] = None,
        jwks_uri: Optional[str] = None,
        introspection: Optional[Introspection] = None,
        leeway: int = 10,
        cache: int = 30,
        algorithms: Optional[Iterable[str]] = None,
        refetch_interval: int = 60,
        rsa_algorithm: Optional[str] = None,
        verify: Verify = True,
        timeout: float = 5.0,
        transport: Optional[httpx.BaseTransport] = None,
        async_transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        if jwks is None and jwks_uri is None and introspection is None:
            raise ValueError("a Validator needs jwks, jwks_uri or introspection")
        self._core = _heartgate._Validator(
            issuer,
            audience,
            leeway,
            cache,
            10_000,
            refetch_interval,
            list(algorithms) if algorithms is not None else None,
            introspection is not None and introspection.wrapper == "reference",
        )
        self.issuer = issuer
        self.audience = audience
        self._rsa_algorithm = rsa_algorithm
        self._introspection = introspection
        self._jwks_uri = jwks_uri
        self._fetched = False
        self._lock = threading.Lock()
        if jwks is not None:
            self._core.set_keys(jwks if isinstance(jwks, KeySet) else KeySet.from_jwks(jwks, rsa_algorithm))
        self._http = _Clients(verify, timeout, transport, async_transport)

    # --- JWKS ---------------------------------------------------------------------------

    def _install(self, body: bytes) -> None:
        try:
            keys = KeySet.from_jwks(body, self._rsa_algorithm)
        except Exception as e:  # a bad JWKS is the server's fault, not the token's
            raise IntrospectionError(f"the JWKS could not be used: {type(e).__name__}") from None
        self._core.set_keys(keys)
        self._fetched = True

    def refresh_keys(self) -> None:
        """Fetch the JWKS from ``jwks_uri`` now."""
        if self._jwks_uri is None:
            raise ValueError("no jwks_uri configured")
        try:
            r = self._http.sync().get(self._jwks_uri, headers={"Accept": "application/json"})
        except httpx.HTTPError as e:
            raise IntrospectionError(f"JWKS request failed: {type(e).__name__}") from None
        self._install(_body(r, "JWKS endpoint"))

    async def refresh_keys_async(self) -> None:
        """``refresh_keys`` with ``await``."""
        if self._jwks_uri is None:
            raise ValueError("no jwks_uri configured")
        try:
            r = await self._http.async_().get(self._jwks_uri, headers={"Accept": "application/json"})
        except httpx.HTTPError as e:
            raise IntrospectionError(f"JWKS request failed: {type(e).__name__}") from None
        self._install(_body(r, "JWKS endpoint"))

    def _needs_first_fetch(self) -> bool:
        return self._jwks_uri is not None and not self._fetched

    def _check(self, token: str) -> Any:
        if self._needs_first_fetch():
            with self._lock:
                if self._needs_first_fetch():
                    self.refresh_keys()
        try:
            return self._core.check(token)
        except UnknownKeyError:
            # J6: refetch at most once per interval, whatever the number of bad tokens.
            if self._jwks_uri is None or not self._core.may_refetch():
                raise
            self.refresh_keys()
            return self._core.check(token)

    async def _check_async(self, token: str) -> Any:
        if self._needs_first_fetch():
            await self.refresh_keys_async()
        try:
            return self._core.check(token)
        except UnknownKeyError:
            if self._jwks_uri is None or not self._core.may_refetch():
                raise
            await self.refresh_keys_async()
            return self._core.check(token)

    # --- validation -----------------------------------------------------------------------

    @staticmethod
    def _token_text(token: Union[str, bytes]) -> str:
        # THREATS F1: anything but an ASCII str or bytes is a malformed token, reported
        # as a heartgate exception (never a TypeError or UnicodeError from the binding).
        if isinstance(token, bytes):
            try:
                return token.decode("ascii")
            except UnicodeDecodeError:
                raise _heartgate.DecodeError("token is not ASCII") from None
        if not isinstance(token, str) or not token.isascii():
            raise _heartgate.DecodeError("token must be an ASCII str or bytes")
        return token

    def _pending(self, check: Any) -> Optional[str]:
        t: Optional[str] = check.introspection_token
        if t is not None and self._introspection is None:
            raise InvalidTokenError(f"{check.format} tokens need introspection, and none is configured")
        return t

    def validate(
        self,
        token: Union[str, bytes],
        *,
        client_cert: Optional[Cert] = None,
        required_scopes: Iterable[str] = (),
    ) -> AccessToken:
        """Validate ``token``; ``client_cert`` (PEM or DER) is the caller's TLS client
        certificate, required when the token is certificate-bound (RFC 8705 §3)."""
        check = self._check(self._token_text(token))
        pending = self._pending(check)
        body = self._introspection.introspect(pending) if pending is not None and self._introspection else None
        return self._core.complete(check, body, client_cert, list(required_scopes))

    async def validate_async(
        self,
        token: Union[str, bytes],
        *,
        client_cert: Optional[Cert] = None,
        required_scopes: Iterable[str] = (),
    ) -> AccessToken:
        """``validate`` with ``await`` (for ASGI applications)."""
        check = await self._check_async(self._token_text(token))
        pending = self._pending(check)
        body = (
            await self._introspection.introspect_async(pending)
            if pending is not None and self._introspection
            else None
        )
        return self._core.complete(check, body, client_cert, list(required_scopes))

    def forget(self, token: str) -> int:
        """Drop the cached introspection answer of ``token`` (an opaque token or a
        wrapper's reference)."""
        n: int = self._core.forget(token)
        return n

    def cache_stats(self) -> tuple[int, int, int]:
        """(hits, misses, entries) of the introspection cache."""
        stats: tuple[int, int, int] = self._core.cache_stats()
        return stats
