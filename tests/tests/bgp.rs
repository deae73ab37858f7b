//! Announcing VIPs over BGP through BIRD (issue 15, item 4), from outside:
//! a router namespace running BIRD with ECMP (`deploy/bird/router.conf`)
//! and three balancer hosts, each running `lb run` and BIRD
//! (`deploy/bird/balancer.conf`). What the router's kernel routes to the
//! VIPs lead to is what the tests assert: a multipath route over every
//! host that announces, a path gone when its host is drained, taken down
//! or detached, and untouched when a daemon stops, crashes or restarts, or
//! when every target is unhealthy (fail-open).
use std::net::IpAddr;
use std::time::Duration;

use lb_tests::proc;
use lb_tests::scale_out::{API_LISTEN, LB_PROTOCOL, LB_TABLE, READER_TOKEN, ScaleOut};
use lb_tests::topology::{VIP4, VIP6};

const V4: IpAddr = IpAddr::V4(VIP4);
const V6: IpAddr = IpAddr::V6(VIP6);

/// Longer than the daemon's periodic look (2 s) twice over, and than a
/// BGP update: a withdrawal that was going to happen has happened.
const HOLD: Duration = Duration::from_secs(6);

fn wait_both(lab: &ScaleOut, hosts: &[usize], what: &str) {
    lab.wait_paths(V4, hosts, what);
    lab.wait_paths(V6, hosts, what);
}

