//! Health checks in dsr mode (issue 15, item 3), in the [`DsrLab`]: by
//! default (`health_check.address = "vip"`) the daemon probes each target
//! at the VIP, wrapped like a client's packet (the probe device and its tc
//! program, `lb_probe_encap`), so a target whose decapsulation is broken
//! turns unhealthy although its service still listens on its own address;
//! with `address = "target"` the same target stays healthy. The probes
//! really arrive encapsulated (the target's `lb_decap` counts them), for
//! TCP over IPv4 and IPv6 (the UDP groups are checked over TCP), and the
//! balancer's probe program counts what it wrapped (`lb stats`,
//! `/metrics`). `lb down` leaves no rule, route, device or pin behind.
//! Routing that stops the probes (a rule of blackholes before the probe
//! path's, reverse-path filtering of the answers, a VIP of this host's own)
//! is warned of at the reload, with its cause, and mending it brings the
//! target back. Needs root; `cargo xtask test` builds `lb`.
use std::time::{Duration, Instant};

use lb::probe_path::{ROUTES_CHECKED, TROUBLE_WARNING};
use lb_tests::dsr_lab::DsrLab;
use lb_tests::lab::{TargetHealth, all_healthy, state_of};
use lb_tests::netns;
use lb_tests::proc;
use lb_tests::topology::{LB_CLIENT_IF, VIP_TCP_PORT, VIP4, target4, target6};

/// Every group of the lab; the UDP ones are checked over TCP on 8080.
const GROUPS: [&str; 4] = ["tcp4", "udp4", "tcp6", "udp6"];
/// The IPv4 ones, which the routing and `rp_filter` changes below touch.
const V4_GROUPS: [&str; 2] = ["tcp4", "udp4"];
const V6_GROUPS: [&str; 2] = ["tcp6", "udp6"];
/// Well past 2 failed checks at 1 s, on a loaded machine.
const TURN: Duration = Duration::from_secs(20);

/// The value on the line of `text` whose first word is `name`.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} counter in:\n{text}"))
}

/// Target `i`'s endpoint in `group`.
fn endpoint(group: &str, i: usize) -> std::net::SocketAddr {
    let port = if group.starts_with("udp") {
        lb_tests::topology::VIP_UDP_PORT
    } else {
        VIP_TCP_PORT
    };
    if group.ends_with('4') {
        (target4(i), port).into()
    } else {
        (target6(i), port).into()
    }
}

fn state_is(
    group: &'static str,
    i: usize,
    state: &'static str,
) -> impl Fn(&[TargetHealth]) -> bool {
    move |h| state_of(h, endpoint(group, i)) == state
}

