//! Per-packet dispatch: client -> VIP, target -> client, ICMP, or not ours.
use aya_ebpf::programs::XdpContext;
use lb_common::{
    FlowKey, FlowValue, PROTO_TCP, PROTO_UDP, Stat, Target, VipAddrKey, VipKey, VipMeta,
    limits::REPLY_REFRESH_NS, maps::port_flags,
};

use crate::{
    Verdict, fib, flow,
    headers::{IPPROTO_ICMP, IPPROTO_ICMPV6, TCP_FIN, TCP_RST, Tcp, Udp},
    icmp,
    maps::{NAT, PORTS, VIP_ADDRS, VIPS},
    parse::{Packet, parse},
    ptr::ptr_at,
    rewrite::{Side, translate},
    stats::{self, Dir},
};

#[inline(always)]
pub fn handle(ctx: &XdpContext) -> Verdict {
    let mut p = match parse(ctx) {
        Ok(p) => p,
        Err(v) => return v,
    };
    if p.truncated {
        // Same rule as a truncated transport header: ours to drop when it
        // is addressed to a VIP, the kernel's otherwise.
        return if is_vip_addr(&p.dst, p.family()) {
            Verdict::drop(Stat::DropMalformed)
        } else {
            Verdict::pass(Stat::PassMalformed)
        };
    }
    if p.frag {
        // Only the first fragment has ports, so no fragment can be hashed
        // to its flow consistently: refuse them for VIPs, leave the rest.
        return if is_vip_addr(&p.dst, p.family()) {
            Verdict::drop(Stat::DropFragment)
        } else {
            Verdict::pass(Stat::PassNotVip)
        };
    }
    match p.proto {
        PROTO_TCP | PROTO_UDP => l4(ctx, &mut p),
        IPPROTO_ICMP if !p.v6 => icmp::handle(ctx, &mut p),
        IPPROTO_ICMPV6 if p.v6 => icmp::handle(ctx, &mut p),
        _ => Verdict::pass(Stat::PassNotVip),
    }
}

#[inline(always)]
pub fn is_vip_addr(addr: &lb_common::Addr, family: u8) -> bool {
    // Built from words: a struct literal with a `[u8; 3]` pad makes LLVM
    // call an out-of-line memset. On little-endian the family is the low
    // byte of the last word, and the pad bytes are its zero high bytes.
    let words: [u32; 5] = [addr[0], addr[1], addr[2], addr[3], family as u32];
    let key: VipAddrKey = unsafe { core::mem::transmute(words) };
    unsafe { VIP_ADDRS.get(key) }.is_some()
}

#[inline(always)]
fn port_flags(port: u16) -> u32 {
    PORTS.get(u16::from_be(port) as u32).copied().unwrap_or(0)
}

/// TCP FIN and RST bits, or none for UDP.
#[inline(always)]
fn tcp_teardown(ctx: &XdpContext, p: &Packet) -> (bool, bool) {
    if p.proto != PROTO_TCP {
        return (false, false);
    }
    match ptr_at::<Tcp>(ctx, p.l4) {
        Some(tcp) => {
            let f = unsafe { (*tcp).off_flags };
            (f & TCP_FIN != 0, f & TCP_RST != 0)
        }
        None => (false, false),
    }
}

#[inline(always)]
fn l4(ctx: &XdpContext, p: &mut Packet) -> Verdict {
    // The whole header must be there: its checksum is rewritten.
    let complete = if p.proto == PROTO_TCP {
        ptr_at::<Tcp>(ctx, p.l4).is_some()
    } else {
        ptr_at::<Udp>(ctx, p.l4).is_some()
    };
    let Some(ports) = ptr_at::<[u16; 2]>(ctx, p.l4).filter(|_| complete) else {
        return if is_vip_addr(&p.dst, p.family()) {
            Verdict::drop(Stat::DropMalformed)
        } else {
            Verdict::pass(Stat::PassMalformed)
        };
    };
    let [sport, dport] = unsafe { *ports };
    let key = FlowKey {
        src: p.src,
        dst: p.dst,
        sport,
        dport,
        proto: p.proto,
        family: p.family(),
        _pad: [0; 2],
    };
    if port_flags(dport) & port_flags::VIP != 0 {
        let now = flow::now();
        // An established flow carries all it needs: no `VIPS` lookup.
        if p.ttl > 1
            && let Some((entry, id, t)) = flow::established(&key, now)
        {
            let vip_id = unsafe { (*entry).vip_id };
            return send_to_target(ctx, p, &key, vip_id, Some(entry), id, t, false, now);
        }
        let vip = VipKey {
            addr: p.dst,
            port: dport,
            proto: p.proto,
            family: key.family,
        };
        if let Some(meta) = unsafe { VIPS.get(vip) } {
            return new_flow(ctx, p, &key, meta, now);
        }
    }
    if port_flags(sport) & port_flags::TARGET != 0 {
        return to_client(ctx, p, &key);
    }
    Verdict::pass(Stat::PassNotVip)
}

