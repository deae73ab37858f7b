//! Counter updates. Per-CPU maps, so plain adds are race-free.
use lb_common::{Counters, Stat};

use crate::maps::{STATS, TARGET_STATS, VIP_STATS};

#[inline(always)]
pub fn count(stat: Stat) {
    if let Some(c) = STATS.get_ptr_mut(stat as u32) {
        unsafe { *c += 1 };
    }
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
fn add(c: *mut Counters, dir: Dir, bytes: u64, new_flow: bool) {
    let c = unsafe { &mut *c };
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
    if let Some(c) = VIP_STATS.get_ptr_mut(vip_id) {
        add(c, dir, bytes, new_flow);
    }
    if let Some(c) = TARGET_STATS.get_ptr_mut(target_id) {
        add(c, dir, bytes, new_flow);
    }
}
