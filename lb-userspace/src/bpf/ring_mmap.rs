//! The Maglev ring map, mapped into our memory ([`MappedArray`]): writing a
//! 65537-slot table is a loop of stores, not 65537 `bpf(MAP_UPDATE_ELEM)`
//! calls.
use aya::maps::Map;
use lb_common::maps;

use super::mmap::{MappedArray, MmapError};

#[derive(Debug, thiserror::Error)]
pub enum RingMapError {
    #[error(transparent)]
    Map(#[from] MmapError),
    #[error("ring slot {slot} of {size} entries is outside MAGLEV ({entries} entries)")]
    OutOfRange {
        slot: u32,
        size: usize,
        entries: u32,
    },
}

pub struct RingMap(MappedArray);

impl RingMap {
    pub fn new(map: Map) -> Result<Self, RingMapError> {
        Ok(Self(MappedArray::new::<u32>(maps::MAGLEV, map, true)?))
    }

    fn range(&self, slot: u32, size: usize) -> Result<u32, RingMapError> {
        let start = slot as usize * size;
        if start + size > self.0.entries() as usize {
            return Err(RingMapError::OutOfRange {
                slot,
                size,
                entries: self.0.entries(),
            });
        }
        Ok(start as u32)
    }

    /// Copies `ring` into slot `slot` (entries `slot*len .. (slot+1)*len`).
    /// The caller only writes slots the data path is not reading.
    pub fn write(&mut self, slot: u32, ring: &[u32]) -> Result<(), RingMapError> {
        let start = self.range(slot, ring.len())?;
        for (i, id) in ring.iter().enumerate() {
            self.0.write(start + i as u32, *id);
        }
        Ok(())
    }

    pub fn entries(&self) -> u32 {
        self.0.entries()
    }

    /// Reads slot `slot` of `size` entries (restart recovery, tests).
    pub fn read(&self, slot: u32, size: usize) -> Option<Vec<u32>> {
        let start = self.range(slot, size).ok()?;
        (0..size as u32)
            .map(|i| self.0.read::<u32>(start + i))
            .collect()
    }
}
