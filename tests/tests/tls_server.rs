//! The TLS side of `https` and `tls` listeners as clients see it, from
//! outside through `lb run`: the server imposes its security policy's
//! cipher order (openssl's client asks in another), failed handshakes are
//! counted and logged as a sample rather than a line each, and sessions
//! resume across reloads (session tickets with keys kept by the listener,
//! and TLS 1.2 session IDs).
//! Issue 14, item 13.
//!
//! Needs root (namespaces), `LB_BIN` and openssl; panics otherwise, never
//! skips.

mod http_lab;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use http_lab::*;
use lb_tests::proc;
use rustls::{
    ClientConfig, ClientConnection, HandshakeKind, RootCertStore, StreamOwned,
    pki_types::{CertificateDer, ServerName, pem::PemObject},
};

const METRICS: &str = "10.77.0.1:9181";

/// An https listener (443) and a tls listener (8443), both in front of
/// `t1` (over HTTP and plain TCP), with the lab's self-signed certificate
/// for `lb.test`. The first line lands in the `[api]` table the lab's
/// header opened.
const TLS_LAB: &str = r#"
metrics_listen = "10.77.0.1:9181"

[[listener]]
name = "secure"
protocol = "https"
address = "10.77.0.1"
port = 443
target_group = "a"
  [[listener.tls.certificate]]
  cert = "@DIR@/cert.pem"
  key = "@DIR@/key.pem"

[[listener]]
name = "tls"
protocol = "tls"
address = "10.77.0.1"
port = 8443
target_group = "plain"
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
name = "plain"
protocol = "tcp"
port = 8080
  [[target_group.target]]
  address = "10.77.0.2"
  [target_group.health_check]
  enabled = false
"#;

fn tls_lab() -> Lab {
    proc::require_tool("openssl");
    start(LabSpec {
        config: TLS_LAB,
        targets: &[("t1", T1)],
        tls: true,
        target_tls: false,
    })
}

