//! A running userspace listener: its socket's loop (the L4 proxy's
//! [`l4::accept::serve`] for tcp and tls, [`http::serve`] for http/https,
//! the UDP relay [`udp::serve`]), the route it currently serves (swapped on
//! reload without touching the socket) and the stop signal that ends the
//! loop and every connection or flow it holds.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};
use tracing::{error, warn};

use super::{route::Route, socket::Socket};
use crate::{
    config::Protocol,
    http::{self, HttpListener},
    l4::{
        self, L4Metrics, L4Route, ListenerCtx,
        udp::{self, FlowsQuery, FlowsSnapshot, UdpRoute},
    },
    routable::RoutableWatch,
    workers::Workers,
};

/// How long `lb flows` waits for a relay's answer (it answers between two
/// datagrams, so this is only reached if the relay is stuck).
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

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
        metrics: Arc<L4Metrics>,
        workers: Arc<Workers>,
    ) -> Self {
        let addr = socket
            .local_addr()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        let (stop_tx, stop_rx) = watch::channel(false);
        let ctx = |stop| ListenerCtx::new(routable, metrics, stop);
        let mut queries = None;
        let (route_tx, task) = match (route, socket) {
            (Route::L4(r), Socket::Stream(socket)) => {
                let (tx, rx) = watch::channel(r);
                let task = tokio::spawn(l4::accept::serve(
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
                // `Listeners::apply` binds by the listener's protocol and
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
            // `Listeners::apply` rebinds a listener whose protocol changed.
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
