//! The TOML config in ELB vocabulary: listeners (VIPs) forward to target
//! groups of targets. Load -> parse -> validate:
//!
//! * [`Config::parse`] turns text into types. Syntax errors, unknown keys
//!   (`deny_unknown_fields` everywhere: a typo must not be silently ignored) and
//!   type errors come from `toml` with line, column and key.
//! * [`Config::validate`] checks what types cannot express (ranges, references,
//!   uniqueness, limits of the data path) and returns every problem at once,
//!   each with its key path, so one `lb check` run shows the whole list.
//! * [`Config::load`] does both for a file.
//!
//! docs/config.md describes every key for operators; keep the two in step.

mod validate;

use std::{
    fmt, fs, io,
    net::{IpAddr, SocketAddr},
    ops::RangeInclusive,
    path::{Path, PathBuf},
};

use lb_common::{PROTO_TCP, PROTO_UDP, limits};
use serde::Deserialize;
use thiserror::Error;

pub use validate::{ValidationError, ValidationErrors};

/// Default of `daemon.pin_dir`.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/lb";
/// Default of `daemon.max_vips`.
pub const DEFAULT_MAX_VIPS: u32 = 64;
/// NLB's TCP idle timeout, seconds.
pub const DEFAULT_TCP_IDLE_TIMEOUT: u32 = 350;
/// NLB's UDP idle timeout, seconds.
pub const DEFAULT_UDP_IDLE_TIMEOUT: u32 = 120;
/// Default target weight.
pub const DEFAULT_WEIGHT: u32 = 1;

/// Bounds of `daemon.maglev_table_size`. Maglev needs a prime larger than the
/// number of targets (100x for shares within 1%). 131071 (2^17 - 1) is the
/// ceiling because the `MAGLEV` array holds `2 * max_vips * size` u32 entries:
/// at the ceiling and `max_vips = 1024` that is already 1 GiB of kernel memory.
pub const MAGLEV_TABLE_SIZE: RangeInclusive<u32> = 7..=131_071;
/// Bounds of `daemon.flow_capacity`. Below 1024 the LRU evicts live flows
/// under any real load; 2^24 entries is ~2.5 GiB for `FLOWS` plus `NAT` with
/// the kernel's per-entry overhead, more than any single host should pin.
pub const FLOW_CAPACITY: RangeInclusive<u32> = 1024..=16_777_216;
/// Bounds of `daemon.max_vips`: the compiled `VIPS` map size is the ceiling.
pub const MAX_VIPS: RangeInclusive<u32> = 1..=limits::MAX_VIPS;
/// Bounds of `tcp_idle_timeout`, seconds: NLB's configurable range.
pub const TCP_IDLE_TIMEOUT: RangeInclusive<u32> = 60..=6000;
/// Bounds of `udp_idle_timeout`, seconds. NLB fixes 120 s; short-lived
/// request/response protocols (DNS) benefit from going lower, but below 10 s
/// a slow reply would be rebalanced mid-exchange.
pub const UDP_IDLE_TIMEOUT: RangeInclusive<u32> = 10..=6000;
/// Bounds of a target's `weight` (0 = registered, no new flows).
pub const WEIGHT: RangeInclusive<u32> = 0..=1000;
/// Bounds of every `port`.
pub const PORT: RangeInclusive<u16> = 1..=65535;

/// Why a config could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("failed to read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to parse config {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("config {path} is invalid")]
    Invalid {
        path: PathBuf,
        #[source]
        errors: ValidationErrors,
    },
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Host-level settings: where to attach, map sizes.
    pub daemon: Daemon,
    /// `[[listener]]` tables: the VIPs.
    #[serde(default, rename = "listener")]
    pub listeners: Vec<Listener>,
    /// `[[target_group]]` tables.
    #[serde(default, rename = "target_group")]
    pub target_groups: Vec<TargetGroup>,
}

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Daemon {
    /// Interfaces the XDP program is attached to, client- and target-facing
    /// alike (it handles both directions). Required, non-empty.
    pub interfaces: Vec<String>,
    /// How the program is attached.
    #[serde(default)]
    pub xdp_mode: XdpMode,
    /// bpffs directory holding the pinned program, links and maps.
    #[serde(default = "default_pin_dir")]
    pub pin_dir: PathBuf,
    /// Slots of each VIP's Maglev table; prime, within [`MAGLEV_TABLE_SIZE`].
    #[serde(default = "default_maglev_table_size")]
    pub maglev_table_size: u32,
    /// Entries of the connection table (LRU) and of the NAT table; within
    /// [`FLOW_CAPACITY`].
    #[serde(default = "default_flow_capacity")]
    pub flow_capacity: u32,
    /// VIPs the maps are sized for (the Maglev map holds two tables per VIP);
    /// within [`MAX_VIPS`].
    #[serde(default = "default_max_vips")]
    pub max_vips: u32,
}

