//! Per-packet dispatch: client -> VIP, target -> client, ICMP, or not ours.
use lb_common::{
    FlowKey, FlowState, PROTO_TCP, PROTO_UDP, Stat, Target, VipAddrKey, VipMeta,
    flow::{entry_flags, ticks},
    maps::port_flags,
    vip::vip_flags,
};
use lb_ebpf::{
    frame::load,
    headers::{IPPROTO_ICMP, IPPROTO_ICMPV6, Tcp, Udp},
    parse::{Packet, parse},
};

use super::{
    TcpFlags, Verdict, clock,
    conntrack::{self, NewFlow, ReplyOf, Sets, Slot},
    encap,
    fib::{self, TooBig},
    hook::Hook,
    icmp,
    maglev::{self, FoundVip, VipLookup},
    maps::{PORTS, TARGETS, VIP_ADDRS},
    nat::{Side, translate},
    scratch::{Chain, NO_SLOT, Scratch, scratch},
    stats::{self, Dir},
    too_big,
};

/// The entry point's work. A short dispatcher over out-of-line paths
/// (BPF-to-BPF calls): each path's locals get a frame of their own, and
/// the kernel's 512 bytes of stack for a call chain are counted per chain,
/// not for every path at once. The parsed packet and its flow key live in
/// the per-CPU scratch memory that every path reads.
#[inline(always)]
pub fn handle(ctx: &impl Hook) -> Verdict {
    let Some(s) = scratch() else {
        return Verdict::pass(Stat::PassMalformed);
    };
    if let Err(e) = parse(ctx, &mut s.packet) {
        return e.into();
    }
    let p = &s.packet;
    if p.truncated {
        // Same rule as a truncated transport header: ours to drop when it
        // is addressed to a VIP, the kernel's otherwise.
        return if is_vip_addr(&p.dst, p.family()) {
            Verdict::drop(Stat::DropMalformed)
        } else {
            Verdict::pass(Stat::PassMalformed)
        };
    }
    if p.frag {
        // Only the first fragment has ports, so no fragment can be hashed
        // to its flow consistently: refuse them for VIPs, leave the rest.
        return if is_vip_addr(&p.dst, p.family()) {
            Verdict::drop(Stat::DropFragment)
        } else {
            Verdict::pass(Stat::PassNotVip)
        };
    }
    match p.proto {
        PROTO_TCP | PROTO_UDP => match Step::unpack(l4(ctx, s)) {
            Step::Done(v) => v,
            Step::Untracked => {
                let mut v = untracked(ctx, s);
                if v == Step::CHAIN {
                    v = chain(ctx, s);
                }
                let v = Verdict::unpack(v);
                if v.stat == Stat::PassNotVip && from_target_port(&s.client.key) {
                    Verdict::unpack(to_client(ctx, s))
                } else {
                    v
                }
            }
            Step::Reply => Verdict::unpack(to_client(ctx, s)),
            // `l4` never chains.
            Step::Chain => Verdict::pass(Stat::PassMalformed),
        },
        IPPROTO_ICMP if !p.v6 => Verdict::unpack(icmp::handle(ctx, &mut s.packet)),
        IPPROTO_ICMPV6 if p.v6 => Verdict::unpack(icmp::handle(ctx, &mut s.packet)),
        _ => Verdict::pass(Stat::PassNotVip),
    }
}

/// What [`l4`] leaves to do.
enum Step {
    Done(Verdict),
    /// To a VIP port without a live entry: [`untracked`].
    Untracked,
    /// From a target port: [`to_client`].
    Reply,
    /// From [`untracked`]: a second-chance chain, as `Scratch::client.chain`
    /// says: [`chain`].
    Chain,
}

impl Step {
    const UNTRACKED: u64 = u64::MAX;
    const REPLY: u64 = u64::MAX - 1;
    const CHAIN: u64 = u64::MAX - 2;

    /// As one register (see `Verdict::pack`).
    #[inline(always)]
    fn pack(self) -> u64 {
        match self {
            Step::Done(v) => v.pack(),
            Step::Untracked => Self::UNTRACKED,
            Step::Reply => Self::REPLY,
            Step::Chain => Self::CHAIN,
        }
    }

