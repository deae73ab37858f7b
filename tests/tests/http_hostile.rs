//! Hostile clients against `http` and `https` listeners, from outside
//! through `lb run` (raw sockets, hand-written HTTP/2 frames, a TLS client
//! that stops half-way): every way of holding a connection without using
//! it is cut at a documented bound, and the target connections it held go
//! with it; HTTP/2 clients that flood cheap frames are told to calm down
//! and closed, and one client connection holds a bounded number of target
//! connections. Issue 14, items 1 to 3 and 6.
//!
//! Needs root (namespaces) and `LB_BIN`; panics otherwise, never skips.

mod http_lab;

use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use http_lab::h2;
use http_lab::tls;
use http_lab::*;

/// An http (80) and an https (443) listener with a 2 s idle timeout, both
/// forwarding to `t1`; `/sink` goes to the raw target on T2 (which reads a
/// request body until its connection ends). No health checks: the raw
/// target counts its connections.
const HOSTILE: &str = r#"
[[listener]]
name = "web"
protocol = "http"
address = "10.77.0.1"
port = 80
idle_timeout = 2
target_group = "a"
  [[listener.rule]]
  priority = 1
  conditions.path_pattern = ["/sink"]
  action = { type = "forward", target_group = "raw" }

[[listener]]
name = "secure"
protocol = "https"
address = "10.77.0.1"
port = 443
idle_timeout = 2
target_group = "a"
  [[listener.tls.certificate]]
  cert = "@DIR@/cert.pem"
  key = "@DIR@/key.pem"

[[target_group]]
name = "a"
protocol = "http"
port = 8080
  [[target_group.target]]
  address = "10.77.0.2"
  [target_group.health_check]
  enabled = false

[[target_group]]
name = "raw"
protocol = "http"
port = 8080
  [[target_group.target]]
  address = "10.77.0.3"
  [target_group.health_check]
  enabled = false
"#;

fn hostile_lab() -> Lab {
    start(LabSpec {
        config: HOSTILE,
        targets: &[("t1", T1)],
        tls: true,
        target_tls: false,
    })
}

/// Runs each case on a thread of its own (each waits out a timeout) and
/// returns their results in order.
fn at_once<T: Send + 'static>(cases: Vec<Box<dyn FnOnce() -> T + Send>>) -> Vec<T> {
    let handles: Vec<_> = cases.into_iter().map(thread::spawn).collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("case panicked"))
        .collect()
}

/// How long after its start a connection that `bytes` were written on
/// (then nothing) took to be closed; panics if it was not closed.
fn closed_after_writing<S: Read + Write>(mut s: S, bytes: &[u8]) -> Duration {
    s.write_all(bytes).expect("write");
    s.flush().expect("flush");
    let (_, after) = read_until_closed_any(&mut s);
    after
}

/// [`read_until_closed`] for any stream (TLS too); also takes a TLS
/// stream's end without close_notify as closed.
fn read_until_closed_any(s: &mut impl Read) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let read = s.read_to_end(&mut got);
    let closed = match &read {
        Ok(_) => true,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
        ),
    };
    assert!(closed, "{read:?} {:?}", String::from_utf8_lossy(&got));
    (got, started.elapsed())
}

// --- item 1: request heads and handshakes that never finish ------------------

