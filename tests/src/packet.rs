//! A small packet builder for the data-path fixtures.
//!
//! A [`Packet`] is a description (Ethernet, VLAN tags, IPv4/IPv6 with options or
//! extension headers, TCP/UDP/ICMP) that [`Packet::build`] serialises with
//! every length and checksum computed from scratch by [`crate::checksum`].
//! Expected outputs are written by cloning the input's description, changing
//! the fields the program should change, and building again — never by copying
//! what the program produced.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::checksum::{checksum, pseudo_v4, pseudo_v6};

/// A MAC address.
pub type Mac = [u8; 6];

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_LLDP: u16 = 0x88cc;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_ICMP: u8 = 1;
/// IPv4 in IP (RFC 2003): what a dsr balancer wraps IPv4 in.
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
/// IPv6 in IP (RFC 2473): what a dsr balancer wraps IPv6 in.
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_ESP: u8 = 50;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_NONE: u8 = 59;

/// TCP flag bits.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// Source MAC of input frames unless set (the upstream router).
pub const DEFAULT_SRC_MAC: Mac = [0x02, 0, 0, 0, 0xaa, 0x01];
/// Destination MAC of input frames unless set (the load balancer's NIC).
pub const DEFAULT_DST_MAC: Mac = [0x02, 0, 0, 0, 0xaa, 0x02];
pub const DEFAULT_TTL: u8 = 64;

/// One VLAN tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vlan {
    /// 0x8100 (802.1Q) or 0x88a8 (802.1ad).
    pub tpid: u16,
    /// PCP, DEI and VLAN id.
    pub tci: u16,
}

/// An Ethernet frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Packet {
    pub eth_dst: Mac,
    pub eth_src: Mac,
    /// Outermost first.
    pub vlans: Vec<Vlan>,
    pub net: Net,
    /// Cut the built frame to this many bytes (headers keep their lengths).
    pub truncate: Option<usize>,
    /// Pad the built frame with zeros to this length (Ethernet minimum frame
    /// padding; IP lengths do not include it).
    pub pad_to: Option<usize>,
}

/// What follows the Ethernet header.
#[derive(Clone, Debug, PartialEq)]
pub enum Net {
    Ipv4(Ipv4),
    Ipv6(Ipv6),
    /// Any other EtherType with raw payload (ARP, LLDP, ...).
    Other {
        ethertype: u16,
        payload: Vec<u8>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ipv4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub tos: u8,
    pub id: u16,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// In 8-byte units.
    pub fragment_offset: u16,
    /// Raw option bytes; padded with End-of-Option-List to a multiple of 4.
    pub options: Vec<u8>,
    /// Overrides the version nibble (malformed cases).
    pub version: Option<u8>,
    /// Overrides the IHL nibble (malformed cases).
    pub ihl: Option<u8>,
    /// Overrides the total length field (malformed cases).
    pub total_len: Option<u16>,
    pub l4: L4,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ipv6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
    /// Extension headers in order.
    pub ext: Vec<Ext>,
    pub l4: L4,
}

/// An IPv6 extension header.
#[derive(Clone, Debug, PartialEq)]
pub enum Ext {
    /// Hop-by-hop options (0): option bytes, padded with Pad1/PadN to 8n.
    HopByHop(Vec<u8>),
    /// Destination options (60): option bytes, padded with Pad1/PadN to 8n.
    DestOpts(Vec<u8>),
    /// Routing (43): type, segments left, type-specific data (padded to 8n).
    Routing {
        routing_type: u8,
        segments_left: u8,
        data: Vec<u8>,
    },
    /// Fragment (44): offset in 8-byte units, more-fragments flag, id.
    Fragment { offset: u16, more: bool, id: u32 },
    /// Any other header kind: `header` is its protocol number, `body` the
    /// bytes after the next-header byte (the caller sets its length field).
    Raw { header: u8, body: Vec<u8> },
}

impl Ext {
    fn number(&self) -> u8 {
        match self {
            Ext::HopByHop(_) => 0,
            Ext::DestOpts(_) => 60,
            Ext::Routing { .. } => 43,
            Ext::Fragment { .. } => 44,
            Ext::Raw { header, .. } => *header,
        }
    }

