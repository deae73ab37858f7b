use std::net::{IpAddr, Ipv4Addr};

use super::{
    testing::{BASE, errors, parse},
    *,
};

const DEMO: &str = include_str!("../../../config/demo.toml");
const EXAMPLE: &str = include_str!("../../../config/example.toml");
const DSR_BGP: &str = include_str!("../../../config/dsr-bgp.toml");

/// `BASE` with `from` replaced by `to` (exactly once).
fn base_with(from: &str, to: &str) -> String {
    assert_eq!(BASE.matches(from).count(), 1, "{from:?} must occur once");
    BASE.replace(from, to)
}

fn parse_error(text: &str) -> String {
    Config::parse(text).unwrap_err().to_string()
}

#[test]
fn shipped_configs_are_valid() {
    let demo = parse(DEMO);
    assert_eq!(demo.validate(), Ok(()));
    assert_eq!(
        demo.summary().to_string(),
        "2 listeners, 2 target groups, 6 targets"
    );
    assert_eq!(demo.daemon.pin_dir, PathBuf::from("/run/lb-demo/bpffs"));
    let example = parse(EXAMPLE);
    assert_eq!(example.validate(), Ok(()));
    assert_eq!(
        example.summary().to_string(),
        "3 listeners, 3 target groups, 8 targets"
    );
    let dsr = parse(DSR_BGP);
    assert_eq!(dsr.validate(), Ok(()));
    assert!(
        dsr.target_groups
            .iter()
            .all(|g| g.forwarding == Forwarding::Dsr)
    );
}

#[test]
fn defaults() {
    let c = parse(BASE);
    assert_eq!(c.validate(), Ok(()));
    assert_eq!(c.daemon.xdp_mode, XdpMode::Driver);
    assert_eq!(c.daemon.pin_dir, PathBuf::from("/sys/fs/bpf/lb"));
    assert_eq!(c.daemon.maglev_table_size, 65537);
    assert_eq!(c.daemon.flow_capacity, 262_144);
    assert_eq!(c.daemon.max_vips, 64);
    let g = &c.target_groups[0];
    assert_eq!(g.forwarding, Forwarding::Nat);
    assert_eq!(g.stickiness, Stickiness::None);
    assert_eq!((g.tcp_idle_timeout, g.udp_idle_timeout), (350, 120));
    assert_eq!(g.targets[0].weight, 1);
    assert_eq!(g.endpoint(&g.targets[0]), "10.1.0.2:8080".parse().unwrap());
    assert_eq!(g.idle_timeout(Protocol::Udp), 120);
}

#[test]
fn load_reads_parses_and_validates() {
    let dir = std::env::temp_dir().join(format!("lb-config-test-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    fs::write(&good, BASE).unwrap();
    assert_eq!(Config::load(&good).unwrap(), parse(BASE));

    let bad = dir.join("bad.toml");
    fs::write(&bad, base_with("port = 80\n", "port = 0\n")).unwrap();
    let err = Config::load(&bad).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("config {} is invalid", bad.display())
    );
    let ConfigError::Invalid { errors, .. } = err else {
        panic!("expected Invalid, got {err:?}");
    };
    assert_eq!(
        errors.to_string(),
        "listener[0].port: 0 is outside 1..=65535"
    );

    let missing = dir.join("missing.toml");
    let err = Config::load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("failed to read config {}", missing.display())
    );
    fs::remove_dir_all(&dir).unwrap();
}

// --- errors reported by toml: syntax, unknown keys, types ---------------

#[test]
fn syntax_error_has_line_and_column() {
    assert_eq!(
        parse_error("[daemon]\ninterfaces = [\"eth0\"\n"),
        "TOML parse error at line 2, column 22\n  |\n2 | interfaces = [\"eth0\"\n  |                      ^\ninvalid array\nexpected `]`\n"
    );
}

