//! The outer IPv4 (protocol 4) / IPv6 (next header 41) header that dsr
//! puts around a packet, built from the inner header it wraps. Shared by
//! the XDP dsr path (a client's packet) and `lb_probe_encap` (a health
//! probe), so a probe travels exactly as a client's packet does.
//!
//! The outer header copies the inner one's TOS / traffic class and (IPv4)
//! DF bit and id, so ECN, QoS and path-MTU behaviour are the inner
//! packet's; the flow label is the flow hash's. The TTL / hop limit is the
//! caller's choice (a forwarding host is a hop, the probe's own host is
//! not). Addresses come from lb_common::encap.
use lb_common::{
    Addr,
    encap::{FLOW_LABEL_MASK, IPPROTO_IPIP, IPPROTO_IPV6, OVERHEAD_V4},
};

use crate::{
    csum::finish,
    frame::{Frame, load},
    headers::{IPV6_LEN, Ipv4, Ipv6},
    parse::Packet,
};

/// IPv4 "don't fragment", network order.
const IP_DF: u16 = 0x4000u16.to_be();

/// What the outer header copies of the inner one.
pub struct Inner {
    /// IPv4: the TOS byte. IPv6: the version/class/label word.
    word: u32,
    /// The inner packet's length (host order).
    pub len: u16,
    id: u16,
    frag_off: u16,
    /// The inner TTL / hop limit.
    pub ttl: u8,
}

impl Inner {
    /// The inner IP header `p` describes; `None` if it is not in the frame
    /// or (IPv6) its length overflows.
    #[inline(always)]
    pub fn read(f: &impl Frame, p: &Packet) -> Option<Self> {
        if p.v6 {
            let ip = load::<Ipv6>(f, p.l3)?;
            let len = u16::from_be(ip.payload_len).checked_add(IPV6_LEN as u16)?;
            Some(Self {
                word: ip.vtc_flow,
                len,
                id: 0,
                frag_off: 0,
                ttl: ip.hop_limit,
            })
        } else {
            let ip = load::<Ipv4>(f, p.l3)?;
            Some(Self {
                word: ip.tos as u32,
                len: u16::from_be(ip.tot_len),
                id: ip.id,
                frag_off: ip.frag_off & IP_DF,
                ttl: ip.ttl,
            })
        }
    }

    /// The outer IPv4 header from `src` to `dst` (network order).
    #[inline(always)]
    pub fn outer_v4(&self, src: u32, dst: u32, ttl: u8) -> Ipv4 {
        let mut ip = Ipv4 {
            vihl: 0x45,
            tos: self.word as u8,
            tot_len: self.len.saturating_add(OVERHEAD_V4 as u16).to_be(),
            // The inner id: unique enough per outer (source, destination)
            // should a router have to fragment the outer packet.
            id: self.id,
            frag_off: self.frag_off,
            ttl,
            proto: IPPROTO_IPIP,
            check: 0,
            saddr: src,
            daddr: dst,
        };
        ip.check = ipv4_check(&ip);
        ip
    }

    /// The outer IPv6 header from `src` to `dst`, its flow label from the
    /// flow hash `h`.
    #[inline(always)]
    pub fn outer_v6(&self, src: &Addr, dst: &Addr, hop_limit: u8, h: u32) -> Ipv6 {
        // Version 6, the inner traffic class, a per-flow label.
        let class = u32::from_be(self.word) & 0x0ff0_0000;
        Ipv6 {
            vtc_flow: (0x6000_0000 | class | (h & FLOW_LABEL_MASK)).to_be(),
            payload_len: self.len.to_be(),
            next_hdr: IPPROTO_IPV6,
            hop_limit,
            saddr: *src,
            daddr: *dst,
        }
    }
}

/// The header checksum of a 20-byte IPv4 header whose `check` is 0.
#[inline(always)]
fn ipv4_check(ip: &Ipv4) -> u16 {
    // SAFETY: `Ipv4` is 20 bytes of integers without padding.
    let words: [u16; 10] = unsafe { core::mem::transmute(*ip) };
    let mut sum = 0u64;
    for w in words {
        sum += w as u64;
    }
    finish(sum)
}