    #[inline(always)]
    fn unpack(v: u64) -> Self {
        match v {
            Self::UNTRACKED => Step::Untracked,
            Self::REPLY => Step::Reply,
            Self::CHAIN => Step::Chain,
            v => Step::Done(Verdict::unpack(v)),
        }
    }
}

#[inline(always)]
pub fn is_vip_addr(addr: &lb_common::Addr, family: u8) -> bool {
    // Built from words: a struct literal with a `[u8; 3]` pad makes LLVM
    // call an out-of-line memset. On little-endian the family is the low
    // byte of the last word, and the pad bytes are its zero high bytes.
    let words: [u32; 5] = [addr[0], addr[1], addr[2], addr[3], family as u32];
    // SAFETY: VipAddrKey is repr(C), 20 bytes of integers, any bits valid.
    let key: VipAddrKey = unsafe { core::mem::transmute(words) };
    // SAFETY: the value is only tested for presence.
    unsafe { VIP_ADDRS.get(key) }.is_some()
}

#[inline(always)]
fn port_flags(port: u16) -> u32 {
    PORTS.get(u16::from_be(port) as u32).copied().unwrap_or(0)
}

#[inline(always)]
fn from_target_port(key: &FlowKey) -> bool {
    port_flags(key.sport) & port_flags::TARGET != 0
}

/// TCP or UDP: the flow key, and a client packet of a live flow through
/// to its target (the hot path, with no `VIPS` lookup); the rest is left
/// to the other paths. Returns a packed [`Step`].
#[inline(never)]
fn l4(ctx: &impl Hook, s: &mut Scratch) -> u64 {
    let p = &mut s.packet;
    // The whole header must be there: its checksum is rewritten.
    let complete = if p.proto == PROTO_TCP {
        load::<Tcp>(ctx, p.l4).is_some()
    } else {
        load::<Udp>(ctx, p.l4).is_some()
    };
    let Some([sport, dport]) = load::<[u16; 2]>(ctx, p.l4).filter(|_| complete) else {
        let v = if is_vip_addr(&p.dst, p.family()) {
            Verdict::drop(Stat::DropMalformed)
        } else {
            Verdict::pass(Stat::PassMalformed)
        };
        return Step::Done(v).pack();
    };
    // Neither to a VIP port nor from a target's: the kernel's, before a
    // byte of the key is written (most of a host's traffic, every packet).
    let to_vip = port_flags(dport) & port_flags::VIP != 0;
    if !to_vip && port_flags(sport) & port_flags::TARGET == 0 {
        return Step::Done(Verdict::pass(Stat::PassNotVip)).pack();
    }
    let c = &mut s.client;
    c.key = FlowKey {
        src: p.src,
        dst: p.dst,
        sport,
        dport,
        proto: p.proto,
        family: p.family(),
        _pad: [0; 2],
    };
    if !to_vip {
        return Step::Reply.pack();
    }
    c.tcp = TcpFlags::of(ctx, p);
    c.now = clock::now_ns();
    c.vip_lookup = if c.tcp.opens() {
        maglev::warm(&c.key, &mut c.vip)
    } else {
        VipLookup::NotDone
    };
    let sets = Sets::of(&c.key);
    c.hash = sets.hash;
    // An established flow carries all it needs: no `VIPS` lookup.
    let mut known = conntrack::find(&c.key, &sets);
    c.known = known.as_ref().map_or(NO_SLOT, |k| k.index);
    if p.ttl > 1
        && let Some(slot) = &mut known
        && let Some(t) = tracked(slot, &sets, &c.tcp, ticks(c.now))
    {
        return Step::Done(to_target(ctx, p, &c.key, slot, t, &c.tcp, c.now)).pack();
    }
    Step::Untracked.pack()
}

