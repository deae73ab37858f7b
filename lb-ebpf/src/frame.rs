//! The one bounds-checked way to touch packet bytes.
//!
//! Packet code reads a header with [`load`] (a copy; LLVM keeps only the
//! fields used), writes one with [`store`], or changes fields in place with
//! [`update`]. Each checks `offset + size_of::<T>()` against the frame's end
//! right before the access, which is also the check the verifier needs to
//! see. They are the only `unsafe` packet accesses of the crate.
//!
//! Alignment: headers are `#[repr(C)]` structs of u8/u16/u32 fields
//! (`headers.rs`), read at their natural alignment relative to an IP header
//! that XDP and tc place on a 2-byte boundary. The 4-byte fields can then be
//! misaligned by 2; the BPF JIT on x86-64 and arm64 performs such loads and
//! stores (the verifier allows them on packet pointers where the
//! architecture has efficient unaligned access), which is what lets a
//! 4-byte address be one load instead of four byte loads.
use aya_ebpf::{
    EbpfContext,
    helpers::bpf_csum_diff,
    programs::{TcContext, XdpContext},
};

/// A packet buffer a program runs on: an XDP frame or a socket buffer (tc).
pub trait Frame: EbpfContext {
    /// Address of the first byte (the Ethernet header).
    fn start(&self) -> usize;
    /// Address one past the last byte.
    fn end(&self) -> usize;
    /// Interface the packet arrived on.
    fn ingress_if(&self) -> u32;

    /// Frame length in bytes: what [`load`] and [`store`] reach.
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.end() - self.start()
    }

    /// The whole packet's length in bytes. A frame's; a socket buffer's
    /// may be larger than its directly readable part (paged data, a
    /// segmentation-offload buffer).
    #[inline(always)]
    fn packet_len(&self) -> usize {
        self.frame_len()
    }
}

impl Frame for XdpContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
    #[inline(always)]
    fn ingress_if(&self) -> u32 {
        // SAFETY: `ctx` is the kernel's `xdp_md` for this run, valid for
        // the program's whole invocation.
        unsafe { (*self.ctx).ingress_ifindex }
    }
}

impl Frame for TcContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
    #[inline(always)]
    fn ingress_if(&self) -> u32 {
        // SAFETY: `skb` is the kernel's `__sk_buff` for this run, valid for
        // the program's whole invocation.
        unsafe { (*self.skb.skb).ingress_ifindex }
    }
    #[inline(always)]
    fn packet_len(&self) -> usize {
        self.len() as usize
    }
}

/// Largest header offset read. Offsets that come from memory (a parsed
/// packet kept in a map) are unknown to the verifier until bounded; no
/// header this crate parses lies further in (four IPv6 extension headers of
/// the largest size end before 8.3 KiB).
pub const MAX_OFFSET: usize = 0x3fff;

/// Pointer to a `T` at `offset`, or `None` when the frame is too short.
#[inline(always)]
fn ptr_at<T>(f: &impl Frame, offset: usize) -> Option<*mut T> {
    if offset > MAX_OFFSET {
        return None;
    }
    let start = f.start();
    if start + offset + core::mem::size_of::<T>() > f.end() {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// A copy of the `T` at `offset`.
#[inline(always)]
pub fn load<T: Copy>(f: &impl Frame, offset: usize) -> Option<T> {
    let p = ptr_at::<T>(f, offset)?;
    // SAFETY: `ptr_at` checked that the `T` lies inside the frame; `T` is
    // plain data (header structs, integers, byte arrays), so any bytes are a
    // valid value; alignment as in the module docs.
    Some(unsafe { p.read() })
}

/// Writes `value` at `offset`.
#[inline(always)]
pub fn store<T>(f: &impl Frame, offset: usize, value: T) -> Option<()> {
    let p = ptr_at::<T>(f, offset)?;
    // SAFETY: inside the frame (checked by `ptr_at`), which the program may
    // write; alignment as in the module docs.
    unsafe { p.write(value) };
    Some(())
}

/// Runs `op` on the `T` at `offset` in place and returns its result.
///
/// The reference lives only for the call; `op` must not reach the same
/// bytes through the frame again (nothing in this crate nests `update`).
#[inline(always)]
pub fn update<T, R>(f: &impl Frame, offset: usize, op: impl FnOnce(&mut T) -> R) -> Option<R> {
    let p = ptr_at::<T>(f, offset)?;
    // SAFETY: inside the frame (checked by `ptr_at`), plain data, and no
    // other reference to these bytes exists while `op` runs (see above).
    Some(op(unsafe { &mut *p }))
}

/// One's-complement sum (`bpf_csum_diff`) of the `N` bytes at `offset`
/// added to `seed`; `N` must be a multiple of 4.
#[inline(always)]
pub fn sum<const N: usize>(f: &impl Frame, offset: usize, seed: u32) -> Option<u32> {
    let p = ptr_at::<[u8; N]>(f, offset)?;
    // SAFETY: the `N` bytes lie inside the frame (checked by `ptr_at`); the
    // helper only reads them.
    let s = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p as *mut u32, N as u32, seed) };
    (s >= 0).then_some(s as u32)
}

/// One's-complement sum of a value on the stack (a pseudo-header) added to
/// `seed`; the size of `T` must be a multiple of 4.
#[inline(always)]
pub fn sum_of<T>(value: &mut T, seed: u32) -> u32 {
    // SAFETY: `value` is a live stack object of `size_of::<T>()` bytes; the
    // helper only reads them.
    let s = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            value as *mut T as *mut u32,
            core::mem::size_of::<T>() as u32,
            seed,
        )
    };
    s as u32
}
