//! The decapsulation object embedded in `lb`, its pins and its maps.
//!
//! Everything lives under the pin directory: the maps by name
//! (`lb_common::decap::ALL`), the program as `lb_decap` and the
//! attachment as the bpf_link `link_<interface>`, so that the program keeps
//! running after the command exits and `detach` finds all of it.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::Xdp,
};
use lb_common::{
    VipAddrKey,
    decap::{self, DecapSaved, DecapStat, SAVED_MAGIC},
};

use super::{TargetError, saved};
use crate::{
    bpf::{
        bpffs::{self, Pins},
        loader::{self, AttachMode},
        pin,
    },
    net,
};

/// The object `cargo xtask build` makes beside the balancer's.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-decap.o"));

/// The loaded object over the pinned maps.
pub struct Decap {
    ebpf: Ebpf,
    pins: Pins,
}

/// Whether anything of `lb target` is pinned under `pin_dir`.
pub fn anything_pinned(pin_dir: &Path) -> bool {
    decap::ALL.iter().any(|m| pin_dir.join(m).exists())
        || saved::aside(&pin_dir.join(decap::SAVED)).exists()
        || !links(pin_dir).is_empty()
}

/// The interfaces with a pinned link under `pin_dir`, and the pins.
pub fn links(pin_dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(pin_dir) else {
        return Vec::new();
    };
    let mut found: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let interface = name.strip_prefix("link_")?.to_owned();
            Some((interface, e.path()))
        })
        .collect();
    found.sort();
    found
}

