//! The announcer: makes the routes of the daemon's owner (`bgp.table`,
//! `bgp.protocol`) in the kernel equal to what this host should announce,
//! and remembers why it announces less than the config names.
//!
//! A VIP is announced while all of these hold: `bgp.enabled`, the host is
//! not drained (`bgp.drain_file` absent), an XDP data path runs and every
//! interface of `daemon.interfaces` still has an XDP program attached, and
//! the VIP is the address of an announced listener (`bgp.listeners`, else
//! every tcp/udp listener: what the XDP path serves, since the running
//! config is what the maps hold). Target health plays no part: when every
//! target of a group is unhealthy the group fails open on every host alike,
//! and withdrawing everywhere at once would turn that into an outage.
//!
//! Writing is make-before-break: a changed metric or owner gets its new
//! route before the old one goes, so BIRD never sees a gap. Failures are
//! counted, logged and kept for the report; the next sync (every reload,
//! drain, resume, and the periodic check) tries again.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::{
    drain::DrainFile,
    metrics::AnnounceMetrics,
    routing::{Owner, Routing, RoutingError, kernel_metric},
};
use crate::config::Config;

/// Why the VIPs the config names are not (all) announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Withheld {
    /// `bgp.enabled = false`.
    Disabled,
    /// `lb host drain` (the drain file exists).
    Drained,
    /// The drain file cannot be read: taken as drained.
    DrainUnknown(String),
    /// No XDP data path (`dataplane = "userspace"`, or `auto` fell back).
    NoDataPath,
    /// XDP is no longer attached to this interface (or it is gone).
    Detached(String),
}

impl fmt::Display for Withheld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Disabled => f.write_str("bgp.enabled is false"),
            Self::Drained => f.write_str("the host is drained (`lb host resume` announces again)"),
            Self::DrainUnknown(e) => write!(f, "the drain state is unknown, taken as drained: {e}"),
            Self::NoDataPath => f.write_str("no XDP data path"),
            Self::Detached(i) => write!(f, "the XDP program is no longer attached to {i}"),
        }
    }
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncOutcome {
    pub added: Vec<IpAddr>,
    pub withdrawn: Vec<IpAddr>,
    pub errors: usize,
}

/// `lb host` / `GET /v1/host`: the host's announcements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReport {
    /// `bgp.enabled`.
    pub bgp: bool,
    pub table: u32,
    pub protocol: u8,
    /// Whether the host is drained (`bgp.drain_file` exists, or cannot be
    /// read).
    pub drained: bool,
    pub drain_file: String,
    /// VIPs whose routes are in the table now: announced through BIRD.
    pub announced: Vec<IpAddr>,
    /// VIPs the config names that are not announced.
    pub withheld: Vec<IpAddr>,
    /// Why they are not; none when everything named is announced.
    pub reason: Option<String>,
    /// The last failed route or drain-file operation, if the last sync had
    /// one.
    pub last_error: Option<String>,
}

/// See the module doc.
pub struct Announcer<R> {
    pub(super) routing: R,
    metrics: AnnounceMetrics,
    /// The owner of the last sync, whose routes are ours to withdraw when
    /// the config moves them.
    owner: Option<Owner>,
    /// What the last sync left in the kernel.
    announced: BTreeSet<IpAddr>,
    /// What the config names.
    candidates: BTreeSet<IpAddr>,
    withheld: Option<Withheld>,
    /// Whether the drain file says drained (or cannot be read).
    drained: bool,
    last_error: Option<String>,
}

impl<R: Routing> Announcer<R> {
    pub fn new(routing: R, metrics: AnnounceMetrics) -> Self {
        Self {
            routing,
            metrics,
            owner: None,
            announced: BTreeSet::new(),
            candidates: BTreeSet::new(),
            withheld: None,
            drained: false,
            last_error: None,
        }
    }

    /// Brings the kernel's routes of `config`'s owner in line with what
    /// this host announces; `xdp`: whether an XDP data path runs.
    pub async fn sync(&mut self, config: &Config, xdp: bool) -> SyncOutcome {
        let bgp = &config.bgp;
        let owner = Owner {
            table: bgp.table,
            protocol: bgp.protocol,
        };
        let mut errors = Vec::new();
        self.candidates = config.announced_listeners().map(|l| l.address).collect();
        let withheld = self.withheld(config, xdp, &mut errors).await;
        if withheld != self.withheld {
            match &withheld {
                Some(why) => warn!(reason = %why, "not announcing this host's VIPs"),
                None if self.withheld.is_some() => info!("announcing this host's VIPs"),
                None => {}
            }
        }
        let wanted = match withheld {
            None => self.candidates.clone(),
            Some(_) => BTreeSet::new(),
        };
        self.withheld = withheld;
        let mut outcome = SyncOutcome::default();
        match self.routing.list(owner).await {
            Ok(have) => {
                self.announced = self
                    .reconcile(owner, &have, &wanted, bgp.metric, &mut outcome, &mut errors)
                    .await;
            }
            Err(e) => errors.push(e.to_string()),
        }
        if let Some(old) = self.owner.filter(|o| *o != owner) {
            self.withdraw_owner(old, &mut outcome, &mut errors).await;
        }
        self.owner = Some(owner);
        self.finish(&mut outcome, errors);
        outcome
    }

