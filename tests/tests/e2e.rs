//! End-to-end tests: real TCP and UDP traffic from a client namespace through
//! `lb run` (XDP, NAT mode) to target namespaces and back.
//!
//! Needs root and `LB_BIN` (set by `cargo xtask test`); panics otherwise,
//! never skips. Each test builds its own topology (unique namespace names, its
//! own bpffs), so the tests run in parallel. `LB_TEST_VERBOSE=1` echoes the
//! output of `lb run` and the servers live.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use lb_tests::client::EchoConn;
use lb_tests::lab::{
    Lab, Pinger, SPREAD_FLOWS, assert_distinct_ports, assert_spread, target_index, vip4, vip6,
};
use lb_tests::netns;
use lb_tests::proc;
use lb_tests::topology::{
    CLIENT4, CLIENT6, ConfigSpec, LB_CLIENT_IF, ListenerSpec, TARGET_TCP_PORT, VIP_TCP_PORT,
    VIP_UDP_PORT, target4,
};

fn spread(name: &str, proto: &str, vip: SocketAddr, client: IpAddr) {
    let lab = Lab::new(name, 3, &[1, 2, 3]);
    let flows = lab.flows(proto, vip, SPREAD_FLOWS);
    assert_distinct_ports(&flows);
    assert_spread(&flows, &[1, 2, 3], client);
    assert_stats(&lab, &format!("{vip}/{proto}"), flows.len());
}

/// `lb stats` (read from the pins) counts every new flow for the VIP and
/// reports no drops.
fn assert_stats(lab: &Lab, vip: &str, new_flows: usize) {
    let stats = proc::lb_stats(&lab.lb, lab.topo.lb.name(), &lab.config);
    let row = stats
        .lines()
        .find(|l| l.trim_start().starts_with(vip))
        .unwrap_or_else(|| panic!("no row for {vip} in lb stats:\n{stats}"));
    let last: usize = row
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable row {row:?}"));
    assert_eq!(last, new_flows, "new_flows of {vip} in lb stats:\n{stats}");
    for line in stats
        .lines()
        .filter(|l| l.trim_start().starts_with("drop_"))
    {
        let n: u64 = line
            .split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        assert_eq!(n, 0, "lb stats reports drops: {line}\n{stats}");
    }
    assert!(
        stats.contains("flows: "),
        "lb stats has no flow count:\n{stats}"
    );
}

#[test]
fn tcp4_connections_spread_over_targets() {
    spread("tcp4", "tcp", vip4(VIP_TCP_PORT), CLIENT4.into());
}

#[test]
fn udp4_flows_spread_over_targets() {
    spread("udp4", "udp", vip4(VIP_UDP_PORT), CLIENT4.into());
}

#[test]
fn tcp6_connections_spread_over_targets() {
    spread("tcp6", "tcp", vip6(VIP_TCP_PORT), CLIENT6.into());
}

#[test]
fn udp6_flows_spread_over_targets() {
    spread("udp6", "udp", vip6(VIP_UDP_PORT), CLIENT6.into());
}

/// How a config change reaches the daemon.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Apply {
    /// SIGTERM `lb run`, rewrite the config, start `lb run` again.
    Restart,
    /// Rewrite the config, SIGHUP `lb run` (hot reload).
    Sighup,
}

