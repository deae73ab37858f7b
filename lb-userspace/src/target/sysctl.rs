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
//!   acting as a host (IPv6 router advertisements still accepted). One
//!   side effect is avoided by hand: see [`apply`].
//!
//! A host booted with `ipv6.disable=1` has no `net.ipv6` sysctls at all:
//! the IPv6 setting is optional, absent is saved as `SYSCTL_ABSENT` and
//! neither set nor restored (such a host gets no IPv6 chains either).
use std::path::{Path, PathBuf};

use lb_common::decap::SYSCTL_ABSENT;

use super::TargetError;

/// One setting: where it lives and the value a target needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub path: PathBuf,
    pub wanted: i32,
    /// May be missing on a working host (IPv6's, see the module's doc).
    pub optional: bool,
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
        optional: false,
    };
    let conf6 = |dev: &str, key: &str, wanted| Setting {
        path: PathBuf::from(format!("/proc/sys/net/ipv6/conf/{dev}/{key}")),
        wanted,
        optional: true,
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
/// `lo` forwarding settings that are not on (unreadable counts as off; an
/// absent optional one blocks nothing: no IPv6, no IPv6 chains).
pub fn chain_blockers() -> Vec<String> {
    settings("lo")
        .into_iter()
        .filter(|s| s.path.ends_with("lo/forwarding"))
        .filter(|s| match current(s) {
            Ok(v) => v != SYSCTL_ABSENT && v != s.wanted,
            Err(_) => true,
        })
        .map(|s| s.name())
        .collect()
}

/// The setting's value now: `SYSCTL_ABSENT` for an optional one the host
/// does not have, an error for a required one.
pub fn current(s: &Setting) -> Result<i32, TargetError> {
    if s.optional && !s.path.exists() {
        return Ok(SYSCTL_ABSENT);
    }
    read(&s.path)
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

/// Gives setting `s` the value a target needs (see [`set`]).
pub fn apply(s: &Setting) -> Result<(), TargetError> {
    set(&s.path, s.wanted)
}

/// Writes `value` to the sysctl at `path`.
///
/// Turning IPv6 forwarding on for any device, `lo` included, makes the
/// kernel drop every route learned from router advertisements on the
/// whole host (`addrconf_fixup_forwarding` purges them), except on
/// interfaces whose `accept_ra` is 2: a target that learns its default
/// route that way would lose it, and its dsr replies with it, until the
/// next advertisement (minutes). So for that one write, every interface
/// that takes advertisements (`accept_ra` 1, not forwarding) is raised to
/// 2, and every one is put back after, whatever the write did.
pub fn set(path: &Path, value: i32) -> Result<(), TargetError> {
    if !(path.starts_with(IPV6_CONF) && path.ends_with("forwarding") && value != 0) {
        return write(path, value);
    }
    let Raised { paths, error } = raise_accept_ra();
    // Not written when an interface could not be raised: its routes
    // would go.
    let written = match error {
        None => write(path, value),
        Some(e) => Err(e),
    };
    let restored = lower_accept_ra(&paths);
    written.and(restored)
}

const IPV6_CONF: &str = "/proc/sys/net/ipv6/conf";

/// The interfaces [`raise_accept_ra`] raised, and the error that stopped
/// it, if one did.
struct Raised {
    paths: Vec<PathBuf>,
    error: Option<TargetError>,
}

/// Sets `accept_ra` 2 on every interface that takes router advertisements
/// (`accept_ra` 1 and not forwarding: one that forwards ignores them, and
/// has no such routes to keep). The settings of `all` and `default` are
/// not an interface's: the kernel reads each interface's own. An
/// interface that goes away meanwhile has nothing to keep.
fn raise_accept_ra() -> Raised {
    let mut raised = Raised {
        paths: Vec::new(),
        error: None,
    };
    let dir = match std::fs::read_dir(IPV6_CONF) {
        Ok(dir) => dir,
        Err(source) => {
            raised.error = Some(TargetError::Sysctl {
                path: IPV6_CONF.into(),
                source,
            });
            return raised;
        }
    };
    for dev in dir.flatten() {
        if dev.file_name() == "all" || dev.file_name() == "default" {
            continue;
        }
        let path = dev.path().join("accept_ra");
        let takes =
            read(&path).ok() == Some(1) && read(&dev.path().join("forwarding")).ok() == Some(0);
        if !takes {
            continue;
        }
        match write(&path, 2) {
            Ok(()) => raised.paths.push(path),
            Err(e) if gone(&e) => {}
            Err(e) => {
                raised.error = Some(e);
                return raised;
            }
        }
    }
    raised
}

/// Puts `accept_ra` back to 1 on every interface raised, even after a
/// failure; the first error that is not a vanished interface.
fn lower_accept_ra(paths: &[PathBuf]) -> Result<(), TargetError> {
    let mut first = Ok(());
    for path in paths {
        if let Err(e) = write(path, 1)
            && !gone(&e)
            && first.is_ok()
        {
            first = Err(e);
        }
    }
    first
}

/// The sysctl's interface is gone (its directory went with it).
fn gone(e: &TargetError) -> bool {
    matches!(e, TargetError::Sysctl { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

pub fn write(path: &Path, value: i32) -> Result<(), TargetError> {
    std::fs::write(path, value.to_string()).map_err(|source| TargetError::Sysctl {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(path: &str, optional: bool) -> Setting {
        Setting {
            path: PathBuf::from(path),
            wanted: 1,
            optional,
        }
    }

    #[test]
    fn an_absent_optional_setting_reads_as_absent_and_a_required_one_fails() {
        let gone = "/proc/sys/net/no_such_family/conf/lo/forwarding";
        assert_eq!(current(&setting(gone, true)).unwrap(), SYSCTL_ABSENT);
        assert!(matches!(
            current(&setting(gone, false)),
            Err(TargetError::Sysctl { .. })
        ));
    }

    #[test]
    fn restoring_accept_ra_skips_an_interface_that_went_away() {
        let gone = PathBuf::from("/proc/sys/net/ipv6/conf/no_such_if0/accept_ra");
        assert!(lower_accept_ra(&[gone]).is_ok());
    }

    #[test]
    fn only_ipv6_settings_are_optional() {
        for s in settings("eth0") {
            assert_eq!(
                s.optional,
                s.path.starts_with("/proc/sys/net/ipv6"),
                "{}",
                s.name()
            );
        }
    }
}
