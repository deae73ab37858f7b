//! The client idle timeout of one connection (ALB's `idle_timeout`), which
//! has three rules:
//!
//! - **idle**: no byte moved either way for the timeout and no request is
//!   in progress: the connection is closed (HTTP/2: GOAWAY first, and the
//!   server loop bounds how long the client may take to go);
//! - **stalled**: no byte moved either way for the timeout while requests
//!   are in progress, none of them waiting on its target (connecting, or
//!   for the response head once the whole request went out: the group's
//!   `response_timeout` bounds that): a request body that never started or
//!   stopped moving, or a response body that stopped, because a client
//!   stopped sending or reading or a target stopped reading or sending,
//!   would otherwise hold the connection and its target connection
//!   forever. The connection is cut. Upgraded connections (WebSocket) are
//!   watched the same way;
//! - **slow head**: the first bytes of an HTTP/1 request head arrived the
//!   timeout ago and the head is still not complete: the connection is cut.
//!   A client trickling a head byte by byte keeps bytes moving, so the idle
//!   rule alone would let it hold the connection forever; and one that
//!   stops half-way is not idle either (HTTP/1 closes gracefully only
//!   between requests), so this rule is looked at first. A connection that
//!   begins with the HTTP/2 preface ([`Watched`] looks) sends no heads.
//!
//! hyper can time head reads itself, but it allocates and registers a new
//! timer for every request (a twentieth of the proxy's user-space work per
//! request, measured). Here every read and write updates a few atomics of
//! the connection's [`Activity`], and one timer per connection checks them
//! now and then ([`Activity::check`]).
use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Instant,
};
use tracing::debug;

use super::{h2_flood::FloodGuard, upstream::BodyProgress};
use crate::clock::monotonic_coarse_ms as now_ms;

/// `head_since` when no head is being received.
const NO_HEAD: u64 = u64::MAX;
/// The shortest wait between two checks.
const MIN_CHECK: Duration = Duration::from_millis(50);

/// What the timeout watches on one connection. Only the connection's own
/// tasks touch it, so the atomics are never contended.
pub struct Activity {
    /// Coarse milliseconds when a byte last moved either way.
    last: AtomicU64,
    /// When the first byte of a head not yet complete arrived, or
    /// [`NO_HEAD`].
    head_since: AtomicU64,
    /// Requests whose response is not finished.
    in_flight: AtomicUsize,
    /// Those of them waiting on their target ([`WAITING`]).
    awaiting: AtomicUsize,
    /// HTTP/2 or an upgraded tunnel: no HTTP/1 heads come, so the slow-head
    /// rule does not apply.
    headless: AtomicBool,
}

/// What [`Activity::check`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Nothing to do; check again after this long.
    Open(Duration),
    /// The idle rule: close gracefully.
    Idle,
    /// The stalled rule: cut the connection.
    Stalled,
    /// The slow-head rule: cut the connection.
    SlowHead,
}

impl Activity {
    /// `h2`: the connection negotiated HTTP/2 (ALPN).
    pub fn new(h2: bool) -> Arc<Self> {
        Arc::new(Self {
            last: AtomicU64::new(now_ms()),
            head_since: AtomicU64::new(NO_HEAD),
            in_flight: AtomicUsize::new(0),
            awaiting: AtomicUsize::new(0),
            headless: AtomicBool::new(h2),
        })
    }

    /// Bytes arrived from the client. Between requests, they start a head.
    fn received(&self) {
        let now = now_ms();
        self.last.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0
            && !self.headless.load(Ordering::Relaxed)
            && self.head_since.load(Ordering::Relaxed) == NO_HEAD
        {
            self.head_since.store(now, Ordering::Relaxed);
        }
    }

    fn sent(&self) {
        self.last.store(now_ms(), Ordering::Relaxed);
    }

