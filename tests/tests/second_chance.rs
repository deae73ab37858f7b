//! dsr's second chance from outside (issue 15, item 6): connections that
//! a host failover moves to hosts without state for them, after the target
//! set changed, keep going. The lab is the scale-out one
//! (`lb_tests::scale_out`: a BIRD/ECMP router, three balancer hosts, dsr
//! targets running `lb target attach`, a client), with four targets of
//! which the hosts' configs name three at first.
//!
//! 300 long-lived TCP connections (200 IPv4, 100 IPv6) are steered through
//! h2 and exchange data. Every host's config gains target 4 (`lb reload`):
//! h2 keeps its connections by their flow entries, but h1 and h3, which
//! never saw them, now hash them with a table in which about a quarter of
//! them (Maglev: 1 of 4 slots moves to the new target) have another target.
//! Then h2's link goes down and the connections move to h1 and h3. With the
//! second chance (the default for dsr TCP groups) a moved connection whose
//! target changed goes to the new target chained to the previous one, whose
//! `lb_decap` forwards it on (no forwarding on the targets' interfaces:
//! `lb_decap` looks routes up as from `lo`); without it, the new target
//! resets it. The two cases build a lab each and take turns.
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lb_tests::chatter::Chatter;
use lb_tests::client::EchoConn;
use lb_tests::lab::{vip4, vip6};
use lb_tests::scale_out::{ScaleOut, steer};
use lb_tests::topology::{VIP_TCP_PORT, VIP4, VIP6};

/// One lab at a time (three daemons and four BIRDs each).
static LAB: Mutex<()> = Mutex::new(());

const HOSTS: [usize; 3] = [1, 2, 3];
/// Targets in the hosts' configs at first; the lab has one more.
const FIRST_TARGETS: usize = 3;
const ALL_TARGETS: usize = 4;
const CONNS4: usize = 200;
const CONNS6: usize = 100;
/// How long one echo may take: a moved connection waits for h2's route
/// to be withdrawn (BFD, ~1.5 s) and for TCP's retransmission.
const ECHO_TIMEOUT: Duration = Duration::from_secs(30);
const ROUNDS_WITHIN: Duration = Duration::from_secs(90);

/// What one run saw.
struct Outcome {
    total: usize,
    broken: usize,
    /// `lb_decap` counters summed over the targets.
    chain_forwarded: u64,
    chain_local: u64,
    took: Duration,
}

/// The scenario of the module doc; `tcp_extra` goes into each TCP group
/// of the new config (e.g. `second_chance = false`).
fn move_after_a_target_change(name: &str, tcp_extra: &[&str]) -> Outcome {
    let start = Instant::now();
    let lab = ScaleOut::with_spare_targets(name, HOSTS.len(), ALL_TARGETS, FIRST_TARGETS);
    for vip in [VIP4.into(), VIP6.into()] {
        lab.wait_paths(vip, &HOSTS, "three hosts up");
    }
    lab.wait_healthy();

    // Every connection through h2, from the steered ports.
    lab.steer(Some(2));
    let before = lab.counts();
    let base = *steer::PORTS.start();
    let mut conns: Vec<EchoConn> = (0..CONNS4)
        .map(|k| lab.connect(vip4(VIP_TCP_PORT), base + k as u16))
        .collect();
    conns.extend((0..CONNS6).map(|k| lab.connect(vip6(VIP_TCP_PORT), base + (CONNS4 + k) as u16)));
    let syns = lab.counts().since(&before).per_host("syn", HOSTS.len());
    assert!(
        syns[0] == 0 && syns[2] == 0 && syns[1] >= (CONNS4 + CONNS6) as u64,
        "the connections must all begin through h2: SYNs per host {syns:?}"
    );
    let chatter = Chatter::start(conns, ECHO_TIMEOUT, Duration::from_millis(200));
    chatter.wait_rounds(2, ROUNDS_WITHIN, "opened");

    // Target 4 joins every host's table; h2 keeps its flows by state.
    for i in HOSTS {
        lab.reconfigure(i, ALL_TARGETS, tcp_extra);
        lab.lb_ok(i, &["reload"]);
    }
    lab.wait_healthy_on(&HOSTS, ALL_TARGETS);
    chatter.wait_rounds(2, ROUNDS_WITHIN, "target 4 added");
    assert!(
        chatter.broken().is_empty(),
        "connections broke while h2 still carried them: {:#?}",
        chatter.broken()
    );

    // h2 lost: its connections move to h1 and h3, which have no state.
    let t0 = Instant::now();
    lab.set_link(2, false);
    lab.steer(None);
    lab.wait_withdrawn(2, t0, "h2's link down");
    chatter.wait_rounds(3, ROUNDS_WITHIN, "h2 lost");
    let total = chatter.total();
    let broken = chatter.broken().len();
    let sum = |name: &str| -> u64 {
        (1..=ALL_TARGETS)
            .map(|j| lab.edge().target_counter(j, name))
            .sum()
    };
    let outcome = Outcome {
        total,
        broken,
        chain_forwarded: sum("chain_forwarded"),
        chain_local: sum("chain_local"),
        took: start.elapsed(),
    };
    eprintln!(
        "{name}: kept {} of {total} moved connections ({broken} broke, {:.1}%); lb_decap \
         chain_forwarded {}, chain_local {}; {:.1?}",
        total - broken,
        broken as f64 * 100.0 / total as f64,
        outcome.chain_forwarded,
        outcome.chain_local,
        outcome.took
    );
    let _ = chatter.finish();
    outcome
}

/// With the second chance on (the default), at least 99.9% of the moved
/// connections keep exchanging data both ways without a reset, and the
/// targets did forward chains (the moved connections did need them).
#[test]
fn moved_connections_survive_a_target_change_with_the_second_chance() {
    let _turn = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let o = move_after_a_target_change("scon", &[]);
    let kept = o.total - o.broken;
    assert!(
        kept as f64 >= 0.999 * o.total as f64,
        "second chance on: kept {kept} of {} connections",
        o.total
    );
    assert!(
        o.chain_forwarded > 0,
        "no chain was forwarded by any target: nothing tested the second chance"
    );
}

/// With `second_chance = false`, plain Maglev: the moved connections whose
/// target changed are reset by the new target. A quarter is expected (the
/// new target takes 1 of 4 of the table); 10-40% is required.
#[test]
fn without_the_second_chance_about_a_quarter_of_moved_connections_break() {
    let _turn = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let o = move_after_a_target_change("scoff", &["second_chance = false"]);
    let share = o.broken as f64 / o.total as f64;
    assert!(
        (0.10..=0.40).contains(&share),
        "second chance off: {} of {} connections broke ({:.1}%), expected 10-40% (Maglev: 25%)",
        o.broken,
        o.total,
        share * 100.0
    );
    assert_eq!(
        o.chain_forwarded + o.chain_local,
        0,
        "chains reached the targets with the second chance off"
    );
}