/// Client -> VIP port without a live entry: a new flow if the destination
/// is a VIP (`pass_not_vip` otherwise, for the caller to look further), or
/// a second-chance chain. Returns a packed [`Step`]: `Done` or `Chain`.
#[inline(never)]
fn untracked(ctx: &impl Hook, s: &mut Scratch) -> u64 {
    let (p, c) = (&mut s.packet, &mut s.client);
    if c.vip_lookup == VipLookup::NotDone {
        c.vip_lookup = maglev::vip(&c.key, &mut c.vip);
    }
    if c.vip_lookup != VipLookup::Found {
        return Step::Done(Verdict::pass(Stat::PassNotVip)).pack();
    }
    let meta = &c.vip.meta;
    let on = vip_flags::SECOND_CHANCE | vip_flags::PREVIOUS_RING;
    if meta.flags & on == on && c.key.proto == PROTO_TCP && !c.tcp.syn {
        let pair = second_chance(meta, c.vip.ring);
        if pair != NO_CHAIN {
            c.chain = Chain {
                vip_id: meta.vip_id,
                target: (pair >> 32) as u32,
                previous: pair as u32,
            };
            return Step::Chain.pack();
        }
    }
    let sets = Sets::with_hash(c.hash);
    let known = (c.known != NO_SLOT).then_some(c.known);
    let target = maglev::select_at(c.vip.ring);
    let v = new_flow(ctx, p, &c.key, &sets, known, &c.vip, target, &c.tcp, c.now);
    Step::Done(v).pack()
}

/// [`second_chance`]: no chain.
const NO_CHAIN: u64 = u64::MAX;

/// dsr's second chance (docs/datapath.md, "Second chance"): a TCP packet
/// that is not a SYN and has no entry here (the caller checked, and that
/// the VIP has `SECOND_CHANCE` and `PREVIOUS_RING`) belongs to a
/// connection that began elsewhere (another balancer host, before the
/// routers moved it here) or before the table changed. When the live table
/// and the one before the last switch give it different targets, it goes
/// to both, chained ([`chain`]). Not pinned: an entry for the live target
/// alone would cut the second chance from the next packets, and both
/// targets' sockets, which only they know, decide. A SYN opens a
/// connection on the live target, never chained. `ring`: the flow's entry
/// in the live ring (`maglev::FoundVip`). Returns the live and the
/// previous target ids (high and low half), or [`NO_CHAIN`]. Out of line:
/// `untracked`'s frame stays as small as before (the 512 bytes of stack
/// are counted per call chain).
#[inline(never)]
fn second_chance(vip: &VipMeta, ring: u32) -> u64 {
    let Some((target, _)) = maglev::select_at(ring) else {
        return NO_CHAIN;
    };
    match maglev::previous_at(vip, ring) {
        Some((previous, _)) if previous != target => (target as u64) << 32 | previous as u64,
        _ => NO_CHAIN,
    }
}

/// Sends a second-chance chain: wrapped twice, to the live target and
/// inside to the previous one. Counted as the live target's traffic (no
/// new flow: it is not one). Returns a packed [`Verdict`].
#[inline(never)]
fn chain(ctx: &impl Hook, s: &mut Scratch) -> u64 {
    let (p, c) = (&mut s.packet, &s.client);
    let ch = c.chain;
    let (Some(t), Some(prev)) = (TARGETS.get(ch.target), TARGETS.get(ch.previous)) else {
        return Verdict::drop(Stat::DropNoTarget).pack();
    };
    if p.ttl <= 1 {
        return Verdict::pass(Stat::PassTtlExceeded).pack();
    }
    let len = p.len;
    if encap::wrap_chain(ctx, p, &c.key, &t.addr, &prev.addr).is_none() {
        return Verdict::drop(Stat::DropMalformed).pack();
    }
    stats::traffic(ch.vip_id, ch.target, Dir::In, len, false);
    let v = match fib::to_target(ctx, p, ch.target, c.now) {
        Ok(v) if v.stat == Stat::Forwarded => Verdict {
            action: v.action,
            stat: Stat::SecondChance,
        },
        Ok(v) => v,
        Err(TooBig(mtu)) => too_big::reply_chained(ctx, p, &c.key, mtu),
    };
    v.pack()
}

