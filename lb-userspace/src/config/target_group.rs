//! `[[target_group]]`: targets and how flows are spread over them.
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use super::{
    DEFAULT_TCP_IDLE_TIMEOUT, DEFAULT_UDP_IDLE_TIMEOUT, DEFAULT_WEIGHT, HealthCheckConfig,
    Protocol, TargetGroupTls, http::Algorithm,
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
    /// dsr TCP groups: whether a connection that reaches a balancer host
    /// with no state for it, after the group's table changed, also goes to
    /// the target the previous table gave it (forwarded there by the live
    /// target's `lb_decap` when that has no socket for it). Unset means on
    /// for dsr TCP groups; setting it on a nat or udp group is refused.
    #[serde(default)]
    pub second_chance: Option<bool>,
    /// What the flow hash covers.
    #[serde(default)]
    pub stickiness: Stickiness,
    /// Seconds a TCP flow may be idle before it is rebalanced.
    #[serde(default = "default_tcp_idle_timeout")]
    pub tcp_idle_timeout: u32,
    /// Seconds a UDP flow may be idle before it is rebalanced.
    #[serde(default = "default_udp_idle_timeout")]
    pub udp_idle_timeout: u32,
    /// Seconds a deregistered target keeps its existing flows (draining)
    /// before they are moved; 0 moves them at once. ELB's default 300.
    #[serde(default = "default_deregistration_delay")]
    pub deregistration_delay: u32,
    /// Seconds over which a new or recovered target's share of new flows
    /// ramps up linearly; 0 turns slow start off (the default).
    #[serde(default)]
    pub slow_start: u32,
    /// Whether flows spread over healthy targets of every zone (`true`) or
    /// stay in `daemon.zone` while it has a healthy target (`false`, NLB's
    /// default). Without `daemon.zone` zones play no part.
    #[serde(default)]
    pub cross_zone: bool,
    /// Whether flows to a target that turned unhealthy move to another target
    /// on their next packet (`true`, NLB's default) or stay until they end.
    #[serde(default = "default_true")]
    pub unhealthy_connection_termination: bool,
    /// Refuses removing the group (by API or reload) while set.
    #[serde(default)]
    pub deletion_protection: bool,
    /// http/https: seconds an idle back-end connection is kept for reuse;
    /// 0 opens one connection per request (an anti-pattern).
    pub keep_alive_timeout: Option<u32>,
    /// http/https: seconds a target has to start answering (else 504).
    pub response_timeout: Option<u32>,
    /// http/https: connections opened to each target ahead of requests.
    pub warm_connections: Option<u32>,
    /// http/https: how requests are spread over targets.
    pub algorithm: Option<Algorithm>,
    /// Send a PROXY protocol v2 header first on every connection to a
    /// target (userspace listeners only: the XDP path forwards packets as
    /// they are).
    #[serde(default)]
    pub proxy_protocol_v2: bool,
    /// `[target_group.tls]`: how to verify targets; required when
    /// `protocol = "tls"`.
    #[serde(default)]
    pub tls: Option<TargetGroupTls>,
    /// `[target_group.health_check]`: how targets are checked (on by default).
    #[serde(default)]
    pub health_check: HealthCheckConfig,
    /// `[[target_group.target]]` tables; may be empty (flows are dropped).
    #[serde(default, rename = "target")]
    pub targets: Vec<TargetDescription>,
}

/// ELB's default deregistration delay, seconds.
pub const DEFAULT_DEREGISTRATION_DELAY: u32 = 300;

fn default_deregistration_delay() -> u32 {
    DEFAULT_DEREGISTRATION_DELAY
}
fn default_true() -> bool {
    true
}

fn default_tcp_idle_timeout() -> u32 {
    DEFAULT_TCP_IDLE_TIMEOUT
}
fn default_udp_idle_timeout() -> u32 {
    DEFAULT_UDP_IDLE_TIMEOUT
}

impl TargetGroup {
    /// Address and port a target receives traffic on.
    pub fn endpoint(&self, target: &TargetDescription) -> SocketAddr {
        SocketAddr::new(target.address, target.port.unwrap_or(self.port))
    }

    /// Whether the data path gives this group's connections a second
    /// chance (see `second_chance`).
    pub fn second_chance(&self) -> bool {
        self.forwarding == Forwarding::Dsr
            && self.protocol == Protocol::Tcp
            && self.second_chance.unwrap_or(true)
    }

    /// Idle timeout of flows of `protocol`, seconds.
    pub fn idle_timeout(&self, protocol: Protocol) -> u32 {
        match protocol {
            Protocol::Udp => self.udp_idle_timeout,
            _ => self.tcp_idle_timeout,
        }
    }
}

/// `target_group.forwarding`: how the XDP program hands a client's packet
/// to the target (what each mode can serve: `config::dsr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forwarding {
    /// Destination NAT to the target; replies are translated back in XDP.
    #[default]
    Nat,
    /// Direct server return: the client's packet, untouched, inside an
    /// outer IPv4 / IPv6 header to the target, which takes it off
    /// (`lb target attach`, or `tunl0` / `ip6tnl0`) and answers the client
    /// directly.
    Dsr,
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

/// `[[target_group.target]]`: one target registered in a group (ELB's
/// `TargetDescription`); not the `TARGETS` map entry, `lb_common::Target`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetDescription {
    /// Same family as the group's listeners (nat cannot translate v4 <-> v6).
    pub address: IpAddr,
    /// Defaults to the group's `port`.
    pub port: Option<u16>,
    /// Relative share of new flows; 0 keeps the target registered (existing
    /// flows continue) but gives it no new ones.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Availability zone (any name, e.g. `eu-west-1a`); see
    /// `cross_zone` and `daemon.zone`.
    #[serde(default)]
    pub zone: Option<String>,
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}
