//! What the management API (and anything else outside the control loop) can
//! ask the control loop, and the reports it answers with. The loop owns the
//! running config, the target lifecycle and the data-path maps; everything
//! else talks to it through a [`ControlHandle`], so every change is applied
//! in one place and in order.
//!
//! Reports are plain serde types: the API sends them as JSON and the CLI
//! reads them back into the same types.
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::error::ControlError;
pub use crate::announce::HostReport;

/// One target to register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub address: std::net::IpAddr,
    /// Defaults to the group's port.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub zone: Option<String>,
}

/// Target-group attributes that can be changed at run time; `None` keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetGroupAttributes {
    #[serde(default)]
    pub deletion_protection: Option<bool>,
    #[serde(default)]
    pub deregistration_delay: Option<u32>,
    #[serde(default)]
    pub slow_start: Option<u32>,
    #[serde(default)]
    pub cross_zone: Option<bool>,
    #[serde(default)]
    pub unhealthy_connection_termination: Option<bool>,
}

/// Listener attributes that can be changed at run time; `None` keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerAttributes {
    #[serde(default)]
    pub deletion_protection: Option<bool>,
}

/// ELB's target health states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetHealthState {
    /// Registered, not yet decided by health checks.
    Initial,
    Healthy,
    Unhealthy,
    /// Deregistered, existing flows finish until the delay ends.
    Draining,
    /// Not used by any listener.
    Unused,
    /// Health checks are disabled for the group.
    Unavailable,
}

impl TargetHealthState {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Draining => "draining",
            Self::Unused => "unused",
            Self::Unavailable => "unavailable",
        }
    }
}

/// One target of a group, with its health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetHealthReport {
    pub target: SocketAddr,
    pub zone: Option<String>,
    /// Configured weight.
    pub weight: u32,
    /// Share of new flows right now, after health, draining, zones and slow
    /// start (0: none).
    pub effective_weight: u32,
    pub state: TargetHealthState,
    /// ELB reason code, e.g. `Target.FailedHealthChecks`; none when healthy.
    pub reason: Option<String>,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerReport {
    pub name: String,
    pub protocol: String,
    pub address: std::net::IpAddr,
    pub port: u16,
    /// Every target group the listener may send to (for http/https: its
    /// rules' and default action's).
    pub target_groups: Vec<String>,
    pub deletion_protection: bool,
    /// `xdp` or `userspace`.
    pub served_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetGroupReport {
    pub name: String,
    pub protocol: String,
    pub port: u16,
    pub healthy: usize,
    pub unhealthy: usize,
    pub draining: usize,
    pub targets: usize,
    pub deletion_protection: bool,
    pub deregistration_delay: u32,
    pub slow_start: u32,
    pub cross_zone: bool,
    pub unhealthy_connection_termination: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub config: String,
    /// `xdp` or `userspace`.
    pub dataplane: String,
    pub zone: Option<String>,
    pub listeners: usize,
    pub target_groups: usize,
    pub targets: usize,
    pub healthy: usize,
    pub unhealthy: usize,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// Outcome of the last reload, if any.
    pub last_reload: Option<String>,
    /// Whether the host is drained (`lb host drain`); `lb host` tells more.
    #[serde(default)]
    pub drained: bool,
    /// VIPs this host announces over BGP now (`[bgp]`).
    #[serde(default)]
    pub announced: Vec<std::net::IpAddr>,
}

/// One connection-table entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowReport {
    pub client: SocketAddr,
    pub vip: SocketAddr,
    pub protocol: String,
    pub target: Option<SocketAddr>,
    /// Where the flow stands: `syn`, `syn_ack`, `new`, `replied` (not
    /// confirmed yet) or `established`.
    pub state: String,
    /// Seconds since the flow's last packet (refreshed about once a second).
    pub idle_s: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowsReport {
    /// Slots of the connection table (XDP), or entries in the UDP relays'
    /// flow tables (userspace data path; TCP connections are not listed).
    pub entries: u64,
    /// Flows within their idle timeout.
    pub active: u64,
    pub sample: Vec<FlowReport>,
}

/// What a reload or a run-time change did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeReport {
    pub message: String,
}

/// Counters as `lb stats` prints them, for the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    pub listeners: Vec<CountersReport>,
    pub targets: Vec<CountersReport>,
    /// Data-path verdict counters by name (`drop_no_target`, …).
    pub datapath: Vec<(String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersReport {
    pub name: String,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub new_flows: u64,
}

/// One health transition of a target, as the status page lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionReport {
    /// When, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    pub target_group: String,
    pub target: SocketAddr,
    /// ELB state names: `initial`, `healthy`, `unhealthy`.
    pub from: String,
    pub to: String,
    /// ELB reason code of an unhealthy verdict.
    pub reason: Option<String>,
}

type Reply<T> = oneshot::Sender<Result<T, ControlError>>;

