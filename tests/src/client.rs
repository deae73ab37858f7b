//! Traffic clients for the end-to-end tests and the demo, speaking the
//! protocol of `lb-test-server`:
//! - TCP: the server greets with `"<name> <peer>\n"`, then echoes lines.
//! - UDP: the server answers each datagram with `"<name> <peer> <payload>"`.
//!
//! `lb-test-server client-tcp|client-udp` runs these inside a namespace and
//! prints one JSON line per flow ([`FlowReport::to_json`]); tests parse them
//! back with [`FlowReport::from_json`].

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::netns;

/// What one flow through the VIP showed: which target answered and which
/// client address that target saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowReport {
    /// `"tcp"` or `"udp"`.
    pub proto: String,
    /// Sequence number of the flow within the run.
    pub index: usize,
    /// The client socket's own address.
    pub local: SocketAddr,
    /// Name of the server that answered (`--name` of lb-test-server).
    pub target: String,
    /// Client address as the server saw it.
    pub seen: SocketAddr,
}

impl FlowReport {
    /// One flat JSON object on one line.
    pub fn to_json(&self) -> String {
        format!(
            r#"{{"proto":"{}","i":{},"local":"{}","target":"{}","seen":"{}"}}"#,
            self.proto, self.index, self.local, self.target, self.seen
        )
    }

    /// Parses a line written by [`Self::to_json`]. `Ok(None)` for a
    /// well-formed error line (`"error"` field), which [`json_error`] reads.
    pub fn from_json(line: &str) -> Result<Option<Self>> {
        if json_field(line, "error").is_some() {
            return Ok(None);
        }
        let get = |k: &str| json_field(line, k).ok_or_else(|| anyhow!("no {k:?} in {line:?}"));
        Ok(Some(Self {
            proto: get("proto")?.to_owned(),
            index: get("i")?.parse().context("field i")?,
            local: get("local")?.parse().context("field local")?,
            target: get("target")?.to_owned(),
            seen: get("seen")?.parse().context("field seen")?,
        }))
    }
}

/// The error line for flow `index`.
pub fn error_json(proto: &str, index: usize, error: &str) -> String {
    let clean: String = error
        .chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '\''
            } else {
                c
            }
        })
        .collect();
    format!(r#"{{"proto":"{proto}","i":{index},"error":"{clean}"}}"#)
}

/// The `error` field of an error line.
pub fn json_error(line: &str) -> Option<&str> {
    json_field(line, "error")
}

/// Value of `key` in a flat JSON object whose string values contain no
/// quotes or escapes (all this module writes).
pub fn json_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":");
    let start = line.find(&pat)? + pat.len();
    let rest = &line[start..];
    if let Some(s) = rest.strip_prefix('"') {
        s.find('"').map(|end| &s[..end])
    } else {
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Some(rest[..end].trim())
    }
}

/// Parses `"<name> <addr>"` (the TCP greeting, the head of a UDP reply).
pub fn parse_greeting(line: &str) -> Result<(String, SocketAddr)> {
    let mut parts = line.trim_end().splitn(3, ' ');
    let name = parts.next().filter(|s| !s.is_empty());
    let addr = parts.next();
    match (name, addr) {
        (Some(n), Some(a)) => Ok((
            n.to_owned(),
            a.parse()
                .with_context(|| format!("bad address in greeting {line:?}"))?,
        )),
        _ => bail!("malformed greeting {line:?}"),
    }
}

/// Opens `count` TCP connections to `vip` one after the other; each reads the
/// greeting, echoes one line and closes. Stops early after `max_errors`
/// failed connections. Results are in order; errors carry their message.
pub fn tcp_flows(
    vip: SocketAddr,
    count: usize,
    timeout: Duration,
    max_errors: usize,
) -> Vec<Result<FlowReport, String>> {
    let mut out = Vec::with_capacity(count);
    let mut errors = 0;
    for index in 0..count {
        let r = tcp_flow(vip, index, timeout).map_err(|e| format!("{e:#}"));
        if r.is_err() {
            errors += 1;
        }
        out.push(r);
        if errors >= max_errors {
            break;
        }
    }
    out
}

fn tcp_flow(vip: SocketAddr, index: usize, timeout: Duration) -> Result<FlowReport> {
    let mut conn = EchoConn::connect(vip, timeout)?;
    conn.echo(&format!("hello {index}"))?;
    Ok(FlowReport {
        proto: "tcp".into(),
        index,
        local: conn.local,
        target: conn.target,
        seen: conn.seen,
    })
}

