//! `cargo xtask bench http`: the layer-7 proxy next to HAProxy, in one run,
//! on one namespace's loopback, against the same `lb-http-target --plain`:
//!
//! - HTTP/1.1 keep-alive requests/s and p99 latency (h2load `--h1`, per-
//!   request latencies from its `--log-file`);
//! - the same with HTTPS termination (TLS 1.3, keep-alive);
//! - new TLS handshakes/s (`openssl s_time -new`: a full handshake per
//!   connection, no resumption), from 4 clients at once: a single client
//!   waits out each handshake's round trips and measures latency, leaving
//!   the proxy idle most of the time;
//! - user-space instructions per HTTP/1.1 keep-alive request, counted by
//!   valgrind's callgrind in a second pair of proxies: the one figure the
//!   shared VM's noise cannot move (it has no hardware counters, and rates
//!   and CPU times move by 15% between runs of the same binary).
//!
//! HAProxy gets the equivalent config: `nbthread` equal to our worker
//! threads, `option http-keep-alive`, `http-reuse always`, the same
//! certificate. Rounds interleave the two proxies; medians are reported.
use std::path::{Path, PathBuf};
use std::time::Duration;

use lb_tests::netns::{self, Netns, TempDir};
use lb_tests::proc::{self, NsChild, wait_tcp_port};

const VIP: &str = "10.78.0.1";
const TARGET: &str = "10.78.0.2";
const OUR_HTTP: u16 = 80;
const OUR_HTTPS: u16 = 443;
const HAPROXY_HTTP: u16 = 81;
const HAPROXY_HTTPS: u16 = 444;
/// The copies run under callgrind.
const OUR_COUNTED: u16 = 82;
const HAPROXY_COUNTED: u16 = 83;
/// Requests counted (after as many again to warm up).
const COUNTED_REQUESTS: u32 = 10_000;
/// Valgrind slows start-up down many times.
const COUNTED_START: Duration = Duration::from_secs(90);
/// Concurrent clients in the handshake case.
const HANDSHAKE_CLIENTS: usize = 4;

pub struct Opts {
    pub seconds: u32,
    pub rounds: usize,
    pub connections: u32,
    /// Worker threads of both proxies.
    pub threads: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    Lb,
    Haproxy,
}

