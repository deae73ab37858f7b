//! A target's HTTP/1.1 response as the proxy reads it: the head
//! (`upstream::response`, interim 1xx heads skipped) and then the body by
//! its framing (length, `upstream::chunked`, or until close), driven the
//! way `TargetConn::exchange` and `TargetBody` drive them over a socket.
//! The same bytes read whole and in pieces of any size must give the same
//! heads, body, end and leftover: a parser that depends on how TCP cut
//! the stream is wrong.
use bytes::BytesMut;
use http::{StatusCode, header};

use crate::http::upstream::{
    chunked::Step,
    response::{self, Framing},
};

pub fn upstream_response(data: &[u8]) {
    let Some((&ctl, wire)) = data.split_first() else {
        return;
    };
    let head_request = ctl & 0x80 != 0;
    let piece = usize::from(ctl & 0x7f).max(1);
    let whole = read(wire, wire.len().max(1), head_request);
    let pieces = read(wire, piece, head_request);
    assert_eq!(whole, pieces, "read whole, then in pieces of {piece}");
}

/// What the proxy made of a response.
#[derive(Debug, Default, PartialEq, Eq)]
struct Reading {
    /// Status, framing and keep-alive of each head, interim ones first.
    heads: Vec<(u16, Framing, bool)>,
    body: Vec<u8>,
    end: End,
    /// Every byte after the body, read or not yet (the connection is not
    /// reused then, but where the body ended must not depend on the
    /// pieces).
    after: Vec<u8>,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum End {
    #[default]
    Done,
    BadHead(String),
    HeadCut,
    BadChunk,
    BodyCut,
}

fn read(wire: &[u8], piece: usize, head_request: bool) -> Reading {
    let mut input = wire.chunks(piece);
    let mut rbuf = BytesMut::new();
    let mut out = Reading::default();
    let mut framing = match read_head(&mut input, &mut rbuf, head_request, &mut out) {
        Ok(framing) => framing,
        Err(end) => {
            out.end = end;
            return out;
        }
    };
    loop {
        let data = match &mut framing {
            Framing::Length(0) => {
                out.after = rbuf.to_vec();
                out.after.extend(input.flatten());
                return out;
            }
            Framing::Length(left) => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(rbuf.len());
                *left -= n as u64;
                rbuf.split_to(n)
            }
            Framing::Chunked(chunked) => match chunked.step(&mut rbuf) {
                Ok(Step::Data(d)) => {
                    assert!(!d.is_empty(), "an empty piece of chunked data");
                    d.into()
                }
                Ok(Step::More) => BytesMut::new(),
                Ok(Step::End) => {
                    framing = Framing::Length(0);
                    continue;
                }
                Err(_) => {
                    out.end = End::BadChunk;
                    return out;
                }
            },
            Framing::UntilClose => rbuf.split(),
        };
        if !data.is_empty() {
            out.body.extend_from_slice(&data);
            continue;
        }
        match input.next() {
            Some(p) => rbuf.extend_from_slice(p),
            None if framing == Framing::UntilClose => framing = Framing::Length(0),
            None => {
                out.end = End::BodyCut;
                return out;
            }
        }
    }
}

/// The final head's framing, after any interim ones; as
/// `TargetConn::poll_exchange`, parsed again only once a line ended, the
/// head grew too large or the bytes ended.
fn read_head<'a>(
    input: &mut impl Iterator<Item = &'a [u8]>,
    rbuf: &mut BytesMut,
    head_request: bool,
    out: &mut Reading,
) -> Result<Framing, End> {
    let mut unparsed_from = 0;
    loop {
        if rbuf[unparsed_from..].contains(&b'\n') || rbuf.len() >= response::MAX_HEAD {
            match response::parse(rbuf, head_request) {
                Err(e) => return Err(End::BadHead(e.to_string())),
                Ok(None) => unparsed_from = rbuf.len(),
                Ok(Some(head)) => {
                    unparsed_from = 0;
                    let status = head.parts.status;
                    if !matches!(head.framing, Framing::Length(_)) {
                        assert!(
                            !head.parts.headers.contains_key(header::CONTENT_LENGTH),
                            "a Content-Length beside {:?} would reach the client",
                            head.framing
                        );
                    }
                    out.heads
                        .push((status.as_u16(), head.framing, head.keep_alive));
                    let interim =
                        status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS;
                    if !interim {
                        return Ok(head.framing);
                    }
                    continue;
                }
            }
        }
        match input.next() {
            Some(p) => rbuf.extend_from_slice(p),
            // As TargetConn: what is there is parsed once more.
            None if !rbuf.is_empty() => {
                return Err(match response::parse(rbuf, head_request) {
                    Err(e) => End::BadHead(e.to_string()),
                    Ok(_) => End::HeadCut,
                });
            }
            None => return Err(End::HeadCut),
        }
    }
}
