//! RFC 1071 Internet checksum, computed from scratch over whole headers and
//! pseudo-headers, never incrementally.
//!
//! The XDP program updates checksums incrementally (RFC 1624); the fixture
//! tests use this module as the independent reference: the packet builder
//! fills checksums with it, and [`verify_frame`] re-checks every checksum of a
//! frame the program produced.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// One's complement sum of `data` as big-endian 16-bit words (an odd last
/// byte is padded with zero), not yet folded or complemented.
pub fn sum_words(data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    let mut sum: u64 = chunks
        .by_ref()
        .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Folds a 64-bit accumulator into 16 bits with end-around carry.
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 0xffff.
    u16::try_from(sum).unwrap_or(u16::MAX)
}

/// The Internet checksum of the concatenation of `parts` (each part must have
/// an even length except the last, as in every header layout used here).
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut bytes = Vec::new();
    for p in parts {
        bytes.extend_from_slice(p);
    }
    !fold(sum_words(&bytes))
}

/// True when data that contains its own checksum field sums to all ones.
pub fn is_valid(parts: &[&[u8]]) -> bool {
    checksum(parts) == 0
}

/// IPv4 pseudo-header for TCP/UDP (RFC 793 / RFC 768).
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4_len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.push(0);
    p.push(proto);
    p.extend_from_slice(&u16::try_from(l4_len).expect("l4 length").to_be_bytes());
    p
}

/// IPv6 pseudo-header for TCP/UDP/ICMPv6 (RFC 8200 section 8.1).
pub fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, l4_len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&u32::try_from(l4_len).expect("l4 length").to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, next_header]);
    p
}

/// A checksum [`verify_frame`] checked and found correct.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verified {
    /// The (outer) IPv4 header checksum.
    Ipv4Header,
    /// TCP checksum over pseudo-header and segment.
    Tcp,
    /// UDP checksum over pseudo-header and datagram.
    Udp,
    /// An IPv4 UDP datagram without checksum (field 0, allowed by RFC 768).
    UdpNone,
    /// ICMP checksum over the whole ICMP message.
    Icmp,
    /// ICMPv6 checksum over pseudo-header and the whole message.
    Icmpv6,
    /// The IPv4 header checksum of the packet quoted in an ICMP error.
    InnerIpv4Header,
}

/// Why a frame failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError(pub String);

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, VerifyError> {
    Err(VerifyError(msg.into()))
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

/// Parses an Ethernet frame (up to two VLAN tags) and verifies every checksum
/// it carries, each computed from scratch: the IPv4 header, TCP/UDP/ICMP/ICMPv6
/// over the whole message (with pseudo-header where the protocol has one) and,
/// in an ICMP error, the quoted IPv4 header. Returns the checksums verified.
///
/// L4 checksums are checked only when the whole datagram is present and it is
/// not a fragment. A routing header with segments left would change the
/// pseudo-header's destination; such frames are not used in the fixtures.
pub fn verify_frame(frame: &[u8]) -> Result<Vec<Verified>, VerifyError> {
    if frame.len() < 14 {
        return err("frame shorter than an Ethernet header");
    }
    let mut off = 12;
    let mut ethertype = be16(frame, off);
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        if frame.len() < off + 6 {
            return err("truncated VLAN tag");
        }
        off += 4;
        ethertype = be16(frame, off);
    }
    let l3 = &frame[off + 2..];
    match ethertype {
        0x0800 => verify_ipv4(l3),
        0x86dd => verify_ipv6(l3),
        _ => Ok(Vec::new()),
    }
}

