//! Data-path fixture harness: loads the XDP object, fills its maps directly
//! with aya's typed maps, and runs packets through `BPF_PROG_TEST_RUN` inside a
//! private network namespace whose routes and neighbours make
//! `bpf_fib_lookup` deterministic.
//!
//! # Which namespace `bpf_fib_lookup` sees in a test run
//!
//! `bpf_prog_test_run_xdp` (net/bpf/test_run.c) builds the `xdp_buff` with
//! `rxq = __netif_get_rx_queue(current->nsproxy->net_ns->loopback_dev, 0)`,
//! or, when `ctx_in` carries an `xdp_md` with `ingress_ifindex`, the rx queue
//! of that device looked up in `current->nsproxy->net_ns`. `bpf_xdp_fib_lookup`
//! then uses `dev_net(ctx->rxq->dev)`. So the lookup runs in the network
//! namespace *of the thread calling `bpf(BPF_PROG_TEST_RUN)`*, and
//! `ctx->ingress_ifindex` (which the program passes as `params.ifindex`) is
//! that namespace's `lo` unless `ctx_in` names another device. Every device's
//! rx queues get a registered `xdp_rxq_info` when the device is created, so
//! any interface works as `ingress_ifindex` (checked with the veths here):
//! [`Fixture::run`] uses `lo`, [`Fixture::run_on`] a named interface. When the
//! egress device differs from the ingress one the program returns
//! `XDP_REDIRECT`, otherwise `XDP_TX`; a test run never performs the redirect,
//! it hands back the return value and the rewritten frame.
//!
//! What the lookup needs besides routes and neighbours (checked by turning
//! the sysctls off): IPv4 forwarding enabled *on the ingress device*
//! (`net.ipv4.conf.<ingress>.forwarding`; with it off the helper returns
//! `BPF_FIB_LKUP_RET_FWD_DISABLED`, which the program counts as
//! `drop_no_route`), and IPv6 forwarding. A new namespace starts with both
//! off, so [`NetNsGuard`] sets `all` (which propagates to every device) after
//! creating the devices. The kernel here has no `dummy` driver, so the devices
//! are veth pairs with both ends up. `ip` commands spawned from the namespace
//! thread inherit its namespace (a child copies the calling thread's
//! `nsproxy`), and `/proc/sys/net` resolves against the calling thread's
//! namespace too.
//!
//! Test runs reject frames shorter than `ETH_HLEN` (14 bytes) with `EINVAL`
//! before the program runs, so the "frame shorter than 14 bytes" row of the
//! contract cannot be exercised through `BPF_PROG_TEST_RUN`.

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader};
use lb_common::limits::RING_EMPTY;
use lb_common::maps::{self, port_flags};
use lb_common::{
    Addr, Counters, DataPathConfig, FlowCounters, FlowEntry, FlowKey, FlowState, ReplyKey,
    ReplyTargets, Stat, Target, VipAddrKey, VipKey, VipMeta,
    flow::{FLOW_WAYS, SetMeta, spill, ticks},
    hash::{entry_check, entry_tag, table_hash},
};

use crate::packet::Mac;

/// Environment variable naming the eBPF object (set by `cargo xtask test`).
pub const OBJECT_ENV: &str = "LB_EBPF_OBJECT";

/// Maglev ring slots the fixture's `MAGLEV` map holds (`slots * ring_size`).
pub const RING_SLOTS: u32 = 16;
/// Capacity the fixture gives `FLOWS` and `NAT` (the default is large and
/// preallocated; a small one keeps a load per case cheap).
pub const FLOW_CAPACITY: u32 = 1024;

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// tc actions (`lb_tc`'s return values).
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

/// Name of an XDP action for messages.
pub fn action_name(action: u32) -> String {
    match action {
        XDP_ABORTED => "XDP_ABORTED".into(),
        XDP_DROP => "XDP_DROP".into(),
        XDP_PASS => "XDP_PASS".into(),
        XDP_TX => "XDP_TX".into(),
        XDP_REDIRECT => "XDP_REDIRECT".into(),
        other => format!("action {other}"),
    }
}

/// The network the fixture namespace contains.
///
/// ```text
///   lo (ingress of every test run)
///   fx0 02:00:00:00:00:f0  10.1.0.254/24 fd00:1::fe/64    targets: host N has
///        neighbour 10.1.0.N / fd00:1::N -> 02:00:00:00:01:N (N in 1..=8, 10..=20);
///        N = 9 has no neighbour entry
///   fx1 02:00:00:00:00:f1  10.2.0.254/24 fd00:2::fe/64    uplink: gateway
///        10.2.0.1 / fd00:2::1 -> 02:00:00:00:02:01; routes to clients
///        203.0.113.0/24, 198.51.100.0/24, 2001:db8:c::/48 via the gateway
///   10.3.0.0/24 via 10.1.0.20 on fx0 (a route cases may delete)
///   no route: 198.18.0.0/15, 2001:db8:ffff::/48 (and everything else)
/// ```
pub mod topo {
    use super::*;

