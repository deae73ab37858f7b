//! Pins that keep links and programs alive after the process that made
//! them exits: XDP keeps forwarding across a daemon restart or crash, and
//! the next daemon swaps its program into the same links.
use std::path::Path;

use aya::{
    pin::PinError,
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

/// The tag of the program the link pinned at `path` holds (`None`: that
/// program is gone from the kernel's list, which a held program never is).
/// The kernel's tag hashes the instructions without their map references:
/// the same object loaded twice has the same tag.
pub(crate) fn linked_program_tag(path: &Path) -> Result<Option<u64>, LoadError> {
    let link_err = |source| LoadError::Link {
        path: path.to_owned(),
        source,
    };
    let pinned = PinnedLink::from_pin(path).map_err(link_err)?;
    let id = FdLink::from(pinned).info().map_err(link_err)?.program_id();
    Ok(aya::programs::loaded_programs()
        .flatten()
        .find(|p| p.id() == id)
        .map(|p| p.tag()))
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
