//! `[listener.tls]` and `[target_group.tls]`: TLS termination on listeners
//! and TLS toward targets, plus their semantic checks (files readable and
//! parseable, keys matching certificates, options that fit the protocol).
use std::{fmt, path::PathBuf};

use serde::Deserialize;

use super::{Config, Dataplane, Listener, Protocol, TargetGroup, ValidationErrors};
use crate::pem;

/// `[listener.tls]` of a `tls` or `https` listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// `[[listener.tls.certificate]]`: at least one. A client's SNI picks
    /// the first certificate whose names cover it; clients without SNI or
    /// with a name no certificate covers get the default one.
    #[serde(rename = "certificate")]
    pub certificates: Vec<Certificate>,
    /// Protocol versions and cipher suites offered.
    #[serde(default)]
    pub security_policy: SecurityPolicy,
    /// ALPN protocols offered, in order of preference (e.g. `["h2",
    /// "http/1.1"]`). Empty: no ALPN for `tls` listeners, `h2` and
    /// `http/1.1` for `https` listeners.
    #[serde(default)]
    pub alpn: Vec<String>,
}

impl ListenerTls {
    /// The certificate for clients without (matching) SNI: the one marked
    /// `default = true`, else the first.
    pub fn default_certificate(&self) -> Option<&Certificate> {
        self.certificates
            .iter()
            .find(|c| c.default)
            .or(self.certificates.first())
    }
}

/// `[[listener.tls.certificate]]`: a PEM certificate chain and its key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// PEM file: the end-entity certificate first, then intermediates.
    pub cert: PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Served to clients without SNI or with a name no certificate covers.
    /// At most one certificate per listener; none marked: the first.
    #[serde(default)]
    pub default: bool,
}

/// `listener.tls.security_policy`: ELB's names for sets of TLS versions and
/// cipher suites. Every suite is ECDHE with an AEAD (rustls has no others).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum SecurityPolicy {
    /// TLS 1.3 and TLS 1.2 (ECDHE with AES-GCM or ChaCha20-Poly1305).
    #[default]
    #[serde(rename = "ELBSecurityPolicy-TLS13-1-2-2021-06")]
    Tls13Tls12,
    /// TLS 1.3 and TLS 1.2 restricted to ECDHE with AES-GCM.
    #[serde(rename = "ELBSecurityPolicy-TLS13-1-2-Res-2021-06")]
    Tls13Tls12Restricted,
    /// TLS 1.3 only.
    #[serde(rename = "ELBSecurityPolicy-TLS13-1-3-2021-06")]
    Tls13Only,
    /// TLS 1.2 only, ECDHE with AES-GCM (forward secrecy).
    #[serde(rename = "ELBSecurityPolicy-FS-1-2-Res-2020-10")]
    Fs12Restricted,
}

impl SecurityPolicy {
    /// Every policy, for error messages and docs.
    pub const ALL: [SecurityPolicy; 4] = [
        SecurityPolicy::Tls13Tls12,
        SecurityPolicy::Tls13Tls12Restricted,
        SecurityPolicy::Tls13Only,
        SecurityPolicy::Fs12Restricted,
    ];

    /// The config spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            SecurityPolicy::Tls13Tls12 => "ELBSecurityPolicy-TLS13-1-2-2021-06",
            SecurityPolicy::Tls13Tls12Restricted => "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
            SecurityPolicy::Tls13Only => "ELBSecurityPolicy-TLS13-1-3-2021-06",
            SecurityPolicy::Fs12Restricted => "ELBSecurityPolicy-FS-1-2-Res-2020-10",
        }
    }
}

