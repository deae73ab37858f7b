//! The accept loop of an `http`/`https` listener and the life of each client
//! connection: TLS (with ALPN offering h2), HTTP/1.1 with keep-alive and
//! pipelining or HTTP/2 (hyper-util's auto builder, which also takes h2c
//! with prior knowledge), upgrades, and the client idle timeout. The
//! listener's socket and stop signal come from `crate::proxy`, which runs
//! it like the other userspace listeners.
use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use super::{
    handler::{ConnInfo, handle},
    listener::HttpListener,
};
use crate::{
    latest::Latest,
    stop::{stopped, until_stopped},
    workers::Workers,
};

/// A client must finish its TLS handshake within this.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (out of file descriptors, ...).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a listener serves right now. A reload sends new settings: new
/// connections take them, and so does every later request of the open
/// ones, which stay open.
pub type Settings = watch::Receiver<Arc<HttpListener>>;

/// Serves `listener` until `stop` becomes `true` (or its sender is gone),
/// then closes every connection it accepted. Connections run on `workers`.
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    stop: watch::Receiver<bool>,
    workers: Arc<Workers>,
) {
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
        let _ = stream.set_nodelay(true);
        let settings = settings.clone();
        let stop = stop.clone();
        workers.serve(stream, move |stream| async move {
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
            let conn = ConnInfo::new(client, None, &at_start);
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
    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(%client, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            debug!(%client, "TLS handshake timed out");
            return;
        }
    };
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
    let conn = ConnInfo::new(client, tls, &current.get());
    serve_connection(stream, conn, current).await;
}

/// Requests being answered on one connection; the idle timeout waits for 0.
#[derive(Clone, Default)]
struct InFlight(Arc<AtomicUsize>);

/// One request's share of [`InFlight`].
struct InFlightGuard(Arc<AtomicUsize>);

impl InFlight {
    fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(Arc::clone(&self.0))
    }

    fn idle(&self) -> bool {
        self.0.load(Ordering::Relaxed) == 0
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_connection<IO>(io: IO, conn: ConnInfo, current: Arc<Latest<Arc<HttpListener>>>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = Activity::new(io);
    let last = Arc::clone(&io.last);
    let in_flight = InFlight::default();
    let conn = Arc::new(conn);
    // The protocol settings of the connection are those it started with;
    // each request takes the rules and targets current when it arrives.
    let at_start = current.get();
    let svc = {
        let in_flight = in_flight.clone();
        let current = Arc::clone(&current);
        service_fn(move |req| handle(current.get(), Arc::clone(&conn), req, in_flight.enter()))
    };
    let served = at_start
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(served);
    let mut closing = false;
    loop {
        // A reload may change the timeout of connections already open.
        let idle_timeout = current.get().idle_timeout;
        let check = idle_timeout
            .saturating_sub(since(&last))
            .max(Duration::from_millis(50));
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    debug!("client connection: {e}");
                }
                return;
            }
            () = tokio::time::sleep(check), if !closing => {
                if since(&last) >= idle_timeout && in_flight.idle() {
                    // h1: closes now; h2: GOAWAY, then close.
                    served.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// Milliseconds of the coarse monotonic clock: cheap enough to read on
/// every read and write (the idle timeout needs no finer resolution than
/// the kernel tick).
fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC_COARSE
    // exists on every Linux this runs on (since 2.6.32).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

fn since(last: &AtomicU64) -> Duration {
    Duration::from_millis(now_ms().saturating_sub(last.load(Ordering::Relaxed)))
}

/// A stream that records when bytes last moved either way (the client idle
/// timeout counts from there, as ALB's does).
struct Activity<T> {
    inner: T,
    last: Arc<AtomicU64>,
}

impl<T> Activity<T> {
    fn new(inner: T) -> Self {
        Self {
            inner,
            last: Arc::new(AtomicU64::new(now_ms())),
        }
    }

    fn touch(&self) {
        self.last.store(now_ms(), Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
