//! The end-to-end topology: a client, the load balancer and N targets, each
//! in its own network namespace, joined by veth pairs.
//!
//! ```text
//!  client ns                 LB ns (forwarding on, XDP on every lb-*)        target ns i
//!  eth0 10.200.1.2/24  <-->  lb-c  10.200.1.1/24     lb-t<i> 10.200.1<i>.1/24  <-->  eth0 10.200.1<i>.2/24
//!       fd00:200:1::2/64           fd00:200:1::1/64          fd00:200:1<i>::1/64         fd00:200:1<i>::2/64
//! ```
//!
//! The client and the targets route everything via the LB, so target replies
//! return through it. The VIPs ([`VIP4`], [`VIP6`]) are on no interface.
//! Every veth end has GRO on (an XDP redirect into a veth is delivered only
//! when the peer runs XDP or has GRO) and TX checksum offload off: a frame
//! from a local stack would otherwise carry a partial checksum that the XDP
//! program's incremental update cannot fix; a wire has only full checksums.
//!
//! Each topology has a run directory `/run/<id>/` holding the config file and
//! a bpffs mounted at `/run/<id>/bpffs` from the root mount namespace (pins
//! under `/sys/fs/bpf` vanish between `ip netns exec` calls). Everything is
//! removed on drop, in the order: processes, veths, namespaces, bpffs, dir.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use crate::client::FlowReport;

use crate::netns::{self, Bpffs, Netns, TempDir, VethPair};
use crate::proc::NsChild;

/// IPv4 VIP.
pub const VIP4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 100);
/// IPv6 VIP.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 0x100);
/// VIP ports.
pub const VIP_TCP_PORT: u16 = 80;
pub const VIP_UDP_PORT: u16 = 53;
/// Ports the target servers listen on.
pub const TARGET_TCP_PORT: u16 = 8080;
pub const TARGET_UDP_PORT: u16 = 5353;
/// The client's addresses.
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 2);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 1, 0, 0, 0, 0, 2);
/// Interface names in the LB namespace (what `[daemon] interfaces` lists).
pub const LB_CLIENT_IF: &str = "lb-c";
/// Name of every veth end outside the LB namespace.
pub const PEER_IF: &str = "eth0";
/// Most targets a topology can have (addresses use `1<i>` as an octet).
pub const MAX_TARGETS: usize = 9;

/// LB-side interface toward target `i` (1-based).
pub fn lb_target_if(i: usize) -> String {
    format!("lb-t{i}")
}

/// Target `i`'s (1-based) addresses.
pub fn target4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, 10 + i as u8, 2)
}

pub fn target6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x200, 0x10 + i as u16, 0, 0, 0, 0, 2)
}

/// Name of target `i`'s server (what it reports in greetings).
pub fn target_name(i: usize) -> String {
    format!("t{i}")
}

/// What to build.
#[derive(Clone, Debug)]
pub struct TopologyOpts {
    /// Number of target namespaces (0..=9; 0 for a lab whose targets run in
    /// the load balancer's namespace).
    pub targets: usize,
    /// Run directory (config, bpffs); default `/run/<id>`.
    pub run_dir: Option<PathBuf>,
    /// Where to mount the bpffs; default `<run_dir>/bpffs`.
    pub bpffs: Option<PathBuf>,
}

impl Default for TopologyOpts {
    fn default() -> Self {
        Self {
            targets: 3,
            run_dir: None,
            bpffs: None,
        }
    }
}

/// A built topology. Fields drop in declaration order.
pub struct Topology {
    /// Servers and other processes attached to the topology.
    children: Vec<NsChild>,
    /// `lb-test-server` of target i + 1, while running.
    servers: Vec<Option<NsChild>>,
    veths: Vec<VethPair>,
    pub client: Netns,
    pub lb: Netns,
    /// Target namespaces; `targets[i - 1]` is target `i`.
    pub targets: Vec<Netns>,
    pub bpffs: Bpffs,
    run_dir: TempDir,
    /// Unique id, prefix of every namespace name.
    pub id: String,
}