impl fmt::Display for SecurityPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[target_group.tls]` of a `tls` target group: how targets are verified.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetGroupTls {
    /// PEM file of the CA certificates a target's chain must lead to.
    /// Required unless `verify = false`.
    pub ca_file: Option<PathBuf>,
    /// `false` accepts any target certificate (encryption without
    /// authentication, as ELB does toward targets). Must be said explicitly.
    #[serde(default = "default_verify")]
    pub verify: bool,
    /// Name sent as SNI and checked against the target's certificate;
    /// default: the target's IP address (the certificate then needs an IP
    /// subject alternative name).
    pub server_name: Option<String>,
}

fn default_verify() -> bool {
    true
}

/// The checks of this file; called from `Config::validate`.
pub(super) fn check(c: &Config, errs: &mut ValidationErrors) {
    for (i, l) in c.listeners.iter().enumerate() {
        check_listener(i, l, errs);
    }
    for (i, g) in c.target_groups.iter().enumerate() {
        check_group(c, i, g, errs);
    }
}

fn check_listener(i: usize, l: &Listener, errs: &mut ValidationErrors) {
    let path = format!("listener[{i}].tls");
    let wants_tls = matches!(l.protocol, Protocol::Tls | Protocol::Https);
    match (&l.tls, wants_tls) {
        (None, true) => errs.push(
            path,
            format!("a {} listener needs a [listener.tls] table", l.protocol),
        ),
        (Some(_), false) => errs.push(
            path,
            format!("a {} listener does not terminate TLS", l.protocol),
        ),
        (Some(t), true) => check_listener_tls(&path, l.protocol, t, errs),
        (None, false) => {}
    }
}

/// ALPN protocols an `https` listener speaks (hyper serves HTTP/1.0 and
/// 1.1 alike); anything else negotiated would be answered in HTTP.
pub const HTTPS_ALPN: [&str; 3] = ["h2", "http/1.1", "http/1.0"];

fn check_listener_tls(
    path: &str,
    protocol: Protocol,
    t: &ListenerTls,
    errs: &mut ValidationErrors,
) {
    if t.certificates.is_empty() {
        errs.push(
            format!("{path}.certificate"),
            "at least one certificate is required",
        );
    }
    let defaults = t.certificates.iter().filter(|c| c.default).count();
    if defaults > 1 {
        errs.push(
            format!("{path}.certificate"),
            format!("{defaults} certificates say default = true; at most one may"),
        );
    }
    for (j, cert) in t.certificates.iter().enumerate() {
        if let Err(e) = pem::load_certified_key(&cert.cert, &cert.key) {
            errs.push(format!("{path}.certificate[{j}]"), e.to_string());
        }
    }
    for (j, proto) in t.alpn.iter().enumerate() {
        if proto.is_empty() || proto.len() > 255 {
            errs.push(
                format!("{path}.alpn[{j}]"),
                format!("{proto:?} must be 1 to 255 bytes"),
            );
        } else if t.alpn[..j].contains(proto) {
            errs.push(
                format!("{path}.alpn[{j}]"),
                format!("{proto:?} is listed twice"),
            );
        } else if protocol == Protocol::Https && !HTTPS_ALPN.contains(&proto.as_str()) {
            errs.push(
                format!("{path}.alpn[{j}]"),
                format!(
                    "{proto:?} is not a protocol an https listener speaks ({})",
                    HTTPS_ALPN.join(", ")
                ),
            );
        }
    }
}

fn check_group(c: &Config, i: usize, g: &TargetGroup, errs: &mut ValidationErrors) {
    let path = format!("target_group[{i}]");
    // tls and https groups connect to their targets with TLS; how targets
    // are verified must be said (no silent default), as for tls groups.
    match (&g.tls, g.protocol) {
        (None, p @ (Protocol::Tls | Protocol::Https)) => errs.push(
            format!("{path}.tls"),
            format!(
                "a {p} target group needs a [target_group.tls] table (ca_file, or verify = false)"
            ),
        ),
        (Some(_), Protocol::Tls | Protocol::Https) | (None, _) => {}
        (Some(_), p) => errs.push(
            format!("{path}.tls"),
            format!("only tls and https target groups connect with TLS; this one is {p}"),
        ),
    }
    if let Some(t) = &g.tls {
        check_group_tls(&format!("{path}.tls"), t, errs);
    }
    if g.proxy_protocol_v2 && matches!(g.protocol, Protocol::Http | Protocol::Https) {
        // The HTTP pool's connections carry many clients' requests.
        errs.push(
            format!("{path}.proxy_protocol_v2"),
            format!(
                "{} target groups do not send PROXY headers (a connection to a target carries many clients' requests; X-Forwarded-For names each client)",
                g.protocol
            ),
        );
    } else if g.proxy_protocol_v2 {
        // The XDP path rewrites packets; it cannot insert bytes into a stream.
        let in_kernel = c.daemon.dataplane != Dataplane::Userspace;
        let users = c
            .listeners
            .iter()
            .filter(|l| l.target_group.as_deref() == Some(g.name.as_str()));
        for l in users {
            let why = match l.protocol {
                Protocol::Udp => {
                    "cannot send PROXY headers: neither the XDP path nor the UDP relay does"
                }
                Protocol::Tcp if in_kernel => {
                    "is served by the XDP path, which cannot send PROXY headers"
                }
                _ => continue,
            };
            errs.push(
                format!("{path}.proxy_protocol_v2"),
                format!(
                    "{} listener {:?} {why} (only tls listeners, or tcp ones with dataplane = \"userspace\")",
                    l.protocol, l.name
                ),
            );
        }
    }
}

fn check_group_tls(path: &str, t: &TargetGroupTls, errs: &mut ValidationErrors) {
    match (&t.ca_file, t.verify) {
        (None, true) => errs.push(
            format!("{path}.ca_file"),
            "required to verify targets; or say verify = false to accept any target certificate",
        ),
        (Some(_), false) => errs.push(
            format!("{path}.ca_file"),
            "given with verify = false: either verify against it or drop it",
        ),
        (Some(ca), true) => {
            if let Err(e) = pem::load_roots(ca) {
                errs.push(format!("{path}.ca_file"), e.to_string());
            }
        }
        (None, false) => {}
    }
    if let Some(name) = &t.server_name
        && rustls::pki_types::ServerName::try_from(name.as_str()).is_err()
    {
        errs.push(
            format!("{path}.server_name"),
            format!("{name:?} is not a DNS name or IP address"),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn errors(text: &str) -> Vec<String> {
        let config = Config::parse(text).unwrap_or_else(|e| panic!("parse: {e}"));
        match config.validate() {
            Ok(()) => vec![],
            Err(errs) => errs.iter().map(ToString::to_string).collect(),
        }
    }

    const GROUPS: &str = r#"
[[target_group]]
name = "plain"
protocol = "tcp"
port = 8080

[[target_group]]
name = "secure"
protocol = "tls"
port = 8443
"#;

    fn listener(protocol: &str, group: &str, tls: &str) -> String {
        format!(
            "[[listener]]\nname = \"l\"\nprotocol = \"{protocol}\"\naddress = \"10.0.0.1\"\nport = 443\ntarget_group = \"{group}\"\n{tls}\n"
        )
    }

    fn config(dataplane: &str, listener: &str, group_tls: &str) -> String {
        format!(
            "[daemon]\ninterfaces = [\"eth0\"]\ndataplane = \"{dataplane}\"\n\n{listener}{GROUPS}{group_tls}"
        )
    }

    #[test]
    fn tls_tables_must_fit_the_protocol() {
        assert_eq!(
            errors(&config("xdp", &listener("tls", "plain", ""), "")),
            ["listener[0].tls: a tls listener needs a [listener.tls] table"]
                .into_iter()
                .chain(["target_group[1].tls: a tls target group needs a [target_group.tls] table (ca_file, or verify = false)"])
                .collect::<Vec<_>>()
        );
        let tls = "[listener.tls]\ncertificate = []\n";
        assert_eq!(
            errors(&config(
                "xdp",
                &listener("tcp", "plain", tls),
                "  [target_group.tls]\n  verify = false\n"
            )),
            ["listener[0].tls: a tcp listener does not terminate TLS"]
        );
    }

    #[test]
    fn https_groups_need_their_tls_table_and_http_groups_refuse_it() {
        let text = |protocol: &str, tls: &str| {
            format!(
                "[daemon]\ninterfaces = [\"eth0\"]\n\n[[listener]]\nname = \"l\"\nprotocol = \"http\"\naddress = \"10.0.0.1\"\nport = 80\ntarget_group = \"web\"\n\n[[target_group]]\nname = \"web\"\nprotocol = \"{protocol}\"\nport = 8443\n{tls}"
            )
        };
        assert_eq!(
            errors(&text("https", "")),
            [
                "target_group[0].tls: a https target group needs a [target_group.tls] table (ca_file, or verify = false)"
            ]
        );
        let unverified = "  [target_group.tls]\n  verify = false\n";
        assert!(errors(&text("https", unverified)).is_empty());
        assert_eq!(
            errors(&text("http", unverified)),
            [
                "target_group[0].tls: only tls and https target groups connect with TLS; this one is http"
            ]
        );
    }

    #[test]
    fn certificates_are_required_readable_and_unique_default() {
        let tls = "[listener.tls]\nalpn = [\"h2\", \"h2\", \"\"]\n[[listener.tls.certificate]]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\ndefault = true\n[[listener.tls.certificate]]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\ndefault = true\n";
        assert_eq!(
            errors(&config(
                "xdp",
                &listener("tls", "plain", tls),
                "  [target_group.tls]\n  verify = false\n"
            )),
            [
                "listener[0].tls.certificate: 2 certificates say default = true; at most one may",
                "listener[0].tls.certificate[0]: cannot read /nonexistent/c.pem: No such file or directory (os error 2)",
                "listener[0].tls.certificate[1]: cannot read /nonexistent/c.pem: No such file or directory (os error 2)",
                "listener[0].tls.alpn[1]: \"h2\" is listed twice",
                "listener[0].tls.alpn[2]: \"\" must be 1 to 255 bytes",
            ]
        );
        let none = "[listener.tls]\ncertificate = []\n";
        assert_eq!(
            errors(&config(
                "xdp",
                &listener("tls", "plain", none),
                "  [target_group.tls]\n  verify = false\n"
            )),
            ["listener[0].tls.certificate: at least one certificate is required"]
        );
    }

    #[test]
    fn target_verification_must_be_said() {
        let l = listener("tcp", "plain", "");
        assert_eq!(
            errors(&config(
                "xdp",
                &l,
                "  [target_group.tls]\n  server_name = \"bad name!\"\n"
            )),
            [
                "target_group[1].tls.ca_file: required to verify targets; or say verify = false to accept any target certificate",
                "target_group[1].tls.server_name: \"bad name!\" is not a DNS name or IP address",
            ]
        );
        assert_eq!(
            errors(&config(
                "xdp",
                &l,
                "  [target_group.tls]\n  verify = false\n  ca_file = \"/x.pem\"\n"
            )),
            [
                "target_group[1].tls.ca_file: given with verify = false: either verify against it or drop it"
            ]
        );
    }

    #[test]
    fn unknown_security_policy_lists_the_valid_ones() {
        let tls =
            "[listener.tls]\nsecurity_policy = \"ELBSecurityPolicy-2016-08\"\ncertificate = []\n";
        let err = Config::parse(&config("xdp", &listener("tls", "plain", tls), ""))
            .expect_err("unknown policy")
            .to_string();
        assert!(
            err.contains("unknown variant `ELBSecurityPolicy-2016-08`, expected one of `ELBSecurityPolicy-TLS13-1-2-2021-06`, `ELBSecurityPolicy-TLS13-1-2-Res-2021-06`, `ELBSecurityPolicy-TLS13-1-3-2021-06`, `ELBSecurityPolicy-FS-1-2-Res-2020-10`"),
            "{err}"
        );
    }

    #[test]
    fn proxy_v2_needs_a_daemon_served_stream_and_udp_is_served_on_either_path() {
        let l = listener("tcp", "plain", "");
        let pp = config("xdp", &l, "  [target_group.tls]\n  verify = false\n")
            .replace("port = 8080\n", "port = 8080\nproxy_protocol_v2 = true\n");
        assert_eq!(
            errors(&pp),
            [
                "target_group[0].proxy_protocol_v2: tcp listener \"l\" is served by the XDP path, which cannot send PROXY headers (only tls listeners, or tcp ones with dataplane = \"userspace\")"
            ]
        );
        assert_eq!(
            errors(&pp.replace("\"xdp\"", "\"userspace\"")),
            Vec::<String>::new()
        );
        // udp listeners are served on either path (the UDP relay in
        // userspace), neither with PROXY headers.
        let udp = config(
            "userspace",
            &listener("udp", "plain", ""),
            "  [target_group.tls]\n  verify = false\n",
        )
        .replace(
            "name = \"plain\"\nprotocol = \"tcp\"",
            "name = \"plain\"\nprotocol = \"udp\"",
        );
        assert_eq!(errors(&udp), Vec::<String>::new());
        let udp_pp = udp.replace("port = 8080\n", "port = 8080\nproxy_protocol_v2 = true\n");
        assert_eq!(
            errors(&udp_pp),
            [
                "target_group[0].proxy_protocol_v2: udp listener \"l\" cannot send PROXY headers: neither the XDP path nor the UDP relay does (only tls listeners, or tcp ones with dataplane = \"userspace\")"
            ]
        );
    }

    #[test]
    fn userspace_needs_no_interfaces() {
        let text = config(
            "userspace",
            &listener("tcp", "plain", ""),
            "  [target_group.tls]\n  verify = false\n",
        )
        .replace("interfaces = [\"eth0\"]\n", "");
        assert_eq!(errors(&text), Vec::<String>::new());
    }
}
