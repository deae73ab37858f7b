//! Serving one operator listener (the API's Unix socket or TCP, or
//! `/metrics`): connections within the listener's cap ([`super::capped`]),
//! each HTTP/1.1 with a time limit on request heads that is also the idle
//! timeout, and one on stalled writes ([`super::write_deadline`]). hyper's header
//! read timer runs whenever a connection waits for a request head (from
//! its start, and from the end of each response), so a client that sends
//! nothing, stops within a head, or leaves a kept-alive connection idle is
//! closed after [`HEAD_TIMEOUT`] and its slot goes to the next client.
//! The API's bodies have their own limits (`api::body`) and are read only
//! after its access check.
//!
//! (axum's `serve` sets no timer, so hyper's timeout never ran: 256 silent
//! TCP sockets held every slot of the TCP listener for ever.)
use std::{future::Future, time::Duration};

use axum::{Router, extract::ConnectInfo, serve::Listener};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tower::ServiceExt;

use super::{
    capped::Capped,
    write_deadline::{WRITE_TIMEOUT, WriteDeadline},
};

/// How long a connection may wait for a request head to arrive whole: from
/// its start, or from the end of the previous response. Far longer than a
/// management client takes to send one.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The time limits of each connection.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// See [`HEAD_TIMEOUT`].
    pub head: Duration,
    /// See [`WRITE_TIMEOUT`].
    pub write: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            head: HEAD_TIMEOUT,
            write: WRITE_TIMEOUT,
        }
    }
}

/// Serves `app` on `listener` until `stop` completes, each connection's
/// peer named by `peer` (in each request as `ConnectInfo<P>`); then closes
/// the listener (its address is free when this returns) and returns the
/// open connections' graceful shutdown, for the caller to await within a
/// bound of its own, in the background or not at all.
pub async fn serve<L: Listener, P: Clone + Send + Sync + 'static>(
    mut listener: Capped<L>,
    app: Router,
    peer: fn(&L::Io, &L::Addr) -> P,
    limits: Limits,
    stop: impl Future<Output = ()>,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (held, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let who = peer(&held.io, &addr);
        let app = app.clone();
        let service = service_fn(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(who.clone()));
            app.clone().oneshot(req)
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.head)
            .serve_connection(
                TokioIo::new(WriteDeadline::new(held, limits.write)),
                service,
            );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("operator HTTP connection ended: {e}");
            }
        });
    }
    drop(listener);
    graceful
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::routing::get;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
        time::timeout,
    };

    use super::*;

    /// The listener's only slot is taken by a client that asks for a large
    /// answer and never reads it: once its writes have stalled for the
    /// limit, the connection is closed and the next client is served.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_never_reads_gives_its_slot_back() {
        const BIG: usize = 64 << 20;
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let app = Router::new()
            .route("/big", get(|| async { vec![b'x'; BIG] }))
            .route("/small", get(|| async { "small" }));
        let limits = Limits {
            head: Duration::from_secs(60),
            write: Duration::from_secs(1),
        };
        tokio::spawn(serve(
            Capped::new(tcp, 1),
            app,
            |_, a: &SocketAddr| *a,
            limits,
            std::future::pending(),
        ));
        let mut hog = TcpStream::connect(addr).await.expect("connect");
        hog.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("ask");

        let mut next = TcpStream::connect(addr).await.expect("connect");
        next.write_all(b"GET /small HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .expect("ask");
        let mut answer = String::new();
        timeout(Duration::from_secs(30), next.read_to_string(&mut answer))
            .await
            .expect("the next client is served once the hog is cut")
            .expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

        let mut got = Vec::new();
        let read = timeout(Duration::from_secs(30), hog.read_to_end(&mut got))
            .await
            .expect("the hog's connection is closed");
        assert!(
            read.is_ok() || read.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset)
        );
        assert!(got.len() < BIG, "the hog got the whole answer");
    }
}
