//! Control-plane gauges the control loop sets: ELB's `HealthyHostCount` and
//! `UnHealthyHostCount` per target group, each target's state, and reloads.
use std::{collections::HashMap, net::SocketAddr};

use parking_lot::Mutex;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Names registered here (families; counters get `_total` appended).
pub const NAMES: [&str; 4] = [
    "lb_healthy_host_count",
    "lb_unhealthy_host_count",
    "lb_target_state",
    "lb_config_reloads",
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    target_group: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    target_group: String,
    target: String,
    state: String,
}

/// `result` of `lb_config_reloads_total`.
const RELOAD_RESULTS: [&str; 2] = ["ok", "rejected"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Set by the control loop; read at every scrape.
#[derive(Debug, Default)]
pub struct ControlPlaneMetrics {
    healthy: Family<GroupLabels, Gauge>,
    unhealthy: Family<GroupLabels, Gauge>,
    state: Family<StateLabels, Gauge>,
    reloads: Family<ResultLabels, Counter>,
    /// The state series of each (group, target), so a change removes the
    /// old one: exactly one `lb_target_state` series per target is 1.
    current: Mutex<HashMap<(String, SocketAddr), String>>,
}

impl ControlPlaneMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "lb_healthy_host_count",
            "Targets of the group that are healthy",
            self.healthy.clone(),
        );
        registry.register(
            "lb_unhealthy_host_count",
            "Targets of the group that are unhealthy",
            self.unhealthy.clone(),
        );
        registry.register(
            "lb_target_state",
            "1 for the target's current state: initial, healthy, unhealthy, draining, unused, unavailable",
            self.state.clone(),
        );
        registry.register(
            "lb_config_reloads",
            "Config reloads by result (ok, rejected)",
            self.reloads.clone(),
        );
        // Both series from the start, at 0: a counter that first appears at
        // 1 has no increase() in Prometheus, so an alert on the first
        // refused reload would never fire (deploy/prometheus/lb-alerts.yml).
        for result in RELOAD_RESULTS {
            self.reloads
                .get_or_create(&ResultLabels { result })
                .inc_by(0);
        }
    }

    /// `lb_healthy_host_count` and `lb_unhealthy_host_count` of a group.
    pub fn set_host_counts(&self, group: &str, healthy: u64, unhealthy: u64) {
        let labels = GroupLabels {
            target_group: group.to_owned(),
        };
        let g = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.healthy.get_or_create(&labels).set(g(healthy));
        self.unhealthy.get_or_create(&labels).set(g(unhealthy));
    }

    /// Makes `state` (ELB's spelling: `initial`, `healthy`, `unhealthy`,
    /// `draining`, `unused`, `unavailable`) the target's only state series.
    pub fn set_target_state(&self, group: &str, target: SocketAddr, state: &str) {
        let mut current = self.current.lock();
        let key = (group.to_owned(), target);
        if let Some(old) = current.insert(key, state.to_owned()) {
            self.state.remove(&state_labels(group, target, &old));
        }
        self.state
            .get_or_create(&state_labels(group, target, state))
            .set(1);
    }

    /// Forgets a target (deregistered and gone).
    pub fn remove_target(&self, group: &str, target: SocketAddr) {
        let mut current = self.current.lock();
        if let Some(old) = current.remove(&(group.to_owned(), target)) {
            self.state.remove(&state_labels(group, target, &old));
        }
    }

    /// Forgets a group and its targets (removed from the config).
    pub fn remove_group(&self, group: &str) {
        let labels = GroupLabels {
            target_group: group.to_owned(),
        };
        self.healthy.remove(&labels);
        self.unhealthy.remove(&labels);
        let mut current = self.current.lock();
        current.retain(|(g, target), old| {
            let keep = g != group;
            if !keep {
                self.state.remove(&state_labels(g, *target, old));
            }
            keep
        });
    }

    /// Counts a reload: applied (`ok`) or refused (`rejected`).
    pub fn record_reload(&self, applied: bool) {
        let [ok, rejected] = RELOAD_RESULTS;
        let result = if applied { ok } else { rejected };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }
}

fn state_labels(group: &str, target: SocketAddr, state: &str) -> StateLabels {
    StateLabels {
        target_group: group.to_owned(),
        target: target.to_string(),
        state: state.to_owned(),
    }
}