/// The target of a tracked flow's client packet, if the entry still holds
/// it. A SYN on a confirmed flow that is closing (FINs both ways, or a RST)
/// opens a new connection on a reused 5-tuple: that is a new flow. On one
/// that is not, it goes to the flow's target and changes nothing: a stray
/// or spoofed SYN must not move a live connection (the target answers it
/// with a challenge ACK, RFC 5961).
#[inline(always)]
fn tracked(slot: &Slot, sets: &Sets, tcp: &TcpFlags, now: u32) -> Option<&'static Target> {
    if !conntrack::live(slot, sets, now) {
        return None;
    }
    let e = slot.get();
    if tcp.opens() && e.state == FlowState::Established as u8 && e.closing() {
        return None;
    }
    conntrack::target_of(e)
}

/// Client -> VIP of a tracked flow: note the packet, send it on in the
/// flow's mode.
#[inline(always)]
fn to_target(
    ctx: &impl Hook,
    p: &mut Packet,
    key: &FlowKey,
    slot: &mut Slot,
    t: &Target,
    tcp: &TcpFlags,
    now: u64,
) -> Verdict {
    let (vip_id, target_id) = (slot.get().vip_id as u32, slot.get().target_id as u32);
    let dsr = (slot.get().flags & entry_flags::DSR != 0).then(|| slot.get().outer_hash());
    if conntrack::client_packet(slot, tcp, ticks(now)) {
        stats::flows(vip_id, |c| c.confirmed += 1);
    }
    send(
        ctx,
        p,
        key,
        vip_id,
        target_id,
        t,
        Mode {
            new_flow: false,
            dsr,
        },
        now,
    )
}

/// Client -> VIP without a live entry, whose Maglev `target` is known:
/// record the flow as unconfirmed (in its own stale slot, a free one, or
/// one of an older unconfirmed flow), send; no slot: drop (nat), or send
/// untracked (dsr).
#[allow(
    clippy::too_many_arguments,
    reason = "inlined hot path; a struct would be copied"
)]
#[inline(always)]
fn new_flow(
    ctx: &impl Hook,
    p: &mut Packet,
    key: &FlowKey,
    sets: &Sets,
    known: Option<u32>,
    found: &FoundVip,
    target: Option<(u32, &'static Target)>,
    tcp: &TcpFlags,
    now: u64,
) -> Verdict {
    if p.ttl <= 1 {
        return Verdict::pass(Stat::PassTtlExceeded);
    }
    let Some((id, t)) = target else {
        return Verdict::drop(Stat::DropNoTarget);
    };
    let vip = &found.meta;
    let tick = ticks(now);
    let vacancy = match known {
        Some(index) => Some(conntrack::Vacancy {
            index,
            displaces: None,
        }),
        None => conntrack::vacancy(sets, tick),
    };
    if tcp.opens() {
        stats::flows(vip.vip_id, |c| c.syns += 1);
    }
    let dsr = (vip.flags & vip_flags::DSR != 0).then_some(found.flow_hash);
    match vacancy {
        Some(v) => {
            let state = if tcp.opens() {
                FlowState::Syn
            } else {
                FlowState::New
            };
            let entry = NewFlow {
                target_id: id,
                target_gen: t.generation,
                vip_id: vip.vip_id,
                idle_timeout_s: vip.idle_timeout_s,
                state,
                flags: if tcp.fin { entry_flags::FIN } else { 0 }
                    | if dsr.is_some() { entry_flags::DSR } else { 0 },
                aux: dsr.unwrap_or(0),
            };
            conntrack::insert(v.index, key, sets, &entry, tick);
            if let Some(victim) = v.displaces {
                stats::flows(victim as u32, |c| c.displaced += 1);
            }
            stats::flows(vip.vip_id, |c| c.embryonic += 1);
        }
        None => {
            stats::flows(vip.vip_id, |c| c.untracked += 1);
            // nat: forwarded untracked, its replies could not be
            // translated back (and a hashed guess would take health-check
            // replies and direct connections of the target too): the
            // client's retransmission finds a slot once one frees up.
            // dsr: no reply passes here, and each later packet takes the
            // same Maglev choice while the ring holds.
            if dsr.is_none() {
                return Verdict::drop(Stat::DropTableFull);
            }
        }
    }
    let mode = Mode {
        new_flow: true,
        dsr,
    };
    send(ctx, p, key, vip.vip_id, id, t, mode, now)
}

/// How [`send`] sends and counts a packet.
#[derive(Clone, Copy)]
struct Mode {
    /// The flow's first packet (counted as a new flow).
    new_flow: bool,
    /// dsr: encapsulate, from the outer source of the flow with this
    /// `flow_hash`; nat (`None`): translate.
    dsr: Option<u32>,
}

/// Client -> VIP, target known: translate (nat) or encapsulate (dsr),
/// count, send.
#[allow(
    clippy::too_many_arguments,
    reason = "inlined hot path; a struct would be copied"
)]
#[inline(always)]
fn send(
    ctx: &impl Hook,
    p: &mut Packet,
    key: &FlowKey,
    vip_id: u32,
    target_id: u32,
    t: &Target,
    mode: Mode,
    now: u64,
) -> Verdict {
    // Counted as the client sent it: the same bytes in either mode.
    let len = p.len;
    let done = match mode.dsr {
        Some(h) => encap::wrap(ctx, p, h, key.family, &t.addr),
        None => translate(ctx, p, Side::Destination, &t.addr, t.port),
    };
    if done.is_none() {
        return Verdict::drop(Stat::DropMalformed);
    }
    stats::traffic(vip_id, target_id, Dir::In, len, mode.new_flow);
    match fib::to_target(ctx, p, target_id, now) {
        Ok(v) => v,
        // tc cannot generate the answer: the kernel's own (see `hook`).
        Err(TooBig(_)) if !has_resize(ctx) => Verdict::pass(Stat::PassMtu),
        Err(TooBig(mtu)) if mode.dsr.is_some() => too_big::reply_wrapped(ctx, p, key, mtu),
        Err(TooBig(mtu)) => too_big::reply(ctx, p, key, mtu),
    }
}

