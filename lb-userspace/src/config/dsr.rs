//! What `target_group.forwarding = "dsr"` cannot do, refused before
//! anything runs. The XDP program encapsulates the client's packet as it
//! is, so:
//! - only listeners the XDP program serves can use a dsr group (`tcp` and
//!   `udp` with `daemon.dataplane = "xdp"`): a `tls` / `http` / `https`
//!   listener, or the userspace proxy, connects to targets itself, and
//!   its connections' replies must come back to it;
//! - ports are not translated: the target receives the packet addressed to
//!   the VIP's port, so each target's port must equal the port of every
//!   listener using the group.
use super::{
    Config, Dataplane, Forwarding, Listener, TargetGroup, validation_errors::ValidationErrors,
};

pub(super) fn check(c: &Config, errs: &mut ValidationErrors) {
    for (i, g) in c.target_groups.iter().enumerate() {
        if g.forwarding == Forwarding::Dsr {
            check_group(c, i, g, errs);
        }
        check_second_chance(i, g, errs);
    }
}

/// `second_chance` is about dsr TCP connections: the previous target is
/// reached through the live one's `lb_decap`, which asks its TCP stack for
/// a socket. Set on any other group it would do nothing, so it is refused.
fn check_second_chance(i: usize, g: &TargetGroup, errs: &mut ValidationErrors) {
    if g.second_chance.is_none() {
        return;
    }
    let why = if g.forwarding != Forwarding::Dsr {
        "only dsr groups have a second chance (a nat target's replies come back through the host that has the flow)"
    } else if g.protocol != super::Protocol::Tcp {
        "only tcp groups have a second chance (the target side looks for a TCP socket)"
    } else {
        return;
    };
    errs.push(format!("target_group[{i}].second_chance"), why);
}

fn check_group(c: &Config, i: usize, g: &TargetGroup, errs: &mut ValidationErrors) {
    let path = format!("target_group[{i}]");
    if c.daemon.dataplane != Dataplane::Xdp {
        errs.push(
            format!("{path}.forwarding"),
            "dsr is done by the XDP program: it needs daemon.dataplane = \"xdp\" (the userspace proxy and relay connect to targets themselves)",
        );
    }
    // Only the first group of a name is reachable from listeners.
    if !c.target_group(&g.name).is_some_and(|f| std::ptr::eq(f, g)) {
        return;
    }
    let users = c
        .listeners
        .iter()
        .filter(|l| l.referenced_groups().contains(&g.name.as_str()));
    for l in users {
        if !l.protocol.in_kernel() {
            errs.push(
                format!("{path}.forwarding"),
                format!(
                    "dsr cannot serve {} listener {:?}: the daemon terminates its connections and opens its own to targets (dsr is for tcp and udp listeners)",
                    l.protocol, l.name
                ),
            );
            continue;
        }
        check_ports(&path, g, l, errs);
    }
}

