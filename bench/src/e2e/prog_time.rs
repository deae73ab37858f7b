//! The forwarder's own time per packet: the run time the kernel accounts to
//! the XDP program on the LB's client-facing veth, over a short window with
//! the kernel's BPF run-time statistics on.
//!
//! The pps of a case is the whole chain's (generator, veths, forwarder,
//! sinks, all on one CPU), and it swings with the machine. The program's
//! own time isolates the forwarder. The statistics are enabled through a
//! `BPF_ENABLE_STATS` descriptor held for that window only: while they are
//! on, every program run on the machine pays two clock reads, which would
//! slow the pps window, and closing the descriptor turns them off even if
//! the benchmark dies. The time includes part of those clock reads, so
//! compare cases with one another, not with `bench xdp`.
use std::thread;
use std::time::Duration;

use aya::programs::loaded_programs;
use aya::sys::{Stats, enable_stats};
use lb_tests::netns::Netns;

/// The id of the XDP program attached to `dev` in `ns`, if any (from `ip -o
/// link`: `prog/xdp id N`).
fn xdp_prog_id(ns: &Netns, dev: &str) -> Option<u32> {
    let out = ns.ip(&["-o", "link", "show", "dev", dev]);
    let out = String::from_utf8_lossy(&out.stdout);
    let rest = out.split("prog/xdp id ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Run time and run count of program `id` so far.
fn run_stats(id: u32) -> Option<(Duration, u64)> {
    loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .map(|p| (p.run_time(), p.run_count()))
}

/// Mean ns per run of the XDP program on `dev` in `ns` over `window`, with
/// the statistics on for that window only; `None` if no XDP program is
/// attached there (the kernel path) or it did not run.
pub fn ns_per_run(ns: &Netns, dev: &str, window: Duration) -> Option<f64> {
    let id = xdp_prog_id(ns, dev)?;
    let _on = enable_stats(Stats::RunTime)
        .unwrap_or_else(|e| panic!("enabling BPF run-time statistics: {e}"));
    let (t0, n0) = run_stats(id)?;
    thread::sleep(window);
    let (t1, n1) = run_stats(id)?;
    let runs = n1.checked_sub(n0).filter(|&n| n > 0)?;
    Some(t1.checked_sub(t0)?.as_nanos() as f64 / runs as f64)
}