    fn bytes(&self, next: u8) -> Vec<u8> {
        match self {
            Ext::HopByHop(opts) | Ext::DestOpts(opts) => {
                let mut b = vec![next, 0];
                b.extend_from_slice(opts);
                pad_options(&mut b);
                b[1] = u8::try_from(b.len() / 8 - 1).expect("extension header too long");
                b
            }
            Ext::Routing {
                routing_type,
                segments_left,
                data,
            } => {
                let mut b = vec![next, 0, *routing_type, *segments_left];
                b.extend_from_slice(data);
                b.resize(b.len().max(8).div_ceil(8) * 8, 0);
                b[1] = u8::try_from(b.len() / 8 - 1).expect("extension header too long");
                b
            }
            Ext::Fragment { offset, more, id } => {
                let mut b = vec![next, 0];
                b.extend_from_slice(&((offset << 3) | u16::from(*more)).to_be_bytes());
                b.extend_from_slice(&id.to_be_bytes());
                b
            }
            Ext::Raw { body, .. } => {
                let mut b = vec![next];
                b.extend_from_slice(body);
                b
            }
        }
    }
}

/// Pads hop-by-hop/destination options to a multiple of 8 bytes (RFC 8200 4.2).
fn pad_options(b: &mut Vec<u8>) {
    let n = (8 - b.len() % 8) % 8;
    match n {
        0 => {}
        1 => b.push(0),
        _ => {
            b.push(1);
            b.push(u8::try_from(n - 2).expect("small"));
            b.resize(b.len() + n - 2, 0);
        }
    }
}

/// The transport layer.
#[derive(Clone, Debug, PartialEq)]
pub enum L4 {
    Tcp(Tcp),
    Udp(Udp),
    /// ICMP in IPv4, ICMPv6 in IPv6.
    Icmp(Icmp),
    /// Any protocol, raw bytes.
    Raw {
        proto: u8,
        bytes: Vec<u8>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    /// [`tcp_flags`] bits.
    pub flags: u8,
    pub window: u16,
    pub payload: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Udp {
    pub sport: u16,
    pub dport: u16,
    pub payload: Vec<u8>,
    /// Send 0 ("no checksum", IPv4 only) instead of computing it.
    pub zero_checksum: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Icmp {
    pub ty: u8,
    pub code: u8,
    /// The four bytes after the checksum (id/seq, MTU, pointer, unused).
    pub rest: [u8; 4],
    /// Echo data or the quoted packet of an error.
    pub body: Vec<u8>,
}

/// The pseudo-header inputs of an L4 checksum.
enum Pseudo {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

impl L4 {
    fn proto(&self, v6: bool) -> u8 {
        match self {
            L4::Tcp(_) => IPPROTO_TCP,
            L4::Udp(_) => IPPROTO_UDP,
            L4::Icmp(_) if v6 => IPPROTO_ICMPV6,
            L4::Icmp(_) => IPPROTO_ICMP,
            L4::Raw { proto, .. } => *proto,
        }
    }

    fn bytes(&self, pseudo: &Pseudo) -> Vec<u8> {
        let v6 = matches!(pseudo, Pseudo::V6(..));
        let proto = self.proto(v6);
        let pseudo_bytes = |len: usize| match pseudo {
            Pseudo::V4(s, d) => pseudo_v4(*s, *d, proto, len),
            Pseudo::V6(s, d) => pseudo_v6(*s, *d, proto, len),
        };
        match self {
            L4::Tcp(t) => {
                let mut b = Vec::with_capacity(20 + t.payload.len());
                b.extend_from_slice(&t.sport.to_be_bytes());
                b.extend_from_slice(&t.dport.to_be_bytes());
                b.extend_from_slice(&t.seq.to_be_bytes());
                b.extend_from_slice(&t.ack.to_be_bytes());
                b.push(5 << 4);
                b.push(t.flags);
                b.extend_from_slice(&t.window.to_be_bytes());
                b.extend_from_slice(&[0, 0, 0, 0]);
                b.extend_from_slice(&t.payload);
                let c = checksum(&[&pseudo_bytes(b.len()), &b]);
                b[16..18].copy_from_slice(&c.to_be_bytes());
                b
            }
            L4::Udp(u) => {
                let len = 8 + u.payload.len();
                let mut b = Vec::with_capacity(len);
                b.extend_from_slice(&u.sport.to_be_bytes());
                b.extend_from_slice(&u.dport.to_be_bytes());
                b.extend_from_slice(&u16::try_from(len).expect("udp length").to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(&u.payload);
                if !u.zero_checksum {
                    let mut c = checksum(&[&pseudo_bytes(b.len()), &b]);
                    // RFC 768: a computed 0 is transmitted as all ones.
                    if c == 0 {
                        c = 0xffff;
                    }
                    b[6..8].copy_from_slice(&c.to_be_bytes());
                }
                b
            }
            L4::Icmp(i) => {
                let mut b = vec![i.ty, i.code, 0, 0];
                b.extend_from_slice(&i.rest);
                b.extend_from_slice(&i.body);
                let c = if v6 {
                    checksum(&[&pseudo_bytes(b.len()), &b])
                } else {
                    checksum(&[&b])
                };
                b[2..4].copy_from_slice(&c.to_be_bytes());
                b
            }
            L4::Raw { bytes, .. } => bytes.clone(),
        }
    }
}

impl Ipv4 {
    /// The IPv4 packet (header, options, L4).
    pub fn bytes(&self) -> Vec<u8> {
        let mut opts = self.options.clone();
        opts.resize(opts.len().div_ceil(4) * 4, 0);
        let hlen = 20 + opts.len();
        let l4 = self.l4.bytes(&Pseudo::V4(self.src, self.dst));
        let total = self
            .total_len
            .unwrap_or_else(|| u16::try_from(hlen + l4.len()).expect("IPv4 packet too long"));
        let ihl = self
            .ihl
            .unwrap_or_else(|| u8::try_from(hlen / 4).expect("IHL"));
        let version = self.version.unwrap_or(4);
        let frag = (u16::from(self.dont_fragment) << 14)
            | (u16::from(self.more_fragments) << 13)
            | self.fragment_offset;
        let mut b = Vec::with_capacity(hlen + l4.len());
        b.push((version << 4) | (ihl & 0x0f));
        b.push(self.tos);
        b.extend_from_slice(&total.to_be_bytes());
        b.extend_from_slice(&self.id.to_be_bytes());
        b.extend_from_slice(&frag.to_be_bytes());
        b.push(self.ttl);
        b.push(self.l4.proto(false));
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&self.src.octets());
        b.extend_from_slice(&self.dst.octets());
        b.extend_from_slice(&opts);
        let c = checksum(&[&b[..hlen]]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        b.extend_from_slice(&l4);
        b
    }
}

impl Ipv6 {
    /// The IPv6 packet (header, extension headers, L4).
    pub fn bytes(&self) -> Vec<u8> {
        let l4 = self.l4.bytes(&Pseudo::V6(self.src, self.dst));
        let mut ext = Vec::new();
        for (i, e) in self.ext.iter().enumerate() {
            let next = self
                .ext
                .get(i + 1)
                .map_or_else(|| self.l4.proto(true), Ext::number);
            ext.extend_from_slice(&e.bytes(next));
        }
        let first = self
            .ext
            .first()
            .map_or_else(|| self.l4.proto(true), Ext::number);
        let payload_len = u16::try_from(ext.len() + l4.len()).expect("IPv6 payload too long");
        let word =
            (6u32 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0xfffff);
        let mut b = Vec::with_capacity(40 + ext.len() + l4.len());
        b.extend_from_slice(&word.to_be_bytes());
        b.extend_from_slice(&payload_len.to_be_bytes());
        b.push(first);
        b.push(self.hop_limit);
        b.extend_from_slice(&self.src.octets());
        b.extend_from_slice(&self.dst.octets());
        b.extend_from_slice(&ext);
        b.extend_from_slice(&l4);
        b
    }
}

impl Net {
    fn ethertype(&self) -> u16 {
        match self {
            Net::Ipv4(_) => ETH_P_IPV4,
            Net::Ipv6(_) => ETH_P_IPV6,
            Net::Other { ethertype, .. } => *ethertype,
        }
    }

    /// The bytes after the Ethernet header (and VLAN tags).
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Net::Ipv4(ip) => ip.bytes(),
            Net::Ipv6(ip) => ip.bytes(),
            Net::Other { payload, .. } => payload.clone(),
        }
    }
}

fn ip_net(src: IpAddr, dst: IpAddr, l4: L4) -> Net {
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => Net::Ipv4(Ipv4 {
            src,
            dst,
            ttl: DEFAULT_TTL,
            tos: 0,
            id: 0x1234,
            dont_fragment: false,
            more_fragments: false,
            fragment_offset: 0,
            options: Vec::new(),
            version: None,
            ihl: None,
            total_len: None,
            l4,
        }),
        (IpAddr::V6(src), IpAddr::V6(dst)) => Net::Ipv6(Ipv6 {
            src,
            dst,
            hop_limit: DEFAULT_TTL,
            traffic_class: 0,
            flow_label: 0x12345,
            ext: Vec::new(),
            l4,
        }),
        _ => panic!("mixed address families: {src} -> {dst}"),
    }
}

impl Packet {
    fn with_net(net: Net) -> Self {
        Packet {
            eth_dst: DEFAULT_DST_MAC,
            eth_src: DEFAULT_SRC_MAC,
            vlans: Vec::new(),
            net,
            truncate: None,
            pad_to: None,
        }
    }

    /// A TCP segment `src -> dst` with `flags`, no payload.
    pub fn tcp(src: SocketAddr, dst: SocketAddr, flags: u8) -> Self {
        let l4 = L4::Tcp(Tcp {
            sport: src.port(),
            dport: dst.port(),
            seq: 0x1000_0000,
            ack: if flags & tcp_flags::ACK != 0 {
                0x2000_0000
            } else {
                0
            },
            flags,
            window: 0xfaf0,
            payload: Vec::new(),
        });
        Self::with_net(ip_net(src.ip(), dst.ip(), l4))
    }

    /// A UDP datagram `src -> dst` with a small payload and its checksum.
    pub fn udp(src: SocketAddr, dst: SocketAddr) -> Self {
        let l4 = L4::Udp(Udp {
            sport: src.port(),
            dport: dst.port(),
            payload: b"fixture!".to_vec(),
            zero_checksum: false,
        });
        Self::with_net(ip_net(src.ip(), dst.ip(), l4))
    }

    /// An ICMP (IPv4) or ICMPv6 echo request.
    pub fn icmp_echo(src: IpAddr, dst: IpAddr) -> Self {
        let ty = if src.is_ipv4() { 8 } else { 128 };
        Self::icmp(src, dst, ty, 0, [0x12, 0x34, 0, 1], b"ping".to_vec())
    }

    /// Any ICMP/ICMPv6 message.
    pub fn icmp(src: IpAddr, dst: IpAddr, ty: u8, code: u8, rest: [u8; 4], body: Vec<u8>) -> Self {
        let l4 = L4::Icmp(Icmp {
            ty,
            code,
            rest,
            body,
        });
        Self::with_net(ip_net(src, dst, l4))
    }

    /// An ICMP/ICMPv6 error quoting the first `quote_len` bytes of `quoted`'s
    /// IP packet (its Ethernet header is not quoted).
    pub fn icmp_error(
        src: IpAddr,
        dst: IpAddr,
        ty: u8,
        code: u8,
        rest: [u8; 4],
        quoted: &Packet,
        quote_len: usize,
    ) -> Self {
        let mut body = quoted.net.bytes();
        body.truncate(quote_len);
        Self::icmp(src, dst, ty, code, rest, body)
    }

    /// A non-IP frame.
    pub fn ethertype(ethertype: u16, payload: Vec<u8>) -> Self {
        Self::with_net(Net::Other { ethertype, payload })
    }

    /// An ARP request "who has `target`, tell `sender`".
    pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Self {
        let mut p = vec![0, 1, 0x08, 0, 6, 4, 0, 1];
        p.extend_from_slice(&DEFAULT_SRC_MAC);
        p.extend_from_slice(&sender.octets());
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&target.octets());
        let mut pkt = Self::ethertype(ETH_P_ARP, p);
        pkt.eth_dst = [0xff; 6];
        pkt
    }

    /// This packet wrapped in an outer IP header `src -> dst` (protocol 4
    /// for an IPv4 packet, 41 for IPv6; outer TTL 64), as a dsr balancer
    /// sends it to a target. The Ethernet header, tags, padding and
    /// truncation stay the frame's; the inner packet is built as it is.
    pub fn encap(mut self, src: IpAddr, dst: IpAddr) -> Self {
        let proto = match &self.net {
            Net::Ipv4(_) => IPPROTO_IPIP,
            Net::Ipv6(_) => IPPROTO_IPV6,
            Net::Other { .. } => panic!("encap of a non-IP frame"),
        };
        let bytes = self.net.bytes();
        self.net = ip_net(src, dst, L4::Raw { proto, bytes });
        self
    }

    /// Serialises the frame.
    pub fn build(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&self.eth_dst);
        b.extend_from_slice(&self.eth_src);
        for v in &self.vlans {
            b.extend_from_slice(&v.tpid.to_be_bytes());
            b.extend_from_slice(&v.tci.to_be_bytes());
        }
        b.extend_from_slice(&self.net.ethertype().to_be_bytes());
        b.extend_from_slice(&self.net.bytes());
        if let Some(n) = self.pad_to
            && b.len() < n
        {
            b.resize(n, 0);
        }
        if let Some(n) = self.truncate {
            b.truncate(n);
        }
        b
    }

