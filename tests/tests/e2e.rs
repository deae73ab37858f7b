//! End-to-end tests: real TCP and UDP traffic from a client namespace through
//! `lb run` (XDP, NAT mode) to target namespaces and back.
//!
//! Needs root and `LB_BIN` (set by `cargo xtask test`); panics otherwise,
//! never skips. Each test builds its own topology (unique namespace names, its
//! own bpffs), so the tests run in parallel. `LB_TEST_VERBOSE=1` echoes the
//! output of `lb run` and the servers live.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use lb_tests::client::{EchoConn, FlowReport, count_by_target};
use lb_tests::netns;
use lb_tests::proc::{self, LbDaemon};
use lb_tests::topology::{
    CLIENT4, CLIENT6, ConfigSpec, LB_CLIENT_IF, ListenerSpec, Topology, TopologyOpts, VIP_TCP_PORT,
    VIP_UDP_PORT, VIP4, VIP6, target_name,
};

/// `lb-test-server`: from `LB_TEST_BIN_DIR` (xtask), else the one cargo
/// built for this test.
fn server_bin() -> PathBuf {
    match std::env::var_os("LB_TEST_BIN_DIR") {
        Some(dir) => {
            let p = PathBuf::from(dir).join("lb-test-server");
            assert!(p.is_file(), "{} does not exist", p.display());
            p
        }
        None => PathBuf::from(env!("CARGO_BIN_EXE_lb-test-server")),
    }
}

fn vip4(port: u16) -> SocketAddr {
    SocketAddr::new(VIP4.into(), port)
}

fn vip6(port: u16) -> SocketAddr {
    SocketAddr::new(VIP6.into(), port)
}

const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// New flows per spread check; each target must get its even share ±25%.
/// With 300 flows over 3 targets ±25% is only ±3σ of a perfect hash (a
/// false failure in ~0.7% of checks: 127/99/74 was seen once); with 600 it
/// is ±6σ, while an imbalance of 25% is caught as often as before.
const SPREAD_FLOWS: usize = 600;

/// A topology with servers running and `lb run` serving a config.
/// Fields drop in order: daemon (SIGTERM + `lb down`), then the topology.
struct Lab {
    daemon: Option<LbDaemon>,
    topo: Topology,
    lb: PathBuf,
    server: PathBuf,
    config: PathBuf,
}

impl Lab {
    /// `targets` namespaces with servers; `registered` (1-based) in the
    /// config; `lb run` started.
    fn new(name: &str, targets: usize, registered: &[usize]) -> Self {
        netns::require_root();
        let lb = proc::lb_bin();
        let server = server_bin();
        let mut topo = Topology::new(
            name,
            TopologyOpts {
                targets,
                ..TopologyOpts::default()
            },
        );
        topo.start_servers(&server);
        let config = topo.write_config(&topo.config_spec(registered));
        let mut lab = Self {
            daemon: None,
            topo,
            lb,
            server,
            config,
        };
        lab.start_daemon();
        lab
    }

    fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "daemon already running");
        self.daemon = Some(LbDaemon::start_with(
            &self.lb,
            self.topo.lb.name(),
            &self.config,
        ));
    }

    /// SIGTERM: program and pins stay.
    fn stop_daemon(&mut self) {
        self.daemon.take().expect("daemon running").stop();
    }

    fn reconfigure(&self, registered: &[usize]) {
        self.topo.write_config(&self.topo.config_spec(registered));
    }

    fn flows(&self, proto: &str, vip: SocketAddr, count: usize) -> Vec<FlowReport> {
        let run = self.topo.run_clients(&self.server, proto, vip, count);
        if !run.all_ok() {
            panic!("{}\n{}", run.describe_failure(), self.diagnostics());
        }
        run.flows
    }

    /// The daemon's output and `lb stats`, for failure messages.
    fn diagnostics(&self) -> String {
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

    fn connect(&self, vip: SocketAddr) -> EchoConn {
        EchoConn::connect_in(self.topo.client.name(), vip, IO_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "long-lived connection to {vip}: {e:#}\n{}",
                self.diagnostics()
            )
        })
    }
}