#[test]
fn unknown_keys_are_rejected_with_their_location() {
    // The list of expected keys grows with the config; its start is enough.
    let err = parse_error("[daemon]\ninterfaces = [\"eth0\"]\nxdp = \"generic\"\n");
    assert!(
        err.starts_with(
            "TOML parse error at line 3, column 1\n  |\n3 | xdp = \"generic\"\n  | ^^^\nunknown field `xdp`, expected one of `interfaces`, "
        ),
        "{err}"
    );
    let text = base_with(
        "address = \"10.1.0.3\"",
        "address = \"10.1.0.3\"\n  wieght = 2",
    );
    assert_eq!(
        parse_error(&text),
        "TOML parse error at line 20, column 3\n   |\n20 |   wieght = 2\n   |   ^^^^^^\nunknown field `wieght`, expected one of `address`, `port`, `weight`, `zone`\n"
    );
    assert!(
        parse_error(&format!("{BASE}\n[extra]\n")).starts_with(
        "TOML parse error at line 21, column 2\n   |\n21 | [extra]\n   |  ^^^^^\nunknown field `extra`, expected one of `daemon`, `listener`, `target_group`")
    );
}

#[test]
fn type_errors_name_the_value() {
    assert_eq!(
        parse_error(&base_with(
            "protocol = \"tcp\"\naddress",
            "protocol = \"sctp\"\naddress"
        )),
        "TOML parse error at line 7, column 12\n  |\n7 | protocol = \"sctp\"\n  |            ^^^^^^\nunknown variant `sctp`, expected one of `tcp`, `udp`, `tls`, `http`, `https`\n"
    );
    assert_eq!(
        parse_error(&base_with(
            "address = \"10.0.0.100\"",
            "address = \"10.0.0.300\""
        )),
        "TOML parse error at line 8, column 11\n  |\n8 | address = \"10.0.0.300\"\n  |           ^^^^^^^^^^^^\ninvalid IP address syntax\n"
    );
    assert_eq!(
        parse_error(&base_with("port = 80\n", "port = 70000\n")),
        "TOML parse error at line 9, column 8\n  |\n9 | port = 70000\n  |        ^^^^^\ninvalid value: integer `70000`, expected u16\n"
    );
    // `interfaces` may be absent (dataplane = "userspace"); validation
    // requires it otherwise.
    assert_eq!(
        errors("[daemon]\n"),
        ["daemon.interfaces: at least one interface is required"]
    );
    assert_eq!(
        parse_error("[daemon]\ninterfaces = [\"eth0\"]\nxdp_mode = \"native\"\n"),
        "TOML parse error at line 3, column 12\n  |\n3 | xdp_mode = \"native\"\n  |            ^^^^^^^^\nunknown variant `native`, expected one of `driver`, `generic`, `auto`\n"
    );
    assert_eq!(
        parse_error("[daemon]\ninterfaces = [\"eth0\"]\nreply_interface_check = \"loose\"\n"),
        "TOML parse error at line 3, column 25\n  |\n3 | reply_interface_check = \"loose\"\n  |                         ^^^^^^^\nunknown variant `loose`, expected `strict` or `off`\n"
    );
}

// --- [daemon] ------------------------------------------------------------

#[test]
fn interfaces_required_valid_and_unique() {
    assert_eq!(
        errors(&base_with("[\"eth0\"]", "[]")),
        ["daemon.interfaces: at least one interface is required"]
    );
    assert_eq!(
        errors(&base_with(
            "[\"eth0\"]",
            "[\"eth0\", \"a-very-long-name0\", \"eth0\", \"a/b\"]"
        )),
        [
            "daemon.interfaces[1]: \"a-very-long-name0\" is not a valid interface name (1 to 15 bytes, no \"/\", \":\" or whitespace)",
            "daemon.interfaces[2]: \"eth0\" duplicates daemon.interfaces[0]",
            "daemon.interfaces[3]: \"a/b\" is not a valid interface name (1 to 15 bytes, no \"/\", \":\" or whitespace)",
        ]
    );
}

