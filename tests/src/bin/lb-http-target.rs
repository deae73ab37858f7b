//! HTTP target for the layer-7 tests and benchmark.
//!
//! `lb-http-target --name t1 --listen 10.0.1.2:8080 [--tls-cert C --tls-key K]`
//! prints `ready` once listening, then answers every request with JSON
//! naming itself and echoing the request:
//! `{"name":…,"method":…,"path":…,"query":…,"version":…,"headers":{name:[values]}}`.
//!
//! - `--control ADDR`: a second socket, not counted itself, where
//!   `GET /__stats` answers `{"connections":N,"requests":M,"most_at_once":K}`
//!   (TCP connections accepted, requests answered, and the most requests
//!   being answered at the same time, on the `--listen` sockets since start
//!   or the last reset) and `POST /__stats/reset` zeroes them.
//! - `?sleep_ms=N`: answer after N ms. `?close=1`: answer with
//!   `Connection: close` (and close). `?status=N`: answer with that status.
//! - `?echo=1`: answer with the request's body, read whole.
//!   `?chunked=N`: answer with N bytes of a fixed pattern (byte i is
//!   `i % 251`), streamed in pieces of unknown total length (chunked).
//! - `Upgrade: websocket`: 101 (naming the target in `X-Target`), then
//!   every frame is echoed back.
//! - `--plain`: answer `ok\n` as text/plain instead of JSON (benchmarks).
use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Parser;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    service::service_fn,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use serde_json::{Map, Value, json};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
};
use tokio_rustls::TlsAcceptor;

#[derive(Parser)]
#[command(about = "HTTP target server for the layer-7 tests")]
struct Cli {
    /// Name reported in every answer.
    #[arg(long, default_value = "target")]
    name: String,
    /// Address to listen on (repeatable).
    #[arg(long, required = true)]
    listen: Vec<SocketAddr>,
    /// Address of the statistics socket (see the module docs).
    #[arg(long)]
    control: Option<SocketAddr>,
    /// PEM certificate chain: serve TLS (HTTP/1.1 and h2 by ALPN).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Answer `ok` in plain text (the benchmark's minimal target).
    #[arg(long)]
    plain: bool,
}

#[derive(Default)]
struct Stats {
    connections: AtomicU64,
    requests: AtomicU64,
    /// Requests being answered now (until their handler returns).
    at_once: AtomicU64,
    most_at_once: AtomicU64,
}

/// Counts a request among those being answered until dropped.
struct Answering<'a>(&'a Stats);

impl<'a> Answering<'a> {
    fn new(stats: &'a Stats) -> Self {
        let now = stats.at_once.fetch_add(1, Ordering::Relaxed) + 1;
        stats.most_at_once.fetch_max(now, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.at_once.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Target {
    name: String,
    plain: bool,
    stats: Stats,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(c), Some(k)) => Some(tls_acceptor(c, k)?),
        _ => None,
    };
    let target = Arc::new(Target {
        name: cli.name.clone(),
        plain: cli.plain,
        stats: Stats::default(),
    });
    let mut tasks = Vec::new();
    for addr in &cli.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind {addr}"))?;
        tasks.push(tokio::spawn(accept(
            listener,
            Arc::clone(&target),
            tls.clone(),
            true,
        )));
    }
    if let Some(addr) = cli.control {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind {addr}"))?;
        tasks.push(tokio::spawn(accept(
            listener,
            Arc::clone(&target),
            None,
            false,
        )));
    }
    println!("ready");
    for t in tasks {
        t.await?;
    }
    Ok(())
}

fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> Result<TlsAcceptor> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(|| format!("open {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| format!("open {}", key.display()))?,
    ))?
    .context("no private key")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Serves one socket; `counted`: its connections and requests are in the
/// statistics (false for the control socket).
async fn accept(
    listener: TcpListener,
    target: Arc<Target>,
    tls: Option<TlsAcceptor>,
    counted: bool,
) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        if counted {
            target.stats.connections.fetch_add(1, Ordering::Relaxed);
        }
        let target = Arc::clone(&target);
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve(stream, target, peer, counted).await,
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(stream).await {
                        serve(s, target, peer, counted).await;
                    }
                }
            }
        });
    }
}

async fn serve<IO>(io: IO, target: Arc<Target>, peer: SocketAddr, counted: bool)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let target = Arc::clone(&target);
        async move {
            if counted {
                answer(target, peer, req).await
            } else {
                Ok(control(&target, &req).map(BodyExt::boxed))
            }
        }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .await;
}

/// The control socket: statistics.
fn control(target: &Target, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let stats = &target.stats;
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/__stats") => {
            let body = json!({
                "connections": stats.connections.load(Ordering::Relaxed),
                "requests": stats.requests.load(Ordering::Relaxed),
                "most_at_once": stats.most_at_once.load(Ordering::Relaxed),
            });
            json_response(StatusCode::OK, &body)
        }
        ("POST", "/__stats/reset") => {
            stats.connections.store(0, Ordering::Relaxed);
            stats.requests.store(0, Ordering::Relaxed);
            stats.most_at_once.store(0, Ordering::Relaxed);
            json_response(StatusCode::OK, &json!({}))
        }
        _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "unknown"})),
    }
}

fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find_map(|(k, v)| (k == key).then_some(v))
}

type AnyBody = BoxBody<Bytes, Infallible>;

async fn answer(
    target: Arc<Target>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<AnyBody>, Infallible> {
    let stats = &target.stats;
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let _answering = Answering::new(stats);
    if target.plain {
        return Ok(Response::new(
            Full::new(Bytes::from_static(b"ok\n")).boxed(),
        ));
    }
    let query = req.uri().query().unwrap_or("").to_owned();
    if let Some(ms) = param(&query, "sleep_ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if param(&query, "echo") == Some("1") {
        let body = match req.into_body().collect().await {
            Ok(b) => Full::new(b.to_bytes()),
            Err(e) => {
                let error = json!({"error": e.to_string()});
                return Ok(json_response(StatusCode::BAD_REQUEST, &error).map(BodyExt::boxed));
            }
        };
        return Ok(Response::new(body.boxed()));
    }
    if let Some(n) = param(&query, "chunked").and_then(|v| v.parse().ok()) {
        return Ok(Response::new(Pattern { at: 0, len: n }.boxed()));
    }
    if req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"))
    {
        return Ok(websocket(&mut req, &target.name).map(BodyExt::boxed));
    }
    let mut headers = Map::new();
    for (name, value) in req.headers() {
        let v = Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
        match headers.get_mut(name.as_str()) {
            Some(Value::Array(list)) => list.push(v),
            _ => {
                headers.insert(name.as_str().to_owned(), Value::Array(vec![v]));
            }
        }
    }
    let body = json!({
        "name": target.name,
        "peer": peer.to_string(),
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": query,
        "version": format!("{:?}", req.version()),
        "headers": headers,
    });
    let status = param(&query, "status")
        .and_then(|s| s.parse().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut resp = json_response(status, &body);
    if param(&query, "close") == Some("1") {
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    Ok(resp.map(BodyExt::boxed))
}

/// `?chunked=N`: N pattern bytes in 8 KiB frames, length not announced.
struct Pattern {
    at: u64,
    len: u64,
}

impl Body for Pattern {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let n = (self.len - self.at).min(8192);
        if n == 0 {
            return std::task::Poll::Ready(None);
        }
        let frame: Vec<u8> = (self.at..self.at + n).map(|i| (i % 251) as u8).collect();
        self.at += n;
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from(frame)))))
    }

    fn size_hint(&self) -> SizeHint {
        // Unknown on purpose: hyper then sends it chunked.
        SizeHint::default()
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Accepts the upgrade (RFC 6455 section 4.2.2) and echoes frames on the
/// upgraded connection.
fn websocket(req: &mut Request<Incoming>, name: &str) -> Response<Full<Bytes>> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return json_response(StatusCode::BAD_REQUEST, &json!({"error": "no key"}));
    };
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let _ = echo_frames(TokioIo::new(upgraded)).await;
        }
    });
    let mut accept_input = key.as_bytes().to_vec();
    accept_input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64(&sha1(&accept_input));
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "upgrade")
        .header("sec-websocket-accept", accept)
        .header("x-target", name)
        .body(Full::new(Bytes::new()))
        .expect("static response")
}

/// Echoes data frames (unmasked, as a server sends them), answers pings and
/// close frames; ends when the peer closes.
async fn echo_frames<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> std::io::Result<()> {
    loop {
        let mut head = [0u8; 2];
        s.read_exact(&mut head).await?;
        let opcode = head[0] & 0x0f;
        let masked = head[1] & 0x80 != 0;
        let len = match head[1] & 0x7f {
            126 => u64::from(s.read_u16().await?),
            127 => s.read_u64().await?,
            n => u64::from(n),
        };
        let mut mask = [0u8; 4];
        if masked {
            s.read_exact(&mut mask).await?;
        }
        let mut payload = vec![0u8; usize::try_from(len).unwrap_or(0).min(1 << 20)];
        s.read_exact(&mut payload).await?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        let reply_opcode = if opcode == 0x9 { 0xa } else { opcode };
        let mut frame = vec![0x80 | reply_opcode];
        match payload.len() {
            n if n < 126 => frame.push(n as u8),
            n if n <= 0xffff => {
                frame.push(126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&payload);
        s.write_all(&frame).await?;
        if opcode == 0x8 {
            return Ok(());
        }
    }
}

/// SHA-1 (FIPS 180-4), only for the WebSocket accept key of this test tool.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for chunk in msg.chunks(64) {
        let mut w = [0u32; 80];
        for i in 0..16 {
            w[i] = u32::from_be_bytes([
                chunk[4 * i],
                chunk[4 * i + 1],
                chunk[4 * i + 2],
                chunk[4 * i + 3],
            ]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, v) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&v.to_be_bytes());
    }
    out
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn websocket_accept_of_rfc6455_example() {
        let mut input = b"dGhlIHNhbXBsZSBub25jZQ==".to_vec();
        input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        assert_eq!(
            super::base64(&super::sha1(&input)),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
