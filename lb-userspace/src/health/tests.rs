//! The checker against real listeners on 127.0.0.1 ephemeral ports.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinHandle,
};

use super::*;
use crate::config::{CheckAddress, CheckKind, CheckPort, HealthCheck, HttpCheck, Matcher};

fn check(kind: CheckKind, healthy_threshold: u32, unhealthy_threshold: u32) -> HealthCheck {
    HealthCheck {
        kind,
        port: CheckPort::TrafficPort,
        address: CheckAddress::Target,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        healthy_threshold,
        unhealthy_threshold,
    }
}

fn http(path: &str, matcher: &str, host: Option<&str>) -> HttpCheck {
    HttpCheck {
        path: path.into(),
        matcher: Matcher::parse(matcher).unwrap(),
        host: host.map(Into::into),
    }
}

fn job(group: &str, endpoint: SocketAddr, check: HealthCheck) -> ProbeJob {
    ProbeJob {
        group: group.into(),
        endpoint,
        check,
        route: probe::Route::Direct,
    }
}

async fn next_event(rx: &mut mpsc::UnboundedReceiver<HealthEvent>) -> HealthEvent {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("no health event within 30 s")
        .expect("the checker hung up")
}

fn probes(metrics: &HealthMetrics, group: &str, result: &str) -> u64 {
    metrics.probe_count(Some((group, result)))
}

/// Accepts and closes connections until aborted.
async fn tcp_server(listener: TcpListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Ok((s, _)) = listener.accept().await {
                drop(s);
            }
        }
    })
}

