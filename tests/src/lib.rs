//! test support

// End-to-end support: namespaces, topology, child processes, traffic clients.
pub mod certs;
pub mod client;
pub mod lab;
pub mod netns;
pub mod proc;
pub mod topology;

// Data-path fixtures: packet builder, reference checksums, BPF_PROG_TEST_RUN harness.
pub mod checksum;
pub mod fixture;
pub mod packet;

// Benchmarks (lb-bench).
pub mod bench_apply;
pub mod bench_control;
pub mod bench_e2e;
pub mod bench_http;
pub mod bench_xdp;
