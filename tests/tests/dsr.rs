//! dsr forwarding end to end (issue 15, item 1), in the [`DsrLab`]: a
//! client reaches the VIPs through `lb run` in dsr mode; the targets
//! decapsulate with `lb target attach`, see the client's own address, and
//! answer over their direct link to the client, never through the load
//! balancer. Path-MTU discovery works through the tunnel: a transfer larger
//! than the MTU gets the balancer's "too big" with the MTU less the outer
//! header, and completes. Needs root; `cargo xtask test` builds `lb`.
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use lb_tests::client::{FlowReport, count_by_target};
use lb_tests::dsr_lab::DsrLab;
use lb_tests::lab::{vip4, vip6};
use lb_tests::netns;
use lb_tests::proc;
use lb_tests::topology::{CLIENT4, CLIENT6, VIP_TCP_PORT, VIP_UDP_PORT, VIP4, VIP6, target_name};

/// Flows per protocol and family: both targets get some (all on one has
/// odds of 2^-39).
const FLOWS: usize = 40;

/// The nftables table counting, on every interface of the load balancer,
/// packets from a VIP to the client: target replies, had they come this
/// way. (The answers to the balancer's own health probes come from the VIP
/// to the balancer's address, by design: they are not counted.)
const NFT_TABLE: &str = "dsr_replies";

fn count_replies_at_the_balancer(dsr: &DsrLab) {
    let lb = &dsr.lab.topo.lb;
    nft(lb.name(), &format!("add table netdev {NFT_TABLE}"));
    for dev in dsr.lab.topo.lb_interfaces() {
        let chain = dev.replace('-', "_");
        nft(
            lb.name(),
            &format!(
                "add chain netdev {NFT_TABLE} {chain} {{ type filter hook ingress device \"{dev}\" priority 0 ; }}"
            ),
        );
        nft(
            lb.name(),
            &format!(
                "add rule netdev {NFT_TABLE} {chain} ip saddr {VIP4} ip daddr {CLIENT4} counter"
            ),
        );
        nft(
            lb.name(),
            &format!(
                "add rule netdev {NFT_TABLE} {chain} ip6 saddr {VIP6} ip6 daddr {CLIENT6} counter"
            ),
        );
    }
}

fn nft(ns: &str, command: &str) -> String {
    let out = netns::exec_in(ns, &["nft", command]);
    assert!(
        out.status.success(),
        "nft {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Packets counted by [`count_replies_at_the_balancer`]'s rules.
fn replies_at_the_balancer(dsr: &DsrLab) -> u64 {
    let text = nft(
        dsr.lab.topo.lb.name(),
        &format!("list table netdev {NFT_TABLE}"),
    );
    let counted: Vec<u64> = text
        .split("counter packets ")
        .skip(1)
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("nft counter in {text}"))
        })
        .collect();
    assert_eq!(
        counted.len(),
        2 * dsr.lab.topo.lb_interfaces().len(),
        "two rules per interface in {text}"
    );
    counted.iter().sum()
}

/// The value on the line of `text` whose first word is `name`.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} counter in:\n{text}"))
}

fn lb_stats(dsr: &DsrLab) -> String {
    let lab = &dsr.lab;
    proc::lb_stats(&lab.lb, lab.topo.lb.name(), &lab.config)
}

fn expect_real_clients(flows: &[FlowReport], client: IpAddr, what: &str) {
    for f in flows {
        assert_eq!(
            (f.seen.ip(), f.seen.port()),
            (client, f.local.port()),
            "{what}: flow {} was seen by {} as {}, not as the client {}",
            f.index,
            f.target,
            f.seen,
            f.local
        );
    }
    let by_target = count_by_target(flows);
    for i in [1, 2] {
        assert!(
            by_target.get(&target_name(i)).copied().unwrap_or(0) > 0,
            "{what}: no flow reached {}: {by_target:?}",
            target_name(i)
        );
    }
}

#[test]
fn dsr_targets_see_the_client_and_answer_it_directly() {
    let dsr = DsrLab::new("dsr", 2);
    count_replies_at_the_balancer(&dsr);
    let cases = [
        ("tcp", vip4(VIP_TCP_PORT), IpAddr::V4(CLIENT4)),
        ("udp", vip4(VIP_UDP_PORT), IpAddr::V4(CLIENT4)),
        ("tcp", vip6(VIP_TCP_PORT), IpAddr::V6(CLIENT6)),
        ("udp", vip6(VIP_UDP_PORT), IpAddr::V6(CLIENT6)),
    ];
    for (proto, vip, client) in cases {
        let flows = dsr.lab.flows(proto, vip, FLOWS);
        expect_real_clients(&flows, client, &format!("{proto} to {vip}"));
    }
    assert_eq!(
        replies_at_the_balancer(&dsr),
        0,
        "target replies crossed the load balancer\n{}",
        dsr.lab.diagnostics()
    );
    let stats = lb_stats(&dsr);
    assert_eq!(
        counter(&stats, "returned"),
        0,
        "nothing translated back:\n{stats}"
    );
    assert!(counter(&stats, "forwarded") >= 4 * FLOWS as u64, "{stats}");
    for i in [1, 2] {
        let status = dsr.target_status(i);
        assert!(
            counter(&status, "decapsulated") > 0,
            "t{i} decapsulated nothing:\n{status}"
        );
    }
}

