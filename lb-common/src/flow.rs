//! The connection table: one 64-byte entry per flow, both directions.
//!
//! `FLOWS` is an array the program manages itself as a set-associative hash
//! table (see `conntrack` in lb-ebpf and ARCHITECTURE.md): every flow has two
//! candidate sets of [`FLOW_WAYS`] entries, chosen by a keyed hash of its
//! [`FlowKey`], and goes to their [`spill`] sets when both are full. The
//! entry is found from either direction: client packets build the key
//! from their own header, target replies (nat mode) from the
//! target's `REPLIES` entry, which names the VIPs the target serves. So a
//! flow's two directions are one entry and can never come apart.
//!
//! Entries that have not been confirmed (the handshake or the first reply
//! has not been seen: a flood's spoofed packets never get further) can be
//! displaced by newer ones; confirmed ones never are, while they live.
use crate::{
    Addr,
    limits::{TCP_CLOSING_TIMEOUT_S, TCP_HANDSHAKE_TIMEOUT_S},
};

/// Entries per set; each flow has two candidate sets (and their
/// [`spill`] sets when both are full).
pub const FLOW_WAYS: u32 = 4;

/// The slot at the same way of the set whose `FLOW_META` record shares a
/// cache line with that of the set holding `slot` (set index XOR 1).
///
/// A flow whose two candidate sets hold no free or expired slot goes to a
/// free one of their spill sets before it may displace anything. With two
/// choices alone, sets overflow long before the table is full: in a
/// simulation of the placement rule over 65,536 sets, 6 of 131,072 flows
/// found both sets full at half load, 0.12 % at five eighths, 0.88 % at
/// three quarters, 3.5 % at seven eighths; with the spill sets, none up
/// to five eighths, 0.064 % at three quarters, 1.0 % at seven eighths.
/// They cost a lookup no cache miss: their tags are in the lines the
/// candidate sets' tags were loaded with, and they are read only when the
/// flow is in neither candidate set (a new flow, or one that spilled).
#[inline(always)]
pub const fn spill(slot: u32) -> u32 {
    slot ^ FLOW_WAYS
}

/// One value of `FLOW_META`: what the program keeps of each entry of one
/// `FLOWS` set beside the entries, written with them, so that neither a
/// lookup nor a new flow's choice of slot reads entries it does not use.
///
/// - `tags`: the tag ([`crate::hash::entry_tag`] of the key's table hash)
///   of each way. A lookup reads them (one 8-byte load) and compares keys
///   only in the entries whose tag matches: finding a flow costs its entry's
///   cache line; a miss (a new flow) costs no entry at all. Every entry the
///   program publishes has its tag written first, so a key whose tag is
///   in no way of its sets and their [`spill`] sets has no entry. (The
///   loader refuses a pinned `FLOWS` without this map beside it: its
///   entries would have no tags.)
/// - `states` and `deadlines`: each way's state and the tick after which
///   it expires (`last_seen` + [`FlowEntry::lifetime`]), written with a
///   new entry and brought up to date by the flow's client packets. A new
///   flow chooses its slot from these (two records, one per candidate
///   set, instead of eight entries; the two of their spill sets, in the
///   same cache lines, when both are full), then checks the chosen entry
///   itself before it writes there: these fields are hints (a target's packet
///   and the daemon's purges change entries without rewriting them; two
///   CPUs may race), and a hint the entry contradicts sends the new flow to a
///   survey of the entries themselves, which rewrites the hints. So stale
///   hints cost time, never a flow.
///
/// 32 bytes, aligned: two sets' records share a cache line and none
/// straddles two (the array is memory-mappable, so it starts on a page).
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SetMeta {
    pub tags: [u16; FLOW_WAYS as usize],
    /// `FlowState as u8` of each way.
    pub states: [u8; FLOW_WAYS as usize],
    pub _pad: u32,
    /// Ticks: each way's entry holds no flow once `age(now, deadline) > 0`.
    pub deadlines: [u32; FLOW_WAYS as usize],
}

/// A flow's identity: the client's packet as received (client -> VIP).
#[repr(C, align(8))]
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

/// Where a flow stands. Stored as `u8` in [`FlowEntry::state`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    /// The slot holds no flow.
    Free = 0,
    /// A TCP SYN was seen, nothing more.
    Syn = 1,
    /// nat: the target answered the SYN; `aux` holds the acknowledgement
    /// number that completes the handshake.
    SynAck = 2,
    /// First seen without a SYN (UDP, or TCP picked up mid-stream).
    New = 3,
    /// nat: the target answered a `New` flow.
    Replied = 4,
    /// Confirmed: never displaced while it lives.
    Established = 5,
}

