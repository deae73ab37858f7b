//! PROXY v2 headers encoded for any addresses, decoded independently.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb::fuzzing::proxy_v2_round_trip(data));
