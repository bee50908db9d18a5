//! Browser sessions and CSRF tokens for the login and consent pages.
//!
//! - The session cookie `__Host-hg_session` holds `subject|auth_time|expiry`, base64url,
//!   with an HMAC-SHA-256 under the data directory's session secret: nothing to store,
//!   nothing to forge. `Secure; HttpOnly; SameSite=Lax; Path=/`, 8 hours.
//! - Before login, a random `__Host-hg_pre` cookie binds the login form to the browser.
//! - CSRF tokens are HMACs of (purpose, interaction, the browser's cookie), checked in
//!   constant time, so a form posted from another site — which cannot read the cookie or
//!   the page — fails.

use heartgate_core::jose::b64;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "__Host-hg_session";
/// Name of the pre-login cookie.
pub const PRE_COOKIE: &str = "__Host-hg_pre";
/// Session lifetime, seconds.
pub const SESSION_LIFETIME: i64 = 8 * 3600;

/// A signed-in user, as the session cookie says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The local subject.
    pub subject: String,
    /// When the user authenticated.
    pub auth_time: i64,
    /// When the session ends.
    pub expires: i64,
}

/// Signs and checks sessions and CSRF tokens.
pub struct Sessions {
    key: hmac::Key,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions([redacted])")
    }
}

impl Sessions {
    /// With the data directory's session secret.
    pub fn new(secret: &[u8; 32]) -> Self {
        Sessions {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    fn mac(&self, parts: &[&str]) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        for p in parts {
            ctx.update(&(p.len() as u64).to_be_bytes());
            ctx.update(p.as_bytes());
        }
        b64::encode(ctx.sign().as_ref())
    }

    fn check(&self, parts: &[&str], tag: &str) -> bool {
        let Ok(tag) = b64::decode(tag) else {
            return false;
        };
        let mut msg = Vec::new();
        for p in parts {
            msg.extend_from_slice(&(p.len() as u64).to_be_bytes());
            msg.extend_from_slice(p.as_bytes());
        }
        hmac::verify(&self.key, &msg, &tag).is_ok()
    }

    /// A session cookie value for `subject`, authenticated at `now`.
    pub fn issue(&self, subject: &str, now: i64) -> String {
        let body = format!("{subject}|{now}|{}", now + SESSION_LIFETIME);
        let b = b64::encode(body.as_bytes());
        let tag = self.mac(&["session", &b]);
        format!("{b}.{tag}")
    }

    /// The session in a cookie value, if genuine and live at `now`.
    pub fn read(&self, value: &str, now: i64) -> Option<Session> {
        let (b, tag) = value.split_once('.')?;
        if b.len() > 2048 || !self.check(&["session", b], tag) {
            return None;
        }
        let body = String::from_utf8(b64::decode(b).ok()?).ok()?;
        let mut it = body.rsplitn(3, '|');
        let expires: i64 = it.next()?.parse().ok()?;
        let auth_time: i64 = it.next()?.parse().ok()?;
        let subject = it.next()?.to_owned();
        (now < expires && auth_time <= now).then_some(Session {
            subject,
            auth_time,
            expires,
        })
    }

    /// A fresh random value for the pre-login cookie.
    pub fn nonce() -> Option<String> {
        let mut b = [0u8; 16];
        SystemRandom::new().fill(&mut b).ok()?;
        Some(b64::encode(b))
    }

    /// The CSRF token of a form for `purpose` (`login`, `consent`) of `interaction`,
    /// bound to the browser's cookie value.
    pub fn csrf(&self, purpose: &str, interaction: &str, cookie: &str) -> String {
        self.mac(&["csrf", purpose, interaction, cookie])
    }

    /// Check a CSRF token.
    pub fn check_csrf(&self, purpose: &str, interaction: &str, cookie: &str, token: &str) -> bool {
        !cookie.is_empty() && self.check(&["csrf", purpose, interaction, cookie], token)
    }
}

/// The `Set-Cookie` value for a cookie (`max_age` 0 deletes it).
pub fn set_cookie(name: &str, value: &str, max_age: i64) -> String {
    format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}")
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'h>(header: Option<&'h str>, name: &str) -> Option<&'h str> {
    header?.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_round_trip_expire_and_resist_forgery() {
        let s = Sessions::new(&[1u8; 32]);
        let c = s.issue("user-1", 1000);
        assert_eq!(
            s.read(&c, 1001),
            Some(Session {
                subject: "user-1".into(),
                auth_time: 1000,
                expires: 1000 + SESSION_LIFETIME
            })
        );
        assert_eq!(s.read(&c, 1000 + SESSION_LIFETIME), None, "expired");
        let other = Sessions::new(&[2u8; 32]);
        assert_eq!(other.read(&c, 1001), None, "another server's secret");
        let (b, tag) = c.split_once('.').unwrap();
        let forged = b64::encode(b"admin|1000|99999999999");
        assert_eq!(s.read(&format!("{forged}.{tag}"), 1001), None);
        assert_eq!(s.read(b, 1001), None);
        // A subject with the separator in it still parses to itself.
        let c = s.issue("a|b", 1000);
        assert_eq!(s.read(&c, 1001).unwrap().subject, "a|b");
    }

    #[test]
    fn csrf_tokens_bind_purpose_interaction_and_browser() {
        let s = Sessions::new(&[1u8; 32]);
        let t = s.csrf("login", "urn:x", "cookie-a");
        assert!(s.check_csrf("login", "urn:x", "cookie-a", &t));
        assert!(!s.check_csrf("consent", "urn:x", "cookie-a", &t));
        assert!(!s.check_csrf("login", "urn:y", "cookie-a", &t));
        assert!(!s.check_csrf("login", "urn:x", "cookie-b", &t));
        assert!(!s.check_csrf("login", "urn:x", "", &s.csrf("login", "urn:x", "")));
    }

    #[test]
    fn cookie_header_parsing() {
        let h = Some("a=1; __Host-hg_session=abc.def; b=2");
        assert_eq!(cookie(h, SESSION_COOKIE), Some("abc.def"));
        assert_eq!(cookie(h, "c"), None);
        assert_eq!(cookie(None, "a"), None);
    }
}
