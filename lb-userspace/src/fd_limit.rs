//! The daemon's open-file limit (`RLIMIT_NOFILE`).
//!
//! Every connection the daemon serves holds two descriptors (the client's
//! and the target's), so the listeners' `max_connections` promise nothing
//! under the soft limit a shell or a plain service gives (often 1024):
//! `accept` would fail with `EMFILE` long before the cap. `lb run` raises
//! the soft limit to the hard one, as the kernel allows any process to do
//! (systemd's own advice for daemons that need many descriptors), and warns
//! when even the hard limit is below what the config's caps can take.
use std::io;

use crate::config::{Config, Protocol};

/// Descriptors per connection the daemon serves: client and target.
const PER_CONNECTION: u64 = 2;

/// Descriptors besides connections: listening sockets, the API and metrics
/// endpoints and their clients, BPF maps and programs, health probes, logs.
const BASE_FDS: u64 = 1024;

/// `RLIMIT_NOFILE`, soft and hard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub soft: u64,
    pub hard: u64,
}

/// The current limit.
pub fn current() -> io::Result<FdLimit> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit for the call's duration.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(FdLimit {
        soft: r.rlim_cur,
        hard: r.rlim_max,
    })
}

/// Raises the soft limit to the hard one; returns the limit now in force.
pub fn raise() -> io::Result<FdLimit> {
    let limit = current()?;
    if limit.soft >= limit.hard {
        return Ok(limit);
    }
    let r = libc::rlimit {
        rlim_cur: limit.hard,
        rlim_max: limit.hard,
    };
    // SAFETY: `r` is a valid rlimit; setrlimit only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    current()
}

/// Descriptors the config's connection caps can take at once. `tcp`
/// listeners count only when the daemon serves them (no XDP); `udp` ones
/// never hold connections.
pub fn needed(config: &Config, xdp_serves_tcp: bool) -> u64 {
    let connections: u64 = config
        .listeners
        .iter()
        .filter(|l| match l.protocol {
            Protocol::Udp => false,
            Protocol::Tcp => !xdp_serves_tcp,
            Protocol::Tls | Protocol::Http | Protocol::Https => true,
        })
        .map(|l| u64::from(l.max_connections()))
        .sum();
    BASE_FDS + PER_CONNECTION * connections
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{BASE, parse};

    #[test]
    fn counts_two_per_connection_of_listeners_the_daemon_serves() {
        // BASE: the tcp listener `web` with the default cap (10,000).
        let c = parse(&format!(
            r#"{BASE}
[[listener]]
name = "site"
protocol = "http"
address = "10.0.0.100"
port = 8000
target_group = "web"
max_connections = 100

[[listener]]
name = "dns"
protocol = "udp"
address = "10.0.0.100"
port = 53
target_group = "web"
"#
        ));
        // The udp listener holds no connections; `web` counts only
        // when the daemon, not XDP, serves it.
        assert_eq!(needed(&c, false), BASE_FDS + 2 * 10_100);
        assert_eq!(needed(&c, true), BASE_FDS + 2 * 100);
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let limit = raise().expect("getrlimit/setrlimit");
        assert_eq!(limit.soft, limit.hard);
        assert_eq!(current().expect("getrlimit"), limit);
    }
}
