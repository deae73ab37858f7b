//! The control loop's state and what it does with each event: a reload, an
//! API command, a health verdict, or a timer (drain ends, slow-start steps).
//!
//! Every change goes the same way: produce the new running config (reload or
//! API edit), refuse it when it is invalid or would delete something
//! protected, bring the lifecycle in step, compute the plan, apply it to the
//! XDP maps and publish it to the userspace listeners. The running config
//! only changes when all of that succeeded.
use std::{collections::BTreeSet, net::SocketAddr, path::PathBuf, sync::Arc, time::Instant};

use tokio::sync::watch;
use tracing::{error, info, warn};

use super::{
    command::{ChangeReport, Command},
    error::ControlError,
    lifecycle::{Checks, Lifecycle, TargetHealth},
    transitions::Transitions,
    verbs,
    xdp::XdpPath,
};
use crate::{
    announce::{Announcer, DrainFile, HostReport, KernelRouting},
    config::{Config, ConfigError, ReplyInterfaceCheck, TargetGroup},
    error_chain::ErrorChain,
    health::{self, Checker, HealthEvent},
    listeners::Listeners,
    metrics::Metrics,
    probe_path::Probes,
    routable::Routable,
};

/// Health checks as configured (the `health_check` table of a group).
pub(super) struct ConfiguredChecks;

impl Checks for ConfiguredChecks {
    fn enabled(&self, group: &TargetGroup) -> bool {
        group.health_check.enabled
    }
}

/// The control loop's state.
/// Its reports ([`super::reports`]) read these fields.
pub struct Controller {
    pub(super) path: PathBuf,
    pub(super) config: Config,
    pub(super) lifecycle: Lifecycle,
    pub(super) xdp: Option<XdpPath>,
    pub(super) userspace: Listeners,
    routable: watch::Sender<Arc<Routable>>,
    checker: Checker,
    /// The way probes through VIPs take (dsr groups).
    probes: Probes,
    metrics: Arc<Metrics>,
    /// This host's VIP routes for BIRD (`[bgp]`).
    pub(super) announcer: Announcer<KernelRouting>,
    /// The running config for readers outside the loop (`/metrics`).
    published: watch::Sender<Arc<Config>>,
    /// (group, target) pairs whose state gauge is set, to remove stale ones.
    gauged: BTreeSet<(String, SocketAddr)>,
    pub(super) started: Instant,
    pub(super) last_reload: Option<String>,
    /// Recent health transitions for the status page.
    pub(super) transitions: Transitions,
}

/// What the control loop drives besides the lifecycle.
pub struct Parts {
    pub xdp: Option<XdpPath>,
    pub userspace: Listeners,
    pub routable: watch::Sender<Arc<Routable>>,
    pub checker: Checker,
    pub probes: Probes,
    pub metrics: Arc<Metrics>,
    pub announcer: Announcer<KernelRouting>,
}

impl Controller {
    /// `lifecycle` must have been synced with `config` (that is what the
    /// initial plan was computed from).
    pub fn new(path: PathBuf, config: Config, lifecycle: Lifecycle, parts: Parts) -> Self {
        let (published, _) = watch::channel(Arc::new(config.clone()));
        let mut c = Self {
            path,
            config,
            lifecycle,
            xdp: parts.xdp,
            userspace: parts.userspace,
            routable: parts.routable,
            checker: parts.checker,
            probes: parts.probes,
            metrics: parts.metrics,
            announcer: parts.announcer,
            published,
            gauged: BTreeSet::new(),
            started: Instant::now(),
            last_reload: None,
            transitions: Transitions::default(),
        };
        c.publish_gauges();
        c
    }

    /// Starts the health checks of the config (after [`Controller::new`],
    /// once the data path runs: probes through VIPs need it).
    pub async fn start_checks(&mut self) {
        let summary = self.apply_checks().await;
        info!(checks = summary.started, "health checks started");
    }

