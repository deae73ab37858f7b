//! The scale-out lab: a router namespace running BIRD with ECMP, and N
//! balancer-host namespaces each running `lb run` with `[bgp]` on and a
//! BIRD beside it. Both BIRDs run the example configs of `deploy/bird/`
//! with the lab's site settings (their `define` lines replaced), so the
//! examples are what the tests exercise.
//!
//! ```text
//!  router ns (BIRD: ECMP, BFD, L4 hash)          host i ns (lb run + BIRD)
//!  r-h<i> 10.201.<i>.1/24 fd00:201:<i>::1/64 <-> eth0 10.201.<i>.2/24 fd00:201:<i>::2/64
//! ```
//!
//! Each host serves the standard listeners (TCP and UDP on [`VIP4`] and
//! [`VIP6`]). Built with [`ScaleOut::new`], a host has one target it cannot
//! reach, so its health checks fail and every group fails open; the
//! router's kernel routes to the VIPs tell which hosts announce them.
//!
//! Built with [`ScaleOut::with_targets`], the lab also carries traffic
//! ([`edge`]): a client and dsr targets, each on a link of its own to the
//! router, and every group of every host has `forwarding = "dsr"` over
//! those targets (the same config on every host, hence the same Maglev
//! table). The router forwards (rp_filter off: the outer source of an
//! encapsulated packet is no address of the link it comes from) and
//! spreads the client's flows over the hosts by ECMP; a host encapsulates
//! each packet to its target and sends it back to the router (its default
//! route), which delivers it to the target; the target decapsulates (`lb
//! target attach`) and answers the client through the router. One link
//! per target at the router, not a link from every host to every target:
//! the hosts' single uplink is how real balancer hosts are wired, and it
//! keeps the lab to one veth per namespace. [`counters`] counts what the
//! router forwards where; [`steer`] pins chosen source ports to one host.
//!
//! ```text
//!                         +-- h1, h2, h3 (lb run + BIRD; XDP on eth0)
//!  client -- r-c  router -+
//!                         +-- r-t<i> -- target i (lb target attach; servers)
//! ```
//!
//! Everything lives under `/run/<id>/` (configs, BIRD sockets, one bpffs
//! per host and one for the targets, drain files) and is removed on drop:
//! daemons (`lb down`), BIRDs, route monitor, servers, `lb target detach`,
//! links, namespaces, mounts, directory.
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::client::EchoConn;
use crate::lab::{IO_TIMEOUT, fast_checks, server_bin};
use crate::metrics;
use crate::netns::{self, Bpffs, Netns, TempDir, VethPair};
use crate::proc::{self, LbDaemon, NsChild, OutputMark};
use crate::topology::{
    ClientRun, ConfigSpec, PEER_IF, TargetSpec, VIP_TCP_PORT, VIP_UDP_PORT, VIP4, VIP6,
    run_clients_in,
};

pub mod counters;
pub mod edge;
pub mod steer;

use counters::Counts;
use edge::Edge;

/// The example configs the lab runs.
pub const BALANCER_CONF: &str = include_str!("../../deploy/bird/balancer.conf");
pub const ROUTER_CONF: &str = include_str!("../../deploy/bird/router.conf");

/// `[bgp]` table and protocol of the lab's hosts: not the defaults, so a
/// daemon that ignored the keys would announce nothing BIRD learns.
pub const LB_TABLE: u32 = 120;
pub const LB_PROTOCOL: u8 = 199;
/// The hosts' management API (TCP) and `/metrics`, inside each host's
/// namespace.
pub const API_LISTEN: &str = "127.0.0.1:9180";
pub const METRICS_LISTEN: &str = "127.0.0.1:9181";
/// A token allowed only `lb:Describe*` on every host.
pub const READER_TOKEN: &str = "reader-secret-0123456789";
/// BFD interval of the lab: slower than the examples' 100 ms, so a loaded
/// 2-core machine does not flap sessions (detection after 3 × 500 ms).
const BFD_MS: u32 = 500;
/// Seconds a failed BGP session waits before it starts again: shorter
/// than the examples' 60, so a test can bring a lost host back quickly.
const ERROR_WAIT_S: u32 = 3;
/// How long BGP may take to carry a change to the router's kernel: the
/// sessions come up within seconds; an update is a few milliseconds, a
/// daemon notices a detached program within 2 s (`announce::RECHECK`).
pub const CONVERGE: Duration = Duration::from_secs(30);

