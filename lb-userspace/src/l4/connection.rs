//! One client connection of an L4 listener: optional TLS termination, a
//! target chosen by weighted round robin (the next ones tried when a
//! connect fails), optional PROXY v2 header and TLS toward the target, then
//! bytes relayed both ways until both sides closed (half-close passes
//! through), the connection idles out, or the listener is removed.
use std::{
    io,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, copy_bidirectional},
    net::TcpStream,
    time::timeout,
};
use tracing::{debug, info, warn};

use super::{
    context::ListenerCtx,
    counted::{Activity, Counted},
    metrics::{ByteLabels, Direction, ErrorReason, L4ListenerLabels, L4TargetLabels, Open},
    proxy_v2,
    route::L4Route,
};
use crate::{round_robin, stop::until_stopped, tls};

/// How long a target may take to accept a connection (NLB's 10 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client or target may take to finish a TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Targets tried per connection before giving up.
pub const MAX_ATTEMPTS: usize = 3;

/// A byte stream of either side, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// What the TLS handshake with the client gave, for the log line.
#[derive(Default)]
struct TlsInfo {
    version: String,
    cipher: String,
    sni: String,
    alpn: String,
}

pub async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    route: Arc<L4Route>,
    ctx: Arc<ListenerCtx>,
) {
    let labels = L4ListenerLabels {
        listener: route.listener.clone(),
    };
    ctx.metrics.connections.get_or_create(&labels).inc();
    let _open = Open::new(ctx.metrics.active.get_or_create(&labels).clone());
    let _nodelay = client.set_nodelay(true);
    let local = match client.local_addr() {
        Ok(a) => a,
        Err(e) => return debug!(listener = %route.listener, %peer, error = %e, "client gone"),
    };
    let (client, tls_info): (Box<dyn Stream>, _) = match &route.terminate {
        None => (Box::new(client), None),
        Some(acceptor) => match timeout(HANDSHAKE_TIMEOUT, acceptor.accept(client)).await {
            Ok(Ok(s)) => {
                let info = describe(s.get_ref().1);
                (Box::new(s), Some(info))
            }
            Ok(Err(e)) => return handshake_failed(&route, &ctx, peer, &e.to_string()),
            Err(_) => return handshake_failed(&route, &ctx, peer, "timed out"),
        },
    };
    let Some((target, stream)) = connect(&route, &ctx, peer, local).await else {
        return;
    };
    let tlabels = L4TargetLabels {
        listener: route.listener.clone(),
        target: target.to_string(),
    };
    ctx.metrics.target_connections.get_or_create(&tlabels).inc();
    let _target_open = Open::new(ctx.metrics.target_active.get_or_create(&tlabels).clone());
    let outcome = relay(client, stream, &route, &ctx, &tlabels).await;
    match tls_info {
        Some(t) => info!(
            listener = %route.listener, client = %peer, %target, sni = %t.sni,
            tls_version = %t.version, cipher = %t.cipher, alpn = %t.alpn,
            to_target = outcome.to_target, to_client = outcome.to_client,
            end = outcome.end, "tls connection closed"
        ),
        None => debug!(
            listener = %route.listener, client = %peer, %target,
            to_target = outcome.to_target, to_client = outcome.to_client,
            end = outcome.end, "tcp connection closed"
        ),
    }
}

fn describe(conn: &rustls::ServerConnection) -> TlsInfo {
    let (version, cipher) = tls::describe(conn);
    TlsInfo {
        version,
        cipher,
        sni: conn.server_name().unwrap_or("-").to_owned(),
        alpn: conn.alpn_protocol().map_or_else(
            || "-".to_owned(),
            |p| String::from_utf8_lossy(p).into_owned(),
        ),
    }
}

/// Counted, and logged as a sample (a scan or a flood of bad handshakes
/// must not write a line each).
fn handshake_failed(route: &L4Route, ctx: &ListenerCtx, peer: SocketAddr, error: &str) {
    ctx.metrics
        .error(&route.listener, ErrorReason::TlsHandshake);
    debug!(listener = %route.listener, client = %peer, error, "tls handshake failed");
    route.handshake_log.failed(&route.listener, peer, error);
}

