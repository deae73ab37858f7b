//! What the maps should hold for a config, before ids are assigned.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
};

use lb_common::{Addr, TargetState, VipAddrKey, VipKey, maps::port_flags, vip::vip_flags};

use crate::{
    config::{Config, Stickiness, TargetGroup},
    net,
};

/// What the control plane decided for one target of one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedTarget {
    pub endpoint: std::net::SocketAddr,
    /// `Active`, `Draining` or `Down` (`Unused` is not a plan: leave the
    /// target out).
    pub state: TargetState,
    /// Weight in the group's Maglev tables; 0 (or a state other than
    /// `Active`) keeps it out of them.
    pub weight: u32,
}

/// Per target-group name, the targets to program. A group without an entry
/// is taken from the config as it is: every target Active with its weight.
pub type Plan = BTreeMap<String, Vec<PlannedTarget>>;

/// A group's targets straight from the config.
fn configured(group: &TargetGroup) -> Vec<PlannedTarget> {
    group
        .targets
        .iter()
        .map(|t| PlannedTarget {
            endpoint: group.endpoint(t),
            state: TargetState::Active,
            weight: t.weight,
        })
        .collect()
}

/// One `TARGETS` entry serves every group listing the endpoint, so the most
/// permissive plan wins: Active over Draining over Down.
fn merge(a: TargetState, b: TargetState) -> TargetState {
    let rank = |s| match s {
        TargetState::Active => 3,
        TargetState::Draining => 2,
        TargetState::Down => 1,
        TargetState::Unused => 0,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// One listener's VIP.
#[derive(Debug)]
pub(super) struct DesiredVip {
    /// Listener name, for errors.
    pub name: String,
    pub key: VipKey,
    /// `vip_flags::*`.
    pub flags: u32,
    pub idle_timeout_s: u32,
    /// Targets that get new flows, with their weights (> 0), sorted.
    pub members: Vec<(SocketAddr, u32)>,
}

#[derive(Debug)]
pub(super) struct Desired {
    /// Every target of a group some listener uses, weight 0 included (so
    /// that its existing flows continue), with the state to program.
    /// (A hash map: large configs list 100,000s of targets.)
    pub targets: HashMap<SocketAddr, TargetState>,
    /// In listener order, so VIP ids are handed out in file order.
    pub vips: Vec<DesiredVip>,
    pub vip_addrs: BTreeMap<(u8, Addr), VipAddrKey>,
    /// Host-order port -> `port_flags::*`; no zero entries.
    pub ports: BTreeMap<u16, u32>,
    pub ring_size: u32,
}

impl Desired {
    /// Expects a validated config: listeners whose group does not exist are
    /// skipped, and so are listeners the XDP program does not serve.
    pub fn from_config(config: &Config, plan: &Plan) -> Self {
        let mut d = Desired {
            targets: HashMap::new(),
            vips: Vec::new(),
            vip_addrs: BTreeMap::new(),
            ports: BTreeMap::new(),
            ring_size: config.daemon.maglev_table_size,
        };
        let groups: HashMap<&str, &TargetGroup> = config
            .target_groups
            .iter()
            .rev() // the first group of a name wins, as in Config::target_group
            .map(|g| (g.name.as_str(), g))
            .collect();
        for listener in config.listeners.iter().filter(|l| l.protocol.in_kernel()) {
            let Some(&group) = listener.target_group.as_deref().and_then(|g| groups.get(g)) else {
                continue;
            };
            let key = net::vip_key(
                listener.address,
                listener.port,
                listener.protocol.ip_proto(),
            );
            let addr_key = net::vip_addr_key(listener.address);
            d.vip_addrs.insert(addr_ord(&addr_key), addr_key);
            *d.ports.entry(listener.port).or_default() |= port_flags::VIP;

            let planned = plan
                .get(&group.name)
                .cloned()
                .unwrap_or_else(|| configured(group));
            let mut members = Vec::new();
            for t in planned {
                let ep = t.endpoint;
                let state = d.targets.get(&ep).map_or(t.state, |&s| merge(s, t.state));
                d.targets.insert(ep, state);
                *d.ports.entry(ep.port()).or_default() |= port_flags::TARGET;
                if t.weight > 0 && t.state == TargetState::Active {
                    members.push((ep, t.weight));
                }
            }
            members.sort();
            let flags = match group.stickiness {
                Stickiness::None => 0,
                Stickiness::SourceIp => vip_flags::STICKY_SOURCE_IP,
            };
            d.vips.push(DesiredVip {
                name: listener.name.clone(),
                key,
                flags,
                idle_timeout_s: group.idle_timeout(listener.protocol),
                members,
            });
        }
        d
    }
}

/// Sort key of a `VIP_ADDRS` key (the lb-common types are not `Ord`).
pub(super) fn addr_ord(k: &VipAddrKey) -> (u8, Addr) {
    (k.family, k.addr)
}

/// Sort key of a `VIPS` key.
pub(super) type VipOrd = (u8, Addr, u16, u8);

pub(super) fn vip_ord(k: &VipKey) -> VipOrd {
    (k.family, k.addr, k.port, k.proto)
}
