//! Fixture table of the target-side decapsulation program (`lb_decap`;
//! docs/datapath.md, "Target-side decapsulation", is the contract).
//!
//! Each case: an input frame, the frame that must reach the host's stack
//! (the inner packet with the input's Ethernet header and tag, built from
//! the inner packet's description, never copied from the program), and the
//! one `DECAP_STATS` counter that must move. Every verdict is XDP_PASS;
//! a frame that is not unwrapped must come out byte for byte as it went in.
//! A freshly loaded program per case. Needs root and `LB_EBPF_OBJECT` (set
//! by `cargo xtask test`); `LB_CASE=<substring>` selects cases.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use lb_common::decap::DecapStat;
use lb_tests::checksum::{Verified, verify_frame};
use lb_tests::decap::DecapFixture;
use lb_tests::fixture::{XDP_PASS, action_name};
use lb_tests::packet::tcp_flags::{ACK, SYN};
use lb_tests::packet::{ETH_P_ARP, IPPROTO_GRE, L4, Packet};

/// This host's addresses (outer destinations).
const LOCAL4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 50, 0, 2));
const LOCAL6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd50, 0, 0, 0, 0, 0, 0, 2));
/// Another host's (the balancer's own, or a neighbour's).
const OTHER4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 50, 0, 3));
const OTHER6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd50, 0, 0, 0, 0, 0, 0, 3));
/// The balancer (outer sources).
const LB4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 50, 0, 1));
const LB6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd50, 0, 0, 0, 0, 0, 0, 1));
/// The VIPs configured on this target.
const VIP4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
const VIP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 0x10));
/// Not a VIP here.
const NOT_VIP4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99));
const NOT_VIP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 0x99));

const CLIENT4: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)), 40000);
const CLIENT6: SocketAddr = SocketAddr::new(
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 7)),
    40000,
);

