//! A running end-to-end lab: a [`Topology`] with test servers in its
//! target namespaces and `lb run` serving a config in the load-balancer
//! namespace, plus the traffic helpers the end-to-end tests share.
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::client::{EchoConn, FlowReport, count_by_target};
use crate::netns;
use crate::proc::{self, LbDaemon};
use crate::topology::{
    ConfigSpec, TARGET_TCP_PORT, Topology, TopologyOpts, VIP4, VIP6, target_name,
};

/// `lb-test-server` ([`proc::test_bin`]).
pub fn server_bin() -> PathBuf {
    proc::test_bin("lb-test-server")
}

/// A lab's namespaces without its daemon: `targets` target namespaces
/// with `lb-test-server` running, and with `local_vips` both VIPs on the
/// load balancer's loopback, so the daemon's own sockets (TCP proxy, UDP
/// relay, TLS listeners) can bind them. [`Lab`] starts `lb run` on it; a
/// test that writes its own config and starts `lb run` itself (with other
/// privileges, say) takes this alone.
pub fn topology(name: &str, targets: usize, local_vips: bool) -> Topology {
    netns::require_root();
    let mut topo = Topology::new(
        name,
        TopologyOpts {
            targets,
            ..TopologyOpts::default()
        },
    );
    topo.start_servers(&server_bin());
    if local_vips {
        topo.lb
            .ip(&["addr", "add", &format!("{VIP4}/32"), "dev", "lo"]);
        topo.lb
            .ip(&["-6", "addr", "add", &format!("{VIP6}/128"), "dev", "lo"]);
    }
    topo
}

/// Writes `topo`'s config: the `[daemon]` table of the userspace data path
/// (`dataplane = "userspace"`, the topology's pin directory and API
/// socket), then `body`.
pub fn userspace_config(topo: &Topology, body: &str) -> PathBuf {
    let text = format!(
        "[daemon]\ndataplane = \"userspace\"\npin_dir = {:?}\n\n[api]\nsocket = {:?}\n\n{body}",
        topo.pin_dir().display().to_string(),
        topo.api_socket().display().to_string()
    );
    let path = topo.config_path();
    std::fs::write(&path, text).expect("write config");
    path
}

/// Health checks every second, two failures or successes to change state;
/// UDP groups are checked over TCP on the servers' TCP port.
pub fn fast_checks(spec: &mut ConfigSpec) {
    health_checks(
        spec,
        "interval = 1, timeout = 1, healthy_threshold = 2, unhealthy_threshold = 2",
    );
}

/// A `health_check` with `keys` on every group of `spec`; UDP groups are
/// checked over TCP on the servers' TCP port.
pub fn health_checks(spec: &mut ConfigSpec, keys: &str) {
    for g in &mut spec.target_groups {
        let port = if g.protocol == "udp" {
            format!(", port = {TARGET_TCP_PORT}")
        } else {
            String::new()
        };
        g.extra.push(format!("health_check = {{ {keys}{port} }}"));
    }
}

pub fn vip4(port: u16) -> SocketAddr {
    SocketAddr::new(VIP4.into(), port)
}

pub fn vip6(port: u16) -> SocketAddr {
    SocketAddr::new(VIP6.into(), port)
}

pub const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// New flows per spread check; each target must get its even share ±25%.
/// With 300 flows over 3 targets ±25% is only ±3σ of a perfect hash (a
/// false failure in ~0.7% of checks: 127/99/74 was seen once); with 600 it
/// is ±6σ, while an imbalance of 25% is caught as often as before.
pub const SPREAD_FLOWS: usize = 600;

/// A topology with servers running and `lb run` serving a config.
/// Fields drop in order: daemon (SIGTERM + `lb down`), then the topology.
pub struct Lab {
    pub daemon: Option<LbDaemon>,
    pub topo: Topology,
    pub lb: PathBuf,
    pub server: PathBuf,
    pub config: PathBuf,
    edit: Box<dyn Fn(&mut ConfigSpec) + Send + Sync>,
}