/// Connects to a target (trying up to [`MAX_ATTEMPTS`]), sends the PROXY
/// header and does the target TLS handshake. `None` when nothing worked
/// (counted and logged).
async fn connect(
    route: &L4Route,
    ctx: &ListenerCtx,
    peer: SocketAddr,
    local: SocketAddr,
) -> Option<(SocketAddr, Box<dyn Stream>)> {
    let n = ctx.next.fetch_add(1, Ordering::Relaxed);
    let order = {
        let routable = ctx.routable.borrow();
        round_robin::order(routable.targets(&route.target_group), n, MAX_ATTEMPTS)
    };
    if order.is_empty() {
        ctx.metrics.error(&route.listener, ErrorReason::NoTarget);
        warn!(listener = %route.listener, client = %peer, group = %route.target_group, "no routable target; connection closed");
        return None;
    }
    for target in order {
        match open(route, target, peer, local).await {
            Ok(tcp) => return target_tls(route, ctx, peer, target, tcp).await,
            Err(e) => {
                let labels = L4TargetLabels {
                    listener: route.listener.clone(),
                    target: target.to_string(),
                };
                ctx.metrics
                    .target_connect_errors
                    .get_or_create(&labels)
                    .inc();
                warn!(listener = %route.listener, %target, error = %e, "connecting to target failed");
            }
        }
    }
    ctx.metrics.error(&route.listener, ErrorReason::Connect);
    None
}

/// A TCP connection to `target`, the PROXY header already written.
async fn open(
    route: &L4Route,
    target: SocketAddr,
    peer: SocketAddr,
    local: SocketAddr,
) -> io::Result<TcpStream> {
    let mut tcp = timeout(CONNECT_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    tcp.set_nodelay(true)?;
    if route.proxy_v2 {
        tcp.write_all(&proxy_v2::encode(peer, local)).await?;
    }
    Ok(tcp)
}

async fn target_tls(
    route: &L4Route,
    ctx: &ListenerCtx,
    peer: SocketAddr,
    target: SocketAddr,
    tcp: TcpStream,
) -> Option<(SocketAddr, Box<dyn Stream>)> {
    let Some(t) = &route.target_tls else {
        return Some((target, Box::new(tcp)));
    };
    let name = tls::server_name(&t.settings, target.ip());
    let error = match timeout(HANDSHAKE_TIMEOUT, t.connector.connect(name, tcp)).await {
        Ok(Ok(s)) => return Some((target, Box::new(s))),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_owned(),
    };
    ctx.metrics.error(&route.listener, ErrorReason::TargetTls);
    warn!(listener = %route.listener, client = %peer, %target, error, "target tls handshake failed; connection closed");
    None
}

struct Outcome {
    to_target: u64,
    to_client: u64,
    end: &'static str,
}

async fn relay(
    client: Box<dyn Stream>,
    target: Box<dyn Stream>,
    route: &L4Route,
    ctx: &ListenerCtx,
    tlabels: &L4TargetLabels,
) -> Outcome {
    let counter = |direction| {
        ctx.metrics
            .bytes
            .get_or_create(&ByteLabels {
                listener: tlabels.listener.clone(),
                target: tlabels.target.clone(),
                direction,
            })
            .clone()
    };
    let activity = Activity::new();
    let mut c = Counted::new(client, counter(Direction::ToTarget), Arc::clone(&activity));
    let mut t = Counted::new(target, counter(Direction::ToClient), Arc::clone(&activity));
    let copied = async {
        tokio::select! {
            r = copy_bidirectional(&mut c, &mut t) => if r.is_ok() { "closed" } else { "reset" },
            () = activity.idle(route.idle_timeout) => "idle timeout",
        }
    };
    let end = until_stopped(copied, ctx.stop.clone())
        .await
        .unwrap_or("listener removed");
    Outcome {
        to_target: c.total(),
        to_client: t.total(),
        end,
    }
}
