//! The daemon's copy of the data path's maps and the reconciler that brings
//! them to a config with as few map updates as possible.
//!
//! # Map protocol between daemon and kernel
//!
//! **Targets.** A target is identified by (address, port); its family follows
//! from the address. Each distinct target gets an id, an index into `TARGETS`
//! (`0..MAX_TARGETS`), shared by every group that lists it. The id is kept for
//! the target's whole life, across reloads and daemon restarts (the daemon
//! reads it back from `TARGETS`), so pinned flows keep reaching it.
//! A target that leaves the config is set `Unused`: the data path then
//! rebalances its flows on their next packet. Its entry keeps its address and
//! generation for `bpftool` readers. When an id is handed to a new target its
//! `generation` is incremented, and a flow only follows its pinned id while
//! `FlowEntry::target_gen` equals that generation: flows of the previous
//! holder are rebalanced, never sent to the new one. An id freed by an apply
//! is not handed out again in the same apply, because rings still naming it
//! are only replaced during that apply. Fresh ids are the lowest free ones,
//! and `TARGET_STATS[id]` is zeroed before the id is used.
//!
//! **Weights.** A target with weight 0 is registered `Active` (its existing
//! flows continue) but left out of the Maglev tables (no new flows).
//!
//! **Plans.** The control plane may replace a group's targets with a
//! [`Plan`]: each target with a state and a table weight. `Draining` keeps
//! the target's flows and gives it no new ones (deregistration delay, or an
//! unhealthy target whose group keeps connections); `Down` keeps the id but
//! moves its flows on their next packet (unhealthy, connection termination);
//! only `Active` targets with weight > 0 enter the tables. A plan may list
//! targets the config no longer has (draining after deregistration). A
//! target listed by several groups gets the most permissive state.
//!
//! **VIPs.** A VIP (one listener: address, port, protocol) gets a `vip_id`,
//! its `VIP_STATS` index, stable for its life, and owns the two ring slots
//! `2 * vip_id` and `2 * vip_id + 1` of `MAGLEV`. `VipMeta::ring_slot` names
//! the live one. A changed table is written into the slot that is not live,
//! then `VIPS[key]` is updated with the flipped `ring_slot` and
//! `generation + 1`: that single map update switches the table atomically, and
//! a packet never sees a half-written table. A VIP whose table and settings
//! are unchanged is not written at all.
//!
//! **Previous table.** After a switch the slot that is not live keeps the
//! table that was live before it, and `vip_flags::PREVIOUS_RING` says so;
//! dsr's second chance reads it (docs/datapath.md). "Previous" is the table
//! before the last switch, whatever caused it (targets, weights, health,
//! drain): one generation, no more. The flag is not set for a new VIP (its
//! other slot may hold a removed VIP's table), nor after a switch that
//! changed the table size or the stickiness (the old table would index
//! another flow hash), and it is cleared by its own `VIPS` update before
//! the slot is overwritten by the next switch, so the data path never reads
//! a half-written previous table either; the switch then sets it again. `idle_timeout_s` is the group's
//! `tcp_idle_timeout` or `udp_idle_timeout` for the listener's protocol;
//! `flags` has `STICKY_SOURCE_IP` for `stickiness = "source_ip"`. Removed VIPs
//! are deleted first, so their ids are free for new VIPs; a new VIP prefers an
//! id that was not freed by the same apply, and `VIP_STATS[vip_id]` is zeroed
//! before use.
//!
//! **Replies.** A nat target's replies find their flow through `REPLIES`:
//! per target (address, port, protocol) its id and the VIPs whose flows it
//! may answer, at most `MAX_VIPS_PER_TARGET`: validation refuses a config
//! that asks for more, and an apply that gets one anyway fails
//! ([`ApplyError::TooManyVips`]) rather than leave a VIP's replies
//! untranslated. Entries gain VIPs before those VIPs are added (step 2) and
//! lose them, or go, only after the VIPs and targets they name did (step
//! 6). In between an entry holds the VIPs it keeps and gains, then those it
//! loses while they fit; a VIP that does not fit loses its replies on this
//! target a moment early (the apply's steps 2 to 6), with a warning.
//!
//! **Filters.** `VIP_ADDRS` holds every VIP address (any port or protocol).
//! `PORTS[port]` has `port_flags::VIP` for every VIP port and
//! `port_flags::TARGET` for every port a target listens on; a flag is cleared
//! when nothing needs it any more.
//!
//! **Order of one apply**, chosen so that the data path never follows a
//! reference to something not yet (or no longer) there:
//! 1. add missing `PORTS` flags and `VIP_ADDRS` entries;
//! 2. register new targets (`TARGETS[id]` Active) before any table names them,
//!    and give `REPLIES` the VIPs new flows may come from;
//! 3. delete VIPs that left the config;
//! 4. add new VIPs (table first, then `VIPS`), switch changed tables, update
//!    changed settings;
//! 5. set targets that left the config `Unused`, now that no table names them;
//! 6. clear `PORTS` flags, `VIP_ADDRS` and `REPLIES` entries nothing needs.
//!
//! The userspace view is updated after every successful map update, so when a
//! map update fails half-way the view still matches the kernel and the next
//! apply finishes the job.
//!
//! **Restart.** [`Reconciler::recover`] rebuilds the view from `TARGETS`, `VIPS`,
//! `VIP_ADDRS`, `REPLIES` and `PORTS`. Tables are not read then; the first apply reads
//! the live table of each kept VIP once and compares it with the table the
//! config gives, so an unchanged config costs no writes and keeps every id.
//! Changing `maglev_table_size` rewrites every table; changing `max_vips`
//! below a VIP's id gives that VIP a new id (the loader must size the maps
//! for the new values).

