//! Connection tracking entries.
use crate::Addr;

/// Key of `FLOWS`: the client's packet as received (client -> VIP).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: Addr,
    pub dst: Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

impl FlowKey {
    /// The same flow seen from the other end (addresses and ports swapped).
    #[inline(always)]
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            family: self.family,
            _pad: [0; 2],
        }
    }
}

/// Value of `FLOWS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValue {
    pub target_id: u32,
    /// `Target::generation` when the flow was pinned.
    pub target_gen: u32,
    /// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE) of the last packet
    /// in either direction.
    pub last_seen_ns: u64,
    pub vip_id: u32,
    /// `flow_flags::*`.
    pub flags: u32,
    /// The VIP's idle timeout when the flow began (seconds). Kept here so
    /// packets of an established flow need no `VIPS` lookup.
    pub idle_timeout_s: u32,
    pub _pad: u32,
}

pub mod flow_flags {
    /// A FIN was seen: the flow expires after `TCP_CLOSING_TIMEOUT_S`.
    pub const CLOSING: u32 = 1;
}

/// Key of `NAT`: a reply as the target sends it (target -> client).
pub type NatKey = FlowKey;

/// Value of `NAT`: what to put back as the source.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NatValue {
    pub vip_addr: Addr,
    /// Network byte order.
    pub vip_port: u16,
    pub _pad: u16,
    pub vip_id: u32,
    pub target_id: u32,
    pub _pad2: u32,
    /// When a reply last refreshed the client flow's `last_seen_ns`
    /// (CLOCK_MONOTONIC_COARSE). Replies refresh it at most once a second,
    /// so most of them cost no `FLOWS` lookup.
    pub refreshed_ns: u64,
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<FlowValue>() == 32);
const _: () = assert!(core::mem::size_of::<NatValue>() == 40);