/// Targets are added and removed by config while a connection keeps echoing
/// on its target; new flows follow the new target set.
fn targets_change(name: &str, apply: Apply) {
    let mut lab = Lab::new(name, 4, &[1, 2, 3]);
    let conn = lab.connect(vip4(VIP_TCP_PORT));
    let pinned = target_index(&conn.target);
    assert_eq!(
        conn.seen, conn.local,
        "target saw a translated client address"
    );
    let mut pinger = Pinger::start(conn);
    pinger.expect_progress(5, "before the change");

    let removed = [1, 2, 3]
        .into_iter()
        .find(|&i| i != pinned)
        .expect("another target");
    let new_set: Vec<usize> = [1, 2, 3, 4].into_iter().filter(|&i| i != removed).collect();

    match apply {
        Apply::Restart => {
            lab.stop_daemon();
            pinger.expect_progress(5, "while lb run was stopped");
            lab.reconfigure(&new_set);
            lab.start_daemon();
            pinger.expect_progress(5, "after lb run restarted with the new targets");
        }
        Apply::Sighup => {
            lab.reconfigure(&new_set);
            lab.daemon.as_mut().expect("daemon running").reload();
            pinger.expect_progress(5, "after the SIGHUP reload");
        }
    }

    // A target registered by the change gets new flows once its first
    // health check passed (ELB's `initial`); the removed one drains.
    lab.wait_health("tcp4", Duration::from_secs(15), "new set healthy", |h| {
        new_set.iter().all(|&i| {
            h.iter().any(|t| {
                t.target == SocketAddr::new(target4(i).into(), TARGET_TCP_PORT)
                    && t.state == "healthy"
            })
        })
    });
    // New flows follow the new target set.
    let flows = lab.flows("tcp", vip4(VIP_TCP_PORT), SPREAD_FLOWS);
    pinger.expect_progress(5, "while new connections were made");
    assert_spread(&flows, &new_set, CLIENT4.into());

    let mut conn = pinger.finish();
    conn.echo("last")
        .unwrap_or_else(|e| panic!("final echo: {e:#}"));
    assert_eq!(target_index(&conn.target), pinned);
}

/// (d) Targets changed across a daemon restart (stop, edit, start).
#[test]
fn connection_stays_on_target_while_targets_change() {
    targets_change("reconf", Apply::Restart);
}

/// (d) The same through a SIGHUP hot reload.
#[test]
fn connection_stays_on_target_across_sighup_reload() {
    targets_change("reload", Apply::Sighup);
}

/// (e) A connection keeps working before, during (daemon stopped, XDP still
/// attached) and after a restart of `lb run`; new flows work after it.
#[test]
fn connection_survives_daemon_restart() {
    let mut lab = Lab::new("restart", 3, &[1, 2, 3]);
    let tcp = lab.connect(vip4(VIP_TCP_PORT));
    let tcp6 = lab.connect(vip6(VIP_TCP_PORT));
    let mut pingers = [Pinger::start(tcp), Pinger::start(tcp6)];
    for p in &mut pingers {
        p.expect_progress(5, "before the restart");
    }
    lab.stop_daemon();
    for p in &mut pingers {
        p.expect_progress(20, "while lb run was stopped");
    }
    lab.start_daemon();
    for p in &mut pingers {
        p.expect_progress(20, "after lb run restarted");
    }
    for p in pingers {
        let mut conn = p.finish();
        conn.echo("last")
            .unwrap_or_else(|e| panic!("final echo: {e:#}"));
    }
    let flows = lab.flows("tcp", vip4(VIP_TCP_PORT), 30);
    assert_eq!(flows.len(), 30);
    let flows = lab.flows("udp", vip6(VIP_UDP_PORT), 30);
    assert_eq!(flows.len(), 30);
}

