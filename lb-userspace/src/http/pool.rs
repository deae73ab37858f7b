//! Persistent connections to the targets of one target group (seed 003: a
//! new TCP connection, and with back-end TLS a handshake, per request is the
//! anti-pattern this exists to avoid).
//!
//! * A finished exchange hands its connection back as soon as the response
//!   body was read to its end (unless either side asked to close); requests
//!   from any client reuse it.
//! * Idle connections are taken last-in first-out, so under a falling load
//!   the surplus ages out after `keep_alive_timeout`; a maintenance task
//!   closes those and opens `warm_connections` per target ahead of traffic.
//! * `keep_alive_timeout = 0` sends `Connection: close` and never keeps one.
//! * A target answering `Connection: close` gets its connection closed
//!   after the response; we never hand it out again. An idle connection
//!   the target closed, or that received bytes nobody asked for, is
//!   dropped when next taken.
//! * Connections speak HTTP/1.1 through [`super::upstream`], driven by the
//!   request holding them.
//! * `https` groups speak TLS to their targets (`[target_group.tls]`): one
//!   handshake per pooled connection, not per request.
use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{
        Arc, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use parking_lot::{Mutex, RwLock};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::{
    balance::Balancer,
    upstream::{Stream, TargetConn},
};
use crate::{
    config::{TargetGroup, http::Algorithm},
    routable::{RoutableTarget, RoutableWatch},
    tls::{self, TargetTls},
    workers::{self, Workers},
};

/// ALB gives up connecting to a target after 10 s.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections kept per target at most, whatever the load was.
const MAX_IDLE_PER_TARGET: usize = 1024;
/// How often idle connections are aged and warm ones topped up.
const MAINTENANCE_PERIOD: Duration = Duration::from_millis(500);

/// The pool's settings, from the target group.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    pub group: String,
    /// Zero: no connection is kept.
    pub keep_alive: Duration,
    pub response_timeout: Duration,
    pub warm: usize,
    pub algorithm: Algorithm,
}

impl PoolSettings {
    pub fn from_group(g: &TargetGroup) -> Self {
        Self {
            group: g.name.clone(),
            keep_alive: Duration::from_secs(g.http_keep_alive_timeout().into()),
            response_timeout: Duration::from_secs(g.http_response_timeout().into()),
            warm: g.http_warm_connections() as usize,
            algorithm: g.http_algorithm(),
        }
    }

    pub fn pooling(&self) -> bool {
        !self.keep_alive.is_zero()
    }
}

struct Idle {
    conn: Box<TargetConn>,
    since: Instant,
}

/// One worker's idle connections, on a cache line of its own so workers
/// taking their own do not slow each other.
#[repr(align(128))]
#[derive(Default)]
struct Slot(Mutex<Vec<Idle>>);

/// The connections of one target.
///
/// Idle connections are kept per worker thread ([`workers`]): a connection's
/// socket is registered with the runtime of the worker that opened it (its
/// home), so a request served there wakes no other thread. A worker with
/// none idle of its own borrows another's before opening one, and the
/// borrowed one goes back to its home.
pub struct TargetConns {
    pub addr: SocketAddr,
    /// One list per worker, and a last one for connections opened off the
    /// workers.
    idle: Box<[Slot]>,
    /// Requests sent and not yet answered to their end.
    outstanding: AtomicUsize,
    /// Open connections, idle or busy.
    open: Arc<AtomicUsize>,
}

