//! The report of a run: the table printed, the checks of the `lb` proof,
//! and the JSON written.
use lb_tests::proc;
use lb_tests::topology::{LB_CLIENT_IF, VIP4};

use super::cpu::CpuTime;
use super::lab::TARGETS;
use super::prog_time;
use super::result::{CaseResult, Report};
use super::{Opts, Proto};

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
        "traffic: {} B IPv4 {} frames to {VIP4}:{}, {} flows (source ports{}){}; spread-state reads {} B per flow",
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
        },
        opts.state_entry.bytes()
    );
    println!("generator: {}", generator_desc(opts));
    println!("CPUs: {}", cpu_desc(opts));
    println!(
        "sink: bench_sink (XDP count + drop) on every target veth (dsr: the encapsulated frames, as they arrive); window {:?} after {:?} warm-up (and at least two laps of the flows), {} interleaved rounds, median",
        opts.window, opts.warmup, opts.rounds
    );
    println!();
    println!(
        "{:<13} {:>13} {:>11} {:>6} {:>8} {:>23} {:>13}  forwarder",
        "case", "delivered pps", "sent pps", "lost", "ns/pkt", "above floor", "target shares"
    );
    for r in &report.cases {
        let (d, s) = (r.delivered_median(), r.sent_median());
        let shares: Vec<String> = r
            .target_shares()
            .iter()
            .map(|x| format!("{:.0}", x * 100.0))
            .collect();
        let above = match (r.case.floor(), report.above_floor_ns(r.case)) {
            (Some(f), Some(ns)) => format!("{ns:+.0} ns ({})", f.name()),
            (Some(_), None) => "n/a".to_owned(),
            (None, _) => "floor".to_owned(),
        };
        println!(
            "{:<13} {:>13.0} {:>11.0} {:>5.1}% {:>8} {:>23} {:>13}  {}",
            r.case.name(),
            d,
            s,
            if s > 0.0 { (1.0 - d / s) * 100.0 } else { 0.0 },
            r.ns_per_packet()
                .map_or("-".to_owned(), |ns| format!("{ns:.0}")),
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
            "{:<13} rounds: {} pps; {}; veth ring drops {}",
            r.case.name(),
            rounds.join(", "),
            cpu_summary(&r.cpu()),
            r.veth_drops()
        );
    }
    println!();
    println!(
        "the forwarder's XDP program alone, to its return (kernel BPF run-time statistics on for {:?} after each window; they add clock reads, so compare rows with each other only):",
        prog_time::WINDOW
    );
    for r in &report.cases {
        let Some(ns) = r.prog_ns() else {
            continue;
        };
        let above = match (r.case.floor(), report.prog_above_floor_ns(r.case)) {
            (Some(f), Some(a)) => format!("{a:+.0} ns ({})", f.name()),
            (Some(_), None) => "n/a".to_owned(),
            (None, _) => "floor".to_owned(),
        };
        println!("{:<13} {:>6.0} ns/pkt {:>23}", r.case.name(), ns, above);
    }
    println!();
    for (case, baseline) in Report::RATIOS {
        match report.ratio(case, baseline) {
            Some(x) => println!(
                "{} / {}: {x:.2}x the packets per second",
                case.name(),
                baseline.name()
            ),
            None => println!(
                "{} / {}: n/a ({} delivered nothing)",
                case.name(),
                baseline.name(),
                baseline.name()
            ),
        }
    }
    for r in report.cases.iter().filter(|r| r.case.is_lb()) {
        let p = &r.proof;
        println!(
            "lb stats over the {} rounds: forwarded +{}, sinks received +{}, generator sent {}",
            r.case.name(),
            p.forwarded,
            p.delivered,
            p.sent
        );
        if !p.other.is_empty() {
            let other: Vec<String> = p.other.iter().map(|(n, v)| format!("{n} +{v}")).collect();
            println!("  other data-path counters moved: {}", other.join(", "));
        }
        if proc::verbose() {
            println!(
                "lb stats after the last {} round:\n{}",
                r.case.name(),
                p.last_stats.trim_end()
            );
        }
        if r.target_shares()
            .iter()
            .any(|s| (s - 1.0 / TARGETS as f64).abs() > 0.05)
        {
            println!(
                "note: {}'s target shares are far from 1/{TARGETS} each (Maglev over equal weights should be within 1%)",
                r.case.name()
            );
        }
    }
    println!("elapsed {:.1?}", c.elapsed);
}

/// Frames the sinks may count that the LB did not forward: the LB
/// namespace's own IPv6 neighbour and router traffic toward the targets,
/// the daemon's health probes.
const SINK_SLACK: u64 = 1000;

