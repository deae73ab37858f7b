//! Time, from CLOCK_MONOTONIC_COARSE: tick resolution is plenty for idle
//! timeouts and cache lifetimes, and it avoids a TSC read per packet (about
//! 20 ns in a VM). Read once per packet.
use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;

#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: the helper has no preconditions.
    unsafe { bpf_ktime_get_coarse_ns() }
}
