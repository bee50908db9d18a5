//! How long one `SystemRandom::fill` takes here. `cargo run --release --example rngcost`.
#![allow(missing_docs, clippy::unwrap_used)] // reason: measurement script
use ring::rand::{SecureRandom, SystemRandom};
use std::time::Instant;
fn main() {
    let rng = SystemRandom::new();
    let mut b = [0u8; 16];
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..20000 {
            rng.fill(&mut b).unwrap();
        }
        println!(
            "SystemRandom::fill(16 B): {:.0} ns",
            t.elapsed().as_nanos() as f64 / 20000.0
        );
    }
}