/// A request to the control loop with the channel for its answer.
#[derive(Debug)]
pub enum Command {
    Status(Reply<StatusReport>),
    Listeners(Reply<Vec<ListenerReport>>),
    TargetGroups(Reply<Vec<TargetGroupReport>>),
    TargetHealth {
        group: String,
        reply: Reply<Vec<TargetHealthReport>>,
    },
    Flows {
        limit: usize,
        reply: Reply<FlowsReport>,
    },
    Stats(Reply<StatsReport>),
    /// Recent health transitions, newest first (bounded).
    Transitions(Reply<Vec<TransitionReport>>),
    Register {
        group: String,
        targets: Vec<TargetSpec>,
        reply: Reply<ChangeReport>,
    },
    /// Deregistration starts the group's deregistration delay (draining).
    Deregister {
        group: String,
        targets: Vec<SocketAddr>,
        reply: Reply<ChangeReport>,
    },
    SetWeight {
        group: String,
        target: SocketAddr,
        weight: u32,
        reply: Reply<ChangeReport>,
    },
    ModifyListener {
        name: String,
        attributes: ListenerAttributes,
        reply: Reply<ChangeReport>,
    },
    ModifyTargetGroup {
        name: String,
        attributes: TargetGroupAttributes,
        reply: Reply<ChangeReport>,
    },
    DeleteListener {
        name: String,
        reply: Reply<ChangeReport>,
    },
    DeleteTargetGroup {
        name: String,
        reply: Reply<ChangeReport>,
    },
    /// Re-reads the config file.
    Reload(Reply<ChangeReport>),
    /// This host's announcements and drain state.
    Host(Reply<HostReport>),
    /// Withdraws this host's announcements until resumed (persisted).
    DrainHost(Reply<HostReport>),
    /// Announces again after a drain.
    ResumeHost(Reply<HostReport>),
}

/// The sending side, cheap to clone; one per API connection is fine.
#[derive(Debug, Clone)]
pub struct ControlHandle {
    tx: mpsc::Sender<Command>,
}

macro_rules! ask {
    ($self:ident, $variant:ident { $($field:ident),* }) => {{
        let (reply, rx) = oneshot::channel();
        $self.send(Command::$variant { $($field,)* reply }, rx).await
    }};
    ($self:ident, $variant:ident) => {{
        let (reply, rx) = oneshot::channel();
        $self.send(Command::$variant(reply), rx).await
    }};
}

impl ControlHandle {
    /// A handle and the receiving end the control loop reads.
    pub fn channel(depth: usize) -> (ControlHandle, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(depth);
        (ControlHandle { tx }, rx)
    }

    async fn send<T>(
        &self,
        cmd: Command,
        rx: oneshot::Receiver<Result<T, ControlError>>,
    ) -> Result<T, ControlError> {
        let gone = || ControlError::Failed("the control loop is not running".into());
        self.tx.send(cmd).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    pub async fn status(&self) -> Result<StatusReport, ControlError> {
        ask!(self, Status)
    }
    pub async fn listeners(&self) -> Result<Vec<ListenerReport>, ControlError> {
        ask!(self, Listeners)
    }
    pub async fn target_groups(&self) -> Result<Vec<TargetGroupReport>, ControlError> {
        ask!(self, TargetGroups)
    }
    pub async fn target_health(
        &self,
        group: String,
    ) -> Result<Vec<TargetHealthReport>, ControlError> {
        ask!(self, TargetHealth { group })
    }
    pub async fn flows(&self, limit: usize) -> Result<FlowsReport, ControlError> {
        ask!(self, Flows { limit })
    }
    pub async fn stats(&self) -> Result<StatsReport, ControlError> {
        ask!(self, Stats)
    }
    pub async fn transitions(&self) -> Result<Vec<TransitionReport>, ControlError> {
        ask!(self, Transitions)
    }
    pub async fn register(
        &self,
        group: String,
        targets: Vec<TargetSpec>,
    ) -> Result<ChangeReport, ControlError> {
        ask!(self, Register { group, targets })
    }
    pub async fn deregister(
        &self,
        group: String,
        targets: Vec<SocketAddr>,
    ) -> Result<ChangeReport, ControlError> {
        ask!(self, Deregister { group, targets })
    }
    pub async fn set_weight(
        &self,
        group: String,
        target: SocketAddr,
        weight: u32,
    ) -> Result<ChangeReport, ControlError> {
        ask!(
            self,
            SetWeight {
                group,
                target,
                weight
            }
        )
    }
    pub async fn modify_listener(
        &self,
        name: String,
        attributes: ListenerAttributes,
    ) -> Result<ChangeReport, ControlError> {
        ask!(self, ModifyListener { name, attributes })
    }
    pub async fn modify_target_group(
        &self,
        name: String,
        attributes: TargetGroupAttributes,
    ) -> Result<ChangeReport, ControlError> {
        ask!(self, ModifyTargetGroup { name, attributes })
    }
    pub async fn delete_listener(&self, name: String) -> Result<ChangeReport, ControlError> {
        ask!(self, DeleteListener { name })
    }
    pub async fn delete_target_group(&self, name: String) -> Result<ChangeReport, ControlError> {
        ask!(self, DeleteTargetGroup { name })
    }
    pub async fn reload(&self) -> Result<ChangeReport, ControlError> {
        ask!(self, Reload)
    }
    pub async fn host(&self) -> Result<HostReport, ControlError> {
        ask!(self, Host)
    }
    pub async fn drain_host(&self) -> Result<HostReport, ControlError> {
        ask!(self, DrainHost)
    }
    pub async fn resume_host(&self) -> Result<HostReport, ControlError> {
        ask!(self, ResumeHost)
    }
}
