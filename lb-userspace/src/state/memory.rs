//! An in-memory [`DataPlane`]: the maps as collections, plus a log of every
//! write. Tests use the log to assert exactly which updates a change costs,
//! and [`MemoryPlane::pick`] to ask which target the data path would choose.

use std::collections::{BTreeMap, HashMap, HashSet};

use lb_common::{
    ReplyKey, ReplyTargets, Target, TargetState, VipAddrKey, VipKey, VipMeta, limits::RING_EMPTY,
};
use thiserror::Error;

use super::DataPlane;

/// One write, as logged by [`MemoryPlane`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    SetTarget {
        id: u32,
        target: Target,
    },
    WriteRing {
        slot: u32,
    },
    SetVip {
        key: VipKey,
        meta: VipMeta,
    },
    RemoveVip {
        key: VipKey,
    },
    SetVipAddr {
        key: VipAddrKey,
    },
    RemoveVipAddr {
        key: VipAddrKey,
    },
    SetReplies {
        key: ReplyKey,
        targets: ReplyTargets,
    },
    RemoveReplies {
        key: ReplyKey,
    },
    SetPortFlags {
        port: u16,
        flags: u32,
    },
    ResetVipCounters {
        vip_id: u32,
    },
    ResetTargetCounters {
        id: u32,
    },
}

/// Returned by the write chosen with [`MemoryPlane::fail_at`].
#[derive(Debug, Error, PartialEq, Eq)]
#[error("injected failure at write {0}")]
pub struct InjectedFailure(pub usize);

#[derive(Debug, Clone, Default)]
pub struct MemoryPlane {
    pub targets: BTreeMap<u32, Target>,
    pub rings: BTreeMap<u32, Vec<u32>>,
    pub vips: HashMap<VipKey, VipMeta>,
    pub vip_addrs: HashSet<VipAddrKey>,
    pub ports: BTreeMap<u16, u32>,
    pub replies: HashMap<ReplyKey, ReplyTargets>,
    /// Every successful write since the last [`MemoryPlane::take_ops`].
    pub ops: Vec<Op>,
    /// Fail the write that would become `ops[n]` (and leave the maps as they
    /// were), to test recovery from errors half-way through an apply.
    pub fail_at: Option<usize>,
}

impl MemoryPlane {
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns and clears the write log.
    pub fn take_ops(&mut self) -> Vec<Op> {
        std::mem::take(&mut self.ops)
    }

    /// The target id the data path would give a new flow of `vip` whose hash
    /// is `hash`: `None` for an unknown VIP, an empty slot or a target that
    /// is not Active (all of which the data path drops or passes).
    pub fn pick(&self, vip: &VipKey, hash: u32) -> Option<u32> {
        let meta = self.vips.get(vip)?;
        let ring = self.rings.get(&meta.ring_slot)?;
        let id = *ring.get((hash % meta.ring_size) as usize)?;
        let target = self.targets.get(&id)?;
        (id != RING_EMPTY && target.state == TargetState::Active as u8).then_some(id)
    }

    fn log(&mut self, op: Op) -> Result<(), InjectedFailure> {
        if self.fail_at == Some(self.ops.len()) {
            self.fail_at = None;
            return Err(InjectedFailure(self.ops.len()));
        }
        self.ops.push(op);
        Ok(())
    }
}

impl DataPlane for MemoryPlane {
    type Error = InjectedFailure;

    fn set_target(&mut self, id: u32, target: &Target) -> Result<(), Self::Error> {
        self.log(Op::SetTarget {
            id,
            target: *target,
        })?;
        self.targets.insert(id, *target);
        Ok(())
    }

    fn write_ring(&mut self, slot: u32, ring: &[u32]) -> Result<(), Self::Error> {
        self.log(Op::WriteRing { slot })?;
        self.rings.insert(slot, ring.to_vec());
        Ok(())
    }

    fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<(), Self::Error> {
        self.log(Op::SetVip {
            key: *key,
            meta: *meta,
        })?;
        self.vips.insert(*key, *meta);
        Ok(())
    }

    fn remove_vip(&mut self, key: &VipKey) -> Result<(), Self::Error> {
        self.log(Op::RemoveVip { key: *key })?;
        self.vips.remove(key);
        Ok(())
    }

    fn set_vip_addr(&mut self, key: &VipAddrKey) -> Result<(), Self::Error> {
        self.log(Op::SetVipAddr { key: *key })?;
        self.vip_addrs.insert(*key);
        Ok(())
    }

    fn remove_vip_addr(&mut self, key: &VipAddrKey) -> Result<(), Self::Error> {
        self.log(Op::RemoveVipAddr { key: *key })?;
        self.vip_addrs.remove(key);
        Ok(())
    }

    fn set_replies(&mut self, key: &ReplyKey, targets: &ReplyTargets) -> Result<(), Self::Error> {
        self.log(Op::SetReplies {
            key: *key,
            targets: *targets,
        })?;
        self.replies.insert(*key, *targets);
        Ok(())
    }

    fn remove_replies(&mut self, key: &ReplyKey) -> Result<(), Self::Error> {
        self.log(Op::RemoveReplies { key: *key })?;
        self.replies.remove(key);
        Ok(())
    }

    fn set_port_flags(&mut self, port: u16, flags: u32) -> Result<(), Self::Error> {
        self.log(Op::SetPortFlags { port, flags })?;
        if flags == 0 {
            self.ports.remove(&port);
        } else {
            self.ports.insert(port, flags);
        }
        Ok(())
    }

    fn reset_vip_counters(&mut self, vip_id: u32) -> Result<(), Self::Error> {
        self.log(Op::ResetVipCounters { vip_id })
    }

    fn reset_target_counters(&mut self, id: u32) -> Result<(), Self::Error> {
        self.log(Op::ResetTargetCounters { id })
    }

    fn vips(&self) -> Result<Vec<(VipKey, VipMeta)>, Self::Error> {
        Ok(self.vips.iter().map(|(k, m)| (*k, *m)).collect())
    }

    fn targets(&self) -> Result<Vec<(u32, Target)>, Self::Error> {
        Ok(self.targets.iter().map(|(id, t)| (*id, *t)).collect())
    }

    fn vip_addrs(&self) -> Result<Vec<VipAddrKey>, Self::Error> {
        Ok(self.vip_addrs.iter().copied().collect())
    }

    fn replies(&self) -> Result<Vec<(ReplyKey, ReplyTargets)>, Self::Error> {
        Ok(self.replies.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn port_flags(&self) -> Result<Vec<(u16, u32)>, Self::Error> {
        Ok(self.ports.iter().map(|(p, f)| (*p, *f)).collect())
    }

    fn read_ring(&self, slot: u32, size: u32) -> Result<Vec<u32>, Self::Error> {
        // An array map's never-written entries read as zeroes.
        let mut ring = self.rings.get(&slot).cloned().unwrap_or_default();
        ring.resize(size as usize, 0);
        Ok(ring)
    }
}
