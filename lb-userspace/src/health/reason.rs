//! ELB's vocabulary for target health: the states and reason codes that
//! `DescribeTargetHealth` reports. The checker produces the `Target.*` codes
//! of failed probes and `Elb.InitialHealthChecking`; the control loop uses
//! the others for lifecycle states (registration, draining, unused, disabled).
use std::fmt;

use serde::{Serialize, Serializer};

/// The checker's verdict on a target, as threshold crossings report it
/// (the control loop keeps its own `lifecycle::TargetHealth`,
/// which adds `Initial` and the reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Healthy,
    Unhealthy,
}

impl Verdict {
    /// ELB's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// ELB's `TargetHealth.Reason` codes (those that apply to IP targets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// `initial`: the target is being registered.
    RegistrationInProgress,
    /// `initial`: registered, no check has passed or failed enough yet.
    InitialHealthChecking,
    /// `unhealthy`: an HTTP(S) check answered with a status the matcher
    /// does not accept.
    ResponseCodeMismatch,
    /// `unhealthy`: the check did not complete within its timeout.
    Timeout,
    /// `unhealthy`: the connection was refused or reset, or the TLS or HTTP
    /// exchange failed.
    FailedHealthChecks,
    /// `unhealthy`: the load balancer itself failed (the probe could not run).
    InternalError,
    /// `unused`: the target is not registered.
    NotRegistered,
    /// `unused`: no listener forwards to the target's group, or its zone is
    /// not served.
    NotInUse,
    /// `draining`: deregistered, existing flows continue until the delay ends.
    DeregistrationInProgress,
    /// `unavailable`: health checks are disabled for the group.
    HealthCheckDisabled,
    /// `unused`: the address cannot be used as a target.
    IpUnusable,
}

impl Reason {
    /// Every code, for documentation and API tests.
    pub const ALL: [Reason; 11] = [
        Reason::RegistrationInProgress,
        Reason::InitialHealthChecking,
        Reason::ResponseCodeMismatch,
        Reason::Timeout,
        Reason::FailedHealthChecks,
        Reason::InternalError,
        Reason::NotRegistered,
        Reason::NotInUse,
        Reason::DeregistrationInProgress,
        Reason::HealthCheckDisabled,
        Reason::IpUnusable,
    ];

    /// ELB's code, e.g. `Target.Timeout`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::RegistrationInProgress => "Elb.RegistrationInProgress",
            Reason::InitialHealthChecking => "Elb.InitialHealthChecking",
            Reason::ResponseCodeMismatch => "Target.ResponseCodeMismatch",
            Reason::Timeout => "Target.Timeout",
            Reason::FailedHealthChecks => "Target.FailedHealthChecks",
            Reason::InternalError => "Elb.InternalError",
            Reason::NotRegistered => "Target.NotRegistered",
            Reason::NotInUse => "Target.NotInUse",
            Reason::DeregistrationInProgress => "Target.DeregistrationInProgress",
            Reason::HealthCheckDisabled => "Target.HealthCheckDisabled",
            Reason::IpUnusable => "Target.IpUnusable",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Serialize for Verdict {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