    /// A request head is complete; the request counts as in progress until
    /// the returned guard is dropped (its response finished).
    pub fn request(self: &Arc<Self>, h2: bool) -> InFlight {
        self.head_since.store(NO_HEAD, Ordering::Relaxed);
        if h2 {
            self.headless.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.awaiting.fetch_add(1, Ordering::Relaxed);
        InFlight {
            activity: Arc::clone(self),
            stage: AtomicU8::new(WAITING),
            body_at: Mutex::new(None),
        }
    }

    /// The connection was upgraded (WebSocket): what follows is a tunnel's
    /// bytes, not request heads.
    pub fn tunnel(&self) {
        self.headless.store(true, Ordering::Relaxed);
        self.head_since.store(NO_HEAD, Ordering::Relaxed);
    }

    /// The connection turned out to speak HTTP/2 (its first bytes were the
    /// client preface): no HTTP/1 heads come, and the preface began none.
    pub fn http2(&self) {
        self.headless.store(true, Ordering::Relaxed);
        self.head_since.store(NO_HEAD, Ordering::Relaxed);
    }

    /// Whether a request is in progress (its response not finished).
    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    /// Applies the rules for `timeout`. The slow-head rule comes first: a
    /// head begun and left unfinished is no idle connection to close
    /// gracefully (HTTP/1 would wait for the rest of the head before
    /// closing, for ever).
    pub fn check(&self, timeout: Duration) -> Check {
        let now = now_ms();
        let head_since = self.head_since.load(Ordering::Relaxed);
        let head_for = (head_since != NO_HEAD).then(|| elapsed(now, head_since));
        if head_for.is_some_and(|t| t >= timeout) {
            return Check::SlowHead;
        }
        let idle_for = elapsed(now, self.last.load(Ordering::Relaxed));
        if idle_for >= timeout && self.awaiting.load(Ordering::Relaxed) == 0 {
            return match self.in_flight.load(Ordering::Relaxed) {
                0 => Check::Idle,
                _ => Check::Stalled,
            };
        }
        // While a response head is awaited, its own timeout runs; the
        // answer counts as activity, so the next look is a timeout later.
        let mut next = match timeout.checked_sub(idle_for) {
            Some(left) if !left.is_zero() => left,
            _ => timeout,
        };
        if let Some(head_for) = head_for {
            next = next.min(timeout.saturating_sub(head_for));
        }
        Check::Open(next.max(MIN_CHECK))
    }

    /// Waits until the connection breaks the idle or stalled rule: for a
    /// tunnel, which has no requests and no heads.
    pub async fn expired(&self, timeout: Duration) {
        while let Check::Open(next) = self.check(timeout) {
            tokio::time::sleep(next).await;
        }
    }
}

fn elapsed(now: u64, since: u64) -> Duration {
    Duration::from_millis(now.saturating_sub(since))
}

/// [`InFlight`] stages. Waiting on the target (being routed, connecting,
/// or awaiting the response head after the whole request went out) is
/// bounded by the group's timeouts; in the other two, bytes must move.
const WAITING: u8 = 0;
/// Its body is going out to the target.
const UPLOADING: u8 = 1;
/// Its response is going out to the client.
const ANSWERED: u8 = 2;

/// One request's share of [`Activity::in_flight`] (and, while [`WAITING`],
/// of [`Activity::awaiting`]), and when its body last moved: a response
/// timeout counts from then ([`super::deadline`]).
pub struct InFlight {
    activity: Arc<Activity>,
    /// [`WAITING`], [`UPLOADING`] or [`ANSWERED`]. Atomic only because the
    /// request's future holds it by reference: one task touches it.
    stage: AtomicU8,
    /// When its body last moved or finished going out; `None` while no
    /// part of it moved (or it has none). Only requests with a body lock
    /// it, once a frame.
    body_at: Mutex<Option<Instant>>,
}

impl InFlight {
    /// The response head is ready: from here on the response either moves
    /// bytes or stalls. The answer itself counts as activity, so a head
    /// that took long to come is not taken for a stall.
    pub fn answered(&self) {
        if self.enter(ANSWERED) != ANSWERED {
            self.activity.sent();
        }
    }

