use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use super::*;
use crate::config::{Certificate, SecurityPolicy};

/// The PEM loader on a config's certificate entry.
fn load_certified_key(
    c: &Certificate,
) -> Result<std::sync::Arc<rustls::sign::CertifiedKey>, PemError> {
    crate::pem::load_certified_key(&c.cert, &c.key)
}

/// A directory under /tmp removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("lb-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _gone = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for `names`, written as `<tag>.pem`/`.key`.
fn cert(dir: &Path, tag: &str, names: &[&str]) -> Certificate {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let ck = rcgen::generate_simple_self_signed(names).expect("rcgen");
    let cert = dir.join(format!("{tag}.pem"));
    let key = dir.join(format!("{tag}.key"));
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.key_pair.serialize_pem()).expect("write key");
    Certificate {
        cert,
        key,
        default: false,
    }
}

fn listener_tls(certificates: Vec<Certificate>) -> ListenerTls {
    ListenerTls {
        certificates,
        security_policy: SecurityPolicy::default(),
        alpn: vec![],
    }
}

#[test]
fn sni_picks_exact_then_wildcard_else_default() {
    let dir = Dir::new();
    let a = cert(&dir.0, "a", &["a.example.com"]);
    let w = cert(&dir.0, "w", &["*.example.org"]);
    let mut d = cert(&dir.0, "d", &["default.example.net"]);
    d.default = true;
    let tls = listener_tls(vec![a.clone(), w.clone(), d.clone()]);
    let r = SniResolver::load(&tls).expect("load");
    let der = |c: &Certificate| load_certified_key(c).expect("load").cert[0].clone();
    assert_eq!(r.pick(Some("a.example.com")).cert[0], der(&a));
    assert_eq!(r.pick(Some("x.example.org")).cert[0], der(&w));
    // A wildcard covers one label only.
    assert_eq!(r.pick(Some("y.x.example.org")).cert[0], der(&d));
    assert_eq!(r.pick(Some("unknown.test")).cert[0], der(&d));
    assert_eq!(r.pick(None).cert[0], der(&d));
}

#[test]
fn first_certificate_is_the_default_when_none_is_marked() {
    let dir = Dir::new();
    let a = cert(&dir.0, "a", &["a.example.com"]);
    let b = cert(&dir.0, "b", &["b.example.com"]);
    let r = SniResolver::load(&listener_tls(vec![a.clone(), b])).expect("load");
    let first = load_certified_key(&a).expect("load").cert[0].clone();
    assert_eq!(r.pick(None).cert[0], first);
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let dir = Dir::new();
    let a = cert(&dir.0, "a", &["a.example.com"]);
    let b = cert(&dir.0, "b", &["b.example.com"]);
    let mixed = Certificate {
        cert: a.cert.clone(),
        key: b.key.clone(),
        default: false,
    };
    let err = load_certified_key(&mixed)
        .expect_err("mismatch")
        .to_string();
    assert_eq!(
        err,
        format!(
            "key {} does not belong to certificate {}",
            b.key.display(),
            a.cert.display()
        )
    );
}

#[test]
fn unreadable_and_empty_files_name_the_file() {
    let dir = Dir::new();
    let missing = dir.0.join("missing.pem");
    let empty = dir.0.join("empty.pem");
    std::fs::write(&empty, "not pem\n").expect("write");
    let e = load_certified_key(&Certificate {
        cert: missing.clone(),
        key: missing.clone(),
        default: false,
    })
    .expect_err("missing");
    assert!(
        e.to_string()
            .starts_with(&format!("cannot read {}", missing.display())),
        "{e}"
    );
    let e = load_roots(&empty).expect_err("empty");
    assert_eq!(
        e.to_string(),
        format!("{} holds no PEM certificate", empty.display())
    );
}

#[test]
fn policies_offer_their_versions_and_aead_suites_only() {
    use rustls::{ProtocolVersion, SupportedCipherSuite};
    let versions =
        |p| -> Vec<ProtocolVersion> { policy::versions(p).iter().map(|v| v.version).collect() };
    assert_eq!(
        versions(SecurityPolicy::Tls13Tls12),
        [ProtocolVersion::TLSv1_3, ProtocolVersion::TLSv1_2]
    );
    assert_eq!(
        versions(SecurityPolicy::Tls13Only),
        [ProtocolVersion::TLSv1_3]
    );
    assert_eq!(
        versions(SecurityPolicy::Fs12Restricted),
        [ProtocolVersion::TLSv1_2]
    );
    let tls12 = |p| -> Vec<String> {
        provider(p)
            .cipher_suites
            .iter()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
            .map(|s| format!("{:?}", s.suite()))
            .collect()
    };
    assert!(
        tls12(SecurityPolicy::Tls13Tls12Restricted)
            .iter()
            .all(|s| s.starts_with("TLS_ECDHE_") && s.contains("_GCM_")),
        "{:?}",
        tls12(SecurityPolicy::Tls13Tls12Restricted)
    );
    assert!(
        tls12(SecurityPolicy::Tls13Tls12)
            .iter()
            .any(|s| s.contains("CHACHA20"))
    );
}

#[test]
fn suites_come_in_elbs_order_and_the_server_imposes_it() {
    let names = |p| -> Vec<String> {
        provider(p)
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect()
    };
    assert_eq!(
        names(SecurityPolicy::Tls13Tls12),
        [
            "TLS13_AES_128_GCM_SHA256",
            "TLS13_AES_256_GCM_SHA384",
            "TLS13_CHACHA20_POLY1305_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        ]
    );
    let dir = Dir::new();
    let tls = listener_tls(vec![cert(&dir.0, "a", &["a.example.com"])]);
    let config = server_config(&tls, &[], tickets::fresh().unwrap()).expect("config");
    assert!(config.ignore_client_order);
    assert!(config.ticketer.enabled());
}

#[test]
fn https_listeners_default_to_h2_and_http11() {
    let dir = Dir::new();
    let tls = listener_tls(vec![cert(&dir.0, "a", &["a.example.com"])]);
    let config = https_server_config(&tls, tickets::fresh().unwrap()).expect("config");
    assert_eq!(
        config.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    let mut own = tls.clone();
    own.alpn = vec!["http/1.1".to_owned()];
    let config = https_server_config(&own, tickets::fresh().unwrap()).expect("config");
    assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
    assert!(
        server_config(&tls, &[], tickets::fresh().unwrap())
            .expect("config")
            .alpn_protocols
            .is_empty()
    );
}
