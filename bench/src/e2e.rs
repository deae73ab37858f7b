//! `cargo xtask bench e2e`: packets per second end to end, client namespace
//! to target namespaces over veths, through three forwarders measured in the
//! same run on the same topology ([`Topology`], 3 targets):
//!
//! - `lb`: the real `lb run` daemon (XDP `lb_xdp` on every LB interface,
//!   UDP listener on the VIP, Maglev over the 3 targets, NAT);
//! - `nftables`: no XDP in the LB namespace; the kernel forwards and an
//!   nftables `dnat` rule spreads flows over the 3 targets (`numgen inc`, so
//!   per conntrack entry);
//! - `redirect`: `bench_redirect` (lb-bench-ebpf) on the client-facing veth,
//!   which only rewrites the MACs and redirects everything to target 1: the
//!   floor of any XDP forwarder on this path.
//!
//! Traffic: 64-byte IPv4 UDP frames client -> VIP:53 with zero UDP checksum,
//! the source port cycling over all 65536 values (one flow per port, so the
//! balancer and conntrack see established flows after the first lap). They
//! are generated in the client namespace with `BPF_PROG_TEST_RUN` in live
//! frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`, what `xdp-trafficgen` does):
//! `bench_wrap` rewrites the frame's source port and tail-calls `bench_tx`,
//! whose `XDP_TX` sends the frame out of the client's veth. (Debian's
//! `xdp-trafficgen` 1.3.1 does not load on this kernel: its BPF object needs
//! the `xdp_redirect_map_err` tracepoint, gone since Linux 6.13; and it can
//! vary destination ports only.) The generator thread is pinned to
//! `--gen-cpu`.
//!
//! Sink: `bench_sink` on every target's veth counts (per CPU) and drops, so
//! nothing answers. Delivered pps = sink counts over a window; sent pps =
//! frames the generator produced over the same window (counted by
//! `bench_wrap`'s `SEQ`); the difference was dropped on the way, by full veth
//! rings (reported from the veths' counters) or by the forwarder.
//!
//! Neighbours in the LB namespace are static (the sinks drop ARP), so both
//! the kernel and `bpf_fib_lookup` resolve the targets without ARP.
//!
//! CPUs: the generator thread is pinned to `--gen-cpu`. The LB's XDP program
//! (or, for `nftables`, the kernel stack) runs in the NAPI poll of `lb-c`,
//! in softirq on the CPU that scheduled it: `veth_xdp_xmit` schedules the
//! peer's NAPI on the sending CPU, and the test run's `local_bh_enable`
//! runs it there at once, so generator, forwarder and sinks share one CPU
//! and the generator sends only as fast as the chain drains. So 1e9 / pps is
//! the whole chain's CPU time per packet, and the difference to `redirect`
//! is what the forwarder costs above the floor. Per-CPU busy and softirq
//! shares (from /proc/stat) are reported for every case. (Threaded NAPI
//! for `lb-c` pinned to the other CPU was tried: the generator then
//! overruns the veth ring (4-6 Mpps sent, most dropped), every forwarder
//! delivers less than half its shared-CPU rate and more noisily (the ring
//! shared across CPUs, wake-ups, the rest of the machine on that CPU), and
//! the ratios come out the same; so it is not offered.)
//!
//! Rounds are interleaved (lb, nftables, redirect, lb, ...) so that
//! background load drifts affect every case alike; each case is set up and
//! torn down per round. For `lb`, `lb stats` before and after each round must
//! show `forwarded` moving by what the sinks received and no `drop_*`
//! counter moving ([`verify`], run after the results are written). The
//! config has only the IPv4 UDP listener (3 targets): one VIP, one ring.
use std::path::PathBuf;
use std::thread::{self};
use std::time::{Duration, Instant};

use aya::Ebpf;
use aya::maps::{Array, PerCpuArray};
use aya::programs::XdpMode;

