//! The connection table (`FLOWS`) as the daemon sees it: mapped into memory
//! ([`MappedArray`]) and walked whole, for reports and to end flows (those
//! of a removed VIP or a drained target). The program owns the table's
//! layout and writes every entry (lb_common::flow); the daemon only ever
//! frees entries, with a compare-and-swap of the word that holds their
//! state ([`FlowTable::purge`]).
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
        let victims = self.doomed(now_ns, doomed);
        self.free(&victims)
    }

    /// The live entries `doomed` picks, as read.
    fn doomed(&self, now_ns: u64, doomed: impl Fn(&FlowEntry) -> bool) -> Vec<(u32, FlowEntry)> {
        self.live(now_ns).filter(|(_, e)| doomed(e)).collect()
    }

    /// Frees each entry that still holds the flow it held when read; returns
    /// how many. The program may have re-used a slot for another flow
    /// meanwhile (the flow expired, or an unconfirmed one was displaced):
    /// that flow must stay. So, per slot: the word holding `last_seen` and
    /// `state` is read, then the entry, whose key, check and target must
    /// still be the victim's, then the word is swapped for one with state
    /// Free only if it did not change (compare-and-swap). A re-use in
    /// between writes `state` (first Free, then the new state) and
    /// `last_seen`, so the swap fails. What remains: a re-use that ends,
    /// between the read of the word and the swap, with the same `last_seen`
    /// tick (about 1 ms), state and flags as before, frees the new flow
    /// (which its client's next packet re-creates).
    fn free(&mut self, victims: &[(u32, FlowEntry)]) -> usize {
        let word = std::mem::offset_of!(FlowEntry, last_seen);
        // The state byte within the word (little-endian; see below).
        let state_shift = 8 * (std::mem::offset_of!(FlowEntry, state) - word);
        let mut freed = 0;
        for (i, victim) in victims {
            let Some(before) = self.0.read_word(*i, word) else {
                continue;
            };
            let Some(now) = self.0.read::<FlowEntry>(*i) else {
                continue;
            };
            let same = now.state != FlowState::Free as u8
                && now.key == victim.key
                && now.check == victim.check
                && (now.target_id, now.target_gen, now.vip_id)
                    == (victim.target_id, victim.target_gen, victim.vip_id);
            if !same {
                continue;
            }
            let free = (before & !(0xff << state_shift))
                | (u64::from(FlowState::Free as u8) << state_shift);
            if self.0.compare_exchange_word(*i, word, before, free) == Some(true) {
                freed += 1;
            }
        }
        freed
    }
}

// `free` finds the state byte by its offset in a little-endian word.
const _: () = assert!(cfg!(target_endian = "little"));

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

    /// A table of 8 slots with two live established flows: slot 1 of VIP
    /// port 80, slot 2 of VIP port 443.
    fn table() -> (FlowTable, u64) {
        let mut t = FlowTable(MappedArray::anonymous::<FlowEntry>(8));
        let now_ns = 1_000_000_000_000;
        t.0.write(1, flow(80, 1, now_ns));
        t.0.write(2, flow(443, 2, now_ns));
        (t, now_ns)
    }

    fn flow(vip_port: u16, client_port: u16, now_ns: u64) -> FlowEntry {
        FlowEntry {
            key: FlowKey {
                sport: client_port,
                dport: vip_port,
                proto: lb_common::PROTO_TCP,
                family: lb_common::FAMILY_V4,
                ..FlowKey::default()
            },
            target_id: 3,
            target_gen: 1,
            idle_timeout_s: 60,
            last_seen: ticks(now_ns),
            state: FlowState::Established as u8,
            check: 0x1234_5679 ^ u32::from(client_port),
            ..FlowEntry::default()
        }
    }

    fn of_port(port: u16) -> impl Fn(&FlowEntry) -> bool {
        move |e| e.key.dport == port
    }

    #[test]
    fn purge_frees_the_doomed_flows_only() {
        let (mut t, now) = table();
        assert_eq!(t.purge(now, of_port(80)), 1);
        assert_eq!(t.0.read::<FlowEntry>(1).unwrap().state(), FlowState::Free);
        let kept = t.0.read::<FlowEntry>(2).unwrap();
        assert_eq!(kept, flow(443, 2, now), "the other flow is untouched");
        let freed = t.0.read::<FlowEntry>(1).unwrap();
        assert_eq!(
            FlowEntry {
                state: FlowState::Established as u8,
                ..freed
            },
            flow(80, 1, now),
            "only the state byte changed"
        );
    }

    #[test]
    fn purge_keeps_a_flow_that_took_the_slot_after_the_scan() {
        let (mut t, now) = table();
        let victims = t.doomed(now, of_port(80));
        assert_eq!(victims.len(), 1);
        // The program re-uses slot 1 for another flow of the same VIP
        // between the scan and the free.
        let newcomer = FlowEntry {
            state: FlowState::Syn as u8,
            ..flow(80, 7, now + 5_000_000)
        };
        t.0.write(1, newcomer);
        assert_eq!(t.free(&victims), 0);
        assert_eq!(t.0.read::<FlowEntry>(1).unwrap(), newcomer);
        // Its refreshed timer alone does not save the victim.
        let (mut t, now) = table();
        let victims = t.doomed(now, of_port(80));
        t.0.write(
            1,
            FlowEntry {
                last_seen: ticks(now) + 2000,
                ..flow(80, 1, now)
            },
        );
        assert_eq!(t.free(&victims), 1);
        assert_eq!(t.0.read::<FlowEntry>(1).unwrap().state(), FlowState::Free);
    }

    #[test]
    fn capacity_rounds_up_to_a_power_of_two_of_sets() {
        assert_eq!(entries_for(1024), 1024);
        assert_eq!(entries_for(1025), 2048);
        assert_eq!(entries_for(262_144), 262_144);
        assert_eq!(entries_for(1_000_000), 1_048_576);
        assert_eq!(entries_for(1), FLOW_WAYS);
    }
}
