//! ICMP and ICMPv6 errors about translated flows.
//!
//! An error quotes the packet that caused it. Errors about a reply we sent
//! (VIP -> client, e.g. "fragmentation needed" from the client's path) go to
//! the target that sent it (a dsr flow's target sent it itself, from the
//! VIP: the error goes to it encapsulated, unchanged, like the flow's
//! packets); errors about a packet we translated to a target
//! (client -> target) go back to the client in VIP terms. The quoted
//! transport checksum is left alone: it is usually not quoted whole and
//! receivers do not verify it.
use lb_common::{Addr, FlowKey, PROTO_TCP, PROTO_UDP, Stat, flow::entry_flags};
use lb_ebpf::{
    csum::{Delta, apply},
    frame::{load, update},
    headers::{ICMP_LEN, IPV4_LEN, IPV6_LEN, Icmp, Ipv4, Ipv6},
    parse::Packet,
};

use super::{
    Verdict, clock,
    conntrack::{self, Sets},
    dispatch::is_vip_addr,
    encap, fib,
    hook::Hook,
    scratch::icmp_key,
};

/// Where the quoted packet inside an ICMP error is; its 5-tuple, turned
/// around, is in the scratch memory's `icmp_key` (see [`quoted`]).
struct Quoted {
    l3: usize,
    l4: usize,
}

#[inline(always)]
fn is_error(p: &Packet, kind: u8) -> bool {
    if p.v6 {
        // destination unreachable, packet too big, time exceeded, parameter problem
        (1..=4).contains(&kind)
    } else {
        // destination unreachable, time exceeded, parameter problem
        kind == 3 || kind == 11 || kind == 12
    }
}

/// Out of line (see `dispatch::handle`); returns a packed [`Verdict`].
#[inline(never)]
pub fn handle(ctx: &impl Hook, p: &mut Packet) -> u64 {
    error(ctx, p, clock::now_ns()).pack()
}

#[inline(always)]
fn error(ctx: &impl Hook, p: &mut Packet, now: u64) -> Verdict {
    let Some(icmp) = load::<Icmp>(ctx, p.l4) else {
        return Verdict::pass(Stat::PassIcmp);
    };
    if !is_error(p, icmp.kind) {
        return Verdict::pass(Stat::PassIcmp);
    }
    let Some(turned) = icmp_key() else {
        return Verdict::pass(Stat::PassIcmp);
    };
    let Some(q) = quoted(ctx, p, turned) else {
        return Verdict::pass(Stat::PassIcmp);
    };
    if is_vip_addr(&p.dst, p.family()) {
        about_reply(ctx, p, &q, turned, now)
    } else {
        about_request(ctx, p, &q, turned, now)
    }
}

/// Finds the quoted packet and writes its 5-tuple, turned around (the
/// direction the connection table knows it by), into `turned`.
#[inline(always)]
fn quoted(ctx: &impl Hook, p: &Packet, turned: &mut FlowKey) -> Option<Quoted> {
    let l3 = p.l4 + ICMP_LEN;
    let (src, dst, proto, l4) = if p.v6 {
        let ip = load::<Ipv6>(ctx, l3)?;
        (ip.saddr, ip.daddr, ip.next_hdr, l3 + IPV6_LEN)
    } else {
        let ip = load::<Ipv4>(ctx, l3)?;
        if ip.vihl != 0x45 {
            return None; // quoted IPv4 options: rare, not translated
        }
        (
            [ip.saddr, 0, 0, 0],
            [ip.daddr, 0, 0, 0],
            ip.proto,
            l3 + IPV4_LEN,
        )
    };
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    // RFC 792/4443 quote at least 8 bytes of the transport header; fewer
    // means a malformed or truncated error, which is not translated.
    let ports = load::<[u16; 4]>(ctx, l4)?;
    *turned = FlowKey {
        src: dst,
        dst: src,
        sport: ports[1],
        dport: ports[0],
        proto,
        family: p.family(),
        _pad: [0; 2],
    };
    Some(Quoted { l3, l4 })
}

/// Quoted VIP -> client: deliver to the flow's target.
#[inline(always)]
fn about_reply(ctx: &impl Hook, p: &mut Packet, q: &Quoted, fwd: &FlowKey, now: u64) -> Verdict {
    // The quoted packet is our reply; turned around, the client's flow.
    let sets = Sets::of(fwd);
    let Some(slot) = conntrack::find(fwd, &sets) else {
        return Verdict::pass(Stat::PassIcmp);
    };
    if !conntrack::live(&slot, &sets, lb_common::flow::ticks(now)) {
        return Verdict::pass(Stat::PassIcmp);
    }
    let Some(t) = conntrack::target_of(slot.get()).copied() else {
        return Verdict::pass(Stat::PassIcmp);
    };
    if p.ttl <= 1 {
        return Verdict::pass(Stat::PassTtlExceeded);
    }
    let ok = if slot.get().flags & entry_flags::DSR != 0 {
        encap::wrap_key(ctx, p, fwd, &t.addr)
    } else {
        rewrite(
            ctx,
            p,
            q,
            Outer::Destination(t.addr),
            Quote::Source,
            &t.addr,
            t.port,
        )
    };
    finish(ctx, p, ok, now)
}

