//! Reads counters and state from the pinned maps (used by `lb stats`, which
//! runs beside the daemon and needs no program of its own).
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues};
use lb_common::{
    Counters, FlowKey, FlowValue, Stat, Target, TargetState, VipKey, VipMeta, flow::flow_flags,
    limits::TCP_CLOSING_TIMEOUT_S, maps,
};

use super::bpffs::Pins;

#[derive(Debug, thiserror::Error)]
#[error("reading pinned map {path}: {source}")]
pub struct StatsError {
    path: PathBuf,
    source: MapError,
}

/// A point-in-time view of the data path, summed over CPUs.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub stats: Vec<(Stat, u64)>,
    pub vips: Vec<(VipKey, VipMeta, Counters)>,
    pub targets: Vec<(u32, Target, Counters)>,
    /// Entries in the connection table.
    pub flow_entries: u64,
    /// Of those, flows not idle past their timeout (what the data path
    /// would still follow, target permitting).
    pub active_flows: u64,
}

fn open(pins: &Pins, name: &str) -> Result<MapData, StatsError> {
    let path = pins.map(name);
    MapData::from_pin(&path).map_err(|source| StatsError { path, source })
}

fn err(pins: &Pins, name: &str) -> impl Fn(MapError) -> StatsError {
    let path = pins.map(name);
    move |source| StatsError {
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

/// The clock the data path stamps flows with (`bpf_ktime_get_coarse_ns`).
pub(crate) fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Mirrors the data path's idle check (lb-ebpf `flow::established`).
pub(crate) fn is_active(flow: &FlowValue, now: u64) -> bool {
    let timeout_s = if flow.flags & flow_flags::CLOSING != 0 {
        TCP_CLOSING_TIMEOUT_S
    } else {
        flow.idle_timeout_s
    };
    now.saturating_sub(flow.last_seen_ns) <= u64::from(timeout_s) * 1_000_000_000
}

pub fn snapshot(pin_dir: &Path) -> Result<Snapshot, StatsError> {
    let pins = Pins::new(pin_dir);
    let mut snap = Snapshot::default();

    let stats: PerCpuArray<_, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(open(&pins, maps::STATS)?))
            .map_err(err(&pins, maps::STATS))?;
    for stat in Stat::ALL {
        let values = stats
            .get(&(stat as u32), 0)
            .map_err(err(&pins, maps::STATS))?;
        snap.stats.push((stat, values.iter().sum()));
    }

    let vip_stats: PerCpuArray<_, Counters> =
        PerCpuArray::try_from(Map::PerCpuArray(open(&pins, maps::VIP_STATS)?))
            .map_err(err(&pins, maps::VIP_STATS))?;
    let vips: HashMap<_, VipKey, VipMeta> =
        HashMap::try_from(Map::HashMap(open(&pins, maps::VIPS)?))
            .map_err(err(&pins, maps::VIPS))?;
    for entry in vips.iter() {
        let (key, meta) = entry.map_err(err(&pins, maps::VIPS))?;
        let c = vip_stats
            .get(&meta.vip_id, 0)
            .map_err(err(&pins, maps::VIP_STATS))?;
        snap.vips.push((key, meta, sum(&c)));
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

    let flows: HashMap<_, FlowKey, FlowValue> =
        HashMap::try_from(Map::LruHashMap(open(&pins, maps::FLOWS)?))
            .map_err(err(&pins, maps::FLOWS))?;
    let now = monotonic_coarse_ns();
    for (_, flow) in flows.iter().filter_map(Result::ok) {
        snap.flow_entries += 1;
        if is_active(&flow, now) {
            snap.active_flows += 1;
        }
    }
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(last_seen_ns: u64, idle_timeout_s: u32, flags: u32) -> FlowValue {
        FlowValue {
            last_seen_ns,
            idle_timeout_s,
            flags,
            ..FlowValue::default()
        }
    }

    #[test]
    fn active_means_within_the_flows_own_timeout() {
        let now = 1_000_000_000_000;
        assert!(is_active(&flow(now - 349_000_000_000, 350, 0), now));
        assert!(!is_active(&flow(now - 351_000_000_000, 350, 0), now));
        // A FIN shortens it to the closing timeout.
        assert!(!is_active(
            &flow(now - 11_000_000_000, 350, flow_flags::CLOSING),
            now
        ));
        assert!(is_active(
            &flow(now - 9_000_000_000, 350, flow_flags::CLOSING),
            now
        ));
    }
}
