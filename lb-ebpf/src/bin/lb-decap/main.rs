//! Target-side decapsulation (`lb_decap`, attached by `lb target attach`).
//!
//! A balancer in dsr mode wraps the client's packet in an outer IPv4
//! (protocol 4) or IPv6 (next header 41) header addressed to the target.
//! Hosts with the `ipip`/`ip6_tunnel` modules unwrap it with `tunl0` /
//! `ip6tnl0`; this program does it without them: a frame whose outer header
//! is addressed to one of this host's addresses (`DECAP_LOCAL`) and whose
//! inner destination is a configured VIP (`DECAP_VIPS`) loses its outer
//! header and goes to the stack as the client's own packet (XDP_PASS).
//! Everything else passes untouched, counted by reason in `DECAP_STATS`.
//! A second-chance chain (`chain`) is passed unwrapped when this host has
//! the connection, and forwarded to the previous target otherwise.
#![no_std]
#![no_main]

mod chain;
mod unwrap;

use aya_ebpf::{
    btf_maps::{Array, HashMap, PerCpuArray},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use lb_common::{
    VipAddrKey,
    decap::{DECAP_STAT_COUNT, DecapSaved, MAX_ADDRS},
};

/// The VIPs whose encapsulated packets are unwrapped.
#[btf_map]
static DECAP_VIPS: HashMap<VipAddrKey, u32, { MAX_ADDRS as usize }> = HashMap::new();

/// This host's addresses: an outer destination must be one of them.
#[btf_map]
static DECAP_LOCAL: HashMap<VipAddrKey, u32, { MAX_ADDRS as usize }> = HashMap::new();

/// Per-CPU count of every verdict, indexed by `DecapStat`.
#[btf_map]
static DECAP_STATS: PerCpuArray<u64, { DECAP_STAT_COUNT as usize }> = PerCpuArray::new();

/// What `lb target attach` changed on the host, for `detach` (user space
/// only: it travels with the program's other pins).
#[btf_map]
static DECAP_SAVED: Array<DecapSaved, 1> = Array::new();

#[xdp]
pub fn lb_decap(ctx: XdpContext) -> u32 {
    let out = unwrap::handle(&ctx);
    if let Some(c) = DECAP_STATS.get_ptr_mut(out.stat as u32) {
        // SAFETY: this CPU's copy of the slot, written by no other CPU.
        unsafe { *c += 1 };
    }
    // What is not ours passes: it is the stack's business.
    out.action
}

/// Whether `key` is in `map` (the value is not used).
#[inline(always)]
fn contains(map: &HashMap<VipAddrKey, u32, { MAX_ADDRS as usize }>, key: &VipAddrKey) -> bool {
    map.get_ptr(key).is_some()
}

/// Whether `key` is one of this host's addresses.
#[inline(always)]
pub(crate) fn is_local(key: &VipAddrKey) -> bool {
    contains(&DECAP_LOCAL, key)
}

/// Whether `key` is a configured VIP.
#[inline(always)]
pub(crate) fn is_vip(key: &VipAddrKey) -> bool {
    contains(&DECAP_VIPS, key)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
