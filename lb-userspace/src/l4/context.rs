//! What every connection (tcp, tls) or flow (udp) of one L4 listener
//! shares with the listener's loop.
use std::sync::{Arc, atomic::AtomicU64};

use tokio::sync::watch;

use super::metrics::L4Metrics;
use crate::routable::RoutableWatch;

pub struct ListenerCtx {
    pub routable: RoutableWatch,
    pub metrics: Arc<L4Metrics>,
    /// Connections (or flows) opened so far: the round-robin position.
    pub next: AtomicU64,
    /// Becomes `true` (or closes) when the listener is removed.
    pub stop: watch::Receiver<bool>,
}

impl ListenerCtx {
    pub fn new(
        routable: RoutableWatch,
        metrics: Arc<L4Metrics>,
        stop: watch::Receiver<bool>,
    ) -> Arc<Self> {
        Arc::new(Self {
            routable,
            metrics,
            next: AtomicU64::new(0),
            stop,
        })
    }
}
