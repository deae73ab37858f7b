//! The client side of a udp listener: one task receives every datagram on
//! the listener's socket and sends it on through its flow (opening one for
//! a new client), and keeps the flow table in step with the routable view,
//! the listener's route and the idle timeout.
use std::{
    collections::{BTreeSet, HashMap},
    io,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::{
    net::UdpSocket,
    sync::{mpsc, watch},
    time::{Instant, MissedTickBehavior},
};
use tracing::{debug, warn};

use super::{
    FlowInfo, FlowsQuery, FlowsSnapshot, MAX_DATAGRAM, UdpRoute,
    flows::{Flow, FlowTable},
    target::{FlowIo, ReplyPath},
};
use crate::{
    l4::{
        context::ListenerCtx,
        counted::Activity,
        metrics::{DropReason, L4ListenerLabels, L4TargetLabels},
    },
    round_robin,
    routable::{Routable, RoutableTarget, RoutableWatch},
    stop::stopped,
};

/// How often idle flows are looked for (a datagram of an idle flow finds
/// it expired in any case; the sweep frees the sockets of quiet ones).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Pause after a failed receive on the listener's socket, so the loop does
/// not spin while the condition lasts.
const RECV_BACKOFF: Duration = Duration::from_millis(10);
/// A warning about dropped datagrams is repeated at most this often per
/// reason (the counters say how many).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Serves `socket` until the listener's stop signal, answering flows
/// queries from `queries` meanwhile.
pub async fn serve(
    socket: UdpSocket,
    route: watch::Receiver<Arc<UdpRoute>>,
    queries: mpsc::Receiver<FlowsQuery>,
    ctx: Arc<ListenerCtx>,
) {
    let mut relay = Relay::new(Arc::new(socket), route, queries, ctx);
    relay.run().await;
    relay.shutdown().await;
}

/// The targets of the listener's group, as this relay uses them.
#[derive(Debug, Default)]
struct View {
    /// Where new flows go.
    targets: Vec<RoutableTarget>,
    /// Targets whose flows stay.
    keep: BTreeSet<SocketAddr>,
}

impl View {
    fn of(routable: &Routable, group: &str) -> Self {
        Self {
            targets: routable.targets(group).to_vec(),
            keep: routable.keeps_flows(group).cloned().unwrap_or_default(),
        }
    }
}

/// What woke the relay.
enum Event {
    Stop,
    Routable { open: bool },
    Route { open: bool },
    Sweep,
    Query(Option<FlowsQuery>),
    Datagram(io::Result<(usize, SocketAddr)>),
}

struct Relay {
    socket: Arc<UdpSocket>,
    route_rx: watch::Receiver<Arc<UdpRoute>>,
    route: Arc<UdpRoute>,
    routable: RoutableWatch,
    queries: mpsc::Receiver<FlowsQuery>,
    ctx: Arc<ListenerCtx>,
    view: View,
    table: FlowTable<FlowIo>,
    /// When each kind of warning last went out.
    warned: HashMap<Warning, Instant>,
}

/// What the relay warns about, each kind at most every [`WARN_EVERY`].
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
enum Warning {
    Drop(DropReason),
    Receive,
}

impl Relay {
    fn new(
        socket: Arc<UdpSocket>,
        mut route_rx: watch::Receiver<Arc<UdpRoute>>,
        queries: mpsc::Receiver<FlowsQuery>,
        ctx: Arc<ListenerCtx>,
    ) -> Self {
        let route = Arc::clone(&route_rx.borrow_and_update());
        let mut routable = ctx.routable.clone();
        let view = View::of(&routable.borrow_and_update(), &route.target_group);
        Self {
            socket,
            route_rx,
            table: FlowTable::new(route.max_flows),
            route,
            routable,
            queries,
            ctx,
            view,
            warned: HashMap::new(),
        }
    }

    async fn run(&mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut stop = self.ctx.stop.clone();
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // A watch whose sender is gone stays "changed" forever: stop
        // polling it (the listener's stop signal ends the loop).
        let (mut routable_open, mut route_open, mut queries_open) = (true, true, true);
        loop {
            let event = tokio::select! {
                () = stopped(&mut stop) => Event::Stop,
                r = self.routable.changed(), if routable_open => Event::Routable { open: r.is_ok() },
                r = self.route_rx.changed(), if route_open => Event::Route { open: r.is_ok() },
                _ = sweep.tick() => Event::Sweep,
                q = self.queries.recv(), if queries_open => Event::Query(q),
                r = self.socket.recv_from(&mut buf) => Event::Datagram(r),
            };
            match event {
                Event::Stop => break,
                Event::Routable { open: false } => routable_open = false,
                Event::Route { open: false } => route_open = false,
                Event::Routable { open: true } => self.refresh(),
                Event::Route { open: true } => self.new_route(),
                Event::Sweep => self.expire(),
                Event::Query(None) => queries_open = false,
                Event::Query(Some((limit, reply))) => {
                    // The asker may have given up: nothing to do then.
                    let _gone = reply.send(self.snapshot(limit));
                }
                Event::Datagram(Ok((n, client))) => self.forward(&buf[..n], client).await,
                Event::Datagram(Err(e)) => {
                    if self.due(Warning::Receive, Instant::now()) {
                        warn!(listener = %self.route.listener, error = %e, "receiving on the udp listener failed (repeats are not logged for {WARN_EVERY:?})");
                    }
                    tokio::time::sleep(RECV_BACKOFF).await;
                }
            }
        }
        debug!(listener = %self.route.listener, "udp listener stopped");
    }

    /// Takes the listener's new settings (a reload): a new group, idle
    /// timeout or flow cap apply to the flows already there too.
    fn new_route(&mut self) {
        self.route = Arc::clone(&self.route_rx.borrow_and_update());
        self.table.set_cap(self.route.max_flows);
        self.refresh();
    }

    /// Takes the latest routable view; flows whose target no longer keeps
    /// flows are removed at once (their next datagram picks again), which
    /// also frees their sockets.
    fn refresh(&mut self) {
        let view = View::of(&self.routable.borrow_and_update(), &self.route.target_group);
        let keep_changed = view.keep != self.view.keep;
        self.view = view;
        if keep_changed {
            let keep = &self.view.keep;
            let moved = self.table.retain_targets(|t| keep.contains(t));
            if moved > 0 {
                debug!(listener = %self.route.listener, moved, "udp flows of targets that left removed");
            }
        }
    }

    fn expire(&mut self) {
        let expired = self.table.expire(Instant::now(), self.route.idle_timeout);
        if expired > 0 {
            let left = self.table.len();
            debug!(listener = %self.route.listener, expired, left, "idle udp flows removed");
        }
    }

    fn snapshot(&self, limit: usize) -> FlowsSnapshot {
        let now = Instant::now();
        let (entries, active, sample) = self.table.sample(now, self.route.idle_timeout, limit);
        FlowsSnapshot {
            entries,
            active,
            sample: sample
                .into_iter()
                .map(|(client, f)| FlowInfo {
                    client,
                    target: f.target,
                    idle: now.saturating_duration_since(f.activity.last()),
                })
                .collect(),
        }
    }

    /// A client's datagram, through its flow or a new one.
    async fn forward(&mut self, datagram: &[u8], client: SocketAddr) {
        // The select may have picked this datagram over a pending change
        // of the view or route: every datagram sees the latest (a version
        // check, cheap).
        if self.route_rx.has_changed().unwrap_or(false) {
            self.new_route();
        } else if self.routable.has_changed().unwrap_or(false) {
            self.refresh();
        }
        let now = Instant::now();
        let keep = &self.view.keep;
        let live = self
            .table
            .live(client, now, self.route.idle_timeout, |t| keep.contains(t))
            .is_some();
        let flow = if live {
            self.table.get(&client)
        } else {
            self.open(client, now)
        };
        let Some(flow) = flow else {
            return;
        };
        if !flow.io.send(datagram).await {
            self.ctx
                .metrics
                .dropped(&self.route.listener, DropReason::Send);
        }
    }

    /// A new flow for `client`, or `None` (the datagram is dropped, counted
    /// and, now and then, warned about).
    fn open(&mut self, client: SocketAddr, now: Instant) -> Option<&Flow<FlowIo>> {
        if !self.table.has_room() {
            self.drop_warn(
                DropReason::FlowTableFull,
                now,
                client,
                "udp flow table full",
            );
            return None;
        }
        let n = self.ctx.next.fetch_add(1, Ordering::Relaxed);
        let Some(target) = round_robin::pick(&self.view.targets, n) else {
            self.drop_warn(DropReason::NoTarget, now, client, "no routable target");
            return None;
        };
        let listener = &self.route.listener;
        let activity = Activity::new();
        let back = ReplyPath {
            listener: Arc::clone(&self.socket),
            client,
            activity: Arc::clone(&activity),
            metrics: Arc::clone(&self.ctx.metrics),
        };
        let io = match FlowIo::open(target, listener, back) {
            Ok(io) => io,
            Err(e) => {
                let labels = L4TargetLabels {
                    listener: listener.clone(),
                    target: target.to_string(),
                };
                self.ctx
                    .metrics
                    .udp_target_errors
                    .get_or_create(&labels)
                    .inc();
                let what = format!("opening a udp socket toward {target}: {e}");
                self.drop_warn(DropReason::FlowSocket, now, client, &what);
                return None;
            }
        };
        let m = &self.ctx.metrics;
        m.udp_flows
            .get_or_create(&L4ListenerLabels {
                listener: listener.clone(),
            })
            .inc();
        m.udp_target_flows
            .get_or_create(&L4TargetLabels {
                listener: listener.clone(),
                target: target.to_string(),
            })
            .inc();
        debug!(%listener, %client, %target, "udp flow opened");
        let flow = Flow {
            target,
            activity,
            io,
        };
        match self.table.insert(client, flow) {
            Ok(flow) => Some(flow),
            // Not while there was room; counted all the same.
            Err(_) => {
                self.ctx
                    .metrics
                    .dropped(listener, DropReason::FlowTableFull);
                None
            }
        }
    }

    /// Counts a dropped datagram and warns about it, unless a warning about
    /// this reason went out less than [`WARN_EVERY`] ago.
    fn drop_warn(&mut self, reason: DropReason, now: Instant, client: SocketAddr, what: &str) {
        self.ctx.metrics.dropped(&self.route.listener, reason);
        if self.due(Warning::Drop(reason), now) {
            let listener = &self.route.listener;
            warn!(%listener, %client, group = %self.route.target_group, "{what}; datagram dropped (repeats are counted, not logged, for {WARN_EVERY:?})");
        }
    }

    /// Whether a warning of `kind` may go out at `now` (and if so, notes
    /// that it did).
    fn due(&mut self, kind: Warning, now: Instant) -> bool {
        let due = self
            .warned
            .get(&kind)
            .is_none_or(|last| now.saturating_duration_since(*last) >= WARN_EVERY);
        if due {
            self.warned.insert(kind, now);
        }
        due
    }

    /// Ends every flow and waits until their reply tasks are gone, so that
    /// the listener's socket is closed when this returns (and its address
    /// can be bound again).
    async fn shutdown(mut self) {
        let tasks: Vec<_> = self.table.drain().filter_map(|f| f.io.stop()).collect();
        for task in tasks {
            // Aborted: the error says so (or the task panicked; either way
            // it is gone).
            let _ended = task.await;
        }
    }
}
