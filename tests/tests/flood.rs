//! Floods against a small connection table: established flows are
//! untouchable, new ones still get through.
//!
//! `lb run` with `flow_capacity = 1024` forwards 100 long-lived TCP
//! connections and 50 UDP flows; then the client namespace floods the VIP
//! with spoofed packets (`trafficgen`, line rate of one CPU) from 2^20
//! distinct (source address, source port) pairs of a range routed back to
//! the client namespace, where the targets' answers die: first TCP SYNs,
//! then UDP datagrams, each far more distinct 5-tuples than the table
//! holds. Half of the long-lived flows talk during the flood, half stay
//! silent: afterwards `lb flows` must still show every one of them
//! confirmed (a flood that could evict would take the silent ones, whose
//! next packet would not re-create them in time to be seen), every one
//! must still exchange data both ways with the target it had, and new
//! connections and flows must succeed during the flood and after.
use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

use lb_tests::client::{EchoConn, UdpConn};
use lb_tests::lab::{IO_TIMEOUT, Lab, health_checks, vip4};
use lb_tests::packet::{Packet, tcp_flags};
use lb_tests::topology::{CLIENT4, ConfigSpec, LB_CLIENT_IF, PEER_IF, VIP_TCP_PORT, VIP_UDP_PORT};
use lb_tests::trafficgen::{Generator, GeneratorSpec, Vary, link};

const CAPACITY: u32 = 1024;
const LONG_TCP: usize = 100;
const LONG_UDP: usize = 50;
/// Spoofed sources: 10.201.0.0/16, routed from the load balancer to the
/// client namespace, which has no address there and does not forward, so
/// the targets' SYN-ACKs and answers go nowhere, as a real flood's do.
const SPOOF_BASE: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 0);
/// Distinct spoofed (address, port) pairs: 16 addresses x 65,536 ports.
const FLOOD_TUPLES: u32 = 1 << 20;
const FLOOD_FOR: Duration = Duration::from_secs(4);
/// Read timeout of the long-lived TCP connections: a flood at line rate
/// saturates the load balancer's CPUs and drops frames before XDP sees
/// them, and TCP's retransmission backoff (0.2 + 0.4 + 0.8 + 1.6 s) can
/// outlast the usual 3 s (seen once on a quiet machine).
const TCP_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// New connections (and UDP flows) opened during each flood, and after.
const NEW_DURING: usize = 10;
const NEW_AFTER: usize = 10;

struct Flows {
    tcp: Vec<EchoConn>,
    udp: Vec<(UdpConn, String)>,
}

impl Flows {
    fn open(lab: &Lab) -> Self {
        let ns = lab.topo.client.name().to_owned();
        let tcp: Vec<EchoConn> = (0..LONG_TCP)
            .map(|i| {
                let mut c = EchoConn::connect_in(&ns, vip4(VIP_TCP_PORT), TCP_IO_TIMEOUT)
                    .unwrap_or_else(|e| panic!("long-lived connection {i}: {e:#}"));
                c.echo("hello").expect("first echo");
                c
            })
            .collect();
        let udp = (0..LONG_UDP)
            .map(|i| {
                let mut u = UdpConn::connect_in(&ns, vip4(VIP_UDP_PORT), IO_TIMEOUT)
                    .unwrap_or_else(|e| panic!("UDP flow {i}: {e:#}"));
                // Twice: the second datagram, after the reply, confirms the
                // flow in the table.
                let target = u.ask("hello").expect("first datagram");
                assert_eq!(u.ask("again").expect("second datagram"), target);
                (u, target)
            })
            .collect();
        Self { tcp, udp }
    }

    /// One exchange on each of the first half (the talkative ones).
    fn talk(&mut self, round: usize) {
        for (i, c) in self.tcp.iter_mut().take(LONG_TCP / 2).enumerate() {
            c.echo(&format!("round {round}"))
                .unwrap_or_else(|e| panic!("long-lived connection {i} during the flood: {e:#}"));
        }
        for (i, (u, target)) in self.udp.iter_mut().take(LONG_UDP / 2).enumerate() {
            let got = u
                .ask(&format!("round {round}"))
                .unwrap_or_else(|e| panic!("UDP flow {i} during the flood: {e:#}"));
            assert_eq!(&got, target, "UDP flow {i} moved during the flood");
        }
    }

