//! Kotlin and Swift bindings of heartgate. The uniffi interface arrives with the mobile
//! issue; the crate exists now so that the workspace layout is the final one and builds.

/// The version of heartgate-core these bindings wrap.
pub fn core_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
