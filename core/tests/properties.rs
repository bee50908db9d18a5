#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test code
//! Property tests of issue #9 (THREATS.md §4.2) beyond the JOSE layer (`jose_props.rs`).

#[path = "support/one_time.rs"]
mod one_time;

use heartgate_core::store::MemoryStore;
use one_time::{Fixture, Kind, ROUNDS};

fn one_time_race(kind: Kind) {
    let store = MemoryStore::new();
    Fixture::new(&store)
        .race(kind, ROUNDS)
        .assert_exactly_one_winner(kind);
}

#[test]
fn a1_code_has_exactly_one_redeemer_among_64_every_round() {
    one_time_race(Kind::Code);
}
#[test]
fn p12_request_uri_has_exactly_one_consumer_among_64_every_round() {
    one_time_race(Kind::RequestUri);
}
#[test]
fn c1_assertion_jti_authenticates_exactly_one_of_64_every_round() {
    one_time_race(Kind::Jti);
}
#[test]
fn b5_auth_req_id_gives_exactly_one_token_response_among_64_every_round() {
    one_time_race(Kind::AuthReqId);
}
#[test]
fn r5_refresh_token_rotates_for_exactly_one_of_64_every_round() {
    one_time_race(Kind::RefreshToken);
}
