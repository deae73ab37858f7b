//! The accept loop of a tcp or tls listener: each accepted connection
//! within the listener's caps ([`crate::conn_cap`]; the others are reset
//! here, at once) goes to a worker thread ([`crate::workers`]) and is
//! served there ([`super::connection`]) with the route the listener holds
//! at that moment.
use std::{sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch};
use tracing::{debug, warn};

use super::{connection, context::ListenerCtx, route::L4Route};
use crate::{
    conn_cap::{self, Counts, RefusedSeries},
    stop::stopped,
    workers::Workers,
};

/// Pause after a failed accept (e.g. out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts on `socket` until the listener's stop signal.
pub async fn serve(
    name: String,
    socket: TcpListener,
    route: watch::Receiver<Arc<L4Route>>,
    ctx: Arc<ListenerCtx>,
    workers: Arc<Workers>,
) {
    let mut stop = ctx.stop.clone();
    let counts = Counts::default();
    let refused = RefusedSeries::new(&ctx.metrics.refused, &name);
    loop {
        let accepted = tokio::select! {
            () = stopped(&mut stop) => break,
            r = socket.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let r = Arc::clone(&route.borrow());
                let slot = match counts.admit(peer.ip(), r.caps) {
                    Ok(slot) => slot,
                    Err(cap) => {
                        refused.count(cap);
                        conn_cap::refuse(stream);
                        continue;
                    }
                };
                let ctx = Arc::clone(&ctx);
                workers.serve(stream, move |s| async move {
                    let _slot = slot;
                    connection::serve(s, peer, r, ctx).await;
                });
            }
            Err(e) => {
                warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    debug!(listener = %name, "listener stopped");
}
