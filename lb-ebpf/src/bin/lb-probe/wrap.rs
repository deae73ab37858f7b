//! What `lb_probe_encap` does to a marked probe: read the inner header,
//! grow the packet between its Ethernet and IP headers, write the outer
//! header there, find the target's interface and redirect.
//!
//! ```text
//! before: [eth][ip][tcp ...]            (the probe as the stack built it)
//! after:  [eth][outer ip][ip][tcp ...]  (as the XDP program sends a client's)
//! ```
//! The outer header follows the dsr path's rules (`lb_common::encap`): the
//! source derived from the inner flow, the destination the target, the
//! inner TOS / traffic class and (IPv4) DF bit copied, the flow label from
//! the flow hash. The TTL / hop limit is the inner one: this host made the
//! probe, it is not a hop. Checksums: the inner ones are the stack's
//! business (the probe may carry a partial one that the device or the
//! kernel completes; growing the room keeps its offsets), the outer IPv4
//! header's is computed here.
use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6, BPF_FIB_LKUP_RET_SUCCESS,
        BPF_FIB_LOOKUP_SKIP_NEIGH, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
        bpf_fib_lookup as FibParams,
    },
    helpers::{bpf_fib_lookup, bpf_redirect_neigh},
    programs::TcContext,
};
use lb_common::{
    Addr, FlowKey, PROTO_TCP, PROTO_UDP, VipAddrKey,
    encap::{OVERHEAD_V4, OVERHEAD_V6, source_of_hash},
    hash::flow_hash,
    probe::ProbeStat,
};
use lb_ebpf::{
    frame::load,
    headers::{ETH_LEN, Ports},
    outer::Inner,
    parse::{Packet, parse},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// Bytes made linear before parsing: Ethernet, the largest IPv6 header
/// chain a probe has (none: the stack adds no extension headers to TCP)
/// and the ports, with room to spare.
const PULL: u32 = 128;

/// Wraps the probe for `target` and redirects it; the tc action, or why
/// it was dropped.
#[inline(always)]
pub fn wrap_and_send(ctx: &TcContext, target: &VipAddrKey) -> Result<i32, ProbeStat> {
    let len = ctx.len();
    // Locally built packets keep their headers linear already; this makes
    // sure (a failure means the packet is shorter than its headers).
    ctx.pull_data(len.min(PULL))
        .map_err(|_| ProbeStat::Malformed)?;
    let mut p = Packet {
        l3: 0,
        l4: 0,
        v6: false,
        proto: 0,
        src: [0; 4],
        dst: [0; 4],
        ttl: 0,
        frag: false,
        truncated: false,
        len: 0,
    };
    parse(ctx, &mut p).map_err(|_| ProbeStat::Malformed)?;
    // The stack's probes carry no VLAN tag; the outer header goes right
    // after the Ethernet header.
    if p.l3 != ETH_LEN || p.frag {
        return Err(ProbeStat::Malformed);
    }
    if p.family() != target.family {
        return Err(ProbeStat::WrongFamily);
    }
    let key = flow_key(ctx, &p)?;
    let h = flow_hash(&key);
    let source = source_of_hash(h, key.family);
    let inner = Inner::read(ctx, &p).ok_or(ProbeStat::Malformed)?;
    let (room, flags) = if p.v6 {
        (OVERHEAD_V6, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6)
    } else {
        (OVERHEAD_V4, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4)
    };
    ctx.adjust_room(room as i32, BPF_ADJ_ROOM_MAC, flags as u64)
        .map_err(|_| ProbeStat::Malformed)?;
    let stored = if p.v6 {
        ctx.store(
            ETH_LEN,
            &inner.outer_v6(&source, &target.addr, inner.ttl, h),
            0,
        )
    } else {
        ctx.store(
            ETH_LEN,
            &inner.outer_v4(source[0], target.addr[0], inner.ttl),
            0,
        )
    };
    stored.map_err(|_| ProbeStat::Malformed)?;
    // The mark chose the probe's way here; the wrapped packet is routed as
    // any other packet of this host's.
    ctx.set_mark(0);
    let ifindex = egress(ctx, p.v6, &source, &target.addr, inner.len as usize + room)?;
    // SAFETY: a plain helper call; a null `params` makes the kernel route
    // the outer destination itself on that interface and resolve its
    // neighbour (queueing the packet meanwhile).
    let action = unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) };
    Ok(action as i32)
}

/// The probe's flow as the XDP program would key a client's: addresses,
/// ports (TCP and UDP; 0 for anything else), protocol, family.
#[inline(always)]
fn flow_key(ctx: &TcContext, p: &Packet) -> Result<FlowKey, ProbeStat> {
    let (sport, dport) = if p.proto == PROTO_TCP || p.proto == PROTO_UDP {
        let ports = load::<Ports>(ctx, p.l4).ok_or(ProbeStat::Malformed)?;
        (ports.source, ports.dest)
    } else {
        (0, 0)
    };
    Ok(FlowKey {
        src: p.src,
        dst: p.dst,
        sport,
        dport,
        proto: p.proto,
        family: p.family(),
        _pad: [0; 2],
    })
}

/// The interface the kernel's FIB sends `dst` out of (as if forwarded from
/// the probe device, where the daemon enables forwarding), checked
/// against its MTU for `len` bytes.
#[inline(always)]
fn egress(ctx: &TcContext, v6: bool, src: &Addr, dst: &Addr, len: usize) -> Result<u32, ProbeStat> {
    // SAFETY: `bpf_fib_lookup` is plain data; all zeroes is a valid value.
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.family = if v6 { AF_INET6 } else { AF_INET };
    params.__bindgen_anon_1.tot_len = len as u16;
    // SAFETY: `skb` is the kernel's `__sk_buff` for this run.
    params.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if v6 {
        params.__bindgen_anon_3.ipv6_src = *src;
        params.__bindgen_anon_4.ipv6_dst = *dst;
    } else {
        params.__bindgen_anon_3.ipv4_src = src[0];
        params.__bindgen_anon_4.ipv4_dst = dst[0];
    }
    // SAFETY: `params` is a live stack object of the size passed.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            &mut params,
            core::mem::size_of::<FibParams>() as i32,
            BPF_FIB_LOOKUP_SKIP_NEIGH,
        )
    };
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 {
        return Err(ProbeStat::NoRoute);
    }
    Ok(params.ifindex)
}
