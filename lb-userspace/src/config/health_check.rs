//! `[target_group.health_check]`: how the daemon learns which targets are
//! alive. Keys, defaults and bounds follow NLB's, except that the interval may
//! go down to 1 s (ELB's minimum is 5 s; tests and benchmarks need faster).
//!
//! The table is parsed into [`HealthCheckConfig`] (what the operator wrote),
//! checked by [`check_health_check`] (called from `Config::validate`) and
//! resolved per group into a [`HealthCheck`] (every default filled in) for the
//! checker in `crate::health`.
use std::{fmt, ops::RangeInclusive, time::Duration};

use serde::{Deserialize, Deserializer, de};

use super::{Forwarding, PORT, Protocol, TargetGroup, validation_errors::ValidationErrors};

/// Bounds of `interval`, seconds (ELB: 5..=300).
pub const INTERVAL: RangeInclusive<u32> = 1..=300;
/// Bounds of `timeout`, seconds (ELB: 2..=120); also at most `interval`.
pub const TIMEOUT: RangeInclusive<u32> = 1..=120;
/// Bounds of both thresholds (ELB's).
pub const THRESHOLD: RangeInclusive<u32> = 2..=10;
/// Longest `path` (ELB's).
pub const MAX_PATH_LEN: usize = 1024;
/// Status codes a `matcher` may name (NLB's range for HTTP checks).
pub const MATCHER_CODES: RangeInclusive<u16> = 200..=599;

/// Default `interval`, seconds.
pub const DEFAULT_INTERVAL: u32 = 30;
/// Default `healthy_threshold`.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 5;
/// Default `unhealthy_threshold`.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 2;
/// Default `matcher` (NLB's for HTTP/HTTPS checks).
pub const DEFAULT_MATCHER: &str = "200-399";
/// Default `path`.
pub const DEFAULT_PATH: &str = "/";

/// `health_check.protocol`: UDP cannot be checked, so UDP groups use one of
/// these too (TCP on the traffic port unless told otherwise), as NLB does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckProtocol {
    /// Healthy when a TCP connection is established.
    Tcp,
    /// Healthy when `GET path` answers with a status the matcher accepts.
    Http,
    /// As `Http`, over TLS (the certificate is not verified, as in ELB).
    Https,
}

impl CheckProtocol {
    /// The default for a group of `protocol` (ELB's rule: the group's own
    /// protocol where it can be checked, TCP otherwise).
    pub const fn default_for(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Http => CheckProtocol::Http,
            Protocol::Https => CheckProtocol::Https,
            Protocol::Tcp | Protocol::Udp | Protocol::Tls => CheckProtocol::Tcp,
        }
    }

    /// NLB's default timeout, seconds.
    pub const fn default_timeout(self) -> u32 {
        match self {
            CheckProtocol::Http => 6,
            CheckProtocol::Tcp | CheckProtocol::Https => 10,
        }
    }

    /// The config spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            CheckProtocol::Tcp => "tcp",
            CheckProtocol::Http => "http",
            CheckProtocol::Https => "https",
        }
    }
}

impl fmt::Display for CheckProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `health_check.address`: where a dsr target is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckAddress {
    /// The VIP, through the same encapsulation as client packets: what
    /// clients reach, so a target whose decapsulation or VIP is broken
    /// fails (dsr groups; their default).
    Vip,
    /// The target's own address, plainly (nat groups' only choice; dsr
    /// targets that do not hold the VIP for their checks).
    Target,
}

impl CheckAddress {
    /// The default for a group of `forwarding`.
    pub const fn default_for(forwarding: Forwarding) -> Self {
        match forwarding {
            Forwarding::Dsr => CheckAddress::Vip,
            Forwarding::Nat => CheckAddress::Target,
        }
    }

    /// The config spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            CheckAddress::Vip => "vip",
            CheckAddress::Target => "target",
        }
    }
}

/// `health_check.port`: `"traffic-port"` or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CheckPort {
    /// The port each target receives traffic on.
    #[default]
    TrafficPort,
    /// This port on every target.
    Port(u16),
}

