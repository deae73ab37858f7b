//! What a tcp or tls listener does with a connection, built from the
//! config: terminate TLS or not, which group, PROXY header, TLS toward
//! targets. Rebuilt on every reload (so certificate files are re-read) and
//! handed to the running listener without touching its socket.
use std::time::Duration;

use tokio_rustls::TlsAcceptor;

use crate::{
    config::{Config, DEFAULT_TCP_IDLE_TIMEOUT, Listener, Protocol},
    conn_cap::Caps,
    tls::{self, HandshakeLog, TargetTls, Tickets, TlsError},
};

/// How one tcp or tls listener serves its connections.
pub struct L4Route {
    pub listener: String,
    pub target_group: String,
    /// The group's `tcp_idle_timeout`: a relayed connection with no byte
    /// either way for this long is closed.
    pub idle_timeout: Duration,
    pub proxy_v2: bool,
    /// `tls` listeners: the server side of the client's handshake.
    pub terminate: Option<TlsAcceptor>,
    /// `tls` listeners: the failed handshakes' log sample.
    pub handshake_log: HandshakeLog,
    /// `tls` target groups: the client side toward the target.
    pub target_tls: Option<TargetTls>,
    /// Connection caps, applied as connections are accepted.
    pub caps: Caps,
}

impl L4Route {
    /// The route of `l` (a tcp or tls listener of a validated config);
    /// a `tls` listener's session tickets and IDs come from `tickets`.
    pub fn build(config: &Config, l: &Listener, tickets: &Tickets) -> Result<Self, TlsError> {
        let group = l
            .target_group
            .as_deref()
            .and_then(|g| config.target_group(g));
        let terminate = match (&l.tls, l.protocol) {
            (Some(t), Protocol::Tls) => Some(TlsAcceptor::from(tls::server_config(
                t,
                &[],
                tickets.for_listener(&l.name)?,
            )?)),
            _ => None,
        };
        let target_tls = match group.and_then(|g| g.tls.as_ref()) {
            Some(t) => Some(TargetTls::new(t)?),
            None => None,
        };
        Ok(Self {
            listener: l.name.clone(),
            target_group: l.target_group.clone().unwrap_or_default(),
            idle_timeout: Duration::from_secs(u64::from(
                group.map_or(DEFAULT_TCP_IDLE_TIMEOUT, |g| g.tcp_idle_timeout),
            )),
            proxy_v2: group.is_some_and(|g| g.proxy_protocol_v2),
            terminate,
            handshake_log: HandshakeLog::default(),
            target_tls,
            caps: Caps::of(l),
        })
    }
}
