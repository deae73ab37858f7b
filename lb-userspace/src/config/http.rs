//! The layer-7 part of the config (ALB): rules and actions of `http` and
//! `https` listeners, and the HTTP settings of target groups. The keys live
//! on [`super::Listener`] and [`super::TargetGroup`]; their checks are in
//! [`check`], called from `Config::validate`.
use std::{
    collections::HashMap,
    fs, io,
    net::IpAddr,
    ops::RangeInclusive,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use serde::Deserialize;

use super::{Config, Listener, PORT, Protocol, TargetGroup, validation_errors::ValidationErrors};

/// ALB's client idle timeout default, seconds.
pub const DEFAULT_IDLE_TIMEOUT: u32 = 60;
/// Seconds an unused back-end connection stays open (Apigee's and most
/// proxies' default; seed 003).
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: u32 = 60;
/// Seconds a target has to start its response before the client gets 504.
pub const DEFAULT_RESPONSE_TIMEOUT: u32 = 60;
/// Target connections one HTTP/2 client connection may hold at once: far
/// more than a browser's page needs in parallel, far fewer than the
/// streams a client may open.
pub const DEFAULT_HTTP2_MAX_TARGET_CONNECTIONS: u32 = 32;
/// Concurrent streams an HTTP/2 client connection may open (ALB allows
/// 128; we take twice that).
pub const HTTP2_MAX_STREAMS: u32 = 256;

/// Bounds of `listener.idle_timeout` (ALB's range), seconds.
pub const IDLE_TIMEOUT: RangeInclusive<u32> = 1..=4000;
/// Bounds of `listener.http2_max_target_connections`.
pub const HTTP2_MAX_TARGET_CONNECTIONS: RangeInclusive<u32> = 1..=HTTP2_MAX_STREAMS;
/// Bounds of `target_group.keep_alive_timeout`, seconds; 0 disables pooling.
pub const KEEP_ALIVE_TIMEOUT: RangeInclusive<u32> = 0..=3600;
/// Bounds of `target_group.response_timeout`, seconds.
pub const RESPONSE_TIMEOUT: RangeInclusive<u32> = 1..=4000;
/// Bounds of `target_group.warm_connections` (per target).
pub const WARM_CONNECTIONS: RangeInclusive<u32> = 0..=1000;
/// Bounds of a rule's `priority` (ALB's).
pub const PRIORITY: RangeInclusive<u32> = 1..=50_000;
/// Bounds of a weight in a weighted forward (ALB's).
pub const GROUP_WEIGHT: RangeInclusive<u32> = 0..=999;
/// Longest fixed-response body (ALB's limit), bytes.
pub const MAX_FIXED_BODY: usize = 1024;
/// ALB's limit on condition values per rule.
pub const MAX_CONDITION_VALUES: usize = 5;
/// ALB's limit on the length of a method in a condition.
pub const MAX_METHOD: usize = 40;
/// The placeholders a redirect may use.
pub const REDIRECT_PLACEHOLDERS: [&str; 5] =
    ["#{protocol}", "#{host}", "#{port}", "#{path}", "#{query}"];

/// `[[listener.rule]]`: when every condition matches, `action` answers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Lower is evaluated first; unique per listener, within [`PRIORITY`].
    pub priority: u32,
    /// All present conditions must match (values within one condition: any).
    #[serde(default)]
    pub conditions: Conditions,
    pub action: Action,
}

/// `listener.rule.conditions`. An absent condition matches everything; a rule
/// without any condition is an error (that is the default action's job).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// Host names with `*` and `?`, case-insensitive; the port is ignored.
    pub host_header: Option<Vec<String>>,
    /// Paths with `*` and `?`, case-sensitive, without the query string.
    pub path_pattern: Option<Vec<String>>,
    /// Methods, exact (`GET`, `POST`, ...).
    pub http_request_method: Option<Vec<String>>,
    /// Each entry: the named header has a value matching one of `values`.
    #[serde(default)]
    pub http_header: Vec<HeaderCondition>,
    /// Any entry matching a query parameter.
    pub query_string: Option<Vec<QueryCondition>>,
    /// Client address within any of these networks (CIDR, or one address).
    pub source_ip: Option<Vec<String>>,
}