fn default_pin_dir() -> PathBuf {
    PathBuf::from(DEFAULT_PIN_DIR)
}
fn default_maglev_table_size() -> u32 {
    limits::DEFAULT_RING_SIZE
}
fn default_flow_capacity() -> u32 {
    limits::DEFAULT_FLOW_CAPACITY
}
fn default_max_vips() -> u32 {
    DEFAULT_MAX_VIPS
}

/// `daemon.xdp_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native XDP in the driver: fastest; attaching fails if unsupported.
    #[default]
    Driver,
    /// Generic (skb) XDP: works on any device, at kernel-stack speed.
    Generic,
    /// Driver mode, falling back to generic with a warning.
    Auto,
}

/// Protocol of a listener or a target group. More variants (http, https, tls)
/// come with the userspace path; code that only handles L4 asks
/// [`Protocol::ip_proto`], so adding one means extending a few matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// IP protocol number used in `VIPS` keys.
    pub const fn ip_proto(self) -> u8 {
        match self {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        }
    }

    /// The config spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[[listener]]`: one VIP, i.e. (address, port, protocol).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Unique name, used in logs, stats and errors.
    pub name: String,
    /// Must equal the target group's protocol.
    pub protocol: Protocol,
    /// The VIP address, IPv4 or IPv6.
    pub address: IpAddr,
    /// The VIP port.
    pub port: u16,
    /// Name of the `[[target_group]]` that receives its flows.
    pub target_group: String,
}

/// `[[target_group]]`: targets and how flows are spread and kept on them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetGroup {
    /// Unique name, referenced by listeners.
    pub name: String,
    /// Must equal the protocol of every listener that uses the group.
    pub protocol: Protocol,
    /// Port of targets that do not set their own.
    pub port: u16,
    /// How packets reach targets.
    #[serde(default)]
    pub forwarding: Forwarding,
    /// What the flow hash covers.
    #[serde(default)]
    pub stickiness: Stickiness,
    /// Seconds a TCP flow may be idle before it is rebalanced.
    #[serde(default = "default_tcp_idle_timeout")]
    pub tcp_idle_timeout: u32,
    /// Seconds a UDP flow may be idle before it is rebalanced.
    #[serde(default = "default_udp_idle_timeout")]
    pub udp_idle_timeout: u32,
    /// `[[target_group.target]]` tables; may be empty (flows are dropped).
    #[serde(default, rename = "target")]
    pub targets: Vec<Target>,
}

fn default_tcp_idle_timeout() -> u32 {
    DEFAULT_TCP_IDLE_TIMEOUT
}
fn default_udp_idle_timeout() -> u32 {
    DEFAULT_UDP_IDLE_TIMEOUT
}

impl TargetGroup {
    /// Address and port a target receives traffic on.
    pub fn endpoint(&self, target: &Target) -> SocketAddr {
        SocketAddr::new(target.address, target.port.unwrap_or(self.port))
    }

    /// Idle timeout of flows of `protocol`, seconds.
    pub fn idle_timeout(&self, protocol: Protocol) -> u32 {
        match protocol {
            Protocol::Tcp => self.tcp_idle_timeout,
            Protocol::Udp => self.udp_idle_timeout,
        }
    }
}

/// `target_group.forwarding`. Only NAT exists so far; `dsr` (IP-in-IP) is
/// planned, hence an enum rather than a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forwarding {
    /// Destination NAT to the target; replies are translated back in XDP.
    #[default]
    Nat,
}

/// `target_group.stickiness`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stickiness {
    /// Each flow (5-tuple) is hashed on its own.
    #[default]
    None,
    /// All flows of one client address go to the same target.
    SourceIp,
}

/// `[[target_group.target]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Same family as the group's listeners (nat cannot translate v4 <-> v6).
    pub address: IpAddr,
    /// Defaults to the group's `port`.
    pub port: Option<u16>,
    /// Relative share of new flows; 0 keeps the target registered (existing
    /// flows continue) but gives it no new ones.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

/// Counts printed by `lb check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub listeners: usize,
    pub target_groups: usize,
    /// Target registrations summed over groups.
    pub targets: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} listeners, {} target groups, {} targets",
            self.listeners, self.target_groups, self.targets
        )
    }
}

impl Config {
    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Config::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.validate().map_err(|errors| ConfigError::Invalid {
            path: path.to_owned(),
            errors,
        })?;
        Ok(config)
    }

    /// Parses TOML into the types, without the semantic checks of
    /// [`Config::validate`].
    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// The target group called `name`.
    pub fn target_group(&self, name: &str) -> Option<&TargetGroup> {
        self.target_groups.iter().find(|g| g.name == name)
    }

    /// Counts for a one-line report.
    pub fn summary(&self) -> Summary {
        Summary {
            listeners: self.listeners.len(),
            target_groups: self.target_groups.len(),
            targets: self.target_groups.iter().map(|g| g.targets.len()).sum(),
        }
    }
}

#[cfg(test)]
mod tests;
