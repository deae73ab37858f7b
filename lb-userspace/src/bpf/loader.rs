//! Loads the XDP program with its maps pinned, attaches it, and tears it down.
//!
//! Restart contract: maps are pinned by name, so a second `lb run` opens the
//! same maps (flows, counters, rings survive). Attachments are bpf_links
//! pinned as `link_<interface>`; a new daemon swaps its freshly loaded
//! program into the existing link atomically (`bpf_link_update`), so there is
//! no instant without a program on the interface. Exiting the daemon leaves
//! everything in place; only `lb down` detaches and unpins.
use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, MapInfo, MapType},
    programs::{ProgramError, Xdp, XdpMode, links::LinkError, xdp::XdpLink},
};
use lb_common::{
    DataPathConfig,
    counters::STAT_COUNT,
    flow::{FLOW_WAYS, config_flags},
    limits::RING_SLOTS_PER_VIP,
    maps,
};
use tracing::{info, warn};

use super::{
    bpffs::{self, BpffsError, Pins},
    flow_table, pin, tc,
};

/// The eBPF object built by `cargo xtask build`, embedded at compile time.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf.o"));

/// How to attach to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native XDP in the driver; fail when the driver cannot.
    Driver,
    /// Generic (skb) XDP: works everywhere, costs a socket buffer per packet.
    Generic,
    /// Driver, falling back to generic with a warning.
    Auto,
}

/// What the loader needs from the config.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub pin_dir: PathBuf,
    pub interfaces: Vec<String>,
    /// Interfaces served at tc rather than XDP (`bpf::tc`).
    pub tc_interfaces: Vec<String>,
    pub mode: AttachMode,
    pub ring_size: u32,
    pub max_vips: u32,
    pub flow_capacity: u32,
    /// `daemon.reply_interface_check = "off"`.
    pub reply_any_interface: bool,
}

impl LoadSpec {
    fn maglev_entries(&self) -> u32 {
        self.max_vips * RING_SLOTS_PER_VIP * self.ring_size
    }

    fn flow_entries(&self) -> u32 {
        flow_table::entries_for(self.flow_capacity)
    }