/// Every target's port must be the listener's: dsr has no port to rewrite.
fn check_ports(path: &str, g: &TargetGroup, l: &Listener, errs: &mut ValidationErrors) {
    for (j, t) in g.targets.iter().enumerate() {
        let port = t.port.unwrap_or(g.port);
        if port == l.port {
            continue;
        }
        let key = if t.port.is_some() {
            format!("{path}.target[{j}].port")
        } else {
            format!("{path}.port")
        };
        errs.push(
            key,
            format!(
                "target {} on port {port}, but listener {:?} is on port {}: dsr does not translate ports (the target receives the client's packet to {}:{})",
                t.address, l.name, l.port, l.address, l.port
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{BASE, errors, parse};

    /// BASE with its group in dsr mode on the listener's port 80.
    fn dsr() -> String {
        BASE.replace("port = 8080\n", "port = 80\nforwarding = \"dsr\"\n")
    }

    #[test]
    fn dsr_parses_and_is_accepted_on_the_listeners_port() {
        let c = parse(&dsr());
        assert_eq!(
            c.target_groups[0].forwarding,
            crate::config::Forwarding::Dsr
        );
        assert_eq!(errors(&dsr()), Vec::<String>::new());
    }

    #[test]
    fn dsr_groups_probe_the_vip_unless_told_the_target() {
        use crate::config::CheckAddress;
        let c = parse(&dsr());
        let check = c.target_groups[0].resolved_health_check().unwrap();
        assert_eq!(check.address, CheckAddress::Vip);
        let target = dsr().replace(
            "forwarding = \"dsr\"\n",
            "forwarding = \"dsr\"\n  [target_group.health_check]\n  address = \"target\"\n",
        );
        assert_eq!(errors(&target), Vec::<String>::new());
        let check = parse(&target).target_groups[0]
            .resolved_health_check()
            .unwrap();
        assert_eq!(check.address, CheckAddress::Target);
    }

    #[test]
    fn dsr_refuses_another_port_with_its_key_path() {
        let group_port = BASE.replace("port = 8080\n", "port = 8080\nforwarding = \"dsr\"\n");
        assert_eq!(
            errors(&group_port),
            [
                "target_group[0].port: target 10.1.0.2 on port 8080, but listener \"web\" is on port 80: dsr does not translate ports (the target receives the client's packet to 10.0.0.100:80)",
                "target_group[0].port: target 10.1.0.3 on port 8080, but listener \"web\" is on port 80: dsr does not translate ports (the target receives the client's packet to 10.0.0.100:80)",
            ]
        );
        let target_port = dsr().replace(
            "address = \"10.1.0.3\"\n",
            "address = \"10.1.0.3\"\n  port = 81\n",
        );
        assert_eq!(
            errors(&target_port),
            [
                "target_group[0].target[1].port: target 10.1.0.3 on port 81, but listener \"web\" is on port 80: dsr does not translate ports (the target receives the client's packet to 10.0.0.100:80)"
            ]
        );
    }

    #[test]
    fn dsr_refuses_what_the_xdp_program_does_not_serve() {
        let userspace = dsr().replace(
            "interfaces = [\"eth0\"]\n",
            "interfaces = [\"eth0\"]\ndataplane = \"userspace\"\n",
        );
        assert_eq!(
            errors(&userspace),
            [
                "target_group[0].forwarding: dsr is done by the XDP program: it needs daemon.dataplane = \"xdp\" (the userspace proxy and relay connect to targets themselves)"
            ]
        );
        let tls = format!(
            "{}\n[[listener]]\nname = \"tls\"\nprotocol = \"tls\"\naddress = \"10.0.0.100\"\nport = 443\ntarget_group = \"web\"\n  [listener.tls]\n  [[listener.tls.certificate]]\n  cert = \"/c.pem\"\n  key = \"/k.pem\"\n",
            dsr()
        );
        let errs = errors(&tls);
        assert!(
            errs.contains(&"target_group[0].forwarding: dsr cannot serve tls listener \"tls\": the daemon terminates its connections and opens its own to targets (dsr is for tcp and udp listeners)".to_owned()),
            "{errs:?}"
        );
    }

    #[test]
    fn second_chance_defaults_on_for_dsr_tcp_and_is_refused_where_it_does_nothing() {
        let c = parse(&dsr());
        assert!(c.target_groups[0].second_chance());
        let off = dsr().replace(
            "forwarding = \"dsr\"\n",
            "forwarding = \"dsr\"\nsecond_chance = false\n",
        );
        assert!(!parse(&off).target_groups[0].second_chance());
        assert_eq!(errors(&off), Vec::<String>::new());
        assert!(!parse(BASE).target_groups[0].second_chance(), "nat");
        let nat = BASE.replace("port = 8080\n", "port = 8080\nsecond_chance = true\n");
        assert_eq!(
            errors(&nat),
            [
                "target_group[0].second_chance: only dsr groups have a second chance (a nat target's replies come back through the host that has the flow)"
            ]
        );
        let udp = dsr()
            .replace("protocol = \"tcp\"", "protocol = \"udp\"")
            .replace(
                "forwarding = \"dsr\"\n",
                "forwarding = \"dsr\"\nsecond_chance = false\n",
            );
        assert!(errors(&udp).contains(
            &"target_group[0].second_chance: only tcp groups have a second chance (the target side looks for a TCP socket)".to_owned()
        ), "{:?}", errors(&udp));
    }
}
