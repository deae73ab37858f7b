//! Abusive HTTP/2 frame rates: frames that cost the server work but carry
//! no request (PING, SETTINGS, WINDOW_UPDATE, PRIORITY, RST_STREAM, GOAWAY,
//! empty DATA, unknown types; CVE-2019-9512, -9515, -9516, -9518 and kin)
//! are paid for from a budget that the connection's useful traffic and
//! time refill. A client that spends beyond it gets GOAWAY
//! `ENHANCE_YOUR_CALM` and the connection closes, as h2 itself answers
//! rapid resets and CONTINUATION floods.
//!
//! h2 (under hyper) has no such limit and no way to send that GOAWAY from
//! outside, so the guard sits under it on the client stream
//! ([`super::idle::Watched`]): it follows the frame headers both ways (9
//! bytes each; payloads are skipped, not read) and, once tripped, lets h2
//! finish the frame it is writing, writes the GOAWAY itself after it, and
//! closes. Nothing of what the client sends after that is read.
use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::AsyncWrite;

/// A connection's allowance of costly frames at once, and what time alone
/// gives back per second: a client may always send a burst of this many
/// (a new connection's SETTINGS, window and priority updates) and 100 a
/// second for ever (keep-alive PINGs), beyond what its traffic earns.
pub const BURST: u32 = 1000;
pub const PER_SECOND: u32 = 100;
/// Earned by each request (a HEADERS frame opening a stream): its window
/// and priority updates, its reset.
pub const PER_REQUEST: u32 = 10;
/// Earned by each DATA frame sent to the client, which acknowledges data
/// with WINDOW_UPDATEs (two per frame at most from common clients: the
/// stream's and the connection's) and may PING to measure the link.
pub const PER_DATA_SENT: u32 = 4;

/// Budget units per frame (milli-frames, so that time refills it smoothly).
const UNIT: i64 = 1000;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
/// DATA and HEADERS: the last frame of the stream's side.
const END_STREAM: u8 = 0x1;
/// SETTINGS and PING: an acknowledgement.
const ACK: u8 = 0x1;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// The header of one frame (RFC 9113 section 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameHead {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

/// Follows frame boundaries through a byte stream that arrives in pieces.
#[derive(Debug, Default)]
struct Frames {
    /// The header being read, and how much of it came.
    head: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to come.
    skip: usize,
}

impl Frames {
    /// Walks `bytes`, calling `each` with every frame header completed.
    fn walk(&mut self, mut bytes: &[u8], mut each: impl FnMut(FrameHead)) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 9 {
                let h = &self.head;
                let head = FrameHead {
                    len: usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]),
                    kind: h[3],
                    flags: h[4],
                    stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
                };
                self.have = 0;
                self.skip = head.len;
                each(head);
            }
        }
    }

    /// Bytes until the current frame ends, as far as known (a header not
    /// yet complete: until its end); 0 between frames.
    fn to_boundary(&self) -> usize {
        match self.have {
            0 => self.skip,
            have => 9 - have,
        }
    }
}

/// The costly-frame allowance, in [`UNIT`]s.
#[derive(Debug)]
struct Budget {
    left: i64,
    /// Coarse milliseconds of the last refill.
    at: u64,
}

impl Budget {
    fn new(now_ms: u64) -> Self {
        Self {
            left: i64::from(BURST) * UNIT,
            at: now_ms,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let ms = now_ms.saturating_sub(self.at);
        self.at = now_ms;
        // PER_SECOND frames a second: PER_SECOND units a millisecond.
        let gained = i64::try_from(ms).unwrap_or(i64::MAX / 2) * i64::from(PER_SECOND);
        self.earn_units(gained);
    }

    fn earn(&mut self, frames: u32) {
        self.earn_units(i64::from(frames) * UNIT);
    }

    fn earn_units(&mut self, units: i64) {
        self.left = self.left.saturating_add(units).min(i64::from(BURST) * UNIT);
    }

    /// Spends one frame; false once the allowance is gone.
    fn spend(&mut self) -> bool {
        self.left -= UNIT;
        self.left >= 0
    }
}

/// The guard of one HTTP/2 client connection.
#[derive(Debug)]
pub struct FloodGuard {
    /// From the client, after its preface.
    inbound: Frames,
    /// To the client, from its first byte.
    outbound: Frames,
    budget: Budget,
    /// The highest stream the client opened: the GOAWAY's last stream.
    last_stream: u32,
    /// Once tripped: the GOAWAY on its way out.
    goaway: Option<GoAway>,
}

/// What is left to do of the GOAWAY and the close that follows it.
#[derive(Debug)]
struct GoAway {
    frame: [u8; 17],
    written: usize,
    flushed: bool,
    shut: bool,
}

impl FloodGuard {
    pub fn new(now_ms: u64) -> Self {
        Self {
            inbound: Frames::default(),
            outbound: Frames::default(),
            budget: Budget::new(now_ms),
            last_stream: 0,
            goaway: None,
        }
    }

