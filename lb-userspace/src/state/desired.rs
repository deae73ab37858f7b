//! What the maps should hold for a config, before ids are assigned.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
};

use lb_common::{
    Addr, ReplyKey, TargetState, VipAddrKey, VipKey, VipRef, maps::port_flags, vip::vip_flags,
};

use super::group_cache::{GroupCache, Members};
use crate::{
    config::{Config, Forwarding, Listener, Stickiness, TargetGroup},
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
pub(super) fn configured(group: &TargetGroup) -> impl ExactSizeIterator<Item = PlannedTarget> + '_ {
    group.targets.iter().map(|t| PlannedTarget {
        endpoint: group.endpoint(t),
        state: TargetState::Active,
        weight: t.weight,
    })
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
    /// Targets that get new flows, with their weights (> 0), sorted; shared
    /// by the listeners of one group and kept between applies.
    pub members: Members,
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
    /// nat targets (as their replies show them) -> the target and the VIPs
    /// it serves (at most `MAX_VIPS_PER_TARGET` in a valid config; see the
    /// module docs of `state`).
    pub replies: HashMap<ReplyKey, (SocketAddr, Vec<VipRef>), FastHash>,
    pub ring_size: u32,
}

impl Desired {
    /// Expects a validated config: listeners whose group does not exist are
    /// skipped, and so are listeners the XDP program does not serve. `cache`
    /// keeps what each group gives between calls (only changed groups are
    /// walked).
    pub fn from_config(config: &Config, plan: &Plan, cache: &mut GroupCache) -> Self {
        let groups: HashMap<&str, &TargetGroup> = config
            .target_groups
            .iter()
            .rev() // the first group of a name wins, as in Config::target_group
            .map(|g| (g.name.as_str(), g))
            .collect();
        let served: Vec<(&Listener, &TargetGroup)> = config
            .listeners
            .iter()
            .filter(|l| l.protocol.in_kernel())
            .filter_map(|l| Some((l, *groups.get(l.target_group.as_deref()?)?)))
            .collect();
        let mut seen = std::collections::HashSet::new();
        let used: Vec<&TargetGroup> = served
            .iter()
            .map(|(_, g)| *g)
            .filter(|g| seen.insert(g.name.as_str()))
            .collect();
        cache.update(&used, plan);
        let mut d = Desired {
            targets: cache.targets(),
            vips: Vec::new(),
            vip_addrs: BTreeMap::new(),
            ports: BTreeMap::new(),
            replies: HashMap::default(),
            ring_size: config.daemon.maglev_table_size,
        };
        for port in cache.target_ports() {
            *d.ports.entry(port).or_default() |= port_flags::TARGET;
        }
        for (listener, group) in served {
            let key = net::vip_key(
                listener.address,
                listener.port,
                listener.protocol.ip_proto(),
            );
            let addr_key = net::vip_addr_key(listener.address);
            d.vip_addrs.insert(addr_ord(&addr_key), addr_key);
            if group.forwarding == Forwarding::Nat {
                d.add_replies(cache.group_targets(&group.name), &key);
            }
            *d.ports.entry(listener.port).or_default() |= port_flags::VIP;
            let mut flags = match group.stickiness {
                Stickiness::None => 0,
                Stickiness::SourceIp => vip_flags::STICKY_SOURCE_IP,
            };
            if group.forwarding == Forwarding::Dsr {
                flags |= vip_flags::DSR;
            }
            if group.second_chance() {
                flags |= vip_flags::SECOND_CHANCE;
            }
            d.vips.push(DesiredVip {
                name: listener.name.clone(),
                key,
                flags,
                idle_timeout_s: group.idle_timeout(listener.protocol),
                members: cache.members(&group.name),
            });
        }
        d
    }
}

impl Desired {
    /// Notes that replies of `targets` may belong to flows of `vip`.
    fn add_replies(&mut self, targets: impl Iterator<Item = SocketAddr>, key: &VipKey) {
        let vip = net::vip_ref(key);
        for ep in targets {
            let (_, vips) = self
                .replies
                .entry(net::reply_key(ep, key.proto))
                .or_insert_with(|| (ep, Vec::new()));
            // All of them: more than `MAX_VIPS_PER_TARGET` is refused by
            // validation, and by the reconciler's write should one get here.
            if !vips.contains(&vip) {
                vips.push(vip);
            }
        }
    }
}

/// Sort key of a `VIP_ADDRS` key (the lb-common types are not `Ord`).
pub(super) fn addr_ord(k: &VipAddrKey) -> (u8, Addr) {
    (k.family, k.addr)
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
