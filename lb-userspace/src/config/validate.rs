//! Semantic checks of a parsed [`Config`]: everything the types cannot say.
//! Every check runs even after others failed, so the operator sees the whole
//! list at once; each error carries the key path of the offending value.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
};

use lb_common::{PROTO_TCP, PROTO_UDP, flow::MAX_VIPS_PER_TARGET, limits};

use super::validation_errors::ValidationErrors;
use super::{
    Config, DEREGISTRATION_DELAY, Daemon, Dataplane, FLOW_CAPACITY, Forwarding, Listener,
    MAGLEV_TABLE_SIZE, MAX_VIPS, PORT, Protocol, SLOW_START, TCP_IDLE_TIMEOUT, TargetGroup,
    UDP_IDLE_TIMEOUT, WEIGHT, WORKER_THREADS,
};
use crate::maglev;

impl Config {
    /// Checks ranges, references, uniqueness and the data path's limits;
    /// returns all problems found.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        check_daemon(&self.daemon, &mut errs);
        check_listeners(self, &mut errs);
        for (i, group) in self.target_groups.iter().enumerate() {
            check_target_group(self, i, group, &mut errs);
        }
        check_totals(self, &mut errs);
        super::http::check(self, &mut errs);
        super::tls::check(self, &mut errs);
        super::api::check_api(self, &mut errs);
        super::bgp::check_bgp(self, &mut errs);
        super::caps::check(self, &mut errs);
        super::dsr::check(self, &mut errs);
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
}

/// Listener and target group names appear in logs, metrics labels and the
/// API; keep them to ELB's character set.
fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

const NAME_RULE: &str = "1 to 32 characters of A-Z a-z 0-9 - _";

