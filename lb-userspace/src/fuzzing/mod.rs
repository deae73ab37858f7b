//! The fuzz targets' bodies (`fuzz/`, `cargo xtask fuzz`), here rather than
//! in the fuzz crate so that they build, and run over their seed corpora
//! and every crash found so far, in the ordinary unit tests: the fuzz
//! crate holds one line per target and needs nightly, this does not.
//!
//! Each function takes the fuzzer's bytes, drives one parser of the
//! daemon with them and panics only when an invariant is broken (a panic
//! is what the fuzzer reports as a crash). Not part of the daemon's API.
mod config;
mod health;
mod proxy_v2;
mod upstream;

pub use config::config;
pub use health::health_response;
pub use proxy_v2::proxy_v2_round_trip;
pub use upstream::upstream_response;

#[cfg(test)]
mod tests;