#[test]
fn tc_interfaces_valid_unique_and_in_one_list_only() {
    // Backward compatible: a string list, absent by default.
    let c = Config::parse(&base_with(
        "[\"eth0\"]",
        "[\"eth0\"]\ntc_interfaces = [\"veth1\"]",
    ))
    .expect("valid");
    assert_eq!(c.daemon.interfaces, ["eth0"]);
    assert_eq!(c.daemon.tc_interfaces, ["veth1"]);
    // tc interfaces alone are enough.
    assert!(errors(&base_with("[\"eth0\"]", "[]\ntc_interfaces = [\"veth1\"]")).is_empty());
    assert_eq!(
        errors(&base_with(
            "[\"eth0\"]",
            "[\"eth0\"]\ntc_interfaces = [\"veth1\", \"eth0\", \"a b\", \"veth1\"]"
        )),
        [
            "daemon.tc_interfaces[1]: \"eth0\" duplicates daemon.interfaces[0]",
            "daemon.tc_interfaces[2]: \"a b\" is not a valid interface name (1 to 15 bytes, no \"/\", \":\" or whitespace)",
            "daemon.tc_interfaces[3]: \"veth1\" duplicates daemon.tc_interfaces[0]",
        ]
    );
    assert!(
        parse_error(&base_with(
            "[\"eth0\"]",
            "[\"eth0\"]\ntc_interfaces = \"veth1\""
        ))
        .contains("invalid type: string \"veth1\", expected a sequence"),
    );
}

#[test]
fn pin_dir_must_be_absolute() {
    assert_eq!(
        errors(&base_with("[\"eth0\"]", "[\"eth0\"]\npin_dir = \"bpf/lb\"")),
        ["daemon.pin_dir: \"bpf/lb\" is not an absolute path"]
    );
}

#[test]
fn maglev_table_size_prime_and_bounded() {
    let with = |v: &str| {
        base_with(
            "[\"eth0\"]",
            &format!("[\"eth0\"]\nmaglev_table_size = {v}"),
        )
    };
    assert_eq!(
        errors(&with("65536")),
        ["daemon.maglev_table_size: 65536 is not prime"]
    );
    assert_eq!(
        errors(&with("5")),
        ["daemon.maglev_table_size: 5 is outside 7..=131071"]
    );
    assert_eq!(
        errors(&with("131101")),
        ["daemon.maglev_table_size: 131101 is outside 7..=131071"]
    );
    assert_eq!(errors(&with("7")), Vec::<String>::new());
}

#[test]
fn flow_capacity_and_max_vips_bounded() {
    let with = |kv: &str| base_with("[\"eth0\"]", &format!("[\"eth0\"]\n{kv}"));
    assert_eq!(
        errors(&with("flow_capacity = 1000")),
        ["daemon.flow_capacity: 1000 is outside 1024..=16777216"]
    );
    assert_eq!(
        errors(&with("max_vips = 0")),
        ["daemon.max_vips: 0 is outside 1..=1024"]
    );
    assert_eq!(
        errors(&with("max_vips = 1025")),
        ["daemon.max_vips: 1025 is outside 1..=1024"]
    );
}

#[test]
fn more_listeners_than_max_vips() {
    let text = format!(
        "{}\n[[listener]]\nname = \"web2\"\nprotocol = \"tcp\"\naddress = \"10.0.0.101\"\nport = 80\ntarget_group = \"web\"\n",
        base_with("[\"eth0\"]", "[\"eth0\"]\nmax_vips = 1")
    );
    assert_eq!(
        errors(&text),
        ["daemon.max_vips: 1 is less than the 2 listeners (one VIP each, whatever their protocol)"]
    );
    // Listeners the daemon serves count too (issue 14, item 11).
    let text = format!(
        "{}\n[[listener]]\nname = \"web2\"\nprotocol = \"http\"\naddress = \"10.0.0.101\"\nport = 80\ndefault_action = {{ type = \"fixed_response\", status = 200 }}\n",
        base_with("[\"eth0\"]", "[\"eth0\"]\nmax_vips = 1")
    );
    assert_eq!(
        errors(&text),
        ["daemon.max_vips: 1 is less than the 2 listeners (one VIP each, whatever their protocol)"]
    );
}

