//! The advisories that matter for the server's stack (THREATS.md appendix "advisories and
//! CVEs to regression-test"), pinned past in `Cargo.lock`: `cargo deny` cannot fetch the
//! RustSec database on these machines, so the floors are checked here instead. A lock
//! update that goes below one of them fails this test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code

/// (crate, lowest safe version, why).
const FLOORS: &[(&str, &str, &str)] = &[
    (
        "rustls",
        "0.23.18",
        "RUSTSEC-2024-0399: a fragmented ClientHello panics the acceptor",
    ),
    (
        "h2",
        "0.4.16",
        "RUSTSEC-2026-0258 (unbounded empty DATA frames), RUSTSEC-2024-0332 (CONTINUATION flood)",
    ),
    (
        "ring",
        "0.17.12",
        "RUSTSEC-2025-0009: AES functions may panic with overflow checks on",
    ),
    (
        "hyper",
        "1.4.0",
        "the request-smuggling family (RUSTSEC-2021-0020, -0078, -0079) fixed long before 1.x",
    ),
    (
        "rustls-webpki",
        "0.103.0",
        "RUSTSEC-2023-0053: CPU denial of service in path building with hostile client chains",
    ),
];

fn parse(v: &str) -> Vec<u64> {
    v.split(['.', '-', '+'])
        .take(3)
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

#[test]
fn locked_versions_are_past_the_advisories_that_matter() {
    let lock =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
    for (name, floor, why) in FLOORS {
        let versions: Vec<&str> = lock
            .split("[[package]]")
            .filter(|p| p.lines().any(|l| l == format!("name = \"{name}\"")))
            .filter_map(|p| {
                p.lines()
                    .find_map(|l| l.strip_prefix("version = \"")?.strip_suffix('"'))
            })
            .collect();
        assert!(!versions.is_empty(), "{name} is not in Cargo.lock");
        for v in versions {
            assert!(
                parse(v) >= parse(floor),
                "{name} {v} is below {floor}: {why}"
            );
        }
    }
}

#[test]
fn the_version_comparison_orders_numerically() {
    assert!(parse("0.23.46") > parse("0.23.18"));
    assert!(parse("0.23.9") < parse("0.23.18"));
    assert!(parse("1.12.0") > parse("1.4.0"));
    assert!(parse("0.4.16") == parse("0.4.16"));
}