/// `listener.rule.conditions.http_header[]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderCondition {
    pub name: String,
    /// Patterns with `*` and `?`, case-insensitive.
    pub values: Vec<String>,
}

/// `listener.rule.conditions.query_string[]`: a parameter `key=value`
/// (patterns with `*` and `?`, case-insensitive); without `key`, any
/// parameter whose value matches.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryCondition {
    pub key: Option<String>,
    pub value: String,
}

/// What a rule or the default action does.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// To one target group, or split over several by weight.
    Forward {
        target_group: Option<String>,
        #[serde(default)]
        target_groups: Vec<WeightedGroup>,
    },
    /// Answer 301/302 with a `Location` built from the request.
    Redirect(Redirect),
    /// Answer with a fixed status, content type and body.
    FixedResponse(FixedResponse),
}

impl Action {
    /// Target groups this action may send requests to.
    pub fn groups(&self) -> Vec<&str> {
        match self {
            Action::Forward {
                target_group,
                target_groups,
            } => target_group
                .iter()
                .map(String::as_str)
                .chain(target_groups.iter().map(|g| g.name.as_str()))
                .collect(),
            _ => vec![],
        }
    }
}

/// `action.target_groups[]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedGroup {
    pub name: String,
    /// Within [`GROUP_WEIGHT`]; shares are relative to the sum.
    pub weight: u32,
}

/// `type = "redirect"`. Each part defaults to the request's own
/// (`#{protocol}`, `#{host}`, ...) and may use those placeholders.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// 301 or 302.
    pub status: u16,
    /// `http`, `https` or `#{protocol}`.
    #[serde(default = "placeholder_protocol")]
    pub protocol: String,
    #[serde(default = "placeholder_host")]
    pub host: String,
    #[serde(default = "placeholder_port")]
    pub port: String,
    /// Starts with `/`.
    #[serde(default = "placeholder_path")]
    pub path: String,
    /// Without the leading `?`.
    #[serde(default = "placeholder_query")]
    pub query: String,
}

fn placeholder_protocol() -> String {
    "#{protocol}".into()
}
fn placeholder_host() -> String {
    "#{host}".into()
}
fn placeholder_port() -> String {
    "#{port}".into()
}
fn placeholder_path() -> String {
    "/#{path}".into()
}
fn placeholder_query() -> String {
    "#{query}".into()
}

/// `type = "fixed_response"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedResponse {
    /// 2XX, 4XX or 5XX.
    pub status: u16,
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// At most [`MAX_FIXED_BODY`] bytes.
    #[serde(default)]
    pub body: String,
}

fn default_content_type() -> String {
    "text/plain".into()
}

/// ALB's content types for fixed responses.
const CONTENT_TYPES: [&str; 5] = [
    "text/plain",
    "text/css",
    "text/html",
    "application/javascript",
    "application/json",
];

/// `target_group.algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Targets in turn, by weight.
    #[default]
    RoundRobin,
    /// The target with the fewest requests in flight (per unit of weight).
    LeastOutstandingRequests,
}

