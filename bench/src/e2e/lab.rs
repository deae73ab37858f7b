//! The lab every case runs in (topology, sinks, the frame, the config) and
//! one round of a case: set up, warm up, measure, tear down.
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use lb_common::FAMILY_V4;
use lb_common::encap::source_of_hash;
use lb_tests::netns::Netns;
use lb_tests::packet::tcp_flags;
use lb_tests::packet::{Mac, Packet};
use lb_tests::proc::{self, LbDaemon};
use lb_tests::topology::{
    CLIENT4, ConfigSpec, LB_CLIENT_IF, PEER_IF, Topology, TopologyOpts, VIP4, lb_target_if, target4,
};
use lb_tests::trafficgen::{Generator, GeneratorSpec, Link, Vary, link, mac_str};

use super::cpu::{cpu_delta, cpu_times};
use super::forwarders::{OuterHeader, Redirect, RedirectTo, SPREAD, Sink, Target, Work};
use super::prog_time;
use super::result::{LbProof, Sample};
use super::{Case, Opts, Proto, WARMUP_LAPS_MAX};
use crate::nft::NftDnat;

/// Topology, sinks and the addresses every case needs. Fields drop in
/// order: sinks (detach), then the topology (processes, links, namespaces).
pub struct Lab {
    sinks: Vec<Sink>,
    topo: Topology,
    /// `lb run`'s config of the `lb-nat` case.
    config: PathBuf,
    /// The same with the target group in dsr mode (`lb-dsr`).
    dsr_config: PathBuf,
    /// The LB's veth to each target.
    lb_t: Vec<Link>,
    target_macs: Vec<Mac>,
    frame: Vec<u8>,
    /// `bench_encap`'s outer header for each target: what `lb-dsr` puts on
    /// the frame for it.
    outer: Vec<OuterHeader>,
}

pub const TARGETS: usize = 3;
// The spreading forwarders use every target.
const _: () = assert!(TARGETS == SPREAD);
/// Connection-table slots per flow of the traffic: room for every flow with
/// the table at half its capacity (see lb_common::flow on set occupancy).
const SLOTS_PER_FLOW: u32 = 2;

impl Lab {
    pub fn new(opts: &Opts) -> Self {
        let topo = Topology::new(
            "bench",
            TopologyOpts {
                targets: TARGETS,
                ..TopologyOpts::default()
            },
        );
        let (config, dsr_config) = write_configs(&topo, opts);
        let client = link(&topo.client, PEER_IF);
        let lb_c = link(&topo.lb, LB_CLIENT_IF);
        let lb_t = (1..=TARGETS)
            .map(|i| link(&topo.lb, &lb_target_if(i)))
            .collect();
        let mut target_macs = Vec::new();
        for i in 1..=TARGETS {
            let mac = link(&topo.targets[i - 1], PEER_IF).mac;
            // Static neighbours: the sinks drop ARP.
            topo.lb.ip(&[
                "neigh",
                "replace",
                &target4(i).to_string(),
                "lladdr",
                &mac_str(&mac),
                "dev",
                &lb_target_if(i),
                "nud",
                "permanent",
            ]);
            target_macs.push(mac);
        }
        let sinks = topo
            .targets
            .iter()
            .map(|t| Sink::attach(t, PEER_IF))
            .collect();
        let packet = packet(opts).macs(client.mac, lb_c.mac);
        let frame = packet.build();
        assert_eq!(frame.len(), opts.frame_len);
        let outer = (1..=TARGETS)
            .map(|i| outer_header(packet.clone(), i))
            .collect();
        Self {
            sinks,
            topo,
            config,
            dsr_config,
            lb_t,
            target_macs,
            frame,
            outer,
        }
    }

    /// Frames dropped so far by the veths on the way (see
    /// [`Sample::veth_drops`]).
    fn veth_drops(&self) -> u64 {
        let mut total = veth_drops(&self.topo.client, PEER_IF);
        for i in 1..=TARGETS {
            total += veth_drops(&self.topo.lb, &lb_target_if(i));
        }
        total
    }

    /// A trivial forwarder doing `work` to the first `targets` targets, for
    /// the traffic `opts` describe.
    fn redirect(&self, work: Work, targets: usize, opts: &Opts) -> Redirect {
        let targets = (0..targets)
            .map(|i| Target {
                to: RedirectTo {
                    ifindex: self.lb_t[i].ifindex,
                    dst_mac: self.target_macs[i],
                    src_mac: self.lb_t[i].mac,
                },
                outer: self.outer[i],
            })
            .collect();
        Redirect::attach(&self.topo.lb, work, targets, opts.flows, opts.state_entry)
    }