impl Topology {
    /// Builds the namespaces, links, addresses and routes. `name` is a short
    /// tag for humans (part of the namespace names).
    pub fn new(name: &str, opts: TopologyOpts) -> Self {
        netns::require_root();
        netns::reap_stale();
        assert!(
            opts.targets <= MAX_TARGETS,
            "targets must be 0..={MAX_TARGETS}"
        );
        let tag: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(12)
            .collect();
        let id = format!("{}-{tag}", netns::unique_id());
        let run_dir = TempDir::new(
            opts.run_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("/run").join(&id)),
        );
        let bpffs_path = opts
            .bpffs
            .clone()
            .unwrap_or_else(|| run_dir.path().join("bpffs"));
        // A bpffs left under /run by a killed earlier run is ours to replace;
        // elsewhere (e.g. /sys/fs/bpf) an existing mount is reused as is.
        let bpffs = if bpffs_path.starts_with("/run") {
            Bpffs::mount_fresh(bpffs_path)
        } else {
            Bpffs::mount(bpffs_path)
        };
        let client = Netns::new(format!("{id}-c"));
        let lb = Netns::new(format!("{id}-lb"));
        let targets: Vec<Netns> = (1..=opts.targets)
            .map(|i| Netns::new(format!("{id}-t{i}")))
            .collect();
        let mut topo = Self {
            children: Vec::new(),
            servers: Vec::new(),
            veths: Vec::new(),
            client,
            lb,
            targets,
            bpffs,
            run_dir,
            id,
        };
        topo.configure();
        topo
    }

    fn configure(&mut self) {
        // Sysctls first: links created afterwards inherit `default`.
        for ns in self.all_ns() {
            ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
        }
        self.lb.sysctl("net.ipv4.ip_forward", "1");
        self.lb.sysctl("net.ipv6.conf.all.forwarding", "1");
        self.lb.sysctl("net.ipv6.conf.default.forwarding", "1");

        // Client side.
        self.veths
            .push(VethPair::new(&self.lb, LB_CLIENT_IF, &self.client, PEER_IF));
        setup_link(&self.lb, LB_CLIENT_IF, "10.200.1.1/24", "fd00:200:1::1/64");
        setup_link(
            &self.client,
            PEER_IF,
            &format!("{CLIENT4}/24"),
            &format!("{CLIENT6}/64"),
        );
        default_routes(&self.client, "10.200.1.1", "fd00:200:1::1");

        // Targets.
        for i in 1..=self.targets.len() {
            let lb_if = lb_target_if(i);
            let t = &self.targets[i - 1];
            self.veths.push(VethPair::new(&self.lb, &lb_if, t, PEER_IF));
            setup_link(
                &self.lb,
                &lb_if,
                &format!("10.200.{}.1/24", 10 + i),
                &format!("fd00:200:{:x}::1/64", 0x10 + i),
            );
            setup_link(
                t,
                PEER_IF,
                &format!("{}/24", target4(i)),
                &format!("{}/64", target6(i)),
            );
            default_routes(
                t,
                &format!("10.200.{}.1", 10 + i),
                &format!("fd00:200:{:x}::1", 0x10 + i),
            );
        }
        for v in &self.veths {
            netns::wait_link_up(&v.a_ns, &v.a, Duration::from_secs(5));
            netns::wait_link_up(&v.b_ns, &v.b, Duration::from_secs(5));
        }
    }

    fn all_ns(&self) -> impl Iterator<Item = &Netns> {
        [&self.client, &self.lb].into_iter().chain(&self.targets)
    }

    /// Interface names in the LB namespace: `lb-c`, `lb-t1`, ….
    pub fn lb_interfaces(&self) -> Vec<String> {
        std::iter::once(LB_CLIENT_IF.to_owned())
            .chain((1..=self.targets.len()).map(lb_target_if))
            .collect()
    }

    pub fn run_dir(&self) -> &Path {
        self.run_dir.path()
    }

    /// The `pin_dir` of generated configs: `lb` inside the bpffs (like the
    /// default `/sys/fs/bpf/lb`), so `lb` creates and removes it itself.
    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs.path().join("lb")
    }

    /// Default config path for this topology.
    pub fn config_path(&self) -> PathBuf {
        self.run_dir().join("lb.toml")
    }

    /// The standard service spec (TCP and UDP on both VIPs) with `targets`
    /// (1-based indices) registered, weight 1.
    pub fn config_spec(&self, targets: &[usize]) -> ConfigSpec {
        let mut spec = ConfigSpec::standard(self.lb_interfaces(), &self.pin_dir(), targets);
        spec.api_socket = Some(self.api_socket());
        spec
    }

    /// The management API socket of generated configs: one per topology, so
    /// daemons of parallel tests never share one.
    pub fn api_socket(&self) -> PathBuf {
        self.run_dir().join("api.sock")
    }

    /// Renders `spec` to [`Self::config_path`] and returns the path.
    pub fn write_config(&self, spec: &ConfigSpec) -> PathBuf {
        let path = self.config_path();
        std::fs::write(&path, spec.render())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// Starts `lb-test-server` in every target namespace (TCP 8080 and UDP
    /// 5353, dual-stack) and waits until each prints `ready`.
    pub fn start_servers(&mut self, server_bin: &Path) {
        for i in 1..=self.targets.len() {
            self.start_server(server_bin, i);
        }
    }

    /// Starts the server of target `i` (1-based) and waits until it is ready.
    pub fn start_server(&mut self, server_bin: &Path, i: usize) {
        let name = target_name(i);
        let args = [
            "--name".to_owned(),
            name.clone(),
            "--tcp".to_owned(),
            format!("[::]:{TARGET_TCP_PORT}"),
            "--udp".to_owned(),
            format!("[::]:{TARGET_UDP_PORT}"),
        ];
        let mut child = NsChild::spawn(
            &format!("server {name}"),
            self.targets[i - 1].name(),
            server_bin,
            &args,
            crate::proc::verbose(),
        );
        child.wait_for_line("ready", Duration::from_secs(10));
        if self.servers.len() < i {
            self.servers.resize_with(i, || None);
        }
        assert!(
            self.servers[i - 1].is_none(),
            "{name}'s server is already running"
        );
        self.servers[i - 1] = Some(child);
    }

    /// Kills the server of target `i` (1-based): its ports are closed, so
    /// connections to it are refused by its kernel.
    pub fn stop_server(&mut self, i: usize) {
        let child = self.servers.get_mut(i - 1).and_then(Option::take);
        drop(child.unwrap_or_else(|| panic!("{}'s server is not running", target_name(i))));
    }

    /// Keeps `child` alive as long as the topology (killed before teardown).
    pub fn adopt(&mut self, child: NsChild) {
        self.children.push(child);
    }

    /// Runs `lb-test-server client-<proto>` in the client namespace: `count`
    /// flows to `vip`, one after the other.
    pub fn run_clients(
        &self,
        server_bin: &Path,
        proto: &str,
        vip: SocketAddr,
        count: usize,
    ) -> ClientRun {
        run_clients_in(self.client.name(), server_bin, proto, vip, count)
    }

    /// [`Self::run_clients`], panicking unless every flow succeeded.
    pub fn clients_ok(
        &self,
        server_bin: &Path,
        proto: &str,
        vip: SocketAddr,
        count: usize,
    ) -> Vec<FlowReport> {
        self.run_clients(server_bin, proto, vip, count).expect_all()
    }

    /// `ip -n <lb ns> link show <dev>` output.
    pub fn lb_link(&self, dev: &str) -> String {
        String::from_utf8_lossy(&self.lb.ip(&["link", "show", "dev", dev]).stdout).into_owned()
    }
}

