//! The CIBA authentication device (the patient's phone, CIBA Core 1.0 §1 "AD"): pairing
//! with the code the user read on heartgate's devices page, the signed request that
//! lists pending approvals, and the signed decision.
//!
//! Built to match `core/src/ciba/device.rs` and the server's `/device/pair`,
//! `/device/requests` and `/device/decision`: the device key is a public EC P-256 JWK
//! (ES256 only); every device JWT has header `kid` = device id, claims `iss` = device id,
//! `aud` = the issuer, `iat`, `exp` = `iat` + 60 (≤ 120), and a fresh `jti` that the server
//! accepts once. A decision adds `request_ref` (as listed), `approve` (boolean) and
//! `binding_message_hash` (base64url SHA-256 of the message shown; absent when the request
//! has none, THREATS B7/B14).
//!
//! NOTE: the decision names the request by `request_ref`, not `auth_req_id` as the
//! issue's wording has it: core decided so (the device never holds a value a client
//! redeems for tokens; see the NOTE in `core/src/ciba/device.rs`).

use std::sync::Arc;

use heartgate_core::ciba::device::DEVICE_ID_LEN;
use heartgate_core::clock::UnixTime;
use heartgate_core::jose::{Algorithm, AlgorithmSet};
use serde_json::{json, Map, Value};

use crate::error::{HeartgateError, Result};
use crate::signer::{public_key, sign_jwt, Signer};
use crate::{error_from_body, json_object, now, random_b64};

/// Lifetime of a device JWT, seconds (the server accepts ≤ 120).
const DEVICE_JWT_LIFETIME: i64 = 60;

/// A JSON POST for the app to send.
#[derive(uniffi::Record)]
pub struct JsonPost {
    /// Where to POST.
    pub url: String,
    /// The JSON body (`Content-Type: application/json`).
    pub body: String,
}

/// A device API call: send `Authorization` as is.
#[derive(uniffi::Record)]
pub struct DeviceRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// The URL.
    pub url: String,
    /// The `Authorization` header value: `Bearer <device JWT>`.
    pub authorization: String,
}

/// A pending CIBA request the device's user may decide.
#[derive(uniffi::Record, Debug)]
pub struct PendingApproval {
    /// The request's reference, for [`CibaDevice::decision_request`].
    pub request_ref: String,
    /// The client asking.
    pub client_id: String,
    /// The client's display name, if registered.
    pub client_name: Option<String>,
    /// Requested scopes.
    pub scope: String,
    /// Requested ACR values, if any.
    pub acr_values: Option<String>,
    /// The binding message to show the user, if any (CIBA Core §7.1).
    pub binding_message: Option<String>,
    /// When the request was made, seconds since the epoch.
    pub created_at: i64,
    /// When it expires, seconds since the epoch.
    pub expires_at: i64,
}

/// The server's record of a decision.
#[derive(uniffi::Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceDecision {
    /// The request was approved.
    Approved,
    /// The request was denied.
    Denied,
}

fn endpoint(issuer: &str, path: &str) -> Result<String> {
    match url::Url::parse(issuer) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() && u.query().is_none() => {}
        _ => return Err(HeartgateError::argument("issuer")),
    }
    Ok(format!("{}{path}", issuer.trim_end_matches('/')))
}

fn es256_jwk(signer: &dyn Signer) -> Result<Value> {
    let key = public_key(signer)?;
    if key.algorithm() != Algorithm::ES256 {
        return Err(HeartgateError::argument("device_key_must_be_p256"));
    }
    Ok(Value::Object(key.to_jwk()))
}

/// The pairing request (`POST {issuer}/device/pair`, JSON `{"code", "jwk", "name"}`):
/// the code the user read on the devices page, the signer's public P-256 JWK, and a name
/// for the device. The server rate-limits pairing attempts.
#[uniffi::export]
pub fn device_pairing_request(
    issuer: String,
    pairing_code: String,
    device_name: String,
    signer: Arc<dyn Signer>,
) -> Result<JsonPost> {
    let code = pairing_code.trim();
    if code.is_empty() || code.len() > 64 {
        return Err(HeartgateError::argument("pairing_code"));
    }
    if device_name.is_empty() || device_name.chars().count() > 64 {
        return Err(HeartgateError::argument("device_name"));
    }
    let body = json!({"code": code, "jwk": es256_jwk(&*signer)?, "name": device_name});
    Ok(JsonPost {
        url: endpoint(&issuer, "/device/pair")?,
        body: body.to_string(),
    })
}

