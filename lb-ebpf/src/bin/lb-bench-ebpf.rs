//! Benchmark harness programs (never loaded by the daemon).
//!
//! `BPF_PROG_TEST_RUN` with `repeat` runs a program again and again on the
//! same buffer, so a program that rewrites the packet would see its own
//! output from the second iteration on. `bench_wrap` restores the original
//! packet before every iteration (and, when asked, varies its 5-tuple:
//! unique every time for the new-flow cases, or cycling through
//! `vary_mask + 1` of them), then tail-calls the program under test from
//! `JUMP[0]`.
//! Its own cost is measured by putting `bench_tx` into the same slot.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, xdp_action},
    btf_maps::{Array, PerCpuArray, ProgramArray},
    macros::{btf_map, xdp},
    programs::XdpContext,
};

/// Original packet: length then bytes.
#[repr(C)]
pub struct BenchPacket {
    pub len: u32,
    /// Offset of a 16-bit source port to vary per iteration, or 0 for none.
    pub vary_port_off: u32,
    /// Offset of a 32-bit source address whose low bits also vary, or 0.
    pub vary_addr_off: u32,
    /// The sequence is taken modulo `vary_mask + 1` (0: not at all), so the
    /// frames cycle through that many 5-tuples.
    pub vary_mask: u32,
    /// Offset of the TCP/UDP checksum to keep right as the port and address
    /// vary, or 0 (the receiver's kernel drops a wrong one).
    pub l4_csum_off: u32,
    /// Offset of the IPv4 header checksum to keep right as the address
    /// varies, or 0.
    pub ip_csum_off: u32,
    /// The sequence is multiplied by this before the mask (0 or 1: not):
    /// an odd stride visits the same tuples in another order, one that
    /// follows neither the order they were entered in nor memory.
    pub vary_stride: u32,
    pub bytes: [u8; 256],
}

#[btf_map]
static PACKET: Array<BenchPacket, 1> = Array::new();

#[btf_map]
static SEQ: PerCpuArray<u64, 1> = PerCpuArray::new();

#[btf_map]
static JUMP: ProgramArray<1> = ProgramArray::new();

/// Packets counted by `bench_sink` (index 0), per CPU.
#[btf_map]
static SINK: PerCpuArray<u64, 1> = PerCpuArray::new();

/// Where a trivial forwarder sends a frame: egress ifindex, then the
/// destination and source MACs to write.
#[repr(C)]
pub struct RedirectTo {
    pub ifindex: u32,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
}

/// Targets the spreading forwarders use: the e2e lab's three (mirrored by
/// `SPREAD` in lb-bench's e2e `forwarders`). The one-target forwarders use
/// entry 0 only.
const SPREAD: u32 = 3;

#[btf_map]
static REDIRECT: Array<RedirectTo, { SPREAD as usize }> = Array::new();

/// Offset of the source port in the e2e frames: Ethernet, then IPv4 without
/// options, then UDP or TCP (the generator varies the same bytes:
/// `Vary::IPV4_SPORT` in lb-tests' `trafficgen`).
const SPORT_OFF: usize = 34;

/// The entry of `REDIRECT` (and `ENCAP`) for this frame in a spreading
/// forwarder: the source port modulo [`SPREAD`], so that consecutive flows
/// go to the three targets in turn, as a balancer's hash spreads them.
/// The forwarder then pays what spreading costs on this path (three
/// egress devices, their bulk queues and their peers' NAPI polls), with
/// no parsing and no per-flow state.
#[inline(always)]
fn spread(ctx: &XdpContext) -> u32 {
    be16_at(ctx, SPORT_OFF).map_or(0, |port| port as u32 % SPREAD)
}

/// The big-endian 16-bit number at `off` in the frame.
#[inline(always)]
fn be16_at(ctx: &XdpContext, off: usize) -> Option<u16> {
    let start = ctx.data();
    if start + off + 2 > ctx.data_end() {
        return None;
    }
    // SAFETY: bounds-checked above.
    Some(u16::from_be(unsafe {
        core::ptr::read_unaligned((start + off) as *const u16)
    }))
}

