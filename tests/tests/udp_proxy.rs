//! The UDP relay end to end: `lb run` with `dataplane = "userspace"` serving
//! the standard `udp4`/`udp6` listeners from its own sockets (the VIPs on
//! the load balancer's loopback), real lb-test-server targets, clients in
//! the client namespace, health checks, reloads and `/metrics`.
//!
//! Needs root and `LB_BIN` (set by `cargo xtask test`); panics otherwise.
//! Each test builds its own topology (own API socket, own namespaces, so
//! its own metrics port), so they run in parallel.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lb_tests::client::{UdpConn, count_by_target};
use lb_tests::lab::{
    self, IO_TIMEOUT, Lab, all_healthy, server_bin, state_of, target_index, vip4, vip6,
};
use lb_tests::netns;
use lb_tests::topology::{ConfigSpec, TARGET_UDP_PORT, VIP_UDP_PORT, target_name, target4};

const METRICS: &str = "127.0.0.1:9181";

/// [`lab::fast_checks`], and metrics on [`METRICS`].
fn fast_checks(spec: &mut ConfigSpec) {
    lab::fast_checks(spec);
    spec.api_extra
        .push(format!("metrics_listen = \"{METRICS}\""));
}

fn t4(i: usize) -> SocketAddr {
    SocketAddr::new(target4(i).into(), TARGET_UDP_PORT)
}

fn flow(lab: &Lab) -> UdpConn {
    UdpConn::connect_in(lab.topo.client.name(), vip4(VIP_UDP_PORT), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("udp socket: {e:#}"))
}

/// The target (1-based) that answered `msg` on `flow`.
fn ask(lab: &Lab, flow: &mut UdpConn, msg: &str) -> usize {
    let name = flow
        .ask(msg)
        .unwrap_or_else(|e| panic!("{msg:?}: {e:#}\n{}", lab.diagnostics()));
    target_index(&name)
}

/// The value of the series `series` (name and labels, as printed) in the
/// daemon's `/metrics`; 0 when absent.
fn metric(lab: &Lab, series: &str) -> f64 {
    let text = netns::exec_in_stdout(
        lab.topo.lb.name(),
        &[
            "curl",
            "-sS",
            "-m",
            "5",
            &format!("http://{METRICS}/metrics"),
        ],
    );
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| {
            v.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{series} = {v:?}: {e}"))
        })
}

/// `lb flows --json`: (entries, active, sample).
fn lb_flows(lab: &Lab) -> (u64, u64, Vec<serde_json::Value>) {
    let (ok, out, err) = lab.lb(&["flows", "--limit", "100", "--json"]);
    assert!(ok, "lb flows: {err}\n{}", lab.diagnostics());
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("lb flows printed {out:?}: {e}"));
    (
        v["entries"].as_u64().expect("entries"),
        v["active"].as_u64().expect("active"),
        v["sample"].as_array().cloned().unwrap_or_default(),
    )
}

fn udp4(name: &str) -> String {
    format!("{name}{{listener=\"udp4\"}}")
}

/// Replies come from the VIP (the clients' sockets are connected to it, so
/// the kernel drops anything else), flows spread by weight, each flow stays
/// on its target, and IPv6 works the same.
#[test]
fn udp_relay_answers_from_the_vip_spreads_by_weight_and_sticks() {
    let lab = Lab::userspace("udprelay", 3, &[1, 2, 3], |spec| {
        fast_checks(spec);
        for g in &mut spec.target_groups {
            g.targets[0].weight = 2;
        }
    });
    lab.wait_health("udp4", Duration::from_secs(15), "all healthy", all_healthy);

    // Round robin over weights 2:1:1, flow by flow: exact shares.
    let flows = lab.flows("udp", vip4(VIP_UDP_PORT), 40);
    let counts = count_by_target(&flows);
    assert_eq!(
        counts,
        BTreeMap::from([
            (target_name(1), 20),
            (target_name(2), 10),
            (target_name(3), 10)
        ]),
        "{}",
        lab.diagnostics()
    );
    // Targets see the relay's address on their link, not the client's.
    for f in &flows {
        let i = target_index(&f.target);
        assert_eq!(
            f.seen.ip().to_string(),
            format!("10.200.{}.1", 10 + i),
            "{f:?}"
        );
    }

    // One flow, many datagrams: one target.
    let mut one = flow(&lab);
    let first = ask(&lab, &mut one, "datagram 0");
    for n in 1..50 {
        assert_eq!(ask(&lab, &mut one, &format!("datagram {n}")), first);
    }

    let v6 = lab.flows("udp", vip6(VIP_UDP_PORT), 8);
    assert_eq!(count_by_target(&v6).values().sum::<usize>(), 8);
    assert_eq!(count_by_target(&v6).len(), 3, "{v6:?}");

    assert_eq!(metric(&lab, &udp4("lb_proxy_udp_flows_total")), 41.0);
    assert_eq!(metric(&lab, &udp4("lb_proxy_udp_active_flows")), 41.0);
    let to_t1 = format!(
        "lb_proxy_udp_target_flows_total{{listener=\"udp4\",target=\"{}\"}}",
        t4(1)
    );
    let expected_t1 = 20.0 + if first == 1 { 1.0 } else { 0.0 };
    assert_eq!(metric(&lab, &to_t1), expected_t1);
    let packets = format!(
        "lb_proxy_udp_packets_total{{listener=\"udp4\",target=\"{}\",direction=\"to_client\"}}",
        t4(first)
    );
    assert!(metric(&lab, &packets) >= 50.0);
}

