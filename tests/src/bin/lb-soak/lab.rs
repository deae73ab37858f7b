//! The soak's lab: the end-to-end [`Topology`] (client, load balancer,
//! three target namespaces) with `lb-test-server` (TCP and UDP) and
//! `lb-http-target` (HTTP, WebSocket) in every target namespace, and
//! `lb run` serving a TCP and a UDP listener through XDP and an http
//! listener of its own. The config file always says what is registered,
//! so that a reload never undoes an API change.
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lb_tests::lab::{self, TargetHealth};
use lb_tests::proc::{self, LbDaemon, NsChild};
use lb_tests::topology::{
    CLIENT4, TARGET_TCP_PORT, TARGET_UDP_PORT, Topology, TopologyOpts, VIP4, target_name, target4,
};

/// The http listener's address, on the load balancer's loopback (not a VIP
/// of the XDP program: its packets pass to the daemon's socket).
pub const HTTP_VIP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 101);
pub const TCP_PORT: u16 = 80;
pub const UDP_PORT: u16 = 53;
pub const HTTP_PORT: u16 = 80;
/// `lb-http-target`'s port in every target namespace.
pub const HTTP_TARGET_PORT: u16 = 9000;
pub const TARGETS: usize = 3;
/// The groups, each with every registered target.
pub const GROUPS: [(&str, u16); 3] = [
    ("tcp", TARGET_TCP_PORT),
    ("udp", TARGET_UDP_PORT),
    ("web", HTTP_TARGET_PORT),
];

pub struct SoakLab {
    pub daemon: Option<LbDaemon>,
    http_targets: Vec<Option<NsChild>>,
    pub topo: Topology,
    lb: PathBuf,
    server: PathBuf,
    http_target: PathBuf,
    config: PathBuf,
    /// Seconds a deregistered target drains.
    drain: u32,
    /// The web group's keep_alive_timeout, seconds.
    keep_alive: u32,
    /// Per target (index 0 is t1): registered, weight.
    registered: [bool; TARGETS],
    weights: [u32; TARGETS],
}

impl SoakLab {
    pub fn new(drain: u32, keep_alive: u32) -> Self {
        let lb = proc::lb_bin();
        let server = lab::server_bin();
        let http_target = proc::test_bin("lb-http-target");
        let mut topo = Topology::new(
            "soak",
            TopologyOpts {
                targets: TARGETS,
                ..TopologyOpts::default()
            },
        );
        topo.start_servers(&server);
        topo.lb
            .ip(&["addr", "add", &format!("{HTTP_VIP}/32"), "dev", "lo"]);
        let config = topo.config_path();
        let mut lab = Self {
            daemon: None,
            http_targets: (0..TARGETS).map(|_| None).collect(),
            topo,
            lb,
            server,
            http_target,
            config,
            drain,
            keep_alive,
            registered: [true; TARGETS],
            weights: [1; TARGETS],
        };
        for i in 1..=TARGETS {
            lab.start_http_target(i);
        }
        lab.write_config();
        lab.start_daemon();
        lab
    }

    pub fn endpoints(&self) -> crate::traffic::Endpoints {
        crate::traffic::Endpoints {
            tcp: SocketAddr::new(VIP4.into(), TCP_PORT),
            udp: SocketAddr::new(VIP4.into(), UDP_PORT),
            http: SocketAddr::new(HTTP_VIP.into(), HTTP_PORT),
            targets: (1..=TARGETS).map(target_name).collect(),
            client: IpAddr::V4(CLIENT4),
        }
    }

    fn start_http_target(&mut self, i: usize) {
        let name = target_name(i);
        let listen = SocketAddr::new(target4(i).into(), HTTP_TARGET_PORT).to_string();
        let args = ["--name", &name, "--listen", &listen];
        let ns = self.topo.targets[i - 1].name().to_owned();
        let mut child = NsChild::spawn(
            &format!("http {name}"),
            &ns,
            &self.http_target,
            &args,
            proc::verbose(),
        );
        child.wait_for_line("ready", Duration::from_secs(10));
        self.http_targets[i - 1] = Some(child);
    }

