"""FastAPI / Starlette integration: a dependency that validates the bearer token.

``Depends(require_token(scopes=["patient/Observation.rs"]))`` reads the ``Authorization:
Bearer`` token (RFC 6750 §2.1) and the client certificate, validates them with a
``heartgate.Validator`` (given, or found at ``request.app.state.heartgate``), and answers:

* 401 with ``WWW-Authenticate: Bearer realm="..."`` when no token was sent (§3.1: no
  error code then), or ``error="invalid_token"`` when it is not acceptable (expired,
  tampered, revoked, wrong audience, unbound certificate...);
* 403 with ``error="insufficient_scope"`` and the ``scope`` needed;
* 503 when introspection or the JWKS is unreachable (not the caller's fault).

The client certificate comes from the TLS connection when the ASGI server exposes it (the
ASGI TLS extension, ``scope["extensions"]["tls"]["client_cert_chain"]``), or, only with
``trust_client_cert_header=True`` behind a proxy that sets it, from the RFC 9440
``Client-Cert`` header. The header is otherwise ignored: a client could forge it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Callable, Optional, Union

from fastapi import HTTPException, Request

from ._heartgate import (
    AccessToken,
    InsufficientScopeError,
    IntrospectionError,
    PyJWTError,
    parse_client_cert_header_value,
)
from ._validator import Validator

__all__ = ["client_certificate", "require_token"]


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _challenge(realm: str, error: Optional[str] = None, scope: Sequence[str] = ()) -> str:
    parts = [f"realm={_quote(realm)}"]
    if error is not None:
        parts.append(f"error={_quote(error)}")
    if scope:
        parts.append(f"scope={_quote(' '.join(scope))}")
    return "Bearer " + ", ".join(parts)


def client_certificate(request: Request, *, trust_client_cert_header: bool = False) -> Optional[Union[str, bytes]]:
    """The caller's leaf certificate (PEM or DER), or ``None``."""
    tls = request.scope.get("extensions", {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    if chain:
        leaf: Union[str, bytes] = chain[0]
        return leaf
    if trust_client_cert_header:
        value = request.headers.get("client-cert")
        if value:
            try:
                return parse_client_cert_header_value(value)
            except ValueError:
                raise HTTPException(
                    status_code=400, detail="malformed Client-Cert header"
                ) from None
    return None


def require_token(
    validator: Optional[Validator] = None,
    scopes: Sequence[str] = (),
    *,
    realm: str = "heartgate",
    trust_client_cert_header: bool = False,
) -> Callable[[Request], Awaitable[AccessToken]]:
    """A FastAPI dependency returning the validated ``AccessToken``."""
    required = list(scopes)

    async def dependency(request: Request) -> AccessToken:
        v = validator if validator is not None else getattr(request.app.state, "heartgate", None)
        if v is None:
            raise RuntimeError("no heartgate Validator: pass one or set app.state.heartgate")
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(
                status_code=401,
                detail="bearer token required",
                headers={"WWW-Authenticate": _challenge(realm)},
            )
        cert = client_certificate(request, trust_client_cert_header=trust_client_cert_header)
        try:
            return await v.validate_async(token, client_cert=cert, required_scopes=required)
        except InsufficientScopeError:
            raise HTTPException(
                status_code=403,
                detail="insufficient scope",
                headers={"WWW-Authenticate": _challenge(realm, "insufficient_scope", required)},
            ) from None
        except IntrospectionError:
            raise HTTPException(status_code=503, detail="token validation unavailable") from None
        except (PyJWTError, ValueError):
            raise HTTPException(
                status_code=401,
                detail="invalid token",
                headers={"WWW-Authenticate": _challenge(realm, "invalid_token")},
            ) from None

    return dependency
