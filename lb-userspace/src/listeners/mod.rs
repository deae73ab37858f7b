//! The supervisor of every userspace listener: `tls`, `http` and `https`
//! listeners always, `tcp` and `udp` listeners when the XDP path is not
//! there (`dataplane = "userspace"`, or `auto` after a failed attach). It
//! knows what is running ([`running`]), what each listener serves
//! ([`Route`]: the L4 proxy or UDP relay of [`crate::l4`], or the layer-7
//! engine of [`crate::http`]) and binds their sockets ([`socket`]).
//! Dependencies run one way: `listeners` -> {`l4`, `http`} -> `tls`.
//!
//! [`Listeners::apply`] brings the running listeners to a config, on start
//! and on every reload: it binds new ones, stops removed ones (closing
//! their connections, as the XDP path purges a removed VIP's flows) and
//! hands changed settings to kept ones without touching their socket, so
//! their connections and flows carry on. A listener whose address or protocol
//! changed is rebound.
mod route;
mod running;
mod socket;

use std::{collections::BTreeMap, fmt, io, net::SocketAddr, sync::Arc};

use tracing::{info, warn};

pub use route::Route;
pub use running::Running;
pub use socket::Socket;

use crate::{
    config::{Config, Listener, Protocol},
    http::{HttpListener, HttpListenerError, HttpMetrics, Pools},
    l4::{
        L4Metrics, L4Route,
        udp::{FlowsSnapshot, UdpRoute},
    },
    routable::RoutableWatch,
    tls::{Tickets, TlsError},
    workers::Workers,
};

#[derive(Debug, thiserror::Error)]
pub enum ListenersError {
    #[error("listener {listener}: {source}")]
    Tls { listener: String, source: TlsError },
    #[error(transparent)]
    Http(#[from] Box<HttpListenerError>),
    #[error(
        "listener {listener}: binding {addr}: {source} (a userspace listener's address must be local to this host)"
    )]
    Bind {
        listener: String,
        addr: SocketAddr,
        source: io::Error,
    },
}

/// What an apply changed, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListenersReport {
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    /// Kept their socket; got the new settings.
    pub kept: Vec<String>,
}

impl fmt::Display for ListenersReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "userspace listeners: started [{}], stopped [{}], kept [{}]",
            self.started.join(", "),
            self.stopped.join(", "),
            self.kept.join(", ")
        )
    }
}

/// The running userspace listeners, by listener name.
pub struct Listeners {
    running: BTreeMap<String, Running>,
    routable: RoutableWatch,
    metrics: Arc<L4Metrics>,
    http_metrics: HttpMetrics,
    /// Where every accepted connection runs.
    workers: Arc<Workers>,
    /// The target groups' connection pools of `http`/`https` listeners.
    pools: Pools,
    /// The session-ticket keys and session-ID caches of `tls`/`https`
    /// listeners, kept across reloads.
    tickets: Tickets,
}

impl Listeners {
    pub fn new(
        routable: RoutableWatch,
        metrics: Arc<L4Metrics>,
        http_metrics: HttpMetrics,
        workers: Arc<Workers>,
    ) -> Self {
        Self {
            running: BTreeMap::new(),
            pools: Pools::new(routable.clone(), Arc::clone(&workers)),
            tickets: Tickets::default(),
            routable,
            metrics,
            http_metrics,
            workers,
        }
    }

    /// The flows of every running udp listener, by its address (the VIP
    /// and port), with at most `limit` of each in its sample. A relay that
    /// does not answer within a second is left out (and logged).
    pub async fn udp_flows(&self, limit: usize) -> Vec<(SocketAddr, FlowsSnapshot)> {
        let mut out = Vec::new();
        let udp = self
            .running
            .iter()
            .filter(|(_, r)| r.protocol == Protocol::Udp);
        for (name, r) in udp {
            match r.udp_flows(limit).await {
                Some(s) => out.push((r.addr, s)),
                None => warn!(listener = %name, "the udp relay did not report its flows"),
            }
        }
        out
    }