/// Runs `lb-test-server client-<proto>` in namespace `ns`: `count` flows
/// to `vip`, one after the other.
pub fn run_clients_in(
    ns: &str,
    server_bin: &Path,
    proto: &str,
    vip: SocketAddr,
    count: usize,
) -> ClientRun {
    let args = [
        OsString::from("netns"),
        "exec".into(),
        ns.into(),
        server_bin.into(),
        format!("client-{proto}").into(),
        "--connect".into(),
        vip.to_string().into(),
        "--count".into(),
        count.to_string().into(),
    ];
    let out = netns::try_run("ip", &args).expect("run ip netns exec");
    let mut run = ClientRun {
        label: format!("{count} {proto} flows to {vip}"),
        expected: count,
        flows: Vec::new(),
        errors: Vec::new(),
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.trim().is_empty() {
            continue;
        }
        match FlowReport::from_json(line) {
            Ok(Some(f)) => run.flows.push(f),
            Ok(None) => run.errors.push(line.to_owned()),
            Err(e) => run.errors.push(format!("unparsable line {line:?}: {e:#}")),
        }
    }
    run
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Processes first (they may hold namespaces and the bpffs mount),
        // then links, namespaces, bpffs, directory: the field order.
        self.children.clear();
        self.servers.clear();
    }
}

