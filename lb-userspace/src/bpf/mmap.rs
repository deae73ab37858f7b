//! A `BPF_F_MMAPABLE` array map mapped into our memory, so that large
//! arrays (the Maglev rings, the connection table) are read and written
//! with plain loads and stores instead of one `bpf(2)` call per element.
//!
//! The kernel lays out array elements at `round_up(value_size, 8)` bytes,
//! starting at the mapping's first byte.
use std::os::fd::{AsFd, AsRawFd};

use aya::maps::{Map, MapData, MapError};

#[derive(Debug, thiserror::Error)]
pub enum MmapError {
    #[error("map {name} is not an array map")]
    WrongType { name: &'static str },
    #[error("map {name}: {source}")]
    Info {
        name: &'static str,
        source: MapError,
    },
    #[error("map {name} holds {got}-byte values, {want} expected (built for another layout)")]
    ValueSize {
        name: &'static str,
        got: u32,
        want: usize,
    },
    #[error("mmap of map {name} ({len} bytes): {source}")]
    Mmap {
        name: &'static str,
        len: usize,
        source: std::io::Error,
    },
}

/// The mapping of one array map: `entries` cells of `cell` bytes.
pub struct MappedArray {
    // Keeps the map (and so the mapping's backing object) alive; `None`
    // for the anonymous memory of unit tests.
    _data: Option<MapData>,
    ptr: *mut u8,
    len_bytes: usize,
    entries: u32,
    cell: usize,
}

// SAFETY: the mapping is owned by this value; access goes through methods
// that take `&self` for reads and `&mut self` for writes.
unsafe impl Send for MappedArray {}
// SAFETY: as above; shared references only read.
unsafe impl Sync for MappedArray {}

impl MappedArray {
    /// Maps array `map` (named `name` in errors) whose values are `T`;
    /// `writable` maps it read-write.
    pub fn new<T>(name: &'static str, map: Map, writable: bool) -> Result<Self, MmapError> {
        let Map::Array(data) = map else {
            return Err(MmapError::WrongType { name });
        };
        let info = data
            .info()
            .map_err(|source| MmapError::Info { name, source })?;
        if info.value_size() as usize != std::mem::size_of::<T>() {
            return Err(MmapError::ValueSize {
                name,
                got: info.value_size(),
                want: std::mem::size_of::<T>(),
            });
        }
        let entries = info.max_entries();
        let cell = std::mem::size_of::<T>().next_multiple_of(8);
        let page = 4096usize;
        let len_bytes = (entries as usize * cell).div_ceil(page) * page;
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: mapping a BPF array fd created with BPF_F_MMAPABLE, shared,
        // at a kernel-chosen address; length rounded up to pages as required.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len_bytes,
                prot,
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(MmapError::Mmap {
                name,
                len: len_bytes,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self {
            _data: Some(data),
            ptr: ptr.cast(),
            len_bytes,
            entries,
            cell,
        })
    }

    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// Element `index` as a pointer to `T` (the caller passes the `T` it
    /// mapped with).
    fn at<T>(&self, index: u32) -> Option<*mut T> {
        (index < self.entries).then(|| {
            // SAFETY: index < entries, so the cell lies inside the mapping.
            unsafe { self.ptr.add(index as usize * self.cell).cast() }
        })
    }

    /// A copy of element `index`. The program may be writing it at the same
    /// time: the copy can mix old and new fields, which callers of tables
    /// the program writes must tolerate.
    pub fn read<T: Copy>(&self, index: u32) -> Option<T> {
        let p = self.at::<T>(index)?;
        // SAFETY: inside the mapping, 8-aligned (cells start at multiples
        // of 8 from a page boundary); volatile because the kernel writes it.
        Some(unsafe { p.read_volatile() })
    }

    /// Writes element `index`.
    pub fn write<T>(&mut self, index: u32, value: T) -> Option<()> {
        let p = self.at::<T>(index)?;
        // SAFETY: inside the (writable) mapping, aligned as in `read`.
        unsafe { p.write_volatile(value) };
        Some(())
    }

    /// Writes one field, `offset` bytes into element `index`: a single
    /// store, so the program never sees it half-written.
    pub fn write_field<F>(&mut self, index: u32, offset: usize, value: F) -> Option<()> {
        if offset + std::mem::size_of::<F>() > self.cell
            || !offset.is_multiple_of(std::mem::align_of::<F>())
        {
            return None;
        }
        let p = self.at::<u8>(index)?;
        // SAFETY: inside the element (checked above), aligned for `F`.
        unsafe { p.add(offset).cast::<F>().write_volatile(value) };
        Some(())
    }
}

impl MappedArray {
    /// `entries` zeroed cells of `T` in anonymous memory, standing in for a
    /// map in unit tests.
    #[cfg(test)]
    pub fn anonymous<T>(entries: u32) -> Self {
        let cell = std::mem::size_of::<T>().next_multiple_of(8);
        let len_bytes = (entries as usize * cell).div_ceil(4096) * 4096;
        // SAFETY: a private anonymous mapping of our own.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "anonymous mmap");
        Self {
            _data: None,
            ptr: ptr.cast(),
            len_bytes,
            entries,
            cell,
        }
    }

    /// The 8-byte word `offset` bytes into element `index`, read in one
    /// load.
    pub fn read_word(&self, index: u32, offset: usize) -> Option<u64> {
        let p = self.word(index, offset)?;
        // SAFETY: inside the element, 8-aligned (`word`).
        Some(unsafe { p.read_volatile() })
    }

    /// Replaces the 8-byte word `offset` bytes into element `index` with
    /// `new` if it still holds `current`, atomically against the program's
    /// stores on any CPU. `None`: no such word.
    pub fn compare_exchange_word(
        &mut self,
        index: u32,
        offset: usize,
        current: u64,
        new: u64,
    ) -> Option<bool> {
        let p = self.word(index, offset)?;
        // SAFETY: inside the (writable) mapping, 8-aligned (`word`); the
        // other writers are the program's single stores.
        let word = unsafe { std::sync::atomic::AtomicU64::from_ptr(p) };
        Some(
            word.compare_exchange(
                current,
                new,
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
            )
            .is_ok(),
        )
    }

    fn word(&self, index: u32, offset: usize) -> Option<*mut u64> {
        if offset + 8 > self.cell || !offset.is_multiple_of(8) {
            return None;
        }
        let p = self.at::<u8>(index)?;
        // SAFETY: inside the element (checked above); cells start at
        // multiples of 8 from a page boundary.
        Some(unsafe { p.add(offset).cast::<u64>() })
    }
}

impl Drop for MappedArray {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len_bytes) };
    }
}
