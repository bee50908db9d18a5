//! The `heartgate` server binary.

fn main() {
    println!(
        "heartgate {}: the server endpoints are being built (see README, 'Status')",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