/// Answers each request with `status`, reporting the request head.
fn http_server(listener: TcpListener, status: u16, heads: mpsc::UnboundedSender<String>) {
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let heads = heads.clone();
            tokio::spawn(async move {
                let head = read_head(&mut s).await;
                let _ = heads.send(head);
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
}

async fn read_head<S: AsyncReadExt + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn tcp_check_crosses_after_exactly_the_thresholds() {
    let metrics = HealthMetrics::default();
    let (mut checker, mut rx) = Checker::new(metrics.clone()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tcp_server(listener).await;
    checker.apply(vec![job("tcp", addr, check(CheckKind::Tcp, 3, 2))]);

    let e = next_event(&mut rx).await;
    assert_eq!((e.health, e.reason), (Verdict::Healthy, None));
    assert_eq!(
        probes(&metrics, "tcp", "success"),
        1,
        "first success suffices"
    );
    assert_eq!(checker.status("tcp", addr), Some(Status::Healthy));

    server.abort();
    let _ = server.await; // the listener is closed once the task is gone
    let e = next_event(&mut rx).await;
    assert_eq!(e.group, "tcp");
    assert_eq!(e.endpoint, addr);
    assert_eq!(e.health, Verdict::Unhealthy);
    assert_eq!(e.reason, Some(Reason::FailedHealthChecks));
    assert!(
        e.description.contains("Connection refused"),
        "{}",
        e.description
    );
    assert_eq!(probes(&metrics, "tcp", "failed"), 2);
    assert_eq!(checker.status("tcp", addr), Some(Status::Unhealthy));

    let successes = probes(&metrics, "tcp", "success");
    let server = tcp_server(TcpListener::bind(addr).await.unwrap()).await;
    let e = next_event(&mut rx).await;
    assert_eq!((e.health, e.reason), (Verdict::Healthy, None));
    assert_eq!(probes(&metrics, "tcp", "success") - successes, 3);
    server.abort();
}

#[tokio::test]
async fn http_status_outside_the_matcher_is_a_response_code_mismatch() {
    let metrics = HealthMetrics::default();
    let (mut checker, mut rx) = Checker::new(metrics.clone()).unwrap();
    let (heads_tx, mut heads) = mpsc::unbounded_channel();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    http_server(listener, 503, heads_tx);
    let kind = CheckKind::Http(http("/healthz?full=1", "200-399", Some("web.example")));
    checker.apply(vec![job("http", addr, check(kind, 2, 2))]);

    let e = next_event(&mut rx).await;
    assert_eq!(e.health, Verdict::Unhealthy);
    assert_eq!(e.reason, Some(Reason::ResponseCodeMismatch));
    assert_eq!(
        e.description,
        "Health checks failed with these codes: [503]"
    );
    assert_eq!(probes(&metrics, "http", "response_code_mismatch"), 2);
    let head = heads.recv().await.unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with("get /healthz?full=1 http/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nhost: web.example\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
}

#[tokio::test]
async fn http_status_inside_the_matcher_is_healthy_and_host_defaults_to_the_target() {
    let (mut checker, mut rx) = Checker::new(HealthMetrics::default()).unwrap();
    let (heads_tx, mut heads) = mpsc::unbounded_channel();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    http_server(listener, 302, heads_tx);
    let kind = CheckKind::Http(http("/", "200,300-399", None));
    checker.apply(vec![job("http", addr, check(kind, 2, 2))]);
    let e = next_event(&mut rx).await;
    assert_eq!((e.health, e.reason), (Verdict::Healthy, None));
    let head = heads.recv().await.unwrap().to_ascii_lowercase();
    assert!(head.contains(&format!("\r\nhost: {addr}\r\n")), "{head}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let metrics = HealthMetrics::default();
    let (mut checker, mut rx) = Checker::new(metrics.clone()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts and holds every connection without a byte of answer.
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            if let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        }
    });
    let kind = CheckKind::Http(http("/", "200", None));
    checker.apply(vec![job("slow", addr, check(kind, 2, 2))]);
    let e = next_event(&mut rx).await;
    assert_eq!(e.health, Verdict::Unhealthy);
    assert_eq!(e.reason, Some(Reason::Timeout));
    assert_eq!(e.description, "Request timed out");
    assert_eq!(probes(&metrics, "slow", "timeout"), 2);
}

#[tokio::test]
async fn https_check_accepts_a_self_signed_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (heads_tx, mut heads) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, heads) = (acceptor.clone(), heads_tx.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let _ = heads.send(read_head(&mut tls).await);
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                let _ = tls.write_all(ok).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let (mut checker, mut rx) = Checker::new(HealthMetrics::default()).unwrap();
    let kind = CheckKind::Https(http("/tls", "200", Some("localhost")));
    checker.apply(vec![job("https", addr, check(kind, 2, 2))]);
    let e = next_event(&mut rx).await;
    assert_eq!((e.health, e.reason), (Verdict::Healthy, None), "{e:?}");
    let head = heads.recv().await.unwrap();
    assert!(head.starts_with("GET /tls HTTP/1.1\r\n"), "{head}");
}

#[tokio::test]
async fn apply_keeps_unchanged_jobs_and_restarts_changed_ones() {
    let (mut checker, mut rx) = Checker::new(HealthMetrics::default()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = listener.local_addr().unwrap();
    let _server = tcp_server(listener).await;
    // Nothing listens on b: bound then dropped.
    let b = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let tcp = check(CheckKind::Tcp, 2, 2);
    let summary = checker.apply(vec![job("g", a, tcp.clone()), job("g", b, tcp.clone())]);
    assert_eq!(
        summary,
        ApplySummary {
            started: 2,
            ..Default::default()
        }
    );
    let mut seen = [next_event(&mut rx).await, next_event(&mut rx).await];
    seen.sort_by_key(|e| e.endpoint != a);
    assert_eq!((seen[0].endpoint, seen[0].health), (a, Verdict::Healthy));
    assert_eq!((seen[1].endpoint, seen[1].health), (b, Verdict::Unhealthy));

    let mut slower = tcp.clone();
    slower.interval = Duration::from_secs(2);
    slower.timeout = Duration::from_secs(2);
    let summary = checker.apply(vec![
        job("g", a, tcp.clone()),
        job("g", b, slower),
        job("other", a, tcp.clone()),
    ]);
    assert_eq!(
        summary,
        ApplySummary {
            started: 1,
            restarted: 1,
            stopped: 0,
            kept: 1
        }
    );
    // Kept and restarted jobs keep their health: no new crossing for them.
    assert_eq!(checker.status("g", a), Some(Status::Healthy));
    assert_eq!(checker.status("g", b), Some(Status::Unhealthy));
    assert_eq!(checker.status("other", a), Some(Status::Initial));
    let e = next_event(&mut rx).await;
    assert_eq!(
        (e.group.as_str(), e.endpoint, e.health),
        ("other", a, Verdict::Healthy)
    );

    let summary = checker.apply(vec![]);
    assert_eq!(summary.stopped, 3);
    assert!(checker.is_empty());
    assert_eq!(checker.status("g", a), None);
}

#[test]
fn jobs_from_config_lists_checked_groups_only() {
    let config = crate::config::Config::parse(
        r#"
[daemon]
interfaces = ["eth0"]

[[target_group]]
name = "web"
protocol = "http"
port = 8080
  [target_group.health_check]
  port = 9000
  [[target_group.target]]
  address = "10.1.0.2"
  [[target_group.target]]
  address = "10.1.0.3"
  port = 8081

[[target_group]]
name = "dns"
protocol = "udp"
port = 53
  [target_group.health_check]
  enabled = false
  [[target_group.target]]
  address = "10.1.0.4"
"#,
    )
    .unwrap();
    let jobs = jobs_from_config(&config);
    let endpoints: Vec<_> = jobs
        .iter()
        .map(|j| (j.group.as_str(), j.endpoint.to_string()))
        .collect();
    assert_eq!(
        endpoints,
        [
            ("web", "10.1.0.2:8080".into()),
            ("web", "10.1.0.3:8081".into())
        ]
    );
    assert_eq!(
        jobs[1].check.probe_addr(jobs[1].endpoint).to_string(),
        "10.1.0.3:9000"
    );
    assert!(matches!(jobs[0].check.kind, CheckKind::Http(_)));
}

#[tokio::test]
async fn an_encapsulated_probe_without_a_mark_fails_and_sends_nothing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let prober = probe::Prober::new(tls::client_config().unwrap());
    let route = probe::Route::Encapsulated {
        vip: addr.ip(),
        mark: None,
    };
    let outcome = prober
        .probe(&check(CheckKind::Tcp, 2, 2), addr, route)
        .await;
    assert_eq!(
        outcome,
        probe::Outcome::Failed(
            "no probe path to 127.0.0.1 through 127.0.0.1: the encapsulation of dsr health probes is not set up (see the daemon's log)"
                .to_owned()
        )
    );
    assert!(listener.accept().is_err(), "nothing connected");
}

#[tokio::test]
async fn refused_connect_fails_fast() {
    // The bound-then-dropped port refuses at once: no timeout needed.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let prober = probe::Prober::new(tls::client_config().unwrap());
    let outcome = prober
        .probe(&check(CheckKind::Tcp, 2, 2), addr, probe::Route::Direct)
        .await;
    assert_eq!(outcome.reason(), Some(Reason::FailedHealthChecks));
    assert!(TcpStream::connect(addr).await.is_err());
}

#[test]
fn dsr_groups_probe_through_the_first_vip_of_the_targets_family() {
    let config = crate::config::Config::parse(
        r#"
[daemon]
interfaces = ["eth0"]

[[listener]]
name = "v4"
protocol = "tcp"
address = "10.0.0.100"
port = 80
target_group = "dsr4"

[[listener]]
name = "v4b"
protocol = "tcp"
address = "10.0.0.101"
port = 80
target_group = "dsr4"

[[listener]]
name = "v6"
protocol = "tcp"
address = "fd00::100"
port = 80
target_group = "dsr6"

[[target_group]]
name = "dsr4"
protocol = "tcp"
port = 80
forwarding = "dsr"
  [[target_group.target]]
  address = "10.1.0.2"

[[target_group]]
name = "dsr6"
protocol = "tcp"
port = 80
forwarding = "dsr"
  [target_group.health_check]
  address = "target"
  [[target_group.target]]
  address = "fd00:1::2"

[[target_group]]
name = "nat"
protocol = "tcp"
port = 8080
  [[target_group.target]]
  address = "10.1.0.3"
"#,
    )
    .unwrap();
    assert_eq!(config.validate(), Ok(()));
    let jobs = jobs_from_config(&config);
    let routes: Vec<(&str, probe::Route)> =
        jobs.iter().map(|j| (j.group.as_str(), j.route)).collect();
    assert_eq!(
        routes,
        [
            (
                "dsr4",
                probe::Route::Encapsulated {
                    vip: "10.0.0.100".parse().unwrap(),
                    mark: None
                }
            ),
            ("dsr6", probe::Route::Direct),
            ("nat", probe::Route::Direct),
        ]
    );
}
