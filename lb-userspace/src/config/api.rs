//! `[api]`: where the management API listens and who may do what, in IAM's
//! terms: `[[api.policy]]` documents of Allow/Deny statements, and
//! `[[api.token]]` bearer tokens bound to policies. Tokens are stored as
//! SHA-256 digests (`lb token hash`), so config files hold no secrets.
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use lb_common::PROTO_TCP;
use serde::Deserialize;

use super::{Config, Dataplane, Listener, validation_errors::ValidationErrors};
use crate::{
    iam::{Action, resource},
    wildcard::{self, Case},
};

/// Default of `api.socket`.
pub const DEFAULT_API_SOCKET: &str = "/run/lb/api.sock";
/// Longest Unix socket path (`sun_path` holds 108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// Unix socket of the API (and of the `lb` subcommands). Connections
    /// from uid 0 are root and need no token.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// TCP address of the API, e.g. `127.0.0.1:9180`; none by default.
    pub listen: Option<SocketAddr>,
    /// TCP address of the Prometheus `/metrics` endpoint (no token needed);
    /// none by default, so several daemons on one host never compete for a
    /// port.
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the read-only status page at `GET /status` on the API's
    /// socket and address (the same access check as the describe actions;
    /// over TCP the token may also come as the password of HTTP Basic
    /// authentication, which browsers ask for). Off by default: `/status`
    /// answers 404.
    #[serde(default)]
    pub status_page: bool,
    /// `[[api.policy]]` tables.
    #[serde(default, rename = "policy")]
    pub policies: Vec<Policy>,
    /// `[[api.token]]` tables.
    #[serde(default, rename = "token")]
    pub tokens: Vec<Token>,
}

fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_API_SOCKET)
}

impl Default for Api {
    fn default() -> Self {
        Api {
            socket: default_socket(),
            listen: None,
            metrics_listen: None,
            status_page: false,
            policies: Vec::new(),
            tokens: Vec::new(),
        }
    }
}

/// `[[api.policy]]`: a named list of statements.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Unique; tokens refer to it.
    pub name: String,
    /// `[[api.policy.statement]]` tables, at least one.
    #[serde(rename = "statement")]
    pub statements: Vec<Statement>,
}

/// `[[api.policy.statement]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// Optional statement id, shown in explicit-deny messages.
    pub sid: Option<String>,
    pub effect: Effect,
    /// Action names or patterns, e.g. `lb:RegisterTargets`, `lb:Describe*`.
    pub action: Vec<String>,
    /// Resource names or patterns, e.g. `target-group/web`, `listener/*`,
    /// `*`.
    pub resource: Vec<String>,
}

/// `effect`, spelt as in IAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Effect {
    Allow,
    Deny,
}

/// `[[api.token]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// Unique; the principal is `token/<name>` in messages and logs.
    pub name: String,
    /// Hex SHA-256 of the secret (`lb token hash`).
    pub sha256: String,
    /// Names of `[[api.policy]]` tables.
    #[serde(default)]
    pub policies: Vec<String>,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

const NAME_RULE: &str = "1 to 64 characters of A-Z a-z 0-9 - _ .";

/// Checks `[api]`, and that its TCP addresses are not a listener's.
pub(super) fn check_api(c: &Config, errs: &mut ValidationErrors) {
    let api = &c.api;
    check_collisions(c, errs);
    let socket = api.socket.as_os_str();
    if !api.socket.is_absolute() || socket.len() > MAX_SOCKET_PATH {
        errs.push(
            "api.socket",
            format!(
                "{:?} must be an absolute path of at most {MAX_SOCKET_PATH} bytes",
                api.socket
            ),
        );
    }
    if let (Some(listen), Some(metrics)) = (api.listen, api.metrics_listen)
        && binds_overlap(listen, metrics)
    {
        errs.push(
            "api.metrics_listen",
            format!(
                "{metrics} overlaps api.listen {listen}: one of the two binds would fail (/metrics is also served on api.listen)"
            ),
        );
    }
    let mut policies = HashMap::new();
    for (i, p) in api.policies.iter().enumerate() {
        check_policy(&format!("api.policy[{i}]"), p, errs);
        if let Some(first) = policies.insert(p.name.as_str(), i) {
            errs.push(
                format!("api.policy[{i}].name"),
                format!("{:?} duplicates api.policy[{first}].name", p.name),
            );
        }
    }
    let mut names = HashMap::new();
    let mut digests = HashMap::new();
    for (i, t) in api.tokens.iter().enumerate() {
        let path = format!("api.token[{i}]");
        if !valid_name(&t.name) {
            errs.push(
                format!("{path}.name"),
                format!("{:?} is not a valid name ({NAME_RULE})", t.name),
            );
        } else if let Some(first) = names.insert(t.name.as_str(), i) {
            errs.push(
                format!("{path}.name"),
                format!("{:?} duplicates api.token[{first}].name", t.name),
            );
        }
        if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            errs.push(
                format!("{path}.sha256"),
                "must be 64 hex digits: the SHA-256 of the token (`lb token hash`)",
            );
        } else if let Some(first) = digests.insert(t.sha256.to_ascii_lowercase(), i) {
            errs.push(
                format!("{path}.sha256"),
                format!("duplicates api.token[{first}].sha256 (same secret)"),
            );
        }
        for (j, name) in t.policies.iter().enumerate() {
            if !policies.contains_key(name.as_str()) {
                errs.push(
                    format!("{path}.policies[{j}]"),
                    format!("unknown policy {name:?}"),
                );
            }
        }
    }
}

