//! ICMP and ICMPv6 errors about translated flows.
//!
//! An error quotes the packet that caused it. Errors about a reply we sent
//! (VIP -> client, e.g. "fragmentation needed" from the client's path) go to
//! the target that sent it; errors about a packet we translated to a target
//! (client -> target) go back to the client in VIP terms. The quoted
//! transport checksum is left alone: it is usually not quoted whole and
//! receivers do not verify it.
use aya_ebpf::programs::XdpContext;
use lb_common::{Addr, FlowKey, PROTO_TCP, PROTO_UDP, Stat};

use crate::{
    Verdict,
    csum::{Delta, apply},
    fib, flow,
    forward::is_vip_addr,
    headers::{ICMP_LEN, IPV4_LEN, IPV6_LEN, Icmp, Ipv4, Ipv6},
    maps::{FLOWS, NAT},
    parse::Packet,
    ptr::ptr_at,
};

/// The quoted packet inside an ICMP error.
struct Quoted {
    l3: usize,
    l4: usize,
    key: FlowKey,
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

#[inline(always)]
pub fn handle(ctx: &XdpContext, p: &mut Packet) -> Verdict {
    let Some(icmp) = ptr_at::<Icmp>(ctx, p.l4) else {
        return Verdict::pass(Stat::PassIcmp);
    };
    if !is_error(p, unsafe { (*icmp).kind }) {
        return Verdict::pass(Stat::PassIcmp);
    }
    let Some(q) = quoted(ctx, p) else {
        return Verdict::pass(Stat::PassIcmp);
    };
    if is_vip_addr(&p.dst, p.family()) {
        about_reply(ctx, p, &q)
    } else {
        about_request(ctx, p, &q)
    }
}

#[inline(always)]
fn quoted(ctx: &XdpContext, p: &Packet) -> Option<Quoted> {
    let l3 = p.l4 + ICMP_LEN;
    let (src, dst, proto, l4) = if p.v6 {
        let ip = unsafe { &*ptr_at::<Ipv6>(ctx, l3)? };
        (ip.saddr, ip.daddr, ip.next_hdr, l3 + IPV6_LEN)
    } else {
        let ip = unsafe { &*ptr_at::<Ipv4>(ctx, l3)? };
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
    let ports = unsafe { *ptr_at::<[u16; 4]>(ctx, l4)? };
    Some(Quoted {
        l3,
        l4,
        key: FlowKey {
            src,
            dst,
            sport: ports[0],
            dport: ports[1],
            proto,
            family: p.family(),
            _pad: [0; 2],
        },
    })
}

/// Quoted VIP -> client: deliver to the flow's target.
#[inline(always)]
fn about_reply(ctx: &XdpContext, p: &mut Packet, q: &Quoted) -> Verdict {
    // The quoted packet is our reply; its reverse is the client's flow.
    let fwd = q.key.reversed();
    let Some(f) = (unsafe { FLOWS.get(fwd) }).copied() else {
        return Verdict::pass(Stat::PassIcmp);
    };
    let Some(t) = flow::target(f.target_id).copied() else {
        return Verdict::pass(Stat::PassIcmp);
    };
    if t.generation != f.target_gen {
        return Verdict::pass(Stat::PassIcmp);
    }
    if p.ttl <= 1 {
        return Verdict::pass(Stat::PassTtlExceeded);
    }
    let ok = rewrite(
        ctx,
        p,
        q,
        Outer::Destination(t.addr),
        Quote::Source,
        &t.addr,
        t.port,
    );
    finish(ctx, p, ok)
}

/// Quoted client -> target: deliver to the client as if from the VIP.
#[inline(always)]
fn about_request(ctx: &XdpContext, p: &mut Packet, q: &Quoted) -> Verdict {
    // The quoted packet is the translated request; its reverse is the reply.
    let reply = q.key.reversed();
    let Some(nat) = (unsafe { NAT.get(reply) }).copied() else {
        return Verdict::pass(Stat::PassIcmp);
    };
    if p.ttl <= 1 {
        return Verdict::pass(Stat::PassTtlExceeded);
    }
    // The error's sender is the target itself or a router; only the target's
    // own address is hidden behind the VIP.
    let outer = if p.src == q.key.dst {
        Outer::Source(nat.vip_addr)
    } else {
        Outer::Unchanged
    };
    let ok = rewrite(
        ctx,
        p,
        q,
        outer,
        Quote::Destination,
        &nat.vip_addr,
        nat.vip_port,
    );
    finish(ctx, p, ok)
}

#[inline(always)]
fn finish(ctx: &XdpContext, p: &Packet, ok: Option<()>) -> Verdict {
    match ok {
        Some(()) => fib::forward(ctx, p, Stat::IcmpTranslated, flow::now()),
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
    ctx: &XdpContext,
    p: &mut Packet,
    q: &Quoted,
    outer: Outer,
    quote: Quote,
    addr: &Addr,
    port: u16,
) -> Option<()> {
    let mut icmp_delta = Delta::new();
    // Quoted packet: address, port, and (IPv4) its header checksum.
    let ports = unsafe { &mut *ptr_at::<[u16; 2]>(ctx, q.l4)? };
    let i = match quote {
        Quote::Source => 0,
        Quote::Destination => 1,
    };
    icmp_delta.word(ports[i & 1], port);
    ports[i & 1] = port;
    let mut quoted_addr = Delta::new();
    if p.v6 {
        let ip = unsafe { &mut *ptr_at::<Ipv6>(ctx, q.l3)? };
        let a = match quote {
            Quote::Source => &mut ip.saddr,
            Quote::Destination => &mut ip.daddr,
        };
        quoted_addr.addr(a, addr, true);
        *a = *addr;
    } else {
        let ip = unsafe { &mut *ptr_at::<Ipv4>(ctx, q.l3)? };
        let a = match quote {
            Quote::Source => &mut ip.saddr,
            Quote::Destination => &mut ip.daddr,
        };
        quoted_addr.word32(*a, addr[0]);
        *a = addr[0];
        let old = ip.check;
        ip.check = apply(old, quoted_addr);
        icmp_delta.word(old, ip.check);
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
    if p.v6 {
        let ip = unsafe { &mut *ptr_at::<Ipv6>(ctx, p.l3)? };
        ip.saddr = p.src;
        ip.daddr = p.dst;
        ip.hop_limit -= 1;
        // ICMPv6's checksum covers the outer addresses (pseudo-header).
        icmp_delta.merge(outer_addr);
    } else {
        let ip = unsafe { &mut *ptr_at::<Ipv4>(ctx, p.l3)? };
        ip.saddr = p.src[0];
        ip.daddr = p.dst[0];
        let before = u16::from_ne_bytes([ip.ttl, ip.proto]);
        ip.ttl -= 1;
        outer_addr.word(before, u16::from_ne_bytes([ip.ttl, ip.proto]));
        ip.check = apply(ip.check, outer_addr);
    }
    p.ttl -= 1;
    let icmp = unsafe { &mut *ptr_at::<Icmp>(ctx, p.l4)? };
    icmp.check = apply(icmp.check, icmp_delta);
    Some(())
}
