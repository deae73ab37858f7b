//! The management API holds its bounds against hostile TCP clients
//! (issue 14, item 5), from outside through `lb run`: silent sockets are
//! closed and neither lock out an authenticated client on TCP nor anyone
//! on the Unix socket; heads and idle connections are timed out; a huge
//! `Content-Length` is refused up front, a body is read only once the
//! request is authenticated and allowed, and must arrive in time. The
//! Prometheus endpoint (`api.metrics_listen`) holds the same connection
//! bounds, and cuts a client that asks and never reads.
//!
//! Needs root (namespaces) and `LB_BIN`; panics otherwise, never skips.

use std::ffi::OsStr;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use lb_tests::lab::Lab;
use lb_tests::netns;

const API: &str = "127.0.0.1:9180";
const METRICS: &str = "127.0.0.1:9181";
const OPS: &str = "ops-secret-0123456789";
const READER: &str = "reader-secret-0123456789";
/// The daemon's head (and idle) timeout, `lb::admin_http::HEAD_TIMEOUT`.
const HEAD_TIMEOUT: Duration = lb::admin_http::HEAD_TIMEOUT;
/// How long a write may stall, `lb::admin_http::WRITE_TIMEOUT`.
const WRITE_TIMEOUT: Duration = lb::admin_http::WRITE_TIMEOUT;
/// How late a cut may come on a loaded machine.
const SLACK: Duration = Duration::from_secs(10);

/// A daemon with no listeners, its API on the Unix socket and on TCP, an
/// `ops` token allowed everything and a `reader` token allowed to read.
fn lab() -> Lab {
    let mut lab = Lab::bare("apib", 0, false);
    let digest = lb::api::auth::token_digest;
    let api = format!(
        r#"listen = "{API}"
metrics_listen = "{METRICS}"
[[api.policy]]
name = "all"
statement = [{{ effect = "Allow", action = ["lb:*"], resource = ["*", "listener/*", "target-group/*"] }}]
[[api.policy]]
name = "read"
statement = [{{ effect = "Allow", action = ["lb:Describe*"], resource = ["*", "listener/*", "target-group/*"] }}]
[[api.token]]
name = "ops"
sha256 = "{}"
policies = ["all"]
[[api.token]]
name = "reader"
sha256 = "{}"
policies = ["read"]

[[target_group]]
name = "web"
protocol = "tcp"
port = 8080
"#,
        digest(OPS),
        digest(READER)
    );
    lab.config = lab.write_userspace_config(&api);
    lab.start_daemon();
    lab
}

/// A TCP connection to the API from the lab's namespace.
fn connect(lab: &Lab) -> TcpStream {
    connect_to(lab, API)
}

/// A TCP connection to `to` (the API or `/metrics`) from the lab's
/// namespace.
fn connect_to(lab: &Lab, to: &str) -> TcpStream {
    let addr: SocketAddr = to.parse().expect("addr");
    let s = lab
        .topo
        .lb
        .run(move || TcpStream::connect(addr))
        .expect("connect to the daemon");
    s.set_read_timeout(Some(HEAD_TIMEOUT + SLACK + SLACK))
        .expect("read timeout");
    s
}

/// `lb status` through `api` (`unix:…` or `http://…`), with `token`,
/// bounded at 60 s: (success, output).
fn status(lab: &Lab, api: &str, token: Option<&str>) -> (bool, String) {
    let mut cmd: Vec<&OsStr> = ["timeout", "-s", "KILL", "60"]
        .iter()
        .map(OsStr::new)
        .collect();
    cmd.extend([
        lab.lb.as_os_str(),
        OsStr::new("status"),
        OsStr::new("--api"),
    ]);
    cmd.push(OsStr::new(api));
    if let Some(t) = token {
        cmd.extend([OsStr::new("--token"), OsStr::new(t)]);
    }
    let out = netns::exec_in(lab.topo.lb.name(), &cmd);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Whether the daemon has closed `s` (end of stream or reset) without
/// waiting; `false` while it is open with nothing to read.
fn closed_now(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut byte = [0u8; 1];
    let closed = match s.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("the API sent bytes to a silent client"),
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        Err(e) => panic!("{e}"),
    };
    s.set_nonblocking(false).expect("blocking");
    closed
}

/// Reads until the daemon closes `s`: what came and how long it took.
fn read_until_closed(s: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let read = s.read_to_end(&mut got);
    let closed = read.is_ok()
        || read
            .as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::ConnectionReset);
    assert!(
        closed,
        "not closed: {read:?} {:?}",
        String::from_utf8_lossy(&got)
    );
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

