//! The dsr lab: the end-to-end [`Lab`] with its target groups in dsr mode,
//! targets that decapsulate with `lb target attach` and answer the client
//! directly over a link of their own, never through the load balancer.
//!
//! ```text
//!  client ns ──── lb-c  LB ns (lb run, XDP)  lb-t<i> ──── eth0  target ns i (lb_decap)
//!      d<i> 10.202.<i>.1/24 fd00:202:<i>::1/64  ◄──── d0 10.202.<i>.2/24 (default route)
//! ```
//!
//! Client -> VIP goes through the LB (the client's default route), which
//! wraps each packet in an outer header to the target. The target's
//! default route is its direct link to the client, so its replies (from
//! the VIP, held on its `lo`) cross no balancer. Targets serve the VIP
//! ports themselves (dsr does not translate ports): `lb-test-server` on TCP
//! [`VIP_TCP_PORT`] and UDP [`VIP_UDP_PORT`], besides the standard one on
//! 8080 / 5353 that the UDP groups' health checks use.
use std::ffi::OsStr;
use std::time::Duration;

use crate::lab::{Lab, all_healthy, health_checks};
use crate::metrics;
use crate::netns::{self, VethPair};
use crate::proc::{self, NsChild};
use crate::topology::{PEER_IF, VIP_TCP_PORT, VIP_UDP_PORT, VIP4, VIP6, target_name};

/// The client's end of the direct link to target `i`.
pub fn direct_if(i: usize) -> String {
    format!("d{i}")
}

/// Interface of the direct link in each target namespace.
pub const TARGET_DIRECT_IF: &str = "d0";

/// The balancer's `/metrics` (`api.metrics_listen`), inside its namespace.
pub const METRICS_LISTEN: &str = "127.0.0.1:9181";

/// A [`Lab`] in dsr mode (see the module docs). Fields drop in order:
/// the decapsulation detached, the direct links, then the lab.
pub struct DsrLab {
    attached: Vec<usize>,
    _direct: Vec<VethPair>,
    pub lab: Lab,
}

impl DsrLab {
    /// `targets` targets, all registered; returns once every group's
    /// targets are healthy.
    pub fn new(name: &str, targets: usize) -> Self {
        Self::with_check_keys(name, targets, "")
    }

    /// [`DsrLab::new`] with `keys` (`, key = value` pairs) added to every
    /// group's fast health check, e.g. `, address = "target"`.
    pub fn with_check_keys(name: &str, targets: usize, keys: &str) -> Self {
        Self::build(name, targets, keys, |_| {})
    }

    /// [`DsrLab::new`] with `[bgp]` on (table 100, protocol 201: lb's
    /// blackhole routes for the VIPs), its drain file in the lab's run
    /// directory (removed with it).
    pub fn with_bgp(name: &str, targets: usize) -> Self {
        Self::build(name, targets, "", |spec| {
            // The lab's pin directory is <run dir>/bpffs/lb.
            let run_dir = spec
                .pin_dir
                .parent()
                .and_then(std::path::Path::parent)
                .expect("the pin directory is two below the run directory");
            let drain_file = run_dir.join("drained");
            spec.tail = format!(
                "[bgp]\nenabled = true\ntable = 100\nprotocol = 201\ndrain_file = {:?}\n",
                drain_file.display().to_string()
            );
        })
    }

    fn build(
        name: &str,
        targets: usize,
        keys: &str,
        edit: impl Fn(&mut crate::topology::ConfigSpec) + Send + Sync + 'static,
    ) -> Self {
        let registered: Vec<usize> = (1..=targets).collect();
        let keys = keys.to_owned();
        let lab = Lab::with(name, targets, &registered, move |spec| {
            dsr_groups(spec, &keys);
            spec.api_extra
                .push(format!("metrics_listen = {METRICS_LISTEN:?}"));
            edit(spec);
        });
        let mut dsr = Self {
            attached: Vec::new(),
            _direct: Vec::new(),
            lab,
        };
        for i in 1..=targets {
            dsr.direct_link(i);
            dsr.attach(i);
            dsr.serve_vip_ports(i);
        }
        for group in ["tcp4", "udp4", "tcp6", "udp6"] {
            dsr.lab
                .wait_health(group, Duration::from_secs(30), "all healthy", all_healthy);
        }
        dsr
    }