/// Breaks target 1's decapsulation: `lb target detach` takes the program
/// and the VIPs on `lo` away; its servers keep listening on every address.
fn break_decapsulation(dsr: &DsrLab) {
    let out = dsr.lb_target(1, &["detach"]);
    assert!(
        out.status.success(),
        "lb target detach in t1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The probes of `groups` stay `state` for target `i` over a few seconds
/// (several probe intervals).
fn stays(dsr: &DsrLab, groups: &[&str], i: usize, state: &str, what: &str) {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        for &g in groups {
            let h = dsr.lab.target_health(g);
            assert_eq!(
                state_of(&h, endpoint(g, i)),
                state,
                "{g}: t{i} {what}: {h:?}\n{}",
                dsr.lab.diagnostics()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The series of the probe program's `encapsulated` count in `/metrics`.
const ENCAPSULATED_SERIES: &str = "lb_health_probe_packets_total{verdict=\"encapsulated\"}";

/// The probe program's `encapsulated` count in `lb stats`, if it ran.
fn probes_encapsulated(dsr: &DsrLab) -> Option<u64> {
    let stats = lb_stats(dsr);
    let (_, section) = stats.split_once("dsr health probes")?;
    Some(counter(section, "encapsulated"))
}

fn lb_stats(dsr: &DsrLab) -> String {
    let lab = &dsr.lab;
    proc::lb_stats(&lab.lb, lab.topo.lb.name(), &lab.config)
}

#[test]
fn a_target_with_broken_decapsulation_turns_unhealthy_through_the_vip() {
    let dsr = DsrLab::new("dsrhc", 2);
    // The probes arrive wrapped: t1's decapsulation program counts them
    // while no client sends anything, and the balancer's probe program
    // counts what it wrapped, in `lb stats` and `/metrics` alike.
    // Read in nested order (the balancer's counts outside t1's), so every
    // packet t1 counts in its window was wrapped in the wider one.
    let scraped_before = dsr.metric(ENCAPSULATED_SERIES).expect("probe series");
    let wrapped_before = probes_encapsulated(&dsr).expect("probe counters in lb stats");
    let before = counter(&dsr.target_status(1), "decapsulated");
    std::thread::sleep(Duration::from_secs(3));
    let after = counter(&dsr.target_status(1), "decapsulated");
    assert!(
        after >= before + 4,
        "t1 decapsulated {before} then {after}: the probes (4 groups, 1 s) did not arrive wrapped"
    );
    // Every probe packet t1 took off went through the probe program (and
    // t2's besides).
    let wrapped = probes_encapsulated(&dsr).expect("probe counters") - wrapped_before;
    assert!(
        wrapped >= after - before,
        "the probe program counted {wrapped} wrapped packets while t1 alone decapsulated {}\n{}",
        after - before,
        lb_stats(&dsr)
    );
    let scraped = dsr.metric(ENCAPSULATED_SERIES).expect("probe series");
    assert!(
        scraped >= scraped_before + wrapped,
        "/metrics counted {scraped_before} then {scraped} wrapped probe packets; lb stats {wrapped} in between"
    );
    break_decapsulation(&dsr);
    for g in GROUPS {
        dsr.lab
            .wait_health(g, TURN, "t1 unhealthy", state_is(g, 1, "unhealthy"));
    }
    // The healthy target stays healthy all along.
    stays(&dsr, &GROUPS, 2, "healthy", "stays healthy");
    let h = dsr.lab.target_health("tcp4");
    let t1 = h
        .iter()
        .find(|t| t.target == endpoint("tcp4", 1))
        .expect("t1");
    assert!(
        matches!(
            t1.reason.as_deref(),
            Some("Target.Timeout" | "Target.FailedHealthChecks")
        ),
        "{t1:?}"
    );
}

#[test]
fn the_target_address_option_keeps_such_a_target_healthy() {
    let dsr = DsrLab::with_check_keys("dsrhct", 2, ", address = \"target\"");
    // No probe goes through a VIP: no probe program, no counters.
    assert_eq!(probes_encapsulated(&dsr), None, "{}", lb_stats(&dsr));
    assert_eq!(dsr.metric(ENCAPSULATED_SERIES), None);
    let before = counter(&dsr.target_status(1), "decapsulated");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        counter(&dsr.target_status(1), "decapsulated"),
        before,
        "probes to the target's own address are not wrapped"
    );
    break_decapsulation(&dsr);
    stays(
        &dsr,
        &GROUPS,
        1,
        "healthy",
        "probed at its own address, stays healthy",
    );
    for g in GROUPS {
        assert!(all_healthy(&dsr.lab.target_health(g)), "{g}");
    }
}

/// What the probe path leaves in the balancer's namespace: rules naming
/// its table, routes in it, the device.
fn probe_path_leftovers(dsr: &DsrLab) -> Vec<String> {
    let lb = &dsr.lab.topo.lb;
    let table = lb::probe_path::TABLE.to_string();
    let mut found = Vec::new();
    for fam in ["-4", "-6"] {
        let rules = String::from_utf8_lossy(&lb.ip(&[fam, "rule", "show"]).stdout).into_owned();
        found.extend(
            rules
                .lines()
                .filter(|l| l.contains("0x4c48"))
                .map(|l| format!("rule {l}")),
        );
        // A table that never held a route does not exist: nothing in it.
        let routes = netns::try_run(
            "ip",
            ["-n", lb.name(), fam, "route", "show", "table", &table],
        )
        .expect("run ip");
        let stderr = String::from_utf8_lossy(&routes.stderr);
        assert!(
            routes.status.success() || stderr.contains("does not exist"),
            "ip route show table {table}: {stderr}"
        );
        found.extend(
            String::from_utf8_lossy(&routes.stdout)
                .lines()
                .map(|l| format!("route {l}")),
        );
    }
    let links = String::from_utf8_lossy(&lb.ip(&["-o", "link", "show"]).stdout).into_owned();
    found.extend(
        links
            .lines()
            .filter(|l| l.contains(lb::probe_path::DEVICE))
            .map(|l| format!("link {l}")),
    );
    found
}

#[test]
fn lb_down_removes_the_probe_path() {
    let mut dsr = DsrLab::new("dsrhcd", 1);
    assert!(
        !probe_path_leftovers(&dsr).is_empty(),
        "the probe path is set up while probes go through the VIP"
    );
    // A restart finds it in place and sets up nothing twice.
    dsr.lab.stop_daemon();
    dsr.lab.start_daemon();
    dsr.lab
        .wait_health("tcp4", TURN, "healthy after a restart", all_healthy);
    let rules = probe_path_leftovers(&dsr)
        .iter()
        .filter(|l| l.starts_with("rule"))
        .count();
    assert_eq!(
        rules,
        2,
        "one rule per family: {:?}",
        probe_path_leftovers(&dsr)
    );
    dsr.lab.stop_daemon();
    let lab = &dsr.lab;
    let pin = lab.topo.pin_dir().join(lb_common::probe::STATS);
    assert!(pin.exists(), "the probe counters are pinned");
    proc::lb_down(&lab.lb, lab.topo.lb.name(), &lab.config);
    assert_eq!(probe_path_leftovers(&dsr), Vec::<String>::new());
    assert!(!pin.exists(), "lb down unpins the probe counters");
}

/// Reloads the daemon and returns what it warned of its probes' routes
/// in the check that reload started (its warnings come before the line
/// that ends it).
fn reload_and_read_troubles(dsr: &mut DsrLab) -> Vec<String> {
    let daemon = dsr.lab.daemon.as_mut().expect("lb run");
    let before = daemon.output().matches(TROUBLE_WARNING).count();
    let mark = daemon.mark();
    daemon.reload();
    daemon.wait_for_line_after(mark, ROUTES_CHECKED);
    daemon
        .output()
        .lines()
        .filter(|l| l.contains(TROUBLE_WARNING))
        .skip(before)
        .map(str::to_owned)
        .collect()
}

/// The IPv4 groups' target 1 turns `state`; the IPv6 ones stay healthy
/// (neither the rule nor `rp_filter` below touches IPv6).
fn ipv4_turns(dsr: &DsrLab, state: &'static str, what: &str) {
    for g in V4_GROUPS {
        dsr.lab.wait_health(g, TURN, what, state_is(g, 1, state));
    }
    for g in V6_GROUPS {
        assert!(all_healthy(&dsr.lab.target_health(g)), "{g}: {what}");
    }
}

#[test]
fn routing_that_stops_the_probes_is_named_at_the_reload() {
    let mut dsr = DsrLab::new("dsrhcr", 1);
    let vip = VIP4.to_string();
    // BIRD's table of lb's blackholes, looked up for every packet: the
    // probes to the VIP meet the blackhole before the probe path's rule.
    dsr.lab.topo.lb.ip(&[
        "route",
        "add",
        "blackhole",
        &format!("{vip}/32"),
        "table",
        "100",
    ]);
    dsr.lab
        .topo
        .lb
        .ip(&["rule", "add", "priority", "1000", "lookup", "100"]);
    let warned = reload_and_read_troubles(&mut dsr);
    assert_eq!(warned.len(), 1, "one warning, for the IPv4 VIP: {warned:?}");
    assert!(
        warned[0].contains(&vip)
            && warned[0].contains("cannot leave by the probe device")
            && warned[0].contains("not iif lo"),
        "{}",
        warned[0]
    );
    ipv4_turns(&dsr, "unhealthy", "probes caught by the blackhole rule");
    // The rule as deploy/bird/README.md now gives it: packets that come in
    // only. The probes leave; their answers come back to the address
    // toward the target, by the target's link, while the route to the VIP
    // leaves by the clients' one: strict reverse-path filtering drops them.
    dsr.lab.topo.lb.ip(&["rule", "del", "priority", "1000"]);
    dsr.lab.topo.lb.ip(&[
        "rule", "add", "priority", "1000", "not", "iif", "lo", "lookup", "100",
    ]);
    dsr.lab
        .topo
        .lb
        .ip(&["route", "add", &format!("{vip}/32"), "dev", LB_CLIENT_IF]);
    dsr.lab.topo.lb.sysctl("net.ipv4.conf.all.rp_filter", "1");
    let warned = reload_and_read_troubles(&mut dsr);
    assert_eq!(warned.len(), 1, "{warned:?}");
    let toward_target = format!("in by {}", lb_tests::topology::lb_target_if(1));
    assert!(
        warned[0].contains(&vip)
            && warned[0].contains("drops the answers")
            && warned[0].contains(&toward_target)
            && warned[0].contains("rp_filter"),
        "{}",
        warned[0]
    );
    // Still unhealthy: the answers are dropped.
    stays(
        &dsr,
        &V4_GROUPS,
        1,
        "unhealthy",
        "answers dropped by rp_filter",
    );
    // Loose filtering with that route lets them in: healthy again, and the
    // reload finds nothing to warn of.
    dsr.lab.topo.lb.sysctl("net.ipv4.conf.all.rp_filter", "2");
    let warned = reload_and_read_troubles(&mut dsr);
    assert_eq!(warned, Vec::<String>::new());
    ipv4_turns(&dsr, "healthy", "answers let in");
    // A VIP that is an address of this host keeps the probes here.
    dsr.lab
        .topo
        .lb
        .ip(&["addr", "add", &format!("{vip}/32"), "dev", "lo"]);
    let warned = reload_and_read_troubles(&mut dsr);
    dsr.lab
        .topo
        .lb
        .ip(&["addr", "del", &format!("{vip}/32"), "dev", "lo"]);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("the VIP is an address of this host"),
        "{}",
        warned[0]
    );
}

/// The routes that send the probes astray may be lb's own: with `[bgp]` on
/// it adds a blackhole per VIP, and a rule that looks their table up for
/// every packet takes the probes. The check follows the announcement that
/// adds them (here `lb host resume`), not only a change of the checks.
#[test]
fn blackholes_announced_after_the_checks_are_checked_too() {
    let mut dsr = DsrLab::with_bgp("dsrhcb", 1);
    let drained = dsr.lab.lb(&["host", "drain"]);
    assert!(drained.0, "lb host drain: {}{}", drained.1, drained.2);
    // Table 100 is empty while drained: the rule takes nothing yet.
    dsr.lab
        .topo
        .lb
        .ip(&["rule", "add", "priority", "1000", "lookup", "100"]);
    let daemon = dsr.lab.daemon.as_mut().expect("lb run");
    let mark = daemon.mark();
    let resumed = dsr.lab.lb(&["host", "resume"]);
    assert!(resumed.0, "lb host resume: {}{}", resumed.1, resumed.2);
    let daemon = dsr.lab.daemon.as_mut().expect("lb run");
    let line = daemon.wait_for_line_after(mark, TROUBLE_WARNING);
    assert!(
        line.contains(&VIP4.to_string()) && line.contains("cannot leave by the probe device"),
        "{line}"
    );
    ipv4_turns(&dsr, "unhealthy", "probes caught by lb's own blackholes");
}