// --- [[listener]] ----------------------------------------------------------

/// `BASE` plus a second listener built from `fields`.
fn with_listener(fields: &str) -> String {
    format!("{BASE}\n[[listener]]\n{fields}\n")
}

#[test]
fn listener_names_valid_and_unique() {
    assert_eq!(
        errors(&with_listener(
            "name = \"web\"\nprotocol = \"tcp\"\naddress = \"10.0.0.101\"\nport = 80\ntarget_group = \"web\""
        )),
        ["listener[1].name: \"web\" duplicates listener[0].name"]
    );
    assert_eq!(
        errors(&base_with(
            "name = \"web\"\nprotocol = \"tcp\"\naddress",
            "name = \"my web\"\nprotocol = \"tcp\"\naddress"
        )),
        [
            "listener[0].name: \"my web\" is not a valid name (1 to 32 characters of A-Z a-z 0-9 - _)"
        ]
    );
}

#[test]
fn listener_address_and_port() {
    assert_eq!(
        errors(&base_with(
            "address = \"10.0.0.100\"",
            "address = \"0.0.0.0\""
        )),
        [
            "listener[0].address: 0.0.0.0 cannot be a VIP (unspecified, loopback, multicast or broadcast)"
        ]
    );
    assert_eq!(
        errors(&base_with("port = 80\n", "port = 0\n")),
        ["listener[0].port: 0 is outside 1..=65535"]
    );
}

#[test]
fn duplicate_service() {
    assert_eq!(
        errors(&with_listener(
            "name = \"web2\"\nprotocol = \"tcp\"\naddress = \"10.0.0.100\"\nport = 80\ntarget_group = \"web\""
        )),
        ["listener[1]: 10.0.0.100:80/tcp duplicates listener \"web\""]
    );
    // Same address and port over another protocol is another VIP.
    let text = format!(
        "{}\n[[target_group]]\nname = \"dns\"\nprotocol = \"udp\"\nport = 53\n",
        with_listener(
            "name = \"dns\"\nprotocol = \"udp\"\naddress = \"10.0.0.100\"\nport = 80\ntarget_group = \"dns\""
        )
    );
    assert_eq!(errors(&text), Vec::<String>::new());
}

#[test]
fn listener_target_group_must_exist_and_match() {
    assert_eq!(
        errors(&with_listener(
            "name = \"api\"\nprotocol = \"tcp\"\naddress = \"10.0.0.100\"\nport = 81\ntarget_group = \"api\""
        )),
        ["listener[1].target_group: unknown target group \"api\""]
    );
    assert_eq!(
        errors(&with_listener(
            "name = \"dns\"\nprotocol = \"udp\"\naddress = \"10.0.0.100\"\nport = 53\ntarget_group = \"web\""
        )),
        ["listener[1].target_group: target group \"web\" is tcp, the listener is udp"]
    );
}

// --- [[target_group]] -------------------------------------------------------

#[test]
fn target_group_names_valid_and_unique() {
    let text = format!("{BASE}\n[[target_group]]\nname = \"web\"\nprotocol = \"tcp\"\nport = 80\n");
    assert_eq!(
        errors(&text),
        ["target_group[1].name: \"web\" duplicates target_group[0].name"]
    );
    let text = format!("{BASE}\n[[target_group]]\nname = \"\"\nprotocol = \"tcp\"\nport = 80\n");
    assert_eq!(
        errors(&text),
        ["target_group[1].name: \"\" is not a valid name (1 to 32 characters of A-Z a-z 0-9 - _)"]
    );
}

#[test]
fn target_group_port_and_timeouts() {
    let text = base_with(
        "port = 8080",
        "port = 0\ntcp_idle_timeout = 59\nudp_idle_timeout = 6001",
    );
    assert_eq!(
        errors(&text),
        [
            "target_group[0].port: 0 is outside 1..=65535",
            "target_group[0].tcp_idle_timeout: 59 is outside 60..=6000",
            "target_group[0].udp_idle_timeout: 6001 is outside 10..=6000",
        ]
    );
}

