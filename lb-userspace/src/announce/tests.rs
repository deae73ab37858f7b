//! The announcer against an in-memory kernel: what it writes, in which
//! order, and what it reports.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
};

use super::{
    AnnounceMetrics, Announcer, DrainFile, Owner, Routing, RoutingError, routing::kernel_metric,
};
use crate::config::Config;

/// One route operation, in the order made.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Add(Owner, IpAddr, u32),
    Delete(Owner, IpAddr, u32),
}

#[derive(Default)]
struct FakeKernel {
    routes: BTreeMap<(u32, u8, IpAddr, u32), ()>,
    detached: BTreeSet<String>,
    fail_add: bool,
    ops: Vec<Op>,
}

impl FakeKernel {
    fn holds(&self, owner: Owner) -> BTreeMap<IpAddr, u32> {
        self.routes
            .keys()
            .filter(|(t, p, _, _)| *t == owner.table && *p == owner.protocol)
            .map(|(_, _, v, m)| (*v, *m))
            .collect()
    }
}

impl Routing for FakeKernel {
    async fn list(&mut self, owner: Owner) -> Result<BTreeMap<IpAddr, u32>, RoutingError> {
        Ok(self.holds(owner))
    }
    async fn add(&mut self, owner: Owner, vip: IpAddr, metric: u32) -> Result<(), RoutingError> {
        if self.fail_add {
            return Err(RoutingError::Add {
                vip,
                owner,
                message: "Operation not permitted (os error 1)".into(),
            });
        }
        let metric = kernel_metric(vip, metric);
        self.ops.push(Op::Add(owner, vip, metric));
        self.routes
            .insert((owner.table, owner.protocol, vip, metric), ());
        Ok(())
    }
    async fn delete(&mut self, owner: Owner, vip: IpAddr, metric: u32) -> Result<(), RoutingError> {
        self.ops.push(Op::Delete(owner, vip, metric));
        self.routes
            .remove(&(owner.table, owner.protocol, vip, metric));
        Ok(())
    }
    async fn xdp_attached(&mut self, interface: &str) -> Result<bool, RoutingError> {
        Ok(!self.detached.contains(interface))
    }
}

const OURS: Owner = Owner {
    table: 100,
    protocol: 201,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A drain file path of this test's own.
fn drain_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "lb-announce-test-{}-{name}/drained",
        std::process::id()
    ))
}