/// Sends one line of `len` bytes through `vip` from the client namespace
/// and reads it back from the target's echo; returns the echoed length.
fn echo_large(dsr: &DsrLab, vip: SocketAddr, len: usize) -> usize {
    netns::in_netns(dsr.lab.topo.client.name(), move || {
        let timeout = Duration::from_secs(20);
        let stream = TcpStream::connect_timeout(&vip, timeout)
            .unwrap_or_else(|e| panic!("connect to {vip}: {e}"));
        stream.set_read_timeout(Some(timeout)).expect("timeout");
        stream.set_write_timeout(Some(timeout)).expect("timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut greeting = String::new();
        reader.read_line(&mut greeting).expect("greeting");
        let mut line = vec![b'x'; len];
        line.push(b'\n');
        let mut writer = stream;
        writer
            .write_all(&line)
            .unwrap_or_else(|e| panic!("send {len} bytes to {vip}: {e}"));
        let mut back = Vec::new();
        reader
            .read_until(b'\n', &mut back)
            .unwrap_or_else(|e| panic!("echo of {len} bytes from {vip}: {e}"));
        back.len() - 1
    })
}

/// The client's cached path MTU to `vip` (`ip route get`), if any.
fn path_mtu(dsr: &DsrLab, vip: IpAddr) -> Option<u32> {
    let out = dsr.lab.topo.client.ip(&["route", "get", &vip.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "mtu")
        .and_then(|w| w[1].parse().ok())
}

#[test]
fn path_mtu_discovery_works_through_the_tunnel() {
    let dsr = DsrLab::new("dsrpmtu", 2);
    const LEN: usize = 200_000;
    for (vip, overhead) in [(vip4(VIP_TCP_PORT), 20), (vip6(VIP_TCP_PORT), 40)] {
        assert_eq!(path_mtu(&dsr, vip.ip()), None, "no path MTU cached yet");
        assert_eq!(
            echo_large(&dsr, vip, LEN),
            LEN,
            "{LEN} bytes to {vip} and back"
        );
        assert_eq!(
            path_mtu(&dsr, vip.ip()),
            Some(1500 - overhead),
            "the client learnt the tunnel's MTU for {vip}"
        );
    }
    let stats = lb_stats(&dsr);
    assert!(counter(&stats, "too_big_sent") >= 2, "{stats}");
}

/// `forwarding` of a running group switched from nat to dsr: the nat
/// flows end (their replies would lose their translation and stall), so an
/// open connection is reset at its next packet, and new connections take
/// dsr. Without the purge the old connection hangs until its read times
/// out.
#[test]
fn switching_a_group_from_nat_to_dsr_resets_its_nat_connections() {
    let mut dsr = DsrLab::new("switch", 1);
    // nat replies come back through the balancer: the target's route to
    // the client over its link to the load balancer, not the direct one.
    let lb_side = "10.200.11.1";
    dsr.lab.topo.targets[0].ip(&["route", "add", &format!("{CLIENT4}/32"), "via", lb_side]);
    set_forwarding(&mut dsr, "dsr", "nat");
    let mut conn = dsr.lab.connect(vip4(VIP_TCP_PORT));
    conn.echo("through nat").expect("echo over nat");

    set_forwarding(&mut dsr, "nat", "dsr");
    conn.set_timeout(Duration::from_secs(10)).expect("timeout");
    let err = conn
        .echo("after the switch")
        .expect_err("the nat connection must end when its group turns dsr");
    let kind = err
        .chain()
        .find_map(|e| e.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    assert_eq!(
        kind,
        Some(std::io::ErrorKind::ConnectionReset),
        "reset expected, got {err:#}\n{}",
        dsr.lab.diagnostics()
    );
    let mut fresh = dsr.lab.connect(vip4(VIP_TCP_PORT));
    fresh.echo("over dsr").expect("a new connection over dsr");
}

/// Rewrites every group's `forwarding = "<from>"` as `<to>` and reloads.
fn set_forwarding(dsr: &mut DsrLab, from: &str, to: &str) {
    let path = &dsr.lab.config;
    let text = std::fs::read_to_string(path).expect("read the config");
    let (old, new) = (
        format!("forwarding = \"{from}\""),
        format!("forwarding = \"{to}\""),
    );
    assert!(text.contains(&old), "no {old} in\n{text}");
    std::fs::write(path, text.replace(&old, &new)).expect("write the config");
    dsr.lab.daemon.as_mut().expect("daemon").reload();
}