use crate::nft::NftDnat;
use lb_tests::netns::{self, Netns};
use lb_tests::packet::tcp_flags;
use lb_tests::packet::{Mac, Packet};
use lb_tests::proc::{self, LbDaemon};
use lb_tests::topology::{
    CLIENT4, LB_CLIENT_IF, PEER_IF, TARGET_TCP_PORT, TARGET_UDP_PORT, Topology, TopologyOpts,
    VIP_TCP_PORT, VIP_UDP_PORT, VIP4, lb_target_if, target4,
};

/// What `lb-bench e2e` was asked for.
#[derive(Clone, Debug)]
pub struct Opts {
    /// Measured window per round.
    pub window: Duration,
    /// Traffic before each window (lets the first lap of new flows pass);
    /// longer if the generator has not yet sent every flow twice.
    pub warmup: Duration,
    pub rounds: usize,
    /// CPU the generator thread is pinned to.
    pub gen_cpu: usize,
    /// Frames per live-frames batch (kernel maximum 256).
    pub batch: u32,
    /// Frame length in bytes (Ethernet header included, no FCS).
    pub frame_len: usize,
    /// Distinct flows the traffic cycles through (a power of two: source
    /// ports, and source addresses beyond 65536).
    pub flows: u32,
    /// UDP datagrams, or TCP ACKs (segments of established connections).
    pub proto: Proto,
}

/// The traffic's transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }

    fn vip_port(self) -> u16 {
        match self {
            Proto::Udp => VIP_UDP_PORT,
            Proto::Tcp => VIP_TCP_PORT,
        }
    }

    fn target_port(self) -> u16 {
        match self {
            Proto::Udp => TARGET_UDP_PORT,
            Proto::Tcp => TARGET_TCP_PORT,
        }
    }
}

/// The three forwarders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    Lb,
    Nftables,
    Redirect,
}

impl Case {
    pub const ALL: [Case; 3] = [Case::Lb, Case::Nftables, Case::Redirect];

    pub fn name(self) -> &'static str {
        match self {
            Case::Lb => "lb",
            Case::Nftables => "nftables",
            Case::Redirect => "redirect",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Case::Lb => "lb run (XDP lb_xdp, Maglev + NAT, 3 targets)",
            Case::Nftables => "kernel forwarding + nftables dnat numgen (3 targets)",
            Case::Redirect => "XDP bench_redirect (MAC rewrite + redirect, target 1 only)",
        }
    }
}

/// One measured window.
#[derive(Clone, Debug)]
pub struct Sample {
    pub sent_pps: f64,
    pub delivered_pps: f64,
    /// Delivered pps per target (index = target - 1).
    pub per_target: Vec<f64>,
    /// CPU time per CPU over the window.
    pub cpu: Vec<CpuTime>,
    /// Frames the veths dropped (full rings) while the generator ran,
    /// warm-up included: XDP transmit errors of the client's veth and of
    /// the LB's target-facing veths, plus their TX drops (kernel path).
    pub veth_drops: u64,
}

/// Jiffies of one CPU (from /proc/stat): all, idle (with iowait), softirq.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTime {
    pub total: u64,
    pub idle: u64,
    pub softirq: u64,
}

impl CpuTime {
    pub fn busy_share(&self) -> f64 {
        share(self.total - self.idle, self.total)
    }

    pub fn softirq_share(&self) -> f64 {
        share(self.softirq, self.total)
    }
}

fn share(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 / total as f64
    }
}

/// Per-CPU times now, `cpu0`, `cpu1`, ... in order.
fn cpu_times() -> Vec<CpuTime> {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| {
            // user nice system idle iowait irq softirq steal ...
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let at = |i: usize| v.get(i).copied().unwrap_or(0);
            CpuTime {
                total: v.iter().take(8).sum(),
                idle: at(3) + at(4),
                softirq: at(6),
            }
        })
        .collect()
}

fn cpu_delta(after: &[CpuTime], before: &[CpuTime]) -> Vec<CpuTime> {
    after
        .iter()
        .zip(before)
        .map(|(a, b)| CpuTime {
            total: a.total - b.total,
            idle: a.idle - b.idle,
            softirq: a.softirq - b.softirq,
        })
        .collect()
}

