//! Requests that try to walk around a listener's rules, from outside
//! through `lb run` with raw sockets (what no well-behaved client sends):
//! upgrades to anything but WebSocket, doubled or disguised hosts, transfer
//! codings a proxy cannot relay, and paths that name a ruled-out path
//! another way. Issue 14, items 7 to 10.
//!
//! Needs root (namespaces) and `LB_BIN`; panics otherwise, never skips.

mod http_lab;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;

use http_lab::*;

/// Rules in front of two groups: `/admin*` and the host
/// `blocked.example` are refused (403), the host `ok.example` goes to the
/// echoing target `t1`, anything else to the raw target on T2. `@EXTRA@`
/// is replaced with more listener keys.
const RULED: &str = r#"
[[listener]]
name = "web"
protocol = "http"
address = "10.77.0.1"
port = 80
target_group = "raw"
@EXTRA@
  [[listener.rule]]
  priority = 1
  conditions.path_pattern = ["/admin*"]
  action = { type = "fixed_response", status = 403, body = "denied path" }
  [[listener.rule]]
  priority = 2
  conditions.host_header = ["blocked.example"]
  action = { type = "fixed_response", status = 403, body = "denied host" }
  [[listener.rule]]
  priority = 3
  conditions.host_header = ["ok.example"]
  action = { type = "forward", target_group = "a" }

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

fn ruled_lab(extra: &str) -> Lab {
    let config = RULED.replace("@EXTRA@", extra);
    start(LabSpec {
        config: &config,
        targets: &[("t1", T1)],
        tls: false,
        target_tls: false,
    })
}

/// The status code of a raw response, and its body (everything after the
/// head).
fn status_and_body(resp: &str) -> (u16, &str) {
    let code = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status: {resp:?}"));
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code, body)
}

/// A target that switches protocols for any request with an `Upgrade`
/// field (what a careless or hostile back end may do; to `h2c` whatever was
/// asked on `/ws-wrong`), then answers every later request on that
/// connection `tunnelled <path>`; without the field it answers `plain
/// <path>` and keeps the connection. Serves each
/// connection on a thread of its own, until the test ends.
fn upgrading_target(lab: &Lab, addr: &str) {
    let addr: SocketAddr = addr.parse().expect("addr");
    let listener = lab
        .topo
        .lb
        .run(move || std::net::TcpListener::bind(addr))
        .expect("bind upgrading target");
    thread::spawn(move || {
        for s in listener.incoming().flatten() {
            thread::spawn(move || serve_upgrading(s));
        }
    });
}

fn serve_upgrading(mut s: TcpStream) {
    let mut tunnelled = false;
    while let Some(head) = read_head(&mut s) {
        let path = head.split(' ').nth(1).unwrap_or("").to_owned();
        let upgrade = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("upgrade:"))
            .map(|l| l["upgrade:".len()..].trim().to_owned());
        let answer = match upgrade {
            Some(asked) if !tunnelled => {
                tunnelled = true;
                let proto = if path == "/ws-wrong" {
                    "h2c".to_owned()
                } else {
                    asked
                };
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: {proto}\r\nConnection: upgrade\r\n\r\n"
                )
            }
            _ => {
                let body = match tunnelled {
                    true => format!("tunnelled {path}"),
                    false => format!("plain {path}"),
                };
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            }
        };
        if s.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// The next request head on `s` (no bodies here); `None` at its end.
fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).ok()?;
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Reads whatever comes on `s` within its read timeout, until it closes.
fn read_available(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

// --- item 7: only WebSocket is upgraded -------------------------------------

#[test]
fn only_websocket_is_upgraded_other_protocols_lose_the_upgrade_fields() {
    let lab = ruled_lab("");
    upgrading_target(&lab, &format!("{T2}:{TARGET_PORT}"));
    for proto in ["h2c", "foo/1", "websocketx"] {
        let mut s = lab.connect_to(80);
        // A first request asking to switch: forwarded without the upgrade
        // fields, so the target answers it as a plain request.
        let req = format!(
            "GET /start HTTP/1.1\r\nHost: h\r\nUpgrade: {proto}\r\nConnection: Upgrade\r\n\r\n"
        );
        s.write_all(req.as_bytes()).expect("write");
        let (head, body) = read_response(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "{proto}: {head}");
        assert_eq!(body, "plain /start", "{proto}");
        // The connection is no tunnel: a later request still meets the
        // rules (or the connection is closed), and never the target.
        s.set_read_timeout(Some(std::time::Duration::from_secs(3)))
            .expect("timeout");
        if s.write_all(b"GET /admin HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .is_ok()
        {
            let rest = read_available(&mut s);
            assert!(!rest.contains("tunnelled"), "{proto}: {rest}");
            if !rest.is_empty() {
                assert_eq!(status_and_body(&rest), (403, "denied path"), "{proto}");
            }
        }
    }
    // WebSocket is switched; a target that answers it with another
    // protocol is not believed: 502.
    for (path, status) in [("/ws", "HTTP/1.1 101"), ("/ws-wrong", "HTTP/1.1 502")] {
        let mut s = lab.connect_to(80);
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        s.write_all(req.as_bytes()).expect("write");
        let head = read_head(&mut s).expect("an answer");
        assert!(head.starts_with(status), "{path}: {head}");
    }
}

// --- item 8: one host, the one the rules see ---------------------------------

#[test]
fn two_hosts_are_refused_and_the_rules_see_the_host_the_target_gets() {
    let lab = ruled_lab("");
    upgrading_target(&lab, &format!("{T2}:{TARGET_PORT}"));
    // Two Host fields, or a list in one: 400, never routed on either.
    for hosts in [
        "Host: ok.example\r\nHost: blocked.example\r\n",
        "Host: ok.example, blocked.example\r\n",
        "Host: ok.example\r\nhost: ok.example\r\n",
        "Host: user@ok.example\r\n",
        "Host: ok example\r\n",
    ] {
        let resp = lab.raw(80, format!("GET / HTTP/1.1\r\n{hosts}\r\n").into_bytes());
        assert_eq!(status_and_body(&resp).0, 400, "{hosts:?}: {resp}");
    }
    // An absolute-form target's authority is the host (RFC 9112 section
    // 3.2.2): the rules see it, and the target gets it as Host.
    let resp = lab.raw(
        80,
        b"GET http://blocked.example/ HTTP/1.1\r\nHost: ok.example\r\nConnection: close\r\n\r\n"
            .to_vec(),
    );
    assert_eq!(status_and_body(&resp), (403, "denied host"), "{resp}");
    let resp = lab.raw(
        80,
        b"GET http://ok.example/abs HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n".to_vec(),
    );
    let (code, body) = status_and_body(&resp);
    assert_eq!(code, 200, "{resp}");
    let v: serde_json::Value = serde_json::from_str(body).expect("echo json");
    assert_eq!(v["path"], "/abs");
    assert_eq!(v["headers"]["host"], serde_json::json!(["ok.example"]));
    // A fully qualified name with its trailing dot is the same host.
    for host in ["blocked.example.", "BLOCKED.example.:80"] {
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let resp = lab.raw(80, req.into_bytes());
        assert_eq!(
            status_and_body(&resp),
            (403, "denied host"),
            "{host}: {resp}"
        );
    }
}

// --- item 9: transfer codings and versions -----------------------------------

#[test]
fn transfer_codings_a_proxy_cannot_relay_are_refused() {
    let lab = ruled_lab("");
    upgrading_target(&lab, &format!("{T2}:{TARGET_PORT}"));
    let chunked_body = "5\r\nhello\r\n0\r\n\r\n";
    for (coding, status) in [
        // A coding we do not implement (RFC 9112 section 6.1): 501.
        ("Transfer-Encoding: gzip, chunked\r\n", 501),
        (
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            501,
        ),
        ("Transfer-Encoding: identity, chunked\r\n", 501),
        // chunked twice is malformed: 400.
        ("Transfer-Encoding: chunked, chunked\r\n", 400),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            400,
        ),
    ] {
        let req = format!("POST / HTTP/1.1\r\nHost: ok.example\r\n{coding}\r\n{chunked_body}");
        let resp = lab.raw(80, req.into_bytes());
        assert_eq!(status_and_body(&resp).0, status, "{coding:?}: {resp}");
    }
    // chunked alone is relayed.
    let req = format!(
        "POST /?echo=1 HTTP/1.1\r\nHost: ok.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunked_body}"
    );
    let resp = lab.raw(80, req.into_bytes());
    assert_eq!(status_and_body(&resp), (200, "hello"), "{resp}");
    // A version hyper's parser does not know is refused, and the
    // connection closed.
    for version in ["HTTP/1.2", "HTTP/2.0", "HTTP/1.10"] {
        let req = format!("GET / {version}\r\nHost: ok.example\r\n\r\n");
        let resp = lab.raw(80, req.into_bytes());
        assert_eq!(status_and_body(&resp).0, 400, "{version}: {resp}");
    }
}

// --- item 10: the path rules see ----------------------------------------------

/// Paths that name `/admin` another way.
const DISGUISED_ADMIN: [&str; 5] = [
    "/%61dmin",
    "//admin",
    "/x/../admin",
    "/./admin",
    "/x/%2e%2e/admin",
];

#[test]
fn path_rules_see_the_raw_path_unless_normalisation_is_on() {
    // Off (the default, as ALB and HAProxy): the rules see the path as
    // sent, and so does the target.
    let lab = ruled_lab("");
    upgrading_target(&lab, &format!("{T2}:{TARGET_PORT}"));
    for path in DISGUISED_ADMIN {
        let req = format!("GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        let resp = lab.raw(80, req.into_bytes());
        assert_eq!(
            status_and_body(&resp),
            (200, &*format!("plain {path}")),
            "{resp}"
        );
    }
    drop(lab);
    // On: the rules and the target see the normalised path.
    let lab = ruled_lab("normalize_path = true");
    upgrading_target(&lab, &format!("{T2}:{TARGET_PORT}"));
    for path in DISGUISED_ADMIN {
        let req = format!("GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        let resp = lab.raw(80, req.into_bytes());
        assert_eq!(
            status_and_body(&resp),
            (403, "denied path"),
            "{path}: {resp}"
        );
    }
    for (sent, seen) in [
        ("/a/./b/../c%7e%41?q=%61", "plain /a/c~A?q=%61"),
        ("//a///b/", "plain /a/b/"),
        ("/a/%2f/b", "plain /a/%2F/b"),
        ("/a/..", "plain /"),
    ] {
        let req = format!("GET {sent} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        let resp = lab.raw(80, req.into_bytes());
        assert_eq!(status_and_body(&resp), (200, seen), "{sent}: {resp}");
    }
}
