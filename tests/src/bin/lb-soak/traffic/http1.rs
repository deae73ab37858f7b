//! HTTP/1.1 through the daemon's http listener: keep-alive connections,
//! each carrying a random number of requests, GETs whose JSON answer must
//! name a target and echo the path, query and X-Forwarded-For, and POSTs
//! whose body must come back whole.
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{Kind, Rng, Shared, timed};

const KIND: Kind = Kind::Http1;

pub async fn run(shared: Arc<Shared>, worker: usize) {
    let mut rng = Rng::new(0x4711 + worker as u64);
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
    let (mut sender, conn) = timed("handshake", http1::handshake(TokioIo::new(stream))).await?;
    let driver = tokio::spawn(conn);
    for n in 0..rng.between(10, 200) {
        if shared.stopping() || shared.paused() {
            break;
        }
        timed("ready", sender.ready()).await?;
        let (req, check) = request(shared, worker, n, rng);
        let sent = req.body().size_hint().exact().unwrap_or(0) as usize;
        let resp = timed("request", sender.send_request(req))
            .await
            .map_err(|e| format!("{e} (request {n})"))?;
        let status = resp.status();
        let body = timed("body", resp.into_body().collect()).await?.to_bytes();
        check.verify(shared, status, &body, "HTTP/1.1")?;
        shared.tally.ok(KIND, sent, body.len());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(sender);
    // The connection ends once the sender is gone and nothing is in flight.
    timed("close", async {
        driver
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    })
    .await?;
    Ok(())
}

/// What an answer must be.
pub enum Check {
    /// The target's JSON echo of this path and query.
    Echo { path: String, query: String },
    /// This body, byte for byte.
    Body(Bytes),
}

/// A GET (3 in 4) or a POST with a body of up to 32 KiB.
pub fn request(
    shared: &Shared,
    worker: usize,
    n: usize,
    rng: &mut Rng,
) -> (Request<Full<Bytes>>, Check) {
    let host = shared.endpoints.http.to_string();
    if rng.between(0, 3) > 0 {
        let path = format!("/soak/{worker}/{n}");
        let query = format!("n={n}&r={}", rng.next() % 1000);
        let req = Request::get(format!("{path}?{query}"))
            .header(http::header::HOST, host)
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        (req, Check::Echo { path, query })
    } else {
        let len = rng.between(0, 32 * 1024);
        let body = Bytes::from(rng.text(len));
        let req = Request::post("/soak/upload?echo=1")
            .header(http::header::HOST, host)
            .body(Full::new(body.clone()))
            .expect("a valid request");
        (req, Check::Body(body))
    }
}

impl Check {
    pub fn verify(
        &self,
        shared: &Shared,
        status: StatusCode,
        body: &[u8],
        version: &str,
    ) -> Result<(), String> {
        if status != StatusCode::OK {
            return Err(format!(
                "{version}: status {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ));
        }
        match self {
            Check::Body(want) if body == want.as_ref() => Ok(()),
            Check::Body(want) => Err(format!(
                "{version}: echoed {} bytes of {} differently",
                body.len(),
                want.len()
            )),
            Check::Echo { path, query } => {
                let v: serde_json::Value = serde_json::from_slice(body)
                    .map_err(|e| format!("{version}: answer is not JSON ({e})"))?;
                let name = v["name"].as_str().unwrap_or_default();
                let xff = v["headers"]["x-forwarded-for"][0]
                    .as_str()
                    .unwrap_or_default();
                let client = shared.endpoints.client.to_string();
                if !shared.known_target(name)
                    || v["path"] != path.as_str()
                    || v["query"] != query.as_str()
                    || xff != client
                {
                    return Err(format!(
                        "{version}: answer for {path}?{query} from {client}: {v}"
                    ));
                }
                Ok(())
            }
        }
    }
}
