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
use lb_tests::fixture::{XDP_DROP, XDP_PASS, XDP_REDIRECT, action_name, topo};
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

// ---------------------------------------------------------------------------
// Second-chance chains (docs/datapath.md, "Second chance"): an outer header
// to us wrapping a second one to the previous target, then the client's
// TCP packet. These cases need the kernel's tables (a socket lookup, a FIB
// lookup): they run in the data-path fixture namespace (`fixture::topo`),
// where the previous targets are neighbours on fx0.
// ---------------------------------------------------------------------------

/// The previous target, a neighbour on fx0 (host 2 of `fixture::topo`).
const PREV4: IpAddr = IpAddr::V4(topo::host4(2));
const PREV6: IpAddr = IpAddr::V6(topo::host6(2));
/// Previous targets without a route (`fixture::topo` has none there).
const NOWHERE4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
const NOWHERE6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1));
/// The client ports with an established connection here; others have none.
const CONNECTED_PORT: u16 = 40000;
const OTHER_PORT: u16 = 40001;

/// The client's packet from `port` to the VIP of its family.
fn mid_connection(v6: bool, port: u16) -> Packet {
    let (client, vip) = if v6 {
        (CLIENT6.ip(), VIP6)
    } else {
        (CLIENT4.ip(), VIP4)
    };
    Packet::tcp(sa(client, port), sa(vip, 80), ACK).payload(b"second chance")
}

/// `inner` chained: to us (`local`), inside to `prev` with TTL `ttl`.
fn chain(inner: &Packet, prev: IpAddr, ttl: u8, lb: IpAddr, local: IpAddr) -> Packet {
    inner.clone().encap(lb, prev).ttl(ttl).encap(lb, local)
}

struct ChainCase {
    name: &'static str,
    input: Vec<u8>,
    action: u32,
    /// `None`: the input, untouched (not compared for drops).
    output: Option<Packet>,
    stat: DecapStat,
}

fn chain_cases() -> Vec<ChainCase> {
    use DecapStat::*;
    let mut cases = Vec::new();
    for (v6, lb, local, prev, nowhere) in [
        (false, LB4, LOCAL4, PREV4, NOWHERE4),
        (true, LB6, LOCAL6, PREV6, NOWHERE6),
    ] {
        let here = mid_connection(v6, CONNECTED_PORT);
        cases.push(ChainCase {
            name: if v6 {
                "ip6ip6 chain, connection here: both headers off, passed"
            } else {
                "ipip chain, connection here: both headers off, passed"
            },
            input: chain(&here, prev, 64, lb, local).build(),
            action: XDP_PASS,
            output: Some(here.clone()),
            stat: ChainLocal,
        });
        let elsewhere = mid_connection(v6, OTHER_PORT);
        cases.push(ChainCase {
            name: if v6 {
                "ip6ip6 chain, only a listener here: forwarded to the previous target"
            } else {
                "ipip chain, only a listener here: forwarded to the previous target"
            },
            input: chain(&elsewhere, prev, 64, lb, local).build(),
            action: XDP_REDIRECT,
            output: Some(
                elsewhere
                    .clone()
                    .encap(lb, prev)
                    .ttl(63)
                    .macs(topo::FX0_MAC, topo::host_mac(2)),
            ),
            stat: ChainForwarded,
        });
        cases.push(ChainCase {
            name: if v6 {
                "ip6ip6 chain, second header's hop limit 1: dropped"
            } else {
                "ipip chain, second header's TTL 1: dropped"
            },
            input: chain(&elsewhere, prev, 1, lb, local).build(),
            action: XDP_DROP,
            output: None,
            stat: ChainUnrouted,
        });
        cases.push(ChainCase {
            name: if v6 {
                "ip6ip6 chain to a previous target without a route: the client's packet to the stack"
            } else {
                "ipip chain to a previous target without a route: the client's packet to the stack"
            },
            input: chain(&elsewhere, nowhere, 64, lb, local).build(),
            action: XDP_PASS,
            output: Some(elsewhere.clone()),
            stat: ChainUnrouted,
        });
    }
    let here = mid_connection(false, CONNECTED_PORT);
    cases.push(ChainCase {
        name: "ipip chain whose second header is to us too: passed",
        input: chain(&here, LOCAL4, 64, LB4, LOCAL4).build(),
        action: XDP_PASS,
        output: Some(here.clone()),
        stat: ChainLocal,
    });
    let udp_chain = udp4().encap(LB4, PREV4).encap(LB4, LOCAL4);
    cases.push(ChainCase {
        name: "ipip chain of a udp packet (never sent): malformed, untouched",
        input: udp_chain.build(),
        action: XDP_PASS,
        output: None,
        stat: Malformed,
    });
    let mut longer = here.clone().encap(LB4, PREV4);
    longer.ipv4_mut().total_len = Some(400);
    cases.push(ChainCase {
        name: "ipip chain whose second header claims more than the first carries: malformed, untouched",
        input: longer.encap(LB4, LOCAL4).build(),
        action: XDP_PASS,
        output: None,
        stat: Malformed,
    });
    cases.push(ChainCase {
        name: "ipip chain truncated in the second header: malformed, untouched",
        input: chain(&here, PREV4, 64, LB4, LOCAL4)
            .truncate(14 + 20 + 10)
            .build(),
        action: XDP_PASS,
        output: None,
        stat: Malformed,
    });
    let not_vip = Packet::tcp(CLIENT4, sa(NOT_VIP4, 80), ACK);
    cases.push(ChainCase {
        name: "ipip chain, client's packet not to a vip: untouched",
        input: chain(&not_vip, PREV4, 64, LB4, LOCAL4).build(),
        action: XDP_PASS,
        output: None,
        stat: InnerNotVip,
    });
    cases
}

