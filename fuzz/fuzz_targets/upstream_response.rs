//! A target's HTTP/1.1 response head and body, read whole and in pieces.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb::fuzzing::upstream_response(data));