/// MAC rewrite and redirect to `REDIRECT[i]`.
#[inline(always)]
fn redirect(ctx: &XdpContext, i: u32) -> u32 {
    let Some(to) = REDIRECT.get(i) else {
        return xdp_action::XDP_ABORTED;
    };
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return xdp_action::XDP_DROP;
    }
    let eth = unsafe { &mut *(start as *mut [u8; 12]) };
    eth[..6].copy_from_slice(&to.dst_mac);
    eth[6..].copy_from_slice(&to.src_mac);
    unsafe { aya_ebpf::helpers::bpf_redirect(to.ifindex, 0) as u32 }
}

/// End-to-end baseline: the least an XDP forwarder can do (rewrite MACs,
/// redirect), with no parsing, lookups or NAT; everything to one target.
#[xdp]
pub fn bench_redirect(ctx: XdpContext) -> u32 {
    redirect(&ctx, 0)
}

/// [`bench_redirect`] spreading flows over the [`SPREAD`] targets: the
/// floor of a forwarder that balances.
#[xdp]
pub fn bench_redirect_spread(ctx: XdpContext) -> u32 {
    redirect(&ctx, spread(&ctx))
}

/// Offset of the source address in the e2e frames, whose low 16 bits the
/// generator varies beyond 2^16 flows (`Vary::IPV4_SADDR` in lb-tests'
/// `trafficgen`).
const SADDR_OFF: usize = 26;

/// Per-flow state of `bench_redirect_spread_state`: 64-byte lines, each
/// one flow's entry or 2 or 4 flows' (`StateShape::per_line_bits`), never
/// written (all zeros). Entries set at load to the lines the run's flows
/// need (1 in the object, so that the other programs' loads do not
/// allocate a table). Memory-mappable, as lb's `FLOWS`: the lines start on
/// a page, so each fills one cache line, in memory from the same
/// allocator.
#[btf_map]
static STATE: Array<[u64; 8], 1, { BPF_F_MMAPABLE as usize }> = Array::new();

/// Where `bench_redirect_spread_state` reads, written at load: `mask` is
/// the flows - 1 (a power of two, 2^k), `half_bits` k / 2 rounded up, and
/// `per_line_bits` the log2 of how many flows' entries share a line of
/// `STATE` (0, 1 or 2: 64-, 32- or 16-byte entries).
#[repr(C)]
pub struct StateShape {
    pub mask: u32,
    pub half_bits: u32,
    pub per_line_bits: u32,
}

#[btf_map]
static STATE_SHAPE: Array<StateShape, 1> = Array::new();

/// The frame's entry in `STATE`: its flow's number as the generator counts
/// (source port, and the address's low 16 bits above it), mixed by two
/// rounds of multiply (by an odd constant) and xor-shift modulo the
/// number of flows. Each step is a bijection of the k-bit numbers, so
/// every flow has an entry of its own; the entries follow no stride a
/// prefetcher could learn, as a hash table's do. Returns the entry's
/// first word.
#[inline(always)]
fn state_entry(ctx: &XdpContext) -> Option<*const u64> {
    let (addr, port) = (be16_at(ctx, SADDR_OFF + 2)?, be16_at(ctx, SPORT_OFF)?);
    let shape = STATE_SHAPE.get(0)?;
    let mut x = (addr as u32) << 16 | port as u32;
    for odd in [0x9e37_79b1u32, 0x85eb_ca6b] {
        x = x.wrapping_mul(odd) & shape.mask;
        x ^= x >> shape.half_bits;
    }
    let bits = shape.per_line_bits & 3;
    let line = STATE.get_ptr(x >> bits)?;
    // The entry's byte offset in its line: the flow's low `bits` bits
    // times the entry size (64 >> bits), masked so the verifier sees it
    // inside the line.
    let offset = (x << (6 - bits)) & 0x38;
    // SAFETY: `offset` < 64, inside the 64-byte line.
    Some(unsafe { (line as *const u8).add(offset as usize) } as *const u64)
}

