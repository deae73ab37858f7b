//! The seam between the control plane and every data path: which targets of
//! each target group take new flows, connections or requests right now, and
//! with what weight, after health checks, draining, slow start and zones have
//! had their say.
//!
//! The control plane publishes a new [`Routable`] through a
//! `tokio::sync::watch` channel whenever any of those changes; the userspace
//! listeners read the latest value for each new connection or request. The
//! XDP path gets the same decision through its Maglev tables and target
//! states.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::Arc,
};

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
    /// Per target group: the targets whose established flows stay on them
    /// (the XDP path's `Active` and `Draining` states): every target of
    /// `groups`, plus draining ones and those that get no new flows for
    /// now (weight 0, another zone). A flow whose target is missing here
    /// (`Down`, or drained and removed) moves on its next packet. Only the
    /// UDP relay needs it: a TCP connection cannot move.
    pub keep_flows: BTreeMap<String, BTreeSet<SocketAddr>>,
}

impl Routable {
    /// Every target with a weight above 0, as the config lists it: the view
    /// before any health check has run. Every target keeps its flows.
    pub fn from_config(config: &Config) -> Self {
        let keep_flows = config
            .target_groups
            .iter()
            .map(|g| {
                let all = g.targets.iter().map(|t| g.endpoint(t)).collect();
                (g.name.clone(), all)
            })
            .collect();
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
        Routable { groups, keep_flows }
    }

    /// The targets of `group` that may get new work (empty when unknown).
    pub fn targets(&self, group: &str) -> &[RoutableTarget] {
        self.groups.get(group).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The targets of `group` whose established flows stay; `None` for a
    /// group this view does not know.
    pub fn keeps_flows(&self, group: &str) -> Option<&BTreeSet<SocketAddr>> {
        self.keep_flows.get(group)
    }
}

/// What the userspace listeners hold: always the latest [`Routable`].
pub type RoutableWatch = tokio::sync::watch::Receiver<Arc<Routable>>;

/// A channel holding `initial`, for tests and for the daemon's start.
pub fn channel(initial: Routable) -> (tokio::sync::watch::Sender<Arc<Routable>>, RoutableWatch) {
    tokio::sync::watch::channel(Arc::new(initial))
}