/// Target -> client: if it is a reply of a tracked flow, put the VIP back.
/// Returns a packed [`Verdict`].
#[inline(never)]
fn to_client(ctx: &impl Hook, s: &mut Scratch) -> u64 {
    reply_path(ctx, &mut s.packet, &s.client.key).pack()
}

#[inline(always)]
fn reply_path(ctx: &impl Hook, p: &mut Packet, reply: &FlowKey) -> Verdict {
    let now = clock::now_ns();
    let (mut slot, vip) = match conntrack::find_by_reply(reply, ticks(now)) {
        ReplyOf::Flow(slot, vip) => (slot, vip),
        ReplyOf::Untracked => return Verdict::pass(Stat::PassReplyUntracked),
        ReplyOf::NotTarget => return Verdict::pass(Stat::PassNotVip),
    };
    let (vip_id, target_id) = (slot.get().vip_id as u32, slot.get().target_id as u32);
    // Before the flow's state moves: a forged reply must not confirm it.
    if !fib::reply_on_route(ctx, p, &reply.src, target_id, now) {
        return Verdict::pass(Stat::PassReplyInterface);
    }
    if p.ttl <= 1 {
        return Verdict::pass(Stat::PassTtlExceeded);
    }
    conntrack::target_packet(&mut slot, &TcpFlags::of(ctx, p), ticks(now));
    if translate(ctx, p, Side::Source, &vip.addr, vip.port).is_none() {
        return Verdict::drop(Stat::DropMalformed);
    }
    stats::traffic(vip_id, target_id, Dir::Out, p.len, false);
    fib::route(ctx, p, Stat::Returned, now)
}

/// Whether this hook can answer a packet that is too big (`Hook::RESIZES`).
#[inline(always)]
fn has_resize<C: Hook>(_ctx: &C) -> bool {
    C::RESIZES
}
