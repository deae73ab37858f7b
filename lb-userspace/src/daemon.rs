//! `lb run`, `lb down` and `lb stats`: the daemon's life cycle.
//!
//! `lb run` loads the config, starts the XDP data path with the first plan
//! (see [`crate::control::xdp`]) unless `daemon.dataplane` says userspace (or
//! `auto` finds XDP unavailable), starts the userspace listeners
//! ([`crate::proxy`]), then runs the control loop: one task that
//! owns the [`Controller`] and serves, in order, signals (SIGHUP reloads,
//! SIGTERM/SIGINT stop), commands from the management API, health verdicts,
//! and timers (drain ends, slow-start steps). Stopping leaves program, links
//! and maps in place: forwarding continues without the daemon and the next
//! `lb run` takes over.
use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use tokio::{
    signal::unix::{SignalKind, signal},
    time::sleep_until,
};
use tracing::{info, warn};

use prometheus_client::registry::Registry;

use crate::{
    bpf::{
        forwarding,
        loader::{self, LoadError},
        stats,
    },
    config::{Config, ConfigError, Dataplane},
    control::{
        Command, ControlHandle, Controller,
        lifecycle::Lifecycle,
        xdp::{XdpError, XdpPath},
    },
    http::HttpMetrics,
    instance::{self, InstanceError},
    proxy::{Proxies, ProxyError, ProxyMetrics},
    routable,
    state::Plan,
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Xdp(#[from] XdpError),
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Stats(#[from] stats::StatsError),
    #[error(transparent)]
    Forwarding(#[from] forwarding::ForwardingOff),
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
}

fn check_forwarding(config: &Config) -> Result<(), DaemonError> {
    let v4 = config.listeners.iter().any(|l| l.address.is_ipv4());
    let v6 = config.listeners.iter().any(|l| l.address.is_ipv6());
    Ok(forwarding::check(&config.daemon.interfaces, v4, v6)?)
}

/// Per `daemon.dataplane`: the XDP path, or `None` when tcp listeners are
/// served in userspace (`auto` falls back with a warning).
fn start_xdp(config: &Config, plan: &Plan) -> Result<Option<XdpPath>, DaemonError> {
    let start = || -> Result<XdpPath, DaemonError> {
        check_forwarding(config)?;
        Ok(XdpPath::start(config, plan)?)
    };
    match config.daemon.dataplane {
        Dataplane::Xdp => start().map(Some),
        Dataplane::Userspace => Ok(None),
        Dataplane::Auto => match start() {
            Ok(xdp) => Ok(Some(xdp)),
            Err(e) => {
                warn!(
                    reason = %ErrorChain(&e),
                    "XDP data path unavailable; tcp listeners are served by the userspace proxy"
                );
                Ok(None)
            }
        },
    }
}

/// `lb run`.
pub async fn run(path: &Path) -> Result<(), DaemonError> {
    let config = Config::load(path)?;
    let _lock = instance::acquire(&config.daemon.pin_dir)?;
    let mut lifecycle = Lifecycle::new();
    lifecycle.sync(&config, Instant::now());
    let (plan, first) = Controller::initial_plan(&config, &lifecycle);
    let xdp = start_xdp(&config, &plan)?;
    let (routable_tx, routable_rx) = routable::channel(first);
    let mut registry = Registry::default();
    let mut proxies = Proxies::new(
        routable_rx,
        ProxyMetrics::register(&mut registry),
        HttpMetrics::register(&mut registry),
    );
    proxies.apply(&config, xdp.is_none()).await?;
    let mut controller = Controller::new(
        path.to_owned(),
        config,
        lifecycle,
        xdp,
        proxies,
        routable_tx,
    );
    let (_handle, commands) = ControlHandle::channel(64);
    info!(
        config = %path.display(),
        pin_dir = %controller.config().daemon.pin_dir.display(),
        "lb running"
    );
    control_loop(&mut controller, commands).await?;
    warn!("stopping: the program stays attached and keeps forwarding; `lb down` detaches it");
    Ok(())
}

/// Serves signals, commands and timers until SIGTERM or SIGINT.
async fn control_loop(
    controller: &mut Controller,
    mut commands: tokio::sync::mpsc::Receiver<Command>,
) -> Result<(), DaemonError> {
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    loop {
        let wakeup = controller.next_wakeup();
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                // Errors are logged and kept for `lb status`.
                let _ = controller.reload().await;
            }
            Some(cmd) = commands.recv() => controller.handle(cmd).await,
            _ = sleep_until(wakeup.unwrap_or_else(Instant::now).into()), if wakeup.is_some() => {
                controller.on_timer();
            }
        }
    }
    Ok(())
}

/// `lb down`: detach and unpin everything under the config's pin directory.
pub fn down(path: &Path) -> Result<Vec<String>, DaemonError> {
    let config = Config::load(path)?;
    // Refused while `lb run` serves these pins: it would keep programming
    // maps that no longer reach the data path.
    let _lock = instance::acquire(&config.daemon.pin_dir)?;
    Ok(loader::teardown(&config.daemon.pin_dir)?)
}

/// `lb stats`: counters from the pinned maps.
pub fn stats(path: &Path) -> Result<stats::Snapshot, DaemonError> {
    let config = Config::load(path)?;
    Ok(stats::snapshot(&config.daemon.pin_dir)?)
}

/// Pin directory of a config (for commands that only need pins).
pub fn pin_dir(path: &Path) -> Result<PathBuf, DaemonError> {
    Ok(Config::load(path)?.daemon.pin_dir)
}

/// Formats an error with its sources, one per `: `.
pub struct ErrorChain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}
