//! Control plane end to end: target lifecycle (health checks, draining,
//! slow start, zones) with real servers in target namespaces, `lb run`
//! (XDP) in the load-balancer namespace and real clients.
//!
//! Needs root and `LB_BIN` (set by `cargo xtask test`); panics otherwise,
//! never skips. Each test builds its own topology, so they run in parallel.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lb_tests::client::count_by_target;
use lb_tests::lab::{Lab, Pinger, target_index, vip4};
use lb_tests::topology::{ConfigSpec, VIP_TCP_PORT};

/// Sets `lines` on every target group.
fn group_attrs(spec: &mut ConfigSpec, lines: &[&str]) {
    for g in &mut spec.target_groups {
        g.extra.extend(lines.iter().map(|l| l.to_string()));
    }
}

/// Targets (1-based) that got at least one of `n` new TCP connections.
fn targets_reached(lab: &Lab, n: usize) -> BTreeSet<usize> {
    let flows = lab.flows("tcp", vip4(VIP_TCP_PORT), n);
    count_by_target(&flows)
        .keys()
        .map(|name| target_index(name))
        .collect()
}

/// Deregistration (by reload) drains: the target gets no new connections,
/// an established one keeps working until the delay ends, then it is cut
/// (its flow moves and the new target resets it).
#[test]
fn deregistered_target_drains_then_its_connections_end() {
    let delay = 4;
    let mut lab = Lab::with("drain", 3, &[1, 2, 3], move |spec| {
        group_attrs(spec, &[&format!("deregistration_delay = {delay}")]);
    });
    let conn = lab.connect(vip4(VIP_TCP_PORT));
    let pinned = target_index(&conn.target);
    let mut pinger = Pinger::start(conn);
    pinger.expect_progress(5, "before deregistration");

    let rest: Vec<usize> = [1, 2, 3].into_iter().filter(|&i| i != pinned).collect();
    lab.reconfigure(&rest);
    let started = Instant::now();
    lab.daemon.as_mut().expect("daemon").reload();
    let reached = targets_reached(&lab, 60);
    assert_eq!(
        reached,
        rest.iter().copied().collect(),
        "new connections while t{pinned} drains"
    );
    pinger.expect_progress(20, "while its target drains");
    let err = pinger.expect_broken(
        Duration::from_secs(delay + 5),
        "the deregistration delay ended",
    );
    let lasted = started.elapsed();
    assert!(
        lasted >= Duration::from_secs(delay - 1),
        "the connection ended after {lasted:?}, before the {delay} s delay: {err}"
    );
}
