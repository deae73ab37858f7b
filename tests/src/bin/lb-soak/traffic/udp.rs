//! UDP through the XDP path: flows (one socket each) of request and
//! answer; the answer names the target and the client address it saw and
//! carries the request. A flow stays on its target (across reloads and
//! daemon restarts) until that target is drained, when it ends.
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;

use super::{Kind, OnTarget, Rng, Shared, timed};

const KIND: Kind = Kind::Udp;

pub async fn run(shared: Arc<Shared>, worker: usize) {
    let mut rng = Rng::new(0x0d9 + worker as u64);
    while !shared.stopping() {
        if let Err(e) = flow(&shared, worker, &mut rng).await {
            shared.tally.fail(KIND, format!("worker {worker}: {e}"));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn flow(shared: &Arc<Shared>, worker: usize, rng: &mut Rng) -> Result<(), String> {
    let sock = UdpSocket::bind("0.0.0.0:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    sock.connect(shared.endpoints.udp)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let local = sock.local_addr().map_err(|e| e.to_string())?;
    shared.tally.connected(KIND);
    let mut on: Option<OnTarget> = None;
    let mut buf = vec![0u8; 65536];
    for n in 0..rng.between(20, 300) {
        if shared.stopping() || on.as_ref().is_some_and(OnTarget::leave) {
            break;
        }
        let len = rng.between(1, 1200);
        let mut out = format!("soak {worker} {n} ").into_bytes();
        out.extend_from_slice(&rng.text(len));
        timed("send", sock.send(&out)).await?;
        let got = timed("answer", sock.recv(&mut buf))
            .await
            .map_err(|e| format!("{e} (datagram {n} from {local})"))?;
        let answer = &buf[..got];
        let name = answer_target(answer, &local.to_string(), &out)
            .ok_or_else(|| format!("datagram {n}: answer {:?}", String::from_utf8_lossy(answer)))?;
        match &on {
            None if shared.known_target(name) => on = Some(OnTarget::new(shared, name)),
            None => return Err(format!("answer from unknown target {name:?}")),
            Some(t) if t.name != name => {
                return Err(format!(
                    "flow {local} moved from {} to {name} at datagram {n}",
                    t.name
                ));
            }
            Some(_) => {}
        }
        shared.tally.ok(KIND, out.len(), got);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// `<name> <client> <request>`: the name, when the rest is right.
fn answer_target<'a>(answer: &'a [u8], client: &str, request: &[u8]) -> Option<&'a str> {
    let text = std::str::from_utf8(answer).ok()?;
    let (name, rest) = text.split_once(' ')?;
    let (seen, echoed) = rest.split_once(' ')?;
    (seen == client && echoed.as_bytes() == request).then_some(name)
}
