//! HTTP/2 frames written and read by hand, for the clients no HTTP/2
//! library lets a test be: silent ones, ones that never acknowledge, and
//! floods (RFC 9113 section 4: a 9-byte header, then the payload).
use std::io::{self, Read, Write};

/// The client connection preface (RFC 9113 section 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;

pub const ACK: u8 = 0x1;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// GOAWAY and RST_STREAM error codes (RFC 9113 section 7).
pub const NO_ERROR: u32 = 0x0;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame as it goes on the wire.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame length");
    assert!(len < 1 << 24, "frame too long");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The preface and an empty SETTINGS frame: what a client sends first.
pub fn hello() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out
}

/// An HPACK integer with a `prefix`-bit prefix, `flags` in the first
/// byte's high bits (RFC 7541 section 5.1).
fn hpack_int(out: &mut Vec<u8>, prefix: u8, flags: u8, mut value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A literal field without indexing whose name is static table entry
/// `index` (RFC 7541 section 6.2.2), value not Huffman-coded.
fn literal(out: &mut Vec<u8>, index: usize, value: &str) {
    hpack_int(out, 4, 0x00, index);
    hpack_int(out, 7, 0x00, value.len());
    out.extend_from_slice(value.as_bytes());
}

/// A HEADERS frame for `method path` on `stream` (END_HEADERS; END_STREAM
/// unless `content_length` says a body follows).
pub fn request(stream: u32, method: &str, path: &str, content_length: Option<u64>) -> Vec<u8> {
    let mut block = Vec::new();
    match method {
        // Static table: 2 is `:method GET`, 3 `:method POST`.
        "GET" => block.push(0x82),
        "POST" => block.push(0x83),
        other => literal(&mut block, 2, other),
    }
    block.push(0x86); // :scheme http
    literal(&mut block, 4, path); // :path
    literal(&mut block, 1, "h"); // :authority
    if let Some(n) = content_length {
        literal(&mut block, 28, &n.to_string()); // content-length
    }
    let flags = match content_length {
        Some(_) => END_HEADERS,
        None => END_HEADERS | END_STREAM,
    };
    frame(HEADERS, flags, stream, &block)
}

/// A frame as read.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A GOAWAY's error code.
    pub fn goaway_code(&self) -> Option<u32> {
        (self.kind == GOAWAY && self.payload.len() >= 8)
            .then(|| u32::from_be_bytes(self.payload[4..8].try_into().expect("four bytes")))
    }
}

/// The next frame on `s`.
pub fn read_frame(s: &mut impl Read) -> io::Result<Frame> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head)?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload)?;
    Ok(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes(head[5..9].try_into().expect("four bytes")) & 0x7fff_ffff,
        payload,
    })
}

/// Reads frames until a GOAWAY comes and returns its error code; `None`
/// when the stream ends (or fails) first. Answers nothing: a silent client.
pub fn until_goaway(s: &mut impl Read) -> Option<u32> {
    loop {
        let f = read_frame(s).ok()?;
        if let Some(code) = f.goaway_code() {
            return Some(code);
        }
    }
}

/// Writes `frames` again and again for `rounds` rounds, stopping at the
/// first failed write (the server closed); the rounds written.
pub fn flood(s: &mut impl Write, frames: &[u8], rounds: usize) -> usize {
    (0..rounds)
        .take_while(|_| s.write_all(frames).is_ok())
        .count()
}
