//! The lab of the `http` and `https` listener tests: the load balancer's
//! namespace of a bare [`Lab`] holds everything (the VIP and targets on
//! its loopback, the `lb-http-target` processes, `lb run` with
//! `dataplane = "userspace"`, the clients), and the raw clients and
//! targets the tests drive through it. Shared by the test files that
//! include it (`mod http_lab;`); each uses a part of it.
#![allow(dead_code, reason = "each test file uses a different part of the lab")]

pub mod h2;
pub mod tls;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

use lb_tests::certs::TestCa as Ca;
pub use lb_tests::lab::Lab;
use lb_tests::netns;
use lb_tests::proc::{self, NsChild};
use serde_json::Value;

pub const VIP: &str = "10.77.0.1";
/// The IPv6 listener address and target of a lab with an IPv6 target (on
/// its loopback then).
pub const VIP6: &str = "fd77::1";
pub const T6: &str = "fd77::2";
pub const T1: &str = "10.77.0.2";
pub const T2: &str = "10.77.0.3";
/// Nothing listens here: connections are refused.
pub const DEAD: &str = "10.77.0.9";
pub const TARGET_PORT: u16 = 8080;
/// Each target's statistics socket.
pub const CONTROL_PORT: u16 = 8081;
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A target's statistics socket, as a URL's authority.
fn control(addr: &str) -> SocketAddr {
    SocketAddr::new(addr.parse().expect("a target's address"), CONTROL_PORT)
}

pub fn target_bin() -> PathBuf {
    proc::test_bin("lb-http-target")
}

/// A lab for these tests: the load balancer's namespace of the shared lab
/// holds everything, the VIP and targets on its loopback, the
/// `lb-http-target` processes, the proxy and the clients.
/// What a lab serves.
pub struct LabSpec<'a> {
    /// `[[listener]]` and `[[target_group]]` tables (the `[daemon]` table is
    /// added).
    pub config: &'a str,
    /// (name, address) of each `lb-http-target`, on TARGET_PORT.
    pub targets: &'a [(&'a str, &'a str)],
    /// Write a fresh self-signed certificate as @DIR@/cert.pem and
    /// @DIR@/key.pem (for `[listener.tls]`).
    pub tls: bool,
    /// Targets serve TLS only, with a certificate for their address from
    /// the CA in @DIR@/ca.pem; @DIR@/other-ca.pem signed nothing.
    pub target_tls: bool,
}

pub fn start(spec: LabSpec<'_>) -> Lab {
    proc::require_tool("curl");
    let mut lab = Lab::bare("http", 0, false);
    for addr in [VIP, T1, T2, DEAD] {
        lab.topo
            .lb
            .ip(&["addr", "add", &format!("{addr}/32"), "dev", "lo"]);
    }
    // IPv6 only where a target is: no lab needs the host's IPv6 else.
    if spec.targets.iter().any(|(_, addr)| addr.contains(':')) {
        for addr in [VIP6, T6] {
            lab.topo
                .lb
                .ip(&["addr", "add", &format!("{addr}/128"), "dev", "lo"]);
        }
    }
    let dir = lab.topo.run_dir().to_owned();
    let ca = spec.target_tls.then(|| {
        Ca::new("other").write(&dir, "other-ca");
        let ca = Ca::new("targets");
        ca.write(&dir, "ca");
        ca
    });
    for (name, addr) in spec.targets {
        let stats = control(addr);
        let listen = SocketAddr::new(stats.ip(), TARGET_PORT).to_string();
        let stats = stats.to_string();
        let mut args: Vec<String> = ["--name", name, "--listen", &listen]
            .into_iter()
            .chain(["--control", &stats])
            .map(str::to_owned)
            .collect();
        if let Some(ca) = &ca {
            let (c, k) = ca.leaf(&dir, name, addr, &[addr]);
            args.extend(["--tls-cert".to_owned(), c.display().to_string()]);
            args.extend(["--tls-key".to_owned(), k.display().to_string()]);
        }
        let ns = lab.topo.lb.name().to_owned();
        let mut t = NsChild::spawn(name, &ns, &target_bin(), &args, proc::verbose());
        t.wait_for_line("ready", START_TIMEOUT);
        lab.topo.adopt(t);
    }
    if spec.tls {
        self_signed(&dir);
    }
    write_config(&lab, spec.config);
    lab.start_daemon();
    lab
}

/// ONE_GROUP with its target `t1` on T1.
pub fn one_target() -> Lab {
    start(LabSpec {
        config: ONE_GROUP,
        targets: &[("t1", T1)],
        tls: false,
        target_tls: false,
    })
}

/// What the HTTP tests do with a lab: requests through the proxy from
/// the load balancer's namespace, and the targets' counters.
pub trait HttpLab {
    fn reload(&mut self, config: &str);
    fn connect_to(&self, port: u16) -> TcpStream;
    fn run(&self, cmd: &[&str]) -> Output;
    fn curl(&self, args: &[&str]) -> String;
    fn get(&self, url: &str, extra: &[&str]) -> (u16, String);
    fn echo(&self, url: &str, extra: &[&str]) -> Value;
    fn target_stats(&self, addr: &str) -> (u64, u64);
    fn target_most_at_once(&self, addr: &str) -> u64;
    fn reset_target(&self, addr: &str);
    fn raw(&self, port: u16, request: Vec<u8>) -> String;
}

