//! deploy/prometheus and deploy/grafana checked by the real tools: Debian's
//! `promtool` checks the rule file and lb's own /metrics text, and a real
//! `prometheus` scrapes `lb run` (XDP on veths, an http listener beside it)
//! in the lab's namespaces. A target is killed: the alert on unhealthy
//! targets must fire through Prometheus's HTTP API, then clear when the
//! target is back; a refused reload fires its alert. Every series a Grafana
//! panel uses must be among what Prometheus scraped, with the labels the
//! panel groups by.
//!
//! The shipped files are used as they are but for the durations: scrape
//! and evaluation every second instead of 15 s, and every rule's `for:`
//! cut to 2 s (the test would otherwise wait minutes); `promtool check
//! rules` runs on the file as shipped, and `promtool test rules` runs the
//! cases of tests/prometheus/lb-alerts.test.yml on it.
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use lb_tests::lab::{self, Lab, all_healthy, state_of};
use lb_tests::netns;
use lb_tests::proc::{self, NsChild};
use lb_tests::topology::{TARGET_TCP_PORT, target4};
use serde_json::Value;

/// Where lb serves /metrics in its namespace: the target of the shipped
/// scrape config.
const METRICS: &str = "127.0.0.1:9181";
/// Prometheus's API, in the same namespace.
const PROMETHEUS: &str = "127.0.0.1:9090";
/// The http listener beside the XDP VIPs, and its target (lb-http-target),
/// both on the load balancer's loopback.
const HTTP_VIP: &str = "10.78.0.1";
const HTTP_TARGET: &str = "10.78.0.2";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn http_tail() -> String {
    format!(
        r#"
[[listener]]
name = "web"
protocol = "http"
address = "{HTTP_VIP}"
port = 80
target_group = "web"

[[target_group]]
name = "web"
protocol = "http"
port = 8080
  [[target_group.target]]
  address = "{HTTP_TARGET}"
  [target_group.health_check]
  enabled = false
"#
    )
}

