//! Counters of the userspace listeners, per listener and per target, in
//! prometheus-client types so the metrics endpoint can serve them.
use std::sync::Arc;

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub listener: String,
    /// `address:port`.
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByteLabels {
    pub listener: String,
    pub target: String,
    pub direction: Direction,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Direction {
    /// Bytes read from the client and written to the target.
    ToTarget,
    /// Bytes read from the target and written to the client.
    ToClient,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub listener: String,
    pub reason: ErrorReason,
}

/// Why a client connection ended without reaching a target.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ErrorReason {
    /// The group had no routable target.
    NoTarget,
    /// Every target tried refused or timed out.
    Connect,
    /// The client's TLS handshake failed (version, suite, bad bytes).
    TlsHandshake,
    /// The TLS handshake with the target failed (e.g. verification).
    TargetTls,
}

/// Every counter of the userspace L4 listeners.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    /// Client connections accepted.
    pub connections: Family<ListenerLabels, Counter>,
    /// Client connections open now.
    pub active: Family<ListenerLabels, Gauge>,
    /// Connections opened to each target.
    pub target_connections: Family<TargetLabels, Counter>,
    /// Connections to each target open now.
    pub target_active: Family<TargetLabels, Gauge>,
    /// Failed connection attempts to each target.
    pub target_connect_errors: Family<TargetLabels, Counter>,
    /// Bytes relayed, by direction.
    pub bytes: Family<ByteLabels, Counter>,
    /// Client connections that ended without reaching a target.
    pub errors: Family<ErrorLabels, Counter>,
}

impl ProxyMetrics {
    /// New counters registered in `registry` (names prefixed `lb_proxy_`).
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Arc::new(Self::default());
        let r = registry.sub_registry_with_prefix("lb_proxy");
        r.register(
            "connections",
            "Client connections accepted by userspace listeners",
            m.connections.clone(),
        );
        r.register(
            "active_connections",
            "Client connections open on userspace listeners",
            m.active.clone(),
        );
        r.register(
            "target_connections",
            "Connections opened to targets",
            m.target_connections.clone(),
        );
        r.register(
            "target_active_connections",
            "Connections to targets open now",
            m.target_active.clone(),
        );
        r.register(
            "target_connect_errors",
            "Failed connection attempts to targets",
            m.target_connect_errors.clone(),
        );
        r.register("bytes", "Bytes relayed, by direction", m.bytes.clone());
        r.register(
            "errors",
            "Client connections that ended without reaching a target, by reason",
            m.errors.clone(),
        );
        m
    }

    pub fn error(&self, listener: &str, reason: ErrorReason) {
        self.errors
            .get_or_create(&ErrorLabels {
                listener: listener.to_owned(),
                reason,
            })
            .inc();
    }
}