impl<'de> Deserialize<'de> for CheckPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = CheckPort;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"traffic-port\" or a port number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CheckPort, E> {
                match v {
                    "traffic-port" => Ok(CheckPort::TrafficPort),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<CheckPort, E> {
                u16::try_from(v)
                    .map(CheckPort::Port)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `health_check.matcher`: the HTTP status codes that count as success,
/// e.g. `"200"`, `"200-399"`, `"200,202,300-399"`. Parsed while the config
/// is read, so a malformed matcher is a parse error with line and column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Matcher {
    ranges: Vec<RangeInclusive<u16>>,
}

impl Matcher {
    /// Parses the ELB syntax: comma-separated codes and `low-high` ranges,
    /// each within 200..=599.
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let code = |s: &str| -> Result<u16, String> {
            let c: u16 = s
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a status code"))?;
            if MATCHER_CODES.contains(&c) {
                Ok(c)
            } else {
                Err(format!(
                    "{c} is outside {}..={}",
                    MATCHER_CODES.start(),
                    MATCHER_CODES.end()
                ))
            }
        };
        let mut ranges = Vec::new();
        for part in text.split(',') {
            let range = match part.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (code(lo)?, code(hi)?);
                    if lo > hi {
                        return Err(format!("range {lo}-{hi} is empty"));
                    }
                    lo..=hi
                }
                None => {
                    let c = code(part)?;
                    c..=c
                }
            };
            ranges.push(range);
        }
        Ok(Matcher { ranges })
    }

    /// Whether `status` counts as a successful check.
    pub fn matches(&self, status: u16) -> bool {
        self.ranges.iter().any(|r| r.contains(&status))
    }
}

impl Default for Matcher {
    fn default() -> Self {
        Matcher::parse(DEFAULT_MATCHER).expect("the default matcher parses")
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Matcher::parse(&text)
            .map_err(|e| de::Error::custom(format!("invalid matcher {text:?}: {e}")))
    }
}

/// `[target_group.health_check]` as written; `None` means "the default for
/// this group's protocol" (see [`HealthCheckConfig::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `false`: no checks; targets are reported `unavailable` with reason
    /// `Target.HealthCheckDisabled` and receive traffic.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Default: the group's protocol for http/https groups, tcp otherwise.
    pub protocol: Option<CheckProtocol>,
    /// Default: the traffic port.
    #[serde(default)]
    pub port: CheckPort,
    /// Default: `vip` for dsr groups, `target` for nat groups (the only
    /// value they take).
    pub address: Option<CheckAddress>,
    /// HTTP(S) only; default `/`.
    pub path: Option<String>,
    /// HTTP(S) only; default `200-399`.
    pub matcher: Option<Matcher>,
    /// HTTP(S) only: the Host header; default the target's address and port.
    pub host: Option<String>,
    /// Seconds between checks of one target.
    #[serde(default = "default_interval")]
    pub interval: u32,
    /// Seconds a check may take; default NLB's for the protocol (10 s tcp
    /// and https, 6 s http), capped at `interval`.
    pub timeout: Option<u32>,
    /// Consecutive successes that make an unhealthy target healthy.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failures that make a target unhealthy.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
}

fn default_true() -> bool {
    true
}
fn default_interval() -> u32 {
    DEFAULT_INTERVAL
}
fn default_healthy_threshold() -> u32 {
    DEFAULT_HEALTHY_THRESHOLD
}
fn default_unhealthy_threshold() -> u32 {
    DEFAULT_UNHEALTHY_THRESHOLD
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            enabled: true,
            protocol: None,
            port: CheckPort::TrafficPort,
            address: None,
            path: None,
            matcher: None,
            host: None,
            interval: DEFAULT_INTERVAL,
            timeout: None,
            healthy_threshold: DEFAULT_HEALTHY_THRESHOLD,
            unhealthy_threshold: DEFAULT_UNHEALTHY_THRESHOLD,
        }
    }
}

/// What a probe sends, by protocol.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CheckKind {
    Tcp,
    Http(HttpCheck),
    Https(HttpCheck),
}

/// The request of an HTTP(S) check and what counts as success.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpCheck {
    pub path: String,
    pub matcher: Matcher,
    /// `None`: the probed address and port.
    pub host: Option<String>,
}

/// A group's health check with every default filled in: what the checker
/// runs against each of its targets. Two equal values mean the same probes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    pub kind: CheckKind,
    pub port: CheckPort,
    /// Where the probes go: the VIP (through the encapsulation) or the
    /// target's own address.
    pub address: CheckAddress,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

