//! What each target group contributes to the maps, kept between applies so
//! that an apply costs in proportion to what changed, not to the size of the
//! config: a group whose planned targets hash the same as last time is not
//! walked again. (A config of 1,000 groups of 100 targets spent most of a
//! one-target change re-deriving the other 999 groups.)
use std::{
    collections::HashMap,
    hash::{BuildHasher, Hasher},
    net::SocketAddr,
    sync::Arc,
};

use lb_common::TargetState;

use super::desired::{FastHash, Plan, PlannedTarget, configured};
use crate::config::TargetGroup;

/// Table members: (endpoint, weight > 0), sorted.
pub(super) type Members = Arc<Vec<(SocketAddr, u32)>>;

#[derive(Debug, Clone)]
struct Cached {
    fingerprint: u64,
    targets: Vec<(SocketAddr, TargetState)>,
    members: Members,
    /// Distinct target ports.
    ports: Vec<u16>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct GroupCache {
    groups: HashMap<String, Cached>,
    /// Endpoint -> how many cached groups plan it in each state (indexed by
    /// `TargetState as usize`).
    refs: HashMap<SocketAddr, [u32; 4], FastHash>,
}

fn fingerprint(planned: impl ExactSizeIterator<Item = PlannedTarget>) -> u64 {
    // Whole words rather than `SocketAddr`'s field-by-field `Hash`: this runs
    // over every target of every group on each apply.
    let mut h = FastHash::default().build_hasher();
    h.write_usize(planned.len());
    for t in planned {
        match t.endpoint {
            SocketAddr::V4(a) => {
                h.write_u64(u64::from(u32::from(*a.ip())) << 16 | u64::from(a.port()))
            }
            SocketAddr::V6(a) => {
                let ip = u128::from(*a.ip());
                h.write_u64(ip as u64);
                h.write_u64((ip >> 64) as u64);
                h.write_u64(u64::from(a.port()) | 1 << 63);
            }
        }
        h.write_u64(u64::from(t.state as u8) << 32 | u64::from(t.weight));
    }
    h.finish()
}

impl GroupCache {
    /// Brings the cache to exactly the groups in `used`, as `plan` (or the
    /// config, for groups the plan does not name) has them.
    pub fn update(&mut self, used: &[&TargetGroup], plan: &Plan) {
        for g in used {
            // Fingerprint without copying: most groups are unchanged.
            let planned_here = plan.get(&g.name);
            let fp = match planned_here {
                Some(p) => fingerprint(p.iter().copied()),
                None => fingerprint(configured(g)),
            };
            if self
                .groups
                .get(&g.name)
                .is_some_and(|c| c.fingerprint == fp)
            {
                continue;
            }
            let configured_targets: Vec<PlannedTarget>;
            let planned: &[PlannedTarget] = match planned_here {
                Some(p) => p,
                None => {
                    configured_targets = configured(g).collect();
                    &configured_targets
                }
            };
            if let Some(old) = self.groups.remove(&g.name) {
                self.release(&old);
            }
            let cached = self.derive(planned, fp);
            self.groups.insert(g.name.clone(), cached);
        }
        let used_names: std::collections::HashSet<&str> =
            used.iter().map(|g| g.name.as_str()).collect();
        let gone: Vec<String> = self
            .groups
            .keys()
            .filter(|name| !used_names.contains(name.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(old) = self.groups.remove(&name) {
                self.release(&old);
            }
        }
    }

    fn derive(&mut self, planned: &[PlannedTarget], fingerprint: u64) -> Cached {
        let mut members = Vec::with_capacity(planned.len());
        let mut ports = Vec::new();
        for t in planned {
            self.refs.entry(t.endpoint).or_default()[t.state as usize] += 1;
            if !ports.contains(&t.endpoint.port()) {
                ports.push(t.endpoint.port());
            }
            if t.weight > 0 && t.state == TargetState::Active {
                members.push((t.endpoint, t.weight));
            }
        }
        members.sort_unstable();
        Cached {
            fingerprint,
            targets: planned.iter().map(|t| (t.endpoint, t.state)).collect(),
            members: Arc::new(members),
            ports,
        }
    }

    fn release(&mut self, old: &Cached) {
        for (ep, state) in &old.targets {
            if let Some(counts) = self.refs.get_mut(ep) {
                counts[*state as usize] = counts[*state as usize].saturating_sub(1);
                if counts.iter().all(|&n| n == 0) {
                    self.refs.remove(ep);
                }
            }
        }
    }

    /// The members of a cached group (empty when unknown).
    pub fn members(&self, group: &str) -> Members {
        self.groups
            .get(group)
            .map_or_else(Members::default, |c| Arc::clone(&c.members))
    }

    /// Every planned target of a cached group (empty when unknown).
    pub fn group_targets(&self, group: &str) -> impl Iterator<Item = SocketAddr> + '_ {
        self.groups
            .get(group)
            .into_iter()
            .flat_map(|c| c.targets.iter().map(|(ep, _)| *ep))
    }

    /// Every planned target with its state; a target planned by several
    /// groups gets the most permissive one (Active over Draining over Down).
    pub fn targets(&self) -> HashMap<SocketAddr, TargetState, FastHash> {
        self.refs
            .iter()
            .filter_map(|(ep, counts)| {
                let state = [
                    TargetState::Active,
                    TargetState::Draining,
                    TargetState::Down,
                ]
                .into_iter()
                .find(|s| counts[*s as usize] > 0)?;
                Some((*ep, state))
            })
            .collect()
    }

    /// Distinct ports targets listen on.
    pub fn target_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.groups.values().flat_map(|c| c.ports.iter().copied())
    }
}
