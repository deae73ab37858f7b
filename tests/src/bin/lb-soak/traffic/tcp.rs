//! TCP through the XDP path: connections that greet with their target's
//! name and the client address the target saw (NAT keeps it), then echo
//! lines; each lives for a random number of lines, across reloads and
//! daemon restarts, and leaves a target being drained.
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{Kind, OnTarget, Rng, Shared, timed};

const KIND: Kind = Kind::Tcp;

pub async fn run(shared: Arc<Shared>, worker: usize) {
    let mut rng = Rng::new(0x7c9 + worker as u64);
    while !shared.stopping() {
        if let Err(e) = connection(&shared, worker, &mut rng).await {
            shared.tally.fail(KIND, format!("worker {worker}: {e}"));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn connection(shared: &Arc<Shared>, worker: usize, rng: &mut Rng) -> Result<(), String> {
    let to = shared.endpoints.tcp;
    let stream = timed("connect", TcpStream::connect(to)).await?;
    shared.tally.connected(KIND);
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    let mut stream = BufReader::new(stream);
    let mut greeting = String::new();
    timed("greeting", stream.read_line(&mut greeting)).await?;
    let (name, seen) = greeting
        .trim_end()
        .split_once(' ')
        .ok_or_else(|| format!("greeting {greeting:?}"))?;
    if !shared.known_target(name) || seen != local.to_string() {
        return Err(format!(
            "greeting {greeting:?}: expected a target and {local}"
        ));
    }
    let on = OnTarget::new(shared, name);
    let lines = rng.between(20, 400);
    let mut line = String::new();
    for n in 0..lines {
        if shared.stopping() || on.leave() {
            break;
        }
        let len = rng.between(1, 300);
        let payload = rng.text(len);
        let mut out = format!("soak {worker} {n} ").into_bytes();
        out.extend_from_slice(&payload);
        out.push(b'\n');
        timed("send", stream.get_mut().write_all(&out))
            .await
            .map_err(|e| format!("{e} (line {n} on {name})"))?;
        line.clear();
        timed("echo", stream.read_line(&mut line))
            .await
            .map_err(|e| format!("{e} (line {n} on {name})"))?;
        if line.as_bytes() != out {
            return Err(format!("line {n} on {name}: echoed {line:?}"));
        }
        shared.tally.ok(KIND, out.len(), line.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A clean close: our FIN, then the target's.
    timed("shutdown", stream.get_mut().shutdown()).await?;
    let mut rest = Vec::new();
    timed("close", stream.read_to_end(&mut rest)).await?;
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes after the last echo from {name}",
            rest.len()
        ));
    }
    drop(on);
    Ok(())
}
