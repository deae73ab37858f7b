//! The load balancer's data path, at two hooks: XDP (`lb_xdp`) and tc
//! (`lb_tc`, for interfaces that carry packets of a local stack: see
//! `balancer::hook`). The entry points only dispatch.
#![no_std]
#![no_main]

mod balancer;

use aya_ebpf::{
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    let verdict = balancer::handle(&ctx);
    balancer::count(verdict.stat);
    verdict.action
}

/// The same data path on a socket buffer, at tc ingress and egress.
#[classifier]
pub fn lb_tc(ctx: TcContext) -> i32 {
    // The headers must be in the buffer's linear part, where direct packet
    // access reaches (no-op when they are, as from a local stack).
    let _pulled = ctx.pull_data(ctx.len().min(balancer::HEADERS)).is_ok();
    let verdict = balancer::handle(&ctx);
    balancer::count(verdict.stat);
    balancer::tc_action(verdict.action)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// `bpf_fib_lookup` is GPL-only; the program is offered under a dual licence
/// the kernel accepts as GPL-compatible.
#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
