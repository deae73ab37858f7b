//! Pins that keep links and programs alive after the process that made
//! them exits: XDP keeps forwarding across a daemon restart or crash, and
//! the next daemon swaps its program into the same links.
use std::path::Path;

use aya::{
    maps::MapInfo,
    pin::PinError,
    programs::ProgramInfo,
    programs::links::{FdLink, LinkError, PinnedLink},
};

use super::loader::LoadError;

/// Pins `link` (one just taken out of its program's care) at `path`.
/// Dropping our handle afterwards only closes the fd: the pin holds the
/// link, and the program in it, until someone unpins it.
pub(crate) fn pin_link<L>(link: L, path: &Path) -> Result<(), LoadError>
where
    FdLink: TryFrom<L, Error = LinkError>,
{
    let fd_link = FdLink::try_from(link).map_err(|source| LoadError::Link {
        path: path.to_owned(),
        source,
    })?;
    fd_link.pin(path).map_err(|source| LoadError::Pin {
        path: path.to_owned(),
        source,
    })?;
    Ok(())
}

/// Pins a program at `path` with `pin`, replacing the previous daemon's
/// pin of the program it replaced (the links hold the new one already).
pub(crate) fn replace_program_pin(
    path: &Path,
    pin: impl FnOnce(&Path) -> Result<(), PinError>,
) -> Result<(), LoadError> {
    if path.exists() {
        std::fs::remove_file(path).map_err(|source| LoadError::Unpin {
            path: path.to_owned(),
            source,
        })?;
    }
    pin(path).map_err(|source| LoadError::Pin {
        path: path.to_owned(),
        source,
    })
}

/// Unpins the link pinned at `path`: with the last reference gone the
/// kernel detaches its program.
pub(crate) fn unpin_link(path: &Path) -> Result<(), LoadError> {
    let link = PinnedLink::from_pin(path).map_err(|source| LoadError::Link {
        path: path.to_owned(),
        source,
    })?;
    drop(link.unpin().map_err(|source| LoadError::Unpin {
        path: path.to_owned(),
        source,
    })?);
    Ok(())
}

/// Whether the link pinned at `link` holds the program pinned at
/// `program` (whose id the link names), and that program has tag `tag`.
/// The kernel's tag hashes the instructions without their map
/// references: the same object loaded twice has the same tag. Only the
/// two pins are read: no walk of every loaded program, which would need
/// more privilege than the rest of `lb target`.
pub(crate) fn link_holds(link: &Path, program: &Path, tag: u64) -> Result<bool, LoadError> {
    let link_err = |source| LoadError::Link {
        path: link.to_owned(),
        source,
    };
    let pinned = PinnedLink::from_pin(link).map_err(link_err)?;
    let id = FdLink::from(pinned).info().map_err(link_err)?.program_id();
    if !program.exists() {
        return Ok(false);
    }
    let info = ProgramInfo::from_pin(program).map_err(|source| LoadError::Program {
        name: "pinned program",
        source,
    })?;
    Ok(info.id() == id && info.tag() == tag)
}

/// Opens the link pinned at `path` as a link of type `L`, to swap a new
/// program into it. The pin file stays: the link never lacks a holder.
pub(crate) fn open_link<L>(path: &Path) -> Result<L, LoadError>
where
    L: TryFrom<FdLink, Error = LinkError>,
{
    let link_err = |source| LoadError::Link {
        path: path.to_owned(),
        source,
    };
    let pinned = PinnedLink::from_pin(path).map_err(link_err)?;
    L::try_from(FdLink::from(pinned)).map_err(link_err)
}

/// Removes the map pinned at `path` unless `fits` accepts it (a counter map
/// of another version's size, which the loader would otherwise reuse as it
/// is); returns what it removed. Nothing pinned there is not an error.
pub fn unpin_map_unless(
    path: &Path,
    fits: impl Fn(&MapInfo) -> bool,
) -> std::io::Result<Option<MapInfo>> {
    let Ok(info) = MapInfo::from_pin(path) else {
        return Ok(None);
    };
    if fits(&info) {
        return Ok(None);
    }
    std::fs::remove_file(path)?;
    Ok(Some(info))
}
