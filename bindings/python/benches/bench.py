"""heartgate vs PyJWT vs joserfc, in one process and one run.

Measures encode (sign) and decode (verify + claim checks) for ES256, EdDSA, PS256 and
RS256, each library with its fastest key form (pre-loaded key objects), plus PyJWT with
PEM strings (how its documentation passes keys), and heartgate.Validator.validate on a
cached introspection answer and on an offline JWT. Prints a Markdown table of µs per
operation and heartgate's speed-up ratios.

In the same run, side by side, it also measures the floor under each library: one bare
ring signature / verification of the same signing input (``_RingFloor``: one Python call
into ring, nothing else) and one bare ``cryptography`` (OpenSSL) signature / verification,
what PyJWT calls. ``heartgate - ring`` is then heartgate's own work per call (JOSE header,
JSON, base64, claim checks, result dict, GIL release), and ``PyJWT / ring`` is the best
ratio any binding built on ring could reach against PyJWT.

    python benches/bench.py [--seconds 0.3] [--clock cpu|wall]

The clock is the calling thread's CPU time by default (``time.thread_time``): on a shared
machine it leaves out the time the process waits for a CPU, which wall time counts and
which has nothing to do with either library. Every library does all its work on the
calling thread, so on an idle machine both clocks agree; ``--clock wall`` uses
``time.perf_counter``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any, Callable

import httpx
import jwt as pyjwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jwt import JWTClaimsRegistry

import heartgate
from heartgate import _heartgate

ALGS = ["ES256", "EdDSA", "PS256", "RS256"]

clock: Callable[[], float] = time.thread_time


def calibrate(fn: Callable[[], Any], seconds: float) -> int:
    n = 1
    while True:
        t = clock()
        for _ in range(n):
            fn()
        if clock() - t > seconds / 7:
            return n
        n *= 2


def measure(fns: dict[str, Callable[[], Any]], seconds: float, rounds: int = 7) -> dict[str, float]:
    """Best-of-`rounds` microseconds per call, the candidates interleaved round by round so
    that a noisy neighbour slows all of them alike."""
    sizes = {k: calibrate(f, seconds) for k, f in fns.items()}
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            n = sizes[k]
            t = clock()
            for _ in range(n):
                f()
            best[k] = min(best[k], (clock() - t) / n * 1e6)
    return best


def per_op(fn: Callable[[], Any], seconds: float) -> float:
    return measure({"f": fn}, seconds)["f"]


def openssl_floor(alg: str, priv: Any, pub: Any, message: bytes) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """One bare `cryptography` signature and verification of `message`, as PyJWT makes
    them (signature objects built once, so this is the floor under PyJWT's call)."""
    if alg == "ES256":
        ecdsa = ec.ECDSA(hashes.SHA256())
        der = priv.sign(message, ecdsa)
        return (lambda: priv.sign(message, ecdsa)), (lambda: pub.verify(der, message, ecdsa))
    if alg == "EdDSA":
        sig = priv.sign(message)
        return (lambda: priv.sign(message)), (lambda: pub.verify(sig, message))
    pad: Any = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32) if alg == "PS256" else padding.PKCS1v15()
    sha = hashes.SHA256()
    sig = priv.sign(message, pad, sha)
    return (lambda: priv.sign(message, pad, sha)), (lambda: pub.verify(sig, message, pad, sha))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=0.3, help="time budget per measurement")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="thread CPU time (default) or wall time")
    args = ap.parse_args()
    s = args.seconds
    global clock
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter

    now = int(time.time())
    claims = {"iss": "https://as.example", "sub": "user-42", "aud": "https://fhir.example", "iat": now, "exp": now + 3600, "scope": "patient/Observation.rs"}
    rows = []
    for alg in ALGS:
        hg = heartgate.SigningKey.generate(alg)
        priv_pem = hg.to_pem().encode()
        priv: Any = serialization.load_pem_private_key(priv_pem, None)
        pub: Any = priv.public_key()
        pub_pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        hg_pub = hg.public_key()
        key_cls: Any = {"ES256": ECKey, "EdDSA": OKPKey}.get(alg, RSAKey)
        jkey: Any = key_cls.import_key(priv_pem)
        registry = JWTClaimsRegistry(exp={"essential": True}, aud={"essential": True, "value": "https://fhir.example"})
        token = heartgate.encode(claims, hg)
        aud = "https://fhir.example"

        def jose_decode() -> None:
            t = jose_jwt.decode(token, jkey, algorithms=[alg])
            registry.validate(t.claims)

        message = token.rsplit(".", 1)[0].encode()
        floor = _heartgate._RingFloor(hg)
        ring_sig = floor.sign(message)
        assert floor.verify(message, ring_sig)
        ossl_sign, ossl_verify = openssl_floor(alg, priv, pub, message)

        r: dict[str, Any] = {"alg": alg}
        r.update(
            measure(
                {
                    "enc_hg": lambda: heartgate.encode(claims, hg),
                    "enc_pyjwt": lambda: pyjwt.encode(claims, priv, algorithm=alg),
                    "enc_pyjwt_pem": lambda: pyjwt.encode(claims, priv_pem, algorithm=alg),
                    "enc_jose": lambda: jose_jwt.encode({"alg": alg}, claims, jkey, algorithms=[alg]),
                    "enc_ring": lambda: floor.sign(message),
                    "enc_ossl": ossl_sign,
                },
                s,
            )
        )
        r.update(
            measure(
                {
                    "dec_hg": lambda: heartgate.decode(token, hg_pub, algorithms=[alg], audience=aud),
                    "dec_hg_pem": lambda: heartgate.decode(token, pub_pem, algorithms=[alg], audience=aud),
                    "dec_pyjwt": lambda: pyjwt.decode(token, pub, algorithms=[alg], audience=aud),
                    "dec_pyjwt_pem": lambda: pyjwt.decode(token, pub_pem, algorithms=[alg], audience=aud),
                    "dec_jose": jose_decode,
                    "dec_ring": lambda: floor.verify(message, ring_sig),
                    "dec_ossl": ossl_verify,
                },
                s,
            )
        )
        rows.append(r)

    # Validator: an opaque token whose introspection answer is cached, and an offline JWT.
    issuer = heartgate.TokenIssuer("https://as.example", heartgate.SigningKey.generate("ES256"))
    opaque = issuer.issue("user-42", "app", "https://fhir.example", scope="patient/Observation.rs", format="opaque", context={"patient": "p-1"})
    answer = opaque.introspection_response().encode()
    intro = heartgate.Introspection(
        "https://as.example/introspect", "rs", client_key=heartgate.SigningKey.generate(),
        transport=httpx.MockTransport(lambda req: httpx.Response(200, content=answer)),
    )
    v = heartgate.Validator(issuer="https://as.example", audience="https://fhir.example", jwks=issuer.jwks(), introspection=intro, cache=300)
    v.validate(opaque.token)
    jwt_at = issuer.issue("user-42", "app", "https://fhir.example", scope="patient/Observation.rs").token
    cached = per_op(lambda: v.validate(opaque.token, required_scopes=["patient/Observation.r"]), s)
    offline = per_op(lambda: v.validate(jwt_at, required_scopes=["patient/Observation.r"]), s)
    hits, misses, _ = v.cache_stats()
    gil = per_op(_heartgate._RingFloor.gil_round_trip, s)

    print(f"# heartgate {heartgate.__version__} on {platform.python_implementation()} {platform.python_version()}, PyJWT {pyjwt.__version__}, {platform.machine()}")
    print()
    clock_name = "thread CPU time" if args.clock == "cpu" else "wall time"
    print(f"µs per operation ({clock_name}, best of 7 interleaved rounds; lower is better); ratio = other / heartgate (higher is better for heartgate).")
    print("Key objects pre-loaded for every library; 'PEM' = PyJWT given PEM bytes on every call.")
    print()
    print("| alg | op | heartgate | PyJWT | PyJWT (PEM) | joserfc | × PyJWT | × PyJWT (PEM) | × joserfc |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        for op in ("enc", "dec"):
            hg = r[f"{op}_hg"]
            py, pem, jo = r[f"{op}_pyjwt"], r[f"{op}_pyjwt_pem"], r[f"{op}_jose"]
            name = "encode" if op == "enc" else "decode"
            print(f"| {r['alg']} | {name} | {hg:.1f} | {py:.1f} | {pem:.1f} | {jo:.1f} | {py / hg:.1f} | {pem / hg:.1f} | {jo / hg:.1f} |")
    print()
    print("Where the time goes: the floor under each library, measured in the same run. 'ring' = one bare")
    print("ring signature / verification of the token's signing input (one Python call, nothing else);")
    print("'OpenSSL' = the same through `cryptography`, what PyJWT calls. PyJWT / ring = the best ratio a")
    print("binding on ring could reach against PyJWT if its own work cost nothing.")
    print()
    print("| alg | op | ring | heartgate | heartgate − ring | OpenSSL | PyJWT | PyJWT − OpenSSL | PyJWT / ring |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        for op in ("enc", "dec"):
            ring, hg, ossl, py = r[f"{op}_ring"], r[f"{op}_hg"], r[f"{op}_ossl"], r[f"{op}_pyjwt"]
            name = "encode" if op == "enc" else "decode"
            print(f"| {r['alg']} | {name} | {ring:.1f} | {hg:.1f} | {hg - ring:.1f} | {ossl:.1f} | {py:.1f} | {py - ossl:.1f} | {py / ring:.1f} |")
    print()
    print(f"GIL release and re-acquire (no work), once per heartgate call: {gil:.2f} µs")
    print()
    print(f"heartgate.decode with a PEM string (parsed-key cache): " + ", ".join(f"{r['alg']} {r['dec_hg_pem']:.1f} µs" for r in rows))
    print()
    print("| Validator.validate | µs | ops/s (1 thread) |")
    print("| --- | ---: | ---: |")
    print(f"| opaque token, introspection cache hit | {cached:.1f} | {1e6 / cached:,.0f} |")
    print(f"| RFC 9068 JWT (ES256), offline | {offline:.1f} | {1e6 / offline:,.0f} |")
    print()
    es = next(r for r in rows if r["alg"] == "ES256")
    ed = next(r for r in rows if r["alg"] == "EdDSA")
    targets = {
        "ES256 encode": es["enc_pyjwt"] / es["enc_hg"],
        "ES256 decode": es["dec_pyjwt"] / es["dec_hg"],
        "EdDSA encode": ed["enc_pyjwt"] / ed["enc_hg"],
        "EdDSA decode": ed["dec_pyjwt"] / ed["dec_hg"],
    }
    print("target ≥ 3 × PyJWT (key objects): " + ", ".join(f"{k} {x:.1f}× {'met' if x >= 3 else 'NOT met'}" for k, x in targets.items()))
    print(f"(introspection cache: {hits} hits, {misses} misses)")
    ceilings = {
        "ES256 encode": es["enc_pyjwt"] / es["enc_ring"],
        "ES256 decode": es["dec_pyjwt"] / es["dec_ring"],
        "EdDSA encode": ed["enc_pyjwt"] / ed["enc_ring"],
        "EdDSA decode": ed["dec_pyjwt"] / ed["dec_ring"],
    }
    print("ceiling (PyJWT / ring alone): " + ", ".join(f"{k} {x:.1f}×" for k, x in ceilings.items()))
    print(
        json.dumps(
            {
                "ratios_vs_pyjwt": {k: round(x, 2) for k, x in targets.items()},
                "ceiling_pyjwt_over_ring": {k: round(x, 2) for k, x in ceilings.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