/// Checks that `flows` spread over exactly `targets` (1-based), each within
/// ±25% of an even share, and that every target saw the client's own
/// address and port.
fn assert_spread(flows: &[FlowReport], targets: &[usize], client: IpAddr) {
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

fn assert_distinct_ports(flows: &[FlowReport]) {
    let mut ports: Vec<u16> = flows.iter().map(|f| f.local.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), flows.len(), "client source ports repeat");
}

fn spread(name: &str, proto: &str, vip: SocketAddr, client: IpAddr) {
    let lab = Lab::new(name, 3, &[1, 2, 3]);
    let flows = lab.flows(proto, vip, SPREAD_FLOWS);
    assert_distinct_ports(&flows);
    assert_spread(&flows, &[1, 2, 3], client);
    assert_stats(&lab, &format!("{vip}/{proto}"), flows.len());
}

/// `lb stats` (read from the pins) counts every new flow for the VIP and
/// reports no drops.
fn assert_stats(lab: &Lab, vip: &str, new_flows: usize) {
    let stats = proc::lb_stats(&lab.lb, lab.topo.lb.name(), &lab.config);
    let row = stats
        .lines()
        .find(|l| l.trim_start().starts_with(vip))
        .unwrap_or_else(|| panic!("no row for {vip} in lb stats:\n{stats}"));
    let last: usize = row
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable row {row:?}"));
    assert_eq!(last, new_flows, "new_flows of {vip} in lb stats:\n{stats}");
    for line in stats
        .lines()
        .filter(|l| l.trim_start().starts_with("drop_"))
    {
        let n: u64 = line
            .split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        assert_eq!(n, 0, "lb stats reports drops: {line}\n{stats}");
    }
    assert!(
        stats.contains("flows: "),
        "lb stats has no flow count:\n{stats}"
    );
}

#[test]
fn tcp4_connections_spread_over_targets() {
    spread("tcp4", "tcp", vip4(VIP_TCP_PORT), CLIENT4.into());
}

#[test]
fn udp4_flows_spread_over_targets() {
    spread("udp4", "udp", vip4(VIP_UDP_PORT), CLIENT4.into());
}

#[test]
fn tcp6_connections_spread_over_targets() {
    spread("tcp6", "tcp", vip6(VIP_TCP_PORT), CLIENT6.into());
}

#[test]
fn udp6_flows_spread_over_targets() {
    spread("udp6", "udp", vip6(VIP_UDP_PORT), CLIENT6.into());
}

/// Echoes lines through a connection on a background thread until stopped;
/// the first failure ends it.
struct Pinger {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    target: String,
    handle: Option<JoinHandle<Result<EchoConn, String>>>,
}