impl FlowState {
    pub const fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Syn,
            2 => Self::SynAck,
            3 => Self::New,
            4 => Self::Replied,
            5 => Self::Established,
            _ => Self::Free,
        }
    }

    /// Not confirmed yet: may be displaced by a newer flow.
    pub const fn is_embryonic(self) -> bool {
        matches!(self, Self::Syn | Self::SynAck | Self::New | Self::Replied)
    }

    /// snake_case name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Syn => "syn",
            Self::SynAck => "syn_ack",
            Self::New => "new",
            Self::Replied => "replied",
            Self::Established => "established",
        }
    }
}

/// One slot of `FLOWS`: a cache line (the array is memory-mappable, so its
/// entries start on a page boundary and each fills exactly one line).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowEntry {
    pub key: FlowKey,
    /// Index into `TARGETS`.
    pub target_id: u16,
    /// Low 16 bits of `Target::generation` when the flow was pinned: an id
    /// handed to another target no longer matches.
    pub target_gen: u16,
    /// Index into the per-VIP counters; the VIP the flow belongs to.
    pub vip_id: u16,
    /// The VIP's idle timeout when the flow began (seconds), so packets of
    /// an established flow need no `VIPS` lookup.
    pub idle_timeout_s: u16,
    /// Clock ticks ([`ticks`]) of the last packet either way; refreshed at
    /// most once per [`REFRESH_TICKS`] so that busy flows do not write the
    /// line on every packet.
    pub last_seen: u32,
    /// `FlowState as u8`.
    pub state: u8,
    /// `entry_flags::*`.
    pub flags: u8,
    pub _pad: u16,
    /// By the flow's mode (`entry_flags::DSR`):
    /// - nat: in `SynAck`, the client's ACK number that completes the
    ///   handshake (0 before: written when the target's SYN-ACK passes);
    /// - dsr: the key's [`crate::hash::flow_hash`], which the outer
    ///   header's source is made of (crate::encap), so that a tracked
    ///   flow's packets are not hashed again; written when the flow is
    ///   pinned. An entry of an older data path holds 0 there, and 0
    ///   means "hash the key".
    pub aux: u32,
    /// [`crate::hash::entry_check`] of the key's hash and the fields that
    /// say where the flow goes. Two CPUs filling one free slot at once can
    /// leave one flow's key beside another's target; such a slot fails the
    /// check and is treated as free.
    pub check: u32,
}

impl FlowEntry {
    /// A dsr flow's [`crate::hash::flow_hash`]: the one stored in `aux`, or
    /// the key's own when `aux` is 0 (the field's docs).
    #[inline(always)]
    pub fn outer_hash(&self) -> u32 {
        if self.aux != 0 {
            self.aux
        } else {
            crate::hash::flow_hash(&self.key)
        }
    }

    pub const fn state(&self) -> FlowState {
        FlowState::from_u8(self.state)
    }

    /// The connection is ending: FINs seen both ways (dsr: the client's,
    /// the only one this host sees), or a RST either way.
    #[inline(always)]
    pub const fn closing(&self) -> bool {
        closing(self.flags)
    }

    /// How long the entry lives without packets, in ticks: see
    /// [`lifetime`].
    #[inline(always)]
    pub const fn lifetime(&self) -> u32 {
        lifetime(self.state, self.flags, self.idle_timeout_s)
    }

    /// The tick after which the entry holds no flow unless a packet
    /// refreshes it ([`SetMeta::deadlines`]).
    #[inline(always)]
    pub const fn deadline(&self) -> u32 {
        self.last_seen.wrapping_add(self.lifetime())
    }

    /// Holds no flow at `now` (ticks): free, or idle past its lifetime.
    #[inline(always)]
    pub const fn expired(&self, now: u32) -> bool {
        self.state == FlowState::Free as u8 || age(now, self.last_seen) > self.lifetime() as i32
    }
}

/// An entry with `flags` is closing: see [`FlowEntry::closing`].
#[inline(always)]
pub const fn closing(flags: u8) -> bool {
    flags & entry_flags::RST != 0
        || (flags & entry_flags::FIN != 0
            && flags & (entry_flags::TARGET_FIN | entry_flags::DSR) != 0)
}

