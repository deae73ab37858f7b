//! A TLS client for raw requests over `https` listeners: rustls, no
//! certificate verification (the lab's certificate is self-signed).
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConnection, StreamOwned, pki_types::ServerName};

use super::{Lab, VIP};

pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A client config offering `alpn`, accepting any certificate.
pub fn client_config(alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    let mut config = (*lb::tls::unverified_client_config().expect("client config")).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection to the VIP on `port` with its handshake done.
pub fn connect(lab: &Lab, port: u16, alpn: &[&str]) -> TlsStream {
    connect_with(lab, port, client_config(alpn))
}

/// [`connect`] with a config of the caller's (e.g. one that resumes).
pub fn connect_with(lab: &Lab, port: u16, config: Arc<rustls::ClientConfig>) -> TlsStream {
    let mut tcp = tcp(lab, port);
    let name = ServerName::try_from("lb.test").expect("name");
    let mut conn = ClientConnection::new(config, name).expect("client connection");
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).expect("TLS handshake");
    }
    StreamOwned::new(conn, tcp)
}

/// A TCP connection to the VIP on `port` with a 10 s read timeout.
pub fn tcp(lab: &Lab, port: u16) -> TcpStream {
    let addr: SocketAddr = format!("{VIP}:{port}").parse().expect("addr");
    let s = lab
        .topo
        .lb
        .run(move || TcpStream::connect(addr))
        .expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// A ClientHello's bytes: the start of a handshake the test never
/// finishes.
pub fn client_hello() -> Vec<u8> {
    let name = ServerName::try_from("lb.test").expect("name");
    let mut conn = ClientConnection::new(client_config(&[]), name).expect("client connection");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write to a Vec");
    }
    out
}