impl HealthCheck {
    /// Protocol of the probes.
    pub fn protocol(&self) -> CheckProtocol {
        match self.kind {
            CheckKind::Tcp => CheckProtocol::Tcp,
            CheckKind::Http(_) => CheckProtocol::Http,
            CheckKind::Https(_) => CheckProtocol::Https,
        }
    }

    /// Where to probe a target that receives traffic on `endpoint`.
    pub fn probe_addr(&self, endpoint: std::net::SocketAddr) -> std::net::SocketAddr {
        match self.port {
            CheckPort::TrafficPort => endpoint,
            CheckPort::Port(p) => std::net::SocketAddr::new(endpoint.ip(), p),
        }
    }
}

impl HealthCheckConfig {
    /// The check for a group of `protocol` and `forwarding`; `None` when
    /// disabled. Meaningful for a validated config (out-of-range values are
    /// used as they are).
    pub fn resolve(&self, protocol: Protocol, forwarding: Forwarding) -> Option<HealthCheck> {
        if !self.enabled {
            return None;
        }
        let check_protocol = self
            .protocol
            .unwrap_or(CheckProtocol::default_for(protocol));
        let http = || HttpCheck {
            path: self.path.clone().unwrap_or_else(|| DEFAULT_PATH.into()),
            matcher: self.matcher.clone().unwrap_or_default(),
            host: self.host.clone(),
        };
        let kind = match check_protocol {
            CheckProtocol::Tcp => CheckKind::Tcp,
            CheckProtocol::Http => CheckKind::Http(http()),
            CheckProtocol::Https => CheckKind::Https(http()),
        };
        let timeout = self
            .timeout
            .unwrap_or_else(|| check_protocol.default_timeout().min(self.interval));
        Some(HealthCheck {
            kind,
            port: self.port,
            address: self
                .address
                .unwrap_or(CheckAddress::default_for(forwarding)),
            interval: Duration::from_secs(self.interval.into()),
            timeout: Duration::from_secs(timeout.into()),
            healthy_threshold: self.healthy_threshold,
            unhealthy_threshold: self.unhealthy_threshold,
        })
    }
}

impl TargetGroup {
    /// This group's resolved health check; `None` when disabled.
    pub fn resolved_health_check(&self) -> Option<HealthCheck> {
        self.health_check.resolve(self.protocol, self.forwarding)
    }
}

