//! `cargo xtask bench e2e`: packets per second end to end, client namespace
//! to target namespaces over veths, through eight forwarders measured in the
//! same run on the same topology ([`Topology`](lb_tests::topology::Topology),
//! 3 targets): the balancer in two modes, the kernel's, the trivial XDP
//! forwarders that are their floors, and a bound on a stateful one:
//!
//! - `lb-nat`: the real `lb run` daemon (XDP `lb_xdp` on every LB
//!   interface, one listener on the VIP, Maglev over the 3 targets, NAT);
//! - `lb-dsr`: the same daemon and listener with the target group in dsr
//!   mode (`forwarding = "dsr"`): Maglev, then the client's frame inside an
//!   outer IPv4 header (protocol 4) to the target;
//! - `nftables`: no XDP in the LB namespace; the kernel forwards and an
//!   nftables `dnat` rule spreads flows over the 3 targets (`numgen inc`, so
//!   per conntrack entry);
//! - `redirect`: `bench_redirect` (lb-bench-ebpf) on the client-facing veth,
//!   which only rewrites the MACs and redirects everything to target 1: the
//!   floor of any XDP forwarder on this path;
//! - `redirect-ipip`: `bench_encap`, the same plus a fixed outer IPv4
//!   header (`bpf_xdp_adjust_head`, 20 bytes more per frame): the floor of
//!   any encapsulating forwarder;
//! - `spread`, `spread-ipip`: the same two spreading flows over the 3
//!   targets by source port. A balancer pays for spreading on this path
//!   whatever its logic: three egress devices, three bulk queues to flush
//!   and three peers' NAPI polls per batch instead of one. These are the
//!   floors of the balancing cases, so `lb-nat` above `spread` and `lb-dsr`
//!   above `spread-ipip` are the balancer's own work (parsing, the
//!   connection table, Maglev, the rewrite); the one-target rows show what
//!   spreading itself costs ([`Case::floor`]);
//! - `spread-state`: `bench_redirect_spread_state`, `spread` plus one read
//!   per packet of the flow's own entry in a table of exactly one entry per
//!   flow (memory-mappable, as lb's `FLOWS`), at a place a strong mix of the
//!   flow's number gives, and the redirect waits for it. The entry is a
//!   64-byte line, or with `--state-entry 32` or `16` one of 2 or 4 packed
//!   in a line. A forwarder that keeps a 64-byte line of state per flow (as
//!   lb does, and lb reads its two candidate entries and their sets' tags,
//!   in a table with room to spare) reads at least that: `spread-state /
//!   spread` is the most such a forwarder can reach on this path at this
//!   many flows; with smaller entries, what compact per-flow state could
//!   reach (a smaller working set: fewer pages, fewer lines).
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
//! rings (reported from the veths' counters) or by the forwarder. For dsr
//! the sinks count the encapsulated frames as they reach the target, with
//! no `lb_decap` behind them: the whole chain runs on one CPU (below), so
//! a decapsulation there would add the target's work to the balancer's
//! time per packet, work that a real target pays on a host of its own.
//! `lb_decap` is the targets' to measure; the namespace tests prove that
//! it takes these frames.
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
//! the whole chain's CPU time per packet, and the difference to the case's
//! floor is what the forwarder costs above it. After each window, the
//! forwarder's XDP program's own time per packet is also taken from the
//! kernel's BPF run-time statistics for one more second ([`prog_time`]):
//! steadier than the chain's pps, and the balancer's cost alone. It ends
//! where the program returns: the redirect's flush and the peers' NAPI
//! polls after it (what spreading costs) show in pps only. Per-CPU busy
//! and softirq shares (from /proc/stat) are reported for every case. (Threaded NAPI
//! for `lb-c` pinned to the other CPU was tried: the generator then
//! overruns the veth ring (4-6 Mpps sent, most dropped), every forwarder
//! delivers less than half its shared-CPU rate and more noisily (the ring
//! shared across CPUs, wake-ups, the rest of the machine on that CPU), and
//! the ratios come out the same; so it is not offered.)
//!
//! Rounds are interleaved (lb-nat, lb-dsr, nftables, redirect,
//! redirect-ipip, spread, spread-ipip, spread-state, lb-nat, ...) so that
//! background load drifts affect every case alike; each case is set up and
//! torn down per round. For the `lb` cases, `lb stats` before and after
//! each round must show `forwarded` moving by what the sinks received and
//! no `drop_*` counter moving
//! ([`verify`], run after the results are written). Each config has only
//! the IPv4 listener of the traffic's protocol (3 targets): one VIP, one
//! ring.
mod cpu;
mod forwarders;
mod lab;
mod prog_time;
mod report;
mod result;

use std::thread;
use std::time::{Duration, Instant};

use lb_tests::netns;
use lb_tests::topology::{TARGET_TCP_PORT, TARGET_UDP_PORT, VIP_TCP_PORT, VIP_UDP_PORT};

pub use forwarders::StateEntry;
use forwarders::Work;
use lab::Lab;
pub use report::{json, print, verify};
use result::{CaseResult, Conditions, LbProof, Report};

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
    /// What `spread-state` reads per flow.
    pub state_entry: StateEntry,
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

