//! Per-CPU working memory for one packet's run.
//!
//! The parsed packet, its flow key and the FIB lookup's parameter block
//! live here rather than on the stack. With only four callee-saved
//! registers, LLVM's BPF backend keeps every field of such structs in a
//! spill slot of its own (a `u8` takes eight bytes), and the kernel allows
//! 512 bytes of stack for a whole call chain: the program did not fit. In
//! map memory the fields are loaded where used. Safe to share per CPU: an
//! XDP program never runs twice at once on one CPU.
use aya_ebpf::{bindings::bpf_fib_lookup as FibParams, btf_maps::PerCpuArray, macros::btf_map};
use lb_common::FlowKey;
use lb_ebpf::parse::Packet;

use super::{
    TcpFlags,
    conntrack::Survey,
    maglev::{FoundVip, VipLookup},
};

/// What the connection-table paths know of a client packet to a VIP port.
#[repr(C)]
pub struct ClientPacket {
    pub key: FlowKey,
    pub tcp: TcpFlags,
    /// CLOCK_MONOTONIC_COARSE of this packet.
    pub now: u64,
    /// The key's table hash.
    pub hash: u32,
    /// The slot that holds the key's entry (live or stale), or `NO_SLOT`.
    pub known: u32,
    /// What `untracked` chose for a second-chance chain (see
    /// `dispatch::chain`); set only then.
    pub chain: Chain,
    /// Whether `vip` holds this packet's VIP (looked up before the
    /// connection table for a SYN: `maglev::warm`).
    pub vip_lookup: VipLookup,
    /// The VIP, when `vip_lookup` is `Found`.
    pub vip: FoundVip,
}

/// The VIP and the two targets of a second-chance chain (ids).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Chain {
    pub vip_id: u32,
    /// The live table's target: the outer header's destination.
    pub target: u32,
    /// The previous table's: the second header's.
    pub previous: u32,
}

/// `ClientPacket::known` when the key has no entry.
pub const NO_SLOT: u32 = u32::MAX;

#[repr(C)]
pub struct Scratch {
    pub packet: Packet,
    pub client: ClientPacket,
    pub fib: FibParams,
    /// A flow key under construction (a reply's candidate flows).
    pub probe: FlowKey,
    /// The 5-tuple an ICMP error quotes, turned around.
    pub icmp_key: FlowKey,
    /// A new flow's survey of its candidate sets and their spill sets
    /// (`conntrack::vacancy`):
    /// on the stack it took the new-flow path past the 512 bytes.
    pub survey: Survey,
}

/// One `Scratch` per CPU. Not pinned: it holds nothing between packets.
#[btf_map]
static SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

/// This CPU's scratch memory, taken once per run by the dispatcher.
#[inline(always)]
pub fn scratch() -> Option<&'static mut Scratch> {
    let s = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot of a per-CPU array, valid for the program's
    // run; no other run uses it meanwhile (module docs), and the dispatcher
    // takes it once.
    Some(unsafe { &mut *s })
}

/// The FIB parameter block alone, for code that runs while the dispatcher
/// holds the rest of the scratch memory.
#[inline(always)]
pub fn fib_params() -> Option<&'static mut FibParams> {
    let s = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: as in `scratch`; a reference to the `fib` field only, which
    // nothing else refers to (the dispatcher uses `packet` and `client`).
    Some(unsafe { &mut *core::ptr::addr_of_mut!((*s).fib) })
}

/// The ICMP key alone (see [`fib_params`]).
#[inline(always)]
pub fn icmp_key() -> Option<&'static mut FlowKey> {
    let s = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: as in `fib_params`, for the `icmp_key` field.
    Some(unsafe { &mut *core::ptr::addr_of_mut!((*s).icmp_key) })
}

/// The probe key alone (see [`fib_params`]).
#[inline(always)]
pub fn probe_key() -> Option<&'static mut FlowKey> {
    let s = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: as in `fib_params`, for the `probe` field.
    Some(unsafe { &mut *core::ptr::addr_of_mut!((*s).probe) })
}

/// The new-flow survey alone (see [`fib_params`]).
#[inline(always)]
pub fn survey() -> Option<&'static mut Survey> {
    let s = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: as in `fib_params`, for the `survey` field, which only
    // `conntrack::vacancy` and its loop callbacks use, one at a time.
    Some(unsafe { &mut *core::ptr::addr_of_mut!((*s).survey) })
}
