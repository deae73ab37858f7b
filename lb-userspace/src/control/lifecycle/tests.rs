use super::*;
use crate::config::testing::{DAEMON, WEB};

struct On;
impl Checks for On {
    fn enabled(&self, _: &TargetGroup) -> bool {
        true
    }
}

fn config(extra_group: &str, targets: &str) -> Config {
    let extra_group = if extra_group.contains("deregistration_delay") {
        extra_group.to_string()
    } else {
        format!("deregistration_delay = 30\n{extra_group}")
    };
    let text = format!("{DAEMON}zone = \"a\"\n{WEB}{extra_group}\n{targets}\n");
    let c = Config::parse(&text).unwrap();
    c.validate().unwrap();
    c
}

const THREE: &str = r#"
  [[target_group.target]]
  address = "10.1.0.1"
  [[target_group.target]]
  address = "10.1.0.2"
  [[target_group.target]]
  address = "10.1.0.3"
"#;

fn ep(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 1, 0, i], 8080))
}

fn down(reason: &str) -> TargetHealth {
    TargetHealth::Unhealthy {
        reason: reason.into(),
        description: "test".into(),
    }
}

/// (endpoint last octet, state, weight) of the web group's plan.
fn web_plan(l: &Lifecycle, c: &Config, now: Instant) -> Vec<(u8, TargetState, u32)> {
    let (plan, routable) = l.plan(c, &On, now);
    let rows: Vec<_> = plan["web"]
        .iter()
        .map(|p| match p.endpoint.ip() {
            std::net::IpAddr::V4(v4) => (v4.octets()[3], p.state, p.weight),
            _ => unreachable!(),
        })
        .collect();
    // The userspace view is the same decision.
    let in_tables: Vec<_> = plan["web"]
        .iter()
        .filter(|p| p.weight > 0)
        .map(|p| (p.endpoint, p.weight))
        .collect();
    let userspace: Vec<_> = routable
        .targets("web")
        .iter()
        .map(|t| (t.endpoint, t.weight))
        .collect();
    assert_eq!(in_tables, userspace);
    // Established flows stay on every target the kernel does not mark Down.
    let kept: Vec<_> = plan["web"]
        .iter()
        .filter(|p| p.state != TargetState::Down)
        .map(|p| p.endpoint)
        .collect();
    let keep_flows: Vec<_> = routable
        .keeps_flows("web")
        .map(|k| k.iter().copied().collect())
        .unwrap_or_default();
    assert_eq!(kept, keep_flows);
    rows
}

fn started(c: &Config) -> (Lifecycle, Instant) {
    let mut l = Lifecycle::new();
    let now = Instant::now();
    assert!(l.sync(c, now).is_empty());
    (l, now)
}

#[test]
fn initial_targets_at_start_take_flows_late_ones_wait_for_a_check() {
    let c = config("", THREE);
    let (mut l, now) = started(&c);
    use TargetState::*;
    assert_eq!(
        web_plan(&l, &c, now),
        [(1, Active, 100), (2, Active, 100), (3, Active, 100)]
    );
    // A daemon (re)start moves no traffic: the others stay in while initial.
    l.set_health("web", ep(1), TargetHealth::Healthy, now);
    assert_eq!(
        web_plan(&l, &c, now),
        [(1, Active, 100), (2, Active, 100), (3, Active, 100)]
    );
    // A target registered later gets nothing until its first good check.
    let four = config(
        "",
        &format!("{THREE}  [[target_group.target]]\n  address = \"10.1.0.4\"\n"),
    );
    l.sync(&four, now);
    assert_eq!(web_plan(&l, &four, now)[3], (4, Active, 0));
    l.set_health("web", ep(4), TargetHealth::Healthy, now);
    assert_eq!(web_plan(&l, &four, now)[3], (4, Active, 100));
}

