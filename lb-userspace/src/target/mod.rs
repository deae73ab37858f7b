//! `lb target`: what a host needs to be a target of balancers in dsr mode.
//!
//! A balancer in dsr mode sends the client's packet wrapped in an outer
//! IPv4 (protocol 4) or IPv6 (next header 41) header to the target; the
//! target unwraps it, serves it on the VIP (an address on `lo`) and answers
//! the client directly. `lb target attach` sets that up: the decapsulation
//! program (`lb_decap`, in lb-ebpf) on the interface, pinned so that it
//! outlives the command, the VIPs on `lo`, and the sysctls (`sysctl`);
//! `detach` undoes each step with what was saved at the first attach
//! (`saved`), `status` reports. Hosts with the `ipip`/`ip6_tunnel` modules
//! can use `tunl0`/`ip6tnl0` instead (README, "lb target").
//!
//! - [`cli`]: the subcommands and their output.
//! - [`setup`]: attach and detach, step by step.
//! - [`program`]: the embedded object, its pins and maps.
//! - [`saved`]: the block of what attach changed, and an older `lb`'s
//!   block carried over.
//! - [`addrs`]: the host's addresses and the VIPs on `lo` (through `ip`).
//! - [`sysctl`]: the settings a dsr target needs.
//! - [`error`]: the errors of `lb target`, [`TargetError`].
pub mod addrs;
pub mod cli;
pub mod error;
pub mod program;
pub mod saved;
pub mod setup;
pub mod sysctl;

pub use error::TargetError;

/// Default of `--pin-dir`: beside the daemon's `/sys/fs/bpf/lb`, apart
/// from it (a host may be balancer and target at once).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/lb-target";
