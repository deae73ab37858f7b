//! The API's router and handlers, built from the route table
//! ([`super::table::ROUTES`]), each route behind the access check.
use std::net::SocketAddr;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Path, Query, State, rejection::QueryRejection},
    middleware,
    routing::{MethodFilter, MethodRouter, on},
};
use serde::{Deserialize, Serialize};

use super::{
    access,
    body::{JsonBody, MAX_BODY_BYTES},
    error::ApiError,
    status_page,
    table::{ApiState, Op, ROUTES, Route},
};
use crate::control::command::{
    ChangeReport, FlowsReport, HostReport, ListenerAttributes, ListenerReport, StatsReport,
    StatusReport, TargetGroupAttributes, TargetGroupReport, TargetHealthReport, TargetSpec,
};

/// The router serving [`ROUTES`], each behind the access check; the
/// status page only if `status_page` (else `/status` is unknown: 404).
pub fn router(state: ApiState, status_page: bool) -> Router {
    let mut router = Router::new();
    for route in ROUTES.iter().filter(|r| status_page || !r.is_page()) {
        let check = middleware::from_fn_with_state((state.clone(), route), access::check);
        router = router.route(route.path, handler(route).route_layer(check));
    }
    router
        .fallback(|| async {
            ApiError::new(
                http::StatusCode::NOT_FOUND,
                "UnknownOperation",
                "no such route",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                http::StatusCode::METHOD_NOT_ALLOWED,
                "UnknownOperation",
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn handler(route: &Route) -> MethodRouter<ApiState> {
    let m = MethodFilter::try_from(route.method.clone()).expect("ROUTES use standard methods");
    match route.op {
        Op::Status => on(m, status),
        Op::Listeners => on(m, listeners),
        Op::ModifyListener => on(m, modify_listener),
        Op::DeleteListener => on(m, delete_listener),
        Op::TargetGroups => on(m, target_groups),
        Op::ModifyTargetGroup => on(m, modify_target_group),
        Op::DeleteTargetGroup => on(m, delete_target_group),
        Op::TargetHealth => on(m, target_health),
        Op::Register => on(m, register),
        Op::Deregister => on(m, deregister),
        Op::SetWeight => on(m, set_weight),
        Op::Flows => on(m, flows),
        Op::Stats => on(m, stats),
        Op::Reload => on(m, reload),
        Op::Host => on(m, host),
        Op::DrainHost => on(m, drain_host),
        Op::ResumeHost => on(m, resume_host),
        Op::StatusPage => on(m, status_page::page),
    }
}

// Request and response bodies, shared with the client.

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenersResponse {
    pub listeners: Vec<ListenerReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetGroupsResponse {
    pub target_groups: Vec<TargetGroupReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetHealthResponse {
    pub targets: Vec<TargetHealthReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub targets: Vec<TargetSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeregisterRequest {
    pub targets: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightRequest {
    pub weight: u32,
}

/// `GET /v1/flows?limit=N`: the sample size.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowsQuery {
    #[serde(default = "default_flow_limit")]
    pub limit: usize,
}

pub const DEFAULT_FLOW_LIMIT: usize = 20;
/// The sample is copied out of the connection table under the control
/// loop; keep it bounded.
pub const MAX_FLOW_LIMIT: usize = 10_000;

fn default_flow_limit() -> usize {
    DEFAULT_FLOW_LIMIT
}

type Reply<T> = Result<Json<T>, ApiError>;

async fn status(State(s): State<ApiState>) -> Reply<StatusReport> {
    Ok(Json(s.control.status().await?))
}

async fn listeners(State(s): State<ApiState>) -> Reply<ListenersResponse> {
    let listeners = s.control.listeners().await?;
    Ok(Json(ListenersResponse { listeners }))
}

async fn modify_listener(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    JsonBody(attributes): JsonBody<ListenerAttributes>,
) -> Reply<ChangeReport> {
    Ok(Json(s.control.modify_listener(name, attributes).await?))
}

async fn delete_listener(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Reply<ChangeReport> {
    Ok(Json(s.control.delete_listener(name).await?))
}

async fn target_groups(State(s): State<ApiState>) -> Reply<TargetGroupsResponse> {
    let target_groups = s.control.target_groups().await?;
    Ok(Json(TargetGroupsResponse { target_groups }))
}

async fn modify_target_group(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    JsonBody(attributes): JsonBody<TargetGroupAttributes>,
) -> Reply<ChangeReport> {
    Ok(Json(s.control.modify_target_group(name, attributes).await?))
}

async fn delete_target_group(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Reply<ChangeReport> {
    Ok(Json(s.control.delete_target_group(name).await?))
}

async fn target_health(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Reply<TargetHealthResponse> {
    let targets = s.control.target_health(name).await?;
    Ok(Json(TargetHealthResponse { targets }))
}

async fn register(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> Reply<ChangeReport> {
    if req.targets.is_empty() {
        return Err(ApiError::bad_request(
            "targets: at least one target is required",
        ));
    }
    Ok(Json(s.control.register(name, req.targets).await?))
}

async fn deregister(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<DeregisterRequest>,
) -> Reply<ChangeReport> {
    if req.targets.is_empty() {
        return Err(ApiError::bad_request(
            "targets: at least one target is required",
        ));
    }
    Ok(Json(s.control.deregister(name, req.targets).await?))
}

async fn set_weight(
    State(s): State<ApiState>,
    Path((name, target)): Path<(String, String)>,
    JsonBody(req): JsonBody<WeightRequest>,
) -> Reply<ChangeReport> {
    let target: SocketAddr = target.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "target {target:?} is not address:port (IPv6 as [addr]:port)"
        ))
    })?;
    Ok(Json(s.control.set_weight(name, target, req.weight).await?))
}

async fn flows(
    State(s): State<ApiState>,
    query: Result<Query<FlowsQuery>, QueryRejection>,
) -> Reply<FlowsReport> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if query.limit > MAX_FLOW_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit: {} is above the maximum of {MAX_FLOW_LIMIT}",
            query.limit
        )));
    }
    Ok(Json(s.control.flows(query.limit).await?))
}

async fn stats(State(s): State<ApiState>) -> Reply<StatsReport> {
    Ok(Json(s.control.stats().await?))
}

async fn reload(State(s): State<ApiState>) -> Reply<ChangeReport> {
    Ok(Json(s.control.reload().await?))
}

async fn host(State(s): State<ApiState>) -> Reply<HostReport> {
    Ok(Json(s.control.host().await?))
}

async fn drain_host(State(s): State<ApiState>) -> Reply<HostReport> {
    Ok(Json(s.control.drain_host().await?))
}

async fn resume_host(State(s): State<ApiState>) -> Reply<HostReport> {
    Ok(Json(s.control.resume_host().await?))
}
