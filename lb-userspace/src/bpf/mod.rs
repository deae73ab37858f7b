//! Everything that talks to the kernel: loading and attaching the XDP
//! program, pins, and typed access to its maps.
pub mod bpffs;
pub mod flow_table;
pub mod forwarding;
pub mod kernel_maps;
pub mod loader;
pub mod mmap;
pub mod pin;
pub mod ring_mmap;
pub mod stats;
pub mod tc;
