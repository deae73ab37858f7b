//! The demo: a client, the load balancer and three targets in network
//! namespaces; `lb run` balances TCP and UDP flows over the targets.
//!
//! `lb-demo --config config/demo.toml --lb target/release/lb` builds the
//! topology (see `lb_tests::topology`), starts a server in each target and
//! `lb run` in the LB namespace, sends connections and flows through the VIP,
//! prints which target got how many and the client address it saw, then the
//! output of `lb stats` and the bpftool commands to inspect the pins, and
//! tears everything down (also on Ctrl-C). `--hold` keeps everything up until
//! Ctrl-C so the commands can be tried.
//!
//! `--scale-out`: three balancer hosts behind an ECMP router instead, one
//! of them taken away while connections stay up (`scale_out`).

mod scale_out;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use lb_tests::client::FlowReport;
use lb_tests::netns;
use lb_tests::proc::{self, LbDaemon};
use lb_tests::topology::{
    self, ConfigSpec, Topology, TopologyOpts, VIP_TCP_PORT, VIP_UDP_PORT, VIP4, VIP6,
};

#[derive(Parser)]
#[command(about = "Load-balance real TCP/UDP traffic over three targets in network namespaces")]
struct Cli {
    /// Config for `lb run`; its interfaces must be lb-c, lb-t1, lb-t2, lb-t3.
    /// Without it a config with TCP 80 and UDP 53 on both VIPs is generated.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The `lb` binary (default: $LB_BIN, else `lb` beside this program).
    #[arg(long)]
    lb: Option<PathBuf>,
    /// Connections and flows to send per protocol and VIP.
    #[arg(long, default_value_t = 30)]
    flows: usize,
    /// Keep everything running until Ctrl-C before tearing down.
    #[arg(long)]
    hold: bool,
    /// Three balancer hosts announcing the VIPs over BGP (BIRD) to an
    /// ECMP router, dsr to three targets; one host is taken away while
    /// connections stay up. Each host's config is generated (no --config).
    #[arg(long, conflicts_with = "config")]
    scale_out: bool,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn check_interrupt() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let result = if cli.scale_out {
        lb_path(&cli).and_then(|lb| {
            // SAFETY: set before any thread starts; the lab's helpers read
            // the `lb` binary from LB_BIN.
            unsafe { std::env::set_var("LB_BIN", &lb) };
            scale_out::run(cli.flows, cli.hold, interrupted)
        })
    } else {
        demo(&cli)
    };
    // Every guard has been dropped here: namespaces, daemon, bpffs.
    match result {
        Ok(()) => {
            println!("\nTorn down: namespaces deleted, program detached, bpffs unmounted.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lb-demo: {e:#}");
            eprintln!("Torn down.");
            ExitCode::FAILURE
        }
    }
}

fn lb_path(cli: &Cli) -> Result<PathBuf> {
    let path = match (&cli.lb, std::env::var_os("LB_BIN")) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => PathBuf::from(p),
        (None, None) => std::env::current_exe()?.with_file_name("lb"),
    };
    ensure!(
        path.is_file(),
        "lb binary {} not found (build with `cargo xtask build`, or pass --lb)",
        path.display()
    );
    Ok(std::fs::canonicalize(&path)?)
}

/// `key = "value"` or `key = [..]` on one line of the `[daemon]` table.
fn toml_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix(key))
        .map(str::trim_start)
        .find_map(|l| l.strip_prefix('='))
        .map(|v| v.split('#').next().unwrap_or("").trim())
}

fn unquote(v: &str) -> &str {
    v.trim().trim_matches('"')
}

/// The demo's config: the given file (checked against the topology), or one
/// generated into a temporary directory.
struct DemoConfig {
    path: PathBuf,
    pin_dir: PathBuf,
    text: String,
}

