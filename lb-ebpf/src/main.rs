//! XDP load balancer: the entry point only dispatches (see `balancer`).
#![no_std]
#![no_main]

mod balancer;

use aya_ebpf::{macros::xdp, programs::XdpContext};

#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    let verdict = balancer::handle(&ctx);
    balancer::count(verdict.stat);
    verdict.action
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