    pub const FX0: &str = "fx0";
    pub const FX1: &str = "fx1";
    pub const FX0_MAC: Mac = [0x02, 0, 0, 0, 0, 0xf0];
    pub const FX1_MAC: Mac = [0x02, 0, 0, 0, 0, 0xf1];
    pub const GATEWAY_MAC: Mac = [0x02, 0, 0, 0, 0x02, 0x01];
    pub const GATEWAY4: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
    pub const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 1);
    /// The target-side host without a neighbour entry.
    pub const NO_NEIGHBOUR_HOST: u8 = 9;
    /// Hosts on fx0 with a permanent neighbour entry.
    pub const HOSTS: [u8; 19] = [
        1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
    ];

    /// IPv4 address of target-side host `n` (10.1.0.n).
    pub const fn host4(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 1, 0, n)
    }

    /// IPv6 address of target-side host `n` (fd00:1::n).
    pub const fn host6(n: u8) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, n as u16)
    }

    /// MAC address of target-side host `n`.
    pub const fn host_mac(n: u8) -> Mac {
        [0x02, 0, 0, 0, 0x01, n]
    }

    /// Interface index of `name` in the calling thread's namespace.
    pub fn ifindex(name: &str) -> u32 {
        let c = std::ffi::CString::new(name).expect("interface name");
        // SAFETY: a valid NUL-terminated string.
        let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
        assert_ne!(i, 0, "no interface {name} in this namespace");
        i
    }

    /// Runs `ip <args>` in the calling thread's namespace (a case changing
    /// routes or neighbours after the topology is built).
    pub fn ip(args: &str) {
        let out = Command::new("ip")
            .args(args.split_whitespace())
            .output()
            .unwrap_or_else(|e| panic!("spawn ip {args}: {e}"));
        assert!(
            out.status.success(),
            "ip {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ip -batch` commands building the namespace.
    pub fn commands() -> Vec<String> {
        let mut c: Vec<String> = [
            "link set lo up",
            "link add fx0 address 02:00:00:00:00:f0 type veth peer name fx0p",
            "link add fx1 address 02:00:00:00:00:f1 type veth peer name fx1p",
            "link set fx0 up",
            "link set fx0p up",
            "link set fx1 up",
            "link set fx1p up",
            "addr add 10.1.0.254/24 dev fx0",
            "addr add fd00:1::fe/64 dev fx0 nodad",
            "addr add 10.2.0.254/24 dev fx1",
            "addr add fd00:2::fe/64 dev fx1 nodad",
            "neigh add 10.2.0.1 lladdr 02:00:00:00:02:01 dev fx1 nud permanent",
            "neigh add fd00:2::1 lladdr 02:00:00:00:02:01 dev fx1 nud permanent",
            "route add 203.0.113.0/24 via 10.2.0.1 dev fx1",
            "route add 198.51.100.0/24 via 10.2.0.1 dev fx1",
            "route add 2001:db8:c::/48 via fd00:2::1 dev fx1",
            "route add 10.3.0.0/24 via 10.1.0.20 dev fx0",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for n in HOSTS {
            let mac = host_mac(n).map(|b| format!("{b:02x}")).join(":");
            c.push(format!(
                "neigh add {} lladdr {mac} dev fx0 nud permanent",
                host4(n)
            ));
            c.push(format!(
                "neigh add {} lladdr {mac} dev fx0 nud permanent",
                host6(n)
            ));
        }
        c
    }
}

/// While alive, the current thread is in a fresh network namespace built per
/// [`topo`]; dropping it (also while unwinding) moves the thread back to its
/// original namespace, and the fixture namespace, referenced by nothing else,
/// is destroyed with its devices.
pub struct NetNsGuard {
    original: OwnedFd,
}

impl NetNsGuard {
    /// Unshares the calling thread's network namespace and builds the topology.
    /// Prefer [`with_netns`], which does it on a dedicated thread.
    pub fn new() -> Self {
        let original: OwnedFd = fs::File::open("/proc/thread-self/ns/net")
            .expect("open /proc/thread-self/ns/net")
            .into();
        // SAFETY: unshare takes no pointers; it only affects this thread.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET) failed (the fixtures must run as root): {}",
            std::io::Error::last_os_error()
        );
        let guard = NetNsGuard { original };
        build_topology();
        guard
    }
}

impl Default for NetNsGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetNsGuard {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: setns with a namespace fd we own; affects this thread only.
        let rc = unsafe { libc::setns(self.original.as_fd().as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 && !std::thread::panicking() {
            panic!(
                "setns back to the original network namespace failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

fn build_topology() {
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn `ip -batch -` (iproute2 is needed by the fixtures)");
    {
        let mut stdin = child.stdin.take().expect("ip stdin");
        for cmd in topo::commands() {
            writeln!(stdin, "{cmd}").expect("write to ip -batch");
        }
    }
    let out = child.wait_with_output().expect("wait for ip -batch");
    assert!(
        out.status.success(),
        "building the fixture namespace failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // /proc/sys/net resolves against the calling thread's namespace; fx0's
    // directory existing proves these writes land in the fixture namespace.
    for path in [
        "/proc/sys/net/ipv4/conf/fx0/forwarding",
        "/proc/sys/net/ipv4/conf/all/forwarding",
        "/proc/sys/net/ipv6/conf/all/forwarding",
    ] {
        fs::write(path, "1").unwrap_or_else(|e| panic!("write 1 to {path}: {e}"));
    }
    for path in [
        "/proc/sys/net/ipv4/conf/lo/forwarding",
        "/proc/sys/net/ipv6/conf/lo/forwarding",
    ] {
        let v = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        assert_eq!(
            v.trim(),
            "1",
            "{path} is not enabled in the fixture namespace"
        );
    }
}

/// Runs `f` on a dedicated thread inside a fresh fixture namespace (see
/// [`topo`]), re-raising its panic. The namespace is gone when this returns.
pub fn with_netns<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("fixture-netns".into())
            .spawn_scoped(s, || {
                // One CPU for the whole case: per-CPU state (counters, the
                // per-CPU next-hop slots, LRU free lists) must be the same
                // state from one test run to the next.
                pin_to_cpu(0);
                let _guard = NetNsGuard::new();
                f()
            })
            .expect("spawn the fixture thread");
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Path of the eBPF object from [`OBJECT_ENV`]; panics when unset or missing.
pub fn object_path() -> PathBuf {
    let path = std::env::var_os(OBJECT_ENV).unwrap_or_else(|| {
        panic!(
            "{OBJECT_ENV} is not set: run the data-path tests with `cargo xtask test`, or set \
             {OBJECT_ENV}=target/bpfel-unknown-none/release/lb-ebpf after `cargo xtask build`"
        )
    });
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "{OBJECT_ENV}={} does not name a file: build the XDP program with `cargo xtask build`",
        path.display()
    );
    path
}

/// Converts an address to the maps' representation (network byte order):
/// the daemon's own encoding, so fixtures and daemon cannot disagree.
pub fn addr(ip: IpAddr) -> (Addr, u8) {
    lb::net::encode_addr(ip)
}

/// A port in network byte order as the maps store it.
pub const fn port_be(port: u16) -> u16 {
    port.to_be()
}

/// The `FlowKey`/`NatKey` of a packet `src -> dst`.
pub fn flow_key(src: SocketAddr, dst: SocketAddr, proto: u8) -> FlowKey {
    let (s, family) = addr(src.ip());
    let (d, dfamily) = addr(dst.ip());
    assert_eq!(family, dfamily, "flow key with mixed families");
    FlowKey {
        src: s,
        dst: d,
        sport: port_be(src.port()),
        dport: port_be(dst.port()),
        proto,
        family,
        _pad: [0; 2],
    }
}

/// The `VipKey` of a service.
pub fn vip_key(vip: SocketAddr, proto: u8) -> VipKey {
    let (a, family) = addr(vip.ip());
    VipKey {
        addr: a,
        port: port_be(vip.port()),
        proto,
        family,
    }
}

/// A `TARGETS` entry.
pub fn target(addr_port: SocketAddr, state: lb_common::TargetState, generation: u32) -> Target {
    let (a, family) = addr(addr_port.ip());
    Target {
        addr: a,
        port: port_be(addr_port.port()),
        family,
        state: state as u8,
        generation,
    }
}

/// Seeds the fixture's connection table uses (fixed, so that tests can
/// construct keys that share a set). The reply-interface check is off:
/// every test run comes in by `lo` (`topo`), which no route leaves by; the
/// cases of the check turn it on ([`Fixture::set_config_flags`]).
pub const FIXTURE_CONFIG: DataPathConfig = DataPathConfig {
    seed: 0x5eed_0001,
    seed2: 0x5eed_0002,
    set_mask: 0,
    flags: lb_common::flow::config_flags::REPLY_ANY_INTERFACE,
};

trait WithEntries {
    fn with_entries(self, entries: u32) -> Self;
}

impl WithEntries for DataPathConfig {
    fn with_entries(self, entries: u32) -> Self {
        DataPathConfig {
            set_mask: entries / FLOW_WAYS - 1,
            ..self
        }
    }
}

/// A connection-table entry as the program writes it for a new flow, last
/// seen `age_s` seconds ago (`check` is filled in when it is stored).
pub fn flow_entry(key: FlowKey, target: (u32, u32), vip_id: u32, idle_timeout_s: u32) -> FlowEntry {
    FlowEntry {
        key,
        target_id: target.0 as u16,
        target_gen: target.1 as u16,
        vip_id: vip_id as u16,
        idle_timeout_s: idle_timeout_s as u16,
        last_seen: ticks(monotonic_coarse_ns()),
        state: FlowState::Established as u8,
        ..FlowEntry::default()
    }
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds, the clock of
/// `bpf_ktime_get_coarse_ns` that stamps flows.
pub fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC_COARSE)");
    u64::try_from(ts.tv_sec).expect("time") * 1_000_000_000
        + u64::try_from(ts.tv_nsec).expect("time")
}

/// `CLOCK_MONOTONIC` in nanoseconds, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    u64::try_from(ts.tv_sec).expect("time") * 1_000_000_000
        + u64::try_from(ts.tv_nsec).expect("time")
}

/// What one test run returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    pub action: u32,
    pub output: Vec<u8>,
}

/// The loaded program and its maps.
pub struct Fixture {
    ebpf: Ebpf,
    ring_size: u32,
}

impl Fixture {
    /// Loads the object named by [`OBJECT_ENV`] with `MAGLEV` sized for
    /// [`RING_SLOTS`] rings of `ring_size` entries, and loads `lb_xdp`.
    pub fn load(ring_size: u32) -> Self {
        Self::load_with(ring_size, FLOW_CAPACITY)
    }

    /// [`Fixture::load`] with a connection table for `flow_capacity` flows
    /// (rounded up as the daemon does) and fixed seeds, so tests can tell
    /// which keys share a set.
    pub fn load_with(ring_size: u32, flow_capacity: u32) -> Self {
        Self::load_object(&object_path(), ring_size, flow_capacity)
    }

    /// [`Fixture::load_with`] of the object at `path` rather than the one
    /// [`OBJECT_ENV`] names (`bench xdp --against`: another build of
    /// `lb_xdp` with the same maps).
    pub fn load_object(path: &std::path::Path, ring_size: u32, flow_capacity: u32) -> Self {
        let entries = lb::bpf::flow_table::entries_for(flow_capacity);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(maps::MAGLEV, RING_SLOTS * ring_size)
            .map_max_entries(maps::FLOWS, entries)
            .map_max_entries(maps::FLOW_META, entries / FLOW_WAYS)
            .load_file(path)
            .unwrap_or_else(|e| panic!("loading {}: {e:?}", path.display()));
        let mut config: Array<&mut MapData, DataPathConfig> = Array::try_from(
            ebpf.map_mut(maps::CONFIG)
                .unwrap_or_else(|| panic!("no {} map", maps::CONFIG)),
        )
        .expect("CONFIG: Array<DataPathConfig>");
        config
            .set(0, FIXTURE_CONFIG.with_entries(entries), 0)
            .expect("CONFIG set");
        let prog: &mut Xdp = ebpf
            .program_mut(maps::PROGRAM)
            .unwrap_or_else(|| panic!("no program {} in {}", maps::PROGRAM, path.display()))
            .try_into()
            .unwrap_or_else(|e| panic!("{} is not an XDP program: {e}", maps::PROGRAM));
        prog.load()
            .unwrap_or_else(|e| panic!("loading {} into the kernel: {e:?}", maps::PROGRAM));
        let mut fx = Fixture { ebpf, ring_size };
        // Every slot starts empty (an unset slot would read as target 0).
        for i in 0..RING_SLOTS * ring_size {
            fx.maglev().set(i, RING_EMPTY, 0).expect("clear MAGLEV");
        }
        fx
    }

    pub fn ring_size(&self) -> u32 {
        self.ring_size
    }

    fn map(&self, name: &str) -> &aya::maps::Map {
        self.ebpf
            .map(name)
            .unwrap_or_else(|| panic!("map {name} missing from the object"))
    }

    fn map_mut(&mut self, name: &str) -> &mut aya::maps::Map {
        self.ebpf
            .map_mut(name)
            .unwrap_or_else(|| panic!("map {name} missing from the object"))
    }

    fn vips(&mut self) -> HashMap<&mut MapData, VipKey, VipMeta> {
        HashMap::try_from(self.map_mut(maps::VIPS)).expect("VIPS: HashMap<VipKey, VipMeta>")
    }

    fn vip_addrs(&mut self) -> HashMap<&mut MapData, VipAddrKey, u32> {
        HashMap::try_from(self.map_mut(maps::VIP_ADDRS))
            .expect("VIP_ADDRS: HashMap<VipAddrKey, u32>")
    }

    fn maglev(&mut self) -> Array<&mut MapData, u32> {
        Array::try_from(self.map_mut(maps::MAGLEV)).expect("MAGLEV: Array<u32>")
    }

    fn targets(&mut self) -> Array<&mut MapData, Target> {
        Array::try_from(self.map_mut(maps::TARGETS)).expect("TARGETS: Array<Target>")
    }

    fn ports(&mut self) -> Array<&mut MapData, u32> {
        Array::try_from(self.map_mut(maps::PORTS)).expect("PORTS: Array<u32>")
    }

    fn flows_mut(&mut self) -> Array<&mut MapData, FlowEntry> {
        Array::try_from(self.map_mut(maps::FLOWS)).expect("FLOWS: Array<FlowEntry>")
    }

    fn flows(&self) -> Array<&MapData, FlowEntry> {
        Array::try_from(self.map(maps::FLOWS)).expect("FLOWS: Array<FlowEntry>")
    }

    fn replies(&mut self) -> HashMap<&mut MapData, ReplyKey, ReplyTargets> {
        HashMap::try_from(self.map_mut(maps::REPLIES))
            .expect("REPLIES: HashMap<ReplyKey, ReplyTargets>")
    }

    /// Sets `DataPathConfig::flags` (`lb_common::flow::config_flags`).
    pub fn set_config_flags(&mut self, flags: u32) {
        let config = DataPathConfig {
            flags,
            ..self.config()
        };
        let mut a: Array<&mut MapData, DataPathConfig> =
            Array::try_from(self.map_mut(maps::CONFIG)).expect("CONFIG: Array<DataPathConfig>");
        a.set(0, config, 0).expect("CONFIG set");
    }

    fn config(&self) -> DataPathConfig {
        let a: Array<&MapData, DataPathConfig> =
            Array::try_from(self.map(maps::CONFIG)).expect("CONFIG: Array<DataPathConfig>");
        a.get(&0, 0).expect("CONFIG get")
    }

    /// The slots where `key`'s flow may live: its first candidate set,
    /// its second, then their spill sets (`flow::spill`), each once (in a
    /// small table two of them may be one set).
    pub fn candidate_slots(&self, key: &FlowKey) -> Vec<u32> {
        let cfg = self.config();
        let h = table_hash(key, cfg.seed);
        let (a, b) = (cfg.first_set(h), cfg.second_set(h));
        let mut sets = Vec::new();
        for set in [a, b, spill(a), spill(b)] {
            if !sets.contains(&set) {
                sets.push(set);
            }
        }
        sets.into_iter().flat_map(|s| s..s + FLOW_WAYS).collect()
    }

    /// `key`'s home slot in each candidate set (`DataPathConfig::homes`).
    pub fn homes(&self, key: &FlowKey) -> [u32; 2] {
        let cfg = self.config();
        cfg.homes(table_hash(key, cfg.seed))
    }

    /// Index of the first slot of `key`'s first candidate set.
    pub fn first_set(&self, key: &FlowKey) -> u32 {
        let cfg = self.config();
        cfg.first_set(table_hash(key, cfg.seed))
    }

    /// Slots of the connection table.
    pub fn flow_slots(&self) -> u32 {
        self.flows().len()
    }

    fn or_port(&mut self, port: u16, bit: u32) {
        let mut ports = self.ports();
        let old = ports.get(&u32::from(port), 0).expect("PORTS get");
        ports.set(u32::from(port), old | bit, 0).expect("PORTS set");
    }

    /// Adds a VIP: `VIPS`, `VIP_ADDRS` and the `PORTS` VIP bit.
    pub fn add_vip(&mut self, key: VipKey, meta: VipMeta) {
        self.vips().insert(key, meta, 0).expect("VIPS insert");
        self.vip_addrs()
            .insert(
                VipAddrKey {
                    addr: key.addr,
                    family: key.family,
                    _pad: [0; 3],
                },
                1,
                0,
            )
            .expect("VIP_ADDRS insert");
        self.or_port(u16::from_be(key.port), port_flags::VIP);
    }

    /// Replaces a VIP's metadata (e.g. to switch its live ring slot).
    pub fn set_vip_meta(&mut self, key: VipKey, meta: VipMeta) {
        self.vips().insert(key, meta, 0).expect("VIPS update");
    }

    /// Writes ring `slot` (`ring_size` entries): `targets` repeated cyclically.
    pub fn set_ring(&mut self, slot: u32, targets: &[u32]) {
        assert!(
            slot < RING_SLOTS,
            "ring slot {slot} out of the fixture's range"
        );
        assert!(!targets.is_empty(), "use RING_EMPTY for an empty ring");
        let n = self.ring_size;
        let mut maglev = self.maglev();
        for i in 0..n {
            let t = targets[usize::try_from(i).expect("index") % targets.len()];
            maglev.set(slot * n + i, t, 0).expect("MAGLEV set");
        }
    }

    /// The target id in ring `slot` at `index`.
    pub fn ring_entry(&mut self, slot: u32, index: u32) -> u32 {
        let n = self.ring_size;
        self.maglev()
            .get(&(slot * n + index), 0)
            .expect("MAGLEV get")
    }

    /// Sets `TARGETS[id]` and the `PORTS` target bit of its port.
    pub fn set_target(&mut self, id: u32, t: Target) {
        self.targets().set(id, t, 0).expect("TARGETS set");
        self.or_port(u16::from_be(t.port), port_flags::TARGET);
    }

    pub fn get_target(&mut self, id: u32) -> Target {
        self.targets().get(&id, 0).expect("TARGETS get")
    }

    /// Writes `entry` (its key, target and VIP; `check` is computed) into
    /// `slot` of the connection table, with its `FLOW_META` way (tag,
    /// state, expiry), as the program would.
    pub fn put_flow(&mut self, slot: u32, mut entry: FlowEntry) {
        let cfg = self.config();
        let hash = table_hash(&entry.key, cfg.seed);
        entry.check = entry_check(hash, entry.target_id, entry.target_gen, entry.vip_id);
        self.flows_mut().set(slot, entry, 0).expect("FLOWS set");
        let mut meta = self.set_meta(slot);
        let way = (slot % FLOW_WAYS) as usize;
        meta.tags[way] = entry_tag(hash);
        meta.states[way] = entry.state;
        meta.deadlines[way] = entry.deadline();
        self.put_set_meta(slot, meta);
    }

    /// The `FLOW_META` record of the set holding `slot`.
    pub fn set_meta(&self, slot: u32) -> SetMeta {
        let meta: Array<&MapData, SetMeta> =
            Array::try_from(self.map(maps::FLOW_META)).expect("FLOW_META: Array<SetMeta>");
        meta.get(&(slot / FLOW_WAYS), 0).expect("FLOW_META get")
    }

    /// Overwrites the `FLOW_META` record of the set holding `slot` (stale
    /// hints, as a purge leaves them).
    pub fn put_set_meta(&mut self, slot: u32, record: SetMeta) {
        let mut meta: Array<&mut MapData, SetMeta> =
            Array::try_from(self.map_mut(maps::FLOW_META)).expect("FLOW_META: Array<SetMeta>");
        meta.set(slot / FLOW_WAYS, record, 0)
            .expect("FLOW_META set");
    }

    /// The tag `FLOW_META` holds for `slot`.
    pub fn flow_tag(&self, slot: u32) -> u16 {
        self.set_meta(slot).tags[(slot % FLOW_WAYS) as usize]
    }

    /// Overwrites the tag of `slot`.
    pub fn put_flow_tag(&mut self, slot: u32, tag: u16) {
        let mut meta = self.set_meta(slot);
        meta.tags[(slot % FLOW_WAYS) as usize] = tag;
        self.put_set_meta(slot, meta);
    }

    /// The tag the program gives `key`'s entry.
    pub fn tag_of(&self, key: &FlowKey) -> u16 {
        entry_tag(table_hash(key, self.config().seed))
    }

    /// The entry in `slot`, whatever it holds.
    pub fn flow_at(&self, slot: u32) -> FlowEntry {
        self.flows().get(&slot, 0).expect("FLOWS get")
    }

    /// Writes `entry` into `slot` exactly as given, its `check` too (a
    /// torn or half-written entry).
    pub fn put_flow_raw(&mut self, slot: u32, entry: FlowEntry) {
        self.flows_mut().set(slot, entry, 0).expect("FLOWS set");
    }

    /// Writes `entry` into the first slot of its first candidate set.
    pub fn insert_flow(&mut self, entry: FlowEntry) {
        let slot = self.first_set(&entry.key);
        self.put_flow(slot, entry);
    }

    /// The entry and slot holding `key` in either candidate set, if any
    /// (free slots excluded, expired ones not).
    pub fn flow_slot(&self, key: &FlowKey) -> Option<(u32, FlowEntry)> {
        let flows = self.flows();
        self.candidate_slots(key).into_iter().find_map(|i| {
            let e = flows.get(&i, 0).expect("FLOWS get");
            (e.state() != FlowState::Free && e.key == *key).then_some((i, e))
        })
    }

    /// The entry holding `key`, if any.
    pub fn flow(&self, key: &FlowKey) -> Option<FlowEntry> {
        self.flow_slot(key).map(|(_, e)| e)
    }

    /// Every entry that is not free.
    pub fn flow_entries(&self) -> Vec<FlowEntry> {
        let flows = self.flows();
        (0..flows.len())
            .map(|i| flows.get(&i, 0).expect("FLOWS get"))
            .filter(|e| e.state() != FlowState::Free)
            .collect()
    }

    /// Every key in the connection table (entries that are not free).
    pub fn flow_keys(&self) -> Vec<FlowKey> {
        self.flow_entries().into_iter().map(|e| e.key).collect()
    }

    /// Sets a nat target's `REPLIES` entry.
    pub fn set_replies(&mut self, key: ReplyKey, targets: ReplyTargets) {
        self.replies()
            .insert(key, targets, 0)
            .expect("REPLIES insert");
    }

    /// Removes a nat target's `REPLIES` entry.
    pub fn remove_replies(&mut self, key: &ReplyKey) {
        self.replies().remove(key).expect("REPLIES remove");
    }

    /// `FLOW_STATS[vip_id]` summed over CPUs.
    pub fn flow_counters(&self, vip_id: u32) -> FlowCounters {
        let m: PerCpuArray<&MapData, FlowCounters> =
            PerCpuArray::try_from(self.map(maps::FLOW_STATS))
                .expect("FLOW_STATS: PerCpuArray<FlowCounters>");
        let mut total = FlowCounters::default();
        for v in m.get(&vip_id, 0).expect("FLOW_STATS get").iter() {
            total.add(v);
        }
        total
    }

    /// `STATS`, summed over CPUs, indexed by `Stat as usize`. A verdict
    /// the object does not have (an older build's, `bench xdp --against`)
    /// reads 0.
    pub fn stats(&self) -> Vec<u64> {
        let m: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.map(maps::STATS)).expect("STATS: PerCpuArray<u64>");
        Stat::ALL
            .iter()
            .map(|s| match m.get(&(*s as u32), 0) {
                Ok(v) => v.iter().sum(),
                Err(MapError::OutOfBounds { .. }) => 0,
                Err(e) => panic!("STATS get {}: {e}", s.name()),
            })
            .collect()
    }

    fn counters(&self, name: &str, id: u32) -> Counters {
        let m: PerCpuArray<&MapData, Counters> =
            PerCpuArray::try_from(self.map(name)).expect("PerCpuArray<Counters>");
        let mut total = Counters::default();
        for c in m.get(&id, 0).expect("counters get").iter() {
            total.add(c);
        }
        total
    }

    /// `VIP_STATS[vip_id]` summed over CPUs.
    pub fn vip_counters(&self, vip_id: u32) -> Counters {
        self.counters(maps::VIP_STATS, vip_id)
    }

    /// `TARGET_STATS[target_id]` summed over CPUs.
    pub fn target_counters(&self, target_id: u32) -> Counters {
        self.counters(maps::TARGET_STATS, target_id)
    }

    /// Runs one frame through `lb_xdp` with `BPF_PROG_TEST_RUN`. Must be
    /// called on a thread inside the fixture namespace ([`with_netns`]).
    pub fn try_run(&self, frame: &[u8]) -> Result<RunResult, aya::programs::ProgramError> {
        let prog: &Xdp = self
            .ebpf
            .program(maps::PROGRAM)
            .expect("program")
            .try_into()
            .expect("XDP program");
        let mut out = vec![0u8; frame.len() + 512];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        };
        let r = prog.test_run(opts)?;
        out.truncate(usize::try_from(r.data_size_out).expect("size"));
        Ok(RunResult {
            action: r.return_value,
            output: out,
        })
    }

    /// [`Fixture::try_run`], panicking on a syscall error.
    pub fn run(&self, frame: &[u8]) -> RunResult {
        self.try_run(frame)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed: {e:?}"))
    }

    /// Runs one frame as received on `ifname` (in the fixture namespace):
    /// `ctx_in` is an `xdp_md` with that `ingress_ifindex` and rx queue 0.
    /// Every device's rx queues have a registered `xdp_rxq_info` from the
    /// moment it is created, which is all test runs require.
    pub fn run_on(&self, frame: &[u8], ifname: &str) -> RunResult {
        let prog: &Xdp = self
            .ebpf
            .program(maps::PROGRAM)
            .expect("program")
            .try_into()
            .expect("XDP program");
        let ctx = xdp_md_on(frame, ifname);
        let mut out = vec![0u8; frame.len() + 512];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::default()
        };
        let r = prog
            .test_run(opts)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on {ifname} failed: {e:?}"));
        out.truncate(usize::try_from(r.data_size_out).expect("size"));
        RunResult {
            action: r.return_value,
            output: out,
        }
    }
}

