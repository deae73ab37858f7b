//! Connection tracking and target selection.
//!
//! `FLOWS` pins a client flow to a target id; `NAT` lets the reply path find
//! the VIP again. An entry is only trusted while its target still exists with
//! the same generation and the flow has not been idle past its timeout, so
//! removing a target or reusing its id can never misdirect a flow.
use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use lb_common::{
    FlowKey, FlowValue, NatValue, Target, TargetState, VipMeta,
    flow::flow_flags,
    hash::{flow_hash, source_hash},
    limits::{RING_EMPTY, TCP_CLOSING_TIMEOUT_S},
    vip::vip_flags,
};

use crate::maps::{FLOWS, MAGLEV, NAT, TARGETS};

const NS_PER_S: u64 = 1_000_000_000;

/// CLOCK_MONOTONIC_COARSE: tick resolution is plenty for idle timeouts of
/// seconds, and it avoids a TSC read per packet (about 20 ns in a VM).
#[inline(always)]
pub fn now() -> u64 {
    unsafe { bpf_ktime_get_coarse_ns() }
}

#[inline(always)]
pub fn target(id: u32) -> Option<&'static Target> {
    TARGETS.get(id)
}

/// The flow's current target, if its entry is still valid; refreshes it.
/// Needs no `VipMeta`: the daemon purges the flows of a VIP it removes.
#[inline(always)]
pub fn established(key: &FlowKey, now: u64) -> Option<(*mut FlowValue, u32, &'static Target)> {
    let f = FLOWS.get_ptr_mut(key)?;
    let flow = unsafe { &mut *f };
    let t = target(flow.target_id)?;
    // Only Active and Draining targets keep their flows (Unused: gone; Down:
    // unhealthy with connection termination).
    let keeps = t.state == TargetState::Active as u8 || t.state == TargetState::Draining as u8;
    if !keeps || t.generation != flow.target_gen {
        return None;
    }
    let timeout = if flow.flags & flow_flags::CLOSING != 0 {
        TCP_CLOSING_TIMEOUT_S
    } else {
        flow.idle_timeout_s
    };
    if now.wrapping_sub(flow.last_seen_ns) > timeout as u64 * NS_PER_S {
        return None;
    }
    flow.last_seen_ns = now;
    Some((f, flow.target_id, t))
}

/// Picks a target for a new flow from the VIP's live Maglev ring.
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
    let t = target(id)?;
    if t.state != TargetState::Active as u8 {
        return None;
    }
    Some((id, t))
}

/// Records a new flow in both directions.
#[inline(always)]
pub fn create(key: &FlowKey, vip: &VipMeta, id: u32, t: &Target, now: u64) {
    let flow = FlowValue {
        target_id: id,
        target_gen: t.generation,
        last_seen_ns: now,
        vip_id: vip.vip_id,
        flags: 0,
        idle_timeout_s: vip.idle_timeout_s,
        _pad: 0,
    };
    let reply = reply_key(key, t);
    let nat = NatValue {
        vip_addr: key.dst,
        vip_port: key.dport,
        _pad: 0,
        vip_id: vip.vip_id,
        target_id: id,
        _pad2: 0,
        refreshed_ns: now,
    };
    // A failed insert (map full of non-evictable entries cannot happen with
    // LRU) only means the next packet re-hashes to the same target.
    if FLOWS.insert(key, flow, 0).is_ok() {
        let _inserted = NAT.insert(reply, nat, 0).is_ok();
    }
}

/// The client-side key of a reply's flow (for refresh and TCP state).
#[inline(always)]
pub fn forward_key(reply: &FlowKey, nat: &NatValue) -> FlowKey {
    FlowKey {
        src: reply.dst,
        dst: nat.vip_addr,
        sport: reply.dport,
        dport: nat.vip_port,
        proto: reply.proto,
        family: reply.family,
        _pad: [0; 2],
    }
}

/// TCP RST: the flow ends now, in both directions.
#[inline(always)]
pub fn remove(fwd: &FlowKey, reply: &FlowKey) {
    let _gone = FLOWS.remove(fwd).is_ok();
    let _gone = NAT.remove(reply).is_ok();
}

/// TCP FIN: the flow expires after the short closing timeout.
#[inline(always)]
pub fn closing(flow: Option<*mut FlowValue>) {
    if let Some(f) = flow {
        unsafe { (*f).flags |= flow_flags::CLOSING };
    }
}

/// Reply key for a forward key and its target.
#[inline(always)]
pub fn reply_key(key: &FlowKey, t: &Target) -> FlowKey {
    FlowKey {
        src: t.addr,
        dst: key.src,
        sport: t.port,
        dport: key.sport,
        proto: key.proto,
        family: key.family,
        _pad: [0; 2],
    }
}
