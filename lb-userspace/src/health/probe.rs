//! One health probe: TCP connect, or an HTTP(S) `GET` whose status must
//! satisfy the matcher, bounded by the check's timeout.
use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::Reason;
use crate::config::{CheckKind, HealthCheck, HttpCheck};

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Did not complete within the timeout.
    Timeout,
    /// Connection refused or reset, TLS or HTTP failure; the text says which.
    Failed(String),
    /// An HTTP status the matcher does not accept.
    ResponseCodeMismatch(u16),
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }

    /// ELB's reason code for a target that failed with this outcome.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Outcome::Success => None,
            Outcome::Timeout => Some(Reason::Timeout),
            Outcome::Failed(_) => Some(Reason::FailedHealthChecks),
            Outcome::ResponseCodeMismatch(_) => Some(Reason::ResponseCodeMismatch),
        }
    }

    /// Value of the `result` label of `lb_health_check_duration_seconds`.
    pub fn result_label(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Timeout => "timeout",
            Outcome::Failed(_) => "failed",
            Outcome::ResponseCodeMismatch(_) => "response_code_mismatch",
        }
    }

    /// ELB-style description for `DescribeTargetHealth`.
    pub fn description(&self) -> String {
        match self {
            Outcome::Success => "Health checks succeeded".into(),
            Outcome::Timeout => "Request timed out".into(),
            Outcome::Failed(why) => format!("Health checks failed: {why}"),
            Outcome::ResponseCodeMismatch(code) => {
                format!("Health checks failed with these codes: [{code}]")
            }
        }
    }
}

/// Runs probes; cheap to share between jobs.
#[derive(Clone)]
pub struct Prober {
    tls: TlsConnector,
}

impl Prober {
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Self {
        Prober {
            tls: TlsConnector::from(tls),
        }
    }

    /// Probes the target that receives traffic on `endpoint`.
    pub async fn probe(&self, check: &HealthCheck, endpoint: SocketAddr) -> Outcome {
        let addr = check.probe_addr(endpoint);
        tokio::time::timeout(check.timeout, self.exchange(&check.kind, addr))
            .await
            .unwrap_or(Outcome::Timeout)
    }

    async fn exchange(&self, kind: &CheckKind, addr: SocketAddr) -> Outcome {
        let stream = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => return Outcome::Failed(format!("connecting to {addr}: {e}")),
        };
        match kind {
            CheckKind::Tcp => {
                // Close with a reset, as HAProxy's checks do: no FIN
                // exchange and no TIME_WAIT per probe, half the kernel
                // work at 10,000 probes a second. A failure to set it
                // changes only how the connection ends.
                let _ = stream.set_zero_linger();
                Outcome::Success
            }
            CheckKind::Http(http) => http_check(TokioIo::new(stream), http, addr).await,
            CheckKind::Https(http) => {
                let name = server_name(http, addr);
                match self.tls.connect(name, stream).await {
                    Ok(tls) => http_check(TokioIo::new(tls), http, addr).await,
                    Err(e) => Outcome::Failed(format!("TLS handshake with {addr}: {e}")),
                }
            }
        }
    }
}

/// SNI: the Host header's name when it is a DNS name, else none (an IP
/// address name sends no SNI).
fn server_name(http: &HttpCheck, addr: SocketAddr) -> ServerName<'static> {
    let host = http.host.as_deref().map(|h| {
        // Strip a port; keep bracketed IPv6 literals whole.
        match h.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => h,
        }
    });
    host.and_then(|h| ServerName::try_from(h.trim_matches(['[', ']'])).ok())
        .map(|n| n.to_owned())
        .unwrap_or(ServerName::IpAddress(addr.ip().into()))
}

/// `GET path` with `Connection: close`; the status decides. (Also the
/// body of the `health_response` fuzz target.)
pub(crate) async fn http_check<IO>(io: IO, http: &HttpCheck, addr: SocketAddr) -> Outcome
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let host = http.host.clone().unwrap_or_else(|| addr.to_string());
    let request = match Request::get(http.path.as_str())
        .header(header::HOST, host)
        .header(header::CONNECTION, "close")
        .header(header::USER_AGENT, "lb-health-checker/1.0")
        .body(Empty::<Bytes>::new())
    {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("building the request: {e}")),
    };
    let (mut sender, conn) = match http1::handshake(io).await {
        Ok(pair) => pair,
        Err(e) => return Outcome::Failed(format!("HTTP to {addr}: {e}")),
    };
    // Drive the connection here rather than in a task of its own: both end
    // when this probe does. The connection may finish (server closed after
    // answering) in the same poll that delivers the response, so its end
    // only means failure once the request future has said so too.
    let send = sender.send_request(request);
    tokio::pin!(send, conn);
    let response = tokio::select! {
        biased;
        r = &mut send => r,
        r = &mut conn => match r {
            Ok(()) => send.await,
            Err(e) => return Outcome::Failed(format!("HTTP to {addr}: {e}")),
        },
    };
    match response {
        Ok(r) if http.matcher.matches(r.status().as_u16()) => Outcome::Success,
        Ok(r) => Outcome::ResponseCodeMismatch(r.status().as_u16()),
        Err(e) => Outcome::Failed(format!("HTTP to {addr}: {e}")),
    }
}
