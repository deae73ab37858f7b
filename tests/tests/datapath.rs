//! Data-path fixture tables (docs/datapath.md is the contract).
//!
//! Each case: a description, an input frame, the expected XDP action, the
//! expected output frame (built with the packet builder from the input's
//! description, never copied from the program), the one `STATS` counter that
//! must move, and optional setup and extra checks. Every output is also
//! checksum-verified from scratch. Cases run through `BPF_PROG_TEST_RUN`
//! against a freshly loaded object inside the fixture network namespace.
//!
//! Needs root and `LB_EBPF_OBJECT` (set by `cargo xtask test`). One case can be
//! selected with `LB_CASE=<substring of its description>`.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};

use lb_common::flow::{FLOW_WAYS, entry_flags, ticks, timeout_ticks};
use lb_common::hash::{flow_hash, source_hash};
use lb_common::limits::{RING_EMPTY, TCP_CLOSING_TIMEOUT_S};
use lb_common::vip::vip_flags;
use lb_common::{
    FlowEntry, FlowKey, FlowState, PROTO_TCP, PROTO_UDP, ReplyTargets, Stat, TargetState, VipMeta,
};
use lb_tests::checksum::verify_frame;
use lb_tests::fixture::{
    self, Fixture, RunResult, XDP_DROP, XDP_PASS, XDP_REDIRECT, action_name, addr, flow_entry,
    flow_key, monotonic_coarse_ns, port_be, topo, vip_key,
};
use lb_tests::packet::tcp_flags::{ACK, FIN, PSH, RST, SYN};
use lb_tests::packet::{
    ETH_P_LLDP, Ext, IPPROTO_AH, IPPROTO_ESP, IPPROTO_GRE, IPPROTO_NONE, L4, Mac, Net, Packet,
    icmp_frag_needed_rest, icmpv6_ptb_rest,
};

/// dsr forwarding's cases (encapsulation), in their own file.
#[path = "datapath/dsr.rs"]
mod dsr;
/// What differs between IPv4 and IPv6, for cases written once for both.
#[path = "datapath/family.rs"]
mod family;

use family::Family;

/// dsr's second chance (chains), in their own file.
#[path = "datapath/second_chance.rs"]
mod second_chance;
/// The connection table's tags, and a table full of established flows.
#[path = "datapath/tags.rs"]
mod tags;

/// The same cases through `lb_tc` (the data path at tc).
#[path = "datapath/tc.rs"]
mod tc;

// ---------------------------------------------------------------------------
// The world every case starts from.
// ---------------------------------------------------------------------------

/// Maglev ring size in the fixtures (a small prime).
const RING: u32 = 13;
/// A ring slot no VIP uses at first, for "the daemon switched the table".
const ALT_SLOT: u32 = 15;
const IDLE_TIMEOUT_S: u32 = 60;

const fn sa4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port)
}

const fn sa6(segs: [u16; 8], port: u16) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(
            segs[0], segs[1], segs[2], segs[3], segs[4], segs[5], segs[6], segs[7],
        )),
        port,
    )
}

const fn on4(n: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(topo::host4(n)), port)
}

const fn on6(n: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(topo::host6(n)), port)
}

#[derive(Clone, Copy, Debug)]
struct TargetDef {
    id: u32,
    addr: SocketAddr,
    /// MAC the fib lookup resolves for it (unused when unreachable).
    mac: Mac,
    state: TargetState,
    generation: u32,
}

const fn tdef(
    id: u32,
    addr: SocketAddr,
    host: u8,
    state: TargetState,
    generation: u32,
) -> TargetDef {
    TargetDef {
        id,
        addr,
        mac: topo::host_mac(host),
        state,
        generation,
    }
}

const T1: TargetDef = tdef(1, on4(1, 8080), 1, TargetState::Active, 3);
const T2: TargetDef = tdef(2, on4(2, 8080), 2, TargetState::Active, 1);
const T3: TargetDef = tdef(3, on4(3, 8081), 3, TargetState::Active, 1);
const T4: TargetDef = tdef(4, on4(4, 5353), 4, TargetState::Active, 1);
const T5: TargetDef = tdef(5, on6(5, 8080), 5, TargetState::Active, 1);
const T6: TargetDef = tdef(6, on6(6, 8080), 6, TargetState::Active, 1);
const T7: TargetDef = tdef(7, on6(7, 5353), 7, TargetState::Active, 1);
/// No route to it.
const T8: TargetDef = tdef(8, sa4(198, 18, 0, 1, 8080), 0, TargetState::Active, 1);
/// On-link, but no neighbour entry.
const T9: TargetDef = tdef(
    9,
    on4(topo::NO_NEIGHBOUR_HOST, 8080),
    topo::NO_NEIGHBOUR_HOST,
    TargetState::Active,
    1,
);
const T10: TargetDef = tdef(10, on4(10, 8080), 10, TargetState::Active, 1);
/// No route to it (IPv6).
const T11: TargetDef = tdef(
    11,
    sa6([0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1], 8080),
    0,
    TargetState::Active,
    1,
);
const T12: TargetDef = tdef(12, on4(12, 8080), 12, TargetState::Draining, 1);
/// The next holder of id 1 in the generation case.
const T1_REUSED: TargetDef = tdef(1, on4(13, 8080), 13, TargetState::Active, 4);

const TARGETS: [TargetDef; 12] = [T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12];

#[derive(Clone, Copy, Debug)]
struct VipDef {
    id: u32,
    addr: SocketAddr,
    proto: u8,
    slot: u32,
    flags: u32,
    ring: &'static [u32],
}

const V_TCP4: VipDef = VipDef {
    id: 1,
    addr: sa4(192, 0, 2, 10, 80),
    proto: PROTO_TCP,
    slot: 1,
    flags: 0,
    ring: &[1],
};
const V_UDP4: VipDef = VipDef {
    id: 2,
    addr: sa4(192, 0, 2, 10, 53),
    proto: PROTO_UDP,
    slot: 2,
    flags: 0,
    ring: &[4],
};
const V_TCP6: VipDef = VipDef {
    id: 3,
    addr: sa6([0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 0x10], 80),
    proto: PROTO_TCP,
    slot: 3,
    flags: 0,
    ring: &[5],
};
const V_UDP6: VipDef = VipDef {
    id: 4,
    addr: sa6([0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 0x10], 53),
    proto: PROTO_UDP,
    slot: 4,
    flags: 0,
    ring: &[7],
};
const V_HASH4: VipDef = VipDef {
    id: 5,
    addr: sa4(192, 0, 2, 20, 80),
    proto: PROTO_TCP,
    slot: 5,
    flags: 0,
    ring: &[1, 2, 3, 10],
};
const V_HASH6: VipDef = VipDef {
    id: 6,
    addr: sa6([0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 0x20], 80),
    proto: PROTO_TCP,
    slot: 6,
    flags: 0,
    ring: &[5, 6],
};
const V_STICKY4: VipDef = VipDef {
    id: 7,
    addr: sa4(192, 0, 2, 21, 80),
    proto: PROTO_TCP,
    slot: 7,
    flags: vip_flags::STICKY_SOURCE_IP,
    ring: &[1, 2, 3, 10],
};
const V_EMPTY: VipDef = VipDef {
    id: 8,
    addr: sa4(192, 0, 2, 30, 80),
    proto: PROTO_TCP,
    slot: 8,
    flags: 0,
    ring: &[RING_EMPTY],
};
const V_NOROUTE4: VipDef = VipDef {
    id: 9,
    addr: sa4(192, 0, 2, 31, 80),
    proto: PROTO_TCP,
    slot: 9,
    flags: 0,
    ring: &[8],
};
const V_NONEIGH: VipDef = VipDef {
    id: 10,
    addr: sa4(192, 0, 2, 32, 80),
    proto: PROTO_TCP,
    slot: 10,
    flags: 0,
    ring: &[9],
};
const V_NOROUTE6: VipDef = VipDef {
    id: 11,
    addr: sa6([0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 0x31], 80),
    proto: PROTO_TCP,
    slot: 11,
    flags: 0,
    ring: &[11],
};
const V_DRAIN: VipDef = VipDef {
    id: 12,
    addr: sa4(192, 0, 2, 33, 80),
    proto: PROTO_TCP,
    slot: 12,
    flags: 0,
    ring: &[12],
};

// dsr VIPs (`vip_flags::DSR`): their rings are those of the nat VIPs of
// the same protocol and family, so they share those ring slots.
const V_DSR4: VipDef = VipDef {
    id: 13,
    addr: sa4(192, 0, 2, 40, 80),
    proto: PROTO_TCP,
    slot: 1,
    flags: vip_flags::DSR,
    ring: &[1],
};
const V_DSR_UDP4: VipDef = VipDef {
    id: 14,
    addr: sa4(192, 0, 2, 40, 53),
    proto: PROTO_UDP,
    slot: 2,
    flags: vip_flags::DSR,
    ring: &[4],
};
const V_DSR6: VipDef = VipDef {
    id: 15,
    addr: sa6([0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 0x40], 80),
    proto: PROTO_TCP,
    slot: 3,
    flags: vip_flags::DSR,
    ring: &[5],
};
const V_DSR_UDP6: VipDef = VipDef {
    id: 16,
    addr: sa6([0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 0x40], 53),
    proto: PROTO_UDP,
    slot: 4,
    flags: vip_flags::DSR,
    ring: &[7],
};

const VIPS: [VipDef; 16] = [
    V_TCP4, V_UDP4, V_TCP6, V_UDP6, V_HASH4, V_HASH6, V_STICKY4, V_EMPTY, V_NOROUTE4, V_NONEIGH,
    V_NOROUTE6, V_DRAIN, V_DSR4, V_DSR_UDP4, V_DSR6, V_DSR_UDP6,
];

const CLIENT4: SocketAddr = sa4(203, 0, 113, 7, 40000);
const CLIENT6: SocketAddr = sa6([0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 7], 40000);
/// A router on the client side (sends ICMP errors about our replies).
const ROUTER4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
const ROUTER6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 1));
/// A router behind the targets.
const INNER_ROUTER4: IpAddr = IpAddr::V4(topo::host4(11));
const NOT_VIP4: SocketAddr = sa4(192, 0, 2, 99, 80);
const NOT_VIP6: SocketAddr = sa6([0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 0x99], 80);

fn meta(v: &VipDef) -> VipMeta {
    VipMeta {
        vip_id: v.id,
        ring_slot: v.slot,
        ring_size: RING,
        flags: v.flags,
        idle_timeout_s: IDLE_TIMEOUT_S,
        generation: 1,
    }
}

fn set_target(fx: &mut Fixture, t: &TargetDef) {
    fx.set_target(t.id, fixture::target(t.addr, t.state, t.generation));
}

/// Loads the object and fills every map with the world above.
fn world() -> Fixture {
    let mut fx = Fixture::load(RING);
    for t in &TARGETS {
        set_target(&mut fx, t);
    }
    for v in &VIPS {
        fx.set_ring(v.slot, v.ring);
        fx.add_vip(vip_key(v.addr, v.proto), meta(v));
    }
    for t in TARGETS.iter().chain([&T1_REUSED]) {
        for proto in [PROTO_TCP, PROTO_UDP] {
            // As the daemon: only nat VIPs have replies to translate.
            let served: Vec<&VipDef> = VIPS
                .iter()
                .filter(|v| v.proto == proto && v.ring.contains(&t.id))
                .filter(|v| v.flags & vip_flags::DSR == 0)
                .collect();
            if !served.is_empty() {
                fx.set_replies(reply_key(t, proto), replies_of(t, &served));
            }
        }
    }
    fx
}

/// `REPLIES` key of target `t` for `proto`.
fn reply_key(t: &TargetDef, proto: u8) -> lb_common::ReplyKey {
    lb_common::ReplyKey {
        addr: addr(t.addr.ip()).0,
        port: port_be(t.addr.port()),
        proto,
        family: addr(t.addr.ip()).1,
    }
}

/// `REPLIES` value of target `t` serving `vips`, as the daemon writes it.
fn replies_of(t: &TargetDef, vips: &[&VipDef]) -> ReplyTargets {
    let mut r = ReplyTargets {
        target_id: t.id,
        count: vips.len() as u32,
        ..ReplyTargets::default()
    };
    for (slot, v) in r.vips.iter_mut().zip(vips) {
        slot.addr = addr(v.addr.ip()).0;
        slot.port = port_be(v.addr.port());
    }
    r
}

/// Points `v` at a new ring (written to [`ALT_SLOT`]) the way the daemon does:
/// write the other slot, then switch `ring_slot`.
fn switch_ring(fx: &mut Fixture, v: &VipDef, ring: &[u32]) {
    fx.set_ring(ALT_SLOT, ring);
    let mut m = meta(v);
    m.ring_slot = ALT_SLOT;
    m.generation += 1;
    fx.set_vip_meta(vip_key(v.addr, v.proto), m);
}

