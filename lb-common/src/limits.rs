//! Compile-time limits. Map sizes that depend on the config (Maglev ring slots,
//! connection-table capacity) are set by the loader at load time; the values
//! here are the defaults compiled into the object and the hard ceilings.

/// Most VIPs (address, port, protocol) the data path can hold.
pub const MAX_VIPS: u32 = 1024;
/// Most targets across all target groups (ids index the `TARGETS` array).
pub const MAX_TARGETS: u32 = 16384;
/// Default Maglev table size: a prime, as Maglev requires.
pub const DEFAULT_RING_SIZE: u32 = 65537;
/// Each VIP owns two ring slots so a new table can be written beside the live
/// one and switched in with one map update (see ARCHITECTURE.md).
pub const RING_SLOTS_PER_VIP: u32 = 2;
/// Default capacity of the connection table (flows, both directions in one
/// entry). The table's set count is a power of two: a configured capacity
/// is rounded up to `FLOW_WAYS` times one.
pub const DEFAULT_FLOW_CAPACITY: u32 = 262_144;
/// Largest `daemon.flow_capacity`: 2^24 entries are 1.1 GiB of `FLOWS` and
/// `FLOW_META`, more than any single host should pin.
pub const MAX_FLOW_CAPACITY: u32 = 1 << 24;
/// Most IPv6 extension headers walked before giving up (counted as a pass).
pub const MAX_IPV6_EXT_HEADERS: u32 = 4;
/// `PORTS` array size: one entry per port number.
pub const PORT_FILTER_SIZE: u32 = 65536;
/// Idle time after a FIN before a flow's entry is considered gone (seconds).
pub const TCP_CLOSING_TIMEOUT_S: u32 = 10;
/// Longest a TCP flow may stay at `Syn`/`SynAck` (seconds): a handshake
/// takes round trips, not minutes; a stale half-open entry only holds a
/// slot that floods compete for.
pub const TCP_HANDSHAKE_TIMEOUT_S: u32 = 30;
/// Marker in a Maglev ring slot that has no target (empty target group).
pub const RING_EMPTY: u32 = u32::MAX;
/// Entries of the next-hop cache (destinations: targets and clients).
pub const NEXTHOP_CAPACITY: u32 = 65536;
/// How long a cached FIB result is trusted: route and neighbour changes reach
/// the data path within this time.
pub const NEXTHOP_TTL_NS: u64 = 1_000_000_000;