/// The listener settings of `http`/`https` listeners, defaults applied.
impl Listener {
    /// Client idle timeout, seconds.
    pub fn http_idle_timeout(&self) -> u32 {
        self.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT)
    }

    /// Whether request paths are normalised (off by default, as ALB).
    pub fn http_normalize_path(&self) -> bool {
        self.normalize_path.unwrap_or(false)
    }

    /// Target connections one HTTP/2 client connection may hold at once.
    pub fn http2_max_target_connections(&self) -> u32 {
        self.http2_max_target_connections
            .unwrap_or(DEFAULT_HTTP2_MAX_TARGET_CONNECTIONS)
    }

    /// The default action: `default_action`, else a forward to
    /// `target_group`; `None` only in a config that fails validation.
    pub fn http_default_action(&self) -> Option<Action> {
        self.default_action.clone().or_else(|| {
            self.target_group.as_ref().map(|g| Action::Forward {
                target_group: Some(g.clone()),
                target_groups: vec![],
            })
        })
    }

    /// Path of the access log, if any.
    pub fn http_access_log(&self) -> Option<&PathBuf> {
        self.access_log.as_ref()
    }

    /// Every target group the listener may send to.
    pub fn referenced_groups(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.target_group.iter().map(String::as_str).collect();
        for a in self
            .default_action
            .iter()
            .chain(self.rules.iter().map(|r| &r.action))
        {
            out.extend(a.groups());
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

impl TargetGroup {
    /// Seconds an idle back-end connection is kept; 0: none is kept.
    pub fn http_keep_alive_timeout(&self) -> u32 {
        self.keep_alive_timeout
            .unwrap_or(DEFAULT_KEEP_ALIVE_TIMEOUT)
    }

    /// Seconds to wait for a target's response head.
    pub fn http_response_timeout(&self) -> u32 {
        self.response_timeout.unwrap_or(DEFAULT_RESPONSE_TIMEOUT)
    }

    /// Connections kept open per target before any request.
    pub fn http_warm_connections(&self) -> u32 {
        self.warm_connections.unwrap_or(0)
    }

    pub fn http_algorithm(&self) -> Algorithm {
        self.algorithm.unwrap_or_default()
    }
}

/// A `source_ip` value: `10.0.0.0/8`, `2001:db8::/32` or a single address.
pub fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

fn is_http(p: Protocol) -> bool {
    matches!(p, Protocol::Http | Protocol::Https)
}

/// Checks the HTTP keys of every listener and target group.
pub(super) fn check(c: &Config, errs: &mut ValidationErrors) {
    for (i, l) in c.listeners.iter().enumerate() {
        check_listener(c, &format!("listener[{i}]"), l, errs);
    }
    for (i, g) in c.target_groups.iter().enumerate() {
        check_group(&format!("target_group[{i}]"), g, errs);
    }
}

fn check_listener(c: &Config, path: &str, l: &Listener, errs: &mut ValidationErrors) {
    if !is_http(l.protocol) {
        let set = [
            ("default_action", l.default_action.is_some()),
            ("rule", !l.rules.is_empty()),
            ("idle_timeout", l.idle_timeout.is_some()),
            ("access_log", l.access_log.is_some()),
            (
                "http2_max_target_connections",
                l.http2_max_target_connections.is_some(),
            ),
            ("normalize_path", l.normalize_path.is_some()),
        ];
        for (key, present) in set {
            if present {
                errs.push(
                    format!("{path}.{key}"),
                    format!(
                        "only http and https listeners take it, this one is {}",
                        l.protocol
                    ),
                );
            }
        }
        return;
    }
    if l.target_group.is_some() && l.default_action.is_some() {
        errs.push(
            format!("{path}.default_action"),
            "set either target_group or default_action, not both",
        );
    }
    if l.target_group.is_none() && l.default_action.is_none() {
        errs.push(
            format!("{path}.default_action"),
            "an http listener needs default_action (or target_group)",
        );
    }
    if let Some(t) = l.idle_timeout {
        errs.range(format!("{path}.idle_timeout"), t, &IDLE_TIMEOUT);
    }
    if let Some(n) = l.http2_max_target_connections {
        errs.range(
            format!("{path}.http2_max_target_connections"),
            n,
            &HTTP2_MAX_TARGET_CONNECTIONS,
        );
    }
    if let Some(log) = &l.access_log {
        if !log.is_absolute() {
            errs.push(
                format!("{path}.access_log"),
                format!("{log:?} is not an absolute path"),
            );
        } else if let Some(problem) = access_log_problem(log) {
            errs.push(format!("{path}.access_log"), problem);
        }
    }
    if let Some(a) = &l.default_action {
        check_action(c, l, &format!("{path}.default_action"), a, errs);
    }
    let mut priorities = HashMap::new();
    for (j, r) in l.rules.iter().enumerate() {
        let rpath = format!("{path}.rule[{j}]");
        if errs.range(format!("{rpath}.priority"), r.priority, &PRIORITY)
            && let Some(first) = priorities.insert(r.priority, j)
        {
            errs.push(
                format!("{rpath}.priority"),
                format!("{} duplicates rule[{first}].priority", r.priority),
            );
        }
        check_conditions(&format!("{rpath}.conditions"), &r.conditions, errs);
        check_action(c, l, &format!("{rpath}.action"), &r.action, errs);
    }
}

/// Why `lb run` could not open `log` for appending, as far as the file
/// system can tell without creating it: the file is a directory, or its
/// directory is missing (lb creates the file, not its directories).
/// Permissions are left to `lb run`, which may run as another user.
fn access_log_problem(log: &Path) -> Option<String> {
    match fs::metadata(log) {
        Ok(m) if m.is_dir() => Some(format!("{log:?} is a directory; name a file")),
        Ok(_) => None,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = log.parent().unwrap_or(log);
            match fs::metadata(dir) {
                Ok(m) if m.is_dir() => None,
                Ok(_) => Some(format!("{dir:?} is not a directory")),
                Err(e) => Some(format!(
                    "its directory {dir:?} cannot be used ({e}); lb creates the file, not its directory"
                )),
            }
        }
        Err(e) => Some(format!("{log:?}: {e}")),
    }
}

fn check_conditions(path: &str, c: &Conditions, errs: &mut ValidationErrors) {
    let mut any = false;
    let mut values = |key: &str, list: Option<&[String]>, errs: &mut ValidationErrors| {
        let Some(list) = list else { return };
        any = true;
        check_values(&format!("{path}.{key}"), list.len(), errs);
        for (k, v) in list.iter().enumerate() {
            check_pattern(format!("{path}.{key}[{k}]"), v, errs);
        }
    };
    values("host_header", c.host_header.as_deref(), errs);
    values("path_pattern", c.path_pattern.as_deref(), errs);
    values(
        "http_request_method",
        c.http_request_method.as_deref(),
        errs,
    );
    if let Some(paths) = &c.path_pattern {
        for (k, p) in paths.iter().enumerate() {
            if !p.starts_with('/') && !p.starts_with('*') {
                errs.push(
                    format!("{path}.path_pattern[{k}]"),
                    format!("{p:?} must start with \"/\" or \"*\""),
                );
            }
        }
    }
    if let Some(methods) = &c.http_request_method {
        for (k, m) in methods.iter().enumerate() {
            if !m.is_empty() && !valid_method(m) {
                errs.push(
                    format!("{path}.http_request_method[{k}]"),
                    format!(
                        "{m:?} is not an HTTP method: 1 to {MAX_METHOD} characters of A-Z, - and _ (methods are case-sensitive: \"GET\", not \"get\")"
                    ),
                );
            }
        }
    }
    for (k, h) in c.http_header.iter().enumerate() {
        any = true;
        let hpath = format!("{path}.http_header[{k}]");
        if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
            errs.push(
                format!("{hpath}.name"),
                format!("{:?} is not a header name", h.name),
            );
        }
        check_values(&format!("{hpath}.values"), h.values.len(), errs);
        for (v, value) in h.values.iter().enumerate() {
            check_pattern(format!("{hpath}.values[{v}]"), value, errs);
        }
    }
    if let Some(q) = &c.query_string {
        any = true;
        check_values(&format!("{path}.query_string"), q.len(), errs);
        for (k, cond) in q.iter().enumerate() {
            let qpath = format!("{path}.query_string[{k}]");
            if let Some(key) = &cond.key {
                check_pattern(format!("{qpath}.key"), key, errs);
            }
            check_pattern(format!("{qpath}.value"), &cond.value, errs);
        }
    }
    if let Some(nets) = &c.source_ip {
        any = true;
        check_values(&format!("{path}.source_ip"), nets.len(), errs);
        for (k, n) in nets.iter().enumerate() {
            if parse_net(n).is_none() {
                errs.push(
                    format!("{path}.source_ip[{k}]"),
                    format!("{n:?} is not a CIDR block or an address"),
                );
            }
        }
    }
    if !any {
        errs.push(
            path,
            "a rule needs at least one condition (use default_action for the rest)",
        );
    }
}

