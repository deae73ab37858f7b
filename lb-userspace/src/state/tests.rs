use std::net::{IpAddr, SocketAddr};

use lb_common::{
    PROTO_TCP, PROTO_UDP, TargetState,
    limits::RING_EMPTY,
    maps::port_flags::{TARGET, VIP},
    vip::vip_flags::STICKY_SOURCE_IP,
};

use super::*;
use crate::config::{self, Config};

/// Small table: fast, and still prime.
const SIZE: u32 = 1009;

/// Two listeners on one address; targets 10.1.0.2/.3 serve both groups on
/// different ports, so there are 5 distinct targets.
fn base() -> Config {
    let c = Config::parse(
        r#"
[daemon]
interfaces = ["eth0"]
maglev_table_size = 1009
max_vips = 4

[[listener]]
name = "web"
protocol = "tcp"
address = "10.0.0.100"
port = 80
target_group = "web"

[[listener]]
name = "dns"
protocol = "udp"
address = "10.0.0.100"
port = 53
target_group = "dns"

[[target_group]]
name = "web"
protocol = "tcp"
port = 8080
  [[target_group.target]]
  address = "10.1.0.2"
  [[target_group.target]]
  address = "10.1.0.3"
  [[target_group.target]]
  address = "10.1.0.4"

[[target_group]]
name = "dns"
protocol = "udp"
port = 5353
stickiness = "source_ip"
udp_idle_timeout = 30
  [[target_group.target]]
  address = "10.1.0.2"
  [[target_group.target]]
  address = "10.1.0.3"
"#,
    )
    .unwrap();
    c.validate().unwrap();
    c
}

fn ep(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn web() -> VipKey {
    net::vip_key("10.0.0.100".parse().unwrap(), 80, PROTO_TCP)
}

fn dns() -> VipKey {
    net::vip_key("10.0.0.100".parse().unwrap(), 53, PROTO_UDP)
}

fn target(address: &str, weight: u32) -> config::TargetDescription {
    config::TargetDescription {
        address: address.parse().unwrap(),
        port: None,
        weight,
        zone: None,
    }
}

/// `base()` applied to a fresh plane; the log cleared.
fn applied() -> (Reconciler, MemoryPlane, Config) {
    let c = base();
    let mut plane = MemoryPlane::new();
    let mut state = Reconciler::new();
    state.apply(&mut plane, &c).unwrap();
    plane.take_ops();
    (state, plane, c)
}

fn live_ring<'a>(plane: &'a MemoryPlane, key: &VipKey) -> &'a [u32] {
    &plane.rings[&plane.vips[key].ring_slot]
}

/// The table the config asks for: (endpoint, id, weight) through Maglev.
fn expected_ring(members: &[(&str, u32, u32)]) -> Vec<u32> {
    let keys: Vec<String> = members.iter().map(|m| ep(m.0).to_string()).collect();
    let targets: Vec<_> = members
        .iter()
        .zip(&keys)
        .map(|(&(_, id, weight), key)| MaglevTarget { id, key, weight })
        .collect();
    maglev::build(&targets, SIZE).unwrap()
}

fn active(endpoint: &str, generation: u32) -> Target {
    net::target_entry(ep(endpoint), TargetState::Active, generation)
}

/// The `REPLIES` entry of a nat target with id `id` serving `vips`.
fn replies(id: u32, vips: &[VipKey]) -> ReplyTargets {
    let mut t = ReplyTargets {
        target_id: id,
        count: vips.len() as u32,
        ..ReplyTargets::default()
    };
    for (slot, v) in t.vips.iter_mut().zip(vips) {
        *slot = net::vip_ref(v);
    }
    t
}

fn reply_key(endpoint: &str, proto: u8) -> ReplyKey {
    net::reply_key(ep(endpoint), proto)
}

