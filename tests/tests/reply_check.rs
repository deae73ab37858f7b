//! The reply-interface check (`daemon.reply_interface_check`): a sender on
//! the clients' side that forges a target's address cannot complete a
//! handshake it spoofed, which would leave a confirmed entry that no flood
//! displaces.
//!
//! From the client namespace, raw frames play both ends of one handshake:
//! a SYN from a spoofed source to the VIP, a SYN-ACK "from" each target to
//! that source (one of them is the flow's target), and the ACK that
//! acknowledges it. The targets never answer the spoofed source themselves
//! (a blackhole route in their namespaces), so only the forged SYN-ACK can
//! move the handshake on. With the check (the default) the forged SYN-ACK
//! reaches the program on the client-facing interface, not on the route to
//! its target: it is passed untranslated and the flow stays unconfirmed.
//! With `reply_interface_check = "off"` the same frames confirm it, which
//! shows the attack is real and the test can fail.
//!
//! A refused reply is also what a deployment the check cannot serve looks
//! like (multipath routes to targets, ...), so the daemon warns in its log
//! when the check refused replies: the strict test waits for that line.
use std::net::{Ipv4Addr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use lb_tests::lab::{Lab, vip4};
use lb_tests::packet::{L4, Packet, tcp_flags};
use lb_tests::proc::OutputMark;
use lb_tests::raw::RawSocket;
use lb_tests::topology::{CLIENT4, LB_CLIENT_IF, PEER_IF, TARGET_TCP_PORT, VIP_TCP_PORT, target4};
use lb_tests::trafficgen::link;

/// The spoofed client: its range is routed from the load balancer to the
/// client namespace (which has no such address, so answers die there).
const SPOOFED: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 7);
const SPOOFED_NET: &str = "10.201.0.0/16";
const SPOOFED_PORT: u16 = 40_000;
/// The forged SYN-ACK's sequence number, which the forger knows.
const FORGED_ISN: u32 = 0x1234_5678;
const TARGETS: usize = 3;

/// What the daemon warns when its reply-interface check refused replies
/// (lb-userspace's control::reply_alarm), with how many.
const REFUSED_WARNING: &str = "were passed untranslated (daemon.reply_interface_check";

#[test]
fn a_forged_reply_cannot_confirm_a_spoofed_flow() {
    let (mut lab, state, passed) = forge_handshake(None);
    assert_eq!(
        passed, 1,
        "exactly the forged SYN-ACK of the flow's target is passed as off its route"
    );
    assert_eq!(
        state.as_deref(),
        Some("syn"),
        "the forged SYN-ACK must not move the handshake on, nor the ACK confirm it"
    );
    // The control loop looks every 2 s; the line names the refused count.
    let daemon = lab.daemon.as_mut().expect("lb run");
    // From the start of its output (the default mark).
    let line = daemon.wait_for_line_after(OutputMark::default(), REFUSED_WARNING);
    assert!(
        line.split_whitespace().any(|field| field == "refused=1"),
        "the warning counts the one refused reply: {line}"
    );
}

#[test]
fn without_the_check_a_forged_reply_confirms_a_spoofed_flow() {
    let (_lab, state, passed) = forge_handshake(Some("off"));
    assert_eq!(passed, 0, "nothing is checked");
    assert_eq!(
        state.as_deref(),
        Some("established"),
        "with the check off the forged handshake confirms the flow"
    );
}

/// Plays the spoofed handshake against `lb run` (with
/// `reply_interface_check = check`, default when `None`); returns the lab
/// (the daemon still running), the spoofed flow's state in `lb flows` and
/// how many packets the check passed (`pass_reply_interface`).
fn forge_handshake(check: Option<&'static str>) -> (Lab, Option<String>, u64) {
    let lab = Lab::with("replycheck", TARGETS, &[1, 2, 3], move |spec| {
        if let Some(c) = check {
            spec.daemon_extra
                .push(format!("reply_interface_check = \"{c}\""));
        }
    });
    lab.topo
        .lb
        .ip(&["route", "add", SPOOFED_NET, "via", &CLIENT4.to_string()]);
    for t in &lab.topo.targets {
        t.ip(&["route", "add", "blackhole", SPOOFED_NET]);
    }
    let (client_mac, lb_mac) = (
        link(&lab.topo.client, PEER_IF).mac,
        link(&lab.topo.lb, LB_CLIENT_IF).mac,
    );
    let sock = lab
        .topo
        .client
        .run(|| RawSocket::open(PEER_IF))
        .expect("raw socket on the client's interface");
    let spoofed = SocketAddr::from((SPOOFED, SPOOFED_PORT));
    let before = data_path_stat(&lab, "pass_reply_interface");

    let syn = Packet::tcp(spoofed, vip4(VIP_TCP_PORT), tcp_flags::SYN).macs(client_mac, lb_mac);
    sock.send(&syn.build()).expect("send the SYN");
    wait_for_flow(&lab, spoofed);
    for i in 1..=TARGETS {
        let target = SocketAddr::from((target4(i), TARGET_TCP_PORT));
        let synack = with_numbers(
            Packet::tcp(target, spoofed, tcp_flags::SYN | tcp_flags::ACK),
            FORGED_ISN,
            1,
        )
        .macs(client_mac, lb_mac);
        sock.send(&synack.build()).expect("send a forged SYN-ACK");
    }
    let ack = with_numbers(
        Packet::tcp(spoofed, vip4(VIP_TCP_PORT), tcp_flags::ACK),
        1,
        FORGED_ISN.wrapping_add(1),
    )
    .macs(client_mac, lb_mac);
    sock.send(&ack.build()).expect("send the ACK");
    // The frames are handled as they arrive; give the last one a moment.
    thread::sleep(Duration::from_millis(200));
    let passed = data_path_stat(&lab, "pass_reply_interface") - before;
    let state = flow_state(&lab, spoofed);
    (lab, state, passed)
}

fn with_numbers(mut p: Packet, seq: u32, ack: u32) -> Packet {
    let L4::Tcp(tcp) = p.l4_mut() else {
        panic!("not TCP");
    };
    tcp.seq = seq;
    tcp.ack = ack;
    p
}

/// Waits until `lb flows` shows the flow of `client` (the SYN was handled).
fn wait_for_flow(lab: &Lab, client: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while flow_state(lab, client).is_none() {
        assert!(
            Instant::now() < deadline,
            "the spoofed SYN made no flow\n{}",
            lab.diagnostics()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The state `lb flows` gives the TCP flow of `client`, if any.
fn flow_state(lab: &Lab, client: SocketAddr) -> Option<String> {
    lab.flow_states().remove(&("tcp".to_owned(), client))
}

/// A data-path counter as `lb stats` prints it.
fn data_path_stat(lab: &Lab, name: &str) -> u64 {
    let (ok, out, err) = lab.lb(&["stats"]);
    assert!(ok, "lb stats: {err}");
    out.lines()
        .find_map(|l| l.trim().strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in lb stats:\n{out}"))
}
