//! Kotlin and Swift bindings of heartgate (uniffi proc-macros) for medical apps on
//! Android and iOS, which are both OAuth clients of heartgate and, for CIBA, the
//! patient's authentication device.
//!
//! What it does: builds what the app sends and checks what it receives, with core's
//! checks: PKCE S256 (RFC 7636), signed request objects for PAR (RFC 9101, RFC 9126, FAPI
//! 2.0 Message Signing), `private_key_jwt` assertions (RFC 7523), JARM verification and
//! the RFC 9207 `iss` check, token responses, offline access-token validation (RFC 9068
//! and wrapper tokens), `x5t#S256` (RFC 8705 §3.1), and the CIBA authentication device
//! (pairing, pending requests, decisions).
//!
//! What it never does: HTTP (the app sends with OkHttp or URLSession), implement crypto
//! (core and ring do), log, or panic across the boundary on input: every failure is a
//! [`HeartgateError`]. Every object is `Send + Sync`.

uniffi::setup_scaffolding!();

mod client;
mod device;
mod error;
mod signer;
mod token;

pub use client::{
    pkce_pair, AuthorizationParams, ClientConfig, FapiClient, FormField, FormPost, ParResponse,
    PkcePair,
};
pub use device::{
    device_pairing_request, parse_device_pairing_response, CibaDevice, DeviceDecision,
    DeviceRequest, JsonPost, PendingApproval,
};
pub use error::HeartgateError;
pub use signer::{generate_p256_private_key, software_signer, Signer};
pub use token::{
    parse_token_response, x5t_s256, x5t_s256_of_pem, AccessTokenValidator, TokenFormat,
    TokenResponse, ValidatedAccessToken,
};

use error::Result;
use heartgate_core::clock::UnixTime;

/// The version of heartgate these bindings were built from.
#[uniffi::export]
pub fn core_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// The system clock, in seconds since the epoch.
pub(crate) fn now() -> Result<UnixTime> {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| HeartgateError::internal("clock"))?;
    i64::try_from(d.as_secs())
        .map(UnixTime)
        .map_err(|_| HeartgateError::internal("clock"))
}

/// `n` random bytes from ring's system generator, base64url (for `jti`s and verifiers).
pub(crate) fn random_b64(n: usize) -> Result<String> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| HeartgateError::internal("randomness"))?;
    Ok(heartgate_core::jose::b64::encode(buf))
}

/// The OAuth error of a JSON error body (RFC 6749 §5.2), or a verification failure when
/// the body is not one.
pub(crate) fn error_from_body(status: u16, body: &str) -> HeartgateError {
    let v: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let field = |name: &str| {
        v.as_ref()
            .and_then(|v| v.get(name))
            .and_then(|e| e.as_str())
            .map(str::to_owned)
    };
    match field("error") {
        Some(error) => HeartgateError::ServerError {
            error,
            description: field("error_description"),
            status,
        },
        None => HeartgateError::verification("unexpected_response"),
    }
}

/// A JSON object body, or `unexpected_response`.
pub(crate) fn json_object(body: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_str(body) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        _ => Err(HeartgateError::verification("unexpected_response")),
    }
}

#[cfg(test)]
mod tests;
