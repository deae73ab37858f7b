//! The accept loop of an `http`/`https` listener and the life of each client
//! connection: TLS (with ALPN offering h2), HTTP/1.1 with keep-alive and
//! pipelining or HTTP/2 (hyper-util's auto builder, which also takes h2c
//! with prior knowledge), upgrades, and the client idle timeout. The
//! listener's socket and stop signal come from the supervisor of the
//! userspace listeners, which runs it like the others.
use std::{sync::Arc, time::Duration};

use ::http::Version;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::watch,
    time::Instant,
};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use super::{
    conn_info::ConnInfo,
    handler::handle,
    idle::{Check, Watched},
    listener::HttpListener,
    metrics::Cut,
};
use crate::{
    conn_cap::{self, Counts},
    latest::Latest,
    stop::{stopped, until_stopped},
    workers::Workers,
};

/// A client must finish its TLS handshake within this, or within the
/// listener's idle timeout when that is shorter.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an HTTP/2 connection closed for idleness may take to go after
/// its GOAWAY (and PING): a client that answers the PING is closed at once,
/// one that does not is cut this long after, once no request is in
/// progress.
const GOAWAY_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (out of file descriptors, ...).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a listener serves right now. A reload sends new settings: new
/// connections take them, and so does every later request of the open
/// ones, which stay open.
pub type Settings = watch::Receiver<Arc<HttpListener>>;

/// Serves `listener` until `stop` becomes `true` (or its sender is gone),
/// then closes every connection it accepted. Connections run on `workers`;
/// those beyond the listener's caps are reset here ([`crate::conn_cap`]).
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    stop: watch::Receiver<bool>,
    workers: Arc<Workers>,
) {
    let counts = Counts::default();
    loop {
        let accepted = {
            let mut stop = stop.clone();
            tokio::select! {
                () = stopped(&mut stop) => return,
                r = listener.accept() => r,
            }
        };
        let (stream, client) = match accepted {
            Ok(s) => s,
            Err(e) => {
                warn!(listener = %settings.borrow().name, "accept: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let slot = {
            let now = settings.borrow();
            match counts.admit(client.ip(), now.caps) {
                Ok(slot) => slot,
                Err(cap) => {
                    now.refused.count(cap);
                    drop(now);
                    conn_cap::refuse(stream);
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let settings = settings.clone();
        let stop = stop.clone();
        workers.serve(stream, move |stream| async move {
            let _slot = slot;
            until_stopped(connection(stream, client, settings), stop).await;
        });
    }
}

/// One client connection, TLS first on `https` listeners.
async fn connection(stream: TcpStream, client: std::net::SocketAddr, settings: Settings) {
    // The connection's own view of the settings, read from here on.
    let current = Arc::new(Latest::new(settings));
    let at_start = current.get();
    match &at_start.tls {
        None => {
            let conn = ConnInfo::new(client, None, &at_start, false);
            serve_connection(stream, conn, current).await;
        }
        Some(acceptor) => serve_tls(stream, acceptor.clone(), client, current).await,
    }
}

async fn serve_tls(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    client: std::net::SocketAddr,
    current: Arc<Latest<Arc<HttpListener>>>,
) {
    let limit = TLS_HANDSHAKE_TIMEOUT.min(current.get().idle_timeout);
    let error = match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(s)) => return serve_tls_stream(s, client, current).await,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_owned(),
    };
    // Counted, and logged as a sample: a scan or a flood of bad
    // handshakes must not write a line each.
    let l = current.get();
    l.tls_failures.inc();
    debug!(%client, "TLS handshake failed: {error}");
    l.handshake_log.failed(&l.name, client, &error);
}

/// An `https` connection with its handshake done.
async fn serve_tls_stream(
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    client: std::net::SocketAddr,
    current: Arc<Latest<Arc<HttpListener>>>,
) {
    let session = stream.get_ref().1;
    let tls = match (
        session.negotiated_cipher_suite(),
        session.protocol_version(),
    ) {
        (Some(suite), Some(version)) => Some((
            super::tls_names::cipher(suite.suite()),
            super::tls_names::protocol(version).to_owned(),
        )),
        _ => None,
    };
    let h2 = session.alpn_protocol() == Some(b"h2");
    let conn = ConnInfo::new(client, tls, &current.get(), h2);
    serve_connection(stream, conn, current).await;
}

async fn serve_connection<IO>(io: IO, conn: ConnInfo, current: Arc<Latest<Arc<HttpListener>>>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::clone(&conn.activity);
    let at_start = current.get();
    let floods = at_start.cuts.of(Cut::FrameFlood).clone();
    let io = Watched::new(io, Arc::clone(&activity), floods);
    let conn = Arc::new(conn);
    // The protocol settings of the connection are those it started with;
    // each request takes the rules and targets current when it arrives.
    let svc = {
        let activity = Arc::clone(&activity);
        let current = Arc::clone(&current);
        service_fn(move |req| {
            let in_flight = activity.request(req.version() == Version::HTTP_2);
            handle(current.get(), Arc::clone(&conn), req, in_flight)
        })
    };
    let served = at_start
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(served);
    let mut wait = at_start.idle_timeout;
    // When the idle rule asked the connection to close.
    let mut closing: Option<Instant> = None;
    loop {
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    debug!("client connection: {e}");
                }
                return;
            }
            () = tokio::time::sleep(wait) => {
                // A reload may change the timeout of open connections.
                let check = activity.check(current.get().idle_timeout);
                match (check, closing) {
                    (Check::Open(next), None) => wait = next,
                    // h1: closes now; h2: GOAWAY and a PING, then closes
                    // once the client answered and no stream is left.
                    (Check::Idle, None) => {
                        served.as_mut().graceful_shutdown();
                        closing = Some(Instant::now());
                        wait = GOAWAY_GRACE;
                    }
                    (Check::SlowHead, _) => {
                        debug!("request head not complete within the idle timeout");
                        at_start.cuts.of(Cut::SlowHead).inc();
                        return;
                    }
                    // Dropping the connection drops its responses, and with
                    // them their target connections.
                    (Check::Stalled, _) => {
                        debug!("request or response stalled for the idle timeout");
                        at_start.cuts.of(Cut::Stalled).inc();
                        return;
                    }
                    (check, Some(since)) => match GOAWAY_GRACE.checked_sub(since.elapsed()) {
                        Some(left) if !left.is_zero() => wait = left,
                        // A client that never answered the GOAWAY's PING
                        // would hold the connection for ever.
                        _ if !activity.busy() => {
                            debug!("no close {GOAWAY_GRACE:?} after GOAWAY: cut");
                            at_start.cuts.of(Cut::GoawayIgnored).inc();
                        return;
                        }
                        _ => {
                            wait = match check {
                                Check::Open(next) => next,
                                _ => GOAWAY_GRACE,
                            }
                        }
                    },
                }
            }
        }
    }
}