    /// Drops every route of `owner` (`lb down`, a moved owner).
    pub async fn withdraw_all(&mut self, owner: Owner) -> Result<Vec<IpAddr>, RoutingError> {
        let have = self.routing.list(owner).await?;
        let mut gone = Vec::new();
        for (vip, metric) in have {
            self.routing.delete(owner, vip, metric).await?;
            gone.push(vip);
        }
        Ok(gone)
    }

    async fn withheld(
        &mut self,
        config: &Config,
        xdp: bool,
        errors: &mut Vec<String>,
    ) -> Option<Withheld> {
        // Read whatever the rest says, so the report shows it.
        let drain = match DrainFile::new(&config.bgp.drain_file).is_drained() {
            Ok(true) => Some(Withheld::Drained),
            Ok(false) => None,
            Err(e) => {
                errors.push(e.to_string());
                Some(Withheld::DrainUnknown(e.to_string()))
            }
        };
        self.drained = drain.is_some();
        if !config.bgp.enabled {
            return Some(Withheld::Disabled);
        }
        if drain.is_some() {
            return drain;
        }
        if !xdp {
            return Some(Withheld::NoDataPath);
        }
        for interface in &config.daemon.interfaces {
            match self.routing.xdp_attached(interface).await {
                Ok(true) => {}
                Ok(false) => return Some(Withheld::Detached(interface.clone())),
                // Not knowing is no evidence of a detached program: keep
                // announcing, say so, and look again next time.
                Err(e) => errors.push(e.to_string()),
            }
        }
        None
    }

    /// Adds what `wanted` lacks, deletes what it does not hold; returns
    /// what the owner's routes are afterwards.
    async fn reconcile(
        &mut self,
        owner: Owner,
        have: &BTreeMap<IpAddr, u32>,
        wanted: &BTreeSet<IpAddr>,
        metric: u32,
        outcome: &mut SyncOutcome,
        errors: &mut Vec<String>,
    ) -> BTreeSet<IpAddr> {
        let mut now: BTreeSet<IpAddr> = have.keys().copied().collect();
        for &vip in wanted {
            let want = kernel_metric(vip, metric);
            let old = have.get(&vip).copied();
            if old == Some(want) {
                continue;
            }
            match self.routing.add(owner, vip, metric).await {
                Ok(()) => {
                    if now.insert(vip) {
                        outcome.added.push(vip);
                    }
                }
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            }
            if let Some(old) = old
                && let Err(e) = self.routing.delete(owner, vip, old).await
            {
                errors.push(e.to_string());
            }
        }
        for (&vip, &old) in have.iter().filter(|(v, _)| !wanted.contains(v)) {
            match self.routing.delete(owner, vip, old).await {
                Ok(()) => {
                    now.remove(&vip);
                    outcome.withdrawn.push(vip);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        now
    }

    async fn withdraw_owner(
        &mut self,
        old: Owner,
        outcome: &mut SyncOutcome,
        errors: &mut Vec<String>,
    ) {
        match self.withdraw_all(old).await {
            Ok(gone) => {
                if !gone.is_empty() {
                    info!(owner = %old, count = gone.len(), "removed the routes of the previous table/protocol");
                }
                // Those announced under the new owner stay announced.
                let gone = gone.into_iter().filter(|v| !self.announced.contains(v));
                outcome.withdrawn.extend(gone);
            }
            Err(e) => errors.push(e.to_string()),
        }
    }

    fn finish(&mut self, outcome: &mut SyncOutcome, errors: Vec<String>) {
        for vip in &outcome.added {
            info!(%vip, "announced (route added)");
        }
        for vip in &outcome.withdrawn {
            info!(%vip, "withdrawn (route deleted)");
        }
        for e in &errors {
            error!(error = %e, "announcing VIPs");
        }
        outcome.errors = errors.len();
        self.metrics.record_errors(errors.len() as u64);
        self.last_error = errors.into_iter().last();
        self.metrics
            .set(&self.candidates, &self.announced, self.drained);
    }

    /// What `lb host` shows.
    pub fn report(&self, config: &Config) -> HostReport {
        let bgp = &config.bgp;
        HostReport {
            bgp: bgp.enabled,
            table: bgp.table,
            protocol: bgp.protocol,
            drained: self.drained,
            drain_file: bgp.drain_file.display().to_string(),
            announced: self.announced.iter().copied().collect(),
            withheld: self
                .candidates
                .difference(&self.announced)
                .copied()
                .collect(),
            reason: self.withheld.as_ref().map(ToString::to_string),
            last_error: self.last_error.clone(),
        }
    }

    /// Whether the last sync found the host drained.
    pub fn drained(&self) -> bool {
        self.drained
    }

    /// VIPs whose routes are in the table.
    pub fn announced(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.announced.iter().copied()
    }
}
