//! Control plane end to end: target lifecycle (health checks, draining,
//! slow start, zones) with real servers in target namespaces, `lb run`
//! (XDP) in the load-balancer namespace and real clients.
//!
//! Needs root and `LB_BIN` (set by `cargo xtask test`); panics otherwise,
//! never skips. Each test builds its own topology, so they run in parallel.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lb_tests::client::{EchoConn, UdpConn, count_by_target};
use lb_tests::lab::{
    IO_TIMEOUT, Lab, Pinger, all_healthy, fast_checks, server_bin, state_of, target_index, vip4,
};
use lb_tests::topology::{
    ConfigSpec, TARGET_TCP_PORT, VIP_TCP_PORT, VIP_UDP_PORT, target_name, target4,
};

fn t4(i: usize, port: u16) -> SocketAddr {
    SocketAddr::new(target4(i).into(), port)
}

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

/// A target whose server dies turns unhealthy after the threshold (with
/// ELB's reason, shown by the CLI), gets no new connections, and its
/// established UDP flow moves to another target; restarted, it turns
/// healthy and gets traffic again.
#[test]
fn dead_target_turns_unhealthy_its_flows_move_and_it_recovers() {
    let mut lab = Lab::with("health", 3, &[1, 2, 3], fast_checks);
    lab.wait_health("udp4", Duration::from_secs(15), "all healthy", all_healthy);
    lab.wait_health("tcp4", Duration::from_secs(15), "all healthy", all_healthy);
    let mut flow = UdpConn::connect_in(lab.topo.client.name(), vip4(VIP_UDP_PORT), IO_TIMEOUT)
        .expect("udp flow");
    let victim = target_index(&flow.ask("one").expect("first datagram"));
    assert_eq!(
        target_index(&flow.ask("two").expect("second datagram")),
        victim
    );

    lab.topo.stop_server(victim);
    let ep = t4(victim, TARGET_TCP_PORT);
    let h = lab.wait_health("tcp4", Duration::from_secs(15), "victim unhealthy", |h| {
        state_of(h, ep) == "unhealthy"
    });
    let row = h.iter().find(|t| t.target == ep).expect("victim row");
    assert_eq!(
        row.reason.as_deref(),
        Some("Target.FailedHealthChecks"),
        "{h:?}"
    );
    assert_eq!(row.effective_weight, 0);
    lab.wait_health("udp4", Duration::from_secs(15), "victim unhealthy", |h| {
        state_of(h, t4(victim, lb_tests::topology::TARGET_UDP_PORT)) == "unhealthy"
    });
    // The CLI's table shows the state and the reason.
    let (ok, table, err) = lab.lb(&["targets", "tcp4"]);
    assert!(ok, "{err}");
    let line = table
        .lines()
        .find(|l| l.contains(&ep.to_string()))
        .unwrap_or_else(|| panic!("no row for {ep}:\n{table}"));
    assert!(
        line.contains("unhealthy") && line.contains("Target.FailedHealthChecks"),
        "{table}"
    );

    // The established UDP flow continues on another target.
    let moved = target_index(&flow.ask("three").expect("datagram after the failure"));
    assert_ne!(moved, victim, "the flow stayed on the dead target");
    assert_eq!(target_index(&flow.ask("four").expect("datagram")), moved);
    // New connections never reach it.
    let others: BTreeSet<usize> = [1, 2, 3].into_iter().filter(|&i| i != victim).collect();
    assert_eq!(targets_reached(&lab, 60), others);

    lab.topo.start_server(&server_bin(), victim);
    lab.wait_health(
        "tcp4",
        Duration::from_secs(15),
        "all healthy again",
        all_healthy,
    );
    assert_eq!(targets_reached(&lab, 120), BTreeSet::from([1, 2, 3]));
}

/// With every target down the group fails open: connections are still
/// forwarded (and refused by the targets' kernels) instead of dropped; the
/// first target back takes all new connections.
#[test]
fn every_target_down_fails_open() {
    let mut lab = Lab::with("failopen", 2, &[1, 2], fast_checks);
    lab.wait_health("tcp4", Duration::from_secs(15), "all healthy", all_healthy);
    lab.topo.stop_server(1);
    lab.topo.stop_server(2);
    let h = lab.wait_health("tcp4", Duration::from_secs(15), "all unhealthy", |h| {
        h.iter().all(|t| t.state == "unhealthy")
    });
    assert!(
        h.iter().all(|t| t.effective_weight > 0),
        "not failing open: {h:?}"
    );
    let err = EchoConn::connect_in(lab.topo.client.name(), vip4(VIP_TCP_PORT), IO_TIMEOUT)
        .err()
        .expect("no server listens");
    assert!(
        format!("{err:#}").contains("refused"),
        "expected a reset from a target (forwarded), got: {err:#}"
    );
    lab.topo.start_server(&server_bin(), 2);
    lab.wait_health("tcp4", Duration::from_secs(15), "t2 healthy", |h| {
        state_of(h, t4(2, TARGET_TCP_PORT)) == "healthy"
    });
    assert_eq!(targets_reached(&lab, 40), BTreeSet::from([2]));
}

