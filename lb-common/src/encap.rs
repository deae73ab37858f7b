//! dsr forwarding's outer header: what a balancer puts around a client's
//! packet, shared by the XDP program (which writes it) and the tests and
//! tools that predict it.
//!
//! The outer destination is the target's address. The outer source is not
//! the balancer's address but one derived from the flow, as Katran does:
//! a target's NIC spreads received packets over its CPUs (RSS/RPS) by a
//! hash of the outer addresses only, so with one balancer address every
//! flow from it would land on one CPU. The address comes from
//! [`flow_hash`] (no per-host seed), so every balancer host of a VIP gives
//! a flow the same outer source. Nobody answers to it: targets reply to
//! the client directly, and `lb_decap` never looks at the outer source.
//!
//! - IPv4: `172.16.0.0/12` (RFC 1918), the hash's low 20 bits as the host
//!   part. Must not be routed back toward a balancer's uplink with strict
//!   reverse-path filtering on the way to targets.
//! - IPv6: `100::/64` (RFC 6666, the discard-only prefix), the hash as the
//!   last 32 bits; the outer flow label is the hash's low 20 bits.
use crate::{Addr, FlowKey, hash::flow_hash};

/// IPv4 in IPv4 (RFC 2003): the outer IPv4 header's protocol.
pub const IPPROTO_IPIP: u8 = 4;
/// IPv6 in IPv6 (RFC 2473): the outer IPv6 header's next header.
pub const IPPROTO_IPV6: u8 = 41;

/// Bytes the outer header adds: 20 (IPv4, no options) or 40 (IPv6).
pub const OVERHEAD_V4: usize = 20;
pub const OVERHEAD_V6: usize = 40;

/// Network part of the IPv4 outer sources, `172.16.0.0/12` (host order).
pub const SOURCE_V4_NET: u32 = 0xac10_0000;
/// Host bits of the IPv4 outer sources.
pub const SOURCE_V4_HOST_MASK: u32 = 0x000f_ffff;
/// First word of the IPv6 outer sources, `100::/64` (host order).
pub const SOURCE_V6_WORD0: u32 = 0x0100_0000;
/// Bits of the IPv6 outer flow label.
pub const FLOW_LABEL_MASK: u32 = 0x000f_ffff;

/// The outer source of `key`'s flow (network byte order, as `Addr`).
#[inline(always)]
pub fn outer_source(key: &FlowKey) -> Addr {
    source_of_hash(flow_hash(key), key.family)
}

/// The outer source of a flow whose [`flow_hash`] is `h`.
#[inline(always)]
pub fn source_of_hash(h: u32, family: u8) -> Addr {
    if family == crate::FAMILY_V4 {
        [(SOURCE_V4_NET | (h & SOURCE_V4_HOST_MASK)).to_be(), 0, 0, 0]
    } else {
        [SOURCE_V6_WORD0.to_be(), 0, 0, h.to_be()]
    }
}

/// The outer IPv6 flow label of `key`'s flow (host order, 20 bits).
#[inline(always)]
pub fn flow_label(key: &FlowKey) -> u32 {
    flow_hash(key) & FLOW_LABEL_MASK
}
