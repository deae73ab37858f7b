//! Connection caps of the listeners the daemon serves (issue 14, item 4),
//! from outside through `lb run`: clients from several local addresses
//! fill `max_connections_per_client` and `max_connections` of an `http`
//! listener and of a userspace `tcp` one; the connection beyond a cap is
//! closed before it gets an answer, a freed place takes the next client,
//! and the metrics count each refusal by the key that refused it. IPv6
//! clients are capped by their /64 (`client_ipv6_prefix`), or by address
//! when it says 128.
//!
//! Needs root (namespaces) and `LB_BIN`; panics otherwise, never skips.

mod http_lab;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use http_lab::*;

/// Client addresses, on the namespace's loopback.
const A: &str = "10.77.0.11";
const B: &str = "10.77.0.12";
const C: &str = "10.77.0.13";
const METRICS: &str = "127.0.0.1:9181";

/// An http listener on port 80 and a tcp one on port 81 (to `t1`: see
/// [`config`]), each capped at 4 connections, 2 per client address.
const CAPPED: &str = r#"metrics_listen = "127.0.0.1:9181"

[[listener]]
name = "web"
protocol = "http"
address = "10.77.0.1"
port = 80
target_group = "a"
max_connections = 4
max_connections_per_client = 2

[[listener]]
name = "raw"
protocol = "tcp"
address = "10.77.0.1"
port = 81
target_group = "t"
max_connections = 4
max_connections_per_client = 2
"#;

/// A caps test's config: its `listeners` (CAPPED, CAPPED6) and the two
/// groups they use, `a` (http) and `t` (tcp), each to `target`.
fn config(listeners: &str, target: &str) -> String {
    format!(
        r#"{listeners}
[[target_group]]
name = "a"
protocol = "http"
port = 8080
  [[target_group.target]]
  address = "{target}"
  [target_group.health_check]
  enabled = false

[[target_group]]
name = "t"
protocol = "tcp"
port = 8080
  [[target_group.target]]
  address = "{target}"
  [target_group.health_check]
  enabled = false
"#
    )
}

/// A connection to the VIP's `port` from `src`, in the lab's namespace
/// (to `VIP6` from an IPv6 `src`); `None` when it was reset as it was
/// being set up (a refusal can come before `connect` returns).
fn connect_from(lab: &Lab, src: &str, port: u16) -> Option<TcpStream> {
    let src: IpAddr = src.parse().expect("source");
    let vip: IpAddr = if src.is_ipv6() { VIP6 } else { VIP }.parse().expect("VIP");
    let (src, dst) = (SocketAddr::new(src, 0), SocketAddr::new(vip, port));
    let s = lab.topo.lb.run(move || -> std::io::Result<TcpStream> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let s = rt.block_on(async {
            let s = if src.is_ipv6() {
                tokio::net::TcpSocket::new_v6()?
            } else {
                tokio::net::TcpSocket::new_v4()?
            };
            s.bind(src)?;
            s.connect(dst).await
        })?;
        let s = s.into_std()?;
        s.set_nonblocking(false)?;
        Ok(s)
    });
    let s = match s {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
        Err(e) => panic!("connect from {src}: {e}"),
    };
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    Some(s)
}

/// A new connection from `src` that got an answer (200) to its first
/// request, or `None` when it was closed without one.
fn open(lab: &Lab, src: &str, port: u16) -> Option<TcpStream> {
    let mut s = connect_from(lab, src, port)?;
    match ask(&mut s) {
        Some(200) => Some(s),
        None => None,
        Some(other) => panic!("status {other} from {src}"),
    }
}

/// A request on `s` (through either listener the target sees HTTP): the
/// status of its answer, read whole, or `None` when the connection was
/// closed (or reset) without one.
fn ask(s: &mut TcpStream) -> Option<u16> {
    if s.write_all(b"GET /caps HTTP/1.1\r\nHost: lb.test\r\n\r\n")
        .is_err()
    {
        return None;
    }
    let mut first = [0u8; 1];
    match s.read(&mut first) {
        Ok(0) => return None,
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
        Err(e) => panic!("neither an answer nor a close: {e}"),
    }
    let (head, _body) = read_response(s);
    let head = format!("{}{head}", first[0] as char);
    head.split(' ').nth(1).and_then(|c| c.parse().ok())
}