    fn sink_counts(&self) -> Vec<u64> {
        self.sinks.iter().map(Sink::count).collect()
    }

    fn lb_stats_text(&self, config: &Path) -> String {
        proc::lb_stats(&proc::lb_bin(), self.topo.lb.name(), config)
    }

    /// One round of `case`: set up, warm up, measure, tear down.
    pub fn round(&self, case: Case, opts: &Opts, proof: &mut LbProof) -> Sample {
        match case {
            Case::LbNat => self.lb_round(&self.config, opts, proof),
            Case::LbDsr => self.lb_round(&self.dsr_config, opts, proof),
            Case::Nftables => {
                let _nft = NftDnat::install(
                    &self.topo,
                    opts.proto.name(),
                    VIP4,
                    opts.proto.vip_port(),
                    TARGETS,
                    opts.proto.target_port(),
                );
                self.measure(opts, false).0
            }
            Case::Redirect
            | Case::RedirectIpip
            | Case::Spread
            | Case::SpreadIpip
            | Case::SpreadState => {
                let (work, targets) = case.trivial().expect("a trivial forwarder");
                let _redirect = self.redirect(work, targets, opts);
                self.measure(opts, true).0
            }
        }
    }

    /// A round of `lb run` with `config`; adds its `lb stats` to `proof`.
    fn lb_round(&self, config: &Path, opts: &Opts, proof: &mut LbProof) -> Sample {
        let daemon = LbDaemon::start(self.topo.lb.name(), config);
        let before = datapath_stats(&self.lb_stats_text(config));
        let sinks_before: u64 = self.sink_counts().iter().sum();
        let (sample, sent) = self.measure(opts, true);
        // Let the rings drain before the final counts.
        thread::sleep(Duration::from_millis(200));
        let text = self.lb_stats_text(config);
        let after = datapath_stats(&text);
        proof.last_stats = text;
        let delivered = self.sink_counts().iter().sum::<u64>() - sinks_before;
        drop(daemon);
        proof.sent += sent;
        proof.delivered += delivered;
        for (name, v) in &after {
            let old = before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, v)| *v);
            let d = v - old;
            if name == "forwarded" {
                proof.forwarded += d;
            } else if d > 0 {
                match proof.other.iter_mut().find(|(n, _)| n == name) {
                    Some((_, t)) => *t += d,
                    None => proof.other.push((name.clone(), d)),
                }
            }
        }
        sample
    }

    /// Starts the generator, warms up, measures one window, then (`xdp`:
    /// the forwarder is an XDP program on `lb-c`) its program's own time
    /// for [`prog_time::WINDOW`] more; returns the sample and every frame
    /// the generator sent.
    fn measure(&self, opts: &Opts, xdp: bool) -> (Sample, u64) {
        let drops_before = self.veth_drops();
        let generator = Generator::start(
            &self.topo.client,
            GeneratorSpec {
                dev: PEER_IF.to_owned(),
                frame: self.frame.clone(),
                vary: Vary::ipv4(opts.flows),
                cpu: opts.gen_cpu,
                batch: opts.batch,
            },
        );
        thread::sleep(opts.warmup);
        // Every flow seen twice before the window, however many there are
        // (a million take seconds): the window measures established flows,
        // not the first lap's new ones. Bounded, should the chain stall.
        let laps = 2 * u64::from(opts.flows);
        let deadline = Instant::now() + WARMUP_LAPS_MAX;
        while generator.sent() < laps && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        let (t0, s0, d0, c0) = (
            Instant::now(),
            generator.sent(),
            self.sink_counts(),
            cpu_times(),
        );
        thread::sleep(opts.window);
        let (t1, s1, d1, c1) = (
            Instant::now(),
            generator.sent(),
            self.sink_counts(),
            cpu_times(),
        );
        let prog_ns = xdp
            .then(|| prog_time::ns_per_run(&self.topo.lb, LB_CLIENT_IF))
            .flatten();
        let sent = generator.stop();
        // Let the rings drain before counting what they dropped.
        thread::sleep(Duration::from_millis(100));
        let veth_drops = self.veth_drops() - drops_before;
        let secs = (t1 - t0).as_secs_f64();
        let per_target: Vec<f64> = d1
            .iter()
            .zip(&d0)
            .map(|(a, b)| (a - b) as f64 / secs)
            .collect();
        let sample = Sample {
            sent_pps: (s1 - s0) as f64 / secs,
            delivered_pps: per_target.iter().sum(),
            per_target,
            cpu: cpu_delta(&c1, &c0),
            veth_drops,
            prog_ns,
        };
        (sample, sent)
    }
}

