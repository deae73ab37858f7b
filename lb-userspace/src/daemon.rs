//! `lb run`, `lb down` and `lb stats`: the daemon's life cycle around the
//! kernel objects.
//!
//! Order on start: load the object (reusing pinned maps), recover the
//! control-plane view from those maps, apply the config, and only then attach
//! (or swap the program into the existing links), so the first packet a new
//! attachment sees already finds its VIPs. SIGTERM/SIGINT leave program,
//! links and maps in place: forwarding continues without the daemon and the
//! next `lb run` takes over. SIGHUP re-reads the config and applies the
//! difference; an invalid file is reported and the running config stays.
//!
//! `daemon.dataplane` decides whether the XDP path is loaded at all
//! (`userspace`: no; `auto`: tried, with a warning and the userspace proxy
//! when it fails). The daemon's own listeners ([`crate::proxy::Proxies`])
//! are applied after the maps, on start and on every reload.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use prometheus_client::registry::Registry;

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};
use tracing::{error, info, warn};

use crate::{
    bpf::{
        forwarding,
        kernel_maps::{KernelMapError, KernelMaps},
        loader::{self, AttachMode, LoadError, LoadSpec},
        stats,
    },
    config::{Config, ConfigError, Dataplane, XdpMode},
    instance::{self, InstanceError},
    proxy::{Proxies, ProxyError, ProxyMetrics},
    routable::{self, Routable},
    state::{ApplyError, Reconciler},
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Maps(#[from] KernelMapError),
    #[error("programming the maps: {0}")]
    Apply(#[from] ApplyError),
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(
        "reload changes [daemon] settings ({0}); those need a restart (`lb down` first when map sizes change)"
    )]
    DaemonChanged(&'static str),
    #[error(transparent)]
    Stats(#[from] stats::StatsError),
    #[error(transparent)]
    Forwarding(#[from] forwarding::ForwardingOff),
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
}

pub fn load_spec(cfg: &Config) -> LoadSpec {
    LoadSpec {
        pin_dir: cfg.daemon.pin_dir.clone(),
        interfaces: cfg.daemon.interfaces.clone(),
        mode: match cfg.daemon.xdp_mode {
            XdpMode::Driver => AttachMode::Driver,
            XdpMode::Generic => AttachMode::Generic,
            XdpMode::Auto => AttachMode::Auto,
        },
        ring_size: cfg.daemon.maglev_table_size,
        max_vips: cfg.daemon.max_vips,
        flow_capacity: cfg.daemon.flow_capacity,
    }
}

/// The XDP data path: the loaded object, its maps, and our view of them.
struct Xdp {
    // Keeps the program loaded while we hold it (the links hold it too).
    _ebpf: aya::Ebpf,
    maps: KernelMaps,
    state: Reconciler,
}

impl Xdp {
    fn start(config: &Config) -> Result<Self, DaemonError> {
        check_forwarding(config)?;
        let spec = load_spec(config);
        let mut ebpf = loader::load(&spec)?;
        let mut maps = KernelMaps::new(&mut ebpf)?;
        let mut state = Reconciler::recover(&maps)?;
        let report = state.apply(&mut maps, config)?;
        info!(%report, "maps programmed");
        let orphans = maps.purge_orphan_flows()?;
        if orphans > 0 {
            info!(orphans, "removed flows of VIPs that no longer exist");
        }
        loader::attach(&mut ebpf, &spec)?;
        Ok(Self {
            _ebpf: ebpf,
            maps,
            state,
        })
    }

    /// Per `daemon.dataplane`: the XDP path, or `None` when tcp listeners
    /// are served in userspace (`auto` falls back with a warning).
    fn start_for(config: &Config) -> Result<Option<Self>, DaemonError> {
        match config.daemon.dataplane {
            Dataplane::Xdp => Self::start(config).map(Some),
            Dataplane::Userspace => Ok(None),
            Dataplane::Auto => match Self::start(config) {
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
}

/// A running daemon: the XDP path (if any), the userspace listeners.
struct Running {
    xdp: Option<Xdp>,
    proxies: Proxies,
    routable: watch::Sender<Arc<Routable>>,
    // Read by the metrics endpoint (control plane) once it is served.
    _registry: Registry,
    config: Config,
}

impl Running {
    async fn start(config: Config) -> Result<Self, DaemonError> {
        let xdp = Xdp::start_for(&config)?;
        let (routable, watch) = routable::channel(Routable::from_config(&config));
        let mut registry = Registry::default();
        let mut proxies = Proxies::new(watch, ProxyMetrics::register(&mut registry));
        proxies.apply(&config, xdp.is_none()).await?;
        Ok(Self {
            xdp,
            proxies,
            routable,
            _registry: registry,
            config,
        })
    }

    async fn reload(&mut self, path: &Path) -> Result<(), DaemonError> {
        let new = Config::load(path)?;
        if let Some(what) = daemon_change(&self.config, &new) {
            return Err(DaemonError::DaemonChanged(what));
        }
        if let Some(xdp) = &mut self.xdp {
            check_forwarding(&new)?;
            let report = xdp.state.apply(&mut xdp.maps, &new)?;
            info!(%report, "maps programmed");
        }
        self.routable
            .send_replace(Arc::new(Routable::from_config(&new)));
        self.proxies.apply(&new, self.xdp.is_none()).await?;
        info!("config reloaded");
        self.config = new;
        Ok(())
    }
}

fn check_forwarding(config: &Config) -> Result<(), DaemonError> {
    let v4 = config.listeners.iter().any(|l| l.address.is_ipv4());
    let v6 = config.listeners.iter().any(|l| l.address.is_ipv6());
    Ok(forwarding::check(&config.daemon.interfaces, v4, v6)?)
}

/// `[daemon]` settings a reload cannot change in place.
fn daemon_change(old: &Config, new: &Config) -> Option<&'static str> {
    let (a, b) = (&old.daemon, &new.daemon);
    if a.interfaces != b.interfaces {
        Some("interfaces")
    } else if a.pin_dir != b.pin_dir {
        Some("pin_dir")
    } else if a.maglev_table_size != b.maglev_table_size {
        Some("maglev_table_size")
    } else if a.flow_capacity != b.flow_capacity {
        Some("flow_capacity")
    } else if a.max_vips != b.max_vips {
        Some("max_vips")
    } else if a.xdp_mode != b.xdp_mode {
        Some("xdp_mode")
    } else if a.dataplane != b.dataplane {
        Some("dataplane")
    } else {
        None
    }
}

/// `lb run`.
pub async fn run(path: &Path) -> Result<(), DaemonError> {
    let config = Config::load(path)?;
    let _lock = instance::acquire(&config.daemon.pin_dir)?;
    let mut running = Running::start(config).await?;
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    info!(
        config = %path.display(),
        pin_dir = %running.config.daemon.pin_dir.display(),
        "lb running"
    );
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => match running.reload(path).await {
                Ok(()) => {}
                Err(e) => error!(error = %ErrorChain(&e), "reload refused; the running config stays"),
            },
        }
    }
    warn!("stopping: the program stays attached and keeps forwarding; `lb down` detaches it");
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
