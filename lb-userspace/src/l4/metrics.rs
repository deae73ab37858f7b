//! Counters of the userspace L4 listeners (the TCP/TLS proxy and the UDP
//! relay), per listener and per target, in prometheus-client types so the
//! metrics endpoint can serve them.
use std::{fmt::Write, sync::Arc};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::conn_cap::RefusedFamily;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct L4ListenerLabels {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct L4TargetLabels {
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

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub listener: String,
    pub reason: DropReason,
}

/// Why the UDP relay dropped a datagram.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DropReason {
    /// A new flow, but the group had no routable target.
    NoTarget,
    /// A new flow, but the listener's flow table was full.
    FlowTableFull,
    /// A new flow, but its socket toward the target could not be opened
    /// (e.g. out of file descriptors, no route).
    FlowSocket,
    /// Sending to the target failed (after one retry).
    Send,
    /// Sending a target's reply to the client failed.
    Reply,
}

/// Label values in snake_case, as every other metric of the daemon
/// (`direction="to_target"`, `reason="no_target"`).
macro_rules! snake_case_labels {
    ($($ty:ty { $($variant:ident => $text:literal),+ $(,)? })+) => {$(
        impl $ty {
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    )+};
}

snake_case_labels! {
    Direction { ToTarget => "to_target", ToClient => "to_client" }
    ErrorReason {
        NoTarget => "no_target",
        Connect => "connect",
        TlsHandshake => "tls_handshake",
        TargetTls => "target_tls",
    }
    DropReason {
        NoTarget => "no_target",
        FlowTableFull => "flow_table_full",
        FlowSocket => "flow_socket",
        Send => "send",
        Reply => "reply",
    }
}

/// Every counter of the userspace L4 listeners.
#[derive(Debug, Default)]
pub struct L4Metrics {
    /// Client connections accepted.
    pub connections: Family<L4ListenerLabels, Counter>,
    /// Client connections open now.
    pub active: Family<L4ListenerLabels, Gauge>,
    /// Connections opened to each target.
    pub target_connections: Family<L4TargetLabels, Counter>,
    /// Connections to each target open now.
    pub target_active: Family<L4TargetLabels, Gauge>,
    /// Failed connection attempts to each target.
    pub target_connect_errors: Family<L4TargetLabels, Counter>,
    /// Bytes relayed, by direction.
    pub bytes: Family<ByteLabels, Counter>,
    /// Client connections that ended without reaching a target.
    pub errors: Family<ErrorLabels, Counter>,
    /// Client connections refused by a connection cap, by the key.
    pub refused: RefusedFamily,
    /// UDP flows created (a client address's first datagram, or the next
    /// one after its flow expired or its target left).
    pub udp_flows: Family<L4ListenerLabels, Counter>,
    /// UDP flows in a relay's table now.
    pub udp_active_flows: Family<L4ListenerLabels, Gauge>,
    /// UDP flows created toward each target.
    pub udp_target_flows: Family<L4TargetLabels, Counter>,
    /// UDP flows toward each target now.
    pub udp_target_active_flows: Family<L4TargetLabels, Gauge>,
    /// Datagrams relayed, by direction (their bytes go to `bytes`).
    pub udp_packets: Family<ByteLabels, Counter>,
    /// Datagrams the UDP relay dropped, by reason.
    pub udp_dropped: Family<DropLabels, Counter>,
    /// Errors a target's flow socket reported: ICMP errors such as port or
    /// host unreachable (`ECONNREFUSED`, `EHOSTUNREACH`), failed sends.
    pub udp_target_errors: Family<L4TargetLabels, Counter>,
}

impl L4Metrics {
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
        r.register(
            "connections_refused",
            "Client connections refused by a connection cap: max_connections, max_connections_per_client",
            m.refused.clone(),
        );
        let u = r.sub_registry_with_prefix("udp");
        u.register(
            "flows",
            "UDP flows created by userspace listeners",
            m.udp_flows.clone(),
        );
        u.register(
            "active_flows",
            "UDP flows in the relay's table",
            m.udp_active_flows.clone(),
        );
        u.register(
            "target_flows",
            "UDP flows created toward targets",
            m.udp_target_flows.clone(),
        );
        u.register(
            "target_active_flows",
            "UDP flows toward targets now",
            m.udp_target_active_flows.clone(),
        );
        u.register(
            "packets",
            "Datagrams relayed, by direction",
            m.udp_packets.clone(),
        );
        u.register(
            "dropped_packets",
            "Datagrams dropped by the UDP relay, by reason",
            m.udp_dropped.clone(),
        );
        u.register(
            "target_errors",
            "Errors reported by the sockets toward targets (ICMP unreachable, failed sends)",
            m.udp_target_errors.clone(),
        );
        m
    }

    /// Names of the metric families above (counters without `_total`), for
    /// the documentation test.
    pub const NAMES: [&'static str; 15] = [
        "lb_proxy_connections",
        "lb_proxy_connections_refused",
        "lb_proxy_active_connections",
        "lb_proxy_target_connections",
        "lb_proxy_target_active_connections",
        "lb_proxy_target_connect_errors",
        "lb_proxy_bytes",
        "lb_proxy_errors",
        "lb_proxy_udp_flows",
        "lb_proxy_udp_active_flows",
        "lb_proxy_udp_target_flows",
        "lb_proxy_udp_target_active_flows",
        "lb_proxy_udp_packets",
        "lb_proxy_udp_dropped_packets",
        "lb_proxy_udp_target_errors",
    ];

    pub fn dropped(&self, listener: &str, reason: DropReason) {
        self.udp_dropped
            .get_or_create(&DropLabels {
                listener: listener.to_owned(),
                reason,
            })
            .inc();
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

/// Counts one open connection or flow in a gauge: incremented now,
/// decremented when dropped, however the connection or flow ends.
#[derive(Debug)]
pub struct Open(Gauge);

impl Open {
    pub fn new(g: Gauge) -> Self {
        g.inc();
        Self(g)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;
    use crate::conn_cap::{Refused, RefusedSeries};

    /// Family names from the `# TYPE` lines of a scrape where every family
    /// has a series.
    fn registered() -> (Vec<String>, String) {
        let mut registry = Registry::default();
        let m = L4Metrics::register(&mut registry);
        let l = L4ListenerLabels {
            listener: "l".into(),
        };
        let t = L4TargetLabels {
            listener: "l".into(),
            target: "10.0.0.1:53".into(),
        };
        let b = ByteLabels {
            listener: "l".into(),
            target: "10.0.0.1:53".into(),
            direction: Direction::ToTarget,
        };
        m.connections.get_or_create(&l).inc();
        m.active.get_or_create(&l).inc();
        m.target_connections.get_or_create(&t).inc();
        m.target_active.get_or_create(&t).inc();
        m.target_connect_errors.get_or_create(&t).inc();
        m.bytes.get_or_create(&b).inc();
        m.error("l", ErrorReason::NoTarget);
        RefusedSeries::new(&m.refused, "l").count(Refused::Client);
        m.udp_flows.get_or_create(&l).inc();
        m.udp_active_flows.get_or_create(&l).inc();
        m.udp_target_flows.get_or_create(&t).inc();
        m.udp_target_active_flows.get_or_create(&t).inc();
        m.udp_packets.get_or_create(&b).inc();
        m.dropped("l", DropReason::FlowTableFull);
        m.udp_target_errors.get_or_create(&t).inc();
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        let families = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_owned)
            .collect();
        (families, text)
    }

    #[test]
    fn names_are_the_registered_families_and_documented() {
        let mut declared: Vec<String> = L4Metrics::NAMES.map(String::from).to_vec();
        declared.sort();
        let (mut families, text) = registered();
        families.sort();
        assert_eq!(declared, families);
        for series in [
            "lb_proxy_udp_dropped_packets_total{listener=\"l\",reason=\"flow_table_full\"} 1",
            "lb_proxy_udp_packets_total{listener=\"l\",target=\"10.0.0.1:53\",direction=\"to_target\"} 1",
            "lb_proxy_errors_total{listener=\"l\",reason=\"no_target\"} 1",
            "lb_proxy_connections_refused_total{listener=\"l\",reason=\"max_connections_per_client\"} 1",
        ] {
            assert!(text.lines().any(|l| l == series), "{series} not in\n{text}");
        }
        let docs = include_str!("../../../docs/metrics.md");
        for name in L4Metrics::NAMES {
            assert!(
                docs.contains(&format!("`{name}")),
                "docs/metrics.md lacks {name}"
            );
        }
        assert!(
            docs.contains("`flow_table_full`"),
            "drop reasons documented"
        );
    }
}
