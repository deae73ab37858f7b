//! Typed handles on the data path's maps, owned by the running daemon.
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use lb_common::{
    Counters, FlowCounters, FlowEntry, ReplyKey, ReplyTargets, Stat, Target, VipAddrKey, VipKey,
    VipMeta, maps,
};

use super::{
    flow_table::{FlowTable, FlowTableError, vip_of},
    ring_mmap::{RingMap, RingMapError},
};
use crate::{clock::monotonic_coarse_ns, state::DataPlane};

#[derive(Debug, thiserror::Error)]
pub enum KernelMapError {
    #[error("map {0} missing from the eBPF object")]
    Missing(&'static str),
    #[error(transparent)]
    Ring(#[from] RingMapError),
    #[error(transparent)]
    Flows(#[from] FlowTableError),
    #[error("counting possible CPUs: {0}")]
    Cpus(std::io::Error),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> KernelMapError {
    move |source| KernelMapError::Map { name, source }
}

/// The maps the control plane writes. Counters and flow tables are written
/// by the program only, and read through pins by `lb stats`.
pub struct KernelMaps {
    pub vips: HashMap<MapData, VipKey, VipMeta>,
    pub vip_addrs: HashMap<MapData, VipAddrKey, u32>,
    pub maglev: RingMap,
    pub targets: Array<MapData, Target>,
    pub ports: Array<MapData, u32>,
    pub vip_stats: PerCpuArray<MapData, Counters>,
    pub target_stats: PerCpuArray<MapData, Counters>,
    pub flow_stats: PerCpuArray<MapData, FlowCounters>,
    /// The verdict counters (`Stat`), read by the control loop's
    /// reply-check alarm.
    pub stats: PerCpuArray<MapData, u64>,
    pub replies: HashMap<MapData, ReplyKey, ReplyTargets>,
    /// Written by the program; the daemon only ends the flows of VIPs it
    /// removes and of drained targets (established flows are forwarded
    /// without a `VIPS` lookup).
    pub flows: FlowTable,
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, KernelMapError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(KernelMapError::Missing(name))?;
    T::try_from(map).map_err(map_err(name))
}

impl KernelMaps {
    pub fn new(ebpf: &mut Ebpf) -> Result<Self, KernelMapError> {
        Ok(Self {
            vips: take(ebpf, maps::VIPS)?,
            vip_addrs: take(ebpf, maps::VIP_ADDRS)?,
            maglev: RingMap::new(
                ebpf.take_map(maps::MAGLEV)
                    .ok_or(KernelMapError::Missing(maps::MAGLEV))?,
            )?,
            targets: take(ebpf, maps::TARGETS)?,
            ports: take(ebpf, maps::PORTS)?,
            vip_stats: take(ebpf, maps::VIP_STATS)?,
            target_stats: take(ebpf, maps::TARGET_STATS)?,
            flow_stats: take(ebpf, maps::FLOW_STATS)?,
            stats: take(ebpf, maps::STATS)?,
            replies: take(ebpf, maps::REPLIES)?,
            flows: FlowTable::new(
                ebpf.take_map(maps::FLOWS)
                    .ok_or(KernelMapError::Missing(maps::FLOWS))?,
            )?,
        })
    }
}

impl KernelMaps {
    /// A verdict's count, summed over CPUs; `None` if it cannot be read.
    pub fn stat(&self, stat: Stat) -> Option<u64> {
        self.stats
            .get(&(stat as u32), 0)
            .ok()
            .map(|values| values.iter().sum())
    }

    /// Ends the flows whose VIP matches `doomed`; returns how many.
    pub fn purge_flows(
        &mut self,
        doomed: impl Fn(&VipKey) -> bool,
    ) -> Result<usize, KernelMapError> {
        Ok(self
            .flows
            .purge(monotonic_coarse_ns(), |e| doomed(&vip_of(&e.key))))
    }

    /// Ends the flows pinned to any of `ids`: their drain is over. Returns
    /// how many.
    pub fn purge_target_flows(
        &mut self,
        ids: &std::collections::HashSet<u32>,
    ) -> Result<usize, KernelMapError> {
        Ok(self.flows.purge(monotonic_coarse_ns(), |e| {
            ids.contains(&u32::from(e.target_id))
        }))
    }

    /// Up to `limit` live flows, and how many live flows there are.
    pub fn sample_flows(&self, limit: usize) -> (u64, Vec<FlowEntry>) {
        let mut total = 0;
        let mut sample = Vec::new();
        for (_, e) in self.flows.live(monotonic_coarse_ns()) {
            total += 1;
            if sample.len() < limit {
                sample.push(e);
            }
        }
        (total, sample)
    }

    /// Deletes flows whose VIP is no longer in `VIPS` (a daemon that died
    /// between removing a VIP and purging its flows leaves some behind).
    pub fn purge_orphan_flows(&mut self) -> Result<usize, KernelMapError> {
        let live: std::collections::HashSet<VipKey> = self
            .vips
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err(maps::VIPS))?;
        self.purge_flows(|v| !live.contains(v))
    }
}

fn zeroed_per_cpu<T: aya::Pod + Default>() -> Result<PerCpuValues<T>, KernelMapError> {
    let cpus = nr_cpus().map_err(|(_, e)| KernelMapError::Cpus(e))?;
    PerCpuValues::try_from(vec![T::default(); cpus]).map_err(KernelMapError::Cpus)
}

impl DataPlane for KernelMaps {
    type Error = KernelMapError;

    fn set_target(&mut self, id: u32, t: &Target) -> Result<(), KernelMapError> {
        self.targets.set(id, *t, 0).map_err(map_err(maps::TARGETS))
    }

    fn write_ring(&mut self, slot: u32, ring: &[u32]) -> Result<(), KernelMapError> {
        Ok(self.maglev.write(slot, ring)?)
    }

    fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<(), KernelMapError> {
        self.vips.insert(key, meta, 0).map_err(map_err(maps::VIPS))
    }

    /// The VIP's flows are ended by `purge_orphan_flows` after the apply
    /// (one walk of the table for every VIP removed).
    fn remove_vip(&mut self, key: &VipKey) -> Result<(), KernelMapError> {
        self.vips.remove(key).map_err(map_err(maps::VIPS))
    }

    fn set_vip_addr(&mut self, key: &VipAddrKey) -> Result<(), KernelMapError> {
        self.vip_addrs
            .insert(key, 1, 0)
            .map_err(map_err(maps::VIP_ADDRS))
    }

    fn remove_vip_addr(&mut self, key: &VipAddrKey) -> Result<(), KernelMapError> {
        self.vip_addrs.remove(key).map_err(map_err(maps::VIP_ADDRS))
    }

    fn set_replies(&mut self, key: &ReplyKey, value: &ReplyTargets) -> Result<(), KernelMapError> {
        self.replies
            .insert(key, value, 0)
            .map_err(map_err(maps::REPLIES))
    }

    fn remove_replies(&mut self, key: &ReplyKey) -> Result<(), KernelMapError> {
        self.replies.remove(key).map_err(map_err(maps::REPLIES))
    }

    fn replies(&self) -> Result<Vec<(ReplyKey, ReplyTargets)>, KernelMapError> {
        self.replies
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(maps::REPLIES))
    }

    fn set_port_flags(&mut self, port: u16, flags: u32) -> Result<(), KernelMapError> {
        self.ports
            .set(port as u32, flags, 0)
            .map_err(map_err(maps::PORTS))
    }

    fn reset_vip_counters(&mut self, vip_id: u32) -> Result<(), KernelMapError> {
        self.vip_stats
            .set(vip_id, zeroed_per_cpu()?, 0)
            .map_err(map_err(maps::VIP_STATS))?;
        self.flow_stats
            .set(vip_id, zeroed_per_cpu()?, 0)
            .map_err(map_err(maps::FLOW_STATS))
    }

    fn reset_target_counters(&mut self, id: u32) -> Result<(), KernelMapError> {
        self.target_stats
            .set(id, zeroed_per_cpu()?, 0)
            .map_err(map_err(maps::TARGET_STATS))
    }

    fn vips(&self) -> Result<Vec<(VipKey, VipMeta)>, KernelMapError> {
        self.vips
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(maps::VIPS))
    }

    fn targets(&self) -> Result<Vec<(u32, Target)>, KernelMapError> {
        let mut out = Vec::new();
        for id in 0..self.targets.len() {
            let t = self.targets.get(&id, 0).map_err(map_err(maps::TARGETS))?;
            if t != Target::default() {
                out.push((id, t));
            }
        }
        Ok(out)
    }

    fn vip_addrs(&self) -> Result<Vec<VipAddrKey>, KernelMapError> {
        self.vip_addrs
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err(maps::VIP_ADDRS))
    }

    fn port_flags(&self) -> Result<Vec<(u16, u32)>, KernelMapError> {
        let mut out = Vec::new();
        for port in 0..self.ports.len() {
            let flags = self.ports.get(&port, 0).map_err(map_err(maps::PORTS))?;
            if flags != 0 {
                out.push((port as u16, flags));
            }
        }
        Ok(out)
    }

    fn read_ring(&self, slot: u32, size: u32) -> Result<Vec<u32>, KernelMapError> {
        self.maglev
            .read(slot, size as usize)
            .ok_or(KernelMapError::Ring(RingMapError::OutOfRange {
                slot,
                size: size as usize,
                entries: self.maglev.entries(),
            }))
    }
}