/// `cross_zone = false`: new flows stay in the host's zone while it has a
/// healthy target, and fail over to the other zone when it has none.
#[test]
fn zonal_preference_and_fail_over() {
    let mut lab = Lab::with("zones", 3, &[1, 2, 3], |spec| {
        fast_checks(spec);
        spec.daemon_extra.push("zone = \"a\"".into());
        for g in &mut spec.target_groups {
            for (i, t) in g.targets.iter_mut().enumerate() {
                t.zone = Some(if i == 0 { "a" } else { "b" }.into());
            }
        }
    });
    lab.wait_health("tcp4", Duration::from_secs(15), "all healthy", all_healthy);
    assert_eq!(targets_reached(&lab, 40), BTreeSet::from([1]));
    lab.topo.stop_server(1);
    lab.wait_health("tcp4", Duration::from_secs(15), "t1 unhealthy", |h| {
        state_of(h, t4(1, TARGET_TCP_PORT)) == "unhealthy"
    });
    assert_eq!(targets_reached(&lab, 60), BTreeSet::from([2, 3]));
}

/// Slow start: a target registered by reload ramps its share of new flows
/// over `slow_start` seconds (effective weight and the flows it gets both
/// rise), then gets its full share.
#[test]
fn slow_start_ramps_a_new_targets_share() {
    let ramp = 12;
    let mut lab = Lab::with("slowstart", 3, &[1, 2], move |spec| {
        fast_checks(spec);
        for g in &mut spec.target_groups {
            g.extra.push(format!("slow_start = {ramp}"));
        }
    });
    lab.wait_health("tcp4", Duration::from_secs(15), "all healthy", all_healthy);
    lab.reconfigure(&[1, 2, 3]);
    lab.daemon.as_mut().expect("daemon").reload();
    let new = t4(3, TARGET_TCP_PORT);
    lab.wait_health("tcp4", Duration::from_secs(15), "t3 healthy", |h| {
        state_of(h, new) == "healthy"
    });
    let mut samples = Vec::new();
    for _ in 0..3 {
        let weight = lab
            .target_health("tcp4")
            .iter()
            .find(|t| t.target == new)
            .map_or(0, |t| t.effective_weight);
        let flows = lab.flows("tcp", vip4(VIP_TCP_PORT), 200);
        let share = count_by_target(&flows)
            .get(&target_name(3))
            .copied()
            .unwrap_or(0) as f64
            / flows.len() as f64;
        samples.push((weight, share));
        std::thread::sleep(Duration::from_secs(3));
    }
    let (w, s): (Vec<u64>, Vec<f64>) = samples.iter().copied().unzip();
    assert!(
        w[0] < w[1] && w[1] < w[2] && w[2] < 100,
        "effective weight did not ramp: {samples:?}"
    );
    assert!(s[0] < s[2] && s[0] < 0.2, "share did not rise: {samples:?}");
    lab.wait_health("tcp4", Duration::from_secs(ramp + 5), "ramp over", |h| {
        h.iter().all(|t| t.effective_weight == 100)
    });
    let flows = lab.flows("tcp", vip4(VIP_TCP_PORT), 300);
    let n = count_by_target(&flows)
        .get(&target_name(3))
        .copied()
        .unwrap_or(0);
    assert!((70..=130).contains(&n), "after the ramp t3 got {n} of 300");

    // Deregistered, then registered again while it drains (issue 14, item
    // 12): a new registration, so it ramps again instead of taking its
    // full share back at once.
    lab.reconfigure(&[1, 2]);
    lab.daemon.as_mut().expect("daemon").reload();
    lab.wait_health("tcp4", Duration::from_secs(5), "t3 draining", |h| {
        state_of(h, new) == "draining"
    });
    lab.reconfigure(&[1, 2, 3]);
    lab.daemon.as_mut().expect("daemon").reload();
    lab.wait_health("tcp4", Duration::from_secs(15), "t3 healthy again", |h| {
        state_of(h, new) == "healthy"
    });
    let weight = |lab: &Lab| {
        lab.target_health("tcp4")
            .iter()
            .find(|t| t.target == new)
            .map_or(0, |t| t.effective_weight)
    };
    let first = weight(&lab);
    let flows = lab.flows("tcp", vip4(VIP_TCP_PORT), 200);
    let share = count_by_target(&flows)
        .get(&target_name(3))
        .copied()
        .unwrap_or(0) as f64
        / flows.len() as f64;
    std::thread::sleep(Duration::from_secs(3));
    let later = weight(&lab);
    assert!(
        first < later && later < 100 && share < 0.2,
        "registered again while draining, t3 did not ramp: weight {first} then {later}, share {share:.2}"
    );
}

