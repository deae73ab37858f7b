//! The connection table: a set-associative hash table over the `FLOWS`
//! array (layout and states in lb_common::flow).
//!
//! Each flow may live in either of two sets of `FLOW_WAYS` consecutive
//! entries, chosen by a keyed hash of its key (or, when both were full
//! when it began, in one of their spill sets). Beside each set, a 32-byte
//! `FLOW_META` record (lb_common::flow::SetMeta) holds its entries' 16-bit
//! tags, states and expiry ticks. Each key also has a home slot in each
//! set (lb_common's `DataPathConfig::homes`), where its entry goes when
//! that way is free. A lookup reads the two home entries and the two sets'
//! tags at once (their addresses depend on the hash alone, so the cache
//! misses overlap): a flow at home is found then; otherwise whole keys are
//! compared only in entries whose tag matches, in the two sets and then
//! in their spill sets (below), and a key whose tag is in no way has no
//! entry (every published entry's tag was written before it). A new flow
//! goes into the set with fewer live entries (the "power of two choices",
//! which keeps sets evenly filled), at its home if free (or at the other
//! set's free home if that set holds at most one live entry more: see
//! `pick`), taking a free or expired slot. When both sets are full it
//! takes a free or expired slot of their spill sets (lb_common's
//! `flow::spill`: the sets whose records share the cache lines of theirs),
//! since two choices alone leave sets full long before the table is; or
//! else it displaces the unconfirmed flow of its two sets nearest its
//! expiry (a spill set takes others' flows only in free or expired
//! slots). It chooses from the records alone, then checks the one entry
//! it chose before writing it; states and expiry ticks are hints
//! (the daemon frees entries without touching them), so when they find no
//! slot, or one the entry belies, the entries themselves are surveyed and
//! the hints rewritten from them: stale hints cost time, never a flow.
//! Confirmed flows are never displaced while they live: a SYN flood, whose
//! spoofed packets cannot confirm blind, competes only with other
//! unconfirmed flows (UDP has no handshake: see docs/datapath.md). When
//! all four sets hold only confirmed flows the new flow is not
//! tracked: in nat mode it is dropped (counted), since replies of an
//! untracked flow could not be translated back; the client retries.
//!
//! Concurrency: entries are plain memory shared by all CPUs. A new entry is
//! published in order (`insert`: state Free, key and fields, its
//! `FLOW_META` way, check, state).
//! A reader that sees a half-written entry, or an entry two CPUs filled at
//! once, finds that its `check` does not match and treats the slot as free:
//! a lookup does not use it, and the survey for a new flow counts it free
//! until the survey has found a free or expired slot (checking an entry
//! costs a hash of its key, so the survey stops checking then: see
//! [`survey_slot`]).
//! Single fields (state, last_seen, flags, a way's tag, state or expiry
//! tick) are updated with single stores. Two CPUs filling one slot at once
//! may leave the slot's tag of one flow beside the other's entry: that
//! entry is then not found (unless the slot is its home) and its flow's
//! next packet starts it anew,
//! as the flow whose entry was overwritten does (both flows are new ones,
//! unconfirmed).
//! The daemon frees entries only with a compare-and-swap of the word that
//! holds `last_seen` and `state` (lb-userspace's flow_table).
use core::ptr::null_mut;

use aya_ebpf::{cty::c_void, helpers::bpf_loop};
use lb_common::{
    DataPathConfig, FlowEntry, FlowKey, FlowState, PROTO_TCP, ReplyKey, ReplyTargets, Target,
    TargetState, VipRef,
    flow::{self, FLOW_WAYS, MAX_VIPS_PER_TARGET, REFRESH_TICKS, SetMeta, entry_flags, spill},
    hash::{entry_check, entry_tag, table_hash},
};

use super::{
    TcpFlags,
    maps::{FLOW_META, FLOWS, REPLIES, TARGETS, config},
    scratch::{probe_key, survey},
};

/// Where a key's flow may live.
pub struct Sets {
    /// The key's table hash (also bound into each entry's `check`).
    pub hash: u32,
    cfg: DataPathConfig,
}

impl Sets {
    #[inline(always)]
    pub fn of(key: &FlowKey) -> Self {
        let cfg = config();
        Self {
            hash: table_hash(key, cfg.seed),
            cfg,
        }
    }

    /// The sets of a key whose table hash is known.
    #[inline(always)]
    pub fn with_hash(hash: u32) -> Self {
        Self {
            hash,
            cfg: config(),
        }
    }

    /// The key's home slot in each set (lb_common's `DataPathConfig::homes`).
    #[inline(always)]
    fn homes(&self) -> [u32; 2] {
        self.cfg.homes(self.hash)
    }

    /// The key's tag in `FLOW_META`.
    #[inline(always)]
    fn tag(&self) -> u16 {
        entry_tag(self.hash)
    }
}

/// A flow's slot: its index and the entry.
pub struct Slot {
    pub index: u32,
    pub entry: *mut FlowEntry,
}

