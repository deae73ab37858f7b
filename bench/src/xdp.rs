//! `cargo xtask bench xdp`: nanoseconds per packet of `lb_xdp` through
//! `BPF_PROG_TEST_RUN`, next to trivial programs measured in the same run.
//!
//! A packet the balancer rewrites is no longer addressed to the VIP after the
//! first of `repeat` iterations, so rewriting cases run behind `bench_wrap`
//! (lb-bench-ebpf), which restores the original bytes and tail-calls the
//! program in `JUMP[0]`; its own floor is `bench_wrap` tail-calling
//! `bench_tx`. The new-flow cases also make every iteration's 5-tuple
//! unique; the cache-cold case cycles through 65,536 of them, entered and
//! confirmed by three laps before it is measured (in another order) and
//! freed after it.
//! Counters prove the path: every iteration must have moved the stat that
//! the case is about, and the VIP's `new_flows` once per iteration in a
//! new-flow case and never in the others (an established flow whose entry
//! had expired would be measured as new flows).
//!
//! `--against OBJECT` loads a second build of `lb_xdp` (the same maps, other
//! code) into a fixture of its own, programmed the same way, and runs every
//! case on both, alternating round by round (A B, then B A): the machine's
//! drift, which moves separate runs by tens of percent here, falls on both
//! alike, and each row gets the other object's figures and the median of the
//! rounds' paired ratios.
//!
//! `--reference PIN` runs another balancer's XDP program, pinned in bpffs
//! and set up for the IPv4 cases' VIPs (192.0.2.10 TCP 80, 82 and 443, all
//! answered with `XDP_TX`) by whoever runs the bench: the project builds
//! and ships no other balancer. It runs behind the same wrapper in the
//! same rounds, in the cases marked `reference`: the side-by-side figure
//! against the reference that this machine's drift would otherwise make
//! meaningless. Its counters are its own, so the bench checks only that
//! each of its runs ends in `XDP_TX`; its own counters say whether it took
//! the paths measured. Its table is not reset: it keeps the cold case's
//! flows, which lb_xdp's fixtures free, into the new-flow cases. Its
//! figures compare with lb_xdp's when it is set up as lb_xdp's fixture is:
//! a connection table of 262,144 flows for the bench's CPU, no cap on new
//! flows a second, the same BPF instruction set (`-mcpu=v3`), and a fresh
//! table for each run (a full one makes new flows dearer).
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use aya::{
    EbpfLoader,
    maps::{Array, ProgramArray},
    programs::{TestRun, TestRunOptions, Xdp},
};
use lb_common::{
    FlowEntry, FlowState, PROTO_TCP, ReplyKey, ReplyTargets, Stat, TargetState, VipKey, VipMeta,
    VipRef,
    flow::{config_flags, entry_flags},
    hash::flow_hash,
    limits::DEFAULT_RING_SIZE,
    vip::vip_flags,
};

use lb_tests::{
    fixture::{self, Fixture, port_be, topo},
    packet::{Packet, tcp_flags},
    trafficgen::{BenchPacket, bench_object},
};

#[derive(Clone, Debug)]
pub struct Opts {
    pub rounds: usize,
    pub repeat: u32,
    pub cpu: usize,
    /// Only cases whose name contains this (floors always run).
    pub only: Option<String>,
    /// Another build of the eBPF object to measure beside this one.
    pub against: Option<PathBuf>,
    /// A pinned XDP program of another balancer (module docs).
    pub reference: Option<PathBuf>,
}

/// One measured case.
#[derive(Clone, Debug)]
pub struct Row {
    pub name: &'static str,
    pub median_ns: f64,
    pub min_ns: f64,
    /// Name of the floor row this one is compared with, if any.
    pub floor: Option<&'static str>,
    /// The same case on the `--against` object.
    pub against: Option<Paired>,
    /// The same case on the `--reference` program.
    pub reference: Option<Paired>,
}

/// A case's figures on the `--against` object or the `--reference`
/// program (B), measured in the same rounds as the row's own (A).
#[derive(Clone, Debug)]
pub struct Paired {
    pub median_ns: f64,
    pub min_ns: f64,
    /// Median over the rounds of B's ns above the floor divided by A's in
    /// the same round.
    pub paired_ratio: f64,
}

fn ns_per_packet(prog: &Xdp, frame: &[u8], repeat: u32) -> (f64, u32) {
    ns_per_packet_on(prog, frame, repeat, None)
}

/// [`ns_per_packet`] as received on `ingress` (else on `lo`).
fn ns_per_packet_on(prog: &Xdp, frame: &[u8], repeat: u32, ingress: Option<&str>) -> (f64, u32) {
    let mut out = vec![0u8; frame.len() + 256];
    let ctx = ingress.map(|ifname| fixture::xdp_md_on(frame, ifname));
    // The kernel's own per-iteration average (whole nanoseconds). Its timer
    // stops while the thread is rescheduled, so other load on the CPU does
    // not inflate it the way wall-clock time would.
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: ctx.as_deref(),
            repeat,
            ..TestRunOptions::default()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {e:?}"));
    (r.duration.as_nanos() as f64, r.return_value)
}

