//! Certificate choice by SNI: the first certificate (in config order)
//! whose subject alternative names cover the client's server name — exact
//! DNS names and wildcards, matched by webpki as a client would — else the
//! listener's default certificate.
use std::sync::Arc;

use rustls::{
    client::verify_server_name,
    pki_types::ServerName,
    server::{ClientHello, ParsedCertificate, ResolvesServerCert},
    sign::CertifiedKey,
};

use super::TlsError;
use crate::config::ListenerTls;
use crate::pem::load_certified_key;

#[derive(Debug)]
pub struct SniResolver {
    /// In config order.
    certs: Vec<Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    /// Reads every certificate and key of a listener.
    pub fn load(tls: &ListenerTls) -> Result<Self, TlsError> {
        let certs = tls
            .certificates
            .iter()
            .map(|c| load_certified_key(&c.cert, &c.key))
            .collect::<Result<Vec<_>, _>>()?;
        let index = tls.certificates.iter().position(|c| c.default).unwrap_or(0);
        let default = certs.get(index).cloned().ok_or(TlsError::NoCertificate)?;
        Ok(Self { certs, default })
    }

    /// The certificate for a client that asked for `sni`.
    pub fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni.and_then(|s| ServerName::try_from(s).ok()) else {
            return Arc::clone(&self.default);
        };
        self.certs
            .iter()
            .find(|ck| covers(ck, &name))
            .unwrap_or(&self.default)
            .clone()
    }
}

/// Whether the end-entity certificate of `ck` is valid for `name`.
fn covers(ck: &CertifiedKey, name: &ServerName<'_>) -> bool {
    ck.cert
        .first()
        .and_then(|der| ParsedCertificate::try_from(der).ok())
        .is_some_and(|parsed| verify_server_name(&parsed, name).is_ok())
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}