impl Slot {
    #[inline(always)]
    fn at(index: u32) -> Option<Self> {
        Some(Self {
            index,
            entry: FLOWS.get_ptr_mut(index)?,
        })
    }

    #[inline(always)]
    pub fn get(&self) -> &FlowEntry {
        // SAFETY: a pointer into the `FLOWS` array returned by the map
        // lookup, valid for the program's run; other CPUs may write the
        // entry concurrently, which `check` guards against (module docs).
        unsafe { &*self.entry }
    }

    #[inline(always)]
    fn get_mut(&mut self) -> &mut FlowEntry {
        // SAFETY: as in `get`; single-field stores only (module docs).
        unsafe { &mut *self.entry }
    }
}

#[inline(always)]
fn same_key(a: &FlowKey, b: &FlowKey) -> bool {
    // Five 8-byte compares (FlowKey is 8-aligned and has no implicit
    // padding; its explicit pad is always zero).
    // SAFETY: both are 40-byte, 8-aligned `repr(C)` values.
    let (a, b) = unsafe {
        (
            &*(a as *const FlowKey as *const [u64; 5]),
            &*(b as *const FlowKey as *const [u64; 5]),
        )
    };
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4]
}

/// First slot of the set holding slot `index`.
#[inline(always)]
const fn set_of(index: u32) -> u32 {
    index & !(FLOW_WAYS - 1)
}

/// The tags of the set holding slot `index`, as one word (way `w` in bits
/// `16 w ..`), or `None` past the end of `FLOW_META`.
#[inline(always)]
fn set_tags(index: u32) -> Option<u64> {
    let meta = FLOW_META.get_ptr(index / FLOW_WAYS)?;
    // SAFETY: a 32-byte, 32-aligned value of the `FLOW_META` array, valid
    // for the program's run, whose first 8 bytes are the tags; one load,
    // whatever other CPUs write.
    Some(unsafe { core::ptr::read_volatile(meta as *const u64) })
}

/// Records in `FLOW_META` the state and expiry tick of slot `index` (one
/// store each: the other ways, which other CPUs may be writing, are left
/// alone).
#[inline(always)]
fn note(index: u32, state: u8, deadline: u32) {
    if let Some(meta) = FLOW_META.get_ptr_mut(index / FLOW_WAYS) {
        let way = (index % FLOW_WAYS) as usize;
        // SAFETY: way < FLOW_WAYS, inside the set's `SetMeta`.
        unsafe {
            use core::ptr::{addr_of_mut, write_volatile};
            write_volatile(
                (addr_of_mut!((*meta).deadlines) as *mut u32).add(way),
                deadline,
            );
            write_volatile((addr_of_mut!((*meta).states) as *mut u8).add(way), state);
        }
    }
}

/// Writes the tag of slot `index`.
#[inline(always)]
fn set_tag(index: u32, tag: u16) {
    if let Some(meta) = FLOW_META.get_ptr_mut(index / FLOW_WAYS) {
        let way = (index % FLOW_WAYS) as usize;
        // SAFETY: way < FLOW_WAYS, inside the set's `SetMeta`.
        unsafe {
            core::ptr::write_volatile(
                (core::ptr::addr_of_mut!((*meta).tags) as *mut u16).add(way),
                tag,
            )
        };
    }
}

/// Brings the `FLOW_META` hints of `slot` (state, expiry) up to its entry,
/// writing only when they differ: a client packet's last step, so every
/// change (confirmation, a refreshed `last_seen`, a FIN or RST either way)
/// reaches the hints by the flow's next client packet, and the line is
/// not dirtied on every packet. (Not done for a target's packet: that
/// path's frame has no room left; a stale hint costs time, not a flow.)
#[inline(always)]
fn sync(slot: &Slot) {
    let e = slot.get();
    let (state, deadline) = (e.state, e.deadline());
    let Some(meta) = FLOW_META.get_ptr(slot.index / FLOW_WAYS) else {
        return;
    };
    let way = (slot.index % FLOW_WAYS) as usize;
    // SAFETY: way < FLOW_WAYS, inside the set's `SetMeta`, valid for the
    // program's run.
    let (hinted_state, hinted_deadline) = unsafe {
        use core::ptr::{addr_of, read_volatile};
        (
            read_volatile((addr_of!((*meta).states) as *const u8).add(way)),
            read_volatile((addr_of!((*meta).deadlines) as *const u32).add(way)),
        )
    };
    if hinted_state != state || hinted_deadline != deadline {
        note(slot.index, state, deadline);
    }
}