    /// Kills both servers of target `i` (SIGKILL) and starts them again.
    pub fn kill_and_restart_target(&mut self, i: usize) {
        self.http_targets[i - 1] = None;
        self.topo.stop_server(i);
        self.topo.start_server(&self.server, i);
        self.start_http_target(i);
    }

    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "lb run is already running");
        self.daemon = Some(LbDaemon::start_with(
            &self.lb,
            self.topo.lb.name(),
            &self.config,
        ));
    }

    /// SIGTERM: the program stays attached and the maps pinned.
    pub fn stop_daemon(&mut self) {
        self.daemon.take().expect("lb run is running").stop();
    }

    pub fn pid(&self) -> u32 {
        self.daemon.as_ref().expect("lb run is running").pid()
    }

    /// The config as the lab's state says.
    fn write_config(&self) {
        let interfaces: Vec<String> = self
            .topo
            .lb_interfaces()
            .iter()
            .map(|i| format!("{i:?}"))
            .collect();
        let mut t = format!(
            "[daemon]\ninterfaces = [{}]\nxdp_mode = \"driver\"\npin_dir = {:?}\n\n\
             [api]\nsocket = {:?}\n",
            interfaces.join(", "),
            self.topo.pin_dir().display().to_string(),
            self.topo.api_socket().display().to_string(),
        );
        for (name, protocol, address, port) in [
            ("tcp", "tcp", IpAddr::from(VIP4), TCP_PORT),
            ("udp", "udp", IpAddr::from(VIP4), UDP_PORT),
            ("web", "http", IpAddr::from(HTTP_VIP), HTTP_PORT),
        ] {
            let _ = write!(
                t,
                "\n[[listener]]\nname = \"{name}\"\nprotocol = \"{protocol}\"\n\
                 address = \"{address}\"\nport = {port}\ntarget_group = \"{name}\"\n"
            );
        }
        for (group, port) in GROUPS {
            let protocol = if group == "web" { "http" } else { group };
            // UDP targets are checked over their TCP port.
            let check_port = if group == "udp" {
                format!(", port = {TARGET_TCP_PORT}")
            } else {
                String::new()
            };
            // Short, so that the pool has emptied when a sample is taken.
            let keep_alive = if group == "web" {
                format!("keep_alive_timeout = {}\n", self.keep_alive)
            } else {
                String::new()
            };
            let _ = write!(
                t,
                "\n[[target_group]]\nname = \"{group}\"\nprotocol = \"{protocol}\"\nport = {port}\n\
                 {keep_alive}deregistration_delay = {}\nhealth_check = {{ interval = 1, timeout = 1, \
                 healthy_threshold = 2, unhealthy_threshold = 2{check_port} }}\n",
                self.drain
            );
            for i in (1..=TARGETS).filter(|&i| self.registered[i - 1]) {
                let _ = write!(
                    t,
                    "\n  [[target_group.target]]\n  address = \"{}\"\n  weight = {}\n",
                    target4(i),
                    self.weights[i - 1]
                );
            }
        }
        std::fs::write(&self.config, t).expect("write the soak config");
    }

    /// Sets target `i`'s weight in the file (the next reload applies it).
    pub fn set_weight(&mut self, i: usize, weight: u32) {
        self.weights[i - 1] = weight;
        self.write_config();
    }

    /// SIGHUP, waiting for the daemon to say it applied the file.
    pub fn reload_by_signal(&mut self) {
        self.daemon.as_mut().expect("lb run is running").reload();
    }

    /// `lb reload` through the API.
    pub fn reload_by_api(&self) -> Result<(), String> {
        self.lb_ok(&["reload"])
    }

    /// Deregisters target `i` from every group through the API (and from
    /// the file).
    pub fn deregister(&mut self, i: usize) -> Result<(), String> {
        self.registered[i - 1] = false;
        self.write_config();
        for (group, port) in GROUPS {
            let target = SocketAddr::new(target4(i).into(), port).to_string();
            self.lb_ok(&["deregister", group, &target])?;
        }
        Ok(())
    }

    /// Registers target `i` in every group through the API (and the file).
    pub fn register(&mut self, i: usize) -> Result<(), String> {
        self.registered[i - 1] = true;
        self.write_config();
        let weight = self.weights[i - 1].to_string();
        for (group, port) in GROUPS {
            let target = SocketAddr::new(target4(i).into(), port).to_string();
            self.lb_ok(&["register", group, &target, "--weight", &weight])?;
        }
        Ok(())
    }

    /// Waits until target `i` is in no group's list (its drain is over).
    pub fn wait_drained(&self, i: usize, within: Duration) -> Result<(), String> {
        self.wait_until(within, &format!("{} drained", target_name(i)), |h| {
            h.iter()
                .all(|(_, g)| g.iter().all(|t| t.target.ip() != target4(i)))
        })
    }

    /// Waits until every registered target of every group is healthy.
    pub fn wait_healthy(&self, within: Duration) -> Result<(), String> {
        let want = self.registered.iter().filter(|r| **r).count();
        self.wait_until(within, "every registered target healthy", |h| {
            h.iter()
                .all(|(_, g)| g.len() == want && g.iter().all(|t| t.state == "healthy"))
        })
    }

    fn wait_until(
        &self,
        within: Duration,
        what: &str,
        done: impl Fn(&[(&str, Vec<TargetHealth>)]) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let health = self.health()?;
            if done(&health) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("not {what} within {within:?}: {health:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn health(&self) -> Result<Vec<(&'static str, Vec<TargetHealth>)>, String> {
        let mut out = Vec::new();
        for (group, _) in GROUPS {
            let json = self.lb_out(&["targets", group, "--json"])?;
            let v: serde_json::Value =
                serde_json::from_str(&json).map_err(|e| format!("lb targets {group}: {e}"))?;
            let list = v
                .get("targets")
                .unwrap_or(&v)
                .as_array()
                .cloned()
                .unwrap_or_default();
            let targets = list
                .iter()
                .filter_map(|t| {
                    Some(TargetHealth {
                        target: t["target"].as_str()?.parse().ok()?,
                        state: t["state"].as_str()?.to_owned(),
                        reason: t["reason"].as_str().map(str::to_owned),
                        effective_weight: t["effective_weight"].as_u64().unwrap_or(0),
                    })
                })
                .collect();
            out.push((group, targets));
        }
        Ok(out)
    }

    fn lb_ok(&self, args: &[&str]) -> Result<(), String> {
        self.lb_out(args).map(drop)
    }

    /// `lb <args> --config <file>` in the load balancer's namespace.
    fn lb_out(&self, args: &[&str]) -> Result<String, String> {
        let mut all: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        all.extend([std::ffi::OsStr::new("--config"), self.config.as_os_str()]);
        let out = proc::lb_cmd(&self.lb, self.topo.lb.name(), &all);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "lb {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// The daemon's log so far, for a failure report.
    pub fn daemon_output(&self) -> String {
        self.daemon
            .as_ref()
            .map_or_else(|| "(lb run stopped)".into(), LbDaemon::output)
    }
}

/// The daemon's resident memory (KiB) and open descriptors.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub rss_kib: u64,
    pub fds: usize,
    /// Of `fds`, TCP connections to a target (the http listener's pool of
    /// keep-alive connections, health checks in progress): these come and
    /// go with the pool, within its own bounds; every other descriptor
    /// (listeners, the API, maps, the runtime's) must not grow.
    pub target_conns: usize,
}

