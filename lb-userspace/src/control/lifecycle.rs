//! Target lifecycle: what the control plane knows about each target of each
//! group beyond the config — its health, whether it is draining after
//! deregistration, and when its slow start began — and the decision that
//! follows from it ([`Lifecycle::plan`]): which targets take new flows, with
//! what weight, and which keep or lose their existing flows.
//!
//! The rules, as in ELB:
//! * a target is `initial` until its first health check decides; targets
//!   the daemon started with get new flows meanwhile (a restart must not
//!   move traffic), targets registered later get none while the group has a
//!   healthy target;
//! * when no target of a group is healthy, the group fails open: every
//!   registered target with a weight gets new flows;
//! * with `cross_zone = false` and `daemon.zone` set, new flows go to healthy
//!   targets of the host's zone (targets without a zone count as local), and
//!   to every zone only when the host's has none;
//! * a deregistered target drains for `deregistration_delay`: no new flows,
//!   existing flows continue, then it is removed and its flows move;
//! * an unhealthy target's flows move on their next packet
//!   (`unhealthy_connection_termination = true`) or stay;
//! * slow start: a target registered after start (also one registered again
//!   while it drains), or recovering from unhealthy, while another target of
//!   the group is healthy, ramps its share linearly over `slow_start`
//!   seconds.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use lb_common::TargetState;

use super::command::{TargetHealthReport, TargetHealthState};
use crate::{
    config::{Config, TargetGroup},
    routable::{Routable, RoutableTarget},
    state::{Plan, PlannedTarget},
};

/// Table weights are configured weights times this, so that a slow-start
/// ramp moves in 1% steps.
pub const WEIGHT_SCALE: u32 = 100;

/// A target's health as the checks last decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHealth {
    /// No verdict yet.
    Initial,
    Healthy,
    Unhealthy {
        /// ELB reason code (`Target.Timeout`, …).
        reason: String,
        description: String,
    },
}

