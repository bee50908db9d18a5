#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code
//! THREATS §4.2 item 3 against the redb file store: the same one-time-value races as
//! `core/tests/properties.rs` (1,000 rounds × 64 threads through the real core APIs, one
//! winner each round), with the store's group commit batching the racers' writes.

#[path = "../../core/tests/support/one_time.rs"]
mod one_time;

use heartgate_server::stores::redb::RedbStore;
use one_time::{Fixture, Kind, ROUNDS};
use tempfile::TempDir;

/// The store file lives on tmpfs where there is one: the property is about atomicity,
/// and 64,000 attempts' worth of `fsync` on a real disk would make it a disk benchmark
/// (durability has its own tests in `redb_store.rs`).
fn temp_dir() -> TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = TempDir::new_in(shm) {
            return d;
        }
    }
    TempDir::new().unwrap()
}

fn one_time_race(kind: Kind) {
    let dir = temp_dir();
    let store = RedbStore::open(dir.path().join("store.redb")).unwrap();
    Fixture::new(&store)
        .race(kind, ROUNDS)
        .assert_exactly_one_winner(kind);
}

#[test]
fn a1_code_has_exactly_one_redeemer_among_64_every_round_on_redb() {
    one_time_race(Kind::Code);
}

#[test]
fn p12_request_uri_has_exactly_one_consumer_among_64_every_round_on_redb() {
    one_time_race(Kind::RequestUri);
}

#[test]
fn c1_assertion_jti_authenticates_exactly_one_of_64_every_round_on_redb() {
    one_time_race(Kind::Jti);
}

#[test]
fn b5_auth_req_id_gives_exactly_one_token_response_among_64_every_round_on_redb() {
    one_time_race(Kind::AuthReqId);
}

#[test]
fn r5_refresh_token_rotates_for_exactly_one_of_64_every_round_on_redb() {
    one_time_race(Kind::RefreshToken);
}