/// Two tcp listeners and one udp listener on 10.0.0.1 (tcp, udp) and
/// fd00::1 (tcp), with `[bgp]` holding `bgp`.
fn config(bgp: &str, drain: &Path) -> Config {
    let text = format!(
        r#"
[daemon]
interfaces = ["eth0", "eth1"]

[[listener]]
name = "web"
protocol = "tcp"
address = "10.0.0.1"
port = 80
target_group = "web"

[[listener]]
name = "dns"
protocol = "udp"
address = "10.0.0.1"
port = 53
target_group = "dns"

[[listener]]
name = "web6"
protocol = "tcp"
address = "fd00::1"
port = 80
target_group = "web6"

[[target_group]]
name = "web"
protocol = "tcp"
port = 8080

[[target_group]]
name = "dns"
protocol = "udp"
port = 53

[[target_group]]
name = "web6"
protocol = "tcp"
port = 8080

[bgp]
drain_file = {:?}
{bgp}
"#,
        drain.display().to_string()
    );
    let c = crate::config::testing::parse(&text);
    c.validate().unwrap();
    c
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn announcer(kernel: FakeKernel) -> Announcer<FakeKernel> {
    Announcer::new(kernel, AnnounceMetrics::default())
}

#[test]
fn announces_each_address_of_the_xdp_listeners_once() {
    let drain = drain_path("each");
    let c = config("enabled = true\nmetric = 7", &drain);
    let mut a = announcer(FakeKernel::default());
    let out = block_on(a.sync(&c, true));
    assert_eq!(out.added, [ip("10.0.0.1"), ip("fd00::1")]);
    assert_eq!(out.errors, 0);
    assert_eq!(
        a.routing.holds(OURS),
        BTreeMap::from([(ip("10.0.0.1"), 7), (ip("fd00::1"), 7)])
    );
    let r = a.report(&c);
    assert_eq!(r.announced, [ip("10.0.0.1"), ip("fd00::1")]);
    assert!(r.withheld.is_empty());
    assert_eq!((r.reason, r.drained, r.bgp), (None, false, true));
    // Nothing changed: nothing written.
    let before = a.routing.ops.len();
    let out = block_on(a.sync(&c, true));
    assert_eq!((out.added.len(), out.withdrawn.len()), (0, 0));
    assert_eq!(a.routing.ops.len(), before);
}

#[test]
fn only_the_named_listeners_are_announced() {
    let drain = drain_path("named");
    let c = config("enabled = true\nlisteners = [\"web6\"]", &drain);
    let mut a = announcer(FakeKernel::default());
    block_on(a.sync(&c, true));
    assert_eq!(
        a.routing.holds(OURS),
        BTreeMap::from([(ip("fd00::1"), 1024)]),
        "IPv6 metric 0 is the kernel's 1024"
    );
    let out = block_on(a.sync(&c, true));
    assert!(out.added.is_empty(), "1024 is what metric 0 asked for");
}

#[test]
fn a_restarted_daemon_finds_its_routes_and_writes_nothing() {
    let drain = drain_path("restart");
    let c = config("enabled = true", &drain);
    let mut first = announcer(FakeKernel::default());
    block_on(first.sync(&c, true));
    let kernel = FakeKernel {
        routes: first.routing.routes.clone(),
        ..FakeKernel::default()
    };
    let mut second = announcer(kernel);
    let out = block_on(second.sync(&c, true));
    assert_eq!(out, super::SyncOutcome::default());
    assert!(second.routing.ops.is_empty(), "{:?}", second.routing.ops);
    assert_eq!(second.report(&c).announced.len(), 2);
}

#[test]
fn drain_withdraws_everything_and_survives_a_new_announcer() {
    let drain = drain_path("drain");
    let c = config("enabled = true", &drain);
    let mut a = announcer(FakeKernel::default());
    block_on(a.sync(&c, true));
    DrainFile::new(&drain).set().unwrap();
    let out = block_on(a.sync(&c, true));
    assert_eq!(out.withdrawn, [ip("10.0.0.1"), ip("fd00::1")]);
    assert!(a.routing.holds(OURS).is_empty());
    let r = a.report(&c);
    assert!(r.drained);
    assert_eq!(r.withheld, [ip("10.0.0.1"), ip("fd00::1")]);
    assert_eq!(
        r.reason.as_deref(),
        Some("the host is drained (`lb host resume` announces again)")
    );
    // A restarted daemon reads the file: still nothing announced.
    let mut again = announcer(FakeKernel::default());
    block_on(again.sync(&c, true));
    assert!(again.routing.ops.is_empty());
    DrainFile::new(&drain).clear().unwrap();
    let out = block_on(again.sync(&c, true));
    assert_eq!(out.added.len(), 2);
    std::fs::remove_dir_all(drain.parent().unwrap()).unwrap();
}

#[test]
fn without_a_data_path_nothing_is_announced() {
    let drain = drain_path("nodp");
    let c = config("enabled = true", &drain);
    let mut a = announcer(FakeKernel::default());
    block_on(a.sync(&c, false));
    assert!(a.routing.holds(OURS).is_empty());
    assert_eq!(a.report(&c).reason.as_deref(), Some("no XDP data path"));
    block_on(a.sync(&c, true));
    a.routing.detached.insert("eth1".into());
    let out = block_on(a.sync(&c, true));
    assert_eq!(
        out.withdrawn.len(),
        2,
        "one interface detached withdraws all"
    );
    assert_eq!(
        a.report(&c).reason.as_deref(),
        Some("the XDP program is no longer attached to eth1")
    );
}

#[test]
fn disabled_withdraws_what_an_earlier_run_left_and_nothing_else() {
    let drain = drain_path("disabled");
    let c = config("enabled = false", &drain);
    let other = Owner {
        table: 100,
        protocol: 202,
    };
    let mut kernel = FakeKernel::default();
    kernel.routes.insert((100, 201, ip("10.0.0.1"), 0), ());
    kernel.routes.insert((100, 202, ip("10.0.0.1"), 0), ());
    kernel.routes.insert((101, 201, ip("10.0.0.1"), 0), ());
    let mut a = announcer(kernel);
    let out = block_on(a.sync(&c, true));
    assert_eq!(out.withdrawn, [ip("10.0.0.1")]);
    assert_eq!(a.routing.ops, [Op::Delete(OURS, ip("10.0.0.1"), 0)]);
    assert_eq!(
        a.routing.holds(other).len(),
        1,
        "another protocol's route stays"
    );
    assert_eq!(a.report(&c).reason.as_deref(), Some("bgp.enabled is false"));
}

#[test]
fn a_moved_table_or_metric_is_made_before_broken() {
    let drain = drain_path("moved");
    let mut a = announcer(FakeKernel::default());
    block_on(a.sync(
        &config("enabled = true\nlisteners = [\"web\"]", &drain),
        true,
    ));
    a.routing.ops.clear();
    block_on(a.sync(
        &config("enabled = true\nlisteners = [\"web\"]\nmetric = 5", &drain),
        true,
    ));
    assert_eq!(
        a.routing.ops,
        [
            Op::Add(OURS, ip("10.0.0.1"), 5),
            Op::Delete(OURS, ip("10.0.0.1"), 0)
        ]
    );
    a.routing.ops.clear();
    let moved = Owner {
        table: 7,
        protocol: 201,
    };
    let out = block_on(a.sync(
        &config(
            "enabled = true\nlisteners = [\"web\"]\nmetric = 5\ntable = 7",
            &drain,
        ),
        true,
    ));
    assert_eq!(
        a.routing.ops,
        [
            Op::Add(moved, ip("10.0.0.1"), 5),
            Op::Delete(OURS, ip("10.0.0.1"), 5)
        ]
    );
    assert!(
        out.withdrawn.is_empty(),
        "still announced, from the new table"
    );
    assert!(a.routing.holds(OURS).is_empty());
}

#[test]
fn failures_are_reported_and_retried() {
    let drain = drain_path("fail");
    let c = config("enabled = true", &drain);
    let mut a = announcer(FakeKernel {
        fail_add: true,
        ..FakeKernel::default()
    });
    let out = block_on(a.sync(&c, true));
    assert_eq!(out.errors, 2);
    let r = a.report(&c);
    assert!(r.announced.is_empty());
    assert_eq!(
        r.last_error.as_deref(),
        Some(
            "adding the route of fd00::1 (table 100 proto 201): Operation not permitted (os error 1)"
        )
    );
    a.routing.fail_add = false;
    let out = block_on(a.sync(&c, true));
    assert_eq!((out.added.len(), out.errors), (2, 0));
    assert_eq!(a.report(&c).last_error, None);
}

#[test]
fn an_unreadable_drain_file_counts_as_drained() {
    let drain = drain_path("unreadable");
    let c = config("enabled = true", &drain);
    std::fs::create_dir_all(&drain).unwrap();
    let mut a = announcer(FakeKernel::default());
    block_on(a.sync(&c, true));
    assert!(a.routing.holds(OURS).is_empty());
    let r = a.report(&c);
    assert!(r.drained);
    assert!(
        r.reason
            .as_deref()
            .is_some_and(|s| s.starts_with("the drain state is unknown, taken as drained: ")),
        "{r:?}"
    );
    std::fs::remove_dir_all(drain.parent().unwrap()).unwrap();
}