/// Client -> VIP without a valid flow entry: pick a target, record the flow.
#[inline(always)]
fn new_flow(ctx: &XdpContext, p: &mut Packet, key: &FlowKey, vip: &VipMeta, now: u64) -> Verdict {
    if p.ttl <= 1 {
        return Verdict::pass(Stat::PassTtlExceeded);
    }
    let Some((id, t)) = flow::select(key, vip) else {
        return Verdict::drop(Stat::DropNoTarget);
    };
    flow::create(key, vip, id, t, now);
    send_to_target(ctx, p, key, vip.vip_id, None, id, t, true, now)
}

/// Client -> VIP, target known: translate, count, track TCP teardown, send.
#[allow(
    clippy::too_many_arguments,
    reason = "inlined hot path; a struct would be copied"
)]
#[inline(always)]
fn send_to_target(
    ctx: &XdpContext,
    p: &mut Packet,
    key: &FlowKey,
    vip_id: u32,
    mut entry: Option<*mut FlowValue>,
    id: u32,
    t: &Target,
    new_flow: bool,
    now: u64,
) -> Verdict {
    let (addr, port) = (t.addr, t.port);
    let (fin, rst) = tcp_teardown(ctx, p);
    if rst {
        flow::remove(key, &flow::reply_key(key, t));
    }
    if translate(ctx, p, Side::Destination, &addr, port).is_none() {
        return Verdict::drop(Stat::DropMalformed);
    }
    stats::traffic(vip_id, id, Dir::In, p.len, new_flow);
    if fin && !rst {
        if entry.is_none() {
            entry = crate::maps::FLOWS.get_ptr_mut(key);
        }
        flow::closing(entry);
    }
    fib::to_target(ctx, p, key, id, now)
}

/// Target -> client: if it is a reply of a tracked flow, put the VIP back.
#[inline(always)]
fn to_client(ctx: &XdpContext, p: &mut Packet, reply: &FlowKey) -> Verdict {
    let Some(nat_ptr) = NAT.get_ptr_mut(reply) else {
        return Verdict::pass(Stat::PassNotVip);
    };
    let nat = unsafe { *nat_ptr };
    if p.ttl <= 1 {
        return Verdict::pass(Stat::PassTtlExceeded);
    }
    let now = flow::now();
    let fwd = flow::forward_key(reply, &nat);
    let (fin, rst) = tcp_teardown(ctx, p);
    // The client flow's idle timer, refreshed at most once a second (and
    // always when TCP teardown needs the entry).
    let mut entry = None;
    if fin || rst || now.wrapping_sub(nat.refreshed_ns) > REPLY_REFRESH_NS {
        entry = crate::maps::FLOWS.get_ptr_mut(fwd);
        if let Some(f) = entry {
            unsafe {
                (*f).last_seen_ns = now;
                (*nat_ptr).refreshed_ns = now;
            }
        }
    }
    if translate(ctx, p, Side::Source, &nat.vip_addr, nat.vip_port).is_none() {
        return Verdict::drop(Stat::DropMalformed);
    }
    stats::traffic(nat.vip_id, nat.target_id, Dir::Out, p.len, false);
    if rst {
        flow::remove(&fwd, reply);
    } else if fin {
        flow::closing(entry);
    }
    fib::forward(ctx, p, Stat::Returned, now)
}
