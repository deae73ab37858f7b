//! Next hop: `bpf_fib_lookup` on the translated packet, then redirect.
use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        bpf_fib_lookup as FibParams, xdp_action,
    },
    helpers::{bpf_fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use lb_common::Stat;

use crate::{Verdict, headers::Ipv4, headers::Ipv6, parse::Packet, ptr::ptr_at};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Sends the (already translated) packet toward `p.dst`. `ok` is the stat
/// for a successful forward (forwarded, returned or icmp_translated).
#[inline(always)]
pub fn forward(ctx: &XdpContext, p: &Packet, ok: Stat) -> Verdict {
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.l4_protocol = p.proto;
    params.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    if p.v6 {
        params.family = AF_INET6;
        let Some(ip) = ptr_at::<Ipv6>(ctx, p.l3) else {
            return Verdict::drop(Stat::DropMalformed);
        };
        // Host byte order: the kernel compares it with the egress MTU.
        params.__bindgen_anon_1.tot_len =
            u16::from_be(unsafe { (*ip).payload_len }).saturating_add(40);
        params.__bindgen_anon_3.ipv6_src = p.src;
        params.__bindgen_anon_4.ipv6_dst = p.dst;
    } else {
        params.family = AF_INET;
        let Some(ip) = ptr_at::<Ipv4>(ctx, p.l3) else {
            return Verdict::drop(Stat::DropMalformed);
        };
        params.__bindgen_anon_1.tot_len = u16::from_be(unsafe { (*ip).tot_len });
        params.__bindgen_anon_2.tos = unsafe { (*ip).tos };
        params.__bindgen_anon_3.ipv4_src = p.src[0];
        params.__bindgen_anon_4.ipv4_dst = p.dst[0];
    }
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            &mut params,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {}
        BPF_FIB_LKUP_RET_NO_NEIGH => return Verdict::pass(Stat::PassNoNeighbour),
        BPF_FIB_LKUP_RET_FRAG_NEEDED => return Verdict::pass(Stat::PassMtu),
        _ => return Verdict::drop(Stat::DropNoRoute),
    }
    let Some(eth) = ptr_at::<[u8; 12]>(ctx, 0) else {
        return Verdict::drop(Stat::DropMalformed);
    };
    let eth = unsafe { &mut *eth };
    eth[..6].copy_from_slice(&params.dmac);
    eth[6..].copy_from_slice(&params.smac);
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    if params.ifindex == ingress {
        return Verdict {
            action: xdp_action::XDP_TX,
            stat: ok,
        };
    }
    Verdict {
        action: unsafe { bpf_redirect(params.ifindex, 0) } as u32,
        stat: ok,
    }
}
