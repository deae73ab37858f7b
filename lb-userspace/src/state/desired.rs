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
    /// (A hash map with a cheap hasher: large configs list 100,000s of
    /// targets, and SipHash over a `SocketAddr` was most of an apply.)
    pub targets: HashMap<SocketAddr, TargetState, FastHash>,
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
            targets: HashMap::default(),
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
        let mut members_of: HashMap<&str, Vec<(SocketAddr, u32)>> = HashMap::new();
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

            // A group serving several listeners is walked once.
            let members = match members_of.get(group.name.as_str()) {
                Some(m) => Vec::clone(m),
                None => {
                    let m = d.add_group(group, plan);
                    members_of.insert(group.name.as_str(), m.clone());
                    m
                }
            };
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

impl Desired {
    /// Registers the targets of `group` (as `plan` or the config says) and
    /// returns its table members, sorted. Large configs walk 100,000s of
    /// targets here, so it avoids copies and repeated lookups.
    fn add_group(&mut self, group: &TargetGroup, plan: &Plan) -> Vec<(SocketAddr, u32)> {
        let configured_targets;
        let planned: &[PlannedTarget] = match plan.get(&group.name) {
            Some(p) => p,
            None => {
                configured_targets = configured(group);
                &configured_targets
            }
        };
        let mut members = Vec::with_capacity(planned.len());
        let mut last_port = None;
        for t in planned {
            self.targets
                .entry(t.endpoint)
                .and_modify(|s| *s = merge(*s, t.state))
                .or_insert(t.state);
            let port = t.endpoint.port();
            if last_port != Some(port) {
                *self.ports.entry(port).or_default() |= port_flags::TARGET;
                last_port = Some(port);
            }
            if t.weight > 0 && t.state == TargetState::Active {
                members.push((t.endpoint, t.weight));
            }
        }
        members.sort_unstable();
        members
    }
}

/// FxHash (rustc's): a multiply and a rotate per word. Keys are our own
/// endpoints, not attacker-chosen, so flooding resistance is not needed.
#[derive(Default, Clone, Copy)]
pub(super) struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(super) type FastHash = std::hash::BuildHasherDefault<FxHasher>;

/// Sort key of a `VIPS` key.
pub(super) type VipOrd = (u8, Addr, u16, u8);

pub(super) fn vip_ord(k: &VipKey) -> VipOrd {
    (k.family, k.addr, k.port, k.proto)
}