impl Pinger {
    fn start(mut conn: EchoConn) -> Self {
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
    fn expect_progress(&mut self, n: usize, during: &str) {
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

    fn finish_err(&mut self) -> String {
        match self.handle.take().expect("pinger running").join() {
            Ok(Ok(_)) => "stopped".to_owned(),
            Ok(Err(e)) => e,
            Err(_) => "pinger thread panicked".to_owned(),
        }
    }

    /// Stops the thread and returns the connection; panics if it broke.
    fn finish(mut self) -> EchoConn {
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

fn target_index(name: &str) -> usize {
    name.strip_prefix('t')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected target name {name:?}"))
}

/// How a config change reaches the daemon.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Apply {
    /// SIGTERM `lb run`, rewrite the config, start `lb run` again.
    Restart,
    /// Rewrite the config, SIGHUP `lb run` (hot reload).
    Sighup,
}

/// Targets are added and removed by config while a connection keeps echoing
/// on its target; new flows follow the new target set.
fn targets_change(name: &str, apply: Apply) {
    let mut lab = Lab::new(name, 4, &[1, 2, 3]);
    let conn = lab.connect(vip4(VIP_TCP_PORT));
    let pinned = target_index(&conn.target);
    assert_eq!(
        conn.seen, conn.local,
        "target saw a translated client address"
    );
    let mut pinger = Pinger::start(conn);
    pinger.expect_progress(5, "before the change");

    let removed = [1, 2, 3]
        .into_iter()
        .find(|&i| i != pinned)
        .expect("another target");
    let new_set: Vec<usize> = [1, 2, 3, 4].into_iter().filter(|&i| i != removed).collect();

    match apply {
        Apply::Restart => {
            lab.stop_daemon();
            pinger.expect_progress(5, "while lb run was stopped");
            lab.reconfigure(&new_set);
            lab.start_daemon();
            pinger.expect_progress(5, "after lb run restarted with the new targets");
        }
        Apply::Sighup => {
            lab.reconfigure(&new_set);
            lab.daemon.as_mut().expect("daemon running").reload();
            pinger.expect_progress(5, "after the SIGHUP reload");
        }
    }

    // New flows follow the new target set.
    let flows = lab.flows("tcp", vip4(VIP_TCP_PORT), SPREAD_FLOWS);
    pinger.expect_progress(5, "while new connections were made");
    assert_spread(&flows, &new_set, CLIENT4.into());

    let mut conn = pinger.finish();
    conn.echo("last")
        .unwrap_or_else(|e| panic!("final echo: {e:#}"));
    assert_eq!(target_index(&conn.target), pinned);
}

/// (d) Targets changed across a daemon restart (stop, edit, start).
#[test]
fn connection_stays_on_target_while_targets_change() {
    targets_change("reconf", Apply::Restart);
}

/// (d) The same through a SIGHUP hot reload.
#[test]
fn connection_stays_on_target_across_sighup_reload() {
    targets_change("reload", Apply::Sighup);
}

/// (e) A connection keeps working before, during (daemon stopped, XDP still
/// attached) and after a restart of `lb run`; new flows work after it.
#[test]
fn connection_survives_daemon_restart() {
    let mut lab = Lab::new("restart", 3, &[1, 2, 3]);
    let tcp = lab.connect(vip4(VIP_TCP_PORT));
    let tcp6 = lab.connect(vip6(VIP_TCP_PORT));
    let mut pingers = [Pinger::start(tcp), Pinger::start(tcp6)];
    for p in &mut pingers {
        p.expect_progress(5, "before the restart");
    }
    lab.stop_daemon();
    for p in &mut pingers {
        p.expect_progress(20, "while lb run was stopped");
    }
    lab.start_daemon();
    for p in &mut pingers {
        p.expect_progress(20, "after lb run restarted");
    }
    for p in pingers {
        let mut conn = p.finish();
        conn.echo("last")
            .unwrap_or_else(|e| panic!("final echo: {e:#}"));
    }
    let flows = lab.flows("tcp", vip4(VIP_TCP_PORT), 30);
    assert_eq!(flows.len(), 30);
    let flows = lab.flows("udp", vip6(VIP_UDP_PORT), 30);
    assert_eq!(flows.len(), 30);
}

fn has_xdp(link: &str) -> bool {
    link.contains("xdp")
}

/// Every file and directory under `dir` (none if it does not exist), except
/// the `*.debug` iterator files the kernel puts at a bpffs root.
fn pins(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "debug") {
                continue;
            }
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.display().to_string());
        }
    }
    out.sort();
    out
}

