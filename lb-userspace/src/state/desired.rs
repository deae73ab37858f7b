//! What the maps should hold for a config, before ids are assigned.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

use lb_common::{Addr, VipAddrKey, VipKey, maps::port_flags, vip::vip_flags};

use crate::{
    config::{Config, Stickiness},
    net,
};

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
    /// Every target of a group some listener uses, weight 0 included:
    /// registered (Active) so that its existing flows continue.
    pub targets: BTreeSet<SocketAddr>,
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
    pub fn from_config(config: &Config) -> Self {
        let mut d = Desired {
            targets: BTreeSet::new(),
            vips: Vec::new(),
            vip_addrs: BTreeMap::new(),
            ports: BTreeMap::new(),
            ring_size: config.daemon.maglev_table_size,
        };
        for listener in config.listeners.iter().filter(|l| l.protocol.in_kernel()) {
            let Some(group) = listener
                .target_group
                .as_deref()
                .and_then(|g| config.target_group(g))
            else {
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

            let mut members = Vec::new();
            for target in &group.targets {
                let ep = group.endpoint(target);
                d.targets.insert(ep);
                *d.ports.entry(ep.port()).or_default() |= port_flags::TARGET;
                if target.weight > 0 {
                    members.push((ep, target.weight));
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
