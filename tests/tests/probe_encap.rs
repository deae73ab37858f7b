//! Fixture table of the dsr health probes' encapsulation program
//! (`lb_probe_encap`, tc egress on the daemon's probe device; the contract
//! is in docs/datapath.md, "Health probes of dsr targets").
//!
//! Each case: a probe frame as the host's stack builds it, the
//! `skb->mark` it carries, and what must come out: the action, the frame
//! (built from the input's description and lb_common::encap's outer
//! source rule, never copied from the program), the mark after, and the
//! one `PROBE_STATS` counter that moves. Runs in the fixture namespace,
//! where 10.1.0.0/24 and fd00:1::/64 are on fx0 and 192.0.2.0/24 has no
//! route. Needs root and `LB_EBPF_OBJECT` (set by `cargo xtask test`).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use lb_common::encap::{flow_label, outer_source};
use lb_common::probe::{MARK_BASE, ProbeStat, mark};
use lb_common::{FAMILY_V4, PROTO_TCP, PROTO_UDP};
use lb_tests::checksum::verify_frame;
use lb_tests::fixture::{self, flow_key, topo};
use lb_tests::packet::tcp_flags::{ACK, PSH, SYN};
use lb_tests::packet::{ETH_P_ARP, Net, Packet};
use lb_tests::probe::{ProbeFixture, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, action_name};

/// The VIPs a probe is addressed to.
const VIP4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
const VIP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 0x10));
/// This host's addresses (the probes' inner sources).
const HOST4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 254));
const HOST6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 0xfe));
/// A target without a route.
const UNROUTED4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));

/// Marks of the fixture's targets.
const M_T4: u32 = mark(1);
const M_T6: u32 = mark(2);
const M_UNROUTED: u32 = mark(3);

fn t4() -> IpAddr {
    IpAddr::V4(topo::host4(1))
}

fn t6() -> IpAddr {
    IpAddr::V6(topo::host6(1))
}

fn sa(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// `p` (from `src` to `dst`, protocol `proto`) as it must leave for
/// `target`: wrapped from the flow's outer source, the inner TTL / hop
/// limit (this host made the probe), TOS / traffic class, DF bit and IPv4
/// id copied, the flow's IPv6 label; the Ethernet header as it was.
fn wrapped(p: &Packet, src: SocketAddr, dst: SocketAddr, proto: u8, target: IpAddr) -> Packet {
    let key = flow_key(src, dst, proto);
    let outer_src = ip_of(outer_source(&key), key.family);
    let inner = p.net.clone();
    let mut out = p.clone().encap(outer_src, target);
    match (&mut out.net, inner) {
        (Net::Ipv4(outer), Net::Ipv4(inner)) => {
            outer.ttl = inner.ttl;
            outer.tos = inner.tos;
            outer.id = inner.id;
            outer.dont_fragment = inner.dont_fragment;
        }
        (Net::Ipv6(outer), Net::Ipv6(inner)) => {
            outer.hop_limit = inner.hop_limit;
            outer.traffic_class = inner.traffic_class;
            outer.flow_label = flow_label(&key);
        }
        _ => panic!("not IP"),
    }
    out
}

fn ip_of(a: lb_common::Addr, family: u8) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::from(u32::from_be(a[0])))
    } else {
        let mut b = [0u8; 16];
        for (i, w) in a.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(b))
    }
}

struct Case {
    name: &'static str,
    input: Vec<u8>,
    mark: u32,
    action: u32,
    /// The frame after: `None` means the input, untouched (also for
    /// drops before any change).
    output: Option<Vec<u8>>,
    /// The mark after.
    mark_after: u32,
    stat: ProbeStat,
}

fn sent(name: &'static str, p: Packet, mark: u32, out: Packet) -> Case {
    Case {
        name,
        input: p.build(),
        mark,
        action: TC_ACT_REDIRECT,
        output: Some(out.build()),
        mark_after: 0,
        stat: ProbeStat::Encapsulated,
    }
}

fn untouched(name: &'static str, p: &Packet, mark: u32, action: u32, stat: ProbeStat) -> Case {
    Case {
        name,
        input: p.build(),
        mark,
        action,
        output: None,
        mark_after: mark,
        stat,
    }
}

