//! The traffic side of the scale-out lab: a client and the dsr targets,
//! each in its own namespace on a link of its own to the router.
//!
//! ```text
//!  client ns  eth0 10.202.0.2/24 fd00:202::2/64     <-> r-c    10.202.0.1 fd00:202::1
//!  target i   eth0 10.203.<i>.2/24 fd00:203:<i>::2/64 <-> r-t<i> 10.203.<i>.1 fd00:203:<i>::1
//! ```
//!
//! Every namespace routes everything via the router. A target runs `lb
//! target attach` on its `eth0` (the decapsulation program; both VIPs on
//! `lo`) and `lb-test-server` answering on the VIPs' ports, so the
//! balancers need no port translation. Its replies leave by its default
//! route: router, then client, never a balancer host. The client's link
//! has TX checksum offload off: its frames cross the hosts' XDP program
//! and are decapsulated on the targets, whose stack must find complete
//! checksums (a wire has only those).
use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::netns::{self, Bpffs, Netns, VethPair};
use crate::proc::{self, NsChild};
use crate::topology::{PEER_IF, TARGET_TCP_PORT, VIP_TCP_PORT, VIP_UDP_PORT, VIP4, VIP6};

pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 202, 0, 2);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x202, 0, 0, 0, 0, 0, 2);
/// The router's interface toward the client.
pub const ROUTER_CLIENT_IF: &str = "r-c";

/// The router's interface toward target `i` (1-based).
pub fn router_target_if(i: usize) -> String {
    format!("r-t{i}")
}

/// Target `i`'s own addresses (what the hosts' configs name).
pub fn target4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 203, i as u8, 2)
}

pub fn target6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x203, i as u16, 0, 0, 0, 0, 2)
}

/// Fields drop in order: servers, then `lb target detach`, links,
/// namespaces, the targets' bpffs.
pub struct Edge {
    servers: Vec<NsChild>,
    _attached: Vec<Attached>,
    _veths: Vec<VethPair>,
    pub client: Netns,
    /// `targets[i - 1]` is target `i`.
    pub targets: Vec<Netns>,
    _bpffs: Bpffs,
}

impl Edge {
    /// The client and `targets` targets, linked to `router` (whose side
    /// of each link this configures too), attached and serving.
    pub fn new(id: &str, run_dir: &Path, router: &Netns, targets: usize, lb: &Path) -> Self {
        assert!((1..=9).contains(&targets), "1..=9 targets");
        let bpffs = Bpffs::mount(run_dir.join("targets-bpffs"));
        let client = Netns::new(format!("{id}-c"));
        let targets: Vec<Netns> = (1..=targets)
            .map(|i| Netns::new(format!("{id}-t{i}")))
            .collect();
        let mut veths = Vec::new();
        veths.push(VethPair::new(router, ROUTER_CLIENT_IF, &client, PEER_IF));
        link(router, ROUTER_CLIENT_IF, "10.202.0.1/24", "fd00:202::1/64");
        link(
            &client,
            PEER_IF,
            &format!("{CLIENT4}/24"),
            &format!("{CLIENT6}/64"),
        );
        default_routes(&client, "10.202.0.1", "fd00:202::1");
        client.exec(&["ethtool", "-K", PEER_IF, "tx", "off"]);
        // The steered ports are the tests' own: an ephemeral connection left
        // in TIME_WAIT on one would block binding it.
        let (lo, hi) = (super::steer::PORTS.start(), super::steer::PORTS.end());
        client.sysctl("net.ipv4.ip_local_reserved_ports", &format!("{lo}-{hi}"));
        for (n, t) in targets.iter().enumerate() {
            let i = n + 1;
            let r_if = router_target_if(i);
            veths.push(VethPair::new(router, &r_if, t, PEER_IF));
            link(
                router,
                &r_if,
                &format!("10.203.{i}.1/24"),
                &format!("fd00:203:{i:x}::1/64"),
            );
            link(
                t,
                PEER_IF,
                &format!("{}/24", target4(i)),
                &format!("{}/64", target6(i)),
            );
            default_routes(t, &format!("10.203.{i}.1"), &format!("fd00:203:{i:x}::1"));
            // A target's `lb_decap` redirects second-chance packets back out
            // to the router: a veth delivers XDP redirects when its peer has
            // GRO (or XDP).
            router.exec(&["ethtool", "-K", &r_if, "gro", "on"]);
        }
        for v in &veths {
            netns::wait_link_up(&v.a_ns, &v.a, Duration::from_secs(5));
            netns::wait_link_up(&v.b_ns, &v.b, Duration::from_secs(5));
        }
        let attached: Vec<Attached> = targets
            .iter()
            .enumerate()
            .map(|(n, t)| Attached::new(lb, t, bpffs.path().join(format!("t{}", n + 1))))
            .collect();
        let servers = targets
            .iter()
            .enumerate()
            .map(|(n, t)| start_server(t, n + 1))
            .collect();
        Self {
            servers,
            _attached: attached,
            _veths: veths,
            client,
            targets,
            _bpffs: bpffs,
        }
    }