/// The slot of the set at `base`, whose tags are `tags`, whose tag and then
/// key match `key`.
#[inline(always)]
fn tagged(key: &FlowKey, base: u32, tags: u64, tag: u16) -> Option<Slot> {
    // Whether any way holds the tag, for all four at once (a lane of
    // `x` is zero where it does; the classic test for a zero lane): a
    // new flow, whose tag is usually in no way of its four sets, passes
    // each set with one test rather than a branch per way.
    const LOW: u64 = 0x0001_0001_0001_0001;
    const HIGH: u64 = 0x8000_8000_8000_8000;
    let x = tags ^ (tag as u64).wrapping_mul(LOW);
    if x.wrapping_sub(LOW) & !x & HIGH == 0 {
        return None;
    }
    for way in 0..FLOW_WAYS {
        if (tags >> (16 * way)) as u16 == tag {
            let slot = Slot::at(base + way)?;
            let e = slot.get();
            if e.state != FlowState::Free as u8 && same_key(&e.key, key) {
                return Some(slot);
            }
        }
    }
    None
}

/// The slot holding `key`, in whatever state (see [`live`]): one of its
/// two home slots, or else an entry whose tag matches in its two sets or
/// their spill sets (module docs: no tag, no entry).
#[inline(always)]
pub fn find(key: &FlowKey, sets: &Sets) -> Option<Slot> {
    let [first, second] = sets.homes();
    let (home1, home2) = (Slot::at(first)?, Slot::at(second)?);
    // Four loads whose addresses come from the hash alone, all issued
    // before any is used: the CPU waits for their cache misses at once
    // instead of for the tags' and then an entry's (volatile: issued here,
    // in this order, none dropped as unused).
    // SAFETY: the two entries' state bytes (see `Slot::get`).
    let (state1, state2) = unsafe {
        use core::ptr::{addr_of, read_volatile};
        (
            read_volatile(addr_of!((*home1.entry).state)),
            read_volatile(addr_of!((*home2.entry).state)),
        )
    };
    let (tags1, tags2) = (set_tags(first)?, set_tags(second)?);
    let free = FlowState::Free as u8;
    if state1 != free && same_key(&home1.get().key, key) {
        return Some(home1);
    }
    if state2 != free && same_key(&home2.get().key, key) {
        return Some(home2);
    }
    let tag = sets.tag();
    tagged(key, set_of(first), tags1, tag)
        .or_else(|| tagged(key, set_of(second), tags2, tag))
        .or_else(|| spilled(key, first, second, tag))
}

/// The slot holding `key` in a spill set of its sets (whose homes are
/// `first` and `second`): read only when neither set holds it. Their
/// tags share the cache lines of the sets' tags (`flow::spill`), which
/// `find` has loaded: no miss.
#[inline(always)]
fn spilled(key: &FlowKey, first: u32, second: u32, tag: u16) -> Option<Slot> {
    let (a, b) = (spill(first), spill(second));
    let in_set = |slot: u32| set_tags(slot).and_then(|tags| tagged(key, set_of(slot), tags, tag));
    in_set(a).or_else(|| in_set(b))
}

/// The entry found for `key` if it still holds a flow: intact (its check
/// matches), not expired. Says nothing about the target.
#[inline(always)]
pub fn live(slot: &Slot, sets: &Sets, now: u32) -> bool {
    let e = slot.get();
    !e.expired(now) && e.check == entry_check(sets.hash, e.target_id, e.target_gen, e.vip_id)
}

/// The entry's target, if it still takes this flow: the id holds the same
/// target (generation) and its state keeps flows.
#[inline(always)]
pub fn target_of(e: &FlowEntry) -> Option<&'static Target> {
    let t = TARGETS.get(e.target_id as u32)?;
    let keeps = t.state == TargetState::Active as u8 || t.state == TargetState::Draining as u8;
    (keeps && t.generation as u16 == e.target_gen).then_some(t)
}

/// Where a new flow's entry goes.
pub struct Vacancy {
    pub index: u32,
    /// The slot holds a live unconfirmed flow of this VIP, displaced now.
    pub displaces: Option<u16>,
}

const _: () = assert!(MAX_VIPS_PER_TARGET.is_power_of_two());

/// "No slot" in [`Survey`].
const NONE: u32 = u32::MAX;

/// Sets a [`Survey`] covers: the two candidate sets, then their spill
/// sets (`flow::spill`).
const SURVEYED_SETS: u32 = 4;

/// What a new flow sees of its two candidate sets and their spill sets,
/// filled one way at a time, from the `FLOW_META` hints ([`survey_meta`])
/// or from the entries ([`survey_slot`]). Lives in the per-CPU scratch
/// memory (`scratch`).
#[repr(C)]
pub struct Survey {
    /// The key's home slot in each candidate set (the set is `set_of` it).
    home: [u32; 2],
    now: u32,
    /// First free or expired slot of each surveyed set (home first).
    dead: [u32; SURVEYED_SETS as usize],
    /// Live entries of each surveyed set.
    live: [u32; SURVEYED_SETS as usize],
    /// The live unconfirmed entry nearest its expiry: slot, ticks left,
    /// VIP id (known only to the survey of entries).
    nearest: u32,
    nearest_left: u32,
    nearest_vip: u32,
}