/// Whether TCP listening sockets on `a` and `b` cannot both be bound: the
/// same port, and the same address or a wildcard that covers the other
/// (`0.0.0.0` every IPv4 address, `[::]` every address: it takes IPv4
/// too).
fn binds_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    let covers = |wild: IpAddr, other: IpAddr| match wild {
        IpAddr::V4(w) => w.is_unspecified() && other.is_ipv4(),
        IpAddr::V6(w) => w.is_unspecified(),
    };
    a.port() == b.port() && (a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip()))
}

/// `api.listen` and `api.metrics_listen` on a listener's address and port
/// (TCP; udp listeners have ports of their own): either the bind fails
/// (a listener the daemon serves) or the XDP program takes the API's
/// packets (a tcp VIP). A wildcard address collides with the listeners the
/// daemon may bind on that port (`[::]` takes IPv4 too).
fn check_collisions(c: &Config, errs: &mut ValidationErrors) {
    let endpoints = [
        ("api.listen", c.api.listen),
        ("api.metrics_listen", c.api.metrics_listen),
    ];
    for (key, addr) in endpoints {
        let Some(addr) = addr else { continue };
        let collides = |l: &Listener| {
            let daemon_binds = !l.protocol.in_kernel() || c.daemon.dataplane != Dataplane::Xdp;
            let wildcard = match addr.ip() {
                IpAddr::V4(a) => a.is_unspecified() && l.address.is_ipv4(),
                IpAddr::V6(a) => a.is_unspecified(),
            };
            l.protocol.ip_proto() == PROTO_TCP
                && l.port == addr.port()
                && (l.address == addr.ip() || (wildcard && daemon_binds))
        };
        if let Some((i, l)) = c.listeners.iter().enumerate().find(|(_, l)| collides(l)) {
            errs.push(
                key,
                format!(
                    "{addr} is taken by listener[{i}] {:?} ({} on {})",
                    l.name,
                    l.protocol,
                    SocketAddr::new(l.address, l.port)
                ),
            );
        }
    }
}

fn check_policy(path: &str, p: &Policy, errs: &mut ValidationErrors) {
    if !valid_name(&p.name) {
        errs.push(
            format!("{path}.name"),
            format!("{:?} is not a valid name ({NAME_RULE})", p.name),
        );
    }
    if p.statements.is_empty() {
        errs.push(
            format!("{path}.statement"),
            "a policy needs at least one statement",
        );
    }
    let mut sids = HashSet::new();
    for (i, s) in p.statements.iter().enumerate() {
        let spath = format!("{path}.statement[{i}]");
        if let Some(sid) = &s.sid {
            if sid.is_empty() || !sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
                errs.push(
                    format!("{spath}.sid"),
                    format!("{sid:?} must be 1 or more characters of A-Z a-z 0-9"),
                );
            } else if !sids.insert(sid.as_str()) {
                errs.push(format!("{spath}.sid"), format!("{sid:?} is not unique"));
            }
        }
        if s.action.is_empty() {
            errs.push(format!("{spath}.action"), "at least one action is required");
        }
        for (j, a) in s.action.iter().enumerate() {
            if !Action::ALL
                .iter()
                .any(|known| wildcard::matches(a, known.as_str(), Case::IgnoreAscii))
            {
                errs.push(
                    format!("{spath}.action[{j}]"),
                    format!("{a:?} matches no action (lb:DescribeListeners, lb:RegisterTargets, ...; `lb:*` for all)"),
                );
            }
        }
        if s.resource.is_empty() {
            errs.push(
                format!("{spath}.resource"),
                "at least one resource is required",
            );
        }
        for (j, r) in s.resource.iter().enumerate() {
            if !resource::plausible_pattern(r) {
                errs.push(
                    format!("{spath}.resource[{j}]"),
                    format!(
                        "{r:?} names no resource (\"listener/NAME\", \"target-group/NAME\" or \"*\", with * and ? wildcards)"
                    ),
                );
            }
        }
    }
}
