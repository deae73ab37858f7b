//! The `DECAP_SAVED` block: the interface name in it, and the block of an
//! older `lb` (`SAVED_MAGIC_V1`: six sysctls, 44 bytes), read once and
//! carried over to the current layout.
//!
//! The loader cannot reuse a pinned map whose value size differs from the
//! object's, and a new map would lose the host's original settings (a later
//! attach would save the values the older `lb` had set as the originals).
//! So the old pin is moved aside (renamed to `DECAP_SAVED_v1`), its block
//! rewritten in the new map, and only then the old map unpinned: an error
//! or a crash in between leaves the old block where the next run finds it.
use std::path::{Path, PathBuf};

use aya::maps::{Array, Map, MapData, MapInfo};
use lb_common::decap::{
    self, DecapSaved, SAVED_MAGIC, SAVED_MAGIC_V1, SAVED_SYSCTLS, SAVED_V1_LEN, SAVED_V1_SYSCTLS,
};

use super::{TargetError, sysctl};

/// `name` as the block keeps it, NUL-padded (IFNAMSIZ); the caller checked
/// the name (at most 15 bytes).
pub fn interface_bytes(name: &str) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..name.len()].copy_from_slice(name.as_bytes());
    b
}

/// The interface name kept in `saved`.
pub fn interface(saved: &DecapSaved) -> String {
    let end = saved.interface.iter().position(|b| *b == 0).unwrap_or(16);
    String::from_utf8_lossy(&saved.interface[..end]).into_owned()
}

fn map_err(source: aya::maps::MapError) -> TargetError {
    TargetError::Map {
        map: decap::SAVED,
        source,
    }
}

/// An older `lb`'s block, moved out of the loader's way.
pub struct Carried {
    /// The block in the current layout (None: nothing was saved in it).
    pub block: Option<DecapSaved>,
    /// The old map's pin now, to remove once the block is in the new map.
    pub old_pin: PathBuf,
}

/// Where an old-layout `DECAP_SAVED` pinned at `path` is moved aside (a
/// sibling: bpffs refuses dots in names).
pub fn aside(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push("_v1");
    path.with_file_name(name)
}

/// Moves a pinned old-layout `DECAP_SAVED` at `path` out of the loader's
/// way (renamed to [`aside`]) and reads its block, or reads the one an
/// earlier run moved there and could not finish with. Any other map at
/// `path` is left to the loader.
pub fn take_v1_saved(path: &Path) -> Result<Option<Carried>, TargetError> {
    let old_pin = aside(path);
    if !old_pin.exists() {
        let Ok(info) = MapInfo::from_pin(path) else {
            return Ok(None);
        };
        if info.value_size() as usize != SAVED_V1_LEN {
            return Ok(None);
        }
        std::fs::rename(path, &old_pin).map_err(|source| TargetError::Unpin {
            path: path.to_owned(),
            source,
        })?;
    }
    let data = MapData::from_pin(&old_pin).map_err(map_err)?;
    let map: Array<MapData, [u8; SAVED_V1_LEN]> =
        Array::try_from(Map::Array(data)).map_err(map_err)?;
    let block = upgrade(&map.get(&0, 0).map_err(map_err)?)?;
    Ok(Some(Carried { block, old_pin }))
}

/// The current block for an old one (None: nothing was saved in it). The
/// settings the old layout lacks are read as they are now: the older `lb`
/// never changed them, so now is before.
fn upgrade(raw: &[u8; SAVED_V1_LEN]) -> Result<Option<DecapSaved>, TargetError> {
    let word = |i: usize| [raw[i], raw[i + 1], raw[i + 2], raw[i + 3]];
    if u32::from_ne_bytes(word(0)) != SAVED_MAGIC_V1 {
        return Ok(None);
    }
    let mut saved = DecapSaved {
        magic: SAVED_MAGIC,
        interface: raw[4..20].try_into().expect("16 bytes"),
        sysctls: [0; SAVED_SYSCTLS],
    };
    let settings = sysctl::settings(&interface(&saved));
    for (i, (slot, s)) in saved.sysctls.iter_mut().zip(&settings).enumerate() {
        *slot = if i < SAVED_V1_SYSCTLS {
            i32::from_ne_bytes(word(20 + 4 * i))
        } else {
            sysctl::current(s)?
        };
    }
    Ok(Some(saved))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_block(magic: u32) -> [u8; SAVED_V1_LEN] {
        let mut raw = [0u8; SAVED_V1_LEN];
        raw[..4].copy_from_slice(&magic.to_ne_bytes());
        raw[4..6].copy_from_slice(b"lo");
        for i in 0..SAVED_V1_SYSCTLS {
            let v = 10 + i as i32;
            raw[20 + 4 * i..24 + 4 * i].copy_from_slice(&v.to_ne_bytes());
        }
        raw
    }

    #[test]
    fn an_old_block_keeps_its_six_values_and_gains_lo_forwarding_as_it_is_now() {
        let saved = upgrade(&v1_block(SAVED_MAGIC_V1)).unwrap().unwrap();
        assert_eq!(saved.magic, SAVED_MAGIC);
        assert_eq!(interface(&saved), "lo");
        assert_eq!(saved.sysctls[..6], [10, 11, 12, 13, 14, 15]);
        let now = sysctl::settings("lo").map(|s| sysctl::current(&s).unwrap());
        assert_eq!(saved.sysctls[6..], now[6..]);
    }

    #[test]
    fn an_old_block_is_moved_aside_to_a_name_bpffs_accepts() {
        let aside = aside(Path::new("/sys/fs/bpf/lb-target/DECAP_SAVED"));
        assert_eq!(aside, Path::new("/sys/fs/bpf/lb-target/DECAP_SAVED_v1"));
    }

    #[test]
    fn an_old_map_with_nothing_saved_gives_nothing() {
        assert_eq!(upgrade(&v1_block(0)).unwrap(), None);
    }
}
