//! The userspace data path: `lb run` with `dataplane = "userspace"` (or
//! `auto` without the privileges XDP needs) serving tcp and tls listeners
//! from its own sockets, in the three-namespace topology of the e2e tests.
//! The VIPs are put on the LB namespace's loopback so the daemon can bind
//! them; clients and targets are real processes (lb-test-server, openssl,
//! python3).
//!
//! Needs root, `LB_BIN`, openssl, python3 and setpriv; panics otherwise.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lb_tests::certs::TestCa as Ca;
use lb_tests::client::EchoConn;
use lb_tests::lab::{self as labs, server_bin};
use lb_tests::netns;
use lb_tests::proc::{self, LbDaemon, NsChild};
use lb_tests::topology::{CLIENT4, TARGET_TCP_PORT, Topology, VIP4, target4};

const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(VIP4.into(), port)
}

/// The lab's topology with the VIPs local to the LB namespace; each test
/// writes its config and starts `lb run` itself.
fn lab(name: &str, targets: usize) -> Topology {
    labs::topology(name, targets, true)
}

/// `[daemon]` for the userspace path, then `body`.
fn write_config(topo: &Topology, body: &str) -> PathBuf {
    labs::userspace_config(topo, body)
}

fn tcp_listener(name: &str, port: u16, group: &str) -> String {
    format!(
        "[[listener]]\nname = {name:?}\nprotocol = \"tcp\"\naddress = \"{VIP4}\"\nport = {port}\ntarget_group = {group:?}\n\n"
    )
}

/// A tcp group of targets `targets` (1-based) on `port`.
fn tcp_group(name: &str, port: u16, targets: &[usize], extra: &str) -> String {
    let mut s =
        format!("[[target_group]]\nname = {name:?}\nprotocol = \"tcp\"\nport = {port}\n{extra}\n");
    for &i in targets {
        s += &format!(
            "  [[target_group.target]]\n  address = \"{}\"\n\n",
            target4(i)
        );
    }
    s
}

fn connect(topo: &Topology, port: u16) -> EchoConn {
    EchoConn::connect_in(topo.client.name(), vip(port), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connection to {}: {e:#}", vip(port)))
}

#[test]
fn tcp_listener_served_in_userspace_both_ways_with_half_close() {
    let topo = lab("usertcp", 2);
    let config = write_config(
        &topo,
        &(tcp_listener("web", 80, "web") + &tcp_group("web", TARGET_TCP_PORT, &[1, 2], "")),
    );
    let _lb = LbDaemon::start(topo.lb.name(), &config);

    // Round robin over equal weights: t1, t2, t1, t2.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let mut c = connect(&topo, 80);
        c.echo("ping").expect("echo");
        // The target sees the proxy's address on its link, not the client.
        assert_eq!(
            c.seen.ip().to_string(),
            if c.target == "t1" {
                "10.200.11.1"
            } else {
                "10.200.12.1"
            }
        );
        seen.push(c.target.clone());
    }
    assert_eq!(seen, ["t1", "t2", "t1", "t2"]);

    // Half-close: the client's FIN reaches the target, which still answers
    // everything sent before it and then closes; the client reads to EOF.
    let everything = netns::in_netns(topo.client.name(), || {
        let mut s = TcpStream::connect_timeout(&vip(80), IO_TIMEOUT).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        s.write_all(b"one\ntwo\n").expect("write");
        s.shutdown(Shutdown::Write).expect("shutdown");
        let mut all = String::new();
        s.read_to_string(&mut all).expect("read to EOF");
        all
    });
    let lines: Vec<&str> = everything.lines().collect();
    assert_eq!(lines.len(), 3, "{everything:?}");
    assert!(lines[0].starts_with("t1 10.200.11.1:"), "{everything:?}");
    assert_eq!(&lines[1..], ["one", "two"]);
}

#[test]
fn auto_falls_back_to_userspace_without_bpf_privileges() {
    let topo = lab("autofb", 1);
    let text = format!(
        "[daemon]\ndataplane = \"auto\"\ninterfaces = {:?}\npin_dir = {:?}\n\n[api]\nsocket = {:?}\n\n{}{}",
        topo.lb_interfaces(),
        topo.pin_dir().display().to_string(),
        topo.api_socket().display().to_string(),
        tcp_listener("web", 80, "web"),
        tcp_group("web", TARGET_TCP_PORT, &[1], "")
    );
    let config = topo.config_path();
    std::fs::write(&config, text).expect("write config");
    // Without CAP_BPF, CAP_SYS_ADMIN, CAP_PERFMON and CAP_NET_ADMIN in the
    // bounding set, root's lb cannot create maps or load the program.
    let lb = proc::lb_bin();
    let args = [
        "--bounding-set=-bpf,-sys_admin,-perfmon,-net_admin".into(),
        "--".into(),
        lb.display().to_string(),
        "run".into(),
        "--config".into(),
        config.display().to_string(),
    ];
    let mut child = NsChild::spawn(
        "lb run (no bpf caps)",
        topo.lb.name(),
        Path::new("/usr/bin/setpriv"),
        &args,
        proc::verbose(),
    );
    let warning = child.wait_for_line("XDP data path unavailable", proc::LB_READY_TIMEOUT);
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains("Operation not permitted") || warning.contains("permission"),
        "the warning must give the reason: {warning}"
    );
    child.wait_for_line(proc::LB_READY_PATTERN, proc::LB_READY_TIMEOUT);
    let mut c = connect(&topo, 80);
    assert_eq!(c.target, "t1");
    c.echo("through the fallback").expect("echo");
}

