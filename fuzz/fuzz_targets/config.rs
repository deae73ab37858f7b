//! TOML text through the config loader: parse, validate, what lb run derives.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb::fuzzing::config(data));
