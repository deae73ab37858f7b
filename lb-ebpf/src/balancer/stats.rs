//! Counter updates. Per-CPU maps, so plain adds are race-free.
use aya_ebpf::btf_maps::PerCpuArray;
use lb_common::{Counters, FlowCounters, Stat};

use super::maps::{FLOW_STATS, STATS, TARGET_STATS, VIP_STATS};

/// Runs `op` on this CPU's slot `index` of a per-CPU array.
#[inline(always)]
fn on_cpu<T, const N: usize>(map: &PerCpuArray<T, N>, index: u32, op: impl FnOnce(&mut T)) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: this CPU's copy of the slot, valid for the program's run
        // and written by no other CPU.
        op(unsafe { &mut *c });
    }
}

/// Counts a verdict.
#[inline(always)]
pub fn count(stat: Stat) {
    on_cpu(&STATS, stat as u32, |c| *c += 1);
}

/// Which direction of a flow a packet travels.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client -> target.
    In,
    /// Target -> client.
    Out,
}

#[inline(always)]
fn add(c: &mut Counters, dir: Dir, bytes: u64, new_flow: bool) {
    match dir {
        Dir::In => {
            c.packets_in += 1;
            c.bytes_in += bytes;
        }
        Dir::Out => {
            c.packets_out += 1;
            c.bytes_out += bytes;
        }
    }
    if new_flow {
        c.new_flows += 1;
    }
}

/// Counts a packet for its VIP and its target.
#[inline(always)]
pub fn traffic(vip_id: u32, target_id: u32, dir: Dir, bytes: u64, new_flow: bool) {
    on_cpu(&VIP_STATS, vip_id, |c| add(c, dir, bytes, new_flow));
    on_cpu(&TARGET_STATS, target_id, |c| add(c, dir, bytes, new_flow));
}

/// Counts on a VIP's connection-table counters.
#[inline(always)]
pub fn flows(vip_id: u32, op: impl FnOnce(&mut FlowCounters)) {
    on_cpu(&FLOW_STATS, vip_id, op);
}