/// Linux's `dev_valid_name`: below IFNAMSIZ (16) with the NUL, no '/', ':'
/// or whitespace, not "." or "..".
fn valid_ifname(name: &str) -> bool {
    (1..16).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// Addresses XDP cannot serve or forward to: no wildcard VIPs, nothing the
/// FIB would not route out of an interface.
fn unusable(ip: IpAddr) -> bool {
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

const UNUSABLE_RULE: &str = "unspecified, loopback, multicast or broadcast";

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

fn check_daemon(d: &Daemon, errs: &mut ValidationErrors) {
    if let Some(zone) = &d.zone {
        check_zone("daemon.zone", zone, errs);
    }
    if d.interfaces.is_empty() && d.tc_interfaces.is_empty() && d.dataplane != Dataplane::Userspace
    {
        errs.push("daemon.interfaces", "at least one interface is required");
    }
    let mut seen = HashMap::new();
    let lists = [
        ("interfaces", &d.interfaces),
        ("tc_interfaces", &d.tc_interfaces),
    ];
    let all = lists
        .iter()
        .flat_map(|(key, names)| names.iter().enumerate().map(move |(i, n)| (*key, i, n)));
    for (key, i, name) in all {
        let path = format!("daemon.{key}[{i}]");
        if !valid_ifname(name) {
            errs.push(
                path,
                format!(
                    "{name:?} is not a valid interface name (1 to 15 bytes, no \"/\", \":\" or whitespace)"
                ),
            );
        } else if let Some((first_key, first)) = seen.get(name.as_str()) {
            errs.push(
                path,
                format!("{name:?} duplicates daemon.{first_key}[{first}]"),
            );
        } else {
            seen.insert(name.as_str(), (key, i));
        }
    }
    if !d.pin_dir.is_absolute() {
        errs.push(
            "daemon.pin_dir",
            format!("{:?} is not an absolute path", d.pin_dir),
        );
    }
    let size = d.maglev_table_size;
    if errs.range("daemon.maglev_table_size", size, &MAGLEV_TABLE_SIZE) && !maglev::is_prime(size) {
        errs.push("daemon.maglev_table_size", format!("{size} is not prime"));
    }
    errs.range("daemon.flow_capacity", d.flow_capacity, &FLOW_CAPACITY);
    errs.range("daemon.max_vips", d.max_vips, &MAX_VIPS);
    errs.range("daemon.worker_threads", d.worker_threads, &WORKER_THREADS);
}

fn check_listeners(c: &Config, errs: &mut ValidationErrors) {
    let mut names = HashMap::new();
    let mut services: HashMap<_, &Listener> = HashMap::new();
    for (i, l) in c.listeners.iter().enumerate() {
        let path = format!("listener[{i}]");
        if !valid_name(&l.name) {
            errs.push(
                format!("{path}.name"),
                format!("{:?} is not a valid name ({NAME_RULE})", l.name),
            );
        } else if let Some(first) = names.get(l.name.as_str()) {
            errs.push(
                format!("{path}.name"),
                format!("{:?} duplicates listener[{first}].name", l.name),
            );
        } else {
            names.insert(l.name.as_str(), i);
        }
        if unusable(l.address) {
            errs.push(
                format!("{path}.address"),
                format!("{} cannot be a VIP ({UNUSABLE_RULE})", l.address),
            );
        }
        errs.range(format!("{path}.port"), l.port, &PORT);
        // tcp, tls, http and https listeners on one address and port would
        // compete for the same TCP port.
        let service = (l.address, l.port, l.protocol.ip_proto());
        if let Some(first) = services.get(&service) {
            errs.push(
                path.clone(),
                format!(
                    "{}/{} duplicates listener {:?}",
                    SocketAddr::new(l.address, l.port),
                    l.protocol,
                    first.name
                ),
            );
        } else {
            services.insert(service, l);
        }
        // http/https listeners name their groups in actions (config::http).
        let group = match (
            &l.target_group,
            l.protocol.in_kernel() || l.protocol == Protocol::Tls,
        ) {
            (Some(g), _) => g,
            (None, true) => {
                errs.push(
                    format!("{path}.target_group"),
                    format!("required for {} listeners", l.protocol),
                );
                continue;
            }
            (None, false) => continue,
        };
        match c.target_group(group) {
            None => errs.push(
                format!("{path}.target_group"),
                format!("unknown target group {group:?}"),
            ),
            Some(g) if !l.protocol.accepts_group(g.protocol) => errs.push(
                format!("{path}.target_group"),
                format!(
                    "target group {:?} is {}, the listener is {}",
                    g.name, g.protocol, l.protocol
                ),
            ),
            Some(_) => {}
        }
    }
    // Every listener is a VIP, whoever serves it (the XDP maps hold only
    // the kernel's, but the bound is the operator's, as documented).
    let vips = c.listeners.len();
    if MAX_VIPS.contains(&c.daemon.max_vips) && vips > c.daemon.max_vips as usize {
        errs.push(
            "daemon.max_vips",
            format!(
                "{} is less than the {vips} listeners (one VIP each, whatever their protocol)",
                c.daemon.max_vips
            ),
        );
    }
}

fn check_target_group(c: &Config, i: usize, g: &TargetGroup, errs: &mut ValidationErrors) {
    let path = format!("target_group[{i}]");
    if !valid_name(&g.name) {
        errs.push(
            format!("{path}.name"),
            format!("{:?} is not a valid name ({NAME_RULE})", g.name),
        );
    } else if let Some(first) = c.target_groups[..i].iter().position(|o| o.name == g.name) {
        errs.push(
            format!("{path}.name"),
            format!("{:?} duplicates target_group[{first}].name", g.name),
        );
    }
    errs.range(format!("{path}.port"), g.port, &PORT);
    errs.range(
        format!("{path}.tcp_idle_timeout"),
        g.tcp_idle_timeout,
        &TCP_IDLE_TIMEOUT,
    );
    errs.range(
        format!("{path}.udp_idle_timeout"),
        g.udp_idle_timeout,
        &UDP_IDLE_TIMEOUT,
    );
    errs.range(
        format!("{path}.deregistration_delay"),
        g.deregistration_delay,
        &DEREGISTRATION_DELAY,
    );
    errs.range(format!("{path}.slow_start"), g.slow_start, &SLOW_START);
    super::health_check::check_health_check(&path, g, errs);

    // Only the first group of a name is reachable from listeners.
    let is_first = c.target_group(&g.name).is_some_and(|f| std::ptr::eq(f, g));
    let users: Vec<_> = c
        .listeners
        .iter()
        .filter(|l| is_first && l.referenced_groups().contains(&g.name.as_str()))
        .collect();
    let mut endpoints = HashMap::new();
    for (j, t) in g.targets.iter().enumerate() {
        let tpath = format!("{path}.target[{j}]");
        if unusable(t.address) {
            errs.push(
                format!("{tpath}.address"),
                format!("{} cannot be a target ({UNUSABLE_RULE})", t.address),
            );
        } else if let Some(l) = users
            .iter()
            .find(|l| l.address.is_ipv4() != t.address.is_ipv4())
        {
            errs.push(
                format!("{tpath}.address"),
                format!(
                    "{} target in a group used by {} listener {:?}",
                    family(t.address),
                    family(l.address),
                    l.name
                ),
            );
        }
        if let Some(port) = t.port {
            errs.range(format!("{tpath}.port"), port, &PORT);
        }
        errs.range(format!("{tpath}.weight"), t.weight, &WEIGHT);
        if let Some(zone) = &t.zone {
            check_zone(&format!("{tpath}.zone"), zone, errs);
        }
        let ep = g.endpoint(t);
        if let Some(first) = endpoints.get(&ep) {
            errs.push(tpath, format!("{ep} duplicates target[{first}]"));
        } else {
            endpoints.insert(ep, j);
        }
    }
    // Maglev gives every weighted target at least one slot only if there are
    // more slots than targets.
    let weighted = g.targets.iter().filter(|t| t.weight > 0).count();
    let size = c.daemon.maglev_table_size;
    if MAGLEV_TABLE_SIZE.contains(&size) && weighted > size as usize {
        errs.push(
            format!("{path}.target"),
            format!("{weighted} targets with weight > 0 exceed daemon.maglev_table_size {size}"),
        );
    }
}

/// Zone names are free-form labels but must be usable in logs and metrics.
pub(super) fn check_zone(path: &str, zone: &str, errs: &mut ValidationErrors) {
    if !valid_name(zone) {
        errs.push(path, format!("{zone:?} is not a valid zone ({NAME_RULE})"));
    }
}

fn check_totals(c: &Config, errs: &mut ValidationErrors) {
    // One TARGETS entry per distinct (address, port), shared between groups.
    let distinct: HashSet<SocketAddr> = c
        .target_groups
        .iter()
        .flat_map(|g| g.targets.iter().map(|t| g.endpoint(t)))
        .collect();
    if distinct.len() > limits::MAX_TARGETS as usize {
        errs.push(
            "target_group",
            format!(
                "{} distinct targets (address, port) exceed the data path's limit of {}",
                distinct.len(),
                limits::MAX_TARGETS
            ),
        );
    }
    check_vips_per_target(c, errs);
}

/// A nat target's replies are matched against the VIPs its `REPLIES` entry
/// names, at most `MAX_VIPS_PER_TARGET` per target (address, port,
/// protocol): the replies of a further VIP's flows could not be translated
/// back. Reported once per target, at its first place in a group.
fn check_vips_per_target(c: &Config, errs: &mut ValidationErrors) {
    // (endpoint, IP protocol) -> the nat listeners (VIPs) it serves.
    let mut served: HashMap<(SocketAddr, u8), Vec<&str>> = HashMap::new();
    for l in c.listeners.iter().filter(|l| l.protocol.in_kernel()) {
        let Some(g) = l.target_group.as_deref().and_then(|g| c.target_group(g)) else {
            continue;
        };
        if g.forwarding != Forwarding::Nat {
            continue;
        }
        for t in &g.targets {
            let vips = served
                .entry((g.endpoint(t), l.protocol.ip_proto()))
                .or_default();
            if !vips.contains(&l.name.as_str()) {
                vips.push(&l.name);
            }
        }
    }
    let mut reported = HashSet::new();
    for (i, g) in c.target_groups.iter().enumerate() {
        for (j, t) in g.targets.iter().enumerate() {
            let ep = g.endpoint(t);
            for proto in [PROTO_TCP, PROTO_UDP] {
                let Some(vips) = served.get(&(ep, proto)) else {
                    continue;
                };
                if vips.len() <= MAX_VIPS_PER_TARGET || !reported.insert((ep, proto)) {
                    continue;
                }
                errs.push(
                    format!("target_group[{i}].target[{j}]"),
                    format!(
                        "{ep} ({}) is a nat target of {} listeners ({}): at most {MAX_VIPS_PER_TARGET}, \
                         since its replies are matched against that many VIPs",
                        if proto == PROTO_TCP { "tcp" } else { "udp" },
                        vips.len(),
                        vips.join(", ")
                    ),
                );
            }
        }
    }
}
