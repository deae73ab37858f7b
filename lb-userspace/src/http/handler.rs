//! One request, start to end: limits, rules, the chosen action, and the
//! access-log line and metrics once the response body is done.
use std::{
    convert::Infallible,
    sync::Arc,
    time::{Instant, SystemTime},
};

use ::http::{HeaderValue, Request, Response, StatusCode, Version, header};
use hyper::body::Incoming;

use super::{
    access_log::Entry,
    actions::{self, Origin},
    body::ProxyBody,
    codings,
    conn_info::ConnInfo,
    exchange::{Exchange, forward},
    host,
    idle::InFlight,
    limits,
    listener::HttpListener,
    path,
    rules::RequestView,
};
use crate::config::http::Action;

pub async fn handle(
    l: Arc<HttpListener>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
    in_flight: InFlight,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    // The log line's strings are only built for a listener that logs.
    let mut entry = match l.access_log {
        Some(_) => start_entry(&l, &conn, &req),
        None => Entry::default(),
    };
    l.requests.inc();
    let mut exchange = Exchange::new(in_flight);
    let mut resp = route(&l, &conn, req, started, &mut entry, &mut exchange).await;
    exchange.in_flight.answered();
    entry.elb_status = resp.status().as_u16();
    if entry.target_status.is_none() && entry.elb_status >= 400 {
        l.elb_series.record(entry.elb_status);
    }
    // Only a listener that logs keeps the entry (boxed) past this point:
    // the callback of every other request stays small to move.
    let logged = l
        .access_log
        .as_ref()
        .map(|_| (Box::new(entry), Instant::now()));
    resp.body_mut().on_finish(Box::new(move |sent| {
        // Held until here: the request counts as in flight (client idle
        // timeout) and outstanding (least outstanding requests).
        drop(exchange);
        if let (Some(log), Some((mut entry, head_at))) = (&l.access_log, logged) {
            entry.sent_bytes = sent;
            entry.response_processing = Some(head_at.elapsed());
            log.write(entry.line(&l.name));
        }
    }));
    Ok(resp)
}

async fn route(
    l: &HttpListener,
    conn: &ConnInfo,
    req: Request<Incoming>,
    started: Instant,
    entry: &mut Entry,
    exchange: &mut Exchange,
) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    // Refused heads close the connection: what follows them on the wire
    // (a body of unknown framing, say) cannot be trusted to be a request.
    if let Some(status) = limits::check(&parts).or_else(|| codings::check(&parts.headers)) {
        return closing(actions::error(status));
    }
    if host::settle(&mut parts).is_err() {
        return closing(actions::error(StatusCode::BAD_REQUEST));
    }
    if l.normalize_path {
        path::apply(&mut parts.uri);
    }
    let view = RequestView {
        parts: &parts,
        host: host::for_rules(&parts),
        client: conn.client.ip(),
    };
    let action = l.rules.find(&view).map_or(&l.default_action, |r| &r.action);
    match action {
        Action::FixedResponse(f) => actions::fixed(f),
        Action::Redirect(r) => {
            let path = parts.uri.path();
            let origin = Origin {
                protocol: l.scheme(),
                host: view.host,
                port: l.port,
                path: path.strip_prefix('/').unwrap_or(path),
                query: parts.uri.query().unwrap_or(""),
            };
            actions::redirect(r, &origin)
        }
        Action::Forward {
            target_group,
            target_groups,
        } => {
            let group = match target_group {
                Some(g) => Some(g.as_str()),
                None => l.pick_weighted(target_groups),
            };
            let Some(group) = group else {
                return actions::error(StatusCode::SERVICE_UNAVAILABLE);
            };
            let req = Request::from_parts(parts, body);
            forward(l, group, conn, req, started, entry, exchange).await
        }
    }
}

/// A response after which the connection closes: the head was refused, so
/// what follows it on the wire cannot be trusted to be a request.
fn closing(mut resp: Response<ProxyBody>) -> Response<ProxyBody> {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn start_entry(l: &HttpListener, conn: &ConnInfo, req: &Request<Incoming>) -> Entry {
    let h2 = req.version() == Version::HTTP_2;
    let kind = match (h2, l.scheme()) {
        (true, _) => "h2",
        (false, s) => s,
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let request = format!(
        "{} {}://{}{} {:?}",
        req.method(),
        l.scheme(),
        if host.contains(':') {
            host
        } else {
            format!("{host}:{}", l.port)
        },
        pq,
        req.version()
    );
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    Entry {
        kind,
        time: Some(SystemTime::now()),
        client: Some(conn.client),
        request,
        user_agent: header(header::USER_AGENT).unwrap_or("-").to_owned(),
        received_bytes: header(header::CONTENT_LENGTH)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        ssl_cipher: conn.tls.as_ref().map(|t| t.0.clone()),
        ssl_protocol: conn.tls.as_ref().map(|t| t.1.clone()),
        ..Entry::default()
    }
}