/// The forwarders measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    /// `lb run`, target group in nat mode.
    LbNat,
    /// `lb run`, target group in dsr mode.
    LbDsr,
    Nftables,
    Redirect,
    /// `bench_redirect` plus a fixed outer header.
    RedirectIpip,
    /// `bench_redirect_spread`: the floor of `lb-nat` and `nftables`.
    Spread,
    /// `bench_encap_spread`: the floor of `lb-dsr`.
    SpreadIpip,
    /// `bench_redirect_spread_state`: `Spread` plus one entry of per-flow
    /// state read per packet (a 64-byte line unless `--state-entry` says
    /// 32 or 16), the least a balancer with such an entry per flow pays.
    SpreadState,
}

impl Case {
    /// In the order each round runs them.
    pub const ALL: [Case; 8] = [
        Case::LbNat,
        Case::LbDsr,
        Case::Nftables,
        Case::Redirect,
        Case::RedirectIpip,
        Case::Spread,
        Case::SpreadIpip,
        Case::SpreadState,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Case::LbNat => "lb-nat",
            Case::LbDsr => "lb-dsr",
            Case::Nftables => "nftables",
            Case::Redirect => "redirect",
            Case::RedirectIpip => "redirect-ipip",
            Case::Spread => "spread",
            Case::SpreadIpip => "spread-ipip",
            Case::SpreadState => "spread-state",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Case::LbNat => "lb run (XDP lb_xdp, Maglev + NAT, 3 targets)",
            Case::LbDsr => "lb run (XDP lb_xdp, Maglev + IPIP, 3 targets)",
            Case::Nftables => "kernel forwarding + nftables dnat numgen (3 targets)",
            Case::Redirect => "XDP bench_redirect (MAC rewrite + redirect, target 1 only)",
            Case::RedirectIpip => {
                "XDP bench_encap (fixed outer IPv4 header + redirect, target 1 only)"
            }
            Case::Spread => "XDP bench_redirect_spread (as redirect, 3 targets by source port)",
            Case::SpreadIpip => {
                "XDP bench_encap_spread (as redirect-ipip, 3 targets by source port)"
            }
            Case::SpreadState => {
                "XDP bench_redirect_spread_state (as spread, plus a read of the flow's entry in a table of one entry per flow)"
            }
        }
    }

    /// A trivial forwarder's work and how many targets it sends to; `None`
    /// for the balancer and the kernel.
    pub fn trivial(self) -> Option<(Work, usize)> {
        match self {
            Case::Redirect => Some((Work::Plain, 1)),
            Case::RedirectIpip => Some((Work::Encap, 1)),
            Case::Spread => Some((Work::Plain, lab::TARGETS)),
            Case::SpreadIpip => Some((Work::Encap, lab::TARGETS)),
            Case::SpreadState => Some((Work::State, lab::TARGETS)),
            Case::LbNat | Case::LbDsr | Case::Nftables => None,
        }
    }

    /// Whether the case is the `lb run` daemon (its `lb stats` are checked).
    pub fn is_lb(self) -> bool {
        matches!(self, Case::LbNat | Case::LbDsr)
    }

    /// The trivial forwarder doing the same frame work with none of the
    /// logic: the case's cost is reported above it. The balancing cases'
    /// floors spread over the same 3 targets; dsr's also pays
    /// `bpf_xdp_adjust_head` and 20 more bytes per frame, as dsr does. So
    /// the difference is the balancer's own work (parsing, the connection
    /// table, Maglev, the rewrite). A spreading floor's own floor is its
    /// one-target twin (what spreading costs), `spread-state`'s is `spread`
    /// (what its line of state costs), and the plain `redirect` is the floor
    /// of the floors.
    pub fn floor(self) -> Option<Case> {
        match self {
            Case::LbNat | Case::Nftables => Some(Case::Spread),
            Case::LbDsr => Some(Case::SpreadIpip),
            Case::Spread | Case::RedirectIpip => Some(Case::Redirect),
            Case::SpreadState => Some(Case::Spread),
            Case::SpreadIpip => Some(Case::RedirectIpip),
            Case::Redirect => None,
        }
    }
}

/// Longest wait, after the warm-up, for the generator to have sent every
/// flow twice.
pub const WARMUP_LAPS_MAX: Duration = Duration::from_secs(30);

/// Default number of distinct flows the generator cycles through.
pub const FLOWS: u32 = 65536;

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn run(opts: &Opts) -> Report {
    netns::require_root();
    assert!(opts.rounds > 0, "--rounds must be at least 1");
    if prog_time::always_on() {
        eprintln!(
            "warning: kernel.bpf_stats_enabled is 1: every program run pays the statistics' clock reads in the pps windows too"
        );
    }
    let started = Instant::now();
    let loadavg_before = loadavg();
    let lab = Lab::new(opts);
    let mut results: Vec<CaseResult> = Case::ALL
        .iter()
        .map(|&case| CaseResult {
            case,
            samples: Vec::new(),
            proof: LbProof::default(),
        })
        .collect();
    for round in 1..=opts.rounds {
        for r in &mut results {
            let s = lab.round(r.case, opts, &mut r.proof);
            eprintln!(
                "round {round}/{}: {:<13} sent {:>10.0} pps, delivered {:>10.0} pps",
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
