//! A running userspace listener: its socket's accept loop (ours for tcp
//! and tls, [`http::serve`] for http/https) or the UDP relay
//! ([`udp::serve`]), the route it currently serves (swapped on reload
//! without touching the socket) and the stop signal that ends the loop and
//! every connection or flow it holds.
use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpSocket, UdpSocket},
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};
use tracing::{debug, error, warn};

use super::{
    connection,
    metrics::ProxyMetrics,
    route::{L4Route, Route},
    udp::{self, FlowsQuery, FlowsSnapshot, UdpRoute},
};
use crate::{
    config::Protocol,
    http::{self, HttpListener},
    routable::RoutableWatch,
    stop::stopped,
    workers::Workers,
};

/// Pending connections the kernel queues per listener.
const BACKLOG: u32 = 1024;
/// How long `lb flows` waits for a relay's answer (it answers between two
/// datagrams, so this is only reached if the relay is stuck).
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
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

/// A listener's bound socket.
pub enum Socket {
    /// tcp, tls, http, https: listening.
    Stream(TcpListener),
    Datagram(UdpSocket),
}

impl Socket {
    /// The socket `protocol` needs, bound to `addr`.
    pub fn bind(addr: SocketAddr, protocol: Protocol) -> std::io::Result<Self> {
        match protocol {
            Protocol::Udp => udp::bind(addr).map(Socket::Datagram),
            _ => bind(addr).map(Socket::Stream),
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Socket::Stream(s) => s.local_addr(),
            Socket::Datagram(s) => s.local_addr(),
        }
    }
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
    Udp(watch::Sender<Arc<UdpRoute>>),
    /// Nothing runs (a route and a socket of different kinds: a bug).
    None,
}

/// Handle of a running listener; dropping it stops the listener.
pub struct Running {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    route: RouteTx,
    /// udp: where `lb flows` asks the relay for its flows.
    queries: Option<mpsc::Sender<FlowsQuery>>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    /// Starts serving `socket`.
    pub fn start(
        name: &str,
        protocol: Protocol,
        socket: Socket,
        route: Route,
        routable: RoutableWatch,
        metrics: Arc<ProxyMetrics>,
        workers: Arc<Workers>,
    ) -> Self {
        let addr = socket
            .local_addr()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        let (stop_tx, stop_rx) = watch::channel(false);
        let ctx = |stop| {
            Arc::new(ListenerCtx {
                routable,
                metrics,
                next: AtomicU64::new(0),
                stop,
            })
        };
        let mut queries = None;
        let (route_tx, task) = match (route, socket) {
            (Route::L4(r), Socket::Stream(socket)) => {
                let (tx, rx) = watch::channel(r);
                let task = tokio::spawn(accept_loop(
                    name.to_owned(),
                    socket,
                    rx,
                    ctx(stop_rx),
                    Arc::clone(&workers),
                ));
                (RouteTx::L4(tx), Some(task))
            }
            (Route::Http(h), Socket::Stream(socket)) => {
                let (tx, rx) = watch::channel(h);
                let task = tokio::spawn(http::serve(socket, rx, stop_rx, Arc::clone(&workers)));
                (RouteTx::Http(tx), Some(task))
            }
            (Route::Udp(u), Socket::Datagram(socket)) => {
                let (tx, rx) = watch::channel(u);
                let (query_tx, query_rx) = udp::query_channel();
                queries = Some(query_tx);
                let task = tokio::spawn(udp::serve(socket, rx, query_rx, ctx(stop_rx)));
                (RouteTx::Udp(tx), Some(task))
            }
            _ => {
                // `Proxies::apply` binds by the listener's protocol and
                // builds its route by the same protocol.
                error!(listener = %name, %protocol, "route and socket of different kinds; listener not served");
                (RouteTx::None, None)
            }
        };
        Self {
            addr,
            protocol,
            route: route_tx,
            queries,
            stop: stop_tx,
            task,
        }
    }

    /// A udp listener's flows (`limit` of them in the sample); `None` for
    /// other listeners, or a relay that did not answer in time.
    pub async fn udp_flows(&self, limit: usize) -> Option<FlowsSnapshot> {
        let queries = self.queries.as_ref()?;
        let (tx, rx) = oneshot::channel();
        let asked = tokio::time::timeout(QUERY_TIMEOUT, async {
            queries.send((limit, tx)).await.ok()?;
            rx.await.ok()
        })
        .await;
        asked.ok().flatten()
    }

    /// Hands `route` to the listener: its next connections (and, for
    /// http, the next requests of open ones; for udp, its flows) use it.
    pub fn update(&self, name: &str, route: Route) {
        match (&self.route, route) {
            (RouteTx::L4(tx), Route::L4(r)) => {
                tx.send_replace(r);
            }
            (RouteTx::Http(tx), Route::Http(h)) => {
                tx.send_replace(h);
            }
            (RouteTx::Udp(tx), Route::Udp(u)) => {
                tx.send_replace(u);
            }
            // `Proxies::apply` rebinds a listener whose protocol changed.
            _ => warn!(listener = %name, "route of another kind ignored"),
        }
    }

    /// Stops accepting, closes the listener's connections (or flows) and
    /// waits until the socket is closed (so its address can be bound
    /// again).
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
