//! Target server and traffic client for the end-to-end tests and the demo.
//!
//! Server: `lb-test-server --name t1 --tcp [::]:8080 --udp [::]:5353`
//! (each flag repeatable; `[::]` listens dual-stack). TCP: greets every
//! connection with `"<name> <peer ip>:<peer port>\n"`, then echoes lines until
//! EOF. UDP: answers each datagram with `"<name> <peer> <payload>"`. Prints
//! `ready` on stdout once every socket listens. With `--proxy-v2` every TCP
//! connection must start with a PROXY protocol v2 header, and the greeting
//! names the client address from the header.
//!
//! Clients (run inside the client namespace):
//! `lb-test-server client-tcp --connect 10.200.0.100:80 --count 300` and
//! `lb-test-server client-udp ...` print one JSON line per flow (see
//! `lb_tests::client`) and exit 1 if any flow failed.

use std::io::{BufRead, BufReader, Write};
use std::mem::size_of;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use lb_tests::client::{self, FlowReport};

#[derive(Parser)]
#[command(
    about = "Test target server (default) and traffic clients",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Args)]
struct ServeArgs {
    /// Name reported in every greeting and reply.
    #[arg(long, default_value = "server")]
    name: String,
    /// TCP address to listen on (repeatable).
    #[arg(long)]
    tcp: Vec<SocketAddr>,
    /// UDP address to listen on (repeatable).
    #[arg(long)]
    udp: Vec<SocketAddr>,
    /// TCP connections start with a PROXY protocol v2 header: greet with
    /// the client address it carries (refuse connections without one).
    #[arg(long)]
    proxy_v2: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Open COUNT TCP connections one after the other; JSON line per flow.
    ClientTcp(ClientArgs),
    /// Send one datagram from each of COUNT sockets; JSON line per flow.
    ClientUdp(ClientArgs),
}

#[derive(Args)]
struct ClientArgs {
    /// VIP address and port.
    #[arg(long)]
    connect: SocketAddr,
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Per-operation timeout in milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// UDP: resends per flow before giving up.
    #[arg(long, default_value_t = 2)]
    retries: u32,
    /// Stop after this many failed flows.
    #[arg(long, default_value_t = 10)]
    max_errors: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Cmd::ClientTcp(a)) => run_client("tcp", &a),
        Some(Cmd::ClientUdp(a)) => run_client("udp", &a),
        None => serve(cli.serve),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lb-test-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_client(proto: &str, a: &ClientArgs) -> Result<ExitCode> {
    let timeout = Duration::from_millis(a.timeout_ms);
    let results = if proto == "tcp" {
        client::tcp_flows(a.connect, a.count, timeout, a.max_errors)
    } else {
        client::udp_flows(a.connect, a.count, timeout, a.retries, a.max_errors)
    };
    let mut out = std::io::stdout().lock();
    let mut failed = false;
    for (i, r) in results.iter().enumerate() {
        let line = match r {
            Ok(f) => FlowReport::to_json(f),
            Err(e) => {
                failed = true;
                client::error_json(proto, i, e)
            }
        };
        writeln!(out, "{line}")?;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn serve(args: ServeArgs) -> Result<ExitCode> {
    anyhow::ensure!(
        !args.tcp.is_empty() || !args.udp.is_empty(),
        "nothing to serve: give --tcp and/or --udp"
    );
    let mut handles = Vec::new();
    for addr in &args.tcp {
        let listener = tcp_listener(*addr)?;
        let name = args.name.clone();
        let proxy_v2 = args.proxy_v2;
        handles.push(thread::spawn(move || {
            accept_loop(listener, &name, proxy_v2)
        }));
    }
    for addr in &args.udp {
        let sock = udp_socket(*addr)?;
        let name = args.name.clone();
        handles.push(thread::spawn(move || udp_loop(sock, &name)));
    }
    println!("ready");
    std::io::stdout().flush()?;
    for h in handles {
        let _ = h.join();
    }
    Ok(ExitCode::SUCCESS)
}

/// A socket bound to `addr`; for an IPv6 address IPV6_V6ONLY is off, so
/// `[::]` also takes IPv4 (peers then appear as `::ffff:a.b.c.d`).
fn bound_socket(addr: SocketAddr, ty: libc::c_int) -> Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket syscalls on a descriptor we own; the sockaddr
    // structs are fully initialised and their sizes passed correctly.
    unsafe {
        let fd = libc::socket(family, ty | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("socket");
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let one: libc::c_int = 1;
        let zero: libc::c_int = 0;
        let optlen = size_of::<libc::c_int>() as libc::socklen_t;
        libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            optlen,
        );
        let rc = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                libc::bind(
                    raw,
                    (&sin as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            SocketAddr::V6(a) => {
                if libc::setsockopt(
                    raw,
                    libc::IPPROTO_IPV6,
                    libc::IPV6_V6ONLY,
                    (&zero as *const libc::c_int).cast(),
                    optlen,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error()).context("IPV6_V6ONLY off");
                }
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                libc::bind(
                    raw,
                    (&sin6 as *const libc::sockaddr_in6).cast(),
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("bind {addr}"));
        }
        Ok(fd)
    }
}

fn tcp_listener(addr: SocketAddr) -> Result<TcpListener> {
    let fd = bound_socket(addr, libc::SOCK_STREAM)?;
    // SAFETY: listen(2) on a bound stream socket we own.
    if unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&fd), 1024) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("listen {addr}"));
    }
    Ok(TcpListener::from(fd))
}