mod desired;
mod group_cache;
mod memory;
mod plane;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::SocketAddr,
    sync::Arc,
};

use lb_common::{
    Addr, ReplyKey, ReplyTargets, Target, TargetState, VipAddrKey, VipKey, VipMeta, VipRef,
    flow::MAX_VIPS_PER_TARGET, limits::MAX_TARGETS, vip::vip_flags,
};
use thiserror::Error;

use crate::{
    config::Config,
    maglev::{self, MaglevError, MaglevTarget},
    net,
};
use desired::{Desired, DesiredVip, FastHash, VipOrd, addr_ord, vip_ord};
pub use desired::{Plan, PlannedTarget};
pub use memory::{InjectedFailure, MemoryPlane, Op};
pub use plane::DataPlane;

#[derive(Debug, Error)]
pub enum ApplyError {
    /// A map read or update failed; `action` names the map and the object.
    #[error("failed to {action}")]
    Plane {
        action: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("no free target id: all {MAX_TARGETS} are in use")]
    TargetIdsExhausted,
    #[error("no free VIP id below daemon.max_vips = {max_vips}")]
    VipIdsExhausted { max_vips: u32 },
    /// A nat target would serve more VIPs than its `REPLIES` entry holds
    /// (validation refuses such configs).
    #[error(
        "nat target {target} would serve {count} VIPs, more than the {MAX_VIPS_PER_TARGET} its replies can be matched against"
    )]
    TooManyVips { target: SocketAddr, count: usize },
    #[error("cannot build the Maglev table of listener {listener:?}")]
    Maglev {
        listener: String,
        #[source]
        source: MaglevError,
    },
}

/// Attaches what was being done to a plane error.
fn ctx<T, E>(result: Result<T, E>, action: impl FnOnce() -> String) -> Result<T, ApplyError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    result.map_err(|e| ApplyError::Plane {
        action: action(),
        source: Box::new(e),
    })
}

/// What an apply changed, for the reload log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    pub targets_registered: usize,
    pub targets_deregistered: usize,
    pub vips_added: usize,
    pub vips_removed: usize,
    /// Kept VIPs whose Maglev table was replaced.
    pub tables_switched: usize,
    /// Kept VIPs whose settings (timeout, stickiness) changed, table unchanged.
    pub vips_updated: usize,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no changes");
        }
        write!(
            f,
            "targets +{} -{}, VIPs +{} -{}, {} tables switched, {} VIPs updated",
            self.targets_registered,
            self.targets_deregistered,
            self.vips_added,
            self.vips_removed,
            self.tables_switched,
            self.vips_updated
        )
    }
}

