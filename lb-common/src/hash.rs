//! The flow hash. It lives here, not in the eBPF crate, because it is part of
//! the contract between hosts: every load balancer with the same config must
//! pick the same target for the same flow (ECMP fail-over, dsr), and tests in
//! user space predict the data path's choices with it. `flow_hash` and
//! `source_hash` have no per-host seed; `table_hash` (where a flow sits in the
//! connection table) is seeded per data path, since no other host looks there.

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

/// Keyed hash of a flow key: the connection table's first candidate set.
/// Host-local (not part of the contract between hosts): the seed is random
/// per table, so nobody outside can aim many flows at one set. An IPv4 key
/// mixes only the words that can be non-zero.
#[inline(always)]
pub fn table_hash(k: &FlowKey, seed: u32) -> u32 {
    let mut h = seed;
    h = mix(h, k.src[0]);
    h = mix(h, k.dst[0]);
    if k.family != crate::FAMILY_V4 {
        h = mix(h, k.src[1]);
        h = mix(h, k.src[2]);
        h = mix(h, k.src[3]);
        h = mix(h, k.dst[1]);
        h = mix(h, k.dst[2]);
        h = mix(h, k.dst[3]);
    }
    h = mix(h, ((k.sport as u32) << 16) | k.dport as u32);
    h = mix(h, ((k.family as u32) << 8) | k.proto as u32);
    finish(h, 40)
}

/// The second candidate set's hash, derived from the first.
#[inline(always)]
pub fn second_hash(h: u32, seed2: u32) -> u32 {
    finish(h ^ seed2, 4)
}

/// A flow's tag in `FLOW_META` (lb_common::flow::SetMeta): 16 bits of a
/// remix of its table hash, so that they do not repeat the bits that chose
/// its set. Host-local, like `table_hash`.
#[inline(always)]
pub fn entry_tag(h: u32) -> u16 {
    (finish(h ^ 0x9e37_79b9, 2) >> 16) as u16
}

/// Integrity check of a connection-table entry: ties its key (through the
/// key's table hash) to the target and VIP written with it.
#[inline(always)]
pub fn entry_check(h: u32, target_id: u16, target_gen: u16, vip_id: u16) -> u32 {
    let mut c = mix(h, ((target_gen as u32) << 16) | target_id as u32);
    c = mix(c, vip_id as u32);
    // Never 0, so an all-zero (never written) slot never passes.
    finish(c, 8) | 1
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
    fn table_hash_depends_on_seed_and_every_field() {
        let k = key([10, 200, 1, 2], 40000);
        let h = table_hash(&k, 1);
        assert_ne!(h, table_hash(&k, 2));
        let mut other = k;
        other.proto = crate::PROTO_UDP;
        assert_ne!(h, table_hash(&other, 1));
        let mut other = k;
        other.dport = 81u16.to_be();
        assert_ne!(h, table_hash(&other, 1));
        let mut v6 = k;
        v6.family = crate::FAMILY_V6;
        v6.src[3] = 7;
        assert_ne!(table_hash(&v6, 1), {
            let mut w = v6;
            w.src[3] = 8;
            table_hash(&w, 1)
        });
        assert_ne!(second_hash(h, 5), second_hash(h, 6));
    }

    #[test]
    fn entry_tags_spread_within_a_set() {
        // Keys whose hashes share their low 19 bits (one set of a table of
        // 2^21 slots) still get distinct tags, nearly all of them.
        let mut tags = [0u16; 256];
        for (i, t) in tags.iter_mut().enumerate() {
            *t = entry_tag(0x5_a5a5 | ((i as u32) << 19));
        }
        tags.sort_unstable();
        let distinct = 1 + tags.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(distinct >= 250, "{distinct} distinct tags of 256");
    }

    #[test]
    fn entry_check_binds_target_and_vip() {
        let c = entry_check(42, 1, 7, 3);
        assert_ne!(c, 0);
        assert_ne!(c, entry_check(43, 1, 7, 3));
        assert_ne!(c, entry_check(42, 2, 7, 3));
        assert_ne!(c, entry_check(42, 1, 8, 3));
        assert_ne!(c, entry_check(42, 1, 7, 4));
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
