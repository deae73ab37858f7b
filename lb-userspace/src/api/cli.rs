//! The `lb` subcommands that talk to a running daemon through the API, and
//! the tables they print. Names follow ELB's CLI and ipvsadm's habits.
use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use http::Method;

use super::{
    client::{self, Client, ClientError, Endpoint, decode, segment},
    routes::{
        DeregisterRequest, ListenersResponse, RegisterRequest, TargetGroupsResponse,
        TargetHealthResponse, WeightRequest,
    },
    server::DEFAULT_SOCKET,
};
use crate::control::command::{
    ChangeReport, FlowsReport, HostReport, ListenerAttributes, ListenerReport, StatusReport,
    TargetGroupAttributes, TargetGroupReport, TargetHealthReport, TargetSpec,
};

/// How to reach the API; shared by every API subcommand.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The API: unix:/path/to/api.sock or http://host:port. Default: the
    /// socket named in --config, else /run/lb/api.sock.
    #[arg(long, value_name = "ENDPOINT")]
    pub api: Option<Endpoint>,
    /// The daemon's config, to find its API socket.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// API token (default: $LB_TOKEN). Not needed as root on the socket.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `on` / `off` for boolean attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    #[value(alias = "true")]
    On,
    #[value(alias = "false")]
    Off,
}

impl From<Switch> for bool {
    fn from(s: Switch) -> bool {
        s == Switch::On
    }
}

#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// Show the running daemon's status.
    Status(Connection),
    /// List the listeners (VIPs).
    Listeners(Connection),
    /// List the target groups with their health counts and attributes.
    TargetGroups(Connection),
    /// Show a target group's targets with their health state and reason.
    Targets {
        group: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Count the connection table and show a sample of flows.
    Flows {
        /// Flows in the sample.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        conn: Connection,
    },
    /// Register targets (ADDR or ADDR:PORT; the port defaults to the group's).
    Register {
        group: String,
        #[arg(required = true, value_name = "ADDR[:PORT]", value_parser = parse_target)]
        targets: Vec<(IpAddr, Option<u16>)>,
        #[arg(long)]
        weight: Option<u32>,
        #[arg(long)]
        zone: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Deregister targets: no new flows, existing ones drain for the
    /// group's deregistration delay.
    #[command(visible_alias = "drain")]
    Deregister {
        group: String,
        #[arg(required = true, value_name = "ADDR:PORT")]
        targets: Vec<SocketAddr>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Set a target's weight (0: no new flows).
    SetWeight {
        group: String,
        #[arg(value_name = "ADDR:PORT")]
        target: SocketAddr,
        weight: u32,
        #[command(flatten)]
        conn: Connection,
    },
    /// Re-read the config file and apply the differences.
    Reload(Connection),
    /// Delete a listener (refused while deletion protection is on).
    DeleteListener {
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Delete a target group (refused while deletion protection is on).
    DeleteTargetGroup {
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Change a listener's attributes.
    ModifyListener {
        name: String,
        #[arg(long, value_name = "on|off")]
        deletion_protection: Switch,
        #[command(flatten)]
        conn: Connection,
    },
    /// This host's BGP announcements (`[bgp]`): show, drain, resume.
    #[command(subcommand)]
    Host(HostCommand),
    /// Change a target group's attributes; the ones not given stay.
    ModifyTargetGroup {
        name: String,
        #[arg(long, value_name = "on|off")]
        deletion_protection: Option<Switch>,
        /// Seconds a deregistered target drains.
        #[arg(long, value_name = "S")]
        deregistration_delay: Option<u32>,
        /// Seconds over which a new target's share ramps up (0: off).
        #[arg(long, value_name = "S")]
        slow_start: Option<u32>,
        #[arg(long, value_name = "on|off")]
        cross_zone: Option<Switch>,
        /// Move flows off targets that turn unhealthy.
        #[arg(long, value_name = "on|off")]
        unhealthy_connection_termination: Option<Switch>,
        #[command(flatten)]
        conn: Connection,
    },
}

/// `lb host ...`.
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Show the VIPs this host announces, what it withholds and why, and
    /// its drain state.
    Status(Connection),
    /// Withdraw every VIP this host announces, until `lb host resume`; the
    /// data path keeps serving the flows that still arrive. Recorded in
    /// bgp.drain_file, so it survives restarts.
    Drain(Connection),
    /// Announce this host's VIPs again after a drain.
    Resume(Connection),
}

impl HostCommand {
    fn connection(&self) -> &Connection {
        match self {
            Self::Status(c) | Self::Drain(c) | Self::Resume(c) => c,
        }
    }
}

fn parse_target(s: &str) -> Result<(IpAddr, Option<u16>), String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok((addr.ip(), Some(addr.port())));
    }
    s.parse::<IpAddr>()
        .map(|ip| (ip, None))
        .map_err(|_| format!("{s:?} is not ADDR or ADDR:PORT (IPv6 with a port as [ADDR]:PORT)"))
}

/// One API call: what to send and how to print the answer.
struct Call {
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
    render: fn(&[u8]) -> Result<String, ClientError>,
}

fn json(value: &impl serde::Serialize) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(value).expect("request types serialize"))
}

