//! The target-side decapsulation program (`lb_decap`): its map names, and
//! the reasons it counts. Its keys are [`crate::VipAddrKey`]s (an address
//! without port), in `DECAP_VIPS` for the VIPs and in `DECAP_LOCAL` for the
//! host's own addresses an outer header may name.

/// The program's symbol (and pin name).
pub const PROGRAM: &str = "lb_decap";

/// `VipAddrKey -> u32`: the VIPs whose encapsulated packets are unwrapped.
pub const VIPS: &str = "DECAP_VIPS";
/// `VipAddrKey -> u32`: this host's addresses (the outer destination must
/// be one of them).
pub const LOCAL: &str = "DECAP_LOCAL";
/// Per-CPU `u64` per [`DecapStat`].
pub const STATS: &str = "DECAP_STATS";
/// `u32 -> DecapSaved`: one entry, what `lb target attach` changed on the
/// host and what it was before (the program never reads it; a pinned map
/// is the one place a bpffs pin directory can keep it).
pub const SAVED: &str = "DECAP_SAVED";

/// Every map, in the order `lb target detach` removes their pins.
pub const ALL: [&str; 4] = [VIPS, LOCAL, STATS, SAVED];

/// `DECAP_VIPS` values: whether `lb target attach` put the VIP on `lo`
/// (and `detach` takes it off) or found it there (and leaves it).
pub mod vip_origin {
    pub const ADDED: u32 = 1;
    pub const FOUND: u32 = 2;
}

/// Sysctls whose earlier values `DecapSaved` keeps.
pub const SAVED_SYSCTLS: usize = 8;

/// `DecapSaved::magic` once the host's settings are saved (`_0002`: eight
/// sysctls, `lo`'s forwarding added; a block of an older `lb` is carried
/// over: [`SAVED_MAGIC_V1`]).
pub const SAVED_MAGIC: u32 = 0x1b7a_0002;

/// `DecapSaved::magic` of the block an older `lb` saved: six sysctls, no
/// `lo` forwarding, 44 bytes. `lb target` reads it once and rewrites it in
/// the current layout (a pinned map of the old value size must not be
/// reused by the loader: its values are too short for the new block).
pub const SAVED_MAGIC_V1: u32 = 0x1b7a_0001;
/// Sysctls in a [`SAVED_MAGIC_V1`] block: the first six of the current list.
pub const SAVED_V1_SYSCTLS: usize = 6;
/// Size of a [`SAVED_MAGIC_V1`] block.
pub const SAVED_V1_LEN: usize = 4 + 16 + 4 * SAVED_V1_SYSCTLS;

/// A saved value meaning "the host had no such sysctl" (IPv6's, on a host
/// booted with `ipv6.disable=1`): nothing to set, nothing to restore.
pub const SYSCTL_ABSENT: i32 = i32::MIN;

/// What the first `lb target attach` saved, for `detach` to restore.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DecapSaved {
    /// [`SAVED_MAGIC`] when the rest is set; 0 in a fresh map.
    pub magic: u32,
    /// The interface attached to, NUL-padded (IFNAMSIZ).
    pub interface: [u8; 16],
    /// The sysctls' values before the first attach, in the order of
    /// `lb target`'s list.
    pub sysctls: [i32; SAVED_SYSCTLS],
}

const _: () = assert!(core::mem::size_of::<DecapSaved>() == 52);

/// Capacity of `DECAP_VIPS` and of `DECAP_LOCAL`.
pub const MAX_ADDRS: u32 = 1024;

/// Index into `DECAP_STATS`: what the program did with a frame, by reason.
/// Every frame but a decapsulated, forwarded or `chain_unrouted` one passes
/// untouched (a `chain_unrouted` frame passes without its two headers, or
/// is dropped when its TTL expires).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapStat {
    /// Outer header removed, inner packet passed to the stack.
    Decapsulated = 0,
    /// Not IPv4-in-IPv4 nor IPv6-in-IPv6 (including non-IP frames).
    NotEncapsulated,
    /// Encapsulated, but the outer destination is not this host's.
    NotForUs,
    /// Encapsulated to us, but the inner destination is no configured VIP.
    InnerNotVip,
    /// Outer or inner header too short or inconsistent, or an outer IPv4
    /// fragment (the stack reassembles; there is no tunnel device to take
    /// it then, so it is dropped there).
    Malformed,
    /// Two or more VLAN tags.
    VlanStack,
    /// A second-chance chain (an outer header to us wrapping a second one to
    /// the previous target), and this host has a socket for the client's
    /// TCP connection: both headers removed, passed to the stack.
    ChainLocal,
    /// A chain and no socket here (none, or only a listener): the first
    /// header removed, the rest forwarded to the previous target.
    ChainForwarded,
    /// A chain and no socket here, but no route or neighbour entry for the
    /// previous target (or `lo` not forwarding): both headers removed and
    /// the client's packet passed to this host's stack, which resets it as
    /// plain Maglev would; or the second header's TTL / hop limit would
    /// expire: dropped.
    ChainUnrouted,
    /// Count of variants; not a stat. New stats go just above.
    _Count,
}

pub const DECAP_STAT_COUNT: u32 = DecapStat::_Count as u32;

impl DecapStat {
    pub const ALL: [DecapStat; DECAP_STAT_COUNT as usize] = [
        DecapStat::Decapsulated,
        DecapStat::NotEncapsulated,
        DecapStat::NotForUs,
        DecapStat::InnerNotVip,
        DecapStat::Malformed,
        DecapStat::VlanStack,
        DecapStat::ChainLocal,
        DecapStat::ChainForwarded,
        DecapStat::ChainUnrouted,
    ];

    /// snake_case name used by `lb target status`.
    pub const fn name(self) -> &'static str {
        match self {
            DecapStat::Decapsulated => "decapsulated",
            DecapStat::NotEncapsulated => "not_encapsulated",
            DecapStat::NotForUs => "not_for_us",
            DecapStat::InnerNotVip => "inner_not_vip",
            DecapStat::Malformed => "malformed",
            DecapStat::VlanStack => "vlan_stack",
            DecapStat::ChainLocal => "chain_local",
            DecapStat::ChainForwarded => "chain_forwarded",
            DecapStat::ChainUnrouted => "chain_unrouted",
            DecapStat::_Count => "count",
        }
    }
}