    /// Length of the Ethernet header including VLAN tags.
    pub fn l2_len(&self) -> usize {
        14 + 4 * self.vlans.len()
    }

    // ---- modifiers (consume and return, for chaining) ----

    pub fn macs(mut self, src: Mac, dst: Mac) -> Self {
        self.eth_src = src;
        self.eth_dst = dst;
        self
    }

    /// Appends an 802.1Q tag (inside any existing tag).
    pub fn vlan(mut self, tci: u16) -> Self {
        self.vlans.push(Vlan {
            tpid: ETH_P_8021Q,
            tci,
        });
        self
    }

    /// Appends an 802.1ad (S-)tag.
    pub fn vlan_ad(mut self, tci: u16) -> Self {
        self.vlans.push(Vlan {
            tpid: ETH_P_8021AD,
            tci,
        });
        self
    }

    /// TTL (IPv4) or hop limit (IPv6).
    pub fn ttl(mut self, ttl: u8) -> Self {
        match &mut self.net {
            Net::Ipv4(ip) => ip.ttl = ttl,
            Net::Ipv6(ip) => ip.hop_limit = ttl,
            Net::Other { .. } => panic!("ttl on a non-IP frame"),
        }
        self
    }

    /// Source address and port (the port of TCP/UDP; ignored for others).
    pub fn src(mut self, addr: SocketAddr) -> Self {
        self = self.src_ip(addr.ip());
        match self.l4_mut() {
            L4::Tcp(t) => t.sport = addr.port(),
            L4::Udp(u) => u.sport = addr.port(),
            _ => {}
        }
        self
    }