fn summarize(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0])
}

const VIP4: &str = "192.0.2.10:80";
const VIP6: &str = "[2001:db8:f::10]:80";
const CLIENT4: &str = "203.0.113.7:40000";
const CLIENT6: &str = "[2001:db8:c::7]:40000";

fn sock(s: &str) -> SocketAddr {
    s.parse().expect("literal socket address")
}

/// Balancer state: one VIP per family with three targets, one established
/// flow per family (both directions).
fn program_maps(fx: &mut Fixture) {
    for (i, (vip, v6)) in [(VIP4, false), (VIP6, true)].into_iter().enumerate() {
        let vip = sock(vip);
        let mut ids = Vec::new();
        for n in 1..=3u8 {
            let id = i as u32 * 10 + n as u32;
            let ip: IpAddr = if v6 {
                topo::host6(n).into()
            } else {
                topo::host4(n).into()
            };
            fx.set_target(
                id,
                fixture::target(SocketAddr::new(ip, 8080), TargetState::Active, 1),
            );
            ids.push(id);
        }
        fx.set_ring(i as u32, &ids);
        fx.add_vip(
            fixture::vip_key(vip, PROTO_TCP),
            VipMeta {
                vip_id: i as u32,
                ring_slot: i as u32,
                ring_size: fx.ring_size(),
                flags: 0,
                idle_timeout_s: 3600,
                generation: 1,
            },
        );
        let client = sock(if v6 { CLIENT6 } else { CLIENT4 });
        dsr_vip(fx, vip, client, i as u32, ids[0]);
        if !v6 {
            second_chance_vip(fx, vip, ids[0], ids[1]);
            cold_vip(fx);
        }
        let target = SocketAddr::new(
            if v6 {
                topo::host6(1).into()
            } else {
                topo::host4(1).into()
            },
            8080,
        );
        let key = fixture::flow_key(client, vip, PROTO_TCP);
        // Established, seen now, with an hour's idle timeout: every
        // iteration of the run finds it live.
        fx.insert_flow(fixture::flow_entry(key, (ids[0], 1), i as u32, 3600));
        replies_to(fx, target, ids[0], &fixture::vip_key(vip, PROTO_TCP));
    }
}

/// The `REPLIES` entry of nat target `target_id` at `target`: its replies
/// belong to flows of `vip`.
fn replies_to(fx: &mut Fixture, target: SocketAddr, target_id: u32, vip: &VipKey) {
    let (addr, family) = fixture::addr(target.ip());
    let mut vips = [VipRef::default(); lb_common::flow::MAX_VIPS_PER_TARGET];
    vips[0] = VipRef {
        addr: vip.addr,
        port: vip.port,
        _pad: 0,
    };
    fx.set_replies(
        ReplyKey {
            addr,
            port: port_be(target.port()),
            proto: PROTO_TCP,
            family,
        },
        ReplyTargets {
            target_id,
            count: 1,
            vips,
        },
    );
}

/// Port of the dsr VIPs (the nat ones are on 80).
const DSR_PORT: u16 = 443;
/// The dsr VIPs: the nat VIPs' addresses on [`DSR_PORT`].
const DSR_VIP4: &str = "192.0.2.10:443";
const DSR_VIP6: &str = "[2001:db8:f::10]:443";
/// VIP id of the dsr VIP beside the nat VIP `i` (0 IPv4, 1 IPv6).
const fn dsr_vip_id(i: u32) -> u32 {
    2 + i
}

/// A dsr VIP on `vip`'s address and [`DSR_PORT`], sharing ring slot `i`,
/// with an established dsr flow of `client` pinned to `target_id`.
fn dsr_vip(fx: &mut Fixture, vip: SocketAddr, client: SocketAddr, i: u32, target_id: u32) {
    let dsr = SocketAddr::new(vip.ip(), DSR_PORT);
    fx.add_vip(
        fixture::vip_key(dsr, PROTO_TCP),
        VipMeta {
            vip_id: dsr_vip_id(i),
            ring_slot: i,
            ring_size: fx.ring_size(),
            flags: vip_flags::DSR,
            idle_timeout_s: 3600,
            generation: 1,
        },
    );
    let key = fixture::flow_key(client, dsr, PROTO_TCP);
    fx.insert_flow(FlowEntry {
        flags: entry_flags::DSR,
        // As the data path pins a dsr flow: with its outer-header hash.
        aux: flow_hash(&key),
        ..fixture::flow_entry(key, (target_id, 1), dsr_vip_id(i), 3600)
    });
}

/// Port of the second-chance VIP (dsr, a previous table).
const CHAIN_PORT: u16 = 444;
const CHAIN_VIP4: &str = "192.0.2.10:444";
const CHAIN_VIP_ID: u32 = 4;