/// Sends one datagram per flow from `count` sockets with distinct source
/// ports, all kept open until the end so no port is reused. Each flow retries
/// `retries` times on timeout.
pub fn udp_flows(
    vip: SocketAddr,
    count: usize,
    timeout: Duration,
    retries: u32,
    max_errors: usize,
) -> Vec<Result<FlowReport, String>> {
    let mut sockets = Vec::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    let mut errors = 0;
    for index in 0..count {
        let r = udp_flow(vip, index, timeout, retries, &mut sockets).map_err(|e| format!("{e:#}"));
        if r.is_err() {
            errors += 1;
        }
        out.push(r);
        if errors >= max_errors {
            break;
        }
    }
    out
}

fn udp_flow(
    vip: SocketAddr,
    index: usize,
    timeout: Duration,
    retries: u32,
    keep: &mut Vec<UdpSocket>,
) -> Result<FlowReport> {
    let any: IpAddr = match vip {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let sock = UdpSocket::bind((any, 0)).context("bind udp socket")?;
    // Connected: the kernel only delivers replies whose source is the VIP,
    // so a reply that was not translated back counts as lost.
    sock.connect(vip)
        .with_context(|| format!("connect udp {vip}"))?;
    sock.set_read_timeout(Some(timeout))?;
    let local = sock.local_addr()?;
    let payload = format!("flow {index}");
    let mut buf = [0u8; 2048];
    let mut last_err = None;
    for _ in 0..=retries {
        sock.send(payload.as_bytes()).context("send")?;
        match sock.recv(&mut buf) {
            Ok(n) => {
                let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
                let (target, seen) = parse_greeting(&reply)?;
                let echoed = reply.splitn(3, ' ').nth(2).unwrap_or("");
                if echoed != payload {
                    bail!("reply {reply:?} does not carry payload {payload:?}");
                }
                keep.push(sock);
                return Ok(FlowReport {
                    proto: "udp".into(),
                    index,
                    local,
                    target,
                    seen,
                });
            }
            Err(e) => last_err = Some(e),
        }
    }
    let e = last_err.expect("at least one attempt");
    Err(anyhow!(e).context(format!(
        "no reply from {vip} to {local} after {} tries",
        retries + 1
    )))
}

/// A TCP connection through the VIP, kept open to echo lines through it.
pub struct EchoConn {
    reader: BufReader<TcpStream>,
    /// The client side's address.
    pub local: SocketAddr,
    /// Server name from the greeting.
    pub target: String,
    /// Client address the server saw.
    pub seen: SocketAddr,
}

impl EchoConn {
    /// Connects to `vip` from the current thread's namespace and reads the
    /// greeting.
    pub fn connect(vip: SocketAddr, timeout: Duration) -> Result<Self> {
        let stream = TcpStream::connect_timeout(&vip, timeout)
            .with_context(|| format!("connect to {vip}"))?;
        Self::greeted(stream, vip, timeout)
    }

    /// [`Self::connect`] from source port `port` (SO_REUSEADDR, so a port
    /// whose last connection was reset ([`Self::reset`]) is free again):
    /// the same 5-tuple every time.
    pub fn connect_from(port: u16, vip: SocketAddr, timeout: Duration) -> Result<Self> {
        use socket2::{Domain, Socket, Type};
        let (domain, any) = match vip {
            SocketAddr::V4(_) => (Domain::IPV4, IpAddr::from(Ipv4Addr::UNSPECIFIED)),
            SocketAddr::V6(_) => (Domain::IPV6, IpAddr::from(Ipv6Addr::UNSPECIFIED)),
        };
        let sock = Socket::new(domain, Type::STREAM, None).context("tcp socket")?;
        sock.set_reuse_address(true)?;
        sock.bind(&SocketAddr::new(any, port).into())
            .with_context(|| format!("bind source port {port}"))?;
        sock.connect_timeout(&vip.into(), timeout)
            .with_context(|| format!("connect to {vip} from port {port}"))?;
        Self::greeted(sock.into(), vip, timeout)
    }

    fn greeted(stream: TcpStream, vip: SocketAddr, timeout: Duration) -> Result<Self> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .with_context(|| format!("read greeting from {vip} (local {local})"))?;
        if line.is_empty() {
            bail!("connection to {vip} (local {local}) closed before the greeting");
        }
        let (target, seen) = parse_greeting(&line)?;
        Ok(Self {
            reader,
            local,
            target,
            seen,
        })
    }

    /// Connects from namespace `ns` (the socket stays in that namespace and
    /// can be used from any thread).
    pub fn connect_in(ns: &str, vip: SocketAddr, timeout: Duration) -> Result<Self> {
        netns::in_netns(ns, move || Self::connect(vip, timeout))
    }

    /// [`Self::connect_in`] for a client that speaks first, as an HTTP
    /// client does: `first` goes out as a line before the greeting is read,
    /// and its echo is read after it. The handshake's last ACK then rides
    /// on a data segment, which TCP retransmits until it is acknowledged. A
    /// client that waits for the server sends a bare ACK, which nothing
    /// retransmits: a target that answered the SYN with a SYN cookie (as a
    /// flooded one does) keeps no state to send its SYN-ACK again, so one
    /// lost ACK leaves that client waiting for a greeting that never comes.
    pub fn connect_speaking_first_in(
        ns: &str,
        vip: SocketAddr,
        timeout: Duration,
        first: &str,
    ) -> Result<Self> {
        let first = first.to_owned();
        netns::in_netns(ns, move || {
            let mut stream = TcpStream::connect_timeout(&vip, timeout)
                .with_context(|| format!("connect to {vip}"))?;
            stream.set_write_timeout(Some(timeout))?;
            stream
                .write_all(format!("{first}\n").as_bytes())
                .with_context(|| format!("send {first:?} to {vip} before the greeting"))?;
            let mut conn = Self::greeted(stream, vip, timeout)?;
            conn.expect_line(&first)?;
            Ok(conn)
        })
    }

    /// Sends `msg` as a line and checks that the same line comes back.
    pub fn echo(&mut self, msg: &str) -> Result<()> {
        self.send_line(msg)?;
        self.expect_line(msg)
    }

    /// Sends `msg` as a line ([`Self::expect_line`] reads its echo), so
    /// that many connections can have a line in flight at once.
    pub fn send_line(&mut self, msg: &str) -> Result<()> {
        self.reader
            .get_mut()
            .write_all(format!("{msg}\n").as_bytes())
            .with_context(|| format!("send {msg:?} (local {})", self.local))
    }

    /// Sets the read and write timeouts (how long an echo may take).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<()> {
        let stream = self.reader.get_ref();
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(())
    }

    /// Closes with a reset (SO_LINGER 0): no TIME_WAIT, so the same source
    /// port can open the same 5-tuple again at once.
    pub fn reset(self) -> Result<()> {
        let sock = socket2::SockRef::from(self.reader.get_ref());
        sock.set_linger(Some(Duration::ZERO))
            .context("SO_LINGER 0")?;
        Ok(())
    }

    /// Reads one line and checks that it is `msg`.
    pub fn expect_line(&mut self, msg: &str) -> Result<()> {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .with_context(|| format!("read echo of {msg:?} (local {})", self.local))?;
        if line.trim_end() != msg {
            bail!(
                "echo mismatch on connection {} to {}: sent {msg:?}, got {line:?}",
                self.local,
                self.target
            );
        }
        Ok(())
    }
}

