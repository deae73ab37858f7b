//! One `http`/`https` listener, compiled from the config: its rules, its
//! default action, its TLS side, the back-end pools of the groups it
//! forwards to (from [`Pools`], which keeps them across reloads), its access
//! log and metrics. Rebuilt on every reload and swapped under running
//! connections (`super::server::Settings`).
use std::{
    collections::HashMap,
    io,
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::conn::auto,
};
use prometheus_client::metrics::counter::Counter;
use tokio_rustls::TlsAcceptor;

use super::{
    access_log::AccessLog,
    limits::READ_BUFFER,
    metrics::{CutSeries, ElbSeries, GroupSeries, HttpListenerLabels, HttpMetrics},
    pool::GroupPool,
    pools::Pools,
    rules::Rules,
};
use crate::{
    config::{
        Config, Listener, Protocol,
        http::{Action, HTTP2_MAX_STREAMS, WeightedGroup},
    },
    conn_cap::{Caps, RefusedSeries},
    routable::RoutableWatch,
    tls::{self, HandshakeLog, Tickets, TlsError},
};

#[derive(Debug, thiserror::Error)]
pub enum HttpListenerError {
    #[error("listener {listener:?} is {protocol}, not http or https")]
    NotHttp {
        listener: String,
        protocol: Protocol,
    },
    #[error("listener {listener:?} has no default action")]
    NoDefaultAction { listener: String },
    #[error("listener {listener:?} is https without a [listener.tls] table")]
    NoTls { listener: String },
    #[error("listener {listener:?}: {source}")]
    Tls {
        listener: String,
        #[source]
        source: TlsError,
    },
    #[error("listener {listener:?}: cannot open access log {path}")]
    AccessLog {
        listener: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A target group as one listener uses it: found with one lookup per
/// request.
pub struct ListenerGroup {
    pub pool: Arc<GroupPool>,
    /// The listener's target series for the group, looked up once.
    pub series: GroupSeries,
}

pub struct HttpListener {
    pub name: String,
    pub protocol: Protocol,
    pub address: IpAddr,
    pub port: u16,
    pub idle_timeout: Duration,
    /// Target connections one HTTP/2 client connection may hold at once.
    pub http2_max_target_connections: usize,
    /// Request paths are normalised before the rules (`super::path`).
    pub normalize_path: bool,
    /// `https`: the server side of the client's handshake.
    pub tls: Option<TlsAcceptor>,
    /// `https`: failed client handshakes, counted (ALB's
    /// `ClientTLSNegotiationErrorCount`) and logged as a sample.
    pub tls_failures: Counter,
    pub handshake_log: HandshakeLog,
    /// HTTP/1.1 and HTTP/2 toward clients, with this listener's timeouts.
    pub builder: auto::Builder<TokioExecutor>,
    pub rules: Rules,
    pub default_action: Action,
    /// What each target group it forwards to needs, by name.
    pub groups: HashMap<String, ListenerGroup>,
    pub routable: RoutableWatch,
    pub access_log: Option<AccessLog>,
    pub metrics: HttpMetrics,
    /// This listener's `RequestCount` series, looked up once.
    pub requests: Counter,
    /// Its own error series, likewise.
    pub elb_series: ElbSeries,
    /// The client connections it cut, by reason.
    pub cuts: CutSeries,
    /// Connection caps, applied as connections are accepted.
    pub caps: Caps,
    /// The connections its caps refused, by the cap.
    pub refused: RefusedSeries,
    /// Picks of weighted forwards so far.
    weighted_next: AtomicUsize,
}

impl HttpListener {
    /// Builds listener `l` of a validated `config`. Must run inside a tokio
    /// runtime: a new pool starts its maintenance task.
    pub fn new(
        config: &Config,
        l: &Listener,
        routable: RoutableWatch,
        metrics: HttpMetrics,
        pools: &Pools,
        tickets: &Tickets,
    ) -> Result<Self, HttpListenerError> {
        if !matches!(l.protocol, Protocol::Http | Protocol::Https) {
            return Err(HttpListenerError::NotHttp {
                listener: l.name.clone(),
                protocol: l.protocol,
            });
        }
        let default_action =
            l.http_default_action()
                .ok_or_else(|| HttpListenerError::NoDefaultAction {
                    listener: l.name.clone(),
                })?;
        let mut groups = HashMap::new();
        for g in l
            .referenced_groups()
            .into_iter()
            .filter_map(|name| config.target_group(name))
        {
            let pool = pools.get(g).map_err(|source| HttpListenerError::Tls {
                listener: l.name.clone(),
                source,
            })?;
            let series = GroupSeries::new(&metrics, &l.name, &g.name);
            groups.insert(g.name.clone(), ListenerGroup { pool, series });
        }
        let access_log = l
            .http_access_log()
            .map(|path| {
                AccessLog::open(path).map_err(|source| HttpListenerError::AccessLog {
                    listener: l.name.clone(),
                    path: path.clone(),
                    source,
                })
            })
            .transpose()?;
        let tls = match (l.protocol, &l.tls) {
            (Protocol::Https, Some(t)) => Some(TlsAcceptor::from(
                tickets
                    .for_listener(&l.name)
                    .and_then(|tickets| tls::https_server_config(t, tickets))
                    .map_err(|source| HttpListenerError::Tls {
                        listener: l.name.clone(),
                        source,
                    })?,
            )),
            (Protocol::Https, None) => {
                return Err(HttpListenerError::NoTls {
                    listener: l.name.clone(),
                });
            }
            _ => None,
        };
        let idle_timeout = Duration::from_secs(l.http_idle_timeout().into());
        let requests = metrics
            .requests
            .get_or_create(&HttpListenerLabels {
                listener: l.name.clone(),
            })
            .clone();
        let tls_failures = metrics
            .tls_negotiation_errors
            .get_or_create(&HttpListenerLabels {
                listener: l.name.clone(),
            })
            .clone();
        Ok(Self {
            requests,
            elb_series: ElbSeries::new(&metrics, &l.name),
            cuts: CutSeries::new(&metrics, &l.name),
            caps: Caps::of(l),
            refused: RefusedSeries::new(&metrics.refused, &l.name),
            name: l.name.clone(),
            protocol: l.protocol,
            address: l.address,
            port: l.port,
            idle_timeout,
            http2_max_target_connections: l.http2_max_target_connections() as usize,
            normalize_path: l.http_normalize_path(),
            tls,
            tls_failures,
            handshake_log: HandshakeLog::default(),
            builder: builder(),
            rules: Rules::compile(&l.rules),
            default_action,
            groups,
            routable,
            access_log,
            metrics,
            weighted_next: AtomicUsize::new(0),
        })
    }

    /// `http` or `https`, for `X-Forwarded-Proto` and redirects.
    pub fn scheme(&self) -> &'static str {
        match self.protocol {
            Protocol::Https => "https",
            _ => "http",
        }
    }

    /// The group a weighted forward sends this request to: a deterministic
    /// rotation in which each group gets `weight` of every `sum` requests.
    pub fn pick_weighted<'a>(&self, groups: &'a [WeightedGroup]) -> Option<&'a str> {
        let total: u64 = groups.iter().map(|g| u64::from(g.weight)).sum();
        if total == 0 {
            return None;
        }
        let slot = self.weighted_next.fetch_add(1, Ordering::Relaxed) as u64 % total;
        let mut acc = 0;
        groups.iter().find_map(|g| {
            acc += u64::from(g.weight);
            (slot < acc).then_some(g.name.as_str())
        })
    }
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .max_buf_size(READ_BUFFER)
        // `idle` times heads at a fraction of the cost of hyper's timer,
        // which is new for every request.
        .header_read_timeout(None);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(HTTP2_MAX_STREAMS);
    b
}