    /// Destination address and port (the port of TCP/UDP; ignored for others).
    pub fn dst(mut self, addr: SocketAddr) -> Self {
        self = self.dst_ip(addr.ip());
        match self.l4_mut() {
            L4::Tcp(t) => t.dport = addr.port(),
            L4::Udp(u) => u.dport = addr.port(),
            _ => {}
        }
        self
    }

    pub fn src_ip(mut self, addr: IpAddr) -> Self {
        match (&mut self.net, addr) {
            (Net::Ipv4(ip), IpAddr::V4(a)) => ip.src = a,
            (Net::Ipv6(ip), IpAddr::V6(a)) => ip.src = a,
            _ => panic!("address family mismatch setting source {addr}"),
        }
        self
    }

    pub fn dst_ip(mut self, addr: IpAddr) -> Self {
        match (&mut self.net, addr) {
            (Net::Ipv4(ip), IpAddr::V4(a)) => ip.dst = a,
            (Net::Ipv6(ip), IpAddr::V6(a)) => ip.dst = a,
            _ => panic!("address family mismatch setting destination {addr}"),
        }
        self
    }

    pub fn payload(mut self, data: &[u8]) -> Self {
        match self.l4_mut() {
            L4::Tcp(t) => t.payload = data.to_vec(),
            L4::Udp(u) => u.payload = data.to_vec(),
            L4::Icmp(i) => i.body = data.to_vec(),
            L4::Raw { bytes, .. } => *bytes = data.to_vec(),
        }
        self
    }

