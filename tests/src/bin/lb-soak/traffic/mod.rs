//! The soak's clients, run in the client namespace on one tokio runtime:
//! TCP and UDP through the XDP path, HTTP/1.1, HTTP/2 (h2c) and WebSocket
//! through the daemon's http listener. Every answer's content is checked;
//! every failure is counted and described ([`Tally`]).
//!
//! Clients leave a target before it is killed: the conductor names it in
//! [`Shared::draining`] once it is deregistered, and each connection or
//! flow on it ends cleanly at its next step ([`OnTarget`] counts those
//! still open). Clients of the daemon's own listeners park while the
//! conductor restarts the daemon ([`Shared::paused`]): those sockets end
//! with the process that holds them.
mod http1;
mod http2;
mod tcp;
mod udp;
mod websocket;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

/// How long one step (connect, request, answer) may take before it is a
/// failure: generous for a loaded 2-core machine, short against a hang.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the clients send.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
    pub http: SocketAddr,
    /// Names the targets answer with (`t1`, ...).
    pub targets: Vec<String>,
    /// The client's address, which targets and X-Forwarded-For must show.
    pub client: std::net::IpAddr,
}

/// How many clients of each kind.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    pub tcp: usize,
    pub udp: usize,
    pub http1: usize,
    pub http2: usize,
    pub websocket: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Tcp,
    Udp,
    Http1,
    Http2,
    WebSocket,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Tcp,
        Kind::Udp,
        Kind::Http1,
        Kind::Http2,
        Kind::WebSocket,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Udp => "udp",
            Kind::Http1 => "http1",
            Kind::Http2 => "http2",
            Kind::WebSocket => "websocket",
        }
    }

    /// What one exchange of this kind is called in the report.
    pub fn unit(self) -> &'static str {
        match self {
            Kind::Tcp => "echoes",
            Kind::Udp => "datagrams",
            Kind::Http1 | Kind::Http2 => "requests",
            Kind::WebSocket => "messages",
        }
    }
}

#[derive(Default)]
struct Counters {
    /// Exchanges answered correctly (echoes, datagrams, requests, messages).
    ok: AtomicU64,
    /// Connections (TCP, HTTP, WebSocket) or flows (UDP) opened.
    connections: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    failed: AtomicU64,
}

/// Counts of one kind at the end.
#[derive(Clone, Copy, Debug, Default)]
pub struct Count {
    pub ok: u64,
    pub connections: u64,
    pub sent: u64,
    pub received: u64,
    pub failed: u64,
}

/// Failures described at most (all are counted).
const KEEP_FAILURES: usize = 50;

#[derive(Default)]
pub struct Tally {
    kinds: HashMap<Kind, Counters>,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn new() -> Self {
        Self {
            kinds: Kind::ALL
                .iter()
                .map(|&k| (k, Counters::default()))
                .collect(),
            failures: Mutex::default(),
        }
    }

    fn of(&self, kind: Kind) -> &Counters {
        &self.kinds[&kind]
    }

    pub fn ok(&self, kind: Kind, sent: usize, received: usize) {
        let c = self.of(kind);
        c.ok.fetch_add(1, Ordering::Relaxed);
        c.sent.fetch_add(sent as u64, Ordering::Relaxed);
        c.received.fetch_add(received as u64, Ordering::Relaxed);
    }

    pub fn connected(&self, kind: Kind) {
        self.of(kind).connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn fail(&self, kind: Kind, what: impl fmt::Display) {
        self.of(kind).failed.fetch_add(1, Ordering::Relaxed);
        let line = format!("{}: {what}", kind.name());
        eprintln!("soak: FAILED {line}");
        let mut kept = self.failures.lock().expect("failures lock");
        if kept.len() < KEEP_FAILURES {
            kept.push(line);
        }
    }

    pub fn count(&self, kind: Kind) -> Count {
        let c = self.of(kind);
        Count {
            ok: c.ok.load(Ordering::Relaxed),
            connections: c.connections.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().expect("failures lock").clone()
    }
}

/// What the conductor and the clients share.
pub struct Shared {
    pub endpoints: Endpoints,
    pub tally: Tally,
    stop: AtomicBool,
    paused: AtomicBool,
    /// Userspace clients parked (no connection open) while paused.
    parked: AtomicUsize,
    draining: Mutex<HashSet<String>>,
    on_target: Mutex<HashMap<String, usize>>,
}

impl Shared {
    pub fn new(endpoints: Endpoints) -> Arc<Self> {
        Arc::new(Self {
            endpoints,
            tally: Tally::new(),
            stop: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            parked: AtomicUsize::new(0),
            draining: Mutex::default(),
            on_target: Mutex::default(),
        })
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Userspace clients close their connections and wait.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }

    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::SeqCst)
    }