/// ALB's rule for method conditions: upper-case letters, `-` and `_`, at
/// most [`MAX_METHOD`] characters. Methods are case-sensitive (RFC 9110
/// section 9.1) and every registered one is upper case: a lower-case value
/// would only match a client that sent that odd token.
fn valid_method(m: &str) -> bool {
    m.len() <= MAX_METHOD
        && m.bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
}

/// Longest pattern of a condition (ALB's limit), in bytes.
const MAX_PATTERN: usize = 128;

/// A condition's pattern (host, path, method, header value, query key or
/// value): 1 to [`MAX_PATTERN`] characters, as the docs say of them all.
fn check_pattern(path: String, pattern: &str, errs: &mut ValidationErrors) {
    if pattern.is_empty() || pattern.len() > MAX_PATTERN {
        errs.push(path, format!("must be 1 to {MAX_PATTERN} characters"));
    }
}

fn check_values(path: &str, n: usize, errs: &mut ValidationErrors) {
    if n == 0 || n > MAX_CONDITION_VALUES {
        errs.push(
            path,
            format!("{n} values; a condition takes 1 to {MAX_CONDITION_VALUES}"),
        );
    }
}

fn check_action(c: &Config, l: &Listener, path: &str, a: &Action, errs: &mut ValidationErrors) {
    match a {
        Action::Forward {
            target_group,
            target_groups,
        } => {
            match (target_group, target_groups.is_empty()) {
                (Some(_), false) => {
                    errs.push(path, "set either target_group or target_groups, not both")
                }
                (None, true) => errs.push(path, "a forward needs target_group or target_groups"),
                _ => {}
            }
            if let Some(g) = target_group {
                check_group_ref(c, l, &format!("{path}.target_group"), g, errs);
            }
            for (k, w) in target_groups.iter().enumerate() {
                let wpath = format!("{path}.target_groups[{k}]");
                check_group_ref(c, l, &format!("{wpath}.name"), &w.name, errs);
                errs.range(format!("{wpath}.weight"), w.weight, &GROUP_WEIGHT);
            }
            if !target_groups.is_empty() && target_groups.iter().all(|w| w.weight == 0) {
                errs.push(
                    format!("{path}.target_groups"),
                    "at least one weight must be above 0",
                );
            }
        }
        Action::Redirect(r) => check_redirect(path, r, errs),
        Action::FixedResponse(f) => {
            if !matches!(f.status / 100, 2 | 4 | 5) {
                errs.push(
                    format!("{path}.status"),
                    format!("{} is not a 2XX, 4XX or 5XX code", f.status),
                );
            }
            if !CONTENT_TYPES.contains(&f.content_type.as_str()) {
                errs.push(
                    format!("{path}.content_type"),
                    format!(
                        "{:?} is not one of {}",
                        f.content_type,
                        CONTENT_TYPES.join(", ")
                    ),
                );
            }
            if f.body.len() > MAX_FIXED_BODY {
                errs.push(
                    format!("{path}.body"),
                    format!("{} bytes exceed {MAX_FIXED_BODY}", f.body.len()),
                );
            }
        }
    }
}

