//! `[bgp]`: whether this host announces its VIPs, through a BIRD 2 running
//! beside it. The daemon speaks no BGP: it writes one blackhole route per
//! announced VIP (/32, /128) into a routing table of its own, tagged with its
//! own route protocol number, and BIRD's `kernel` protocol learns that table
//! and exports the routes over BGP (`deploy/bird/`, ARCHITECTURE.md).
use std::{collections::HashMap, ops::RangeInclusive, path::PathBuf};

use serde::Deserialize;

use super::{Config, Dataplane, validation_errors::ValidationErrors};

/// Default of `bgp.table`.
pub const DEFAULT_TABLE: u32 = 100;
/// Default of `bgp.protocol`: a number no routing daemon listed in
/// iproute2's `rt_protos` uses.
pub const DEFAULT_PROTOCOL: u8 = 201;
/// Default of `bgp.drain_file`.
pub const DEFAULT_DRAIN_FILE: &str = "/var/lib/lb/drained";

/// Routing tables the kernel reserves: 0 (unspec), 253 (default), 254
/// (main), 255 (local). Announcement routes are blackholes: in a table the
/// host looks up they would drop its traffic to the VIPs.
pub const RESERVED_TABLES: [u32; 4] = [0, 253, 254, 255];
/// Route protocols `bgp.protocol` may not take: 0-4 are the kernel's own
/// (unspec, redirect, kernel, boot, static; BIRD learns none of them but
/// `boot` and `static`, and those are what an operator's `ip route add`
/// writes, which the daemon would then take for its own), and 12 is BIRD's
/// own, whose routes BIRD removes at start as left over from itself.
pub const RESERVED_PROTOCOLS: [u8; 6] = [0, 1, 2, 3, 4, 12];
/// Bounds of `bgp.protocol`, before the reserved numbers.
pub const PROTOCOL: RangeInclusive<u8> = 5..=255;

/// `[bgp]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bgp {
    /// Announce this host's VIPs (write their routes into `table`).
    #[serde(default)]
    pub enabled: bool,
    /// Kernel routing table the VIP routes go into; BIRD's `kernel`
    /// protocol learns it (`kernel table N; learn;`). Not one of
    /// [`RESERVED_TABLES`].
    #[serde(default = "default_table")]
    pub table: u32,
    /// Route protocol number the routes carry (`ip route ... proto N`,
    /// BIRD's `krt_source`): how the daemon knows its own routes, and how a
    /// BIRD filter picks them. Within [`PROTOCOL`], not one of
    /// [`RESERVED_PROTOCOLS`].
    #[serde(default = "default_protocol")]
    pub protocol: u8,
    /// Route metric (priority) the routes carry (BIRD's `krt_metric`, e.g.
    /// for a MED); IPv6 routes with 0 get the kernel's 1024.
    #[serde(default)]
    pub metric: u32,
    /// Names of the `tcp`/`udp` listeners whose addresses are announced;
    /// none: every `tcp` and `udp` listener (what the XDP path serves).
    #[serde(default)]
    pub listeners: Option<Vec<String>>,
    /// Where the host's drain state is kept (`lb host drain` creates the
    /// file, `lb host resume` removes it): a drained host that restarts, or
    /// reboots, does not announce until resumed.
    #[serde(default = "default_drain_file")]
    pub drain_file: PathBuf,
}

fn default_table() -> u32 {
    DEFAULT_TABLE
}
fn default_protocol() -> u8 {
    DEFAULT_PROTOCOL
}
fn default_drain_file() -> PathBuf {
    PathBuf::from(DEFAULT_DRAIN_FILE)
}

impl Default for Bgp {
    fn default() -> Self {
        Bgp {
            enabled: false,
            table: DEFAULT_TABLE,
            protocol: DEFAULT_PROTOCOL,
            metric: 0,
            listeners: None,
            drain_file: default_drain_file(),
        }
    }
}

impl Config {
    /// The listeners whose addresses `[bgp]` announces (when enabled):
    /// those named in `bgp.listeners`, else every `tcp` and `udp` one.
    pub fn announced_listeners(&self) -> impl Iterator<Item = &super::Listener> {
        self.listeners.iter().filter(|l| {
            l.protocol.in_kernel()
                && self
                    .bgp
                    .listeners
                    .as_ref()
                    .is_none_or(|names| names.contains(&l.name))
        })
    }
}

