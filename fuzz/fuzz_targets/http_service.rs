#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| heartgate_server::fuzzing::http_service(data));
