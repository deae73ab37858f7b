//! The chunked transfer coding of a target's response body (RFC 9112
//! section 7.1), decoded as bytes arrive; trailers are read and dropped.
use bytes::{Buf, Bytes, BytesMut};

/// A chunk-size line (with extensions) longer than this is refused.
const MAX_SIZE_LINE: usize = 4096;
/// Trailer section bytes at most.
const MAX_TRAILERS: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk's data: this many bytes still to come.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers {
        seen: usize,
    },
    Done,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Data(Bytes),
    /// Needs more bytes.
    More,
    /// The body ended.
    End,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunked coding from the target")]
pub struct BadChunk;

impl Chunked {
    /// Takes what it can from the front of `buf`: the next piece of data,
    /// or the end.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, BadChunk> {
        loop {
            match *self {
                Chunked::Done => return Ok(Step::End),
                Chunked::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        *self = match size {
                            0 => Chunked::Trailers { seen: 0 },
                            n => Chunked::Data(n),
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() < MAX_SIZE_LINE => {
                        return Ok(Step::More);
                    }
                    _ => return Err(BadChunk),
                },
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    *self = match left - n as u64 {
                        0 => Chunked::DataEnd,
                        rest => Chunked::Data(rest),
                    };
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                Chunked::DataEnd => match buf.get(..2) {
                    None if buf.first().is_none_or(|&b| b == b'\r') => return Ok(Step::More),
                    Some(b"\r\n") => {
                        buf.advance(2);
                        *self = Chunked::Size;
                    }
                    _ => return Err(BadChunk),
                },
                Chunked::Trailers { seen } => {
                    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
                        return if seen + buf.len() < MAX_TRAILERS {
                            Ok(Step::More)
                        } else {
                            Err(BadChunk)
                        };
                    };
                    buf.advance(eol + 2);
                    *self = match eol {
                        0 => Chunked::Done,
                        _ if seen + eol + 2 > MAX_TRAILERS => return Err(BadChunk),
                        _ => Chunked::Trailers {
                            seen: seen + eol + 2,
                        },
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` in pieces of `piece` bytes; returns the data and
    /// whether the end was seen.
    fn decode(wire: &[u8], piece: usize) -> Result<(Vec<u8>, bool), BadChunk> {
        let mut state = Chunked::Size;
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        for part in wire.chunks(piece) {
            buf.extend_from_slice(part);
            loop {
                match state.step(&mut buf)? {
                    Step::Data(d) => data.extend_from_slice(&d),
                    Step::More => break,
                    Step::End => return Ok((data, true)),
                }
            }
        }
        Ok((data, false))
    }

    const WIRE: &[u8] = b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\nx-t: 1\r\n\r\n";

    #[test]
    fn decodes_whatever_the_pieces() {
        for piece in [1, 2, 3, 7, WIRE.len()] {
            assert_eq!(decode(WIRE, piece), Ok((b"hello world!".to_vec(), true)));
        }
    }

    #[test]
    fn stops_at_the_end_and_leaves_what_follows() {
        let mut buf = BytesMut::from(&b"0\r\n\r\nNEXT"[..]);
        assert_eq!(Chunked::Size.step(&mut buf), Ok(Step::End));
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn refuses_malformed_codings() {
        assert_eq!(decode(b"zz\r\n", 64), Err(BadChunk));
        assert_eq!(decode(b"2\r\nabXY", 64), Err(BadChunk));
        assert_eq!(decode(b"fffffffffffffffff\r\n", 64), Err(BadChunk));
        assert_eq!(decode(&[b'1'; MAX_SIZE_LINE + 1], 64), Err(BadChunk));
        let endless_trailers = [&b"0\r\n"[..], &[b'x'; MAX_TRAILERS + 1]].concat();
        assert_eq!(decode(&endless_trailers, 1024), Err(BadChunk));
    }

    #[test]
    fn an_unfinished_body_wants_more() {
        assert_eq!(decode(b"5\r\nhel", 64), Ok((b"hel".to_vec(), false)));
    }
}
