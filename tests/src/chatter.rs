//! Many long-lived TCP connections exchanging data, on one background
//! thread: each round sends a line on every connection, then reads every
//! echo. Lines of all connections are in flight at once, so a connection
//! stalled for seconds (its packets black-holed until a route is
//! withdrawn, then retransmitted) delays a round, not the others' data.
//! A connection whose echo fails (reset, closed, wrong line, nothing
//! within the timeout) is broken and leaves the set.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::client::EchoConn;

/// A connection that stopped working.
#[derive(Clone, Debug)]
pub struct Broken {
    pub local: SocketAddr,
    pub target: String,
    pub round: usize,
    pub error: String,
}

/// See the module doc.
pub struct Chatter {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicUsize>,
    broken: Arc<Mutex<Vec<Broken>>>,
    total: usize,
    handle: Option<JoinHandle<Vec<EchoConn>>>,
}

impl Chatter {
    /// Starts the rounds over `conns`, each echo allowed `timeout`, a pause
    /// of `pause` between rounds.
    pub fn start(mut conns: Vec<EchoConn>, timeout: Duration, pause: Duration) -> Self {
        for c in &mut conns {
            c.set_timeout(timeout).expect("set the echo timeout");
        }
        let total = conns.len();
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicUsize::new(0));
        let broken = Arc::new(Mutex::new(Vec::new()));
        let (stop2, rounds2, broken2) = (stop.clone(), rounds.clone(), broken.clone());
        let handle = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let round = rounds2.load(Ordering::Relaxed) + 1;
                conns = one_round(conns, round, &broken2);
                rounds2.store(round, Ordering::Relaxed);
                thread::sleep(pause);
            }
            conns
        });
        Self {
            stop,
            rounds,
            broken,
            total,
            handle: Some(handle),
        }
    }

    /// Connections at the start.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The connections broken so far.
    pub fn broken(&self) -> Vec<Broken> {
        self.broken.lock().expect("broken list").clone()
    }

    /// Waits until `n` more rounds completed (every live connection echoed
    /// `n` more lines); panics after `within`.
    pub fn wait_rounds(&self, n: usize, within: Duration, during: &str) {
        let want = self.rounds.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + within;
        while self.rounds.load(Ordering::Relaxed) < want {
            assert!(
                Instant::now() < deadline,
                "{during}: the long-lived connections completed {} rounds, not {want}, \
                 within {within:?}",
                self.rounds.load(Ordering::Relaxed)
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the rounds; returns the connections still working.
    pub fn finish(mut self) -> Vec<EchoConn> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("rounds running")
            .join()
            .expect("rounds thread panicked")
    }
}

impl Drop for Chatter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sends line `round` on every connection, then reads every echo; returns
/// those that worked, recording the others in `broken`.
fn one_round(conns: Vec<EchoConn>, round: usize, broken: &Mutex<Vec<Broken>>) -> Vec<EchoConn> {
    let msg = format!("round {round}");
    let mut sent = Vec::with_capacity(conns.len());
    let mut failed = Vec::new();
    for mut c in conns {
        match c.send_line(&msg) {
            Ok(()) => sent.push(c),
            Err(e) => failed.push((c, e)),
        }
    }
    let mut kept = Vec::with_capacity(sent.len());
    for mut c in sent {
        match c.expect_line(&msg) {
            Ok(()) => kept.push(c),
            Err(e) => failed.push((c, e)),
        }
    }
    let mut list = broken.lock().expect("broken list");
    for (c, e) in failed {
        list.push(Broken {
            local: c.local,
            target: c.target.clone(),
            round,
            error: format!("{e:#}"),
        });
    }
    kept
}
