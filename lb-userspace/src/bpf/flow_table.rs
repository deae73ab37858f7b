//! The connection table (`FLOWS`) as the daemon sees it: mapped into memory
//! ([`MappedArray`]) and walked whole, for reports and to end flows (those
//! of a removed VIP or a drained target). The program owns the table's
//! layout and writes every entry (lb_common::flow); the daemon only ever
//! frees entries, with a single store of their state.
use std::path::Path;

use aya::maps::{Map, MapData, MapError};
use lb_common::{
    FlowEntry, FlowKey, FlowState, VipKey,
    flow::{FLOW_WAYS, ticks},
    maps,
};

use super::mmap::{MappedArray, MmapError};

#[derive(Debug, thiserror::Error)]
pub enum FlowTableError {
    #[error(transparent)]
    Map(#[from] MmapError),
    #[error("opening pinned {path}: {source}")]
    Pin {
        path: std::path::PathBuf,
        source: MapError,
    },
}

/// Entries the table holds for a configured capacity: a power of two number
/// of sets of `FLOW_WAYS` (the program indexes sets with a mask).
pub fn entries_for(capacity: u32) -> u32 {
    capacity.div_ceil(FLOW_WAYS).next_power_of_two() * FLOW_WAYS
}

/// What the table holds right now.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Occupancy {
    /// Slots in the table.
    pub capacity: u32,
    /// Live confirmed flows.
    pub established: u64,
    /// Live unconfirmed flows (handshake or first reply not seen yet).
    pub embryonic: u64,
}

impl Occupancy {
    pub fn live(&self) -> u64 {
        self.established + self.embryonic
    }
}

pub struct FlowTable(MappedArray);

impl FlowTable {
    /// The table of a loaded program (read-write: the daemon ends flows).
    pub fn new(map: Map) -> Result<Self, FlowTableError> {
        Ok(Self(MappedArray::new::<FlowEntry>(maps::FLOWS, map, true)?))
    }

    /// The pinned table, read-only (`lb stats` beside a running daemon).
    pub fn open_pinned(path: &Path) -> Result<Self, FlowTableError> {
        let data = MapData::from_pin(path).map_err(|source| FlowTableError::Pin {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self(MappedArray::new::<FlowEntry>(
            maps::FLOWS,
            Map::Array(data),
            false,
        )?))
    }

    pub fn capacity(&self) -> u32 {
        self.0.entries()
    }

    /// Every live entry (not free, not expired at `now`), with its index.
    /// The program writes the table meanwhile: an entry it rewrote during
    /// the copy may be a mix, which reports tolerate.
    pub fn live(&self, now_ns: u64) -> impl Iterator<Item = (u32, FlowEntry)> + '_ {
        let now = ticks(now_ns);
        (0..self.capacity())
            .filter_map(|i| Some((i, self.0.read::<FlowEntry>(i)?)))
            .filter(move |(_, e)| !e.expired(now))
    }

    /// Counts of live entries by kind.
    pub fn occupancy(&self, now_ns: u64) -> Occupancy {
        let mut o = Occupancy {
            capacity: self.capacity(),
            ..Occupancy::default()
        };
        for (_, e) in self.live(now_ns) {
            if e.state().is_embryonic() {
                o.embryonic += 1;
            } else {
                o.established += 1;
            }
        }
        o
    }

    /// Frees every live entry `doomed` picks; returns how many.
    pub fn purge(&mut self, now_ns: u64, doomed: impl Fn(&FlowEntry) -> bool) -> usize {
        let victims: Vec<u32> = self
            .live(now_ns)
            .filter(|(_, e)| doomed(e))
            .map(|(i, _)| i)
            .collect();
        for &i in &victims {
            self.0.write_field(
                i,
                std::mem::offset_of!(FlowEntry, state),
                FlowState::Free as u8,
            );
        }
        victims.len()
    }
}

/// The VIP a flow is addressed to.
pub fn vip_of(k: &FlowKey) -> VipKey {
    VipKey {
        addr: k.dst,
        port: k.dport,
        proto: k.proto,
        family: k.family,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_rounds_up_to_a_power_of_two_of_sets() {
        assert_eq!(entries_for(1024), 1024);
        assert_eq!(entries_for(1025), 2048);
        assert_eq!(entries_for(262_144), 262_144);
        assert_eq!(entries_for(1_000_000), 1_048_576);
        assert_eq!(entries_for(1), FLOW_WAYS);
    }
}
