//! `[[listener]]`: what clients connect to.
use std::{fmt, net::IpAddr, path::PathBuf};

use lb_common::{PROTO_TCP, PROTO_UDP, VipKey};
use serde::Deserialize;

use super::{
    Config, ListenerTls,
    http::{Action, Rule},
};
use crate::net;

/// Protocol of a listener or a target group. `tcp` and `udp` listeners are
/// served by the XDP program (or by the userspace TCP proxy when there is no
/// XDP); `tls`, `http` and `https` listeners always by the daemon's sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Tls,
    Http,
    Https,
}

impl Protocol {
    /// IP protocol number: of `VIPS` keys, and for telling which listeners
    /// would compete for the same socket.
    pub const fn ip_proto(self) -> u8 {
        match self {
            Protocol::Udp => PROTO_UDP,
            Protocol::Tcp | Protocol::Tls | Protocol::Http | Protocol::Https => PROTO_TCP,
        }
    }

    /// Whether the XDP program can serve a listener of this protocol.
    pub const fn in_kernel(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
    }

    /// Whether a listener of this protocol can forward to a target group of
    /// `group`'s protocol: as in ELB, a TLS listener to TCP or TLS targets,
    /// HTTP(S) listeners to HTTP or HTTPS targets.
    pub const fn accepts_group(self, group: Protocol) -> bool {
        match self {
            Protocol::Tcp => matches!(group, Protocol::Tcp),
            Protocol::Udp => matches!(group, Protocol::Udp),
            Protocol::Tls => matches!(group, Protocol::Tcp | Protocol::Tls),
            Protocol::Http | Protocol::Https => matches!(group, Protocol::Http | Protocol::Https),
        }
    }

    /// The config spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Tls => "tls",
            Protocol::Http => "http",
            Protocol::Https => "https",
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
    /// Must be one the target group's protocol accepts
    /// ([`Protocol::accepts_group`]).
    pub protocol: Protocol,
    /// The VIP address, IPv4 or IPv6.
    pub address: IpAddr,
    /// The VIP port.
    pub port: u16,
    /// Refuses removing the listener (by API or reload) while set.
    #[serde(default)]
    pub deletion_protection: bool,
    /// Name of the `[[target_group]]` that receives its flows. Required for
    /// tcp, udp and tls listeners; for http and https a shorthand for a
    /// `default_action` forwarding to it.
    pub target_group: Option<String>,
    /// http/https: what requests no rule matches get ([`super::http`]).
    pub default_action: Option<Action>,
    /// http/https: `[[listener.rule]]`, evaluated by priority.
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
    /// http/https: seconds a client connection may be idle.
    pub idle_timeout: Option<u32>,
    /// http/https: target connections one HTTP/2 client connection may
    /// hold at once (its other streams wait for one).
    pub http2_max_target_connections: Option<u32>,
    /// http/https: normalise request paths before the rules see them
    /// (and the target gets them).
    pub normalize_path: Option<bool>,
    /// http/https: file receiving one access-log line per request.
    pub access_log: Option<PathBuf>,
    /// Listeners the daemon serves: client connections open at once
    /// ([`super::caps`]).
    pub max_connections: Option<u32>,
    /// Listeners the daemon serves: client connections open at once from
    /// one client (an IPv4 address, an IPv6 `client_ipv6_prefix`).
    pub max_connections_per_client: Option<u32>,
    /// Listeners the daemon serves: the prefix length by which IPv6
    /// clients are one client for `max_connections_per_client`.
    pub client_ipv6_prefix: Option<u32>,
    /// `[listener.tls]`: certificates and policy; required for `tls` and
    /// `https` listeners, refused for others.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
}

/// Which listeners can own a VIP found in the kernel's maps, for
/// [`Config::vip_name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VipOwners {
    /// Only listeners the XDP program serves (`tcp`, `udp`): a `tls`
    /// listener on the same address and port is not that VIP's.
    InKernel,
    /// Any listener with that address, port and IP protocol.
    Any,
}

impl Config {
    /// The name the VIP `key` of the maps is shown by: its listener's (one
    /// of `owners`), or `address:port/proto` when there is none (a stale
    /// VIP).
    pub fn vip_name(&self, key: &VipKey, owners: VipOwners) -> String {
        self.listeners
            .iter()
            .filter(|l| owners == VipOwners::Any || l.protocol.in_kernel())
            .find(|l| net::vip_key(l.address, l.port, l.protocol.ip_proto()) == *key)
            .map_or_else(|| net::display_vip(key), |l| l.name.clone())
    }
}