    /// IPv4 UDP without checksum (field 0).
    pub fn udp_zero_checksum(mut self) -> Self {
        match self.l4_mut() {
            L4::Udp(u) => u.zero_checksum = true,
            _ => panic!("udp_zero_checksum on a non-UDP packet"),
        }
        self
    }

    pub fn ipv4_options(mut self, options: &[u8]) -> Self {
        self.ipv4_mut().options = options.to_vec();
        self
    }

    /// IPv4 fragment fields: offset in 8-byte units and the MF flag.
    pub fn fragment(mut self, offset: u16, more: bool) -> Self {
        let ip = self.ipv4_mut();
        ip.fragment_offset = offset;
        ip.more_fragments = more;
        self
    }

    pub fn dont_fragment(mut self) -> Self {
        self.ipv4_mut().dont_fragment = true;
        self
    }

    /// Appends an IPv6 extension header (after any already present).
    pub fn ext(mut self, ext: Ext) -> Self {
        self.ipv6_mut().ext.push(ext);
        self
    }

    /// Replaces the transport layer.
    pub fn with_l4(mut self, l4: L4) -> Self {
        *self.l4_mut() = l4;
        self
    }

    /// Pads the built frame with zeros to `len` bytes (if shorter).
    pub fn pad_to(mut self, len: usize) -> Self {
        self.pad_to = Some(len);
        self
    }

