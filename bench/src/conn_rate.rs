//! New TCP connections per second through the XDP path, next to the
//! kernel's own NAT (nftables DNAT with conntrack) and to no NAT at all (the
//! client connecting to the targets' addresses, routed by the balancer's
//! namespace), measured in the same run.
//!
//! The standard lab: a client namespace, the load balancer's namespace and
//! three target namespaces running `lb-test-server` (a thread per
//! connection, which greets it). Client threads in the client namespace
//! each open a connection, read the greeting and close, again and again,
//! for the window; every connection is a full handshake, a first data
//! segment back, and FIN both ways through the forwarder. The client
//! namespace reuses TIME_WAIT ports (`tcp_tw_reuse`) over the whole
//! ephemeral range, so ports do not run out.
//!
//! Cases, interleaved round by round: `lb` (`lb run`, the XDP program
//! attached, VIP 10.200.0.100:80); `nftables` (`lb down`, so no XDP
//! program; a DNAT rule for 10.200.0.101:80 spreading over the targets by
//! `numgen inc`); `direct` (`lb down`; the targets' own addresses, in turn).
//! Each figure is the median of its rounds; lb and nftables are reported
//! as ratios to `direct`, which costs the same handshakes and routing
//! without any NAT.
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::nft::NftDnat;
use lb_tests::lab::Lab;
use lb_tests::netns;
use lb_tests::topology::{TARGET_TCP_PORT, VIP_TCP_PORT, VIP4, target4};

/// What `lb-bench conn-rate` was asked for.
#[derive(Clone, Debug)]
pub struct Opts {
    pub window: Duration,
    pub rounds: usize,
    /// Client threads, each one connection at a time.
    pub clients: usize,
}

const TARGETS: usize = 3;
const NFT_VIP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 101);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    Lb,
    Nftables,
    Direct,
}

impl Case {
    const ALL: [Case; 3] = [Case::Lb, Case::Nftables, Case::Direct];

    pub fn name(self) -> &'static str {
        match self {
            Case::Lb => "lb",
            Case::Nftables => "nftables",
            Case::Direct => "direct",
        }
    }

    /// Where the `i`th connection of a client goes.
    fn destination(self, i: u64) -> SocketAddr {
        match self {
            Case::Lb => (VIP4, VIP_TCP_PORT).into(),
            Case::Nftables => (NFT_VIP, VIP_TCP_PORT).into(),
            Case::Direct => {
                let t = usize::try_from(i % TARGETS as u64).expect("small") + 1;
                SocketAddr::new(IpAddr::V4(target4(t)), TARGET_TCP_PORT)
            }
        }
    }
}

/// One window's outcome.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub ok: u64,
    pub failed: u64,
    pub seconds: f64,
}

impl Sample {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.seconds
    }
}

pub struct Report {
    pub samples: Vec<(Case, Vec<Sample>)>,
    pub loadavg: String,
}

impl Report {
    fn median(&self, case: Case) -> f64 {
        let mut v: Vec<f64> = self
            .samples
            .iter()
            .filter(|(c, _)| *c == case)
            .flat_map(|(_, s)| s.iter().map(Sample::rate))
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }

    fn failed(&self, case: Case) -> u64 {
        self.samples
            .iter()
            .filter(|(c, _)| *c == case)
            .flat_map(|(_, s)| s.iter().map(|s| s.failed))
            .sum()
    }
}

