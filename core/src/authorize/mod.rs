//! The authorization-code flow's building blocks: PKCE (RFC 7636, S256 only) and
//! redirect URIs (RFC 6749 §3.1.2, RFC 8252 §7.3, RFC 9700 §4.1). PAR, JAR, the
//! interaction step and JARM build on these.

pub mod code;
pub mod par;
pub mod pkce;
pub mod redirect_uri;