fn udp_socket(addr: SocketAddr) -> Result<UdpSocket> {
    Ok(UdpSocket::from(bound_socket(addr, libc::SOCK_DGRAM)?))
}

/// `::ffff:a.b.c.d` shown as `a.b.c.d`.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn accept_loop(listener: TcpListener, name: &str, proxy_v2: bool) {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                let name = name.to_owned();
                thread::spawn(move || {
                    if let Err(e) = handle_tcp(stream, canonical(peer), &name, proxy_v2) {
                        eprintln!("{name}: connection from {peer}: {e:#}");
                    }
                });
            }
            Err(e) => {
                eprintln!("{name}: accept: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn handle_tcp(mut stream: TcpStream, peer: SocketAddr, name: &str, proxy_v2: bool) -> Result<()> {
    stream.set_nodelay(true)?;
    let peer = if proxy_v2 {
        read_proxy_v2(&mut stream)?
    } else {
        peer
    };
    stream.write_all(format!("{name} {peer}\n").as_bytes())?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        stream.write_all(&line)?;
    }
}

/// Reads a PROXY protocol v2 header (PROXY command, TCP over IPv4 or
/// IPv6) and returns the source address it carries.
fn read_proxy_v2(stream: &mut TcpStream) -> Result<SocketAddr> {
    use std::io::Read;
    use std::net::{Ipv4Addr, Ipv6Addr};
    const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
    let mut head = [0u8; 16];
    stream
        .read_exact(&mut head)
        .context("read PROXY v2 header")?;
    anyhow::ensure!(
        &head[..12] == SIGNATURE,
        "no PROXY v2 signature: {head:02x?}"
    );
    anyhow::ensure!(head[12] == 0x21, "not version 2 / PROXY: {:#04x}", head[12]);
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    let mut body = vec![0u8; len];
    stream
        .read_exact(&mut body)
        .context("read PROXY v2 addresses")?;
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    match head[13] {
        0x11 if len >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Ok(SocketAddr::new(ip.into(), port(8)))
        }
        0x21 if len >= 36 => {
            let octets: [u8; 16] = body[..16].try_into().expect("16 bytes");
            Ok(SocketAddr::new(Ipv6Addr::from(octets).into(), port(32)))
        }
        fam => anyhow::bail!("unsupported PROXY v2 family {fam:#04x} with {len} address bytes"),
    }
}

fn udp_loop(sock: UdpSocket, name: &str) {
    let mut buf = [0u8; 65536];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, peer)) => {
                let mut reply = format!("{name} {} ", canonical(peer)).into_bytes();
                reply.extend_from_slice(&buf[..n]);
                if let Err(e) = sock.send_to(&reply, peer) {
                    eprintln!("{name}: udp reply to {peer}: {e}");
                }
            }
            Err(e) => {
                eprintln!("{name}: udp recv: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