/// How long an entry in `state` with `flags` and the VIP's idle timeout
/// lives without packets, in ticks: the closing timeout once it is
/// [`closing`](FlowEntry::closing), or after any FIN before it was
/// confirmed; at most the handshake timeout before a TCP handshake
/// completed; else the VIP's idle timeout (also after one side's FIN: the
/// other side may go on sending, or be silent for long, in a half-closed
/// connection). A free function so a new entry's expiry is known before
/// the entry is written.
#[inline(always)]
pub const fn lifetime(state: u8, flags: u8, idle_timeout_s: u16) -> u32 {
    let fin = flags & (entry_flags::FIN | entry_flags::TARGET_FIN) != 0;
    let seconds = if closing(flags) || (fin && state != FlowState::Established as u8) {
        TCP_CLOSING_TIMEOUT_S
    } else if (state == FlowState::Syn as u8 || state == FlowState::SynAck as u8)
        && TCP_HANDSHAKE_TIMEOUT_S < idle_timeout_s as u32
    {
        TCP_HANDSHAKE_TIMEOUT_S
    } else {
        idle_timeout_s as u32
    };
    timeout_ticks(seconds)
}

/// Ticks from `last_seen` to `now`, signed: another CPU may have stamped the
/// entry after this packet read its clock, and an unsigned difference would
/// wrap to about 2^32, an entry idle for ages. Lifetimes stay far below
/// 2^31 ticks (25 days).
#[inline(always)]
pub const fn age(now: u32, last_seen: u32) -> i32 {
    now.wrapping_sub(last_seen) as i32
}

pub mod entry_flags {
    /// Forwarded by encapsulation (dsr): no replies pass this host.
    pub const DSR: u8 = 1;
    /// The client sent a FIN. Flags rather than states, so a flow that
    /// never confirmed stays displaceable; see [`FlowEntry::closing`] and
    /// [`FlowEntry::lifetime`] for what they change.
    pub const FIN: u8 = 2;
    /// The target sent a FIN (nat).
    pub const TARGET_FIN: u8 = 4;
    /// A RST was seen on a confirmed flow. A RST may be spoofed, and only
    /// the endpoints can judge its sequence number (RFC 5961), so it does
    /// not free a confirmed entry: the entry is closing and lives
    /// `TCP_CLOSING_TIMEOUT_S` after its last packet.
    pub const RST: u8 = 8;
}

/// `SynAck` -> `Established`: the client's ACK number may lie this far at
/// or after the one that acknowledges the SYN-ACK (which a blind sender
/// would have to guess: odds of 2^-16 a packet). Its first ACK may be lost
/// or overtaken by a data segment that already acknowledges the target's
/// first data (TCP Fast Open data in the SYN-ACK, or an initial window of
/// data the target sends before the ACK arrives): 64 KiB covers a full
/// initial window of 44 segments of 1460 bytes.
pub const SYN_ACK_WINDOW: u32 = 0xffff;

/// One clock tick is 2^20 ns (about 1.05 ms) of CLOCK_MONOTONIC_COARSE.
pub const TICK_SHIFT: u32 = 20;

/// `last_seen` is rewritten only when it is at least this old (~1.07 s).
pub const REFRESH_TICKS: u32 = 1024;

/// Ticks of a coarse-clock reading; u32 wraps every ~52 days, and ages are
/// taken with wrapping subtraction (timeouts are at most 6000 s).
#[inline(always)]
pub const fn ticks(ns: u64) -> u32 {
    (ns >> TICK_SHIFT) as u32
}

/// A timeout in seconds as ticks.
#[inline(always)]
pub const fn timeout_ticks(seconds: u32) -> u32 {
    ((seconds as u64 * 1_000_000_000) >> TICK_SHIFT) as u32
}

/// Key of `REPLIES`: a target as its replies show it (source of a
/// target -> client packet).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ReplyKey {
    pub addr: Addr,
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

/// A VIP a nat target serves: what a reply's flow key needs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipRef {
    pub addr: Addr,
    /// Network byte order.
    pub port: u16,
    pub _pad: u16,
}

/// Most nat VIPs one target (address, port, protocol) may serve: a reply
/// is matched against each in turn.
pub const MAX_VIPS_PER_TARGET: usize = 4;

/// Value of `REPLIES`: the target's id and the nat VIPs it serves.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReplyTargets {
    pub target_id: u32,
    /// Entries of `vips` in use.
    pub count: u32,
    pub vips: [VipRef; MAX_VIPS_PER_TARGET],
}

/// Data-path settings the daemon writes into `CONFIG[0]` when it starts.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DataPathConfig {
    /// Seed of the connection table's set hash (random per table, kept in
    /// the pinned map so restarts find their flows).
    pub seed: u32,
    /// Seed of the second candidate set.
    pub seed2: u32,
    /// Sets in `FLOWS` minus one (the set count is a power of two).
    pub set_mask: u32,
    /// [`config_flags`]; 0 is the default of each (a table pinned by a
    /// version that had a zero pad here reads as the defaults).
    pub flags: u32,
}