/// An established entry for `client -> vip` pinned to `t`, last seen
/// `age_s` seconds ago, as the program would have left it.
fn established(client: SocketAddr, v: &VipDef, t: &TargetDef, age_s: u64, flags: u8) -> FlowEntry {
    let now = monotonic_coarse_ns();
    let age = age_s * 1_000_000_000;
    assert!(
        now > age + 1_000_000_000,
        "machine up for less than {age_s} s"
    );
    FlowEntry {
        last_seen: ticks(now - age),
        flags,
        ..flow_entry(
            flow_key(client, v.addr, v.proto),
            (t.id, t.generation),
            v.id,
            IDLE_TIMEOUT_S,
        )
    }
}

/// Stores [`established`]'s entry in its first candidate set.
fn pin_flow(
    fx: &mut Fixture,
    client: SocketAddr,
    v: &VipDef,
    t: &TargetDef,
    age_s: u64,
    flags: u8,
) {
    fx.insert_flow(established(client, v, t, age_s, flags));
}

/// Seconds since `e` was last seen.
fn age_s(e: &FlowEntry) -> u32 {
    ticks(monotonic_coarse_ns()).wrapping_sub(e.last_seen) / timeout_ticks(1)
}

// ---------------------------------------------------------------------------
// Expected-packet helpers: the input's description with the contract's edits.
// ---------------------------------------------------------------------------

fn ttl_of(p: &Packet) -> u8 {
    match &p.net {
        Net::Ipv4(ip) => ip.ttl,
        Net::Ipv6(ip) => ip.hop_limit,
        Net::Other { .. } => panic!("no TTL"),
    }
}

/// A client packet as forwarded to `t`: destination rewritten, TTL - 1,
/// Ethernet addresses from the fib lookup (fx0 -> the target's neighbour).
fn to_target(p: &Packet, t: &TargetDef) -> Packet {
    let ttl = ttl_of(p) - 1;
    p.clone().dst(t.addr).ttl(ttl).macs(topo::FX0_MAC, t.mac)
}

/// A target's reply as forwarded to the client: source rewritten to the VIP,
/// TTL - 1, Ethernet addresses of the uplink gateway.
fn to_client(p: &Packet, v: &VipDef) -> Packet {
    let ttl = ttl_of(p) - 1;
    p.clone()
        .src(v.addr)
        .ttl(ttl)
        .macs(topo::FX1_MAC, topo::GATEWAY_MAC)
}

fn with_port(a: SocketAddr, port: u16) -> SocketAddr {
    SocketAddr::new(a.ip(), port)
}

/// The target `v`'s ring gives a new flow `client -> v` (the contract's hash).
fn predicted(fx: &mut Fixture, v: &VipDef, client: SocketAddr) -> u32 {
    let key = flow_key(client, v.addr, v.proto);
    let h = if v.flags & vip_flags::STICKY_SOURCE_IP != 0 {
        source_hash(&key)
    } else {
        flow_hash(&key)
    };
    fx.ring_entry(v.slot, h % RING)
}

fn tdef_by_id(id: u32) -> TargetDef {
    *TARGETS
        .iter()
        .find(|t| t.id == id)
        .unwrap_or_else(|| panic!("no target {id}"))
}

// ---------------------------------------------------------------------------
// Cases and the runner.
// ---------------------------------------------------------------------------

type Setup = Box<dyn Fn(&mut Fixture)>;
type Check = Box<dyn Fn(&mut Fixture, &RunResult)>;

struct Case {
    description: String,
    /// Runs after the world is loaded, before the input (its packets do not
    /// count towards the stat check).
    setup: Option<Setup>,
    input: Vec<u8>,
    expect_action: u32,
    /// `None`: not compared (drops).
    expect_output: Option<Vec<u8>>,
    /// The one `STATS` counter that must move, by exactly one.
    expect_stat: Stat,
    /// Further assertions on maps and counters after the run.
    check: Option<Check>,
    /// Receiving interface (`ctx_in.ingress_ifindex`); `None`: the test run's
    /// default, the namespace's loopback.
    ingress: Option<&'static str>,
}

impl Case {
    fn new(description: impl Into<String>, input: &Packet) -> Self {
        Case {
            description: description.into(),
            setup: None,
            input: input.build(),
            expect_action: XDP_PASS,
            expect_output: None,
            expect_stat: Stat::PassNotVip,
            check: None,
            ingress: None,
        }
    }

    /// Received on `ifname` instead of the loopback.
    fn ingress(mut self, ifname: &'static str) -> Self {
        self.ingress = Some(ifname);
        self
    }

    fn redirect(mut self, expected: &Packet, stat: Stat) -> Self {
        self.expect_action = XDP_REDIRECT;
        self.expect_output = Some(expected.build());
        self.expect_stat = stat;
        self
    }

    /// `XDP_PASS` with the frame untouched.
    fn pass_unchanged(mut self, stat: Stat) -> Self {
        self.expect_action = XDP_PASS;
        self.expect_output = Some(self.input.clone());
        self.expect_stat = stat;
        self
    }

    /// `XDP_PASS` of a rewritten frame.
    fn pass_as(mut self, expected: &Packet, stat: Stat) -> Self {
        self.expect_action = XDP_PASS;
        self.expect_output = Some(expected.build());
        self.expect_stat = stat;
        self
    }

    fn drop(mut self, stat: Stat) -> Self {
        self.expect_action = XDP_DROP;
        self.expect_output = None;
        self.expect_stat = stat;
        self
    }

    fn setup(mut self, f: impl Fn(&mut Fixture) + 'static) -> Self {
        self.setup = Some(Box::new(f));
        self
    }

    fn check(mut self, f: impl Fn(&mut Fixture, &RunResult) + 'static) -> Self {
        self.check = Some(Box::new(f));
        self
    }
}

fn hexdump(out: &mut String, label: &str, bytes: &[u8], other: &[u8]) {
    let _ = writeln!(out, "    {label} ({} bytes):", bytes.len());
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let start = i * 16;
        let differs = chunk
            .iter()
            .enumerate()
            .any(|(j, b)| other.get(start + j) != Some(b))
            || (other.len() < start + chunk.len());
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(
            out,
            "    {} {start:04x}: {}",
            if differs { "*" } else { " " },
            hex.join(" ")
        );
    }
}

fn describe_diff(expected: &[u8], got: &[u8]) -> String {
    let mut s = String::new();
    let offsets: Vec<String> = (0..expected.len().max(got.len()))
        .filter(|&i| expected.get(i) != got.get(i))
        .take(24)
        .map(|i| format!("{i}"))
        .collect();
    let _ = writeln!(
        s,
        "  output differs at byte offsets [{}]",
        offsets.join(", ")
    );
    hexdump(&mut s, "expected", expected, got);
    hexdump(&mut s, "got", got, expected);
    s
}

/// Which program a case runs through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    Xdp,
    /// `lb_tc` on a socket buffer; its tc action is compared as the XDP
    /// action it stands for (see `tc::as_xdp`).
    Tc,
}

fn run_case_at(case: &Case, hook: Hook) {
    let mut fx = world();
    if hook == Hook::Tc {
        fx.load_tc();
    }
    if let Some(setup) = &case.setup {
        setup(&mut fx);
    }
    let before = fx.stats();
    let result = match (hook, case.ingress) {
        (Hook::Xdp, Some(ifname)) => fx.run_on(&case.input, ifname),
        (Hook::Xdp, None) => fx.run(&case.input),
        (Hook::Tc, ifname) => tc::as_xdp(fx.run_tc_on(&case.input, ifname.unwrap_or("lo"))),
    };
    let after = fx.stats();

    let mut problems = String::new();
    if result.action != case.expect_action {
        let _ = writeln!(
            problems,
            "  action: expected {}, got {}",
            action_name(case.expect_action),
            action_name(result.action)
        );
    }
    let moved: Vec<(Stat, u64)> = Stat::ALL
        .iter()
        .zip(after.iter().zip(before.iter()))
        .filter(|(_, (a, b))| a != b)
        .map(|(s, (a, b))| (*s, a - b))
        .collect();
    if moved != [(case.expect_stat, 1)] {
        let got: Vec<String> = moved
            .iter()
            .map(|(s, d)| format!("{} +{d}", s.name()))
            .collect();
        let _ = writeln!(
            problems,
            "  stats: expected exactly {} +1, got [{}]",
            case.expect_stat.name(),
            got.join(", ")
        );
    }
    if let Some(expected) = &case.expect_output {
        if &result.output != expected {
            problems.push_str(&describe_diff(expected, &result.output));
        }
        // A malformed input passed unchanged has no checksums to verify;
        // every other expected frame must verify.
        let want = match verify_frame(expected) {
            Ok(want) => Some(want),
            Err(_) if expected == &case.input => None,
            Err(e) => panic!("the builder made an invalid expected frame: {e}"),
        };
        match want.map(|want| (want, verify_frame(&result.output))) {
            None => {}
            Some((want, Ok(got))) if got == want => {}
            Some((want, Ok(got))) => {
                let _ = writeln!(
                    problems,
                    "  checksums: verified {got:?}, expected to verify {want:?}"
                );
            }
            Some((_, Err(e))) => {
                let _ = writeln!(problems, "  checksums: {e}");
            }
        }
    }
    if !problems.is_empty() {
        panic!("{}:\n{problems}", case.description);
    }
    if let Some(check) = &case.check {
        check(&mut fx, &result);
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        "non-string panic".to_owned()
    }
}

/// Runs every case of a table (each against a freshly loaded object) in one
/// fixture namespace and reports all failures together.
fn run_table(table: fn() -> Vec<Case>) {
    run_table_at(table, Hook::Xdp);
}