/// A registered target as the daemon knows it.
#[derive(Debug, Clone, Copy)]
struct TargetEntry {
    /// `None` for an entry recovered from the maps that cannot be one of ours
    /// (unknown family, or a second id for the same endpoint): freed on apply.
    endpoint: Option<SocketAddr>,
    entry: Target,
}

/// What the live table of a VIP was built from: equal inputs give equal
/// tables, so comparing inputs avoids rebuilding and re-reading tables.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RingInput {
    size: u32,
    /// (endpoint, id, weight), weight > 0, sorted by endpoint.
    members: Vec<(SocketAddr, u32, u32)>,
}

impl RingInput {
    fn build(&self, listener: &str) -> Result<Vec<u32>, ApplyError> {
        let keys: Vec<String> = self.members.iter().map(|m| m.0.to_string()).collect();
        let targets: Vec<MaglevTarget<'_>> = self
            .members
            .iter()
            .zip(&keys)
            .map(|(&(_, id, weight), key)| MaglevTarget { id, key, weight })
            .collect();
        maglev::build(&targets, self.size).map_err(|source| ApplyError::Maglev {
            listener: listener.to_owned(),
            source,
        })
    }
}

#[derive(Debug, Clone)]
struct VipEntry {
    key: VipKey,
    meta: VipMeta,
    /// `None` after [`Reconciler::recover`] until the first apply compares the
    /// live table with the config's.
    ring: Option<RingInput>,
    /// The desired members `ring` was made from (before ids): equal members
    /// and settings mean nothing to do, without looking up any id.
    members: group_cache::Members,
}

impl VipEntry {
    fn unchanged(&self, dv: &DesiredVip, ring_size: u32) -> bool {
        self.ring.as_ref().is_some_and(|r| r.size == ring_size)
            && (Arc::ptr_eq(&self.members, &dv.members) || self.members == dv.members)
            && self.meta.flags & !vip_flags::PREVIOUS_RING == dv.flags
            && self.meta.idle_timeout_s == dv.idle_timeout_s
    }
}

/// Builds the tables `work` marks, on every CPU; in `work` order.
fn build_tables(
    work: &[(&DesiredVip, RingInput, bool)],
) -> Result<Vec<Option<Vec<u32>>>, ApplyError> {
    let jobs: Vec<(&str, &RingInput)> = work
        .iter()
        .filter(|w| w.2)
        .map(|(dv, input, _)| (dv.name.as_str(), input))
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if jobs.len() < 2 || threads < 2 {
        return jobs
            .iter()
            .map(|(name, input)| input.build(name).map(Some))
            .collect();
    }
    let chunk = jobs.len().div_ceil(threads);
    let results: Vec<Result<Vec<Vec<u32>>, ApplyError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || part.iter().map(|(name, input)| input.build(name)).collect())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a Maglev build thread panicked"))
            .collect()
    });
    let mut out = Vec::with_capacity(jobs.len());
    for part in results {
        out.extend(part?.into_iter().map(Some));
    }
    Ok(out)
}

/// The daemon's view of the maps it owns.
#[derive(Debug, Clone, Default)]
pub struct Reconciler {
    /// Ids in use (Active or Draining in `TARGETS`).
    targets: BTreeMap<u32, TargetEntry>,
    target_ids: BTreeMap<SocketAddr, u32>,
    /// Last generation of free ids that have been used before.
    generations: BTreeMap<u32, u32>,
    vips: BTreeMap<VipOrd, VipEntry>,
    vip_addrs: BTreeMap<(u8, Addr), VipAddrKey>,
    /// Host-order port -> flags; no zero entries.
    ports: BTreeMap<u16, u32>,
    replies: std::collections::HashMap<ReplyKey, ReplyTargets, FastHash>,
    /// What each group gave the last apply (a pure function of config and
    /// plan, so it never disagrees with the maps).
    groups: group_cache::GroupCache,
}