impl ApiCommand {
    fn connection(&self) -> &Connection {
        match self {
            Self::Status(c) | Self::Listeners(c) | Self::TargetGroups(c) | Self::Reload(c) => c,
            Self::Host(h) => h.connection(),
            Self::Targets { conn, .. }
            | Self::Flows { conn, .. }
            | Self::Register { conn, .. }
            | Self::Deregister { conn, .. }
            | Self::SetWeight { conn, .. }
            | Self::DeleteListener { conn, .. }
            | Self::DeleteTargetGroup { conn, .. }
            | Self::ModifyListener { conn, .. }
            | Self::ModifyTargetGroup { conn, .. } => conn,
        }
    }

    fn call(&self) -> Call {
        let group_path = |g: &str| format!("/v1/target-groups/{}", segment(g));
        let (method, path, body, render): (_, _, _, fn(&[u8]) -> _) = match self {
            Self::Status(_) => (Method::GET, "/v1/status".into(), None, render_status),
            Self::Listeners(_) => (Method::GET, "/v1/listeners".into(), None, render_listeners),
            Self::TargetGroups(_) => (
                Method::GET,
                "/v1/target-groups".into(),
                None,
                render_target_groups,
            ),
            Self::Targets { group, .. } => (
                Method::GET,
                format!("{}/targets", group_path(group)),
                None,
                render_targets,
            ),
            Self::Flows { limit, .. } => (
                Method::GET,
                format!("/v1/flows?limit={limit}"),
                None,
                render_flows,
            ),
            Self::Register {
                group,
                targets,
                weight,
                zone,
                ..
            } => {
                let targets = targets
                    .iter()
                    .map(|&(address, port)| TargetSpec {
                        address,
                        port,
                        weight: *weight,
                        zone: zone.clone(),
                    })
                    .collect();
                let body = json(&RegisterRequest { targets });
                let path = format!("{}/targets", group_path(group));
                (Method::POST, path, body, render_change)
            }
            Self::Deregister { group, targets, .. } => {
                let body = json(&DeregisterRequest {
                    targets: targets.clone(),
                });
                let path = format!("{}/targets/deregister", group_path(group));
                (Method::POST, path, body, render_change)
            }
            Self::SetWeight {
                group,
                target,
                weight,
                ..
            } => {
                let path = format!(
                    "{}/targets/{}/weight",
                    group_path(group),
                    client::target(*target)
                );
                let body = json(&WeightRequest { weight: *weight });
                (Method::PUT, path, body, render_change)
            }
            Self::Reload(_) => (Method::POST, "/v1/reload".into(), None, render_change),
            Self::Host(HostCommand::Status(_)) => {
                (Method::GET, "/v1/host".into(), None, render_host)
            }
            Self::Host(HostCommand::Drain(_)) => {
                (Method::POST, "/v1/host/drain".into(), None, render_host)
            }
            Self::Host(HostCommand::Resume(_)) => {
                (Method::POST, "/v1/host/resume".into(), None, render_host)
            }
            Self::DeleteListener { name, .. } => (
                Method::DELETE,
                format!("/v1/listeners/{}", segment(name)),
                None,
                render_change,
            ),
            Self::DeleteTargetGroup { name, .. } => {
                (Method::DELETE, group_path(name), None, render_change)
            }
            Self::ModifyListener {
                name,
                deletion_protection,
                ..
            } => {
                let body = json(&ListenerAttributes {
                    deletion_protection: Some((*deletion_protection).into()),
                });
                let path = format!("/v1/listeners/{}", segment(name));
                (Method::PATCH, path, body, render_change)
            }
            Self::ModifyTargetGroup {
                name,
                deletion_protection,
                deregistration_delay,
                slow_start,
                cross_zone,
                unhealthy_connection_termination,
                ..
            } => {
                let body = json(&TargetGroupAttributes {
                    deletion_protection: deletion_protection.map(bool::from),
                    deregistration_delay: *deregistration_delay,
                    slow_start: *slow_start,
                    cross_zone: cross_zone.map(bool::from),
                    unhealthy_connection_termination: unhealthy_connection_termination
                        .map(bool::from),
                });
                (Method::PATCH, group_path(name), body, render_change)
            }
        };
        Call {
            method,
            path,
            body,
            render,
        }
    }
}

