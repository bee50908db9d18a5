//! Refresh-token rotation policy, as DESIGN.md and SPECS.md b.12 resolve it per profile.
//!
//! - Public clients rotate on every use, and reuse of a superseded token means theft or
//!   a replay: the whole family is revoked (RFC 9700 §4.14.2; THREATS R4).
//! - Sender-constrained confidential clients under FAPI 2.0 (§5.3.2.1 item 8) do not
//!   rotate, or rotate with a grace window in which the previous token still works once
//!   more, so a client whose response was lost can retry (OIDF `refresh-token`, R4).
//!
//! This module decides; the caller applies the decision to the store atomically.

use super::record::{RefreshRecord, RefreshState};
use super::TokenError;
use crate::clock::UnixTime;

/// How refresh tokens of a client behave when used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshPolicy {
    /// Rotate on every use; reuse of a superseded token revokes the family.
    RotateWithReuseDetection,
    /// Never rotate: the same token is used until it expires (FAPI 2.0 default).
    NoRotation,
    /// Rotate, but honour a superseded token for `grace_secs` after it was replaced.
    RotateWithGrace {
        /// Seconds during which the previous token still works.
        grace_secs: u32,
    },
}

/// What to do with a presented refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshPlan {
    /// Keep the token; issue only a new access token.
    Keep,
    /// Mark this token superseded at `now` and issue its successor in the same family.
    Rotate {
        /// Generation of the new token.
        next_generation: u32,
    },
    /// A superseded token within its grace window: issue a new successor in the same
    /// family, replacing the one whose response was presumably lost. Never a second
    /// family (R5).
    GraceRetry {
        /// Generation of the new token.
        next_generation: u32,
    },
}

impl RefreshPolicy {
    /// Decide what happens when `client_id` presents the token described by `record` at
    /// `now`. Errors: another client's token (R1), expired, or a reuse that must revoke
    /// the family (R4).
    pub fn plan(
        &self,
        record: &RefreshRecord,
        client_id: &str,
        now: UnixTime,
    ) -> Result<RefreshPlan, TokenError> {
        if record.client_id != client_id {
            return Err(TokenError::WrongClient);
        }
        if now.secs() >= record.exp {
            return Err(TokenError::Expired);
        }
        let next_generation = record
            .generation
            .checked_add(1)
            .ok_or(TokenError::InvalidGrant("refresh generation"))?;
        match (*self, record.state) {
            (RefreshPolicy::NoRotation, RefreshState::Active) => Ok(RefreshPlan::Keep),
            (
                RefreshPolicy::RotateWithReuseDetection | RefreshPolicy::RotateWithGrace { .. },
                RefreshState::Active,
            ) => Ok(RefreshPlan::Rotate { next_generation }),
            (
                RefreshPolicy::RotateWithGrace { grace_secs },
                RefreshState::Superseded { at, .. },
            ) if now.secs() <= at.saturating_add(i64::from(grace_secs)) => {
                Ok(RefreshPlan::GraceRetry { next_generation })
            }
            (_, RefreshState::Superseded { .. }) => Err(TokenError::RefreshReuse),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn record(state: RefreshState) -> RefreshRecord {
        RefreshRecord {
            iss: "https://as".into(),
            client_id: "c1".into(),
            sub: "u".into(),
            scope: "openid".into(),
            aud: vec!["rs".into()],
            family_id: "f".into(),
            generation: 3,
            state,
            cnf: None,
            iat: 0,
            exp: 1000,
            auth_time: None,
            acr: None,
            context: Map::new(),
        }
    }

    #[test]
    fn public_client_rotates_on_use() {
        let p = RefreshPolicy::RotateWithReuseDetection;
        assert_eq!(
            p.plan(&record(RefreshState::Active), "c1", UnixTime(10)),
            Ok(RefreshPlan::Rotate { next_generation: 4 })
        );
    }

    #[test]
    fn r4_reuse_of_superseded_token_is_refused_for_public_clients() {
        let p = RefreshPolicy::RotateWithReuseDetection;
        let r = record(RefreshState::Superseded {
            at: 5,
            successor: None,
        });
        assert_eq!(p.plan(&r, "c1", UnixTime(6)), Err(TokenError::RefreshReuse));
    }

    #[test]
    fn r4_fapi_grace_window_lets_the_previous_token_work_30s_later() {
        let p = RefreshPolicy::RotateWithGrace { grace_secs: 60 };
        let r = record(RefreshState::Superseded {
            at: 100,
            successor: None,
        });
        assert_eq!(
            p.plan(&r, "c1", UnixTime(130)),
            Ok(RefreshPlan::GraceRetry { next_generation: 4 })
        );
        assert_eq!(
            p.plan(&r, "c1", UnixTime(160)),
            Ok(RefreshPlan::GraceRetry { next_generation: 4 })
        );
        assert_eq!(
            p.plan(&r, "c1", UnixTime(161)),
            Err(TokenError::RefreshReuse)
        );
    }

    #[test]
    fn fapi_no_rotation_keeps_the_token() {
        let p = RefreshPolicy::NoRotation;
        assert_eq!(
            p.plan(&record(RefreshState::Active), "c1", UnixTime(10)),
            Ok(RefreshPlan::Keep)
        );
    }

    #[test]
    fn r1_refresh_token_of_another_client_is_refused() {
        let p = RefreshPolicy::NoRotation;
        assert_eq!(
            p.plan(&record(RefreshState::Active), "c2", UnixTime(10)),
            Err(TokenError::WrongClient)
        );
    }

    #[test]
    fn expired_refresh_token_is_refused_at_exp() {
        let p = RefreshPolicy::RotateWithReuseDetection;
        let r = record(RefreshState::Active);
        assert!(p.plan(&r, "c1", UnixTime(999)).is_ok());
        assert_eq!(p.plan(&r, "c1", UnixTime(1000)), Err(TokenError::Expired));
    }

    #[test]
    fn generation_overflow_is_an_error_not_a_panic() {
        let mut r = record(RefreshState::Active);
        r.generation = u32::MAX;
        assert!(matches!(
            RefreshPolicy::RotateWithReuseDetection.plan(&r, "c1", UnixTime(1)),
            Err(TokenError::InvalidGrant(_))
        ));
    }
}
