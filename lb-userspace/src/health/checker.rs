//! [`Checker`]: one tokio task per (target group, target), each probing on
//! its own phase within the interval and reporting threshold crossings.
use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::mpsc,
    task::AbortHandle,
    time::{Instant, MissedTickBehavior},
};

use super::{
    HealthMetrics, Reason, Status, Verdict,
    probe::{Outcome, Prober, Route},
    state::Tracker,
    tls,
};
use crate::config::{CheckAddress, Config, HealthCheck, TargetGroup};

/// One target of one group to check. A target registered in two groups is
/// two jobs (each group has its own check and its own verdict, as in ELB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeJob {
    pub group: String,
    /// Where the target receives traffic; the check's `port` may redirect
    /// the probe.
    pub endpoint: SocketAddr,
    pub check: HealthCheck,
    /// Where the probes go; encapsulated probes get their mark from the
    /// daemon's probe path before the job starts.
    pub route: Route,
}

/// Every target of every group with checks enabled, in config order. A
/// dsr group probing `vip` probes each target through the first VIP (in
/// listener order) of the target's family that serves the group; a target
/// that no such VIP reaches (the group is unused, or serves only the other
/// family) is probed at its own address: no client reaches it through a
/// VIP either.
pub fn jobs_from_config(config: &Config) -> Vec<ProbeJob> {
    let mut jobs = Vec::new();
    for g in &config.target_groups {
        let Some(check) = g.resolved_health_check() else {
            continue;
        };
        jobs.extend(g.targets.iter().map(|t| {
            let endpoint = g.endpoint(t);
            ProbeJob {
                group: g.name.clone(),
                endpoint,
                route: route(config, g, &check, endpoint),
                check: check.clone(),
            }
        }));
    }
    jobs
}

fn route(config: &Config, g: &TargetGroup, check: &HealthCheck, endpoint: SocketAddr) -> Route {
    if check.address != CheckAddress::Vip {
        return Route::Direct;
    }
    let vip = config
        .listeners
        .iter()
        .filter(|l| l.referenced_groups().contains(&g.name.as_str()))
        .map(|l| l.address)
        .find(|a| a.is_ipv4() == endpoint.is_ipv4());
    match vip {
        Some(vip) => Route::Encapsulated { vip, mark: None },
        None => Route::Direct,
    }
}

/// A threshold crossing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    pub group: String,
    pub endpoint: SocketAddr,
    pub health: Verdict,
    /// ELB's reason code; `None` for healthy targets (ELB reports none).
    pub reason: Option<Reason>,
    /// What the deciding probe found, e.g. `Health checks failed with these
    /// codes: [503]`.
    pub description: String,
}

/// What [`Checker::apply`] did, by job count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplySummary {
    pub started: usize,
    /// Jobs whose check changed; they keep their health but count anew.
    pub restarted: usize,
    pub stopped: usize,
    pub kept: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("building the TLS client of HTTPS health checks")]
    Tls(#[source] rustls::Error),
}

type JobKey = (String, SocketAddr);

struct Running {
    check: HealthCheck,
    route: Route,
    status: Arc<AtomicU8>,
    task: AbortHandle,
}

/// What every job task shares.
struct Shared {
    prober: Prober,
    events: mpsc::UnboundedSender<HealthEvent>,
    metrics: HealthMetrics,
}

/// Runs the probe jobs. Dropping it stops every job.
pub struct Checker {
    jobs: HashMap<JobKey, Running>,
    shared: Arc<Shared>,
}

