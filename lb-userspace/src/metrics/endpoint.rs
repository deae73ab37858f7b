//! The Prometheus endpoint: `GET /metrics` on `api.metrics_listen`, without
//! a token (bind it to an address only the scraper reaches).
//!
//! Served by [`crate::admin_http`]: at most [`MAX_CONNECTIONS`] at once,
//! each closed when it sends no request head within 5 s or takes no bytes of
//! an answer within 10 s, so clients that connect and stay silent, or ask
//! and never read, cannot hold the endpoint from the scraper.
//!
//! Each scrape reads the data-path counters from the pinned maps (when the
//! XDP path runs) and encodes everything with the running config's names.
use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tracing::warn;

use super::Metrics;
use crate::{
    admin_http::{self, Capped, Limits, MAX_CONNECTIONS},
    bpf::stats,
    config::Config,
    error_chain::ErrorChain,
};

#[derive(Clone)]
struct Scrape {
    metrics: Arc<Metrics>,
    config: watch::Receiver<Arc<Config>>,
    xdp: bool,
}

/// A running endpoint; dropping it stops serving (soon: the task is
/// aborted), [`MetricsServer::stop`] before it returns.
#[derive(Debug)]
pub struct MetricsServer {
    pub addr: SocketAddr,
    /// Serves until aborted (it never stops by itself, so it returns no
    /// connections to drain).
    task: JoinHandle<GracefulShutdown>,
}

impl MetricsServer {
    /// Stops serving; the listener is closed when this returns, so the
    /// address (or one that overlaps it) can be bound again at once.
    pub async fn stop(mut self) {
        self.task.abort();
        // The task ends at its next await (abort), dropping the listener.
        let _ = (&mut self.task).await;
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` and serves `/metrics` until the returned server is dropped.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    config: watch::Receiver<Arc<Config>>,
    xdp: bool,
) -> std::io::Result<MetricsServer> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(Scrape {
            metrics,
            config,
            xdp,
        });
    // Runs until the server is dropped (the task is aborted); connections
    // open then end by themselves within the limits.
    let task = tokio::spawn(admin_http::serve(
        Capped::new(listener, MAX_CONNECTIONS),
        app,
        |_, addr: &SocketAddr| *addr,
        Limits::default(),
        std::future::pending(),
    ));
    Ok(MetricsServer { addr, task })
}

async fn scrape(State(s): State<Scrape>) -> impl IntoResponse {
    let config = s.config.borrow().clone();
    let snapshot = if s.xdp {
        let pin_dir = config.daemon.pin_dir.clone();
        match tokio::task::spawn_blocking(move || stats::snapshot(&pin_dir)).await {
            Ok(Ok(snap)) => Some(snap),
            Ok(Err(e)) => {
                warn!(error = %ErrorChain(&e), "reading the data-path counters for /metrics");
                None
            }
            Err(_) => None,
        }
    } else {
        None
    };
    let body = s.metrics.encode(snapshot.as_ref(), &config);
    ([(header::CONTENT_TYPE, Metrics::CONTENT_TYPE)], body)
}
