//! test support

// End-to-end support: namespaces, topology, child processes, traffic clients.
pub mod browser;
pub mod certs;
pub mod chatter;
pub mod client;
pub mod dsr_lab;
pub mod lab;
pub mod metrics;
pub mod netns;
pub mod private_root;
pub mod proc;
pub mod raw;
pub mod scale_out;
pub mod topology;
pub mod trafficgen;

// Data-path fixtures: packet builder, reference checksums, BPF_PROG_TEST_RUN harness.
pub mod checksum;
pub mod decap;
pub mod fixture;
pub mod packet;
pub mod probe;