impl Checker {
    /// A checker with no jobs, and the receiver of its crossings. The
    /// channel is unbounded so a slow consumer never delays probes; there is
    /// at most one event per job per `threshold * interval`. Dropping the
    /// receiver stops each job at its next crossing.
    pub fn new(
        metrics: HealthMetrics,
    ) -> Result<(Checker, mpsc::UnboundedReceiver<HealthEvent>), HealthError> {
        let tls = tls::client_config().map_err(HealthError::Tls)?;
        let (events, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            prober: Prober::new(tls),
            events,
            metrics,
        });
        let checker = Checker {
            jobs: HashMap::new(),
            shared,
        };
        Ok((checker, rx))
    }

    /// Makes `jobs` the running set: starts new jobs (in `Initial`), stops
    /// jobs not listed, restarts jobs whose check changed (keeping their
    /// health, counting anew) and leaves unchanged jobs and their counters
    /// alone. Must be called inside a tokio runtime.
    pub fn apply(&mut self, jobs: Vec<ProbeJob>) -> ApplySummary {
        let mut summary = ApplySummary::default();
        let mut next = HashMap::with_capacity(jobs.len());
        for job in jobs {
            let key = (job.group, job.endpoint);
            let running = match self.jobs.remove(&key) {
                Some(old) if old.check == job.check && old.route == job.route => {
                    summary.kept += 1;
                    old
                }
                Some(old) => {
                    old.task.abort();
                    summary.restarted += 1;
                    let status = load(&old.status);
                    self.spawn(&key, job.check, job.route, status)
                }
                None => {
                    summary.started += 1;
                    self.spawn(&key, job.check, job.route, Status::Initial)
                }
            };
            // A key listed twice: the last one wins.
            if let Some(dup) = next.insert(key, running) {
                dup.task.abort();
            }
        }
        for (_, old) in self.jobs.drain() {
            old.task.abort();
            summary.stopped += 1;
        }
        self.jobs = next;
        summary
    }

    /// Where a job stands; `None` when there is no such job.
    pub fn status(&self, group: &str, endpoint: SocketAddr) -> Option<Status> {
        self.jobs
            .get(&(group.to_owned(), endpoint))
            .map(|r| load(&r.status))
    }

    /// Number of running jobs.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    fn spawn(&self, key: &JobKey, check: HealthCheck, route: Route, status: Status) -> Running {
        let cell = Arc::new(AtomicU8::new(status as u8));
        let job = Job {
            shared: self.shared.clone(),
            group: key.0.clone(),
            endpoint: key.1,
            tracker: Tracker::new(status, check.healthy_threshold, check.unhealthy_threshold),
            status: cell.clone(),
            check: check.clone(),
            route,
        };
        let task = tokio::spawn(job.run()).abort_handle();
        Running {
            check,
            route,
            status: cell,
            task,
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        for running in self.jobs.values() {
            running.task.abort();
        }
    }
}

fn load(cell: &AtomicU8) -> Status {
    match cell.load(Ordering::Relaxed) {
        x if x == Status::Healthy as u8 => Status::Healthy,
        x if x == Status::Unhealthy as u8 => Status::Unhealthy,
        _ => Status::Initial,
    }
}

/// Where in the interval a job probes: a hash of its key, so 10,000 targets
/// added at once spread evenly and a job keeps its slot across restarts.
fn phase(group: &str, endpoint: SocketAddr, interval: Duration) -> Duration {
    let mut h = DefaultHasher::new();
    (group, endpoint).hash(&mut h);
    let nanos = interval.as_nanos().max(1);
    Duration::from_nanos((u128::from(h.finish()) % nanos) as u64)
}

/// One job's task.
struct Job {
    shared: Arc<Shared>,
    group: String,
    endpoint: SocketAddr,
    check: HealthCheck,
    route: Route,
    tracker: Tracker,
    status: Arc<AtomicU8>,
}

impl Job {
    async fn run(mut self) {
        // The first probe comes within a second (spread the same way), so a
        // new target — or every target when the daemon starts — is decided
        // quickly; later probes keep their place in the interval.
        let first = phase(
            &self.group,
            self.endpoint,
            self.check.interval.min(Duration::from_secs(1)),
        );
        tokio::time::sleep(first).await;
        if !self.probe().await {
            return;
        }
        let start = Instant::now() + phase(&self.group, self.endpoint, self.check.interval);
        let mut ticks = tokio::time::interval_at(start, self.check.interval);
        // A probe never outlasts the interval (timeout <= interval), but a
        // stalled runtime must not cause a burst of catch-up probes.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if !self.probe().await {
                return;
            }
        }
    }

    /// One probe, recorded; false when nobody listens any more.
    async fn probe(&mut self) -> bool {
        let started = Instant::now();
        let outcome = self
            .shared
            .prober
            .probe(&self.check, self.endpoint, self.route)
            .await;
        self.shared
            .metrics
            .observe(&self.group, outcome.result_label(), started.elapsed());
        self.record(outcome)
    }

    /// Counts the outcome; on a crossing logs and reports it. False when
    /// nobody listens any more.
    fn record(&mut self, outcome: Outcome) -> bool {
        let from = self.tracker.status();
        let Some(health) = self.tracker.record(outcome.is_success()) else {
            return true;
        };
        self.status
            .store(Status::from(health) as u8, Ordering::Relaxed);
        let event = HealthEvent {
            group: self.group.clone(),
            endpoint: self.endpoint,
            health,
            reason: outcome.reason(),
            description: outcome.description(),
        };
        tracing::info!(
            target_group = %self.group,
            target = %self.endpoint,
            from = from.as_str(),
            to = health.as_str(),
            reason = event.reason.map_or("", Reason::as_str),
            description = %event.description,
            "target health changed"
        );
        self.shared.events.send(event).is_ok()
    }
}