/// (f) `lb down` detaches the program from every interface and removes the
/// pins; the VIP stops answering.
#[test]
fn lb_down_detaches_and_unpins() {
    let mut lab = Lab::new("down", 3, &[1, 2, 3]);
    lab.flows("tcp", vip4(VIP_TCP_PORT), 10);
    let ifaces = lab.topo.lb_interfaces();
    for dev in &ifaces {
        let link = lab.topo.lb_link(dev);
        assert!(
            has_xdp(&link),
            "no XDP program on {dev} while lb runs:\n{link}"
        );
    }
    let pin_dir = lab.topo.pin_dir();
    assert!(
        !pins(&pin_dir).is_empty(),
        "nothing pinned in {}",
        pin_dir.display()
    );

    // While `lb run` serves the pins, a second daemon and `lb down` are
    // refused, and nothing changes.
    let config = lab.config.as_os_str();
    for cmd in ["run", "down"] {
        let out = proc::lb_cmd(
            &lab.lb,
            lab.topo.lb.name(),
            &[cmd.as_ref(), "--config".as_ref(), config],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("another `lb run` is serving pin_dir"),
            "`lb {cmd}` beside a running daemon must be refused; got {}:\n{stderr}",
            out.status
        );
    }
    assert!(
        has_xdp(&lab.topo.lb_link(LB_CLIENT_IF)),
        "a refused command detached the program"
    );
    lab.flows("tcp", vip4(VIP_TCP_PORT), 10);

    lab.stop_daemon();
    let link = lab.topo.lb_link(LB_CLIENT_IF);
    assert!(
        has_xdp(&link),
        "SIGTERM must leave the program attached, but {LB_CLIENT_IF} has none:\n{link}"
    );
    proc::lb_down(&lab.lb, lab.topo.lb.name(), &lab.config);
    for dev in &ifaces {
        let link = lab.topo.lb_link(dev);
        assert!(
            !has_xdp(&link),
            "XDP still attached to {dev} after lb down:\n{link}"
        );
    }
    let left = pins(&pin_dir);
    assert!(
        left.is_empty(),
        "pins left in {} after lb down: {left:?}",
        pin_dir.display()
    );
    let vip = vip4(VIP_TCP_PORT);
    let reached = netns::in_netns(lab.topo.client.name(), move || {
        EchoConn::connect(vip, Duration::from_secs(1)).is_ok()
    });
    assert!(!reached, "{vip} still answers after lb down");
}

/// The config template renders what `lb`'s parser and validator accept
/// (needs no root: it catches schema drift early).
#[test]
fn rendered_config_is_valid() {
    let ifs = vec!["lb-c".to_owned(), "lb-t1".to_owned(), "lb-t2".to_owned()];
    let spec = ConfigSpec::standard(ifs, Path::new("/run/lbt-x/bpffs"), &[1, 2]);
    let text = spec.render();
    let config = lb::config::Config::parse(&text)
        .unwrap_or_else(|e| panic!("rendered config does not parse: {e}\n{text}"));
    if let Err(e) = config.validate() {
        panic!("rendered config is invalid: {e:?}\n{text}");
    }
    assert_eq!(config.listeners.len(), 4);
    assert_eq!(config.target_groups.len(), 4);
    assert!(config.target_groups.iter().all(|g| g.targets.len() == 2));
}

/// Removing a VIP by reload ends its established flows too (the data path
/// forwards established flows without looking the VIP up, so the daemon
/// purges them), while the other VIPs' connections keep working.
#[test]
fn removing_a_vip_ends_its_established_flows() {
    let mut lab = Lab::new("rmvip", 3, &[1, 2, 3]);
    let mut doomed = lab.connect(vip4(VIP_TCP_PORT));
    let mut kept = lab.connect(vip6(VIP_TCP_PORT));
    doomed.echo("before").expect("echo before the reload");
    kept.echo("before").expect("echo before the reload");

    // A second listener keeps the removed one's target group (and so its
    // targets) in use: only the purge can end the established flow.
    let mut spec = lab.topo.config_spec(&[1, 2, 3]);
    let is_tcp4 = |l: &ListenerSpec| l.address == vip4(VIP_TCP_PORT).ip() && l.protocol == "tcp";
    let mut alt = spec
        .listeners
        .iter()
        .find(|l| is_tcp4(l))
        .expect("an IPv4 TCP listener")
        .clone();
    alt.name = "tcp4-alt".into();
    alt.port = VIP_TCP_PORT + 1;
    spec.listeners.retain(|l| !is_tcp4(l));
    spec.listeners.push(alt);
    lab.topo.write_config(&spec);
    lab.daemon.as_mut().expect("daemon running").reload();

    let err = doomed.echo("after");
    assert!(
        err.is_err(),
        "the removed VIP's connection still reaches its target after the reload"
    );
    kept.echo("after")
        .unwrap_or_else(|e| panic!("a connection to a kept VIP broke: {e:#}"));
}