/// `openssl s_client` on `port` with `args`, its input closed; stdout.
fn s_client(lab: &Lab, port: u16, args: &str) -> String {
    let cmd = format!(
        "openssl s_client -connect {VIP}:{port} -servername lb.test {args} </dev/null 2>/dev/null"
    );
    let out = lab.run(&["sh", "-c", &cmd]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cipher a `s_client` output says was negotiated.
fn cipher(out: &str) -> &str {
    out.lines()
        .find_map(|l| l.split_once(", Cipher is ").map(|(_, c)| c.trim()))
        .unwrap_or_else(|| panic!("no cipher in {out}"))
}

#[test]
fn the_server_imposes_its_policys_cipher_order() {
    let lab = tls_lab();
    for port in [443, 8443] {
        // The client prefers ChaCha20, then AES-256: the server's order
        // (ELB's) puts AES-128 first.
        let out = s_client(
            &lab,
            port,
            "-tls1_3 -ciphersuites TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256",
        );
        assert_eq!(cipher(&out), "TLS_AES_128_GCM_SHA256", "{port}");
        let out = s_client(
            &lab,
            port,
            "-tls1_2 -cipher ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256",
        );
        assert_eq!(cipher(&out), "ECDHE-ECDSA-AES128-GCM-SHA256", "{port}");
        // What the client offers still bounds the choice.
        let out = s_client(&lab, port, "-tls1_2 -cipher ECDHE-ECDSA-AES256-GCM-SHA384");
        assert_eq!(cipher(&out), "ECDHE-ECDSA-AES256-GCM-SHA384", "{port}");
    }
}

/// A counter's value in the daemon's `/metrics`; 0 when absent.
fn metric(lab: &Lab, series: &str) -> u64 {
    let text = lab.curl(&[&format!("http://{METRICS}/metrics")]);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn failed_handshakes_are_counted_and_logged_as_a_sample() {
    let lab = tls_lab();
    const BAD: usize = 40;
    for port in [443, 8443] {
        for _ in 0..BAD {
            // Plain HTTP to a TLS port: not a ClientHello.
            let resp = lab.raw(port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n".to_vec());
            assert!(!resp.starts_with("HTTP/1.1 2"), "{resp}");
        }
    }
    // Every one counted...
    assert_eq!(
        metric(
            &lab,
            "lb_http_client_tls_negotiation_errors_total{listener=\"secure\"}"
        ),
        BAD as u64
    );
    assert_eq!(
        metric(
            &lab,
            "lb_proxy_errors_total{listener=\"tls\",reason=\"tls_handshake\"}"
        ),
        BAD as u64
    );
    // ...and logged once per listener (a line at most every 10 s, with
    // the count since the last), not a line each.
    let log = lab.daemon.as_ref().expect("lb run").output();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("tls handshake"))
        .collect();
    assert!(
        (2..=4).contains(&lines.len()),
        "{} lines about failed handshakes:\n{}",
        lines.len(),
        lines.join("\n")
    );
    // A good client still gets through.
    assert_eq!(lab.get(&format!("https://{VIP}/"), &["-k"]).0, 200);
}

/// A rustls client trusting the lab's certificate, offering only
/// `version`, remembering its sessions (rustls' default store).
fn resuming_client(
    lab: &Lab,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<ClientConfig> {
    let pem = lab.topo.run_dir().join("cert.pem");
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&pem).expect("the lab's certificate"))
        .expect("a root");
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[version])
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One request over a new TLS connection made with `config`, read to its
/// end (so the tickets that follow the handshake are taken in); how the
/// handshake went.
fn request(lab: &Lab, port: u16, config: &Arc<ClientConfig>) -> HandshakeKind {
    let tcp: TcpStream = tls::tcp(lab, port);
    let name = ServerName::try_from("lb.test").expect("name");
    let conn = ClientConnection::new(Arc::clone(config), name).expect("client");
    let mut s = StreamOwned::new(conn, tcp);
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut resp = Vec::new();
    let read = s.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{port}: {read:?} {resp}");
    s.conn.handshake_kind().expect("handshake done")
}

#[test]
fn sessions_resume_across_reloads() {
    let mut lab = tls_lab();
    let versions = [
        ("TLS 1.3", &rustls::version::TLS13),
        ("TLS 1.2", &rustls::version::TLS12),
    ];
    let clients: Vec<_> = [443, 8443]
        .into_iter()
        .flat_map(|port| versions.map(|(name, v)| (port, name, resuming_client(&lab, v))))
        .collect();
    for (port, name, c) in &clients {
        assert_eq!(
            request(&lab, *port, c),
            HandshakeKind::Full,
            "{port} {name}"
        );
        assert_eq!(
            request(&lab, *port, c),
            HandshakeKind::Resumed,
            "{port} {name}"
        );
    }
    // openssl, keeping its session in a file, resumes too: by ticket, and
    // by session ID (TLS 1.2 without tickets).
    let sess = lab.topo.run_dir().join("openssl.sess");
    let by_id = lab.topo.run_dir().join("openssl-id.sess");
    for (file, args) in [(&sess, ""), (&by_id, "-tls1_2 -no_ticket")] {
        let save = format!(
            "printf 'GET / HTTP/1.1\\r\\nHost: h\\r\\nConnection: close\\r\\n\\r\\n' | \
             openssl s_client -connect {VIP}:443 -servername lb.test {args} -sess_out {} \
             -ign_eof 2>/dev/null",
            file.display()
        );
        let out = lab.run(&["sh", "-c", &save]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("HTTP/1.1 200"),
            "{args}: {out:?}"
        );
    }
    // A reload builds the listeners' TLS settings anew; their ticket keys
    // and sessions by ID stay, so sessions still resume.
    lab.reload(TLS_LAB);
    for (port, name, c) in &clients {
        assert_eq!(
            request(&lab, *port, c),
            HandshakeKind::Resumed,
            "{port} {name}, after a reload"
        );
    }
    let out = s_client(&lab, 443, &format!("-sess_in {}", sess.display()));
    assert!(out.contains("Reused, TLSv1.3"), "{out}");
    let args = format!("-tls1_2 -no_ticket -sess_in {}", by_id.display());
    let out = s_client(&lab, 443, &args);
    assert!(out.contains("Reused, TLSv1.2"), "{out}");
}