/// A target whose server dies turns unhealthy; its flow moves to another
/// target on the next datagram and stays there; new flows avoid it; back
/// up, it gets new flows again.
#[test]
fn udp_flow_moves_when_its_target_fails_health_checks() {
    let mut lab = Lab::userspace("udpfail", 3, &[1, 2, 3], fast_checks);
    lab.wait_health("udp4", Duration::from_secs(15), "all healthy", all_healthy);
    let mut one = flow(&lab);
    let victim = ask(&lab, &mut one, "one");
    assert_eq!(ask(&lab, &mut one, "two"), victim);

    lab.topo.stop_server(victim);
    lab.wait_health("udp4", Duration::from_secs(15), "victim unhealthy", |h| {
        state_of(h, t4(victim)) == "unhealthy"
    });
    let moved = ask(&lab, &mut one, "three");
    assert_ne!(moved, victim, "the flow stayed on the dead target");
    assert_eq!(ask(&lab, &mut one, "four"), moved);
    let flows = lab.flows("udp", vip4(VIP_UDP_PORT), 20);
    assert!(
        !count_by_target(&flows).contains_key(&target_name(victim)),
        "new flows reached the unhealthy target: {flows:?}"
    );

    lab.topo.start_server(&server_bin(), victim);
    lab.wait_health(
        "udp4",
        Duration::from_secs(15),
        "all healthy again",
        all_healthy,
    );
    let flows = lab.flows("udp", vip4(VIP_UDP_PORT), 30);
    assert_eq!(count_by_target(&flows).len(), 3, "{flows:?}");
    assert_eq!(
        ask(&lab, &mut one, "five"),
        moved,
        "recovery moved the flow"
    );
}

/// Deregistration (by reload) drains: the target gets no new flows, its
/// established flow stays on it until the deregistration delay ends, then
/// moves on its next datagram.
#[test]
fn udp_flow_stays_on_a_draining_target_until_the_delay_ends() {
    let delay = 4;
    let mut lab = Lab::userspace("udpdrain", 3, &[1, 2, 3], move |spec| {
        fast_checks(spec);
        for g in &mut spec.target_groups {
            g.extra.push(format!("deregistration_delay = {delay}"));
        }
    });
    let mut one = flow(&lab);
    let pinned = ask(&lab, &mut one, "before");
    let rest: Vec<usize> = [1, 2, 3].into_iter().filter(|&i| i != pinned).collect();
    lab.reconfigure(&rest);
    let started = Instant::now();
    lab.daemon.as_mut().expect("daemon").reload();

    let flows = lab.flows("udp", vip4(VIP_UDP_PORT), 20);
    assert!(
        !count_by_target(&flows).contains_key(&target_name(pinned)),
        "new flows reached the draining target: {flows:?}"
    );
    let mut n = 0;
    let moved = loop {
        n += 1;
        let at = ask(&lab, &mut one, &format!("while draining {n}"));
        if at != pinned {
            break at;
        }
        assert!(
            started.elapsed() < Duration::from_secs(delay + 5),
            "the flow is still on t{pinned} after the delay"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let lasted = started.elapsed();
    assert!(
        lasted >= Duration::from_secs(delay - 1),
        "the flow moved after {lasted:?}, before the {delay} s delay ended"
    );
    assert!(rest.contains(&moved));
    assert_eq!(ask(&lab, &mut one, "after"), moved);
}

/// With `udp_idle_timeout = 10` (the minimum), a quiet flow expires: the
/// active-flow gauge falls to 0 after the timeout, not before, and the
/// client's next datagram makes a new flow.
#[test]
fn idle_udp_flows_expire() {
    let idle = 10;
    let lab = Lab::userspace("udpidle", 2, &[1, 2], move |spec| {
        fast_checks(spec);
        for g in &mut spec.target_groups {
            g.extra.push(format!("udp_idle_timeout = {idle}"));
        }
    });
    let mut one = flow(&lab);
    let target = ask(&lab, &mut one, "hello");
    let sent = Instant::now();
    assert_eq!(metric(&lab, &udp4("lb_proxy_udp_active_flows")), 1.0);
    // `lb flows` lists the relay's flow: the client, the VIP, its target.
    let (entries, active, sample) = lb_flows(&lab);
    assert_eq!((entries, active, sample.len()), (1, 1, 1), "{sample:?}");
    assert_eq!(sample[0]["client"], one.local.to_string());
    assert_eq!(sample[0]["vip"], vip4(VIP_UDP_PORT).to_string());
    assert_eq!(sample[0]["protocol"], "udp");
    assert_eq!(sample[0]["target"], t4(target).to_string());
    loop {
        let active = metric(&lab, &udp4("lb_proxy_udp_active_flows"));
        if active == 0.0 {
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(idle + 5),
            "the flow is still active {:?} after its last datagram",
            sent.elapsed()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let expired_after = sent.elapsed();
    assert_eq!(lb_flows(&lab).0, 0, "lb flows after the expiry");
    assert!(
        expired_after >= Duration::from_secs(idle - 1),
        "the flow expired after {expired_after:?}, before the {idle} s timeout"
    );
    ask(&lab, &mut one, "hello again");
    assert_eq!(metric(&lab, &udp4("lb_proxy_udp_flows_total")), 2.0);
    assert_eq!(metric(&lab, &udp4("lb_proxy_udp_active_flows")), 1.0);
}
