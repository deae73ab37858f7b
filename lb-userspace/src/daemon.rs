//! `lb run`, `lb down` and `lb stats`: the daemon's life cycle.
//!
//! `lb run` loads the config, starts the XDP data path with the first plan
//! (see [`crate::control::xdp`]) unless `daemon.dataplane` says userspace (or
//! `auto` finds XDP unavailable), starts the userspace listeners
//! ([`crate::listeners`]), then runs the control loop: one task that
//! owns the [`Controller`] and serves, in order, signals (SIGHUP reloads,
//! SIGTERM/SIGINT stop), commands from the management API, health verdicts,
//! and timers (drain ends, slow-start steps). Stopping leaves program, links
//! and maps in place: forwarding continues without the daemon and the next
//! `lb run` takes over.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    time::sleep_until,
};
use tracing::{error, info, warn};

use crate::{
    announce::{self, AnnounceMetrics, Announcer, KernelRouting, RoutingError},
    api::{self, ApiServer, Endpoints as ApiEndpoints, auth::Authorizer, server::ServeError},
    bpf::{
        forwarding,
        loader::{self, LoadError},
        stats,
    },
    config::{Config, ConfigError, Dataplane},
    control::{
        Command, ControlHandle, Controller,
        controller::Parts,
        lifecycle::Lifecycle,
        xdp::{XdpError, XdpPath},
    },
    error_chain::ErrorChain,
    fd_limit,
    health::{Checker, HealthError, HealthEvent},
    http::HttpMetrics,
    instance::{self, InstanceError},
    l4::L4Metrics,
    listeners::{Listeners, ListenersError},
    metrics::{
        Metrics,
        endpoint::{self, MetricsServer},
    },
    probe_path::{self, Probes},
    routable, sd_notify,
    state::Plan,
    workers::Workers,
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
    Listeners(#[from] ListenersError),
    #[error(transparent)]
    Health(#[from] HealthError),
    #[error("starting the management API: {0}")]
    Api(#[from] ServeError),
    #[error("starting the worker threads: {0}")]
    Workers(std::io::Error),
    #[error("announcing VIPs: {0}")]
    Announce(#[from] RoutingError),
    #[error(
        "withdrawing this host's VIP routes failed, so the data path stays attached (fix the cause and run `lb down` again): {0}"
    )]
    Withdraw(RoutingError),
    #[error("removing the dsr probe path: {0}")]
    ProbePath(#[from] probe_path::ProbePathError),
    #[error("binding the metrics endpoint {addr}: {source}")]
    MetricsBind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

fn check_forwarding(config: &Config) -> Result<(), DaemonError> {
    let v4 = config.listeners.iter().any(|l| l.address.is_ipv4());
    let v6 = config.listeners.iter().any(|l| l.address.is_ipv6());
    let d = &config.daemon;
    let all: Vec<String> = d
        .interfaces
        .iter()
        .chain(&d.tc_interfaces)
        .cloned()
        .collect();
    Ok(forwarding::check(&all, v4, v6)?)
}

/// Per `daemon.dataplane`: the XDP path, or `None` when tcp and udp
/// listeners are served in userspace (`auto` falls back with a warning).
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
                    "XDP data path unavailable; tcp and udp listeners are served by the userspace proxy and relay"
                );
                Ok(None)
            }
        },
    }
}

/// The threads of the userspace listeners, per `daemon.worker_threads`.
fn start_workers(config: &Config) -> Result<Arc<Workers>, DaemonError> {
    let workers = match config.daemon.worker_threads {
        0 => Workers::per_cpu(),
        n => Workers::start(n as usize),
    }
    .map_err(DaemonError::Workers)?;
    info!(threads = workers.count(), "worker threads started");
    Ok(workers)
}

