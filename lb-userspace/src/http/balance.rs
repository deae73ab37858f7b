//! Which target gets the next request: weighted round robin
//! ([`crate::round_robin`]), or the fewest
//! requests in flight per unit of weight (ALB's least outstanding requests).
use std::{
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
};

use crate::{config::http::Algorithm, round_robin, routable::RoutableTarget};

pub struct Balancer {
    algorithm: Algorithm,
    /// Requests picked so far: the round-robin position, and where the
    /// least-outstanding scan starts so ties rotate.
    next: AtomicUsize,
}

impl Balancer {
    pub fn new(algorithm: Algorithm) -> Self {
        Self {
            algorithm,
            next: AtomicUsize::new(0),
        }
    }

    /// `None` when no target may take work. `outstanding` gives a target's
    /// requests in flight.
    pub fn pick(
        &self,
        targets: &[RoutableTarget],
        outstanding: impl Fn(SocketAddr) -> usize,
    ) -> Option<SocketAddr> {
        if targets.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        match self.algorithm {
            Algorithm::RoundRobin => round_robin::pick(targets, n as u64),
            Algorithm::LeastOutstandingRequests => {
                let start = n % targets.len();
                let mut best: Option<(u64, SocketAddr)> = None;
                for t in targets.iter().cycle().skip(start).take(targets.len()) {
                    // Compare outstanding/weight without division.
                    let load =
                        outstanding(t.endpoint) as u64 * 1_000_000 / u64::from(t.weight.max(1));
                    if best.is_none_or(|(b, _)| load < b) {
                        best = Some((load, t.endpoint));
                    }
                }
                best.map(|(_, ep)| ep)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round_robin::t;

    #[test]
    fn round_robin_by_weight() {
        let b = Balancer::new(Algorithm::RoundRobin);
        let ts = [t(1, 1), t(2, 3)];
        let picks: Vec<u16> = (0..8).map(|_| b.pick(&ts, |_| 0).unwrap().port()).collect();
        assert_eq!(picks.iter().filter(|&&p| p == 2).count(), 6);
        assert_eq!(b.pick(&[], |_| 0), None);
        // Equal weights alternate whatever their scale.
        let b = Balancer::new(Algorithm::RoundRobin);
        let ts = [t(1, 100), t(2, 100)];
        let picks: Vec<u16> = (0..4).map(|_| b.pick(&ts, |_| 0).unwrap().port()).collect();
        assert_eq!(picks, [1, 2, 1, 2]);
    }

    #[test]
    fn least_outstanding() {
        let b = Balancer::new(Algorithm::LeastOutstandingRequests);
        let ts = [t(1, 1), t(2, 1), t(3, 2)];
        let busy = |a: SocketAddr| match a.port() {
            1 => 5,
            2 => 1,
            _ => 3,
        };
        assert_eq!(b.pick(&ts, busy).unwrap().port(), 2);
        let busy = |_: SocketAddr| 1;
        // Weight 2 halves the load of port 3.
        assert_eq!(b.pick(&ts, busy).unwrap().port(), 3);
    }
}
