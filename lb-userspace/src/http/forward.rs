//! Forwarding one request to a target of a group: pick the target, lease a
//! pooled connection, rewrite the head as a proxy must, wait for the answer
//! within the group's response timeout, hand the connection back, and splice
//! upgraded (WebSocket) connections.
//!
//! Failures answer at once, never hang: no routable target → 503; connect
//! refused or the target broke the exchange → 502; no response head within
//! `response_timeout` → 504.
use std::{sync::Arc, time::Instant};

use ::http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header, uri::PathAndQuery};
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::{
    access_log::Entry,
    actions,
    body::ProxyBody,
    handler::ConnInfo,
    headers::{connection_has, strip_hop_by_hop},
    listener::{HttpListener, ListenerGroup},
    pool::{GroupPool, Lease, Outstanding},
};

/// What the caller keeps until the response body is done.
#[derive(Default)]
pub struct Exchange {
    /// Counts the request as outstanding on its target.
    pub outstanding: Option<Outstanding>,
    /// The connection, to give back when the body ends; `None` when it
    /// must not be reused.
    pub lease: Option<(Arc<GroupPool>, Lease)>,
}

impl Exchange {
    /// Ends the exchange: a connection whose response was read to its end
    /// goes back to the pool, any other is closed.
    pub fn finish(self, complete: bool) {
        if let (true, Some((pool, lease))) = (complete, self.lease) {
            pool.release(lease);
        }
    }
}

enum SendError {
    Connect(std::io::Error),
    Target(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connect: {e}"),
            SendError::Target(e) => write!(f, "exchange: {e}"),
        }
    }
}

pub async fn forward(
    l: &HttpListener,
    group: &str,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    started: Instant,
    entry: &mut Entry,
    exchange: &mut Exchange,
) -> Response<ProxyBody> {
    let Some(ListenerGroup { pool, series }) = l.groups.get(group) else {
        return actions::error(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let routable = conn.routable.get();
    let Some((target, outstanding)) = pool.pick(routable.targets(group)) else {
        return actions::error(StatusCode::SERVICE_UNAVAILABLE);
    };
    exchange.outstanding = Some(outstanding);
    entry.target = Some(target.addr);

    let upgrade = wants_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
    prepare(l, pool, conn, &mut req, upgrade.is_some());

    let sent_at = Instant::now();
    entry.request_processing = Some(sent_at - started);
    let sent = conn
        .deadlines
        .within(pool.settings.response_timeout, send(pool, &target, req))
        .await;
    let (lease, mut resp) = match sent {
        None => {
            debug!(target = %target.addr, "no response within {:?}", pool.settings.response_timeout);
            return actions::error(StatusCode::GATEWAY_TIMEOUT);
        }
        Some(Err(e)) => {
            debug!(target = %target.addr, "{e}");
            return actions::error(StatusCode::BAD_GATEWAY);
        }
        Some(Ok(r)) => r,
    };
    let took = sent_at.elapsed();
    entry.target_processing = Some(took);
    let status = resp.status();
    entry.target_status = Some(status.as_u16());
    series.record(status.as_u16(), took.as_secs_f64());

    let switched = status == StatusCode::SWITCHING_PROTOCOLS;
    if !switched && !connection_has(resp.headers(), "close") {
        exchange.lease = Some((Arc::clone(pool), lease));
    }
    if switched {
        match upgrade {
            Some(client_side) => {
                let target_side = hyper::upgrade::on(&mut resp);
                tokio::spawn(splice(client_side, target_side));
                entry.kind = if l.scheme() == "https" { "wss" } else { "ws" };
                let (parts, _) = resp.into_parts();
                return Response::from_parts(parts, ProxyBody::empty());
            }
            // A 101 nobody asked for cannot be relayed.
            None => return actions::error(StatusCode::BAD_GATEWAY),
        }
    }
    strip_hop_by_hop(resp.headers_mut());
    resp.map(ProxyBody::upstream)
}

/// Sends on a leased connection; a request a reused connection could not
/// even take (the target closed it while idle) is retried once on a fresh
/// one. Returns the lease for release.
async fn send(
    pool: &GroupPool,
    target: &Arc<super::pool::TargetConns>,
    req: Request<Incoming>,
) -> Result<(Lease, Response<Incoming>), SendError> {
    let mut lease = match pool.idle(target) {
        Some(lease) => lease,
        None => Box::pin(pool.fresh(target))
            .await
            .map_err(SendError::Connect)?,
    };
    if lease.sender.ready().await.is_err() {
        return Box::pin(send_fresh(pool, target, req)).await;
    }
    match lease.sender.try_send_request(req).await {
        Ok(resp) => Ok((lease, resp)),
        Err(mut e) => match (lease.reused, e.take_message()) {
            (true, Some(req)) => Box::pin(send_fresh(pool, target, req)).await,
            _ => Err(SendError::Target(e.into_error())),
        },
    }
}

/// The retry on a new connection. Boxed by its callers: it is the rare
/// path, and inline it would double the size of every request's future.
async fn send_fresh(
    pool: &GroupPool,
    target: &Arc<super::pool::TargetConns>,
    req: Request<Incoming>,
) -> Result<(Lease, Response<Incoming>), SendError> {
    let mut lease = pool.fresh(target).await.map_err(SendError::Connect)?;
    lease.sender.ready().await.map_err(SendError::Target)?;
    let resp = lease
        .sender
        .send_request(req)
        .await
        .map_err(SendError::Target)?;
    Ok((lease, resp))
}

/// An HTTP/1.1 `Connection: upgrade` request with an `Upgrade` protocol.
fn wants_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_has(req.headers(), "upgrade")
}

/// Makes the request what the target sees: HTTP/1.1, origin-form, a
/// `Host`, no hop-by-hop fields, `X-Forwarded-*` set; `Connection: close`
/// when the group keeps no connections; the upgrade fields when upgrading.
/// In place: the request is a few hundred bytes, and moving it in and out
/// showed in the profile as copies.
fn prepare(
    l: &HttpListener,
    pool: &GroupPool,
    conn: &ConnInfo,
    req: &mut Request<Incoming>,
    upgrade: bool,
) {
    let upgrade_proto = req.headers().get(header::UPGRADE).cloned();
    if !req.headers().contains_key(header::HOST) {
        // HTTP/2's :authority, or for HTTP/1.0 without Host the listener.
        let host = match req.uri().authority() {
            Some(a) => a.as_str().to_owned(),
            None => format!("{}:{}", bracketed(l.address), l.port),
        };
        if let Ok(v) = HeaderValue::try_from(host) {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    conn.forwarded.set(headers);
    match (upgrade, upgrade_proto) {
        (true, Some(proto)) => {
            headers.insert(header::UPGRADE, proto);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        _ if !pool.settings.pooling() => {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    // Origin-form; a request already in it keeps its `Uri` untouched.
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(pq);
    }
    *req.version_mut() = Version::HTTP_11;
}

fn bracketed(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}

/// Copies bytes both ways between the upgraded client and target
/// connections until either side closes.
async fn splice(client: OnUpgrade, target: OnUpgrade) {
    let (client, target) = match tokio::try_join!(client, target) {
        Ok(pair) => pair,
        Err(e) => {
            debug!("upgrade failed: {e}");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut target = TokioIo::new(target);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut target).await {
        debug!("upgraded connection ended: {e}");
    }
}
