//! Target choice for a new flow: the flow hash (lb_common::hash, the same
//! on every host) indexes the VIP's live Maglev ring; for dsr's second
//! chance, also the ring that was live before the last switch.
use lb_common::{
    FlowKey, Target, TargetState, VipMeta,
    hash::{flow_hash, source_hash},
    limits::RING_EMPTY,
    vip::vip_flags,
};

use super::maps::{MAGLEV, TARGETS};

/// The live ring's target for this flow, if it takes new flows.
#[inline(always)]
pub fn select(key: &FlowKey, vip: &VipMeta) -> Option<(u32, &'static Target)> {
    let id = ring_entry(key, vip, vip.ring_slot)?;
    let t = TARGETS.get(id)?;
    (t.state == TargetState::Active as u8).then_some((id, t))
}

/// The target the previous table gave this flow, when the VIP keeps that
/// table (`PREVIOUS_RING`: the other slot of the VIP's pair, same size).
/// Only a target that keeps its flows (`Active`, `Draining`): a host that
/// has the flow pinned to a `Down` or `Unused` target moves it too.
#[inline(always)]
pub fn previous(key: &FlowKey, vip: &VipMeta) -> Option<(u32, &'static Target)> {
    if vip.flags & vip_flags::PREVIOUS_RING == 0 {
        return None;
    }
    // The pair is (2 * vip_id, 2 * vip_id + 1): the other one differs in
    // the lowest bit.
    let id = ring_entry(key, vip, vip.ring_slot ^ 1)?;
    let t = TARGETS.get(id)?;
    TargetState::from_u8(t.state)
        .keeps_flows()
        .then_some((id, t))
}

/// The id in ring `slot` of `vip` for this flow (`None`: empty).
#[inline(always)]
fn ring_entry(key: &FlowKey, vip: &VipMeta, slot: u32) -> Option<u32> {
    if vip.ring_size == 0 {
        return None;
    }
    let h = if vip.flags & vip_flags::STICKY_SOURCE_IP != 0 {
        source_hash(key)
    } else {
        flow_hash(key)
    };
    let idx = slot.wrapping_mul(vip.ring_size) + h % vip.ring_size;
    let id = *MAGLEV.get(idx)?;
    (id != RING_EMPTY).then_some(id)
}