impl TargetHealth {
    /// ELB's state name: `initial`, `healthy`, `unhealthy`.
    pub const fn name(&self) -> &'static str {
        match self {
            TargetHealth::Initial => "initial",
            TargetHealth::Healthy => "healthy",
            TargetHealth::Unhealthy { .. } => "unhealthy",
        }
    }

    /// The reason code of an unhealthy verdict.
    pub fn reason(&self) -> Option<&str> {
        match self {
            TargetHealth::Unhealthy { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// One (group, target) pair.
#[derive(Debug, Clone)]
struct Record {
    weight: u32,
    zone: Option<String>,
    health: TargetHealth,
    /// Deregistered: draining until then.
    draining_until: Option<Instant>,
    /// Slow start began then.
    ramp_from: Option<Instant>,
    /// Registered after the daemon started (only those enter slow start on
    /// their first healthy verdict).
    late: bool,
}

type Key = (String, SocketAddr);

/// Every target the control plane tracks. Cloned by the control loop
/// before a change, to put back if the change is refused.
#[derive(Debug, Default, Clone)]
pub struct Lifecycle {
    records: BTreeMap<Key, Record>,
    /// `sync` has run once: later registrations are "late".
    started: bool,
}

/// What the health-check settings of a group say, as far as the lifecycle
/// cares.
pub trait Checks {
    /// Whether health checks run for `group` (otherwise its targets are
    /// `unavailable` and treated as healthy).
    fn enabled(&self, group: &TargetGroup) -> bool;
}

impl Lifecycle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Brings the records in step with the running config: new targets
    /// start `initial`, weights and zones follow the config, targets that
    /// left a group that still exists drain (or go at once when its delay is
    /// 0), and targets of removed groups go at once. Returns the targets
    /// removed now, whose flows the caller purges.
    pub fn sync(&mut self, config: &Config, now: Instant) -> Vec<Key> {
        let mut configured = BTreeMap::new();
        for g in &config.target_groups {
            for t in &g.targets {
                configured.insert((g.name.clone(), g.endpoint(t)), t);
            }
        }
        let late = self.started;
        let fresh = || Record {
            weight: 0,
            zone: None,
            health: TargetHealth::Initial,
            draining_until: None,
            ramp_from: None,
            late,
        };
        for (key, t) in &configured {
            let r = self.records.entry(key.clone()).or_insert_with(fresh);
            // Registered again while draining: a registration like any
            // other (the drain ends, initial health checks, then slow
            // start); its established flows carry on meanwhile. Its old
            // health says nothing: it was not checked while it drained.
            if r.draining_until.take().is_some() {
                r.health = TargetHealth::Initial;
                r.ramp_from = None;
                r.late = true;
            }
            r.weight = t.weight;
            r.zone = t.zone.clone();
        }
        let mut removed = Vec::new();
        self.records.retain(|key, r| {
            if configured.contains_key(key) {
                return true;
            }
            let delay = config
                .target_group(&key.0)
                .map_or(0, |g| g.deregistration_delay);
            if delay == 0 {
                removed.push(key.clone());
                return false;
            }
            r.draining_until
                .get_or_insert(now + Duration::from_secs(delay.into()));
            true
        });
        self.started = true;
        removed.extend(self.expire(now));
        removed
    }

    /// Drops targets whose deregistration delay has ended; returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<Key> {
        let mut gone = Vec::new();
        self.records.retain(|key, r| {
            let over = r.draining_until.is_some_and(|t| t <= now);
            if over {
                gone.push(key.clone());
            }
            !over
        });
        gone
    }

    /// Records a health verdict; returns whether the target's health changed.
    pub fn set_health(
        &mut self,
        group: &str,
        target: SocketAddr,
        health: TargetHealth,
        now: Instant,
    ) -> bool {
        let others_healthy = self
            .records
            .iter()
            .any(|((g, ep), r)| g == group && *ep != target && r.health == TargetHealth::Healthy);
        let Some(r) = self.records.get_mut(&(group.to_owned(), target)) else {
            return false;
        };
        if r.health == health {
            return false;
        }
        let recovering = matches!(r.health, TargetHealth::Unhealthy { .. })
            || (r.health == TargetHealth::Initial && r.late);
        if health == TargetHealth::Healthy && recovering && others_healthy {
            r.ramp_from = Some(now);
        } else if health != TargetHealth::Healthy {
            r.ramp_from = None;
        }
        r.health = health;
        true
    }

    /// The earliest time [`plan`](Self::plan) would answer differently
    /// without any new event: the end of a drain, or the next whole second
    /// of a slow-start ramp (counted from its start). Always an absolute
    /// time: the daemon asks again after every event, and an answer such as
    /// "a second from now" would let a steady flow of health results and
    /// API calls push a ramp's steps back indefinitely, leaving the maps
    /// behind the weights the API reports.
    pub fn next_change(&self, config: &Config, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for ((group, _), r) in &self.records {
            if let Some(t) = r.draining_until {
                consider(t);
            }
            if let (Some(_), Some(from)) = (self.ramp(config, group, r, now), r.ramp_from) {
                let elapsed = now.saturating_duration_since(from);
                consider(from + Duration::from_secs(elapsed.as_secs() + 1));
            }
        }
        next
    }

    /// Slow-start fraction in 1/WEIGHT_SCALE units while ramping.
    fn ramp(&self, config: &Config, group: &str, r: &Record, now: Instant) -> Option<u32> {
        let from = r.ramp_from?;
        let secs = config.target_group(group)?.slow_start;
        if secs == 0 {
            return None;
        }
        let total = Duration::from_secs(secs.into());
        let elapsed = now.saturating_duration_since(from);
        if elapsed >= total {
            return None;
        }
        let step = (elapsed.as_secs_f64() / total.as_secs_f64() * f64::from(WEIGHT_SCALE)) as u32;
        Some(step.max(1))
    }

    /// The decision for every group of `config`: the XDP plan and the
    /// userspace view.
    pub fn plan(&self, config: &Config, checks: &dyn Checks, now: Instant) -> (Plan, Routable) {
        let mut plan = Plan::new();
        let mut routable = Routable::default();
        for g in &config.target_groups {
            let (planned, pool) = self.plan_group(config, g, checks, now);
            let keep = planned
                .iter()
                .filter(|p| p.state != TargetState::Down)
                .map(|p| p.endpoint)
                .collect();
            plan.insert(g.name.clone(), planned);
            routable.groups.insert(g.name.clone(), pool);
            routable.keep_flows.insert(g.name.clone(), keep);
        }
        (plan, routable)
    }

    fn group_records<'a>(
        &'a self,
        group: &'a str,
    ) -> impl Iterator<Item = (SocketAddr, &'a Record)> {
        self.records
            .range((group.to_owned(), SocketAddr::from(([0, 0, 0, 0], 0)))..)
            .take_while(move |((g, _), _)| g == group)
            .map(|((_, ep), r)| (*ep, r))
    }

    /// Whether the target may get new flows as far as health goes. Targets
    /// the daemon started with count as healthy until their first checks
    /// say otherwise, so a daemon restart never pulls traffic off them;
    /// targets registered later wait for their first successful check.
    fn is_healthy(r: &Record, checks_on: bool) -> bool {
        !checks_on
            || r.health == TargetHealth::Healthy
            || (r.health == TargetHealth::Initial && !r.late)
    }

    /// Targets that get new flows, before weights.
    fn pool(&self, config: &Config, g: &TargetGroup, checks_on: bool) -> Vec<SocketAddr> {
        let candidates: Vec<(SocketAddr, &Record)> = self
            .group_records(&g.name)
            .filter(|(_, r)| r.draining_until.is_none() && r.weight > 0)
            .collect();
        let healthy: Vec<(SocketAddr, &Record)> = candidates
            .iter()
            .copied()
            .filter(|(_, r)| Self::is_healthy(r, checks_on))
            .collect();
        let local = |r: &Record| match (&config.daemon.zone, &r.zone) {
            (Some(host), Some(zone)) => host == zone,
            _ => true,
        };
        let zonal: Vec<SocketAddr> = healthy
            .iter()
            .filter(|(_, r)| g.cross_zone || local(r))
            .map(|(ep, _)| *ep)
            .collect();
        if !zonal.is_empty() {
            zonal
        } else if !healthy.is_empty() {
            // Zonal fail-over.
            healthy.iter().map(|(ep, _)| *ep).collect()
        } else {
            // Fail open.
            candidates.iter().map(|(ep, _)| *ep).collect()
        }
    }

    fn plan_group(
        &self,
        config: &Config,
        g: &TargetGroup,
        checks: &dyn Checks,
        now: Instant,
    ) -> (Vec<PlannedTarget>, Vec<RoutableTarget>) {
        let checks_on = checks.enabled(g);
        let pool = self.pool(config, g, checks_on);
        let failing_open = pool.iter().any(|ep| {
            self.records
                .get(&(g.name.clone(), *ep))
                .is_some_and(|r| !Self::is_healthy(r, checks_on))
        });
        let mut planned = Vec::new();
        let mut routable = Vec::new();
        for (ep, r) in self.group_records(&g.name) {
            let in_pool = pool.contains(&ep);
            let weight = if in_pool {
                let ramp = self.ramp(config, &g.name, r, now).unwrap_or(WEIGHT_SCALE);
                (r.weight * ramp).max(1)
            } else {
                0
            };
            let state = if r.draining_until.is_some() {
                TargetState::Draining
            } else if in_pool
                || failing_open
                || Self::is_healthy(r, checks_on)
                || r.health == TargetHealth::Initial
            {
                TargetState::Active
            } else if g.unhealthy_connection_termination {
                TargetState::Down
            } else {
                TargetState::Draining
            };
            planned.push(PlannedTarget {
                endpoint: ep,
                state,
                weight,
            });
            if weight > 0 {
                routable.push(RoutableTarget {
                    endpoint: ep,
                    weight,
                });
            }
        }
        (planned, routable)
    }

    /// ELB-style health of every target of `group`, including draining ones.
    pub fn reports(
        &self,
        config: &Config,
        group: &TargetGroup,
        checks: &dyn Checks,
        now: Instant,
    ) -> Vec<TargetHealthReport> {
        let checks_on = checks.enabled(group);
        let (planned, _) = self.plan_group(config, group, checks, now);
        let used = config
            .listeners
            .iter()
            .any(|l| l.referenced_groups().contains(&group.name.as_str()));
        self.group_records(&group.name)
            .zip(planned)
            .map(|((ep, r), p)| {
                let (state, reason, description) = describe(r, used, checks_on, now);
                let description = match self.ramp(config, &group.name, r, now) {
                    Some(step) if p.weight > 0 => format!("{description}; slow start at {step}%"),
                    _ => description,
                };
                TargetHealthReport {
                    target: ep,
                    zone: r.zone.clone(),
                    weight: r.weight,
                    effective_weight: p.weight,
                    state,
                    reason,
                    description,
                }
            })
            .collect()
    }

    /// The health verdict of one target, if it is registered.
    pub fn health(&self, group: &str, target: SocketAddr) -> Option<&TargetHealth> {
        self.records
            .get(&(group.to_owned(), target))
            .map(|r| &r.health)
    }

    /// (healthy, unhealthy, draining) counts of a group.
    pub fn counts(&self, group: &str) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for (_, r) in self.group_records(group) {
            if r.draining_until.is_some() {
                c.2 += 1;
            } else if r.health == TargetHealth::Healthy {
                c.0 += 1;
            } else if matches!(r.health, TargetHealth::Unhealthy { .. }) {
                c.1 += 1;
            }
        }
        c
    }
}

