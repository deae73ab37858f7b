//! The flow table of one UDP listener: which target each client address
//! (source ip:port) is pinned to, when the flow last carried a datagram
//! either way, and whatever the relay keeps per flow (`F`: its socket and
//! reply task). No I/O here, so the rules are unit-tested alone:
//!
//! * a flow stays on its target while the target keeps flows (the
//!   [`crate::routable::Routable::keep_flows`] view: active or draining);
//!   otherwise, or once it idled past the timeout, it is removed and the
//!   next datagram of that client starts a new flow (the XDP path's "flows
//!   move on their next packet");
//! * the table holds at most `cap` flows; a new client beyond that is
//!   refused (the caller counts the drop) instead of growing without bound;
//! * removing a flow drops its `F`, which frees its socket.
use std::{
    collections::{HashMap, hash_map::Entry},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use tokio::time::Instant;

use crate::l4::counted::Activity;

/// One client's flow.
#[derive(Debug)]
pub struct Flow<F> {
    pub target: SocketAddr,
    /// Stamped by both directions; read for the idle timeout.
    pub activity: Arc<Activity>,
    pub io: F,
}

impl<F> Flow<F> {
    /// Whether nothing moved for `idle` up to `now`.
    pub fn idle(&self, now: Instant, idle: Duration) -> bool {
        now.saturating_duration_since(self.activity.last()) >= idle
    }
}

/// The flows of one listener, by client address.
#[derive(Debug)]
pub struct FlowTable<F> {
    flows: HashMap<SocketAddr, Flow<F>>,
    cap: usize,
}

impl<F> FlowTable<F> {
    /// An empty table for at most `cap` flows.
    pub fn new(cap: usize) -> Self {
        Self {
            flows: HashMap::new(),
            cap,
        }
    }

    /// A new cap: flows beyond it stay until they end, but no new one
    /// comes in until the table is below it.
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether a new flow fits.
    pub fn has_room(&self) -> bool {
        self.flows.len() < self.cap
    }

    /// The flow of `client` if it is still good for a datagram at `now`:
    /// not idle for `idle`, and on a target `keeps` accepts. A flow that is
    /// not is removed (freeing what it holds), so the caller starts a new
    /// one; `None` then, as for an unknown client. A good flow is stamped
    /// active at `now`.
    pub fn live(
        &mut self,
        client: SocketAddr,
        now: Instant,
        idle: Duration,
        keeps: impl Fn(&SocketAddr) -> bool,
    ) -> Option<&Flow<F>> {
        let stale = {
            let flow = self.flows.get(&client)?;
            flow.idle(now, idle) || !keeps(&flow.target)
        };
        if stale {
            self.flows.remove(&client);
            return None;
        }
        let flow = self.flows.get(&client)?;
        flow.activity.touch_at(now);
        Some(flow)
    }

    /// The flow of `client`, as it is.
    pub fn get(&self, client: &SocketAddr) -> Option<&Flow<F>> {
        self.flows.get(client)
    }

    /// Adds `flow` for `client` (whose old flow, if any, is replaced).
    /// `Err(flow)` when the table is full.
    pub fn insert(&mut self, client: SocketAddr, flow: Flow<F>) -> Result<&Flow<F>, Flow<F>> {
        let full = !self.has_room();
        match self.flows.entry(client) {
            Entry::Occupied(mut o) => {
                o.insert(flow);
                Ok(o.into_mut())
            }
            Entry::Vacant(_) if full => Err(flow),
            Entry::Vacant(v) => Ok(v.insert(flow)),
        }
    }

    /// Removes the flows idle for `idle` at `now`; returns how many.
    pub fn expire(&mut self, now: Instant, idle: Duration) -> usize {
        let before = self.flows.len();
        self.flows.retain(|_, f| !f.idle(now, idle));
        before - self.flows.len()
    }

    /// Removes the flows whose target `keeps` no longer accepts; returns
    /// how many.
    pub fn retain_targets(&mut self, keeps: impl Fn(&SocketAddr) -> bool) -> usize {
        let before = self.flows.len();
        self.flows.retain(|_, f| keeps(&f.target));
        before - self.flows.len()
    }

    /// Flows in the table, the number of them within `idle` at `now`, and
    /// `limit` of them (in no particular order) as (client, flow).
    pub fn sample(
        &self,
        now: Instant,
        idle: Duration,
        limit: usize,
    ) -> (usize, usize, Vec<(SocketAddr, &Flow<F>)>) {
        let active = self.flows.values().filter(|f| !f.idle(now, idle)).count();
        let sample = self
            .flows
            .iter()
            .take(limit)
            .map(|(c, f)| (*c, f))
            .collect();
        (self.flows.len(), active, sample)
    }

    /// Empties the table, handing out what the flows held.
    pub fn drain(&mut self) -> impl Iterator<Item = Flow<F>> + '_ {
        self.flows.drain().map(|(_, f)| f)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts its drops: stands for a flow's socket.
    struct Io(Arc<AtomicUsize>);

    impl Drop for Io {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn client(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn target(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 1, 0, i], 5353))
    }

    fn flow(t: SocketAddr, freed: &Arc<AtomicUsize>) -> Flow<Io> {
        Flow {
            target: t,
            activity: Activity::new(),
            io: Io(Arc::clone(freed)),
        }
    }

    const IDLE: Duration = Duration::from_secs(120);

    #[test]
    fn a_flow_sticks_to_its_target_while_it_is_kept_and_active() {
        let freed = Arc::new(AtomicUsize::new(0));
        let mut table = FlowTable::new(8);
        let start = Instant::now();
        assert!(table.live(client(1), start, IDLE, |_| true).is_none());
        table
            .insert(client(1), flow(target(1), &freed))
            .map_err(|_| "full")
            .expect("room");
        // Each datagram within the timeout keeps it alive: 100 s apart,
        // five times, is 500 s in all.
        for i in 1..=5 {
            let now = start + Duration::from_secs(100 * i);
            let f = table.live(client(1), now, IDLE, |_| true).expect("live");
            assert_eq!(f.target, target(1));
        }
        assert_eq!(freed.load(Ordering::Relaxed), 0);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn an_idle_flow_expires_and_frees_its_socket() {
        let freed = Arc::new(AtomicUsize::new(0));
        let mut table = FlowTable::new(8);
        for port in 1..=3 {
            table
                .insert(client(port), flow(target(1), &freed))
                .map_err(|_| "full")
                .expect("room");
        }
        // No earlier than the flows' creation, their last activity.
        let start = Instant::now();
        // Client 3 stays busy.
        let later = start + Duration::from_secs(100);
        assert!(table.live(client(3), later, IDLE, |_| true).is_some());
        assert_eq!(table.expire(start + IDLE - Duration::from_secs(1), IDLE), 0);
        assert_eq!(table.expire(start + IDLE, IDLE), 2);
        assert_eq!(freed.load(Ordering::Relaxed), 2);
        assert_eq!(table.len(), 1);
        // A datagram after the timeout finds no flow (even before a sweep):
        // the caller starts a new one.
        assert!(
            table
                .live(client(3), later + IDLE, IDLE, |_| true)
                .is_none()
        );
        assert_eq!(freed.load(Ordering::Relaxed), 3);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn a_sample_counts_every_flow_and_the_active_ones() {
        let freed = Arc::new(AtomicUsize::new(0));
        let mut table = FlowTable::new(8);
        for port in 1..=3 {
            table
                .insert(client(port), flow(target(1), &freed))
                .map_err(|_| "full")
                .expect("room");
        }
        let start = Instant::now();
        assert!(
            table
                .live(client(2), start + IDLE / 2, IDLE, |_| true)
                .is_some()
        );
        let (entries, active, sample) = table.sample(start + IDLE, IDLE, 2);
        assert_eq!((entries, active, sample.len()), (3, 1, 2));
        assert!(sample.iter().all(|(_, f)| f.target == target(1)));
    }

    #[test]
    fn a_full_table_refuses_new_clients_but_serves_known_ones() {
        let freed = Arc::new(AtomicUsize::new(0));
        let mut table = FlowTable::new(2);
        let now = Instant::now();
        for port in 1..=2 {
            assert!(table.insert(client(port), flow(target(1), &freed)).is_ok());
        }
        assert!(!table.has_room());
        let refused = table.insert(client(3), flow(target(2), &freed));
        assert!(matches!(refused, Err(f) if f.target == target(2)));
        assert_eq!(table.len(), 2);
        assert!(table.live(client(1), now, IDLE, |_| true).is_some());
        // Replacing a known client's flow needs no room.
        assert!(table.insert(client(2), flow(target(2), &freed)).is_ok());
        assert_eq!(table.len(), 2);
        // Once a flow expires there is room again.
        assert_eq!(table.expire(now + IDLE + IDLE, IDLE), 2);
        assert!(table.has_room());
    }

    #[test]
    fn a_flow_whose_target_left_is_removed_on_its_next_datagram() {
        let freed = Arc::new(AtomicUsize::new(0));
        let mut table = FlowTable::new(8);
        let now = Instant::now();
        table
            .insert(client(1), flow(target(1), &freed))
            .map_err(|_| "full")
            .expect("room");
        table
            .insert(client(2), flow(target(2), &freed))
            .map_err(|_| "full")
            .expect("room");
        // Target 1 is down: client 1's next datagram re-picks (the caller
        // inserts a flow to another target), client 2 stays.
        let keeps = |t: &SocketAddr| *t != target(1);
        assert!(table.live(client(1), now, IDLE, keeps).is_none());
        assert_eq!(freed.load(Ordering::Relaxed), 1);
        let f = table.live(client(2), now, IDLE, keeps).expect("kept");
        assert_eq!(f.target, target(2));
        table
            .insert(client(1), flow(target(2), &freed))
            .map_err(|_| "full")
            .expect("room");
        // Target 2 goes too, noticed by a sweep rather than a datagram.
        assert_eq!(table.retain_targets(|t| *t == target(3)), 2);
        assert_eq!(freed.load(Ordering::Relaxed), 3);
        assert_eq!(table.len(), 0);
    }
}
