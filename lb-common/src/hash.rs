//! The flow hash. It lives here, not in the eBPF crate, because it is part of
//! the contract between hosts: every load balancer with the same config must
//! pick the same target for the same flow (ECMP fail-over, dsr), and tests in
//! user space predict the data path's choices with it. No per-host seed.

use crate::FlowKey;

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

#[inline(always)]
fn mix(h: u32, k: u32) -> u32 {
    let k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn finish(mut h: u32, len: u32) -> u32 {
    h ^= len;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// MurmurHash3-style hash of the 5-tuple (as stored in a `FlowKey`, network
/// byte order), used to index a VIP's Maglev ring.
#[inline(always)]
pub fn flow_hash(k: &FlowKey) -> u32 {
    let mut h = 0;
    h = mix(h, k.src[0]);
    h = mix(h, k.src[1]);
    h = mix(h, k.src[2]);
    h = mix(h, k.src[3]);
    h = mix(h, k.dst[0]);
    h = mix(h, k.dst[1]);
    h = mix(h, k.dst[2]);
    h = mix(h, k.dst[3]);
    h = mix(h, ((k.sport as u32) << 16) | k.dport as u32);
    h = mix(h, k.proto as u32);
    finish(h, 40)
}

/// Hash of the client address alone (`stickiness = "source_ip"`).
#[inline(always)]
pub fn source_hash(k: &FlowKey) -> u32 {
    let mut h = 0;
    h = mix(h, k.src[0]);
    h = mix(h, k.src[1]);
    h = mix(h, k.src[2]);
    h = mix(h, k.src[3]);
    finish(h, 16)
}
