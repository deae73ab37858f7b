//! What `lb_decap` does to one frame: find the outer header, check it and
//! the inner one, and strip the outer header (the Ethernet header and its
//! VLAN tag move up to the inner IP header, the EtherType names the inner
//! family). A second-chance chain (an inner header that wraps yet another
//! one, to another host) goes to `chain`.
use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{FAMILY_V4, FAMILY_V6, VipAddrKey, decap::DecapStat};
use lb_ebpf::{
    frame::{Frame, load, store},
    headers::*,
};

use crate::{chain, is_local, is_vip};

/// IPv4 in IP (RFC 2003).
const IPPROTO_IPIP: u8 = 4;
/// IPv6 in IP (RFC 2473).
const IPPROTO_IPV6: u8 = 41;

/// An encapsulating header (IPv4 protocol 4 / IPv6 next header 41).
#[derive(Clone, Copy)]
pub struct Header {
    /// Its length: 20-60 bytes for IPv4, 40 for IPv6.
    pub len: usize,
    /// Its own family.
    pub v6: bool,
    /// What it wraps (protocol 41) or IPv4 (protocol 4).
    pub inner_v6: bool,
    /// The bytes after it by its own length field; the inner packet must
    /// fit in them.
    pub payload: usize,
    /// Its TTL / hop limit.
    pub ttl: u8,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// Whether `dst` is one of this host's addresses.
    pub local: bool,
}

impl Header {
    /// The bytes it covers, itself included.
    #[inline(always)]
    pub fn total(&self) -> usize {
        self.len + self.payload
    }
}

/// What to do with the frame, and the counter that says why.
pub struct Outcome {
    pub stat: DecapStat,
    pub action: u32,
}

impl Outcome {
    #[inline(always)]
    pub const fn pass(stat: DecapStat) -> Self {
        Self {
            stat,
            action: xdp_action::XDP_PASS,
        }
    }

    #[inline(always)]
    pub const fn drop(stat: DecapStat) -> Self {
        Self {
            stat,
            action: xdp_action::XDP_DROP,
        }
    }
}

/// Unwraps the frame when it is ours; the outcome names what happened.
#[inline(always)]
pub fn handle(ctx: &XdpContext) -> Outcome {
    match unwrap(ctx) {
        Ok(o) => o,
        Err(why) => Outcome::pass(why),
    }
}

#[inline(always)]
fn unwrap(ctx: &XdpContext) -> Result<Outcome, DecapStat> {
    // Test runs and drivers never hand over less than an Ethernet header.
    let eth = load::<[u16; 7]>(ctx, 0).ok_or(DecapStat::Malformed)?;
    let mut ether_type = eth[6];
    let mut l3 = ETH_LEN;
    let mut vlan = None;
    if is_vlan(ether_type) {
        let tag = load::<Vlan>(ctx, ETH_LEN).ok_or(DecapStat::Malformed)?;
        if is_vlan(tag.ether_type) {
            return Err(DecapStat::VlanStack);
        }
        ether_type = tag.ether_type;
        l3 += VLAN_LEN;
        vlan = Some(tag);
    }
    let outer = if ether_type == ETH_P_IP {
        header_v4(ctx, l3, ctx.frame_len() - l3)?
    } else if ether_type == ETH_P_IPV6 {
        header_v6(ctx, l3, ctx.frame_len() - l3)?
    } else {
        return Err(DecapStat::NotEncapsulated);
    };
    if !outer.local {
        return Err(DecapStat::NotForUs);
    }
    let at = l3 + outer.len;
    if let Some(next) = chained(ctx, at, &outer)? {
        return chain::handle(ctx, eth, vlan, l3, &outer, &next);
    }
    check_inner(ctx, at, &outer)?;
    strip(ctx, eth, vlan, &outer)?;
    Ok(Outcome::pass(DecapStat::Decapsulated))
}

/// The second header of a chain: the header at `at` (inside `outer`)
/// encapsulates again and is addressed to no VIP here (an IPIP packet to a
/// VIP is the VIP's business, unwrapped as any other).
#[inline(always)]
fn chained(ctx: &XdpContext, at: usize, outer: &Header) -> Result<Option<Header>, DecapStat> {
    let (proto, key) = if outer.inner_v6 {
        let ip = load::<Ipv6>(ctx, at).ok_or(DecapStat::Malformed)?;
        (ip.next_hdr, v6_key(ip.daddr))
    } else {
        let ip = load::<Ipv4>(ctx, at).ok_or(DecapStat::Malformed)?;
        (ip.proto, v4_key(ip.daddr))
    };
    if wraps_v6(proto).is_none() || is_vip(&key) {
        return Ok(None);
    }
    let next = if outer.inner_v6 {
        header_v6(ctx, at, outer.payload)?
    } else {
        header_v4(ctx, at, outer.payload)?
    };
    Ok(Some(next))
}

#[inline(always)]
fn is_vlan(ether_type: u16) -> bool {
    ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD
}

/// What an outer protocol number wraps, or `None` for anything else.
#[inline(always)]
fn wraps_v6(proto: u8) -> Option<bool> {
    match proto {
        IPPROTO_IPIP => Some(false),
        IPPROTO_IPV6 => Some(true),
        _ => None,
    }
}