/// Outcome of [`Topology::run_clients`].
#[derive(Debug)]
pub struct ClientRun {
    pub label: String,
    pub expected: usize,
    pub flows: Vec<FlowReport>,
    /// Error lines of failed flows.
    pub errors: Vec<String>,
    pub status: ExitStatus,
    pub stderr: String,
}

impl ClientRun {
    pub fn all_ok(&self) -> bool {
        self.errors.is_empty() && self.status.success() && self.flows.len() == self.expected
    }

    /// The flows; panics with the failures unless all succeeded.
    pub fn expect_all(self) -> Vec<FlowReport> {
        if !self.all_ok() {
            panic!("{}", self.describe_failure());
        }
        self.flows
    }

    pub fn describe_failure(&self) -> String {
        let first: Vec<&str> = self.errors.iter().take(10).map(String::as_str).collect();
        format!(
            "{}: {} succeeded, client exit {}\nfailures (first 10):\n{}\nclient stderr: {}",
            self.label,
            self.flows.len(),
            self.status,
            first.join("\n"),
            self.stderr
        )
    }
}

fn setup_link(ns: &Netns, dev: &str, v4: &str, v6: &str) {
    ns.ip(&["addr", "add", v4, "dev", dev]);
    ns.ip(&["-6", "addr", "add", v6, "dev", dev, "nodad"]);
    ns.ip(&["link", "set", dev, "up"]);
    ns.exec(&["ethtool", "-K", dev, "gro", "on", "tx", "off"]);
}

fn default_routes(ns: &Netns, gw4: &str, gw6: &str) {
    ns.ip(&["route", "add", "default", "via", gw4]);
    ns.ip(&["-6", "route", "add", "default", "via", gw6]);
}

/// A target registered in a target group.
#[derive(Clone, Debug)]
pub struct TargetSpec {
    pub address: IpAddr,
    pub port: u16,
    pub weight: u32,
    pub zone: Option<String>,
}

/// A target group: where a listener's flows go.
#[derive(Clone, Debug)]
pub struct TargetGroupSpec {
    pub name: String,
    /// `"tcp"` or `"udp"`.
    pub protocol: String,
    pub port: u16,
    /// More `key = value` lines of the group (attributes, health check).
    pub extra: Vec<String>,
    pub targets: Vec<TargetSpec>,
}

/// A listener: a VIP (address, port, protocol) and its target group.
#[derive(Clone, Debug)]
pub struct ListenerSpec {
    pub name: String,
    pub protocol: String,
    pub address: IpAddr,
    pub port: u16,
    pub target_group: String,
}

/// Everything a test config says; [`ConfigSpec::render`] writes the TOML.
#[derive(Clone, Debug)]
pub struct ConfigSpec {
    pub interfaces: Vec<String>,
    /// `daemon.xdp_mode`: `"driver"` (native XDP on the veths) by default.
    pub xdp_mode: String,
    pub pin_dir: PathBuf,
    pub listeners: Vec<ListenerSpec>,
    pub target_groups: Vec<TargetGroupSpec>,
    /// More `key = value` lines of `[daemon]`.
    pub daemon_extra: Vec<String>,
    /// `api.socket`; `None` leaves the default.
    pub api_socket: Option<PathBuf>,
    /// More lines of the `[api]` table (`listen`, `[[api.token]]`, ...).
    pub api_extra: Vec<String>,
    /// TOML appended at the end (e.g. an `[api]` table).
    pub tail: String,
}

