//! The `lb_probe_encap` object embedded in `lb`: loaded, attached to the
//! probe device's egress by a TCX link the daemon holds (so it goes when
//! the daemon goes), and its target map. Only its counters (`PROBE_STATS`)
//! are pinned, in the pin directory beside the XDP program's maps: `lb
//! stats` and `/metrics` read them there like the data path's, and they
//! survive restarts like those do (`lb down` unpins them).
use std::net::IpAddr;
use std::path::Path;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData},
    programs::{LinkOrder, SchedClassifier, TcAttachType, tc::TcAttachOptions},
};
use lb_common::{VipAddrKey, probe};

use super::ProbePathError;
use crate::{bpf::pin, net};

/// The object `cargo xtask build` makes beside the balancer's.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-probe.o"));

/// The loaded, attached program.
pub struct Program {
    ebpf: Ebpf,
}

impl Program {
    /// Loads the program, its counters pinned in `pin_dir` (reused when
    /// pinned already), and attaches it to `device`'s egress.
    pub fn attach(device: &str, pin_dir: &Path) -> Result<Self, ProbePathError> {
        if OBJECT.is_empty() {
            return Err(ProbePathError::NoObject);
        }
        let stats = pin_dir.join(probe::STATS);
        drop_stale(&stats)?;
        let mut ebpf = EbpfLoader::new()
            .map_pin_path(probe::STATS, &stats)
            .load(OBJECT)
            .map_err(|e| ProbePathError::Load(e.to_string()))?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut(probe::PROGRAM)
            .ok_or_else(|| ProbePathError::Load(format!("no program {}", probe::PROGRAM)))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| ProbePathError::Load(e.to_string()))?;
        prog.load()
            .map_err(|e| ProbePathError::Load(e.to_string()))?;
        prog.attach_with_options(
            device,
            TcAttachType::Egress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|e| ProbePathError::Attach {
            device: device.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self { ebpf })
    }

    fn targets(&mut self) -> Result<HashMap<&mut MapData, u32, VipAddrKey>, ProbePathError> {
        let map = self
            .ebpf
            .map_mut(probe::TARGETS)
            .ok_or_else(|| ProbePathError::Load(format!("no map {}", probe::TARGETS)))?;
        HashMap::try_from(map).map_err(|e| ProbePathError::Map(e.to_string()))
    }

    /// Names `ip` by `mark`.
    pub fn insert(&mut self, mark: u32, ip: IpAddr) -> Result<(), ProbePathError> {
        self.targets()?
            .insert(mark, net::vip_addr_key(ip), 0)
            .map_err(|e| ProbePathError::Map(e.to_string()))
    }

    /// Forgets `mark` (absent already is fine).
    pub fn remove(&mut self, mark: u32) -> Result<(), ProbePathError> {
        match self.targets()?.remove(&mark) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(ProbePathError::Map(e.to_string())),
        }
    }
}

/// Removes a pinned `PROBE_STATS` of another layout (an older `lb` with
/// fewer or more verdicts): its counts would be read under the wrong
/// names, and the loader could not reuse it.
fn drop_stale(path: &Path) -> Result<(), ProbePathError> {
    pin::unpin_map_unless(path, |m| {
        m.max_entries() == probe::PROBE_STAT_COUNT && m.value_size() as usize == size_of::<u64>()
    })
    .map(drop)
    .map_err(|e| ProbePathError::Map(format!("removing the stale pin {}: {e}", path.display())))
}