    /// The checker's jobs for the running config, probes through VIPs
    /// given their marks first.
    async fn apply_checks(&mut self) -> health::ApplySummary {
        let mut jobs = health::jobs_from_config(&self.config);
        self.probes.prepare(&mut jobs).await;
        self.checker.apply(jobs)
    }

    /// The running config as it changes, for readers outside the loop.
    pub fn config_watch(&self) -> watch::Receiver<Arc<Config>> {
        self.published.subscribe()
    }

    /// Whether the XDP data path runs (else everything is in userspace).
    pub fn has_xdp(&self) -> bool {
        self.xdp.is_some()
    }

    /// Host counts and target states as gauges.
    fn publish_gauges(&mut self) {
        let now = Instant::now();
        let control = self.metrics.control();
        let mut seen = BTreeSet::new();
        for g in &self.config.target_groups {
            let (healthy, unhealthy, _) = self.lifecycle.counts(&g.name);
            control.set_host_counts(&g.name, healthy as u64, unhealthy as u64);
            for r in self
                .lifecycle
                .reports(&self.config, g, &ConfiguredChecks, now)
            {
                control.set_target_state(&g.name, r.target, r.state.as_str());
                seen.insert((g.name.clone(), r.target));
            }
        }
        for (group, target) in self.gauged.difference(&seen) {
            control.remove_target(group, *target);
            if self.config.target_group(group).is_none() {
                control.remove_group(group);
            }
        }
        self.gauged = seen;
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The first plan, before there is a controller (the XDP path is
    /// started with it).
    pub fn initial_plan(config: &Config, lifecycle: &Lifecycle) -> (crate::state::Plan, Routable) {
        lifecycle.plan(config, &ConfiguredChecks, Instant::now())
    }

    /// Recomputes the plan and applies it everywhere. `released`: targets
    /// the lifecycle dropped (their flows are purged once unregistered).
    fn apply(
        &mut self,
        config: &Config,
        released: &[(String, SocketAddr)],
    ) -> Result<String, ControlError> {
        let (plan, routable) = self
            .lifecycle
            .plan(config, &ConfiguredChecks, Instant::now());
        let mut summary = String::from("applied");
        if let Some(xdp) = &mut self.xdp {
            let eps: Vec<SocketAddr> = released.iter().map(|(_, ep)| *ep).collect();
            let changes = xdp
                .apply(config, &plan, &eps)
                .map_err(|e| ControlError::Failed(ErrorChain(&e).to_string()))?;
            summary = changes.to_string();
        }
        self.routable.send_if_modified(|cur| {
            let changed = **cur != routable;
            if changed {
                *cur = Arc::new(routable);
            }
            changed
        });
        Ok(summary)
    }

    /// Makes `new` the running config, or refuses it and keeps the old one.
    async fn replace(&mut self, new: Config, why: &str) -> Result<ChangeReport, ControlError> {
        new.validate().map_err(ControlError::Invalid)?;
        protected_removals(&self.config, &new)?;
        if let Some(what) = daemon_change(&self.config, &new) {
            return Err(ControlError::BadRequest(format!(
                "[daemon] {what} changed; that needs a restart (`lb down` first when map sizes change)"
            )));
        }
        // Userspace listeners first: a listener that cannot bind refuses the
        // change before anything else moved.
        let serve_l4 = self.xdp.is_none();
        if let Err(e) = self.userspace.apply(&new, serve_l4).await {
            let old = self.config.clone();
            if let Err(again) = self.userspace.apply(&old, serve_l4).await {
                error!(error = %ErrorChain(&again), "restoring the userspace listeners failed");
            }
            return Err(ControlError::BadRequest(ErrorChain(&e).to_string()));
        }
        let now = Instant::now();
        // What the lifecycle was, to put back if the change is refused: a
        // second sync with the old config would not undo this one (targets
        // the change added would drain, targets it removed would count as
        // registered again).
        let before = self.lifecycle.clone();
        let released = self.lifecycle.sync(&new, now);
        match self.apply(&new, &released) {
            Ok(summary) => {
                info!(change = why, %summary, "config applied");
                self.config = new;
                self.apply_checks().await;
                self.published.send_replace(Arc::new(self.config.clone()));
                self.publish_gauges();
                self.announce().await;
                Ok(ChangeReport {
                    message: format!("{why}: {summary}"),
                })
            }
            Err(e) => {
                error!(change = why, error = %e, "applying failed; returning to the running config");
                let old = self.config.clone();
                self.lifecycle = before;
                if let Err(again) = self.apply(&old, &[]) {
                    error!(error = %again, "re-applying the running config failed too");
                }
                Err(e)
            }
        }
    }

    /// Re-reads the config file (SIGHUP, `lb reload`, the API).
    pub async fn reload(&mut self) -> Result<ChangeReport, ControlError> {
        let result = match Config::load(&self.path) {
            Ok(new) => self.replace(new, "reload").await,
            Err(ConfigError::Invalid { errors, .. }) => Err(ControlError::Invalid(errors)),
            // The file, not the request, is at fault: a 500 naming it.
            Err(ConfigError::Read { path, source }) => Err(ControlError::Unreadable {
                path,
                message: source.to_string(),
            }),
            Err(e) => Err(ControlError::BadRequest(ErrorChain(&e).to_string())),
        };
        self.metrics.control().record_reload(result.is_ok());
        match &result {
            Ok(r) => {
                info!(summary = %r.message, "config reloaded");
                self.last_reload = Some(r.message.clone());
            }
            Err(e) => {
                error!(error = %e, "reload refused; the running config stays");
                self.last_reload = Some(format!("refused: {e}"));
            }
        }
        result
    }

    /// A threshold crossing from the health checker.
    pub fn on_health_event(&mut self, ev: HealthEvent) {
        let health = match ev.health {
            health::Verdict::Healthy => TargetHealth::Healthy,
            health::Verdict::Unhealthy => TargetHealth::Unhealthy {
                reason: ev
                    .reason
                    .map_or("Target.FailedHealthChecks", |r| r.as_str())
                    .to_owned(),
                description: ev.description,
            },
        };
        self.on_health(&ev.group, ev.endpoint, health);
    }

    /// A health verdict.
    pub fn on_health(&mut self, group: &str, target: SocketAddr, health: TargetHealth) {
        let label = match &health {
            TargetHealth::Healthy => "healthy".to_string(),
            TargetHealth::Initial => "initial".to_string(),
            TargetHealth::Unhealthy { reason, .. } => format!("unhealthy ({reason})"),
        };
        let from = self.lifecycle.health(group, target).map(TargetHealth::name);
        let (to, reason) = (health.name(), health.reason().map(str::to_owned));
        if !self
            .lifecycle
            .set_health(group, target, health, Instant::now())
        {
            return;
        }
        let from = from.unwrap_or("initial");
        self.transitions
            .record(group, target, from, to, reason.as_deref());
        info!(target_group = group, %target, state = %label, "target health changed");
        let config = self.config.clone();
        if let Err(e) = self.apply(&config, &[]) {
            error!(error = %e, "applying a health change failed");
        }
        self.publish_gauges();
    }

    /// When [`on_timer`](Self::on_timer) should run next.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.lifecycle.next_change(&self.config, Instant::now())
    }

    /// Ends drains that are over and moves slow-start ramps on.
    pub fn on_timer(&mut self) {
        let released = self.lifecycle.expire(Instant::now());
        for (group, target) in &released {
            info!(target_group = %group, %target, "deregistration delay over; target removed");
        }
        let config = self.config.clone();
        if let Err(e) = self.apply(&config, &released) {
            error!(error = %e, "applying a timed change failed");
        }
        self.publish_gauges();
    }

    /// Brings this host's VIP routes in line with the running config, the
    /// drain state and the data path (see [`crate::announce`]), then has
    /// the dsr probes' routes checked if the checks changed or routes were
    /// added (`Probes::check_routes`): with the routes they will meet.
    pub async fn announce(&mut self) {
        let outcome = self.announcer.sync(&self.config, self.xdp.is_some()).await;
        self.probes.check_routes(!outcome.added.is_empty());
    }

    /// The periodic look ([`crate::announce::RECHECK`]): the drain file, the
    /// XDP attachments, routes deleted by hand (nothing to look at while
    /// `[bgp]` is off: turning it off withdrew everything), and replies the
    /// reply-interface check refused.
    pub async fn on_recheck(&mut self) {
        if self.config.bgp.enabled {
            self.announce().await;
        }
        self.watch_reply_check();
    }

    /// Warns when the reply-interface check passed replies untranslated
    /// since the last look ([`super::reply_alarm`]).
    fn watch_reply_check(&mut self) {
        let Some(xdp) = &mut self.xdp else {
            return;
        };
        if self.config.daemon.reply_interface_check != ReplyInterfaceCheck::Strict {
            return;
        }
        if let Some(refused) = xdp.refused_replies(Instant::now()) {
            warn!(
                refused,
                "nat replies came in by an interface other than the route to their target and were passed untranslated (daemon.reply_interface_check = \"strict\"): forged replies, or routing the check cannot serve (multipath or asymmetric routes to targets, the program on a bond's members or a VLAN's lower device), where every connection through the VIP fails; for those set reply_interface_check = \"off\" (docs/config.md)"
            );
        }
    }

    /// `lb host drain` (`drain`) and `lb host resume`: the drain file first,
    /// so that a crash right after still finds the host in the state asked
    /// for, then the routes.
    async fn set_drained(&mut self, drain: bool) -> Result<HostReport, ControlError> {
        let bgp = &self.config.bgp;
        if !bgp.enabled {
            return Err(ControlError::Conflict(
                "[bgp] is not enabled: this host announces nothing, so there is nothing to drain or resume"
                    .into(),
            ));
        }
        let file = DrainFile::new(&bgp.drain_file);
        let done = if drain { file.set() } else { file.clear() };
        done.map_err(|e| ControlError::Failed(ErrorChain(&e).to_string()))?;
        info!(
            drain_file = %bgp.drain_file.display(),
            "host {}",
            if drain { "drained" } else { "resumed" }
        );
        self.announce().await;
        Ok(self.announcer.report(&self.config))
    }

    /// Answers one command.
    pub async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Status(reply) => {
                let _ = reply.send(Ok(self.status()));
            }
            Command::Listeners(reply) => {
                let _ = reply.send(Ok(self.listeners()));
            }
            Command::TargetGroups(reply) => {
                let _ = reply.send(Ok(self.target_groups()));
            }
            Command::TargetHealth { group, reply } => {
                let _ = reply.send(self.target_health(&group));
            }
            Command::Flows { limit, reply } => {
                let _ = reply.send(self.flows(limit).await);
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Command::Transitions(reply) => {
                let _ = reply.send(Ok(self.transitions.newest_first()));
            }
            Command::Register {
                group,
                targets,
                reply,
            } => {
                let why = format!("register {} target(s) in {group}", targets.len());
                let done = self.edit(why, |c| verbs::register(c, &group, targets));
                let _ = reply.send(done.await);
            }
            Command::Deregister {
                group,
                targets,
                reply,
            } => {
                let why = format!("deregister {} target(s) from {group}", targets.len());
                let done = self.edit(why, |c| verbs::deregister(c, &group, &targets));
                let _ = reply.send(done.await);
            }
            Command::SetWeight {
                group,
                target,
                weight,
                reply,
            } => {
                let why = format!("set weight of {target} in {group} to {weight}");
                let done = self.edit(why, |c| verbs::set_weight(c, &group, target, weight));
                let _ = reply.send(done.await);
            }
            Command::ModifyListener {
                name,
                attributes,
                reply,
            } => {
                let why = format!("modify listener {name}");
                let done = self.edit(why, |c| verbs::modify_listener(c, &name, &attributes));
                let _ = reply.send(done.await);
            }
            Command::ModifyTargetGroup {
                name,
                attributes,
                reply,
            } => {
                let why = format!("modify target group {name}");
                let done = self.edit(why, |c| verbs::modify_target_group(c, &name, &attributes));
                let _ = reply.send(done.await);
            }
            Command::DeleteListener { name, reply } => {
                let why = format!("delete listener {name}");
                let done = self.edit(why, |c| verbs::delete_listener(c, &name));
                let _ = reply.send(done.await);
            }
            Command::DeleteTargetGroup { name, reply } => {
                let why = format!("delete target group {name}");
                let done = self.edit(why, |c| verbs::delete_target_group(c, &name));
                let _ = reply.send(done.await);
            }
            Command::Reload(reply) => {
                let _ = reply.send(self.reload().await);
            }
            Command::Host(reply) => {
                let _ = reply.send(Ok(self.announcer.report(&self.config)));
            }
            Command::DrainHost(reply) => {
                let _ = reply.send(self.set_drained(true).await);
            }
            Command::ResumeHost(reply) => {
                let _ = reply.send(self.set_drained(false).await);
            }
        }
    }