/// An invalid config sent by SIGHUP is refused with its errors and the
/// running config stays in force: established and new flows keep working.
#[test]
fn invalid_reload_is_refused_and_traffic_continues() {
    let mut lab = Lab::new("badreload", 3, &[1, 2, 3]);
    let mut conn = lab.connect(vip4(VIP_TCP_PORT));
    conn.echo("before").expect("echo before the reload");
    let good = std::fs::read_to_string(&lab.config).expect("read config");
    // A syntax-level error (unknown key), then a semantic one (a table size
    // that is not prime): each refused with its reason.
    for (bad, reason) in [
        (
            good.replacen("[daemon]", "[daemon]\nbogus = 1", 1),
            "unknown field `bogus`",
        ),
        (
            good.replacen("[daemon]", "[daemon]\nmaglev_table_size = 65536", 1),
            "daemon.maglev_table_size: 65536 is not prime",
        ),
    ] {
        std::fs::write(&lab.config, bad).expect("write bad config");
        let daemon = lab.daemon.as_mut().expect("daemon running");
        daemon.reload_refused();
        // The first log line says it was refused; the reason may follow on
        // the next lines (toml's excerpt).
        std::thread::sleep(Duration::from_millis(100));
        let out = daemon.output();
        assert!(out.contains(reason), "refusal without {reason:?}:\n{out}");
    }
    std::fs::write(&lab.config, &good).expect("restore config");
    conn.echo("after")
        .unwrap_or_else(|e| panic!("established flow broke after a refused reload: {e:#}"));
    let flows = lab.flows("tcp", vip4(VIP_TCP_PORT), SPREAD_FLOWS);
    assert_spread(&flows, &[1, 2, 3], CLIENT4.into());
}

/// Path-MTU discovery through the VIP: the links toward the targets carry
/// 1400-byte packets while the targets advertise an MSS for 1500, so the
/// client's full-size segments do not fit after translation. The data path
/// answers the client with ICMP "fragmentation needed" from the VIP quoting
/// the packet as sent; the client's kernel lowers its path MTU and the large
/// transfer completes. (An error from the kernel would quote the translated
/// packet, which the client cannot match: the transfer would stall.)
#[test]
fn path_mtu_discovery_through_the_vip() {
    let lab = Lab::new("pmtu", 3, &[1, 2, 3]);
    for dev in lab.topo.lb_interfaces() {
        if dev != LB_CLIENT_IF {
            let out = lab
                .topo
                .lb
                .exec(&["ip", "link", "set", &dev, "mtu", "1400"]);
            assert!(out.status.success(), "set mtu on {dev}: {out:?}");
        }
    }
    for (i, target) in lab.topo.targets.iter().enumerate() {
        let gw = format!("10.200.1{}.1", i + 1);
        for cmd in [
            vec!["ip", "link", "set", "eth0", "mtu", "1400"],
            vec![
                "ip", "route", "change", "default", "via", &gw, "advmss", "1460",
            ],
        ] {
            let out = target.exec(&cmd);
            assert!(out.status.success(), "{cmd:?} in target {}: {out:?}", i + 1);
        }
    }
    let mut conn = lab.connect(vip4(VIP_TCP_PORT));
    let big = "x".repeat(20_000);
    conn.echo(&big).unwrap_or_else(|e| {
        panic!(
            "20 kB through a narrower target link: {e:#}\n{}",
            lab.diagnostics()
        )
    });
    let stats = proc::lb_stats(&lab.lb, lab.topo.lb.name(), &lab.config);
    let sent: u64 = stats
        .lines()
        .find(|l| l.trim_start().starts_with("too_big_sent"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        sent > 0,
        "no ICMP fragmentation-needed was generated:\n{stats}"
    );
}
