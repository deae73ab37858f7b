//! One health probe: TCP connect, or an HTTP(S) `GET` whose status must
//! satisfy the matcher, bounded by the check's timeout; to the target's own
//! address, or to the VIP through the dsr encapsulation ([`Route`]).
use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    sync::Arc,
};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
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

/// Where a probe goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// The target's own address (`health_check.address = "target"`, and
    /// every nat group).
    Direct,
    /// `vip`, wrapped for the target as the XDP program wraps a client's
    /// packet (`address = "vip"`, dsr groups): the socket carries `mark`,
    /// which routes it into the probe device, whose program knows the
    /// target by it. `None` while the daemon has no probe path (the probe
    /// fails rather than go anywhere else).
    Encapsulated { vip: IpAddr, mark: Option<u32> },
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

    /// Probes the target that receives traffic on `endpoint`, by `route`.
    pub async fn probe(&self, check: &HealthCheck, endpoint: SocketAddr, route: Route) -> Outcome {
        let addr = check.probe_addr(endpoint);
        tokio::time::timeout(check.timeout, self.exchange(&check.kind, addr, route))
            .await
            .unwrap_or(Outcome::Timeout)
    }

    async fn exchange(&self, kind: &CheckKind, target: SocketAddr, route: Route) -> Outcome {
        let (stream, addr) = match connect(target, route).await {
            Ok(pair) => pair,
            Err(why) => return Outcome::Failed(why),
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

/// A connection to `target` (the address and port to probe) by `route`,
/// and the address it was made to (the VIP's for an encapsulated probe: the
/// default `Host` and SNI are what clients use).
async fn connect(target: SocketAddr, route: Route) -> Result<(TcpStream, SocketAddr), String> {
    match route {
        Route::Direct => TcpStream::connect(target)
            .await
            .map(|s| (s, target))
            .map_err(|e| format!("connecting to {target}: {e}")),
        Route::Encapsulated { mark: None, vip } => Err(format!(
            "no probe path to {} through {vip}: the encapsulation of dsr health probes is not set up (see the daemon's log)",
            target.ip()
        )),
        Route::Encapsulated {
            vip,
            mark: Some(mark),
        } => {
            let addr = SocketAddr::new(vip, target.port());
            let stream = encapsulated(target.ip(), addr, mark)
                .await
                .map_err(|e| format!("connecting to {addr} through {}: {e}", target.ip()))?;
            Ok((stream, addr))
        }
    }
}

/// A TCP connection to `vip` carrying `mark`, from this host's address
/// toward `target` (where the target's answers come back to; the probe
/// device the mark routes into has no address of its own).
async fn encapsulated(target: IpAddr, vip: SocketAddr, mark: u32) -> std::io::Result<TcpStream> {
    let source = source_toward(target)?;
    let socket = if vip.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    set_mark(&socket, mark)?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(vip).await
}

/// The address this host sends from toward `target`, by its routes (a
/// connected UDP socket sends nothing; the kernel picks its source): what
/// a probe through a VIP binds to, so where its answer comes back to.
pub fn source_toward(target: IpAddr) -> std::io::Result<IpAddr> {
    let any: SocketAddr = match target {
        IpAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let udp = UdpSocket::bind(any)?;
    // The discard port: nothing is sent.
    udp.connect(SocketAddr::new(target, 9))?;
    Ok(udp.local_addr()?.ip())
}

/// `SO_MARK` (needs CAP_NET_ADMIN, which the daemon has).
fn set_mark(socket: &TcpSocket, mark: u32) -> std::io::Result<()> {
    // SAFETY: setsockopt on a socket we own, with a u32 of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
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
