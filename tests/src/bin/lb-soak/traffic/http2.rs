//! HTTP/2 with prior knowledge (h2c) through the daemon's http listener:
//! connections carrying several streams at once, the same requests and
//! checks as HTTP/1.1.
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::http1::request;
use super::{Kind, Rng, Shared, timed};

const KIND: Kind = Kind::Http2;
/// Streams at once on each connection.
const STREAMS: usize = 4;

pub async fn run(shared: Arc<Shared>, worker: usize) {
    let mut rng = Rng::new(0x2222 + worker as u64);
    while shared.park_while_paused().await {
        if let Err(e) = connection(&shared, worker, &mut rng).await {
            shared.tally.fail(KIND, format!("worker {worker}: {e}"));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn connection(shared: &Arc<Shared>, worker: usize, rng: &mut Rng) -> Result<(), String> {
    let stream = timed("connect", TcpStream::connect(shared.endpoints.http)).await?;
    shared.tally.connected(KIND);
    let (sender, conn) = timed(
        "handshake",
        http2::handshake(TokioExecutor::new(), TokioIo::new(stream)),
    )
    .await?;
    let driver = tokio::spawn(conn);
    let per_stream = rng.between(10, 100);
    let mut streams = Vec::new();
    for s in 0..STREAMS {
        let (shared, mut sender) = (Arc::clone(shared), sender.clone());
        let mut rng = Rng::new(rng.next());
        streams.push(tokio::spawn(async move {
            for n in 0..per_stream {
                if shared.stopping() || shared.paused() {
                    break;
                }
                timed("ready", sender.ready()).await?;
                let (req, check) = request(&shared, worker, s * 1000 + n, &mut rng);
                let sent = req.body().size_hint().exact().unwrap_or(0) as usize;
                let resp = timed("request", sender.send_request(req))
                    .await
                    .map_err(|e| format!("{e} (stream {s}, request {n})"))?;
                let status = resp.status();
                let body = timed("body", resp.into_body().collect()).await?.to_bytes();
                check.verify(&shared, status, &body, "HTTP/2")?;
                shared.tally.ok(KIND, sent, body.len());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok::<(), String>(())
        }));
    }
    drop(sender);
    let mut first_error = None;
    for s in streams {
        let r = s.await.map_err(|e| e.to_string()).and_then(|r| r);
        if let Err(e) = r {
            // Each stream's failure counts; the first one is returned.
            if first_error.is_some() {
                shared.tally.fail(KIND, format!("worker {worker}: {e}"));
            } else {
                first_error = Some(e);
            }
        }
    }
    if let Some(e) = first_error {
        driver.abort();
        return Err(e);
    }
    timed("close", async {
        driver
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    })
    .await?;
    Ok(())
}
