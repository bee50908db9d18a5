//! Audit events: every decision the core makes about a client or a token, as a value.
//!
//! Who acted, which client, which certificate thumbprint, which scopes, which patient
//! context (as a salted hash, never the identifier), the outcome and a reason code. An
//! event never carries a token, a secret, an assertion, or a claim value that identifies
//! a person: the types here cannot hold one (no free-form `String` for claim values), and
//! the server's audit writer hash-chains the JSON lines (DESIGN.md "Audit").

use serde::Serialize;

use crate::clock::UnixTime;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A client authenticated (or failed to).
    ClientAuthentication,
    /// A client was registered, read, updated or deleted.
    Registration,
    /// A pushed authorization request was accepted or refused.
    PushedAuthorizationRequest,
    /// An authorization code was issued.
    CodeIssued,
    /// An authorization code was redeemed (or the attempt failed).
    CodeRedeemed,
    /// A token was issued.
    TokenIssued,
    /// A token was introspected.
    Introspection,
    /// A token was revoked.
    Revocation,
    /// A refresh token was used.
    Refresh,
    /// A CIBA request changed state: decided (approved, denied) or expired.
    Ciba,
    /// A CIBA backchannel authentication request was accepted or refused.
    CibaRequest,
    /// Tokens were asked for with a CIBA `auth_req_id` (poll, ping fetch or push delivery).
    CibaRedeemed,
    /// A CIBA authentication device was paired or removed (or pairing failed).
    DeviceEnrollment,
    /// A device's signed request was accepted or refused.
    DeviceAuthentication,
    /// The audit log itself (a torn last line set aside when the server started).
    AuditLog,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Allowed / done.
    Success,
    /// Refused.
    Failure,
}

/// One audit event. Identifiers are those of clients and keys, never of persons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// When.
    pub at: UnixTime,
    /// What.
    pub kind: EventKind,
    /// Result.
    pub outcome: Outcome,
    /// A stable machine-readable reason (an RFC error code or a variant name).
    pub reason: &'static str,
    /// The client concerned, if known (client ids are not personal data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// base64url `x5t#S256` of the client certificate, if one was presented.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_thumbprint: Option<String>,
    /// Granted or requested scopes (scope strings name resource types, not persons).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// A pseudonymous reference to the user (a keyed hash,
    /// [`crate::oidc::PairwiseSubjects::audit_ref`]), never the identifier itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_ref: Option<String>,
    /// A pseudonymous reference to the patient in context, the same way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient_ref: Option<String>,
    /// The token id concerned (`jti`), or a short prefix of a token hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_ref: Option<String>,
    /// The CIBA authentication device that acted (its server-assigned id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

impl AuditEvent {
    /// An event with only the mandatory fields set.
    pub fn new(at: UnixTime, kind: EventKind, outcome: Outcome, reason: &'static str) -> Self {
        AuditEvent {
            at,
            kind,
            outcome,
            reason,
            client_id: None,
            cert_thumbprint: None,
            scope: None,
            subject_ref: None,
            patient_ref: None,
            token_ref: None,
            device_id: None,
        }
    }

    /// Set the device.
    pub fn device(mut self, device_id: impl Into<String>) -> Self {
        self.device_id = Some(device_id.into());
        self
    }

    /// Set the client.
    pub fn client(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// Set the certificate thumbprint.
    pub fn cert(mut self, x5t_s256: impl Into<String>) -> Self {
        self.cert_thumbprint = Some(x5t_s256.into());
        self
    }

    /// Set the scopes.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Set the pseudonymous subject reference.
    pub fn subject_ref(mut self, r: impl Into<String>) -> Self {
        self.subject_ref = Some(r.into());
        self
    }

    /// Set the pseudonymous patient reference.
    pub fn patient_ref(mut self, r: impl Into<String>) -> Self {
        self.patient_ref = Some(r.into());
        self
    }

    /// Set the token reference.
    pub fn token_ref(mut self, r: impl Into<String>) -> Self {
        self.token_ref = Some(r.into());
        self
    }
}

/// The audit trail could not take an event that had to be on it before the work it
/// describes is acknowledged (a full or failing disk under the server's log, THREATS S8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit trail is unavailable")]
pub struct AuditUnavailable;

/// Where audit events go. Implementations must not block for long; the server's writer
/// appends hash-chained JSON lines.
///
/// Two kinds of call. [`AuditSink::record`] hands an event over and returns at once; a
/// sink that later fails to write it counts and reports the loss. The flows use it for
/// refusals and reads (introspection): a refusal stays a refusal, and reads of existing
/// state go on when the trail cannot be written. [`AuditSink::record_required`] is for
/// events about work the caller is about to acknowledge (a token, code, `request_uri` or
/// `auth_req_id` issued, a decision, a device, a registration, a revocation): it returns
/// only once the sink has written the event, and an error if it could not, and the flow
/// then answers 503 instead of handing out what the trail does not show (fail closed;
/// see [`settle`]).
pub trait AuditSink: Send + Sync {
    /// Record one event without waiting for it to be written.
    fn record(&self, event: AuditEvent);

