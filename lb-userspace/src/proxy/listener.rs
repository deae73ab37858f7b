//! A running userspace listener: its socket's accept loop, the route it
//! currently serves (swapped on reload without touching the socket) and
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

use super::{connection, metrics::ProxyMetrics, route::Route};
use crate::{config::Protocol, routable::RoutableWatch};

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

/// Handle of a running listener; dropping it stops the listener.
pub struct Running {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub route: watch::Sender<Route>,
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
    ) -> Self {
        let addr = socket
            .local_addr()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        let (route_tx, route_rx) = watch::channel(route);
        let (stop_tx, stop_rx) = watch::channel(false);
        let ctx = Arc::new(ListenerCtx {
            routable,
            metrics,
            next: AtomicU64::new(0),
            stop: stop_rx,
        });
        let task = tokio::spawn(accept_loop(name.to_owned(), socket, route_rx, ctx));
        Self {
            addr,
            protocol,
            route: route_tx,
            stop: stop_tx,
            task: Some(task),
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
    route: watch::Receiver<Route>,
    ctx: Arc<ListenerCtx>,
) {
    let mut stop = ctx.stop.clone();
    loop {
        let accepted = tokio::select! {
            () = stopped(&mut stop) => break,
            r = socket.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Route::L4(r) = route.borrow().clone();
                tokio::spawn(connection::serve(stream, peer, r, Arc::clone(&ctx)));
            }
            Err(e) => {
                warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    debug!(listener = %name, "listener stopped");
}