#[test]
fn reload_adds_and_removes_listeners_while_connections_on_others_survive() {
    let topo = lab("userreload", 1);
    let group = tcp_group("g", TARGET_TCP_PORT, &[1], "");
    let config = write_config(
        &topo,
        &(tcp_listener("a", 80, "g") + &tcp_listener("b", 81, "g") + &group),
    );
    let mut lb = LbDaemon::start(topo.lb.name(), &config);
    let mut on_a = connect(&topo, 80);
    let mut on_b = connect(&topo, 81);
    on_a.echo("before").expect("echo on a");
    on_b.echo("before").expect("echo on b");

    write_config(
        &topo,
        &(tcp_listener("a", 80, "g") + &tcp_listener("c", 82, "g") + &group),
    );
    lb.reload();
    on_a.echo("after the reload")
        .expect("a's connection survives");
    connect(&topo, 82).echo("new listener").expect("echo on c");
    // b is gone: its socket is closed and so are its connections.
    let refused = netns::in_netns(topo.client.name(), || {
        TcpStream::connect_timeout(&vip(81), IO_TIMEOUT).map_err(|e| e.kind())
    });
    assert_eq!(refused.err(), Some(std::io::ErrorKind::ConnectionRefused));
    assert!(on_b.echo("after").is_err(), "b's connection must be closed");
}

// --- TLS ------------------------------------------------------------------

fn cert_entry(cert: &Path, key: &Path, default: bool) -> String {
    format!(
        "  [[listener.tls.certificate]]\n  cert = {:?}\n  key = {:?}\n  default = {default}\n",
        cert.display().to_string(),
        key.display().to_string()
    )
}

fn tls_listener(name: &str, port: u16, group: &str, tls: &str) -> String {
    format!(
        "[[listener]]\nname = {name:?}\nprotocol = \"tls\"\naddress = \"{VIP4}\"\nport = {port}\ntarget_group = {group:?}\n  [listener.tls]\n{tls}\n"
    )
}