    /// Runs `edit` on a copy of the running config and makes it the running
    /// one if valid.
    async fn edit(
        &mut self,
        why: String,
        edit: impl FnOnce(&mut Config) -> Result<(), ControlError>,
    ) -> Result<ChangeReport, ControlError> {
        let mut new = self.config.clone();
        edit(&mut new)?;
        if new == self.config {
            return Ok(ChangeReport {
                message: format!("{why}: no changes"),
            });
        }
        self.replace(new, &why).await
    }
}

/// Refuses a change that removes a listener or target group with deletion
/// protection on.
fn protected_removals(old: &Config, new: &Config) -> Result<(), ControlError> {
    for l in old.listeners.iter().filter(|l| l.deletion_protection) {
        if !new.listeners.iter().any(|n| n.name == l.name) {
            return Err(ControlError::Conflict(format!(
                "listener {:?} has deletion protection on; turn it off before removing the listener",
                l.name
            )));
        }
    }
    for g in old.target_groups.iter().filter(|g| g.deletion_protection) {
        if new.target_group(&g.name).is_none() {
            return Err(ControlError::Conflict(format!(
                "target group {:?} has deletion protection on; turn it off before removing the group",
                g.name
            )));
        }
    }
    Ok(())
}

/// `[daemon]` settings a reload cannot change in place.
pub fn daemon_change(old: &Config, new: &Config) -> Option<&'static str> {
    let (a, b) = (&old.daemon, &new.daemon);
    if a.interfaces != b.interfaces {
        Some("interfaces")
    } else if a.tc_interfaces != b.tc_interfaces {
        Some("tc_interfaces")
    } else if a.pin_dir != b.pin_dir {
        Some("pin_dir")
    } else if a.maglev_table_size != b.maglev_table_size {
        Some("maglev_table_size")
    } else if a.flow_capacity != b.flow_capacity {
        Some("flow_capacity")
    } else if a.max_vips != b.max_vips {
        Some("max_vips")
    } else if a.dataplane != b.dataplane {
        // Who serves tcp and udp listeners is settled at start (the XDP
        // program loaded or not); a new value would be validated against
        // a data path that is not the one running.
        Some("dataplane")
    } else if a.xdp_mode != b.xdp_mode {
        Some("xdp_mode")
    } else if a.worker_threads != b.worker_threads {
        Some("worker_threads")
    } else if a.reply_interface_check != b.reply_interface_check {
        // Written into the data path's settings when it loads.
        Some("reply_interface_check")
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
