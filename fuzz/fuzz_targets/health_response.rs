//! Any response to an HTTP health check ends in the verdict its status gives.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb::fuzzing::health_response(data));