    /// Record one event and wait until it is written; `Err` when it could not be. The
    /// default is for sinks that cannot fail: it records and succeeds.
    fn record_required(&self, event: AuditEvent) -> Result<(), AuditUnavailable> {
        self.record(event);
        Ok(())
    }
}

/// The fail-closed rule in one place: the event about `result` goes on the trail; for a
/// success it must be written before the caller answers (`record_required`), and if it
/// could not be, the success becomes `unavailable` (the caller's 503) — nothing is handed
/// out that the trail does not show (THREATS S8). Work already done in the store by then
/// (a stored token, a consumed code) stays done but was never acknowledged, exactly as
/// when a store commit fails. A failure is recorded without waiting and returned as is.
pub fn settle<T, E>(
    sink: &dyn AuditSink,
    event: AuditEvent,
    result: Result<T, E>,
    unavailable: impl FnOnce() -> E,
) -> Result<T, E> {
    match result {
        Ok(v) => match sink.record_required(event) {
            Ok(()) => Ok(v),
            Err(AuditUnavailable) => Err(unavailable()),
        },
        Err(e) => {
            sink.record(event);
            Err(e)
        }
    }
}

/// A sink that drops every event (for callers that audit elsewhere, and tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAudit;

impl AuditSink for NoAudit {
    fn record(&self, _event: AuditEvent) {}
}

/// A sink that keeps events in memory, for tests. [`MemoryAuditSink::set_unavailable`]
/// makes it behave like a log on a full disk: nothing is kept, `record_required` fails.
#[derive(Debug, Default)]
pub struct MemoryAuditSink {
    events: parking_lot::Mutex<Vec<AuditEvent>>,
    unavailable: std::sync::atomic::AtomicBool,
}

impl MemoryAuditSink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every event recorded so far.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.events.lock().clone()
    }

    /// Refuse (`true`) or accept (`false`) events from now on.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable
            .store(unavailable, std::sync::atomic::Ordering::SeqCst);
    }

    fn is_unavailable(&self) -> bool {
        self.unavailable.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl AuditSink for MemoryAuditSink {
    fn record(&self, event: AuditEvent) {
        if !self.is_unavailable() {
            self.events.lock().push(event);
        }
    }

    fn record_required(&self, event: AuditEvent) -> Result<(), AuditUnavailable> {
        if self.is_unavailable() {
            return Err(AuditUnavailable);
        }
        self.events.lock().push(event);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_without_absent_fields() {
        let e = AuditEvent::new(UnixTime(5), EventKind::TokenIssued, Outcome::Success, "ok")
            .client("c1")
            .scope("patient/Observation.rs");
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"at":5,"kind":"token_issued","outcome":"success","reason":"ok",
                "client_id":"c1","scope":"patient/Observation.rs"})
        );
    }

    #[test]
    fn memory_sink_keeps_events_in_order() {
        let s = MemoryAuditSink::new();
        s.record(AuditEvent::new(
            UnixTime(1),
            EventKind::Revocation,
            Outcome::Success,
            "ok",
        ));
        s.record(AuditEvent::new(
            UnixTime(2),
            EventKind::Introspection,
            Outcome::Failure,
            "x",
        ));
        let ev = s.events();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1].kind, EventKind::Introspection);
    }
}
