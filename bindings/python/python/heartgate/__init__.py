"""heartgate: zero-trust token validation for health data, on a Rust core.

* ``encode`` / ``decode``: PyJWT-compatible (same arguments, same exception names) for
  ES256, PS256, RS256, EdDSA, and HS256 with an explicit shared secret only.
* ``Validator``: a resource server's check of RFC 9068 JWT access tokens, heartgate
  wrapper tokens and opaque tokens (RFC 7662 introspection), RFC 8705 certificate
  binding and SMART App Launch scopes.
* ``heartgate.fastapi``: a FastAPI / Starlette dependency.

Every cryptographic and claim check runs in heartgate-core (Rust) with the GIL released.
What heartgate refuses that PyJWT allows: ``alg: none`` and disabling signature
verification, tokens without ``exp`` (THREATS J21), HS256 with anything that looks like an
asymmetric key (J2), HS256 secrets under 32 bytes (RFC 7518 §3.2), a leeway over 60 s.
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Optional, Union

from . import _heartgate
from ._heartgate import (
    AccessToken,
    CertificateBindingError,
    DecodeError,
    ExpiredSignatureError,
    ImmatureSignatureError,
    InactiveTokenError,
    InsufficientScopeError,
    InternalError,
    IntrospectionError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuedAtError,
    InvalidIssuerError,
    InvalidKeyError,
    InvalidSignatureError,
    InvalidTokenError,
    IssuedToken,
    KeySet,
    MissingRequiredClaimError,
    PyJWTError,
    SigningKey,
    TokenIssuer,
    UnknownKeyError,
    VerifyingKey,
    get_unverified_header,
    thumbprint,
)
from ._validator import Introspection, Validator

__version__: str = _heartgate.__version__

__all__ = [
    "AccessToken",
    "CertificateBindingError",
    "DecodeError",
    "ExpiredSignatureError",
    "ImmatureSignatureError",
    "InactiveTokenError",
    "InsufficientScopeError",
    "InternalError",
    "Introspection",
    "IntrospectionError",
    "InvalidAlgorithmError",
    "InvalidAudienceError",
    "InvalidIssuedAtError",
    "InvalidIssuerError",
    "InvalidKeyError",
    "InvalidSignatureError",
    "InvalidSubjectError",
    "InvalidTokenError",
    "IssuedToken",
    "KeySet",
    "MissingRequiredClaimError",
    "PyJWTError",
    "SigningKey",
    "TokenIssuer",
    "UnknownKeyError",
    "Validator",
    "VerifyingKey",
    "decode",
    "encode",
    "get_unverified_header",
    "thumbprint",
]

Key = Union[str, bytes, Mapping[str, Any], SigningKey, VerifyingKey, KeySet]


class InvalidSubjectError(InvalidTokenError):
    """``sub`` is not the expected subject (PyJWT's ``subject=`` check)."""


_TIME_CLAIMS = ("exp", "iat", "nbf")
_HEADER_NAMES = frozenset({"alg", "typ", "kid"})
_VERIFY_OPTIONS = frozenset(
    {
        "verify_signature",
        "verify_exp",
        "verify_nbf",
        "verify_iat",
        "verify_aud",
        "verify_iss",
        "verify_sub",
        "verify_jti",
    }
)


def _numeric_date(value: Any) -> Any:
    if isinstance(value, datetime):
        return calendar.timegm(value.utctimetuple())
    return value


def encode(
    payload: Mapping[str, Any],
    key: Key,
    algorithm: Optional[str] = None,
    headers: Optional[Mapping[str, Any]] = None,
    json_encoder: Optional[type[json.JSONEncoder]] = None,
) -> str:
    """Sign ``payload`` as a compact JWT (PyJWT's ``jwt.encode``).

    ``key`` is a PKCS#8 PEM private key (str or bytes), a ``SigningKey``, or for
    ``algorithm="HS256"`` only, a shared secret of at least 32 bytes. ``algorithm``
    defaults to the ``SigningKey``'s own, otherwise ES256. ``headers`` may set ``typ``
    (default ``"JWT"``) and ``kid``; other header parameters are refused.
    """
    if type(payload) is not dict and not isinstance(payload, Mapping):
        raise TypeError("Expecting a mapping object, as JWT only supports JSON objects as payloads.")
    if algorithm is None:
        algorithm = key.algorithm if isinstance(key, SigningKey) else "ES256"
    typ: Optional[str] = "JWT"
    kid: Optional[str] = None
    if headers:
        unknown = set(headers) - _HEADER_NAMES
        if unknown:
            raise ValueError(f"unsupported header parameters: {sorted(unknown)}")
        if "alg" in headers and headers["alg"] != algorithm:
            raise InvalidAlgorithmError("header alg differs from the algorithm argument")
        if "typ" in headers:
            typ = headers["typ"]
        kid = headers.get("kid")
    if json_encoder is None and type(payload) is dict:
        # Plain JSON values (the usual claims) are serialised in Rust, exactly as the
        # json.dumps below would; anything else (datetime, subclasses, ...) returns None.
        token = _heartgate._encode_claims(payload, key, algorithm, typ, kid)
        if token is not None:
            return token
    claims = dict(payload)
    for name in _TIME_CLAIMS:
        if name in claims:
            claims[name] = _numeric_date(claims[name])
    # allow_nan=False: NaN and Infinity are not JSON (RFC 8259 §6); PyJWT would sign them.
    body = json.dumps(claims, separators=(",", ":"), cls=json_encoder, allow_nan=False).encode()
    return _heartgate._encode(body, key, algorithm, typ, kid)


def _audience_list(audience: Union[str, Iterable[str], None]) -> Optional[list[str]]:
    if audience is None:
        return None
    if isinstance(audience, str):
        return [audience]
    values = list(audience)
    if not all(isinstance(a, str) for a in values):
        raise TypeError("audience must be a string or an iterable of strings")
    return values


def decode(
    jwt: Union[str, bytes],
    key: Key,
    algorithms: Optional[Iterable[str]] = None,
    *,
    audience: Union[str, Iterable[str], None] = None,
    issuer: Optional[str] = None,
    subject: Optional[str] = None,
    leeway: Union[int, float, timedelta] = 0,
    options: Optional[Mapping[str, Any]] = None,
) -> dict[str, Any]:
    """Verify ``jwt`` and return its claims (PyJWT's ``jwt.decode``).

    ``algorithms`` is required. ``key`` is a public key (SPKI / certificate PEM, a JWK
    dict, a ``VerifyingKey`` or ``SigningKey``), a JWK Set (dict with ``keys`` or a
    ``KeySet``, looked up by ``kid``), or for HS256 only, a shared secret.

    ``options`` understands PyJWT's ``require`` (list of claims) and ``strict_aud``; the
    ``verify_*`` switches may only be ``True``: disabling a check is refused with
    ``ValueError``. ``exp`` is always required.
    """
    if algorithms is None:
        raise DecodeError(
            'It is required that you pass in a value for the "algorithms" argument when calling decode().'
        )
    if isinstance(algorithms, str):
        raise TypeError("algorithms must be a list of algorithm names, not a string")
    require: list[str] = []
    strict_aud = False
    if options:
        for name, value in options.items():
            if name in _VERIFY_OPTIONS:
                if value is not True:
                    raise ValueError(f"heartgate does not allow disabling {name}")
            elif name == "require":
                require = [str(c) for c in value]
            elif name == "strict_aud":
                strict_aud = bool(value)
    if isinstance(leeway, timedelta):
        leeway = leeway.total_seconds()
    if not isinstance(issuer, (str, type(None))):
        issuer_list = list(issuer)
        if len(issuer_list) != 1:
            raise ValueError("heartgate checks exactly one issuer")
        issuer = issuer_list[0]
    claims = _heartgate._decode(
        jwt,
        key,
        list(algorithms),
        _audience_list(audience),
        issuer,
        int(leeway),
        require,
        strict_aud,
    )
    if subject is not None and claims.get("sub") != subject:
        raise InvalidSubjectError("Invalid subject")
    return claims