impl Survey {
    /// Starts a survey of the sets holding the home slots `first` and
    /// `second`, and of their spill sets.
    #[inline(always)]
    fn start(&mut self, first: u32, second: u32, now: u32) {
        self.home = [first, second];
        self.now = now;
        self.dead = [NONE; SURVEYED_SETS as usize];
        self.live = [0; SURVEYED_SETS as usize];
        self.nearest = NONE;
        self.nearest_left = 0;
        self.nearest_vip = 0;
    }

    /// The home slot of surveyed set `set` (`0..SURVEYED_SETS`): the
    /// key's, or in a spill set the same way (`flow::spill`).
    #[inline(always)]
    fn home_of(&self, set: usize) -> u32 {
        let home = self.home[set & 1];
        if set < 2 { home } else { spill(home) }
    }

    /// Counts way `index` of surveyed set `set`, holding an entry in
    /// `state` that expires after tick `deadline`. Returns whether it is
    /// now the unconfirmed entry nearest its expiry.
    #[inline(always)]
    fn see(&mut self, set: usize, index: u32, state: u8, deadline: u32) -> bool {
        // Only the candidate sets' unconfirmed flows are displaced: a
        // spill set takes a new flow only in a free or expired slot.
        let displaceable = set < 2;
        // Masked: the verifier's bound on the index.
        let set = set & (SURVEYED_SETS as usize - 1);
        let left = flow::age(deadline, self.now);
        if state == FlowState::Free as u8 || left < 0 {
            let home = self.home_of(set);
            let dead = &mut self.dead[set];
            // The home slot if it is dead, else the first dead way.
            if *dead == NONE || index == home {
                *dead = index;
            }
            return false;
        }
        self.live[set] += 1;
        let nearer = self.nearest == NONE || left as u32 <= self.nearest_left;
        if displaceable && FlowState::from_u8(state).is_embryonic() && nearer {
            self.nearest = index;
            self.nearest_left = left as u32;
            return true;
        }
        false
    }

    /// The slot [`pick`] takes from this survey's candidate sets, else
    /// from their spill sets.
    #[inline(always)]
    fn free(&self) -> u32 {
        let (d, l) = (self.dead, self.live);
        let free = pick([d[0], d[1]], self.home, [l[0], l[1]]);
        if free != NONE {
            return free;
        }
        let spill_homes = [self.home_of(2), self.home_of(3)];
        pick([d[2], d[3]], spill_homes, [l[2], l[3]])
    }
}

/// A free or expired slot, in the set with fewer live entries if both
/// have one; but a home slot rather than another way when its set has
/// at most one live entry more (a flow at home is found with one cache
/// miss: `find`). Simulated at half load, 91 % of flows then sit at
/// home, against 83 % with the emptier set alone, and sets fill as
/// evenly. `dead`: each set's home slot if it is free or expired, else its
/// first such way, else `NONE`; `home`: the key's home slots; `live`: each
/// set's live entries.
#[inline(always)]
fn pick(dead: [u32; 2], home: [u32; 2], live: [u32; 2]) -> u32 {
    let (d, h, l) = (dead, home, live);
    let (near, far, near_home, far_home, near_live, far_live) = if l[0] <= l[1] {
        (d[0], d[1], h[0], h[1], l[0], l[1])
    } else {
        (d[1], d[0], h[1], h[0], l[1], l[0])
    };
    let far_at_home = far != NONE && far == far_home && near != near_home;
    if near != NONE && !(far_at_home && far_live <= near_live + 1) {
        near
    } else {
        far
    }
}

/// Nibble `m` (for each 4-bit mask `m`): the index of its lowest set bit
/// (15 for none).
const LOWEST_WAY: u64 = {
    let mut t = 0xfu64;
    let mut m = 1;
    while m < 16 {
        t |= ((m as u64).trailing_zeros() as u64) << (4 * m);
        m += 1;
    }
    t
};

/// Nibble `m`: how many bits of `m` are set.
const WAYS_SET: u64 = {
    let mut t = 0u64;
    let mut m = 0;
    while m < 16 {
        t |= ((m as u64).count_ones() as u64) << (4 * m);
        m += 1;
    }
    t
};

const _: () = assert!(FLOW_WAYS == 4, "the masks below are 4 bits");

