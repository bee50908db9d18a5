//! The `heartgate` server binary. The HTTP endpoints arrive with the server issue;
//! until then it only reports what it is.

fn main() {
    println!(
        "heartgate {}: the server endpoints are not built yet (see README, 'Status')",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