fn run_table_at(table: fn() -> Vec<Case>, hook: Hook) {
    let filter = std::env::var("LB_CASE").ok();
    let (total, failures) = fixture::with_netns(move || {
        let cases = table();
        let mut failures = Vec::new();
        let mut total = 0;
        for case in cases.iter().filter(|c| {
            filter
                .as_ref()
                .is_none_or(|f| c.description.contains(f.as_str()))
        }) {
            total += 1;
            match catch_unwind(AssertUnwindSafe(|| run_case_at(case, hook))) {
                Ok(()) => eprintln!("ok    {}", case.description),
                Err(p) => {
                    eprintln!("FAIL  {}", case.description);
                    failures.push(format!("--- {}\n{}", case.description, panic_message(&*p)));
                }
            }
        }
        (total, failures)
    });
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Checks shared by several cases.
// ---------------------------------------------------------------------------

/// A new flow `client -> v` pinned to `t`: one connection-table entry as
/// the contract defines it (unconfirmed: `Syn` for a SYN, else `New`),
/// `new_flows`, `packets_in`, `bytes_in` of one frame, one `embryonic`.
fn expect_new_flow(
    fx: &mut Fixture,
    client: SocketAddr,
    v: &VipDef,
    t: &TargetDef,
    frame_len: usize,
    state: FlowState,
) {
    let key = flow_key(client, v.addr, v.proto);
    let flow = fx.flow(&key).unwrap_or_else(|| {
        panic!(
            "no FLOWS entry for {client} -> {} (keys: {:?})",
            v.addr,
            fx.flow_keys()
        )
    });
    assert_eq!(
        FlowEntry {
            last_seen: 0,
            check: 0,
            ..flow
        },
        FlowEntry {
            state: state as u8,
            last_seen: 0,
            ..flow_entry(key, (t.id, t.generation), v.id, IDLE_TIMEOUT_S)
        },
        "FLOWS entry"
    );
    assert!(
        age_s(&flow) < 10,
        "FLOWS last_seen {} is not recent",
        flow.last_seen
    );
    assert_ne!(flow.check, 0, "entry check");
    assert_eq!(fx.flow_keys(), vec![key], "one entry for both directions");
    let f = fx.flow_counters(v.id);
    assert_eq!(
        (f.embryonic, f.confirmed, f.displaced, f.untracked),
        (1, 0, 0, 0),
        "FLOW_STATS (embryonic, confirmed, displaced, untracked)"
    );
    let len = u64::try_from(frame_len).expect("len");
    let one_in = |c: lb_common::Counters, what: &str| {
        assert_eq!(
            (c.packets_in, c.bytes_in, c.new_flows, c.packets_out),
            (1, len, 1, 0),
            "{what} counters (packets_in, bytes_in, new_flows, packets_out)"
        );
    };
    one_in(fx.vip_counters(v.id), "VIP_STATS");
    one_in(fx.target_counters(t.id), "TARGET_STATS");
}

fn expect_no_flows(fx: &mut Fixture) {
    assert_eq!(fx.flow_keys(), vec![], "FLOWS should hold no flow");
}

fn expect_flow_target(fx: &mut Fixture, client: SocketAddr, v: &VipDef, t: &TargetDef) {
    let flow = fx
        .flow(&flow_key(client, v.addr, v.proto))
        .expect("FLOWS entry");
    assert_eq!(
        (u32::from(flow.target_id), u32::from(flow.target_gen)),
        (t.id, t.generation),
        "FLOWS (target_id, target_gen)"
    );
}

/// The ICMP error the program generates for `orig` (a client packet to a
/// VIP) that is too big for an egress MTU of `mtu`: from the VIP to the
/// client, back to the sender's MAC, quoting the packet as the client sent
/// it less our TTL decrement (IP header + 8 bytes).
fn too_big_reply(orig: &Packet, mtu: u16) -> Packet {
    let quoted = orig.clone().ttl(63);
    let (client, vip) = match &orig.net {
        Net::Ipv4(ip) => (IpAddr::V4(ip.src), IpAddr::V4(ip.dst)),
        Net::Ipv6(ip) => (IpAddr::V6(ip.src), IpAddr::V6(ip.dst)),
        Net::Other { .. } => panic!("not IP"),
    };
    let fam = Family::of(orig);
    let (ty, code, rest) = fam.too_big(mtu);
    let mut r = Packet::icmp_error(vip, client, ty, code, rest, &quoted, fam.icmp_quote())
        .macs(orig.eth_dst, orig.eth_src)
        .ttl(64);
    match &mut r.net {
        Net::Ipv4(ip) => {
            ip.id = 0;
            ip.dont_fragment = true;
        }
        Net::Ipv6(ip) => {
            ip.flow_label = 0;
            ip.traffic_class = 0;
        }
        Net::Other { .. } => {}
    }
    r
}

/// Runs `p` in a setup and insists it was forwarded (so a broken first packet
/// is reported as such, not as a confusing later failure).
fn send(fx: &mut Fixture, p: &Packet) -> RunResult {
    let r = fx.run(&p.build());
    assert_eq!(
        r.action,
        XDP_REDIRECT,
        "setup packet was not forwarded (got {})",
        action_name(r.action)
    );
    r
}

// ---------------------------------------------------------------------------
// Tables.
// ---------------------------------------------------------------------------

fn parsing_cases() -> Vec<Case> {
    let syn4 = Packet::tcp(CLIENT4, V_TCP4.addr, SYN);
    let syn6 = Packet::tcp(CLIENT6, V_TCP6.addr, SYN);
    let ip4_at = syn4.l2_len();
    let mut cases = Family::each(parsing_cases_for);
    cases.extend([
        Case::new(
            "TCP to a VIP address, other port",
            &syn4.clone().dst(with_port(V_TCP4.addr, 81)),
        )
        .pass_unchanged(Stat::PassNotVip),
        Case::new(
            "UDP to a TCP-only VIP port",
            &Packet::udp(CLIENT4, V_TCP4.addr),
        )
        .pass_unchanged(Stat::PassNotVip),
        Case::new(
            "GRE to a VIP address",
            &syn4.clone().with_l4(L4::Raw {
                proto: IPPROTO_GRE,
                bytes: vec![0, 0, 0x08, 0, 0, 0, 0, 0],
            }),
        )
        .pass_unchanged(Stat::PassNotVip),
        Case::new(
            "ARP request",
            &Packet::arp_request(Ipv4Addr::new(203, 0, 113, 7), Ipv4Addr::new(192, 0, 2, 10)),
        )
        .pass_unchanged(Stat::PassNotIp),
        Case::new(
            "LLDP frame",
            &Packet::ethertype(ETH_P_LLDP, vec![0x02, 0x07, 0x04, 0, 0, 0, 0, 0, 1, 0, 0]),
        )
        .pass_unchanged(Stat::PassNotIp),
        Case::new(
            "802.1ad-tagged SYN to an IPv4 VIP (tag kept)",
            &syn4.clone().vlan_ad(200),
        )
        .redirect(&to_target(&syn4.clone().vlan_ad(200), &T1), Stat::Forwarded),
        Case::new(
            "two VLAN tags (802.1ad + 802.1Q)",
            &syn4.clone().vlan_ad(200).vlan(100),
        )
        .pass_unchanged(Stat::PassVlanStack),
        Case::new("two 802.1Q tags", &syn4.clone().vlan(100).vlan(101))
            .pass_unchanged(Stat::PassVlanStack),
        Case::new("VLAN tag truncated", &syn4.clone().vlan(100).truncate(16))
            .pass_unchanged(Stat::PassMalformed),
        Case::new(
            "UDP header truncated, to a VIP",
            &Packet::udp(CLIENT4, V_UDP4.addr).truncate(ip4_at + 20 + 4),
        )
        .drop(Stat::DropMalformed),
        Case::new(
            "TCP header truncated, to a VIP address on a non-VIP port",
            &syn4
                .clone()
                .dst(with_port(V_TCP4.addr, 81))
                .truncate(ip4_at + 20 + 10),
        )
        .drop(Stat::DropMalformed),
        Case::new(
            "TCP header truncated, not to a VIP",
            &Packet::tcp(CLIENT4, NOT_VIP4, SYN).truncate(ip4_at + 20 + 10),
        )
        .pass_unchanged(Stat::PassMalformed),
        Case::new(
            "IPv4 options (router alert + NOPs) to a VIP: forwarded, options kept",
            &syn4
                .clone()
                .ipv4_options(&[0x94, 0x04, 0, 0, 0x01, 0x01, 0x01, 0x01]),
        )
        .redirect(
            &to_target(
                &syn4
                    .clone()
                    .ipv4_options(&[0x94, 0x04, 0, 0, 0x01, 0x01, 0x01, 0x01]),
                &T1,
            ),
            Stat::Forwarded,
        ),
        Case::new(
            "IPv4 maximum options (IHL 15) to a VIP",
            &syn4.clone().ipv4_options(&[0x01; 40]),
        )
        .redirect(
            &to_target(&syn4.clone().ipv4_options(&[0x01; 40]), &T1),
            Stat::Forwarded,
        ),
        Case::new(
            "IPv4 DF set to a VIP: forwarded, DF kept",
            &syn4.clone().dont_fragment(),
        )
        .redirect(
            &to_target(&syn4.clone().dont_fragment(), &T1),
            Stat::Forwarded,
        ),
        Case::new(
            "IPv4 later fragment (offset) to a VIP",
            &syn4.clone().fragment(185, false),
        )
        .drop(Stat::DropFragment),
        Case::new(
            "IPv4 fragment to a VIP address on a non-VIP port",
            &syn4
                .clone()
                .dst(with_port(V_TCP4.addr, 81))
                .fragment(0, true),
        )
        .drop(Stat::DropFragment),
        Case::new(
            "IPv6 fragment header after hop-by-hop, to a VIP",
            &syn6.clone().ext(Ext::HopByHop(vec![])).ext(Ext::Fragment {
                offset: 10,
                more: false,
                id: 77,
            }),
        )
        .drop(Stat::DropFragment),
        Case::new("TTL 0 to a VIP", &syn4.clone().ttl(0)).pass_unchanged(Stat::PassTtlExceeded),
        Case::new("TTL 2 to a VIP: forwarded with TTL 1", &syn4.clone().ttl(2))
            .redirect(&to_target(&syn4.clone().ttl(2), &T1), Stat::Forwarded),
    ]);

    // Malformed IPv4 headers (checksums recomputed so only the field is wrong).
    let mut bad_version = syn4.clone();
    bad_version.ipv4_mut().version = Some(6);
    let mut ihl4 = syn4.clone();
    ihl4.ipv4_mut().ihl = Some(4);
    let mut short_total = syn4.clone();
    short_total.ipv4_mut().total_len = Some(16);
    cases.push(
        Case::new("IPv4 EtherType, version 6", &bad_version).pass_unchanged(Stat::PassMalformed),
    );
    cases.push(Case::new("IPv4 IHL 4", &ihl4).pass_unchanged(Stat::PassMalformed));
    cases.push(
        Case::new("IPv4 total length 16 < IHL*4", &short_total).pass_unchanged(Stat::PassMalformed),
    );

    // IPv6 extension headers.
    let srh = |final_dst: SocketAddr| {
        let IpAddr::V6(a) = final_dst.ip() else {
            unreachable!()
        };
        let mut data = vec![0, 0, 0, 0];
        data.extend_from_slice(&a.octets());
        Ext::Routing {
            routing_type: 4,
            segments_left: 0,
            data,
        }
    };
    let hbh_dst = syn6
        .clone()
        .ext(Ext::HopByHop(vec![0x05, 0x02, 0, 0]))
        .ext(Ext::DestOpts(vec![]));
    cases.push(
        Case::new("IPv6 hop-by-hop + destination options to a VIP", &hbh_dst)
            .redirect(&to_target(&hbh_dst, &T5), Stat::Forwarded),
    );
    let four = syn6
        .clone()
        .ext(Ext::HopByHop(vec![]))
        .ext(Ext::DestOpts(vec![]))
        .ext(srh(V_TCP6.addr))
        .ext(Ext::DestOpts(vec![0x1e, 0x06, 1, 2, 3, 4, 5, 6]));
    cases.push(
        Case::new("IPv6 chain of 4 extension headers (limit) to a VIP", &four)
            .redirect(&to_target(&four, &T5), Stat::Forwarded),
    );
    let five = syn6
        .clone()
        .ext(Ext::HopByHop(vec![]))
        .ext(Ext::DestOpts(vec![]))
        .ext(srh(V_TCP6.addr))
        .ext(Ext::DestOpts(vec![]))
        .ext(Ext::DestOpts(vec![]));
    cases.push(
        Case::new("IPv6 chain of 5 extension headers to a VIP", &five)
            .pass_unchanged(Stat::PassIpv6Ext),
    );
    cases.push(
        Case::new(
            "IPv6 AH to a VIP",
            &syn6.clone().ext(Ext::Raw {
                header: IPPROTO_AH,
                body: vec![1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
            }),
        )
        .pass_unchanged(Stat::PassIpv6Ext),
    );
    cases.push(
        Case::new(
            "IPv6 ESP to a VIP",
            &syn6.clone().with_l4(L4::Raw {
                proto: IPPROTO_ESP,
                bytes: vec![0, 0, 1, 0, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef],
            }),
        )
        .pass_unchanged(Stat::PassIpv6Ext),
    );
    for (header, name) in [
        (135, "mobility"),
        (139, "HIP"),
        (140, "shim6"),
        (253, "experimental 253"),
        (254, "experimental 254"),
    ] {
        cases.push(
            Case::new(
                format!("IPv6 {name} extension header ({header}) to a VIP"),
                &syn6.clone().ext(Ext::Raw {
                    header,
                    body: vec![0, 0, 0, 0, 0, 0, 0],
                }),
            )
            .pass_unchanged(Stat::PassIpv6Ext),
        );
    }
    let frag_after_limit = syn6
        .clone()
        .ext(Ext::HopByHop(vec![]))
        .ext(Ext::DestOpts(vec![]))
        .ext(srh(V_TCP6.addr))
        .ext(Ext::DestOpts(vec![]))
        .ext(Ext::Fragment {
            offset: 0,
            more: true,
            id: 9,
        });
    cases.push(
        Case::new(
            "IPv6 fragment header after 4 extension headers, to a VIP",
            &frag_after_limit,
        )
        .pass_unchanged(Stat::PassIpv6Ext),
    );
    cases.push(
        Case::new(
            "IPv6 no next header to a VIP",
            &syn6.clone().with_l4(L4::Raw {
                proto: IPPROTO_NONE,
                bytes: vec![],
            }),
        )
        .pass_unchanged(Stat::PassIpv6Ext),
    );
    cases
}

/// [`parsing_cases`] that hold for both families.
fn parsing_cases_for(fam: Family) -> Vec<Case> {
    let (client, v, t) = (fam.client(), fam.tcp_vip(), fam.tcp_target());
    let syn = Packet::tcp(client, v.addr, SYN);
    let ip_at = syn.l2_len();
    let header = fam.ip_header_len();
    let mut cases = vec![
        Case::new(
            format!("{fam} TCP to a non-VIP address"),
            &Packet::tcp(client, fam.not_vip(), SYN),
        )
        .pass_unchanged(Stat::PassNotVip),
        Case::new(
            format!("{fam} first fragment (MF) to a VIP"),
            &fam.fragment(syn.clone(), 0, true),
        )
        .drop(Stat::DropFragment),
        Case::new(
            format!("{fam} fragment to a non-VIP address"),
            &fam.fragment(Packet::tcp(client, fam.not_vip(), SYN), 0, true),
        )
        .pass_unchanged(Stat::PassNotVip),
        Case::new(
            format!("{fam} {} 1 to a VIP", fam.ttl_name()),
            &syn.clone().ttl(1),
        )
        .pass_unchanged(Stat::PassTtlExceeded)
        .check(|fx, _| expect_no_flows(fx)),
    ];
    for tag in [100, 7] {
        let tagged = syn.clone().vlan(tag);
        cases.push(
            Case::new(
                format!("802.1Q-tagged (VLAN {tag}) SYN to an {fam} VIP (tag kept)"),
                &tagged,
            )
            .redirect(&to_target(&tagged, &t), Stat::Forwarded),
        );
    }
    for short in [8, 10] {
        cases.push(
            Case::new(
                format!("{fam} header truncated ({short} bytes short)"),
                &syn.clone().truncate(ip_at + header - short),
            )
            .pass_unchanged(Stat::PassMalformed),
        );
    }
    for kept in [10, 12] {
        cases.push(
            Case::new(
                format!("{fam} TCP header truncated to {kept} bytes, to a VIP"),
                &syn.clone().truncate(ip_at + header + kept),
            )
            .drop(Stat::DropMalformed),
        );
    }
    cases
}

fn forward_cases() -> Vec<Case> {
    let mut cases = Family::each(forward_cases_for);

    // NICs pad frames to the 60-byte minimum; the padding is not in the IP
    // length, stays in the frame and counts in bytes_in.
    let padded = Packet::tcp(CLIENT4, V_TCP4.addr, SYN).pad_to(60);
    cases.push(
        Case::new("SYN padded to the 60-byte Ethernet minimum", &padded)
            .redirect(&to_target(&padded, &T1), Stat::Forwarded)
            .check(|fx, _| expect_new_flow(fx, CLIENT4, &V_TCP4, &T1, 60, FlowState::Syn)),
    );

    let data = Packet::tcp(CLIENT4, V_TCP4.addr, PSH | ACK).payload(&[0x5a; 333]);
    cases.push(
        Case::new(
            "first packet with an odd-length payload to an IPv4 VIP",
            &data,
        )
        .setup(|fx| switch_ring(fx, &V_TCP4, &[T3.id]))
        .redirect(&to_target(&data, &T3), Stat::Forwarded)
        .check(move |fx, _| {
            let e = fx
                .flow(&flow_key(CLIENT4, V_TCP4.addr, PROTO_TCP))
                .expect("entry");
            assert_eq!(
                e.state(),
                FlowState::New,
                "picked up mid-stream: unconfirmed"
            );
        }),
    );

    let udp = Packet::udp(with_port(CLIENT4, 5000), V_UDP4.addr);
    let udp0 = udp.clone().udp_zero_checksum();
    cases.push(
        Case::new("UDP without checksum (0) to an IPv4 VIP: stays 0", &udp0)
            .redirect(&to_target(&udp0, &T4), Stat::Forwarded),
    );

    // A payload that makes the rewritten datagram's computed checksum 0, which
    // must go out as 0xffff (RFC 768).
    let ffff = udp_whose_output_checksum_is_zero();
    cases.push(
        Case::new(
            "UDP whose new checksum computes to 0 is sent as 0xffff",
            &ffff,
        )
        .redirect(&to_target(&ffff, &T4), Stat::Forwarded)
        .check(|_, r| {
            let at = 14 + 20 + 6;
            assert_eq!(&r.output[at..at + 2], &[0xff, 0xff], "UDP checksum field");
        }),
    );

    // Which target a new flow picks: MAGLEV[slot * size + flow_hash % size].
    let mut picked = std::collections::BTreeSet::new();
    for (v, client, ports) in [
        (V_HASH4, CLIENT4, 41000u16..41008),
        (V_HASH6, CLIENT6, 42000u16..42006),
    ] {
        for port in ports {
            let c = with_port(client, port);
            let p = Packet::tcp(c, v.addr, SYN);
            let ring: Vec<u32> = v.ring.to_vec();
            let key = flow_key(c, v.addr, v.proto);
            let pick = ring[usize::try_from(flow_hash(&key) % RING).expect("index") % ring.len()];
            let t = tdef_by_id(pick);
            picked.insert(pick);
            cases.push(
                Case::new(
                    format!(
                        "new flow {c} -> {} picks flow_hash % {RING} (target {pick})",
                        v.addr
                    ),
                    &p,
                )
                .redirect(&to_target(&p, &t), Stat::Forwarded)
                .check(move |fx, _| {
                    assert_eq!(predicted(fx, &v, c), pick, "ring as written");
                    expect_flow_target(fx, c, &v, &t);
                }),
            );
        }
    }

    assert!(
        picked.len() >= 4,
        "hash cases reach only targets {picked:?}"
    );

    // source_ip stickiness: two client ports whose 5-tuple hashes pick other
    // targets both go where the source hash says.
    let sticky_pick = {
        let key = flow_key(CLIENT4, V_STICKY4.addr, PROTO_TCP);
        V_STICKY4.ring
            [usize::try_from(source_hash(&key) % RING).expect("index") % V_STICKY4.ring.len()]
    };
    let five_tuple_pick = |port: u16| {
        let key = flow_key(with_port(CLIENT4, port), V_STICKY4.addr, PROTO_TCP);
        V_STICKY4.ring
            [usize::try_from(flow_hash(&key) % RING).expect("index") % V_STICKY4.ring.len()]
    };
    let ports: Vec<u16> = (43000u16..44000)
        .filter(|p| five_tuple_pick(*p) != sticky_pick)
        .take(2)
        .collect();
    assert_eq!(ports.len(), 2, "found discriminating ports");
    let (first, second) = (with_port(CLIENT4, ports[0]), with_port(CLIENT4, ports[1]));
    let t = tdef_by_id(sticky_pick);
    let p = Packet::tcp(second, V_STICKY4.addr, SYN);
    cases.push(
        Case::new(
            format!("source_ip stickiness: {first} then {second} both to target {sticky_pick}"),
            &p,
        )
        .setup(move |fx| {
            let p1 = Packet::tcp(first, V_STICKY4.addr, SYN);
            let r = send(fx, &p1);
            assert_eq!(r.output, to_target(&p1, &t).build(), "first port's packet");
        })
        .redirect(&to_target(&p, &t), Stat::Forwarded)
        .check(move |fx, _| {
            expect_flow_target(fx, first, &V_STICKY4, &t);
            expect_flow_target(fx, second, &V_STICKY4, &t);
            assert_eq!(
                fx.target_counters(t.id).new_flows,
                2,
                "two new flows on the target"
            );
        }),
    );

    let p = Packet::tcp(CLIENT4, V_EMPTY.addr, SYN);
    cases.push(
        Case::new("VIP with an empty ring", &p)
            .drop(Stat::DropNoTarget)
            .check(|fx, _| expect_no_flows(fx)),
    );
    let p = Packet::tcp(CLIENT4, V_DRAIN.addr, SYN);
    cases.push(
        Case::new("new flow whose ring entry is a draining target", &p)
            .drop(Stat::DropNoTarget)
            .check(|fx, _| expect_no_flows(fx)),
    );
    let p = Packet::tcp(CLIENT4, V_TCP4.addr, SYN);
    cases.push(
        Case::new("new flow whose ring entry is an unused target", &p)
            .setup(|fx| {
                fx.set_target(
                    T1.id,
                    fixture::target(T1.addr, TargetState::Unused, T1.generation),
                );
            })
            .drop(Stat::DropNoTarget),
    );

    // The fib lookup outcomes.
    let p = Packet::tcp(CLIENT4, V_NONEIGH.addr, SYN);
    let passed = p.clone().dst(T9.addr).ttl(63);
    cases.push(
        Case::new(
            "target's neighbour unresolved: rewritten packet passed to the kernel",
            &p,
        )
        .pass_as(&passed, Stat::PassNoNeighbour)
        .check(move |fx, _| {
            assert!(
                fx.flow(&flow_key(CLIENT4, V_NONEIGH.addr, PROTO_TCP))
                    .is_some(),
                "flow kept"
            );
        }),
    );
    let big_df_off = Packet::tcp(CLIENT4, V_TCP4.addr, ACK).payload(&[0x42; 1600]);
    let passed = big_df_off.clone().dst(T1.addr).ttl(63);
    cases.push(
        Case::new(
            "larger than the egress MTU without DF: translated and passed to the kernel (it fragments)",
            &big_df_off,
        )
        .pass_as(&passed, Stat::PassMtu),
    );

    // Where the frame came in: the fib lookup starts from the ingress device.
    let syn = Packet::tcp(CLIENT4, V_TCP4.addr, SYN);
    cases.push(
        Case::new(
            "SYN received on the uplink (fx1) is redirected to fx0",
            &syn,
        )
        .ingress(topo::FX1)
        .redirect(&to_target(&syn, &T1), Stat::Forwarded),
    );
    cases
}

/// [`forward_cases`] that hold for both families.
fn forward_cases_for(fam: Family) -> Vec<Case> {
    let mut cases = Vec::new();
    let (client, v, t) = (fam.client(), fam.tcp_vip(), fam.tcp_target());

    let syn = Packet::tcp(client, v.addr, SYN);
    let len = syn.build().len();
    cases.push(
        Case::new(format!("SYN to an {fam} VIP"), &syn)
            .redirect(&to_target(&syn, &t), Stat::Forwarded)
            .check(move |fx, _| {
                expect_new_flow(fx, client, &v, &t, len, FlowState::Syn);
                assert_eq!(fx.flow_counters(v.id).syns, 1, "syns");
            }),
    );

    let (udp_client, uv, ut) = (with_port(client, 5000), fam.udp_vip(), fam.udp_target());
    let udp = Packet::udp(udp_client, uv.addr);
    let len = udp.build().len();
    cases.push(
        Case::new(format!("UDP with checksum to an {fam} VIP"), &udp)
            .redirect(&to_target(&udp, &ut), Stat::Forwarded)
            .check(move |fx, _| {
                expect_new_flow(fx, udp_client, &uv, &ut, len, FlowState::New);
                assert_eq!(fx.flow_counters(uv.id).syns, 0, "no SYN counted");
            }),
    );

    let p = Packet::tcp(client, fam.no_route_vip().addr, SYN);
    cases.push(Case::new(format!("no route to the {fam} target"), &p).drop(Stat::DropNoRoute));

    let big = fam.dont_fragment(Packet::tcp(client, v.addr, ACK).payload(&[0x42; 1600]));
    cases.push(
        Case::new(
            format!(
                "{fam} larger than the egress MTU, not to be fragmented: {} from the VIP",
                fam.too_big_name()
            ),
            &big,
        )
        .redirect(&too_big_reply(&big, 1500), Stat::TooBigSent),
    );

    cases.push(
        Case::new(
            format!(
                "one-armed: {fam} SYN received on the targets' interface (fx0) is redirected back out of it"
            ),
            &syn,
        )
        .ingress(topo::FX0)
        .redirect(&to_target(&syn, &t), Stat::Forwarded),
    );
    cases
}

fn udp_whose_output_checksum_is_zero() -> Packet {
    let client = with_port(CLIENT4, 5001);
    let base = Packet::udp(client, V_UDP4.addr).payload(&[0, 0, 0x12, 0x34]);
    // Sum of the rewritten datagram with payload word 0 and checksum 0.
    let out = to_target(&base, &T4).udp_zero_checksum();
    let ip = out.net.bytes();
    let udp = &ip[20..];
    let IpAddr::V4(src) = CLIENT4.ip() else {
        unreachable!()
    };
    let IpAddr::V4(dst) = T4.addr.ip() else {
        unreachable!()
    };
    let pseudo = lb_tests::checksum::pseudo_v4(src, dst, PROTO_UDP, udp.len());
    let s = lb_tests::checksum::fold(
        lb_tests::checksum::sum_words(&pseudo) + lb_tests::checksum::sum_words(udp),
    );
    // Make the total sum 0xffff so the computed checksum is 0.
    let word = 0xffff - s;
    let p = Packet::udp(client, V_UDP4.addr).payload(&[
        (word >> 8) as u8,
        (word & 0xff) as u8,
        0x12,
        0x34,
    ]);
    let built = to_target(&p, &T4).build();
    assert_eq!(
        &built[14 + 20 + 6..14 + 20 + 8],
        &[0xff, 0xff],
        "crafted datagram"
    );
    p
}

fn conntrack_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let syn = Packet::tcp(CLIENT4, V_TCP4.addr, SYN);
    let ack = Packet::tcp(CLIENT4, V_TCP4.addr, ACK).payload(b"GET / HTTP/1.0\r\n\r\n");

    let syn_c = syn.clone();
    cases.push(
        Case::new(
            "established flow follows FLOWS after the ring changed",
            &ack,
        )
        .setup(move |fx| {
            send(fx, &syn_c);
            switch_ring(fx, &V_TCP4, &[T2.id]);
        })
        .redirect(&to_target(&ack, &T1), Stat::Forwarded)
        .check(|fx, _| {
            expect_flow_target(fx, CLIENT4, &V_TCP4, &T1);
            assert_eq!(fx.vip_counters(V_TCP4.id).new_flows, 1, "VIP new_flows");
            assert_eq!(fx.vip_counters(V_TCP4.id).packets_in, 2, "VIP packets_in");
            assert_eq!(fx.target_counters(T2.id).new_flows, 0, "T2 new_flows");
        }),
    );

    let udp = Packet::udp(with_port(CLIENT4, 5000), V_UDP4.addr);
    let udp_c = udp.clone();
    cases.push(
        Case::new(
            "established UDP flow follows FLOWS after the ring changed",
            &udp,
        )
        .setup(move |fx| {
            send(fx, &udp_c);
            switch_ring(fx, &V_UDP4, &[T2.id]);
        })
        .redirect(&to_target(&udp, &T4), Stat::Forwarded),
    );

    let syn_c = syn.clone();
    cases.push(
        Case::new("established flow to a draining target stays", &ack)
            .setup(move |fx| {
                send(fx, &syn_c);
                fx.set_target(
                    T1.id,
                    fixture::target(T1.addr, TargetState::Draining, T1.generation),
                );
                switch_ring(fx, &V_TCP4, &[T2.id]);
            })
            .redirect(&to_target(&ack, &T1), Stat::Forwarded),
    );

    let rst = Packet::tcp(CLIENT4, V_TCP4.addr, RST | ACK);
    let syn_c = syn.clone();
    cases.push(
        Case::new(
            "RST on an unconfirmed flow is forwarded and frees its entry",
            &rst,
        )
        .setup(move |fx| {
            send(fx, &syn_c);
            switch_ring(fx, &V_TCP4, &[T2.id]);
        })
        .redirect(&to_target(&rst, &T1), Stat::Forwarded)
        .check(|fx, _| expect_no_flows(fx)),
    );

    cases.push(
        Case::new(
            "RST on an established flow is forwarded and marks it closing, not freed",
            &rst,
        )
        .setup(|fx| {
            pin_flow(fx, CLIENT4, &V_TCP4, &T1, 30, 0);
            switch_ring(fx, &V_TCP4, &[T2.id]);
        })
        .redirect(&to_target(&rst, &T1), Stat::Forwarded)
        .check(|fx, _| {
            let flow = fx
                .flow(&flow_key(CLIENT4, V_TCP4.addr, PROTO_TCP))
                .expect("FLOWS entry kept after a RST");
            assert_eq!(flow.state(), FlowState::Established);
            assert_eq!(flow.flags & entry_flags::RST, entry_flags::RST, "RST flag");
            assert!(flow.closing(), "closing");
            assert!(age_s(&flow) < 5, "closing timer starts at the RST");
        }),
    );
    cases.push(
        Case::new(
            "established flow still forwards to its target after a RST",
            &ack,
        )
        .setup(|fx| {
            pin_flow(fx, CLIENT4, &V_TCP4, &T1, 30, 0);
            switch_ring(fx, &V_TCP4, &[T2.id]);
            send(fx, &Packet::tcp(CLIENT4, V_TCP4.addr, RST));
        })
        .redirect(&to_target(&ack, &T1), Stat::Forwarded),
    );

    for (what, flags) in [
        ("", 0),
        (" whose client sent a FIN", entry_flags::FIN),
        (" whose target sent a FIN", entry_flags::TARGET_FIN),
    ] {
        cases.push(
            Case::new(
                format!("SYN on an established flow{what} goes to its target, entry unchanged"),
                &syn,
            )
            .setup(move |fx| {
                pin_flow(fx, CLIENT4, &V_TCP4, &T1, 2, flags);
                switch_ring(fx, &V_TCP4, &[T2.id]);
            })
            .redirect(&to_target(&syn, &T1), Stat::Forwarded)
            .check(move |fx, _| {
                let flow = fx
                    .flow(&flow_key(CLIENT4, V_TCP4.addr, PROTO_TCP))
                    .expect("FLOWS entry");
                assert_eq!(
                    (flow.state(), u32::from(flow.target_id), flow.flags),
                    (FlowState::Established, T1.id, flags),
                    "(state, target, flags)"
                );
                assert_eq!(fx.vip_counters(V_TCP4.id).new_flows, 0, "no new flow");
            }),
        );
    }
    for (what, flags) in [
        ("FINs both ways", entry_flags::FIN | entry_flags::TARGET_FIN),
        ("a RST", entry_flags::RST),
    ] {
        cases.push(
            Case::new(
                format!("SYN on an established flow closing after {what} is a new flow"),
                &syn,
            )
            .setup(move |fx| {
                pin_flow(fx, CLIENT4, &V_TCP4, &T1, 2, flags);
                switch_ring(fx, &V_TCP4, &[T2.id]);
            })
            .redirect(&to_target(&syn, &T2), Stat::Forwarded)
            .check(|fx, _| {
                let flow = fx
                    .flow(&flow_key(CLIENT4, V_TCP4.addr, PROTO_TCP))
                    .expect("FLOWS entry");
                assert_eq!(
                    (flow.state(), u32::from(flow.target_id), flow.flags),
                    (FlowState::Syn, T2.id, 0),
                    "(state, target, flags)"
                );
            }),
        );
    }

    let fin = Packet::tcp(CLIENT4, V_TCP4.addr, FIN | ACK);
    let syn_c = syn.clone();
    cases.push(
        Case::new("client FIN is marked as the client's", &fin)
            .setup(move |fx| {
                send(fx, &syn_c);
            })
            .redirect(&to_target(&fin, &T1), Stat::Forwarded)
            .check(|fx, _| {
                let flow = fx
                    .flow(&flow_key(CLIENT4, V_TCP4.addr, PROTO_TCP))
                    .expect("FLOWS entry kept after FIN");
                assert_eq!(flow.flags & entry_flags::FIN, entry_flags::FIN, "FIN flag");
                assert_eq!(u32::from(flow.target_id), T1.id);
            }),
    );

    let syn_c = syn.clone();
    cases.push(
        Case::new("flow to a target set Unused is re-balanced", &ack)
            .setup(move |fx| {
                send(fx, &syn_c);
                fx.set_target(
                    T1.id,
                    fixture::target(T1.addr, TargetState::Unused, T1.generation),
                );
                switch_ring(fx, &V_TCP4, &[T2.id]);
            })
            .redirect(&to_target(&ack, &T2), Stat::Forwarded)
            .check(|fx, _| {
                expect_flow_target(fx, CLIENT4, &V_TCP4, &T2);
                assert_eq!(fx.target_counters(T2.id).new_flows, 1, "T2 new_flows");
            }),
    );

    let syn_c = syn.clone();
    cases.push(
        Case::new("flow to a target set Down (unhealthy) is re-balanced", &ack)
            .setup(move |fx| {
                send(fx, &syn_c);
                fx.set_target(
                    T1.id,
                    fixture::target(T1.addr, TargetState::Down, T1.generation),
                );
                switch_ring(fx, &V_TCP4, &[T2.id]);
            })
            .redirect(&to_target(&ack, &T2), Stat::Forwarded)
            .check(|fx, _| expect_flow_target(fx, CLIENT4, &V_TCP4, &T2)),
    );

    let syn_c = syn.clone();
    cases.push(
        Case::new(
            "flow to a target id given to a new target (generation bumped) is re-balanced",
            &ack,
        )
        .setup(move |fx| {
            send(fx, &syn_c);
            set_target(fx, &T1_REUSED);
        })
        .redirect(&to_target(&ack, &T1_REUSED), Stat::Forwarded)
        .check(|fx, _| expect_flow_target(fx, CLIENT4, &V_TCP4, &T1_REUSED)),
    );

    cases.push(
        Case::new(
            "flow idle longer than the VIP's timeout is re-balanced",
            &ack,
        )
        .setup(|fx| {
            pin_flow(fx, CLIENT4, &V_TCP4, &T1, u64::from(IDLE_TIMEOUT_S) + 30, 0);
            switch_ring(fx, &V_TCP4, &[T2.id]);
        })
        .redirect(&to_target(&ack, &T2), Stat::Forwarded)
        .check(|fx, _| expect_flow_target(fx, CLIENT4, &V_TCP4, &T2)),
    );
    cases.push(
        Case::new(
            "flow idle less than the VIP's timeout is kept and refreshed",
            &ack,
        )
        .setup(|fx| {
            pin_flow(fx, CLIENT4, &V_TCP4, &T1, u64::from(IDLE_TIMEOUT_S) - 30, 0);
            switch_ring(fx, &V_TCP4, &[T2.id]);
        })
        .redirect(&to_target(&ack, &T1), Stat::Forwarded)
        .check(|fx, _| {
            let flow = fx
                .flow(&flow_key(CLIENT4, V_TCP4.addr, PROTO_TCP))
                .expect("FLOWS entry");
            assert!(
                age_s(&flow) < 5,
                "last_seen not refreshed: {} s old",
                age_s(&flow)
            );
            assert_eq!(
                fx.vip_counters(V_TCP4.id).new_flows,
                0,
                "no new flow counted"
            );
        }),
    );
    cases.push(
        Case::new(
            "half-closed flow (client FIN) idle longer than 10 s is kept",
            &ack,
        )
        .setup(|fx| {
            pin_flow(
                fx,
                CLIENT4,
                &V_TCP4,
                &T1,
                u64::from(TCP_CLOSING_TIMEOUT_S) + 5,
                entry_flags::FIN,
            );
            switch_ring(fx, &V_TCP4, &[T2.id]);
        })
        .redirect(&to_target(&ack, &T1), Stat::Forwarded),
    );
    cases.push(
        Case::new("closing flow idle longer than 10 s is re-balanced", &ack)
            .setup(|fx| {
                pin_flow(
                    fx,
                    CLIENT4,
                    &V_TCP4,
                    &T1,
                    u64::from(TCP_CLOSING_TIMEOUT_S) + 5,
                    entry_flags::FIN | entry_flags::TARGET_FIN,
                );
                switch_ring(fx, &V_TCP4, &[T2.id]);
            })
            .redirect(&to_target(&ack, &T2), Stat::Forwarded),
    );
    cases.push(
        Case::new(
            "entry stamped by another CPU after this packet read its clock is live",
            &ack,
        )
        .setup(|fx| {
            let mut e = established(CLIENT4, &V_TCP4, &T1, 0, 0);
            // About a second ahead: still ahead when the program runs.
            e.last_seen = e.last_seen.wrapping_add(1000);
            fx.insert_flow(e);
            switch_ring(fx, &V_TCP4, &[T2.id]);
        })
        .redirect(&to_target(&ack, &T1), Stat::Forwarded),
    );
    cases.push(
        Case::new("closing flow idle less than 10 s is kept", &ack)
            .setup(|fx| {
                pin_flow(
                    fx,
                    CLIENT4,
                    &V_TCP4,
                    &T1,
                    2,
                    entry_flags::FIN | entry_flags::TARGET_FIN,
                );
                switch_ring(fx, &V_TCP4, &[T2.id]);
            })
            .redirect(&to_target(&ack, &T1), Stat::Forwarded),
    );
    cases.push(
        Case::new(
            "unconfirmed flow with a FIN idle longer than 10 s is re-balanced",
            &ack,
        )
        .setup(|fx| {
            fx.insert_flow(FlowEntry {
                state: FlowState::New as u8,
                ..established(
                    CLIENT4,
                    &V_TCP4,
                    &T1,
                    u64::from(TCP_CLOSING_TIMEOUT_S) + 5,
                    entry_flags::FIN,
                )
            });
            switch_ring(fx, &V_TCP4, &[T2.id]);
        })
        .redirect(&to_target(&ack, &T2), Stat::Forwarded),
    );
    cases.extend(udp_confirmation_cases());
    cases.extend(table_cases());
    cases
}

/// UDP flows confirm only on a client datagram after the target's reply
/// (nat; dsr UDP flows never confirm: datapath/dsr.rs).
fn udp_confirmation_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let c = with_port(CLIENT4, 5001);
    let udp = Packet::udp(c, V_UDP4.addr);
    let key = flow_key(c, V_UDP4.addr, PROTO_UDP);
    let udp_c = udp.clone();
    cases.push(
        Case::new(
            "UDP datagrams repeating one tuple without a reply never confirm it",
            &udp,
        )
        .setup(move |fx| {
            for _ in 0..5 {
                send(fx, &udp_c);
            }
        })
        .redirect(&to_target(&udp, &T4), Stat::Forwarded)
        .check(move |fx, _| {
            assert_eq!(fx.flow(&key).expect("entry").state(), FlowState::New);
            assert_eq!(fx.flow_counters(V_UDP4.id).confirmed, 0, "confirmed");
        }),
    );
    let udp_c = udp.clone();
    cases.push(
        Case::new(
            "UDP datagram after the target's reply confirms the flow",
            &udp,
        )
        .setup(move |fx| {
            send(fx, &udp_c);
            send(fx, &Packet::udp(T4.addr, c).payload(b"answer"));
            assert_eq!(fx.flow(&key).expect("entry").state(), FlowState::Replied);
        })
        .redirect(&to_target(&udp, &T4), Stat::Forwarded)
        .check(move |fx, _| {
            assert_eq!(
                fx.flow(&key).expect("entry").state(),
                FlowState::Established
            );
            assert_eq!(fx.flow_counters(V_UDP4.id).confirmed, 1, "confirmed");
        }),
    );
    cases
}