    /// When its body last moved or went out whole: the response timeout
    /// counts from there; `None`: from the request's start.
    pub fn body_at(&self) -> Option<Instant> {
        *self.body_at.lock()
    }

    /// The request waits on its target again (it is sent once more on a
    /// new connection): the client's body, not started, is not late.
    pub fn waiting_on_target(&self) {
        self.enter(WAITING);
    }

    fn mark_body(&self) {
        *self.body_at.lock() = Some(Instant::now());
    }

    /// Moves to `stage`, keeping [`Activity::awaiting`] in step; returns
    /// the stage it left.
    fn enter(&self, stage: u8) -> u8 {
        let was = self.stage.swap(stage, Ordering::Relaxed);
        let awaiting = &self.activity.awaiting;
        match (was == WAITING, stage == WAITING) {
            (true, false) => _ = awaiting.fetch_sub(1, Ordering::Relaxed),
            (false, true) => _ = awaiting.fetch_add(1, Ordering::Relaxed),
            _ => {}
        }
        was
    }
}

/// Uploading begins once the head went out to the target, or with the
/// first part of the body that moves, not when the exchange starts: until
/// then the request may still be connecting (or reconnecting, to send again
/// a request that a kept connection lost), which is waiting on the target.
impl BodyProgress for InFlight {
    /// A body that has not started is a stalled upload as much as one that
    /// stopped: the client idle timeout applies from here.
    fn body_awaited(&self) {
        if self.stage.load(Ordering::Relaxed) == WAITING {
            self.enter(UPLOADING);
        }
    }

    fn body_moved(&self) {
        self.mark_body();
        if self.stage.load(Ordering::Relaxed) == WAITING {
            self.enter(UPLOADING);
        }
    }

