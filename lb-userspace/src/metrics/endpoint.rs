//! The Prometheus endpoint: `GET /metrics` on `api.metrics_listen`, without
//! a token (bind it to an address only the scraper reaches).
//!
//! Each scrape reads the data-path counters from the pinned maps (when the
//! XDP path runs) and encodes everything with the running config's names.
use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tracing::warn;

use super::Metrics;
use crate::{bpf::stats, config::Config, error_chain::ErrorChain};

#[derive(Clone)]
struct Scrape {
    metrics: Arc<Metrics>,
    config: watch::Receiver<Arc<Config>>,
    xdp: bool,
}

/// A running endpoint; dropping it stops serving.
#[derive(Debug)]
pub struct MetricsServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
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
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "the metrics endpoint stopped");
        }
    });
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