/// [`bench_redirect_spread`] that also reads its flow's entry of per-flow
/// state ([`STATE`]) and depends on what it read (the word is 0, which the
/// program cannot know), as a balancer's lookup does: the least any
/// forwarder that keeps entries of that size per flow pays for them (one
/// entry, a table with no room to spare, no key compared, nothing
/// written).
#[xdp]
pub fn bench_redirect_spread_state(ctx: XdpContext) -> u32 {
    let Some(entry) = state_entry(&ctx) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: a word of `STATE`, valid for the run; volatile, so the load
    // is issued and waited for.
    let word = unsafe { core::ptr::read_volatile(entry) };
    redirect(&ctx, spread(&ctx).wrapping_add(word as u32))
}

/// Length of the outer IPv4 header `bench_encap` puts on.
const OUTER_LEN: usize = 20;
/// Ethernet header without tags.
const ETH_LEN: usize = 14;

/// The outer IPv4 header `bench_encap` writes, whole and final (length and
/// checksum included): every frame of a run has the same length.
#[repr(C)]
pub struct OuterHeader {
    pub bytes: [u8; OUTER_LEN],
}

/// One outer header per entry of `REDIRECT` (its target's address).
#[btf_map]
static ENCAP: Array<OuterHeader, { SPREAD as usize }> = Array::new();

/// What [`bench_redirect`] does plus the frame surgery every
/// encapsulating forwarder pays (`bpf_xdp_adjust_head` and writing an
/// Ethernet and an outer IPv4 header), with no parsing, lookups, hashing
/// or checksum arithmetic, to entry `i`. The frame must be untagged IPv4;
/// its own Ethernet header is overwritten by the outer one.
#[inline(always)]
fn encap(ctx: &XdpContext, i: u32) -> u32 {
    let (Some(to), Some(outer)) = (REDIRECT.get(i), ENCAP.get(i)) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: the helper only moves the frame's start; the access below is
    // checked against the new bounds.
    if unsafe { aya_ebpf::helpers::bpf_xdp_adjust_head(ctx.ctx, -(OUTER_LEN as i32)) } != 0 {
        return xdp_action::XDP_DROP;
    }
    let start = ctx.data();
    if start + ETH_LEN + OUTER_LEN > ctx.data_end() {
        return xdp_action::XDP_DROP;
    }
    // SAFETY: bounds-checked above.
    let head = unsafe { &mut *(start as *mut [u8; ETH_LEN + OUTER_LEN]) };
    head[..6].copy_from_slice(&to.dst_mac);
    head[6..12].copy_from_slice(&to.src_mac);
    head[12..ETH_LEN].copy_from_slice(&0x0800u16.to_be_bytes());
    head[ETH_LEN..].copy_from_slice(&outer.bytes);
    unsafe { aya_ebpf::helpers::bpf_redirect(to.ifindex, 0) as u32 }
}

/// End-to-end baseline of dsr: [`encap`] to one target.
#[xdp]
pub fn bench_encap(ctx: XdpContext) -> u32 {
    encap(&ctx, 0)
}

/// [`bench_encap`] spreading flows over the [`SPREAD`] targets (the
/// target is chosen before the outer header moves the port).
#[xdp]
pub fn bench_encap_spread(ctx: XdpContext) -> u32 {
    encap(&ctx, spread(&ctx))
}

/// End-to-end sink on the target side: count and drop.
#[xdp]
pub fn bench_sink(_ctx: XdpContext) -> u32 {
    if let Some(n) = SINK.get_ptr_mut(0) {
        unsafe { *n += 1 };
    }
    xdp_action::XDP_DROP
}

#[xdp]
pub fn bench_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub fn bench_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

