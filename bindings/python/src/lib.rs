//! Python bindings of heartgate: the `heartgate._heartgate` extension module behind the
//! `heartgate` Python package (pyo3, abi3 for CPython ≥ 3.9).
//!
//! What it does: exposes core's keys, JWS/JWT signing and verification, the access-token
//! validator, the introspection cache, certificate thumbprints, SMART scopes and the
//! token issuer. HS256 with an explicit shared secret is the one thing core does not have;
//! it lives in [`jwt`] on `ring::hmac` (constant-time verification).
//!
//! What it never does: reimplement a check core already makes, let a token's header pick
//! a key's algorithm, verify HS256 with an asymmetric key (THREATS J2), do I/O (the Python
//! layer fetches JWKS and calls introspection with httpx), log a token or a secret, or let
//! a Rust panic reach Python as anything but `heartgate.InternalError` ([`guarded`]).
//! Every signature and verification runs with the GIL released.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::prelude::*;

mod convert;
mod error;
mod floor;
mod issuer;
mod jwt;
mod keys;
mod validator;

pub use error::Error;

/// Run `f` without the GIL and turn a panic into [`Error::Internal`], so that no input
/// can make a `PanicException` reach Python (THREATS §2.13).
pub(crate) fn guarded<T, F>(py: Python<'_>, f: F) -> Result<T, Error>
where
    T: Send,
    F: FnOnce() -> Result<T, Error> + Send,
{
    py.detach(|| catch_unwind(AssertUnwindSafe(f)).unwrap_or(Err(Error::Internal)))
}

/// The current time from the system clock (core never reads it; the binding does).
pub(crate) fn now() -> heartgate_core::clock::UnixTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    heartgate_core::clock::UnixTime(secs)
}

/// The version of heartgate-core these bindings wrap.
pub fn core_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _heartgate(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", core_version())?;
    error::register(m)?;
    keys::register(m)?;
    jwt::register(m)?;
    validator::register(m)?;
    issuer::register(m)?;
    floor::register(m)?;
    Ok(())
}
