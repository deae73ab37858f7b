//! `lb-soak` (`cargo xtask soak`): TCP, UDP, HTTP/1.1, HTTP/2 and WebSocket
//! traffic through `lb run` for minutes while it is reloaded, targets are
//! deregistered, killed, restarted and registered again, and the daemon is
//! restarted on its pins; every answer is checked and counted, and the
//! daemon's memory and descriptors are compared within each `lb run`.
//! Prints what failed, which must be nothing, and exits 1 otherwise. The
//! last line, `soak-result: {json}`, is what the smoke test reads.
mod conductor;
mod lab;
mod report;
mod traffic;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use clap::Parser;

use crate::conductor::Plan;
use crate::traffic::{Mix, Shared};

#[derive(Parser)]
#[command(about = "Soak test of lb run (run through `cargo xtask soak`)")]
struct Cli {
    /// Length of the run, seconds (overrides --minutes).
    #[arg(long)]
    seconds: Option<u64>,
    /// Length of the run, minutes.
    #[arg(long, default_value_t = 5)]
    minutes: u64,
    /// Reloads over the run, alternately by SIGHUP and through the API.
    #[arg(long, default_value_t = 100)]
    reloads: usize,
    /// Daemon restarts (SIGTERM, then a new `lb run` on the same pins).
    #[arg(long, default_value_t = 3)]
    restarts: usize,
    /// Seconds of traffic before the first sample (and after a restart).
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    /// Seconds between one target cycle's end and the next one's start.
    #[arg(long, default_value_t = 5)]
    cycle_gap: u64,
    /// deregistration_delay of every group, seconds.
    #[arg(long, default_value_t = 3)]
    drain: u32,
    /// keep_alive_timeout of the http group, seconds: samples wait this
    /// long for the pool to empty.
    #[arg(long, default_value_t = 3)]
    keep_alive: u32,
    /// Clients of each kind.
    #[arg(long, default_value_t = 6)]
    tcp: usize,
    #[arg(long, default_value_t = 6)]
    udp: usize,
    #[arg(long, default_value_t = 4)]
    http1: usize,
    #[arg(long, default_value_t = 2)]
    http2: usize,
    #[arg(long, default_value_t = 2)]
    websocket: usize,
    /// Growth of the daemon's RSS allowed within one `lb run`, KiB.
    #[arg(long, default_value_t = 16 * 1024)]
    rss_growth_kib: u64,
    /// Growth allowed within one `lb run` of its open descriptors other
    /// than target connections (which must all have aged out).
    #[arg(long, default_value_t = 0)]
    fd_growth: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let run = Duration::from_secs(cli.seconds.unwrap_or(cli.minutes * 60));
    let mix = Mix {
        tcp: cli.tcp,
        udp: cli.udp,
        http1: cli.http1,
        http2: cli.http2,
        websocket: cli.websocket,
    };
    let plan = Plan {
        run,
        warmup: Duration::from_secs(cli.warmup),
        reloads: cli.reloads,
        restarts: cli.restarts,
        cycle_gap: Duration::from_secs(cli.cycle_gap),
        drain_within: Duration::from_secs(u64::from(cli.drain) + 20),
        parkers: traffic::userspace_clients(mix),
        keep_alive: Duration::from_secs(u64::from(cli.keep_alive)),
    };
    eprintln!("soak: building the lab and starting lb run");
    let mut lab = lab::SoakLab::new(cli.drain, cli.keep_alive);
    if let Err(e) = lab.wait_healthy(Duration::from_secs(30)) {
        eprintln!(
            "soak: the lab did not come up: {e}\n{}",
            lab.daemon_output()
        );
        return ExitCode::FAILURE;
    }
    let shared = Shared::new(lab.endpoints());
    let clients = start_clients(lab.topo.client.name(), &shared, mix);
    eprintln!("soak: traffic running; {plan:?}");
    let done = conductor::conduct(&mut lab, &shared, plan);
    shared.stop();
    if clients.join().is_err() {
        eprintln!("soak: a client panicked");
        return ExitCode::FAILURE;
    }
    let limits = report::Limits {
        rss_growth_kib: cli.rss_growth_kib,
        fd_growth: cli.fd_growth,
    };
    let ok = report::print(&shared.tally, &done, limits, run);
    if !ok {
        eprintln!("--- lb run's log ---\n{}", lab.daemon_output());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The clients on a runtime whose threads are in the client namespace
/// (threads inherit the namespace of the thread that makes them); they
/// run until [`Shared::stop`], then end their connections cleanly.
fn start_clients(ns: &str, shared: &Arc<Shared>, mix: Mix) -> thread::JoinHandle<()> {
    let path = format!("/run/netns/{ns}");
    let shared = Arc::clone(shared);
    thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns on a valid descriptor; only this thread (and the
        // ones it makes) move.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("the clients' runtime");
        rt.block_on(async {
            for t in traffic::start(&shared, mix) {
                if let Err(e) = t.await {
                    shared
                        .tally
                        .fail(traffic::Kind::Tcp, format!("a client task died: {e}"));
                }
            }
        });
    })
}