fn describe(
    r: &Record,
    used: bool,
    checks_on: bool,
    now: Instant,
) -> (TargetHealthState, Option<String>, String) {
    let s = |x: &str| Some(x.to_owned());
    if let Some(until) = r.draining_until {
        let left = until.saturating_duration_since(now).as_secs();
        return (
            TargetHealthState::Draining,
            s("Target.DeregistrationInProgress"),
            format!("Target deregistration is in progress ({left} s left)"),
        );
    }
    if !used {
        return (
            TargetHealthState::Unused,
            s("Target.NotInUse"),
            "Target group is not used by any listener".into(),
        );
    }
    if !checks_on {
        return (
            TargetHealthState::Unavailable,
            s("Target.HealthCheckDisabled"),
            "Health checks are disabled".into(),
        );
    }
    match &r.health {
        TargetHealth::Initial => (
            TargetHealthState::Initial,
            s("Elb.InitialHealthChecking"),
            "Initial health checks in progress".into(),
        ),
        TargetHealth::Healthy => (
            TargetHealthState::Healthy,
            None,
            "Health checks passed".into(),
        ),
        TargetHealth::Unhealthy {
            reason,
            description,
        } => (
            TargetHealthState::Unhealthy,
            Some(reason.clone()),
            description.clone(),
        ),
    }
}

#[cfg(test)]
mod tests;
