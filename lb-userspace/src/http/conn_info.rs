//! What one client connection of an http/https listener knows about
//! itself, for every request it carries: its client, TLS, `X-Forwarded-*`
//! values, routable view, deadlines, idle-timeout activity and, on HTTP/2,
//! the target connections its streams share.
use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use ::http::Version;
use tokio::sync::Semaphore;

use super::{deadline::Deadlines, headers::Forwarded, idle::Activity, listener::HttpListener};
use crate::{latest::Latest, routable::Routable};

/// What the connection knows about itself.
pub struct ConnInfo {
    pub client: SocketAddr,
    /// Negotiated cipher suite and protocol version (https only), as
    /// OpenSSL names them in ELB's logs.
    pub tls: Option<(String, String)>,
    /// The `X-Forwarded-*` values its requests get.
    pub forwarded: Forwarded,
    /// The targets its requests may go to.
    pub routable: Latest<Arc<Routable>>,
    /// Its requests' response timeouts.
    pub deadlines: Deadlines,
    /// What its client idle timeout watches.
    pub activity: Arc<Activity>,
    /// HTTP/2: the target connections its streams may hold at once (made
    /// by the first HTTP/2 request; HTTP/1 holds one at most anyway).
    target_slots: OnceLock<Arc<Semaphore>>,
}

impl ConnInfo {
    /// `h2`: HTTP/2 was negotiated by ALPN.
    pub fn new(
        client: SocketAddr,
        tls: Option<(String, String)>,
        l: &HttpListener,
        h2: bool,
    ) -> Self {
        Self {
            client,
            tls,
            forwarded: Forwarded::new(client.ip(), l.scheme(), l.port),
            routable: Latest::new(l.routable.clone()),
            deadlines: Deadlines::default(),
            activity: Activity::new(h2),
            target_slots: OnceLock::new(),
        }
    }

    /// HTTP/2 requests share `limit` target connections (the listener's
    /// `http2_max_target_connections` when the first came); `None` for
    /// HTTP/1.
    pub fn target_slots(&self, version: Version, limit: usize) -> Option<Arc<Semaphore>> {
        (version == Version::HTTP_2).then(|| {
            Arc::clone(
                self.target_slots
                    .get_or_init(|| Arc::new(Semaphore::new(limit))),
            )
        })
    }
}