fn check_group_ref(c: &Config, l: &Listener, path: &str, name: &str, errs: &mut ValidationErrors) {
    match c.target_group(name) {
        None => errs.push(path, format!("unknown target group {name:?}")),
        Some(g) if !l.protocol.accepts_group(g.protocol) => errs.push(
            path,
            format!(
                "target group {:?} is {}, the listener is {}",
                g.name, g.protocol, l.protocol
            ),
        ),
        Some(_) => {}
    }
}

fn check_redirect(path: &str, r: &Redirect, errs: &mut ValidationErrors) {
    if !matches!(r.status, 301 | 302) {
        errs.push(
            format!("{path}.status"),
            format!("{} is not 301 or 302", r.status),
        );
    }
    // The scheme in any case (ALB writes HTTPS; the Location gets it in
    // lower case), the placeholder exactly: `#{PROTOCOL}` would not be
    // filled in and would reach the Location as it is.
    let scheme = ["http", "https"].contains(&r.protocol.to_ascii_lowercase().as_str());
    if !scheme && r.protocol != "#{protocol}" {
        errs.push(
            format!("{path}.protocol"),
            format!("{:?} is not http, https or #{{protocol}}", r.protocol),
        );
    }
    if r.port != "#{port}" && r.port.parse::<u16>().map_or(true, |p| !PORT.contains(&p)) {
        errs.push(
            format!("{path}.port"),
            format!("{:?} is not a port (1..=65535) or #{{port}}", r.port),
        );
    }
    if r.host.is_empty() {
        errs.push(format!("{path}.host"), "must not be empty");
    }
    if !r.path.starts_with('/') {
        errs.push(
            format!("{path}.path"),
            format!("{:?} must start with \"/\"", r.path),
        );
    }
    if r.query.starts_with('?') {
        errs.push(format!("{path}.query"), "leave out the leading \"?\"");
    }
    // Each part goes into the Location field as it is (the placeholders
    // filled): what a URI or a header cannot carry would turn every
    // matching request into an error.
    for (key, value, forbidden) in [
        ("host", &r.host, &['/', '?', '#', '@'][..]),
        ("path", &r.path, &['?', '#'][..]),
        ("query", &r.query, &['#'][..]),
    ] {
        if let Some(problem) = template_problem(value, forbidden) {
            errs.push(format!("{path}.{key}"), format!("{value:?} {problem}"));
        }
    }
    // A redirect to itself would loop forever.
    if r.protocol == "#{protocol}"
        && r.host == "#{host}"
        && r.port == "#{port}"
        && r.path == "/#{path}"
        && r.query == "#{query}"
    {
        errs.push(
            path,
            "a redirect must change at least one of protocol, host, port, path or query",
        );
    }
}