/// Writes the configs of the `lb-nat` and `lb-dsr` cases; returns their
/// paths. Only the IPv4 listener of the traffic's protocol (the standard
/// spec has IPv6 VIPs and the other protocol too): one VIP, one ring.
fn write_configs(topo: &Topology, opts: &Opts) -> (PathBuf, PathBuf) {
    let listener = format!("{}4", opts.proto.name());
    let mut spec = topo.config_spec(&[1, 2, 3]);
    spec.listeners.retain(|l| l.name == listener);
    spec.target_groups.retain(|g| g.name == listener);
    assert_eq!(spec.listeners.len(), 1, "standard spec has no {listener}");
    let capacity = (opts.flows * SLOTS_PER_FLOW).max(lb_common::limits::DEFAULT_FLOW_CAPACITY);
    spec.daemon_extra
        .push(format!("flow_capacity = {capacity}"));
    let config = topo.write_config(&spec);
    let dsr_config = topo.run_dir().join("lb-dsr.toml");
    std::fs::write(&dsr_config, dsr_spec(spec, opts.proto.vip_port()).render())
        .unwrap_or_else(|e| panic!("writing {}: {e}", dsr_config.display()));
    (config, dsr_config)
}

/// The client's frame to the VIP (source port 1024, which the generator
/// varies), without its MACs.
fn packet(opts: &Opts) -> Packet {
    assert!(
        (42..=256).contains(&opts.frame_len),
        "frame length must be 42..=256 bytes"
    );
    let vip = (VIP4, opts.proto.vip_port()).into();
    match opts.proto {
        Proto::Udp => Packet::udp((CLIENT4, 1024).into(), vip)
            .payload(&vec![0u8; opts.frame_len - 42])
            .udp_zero_checksum(),
        Proto::Tcp => {
            assert!(opts.frame_len >= 54, "a TCP frame is 54 bytes at least");
            Packet::tcp((CLIENT4, 1024).into(), vip, tcp_flags::ACK).payload(&vec![
                0u8;
                opts.frame_len
                    - 54
            ])
        }
    }
}

/// `spec` with its target group in dsr mode. dsr does not translate
/// ports: the targets listen on the VIP's `port`. Health checks go to the
/// targets' own addresses, as in the nat config, rather than through the
/// VIP (dsr's default): the probe path (an IFB device set up at the first
/// check, mid-window) would otherwise differ between the two cases. The
/// sinks answer no check either way; a round is far shorter than the
/// checks need to call a target unhealthy.
fn dsr_spec(mut spec: ConfigSpec, port: u16) -> ConfigSpec {
    for g in &mut spec.target_groups {
        g.port = port;
        for t in &mut g.targets {
            t.port = port;
        }
        g.extra.push("forwarding = \"dsr\"".to_owned());
        g.extra
            .push("health_check = { address = \"target\" }".to_owned());
    }
    spec
}

/// The outer IPv4 header `lb-dsr` puts on `packet` for target `i`, as
/// `bench_encap` writes it: the balancer's outer source for the flow hash
/// 0 (the first address of its source range; `lb_xdp` varies it per flow).
fn outer_header(packet: Packet, i: usize) -> OuterHeader {
    let src = source_of_hash(0, FAMILY_V4)[0];
    let wrapped = packet
        .encap(Ipv4Addr::from(u32::from_be(src)).into(), target4(i).into())
        .build();
    let mut bytes = [0u8; 20];
    bytes.copy_from_slice(&wrapped[14..34]);
    OuterHeader { bytes }
}

/// XDP transmit errors (`ethtool -S`: `tx_queue_N_xdp_xmit_err`) plus TX
/// drops of a veth.
fn veth_drops(ns: &Netns, dev: &str) -> u64 {
    let ethtool = String::from_utf8_lossy(&ns.exec(&["ethtool", "-S", dev]).stdout).into_owned();
    let xmit_err: u64 = ethtool
        .lines()
        .filter_map(|l| l.trim().split_once(':'))
        .filter(|(k, _)| k.ends_with("xdp_xmit_err"))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum();
    let path = format!("/sys/class/net/{dev}/statistics/tx_dropped");
    let tx_dropped: u64 = String::from_utf8_lossy(&ns.exec(&["cat", &path]).stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path} in {}: {e}", ns.name()));
    xmit_err + tx_dropped
}

/// The `data path` counters of `lb stats` output.
fn datapath_stats(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .skip_while(|l| l.trim() != "data path")
        .skip(1)
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?;
            let v = words.next()?.parse().ok()?;
            Some((name.to_owned(), v))
        })
        .collect()
}