/// Verifies an IPv4 packet (header, then the L4 checksum when complete).
pub fn verify_ipv4(pkt: &[u8]) -> Result<Vec<Verified>, VerifyError> {
    if pkt.len() < 20 {
        return err("truncated IPv4 header");
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    if pkt[0] >> 4 != 4 || ihl < 20 || pkt.len() < ihl {
        return err("bad IPv4 version/IHL");
    }
    if !is_valid(&[&pkt[..ihl]]) {
        return err(format!(
            "IPv4 header checksum {:#06x} wrong (expected {:#06x})",
            be16(pkt, 10),
            expected_ipv4_header_checksum(&pkt[..ihl])
        ));
    }
    let mut done = vec![Verified::Ipv4Header];
    let total = usize::from(be16(pkt, 2));
    let frag = be16(pkt, 6);
    if frag & 0x3fff != 0 || total > pkt.len() || total < ihl {
        return Ok(done);
    }
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
    let l4 = &pkt[ihl..total];
    match pkt[9] {
        6 => {
            if l4.len() < 20 {
                return err("truncated TCP header");
            }
            let pseudo = pseudo_v4(src, dst, 6, l4.len());
            if !is_valid(&[&pseudo, l4]) {
                return err(format!("TCP checksum {:#06x} wrong", be16(l4, 16)));
            }
            done.push(Verified::Tcp);
        }
        17 => {
            if l4.len() < 8 {
                return err("truncated UDP header");
            }
            if be16(l4, 6) == 0 {
                done.push(Verified::UdpNone);
            } else {
                let pseudo = pseudo_v4(src, dst, 17, l4.len());
                if !is_valid(&[&pseudo, l4]) {
                    return err(format!("UDP checksum {:#06x} wrong", be16(l4, 6)));
                }
                done.push(Verified::Udp);
            }
        }
        1 => {
            if l4.len() < 8 {
                return err("truncated ICMP header");
            }
            if !is_valid(&[l4]) {
                return err(format!("ICMP checksum {:#06x} wrong", be16(l4, 2)));
            }
            done.push(Verified::Icmp);
            if matches!(l4[0], 3 | 11 | 12) && l4.len() >= 28 {
                let inner = &l4[8..];
                let inner_ihl = usize::from(inner[0] & 0x0f) * 4;
                if inner[0] >> 4 == 4 && inner_ihl >= 20 && inner.len() >= inner_ihl {
                    if !is_valid(&[&inner[..inner_ihl]]) {
                        return err(format!(
                            "quoted IPv4 header checksum {:#06x} wrong (expected {:#06x})",
                            be16(inner, 10),
                            expected_ipv4_header_checksum(&inner[..inner_ihl])
                        ));
                    }
                    done.push(Verified::InnerIpv4Header);
                }
            }
        }
        _ => {}
    }
    Ok(done)
}

fn expected_ipv4_header_checksum(hdr: &[u8]) -> u16 {
    let mut h = hdr.to_vec();
    h[10] = 0;
    h[11] = 0;
    checksum(&[&h])
}

/// Verifies an IPv6 packet: walks hop-by-hop/routing/destination options and
/// stops at a fragment header (no L4 check then).
pub fn verify_ipv6(pkt: &[u8]) -> Result<Vec<Verified>, VerifyError> {
    if pkt.len() < 40 || pkt[0] >> 4 != 6 {
        return err("truncated or bad IPv6 header");
    }
    let payload_len = usize::from(be16(pkt, 4));
    if 40 + payload_len > pkt.len() {
        return Ok(Vec::new());
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&pkt[8..24]).expect("16 bytes"));
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&pkt[24..40]).expect("16 bytes"));
    let end = 40 + payload_len;
    let mut next = pkt[6];
    let mut off = 40;
    while matches!(next, 0 | 43 | 60) {
        if off + 8 > end {
            return err("truncated IPv6 extension header");
        }
        next = pkt[off];
        off += (usize::from(pkt[off + 1]) + 1) * 8;
    }
    if off > end {
        return err("IPv6 extension header overruns the payload");
    }
    let l4 = &pkt[off..end];
    let mut done = Vec::new();
    let name = match next {
        6 => Some((Verified::Tcp, 20)),
        17 => Some((Verified::Udp, 8)),
        58 => Some((Verified::Icmpv6, 8)),
        _ => None,
    };
    if let Some((what, min)) = name {
        if l4.len() < min {
            return err(format!("truncated {what:?} header"));
        }
        if what == Verified::Udp && be16(l4, 6) == 0 {
            return err("IPv6 UDP checksum is zero");
        }
        let pseudo = pseudo_v6(src, dst, next, l4.len());
        if !is_valid(&[&pseudo, l4]) {
            let field = if what == Verified::Tcp { 16 } else { 6 };
            let field = if what == Verified::Icmpv6 { 2 } else { field };
            return err(format!("{what:?} checksum {:#06x} wrong", be16(l4, field)));
        }
        done.push(what);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_example() {
        // The classic example header, checksum 0xb861.
        let hdr: [u8; 20] = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&[&hdr]), 0xb861);
        let mut with = hdr;
        with[10] = 0xb8;
        with[11] = 0x61;
        assert!(is_valid(&[&with]));
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum_words(&data)), 0xddf2);
        assert_eq!(checksum(&[&data]), !0xddf2);
    }

    #[test]
    fn odd_length_is_padded() {
        assert_eq!(sum_words(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }
}