impl Usage {
    /// The descriptors that are not target connections.
    pub fn own_fds(&self) -> usize {
        self.fds - self.target_conns
    }
}

pub fn usage(pid: u32) -> Result<Usage, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))?;
    let dir = format!("/proc/{pid}/fd");
    let mut sockets = std::collections::HashSet::new();
    let mut fds = 0;
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))? {
        fds += 1;
        // A descriptor closed since the listing is simply not counted as
        // a socket.
        let Ok(link) = entry.and_then(|e| std::fs::read_link(e.path())) else {
            continue;
        };
        if let Some(inode) = link
            .to_str()
            .and_then(|l| l.strip_prefix("socket:["))
            .and_then(|l| l.strip_suffix(']'))
        {
            sockets.insert(inode.to_owned());
        }
    }
    let to_targets = target_sockets(pid)?;
    let target_conns = sockets.intersection(&to_targets).count();
    Ok(Usage {
        rss_kib,
        fds,
        target_conns,
    })
}

/// Inodes of the TCP sockets, in the daemon's namespace, whose remote end
/// is a target (`/proc/<pid>/net/tcp`: addresses are the raw network-order
/// words printed in host order).
fn target_sockets(pid: u32) -> Result<std::collections::HashSet<String>, String> {
    let path = format!("/proc/{pid}/net/tcp");
    let table = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let targets: Vec<Ipv4Addr> = (1..=TARGETS).map(target4).collect();
    Ok(table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (remote, inode) = (cols.get(2)?, cols.get(9)?);
            let hex = remote.split_once(':')?.0;
            let ip = Ipv4Addr::from(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes());
            targets.contains(&ip).then(|| (*inode).to_owned())
        })
        .collect())
}
