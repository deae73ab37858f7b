//! Announcing this host's VIPs over BGP through a BIRD 2 running beside the
//! daemon, which speaks no BGP itself: the daemon keeps one blackhole route
//! per announced VIP (/32, /128) in a routing table of its own
//! (`bgp.table`), tagged with its own route protocol number
//! (`bgp.protocol`), and BIRD's `kernel` protocol learns that table and
//! exports the routes to the routers (`deploy/bird/`).
//!
//! The kernel holds the routes, not the daemon: a daemon that crashes or
//! restarts withdraws nothing (the XDP program keeps forwarding meanwhile),
//! BIRD re-learns the table when it restarts, and a host that dies takes its
//! BGP sessions with it. The daemon deletes them on `lb host drain`, on `lb
//! down`, when its data path is gone, and when the config stops naming a VIP.
//!
//! - [`routing`]: what is asked of the kernel (the [`Routing`] trait);
//! - [`kernel`]: that over rtnetlink;
//! - [`drain`]: the drain state, a file that outlives the daemon;
//! - [`announcer`]: the reconciler and its report;
//! - [`metrics`]: its Prometheus series.
pub mod announcer;
pub mod drain;
pub mod kernel;
pub mod metrics;
pub mod routing;

use std::{net::IpAddr, time::Duration};

pub use announcer::{Announcer, HostReport, SyncOutcome, Withheld};
pub use drain::{DrainError, DrainFile};
pub use kernel::KernelRouting;
pub use metrics::AnnounceMetrics;
pub use routing::{Owner, Routing, RoutingError};

use crate::config::Config;

/// How often a running daemon looks again: at the drain file, at its XDP
/// attachments and at its routes (one deleted by hand comes back). Short
/// against BGP's timers; each look is a stat and a few netlink requests.
pub const RECHECK: Duration = Duration::from_secs(2);

/// The owner of `config`'s routes.
pub fn owner(config: &Config) -> Owner {
    Owner {
        table: config.bgp.table,
        protocol: config.bgp.protocol,
    }
}

/// `lb down`: deletes every route of `config`'s owner, announced or not;
/// returns the VIPs withdrawn. Runs its own small runtime (`lb down` has
/// none).
pub fn withdraw_all(config: &Config) -> Result<Vec<IpAddr>, RoutingError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RoutingError::Socket)?;
    runtime.block_on(async {
        let routing = KernelRouting::open()?;
        let mut announcer = Announcer::new(routing, AnnounceMetrics::default());
        announcer.withdraw_all(owner(config)).await
    })
}

#[cfg(test)]
mod tests;
