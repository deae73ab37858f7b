//! One HTTP/1.1 connection to a target, driven by the request that holds
//! it: no task of its own and no channel between the request and the
//! socket.
use std::{
    future::poll_fn,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker, ready},
};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;
use tracing::debug;

use super::{
    request::{BodyError, BodySender},
    response::{self, BadHead, Head},
    stream::Stream,
};

/// Bytes read from a target at a time.
const READ_SIZE: usize = 16 * 1024;

pub struct TargetConn {
    pub(super) io: Stream,
    /// Read and not yet taken: the start of a head, or body bytes.
    pub(super) rbuf: BytesMut,
    /// The encoded head of the request in flight; kept so a request a
    /// reused connection failed can be sent again as it was.
    pub head: Vec<u8>,
    /// False once the request on it was cut short (the target stopped
    /// taking its body, or the rest went on apart): the target may still
    /// be waiting for the rest.
    pub(super) reusable: bool,
    open: OpenCount,
}

/// Counts a connection open until it is dropped.
pub struct OpenCount(Arc<AtomicUsize>);

impl Drop for OpenCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Told when a request body moves and when it finished going out: the
/// client idle timeout and the response timeout treat a request whose body
/// is moving differently from one that waits on its target.
pub trait BodyProgress {
    /// The head went out and a body is to follow: until it does, the
    /// request waits on its client, not on its target.
    fn body_awaited(&self);
    /// A part of the body was taken from the client (the part before it
    /// having been written to the target).
    fn body_moved(&self);
    /// The whole body went out, or the target stopped taking it.
    fn body_sent(&self);
}

/// How far an exchange got.
#[derive(Default)]
struct Progress {
    /// Bytes of the head written.
    written: usize,
    /// Past this, a failure is not a connection lost while idle: the
    /// request must not be sent again.
    committed: bool,
    /// `rbuf` holds no complete head before this.
    unparsed_from: usize,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The target closed or reset the connection before a byte of the
    /// response came.
    #[error("connection closed before the response: {0}")]
    Closed(io::Error),
    #[error("{0}")]
    Io(io::Error),
    #[error("{0}")]
    Head(#[from] BadHead),
    /// The client's request body failed (malformed, or the client went).
    #[error("client request body: {0}")]
    ClientBody(io::Error),
}

impl TargetConn {
    pub fn new(io: Stream, open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self {
            io,
            // Allocated by the first read: warm connections may wait long.
            rbuf: BytesMut::new(),
            head: Vec::new(),
            reusable: true,
            open: OpenCount(Arc::clone(open)),
        }
    }