/// A dsr VIP on `vip`'s address and [`CHAIN_PORT`] with `SECOND_CHANCE`,
/// whose live table (ring slot 2) names `live` and previous table (slot 3)
/// `previous`: a packet without an entry is chained, never pinned.
fn second_chance_vip(fx: &mut Fixture, vip: SocketAddr, live: u32, previous: u32) {
    fx.set_ring(2, &[live]);
    fx.set_ring(3, &[previous]);
    fx.add_vip(
        fixture::vip_key(SocketAddr::new(vip.ip(), CHAIN_PORT), PROTO_TCP),
        VipMeta {
            vip_id: CHAIN_VIP_ID,
            ring_slot: 2,
            ring_size: fx.ring_size(),
            flags: vip_flags::DSR | vip_flags::SECOND_CHANCE | vip_flags::PREVIOUS_RING,
            idle_timeout_s: 3600,
            generation: 2,
        },
    );
}

/// The cache-cold case's VIP: nat, with one target, so that one reply
/// frame answers every flow of the case (`establish`).
const COLD_VIP4: &str = "192.0.2.10:82";
const COLD_VIP_ID: u32 = 5;
const COLD_RING_SLOT: u32 = 4;
const COLD_TARGET_ID: u32 = 4;
/// Its target: target 1's address (the namespace's routes know it) on
/// another port, which has a `REPLIES` entry of its own.
const COLD_TARGET_PORT: u16 = 8081;
/// The cache-cold case's client, whose port the wrapper varies (its
/// address is routed in the fixture's namespace, for the replies).
const COLD_CLIENT4: &str = "203.0.113.97:1000";

fn cold_target() -> SocketAddr {
    SocketAddr::new(topo::host4(1).into(), COLD_TARGET_PORT)
}

fn cold_vip(fx: &mut Fixture) {
    let vip = sock(COLD_VIP4);
    let target = cold_target();
    fx.set_target(
        COLD_TARGET_ID,
        fixture::target(target, TargetState::Active, 1),
    );
    fx.set_ring(COLD_RING_SLOT, &[COLD_TARGET_ID]);
    let key = fixture::vip_key(vip, PROTO_TCP);
    fx.add_vip(
        key,
        VipMeta {
            vip_id: COLD_VIP_ID,
            ring_slot: COLD_RING_SLOT,
            ring_size: fx.ring_size(),
            flags: 0,
            idle_timeout_s: 3600,
            generation: 1,
        },
    );
    replies_to(fx, target, COLD_TARGET_ID, &key);
}

struct Case {
    name: &'static str,
    /// The VIP whose counters prove the path (new flows, or none).
    vip_id: u32,
    frame: Vec<u8>,
    /// Through the restoring wrapper (the program rewrites the packet).
    wrapped: bool,
    /// Which 5-tuples its iterations carry.
    tuples: Tuples,
    stat: Stat,
    expect_action: u32,
    /// Caps `repeat` (the "table with room" new-flow cases must not fill
    /// the table: [`room_repeat`] caps them further).
    max_repeat: Option<u32>,
    /// Also run on the `--reference` program (an IPv4 frame to one of the
    /// VIPs it is set up for).
    reference: bool,
    /// With the reply-interface check on (`daemon.reply_interface_check`,
    /// off in the fixture), the frame received on the targets' interface
    /// (`topo::FX0`, which the route to them leaves by).
    checked: bool,
}

/// The established flow's reply from `target`, with the reply-interface
/// check `checked` or not.
fn return_case(name: &'static str, target: SocketAddr, checked: bool) -> Case {
    Case {
        name,
        frame: Packet::tcp(target, sock(CLIENT4), tcp_flags::ACK).build(),
        vip_id: 0,
        wrapped: true,
        tuples: Tuples::One,
        stat: Stat::Returned,
        expect_action: fixture::XDP_REDIRECT,
        max_repeat: None,
        reference: false,
        checked,
    }
}

/// Which 5-tuples a case's iterations carry (the wrapper varies the
/// source port and address: `bench_packet`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tuples {
    /// The frame's own, every iteration.
    One,
    /// A new one every iteration: new flows.
    Unique,
    /// Round and round [`COLD_FLOWS`] of the cold VIP's (whose one target
    /// answers every flow), entered and confirmed before the case is
    /// measured (`establish`) and freed after it: established flows spread
    /// over the connection table, as a busy balancer sees them, whose
    /// entries are rarely in the core's own caches (`cargo xtask bench
    /// e2e` at 65,536 flows); measured in an order other than the one
    /// they were entered in ([`COLD_STRIDE`]).
    Cold,
}

const _: () = assert!(COLD_FLOWS.is_power_of_two() && COLD_FLOWS <= 1 << 16);

/// Flows of the cache-cold established case: `bench e2e`'s default.
const COLD_FLOWS: u32 = crate::e2e::FLOWS;

