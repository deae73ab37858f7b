//! `lb-demo --scale-out` (`cargo xtask demo --scale-out`): three balancer
//! hosts behind a router that spreads flows over them by ECMP, learned
//! from each host's BIRD over BGP; dsr to three targets that answer the
//! client directly. Long-lived connections stay up while one host is
//! taken away (its link goes down) and comes back. The lab is the tests'
//! (`lb_tests::scale_out`); everything is torn down at the end, on Ctrl-C
//! and on failure.
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use lb_tests::chatter::Chatter;
use lb_tests::client::{EchoConn, count_by_target};
use lb_tests::lab::{vip4, vip6};
use lb_tests::scale_out::{ScaleOut, edge, router_if};
use lb_tests::topology::{PEER_IF, VIP_TCP_PORT, VIP4, VIP6};

/// The host the demo takes away.
const LOST: usize = 2;

pub fn run(flows: usize, hold: bool, interrupted: fn() -> bool) -> Result<()> {
    let check = || {
        if interrupted() {
            bail!("interrupted");
        }
        Ok(())
    };
    println!(
        "Building the scale-out lab: a router (BIRD: ECMP, BFD), three balancer hosts \
         (lb run + BIRD each), three dsr targets (lb target attach), a client"
    );
    let lab = ScaleOut::with_targets("demo", 3, 3);
    print_lab(&lab);
    check()?;
    println!("\nWaiting for BGP: every host announces both VIPs ...");
    let all = [1, 2, 3];
    lab.wait_paths(IpAddr::V4(VIP4), &all, "three hosts up");
    lab.wait_paths(IpAddr::V6(VIP6), &all, "three hosts up");
    print_routes(&lab);
    check()?;
    lab.wait_healthy();
    println!("Health checks: every host sees every target healthy.");
    check()?;

    let before = lab.counts();
    let mut conns: Vec<EchoConn> = Vec::new();
    for (vip, n) in [(vip4(VIP_TCP_PORT), flows), (vip6(VIP_TCP_PORT), flows / 2)] {
        conns.extend((0..n).map(|_| lab.connect(vip, 0)));
    }
    let per_host = lab.counts().since(&before).per_host("syn", 3);
    print_spread(&conns, &per_host);
    let total = conns.len();
    let chatter = Chatter::start(conns, Duration::from_secs(30), Duration::from_millis(200));
    chatter.wait_rounds(2, Duration::from_secs(60), "opened");
    println!("Each connection now echoes a line every 200 ms.");
    check()?;

    println!(
        "\nTaking h{LOST} away: `ip link set {PEER_IF} down` in its namespace (the router's end \
         of the link loses carrier, so BIRD drops that session and its path at once; BFD is for \
         failures that leave the link up)"
    );
    let t0 = Instant::now();
    lab.set_link(LOST, false);
    let took = lab.wait_withdrawn(LOST, t0, "the demo's lost host");
    println!("The router withdrew h{LOST} after {took:.2?}:");
    print_routes(&lab);
    chatter.wait_rounds(3, Duration::from_secs(90), "h2 lost");
    let broken = chatter.broken().len();
    println!(
        "Long-lived connections still exchanging data: {} of {total} (those of h{LOST} moved \
         to the other hosts, which send them to the same targets: same config, same Maglev table)",
        total - broken
    );
    let before = lab.counts();
    let run = lab.clients("tcp", vip4(VIP_TCP_PORT), flows);
    let per_host = lab.counts().since(&before).per_host("syn", 3);
    println!(
        "New connections: {} of {flows} succeeded, per host {per_host:?}",
        run.flows.len()
    );
    check()?;

    println!("\nBringing h{LOST} back: `ip link set {PEER_IF} up`");
    lab.set_link(LOST, true);
    lab.wait_paths(IpAddr::V4(VIP4), &all, "h2 back");
    lab.wait_paths(IpAddr::V6(VIP6), &all, "h2 back");
    print_routes(&lab);
    chatter.wait_rounds(3, Duration::from_secs(90), "h2 back");
    let broken = chatter.broken();
    println!(
        "Long-lived connections still exchanging data: {} of {total}",
        total - broken.len()
    );
    let leaks = lab.counts().get("leak");
    println!("Replies that crossed a balancer host (router's counter): {leaks}");
    check()?;

    if hold {
        println!("\nEverything stays up; press Ctrl-C to tear down. Try:");
        println!(
            "  ip netns exec {} birdc -s <run dir>/router/bird.ctl show route all",
            lab.router.name()
        );
        println!("  ip -n {} route show {VIP4}", lab.router.name());
        while !interrupted() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let kept = chatter.finish().len();
    println!(
        "\nTearing down: lb run and lb down on each host, BIRDs, lb target detach, namespaces."
    );
    drop(lab);
    ensure!(
        kept == total && run.all_ok() && leaks == 0,
        "{} of {total} connections broke ({broken:?}), new connections: {}, leaked replies: {leaks}",
        total - kept,
        if run.all_ok() {
            "all fine".to_owned()
        } else {
            run.describe_failure()
        }
    );
    Ok(())
}

fn print_lab(lab: &ScaleOut) {
    println!(
        "  router  netns {}  ECMP over the hosts, one link per host, target and client",
        lab.router.name()
    );
    for (n, h) in lab.hosts.iter().enumerate() {
        let i = n + 1;
        println!(
            "  h{i}      netns {}  {} {}  (router side {})  config {}",
            h.ns.name(),
            lb_tests::scale_out::host4(i),
            lb_tests::scale_out::host6(i),
            router_if(i),
            h.config.display()
        );
    }
    for (n, t) in lab.edge().targets.iter().enumerate() {
        let i = n + 1;
        println!(
            "  t{i}      netns {}  {} {}  (lb target attach --interface {PEER_IF} --vip {VIP4} {VIP6})",
            t.name(),
            edge::target4(i),
            edge::target6(i)
        );
    }
    println!(
        "  client  netns {}  {} {}",
        lab.edge().client.name(),
        edge::CLIENT4,
        edge::CLIENT6
    );
    println!("  VIPs {VIP4} and {VIP6}: TCP 80, UDP 53, forwarding = \"dsr\"");
}

fn print_routes(lab: &ScaleOut) {
    for (family, vip) in [("-4", VIP4.to_string()), ("-6", VIP6.to_string())] {
        let out = lab.router.ip(&[family, "route", "show", &vip]);
        println!("  router$ ip {family} route show {vip}");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            println!("    {line}");
        }
    }
}

fn print_spread(conns: &[EchoConn], per_host: &[u64]) {
    println!(
        "\nOpened {} long-lived TCP connections through the VIPs.",
        conns.len()
    );
    println!("  new connections per host (router's counters): {per_host:?}");
    let reports: Vec<_> = conns
        .iter()
        .map(|c| lb_tests::client::FlowReport {
            proto: "tcp".into(),
            index: 0,
            local: c.local,
            target: c.target.clone(),
            seen: c.seen,
        })
        .collect();
    println!("  per target: {:?}", count_by_target(&reports));
    let real = conns.iter().all(|c| c.seen == c.local);
    println!(
        "  every target saw the client's own address and port: {}",
        if real { "yes" } else { "NO" }
    );
}