/// The set holding `home`, as its record's hints say: its dead way (the
/// home slot if it is free or expired, else the first way that is, else
/// `NONE`) and its live entries. What [`Survey::see`] finds from the same
/// record, computed a word at a time: no branch per way, whose outcome
/// (free or not, home or not) is a coin toss the CPU mispredicts.
#[inline(always)]
fn hinted(home: u32, now: u32) -> Option<(u32, u32)> {
    let meta = FLOW_META.get_ptr(home / FLOW_WAYS)?;
    // SAFETY: a value of the `FLOW_META` array, valid for the program's
    // run; other CPUs may write single fields meanwhile (hints).
    let meta: &SetMeta = unsafe { &*meta };
    // Free is 0: the high bit of each byte of `t` says its state is 0
    // (exact: no carry crosses a byte).
    const _: () = assert!(FlowState::Free as u8 == 0);
    let states = u32::from_le_bytes(meta.states);
    let t = !(((states & 0x7f7f_7f7f) + 0x7f7f_7f7f) | states | 0x7f7f_7f7f);
    let free = (t >> 7 & 1) | (t >> 14 & 2) | (t >> 21 & 4) | (t >> 28 & 8);
    // Expired: `flow::age(deadline, now) < 0`, the sign bit.
    let d = meta.deadlines;
    let expired = (d[0].wrapping_sub(now) >> 31)
        | (d[1].wrapping_sub(now) >> 31) << 1
        | (d[2].wrapping_sub(now) >> 31) << 2
        | (d[3].wrapping_sub(now) >> 31) << 3;
    let dead = free | expired;
    let way = home % FLOW_WAYS;
    let slot = if dead >> way & 1 != 0 {
        home
    } else if dead != 0 {
        set_of(home) + (LOWEST_WAY >> (4 * dead) & 0xf) as u32
    } else {
        NONE
    };
    let live = FLOW_WAYS - (WAYS_SET >> (4 * dead) & 0xf) as u32;
    Some((slot, live))
}

/// `bpf_loop` callback over the surveyed sets' `FLOW_META` records (one
/// set a call, its ways unrolled: the verifier checks the callback once);
/// called for the two candidate sets only, when looking for a flow to
/// displace.
extern "C" fn survey_meta(i: u32, _ctx: *mut c_void) -> i64 {
    let Some(s) = survey() else {
        return 1;
    };
    let set = i as usize;
    let base = set_of(s.home_of(set));
    let Some(meta) = FLOW_META.get_ptr(base / FLOW_WAYS) else {
        return 1;
    };
    // SAFETY: a value of the `FLOW_META` array, valid for the program's
    // run; other CPUs may write single fields meanwhile (hints).
    let meta: &SetMeta = unsafe { &*meta };
    for way in 0..FLOW_WAYS {
        let w = way as usize;
        s.see(set, base + way, meta.states[w], meta.deadlines[w]);
    }
    0
}

/// `bpf_loop` callback over the surveyed sets' entries
/// (`SURVEYED_SETS * FLOW_WAYS`), when the hints found no slot: it
/// rewrites each way's hints from its entry. A helper loop rather than an
/// unrolled one: the verifier checks the callback once, where eight
/// unrolled slots with four outcomes each made it walk more than its
/// million instructions.
extern "C" fn survey_slot(i: u32, _ctx: *mut c_void) -> i64 {
    let Some(s) = survey() else {
        return 1;
    };
    let set = (i / FLOW_WAYS) as usize;
    let base = set_of(s.home_of(set));
    let Some(slot) = Slot::at(base + i % FLOW_WAYS) else {
        return 0;
    };
    let e = slot.get();
    // Checked only until a dead slot turns up: the check recomputes the
    // key's table hash and `entry_check`, and with a free or expired slot
    // at hand a torn entry is not needed. It is left for later (it fails
    // every lookup's own check, and a survey of full sets checks it); when
    // no slot is dead, every entry is checked, as a flood of new flows
    // over full sets needs.
    let d = s.dead;
    let check = d[0] == NONE && d[1] == NONE && d[2] == NONE && d[3] == NONE;
    let state = if check && torn(e) {
        FlowState::Free as u8
    } else {
        e.state
    };
    let deadline = e.deadline();
    note(slot.index, state, deadline);
    if s.see(set, slot.index, state, deadline) {
        s.nearest_vip = e.vip_id as u32;
    }
    0
}

/// The entry's check does not match its key and target: torn (two CPUs
/// wrote it at once) or half-written, no flow lives there. (The seed is
/// looked up here rather than kept in `Survey`: when this was written,
/// four more bytes there took the new-flow path's frame past the kernel's
/// stack limit. `Survey` now lives in scratch memory, but `Survey::free`
/// copies its arrays into `choose`'s frame: let the verifier tests check
/// the frames before growing it.)
#[inline(always)]
fn torn(e: &FlowEntry) -> bool {
    e.check
        != entry_check(
            table_hash(&e.key, config().seed),
            e.target_id,
            e.target_gen,
            e.vip_id,
        )
}

/// The slot the hints chose, if its entry agrees: free or expired, or (a
/// displacement) unconfirmed. (A torn entry is left to the survey of
/// entries, which checks them: the check costs a hash of the key.)
#[inline(always)]
fn confirm(index: u32, displace: bool, now: u32) -> Option<Vacancy> {
    let slot = Slot::at(index)?;
    let e = slot.get();
    if e.expired(now) {
        return Some(Vacancy {
            index,
            displaces: None,
        });
    }
    (displace && e.state().is_embryonic()).then_some(Vacancy {
        index,
        displaces: Some(e.vip_id),
    })
}