fn cases() -> Vec<Case> {
    let v4 = |src: &str, dst: &str, flags| Packet::tcp(sock(src), sock(dst), flags).build();
    let target4 = SocketAddr::new(topo::host4(1).into(), 8080);
    vec![
        Case {
            name: "established v4 (ACK)",
            frame: v4(CLIENT4, VIP4, tcp_flags::ACK),
            vip_id: 0,
            wrapped: true,
            tuples: Tuples::One,
            stat: Stat::Forwarded,
            expect_action: fixture::XDP_REDIRECT,
            max_repeat: None,
            reference: true,
            checked: false,
        },
        Case {
            name: "established v4 (ACK), 65,536 flows, cache-cold",
            frame: v4(COLD_CLIENT4, COLD_VIP4, tcp_flags::ACK),
            vip_id: COLD_VIP_ID,
            wrapped: true,
            tuples: Tuples::Cold,
            stat: Stat::Forwarded,
            expect_action: fixture::XDP_REDIRECT,
            max_repeat: None,
            reference: true,
            checked: false,
        },
        return_case("return v4 (target -> client)", target4, false),
        return_case(
            "return v4, reply-interface check (in by the targets' interface)",
            target4,
            true,
        ),
        Case {
            name: "established v6 (ACK)",
            frame: Packet::tcp(sock(CLIENT6), sock(VIP6), tcp_flags::ACK).build(),
            vip_id: 1,
            wrapped: true,
            tuples: Tuples::One,
            stat: Stat::Forwarded,
            expect_action: fixture::XDP_REDIRECT,
            max_repeat: None,
            reference: false,
            checked: false,
        },
        Case {
            name: "established v4 dsr (ACK, encapsulated)",
            vip_id: dsr_vip_id(0),
            frame: v4(CLIENT4, DSR_VIP4, tcp_flags::ACK),
            wrapped: true,
            tuples: Tuples::One,
            stat: Stat::Forwarded,
            expect_action: fixture::XDP_REDIRECT,
            max_repeat: None,
            reference: true,
            checked: false,
        },
        Case {
            name: "established v6 dsr (ACK, encapsulated)",
            vip_id: dsr_vip_id(1),
            frame: Packet::tcp(sock(CLIENT6), sock(DSR_VIP6), tcp_flags::ACK).build(),
            wrapped: true,
            tuples: Tuples::One,
            stat: Stat::Forwarded,
            expect_action: fixture::XDP_REDIRECT,
            max_repeat: None,
            reference: false,
            checked: false,
        },
        Case {
            name: "second chance v4 dsr (ACK, no entry, chained)",
            vip_id: CHAIN_VIP_ID,
            frame: v4(CLIENT4, CHAIN_VIP4, tcp_flags::ACK),
            wrapped: true,
            tuples: Tuples::One,
            stat: Stat::SecondChance,
            expect_action: fixture::XDP_REDIRECT,
            max_repeat: None,
            reference: false,
            checked: false,
        },
        Case {
            name: "new flow v4 dsr (SYN), table with room",
            vip_id: dsr_vip_id(0),
            frame: Packet::tcp(sock("203.0.113.98:1000"), sock(DSR_VIP4), tcp_flags::SYN).build(),
            wrapped: true,
            tuples: Tuples::Unique,
            stat: Stat::Forwarded,
            expect_action: fixture::XDP_REDIRECT,
            max_repeat: Some(NEW_FLOW_REPEAT),
            reference: true,
            checked: false,
        },
        Case {
            name: "new flow v6 dsr (SYN), table with room",
            vip_id: dsr_vip_id(1),
            frame: Packet::tcp(
                sock("[2001:db8:c::98]:1000"),
                sock(DSR_VIP6),
                tcp_flags::SYN,
            )
            .build(),
            wrapped: true,
            tuples: Tuples::Unique,
            stat: Stat::Forwarded,
            expect_action: fixture::XDP_REDIRECT,
            max_repeat: Some(NEW_FLOW_REPEAT),
            reference: false,
            checked: false,
        },
        Case {
            name: "non-VIP v4 (pass)",
            frame: v4(CLIENT4, "198.51.100.1:22", tcp_flags::ACK),
            vip_id: 0,
            wrapped: false,
            tuples: Tuples::One,
            stat: Stat::PassNotVip,
            expect_action: fixture::XDP_PASS,
            max_repeat: None,
            reference: false,
            checked: false,
        },
        Case {
            name: "new flow v4 (SYN), table with room",
            frame: Packet::tcp(sock("203.0.113.99:1000"), sock(VIP4), tcp_flags::SYN).build(),
            vip_id: 0,
            wrapped: true,
            tuples: Tuples::Unique,
            stat: Stat::Forwarded,
            expect_action: fixture::XDP_REDIRECT,
            max_repeat: Some(NEW_FLOW_REPEAT),
            reference: true,
            checked: false,
        },
        Case {
            name: "new flow v6 (SYN), table with room",
            frame: Packet::tcp(sock("[2001:db8:c::99]:1000"), sock(VIP6), tcp_flags::SYN).build(),
            vip_id: 1,
            wrapped: true,
            tuples: Tuples::Unique,
            stat: Stat::Forwarded,
            expect_action: fixture::XDP_REDIRECT,
            max_repeat: Some(NEW_FLOW_REPEAT),
            reference: false,
            checked: false,
        },
        Case {
            name: "new flow v4 (SYN), full table (displaces an unconfirmed flow)",
            frame: Packet::tcp(sock("203.0.113.99:1000"), sock(VIP4), tcp_flags::SYN).build(),
            vip_id: 0,
            wrapped: true,
            tuples: Tuples::Unique,
            stat: Stat::Forwarded,
            expect_action: fixture::XDP_REDIRECT,
            max_repeat: None,
            reference: false,
            checked: false,
        },
    ]
}

