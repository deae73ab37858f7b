//! Scaling out over ECMP with dsr forwarding (issue 15, item 5), from
//! outside: a router namespace running BIRD with ECMP and BFD, three
//! balancer hosts (each `lb run` with `[bgp]` and a BIRD, every group
//! `forwarding = "dsr"`), three targets running `lb target attach` and the
//! test servers, and a client behind the router (`lb_tests::scale_out`).
//! What the client's flows show: which target answered and which client
//! address it saw; what the router's counters show: which host each new
//! flow went to, and that no reply crossed a host; what the router's routes
//! show: which hosts announce, and how soon a lost one is withdrawn.
//!
//! The two tests build a lab each and take turns (a lab is three daemons,
//! four BIRDs and eleven namespaces: two at once would make BFD's timing
//! on a loaded 2-core machine the thing under test).
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lb_tests::chatter::{Broken, Chatter};
use lb_tests::client::{EchoConn, UdpConn, count_by_target};
use lb_tests::lab::{SPREAD_FLOWS, assert_spread, vip4, vip6};
use lb_tests::netns;
use lb_tests::scale_out::edge::{CLIENT4, CLIENT6};
use lb_tests::scale_out::{ScaleOut, steer};
use lb_tests::topology::{VIP_TCP_PORT, VIP_UDP_PORT, VIP4, VIP6};

const V4: IpAddr = IpAddr::V4(VIP4);
const V6: IpAddr = IpAddr::V6(VIP6);
const HOSTS: [usize; 3] = [1, 2, 3];
const TARGETS: [usize; 3] = [1, 2, 3];

/// One lab at a time (see the module doc).
static LAB: Mutex<()> = Mutex::new(());

/// The BGP hold time of `deploy/bird/*.conf`: a lost host must be
/// withdrawn before it, so BFD (3 × 500 ms in the lab) noticed, not the
/// hold timer.
const HOLD_TIME: Duration = Duration::from_secs(9);
/// How long one echo of a long-lived connection may take: a connection
/// through a lost host waits for its route to go and for TCP's
/// retransmission (backed off to seconds) to get through.
const ECHO_TIMEOUT: Duration = Duration::from_secs(30);
/// Rounds of the long-lived connections may wait that long, and more.
const ROUNDS_WITHIN: Duration = Duration::from_secs(90);

/// The share of connections that must survive each event.
const KEEP: f64 = 0.99;

fn wait_all(lab: &ScaleOut, hosts: &[usize], what: &str) {
    lab.wait_paths(V4, hosts, what);
    lab.wait_paths(V6, hosts, what);
}

/// Each of `counts` (per host) is 15–50% of their sum.
fn assert_host_shares(counts: &[u64], what: &str) {
    let sum: u64 = counts.iter().sum();
    assert!(sum > 0, "{what}: no flow reached any host");
    for (n, &c) in counts.iter().enumerate() {
        let share = c as f64 / sum as f64;
        assert!(
            (0.15..=0.50).contains(&share),
            "{what}: h{} got {c} of {sum} ({:.0}%), expected 15-50%; per host {counts:?}",
            n + 1,
            share * 100.0
        );
    }
}