/// All rounds of one case.
#[derive(Clone, Debug)]
pub struct CaseResult {
    pub case: Case,
    pub samples: Vec<Sample>,
}

impl CaseResult {
    pub fn delivered_median(&self) -> f64 {
        median(self.samples.iter().map(|s| s.delivered_pps).collect())
    }

    pub fn sent_median(&self) -> f64 {
        median(self.samples.iter().map(|s| s.sent_pps).collect())
    }

    /// CPU time of the whole chain per delivered packet (median pps).
    pub fn ns_per_packet(&self) -> f64 {
        1e9 / self.delivered_median()
    }

    /// Frames dropped by full veth rings, all rounds.
    pub fn veth_drops(&self) -> u64 {
        self.samples.iter().map(|s| s.veth_drops).sum()
    }

    /// CPU time per CPU summed over the rounds.
    pub fn cpu(&self) -> Vec<CpuTime> {
        let mut sum: Vec<CpuTime> = Vec::new();
        for s in &self.samples {
            sum.resize(s.cpu.len().max(sum.len()), CpuTime::default());
            for (t, c) in sum.iter_mut().zip(&s.cpu) {
                t.total += c.total;
                t.idle += c.idle;
                t.softirq += c.softirq;
            }
        }
        sum
    }

    /// Share of each target in the delivered packets, over all rounds.
    pub fn target_shares(&self) -> Vec<f64> {
        let n = self.samples.first().map_or(0, |s| s.per_target.len());
        let sums: Vec<f64> = (0..n)
            .map(|i| self.samples.iter().map(|s| s.per_target[i]).sum())
            .collect();
        let total: f64 = sums.iter().sum();
        sums.iter()
            .map(|s| if total > 0.0 { s / total } else { 0.0 })
            .collect()
    }
}

/// `lb stats` evidence for the `lb` case, summed over its rounds (from
/// before the generator started until after it stopped).
#[derive(Clone, Debug, Default)]
pub struct LbProof {
    pub sent: u64,
    pub forwarded: u64,
    pub delivered: u64,
    /// Every other data-path counter that moved, with its delta.
    pub other: Vec<(String, u64)>,
    /// `lb stats` after the last `lb` round.
    pub last_stats: String,
}

/// The run's conditions, printed and written with the numbers.
#[derive(Clone, Debug)]
pub struct Conditions {
    pub kernel: String,
    pub cpus: usize,
    pub loadavg_before: String,
    pub loadavg_after: String,
    pub elapsed: Duration,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub cases: Vec<CaseResult>,
    pub proof: LbProof,
    pub conditions: Conditions,
}

impl Report {
    fn case(&self, c: Case) -> &CaseResult {
        self.cases
            .iter()
            .find(|r| r.case == c)
            .expect("every case ran")
    }

    /// (lb / nftables, lb / redirect) of the median delivered pps.
    pub fn ratios(&self) -> (f64, f64) {
        let lb = self.case(Case::Lb).delivered_median();
        (
            lb / self.case(Case::Nftables).delivered_median(),
            lb / self.case(Case::Redirect).delivered_median(),
        )
    }