fn bench_packet(frame: &[u8], tuples: Tuples) -> BenchPacket {
    let vary = tuples != Tuples::One;
    let mut bytes = [0u8; 256];
    bytes[..frame.len()].copy_from_slice(frame);
    // Without VLAN: IPv4's source address at 26 and TCP source port at 34;
    // IPv6's source address at 22 (its last word at 34), port at 54.
    let v6 = frame.get(12..14) == Some(&[0x86, 0xdd]);
    let (port_off, addr_off) = if v6 { (54, 34) } else { (34, 26) };
    BenchPacket {
        len: frame.len() as u32,
        vary_port_off: if vary { port_off } else { 0 },
        // Unique tuples need the address too (past 2^16 iterations); a
        // cycle of at most 2^16 keeps the frame's (a routed client).
        vary_addr_off: if tuples == Tuples::Unique {
            addr_off
        } else {
            0
        },
        vary_mask: match tuples {
            Tuples::Cold => COLD_FLOWS - 1,
            _ => 0,
        },
        // The program under test does not verify checksums.
        l4_csum_off: 0,
        ip_csum_off: 0,
        vary_stride: match tuples {
            Tuples::Cold => COLD_STRIDE,
            _ => 0,
        },
        bytes,
    }
}

/// The order in which a [`Tuples::Cold`] case's flows are measured: the
/// wrapper's sequence times this odd number (a permutation of the
/// tuples), not the order [`establish`] entered them in. Real traffic
/// comes in no order of the table's making; a table whose entries are
/// laid out as they were entered (a hash table's preallocated elements)
/// would otherwise be read front to back, which the CPU's prefetchers
/// serve. (2^16 / the golden ratio, odd.)
const COLD_STRIDE: u32 = 40_503;

const _: () = assert!(COLD_STRIDE % 2 == 1, "an odd stride is a permutation");

/// A [`Tuples::Cold`] case's frame for entering its flows: in the
/// sequence's own order, each lap.
fn entering_packet(frame: &[u8]) -> BenchPacket {
    BenchPacket {
        vary_stride: 0,
        ..bench_packet(frame, Tuples::Cold)
    }
}

fn xdp<'a>(ebpf: &'a aya::Ebpf, name: &str) -> &'a Xdp {
    ebpf.program(name)
        .unwrap_or_else(|| panic!("no program {name}"))
        .try_into()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Runs `rounds` measurements of one configuration; checks the action.
fn measure(
    opts: &Opts,
    repeat: u32,
    prog: &Xdp,
    frame: &[u8],
    expect: u32,
    what: &str,
) -> (f64, f64) {
    let samples = (0..opts.rounds)
        .map(|_| {
            let (ns, action) = ns_per_packet(prog, frame, repeat);
            expect_action(action, expect, what);
            ns
        })
        .collect();
    summarize(samples)
}

/// Panics unless the program returned `expect`.
fn expect_action(action: u32, expect: u32, what: &str) {
    assert_eq!(
        action,
        expect,
        "{what}: action {} instead of {}",
        fixture::action_name(action),
        fixture::action_name(expect)
    );
}

