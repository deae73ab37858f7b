//! Control-plane benchmarks (`cargo xtask bench control`).
//!
//! [`health_bench`]: health checking N targets (TCP, 1 s interval) against
//! local listeners. Reports the CPU time of the checker's threads per
//! second of wall time, and the delay from a target's listener closing to
//! its `Unhealthy` event (the moment the control loop can update the maps).
//! Listeners run on a runtime of their own so their accept work is not
//! counted as the checker's; the kernel's loopback handshake work is charged
//! to the thread that connects, i.e. to the checker, as it would be in
//! production.
use std::{
    collections::HashMap,
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use lb::{
    config::{CheckAddress, CheckKind, CheckPort, HealthCheck},
    health::{Checker, HealthMetrics, ProbeJob, Route, Verdict},
};
use tokio::{runtime::Runtime, task::JoinHandle};

/// Thread name of the checker's runtime (at most 15 bytes: `comm`).
const CHECKER_THREADS: &str = "lb-health";
const LISTENER_THREADS: &str = "bench-listen";

#[derive(Clone, Debug)]
pub struct HealthBenchOpts {
    /// Targets (listening sockets), spread over 127.200.0.0/16 addresses,
    /// 100 ports each.
    pub targets: usize,
    /// Check interval, seconds (timeout = interval, thresholds 2).
    pub interval_s: u64,
    /// Wall time over which CPU is measured, after every target is healthy.
    pub measure: Duration,
    /// Listeners closed one after another to measure the detection delay.
    pub kills: usize,
    /// Worker threads of the checker's runtime.
    pub workers: usize,
}

impl Default for HealthBenchOpts {
    fn default() -> Self {
        HealthBenchOpts {
            targets: 10_000,
            interval_s: 1,
            measure: Duration::from_secs(20),
            kills: 100,
            workers: 2,
        }
    }
}

#[derive(Clone, Debug)]
pub struct HealthBenchReport {
    pub opts: HealthBenchOpts,
    /// Time from starting the jobs until every target was healthy.
    pub all_healthy_after: Duration,
    /// Checker CPU seconds (user + system) over the measured window.
    pub checker_cpu: Duration,
    /// Listener-side CPU over the same window, for context.
    pub listener_cpu: Duration,
    pub wall: Duration,
    /// Probes completed in the window.
    pub probes: u64,
    /// Close-to-`Unhealthy` delays, sorted.
    pub kill_delays: Vec<Duration>,
}

impl HealthBenchReport {
    /// Cores the checker used on average.
    pub fn checker_cores(&self) -> f64 {
        self.checker_cpu.as_secs_f64() / self.wall.as_secs_f64()
    }

    /// The `q` quantile (0..=1) of the kill delays.
    pub fn delay_quantile(&self, q: f64) -> Duration {
        let n = self.kill_delays.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let i = ((n - 1) as f64 * q).round() as usize;
        self.kill_delays[i]
    }

    pub fn print(&self) {
        let o = &self.opts;
        println!(
            "health checks: {} TCP targets, interval {} s, unhealthy threshold 2, {} checker threads",
            o.targets, o.interval_s, o.workers
        );
        println!(
            "  all healthy after     {:.2} s",
            self.all_healthy_after.as_secs_f64()
        );
        println!(
            "  probes                {} in {:.1} s ({:.0}/s)",
            self.probes,
            self.wall.as_secs_f64(),
            self.probes as f64 / self.wall.as_secs_f64()
        );
        println!(
            "  checker CPU           {:.2} s = {:.3} cores ({:.1} us/probe)",
            self.checker_cpu.as_secs_f64(),
            self.checker_cores(),
            self.checker_cpu.as_secs_f64() * 1e6 / self.probes.max(1) as f64
        );
        println!(
            "  listener CPU          {:.2} s (not counted above)",
            self.listener_cpu.as_secs_f64()
        );
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "  close -> Unhealthy    n={} min {:.0} ms, p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            self.kill_delays.len(),
            ms(self.delay_quantile(0.0)),
            ms(self.delay_quantile(0.5)),
            ms(self.delay_quantile(0.9)),
            ms(self.delay_quantile(0.99)),
            ms(self.delay_quantile(1.0)),
        );
    }
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit; errors when that is
/// below `needed`.
fn raise_nofile(needed: u64) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    if lim.rlim_cur < needed {
        bail!(
            "RLIMIT_NOFILE hard limit {} is below the {needed} descriptors needed",
            lim.rlim_cur
        );
    }
    Ok(())
}

/// user + system CPU of this process's threads whose name starts with
/// `prefix`, from /proc/self/task/*/stat.
fn threads_cpu(prefix: &str) -> Result<Duration> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut total = 0u64;
    for entry in fs::read_dir("/proc/self/task").context("reading /proc/self/task")? {
        let dir = entry?.path();
        // A thread may exit between listing and reading: skip it.
        let (Ok(comm), Ok(stat)) = (
            fs::read_to_string(dir.join("comm")),
            fs::read_to_string(dir.join("stat")),
        ) else {
            continue;
        };
        if !comm.starts_with(prefix) {
            continue;
        }
        // Fields after the parenthesised comm; utime and stime are the
        // 14th and 15th of the whole line.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        total += field(11) + field(12);
    }
    Ok(Duration::from_secs_f64(total as f64 / ticks))
}

fn runtime(name: &'static str, workers: usize) -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("building the {name} runtime"))
}