impl HttpLab for Lab {
    /// Replaces the config with `config` (as in [`LabSpec`]) and reloads
    /// the daemon with SIGHUP.
    fn reload(&mut self, config: &str) {
        write_config(self, config);
        self.daemon.as_mut().expect("lb run").reload();
    }

    /// A new TCP connection to the VIP, made in the namespace.
    fn connect_to(&self, port: u16) -> TcpStream {
        let addr: SocketAddr = format!("{VIP}:{port}").parse().expect("addr");
        let s = self
            .topo
            .lb
            .run(move || TcpStream::connect(addr))
            .expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s
    }

    /// Runs `cmd` in the namespace; the output whatever the exit status.
    fn run(&self, cmd: &[&str]) -> Output {
        let mut args = vec!["netns", "exec", self.topo.lb.name()];
        args.extend_from_slice(cmd);
        netns::try_run("ip", &args).expect("run ip netns exec")
    }

    /// curl with `args`; returns stdout, panics if curl fails.
    fn curl(&self, args: &[&str]) -> String {
        let mut cmd = vec!["curl", "-sS", "--max-time", "10"];
        cmd.extend_from_slice(args);
        let out = self.run(&cmd);
        assert!(
            out.status.success(),
            "curl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.diagnostics()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Status code and body of one request.
    fn get(&self, url: &str, extra: &[&str]) -> (u16, String) {
        let mut args = vec!["-w", "\n%{http_code}"];
        args.extend_from_slice(extra);
        args.push(url);
        let out = self.curl(&args);
        let (body, code) = out.rsplit_once('\n').expect("status line");
        (code.parse().expect("status"), body.to_owned())
    }

    /// The target's JSON echo of a request through the proxy.
    fn echo(&self, url: &str, extra: &[&str]) -> Value {
        let (code, body) = self.get(url, extra);
        assert_eq!(code, 200, "{url}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
    }

    /// (TCP connections, requests) a target has seen since its last reset.
    fn target_stats(&self, addr: &str) -> (u64, u64) {
        let v: Value =
            serde_json::from_str(&self.curl(&[&format!("http://{}/__stats", control(addr))]))
                .expect("stats json");
        (
            v["connections"].as_u64().expect("connections"),
            v["requests"].as_u64().expect("requests"),
        )
    }

    /// The most requests a target was answering at the same time since its
    /// last reset.
    fn target_most_at_once(&self, addr: &str) -> u64 {
        let v: Value =
            serde_json::from_str(&self.curl(&[&format!("http://{}/__stats", control(addr))]))
                .expect("stats json");
        v["most_at_once"].as_u64().expect("most_at_once")
    }

    fn reset_target(&self, addr: &str) {
        self.curl(&[
            "-X",
            "POST",
            &format!("http://{}/__stats/reset", control(addr)),
        ]);
    }

    /// Writes `request` on a new connection to the VIP and reads until the
    /// proxy closes it.
    fn raw(&self, port: u16, request: Vec<u8>) -> String {
        let addr: SocketAddr = format!("{VIP}:{port}").parse().expect("addr");
        self.topo.lb.run(move || {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            s.write_all(&request).expect("write");
            let mut out = Vec::new();
            s.read_to_end(&mut out).expect("read until close");
            String::from_utf8_lossy(&out).into_owned()
        })
    }
}

/// Writes the lab's config: the userspace `[daemon]` table, then `config`
/// with `@DIR@` replaced by the lab's directory.
pub fn write_config(lab: &Lab, config: &str) -> PathBuf {
    let dir = lab.topo.run_dir().display().to_string();
    lab.write_userspace_config(&config.replace("@DIR@", &dir))
}

/// Reads one HTTP/1.1 response with a `Content-Length` body from `s`:
/// (head, body).
pub fn read_response(s: &mut TcpStream) -> (String, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("read head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().expect("content-length"))
        })
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("read body");
    (head, String::from_utf8_lossy(&body).into_owned())
}

/// A self-signed certificate for `lb.test` and the VIP, written as PEM.
pub fn self_signed(dir: &std::path::Path) {
    let names = vec!["lb.test".to_owned(), VIP.to_owned()];
    let cert = rcgen::generate_simple_self_signed(names).expect("rcgen");
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.cert.pem()).expect("write cert");
    std::fs::write(&k, cert.key_pair.serialize_pem()).expect("write key");
}

pub fn url(path: &str) -> String {
    format!("http://{VIP}{path}")
}

/// One listener, one group of one target. No health checks: their
/// probes would land among the requests and connections that tests count
/// on the target (the first comes up to a second after the daemon starts).
pub const ONE_GROUP: &str = r#"
[[listener]]
name = "web"
protocol = "http"
address = "10.77.0.1"
port = 80
target_group = "a"

[[target_group]]
name = "a"
protocol = "http"
port = 8080
  [[target_group.target]]
  address = "10.77.0.2"
  [target_group.health_check]
  enabled = false
"#;

/// A target that answers with the canned bytes each path names, then
/// closes: what no well-behaved server would send. `/once` is answered on
/// a connection's first request only (a later one closes the connection
/// unanswered), `/then-close` is answered as if the connection stayed
/// open, then closed. `/early` is answered at once, then the request body
/// is read to the connection's end and its size returned; `/endless-line`
/// sends a status line that never ends and keeps the connection open. Runs on `addr` in
/// the lab's namespace until the test ends, one connection at a time.
pub fn raw_target(lab: &Lab, addr: &str) -> std::sync::mpsc::Receiver<u64> {
    let addr: SocketAddr = addr.parse().expect("addr");
    let listener = lab
        .topo
        .lb
        .run(move || std::net::TcpListener::bind(addr))
        .expect("bind raw target");
    let (drained, early_bodies) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            for nth in 0.. {
                let Some(path) = read_request_path(&mut s) else {
                    break;
                };
                let big = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n", "a".repeat(70_000));
                let endless = format!("HTTP/1.1 200 {}", "a".repeat(70_000));
                let answer: &[u8] = match path.as_str() {
                    "/once" if nth == 0 => b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nonce",
                    "/then-close" => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbye",
                    "/garbage" => b"HTTP/1.1 2x0 nope\r\n\r\n",
                    "/conflict" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                    "/huge-head" => big.as_bytes(),
                    "/endless-line" => endless.as_bytes(),
                    "/until-close" => b"HTTP/1.1 200 OK\r\n\r\nuntil close",
                    "/truncated" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
                    "/interim" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                    "/trailers" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nx-sum: 1\r\n\r\n",
                    "/bad-chunk" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX",
                    "/stall" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
                    "/early" => {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nearly"
                    }
                    _ => b"",
                };
                let _ = s.write_all(answer);
                if path == "/flood" {
                    let _ = drained.send(flood(&mut s));
                }
                if ["/early", "/endless-line", "/stall", "/sink"].contains(&path.as_str()) {
                    let body = std::io::copy(&mut s, &mut std::io::sink()).unwrap_or(0);
                    let _ = drained.send(body);
                }
                if path != "/once" || nth > 0 {
                    break;
                }
            }
        }
    });
    early_bodies
}