    /// One exchange on every flow, each on its own target still.
    fn all_alive(&mut self, when: &str) {
        for (i, c) in self.tcp.iter_mut().enumerate() {
            c.echo(when)
                .unwrap_or_else(|e| panic!("long-lived connection {i} {when}: {e:#}"));
        }
        for (i, (u, target)) in self.udp.iter_mut().enumerate() {
            let got = u
                .ask(when)
                .unwrap_or_else(|e| panic!("UDP flow {i} {when}: {e:#}"));
            assert_eq!(&got, target, "UDP flow {i} moved {when}");
        }
    }

    /// Every long-lived flow, silent ones included, is in the table and
    /// confirmed, according to `lb flows`.
    fn all_confirmed(&self, lab: &Lab, when: &str) {
        let table = lab.flow_states();
        let expect = self
            .tcp
            .iter()
            .map(|c| ("tcp", c.local))
            .chain(self.udp.iter().map(|(u, _)| ("udp", u.local)));
        let mut missing = Vec::new();
        for (proto, local) in expect {
            match table.get(&(proto.to_owned(), local)) {
                Some(state) if state == "established" => {}
                other => missing.push(format!("{proto} {local}: {other:?}")),
            }
        }
        assert!(
            missing.is_empty(),
            "{} of {} long-lived flows not confirmed in the table {when}: {missing:?}\n{}",
            missing.len(),
            LONG_TCP + LONG_UDP,
            lab.diagnostics()
        );
    }
}

/// Opens `n` new TCP connections and UDP flows, each of which must work
/// within `attempts` tries: during a flood a handshake may need its
/// retransmission (the flood displaces unconfirmed entries within
/// milliseconds, and a loaded machine can be slower than that), as a real
/// client retries; after it, the first try must work. Returns how many
/// worked on the first try.
fn new_flows(lab: &Lab, n: usize, attempts: usize, when: &str) -> usize {
    let ns = lab.topo.client.name().to_owned();
    let mut first_try = 0;
    for i in 0..n {
        let mut last = String::new();
        let ok = (0..attempts).any(|attempt| match try_new_flow(&ns) {
            Ok(()) => {
                first_try += usize::from(attempt == 0);
                true
            }
            Err(e) => {
                last = format!("{e:#}");
                false
            }
        });
        assert!(
            ok,
            "new connection or UDP flow {i} {when}, {attempts} attempts: {last}\n{}",
            lab.diagnostics()
        );
    }
    first_try
}

/// One new TCP connection (whose client speaks first: see
/// `EchoConn::connect_speaking_first_in`) and one new UDP flow. The TCP
/// timeout is the long-lived connections' (`TCP_IO_TIMEOUT`): the flood's
/// frame losses cost a new connection retransmissions too.
fn try_new_flow(ns: &str) -> anyhow::Result<()> {
    let mut c = EchoConn::connect_speaking_first_in(ns, vip4(VIP_TCP_PORT), TCP_IO_TIMEOUT, "new")?;
    c.echo("again")?;
    let mut u = UdpConn::connect_in(ns, vip4(VIP_UDP_PORT), IO_TIMEOUT)?;
    u.ask("new")?;
    Ok(())
}

/// The `lb stats` row of a VIP's connection-table counters:
/// [syns, embryonic, confirmed, displaced, untracked].
fn table_counters(lab: &Lab, vip: &str) -> [u64; 5] {
    let (ok, out, err) = lab.lb(&["stats"]);
    assert!(ok, "lb stats: {err}");
    let row = out
        .lines()
        .skip_while(|l| !l.starts_with("connection table by VIP"))
        .find_map(|l| l.trim().strip_prefix(vip))
        .unwrap_or_else(|| panic!("no connection-table row for {vip} in:\n{out}"));
    let n: Vec<u64> = row
        .split_whitespace()
        .map(|w| {
            w.parse()
                .unwrap_or_else(|e| panic!("{w:?} in {row:?}: {e}"))
        })
        .collect();
    n.try_into()
        .unwrap_or_else(|n| panic!("expected 5 counters for {vip}, got {n:?}"))
}

/// Floods the VIP with `frame` varied over [`FLOOD_TUPLES`] spoofed sources
/// for [`FLOOD_FOR`], talking on half the long-lived flows and opening new
/// ones meanwhile; returns the frames sent.
fn flood(lab: &Lab, flows: &mut Flows, frame: Vec<u8>, proto: u8) -> u64 {
    let generator = Generator::start(
        &lab.topo.client,
        GeneratorSpec {
            dev: PEER_IF.to_owned(),
            frame,
            vary: Vary::ipv4(FLOOD_TUPLES).valid_checksums(proto),
            cpu: 0,
            batch: 64,
        },
    );
    let start = Instant::now();
    let mut round = 0;
    let mut first_try = 0;
    while start.elapsed() < FLOOD_FOR || round < 3 {
        round += 1;
        flows.talk(round);
        if round <= NEW_DURING {
            first_try += new_flows(lab, 1, 3, "during the flood");
        }
        thread::sleep(Duration::from_millis(50));
    }
    // The rest of the new ones, if the rounds were slow.
    first_try += new_flows(lab, NEW_DURING.saturating_sub(round), 3, "during the flood");
    eprintln!(
        "new connections and UDP flows during the flood: all {NEW_DURING} worked (else \
         new_flows panicked), {first_try} on the first try"
    );
    generator.stop()
}