/// The router's interface toward host `i` (1-based).
pub fn router_if(i: usize) -> String {
    format!("r-h{i}")
}

/// Host `i`'s address toward the router.
pub fn host4(i: usize) -> IpAddr {
    format!("10.201.{i}.2").parse().expect("ipv4")
}

pub fn host6(i: usize) -> IpAddr {
    format!("fd00:201:{i:x}::2").parse().expect("ipv6")
}

/// One balancer host.
pub struct Host {
    /// `lb run`, while running. Dropped first.
    pub daemon: Option<LbDaemon>,
    bird: Option<NsChild>,
    pub ns: Netns,
    pub config: PathBuf,
    pub drain_file: PathBuf,
    pub pin_dir: PathBuf,
    /// Held for its drop (unmounted after the namespace is gone).
    _bpffs: Bpffs,
}

/// See the module doc. Fields drop in order.
pub struct ScaleOut {
    pub hosts: Vec<Host>,
    /// Held for its drop (killed), like the links below.
    _router_bird: NsChild,
    /// `ip -o monitor route` in the router namespace: every change of its
    /// routes, for checks that nothing changed.
    monitor: NsChild,
    /// The client and the targets ([`Self::with_targets`]).
    pub edge: Option<Edge>,
    /// Targets 1..=`configured` are in the hosts' configs at the start.
    configured: usize,
    _veths: Vec<VethPair>,
    pub router: Netns,
    pub lb: PathBuf,
    run_dir: TempDir,
}

impl ScaleOut {
    /// The router, `hosts` balancer hosts (1..=3: the router example
    /// names three), their BIRDs and daemons; returns once every daemon is
    /// ready (not yet once the routes converged: see [`Self::wait_paths`]).
    pub fn new(name: &str, hosts: usize) -> Self {
        Self::build(name, hosts, 0, 0)
    }

    /// [`Self::new`] with a client and `targets` dsr targets (see the
    /// module doc); returns once every daemon is ready.
    pub fn with_targets(name: &str, hosts: usize, targets: usize) -> Self {
        assert!(targets > 0, "with_targets: at least one target");
        Self::build(name, hosts, targets, targets)
    }

    /// [`Self::with_targets`] whose hosts' configs name only targets
    /// 1..=`configured` at the start: the others are attached and serving,
    /// ready for a test to add them ([`Self::reconfigure`]).
    pub fn with_spare_targets(name: &str, hosts: usize, targets: usize, configured: usize) -> Self {
        assert!(
            (1..=targets).contains(&configured),
            "with_spare_targets: 1..=targets configured"
        );
        Self::build(name, hosts, targets, configured)
    }