impl Proxy {
    fn name(self) -> &'static str {
        match self {
            Proxy::Lb => "lb",
            Proxy::Haproxy => "haproxy",
        }
    }

    /// Its config, `tag` naming the files: plain HTTP on `http` and, given
    /// `https`, HTTPS with the lab's certificate.
    fn config(
        self,
        dir: &Path,
        threads: usize,
        tag: &str,
        http: u16,
        https: Option<u16>,
    ) -> PathBuf {
        match self {
            Proxy::Lb => our_config(dir, threads, tag, http, https),
            Proxy::Haproxy => {
                haproxy_config(dir, &dir.join("haproxy.pem"), threads, tag, http, https)
            }
        }
    }

    /// The program and arguments that run it with `config`.
    fn command(self, config: &Path) -> (PathBuf, Vec<String>) {
        let config = config.display().to_string();
        match self {
            Proxy::Lb => (
                proc::lb_bin(),
                vec!["run".into(), "--config".into(), config],
            ),
            Proxy::Haproxy => (
                PathBuf::from("/usr/sbin/haproxy"),
                vec!["-db".into(), "-f".into(), config],
            ),
        }
    }

    fn ports(self) -> (u16, u16) {
        match self {
            Proxy::Lb => (OUR_HTTP, OUR_HTTPS),
            Proxy::Haproxy => (HAPROXY_HTTP, HAPROXY_HTTPS),
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub per_second: f64,
    /// Milliseconds; 0 where not measured (handshakes).
    pub p99_ms: f64,
    /// CPU time the proxy process used per request (or handshake), in
    /// microseconds, warm-up included: the measure a machine shared with
    /// other work distorts least.
    pub cpu_us: f64,
}

#[derive(Debug, Default)]
pub struct Report {
    /// (case, proxy) -> samples of every round.
    pub rows: Vec<(&'static str, Proxy, Vec<Sample>)>,
    /// User-space instructions per request: ours, HAProxy's.
    pub instructions: (f64, f64),
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

impl Report {
    fn push(&mut self, case: &'static str, proxy: Proxy, s: Sample) {
        match self.rows.iter_mut().find(|r| r.0 == case && r.1 == proxy) {
            Some(r) => r.2.push(s),
            None => self.rows.push((case, proxy, vec![s])),
        }
    }

    /// Median rate and p99 of a case.
    pub fn median(&self, case: &str, proxy: Proxy) -> Sample {
        let samples = self
            .rows
            .iter()
            .find(|r| r.0 == case && r.1 == proxy)
            .map(|r| r.2.clone())
            .unwrap_or_default();
        Sample {
            per_second: median(samples.iter().map(|s| s.per_second).collect()),
            p99_ms: median(samples.iter().map(|s| s.p99_ms).collect()),
            cpu_us: median(samples.iter().map(|s| s.cpu_us).collect()),
        }
    }
}

/// User plus system CPU time of process `pid` (all its threads), in
/// seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the parenthesised command: state is field 3, utime 14.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Measures `f` (which returns a sample with its rate over `seconds`) and
/// adds the CPU time `pid` spent per request.
fn with_cpu(pid: u32, seconds: u32, f: impl FnOnce() -> Sample) -> Sample {
    let before = cpu_seconds(pid);
    let mut s = f();
    let used = cpu_seconds(pid) - before;
    let requests = s.per_second * f64::from(seconds);
    if requests > 0.0 {
        s.cpu_us = used * 1e6 / requests;
    }
    s
}

struct Lab {
    /// The process ids of our proxy and HAProxy.
    pids: (u32, u32),
    _procs: Vec<NsChild>,
    dir: TempDir,
    ns: Netns,
}

/// Our config, `tag` naming its files; the https listener only with
/// `https`.
fn our_config(dir: &Path, threads: usize, tag: &str, http: u16, https: Option<u16>) -> PathBuf {
    let https = https.map_or(String::new(), |port| {
        format!(
            r#"
[[listener]]
name = "https"
protocol = "https"
address = "{VIP}"
port = {port}
target_group = "t"
  [[listener.tls.certificate]]
  cert = "{dir}/cert.pem"
  key = "{dir}/key.pem"
"#,
            dir = dir.display()
        )
    });
    let text = format!(
        r#"[daemon]
dataplane = "userspace"
pin_dir = "{dir}/pin-{tag}"
worker_threads = {threads}

[api]
socket = "{dir}/api-{tag}.sock"

[[listener]]
name = "http"
protocol = "http"
address = "{VIP}"
port = {http}
target_group = "t"
{https}

[[target_group]]
name = "t"
protocol = "http"
port = 8080
  [[target_group.target]]
  address = "{TARGET}"
"#,
        dir = dir.display()
    );
    let p = dir.join(format!("lb-{tag}.toml"));
    std::fs::write(&p, text).expect("write config");
    p
}

/// HAProxy's equivalent of [`our_config`].
fn haproxy_config(
    dir: &Path,
    pem: &Path,
    threads: usize,
    tag: &str,
    http: u16,
    https: Option<u16>,
) -> PathBuf {
    let https = https.map_or(String::new(), |port| {
        format!("  bind {VIP}:{port} ssl crt {}\n", pem.display())
    });
    let text = format!(
        "global\n  nbthread {threads}\n  maxconn 4096\n\
         defaults\n  mode http\n  option http-keep-alive\n  http-reuse always\n  \
         timeout connect 10s\n  timeout client 60s\n  timeout server 60s\n\
         frontend fe\n  bind {VIP}:{http}\n{https}  \
         option forwardfor\n  default_backend be\n\
         backend be\n  server t {TARGET}:8080\n"
    );
    let p = dir.join(format!("haproxy-{tag}.cfg"));
    std::fs::write(&p, text).expect("write haproxy config");
    p
}

fn start(opts: &Opts) -> Lab {
    netns::require_root();
    for tool in [
        "h2load",
        "haproxy",
        "openssl",
        "valgrind",
        "callgrind_control",
    ] {
        proc::require_tool(tool);
    }
    let id = netns::unique_id();
    let ns = Netns::new(&id);
    let dir = TempDir::new(format!("/run/{id}"));
    for a in [VIP, TARGET] {
        ns.ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"]);
    }
    let cert = rcgen::generate_simple_self_signed(vec![VIP.to_owned()]).expect("rcgen");
    let (c, k, pem) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("haproxy.pem"),
    );
    std::fs::write(&c, cert.cert.pem()).expect("cert");
    std::fs::write(&k, cert.key_pair.serialize_pem()).expect("key");
    std::fs::write(
        &pem,
        format!("{}{}", cert.cert.pem(), cert.key_pair.serialize_pem()),
    )
    .expect("pem");
    let target_listen = format!("{TARGET}:8080");
    let mut target = NsChild::spawn(
        "target",
        ns.name(),
        &lb_tests::proc::test_bin("lb-http-target"),
        &["--plain", "--listen", &target_listen],
        false,
    );
    target.wait_for_line("ready", Duration::from_secs(10));
    // `lb run` as deployed, with as many worker threads as HAProxy.
    let spawn = |proxy: Proxy, http, https| {
        let config = proxy.config(dir.path(), opts.threads, "bench", http, Some(https));
        let (program, args) = proxy.command(&config);
        NsChild::spawn(proxy.name(), ns.name(), &program, &args, false)
    };
    let mut ours = spawn(Proxy::Lb, OUR_HTTP, OUR_HTTPS);
    ours.wait_for_line(proc::LB_READY_PATTERN, Duration::from_secs(10));
    let haproxy = spawn(Proxy::Haproxy, HAPROXY_HTTP, HAPROXY_HTTPS);
    wait_tcp_port(
        ns.name(),
        format!("{VIP}:{HAPROXY_HTTPS}").parse().expect("addr"),
        Duration::from_secs(10),
    );
    Lab {
        pids: (ours.pid(), haproxy.pid()),
        _procs: vec![target, ours, haproxy],
        dir,
        ns,
    }
}

impl Lab {
    fn run(&self, cmd: &[&str]) -> String {
        let out = self.ns.exec(cmd);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// h2load over HTTP/1.1 keep-alive: requests/s and p99 latency.
    fn h2load(&self, url: &str, opts: &Opts, log: &Path) -> Sample {
        let secs = opts.seconds.to_string();
        let conns = opts.connections.to_string();
        let out = self.run(&[
            "h2load",
            "--h1",
            "-D",
            &secs,
            "--warm-up-time",
            "1",
            "-c",
            &conns,
            "-t",
            "1",
            "--log-file",
            &log.display().to_string(),
            url,
        ]);
        let rate = out
            .lines()
            .find_map(|l| l.strip_prefix("finished in "))
            .and_then(|l| l.split(", ").nth(1))
            .and_then(|r| r.strip_suffix(" req/s"))
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no rate in h2load output:\n{out}"));
        assert!(
            out.contains(" 0 failed, 0 errored"),
            "h2load saw failures:\n{out}"
        );
        let text = std::fs::read_to_string(log).expect("h2load log");
        let mut lat: Vec<f64> = text
            .lines()
            .filter_map(|l| l.split('\t').nth(2)?.trim().parse::<f64>().ok())
            .collect();
        lat.sort_by(f64::total_cmp);
        let p99 = lat
            .get((lat.len() as f64 * 0.99) as usize)
            .copied()
            .unwrap_or(0.0);
        Sample {
            per_second: rate,
            p99_ms: p99 / 1000.0,
            cpu_us: 0.0,
        }
    }

    /// Full TLS handshakes per second from HANDSHAKE_CLIENTS concurrent
    /// `openssl s_time` clients.
    fn handshakes(&self, port: u16, opts: &Opts) -> Sample {
        let per_second = std::thread::scope(|s| {
            let clients: Vec<_> = (0..HANDSHAKE_CLIENTS)
                .map(|_| s.spawn(|| self.s_time(port, opts)))
                .collect();
            clients
                .into_iter()
                .map(|c| c.join().expect("s_time client"))
                .sum()
        });
        Sample {
            per_second,
            p99_ms: 0.0,
            cpu_us: 0.0,
        }
    }

    /// Full TLS handshakes per second of one `openssl s_time` client.
    fn s_time(&self, port: u16, opts: &Opts) -> f64 {
        let secs = opts.seconds.to_string();
        let out = self.run(&[
            "openssl",
            "s_time",
            "-connect",
            &format!("{VIP}:{port}"),
            "-new",
            "-time",
            &secs,
        ]);
        // "1234 connections in 5.01s; 246.3 connections/user sec, ..." and
        // "1234 connections in 6 real seconds, ..."
        let line = out
            .lines()
            .find(|l| l.contains("connections in") && l.contains("real seconds"))
            .unwrap_or_else(|| panic!("no result in s_time output:\n{out}"));
        let mut words = line.split_whitespace();
        let n: f64 = words.next().and_then(|w| w.parse().ok()).expect("count");
        let secs: f64 = words.nth(2).and_then(|w| w.parse().ok()).expect("seconds");
        n / secs
    }
}

impl Lab {
    /// User-space instructions per HTTP/1.1 keep-alive request of a copy of
    /// `proxy` (plain HTTP only) run under callgrind with counting off until
    /// a warm-up is over.
    fn instructions(&self, proxy: Proxy, opts: &Opts) -> f64 {
        let dir = self.dir.path();
        let out = dir.join(format!("{}.callgrind", proxy.name()));
        let port = match proxy {
            Proxy::Lb => OUR_COUNTED,
            Proxy::Haproxy => HAPROXY_COUNTED,
        };
        let config = proxy.config(dir, opts.threads, "counted", port, None);
        let (program, args) = proxy.command(&config);
        let mut vg_args = vec![
            "--tool=callgrind".to_owned(),
            "--instr-atstart=no".to_owned(),
            format!("--callgrind-out-file={}", out.display()),
            program.display().to_string(),
        ];
        vg_args.extend(args);
        let child = NsChild::spawn(
            &format!("{}-callgrind", proxy.name()),
            self.ns.name(),
            Path::new("valgrind"),
            &vg_args,
            false,
        );
        let addr = format!("{VIP}:{port}");
        wait_tcp_port(self.ns.name(), addr.parse().expect("addr"), COUNTED_START);
        let url = format!("http://{addr}/");
        let load = |n: u32| {
            let out = self.run(&[
                "h2load",
                "--h1",
                "-n",
                &n.to_string(),
                "-c",
                &opts.connections.to_string(),
                "-t",
                "1",
                &url,
            ]);
            assert!(
                out.contains(" 0 failed, 0 errored"),
                "h2load saw failures:\n{out}"
            );
        };
        load(COUNTED_REQUESTS);
        let pid = child.pid().to_string();
        callgrind_control(&["-i", "on", &pid]);
        load(COUNTED_REQUESTS);
        callgrind_control(&["-i", "off", &pid]);
        callgrind_control(&["-d", &pid]);
        let total = dumped_total(&out.with_extension("callgrind.1"));
        total / f64::from(COUNTED_REQUESTS)
    }
}

fn callgrind_control(args: &[&str]) {
    let out = std::process::Command::new("callgrind_control")
        .args(args)
        .output()
        .expect("run callgrind_control");
    assert!(out.status.success(), "callgrind_control {args:?}: {out:?}");
}

/// The `totals:` of a callgrind dump, once valgrind has written it.
fn dumped_total(path: &Path) -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let total = std::fs::read_to_string(path).ok().and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("totals: "))
                .and_then(|t| t.trim().parse::<f64>().ok())
        });
        match total {
            Some(t) => return t,
            None if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200))
            }
            None => panic!("no callgrind dump at {}", path.display()),
        }
    }
}

