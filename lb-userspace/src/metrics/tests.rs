use std::net::SocketAddr;

use lb_common::{
    Counters, FlowCounters, PROTO_TCP, PROTO_UDP, Stat, TargetState, VipMeta, probe::ProbeStat,
};

use super::*;
use crate::{
    config::testing::{DAEMON, WEB, targets},
    net,
};

/// The one-listener config with one target.
fn config() -> Config {
    Config::parse(&format!("{DAEMON}{WEB}{}", targets(&["10.1.0.2"]))).unwrap()
}

fn counters(base: u64) -> Counters {
    Counters {
        packets_in: base,
        bytes_in: base * 100,
        packets_out: base + 1,
        bytes_out: base * 100 + 1,
        new_flows: base / 10,
    }
}

fn snapshot() -> Snapshot {
    let web = net::vip_key("10.0.0.100".parse().unwrap(), 80, PROTO_TCP);
    // A VIP no listener of the config has (left over in the pinned maps).
    let stale = net::vip_key("10.0.0.200".parse().unwrap(), 53, PROTO_UDP);
    let target: SocketAddr = "10.1.0.2:8080".parse().unwrap();
    Snapshot {
        stats: Stat::ALL
            .iter()
            .enumerate()
            .map(|(i, &s)| (s, i as u64 * 10))
            .collect(),
        vips: vec![
            (web, VipMeta::default(), counters(50)),
            (
                stale,
                VipMeta {
                    vip_id: 1,
                    ..VipMeta::default()
                },
                counters(20),
            ),
        ],
        targets: vec![(
            3,
            net::target_entry(target, TargetState::Active, 1),
            counters(40),
        )],
        vip_flows: [(
            0,
            FlowCounters {
                syns: 9,
                embryonic: 8,
                confirmed: 5,
                displaced: 2,
                untracked: 1,
            },
        )]
        .into(),
        flow_capacity: 1024,
        active_flows: 7,
        embryonic_flows: 2,
        probes: ProbeStat::ALL
            .iter()
            .enumerate()
            .map(|(i, &p)| (p, 1000 + i as u64))
            .collect(),
    }
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

fn has(text: &str, line: &str) {
    assert!(
        lines(text).contains(&line),
        "{line:?} missing from:\n{text}"
    );
}

#[test]
fn data_path_metrics_by_listener_and_target() {
    let m = Metrics::new();
    let text = m.encode(Some(&snapshot()), &config());
    for line in [
        "# TYPE lb_active_flow_count gauge",
        "lb_active_flow_count 7",
        "lb_flow_table_capacity 1024",
        "lb_unconfirmed_flow_count 2",
        "lb_tcp_syn_count_total{listener=\"web\"} 9",
        "lb_unconfirmed_new_flow_count_total{listener=\"web\"} 8",
        "lb_confirmed_flow_count_total{listener=\"web\"} 5",
        "lb_displaced_flow_count_total{listener=\"web\"} 2",
        "lb_untracked_flow_count_total{listener=\"web\"} 1",
        "lb_untracked_flow_count_total{listener=\"10.0.0.200:53/udp\"} 0",
        "# TYPE lb_new_flow_count counter",
        "lb_new_flow_count_total{listener=\"web\"} 5",
        "lb_new_flow_count_total{listener=\"10.0.0.200:53/udp\"} 2",
        "lb_processed_bytes_total{listener=\"web\"} 10001",
        "lb_processed_packets_total{listener=\"web\"} 101",
        "lb_target_processed_bytes_total{target=\"10.1.0.2:8080\"} 8001",
        "lb_target_processed_packets_total{target=\"10.1.0.2:8080\"} 81",
        "lb_target_new_flow_count_total{target=\"10.1.0.2:8080\"} 4",
        "lb_dropped_packets_total{reason=\"no_target\"} 120",
        "lb_dropped_packets_total{reason=\"malformed\"} 100",
        "lb_passed_packets_total{reason=\"not_vip\"} 30",
        "lb_passed_packets_total{reason=\"mtu\"} 150",
        "lb_data_path_packets_total{action=\"forwarded\"} 0",
        "lb_data_path_packets_total{action=\"too_big_sent\"} 160",
        "# TYPE lb_health_probe_packets counter",
        "lb_health_probe_packets_total{verdict=\"encapsulated\"} 1000",
        "lb_health_probe_packets_total{verdict=\"no_route\"} 1005",
    ] {
        has(&text, line);
    }
    assert_eq!(text.lines().last(), Some("# EOF"));
    // Every stat is exported exactly once.
    let stat_lines = text
        .lines()
        .filter(|l| {
            [
                "lb_dropped_packets_total{",
                "lb_passed_packets_total{",
                "lb_data_path_packets_total{",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .count();
    assert_eq!(stat_lines, Stat::ALL.len());
}

/// Hosts that never probed through a VIP (no dsr group, or `address =
/// "target"`) have no probe program and no probe series.
#[test]
fn without_probe_counters_there_is_no_probe_family() {
    let m = Metrics::new();
    let snap = Snapshot {
        probes: Vec::new(),
        ..snapshot()
    };
    let text = m.encode(Some(&snap), &config());
    assert!(!text.contains("lb_health_probe_packets"), "{text}");
}

#[test]
fn without_a_snapshot_there_are_no_data_path_metrics() {
    let m = Metrics::new();
    let text = m.encode(None, &config());
    assert!(!text.contains("lb_active_flow_count"), "{text}");
    // ... and a scrape with one does not leak into the next without.
    m.encode(Some(&snapshot()), &config());
    assert!(!m.encode(None, &config()).contains("lb_processed_bytes"));
}

/// Both reload series exist before the first reload, at 0: Prometheus's
/// increase() sees the first refusal only if the series was there before it.
#[test]
fn reload_counters_start_at_zero() {
    let m = Metrics::new();
    let text = m.encode(None, &config());
    has(&text, "lb_config_reloads_total{result=\"ok\"} 0");
    has(&text, "lb_config_reloads_total{result=\"rejected\"} 0");
}

#[test]
fn control_plane_gauges() {
    let m = Metrics::new();
    let t: SocketAddr = "10.1.0.2:8080".parse().unwrap();
    let u: SocketAddr = "10.1.0.3:8080".parse().unwrap();
    let c = m.control();
    c.set_host_counts("web", 3, 1);
    c.set_target_state("web", t, "initial");
    c.set_target_state("web", t, "healthy");
    c.set_target_state("web", u, "draining");
    c.set_target_state("api", u, "unhealthy");
    c.record_reload(true);
    c.record_reload(false);
    c.record_reload(true);
    let text = m.encode(None, &config());
    for line in [
        "lb_healthy_host_count{target_group=\"web\"} 3",
        "lb_unhealthy_host_count{target_group=\"web\"} 1",
        "lb_target_state{target_group=\"web\",target=\"10.1.0.2:8080\",state=\"healthy\"} 1",
        "lb_target_state{target_group=\"web\",target=\"10.1.0.3:8080\",state=\"draining\"} 1",
        "lb_target_state{target_group=\"api\",target=\"10.1.0.3:8080\",state=\"unhealthy\"} 1",
        "lb_config_reloads_total{result=\"ok\"} 2",
        "lb_config_reloads_total{result=\"rejected\"} 1",
    ] {
        has(&text, line);
    }
    // The previous state's series is gone.
    assert!(!text.contains("state=\"initial\""), "{text}");

    c.remove_target("web", u);
    c.remove_group("api");
    let text = m.encode(None, &config());
    assert_eq!(text.matches("lb_target_state{").count(), 1, "{text}");
    assert!(!text.contains("target_group=\"api\""), "{text}");
}

#[test]
fn health_histogram_and_foreign_metrics_share_the_registry() {
    let m = Metrics::new();
    m.health()
        .observe("web", "timeout", std::time::Duration::from_millis(1500));
    let requests = prometheus_client::metrics::counter::Counter::<u64>::default();
    requests.inc_by(4);
    m.register(|r| r.register("lb_http_requests", "HTTP requests", requests.clone()));
    let text = m.encode(None, &config());
    has(&text, "# TYPE lb_health_check_duration_seconds histogram");
    has(
        &text,
        "lb_health_check_duration_seconds_count{target_group=\"web\",result=\"timeout\"} 1",
    );
    has(
        &text,
        "lb_health_check_duration_seconds_bucket{le=\"1.0\",target_group=\"web\",result=\"timeout\"} 0",
    );
    has(&text, "lb_http_requests_total 4");
}

/// Metric families the code registers, from `# TYPE` lines of a scrape
/// where every family has series.
fn registered_families() -> Vec<String> {
    let m = Metrics::new();
    m.control().set_host_counts("web", 1, 0);
    m.control()
        .set_target_state("web", "10.1.0.2:8080".parse().unwrap(), "healthy");
    m.control().record_reload(true);
    m.health()
        .observe("web", "success", std::time::Duration::from_millis(1));
    let text = m.encode(Some(&snapshot()), &config());
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn declared_names_are_the_registered_ones() {
    let mut declared: Vec<String> = family_names().into_iter().map(String::from).collect();
    declared.sort();
    let mut registered = registered_families();
    registered.sort();
    assert_eq!(declared, registered);
}

/// Every `lb_*` name in the dashboard's expressions is a family we register
/// (or one the HTTP module owns), with a suffix OpenMetrics allows.
#[test]
fn grafana_dashboard_uses_only_registered_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../../deploy/grafana/lb-dashboard.json")).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");
    let families: Vec<String> = registered_families()
        .into_iter()
        .chain(HTTP_MODULE_NAMES.iter().map(|s| s.to_string()))
        .collect();
    let known = |name: &str| {
        families.iter().any(|f| {
            ["", "_total", "_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| name == format!("{f}{suffix}"))
        })
    };
    assert_eq!(
        metric_names("rate(lb_x_total{a=\"lb_no\"}[5m]) / lb_y + xlb_z"),
        ["lb_x_total", "lb_no", "lb_y"]
    );
    // The datasource variable's query is the plugin's name.
    for expr in exprs.iter().filter(|e| *e != "prometheus") {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no lb_ metric in {expr:?}");
        for name in names {
            assert!(
                known(name),
                "dashboard uses unknown metric {name} in {expr:?}"
            );
        }
    }
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match v {
                    serde_json::Value::String(s) if k == "expr" || k == "query" => {
                        out.push(s.clone())
                    }
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// Identifiers starting with `lb_` (metric names; labels never do here).
fn metric_names(expr: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while i < bytes.len() {
        let start_ok = i == 0 || !ident(bytes[i - 1]);
        if start_ok && expr[i..].starts_with("lb_") {
            let end = (i..bytes.len())
                .find(|&j| !ident(bytes[j]))
                .unwrap_or(bytes.len());
            names.push(&expr[i..end]);
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn docs_list_every_family() {
    let docs = include_str!("../../../docs/metrics.md");
    for name in family_names() {
        assert!(
            docs.contains(&format!("`{name}")),
            "docs/metrics.md lacks {name}"
        );
    }
}
