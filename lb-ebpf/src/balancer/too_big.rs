//! ICMP "fragmentation needed" / ICMPv6 "packet too big" generated here.
//!
//! When a client's packet, translated toward its target, does not fit the
//! target-side MTU, the kernel's own error would quote the translated packet
//! (client -> target), which the client cannot match to its connection to
//! the VIP: path-MTU discovery would stall. So the program answers itself,
//! from the VIP, quoting the packet as the client sent it, and sends it back
//! out of the interface it came in on (as Katran does).
//!
//! Frame surgery: the packet is translated back, cut to its IP header and
//! the first 8 transport bytes, and a new IP + ICMP header is put in front:
//!
//! ```text
//! before: [eth][ip][l4 ...........]
//! after:  [eth][ip'][icmp][ip][l4: 8 bytes]
//! ```
//! IPv4 packets without DF are left to the kernel, which may fragment them;
//! packets with IPv4 options or IPv6 extension headers are too (counted as
//! `pass_mtu`).
use aya_ebpf::bindings::xdp_action;
use lb_common::{FlowKey, Stat};
use lb_ebpf::{
    csum::finish,
    frame::{load, store, sum, sum_of, update},
    headers::{ICMP_LEN, IPPROTO_ICMP, IPPROTO_ICMPV6, IPV4_LEN, IPV6_LEN, Ipv4, Ipv6},
    parse::Packet,
};

use super::{
    Verdict, encap,
    hook::Hook,
    nat::{Side, untranslate},
};

/// Transport bytes quoted (RFC 792 asks for 8; Linux matches on ports).
const QUOTED_L4: usize = 8;
const IP_DF: u16 = 0x4000u16.to_be();
const TTL: u8 = 64;

/// Answers a packet too big for the target side; see the module docs.
#[inline(always)]
pub fn reply(ctx: &impl Hook, p: &mut Packet, key: &FlowKey, mtu: u16) -> Verdict {
    Verdict::unpack(answer(ctx, p, key, mtu))
}

/// Answers a client packet that no longer fits once encapsulated (dsr):
/// the outer header comes off again and the client hears of the MTU less
/// the outer header, about the packet as it sent it (the inner packet was
/// never changed). What [`reply`] would leave to the kernel is left to it
/// still wrapped, so that the kernel forwards it as the tunnel packet it is
/// (fragmenting the outer packet if it may).
#[inline(always)]
pub fn reply_wrapped(ctx: &impl Hook, p: &mut Packet, key: &FlowKey, mtu: u16) -> Verdict {
    let extra = encap::overhead(p.v6);
    if !answerable(ctx, p, p.l3 + extra) {
        return Verdict::pass(Stat::PassMtu);
    }
    if encap::unwrap(ctx, p, key, extra).is_none() {
        return Verdict::drop(Stat::DropMalformed);
    }
    reply(ctx, p, key, mtu.saturating_sub(extra as u16))
}

/// As [`reply_wrapped`], for a second-chance chain (two outer headers):
/// the client hears of the MTU less both.
#[inline(always)]
pub fn reply_chained(ctx: &impl Hook, p: &mut Packet, key: &FlowKey, mtu: u16) -> Verdict {
    let extra = 2 * encap::overhead(p.v6);
    // The Ethernet header `unwrap` moves, bounds-checked first (one byte,
    // the 18th: no copy on the stack): otherwise LLVM drops this check as
    // implied by `answerable`'s, whose variable offset the verifier cannot
    // relate to the frame's start.
    if load::<u8>(ctx, 17).is_none() {
        return Verdict::drop(Stat::DropMalformed);
    }
    if !answerable(ctx, p, p.l3 + extra) {
        return Verdict::pass(Stat::PassMtu);
    }
    if encap::unwrap(ctx, p, key, extra).is_none() {
        return Verdict::drop(Stat::DropMalformed);
    }
    reply(ctx, p, key, mtu.saturating_sub(extra as u16))
}

/// Out of line: a BPF call with a stack frame of its own for the frame
/// surgery's locals (see `dispatch::untracked`); returns a packed
/// [`Verdict`].
#[inline(never)]
fn answer(ctx: &impl Hook, p: &mut Packet, key: &FlowKey, mtu: u16) -> u64 {
    let stat = generate(ctx, p, key, mtu);
    let action = match stat {
        // Back out of the interface it came in on. A redirect rather than
        // XDP_TX: on veth, XDP_TX frames wait in the peer's queue until
        // something else wakes it (seen here: seconds), a redirect kicks it.
        Stat::TooBigSent => ctx.redirect(ctx.ingress_if()),
        Stat::PassMtu => xdp_action::XDP_PASS,
        _ => xdp_action::XDP_DROP,
    };
    Verdict { action, stat }.pack()
}