/// New flows spread over the hosts (15–50% each, by the router's
/// counters) and over the targets (even ±25%, by the targets' answers),
/// the targets see the client's own address and port, and every reply
/// goes from the target to the client without crossing a host: TCP and
/// UDP, IPv4 and IPv6. Then the same 5-tuple steered through each host in
/// turn reaches the same target: new TCP connections from fixed source
/// ports, and UDP flows whose socket stays while its route moves.
#[test]
fn dsr_flows_spread_over_hosts_and_targets_and_any_host_picks_the_same_target() {
    let _turn = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let lab = ScaleOut::with_targets("dsrspread", 3, 3);
    wait_all(&lab, &HOSTS, "three hosts up");
    lab.wait_healthy();

    let start = lab.counts();
    for (proto, vip, client) in [
        ("tcp", vip4(VIP_TCP_PORT), IpAddr::V4(CLIENT4)),
        ("tcp", vip6(VIP_TCP_PORT), IpAddr::V6(CLIENT6)),
        ("udp", vip4(VIP_UDP_PORT), IpAddr::V4(CLIENT4)),
        ("udp", vip6(VIP_UDP_PORT), IpAddr::V6(CLIENT6)),
    ] {
        let before = lab.counts();
        let run = lab.clients(proto, vip, SPREAD_FLOWS);
        assert!(
            run.all_ok(),
            "{}\n{}",
            run.describe_failure(),
            lab.diagnostics()
        );
        assert_spread(&run.flows, &TARGETS, client);
        let prefix = if proto == "tcp" { "syn" } else { "udp" };
        let per_host = lab.counts().since(&before).per_host(prefix, 3);
        assert_host_shares(&per_host, &format!("{SPREAD_FLOWS} {proto} flows to {vip}"));
        eprintln!(
            "{proto} {vip}: per host {per_host:?}, per target {:?}",
            count_by_target(&run.flows)
        );
    }
    let seen = lab.counts().since(&start);
    assert_eq!(
        seen.get("leak"),
        0,
        "replies from a VIP crossed a balancer host: {seen:?}"
    );
    assert!(
        seen.get("direct") >= 4 * SPREAD_FLOWS as u64,
        "fewer replies than flows went from the targets to the client: {seen:?}"
    );

    same_target_through_every_host(&lab);
}

/// See the test above: 20 TCP and 20 UDP flows per family, each through
/// h1, h2 and h3 in turn.
fn same_target_through_every_host(lab: &ScaleOut) {
    let client = lab.edge().client.name().to_owned();
    let base = *steer::PORTS.start();
    for (fam, vip_t, vip_u, offset) in [
        ("v4", vip4(VIP_TCP_PORT), vip4(VIP_UDP_PORT), 0),
        ("v6", vip6(VIP_TCP_PORT), vip6(VIP_UDP_PORT), 100),
    ] {
        let tcp_ports: Vec<u16> = (0..20).map(|k| base + offset + k).collect();
        let udp_ports: Vec<u16> = (0..20).map(|k| base + 200 + offset + k).collect();
        let mut udp: Vec<UdpConn> = udp_ports
            .iter()
            .map(|&p| {
                UdpConn::connect_from_in(&client, p, vip_u, Duration::from_secs(2))
                    .expect("udp socket")
            })
            .collect();
        // picks[flow][host - 1]: the target that answered through that host.
        let mut tcp_picks = vec![Vec::new(); tcp_ports.len()];
        let mut udp_picks = vec![Vec::new(); udp_ports.len()];
        for i in HOSTS {
            lab.steer(Some(i));
            let before = lab.counts();
            for (n, &port) in tcp_ports.iter().enumerate() {
                let conn = lab.connect(vip_t, port);
                tcp_picks[n].push(conn.target.clone());
                conn.reset().expect("reset");
            }
            for (n, u) in udp.iter_mut().enumerate() {
                let t = u
                    .ask(&format!("through h{i}"))
                    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.diagnostics()));
                udp_picks[n].push(t);
            }
            let d = lab.counts().since(&before);
            for j in HOSTS {
                let (syns, dgrams) = (d.get(&format!("syn_h{j}")), d.get(&format!("udp_h{j}")));
                if j == i {
                    assert!(
                        syns >= 20 && dgrams >= 20,
                        "{fam}: steered through h{i}, it got {syns} SYNs and {dgrams} datagrams"
                    );
                } else {
                    assert!(
                        syns == 0 && dgrams == 0,
                        "{fam}: steered through h{i}, h{j} got {syns} SYNs, {dgrams} datagrams"
                    );
                }
            }
        }
        lab.steer(None);
        for (what, picks, ports) in [
            ("tcp", &tcp_picks, &tcp_ports),
            ("udp", &udp_picks, &udp_ports),
        ] {
            for (p, port) in picks.iter().zip(ports.iter()) {
                assert!(
                    p.iter().all(|t| *t == p[0]),
                    "{fam} {what} from port {port}: h1, h2, h3 sent it to {p:?}\n{}",
                    lab.diagnostics()
                );
            }
            let distinct: std::collections::BTreeSet<&String> =
                picks.iter().map(|p| &p[0]).collect();
            assert!(
                distinct.len() > 1,
                "{fam} {what}: all 20 flows went to {distinct:?}: the check proves little"
            );
        }
    }
}