    /// ns per packet of `case` above the `redirect` floor.
    pub fn above_redirect_ns(&self, case: Case) -> f64 {
        self.case(case).ns_per_packet() - self.case(Case::Redirect).ns_per_packet()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Longest wait, after the warm-up, for the generator to have sent every
/// flow twice.
const WARMUP_LAPS_MAX: Duration = Duration::from_secs(30);

/// Default number of distinct flows the generator cycles through.
pub const FLOWS: u32 = 65536;
/// nftables table of the `nftables` case.
// ---------------------------------------------------------------- eBPF side
use lb_tests::trafficgen::{
    Generator, GeneratorSpec, Link, Vary, link, load_bench, mac_str, xdp_mut,
};

/// Mirrors `RedirectTo` in lb-bench-ebpf.
#[repr(C)]
#[derive(Clone, Copy)]
struct RedirectTo {
    ifindex: u32,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
}
// SAFETY: repr(C), 4 + 6 + 6 bytes, no implicit padding.
unsafe impl aya::Pod for RedirectTo {}

/// Runs `f` on a thread in namespace `ns` (interface names resolve there).
fn in_ns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    netns::in_netns(ns.name(), f)
}

/// `bench_sink` attached (driver mode) to a target's veth; detached on drop.
struct Sink {
    ebpf: Ebpf,
}

impl Sink {
    fn attach(ns: &Netns, dev: &'static str) -> Self {
        let ebpf = in_ns(ns, move || {
            let mut ebpf = load_bench(&["bench_sink"]);
            xdp_mut(&mut ebpf, "bench_sink")
                .attach(dev, XdpMode::Driver)
                .unwrap_or_else(|e| panic!("attaching bench_sink to {dev}: {e:?}"));
            ebpf
        });
        Self { ebpf }
    }

    fn count(&self) -> u64 {
        let map: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("SINK").expect("SINK map")).expect("SINK");
        map.get(&0, 0).expect("read SINK").iter().sum()
    }
}

/// `bench_redirect` on `lb-c`; detached on drop.
struct Redirect {
    _ebpf: Ebpf,
}

impl Redirect {
    fn attach(lab: &Lab) -> Self {
        let to = RedirectTo {
            ifindex: lab.lb_t1.ifindex,
            dst_mac: lab.target_macs[0],
            src_mac: lab.lb_t1.mac,
        };
        let ebpf = in_ns(&lab.topo.lb, move || {
            let mut ebpf = load_bench(&["bench_redirect"]);
            let mut map: Array<_, RedirectTo> =
                Array::try_from(ebpf.map_mut("REDIRECT").expect("REDIRECT map")).expect("REDIRECT");
            map.set(0, to, 0).expect("write REDIRECT");
            xdp_mut(&mut ebpf, "bench_redirect")
                .attach(LB_CLIENT_IF, XdpMode::Driver)
                .unwrap_or_else(|e| panic!("attaching bench_redirect to {LB_CLIENT_IF}: {e:?}"));
            ebpf
        });
        Self { _ebpf: ebpf }
    }
}

// ---------------------------------------------------------------- the lab

/// Topology, sinks and the addresses every case needs. Fields drop in
/// order: sinks (detach), then the topology (processes, links, namespaces).
struct Lab {
    sinks: Vec<Sink>,
    topo: Topology,
    config: PathBuf,
    lb_t1: Link,
    target_macs: Vec<Mac>,
    frame: Vec<u8>,
}

const TARGETS: usize = 3;
/// Connection-table slots per flow of the traffic: room for every flow with
/// the table at half its capacity (see lb_common::flow on set occupancy).
const SLOTS_PER_FLOW: u32 = 2;