/// Checks `target_group[i].health_check`; `path` is `target_group[i]`.
pub(super) fn check_health_check(path: &str, g: &TargetGroup, errs: &mut ValidationErrors) {
    let hc = &g.health_check;
    let path = format!("{path}.health_check");
    let protocol = hc
        .protocol
        .unwrap_or(CheckProtocol::default_for(g.protocol));
    if protocol == CheckProtocol::Tcp {
        for (key, set) in [
            ("path", hc.path.is_some()),
            ("matcher", hc.matcher.is_some()),
            ("host", hc.host.is_some()),
        ] {
            if set {
                errs.push(
                    format!("{path}.{key}"),
                    "only http and https health checks have this key",
                );
            }
        }
    }
    if let Some(p) = &hc.path {
        if !p.starts_with('/') || p.len() > MAX_PATH_LEN {
            errs.push(
                format!("{path}.path"),
                format!("{p:?} must start with \"/\" and be at most {MAX_PATH_LEN} bytes"),
            );
        } else if p.parse::<http::uri::PathAndQuery>().is_err() || p.contains(' ') {
            errs.push(
                format!("{path}.path"),
                format!("{p:?} contains spaces or control characters"),
            );
        }
    }
    if let Some(h) = &hc.host
        && (h.is_empty() || http::HeaderValue::from_str(h).is_err())
    {
        errs.push(
            format!("{path}.host"),
            format!("{h:?} is not a valid Host header value"),
        );
    }
    if let CheckPort::Port(p) = hc.port {
        errs.range(format!("{path}.port"), p, &PORT);
    }
    if hc.address == Some(CheckAddress::Vip) && g.forwarding != Forwarding::Dsr {
        errs.push(
            format!("{path}.address"),
            "\"vip\" probes dsr targets through the encapsulation; a nat group's targets are probed at their own address (\"target\")",
        );
    }
    let interval_ok = errs.range(format!("{path}.interval"), hc.interval, &INTERVAL);
    if let Some(t) = hc.timeout
        && errs.range(format!("{path}.timeout"), t, &TIMEOUT)
        && interval_ok
        && t > hc.interval
    {
        errs.push(
            format!("{path}.timeout"),
            format!("{t} is longer than interval {}", hc.interval),
        );
    }
    errs.range(
        format!("{path}.healthy_threshold"),
        hc.healthy_threshold,
        &THRESHOLD,
    );
    errs.range(
        format!("{path}.unhealthy_threshold"),
        hc.unhealthy_threshold,
        &THRESHOLD,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// A config with one group of `protocol` whose health check table holds
    /// `table` (none when empty).
    fn config(protocol: &str, table: &str) -> String {
        let hc = if table.is_empty() {
            String::new()
        } else {
            format!("  [target_group.health_check]\n{table}\n")
        };
        // tls and https groups must say how targets are verified.
        let tls = if protocol == "tls" || protocol == "https" {
            "  [target_group.tls]\n  verify = false\n"
        } else {
            ""
        };
        format!(
            r#"
[daemon]
interfaces = ["eth0"]

[[target_group]]
name = "g"
protocol = "{protocol}"
port = 8080
{tls}{hc}  [[target_group.target]]
  address = "10.1.0.2"
"#
        )
    }

    fn resolved(protocol: &str, table: &str) -> Option<HealthCheck> {
        let c = Config::parse(&config(protocol, table)).unwrap();
        assert_eq!(c.validate(), Ok(()));
        c.target_groups[0].resolved_health_check()
    }

    fn errors(protocol: &str, table: &str) -> Vec<String> {
        match Config::parse(&config(protocol, table)).unwrap().validate() {
            Ok(()) => vec![],
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    fn parse_error(protocol: &str, table: &str) -> String {
        Config::parse(&config(protocol, table))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn matcher_syntax() {
        let m = Matcher::parse("200,202,300-399").unwrap();
        assert!(m.matches(200) && m.matches(202) && m.matches(300) && m.matches(399));
        assert!(!m.matches(201) && !m.matches(400) && !m.matches(199));
        assert_eq!(m.to_string(), "200,202,300-399");
        assert_eq!(Matcher::default().to_string(), "200-399");
        for (bad, why) in [
            ("", "\"\" is not a status code"),
            ("2xx", "\"2xx\" is not a status code"),
            ("200-", "\"\" is not a status code"),
            ("199", "199 is outside 200..=599"),
            ("200-600", "600 is outside 200..=599"),
            ("399-200", "range 399-200 is empty"),
            ("200,,300", "\"\" is not a status code"),
        ] {
            assert_eq!(Matcher::parse(bad).unwrap_err(), why, "{bad:?}");
        }
    }

    #[test]
    fn defaults_follow_the_groups_protocol() {
        let tcp = resolved("tcp", "").unwrap();
        assert_eq!(tcp.kind, CheckKind::Tcp);
        assert_eq!(tcp.port, CheckPort::TrafficPort);
        assert_eq!(tcp.interval, Duration::from_secs(30));
        assert_eq!(tcp.timeout, Duration::from_secs(10));
        assert_eq!((tcp.healthy_threshold, tcp.unhealthy_threshold), (5, 2));
        // UDP cannot be checked: TCP on the traffic port.
        assert_eq!(resolved("udp", "").unwrap().kind, CheckKind::Tcp);
        assert_eq!(resolved("tls", "").unwrap().kind, CheckKind::Tcp);
        let http = resolved("http", "").unwrap();
        let expected = HttpCheck {
            path: "/".into(),
            matcher: Matcher::parse("200-399").unwrap(),
            host: None,
        };
        assert_eq!(http.kind, CheckKind::Http(expected.clone()));
        assert_eq!(http.timeout, Duration::from_secs(6));
        assert_eq!(
            resolved("https", "").unwrap().kind,
            CheckKind::Https(expected)
        );
        // The default timeout never exceeds the interval.
        let fast = resolved("tcp", "interval = 1").unwrap();
        assert_eq!(fast.timeout, Duration::from_secs(1));
        assert_eq!(resolved("tcp", "enabled = false"), None);
    }

    #[test]
    fn explicit_values() {
        let hc = resolved(
            "udp",
            r#"protocol = "http"
port = 8053
path = "/ready"
matcher = "200,204"
host = "dns.example"
interval = 10
timeout = 3
healthy_threshold = 3
unhealthy_threshold = 4"#,
        )
        .unwrap();
        assert_eq!(
            hc,
            HealthCheck {
                kind: CheckKind::Http(HttpCheck {
                    path: "/ready".into(),
                    matcher: Matcher::parse("200,204").unwrap(),
                    host: Some("dns.example".into()),
                }),
                port: CheckPort::Port(8053),
                address: CheckAddress::Target,
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(3),
                healthy_threshold: 3,
                unhealthy_threshold: 4,
            }
        );
        let ep = "10.1.0.2:53".parse().unwrap();
        assert_eq!(hc.probe_addr(ep).to_string(), "10.1.0.2:8053");
        let tp = resolved("tcp", "port = \"traffic-port\"").unwrap();
        assert_eq!(tp.probe_addr(ep), ep);
    }

    #[test]
    fn validation_errors_name_their_keys() {
        let p = "target_group[0].health_check";
        assert_eq!(
            errors("tcp", "path = \"/x\"\nmatcher = \"200\"\nhost = \"a\""),
            [
                format!("{p}.path: only http and https health checks have this key"),
                format!("{p}.matcher: only http and https health checks have this key"),
                format!("{p}.host: only http and https health checks have this key"),
            ]
        );
        assert_eq!(
            errors("http", "path = \"health\"\nhost = \"a\\nb\""),
            [
                format!("{p}.path: \"health\" must start with \"/\" and be at most 1024 bytes"),
                format!("{p}.host: \"a\\nb\" is not a valid Host header value"),
            ]
        );
        assert_eq!(
            errors("http", "path = \"/a b\""),
            [format!(
                "{p}.path: \"/a b\" contains spaces or control characters"
            )]
        );
        assert_eq!(
            errors(
                "tcp",
                "port = 0\ninterval = 301\ntimeout = 0\nhealthy_threshold = 1\nunhealthy_threshold = 11"
            ),
            [
                format!("{p}.port: 0 is outside 1..=65535"),
                format!("{p}.interval: 301 is outside 1..=300"),
                format!("{p}.timeout: 0 is outside 1..=120"),
                format!("{p}.healthy_threshold: 1 is outside 2..=10"),
                format!("{p}.unhealthy_threshold: 11 is outside 2..=10"),
            ]
        );
        assert_eq!(
            errors("tcp", "interval = 5\ntimeout = 6"),
            [format!("{p}.timeout: 6 is longer than interval 5")]
        );
        assert_eq!(
            errors("tcp", "interval = 5\ntimeout = 5"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn address_is_the_targets_own_in_nat_groups_and_vip_is_refused_there() {
        assert_eq!(resolved("tcp", "").unwrap().address, CheckAddress::Target);
        assert_eq!(
            resolved("udp", "address = \"target\"").unwrap().address,
            CheckAddress::Target
        );
        assert_eq!(
            errors("tcp", "address = \"vip\""),
            [
                "target_group[0].health_check.address: \"vip\" probes dsr targets through the encapsulation; a nat group's targets are probed at their own address (\"target\")"
            ]
        );
        let e = parse_error("tcp", "address = \"client\"");
        assert!(
            e.contains("unknown variant `client`, expected `vip` or `target`"),
            "{e}"
        );
        assert!(e.contains("address = \"client\""), "{e}");
    }

    #[test]
    fn parse_errors() {
        let e = parse_error("http", "matcher = \"200-99\"");
        assert!(
            e.contains("invalid matcher \"200-99\": 99 is outside 200..=599"),
            "{e}"
        );
        let e = parse_error("tcp", "port = \"traffic\"");
        assert!(
            e.contains("expected \"traffic-port\" or a port number"),
            "{e}"
        );
        let e = parse_error("tcp", "port = 70000");
        assert!(
            e.contains("expected \"traffic-port\" or a port number"),
            "{e}"
        );
        let e = parse_error("tcp", "protocol = \"udp\"");
        assert!(e.contains("unknown variant `udp`"), "{e}");
        let e = parse_error("tcp", "intervall = 5");
        assert!(e.contains("unknown field `intervall`"), "{e}");
    }
}
