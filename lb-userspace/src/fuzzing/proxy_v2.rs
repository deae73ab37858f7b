//! The PROXY v2 header the TCP proxy sends to targets: encoded for any
//! pair of addresses, then read back by a decoder written here from
//! haproxy's proxy-protocol.txt (section 2.2), apart from the encoder, and
//! compared with what the target must learn.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::l4::proxy_v2;

pub fn proxy_v2_round_trip(data: &[u8]) {
    let (client, local) = addresses(data);
    let header = proxy_v2::encode(client, local);
    let decoded = decode(&header).unwrap_or_else(|e| {
        panic!("header for {client} -> {local} does not decode: {e}: {header:02x?}")
    });
    assert_eq!(decoded, expected(client, local), "{header:02x?}");
}

/// Two socket addresses from the bytes: the first byte's low bits pick
/// IPv4 or IPv6 for each, the rest fills addresses and ports.
fn addresses(data: &[u8]) -> (SocketAddr, SocketAddr) {
    let (ctl, rest) = data.split_first().unwrap_or((&0, &[]));
    let mut bytes = rest.iter().copied().chain(std::iter::repeat(0));
    let mut take = |n: usize| -> Vec<u8> { bytes.by_ref().take(n).collect() };
    let mut one = |v6: bool| {
        let ip: IpAddr = if v6 {
            let o: [u8; 16] = take(16).try_into().expect("16 bytes");
            Ipv6Addr::from(o).into()
        } else {
            let o: [u8; 4] = take(4).try_into().expect("4 bytes");
            Ipv4Addr::from(o).into()
        };
        let p = take(2);
        SocketAddr::new(ip, u16::from_be_bytes([p[0], p[1]]))
    };
    let client = one(ctl & 1 == 1);
    let local = one(ctl & 2 == 2);
    (client, local)
}

/// What a target must read: both addresses IPv4 when both are (an
/// IPv4-mapped IPv6 address counts as IPv4), else both IPv6 with IPv4
/// ones mapped.
fn expected(client: SocketAddr, local: SocketAddr) -> Decoded {
    let (c, l) = (client.ip().to_canonical(), local.ip().to_canonical());
    let both_v4 = c.is_ipv4() && l.is_ipv4();
    let as_family = |ip: IpAddr| match ip {
        IpAddr::V4(v4) if !both_v4 => IpAddr::V6(v4.to_ipv6_mapped()),
        ip => ip,
    };
    Decoded {
        source: SocketAddr::new(as_family(c), client.port()),
        destination: SocketAddr::new(as_family(l), local.port()),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

/// A whole v2 header, PROXY command, TCP over IPv4 or IPv6, nothing
/// after the addresses (the encoder sends no TLVs).
pub fn decode(h: &[u8]) -> Result<Decoded, String> {
    const SIG: &[u8; 12] = b"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A";
    if h.len() < 16 || &h[..12] != SIG {
        return Err("no signature".into());
    }
    let (version, command) = (h[12] >> 4, h[12] & 0x0f);
    if version != 2 || command != 1 {
        return Err(format!("version {version} command {command}"));
    }
    let len = usize::from(u16::from_be_bytes([h[14], h[15]]));
    let body = &h[16..];
    if body.len() != len {
        return Err(format!("length field {len}, {} bytes follow", body.len()));
    }
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    match (h[13] >> 4, h[13] & 0x0f) {
        (1, 1) if len == 12 => {
            let ip = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&body[at..at + 4]).unwrap());
            Ok(Decoded {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            })
        }
        (2, 1) if len == 36 => {
            let ip = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&body[at..at + 16]).unwrap());
            Ok(Decoded {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            })
        }
        (family, transport) => Err(format!(
            "family {family} transport {transport} with {len} address bytes"
        )),
    }
}
