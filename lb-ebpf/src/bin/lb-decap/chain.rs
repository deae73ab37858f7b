//! dsr's second chance on the target side (docs/datapath.md, "Second
//! chance"). A balancer host that has no state for a TCP packet, and whose
//! previous table gave the flow another target than the live one, sends it
//! wrapped twice: an outer header to this host, a second one to the
//! previous target, then the client's packet. When this host's TCP stack
//! has a socket for the connection (`bpf_skc_lookup_tcp`; a listener does
//! not count), both headers come off and the packet is passed to the stack;
//! otherwise the first header comes off and the rest, a plain dsr packet,
//! goes to the previous target (FIB lookup, TTL / hop limit less one,
//! redirect), whose own decapsulation takes it from there.
use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_F_CURRENT_NETNS, BPF_FIB_LKUP_RET_SUCCESS, BPF_TCP_LISTEN, bpf_fib_lookup as FibParams,
        bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2,
    },
    helpers::{bpf_fib_lookup, bpf_redirect, bpf_sk_release, bpf_skc_lookup_tcp},
    programs::XdpContext,
};
use lb_common::decap::DecapStat;
use lb_ebpf::{
    frame::{load, update},
    headers::*,
};

use crate::unwrap::{Header, Outcome, check_inner, strip};

const IPPROTO_TCP: u8 = 6;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Handles a chain: `outer` (to us) at `l3` wraps `next` (to the previous
/// target), which wraps the client's packet.
#[inline(always)]
pub fn handle(
    ctx: &XdpContext,
    eth: [u16; 7],
    vlan: Option<Vlan>,
    l3: usize,
    outer: &Header,
    next: &Header,
) -> Result<Outcome, DecapStat> {
    let client = l3 + outer.len + next.len;
    check_inner(ctx, client, next)?;
    let mut tuple = client_tuple(ctx, client, next.inner_v6)?;
    if next.local || has_connection(ctx, &mut tuple, next.inner_v6) {
        to_stack(ctx, eth, vlan, outer, next)?;
        return Ok(Outcome::pass(DecapStat::ChainLocal));
    }
    forward(ctx, eth, vlan, outer, next)
}

/// Takes both headers off and passes the client's packet to this host's
/// stack.
#[inline(always)]
fn to_stack(
    ctx: &XdpContext,
    eth: [u16; 7],
    vlan: Option<Vlan>,
    outer: &Header,
    next: &Header,
) -> Result<(), DecapStat> {
    let both = Header {
        len: outer.len + next.len,
        ..*next
    };
    strip(ctx, eth, vlan, &both)
}

/// The client's TCP 4-tuple as the socket lookup wants it (network order).
#[inline(always)]
fn client_tuple(ctx: &XdpContext, at: usize, v6: bool) -> Result<bpf_sock_tuple, DecapStat> {
    // SAFETY: all-zero is a valid tuple (a union of integer structs).
    let mut t: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    if v6 {
        let ip = load::<Ipv6>(ctx, at).ok_or(DecapStat::Malformed)?;
        // The balancer chains TCP only; no extension headers are walked.
        if ip.next_hdr != IPPROTO_TCP {
            return Err(DecapStat::Malformed);
        }
        let ports = load::<Ports>(ctx, at + IPV6_LEN).ok_or(DecapStat::Malformed)?;
        t.__bindgen_anon_1.ipv6 = bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 {
            saddr: ip.saddr,
            daddr: ip.daddr,
            sport: ports.source,
            dport: ports.dest,
        };
    } else {
        let ip = load::<Ipv4>(ctx, at).ok_or(DecapStat::Malformed)?;
        let ihl = (ip.vihl & 0x0f) as usize * 4;
        if ip.proto != IPPROTO_TCP || ip.frag_off & (IP_MF | IP_OFFSET) != 0 || ihl > 60 {
            return Err(DecapStat::Malformed);
        }
        let ports = load::<Ports>(ctx, at + ihl).ok_or(DecapStat::Malformed)?;
        t.__bindgen_anon_1.ipv4 = bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
            saddr: ip.saddr,
            daddr: ip.daddr,
            sport: ports.source,
            dport: ports.dest,
        };
    }
    Ok(t)
}

/// Whether this host's TCP stack has a socket for the connection: one in
/// any state but listening (a request socket during the handshake, an
/// established one, one in TIME_WAIT all answer for it).
#[inline(always)]
fn has_connection(ctx: &XdpContext, tuple: &mut bpf_sock_tuple, v6: bool) -> bool {
    let size = if v6 {
        core::mem::size_of::<[u32; 9]>()
    } else {
        core::mem::size_of::<[u32; 3]>()
    };
    // SAFETY: `tuple` is a valid tuple of at least `size` bytes; the
    // context pointer is this program's.
    let sk = unsafe {
        bpf_skc_lookup_tcp(
            ctx.as_ptr(),
            tuple,
            size as u32,
            BPF_F_CURRENT_NETNS as u64,
            0,
        )
    };
    if sk.is_null() {
        return false;
    }
    // SAFETY: a non-null socket the lookup returned, readable until it is
    // released; `state` is one of the fields a `sock_common` exposes.
    let state = unsafe { (*sk).state };
    // SAFETY: the reference the lookup took, released exactly once.
    unsafe { bpf_sk_release(sk as *mut _) };
    state != BPF_TCP_LISTEN
}