#[inline(always)]
fn restore(ctx: &XdpContext) -> Option<()> {
    let pkt = PACKET.get(0)?;
    // A program that grew the frame at its front (dsr's outer header) left
    // it longer than the packet: give those bytes back first.
    let grown = (ctx.data_end() - ctx.data()).saturating_sub(pkt.len as usize);
    // SAFETY: the helper only moves the frame's start; every access below
    // is checked against the new bounds.
    if grown > 0 && unsafe { aya_ebpf::helpers::bpf_xdp_adjust_head(ctx.ctx, grown as i32) } != 0 {
        return None;
    }
    let start = ctx.data();
    let end = ctx.data_end();
    // Copy in 8-byte words; the packet and buffer sizes are fixed per run.
    for i in 0..32usize {
        let off = i * 8;
        if off as u32 >= pkt.len || start + off + 8 > end {
            break;
        }
        let word = unsafe { core::ptr::read_unaligned(pkt.bytes.as_ptr().add(off) as *const u64) };
        unsafe { core::ptr::write_unaligned((start + off) as *mut u64, word) };
    }
    if pkt.vary_port_off != 0 {
        let seq = SEQ.get_ptr_mut(0)?;
        let n = unsafe {
            *seq += 1;
            *seq
        };
        let n = if pkt.vary_stride > 1 {
            n.wrapping_mul(pkt.vary_stride as u64)
        } else {
            n
        };
        let n = if pkt.vary_mask != 0 {
            n & pkt.vary_mask as u64
        } else {
            n
        };
        let p = (pkt.vary_port_off & 0xff) as usize;
        if start + p + 2 > end {
            return None;
        }
        let port = (start + p) as *mut u16;
        let new_port = (n as u16).to_be();
        // SAFETY: bounds-checked against `end` above.
        let old_port = unsafe { *port };
        unsafe { *port = new_port };
        let (mut old_addr, mut new_addr) = (0u16, 0u16);
        let a = (pkt.vary_addr_off & 0xff) as usize;
        if a != 0 {
            if start + a + 4 > end {
                return None;
            }
            // Low 16 bits of the address take the high bits of the sequence,
            // so (address, port) is unique for 2^32 iterations.
            let addr = (start + a + 2) as *mut u16;
            new_addr = ((n >> 16) as u16).to_be();
            // SAFETY: bounds-checked against `end` above.
            old_addr = unsafe { *addr };
            unsafe { *addr = new_addr };
        }
        fix_checksum(
            start,
            end,
            pkt.l4_csum_off,
            &[(old_port, new_port), (old_addr, new_addr)],
        )?;
        fix_checksum(start, end, pkt.ip_csum_off, &[(old_addr, new_addr)])?;
    }
    Some(())
}

/// Updates the 16-bit one's-complement checksum at `off` (0: none) for the
/// words that changed, incrementally (RFC 1624: HC' = ~(~HC + ~m + m')).
/// Words are summed as stored: the sum does not depend on byte order.
#[inline(always)]
fn fix_checksum<const N: usize>(
    start: usize,
    end: usize,
    off: u32,
    changes: &[(u16, u16); N],
) -> Option<()> {
    let off = (off & 0xff) as usize;
    if off == 0 {
        return Some(());
    }
    if start + off + 2 > end {
        return None;
    }
    let field = (start + off) as *mut u16;
    // SAFETY: bounds-checked against `end` above.
    let mut sum = !unsafe { *field } as u32;
    for &(old, new) in changes {
        sum += !old as u32 + new as u32;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    // SAFETY: as above.
    unsafe { *field = !(sum as u16) };
    Some(())
}

#[xdp]
pub fn bench_wrap(ctx: XdpContext) -> u32 {
    if restore(&ctx).is_none() {
        return xdp_action::XDP_ABORTED;
    }
    unsafe { JUMP.tail_call(&ctx, 0) };
    xdp_action::XDP_ABORTED
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
