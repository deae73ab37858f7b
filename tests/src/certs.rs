//! Certificates for TLS tests: a throw-away CA and leaves it signs (rcgen).
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// A CA and the PEM of its certificate.
pub struct TestCa {
    key: KeyPair,
    cert: rcgen::Certificate,
}

impl TestCa {
    pub fn new(cn: &str) -> Self {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.self_signed(&key).expect("CA");
        Self { key, cert }
    }

    /// Writes `<tag>.pem`.
    pub fn write(&self, dir: &Path, tag: &str) -> PathBuf {
        let path = dir.join(format!("{tag}.pem"));
        std::fs::write(&path, self.cert.pem()).expect("write CA");
        path
    }

    /// A leaf for `names` with common name `cn`, written as `<tag>.pem` and
    /// `<tag>.key`; returns the cert and key paths.
    pub fn leaf(&self, dir: &Path, tag: &str, cn: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut p = CertificateParams::new(names).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("sign");
        let (c, k) = (
            dir.join(format!("{tag}.pem")),
            dir.join(format!("{tag}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write cert");
        std::fs::write(&k, key.serialize_pem()).expect("write key");
        (c, k)
    }
}