/// Flows per target name.
pub fn count_by_target(flows: &[FlowReport]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for f in flows {
        *m.entry(f.target.clone()).or_insert(0) += 1;
    }
    m
}

/// One UDP flow through the VIP (a connected socket, so one source port),
/// kept to send several datagrams on the same flow.
pub struct UdpConn {
    sock: UdpSocket,
    pub local: SocketAddr,
}

impl UdpConn {
    /// A socket in namespace `ns` connected to `vip` (usable from any thread).
    pub fn connect_in(ns: &str, vip: SocketAddr, timeout: Duration) -> Result<Self> {
        Self::connect_from_in(ns, 0, vip, timeout)
    }

    /// [`Self::connect_in`] from source port `port` (0: any).
    pub fn connect_from_in(
        ns: &str,
        port: u16,
        vip: SocketAddr,
        timeout: Duration,
    ) -> Result<Self> {
        netns::in_netns(ns, move || {
            let any: IpAddr = match vip {
                SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
                SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
            };
            let sock = UdpSocket::bind((any, port)).context("bind udp socket")?;
            sock.connect(vip)
                .with_context(|| format!("connect udp {vip}"))?;
            sock.set_read_timeout(Some(timeout))?;
            let local = sock.local_addr()?;
            Ok(Self { sock, local })
        })
    }

    /// Sends one datagram and returns the name of the target that answered
    /// (retrying a lost one up to 3 times).
    pub fn ask(&mut self, msg: &str) -> Result<String> {
        let mut buf = [0u8; 2048];
        let mut last = None;
        for _ in 0..4 {
            self.sock.send(msg.as_bytes()).context("send")?;
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
                    return Ok(parse_greeting(&reply)?.0);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(anyhow!(last.expect("an attempt"))
            .context(format!("no reply on UDP flow {}", self.local)))
    }
}
