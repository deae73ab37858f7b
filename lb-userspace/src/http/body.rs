//! The body of every response the listener sends: a fixed one (errors,
//! fixed responses, redirects) or a target's, streamed. It counts the bytes
//! it yields and runs a completion hook once, when it ends or is dropped, so
//! access-log lines and metrics see the real outcome of each request.
use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::upstream::TargetBody;

/// Called with the number of body bytes sent, once the body ended or was
/// abandoned (e.g. the client went away).
pub type Finish = Box<dyn FnOnce(u64) + Send + Sync>;

pub struct ProxyBody {
    inner: Inner,
    sent: u64,
    finish: Option<Finish>,
}

enum Inner {
    Full(Option<Bytes>),
    Upstream(TargetBody),
}

impl ProxyBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self::new(Inner::Full((!bytes.is_empty()).then_some(bytes)))
    }

    pub fn empty() -> Self {
        Self::new(Inner::Full(None))
    }

    pub fn target(body: TargetBody) -> Self {
        Self::new(Inner::Upstream(body))
    }

    fn new(inner: Inner) -> Self {
        Self {
            inner,
            sent: 0,
            finish: None,
        }
    }

    /// Sets the hook run once the body is done (or abandoned).
    pub fn on_finish(&mut self, finish: Finish) {
        self.finish = Some(finish);
    }

    fn done(&mut self) {
        if let Some(f) = self.finish.take() {
            f(self.sent);
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // hyper may never poll a body that is empty from the start.
        self.done();
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let polled = match &mut self.inner {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.done(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(bytes) => bytes.is_none(),
            Inner::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Inner::Upstream(body) => body.size_hint(),
        }
    }
}
