//! Clients on the balancer's own host (issue 13, item 6): a container
//! (here the client namespace, whose veth's host side `lb-c` is in
//! `daemon.tc_interfaces`) and a process in the balancer's own namespace
//! connect through the VIPs with TX checksum offload ON, as a host's stack
//! sends by default: their packets carry partial checksums
//! (`CHECKSUM_PARTIAL`), which only the data path at tc can translate.
//!
//! Offload is turned back on (the topology turns it off everywhere) on both
//! ends of the client veth, the one these clients send through. The
//! balancer's target-facing veths keep it off: there the kernel completes a
//! partial checksum in software before the packet leaves, as a NIC would on
//! a wire, so each target's kernel receives a plain packet and verifies its
//! checksum (with offload on there too, a partial packet would cross into
//! the target namespace trusted, and a wrong checksum seed would go
//! unnoticed). Targets reply with full checksums (offload off on their
//! side: a target behind a wire).
//!
//! The last test is the reason for the rest: the same client with the XDP
//! hook on `lb-c` fails, as the issue describes.
use std::net::SocketAddr;
use std::time::Duration;

use lb_tests::client::{EchoConn, UdpConn};
use lb_tests::lab::{Lab, vip4, vip6};
use lb_tests::topology::{
    CLIENT4, CLIENT6, LB_CLIENT_IF, PEER_IF, VIP_TCP_PORT, VIP_UDP_PORT, VIP4, VIP6, run_clients_in,
};

/// Flows per protocol and family.
const FLOWS: usize = 20;
/// One line echoed whole: larger than any segment, so the sender's
/// segmentation offload hands the balancer 64 KiB buffers at tc.
const BULK: usize = 256 * 1024;
const TIMEOUT: Duration = Duration::from_secs(5);

/// Two targets; `lb-c` at tc (`tc = true`) or XDP; offload on for the
/// client veth.
fn lab(name: &str, tc: bool) -> Lab {
    let lab = Lab::with(name, 2, &[1, 2], move |spec| {
        if tc {
            spec.interfaces.retain(|i| i != LB_CLIENT_IF);
            spec.daemon_extra
                .push(format!("tc_interfaces = [{LB_CLIENT_IF:?}]"));
        }
    });
    offload_on(&lab);
    lab
}

fn offload_on(lab: &Lab) {
    let sides = [(&lab.topo.client, PEER_IF), (&lab.topo.lb, LB_CLIENT_IF)];
    for (ns, dev) in sides {
        // TSO follows where the device allows it (not toward a veth
        // peer running XDP).
        ns.exec(&["ethtool", "-K", dev, "tx", "on", "tso", "on"]);
        let features =
            String::from_utf8_lossy(&ns.exec(&["ethtool", "-k", dev]).stdout).into_owned();
        assert!(
            features.contains("tx-checksumming: on"),
            "{dev} in {}: checksum offload is not on:\n{features}",
            ns.name()
        );
    }
}

/// TCP (greeting from the target, a line each way, a 256 KiB line echoed)
/// and UDP (datagram and answer) from namespace `ns` through the VIPs of
/// both families; `clients` are the addresses the targets must see.
fn traffic_both_ways(lab: &Lab, ns: &str, clients: [std::net::IpAddr; 2]) {
    for (vip_tcp, vip_udp, client) in [
        (vip4(VIP_TCP_PORT), vip4(VIP_UDP_PORT), clients[0]),
        (vip6(VIP_TCP_PORT), vip6(VIP_UDP_PORT), clients[1]),
    ] {
        for (proto, vip) in [("tcp", vip_tcp), ("udp", vip_udp)] {
            let run = run_clients_in(ns, &lab.server, proto, vip, FLOWS);
            if !run.all_ok() {
                panic!("{}\n{}", run.describe_failure(), lab.diagnostics());
            }
            for f in &run.flows {
                assert_eq!(
                    f.seen.ip(),
                    client,
                    "{proto} to {vip}: the target saw {f:?}"
                );
            }
        }
        bulk_echo(lab, ns, vip_tcp);
        let mut udp = UdpConn::connect_in(ns, vip_udp, TIMEOUT).expect("udp socket");
        let big = "u".repeat(1400);
        udp.ask(&big)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.diagnostics()));
    }
}

fn bulk_echo(lab: &Lab, ns: &str, vip: SocketAddr) {
    let mut conn = EchoConn::connect_in(ns, vip, TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {vip}: {e:#}\n{}", lab.diagnostics()));
    conn.set_timeout(Duration::from_secs(20)).expect("timeout");
    let line = "x".repeat(BULK);
    // Errors name the line they echo: not this one.
    let echoed = conn.send_line(&line).and_then(|()| conn.expect_line(&line));
    if let Err(e) = echoed {
        let short: String = format!("{e:#}").chars().take(300).collect();
        panic!(
            "{BULK} bytes each way through {vip} from {}: {short}\n{}",
            conn.local,
            lab.diagnostics()
        );
    }
}

#[test]
fn a_container_with_checksum_offload_reaches_targets_through_tc() {
    let lab = lab("tc-container", true);
    let ns = lab.topo.client.name().to_owned();
    traffic_both_ways(&lab, &ns, [CLIENT4.into(), CLIENT6.into()]);
}

/// A process in the balancer's own namespace: its packets to a VIP leave by
/// the interface the route to the VIP names (`lb-c` here), where tc egress
/// sends them to the target; the replies come back through the target-side
/// hook, which hands them, translated, to the local stack.
#[test]
fn a_process_on_the_balancer_host_reaches_targets_through_tc() {
    let lab = lab("tc-host", true);
    let lb = &lab.topo.lb;
    lb.ip(&[
        "route",
        "add",
        &format!("{VIP4}/32"),
        "via",
        &CLIENT4.to_string(),
    ]);
    lb.ip(&[
        "-6",
        "route",
        "add",
        &format!("{VIP6}/128"),
        "via",
        &CLIENT6.to_string(),
    ]);
    // The source address the host picks for the VIP: lb-c's.
    let own = [
        "10.200.1.1".parse().expect("ip"),
        "fd00:200:1::1".parse().expect("ip"),
    ];
    let ns = lb.name().to_owned();
    traffic_both_ways(&lab, &ns, own);
}

/// Without the tc hook, the client's partial checksums leave the XDP
/// program wrong and the target's kernel drops the packets: not one TCP
/// connection or UDP answer gets through (what tc_interfaces is for).
#[test]
fn with_xdp_on_the_container_interface_offloaded_checksums_fail() {
    let lab = lab("xdp-offload", false);
    let ns = lab.topo.client.name().to_owned();
    for (proto, vip) in [
        ("tcp", vip4(VIP_TCP_PORT)),
        ("udp", vip4(VIP_UDP_PORT)),
        ("tcp", vip6(VIP_TCP_PORT)),
        ("udp", vip6(VIP_UDP_PORT)),
    ] {
        let run = run_clients_in(&ns, &lab.server, proto, vip, 3);
        assert!(
            run.flows.is_empty() && !run.status.success(),
            "{proto} to {vip} through XDP with offload on: {} of 3 flows succeeded (expected none): {:?}",
            run.flows.len(),
            run.flows
        );
    }
}