/// The first slots of `Fixture::candidate_slots`: the flow's own two sets
/// (the rest are their spill sets).
const OWN_SLOTS: usize = 2 * FLOW_WAYS as usize;

/// `V_TCP4`'s new-flow counters: (syns, embryonic, displaced, untracked).
fn assert_flow_stats(fx: &Fixture, expected: (u64, u64, u64, u64)) {
    let f = fx.flow_counters(V_TCP4.id);
    assert_eq!(
        (f.syns, f.embryonic, f.displaced, f.untracked),
        expected,
        "FLOW_STATS (syns, embryonic, displaced, untracked)"
    );
}

/// After a new flow of `key` was refused or displaced a flow: every slot
/// where it may live ([`fill_sets`] filled them) still holds a flow.
fn assert_sets_kept(fx: &Fixture, key: &FlowKey) {
    assert_eq!(
        fx.flow_keys().len(),
        fx.candidate_slots(key).len(),
        "the confirmed flows stay"
    );
}

/// `p` (a TCP segment over IPv4) with sequence number `seq`.
fn with_seq(mut p: Packet, seq: u32) -> Packet {
    if let Net::Ipv4(ip) = &mut p.net
        && let L4::Tcp(tcp) = &mut ip.l4
    {
        tcp.seq = seq;
        return p;
    }
    panic!("not a TCP segment over IPv4");
}