#[test]
fn unhealthy_targets_lose_their_flows_or_keep_them_per_attribute() {
    use TargetState::*;
    for (attr, state) in [
        ("", Down),
        ("unhealthy_connection_termination = false", Draining),
    ] {
        let c = config(attr, THREE);
        let (mut l, now) = started(&c);
        l.set_health("web", ep(1), TargetHealth::Healthy, now);
        l.set_health("web", ep(2), TargetHealth::Healthy, now);
        l.set_health("web", ep(3), down("Target.Timeout"), now);
        assert_eq!(
            web_plan(&l, &c, now),
            [(1, Active, 100), (2, Active, 100), (3, state, 0)]
        );
        let r = l.reports(&c, &c.target_groups[0], &On, now);
        assert_eq!(r[2].state, TargetHealthState::Unhealthy);
        assert_eq!(r[2].reason.as_deref(), Some("Target.Timeout"));
        assert_eq!(l.counts("web"), (2, 1, 0));
    }
}

#[test]
fn every_target_unhealthy_fails_open() {
    use TargetState::*;
    let c = config("", THREE);
    let (mut l, now) = started(&c);
    for i in 1..=3 {
        l.set_health("web", ep(i), down("Target.FailedHealthChecks"), now);
    }
    assert_eq!(
        web_plan(&l, &c, now),
        [(1, Active, 100), (2, Active, 100), (3, Active, 100)]
    );
}

#[test]
fn deregistered_targets_drain_then_go() {
    use TargetState::*;
    let c = config("", THREE);
    let (mut l, now) = started(&c);
    for i in 1..=3 {
        l.set_health("web", ep(i), TargetHealth::Healthy, now);
    }
    let two = config(
        "",
        "  [[target_group.target]]\n  address = \"10.1.0.1\"\n  [[target_group.target]]\n  address = \"10.1.0.2\"\n",
    );
    assert!(l.sync(&two, now).is_empty());
    assert_eq!(
        web_plan(&l, &two, now),
        [(1, Active, 100), (2, Active, 100), (3, Draining, 0)]
    );
    let r = l.reports(&two, &two.target_groups[0], &On, now);
    assert_eq!(r[2].state, TargetHealthState::Draining);
    assert_eq!(
        l.next_change(&two, now),
        Some(now + Duration::from_secs(30))
    );
    assert!(l.expire(now + Duration::from_secs(29)).is_empty());
    assert_eq!(
        l.expire(now + Duration::from_secs(30)),
        vec![("web".to_string(), ep(3))]
    );
    assert_eq!(
        web_plan(&l, &two, now),
        [(1, Active, 100), (2, Active, 100)]
    );
}

#[test]
fn registering_a_draining_target_again_ends_its_drain() {
    let c = config("", THREE);
    let (mut l, now) = started(&c);
    let two = config("", "  [[target_group.target]]\n  address = \"10.1.0.1\"\n");
    l.sync(&two, now);
    assert!(l.next_change(&two, now).is_some());
    assert!(l.sync(&c, now).is_empty());
    assert_eq!(l.next_change(&c, now), None);
}

/// Issue 14, item 12: a target registered again while it drains is a new
/// registration: it keeps its flows, waits for its first good check like
/// any late registration, then ramps through slow start (it went straight
/// back to its full share).
#[test]
fn a_target_registered_again_while_draining_ramps_like_a_new_one() {
    use TargetState::*;
    let c = config("slow_start = 10", THREE);
    let (mut l, now) = started(&c);
    for i in 1..=3 {
        l.set_health("web", ep(i), TargetHealth::Healthy, now);
    }
    let two = config(
        "slow_start = 10",
        "  [[target_group.target]]\n  address = \"10.1.0.1\"\n  [[target_group.target]]\n  address = \"10.1.0.2\"\n",
    );
    l.sync(&two, now);
    assert_eq!(web_plan(&l, &two, now)[2], (3, Draining, 0));
    let back = now + Duration::from_secs(5);
    assert!(l.sync(&c, back).is_empty());
    // Its flows stay; no new ones before its first good check.
    assert_eq!(web_plan(&l, &c, back)[2], (3, Active, 0));
    let r = l.reports(&c, &c.target_groups[0], &On, back);
    assert_eq!(r[2].state, TargetHealthState::Initial);
    l.set_health("web", ep(3), TargetHealth::Healthy, back);
    let weight_of_3 = |t: Instant| web_plan(&l, &c, t)[2].2;
    assert_eq!(weight_of_3(back), 1);
    assert_eq!(weight_of_3(back + Duration::from_secs(5)), 50);
    assert_eq!(weight_of_3(back + Duration::from_secs(10)), 100);
    assert_eq!(l.next_change(&c, back), Some(back + Duration::from_secs(1)));
    // The others were never touched.
    assert_eq!(
        web_plan(&l, &c, back)[..2],
        [(1, Active, 100), (2, Active, 100)]
    );
}