/// Quoted client -> target: deliver to the client as if from the VIP.
#[inline(always)]
fn about_request(
    ctx: &impl Hook,
    p: &mut Packet,
    q: &Quoted,
    reply: &FlowKey,
    now: u64,
) -> Verdict {
    // The quoted packet is the translated request; turned around, a reply.
    let conntrack::ReplyOf::Flow(slot, vip) =
        conntrack::find_by_reply(reply, lb_common::flow::ticks(now))
    else {
        return Verdict::pass(Stat::PassIcmp);
    };
    // From the target or a router on the way to it: by the route to it.
    let target_id = slot.get().target_id as u32;
    if !fib::reply_on_route(ctx, p, &reply.src, target_id, now) {
        return Verdict::pass(Stat::PassReplyInterface);
    }
    if p.ttl <= 1 {
        return Verdict::pass(Stat::PassTtlExceeded);
    }
    // The error's sender is the target itself or a router; only the target's
    // own address is hidden behind the VIP.
    let outer = if p.src == reply.src {
        Outer::Source(vip.addr)
    } else {
        Outer::Unchanged
    };
    let ok = rewrite(ctx, p, q, outer, Quote::Destination, &vip.addr, vip.port);
    finish(ctx, p, ok, now)
}

#[inline(always)]
fn finish(ctx: &impl Hook, p: &Packet, ok: Option<()>, now: u64) -> Verdict {
    match ok {
        Some(()) => fib::route(ctx, p, Stat::IcmpTranslated, now),
        None => Verdict::drop(Stat::DropMalformed),
    }
}

enum Outer {
    Destination(Addr),
    Source(Addr),
    Unchanged,
}

enum Quote {
    Source,
    Destination,
}

/// Rewrites the outer header (one address and the TTL) and one end of the
/// quoted packet, keeping the outer IP, quoted IP and ICMP checksums right.
#[inline(always)]
fn rewrite(
    ctx: &impl Hook,
    p: &mut Packet,
    q: &Quoted,
    outer: Outer,
    quote: Quote,
    addr: &Addr,
    port: u16,
) -> Option<()> {
    let mut icmp_delta = Delta::new();
    // Quoted packet: address, port, and (IPv4) its header checksum.
    let i = match quote {
        Quote::Source => 0,
        Quote::Destination => 1,
    };
    let old_port = update::<[u16; 2], _>(ctx, q.l4, |ports| {
        core::mem::replace(&mut ports[i & 1], port)
    })?;
    icmp_delta.word(old_port, port);
    let mut quoted_addr = Delta::new();
    if p.v6 {
        update::<Ipv6, _>(ctx, q.l3, |ip| {
            let a = match quote {
                Quote::Source => &mut ip.saddr,
                Quote::Destination => &mut ip.daddr,
            };
            quoted_addr.addr(a, addr, true);
            *a = *addr;
        })?;
    } else {
        let (old, new) = update::<Ipv4, _>(ctx, q.l3, |ip| {
            let a = match quote {
                Quote::Source => &mut ip.saddr,
                Quote::Destination => &mut ip.daddr,
            };
            quoted_addr.word32(*a, addr[0]);
            *a = addr[0];
            let old = ip.check;
            ip.check = apply(old, quoted_addr);
            (old, ip.check)
        })?;
        icmp_delta.word(old, new);
    }
    icmp_delta.merge(quoted_addr);
    // Outer header.
    let mut outer_addr = Delta::new();
    match outer {
        Outer::Destination(a) => {
            outer_addr.addr(&p.dst, &a, p.v6);
            p.dst = a;
        }
        Outer::Source(a) => {
            outer_addr.addr(&p.src, &a, p.v6);
            p.src = a;
        }
        Outer::Unchanged => {}
    }
    let (src, dst) = (p.src, p.dst);
    if p.v6 {
        update::<Ipv6, _>(ctx, p.l3, |ip| {
            ip.saddr = src;
            ip.daddr = dst;
            ip.hop_limit -= 1;
        })?;
        // ICMPv6's checksum covers the outer addresses (pseudo-header).
        icmp_delta.merge(outer_addr);
    } else {
        update::<Ipv4, _>(ctx, p.l3, |ip| {
            ip.saddr = src[0];
            ip.daddr = dst[0];
            let before = u16::from_ne_bytes([ip.ttl, ip.proto]);
            ip.ttl -= 1;
            outer_addr.word(before, u16::from_ne_bytes([ip.ttl, ip.proto]));
            ip.check = apply(ip.check, outer_addr);
        })?;
    }
    p.ttl -= 1;
    update::<Icmp, _>(ctx, p.l4, |icmp| icmp.check = apply(icmp.check, icmp_delta))
}