/// Fills every slot where `key`'s flow may live (`Fixture::candidate_slots`:
/// its two sets and their spill sets) with live confirmed flows of other
/// clients to `V_TCP4`, except slot `unconfirmed` (an index into the
/// candidates), which holds a `Syn` entry 5 s old.
fn fill_sets(fx: &mut Fixture, key: &FlowKey, unconfirmed: Option<usize>) {
    let slots = fx.candidate_slots(key);
    fill_slots(fx, &slots, unconfirmed);
}

/// [`fill_sets`] of the given slots only.
fn fill_slots(fx: &mut Fixture, slots: &[u32], unconfirmed: Option<usize>) {
    for (i, &slot) in slots.iter().enumerate() {
        let client = sa4(198, 51, 100, 1 + i as u8, 1000 + i as u16);
        let mut e = established(client, &V_TCP4, &T1, 1, 0);
        if Some(i) == unconfirmed {
            e = FlowEntry {
                state: FlowState::Syn as u8,
                ..established(client, &V_TCP4, &T1, 5, 0)
            };
        }
        fx.put_flow(slot, e);
    }
}

/// Set occupancy, displacement and confirmation.
fn table_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let syn = Packet::tcp(CLIENT4, V_TCP4.addr, SYN);
    let key = flow_key(CLIENT4, V_TCP4.addr, PROTO_TCP);
    cases.push(
        Case::new(
            "new flow whose candidate sets hold only live confirmed flows is dropped",
            &syn,
        )
        .setup(move |fx| fill_sets(fx, &key, None))
        .drop(Stat::DropTableFull)
        .check(move |fx, _| {
            assert_flow_stats(fx, (1, 0, 0, 1));
            assert!(fx.flow(&key).is_none(), "no entry for the dropped flow");
            assert_sets_kept(fx, &key);
        }),
    );
    cases.push(
        Case::new(
            "new flow whose two sets hold only live confirmed flows takes a slot of their spill sets",
            &syn,
        )
        .setup(move |fx| {
            let slots = fx.candidate_slots(&key);
            fill_slots(fx, &slots[..OWN_SLOTS], None);
        })
        .redirect(&to_target(&syn, &T1), Stat::Forwarded)
        .check(move |fx, _| {
            let slots = fx.candidate_slots(&key);
            let (slot, e) = fx.flow_slot(&key).expect("entry of the new flow");
            assert!(
                slots[OWN_SLOTS..].contains(&slot),
                "slot {slot} is not in a spill set"
            );
            assert_eq!(e.state(), FlowState::Syn, "new flow unconfirmed");
            assert_flow_stats(fx, (1, 1, 0, 0));
            // Both directions find the spilled entry: the target's SYN-ACK
            // goes back from the VIP, the client's ACK confirms the flow
            // and goes on to the target.
            let synack = with_seq(Packet::tcp(T1.addr, CLIENT4, SYN | ACK), 0x1fff_ffff);
            let r = fx.run(&synack.build());
            assert_eq!(
                (action_name(r.action), r.output),
                (action_name(XDP_REDIRECT), to_client(&synack, &V_TCP4).build()),
                "SYN-ACK"
            );
            let ack = Packet::tcp(CLIENT4, V_TCP4.addr, ACK);
            let r = fx.run(&ack.build());
            assert_eq!(
                (action_name(r.action), r.output),
                (action_name(XDP_REDIRECT), to_target(&ack, &T1).build()),
                "ACK"
            );
            let (again, e) = fx.flow_slot(&key).expect("entry");
            assert_eq!((again, e.state()), (slot, FlowState::Established));
            assert_eq!(fx.flow_keys().len(), OWN_SLOTS + 1, "one new entry");
        }),
    );
    // Slot 5 (of its second set) holds an unconfirmed flow; the spill sets
    // are empty.
    cases.push(
        Case::new(
            "new flow takes a free slot of a spill set before it displaces an unconfirmed flow of its sets",
            &syn,
        )
        .setup(move |fx| {
            let slots = fx.candidate_slots(&key);
            fill_slots(fx, &slots[..OWN_SLOTS], Some(5));
        })
        .redirect(&to_target(&syn, &T1), Stat::Forwarded)
        .check(move |fx, _| {
            let slots = fx.candidate_slots(&key);
            let (slot, _) = fx.flow_slot(&key).expect("entry of the new flow");
            assert!(
                slots[OWN_SLOTS..].contains(&slot),
                "slot {slot} is not in a spill set"
            );
            assert_eq!(fx.flow_at(slots[5]).state(), FlowState::Syn, "the unconfirmed flow stays");
            assert_flow_stats(fx, (1, 1, 0, 0));
        }),
    );
    // All full, the one unconfirmed flow in a spill set (its second slot): a spill
    // set's flows are displaced only by flows whose own set it is.
    cases.push(
        Case::new(
            "an unconfirmed flow in a spill set is not displaced by a new flow spilling there",
            &syn,
        )
        .setup(move |fx| fill_sets(fx, &key, Some(OWN_SLOTS + 1)))
        .drop(Stat::DropTableFull)
        .check(move |fx, _| {
            let slots = fx.candidate_slots(&key);
            assert!(fx.flow(&key).is_none(), "no entry for the dropped flow");
            assert_eq!(
                fx.flow_at(slots[OWN_SLOTS + 1]).state(),
                FlowState::Syn,
                "the unconfirmed flow stays"
            );
            assert_flow_stats(fx, (1, 0, 0, 1));
            assert_sets_kept(fx, &key);
        }),
    );
    cases.push(
        Case::new(
            "new flow over full sets takes the slot of the oldest unconfirmed flow",
            &syn,
        )
        .setup(move |fx| fill_sets(fx, &key, Some(5)))
        .redirect(&to_target(&syn, &T1), Stat::Forwarded)
        .check(move |fx, _| {
            let (slot, e) = fx.flow_slot(&key).expect("entry of the new flow");
            assert_eq!(
                slot,
                fx.candidate_slots(&key)[5],
                "the displaced flow's slot"
            );
            assert_eq!(e.state(), FlowState::Syn, "new flow unconfirmed");
            assert_flow_stats(fx, (1, 1, 1, 0));
            assert_sets_kept(fx, &key);
        }),
    );

    cases.push(
        Case::new(
            "new flow over full sets takes a slot whose check does not match (torn)",
            &syn,
        )
        .setup(move |fx| {
            fill_sets(fx, &key, None);
            // Slot 6 holds a live established entry whose check is not its
            // own: two CPUs wrote it at once.
            let slot = fx.candidate_slots(&key)[6];
            let mut torn = fx.flow_at(slot);
            torn.check ^= 0x10;
            fx.put_flow_raw(slot, torn);
        })
        .redirect(&to_target(&syn, &T1), Stat::Forwarded)
        .check(move |fx, _| {
            let (slot, e) = fx.flow_slot(&key).expect("entry of the new flow");
            assert_eq!(slot, fx.candidate_slots(&key)[6], "the torn slot");
            assert_eq!(e.state(), FlowState::Syn, "new flow unconfirmed");
            assert_flow_stats(fx, (1, 1, 0, 0));
        }),
    );

    let synack = Packet::tcp(T1.addr, CLIENT4, SYN | ACK);
    cases.push(
        Case::new(
            "target's SYN-ACK moves a Syn entry to SynAck, expecting its ACK number",
            &synack,
        )
        .setup(move |fx| {
            fx.insert_flow(FlowEntry {
                state: FlowState::Syn as u8,
                ..established(CLIENT4, &V_TCP4, &T1, 0, 0)
            })
        })
        .redirect(&to_client(&synack, &V_TCP4), Stat::Returned)
        .check(move |fx, _| {
            let e = fx.flow(&key).expect("entry");
            assert_eq!((e.state(), e.aux), (FlowState::SynAck, 0x1000_0001));
            assert_eq!(
                fx.flow_counters(V_TCP4.id).confirmed,
                0,
                "not confirmed yet"
            );
        }),
    );
    // A dsr flow of before its group switched to nat: its target now has a
    // `REPLIES` entry, so its SYN-ACK finds the flow. The entry keeps its
    // outer-header hash in `aux`, and its dsr state: the client's next
    // packet confirms it.
    let held = 0x0123_4567;
    cases.push(
        Case::new(
            "target's SYN-ACK leaves a dsr Syn entry (of before a switch to nat) and its hash alone",
            &synack,
        )
        .setup(move |fx| {
            fx.insert_flow(FlowEntry {
                state: FlowState::Syn as u8,
                aux: held,
                ..established(CLIENT4, &V_TCP4, &T1, 0, entry_flags::DSR)
            })
        })
        .redirect(&to_client(&synack, &V_TCP4), Stat::Returned)
        .check(move |fx, _| {
            let e = fx.flow(&key).expect("entry");
            assert_eq!((e.state(), e.aux), (FlowState::Syn, held), "(state, aux)");
        }),
    );
    let ack = Packet::tcp(CLIENT4, V_TCP4.addr, ACK);
    for (what, seq, state, confirmed) in [
        (
            "acknowledging the SYN-ACK confirms the flow",
            0x2000_0000,
            FlowState::Established,
            1,
        ),
        (
            "acknowledging the SYN-ACK and 1000 bytes of data confirms the flow",
            0x2000_0000 - 1000,
            FlowState::Established,
            1,
        ),
        (
            "acknowledging 65535 bytes past the SYN-ACK (the window's end) confirms the flow",
            0x2000_0000 - 0xffff,
            FlowState::Established,
            1,
        ),
        (
            "acknowledging 65536 bytes past the SYN-ACK leaves it unconfirmed",
            0x2000_0000 - 0x1_0000,
            FlowState::SynAck,
            0,
        ),
        (
            "acknowledging less than the SYN-ACK leaves it unconfirmed",
            0x2000_0001,
            FlowState::SynAck,
            0,
        ),
    ] {
        cases.push(
            Case::new(format!("client ACK {what}"), &ack)
                .setup(move |fx| {
                    fx.insert_flow(FlowEntry {
                        state: FlowState::SynAck as u8,
                        aux: seq,
                        ..established(CLIENT4, &V_TCP4, &T1, 0, 0)
                    })
                })
                .redirect(&to_target(&ack, &T1), Stat::Forwarded)
                .check(move |fx, _| {
                    assert_eq!(fx.flow(&key).expect("entry").state(), state);
                    assert_eq!(
                        fx.flow_counters(V_TCP4.id).confirmed,
                        confirmed,
                        "confirmed"
                    );
                }),
        );
    }
    cases
}

