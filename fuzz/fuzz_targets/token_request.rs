#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| heartgate_core::fuzzing::token_request(data));
