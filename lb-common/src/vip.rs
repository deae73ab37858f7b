//! VIP keys and metadata.
use crate::Addr;

/// A service: destination address, port and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipKey {
    pub addr: Addr,
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

/// Key of `VIP_ADDRS`: a VIP address without port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipAddrKey {
    pub addr: Addr,
    pub family: u8,
    pub _pad: [u8; 3],
}

/// What the data path needs to balance a VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipMeta {
    /// Index into `VIP_STATS`; stable for the VIP's life.
    pub vip_id: u32,
    /// Which Maglev ring slot is live. The daemon writes a new table into the
    /// VIP's other slot, then updates this entry: the switch is atomic.
    pub ring_slot: u32,
    /// Maglev table size (prime), the modulus of the flow hash.
    pub ring_size: u32,
    /// `vip_flags::*`.
    pub flags: u32,
    /// Idle timeout of this VIP's flows, seconds.
    pub idle_timeout_s: u32,
    /// Bumped on every table change; informational (shown by `lb stats`).
    pub generation: u32,
}

pub mod vip_flags {
    /// Hash the source address only (`stickiness = "source_ip"`).
    pub const STICKY_SOURCE_IP: u32 = 1;
    /// `forwarding = "dsr"`: packets are encapsulated to the target (see
    /// `crate::encap`), not translated; no reply passes this host.
    pub const DSR: u32 = 2;
    /// dsr TCP with `second_chance` on: a client packet with no
    /// connection-table entry whose target in the previous table differs
    /// from the live one goes to both, chained (see `crate::encap`).
    pub const SECOND_CHANCE: u32 = 4;
    /// Set by the daemon, never by config: the VIP's other ring slot holds
    /// the table that was live before the last switch, of the same size.
    /// Cleared while that slot is rewritten, and for a VIP whose table never
    /// switched (or switched to another size).
    pub const PREVIOUS_RING: u32 = 8;
}

const _: () = assert!(core::mem::size_of::<VipKey>() == 20);
const _: () = assert!(core::mem::size_of::<VipAddrKey>() == 20);
const _: () = assert!(core::mem::size_of::<VipMeta>() == 24);