/// [`return_cases`] that hold for both families.
fn return_cases_for(fam: Family) -> Vec<Case> {
    let (client, v, t) = (fam.client(), fam.tcp_vip(), fam.tcp_target());
    let syn = Packet::tcp(client, v.addr, SYN);
    let synack = Packet::tcp(t.addr, client, SYN | ACK);
    let len = synack.build().len();
    let first = syn.clone();
    vec![
        Case::new(
            format!("{fam} reply target -> client translated back to VIP:port"),
            &synack,
        )
        .setup(move |fx| {
            send(fx, &first);
        })
        .redirect(&to_client(&synack, &v), Stat::Returned)
        .check(move |fx, _| {
            let l = u64::try_from(len).expect("len");
            for (c, what) in [
                (fx.vip_counters(v.id), "VIP_STATS"),
                (fx.target_counters(t.id), "TARGET_STATS"),
            ] {
                assert_eq!(
                    (c.packets_out, c.bytes_out, c.new_flows),
                    (1, l, 1),
                    "{what} out counters"
                );
            }
        }),
        // The reply-interface check, on as `lb run` has it by default (off
        // in the fixture, whose runs come in by `lo`): the route to the
        // targets leaves by fx0.
        Case::new(
            format!("{fam} checked: a reply in by the route to its target (fx0) is translated and moves the handshake on"),
            &synack,
        )
        .ingress(topo::FX0)
        .setup(checked_flow(syn.clone(), None))
        .redirect(&to_client(&synack, &v), Stat::Returned)
        .check(move |fx, _| {
            let e = fx.flow(&flow_key(client, v.addr, PROTO_TCP)).expect("entry");
            assert_eq!(e.state(), FlowState::SynAck);
        }),
        Case::new(
            format!("{fam} checked: a reply from a target's address in by another interface (fx1) is passed, the handshake not moved"),
            &synack,
        )
        .ingress(topo::FX1)
        .setup(checked_flow(syn.clone(), None))
        .pass_unchanged(Stat::PassReplyInterface)
        .check(move |fx, _| {
            let e = fx.flow(&flow_key(client, v.addr, PROTO_TCP)).expect("entry");
            assert_eq!(e.state(), FlowState::Syn);
            assert_eq!(fx.vip_counters(v.id).packets_out, 0, "nothing counted out");
        }),
        Case::new(
            format!("{fam} checked: after a forged reply on fx1, the target's own on fx0 is translated"),
            &synack,
        )
        .ingress(topo::FX0)
        .setup(checked_flow(syn.clone(), Some(synack.clone())))
        .redirect(&to_client(&synack, &v), Stat::Returned),
    ]
}

