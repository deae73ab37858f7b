//! Data-path metrics, built at scrape time from a `bpf::stats::Snapshot`
//! (the per-CPU map counters summed) and named after ELB's CloudWatch
//! metrics: `ActiveFlowCount`, `NewFlowCount`, `ProcessedBytes`,
//! `ProcessedPackets`, per listener and per target, and the connection
//! table's own numbers (capacity, unconfirmed flows, SYNs, displacements and
//! untracked flows per listener: what shows a flood and what it cost), and
//! what the dsr probe program did with the health probes it saw.
use std::sync::Arc;

use parking_lot::Mutex;

use lb_common::{Counters, FlowCounters, Stat};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use crate::{
    bpf::stats::Snapshot,
    config::{Config, VipOwners},
    net,
};

/// Names this collector emits (families; counters get `_total` appended).
pub const NAMES: [&str; 18] = [
    "lb_active_flow_count",
    "lb_flow_table_capacity",
    "lb_unconfirmed_flow_count",
    "lb_tcp_syn_count",
    "lb_unconfirmed_new_flow_count",
    "lb_confirmed_flow_count",
    "lb_displaced_flow_count",
    "lb_untracked_flow_count",
    "lb_new_flow_count",
    "lb_processed_bytes",
    "lb_processed_packets",
    "lb_target_processed_bytes",
    "lb_target_processed_packets",
    "lb_target_new_flow_count",
    "lb_dropped_packets",
    "lb_passed_packets",
    "lb_data_path_packets",
    "lb_health_probe_packets",
];