fn device_id_ok(id: &str) -> bool {
    id.len() == DEVICE_ID_LEN
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// The pairing response: `201 {"device_id"}`, or the server's error
/// ([`HeartgateError::ServerError`], e.g. `invalid_grant` for a wrong or used code).
#[uniffi::export]
pub fn parse_device_pairing_response(status: u16, body: String) -> Result<String> {
    if status != 201 {
        return Err(error_from_body(status, &body));
    }
    match json_object(&body)?.get("device_id") {
        Some(Value::String(id)) if device_id_ok(id) => Ok(id.clone()),
        _ => Err(HeartgateError::verification("device_id")),
    }
}

/// A paired authentication device.
#[derive(uniffi::Object)]
pub struct CibaDevice {
    issuer: String,
    device_id: String,
    signer: Arc<dyn Signer>,
}

#[uniffi::export]
impl CibaDevice {
    /// The device `device_id` of `issuer`, signing with the key it was paired with.
    #[uniffi::constructor]
    pub fn new(issuer: String, device_id: String, signer: Arc<dyn Signer>) -> Result<Arc<Self>> {
        endpoint(&issuer, "")?;
        if !device_id_ok(&device_id) {
            return Err(HeartgateError::argument("device_id"));
        }
        es256_jwk(&*signer)?;
        Ok(Arc::new(CibaDevice {
            issuer,
            device_id,
            signer,
        }))
    }

    /// The device id.
    pub fn device_id(&self) -> String {
        self.device_id.clone()
    }

    /// `GET {issuer}/device/requests` with a fresh device JWT.
    pub fn pending_requests_request(&self) -> Result<DeviceRequest> {
        let jwt = self.device_jwt_at(Map::new(), now()?)?;
        Ok(DeviceRequest {
            method: "GET".to_owned(),
            url: endpoint(&self.issuer, "/device/requests")?,
            authorization: format!("Bearer {jwt}"),
        })
    }

    /// The pending requests from the `/device/requests` response.
    pub fn parse_pending_requests(
        &self,
        status: u16,
        body: String,
    ) -> Result<Vec<PendingApproval>> {
        if status != 200 {
            return Err(error_from_body(status, &body));
        }
        let m = json_object(&body)?;
        let Some(Value::Array(items)) = m.get("requests") else {
            return Err(HeartgateError::verification("requests"));
        };
        items.iter().map(pending).collect()
    }

    /// `POST {issuer}/device/decision`: approve or deny `request_ref`, over the binding
    /// message the user was shown (its SHA-256 goes in the JWT; the server refuses a
    /// decision over another message).
    pub fn decision_request(
        &self,
        request_ref: String,
        approve: bool,
        binding_message: Option<String>,
    ) -> Result<DeviceRequest> {
        self.decision_request_at(&request_ref, approve, binding_message.as_deref(), now()?)
    }

    /// The decision response: `200 {"decision": "approved" | "denied"}`, or the server's
    /// error (already decided, expired, binding message mismatch...).
    pub fn parse_decision_response(&self, status: u16, body: String) -> Result<DeviceDecision> {
        if status != 200 {
            return Err(error_from_body(status, &body));
        }
        match json_object(&body)?.get("decision").and_then(Value::as_str) {
            Some("approved") => Ok(DeviceDecision::Approved),
            Some("denied") => Ok(DeviceDecision::Denied),
            _ => Err(HeartgateError::verification("decision")),
        }
    }
}

fn pending(v: &Value) -> Result<PendingApproval> {
    let bad = || HeartgateError::verification("requests");
    let s = |name: &str| v.get(name).and_then(Value::as_str).map(str::to_owned);
    let n = |name: &str| v.get(name).and_then(Value::as_i64).ok_or_else(bad);
    Ok(PendingApproval {
        request_ref: s("request_ref").ok_or_else(bad)?,
        client_id: s("client_id").ok_or_else(bad)?,
        client_name: s("client_name"),
        scope: s("scope").ok_or_else(bad)?,
        acr_values: s("acr_values"),
        binding_message: s("binding_message"),
        created_at: n("created_at")?,
        expires_at: n("expires_at")?,
    })
}

impl CibaDevice {
    pub(crate) fn device_jwt_at(&self, extra: Map<String, Value>, t: UnixTime) -> Result<String> {
        let mut claims = extra;
        claims.insert("iss".into(), self.device_id.clone().into());
        claims.insert("aud".into(), self.issuer.clone().into());
        claims.insert("iat".into(), t.secs().into());
        claims.insert("exp".into(), (t.secs() + DEVICE_JWT_LIFETIME).into());
        claims.insert("jti".into(), random_b64(16)?.into());
        sign_jwt(
            &*self.signer,
            Some(&self.device_id),
            None,
            &claims,
            AlgorithmSet::of(&[Algorithm::ES256]),
        )
    }

    pub(crate) fn decision_request_at(
        &self,
        request_ref: &str,
        approve: bool,
        binding_message: Option<&str>,
        t: UnixTime,
    ) -> Result<DeviceRequest> {
        // 43 base64url characters of a SHA-256 (core's RequestRef).
        let ok = request_ref.len() == 43
            && heartgate_core::jose::b64::decode_array::<32>(request_ref).is_ok();
        if !ok {
            return Err(HeartgateError::argument("request_ref"));
        }
        let mut extra = Map::new();
        extra.insert("request_ref".into(), request_ref.into());
        extra.insert("approve".into(), approve.into());
        if let Some(m) = binding_message {
            extra.insert(
                "binding_message_hash".into(),
                heartgate_core::ciba::binding_message_hash(m).into(),
            );
        }
        let jwt = self.device_jwt_at(extra, t)?;
        Ok(DeviceRequest {
            method: "POST".to_owned(),
            url: endpoint(&self.issuer, "/device/decision")?,
            authorization: format!("Bearer {jwt}"),
        })
    }
}