/// `lb run` over a table pinned by an older data path (a `FLOW_TAGS` pin,
/// or `FLOWS` without its `FLOW_META`) is refused with the way out (`lb
/// down`), changes nothing, and the program already attached keeps
/// forwarding; once the pins are right again it starts.
#[test]
fn a_table_pinned_by_an_older_lb_is_refused_and_traffic_continues() {
    let mut lab = Lab::new("legacy", 3, &[1, 2, 3]);
    let mut pinger = Pinger::start(lab.connect(vip4(VIP_TCP_PORT)));
    pinger.expect_progress(5, "before the stop");
    lab.stop_daemon();
    let pin_dir = lab.topo.pin_dir();
    let tags = pin_dir.join("FLOW_TAGS");
    let meta = pin_dir.join("FLOW_META");
    let meta_aside = pin_dir.join("FLOW_META_aside");
    let refused = |lab: &Lab, name: &str| {
        // Under `timeout`: an `lb run` that wrongly starts fails the test
        // (status 124) instead of hanging it.
        let out = netns::try_run(
            "timeout",
            [
                "60".as_ref(),
                "ip".as_ref(),
                "netns".as_ref(),
                "exec".as_ref(),
                lab.topo.lb.name().as_ref(),
                lab.lb.as_os_str(),
                "run".as_ref(),
                "--config".as_ref(),
                lab.config.as_os_str(),
            ] as [&std::ffi::OsStr; 9],
        )
        .expect("run timeout ip netns exec lb run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let want = format!("pinned map {name} belongs to an older version of lb");
        assert!(
            !out.status.success() && stderr.contains(&want) && stderr.contains("lb down"),
            "`lb run` over an older {name} must be refused naming it and `lb down`; got {}:\n{stderr}",
            out.status
        );
        assert!(
            has_xdp(&lab.topo.lb_link(LB_CLIENT_IF)),
            "a refused `lb run` detached the program"
        );
    };
    create_map(&tags, "array", 16, 1, "FLOW_TAGS");
    refused(&lab, "FLOW_TAGS");
    pinger.expect_progress(10, "after lb run refused FLOW_TAGS");
    std::fs::remove_file(&tags).expect("unpin FLOW_TAGS");
    std::fs::rename(&meta, &meta_aside).expect("move FLOW_META aside");
    refused(&lab, "FLOWS");
    pinger.expect_progress(10, "after lb run refused FLOWS without FLOW_META");
    std::fs::rename(&meta_aside, &meta).expect("put FLOW_META back");
    lab.start_daemon();
    pinger.expect_progress(10, "after lb run started");
    pinger
        .finish()
        .echo("last")
        .unwrap_or_else(|e| panic!("final echo: {e:#}"));
}

/// `lb run` over verdict counters (`STATS`) pinned by a version with fewer
/// verdicts makes them anew (they restart at zero) instead of keeping a
/// map the new verdicts do not fit in, which `lb stats` could not read;
/// the program already attached keeps forwarding meanwhile.
#[test]
fn verdict_counters_of_an_older_lb_are_made_anew() {
    let mut lab = Lab::new("oldstats", 3, &[1, 2, 3]);
    let mut pinger = Pinger::start(lab.connect(vip4(VIP_TCP_PORT)));
    pinger.expect_progress(5, "before the stop");
    lab.stop_daemon();
    let stats = lab.topo.pin_dir().join("STATS");
    std::fs::remove_file(&stats).expect("unpin STATS");
    create_map(
        &stats,
        "percpu_array",
        8,
        lb_common::counters::STAT_COUNT - 1,
        "STATS",
    );
    lab.start_daemon();
    pinger.expect_progress(10, "after lb run started over the older STATS");
    let show = netns::run(
        "bpftool",
        ["-j", "map", "show", "pinned", stats.to_str().unwrap()],
    );
    let map: serde_json::Value = serde_json::from_slice(&show.stdout).expect("bpftool map show -j");
    assert_eq!(
        map["max_entries"],
        lb_common::counters::STAT_COUNT,
        "the pinned STATS must have a slot for every verdict: {map}"
    );
    let out = proc::lb_stats(&lab.lb, lab.topo.lb.name(), &lab.config);
    let last = lb_common::Stat::ALL[lb_common::Stat::ALL.len() - 1].name();
    assert!(
        out.lines().any(|l| l.trim().starts_with(last)),
        "lb stats must read every verdict, {last} too:\n{out}"
    );
    pinger
        .finish()
        .echo("last")
        .unwrap_or_else(|e| panic!("final echo: {e:#}"));
}

/// Pins at `path` a new map of `kind` with 4-byte keys, as an older `lb`
/// might have left it (`bpftool map create`).
fn create_map(path: &Path, kind: &str, value_size: u32, entries: u32, name: &str) {
    let (value, entries) = (value_size.to_string(), entries.to_string());
    netns::run(
        "bpftool",
        [
            "map",
            "create",
            path.to_str().expect("UTF-8 pin path"),
            "type",
            kind,
            "key",
            "4",
            "value",
            &value,
            "entries",
            &entries,
            "name",
            name,
        ],
    );
}

fn has_xdp(link: &str) -> bool {
    link.contains("xdp")
}

/// Every file and directory under `dir` (none if it does not exist), except
/// the `*.debug` iterator files the kernel puts at a bpffs root.
fn pins(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "debug") {
                continue;
            }
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.display().to_string());
        }
    }
    out.sort();
    out
}

