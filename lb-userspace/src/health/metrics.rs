//! `lb_health_check_duration_seconds{target_group, result}`: latency and
//! outcome of every probe.
use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, histogram::Histogram},
    registry::Registry,
};

/// Name of the histogram (OpenMetrics adds `_bucket`, `_sum`, `_count`).
pub const DURATION: &str = "lb_health_check_duration_seconds";

/// Bucket bounds, seconds: loopback connects take tens of microseconds,
/// timeouts are whole seconds.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 10.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    target_group: String,
    /// `success`, `timeout`, `failed`, `response_code_mismatch`.
    result: &'static str,
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The checker's metrics; clones share the same series.
#[derive(Debug, Clone)]
pub struct HealthMetrics {
    duration: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for HealthMetrics {
    fn default() -> Self {
        HealthMetrics {
            duration: Family::new_with_constructor(histogram),
        }
    }
}

impl HealthMetrics {
    /// Adds the series to `registry` (once per registry).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            DURATION,
            "Latency of health checks by target group and result",
            self.duration.clone(),
        );
    }

    pub fn observe(&self, target_group: &str, result: &'static str, elapsed: Duration) {
        self.duration
            .get_or_create(&Labels {
                target_group: target_group.to_owned(),
                result,
            })
            .observe(elapsed.as_secs_f64());
    }
}

impl HealthMetrics {
    /// Probes recorded so far, by (target group, result) when given, else
    /// all; read through the text encoding since histograms expose no
    /// getter (for tests and benchmarks, not for hot paths).
    pub fn probe_count(&self, filter: Option<(&str, &str)>) -> u64 {
        let mut registry = Registry::default();
        self.register(&mut registry);
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            return 0;
        }
        let prefix = match filter {
            Some((group, result)) => {
                format!("{DURATION}_count{{target_group=\"{group}\",result=\"{result}\"}} ")
            }
            None => format!("{DURATION}_count{{"),
        };
        text.lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}
