//! Incremental Internet checksum updates (RFC 1624).
//!
//! A `Delta` accumulates `~old + new` over the 16-bit words that change and is
//! applied to every checksum that covers them (IP header, TCP/UDP with its
//! pseudo-header, ICMP). The one's-complement sum is byte-order independent,
//! so raw values as loaded from the packet are used without swapping.

#[derive(Clone, Copy, Default)]
pub struct Delta(u64);

impl Delta {
    #[inline(always)]
    pub fn new() -> Self {
        Self(0)
    }

    #[inline(always)]
    pub fn word(&mut self, old: u16, new: u16) {
        self.0 += (!old) as u64 + new as u64;
    }

    #[inline(always)]
    pub fn word32(&mut self, old: u32, new: u32) {
        self.0 += (!old) as u64 + new as u64;
    }

    #[inline(always)]
    pub fn addr(&mut self, old: &[u32; 4], new: &[u32; 4], v6: bool) {
        self.word32(old[0], new[0]);
        if v6 {
            self.word32(old[1], new[1]);
            self.word32(old[2], new[2]);
            self.word32(old[3], new[3]);
        }
    }

    #[inline(always)]
    pub fn merge(&mut self, other: Delta) {
        self.0 += other.0;
    }

    /// The difference folded to 32 bits (a `__wsum`, as the kernel's
    /// checksum helpers take it).
    #[inline(always)]
    pub fn sum32(self) -> u32 {
        let s = (self.0 & 0xffff_ffff) + (self.0 >> 32);
        ((s & 0xffff_ffff) + (s >> 32)) as u32
    }
}

#[inline(always)]
fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The checksum field for a one's-complement `sum` of 16-bit words (as
/// `bpf_csum_diff` returns it): folded to 16 bits and complemented.
#[inline(always)]
pub fn finish(sum: u64) -> u16 {
    !fold(sum)
}

/// New value of a checksum field after the changes in `d`.
#[inline(always)]
pub fn apply(check: u16, d: Delta) -> u16 {
    !fold((!check) as u64 + d.0)
}
