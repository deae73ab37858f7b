//! Every map of the data path. Names are the symbols the loader and bpftool
//! see (lb_common::maps); sizes marked "set at load" are overridden by the
//! daemon from the config.
use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_COMMON_LRU},
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use lb_common::{
    Counters, DataPathConfig, FlowCounters, FlowEntry, NextHop, NextHopKey, ReplyKey, ReplyRoute,
    ReplyTargets, Target, TargetHop, VipAddrKey, VipKey, VipMeta,
    counters::STAT_COUNT,
    flow::{FLOW_WAYS, SetMeta},
    limits::{
        DEFAULT_FLOW_CAPACITY, DEFAULT_RING_SIZE, MAX_TARGETS, MAX_VIPS, NEXTHOP_CAPACITY,
        PORT_FILTER_SIZE, RING_SLOTS_PER_VIP,
    },
};

/// Services: (address, port, protocol) -> how to balance them.
#[btf_map]
pub static VIPS: HashMap<VipKey, VipMeta, { MAX_VIPS as usize }> = HashMap::new();

/// Every VIP address (any port): recognises fragments and ICMP about VIPs.
#[btf_map]
pub static VIP_ADDRS: HashMap<VipAddrKey, u32, { MAX_VIPS as usize }> = HashMap::new();

/// Maglev rings, two slots per VIP; size set at load (slots x ring size).
/// Memory-mappable so the daemon writes a 65537-entry table with plain
/// stores instead of one syscall per slot.
#[btf_map]
pub static MAGLEV: Array<
    u32,
    { (RING_SLOTS_PER_VIP * DEFAULT_RING_SIZE) as usize },
    { BPF_F_MMAPABLE as usize },
> = Array::new();

/// Target id -> address, port, state, generation.
#[btf_map]
pub static TARGETS: Array<Target, { MAX_TARGETS as usize }> = Array::new();

/// The connection table: sets of `FLOW_WAYS` entries that `conntrack`
/// manages (see lb_common::flow). Size set at load. Memory-mappable: the
/// entries start on a page, so each is one cache line, and the daemon
/// reads and purges the table without a syscall per entry.
#[btf_map]
pub static FLOWS: Array<
    FlowEntry,
    { DEFAULT_FLOW_CAPACITY as usize },
    { BPF_F_MMAPABLE as usize },
> = Array::new();

/// Each `FLOWS` set's tags, states and expiry ticks (lb_common::flow::SetMeta),
/// one value per set. Size set at load (`FLOWS` entries / `FLOW_WAYS`).
/// Memory-mappable, so the values start on a page and none of the 32-byte
/// records straddles two cache lines.
#[btf_map]
pub static FLOW_META: Array<
    SetMeta,
    { (DEFAULT_FLOW_CAPACITY / FLOW_WAYS) as usize },
    { BPF_F_MMAPABLE as usize },
> = Array::new();

/// nat targets -> the VIPs they serve: how a reply finds its flow.
#[btf_map]
pub static REPLIES: HashMap<ReplyKey, ReplyTargets, { MAX_TARGETS as usize }> = HashMap::new();

/// The connection table's seeds and set mask, and the data path's flags,
/// written by the daemon.
#[btf_map]
pub static CONFIG: Array<DataPathConfig, 1> = Array::new();

/// `CONFIG[0]` (all zeros, the defaults, should the lookup fail).
#[inline(always)]
pub fn config() -> DataPathConfig {
    CONFIG.get(0).copied().unwrap_or_default()
}

/// Port pre-filter (host-order port -> port_flags), so most non-VIP packets
/// cost an array lookup instead of hash lookups.
#[btf_map]
pub static PORTS: Array<u32, { PORT_FILTER_SIZE as usize }> = Array::new();

/// Per-CPU traffic counters by VIP id.
#[btf_map]
pub static VIP_STATS: PerCpuArray<Counters, { MAX_VIPS as usize }> = PerCpuArray::new();

/// Per-CPU traffic counters by target id.
#[btf_map]
pub static TARGET_STATS: PerCpuArray<Counters, { MAX_TARGETS as usize }> = PerCpuArray::new();

/// Per-CPU connection-table counters by VIP id.
#[btf_map]
pub static FLOW_STATS: PerCpuArray<FlowCounters, { MAX_VIPS as usize }> = PerCpuArray::new();

/// Per-CPU count of every verdict, indexed by `lb_common::Stat`.
#[btf_map]
pub static STATS: PerCpuArray<u64, { STAT_COUNT as usize }> = PerCpuArray::new();

/// Next-hop cache: a FIB lookup costs 130 ns (IPv4) to 330 ns (IPv6) on
/// this class of machine, a cache hit one hash lookup. Entries live
/// `NEXTHOP_TTL_NS`.
#[btf_map]
pub static NEXTHOPS: LruHashMap<
    NextHopKey,
    NextHop,
    { NEXTHOP_CAPACITY as usize },
    { BPF_F_NO_COMMON_LRU as usize },
> = LruHashMap::new();

/// Forward-direction next hop per target, per CPU: saves the `NEXTHOPS`
/// hash lookup on every client packet.
#[btf_map]
pub static TARGET_HOPS: PerCpuArray<TargetHop, { MAX_TARGETS as usize }> = PerCpuArray::new();

/// Per target, per CPU: the interface the route to the target leaves by,
/// which its nat replies must come in by (`fib::reply_on_route`).
#[btf_map]
pub static REPLY_ROUTES: PerCpuArray<ReplyRoute, { MAX_TARGETS as usize }> = PerCpuArray::new();