/// Sends `head` (and `body`) and reads one response: (status, response).
fn exchange(s: &mut TcpStream, head: &str, body: &[u8]) -> (u16, String) {
    s.write_all(head.as_bytes()).expect("send head");
    s.write_all(body).expect("send body");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("read the answer");
        assert!(n > 0, "closed without an answer: {got:?}");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((h, b)) = text.split_once("\r\n\r\n") {
            let len = h
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().expect("length"))
                })
                .unwrap_or(0);
            if b.len() >= len {
                let code = h.split(' ').nth(1).and_then(|c| c.parse().ok());
                return (code.expect("status"), text);
            }
        }
    }
}

/// 300 TCP sockets that never send a byte (more than the 256 slots):
/// root on the Unix socket is answered while they are held, an
/// authenticated `lb status` over TCP is answered too (the silent ones
/// are closed at the head timeout, freeing their slots), and every one of
/// them is closed. Against axum's `serve` the TCP status waited for ever.
#[test]
fn silent_sockets_lock_out_no_one() {
    let lab = lab();
    let unix = format!("unix:{}", lab.topo.api_socket().display());
    let (ok, out) = status(&lab, &format!("http://{API}"), Some(OPS));
    assert!(ok, "before the flood: {out}");

    let mut silent: Vec<TcpStream> = (0..300).map(|_| connect(&lab)).collect();
    let flooded = Instant::now();
    let (ok, out) = status(&lab, &unix, None);
    assert!(ok, "root on the Unix socket during the flood: {out}");
    if flooded.elapsed() < HEAD_TIMEOUT {
        // Still held: the socket did not need them gone.
        assert!(!closed_now(&mut silent[0]), "cut before the head timeout");
    }
    let (ok, out) = status(&lab, &format!("http://{API}"), Some(OPS));
    assert!(ok, "authenticated TCP client during the flood: {out}");
    assert!(out.contains("listeners"), "{out}");

    for (i, s) in silent.iter_mut().enumerate() {
        let (got, _) = read_until_closed(s);
        assert!(got.is_empty(), "socket {i} got {got:?}");
    }
    let (ok, out) = status(&lab, &format!("http://{API}"), Some(OPS));
    assert!(ok, "after the flood: {out}");
}

/// A head begun and left, and a kept-alive connection left idle after an
/// answer, are closed at the head timeout.
#[test]
fn heads_and_idle_connections_are_timed_out() {
    let lab = lab();

    let mut s = connect(&lab);
    s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: lb\r\n")
        .expect("half a head");
    let (got, took) = read_until_closed(&mut s);
    assert!(
        (HEAD_TIMEOUT - Duration::from_secs(1)..HEAD_TIMEOUT + SLACK).contains(&took),
        "half a head closed after {took:?}: {got:?}"
    );

    let mut s = connect(&lab);
    let head =
        format!("GET /v1/status HTTP/1.1\r\nHost: lb\r\nAuthorization: Bearer {READER}\r\n\r\n");
    let (code, resp) = exchange(&mut s, &head, b"");
    assert_eq!(code, 200, "{resp}");
    let (got, took) = read_until_closed(&mut s);
    assert!(
        got.is_empty()
            && (HEAD_TIMEOUT - Duration::from_secs(1)..HEAD_TIMEOUT + SLACK).contains(&took),
        "idle connection closed after {took:?}: {got:?}"
    );
}

/// Bodies: looked at only after the access check (no token: 401, a token
/// not allowed to register: 403, both without waiting for the body that
/// never comes); a `Content-Length` over the limit is refused before any of
/// it is sent (413); a body that stops is answered 408 at its time limit.
#[test]
fn bodies_are_bounded_and_read_only_when_allowed() {
    let lab = lab();
    let post = |token: Option<&str>, length: u64| {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        format!(
            "POST /v1/target-groups/web/targets HTTP/1.1\r\nHost: lb\r\n{auth}Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        )
    };

    let mut s = connect(&lab);
    let (code, resp) = exchange(&mut s, &post(None, 100), b"");
    assert_eq!(code, 401, "{resp}");
    let mut s = connect(&lab);
    let (code, resp) = exchange(&mut s, &post(Some(READER), 100), b"");
    assert_eq!(code, 403, "{resp}");

    let mut s = connect(&lab);
    let (code, resp) = exchange(&mut s, &post(Some(OPS), 10_000_000_000), b"");
    assert_eq!(code, 413, "{resp}");
    assert!(resp.contains("PayloadTooLarge"), "{resp}");

    let mut s = connect(&lab);
    let started = Instant::now();
    let (code, resp) = exchange(&mut s, &post(Some(OPS), 100), b"{\"targets\":");
    let took = started.elapsed();
    assert_eq!(code, 408, "{resp}");
    assert!(resp.contains("RequestTimeout"), "{resp}");
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(10) + SLACK).contains(&took),
        "408 after {took:?}"
    );
    // Nothing was registered by any of them.
    let mut s = connect(&lab);
    let head = format!(
        "GET /v1/target-groups/web/targets HTTP/1.1\r\nHost: lb\r\nAuthorization: Bearer {READER}\r\n\r\n"
    );
    let (code, resp) = exchange(&mut s, &head, b"");
    assert_eq!(code, 200, "{resp}");
    assert!(resp.ends_with("{\"targets\":[]}"), "{resp}");
}

