#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| heartgate_core::fuzzing::client_cert_header(data));
