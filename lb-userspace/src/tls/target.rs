//! TLS toward the targets of a `tls` or `https` target group: the
//! connector built from its `[target_group.tls]` and the settings that
//! name the server to each target. Shared by the L4 proxy and the HTTP
//! back-end pools.
use tokio_rustls::TlsConnector;

use super::{TlsError, client_config};
use crate::config::TargetGroupTls;

/// The client side of a group's TLS toward its targets.
pub struct TargetTls {
    pub connector: TlsConnector,
    pub settings: TargetGroupTls,
}

impl TargetTls {
    /// The connector for `settings` (reads the CA file).
    pub fn new(settings: &TargetGroupTls) -> Result<Self, TlsError> {
        Ok(Self {
            connector: TlsConnector::from(client_config(settings)?),
            settings: settings.clone(),
        })
    }
}
