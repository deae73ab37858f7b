//! `GET /status`: the read-only status page (`api.status_page`).
//!
//! The route's own action is `lb:DescribeStatus`; the page also shows what
//! the other describe actions show, so the handler asks for each of them
//! too (listeners, target groups, stats, and every group's target health)
//! and answers 403 naming the first one missing: a token sees on the page
//! only what it could read through the API.
//!
//! The page is rendered here, whole, on every request ([`super::status_html`]);
//! its few lines of script fetch the same URL again and swap the new
//! `<main>` in, so there is one renderer and one place that escapes.
use axum::{
    Extension,
    extract::State,
    response::{Html, IntoResponse, Response},
};
use http::{HeaderValue, header};

use super::{
    auth::{Action, Principal},
    error::ApiError,
    status_html,
    table::ApiState,
};
use crate::control::{
    ControlError,
    command::{
        ListenerReport, StatsReport, StatusReport, TargetGroupReport, TargetHealthReport,
        TransitionReport,
    },
};

/// Everything the page shows, read from the control loop for one request.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub status: StatusReport,
    pub listeners: Vec<ListenerReport>,
    /// Each group with its targets' health.
    pub groups: Vec<(TargetGroupReport, Vec<TargetHealthReport>)>,
    /// Packet counters; `None` without the XDP data path (it has none).
    pub stats: Option<StatsReport>,
    /// Newest first.
    pub transitions: Vec<TransitionReport>,
    /// Milliseconds since the Unix epoch when it was read (for "5 s ago").
    pub now_ms: u64,
}

/// The describe actions the page needs besides the route's own.
const ALSO: [(Action, &str); 3] = [
    (Action::DescribeListeners, "listener/*"),
    (Action::DescribeTargetGroups, "target-group/*"),
    (Action::DescribeStats, "*"),
];

/// The handler.
pub async fn page(
    State(s): State<ApiState>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, ApiError> {
    let snapshot = snapshot(&s, &principal).await?;
    let doc = status_html::render(&snapshot);
    let mut response = Html(doc.html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Only the page's own script and style run, whatever a name in the
    // config holds (everything printed is escaped as well).
    if let Ok(csp) = HeaderValue::from_str(&doc.content_security_policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    Ok(response)
}

/// Reads the page's data, checking that `principal` may read each part.
async fn snapshot(s: &ApiState, principal: &Principal) -> Result<Snapshot, ApiError> {
    let authz = s.authz.read().clone();
    let allow = |action: Action, resource: &str| {
        let decision = authz.authorize(principal, action, resource);
        match decision.refusal(principal, action, resource) {
            Some(refusal) => Err(ApiError::from(refusal)),
            None => Ok(()),
        }
    };
    for (action, resource) in ALSO {
        allow(action, resource)?;
    }
    let status = s.control.status().await?;
    let listeners = s.control.listeners().await?;
    let mut groups = Vec::new();
    for group in s.control.target_groups().await? {
        allow(
            Action::DescribeTargetHealth,
            &format!("target-group/{}", group.name),
        )?;
        // A group removed by a reload between the two questions is left
        // out, as if read a moment later.
        match s.control.target_health(group.name.clone()).await {
            Ok(targets) => groups.push((group, targets)),
            Err(ControlError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let stats = match s.control.stats().await {
        Ok(stats) => Some(stats),
        // No XDP data path: no packet counters to show.
        Err(ControlError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let transitions = s.control.transitions().await?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Ok(Snapshot {
        status,
        listeners,
        groups,
        stats,
        transitions,
        now_ms,
    })
}