/// Bits of [`DataPathConfig::flags`].
pub mod config_flags {
    /// nat replies are translated whichever interface they come in by. By
    /// default (bit clear) a reply of a live flow must come in by the
    /// interface the route to its target leaves by (the kernel's strict
    /// `rp_filter` for a single-path route): otherwise a sender on another
    /// network that forges a target's address could confirm flows it
    /// spoofed, or write into real ones.
    pub const REPLY_ANY_INTERFACE: u32 = 1;
}

impl DataPathConfig {
    /// First slot of the first candidate set of a key whose table hash
    /// (`hash::table_hash` with `seed`) is `hash`.
    #[inline(always)]
    pub const fn first_set(&self, hash: u32) -> u32 {
        self.set_at(hash)
    }

    /// First slot of the second candidate set.
    #[inline(always)]
    pub fn second_set(&self, hash: u32) -> u32 {
        self.set_at(crate::hash::second_hash(hash, self.seed2))
    }

    /// First slot of the set that `h` (a key's hash or its second hash)
    /// selects.
    #[inline(always)]
    const fn set_at(&self, h: u32) -> u32 {
        (h & self.set_mask) * FLOW_WAYS
    }

    /// The key's home slot in each candidate set: the way a new entry takes
    /// when it is free, and the one entry a lookup reads before any tag.
    /// Its index depends on the hash alone, not on a load, so the CPU
    /// fetches the home entries' lines at the same time as the sets' tags:
    /// a flow at home costs one cache miss where the tags and then the
    /// entry cost two in a row. The way comes from the hash's top bits,
    /// which no set index uses (at most 2^22 sets: `limits`).
    #[inline(always)]
    pub fn homes(&self, hash: u32) -> [u32; 2] {
        let second = crate::hash::second_hash(hash, self.seed2);
        [
            self.set_at(hash) + home_way(hash),
            self.set_at(second) + home_way(second),
        ]
    }
}

/// The home way of a set chosen by `hash` (its top two bits).
#[inline(always)]
const fn home_way(hash: u32) -> u32 {
    hash >> (32 - FLOW_WAYS.trailing_zeros())
}

const _: () = assert!(FLOW_WAYS.is_power_of_two());
const _: () = assert!(
    crate::limits::MAX_FLOW_CAPACITY / FLOW_WAYS <= 1 << (32 - FLOW_WAYS.trailing_zeros()),
    "home ways must come from hash bits that no set index uses"
);

const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<FlowEntry>() == 64);
const _: () = assert!(core::mem::size_of::<SetMeta>() == 32);
const _: () = assert!(core::mem::size_of::<ReplyKey>() == 20);
const _: () = assert!(core::mem::size_of::<ReplyTargets>() == 8 + 20 * MAX_VIPS_PER_TARGET);
const _: () = assert!(core::mem::size_of::<DataPathConfig>() == 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spill_set_is_the_other_set_of_its_records_cache_line() {
        let line = |slot: u32| {
            let record = (slot / FLOW_WAYS) as usize * core::mem::size_of::<SetMeta>();
            record / 64
        };
        for slot in 0..4096u32 {
            let s = spill(slot);
            assert_ne!(s / FLOW_WAYS, slot / FLOW_WAYS, "another set");
            assert_eq!(s % FLOW_WAYS, slot % FLOW_WAYS, "the same way");
            assert_eq!(line(s), line(slot), "records in one cache line");
            assert_eq!(spill(s), slot, "each is the other's");
        }
    }

    #[test]
    fn homes_are_ways_of_the_two_candidate_sets_and_spread_over_them() {
        // 256 sets: the home way must not follow from the set (keys of one
        // set must spread over its ways), so count per (set, way).
        let cfg = DataPathConfig {
            seed: 1,
            seed2: 0x5bd1_e995,
            set_mask: 255,
            flags: 0,
        };
        let mut counts = [[[0u32; FLOW_WAYS as usize]; 256]; 2];
        for i in 0..400_000u32 {
            let hash = i.wrapping_mul(0x9e37_79b9);
            let homes = cfg.homes(hash);
            let firsts = [cfg.first_set(hash), cfg.second_set(hash)];
            for (s, (home, first)) in homes.into_iter().zip(firsts).enumerate() {
                assert!((first..first + FLOW_WAYS).contains(&home), "{hash:#x}");
                counts[s][(first / FLOW_WAYS) as usize][(home - first) as usize] += 1;
            }
        }
        // 400,000 / 1024 = 390 per (set, way) on average.
        for n in counts.iter().flatten().flatten() {
            assert!((250..550).contains(n), "home ways follow the set: {n}");
        }
    }
}
