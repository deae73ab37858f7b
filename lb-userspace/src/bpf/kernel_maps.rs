//! Typed handles on the data path's maps, owned by the running daemon.
use super::ring_mmap::{RingMap, RingMapError};
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use lb_common::{
    Counters, FlowKey, FlowValue, NatKey, NatValue, Target, VipAddrKey, VipKey, VipMeta, maps,
};

use crate::state::DataPlane;

#[derive(Debug, thiserror::Error)]
pub enum KernelMapError {
    #[error("map {0} missing from the eBPF object")]
    Missing(&'static str),
    #[error(transparent)]
    Ring(#[from] RingMapError),
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
    /// Written by the program; the daemon only deletes the flows of VIPs it
    /// removes (established flows are forwarded without a `VIPS` lookup).
    pub flows: HashMap<MapData, FlowKey, FlowValue>,
    pub nat: HashMap<MapData, NatKey, NatValue>,
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
            flows: take(ebpf, maps::FLOWS)?,
            nat: take(ebpf, maps::NAT)?,
        })
    }
}

/// The VIP a client flow is addressed to.
fn vip_of(k: &FlowKey) -> VipKey {
    VipKey {
        addr: k.dst,
        port: k.dport,
        proto: k.proto,
        family: k.family,
    }
}

impl KernelMaps {
    /// Deletes the flows (both directions) whose VIP matches `doomed`.
    /// Returns how many client flows went. Entries the program evicts while
    /// we iterate are simply not found.
    pub fn purge_flows(
        &mut self,
        doomed: impl Fn(&VipKey) -> bool,
    ) -> Result<usize, KernelMapError> {
        let keys: Vec<FlowKey> = self
            .flows
            .keys()
            .filter_map(Result::ok)
            .filter(|k| doomed(&vip_of(k)))
            .collect();
        let replies: Vec<NatKey> = self
            .nat
            .iter()
            .filter_map(Result::ok)
            .filter(|(reply, nat)| {
                doomed(&VipKey {
                    addr: nat.vip_addr,
                    port: nat.vip_port,
                    proto: reply.proto,
                    family: reply.family,
                })
            })
            .map(|(reply, _)| reply)
            .collect();
        self.delete_flows(&keys, &replies);
        Ok(keys.len())
    }

    /// Deletes the flows (both directions) pinned to any of `ids`: their
    /// drain is over. Returns how many client flows went.
    pub fn purge_target_flows(
        &mut self,
        ids: &std::collections::HashSet<u32>,
    ) -> Result<usize, KernelMapError> {
        let keys: Vec<FlowKey> = self
            .flows
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| ids.contains(&v.target_id))
            .map(|(k, _)| k)
            .collect();
        let replies: Vec<NatKey> = self
            .nat
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, nat)| ids.contains(&nat.target_id))
            .map(|(reply, _)| reply)
            .collect();
        self.delete_flows(&keys, &replies);
        Ok(keys.len())
    }

    /// Deletes client flows and reply entries; entries the program evicted
    /// meanwhile are simply not found.
    fn delete_flows(&mut self, keys: &[FlowKey], replies: &[NatKey]) {
        for k in keys {
            let _gone = self.flows.remove(k).is_ok();
        }
        for k in replies {
            let _gone = self.nat.remove(k).is_ok();
        }
    }

    /// Up to `limit` client flows with their values, and the table's size.
    pub fn sample_flows(&self, limit: usize) -> (u64, Vec<(FlowKey, FlowValue)>) {
        let mut total = 0;
        let mut sample = Vec::new();
        for (k, v) in self.flows.iter().filter_map(Result::ok) {
            total += 1;
            if sample.len() < limit {
                sample.push((k, v));
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

fn zeroed_per_cpu() -> Result<PerCpuValues<Counters>, KernelMapError> {
    let cpus = nr_cpus().map_err(|(_, e)| KernelMapError::Cpus(e))?;
    PerCpuValues::try_from(vec![Counters::default(); cpus]).map_err(KernelMapError::Cpus)
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

    fn remove_vip(&mut self, key: &VipKey) -> Result<(), KernelMapError> {
        self.vips.remove(key).map_err(map_err(maps::VIPS))?;
        let vip = *key;
        self.purge_flows(|v| *v == vip)?;
        Ok(())
    }

    fn set_vip_addr(&mut self, key: &VipAddrKey) -> Result<(), KernelMapError> {
        self.vip_addrs
            .insert(key, 1, 0)
            .map_err(map_err(maps::VIP_ADDRS))
    }

    fn remove_vip_addr(&mut self, key: &VipAddrKey) -> Result<(), KernelMapError> {
        self.vip_addrs.remove(key).map_err(map_err(maps::VIP_ADDRS))
    }

    fn set_port_flags(&mut self, port: u16, flags: u32) -> Result<(), KernelMapError> {
        self.ports
            .set(port as u32, flags, 0)
            .map_err(map_err(maps::PORTS))
    }

    fn reset_vip_counters(&mut self, vip_id: u32) -> Result<(), KernelMapError> {
        self.vip_stats
            .set(vip_id, zeroed_per_cpu()?, 0)
            .map_err(map_err(maps::VIP_STATS))
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
