//! Python bindings of heartgate. The pyo3 module arrives with the Python issue; the
//! crate exists now so that the workspace layout is the final one and builds.

/// The version of heartgate-core these bindings wrap.
pub fn core_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