fn cases() -> Vec<Case> {
    let (src4, dst4) = (sa(HOST4, 40001), sa(VIP4, 80));
    let (src6, dst6) = (sa(HOST6, 40001), sa(VIP6, 80));
    let syn4 = Packet::tcp(src4, dst4, SYN).ttl(64).dont_fragment();
    let syn6 = Packet::tcp(src6, dst6, SYN).ttl(64);
    let get4 = Packet::tcp(src4, dst4, ACK | PSH)
        .payload(b"GET / HTTP/1.1\r\nHost: 192.0.2.10:80\r\n\r\n")
        .dont_fragment();
    let mut tos4 = syn4.clone();
    if let Net::Ipv4(ip) = &mut tos4.net {
        ip.tos = 0xb8;
        ip.id = 0x1234;
    }
    let mut class6 = syn6.clone();
    if let Net::Ipv6(ip) = &mut class6.net {
        ip.traffic_class = 0xb8;
        ip.flow_label = 0x54321;
    }
    let udp4 = Packet::udp(sa(HOST4, 40002), sa(VIP4, 53));
    let mut arp = syn4.clone();
    arp.net = Net::Other {
        ethertype: ETH_P_ARP,
        payload: vec![0; 28],
    };
    vec![
        sent(
            "IPv4 SYN with its target's mark: wrapped (protocol 4) to the target, mark cleared",
            syn4.clone(),
            M_T4,
            wrapped(&syn4, src4, dst4, PROTO_TCP, t4()),
        ),
        sent(
            "IPv4 request with data: the inner packet untouched",
            get4.clone(),
            M_T4,
            wrapped(&get4, src4, dst4, PROTO_TCP, t4()),
        ),
        sent(
            "IPv4: TOS and id copied to the outer header",
            tos4.clone(),
            M_T4,
            wrapped(&tos4, src4, dst4, PROTO_TCP, t4()),
        ),
        sent(
            "IPv4 UDP: wrapped the same way",
            udp4.clone(),
            M_T4,
            wrapped(&udp4, sa(HOST4, 40002), sa(VIP4, 53), PROTO_UDP, t4()),
        ),
        sent(
            "IPv6 SYN: wrapped (next header 41) with the flow's label",
            syn6.clone(),
            M_T6,
            wrapped(&syn6, src6, dst6, PROTO_TCP, t6()),
        ),
        sent(
            "IPv6: the traffic class copied, the inner label kept",
            class6.clone(),
            M_T6,
            wrapped(&class6, src6, dst6, PROTO_TCP, t6()),
        ),
        untouched(
            "no mark: passed untouched",
            &syn4,
            0,
            TC_ACT_OK,
            ProbeStat::NotMarked,
        ),
        untouched(
            "someone else's mark (other high bits): passed untouched",
            &syn4,
            0x1234_0001,
            TC_ACT_OK,
            ProbeStat::NotMarked,
        ),
        untouched(
            "IPv6 without a mark: passed untouched",
            &syn6,
            0,
            TC_ACT_OK,
            ProbeStat::NotMarked,
        ),
        untouched(
            "a probe mark naming no target: dropped, never sent unwrapped",
            &syn4,
            mark(99),
            TC_ACT_SHOT,
            ProbeStat::UnknownMark,
        ),
        untouched(
            "the bare mark base (slot 0) names no target",
            &syn4,
            MARK_BASE,
            TC_ACT_SHOT,
            ProbeStat::UnknownMark,
        ),
        untouched(
            "IPv6 probe with an IPv4 target's mark: dropped",
            &syn6,
            M_T4,
            TC_ACT_SHOT,
            ProbeStat::WrongFamily,
        ),
        untouched(
            "IPv4 probe with an IPv6 target's mark: dropped",
            &syn4,
            M_T6,
            TC_ACT_SHOT,
            ProbeStat::WrongFamily,
        ),
        untouched(
            "not IP (ARP) with a probe mark: dropped",
            &arp,
            M_T4,
            TC_ACT_SHOT,
            ProbeStat::Malformed,
        ),
    ]
}

fn check(fx: &ProbeFixture, c: &Case) -> Result<(), String> {
    let before = fx.stats();
    let run = fx.run(&c.input, c.mark);
    let mut errors = Vec::new();
    if run.action != c.action {
        errors.push(format!(
            "action {} (expected {})",
            action_name(run.action),
            action_name(c.action)
        ));
    }
    let want = c.output.as_ref().unwrap_or(&c.input);
    if &run.output != want {
        errors.push(format!(
            "output differs\n  got:  {}\n  want: {}",
            hex(&run.output),
            hex(want)
        ));
    }
    if c.output.is_some()
        && let Err(e) = verify_frame(&run.output)
    {
        errors.push(format!("output checksums: {e}"));
    }
    if run.mark != c.mark_after {
        errors.push(format!(
            "mark after {:#x} (expected {:#x})",
            run.mark, c.mark_after
        ));
    }
    let after = fx.stats();
    let moved: Vec<(ProbeStat, u64)> = ProbeStat::ALL
        .iter()
        .zip(before.iter().zip(&after))
        .filter(|(_, (b, a))| a != b)
        .map(|(s, (b, a))| (*s, a - b))
        .collect();
    if moved != [(c.stat, 1)] {
        errors.push(format!(
            "stats moved {moved:?} (expected [({:?}, 1)])",
            c.stat
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n  "))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn probe_encapsulation_cases() {
    let filter = std::env::var("LB_CASE").ok();
    let failures: Vec<String> = fixture::with_netns(|| {
        let mut failures = Vec::new();
        for c in cases() {
            if filter.as_deref().is_some_and(|f| !c.name.contains(f)) {
                continue;
            }
            let fx = ProbeFixture::load(&[(M_T4, t4()), (M_T6, t6()), (M_UNROUTED, UNROUTED4)]);
            if let Err(e) = check(&fx, &c) {
                failures.push(format!("{}:\n  {e}", c.name));
            }
        }
        failures
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_target_without_a_route_drops_the_probe() {
    fixture::with_netns(|| {
        let fx = ProbeFixture::load(&[(M_UNROUTED, UNROUTED4)]);
        let syn = Packet::tcp(sa(HOST4, 40001), sa(VIP4, 80), SYN).build();
        let run = fx.run(&syn, M_UNROUTED);
        assert_eq!(action_name(run.action), action_name(TC_ACT_SHOT));
        let stats = fx.stats();
        assert_eq!(stats[ProbeStat::NoRoute as usize], 1, "{stats:?}");
        assert_eq!(stats[ProbeStat::Encapsulated as usize], 0, "{stats:?}");
    });
}
