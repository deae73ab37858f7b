//! What `lb_decap` does to one frame: find the outer header, check it and
//! the inner one, and strip the outer header (the Ethernet header and its
//! VLAN tag move up to the inner IP header, the EtherType names the inner
//! family).
use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{FAMILY_V4, FAMILY_V6, VipAddrKey, decap::DecapStat};
use lb_ebpf::{
    frame::{Frame, load, store},
    headers::*,
};

use crate::{is_local, is_vip};

/// IPv4 in IP (RFC 2003).
const IPPROTO_IPIP: u8 = 4;
/// IPv6 in IP (RFC 2473).
const IPPROTO_IPV6: u8 = 41;

/// An outer header to remove.
struct Outer {
    /// Its length: 20-60 bytes for IPv4, 40 for IPv6.
    len: usize,
    /// What it wraps (protocol 41) or IPv4 (protocol 4).
    inner_v6: bool,
    /// The bytes after it by its own length field; the inner packet must
    /// fit in them.
    payload: usize,
}

/// Unwraps the frame when it is ours; the verdict names what happened.
#[inline(always)]
pub fn handle(ctx: &XdpContext) -> DecapStat {
    match unwrap(ctx) {
        Ok(()) => DecapStat::Decapsulated,
        Err(why) => why,
    }
}

#[inline(always)]
fn unwrap(ctx: &XdpContext) -> Result<(), DecapStat> {
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
        outer_v4(ctx, l3)?
    } else if ether_type == ETH_P_IPV6 {
        outer_v6(ctx, l3)?
    } else {
        return Err(DecapStat::NotEncapsulated);
    };
    check_inner(ctx, l3 + outer.len, &outer)?;
    strip(ctx, eth, vlan, &outer)
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

#[inline(always)]
fn outer_v4(ctx: &XdpContext, l3: usize) -> Result<Outer, DecapStat> {
    let ip = load::<Ipv4>(ctx, l3).ok_or(DecapStat::Malformed)?;
    let ihl = (ip.vihl & 0x0f) as usize * 4;
    if ip.vihl >> 4 != 4 || ihl < IPV4_LEN {
        return Err(DecapStat::Malformed);
    }
    let inner_v6 = wraps_v6(ip.proto).ok_or(DecapStat::NotEncapsulated)?;
    let tot_len = u16::from_be(ip.tot_len) as usize;
    // `load` proved the frame holds l3 + 20 bytes.
    if tot_len < ihl || tot_len > ctx.frame_len() - l3 {
        return Err(DecapStat::Malformed);
    }
    // A fragment of a tunnelled packet: only the stack can reassemble it.
    if ip.frag_off & (IP_MF | IP_OFFSET) != 0 {
        return Err(DecapStat::Malformed);
    }
    if !is_local(&v4_key(ip.daddr)) {
        return Err(DecapStat::NotForUs);
    }
    Ok(Outer {
        len: ihl,
        inner_v6,
        payload: tot_len - ihl,
    })
}

/// The inner packet must follow the fixed header directly: extension
/// headers (a tunnel encapsulation limit option, RFC 2473) are not walked,
/// such frames count as not encapsulated.
#[inline(always)]
fn outer_v6(ctx: &XdpContext, l3: usize) -> Result<Outer, DecapStat> {
    let ip = load::<Ipv6>(ctx, l3).ok_or(DecapStat::Malformed)?;
    if (ip.vtc_flow & 0xf0) >> 4 != 6 {
        return Err(DecapStat::Malformed);
    }
    let inner_v6 = wraps_v6(ip.next_hdr).ok_or(DecapStat::NotEncapsulated)?;
    let payload = u16::from_be(ip.payload_len) as usize;
    // `load` proved the frame holds l3 + 40 bytes.
    if payload > ctx.frame_len() - l3 - IPV6_LEN {
        return Err(DecapStat::Malformed);
    }
    if !is_local(&v6_key(ip.daddr)) {
        return Err(DecapStat::NotForUs);
    }
    Ok(Outer {
        len: IPV6_LEN,
        inner_v6,
        payload,
    })
}

/// The inner header at `at` must be whole, of the family the outer one
/// names, no longer than the outer header says, and addressed to a VIP.
#[inline(always)]
fn check_inner(ctx: &XdpContext, at: usize, outer: &Outer) -> Result<(), DecapStat> {
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
fn strip(
    ctx: &XdpContext,
    mut eth: [u16; 7],
    vlan: Option<Vlan>,
    outer: &Outer,
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
