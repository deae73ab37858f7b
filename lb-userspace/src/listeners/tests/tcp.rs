//! In-process checks of what the e2e tests cannot see: the counters.
use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use prometheus_client::registry::Registry;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::{
    config::{Certificate, Config, ListenerTls, SecurityPolicy, TargetGroupTls},
    http::HttpMetrics,
    l4::{
        L4Metrics,
        metrics::{ErrorLabels, ErrorReason},
    },
    listeners::Listeners,
    routable::{self, Routable},
    tls,
};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _gone = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for 127.0.0.1 written to `dir`.
fn cert(dir: &Dir, tag: &str) -> Certificate {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("rcgen");
    let (cert, key) = (
        dir.0.join(format!("{tag}.pem")),
        dir.0.join(format!("{tag}.key")),
    );
    std::fs::write(&cert, ck.cert.pem()).expect("write");
    std::fs::write(&key, ck.key_pair.serialize_pem()).expect("write");
    Certificate {
        cert,
        key,
        default: false,
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test]
async fn a_target_certificate_from_another_ca_is_refused_and_counted() {
    let dir = Dir(std::env::temp_dir().join(format!("lb-proxy-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("dir");
    let (listener_cert, target_cert, wrong_ca) =
        (cert(&dir, "l"), cert(&dir, "t"), cert(&dir, "ca"));
    // The target: a TLS server with its own self-signed certificate.
    let target_tls = ListenerTls {
        certificates: vec![target_cert],
        security_policy: SecurityPolicy::default(),
        alpn: vec![],
    };
    let tickets = tls::tickets::fresh().expect("ticketer");
    let acceptor =
        TlsAcceptor::from(tls::server_config(&target_tls, &[], tickets).expect("target tls"));
    let target = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let target_port = target.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((s, _)) = target.accept().await {
            let _handshake = acceptor.accept(s).await;
        }
    });

    let port = free_port();
    let text = format!(
        r#"
[daemon]
dataplane = "userspace"

[[listener]]
name = "badca"
protocol = "tls"
address = "127.0.0.1"
port = {port}
target_group = "g"
  [[listener.tls.certificate]]
  cert = {:?}
  key = {:?}

[[target_group]]
name = "g"
protocol = "tls"
port = {target_port}
  [target_group.tls]
  ca_file = {:?}
  [[target_group.target]]
  address = "127.0.0.1"
"#,
        listener_cert.cert.display().to_string(),
        listener_cert.key.display().to_string(),
        wrong_ca.cert.display().to_string(),
    );
    // Not validated: loopback is no VIP for XDP, but fine for this check.
    let config = Config::parse(&text).expect("parse");
    let metrics = L4Metrics::register(&mut Registry::default());
    let (_tx, watch) = routable::channel(Routable::from_config(&config));
    let workers = crate::workers::Workers::start(2).expect("workers");
    let mut listeners =
        Listeners::new(watch, Arc::clone(&metrics), HttpMetrics::default(), workers);
    listeners.apply(&config, true).await.expect("apply");

    // The client's own handshake succeeds; the connection then closes.
    let client = tls::client_config(&TargetGroupTls {
        ca_file: None,
        verify: false,
        server_name: None,
    })
    .expect("client config");
    let tcp = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("connect");
    let mut s = TlsConnector::from(client)
        .connect(
            tls::server_name(
                &TargetGroupTls {
                    ca_file: None,
                    verify: false,
                    server_name: None,
                },
                [127, 0, 0, 1].into(),
            ),
            tcp,
        )
        .await
        .expect("client handshake with the listener");
    let _sent = s.write_all(b"hello\n").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?} {buf:?}");

    let refused = metrics.errors.get_or_create(&ErrorLabels {
        listener: "badca".to_owned(),
        reason: ErrorReason::TargetTls,
    });
    assert_eq!(refused.get(), 1);
}
