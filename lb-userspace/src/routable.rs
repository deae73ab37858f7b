//! The seam between the control plane and every data path: which targets of
//! each target group take new flows, connections or requests right now, and
//! with what weight, after health checks, draining, slow start and zones have
//! had their say.
//!
//! The control plane publishes a new [`Routable`] through a
//! `tokio::sync::watch` channel whenever any of those changes; the userspace
//! listeners read the latest value for each new connection or request. The
//! XDP path gets the same decision through its Maglev tables.
use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};

use crate::config::Config;

/// One target that may get new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutableTarget {
    pub endpoint: SocketAddr,
    /// Relative share, > 0.
    pub weight: u32,
}

/// Per target group (by name): the targets that may get new work. A group
/// with no entry or an empty list has nothing to send to (answer 503 / drop).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routable {
    pub groups: BTreeMap<String, Vec<RoutableTarget>>,
}

impl Routable {
    /// Every target with a weight above 0, as the config lists it: the view
    /// before any health check has run.
    pub fn from_config(config: &Config) -> Self {
        let groups = config
            .target_groups
            .iter()
            .map(|g| {
                let targets = g
                    .targets
                    .iter()
                    .filter(|t| t.weight > 0)
                    .map(|t| RoutableTarget {
                        endpoint: g.endpoint(t),
                        weight: t.weight,
                    })
                    .collect();
                (g.name.clone(), targets)
            })
            .collect();
        Routable { groups }
    }

    /// The targets of `group` that may get new work (empty when unknown).
    pub fn targets(&self, group: &str) -> &[RoutableTarget] {
        self.groups.get(group).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// What the userspace listeners hold: always the latest [`Routable`].
pub type RoutableWatch = tokio::sync::watch::Receiver<Arc<Routable>>;

/// A channel holding `initial`, for tests and for the daemon's start.
pub fn channel(initial: Routable) -> (tokio::sync::watch::Sender<Arc<Routable>>, RoutableWatch) {
    tokio::sync::watch::channel(Arc::new(initial))
}