/// In the fixture namespace: the VIPs and the clients' addresses on `lo`,
/// a listener on each VIP's port 80, and a connection to it from each
/// client's [`CONNECTED_PORT`]. Returned to be held while the cases run.
fn sockets() -> Vec<std::net::TcpStream> {
    use std::net::TcpListener;
    for (a, len) in [
        (VIP4, 32),
        (CLIENT4.ip(), 32),
        (VIP6, 128),
        (CLIENT6.ip(), 128),
    ] {
        let out = std::process::Command::new("ip")
            .args(["addr", "add", &format!("{a}/{len}"), "dev", "lo", "nodad"])
            .output()
            .expect("ip addr add");
        assert!(out.status.success(), "ip addr add {a}: {out:?}");
    }
    for a in [VIP4, CLIENT4.ip(), VIP6, CLIENT6.ip()] {
        wait_local_route(a);
    }
    let mut held = Vec::new();
    for (vip, client) in [(VIP4, CLIENT4.ip()), (VIP6, CLIENT6.ip())] {
        let listener = TcpListener::bind(sa(vip, 80)).expect("listen on the vip");
        let domain = if vip.is_ipv4() {
            socket2::Domain::IPV4
        } else {
            socket2::Domain::IPV6
        };
        let s = socket2::Socket::new(domain, socket2::Type::STREAM, None).expect("socket");
        s.bind(&sa(client, CONNECTED_PORT).into())
            .expect("bind the client");
        s.connect(&sa(vip, 80).into()).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        held.push(s.into());
        held.push(accepted);
        // The listener stays open (its socket is what `OTHER_PORT` finds).
        std::mem::forget(listener);
    }
    held
}