    fn build(name: &str, hosts: usize, targets: usize, configured: usize) -> Self {
        netns::require_root();
        netns::reap_stale();
        proc::require_tool("bird");
        proc::require_tool("birdc");
        assert!((1..=3).contains(&hosts), "1..=3 hosts");
        let tag: String = name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(10)
            .collect();
        let id = format!("{}-{tag}", netns::unique_id());
        let run_dir = TempDir::new(PathBuf::from("/run").join(&id));
        let router = Netns::new(format!("{id}-r"));
        let mut sysctls = vec![
            ("net.ipv4.fib_multipath_hash_policy", "1"),
            ("net.ipv6.fib_multipath_hash_policy", "1"),
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
        ];
        if targets > 0 {
            sysctls.extend([
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv6.conf.all.forwarding", "1"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
            ]);
        }
        for (k, v) in sysctls {
            router.sysctl(k, v);
        }
        let monitor = NsChild::spawn(
            "router routes",
            router.name(),
            Path::new("/usr/sbin/ip"),
            &["-o", "monitor", "route"],
            proc::verbose(),
        );
        let lb = proc::lb_bin();
        let edge = (targets > 0).then(|| Edge::new(&id, run_dir.path(), &router, targets, &lb));
        let mut veths = Vec::new();
        let mut built = Vec::new();
        for i in 1..=hosts {
            let (host, veth) = build_host(&id, run_dir.path(), &router, i, configured);
            veths.push(veth);
            built.push(host);
        }
        if targets > 0 {
            counters::install(&router, hosts, run_dir.path());
            steer::install(&router, hosts);
        }
        let router_bird = start_bird(
            "bird router",
            router.name(),
            &run_dir.path().join("router"),
            &router_conf(),
        );
        let mut lab = Self {
            hosts: built,
            _router_bird: router_bird,
            monitor,
            edge,
            configured,
            _veths: veths,
            router,
            lb,
            run_dir,
        };
        for i in 1..=hosts {
            let dir = lab.host_dir(i);
            let bird = start_bird(
                &format!("bird h{i}"),
                lab.hosts[i - 1].ns.name(),
                &dir,
                &balancer_conf(i),
            );
            lab.hosts[i - 1].bird = Some(bird);
            lab.start_daemon(i);
        }
        lab
    }