#[test]
fn target_fields() {
    let text = base_with(
        "address = \"10.1.0.3\"",
        "address = \"255.255.255.255\"\n  port = 0\n  weight = 1001",
    );
    assert_eq!(
        errors(&text),
        [
            "target_group[0].target[1].address: 255.255.255.255 cannot be a target (unspecified, loopback, multicast or broadcast)",
            "target_group[0].target[1].port: 0 is outside 1..=65535",
            "target_group[0].target[1].weight: 1001 is outside 0..=1000",
        ]
    );
}

#[test]
fn duplicate_targets_in_a_group() {
    // 10.1.0.2 with the group's port 8080 and explicitly: the same endpoint.
    let text = base_with(
        "address = \"10.1.0.3\"",
        "address = \"10.1.0.3\"\n  [[target_group.target]]\n  address = \"10.1.0.2\"\n  port = 8080\n  [[target_group.target]]\n  address = \"10.1.0.2\"\n  port = 8081",
    );
    assert_eq!(
        errors(&text),
        ["target_group[0].target[2]: 10.1.0.2:8080 duplicates target[0]"]
    );
}

#[test]
fn target_family_must_match_listeners() {
    let text = base_with(
        "address = \"10.1.0.3\"",
        "address = \"10.1.0.3\"\n  [[target_group.target]]\n  address = \"2001:db8::2\"",
    );
    assert_eq!(
        errors(&text),
        ["target_group[0].target[2].address: IPv6 target in a group used by IPv4 listener \"web\""]
    );
    // An unused group may hold anything.
    let text = format!(
        "{BASE}\n[[target_group]]\nname = \"spare\"\nprotocol = \"tcp\"\nport = 80\n  [[target_group.target]]\n  address = \"2001:db8::2\"\n"
    );
    assert_eq!(errors(&text), Vec::<String>::new());
}

#[test]
fn more_weighted_targets_than_slots() {
    let mut text = base_with("[\"eth0\"]", "[\"eth0\"]\nmaglev_table_size = 7");
    for i in 0..6 {
        text += &format!("  [[target_group.target]]\n  address = \"10.1.1.{i}\"\n");
    }
    // One more with weight 0 does not count.
    text += "  [[target_group.target]]\n  address = \"10.1.2.1\"\n  weight = 0\n";
    assert_eq!(
        errors(&text),
        ["target_group[0].target: 8 targets with weight > 0 exceed daemon.maglev_table_size 7"]
    );
}

#[test]
fn too_many_distinct_targets() {
    let mut c = parse(BASE);
    // The same endpoints in two groups count once.
    let targets: Vec<TargetDescription> = (0..=limits::MAX_TARGETS)
        .map(|i| TargetDescription {
            address: IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i)),
            port: None,
            weight: 1,
            zone: None,
        })
        .collect();
    let mut spare = c.target_groups[0].clone();
    spare.name = "spare".into();
    spare.targets = targets[..100].to_vec();
    c.target_groups[0].targets = targets;
    c.target_groups.push(spare);
    c.daemon.maglev_table_size = 131_071;
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "target_group: 16385 distinct targets (address, port) exceed the data path's limit of 16384"
    );
    c.target_groups[0].targets.pop();
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn every_error_is_reported_at_once() {
    let text = BASE
        .replace("[\"eth0\"]", "[]")
        .replace("port = 80\n", "port = 0\n")
        .replace("target_group = \"web\"", "target_group = \"api\"")
        .replace("port = 8080", "port = 8080\ntcp_idle_timeout = 1");
    assert_eq!(
        errors(&text),
        [
            "daemon.interfaces: at least one interface is required",
            "listener[0].port: 0 is outside 1..=65535",
            "listener[0].target_group: unknown target group \"api\"",
            "target_group[0].tcp_idle_timeout: 1 is outside 60..=6000",
        ]
    );
}

