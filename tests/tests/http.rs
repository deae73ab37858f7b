//! `http` and `https` listeners end to end: real clients (curl, h2load, raw
//! sockets) through the layer-7 proxy to `lb-http-target` processes, all in
//! one fresh network namespace per test (addresses on its loopback).
//!
//! Needs root (namespaces), `LB_BIN`, curl and h2load; panics otherwise,
//! never skips. The proxy is `lb run` with `dataplane = "userspace"` (no XDP
//! program: the VIPs are local addresses the daemon binds).
//! `LB_TEST_VERBOSE=1` echoes the processes' output.

mod http_lab;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use http_lab::*;
use lb_tests::proc;
use serde_json::Value;

// --- proxy semantics ------------------------------------------------------

#[test]
fn forwarded_headers_and_hop_by_hop() {
    let lab = one_target();
    let v = lab.echo(
        &url("/p?q=1"),
        &[
            "-H",
            "X-Forwarded-For: 192.0.2.1",
            "-H",
            "Connection: keep-alive, X-Private",
            "-H",
            "X-Private: secret",
            "-H",
            "Keep-Alive: timeout=5",
            "-H",
            "X-Kept: yes",
        ],
    );
    assert_eq!(v["name"], "t1");
    assert_eq!(v["path"], "/p");
    assert_eq!(v["query"], "q=1");
    assert_eq!(v["version"], "HTTP/1.1");
    let h = &v["headers"];
    assert_eq!(h["x-forwarded-for"][0], "192.0.2.1, 10.77.0.1");
    assert_eq!(h["x-forwarded-proto"][0], "http");
    assert_eq!(h["x-forwarded-port"][0], "80");
    assert_eq!(h["x-kept"][0], "yes");
    assert_eq!(h["host"][0], "10.77.0.1");
    for gone in ["x-private", "keep-alive", "connection"] {
        assert!(h.get(gone).is_none(), "{gone} was forwarded: {h}");
    }

    // HTTP/1.0 without Host: the target gets the listener's address.
    let resp = lab.raw(80, b"GET /old HTTP/1.0\r\n\r\n".to_vec());
    assert!(resp.starts_with("HTTP/1.0 200"), "{resp}");
    assert!(resp.contains(r#""host":["10.77.0.1:80"]"#), "{resp}");
    // HTTP/1.1 without Host is malformed.
    let resp = lab.raw(80, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec());
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
}

#[test]
fn header_limits_answer_each_with_its_status() {
    let lab = one_target();
    // Request line over 16 KiB: 414.
    let long_path = format!("/{}", "a".repeat(16 * 1024));
    assert_eq!(lab.get(&url(&long_path), &[]).0, 414);
    // Just under: forwarded.
    let fits = format!("/{}", "a".repeat(16 * 1024 - 100));
    assert_eq!(lab.get(&url(&fits), &[]).0, 200);
    // One header field over 16 KiB: 431.
    let big = format!("X-Big: {}", "b".repeat(16 * 1024));
    assert_eq!(lab.get(&url("/"), &["-H", &big]).0, 431);
    // Header block over 64 KiB in fields of 10 KiB each: 400.
    let field = "c".repeat(10 * 1024);
    let headers: Vec<String> = (0..7).map(|i| format!("X-H{i}: {field}")).collect();
    let mut args = Vec::new();
    for h in &headers {
        args.extend(["-H", h.as_str()]);
    }
    assert_eq!(lab.get(&url("/"), &args).0, 400);
    // Six of them (60 KiB) pass.
    assert_eq!(lab.get(&url("/"), &args[..12]).0, 200);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let lab = one_target();
    let mut req = Vec::new();
    for i in 1..=5 {
        // Later requests finish sooner at the target; answers must still
        // come back in request order.
        let sleep = 50 * (5 - i);
        let close = if i == 5 { "Connection: close\r\n" } else { "" };
        req.extend(
            format!("GET /r{i}?sleep_ms={sleep} HTTP/1.1\r\nHost: h\r\n{close}\r\n").bytes(),
        );
    }
    let resp = lab.raw(80, req);
    assert_eq!(resp.matches("HTTP/1.1 200 OK").count(), 5, "{resp}");
    let order: Vec<usize> = (1..=5)
        .map(|i| {
            resp.find(&format!(r#""path":"/r{i}""#))
                .expect("each answered")
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "out of order: {resp}"
    );
}

#[test]
fn websocket_is_proxied() {
    let lab = one_target();
    let (mut s, head) = open_websocket(&lab);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert_eq!(&websocket_echo(&mut s), b"\x81\x05hello");
}

#[test]
fn http2_cleartext_with_curl_and_h2load() {
    proc::require_tool("h2load");
    let lab = one_target();
    let v = lab.echo(&url("/h2"), &["--http2-prior-knowledge"]);
    // HTTP/2 toward the client, HTTP/1.1 toward the target, Host from
    // :authority.
    assert_eq!(v["version"], "HTTP/1.1");
    assert_eq!(v["headers"]["host"][0], "10.77.0.1");
    // 200 concurrent streams on one connection.
    let out = lab.run(&["h2load", "-n", "2000", "-c", "1", "-m", "200", &url("/")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("2000 total, 2000 started, 2000 done, 2000 succeeded"),
        "{text}"
    );
}

// --- rules and actions ----------------------------------------------------

const RULES: &str = r#"
[[listener]]
name = "web"
protocol = "http"
address = "10.77.0.1"
port = 80
default_action = { type = "forward", target_group = "a" }

  [[listener.rule]]
  priority = 10
  conditions.host_header = ["*.fixed.test"]
  action = { type = "fixed_response", status = 200, content_type = "application/json", body = '{"fixed":"host"}' }

  [[listener.rule]]
  priority = 20
  conditions.path_pattern = ["/old/*"]
  action = { type = "redirect", status = 301, protocol = "https", port = "443", path = "/new/#{path}" }

  [[listener.rule]]
  priority = 30
  conditions.http_request_method = ["DELETE"]
  action = { type = "fixed_response", status = 405, body = "no deletes" }

  [[listener.rule]]
  priority = 40
  conditions.http_header = [{ name = "X-Canary", values = ["y*"] }]
  action = { type = "forward", target_group = "b" }

  [[listener.rule]]
  priority = 50
  conditions.query_string = [{ key = "v", value = "2" }]
  action = { type = "forward", target_group = "b" }

  [[listener.rule]]
  priority = 60
  conditions.source_ip = ["192.0.2.0/24"]
  action = { type = "fixed_response", status = 403 }

  [[listener.rule]]
  priority = 70
  conditions.source_ip = ["10.77.0.0/24"]
  conditions.path_pattern = ["/inside"]
  action = { type = "fixed_response", status = 200, body = "inside" }

  [[listener.rule]]
  priority = 80
  conditions.path_pattern = ["/split*"]
  action = { type = "forward", target_groups = [{ name = "a", weight = 1 }, { name = "b", weight = 1 }] }

  [[listener.rule]]
  priority = 90
  conditions.host_header = ["moved.test"]
  action = { type = "redirect", status = 302, host = "new.test", query = "from=#{host}&#{query}" }

[[target_group]]
name = "a"
protocol = "http"
port = 8080
  [[target_group.target]]
  address = "10.77.0.2"

[[target_group]]
name = "b"
protocol = "http"
port = 8080
  [[target_group.target]]
  address = "10.77.0.3"
"#;

#[test]
fn every_condition_and_action() {
    let lab = start(LabSpec {
        config: RULES,
        targets: &[("t1", T1), ("t2", T2)],
        tls: false,
        target_tls: false,
    });
    // Default action.
    assert_eq!(lab.echo(&url("/x"), &[])["name"], "t1");
    // host_header with a wildcard, fixed response with its content type.
    let out = lab.curl(&["-i", "-H", "Host: api.fixed.test", &url("/anything")]);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("content-type: application/json"), "{out}");
    assert!(out.ends_with(r#"{"fixed":"host"}"#), "{out}");
    // path_pattern, redirect with templates (host and query kept).
    let out = lab.curl(&["-i", "-H", "Host: shop.test", &url("/old/a/b?x=1")]);
    assert!(out.starts_with("HTTP/1.1 301"), "{out}");
    assert!(
        out.contains("location: https://shop.test/new/old/a/b?x=1\r\n"),
        "{out}"
    );
    // http_request_method.
    assert_eq!(
        lab.get(&url("/x"), &["-X", "DELETE"]),
        (405, "no deletes".to_owned())
    );
    // http_header with a wildcard value, case-insensitive.
    assert_eq!(lab.echo(&url("/x"), &["-H", "X-Canary: YES"])["name"], "t2");
    assert_eq!(lab.echo(&url("/x"), &["-H", "X-Canary: no"])["name"], "t1");
    // query_string.
    assert_eq!(lab.echo(&url("/x?a=1&v=2"), &[])["name"], "t2");
    assert_eq!(lab.echo(&url("/x?v=20"), &[])["name"], "t1");
    // source_ip: the client is 10.77.0.1 here, never in 192.0.2.0/24;
    // conditions AND: /inside from inside, other paths not.
    assert_eq!(lab.get(&url("/inside"), &[]), (200, "inside".to_owned()));
    assert_eq!(lab.echo(&url("/outside"), &[])["name"], "t1");
    // Weighted forward: 1:1 alternates.
    let names: Vec<String> = (0..4)
        .map(|_| {
            lab.echo(&url("/split"), &[])["name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(names.iter().filter(|n| *n == "t1").count(), 2, "{names:?}");
    assert_eq!(names.iter().filter(|n| *n == "t2").count(), 2, "{names:?}");
    // 302 with host and query templates; the port stays.
    let out = lab.curl(&["-i", "-H", "Host: moved.test", &url("/p?k=v")]);
    assert!(out.starts_with("HTTP/1.1 302"), "{out}");
    assert!(
        out.contains("location: http://new.test/p?from=moved.test&k=v\r\n"),
        "{out}"
    );
}

// --- keep-alive toward targets --------------------------------------------

/// Sends `per_client` sequential requests from each of `clients` curl
/// processes at once (each keeps its own connection to the proxy); returns
/// the status codes.
fn load(lab: &Lab, clients: usize, per_client: usize, path: &str) -> Vec<String> {
    thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let target = url(path);
                    let mut args = vec!["-w", "%{http_code}\n"];
                    for _ in 0..per_client {
                        args.extend(["-o", "/dev/null", target.as_str()]);
                    }
                    lab.curl(&args)
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .expect("client thread")
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    })
}

/// Byte `i` of the target's `?chunked=N` answers.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn bodies_stream_both_ways_and_the_connection_is_kept() {
    let lab = one_target();
    lab.reset_target(T1);
    let dir = lab.topo.run_dir();
    // 1 MiB and a bit, not a multiple of any buffer size.
    let sent = dir.join("sent");
    let upload: Vec<u8> = (0..1_048_583u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&sent, &upload).expect("write upload");
    let got = dir.join("got");
    let data = format!("@{}", sent.display());
    let out = got.display().to_string();
    let echoed = |extra: &[&str], what: &str| {
        let _ = std::fs::remove_file(&got);
        let mut args = vec!["--data-binary", &data, "-o", &out];
        args.extend_from_slice(extra);
        args.push("http://10.77.0.1/up?echo=1");
        lab.curl(&args);
        let back = std::fs::read(&got).expect("read echo");
        assert!(
            back == upload,
            "{what}: {} bytes came back of {}",
            back.len(),
            upload.len()
        );
    };
    // With its length, chunked (the target gets it chunked too), over
    // HTTP/2: the target gets every byte and echoes it back.
    echoed(&[], "content-length");
    echoed(&["-H", "Transfer-Encoding: chunked"], "chunked");
    echoed(&["--http2-prior-knowledge"], "http/2");

    // A streamed answer of unannounced length reaches HTTP/1.1 and HTTP/2
    // clients whole.
    for extra in [&[][..], &["--http2-prior-knowledge"][..]] {
        let _ = std::fs::remove_file(&got);
        let mut args = vec!["-o", &out];
        args.extend_from_slice(extra);
        args.push("http://10.77.0.1/down?chunked=1048583");
        lab.curl(&args);
        let down = std::fs::read(&got).expect("read download");
        assert!(
            down == pattern(1_048_583),
            "{extra:?}: {} bytes",
            down.len()
        );
    }

    // HEAD: the length is announced, no body follows, nothing hangs.
    let head = lab.curl(&["-sSI", &url("/head")]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: "),
        "{head}"
    );

    // One request at a time, each read to its end: one target connection
    // carried all of them.
    assert_eq!(lab.target_stats(T1), (1, 6));
}

#[test]
fn odd_target_answers_are_relayed_or_refused_with_502() {
    let config = ONE_GROUP.replace("address = \"10.77.0.2\"", "address = \"10.77.0.3\"");
    let lab = start(LabSpec {
        config: &config,
        targets: &[],
        tls: false,
        target_tls: false,
    });
    let _early_bodies = raw_target(&lab, &format!("{T2}:{TARGET_PORT}"));
    // A head we cannot trust is a bad gateway, never relayed.
    for path in [
        "/garbage",
        "/conflict",
        "/huge-head",
        "/endless-line",
        "/nothing",
    ] {
        let (code, _) = lab.get(&url(path), &[]);
        assert_eq!(code, 502, "{path}");
    }
    // Bodies that end at the close, after interim answers, chunked with
    // trailers: the client gets the body.
    assert_eq!(
        lab.get(&url("/until-close"), &[]),
        (200, "until close".to_owned())
    );
    assert_eq!(lab.get(&url("/interim"), &[]), (200, "ok".to_owned()));
    assert_eq!(
        lab.get(&url("/trailers"), &[]),
        (200, "hello world".to_owned())
    );
    // A body cut short or miscoded after the head went out: the client's
    // transfer fails rather than looking complete.
    for path in ["/truncated", "/bad-chunk"] {
        let out = lab.run(&["curl", "-sS", "--max-time", "10", &url(path)]);
        assert!(!out.status.success(), "{path}: {out:?}");
    }
    // And the proxy is none the worse for it.
    assert_eq!(
        lab.get(&url("/until-close"), &[]),
        (200, "until close".to_owned())
    );

    // A kept connection the target closed while idle is noticed when next
    // taken: even a POST, which is never sent twice, gets through.
    assert_eq!(lab.get(&url("/then-close"), &[]), (200, "bye".to_owned()));
    thread::sleep(Duration::from_millis(200));
    let post = lab.get(&url("/then-close"), &["-X", "POST"]);
    assert_eq!(post, (200, "bye".to_owned()));
    // A kept connection lost with the request on it (closed unanswered):
    // a GET is sent again on a new connection, a POST is not.
    assert_eq!(lab.get(&url("/once"), &[]), (200, "once".to_owned()));
    assert_eq!(lab.get(&url("/once"), &[]), (200, "once".to_owned()));
    assert_eq!(lab.get(&url("/once"), &["-X", "POST"]).0, 502);
}

#[test]
fn uploads_cut_short_or_answered_early_leave_no_stale_connection() {
    let config = format!(
        "{ONE_GROUP}
[[listener]]
name = \"raw\"
protocol = \"http\"
address = \"10.77.0.1\"
port = 81
target_group = \"raw\"

[[target_group]]
name = \"raw\"
protocol = \"http\"
port = 8080
  [[target_group.target]]
  address = \"10.77.0.3\"
"
    );
    let lab = start(LabSpec {
        config: &config,
        targets: &[("t1", T1)],
        tls: false,
        target_tls: false,
    });
    let early_bodies = raw_target(&lab, &format!("{T2}:{TARGET_PORT}"));
    lab.reset_target(T1);

    // The client promises 1000 bytes, sends 10 and stops: 400 at once
    // (the target, waiting for the rest, would otherwise hold the request
    // until the response timeout).
    let addr: SocketAddr = format!("{VIP}:80").parse().expect("addr");
    let answer = lab.topo.lb.run(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(
            b"POST /up?echo=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789",
        )
        .expect("write");
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut out = Vec::new();
        s.read_to_end(&mut out).expect("read until close");
        String::from_utf8_lossy(&out).into_owned()
    });
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // The connection that carried the cut request is not used again.
    assert_eq!(lab.echo(&url("/after"), &[])["path"], "/after");
    assert_eq!(lab.target_stats(T1).0, 2);

    // A target that answers before reading the body still gets all of it,
    // after its answer reached the client. The upload is paced (about a
    // quarter of a second) so the answer comes while it goes on: unpaced,
    // socket buffers could take it whole before the target answered.
    let sent = lab.topo.run_dir().join("sent");
    std::fs::write(&sent, pattern(1_048_583)).expect("write upload");
    let data = format!("@{}", sent.display());
    let out = lab.curl(&[
        "--limit-rate",
        "4M",
        "--data-binary",
        &data,
        "http://10.77.0.1:81/early",
    ]);
    assert_eq!(out, "early");
    let drained = early_bodies
        .recv_timeout(Duration::from_secs(10))
        .expect("the target saw its connection end");
    assert_eq!(drained, 1_048_583);
}

#[test]
fn keep_alive_reuses_few_target_connections() {
    let lab = one_target();
    lab.reset_target(T1);
    let codes = load(&lab, 10, 100, "/ka");
    assert_eq!(codes.len(), 1000);
    assert!(codes.iter().all(|c| c == "200"), "{codes:?}");
    let (conns, requests) = lab.target_stats(T1);
    assert_eq!(requests, 1000);
    // Ten clients at once need at most ten.
    assert!(conns <= 10, "1000 requests used {conns} target connections");
}

#[test]
fn keep_alive_timeout_zero_opens_one_connection_per_request() {
    let config = ONE_GROUP.replace("port = 8080\n", "port = 8080\nkeep_alive_timeout = 0\n");
    let lab = start(LabSpec {
        config: &config,
        targets: &[("t1", T1)],
        tls: false,
        target_tls: false,
    });
    lab.reset_target(T1);
    let codes = load(&lab, 2, 25, "/nka");
    assert!(codes.iter().all(|c| c == "200"), "{codes:?}");
    assert_eq!(lab.target_stats(T1), (50, 50));
    // The anti-pattern is called out.
    let log = lab.diagnostics();
    assert!(log.contains("keep_alive_timeout = 0"), "{log}");
}

#[test]
fn connection_close_from_target_is_honoured() {
    let lab = one_target();
    lab.reset_target(T1);
    // Each answer carries Connection: close: the next request needs a new
    // connection.
    for _ in 0..3 {
        assert_eq!(lab.get(&url("/c?close=1"), &[]).0, 200);
    }
    assert_eq!(lab.target_stats(T1), (3, 3));
    // Without it, one more connection serves the rest.
    for _ in 0..5 {
        assert_eq!(lab.get(&url("/k"), &[]).0, 200);
    }
    assert_eq!(lab.target_stats(T1), (4, 8));
}

#[test]
fn warm_connections_are_opened_ahead() {
    let config = ONE_GROUP.replace("port = 8080\n", "port = 8080\nwarm_connections = 3\n");
    let lab = start(LabSpec {
        config: &config,
        targets: &[("t1", T1)],
        tls: false,
        target_tls: false,
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    // Without a single request the target sees the three connections.
    while lab.target_stats(T1).0 < 3 {
        assert!(Instant::now() < deadline, "no warm connections");
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(lab.target_stats(T1), (3, 0));
    for _ in 0..3 {
        assert_eq!(lab.get(&url("/w"), &[]).0, 200);
    }
    assert_eq!(lab.target_stats(T1), (3, 3));
}

// --- failures -------------------------------------------------------------

const FAILURES: &str = r#"
[[listener]]
name = "web"
protocol = "http"
address = "10.77.0.1"
port = 80
target_group = "dead"

  [[listener.rule]]
  priority = 1
  conditions.path_pattern = ["/empty"]
  action = { type = "forward", target_group = "empty" }

  [[listener.rule]]
  priority = 2
  conditions.path_pattern = ["/slow"]
  action = { type = "forward", target_group = "slow" }

[[target_group]]
name = "dead"
protocol = "http"
port = 8080
  [[target_group.target]]
  address = "10.77.0.9"

[[target_group]]
name = "empty"
protocol = "http"
port = 8080

[[target_group]]
name = "slow"
protocol = "http"
port = 8080
response_timeout = 1
  [[target_group.target]]
  address = "10.77.0.2"
"#;

#[test]
fn target_failures_answer_502_503_504() {
    let lab = start(LabSpec {
        config: FAILURES,
        targets: &[("t1", T1)],
        tls: false,
        target_tls: false,
    });
    // Refused connection.
    assert_eq!(lab.get(&url("/x"), &[]).0, 502);
    // No target to send to.
    assert_eq!(lab.get(&url("/empty"), &[]).0, 503);
    // No answer within response_timeout (1 s; the target takes 5).
    let started = Instant::now();
    assert_eq!(lab.get(&url("/slow?sleep_ms=5000"), &[]).0, 504);
    assert!(started.elapsed() < Duration::from_secs(4));
    // A fast answer from the same group is fine.
    assert_eq!(lab.get(&url("/slow"), &[]).0, 200);
    // An upload that takes longer than the timeout is no slow target: the
    // timeout counts from the body's end (1 MB at 400 kB/s: 2.5 s).
    let upload = lab.topo.run_dir().join("upload");
    std::fs::write(&upload, vec![b'u'; 1_000_000]).expect("write upload");
    let data = format!("@{}", upload.display());
    let (code, echoed) = lab.get(
        &url("/slow?echo=1"),
        &["--data-binary", &data, "--limit-rate", "400K"],
    );
    assert_eq!((code, echoed.len()), (200, 1_000_000));
    // One that stops moving gets its 504 the timeout after its last move.
    let mut conn = lab.connect_to(80);
    conn.write_all(
        b"POST /slow?echo=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n0123456789",
    )
    .expect("write");
    let started = Instant::now();
    let (head, _) = read_response(&mut conn);
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

// --- HTTPS ----------------------------------------------------------------

const HTTPS: &str = r#"
[[listener]]
name = "secure"
protocol = "https"
address = "10.77.0.1"
port = 443
target_group = "a"
access_log = "@DIR@/access.log"
  [[listener.tls.certificate]]
  cert = "@DIR@/cert.pem"
  key = "@DIR@/key.pem"

[[target_group]]
name = "a"
protocol = "http"
port = 8080
  [[target_group.target]]
  address = "10.77.0.2"
"#;

#[test]
fn https_with_h2_by_alpn_and_access_log() {
    proc::require_tool("h2load");
    let lab = start(LabSpec {
        config: HTTPS,
        targets: &[("t1", T1)],
        tls: true,
        target_tls: false,
    });
    let https = format!("https://{VIP}/s?x=1");
    let out = lab.curl(&["-k", "--http1.1", "-w", "\n%{http_version}", &https]);
    let (body, version) = out.rsplit_once('\n').expect("version");
    assert_eq!(version, "1.1");
    let v: Value = serde_json::from_str(body).expect("json");
    assert_eq!(v["headers"]["x-forwarded-proto"][0], "https");
    assert_eq!(v["headers"]["x-forwarded-port"][0], "443");
    let out = lab.curl(&[
        "-k",
        "--http2",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        &https,
    ]);
    assert_eq!(out, "2");
    let out = lab.run(&["h2load", "-n", "500", "-c", "2", "-m", "128", &https]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("500 succeeded"), "{text}");
    assert!(text.contains("Application protocol: h2"), "{text}");

    // The access log has one line per request, in ELB's format.
    let log = lab.topo.run_dir().join("access.log");
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let n = text.lines().count();
        if n >= 502 || Instant::now() > deadline {
            break text;
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(lines.lines().count(), 502, "{lines}");
    let first: Vec<&str> = lines.lines().next().expect("a line").split(' ').collect();
    assert_eq!(first[0], "https");
    assert_eq!(first[2], "secure");
    assert!(first[3].starts_with("10.77.0.1:"), "{first:?}");
    assert_eq!(first[4], "10.77.0.2:8080");
    assert_eq!(first[8], "200");
    assert_eq!(first[9], "200");
    assert_eq!(first[12], "\"GET");
    assert_eq!(first[13], "https://10.77.0.1:443/s?x=1");
    assert_eq!(first[14], "HTTP/1.1\"");
    assert!(first[16].starts_with("TLS_AES_"), "{first:?}");
    assert_eq!(first[17], "TLSv1.3");
    assert!(lines.lines().nth(1).expect("h2 line").starts_with("h2 "));
}

// --- reload and client idle timeout ----------------------------------------

/// ONE_GROUP with a rule answering `/r` with `body`.
fn with_rule(body: &str) -> String {
    ONE_GROUP.replace(
        "target_group = \"a\"\n",
        &format!(
            "target_group = \"a\"\n  [[listener.rule]]\n  priority = 1\n  \
             conditions.path_pattern = [\"/r\"]\n  \
             action = {{ type = \"fixed_response\", status = 200, body = \"{body}\" }}\n"
        ),
    )
}

#[test]
fn reload_changes_a_rule_under_an_open_keep_alive_connection() {
    let mut lab = start(LabSpec {
        config: &with_rule("before"),
        targets: &[("t1", T1)],
        tls: false,
        target_tls: false,
    });
    let mut conn = lab.connect_to(80);
    let request = b"GET /r HTTP/1.1\r\nHost: h\r\n\r\n";
    conn.write_all(request).expect("write");
    let (head, body) = read_response(&mut conn);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "before");

    lab.reload(&with_rule("after"));
    // The same connection, still open, gets the new rule.
    conn.write_all(request).expect("write after reload");
    let (head, body) = read_response(&mut conn);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "after");
    // And other paths still reach the target through it.
    conn.write_all(b"GET /other HTTP/1.1\r\nHost: h\r\n\r\n")
        .expect("write");
    let (head, body) = read_response(&mut conn);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains(r#""name":"t1""#), "{body}");
}

/// with_rule(`body`) and a second listener, on port 81, forwarding to the
/// same group; `group_extra` is added to the group's table.
fn two_listeners(body: &str, group_extra: &str) -> String {
    let second = "[[listener]]\nname = \"web2\"\nprotocol = \"http\"\naddress = \"10.77.0.1\"\n\
                  port = 81\ntarget_group = \"a\"\n\n[[target_group]]";
    with_rule(body)
        .replacen("[[target_group]]", second, 1)
        .replace("port = 8080\n", &format!("port = 8080\n{group_extra}"))
}

#[test]
fn target_connections_are_shared_by_listeners_and_kept_across_reloads() {
    let mut lab = start(LabSpec {
        config: &two_listeners("before", ""),
        targets: &[("t1", T1)],
        tls: false,
        target_tls: false,
    });
    let port81 = format!("http://{VIP}:81/p");
    lab.reset_target(T1);
    assert_eq!(lab.get(&url("/p"), &[]).0, 200);
    // The other listener's request takes the same kept connection.
    assert_eq!(lab.get(&port81, &[]).0, 200);
    assert_eq!(lab.target_stats(T1), (1, 2));
    // A reload that leaves the group alone keeps its connections.
    lab.reload(&two_listeners("after", ""));
    assert_eq!(lab.get(&url("/r"), &[]), (200, "after".to_owned()));
    assert_eq!(lab.get(&url("/p"), &[]).0, 200);
    assert_eq!(lab.get(&port81, &[]).0, 200);
    assert_eq!(lab.target_stats(T1), (1, 4));
    // One that changes the group's pool settings starts a new pool.
    lab.reload(&two_listeners("after", "keep_alive_timeout = 30\n"));
    assert_eq!(lab.get(&url("/p"), &[]).0, 200);
    assert_eq!(lab.get(&port81, &[]).0, 200);
    assert_eq!(lab.target_stats(T1), (2, 6));
}

#[test]
fn idle_client_connection_is_closed_after_idle_timeout() {
    let lab = two_second_idle_timeout();
    // A connection that never sends a byte.
    let mut idle = lab.connect_to(80);
    let opened = Instant::now();
    let mut buf = Vec::new();
    let n = idle.read_to_end(&mut buf).expect("closed by the proxy");
    let after = opened.elapsed();
    assert_eq!(n, 0, "{buf:?}");
    // Behaviour, not performance: closed around the 2 s timeout.
    assert!(
        AROUND_TWO_SECONDS.contains(&after),
        "closed after {after:?}"
    );
    // A connection that made one request is closed after the same idle
    // time that follows it.
    let mut used = lab.connect_to(80);
    used.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .expect("write");
    let (head, _) = read_response(&mut used);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let answered = Instant::now();
    let n = used.read_to_end(&mut buf).expect("closed by the proxy");
    assert_eq!(n, 0);
    let after = answered.elapsed();
    assert!(
        AROUND_TWO_SECONDS.contains(&after),
        "closed after {after:?}"
    );
}

#[test]
fn a_request_head_trickled_byte_by_byte_is_cut_at_the_idle_timeout() {
    let lab = two_second_idle_timeout();
    let mut conn = lab.connect_to(80);
    // First a whole request: the rule applies to each head, not only the
    // connection's first.
    conn.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .expect("write");
    let (head, _) = read_response(&mut conn);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Then a head that never ends, one byte every 200 ms: bytes keep
    // moving, so only the head rule can close it.
    let mut writer = conn.try_clone().expect("clone");
    let started = Instant::now();
    let trickle = std::thread::spawn(move || {
        let head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ";
        let mut sent = 0usize;
        for &b in head.iter().chain(std::iter::repeat(&b'a')) {
            if writer.write_all(&[b]).is_err() || started.elapsed() > Duration::from_secs(8) {
                break;
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
        sent
    });
    let (got, after) = read_until_closed(&mut conn);
    assert!(got.is_empty(), "{got:?}");
    assert!(
        AROUND_TWO_SECONDS.contains(&after),
        "closed after {after:?}"
    );
    // The client was still sending when it was cut.
    let sent = trickle.join().expect("trickle");
    assert!(sent >= 8, "only {sent} bytes sent");
}

#[test]
fn responses_that_stop_moving_are_cut_at_the_idle_timeout() {
    let config = ONE_GROUP
        .replace("address = \"10.77.0.2\"", "address = \"10.77.0.3\"")
        .replace("port = 80\n", "port = 80\nidle_timeout = 2\n");
    let lab = start(LabSpec {
        config: &config,
        targets: &[],
        tls: false,
        target_tls: false,
    });
    let ended = raw_target(&lab, &format!("{T2}:{TARGET_PORT}"));

    // A target that stops sending mid-body: the client's connection is cut
    // at the timeout, and so is the target's.
    let mut conn = lab.connect_to(80);
    conn.write_all(b"GET /stall HTTP/1.1\r\nHost: h\r\n\r\n")
        .expect("write");
    let (got, after) = read_until_closed(&mut conn);
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with("\r\n\r\nshort"),
        "{got}"
    );
    assert!(
        AROUND_TWO_SECONDS.contains(&after),
        "closed after {after:?}"
    );
    ended
        .recv_timeout(Duration::from_secs(5))
        .expect("the target's connection is closed too");

    // A client that stops sending its request body: cut at the timeout,
    // the target's connection too (the target reads the head, then waits).
    let mut conn = lab.connect_to(80);
    conn.write_all(b"POST /sink HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n0123456789")
        .expect("write");
    let (_, after) = read_until_closed(&mut conn);
    assert!(
        AROUND_TWO_SECONDS.contains(&after),
        "closed after {after:?}"
    );
    assert_eq!(
        ended.recv_timeout(Duration::from_secs(5)),
        Ok(10),
        "the target got the 10 body bytes, then its connection was closed"
    );

    // A client that stops reading a large body: the proxy stops taking it
    // from the target, nothing moves, and both connections are cut.
    let mut conn = lab.connect_to(80);
    conn.write_all(b"GET /flood HTTP/1.1\r\nHost: h\r\n\r\n")
        .expect("write");
    let written = ended
        .recv_timeout(Duration::from_secs(10))
        .expect("the target's writes fail once the proxy cuts");
    assert!(written < FLOOD, "{written}");
    let (got, _) = read_until_closed(&mut conn);
    assert!((got.len() as u64) < FLOOD, "{}", got.len());
}

#[test]
fn a_websocket_tunnel_is_closed_after_the_idle_timeout() {
    let lab = two_second_idle_timeout();
    let (mut s, head) = open_websocket(&lab);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Frames for twice the timeout keep it open: tunnel bytes are activity,
    // and no request head.
    for _ in 0..6 {
        assert_eq!(&websocket_echo(&mut s), b"\x81\x05hello");
        thread::sleep(Duration::from_millis(700));
    }
    let (_, after) = read_until_closed(&mut s);
    assert!(
        (Duration::from_millis(800)..Duration::from_secs(6)).contains(&after),
        "closed after {after:?}"
    );
}

// --- TLS toward targets ------------------------------------------------------

/// An http listener forwarding to an `https` group whose targets serve TLS
/// only; `tls` is its `[target_group.tls]` body. No health checks, as in
/// ONE_GROUP: the target's counts are asserted.
fn https_group(tls: &str) -> String {
    format!(
        r#"
[[listener]]
name = "web"
protocol = "http"
address = "10.77.0.1"
port = 80
target_group = "a"

[[target_group]]
name = "a"
protocol = "https"
port = 8080
  [target_group.tls]
  {tls}
  [[target_group.target]]
  address = "10.77.0.2"
  [target_group.health_check]
  enabled = false
"#
    )
}

#[test]
fn https_group_speaks_tls_to_targets_over_kept_connections() {
    let mut lab = start(LabSpec {
        config: &https_group(r#"ca_file = "@DIR@/ca.pem""#),
        targets: &[("t1", T1)],
        tls: false,
        target_tls: true,
    });
    lab.reset_target(T1);
    // The target speaks nothing but TLS: an answer proves the proxy's
    // handshake, verified against the CA with the target's address.
    let v = lab.echo(&url("/secure"), &[]);
    assert_eq!(v["name"], "t1");
    assert_eq!(v["path"], "/secure");
    // Handshakes happen per pooled connection, not per request.
    let codes = load(&lab, 4, 25, "/many");
    assert!(codes.iter().all(|c| c == "200"), "{codes:?}");
    let (conns, requests) = lab.target_stats(T1);
    assert_eq!(requests, 101);
    assert!(conns <= 5, "101 requests used {conns} target connections");

    // A CA that did not sign the target's certificate: refused, 502.
    lab.reload(&https_group(r#"ca_file = "@DIR@/other-ca.pem""#));
    assert_eq!(lab.get(&url("/refused"), &[]).0, 502);
    // verify = false: encrypted, not authenticated (what ELB does).
    lab.reload(&https_group("verify = false"));
    assert_eq!(lab.echo(&url("/unverified"), &[])["name"], "t1");
}