fn load_config(cli: &Cli) -> Result<Option<DemoConfig>> {
    let Some(path) = &cli.config else {
        return Ok(None);
    };
    let path = std::fs::canonicalize(path).with_context(|| format!("config {}", path.display()))?;
    let text = std::fs::read_to_string(&path)?;
    let pin_dir = toml_value(&text, "pin_dir")
        .map(|v| PathBuf::from(unquote(v)))
        .with_context(|| format!("{}: no [daemon] pin_dir", path.display()))?;
    ensure!(
        !pin_dir.starts_with("/sys"),
        "{}: pin_dir {} is under /sys, which `ip netns exec` remounts: pins there vanish \
         between commands; use a directory under /run",
        path.display(),
        pin_dir.display()
    );
    let ifaces: Vec<String> = toml_value(&text, "interfaces")
        .with_context(|| format!("{}: no [daemon] interfaces", path.display()))?
        .trim_matches(['[', ']'])
        .split(',')
        .map(|s| unquote(s).to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let want: Vec<String> = std::iter::once(topology::LB_CLIENT_IF.to_owned())
        .chain((1..=3).map(topology::lb_target_if))
        .collect();
    ensure!(
        ifaces == want,
        "{}: interfaces {ifaces:?} do not match the demo topology's {want:?}",
        path.display()
    );
    Ok(Some(DemoConfig {
        path,
        pin_dir,
        text,
    }))
}

fn demo(cli: &Cli) -> Result<()> {
    netns::require_root();
    let lb = lb_path(cli)?;
    let server = std::env::current_exe()?.with_file_name("lb-test-server");
    ensure!(
        server.is_file(),
        "{} not found (cargo build --release -p lb-tests --bins)",
        server.display()
    );
    let given = load_config(cli)?;

    println!("Building the topology: client, lb, t1..t3 network namespaces");
    let mut topo = Topology::new(
        "demo",
        TopologyOpts {
            targets: 3,
            run_dir: None,
            bpffs: given.as_ref().map(|c| c.pin_dir.clone()),
        },
    );
    let config = match given {
        Some(c) => c,
        None => {
            let spec = ConfigSpec::standard(topo.lb_interfaces(), &topo.pin_dir(), &[1, 2, 3]);
            let path = topo.write_config(&spec);
            DemoConfig {
                path,
                pin_dir: topo.pin_dir(),
                text: spec.render(),
            }
        }
    };
    print_topology(&topo, &config);
    check_interrupt()?;

    topo.start_servers(&server);
    println!("Servers t1..t3 listen on TCP 8080 and UDP 5353 (dual-stack).");
    check_interrupt()?;

    println!("Starting: lb run --config {}", config.path.display());
    let daemon = LbDaemon::start_with(&lb, topo.lb.name(), &config.path);
    check_interrupt()?;
    wait_for_first_checks(&lb, topo.lb.name(), &config.path);
    check_interrupt()?;

    let mut vips = vec![("tcp", SocketAddr::new(VIP4.into(), VIP_TCP_PORT))];
    vips.push(("udp", SocketAddr::new(VIP4.into(), VIP_UDP_PORT)));
    if config.text.contains(&VIP6.to_string()) {
        vips.push(("tcp", SocketAddr::new(VIP6.into(), VIP_TCP_PORT)));
        vips.push(("udp", SocketAddr::new(VIP6.into(), VIP_UDP_PORT)));
    }
    let mut failed = Vec::new();
    for (proto, vip) in vips {
        check_interrupt()?;
        let run = topo.run_clients(&server, proto, vip, cli.flows);
        print_table(proto, vip, &run.flows);
        if !run.all_ok() {
            println!("  FAILED: {}", run.describe_failure());
            failed.push(run.label);
        }
    }
    check_interrupt()?;

    // Counters from the pins, then the daemon's view through its API.
    for args in [
        vec!["stats"],
        vec!["status"],
        vec!["listeners"],
        vec!["targets", "web"],
        vec!["targets", "dns"],
        vec!["flows", "--limit", "5"],
    ] {
        println!(
            "\n$ lb {} --config {}",
            args.join(" "),
            config.path.display()
        );
        let mut all: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        all.extend(["--config".as_ref(), config.path.as_os_str()]);
        let out = proc::lb_cmd(&lb, topo.lb.name(), &all);
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }

    print_bpftool(&config.pin_dir);

    if cli.hold {
        println!("\nEverything stays up; press Ctrl-C to tear down.");
        while !interrupted() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!("\nTearing down: lb run (SIGTERM), lb down, namespaces, bpffs.");
    drop(daemon);
    drop(topo);
    ensure!(failed.is_empty(), "flows failed: {}", failed.join("; "));
    Ok(())
}

fn print_topology(topo: &Topology, config: &DemoConfig) {
    println!(
        "  client  netns {}  10.200.1.2  fd00:200:1::2",
        topo.client.name()
    );
    println!(
        "  lb      netns {}  interfaces {:?}",
        topo.lb.name(),
        topo.lb_interfaces()
    );
    for (i, t) in topo.targets.iter().enumerate() {
        println!(
            "  t{}      netns {}  {}  {}",
            i + 1,
            t.name(),
            topology::target4(i + 1),
            topology::target6(i + 1)
        );
    }
    println!(
        "  VIPs {VIP4} and {VIP6}; pins in {}",
        config.pin_dir.display()
    );
}

fn print_table(proto: &str, vip: SocketAddr, flows: &[FlowReport]) {
    println!(
        "\n{} {vip}: {} {}",
        proto.to_uppercase(),
        flows.len(),
        if proto == "tcp" {
            "connections"
        } else {
            "flows"
        }
    );
    println!(
        "  {:<8} {:>6}  client addresses the target saw",
        "target", "flows"
    );
    let mut by_target: BTreeMap<&str, Vec<&FlowReport>> = BTreeMap::new();
    for f in flows {
        by_target.entry(&f.target).or_default().push(f);
    }
    for (target, fs) in by_target {
        let mut ips: BTreeMap<String, usize> = BTreeMap::new();
        for f in &fs {
            *ips.entry(f.seen.ip().to_string()).or_default() += 1;
        }
        let ips: Vec<String> = ips.iter().map(|(ip, n)| format!("{ip} x{n}")).collect();
        let ports_kept = fs.iter().all(|f| f.seen == f.local);
        println!(
            "  {target:<8} {:>6}  {}{}",
            fs.len(),
            ips.join(", "),
            if ports_kept {
                " (source ports preserved)"
            } else {
                " (SOURCE PORTS CHANGED)"
            }
        );
    }
}

/// Waits (at most 10 s) until the first health checks have decided every
/// target, so the tables below show healthy targets rather than `initial`.
fn wait_for_first_checks(lb: &Path, ns: &str, config: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let pending = ["web", "dns"].iter().any(|group| {
            let out = proc::lb_cmd(
                lb,
                ns,
                &[
                    "targets".as_ref(),
                    group.as_ref(),
                    "--config".as_ref(),
                    config.as_os_str(),
                ],
            );
            !out.status.success() || String::from_utf8_lossy(&out.stdout).contains("initial")
        });
        if !pending {
            println!("Health checks: every target decided.");
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("Health checks: some targets are still initial after 10 s.");
}

fn print_bpftool(pin_dir: &Path) {
    println!(
        "\nInspect what lb holds in the kernel (pins in {}):",
        pin_dir.display()
    );
    let mut entries: Vec<PathBuf> = Vec::new();
    let mut stack = vec![pin_dir.to_owned()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "debug") {
                    // The kernel's maps.debug/progs.debug at a bpffs root.
                    continue;
                }
                if p.is_dir() {
                    stack.push(p);
                } else {
                    entries.push(p);
                }
            }
        }
    }
    entries.sort();
    for p in entries {
        let show = |kind: &str| {
            netns::try_run("bpftool", [kind, "show", "pinned", &p.to_string_lossy()])
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        let shown = |kind: &str| show(kind).is_some();
        if let Some(info) = show("map") {
            if is_big_array(&info) {
                // A Maglev ring array: millions of slots, dump one instead.
                println!("  bpftool map show pinned {}", p.display());
                println!("  bpftool map lookup pinned {} key 0 0 0 0", p.display());
            } else {
                println!("  bpftool map dump pinned {}", p.display());
            }
        } else if shown("prog") {
            println!("  bpftool prog show pinned {}", p.display());
        } else if shown("link") {
            println!("  bpftool link show pinned {}", p.display());
        } else {
            println!("  {} (not a map, program or link)", p.display());
        }
    }
    println!("  bpftool prog show name lb_xdp");
    println!(
        "  bpftool net show   (inside the lb netns: ip netns exec <lb netns> bpftool net show)"
    );
}

/// Whether `bpftool map show` describes an array too large to dump usefully.
fn is_big_array(info: &str) -> bool {
    let mut words = info.split_whitespace();
    let is_array = info.split_whitespace().nth(1) == Some("array");
    let entries = words
        .by_ref()
        .skip_while(|w| *w != "max_entries")
        .nth(1)
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    is_array && entries > 4096
}