/// Runs an API subcommand; the server's error message goes to stderr and
/// the exit code is non-zero.
pub fn dispatch(cmd: &ApiCommand) -> anyhow::Result<ExitCode> {
    let conn = cmd.connection();
    let endpoint = match &conn.api {
        Some(e) => e.clone(),
        None => default_endpoint(conn.config.as_deref())?,
    };
    let token = conn
        .token
        .clone()
        .or_else(|| std::env::var("LB_TOKEN").ok().filter(|t| !t.is_empty()));
    let client = Client::new(endpoint, token);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(run(cmd, &client)) {
        Ok(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {}", crate::error_chain::ErrorChain(&e));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Sends the command's request through `client` and returns what to print:
/// a table, a message, or the JSON with `--json`.
pub async fn run(cmd: &ApiCommand, client: &Client) -> Result<String, ClientError> {
    let call = cmd.call();
    let bytes = client.call_raw(call.method, &call.path, call.body).await?;
    if cmd.connection().json {
        let value: serde_json::Value = decode(&bytes)?;
        Ok(format!("{value:#}\n"))
    } else {
        (call.render)(&bytes)
    }
}

/// The API socket of the daemon run with `config` (its `api.socket`), or
/// the default socket. Only that key is read: the daemon validates the rest,
/// and a client should not refuse to talk because of an unrelated problem.
fn default_endpoint(config: Option<&Path>) -> anyhow::Result<Endpoint> {
    let Some(path) = config else {
        return Ok(Endpoint::Unix(DEFAULT_SOCKET.into()));
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read config {}", path.display()))?;
    let socket = api_socket(&text)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("failed to parse config {}", path.display()))?;
    Ok(Endpoint::Unix(
        socket.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
    ))
}

/// `api.socket` from a config's text, if set.
pub fn api_socket(config: &str) -> Result<Option<PathBuf>, String> {
    let table: toml::Table = config.parse().map_err(|e: toml::de::Error| e.to_string())?;
    match table.get("api").and_then(|api| api.get("socket")) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s.into())),
        Some(other) => Err(format!(
            "api.socket: expected a path, found {}",
            other.type_str()
        )),
    }
}

fn render_status(bytes: &[u8]) -> Result<String, ClientError> {
    Ok(status_text(&decode(bytes)?))
}

fn render_listeners(bytes: &[u8]) -> Result<String, ClientError> {
    Ok(listeners_table(
        &decode::<ListenersResponse>(bytes)?.listeners,
    ))
}

fn render_target_groups(bytes: &[u8]) -> Result<String, ClientError> {
    Ok(target_groups_table(
        &decode::<TargetGroupsResponse>(bytes)?.target_groups,
    ))
}

fn render_targets(bytes: &[u8]) -> Result<String, ClientError> {
    Ok(targets_table(
        &decode::<TargetHealthResponse>(bytes)?.targets,
    ))
}

fn render_flows(bytes: &[u8]) -> Result<String, ClientError> {
    Ok(flows_text(&decode(bytes)?))
}

fn render_host(bytes: &[u8]) -> Result<String, ClientError> {
    Ok(host_text(&decode(bytes)?))
}

fn render_change(bytes: &[u8]) -> Result<String, ClientError> {
    Ok(format!("{}\n", decode::<ChangeReport>(bytes)?.message))
}

