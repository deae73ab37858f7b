//! Header parsing: Ethernet (one VLAN tag), IPv4 (options, fragments), IPv6
//! (a bounded walk over extension headers). Produces a `Packet` describing
//! where the layers are, or why the frame is not one we handle.
use lb_common::Addr;

use crate::{
    frame::{Frame, load},
    headers::*,
};

/// Why a frame was not parsed; each program counts these its own way.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Headers too short or inconsistent to tell what the frame carries.
    Malformed,
    /// Not IPv4/IPv6 (ARP, LLDP, ...).
    NotIp,
    /// Two or more VLAN tags.
    VlanStack,
    /// IPv6 extension header chain too long or of an unsupported kind.
    Ipv6Ext,
}

/// A parsed IP packet: offsets and the fields the balancer needs.
#[repr(C)]
pub struct Packet {
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the transport header.
    pub l4: usize,
    pub v6: bool,
    /// Transport protocol (after IPv6 extension headers).
    pub proto: u8,
    pub src: Addr,
    pub dst: Addr,
    /// TTL or hop limit.
    pub ttl: u8,
    /// A fragment (IPv4 MF/offset, or an IPv6 fragment header).
    pub frag: bool,
    /// The IP header claims more bytes than the frame holds: forwarding it
    /// would send bytes that are not there.
    pub truncated: bool,
    /// Frame length in bytes (for counters).
    pub len: u64,
}

impl Packet {
    #[inline(always)]
    pub fn family(&self) -> u8 {
        if self.v6 {
            lb_common::FAMILY_V6
        } else {
            lb_common::FAMILY_V4
        }
    }
}

/// Parses up to the transport header (whose presence is not checked here)
/// into `out` (which may be map memory: see the balancer's scratch).
#[inline(always)]
pub fn parse(f: &impl Frame, out: &mut Packet) -> Result<(), ParseError> {
    let eth = load::<[u16; 7]>(f, 0).ok_or(ParseError::Malformed)?;
    let mut ether_type = eth[6];
    let mut l3 = ETH_LEN;
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        ether_type = load::<Vlan>(f, ETH_LEN)
            .ok_or(ParseError::Malformed)?
            .ether_type;
        if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
            return Err(ParseError::VlanStack);
        }
        l3 += VLAN_LEN;
    }
    if ether_type == ETH_P_IP {
        parse_ip(f, l3, false, out)
    } else if ether_type == ETH_P_IPV6 {
        parse_ip(f, l3, true, out)
    } else {
        Err(ParseError::NotIp)
    }
}

/// Parses the IP packet at `l3` (after an outer header that was removed or
/// is skipped): the same checks as [`parse`] from the IP header on.
#[inline(always)]
pub fn parse_ip(f: &impl Frame, l3: usize, v6: bool, out: &mut Packet) -> Result<(), ParseError> {
    let len = f.packet_len() as u64;
    if v6 {
        ipv6(f, l3, len, out)
    } else {
        ipv4(f, l3, len, out)
    }
}

#[inline(always)]
fn ipv4(f: &impl Frame, l3: usize, len: u64, out: &mut Packet) -> Result<(), ParseError> {
    let ip = load::<Ipv4>(f, l3).ok_or(ParseError::Malformed)?;
    let ihl = (ip.vihl & 0x0f) as usize * 4;
    let tot_len = u16::from_be(ip.tot_len) as u64;
    if ip.vihl >> 4 != 4 || ihl < IPV4_LEN || tot_len < ihl as u64 {
        return Err(ParseError::Malformed);
    }
    *out = Packet {
        l3,
        l4: l3 + ihl,
        v6: false,
        proto: ip.proto,
        src: [ip.saddr, 0, 0, 0],
        dst: [ip.daddr, 0, 0, 0],
        ttl: ip.ttl,
        frag: ip.frag_off & (IP_MF | IP_OFFSET) != 0,
        truncated: tot_len > len - l3 as u64,
        len,
    };
    Ok(())
}

#[inline(always)]
fn ipv6(f: &impl Frame, l3: usize, len: u64, out: &mut Packet) -> Result<(), ParseError> {
    let ip = load::<Ipv6>(f, l3).ok_or(ParseError::Malformed)?;
    if (ip.vtc_flow & 0xf0) >> 4 != 6 {
        return Err(ParseError::Malformed);
    }
    let truncated = u16::from_be(ip.payload_len) as u64 > len - (l3 + IPV6_LEN) as u64;
    let mut next = ip.next_hdr;
    let mut l4 = l3 + IPV6_LEN;
    let mut frag = false;
    // Bounded walk: the verifier needs a fixed trip count, and so do we
    // (a long chain is a cheap way to make a balancer burn cycles).
    for _ in 0..lb_common::limits::MAX_IPV6_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let ext = load::<Ipv6Ext>(f, l4).ok_or(ParseError::Malformed)?;
                next = ext.next_hdr;
                l4 += (ext.len as usize + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                next = load::<Ipv6Ext>(f, l4)
                    .ok_or(ParseError::Malformed)?
                    .next_hdr;
                frag = true;
                l4 += 8;
            }
            _ => break,
        }
    }
    match next {
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT | IPPROTO_ESP
        | IPPROTO_AH | IPPROTO_NONE | IPPROTO_MOBILITY | IPPROTO_HIP | IPPROTO_SHIM6
        | IPPROTO_EXPERIMENT1 | IPPROTO_EXPERIMENT2 => {
            return Err(ParseError::Ipv6Ext);
        }
        _ => {}
    }
    *out = Packet {
        l3,
        l4,
        v6: true,
        proto: next,
        src: ip.saddr,
        dst: ip.daddr,
        ttl: ip.hop_limit,
        frag,
        truncated,
        len,
    };
    Ok(())
}