/// The long-lived flows of the failover test: TCP connections exchanging
/// data all along, and UDP flows (a socket each) asked now and then.
struct Flows {
    chatter: Chatter,
    udp: Vec<(UdpConn, String)>,
    /// Broken connections seen so far (for the per-event figures).
    reported: usize,
}

impl Flows {
    fn open(lab: &ScaleOut, tcp4: usize, tcp6: usize, udp_each: usize) -> Self {
        let mut conns: Vec<EchoConn> = Vec::new();
        for (vip, n) in [(vip4(VIP_TCP_PORT), tcp4), (vip6(VIP_TCP_PORT), tcp6)] {
            conns.extend((0..n).map(|_| lab.connect(vip, 0)));
        }
        let client = lab.edge().client.name().to_owned();
        let mut udp = Vec::new();
        for vip in [vip4(VIP_UDP_PORT), vip6(VIP_UDP_PORT)] {
            for k in 0..udp_each {
                let mut u =
                    UdpConn::connect_in(&client, vip, Duration::from_secs(2)).expect("udp socket");
                let t = u
                    .ask(&format!("hello {k}"))
                    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.diagnostics()));
                udp.push((u, t));
            }
        }
        Self {
            chatter: Chatter::start(conns, ECHO_TIMEOUT, Duration::from_millis(200)),
            udp,
            reported: 0,
        }
    }

    /// After `event`: the connections still exchange data (two rounds
    /// more), at most 1% of them broke since the start, each UDP flow is
    /// answered by the target it started with. Returns the connections
    /// that broke during this event.
    fn check(&mut self, lab: &ScaleOut, event: &str) -> Vec<Broken> {
        self.chatter.wait_rounds(2, ROUNDS_WITHIN, event);
        let broken = self.chatter.broken();
        let total = self.chatter.total();
        let kept = total - broken.len();
        assert!(
            kept as f64 >= KEEP * total as f64,
            "{event}: {kept} of {total} long-lived connections kept; broken: {broken:#?}\n{}",
            lab.diagnostics()
        );
        for (n, (u, first)) in self.udp.iter_mut().enumerate() {
            let now = u
                .ask(&format!("after {event}"))
                .unwrap_or_else(|e| panic!("{event}: UDP flow {n}: {e:#}\n{}", lab.diagnostics()));
            assert_eq!(
                &now, first,
                "{event}: UDP flow {} moved from {first} to {now}",
                u.local
            );
        }
        let new = broken[self.reported..].to_vec();
        self.reported = broken.len();
        new
    }
}

/// `count` new TCP connections to each VIP succeed; returns the SYNs each
/// host got meanwhile.
fn new_connections(lab: &ScaleOut, count: usize, during: &str) -> Vec<u64> {
    let before = lab.counts();
    for vip in [vip4(VIP_TCP_PORT), vip6(VIP_TCP_PORT)] {
        let run = lab.clients("tcp", vip, count);
        assert!(
            run.all_ok(),
            "{during}: {}\n{}",
            run.describe_failure(),
            lab.diagnostics()
        );
    }
    lab.counts().since(&before).per_host("syn", 3)
}

/// Drops every frame between the router and host `i`, both ways, at the
/// router: the host looks alive to itself and its link stays up, so only
/// BFD or the hold timer can tell. Removed on drop.
struct Blackhole {
    router: String,
    table: String,
}

impl Blackhole {
    fn new(lab: &ScaleOut, i: usize) -> Self {
        let dev = lb_tests::scale_out::router_if(i);
        let table = format!("blackhole_h{i}");
        let rules = format!(
            "table netdev {table} {{\n  chain in {{ type filter hook ingress device \"{dev}\" priority 0; policy drop; }}\n  chain out {{ type filter hook egress device \"{dev}\" priority 0; policy drop; }}\n}}\n"
        );
        let path = std::env::temp_dir().join(format!("{}-{table}.nft", netns::unique_id()));
        std::fs::write(&path, rules).expect("write nft rules");
        let out = netns::exec_in(
            lab.router.name(),
            &["nft", "-f", &path.display().to_string()],
        );
        let _ = std::fs::remove_file(&path);
        assert!(
            out.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            router: lab.router.name().to_owned(),
            table,
        }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        let _ = netns::try_run(
            "ip",
            [
                "netns",
                "exec",
                &self.router,
                "nft",
                "delete",
                "table",
                "netdev",
                &self.table,
            ],
        );
    }
}

