//! Health checks: which targets are alive.
//!
//! The control loop hands the [`Checker`] the set of [`ProbeJob`]s (one per
//! target group and target, usually [`jobs_from_config`]) with
//! [`Checker::apply`] on start and on every change; the checker runs one tokio
//! task per job and sends a [`HealthEvent`] the moment a target crosses a
//! threshold. Probes ([`probe`]) are TCP connects or HTTP(S) `GET`s; the
//! state machine ([`state::Tracker`]) counts consecutive outcomes as ELB does.
//! Every probe's latency lands in `lb_health_check_duration_seconds`
//! ([`HealthMetrics`]).
mod checker;
mod metrics;
pub mod probe;
mod reason;
pub mod state;
mod tls;

pub use checker::{ApplySummary, Checker, HealthError, HealthEvent, ProbeJob, jobs_from_config};
pub use metrics::{DURATION as DURATION_METRIC, HealthMetrics};
pub use probe::Route;
pub use reason::{Reason, Verdict};
pub use state::Status;

#[cfg(test)]
mod tests;