pub const CASES: [&str; 3] = ["http keep-alive", "https keep-alive", "tls handshakes"];

pub fn run(opts: &Opts) -> Report {
    let lab = start(opts);
    let mut report = Report::default();
    let log = lab.dir.path().join("h2load.log");
    for round in 0..opts.rounds {
        for proxy in [Proxy::Lb, Proxy::Haproxy] {
            let (http, https) = proxy.ports();
            eprintln!("round {}/{}: {}", round + 1, opts.rounds, proxy.name());
            let pid = match proxy {
                Proxy::Lb => lab.pids.0,
                Proxy::Haproxy => lab.pids.1,
            };
            let s = with_cpu(pid, opts.seconds, || {
                lab.h2load(&format!("http://{VIP}:{http}/"), opts, &log)
            });
            report.push(CASES[0], proxy, s);
            let s = with_cpu(pid, opts.seconds, || {
                lab.h2load(&format!("https://{VIP}:{https}/"), opts, &log)
            });
            report.push(CASES[1], proxy, s);
            let s = with_cpu(pid, opts.seconds, || lab.handshakes(https, opts));
            report.push(CASES[2], proxy, s);
        }
    }
    eprintln!("counting instructions under callgrind");
    report.instructions = (
        lab.instructions(Proxy::Lb, opts),
        lab.instructions(Proxy::Haproxy, opts),
    );
    report
}