    /// Whether an idle connection can take a request: the target has not
    /// closed it, and sent nothing unasked (a late byte would be taken for
    /// the next response). Costs no system call unless the socket has
    /// signalled something since it was last read.
    pub fn is_usable(&mut self) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        // Any byte makes it unusable: one is enough to look for.
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut buf),
            Poll::Pending
        )
    }

    /// Reads more into `rbuf`; `Ok(0)` at the end of the stream.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_SIZE / 4 {
            self.rbuf.reserve(READ_SIZE);
        }
        poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf)
    }

    /// Sends the request (`self.head`, then `body` as far as the target
    /// takes it before answering) and reads the response head. Interim
    /// (1xx) responses other than 101 are dropped.
    pub async fn exchange(
        &mut self,
        body: &mut Option<Box<BodySender>>,
        head_request: bool,
        progress: &(dyn BodyProgress + Sync),
    ) -> Result<Head, ExchangeError> {
        let mut at = Progress::default();
        poll_fn(|cx| self.poll_exchange(cx, &mut at, body, head_request, progress)).await
    }

    fn poll_exchange(
        &mut self,
        cx: &mut Context<'_>,
        at: &mut Progress,
        body: &mut Option<Box<BodySender>>,
        head_request: bool,
        progress: &(dyn BodyProgress + Sync),
    ) -> Poll<Result<Head, ExchangeError>> {
        let Progress {
            written,
            committed,
            unparsed_from,
        } = at;
        if *written < self.head.len() {
            while *written < self.head.len() {
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.head[*written..]))
                    .map_err(ExchangeError::Closed)?;
                if n == 0 {
                    return Poll::Ready(Err(ExchangeError::Closed(
                        io::ErrorKind::WriteZero.into(),
                    )));
                }
                *written += n;
            }
            if body.is_some() {
                progress.body_awaited();
            }
        }
        if let Some(sender) = body {
            let frames = sender.frames();
            let sent = sender.poll_send(&mut self.io, cx);
            if sender.frames() != frames {
                progress.body_moved();
            }
            match sent {
                Poll::Ready(Ok(())) => {
                    *body = None;
                    progress.body_sent();
                }
                // The target stopped reading, maybe having answered (e.g.
                // 413): its answer, if any, is what counts, and the
                // connection ends with it.
                Poll::Ready(Err(BodyError::Target(e))) => {
                    debug!("request body toward the target: {e}");
                    *body = None;
                    progress.body_sent();
                    *committed = true;
                    self.reusable = false;
                }
                // The target waits for bytes that will never come.
                Poll::Ready(Err(BodyError::Client(e))) => {
                    return Poll::Ready(Err(ExchangeError::ClientBody(e)));
                }
                Poll::Pending => {}
            }
        } else {
            ready!(Pin::new(&mut self.io).poll_flush(cx)).map_err(ExchangeError::Closed)?;
        }
        loop {
            if !self.rbuf.is_empty() {
                *committed = true;
            }
            // Parsed again only once a new line came (a head trickled in
            // byte by byte costs one parse a line, not one a byte), or
            // the head grew too large (for the parser to refuse it).
            if self.rbuf[*unparsed_from..].contains(&b'\n') || self.rbuf.len() >= response::MAX_HEAD
            {
                match response::parse(&mut self.rbuf, head_request)? {
                    None => *unparsed_from = self.rbuf.len(),
                    Some(head) => {
                        *unparsed_from = 0;
                        let interim = head.parts.status.is_informational()
                            && head.parts.status != ::http::StatusCode::SWITCHING_PROTOCOLS;
                        if !interim {
                            return Poll::Ready(Ok(head));
                        }
                        continue;
                    }
                }
            }
            let lost = match ready!(self.poll_fill(cx)) {
                Ok(0) => {
                    // A head cut short in a line already malformed is
                    // called malformed whichever segment held the line's
                    // end (fuzzing found the verdict depended on it).
                    if !self.rbuf.is_empty() {
                        response::parse(&mut self.rbuf, head_request)?;
                    }
                    io::ErrorKind::UnexpectedEof.into()
                }
                Ok(_) => continue,
                Err(e) => e,
            };
            return Poll::Ready(Err(if *committed {
                ExchangeError::Io(lost)
            } else {
                ExchangeError::Closed(lost)
            }));
        }
    }

    /// The stream, the bytes read past the response head, and the count
    /// that keeps it open, for a connection switched to another protocol.
    pub fn into_upgraded(self) -> (Stream, BytesMut, OpenCount) {
        (self.io, self.rbuf, self.open)
    }

    /// A request body the target answered before taking whole: the rest
    /// goes on in a task of its own through the connection's writing half,
    /// so it moves whether or not the client reads the response meanwhile
    /// (a client that sends all before reading, and a target that answers
    /// while reading, would otherwise wait on each other for ever). The
    /// connection is not reused after that.
    pub fn upload_apart(self, mut rest: Box<BodySender>) -> Self {
        let TargetConn {
            io,
            rbuf,
            head,
            open,
            ..
        } = self;
        let (reader, mut writer) = tokio::io::split(Box::new(io));
        tokio::spawn(async move {
            if let Err(e) = poll_fn(|cx| rest.poll_send(&mut writer, cx)).await {
                debug!("rest of the request body: {e}");
            }
        });
        TargetConn {
            io: Stream::Reading(reader),
            rbuf,
            head,
            reusable: false,
            open,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };

    use super::*;

    struct Quiet;

    impl BodyProgress for Quiet {
        fn body_awaited(&self) {}
        fn body_moved(&self) {}
        fn body_sent(&self) {}
    }

    /// The target sends `pieces` apart from one another, then closes;
    /// what the exchange made of them.
    async fn exchange_with(pieces: &[&'static [u8]]) -> Result<Head, ExchangeError> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pieces = pieces.to_vec();
        let target = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            // The request is read whole first: closing with it unread
            // would reset the connection instead of ending it.
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut buf = [0u8; 256];
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                request.extend_from_slice(&buf[..n]);
            }
            for p in pieces {
                s.write_all(p).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let io = Stream::Plain(TcpStream::connect(addr).await.unwrap());
        let mut conn = TargetConn::new(io, &Arc::new(AtomicUsize::new(0)));
        conn.head = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
        let out = conn.exchange(&mut None, false, &Quiet).await;
        target.await.unwrap();
        out
    }

    /// Found by the upstream_response fuzz target: a malformed line cut
    /// short by the end of the stream was a bad head when it came with the
    /// line before and a lost connection when it came alone.
    #[tokio::test]
    async fn a_malformed_line_cut_short_is_a_bad_head_however_it_came() {
        let whole: &[&[u8]] = &[b"HTTP/1.1 204 No Content\r\nCon\x7fHTTP/te1"];
        let apart: &[&[u8]] = &[b"HTTP/1.1 204 No Content\r\n", b"Con\x7fHTTP/te1"];
        for pieces in [whole, apart] {
            let out = exchange_with(pieces).await.map(|h| h.parts.status);
            assert!(
                matches!(out, Err(ExchangeError::Head(_))),
                "{pieces:?}: {out:?}"
            );
        }
        // A head merely cut short is a lost connection.
        let cut: &[&[u8]] = &[b"HTTP/1.1 204 No Content\r\n", b"Content-Le"];
        let out = exchange_with(cut).await.map(|h| h.parts.status);
        assert!(matches!(out, Err(ExchangeError::Io(_))), "{out:?}");
    }
}