impl Lab {
    /// `targets` namespaces with servers; `registered` (1-based) in the
    /// config; `lb run` started.
    pub fn new(name: &str, targets: usize, registered: &[usize]) -> Self {
        Self::with(name, targets, registered, |_| {})
    }

    /// [`Lab::new`] with the standard config edited by `edit` (also on every
    /// [`Lab::reconfigure`]).
    pub fn with(
        name: &str,
        targets: usize,
        registered: &[usize],
        edit: impl Fn(&mut ConfigSpec) + Send + Sync + 'static,
    ) -> Self {
        Self::build(name, targets, registered, false, edit)
    }

    /// [`Lab::with`] on the userspace data path: `dataplane = "userspace"`
    /// and both VIPs on the load balancer's loopback, so the daemon's own
    /// sockets (TCP proxy, UDP relay) can bind them.
    pub fn userspace(
        name: &str,
        targets: usize,
        registered: &[usize],
        edit: impl Fn(&mut ConfigSpec) + Send + Sync + 'static,
    ) -> Self {
        let edit = move |spec: &mut ConfigSpec| {
            spec.daemon_extra
                .push("dataplane = \"userspace\"".to_owned());
            edit(spec);
        };
        Self::build(name, targets, registered, true, edit)
    }

    fn build(
        name: &str,
        targets: usize,
        registered: &[usize],
        local_vips: bool,
        edit: impl Fn(&mut ConfigSpec) + Send + Sync + 'static,
    ) -> Self {
        let lb = proc::lb_bin();
        let server = server_bin();
        let topo = topology(name, targets, local_vips);
        let mut spec = topo.config_spec(registered);
        edit(&mut spec);
        let config = topo.write_config(&spec);
        let mut lab = Self {
            daemon: None,
            topo,
            lb,
            server,
            config,
            edit: Box::new(edit),
        };
        lab.start_daemon();
        lab
    }

    /// A lab without a config or a daemon yet: `targets` target namespaces
    /// (0 allowed) with their servers, and with `local_vips` the VIPs on the
    /// load balancer's loopback. The test writes the config whole
    /// ([`Lab::write_userspace_config`]) and starts the daemon
    /// ([`Lab::start_daemon`]); its own processes (targets, clients) may run
    /// in any namespace of the lab, and [`Topology::adopt`] ends them with it.
    pub fn bare(name: &str, targets: usize, local_vips: bool) -> Self {
        let topo = topology(name, targets, local_vips);
        Self {
            daemon: None,
            lb: proc::lb_bin(),
            server: server_bin(),
            config: topo.config_path(),
            topo,
            edit: Box::new(|_| {}),
        }
    }