/// `lb status`.
pub fn status_text(s: &StatusReport) -> String {
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let lines = [
        ("version", s.version.clone()),
        ("config", s.config.clone()),
        ("dataplane", s.dataplane.clone()),
        ("zone", opt(&s.zone)),
        ("uptime", format!("{}s", s.uptime_s)),
        ("listeners", s.listeners.to_string()),
        ("target groups", s.target_groups.to_string()),
        (
            "targets",
            format!(
                "{} ({} healthy, {} unhealthy)",
                s.targets, s.healthy, s.unhealthy
            ),
        ),
        ("last reload", opt(&s.last_reload)),
        ("drained", yes_no(s.drained)),
        ("announced", addresses(&s.announced)),
    ];
    lines.iter().fold(String::new(), |mut out, (k, v)| {
        let _ = writeln!(out, "{:<14}{v}", format!("{k}:"));
        out
    })
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// A comma-separated list, or `-`.
fn addresses(list: &[IpAddr]) -> String {
    if list.is_empty() {
        return "-".into();
    }
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `lb host status` (and what `drain` and `resume` answer).
pub fn host_text(h: &HostReport) -> String {
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let bgp = if h.bgp {
        format!("on (table {}, proto {})", h.table, h.protocol)
    } else {
        "off".into()
    };
    let lines = [
        ("bgp", bgp),
        ("drained", yes_no(h.drained)),
        ("announced", addresses(&h.announced)),
        ("withheld", addresses(&h.withheld)),
        ("reason", opt(&h.reason)),
        ("drain file", h.drain_file.clone()),
        ("last error", opt(&h.last_error)),
    ];
    lines.iter().fold(String::new(), |mut out, (k, v)| {
        let _ = writeln!(out, "{:<12}{v}", format!("{k}:"));
        out
    })
}

fn on_off(b: bool) -> String {
    if b { "on" } else { "off" }.into()
}

/// `lb listeners`.
pub fn listeners_table(listeners: &[ListenerReport]) -> String {
    let rows = listeners.iter().map(|l| {
        vec![
            l.name.clone(),
            l.protocol.clone(),
            SocketAddr::new(l.address, l.port).to_string(),
            l.target_groups.join(","),
            on_off(l.deletion_protection),
            l.served_by.clone(),
        ]
    });
    table(
        &[
            "NAME",
            "PROTOCOL",
            "ADDRESS",
            "TARGET GROUP",
            "DELETION PROTECTION",
            "SERVED BY",
        ],
        rows,
    )
}

/// `lb target-groups`.
pub fn target_groups_table(groups: &[TargetGroupReport]) -> String {
    let rows = groups.iter().map(|g| {
        vec![
            g.name.clone(),
            g.protocol.clone(),
            g.port.to_string(),
            g.targets.to_string(),
            g.healthy.to_string(),
            g.unhealthy.to_string(),
            g.draining.to_string(),
            on_off(g.cross_zone),
            format!("{}s", g.deregistration_delay),
            format!("{}s", g.slow_start),
            on_off(g.deletion_protection),
        ]
    });
    table(
        &[
            "NAME",
            "PROTOCOL",
            "PORT",
            "TARGETS",
            "HEALTHY",
            "UNHEALTHY",
            "DRAINING",
            "CROSS ZONE",
            "DEREG DELAY",
            "SLOW START",
            "DELETION PROTECTION",
        ],
        rows,
    )
}

/// `lb targets <group>`: one row per target with its health.
pub fn targets_table(targets: &[TargetHealthReport]) -> String {
    let rows = targets.iter().map(|t| {
        vec![
            t.target.to_string(),
            t.zone.clone().unwrap_or_else(|| "-".into()),
            t.weight.to_string(),
            t.effective_weight.to_string(),
            t.state.as_str().into(),
            t.reason.clone().unwrap_or_else(|| "-".into()),
            t.description.clone(),
        ]
    });
    table(
        &[
            "TARGET",
            "ZONE",
            "WEIGHT",
            "EFFECTIVE",
            "STATE",
            "REASON",
            "DESCRIPTION",
        ],
        rows,
    )
}

/// `lb flows`.
pub fn flows_text(f: &FlowsReport) -> String {
    let head = format!(
        "{} flows in the connection table, {} active; sample of {}:\n",
        f.entries,
        f.active,
        f.sample.len()
    );
    let rows = f.sample.iter().map(|s| {
        vec![
            s.client.to_string(),
            s.vip.to_string(),
            s.protocol.clone(),
            s.target.map_or_else(|| "-".into(), |t| t.to_string()),
            format!("{}s", s.idle_s),
        ]
    });
    head + &table(&["CLIENT", "VIP", "PROTOCOL", "TARGET", "IDLE"], rows)
}

/// Left-aligned columns two spaces apart; the last column is not padded, so
/// lines carry no trailing spaces.
pub fn table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| h.to_string()).collect())
        .chain(rows)
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let last = row.len() - 1;
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push('\n');
    }
    out
}