/// Checks that the numbers of each `lb` case are the daemon's forwarding:
/// `forwarded` accounts for what the sinks received and no drop counter
/// moved. Panics otherwise (after the results are written).
pub fn verify(report: &Report) {
    for r in report.cases.iter().filter(|r| r.case.is_lb()) {
        let (p, name) = (&r.proof, r.case.name());
        assert!(
            p.forwarded > 0 && p.forwarded + SINK_SLACK >= p.delivered,
            "{name}: lb stats forwarded +{} does not account for the {} packets the sinks received",
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
            "the {name} rounds dropped packets in the XDP program ({}), so its pps is not all forwarding work\nlb stats after its last round:\n{}",
            drops.join(", "),
            p.last_stats
        );
    }
}

fn json_f64s(v: impl Iterator<Item = f64>) -> String {
    v.map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(", ")
}

/// A number with one decimal, or `null`.
fn json_opt(v: Option<f64>) -> String {
    v.map_or("null".to_owned(), |x| format!("{x:.1}"))
}

fn json_proof(r: &CaseResult) -> String {
    if !r.case.is_lb() {
        return "null".to_owned();
    }
    let p = &r.proof;
    let other: Vec<String> = p
        .other
        .iter()
        .map(|(n, v)| format!("{}: {v}", crate::json::string(n)))
        .collect();
    format!(
        "{{\"forwarded\": {}, \"sinks_received\": {}, \"generator_sent\": {}, \"other\": {{{}}}}}",
        p.forwarded,
        p.delivered,
        p.sent,
        other.join(", ")
    )
}

fn json_case(report: &Report, r: &CaseResult) -> String {
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
        "    {{\"case\": {}, \"forwarder\": {}, \"delivered_pps_median\": {:.1}, \"sent_pps_median\": {:.1}, \"ns_per_packet\": {}, \"floor\": {}, \"above_floor_ns\": {}, \"prog_ns_per_packet\": {}, \"prog_above_floor_ns\": {}, \"delivered_pps\": [{}], \"sent_pps\": [{}], \"target_shares\": [{}], \"cpu\": [{}], \"veth_drops\": {}, \"lb_stats\": {}}}",
        crate::json::string(r.case.name()),
        crate::json::string(r.case.describe()),
        r.delivered_median(),
        r.sent_median(),
        json_opt(r.ns_per_packet()),
        r.case
            .floor()
            .map_or("null".to_owned(), |f| crate::json::string(f.name())),
        json_opt(report.above_floor_ns(r.case)),
        json_opt(r.prog_ns()),
        json_opt(report.prog_above_floor_ns(r.case)),
        json_f64s(r.samples.iter().map(|s| s.delivered_pps)),
        json_f64s(r.samples.iter().map(|s| s.sent_pps)),
        r.target_shares()
            .iter()
            .map(|x| format!("{x:.4}"))
            .collect::<Vec<_>>()
            .join(", "),
        cpu.join(", "),
        r.veth_drops(),
        json_proof(r)
    )
}

pub fn json(report: &Report, opts: &Opts) -> String {
    let c = &report.conditions;
    let cases: Vec<String> = report.cases.iter().map(|r| json_case(report, r)).collect();
    let ratios: Vec<String> = Report::RATIOS
        .iter()
        .map(|&(case, baseline)| {
            format!(
                "{}: {}",
                crate::json::string(&format!("{}/{}", case.name(), baseline.name())),
                report
                    .ratio(case, baseline)
                    .map_or("null".to_owned(), |x| format!("{x:.3}"))
            )
        })
        .collect();
    format!(
        "{{\n  \"conditions\": {{\"kernel\": {}, \"cpus\": {}, \"loadavg_before\": {}, \"loadavg_after\": {}, \"generator\": {}, \"cpu_placement\": {}, \"frame_len\": {}, \"proto\": \"{}\", \"flows\": {}, \"state_entry_bytes\": {}, \"window_s\": {}, \"warmup_s\": {}, \"rounds\": {}, \"elapsed_s\": {:.1}}},\n  \"cases\": [\n{}\n  ],\n  \"ratios\": {{{}}}\n}}\n",
        crate::json::string(&c.kernel),
        c.cpus,
        crate::json::string(&c.loadavg_before),
        crate::json::string(&c.loadavg_after),
        crate::json::string(&generator_desc(opts)),
        crate::json::string(&cpu_desc(opts)),
        opts.frame_len,
        opts.proto.name(),
        opts.flows,
        opts.state_entry.bytes(),
        opts.window.as_secs_f64(),
        opts.warmup.as_secs_f64(),
        opts.rounds,
        c.elapsed.as_secs_f64(),
        cases.join(",\n"),
        ratios.join(", ")
    )
}