impl Reconciler {
    /// The view of freshly created (empty) maps.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the view from maps left by a previous daemon, so that ids are
    /// reused and pinned flows survive the restart.
    pub fn recover<P: DataPlane>(plane: &P) -> Result<Reconciler, ApplyError> {
        let mut s = Reconciler::new();
        let mut targets = ctx(plane.targets(), || "read TARGETS".into())?;
        targets.sort_by_key(|(id, _)| *id);
        for (id, t) in targets {
            if t.state == TargetState::Unused as u8 {
                if t.generation != 0 {
                    s.generations.insert(id, t.generation);
                }
                continue;
            }
            let endpoint = net::target_endpoint(&t).filter(|ep| !s.target_ids.contains_key(ep));
            if let Some(ep) = endpoint {
                s.target_ids.insert(ep, id);
            }
            s.targets.insert(id, TargetEntry { endpoint, entry: t });
        }
        for (key, meta) in ctx(plane.vips(), || "read VIPS".into())? {
            s.vips.insert(
                vip_ord(&key),
                VipEntry {
                    key,
                    meta,
                    ring: None,
                    members: Default::default(),
                },
            );
        }
        for key in ctx(plane.vip_addrs(), || "read VIP_ADDRS".into())? {
            s.vip_addrs.insert(addr_ord(&key), key);
        }
        for (port, flags) in ctx(plane.port_flags(), || "read PORTS".into())? {
            if flags != 0 {
                s.ports.insert(port, flags);
            }
        }
        for (key, targets) in ctx(plane.replies(), || "read REPLIES".into())? {
            s.replies.insert(key, targets);
        }
        Ok(s)
    }

    /// Brings the maps to `config` (which must have passed
    /// [`Config::validate`]) with only the map updates the difference needs,
    /// in the order described in the [module docs](self).
    pub fn apply<P: DataPlane>(
        &mut self,
        plane: &mut P,
        config: &Config,
    ) -> Result<Changes, ApplyError> {
        self.apply_plan(plane, config, &Plan::new())
    }

    /// [`Reconciler::apply`] with the control plane's decisions (health,
    /// draining, slow start, zones) for the groups `plan` names.
    pub fn apply_plan<P: DataPlane>(
        &mut self,
        plane: &mut P,
        config: &Config,
        plan: &Plan,
    ) -> Result<Changes, ApplyError> {
        let desired = Desired::from_config(config, plan, &mut self.groups);
        let max_vips = config.daemon.max_vips;
        let mut changes = Changes::default();
        self.add_filters(plane, &desired)?;
        self.register_targets(plane, &desired, &mut changes)?;
        self.add_replies(plane, &desired)?;
        let freed_vip_ids = self.remove_vips(plane, &desired, &mut changes)?;
        self.upsert_vips(plane, &desired, max_vips, &freed_vip_ids, &mut changes)?;
        self.deregister_targets(plane, &desired, &mut changes)?;
        self.remove_filters(plane, &desired)?;
        self.trim_replies(plane, &desired)?;
        Ok(changes)
    }

    /// Id of a registered target.
    pub fn target_id(&self, endpoint: &SocketAddr) -> Option<u32> {
        self.target_ids.get(endpoint).copied()
    }

    /// Registered targets: id and `TARGETS` entry.
    pub fn targets(&self) -> impl Iterator<Item = (u32, &Target)> {
        self.targets.iter().map(|(id, t)| (*id, &t.entry))
    }

    /// The `VIPS` entry of a VIP.
    pub fn vip(&self, key: &VipKey) -> Option<&VipMeta> {
        self.vips.get(&vip_ord(key)).map(|v| &v.meta)
    }

    /// Every VIP and its `VIPS` entry.
    pub fn vips(&self) -> impl Iterator<Item = (&VipKey, &VipMeta)> {
        self.vips.values().map(|v| (&v.key, &v.meta))
    }

    /// Step 1: flags and addresses that new VIPs and targets need.
    fn add_filters<P: DataPlane>(&mut self, plane: &mut P, d: &Desired) -> Result<(), ApplyError> {
        for (&port, &want) in &d.ports {
            let cur = self.ports.get(&port).copied().unwrap_or(0);
            if want & !cur != 0 {
                ctx(plane.set_port_flags(port, cur | want), || {
                    format!("set PORTS[{port}] = {:#x}", cur | want)
                })?;
                self.ports.insert(port, cur | want);
            }
        }
        for (ord, key) in &d.vip_addrs {
            if !self.vip_addrs.contains_key(ord) {
                ctx(plane.set_vip_addr(key), || {
                    format!("add VIP address {}", display_addr(key))
                })?;
                self.vip_addrs.insert(*ord, *key);
            }
        }
        Ok(())
    }

