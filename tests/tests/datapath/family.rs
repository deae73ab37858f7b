//! The one place where IPv4 and IPv6 differ for the fixture cases: the
//! world's addresses of each family, header sizes, ICMP vs ICMPv6 types, the
//! checksums an ICMP error carries, how a packet says "fragment" or "do not
//! fragment". A case that holds for both families is written once,
//! `for fam in Family::BOTH { ... }`, and takes all of these from `fam`;
//! cases that exist for one family only use the family's constants directly.
use std::fmt;

use lb_tests::checksum::Verified;

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Family {
    V4,
    V6,
}

impl fmt::Display for Family {
    /// "IPv4" / "IPv6", as case descriptions name them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

impl Family {
    pub(super) const BOTH: [Family; 2] = [Family::V4, Family::V6];

    /// The cases `f` writes once, for IPv4 then IPv6.
    pub(super) fn each(f: impl Fn(Family) -> Vec<Case>) -> Vec<Case> {
        Family::BOTH.into_iter().flat_map(f).collect()
    }

    /// The family of an IP packet.
    pub(super) fn of(p: &Packet) -> Family {
        match &p.net {
            Net::Ipv4(_) => Family::V4,
            Net::Ipv6(_) => Family::V6,
            Net::Other { .. } => panic!("not IP"),
        }
    }

    fn pick<T>(self, v4: T, v6: T) -> T {
        match self {
            Family::V4 => v4,
            Family::V6 => v6,
        }
    }

    // The world (datapath.rs) of each family.

    /// The client every case of this family sends from.
    pub(super) fn client(self) -> SocketAddr {
        self.pick(CLIENT4, CLIENT6)
    }

    /// An address on the VIPs' network that is no VIP.
    pub(super) fn not_vip(self) -> SocketAddr {
        self.pick(NOT_VIP4, NOT_VIP6)
    }

    /// A router on the client side.
    pub(super) fn router(self) -> IpAddr {
        self.pick(ROUTER4, ROUTER6)
    }

    /// The nat TCP VIP, whose ring is [`Family::tcp_target`] alone.
    pub(super) fn tcp_vip(self) -> VipDef {
        self.pick(V_TCP4, V_TCP6)
    }

    pub(super) fn tcp_target(self) -> TargetDef {
        self.pick(T1, T5)
    }

    /// The nat UDP VIP, whose ring is [`Family::udp_target`] alone.
    pub(super) fn udp_vip(self) -> VipDef {
        self.pick(V_UDP4, V_UDP6)
    }

    pub(super) fn udp_target(self) -> TargetDef {
        self.pick(T4, T7)
    }

    /// A VIP whose only target has no route.
    pub(super) fn no_route_vip(self) -> VipDef {
        self.pick(V_NOROUTE4, V_NOROUTE6)
    }

    /// The dsr TCP VIP; its ring is [`Family::tcp_vip`]'s.
    pub(super) fn dsr_vip(self) -> VipDef {
        self.pick(V_DSR4, V_DSR6)
    }

    // Headers.

    /// Length of the IP header without options or extension headers (also
    /// the outer header dsr adds).
    pub(super) fn ip_header_len(self) -> usize {
        self.pick(20, 40)
    }

    /// What an ICMP error of ours (and of the fixtures' routers) quotes:
    /// the IP header and the first 8 bytes of its payload.
    pub(super) fn icmp_quote(self) -> usize {
        self.ip_header_len() + 8
    }

    /// "TTL" / "hop limit".
    pub(super) fn ttl_name(self) -> &'static str {
        self.pick("TTL", "hop limit")
    }

    /// The outer header's field naming what it carries, and its value for
    /// a packet of this family inside one of this family (dsr).
    pub(super) fn encap_name(self) -> &'static str {
        self.pick("protocol 4", "next header 41")
    }

    /// `p` as a fragment at `offset` (8-byte units), more to come or not:
    /// IPv4's header fields, IPv6's fragment header.
    pub(super) fn fragment(self, p: Packet, offset: u16, more: bool) -> Packet {
        match self {
            Family::V4 => p.fragment(offset, more),
            Family::V6 => p.ext(Ext::Fragment {
                offset,
                more,
                id: 77,
            }),
        }
    }

    /// `p` that routers may not fragment: IPv4's DF bit; IPv6 packets never
    /// are, so unchanged.
    pub(super) fn dont_fragment(self, p: Packet) -> Packet {
        match self {
            Family::V4 => p.dont_fragment(),
            Family::V6 => p,
        }
    }

    // ICMP.

    /// "ICMP" / "ICMPv6".
    pub(super) fn icmp_name(self) -> &'static str {
        self.pick("ICMP", "ICMPv6")
    }

    /// "Too big for `mtu`": fragmentation needed (type 3 code 4) /
    /// packet too big (type 2 code 0), as (type, code, rest of header).
    pub(super) fn too_big(self, mtu: u16) -> (u8, u8, [u8; 4]) {
        match self {
            Family::V4 => (3, 4, icmp_frag_needed_rest(mtu)),
            Family::V6 => (2, 0, icmpv6_ptb_rest(mtu.into())),
        }
    }

    /// The name of [`Family::too_big`]'s message.
    pub(super) fn too_big_name(self) -> &'static str {
        self.pick("ICMP fragmentation needed", "ICMPv6 packet too big")
    }

    /// A reply's payload and the MTU a router on the client side reports
    /// as too small for it (IPv6's is its minimum link MTU).
    pub(super) fn too_big_report(self) -> (usize, u16) {
        self.pick((1200, 1400), (1300, 1280))
    }

    /// Destination unreachable, administratively prohibited: type 3 code 13
    /// / type 1 code 1.
    pub(super) fn admin_prohibited(self) -> (u8, u8) {
        self.pick((3, 13), (1, 1))
    }

    /// The checksums an ICMP error about an IPv4/IPv6 flow carries: IPv4's
    /// header, the ICMP message and the quoted header; ICMPv6's message
    /// (IPv6 headers have none).
    pub(super) fn icmp_error_checksums(self) -> &'static [Verified] {
        self.pick(
            &[
                Verified::Ipv4Header,
                Verified::Icmp,
                Verified::InnerIpv4Header,
            ],
            &[Verified::Icmpv6],
        )
    }
}
