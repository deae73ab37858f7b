//! Forwarding one request to a target of a group: pick the target, lease a
//! pooled connection, rewrite the head as a proxy must, wait for the answer
//! within the group's response timeout, hand the connection back, and splice
//! upgraded (WebSocket) connections.
//!
//! Failures answer at once, never hang: no routable target → 503; connect
//! refused or the target broke the exchange → 502; no response head within
//! `response_timeout` → 504; the client's own body failed → 400. CONNECT
//! is refused (405): the listener does not tunnel.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use ::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version, header};
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use tokio::{io::AsyncWriteExt, sync::OwnedSemaphorePermit};
use tracing::debug;

use super::{
    access_log::Entry,
    actions,
    body::ProxyBody,
    conn_info::ConnInfo,
    headers::{connection_has, strip_hop_by_hop},
    idle::{Activity, InFlight},
    listener::{HttpListener, ListenerGroup},
    pool::{GroupPool, Lease, Outstanding, TargetConns},
    upstream::{self, BodySender, ExchangeError, Head, TargetBody, TargetConn},
};

/// What the caller keeps until the response body is done.
pub struct Exchange {
    /// Counts the request as in progress on its client connection, and
    /// tells how far it got (client idle timeout, response timeout).
    pub in_flight: InFlight,
    /// Counts the request as outstanding on its target.
    pub outstanding: Option<Outstanding>,
    /// HTTP/2: its share of the client connection's target connections.
    pub slot: Option<OwnedSemaphorePermit>,
}

impl Exchange {
    pub fn new(in_flight: InFlight) -> Self {
        Self {
            in_flight,
            outstanding: None,
            slot: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("exchange: {0}")]
    Target(ExchangeError),
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
    if req.method() == Method::CONNECT {
        return actions::error(StatusCode::METHOD_NOT_ALLOWED);
    }
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
    let slots = conn.target_slots(req.version(), l.http2_max_target_connections);
    let in_flight = &exchange.in_flight;
    let sent = conn
        .deadlines
        .within(pool.settings.response_timeout, in_flight, async {
            // A stream waits for one of its connection's slots within the
            // response timeout, as for its target.
            let slot = match slots {
                Some(s) => s.acquire_owned().await.ok(),
                None => None,
            };
            send(pool, &target, req, in_flight).await.map(|s| (slot, s))
        })
        .await;
    let (slot, (mut lease, head, rest)) = match sent {
        None => {
            debug!(target = %target.addr, "no response within {:?}", pool.settings.response_timeout);
            return actions::error(StatusCode::GATEWAY_TIMEOUT);
        }
        Some(Err(SendError::Target(ExchangeError::ClientBody(e)))) => {
            debug!("request body from the client: {e}");
            return actions::error(StatusCode::BAD_REQUEST);
        }
        Some(Err(e)) => {
            debug!(target = %target.addr, "{e}");
            return actions::error(StatusCode::BAD_GATEWAY);
        }
        Some(Ok(r)) => r,
    };
    exchange.slot = slot;
    let took = sent_at.elapsed();
    entry.target_processing = Some(took);
    let status = head.parts.status;
    entry.target_status = Some(status.as_u16());
    series.record(status.as_u16(), took.as_secs_f64());

    if status == StatusCode::SWITCHING_PROTOCOLS {
        // A 101 nobody asked for, or to another protocol than the
        // WebSocket asked for, cannot be relayed.
        let (Some(client_side), true) = (upgrade, names_websocket(&head.parts.headers)) else {
            return actions::error(StatusCode::BAD_GATEWAY);
        };
        let idle = (Arc::clone(&conn.activity), l.idle_timeout);
        tokio::spawn(splice(client_side, lease.conn, idle));
        entry.kind = if l.scheme() == "https" { "wss" } else { "ws" };
        return Response::from_parts(head.parts, ProxyBody::empty());
    }
    if let Some(rest) = rest {
        lease.conn = Box::new((*lease.conn).upload_apart(rest));
    }
    let body = TargetBody::new(Arc::clone(pool), lease, &head);
    let mut parts = head.parts;
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, ProxyBody::target(body))
}

/// What a request brings back: the connection (for its body to hand
/// back), the response head, and whatever of the request body the target
/// did not take before answering.
type Sent = (Lease, Head, Option<Box<BodySender>>);