fn addr_key(ip: IpAddr) -> VipAddrKey {
    net::vip_addr_key(ip)
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> TargetError {
    move |source| TargetError::Map { map, source }
}

impl Decap {
    /// Loads the object with its maps from the pins under `pin_dir`
    /// (created and pinned when absent); the program is not loaded into
    /// the kernel until [`Decap::attach`].
    pub fn open(pin_dir: &Path) -> Result<Self, TargetError> {
        if OBJECT.is_empty() {
            return Err(TargetError::NoObject);
        }
        bpffs::prepare(pin_dir)?;
        let pins = Pins::new(pin_dir);
        let carried = saved::take_v1_saved(&pins.map(decap::SAVED))?;
        let paths: Vec<(&'static str, PathBuf)> =
            decap::ALL.iter().map(|m| (*m, pins.map(m))).collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let ebpf = loader.load(OBJECT)?;
        let mut decap = Self { ebpf, pins };
        if let Some(carried) = carried {
            // A block already in the new map (an earlier run wrote it and
            // failed before unpinning the old one) is the newer one.
            if let Some(block) = carried.block
                && decap.saved()?.magic != SAVED_MAGIC
            {
                decap.set_saved(block)?;
            }
            remove_pin(&carried.old_pin)?;
        }
        Ok(decap)
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, TargetError> {
        self.ebpf.map_mut(name).ok_or(TargetError::MissingMap(name))
    }

    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, TargetError> {
        self.ebpf.map(name).ok_or(TargetError::MissingMap(name))
    }

    fn saved_map(&mut self) -> Result<Array<&mut MapData, DecapSaved>, TargetError> {
        Array::try_from(self.map_mut(decap::SAVED)?).map_err(map_err(decap::SAVED))
    }

    /// What the first attach saved (`magic` 0: nothing yet).
    pub fn saved(&mut self) -> Result<DecapSaved, TargetError> {
        self.saved_map()?.get(&0, 0).map_err(map_err(decap::SAVED))
    }

    pub fn set_saved(&mut self, saved: DecapSaved) -> Result<(), TargetError> {
        self.saved_map()?
            .set(0, saved, 0)
            .map_err(map_err(decap::SAVED))
    }

    fn addr_map(
        &mut self,
        name: &'static str,
    ) -> Result<HashMap<&mut MapData, VipAddrKey, u32>, TargetError> {
        HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))
    }

    /// The entries of an address map: address and value.
    fn entries(&mut self, name: &'static str) -> Result<Vec<(IpAddr, u32)>, TargetError> {
        let map = self.addr_map(name)?;
        let mut out = Vec::new();
        for entry in map.iter() {
            let (k, v) = entry.map_err(map_err(name))?;
            if let Some(ip) = net::decode_addr(&k.addr, k.family) {
                out.push((ip, v));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The VIPs and where each came from (`decap::vip_origin`).
    pub fn vips(&mut self) -> Result<Vec<(IpAddr, u32)>, TargetError> {
        self.entries(decap::VIPS)
    }

    pub fn set_vip(&mut self, ip: IpAddr, origin: u32) -> Result<(), TargetError> {
        self.addr_map(decap::VIPS)?
            .insert(addr_key(ip), origin, 0)
            .map_err(map_err(decap::VIPS))
    }

    pub fn remove_vip(&mut self, ip: IpAddr) -> Result<(), TargetError> {
        self.addr_map(decap::VIPS)?
            .remove(&addr_key(ip))
            .map_err(map_err(decap::VIPS))
    }

    /// This host's addresses as the program knows them.
    pub fn local(&mut self) -> Result<Vec<IpAddr>, TargetError> {
        Ok(self
            .entries(decap::LOCAL)?
            .into_iter()
            .map(|(ip, _)| ip)
            .collect())
    }

    /// Makes `DECAP_LOCAL` hold exactly `addrs` (added first, then the
    /// others removed, so an address kept is never missing meanwhile).
    pub fn set_local(&mut self, addrs: &[IpAddr]) -> Result<(), TargetError> {
        let old = self.local()?;
        let mut map = self.addr_map(decap::LOCAL)?;
        for ip in addrs {
            map.insert(addr_key(*ip), 1, 0)
                .map_err(map_err(decap::LOCAL))?;
        }
        for ip in old.iter().filter(|ip| !addrs.contains(ip)) {
            map.remove(&addr_key(*ip)).map_err(map_err(decap::LOCAL))?;
        }
        Ok(())
    }

    /// The counters, summed over CPUs.
    pub fn stats(&self) -> Result<Vec<(DecapStat, u64)>, TargetError> {
        let m: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.map(decap::STATS)?).map_err(map_err(decap::STATS))?;
        DecapStat::ALL
            .iter()
            .map(|s| {
                let v = m.get(&(*s as u32), 0).map_err(map_err(decap::STATS))?;
                Ok((*s, v.iter().sum()))
            })
            .collect()
    }

    /// Attaches the program to `interface` and pins it. When a link is
    /// pinned for it already, the program in it stays if it is this
    /// version's (same tag), and is swapped for this version's otherwise
    /// (an older `lb`'s, which could not pass a chain on): the link, and
    /// with it the attachment, is never taken down.
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<Attached, TargetError> {
        let link = self.pins.link(interface);
        let prog_pin = self.pins.dir.join(decap::PROGRAM);
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(decap::PROGRAM)
            .ok_or(TargetError::Program {
                name: decap::PROGRAM,
                source: aya::programs::ProgramError::NotLoaded,
            })?
            .try_into()
            .map_err(|source| TargetError::Program {
                name: decap::PROGRAM,
                source,
            })?;
        prog.load().map_err(|source| TargetError::Program {
            name: decap::PROGRAM,
            source,
        })?;
        let attached = if link.exists() {
            let ours = prog.info().map_err(|source| TargetError::Program {
                name: decap::PROGRAM,
                source,
            })?;
            if pin::link_holds(&link, &prog_pin, ours.tag())? {
                return Ok(Attached::Already);
            }
            loader::replace_in_link(prog, interface, &link)?;
            Attached::Replaced
        } else {
            loader::attach_new(prog, interface, mode, &link)?;
            Attached::New
        };
        pin::replace_program_pin(&prog_pin, |path| prog.pin(path))?;
        Ok(attached)
    }
}

/// What [`Decap::attach`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// Attached where nothing was.
    New,
    /// Another program (an older `lb`'s) was in the pinned link: swapped.
    Replaced,
    /// This version's program was attached already: nothing changed.
    Already,
}

fn remove_pin(path: &Path) -> Result<(), TargetError> {
    std::fs::remove_file(path).map_err(|source| TargetError::Unpin {
        path: path.to_owned(),
        source,
    })
}

/// Detaches from every interface with a pinned link (the last reference
/// to the link goes, and with it the attachment).
pub fn unpin_links(pin_dir: &Path) -> Result<Vec<String>, TargetError> {
    let mut done = Vec::new();
    for (interface, path) in links(pin_dir) {
        pin::unpin_link(&path)?;
        done.push(format!("detached {} from {interface}", decap::PROGRAM));
    }
    Ok(done)
}

/// Removes the program's and the maps' pins, then the directory when
/// nothing else is in it.
pub fn unpin_rest(pin_dir: &Path) -> Result<(), TargetError> {
    for name in decap::ALL.iter().chain([&decap::PROGRAM]) {
        let path = pin_dir.join(name);
        if path.exists() {
            remove_pin(&path)?;
        }
    }
    let _empty_dir_removed = std::fs::remove_dir(pin_dir).is_ok();
    Ok(())
}
