//! Address and port translation with incremental checksum updates and the
//! TTL / hop-limit decrement of a router.
use lb_common::Addr;
use lb_ebpf::{
    csum::{Delta, apply},
    frame::update,
    headers::{Ipv4, Ipv6, Ports},
    parse::Packet,
};

use super::hook::Hook;

/// Which end of the packet is translated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Client -> VIP becomes client -> target.
    Destination,
    /// Target -> client becomes VIP -> client.
    Source,
}

/// Rewrites one end's address and port, decrements the TTL and fixes the IP
/// and transport checksums. `None` if a header is not in the frame (the
/// caller checked the transport header, so this is defensive).
#[inline(always)]
pub fn translate(f: &impl Hook, p: &mut Packet, side: Side, addr: &Addr, port: u16) -> Option<()> {
    rewrite(f, p, side, addr, port, 1)
}

/// [`translate`] without the TTL decrement: puts an address back (used to
/// quote the packet as the client sent it in a generated ICMP error).
#[inline(always)]
pub fn untranslate(
    f: &impl Hook,
    p: &mut Packet,
    side: Side,
    addr: &Addr,
    port: u16,
) -> Option<()> {
    rewrite(f, p, side, addr, port, 0)
}

#[inline(always)]
fn rewrite(
    f: &impl Hook,
    p: &mut Packet,
    side: Side,
    addr: &Addr,
    port: u16,
    hops: u8,
) -> Option<()> {
    let old_port = update::<Ports, _>(f, p.l4, |ports| match side {
        Side::Destination => core::mem::replace(&mut ports.dest, port),
        Side::Source => core::mem::replace(&mut ports.source, port),
    })?;
    let old = match side {
        Side::Destination => &mut p.dst,
        Side::Source => &mut p.src,
    };
    // The address is in the IP header and the transport pseudo-header; the
    // port only in the transport header; the TTL only in the IPv4 header.
    let mut addr_delta = Delta::new();
    addr_delta.addr(old, addr, p.v6);
    *old = *addr;
    if p.v6 {
        update::<Ipv6, _>(f, p.l3, |ip| {
            match side {
                Side::Destination => ip.daddr = *addr,
                Side::Source => ip.saddr = *addr,
            }
            ip.hop_limit -= hops;
        })?;
    } else {
        update::<Ipv4, _>(f, p.l3, |ip| {
            match side {
                Side::Destination => ip.daddr = addr[0],
                Side::Source => ip.saddr = addr[0],
            }
            let before = u16::from_ne_bytes([ip.ttl, ip.proto]);
            ip.ttl -= hops;
            let mut ip_delta = addr_delta;
            ip_delta.word(before, u16::from_ne_bytes([ip.ttl, ip.proto]));
            ip.check = apply(ip.check, ip_delta);
        })?;
    }
    p.ttl -= hops;
    let mut port_delta = Delta::new();
    port_delta.word(old_port, port);
    f.l4_csum(p, addr_delta, port_delta)
}