    fn body_sent(&self) {
        self.mark_body();
        if self.stage.load(Ordering::Relaxed) == UPLOADING {
            self.enter(WAITING);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // A request abandoned unanswered moved no byte: no `answered`.
        self.enter(ANSWERED);
        self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The HTTP/2 client connection preface (RFC 9113 section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A client stream that reports to its connection's [`Activity`] and, on
/// HTTP/2, holds its [`FloodGuard`].
pub struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
    /// Bytes of [`PREFACE`] the connection began with so far; `None` once
    /// it is known whether it did.
    preface: Option<usize>,
    /// HTTP/2 only (boxed: HTTP/1 connections do not pay for it).
    guard: Option<Box<FloodGuard>>,
    /// Counts the connections the guard closed.
    floods: Counter,
}

impl<T> Watched<T> {
    pub fn new(inner: T, activity: Arc<Activity>, floods: Counter) -> Self {
        Self {
            inner,
            activity,
            preface: Some(0),
            guard: None,
            floods,
        }
    }

    /// Follows the first bytes: a connection that begins with the HTTP/2
    /// preface (h2c with prior knowledge, or h2 over TLS) sends no HTTP/1
    /// heads, so its preface must not be taken for the start of one, and
    /// its frames are watched from there. Returns where in `read` they
    /// begin when the preface ended in it.
    fn detect(&mut self, read: &[u8]) -> Option<usize> {
        let matched = self.preface?;
        let n = read.len().min(PREFACE.len() - matched);
        self.preface = match read[..n] == PREFACE[matched..matched + n] {
            false => None,
            true if matched + n == PREFACE.len() => {
                self.activity.http2();
                self.guard = Some(Box::new(FloodGuard::new(now_ms())));
                return Some(n);
            }
            true => Some(matched + n),
        };
        None
    }

    /// Bytes read from the client.
    fn received(&mut self, read: &[u8]) {
        self.activity.received();
        let frames = match self.detect(read) {
            Some(from) => &read[from..],
            None => read,
        };
        if let Some(guard) = &mut self.guard
            && guard.received(frames, now_ms())
        {
            self.floods.inc();
            debug!("HTTP/2 frame flood: GOAWAY ENHANCE_YOUR_CALM, then closed");
        }
    }

    /// Bytes written to the client.
    fn sent(&mut self, written: &[u8]) {
        self.activity.sent();
        if let Some(guard) = &mut self.guard {
            guard.sent(written);
        }
    }

    /// The guard, once it tripped.
    fn tripped(&mut self) -> Option<&mut FloodGuard> {
        self.guard.as_deref_mut().filter(|g| g.tripped())
    }
}

/// What h2 gets once the guard closed the connection.
fn flood_closed() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "closed after an HTTP/2 frame flood",
    )
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(guard) = this.guard.as_deref_mut().filter(|g| g.tripped()) {
            // Nothing more of the client's is read. h2 finishes the frame
            // it is writing (its flush wakes the task), then the GOAWAY
            // goes and h2 sees the end of the stream.
            if guard.may_write(usize::MAX) > 0 {
                return Poll::Pending;
            }
            ready!(guard.poll_goaway(&mut this.inner, cx))?;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.received(&buf.filled()[before..]);
        }
        r
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let mut allowed = buf.len();
        if let Some(guard) = this.guard.as_deref_mut().filter(|g| g.tripped()) {
            // What h2 writes after the trip goes as far as the end of the
            // frame it is in, then the GOAWAY takes the stream.
            allowed = guard.may_write(buf.len());
            if allowed == 0 && !buf.is_empty() {
                ready!(guard.poll_goaway(&mut this.inner, cx))?;
                return Poll::Ready(Err(flood_closed()));
            }
        }
        let r = Pin::new(&mut this.inner).poll_write(cx, &buf[..allowed]);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            this.sent(&buf[..n]);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.tripped().is_some() {
            // The rare path: one slice at a time, cut where it must be.
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &**b);
            return self.poll_write(cx, first);
        }
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            this.activity.sent();
            if let Some(guard) = &mut this.guard {
                let mut left = n;
                for b in bufs {
                    let take = left.min(b.len());
                    guard.sent(&b[..take]);
                    left -= take;
                    if left == 0 {
                        break;
                    }
                }
            }
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(guard) = this.guard.as_deref_mut().filter(|g| g.tripped())
            && guard.may_write(usize::MAX) == 0
        {
            return guard.poll_goaway(&mut this.inner, cx);
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(60);

    /// Moves a recorded time `by` into the past.
    fn age(field: &AtomicU64, by: Duration) {
        let v = field.load(Ordering::Relaxed);
        field.store(v - by.as_millis() as u64, Ordering::Relaxed);
    }

    #[test]
    fn a_fresh_connection_waits_the_whole_timeout() {
        let a = Activity::new(false);
        assert!(matches!(a.check(T), Check::Open(d) if d > T - Duration::from_secs(1)));
        age(&a.last, T);
        assert_eq!(a.check(T), Check::Idle);
    }

    #[test]
    fn a_request_waiting_for_its_head_is_never_idle() {
        let a = Activity::new(false);
        let r = a.request(false);
        age(&a.last, T * 2);
        // The response timeout runs; the next look is a whole timeout on.
        assert_eq!(a.check(T), Check::Open(T));
        drop(r);
        assert_eq!(a.check(T), Check::Idle);
    }

    #[test]
    fn an_answered_response_that_moves_nothing_is_stalled() {
        let a = Activity::new(false);
        let r = a.request(false);
        age(&a.last, T * 2);
        // A head that came late is activity, not a stall.
        r.answered();
        assert!(matches!(a.check(T), Check::Open(d) if d > T - Duration::from_secs(1)));
        age(&a.last, T);
        assert_eq!(a.check(T), Check::Stalled);
        // Another request still waiting for its head (HTTP/2) defers it.
        let waiting = a.request(true);
        assert!(matches!(a.check(T), Check::Open(_)));
        drop(waiting);
        assert_eq!(a.check(T), Check::Stalled);
        drop(r);
        assert_eq!(a.check(T), Check::Idle);
    }

    #[test]
    fn a_request_body_that_moves_nothing_is_stalled_until_it_ends() {
        let a = Activity::new(false);
        let r = a.request(false);
        assert_eq!(r.body_at(), None);
        // Connecting: nothing moved yet, the request waits on its target.
        age(&a.last, T);
        assert!(matches!(a.check(T), Check::Open(_)));
        r.body_moved();
        assert!(r.body_at().is_some());
        assert_eq!(a.check(T), Check::Stalled);
        // Once the whole body went out, the target's answer is awaited.
        r.body_sent();
        assert!(matches!(a.check(T), Check::Open(_)));
        r.answered();
        age(&a.last, T);
        assert_eq!(a.check(T), Check::Stalled);
    }

    #[test]
    fn a_tunnel_has_no_heads_but_goes_idle() {
        let a = Activity::new(false);
        a.received();
        a.tunnel();
        a.received();
        assert_eq!(a.head_since.load(Ordering::Relaxed), NO_HEAD);
        age(&a.last, T);
        assert_eq!(a.check(T), Check::Idle);
    }

    #[test]
    fn a_head_must_complete_within_the_timeout_while_bytes_move() {
        let a = Activity::new(false);
        a.received();
        age(&a.head_since, T - Duration::from_secs(10));
        // Bytes keep coming: not idle, and the next check is when the head
        // runs out of time.
        a.received();
        assert!(
            matches!(a.check(T), Check::Open(d) if d <= Duration::from_secs(10)),
            "{:?}",
            a.check(T)
        );
        age(&a.head_since, Duration::from_secs(10));
        a.received();
        assert_eq!(a.check(T), Check::SlowHead);
        // A completed head clears it.
        let _r = a.request(false);
        assert!(matches!(a.check(T), Check::Open(_)));
    }

    #[test]
    fn a_head_begun_then_left_is_cut_not_closed_gracefully() {
        // HTTP/1 closes gracefully only between requests: a head begun
        // and abandoned would keep the connection for ever.
        let a = Activity::new(false);
        a.received();
        age(&a.last, T);
        age(&a.head_since, T);
        assert_eq!(a.check(T), Check::SlowHead);
    }

    #[test]
    fn a_body_that_never_starts_is_stalled() {
        let a = Activity::new(false);
        let r = a.request(false);
        // Connecting and writing the head: waiting on the target.
        age(&a.last, T);
        assert!(matches!(a.check(T), Check::Open(_)));
        // The head went out; the body is the client's to send.
        r.body_awaited();
        assert_eq!(r.body_at(), None);
        assert_eq!(a.check(T), Check::Stalled);
        // Sent again on a new connection: waiting on the target again.
        r.waiting_on_target();
        assert!(matches!(a.check(T), Check::Open(_)));
        assert!(a.busy());
        drop(r);
        assert!(!a.busy());
    }

    #[test]
    fn the_http2_preface_starts_no_head_in_any_pieces() {
        let a = Activity::new(false);
        let mut w = Watched::new((), Arc::clone(&a), Counter::default());
        for piece in PREFACE.chunks(5) {
            a.received();
            w.detect(piece);
        }
        assert_eq!(a.head_since.load(Ordering::Relaxed), NO_HEAD);
        assert!(a.headless.load(Ordering::Relaxed));
        // A request that starts like the preface is HTTP/1.
        let a = Activity::new(false);
        let mut w = Watched::new((), Arc::clone(&a), Counter::default());
        a.received();
        w.detect(b"PRI");
        w.detect(b"NT / HTTP/1.1\r\n");
        assert_eq!(w.preface, None);
        assert!(!a.headless.load(Ordering::Relaxed));
        assert_ne!(a.head_since.load(Ordering::Relaxed), NO_HEAD);
    }

    #[test]
    fn body_bytes_and_http2_frames_start_no_head() {
        let a = Activity::new(false);
        a.received();
        let r = a.request(false);
        // The request's body.
        a.received();
        assert_eq!(a.head_since.load(Ordering::Relaxed), NO_HEAD);
        drop(r);
        let h2 = Activity::new(true);
        h2.received();
        assert_eq!(h2.head_since.load(Ordering::Relaxed), NO_HEAD);
    }
}