/// Runs `promtool VERB rules FILE`, which must succeed (`run` panics with
/// promtool's account otherwise) and say so.
fn promtool_rules(verb: &str, file: &Path) {
    proc::require_tool("promtool");
    let out = netns::run(
        "promtool",
        [OsStr::new(verb), OsStr::new("rules"), file.as_os_str()],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn promtool_accepts_the_rules_as_shipped() {
    promtool_rules("check", &repo().join("deploy/prometheus/lb-alerts.yml"));
    let config = repo().join("deploy/prometheus/prometheus.yml");
    netns::run(
        "promtool",
        [
            OsStr::new("check"),
            OsStr::new("config"),
            config.as_os_str(),
        ],
    );
}

/// The connection-table alerts on synthetic series, as shipped (durations
/// included): tests/prometheus/lb-alerts.test.yml says what must fire when.
#[test]
fn promtool_rule_tests_pass() {
    promtool_rules("test", &repo().join("tests/prometheus/lb-alerts.test.yml"));
}

#[test]
fn prometheus_scrapes_lb_and_alerts_fire_and_clear() {
    proc::require_tool("prometheus");
    proc::require_tool("promtool");
    proc::require_tool("curl");
    // The lab's XDP config plus an http listener, whose addresses must be
    // on the loopback before the daemon starts.
    let mut lab = Lab::bare("prom", 2, false);
    let ns = lab.topo.lb.name().to_owned();
    for addr in [HTTP_VIP, HTTP_TARGET] {
        lab.topo
            .lb
            .ip(&["addr", "add", &format!("{addr}/32"), "dev", "lo"]);
    }
    let mut spec = lab.topo.config_spec(&[1, 2]);
    lab::fast_checks(&mut spec);
    spec.api_extra.push(format!("metrics_listen = {METRICS:?}"));
    spec.tail = http_tail();
    lab.config = lab.topo.write_config(&spec);
    let target_args = [
        "--name",
        "h1",
        "--listen",
        &format!("{HTTP_TARGET}:8080"),
        "--control",
        &format!("{HTTP_TARGET}:8081"),
    ];
    let mut http_target = NsChild::spawn(
        "h1",
        &ns,
        &proc::test_bin("lb-http-target"),
        &target_args,
        proc::verbose(),
    );
    http_target.wait_for_line("ready", Duration::from_secs(10));
    lab.topo.adopt(http_target);
    lab.start_daemon();
    lab.wait_health("tcp4", Duration::from_secs(20), "all healthy", all_healthy);

    // Traffic, so that every labelled family has its series: flows through
    // XDP, a request through the http listener, a reload that applies and
    // one that is refused.
    lab.flows("tcp", lab::vip4(80), 20);
    let curl = netns::exec_in(
        &ns,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{HTTP_VIP}/"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "200");
    lab.daemon.as_mut().expect("lb run").reload();

    // promtool on lb's own /metrics text.
    let metrics = curl_in(&ns, &format!("http://{METRICS}/metrics"));
    let check = lab.topo.run_dir().join("metrics.txt");
    std::fs::write(&check, &metrics).expect("write metrics");
    let out = netns::try_run(
        "sh",
        [
            "-c",
            &format!("promtool check metrics < {}", check.display()),
        ],
    )
    .expect("promtool");
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let unexpected: Vec<&str> = findings
        .lines()
        .filter(|l| !l.trim().is_empty() && !expected_lint(l, &metrics))
        .collect();
    assert!(
        unexpected.is_empty(),
        "promtool check metrics on lb's /metrics: {unexpected:#?}\n(all: {findings})"
    );

    let prom = Prometheus::start(&mut lab, &ns);
    prom.wait_up();

    // Healthy: no alert but none of ours fires.
    assert_eq!(prom.alerts("LbTargetsUnhealthy"), Vec::<Value>::new());
    assert_eq!(prom.alerts("LbDataPathNotLoaded"), Vec::<Value>::new());

    // Kill target 2's servers: lb finds it unhealthy, Prometheus fires.
    let t2 = std::net::SocketAddr::new(target4(2).into(), TARGET_TCP_PORT);
    lab.topo.stop_server(2);
    lab.wait_health("tcp4", Duration::from_secs(15), "t2 unhealthy", |h| {
        state_of(h, t2) == "unhealthy"
    });
    // t2 serves all four groups (TCP and UDP, both families): one alert
    // each, and none for the http group.
    let firing = prom.wait_alert_where("LbTargetsUnhealthy", Duration::from_secs(30), |firing| {
        let groups: BTreeSet<&str> = firing
            .iter()
            .filter_map(|a| a["labels"]["target_group"].as_str())
            .collect();
        groups == BTreeSet::from(["tcp4", "tcp6", "udp4", "udp6"])
    });
    for a in &firing {
        assert_eq!(a["labels"]["instance"], METRICS, "{a}");
        assert_eq!(a["labels"]["severity"], "warning", "{a}");
        assert_eq!(
            a["value"].as_str().and_then(|v| v.parse::<f64>().ok()),
            Some(1.0),
            "{a}"
        );
    }

    // Target back: healthy again, the alert clears.
    let server = lab.server.clone();
    lab.topo.start_server(&server, 2);
    lab.wait_health("tcp4", Duration::from_secs(15), "all healthy", all_healthy);
    prom.wait_no_alert("LbTargetsUnhealthy", Duration::from_secs(30));

    // A refused reload fires at once (no `for`).
    let config = lab.config.clone();
    let good = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("{good}\n[daemon]\n")).expect("write bad config");
    lab.daemon.as_mut().expect("lb run").reload_refused();
    std::fs::write(&config, good).expect("restore config");
    prom.wait_alert("LbConfigReloadRejected", "firing", Duration::from_secs(30));

    // Every series the Grafana dashboard uses exists, with its labels.
    dashboard_series_exist(&prom);
}

/// The two findings `promtool check metrics` (Prometheus 2.42) makes on lb's
/// text that are not faults: lb serves OpenMetrics, where a counter's
/// `# HELP` names the family without `_total` (promtool reads the older
/// text format and looks for `# HELP <name>_total`): accepted only when
/// that family's HELP line is there; and the `_count` suffix of the gauges
/// named after ELB's CloudWatch metrics (ActiveFlowCount, HealthyHostCount,
/// ...), a deliberate choice (docs/metrics.md).
fn expected_lint(line: &str, metrics: &str) -> bool {
    const ELB_COUNT_GAUGES: [&str; 4] = [
        "lb_active_flow_count",
        "lb_unconfirmed_flow_count",
        "lb_healthy_host_count",
        "lb_unhealthy_host_count",
    ];
    if let Some(name) = line.strip_suffix(" no help text") {
        return name.strip_suffix("_total").is_some_and(|family| {
            metrics.contains(&format!("# HELP {family} "))
                && metrics.contains(&format!("# TYPE {family} counter"))
        });
    }
    line.strip_suffix(" non-histogram and non-summary metrics should not have \"_count\" suffix")
        .is_some_and(|name| ELB_COUNT_GAUGES.contains(&name))
}

/// Each panel's metric names, and the labels it groups by (`by (...)`,
/// `le` aside): each metric must have series in Prometheus, and every
/// grouping label must be on the series of one of the panel's metrics.
fn dashboard_series_exist(prom: &Prometheus) {
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/lb-dashboard.json"))
            .expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    assert!(
        exprs.len() >= 20,
        "only {} panel queries found",
        exprs.len()
    );
    let mut missing = Vec::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no lb_ metric in panel query {expr}");
        let mut labels = BTreeSet::new();
        for name in &names {
            let series = prom.series(name);
            if series.is_empty() {
                missing.push(format!("{name} (in {expr})"));
            }
            for s in &series {
                labels.extend(s.keys().cloned());
            }
        }
        for by in grouping_labels(expr) {
            if by != "le" && !labels.contains(&by) {
                missing.push(format!("label {by} on {names:?} (in {expr})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard uses series Prometheus did not scrape:\n{}",
        missing.join("\n")
    );
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(e)) = m.get("expr") {
                out.push(e.clone());
            }
            m.values().for_each(|v| collect_exprs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// `lb_...` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("lb_") {
        let start = i + pos;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |n| start + n);
        if boundary {
            out.insert(expr[start..end].to_owned());
        }
        i = end;
    }
    out
}

/// Label names in `by (a, b)` clauses.
fn grouping_labels(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(pos) = rest.find("by (") {
        rest = &rest[pos + 4..];
        let end = rest.find(')').expect("closing parenthesis");
        out.extend(rest[..end].split(',').map(|l| l.trim().to_owned()));
        rest = &rest[end..];
    }
    out
}

fn curl_in(ns: &str, url: &str) -> String {
    let out = netns::exec_in(ns, &["curl", "-sf", "--max-time", "5", url]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `prometheus` on the shipped scrape config and rules (durations cut),
/// in the load balancer's namespace; killed with the lab.
struct Prometheus {
    ns: String,
}

impl Prometheus {
    fn start(lab: &mut Lab, ns: &str) -> Self {
        let dir = lab.topo.run_dir().join("prometheus");
        std::fs::create_dir_all(dir.join("data")).expect("prometheus dir");
        let shipped = repo().join("deploy/prometheus");
        let config = std::fs::read_to_string(shipped.join("prometheus.yml"))
            .expect("prometheus.yml")
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
        assert!(
            config.contains("scrape_interval: 1s") && config.contains(METRICS),
            "{config}"
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("write config");
        let rules = std::fs::read_to_string(shipped.join("lb-alerts.yml")).expect("rules");
        let rules: String = rules
            .lines()
            .map(|l| match l.trim_start().strip_prefix("for: ") {
                Some(_) => format!("{}for: 2s", &l[..l.len() - l.trim_start().len()]),
                None => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.join("lb-alerts.yml"), rules).expect("write rules");
        let args = [
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address={PROMETHEUS}"),
        ];
        let mut child = NsChild::spawn(
            "prometheus",
            ns,
            Path::new("/usr/bin/prometheus"),
            &args,
            proc::verbose(),
        );
        child.wait_for_line(
            "Server is ready to receive web requests",
            Duration::from_secs(30),
        );
        lab.topo.adopt(child);
        Self { ns: ns.to_owned() }
    }

    fn get(&self, path: &str) -> Value {
        let text = curl_in(&self.ns, &format!("http://{PROMETHEUS}{path}"));
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
        assert_eq!(v["status"], "success", "{path}: {v}");
        v["data"].clone()
    }

    /// Until the lb target is up (one successful scrape).
    fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let targets = self.get("/api/v1/targets");
            let up = targets["activeTargets"].as_array().is_some_and(|t| {
                t.iter()
                    .any(|t| t["health"] == "up" && t["labels"]["job"] == "lb")
            });
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never scraped lb: {targets}"
            );
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// The active alerts named `name` (pending or firing).
    fn alerts(&self, name: &str) -> Vec<Value> {
        self.get("/api/v1/alerts")["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .collect()
    }

    /// Until the firing alerts named `name` satisfy `done`; returns them.
    fn wait_alert_where(
        &self,
        name: &str,
        within: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let firing: Vec<Value> = self
                .alerts(name)
                .into_iter()
                .filter(|a| a["state"] == "firing")
                .collect();
            if done(&firing) {
                return firing;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: not as expected within {within:?}: {:?}",
                self.alerts(name)
            );
            thread::sleep(Duration::from_millis(250));
        }
    }

    fn wait_alert(&self, name: &str, state: &str, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let found: Vec<Value> = self
                .alerts(name)
                .into_iter()
                .filter(|a| a["state"] == state)
                .collect();
            if !found.is_empty() {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{name} not {state} within {within:?}: {:?}",
                self.alerts(name)
            );
            thread::sleep(Duration::from_millis(250));
        }
    }

    fn wait_no_alert(&self, name: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = self.alerts(name);
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} still active {within:?} later: {left:?}"
            );
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Label sets of the series named `name` Prometheus holds.
    fn series(&self, name: &str) -> Vec<BTreeMap<String, Value>> {
        self.get(&format!("/api/v1/series?match%5B%5D={name}"))
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| s.as_object().map(|m| m.clone().into_iter().collect()))
            .collect()
    }
}