/// (f) `lb down` detaches the program from every interface and removes the
/// pins; the VIP stops answering.
#[test]
fn lb_down_detaches_and_unpins() {
    let mut lab = Lab::new("down", 3, &[1, 2, 3]);
    lab.flows("tcp", vip4(VIP_TCP_PORT), 10);
    let ifaces = lab.topo.lb_interfaces();
    for dev in &ifaces {
        let link = lab.topo.lb_link(dev);
        assert!(
            has_xdp(&link),
            "no XDP program on {dev} while lb runs:\n{link}"
        );
    }
    let pin_dir = lab.topo.pin_dir();
    assert!(
        !pins(&pin_dir).is_empty(),
        "nothing pinned in {}",
        pin_dir.display()
    );

    // While `lb run` serves the pins, a second daemon and `lb down` are
    // refused, and nothing changes.
    let config = lab.config.as_os_str();
    for cmd in ["run", "down"] {
        let out = proc::lb_cmd(
            &lab.lb,
            lab.topo.lb.name(),
            &[cmd.as_ref(), "--config".as_ref(), config],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("another `lb run` is serving pin_dir"),
            "`lb {cmd}` beside a running daemon must be refused; got {}:\n{stderr}",
            out.status
        );
    }
    assert!(
        has_xdp(&lab.topo.lb_link(LB_CLIENT_IF)),
        "a refused command detached the program"
    );
    lab.flows("tcp", vip4(VIP_TCP_PORT), 10);

    lab.stop_daemon();
    let link = lab.topo.lb_link(LB_CLIENT_IF);
    assert!(
        has_xdp(&link),
        "SIGTERM must leave the program attached, but {LB_CLIENT_IF} has none:\n{link}"
    );
    proc::lb_down(&lab.lb, lab.topo.lb.name(), &lab.config);
    for dev in &ifaces {
        let link = lab.topo.lb_link(dev);
        assert!(
            !has_xdp(&link),
            "XDP still attached to {dev} after lb down:\n{link}"
        );
    }
    let left = pins(&pin_dir);
    assert!(
        left.is_empty(),
        "pins left in {} after lb down: {left:?}",
        pin_dir.display()
    );
    let vip = vip4(VIP_TCP_PORT);
    let reached = netns::in_netns(lab.topo.client.name(), move || {
        EchoConn::connect(vip, Duration::from_secs(1)).is_ok()
    });
    assert!(!reached, "{vip} still answers after lb down");
}

/// The config template renders what `lb`'s parser and validator accept
/// (needs no root: it catches schema drift early).
#[test]
fn rendered_config_is_valid() {
    let ifs = vec!["lb-c".to_owned(), "lb-t1".to_owned(), "lb-t2".to_owned()];
    let spec = ConfigSpec::standard(ifs, Path::new("/run/lbt-x/bpffs"), &[1, 2]);
    let text = spec.render();
    let config = lb::config::Config::parse(&text)
        .unwrap_or_else(|e| panic!("rendered config does not parse: {e}\n{text}"));
    if let Err(e) = config.validate() {
        panic!("rendered config is invalid: {e:?}\n{text}");
    }
    assert_eq!(config.listeners.len(), 4);
    assert_eq!(config.target_groups.len(), 4);
    assert!(config.target_groups.iter().all(|g| g.targets.len() == 2));
}

/// Removing a VIP by reload ends its established flows too (the data path
/// forwards established flows without looking the VIP up, so the daemon
/// purges them), while the other VIPs' connections keep working.
#[test]
fn removing_a_vip_ends_its_established_flows() {
    let mut lab = Lab::new("rmvip", 3, &[1, 2, 3]);
    let mut doomed = lab.connect(vip4(VIP_TCP_PORT));
    let mut kept = lab.connect(vip6(VIP_TCP_PORT));
    doomed.echo("before").expect("echo before the reload");
    kept.echo("before").expect("echo before the reload");

    // A second listener keeps the removed one's target group (and so its
    // targets) in use: only the purge can end the established flow.
    let mut spec = lab.topo.config_spec(&[1, 2, 3]);
    let is_tcp4 = |l: &ListenerSpec| l.address == vip4(VIP_TCP_PORT).ip() && l.protocol == "tcp";
    let mut alt = spec
        .listeners
        .iter()
        .find(|l| is_tcp4(l))
        .expect("an IPv4 TCP listener")
        .clone();
    alt.name = "tcp4-alt".into();
    alt.port = VIP_TCP_PORT + 1;
    spec.listeners.retain(|l| !is_tcp4(l));
    spec.listeners.push(alt);
    lab.topo.write_config(&spec);
    lab.daemon.as_mut().expect("daemon running").reload();

    let err = doomed.echo("after");
    assert!(
        err.is_err(),
        "the removed VIP's connection still reaches its target after the reload"
    );
    kept.echo("after")
        .unwrap_or_else(|e| panic!("a connection to a kept VIP broke: {e:#}"));
}

