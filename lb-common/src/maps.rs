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
/// `u32 -> FlowEntry`: the connection table (a set-associative hash table
/// the program manages; memory-mappable).
pub const FLOWS: &str = "FLOWS";
/// `u32 set -> SetMeta`: each `FLOWS` set's tags, states and expiry ticks,
/// so lookups and new flows read a small record instead of every entry of
/// a set (memory-mappable).
pub const FLOW_META: &str = "FLOW_META";
/// `ReplyKey -> ReplyTargets`: nat targets and the VIPs they serve, so a
/// reply finds its flow's entry.
pub const REPLIES: &str = "REPLIES";
/// `u32 -> DataPathConfig`: one entry, the table's seeds and size.
pub const CONFIG: &str = "CONFIG";
/// `u32 port -> u32 PortFlags`: cheap pre-filter before the hash lookups.
pub const PORTS: &str = "PORTS";
/// Per-CPU `Counters` per VIP id.
pub const VIP_STATS: &str = "VIP_STATS";
/// Per-CPU `Counters` per target id.
pub const TARGET_STATS: &str = "TARGET_STATS";
/// Per-CPU `FlowCounters` per VIP id: the connection table's view.
pub const FLOW_STATS: &str = "FLOW_STATS";
/// Per-CPU `u64` per `Stat`: global actions, passes and drops by reason.
pub const STATS: &str = "STATS";
/// `NextHopKey -> NextHop` (LRU): cached `bpf_fib_lookup` results.
pub const NEXTHOPS: &str = "NEXTHOPS";
/// Per-CPU `TargetHop` per target id: the forward direction's next hop.
pub const TARGET_HOPS: &str = "TARGET_HOPS";
/// Per-CPU `ReplyRoute` per target id: the interface a nat target's replies
/// must come in by (a cache of FIB lookups: not pinned, see [`UNPINNED`]).
pub const REPLY_ROUTES: &str = "REPLY_ROUTES";

/// Every map, in the order `lb down` removes their pins.
pub const ALL: [&str; 15] = [
    VIPS,
    VIP_ADDRS,
    MAGLEV,
    TARGETS,
    FLOWS,
    FLOW_META,
    REPLIES,
    CONFIG,
    PORTS,
    VIP_STATS,
    TARGET_STATS,
    FLOW_STATS,
    STATS,
    NEXTHOPS,
    TARGET_HOPS,
];

/// Maps of the object that hold nothing between packets (scratch space) or
/// only what a second of lookups rebuilds (`REPLY_ROUTES`): never pinned,
/// a fresh one per loaded program, so their layout may change freely.
pub const UNPINNED: [&str; 2] = ["SCRATCH", REPLY_ROUTES];

/// Pins older versions made that this one no longer has: their presence
/// means the pinned layout is not this version's, and `lb down` removes them.
pub const LEGACY: [&str; 2] = ["NAT", "FLOW_TAGS"];

/// The XDP program's symbol (and pin name).
pub const PROGRAM: &str = "lb_xdp";

/// The same data path for tc (`daemon.tc_interfaces`): symbol and pin name.
pub const TC_PROGRAM: &str = "lb_tc";

/// Bits in a `PORTS` entry (indexed by port in host byte order).
pub mod port_flags {
    /// Some VIP listens on this destination port.
    pub const VIP: u32 = 1;
    /// Some target uses this source port (return traffic may need NAT).
    pub const TARGET: u32 = 2;
}
