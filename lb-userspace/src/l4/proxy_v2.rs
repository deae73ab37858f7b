//! The PROXY protocol version 2 header (haproxy's proxy-protocol.txt,
//! section 2.2): sent first on a connection to a target so that it learns
//! the client's address. Only the PROXY command over TCP, no TLVs.
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The 12-byte signature every v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2 (high nibble), command PROXY (low nibble 1).
const VERSION_PROXY: u8 = 0x21;
/// Address family (high nibble: 1 = INET, 2 = INET6), transport 1 = STREAM.
const TCP_OVER_IPV4: u8 = 0x11;
const TCP_OVER_IPV6: u8 = 0x21;

/// The header for a TCP connection from `client` to `local` (the
/// listener's address the client connected to).
pub fn encode(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (src, dst) = (canonical(client.ip()), canonical(local.ip()));
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&SIGNATURE);
    out.push(VERSION_PROXY);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(TCP_OVER_IPV4);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        // Mixed families (an IPv6 socket reached over IPv4 on one side
        // only) are sent as IPv6 with the IPv4 address mapped.
        (s, d) => {
            out.push(TCP_OVER_IPV6);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&as_v6(s).octets());
            out.extend_from_slice(&as_v6(d).octets());
        }
    }
    out.extend_from_slice(&client.port().to_be_bytes());
    out.extend_from_slice(&local.port().to_be_bytes());
    out
}

fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_is_byte_exact() {
        let h = encode(
            "10.200.1.2:40000".parse().unwrap(),
            "10.200.0.100:443".parse().unwrap(),
        );
        let mut want = SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12]);
        want.extend_from_slice(&[10, 200, 1, 2, 10, 200, 0, 100]);
        want.extend_from_slice(&40000u16.to_be_bytes());
        want.extend_from_slice(&443u16.to_be_bytes());
        assert_eq!(h, want);
        assert_eq!(h.len(), 28);
    }

    #[test]
    fn ipv6_header_carries_36_address_bytes() {
        let h = encode(
            "[fd00::2]:1234".parse().unwrap(),
            "[fd00::100]:443".parse().unwrap(),
        );
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(&h[16..32], &"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(&h[48..50], &1234u16.to_be_bytes());
    }

    #[test]
    fn v4_mapped_client_on_v6_socket_is_sent_as_ipv4() {
        let h = encode(
            "[::ffff:10.0.0.1]:5".parse().unwrap(),
            "[::ffff:10.0.0.2]:6".parse().unwrap(),
        );
        assert_eq!(h[13], 0x11);
        assert_eq!(&h[16..20], &[10, 0, 0, 1]);
    }

    #[test]
    fn mixed_families_are_mapped_to_ipv6() {
        let h = encode(
            "10.0.0.1:5".parse().unwrap(),
            "[fd00::1]:6".parse().unwrap(),
        );
        assert_eq!(h[13], 0x21);
        assert_eq!(
            &h[16..32],
            &"::ffff:10.0.0.1".parse::<Ipv6Addr>().unwrap().octets()
        );
    }
}