/// An invalid config sent by SIGHUP is refused with its errors and the
/// running config stays in force: established and new flows keep working.
#[test]
fn invalid_reload_is_refused_and_traffic_continues() {
    let mut lab = Lab::new("badreload", 3, &[1, 2, 3]);
    let mut conn = lab.connect(vip4(VIP_TCP_PORT));
    conn.echo("before").expect("echo before the reload");
    let good = std::fs::read_to_string(&lab.config).expect("read config");
    // A syntax-level error (unknown key), then a semantic one (a table size
    // that is not prime): each refused with its reason.
    for (bad, reason) in [
        (
            good.replacen("[daemon]", "[daemon]\nbogus = 1", 1),
            "unknown field `bogus`",
        ),
        (
            good.replacen("[daemon]", "[daemon]\nmaglev_table_size = 65536", 1),
            "daemon.maglev_table_size: 65536 is not prime",
        ),
    ] {
        std::fs::write(&lab.config, bad).expect("write bad config");
        let daemon = lab.daemon.as_mut().expect("daemon running");
        daemon.reload_refused();
        // The first log line says it was refused; the reason may follow on
        // the next lines (toml's excerpt).
        std::thread::sleep(Duration::from_millis(100));
        let out = daemon.output();
        assert!(out.contains(reason), "refusal without {reason:?}:\n{out}");
    }
    std::fs::write(&lab.config, &good).expect("restore config");
    conn.echo("after")
        .unwrap_or_else(|e| panic!("established flow broke after a refused reload: {e:#}"));
    let flows = lab.flows("tcp", vip4(VIP_TCP_PORT), SPREAD_FLOWS);
    assert_spread(&flows, &[1, 2, 3], CLIENT4.into());
}

/// Path-MTU discovery through the VIP: the links toward the targets carry
/// 1400-byte packets while the targets advertise an MSS for 1500, so the
/// client's full-size segments do not fit after translation. The data path
/// answers the client with ICMP "fragmentation needed" from the VIP quoting
/// the packet as sent; the client's kernel lowers its path MTU and the large
/// transfer completes. (An error from the kernel would quote the translated
/// packet, which the client cannot match: the transfer would stall.)
#[test]
fn path_mtu_discovery_through_the_vip() {
    let lab = Lab::new("pmtu", 3, &[1, 2, 3]);
    for dev in lab.topo.lb_interfaces() {
        if dev != LB_CLIENT_IF {
            let out = lab
                .topo
                .lb
                .exec(&["ip", "link", "set", &dev, "mtu", "1400"]);
            assert!(out.status.success(), "set mtu on {dev}: {out:?}");
        }
    }
    for (i, target) in lab.topo.targets.iter().enumerate() {
        let gw = format!("10.200.1{}.1", i + 1);
        for cmd in [
            vec!["ip", "link", "set", "eth0", "mtu", "1400"],
            vec![
                "ip", "route", "change", "default", "via", &gw, "advmss", "1460",
            ],
        ] {
            let out = target.exec(&cmd);
            assert!(out.status.success(), "{cmd:?} in target {}: {out:?}", i + 1);
        }
    }
    let mut conn = lab.connect(vip4(VIP_TCP_PORT));
    let big = "x".repeat(20_000);
    conn.echo(&big).unwrap_or_else(|e| {
        panic!(
            "20 kB through a narrower target link: {e:#}\n{}",
            lab.diagnostics()
        )
    });
    let stats = proc::lb_stats(&lab.lb, lab.topo.lb.name(), &lab.config);
    let sent: u64 = stats
        .lines()
        .find(|l| l.trim_start().starts_with("too_big_sent"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        sent > 0,
        "no ICMP fragmentation-needed was generated:\n{stats}"
    );
}
