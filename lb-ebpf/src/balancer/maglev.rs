//! Target choice for a new flow: the flow hash (lb_common::hash, the same
//! on every host) indexes the VIP's live Maglev ring; for dsr's second
//! chance, also the ring that was live before the last switch.
use lb_common::{
    FlowKey, Target, TargetState, VipKey, VipMeta,
    hash::{flow_hash, source_hash},
    limits::RING_EMPTY,
    vip::vip_flags,
};

use super::maps::{MAGLEV, TARGETS, VIPS};

/// The target at index `idx` of `MAGLEV` (a [`FoundVip`]'s ring entry),
/// if it takes new flows.
#[inline(always)]
pub fn select_at(idx: u32) -> Option<(u32, &'static Target)> {
    let (id, t) = target_at(idx)?;
    (t.state == TargetState::Active as u8).then_some((id, t))
}

/// The target the previous table gave the flow whose entry in the live
/// ring is at `ring` (a [`FoundVip`]'s), when the VIP keeps that table
/// (`PREVIOUS_RING`: the other slot of the VIP's pair, same size): the
/// entry at the same offset there. Only a target that keeps its flows
/// (`Active`, `Draining`): a host that has the flow pinned to a `Down` or
/// `Unused` target moves it too.
#[inline(always)]
pub fn previous_at(vip: &VipMeta, ring: u32) -> Option<(u32, &'static Target)> {
    if vip.flags & vip_flags::PREVIOUS_RING == 0 {
        return None;
    }
    let offset = ring.wrapping_sub(vip.ring_slot.wrapping_mul(vip.ring_size));
    if offset >= vip.ring_size {
        return None;
    }
    // The pair is (2 * vip_id, 2 * vip_id + 1): the other one differs in
    // the lowest bit.
    let idx = (vip.ring_slot ^ 1).wrapping_mul(vip.ring_size) + offset;
    let (id, t) = target_at(idx)?;
    TargetState::from_u8(t.state)
        .keeps_flows()
        .then_some((id, t))
}

/// The target id at index `idx` of `MAGLEV` and its `TARGETS` entry,
/// whatever its state (`None`: past the end, or an empty ring slot).
#[inline(always)]
fn target_at(idx: u32) -> Option<(u32, &'static Target)> {
    let id = *MAGLEV.get(idx)?;
    if id == RING_EMPTY {
        return None;
    }
    Some((id, TARGETS.get(id)?))
}

/// Whether a client packet's VIP was looked up ([`vip`], [`warm`]).
#[repr(u32)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum VipLookup {
    /// Not yet.
    NotDone,
    /// No such VIP.
    Absent,
    /// The [`FoundVip`] beside it holds the VIP.
    Found,
}

/// A VIP as [`vip`] found it for a flow. (Not a payload of
/// [`VipLookup::Found`]: storing another variant would store its payload's
/// bytes undefined, which the verifier refuses.)
#[repr(C)]
pub struct FoundVip {
    pub meta: VipMeta,
    /// The index in `MAGLEV` of the flow's entry in the VIP's live ring
    /// (past the end for a VIP without a ring, where [`select_at`] finds
    /// no target).
    pub ring: u32,
    /// The flow's `flow_hash`, hashed once for both that need it: the ring
    /// index (unless the VIP hashes the source alone) and a dsr flow's
    /// outer source (`FlowEntry::aux`).
    pub flow_hash: u32,
}

/// The VIP of a client packet to a VIP port, copied into `out` (scratch
/// memory, where `untracked` reads it whichever path looked it up), with
/// the flow's ring entry. Out of line: the caller's frame does not grow
/// by the VIP key.
#[inline(never)]
pub fn vip(key: &FlowKey, out: &mut FoundVip) -> VipLookup {
    lookup(key, out)
}

/// [`vip`] for a SYN, before the connection table is looked up
/// (`dispatch::l4`), with a load of the flow's ring entry started: a new
/// flow needs both once that lookup misses, and the ring entry is a cache
/// miss of its own (a random slot of a 256 KiB ring per VIP). Issued
/// here, it overlaps the table's misses instead of following them, and
/// [`select_at`] finds the line in the cache.
#[inline(never)]
pub fn warm(key: &FlowKey, out: &mut FoundVip) -> VipLookup {
    let found = lookup(key, out);
    if found == VipLookup::Found
        && let Some(entry) = MAGLEV.get_ptr(out.ring)
    {
        // SAFETY: a pointer into the `MAGLEV` array, valid for the run;
        // volatile: the load is the point, its value is read later.
        unsafe { core::ptr::read_volatile(entry) };
    }
    found
}

#[inline(always)]
fn lookup(key: &FlowKey, out: &mut FoundVip) -> VipLookup {
    let vip = VipKey {
        addr: key.dst,
        port: key.dport,
        proto: key.proto,
        family: key.family,
    };
    // SAFETY: a value of the `VIPS` map, valid for the program's run.
    let Some(meta) = (unsafe { VIPS.get(vip) }) else {
        return VipLookup::Absent;
    };
    out.meta = *meta;
    out.flow_hash = flow_hash(key);
    let ring_hash = if meta.flags & vip_flags::STICKY_SOURCE_IP != 0 {
        source_hash(key)
    } else {
        out.flow_hash
    };
    out.ring = ring_index(meta, ring_hash).unwrap_or(u32::MAX);
    VipLookup::Found
}

/// Where in `MAGLEV` the live ring of `vip` holds the target of a flow
/// whose ring hash is `h`.
#[inline(always)]
fn ring_index(vip: &VipMeta, h: u32) -> Option<u32> {
    if vip.ring_size == 0 {
        return None;
    }
    Some(vip.ring_slot.wrapping_mul(vip.ring_size) + h % vip.ring_size)
}
