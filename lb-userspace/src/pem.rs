//! PEM files: certificate chains with their keys, CA bundles. Below both
//! the config (whose validation reads them, so a bad file is refused before
//! anything runs) and `tls` (which builds rustls configs from them).
use std::{
    fs::File,
    io::{self, BufReader},
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    RootCertStore,
    crypto::ring,
    pki_types::{CertificateDer, PrivateKeyDer},
    sign::CertifiedKey,
};

/// Why a PEM file cannot be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("{path}: unusable key: {source}")]
    Key {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("key {key} does not belong to certificate {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: not a usable certificate: {source}")]
    Certificate {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{path}: no usable CA certificate ({rejected} rejected)")]
    NoRoots { path: PathBuf, rejected: usize },
}

fn reader(path: &Path) -> Result<BufReader<File>, PemError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| PemError::Read {
            path: path.to_owned(),
            source,
        })
}

/// Every certificate in a PEM file, in file order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = rustls_pemfile::certs(&mut reader(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PemError::Read {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    rustls_pemfile::private_key(&mut reader(path)?)
        .map_err(|source| PemError::Read {
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| PemError::NoKey {
            path: path.to_owned(),
        })
}

/// A certificate chain with its signing key, checked to belong together
/// and to parse as an end-entity certificate.
pub fn load_certified_key(cert: &Path, key_file: &Path) -> Result<Arc<CertifiedKey>, PemError> {
    let chain = load_certs(cert)?;
    let key = load_key(key_file)?;
    let signer = ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|source| PemError::Key {
            path: key_file.to_owned(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Ok(()) => Ok(Arc::new(certified)),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(PemError::Mismatch {
                cert: cert.to_owned(),
                key: key_file.to_owned(),
            })
        }
        Err(source) => Err(PemError::Certificate {
            path: cert.to_owned(),
            source,
        }),
    }
}

/// The CA certificates of a PEM bundle as trust anchors.
pub fn load_roots(path: &Path) -> Result<RootCertStore, PemError> {
    let mut roots = RootCertStore::empty();
    let (_added, rejected) = roots.add_parsable_certificates(load_certs(path)?);
    if roots.is_empty() {
        return Err(PemError::NoRoots {
            path: path.to_owned(),
            rejected,
        });
    }
    Ok(roots)
}