impl TargetConns {
    fn new(addr: SocketAddr, workers: usize) -> Self {
        Self {
            addr,
            idle: (0..=workers).map(|_| Slot::default()).collect(),
            outstanding: AtomicUsize::new(0),
            open: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// The idle list of the caller's thread.
    fn own_slot(&self) -> usize {
        let off_workers = self.idle.len() - 1;
        workers::current().map_or(off_workers, |w| w.min(off_workers))
    }

    /// A usable idle connection and its home, newest first, the caller's
    /// own first; stale ones are dropped (which closes them).
    fn take_idle(&self, keep_alive: Duration) -> Option<(Box<TargetConn>, usize)> {
        let own = self.own_slot();
        let n = self.idle.len();
        (0..n).map(|i| (own + i) % n).find_map(|home| {
            let mut idle = self.idle[home].0.lock();
            while let Some(mut c) = idle.pop() {
                if c.since.elapsed() < keep_alive && c.conn.is_usable() {
                    return Some((c.conn, home));
                }
            }
            None
        })
    }

    fn put_idle(&self, conn: Box<TargetConn>, home: usize) {
        let mut idle = self.idle[home].0.lock();
        if idle.len() < MAX_IDLE_PER_TARGET {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// Closes connections idle for `keep_alive` or closed by the target.
    fn expire(&self, keep_alive: Duration) {
        for slot in &self.idle {
            let mut idle = slot.0.lock();
            idle.retain_mut(|c| c.since.elapsed() < keep_alive && c.conn.is_usable());
        }
    }

    fn close_idle(&self) {
        for slot in &self.idle {
            slot.0.lock().clear();
        }
    }

    /// Opens a connection, with TLS when `tls` (both within the connect
    /// timeout). Its home is the caller's worker.
    async fn connect(&self, tls: Option<&TargetTls>) -> io::Result<(Box<TargetConn>, usize)> {
        let timed_out = |_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .map_err(timed_out)??;
        stream.set_nodelay(true)?;
        let stream = match tls {
            None => Stream::Plain(stream),
            Some(t) => {
                let name = tls::server_name(&t.settings, self.addr.ip());
                let stream =
                    tokio::time::timeout(CONNECT_TIMEOUT, t.connector.connect(name, stream))
                        .await
                        .map_err(timed_out)??;
                Stream::Tls(Box::new(stream))
            }
        };
        Ok((
            Box::new(TargetConn::new(stream, &self.open)),
            self.own_slot(),
        ))
    }
}

/// A request in flight on a target, for least-outstanding-requests: counted
/// until dropped.
pub struct Outstanding(Arc<TargetConns>);

impl Outstanding {
    fn new(t: Arc<TargetConns>) -> Self {
        t.outstanding.fetch_add(1, Ordering::Relaxed);
        Self(t)
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection lent to one request.
pub struct Lease {
    /// Boxed: a lease moves with the request's state, several times.
    pub conn: Box<TargetConn>,
    /// The idle list it goes back to.
    home: usize,
    /// Whether it served requests before (a failure to send on it may be a
    /// close by the target that crossed our request: worth one retry).
    pub reused: bool,
    pub target: Arc<TargetConns>,
}

/// The pool of one target group.
pub struct GroupPool {
    pub settings: PoolSettings,
    /// `https` groups: the client side of TLS toward targets.
    tls: Option<Arc<TargetTls>>,
    /// Where connections live; warm ones are opened on each in turn.
    workers: Arc<Workers>,
    /// Read on every request, written only when a target appears or goes:
    /// a read lock keeps the request path from serialising on it.
    targets: RwLock<HashMap<SocketAddr, Arc<TargetConns>>>,
    balancer: Balancer,
}

impl GroupPool {
    /// A pool, and its maintenance task which lives as long as the pool.
    pub fn start(
        settings: PoolSettings,
        tls: Option<TargetTls>,
        routable: RoutableWatch,
        workers: Arc<Workers>,
    ) -> Arc<Self> {
        if !settings.pooling() {
            warn!(
                target_group = %settings.group,
                "keep_alive_timeout = 0: every request opens a new connection to its target \
                 (an anti-pattern: latency and connection churn grow with load)"
            );
        }
        let pool = Arc::new(Self {
            balancer: Balancer::new(settings.algorithm),
            settings,
            tls: tls.map(Arc::new),
            workers,
            targets: RwLock::new(HashMap::new()),
        });
        tokio::spawn(maintain(Arc::downgrade(&pool), routable));
        pool
    }

    fn target(&self, addr: SocketAddr) -> Arc<TargetConns> {
        if let Some(t) = self.targets.read().get(&addr) {
            return Arc::clone(t);
        }
        let mut targets = self.targets.write();
        Arc::clone(
            targets
                .entry(addr)
                .or_insert_with(|| Arc::new(TargetConns::new(addr, self.workers.count()))),
        )
    }

    /// The target for the next request, and its in-flight count.
    pub fn pick(&self, routable: &[RoutableTarget]) -> Option<(Arc<TargetConns>, Outstanding)> {
        let chosen = self
            .balancer
            .pick(routable, |addr| self.target(addr).outstanding())?;
        let t = self.target(chosen);
        Some((Arc::clone(&t), Outstanding::new(t)))
    }

    /// An idle connection to `t`, if the group keeps them and one is
    /// there. Not `async`: the common case then adds no state of its own to
    /// the request's future; the caller connects ([`Self::fresh`]) when
    /// this is `None`.
    pub fn idle(&self, t: &Arc<TargetConns>) -> Option<Lease> {
        if !self.settings.pooling() {
            return None;
        }
        let (conn, home) = t.take_idle(self.settings.keep_alive)?;
        Some(Lease {
            conn,
            home,
            reused: true,
            target: Arc::clone(t),
        })
    }

    /// A new connection. Callers box this future: connecting (with TLS) is
    /// the rare path, and inline it would make every request's future
    /// kilobytes larger, all of them copied whenever hyper moves one.
    pub async fn fresh(&self, t: &Arc<TargetConns>) -> io::Result<Lease> {
        let (conn, home) = t.connect(self.tls.as_deref()).await?;
        Ok(Lease {
            conn,
            home,
            reused: false,
            target: Arc::clone(t),
        })
    }

    /// Gives a connection back at the end of its exchange: the response
    /// body was read to its end, and neither side asked to close.
    pub fn release(&self, lease: Lease) {
        if self.settings.pooling() {
            lease.target.put_idle(lease.conn, lease.home);
        }
    }

    /// Open connections per target, for tests and metrics.
    pub fn open_connections(&self) -> Vec<(SocketAddr, usize)> {
        let targets = self.targets.read();
        targets
            .values()
            .map(|t| (t.addr, t.open.load(Ordering::Relaxed)))
            .collect()
    }

    /// Ages idle connections, forgets targets that left the group and opens
    /// warm connections to the others.
    async fn tick(&self, routable: &[RoutableTarget]) {
        let live: Vec<SocketAddr> = routable.iter().map(|t| t.endpoint).collect();
        let current: Vec<Arc<TargetConns>> = {
            let mut targets = self.targets.write();
            targets.retain(|addr, t| {
                let keep = live.contains(addr) || t.outstanding() > 0;
                if !keep {
                    t.close_idle();
                }
                keep
            });
            targets.values().cloned().collect()
        };
        for t in &current {
            t.expire(self.settings.keep_alive);
        }
        if self.settings.warm == 0 {
            return;
        }
        for addr in live {
            let t = self.target(addr);
            let mut worker = 0;
            while t.open.load(Ordering::Relaxed) < self.settings.warm {
                // Opened on the workers in turn, so each has some at home.
                let (t2, tls) = (Arc::clone(&t), self.tls.clone());
                let opened = self
                    .workers
                    .spawn_on(worker, async move {
                        let (conn, home) = t2.connect(tls.as_deref()).await?;
                        t2.put_idle(conn, home);
                        io::Result::Ok(())
                    })
                    .await;
                worker += 1;
                match opened {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        debug!(target = %addr, "warm connection failed: {e}");
                        break;
                    }
                    // The worker is gone: the daemon is stopping.
                    Err(_) => break,
                }
            }
        }
    }
}

async fn maintain(pool: Weak<GroupPool>, routable: RoutableWatch) {
    let mut interval = tokio::time::interval(MAINTENANCE_PERIOD);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let targets = routable.borrow().targets(&pool.settings.group).to_vec();
        pool.tick(&targets).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routable::{self, Routable};

    /// A panic in one request while it holds a pool's lock (a bug, or an
    /// allocation failure) must cost that request only: std's locks would
    /// stay poisoned and every later request of the group would panic.
    #[tokio::test]
    async fn a_panic_holding_a_pool_lock_leaves_the_pool_serving() {
        let settings = PoolSettings {
            group: "web".into(),
            keep_alive: Duration::from_secs(60),
            response_timeout: Duration::from_secs(60),
            warm: 0,
            algorithm: Algorithm::RoundRobin,
        };
        let (_tx, routable) = routable::channel(Routable::default());
        let workers = Workers::start(1).expect("workers");
        let pool = GroupPool::start(settings, None, routable, workers);
        let target = RoutableTarget {
            endpoint: SocketAddr::from(([127, 0, 0, 1], 9)),
            weight: 1,
        };
        let (t, _outstanding) = pool.pick(&[target]).expect("first pick");
        std::thread::scope(|s| {
            let held = s.spawn(|| {
                let _targets = pool.targets.write();
                panic!("a request panics holding the targets lock");
            });
            assert!(held.join().is_err());
            let held = s.spawn(|| {
                let _idle = t.idle[0].0.lock();
                panic!("a request panics holding an idle list");
            });
            assert!(held.join().is_err());
        });
        // The next requests pick, look for an idle connection and age the
        // lists as before.
        let (again, _outstanding) = pool.pick(&[target]).expect("pick after the panics");
        assert_eq!(again.addr, target.endpoint);
        assert!(pool.idle(&again).is_none(), "nothing idle yet");
        again.expire(Duration::from_secs(60));
        assert_eq!(pool.open_connections(), [(target.endpoint, 0)]);
    }
}
