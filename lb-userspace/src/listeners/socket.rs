//! A listener's bound socket: the supervisor binds every new socket before
//! it stops anything, so a bind failure refuses the change.
use std::{io, net::SocketAddr};

use tokio::net::{TcpListener, TcpSocket, UdpSocket};

use crate::config::Protocol;

/// Pending connections the kernel queues per stream listener.
const BACKLOG: u32 = 1024;

pub enum Socket {
    /// tcp, tls, http, https: listening.
    Stream(TcpListener),
    Datagram(UdpSocket),
}

impl Socket {
    /// The socket `protocol` needs, bound to `addr`.
    pub fn bind(addr: SocketAddr, protocol: Protocol) -> io::Result<Self> {
        match protocol {
            Protocol::Udp => bind_udp(addr).map(Socket::Datagram),
            _ => bind_tcp(addr).map(Socket::Stream),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Socket::Stream(s) => s.local_addr(),
            Socket::Datagram(s) => s.local_addr(),
        }
    }
}

/// A bound TCP socket, listening.
fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // A restarted daemon must rebind while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// A UDP socket bound to `addr`. No `SO_REUSEADDR`: UDP has no TIME_WAIT
/// to wait out, and with it a second socket could bind the same address
/// and take half the datagrams.
fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}