/// `lb run`.
pub async fn run(path: &Path) -> Result<(), DaemonError> {
    let config = Config::load(path)?;
    let _lock = instance::acquire(&config.daemon.pin_dir)?;
    let metrics = Arc::new(Metrics::new());
    let mut lifecycle = Lifecycle::new();
    lifecycle.sync(&config, Instant::now());
    let (plan, first) = Controller::initial_plan(&config, &lifecycle);
    let xdp = start_xdp(&config, &plan)?;
    raise_fd_limit(&config, xdp.is_some());
    let (routable, routable_rx) = routable::channel(first);
    let mut userspace = Listeners::new(
        routable_rx,
        metrics.register(L4Metrics::register),
        metrics.register(HttpMetrics::register),
        start_workers(&config)?,
    );
    userspace.apply(&config, xdp.is_none()).await?;
    let (checker, health) = Checker::new(metrics.health())?;
    let announcer = Announcer::new(
        KernelRouting::open()?,
        metrics.register(AnnounceMetrics::register),
    );
    let parts = Parts {
        xdp,
        userspace,
        routable,
        checker,
        probes: Probes::new(config.daemon.pin_dir.clone()),
        metrics: Arc::clone(&metrics),
        announcer,
    };
    let mut controller = Controller::new(path.to_owned(), config, lifecycle, parts);
    controller.start_checks().await;
    // Only now that the data path is attached and programmed.
    controller.announce().await;
    let (handle, commands) = ControlHandle::channel(64);
    let mut endpoints = Endpoints::start(&controller, handle, metrics).await?;
    info!(
        config = %path.display(),
        pin_dir = %controller.config().daemon.pin_dir.display(),
        api = %controller.config().api.socket.display(),
        "lb running"
    );
    notify(sd_notify::ready());
    let result = control_loop(&mut controller, commands, health, &mut endpoints).await;
    notify(sd_notify::stopping());
    endpoints.stop().await;
    result?;
    if controller.has_xdp() {
        warn!(
            "stopping: the program stays attached and keeps forwarding, and announced VIPs stay announced; `lb down` withdraws and detaches"
        );
    }
    Ok(())
}

/// Raises `RLIMIT_NOFILE` to its hard limit and warns when that is below
/// what the listeners' connection caps can take: `accept` would then fail
/// before a cap is reached. Not fatal: small configs need few descriptors.
fn raise_fd_limit(config: &Config, xdp_serves_tcp: bool) {
    let needed = fd_limit::needed(config, xdp_serves_tcp);
    match fd_limit::raise() {
        Ok(limit) if limit.soft < needed => warn!(
            limit = limit.soft,
            needed,
            "the open-file limit (RLIMIT_NOFILE) is below what the listeners' max_connections can take (two per connection): raise the hard limit (LimitNOFILE= in systemd, ulimit -Hn) or lower max_connections"
        ),
        Ok(limit) => info!(limit = limit.soft, needed, "open-file limit"),
        Err(e) => warn!(error = %e, "could not raise the open-file limit (RLIMIT_NOFILE)"),
    }
}

/// systemd notifications are best effort: a failure is logged.
fn notify(result: std::io::Result<bool>) {
    if let Err(e) = result {
        warn!(error = %e, "notifying systemd");
    }
}

/// The management API and the metrics endpoint, re-bound when `[api]`
/// changes.
struct Endpoints {
    api: Option<ApiServer>,
    metrics_server: Option<MetricsServer>,
    /// The `[api]` they were started from.
    config: crate::config::Api,
    handle: ControlHandle,
    metrics: Arc<Metrics>,
}

impl Endpoints {
    async fn start(
        controller: &Controller,
        handle: ControlHandle,
        metrics: Arc<Metrics>,
    ) -> Result<Self, DaemonError> {
        let config = controller.config().api.clone();
        let authz = Arc::new(Authorizer::new(&config));
        let api = api::serve(&ApiEndpoints::from(&config), handle.clone(), authz).await?;
        let metrics_server = match config.metrics_listen {
            Some(addr) => Some(
                endpoint::serve(
                    addr,
                    Arc::clone(&metrics),
                    controller.config_watch(),
                    controller.has_xdp(),
                )
                .await
                .map_err(|source| DaemonError::MetricsBind { addr, source })?,
            ),
            None => None,
        };
        Ok(Self {
            api: Some(api),
            metrics_server,
            config,
            handle,
            metrics,
        })
    }

