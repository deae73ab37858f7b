//! The connection caps of listeners the daemon serves:
//! `max_connections`, `max_connections_per_client` and the
//! `client_ipv6_prefix` that says what one IPv6 client is (keys of
//! [`super::Listener`]), their defaults, bounds and checks.
use std::ops::RangeInclusive;

use super::{Config, Dataplane, Listener, Protocol, validation_errors::ValidationErrors};

/// Default of `listener.max_connections`: far more than one host's
/// clients usually hold, far fewer than the descriptors and memory a flood
/// of idle connections could otherwise take (two descriptors and a few
/// tens of KiB each).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;
/// Default of `listener.max_connections_per_client`: a tenth of the
/// listener, so one address (a NAT gateway included) cannot take it all.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: u32 = 1_000;
/// Bounds of both keys.
pub const MAX_CONNECTIONS: RangeInclusive<u32> = 1..=1_000_000;
/// Default of `listener.client_ipv6_prefix`: a /64, since a host may use
/// every address of its /64 (RFC 8273: one per host), so one host's 2^64
/// addresses are one client (counted by address, it could open
/// `max_connections_per_client` connections from each). The hosts of one
/// shared /64 share it, as IPv4 hosts behind one NAT share an address.
pub const DEFAULT_CLIENT_IPV6_PREFIX: u32 = 64;
/// Bounds of `listener.client_ipv6_prefix`: from a /32 (a whole provider's
/// block as one client) to a /128 (one address).
pub const CLIENT_IPV6_PREFIX: RangeInclusive<u32> = 32..=128;

impl Listener {
    /// `max_connections`, defaulted.
    pub fn max_connections(&self) -> u32 {
        self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS)
    }

    /// `max_connections_per_client`, defaulted.
    pub fn max_connections_per_client(&self) -> u32 {
        self.max_connections_per_client
            .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_CLIENT)
    }

    /// `client_ipv6_prefix`, defaulted; within [`CLIENT_IPV6_PREFIX`]
    /// once checked, and clamped to it before.
    pub fn client_ipv6_prefix(&self) -> u8 {
        let bits = self
            .client_ipv6_prefix
            .unwrap_or(DEFAULT_CLIENT_IPV6_PREFIX)
            .clamp(*CLIENT_IPV6_PREFIX.start(), *CLIENT_IPV6_PREFIX.end());
        bits as u8
    }
}

/// Bounds, and no cap where the daemon holds no connections: on `udp`
/// listeners (datagrams; the relay bounds its flows), and on `tcp` ones
/// the XDP program serves (`dataplane = "xdp"`), where no connection is
/// ever accepted by the daemon.
pub(super) fn check(c: &Config, errs: &mut ValidationErrors) {
    for (i, l) in c.listeners.iter().enumerate() {
        let keys = [
            ("max_connections", l.max_connections, &MAX_CONNECTIONS),
            (
                "max_connections_per_client",
                l.max_connections_per_client,
                &MAX_CONNECTIONS,
            ),
            (
                "client_ipv6_prefix",
                l.client_ipv6_prefix,
                &CLIENT_IPV6_PREFIX,
            ),
        ];
        for (key, value, bounds) in keys {
            let Some(n) = value else { continue };
            let path = format!("listener[{i}].{key}");
            let served_by_xdp = l.protocol == Protocol::Tcp && c.daemon.dataplane == Dataplane::Xdp;
            if l.protocol == Protocol::Udp || served_by_xdp {
                errs.push(
                    path,
                    format!(
                        "only for listeners the daemon serves (tls, http, https, and tcp without XDP); this {} listener {}",
                        l.protocol,
                        if served_by_xdp {
                            "is served by the XDP program"
                        } else {
                            "has no connections"
                        }
                    ),
                );
            } else {
                errs.range(path, n, bounds);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{BASE, errors, parse};

    /// BASE (an XDP tcp listener) plus `listener` and `dataplane`.
    fn with(dataplane: &str, listener: &str) -> String {
        let base = BASE.replace(
            "interfaces = [\"eth0\"]\n",
            &format!("interfaces = [\"eth0\"]\ndataplane = \"{dataplane}\"\n"),
        );
        format!(
            "{base}\n[[listener]]\nname = \"second\"\naddress = \"10.0.0.101\"\nport = 80\ntarget_group = \"web\"\n{listener}\n"
        )
    }

    #[test]
    fn caps_default_and_bounds() {
        let c = parse(&with("userspace", "protocol = \"tcp\""));
        assert_eq!(
            (
                c.listeners[1].max_connections(),
                c.listeners[1].max_connections_per_client(),
                c.listeners[1].client_ipv6_prefix()
            ),
            (10_000, 1_000, 64)
        );
        assert_eq!(
            errors(&with(
                "userspace",
                "protocol = \"tcp\"\nmax_connections = 0\nmax_connections_per_client = 1000001"
            )),
            [
                "listener[1].max_connections: 0 is outside 1..=1000000",
                "listener[1].max_connections_per_client: 1000001 is outside 1..=1000000",
            ]
        );
        for prefix in [31, 129] {
            assert_eq!(
                errors(&with(
                    "userspace",
                    &format!("protocol = \"tcp\"\nclient_ipv6_prefix = {prefix}")
                )),
                [format!(
                    "listener[1].client_ipv6_prefix: {prefix} is outside 32..=128"
                )]
            );
        }
        for prefix in [32, 56, 128] {
            let c = parse(&with(
                "userspace",
                &format!("protocol = \"tcp\"\nclient_ipv6_prefix = {prefix}"),
            ));
            assert_eq!(u32::from(c.listeners[1].client_ipv6_prefix()), prefix);
        }
        assert!(
            errors(&with(
                "auto",
                "protocol = \"tcp\"\nmax_connections = 1\nmax_connections_per_client = 1"
            ))
            .is_empty()
        );
    }

    /// Where no connection reaches the daemon, a cap would be a promise
    /// nobody keeps.
    #[test]
    fn caps_only_where_the_daemon_holds_connections() {
        assert_eq!(
            errors(&with(
                "xdp",
                "protocol = \"tcp\"\nmax_connections = 10\nclient_ipv6_prefix = 56"
            )),
            [
                "listener[1].max_connections: only for listeners the daemon serves (tls, http, https, and tcp without XDP); this tcp listener is served by the XDP program",
                "listener[1].client_ipv6_prefix: only for listeners the daemon serves (tls, http, https, and tcp without XDP); this tcp listener is served by the XDP program"
            ]
        );
        let udp = with(
            "userspace",
            "protocol = \"udp\"\nmax_connections_per_client = 10",
        )
        .replace(
            "protocol = \"tcp\"\nport = 8080",
            "protocol = \"udp\"\nport = 8080",
        )
        .replace(
            "name = \"web\"\nprotocol = \"tcp\"\naddress",
            "name = \"web\"\nprotocol = \"udp\"\naddress",
        );
        assert_eq!(
            errors(&udp),
            [
                "listener[1].max_connections_per_client: only for listeners the daemon serves (tls, http, https, and tcp without XDP); this udp listener has no connections"
            ]
        );
    }
}
