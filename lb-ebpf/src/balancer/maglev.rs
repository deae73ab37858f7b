//! Target choice for a new flow: the flow hash (lb_common::hash, the same
//! on every host) indexes the VIP's live Maglev ring.
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
    if vip.ring_size == 0 {
        return None;
    }
    let h = if vip.flags & vip_flags::STICKY_SOURCE_IP != 0 {
        source_hash(key)
    } else {
        flow_hash(key)
    };
    let idx = vip.ring_slot.wrapping_mul(vip.ring_size) + h % vip.ring_size;
    let id = *MAGLEV.get(idx)?;
    if id == RING_EMPTY {
        return None;
    }
    let t = TARGETS.get(id)?;
    (t.state == TargetState::Active as u8).then_some((id, t))
}