/// `lb_<family>_total{listener=…,reason=…}` from the metrics endpoint.
fn refused(lab: &Lab, family: &str, listener: &str, reason: &str) -> u64 {
    let text = lab.curl(&["-sS", &format!("http://{METRICS}/metrics")]);
    let series = format!("{family}_total{{listener=\"{listener}\",reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

/// The caps of the listener on `port`, its refusals counted in `family`.
fn caps_hold(lab: &Lab, port: u16, listener: &str, family: &str) {
    let a1 = open(lab, A, port).expect("first of A");
    let mut a2 = open(lab, A, port).expect("second of A");
    assert!(
        open(lab, A, port).is_none(),
        "{listener}: a third from A was served"
    );
    let mut b1 = open(lab, B, port).expect("first of B");
    let _b2 = open(lab, B, port).expect("second of B");
    assert!(
        open(lab, C, port).is_none(),
        "{listener}: a fifth was served"
    );

    // A's first leaves: its place goes to C (once the daemon saw it go).
    drop(a1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut refused_again = 0;
    let mut c = loop {
        if let Some(c) = open(lab, C, port) {
            break c;
        }
        refused_again += 1;
        assert!(Instant::now() < deadline, "{listener}: no place freed");
        std::thread::sleep(Duration::from_millis(200));
    };
    // Those kept are still served.
    for (who, s) in [("A", &mut a2), ("B", &mut b1), ("C", &mut c)] {
        assert_eq!(ask(s), Some(200), "{listener}: {who} kept");
    }
    assert_eq!(
        refused(lab, family, listener, "max_connections_per_client"),
        1,
        "{listener}"
    );
    assert_eq!(
        refused(lab, family, listener, "max_connections"),
        1 + refused_again,
        "{listener}"
    );
}

#[test]
fn listeners_hold_their_connection_caps() {
    let lab = start(LabSpec {
        config: &config(CAPPED, T1),
        targets: &[("t1", T1)],
        tls: false,
        target_tls: false,
    });
    for addr in [A, B, C] {
        lab.topo
            .lb
            .ip(&["addr", "add", &format!("{addr}/32"), "dev", "lo"]);
    }
    caps_hold(&lab, 80, "web", "lb_http_client_connections_refused");
    caps_hold(&lab, 81, "raw", "lb_proxy_connections_refused");
}

/// An http listener on `VIP6` port 80 and a tcp one on port 81 (to `t6`),
/// both 2 connections per client: by /64 (the default) on 80, by address
/// on 81.
const CAPPED6: &str = r#"metrics_listen = "127.0.0.1:9181"

[[listener]]
name = "web6"
protocol = "http"
address = "fd77::1"
port = 80
target_group = "a"
max_connections_per_client = 2

[[listener]]
name = "raw6"
protocol = "tcp"
address = "fd77::1"
port = 81
target_group = "t"
max_connections_per_client = 2
client_ipv6_prefix = 128
"#;

/// Three addresses of one /64, and one of another.
const H1: &str = "fd77:0:0:1::a";
const H2: &str = "fd77:0:0:1:8000::b";
const H3: &str = "fd77:0:0:1::c";
const OTHER: &str = "fd77:0:0:2::a";

/// A host that holds a /64 is one client: a third connection from a third
/// address of its /64 is refused, as a third from one address would be;
/// another /64 is another client. With `client_ipv6_prefix =
/// 128` each address is a client of its own.
#[test]
fn ipv6_clients_are_capped_by_their_prefix() {
    let lab = start(LabSpec {
        config: &config(CAPPED6, T6),
        targets: &[("t6", T6)],
        tls: false,
        target_tls: false,
    });
    for addr in [H1, H2, H3, OTHER] {
        lab.topo
            .lb
            .ip(&["addr", "add", &format!("{addr}/128"), "dev", "lo"]);
    }
    let per_client =
        |listener, family| refused(&lab, family, listener, "max_connections_per_client");

    let _h1 = open(&lab, H1, 80).expect("web6: first of the /64");
    let _h2 = open(&lab, H2, 80).expect("web6: second of the /64");
    assert!(
        open(&lab, H3, 80).is_none(),
        "web6: a third address of the same /64 was served"
    );
    let _other = open(&lab, OTHER, 80).expect("web6: another /64");
    assert_eq!(per_client("web6", "lb_http_client_connections_refused"), 1);

    let kept: Vec<TcpStream> = [H1, H2, H3, H1]
        .into_iter()
        .map(|a| open(&lab, a, 81).unwrap_or_else(|| panic!("raw6: {a} refused")))
        .collect();
    assert!(
        open(&lab, H1, 81).is_none(),
        "raw6: a third from one address was served"
    );
    assert_eq!(per_client("raw6", "lb_proxy_connections_refused"), 1);
    drop(kept);
}

/// `lb run` raises its soft open-file limit to the hard one (started here
/// under `prlimit --nofile=256:8192`) and, since 8,192 is below what its
/// caps can take (a userspace `tcp` listener with the default 10,000
/// connections, two descriptors each, plus 1,024), says so.
#[test]
fn lb_run_raises_its_open_file_limit_and_warns_when_too_low() {
    lb_tests::proc::require_tool("prlimit");
    let mut lab = Lab::bare("fdlimit", 0, true);
    let wrapper = lab.topo.run_dir().join("lb-limited");
    let script = format!(
        "#!/bin/sh\nexec prlimit --nofile=256:8192 {} \"$@\"\n",
        lab.lb.display()
    );
    std::fs::write(&wrapper, script).expect("write the wrapper");
    let mut perms = std::fs::metadata(&wrapper).expect("wrapper").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&wrapper, perms).expect("chmod the wrapper");
    lab.lb = wrapper;
    let vip = lb_tests::lab::vip4(81);
    lab.write_userspace_config(&format!(
        r#"
[[listener]]
name = "raw"
protocol = "tcp"
address = "{}"
port = {}
target_group = "t"

[[target_group]]
name = "t"
protocol = "tcp"
port = 8080
  [[target_group.target]]
  address = "{}"
  [target_group.health_check]
  enabled = false
"#,
        vip.ip(),
        vip.port(),
        vip.ip()
    ));
    lab.start_daemon();
    let daemon = lab.daemon.as_ref().expect("daemon");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.pid()))
        .expect("the daemon's limits");
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line")
        .split_whitespace()
        .collect();
    assert_eq!(
        open_files[3..5],
        ["8192", "8192"],
        "soft and hard limit of lb run:\n{limits}"
    );
    let output = daemon.output();
    assert!(
        output.contains("open-file limit (RLIMIT_NOFILE) is below")
            && output.contains("needed=21024")
            && output.contains("limit=8192"),
        "lb run should warn that 8192 descriptors are below the 21,024 its caps need:\n{output}"
    );
}