/// Enters and confirms the [`COLD_FLOWS`] 5-tuples of a [`Tuples::Cold`]
/// case in every subject's table, as a nat flow confirms: a lap of the
/// client's packet (new, unconfirmed), one of the target's reply, one more
/// of the client's (confirmed). Each lap covers every tuple: the wrapper's
/// sequence goes on from lap to lap, and any `COLD_FLOWS` consecutive
/// values of it do. Checks that each subject confirmed exactly that many.
fn establish(
    case: &Case,
    subjects: &[&Fixture],
    jump: &mut ProgramArray<aya::maps::MapData>,
    packet: &mut Array<aya::maps::MapData, BenchPacket>,
    wrap: &Xdp,
) {
    let reply = Packet::tcp(cold_target(), sock(COLD_CLIENT4), tcp_flags::ACK).build();
    let laps = [
        (&case.frame, entering_packet(&case.frame)),
        (&reply, reply_packet(&reply)),
        (&case.frame, entering_packet(&case.frame)),
    ];
    for fx in subjects {
        let before = fx.flow_counters(COLD_VIP_ID).confirmed;
        jump_to(jump, Subject::Lb(fx));
        for (frame, bytes) in &laps {
            lap(
                Subject::Lb(fx),
                packet,
                wrap,
                (frame, bytes),
                fixture::XDP_REDIRECT,
                case.name,
            );
        }
        let confirmed = fx.flow_counters(COLD_VIP_ID).confirmed - before;
        assert_eq!(
            confirmed,
            u64::from(COLD_FLOWS),
            "{}: {confirmed} of {COLD_FLOWS} flows confirmed",
            case.name
        );
    }
}

/// The cold case's reply lap: the target's answer to each client of the
/// case, whose port (the destination's: IPv4's at 36) varies as the
/// client's did.
fn reply_packet(frame: &[u8]) -> BenchPacket {
    BenchPacket {
        vary_port_off: 36,
        ..entering_packet(frame)
    }
}

/// Frees every entry of VIP `vip_id` in the connection table, with its
/// `FLOW_META` way.
fn free_flows_of(fx: &mut Fixture, vip_id: u32) {
    for slot in 0..fx.flow_slots() {
        let e = fx.flow_at(slot);
        if e.state() != FlowState::Free && e.vip_id as u32 == vip_id {
            fx.put_flow(slot, FlowEntry::default());
        }
    }
}

/// What a case runs on.
#[derive(Clone, Copy)]
enum Subject<'a> {
    /// `lb_xdp` of a fixture (the `$LB_EBPF_OBJECT` one, or `--against`).
    Lb(&'a Fixture),
    /// The `--reference` program.
    Reference(&'a Xdp),
}

impl Subject<'_> {
    /// For messages.
    fn name(&self) -> &'static str {
        match self {
            Subject::Lb(_) => "lb_xdp",
            Subject::Reference(_) => "the --reference program",
        }
    }

    fn program(&self) -> &Xdp {
        match self {
            Subject::Lb(fx) => fx.program(),
            Subject::Reference(prog) => prog,
        }
    }

    /// The action the case must end in on this subject.
    fn expect_action(&self, case: &Case) -> u32 {
        match self {
            Subject::Lb(_) => case.expect_action,
            Subject::Reference(_) => fixture::XDP_TX,
        }
    }
}

/// The `--reference` program, pinned at `path` in bpffs.
pub fn open_reference(path: &std::path::Path) -> Result<Xdp, aya::programs::ProgramError> {
    Xdp::from_pin(path, aya_obj::programs::XdpAttachType::Interface)
}

/// Puts `subject` behind the wrapper (`JUMP[0]`).
fn jump_to(jump: &mut ProgramArray<aya::maps::MapData>, subject: Subject) {
    let fd = subject.program().fd().expect("program fd");
    jump.set(0, fd, 0).unwrap_or_else(|e| {
        panic!(
            "{}: cannot be tail-called from the wrapper (an XDP program of another kind?): {e}",
            subject.name()
        )
    });
}

/// One lap of a [`Tuples::Cold`] case's [`COLD_FLOWS`] tuples of `frame`
/// through `subject` (already behind the wrapper), ending in `expect`.
fn lap(
    subject: Subject,
    packet: &mut Array<aya::maps::MapData, BenchPacket>,
    wrap: &Xdp,
    (frame, bytes): (&[u8], &BenchPacket),
    expect: u32,
    what: &str,
) {
    packet.set(0, bytes, 0).expect("PACKET");
    let (_, action) = ns_per_packet(wrap, frame, COLD_FLOWS);
    expect_action(action, expect, &format!("{what} ({})", subject.name()));
}

/// Enters the [`COLD_FLOWS`] flows of a [`Tuples::Cold`] case in the
/// reference's table: one lap of the client's packet (a balancer that
/// tracks flows as Katran does keeps them from their first packet).
fn enter_reference(
    case: &Case,
    prog: &Xdp,
    jump: &mut ProgramArray<aya::maps::MapData>,
    packet: &mut Array<aya::maps::MapData, BenchPacket>,
    wrap: &Xdp,
) {
    let subject = Subject::Reference(prog);
    jump_to(jump, subject);
    let bytes = entering_packet(&case.frame);
    lap(
        subject,
        packet,
        wrap,
        (&case.frame, &bytes),
        fixture::XDP_TX,
        "entering the cold flows",
    );
}

