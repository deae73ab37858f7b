//! Map names: the symbols in the eBPF object and the file names under the pin
//! directory. The loader, `lb stats` and the README's bpftool commands use these.

/// `VipKey -> VipMeta`: the services.
pub const VIPS: &str = "VIPS";
/// `VipAddrKey -> u32`: every VIP address (any port), for fragments and ICMP.
pub const VIP_ADDRS: &str = "VIP_ADDRS";
/// `u32 -> u32`: Maglev rings, `ring_slot * ring_size + hash % ring_size -> target id`.
pub const MAGLEV: &str = "MAGLEV";
/// `u32 -> Target`: target id -> address, port, state, generation.
pub const TARGETS: &str = "TARGETS";
/// `FlowKey -> FlowValue` (LRU): client-to-VIP flows and their target.
pub const FLOWS: &str = "FLOWS";
/// `NatKey -> NatValue` (LRU): target-to-client return flows and their VIP.
pub const NAT: &str = "NAT";
/// `u32 port -> u32 PortFlags`: cheap pre-filter before the hash lookups.
pub const PORTS: &str = "PORTS";
/// Per-CPU `Counters` per VIP id.
pub const VIP_STATS: &str = "VIP_STATS";
/// Per-CPU `Counters` per target id.
pub const TARGET_STATS: &str = "TARGET_STATS";
/// Per-CPU `u64` per `Stat`: global actions, passes and drops by reason.
pub const STATS: &str = "STATS";
/// `NextHopKey -> NextHop` (LRU): cached `bpf_fib_lookup` results.
pub const NEXTHOPS: &str = "NEXTHOPS";
/// Per-CPU `TargetHop` per target id: the forward direction's next hop.
pub const TARGET_HOPS: &str = "TARGET_HOPS";

/// Every map, in the order `lb down` removes their pins.
pub const ALL: [&str; 12] = [
    VIPS,
    VIP_ADDRS,
    MAGLEV,
    TARGETS,
    FLOWS,
    NAT,
    PORTS,
    VIP_STATS,
    TARGET_STATS,
    STATS,
    NEXTHOPS,
    TARGET_HOPS,
];

/// The XDP program's symbol (and pin name).
pub const PROGRAM: &str = "lb_xdp";

/// Bits in a `PORTS` entry (indexed by port in host byte order).
pub mod port_flags {
    /// Some VIP listens on this destination port.
    pub const VIP: u32 = 1;
    /// Some target uses this source port (return traffic may need NAT).
    pub const TARGET: u32 = 2;
}