/// A test run's `ctx_in` for `frame` received on `ifname` (in the calling
/// thread's namespace), rx queue 0.
pub fn xdp_md_on(frame: &[u8], ifname: &str) -> Vec<u8> {
    let ifindex = topo::ifindex(ifname);
    // struct xdp_md { data, data_end, data_meta, ingress_ifindex,
    // rx_queue_index, egress_ifindex }: data_end must be the frame length.
    let md: [u32; 6] = [
        0,
        u32::try_from(frame.len()).expect("frame length"),
        0,
        ifindex,
        0,
        0,
    ];
    md.iter().flat_map(|w| w.to_ne_bytes()).collect()
}

impl Fixture {
    /// Loads `lb_tc` (the data path at tc, sharing every map with
    /// `lb_xdp`) into the kernel; once per fixture.
    pub fn load_tc(&mut self) {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(maps::TC_PROGRAM)
            .unwrap_or_else(|| panic!("no program {} in the object", maps::TC_PROGRAM))
            .try_into()
            .unwrap_or_else(|e| panic!("{} is not a tc program: {e}", maps::TC_PROGRAM));
        prog.load()
            .unwrap_or_else(|e| panic!("loading {} into the kernel: {e:?}", maps::TC_PROGRAM));
    }

    /// The loaded `lb_tc` program ([`Self::load_tc`] first).
    pub fn tc_program(&self) -> &SchedClassifier {
        self.ebpf
            .program(maps::TC_PROGRAM)
            .expect("program")
            .try_into()
            .expect("tc program")
    }

