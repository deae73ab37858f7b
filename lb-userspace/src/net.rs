//! Conversions between `std::net` addresses and the map encoding of
//! `lb_common`: addresses as `[u32; 4]` whose bytes are the wire bytes (IPv4 in
//! word 0), ports in network byte order. This is the only place that knows the
//! encoding, so the config, the reconciler and `lb stats` cannot disagree.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use lb_common::{
    Addr, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP, Target, TargetState, VipAddrKey, VipKey,
};

/// Map encoding of an address and its family tag.
pub fn encode_addr(ip: IpAddr) -> (Addr, u8) {
    match ip {
        IpAddr::V4(v4) => ([u32::from_ne_bytes(v4.octets()), 0, 0, 0], FAMILY_V4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let word = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            ([word(0), word(4), word(8), word(12)], FAMILY_V6)
        }
    }
}

/// Inverse of [`encode_addr`]; `None` for an unknown family tag (garbage in a
/// pinned map left by another version).
pub fn decode_addr(addr: &Addr, family: u8) -> Option<IpAddr> {
    match family {
        FAMILY_V4 => Some(IpAddr::V4(Ipv4Addr::from(addr[0].to_ne_bytes()))),
        FAMILY_V6 => {
            let mut o = [0u8; 16];
            for (chunk, word) in o.chunks_exact_mut(4).zip(addr) {
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => None,
    }
}

/// `VIPS` key of a service.
pub fn vip_key(ip: IpAddr, port: u16, proto: u8) -> VipKey {
    let (addr, family) = encode_addr(ip);
    VipKey {
        addr,
        port: port.to_be(),
        proto,
        family,
    }
}

/// `REPLIES` key of a target: its replies' source address and port.
pub fn reply_key(endpoint: SocketAddr, proto: u8) -> lb_common::ReplyKey {
    let (addr, family) = encode_addr(endpoint.ip());
    lb_common::ReplyKey {
        addr,
        port: endpoint.port().to_be(),
        proto,
        family,
    }
}

/// A VIP as a reply's flow key names it.
pub fn vip_ref(k: &VipKey) -> lb_common::VipRef {
    lb_common::VipRef {
        addr: k.addr,
        port: k.port,
        _pad: 0,
    }
}

/// `VIP_ADDRS` key of a VIP address.
pub fn vip_addr_key(ip: IpAddr) -> VipAddrKey {
    let (addr, family) = encode_addr(ip);
    VipAddrKey {
        addr,
        family,
        _pad: [0; 3],
    }
}

/// `TARGETS` entry for an endpoint.
pub fn target_entry(endpoint: SocketAddr, state: TargetState, generation: u32) -> Target {
    let (addr, family) = encode_addr(endpoint.ip());
    Target {
        addr,
        port: endpoint.port().to_be(),
        family,
        state: state as u8,
        generation,
    }
}

/// Endpoint of a `TARGETS` entry; `None` for an unknown family tag.
pub fn target_endpoint(t: &Target) -> Option<SocketAddr> {
    decode_addr(&t.addr, t.family).map(|ip| SocketAddr::new(ip, u16::from_be(t.port)))
}

/// Human form of a `VIPS` key for logs and errors: `10.0.0.100:80/tcp`,
/// `[2001:db8::1]:53/udp`.
pub fn display_vip(k: &VipKey) -> String {
    let proto = match k.proto {
        PROTO_TCP => "tcp".to_string(),
        PROTO_UDP => "udp".to_string(),
        other => format!("proto{other}"),
    };
    match decode_addr(&k.addr, k.family) {
        Some(ip) => format!("{}/{proto}", SocketAddr::new(ip, u16::from_be(k.port))),
        None => format!("<family {}>:{}/{proto}", k.family, u16::from_be(k.port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_bytes_in_memory_are_wire_order() {
        let (addr, family) = encode_addr("10.0.0.1".parse().unwrap());
        assert_eq!(family, FAMILY_V4);
        assert_eq!(addr[0].to_ne_bytes(), [10, 0, 0, 1]);
        assert_eq!(&addr[1..], &[0, 0, 0]);
    }

    #[test]
    fn ipv6_bytes_in_memory_are_wire_order() {
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let (addr, family) = encode_addr(ip);
        assert_eq!(family, FAMILY_V6);
        assert_eq!(addr[0].to_ne_bytes(), [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(addr[3].to_ne_bytes(), [0, 0, 0, 1]);
        assert_eq!(decode_addr(&addr, family), Some(ip));
    }

    #[test]
    fn ports_are_network_order_and_round_trip() {
        let ep: SocketAddr = "10.1.0.2:8080".parse().unwrap();
        let t = target_entry(ep, TargetState::Active, 3);
        assert_eq!(t.port.to_ne_bytes(), 8080u16.to_be_bytes());
        assert_eq!(target_endpoint(&t), Some(ep));
        let k = vip_key("2001:db8::1".parse().unwrap(), 53, PROTO_UDP);
        assert_eq!(display_vip(&k), "[2001:db8::1]:53/udp");
    }

    #[test]
    fn unknown_family_does_not_decode() {
        assert_eq!(decode_addr(&[1, 2, 3, 4], 7), None);
    }
}