#[test]
fn fresh_apply_programs_everything() {
    let c = base();
    let mut plane = MemoryPlane::new();
    let mut state = Reconciler::new();
    let changes = state.apply(&mut plane, &c).unwrap();
    assert_eq!(
        changes,
        Changes {
            targets_registered: 5,
            vips_added: 2,
            ..Changes::default()
        }
    );

    // Ids in endpoint order, generation 1, counters zeroed first.
    let eps = [
        "10.1.0.2:5353",
        "10.1.0.2:8080",
        "10.1.0.3:5353",
        "10.1.0.3:8080",
        "10.1.0.4:8080",
    ];
    for (id, e) in eps.iter().enumerate() {
        assert_eq!(plane.targets[&(id as u32)], active(e, 1));
        assert_eq!(state.target_id(&ep(e)), Some(id as u32));
    }
    assert_eq!(
        plane
            .ports
            .iter()
            .map(|(p, f)| (*p, *f))
            .collect::<Vec<_>>(),
        [(53, VIP), (80, VIP), (5353, TARGET), (8080, TARGET)]
    );
    assert_eq!(plane.vip_addrs.len(), 1);
    assert!(
        plane
            .vip_addrs
            .contains(&net::vip_addr_key("10.0.0.100".parse().unwrap()))
    );

    // VIP ids in listener order, each in its first slot.
    assert_eq!(
        plane.vips[&web()],
        VipMeta {
            vip_id: 0,
            ring_slot: 0,
            ring_size: SIZE,
            flags: 0,
            idle_timeout_s: 350,
            generation: 1,
        }
    );
    assert_eq!(
        plane.vips[&dns()],
        VipMeta {
            vip_id: 1,
            ring_slot: 2,
            ring_size: SIZE,
            flags: STICKY_SOURCE_IP,
            idle_timeout_s: 30,
            generation: 1,
        }
    );
    assert_eq!(
        live_ring(&plane, &web()),
        expected_ring(&[
            ("10.1.0.2:8080", 1, 1),
            ("10.1.0.3:8080", 3, 1),
            ("10.1.0.4:8080", 4, 1)
        ])
    );
    assert_eq!(
        live_ring(&plane, &dns()),
        expected_ring(&[("10.1.0.2:5353", 0, 1), ("10.1.0.3:5353", 2, 1)])
    );

    // Order: filters, targets (counters reset first), then each VIP's
    // counters, table and entry.
    let ops = plane.take_ops();
    let kinds: Vec<String> = ops
        .iter()
        .map(|op| {
            format!("{op:?}")
                .split([' ', '{'])
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut want = vec!["SetPortFlags"; 4];
    want.push("SetVipAddr");
    for _ in 0..5 {
        want.extend(["ResetTargetCounters", "SetTarget"]);
    }
    // Every target's replies find their VIP before the VIP exists.
    want.extend(["SetReplies"; 5]);
    for _ in 0..2 {
        want.extend(["ResetVipCounters", "WriteRing", "SetVip"]);
    }
    assert_eq!(kinds, want);
    assert_eq!(plane.replies.len(), 5);
    assert_eq!(
        plane.replies[&reply_key("10.1.0.3:8080", PROTO_TCP)],
        replies(3, &[web()])
    );
    assert_eq!(
        plane.replies[&reply_key("10.1.0.3:5353", PROTO_UDP)],
        replies(2, &[dns()])
    );
}

#[test]
fn reapplying_the_same_config_writes_nothing() {
    let (mut state, mut plane, c) = applied();
    assert_eq!(state.apply(&mut plane, &c).unwrap(), Changes::default());
    assert_eq!(plane.take_ops(), []);
}

#[test]
fn adding_a_target_switches_only_that_vips_table() {
    let (mut state, mut plane, mut c) = applied();
    c.target_groups[0].targets.push(target("10.1.0.5", 1));
    let changes = state.apply(&mut plane, &c).unwrap();
    assert_eq!(
        changes.to_string(),
        "targets +1 -0, VIPs +0 -0, 1 tables switched, 0 VIPs updated"
    );

    let meta = VipMeta {
        ring_slot: 1,
        generation: 2,
        ..plane.vips[&web()]
    };
    assert_eq!(
        plane.take_ops(),
        [
            Op::ResetTargetCounters { id: 5 },
            Op::SetTarget {
                id: 5,
                target: active("10.1.0.5:8080", 1)
            },
            Op::SetReplies {
                key: reply_key("10.1.0.5:8080", PROTO_TCP),
                targets: replies(5, &[web()])
            },
            Op::WriteRing { slot: 1 },
            Op::SetVip { key: web(), meta },
        ]
    );
    assert_eq!(
        live_ring(&plane, &web()),
        expected_ring(&[
            ("10.1.0.2:8080", 1, 1),
            ("10.1.0.3:8080", 3, 1),
            ("10.1.0.4:8080", 4, 1),
            ("10.1.0.5:8080", 5, 1)
        ])
    );
    // The old table is still in slot 0, untouched; the next change flips back.
    c.target_groups[0].targets.push(target("10.1.0.6", 1));
    state.apply(&mut plane, &c).unwrap();
    assert_eq!(plane.vips[&web()].ring_slot, 0);
    assert_eq!(plane.vips[&web()].generation, 3);
}

#[test]
fn removing_a_target_switches_the_table_then_frees_it() {
    let (mut state, mut plane, mut c) = applied();
    c.target_groups[0]
        .targets
        .retain(|t| t.address.to_string() != "10.1.0.4");
    let changes = state.apply(&mut plane, &c).unwrap();
    assert_eq!(changes.targets_deregistered, 1);
    let meta = VipMeta {
        ring_slot: 1,
        generation: 2,
        ..plane.vips[&web()]
    };
    let unused = Target {
        state: TargetState::Unused as u8,
        ..active("10.1.0.4:8080", 1)
    };
    // The table that no longer names it is live before it becomes Unused;
    // port 8080 is still used by the other targets.
    assert_eq!(
        plane.take_ops(),
        [
            Op::WriteRing { slot: 1 },
            Op::SetVip { key: web(), meta },
            Op::SetTarget {
                id: 4,
                target: unused
            },
            // Its replies stop being translated only once it is Unused.
            Op::RemoveReplies {
                key: reply_key("10.1.0.4:8080", PROTO_TCP)
            },
        ]
    );
    assert!(!live_ring(&plane, &web()).contains(&4));
    assert_eq!(state.target_id(&ep("10.1.0.4:8080")), None);
}

#[test]
fn a_reused_id_gets_a_new_generation_and_fresh_counters() {
    let (mut state, mut plane, mut c) = applied();
    // Replace .4 by .9 in one apply: the new target must not take id 4 while
    // the live table still names it.
    c.target_groups[0].targets[2] = target("10.1.0.9", 1);
    state.apply(&mut plane, &c).unwrap();
    assert_eq!(state.target_id(&ep("10.1.0.9:8080")), Some(5));
    assert_eq!(plane.targets[&4].state, TargetState::Unused as u8);
    plane.take_ops();

    // Next apply: id 4 is free and lowest; its generation goes 1 -> 2.
    c.target_groups[0].targets.push(target("10.1.0.7", 1));
    state.apply(&mut plane, &c).unwrap();
    assert_eq!(state.target_id(&ep("10.1.0.7:8080")), Some(4));
    let ops = plane.take_ops();
    assert_eq!(
        ops[..2],
        [
            Op::ResetTargetCounters { id: 4 },
            Op::SetTarget {
                id: 4,
                target: active("10.1.0.7:8080", 2)
            },
        ]
    );
}

#[test]
fn weight_zero_is_registered_but_not_in_the_table() {
    let (mut state, mut plane, mut c) = applied();
    c.target_groups[0].targets[2].weight = 0;
    state.apply(&mut plane, &c).unwrap();
    assert_eq!(plane.targets[&4].state, TargetState::Active as u8);
    assert!(!live_ring(&plane, &web()).contains(&4));
    // Weights change the table only.
    c.target_groups[0].targets[2].weight = 3;
    plane.take_ops();
    state.apply(&mut plane, &c).unwrap();
    assert_eq!(
        plane.take_ops().len(),
        3,
        "the previous table retired (the first change kept one), one table write and one VIP switch"
    );
    assert_eq!(
        live_ring(&plane, &web()),
        expected_ring(&[
            ("10.1.0.2:8080", 1, 1),
            ("10.1.0.3:8080", 3, 1),
            ("10.1.0.4:8080", 4, 3)
        ])
    );
}

#[test]
fn settings_change_updates_the_vip_in_place() {
    let (mut state, mut plane, mut c) = applied();
    c.target_groups[0].tcp_idle_timeout = 60;
    c.target_groups[0].stickiness = config::Stickiness::SourceIp;
    let changes = state.apply(&mut plane, &c).unwrap();
    assert_eq!(changes.vips_updated, 1);
    let meta = VipMeta {
        idle_timeout_s: 60,
        flags: STICKY_SOURCE_IP,
        ..plane.vips[&web()]
    };
    assert_eq!((meta.ring_slot, meta.generation), (0, 1));
    assert_eq!(plane.take_ops(), [Op::SetVip { key: web(), meta }]);
}

#[test]
fn empty_group_gets_an_empty_table() {
    let (mut state, mut plane, mut c) = applied();
    c.target_groups[1].targets.clear();
    state.apply(&mut plane, &c).unwrap();
    assert!(live_ring(&plane, &dns()).iter().all(|&id| id == RING_EMPTY));
    // 10.1.0.x:5353 are gone, and so is the TARGET flag of 5353.
    assert_eq!(plane.ports.get(&5353), None);
    assert_eq!(plane.pick(&dns(), 12345), None);
}

#[test]
fn removing_a_listener_cleans_up_after_it() {
    let (mut state, mut plane, mut c) = applied();
    c.listeners.retain(|l| l.name != "dns");
    let changes = state.apply(&mut plane, &c).unwrap();
    assert_eq!((changes.vips_removed, changes.targets_deregistered), (1, 2));
    assert!(!plane.vips.contains_key(&dns()));
    // The address still serves port 80; port 53 and 5353 flags are cleared.
    assert_eq!(plane.vip_addrs.len(), 1);
    assert_eq!(
        plane
            .ports
            .iter()
            .map(|(p, f)| (*p, *f))
            .collect::<Vec<_>>(),
        [(80, VIP), (8080, TARGET)]
    );
    // Last listener on the address: the address goes too.
    c.listeners.clear();
    state.apply(&mut plane, &c).unwrap();
    assert!(plane.vips.is_empty() && plane.vip_addrs.is_empty() && plane.ports.is_empty());
    assert!(
        plane
            .targets
            .values()
            .all(|t| t.state == TargetState::Unused as u8)
    );
}

#[test]
fn a_new_vip_prefers_an_id_not_freed_by_the_same_apply() {
    let (mut state, mut plane, mut c) = applied();
    // Replace "dns" (vip_id 1) by a listener on another address.
    c.listeners[1].address = "10.0.0.101".parse().unwrap();
    state.apply(&mut plane, &c).unwrap();
    let new = net::vip_key("10.0.0.101".parse().unwrap(), 53, PROTO_UDP);
    assert_eq!(plane.vips[&new].vip_id, 2);
    assert_eq!(plane.vips[&new].ring_slot, 4);
    let ops = plane.take_ops();
    assert!(ops.contains(&Op::ResetVipCounters { vip_id: 2 }));
    assert!(ops.contains(&Op::RemoveVip { key: dns() }));
    // web still uses 10.0.0.100.
    assert!(!ops.contains(&Op::RemoveVipAddr {
        key: net::vip_addr_key("10.0.0.100".parse().unwrap())
    }));
}

#[test]
fn a_full_id_space_reuses_a_freed_vip_id() {
    let (mut state, mut plane, mut c) = applied();
    c.daemon.max_vips = 2;
    c.listeners[1].port = 54;
    state.apply(&mut plane, &c).unwrap();
    let new = net::vip_key("10.0.0.100".parse().unwrap(), 54, PROTO_UDP);
    assert_eq!(plane.vips[&new].vip_id, 1);
    assert_eq!(plane.vips.len(), 2);
    // A third VIP does not fit.
    let mut extra = c.listeners[1].clone();
    extra.port = 55;
    c.listeners.push(extra);
    let err = state.apply(&mut plane, &c).unwrap_err();
    assert_eq!(err.to_string(), "no free VIP id below daemon.max_vips = 2");
}

#[test]
fn targets_are_shared_between_groups() {
    let (mut state, mut plane, mut c) = applied();
    c.target_groups[1].port = 8080;
    c.target_groups[1].protocol = config::Protocol::Tcp;
    c.listeners[1].protocol = config::Protocol::Tcp;
    c.validate().unwrap();
    state.apply(&mut plane, &c).unwrap();
    // 10.1.0.2:8080 and 10.1.0.3:8080 now serve both VIPs with one id each.
    let dns_tcp = net::vip_key("10.0.0.100".parse().unwrap(), 53, PROTO_TCP);
    assert_eq!(
        live_ring(&plane, &dns_tcp),
        expected_ring(&[("10.1.0.2:8080", 1, 1), ("10.1.0.3:8080", 3, 1)])
    );
    assert_eq!(state.targets().count(), 3);
}

#[test]
fn recover_after_restart_keeps_ids_and_writes_nothing() {
    let (_, mut plane, c) = applied();
    let before = plane.clone();
    let mut state = Reconciler::recover(&plane).unwrap();
    assert_eq!(state.apply(&mut plane, &c).unwrap(), Changes::default());
    assert_eq!(plane.take_ops(), []);
    assert_eq!(plane.targets, before.targets);
    assert_eq!(plane.vips, before.vips);
    // And the recovered view is complete: a later reapply is free too.
    assert_eq!(state.apply(&mut plane, &c).unwrap(), Changes::default());
}

#[test]
fn recover_then_change_touches_only_the_difference() {
    let (mut old, mut plane, mut c) = applied();
    // A freed id's generation must survive the restart as well.
    c.target_groups[0].targets.pop();
    old.apply(&mut plane, &c).unwrap();
    plane.take_ops();

    let mut state = Reconciler::recover(&plane).unwrap();
    c.target_groups[0].targets.push(target("10.1.0.7", 1));
    state.apply(&mut plane, &c).unwrap();
    let ops = plane.take_ops();
    assert_eq!(
        ops[..3],
        [
            Op::ResetTargetCounters { id: 4 },
            Op::SetTarget {
                id: 4,
                target: active("10.1.0.7:8080", 2)
            },
            Op::SetReplies {
                key: reply_key("10.1.0.7:8080", PROTO_TCP),
                targets: replies(4, &[web()])
            },
        ]
    );
    // Only web's table is read-compared and switched (its previous table
    // retired first: the first switch kept one); dns is untouched.
    assert_eq!(ops.len(), 6, "{ops:?}");
    assert_eq!(state.target_id(&ep("10.1.0.2:8080")), Some(1));
}

#[test]
fn recover_repairs_a_table_that_differs_from_the_config() {
    let (_, mut plane, c) = applied();
    // As if the previous daemon died after writing a table but before the
    // switch, or with another config: the live table is not the config's.
    let slot = plane.vips[&web()].ring_slot;
    plane.rings.get_mut(&slot).unwrap()[7] = RING_EMPTY;
    let mut state = Reconciler::recover(&plane).unwrap();
    state.apply(&mut plane, &c).unwrap();
    assert_eq!(plane.take_ops().len(), 2, "table write + switch");
    assert_eq!(
        live_ring(&plane, &web()),
        expected_ring(&[
            ("10.1.0.2:8080", 1, 1),
            ("10.1.0.3:8080", 3, 1),
            ("10.1.0.4:8080", 4, 1)
        ])
    );
}

#[test]
fn recover_reassigns_vip_ids_that_do_not_fit() {
    let (_, mut plane, mut c) = applied();
    c.daemon.max_vips = 1;
    c.listeners.truncate(1);
    // web has id 0 and stays; pretend the maps held it under id 3.
    let meta = plane.vips.get_mut(&web()).unwrap();
    meta.vip_id = 3;
    meta.ring_slot = 6;
    let mut state = Reconciler::recover(&plane).unwrap();
    state.apply(&mut plane, &c).unwrap();
    let meta = plane.vips[&web()];
    assert_eq!((meta.vip_id, meta.ring_slot), (0, 0));
    // Overwritten in place: never removed.
    assert!(
        !plane
            .take_ops()
            .iter()
            .any(|op| matches!(op, Op::RemoveVip { key } if *key == web()))
    );
}

/// What the data path would do, independent of which ids were chosen.
fn behaviour(plane: &MemoryPlane) -> Vec<String> {
    let endpoint = |id: u32| net::target_endpoint(&plane.targets[&id]).unwrap();
    let mut out = Vec::new();
    let mut vips: Vec<_> = plane.vips.iter().collect();
    vips.sort_by_key(|(k, _)| net::display_vip(k));
    for (key, meta) in vips {
        let picks: Vec<Option<SocketAddr>> = (0..meta.ring_size)
            .map(|h| plane.pick(key, h).map(endpoint))
            .collect();
        out.push(format!(
            "{} flags={} idle={} {picks:?}",
            net::display_vip(key),
            meta.flags,
            meta.idle_timeout_s
        ));
    }
    let mut active: Vec<_> = plane
        .targets
        .values()
        .filter(|t| t.state == TargetState::Active as u8)
        .map(|t| net::target_endpoint(t).unwrap())
        .collect();
    active.sort();
    out.push(format!("active {active:?}"));
    out.push(format!("ports {:?}", plane.ports));
    let mut addrs: Vec<IpAddr> = plane
        .vip_addrs
        .iter()
        .map(|k| net::decode_addr(&k.addr, k.family).unwrap())
        .collect();
    addrs.sort();
    out.push(format!("addrs {addrs:?}"));
    out
}

#[test]
fn a_failed_write_leaves_a_state_the_next_apply_completes() {
    let (_, clean, mut c) = applied();
    let start = clean.clone();
    // A change touching every step: add a target, drop one, move a listener.
    c.target_groups[0].targets[0] = target("10.1.0.8", 2);
    c.listeners[1].address = "10.0.0.101".parse().unwrap();
    let mut want_plane = start.clone();
    Reconciler::recover(&start)
        .unwrap()
        .apply(&mut want_plane, &c)
        .unwrap();
    let writes = want_plane.take_ops().len();
    let want = behaviour(&want_plane);

    for fail_at in 0..writes {
        for restart in [false, true] {
            let mut plane = start.clone();
            plane.fail_at = Some(fail_at);
            let mut state = Reconciler::recover(&plane).unwrap();
            let err = state.apply(&mut plane, &c).unwrap_err();
            assert!(err.to_string().starts_with("failed to "), "{err}");
            if restart {
                state = Reconciler::recover(&plane).unwrap();
            }
            state.apply(&mut plane, &c).unwrap();
            assert_eq!(behaviour(&plane), want, "failure at write {fail_at}");
            // And the view matches the maps: nothing left to do.
            plane.take_ops();
            state.apply(&mut plane, &c).unwrap();
            assert_eq!(plane.take_ops(), [], "failure at write {fail_at}");
        }
    }
}

fn planned(endpoint: &str, state: TargetState, weight: u32) -> PlannedTarget {
    PlannedTarget {
        endpoint: ep(endpoint),
        state,
        weight,
    }
}

#[test]
fn a_plan_sets_states_and_keeps_draining_targets_out_of_the_table() {
    let (mut state, mut plane, c) = applied();
    let plan = Plan::from([(
        "web".to_string(),
        vec![
            planned("10.1.0.2:8080", TargetState::Active, 100),
            planned("10.1.0.3:8080", TargetState::Down, 100),
            planned("10.1.0.4:8080", TargetState::Draining, 100),
            // Deregistered from the config, still draining.
            planned("10.1.0.9:8080", TargetState::Draining, 0),
        ],
    )]);
    state.apply_plan(&mut plane, &c, &plan).unwrap();
    assert_eq!(plane.targets[&3].state, TargetState::Down as u8);
    assert_eq!(plane.targets[&4].state, TargetState::Draining as u8);
    let ghost = state.target_id(&ep("10.1.0.9:8080")).unwrap();
    assert_eq!(plane.targets[&ghost].state, TargetState::Draining as u8);
    assert_eq!(
        live_ring(&plane, &web()),
        expected_ring(&[("10.1.0.2:8080", 1, 100)])
    );
    // Back to the config: the same ids and generations come back Active, the
    // ghost is freed.
    state.apply(&mut plane, &c).unwrap();
    assert_eq!(plane.targets[&3], active("10.1.0.3:8080", 1));
    assert_eq!(plane.targets[&4], active("10.1.0.4:8080", 1));
    assert_eq!(plane.targets[&ghost].state, TargetState::Unused as u8);
    assert_eq!(state.target_id(&ep("10.1.0.9:8080")), None);
}

#[test]
fn a_target_shared_by_groups_takes_the_most_permissive_state() {
    let (mut state, mut plane, c) = applied();
    // 10.1.0.2:5353 is only in dns; make web and dns share an endpoint by
    // planning it in both.
    let plan = Plan::from([
        (
            "web".to_string(),
            vec![planned("10.1.0.2:5353", TargetState::Down, 1)],
        ),
        (
            "dns".to_string(),
            vec![planned("10.1.0.2:5353", TargetState::Draining, 1)],
        ),
    ]);
    state.apply_plan(&mut plane, &c, &plan).unwrap();
    let id = state.target_id(&ep("10.1.0.2:5353")).unwrap();
    assert_eq!(plane.targets[&id].state, TargetState::Draining as u8);
    assert!(live_ring(&plane, &web()).iter().all(|&t| t == RING_EMPTY));
}

#[test]
fn a_nat_target_of_more_vips_than_replies_hold_fails_the_apply() {
    let (mut state, mut plane, mut c) = applied();
    c.daemon.max_vips = 16;
    for port in 81..85 {
        let mut l = c.listeners[0].clone();
        l.name = format!("web{port}");
        l.port = port;
        c.listeners.push(l);
    }
    // Validation refuses it (config::tests has the message) ...
    assert!(c.validate().is_err());
    // ... and an apply that gets it anyway fails, naming the target,
    // rather than leave a VIP's replies untranslated.
    let before = plane.replies.clone();
    let err = state.apply(&mut plane, &c).unwrap_err();
    assert_eq!(
        err.to_string(),
        "nat target 10.1.0.2:8080 would serve 5 VIPs, more than the 4 its replies can be matched against"
    );
    assert_eq!(plane.replies, before, "no REPLIES entry was cut short");
    // Four are fine: every target's entry names all four.
    c.listeners.pop();
    c.validate().unwrap();
    state.apply(&mut plane, &c).unwrap();
    let vips: Vec<VipKey> = [80, 81, 82, 83]
        .map(|p| net::vip_key("10.0.0.100".parse().unwrap(), p, PROTO_TCP))
        .into();
    assert_eq!(
        plane.replies[&reply_key("10.1.0.2:8080", PROTO_TCP)].count,
        4
    );
    let mut got: Vec<_> = plane.replies[&reply_key("10.1.0.4:8080", PROTO_TCP)]
        .vips
        .to_vec();
    got.sort_by_key(|v| u16::from_be(v.port));
    assert_eq!(got, vips.iter().map(net::vip_ref).collect::<Vec<_>>());
}

#[test]
fn the_table_before_the_last_switch_is_kept_as_the_previous_one() {
    use lb_common::vip::vip_flags::PREVIOUS_RING;
    let (mut state, mut plane, mut c) = applied();
    // A new VIP: its other slot holds nothing of its own.
    assert_eq!(plane.vips[&web()].flags & PREVIOUS_RING, 0);
    let first = live_ring(&plane, &web()).to_vec();

    // First switch: the old table stays in slot 0 and is the previous one.
    c.target_groups[0].targets.push(target("10.1.0.5", 1));
    state.apply(&mut plane, &c).unwrap();
    let m = plane.vips[&web()];
    assert_eq!((m.ring_slot, m.flags & PREVIOUS_RING), (1, PREVIOUS_RING));
    assert_eq!(plane.rings[&0], first);
    let second = live_ring(&plane, &web()).to_vec();
    plane.take_ops();

    // A settings change keeps it; reapplying writes nothing.
    c.target_groups[0].tcp_idle_timeout = 61;
    state.apply(&mut plane, &c).unwrap();
    assert_eq!(plane.vips[&web()].flags & PREVIOUS_RING, PREVIOUS_RING);
    plane.take_ops();
    assert_eq!(state.apply(&mut plane, &c).unwrap(), Changes::default());
    // So does a restart.
    let mut recovered = Reconciler::recover(&plane).unwrap();
    assert_eq!(recovered.apply(&mut plane, &c).unwrap(), Changes::default());
    assert_eq!(plane.take_ops(), []);

    // Second switch (a weight): the previous table is retired by its own
    // VIPS update before slot 0 is overwritten, then the table of the first
    // switch is the previous one.
    c.target_groups[0].targets[0].weight = 3;
    recovered.apply(&mut plane, &c).unwrap();
    let m = plane.vips[&web()];
    let retired = VipMeta {
        ring_slot: 1,
        generation: 2,
        flags: 0,
        ..m
    };
    assert_eq!(
        plane.take_ops(),
        [
            Op::SetVip {
                key: web(),
                meta: retired
            },
            Op::WriteRing { slot: 0 },
            Op::SetVip {
                key: web(),
                meta: m
            },
        ]
    );
    assert_eq!((m.ring_slot, m.generation, m.flags), (0, 3, PREVIOUS_RING));
    assert_eq!(plane.rings[&1], second);

    // A change of table size: the old table indexes another modulus.
    c.daemon.maglev_table_size = 1013;
    recovered.apply(&mut plane, &c).unwrap();
    assert_eq!(plane.vips[&web()].flags & PREVIOUS_RING, 0);
}

#[test]
fn second_chance_is_a_flag_of_dsr_tcp_vips() {
    use lb_common::vip::vip_flags::{DSR, SECOND_CHANCE};
    let (mut state, mut plane, mut c) = applied();
    assert_eq!(plane.vips[&web()].flags & SECOND_CHANCE, 0, "nat");
    c.target_groups[0].forwarding = config::Forwarding::Dsr;
    c.target_groups[1].forwarding = config::Forwarding::Dsr;
    state.apply(&mut plane, &c).unwrap();
    assert_eq!(plane.vips[&web()].flags, DSR | SECOND_CHANCE);
    assert_eq!(plane.vips[&dns()].flags & SECOND_CHANCE, 0, "udp");
    c.target_groups[0].second_chance = Some(false);
    state.apply(&mut plane, &c).unwrap();
    assert_eq!(plane.vips[&web()].flags, DSR);
}
