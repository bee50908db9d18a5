//! heartgate-server: the standalone authorization server around `heartgate-core`.
//!
//! Handlers stay thin: they parse HTTP, call core, and map core errors to RFC error
//! responses in one place. Everything with I/O lives here: sockets and TLS, the embedded
//! store, files in the data directory, outbound https, the audit log, the system clock.

pub mod app;
pub mod audit_log;
pub mod cluster;
pub mod config;
pub mod consent;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod http;
pub mod keyshare;
pub mod metrics;
pub mod outbound;
pub mod pages;
pub mod run;
pub mod session;
pub mod setup;
pub mod stores;
pub mod tls;
pub mod users;
pub mod wire;
