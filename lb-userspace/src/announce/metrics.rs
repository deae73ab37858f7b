//! The announcer's metrics: which VIPs are announced, whether the host is
//! drained, and failed route operations. Registered through
//! `Metrics::register` by the daemon.
use std::{collections::BTreeSet, net::IpAddr, sync::Arc};

use parking_lot::Mutex;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Families registered here (counters without `_total`).
pub const NAMES: [&str; 4] = [
    "lb_bgp_announced_routes",
    "lb_bgp_vip_announced",
    "lb_bgp_host_drained",
    "lb_bgp_route_errors",
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VipLabels {
    vip: String,
}

/// Cheap to clone; every clone sets the same series.
#[derive(Debug, Clone, Default)]
pub struct AnnounceMetrics {
    routes: Gauge,
    vip: Family<VipLabels, Gauge>,
    drained: Gauge,
    errors: Counter,
    /// The VIPs with a `lb_bgp_vip_announced` series, to remove stale ones.
    labelled: Arc<Mutex<BTreeSet<IpAddr>>>,
}

impl AnnounceMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "lb_bgp_announced_routes",
            "VIP routes in the announcement table (what BIRD exports)",
            m.routes.clone(),
        );
        registry.register(
            "lb_bgp_vip_announced",
            "1 while the VIP is announced, 0 while the config names it but it is withheld",
            m.vip.clone(),
        );
        registry.register(
            "lb_bgp_host_drained",
            "1 while the host is drained (lb host drain)",
            m.drained.clone(),
        );
        registry.register(
            "lb_bgp_route_errors",
            "Failed route and drain-state operations of the announcer",
            m.errors.clone(),
        );
        m
    }

    /// The state after a sync: `candidates` the config names, `announced`
    /// in the table.
    pub fn set(&self, candidates: &BTreeSet<IpAddr>, announced: &BTreeSet<IpAddr>, drained: bool) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.routes.set(gauge(announced.len()));
        self.drained.set(i64::from(drained));
        let now: BTreeSet<IpAddr> = candidates.union(announced).copied().collect();
        let mut labelled = self.labelled.lock();
        for gone in labelled.difference(&now) {
            self.vip.remove(&labels(*gone));
        }
        for vip in &now {
            self.vip
                .get_or_create(&labels(*vip))
                .set(i64::from(announced.contains(vip)));
        }
        *labelled = now;
    }

    pub fn record_errors(&self, n: u64) {
        self.errors.inc_by(n);
    }
}

fn labels(vip: IpAddr) -> VipLabels {
    VipLabels {
        vip: vip.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn series_follow_the_announcements() {
        let mut registry = Registry::default();
        let m = AnnounceMetrics::register(&mut registry);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "fd00::1".parse().unwrap();
        m.set(&[a, b].into(), &[a].into(), false);
        m.record_errors(2);
        let t = text(&registry);
        for line in [
            "lb_bgp_announced_routes 1",
            "lb_bgp_vip_announced{vip=\"10.0.0.1\"} 1",
            "lb_bgp_vip_announced{vip=\"fd00::1\"} 0",
            "lb_bgp_host_drained 0",
            "lb_bgp_route_errors_total 2",
        ] {
            assert!(t.lines().any(|l| l == line), "{line} missing:\n{t}");
        }
        m.set(&[b].into(), &BTreeSet::new(), true);
        let t = text(&registry);
        assert!(
            !t.contains("10.0.0.1"),
            "a VIP gone from the config loses its series:\n{t}"
        );
        assert!(t.lines().any(|l| l == "lb_bgp_host_drained 1"), "{t}");
        assert!(t.lines().any(|l| l == "lb_bgp_announced_routes 0"), "{t}");
    }

    #[test]
    fn docs_list_every_family() {
        let docs = include_str!("../../../docs/metrics.md");
        for name in NAMES {
            assert!(
                docs.contains(&format!("`{name}")),
                "docs/metrics.md lacks {name}"
            );
        }
    }
}
