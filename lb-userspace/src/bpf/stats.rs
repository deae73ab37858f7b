//! Reads counters and state from the pinned maps (used by `lb stats`, which
//! runs beside the daemon and needs no program of its own).
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues};
use lb_common::{
    Counters, FlowCounters, Stat, Target, TargetState, VipKey, VipMeta, maps,
    probe::{self, ProbeStat},
};

use super::{
    bpffs::Pins,
    flow_table::{FlowTable, FlowTableError},
};

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("reading pinned map {path}: {source}")]
    Map { path: PathBuf, source: MapError },
    #[error(transparent)]
    Flows(#[from] FlowTableError),
}

/// A point-in-time view of the data path, summed over CPUs.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub stats: Vec<(Stat, u64)>,
    pub vips: Vec<(VipKey, VipMeta, Counters)>,
    pub targets: Vec<(u32, Target, Counters)>,
    /// Connection-table counters by VIP id.
    pub vip_flows: BTreeMap<u32, FlowCounters>,
    /// Slots of the connection table.
    pub flow_capacity: u32,
    /// Flows in the table not idle past their timeout (what the data path
    /// would still follow, target permitting), confirmed or not.
    pub active_flows: u64,
    /// Of those, not confirmed yet (handshake or first reply not seen).
    pub embryonic_flows: u64,
    /// The dsr probe program's verdicts (`lb_probe_encap`), every one; empty
    /// when it never ran with these pins (no probe went through a VIP).
    pub probes: Vec<(ProbeStat, u64)>,
}

fn open(pins: &Pins, name: &str) -> Result<MapData, StatsError> {
    let path = pins.map(name);
    MapData::from_pin(&path).map_err(|source| StatsError::Map { path, source })
}

fn err(pins: &Pins, name: &str) -> impl Fn(MapError) -> StatsError {
    let path = pins.map(name);
    move |source| StatsError::Map {
        path: path.clone(),
        source,
    }
}

fn sum(values: &PerCpuValues<Counters>) -> Counters {
    let mut total = Counters::default();
    for v in values.iter() {
        total.add(v);
    }
    total
}

fn sum_flows(values: &PerCpuValues<FlowCounters>) -> FlowCounters {
    let mut total = FlowCounters::default();
    for v in values.iter() {
        total.add(v);
    }
    total
}

pub fn snapshot(pin_dir: &Path) -> Result<Snapshot, StatsError> {
    let pins = Pins::new(pin_dir);
    let mut snap = Snapshot::default();

    let stats: PerCpuArray<_, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(open(&pins, maps::STATS)?))
            .map_err(err(&pins, maps::STATS))?;
    for stat in Stat::ALL {
        let count = match stats.get(&(stat as u32), 0) {
            Ok(values) => values.iter().sum(),
            // Pinned by an older version, which had no such verdict (until
            // this version's `lb run` makes the map anew: loader).
            Err(MapError::OutOfBounds { .. }) => 0,
            Err(e) => return Err(err(&pins, maps::STATS)(e)),
        };
        snap.stats.push((stat, count));
    }

    let vip_stats: PerCpuArray<_, Counters> =
        PerCpuArray::try_from(Map::PerCpuArray(open(&pins, maps::VIP_STATS)?))
            .map_err(err(&pins, maps::VIP_STATS))?;
    let flow_stats: PerCpuArray<_, FlowCounters> =
        PerCpuArray::try_from(Map::PerCpuArray(open(&pins, maps::FLOW_STATS)?))
            .map_err(err(&pins, maps::FLOW_STATS))?;
    let vips: HashMap<_, VipKey, VipMeta> =
        HashMap::try_from(Map::HashMap(open(&pins, maps::VIPS)?))
            .map_err(err(&pins, maps::VIPS))?;
    for entry in vips.iter() {
        let (key, meta) = entry.map_err(err(&pins, maps::VIPS))?;
        let c = vip_stats
            .get(&meta.vip_id, 0)
            .map_err(err(&pins, maps::VIP_STATS))?;
        snap.vips.push((key, meta, sum(&c)));
        let f = flow_stats
            .get(&meta.vip_id, 0)
            .map_err(err(&pins, maps::FLOW_STATS))?;
        snap.vip_flows.insert(meta.vip_id, sum_flows(&f));
    }
    snap.vips.sort_by_key(|(_, m, _)| m.vip_id);

    let target_stats: PerCpuArray<_, Counters> =
        PerCpuArray::try_from(Map::PerCpuArray(open(&pins, maps::TARGET_STATS)?))
            .map_err(err(&pins, maps::TARGET_STATS))?;
    let targets: Array<_, Target> = Array::try_from(Map::Array(open(&pins, maps::TARGETS)?))
        .map_err(err(&pins, maps::TARGETS))?;
    for id in 0..targets.len() {
        let t = targets.get(&id, 0).map_err(err(&pins, maps::TARGETS))?;
        if TargetState::from_u8(t.state) == TargetState::Unused {
            continue;
        }
        let c = target_stats
            .get(&id, 0)
            .map_err(err(&pins, maps::TARGET_STATS))?;
        snap.targets.push((id, t, sum(&c)));
    }

    let flows = FlowTable::open_pinned(&pins.map(maps::FLOWS))?;
    let occupancy = flows.occupancy(crate::clock::monotonic_coarse_ns());
    snap.flow_capacity = occupancy.capacity;
    snap.active_flows = occupancy.live();
    snap.embryonic_flows = occupancy.embryonic;
    snap.probes = probe_stats(&pins)?;
    Ok(snap)
}

/// The pinned `PROBE_STATS` summed over CPUs, or nothing when not pinned.
fn probe_stats(pins: &Pins) -> Result<Vec<(ProbeStat, u64)>, StatsError> {
    if !pins.map(probe::STATS).exists() {
        return Ok(Vec::new());
    }
    let stats: PerCpuArray<_, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(open(pins, probe::STATS)?))
            .map_err(err(pins, probe::STATS))?;
    ProbeStat::ALL
        .into_iter()
        .map(|stat| {
            let values = stats
                .get(&(stat as u32), 0)
                .map_err(err(pins, probe::STATS))?;
            Ok((stat, values.iter().sum()))
        })
        .collect()
}