impl Lab {
    fn new(opts: &Opts) -> Self {
        let topo = Topology::new(
            "bench",
            TopologyOpts {
                targets: TARGETS,
                ..TopologyOpts::default()
            },
        );
        // Only the IPv4 listener of the traffic's protocol (the standard
        // spec has IPv6 VIPs and the other protocol too): one VIP, one ring.
        let listener = format!("{}4", opts.proto.name());
        let mut spec = topo.config_spec(&[1, 2, 3]);
        spec.listeners.retain(|l| l.name == listener);
        spec.target_groups.retain(|g| g.name == listener);
        assert_eq!(spec.listeners.len(), 1, "standard spec has no {listener}");
        let capacity = (opts.flows * SLOTS_PER_FLOW).max(lb_common::limits::DEFAULT_FLOW_CAPACITY);
        spec.daemon_extra
            .push(format!("flow_capacity = {capacity}"));
        let config = topo.write_config(&spec);
        let client = link(&topo.client, PEER_IF);
        let lb_c = link(&topo.lb, LB_CLIENT_IF);
        let lb_t1 = link(&topo.lb, &lb_target_if(1));
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
        assert!(
            (42..=256).contains(&opts.frame_len),
            "frame length must be 42..=256 bytes"
        );
        let vip = (VIP4, opts.proto.vip_port()).into();
        let frame = match opts.proto {
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
        .macs(client.mac, lb_c.mac)
        .build();
        assert_eq!(frame.len(), opts.frame_len);
        Self {
            sinks,
            topo,
            config,
            lb_t1,
            target_macs,
            frame,
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

    fn sink_counts(&self) -> Vec<u64> {
        self.sinks.iter().map(Sink::count).collect()
    }

    fn lb_stats_text(&self) -> String {
        proc::lb_stats(&proc::lb_bin(), self.topo.lb.name(), &self.config)
    }

    fn lb_stats(&self) -> Vec<(String, u64)> {
        datapath_stats(&self.lb_stats_text())
    }

    /// One round of `case`: set up, warm up, measure, tear down.
    fn round(&self, case: Case, opts: &Opts, proof: &mut LbProof) -> Sample {
        match case {
            Case::Lb => {
                let daemon = LbDaemon::start(self.topo.lb.name(), &self.config);
                let before = self.lb_stats();
                let sinks_before: u64 = self.sink_counts().iter().sum();
                let (sample, sent) = self.measure(opts);
                // Let the rings drain before the final counts.
                thread::sleep(Duration::from_millis(200));
                let text = self.lb_stats_text();
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
            Case::Nftables => {
                let _nft = NftDnat::install(
                    &self.topo,
                    opts.proto.name(),
                    VIP4,
                    opts.proto.vip_port(),
                    TARGETS,
                    opts.proto.target_port(),
                );
                self.measure(opts).0
            }
            Case::Redirect => {
                let _redirect = Redirect::attach(self);
                self.measure(opts).0
            }
        }
    }

    /// Starts the generator, warms up, measures one window; returns the
    /// sample and every frame the generator sent.
    fn measure(&self, opts: &Opts) -> (Sample, u64) {
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
        };
        (sample, sent)
    }
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

// ---------------------------------------------------------------- run

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn run(opts: &Opts) -> Report {
    netns::require_root();
    assert!(opts.rounds > 0, "--rounds must be at least 1");
    let started = Instant::now();
    let loadavg_before = loadavg();
    let lab = Lab::new(opts);
    let mut results: Vec<CaseResult> = Case::ALL
        .iter()
        .map(|&case| CaseResult {
            case,
            samples: Vec::new(),
        })
        .collect();
    let mut proof = LbProof::default();
    for round in 1..=opts.rounds {
        for r in &mut results {
            let s = lab.round(r.case, opts, &mut proof);
            eprintln!(
                "round {round}/{}: {:<9} sent {:>10.0} pps, delivered {:>10.0} pps",
                opts.rounds,
                r.case.name(),
                s.sent_pps,
                s.delivered_pps
            );
            r.samples.push(s);
        }
    }
    drop(lab);
    Report {
        cases: results,
        proof,
        conditions: Conditions {
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            cpus: thread::available_parallelism().map_or(0, |n| n.get()),
            loadavg_before,
            loadavg_after: loadavg(),
            elapsed: started.elapsed(),
        },
    }
}

fn generator_desc(opts: &Opts) -> String {
    format!(
        "BPF_PROG_TEST_RUN live frames (lb-bench-ebpf bench_wrap -> bench_tx, XDP_TX out of the client veth), batch {}, 1 thread pinned to CPU {}",
        opts.batch, opts.gen_cpu
    )
}

fn cpu_desc(opts: &Opts) -> String {
    format!(
        "generator on CPU {}; {LB_CLIENT_IF}'s NAPI (the LB's XDP program or the kernel stack) and the sinks run in softirq on the CPU that scheduled them, in practice the generator's",
        opts.gen_cpu
    )
}

fn cpu_summary(cpu: &[CpuTime]) -> String {
    cpu.iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "cpu{i} {:.0}% busy ({:.0}% softirq)",
                c.busy_share() * 100.0,
                c.softirq_share() * 100.0
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn print(report: &Report, opts: &Opts) {
    let c = &report.conditions;
    println!(
        "end to end over veths, client ns -> LB ns -> {TARGETS} target ns; kernel {}, {} CPUs, load average {} before, {} after",
        c.kernel, c.cpus, c.loadavg_before, c.loadavg_after
    );
    println!(
        "traffic: {} B IPv4 {} frames to {VIP4}:{}, {} flows (source ports{}){}",
        opts.frame_len,
        match opts.proto {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP ACK",
        },
        opts.proto.vip_port(),
        opts.flows,
        if opts.flows > 1 << 16 {
            " and addresses"
        } else {
            ""
        },
        if opts.proto == Proto::Udp {
            ", zero UDP checksum"
        } else {
            ""
        }
    );
    println!("generator: {}", generator_desc(opts));
    println!("CPUs: {}", cpu_desc(opts));
    println!(
        "sink: bench_sink (XDP count + drop) on every target veth; window {:?} after {:?} warm-up (and at least two laps of the flows), {} interleaved rounds, median",
        opts.window, opts.warmup, opts.rounds
    );
    println!();
    println!(
        "{:<9} {:>13} {:>11} {:>6} {:>8} {:>10} {:>13}  forwarder",
        "case", "delivered pps", "sent pps", "lost", "ns/pkt", "above", "target shares"
    );
    for r in &report.cases {
        let (d, s) = (r.delivered_median(), r.sent_median());
        let shares: Vec<String> = r
            .target_shares()
            .iter()
            .map(|x| format!("{:.0}", x * 100.0))
            .collect();
        let above = if r.case == Case::Redirect {
            "floor".to_owned()
        } else {
            format!("+{:.0} ns", report.above_redirect_ns(r.case))
        };
        println!(
            "{:<9} {:>13.0} {:>11.0} {:>5.1}% {:>8.0} {:>10} {:>13}  {}",
            r.case.name(),
            d,
            s,
            if s > 0.0 { (1.0 - d / s) * 100.0 } else { 0.0 },
            r.ns_per_packet(),
            above,
            format!("{}%", shares.join("/")),
            r.case.describe()
        );
    }
    println!();
    for r in &report.cases {
        let rounds: Vec<String> = r
            .samples
            .iter()
            .map(|s| format!("{:.0}", s.delivered_pps))
            .collect();
        println!(
            "{:<9} rounds: {} pps; {}; veth ring drops {}",
            r.case.name(),
            rounds.join(", "),
            cpu_summary(&r.cpu()),
            r.veth_drops()
        );
    }
    let (k, t) = report.ratios();
    println!();
    println!("lb / nftables: {k:.2}x the packets per second");
    println!("lb / redirect: {t:.2}x the packets per second");
    let p = &report.proof;
    println!(
        "lb stats over the lb rounds: forwarded +{}, sinks received +{}, generator sent {}",
        p.forwarded, p.delivered, p.sent
    );
    if !p.other.is_empty() {
        let other: Vec<String> = p.other.iter().map(|(n, v)| format!("{n} +{v}")).collect();
        println!("  other data-path counters moved: {}", other.join(", "));
    }
    if proc::verbose() {
        println!(
            "lb stats after the last lb round:\n{}",
            p.last_stats.trim_end()
        );
    }
    let lb_shares = report.case(Case::Lb).target_shares();
    if lb_shares
        .iter()
        .any(|s| (s - 1.0 / TARGETS as f64).abs() > 0.05)
    {
        println!(
            "note: lb's target shares are far from 1/{TARGETS} each (Maglev over equal weights should be within 1%)"
        );
    }
    println!("elapsed {:.1?}", c.elapsed);
}

/// Frames the sinks may count that the LB did not forward: the LB
/// namespace's own IPv6 neighbour and router traffic toward the targets.
const SINK_SLACK: u64 = 1000;

/// Checks that the `lb` numbers are the daemon's forwarding: `forwarded`
/// accounts for what the sinks received and no drop counter moved.
/// Panics otherwise (after the results are written).
pub fn verify(report: &Report) {
    let p = &report.proof;
    assert!(
        p.forwarded > 0 && p.forwarded + SINK_SLACK >= p.delivered,
        "lb stats forwarded +{} does not account for the {} packets the sinks received",
        p.forwarded,
        p.delivered
    );
    let drops: Vec<String> = p
        .other
        .iter()
        .filter(|(n, _)| n.starts_with("drop_"))
        .map(|(n, v)| format!("{n} +{v}"))
        .collect();
    assert!(
        drops.is_empty(),
        "the lb rounds dropped packets in the XDP program ({}), so its pps is not all forwarding work\nlb stats after the last lb round:\n{}",
        drops.join(", "),
        p.last_stats
    );
}

fn json_f64s(v: impl Iterator<Item = f64>) -> String {
    v.map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(", ")
}

fn json_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn json(report: &Report, opts: &Opts) -> String {
    let c = &report.conditions;
    let cases: Vec<String> = report
        .cases
        .iter()
        .map(|r| {
            let cpu: Vec<String> = r
                .cpu()
                .iter()
                .map(|c| {
                    format!(
                        "{{\"busy\": {:.3}, \"softirq\": {:.3}}}",
                        c.busy_share(),
                        c.softirq_share()
                    )
                })
                .collect();
            format!(
                "    {{\"case\": {}, \"forwarder\": {}, \"delivered_pps_median\": {:.1}, \"sent_pps_median\": {:.1}, \"ns_per_packet\": {:.1}, \"above_redirect_ns\": {:.1}, \"delivered_pps\": [{}], \"sent_pps\": [{}], \"target_shares\": [{}], \"cpu\": [{}], \"veth_drops\": {}}}",
                json_str(r.case.name()),
                json_str(r.case.describe()),
                r.delivered_median(),
                r.sent_median(),
                r.ns_per_packet(),
                report.above_redirect_ns(r.case),
                json_f64s(r.samples.iter().map(|s| s.delivered_pps)),
                json_f64s(r.samples.iter().map(|s| s.sent_pps)),
                r.target_shares()
                    .iter()
                    .map(|x| format!("{x:.4}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                cpu.join(", "),
                r.veth_drops()
            )
        })
        .collect();
    let (k, t) = report.ratios();
    let p = &report.proof;
    let other: Vec<String> = p
        .other
        .iter()
        .map(|(n, v)| format!("{}: {v}", json_str(n)))
        .collect();
    format!(
        "{{\n  \"conditions\": {{\"kernel\": {}, \"cpus\": {}, \"loadavg_before\": {}, \"loadavg_after\": {}, \"generator\": {}, \"cpu_placement\": {}, \"frame_len\": {}, \"proto\": \"{}\", \"flows\": {}, \"window_s\": {}, \"warmup_s\": {}, \"rounds\": {}, \"elapsed_s\": {:.1}}},\n  \"cases\": [\n{}\n  ],\n  \"ratio_lb_over_nftables\": {k:.3},\n  \"ratio_lb_over_redirect\": {t:.3},\n  \"lb_stats\": {{\"forwarded\": {}, \"sinks_received\": {}, \"generator_sent\": {}, \"other\": {{{}}}}}\n}}\n",
        json_str(&c.kernel),
        c.cpus,
        json_str(&c.loadavg_before),
        json_str(&c.loadavg_after),
        json_str(&generator_desc(opts)),
        json_str(&cpu_desc(opts)),
        opts.frame_len,
        opts.proto.name(),
        opts.flows,
        opts.window.as_secs_f64(),
        opts.warmup.as_secs_f64(),
        opts.rounds,
        c.elapsed.as_secs_f64(),
        cases.join(",\n"),
        p.forwarded,
        p.delivered,
        p.sent,
        other.join(", ")
    )
}
