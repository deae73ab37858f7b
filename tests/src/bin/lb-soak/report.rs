//! The soak's figures: what each kind of client sent and got, what was
//! done to the load balancer, the daemon's usage, and every failure.
use std::collections::BTreeMap;
use std::time::Duration;

use crate::conductor::{Done, Sample};
use crate::traffic::{Kind, Tally};

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub rss_growth_kib: u64,
    pub fd_growth: usize,
}

/// Prints the report; true when nothing failed.
pub fn print(tally: &Tally, done: &Done, limits: Limits, run: Duration) -> bool {
    println!("\n=== soak of lb run: {:.0} s ===", run.as_secs_f64());
    println!(
        "{:<10} {:>12} {:>12} {:>10} {:>14} {:>14} {:>8}",
        "traffic", "exchanges", "unit", "conns", "bytes sent", "bytes recv", "failed"
    );
    let mut failed = 0;
    let mut silent = Vec::new();
    let mut json_kinds = Vec::new();
    for kind in Kind::ALL {
        let c = tally.count(kind);
        println!(
            "{:<10} {:>12} {:>12} {:>10} {:>14} {:>14} {:>8}",
            kind.name(),
            c.ok,
            kind.unit(),
            c.connections,
            c.sent,
            c.received,
            c.failed
        );
        failed += c.failed;
        if c.ok == 0 {
            silent.push(kind.name());
        }
        json_kinds.push(format!(
            "\"{}\":{{\"ok\":{},\"connections\":{},\"sent\":{},\"received\":{},\"failed\":{}}}",
            kind.name(),
            c.ok,
            c.connections,
            c.sent,
            c.received,
            c.failed
        ));
    }
    println!(
        "reloads: {} ({} by SIGHUP, {} through the API); daemon restarts: {}; target cycles \
         (deregister, drain, kill, restart, register): {}; API registrations {}, \
         deregistrations {} (each in 3 groups)",
        done.reloads_signal + done.reloads_api,
        done.reloads_signal,
        done.reloads_api,
        done.restarts,
        done.target_cycles,
        done.registrations,
        done.deregistrations
    );
    println!(
        "lb run's usage, sampled with its own listeners' clients parked and its pool aged out:"
    );
    for s in &done.samples {
        println!(
            "  #{} {:>6.0} s {:<14} RSS {:>8} KiB  fds {:>4} (to targets {})",
            s.incarnation,
            s.at.as_secs_f64(),
            s.label,
            s.usage.rss_kib,
            s.usage.fds,
            s.usage.target_conns
        );
    }
    let growth = growth(&done.samples, limits);
    for line in &growth.lines {
        println!("  {line}");
    }
    for e in &done.errors {
        println!("conductor: {e}");
    }
    let described = tally.failures();
    if !described.is_empty() {
        println!("failures (first {}):", described.len());
        for f in &described {
            println!("  {f}");
        }
    }
    if !silent.is_empty() {
        println!("no exchange at all: {}", silent.join(", "));
    }
    let ok = failed == 0 && done.errors.is_empty() && silent.is_empty() && growth.within;
    println!("failed: {failed}; conductor errors: {}", done.errors.len());
    println!(
        "soak-result: {{\"seconds\":{},\"failed\":{failed},\"conductor_errors\":{},\
         \"reloads\":{},\"restarts\":{},\"target_cycles\":{},\"registrations\":{},\
         \"deregistrations\":{},\"usage_within_limits\":{},\"kinds\":{{{}}}}}",
        run.as_secs(),
        done.errors.len(),
        done.reloads_signal + done.reloads_api,
        done.restarts,
        done.target_cycles,
        done.registrations,
        done.deregistrations,
        growth.within,
        json_kinds.join(",")
    );
    ok
}

struct Growth {
    lines: Vec<String>,
    within: bool,
}

/// Per `lb run`, its last sample against its first.
fn growth(samples: &[Sample], limits: Limits) -> Growth {
    let mut by_run: BTreeMap<usize, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        by_run.entry(s.incarnation).or_default().push(s);
    }
    let mut out = Growth {
        lines: Vec::new(),
        within: true,
    };
    for (run, s) in by_run {
        let (first, last) = (s[0].usage, s[s.len() - 1].usage);
        let rss = last.rss_kib as i64 - first.rss_kib as i64;
        let fds = last.own_fds() as i64 - first.own_fds() as i64;
        // Idle target connections outlive keep_alive_timeout: leaked.
        let left = s.iter().map(|s| s.usage.target_conns).max().unwrap_or(0);
        let ok = rss <= limits.rss_growth_kib as i64 && fds <= limits.fd_growth as i64 && left == 0;
        out.within &= ok;
        out.lines.push(format!(
            "lb run #{run}: RSS {:+} KiB, fds other than target connections {:+} over {:.0} s \
             (allowed +{} KiB, +{}); target connections left after keep-alive: {left}{}",
            rss,
            fds,
            (s[s.len() - 1].at - s[0].at).as_secs_f64(),
            limits.rss_growth_kib,
            limits.fd_growth,
            if ok { "" } else { "  EXCEEDED" }
        ));
    }
    out
}