/// The best slot for a new flow: see the module docs. The hints first
/// (two `FLOW_META` records and the chosen entry); the entries when the
/// hints find no slot or the chosen entry belies them.
#[inline(always)]
pub fn vacancy(sets: &Sets, now: u32) -> Option<Vacancy> {
    let [first, second] = sets.homes();
    let v = choose(first, second, now);
    (v != NO_VACANCY).then_some(Vacancy {
        index: v as u32,
        displaces: (v & DISPLACES != 0).then_some((v >> 32) as u16),
    })
}

/// [`choose`]'s answer when there is no slot.
const NO_VACANCY: u64 = u64::MAX;
/// Bit of [`choose`]'s answer: the slot's unconfirmed flow is displaced
/// (its VIP id in bits 32..48).
const DISPLACES: u64 = 1 << 48;

/// [`vacancy`] as a function of its own, not inlined: inlined, its
/// registers and spills took the new-flow path's frame past the kernel's
/// 512 bytes of stack for a call chain. `first` and `second` are the key's
/// home slots. Returns the slot (bits 0..32),
/// with [`DISPLACES`] and the displaced flow's VIP id, or [`NO_VACANCY`].
#[inline(never)]
fn choose(first: u32, second: u32, now: u32) -> u64 {
    let mut free = hinted_pick(first, second, now);
    if free == NONE {
        free = spill_slot(first, second, now);
    }
    let Some(s) = survey() else {
        return NO_VACANCY;
    };
    let by_hints = if free != NONE {
        confirm(free, false, now)
    } else {
        // Full sets, spill sets too, as the hints say: the unconfirmed
        // flow of the two sets nearest its expiry, which only a survey of
        // their ways finds (a spill set's flows are not displaced: `see`).
        s.start(first, second, now);
        // SAFETY: the callback is valid for the call; it takes no context
        // (the survey is in scratch memory: `bpf_loop` takes only a stack
        // pointer).
        unsafe { bpf_loop(2, survey_meta as *mut c_void, null_mut(), 0) };
        let Some(s) = survey() else {
            return NO_VACANCY;
        };
        (s.nearest != NONE)
            .then(|| confirm(s.nearest, true, now))
            .flatten()
    };
    if let Some(v) = by_hints {
        return packed(v);
    }
    let Some(s) = survey() else {
        return NO_VACANCY;
    };
    s.start(first, second, now);
    let slots = SURVEYED_SETS * FLOW_WAYS;
    // SAFETY: as above.
    unsafe { bpf_loop(slots, survey_slot as *mut c_void, null_mut(), 0) };
    let Some(s) = survey() else {
        return NO_VACANCY;
    };
    let free = s.free();
    if free != NONE {
        return free as u64;
    }
    if s.nearest != NONE {
        return s.nearest as u64 | DISPLACES | (s.nearest_vip as u64 & 0xffff) << 32;
    }
    NO_VACANCY
}

/// A free or expired slot of the spill sets of the sets whose homes are
/// `first` and `second`, as their hints say, or `NONE`: where a new flow
/// goes when both its sets are full (`flow::spill`), before it may
/// displace anything. Out of line: [`choose`]'s frame.
#[inline(never)]
fn spill_slot(first: u32, second: u32, now: u32) -> u32 {
    hinted_pick(spill(first), spill(second), now)
}

/// The slot [`pick`] takes in the sets holding the home slots `a` and
/// `b`, as their records' hints say ([`hinted`]), or `NONE`.
#[inline(always)]
fn hinted_pick(a: u32, b: u32, now: u32) -> u32 {
    let (Some((dead1, live1)), Some((dead2, live2))) = (hinted(a, now), hinted(b, now)) else {
        return NONE;
    };
    pick([dead1, dead2], [a, b], [live1, live2])
}

#[inline(always)]
fn packed(v: Vacancy) -> u64 {
    match v.displaces {
        Some(vip) => v.index as u64 | DISPLACES | (vip as u64) << 32,
        None => v.index as u64,
    }
}

/// What a new entry records.
pub struct NewFlow {
    pub target_id: u32,
    pub target_gen: u32,
    pub vip_id: u32,
    pub idle_timeout_s: u32,
    pub state: FlowState,
    pub flags: u8,
    /// `FlowEntry::aux`: the flow hash of a dsr flow, 0 for nat.
    pub aux: u32,
}

