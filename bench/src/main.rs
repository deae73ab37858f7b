//! Benchmarks behind `cargo xtask bench`: every figure next to a baseline
//! measured in the same run.
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::xdp::{Opts, Row};

mod apply;
mod conn_rate;
mod control;
mod e2e;
mod http;
mod json;
mod nft;
mod xdp;

#[derive(Parser)]
#[command(about = "xdp-lb benchmarks (run through `cargo xtask bench`)")]
struct Cli {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Control plane: time to program a config of `vips` x `targets` into
    /// the kernel maps from scratch and to apply a one-target change, next
    /// to building the Maglev tables alone and writing them alone.
    Control {
        #[arg(long, default_value_t = 1000)]
        vips: u32,
        #[arg(long, default_value_t = 100)]
        targets: u32,
        /// Slots per Maglev table (prime).
        #[arg(long, default_value_t = 65537)]
        ring_size: u32,
        /// Only the apply part (no health-check benchmark).
        #[arg(long)]
        apply_only: bool,
    },
    /// ns per packet of lb_xdp through BPF_PROG_TEST_RUN, next to trivial programs.
    Xdp {
        /// Measurements per case (median and min are reported).
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// Iterations per measurement (the kernel's `repeat`).
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        /// CPU to pin the run to.
        #[arg(long, default_value_t = 1)]
        cpu: usize,
        /// Where to write the JSON results.
        #[arg(long, default_value = "target/bench/xdp.json")]
        json: PathBuf,
        /// Only run cases whose name contains this text.
        #[arg(long)]
        only: Option<String>,
        /// Another build of the eBPF object (same maps, other code) to
        /// measure beside this one, alternating round by round: an A/B
        /// that the machine's drift falls on alike.
        #[arg(long)]
        against: Option<PathBuf>,
        /// Another balancer's XDP program, pinned at this bpffs path and
        /// set up (out of this tree) to answer the IPv4 cases' frames for
        /// VIP 192.0.2.10 TCP 80, 82 and 443 with XDP_TX, to measure beside
        /// lb_xdp in the same rounds.
        #[arg(long)]
        reference: Option<PathBuf>,
    },
    /// Packets per second client -> targets over veths through `lb run`
    /// in nat and in dsr mode, next to kernel forwarding with nftables DNAT,
    /// a trivial XDP redirect and a trivial encapsulating one (to one
    /// target, and spread over the three: the balancer's floors), and a
    /// spreading one that reads an entry of per-flow state per packet (a
    /// 64-byte line, or 32 or 16 bytes: the bound on a forwarder with such
    /// an entry per flow), measured in the same run; and each XDP
    /// forwarder's own ns per packet (BPF run-time statistics, 1 s more per
    /// round).
    E2e {
        /// Seconds measured per round.
        #[arg(long, default_value_t = 5.0)]
        window: f64,
        /// Seconds of traffic before each measured window (at least until
        /// every flow was sent twice).
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Rounds per forwarder, interleaved (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// CPU the traffic generator is pinned to.
        #[arg(long, default_value_t = 0)]
        gen_cpu: usize,
        /// Frames per live-frames batch of the generator (1..=256).
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=256))]
        batch: u32,
        /// Frame length in bytes (Ethernet header included, no FCS).
        #[arg(long, default_value_t = 64)]
        frame_len: usize,
        /// Distinct flows the traffic cycles through (a power of two; 1048576
        /// for "a million"): the load balancer's table is sized for them.
        #[arg(long, default_value_t = e2e::FLOWS)]
        flows: u32,
        /// Traffic: UDP datagrams or TCP ACKs.
        #[arg(long, default_value = "udp", value_parser = ["udp", "tcp"])]
        proto: String,
        /// Bytes of state `spread-state` reads per flow: 64 (a line, as
        /// lb's connection table), or 32 or 16 (entries packed 2 or 4 to a
        /// line: what compact per-flow state could reach).
        #[arg(long, default_value = "64", value_parser = state_entry)]
        state_entry: e2e::StateEntry,
        /// Where to write the JSON results (default $LB_BENCH_DIR/e2e.json,
        /// else target/bench/e2e.json).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// New TCP connections per second through `lb run`'s XDP path, next to
    /// nftables DNAT and to no NAT, measured in the same run.
    ConnRate {
        /// Seconds measured per round.
        #[arg(long, default_value_t = 5.0)]
        window: f64,
        /// Rounds per case, interleaved (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Client threads, each one connection at a time.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Where to write the JSON results (default
        /// $LB_BENCH_DIR/conn-rate.json).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// HTTP/1.1 and HTTPS keep-alive requests/s and p99, and TLS handshakes/s,
    /// through the layer-7 proxy and through HAProxy in the same run.
    Http {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        /// Rounds per proxy, interleaved (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Concurrent client connections (h2load -c).
        #[arg(long, default_value_t = 32)]
        connections: u32,
        /// Worker threads of each proxy.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Where to write the JSON results (default $LB_BENCH_DIR/http.json).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Health checking N targets at a 1 s interval against local listeners:
    /// checker CPU, and the delay from a listener closing to Unhealthy.
    Health {
        #[arg(long, default_value_t = 10_000)]
        targets: usize,
        /// Seconds of steady state over which CPU is measured.
        #[arg(long, default_value_t = 20.0)]
        measure: f64,
        /// Listeners closed to measure the detection delay.
        #[arg(long, default_value_t = 100)]
        kills: usize,
        /// Worker threads of the checker's runtime.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
}

/// `--state-entry`: 64, 32 or 16 bytes.
fn state_entry(s: &str) -> Result<e2e::StateEntry, String> {
    s.parse()
        .ok()
        .and_then(e2e::StateEntry::of_bytes)
        .ok_or_else(|| format!("{s:?} is not 64, 32 or 16 (bytes)"))
}

/// Where a benchmark writes its JSON: `--json`, else `$LB_BENCH_DIR/<file>`,
/// else `target/bench/<file>`.
fn json_path(given: Option<PathBuf>, file: &str) -> PathBuf {
    given.unwrap_or_else(|| {
        std::env::var_os("LB_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target/bench"))
            .join(file)
    })
}

fn write_json(path: &std::path::Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create bench directory");
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    println!("wrote {}", path.display());
}

fn path_json(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map_or("null".into(), |p| json::string(&p.display().to_string()))
}

fn floor_of<'a>(rows: &'a [Row], row: &Row) -> Option<&'a Row> {
    row.floor.and_then(|f| rows.iter().find(|r| r.name == f))
}