#[test]
fn an_incomplete_request_head_then_silence_is_cut_at_the_idle_timeout() {
    let lab = std::sync::Arc::new(hostile_lab());
    let mut cases: Vec<Box<dyn FnOnce() -> (String, Duration) + Send>> = Vec::new();
    for head in [&b"GET /"[..], b"\r\n", b"GET / HTTP/1.1\r\nHost: h\r\n"] {
        let plain = lab.clone();
        cases.push(Box::new(move || {
            let name = format!("http {:?}", String::from_utf8_lossy(head));
            (name, closed_after_writing(tls::tcp(&plain, 80), head))
        }));
        let secure = lab.clone();
        cases.push(Box::new(move || {
            let name = format!("https {:?}", String::from_utf8_lossy(head));
            let s = tls::connect(&secure, 443, &[]);
            (name, closed_after_writing(s, head))
        }));
    }
    // Not only a connection's first head: one after a complete exchange.
    let second = lab.clone();
    cases.push(Box::new(move || {
        let mut s = tls::tcp(&second, 80);
        s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            .expect("write");
        let (head, _) = read_response(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        (
            "http, second head".to_owned(),
            closed_after_writing(s, b"GET /"),
        )
    }));
    for (name, after) in at_once(cases) {
        assert!(
            AROUND_TWO_SECONDS.contains(&after),
            "{name}: closed after {after:?}"
        );
    }
}

#[test]
fn a_connection_silent_from_the_start_or_in_its_handshake_is_closed_at_the_idle_timeout() {
    let lab = std::sync::Arc::new(hostile_lab());
    let cases: Vec<Box<dyn FnOnce() -> (&'static str, Duration) + Send>> = vec![
        // Not a byte (http: the documented idle timeout).
        {
            let lab = lab.clone();
            Box::new(move || {
                (
                    "http, nothing",
                    closed_after_writing(tls::tcp(&lab, 80), b""),
                )
            })
        },
        // Not a byte of a handshake.
        {
            let lab = lab.clone();
            Box::new(move || {
                (
                    "https, nothing",
                    closed_after_writing(tls::tcp(&lab, 443), b""),
                )
            })
        },
        // A ClientHello, then never the client's Finished.
        {
            let lab = lab.clone();
            Box::new(move || {
                let hello = tls::client_hello();
                (
                    "https, half a handshake",
                    closed_after_writing(tls::tcp(&lab, 443), &hello),
                )
            })
        },
    ];
    for (name, after) in at_once(cases) {
        assert!(
            AROUND_TWO_SECONDS.contains(&after),
            "{name}: closed after {after:?}"
        );
    }
}

// --- item 2: HTTP/2 clients that stop answering --------------------------------

/// What a silent HTTP/2 client saw: when the GOAWAY came and its code, and
/// when the connection was closed (both from the client's last write).
struct Silent {
    goaway_after: Duration,
    code: Option<u32>,
    closed_after: Duration,
}

/// Writes `bytes`, then reads frames without ever answering (no SETTINGS
/// ack, no PING ack) until the connection ends.
fn silent_h2<S: Read + Write>(mut s: S, bytes: &[u8]) -> Silent {
    s.write_all(bytes).expect("write");
    s.flush().expect("flush");
    let started = Instant::now();
    let code = h2::until_goaway(&mut s);
    let goaway_after = started.elapsed();
    let (_, _) = read_until_closed_any(&mut s);
    Silent {
        goaway_after,
        code,
        closed_after: started.elapsed(),
    }
}

#[test]
fn a_silent_http2_client_gets_goaway_then_is_closed() {
    let lab = std::sync::Arc::new(hostile_lab());
    let mut one_request = h2::hello();
    one_request.extend(h2::request(1, "GET", "/one", None));
    let cases: Vec<Box<dyn FnOnce() -> (&'static str, Silent) + Send>> = vec![
        {
            let lab = lab.clone();
            Box::new(move || {
                (
                    "h2c, no request",
                    silent_h2(tls::tcp(&lab, 80), &h2::hello()),
                )
            })
        },
        {
            let (lab, bytes) = (lab.clone(), one_request.clone());
            Box::new(move || ("h2c, one request", silent_h2(tls::tcp(&lab, 80), &bytes)))
        },
        {
            let lab = lab.clone();
            Box::new(move || {
                let s = tls::connect(&lab, 443, &["h2"]);
                ("h2, no request", silent_h2(s, &h2::hello()))
            })
        },
        {
            let (lab, bytes) = (lab.clone(), one_request);
            Box::new(move || {
                let s = tls::connect(&lab, 443, &["h2"]);
                ("h2, one request", silent_h2(s, &bytes))
            })
        },
    ];
    for (name, seen) in at_once(cases) {
        // The documented GOAWAY at the idle timeout...
        assert_eq!(seen.code, Some(h2::NO_ERROR), "{name}: no GOAWAY");
        assert!(
            AROUND_TWO_SECONDS.contains(&seen.goaway_after),
            "{name}: GOAWAY after {:?}",
            seen.goaway_after
        );
        // ...then the close, GOAWAY_GRACE (5 s) after it at most.
        let grace = seen.closed_after - seen.goaway_after;
        assert!(
            (Duration::from_secs(4)..Duration::from_secs(9)).contains(&grace),
            "{name}: closed {grace:?} after the GOAWAY"
        );
    }
}

// --- item 3: request bodies that never start ------------------------------------

#[test]
fn a_request_body_that_never_starts_is_cut_with_its_target_connection() {
    let lab = hostile_lab();
    let ended = raw_target(&lab, &format!("{T2}:{TARGET_PORT}"));
    // HTTP/1.1: a length promised, not a byte sent.
    let mut s = tls::tcp(&lab, 80);
    let after = closed_after_writing(
        &mut s,
        b"POST /sink HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n",
    );
    assert!(
        AROUND_TWO_SECONDS.contains(&after),
        "closed after {after:?}"
    );
    assert_eq!(
        ended.recv_timeout(Duration::from_secs(5)),
        Ok(0),
        "the target's connection is closed too, having had no body byte"
    );
    // HTTP/2: a stream's HEADERS without END_STREAM, then no DATA.
    let mut bytes = h2::hello();
    bytes.extend(h2::request(1, "POST", "/sink", Some(100)));
    let seen = silent_h2(tls::tcp(&lab, 80), &bytes);
    assert!(
        AROUND_TWO_SECONDS.contains(&seen.closed_after),
        "h2c: closed after {:?}",
        seen.closed_after
    );
    assert_eq!(ended.recv_timeout(Duration::from_secs(5)), Ok(0));
}

// --- item 6: HTTP/2 frame floods and target connections per client ----------------

/// `n` copies of one frame, in one buffer.
fn repeated(frame: &[u8], n: usize) -> Vec<u8> {
    frame.repeat(n)
}

/// Floods `frames` (in rounds) on a fresh h2c connection from one thread
/// while reading on another; the GOAWAY's code, and whether the
/// connection then ended.
fn flood_h2c(lab: &Lab, opening: &[u8], frames: &[u8]) -> (Option<u32>, bool) {
    let mut s = tls::tcp(lab, 80);
    s.write_all(&h2::hello()).expect("write");
    s.write_all(opening).expect("write");
    let mut writer = s.try_clone().expect("clone");
    let frames = frames.to_vec();
    // Far more than any budget: 2 million frames at most.
    let flooding = thread::spawn(move || h2::flood(&mut writer, &frames, 2000));
    let code = h2::until_goaway(&mut s);
    let mut rest = Vec::new();
    let ended = match s.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    let rounds = flooding.join().expect("flood");
    assert!(rounds < 2000, "the whole flood was taken");
    (code, ended)
}

#[test]
fn http2_control_frame_floods_get_goaway_enhance_your_calm() {
    let lab = hostile_lab();
    let window_update = h2::frame(h2::WINDOW_UPDATE, 0, 0, &1u32.to_be_bytes());
    let ping = h2::frame(h2::PING, 0, 0, &[7; 8]);
    let settings = h2::frame(h2::SETTINGS, 0, 0, &[]);
    // Stream 3 depends on stream 1 (exclusive bit clear), weight 16.
    let priority = h2::frame(h2::PRIORITY, 0, 3, &[0, 0, 0, 1, 16]);
    let empty_data = h2::frame(h2::DATA, 0, 1, &[]);
    let upload = h2::request(1, "POST", "/up", Some(1_000_000));
    for (name, opening, one) in [
        ("WINDOW_UPDATE", &[][..], &window_update),
        ("PING", &[], &ping),
        ("SETTINGS", &[], &settings),
        ("PRIORITY", &[], &priority),
        ("empty DATA", &upload[..], &empty_data),
    ] {
        let (code, ended) = flood_h2c(&lab, opening, &repeated(one, 1000));
        assert_eq!(code, Some(h2::ENHANCE_YOUR_CALM), "{name}");
        assert!(ended, "{name}: the connection stays open");
    }
    // Over TLS too.
    let mut s = tls::connect(&lab, 443, &["h2"]);
    s.write_all(&h2::hello()).expect("write");
    let flood = repeated(&window_update, 5000);
    let _ = s.write_all(&flood);
    let _ = s.flush();
    assert_eq!(h2::until_goaway(&mut s), Some(h2::ENHANCE_YOUR_CALM), "h2");
    // A client that uses its connection is no flood: a 64 MB download
    // (thousands of DATA frames and the client's WINDOW_UPDATEs) and 2000
    // requests on one connection.
    let size = 64 << 20;
    let out = lab.curl(&[
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download}",
        &url(&format!("/big?chunked={size}")),
    ]);
    assert_eq!(out, format!("200 {size}"));
    let out = lab.run(&["h2load", "-n", "2000", "-c", "1", "-m", "100", &url("/")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2000 succeeded"), "{text}");
}

#[test]
fn one_http2_connection_holds_a_bounded_number_of_target_connections() {
    lb_tests::proc::require_tool("h2load");
    let mut lab = hostile_lab();
    // 100 streams at once on one connection, each answered after 300 ms:
    // the default lets 32 of them hold a target connection at a time, the
    // others wait their turn, and all are answered.
    let streams = |lab: &Lab, n: &str| {
        lab.reset_target(T1);
        let out = lab.run(&[
            "h2load",
            "-n",
            n,
            "-c",
            "1",
            "-m",
            n,
            &url("/?sleep_ms=300"),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains(&format!("{n} succeeded")), "{text}");
        lab.target_most_at_once(T1)
    };
    assert_eq!(streams(&lab, "100"), 32);
    // Configured lower, for connections opened after the reload.
    lab.reload(&HOSTILE.replace(
        "port = 80\nidle_timeout = 2\n",
        "port = 80\nidle_timeout = 2\nhttp2_max_target_connections = 4\n",
    ));
    assert_eq!(streams(&lab, "20"), 4);
}
