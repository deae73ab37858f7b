//! The UDP relay: `udp` listeners served from the daemon's own sockets
//! when there is no XDP path (`dataplane = "userspace"`, or `auto` after a
//! failed attach), so the same config keeps serving UDP.
//!
//! One bound socket per listener receives every client's datagrams
//! ([`relay`]). A client address (source ip:port) is a flow ([`flows`]):
//! its first datagram picks a target by weighted round robin over the
//! [`crate::routable`] view, as the TCP proxy does, and opens a socket
//! connected to that target from an ephemeral port; later datagrams go
//! out through it. A task per flow ([`target`]) sends the target's
//! datagrams back to the client from the listener's socket, so the client
//! sees them come from the VIP and port it addressed.
//!
//! Flows end after the target group's `udp_idle_timeout` without a
//! datagram either way, when their target stops keeping flows (unhealthy
//! with connection termination on, or drained and removed: the next
//! datagram picks again, as the XDP path moves flows on their next packet;
//! a draining target keeps its flows until its deregistration delay ends),
//! when the listener's group changes, and when the listener is removed.
//! Each flow holds one socket, hence one file descriptor and one port of
//! the ephemeral range (`net.ipv4.ip_local_port_range`, 28,232 ports by
//! default, shared by every listener: beyond it opening a flow fails and
//! its datagram is dropped as `flow_socket`); a listener holds at most
//! [`MAX_FLOWS`], beyond which new clients' datagrams are dropped and
//! counted.
mod flows;
mod relay;
mod target;

use std::{net::SocketAddr, time::Duration};

use tokio::sync::{mpsc, oneshot};

pub use relay::serve;

use crate::config::{Config, DEFAULT_UDP_IDLE_TIMEOUT, Listener};

/// Largest datagram relayed whole: every UDP payload over IPv4 (65,507
/// bytes) and IPv6 without jumbograms (65,527) fits.
pub const MAX_DATAGRAM: usize = 65_536;

/// Flows one listener holds at most (each is a socket: mind the file
/// descriptor limit; the systemd unit raises it to 1,048,576).
pub const MAX_FLOWS: usize = 65_536;

/// How one udp listener relays, built from the config on every reload and
/// handed to the running relay without touching its socket or flows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpRoute {
    pub listener: String,
    pub target_group: String,
    /// The group's `udp_idle_timeout`.
    pub idle_timeout: Duration,
    /// Flows at most; [`MAX_FLOWS`] but in tests.
    pub max_flows: usize,
}

impl UdpRoute {
    /// The route of `l` (a udp listener of a validated config).
    pub fn build(config: &Config, l: &Listener) -> Self {
        let group = l
            .target_group
            .as_deref()
            .and_then(|g| config.target_group(g));
        Self {
            listener: l.name.clone(),
            target_group: l.target_group.clone().unwrap_or_default(),
            idle_timeout: Duration::from_secs(u64::from(
                group.map_or(DEFAULT_UDP_IDLE_TIMEOUT, |g| g.udp_idle_timeout),
            )),
            max_flows: MAX_FLOWS,
        }
    }
}

/// One flow, for `lb flows`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    pub client: SocketAddr,
    pub target: SocketAddr,
    /// Since the flow's last datagram either way.
    pub idle: Duration,
}

/// A relay's answer to a [`FlowsQuery`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowsSnapshot {
    /// Flows in the table.
    pub entries: usize,
    /// Of those, within the idle timeout (the rest go at the next sweep).
    pub active: usize,
    /// At most the asked number of flows.
    pub sample: Vec<FlowInfo>,
}

/// Asks a running relay for its flows: (sample size, where to answer).
pub type FlowsQuery = (usize, oneshot::Sender<FlowsSnapshot>);

/// Flows queries a relay holds before the asker has to wait.
pub const QUERY_QUEUE: usize = 4;

/// The sending half of a relay's query channel, and the receiving half it
/// serves.
pub fn query_channel() -> (mpsc::Sender<FlowsQuery>, mpsc::Receiver<FlowsQuery>) {
    mpsc::channel(QUERY_QUEUE)
}
