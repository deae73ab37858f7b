//! Typed handles on the data path's maps, owned by the running daemon.
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, MapError},
};
use super::ring_mmap::{RingMap, RingMapError};
use lb_common::{Target, VipAddrKey, VipKey, VipMeta, maps};

#[derive(Debug, thiserror::Error)]
pub enum KernelMapError {
    #[error("map {0} missing from the eBPF object")]
    Missing(&'static str),
    #[error(transparent)]
    Ring(#[from] RingMapError),
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
        })
    }

    pub fn set_target(&mut self, id: u32, t: &Target) -> Result<(), KernelMapError> {
        self.targets.set(id, *t, 0).map_err(map_err(maps::TARGETS))
    }

    /// Writes a whole ring into `slot` (the caller makes sure it is not live).
    pub fn write_ring(&mut self, slot: u32, ring: &[u32]) -> Result<(), KernelMapError> {
        Ok(self.maglev.write(slot, ring)?)
    }

    pub fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<(), KernelMapError> {
        self.vips.insert(key, meta, 0).map_err(map_err(maps::VIPS))
    }

    pub fn remove_vip(&mut self, key: &VipKey) -> Result<(), KernelMapError> {
        self.vips.remove(key).map_err(map_err(maps::VIPS))
    }

    pub fn set_vip_addr(&mut self, key: &VipAddrKey) -> Result<(), KernelMapError> {
        self.vip_addrs
            .insert(key, 1, 0)
            .map_err(map_err(maps::VIP_ADDRS))
    }

    pub fn remove_vip_addr(&mut self, key: &VipAddrKey) -> Result<(), KernelMapError> {
        self.vip_addrs.remove(key).map_err(map_err(maps::VIP_ADDRS))
    }

    pub fn set_port_flags(&mut self, port: u16, flags: u32) -> Result<(), KernelMapError> {
        self.ports
            .set(port as u32, flags, 0)
            .map_err(map_err(maps::PORTS))
    }

    pub fn vips(&self) -> Result<Vec<(VipKey, VipMeta)>, KernelMapError> {
        self.vips
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(maps::VIPS))
    }

    pub fn targets(&self) -> Result<Vec<(u32, Target)>, KernelMapError> {
        (0..self.targets.len())
            .map(|id| self.targets.get(&id, 0).map(|t| (id, t)))
            .collect::<Result<_, _>>()
            .map_err(map_err(maps::TARGETS))
    }
}
