//! dsr health probes through the encapsulation (`lb_probe_encap`, tc
//! egress on the daemon's probe device).
//!
//! The health checker connects to a dsr target's VIP with `SO_MARK` set to
//! the target's probe mark; a policy rule routes marked packets into the
//! probe device (`lb-probe`, an IFB: no neighbour to resolve, and whatever
//! no program redirects is dropped there, never sent unwrapped). This
//! program looks the mark up in `PROBE_TARGETS`, wraps the packet in the
//! outer IPv4 (protocol 4) or IPv6 (next header 41) header the XDP program
//! puts on client packets (`wrap`), clears the mark and redirects the
//! packet to the interface the kernel's FIB names for the target, whose
//! neighbour the kernel resolves (`bpf_redirect_neigh`). So a probe reaches
//! the target exactly as a client's packet does, and a target whose
//! decapsulation is broken fails it.
//!
//! Unmarked packets pass untouched (the IFB drops them); every verdict is
//! counted by reason in `PROBE_STATS`.
#![no_std]
#![no_main]

mod wrap;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    btf_maps::{HashMap, PerCpuArray},
    macros::{btf_map, classifier},
    programs::TcContext,
};
use lb_common::{
    VipAddrKey,
    probe::{MARK_BASE, MARK_MASK, MAX_PROBE_TARGETS, PROBE_STAT_COUNT, ProbeStat},
};

/// Probe mark -> the target it names.
#[btf_map]
static PROBE_TARGETS: HashMap<u32, VipAddrKey, { MAX_PROBE_TARGETS as usize }> = HashMap::new();

/// Per-CPU count of every verdict, indexed by `ProbeStat`.
#[btf_map]
static PROBE_STATS: PerCpuArray<u64, { PROBE_STAT_COUNT as usize }> = PerCpuArray::new();

#[classifier]
pub fn lb_probe_encap(ctx: TcContext) -> i32 {
    let (stat, action) = handle(&ctx);
    if let Some(c) = PROBE_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: this CPU's copy of the slot, written by no other CPU.
        unsafe { *c += 1 };
    }
    action
}

/// The verdict's stat and the tc action.
#[inline(always)]
fn handle(ctx: &TcContext) -> (ProbeStat, i32) {
    // SAFETY: `skb` is the kernel's `__sk_buff` for this run.
    let mark = unsafe { (*ctx.skb.skb).mark };
    if mark & MARK_MASK != MARK_BASE {
        return (ProbeStat::NotMarked, TC_ACT_OK);
    }
    // SAFETY: a value of the map, valid for the program's run.
    let Some(target) = (unsafe { PROBE_TARGETS.get(mark) }).copied() else {
        return (ProbeStat::UnknownMark, TC_ACT_SHOT);
    };
    match wrap::wrap_and_send(ctx, &target) {
        Ok(action) => (ProbeStat::Encapsulated, action),
        Err(why) => (why, TC_ACT_SHOT),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// `bpf_redirect_neigh` and `bpf_fib_lookup` are GPL-only; the program is
/// offered under a dual licence the kernel accepts as GPL-compatible.
#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