/// `setup` with the reply-interface check on, as `lb run` has it by
/// default (the fixture turns it off: its runs come in by `lo`).
fn check_on(setup: impl Fn(&mut Fixture) + 'static) -> impl Fn(&mut Fixture) + 'static {
    move |fx| {
        fx.set_config_flags(0);
        setup(fx);
    }
}

/// Setup of the reply-interface check's cases: the check on, `syn`'s flow
/// begun, and, if given, a reply forged on the clients' side (fx1) passed.
fn checked_flow(syn: Packet, forged: Option<Packet>) -> impl Fn(&mut Fixture) + 'static {
    check_on(move |fx| {
        send(fx, &syn);
        if let Some(f) = &forged {
            let r = fx.run_on(&f.build(), topo::FX1);
            assert_eq!(r.action, XDP_PASS, "the forged reply is passed");
        }
    })
}

fn return_cases() -> Vec<Case> {
    let mut cases = Family::each(return_cases_for);
    let synack = Packet::tcp(T1.addr, CLIENT4, SYN | ACK);

    let c = with_port(CLIENT4, 5000);
    let udp_reply = Packet::udp(T4.addr, c).payload(b"answer");
    cases.push(
        Case::new("UDP reply translated back to VIP:port", &udp_reply)
            .setup(move |fx| {
                send(fx, &Packet::udp(c, V_UDP4.addr));
            })
            .redirect(&to_client(&udp_reply, &V_UDP4), Stat::Returned),
    );
    let udp_reply0 = udp_reply.clone().udp_zero_checksum();
    cases.push(
        Case::new("UDP reply without checksum stays 0", &udp_reply0)
            .setup(move |fx| pin_flow(fx, c, &V_UDP4, &T4, 1, 0))
            .redirect(&to_client(&udp_reply0, &V_UDP4), Stat::Returned),
    );
    let c6 = with_port(CLIENT6, 5000);
    let udp6_reply = Packet::udp(T7.addr, c6);
    cases.push(
        Case::new("IPv6 UDP reply translated back to VIP:port", &udp6_reply)
            .setup(move |fx| pin_flow(fx, c6, &V_UDP6, &T7, 1, 0))
            .redirect(&to_client(&udp6_reply, &V_UDP6), Stat::Returned),
    );

    cases.push(
        Case::new(
            "VLAN-tagged reply translated back, tag kept",
            &synack.clone().vlan(300),
        )
        .setup(|fx| pin_flow(fx, CLIENT4, &V_TCP4, &T1, 1, 0))
        .redirect(
            &to_client(&synack.clone().vlan(300), &V_TCP4),
            Stat::Returned,
        ),
    );
    cases.push(
        Case::new(
            "reply received on the targets' interface (fx0) is redirected",
            &synack,
        )
        .ingress(topo::FX0)
        .setup(|fx| pin_flow(fx, CLIENT4, &V_TCP4, &T1, 1, 0))
        .redirect(&to_client(&synack, &V_TCP4), Stat::Returned),
    );
    cases.push(
        Case::new(
            "unchecked (one-armed): reply received on the uplink (fx1) is redirected back out of it",
            &synack,
        )
        .ingress(topo::FX1)
        .setup(|fx| pin_flow(fx, CLIENT4, &V_TCP4, &T1, 1, 0))
        .redirect(&to_client(&synack, &V_TCP4), Stat::Returned),
    );
    cases.push(
        Case::new("packet from a nat target that belongs to no flow", &synack)
            .pass_unchanged(Stat::PassReplyUntracked),
    );
    let stranger = Packet::tcp(with_port(T1.addr, 9999), CLIENT4, SYN | ACK);
    cases.push(
        Case::new(
            "packet from a target's address on a port it does not serve",
            &stranger,
        )
        .pass_unchanged(Stat::PassNotVip),
    );
    let lookalike = Packet::tcp(sa4(198, 18, 7, 7, 8080), CLIENT4, SYN | ACK);
    cases.push(
        Case::new(
            "packet from a target port of an address that is no target",
            &lookalike,
        )
        .pass_unchanged(Stat::PassNotVip),
    );
    cases.push(
        Case::new("reply with TTL 1", &synack.clone().ttl(1))
            .setup(|fx| pin_flow(fx, CLIENT4, &V_TCP4, &T1, 1, 0))
            .pass_unchanged(Stat::PassTtlExceeded),
    );

    let rst = Packet::tcp(T1.addr, CLIENT4, RST | ACK);
    cases.push(
        Case::new(
            "reply RST on an established flow marks it closing, not freed",
            &rst,
        )
        .setup(|fx| pin_flow(fx, CLIENT4, &V_TCP4, &T1, 1, 0))
        .redirect(&to_client(&rst, &V_TCP4), Stat::Returned)
        .check(|fx, _| {
            let flow = fx
                .flow(&flow_key(CLIENT4, V_TCP4.addr, PROTO_TCP))
                .expect("FLOWS entry");
            assert_eq!(flow.flags, entry_flags::RST, "RST flag");
            assert_eq!(flow.state(), FlowState::Established);
        }),
    );
    cases.push(
        Case::new("reply RST on an unconfirmed flow frees its entry", &rst)
            .setup(|fx| {
                fx.insert_flow(FlowEntry {
                    state: FlowState::Syn as u8,
                    ..established(CLIENT4, &V_TCP4, &T1, 1, 0)
                })
            })
            .redirect(&to_client(&rst, &V_TCP4), Stat::Returned)
            .check(|fx, _| expect_no_flows(fx)),
    );
    let fin = Packet::tcp(T1.addr, CLIENT4, FIN | ACK);
    cases.push(
        Case::new(
            "reply FIN is marked as the target's, flow not closing",
            &fin,
        )
        .setup(|fx| pin_flow(fx, CLIENT4, &V_TCP4, &T1, 1, 0))
        .redirect(&to_client(&fin, &V_TCP4), Stat::Returned)
        .check(|fx, _| {
            let flow = fx
                .flow(&flow_key(CLIENT4, V_TCP4.addr, PROTO_TCP))
                .expect("FLOWS entry");
            assert_eq!(flow.flags, entry_flags::TARGET_FIN, "flags");
            assert!(!flow.closing(), "half-closed, not closing");
        }),
    );
    cases.push(
        Case::new("reply FIN after the client's makes the flow closing", &fin)
            .setup(|fx| pin_flow(fx, CLIENT4, &V_TCP4, &T1, 1, entry_flags::FIN))
            .redirect(&to_client(&fin, &V_TCP4), Stat::Returned)
            .check(|fx, _| {
                let flow = fx
                    .flow(&flow_key(CLIENT4, V_TCP4.addr, PROTO_TCP))
                    .expect("FLOWS entry");
                assert_eq!(flow.flags, entry_flags::FIN | entry_flags::TARGET_FIN);
                assert!(flow.closing(), "closing");
            }),
    );

    let ack = Packet::tcp(T1.addr, CLIENT4, ACK).payload(b"HTTP/1.0 200 OK\r\n\r\n");
    cases.push(
        Case::new("reply refreshes the flow's last_seen", &ack)
            .setup(|fx| pin_flow(fx, CLIENT4, &V_TCP4, &T1, 30, 0))
            .redirect(&to_client(&ack, &V_TCP4), Stat::Returned)
            .check(|fx, _| {
                let flow = fx
                    .flow(&flow_key(CLIENT4, V_TCP4.addr, PROTO_TCP))
                    .expect("FLOWS entry");
                assert!(
                    age_s(&flow) < 5,
                    "last_seen not refreshed: {} s old",
                    age_s(&flow)
                );
            }),
    );
    cases
}

/// An ICMP error `r` carries every checksum of an error about a flow of
/// `fam`'s ([`Family::icmp_error_checksums`]).
fn icmp_checksums(fam: Family) -> impl Fn(&mut Fixture, &RunResult) {
    move |_, r| {
        let v = verify_frame(&r.output).expect("verified");
        for want in fam.icmp_error_checksums() {
            assert!(v.contains(want), "{want:?} not verified in {v:?}");
        }
    }
}

/// A router on the client side tells `v` that a reply `v` -> client (the
/// packet returned first) was too big ([`Family::too_big_report`]).
fn router_too_big(fam: Family, v: &VipDef) -> (Packet, Packet) {
    let (payload, mtu) = fam.too_big_report();
    let reply =
        fam.dont_fragment(Packet::tcp(v.addr, fam.client(), ACK).payload(&vec![0; payload]));
    let (ty, code, rest) = fam.too_big(mtu);
    let icmp = Packet::icmp_error(
        fam.router(),
        v.addr.ip(),
        ty,
        code,
        rest,
        &reply,
        fam.icmp_quote(),
    );
    (reply, icmp)
}