#[test]
fn a_vip_is_named_by_its_listener_of_the_owners_asked_for() {
    let config = parse(&format!(
        "{BASE}
[[listener]]
name = \"secure\"
protocol = \"tls\"
address = \"10.0.0.100\"
port = 443
target_group = \"web\"
"
    ));
    let web = crate::net::vip_key("10.0.0.100".parse().unwrap(), 80, lb_common::PROTO_TCP);
    let secure = crate::net::vip_key("10.0.0.100".parse().unwrap(), 443, lb_common::PROTO_TCP);
    assert_eq!(config.vip_name(&web, VipOwners::InKernel), "web");
    assert_eq!(config.vip_name(&web, VipOwners::Any), "web");
    // The tls listener's address and port: only `Any` names it.
    assert_eq!(config.vip_name(&secure, VipOwners::Any), "secure");
    assert_eq!(
        config.vip_name(&secure, VipOwners::InKernel),
        crate::net::display_vip(&secure)
    );
    let stale = crate::net::vip_key("10.0.0.9".parse().unwrap(), 80, lb_common::PROTO_UDP);
    assert_eq!(
        config.vip_name(&stale, VipOwners::Any),
        crate::net::display_vip(&stale)
    );
}

/// `count` tcp listeners `web0..` on 10.0.0.100 ports 80.. and `udp` udp
/// listeners `dns0..` on ports 53.., all served by the targets 10.1.0.2 and
/// 10.1.0.3 (port 8080; the udp ones through a udp group of the same
/// targets).
fn vips_sharing_targets(count: u16, udp: u16) -> String {
    let mut text = String::from(crate::config::testing::DAEMON);
    for i in 0..count {
        text += &format!(
            "[[listener]]\nname = \"web{i}\"\nprotocol = \"tcp\"\naddress = \"10.0.0.100\"\nport = {}\ntarget_group = \"web\"\n",
            80 + i
        );
    }
    for i in 0..udp {
        text += &format!(
            "[[listener]]\nname = \"dns{i}\"\nprotocol = \"udp\"\naddress = \"10.0.0.100\"\nport = {}\ntarget_group = \"dns\"\n",
            53 + i
        );
    }
    for (name, protocol) in [("web", "tcp"), ("dns", "udp")] {
        text += &format!(
            "[[target_group]]\nname = \"{name}\"\nprotocol = \"{protocol}\"\nport = 8080\n\
             [[target_group.target]]\naddress = \"10.1.0.2\"\n\
             [[target_group.target]]\naddress = \"10.1.0.3\"\n"
        );
    }
    text
}

#[test]
fn a_nat_target_serves_at_most_four_vips_per_protocol() {
    // Four tcp VIPs and four udp VIPs on the same targets: each (address,
    // port, protocol) serves four.
    assert_eq!(errors(&vips_sharing_targets(4, 4)), Vec::<String>::new());
    // A fifth tcp VIP: its replies could not be matched; refused once per
    // target, at its place in the group.
    assert_eq!(
        errors(&vips_sharing_targets(5, 1)),
        [
            "target_group[0].target[0]: 10.1.0.2:8080 (tcp) is a nat target of 5 listeners \
             (web0, web1, web2, web3, web4): at most 4, since its replies are matched against \
             that many VIPs",
            "target_group[0].target[1]: 10.1.0.3:8080 (tcp) is a nat target of 5 listeners \
             (web0, web1, web2, web3, web4): at most 4, since its replies are matched against \
             that many VIPs",
        ]
    );
    // The same target in a second group used by another listener counts
    // there too.
    let mut c = parse(&vips_sharing_targets(4, 0));
    let mut other = c.target_groups[0].clone();
    other.name = "other".into();
    other.targets.truncate(1);
    c.target_groups.push(other);
    let mut l = c.listeners[0].clone();
    l.name = "extra".into();
    l.port = 443;
    l.target_group = Some("other".into());
    c.listeners.push(l);
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "target_group[0].target[0]: 10.1.0.2:8080 (tcp) is a nat target of 5 listeners \
         (web0, web1, web2, web3, extra): at most 4, since its replies are matched against \
         that many VIPs"
    );
}