impl ConfigSpec {
    /// TCP 80 and UDP 53 on [`VIP4`] and [`VIP6`], each with its own target
    /// group of the given targets (1-based) on ports 8080 / 5353, weight 1.
    pub fn standard(interfaces: Vec<String>, pin_dir: &Path, targets: &[usize]) -> Self {
        let mut listeners = Vec::new();
        let mut groups = Vec::new();
        for (fam, vip) in [("4", IpAddr::V4(VIP4)), ("6", IpAddr::V6(VIP6))] {
            for (proto, vport, tport) in [
                ("tcp", VIP_TCP_PORT, TARGET_TCP_PORT),
                ("udp", VIP_UDP_PORT, TARGET_UDP_PORT),
            ] {
                let name = format!("{proto}{fam}");
                listeners.push(ListenerSpec {
                    name: name.clone(),
                    protocol: proto.into(),
                    address: vip,
                    port: vport,
                    target_group: name.clone(),
                });
                groups.push(TargetGroupSpec {
                    name,
                    protocol: proto.into(),
                    port: tport,
                    extra: Vec::new(),
                    targets: targets
                        .iter()
                        .map(|&i| TargetSpec {
                            address: if fam == "4" {
                                target4(i).into()
                            } else {
                                target6(i).into()
                            },
                            port: tport,
                            weight: 1,
                            zone: None,
                        })
                        .collect(),
                });
            }
        }
        Self {
            interfaces,
            xdp_mode: "driver".to_owned(),
            pin_dir: pin_dir.to_owned(),
            listeners,
            target_groups: groups,
            daemon_extra: Vec::new(),
            api_socket: None,
            api_extra: Vec::new(),
            tail: String::new(),
        }
    }

    /// The TOML text in the schema of `lb::config::Config` (docs/config.md);
    /// the e2e test `rendered_config_is_valid` checks it with that parser.
    pub fn render(&self) -> String {
        let ifs: Vec<String> = self.interfaces.iter().map(|i| format!("{i:?}")).collect();
        let mut out = vec![
            "[daemon]".to_owned(),
            format!("interfaces = [{}]", ifs.join(", ")),
            format!("xdp_mode = {:?}", self.xdp_mode),
            format!("pin_dir = {:?}", self.pin_dir.display().to_string()),
        ];
        out.extend(self.daemon_extra.iter().cloned());
        for l in &self.listeners {
            out.extend([
                String::new(),
                "[[listener]]".to_owned(),
                format!("name = {:?}", l.name),
                format!("protocol = {:?}", l.protocol),
                format!("address = \"{}\"", l.address),
                format!("port = {}", l.port),
                format!("target_group = {:?}", l.target_group),
            ]);
        }
        for g in &self.target_groups {
            out.extend([
                String::new(),
                "[[target_group]]".to_owned(),
                format!("name = {:?}", g.name),
                format!("protocol = {:?}", g.protocol),
                format!("port = {}", g.port),
            ]);
            out.extend(g.extra.iter().cloned());
            for t in &g.targets {
                out.extend([
                    String::new(),
                    "  [[target_group.target]]".to_owned(),
                    format!("  address = \"{}\"", t.address),
                    format!("  port = {}", t.port),
                    format!("  weight = {}", t.weight),
                ]);
                if let Some(zone) = &t.zone {
                    out.push(format!("  zone = {zone:?}"));
                }
            }
        }
        if self.api_socket.is_some() || !self.api_extra.is_empty() {
            out.extend([String::new(), "[api]".to_owned()]);
            if let Some(socket) = &self.api_socket {
                out.push(format!("socket = {:?}", socket.display().to_string()));
            }
            out.extend(self.api_extra.iter().cloned());
        }
        out.push(String::new());
        out.push(self.tail.clone());
        out.join("\n")
    }
}
