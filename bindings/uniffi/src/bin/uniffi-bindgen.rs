//! uniffi's binding generator, pinned to the crate's uniffi version, for library mode:
//! `cargo run -p heartgate-ffi --bin uniffi-bindgen -- generate --library <lib> ...`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