#[inline(always)]
fn v4_key(addr: u32) -> VipAddrKey {
    VipAddrKey {
        addr: [addr, 0, 0, 0],
        family: FAMILY_V4,
        _pad: [0; 3],
    }
}

#[inline(always)]
fn v6_key(addr: [u32; 4]) -> VipAddrKey {
    VipAddrKey {
        addr,
        family: FAMILY_V6,
        _pad: [0; 3],
    }
}

/// The IPv4 header at `l3`, which must encapsulate and fit in `room`
/// bytes.
#[inline(always)]
fn header_v4(ctx: &XdpContext, l3: usize, room: usize) -> Result<Header, DecapStat> {
    let ip = load::<Ipv4>(ctx, l3).ok_or(DecapStat::Malformed)?;
    let ihl = (ip.vihl & 0x0f) as usize * 4;
    if ip.vihl >> 4 != 4 || ihl < IPV4_LEN {
        return Err(DecapStat::Malformed);
    }
    let inner_v6 = wraps_v6(ip.proto).ok_or(DecapStat::NotEncapsulated)?;
    let tot_len = u16::from_be(ip.tot_len) as usize;
    if tot_len < ihl || tot_len > room {
        return Err(DecapStat::Malformed);
    }
    // A fragment of a tunnelled packet: only the stack can reassemble it.
    if ip.frag_off & (IP_MF | IP_OFFSET) != 0 {
        return Err(DecapStat::Malformed);
    }
    Ok(Header {
        len: ihl,
        v6: false,
        inner_v6,
        payload: tot_len - ihl,
        ttl: ip.ttl,
        src: [ip.saddr, 0, 0, 0],
        dst: [ip.daddr, 0, 0, 0],
        local: is_local(&v4_key(ip.daddr)),
    })
}

/// The IPv6 header at `l3`, which must encapsulate and fit in `room`
/// bytes. The inner packet must follow the fixed header directly:
/// extension headers (a tunnel encapsulation limit option, RFC 2473) are
/// not walked, such frames count as not encapsulated.
#[inline(always)]
fn header_v6(ctx: &XdpContext, l3: usize, room: usize) -> Result<Header, DecapStat> {
    let ip = load::<Ipv6>(ctx, l3).ok_or(DecapStat::Malformed)?;
    if (ip.vtc_flow & 0xf0) >> 4 != 6 {
        return Err(DecapStat::Malformed);
    }
    let inner_v6 = wraps_v6(ip.next_hdr).ok_or(DecapStat::NotEncapsulated)?;
    let payload = u16::from_be(ip.payload_len) as usize;
    if payload + IPV6_LEN > room {
        return Err(DecapStat::Malformed);
    }
    Ok(Header {
        len: IPV6_LEN,
        v6: true,
        inner_v6,
        payload,
        ttl: ip.hop_limit,
        src: ip.saddr,
        dst: ip.daddr,
        local: is_local(&v6_key(ip.daddr)),
    })
}

/// The inner header at `at` must be whole, of the family the outer one
/// names, no longer than the outer header says, and addressed to a VIP.
#[inline(always)]
pub fn check_inner(ctx: &XdpContext, at: usize, outer: &Header) -> Result<(), DecapStat> {
    let key = if outer.inner_v6 {
        let ip = load::<Ipv6>(ctx, at).ok_or(DecapStat::Malformed)?;
        let len = IPV6_LEN + u16::from_be(ip.payload_len) as usize;
        if (ip.vtc_flow & 0xf0) >> 4 != 6 || len > outer.payload {
            return Err(DecapStat::Malformed);
        }
        v6_key(ip.daddr)
    } else {
        let ip = load::<Ipv4>(ctx, at).ok_or(DecapStat::Malformed)?;
        let ihl = (ip.vihl & 0x0f) as usize * 4;
        let len = u16::from_be(ip.tot_len) as usize;
        if ip.vihl >> 4 != 4 || ihl < IPV4_LEN || len < ihl || len > outer.payload {
            return Err(DecapStat::Malformed);
        }
        v4_key(ip.daddr)
    };
    if !is_vip(&key) {
        return Err(DecapStat::InnerNotVip);
    }
    Ok(())
}

/// Removes the outer header: the frame starts `outer.len` bytes later, and
/// the Ethernet header (and tag) copied before is written there with the
/// inner family's EtherType.
#[inline(always)]
pub fn strip(
    ctx: &XdpContext,
    mut eth: [u16; 7],
    vlan: Option<Vlan>,
    outer: &Header,
) -> Result<(), DecapStat> {
    let ether_type = if outer.inner_v6 { ETH_P_IPV6 } else { ETH_P_IP };
    // SAFETY: the helper moves the frame's start within the frame the
    // kernel owns; on failure it changes nothing.
    let rc = unsafe { bpf_xdp_adjust_head(ctx.ctx, outer.len as i32) };
    if rc != 0 {
        return Err(DecapStat::Malformed);
    }
    match vlan {
        None => {
            eth[6] = ether_type;
            store(ctx, 0, eth).ok_or(DecapStat::Malformed)
        }
        Some(mut tag) => {
            tag.ether_type = ether_type;
            store(ctx, 0, eth).ok_or(DecapStat::Malformed)?;
            store(ctx, ETH_LEN, tag).ok_or(DecapStat::Malformed)
        }
    }
}
