//! `[[target_group]]`: targets and how flows are spread over them.
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use super::{
    DEFAULT_TCP_IDLE_TIMEOUT, DEFAULT_UDP_IDLE_TIMEOUT, DEFAULT_WEIGHT, HealthCheckConfig, Protocol,
};

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
    /// `[target_group.health_check]`: how targets are checked (on by default).
    #[serde(default)]
    pub health_check: HealthCheckConfig,
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
            Protocol::Udp => self.udp_idle_timeout,
            _ => self.tcp_idle_timeout,
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
