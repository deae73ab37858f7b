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
use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_csum_diff, bpf_redirect, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{FlowKey, Stat};

use crate::{
    Verdict,
    headers::{ICMP_LEN, IPPROTO_ICMP, IPPROTO_ICMPV6, IPV4_LEN, IPV6_LEN, Ipv4, Ipv6},
    parse::Packet,
    ptr::ptr_at,
    rewrite::{Side, untranslate},
};

/// Transport bytes quoted (RFC 792 asks for 8; Linux matches on ports).
const QUOTED_L4: usize = 8;
const IP_DF: u16 = 0x4000u16.to_be();
const TTL: u8 = 64;

/// One's-complement sum of `len` bytes at `ptr` (a multiple of 4), folded.
#[inline(always)]
fn fold(sum: i64) -> u16 {
    let mut s = sum as u64 & 0xffff_ffff;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// Answers a packet too big for the target side; see the module docs.
#[inline(always)]
pub fn reply(ctx: &XdpContext, p: &mut Packet, key: &FlowKey, mtu: u16) -> Verdict {
    let stat = generate(ctx, p, key, mtu);
    let action = match stat {
        // Back out of the interface it came in on. A redirect rather than
        // XDP_TX: on veth, XDP_TX frames wait in the peer's queue until
        // something else wakes it (seen here: seconds), a redirect kicks it.
        Stat::TooBigSent => {
            let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
            unsafe { bpf_redirect(ingress, 0) as u32 }
        }
        Stat::PassMtu => xdp_action::XDP_PASS,
        _ => xdp_action::XDP_DROP,
    };
    Verdict { action, stat }
}

// Inlined: as a BPF-to-BPF call its frame on top of the main program's
// exceeds the kernel's 512-byte combined stack limit.
#[inline(always)]
fn generate(ctx: &XdpContext, p: &mut Packet, key: &FlowKey, mtu: u16) -> Stat {
    let ip_len = if p.v6 { IPV6_LEN } else { IPV4_LEN };
    if p.l4 != p.l3 + ip_len {
        return Stat::PassMtu;
    }
    if !p.v6 {
        let Some(ip) = ptr_at::<Ipv4>(ctx, p.l3) else {
            return Stat::PassMtu;
        };
        if unsafe { (*ip).frag_off } & IP_DF == 0 {
            return Stat::PassMtu;
        }
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

#[inline(always)]
fn build(ctx: &XdpContext, p: &Packet, key: &FlowKey, mtu: u16) -> Option<()> {
    let l3 = p.l3;
    if l3 > 18 {
        return None;
    }
    let ip_len = if p.v6 { IPV6_LEN } else { IPV4_LEN };
    let quoted = ip_len + QUOTED_L4;
    // Remember the Ethernet addresses and the VLAN tag (if any).
    let eth = unsafe { *ptr_at::<[u8; 18]>(ctx, 0)? };
    let frame = ctx.data_end() - ctx.data();
    let keep = l3 + quoted;
    if frame < keep {
        return None;
    }
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -((frame - keep) as i32)) } != 0 {
        return None;
    }
    let grow = (ip_len + ICMP_LEN) as i32;
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -grow) } != 0 {
        return None;
    }
    // New Ethernet header: back to whoever sent it.
    let out = unsafe { &mut *ptr_at::<[u8; 18]>(ctx, 0)? };
    out[..6].copy_from_slice(&eth[6..12]);
    out[6..12].copy_from_slice(&eth[..6]);
    out[12..18].copy_from_slice(&eth[12..18]);
    let icmp_at = l3 + ip_len;
    if p.v6 {
        let ip = unsafe { &mut *ptr_at::<Ipv6>(ctx, l3)? };
        ip.vtc_flow = 0x0000_0060; // version 6, no class or label (wire order)
        ip.payload_len = ((ICMP_LEN + quoted) as u16).to_be();
        ip.next_hdr = IPPROTO_ICMPV6;
        ip.hop_limit = TTL;
        ip.saddr = key.dst;
        ip.daddr = key.src;
        let icmp = unsafe { &mut *ptr_at::<[u32; 2]>(ctx, icmp_at)? };
        // type 2 (packet too big), code 0, checksum 0; then the MTU.
        icmp[0] = u32::from_ne_bytes([2, 0, 0, 0]);
        icmp[1] = (mtu as u32).to_be();
        // Pseudo-header: source, destination, length, next header.
        let mut pseudo = [0u32; 10];
        pseudo[..4].copy_from_slice(&key.dst);
        pseudo[4..8].copy_from_slice(&key.src);
        pseudo[8] = ((ICMP_LEN + quoted) as u32).to_be();
        pseudo[9] = (IPPROTO_ICMPV6 as u32).to_be();
        let msg = ptr_at::<[u8; ICMP_LEN + IPV6_LEN + QUOTED_L4]>(ctx, icmp_at)?;
        let seed = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, pseudo.as_mut_ptr(), 40, 0) };
        let sum = unsafe {
            bpf_csum_diff(
                core::ptr::null_mut(),
                0,
                msg as *mut u32,
                (ICMP_LEN + IPV6_LEN + QUOTED_L4) as u32,
                seed as u32,
            )
        };
        let check = unsafe { &mut *ptr_at::<[u16; 2]>(ctx, icmp_at)? };
        check[1] = fold(sum);
    } else {
        let ip = unsafe { &mut *ptr_at::<Ipv4>(ctx, l3)? };
        ip.vihl = 0x45;
        ip.tos = 0;
        ip.tot_len = ((IPV4_LEN + ICMP_LEN + quoted) as u16).to_be();
        ip.id = 0;
        ip.frag_off = IP_DF;
        ip.ttl = TTL;
        ip.proto = IPPROTO_ICMP;
        ip.check = 0;
        ip.saddr = key.dst[0];
        ip.daddr = key.src[0];
        let hdr = ptr_at::<[u8; IPV4_LEN]>(ctx, l3)?;
        let sum = unsafe {
            bpf_csum_diff(
                core::ptr::null_mut(),
                0,
                hdr as *mut u32,
                IPV4_LEN as u32,
                0,
            )
        };
        ip.check = fold(sum);
        let icmp = unsafe { &mut *ptr_at::<[u32; 2]>(ctx, icmp_at)? };
        // type 3 (unreachable), code 4 (fragmentation needed), checksum 0;
        // then 16 unused bits and the next-hop MTU.
        icmp[0] = u32::from_ne_bytes([3, 4, 0, 0]);
        icmp[1] = (mtu as u32).to_be();
        let msg = ptr_at::<[u8; ICMP_LEN + IPV4_LEN + QUOTED_L4]>(ctx, icmp_at)?;
        let sum = unsafe {
            bpf_csum_diff(
                core::ptr::null_mut(),
                0,
                msg as *mut u32,
                (ICMP_LEN + IPV4_LEN + QUOTED_L4) as u32,
                0,
            )
        };
        let check = unsafe { &mut *ptr_at::<[u16; 2]>(ctx, icmp_at)? };
        check[1] = fold(sum);
    }
    Some(())
}
