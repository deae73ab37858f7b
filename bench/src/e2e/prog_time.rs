//! The forwarder's own time per packet: the run time the kernel accounts to
//! the XDP program on the LB's client-facing veth, over a short window with
//! the kernel's BPF run-time statistics on.
//!
//! The pps of a case is the whole chain's (generator, veths, forwarder,
//! sinks, all on one CPU), and it swings with the machine. The program's
//! own time isolates the forwarder, up to its return (the redirect's flush
//! and the peers' NAPI polls come after). The statistics are enabled
//! through a `BPF_ENABLE_STATS` descriptor held for that window only: while
//! they are on, every program run on the machine pays two clock reads,
//! which would slow the pps window, and closing the descriptor turns them
//! off even if the benchmark dies. The time includes part of those clock
//! reads, so compare cases with one another, not with `bench xdp`.
//!
//! The counts are the program's: `lb run` attaches one `lb_xdp` to every
//! LB interface, so its runs on the target-facing veths count too. Here
//! those see next to nothing (the sinks answer no frame), against millions
//! of frames from the client.
use std::thread;
use std::time::Duration;

use aya::programs::loaded_programs;
use aya::sys::{Stats, enable_stats};
use lb_tests::netns::Netns;

/// How long the program's time is measured, after each pps window.
pub const WINDOW: Duration = Duration::from_secs(1);

/// The id of the XDP program attached to `dev` in `ns` (from `ip -o link`:
/// `prog/xdp id N`, driver or generic mode).
fn xdp_prog_id(ns: &Netns, dev: &str) -> u32 {
    let out = ns.ip(&["-o", "link", "show", "dev", dev]);
    let out = String::from_utf8_lossy(&out.stdout);
    out.split("prog/xdp id ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no XDP program on {dev} in {}: {out}", ns.name()))
}

/// Run time and run count of program `id` so far.
fn run_stats(id: u32) -> (Duration, u64) {
    let info = loaded_programs()
        .map(|p| p.unwrap_or_else(|e| panic!("listing BPF programs: {e}")))
        .find(|p| p.id() == id)
        .unwrap_or_else(|| panic!("BPF program {id} is gone"));
    (info.run_time(), info.run_count())
}

/// Mean ns per run of the XDP program on `dev` in `ns` over [`WINDOW`],
/// with the statistics on for that window only. `None` (and a warning)
/// when this kernel cannot turn them on; panics when no program is
/// attached or it did not run, since the case's traffic goes through it.
pub fn ns_per_run(ns: &Netns, dev: &str) -> Option<f64> {
    let id = xdp_prog_id(ns, dev);
    let _on = enable_stats(Stats::RunTime)
        .inspect_err(|e| eprintln!("warning: BPF run-time statistics unavailable: {e}"))
        .ok()?;
    let (t0, n0) = run_stats(id);
    thread::sleep(WINDOW);
    let (t1, n1) = run_stats(id);
    let runs = n1 - n0;
    assert!(
        runs > 0,
        "the XDP program on {dev} did not run in {WINDOW:?}"
    );
    Some((t1 - t0).as_nanos() as f64 / runs as f64)
}

/// Whether the statistics are on machine-wide already (`sysctl
/// kernel.bpf_stats_enabled`): then every pps window pays their clock
/// reads too.
pub fn always_on() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() != "0")
}