/// One host lost at a time while 200 IPv4 and 100 IPv6 TCP connections
/// exchange data and 60 UDP flows stay open: h2's link down, then h3's
/// frames silently dropped (only BFD can tell). Each time the router
/// withdraws the host before the hold timer runs out, at least 99% of the
/// connections keep exchanging data without a reset, the UDP flows keep
/// their targets, new connections succeed and none goes to the lost host;
/// the host back, the same. Then `lb host drain` on h1: its path goes, no
/// new connection lands on it, the existing ones continue.
#[test]
fn losing_or_draining_a_host_keeps_connections() {
    let _turn = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let lab = ScaleOut::with_targets("dsrfail", 3, 3);
    wait_all(&lab, &HOSTS, "three hosts up");
    lab.wait_healthy();

    let before = lab.counts();
    let mut flows = Flows::open(&lab, 200, 100, 30);
    let per_host = lab.counts().since(&before).per_host("syn", 3);
    assert!(
        per_host.iter().all(|&n| n >= 30),
        "the long-lived connections must cross every host: per host {per_host:?}"
    );
    flows.check(&lab, "opened");
    let mut report = vec![format!(
        "{} long-lived TCP connections (per host {per_host:?}), {} UDP flows",
        flows.chatter.total(),
        flows.udp.len()
    )];

    // h2's link goes down.
    let t0 = Instant::now();
    lab.set_link(2, false);
    let took = lab.wait_withdrawn(2, t0, "h2's link down");
    assert!(
        took < HOLD_TIME,
        "h2's link down: withdrawn after {took:?}, not before the hold timer ({HOLD_TIME:?})"
    );
    let broken = flows.check(&lab, "h2's link down");
    let syns = new_connections(&lab, 100, "h2's link down");
    assert_eq!(
        syns[1], 0,
        "new connections reached h2 while it was down: {syns:?}"
    );
    report.push(format!(
        "h2 link down: withdrawn after {took:.2?}, {} connections broke, new per host {syns:?}",
        broken.len()
    ));
    lab.set_link(2, true);
    wait_all(&lab, &HOSTS, "h2's link up again");
    let broken = flows.check(&lab, "h2 back");
    report.push(format!("h2 back: {} connections broke", broken.len()));

    // h3's frames are dropped silently.
    let t0 = Instant::now();
    let hole = Blackhole::new(&lab, 3);
    let took = lab.wait_withdrawn(3, t0, "h3's frames dropped");
    assert!(
        took < HOLD_TIME,
        "h3 silent: withdrawn after {took:?}, not before the hold timer ({HOLD_TIME:?})"
    );
    let broken = flows.check(&lab, "h3's frames dropped");
    let syns = new_connections(&lab, 100, "h3's frames dropped");
    assert_eq!(
        syns[2], 0,
        "new connections reached h3 while it was silent: {syns:?}"
    );
    report.push(format!(
        "h3 silent: withdrawn after {took:.2?}, {} connections broke, new per host {syns:?}",
        broken.len()
    ));
    drop(hole);
    wait_all(&lab, &HOSTS, "h3's frames pass again");
    let broken = flows.check(&lab, "h3 back");
    report.push(format!("h3 back: {} connections broke", broken.len()));

    // An orderly drain of h1.
    lab.lb_ok(1, &["host", "drain"]);
    wait_all(&lab, &[2, 3], "h1 drained");
    let broken = flows.check(&lab, "h1 drained");
    let syns = new_connections(&lab, 100, "h1 drained");
    assert_eq!(syns[0], 0, "new connections reached drained h1: {syns:?}");
    report.push(format!(
        "h1 drained: {} connections broke, new per host {syns:?}",
        broken.len()
    ));
    lab.lb_ok(1, &["host", "resume"]);
    wait_all(&lab, &HOSTS, "h1 resumed");
    let broken = flows.check(&lab, "h1 resumed");
    report.push(format!("h1 resumed: {} connections broke", broken.len()));

    let total = flows.chatter.total();
    let kept = flows.chatter.finish().len();
    report.push(format!("kept {kept} of {total} long-lived connections"));
    eprintln!("scale-out failover:\n  {}", report.join("\n  "));
}