/// Runs `opts.clients` threads in the client namespace opening connections
/// to `case`'s destination for `opts.window`.
fn measure(lab: &Lab, case: Case, opts: &Opts) -> Sample {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let ns = lab.topo.client.name().to_owned();
    let threads: Vec<_> = (0..opts.clients)
        .map(|c| {
            let (stop, ok, failed, ns) = (stop.clone(), ok.clone(), failed.clone(), ns.clone());
            thread::spawn(move || {
                netns::in_netns(&ns, move || {
                    let mut i = c as u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        match one_connection(case.destination(i)) {
                            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
        })
        .collect();
    let start = Instant::now();
    thread::sleep(opts.window);
    let (n_ok, n_failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let seconds = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("client thread");
    }
    Sample {
        ok: n_ok,
        failed: n_failed,
        seconds,
    }
}

/// Connect, read the greeting line, close.
fn one_connection(to: SocketAddr) -> std::io::Result<()> {
    let s = TcpStream::connect_timeout(&to, CONNECT_TIMEOUT)?;
    s.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

pub fn run(opts: &Opts) -> Report {
    netns::require_root();
    assert!(opts.rounds > 0, "--rounds must be at least 1");
    assert!(opts.clients > 0, "--clients must be at least 1");
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut lab = Lab::new("connrate", TARGETS, &[1, 2, 3]);
    lab.topo.client.sysctl("net.ipv4.tcp_tw_reuse", "1");
    lab.topo
        .client
        .sysctl("net.ipv4.ip_local_port_range", "1024 65535");
    let mut samples: Vec<(Case, Vec<Sample>)> =
        Case::ALL.iter().map(|&c| (c, Vec::new())).collect();
    for round in 0..opts.rounds {
        for (case, out) in samples.iter_mut() {
            let running = lab.daemon.is_some();
            match (*case, running) {
                (Case::Lb, false) => lab.start_daemon(),
                (Case::Nftables | Case::Direct, true) => {
                    lab.stop_daemon();
                    let (ok, _, err) = lab.lb(&["down"]);
                    assert!(ok, "lb down: {err}");
                }
                _ => {}
            }
            let _nft = (*case == Case::Nftables).then(|| {
                NftDnat::install(
                    &lab.topo,
                    "tcp",
                    NFT_VIP,
                    VIP_TCP_PORT,
                    TARGETS,
                    TARGET_TCP_PORT,
                )
            });
            if *case == Case::Lb {
                // Attached and programmed before the window opens.
                thread::sleep(Duration::from_secs(1));
            }
            let s = measure(&lab, *case, opts);
            eprintln!(
                "round {round} {:<9} {:>9.0} conn/s ({} ok, {} failed)",
                case.name(),
                s.rate(),
                s.ok,
                s.failed
            );
            out.push(s);
        }
    }
    Report {
        samples,
        loadavg: loadavg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    }
}

pub fn print(report: &Report, opts: &Opts) {
    let direct = report.median(Case::Direct);
    println!(
        "new TCP connections/s (connect, greeting, close), {} client threads, {} rounds of {:?}, load before {}",
        opts.clients, opts.rounds, opts.window, report.loadavg
    );
    println!(
        "{:<10} {:>12} {:>12} {:>8}",
        "case", "conn/s", "vs direct", "failed"
    );
    for case in Case::ALL {
        let m = report.median(case);
        println!(
            "{:<10} {:>12.0} {:>11.2}x {:>8}",
            case.name(),
            m,
            m / direct,
            report.failed(case)
        );
    }
    println!(
        "lb / nftables: {:.2}x",
        report.median(Case::Lb) / report.median(Case::Nftables)
    );
}

pub fn json(report: &Report, opts: &Opts) -> String {
    let cases: Vec<String> = Case::ALL
        .iter()
        .map(|&c| {
            format!(
                "    {{\"case\": \"{}\", \"median_conn_per_s\": {:.1}, \"failed\": {}}}",
                c.name(),
                report.median(c),
                report.failed(c)
            )
        })
        .collect();
    format!(
        "{{\n  \"clients\": {},\n  \"rounds\": {},\n  \"window_s\": {},\n  \"loadavg_before\": \"{}\",\n  \"cases\": [\n{}\n  ]\n}}\n",
        opts.clients,
        opts.rounds,
        opts.window.as_secs_f64(),
        report.loadavg,
        cases.join(",\n")
    )
}
