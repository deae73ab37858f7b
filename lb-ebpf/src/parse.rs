//! Header parsing: Ethernet (one VLAN tag), IPv4 (options, fragments), IPv6
//! (a bounded walk over extension headers). Produces a `Packet` describing
//! where the layers are, or the verdict for a frame we do not handle.
use aya_ebpf::programs::XdpContext;
use lb_common::{Addr, Stat};

use crate::{Verdict, headers::*, ptr::ptr_at};

/// A parsed IP packet: offsets and the fields the balancer needs.
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

/// Parses up to the transport header (whose presence is not checked here).
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Packet, Verdict> {
    let eth = ptr_at::<[u16; 7]>(ctx, 0).ok_or(Verdict::pass(Stat::PassMalformed))?;
    let mut ether_type = unsafe { (*eth)[6] };
    let mut l3 = ETH_LEN;
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let vlan = ptr_at::<Vlan>(ctx, ETH_LEN).ok_or(Verdict::pass(Stat::PassMalformed))?;
        ether_type = unsafe { (*vlan).ether_type };
        if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
            return Err(Verdict::pass(Stat::PassVlanStack));
        }
        l3 += VLAN_LEN;
    }
    let len = (ctx.data_end() - ctx.data()) as u64;
    if ether_type == ETH_P_IP {
        ipv4(ctx, l3, len)
    } else if ether_type == ETH_P_IPV6 {
        ipv6(ctx, l3, len)
    } else {
        Err(Verdict::pass(Stat::PassNotIp))
    }
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, l3: usize, len: u64) -> Result<Packet, Verdict> {
    let ip = ptr_at::<Ipv4>(ctx, l3).ok_or(Verdict::pass(Stat::PassMalformed))?;
    let ip = unsafe { &*ip };
    let ihl = (ip.vihl & 0x0f) as usize * 4;
    let tot_len = u16::from_be(ip.tot_len) as u64;
    if ip.vihl >> 4 != 4 || ihl < IPV4_LEN || tot_len < ihl as u64 {
        return Err(Verdict::pass(Stat::PassMalformed));
    }
    Ok(Packet {
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
    })
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, l3: usize, len: u64) -> Result<Packet, Verdict> {
    let ip = ptr_at::<Ipv6>(ctx, l3).ok_or(Verdict::pass(Stat::PassMalformed))?;
    let ip = unsafe { &*ip };
    if (ip.vtc_flow & 0xf0) >> 4 != 6 {
        return Err(Verdict::pass(Stat::PassMalformed));
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
                let ext = ptr_at::<Ipv6Ext>(ctx, l4).ok_or(Verdict::pass(Stat::PassMalformed))?;
                let ext = unsafe { &*ext };
                next = ext.next_hdr;
                l4 += (ext.len as usize + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                let ext = ptr_at::<Ipv6Ext>(ctx, l4).ok_or(Verdict::pass(Stat::PassMalformed))?;
                next = unsafe { (*ext).next_hdr };
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
            return Err(Verdict::pass(Stat::PassIpv6Ext));
        }
        _ => {}
    }
    Ok(Packet {
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
    })
}