    fn host_dir(&self, i: usize) -> PathBuf {
        self.run_dir.path().join(format!("h{i}"))
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i - 1]
    }

    /// Starts host `i`'s `lb run` and waits for it to be ready.
    pub fn start_daemon(&mut self, i: usize) {
        let host = &mut self.hosts[i - 1];
        assert!(host.daemon.is_none(), "h{i}'s daemon runs already");
        host.daemon = Some(LbDaemon::start_with(&self.lb, host.ns.name(), &host.config));
    }

    /// Rewrites host `i`'s config: dsr groups over targets 1..=`targets`
    /// of the edge, each TCP group with the `tcp_extra` lines more (e.g.
    /// `second_chance = false`); `lb reload` then applies it.
    pub fn reconfigure(&self, i: usize, targets: usize, tcp_extra: &[&str]) {
        let host = self.host(i);
        let mut spec = host_config(&host.pin_dir, &self.host_dir(i), &host.drain_file, targets);
        for g in spec
            .target_groups
            .iter_mut()
            .filter(|g| g.protocol == "tcp")
        {
            g.extra.extend(tcp_extra.iter().map(|l| (*l).to_owned()));
        }
        std::fs::write(&host.config, spec.render()).expect("write host config");
    }

    /// Takes host `i`'s daemon (to stop or kill it).
    pub fn take_daemon(&mut self, i: usize) -> LbDaemon {
        self.hosts[i - 1]
            .daemon
            .take()
            .unwrap_or_else(|| panic!("h{i}'s daemon is not running"))
    }

    /// `lb <args> --config <host i's config>` in host `i`'s namespace:
    /// (success, stdout, stderr).
    pub fn lb(&self, i: usize, args: &[&str]) -> (bool, String, String) {
        let host = self.host(i);
        let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        all.extend([OsStr::new("--config"), host.config.as_os_str()]);
        let out = proc::lb_cmd(&self.lb, host.ns.name(), &all);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// [`Self::lb`], panicking with the diagnostics unless it succeeded;
    /// returns stdout.
    pub fn lb_ok(&self, i: usize, args: &[&str]) -> String {
        let (ok, out, err) = self.lb(i, args);
        assert!(
            ok,
            "h{i}: lb {} failed: {err}{out}\n{}",
            args.join(" "),
            self.diagnostics()
        );
        out
    }

    /// The value of `series` (name and labels as printed) in host `i`'s
    /// `/metrics`; `None` when absent.
    pub fn metric(&self, i: usize, series: &str) -> Option<f64> {
        metrics::scrape(self.host(i).ns.name(), METRICS_LISTEN, series)
    }

    /// The hosts (1-based) the router's kernel route to `vip` leads to:
    /// one per next hop of its multipath route; empty without a route.
    pub fn paths(&self, vip: IpAddr) -> BTreeSet<usize> {
        let family = if vip.is_ipv4() { "-4" } else { "-6" };
        let out = self
            .router
            .ip(&["-j", family, "route", "show", &vip.to_string()]);
        let routes: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("ip -j route show {vip}: {e}"));
        let mut hops = BTreeSet::new();
        for r in routes.as_array().into_iter().flatten() {
            let gateways = match r["nexthops"].as_array() {
                Some(list) => list.iter().map(|h| h["gateway"].clone()).collect(),
                None => vec![r["gateway"].clone()],
            };
            for g in gateways {
                let g: IpAddr = g
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("route to {vip} without a gateway: {r}"));
                let host = (1..=self.hosts.len())
                    .find(|&i| host4(i) == g || host6(i) == g)
                    .unwrap_or_else(|| panic!("route to {vip} via {g}, which is no host"));
                hops.insert(host);
            }
        }
        hops
    }

    /// Waits until the router's route to `vip` leads to exactly `hosts`.
    pub fn wait_paths(&self, vip: IpAddr, hosts: &[usize], what: &str) {
        let want: BTreeSet<usize> = hosts.iter().copied().collect();
        let deadline = Instant::now() + CONVERGE;
        loop {
            let now = self.paths(vip);
            if now == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the router's route to {vip} leads to hosts {now:?}, not {want:?}, \
                 {CONVERGE:?} later\n{}",
                self.diagnostics()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Position in the router's route changes, for [`Self::changes_since`].
    pub fn mark(&self) -> OutputMark {
        self.monitor.mark()
    }

    /// The router's route changes about `vip` since `mark` (`ip monitor`
    /// lines: a withdrawn path, even one back a moment later, shows here).
    pub fn changes_since(&self, mark: OutputMark, vip: IpAddr) -> Vec<String> {
        let needle = format!("{vip} ");
        self.monitor
            .stdout_lines_after(mark)
            .into_iter()
            .filter(|l| l.starts_with(&needle) || l.contains(&format!("Deleted {needle}")))
            .collect()
    }

    /// Asserts that the router's routes to both VIPs lead to `hosts` for
    /// `during` and did not change at all since `since` (a [`Self::mark`]
    /// taken before the action under test): sampled, and through `ip
    /// monitor`, which also sees a path withdrawn and back between samples.
    pub fn hold_paths(&self, since: OutputMark, hosts: &[usize], during: Duration, what: &str) {
        let want: BTreeSet<usize> = hosts.iter().copied().collect();
        let mark = since;
        let end = Instant::now() + during;
        while Instant::now() < end {
            for vip in [IpAddr::V4(VIP4), IpAddr::V6(VIP6)] {
                let now = self.paths(vip);
                assert!(
                    now == want,
                    "{what}: the router's route to {vip} leads to hosts {now:?}, not {want:?}\n{}",
                    self.diagnostics()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        for vip in [IpAddr::V4(VIP4), IpAddr::V6(VIP6)] {
            let changes = self.changes_since(mark, vip);
            assert!(
                changes.is_empty(),
                "{what}: the router's route to {vip} changed (withdrawn and back?): {changes:#?}\n{}",
                self.diagnostics()
            );
        }
    }

    /// The traffic side; panics on a lab built without it.
    pub fn edge(&self) -> &Edge {
        self.edge
            .as_ref()
            .expect("a lab built with ScaleOut::with_targets")
    }

    /// `lb-test-server client-<proto>`: `count` new flows to `vip` from the
    /// client, one after the other.
    pub fn clients(&self, proto: &str, vip: std::net::SocketAddr, count: usize) -> ClientRun {
        run_clients_in(self.edge().client.name(), &server_bin(), proto, vip, count)
    }

    /// A long-lived TCP connection from the client to `vip` (from source
    /// port `port`, or any with 0), greeted by its target.
    pub fn connect(&self, vip: std::net::SocketAddr, port: u16) -> EchoConn {
        netns::in_netns(self.edge().client.name(), move || {
            if port == 0 {
                EchoConn::connect(vip, IO_TIMEOUT)
            } else {
                EchoConn::connect_from(port, vip, IO_TIMEOUT)
            }
        })
        .unwrap_or_else(|e| panic!("connect to {vip}: {e:#}\n{}", self.diagnostics()))
    }

    /// The router's forwarding counters ([`counters`]).
    pub fn counts(&self) -> Counts {
        counters::read(&self.router)
    }

    /// Sends the client's flows from [`steer::PORTS`] through `host` (or
    /// back to ECMP with `None`).
    pub fn steer(&self, host: Option<usize>) {
        steer::through(&self.router, host);
    }

    /// Takes host `i`'s link down or up (its side: the router sees the
    /// carrier go). Up again, its default routes come back too (the kernel
    /// dropped them with the link; a real host's network manager would put
    /// them back).
    pub fn set_link(&self, i: usize, up: bool) {
        let ns = &self.host(i).ns;
        ns.ip(&["link", "set", PEER_IF, if up { "up" } else { "down" }]);
        if up && self.edge.is_some() {
            netns::wait_link_up(ns.name(), PEER_IF, Duration::from_secs(5));
            ns.ip(&[
                "route",
                "replace",
                "default",
                "via",
                &format!("10.201.{i}.1"),
            ]);
            ns.ip(&[
                "-6",
                "route",
                "replace",
                "default",
                "via",
                &format!("fd00:201:{i:x}::1"),
            ]);
        }
    }

    /// Waits until every host reports every target of every group healthy
    /// (`lb targets <group> --json`).
    pub fn wait_healthy(&self) {
        let all: Vec<usize> = (1..=self.hosts.len()).collect();
        self.wait_healthy_on(&all, self.configured);
    }

    /// Waits until each of `hosts` reports `targets` targets in every group,
    /// all healthy (after a [`Self::reconfigure`] and `lb reload`).
    pub fn wait_healthy_on(&self, hosts: &[usize], targets: usize) {
        let deadline = Instant::now() + CONVERGE;
        for &i in hosts {
            for group in ["tcp4", "udp4", "tcp6", "udp6"] {
                loop {
                    let out = self.lb_ok(i, &["targets", group, "--json"]);
                    let v: serde_json::Value =
                        serde_json::from_str(&out).expect("lb targets --json");
                    let states: Vec<String> = v
                        .get("targets")
                        .unwrap_or(&v)
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|t| t["state"].as_str().unwrap_or_default().to_owned())
                        .collect();
                    if states.len() == targets && states.iter().all(|s| s == "healthy") {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "h{i} {group}: targets {states:?}, expected all healthy\n{}",
                        self.diagnostics()
                    );
                    thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    /// Waits until the router's routes to both VIPs no longer lead to
    /// `host`; returns the time since `since` (the moment it was lost).
    pub fn wait_withdrawn(&self, host: usize, since: Instant, what: &str) -> Duration {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let left = [IpAddr::V4(VIP4), IpAddr::V6(VIP6)]
                .into_iter()
                .all(|vip| !self.paths(vip).contains(&host));
            if left {
                return since.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the router still routes the VIPs to h{host} {CONVERGE:?} later\n{}",
                self.diagnostics()
            );
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// BIRD's view on the router and each host, the hosts' tables and the
    /// daemons' output, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut out = vec![
            birdc(
                self.router.name(),
                &self.run_dir.path().join("router"),
                "show protocols",
            ),
            birdc(
                self.router.name(),
                &self.run_dir.path().join("router"),
                "show route all",
            ),
        ];
        for (n, host) in self.hosts.iter().enumerate() {
            let i = n + 1;
            out.push(birdc(host.ns.name(), &self.host_dir(i), "show protocols"));
            let table = netns::try_run(
                "ip",
                [
                    "-n",
                    host.ns.name(),
                    "route",
                    "show",
                    "table",
                    &LB_TABLE.to_string(),
                ],
            )
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
            out.push(format!("--- h{i} table {LB_TABLE} ---\n{table}"));
            out.push(
                host.daemon
                    .as_ref()
                    .map_or_else(|| format!("(h{i}: lb run stopped)"), LbDaemon::output),
            );
        }
        if let Some(edge) = &self.edge {
            out.push(format!("--- router counters ---\n{:?}", self.counts()));
            out.push(edge.diagnostics());
        }
        out.join("\n")
    }
}

impl Drop for ScaleOut {
    fn drop(&mut self) {
        // Daemons first (SIGTERM and `lb down`); hosts whose daemon was
        // stopped or killed still have their program and pins: `lb down`.
        for host in &mut self.hosts {
            if host.daemon.take().is_none() {
                let out = proc::lb_cmd(
                    &self.lb,
                    host.ns.name(),
                    &[
                        OsStr::new("down"),
                        OsStr::new("--config"),
                        host.config.as_os_str(),
                    ],
                );
                if !out.status.success() {
                    eprintln!(
                        "cleanup: lb down in {}: {}",
                        host.ns.name(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
            }
            host.bird = None;
        }
    }
}

/// Host `i`'s namespace, link to the router, bpffs and config.
/// With `targets`, the host routes everything else via the router (the
/// targets are behind it) and its groups are dsr over those targets.
fn build_host(
    id: &str,
    run_dir: &Path,
    router: &Netns,
    i: usize,
    targets: usize,
) -> (Host, VethPair) {
    let ns = Netns::new(format!("{id}-h{i}"));
    // keep_addr_on_down: a host whose link went down and up again has its
    // IPv6 address back (the test takes links down).
    for (k, v) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv6.conf.all.forwarding", "1"),
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "0"),
        ("net.ipv6.conf.all.keep_addr_on_down", "1"),
        ("net.ipv6.conf.default.keep_addr_on_down", "1"),
    ] {
        ns.sysctl(k, v);
    }
    let veth = VethPair::new(router, &router_if(i), &ns, PEER_IF);
    for (side, dev, last) in [(router, router_if(i), 1), (&ns, PEER_IF.to_owned(), 2)] {
        side.ip(&["addr", "add", &format!("10.201.{i}.{last}/24"), "dev", &dev]);
        side.ip(&[
            "-6",
            "addr",
            "add",
            &format!("fd00:201:{i:x}::{last}/64"),
            "dev",
            &dev,
            "nodad",
        ]);
        side.ip(&["link", "set", &dev, "up"]);
    }
    // An XDP redirect into a veth is delivered only when its peer has GRO
    // (or XDP): the host sends encapsulated packets back to the router.
    router.exec(&["ethtool", "-K", &router_if(i), "gro", "on"]);
    netns::wait_link_up(router.name(), &router_if(i), Duration::from_secs(5));
    netns::wait_link_up(ns.name(), PEER_IF, Duration::from_secs(5));
    if targets > 0 {
        ns.ip(&["route", "add", "default", "via", &format!("10.201.{i}.1")]);
        ns.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &format!("fd00:201:{i:x}::1"),
        ]);
    }
    let dir = run_dir.join(format!("h{i}"));
    std::fs::create_dir_all(&dir).expect("host dir");
    let bpffs = Bpffs::mount(dir.join("bpffs"));
    let pin_dir = bpffs.path().join("lb");
    let drain_file = dir.join("state/drained");
    let config = dir.join("lb.toml");
    std::fs::write(
        &config,
        host_config(&pin_dir, &dir, &drain_file, targets).render(),
    )
    .expect("write host config");
    let host = Host {
        daemon: None,
        bird: None,
        ns,
        config,
        drain_file,
        pin_dir,
        _bpffs: bpffs,
    };
    (host, veth)
}

/// The standard listeners, XDP on the uplink, the API on TCP with a reader
/// token, `/metrics`, and `[bgp]` on. Without `targets`, one target the
/// host cannot reach (checks fail, groups fail open); with them, dsr
/// groups over targets 1..=`targets` ([`edge`]) on the listeners' ports.
fn host_config(pin_dir: &Path, dir: &Path, drain_file: &Path, targets: usize) -> ConfigSpec {
    let mut spec = if targets == 0 {
        ConfigSpec::standard(vec![PEER_IF.to_owned()], pin_dir, &[1])
    } else {
        dsr_spec(pin_dir, targets)
    };
    fast_checks(&mut spec);
    spec.api_socket = Some(dir.join("api.sock"));
    let digest = lb::api::auth::token_digest;
    spec.api_extra.extend([
        format!("listen = {API_LISTEN:?}"),
        format!("metrics_listen = {METRICS_LISTEN:?}"),
        "[[api.policy]]".into(),
        "name = \"read\"".into(),
        "statement = [{ effect = \"Allow\", action = [\"lb:Describe*\"], resource = [\"*\"] }]"
            .into(),
        "[[api.token]]".into(),
        "name = \"reader\"".into(),
        format!("sha256 = \"{}\"", digest(READER_TOKEN)),
        "policies = [\"read\"]".into(),
    ]);
    spec.tail = format!(
        "[bgp]\nenabled = true\ntable = {LB_TABLE}\nprotocol = {LB_PROTOCOL}\ndrain_file = {:?}\n",
        drain_file.display().to_string()
    );
    spec
}

/// The standard listeners, each group `forwarding = "dsr"` over the
/// edge's targets on the listener's own port (dsr translates no port).
fn dsr_spec(pin_dir: &Path, targets: usize) -> ConfigSpec {
    let mut spec = ConfigSpec::standard(vec![PEER_IF.to_owned()], pin_dir, &[]);
    for g in &mut spec.target_groups {
        let port = if g.protocol == "tcp" {
            VIP_TCP_PORT
        } else {
            VIP_UDP_PORT
        };
        g.port = port;
        g.extra.push("forwarding = \"dsr\"".to_owned());
        let v6 = g.name.ends_with('6');
        g.targets = (1..=targets)
            .map(|j| TargetSpec {
                address: if v6 {
                    edge::target6(j).into()
                } else {
                    edge::target4(j).into()
                },
                port,
                weight: 1,
                zone: None,
            })
            .collect();
    }
    spec
}

/// `deploy/bird/balancer.conf` for host `i`.
fn balancer_conf(i: usize) -> String {
    let settings = [
        ("HOST_ID", format!("10.201.{i}.2")),
        ("LOCAL_AS", "65001".into()),
        ("ROUTER_AS", "65000".into()),
        ("ROUTER_V4", format!("10.201.{i}.1")),
        ("ROUTER_V6", format!("fd00:201:{i:x}::1")),
        ("LB_TABLE", LB_TABLE.to_string()),
        ("LB_PROTOCOL", LB_PROTOCOL.to_string()),
        ("BFD_MS", BFD_MS.to_string()),
        ("ERROR_WAIT", ERROR_WAIT_S.to_string()),
    ];
    site(
        BALANCER_CONF,
        settings.map(|(k, v)| (k.to_owned(), v)).to_vec(),
    )
}

/// `deploy/bird/router.conf` for up to three hosts (hosts that do not
/// exist keep their sessions down).
fn router_conf() -> String {
    let fixed = [
        ("ROUTER_ID", "10.201.0.1".to_owned()),
        ("ROUTER_AS", "65000".into()),
        ("LB_AS", "65001".into()),
        ("BFD_MS", BFD_MS.to_string()),
        ("ERROR_WAIT", ERROR_WAIT_S.to_string()),
        ("VIPS4", format!("[ {VIP4}/32{{32,32}} ]")),
        ("VIPS6", format!("[ {VIP6}/128{{128,128}} ]")),
    ];
    let mut settings: Vec<(String, String)> = fixed.map(|(k, v)| (k.to_owned(), v)).to_vec();
    for i in 1..=3 {
        settings.push((format!("LB{i}_V4"), host4(i).to_string()));
        settings.push((format!("LB{i}_V6"), host6(i).to_string()));
    }
    site(ROUTER_CONF, settings)
}

/// `conf` with each `define NAME = ...;` of `settings` replaced and BIRD's
/// log on stderr (the test collects it); panics if the example lacks a
/// setting, so the examples and the lab cannot drift apart silently.
fn site(conf: &str, settings: Vec<(String, String)>) -> String {
    let mut seen = BTreeSet::new();
    let mut out: Vec<String> = conf
        .lines()
        .map(|line| {
            let name = line
                .strip_prefix("define ")
                .and_then(|rest| rest.split_whitespace().next());
            match name.and_then(|n| settings.iter().find(|(k, _)| k == n)) {
                Some((k, v)) => {
                    seen.insert(k.clone());
                    format!("define {k} = {v};")
                }
                None if line.trim() == "log syslog all;" => "log stderr all;".to_owned(),
                None => line.to_owned(),
            }
        })
        .collect();
    for (k, _) in &settings {
        assert!(seen.contains(k), "the example BIRD config defines no {k}");
    }
    out.push(String::new());
    out.join("\n")
}

/// Runs BIRD in the foreground in `ns` with its config and control socket
/// in `dir`; waits until its control socket answers.
fn start_bird(label: &str, ns: &str, dir: &Path, conf: &str) -> NsChild {
    std::fs::create_dir_all(dir).expect("bird dir");
    let conf_path = dir.join("bird.conf");
    std::fs::write(&conf_path, conf).expect("write bird.conf");
    let sock = dir.join("bird.ctl");
    let args = [
        OsStr::new("-f"),
        OsStr::new("-c"),
        conf_path.as_os_str(),
        OsStr::new("-s"),
        sock.as_os_str(),
    ];
    let mut child = NsChild::spawn(
        label,
        ns,
        Path::new("/usr/sbin/bird"),
        &args,
        proc::verbose(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = netns::try_run(
            "ip",
            [
                OsStr::new("netns"),
                OsStr::new("exec"),
                OsStr::new(ns),
                OsStr::new("birdc"),
                OsStr::new("-s"),
                sock.as_os_str(),
                OsStr::new("show status"),
            ],
        )
        .expect("run birdc");
        if String::from_utf8_lossy(&out.stdout).contains("Daemon is up and running") {
            return child;
        }
        if let Some(status) = child.try_status() {
            panic!("{label} exited ({status})\n{}", child.output());
        }
        assert!(
            Instant::now() < deadline,
            "{label} does not answer on {}\n{}",
            sock.display(),
            child.output()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// `birdc -s <dir>/bird.ctl <cmd>` in `ns`, for diagnostics.
fn birdc(ns: &str, dir: &Path, cmd: &str) -> String {
    let sock = dir.join("bird.ctl");
    let out = netns::try_run(
        "ip",
        [
            OsStr::new("netns"),
            OsStr::new("exec"),
            OsStr::new(ns),
            OsStr::new("birdc"),
            OsStr::new("-s"),
            sock.as_os_str(),
            OsStr::new(cmd),
        ],
    );
    match out {
        Ok(o) => format!(
            "--- {ns}: birdc {cmd} ---\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("--- {ns}: birdc {cmd}: {e}"),
    }
}
