//! The connection caps of listeners the daemon serves:
//! `max_connections` and `max_connections_per_client` (keys of
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
}

/// Bounds, and no cap where the daemon holds no connections: on `udp`
/// listeners (datagrams; the relay bounds its flows), and on `tcp` ones
/// the XDP program serves (`dataplane = "xdp"`), where no connection is
/// ever accepted by the daemon.
pub(super) fn check(c: &Config, errs: &mut ValidationErrors) {
    for (i, l) in c.listeners.iter().enumerate() {
        let keys = [
            ("max_connections", l.max_connections),
            ("max_connections_per_client", l.max_connections_per_client),
        ];
        for (key, value) in keys {
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
                errs.range(path, n, &MAX_CONNECTIONS);
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
                c.listeners[1].max_connections_per_client()
            ),
            (10_000, 1_000)
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
            errors(&with("xdp", "protocol = \"tcp\"\nmax_connections = 10")),
            [
                "listener[1].max_connections: only for listeners the daemon serves (tls, http, https, and tcp without XDP); this tcp listener is served by the XDP program"
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