    /// `FLOW_META` values: one per set of `FLOWS`.
    fn flow_sets(&self) -> u32 {
        self.flow_entries() / FLOW_WAYS
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "this lb binary has no eBPF object embedded: build it with `cargo xtask build` (plain cargo build skips the BPF toolchain)"
    )]
    NoObject,
    #[error(transparent)]
    Bpffs(#[from] BpffsError),
    #[error(
        "pinned map {name} has {pinned} entries but the config needs {wanted}; sizes cannot change under running flows: run `lb down` first"
    )]
    SizeMismatch {
        name: &'static str,
        pinned: u32,
        wanted: u32,
    },
    #[error(
        "pinned map {name} was made by another version of lb (a {pinned:?} of {pinned_value}-byte values, this one needs a {wanted:?} of {wanted_value}-byte values): run `lb down` first (established flows are dropped once)"
    )]
    LayoutMismatch {
        name: &'static str,
        pinned: MapType,
        pinned_value: u32,
        wanted: MapType,
        wanted_value: u32,
    },
    #[error(
        "pinned map {name} belongs to an older version of lb's data path: run `lb down` first (established flows are dropped once)"
    )]
    Legacy { name: &'static str },
    #[error("map {0} missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("initialising the data-path settings in {map}: {source}")]
    Config {
        map: &'static str,
        source: aya::maps::MapError,
    },
    #[error("loading the eBPF object: {0}")]
    Load(#[from] EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: ProgramError,
    },
    #[error("attaching to interface {interface}: {source}")]
    Attach {
        interface: String,
        source: ProgramError,
    },
    #[error("pinned link {path}: {source}")]
    Link { path: PathBuf, source: LinkError },
    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("removing pin {path}: {source}")]
    Unpin {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Checks that maps already pinned have the layout this build uses (an
/// older version's connection table is another kind of map) and the sizes
/// this config asks for.
fn check_pinned(pins: &Pins, spec: &LoadSpec) -> Result<(), LoadError> {
    let wanted = [
        (
            maps::MAGLEV,
            MapType::Array,
            size_of::<u32>(),
            spec.maglev_entries(),
        ),
        (
            maps::FLOWS,
            MapType::Array,
            size_of::<lb_common::FlowEntry>(),
            spec.flow_entries(),
        ),
        (
            maps::FLOW_META,
            MapType::Array,
            size_of::<lb_common::flow::SetMeta>(),
            spec.flow_sets(),
        ),
        (maps::CONFIG, MapType::Array, size_of::<DataPathConfig>(), 1),
    ];
    for (name, map_type, value_size, entries) in wanted {
        let path = pins.map(name);
        if !path.exists() {
            continue;
        }
        let Ok(info) = MapInfo::from_pin(&path) else {
            continue;
        };
        let pinned_type = info.map_type().unwrap_or(MapType::Unspecified);
        if pinned_type != map_type || info.value_size() as usize != value_size {
            return Err(LoadError::LayoutMismatch {
                name,
                pinned: pinned_type,
                pinned_value: info.value_size(),
                wanted: map_type,
                wanted_value: value_size as u32,
            });
        }
        if info.max_entries() != entries {
            return Err(LoadError::SizeMismatch {
                name,
                pinned: info.max_entries(),
                wanted: entries,
            });
        }
    }
    if let Some(name) = maps::LEGACY.iter().find(|m| pins.map(m).exists()) {
        return Err(LoadError::Legacy { name });
    }
    // A table pinned without its `FLOW_META` beside it has entries without
    // tags, which lookups would not find (lb_common::flow::SetMeta).
    if pins.map(maps::FLOWS).exists() && !pins.map(maps::FLOW_META).exists() {
        return Err(LoadError::Legacy { name: maps::FLOWS });
    }
    Ok(())
}

/// Gives a new connection table its seeds and size; a pinned one keeps its
/// own (its flows were placed with them). The flags are this config's.
fn init_config(ebpf: &mut Ebpf, spec: &LoadSpec) -> Result<(), LoadError> {
    let err = |source| LoadError::Config {
        map: maps::CONFIG,
        source,
    };
    let map = ebpf
        .map_mut(maps::CONFIG)
        .ok_or(LoadError::MissingMap(maps::CONFIG))?;
    let mut config: Array<_, DataPathConfig> = Array::try_from(map).map_err(err)?;
    let current = config.get(&0, 0).map_err(err)?;
    let set_mask = spec.flow_entries() / FLOW_WAYS - 1;
    let (seed, seed2) = if current.set_mask == set_mask && current.seed != 0 {
        (current.seed, current.seed2)
    } else {
        (random_nonzero(), random_nonzero())
    };
    let flags = if spec.reply_any_interface {
        config_flags::REPLY_ANY_INTERFACE
    } else {
        0
    };
    let settings = DataPathConfig {
        seed,
        seed2,
        set_mask,
        flags,
    };
    config.set(0, settings, 0).map_err(err)
}

/// A `STATS` pinned by a version with fewer verdicts (each new one goes at
/// the end: lb_common::Stat) has no slots for the new ones: the program
/// could not count them. It is unpinned, to be made anew by this load, so
/// the verdict counters restart at zero (a counter reset, which
/// Prometheus' `rate()` handles as after a reboot). Should the load fail
/// after this, the program still attached counts on in the unpinned map,
/// which `lb stats` no longer finds until an `lb run` succeeds.
fn renew_outgrown_stats(pins: &Pins) -> Result<(), LoadError> {
    let path = pins.map(maps::STATS);
    let removed =
        pin::unpin_map_unless(&path, |m| m.max_entries() >= STAT_COUNT).map_err(|source| {
            LoadError::Unpin {
                path: path.clone(),
                source,
            }
        })?;
    if let Some(old) = removed {
        warn!(
            pinned = old.max_entries(),
            counted = STAT_COUNT,
            "the pinned verdict counters were an older version's, with fewer verdicts: they restart at zero"
        );
    }
    Ok(())
}

/// A random u32 that is not zero (zero marks an uninitialised table).
fn random_nonzero() -> u32 {
    loop {
        let mut b = [0u8; 4];
        // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        let v = u32::from_ne_bytes(b);
        if n == 4 && v != 0 {
            return v;
        }
    }
}

/// Loads the object, reusing or creating the pinned maps.
pub fn load(spec: &LoadSpec) -> Result<Ebpf, LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    bpffs::prepare(&spec.pin_dir)?;
    let pins = Pins::new(&spec.pin_dir);
    check_pinned(&pins, spec)?;
    renew_outgrown_stats(&pins)?;
    let paths: Vec<(&str, PathBuf)> = maps::ALL.iter().map(|m| (*m, pins.map(m))).collect();
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(maps::MAGLEV, spec.maglev_entries())
        .map_max_entries(maps::FLOWS, spec.flow_entries())
        .map_max_entries(maps::FLOW_META, spec.flow_sets());
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader.load(OBJECT)?;
    init_config(&mut ebpf, spec)?;
    let prog = program(&mut ebpf)?;
    prog.load().map_err(|source| LoadError::Program {
        name: maps::PROGRAM,
        source,
    })?;
    if !spec.tc_interfaces.is_empty() {
        tc::load(&mut ebpf)?;
    }
    Ok(ebpf)
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoadError> {
    let prog = ebpf.program_mut(maps::PROGRAM).ok_or(LoadError::Program {
        name: maps::PROGRAM,
        source: ProgramError::NotLoaded,
    })?;
    prog.try_into().map_err(|source| LoadError::Program {
        name: maps::PROGRAM,
        source,
    })
}

/// Attaches the loaded program to every interface (replacing the program in
/// an existing pinned link, or creating and pinning a new link) and pins the
/// program itself for bpftool.
pub fn attach(ebpf: &mut Ebpf, spec: &LoadSpec) -> Result<(), LoadError> {
    let pins = Pins::new(&spec.pin_dir);
    let prog = program(ebpf)?;
    for interface in &spec.interfaces {
        let path = pins.link(interface);
        if path.exists() {
            replace_in_link(prog, interface, &path)?;
        } else {
            attach_new(prog, interface, spec.mode, &path)?;
        }
    }
    if !spec.tc_interfaces.is_empty() {
        tc::attach(ebpf, &pins, &spec.tc_interfaces)?;
    }
    let prog = program(ebpf)?;
    pin::replace_program_pin(&pins.program(), |path| prog.pin(path))
}

pub(crate) fn replace_in_link(
    prog: &mut Xdp,
    interface: &str,
    path: &Path,
) -> Result<(), LoadError> {
    let link: XdpLink = pin::open_link(path)?;
    let id = prog
        .attach_to_link(link)
        .map_err(|source| LoadError::Attach {
            interface: interface.to_owned(),
            source,
        })?;
    // Taken out of the program's care, dropping our handle only closes the fd:
    // the pin keeps the link (and the program in it) alive after we exit.
    let link = prog.take_link(id).map_err(|source| LoadError::Attach {
        interface: interface.to_owned(),
        source,
    })?;
    drop(link);
    info!(interface, "replaced program in existing XDP link");
    Ok(())
}

pub(crate) fn attach_new(
    prog: &mut Xdp,
    interface: &str,
    mode: AttachMode,
    path: &Path,
) -> Result<(), LoadError> {
    let attach = |prog: &mut Xdp, mode| {
        prog.attach(interface, mode)
            .map_err(|source| LoadError::Attach {
                interface: interface.to_owned(),
                source,
            })
    };
    let id = match mode {
        AttachMode::Driver => attach(prog, XdpMode::Driver)?,
        AttachMode::Generic => {
            warn!(
                interface,
                "attaching in generic (skb) mode: much slower than driver mode"
            );
            attach(prog, XdpMode::Skb)?
        }
        AttachMode::Auto => match attach(prog, XdpMode::Driver) {
            Ok(id) => id,
            Err(e) => {
                warn!(interface, error = %e, "driver mode failed; falling back to generic (skb) mode");
                attach(prog, XdpMode::Skb)?
            }
        },
    };
    let link = prog.take_link(id).map_err(|source| LoadError::Attach {
        interface: interface.to_owned(),
        source,
    })?;
    pin::pin_link(link, path)?;
    info!(interface, ?mode, "attached XDP program");
    Ok(())
}

/// Detaches from every interface with a pinned link and removes all pins.
/// Missing pins are not an error: `down` is idempotent.
pub fn teardown(pin_dir: &Path) -> Result<Vec<String>, LoadError> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(pin_dir) else {
        return Ok(removed);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let detached = match name.strip_prefix("link_") {
            Some(interface) => Some(format!("detached from {interface}")),
            None => tc::detached(&name),
        };
        if let Some(detached) = detached {
            pin::unpin_link(&path)?;
            removed.push(detached);
        }
    }
    // The dsr probe program's counters are pinned here too (probe_path);
    // an unpinned map is removed should a development build have pinned it.
    for name in maps::ALL
        .iter()
        .chain(&maps::LEGACY)
        .chain(&maps::UNPINNED)
        .chain([&maps::PROGRAM, &maps::TC_PROGRAM, &lb_common::probe::STATS])
    {
        let path = pin_dir.join(name);
        if path.exists() {
            std::fs::remove_file(&path).map_err(|source| LoadError::Unpin {
                path: path.clone(),
                source,
            })?;
            removed.push(format!("unpinned {name}"));
        }
    }
    // Only removes the directory when nothing else was left in it.
    let _empty_dir_removed = std::fs::remove_dir(pin_dir).is_ok();
    Ok(removed)
}
