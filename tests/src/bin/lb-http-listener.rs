//! Serves the `http`/`https` listeners of a config through
//! `lb::http::serve`, without the rest of the daemon: the layer-7 tests'
//! and benchmark's way in until `lb run` dispatches those listeners itself.
//!
//! `lb-http-listener --config FILE` prints `ready` once every listener is
//! bound. `https` listeners use their `[listener.tls]` (`lb::tls`).
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
    let metrics = HttpMetrics::default();
    let mut tasks = Vec::new();
    for l in &config.listeners {
        let tls = match l.protocol {
            Protocol::Http => None,
            Protocol::Https => match &l.tls {
                Some(t) => Some(lb::tls::https_server_config(t)?),
                None => bail!("listener {} is https without [listener.tls]", l.name),
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
