//! Next-hop cache entries: `bpf_fib_lookup` results per destination.
use crate::Addr;

/// Key of `NEXTHOPS`: where a packet goes, and where it came in (the FIB
/// lookup depends on the ingress interface).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct NextHopKey {
    pub dst: Addr,
    pub ingress_ifindex: u32,
    pub family: u8,
    pub _pad: [u8; 3],
}

/// A successful FIB lookup, valid until `expires_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NextHop {
    pub ifindex: u32,
    /// Largest IP packet (bytes) that passed the lookup's MTU check; a larger
    /// one takes the full lookup again, so MTU errors stay exact.
    pub max_len: u16,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub _pad: [u8; 2],
    /// CLOCK_MONOTONIC_COARSE deadline.
    pub expires_ns: u64,
}

impl NextHop {
    /// The Ethernet header's destination and source addresses as its first
    /// six 16-bit words (the bytes in order): the data path writes them as
    /// six stores rather than twelve.
    #[inline(always)]
    pub fn macs(&self) -> [u16; 6] {
        let (d, s) = (&self.dmac, &self.smac);
        [
            u16::from_ne_bytes([d[0], d[1]]),
            u16::from_ne_bytes([d[2], d[3]]),
            u16::from_ne_bytes([d[4], d[5]]),
            u16::from_ne_bytes([s[0], s[1]]),
            u16::from_ne_bytes([s[2], s[3]]),
            u16::from_ne_bytes([s[4], s[5]]),
        ]
    }
}

const _: () = assert!(core::mem::size_of::<NextHopKey>() == 24);
const _: () = assert!(core::mem::size_of::<NextHop>() == 32);

/// Per-CPU next-hop cache of one target (`TARGET_HOPS[target id]`): an array
/// slot is found without hashing, and being per CPU it is written without
/// races. Valid only for the same destination and ingress interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TargetHop {
    pub dst: Addr,
    pub ingress_ifindex: u32,
    pub _pad: u32,
    pub hop: NextHop,
}

const _: () = assert!(core::mem::size_of::<TargetHop>() == 56);

/// Per-CPU cache of one nat target's reverse path
/// (`REPLY_ROUTES[target id]`): the interface the route to `target` leaves
/// by, which packets from the target's side must come in by. Valid until
/// `expires_ns`, for that address only (an id handed to another target
/// misses).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReplyRoute {
    pub target: Addr,
    /// Egress interface of the route to `target`; 0 when there is none (no
    /// route, or an address of this host).
    pub via_ifindex: u32,
    pub _pad: u32,
    pub expires_ns: u64,
}

const _: () = assert!(core::mem::size_of::<ReplyRoute>() == 32);