/// What is wrong with a redirect template, if anything: an unknown
/// placeholder, a character no URI carries (controls, spaces, non-ASCII:
/// percent-encode them), or one of `forbidden` (which would end this part
/// of the URI early).
fn template_problem(template: &str, forbidden: &[char]) -> Option<String> {
    let mut rest = template.to_owned();
    for p in REDIRECT_PLACEHOLDERS {
        rest = rest.replace(p, "");
    }
    if let Some(at) = rest.find("#{") {
        let name: String = rest[at..].chars().take_while(|&c| c != '}').collect();
        return Some(format!(
            "has an unknown placeholder {name}}} (known: {})",
            REDIRECT_PLACEHOLDERS.join(", ")
        ));
    }
    let bad = rest
        .chars()
        .find(|c| !c.is_ascii_graphic() || forbidden.contains(c))?;
    Some(if bad.is_ascii_graphic() {
        format!("must not contain {bad:?} here")
    } else {
        format!(
            "must not contain {bad:?}: only visible ASCII (percent-encode spaces, control and non-ASCII characters)"
        )
    })
}

fn check_group(path: &str, g: &TargetGroup, errs: &mut ValidationErrors) {
    if !is_http(g.protocol) {
        let set = [
            ("keep_alive_timeout", g.keep_alive_timeout.is_some()),
            ("response_timeout", g.response_timeout.is_some()),
            ("warm_connections", g.warm_connections.is_some()),
            ("algorithm", g.algorithm.is_some()),
        ];
        for (key, present) in set {
            if present {
                errs.push(
                    format!("{path}.{key}"),
                    format!(
                        "only http and https target groups take it, this one is {}",
                        g.protocol
                    ),
                );
            }
        }
        return;
    }
    let keep_alive = g.http_keep_alive_timeout();
    errs.range(
        format!("{path}.keep_alive_timeout"),
        keep_alive,
        &KEEP_ALIVE_TIMEOUT,
    );
    errs.range(
        format!("{path}.response_timeout"),
        g.http_response_timeout(),
        &RESPONSE_TIMEOUT,
    );
    let warm = g.http_warm_connections();
    if errs.range(format!("{path}.warm_connections"), warm, &WARM_CONNECTIONS)
        && warm > 0
        && keep_alive == 0
    {
        errs.push(
            format!("{path}.warm_connections"),
            "warm connections need keep_alive_timeout above 0 (they would close unused)",
        );
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