fn print_table(rows: &[Row], opts: &Opts) {
    println!(
        "BPF_PROG_TEST_RUN, repeat {}, {} rounds, pinned to CPU {}",
        opts.repeat, opts.rounds, opts.cpu
    );
    if let Some(path) = &opts.against {
        println!(
            "A: $LB_EBPF_OBJECT, B: {} (alternating every round; the floors are shared)",
            path.display()
        );
    }
    if let Some(path) = &opts.reference {
        println!(
            "R: the reference program pinned at {}, in the same rounds (IPv4 cases)",
            path.display()
        );
    }
    println!(
        "{:<40} {:>10} {:>10} {:>14} {:>8}",
        "case", "median ns", "min ns", "above floor", "ratio"
    );
    for r in rows {
        let (above, ratio) = match floor_of(rows, r) {
            Some(f) => (
                format!("{:.1} ns", r.median_ns - f.median_ns),
                format!("{:.2}x", r.median_ns / f.median_ns),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<40} {:>10.1} {:>10.1} {:>14} {:>8}",
            r.name, r.median_ns, r.min_ns, above, ratio
        );
        let others = [("  B", "B/A", &r.against), ("  R", "R/A", &r.reference)];
        for (label, ratio, other) in others {
            if let (Some(b), Some(f)) = (other, floor_of(rows, r)) {
                println!(
                    "{:<40} {:>10.1} {:>10.1} {:>11.1} ns   {ratio} above floor {:.3} (paired rounds {:.3})",
                    label,
                    b.median_ns,
                    b.min_ns,
                    b.median_ns - f.median_ns,
                    (b.median_ns - f.median_ns) / (r.median_ns - f.median_ns),
                    b.paired_ratio
                );
            }
        }
    }
}

