#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| heartgate_core::fuzzing::ciba_request(data));
