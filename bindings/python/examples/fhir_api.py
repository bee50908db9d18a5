"""An example FHIR-style API guarded by heartgate.

``GET /Patient/{id}/Observation`` serves a patient's observations only to a token whose
SMART scopes allow reading Observations and, for ``patient/`` scopes, whose launch
context names that very patient. ``user/`` and ``system/`` scopes reach any patient (the
EHR applies its own user-level access rules behind them).

Run it (after ``pip install heartgate[fastapi] uvicorn``)::

    HEARTGATE_ISSUER=https://as.example HEARTGATE_AUDIENCE=https://fhir.example \\
    HEARTGATE_JWKS_URI=https://as.example/jwks uvicorn fhir_api:app
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import Depends, FastAPI, HTTPException

import heartgate
from heartgate.fastapi import require_token

OBSERVATIONS: dict[str, list[dict[str, Any]]] = {
    "p-1": [{"resourceType": "Observation", "id": "o-1", "code": "8867-4", "valueQuantity": 72}],
    "p-2": [{"resourceType": "Observation", "id": "o-2", "code": "8480-6", "valueQuantity": 121}],
}


def may_read(token: heartgate.AccessToken, patient_id: str, resource: str, op: str) -> bool:
    """SMART App Launch v2: who may read `resource` of `patient_id`."""
    if token.permits(resource, op, "user") or token.permits(resource, op, "system"):
        return True
    return token.permits(resource, op, "patient") and token.patient == patient_id


def create_app(validator: heartgate.Validator, *, trust_client_cert_header: bool = False) -> FastAPI:
    app = FastAPI(title="heartgate FHIR example")
    app.state.heartgate = validator
    bearer = require_token(trust_client_cert_header=trust_client_cert_header)

    @app.get("/Patient/{patient_id}/Observation")
    async def observations(patient_id: str, token: heartgate.AccessToken = Depends(bearer)) -> dict[str, Any]:
        if not (may_read(token, patient_id, "Observation", "r") and may_read(token, patient_id, "Observation", "s")):
            # 403, not 404: the token is valid, it just does not reach this patient.
            raise HTTPException(
                status_code=403,
                detail="insufficient scope",
                headers={"WWW-Authenticate": 'Bearer error="insufficient_scope", scope="patient/Observation.rs"'},
            )
        entries = [{"resource": o} for o in OBSERVATIONS.get(patient_id, [])]
        return {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        return {"resourceType": "CapabilityStatement", "status": "active", "fhirVersion": "4.0.1"}

    @app.get("/admin/audit", dependencies=[Depends(require_token(scopes=["system/AuditEvent.rs"]))])
    async def audit() -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "searchset", "total": 0}

    return app


def _from_environment() -> FastAPI:
    validator = heartgate.Validator(
        issuer=os.environ.get("HEARTGATE_ISSUER", "https://as.example"),
        audience=os.environ.get("HEARTGATE_AUDIENCE", "https://fhir.example"),
        jwks_uri=os.environ.get("HEARTGATE_JWKS_URI", "https://as.example/jwks"),
    )
    return create_app(validator)


app = _from_environment() if os.environ.get("HEARTGATE_ISSUER") else None
