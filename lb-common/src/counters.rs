//! Per-CPU counters.

/// Traffic of one VIP or one target. "in" is client -> target, "out" is the
/// translated reply target -> client.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counters {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub new_flows: u64,
}

impl Counters {
    /// Sum of per-CPU values.
    pub fn add(&mut self, o: &Counters) {
        self.packets_in += o.packets_in;
        self.bytes_in += o.bytes_in;
        self.packets_out += o.packets_out;
        self.bytes_out += o.bytes_out;
        self.new_flows += o.new_flows;
    }
}

/// What happened to the flows of one VIP in the connection table (per CPU,
/// `FLOW_STATS[vip id]`). A flood shows as `syns` or `embryonic` rising
/// while `confirmed` does not, and as `displaced`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowCounters {
    /// TCP SYNs (without ACK) from clients.
    pub syns: u64,
    /// New flows entered unconfirmed (a SYN, or a first packet without one).
    pub embryonic: u64,
    /// Flows confirmed (handshake completed, or both ways seen).
    pub confirmed: u64,
    /// Unconfirmed flows displaced by newer ones before they confirmed.
    pub displaced: u64,
    /// New flows that found no slot (both candidate sets and their spill
    /// sets full of confirmed flows): dropped in nat mode (`drop_table_full`).
    pub untracked: u64,
}

impl FlowCounters {
    /// Sum of per-CPU values.
    pub fn add(&mut self, o: &FlowCounters) {
        self.syns += o.syns;
        self.embryonic += o.embryonic;
        self.confirmed += o.confirmed;
        self.displaced += o.displaced;
        self.untracked += o.untracked;
    }
}

/// Index into `STATS`: every action the program takes, by reason.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Forwarded to a target (redirect or XDP_TX).
    Forwarded = 0,
    /// A target's reply translated back to the VIP and forwarded.
    Returned,
    /// Translated, but handed to the kernel because the next hop's neighbour
    /// is not resolved yet (the kernel resolves and forwards it).
    PassNoNeighbour,
    /// Not for a VIP and not a return flow.
    PassNotVip,
    /// Not IPv4/IPv6 (ARP, LLDP, ...).
    PassNotIp,
    /// Two or more VLAN tags.
    PassVlanStack,
    /// Headers too short or inconsistent to tell whether it is ours.
    PassMalformed,
    /// IPv6 extension header chain too long or of an unsupported kind.
    PassIpv6Ext,
    /// TTL/hop limit would expire here: the kernel answers with ICMP.
    PassTtlExceeded,
    /// ICMP not about a tracked flow.
    PassIcmp,
    /// For a VIP but its L4 header is truncated.
    DropMalformed,
    /// A fragment addressed to a VIP address (cannot be hashed to a flow).
    DropFragment,
    /// VIP with no usable target (empty group).
    DropNoTarget,
    /// `bpf_fib_lookup` found no route.
    DropNoRoute,
    /// An ICMP error about a tracked flow was translated and forwarded.
    IcmpTranslated,
    /// Translated, but larger than the egress MTU: handed to the kernel, which
    /// answers with ICMP fragmentation-needed / packet-too-big.
    PassMtu,
    /// Too big for the target-side MTU and not fragmentable: answered to
    /// the client with ICMP fragmentation-needed / packet-too-big from the
    /// VIP, quoting the packet as the client sent it.
    TooBigSent,
    /// From a nat target's address and port, but of no tracked flow (a
    /// health-check reply to this host, or a connection the table does not
    /// hold): handed to the kernel untranslated.
    PassReplyUntracked,
    /// A new nat flow found no slot: both its candidate sets hold live
    /// confirmed flows, and their spill sets no free or expired slot.
    /// Dropped rather than forwarded untracked, whose replies could not be
    /// translated back (the client retries; its flow counts as
    /// `untracked`).
    DropTableFull,
    /// dsr second chance: a TCP packet without a connection-table entry
    /// (not a SYN) whose target in the previous table differs from the
    /// live one, sent wrapped twice: to the live target, and inside to the
    /// previous one, which gets it when the live one has no socket for it.
    /// Not pinned (each packet looks again).
    SecondChance,
    /// From a nat target's side about a live flow (its reply, or an ICMP
    /// error about a packet sent to it), but in by an interface the route
    /// to that target does not leave by (the strict reverse-path check,
    /// `daemon.reply_interface_check`): handed to the kernel untranslated
    /// and the flow left as it was, since a sender on another network can
    /// forge a target's address.
    PassReplyInterface,
    /// Count of variants; not a stat. New stats go just above: the indices
    /// of pinned counters stay put across upgrades.
    _Count,
}

pub const STAT_COUNT: u32 = Stat::_Count as u32;

impl Stat {
    pub const ALL: [Stat; STAT_COUNT as usize] = [
        Stat::Forwarded,
        Stat::Returned,
        Stat::PassNoNeighbour,
        Stat::PassNotVip,
        Stat::PassNotIp,
        Stat::PassVlanStack,
        Stat::PassMalformed,
        Stat::PassIpv6Ext,
        Stat::PassTtlExceeded,
        Stat::PassIcmp,
        Stat::DropMalformed,
        Stat::DropFragment,
        Stat::DropNoTarget,
        Stat::DropNoRoute,
        Stat::IcmpTranslated,
        Stat::PassMtu,
        Stat::TooBigSent,
        Stat::PassReplyUntracked,
        Stat::DropTableFull,
        Stat::SecondChance,
        Stat::PassReplyInterface,
    ];

    /// The stat with index `v`; an index out of range reads as
    /// `pass_malformed` (it cannot happen: indices come from `as u32`).
    #[inline(always)]
    pub const fn from_u32(v: u32) -> Stat {
        if v < STAT_COUNT {
            // SAFETY: `Stat` is `repr(u32)` with the contiguous values
            // 0..STAT_COUNT, and `v` is one of them.
            unsafe { core::mem::transmute::<u32, Stat>(v) }
        } else {
            Stat::PassMalformed
        }
    }

    /// snake_case name used by `lb stats` and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Stat::Forwarded => "forwarded",
            Stat::Returned => "returned",
            Stat::PassNoNeighbour => "pass_no_neighbour",
            Stat::PassNotVip => "pass_not_vip",
            Stat::PassNotIp => "pass_not_ip",
            Stat::PassVlanStack => "pass_vlan_stack",
            Stat::PassMalformed => "pass_malformed",
            Stat::PassIpv6Ext => "pass_ipv6_ext",
            Stat::PassTtlExceeded => "pass_ttl_exceeded",
            Stat::PassIcmp => "pass_icmp",
            Stat::PassReplyUntracked => "pass_reply_untracked",
            Stat::PassReplyInterface => "pass_reply_interface",
            Stat::DropMalformed => "drop_malformed",
            Stat::DropFragment => "drop_fragment",
            Stat::DropNoTarget => "drop_no_target",
            Stat::DropNoRoute => "drop_no_route",
            Stat::DropTableFull => "drop_table_full",
            Stat::IcmpTranslated => "icmp_translated",
            Stat::PassMtu => "pass_mtu",
            Stat::TooBigSent => "too_big_sent",
            Stat::SecondChance => "second_chance",
            Stat::_Count => "count",
        }
    }
}
