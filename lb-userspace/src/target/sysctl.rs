//! The sysctls a dsr target needs, and reading and writing them.
//!
//! - `rp_filter` 0 on `all` and the interface: a decapsulated packet comes
//!   in on the interface with the client's source address, which strict
//!   reverse-path filtering may drop when the route back to the client
//!   leaves elsewhere (the kernel uses the larger of `all` and the
//!   interface's value, hence both).
//! - `arp_ignore` 1 and `arp_announce` 2 on `all` and the interface: the
//!   VIPs are on `lo`, and without these the host answers ARP for them on
//!   the interface (stealing the VIP from the balancers) and uses them as
//!   ARP sources. IPv6 needs nothing: neighbour discovery only answers for
//!   addresses of the interface asked on.
//! - `forwarding` 1 on `lo`, IPv4 and IPv6: `lb_decap` forwards a second
//!   chance's chain to the previous target after a FIB lookup made as if
//!   the packet came in on `lo` (the kernel refuses the lookup unless the
//!   named device forwards). Only `lo`: nothing arrives there from outside,
//!   so the host forwards nothing else, and the real interface keeps
//!   acting as a host (IPv6 router advertisements still accepted).
use std::path::{Path, PathBuf};

use super::TargetError;

/// One setting: where it lives and the value a target needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub path: PathBuf,
    pub wanted: i32,
}

impl Setting {
    /// `net.ipv4.conf.all.rp_filter` style name, for people.
    pub fn name(&self) -> String {
        self.path
            .strip_prefix("/proc/sys")
            .unwrap_or(&self.path)
            .to_string_lossy()
            .replace('/', ".")
    }
}

/// The settings, in the order `DecapSaved::sysctls` keeps their old values.
pub fn settings(interface: &str) -> [Setting; lb_common::decap::SAVED_SYSCTLS] {
    let conf = |dev: &str, key: &str, wanted| Setting {
        path: PathBuf::from(format!("/proc/sys/net/ipv4/conf/{dev}/{key}")),
        wanted,
    };
    let conf6 = |dev: &str, key: &str, wanted| Setting {
        path: PathBuf::from(format!("/proc/sys/net/ipv6/conf/{dev}/{key}")),
        wanted,
    };
    [
        conf("all", "rp_filter", 0),
        conf(interface, "rp_filter", 0),
        conf("all", "arp_ignore", 1),
        conf(interface, "arp_ignore", 1),
        conf("all", "arp_announce", 2),
        conf(interface, "arp_announce", 2),
        conf("lo", "forwarding", 1),
        conf6("lo", "forwarding", 1),
    ]
}

/// What keeps `lb_decap` from forwarding a second chance's chain: the
/// `lo` forwarding settings that are not on (unreadable counts as off).
pub fn chain_blockers() -> Vec<String> {
    settings("lo")
        .into_iter()
        .filter(|s| s.path.ends_with("lo/forwarding"))
        .filter(|s| read(&s.path).ok() != Some(s.wanted))
        .map(|s| s.name())
        .collect()
}

pub fn read(path: &Path) -> Result<i32, TargetError> {
    let text = std::fs::read_to_string(path).map_err(|source| TargetError::Sysctl {
        path: path.to_owned(),
        source,
    })?;
    text.trim().parse().map_err(|_| TargetError::SysctlValue {
        path: path.to_owned(),
        value: text.trim().to_owned(),
    })
}

pub fn write(path: &Path, value: i32) -> Result<(), TargetError> {
    std::fs::write(path, value.to_string()).map_err(|source| TargetError::Sysctl {
        path: path.to_owned(),
        source,
    })
}