fn json(rows: &[Row], cost: &xdp::FlowCost, opts: &Opts) -> String {
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            let above = floor_of(rows, r)
                .map(|f| format!("{:.2}", r.median_ns - f.median_ns))
                .unwrap_or_else(|| "null".into());
            let paired = |key: &str, figures: &Option<xdp::Paired>| match (figures, floor_of(rows, r)) {
                (Some(b), Some(f)) => format!(
                    ", \"{key}\": {{\"median_ns\": {:.2}, \"min_ns\": {:.2}, \"above_floor_ns\": {:.2}, \"paired_ratio\": {:.4}}}",
                    b.median_ns,
                    b.min_ns,
                    b.median_ns - f.median_ns,
                    b.paired_ratio
                ),
                _ => String::new(),
            };
            let others = paired("against", &r.against) + &paired("reference", &r.reference);
            format!(
                "    {{\"case\": \"{}\", \"median_ns\": {:.2}, \"min_ns\": {:.2}, \"floor\": {}, \"above_floor_ns\": {}{}}}",
                r.name,
                r.median_ns,
                r.min_ns,
                r.floor.map(|f| format!("\"{f}\"")).unwrap_or_else(|| "null".into()),
                above,
                others
            )
        })
        .collect();
    format!(
        "{{\n  \"repeat\": {},\n  \"rounds\": {},\n  \"cpu\": {},\n  \"against\": {},\n  \"reference\": {},\n  \"bytes_per_flow\": {},\n  \"cases\": [\n{}\n  ]\n}}\n",
        opts.repeat,
        opts.rounds,
        opts.cpu,
        path_json(&opts.against),
        path_json(&opts.reference),
        cost.bytes_per_flow,
        items.join(",\n")
    )
}

fn control(vips: u32, targets: u32, ring_size: u32, apply_only: bool) {
    let r = apply::run(&apply::ApplyOpts {
        vips,
        targets,
        ring_size,
    });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "apply: {vips} VIPs x {targets} targets, Maglev tables of {ring_size} slots, real kernel maps"
    );
    println!("  {:<44} {:>10.1} ms", "from scratch", ms(r.from_scratch));
    println!(
        "  {:<44} {:>10.1} ms",
        "  baseline: build the tables only",
        ms(r.maglev_build_only)
    );
    println!(
        "  {:<44} {:>10.1} ms",
        "  baseline: write the tables only (mmap)",
        ms(r.ring_write_only)
    );
    println!(
        "  {:<44} {:>10.2}x",
        "  from scratch / (build + write)",
        ms(r.from_scratch) / (ms(r.maglev_build_only) + ms(r.ring_write_only))
    );
    println!(
        "  {:<44} {:>10.3} ms",
        "re-apply unchanged",
        ms(r.reapply_unchanged)
    );
    println!(
        "  {:<44} {:>10.3} ms",
        "one-target change (weight)",
        ms(r.one_target)
    );
    println!(
        "  {:<44} {:>10.3}x",
        "  one-target / (build + write of one table)",
        ms(r.one_target) / ((ms(r.maglev_build_only) + ms(r.ring_write_only)) / vips as f64)
    );
    println!("  {}", r.summary);
    if apply_only {
        return;
    }
    println!();
    match control::health_bench(control::HealthBenchOpts::default()) {
        Ok(report) => report.print(),
        Err(e) => panic!("health benchmark failed: {e:#}"),
    }
}

