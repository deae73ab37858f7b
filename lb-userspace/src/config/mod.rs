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

mod api;
mod bgp;
pub mod caps;
mod daemon;
mod dsr;
mod health_check;
pub mod http;
mod listener;
mod target_group;
#[cfg(test)]
pub(crate) mod testing;
mod tls;
mod validate;
mod validation_errors;

use std::{
    fmt, fs, io,
    ops::RangeInclusive,
    path::{Path, PathBuf},
};

use lb_common::limits;
use serde::Deserialize;
use thiserror::Error;

pub use api::{Api, DEFAULT_API_SOCKET, Effect, Policy, Statement, Token};
pub use bgp::{Bgp, DEFAULT_DRAIN_FILE, DEFAULT_PROTOCOL, DEFAULT_TABLE};
pub use daemon::{Daemon, Dataplane, ReplyInterfaceCheck, XdpMode};
pub use health_check::{
    CheckAddress, CheckKind, CheckPort, CheckProtocol, HealthCheck, HealthCheckConfig, HttpCheck,
    Matcher,
};
pub use listener::{Listener, Protocol, VipOwners};
pub use target_group::{Forwarding, Stickiness, TargetDescription, TargetGroup};
pub use tls::{Certificate, ListenerTls, SecurityPolicy, TargetGroupTls};
pub use validation_errors::{ValidationError, ValidationErrors};

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
/// Bounds of `daemon.flow_capacity`. Below 1024 a few busy clients fill the
/// table; the ceiling is lb_common's (memory).
pub const FLOW_CAPACITY: RangeInclusive<u32> = 1024..=lb_common::limits::MAX_FLOW_CAPACITY;
/// Bounds of `deregistration_delay`, seconds (ELB's range).
pub const DEREGISTRATION_DELAY: RangeInclusive<u32> = 0..=3600;
/// Bounds of `slow_start`, seconds. ELB allows 30..=900 (0 = off); shorter
/// ramps are allowed here for tests and small deployments.
pub const SLOW_START: RangeInclusive<u32> = 0..=900;
/// Bounds of `daemon.max_vips`: the compiled `VIPS` map size is the ceiling.
pub const MAX_VIPS: RangeInclusive<u32> = 1..=limits::MAX_VIPS;
/// Bounds of `daemon.worker_threads` (0: one per CPU).
pub const WORKER_THREADS: RangeInclusive<u32> = 0..=1024;
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
    /// `[api]`: management API sockets and access policies.
    #[serde(default)]
    pub api: Api,
    /// `[bgp]`: whether and how this host announces its VIPs.
    #[serde(default)]
    pub bgp: Bgp,
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
mod docs_tests;
#[cfg(test)]
mod tests;