    /// Follows a changed `[api]`: new policies and tokens take effect at
    /// once; a changed socket or address is re-bound (a failure is logged and
    /// the old endpoint is gone: the config said so).
    async fn sync(&mut self, controller: &Controller) {
        let new = &controller.config().api;
        if *new == self.config {
            return;
        }
        let authz = Arc::new(Authorizer::new(new));
        // The router is built once per server: turning the status page on
        // or off starts a new one, like a new address.
        let rebind = new.socket != self.config.socket
            || new.listen != self.config.listen
            || new.status_page != self.config.status_page;
        if rebind {
            if let Some(old) = self.api.take() {
                old.retire().await;
            }
            match api::serve(&ApiEndpoints::from(new), self.handle.clone(), authz).await {
                Ok(server) => self.api = Some(server),
                Err(e) => error!(error = %ErrorChain(&e), "re-binding the management API failed"),
            }
        } else if let Some(api) = &self.api {
            api.set_authorizer(authz);
        }
        if new.metrics_listen != self.config.metrics_listen {
            // Closed before the new address is bound: it may overlap the
            // old one (127.0.0.1:9100 -> 0.0.0.0:9100).
            if let Some(old) = self.metrics_server.take() {
                old.stop().await;
            }
            if let Some(addr) = new.metrics_listen {
                match endpoint::serve(
                    addr,
                    Arc::clone(&self.metrics),
                    controller.config_watch(),
                    controller.has_xdp(),
                )
                .await
                {
                    Ok(server) => self.metrics_server = Some(server),
                    Err(e) => error!(%addr, error = %e, "binding the metrics endpoint failed"),
                }
            }
        }
        self.config = new.clone();
    }

    async fn stop(mut self) {
        self.metrics_server = None;
        if let Some(api) = self.api.take() {
            api.shutdown().await;
        }
    }
}

/// Serves signals, commands, health verdicts and timers until SIGTERM or
/// SIGINT.
async fn control_loop(
    controller: &mut Controller,
    mut commands: mpsc::Receiver<Command>,
    mut health: mpsc::UnboundedReceiver<HealthEvent>,
    endpoints: &mut Endpoints,
) -> Result<(), DaemonError> {
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut recheck = tokio::time::interval(announce::RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let wakeup = controller.next_wakeup();
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                notify(sd_notify::reloading());
                // Errors are logged and kept for `lb status`.
                let _ = controller.reload().await;
                endpoints.sync(controller).await;
                notify(sd_notify::ready());
            }
            Some(cmd) = commands.recv() => {
                controller.handle(cmd).await;
                endpoints.sync(controller).await;
            }
            Some(event) = health.recv() => controller.on_health_event(event),
            _ = sleep_until(wakeup.unwrap_or_else(Instant::now).into()), if wakeup.is_some() => {
                controller.on_timer();
            }
            _ = recheck.tick() => controller.on_recheck().await,
        }
    }
    Ok(())
}

/// `lb down`: withdraw this host's VIP routes (`[bgp]`), then detach and
/// unpin everything under the config's pin directory, and remove the dsr
/// probe path (rules and device). Withdrawing first
/// moves the routers' traffic away before the program goes; if it fails,
/// nothing is detached (the host keeps forwarding what it attracts).
pub fn down(path: &Path) -> Result<Vec<String>, DaemonError> {
    let config = Config::load(path)?;
    // Refused while `lb run` serves these pins: it would keep programming
    // maps that no longer reach the data path.
    let _lock = instance::acquire(&config.daemon.pin_dir)?;
    let owner = announce::owner(&config);
    let mut done: Vec<String> = announce::withdraw_all(&config)
        .map_err(DaemonError::Withdraw)?
        .into_iter()
        .map(|vip| format!("withdrew {vip} ({owner})"))
        .collect();
    done.extend(loader::teardown(&config.daemon.pin_dir)?);
    done.extend(probe_path::tear_down()?);
    Ok(done)
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
