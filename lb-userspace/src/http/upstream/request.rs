//! The request as it goes on the wire to a target: its head, and its body
//! framed by what hyper read of the client's (never by the client's own
//! framing fields, which are not trusted across a proxy: RFC 9112 section
//! 6.3 and request smuggling).
use std::{
    io::{self, IoSlice, Write},
    pin::Pin,
    task::{Context, Poll, ready},
};

use ::http::{HeaderMap, HeaderValue, Method, header, request::Parts};
use bytes::{Buf, Bytes};
use hyper::body::{Body, Incoming};
use tokio::io::AsyncWrite;

/// How the body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `Content-Length`: this many bytes are still to come.
    Length(u64),
    Chunked,
}

/// Sets the framing fields of the target's request and returns the body
/// to send, `None` when there is none. A body whose length hyper knows
/// (the client's `Content-Length`, or HTTP/2's) keeps that length; any
/// other is sent chunked.
pub fn frame(headers: &mut HeaderMap, body: Incoming) -> Option<Box<BodySender>> {
    if body.is_end_stream() {
        // A `Content-Length: 0` the client sent stays as it was.
        return None;
    }
    let framing = match body.size_hint().exact() {
        Some(n) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            Framing::Length(n)
        }
        None => {
            headers.remove(header::CONTENT_LENGTH);
            headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
            Framing::Chunked
        }
    };
    // Boxed: most requests have no body, and this one moves with the
    // request's state.
    Some(Box::new(BodySender {
        body,
        framing,
        out: Out::default(),
        started: false,
        frames: 0,
        ended: false,
    }))
}

/// Writes `parts` as an HTTP/1.1 request head into `out` (emptied first),
/// in origin form. Every piece was validated by `http` (no CR or LF can get
/// in).
pub fn encode_head(parts: &Parts, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether a request may be sent again after its connection failed without
/// an answer (RFC 9110 section 9.2.2: idempotent methods).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The bytes of one body frame still to write: a chunk-size line, the
/// data (not copied), and what closes the chunk.
#[derive(Default)]
struct Out {
    prefix: Vec<u8>,
    prefix_at: usize,
    data: Bytes,
    suffix: &'static [u8],
}

impl Out {
    fn is_empty(&self) -> bool {
        self.prefix_at == self.prefix.len() && self.data.is_empty() && self.suffix.is_empty()
    }

    fn advance(&mut self, mut n: usize) {
        let p = (self.prefix.len() - self.prefix_at).min(n);
        self.prefix_at += p;
        n -= p;
        let d = self.data.len().min(n);
        self.data.advance(d);
        n -= d;
        self.suffix = &self.suffix[n.min(self.suffix.len())..];
    }

    fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.is_empty() {
            let slices = [
                IoSlice::new(&self.prefix[self.prefix_at..]),
                IoSlice::new(&self.data),
                IoSlice::new(self.suffix),
            ];
            let n = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
        }
        Pin::new(io).poll_flush(cx)
    }

    /// `data` as it is.
    fn raw(&mut self, data: Bytes) {
        self.prefix.clear();
        self.prefix_at = 0;
        self.data = data;
        self.suffix = b"";
    }

    /// `data` as one chunk of the chunked coding.
    fn chunk(&mut self, data: Bytes) {
        self.raw(Bytes::new());
        // Writing into a Vec cannot fail.
        let _ = write!(self.prefix, "{:x}\r\n", data.len());
        self.data = data;
        self.suffix = b"\r\n";
    }
}

/// Why a request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Reading it from the client failed, or it did not match its length.
    #[error("from the client: {0}")]
    Client(io::Error),
    /// Writing it to the target failed.
    #[error("toward the target: {0}")]
    Target(io::Error),
}

/// A request body on its way to the target, written as the client sends
/// it (never buffered whole) and as the target takes it.
pub struct BodySender {
    body: Incoming,
    framing: Framing,
    out: Out,
    /// A frame was taken from the client: the request can no longer be
    /// sent again.
    started: bool,
    /// Frames taken from the client so far (each once the one before it
    /// was written to the target): how the body's progress is seen.
    frames: u64,
    /// The end was reached and written.
    ended: bool,
}

impl BodySender {
    /// Nothing of it was taken from the client or written: the request can
    /// be sent again whole.
    pub fn untouched(&self) -> bool {
        !self.started && !self.ended
    }

    /// Frames taken from the client so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Moves the body on as far as the client and the target allow now;
    /// ready once all of it is written.
    pub fn poll_send<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), BodyError>> {
        loop {
            ready!(self.out.poll_write(io, cx)).map_err(BodyError::Target)?;
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => self.end().map_err(BodyError::Client)?,
                Some(Err(e)) => return Poll::Ready(Err(BodyError::Client(io::Error::other(e)))),
                Some(Ok(frame)) => {
                    self.started = true;
                    self.frames += 1;
                    // Trailers are not forwarded (ALB drops them too).
                    if let Ok(data) = frame.into_data() {
                        self.take(data).map_err(BodyError::Client)?;
                    }
                }
            }
        }
    }

    fn take(&mut self, data: Bytes) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.framing {
            Framing::Length(left) => {
                *left = left
                    .checked_sub(data.len() as u64)
                    .ok_or_else(|| io::Error::other("request body longer than its length"))?;
                self.out.raw(data);
            }
            Framing::Chunked => self.out.chunk(data),
        }
        Ok(())
    }

    fn end(&mut self) -> io::Result<()> {
        match self.framing {
            Framing::Length(0) => {}
            Framing::Length(_) => {
                return Err(io::Error::other("request body shorter than its length"));
            }
            Framing::Chunked => {
                // The last chunk, no trailers.
                self.out.raw(Bytes::from_static(b"0\r\n\r\n"));
            }
        }
        self.ended = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ::http::Request;

    use super::*;

    #[test]
    fn heads_are_origin_form_http11_with_every_field() {
        let (parts, ()) = Request::post("http://ignored.example/a/b?x=1")
            .header("host", "example.com")
            .header("x-two", "1")
            .header("x-two", "2")
            .body(())
            .unwrap()
            .into_parts();
        let mut out = b"stale".to_vec();
        encode_head(&parts, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a/b?x=1 HTTP/1.1\r\nhost: example.com\r\nx-two: 1\r\nx-two: 2\r\n\r\n"
        );
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut out = Out::default();
        out.chunk(Bytes::from_static(b"hello"));
        let mut written = Vec::new();
        for n in [1, 3, 4, 2] {
            let all = [&out.prefix[out.prefix_at..], &out.data[..], out.suffix].concat();
            written.extend_from_slice(&all[..n]);
            out.advance(n);
        }
        assert!(out.is_empty());
        assert_eq!(written, b"5\r\nhello\r\n");
    }

    #[test]
    fn only_idempotent_methods_are_retried() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }
}
