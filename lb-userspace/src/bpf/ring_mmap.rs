//! The Maglev ring map mapped into our memory (`BPF_F_MMAPABLE`): writing a
//! 65537-slot table is a loop of stores, not 65537 `bpf(MAP_UPDATE_ELEM)`
//! calls.
//!
//! The kernel lays out array elements at `round_up(value_size, 8)`: each u32
//! target id occupies an 8-byte cell, id in the low half (little-endian).
use std::os::fd::{AsFd, AsRawFd};

use aya::maps::{Map, MapData, MapError};

#[derive(Debug, thiserror::Error)]
pub enum RingMapError {
    #[error("MAGLEV is not an array map")]
    WrongType,
    #[error("MAGLEV map info: {0}")]
    Info(#[from] MapError),
    #[error("mmap of MAGLEV ({len} bytes): {source}")]
    Mmap { len: usize, source: std::io::Error },
    #[error("ring slot {slot} of {size} entries is outside MAGLEV ({entries} entries)")]
    OutOfRange {
        slot: u32,
        size: usize,
        entries: u32,
    },
}

/// Bytes per array element in the kernel's layout (`round_up(4, 8)`).
const CELL: usize = 8;

pub struct RingMap {
    // Keeps the map (and so the mapping's backing object) alive.
    _data: MapData,
    /// One u64 cell per element.
    ptr: *mut u64,
    len_bytes: usize,
    entries: u32,
}

// SAFETY: the mapping is exclusively owned by this value; the kernel side is
// only read by the program, and writes happen through `&mut self`.
unsafe impl Send for RingMap {}

impl RingMap {
    pub fn new(map: Map) -> Result<Self, RingMapError> {
        let Map::Array(data) = map else {
            return Err(RingMapError::WrongType);
        };
        let entries = data.info()?.max_entries();
        let page = 4096usize;
        let len_bytes = (entries as usize * CELL).div_ceil(page) * page;
        // SAFETY: mapping a BPF array fd created with BPF_F_MMAPABLE, shared,
        // at a kernel-chosen address; length rounded up to pages as required.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(RingMapError::Mmap {
                len: len_bytes,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self {
            _data: data,
            ptr: ptr.cast(),
            len_bytes,
            entries,
        })
    }

    /// Copies `ring` into slot `slot` (entries `slot*len .. (slot+1)*len`).
    /// The caller only writes slots the data path is not reading.
    pub fn write(&mut self, slot: u32, ring: &[u32]) -> Result<(), RingMapError> {
        let start = slot as usize * ring.len();
        if start + ring.len() > self.entries as usize {
            return Err(RingMapError::OutOfRange {
                slot,
                size: ring.len(),
                entries: self.entries,
            });
        }
        for (i, id) in ring.iter().enumerate() {
            // SAFETY: start + i < entries, checked above; cells are 8-aligned.
            unsafe { self.ptr.add(start + i).write(u64::from(*id)) };
        }
        Ok(())
    }

    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// Reads slot `slot` of `size` entries (restart recovery, tests).
    pub fn read(&self, slot: u32, size: usize) -> Option<Vec<u32>> {
        let start = slot as usize * size;
        if start + size > self.entries as usize {
            return None;
        }
        // SAFETY: bounds checked above; the low half of each cell is the id.
        let cells = unsafe { std::slice::from_raw_parts(self.ptr.add(start), size) };
        Some(cells.iter().map(|c| *c as u32).collect())
    }
}

impl Drop for RingMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len_bytes) };
    }
}