    /// Addresses the running listeners are bound to, by name.
    pub fn bound(&self) -> BTreeMap<String, SocketAddr> {
        self.running
            .iter()
            .map(|(n, r)| (n.clone(), r.addr))
            .collect()
    }

    /// Brings the listeners to `config`. `serve_l4`: tcp and udp
    /// listeners are ours (no XDP path). Settings are built and new sockets bound before
    /// anything stops, so a failure there changes nothing; only a listener
    /// moving onto an address another one frees is bound after the stop.
    pub async fn apply(
        &mut self,
        config: &Config,
        serve_l4: bool,
    ) -> Result<ListenersReport, ListenersError> {
        let mut report = ListenersReport::default();
        let mut wanted = BTreeMap::new();
        for l in &config.listeners {
            if l.protocol.in_kernel() && !serve_l4 {
                continue;
            }
            wanted.insert(l.name.clone(), (l, self.build_route(config, l)?));
        }
        let keeps = |name: &str, l: &Listener| {
            self.running
                .get(name)
                .is_some_and(|r| r.addr == addr(l) && r.protocol == l.protocol)
        };
        let to_bind: Vec<String> = wanted
            .iter()
            .filter(|(n, (l, _))| !keeps(n, l))
            .map(|(n, _)| n.clone())
            .collect();
        // 1. Bind what does not collide with a running listener (TCP and
        //    UDP ports are separate spaces).
        let held: Vec<(SocketAddr, bool)> = self
            .running
            .values()
            .map(|r| (r.addr, r.protocol == Protocol::Udp))
            .collect();
        let mut sockets = BTreeMap::new();
        for name in &to_bind {
            let l = wanted[name].0;
            if !held.contains(&(addr(l), l.protocol == Protocol::Udp)) {
                sockets.insert(name.clone(), bind(l)?);
            }
        }
        // 2. Stop removed and rebound listeners.
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|n| !wanted.contains_key(*n) || to_bind.contains(n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(r) = self.running.remove(&name) {
                r.stop().await;
                report.stopped.push(name);
            }
        }
        // 3. Bind the rest, start the new ones, update the kept ones.
        for (name, (l, route)) in wanted {
            if let Some(r) = self.running.get(&name) {
                r.update(&name, route);
                report.kept.push(name);
                continue;
            }
            let socket = match sockets.remove(&name) {
                Some(s) => s,
                None => bind(l)?,
            };
            let r = Running::start(
                &name,
                l.protocol,
                socket,
                route,
                self.routable.clone(),
                Arc::clone(&self.metrics),
                Arc::clone(&self.workers),
            );
            self.running.insert(name.clone(), r);
            report.started.push(name);
        }
        self.tickets.retain(|name| self.running.contains_key(name));
        info!(%report, "userspace listeners applied");
        Ok(report)
    }
}

fn addr(l: &Listener) -> SocketAddr {
    SocketAddr::new(l.address, l.port)
}

impl Listeners {
    fn build_route(&self, config: &Config, l: &Listener) -> Result<Route, ListenersError> {
        match l.protocol {
            Protocol::Tcp | Protocol::Tls => L4Route::build(config, l, &self.tickets)
                .map(|r| Route::L4(Arc::new(r)))
                .map_err(|source| ListenersError::Tls {
                    listener: l.name.clone(),
                    source,
                }),
            Protocol::Http | Protocol::Https => {
                let h = HttpListener::new(
                    config,
                    l,
                    self.routable.clone(),
                    self.http_metrics.clone(),
                    &self.pools,
                    &self.tickets,
                )
                .map_err(Box::new)?;
                Ok(Route::Http(Arc::new(h)))
            }
            Protocol::Udp => Ok(Route::Udp(Arc::new(UdpRoute::build(config, l)))),
        }
    }
}

fn bind(l: &Listener) -> Result<Socket, ListenersError> {
    Socket::bind(addr(l), l.protocol).map_err(|source| ListenersError::Bind {
        listener: l.name.clone(),
        addr: addr(l),
        source,
    })
}

#[cfg(test)]
mod tests;
