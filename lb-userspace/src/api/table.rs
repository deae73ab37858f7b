//! The API's routes. [`ROUTES`] is the one list of (method, path, IAM
//! action, IAM resource); the router ([`super::routes`]) is built from it,
//! the access check ([`super::access`]) reads it, and a test checks
//! docs/openapi.yaml against it, so the reference cannot drift.
//!
//! Resources are written as in the policies: `listener/{name}`,
//! `target-group/{name}`, with `{name}` filled from the path; routes that
//! concern the whole load balancer use `*`.
use std::sync::Arc;

use http::Method;
use parking_lot::RwLock;

use super::auth::{Action, Authorizer};
use crate::control::ControlHandle;

/// One route: what it is, and what a policy must allow to call it.
#[derive(Debug)]
pub struct Route {
    pub method: Method,
    /// axum and OpenAPI share the `{param}` syntax.
    pub path: &'static str,
    pub action: Action,
    pub resource: &'static str,
    pub(super) op: Op,
}

/// Which handler serves a route; `router` maps each to its function.
#[derive(Debug, Clone, Copy)]
pub(super) enum Op {
    Status,
    Listeners,
    ModifyListener,
    DeleteListener,
    TargetGroups,
    ModifyTargetGroup,
    DeleteTargetGroup,
    TargetHealth,
    Register,
    Deregister,
    SetWeight,
    Flows,
    Stats,
    Reload,
    Host,
    DrainHost,
    ResumeHost,
    StatusPage,
}

impl Route {
    /// The status page (`GET /status`, HTML): served only with
    /// `api.status_page`, and the one route that takes Basic credentials.
    pub fn is_page(&self) -> bool {
        matches!(self.op, Op::StatusPage)
    }
}

const fn route(
    method: Method,
    path: &'static str,
    action: Action,
    resource: &'static str,
    op: Op,
) -> Route {
    Route {
        method,
        path,
        action,
        resource,
        op,
    }
}

const LISTENER: &str = "listener/{name}";
const GROUP: &str = "target-group/{name}";

/// Every route the API serves.
#[rustfmt::skip]
pub static ROUTES: &[Route] = &[
    route(Method::GET,    "/v1/status",                                       Action::DescribeStatus,              "*",              Op::Status),
    route(Method::GET,    "/v1/listeners",                                    Action::DescribeListeners,           "listener/*",     Op::Listeners),
    route(Method::PATCH,  "/v1/listeners/{name}",                             Action::ModifyListenerAttributes,    LISTENER,         Op::ModifyListener),
    route(Method::DELETE, "/v1/listeners/{name}",                             Action::DeleteListener,              LISTENER,         Op::DeleteListener),
    route(Method::GET,    "/v1/target-groups",                                Action::DescribeTargetGroups,        "target-group/*", Op::TargetGroups),
    route(Method::PATCH,  "/v1/target-groups/{name}",                         Action::ModifyTargetGroupAttributes, GROUP,            Op::ModifyTargetGroup),
    route(Method::DELETE, "/v1/target-groups/{name}",                         Action::DeleteTargetGroup,           GROUP,            Op::DeleteTargetGroup),
    route(Method::GET,    "/v1/target-groups/{name}/targets",                 Action::DescribeTargetHealth,        GROUP,            Op::TargetHealth),
    route(Method::POST,   "/v1/target-groups/{name}/targets",                 Action::RegisterTargets,             GROUP,            Op::Register),
    route(Method::POST,   "/v1/target-groups/{name}/targets/deregister",      Action::DeregisterTargets,           GROUP,            Op::Deregister),
    route(Method::PUT,    "/v1/target-groups/{name}/targets/{target}/weight", Action::ModifyTargetWeight,          GROUP,            Op::SetWeight),
    route(Method::GET,    "/v1/flows",                                        Action::DescribeFlows,               "*",              Op::Flows),
    route(Method::GET,    "/v1/stats",                                        Action::DescribeStats,               "*",              Op::Stats),
    route(Method::POST,   "/v1/reload",                                       Action::ReloadConfig,                "*",              Op::Reload),
    route(Method::GET,    "/v1/host",                                         Action::DescribeHost,                "*",              Op::Host),
    route(Method::POST,   "/v1/host/drain",                                   Action::DrainHost,                   "*",              Op::DrainHost),
    route(Method::POST,   "/v1/host/resume",                                  Action::ResumeHost,                  "*",              Op::ResumeHost),
    route(Method::GET,    "/status",                                          Action::DescribeStatus,              "*",              Op::StatusPage),
];

/// What every handler and the access check share.
#[derive(Clone)]
pub struct ApiState {
    pub control: ControlHandle,
    /// Swapped on reload when tokens or policies change.
    pub authz: Arc<RwLock<Arc<Authorizer>>>,
}
