//! A target's response head, parsed with `httparse`, and how its body is
//! delimited (RFC 9112 section 6.3).
use std::mem::MaybeUninit;

use ::http::{
    HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Version, header, response::Parts,
};
use bytes::BytesMut;

use super::chunked::Chunked;
use crate::http::headers::connection_has;

/// Header fields of one response at most (as hyper).
const MAX_HEADERS: usize = 100;
/// A response head longer than this is refused (502).
pub const MAX_HEAD: usize = 64 * 1024;

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes are still to come (zero: no body).
    Length(u64),
    Chunked(Chunked),
    /// When the target closes the connection.
    UntilClose,
}

pub struct Head {
    pub parts: Parts,
    pub framing: Framing,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadHead {
    #[error("response head larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("malformed response head: {0}")]
    Malformed(httparse::Error),
    #[error("invalid header field in the response")]
    Field,
    #[error("invalid or conflicting Content-Length in the response")]
    Length,
    /// A transfer coding other than `chunked` alone: nothing could tell
    /// the client the body is still coded once the field is dropped.
    #[error("unsupported Transfer-Encoding in the response")]
    Coding,
}

/// Parses the head at the front of `buf` and takes it out, `None` while it
/// is incomplete. `head_request`: the response to a HEAD has no body,
/// whatever its fields say.
pub fn parse(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, BadHead> {
    // (name, value) byte ranges in the head, so the head can be frozen
    // into one buffer the values point into (no copy per value).
    let mut ranges = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Complete(_)) => return Err(BadHead::TooLarge),
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(BadHead::TooLarge),
        Err(e) => return Err(BadHead::Malformed(e)),
    };
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(BadHead::Malformed(httparse::Error::Status))?;
    let version = match resp.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let base = buf.as_ptr() as usize;
    let count = resp.headers.len();
    for (r, h) in ranges.iter_mut().zip(resp.headers.iter()) {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        // Offsets within a head of at most MAX_HEAD bytes.
        *r = (
            name as u32,
            (name + h.name.len()) as u32,
            value as u32,
            (value + h.value.len()) as u32,
        );
    }
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    for &(n0, n1, v0, v1) in &ranges[..count] {
        let name =
            HeaderName::from_bytes(&head[n0 as usize..n1 as usize]).map_err(|_| BadHead::Field)?;
        let value = HeaderValue::from_maybe_shared(head.slice(v0 as usize..v1 as usize))
            .map_err(|_| BadHead::Field)?;
        headers.append(name, value);
    }
    let (framing, keep_alive) = framing(status, version, &headers, head_request)?;
    if !matches!(framing, Framing::Length(_)) {
        // A length beside a coding is not the body's (RFC 9112 section
        // 6.3): it must not reach the client.
        headers.remove(header::CONTENT_LENGTH);
    }
    let mut parts = Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(Head {
        parts,
        framing,
        keep_alive,
    }))
}

/// The body's delimitation, and whether the connection stays open after it.
fn framing(
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
    head_request: bool,
) -> Result<(Framing, bool), BadHead> {
    let mut keep_alive = version == Version::HTTP_11 && !connection_has(headers, "close");
    let no_body = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if no_body {
        return Ok((Framing::Length(0), keep_alive));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if version != Version::HTTP_11 || !only_chunked(headers) {
            return Err(BadHead::Coding);
        }
        // With Content-Length too, the message is suspect: the coding
        // wins and the connection ends after it.
        keep_alive &= !headers.contains_key(header::CONTENT_LENGTH);
        return Ok((Framing::Chunked(Chunked::Size), keep_alive));
    }
    match content_length(headers)? {
        Some(n) => Ok((Framing::Length(n), keep_alive)),
        None => Ok((Framing::UntilClose, false)),
    }
}

/// Whether `chunked` is the one transfer coding.
fn only_chunked(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty());
    codings
        .next()
        .is_some_and(|c| c.eq_ignore_ascii_case("chunked"))
        && codings.next().is_none()
}

/// The Content-Length, which every occurrence must agree on.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, BadHead> {
    let mut length = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v.to_str().map_err(|_| BadHead::Length)?.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BadHead::Length);
            }
            let n: u64 = part.parse().map_err(|_| BadHead::Length)?;
            if length.is_some_and(|l| l != n) {
                return Err(BadHead::Length);
            }
            length = Some(n);
        }
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(wire: &str, head_request: bool) -> Result<Option<Head>, BadHead> {
        parse(&mut BytesMut::from(wire.as_bytes()), head_request)
    }

    fn head(wire: &str) -> Head {
        parsed(wire, false).unwrap().expect("complete")
    }

    #[test]
    fn takes_the_head_and_leaves_the_body() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: 1\r\nx-a: 2\r\n\r\nok\n"[..],
        );
        let h = parse(&mut buf, false).unwrap().unwrap();
        assert_eq!(&buf[..], b"ok\n");
        assert_eq!(h.parts.status, StatusCode::OK);
        assert_eq!(h.framing, Framing::Length(3));
        assert!(h.keep_alive);
        let xa: Vec<_> = h.parts.headers.get_all("x-a").iter().collect();
        assert_eq!(xa, ["1", "2"]);
    }

    #[test]
    fn an_incomplete_head_waits_and_a_huge_one_is_refused() {
        assert!(
            parsed("HTTP/1.1 200 OK\r\nContent-Le", false)
                .unwrap()
                .is_none()
        );
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD));
        assert_eq!(parsed(&huge, false).err(), Some(BadHead::TooLarge));
        let whole = format!("{huge}\r\n\r\n");
        assert_eq!(parsed(&whole, false).err(), Some(BadHead::TooLarge));
        assert!(matches!(
            parsed("HTTP/1.1 2x0 OK\r\n\r\n", false),
            Err(BadHead::Malformed(_))
        ));
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let chunked = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(chunked.framing, Framing::Chunked(Chunked::Size));
        assert!(chunked.keep_alive);
        let both =
            head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(both.framing, Framing::Chunked(Chunked::Size));
        assert!(!both.keep_alive);
        // The length beside the coding is not passed on.
        assert!(!both.parts.headers.contains_key(header::CONTENT_LENGTH));
        for coded in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(parsed(coded, false).err(), Some(BadHead::Coding), "{coded}");
        }
        let neither = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(
            (neither.framing, neither.keep_alive),
            (Framing::UntilClose, false)
        );
        for no_body in [
            "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
        ] {
            assert_eq!(head(no_body).framing, Framing::Length(0));
        }
        let to_head = parsed("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(to_head.framing, Framing::Length(0));
    }

    #[test]
    fn close_and_http10_end_the_connection() {
        assert!(
            !head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").keep_alive
        );
        assert!(!head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
    }

    #[test]
    fn conflicting_lengths_are_refused() {
        for bad in ["5, 6", "-1", "abc", "", "99999999999999999999999"] {
            let wire = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(parsed(&wire, false).err(), Some(BadHead::Length), "{bad}");
        }
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n").framing,
            Framing::Length(5)
        );
    }
}