/// `rounds` measurements of each subject, alternating the order round by
/// round (A B, B A, ...) so that neither always runs first. Returns each
/// subject's samples, in round order.
fn measure_alternating<T: Copy>(
    rounds: usize,
    subjects: &[T],
    mut one: impl FnMut(T) -> f64,
) -> Vec<Vec<f64>> {
    let mut samples = vec![Vec::with_capacity(rounds); subjects.len()];
    for round in 0..rounds {
        for k in 0..subjects.len() {
            let i = if round % 2 == 0 {
                k
            } else {
                subjects.len() - 1 - k
            };
            samples[i].push(one(subjects[i]));
        }
    }
    samples
}

/// B's figures beside A's, both measured in the same rounds.
fn paired(a: &[f64], b: &[f64], floor_ns: f64) -> Paired {
    let paired = a
        .iter()
        .zip(b)
        .map(|(a, b)| (b - floor_ns) / (a - floor_ns))
        .collect();
    let (median_ns, min_ns) = summarize(b.to_vec());
    Paired {
        median_ns,
        min_ns,
        paired_ratio: summarize(paired).0,
    }
}

/// The counters that prove a case took the path measured, before it ran.
struct Proof {
    stat: u64,
    new_flows: u64,
}

impl Proof {
    fn take(fx: &Fixture, case: &Case) -> Self {
        Self {
            stat: fx.stats()[case.stat as usize],
            new_flows: fx.vip_counters(case.vip_id).new_flows,
        }
    }

    /// Every one of `runs` iterations moved the case's stat, and the VIP's
    /// new flows once per iteration in a new-flow case and never in the
    /// others (an established case whose entry had expired would measure
    /// new flows).
    fn check(&self, fx: &Fixture, case: &Case, runs: u64) {
        let moved = fx.stats()[case.stat as usize] - self.stat;
        assert_eq!(
            moved,
            runs,
            "{}: {} moved {moved}, not {runs}",
            case.name,
            case.stat.name()
        );
        let new_flows = fx.vip_counters(case.vip_id).new_flows - self.new_flows;
        let expect_new = if case.tuples == Tuples::Unique {
            runs
        } else {
            0
        };
        assert_eq!(
            new_flows, expect_new,
            "{}: {new_flows} new flows for {runs} runs",
            case.name
        );
    }
}

/// The daemon's default flow-table capacity.
const BENCH_FLOW_CAPACITY: u32 = lb_common::limits::DEFAULT_FLOW_CAPACITY;
/// Most iterations per round of a "table with room" new-flow case; fewer
/// when [`room_repeat`] says so.
const NEW_FLOW_REPEAT: u32 = 15_000;

/// Iterations per round of each of the `cases` "table with room" new-flow
/// cases: every round of all of them together inserts at most half
/// of the table's capacity, so each finds room (no new flow found its sets
/// full up to five eighths in a simulation: lb_common::flow::spill) and
/// none displaces another.
fn room_repeat(rounds: usize, cases: usize) -> u32 {
    let per_measurement = BENCH_FLOW_CAPACITY as usize / 2 / (rounds * cases).max(1);
    NEW_FLOW_REPEAT.min(per_measurement as u32)
}

