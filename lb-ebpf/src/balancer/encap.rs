//! dsr forwarding: the client's packet goes to its target inside an outer
//! IPv4 (protocol 4) or IPv6 (next header 41) header, untouched; the
//! target (`lb_decap`, or `tunl0` / `ip6tnl0`) takes the outer header off
//! and answers the client directly. Addresses of the outer header are in
//! lb_common::encap.
//!
//! Frame surgery (`bpf_xdp_adjust_head` grows the frame at the front):
//!
//! ```text
//! before: [eth][ip][l4 ...]
//! after:  [eth][outer ip][ip][l4 ...]
//! ```
//! The outer header (lb_ebpf::outer) copies the inner one's TOS / traffic
//! class and (IPv4) DF bit, so ECN, QoS and path-MTU behaviour are the
//! client's; its TTL / hop limit is the inner one less one (this host is a
//! hop), while the inner packet keeps the client's.
use lb_common::{
    Addr, FlowKey,
    encap::{IPPROTO_IPIP, IPPROTO_IPV6, OVERHEAD_V4, OVERHEAD_V6, source_of_hash},
    hash::flow_hash,
};
use lb_ebpf::{
    frame::{load, store},
    outer::Inner,
    parse::Packet,
};

use super::hook::Hook;

/// Largest Ethernet header (one VLAN tag): the bytes moved to the front.
const MAX_L2: usize = 18;

/// [`MAX_L2`] bytes as 16-bit words: the header starts 2-byte aligned
/// (frame.rs), so LLVM moves it in nine loads and stores, not eighteen.
type L2 = [u16; MAX_L2 / 2];

/// Bytes the outer header adds to a packet of this family.
#[inline(always)]
pub fn overhead(v6: bool) -> usize {
    if v6 { OVERHEAD_V6 } else { OVERHEAD_V4 }
}

/// [`wrap`] for the flow of `key`, hashed here: a chained packet (no
/// entry) and an ICMP error quoting a flow, both rare, and both on the
/// longest call chains, where every stack slot counts.
#[inline(always)]
pub fn wrap_key(ctx: &impl Hook, p: &mut Packet, key: &FlowKey, target: &Addr) -> Option<()> {
    wrap(ctx, p, flow_hash(key), key.family, target)
}

/// Wraps the IP packet `p` describes in an outer header to `target`, from
/// the outer source of the `family` flow whose
/// [`lb_common::hash::flow_hash`] is `h` (a tracked flow's entry holds it:
/// `FlowEntry::outer_hash`); the caller's `family` rather than `p.v6`,
/// which, read here, grew the deepest call chain's frames past the
/// verifier's 512 bytes. Afterwards `p` describes the outer packet:
/// `src`, `dst`, `proto` and `ttl` are the outer header's, `l3` is where it
/// starts and `l4` still points at the inner transport header (so
/// [`unwrap`] can put everything back). `None` if a header is not where
/// `p` says (the caller checked it, so this is defensive) or the frame
/// cannot grow; the frame may then be half-built and must be dropped.
#[inline(always)]
pub fn wrap(ctx: &impl Hook, p: &mut Packet, h: u32, family: u8, target: &Addr) -> Option<()> {
    if p.l3 > MAX_L2 {
        return None;
    }
    let outer = source_of_hash(h, family);
    let extra = overhead(p.v6);
    // Read the inner header before the frame moves.
    let inner = Inner::read(ctx, p)?;
    if !ctx.adjust_head(-(extra as i32)) {
        return None;
    }
    // The Ethernet header (and tag) back to the front of the frame; the
    // bytes it drags beyond `l3` are overwritten by the outer header.
    store(ctx, 0, load::<L2>(ctx, extra)?)?;
    let ttl = p.ttl - 1;
    if p.v6 {
        store(ctx, p.l3, inner.outer_v6(&outer, target, ttl, h))?;
    } else {
        store(ctx, p.l3, inner.outer_v4(outer[0], target[0], ttl))?;
    }
    p.src = outer;
    p.dst = *target;
    p.proto = if p.v6 { IPPROTO_IPV6 } else { IPPROTO_IPIP };
    p.ttl = ttl;
    p.l4 += extra;
    Some(())
}

/// dsr's second chance: the client's packet wrapped for `previous`, and
/// that wrapped again for `target`. `lb_decap` on `target` passes the
/// client's packet to its stack when it has a socket for the connection,
/// and otherwise takes the first header off and forwards the rest to
/// `previous` (GLB's forwarding chain, in plain IPIP / IP6IP6):
///
/// ```text
/// after: [eth][ip to target][ip to previous][client's ip][l4 ...]
/// ```
/// Both outer headers are what [`wrap`] makes of the client's packet (the
/// same source, TTL, TOS / class, DF, id, label; each its own length):
/// `target` decrements the second one's TTL when it forwards. As [`wrap`],
/// `None` leaves a frame to drop.
#[inline(always)]
pub fn wrap_chain(
    ctx: &impl Hook,
    p: &mut Packet,
    key: &FlowKey,
    target: &Addr,
    previous: &Addr,
) -> Option<()> {
    // Hashed once for each header rather than kept: kept, the hash takes
    // `chain` a stack slot, and its frame is on the longest call chain
    // (the 512 bytes of stack).
    wrap_key(ctx, p, key, previous)?;
    // The first header copies the second one, and takes its TTL as the
    // client's less one again.
    p.ttl += 1;
    wrap_key(ctx, p, key, target)
}

/// Takes the `extra` bytes of outer header(s) [`wrap`] or [`wrap_chain`]
/// put on off again, and makes `p` describe the client's packet of `key`
/// once more (a packet too big once wrapped is answered about the packet
/// the client sent).
#[inline(always)]
pub fn unwrap(ctx: &impl Hook, p: &mut Packet, key: &FlowKey, extra: usize) -> Option<()> {
    let eth = load::<L2>(ctx, 0)?;
    // The frame shrinks by what `wrap` added.
    if !ctx.adjust_head(extra as i32) {
        return None;
    }
    // Restores the tag (if any) and the inner header's first bytes as they
    // were, which the outer header had overwritten in the moved copy only.
    store(ctx, 0, eth_head(ctx, &eth, p.l3)?)?;
    p.src = key.src;
    p.dst = key.dst;
    p.proto = key.proto;
    p.ttl += 1;
    p.l4 -= extra;
    Some(())
}

/// The first [`MAX_L2`] bytes of the unwrapped frame: the Ethernet header
/// of `eth` (`l3` bytes, tag included) followed by the inner header's
/// bytes that are already in place.
#[inline(always)]
fn eth_head(ctx: &impl Hook, eth: &L2, l3: usize) -> Option<L2> {
    let mut head = load::<L2>(ctx, 0)?;
    // Addresses and type (or tag protocol): words 0-6; the tag's TCI and
    // the inner type: words 7-8.
    head[..7].copy_from_slice(&eth[..7]);
    if l3 == MAX_L2 {
        head[7..].copy_from_slice(&eth[7..]);
    }
    Some(head)
}