/// Waits until `a`, just added, has its route in the `local` table: an
/// IPv6 address's route is put there by the kernel's address work queue
/// after `ip addr add` returned (even with `nodad`), and a connect to it
/// before then fails with ENETUNREACH.
fn wait_local_route(a: IpAddr) {
    let family = if a.is_ipv4() { "-4" } else { "-6" };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = std::process::Command::new("ip")
            .args([family, "route", "show", "table", "local", &a.to_string()])
            .output()
            .expect("ip route show table local");
        if out.status.success() && !out.stdout.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no local route to {a} 10 s after adding it: {out:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Writes `value` to the sysctl at `path` (the calling thread's namespace).
fn set_sysctl(path: &str, value: &str) {
    std::fs::write(path, value).unwrap_or_else(|e| panic!("write {value} to {path}: {e}"));
}

/// A real target forwards nothing: a chain arriving on its interface
/// (here fx0, forwarding off for both families) still goes on to the
/// previous target, since `lb_decap` looks the route up as from `lo`,
/// whose forwarding `lb target attach` turns on. With `lo`'s forwarding
/// off too, the chain cannot go on: the client's packet goes to this host's
/// stack (`chain_unrouted`), which resets it as plain Maglev would.
#[test]
fn chain_forwarding_needs_forwarding_on_lo_only() {
    use DecapStat::{ChainForwarded, ChainUnrouted};
    let failures = lb_tests::fixture::with_netns(|| {
        let _held = sockets();
        for family in ["ipv4", "ipv6"] {
            set_sysctl(&format!("/proc/sys/net/{family}/conf/fx0/forwarding"), "0");
        }
        let mut failures = String::new();
        for lo_forwards in [true, false] {
            let value = if lo_forwards { "1" } else { "0" };
            for family in ["ipv4", "ipv6"] {
                set_sysctl(&format!("/proc/sys/net/{family}/conf/lo/forwarding"), value);
            }
            for (v6, lb, local, prev) in [(false, LB4, LOCAL4, PREV4), (true, LB6, LOCAL6, PREV6)] {
                let elsewhere = mid_connection(v6, OTHER_PORT);
                let input = chain(&elsewhere, prev, 64, lb, local).build();
                let fx = DecapFixture::load(&[LOCAL4, LOCAL6], &[VIP4, VIP6]);
                let before = fx.stats();
                let got = fx.run_on(&input, topo::FX0);
                let after = fx.stats();
                let (action, stat) = if lo_forwards {
                    (XDP_REDIRECT, ChainForwarded)
                } else {
                    (XDP_PASS, ChainUnrouted)
                };
                let moved = after[stat as usize] - before[stat as usize];
                if got.action != action || moved != 1 {
                    let _ = write!(
                        failures,
                        "\n--- v6 {v6}, lo forwarding {value}: action {}, want {}; {} moved by \
                         {moved}, want 1",
                        action_name(got.action),
                        action_name(action),
                        stat.name()
                    );
                }
            }
        }
        failures
    });
    assert!(failures.is_empty(), "failing cases:{failures}");
}

#[test]
fn chain_cases_in_a_namespace() {
    let filter = std::env::var("LB_CASE").ok();
    let failures = lb_tests::fixture::with_netns(move || {
        let _held = sockets();
        let mut failures = String::new();
        for case in chain_cases() {
            if filter
                .as_ref()
                .is_some_and(|f| !case.name.contains(f.as_str()))
            {
                continue;
            }
            let fx = DecapFixture::load(&[LOCAL4, LOCAL6], &[VIP4, VIP6]);
            let before = fx.stats();
            let got = fx.run(&case.input);
            let after = fx.stats();
            let mut problems = String::new();
            if got.action != case.action {
                let _ = writeln!(
                    problems,
                    "action {}, want {}",
                    action_name(got.action),
                    action_name(case.action)
                );
            }
            if case.action != XDP_DROP {
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
            }
            for s in DecapStat::ALL {
                let moved = after[s as usize] - before[s as usize];
                let want = u64::from(s == case.stat);
                if moved != want {
                    let _ = writeln!(problems, "{} moved by {moved}, want {want}", s.name());
                }
            }
            if !problems.is_empty() {
                let _ = write!(failures, "\n--- {}:\n{problems}", case.name);
            }
        }
        failures
    });
    assert!(failures.is_empty(), "failing cases:{failures}");
}
