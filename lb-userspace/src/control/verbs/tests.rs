//! The verbs on a config alone: what each changes, what each refuses, and
//! that a refused verb leaves the config as it was.
use super::*;
use crate::config::testing::{DAEMON, WEB, targets};

/// One tcp listener forwarding to a group of two targets (the second on
/// a port of its own), and an unused group.
fn config() -> Config {
    let text = format!(
        "{DAEMON}{WEB}{}  port = 9090\n\n[[target_group]]\nname = \"spare\"\nprotocol = \"tcp\"\nport = 80\n",
        targets(&["10.1.0.2", "10.1.0.3"])
    );
    Config::parse(&text).expect("config")
}

fn spec(address: &str, port: Option<u16>, weight: Option<u32>) -> TargetSpec {
    TargetSpec {
        address: address.parse().expect("address"),
        port,
        weight,
        zone: None,
    }
}

fn ep(s: &str) -> SocketAddr {
    s.parse().expect("endpoint")
}

fn endpoints(c: &Config, group: &str) -> Vec<(SocketAddr, u32)> {
    let g = c.target_group(group).expect("group");
    g.targets
        .iter()
        .map(|t| (g.endpoint(t), t.weight))
        .collect()
}

#[test]
fn register_adds_new_targets_and_updates_registered_ones() {
    let mut c = config();
    let specs = vec![
        spec("10.1.0.4", None, None),
        spec("10.1.0.2", Some(8080), Some(5)),
    ];
    register(&mut c, "web", specs).expect("register");
    assert_eq!(
        endpoints(&c, "web"),
        [
            (ep("10.1.0.2:8080"), 5),
            (ep("10.1.0.3:9090"), 1),
            (ep("10.1.0.4:8080"), 1)
        ]
    );
}

#[test]
fn refused_verbs_name_what_is_missing_and_change_nothing() {
    let before = config();
    let mut c = before.clone();
    assert_eq!(
        register(&mut c, "nope", vec![spec("10.1.0.9", None, None)]),
        Err(ControlError::NotFound(
            "target group \"nope\" does not exist".into()
        ))
    );
    assert_eq!(
        register(&mut c, "web", vec![]),
        Err(ControlError::BadRequest("no targets given".into()))
    );
    // The same target twice in one request, as the config check refuses
    // it twice in a group (issue 14, item 11); the group's port fills in.
    let twice = vec![
        spec("10.1.0.4", None, None),
        spec("10.1.0.5", None, None),
        spec("10.1.0.4", Some(8080), Some(3)),
    ];
    let err = register(&mut c, "web", twice).expect_err("refused");
    assert!(matches!(err, ControlError::Invalid(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "targets[2]: 10.1.0.4:8080 duplicates targets[0]"
    );
    assert_eq!(
        deregister(&mut c, "web", &[ep("10.1.0.2:8080"), ep("10.1.0.3:8080")]),
        Err(ControlError::NotFound(
            "10.1.0.3:8080 is not registered in target group \"web\"".into()
        ))
    );
    assert_eq!(
        set_weight(&mut c, "web", ep("10.1.0.9:8080"), 3),
        Err(ControlError::NotFound(
            "10.1.0.9:8080 is not registered in target group \"web\"".into()
        ))
    );
    assert_eq!(
        delete_listener(&mut c, "nope"),
        Err(ControlError::NotFound(
            "listener \"nope\" does not exist".into()
        ))
    );
    assert_eq!(
        delete_target_group(&mut c, "web"),
        Err(ControlError::Conflict(
            "target group \"web\" is in use by listener \"web\"".into()
        ))
    );
    assert_eq!(c, before);
}

#[test]
fn deregister_set_weight_and_deletes_edit_only_what_they_name() {
    let mut c = config();
    deregister(&mut c, "web", &[ep("10.1.0.3:9090")]).expect("deregister");
    assert_eq!(endpoints(&c, "web"), [(ep("10.1.0.2:8080"), 1)]);
    set_weight(&mut c, "web", ep("10.1.0.2:8080"), 7).expect("weight");
    assert_eq!(endpoints(&c, "web"), [(ep("10.1.0.2:8080"), 7)]);
    delete_target_group(&mut c, "spare").expect("delete unused group");
    assert!(c.target_group("spare").is_none());
    delete_listener(&mut c, "web").expect("delete listener");
    assert!(c.listeners.is_empty());
    delete_target_group(&mut c, "web").expect("no longer in use");
    assert!(c.target_groups.is_empty());
}

#[test]
fn modify_changes_the_given_attributes_only() {
    let mut c = config();
    let before = c.target_group("web").expect("web").clone();
    let a = TargetGroupAttributes {
        slow_start: Some(30),
        cross_zone: Some(!before.cross_zone),
        ..TargetGroupAttributes::default()
    };
    modify_target_group(&mut c, "web", &a).expect("modify");
    let g = c.target_group("web").expect("web");
    assert_eq!((g.slow_start, g.cross_zone), (30, !before.cross_zone));
    assert_eq!(g.deregistration_delay, before.deregistration_delay);
    assert_eq!(g.deletion_protection, before.deletion_protection);
    let l = ListenerAttributes {
        deletion_protection: Some(true),
    };
    modify_listener(&mut c, "web", &l).expect("modify listener");
    assert!(c.listeners[0].deletion_protection);
}