#[inline(always)]
fn generate(ctx: &impl Hook, p: &mut Packet, key: &FlowKey, mtu: u16) -> Stat {
    if !answerable(ctx, p, p.l3) {
        return Stat::PassMtu;
    }
    // Quote the packet as the client sent it (less our TTL decrement).
    if untranslate(ctx, p, Side::Destination, &key.dst, key.dport).is_none() {
        return Stat::DropMalformed;
    }
    match build(ctx, p, key, mtu) {
        Some(()) => Stat::TooBigSent,
        // The frame was already cut: it cannot be passed on any more.
        None => Stat::DropMalformed,
    }
}

/// Whether the client's IP header (at `l3`) is one this answers about: no
/// IPv4 options or IPv6 extension headers, and (IPv4) DF set.
#[inline(always)]
fn answerable(ctx: &impl Hook, p: &Packet, l3: usize) -> bool {
    let ip_len = if p.v6 { IPV6_LEN } else { IPV4_LEN };
    if p.l4 != l3 + ip_len {
        return false;
    }
    p.v6 || load::<Ipv4>(ctx, l3).is_some_and(|ip| ip.frag_off & IP_DF != 0)
}

/// Cuts the frame to the quoted part and puts Ethernet, IP and ICMP
/// headers in front of it.
#[inline(always)]
fn build(ctx: &impl Hook, p: &Packet, key: &FlowKey, mtu: u16) -> Option<()> {
    let l3 = p.l3;
    if l3 > 18 {
        return None;
    }
    let ip_len = if p.v6 { IPV6_LEN } else { IPV4_LEN };
    let quoted = ip_len + QUOTED_L4;
    // Remember the Ethernet addresses and the VLAN tag (if any).
    let eth = load::<[u8; 18]>(ctx, 0)?;
    let frame = ctx.frame_len();
    let keep = l3 + quoted;
    if frame < keep {
        return None;
    }
    if !ctx.adjust_tail(-((frame - keep) as i32)) {
        return None;
    }
    if !ctx.adjust_head(-((ip_len + ICMP_LEN) as i32)) {
        return None;
    }
    // New Ethernet header: back to whoever sent it.
    update::<[u8; 18], _>(ctx, 0, |out| {
        out[..6].copy_from_slice(&eth[6..12]);
        out[6..12].copy_from_slice(&eth[..6]);
        out[12..18].copy_from_slice(&eth[12..18]);
    })?;
    let icmp_at = l3 + ip_len;
    if p.v6 {
        store(
            ctx,
            l3,
            Ipv6 {
                vtc_flow: 0x0000_0060, // version 6, no class or label (wire order)
                payload_len: ((ICMP_LEN + quoted) as u16).to_be(),
                next_hdr: IPPROTO_ICMPV6,
                hop_limit: TTL,
                saddr: key.dst,
                daddr: key.src,
            },
        )?;
        // type 2 (packet too big), code 0, checksum 0; then the MTU.
        store(
            ctx,
            icmp_at,
            [u32::from_ne_bytes([2, 0, 0, 0]), (mtu as u32).to_be()],
        )?;
        // Pseudo-header: source, destination, length, next header.
        let mut pseudo = [0u32; 10];
        pseudo[..4].copy_from_slice(&key.dst);
        pseudo[4..8].copy_from_slice(&key.src);
        pseudo[8] = ((ICMP_LEN + quoted) as u32).to_be();
        pseudo[9] = (IPPROTO_ICMPV6 as u32).to_be();
        let seed = sum_of(&mut pseudo, 0);
        let total = sum::<{ ICMP_LEN + IPV6_LEN + QUOTED_L4 }>(ctx, icmp_at, seed)?;
        update::<[u16; 2], _>(ctx, icmp_at, |check| check[1] = finish(total as u64))
    } else {
        let mut ip = Ipv4 {
            vihl: 0x45,
            tos: 0,
            tot_len: ((IPV4_LEN + ICMP_LEN + quoted) as u16).to_be(),
            id: 0,
            frag_off: IP_DF,
            ttl: TTL,
            proto: IPPROTO_ICMP,
            check: 0,
            saddr: key.dst[0],
            daddr: key.src[0],
        };
        ip.check = finish(sum_of(&mut ip, 0) as u64);
        store(ctx, l3, ip)?;
        // type 3 (unreachable), code 4 (fragmentation needed), checksum 0;
        // then 16 unused bits and the next-hop MTU.
        store(
            ctx,
            icmp_at,
            [u32::from_ne_bytes([3, 4, 0, 0]), (mtu as u32).to_be()],
        )?;
        let total = sum::<{ ICMP_LEN + IPV4_LEN + QUOTED_L4 }>(ctx, icmp_at, 0)?;
        update::<[u16; 2], _>(ctx, icmp_at, |check| check[1] = finish(total as u64))
    }
}