/// What `cargo xtask bench` sets: the binaries under test and their tools.
const REQUIRED_ENV: [&str; 3] = ["LB_BIN", "LB_EBPF_OBJECT", "LB_TEST_BIN_DIR"];

fn main() {
    let cli = Cli::parse();
    if let Some(missing) = REQUIRED_ENV.iter().find(|v| std::env::var_os(v).is_none()) {
        eprintln!(
            "lb-bench: {missing} is not set; run the benchmarks through `cargo xtask bench <what>`, \
             which builds what they measure and sets {}",
            REQUIRED_ENV.join(", ")
        );
        std::process::exit(2);
    }
    match cli.what {
        What::Control {
            vips,
            targets,
            ring_size,
            apply_only,
        } => control(vips, targets, ring_size, apply_only),
        What::Xdp {
            rounds,
            repeat,
            cpu,
            json: path,
            only,
            against,
            reference,
        } => {
            if let Some(path) = against.as_ref().filter(|p| !p.is_file()) {
                eprintln!("lb-bench xdp: --against {} is not a file", path.display());
                std::process::exit(2);
            }
            if let Some(path) = &reference
                && let Err(e) = xdp::open_reference(path)
            {
                eprintln!(
                    "lb-bench xdp: --reference {}: not a pinned XDP program ({e})",
                    path.display()
                );
                std::process::exit(2);
            }
            let opts = Opts {
                rounds,
                repeat,
                cpu,
                only,
                against,
                reference,
            };
            let (rows, cost) = xdp::run(&opts);
            print_table(&rows, &opts);
            println!(
                "tracked flow: {:.1} B of kernel memory, both directions (one FLOWS entry and its share of a FLOW_META record; memlock of a table of {} entries)",
                cost.bytes_per_flow, cost.capacity
            );
            write_json(&path, &json(&rows, &cost, &opts));
        }
        What::E2e {
            window,
            warmup,
            rounds,
            gen_cpu,
            batch,
            frame_len,
            flows,
            proto,
            state_entry,
            json: path,
        } => {
            if !flows.is_power_of_two() {
                eprintln!("lb-bench e2e: --flows must be a power of two, not {flows}");
                std::process::exit(2);
            }
            let path = json_path(path, "e2e.json");
            let opts = e2e::Opts {
                window: Duration::from_secs_f64(window),
                warmup: Duration::from_secs_f64(warmup),
                rounds,
                gen_cpu,
                batch,
                frame_len,
                flows,
                proto: if proto == "tcp" {
                    e2e::Proto::Tcp
                } else {
                    e2e::Proto::Udp
                },
                state_entry,
            };
            let report = e2e::run(&opts);
            e2e::print(&report, &opts);
            write_json(&path, &e2e::json(&report, &opts));
            e2e::verify(&report);
        }
        What::ConnRate {
            window,
            rounds,
            clients,
            json: path,
        } => {
            let path = json_path(path, "conn-rate.json");
            let opts = conn_rate::Opts {
                window: Duration::from_secs_f64(window),
                rounds,
                clients,
            };
            let report = conn_rate::run(&opts);
            conn_rate::print(&report, &opts);
            write_json(&path, &conn_rate::json(&report, &opts));
        }
        What::Http {
            seconds,
            rounds,
            connections,
            threads,
            json: path,
        } => {
            let path = json_path(path, "http.json");
            let opts = http::Opts {
                seconds,
                rounds,
                connections,
                threads,
            };
            let report = http::run(&opts);
            http::print(&report, &opts);
            write_json(&path, &http::json(&report));
        }
        What::Health {
            targets,
            measure,
            kills,
            workers,
        } => {
            let opts = control::HealthBenchOpts {
                targets,
                measure: Duration::from_secs_f64(measure),
                kills,
                workers,
                ..Default::default()
            };
            match control::health_bench(opts) {
                Ok(report) => report.print(),
                Err(e) => panic!("health benchmark failed: {e:#}"),
            }
        }
    }
}
