//! The API's actions, named like ELB's API operations under the `lb:`
//! service prefix. Policies name them (with wildcards); the API server asks
//! for one per request.
use std::fmt;

/// One operation of the management API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    DescribeStatus,
    DescribeListeners,
    DescribeTargetGroups,
    DescribeTargetHealth,
    DescribeFlows,
    DescribeStats,
    DescribeConfig,
    RegisterTargets,
    DeregisterTargets,
    ModifyTargetWeight,
    ReloadConfig,
    DeleteListener,
    DeleteTargetGroup,
    ModifyListenerAttributes,
    ModifyTargetGroupAttributes,
    DescribeHost,
    DrainHost,
    ResumeHost,
}

impl Action {
    pub const ALL: [Action; 18] = [
        Action::DescribeStatus,
        Action::DescribeListeners,
        Action::DescribeTargetGroups,
        Action::DescribeTargetHealth,
        Action::DescribeFlows,
        Action::DescribeStats,
        Action::DescribeConfig,
        Action::RegisterTargets,
        Action::DeregisterTargets,
        Action::ModifyTargetWeight,
        Action::ReloadConfig,
        Action::DeleteListener,
        Action::DeleteTargetGroup,
        Action::ModifyListenerAttributes,
        Action::ModifyTargetGroupAttributes,
        Action::DescribeHost,
        Action::DrainHost,
        Action::ResumeHost,
    ];

    /// The name policies use, e.g. `lb:RegisterTargets`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::DescribeStatus => "lb:DescribeStatus",
            Action::DescribeListeners => "lb:DescribeListeners",
            Action::DescribeTargetGroups => "lb:DescribeTargetGroups",
            Action::DescribeTargetHealth => "lb:DescribeTargetHealth",
            Action::DescribeFlows => "lb:DescribeFlows",
            Action::DescribeStats => "lb:DescribeStats",
            Action::DescribeConfig => "lb:DescribeConfig",
            Action::RegisterTargets => "lb:RegisterTargets",
            Action::DeregisterTargets => "lb:DeregisterTargets",
            Action::ModifyTargetWeight => "lb:ModifyTargetWeight",
            Action::ReloadConfig => "lb:ReloadConfig",
            Action::DeleteListener => "lb:DeleteListener",
            Action::DeleteTargetGroup => "lb:DeleteTargetGroup",
            Action::ModifyListenerAttributes => "lb:ModifyListenerAttributes",
            Action::ModifyTargetGroupAttributes => "lb:ModifyTargetGroupAttributes",
            Action::DescribeHost => "lb:DescribeHost",
            Action::DrainHost => "lb:DrainHost",
            Action::ResumeHost => "lb:ResumeHost",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
