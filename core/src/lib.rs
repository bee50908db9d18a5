//! heartgate-core: the sans-I/O core of heartgate.
//!
//! What it does: JOSE (JWS compact, JWK/JWKS, key ring), the three access-token
//! formats (RFC 9068 JWT, opaque reference, wrapper), refresh tokens, RFC 8705
//! certificate binding and the RFC 7662 introspection model with its lock-light cache.
//!
//! What it never does: open a socket or a file, read the environment or the system
//! clock, spawn threads, or keep global state. Time comes from a [`clock::Clock`],
//! randomness from `ring::rand::SystemRandom`, and state from the caller.

pub mod audit;
pub mod authorize;
pub mod ciba;
pub mod client;
pub mod clock;
pub mod error;
pub mod form;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod grant;
pub mod introspect;
pub mod jose;
pub mod lifecycle;
pub mod mtls;
pub mod oidc;
pub mod profile;
pub mod scope;
pub mod store;
pub mod token;

pub use error::Error;
