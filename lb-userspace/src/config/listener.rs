//! `[[listener]]`: what clients connect to.
use std::{fmt, net::IpAddr};

use lb_common::{PROTO_TCP, PROTO_UDP};
use serde::Deserialize;

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
