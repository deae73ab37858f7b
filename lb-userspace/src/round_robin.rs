//! Weighted round robin over the [`crate::routable`] view, the one rotation
//! every userspace data path uses: the L4 proxy and the UDP relay per new
//! connection or flow ([`order`], with the targets to retry), the HTTP
//! balancer per request ([`pick`]).
//!
//! The n-th pick takes slot `n mod total_weight`, and each target owns as
//! many consecutive slots as its weight, in config order (3:1 gives A A A B),
//! after dividing the weights by their greatest common divisor: equal
//! weights of 100 must alternate, not send 100 picks in a row to one target.
use std::net::SocketAddr;

use crate::routable::RoutableTarget;

/// Index into `targets` of the `n`-th pick; `None` when no target has a
/// weight.
pub fn pick_index(targets: &[RoutableTarget], n: u64) -> Option<usize> {
    let divisor = targets
        .iter()
        .map(|t| u64::from(t.weight))
        .fold(0, gcd)
        .max(1);
    let total: u64 = targets.iter().map(|t| u64::from(t.weight) / divisor).sum();
    if total == 0 {
        return None;
    }
    let slot = n % total;
    let mut acc = 0;
    targets.iter().position(|t| {
        acc += u64::from(t.weight) / divisor;
        slot < acc
    })
}

/// The target of the `n`-th pick; `None` when no target has a weight.
pub fn pick(targets: &[RoutableTarget], n: u64) -> Option<SocketAddr> {
    pick_index(targets, n).map(|i| targets[i].endpoint)
}

/// Targets to try for the `n`-th connection: the pick first, then the
/// targets after it in list order (where a failed connect goes next), each
/// once, at most `max` of them.
pub fn order(targets: &[RoutableTarget], n: u64, max: usize) -> Vec<SocketAddr> {
    let Some(first) = pick_index(targets, n) else {
        return Vec::new();
    };
    (0..targets.len())
        .map(|i| targets[(first + i) % targets.len()].endpoint)
        .take(max)
        .collect()
}

/// Greatest common divisor, to reduce weights before they become slots.
fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A target on 10.0.0.1:`port`, for the balancers' tests.
#[cfg(test)]
pub(crate) fn t(port: u16, weight: u32) -> RoutableTarget {
    RoutableTarget {
        endpoint: SocketAddr::from(([10, 0, 0, 1], port)),
        weight,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_weights() {
        let ts = [t(1, 3), t(2, 1)];
        let firsts: Vec<u16> = (0..8).map(|n| order(&ts, n, 3)[0].port()).collect();
        assert_eq!(firsts, [1, 1, 1, 2, 1, 1, 1, 2]);
        let picks: Vec<u16> = (0..8).map(|n| pick(&ts, n).unwrap().port()).collect();
        assert_eq!(picks, firsts);
    }

    #[test]
    fn equal_weights_alternate_whatever_their_scale() {
        let ts = [t(1, 100), t(2, 100)];
        let firsts: Vec<u16> = (0..4).map(|n| order(&ts, n, 3)[0].port()).collect();
        assert_eq!(firsts, [1, 2, 1, 2]);
        let ts = [t(1, 300), t(2, 100)];
        let firsts: Vec<u16> = (0..4).map(|n| order(&ts, n, 3)[0].port()).collect();
        assert_eq!(firsts, [1, 1, 1, 2]);
    }

    #[test]
    fn retries_go_to_the_following_targets() {
        let ts = [t(1, 1), t(2, 1), t(3, 1)];
        let ports: Vec<u16> = order(&ts, 1, 3).iter().map(|a| a.port()).collect();
        assert_eq!(ports, [2, 3, 1]);
        assert_eq!(order(&ts, 1, 2).len(), 2);
    }

    #[test]
    fn no_targets_no_order() {
        assert!(order(&[], 5, 3).is_empty());
        assert_eq!(pick(&[], 5), None);
        // Weight 0 everywhere: nothing takes work.
        assert!(order(&[t(1, 0), t(2, 0)], 0, 3).is_empty());
        assert_eq!(pick(&[t(1, 0)], 0), None);
    }
}