    /// Writes the lab's config: the `[daemon]` table of the userspace data
    /// path (with the lab's pin directory and API socket), then `body`.
    pub fn write_userspace_config(&self, body: &str) -> PathBuf {
        userspace_config(&self.topo, body)
    }

    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "daemon already running");
        self.daemon = Some(LbDaemon::start_with(
            &self.lb,
            self.topo.lb.name(),
            &self.config,
        ));
    }

    /// SIGTERM: program and pins stay.
    pub fn stop_daemon(&mut self) {
        self.daemon.take().expect("daemon running").stop();
    }

    pub fn reconfigure(&self, registered: &[usize]) {
        let mut spec = self.topo.config_spec(registered);
        (self.edit)(&mut spec);
        self.topo.write_config(&spec);
    }

    pub fn flows(&self, proto: &str, vip: SocketAddr, count: usize) -> Vec<FlowReport> {
        let run = self.topo.run_clients(&self.server, proto, vip, count);
        if !run.all_ok() {
            panic!("{}\n{}", run.describe_failure(), self.diagnostics());
        }
        run.flows
    }

    /// The daemon's output and `lb stats`, for failure messages.
    pub fn diagnostics(&self) -> String {
        let daemon = self
            .daemon
            .as_ref()
            .map_or_else(|| "(lb run stopped)".to_owned(), LbDaemon::output);
        let stats = proc::lb_cmd(
            &self.lb,
            self.topo.lb.name(),
            &[
                "stats".as_ref(),
                "--config".as_ref(),
                self.config.as_os_str(),
            ],
        );
        format!(
            "{daemon}\n--- lb stats ---\n{}{}",
            String::from_utf8_lossy(&stats.stdout),
            String::from_utf8_lossy(&stats.stderr)
        )
    }

    /// `lb <args> --config <config>` in the load-balancer namespace (the
    /// API subcommands find the daemon's socket through the config);
    /// returns (success, stdout, stderr).
    pub fn lb(&self, args: &[&str]) -> (bool, String, String) {
        let mut all: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        all.extend([std::ffi::OsStr::new("--config"), self.config.as_os_str()]);
        let out = proc::lb_cmd(&self.lb, self.topo.lb.name(), &all);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `lb flows --json` (up to 10,000): the state of every live flow by
    /// (protocol, client address).
    pub fn flow_states(&self) -> std::collections::BTreeMap<(String, SocketAddr), String> {
        let (ok, out, err) = self.lb(&["flows", "--limit", "10000", "--json"]);
        assert!(ok, "lb flows: {err}\n{}", self.diagnostics());
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("lb flows printed {out:?}: {e}"));
        let sample = v["sample"].as_array().expect("sample");
        sample
            .iter()
            .filter_map(|f| {
                let client: SocketAddr = f["client"].as_str()?.parse().ok()?;
                let proto = f["protocol"].as_str().unwrap_or("?").to_owned();
                Some((
                    (proto, client),
                    f["state"].as_str().unwrap_or("?").to_owned(),
                ))
            })
            .collect()
    }

    /// `lb targets <group> --json`: (target, state, reason, effective
    /// weight) of every target.
    pub fn target_health(&self, group: &str) -> Vec<TargetHealth> {
        let (ok, out, err) = self.lb(&["targets", group, "--json"]);
        assert!(
            ok,
            "lb targets {group} failed: {err}\n{}",
            self.diagnostics()
        );
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("lb targets --json printed {out:?}: {e}"));
        let list = v
            .get("targets")
            .unwrap_or(&v)
            .as_array()
            .cloned()
            .unwrap_or_default();
        list.iter()
            .map(|t| TargetHealth {
                target: t["target"]
                    .as_str()
                    .unwrap_or_default()
                    .parse()
                    .expect("target address"),
                state: t["state"].as_str().unwrap_or_default().to_owned(),
                reason: t["reason"].as_str().map(str::to_owned),
                effective_weight: t["effective_weight"].as_u64().unwrap_or(0),
            })
            .collect()
    }

    /// Polls `lb targets <group>` until `done` holds (at most `within`).
    pub fn wait_health(
        &self,
        group: &str,
        within: Duration,
        what: &str,
        done: impl Fn(&[TargetHealth]) -> bool,
    ) -> Vec<TargetHealth> {
        let deadline = Instant::now() + within;
        loop {
            let h = self.target_health(group);
            if done(&h) {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "{group}: not {what} within {within:?}: {h:?}\n{}",
                self.diagnostics()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn connect(&self, vip: SocketAddr) -> EchoConn {
        EchoConn::connect_in(self.topo.client.name(), vip, IO_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "long-lived connection to {vip}: {e:#}\n{}",
                self.diagnostics()
            )
        })
    }
}

/// One row of `lb targets --json`.
#[derive(Debug, Clone)]
pub struct TargetHealth {
    pub target: SocketAddr,
    pub state: String,
    pub reason: Option<String>,
    pub effective_weight: u64,
}

/// Whether every target reported is healthy (and there is one).
pub fn all_healthy(h: &[TargetHealth]) -> bool {
    !h.is_empty() && h.iter().all(|t| t.state == "healthy")
}

/// The state of `target`, or "absent" when it is not reported.
pub fn state_of(h: &[TargetHealth], target: SocketAddr) -> &str {
    h.iter()
        .find(|t| t.target == target)
        .map_or("absent", |t| t.state.as_str())
}