    /// Step 2: every desired target in its planned state, new ones with
    /// fresh ids.
    fn register_targets<P: DataPlane>(
        &mut self,
        plane: &mut P,
        d: &Desired,
        changes: &mut Changes,
    ) -> Result<(), ApplyError> {
        let mut fresh: Vec<(SocketAddr, TargetState)> = Vec::new();
        for (&ep, &state) in &d.targets {
            let Some(&id) = self.target_ids.get(&ep) else {
                fresh.push((ep, state));
                continue;
            };
            let cur = self.targets[&id].entry;
            if cur.state != state as u8 {
                let entry = net::target_entry(ep, state, cur.generation);
                ctx(plane.set_target(id, &entry), || {
                    format!("set target {id} ({ep}) {state:?}")
                })?;
                self.targets.insert(
                    id,
                    TargetEntry {
                        endpoint: Some(ep),
                        entry,
                    },
                );
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        // Ascending free ids, handed out in endpoint order (not hash order);
        // ids held by targets about to leave stay taken until step 5, so they
        // are never reused within this apply.
        fresh.sort_unstable_by_key(|(ep, _)| *ep);
        let held: BTreeSet<u32> = self.targets.keys().copied().collect();
        let mut free = (0..MAX_TARGETS).filter(move |id| !held.contains(id));
        for (ep, state) in fresh {
            let id = free.next().ok_or(ApplyError::TargetIdsExhausted)?;
            let generation = self
                .generations
                .get(&id)
                .copied()
                .unwrap_or(0)
                .wrapping_add(1);
            ctx(plane.reset_target_counters(id), || {
                format!("reset TARGET_STATS[{id}] for {ep}")
            })?;
            let entry = net::target_entry(ep, state, generation);
            ctx(plane.set_target(id, &entry), || {
                format!("register target {id} ({ep})")
            })?;
            self.targets.insert(
                id,
                TargetEntry {
                    endpoint: Some(ep),
                    entry,
                },
            );
            self.target_ids.insert(ep, id);
            self.generations.remove(&id);
            changes.targets_registered += 1;
        }
        Ok(())
    }

    /// Step 2, second half: every nat target's `REPLIES` entry names the
    /// VIPs it will serve, besides those it still serves (until step 6).
    fn add_replies<P: DataPlane>(&mut self, plane: &mut P, d: &Desired) -> Result<(), ApplyError> {
        for key in sorted(d.replies.keys()) {
            let (ep, vips) = &d.replies[&key];
            let id = self.target_ids[ep];
            let mut want = vips.clone();
            if let Some(cur) = self.replies.get(&key).filter(|c| c.target_id == id) {
                for v in vips_of(cur) {
                    if want.contains(v) {
                        continue;
                    }
                    if want.len() < MAX_VIPS_PER_TARGET {
                        want.push(*v);
                    } else {
                        tracing::warn!(
                            target = %ep,
                            vip = %display_vip(v, key.family),
                            "nat target changes VIPs beyond {MAX_VIPS_PER_TARGET} at once: \
                             replies of the VIP it leaves stop being translated before the VIP goes"
                        );
                    }
                }
            }
            self.write_replies(plane, key, *ep, id, &want)?;
        }
        Ok(())
    }

    /// Step 6, for `REPLIES`: exactly what the config asks, nothing more.
    fn trim_replies<P: DataPlane>(&mut self, plane: &mut P, d: &Desired) -> Result<(), ApplyError> {
        for key in sorted(self.replies.keys()) {
            match d.replies.get(&key) {
                Some((ep, vips)) => {
                    let id = self.target_ids[ep];
                    self.write_replies(plane, key, *ep, id, vips)?;
                }
                None => {
                    ctx(plane.remove_replies(&key), || {
                        format!("remove REPLIES entry of {}", display_reply(&key))
                    })?;
                    self.replies.remove(&key);
                }
            }
        }
        Ok(())
    }

    /// Writes `REPLIES[key]` unless it already holds this.
    fn write_replies<P: DataPlane>(
        &mut self,
        plane: &mut P,
        key: ReplyKey,
        ep: SocketAddr,
        id: u32,
        vips: &[VipRef],
    ) -> Result<(), ApplyError> {
        if vips.len() > MAX_VIPS_PER_TARGET {
            return Err(ApplyError::TooManyVips {
                target: ep,
                count: vips.len(),
            });
        }
        let mut targets = ReplyTargets {
            target_id: id,
            count: vips.len() as u32,
            ..ReplyTargets::default()
        };
        for (slot, v) in targets.vips.iter_mut().zip(vips) {
            *slot = *v;
        }
        if self.replies.get(&key) == Some(&targets) {
            return Ok(());
        }
        ctx(plane.set_replies(&key, &targets), || {
            format!("set REPLIES entry of target {ep}")
        })?;
        self.replies.insert(key, targets);
        Ok(())
    }

    /// Step 3: delete VIPs that left the config; returns their ids.
    fn remove_vips<P: DataPlane>(
        &mut self,
        plane: &mut P,
        d: &Desired,
        changes: &mut Changes,
    ) -> Result<BTreeSet<u32>, ApplyError> {
        let keep: BTreeSet<VipOrd> = d.vips.iter().map(|v| vip_ord(&v.key)).collect();
        let gone: Vec<VipOrd> = self
            .vips
            .keys()
            .filter(|k| !keep.contains(k))
            .copied()
            .collect();
        let mut freed = BTreeSet::new();
        for ord in gone {
            let v = &self.vips[&ord];
            ctx(plane.remove_vip(&v.key), || {
                format!("remove VIP {}", net::display_vip(&v.key))
            })?;
            freed.insert(v.meta.vip_id);
            self.vips.remove(&ord);
            changes.vips_removed += 1;
        }
        Ok(freed)
    }

    /// Step 4: new VIPs, switched tables, changed settings.
    fn upsert_vips<P: DataPlane>(
        &mut self,
        plane: &mut P,
        d: &Desired,
        max_vips: u32,
        freed: &BTreeSet<u32>,
        changes: &mut Changes,
    ) -> Result<(), ApplyError> {
        // Recovered entries whose id does not fit this config (or that share
        // an id with another entry) are given a new id like a new VIP; their
        // VIPS entry is overwritten in place, so traffic never stops.
        let mut held = BTreeSet::new();
        let mut invalid = BTreeSet::new();
        for (ord, v) in &self.vips {
            let id = v.meta.vip_id;
            let slot_ok = v.meta.ring_slot / 2 == id;
            if id >= max_vips || !slot_ok || !held.insert(id) {
                invalid.insert(*ord);
            }
        }
        // What each VIP needs, then every table that must be built, built in
        // parallel (the expensive part of a large apply), then the writes in
        // order.
        let mut work: Vec<(&DesiredVip, RingInput, bool)> = Vec::new();
        for dv in &d.vips {
            let ord = vip_ord(&dv.key);
            let current = self.vips.get(&ord).filter(|_| !invalid.contains(&ord));
            if current.is_some_and(|v| v.unchanged(dv, d.ring_size)) {
                continue;
            }
            let input = RingInput {
                size: d.ring_size,
                members: dv
                    .members
                    .iter()
                    .map(|&(ep, w)| (ep, self.target_ids[&ep], w))
                    .collect(),
            };
            let build = current.is_none_or(|v| v.ring.as_ref() != Some(&input));
            work.push((dv, input, build));
        }
        let mut tables = build_tables(&work)?.into_iter();
        for (dv, input, build) in work {
            let table = if build { tables.next().flatten() } else { None };
            let ord = vip_ord(&dv.key);
            match self.vips.get(&ord) {
                Some(v) if !invalid.contains(&ord) => {
                    let v = v.clone();
                    self.update_vip(plane, dv, v, input, table, changes)?;
                }
                _ => {
                    let id = (0..max_vips)
                        .filter(|id| !held.contains(id) && !freed.contains(id))
                        .chain(freed.iter().copied().filter(|id| !held.contains(id)))
                        .next()
                        .ok_or(ApplyError::VipIdsExhausted { max_vips })?;
                    held.insert(id);
                    let table = match table {
                        Some(t) => t,
                        None => input.build(&dv.name)?,
                    };
                    self.add_vip(plane, dv, id, input, table)?;
                    changes.vips_added += 1;
                }
            }
        }
        Ok(())
    }

    fn add_vip<P: DataPlane>(
        &mut self,
        plane: &mut P,
        dv: &DesiredVip,
        vip_id: u32,
        input: RingInput,
        table: Vec<u32>,
    ) -> Result<(), ApplyError> {
        let slot = 2 * vip_id;
        ctx(plane.reset_vip_counters(vip_id), || {
            format!("reset VIP_STATS[{vip_id}] for listener {:?}", dv.name)
        })?;
        ctx(plane.write_ring(slot, &table), || {
            format!("write Maglev slot {slot} of listener {:?}", dv.name)
        })?;
        let meta = VipMeta {
            vip_id,
            ring_slot: slot,
            ring_size: input.size,
            flags: dv.flags,
            idle_timeout_s: dv.idle_timeout_s,
            generation: 1,
        };
        ctx(plane.set_vip(&dv.key, &meta), || {
            format!(
                "add VIP {} of listener {:?}",
                net::display_vip(&dv.key),
                dv.name
            )
        })?;
        self.vips.insert(
            vip_ord(&dv.key),
            VipEntry {
                key: dv.key,
                meta,
                ring: Some(input),
                members: Arc::clone(&dv.members),
            },
        );
        Ok(())
    }

    /// `built`: the table for `input`, when the caller built it already.
    fn update_vip<P: DataPlane>(
        &mut self,
        plane: &mut P,
        dv: &DesiredVip,
        mut v: VipEntry,
        input: RingInput,
        built: Option<Vec<u32>>,
        changes: &mut Changes,
    ) -> Result<(), ApplyError> {
        let mut table = built;
        let same_table = match &v.ring {
            Some(live) => *live == input,
            // Recovered: compare with what is actually live, once.
            None if v.meta.ring_size == input.size => {
                let want = match table.take() {
                    Some(t) => t,
                    None => input.build(&dv.name)?,
                };
                let live = ctx(plane.read_ring(v.meta.ring_slot, input.size), || {
                    format!(
                        "read Maglev slot {} of listener {:?}",
                        v.meta.ring_slot, dv.name
                    )
                })?;
                let same = live == want;
                table = Some(want);
                same
            }
            None => false,
        };
        // The previous table stays meaningful while the flow hash is the
        // same one (stickiness unchanged).
        let same_hash = (v.meta.flags ^ dv.flags) & vip_flags::STICKY_SOURCE_IP == 0;
        let kept = if same_hash {
            v.meta.flags & vip_flags::PREVIOUS_RING
        } else {
            0
        };
        let mut meta = VipMeta {
            flags: dv.flags | kept,
            idle_timeout_s: dv.idle_timeout_s,
            ..v.meta
        };
        if same_table {
            v.ring = Some(input);
            if meta != v.meta {
                ctx(plane.set_vip(&dv.key, &meta), || {
                    format!(
                        "update VIP {} of listener {:?}",
                        net::display_vip(&dv.key),
                        dv.name
                    )
                })?;
                changes.vips_updated += 1;
            }
        } else {
            let table = match table {
                Some(t) => t,
                None => input.build(&dv.name)?,
            };
            let base = 2 * v.meta.vip_id;
            let slot = if v.meta.ring_slot == base {
                base + 1
            } else {
                base
            };
            // The slot about to be written holds the previous table, which
            // the data path reads for second chances: it stops doing so
            // before the first entry changes.
            if v.meta.flags & vip_flags::PREVIOUS_RING != 0 {
                let cleared = VipMeta {
                    flags: v.meta.flags & !vip_flags::PREVIOUS_RING,
                    ..v.meta
                };
                ctx(plane.set_vip(&dv.key, &cleared), || {
                    format!(
                        "retire the previous table of VIP {} of listener {:?}",
                        net::display_vip(&dv.key),
                        dv.name
                    )
                })?;
                v.meta = cleared;
                self.vips.insert(vip_ord(&dv.key), v.clone());
            }
            ctx(plane.write_ring(slot, &table), || {
                format!("write Maglev slot {slot} of listener {:?}", dv.name)
            })?;
            // The table live until now becomes the previous one, when it
            // indexes the same way (same size, same hash).
            let previous = if same_hash && v.meta.ring_size == input.size {
                vip_flags::PREVIOUS_RING
            } else {
                0
            };
            meta.flags = dv.flags | previous;
            meta.ring_slot = slot;
            meta.ring_size = input.size;
            meta.generation = v.meta.generation.wrapping_add(1);
            ctx(plane.set_vip(&dv.key, &meta), || {
                format!(
                    "switch VIP {} of listener {:?} to Maglev slot {slot}",
                    net::display_vip(&dv.key),
                    dv.name
                )
            })?;
            v.ring = Some(input);
            changes.tables_switched += 1;
        }
        v.meta = meta;
        v.members = Arc::clone(&dv.members);
        self.vips.insert(vip_ord(&dv.key), v);
        Ok(())
    }

    /// Step 5: targets no table names any more become Unused.
    fn deregister_targets<P: DataPlane>(
        &mut self,
        plane: &mut P,
        d: &Desired,
        changes: &mut Changes,
    ) -> Result<(), ApplyError> {
        let gone: Vec<(u32, TargetEntry)> = self
            .targets
            .iter()
            .filter(|(_, t)| t.endpoint.is_none_or(|ep| !d.targets.contains_key(&ep)))
            .map(|(id, t)| (*id, *t))
            .collect();
        for (id, t) in gone {
            let entry = Target {
                state: TargetState::Unused as u8,
                ..t.entry
            };
            ctx(plane.set_target(id, &entry), || match t.endpoint {
                Some(ep) => format!("deregister target {id} ({ep})"),
                None => format!("deregister stale target {id}"),
            })?;
            self.targets.remove(&id);
            if let Some(ep) = t.endpoint {
                self.target_ids.remove(&ep);
            }
            self.generations.insert(id, entry.generation);
            changes.targets_deregistered += 1;
        }
        Ok(())
    }

    /// Step 6: flags and addresses nothing needs any more.
    fn remove_filters<P: DataPlane>(
        &mut self,
        plane: &mut P,
        d: &Desired,
    ) -> Result<(), ApplyError> {
        let ports: Vec<(u16, u32)> = self.ports.iter().map(|(p, f)| (*p, *f)).collect();
        for (port, cur) in ports {
            let want = d.ports.get(&port).copied().unwrap_or(0);
            if cur != want {
                ctx(plane.set_port_flags(port, want), || {
                    format!("set PORTS[{port}] = {want:#x}")
                })?;
                if want == 0 {
                    self.ports.remove(&port);
                } else {
                    self.ports.insert(port, want);
                }
            }
        }
        let gone: Vec<((u8, Addr), VipAddrKey)> = self
            .vip_addrs
            .iter()
            .filter(|(ord, _)| !d.vip_addrs.contains_key(ord))
            .map(|(o, k)| (*o, *k))
            .collect();
        for (ord, key) in gone {
            ctx(plane.remove_vip_addr(&key), || {
                format!("remove VIP address {}", display_addr(&key))
            })?;
            self.vip_addrs.remove(&ord);
        }
        Ok(())
    }
}

/// `REPLIES` keys in a fixed order (writes are logged and compared in tests).
fn sorted<'a>(keys: impl Iterator<Item = &'a ReplyKey>) -> Vec<ReplyKey> {
    let mut v: Vec<ReplyKey> = keys.copied().collect();
    v.sort_by_key(|k| (k.family, k.addr, k.port, k.proto));
    v
}

/// The VIPs a `REPLIES` entry names.
fn vips_of(t: &ReplyTargets) -> &[VipRef] {
    &t.vips[..(t.count as usize).min(MAX_VIPS_PER_TARGET)]
}

fn display_vip(v: &VipRef, family: u8) -> String {
    match net::decode_addr(&v.addr, family) {
        Some(ip) => SocketAddr::new(ip, u16::from_be(v.port)).to_string(),
        None => format!("<family {family}>"),
    }
}

fn display_reply(k: &ReplyKey) -> String {
    match net::decode_addr(&k.addr, k.family) {
        Some(ip) => SocketAddr::new(ip, u16::from_be(k.port)).to_string(),
        None => format!("<family {}>", k.family),
    }
}

fn display_addr(k: &VipAddrKey) -> String {
    match net::decode_addr(&k.addr, k.family) {
        Some(ip) => ip.to_string(),
        None => format!("<family {}>", k.family),
    }
}

#[cfg(test)]
mod tests;