    /// Waits (connection closed) while paused; false when stopping.
    pub async fn park_while_paused(&self) -> bool {
        if self.paused() {
            self.parked.fetch_add(1, Ordering::SeqCst);
            while self.paused() && !self.stopping() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.parked.fetch_sub(1, Ordering::SeqCst);
        }
        !self.stopping()
    }

    pub fn set_draining(&self, target: &str, on: bool) {
        let mut d = self.draining.lock().expect("draining lock");
        if on {
            d.insert(target.to_owned());
        } else {
            d.remove(target);
        }
    }

    pub fn is_draining(&self, target: &str) -> bool {
        self.draining
            .lock()
            .expect("draining lock")
            .contains(target)
    }

    /// Client connections and flows still open on `target`.
    pub fn open_on(&self, target: &str) -> usize {
        let m = self.on_target.lock().expect("on_target lock");
        m.get(target).copied().unwrap_or(0)
    }

    pub fn known_target(&self, name: &str) -> bool {
        self.endpoints.targets.iter().any(|t| t == name)
    }
}

/// A client connection or flow open on a target, counted until dropped.
pub struct OnTarget {
    shared: Arc<Shared>,
    pub name: String,
}

impl OnTarget {
    pub fn new(shared: &Arc<Shared>, name: &str) -> Self {
        *shared
            .on_target
            .lock()
            .expect("on_target lock")
            .entry(name.to_owned())
            .or_default() += 1;
        Self {
            shared: Arc::clone(shared),
            name: name.to_owned(),
        }
    }

    /// Its target is being drained: leave it.
    pub fn leave(&self) -> bool {
        self.shared.is_draining(&self.name)
    }
}

impl Drop for OnTarget {
    fn drop(&mut self) {
        let mut m = self.shared.on_target.lock().expect("on_target lock");
        if let Some(n) = m.get_mut(&self.name) {
            *n -= 1;
        }
    }
}

/// Starts every client; they run until [`Shared::stop`].
pub fn start(shared: &Arc<Shared>, mix: Mix) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for w in 0..mix.tcp {
        tasks.push(tokio::spawn(tcp::run(Arc::clone(shared), w)));
    }
    for w in 0..mix.udp {
        tasks.push(tokio::spawn(udp::run(Arc::clone(shared), w)));
    }
    for w in 0..mix.http1 {
        tasks.push(tokio::spawn(http1::run(Arc::clone(shared), w)));
    }
    for w in 0..mix.http2 {
        tasks.push(tokio::spawn(http2::run(Arc::clone(shared), w)));
    }
    for w in 0..mix.websocket {
        tasks.push(tokio::spawn(websocket::run(Arc::clone(shared), w)));
    }
    tasks
}

/// The number of clients that park while paused.
pub fn userspace_clients(mix: Mix) -> usize {
    mix.http1 + mix.http2 + mix.websocket
}

/// `step` within [`STEP_TIMEOUT`], its error or the timeout described.
pub async fn timed<T, E: fmt::Display>(
    what: &str,
    step: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(STEP_TIMEOUT, step).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {STEP_TIMEOUT:?}")),
    }
}

/// A small deterministic generator (xorshift), one per client, for sizes
/// and payloads that differ from step to step.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// In `lo..=hi`.
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    /// `len` printable bytes.
    pub fn text(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| b'a' + (self.next() % 26) as u8).collect()
    }
}
