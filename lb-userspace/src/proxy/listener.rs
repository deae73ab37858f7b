//! A running userspace listener: its socket's accept loop (ours for L4,
//! [`http::serve`] for http/https), the route it currently serves (swapped on reload without touching the socket) and
//! the stop signal that ends the loop and every connection it accepted.
use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpSocket},
    sync::watch,
    task::JoinHandle,
};
use tracing::{debug, warn};

use super::{
    connection,
    metrics::ProxyMetrics,
    route::{L4Route, Route},
};
use crate::{
    config::Protocol,
    http::{self, HttpListener},
    routable::RoutableWatch,
    workers::Workers,
};

/// Pending connections the kernel queues per listener.
const BACKLOG: u32 = 1024;
/// Pause after a failed accept (e.g. out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What every connection of one listener shares.
pub struct ListenerCtx {
    pub routable: RoutableWatch,
    pub metrics: Arc<ProxyMetrics>,
    /// Connections accepted so far: the round-robin position.
    pub next: AtomicU64,
    /// Becomes `true` (or closes) when the listener is removed.
    pub stop: watch::Receiver<bool>,
}

/// Completes when the stop signal is raised or its sender is gone.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is dropped: stop as well.
    let _gone = stop.wait_for(|s| *s).await;
}

/// A bound TCP socket, listening.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // A restarted daemon must rebind while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Where a running listener takes its route from; one kind per listener
/// (a protocol change rebinds).
enum RouteTx {
    L4(watch::Sender<Arc<L4Route>>),
    Http(watch::Sender<Arc<HttpListener>>),
}

/// Handle of a running listener; dropping it stops the listener.
pub struct Running {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    route: RouteTx,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    /// Starts accepting on `socket`.
    pub fn start(
        name: &str,
        protocol: Protocol,
        socket: TcpListener,
        route: Route,
        routable: RoutableWatch,
        metrics: Arc<ProxyMetrics>,
        workers: Arc<Workers>,
    ) -> Self {
        let addr = socket
            .local_addr()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (route_tx, task) = match route {
            Route::L4(r) => {
                let (tx, rx) = watch::channel(r);
                let ctx = Arc::new(ListenerCtx {
                    routable,
                    metrics,
                    next: AtomicU64::new(0),
                    stop: stop_rx,
                });
                let task = tokio::spawn(accept_loop(name.to_owned(), socket, rx, ctx, workers));
                (RouteTx::L4(tx), task)
            }
            Route::Http(h) => {
                let (tx, rx) = watch::channel(h);
                let task = tokio::spawn(http::serve(socket, rx, stop_rx, workers));
                (RouteTx::Http(tx), task)
            }
        };
        Self {
            addr,
            protocol,
            route: route_tx,
            stop: stop_tx,
            task: Some(task),
        }
    }

    /// Hands `route` to the listener: its next connections (and, for
    /// http, the next requests of open ones) use it.
    pub fn update(&self, name: &str, route: Route) {
        match (&self.route, route) {
            (RouteTx::L4(tx), Route::L4(r)) => {
                tx.send_replace(r);
            }
            (RouteTx::Http(tx), Route::Http(h)) => {
                tx.send_replace(h);
            }
            // `Proxies::apply` rebinds a listener whose protocol changed.
            _ => warn!(listener = %name, "route of another kind ignored"),
        }
    }

    /// Stops accepting, closes the listener's connections and waits until
    /// the socket is closed (so its address can be bound again).
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            // The loop only ends by the stop signal; a panic is the one error.
            if let Err(e) = task.await {
                warn!(error = %e, "listener task failed");
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

async fn accept_loop(
    name: String,
    socket: TcpListener,
    route: watch::Receiver<Arc<L4Route>>,
    ctx: Arc<ListenerCtx>,
    workers: Arc<Workers>,
) {
    let mut stop = ctx.stop.clone();
    loop {
        let accepted = tokio::select! {
            () = stopped(&mut stop) => break,
            r = socket.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let r = Arc::clone(&route.borrow());
                let ctx = Arc::clone(&ctx);
                workers.serve(stream, move |s| connection::serve(s, peer, r, ctx));
            }
            Err(e) => {
                warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    debug!(listener = %name, "listener stopped");
}