/// Bytes of a `/flood` body: more than any client here reads.
pub const FLOOD: u64 = 1 << 30;

/// Answers with a FLOOD-byte body, written until it is done or the
/// connection fails; returns the bytes written.
pub fn flood(s: &mut TcpStream) -> u64 {
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {FLOOD}\r\n\r\n");
    if s.write_all(head.as_bytes()).is_err() {
        return 0;
    }
    let block = [b'f'; 64 * 1024];
    let mut sent = 0;
    while sent < FLOOD && s.write_all(&block).is_ok() {
        sent += block.len() as u64;
    }
    sent
}

/// The path of the next request head on `s` (bodies are not expected);
/// `None` at the end of the stream.
pub fn read_request_path(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).ok()?;
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    Some(head.split(' ').nth(1).unwrap_or("").to_owned())
}

/// When a proxy with `idle_timeout = 2` must have closed: its timer looks
/// now and then, on a machine that may be loaded.
pub const AROUND_TWO_SECONDS: std::ops::Range<Duration> =
    Duration::from_millis(1500)..Duration::from_secs(6);

/// Reads `s` until the proxy closes it (end of stream, or a reset for bytes
/// it never read): what came, and how long that took. Panics on any other
/// end, the read timeout included.
pub fn read_until_closed(s: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let read = s.read_to_end(&mut got);
    let closed = read.is_ok()
        || read
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset);
    assert!(closed, "{read:?} {:?}", String::from_utf8_lossy(&got));
    (got, started.elapsed())
}

/// ONE_GROUP with `idle_timeout = 2` on its listener.
pub fn two_second_idle_timeout() -> Lab {
    let config = ONE_GROUP.replace("port = 80\n", "port = 80\nidle_timeout = 2\n");
    start(LabSpec {
        config: &config,
        targets: &[("t1", T1)],
        tls: false,
        target_tls: false,
    })
}

/// A WebSocket upgrade through the proxy: the stream and the response head.
pub fn open_websocket(lab: &Lab) -> (TcpStream, String) {
    let mut s = lab.connect_to(80);
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("read head");
        head.push(byte[0]);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

/// Sends one masked text frame "hello"; returns the server's unmasked echo.
pub fn websocket_echo(s: &mut TcpStream) -> [u8; 7] {
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 5];
    frame.extend_from_slice(&mask);
    frame.extend(b"hello".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).expect("write frame");
    let mut reply = [0u8; 7];
    s.read_exact(&mut reply).expect("read echo");
    reply
}
