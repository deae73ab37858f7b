//! The health checker's reading of an HTTP response (`probe::http_check`,
//! hyper's HTTP/1 client): any bytes from a target end in a verdict, and
//! a status it reports is the one the response carries, as an
//! independent `httparse` reading of the same bytes finds it.
use std::{
    cell::RefCell,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{
    config::{HttpCheck, Matcher},
    health::probe::{Outcome, http_check},
};

/// Header fields of a response at most, as hyper's client.
const MAX_HEADERS: usize = 100;

thread_local! {
    static RUNTIME: RefCell<tokio::runtime::Runtime> = RefCell::new(
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime"),
    );
}

pub fn health_response(data: &[u8]) {
    let Some((&ctl, wire)) = data.split_first() else {
        return;
    };
    let check = HttpCheck {
        path: "/health".into(),
        matcher: Matcher::parse("200-299").expect("a valid matcher"),
        host: None,
    };
    let addr = SocketAddr::from(([192, 0, 2, 1], 80));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let io = Scripted {
        wire: wire.to_vec(),
        at: 0,
        piece: usize::from(ctl).max(1),
        sent: Arc::clone(&sent),
    };
    let outcome = RUNTIME.with(|rt| {
        rt.borrow()
            .block_on(http_check(TokioIo::new(io), &check, addr))
    });
    let reported = match outcome {
        Outcome::Success => None,
        Outcome::ResponseCodeMismatch(code) => Some(code),
        // Bytes that come before the probe asked (a target speaking first,
        // as SSH does) may fail it before it wrote anything.
        Outcome::Failed(_) | Outcome::Timeout => return,
    };
    // A verdict from a status: the probe asked first.
    let sent = sent.lock().expect("not poisoned").clone();
    assert!(
        sent.starts_with(b"GET /health HTTP/1.1\r\n"),
        "the probe sent {:?} and got a status",
        String::from_utf8_lossy(&sent)
    );
    let status = final_status(wire).unwrap_or_else(|| {
        panic!("the checker saw a response ({outcome:?}) where httparse finds no complete one")
    });
    match reported {
        None => assert!(check.matcher.matches(status), "success with {status}"),
        Some(code) => {
            assert_eq!(code, status, "the checker reported another status");
            assert!(!check.matcher.matches(code));
        }
    }
}

/// The status of the first complete head that is not interim (1xx but
/// 101), as `httparse` reads the bytes.
fn final_status(mut wire: &[u8]) -> Option<u16> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut fields);
        let len = match resp.parse(wire) {
            Ok(httparse::Status::Complete(len)) => len,
            _ => return None,
        };
        let code = resp.code?;
        if (100..200).contains(&code) && code != 101 {
            wire = &wire[len..];
            continue;
        }
        return Some(code);
    }
}

/// A target that answers with `wire`, `piece` bytes per read, then
/// closes; what the probe writes is kept.
struct Scripted {
    wire: Vec<u8>,
    at: usize,
    piece: usize,
    sent: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self
            .piece
            .min(self.wire.len() - self.at)
            .min(buf.remaining());
        let at = self.at;
        buf.put_slice(&self.wire[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        self.sent.lock().expect("not poisoned").extend_from_slice(b);
        Poll::Ready(Ok(b.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