    /// Cuts the built frame to `len` bytes.
    pub fn truncate(mut self, len: usize) -> Self {
        self.truncate = Some(len);
        self
    }

    pub fn ipv4_mut(&mut self) -> &mut Ipv4 {
        match &mut self.net {
            Net::Ipv4(ip) => ip,
            _ => panic!("not an IPv4 packet"),
        }
    }

    pub fn ipv6_mut(&mut self) -> &mut Ipv6 {
        match &mut self.net {
            Net::Ipv6(ip) => ip,
            _ => panic!("not an IPv6 packet"),
        }
    }

    pub fn l4_mut(&mut self) -> &mut L4 {
        match &mut self.net {
            Net::Ipv4(ip) => &mut ip.l4,
            Net::Ipv6(ip) => &mut ip.l4,
            Net::Other { .. } => panic!("no L4 in a non-IP frame"),
        }
    }
}

/// `rest` of an ICMPv4 "fragmentation needed" (type 3 code 4) with `mtu`.
pub fn icmp_frag_needed_rest(mtu: u16) -> [u8; 4] {
    let m = mtu.to_be_bytes();
    [0, 0, m[0], m[1]]
}

/// `rest` of an ICMPv6 "packet too big" (type 2) with `mtu`.
pub fn icmpv6_ptb_rest(mtu: u32) -> [u8; 4] {
    mtu.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::{Verified, verify_frame};

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn tcp4_layout_and_checksums() {
        let p = Packet::tcp(sa("10.0.0.1:1234"), sa("10.0.0.2:80"), tcp_flags::SYN).build();
        assert_eq!(p.len(), 14 + 20 + 20);
        assert_eq!(&p[12..14], &[0x08, 0x00]);
        assert_eq!(p[14], 0x45);
        assert_eq!(u16::from_be_bytes([p[16], p[17]]), 40);
        assert_eq!(p[22], 64);
        assert_eq!(p[23], 6);
        assert_eq!(&p[34..36], &1234u16.to_be_bytes());
        assert_eq!(p[34 + 13], tcp_flags::SYN);
        assert_eq!(
            verify_frame(&p).expect("valid"),
            vec![Verified::Ipv4Header, Verified::Tcp]
        );
    }

    #[test]
    fn udp_checksum_zero_and_computed() {
        let p = Packet::udp(sa("10.0.0.1:1234"), sa("10.0.0.2:53"));
        assert_eq!(
            verify_frame(&p.build()).expect("valid"),
            vec![Verified::Ipv4Header, Verified::Udp]
        );
        let z = p.udp_zero_checksum().build();
        assert_eq!(&z[14 + 20 + 6..14 + 20 + 8], &[0, 0]);
        assert_eq!(
            verify_frame(&z).expect("valid"),
            vec![Verified::Ipv4Header, Verified::UdpNone]
        );
    }

    #[test]
    fn ipv6_ext_chain() {
        let p = Packet::tcp(
            sa("[2001:db8::1]:1234"),
            sa("[2001:db8::2]:80"),
            tcp_flags::ACK,
        )
        .ext(Ext::HopByHop(vec![]))
        .ext(Ext::DestOpts(vec![]))
        .build();
        assert_eq!(p.len(), 14 + 40 + 8 + 8 + 20);
        assert_eq!(p[14 + 6], 0);
        assert_eq!(p[54], 60);
        assert_eq!(p[62], 6);
        assert_eq!(u16::from_be_bytes([p[18], p[19]]), 36);
        assert_eq!(verify_frame(&p).expect("valid"), vec![Verified::Tcp]);
    }

    #[test]
    fn vlan_and_options() {
        let p = Packet::tcp(sa("10.0.0.1:1"), sa("10.0.0.2:2"), tcp_flags::ACK)
            .vlan(100)
            .ipv4_options(&[0x94, 0x04, 0, 0])
            .build();
        assert_eq!(&p[12..16], &[0x81, 0x00, 0x00, 100]);
        assert_eq!(&p[16..18], &[0x08, 0x00]);
        assert_eq!(p[18], 0x46);
        assert!(verify_frame(&p).is_ok());
    }

    #[test]
    fn encap_wraps_the_ip_packet() {
        let inner = Packet::udp(sa("10.0.0.1:1234"), sa("10.0.0.2:53")).vlan(7);
        let outer = inner
            .clone()
            .encap(
                "10.9.0.1".parse().expect("ip"),
                "10.9.0.2".parse().expect("ip"),
            )
            .build();
        let b = inner.build();
        assert_eq!(outer.len(), b.len() + 20);
        assert_eq!(&outer[..18], &b[..18]);
        assert_eq!(outer[18], 0x45);
        assert_eq!(outer[18 + 9], IPPROTO_IPIP);
        assert_eq!(u16::from_be_bytes([outer[20], outer[21]]), 20 + 36);
        assert_eq!(&outer[38..], &b[18..]);
        let six = Packet::tcp(sa("[2001:db8::1]:1"), sa("[2001:db8::2]:2"), tcp_flags::SYN)
            .encap(
                "fd00::1".parse().expect("ip"),
                "fd00::2".parse().expect("ip"),
            )
            .build();
        assert_eq!(&six[12..14], &[0x86, 0xdd]);
        assert_eq!(six[14 + 6], IPPROTO_IPV6);
        assert_eq!(u16::from_be_bytes([six[18], six[19]]), 60);
    }

    #[test]
    fn icmp_error_quotes_inner() {
        let inner = Packet::tcp(sa("10.0.0.2:80"), sa("10.0.0.1:1234"), tcp_flags::ACK);
        let p = Packet::icmp_error(
            "10.9.9.9".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
            3,
            4,
            icmp_frag_needed_rest(1400),
            &inner,
            28,
        )
        .build();
        assert_eq!(p.len(), 14 + 20 + 8 + 28);
        assert_eq!(&p[42..70], &inner.net.bytes()[..28]);
        assert_eq!(
            verify_frame(&p).expect("valid"),
            vec![
                Verified::Ipv4Header,
                Verified::Icmp,
                Verified::InnerIpv4Header
            ]
        );
        let mut bad = p.clone();
        bad[14 + 20 + 8 + 12] ^= 1; // quoted source address
        assert!(verify_frame(&bad).is_err());
    }
}