/// Checks that `flows` spread over exactly `targets` (1-based), each within
/// ±25% of an even share, and that every target saw the client's own
/// address and port.
pub fn assert_spread(flows: &[FlowReport], targets: &[usize], client: IpAddr) {
    let counts = count_by_target(flows);
    let share = flows.len() as f64 / targets.len() as f64;
    let (lo, hi) = (
        (share * 0.75).floor() as usize,
        (share * 1.25).ceil() as usize,
    );
    for name in counts.keys() {
        assert!(
            targets.iter().any(|&i| target_name(i) == *name),
            "flows reached {name}, which is not registered (registered: {targets:?}); counts {counts:?}"
        );
    }
    for &i in targets {
        let n = counts.get(&target_name(i)).copied().unwrap_or(0);
        assert!(
            (lo..=hi).contains(&n),
            "{} got {n} of {} flows, expected {lo}..={hi}; counts {counts:?}",
            target_name(i),
            flows.len()
        );
    }
    for f in flows {
        assert_eq!(
            f.seen.ip(),
            client,
            "{} saw client address {} instead of {client} (flow {f:?})",
            f.target,
            f.seen
        );
        assert_eq!(
            f.seen, f.local,
            "{} saw source {} but the client socket is {} (source port changed?)",
            f.target, f.seen, f.local
        );
    }
}

pub fn assert_distinct_ports(flows: &[FlowReport]) {
    let mut ports: Vec<u16> = flows.iter().map(|f| f.local.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), flows.len(), "client source ports repeat");
}

/// Echoes lines through a connection on a background thread until stopped;
/// the first failure ends it.
pub struct Pinger {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    target: String,
    handle: Option<JoinHandle<Result<EchoConn, String>>>,
}

impl Pinger {
    pub fn start(mut conn: EchoConn) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let target = conn.target.clone();
        let (stop2, ok2) = (Arc::clone(&stop), Arc::clone(&ok));
        let handle = thread::spawn(move || {
            let mut n = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                n += 1;
                conn.echo(&format!("ping {n}"))
                    .map_err(|e| format!("echo {n} failed: {e:#}"))?;
                ok2.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(10));
            }
            Ok(conn)
        });
        Self {
            stop,
            ok,
            target,
            handle: Some(handle),
        }
    }

    /// Waits until `n` more echoes succeeded; panics (with the echo error)
    /// if the connection broke or stalled.
    pub fn expect_progress(&mut self, n: usize, during: &str) {
        let start = self.ok.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ok.load(Ordering::Relaxed) < start + n {
            if self.handle.as_ref().is_some_and(JoinHandle::is_finished) {
                let err = self.finish_err();
                panic!(
                    "long-lived connection to {} broke {during}: {err}",
                    self.target
                );
            }
            assert!(
                Instant::now() < deadline,
                "long-lived connection to {} stalled {during}",
                self.target
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until the connection breaks (its echo fails) and returns the
    /// error; panics if it still works after `within`.
    pub fn expect_broken(&mut self, within: Duration, why: &str) -> String {
        let deadline = Instant::now() + within;
        while !self.handle.as_ref().is_some_and(JoinHandle::is_finished) {
            assert!(
                Instant::now() < deadline,
                "connection to {} still works {within:?} later; expected it to break: {why}",
                self.target
            );
            thread::sleep(Duration::from_millis(20));
        }
        self.finish_err()
    }

    /// Echoes that succeeded so far.
    pub fn echoes(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    fn finish_err(&mut self) -> String {
        match self.handle.take().expect("pinger running").join() {
            Ok(Ok(_)) => "stopped".to_owned(),
            Ok(Err(e)) => e,
            Err(_) => "pinger thread panicked".to_owned(),
        }
    }

    /// Stops the thread and returns the connection; panics if it broke.
    pub fn finish(mut self) -> EchoConn {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().expect("pinger running").join() {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => panic!("long-lived connection to {} broke: {e}", self.target),
            Err(_) => panic!("pinger thread panicked"),
        }
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub fn target_index(name: &str) -> usize {
    name.strip_prefix('t')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected target name {name:?}"))
}
