//! The control loop driven as the daemon drives it (commands, health
//! verdicts), without a kernel: no XDP path, userspace listeners on no
//! socket, the decision read where every data path reads it (the routable
//! view).
use std::{net::SocketAddr, sync::Arc};

use tokio::{
    sync::{oneshot, watch},
    time::Duration,
};

use super::*;
use crate::{
    announce::{AnnounceMetrics, Announcer, KernelRouting},
    config::testing::{DAEMON, targets},
    control::command::TargetSpec,
    http::HttpMetrics,
    l4::L4Metrics,
    routable::{self, RoutableWatch},
    workers::Workers,
};

/// A tcp group of three targets ramping over 30 s, used by no listener
/// (so nothing binds); checks on but slow (the test gives the verdicts).
fn config() -> Config {
    let text = format!(
        "{DAEMON}\n[[target_group]]\nname = \"web\"\nprotocol = \"tcp\"\nport = 8080\nslow_start = 30\nhealth_check = {{ interval = 300, timeout = 120 }}\n{}",
        targets(&["10.1.0.1", "10.1.0.2", "10.1.0.3"])
    );
    let c = Config::parse(&text).expect("parse");
    c.validate().expect("valid");
    c
}

fn ep(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 1, 0, i], 8080))
}

/// A controller over `config`, and the routable view it publishes.
fn controller(config: Config) -> (Controller, RoutableWatch) {
    let metrics = Arc::new(Metrics::new());
    let mut lifecycle = Lifecycle::new();
    lifecycle.sync(&config, Instant::now());
    let (_, first) = Controller::initial_plan(&config, &lifecycle);
    let (routable, view) = routable::channel(first);
    let userspace = Listeners::new(
        view.clone(),
        metrics.register(L4Metrics::register),
        metrics.register(HttpMetrics::register),
        Workers::start(1).expect("workers"),
    );
    let (checker, _events) = Checker::new(metrics.health()).expect("checker");
    // No [bgp] section: the announcer announces nothing.
    let announcer = Announcer::new(
        KernelRouting::open().expect("netlink socket"),
        metrics.register(AnnounceMetrics::register),
    );
    let parts = Parts {
        xdp: None,
        userspace,
        routable,
        checker,
        probes: crate::probe_path::Probes::new("/nonexistent/pins".into()),
        metrics,
        announcer,
    };
    let c = Controller::new("/nonexistent/lb.toml".into(), config, lifecycle, parts);
    (c, view)
}

/// The weight each target of `web` gets new work with (0: none).
fn weights(view: &watch::Receiver<Arc<Routable>>) -> Vec<(SocketAddr, u32)> {
    let r = view.borrow();
    (1..=3)
        .map(|i| {
            let w = r
                .targets("web")
                .iter()
                .find(|t| t.endpoint == ep(i))
                .map_or(0, |t| t.weight);
            (ep(i), w)
        })
        .collect()
}

async fn ask<T>(c: &mut Controller, cmd: impl FnOnce(oneshot::Sender<T>) -> Command) -> T {
    let (tx, rx) = oneshot::channel();
    c.handle(cmd(tx)).await;
    rx.await.expect("answered")
}

/// Issue 14, item 12, through the control loop: deregister a target, and
/// register it again while it drains; it must not get its full share back
/// at once, but wait for its check and ramp like a new registration.
#[tokio::test]
async fn a_target_registered_again_while_draining_ramps_through_slow_start() {
    let (mut c, view) = controller(config());
    for i in 1..=3 {
        c.on_health("web", ep(i), TargetHealth::Healthy);
    }
    assert_eq!(weights(&view), [(ep(1), 100), (ep(2), 100), (ep(3), 100)]);

    let out = ask(&mut c, |reply| Command::Deregister {
        group: "web".into(),
        targets: vec![ep(3)],
        reply,
    })
    .await;
    out.expect("deregistered");
    assert_eq!(weights(&view)[2], (ep(3), 0), "draining: no new flows");
    assert!(
        view.borrow()
            .keeps_flows("web")
            .expect("kept")
            .contains(&ep(3)),
        "draining: its flows stay"
    );

    let spec = TargetSpec {
        address: ep(3).ip(),
        port: None,
        weight: None,
        zone: None,
    };
    ask(&mut c, |reply| Command::Register {
        group: "web".into(),
        targets: vec![spec],
        reply,
    })
    .await
    .expect("registered again");
    assert_eq!(
        weights(&view)[2],
        (ep(3), 0),
        "registered again: no new flows before its first good check"
    );
    assert!(
        view.borrow()
            .keeps_flows("web")
            .expect("kept")
            .contains(&ep(3))
    );

    // Its first good check (what the checker's new job reports).
    c.on_health("web", ep(3), TargetHealth::Healthy);
    let (_, w) = weights(&view)[2];
    // 1% at once; a loaded machine may take a second or two to get here.
    assert!((1..=10).contains(&w), "not ramping: weight {w} of 100");
    assert_eq!(weights(&view)[..2], [(ep(1), 100), (ep(2), 100)]);
    let wake = c.next_wakeup().expect("a ramp step is due");
    assert!(wake <= Instant::now() + Duration::from_secs(1), "{wake:?}");
}

/// A reload that changes a `[daemon]` key settled at start is refused,
/// naming it; one that changes only what a reload can apply (the zone)
/// passes.
#[test]
fn daemon_keys_that_need_a_restart_are_named() {
    use crate::config::{Dataplane, ReplyInterfaceCheck, XdpMode};
    let old = config();
    let changed = |f: &dyn Fn(&mut Config)| {
        let mut new = old.clone();
        f(&mut new);
        daemon_change(&old, &new)
    };
    assert_eq!(changed(&|_| {}), None);
    assert_eq!(changed(&|c| c.daemon.zone = Some("a".into())), None);
    assert_eq!(
        changed(&|c| c.daemon.dataplane = Dataplane::Userspace),
        Some("dataplane")
    );
    assert_eq!(
        changed(&|c| c.daemon.xdp_mode = XdpMode::Generic),
        Some("xdp_mode")
    );
    assert_eq!(
        changed(&|c| c.daemon.flow_capacity *= 2),
        Some("flow_capacity")
    );
    assert_eq!(
        changed(&|c| c.daemon.worker_threads += 1),
        Some("worker_threads")
    );
    assert_eq!(
        changed(&|c| c.daemon.reply_interface_check = ReplyInterfaceCheck::Off),
        Some("reply_interface_check")
    );
}
