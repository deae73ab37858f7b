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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: [u8; 4], sport: u16) -> FlowKey {
        FlowKey {
            src: [u32::from_ne_bytes(src), 0, 0, 0],
            dst: [u32::from_ne_bytes([10, 200, 0, 100]), 0, 0, 0],
            sport: sport.to_be(),
            dport: 80u16.to_be(),
            proto: crate::PROTO_TCP,
            family: crate::FAMILY_V4,
            _pad: [0; 2],
        }
    }

    /// Pinned values: changing the hash changes which target every host
    /// picks, so it must be a deliberate, coordinated change.
    #[test]
    fn hash_values_are_stable() {
        let k = key([10, 200, 1, 2], 40000);
        assert_eq!(flow_hash(&k), PINNED_FLOW);
        assert_eq!(source_hash(&k), PINNED_SOURCE);
    }

    #[test]
    fn source_hash_ignores_ports_flow_hash_does_not() {
        let (a, b) = (key([10, 200, 1, 2], 40000), key([10, 200, 1, 2], 40001));
        assert_eq!(source_hash(&a), source_hash(&b));
        assert_ne!(flow_hash(&a), flow_hash(&b));
    }

    #[test]
    fn flow_hash_spreads_source_ports() {
        // 60000 consecutive ports into 7 buckets: each within 3% of even.
        let mut buckets = [0u32; 7];
        for port in 1000..61000u16 {
            buckets[(flow_hash(&key([10, 200, 1, 2], port)) % 7) as usize] += 1;
        }
        let mean = 60000.0 / 7.0;
        for b in buckets {
            assert!((b as f64 - mean).abs() / mean < 0.03, "{buckets:?}");
        }
    }

    const PINNED_FLOW: u32 = 1_518_333_711;
    const PINNED_SOURCE: u32 = 1_536_256_657;
}