/// One scrape's numbers, labels resolved.
#[derive(Debug, Default)]
pub(super) struct View {
    active_flows: u64,
    flow_capacity: u32,
    embryonic_flows: u64,
    /// Connection-table counters by listener name.
    flows: Vec<(String, FlowCounters)>,
    /// By listener name (the VIP's `address:port/proto` when no listener of
    /// the config has it: a stale VIP).
    listeners: Vec<(String, Counters)>,
    /// By target endpoint `address:port`.
    targets: Vec<(String, Counters)>,
    drops: Vec<(&'static str, u64)>,
    passes: Vec<(&'static str, u64)>,
    /// Every other stat (`forwarded`, `returned`, ...).
    others: Vec<(&'static str, u64)>,
    /// The dsr probe program's verdicts (none: it never ran).
    probes: Vec<(&'static str, u64)>,
}

impl View {
    pub(super) fn new(s: &Snapshot, config: &Config) -> Self {
        let mut view = View {
            active_flows: s.active_flows,
            flow_capacity: s.flow_capacity,
            embryonic_flows: s.embryonic_flows,
            flows: s
                .vips
                .iter()
                .map(|(key, meta, _)| {
                    let f = s.vip_flows.get(&meta.vip_id).copied().unwrap_or_default();
                    (config.vip_name(key, VipOwners::InKernel), f)
                })
                .collect(),
            listeners: s
                .vips
                .iter()
                .map(|(key, _, c)| (config.vip_name(key, VipOwners::InKernel), *c))
                .collect(),
            targets: s
                .targets
                .iter()
                .map(|(id, t, c)| {
                    let name = net::target_endpoint(t)
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| format!("id{id}"));
                    (name, *c)
                })
                .collect(),
            probes: s.probes.iter().map(|(p, n)| (p.name(), *n)).collect(),
            ..View::default()
        };
        for &(stat, n) in &s.stats {
            let name = stat.name();
            if let Some(reason) = name.strip_prefix("drop_") {
                view.drops.push((reason, n));
            } else if let Some(reason) = name.strip_prefix("pass_") {
                view.passes.push((reason, n));
            } else if stat != Stat::_Count {
                view.others.push((name, n));
            }
        }
        view
    }
}

/// Sum of both directions, as ELB counts `ProcessedBytes`.
fn bytes(c: &Counters) -> u64 {
    c.bytes_in + c.bytes_out
}
fn packets(c: &Counters) -> u64 {
    c.packets_in + c.packets_out
}

/// Emits the [`View`] set for the scrape in progress (none: nothing).
#[derive(Debug, Default)]
pub(super) struct DataPathCollector {
    pub(super) view: Arc<Mutex<Option<View>>>,
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

/// One counter family with one label.
fn counters<V: AsRef<str>>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    rows: impl IntoIterator<Item = (V, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in rows {
        let labels = [(label, value.as_ref())];
        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for DataPathCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let guard = self.view.lock();
        let Some(v) = guard.as_ref() else {
            return Ok(());
        };
        gauge(
            &mut encoder,
            "lb_active_flow_count",
            "Flows in the connection table not idle past their timeout",
            v.active_flows,
        )?;
        gauge(
            &mut encoder,
            "lb_flow_table_capacity",
            "Slots of the connection table",
            u64::from(v.flow_capacity),
        )?;
        gauge(
            &mut encoder,
            "lb_unconfirmed_flow_count",
            "Active flows not confirmed yet (handshake or first reply not seen)",
            v.embryonic_flows,
        )?;
        let flows = |f: fn(&FlowCounters) -> u64| -> Vec<(String, u64)> {
            v.flows.iter().map(|(k, c)| (k.clone(), f(c))).collect()
        };
        let flow_lists = [
            (
                "lb_tcp_syn_count",
                "TCP SYNs from clients by listener",
                flows(|f| f.syns),
            ),
            (
                "lb_unconfirmed_new_flow_count",
                "New flows entered unconfirmed by listener",
                flows(|f| f.embryonic),
            ),
            (
                "lb_confirmed_flow_count",
                "Flows confirmed (handshake completed or both ways seen) by listener",
                flows(|f| f.confirmed),
            ),
            (
                "lb_displaced_flow_count",
                "Unconfirmed flows displaced by newer ones by listener",
                flows(|f| f.displaced),
            ),
            (
                "lb_untracked_flow_count",
                "New flows dropped for want of a slot (table full of confirmed flows) by listener",
                flows(|f| f.untracked),
            ),
        ];
        for (name, help, rows) in flow_lists {
            counters(&mut encoder, name, help, "listener", rows)?;
        }
        let by = |rows: &[(String, Counters)], f: fn(&Counters) -> u64| -> Vec<(String, u64)> {
            rows.iter().map(|(k, c)| (k.clone(), f(c))).collect()
        };
        let lists = [
            (
                "lb_new_flow_count",
                "New flows by listener",
                "listener",
                by(&v.listeners, |c| c.new_flows),
            ),
            (
                "lb_processed_bytes",
                "Bytes forwarded in both directions by listener",
                "listener",
                by(&v.listeners, bytes),
            ),
            (
                "lb_processed_packets",
                "Packets forwarded in both directions by listener",
                "listener",
                by(&v.listeners, packets),
            ),
            (
                "lb_target_processed_bytes",
                "Bytes forwarded in both directions by target",
                "target",
                by(&v.targets, bytes),
            ),
            (
                "lb_target_processed_packets",
                "Packets forwarded in both directions by target",
                "target",
                by(&v.targets, packets),
            ),
            (
                "lb_target_new_flow_count",
                "New flows by target",
                "target",
                by(&v.targets, |c| c.new_flows),
            ),
        ];
        for (name, help, label, rows) in lists {
            counters(&mut encoder, name, help, label, rows)?;
        }
        counters(
            &mut encoder,
            "lb_dropped_packets",
            "Packets the data path dropped, by reason",
            "reason",
            v.drops.clone(),
        )?;
        counters(
            &mut encoder,
            "lb_passed_packets",
            "Packets handed to the kernel's stack, by reason",
            "reason",
            v.passes.clone(),
        )?;
        counters(
            &mut encoder,
            "lb_data_path_packets",
            "Other data path actions (forwarded, returned, icmp_translated, too_big_sent, second_chance)",
            "action",
            v.others.clone(),
        )?;
        if !v.probes.is_empty() {
            counters(
                &mut encoder,
                "lb_health_probe_packets",
                "Packets of dsr health probes through the VIP by what the probe program did (encapsulated, not_marked, unknown_mark, wrong_family, malformed, no_route)",
                "verdict",
                v.probes.clone(),
            )?;
        }
        Ok(())
    }
}