/// Health checks that a flood cannot turn: ten failures in a row, 30 s
/// apart, before a target goes down. A flood at line rate saturates the load
/// balancer's CPUs and can starve its checks (seen at 12.6 Mpps: a target
/// went down and its UDP flows moved, as they should when a target is
/// down); this test is about the connection table, so it keeps every target
/// up and can assert that each flow keeps its target.
fn patient_checks(spec: &mut ConfigSpec) {
    health_checks(
        spec,
        "interval = 30, healthy_threshold = 2, unhealthy_threshold = 10",
    );
}

fn setup() -> (Lab, Vec<u8>, Vec<u8>) {
    let lab = Lab::with("flood", 3, &[1, 2, 3], |spec| {
        spec.daemon_extra
            .push(format!("flow_capacity = {CAPACITY}"));
        patient_checks(spec);
    });
    lab.topo.lb.ip(&[
        "route",
        "add",
        &format!("{SPOOF_BASE}/16"),
        "via",
        &CLIENT4.to_string(),
    ]);
    let client = link(&lab.topo.client, PEER_IF).mac;
    let lb = link(&lab.topo.lb, LB_CLIENT_IF).mac;
    let syn = Packet::tcp((SPOOF_BASE, 0).into(), vip4(VIP_TCP_PORT), tcp_flags::SYN)
        .macs(client, lb)
        .build();
    let udp = Packet::udp((SPOOF_BASE, 0).into(), vip4(VIP_UDP_PORT))
        .payload(b"flood")
        .macs(client, lb)
        .build();
    (lab, syn, udp)
}

#[test]
fn floods_cannot_break_established_flows() {
    let (lab, syn, udp) = setup();
    let mut flows = Flows::open(&lab);
    flows.all_confirmed(&lab, "before the floods");
    let tcp_vip = format!("{}", vip4(VIP_TCP_PORT)) + "/tcp";
    let udp_vip = format!("{}", vip4(VIP_UDP_PORT)) + "/udp";
    let tcp_before = table_counters(&lab, &tcp_vip);

    // SYN flood.
    let sent = flood(&lab, &mut flows, syn, 6);
    let tcp_after = table_counters(&lab, &tcp_vip);
    let syns = tcp_after[0] - tcp_before[0];
    eprintln!(
        "SYN flood: {sent} frames sent in {FLOOD_FOR:?}, {syns} SYNs seen, \
         {} unconfirmed flows displaced, {} untracked",
        tcp_after[3] - tcp_before[3],
        tcp_after[4] - tcp_before[4]
    );
    assert!(
        syns >= 4 * u64::from(CAPACITY),
        "the flood must bring at least 4x the table's capacity in distinct SYNs: {syns} \
         ({sent} sent)\n{}",
        lab.diagnostics()
    );
    assert!(
        tcp_after[3] > tcp_before[3],
        "a flood over a full table displaces unconfirmed flows"
    );
    flows.all_confirmed(&lab, "after the SYN flood");
    flows.all_alive("after the SYN flood");
    new_flows(&lab, NEW_AFTER, 1, "after the SYN flood");

    // UDP flood.
    let udp_before = table_counters(&lab, &udp_vip);
    let sent = flood(&lab, &mut flows, udp, 17);
    let udp_after = table_counters(&lab, &udp_vip);
    let new = udp_after[1] - udp_before[1];
    eprintln!(
        "UDP flood: {sent} frames sent in {FLOOD_FOR:?}, {new} new unconfirmed flows, \
         {} displaced, {} untracked",
        udp_after[3] - udp_before[3],
        udp_after[4] - udp_before[4]
    );
    assert!(
        new >= 4 * u64::from(CAPACITY),
        "the UDP flood must bring at least 4x the table's capacity in new flows: {new} \
         ({sent} sent)\n{}",
        lab.diagnostics()
    );
    flows.all_confirmed(&lab, "after the UDP flood");
    flows.all_alive("after the UDP flood");
    new_flows(&lab, NEW_AFTER, 1, "after the UDP flood");
}
