//! Serving one API listener (the Unix socket, or TCP): connections within
//! the listener's cap ([`super::listener`]), each HTTP/1.1 with a time
//! limit on request heads that is also the idle timeout. hyper's header
//! read timer runs whenever a connection waits for a request head (from
//! its start, and from the end of each response), so a client that sends
//! nothing, stops within a head, or leaves a kept-alive connection idle is
//! closed after [`HEAD_TIMEOUT`] and its slot goes to the next client.
//! Bodies have their own limits ([`super::body`]) and are read only after
//! the access check.
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

use super::{access::Peer, listener::Capped};

/// How long a connection may wait for a request head to arrive whole: from
/// its start, or from the end of the previous response. Far longer than a
/// management client takes to send one.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `stop` completes, each connection's
/// peer named by `peer`; then waits for open connections to finish their
/// requests (the caller bounds that wait).
pub async fn serve<L: Listener>(
    mut listener: Capped<L>,
    app: Router,
    peer: fn(&L::Io, &L::Addr) -> Peer,
    stop: impl Future<Output = ()>,
) {
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
            req.extensions_mut().insert(ConnectInfo(who));
            app.clone().oneshot(req)
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEAD_TIMEOUT)
            .serve_connection(TokioIo::new(held), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("management API connection ended: {e}");
            }
        });
    }
    graceful.shutdown().await;
}