#[test]
fn zero_delay_removes_at_once() {
    let c = config("deregistration_delay = 0", THREE);
    let (mut l, now) = started(&c);
    let one = config(
        "deregistration_delay = 0",
        "  [[target_group.target]]\n  address = \"10.1.0.1\"\n",
    );
    assert_eq!(
        l.sync(&one, now),
        vec![("web".to_string(), ep(2)), ("web".to_string(), ep(3))]
    );
}

const ZONED: &str = r#"
  [[target_group.target]]
  address = "10.1.0.1"
  zone = "a"
  [[target_group.target]]
  address = "10.1.0.2"
  zone = "b"
  [[target_group.target]]
  address = "10.1.0.3"
  zone = "b"
"#;

#[test]
fn without_cross_zone_the_hosts_zone_is_preferred_then_failed_over() {
    use TargetState::*;
    let c = config("", ZONED);
    let (mut l, now) = started(&c);
    for i in 1..=3 {
        l.set_health("web", ep(i), TargetHealth::Healthy, now);
    }
    assert_eq!(
        web_plan(&l, &c, now),
        [(1, Active, 100), (2, Active, 0), (3, Active, 0)]
    );
    l.set_health("web", ep(1), down("Target.Timeout"), now);
    assert_eq!(
        web_plan(&l, &c, now),
        [(1, Down, 0), (2, Active, 100), (3, Active, 100)]
    );
    let cross = config("cross_zone = true", ZONED);
    l.set_health("web", ep(1), TargetHealth::Healthy, now);
    assert_eq!(
        web_plan(&l, &cross, now),
        [(1, Active, 100), (2, Active, 100), (3, Active, 100)]
    );
}

#[test]
fn slow_start_ramps_late_and_recovering_targets() {
    let c = config("slow_start = 10", THREE);
    let (mut l, now) = started(&c);
    for i in 1..=3 {
        l.set_health("web", ep(i), TargetHealth::Healthy, now);
    }
    // Targets there at start do not ramp.
    assert_eq!(l.next_change(&c, now), None);
    let weight_of_3 = |l: &Lifecycle, t: Instant| web_plan(l, &c, t)[2].2;
    l.set_health("web", ep(3), down("Target.Timeout"), now);
    l.set_health("web", ep(3), TargetHealth::Healthy, now);
    assert_eq!(weight_of_3(&l, now), 1);
    assert_eq!(weight_of_3(&l, now + Duration::from_millis(2500)), 25);
    assert_eq!(weight_of_3(&l, now + Duration::from_secs(5)), 50);
    assert_eq!(weight_of_3(&l, now + Duration::from_secs(10)), 100);
    assert_eq!(l.next_change(&c, now), Some(now + Duration::from_secs(1)));
    // Asking again later in the same second (after any event) gives the
    // same step: events must not keep pushing it back.
    let later = now + Duration::from_millis(700);
    assert_eq!(l.next_change(&c, later), Some(now + Duration::from_secs(1)));
    let later = now + Duration::from_millis(4300);
    assert_eq!(l.next_change(&c, later), Some(now + Duration::from_secs(5)));
    assert_eq!(l.next_change(&c, now + Duration::from_secs(10)), None);
    // A late registration ramps from its first healthy verdict.
    let four = config(
        "slow_start = 10",
        &format!("{THREE}  [[target_group.target]]\n  address = \"10.1.0.4\"\n  weight = 2\n"),
    );
    l.sync(&four, now);
    l.set_health("web", ep(4), TargetHealth::Healthy, now);
    assert_eq!(web_plan(&l, &four, now + Duration::from_secs(5))[3].2, 100);
}