/// Sends on a leased connection. An idempotent request that a reused
/// connection lost before any answer (the target closed it while idle,
/// crossing our request) is sent once more on a fresh one.
async fn send(
    pool: &GroupPool,
    target: &Arc<TargetConns>,
    req: Request<Incoming>,
    progress: &InFlight,
) -> Result<Sent, SendError> {
    let head_request = req.method() == Method::HEAD;
    let idempotent = upstream::is_idempotent(req.method());
    let (mut parts, body) = req.into_parts();
    let mut body = upstream::frame(&mut parts.headers, body);
    let had_body = body.is_some();
    let mut lease = match pool.idle(target) {
        Some(lease) => lease,
        None => Box::pin(pool.fresh(target))
            .await
            .map_err(SendError::Connect)?,
    };
    upstream::encode_head(&parts, &mut lease.conn.head);
    drop(parts);
    match lease.conn.exchange(&mut body, head_request, progress).await {
        Ok(head) => Ok((lease, head, body)),
        // Unless a byte of its body left (`None` now: none, or all sent).
        Err(ExchangeError::Closed(e))
            if lease.reused && idempotent && body.as_ref().map_or(!had_body, |b| b.untouched()) =>
        {
            debug!(target = %target.addr, "reused connection lost ({e}): sending again");
            progress.waiting_on_target();
            Box::pin(resend(
                pool,
                target,
                lease.conn,
                body,
                head_request,
                progress,
            ))
            .await
        }
        Err(e) => Err(SendError::Target(e)),
    }
}

/// The retry on a new connection, with the head already written out.
/// Boxed by its caller: it is the rare path, and inline it would double the
/// size of every request's future.
async fn resend(
    pool: &GroupPool,
    target: &Arc<TargetConns>,
    mut lost: Box<TargetConn>,
    mut body: Option<Box<BodySender>>,
    head_request: bool,
    progress: &InFlight,
) -> Result<Sent, SendError> {
    let mut lease = pool.fresh(target).await.map_err(SendError::Connect)?;
    std::mem::swap(&mut lease.conn.head, &mut lost.head);
    drop(lost);
    let head = lease
        .conn
        .exchange(&mut body, head_request, progress)
        .await
        .map_err(SendError::Target)?;
    Ok((lease, head, body))
}

/// An HTTP/1.1 WebSocket upgrade (`Connection: upgrade`, `Upgrade:
/// websocket`): the only protocol switched to, as ALB does. Any other
/// `Upgrade` (`h2c`, ...) would make the connection a tunnel past the
/// listener's rules and `X-Forwarded-For`: such requests go to the target
/// without their upgrade fields (hop-by-hop), as plain requests.
fn wants_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && names_websocket(req.headers())
        && connection_has(req.headers(), "upgrade")
}

/// Whether `Upgrade` lists `websocket` (any case).
fn names_websocket(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

/// Makes the request's fields what the target sees: a `Host` (the
/// listener's address for an HTTP/1.0 request without one; `host::settle`
/// set the others), no hop-by-hop fields, `X-Forwarded-*` set; `Connection:
/// close` when the group keeps no connections; the WebSocket upgrade
/// fields when upgrading.
/// (`upstream::encode_head` writes it as HTTP/1.1 in origin form.)
/// In place: the request is a few hundred bytes, and moving it in and out
/// showed in the profile as copies.
fn prepare(
    l: &HttpListener,
    pool: &GroupPool,
    conn: &ConnInfo,
    req: &mut Request<Incoming>,
    upgrade: bool,
) {
    if !req.headers().contains_key(header::HOST) {
        let host = format!("{}:{}", bracketed(l.address), l.port);
        if let Ok(v) = HeaderValue::try_from(host) {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    conn.forwarded.set(headers);
    if upgrade {
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if !pool.settings.pooling() {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

fn bracketed(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}

/// Copies bytes both ways between the upgraded client and target
/// connections until either side closes; what the target sent right after
/// its 101 goes first.
/// `idle`: the client connection's activity and idle timeout, which also
/// close a tunnel where no byte moved either way for that long (ALB's).
async fn splice(client: OnUpgrade, target: Box<TargetConn>, idle: (Arc<Activity>, Duration)) {
    let client = match client.await {
        Ok(c) => c,
        Err(e) => {
            debug!("upgrade failed: {e}");
            return;
        }
    };
    let (activity, timeout) = idle;
    activity.tunnel();
    let mut client = TokioIo::new(client);
    // `_open` keeps the tunnel counted among the target's connections.
    let (mut target, early, _open) = (*target).into_upgraded();
    let copied = async {
        client.write_all(&early).await?;
        tokio::io::copy_bidirectional(&mut client, &mut target).await
    };
    tokio::select! {
        r = copied => if let Err(e) = r {
            debug!("upgraded connection ended: {e}");
        },
        () = activity.expired(timeout) => debug!("upgraded connection idle for {timeout:?}: closed"),
    }
}