/// `curl` in the load-balancer namespace: (status, body).
fn curl(
    lab: &Lab,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut cmd: Vec<String> = [
        "curl",
        "-sS",
        "-m",
        "5",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(t) = token {
        cmd.extend(["-H".into(), format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        cmd.extend([
            "-H".into(),
            "Content-Type: application/json".into(),
            "-d".into(),
            b.into(),
        ]);
    }
    cmd.push(url.into());
    let out = lb_tests::netns::exec_in_stdout(lab.topo.lb.name(), &cmd);
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (
        code.trim()
            .parse()
            .unwrap_or_else(|_| panic!("curl {url}: {out:?}")),
        body.to_owned(),
    )
}

const API: &str = "http://127.0.0.1:9180";
const READER: &str = "reader-secret-0123456789";
const OPS: &str = "ops-secret-0123456789";

/// The management API on a real daemon: tokens and IAM-style policies
/// (401 without a token, 403 without the action, an explicit deny beating
/// an allow), registration of a new target that then takes traffic,
/// deletion protection, root over the Unix socket through the CLI, and the
/// Prometheus endpoint.
#[test]
fn api_access_control_registration_and_deletion_protection() {
    let lab = Lab::with("api", 3, &[1, 2], |spec| {
        fast_checks(spec);
        let digest = lb::api::auth::token_digest;
        spec.api_extra.extend([
            "listen = \"127.0.0.1:9180\"".to_string(),
            "metrics_listen = \"127.0.0.1:9181\"".to_string(),
            "[[api.policy]]".into(),
            "name = \"read\"".into(),
            "statement = [{ effect = \"Allow\", action = [\"lb:Describe*\"], resource = [\"*\", \"listener/*\", \"target-group/*\"] }]".into(),
            "[[api.policy]]".into(),
            "name = \"ops\"".into(),
            "statement = [{ effect = \"Allow\", action = [\"lb:*\"], resource = [\"*\", \"listener/*\", \"target-group/*\"] }, { sid = \"NoDelete\", effect = \"Deny\", action = [\"lb:Delete*\"], resource = [\"target-group/*\"] }]".into(),
            "[[api.token]]".into(),
            "name = \"reader\"".into(),
            format!("sha256 = \"{}\"", digest(READER)),
            "policies = [\"read\"]".into(),
            "[[api.token]]".into(),
            "name = \"ops\"".into(),
            format!("sha256 = \"{}\"", digest(OPS)),
            "policies = [\"ops\"]".into(),
        ]);
    });
    lab.wait_health("tcp4", Duration::from_secs(15), "all healthy", all_healthy);
    let targets = format!("{API}/v1/target-groups/tcp4/targets");

    let (code, body) = curl(&lab, "GET", &targets, None, None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("MissingAuthenticationToken"), "{body}");
    let (code, _) = curl(&lab, "GET", &targets, Some("wrong"), None);
    assert_eq!(code, 401);
    let (code, body) = curl(&lab, "GET", &targets, Some(READER), None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"healthy\""), "{body}");

    let t3 = format!("{{\"targets\": [{{\"address\": \"{}\"}}]}}", target4(3));
    let (code, body) = curl(&lab, "POST", &targets, Some(READER), Some(&t3));
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("AccessDenied") && body.contains("lb:RegisterTargets"),
        "{body}"
    );
    let (code, body) = curl(
        &lab,
        "DELETE",
        &format!("{API}/v1/target-groups/udp6"),
        Some(OPS),
        None,
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("explicit deny"), "{body}");

    // The same target twice in one request is refused with its key path,
    // as the config check refuses it twice in a group; a body that does
    // not say it is JSON (curl's -d alone sends a form) is refused with 415
    // (issue 14, item 11). Neither registers anything.
    let t = target4(3);
    let twice = format!(
        "{{\"targets\": [{{\"address\": \"{t}\"}}, {{\"address\": \"{t}\", \"port\": {TARGET_TCP_PORT}}}]}}"
    );
    let (code, body) = curl(&lab, "POST", &targets, Some(OPS), Some(&twice));
    assert_eq!(code, 400, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!(
        json["error"]["errors"],
        serde_json::json!([{"path": "targets[1]", "reason": format!("{t}:{TARGET_TCP_PORT} duplicates targets[0]")}]),
        "{body}"
    );
    let out = lb_tests::netns::exec_in_stdout(
        lab.topo.lb.name(),
        &[
            "curl",
            "-sS",
            "-m",
            "5",
            "-w",
            "\n%{http_code}",
            "-H",
            &format!("Authorization: Bearer {OPS}"),
            "-d",
            &t3,
            &targets,
        ],
    );
    assert!(out.ends_with("\n415"), "{out}");
    assert!(out.contains("UnsupportedMediaType"), "{out}");
    assert_eq!(
        state_of(&lab.target_health("tcp4"), t4(3, TARGET_TCP_PORT)),
        "absent"
    );

    // Registration through the API: initial, then healthy, then traffic.
    let (code, body) = curl(&lab, "POST", &targets, Some(OPS), Some(&t3));
    assert_eq!(code, 200, "{body}");
    let new = t4(3, TARGET_TCP_PORT);
    let h = lab.target_health("tcp4");
    assert!(
        ["initial", "healthy"].contains(&state_of(&h, new)),
        "registered target: {h:?}"
    );
    lab.wait_health("tcp4", Duration::from_secs(15), "t3 healthy", |h| {
        state_of(h, new) == "healthy"
    });
    assert_eq!(targets_reached(&lab, 90), BTreeSet::from([1, 2, 3]));

    // Deletion protection, as root over the Unix socket (no token).
    let (ok, _, err) = lab.lb(&["modify-listener", "tcp6", "--deletion-protection", "on"]);
    assert!(ok, "{err}");
    let (ok, _, err) = lab.lb(&["delete-listener", "tcp6"]);
    assert!(!ok, "a protected listener was deleted");
    assert!(err.contains("deletion protection"), "{err}");
    let (ok, _, err) = lab.lb(&["modify-listener", "tcp6", "--deletion-protection", "off"]);
    assert!(ok, "{err}");
    let (ok, _, err) = lab.lb(&["delete-listener", "tcp6"]);
    assert!(ok, "{err}");
    let (ok, out, err) = lab.lb(&["listeners"]);
    assert!(ok, "{err}");
    assert!(!out.contains("tcp6"), "{out}");
    assert!(out.contains("tcp4"), "{out}");

    // `lb reload` re-reads the file, which still has tcp6 and not t3: the
    // listener comes back, t3 drains.
    let (ok, out, err) = lab.lb(&["reload"]);
    assert!(ok, "{err}");
    assert!(out.contains("reload"), "{out}");
    let (_, out, _) = lab.lb(&["listeners"]);
    assert!(out.contains("tcp6"), "{out}");
    assert_eq!(state_of(&lab.target_health("tcp4"), new), "draining");

    // Prometheus, no token.
    let (code, metrics) = curl(&lab, "GET", "http://127.0.0.1:9181/metrics", None, None);
    assert_eq!(code, 200);
    // t3 drains: not a healthy host any more.
    assert!(
        metrics.contains("lb_healthy_host_count{target_group=\"tcp4\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.starts_with("lb_target_state")
            && l.contains(&new.to_string())
            && l.contains("state=\"draining\"")
            && l.ends_with(" 1")),
        "{metrics}"
    );
    assert!(
        metrics.contains("lb_new_flow_count_total{listener=\"tcp4\"}"),
        "{metrics}"
    );

    // A reload the file refuses keeps every error's key path in the 400;
    // a file that cannot be read is the daemon's fault (500), named.
    let reload = format!("{API}/v1/reload");
    let good = std::fs::read_to_string(&lab.config).expect("read the config");
    let bad = good.replacen("[[target_group]]", "[[target_group]]\nslow_start = 901", 1);
    std::fs::write(&lab.config, bad).expect("write the config");
    let (code, body) = curl(&lab, "POST", &reload, Some(OPS), None);
    assert_eq!(code, 400, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!(json["error"]["code"], "ValidationError", "{body}");
    assert_eq!(
        json["error"]["errors"],
        serde_json::json!([{"path": "target_group[0].slow_start", "reason": "901 is outside 0..=900"}]),
        "{body}"
    );
    let moved = lab.config.with_extension("moved");
    std::fs::rename(&lab.config, &moved).expect("move the config away");
    let (code, body) = curl(&lab, "POST", &reload, Some(OPS), None);
    std::fs::rename(&moved, &lab.config).expect("move the config back");
    assert_eq!(code, 500, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!(json["error"]["code"], "ConfigUnreadable", "{body}");
    assert_eq!(
        json["error"]["file"],
        lab.config.display().to_string(),
        "{body}"
    );
    // The running config stayed: tcp6 is still served.
    let (_, out, _) = lab.lb(&["listeners"]);
    assert!(out.contains("tcp6"), "{out}");
}