/// Writes a new flow into slot `index`, in an order a reader on another
/// CPU can rely on: the state first (as Free, so no lookup trusts the slot
/// while its key and target change), then the key and the rest, its way
/// in `FLOW_META` (tag, state, expiry), then the check, then the real
/// state. Volatile stores, so the compiler neither
/// reorders them nor drops the first state store as dead; the CPUs this
/// runs on (x86-64) keep stores in program order. A reader that still
/// mixes two writers' fields finds a check that does not match (module
/// docs). Not inlined, like [`choose`]: the new-flow path's frame.
#[inline(never)]
pub fn insert(index: u32, key: &FlowKey, sets: &Sets, f: &NewFlow, now: u32) {
    let Some(slot) = Slot::at(index) else {
        return;
    };
    let (id, generation, vip) = (f.target_id as u16, f.target_gen as u16, f.vip_id as u16);
    let e = slot.entry;
    // The key as its five words (8-aligned, see `same_key`).
    // SAFETY: `key` is a 40-byte, 8-aligned `repr(C)` value.
    let words = unsafe { &*(key as *const FlowKey as *const [u64; 5]) };
    // SAFETY: `e` points at an entry of `FLOWS` (see `Slot::get`); every
    // store is of one field, inside the entry.
    unsafe {
        use core::ptr::{addr_of_mut, write_volatile};
        write_volatile(addr_of_mut!((*e).state), FlowState::Free as u8);
        let k = addr_of_mut!((*e).key) as *mut u64;
        write_volatile(k, words[0]);
        write_volatile(k.add(1), words[1]);
        write_volatile(k.add(2), words[2]);
        write_volatile(k.add(3), words[3]);
        write_volatile(k.add(4), words[4]);
        write_volatile(addr_of_mut!((*e).target_id), id);
        write_volatile(addr_of_mut!((*e).target_gen), generation);
        write_volatile(addr_of_mut!((*e).vip_id), vip);
        write_volatile(addr_of_mut!((*e).idle_timeout_s), f.idle_timeout_s as u16);
        write_volatile(addr_of_mut!((*e).last_seen), now);
        write_volatile(addr_of_mut!((*e).flags), f.flags);
        write_volatile(addr_of_mut!((*e)._pad), 0);
        write_volatile(addr_of_mut!((*e).aux), f.aux);
    }
    // The tag before the check and state: a reader that finds the entry
    // published finds its tag too. The state and expiry hints with it.
    set_tag(index, sets.tag());
    let lifetime = flow::lifetime(f.state as u8, f.flags, f.idle_timeout_s as u16);
    note(index, f.state as u8, now.wrapping_add(lifetime));
    // SAFETY: as above.
    unsafe {
        use core::ptr::{addr_of_mut, write_volatile};
        write_volatile(
            addr_of_mut!((*e).check),
            entry_check(sets.hash, id, generation, vip),
        );
        write_volatile(addr_of_mut!((*e).state), f.state as u8);
    }
}

/// Frees a slot (a RST on an unconfirmed flow).
#[inline(always)]
pub fn remove(slot: &mut Slot) {
    slot.get_mut().state = FlowState::Free as u8;
}

/// Notes a packet: refreshes the idle timer (at most once per
/// `REFRESH_TICKS`, so a busy flow does not write its line every time) and
/// marks a FIN with the side (`fin_flag`) that sent it.
#[inline(always)]
fn touch(e: &mut FlowEntry, tcp: &TcpFlags, now: u32, fin_flag: u8) {
    if flow::age(now, e.last_seen) >= REFRESH_TICKS as i32 {
        e.last_seen = now;
    }
    if tcp.fin && e.flags & fin_flag == 0 {
        e.flags |= fin_flag;
    }
}

/// A RST of either side. An unconfirmed entry is freed. A confirmed one
/// is only marked closing (see `entry_flags::RST`): a spoofed RST cannot
/// end a connection this way, it leaves it 10 s of idleness, while the
/// target's own TCP drops the RST unless its sequence number fits.
/// Returns whether the entry is gone.
#[inline(always)]
fn reset(slot: &mut Slot, now: u32) -> bool {
    let e = slot.get_mut();
    if e.state != FlowState::Established as u8 {
        remove(slot);
        return true;
    }
    e.last_seen = now;
    if e.flags & entry_flags::RST == 0 {
        e.flags |= entry_flags::RST;
    }
    false
}

/// A client packet of a tracked flow. Returns whether it confirmed the
/// flow. A FIN on a flow that never confirmed leaves it unconfirmed (only
/// its timeout shortens), so SYN+FIN floods cannot pin entries.
#[inline(always)]
pub fn client_packet(slot: &mut Slot, tcp: &TcpFlags, now: u32) -> bool {
    if tcp.rst {
        reset(slot, now);
        sync(slot);
        return false;
    }
    let e = slot.get_mut();
    let dsr = e.flags & entry_flags::DSR != 0;
    let confirms = match FlowState::from_u8(e.state) {
        // nat: the client acknowledges the target's SYN-ACK: at or a
        // little after the number that does (lb_common::flow).
        FlowState::SynAck => {
            tcp.ack && !tcp.syn && tcp.ack_seq.wrapping_sub(e.aux) <= flow::SYN_ACK_WINDOW
        }
        // nat: the client speaks again after the target answered.
        FlowState::Replied => true,
        // dsr: no reply passes here; the client's second TCP packet (its
        // handshake ACK) is as far as this host can see. A UDP flow has
        // nothing this host could check (a blind flood repeating its
        // tuples would confirm itself): it stays unconfirmed.
        FlowState::Syn | FlowState::New => dsr && !tcp.syn && e.key.proto == PROTO_TCP,
        _ => false,
    };
    if confirms {
        e.state = FlowState::Established as u8;
    }
    touch(e, tcp, now, entry_flags::FIN);
    sync(slot);
    confirms
}