pub fn run(opts: &Opts) -> (Vec<Row>, FlowCost) {
    fixture::with_netns(|| {
        fixture::pin_to_cpu(opts.cpu);
        let mut fx = Fixture::load_with(DEFAULT_RING_SIZE, BENCH_FLOW_CAPACITY);
        program_maps(&mut fx);
        let cost = flow_cost(&fx);
        let mut bench = EbpfLoader::new()
            .load_file(bench_object())
            .unwrap_or_else(|e| panic!("loading lb-bench-ebpf: {e:?}"));
        for name in ["bench_pass", "bench_tx", "bench_wrap"] {
            let p: &mut Xdp = bench.program_mut(name).expect(name).try_into().expect(name);
            p.load().unwrap_or_else(|e| panic!("loading {name}: {e:?}"));
        }
        let mut jump: ProgramArray<_> =
            ProgramArray::try_from(bench.take_map("JUMP").expect("JUMP")).expect("JUMP");
        let mut packet: Array<_, BenchPacket> =
            Array::try_from(bench.take_map("PACKET").expect("PACKET")).expect("PACKET");

        let mut rows = Vec::new();
        let any = Packet::tcp(sock(CLIENT4), sock(VIP4), tcp_flags::ACK).build();
        let (m, n) = measure(
            opts,
            opts.repeat,
            xdp(&bench, "bench_pass"),
            &any,
            fixture::XDP_PASS,
            "XDP_PASS",
        );
        rows.push(Row {
            name: "floor: XDP_PASS",
            median_ns: m,
            min_ns: n,
            floor: None,
            against: None,
            reference: None,
        });
        let (m, n) = measure(
            opts,
            opts.repeat,
            xdp(&bench, "bench_tx"),
            &any,
            fixture::XDP_TX,
            "XDP_TX",
        );
        rows.push(Row {
            name: "floor: XDP_TX",
            median_ns: m,
            min_ns: n,
            floor: None,
            against: None,
            reference: None,
        });
        packet
            .set(0, bench_packet(&any, Tuples::One), 0)
            .expect("PACKET");
        jump.set(0, xdp(&bench, "bench_tx").fd().expect("fd"), 0)
            .expect("JUMP");
        let (m, n) = measure(
            opts,
            opts.repeat,
            xdp(&bench, "bench_wrap"),
            &any,
            fixture::XDP_TX,
            "wrapper",
        );
        rows.push(Row {
            name: "floor: restore + tail call + XDP_TX",
            median_ns: m,
            min_ns: n,
            floor: None,
            against: None,
            reference: None,
        });
        let mut fixtures = vec![fx];
        if let Some(path) = opts.against.as_deref() {
            let mut other = Fixture::load_object(path, DEFAULT_RING_SIZE, BENCH_FLOW_CAPACITY);
            program_maps(&mut other);
            fixtures.push(other);
        }
        let wrap = xdp(&bench, "bench_wrap");
        let reference = opts.reference.as_deref().map(|path| {
            open_reference(path).unwrap_or_else(|e| panic!("--reference {}: {e}", path.display()))
        });
        let selected: Vec<Case> = cases()
            .into_iter()
            .filter(|c| opts.only.as_deref().is_none_or(|o| c.name.contains(o)))
            .collect();
        let with_room = selected.iter().filter(|c| c.max_repeat.is_some()).count();
        let room = room_repeat(opts.rounds, with_room);
        for case in selected {
            for fx in &mut fixtures {
                fx.set_config_flags(if case.checked {
                    0
                } else {
                    config_flags::REPLY_ANY_INTERFACE
                });
            }
            let lbs: Vec<&Fixture> = fixtures.iter().collect();
            assert!(
                case.wrapped || !case.reference,
                "{}: the reference runs behind the wrapper only",
                case.name
            );
            let reference = reference.as_ref().filter(|_| case.reference);
            let mut subjects: Vec<Subject> = lbs.iter().map(|fx| Subject::Lb(fx)).collect();
            subjects.extend(reference.map(Subject::Reference));
            let repeat = case
                .max_repeat
                .map_or(opts.repeat, |m| m.min(room).min(opts.repeat));
            if case.tuples == Tuples::Cold {
                establish(&case, &lbs, &mut jump, &mut packet, wrap);
                if let Some(prog) = reference {
                    enter_reference(&case, prog, &mut jump, &mut packet, wrap);
                }
            }
            if case.wrapped {
                packet
                    .set(0, bench_packet(&case.frame, case.tuples), 0)
                    .expect("PACKET");
            }
            let ingress = case.checked.then_some(topo::FX0);
            let before: Vec<Proof> = lbs.iter().map(|fx| Proof::take(fx, &case)).collect();
            let samples = measure_alternating(opts.rounds, &subjects, |subject| {
                let (ns, action) = if case.wrapped {
                    jump_to(&mut jump, subject);
                    ns_per_packet_on(wrap, &case.frame, repeat, ingress)
                } else {
                    ns_per_packet_on(subject.program(), &case.frame, repeat, ingress)
                };
                let what = format!("{} ({})", case.name, subject.name());
                expect_action(action, subject.expect_action(&case), &what);
                ns
            });
            let runs = opts.rounds as u64 * repeat as u64;
            for (fx, before) in lbs.iter().zip(&before) {
                before.check(fx, &case, runs);
            }
            let floor = if case.wrapped {
                "floor: restore + tail call + XDP_TX"
            } else {
                "floor: XDP_PASS"
            };
            let floor_ns = rows
                .iter()
                .find(|r: &&Row| r.name == floor)
                .map_or(0.0, |r| r.median_ns);
            let (m, n) = summarize(samples[0].clone());
            rows.push(Row {
                name: case.name,
                median_ns: m,
                min_ns: n,
                floor: Some(floor),
                against: (lbs.len() > 1).then(|| paired(&samples[0], &samples[1], floor_ns)),
                reference: reference.map(|_| paired(&samples[0], &samples[lbs.len()], floor_ns)),
            });
            if case.tuples == Tuples::Cold {
                // The cases after it find the table as they would without.
                for fx in &mut fixtures {
                    free_flows_of(fx, COLD_VIP_ID);
                }
            }
        }
        (rows, cost)
    })
}

/// Bytes of kernel memory per slot of the connection table (one `FLOWS`
/// entry holds both directions of a flow, plus its share of its set's `FLOW_META` record),
/// from the kernel's memlock accounting divided by the slots.
#[derive(Clone, Debug)]
pub struct FlowCost {
    pub bytes_per_flow: f64,
    pub capacity: u32,
}

fn flow_cost(fx: &Fixture) -> FlowCost {
    let (flows, cap) = fx.map_memlock(lb_common::maps::FLOWS);
    let (meta, _) = fx.map_memlock(lb_common::maps::FLOW_META);
    FlowCost {
        bytes_per_flow: (flows + meta) as f64 / cap as f64,
        capacity: cap,
    }
}