pub fn print(report: &Report, opts: &Opts) {
    println!(
        "layer 7 on loopback, {} connections, {} s per measurement, median of {} rounds, {} proxy threads",
        opts.connections, opts.seconds, opts.rounds, opts.threads
    );
    println!(
        "{:<18} {:>10} {:>9} {:>8} {:>12} {:>9} {:>8} {:>10} {:>9} {:>9}",
        "case",
        "lb /s",
        "lb p99",
        "lb cpu",
        "haproxy /s",
        "hap p99",
        "hap cpu",
        "rate ratio",
        "p99 ratio",
        "cpu ratio"
    );
    for case in CASES {
        let (l, h) = (
            report.median(case, Proxy::Lb),
            report.median(case, Proxy::Haproxy),
        );
        let p99 = |s: Sample| {
            if s.p99_ms > 0.0 {
                format!("{:.2} ms", s.p99_ms)
            } else {
                "-".into()
            }
        };
        let ratio = |a: f64, b: f64| {
            if b > 0.0 {
                format!("{:.2}x", a / b)
            } else {
                "-".into()
            }
        };
        println!(
            "{:<18} {:>10.0} {:>9} {:>6.1}us {:>12.0} {:>9} {:>6.1}us {:>10} {:>9} {:>9}",
            case,
            l.per_second,
            p99(l),
            l.cpu_us,
            h.per_second,
            p99(h),
            h.cpu_us,
            ratio(l.per_second, h.per_second),
            ratio(l.p99_ms, h.p99_ms),
            ratio(l.cpu_us, h.cpu_us),
        );
    }
    println!("(cpu: the proxy's CPU time per request or handshake; lower is better)");
    let (ours, theirs) = report.instructions;
    println!(
        "user-space instructions per http keep-alive request (callgrind, {COUNTED_REQUESTS} requests): \
         lb {ours:.0}, haproxy {theirs:.0}, ratio {:.2}x",
        ours / theirs
    );
}

pub fn json(report: &Report) -> String {
    let items: Vec<String> = CASES
        .iter()
        .flat_map(|case| {
            [Proxy::Lb, Proxy::Haproxy].map(|p| {
                let s = report.median(case, p);
                format!(
                    "    {{\"case\": \"{case}\", \"proxy\": \"{}\", \"per_second\": {:.1}, \"p99_ms\": {:.3}, \"cpu_us\": {:.2}}}",
                    p.name(),
                    s.per_second,
                    s.p99_ms,
                    s.cpu_us
                )
            })
        })
        .collect();
    let (ours, theirs) = report.instructions;
    format!(
        "{{\n  \"cases\": [\n{}\n  ],\n  \"instructions_per_request\": {{\"lb\": {ours:.0}, \"haproxy\": {theirs:.0}}}\n}}\n",
        items.join(",\n")
    )
}
