//! A target's response body, streamed to the client as it arrives. It
//! holds the connection: at its end the connection goes back to the pool
//! (when both sides allow it), on any failure it is closed.
use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::{
    chunked::Step,
    response::{Framing, Head},
};
use crate::http::pool::{GroupPool, Lease};

pub struct TargetBody {
    /// Until the body ends (then back to the pool) or fails (then closed).
    lease: Option<(Arc<GroupPool>, Lease)>,
    framing: Framing,
}

impl TargetBody {
    pub fn new(pool: Arc<GroupPool>, mut lease: Lease, head: &Head) -> Self {
        lease.conn.reusable &= head.keep_alive;
        Self {
            lease: Some((pool, lease)),
            framing: head.framing,
        }
    }

    fn complete(&self) -> bool {
        self.framing == Framing::Length(0)
    }

    /// The end: the connection goes back for the next request if the
    /// target keeps it open, our request went whole, and nothing
    /// unasked-for follows the response.
    fn finish(&mut self) {
        if let Some((pool, lease)) = self.lease.take()
            && lease.conn.reusable
            && lease.conn.rbuf.is_empty()
        {
            pool.release(lease);
        }
    }

    fn fail(&mut self, e: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.lease = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl Drop for TargetBody {
    fn drop(&mut self) {
        // hyper stops polling a body that says it ended; an unfinished
        // one (the client went away) closes the connection.
        if self.complete() {
            self.finish();
        }
    }
}

impl Body for TargetBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let Some((_, lease)) = &mut this.lease else {
            return Poll::Ready(None);
        };
        let conn = &mut lease.conn;
        loop {
            let data = match &mut this.framing {
                Framing::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(left) => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(conn.rbuf.len());
                    *left -= n as u64;
                    (n > 0).then(|| conn.rbuf.split_to(n).freeze())
                }
                Framing::Chunked(chunked) => match chunked.step(&mut conn.rbuf) {
                    Ok(Step::Data(d)) => Some(d),
                    Ok(Step::More) => None,
                    Ok(Step::End) => {
                        this.framing = Framing::Length(0);
                        continue;
                    }
                    Err(e) => return this.fail(io::Error::other(e)),
                },
                Framing::UntilClose => (!conn.rbuf.is_empty()).then(|| conn.rbuf.split().freeze()),
            };
            if let Some(data) = data {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            match ready!(conn.poll_fill(cx)) {
                // Never kept: the close is the end.
                Ok(0) if this.framing == Framing::UntilClose => this.framing = Framing::Length(0),
                Ok(0) => return this.fail(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.complete()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