    /// Bytes the client sent; returns true when they exhausted the budget
    /// (the guard is tripped from here on).
    pub fn received(&mut self, bytes: &[u8], now_ms: u64) -> bool {
        if self.goaway.is_some() {
            return false;
        }
        self.budget.refill(now_ms);
        let Self {
            inbound,
            budget,
            last_stream,
            ..
        } = self;
        let mut over = false;
        inbound.walk(bytes, |h| {
            let costly = match h.kind {
                // An empty DATA frame that does not end its stream moves
                // nothing.
                DATA => h.len == 0 && h.flags & END_STREAM == 0,
                HEADERS if h.stream > *last_stream => {
                    *last_stream = h.stream;
                    budget.earn(PER_REQUEST);
                    false
                }
                // Trailers; header blocks continued; a push promise is
                // h2's protocol error to answer.
                HEADERS | CONTINUATION | PUSH_PROMISE => false,
                _ => true,
            };
            if costly && !budget.spend() {
                over = true;
            }
        });
        if over {
            self.trip();
        }
        over
    }

    /// Bytes h2 wrote to the client.
    pub fn sent(&mut self, bytes: &[u8]) {
        let Self {
            outbound, budget, ..
        } = self;
        outbound.walk(bytes, |h| match h.kind {
            DATA if h.len > 0 => budget.earn(PER_DATA_SENT),
            // Each asks for an acknowledgement.
            SETTINGS | PING if h.flags & ACK == 0 => budget.earn(1),
            _ => {}
        });
    }

    pub fn tripped(&self) -> bool {
        self.goaway.is_some()
    }

    fn trip(&mut self) {
        let mut frame = [0u8; 17];
        // Length 8, type GOAWAY, no flags, stream 0.
        frame[..9].copy_from_slice(&[0, 0, 8, GOAWAY, 0, 0, 0, 0, 0]);
        frame[9..13].copy_from_slice(&self.last_stream.to_be_bytes());
        frame[13..17].copy_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
        self.goaway = Some(GoAway {
            frame,
            written: 0,
            flushed: false,
            shut: false,
        });
    }

    /// Tripped: how many bytes of h2's `len` may still go, finishing the
    /// frame it is writing; 0 once it is finished (then only the GOAWAY).
    pub fn may_write(&self, len: usize) -> usize {
        self.outbound.to_boundary().min(len)
    }

