//! XDP load balancer: the entry point only dispatches. What happens to each
//! kind of packet is specified in docs/datapath.md.
#![no_std]
#![no_main]

mod csum;
mod fib;
mod flow;
mod forward;
mod headers;
mod icmp;
mod maps;
mod parse;
mod ptr;
mod rewrite;
mod stats;
mod too_big;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::Stat;

/// Outcome of handling a packet: the XDP action and the stat that explains it.
pub struct Verdict {
    pub action: u32,
    pub stat: Stat,
}

impl Verdict {
    #[inline(always)]
    pub const fn pass(stat: Stat) -> Self {
        Self {
            action: xdp_action::XDP_PASS,
            stat,
        }
    }
    #[inline(always)]
    pub const fn drop(stat: Stat) -> Self {
        Self {
            action: xdp_action::XDP_DROP,
            stat,
        }
    }
}

#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    let verdict = forward::handle(&ctx);
    stats::count(verdict.stat);
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