/// Binds `n` listeners on 127.200.x.y, 100 kernel-chosen ports per address;
/// each accepts and drops connections until its task is aborted.
fn listeners(rt: &Runtime, n: usize) -> Result<Vec<(SocketAddr, JoinHandle<()>)>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let a = i / 100;
        let ip = Ipv4Addr::new(127, 200, (a / 250) as u8, (a % 250 + 1) as u8);
        let std = std::net::TcpListener::bind((IpAddr::V4(ip), 0))
            .with_context(|| format!("binding listener {i} on {ip}"))?;
        std.set_nonblocking(true)?;
        let addr = std.local_addr()?;
        let _guard = rt.enter();
        let listener = tokio::net::TcpListener::from_std(std)?;
        let task = rt.spawn(async move {
            loop {
                if let Ok((s, _)) = listener.accept().await {
                    drop(s);
                }
            }
        });
        out.push((addr, task));
    }
    Ok(out)
}

/// See the module comment.
pub fn health_bench(opts: HealthBenchOpts) -> Result<HealthBenchReport> {
    raise_nofile(opts.targets as u64 + 4096)?;
    let listen_rt = runtime(LISTENER_THREADS, 1)?;
    let check_rt = runtime(CHECKER_THREADS, opts.workers)?;
    let mut servers = listeners(&listen_rt, opts.targets)?;

    let interval = Duration::from_secs(opts.interval_s);
    let check = HealthCheck {
        kind: CheckKind::Tcp,
        port: CheckPort::TrafficPort,
        address: CheckAddress::Target,
        interval,
        timeout: interval,
        healthy_threshold: 2,
        unhealthy_threshold: 2,
    };
    let jobs = servers
        .iter()
        .map(|(addr, _)| ProbeJob {
            group: "bench".into(),
            endpoint: *addr,
            check: check.clone(),
            route: Route::Direct,
        })
        .collect();

    let metrics = HealthMetrics::default();
    let unhealthy_at: Arc<Mutex<HashMap<SocketAddr, Instant>>> = Arc::default();
    let (healthy_tx, healthy_rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    let checker = check_rt.block_on(async {
        let (mut checker, mut events) = Checker::new(metrics.clone())?;
        checker.apply(jobs);
        let unhealthy_at = unhealthy_at.clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                match e.health {
                    Verdict::Healthy => {
                        let _ = healthy_tx.send(());
                    }
                    Verdict::Unhealthy => {
                        let mut map = unhealthy_at.lock().unwrap_or_else(|p| p.into_inner());
                        map.insert(e.endpoint, Instant::now());
                    }
                }
            }
        });
        anyhow::Ok(checker)
    })?;

    // Every target turns healthy on its first probe, within one interval.
    let deadline = started + interval * 5 + Duration::from_secs(5);
    for i in 0..opts.targets {
        let left = deadline.saturating_duration_since(Instant::now());
        healthy_rx
            .recv_timeout(left)
            .with_context(|| format!("only {i} of {} targets turned healthy", opts.targets))?;
    }
    let all_healthy_after = started.elapsed();
    if !unhealthy_at
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_empty()
    {
        bail!("targets turned unhealthy while every listener was up");
    }

    // Steady state: every probe succeeds.
    let (cpu0, lcpu0, probes0, t0) = (
        threads_cpu(CHECKER_THREADS)?,
        threads_cpu(LISTENER_THREADS)?,
        metrics.probe_count(None),
        Instant::now(),
    );
    std::thread::sleep(opts.measure);
    let (cpu1, lcpu1, probes1, wall) = (
        threads_cpu(CHECKER_THREADS)?,
        threads_cpu(LISTENER_THREADS)?,
        metrics.probe_count(None),
        t0.elapsed(),
    );

    // Close listeners one by one at uneven moments relative to the probes'
    // phases, and time each to its Unhealthy event.
    let mut closed = Vec::new();
    let stride = (opts.targets / opts.kills.max(1)).max(1);
    for (n, i) in (0..opts.targets)
        .step_by(stride)
        .take(opts.kills)
        .enumerate()
    {
        let (addr, task) = &mut servers[i];
        task.abort();
        // Once the aborted task is gone its listener is closed.
        let _ = listen_rt.block_on(task);
        closed.push((*addr, Instant::now()));
        std::thread::sleep(Duration::from_millis(37 + (n as u64 * 53) % 100));
    }
    let wait_until = Instant::now() + interval * 4 + Duration::from_secs(2);
    let mut kill_delays = Vec::new();
    loop {
        let map = unhealthy_at.lock().unwrap_or_else(|p| p.into_inner());
        if closed.iter().all(|(a, _)| map.contains_key(a)) || Instant::now() > wait_until {
            for (addr, at) in &closed {
                if let Some(seen) = map.get(addr) {
                    kill_delays.push(seen.saturating_duration_since(*at));
                }
            }
            break;
        }
        drop(map);
        std::thread::sleep(Duration::from_millis(50));
    }
    if kill_delays.len() != closed.len() {
        bail!(
            "only {} of {} closed targets turned unhealthy",
            kill_delays.len(),
            closed.len()
        );
    }
    kill_delays.sort();
    drop(checker);
    for (_, task) in &servers {
        task.abort();
    }
    Ok(HealthBenchReport {
        opts,
        all_healthy_after,
        checker_cpu: cpu1.saturating_sub(cpu0),
        listener_cpu: lcpu1.saturating_sub(lcpu0),
        wall,
        probes: probes1 - probes0,
        kill_delays,
    })
}
