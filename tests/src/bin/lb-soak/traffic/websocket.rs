//! WebSocket through the daemon's http listener: an upgrade (the target
//! names itself in `X-Target`), then masked text messages of up to 4 KiB
//! that must come back whole; a closing handshake at the end. Leaves a
//! target being drained, and parks while the daemon restarts.
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Kind, OnTarget, Rng, Shared, timed};

const KIND: Kind = Kind::WebSocket;
const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;

pub async fn run(shared: Arc<Shared>, worker: usize) {
    let mut rng = Rng::new(0x5050 + worker as u64);
    while shared.park_while_paused().await {
        if let Err(e) = connection(&shared, worker, &mut rng).await {
            shared.tally.fail(KIND, format!("worker {worker}: {e}"));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn connection(shared: &Arc<Shared>, worker: usize, rng: &mut Rng) -> Result<(), String> {
    let mut s = timed("connect", TcpStream::connect(shared.endpoints.http)).await?;
    shared.tally.connected(KIND);
    let name = upgrade(&mut s, shared, worker).await?;
    let on = OnTarget::new(shared, &name);
    for n in 0..rng.between(20, 300) {
        if shared.stopping() || shared.paused() || on.leave() {
            break;
        }
        let len = rng.between(1, 4096);
        let payload = rng.text(len);
        let frame = masked(TEXT, &payload, rng.next() as u32);
        timed("send", s.write_all(&frame))
            .await
            .map_err(|e| format!("{e} (message {n} via {name})"))?;
        let (opcode, echoed) = timed("echo", read_frame(&mut s))
            .await
            .map_err(|e| format!("{e} (message {n} via {name})"))?;
        if opcode != TEXT || echoed != payload {
            return Err(format!(
                "message {n} via {name}: opcode {opcode}, {} bytes back of {len}",
                echoed.len()
            ));
        }
        shared.tally.ok(KIND, frame.len(), echoed.len() + 4);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Closing handshake: our close, its echo, then the end of the stream.
    timed("close", s.write_all(&masked(CLOSE, &[0x03, 0xe8], 7))).await?;
    let (opcode, _) = timed("close echo", read_frame(&mut s)).await?;
    if opcode != CLOSE {
        return Err(format!("answer to close via {name}: opcode {opcode}"));
    }
    drop(on);
    Ok(())
}

/// Sends the upgrade request; returns the target named by the 101.
async fn upgrade(s: &mut TcpStream, shared: &Shared, worker: usize) -> Result<String, String> {
    let request = format!(
        "GET /soak/ws/{worker} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        shared.endpoints.http
    );
    timed("upgrade", s.write_all(request.as_bytes())).await?;
    // Byte by byte up to the blank line: nothing of the tunnel is read.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = timed("101", s.read_u8()).await?;
        head.push(b);
        if head.len() > 16 * 1024 {
            return Err("upgrade answer head too long".into());
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    let name = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-target")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    if !head.starts_with("HTTP/1.1 101") || !head.contains(accept) || !shared.known_target(&name) {
        return Err(format!("upgrade answered {head:?}"));
    }
    Ok(name)
}

/// A client frame (RFC 6455 section 5.2): FIN, `opcode`, masked payload.
fn masked(opcode: u8, payload: &[u8], key: u32) -> Vec<u8> {
    let key = key.to_be_bytes();
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// A server frame (unmasked): its opcode and payload.
async fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await?;
    let len = match head[1] & 0x7f {
        126 => u64::from(s.read_u16().await?),
        127 => s.read_u64().await?,
        n => u64::from(n),
    };
    if head[1] & 0x80 != 0 || len > 1 << 20 {
        return Err(std::io::Error::other(format!("bad frame head {head:02x?}")));
    }
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).await?;
    Ok((head[0] & 0x0f, payload))
}