/// `lb host status --json` of host `i`.
fn host_report(lab: &ScaleOut, i: usize) -> serde_json::Value {
    let out = lab.lb_ok(i, &["host", "status", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("lb host status printed {out:?}: {e}"))
}

fn addresses(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|a| a.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Every target of host `i`'s groups is unhealthy (its one target is
/// unreachable).
fn wait_all_unhealthy(lab: &ScaleOut, i: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for group in ["tcp4", "udp4", "tcp6", "udp6"] {
        loop {
            let out = lab.lb_ok(i, &["targets", group, "--json"]);
            let v: serde_json::Value = serde_json::from_str(&out).expect("lb targets --json");
            let states: Vec<&str> = v
                .get("targets")
                .unwrap_or(&v)
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| t["state"].as_str().unwrap_or_default())
                .collect();
            if !states.is_empty() && states.iter().all(|s| *s == "unhealthy") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "h{i} {group}: targets {states:?}, expected all unhealthy"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Three hosts announce both VIPs and the router has a 3-way ECMP route to
/// each, which stays while every target is unhealthy (fail-open); `lb
/// status`, `lb host status` and `/metrics` say so. A reader token may not
/// drain. `lb host drain` removes that host's path only, and the drain
/// outlives a daemon restart; `lb host resume` brings the path back.
#[test]
fn drain_and_resume_move_only_that_hosts_path() {
    let lab = ScaleOut::new("bgpdrain", 3);
    wait_both(&lab, &[1, 2, 3], "three hosts up");

    let status = lab.lb_ok(1, &["status"]);
    assert!(
        status
            .lines()
            .any(|l| l == format!("announced:    {VIP4}, {VIP6}")),
        "lb status:\n{status}"
    );
    assert!(status.lines().any(|l| l == "drained:      no"), "{status}");
    let r = host_report(&lab, 1);
    assert_eq!(r["bgp"], true);
    assert_eq!(r["table"], LB_TABLE);
    assert_eq!(r["protocol"], LB_PROTOCOL);
    assert_eq!(
        addresses(&r["announced"]),
        [VIP4.to_string(), VIP6.to_string()]
    );
    assert_eq!(r["withheld"], serde_json::json!([]));
    assert_eq!(lab.metric(1, "lb_bgp_announced_routes"), Some(2.0));
    assert_eq!(
        lab.metric(1, &format!("lb_bgp_vip_announced{{vip=\"{VIP6}\"}}")),
        Some(1.0)
    );
    assert_eq!(lab.metric(1, "lb_bgp_host_drained"), Some(0.0));

    // Fail-open: every target of every group unhealthy on every host, and
    // the VIPs stay announced everywhere.
    let mark = lab.mark();
    for i in 1..=3 {
        wait_all_unhealthy(&lab, i);
    }
    lab.hold_paths(mark, &[1, 2, 3], HOLD, "every target unhealthy");

    // IAM: a token allowed lb:Describe* only may look but not drain.
    let api = format!("http://{API_LISTEN}");
    let (ok, out, err) = lab.lb(
        2,
        &["host", "drain", "--api", &api, "--token", READER_TOKEN],
    );
    assert!(!ok, "a reader drained the host: {out}");
    assert!(err.contains("lb:DrainHost"), "{err}");
    let (ok, out, err) = lab.lb(
        2,
        &["host", "status", "--api", &api, "--token", READER_TOKEN],
    );
    assert!(ok && out.contains("drained:    no"), "{out}{err}");

    let out = lab.lb_ok(2, &["host", "drain"]);
    assert!(out.lines().any(|l| l == "drained:    yes"), "{out}");
    assert!(out.lines().any(|l| l == "announced:  -"), "{out}");
    wait_both(&lab, &[1, 3], "h2 drained");
    assert!(
        lab.host(2).drain_file.is_file(),
        "the drain is recorded in {}",
        lab.host(2).drain_file.display()
    );
    assert_eq!(lab.metric(2, "lb_bgp_host_drained"), Some(1.0));
    assert_eq!(lab.metric(2, "lb_bgp_announced_routes"), Some(0.0));
    let r = host_report(&lab, 2);
    assert_eq!(
        r["reason"],
        "the host is drained (`lb host resume` announces again)"
    );
    assert_eq!(
        addresses(&r["withheld"]),
        [VIP4.to_string(), VIP6.to_string()]
    );
    // Draining twice is fine and changes nothing.
    let mark = lab.mark();
    lab.lb_ok(2, &["host", "drain"]);
    lab.hold_paths(mark, &[1, 3], Duration::from_secs(3), "h2 drained twice");

    // A drained host that restarts stays drained.
    let mut lab = lab;
    let mark = lab.mark();
    lab.take_daemon(2).stop();
    lab.start_daemon(2);
    lab.hold_paths(mark, &[1, 3], HOLD, "drained h2 restarted");
    assert!(
        lab.lb_ok(2, &["status"])
            .lines()
            .any(|l| l == "drained:      yes")
    );

    let out = lab.lb_ok(2, &["host", "resume"]);
    assert!(out.lines().any(|l| l == "drained:    no"), "{out}");
    wait_both(&lab, &[1, 2, 3], "h2 resumed");
    assert!(!lab.host(2).drain_file.exists());
    assert_eq!(lab.metric(2, "lb_bgp_host_drained"), Some(0.0));
}

/// Only an orderly withdrawal withdraws: a daemon killed (SIGKILL) or
/// stopped (SIGTERM) and started again leaves the router's routes as they
/// were (not even a withdraw-and-back), `lb down` takes that host's path
/// away, and so does detaching its XDP program while the daemon runs.
#[test]
fn only_down_or_a_detached_program_withdraws_a_host() {
    let mut lab = ScaleOut::new("bgpdown", 3);
    wait_both(&lab, &[1, 2, 3], "three hosts up");
    // Let the sessions and the daemons' first looks settle.
    lab.hold_paths(lab.mark(), &[1, 2, 3], Duration::from_secs(3), "settled");

    let mark = lab.mark();
    let out = lab.take_daemon(1).kill();
    lab.hold_paths(mark, &[1, 2, 3], HOLD, "h1's daemon killed");
    lab.start_daemon(1);
    lab.hold_paths(mark, &[1, 2, 3], HOLD, "h1's daemon killed and restarted");
    assert!(
        !out.contains("withdrawn"),
        "the killed daemon withdrew something:\n{out}"
    );

    let mark = lab.mark();
    let out = lab.take_daemon(3).stop();
    lab.hold_paths(mark, &[1, 2, 3], HOLD, "h3's daemon stopped (SIGTERM)");
    assert!(!out.contains("withdrawn"), "{out}");
    let down = proc::lb_down(&lab.lb, lab.host(3).ns.name(), &lab.host(3).config);
    let owner = format!("(table {LB_TABLE} proto {LB_PROTOCOL})");
    for vip in [VIP4.to_string(), VIP6.to_string()] {
        assert!(
            down.lines().any(|l| l == format!("withdrew {vip} {owner}")),
            "lb down printed:\n{down}"
        );
    }
    wait_both(&lab, &[1, 2], "lb down on h3");

    // The data path detached under a running daemon (here with bpftool;
    // an interface gone is the same): withdrawn at its next look.
    let link = lab
        .host(2)
        .pin_dir
        .join(format!("link_{}", lb_tests::topology::PEER_IF));
    netns_free_bpftool_detach(&link);
    wait_both(&lab, &[1], "h2's XDP program detached");
    let r = host_report(&lab, 2);
    assert_eq!(
        r["reason"],
        format!(
            "the XDP program is no longer attached to {}",
            lb_tests::topology::PEER_IF
        )
    );
}

/// `bpftool link detach pinned <pin>`: bpf links are not tied to a network
/// namespace, so this runs where the test runs.
fn netns_free_bpftool_detach(pin: &std::path::Path) {
    lb_tests::netns::run(
        "bpftool",
        [
            std::ffi::OsStr::new("link"),
            "detach".as_ref(),
            "pinned".as_ref(),
            pin.as_os_str(),
        ],
    );
}

/// `lb check` refuses what `lb run` would, with the key path: a reserved
/// table, BIRD's own protocol number, and announcing without XDP.
#[test]
fn lb_check_refuses_a_bgp_section_lb_run_would() {
    let dir = lb_tests::netns::TempDir::new(
        std::env::temp_dir().join(format!("{}-bgpcheck", lb_tests::netns::unique_id())),
    );
    let path = dir.path().join("lb.toml");
    let base = "[daemon]\ndataplane = \"userspace\"\n\n[[listener]]\nname = \"web\"\nprotocol = \"tcp\"\naddress = \"10.0.0.1\"\nport = 80\ntarget_group = \"web\"\n\n[[target_group]]\nname = \"web\"\nprotocol = \"tcp\"\nport = 8080\n";
    std::fs::write(
        &path,
        format!("{base}\n[bgp]\nenabled = true\ntable = 254\nprotocol = 12\n"),
    )
    .expect("write config");
    let out = std::process::Command::new(proc::lb_bin())
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run lb check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "lb check accepted it: {err}");
    for line in [
        "bgp.table: 254 is reserved (0 unspec, 253 default, 254 main, 255 local); pick a table of its own",
        "bgp.protocol: 12 is reserved (0-4: the kernel's, 12: BIRD's own); pick one of 5..=255 but 12",
        "bgp.enabled: a host announces the VIPs its XDP path serves; daemon.dataplane = \"userspace\" has none",
    ] {
        assert!(err.contains(line), "lb check printed:\n{err}");
    }
}