pub(super) fn check_bgp(c: &Config, errs: &mut ValidationErrors) {
    let b = &c.bgp;
    if RESERVED_TABLES.contains(&b.table) {
        errs.push(
            "bgp.table",
            format!(
                "{} is reserved (0 unspec, 253 default, 254 main, 255 local); pick a table of its own",
                b.table
            ),
        );
    }
    if !PROTOCOL.contains(&b.protocol) || RESERVED_PROTOCOLS.contains(&b.protocol) {
        errs.push(
            "bgp.protocol",
            format!(
                "{} is reserved (0-4: the kernel's, 12: BIRD's own); pick one of 5..=255 but 12",
                b.protocol
            ),
        );
    }
    if !b.drain_file.is_absolute() {
        errs.push(
            "bgp.drain_file",
            format!("{:?} is not an absolute path", b.drain_file),
        );
    } else if b.drain_file.exists() && !b.drain_file.is_file() {
        errs.push(
            "bgp.drain_file",
            format!("{:?} exists and is not a regular file", b.drain_file),
        );
    }
    if b.enabled && c.daemon.dataplane == Dataplane::Userspace {
        errs.push(
            "bgp.enabled",
            "a host announces the VIPs its XDP path serves; daemon.dataplane = \"userspace\" has none",
        );
    }
    let mut seen = HashMap::new();
    for (i, name) in b.listeners.iter().flatten().enumerate() {
        let path = format!("bgp.listeners[{i}]");
        if let Some(first) = seen.insert(name.as_str(), i) {
            errs.push(path, format!("{name:?} duplicates bgp.listeners[{first}]"));
            continue;
        }
        match c.listeners.iter().find(|l| l.name == *name) {
            None => errs.push(path, format!("unknown listener {name:?}")),
            Some(l) if !l.protocol.in_kernel() => errs.push(
                path,
                format!(
                    "listener {name:?} is {}; only tcp and udp listeners (the XDP path) are announced",
                    l.protocol
                ),
            ),
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use crate::config::testing::{BASE, DAEMON, errors, parse};

    fn with_bgp(bgp: &str) -> String {
        format!("{BASE}\n[bgp]\n{bgp}\n")
    }

    #[test]
    fn defaults() {
        let c = parse(BASE);
        assert_eq!(c.bgp, super::Bgp::default());
        assert!(!c.bgp.enabled);
        assert_eq!(c.bgp.table, 100);
        assert_eq!(c.bgp.protocol, 201);
        assert_eq!(c.bgp.drain_file.to_str(), Some("/var/lib/lb/drained"));
    }

    #[test]
    fn every_bound_is_enforced_with_its_key_path() {
        for (bgp, want) in [
            (
                "table = 254",
                "bgp.table: 254 is reserved (0 unspec, 253 default, 254 main, 255 local); pick a table of its own",
            ),
            (
                "table = 0",
                "bgp.table: 0 is reserved (0 unspec, 253 default, 254 main, 255 local); pick a table of its own",
            ),
            (
                "protocol = 12",
                "bgp.protocol: 12 is reserved (0-4: the kernel's, 12: BIRD's own); pick one of 5..=255 but 12",
            ),
            (
                "protocol = 3",
                "bgp.protocol: 3 is reserved (0-4: the kernel's, 12: BIRD's own); pick one of 5..=255 but 12",
            ),
            (
                "drain_file = \"drained\"",
                "bgp.drain_file: \"drained\" is not an absolute path",
            ),
            (
                "drain_file = \"/\"",
                "bgp.drain_file: \"/\" exists and is not a regular file",
            ),
            (
                "listeners = [\"nope\"]",
                "bgp.listeners[0]: unknown listener \"nope\"",
            ),
            (
                "listeners = [\"web\", \"web\"]",
                "bgp.listeners[1]: \"web\" duplicates bgp.listeners[0]",
            ),
        ] {
            assert_eq!(errors(&with_bgp(bgp)), [want], "{bgp}");
        }
        assert!(errors(&with_bgp("table = 4294967295\nprotocol = 255")).is_empty());
        let too_big = super::super::Config::parse(&with_bgp("table = 4294967296"));
        assert!(too_big.is_err());
        let unknown = super::super::Config::parse(&with_bgp("tabel = 7"));
        assert!(
            unknown
                .unwrap_err()
                .to_string()
                .contains("unknown field `tabel`"),
            "typos are errors"
        );
    }

    #[test]
    fn only_xdp_listeners_are_announced() {
        let text = format!(
            "{DAEMON}dataplane = \"auto\"\n{}\n[[listener]]\nname = \"tls\"\nprotocol = \"tls\"\naddress = \"10.0.0.9\"\nport = 443\ntarget_group = \"web\"\n  [listener.tls]\n  [[listener.tls.certificate]]\n  cert = \"/c.pem\"\n  key = \"/k.pem\"\n\n[bgp]\nenabled = true\nlisteners = [\"tls\"]\n",
            crate::config::testing::WEB
        );
        let errs = errors(&text);
        assert!(
            errs.contains(
                &"bgp.listeners[0]: listener \"tls\" is tls; only tcp and udp listeners (the XDP path) are announced"
                    .to_owned()
            ),
            "{errs:?}"
        );
        let c = parse(&text);
        let announced: Vec<&str> = c.announced_listeners().map(|l| l.name.as_str()).collect();
        assert_eq!(
            announced,
            [] as [&str; 0],
            "only the named ones, and tls never"
        );
        let all = parse(&format!("{BASE}\n[bgp]\nenabled = true\n"));
        let addrs: Vec<IpAddr> = all.announced_listeners().map(|l| l.address).collect();
        assert_eq!(addrs, ["10.0.0.100".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn announcing_needs_the_xdp_path() {
        let text = format!(
            "[daemon]\ndataplane = \"userspace\"\n{}\n[bgp]\nenabled = true\n",
            crate::config::testing::WEB
        );
        assert_eq!(
            errors(&text),
            [
                "bgp.enabled: a host announces the VIPs its XDP path serves; daemon.dataplane = \"userspace\" has none"
            ]
        );
    }
}