    /// `lb target status` on target `i` (its decapsulation counters).
    pub fn target_status(&self, i: usize) -> String {
        let out = self._attached[i - 1].run(&["status"]);
        assert!(
            out.status.success(),
            "lb target status on t{i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Counter `name` of `lb target status` on target `i`.
    pub fn target_counter(&self, i: usize, name: &str) -> u64 {
        let status = self.target_status(i);
        status
            .lines()
            .find_map(|l| {
                let mut words = l.split_whitespace();
                if words.next() != Some(name) {
                    return None;
                }
                words.next()?.parse().ok()
            })
            .unwrap_or_else(|| panic!("no counter {name} in t{i}'s status:\n{status}"))
    }

    /// The servers' output, for failure messages.
    pub fn diagnostics(&self) -> String {
        self.servers
            .iter()
            .map(NsChild::output)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Addresses on `dev` (IPv6 without DAD), link up.
fn link(ns: &Netns, dev: &str, v4: &str, v6: &str) {
    ns.ip(&["addr", "add", v4, "dev", dev]);
    ns.ip(&["-6", "addr", "add", v6, "dev", dev, "nodad"]);
    ns.ip(&["link", "set", dev, "up"]);
}

fn default_routes(ns: &Netns, gw4: &str, gw6: &str) {
    ns.ip(&["route", "add", "default", "via", gw4]);
    ns.ip(&["-6", "route", "add", "default", "via", gw6]);
}

/// `lb-test-server` on target `i`: TCP on the VIP port (any address, so
/// the VIPs on `lo` too) and on [`TARGET_TCP_PORT`] (health checks of the
/// UDP groups), UDP on each VIP itself: a socket bound to the VIP answers
/// from the VIP, which is what the client's connected socket accepts.
fn start_server(ns: &Netns, i: usize) -> NsChild {
    let name = crate::topology::target_name(i);
    let args = [
        "--name".to_owned(),
        name.clone(),
        "--tcp".to_owned(),
        format!("[::]:{VIP_TCP_PORT}"),
        "--tcp".to_owned(),
        format!("[::]:{TARGET_TCP_PORT}"),
        "--udp".to_owned(),
        format!("{VIP4}:{VIP_UDP_PORT}"),
        "--udp".to_owned(),
        format!("[{VIP6}]:{VIP_UDP_PORT}"),
    ];
    let mut child = NsChild::spawn(
        &format!("server {name}"),
        ns.name(),
        &crate::lab::server_bin(),
        &args,
        proc::verbose(),
    );
    child.wait_for_line("ready", Duration::from_secs(10));
    child
}

/// `lb target attach` done on a target; `lb target detach` on drop.
struct Attached {
    lb: PathBuf,
    ns: String,
    pin_dir: PathBuf,
}

impl Attached {
    fn new(lb: &Path, ns: &Netns, pin_dir: PathBuf) -> Self {
        let this = Self {
            lb: lb.to_owned(),
            ns: ns.name().to_owned(),
            pin_dir,
        };
        let (v4, v6) = (IpAddr::V4(VIP4).to_string(), IpAddr::V6(VIP6).to_string());
        let out = this.run(&["attach", "--interface", PEER_IF, "--vip", &v4, &v6]);
        assert!(
            out.status.success(),
            "lb target attach in {}: {}{}",
            this.ns,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        this
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut all: Vec<&OsStr> = vec![OsStr::new("target")];
        all.extend(args.iter().map(OsStr::new));
        all.extend([OsStr::new("--pin-dir"), self.pin_dir.as_os_str()]);
        proc::lb_cmd(&self.lb, &self.ns, &all)
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let out = self.run(&["detach"]);
        if !out.status.success() {
            eprintln!(
                "cleanup: lb target detach in {}: {}",
                self.ns,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
}