/// A target's reply (nat) of a tracked flow.
#[inline(always)]
pub fn target_packet(slot: &mut Slot, tcp: &TcpFlags, now: u32) {
    if tcp.rst {
        reset(slot, now);
        return;
    }
    let e = slot.get_mut();
    match FlowState::from_u8(e.state) {
        // A dsr flow's `aux` is its hash, and it confirms on the client's
        // next packet instead. Its target's replies reach here once its
        // group switched to nat (the target then has a `REPLIES` entry,
        // and dsr flows of before the switch go on).
        FlowState::Syn if tcp.syn && tcp.ack && e.flags & entry_flags::DSR == 0 => {
            e.aux = tcp.seq.wrapping_add(1);
            e.state = FlowState::SynAck as u8;
        }
        FlowState::New => e.state = FlowState::Replied as u8,
        _ => {}
    }
    touch(e, tcp, now, entry_flags::TARGET_FIN);
}

/// What a packet from a target's address and port is.
pub enum ReplyOf {
    /// The source is no nat target.
    NotTarget,
    /// A nat target, but no live flow of it goes to this client.
    Untracked,
    /// The reply of this flow, to be sent from this VIP.
    Flow(Slot, VipRef),
}

/// The search of [`find_by_reply`], one VIP per [`reply_vip`] call.
#[repr(C)]
struct ReplySearch {
    reply: *const FlowKey,
    targets: *const ReplyTargets,
    now: u32,
    /// The matching VIP's position in `targets.vips` and its entry's slot,
    /// or `NONE`.
    found: u32,
    slot: u32,
}

/// `bpf_loop` callback: does the flow of the reply, were it of VIP `i`,
/// exist? A helper loop for the verifier's sake, as in `survey_slot`.
extern "C" fn reply_vip(i: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `ReplySearch` on `find_by_reply`'s stack.
    let s = unsafe { &mut *(ctx as *mut ReplySearch) };
    // SAFETY: a value of the `REPLIES` map, valid for the program's run.
    let targets = unsafe { &*s.targets };
    // SAFETY: the key `find_by_reply` was given, alive for its call.
    let reply = unsafe { &*s.reply };
    let Some(key) = probe_key() else {
        return 1;
    };
    if i >= targets.count || i as usize >= MAX_VIPS_PER_TARGET {
        return 1;
    }
    // Read through a volatile load and masked: LLVM would drop a plain mask
    // (it knows `i` < 4 from the compare) and index with a spilled copy of
    // `i` the verifier has no bound for.
    // SAFETY: reading a local.
    let idx = unsafe { core::ptr::read_volatile(&i) } as usize & (MAX_VIPS_PER_TARGET - 1);
    let vip = targets.vips[idx];
    *key = FlowKey {
        src: reply.dst,
        dst: vip.addr,
        sport: reply.dport,
        dport: vip.port,
        proto: reply.proto,
        family: reply.family,
        _pad: [0; 2],
    };
    let sets = Sets::of(key);
    if let Some(slot) = find(key, &sets)
        && slot.get().target_id as u32 == targets.target_id
        && live(&slot, &sets, s.now)
    {
        s.found = i;
        s.slot = slot.index;
        return 1;
    }
    0
}

/// The live flow a nat target's reply belongs to: `reply` is the packet's
/// 5-tuple (target -> client). The target's `REPLIES` entry names the VIPs
/// it serves; the flow is the one of those whose entry names this target.
#[inline(always)]
pub fn find_by_reply(reply: &FlowKey, now: u32) -> ReplyOf {
    let rk = ReplyKey {
        addr: reply.src,
        port: reply.sport,
        proto: reply.proto,
        family: reply.family,
    };
    // SAFETY: a value of the `REPLIES` map, valid for the program's run.
    let Some(targets) = (unsafe { REPLIES.get(rk) }) else {
        return ReplyOf::NotTarget;
    };
    let mut s = ReplySearch {
        reply,
        targets,
        now,
        found: NONE,
        slot: NONE,
    };
    // SAFETY: the callback and its context are valid for the call.
    unsafe {
        bpf_loop(
            MAX_VIPS_PER_TARGET as u32,
            reply_vip as *mut c_void,
            &mut s as *mut ReplySearch as *mut c_void,
            0,
        )
    };
    let (Some(slot), Some(vip)) = (
        Slot::at(s.slot),
        targets.vips.get(s.found as usize).copied(),
    ) else {
        return ReplyOf::Untracked;
    };
    ReplyOf::Flow(slot, vip)
}