fn sa(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

fn syn4() -> Packet {
    Packet::tcp(CLIENT4, sa(VIP4, 80), SYN)
}

fn syn6() -> Packet {
    Packet::tcp(CLIENT6, sa(VIP6, 80), SYN)
}

fn udp4() -> Packet {
    Packet::udp(CLIENT4, sa(VIP4, 53))
}

fn udp6() -> Packet {
    Packet::udp(CLIENT6, sa(VIP6, 53))
}

struct Case {
    name: &'static str,
    input: Vec<u8>,
    /// What must reach the stack: `None` means the input, untouched.
    output: Option<Packet>,
    stat: DecapStat,
}

/// A frame the program must unwrap to `inner`.
fn unwrapped(name: &'static str, inner: Packet, outer_src: IpAddr, outer_dst: IpAddr) -> Case {
    Case {
        name,
        input: inner.clone().encap(outer_src, outer_dst).build(),
        output: Some(inner),
        stat: DecapStat::Decapsulated,
    }
}

/// A frame the program must pass untouched, counted under `stat`.
fn untouched(name: &'static str, input: Vec<u8>, stat: DecapStat) -> Case {
    Case {
        name,
        input,
        output: None,
        stat,
    }
}

fn cases() -> Vec<Case> {
    use DecapStat::*;
    let mut options = syn4().encap(LB4, LOCAL4);
    options.ipv4_mut().options = vec![0x94, 0x04, 0, 0, 1, 1, 1, 0];
    let mut inner_longer = syn4();
    inner_longer.ipv4_mut().total_len = Some(41);
    let mut inner_version = udp4();
    inner_version.ipv4_mut().version = Some(6);
    let mut outer_short_len = syn4().encap(LB4, LOCAL4);
    outer_short_len.ipv4_mut().total_len = Some(19);
    let mut outer_ihl = syn4().encap(LB4, LOCAL4);
    outer_ihl.ipv4_mut().ihl = Some(4);
    let ack = Packet::tcp(CLIENT4, sa(VIP4, 80), ACK).payload(b"hello, target");
    vec![
        unwrapped("ipip tcp syn", syn4(), LB4, LOCAL4),
        unwrapped("ipip tcp with payload", ack, LB4, LOCAL4),
        unwrapped("ipip udp", udp4(), LB4, LOCAL4),
        unwrapped("ip6ip6 tcp syn", syn6(), LB6, LOCAL6),
        unwrapped("ip6ip6 udp", udp6(), LB6, LOCAL6),
        unwrapped("ipv6 in ipv4 (41)", syn6(), LB4, LOCAL4),
        unwrapped("ipv4 in ipv6 (4)", udp4(), LB6, LOCAL6),
        unwrapped("ipip under a vlan tag", syn4().vlan(42), LB4, LOCAL4),
        unwrapped(
            "ip6ip6 under an 802.1ad tag",
            udp6().vlan_ad(7),
            LB6,
            LOCAL6,
        ),
        Case {
            // The padding after the outer packet stays after the inner one
            // (the stack trims to the inner header's length).
            name: "ipip padded to the ethernet minimum",
            input: udp4().payload(b"").encap(LB4, LOCAL4).pad_to(80).build(),
            output: Some(udp4().payload(b"").pad_to(60)),
            stat: Decapsulated,
        },
        Case {
            name: "ipip with outer ipv4 options",
            input: options.build(),
            output: Some(syn4()),
            stat: Decapsulated,
        },
        untouched(
            "ipip inner not a vip",
            Packet::tcp(CLIENT4, sa(NOT_VIP4, 80), SYN)
                .encap(LB4, LOCAL4)
                .build(),
            InnerNotVip,
        ),
        untouched(
            "ip6ip6 inner not a vip",
            Packet::udp(CLIENT6, sa(NOT_VIP6, 53))
                .encap(LB6, LOCAL6)
                .build(),
            InnerNotVip,
        ),
        untouched(
            "ipip inner to the outer (local) address",
            Packet::tcp(CLIENT4, sa(LOCAL4, 80), SYN)
                .encap(LB4, LOCAL4)
                .build(),
            InnerNotVip,
        ),
        untouched(
            "ipip outer not to us",
            syn4().encap(LB4, OTHER4).build(),
            NotForUs,
        ),
        untouched(
            "ip6ip6 outer not to us",
            syn6().encap(LB6, OTHER6).build(),
            NotForUs,
        ),
        untouched(
            "ipip outer to the vip itself",
            syn4().encap(LB4, VIP4).build(),
            NotForUs,
        ),
        untouched(
            "ipip truncated in the outer header",
            syn4().encap(LB4, LOCAL4).truncate(14 + 12).build(),
            Malformed,
        ),
        untouched(
            "ip6ip6 truncated in the outer header",
            syn6().encap(LB6, LOCAL6).truncate(14 + 30).build(),
            Malformed,
        ),
        untouched(
            "ipip truncated in the inner header",
            syn4().encap(LB4, LOCAL4).truncate(14 + 20 + 12).build(),
            Malformed,
        ),
        untouched(
            "ipip truncated in the inner tcp header",
            syn4().encap(LB4, LOCAL4).truncate(14 + 20 + 30).build(),
            Malformed,
        ),
        untouched(
            "ip6ip6 truncated in the inner header",
            syn6().encap(LB6, LOCAL6).truncate(14 + 40 + 20).build(),
            Malformed,
        ),
        untouched(
            "ipip inner longer than the outer payload",
            inner_longer.encap(LB4, LOCAL4).build(),
            Malformed,
        ),
        untouched(
            "ipip inner of the wrong version",
            inner_version.encap(LB4, LOCAL4).build(),
            Malformed,
        ),
        untouched(
            "ipip outer total length below its header",
            outer_short_len.build(),
            Malformed,
        ),
        untouched("ipip outer ihl below 5", outer_ihl.build(), Malformed),
        untouched(
            "ipip outer fragment",
            syn4().encap(LB4, LOCAL4).fragment(0, true).build(),
            Malformed,
        ),
        untouched("plain tcp to the vip", syn4().build(), NotEncapsulated),
        untouched("plain udp over ipv6", udp6().build(), NotEncapsulated),
        untouched(
            "gre to us",
            Packet::tcp(sa(LB4, 1), sa(LOCAL4, 2), SYN)
                .with_l4(L4::Raw {
                    proto: IPPROTO_GRE,
                    bytes: vec![0; 24],
                })
                .build(),
            NotEncapsulated,
        ),
        untouched(
            "arp",
            Packet::arp_request(Ipv4Addr::new(10, 50, 0, 1), Ipv4Addr::new(10, 50, 0, 2)).build(),
            NotEncapsulated,
        ),
        untouched(
            "arp ethertype with an ipip-like body",
            {
                let mut f = syn4().encap(LB4, LOCAL4).build();
                f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
                f
            },
            NotEncapsulated,
        ),
        untouched(
            "ipip under two vlan tags",
            syn4().vlan(1).vlan(2).encap(LB4, LOCAL4).build(),
            VlanStack,
        ),
    ]
}

/// Runs one case; the problems found, if any.
fn run(case: &Case) -> Result<(), String> {
    let fx = DecapFixture::load(&[LOCAL4, LOCAL6], &[VIP4, VIP6]);
    let before = fx.stats();
    let got = fx.run(&case.input);
    let after = fx.stats();
    let mut problems = String::new();
    if got.action != XDP_PASS {
        let _ = writeln!(problems, "action {}", action_name(got.action));
    }
    let want = case
        .output
        .as_ref()
        .map_or_else(|| case.input.clone(), Packet::build);
    if got.output != want {
        let _ = writeln!(
            problems,
            "output\n  got  {:02x?}\n  want {want:02x?}",
            got.output
        );
    }
    if case.stat == DecapStat::Decapsulated {
        match verify_frame(&got.output) {
            Ok(v) if v.iter().any(|v| matches!(v, Verified::Tcp | Verified::Udp)) => {}
            other => {
                let _ = writeln!(problems, "checksums of the output: {other:?}");
            }
        }
    }
    for s in DecapStat::ALL {
        let moved = after[s as usize] - before[s as usize];
        let want = u64::from(s == case.stat);
        if moved != want {
            let _ = writeln!(problems, "{} moved by {moved}, want {want}", s.name());
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[test]
fn decapsulation_cases() {
    let filter = std::env::var("LB_CASE").ok();
    let mut failures = String::new();
    let mut ran = 0;
    for case in cases() {
        if filter
            .as_ref()
            .is_some_and(|f| !case.name.contains(f.as_str()))
        {
            continue;
        }
        ran += 1;
        if let Err(p) = run(&case) {
            let _ = write!(failures, "\n--- {}:\n{p}", case.name);
        }
    }
    assert!(ran > 0, "no case matches LB_CASE={filter:?}");
    assert!(failures.is_empty(), "failing cases:{failures}");
}