    /// Tripped, between two of h2's frames: writes the GOAWAY, flushes and
    /// shuts `io` down. Ready once all that is done.
    pub fn poll_goaway<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(g) = &mut self.goaway else {
            return Poll::Ready(Ok(()));
        };
        while g.written < g.frame.len() {
            let n = ready!(Pin::new(&mut *io).poll_write(cx, &g.frame[g.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            g.written += n;
        }
        if !g.flushed {
            ready!(Pin::new(&mut *io).poll_flush(cx))?;
            g.flushed = true;
        }
        if !g.shut {
            ready!(Pin::new(io).poll_shutdown(cx))?;
            g.shut = true;
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: usize) -> Vec<u8> {
        let mut out = (payload as u32).to_be_bytes()[1..].to_vec();
        out.extend([kind, flags]);
        out.extend(stream.to_be_bytes());
        out.extend(std::iter::repeat_n(0xaa, payload));
        out
    }

    #[test]
    fn frames_are_followed_across_any_split() {
        let mut bytes = frame(HEADERS, 4, 1, 20);
        bytes.extend(frame(DATA, 0, 1, 70_000));
        bytes.extend(frame(PING, 0, 0, 8));
        for piece in [1, 2, 8, 9, 10, 1000, bytes.len()] {
            let mut f = Frames::default();
            let mut seen = Vec::new();
            for chunk in bytes.chunks(piece) {
                f.walk(chunk, |h| seen.push((h.kind, h.stream, h.len)));
            }
            assert_eq!(
                seen,
                [(HEADERS, 1, 20), (DATA, 1, 70_000), (PING, 0, 8)],
                "{piece}"
            );
            assert_eq!(f.to_boundary(), 0);
        }
        let mut f = Frames::default();
        f.walk(&bytes[..3], |_| {});
        assert_eq!(f.to_boundary(), 6);
        f.walk(&bytes[3..12], |_| {});
        assert_eq!(f.to_boundary(), 17);
    }

    /// Feeds `n` copies of `one` in a single read; true when it tripped.
    fn flood(g: &mut FloodGuard, one: &[u8], n: usize, now: u64) -> bool {
        g.received(&one.repeat(n), now)
    }

    #[test]
    fn a_burst_passes_a_flood_trips() {
        for one in [
            frame(0x8, 0, 0, 4),      // WINDOW_UPDATE
            frame(PING, 0, 0, 8),     // PING
            frame(SETTINGS, 0, 0, 0), // SETTINGS
            frame(0x2, 0, 3, 5),      // PRIORITY
            frame(DATA, 0, 1, 0),     // empty DATA
            frame(PING, ACK, 0, 8),   // unsolicited PING ACK
            frame(0xfa, 0, 0, 0),     // unknown type
        ] {
            let mut g = FloodGuard::new(0);
            assert!(!flood(&mut g, &one, BURST as usize, 0), "{one:?}");
            assert!(flood(&mut g, &one, 1, 0), "{one:?}");
            assert!(g.tripped());
        }
    }

    #[test]
    fn time_and_useful_traffic_refill_it() {
        let ping = frame(PING, 0, 0, 8);
        let mut g = FloodGuard::new(0);
        assert!(!flood(&mut g, &ping, BURST as usize, 0));
        // 100 a second for ever.
        for second in 1..=100 {
            assert!(!flood(&mut g, &ping, PER_SECOND as usize, second * 1000));
        }
        // Requests earn their updates; trailers and END_STREAM DATA cost
        // nothing.
        let mut g = FloodGuard::new(0);
        assert!(!flood(&mut g, &ping, BURST as usize, 0));
        for stream in (1..200).step_by(2) {
            let mut bytes = frame(HEADERS, 4, stream, 10);
            bytes.extend(frame(DATA, END_STREAM, stream, 0));
            bytes.extend(frame(HEADERS, 5, stream, 3));
            bytes.extend(frame(0x8, 0, stream, 4).repeat(PER_REQUEST as usize));
            assert!(!g.received(&bytes, 0), "{stream}");
        }
        // A download earns the client's WINDOW_UPDATEs for it.
        let mut g = FloodGuard::new(0);
        let update = frame(0x8, 0, 0, 4);
        assert!(!flood(&mut g, &update, BURST as usize, 0));
        for _ in 0..10_000 {
            g.sent(&frame(DATA, 0, 1, 16_384));
            assert!(!flood(&mut g, &update, 2, 0));
        }
        // What was earned does not pile up beyond the burst.
        let mut g = FloodGuard::new(0);
        for _ in 0..10_000 {
            g.sent(&frame(DATA, 0, 1, 100));
        }
        assert!(!flood(&mut g, &update, BURST as usize, 0));
        assert!(flood(&mut g, &update, 1, 0));
    }

    #[test]
    fn the_goaway_names_the_last_stream_and_waits_for_a_frame_boundary() {
        let mut g = FloodGuard::new(0);
        g.received(&frame(HEADERS, 5, 7, 3), 0);
        // h2 has written 5 bytes of a 9 + 100 byte frame.
        g.sent(&frame(DATA, 0, 7, 100)[..5]);
        assert!(flood(&mut g, &frame(PING, 0, 0, 8), BURST as usize + 1, 0));
        assert_eq!(g.may_write(1000), 4);
        g.sent(&[0; 4]);
        assert_eq!(g.may_write(1000), 100);
        assert_eq!(g.may_write(10), 10);
        g.sent(&[0; 100]);
        assert_eq!(g.may_write(1000), 0);
        let goaway = &g.goaway.as_ref().expect("tripped").frame;
        assert_eq!(
            goaway,
            &[0, 0, 8, GOAWAY, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0xb]
        );
    }
}
