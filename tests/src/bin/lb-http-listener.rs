//! Serves the `http`/`https` listeners of a config through
//! `lb::http::serve`, without the rest of the daemon: the layer-7 tests'
//! and benchmark's way in until `lb run` dispatches those listeners itself.
//!
//! `lb-http-listener --config FILE [--tls-cert C --tls-key K]` prints
//! `ready` once every listener is bound. `https` listeners use the given
//! certificate (required when there is one).
use std::{path::PathBuf, sync::Arc};

use anyhow::{Context, Result, bail};
use clap::Parser;
use lb::{
    config::{Config, Protocol},
    http::{HttpListener, HttpMetrics, serve},
    routable::{self, Routable},
};
use tokio::net::TcpListener;

#[derive(Parser)]
struct Cli {
    #[arg(long)]
    config: PathBuf,
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads)
        .enable_all()
        .build()?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let config = Config::load(&cli.config)?;
    let (_publish, watch) = routable::channel(Routable::from_config(&config));
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(c), Some(k)) => Some(server_config(c, k)?),
        _ => None,
    };
    let metrics = HttpMetrics::default();
    let mut tasks = Vec::new();
    for l in &config.listeners {
        let tls = match l.protocol {
            Protocol::Http => None,
            Protocol::Https => match &tls {
                Some(t) => Some(Arc::clone(t)),
                None => bail!(
                    "listener {} is https: pass --tls-cert and --tls-key",
                    l.name
                ),
            },
            _ => continue,
        };
        let settings = HttpListener::new(&config, l, watch.clone(), metrics.clone())?;
        let addr = std::net::SocketAddr::new(l.address, l.port);
        let socket = TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind {addr}"))?;
        tasks.push(tokio::spawn(serve(socket, Arc::new(settings), tls)));
    }
    println!("ready");
    for t in tasks {
        t.await?;
    }
    Ok(())
}

fn server_config(cert: &PathBuf, key: &PathBuf) -> Result<Arc<rustls::ServerConfig>> {
    let open = |p: &PathBuf| {
        std::fs::File::open(p)
            .map(std::io::BufReader::new)
            .with_context(|| format!("open {}", p.display()))
    };
    let certs = rustls_pemfile::certs(&mut open(cert)?).collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut open(key)?)?.context("no private key")?;
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    Ok(Arc::new(cfg))
}
