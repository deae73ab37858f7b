//! The one bounds-checked way to touch packet bytes.
use aya_ebpf::programs::XdpContext;

/// Pointer to a `T` at `offset` from the start of the frame, or `None` when
/// the frame is too short. Every packet access in this program goes through
/// here, so the verifier sees a bounds check before each one.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}