    /// The client <-> target `i` link, and the target's default routes
    /// over it.
    fn direct_link(&mut self, i: usize) {
        let topo = &self.lab.topo;
        let (client, target) = (&topo.client, &topo.targets[i - 1]);
        let dev = direct_if(i);
        self._direct
            .push(VethPair::new(client, &dev, target, TARGET_DIRECT_IF));
        for (ns, dev, last) in [(client, dev.as_str(), 1), (target, TARGET_DIRECT_IF, 2)] {
            ns.ip(&["addr", "add", &format!("10.202.{i}.{last}/24"), "dev", dev]);
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("fd00:202:{i:x}::{last}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ns.ip(&["link", "set", dev, "up"]);
        }
        for (ns, dev) in [(client, dev.as_str()), (target, TARGET_DIRECT_IF)] {
            netns::wait_link_up(ns.name(), dev, Duration::from_secs(5));
        }
        target.ip(&[
            "route",
            "replace",
            "default",
            "via",
            &format!("10.202.{i}.1"),
        ]);
        target.ip(&[
            "-6",
            "route",
            "replace",
            "default",
            "via",
            &format!("fd00:202:{i:x}::1"),
        ]);
        // The client hears the VIP on a link its route to the VIP does not
        // use: asymmetric by design, so no reverse-path filter.
        client.sysctl("net.ipv4.conf.all.rp_filter", "0");
        client.sysctl(&format!("net.ipv4.conf.{dev}.rp_filter"), "0");
    }

    /// `lb-test-server` on the VIP ports in target `i`, once attached (the
    /// VIPs are then on its `lo`). TCP on `[::]` (an accepted connection
    /// answers from the address it was made to); UDP on each VIP itself:
    /// a datagram socket on a wildcard address would answer from the
    /// outgoing interface's address, which the client does not talk to.
    fn serve_vip_ports(&mut self, i: usize) {
        let topo = &mut self.lab.topo;
        let name = target_name(i);
        let args = [
            "--name".to_owned(),
            name.clone(),
            "--tcp".to_owned(),
            format!("[::]:{VIP_TCP_PORT}"),
            "--udp".to_owned(),
            format!("{VIP4}:{VIP_UDP_PORT}"),
            "--udp".to_owned(),
            format!("[{VIP6}]:{VIP_UDP_PORT}"),
        ];
        let mut child = NsChild::spawn(
            &format!("vip server {name}"),
            topo.targets[i - 1].name(),
            &self.lab.server,
            &args,
            proc::verbose(),
        );
        child.wait_for_line("ready", Duration::from_secs(10));
        topo.adopt(child);
    }

    /// `lb target <verb> ...` in target `i`'s namespace, its own pin
    /// directory in the lab's bpffs.
    pub fn lb_target(&self, i: usize, args: &[&str]) -> std::process::Output {
        let pin_dir = self.lab.topo.bpffs.path().join(format!("target{i}"));
        let mut all: Vec<&OsStr> = vec![OsStr::new("target")];
        all.extend(args.iter().map(OsStr::new));
        all.extend([OsStr::new("--pin-dir"), pin_dir.as_os_str()]);
        proc::lb_cmd(&self.lab.lb, self.lab.topo.targets[i - 1].name(), &all)
    }

    fn attach(&mut self, i: usize) {
        let (v4, v6) = (VIP4.to_string(), VIP6.to_string());
        let out = self.lb_target(
            i,
            &["attach", "--interface", PEER_IF, "--vip", &v4, "--vip", &v6],
        );
        assert!(
            out.status.success(),
            "lb target attach in t{i}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        self.attached.push(i);
    }

    /// The value of `series` (name and labels as printed) in the
    /// balancer's `/metrics`; `None` when absent.
    pub fn metric(&self, series: &str) -> Option<u64> {
        metrics::scrape(self.lab.topo.lb.name(), METRICS_LISTEN, series).map(|v| v as u64)
    }

    /// `lb target status` of target `i`.
    pub fn target_status(&self, i: usize) -> String {
        let out = self.lb_target(i, &["status"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for DsrLab {
    fn drop(&mut self) {
        for &i in &self.attached {
            let out = self.lb_target(i, &["detach"]);
            if !out.status.success() {
                eprintln!(
                    "cleanup: lb target detach in t{i}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
    }
}

/// The standard groups in dsr mode on the VIP ports, with fast health
/// checks and `keys` (UDP groups checked over TCP on 8080, where the
/// standard server listens).
fn dsr_groups(spec: &mut crate::topology::ConfigSpec, keys: &str) {
    health_checks(
        spec,
        &format!("interval = 1, timeout = 1, healthy_threshold = 2, unhealthy_threshold = 2{keys}"),
    );
    for g in &mut spec.target_groups {
        let port = if g.protocol == "udp" {
            VIP_UDP_PORT
        } else {
            VIP_TCP_PORT
        };
        g.port = port;
        for t in &mut g.targets {
            t.port = port;
        }
        g.extra.push("forwarding = \"dsr\"".to_owned());
    }
}
