//! heartgate-server: the standalone authorization server around `heartgate-core`.
//!
//! Handlers stay thin: they parse HTTP, call core, and map core errors to RFC error
//! responses in one place. Everything with I/O lives here: sockets and TLS, the embedded
//! store, files in the data directory, outbound https, the audit log, the system clock.

pub mod audit_log;
pub mod outbound;
pub mod stores;
pub mod users;
pub mod config;
pub mod setup;
pub mod tls;
pub mod pages;
pub mod wire;
pub mod metrics;
pub mod session;