    /// Runs one frame through `lb_tc` as a socket buffer on `ifname` (in
    /// the fixture namespace): `ctx_in` is a `__sk_buff` whose `ifindex`
    /// (and `ingress_ifindex`) name it. A test-run buffer's checksum state
    /// is `CHECKSUM_NONE`: the checksums in the bytes are complete.
    pub fn run_tc_on(&self, frame: &[u8], ifname: &str) -> RunResult {
        self.run_tc_as(frame, ifname, topo::ifindex(ifname))
    }

    /// [`Self::run_tc_on`] with another `ingress_ifindex`: a buffer at tc
    /// egress of `ifname` that the kernel forwarded from `ingress` (an
    /// interface index), or, with 0, one this host's stack sent.
    pub fn run_tc_as(&self, frame: &[u8], ifname: &str, ingress: u32) -> RunResult {
        let ifindex = topo::ifindex(ifname);
        // struct __sk_buff: len, pkt_type, mark, queue_mapping, protocol,
        // vlan_present, vlan_tci, vlan_proto, priority, ingress_ifindex,
        // ifindex (the fields before `cb` a test run accepts).
        let mut skb = [0u32; 11];
        skb[9] = ingress;
        skb[10] = ifindex;
        let ctx: Vec<u8> = skb.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut out = vec![0u8; frame.len() + 512];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::default()
        };
        let r = self
            .tc_program()
            .test_run(opts)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN of lb_tc on {ifname} failed: {e:?}"));
        out.truncate(usize::try_from(r.data_size_out).expect("size"));
        RunResult {
            action: r.return_value,
            output: out,
        }
    }

    /// Kernel memory charged to map `name` (`memlock` in its fdinfo) and its
    /// capacity.
    pub fn map_memlock(&self, name: &str) -> (u64, u32) {
        use std::os::fd::{AsFd, AsRawFd};
        let (aya::maps::Map::LruHashMap(data)
        | aya::maps::Map::HashMap(data)
        | aya::maps::Map::Array(data)) = self.map(name)
        else {
            panic!("{name} is not a hash or array map");
        };
        let fd = data.fd().as_fd().as_raw_fd();
        let info = fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
            .unwrap_or_else(|e| panic!("fdinfo of {name}: {e}"));
        let field = |key: &str| -> u64 {
            info.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {key} in fdinfo of {name}"))
        };
        (field("memlock:"), field("max_entries:") as u32)
    }

    /// The loaded `lb_xdp` program (benchmarks put it into a tail-call slot).
    /// Names of the object's maps, its global-data sections (`.rodata`,
    /// `.bss`, ...) left out.
    pub fn map_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .ebpf
            .maps()
            .map(|(n, _)| n.to_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(maps::PROGRAM)
            .expect("program")
            .try_into()
            .expect("XDP program")
    }
}