/// Takes the first header off and sends the rest to `next`'s destination.
#[inline(always)]
fn forward(
    ctx: &XdpContext,
    eth: [u16; 7],
    vlan: Option<Vlan>,
    outer: &Header,
    next: &Header,
) -> Result<Outcome, DecapStat> {
    if next.ttl <= 1 {
        return Ok(Outcome::drop(DecapStat::ChainUnrouted));
    }
    let Some(hop) = next_hop(ctx, next) else {
        // No route, no neighbour entry (the FIB lookup does not resolve
        // one: a previous target on this link that this host never spoke
        // to), or `lo` not forwarding: the chain cannot go on, and
        // dropping it would stall the connection for good. This host's
        // stack answers it as plain Maglev would have: a reset.
        to_stack(ctx, eth, vlan, outer, next)?;
        return Ok(Outcome::pass(DecapStat::ChainUnrouted));
    };
    strip(ctx, eth, vlan, outer)?;
    let written = update::<[u8; 12], _>(ctx, 0, |e| {
        e[..6].copy_from_slice(&hop.dmac);
        e[6..].copy_from_slice(&hop.smac);
    });
    let l3 = if vlan.is_some() {
        ETH_LEN + VLAN_LEN
    } else {
        ETH_LEN
    };
    let ttl_done = if next.v6 {
        update::<Ipv6, _>(ctx, l3, |ip| ip.hop_limit -= 1)
    } else {
        update::<Ipv4, _>(ctx, l3, |ip| {
            ip.ttl -= 1;
            ip.check = ttl_checksum(ip.check);
        })
    };
    if written.is_none() || ttl_done.is_none() {
        return Ok(Outcome::drop(DecapStat::Malformed));
    }
    // A redirect even back out of the ingress interface: on veth, XDP_TX
    // frames wait for the peer's next packet (see the balancer's fib.rs).
    // SAFETY: the helper has no preconditions.
    let action = unsafe { bpf_redirect(hop.ifindex, 0) } as u32;
    Ok(Outcome {
        stat: DecapStat::ChainForwarded,
        action,
    })
}

/// The IPv4 header checksum after the TTL went down by one (RFC 1624:
/// the TTL is the high byte of its 16-bit word).
#[inline(always)]
fn ttl_checksum(check: u16) -> u16 {
    let sum = u16::from_be(check) as u32 + 0x0100;
    ((sum + (sum >> 16)) as u16).to_be()
}

struct Hop {
    ifindex: u32,
    dmac: [u8; 6],
    smac: [u8; 6],
}

/// `lo`'s ifindex in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// The FIB's next hop toward `next`'s destination, for its length.
///
/// The lookup is made as if the packet came in on `lo`, not on the
/// interface it arrived on: the kernel answers FWD_DISABLED unless
/// forwarding is on for the device named in the parameters
/// (`bpf_ipv4_fib_lookup` checks `IN_DEV_FORWARD`, `bpf_ipv6_fib_lookup`
/// the device's `forwarding`), and a target should not forward what
/// arrives on its real interface. `lb target attach` turns forwarding on
/// for `lo` only, where nothing arrives from outside; with `lo` as the
/// input device the route is the one the host's own packets would take.
#[inline(always)]
fn next_hop(ctx: &XdpContext, next: &Header) -> Option<Hop> {
    // SAFETY: all-zero is a valid parameter block.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.ifindex = LOOPBACK_IFINDEX;
    p.__bindgen_anon_1.tot_len = next.total() as u16;
    if next.v6 {
        p.family = AF_INET6;
        p.__bindgen_anon_3.ipv6_src = next.src;
        p.__bindgen_anon_4.ipv6_dst = next.dst;
    } else {
        p.family = AF_INET;
        p.__bindgen_anon_3.ipv4_src = next.src[0];
        p.__bindgen_anon_4.ipv4_dst = next.dst[0];
    }
    // SAFETY: `p` is a valid, initialised parameter block of the size
    // passed; the context pointer is this program's.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            &mut p,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    (rc as u32 == BPF_FIB_LKUP_RET_SUCCESS).then_some(Hop {
        ifindex: p.ifindex,
        dmac: p.dmac,
        smac: p.smac,
    })
}
