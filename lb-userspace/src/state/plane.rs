//! The map operations the reconciler needs, as a trait: implemented over aya
//! maps by the loader, and by [`MemoryPlane`](super::MemoryPlane) in tests.

use lb_common::{ReplyKey, ReplyTargets, Target, VipAddrKey, VipKey, VipMeta};

/// Writes and reads of the data path's maps. Each write is one map update,
/// so the data path sees every call's effect atomically; the order of calls
/// is the reconciler's business (see the [module docs](super)).
pub trait DataPlane {
    type Error: std::error::Error + Send + Sync + 'static;

    /// `TARGETS[id] = target`.
    fn set_target(&mut self, id: u32, target: &Target) -> Result<(), Self::Error>;
    /// `MAGLEV[slot * ring.len() ..][..ring.len()] = ring`: one whole table
    /// into ring slot `slot`.
    fn write_ring(&mut self, slot: u32, ring: &[u32]) -> Result<(), Self::Error>;
    /// `VIPS[key] = meta` (insert or replace).
    fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<(), Self::Error>;
    /// Deletes `VIPS[key]`.
    fn remove_vip(&mut self, key: &VipKey) -> Result<(), Self::Error>;
    /// Inserts `VIP_ADDRS[key]` (value 1).
    fn set_vip_addr(&mut self, key: &VipAddrKey) -> Result<(), Self::Error>;
    /// Deletes `VIP_ADDRS[key]`.
    fn remove_vip_addr(&mut self, key: &VipAddrKey) -> Result<(), Self::Error>;
    /// `REPLIES[key] = targets` (insert or replace).
    fn set_replies(&mut self, key: &ReplyKey, targets: &ReplyTargets) -> Result<(), Self::Error>;
    /// Deletes `REPLIES[key]`.
    fn remove_replies(&mut self, key: &ReplyKey) -> Result<(), Self::Error>;
    /// `PORTS[port] = flags` (`port` in host byte order; 0 clears).
    fn set_port_flags(&mut self, port: u16, flags: u32) -> Result<(), Self::Error>;
    /// Zeroes `VIP_STATS[vip_id]` on every CPU: the id has a new owner.
    fn reset_vip_counters(&mut self, vip_id: u32) -> Result<(), Self::Error>;
    /// Zeroes `TARGET_STATS[id]` on every CPU: the id has a new owner.
    fn reset_target_counters(&mut self, id: u32) -> Result<(), Self::Error>;

    /// Every `VIPS` entry.
    fn vips(&self) -> Result<Vec<(VipKey, VipMeta)>, Self::Error>;
    /// Every `TARGETS` entry that is not all zeroes (a never-used id), Unused
    /// ones included: their generation must survive restarts.
    fn targets(&self) -> Result<Vec<(u32, Target)>, Self::Error>;
    /// Every `VIP_ADDRS` key.
    fn vip_addrs(&self) -> Result<Vec<VipAddrKey>, Self::Error>;
    /// Every `REPLIES` entry.
    fn replies(&self) -> Result<Vec<(ReplyKey, ReplyTargets)>, Self::Error>;
    /// Every non-zero `PORTS` entry as (port in host byte order, flags).
    fn port_flags(&self) -> Result<Vec<(u16, u32)>, Self::Error>;
    /// The `size` entries of ring slot `slot`.
    fn read_ring(&self, slot: u32, size: u32) -> Result<Vec<u32>, Self::Error>;
}
