#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| heartgate_core::fuzzing::opaque_token(data));