/// `/metrics` holds the API's bounds: 300 silent sockets (more than the 256
/// slots) do not lock the scraper out, which is answered once the head
/// timeout frees slots, and each of them is closed without a byte. Against
/// axum's `serve`, which the endpoint used, the scrape waited for ever.
#[test]
fn metrics_endpoint_cuts_silent_sockets() {
    let lab = lab();
    let scrape = "GET /metrics HTTP/1.1\r\nHost: lb\r\n\r\n";
    let (code, body) = exchange(&mut connect_to(&lab, METRICS), scrape, b"");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("lb_config_reloads"), "{body}");

    let mut silent: Vec<TcpStream> = (0..300).map(|_| connect_to(&lab, METRICS)).collect();
    let (code, body) = exchange(&mut connect_to(&lab, METRICS), scrape, b"");
    assert_eq!(code, 200, "scrape during the flood: {body}");
    for (i, s) in silent.iter_mut().enumerate() {
        let (got, _) = read_until_closed(s);
        assert!(got.is_empty(), "socket {i} got {got:?}");
    }
}

/// A client of `/metrics` that pipelines up to 50,000 scrapes with a 4 KiB
/// receive buffer and reads nothing: once the daemon's writes stall, it
/// closes the connection within the write timeout, having answered only
/// part of them. Without a write timeout the connection (and its slot) is
/// held for as long as the client stays. (The API is served by the same
/// `lb::admin_http::serve` with the same limits; its unit test
/// `a_client_that_never_reads_gives_its_slot_back` shows the slot freed.)
#[test]
fn scrapers_that_never_read_are_cut() {
    let lab = lab();
    let scrape = b"GET /metrics HTTP/1.1\r\nHost: lb\r\n\r\n";
    let mut s = connect_small(&lab, METRICS);
    let sent = send_repeatedly(&mut s, scrape, 50_000);
    // The daemon's writes stall within moments (its send buffer holds a few
    // MB); reading any earlier than the write timeout after that would let
    // them resume.
    std::thread::sleep(WRITE_TIMEOUT + SLACK);
    let (got, _) = read_until_closed(&mut s);
    let answered = got.matches("HTTP/1.1 200").count();
    assert!(
        answered < sent,
        "{answered} of {sent} scrapes answered: the stalled connection was not cut"
    );
}

/// [`connect_to`] with a 4 KiB receive buffer, so that answers pile up in
/// the daemon's send buffer.
fn connect_small(lab: &Lab, to: &str) -> TcpStream {
    let addr: SocketAddr = to.parse().expect("addr");
    lab.topo.lb.run(move || {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: a fresh socket; the return values are checked.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is ours; it is owned by the stream from here on.
        let stream = unsafe { TcpStream::from_raw_fd(fd) };
        let size: libc::c_int = 4096;
        // SAFETY: a valid option value of its size, on our socket.
        let rc = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw const size).cast(),
                std::mem::size_of_val(&size) as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
        let SocketAddr::V4(v4) = addr else {
            panic!("IPv4 only")
        };
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: a valid sockaddr_in of its size.
        let rc = unsafe {
            libc::connect(
                stream.as_raw_fd(),
                (&raw const sin).cast(),
                std::mem::size_of_val(&sin) as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "connect {addr}: {}", std::io::Error::last_os_error());
        stream
            .set_read_timeout(Some(SLACK + SLACK))
            .expect("read timeout");
        stream
    })
}

/// Writes `request` up to `times` times, stopping when the daemon takes no
/// more within a second; returns how many went out whole.
fn send_repeatedly(s: &mut TcpStream, request: &[u8], times: usize) -> usize {
    s.set_write_timeout(Some(Duration::from_secs(1)))
        .expect("write timeout");
    let all = request.repeat(times);
    let mut written = 0;
    while written < all.len() {
        match s.write(&all[written..]) {
            Ok(n) => written += n,
            Err(_) => break,
        }
    }
    written / request.len()
}