/// [`icmp_cases`] that hold for both families.
fn icmp_cases_for(fam: Family) -> Vec<Case> {
    let (client, v, t) = (fam.client(), fam.tcp_vip(), fam.tcp_target());
    let mut cases = Vec::new();

    let (reply, icmp) = router_too_big(fam, &v);
    let (ty, code, rest) = fam.too_big(fam.too_big_report().1);
    let expected = Packet::icmp_error(
        fam.router(),
        t.addr.ip(),
        ty,
        code,
        rest,
        &reply.clone().src(t.addr),
        fam.icmp_quote(),
    )
    .ttl(63)
    .macs(topo::FX0_MAC, t.mac);
    cases.push(
        Case::new(
            format!(
                "{} to the VIP about a flow goes to its target",
                fam.too_big_name()
            ),
            &icmp,
        )
        .setup(move |fx| pin_flow(fx, client, &v, &t, 1, 0))
        .redirect(&expected, Stat::IcmpTranslated)
        .check(icmp_checksums(fam)),
    );

    // The target reports a problem with a packet we translated client ->
    // target.
    let to_t = Packet::tcp(client, t.addr, ACK).ttl(63);
    let (ty, code) = fam.admin_prohibited();
    let from_target = Packet::icmp_error(
        t.addr.ip(),
        client.ip(),
        ty,
        code,
        [0; 4],
        &to_t,
        fam.icmp_quote(),
    );
    let expected = Packet::icmp_error(
        v.addr.ip(),
        client.ip(),
        ty,
        code,
        [0; 4],
        &to_t.clone().dst(v.addr),
        fam.icmp_quote(),
    )
    .ttl(63)
    .macs(topo::FX1_MAC, topo::GATEWAY_MAC);
    cases.push(
        Case::new(
            format!(
                "{} error from the target about client -> target goes out as the VIP's",
                fam.icmp_name()
            ),
            &from_target,
        )
        .setup(move |fx| pin_flow(fx, client, &v, &t, 1, 0))
        .redirect(&expected, Stat::IcmpTranslated)
        .check(icmp_checksums(fam)),
    );
    // The same with the reply-interface check on (the route to the target
    // leaves by fx0): by that interface it is translated; by the clients'
    // side (fx1) it is a forgery, passed untouched.
    cases.push(
        Case::new(
            format!(
                "{} checked: the error from the target in by its route (fx0) is translated",
                fam.icmp_name()
            ),
            &from_target,
        )
        .ingress(topo::FX0)
        .setup(check_on(move |fx| pin_flow(fx, client, &v, &t, 1, 0)))
        .redirect(&expected, Stat::IcmpTranslated),
    );
    cases.push(
        Case::new(
            format!(
                "{} checked: an error from the target's address in by another interface (fx1) is passed",
                fam.icmp_name()
            ),
            &from_target,
        )
        .ingress(topo::FX1)
        .setup(check_on(move |fx| pin_flow(fx, client, &v, &t, 1, 0)))
        .pass_unchanged(Stat::PassReplyInterface),
    );

    cases.push(
        Case::new(
            format!("{} echo to a VIP", fam.icmp_name()),
            &Packet::icmp_echo(client.ip(), v.addr.ip()),
        )
        .pass_unchanged(Stat::PassIcmp),
    );
    cases
}

fn icmp_cases() -> Vec<Case> {
    let mut cases = Family::each(icmp_cases_for);

    // A router tells the VIP that our reply VIP -> client was too big.
    let (reply, icmp) = router_too_big(Family::V4, &V_TCP4);
    let icmp_te = Packet::icmp_error(ROUTER4, V_TCP4.addr.ip(), 11, 0, [0; 4], &reply, 28);
    let expected_te = Packet::icmp_error(
        ROUTER4,
        T1.addr.ip(),
        11,
        0,
        [0; 4],
        &reply.clone().src(T1.addr),
        28,
    )
    .ttl(63)
    .macs(topo::FX0_MAC, T1.mac);
    cases.push(
        Case::new(
            "ICMP time exceeded to the VIP about a flow goes to its target",
            &icmp_te,
        )
        .setup(|fx| pin_flow(fx, CLIENT4, &V_TCP4, &T1, 1, 0))
        .redirect(&expected_te, Stat::IcmpTranslated)
        .check(icmp_checksums(Family::V4)),
    );
    cases.push(
        Case::new("ICMP frag-needed to the VIP about an unknown flow", &icmp)
            .pass_unchanged(Stat::PassIcmp),
    );
    cases.push(
        Case::new(
            "ICMP frag-needed with TTL 1 about an unknown flow",
            &icmp.clone().ttl(1),
        )
        .pass_unchanged(Stat::PassIcmp),
    );
    cases.push(
        Case::new(
            "ICMP frag-needed with TTL 1 about a flow",
            &icmp.clone().ttl(1),
        )
        .setup(|fx| pin_flow(fx, CLIENT4, &V_TCP4, &T1, 1, 0))
        .pass_unchanged(Stat::PassTtlExceeded),
    );
    cases.push(
        Case::new(
            "ICMP frag-needed about a flow whose target id was reused",
            &icmp,
        )
        .setup(|fx| {
            pin_flow(fx, CLIENT4, &V_TCP4, &T1, 1, 0);
            set_target(fx, &T1_REUSED);
        })
        .pass_unchanged(Stat::PassIcmp),
    );
    for (quote, what) in [(22, "2"), (24, "4")] {
        let short = Packet::icmp_error(
            ROUTER4,
            V_TCP4.addr.ip(),
            3,
            4,
            icmp_frag_needed_rest(1400),
            &reply,
            quote,
        );
        cases.push(
            Case::new(
                format!("ICMP error quoting only {what} bytes of TCP (< 8) about a flow"),
                &short,
            )
            .setup(|fx| pin_flow(fx, CLIENT4, &V_TCP4, &T1, 1, 0))
            .pass_unchanged(Stat::PassIcmp),
        );
    }

    // UDP port unreachable from a target: the quoted UDP checksum (inside the
    // 8 quoted bytes) is not part of the contract; the program documents that
    // it leaves it alone, so the expected quote keeps the input's value.
    let c = with_port(CLIENT4, 5000);
    let to_t4 = Packet::udp(c, T4.addr).ttl(63);
    let unreach = Packet::icmp_error(T4.addr.ip(), c.ip(), 3, 3, [0; 4], &to_t4, 28);
    let mut quote = to_t4.clone().dst(V_UDP4.addr).net.bytes();
    quote.truncate(28);
    quote[26..28].copy_from_slice(&to_t4.net.bytes()[26..28]);
    let expected = Packet::icmp(V_UDP4.addr.ip(), c.ip(), 3, 3, [0; 4], quote)
        .ttl(63)
        .macs(topo::FX1_MAC, topo::GATEWAY_MAC);
    cases.push(
        Case::new(
            "ICMP port unreachable from a UDP target goes out as the VIP's",
            &unreach,
        )
        .setup(move |fx| pin_flow(fx, c, &V_UDP4, &T4, 1, 0))
        .redirect(&expected, Stat::IcmpTranslated)
        .check(icmp_checksums(Family::V4)),
    );

    // A router behind the target reports a problem with a packet we
    // translated client -> target.
    let to_t1 = Packet::tcp(CLIENT4, T1.addr, ACK).ttl(63);
    let from_router = Packet::icmp_error(INNER_ROUTER4, CLIENT4.ip(), 11, 0, [0; 4], &to_t1, 28);
    let expected = Packet::icmp_error(
        INNER_ROUTER4,
        CLIENT4.ip(),
        11,
        0,
        [0; 4],
        &to_t1.clone().dst(V_TCP4.addr),
        28,
    )
    .ttl(63)
    .macs(topo::FX1_MAC, topo::GATEWAY_MAC);
    cases.push(
        Case::new(
            "ICMP error from a router behind the target: quoted packet translated, source kept",
            &from_router,
        )
        .setup(|fx| pin_flow(fx, CLIENT4, &V_TCP4, &T1, 1, 0))
        .redirect(&expected, Stat::IcmpTranslated)
        .check(icmp_checksums(Family::V4)),
    );
    let IpAddr::V6(solicited) = V_TCP6.addr.ip() else {
        unreachable!()
    };
    let mut ns_body = solicited.octets().to_vec();
    ns_body.extend_from_slice(&[1, 1, 2, 0, 0, 0, 0xaa, 1]);
    cases.push(
        Case::new(
            "ICMPv6 neighbour solicitation",
            &Packet::icmp(CLIENT6.ip(), V_TCP6.addr.ip(), 135, 0, [0; 4], ns_body).ttl(255),
        )
        .pass_unchanged(Stat::PassIcmp),
    );
    cases
}

/// Targets for the next-hop cache cases, one host each: the cases change
/// their neighbours and routes in the shared namespace.
const T_NH_MAC: TargetDef = tdef(13, on4(14, 8080), 14, TargetState::Active, 1);
const T_NH_GONE: TargetDef = tdef(14, on4(15, 8080), 15, TargetState::Active, 1);
const T_NH_CACHED: TargetDef = tdef(15, on4(16, 8080), 16, TargetState::Active, 1);
/// Behind the 10.3.0.0/24 route (gateway 10.1.0.20).
const T_NH_ROUTED: TargetDef = tdef(16, sa4(10, 3, 0, 1, 8080), 20, TargetState::Active, 1);
const T_NH_MTU: TargetDef = tdef(17, on4(17, 8080), 17, TargetState::Active, 1);

/// Long enough for a cached next hop (`NEXTHOP_TTL_NS`) to expire, with
/// margin for the coarse clock.
const NEXTHOP_EXPIRY: std::time::Duration = std::time::Duration::from_millis(1300);

/// Points V_TCP4 at `t` (only) and sends the SYN that caches its next hop.
fn nexthop_setup(fx: &mut Fixture, t: &TargetDef) -> Packet {
    set_target(fx, t);
    switch_ring(fx, &V_TCP4, &[t.id]);
    let syn = Packet::tcp(CLIENT4, V_TCP4.addr, SYN);
    let r = send(fx, &syn);
    assert_eq!(r.output, to_target(&syn, t).build(), "first packet");
    syn
}

fn nexthop_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let ack = Packet::tcp(CLIENT4, V_TCP4.addr, ACK);
    let new_mac: Mac = [0x02, 0, 0, 0, 0x0f, 14];

    let moved = TargetDef {
        mac: new_mac,
        ..T_NH_MAC
    };
    cases.push(
        Case::new(
            "neighbour MAC change reaches the data path within a second",
            &ack,
        )
        .setup(|fx| {
            nexthop_setup(fx, &T_NH_MAC);
            topo::ip("neigh replace 10.1.0.14 lladdr 02:00:00:00:0f:0e dev fx0 nud permanent");
            std::thread::sleep(NEXTHOP_EXPIRY);
        })
        .redirect(&to_target(&ack, &moved), Stat::Forwarded),
    );
    cases.push(
        Case::new("next hop cached less than a second ago is used", &ack)
            .setup(|fx| {
                nexthop_setup(fx, &T_NH_CACHED);
                topo::ip("neigh replace 10.1.0.16 lladdr 02:00:00:00:0f:10 dev fx0 nud permanent");
            })
            .redirect(&to_target(&ack, &T_NH_CACHED), Stat::Forwarded),
    );
    cases.push(
        Case::new("deleted neighbour: pass_no_neighbour after a second", &ack)
            .setup(|fx| {
                nexthop_setup(fx, &T_NH_GONE);
                topo::ip("neigh del 10.1.0.15 dev fx0");
                std::thread::sleep(NEXTHOP_EXPIRY);
            })
            .pass_as(
                &ack.clone().dst(T_NH_GONE.addr).ttl(63),
                Stat::PassNoNeighbour,
            ),
    );
    cases.push(
        Case::new("deleted route: drop_no_route after a second", &ack)
            .setup(|fx| {
                nexthop_setup(fx, &T_NH_ROUTED);
                topo::ip("route del 10.3.0.0/24");
                std::thread::sleep(NEXTHOP_EXPIRY);
            })
            .drop(Stat::DropNoRoute),
    );
    let big = ack.clone().payload(&[0x42; 1600]).dont_fragment();
    cases.push(
        Case::new(
            "packet larger than the cached one takes the full lookup (MTU)",
            &big,
        )
        .setup(|fx| {
            nexthop_setup(fx, &T_NH_MTU);
        })
        .redirect(&too_big_reply(&big, 1500), Stat::TooBigSent),
    );
    cases
}

// ---------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------

#[test]
fn dsr() {
    run_table(dsr::cases);
}

#[test]
fn second_chance() {
    run_table(second_chance::cases);
}

#[test]
fn nexthop_cache() {
    run_table(nexthop_cases);
}

#[test]
fn parsing() {
    run_table(parsing_cases);
}

#[test]
fn forward() {
    run_table(forward_cases);
}

#[test]
fn conntrack() {
    run_table(conntrack_cases);
}

#[test]
fn return_path() {
    run_table(return_cases);
}

#[test]
fn icmp() {
    run_table(icmp_cases);
}

/// `BPF_PROG_TEST_RUN` refuses frames shorter than `ETH_HLEN` before the
/// program runs, so the contract's "shorter than 14 bytes" row cannot be a
/// table case. Should a kernel accept them, the row is checked here.
#[test]
fn frames_shorter_than_ethernet() {
    fixture::with_netns(|| {
        let fx = world();
        let before = fx.stats();
        match fx.try_run(&[0x02, 0, 0, 0, 0xaa, 0x02, 0x02, 0, 0, 0]) {
            Err(e) => eprintln!("test_run rejects a 10-byte frame, as expected: {e}"),
            Ok(r) => {
                assert_eq!(action_name(r.action), action_name(XDP_PASS));
                let after = fx.stats();
                let i = Stat::PassMalformed as usize;
                assert_eq!(after[i] - before[i], 1, "pass_malformed");
            }
        }
    });
}
