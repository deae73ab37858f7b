//! Prometheus metrics: one registry for the whole daemon, encoded as
//! OpenMetrics text for `/metrics`.
//!
//! - data path ([`data_path`]): flows, bytes and packets per listener and
//!   per target, drops and passes by reason, built at scrape time from a
//!   `bpf::stats::Snapshot`;
//! - control plane ([`ControlPlaneMetrics`]): healthy/unhealthy host
//!   counts, target states, reloads, set by the control loop;
//! - health checks ([`HealthMetrics`]): probe latency by group and result;
//! - anything other modules register through [`Metrics::register`] (the
//!   HTTP/TCP proxies' request metrics).
//!
//! Names follow ELB's CloudWatch metrics where one exists
//! (`ActiveFlowCount` -> `lb_active_flow_count`, ...). The Grafana
//! dashboard in deploy/grafana uses these names; a test keeps it true.
mod control;
pub mod data_path;
pub mod endpoint;

use std::sync::Arc;

use parking_lot::Mutex;

use prometheus_client::registry::Registry;

pub use control::ControlPlaneMetrics;

use crate::{bpf::stats::Snapshot, config::Config, health::HealthMetrics};

/// Metric families owned by the userspace HTTP path (registered through
/// [`Metrics::register`] by that module); the dashboard may use them.
pub const HTTP_MODULE_NAMES: [&str; 4] = [
    "lb_http_request",
    "lb_http_target_response",
    "lb_http_elb_response",
    "lb_http_target_response_time_seconds",
];

/// Every metric family this crate registers (counters without `_total`,
/// histograms without `_bucket`/`_sum`/`_count`), for documentation and
/// tests; modules registering through [`Metrics::register`] are not listed.
pub fn family_names() -> Vec<&'static str> {
    data_path::NAMES
        .into_iter()
        .chain(control::NAMES)
        .chain([crate::health::DURATION_METRIC])
        .collect()
}

/// The daemon's metrics. Share it in an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    data_path: Arc<Mutex<Option<data_path::View>>>,
    control: Arc<ControlPlaneMetrics>,
    health: HealthMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let collector = data_path::DataPathCollector::default();
        let data_path = collector.view.clone();
        registry.register_collector(Box::new(collector));
        let control = Arc::new(ControlPlaneMetrics::default());
        control.register(&mut registry);
        let health = HealthMetrics::default();
        health.register(&mut registry);
        Metrics {
            registry: Mutex::new(registry),
            data_path,
            control,
            health,
        }
    }

    /// The health checker's metrics, for `health::Checker::new`.
    pub fn health(&self) -> HealthMetrics {
        self.health.clone()
    }

    /// The gauges the control loop sets.
    pub fn control(&self) -> &ControlPlaneMetrics {
        &self.control
    }

    /// Lets another module add its metrics, e.g.
    /// `metrics.register(|r| r.register("lb_http_requests", "...", family.clone()))`.
    /// Returns what `f` returns (e.g. the module's metric handles).
    pub fn register<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        f(&mut self.registry.lock())
    }

    /// Everything, in OpenMetrics text (`# EOF` last). Data-path metrics
    /// appear only with a `snapshot` (none without the XDP program); the
    /// config names listeners and targets.
    pub fn encode(&self, snapshot: Option<&Snapshot>, config: &Config) -> String {
        // Holding the registry lock serialises scrapes, so the view set here
        // is the one the collector reads.
        let registry = self.registry.lock();
        *self.data_path.lock() = snapshot.map(|s| data_path::View::new(s, config));
        let mut text = String::new();
        // Writing to a String cannot fail; an encoder error would be a bug
        // in a metric's encoding, and a partial page is better than none.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            tracing::error!("encoding metrics: {e}");
        }
        *self.data_path.lock() = None;
        text
    }

    /// The `Content-Type` of [`Metrics::encode`]'s text.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";
}

#[cfg(test)]
mod tests;
