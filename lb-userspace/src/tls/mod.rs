//! TLS for the userspace listeners, with rustls and its ring provider.
//!
//! - [`server_config`] / [`https_server_config`]: a listener's
//!   `[listener.tls]` as an `Arc<rustls::ServerConfig>`: certificates chosen
//!   by SNI ([`sni`]), versions and suites of its security policy in the
//!   policy's order, which the server imposes ([`policy`]), its ALPN list,
//!   session tickets and IDs from the listener's state ([`tickets`]).
//! - [`HandshakeLog`]: failed client handshakes logged as a sample.
//! - [`client_config`]: a `tls` target group's `[target_group.tls]` as the
//!   client side toward targets ([`backend`]); [`TargetTls`]: that config
//!   as a connector with its settings, for the L4 proxy and the HTTP pools.
//! - [`load_certified_key`], [`load_roots`]: PEM files, also used by config
//!   validation so that a bad file is refused before anything runs.
mod backend;
mod handshake_log;
mod policy;
mod sni;
mod target;
pub mod tickets;

use std::sync::Arc;

use rustls::ServerConfig;

pub use crate::pem::{PemError, load_certified_key, load_roots};
pub use backend::{client_config, server_name, unverified_client_config};
pub use handshake_log::HandshakeLog;
pub use policy::provider;
pub use sni::SniResolver;
pub use target::TargetTls;
pub use tickets::Tickets;

use crate::config::ListenerTls;

/// ALPN of `https` listeners whose `alpn` is empty.
pub const HTTPS_ALPN: [&str; 2] = ["h2", "http/1.1"];

/// Why a listener's or target group's TLS settings cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("listener has no certificate")]
    NoCertificate,
    #[error("security policy {policy}: {source}")]
    Policy {
        policy: crate::config::SecurityPolicy,
        source: rustls::Error,
    },
    #[error("target TLS client: {0}")]
    Client(rustls::Error),
    #[error("session ticket keys: {0}")]
    Tickets(rustls::Error),
}

/// The server side of a listener: certificates by SNI, its security
/// policy (the server's suite order wins, as in ELB's policies),
/// `tls.alpn` (or `default_alpn` when that is empty), session tickets and
/// session IDs from `resumption` (the listener's, kept across reloads).
pub fn server_config(
    tls: &ListenerTls,
    default_alpn: &[&str],
    resumption: tickets::Resumption,
) -> Result<Arc<ServerConfig>, TlsError> {
    let resolver = SniResolver::load(tls)?;
    let policy = tls.security_policy;
    let mut config = ServerConfig::builder_with_provider(Arc::new(policy::provider(policy)))
        .with_protocol_versions(policy::versions(policy))
        .map_err(|source| TlsError::Policy { policy, source })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.ignore_client_order = true;
    config.ticketer = resumption.ticketer;
    config.session_storage = resumption.sessions;
    config.alpn_protocols = if tls.alpn.is_empty() {
        default_alpn.iter().map(|p| p.as_bytes().to_vec()).collect()
    } else {
        tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect()
    };
    Ok(Arc::new(config))
}

/// [`server_config`] for an `https` listener: ALPN `h2` and `http/1.1`
/// unless `tls.alpn` says otherwise.
pub fn https_server_config(
    tls: &ListenerTls,
    resumption: tickets::Resumption,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config(tls, &HTTPS_ALPN, resumption)
}

/// "TLSv1_3" and "TLS13_AES_128_GCM_SHA256" of an established connection,
/// for logs.
pub fn describe(conn: &rustls::CommonState) -> (String, String) {
    let version = conn
        .protocol_version()
        .map_or_else(|| "-".to_owned(), |v| format!("{v:?}"));
    let suite = conn
        .negotiated_cipher_suite()
        .map_or_else(|| "-".to_owned(), |s| format!("{:?}", s.suite()));
    (version, suite)
}

#[cfg(test)]
mod tests;
