//! Health probes of dsr targets through the encapsulation (`lb_probe_encap`,
//! a tc egress program the daemon attaches to its probe device).
//!
//! A probe socket carries a mark (`SO_MARK`) naming its target; a policy
//! rule routes marked packets into the probe device, whose egress program
//! looks the mark up in [`TARGETS`] and wraps the packet in the same outer
//! header the XDP program puts on client packets (`crate::encap`), then
//! redirects it toward the target. Marks are [`MARK_BASE`] plus a slot
//! number under [`MARK_MASK`], so one rule covers them all.

/// The program's symbol.
pub const PROGRAM: &str = "lb_probe_encap";

/// `u32 mark -> VipAddrKey`: the target address each probe mark names.
pub const TARGETS: &str = "PROBE_TARGETS";
/// Per-CPU `u64` per [`ProbeStat`].
pub const STATS: &str = "PROBE_STATS";

/// Every map of the object.
pub const ALL: [&str; 2] = [TARGETS, STATS];

/// The bits every probe mark has (`"LH"`), under [`MARK_MASK`].
pub const MARK_BASE: u32 = 0x4c48_0000;
/// The bits of a mark that are ours: the rest is the slot.
pub const MARK_MASK: u32 = 0xffff_0000;
/// Distinct target addresses that can be probed this way at once (slot 0
/// is not used, so a bare [`MARK_BASE`] names nobody).
pub const MAX_PROBE_TARGETS: u32 = 0xffff;

/// The mark of slot `slot` (1..=[`MAX_PROBE_TARGETS`]).
pub const fn mark(slot: u16) -> u32 {
    MARK_BASE | slot as u32
}

/// Index into `PROBE_STATS`: what the program did with a packet.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeStat {
    /// Wrapped and redirected toward its target.
    Encapsulated = 0,
    /// No probe mark: passed untouched (the kernel's own packets on the
    /// device, e.g. IPv6 neighbour discovery).
    NotMarked,
    /// A probe mark that names no target (removed meanwhile): dropped, never
    /// sent unwrapped.
    UnknownMark,
    /// The packet's family is not the target's: dropped.
    WrongFamily,
    /// Not an IP packet the program can wrap (too short, fragment, the
    /// frame could not grow): dropped.
    Malformed,
    /// No route to the target, or the wrapped packet is larger than the way
    /// there allows: dropped.
    NoRoute,
    /// Count of variants; not a stat. New stats go just above.
    _Count,
}

pub const PROBE_STAT_COUNT: u32 = ProbeStat::_Count as u32;

impl ProbeStat {
    pub const ALL: [ProbeStat; PROBE_STAT_COUNT as usize] = [
        ProbeStat::Encapsulated,
        ProbeStat::NotMarked,
        ProbeStat::UnknownMark,
        ProbeStat::WrongFamily,
        ProbeStat::Malformed,
        ProbeStat::NoRoute,
    ];

    /// snake_case name (metrics label, `lb stats`).
    pub const fn name(self) -> &'static str {
        match self {
            ProbeStat::Encapsulated => "encapsulated",
            ProbeStat::NotMarked => "not_marked",
            ProbeStat::UnknownMark => "unknown_mark",
            ProbeStat::WrongFamily => "wrong_family",
            ProbeStat::Malformed => "malformed",
            ProbeStat::NoRoute => "no_route",
            ProbeStat::_Count => "count",
        }
    }
}