/// `openssl s_client -connect VIP:port args…` from the client namespace:
/// (success, stdout + stderr).
fn s_client(topo: &Topology, port: u16, args: &[&str]) -> (bool, String) {
    let connect = vip(port).to_string();
    let mut all = vec!["netns", "exec", topo.client.name(), "openssl", "s_client"];
    all.extend(["-connect", &connect]);
    all.extend_from_slice(args);
    let out = netns::try_run("ip", &all).expect("run openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A python3 TLS client: verifies against `ca` with `sni`, reads a greeting
/// when `greet`, sends "ping", reads one line. Prints JSON.
const PY_CLIENT: &str = r#"
import json, socket, ssl, sys
host, port, ca, sni, greet = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "1"
ctx = ssl.create_default_context(cafile=ca)
ctx.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
raw = socket.create_connection((host, port), timeout=5)
local = "%s:%d" % raw.getsockname()[:2]
s = ctx.wrap_socket(raw, server_hostname=sni)
f = s.makefile("rwb")
out = {"local": local, "version": s.version(), "cipher": s.cipher()[0]}
if greet:
    out["greeting"] = f.readline().decode().strip()
try:
    f.write(b"ping\n"); f.flush()
    out["reply"] = f.readline().decode().strip()
except OSError as e:
    out["reply"] = "error: %s" % e
print(json.dumps(out))
"#;

fn py_client(topo: &Topology, port: u16, ca: &Path, sni: &str, greet: bool) -> serde_json::Value {
    let script = topo.run_dir().join("client.py");
    std::fs::write(&script, PY_CLIENT).expect("write client.py");
    let out = netns::exec_in(
        topo.client.name(),
        &[
            "python3".to_owned(),
            script.display().to_string(),
            VIP4.to_string(),
            port.to_string(),
            ca.display().to_string(),
            sni.to_owned(),
            if greet { "1" } else { "0" }.to_owned(),
        ],
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client output {:?}: {e}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn tls_listener_sni_default_policies_and_alpn() {
    let topo = lab("tlssni", 1);
    let dir = topo.run_dir();
    let ca = Ca::new("lb test CA");
    let ca_file = ca.write(dir, "ca");
    let (a_cert, a_key) = ca.leaf(dir, "a", "a.example.com", &["a.example.com"]);
    let (w_cert, w_key) = ca.leaf(dir, "w", "wildcard.example.org", &["*.example.org"]);
    let (d_cert, d_key) = ca.leaf(dir, "d", "default.example.net", &["default.example.net"]);
    let certs = cert_entry(&a_cert, &a_key, false)
        + &cert_entry(&w_cert, &w_key, false)
        + &cert_entry(&d_cert, &d_key, true);
    let body = tls_listener(
        "tls",
        443,
        "g",
        &format!("  alpn = [\"h2\", \"http/1.1\"]\n{certs}"),
    ) + &tls_listener(
        "tls13",
        444,
        "g",
        &format!("  security_policy = \"ELBSecurityPolicy-TLS13-1-3-2021-06\"\n{certs}"),
    ) + &tcp_group("g", TARGET_TCP_PORT, &[1], "");
    let config = write_config(&topo, &body);
    let mut lb = LbDaemon::start(topo.lb.name(), &config);

    // SNI picks the certificate; no or an unknown SNI gets the default.
    for (sni, cn) in [
        (Some("a.example.com"), "a.example.com"),
        (Some("x.example.org"), "wildcard.example.org"),
        (Some("nobody.example.com"), "default.example.net"),
        (None, "default.example.net"),
    ] {
        let mut args = vec!["-tls1_3"];
        match sni {
            Some(s) => args.extend(["-servername", s]),
            None => args.push("-noservername"),
        }
        let (ok, out) = s_client(&topo, 443, &args);
        assert!(ok, "{sni:?}: {out}");
        assert!(
            out.contains(&format!("subject=CN = {cn}\n")),
            "{sni:?} must get {cn}: {out}"
        );
    }

    // Default policy: TLS 1.2 yes (ECDHE AEAD), TLS 1.0 and 1.1 no.
    let (ok, out) = s_client(&topo, 443, &["-tls1_2", "-servername", "a.example.com"]);
    assert!(ok, "{out}");
    assert!(out.contains("New, TLSv1.2, Cipher is ECDHE-"), "{out}");
    let mark = lb.mark();
    for old in ["-tls1", "-tls1_1"] {
        // SECLEVEL=0 so that the client really offers the old version.
        let (ok, out) = s_client(&topo, 443, &[old, "-cipher", "DEFAULT:@SECLEVEL=0"]);
        assert!(!ok, "{old} must be refused: {out}");
        assert!(!out.contains("Cipher is ECDHE"), "{out}");
    }
    let refusal = lb.wait_for_line_after(mark, "tls handshake failed");
    assert!(refusal.contains("listener=tls"), "{refusal}");

    // TLS 1.3-only policy: 1.2 refused, 1.3 accepted.
    let (ok, out) = s_client(&topo, 444, &["-tls1_2"]);
    assert!(!ok, "TLS 1.2 must be refused on tls13: {out}");
    let (ok, out) = s_client(&topo, 444, &["-tls1_3"]);
    assert!(ok && out.contains("New, TLSv1.3, Cipher is TLS_"), "{out}");

    // ALPN from the listener's list; none when the client offers none of it.
    let (ok, out) = s_client(&topo, 443, &["-alpn", "h2"]);
    assert!(ok && out.contains("ALPN protocol: h2"), "{out}");
    let (ok, out) = s_client(&topo, 443, &["-alpn", "http/1.1,h2"]);
    assert!(
        ok && out.contains("ALPN protocol: h2"),
        "server preference: {out}"
    );
    let (ok, out) = s_client(&topo, 444, &["-alpn", "h2"]);
    assert!(ok && out.contains("No ALPN negotiated"), "{out}");

    // Data both ways through the terminated connection, with verification
    // against the CA, and the per-connection log line with version and
    // cipher.
    let reply = py_client(&topo, 443, &ca_file, "a.example.com", true);
    assert_eq!(reply["version"], "TLSv1.3", "{reply}");
    assert!(
        reply["greeting"]
            .as_str()
            .unwrap()
            .starts_with("t1 10.200.11.1:"),
        "{reply}"
    );
    assert_eq!(reply["reply"], "ping", "{reply}");
    let local = reply["local"].as_str().expect("local").to_owned();
    let line = lb.wait_for_line_after(Default::default(), &format!("client={local}"));
    assert!(line.contains("tls connection closed"), "{line}");
    assert!(line.contains("tls_version=TLSv1_3"), "{line}");
    assert!(line.contains("cipher=TLS13_"), "{line}");
    assert!(line.contains("sni=a.example.com"), "{line}");
}

#[test]
fn tls_listener_proxy_v2_and_backend_tls() {
    let mut topo = lab("tlsbe", 3);
    let dir = topo.run_dir().to_owned();
    let ca = Ca::new("lb test CA");
    let ca_file = ca.write(&dir, "ca");
    let (l_cert, l_key) = ca.leaf(&dir, "l", "vip.example.com", &["vip.example.com"]);
    // Target 2 expects PROXY v2 headers on 8081.
    let proxied = NsChild::spawn(
        "server t2 proxy-v2",
        topo.targets[1].name(),
        &server_bin(),
        &["--name", "t2pp", "--tcp", "[::]:8081", "--proxy-v2"],
        proc::verbose(),
    );
    wait_ready(proxied, &mut topo);
    // Target 3 speaks TLS with its own CA: openssl s_server echoing lines
    // reversed.
    let target_ca = Ca::new("target CA");
    let target_ca_file = target_ca.write(&dir, "target-ca");
    let other_ca_file = Ca::new("unrelated CA").write(&dir, "other-ca");
    let t3 = target4(3).to_string();
    let (t_cert, t_key) = target_ca.leaf(&dir, "t3", "t3", &[t3.as_str()]);
    let (t_cert, t_key) = (t_cert.display().to_string(), t_key.display().to_string());
    let mut s_server = NsChild::spawn(
        "openssl s_server t3",
        topo.targets[2].name(),
        Path::new("/usr/bin/openssl"),
        &[
            "s_server", "-accept", "8443", "-cert", &t_cert, "-key", &t_key, "-rev",
        ],
        proc::verbose(),
    );
    s_server.wait_for_line("ACCEPT", Duration::from_secs(10));
    topo.adopt(s_server);

    let certs = cert_entry(&l_cert, &l_key, true);
    let tls_group = |name: &str, ca: &Path| {
        format!(
            "[[target_group]]\nname = {name:?}\nprotocol = \"tls\"\nport = 8443\n  [target_group.tls]\n  ca_file = {:?}\n  [[target_group.target]]\n  address = \"{t3}\"\n\n",
            ca.display().to_string()
        )
    };
    let body = tls_listener("pp", 443, "pp", &certs)
        + &tls_listener("be", 444, "be", &certs)
        + &tls_listener("badca", 445, "badca", &certs)
        + &tcp_group("pp", 8081, &[2], "proxy_protocol_v2 = true")
        + &tls_group("be", &target_ca_file)
        + &tls_group("badca", &other_ca_file);
    let config = write_config(&topo, &body);
    let mut lb = LbDaemon::start(topo.lb.name(), &config);

    // The target learns the client's own address from the PROXY header.
    let reply = py_client(&topo, 443, &ca_file, "vip.example.com", true);
    let local = reply["local"].as_str().expect("local");
    assert!(local.starts_with(&format!("{CLIENT4}:")), "{reply}");
    assert_eq!(reply["greeting"], format!("t2pp {local}"), "{reply}");
    assert_eq!(reply["reply"], "ping", "{reply}");

    // Back-end TLS, verified against the target's CA.
    let reply = py_client(&topo, 444, &ca_file, "vip.example.com", false);
    assert_eq!(reply["reply"], "gnip", "{reply}");

    // A CA the target's certificate does not chain to: refused, logged.
    let reply = py_client(&topo, 445, &ca_file, "vip.example.com", false);
    let r = reply["reply"].as_str().expect("reply");
    assert!(r.is_empty() || r.starts_with("error"), "{reply}");
    let line = lb.wait_for_line_after(Default::default(), "target tls handshake failed");
    assert!(line.contains("listener=badca"), "{line}");
    assert!(line.contains("UnknownIssuer"), "{line}");
}

fn wait_ready(mut child: NsChild, topo: &mut Topology) {
    child.wait_for_line("ready", Duration::from_secs(10));
    topo.adopt(child);
}
