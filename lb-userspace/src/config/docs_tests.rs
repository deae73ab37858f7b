//! docs/config.md's defaults are the code's: every key whose documented
//! default is a TOML value is set to that value in a config, and the config
//! must come out the same (after the code's own defaulting of optional
//! keys) as with the key left out. A default changed in one place only
//! fails here, and so does a documented default nobody checks.
use super::Config;

const DOC: &str = include_str!("../../../docs/config.md");

/// Every key with a literal default: (table heading, key, TOML value).
fn documented() -> Vec<(String, String, String)> {
    let mut table = String::new();
    let mut out = Vec::new();
    for line in DOC.lines() {
        if let Some(heading) = line.strip_prefix("## ").or(line.strip_prefix("### ")) {
            table = heading.split('`').nth(1).unwrap_or_default().to_owned();
            continue;
        }
        let cells: Vec<&str> = line.split(" | ").collect();
        let (Some(key), Some(default)) = (cells.first(), cells.get(2)) else {
            continue;
        };
        let Some(key) = key.strip_prefix("| `").and_then(|k| k.strip_suffix('`')) else {
            continue;
        };
        let Some(value) = default.strip_prefix('`').and_then(|d| d.split('`').next()) else {
            continue;
        };
        // `http` for `http` groups, ...: prose, not a value.
        if toml::from_str::<toml::Table>(&format!("v = {value}")).is_ok() {
            out.push((table.clone(), key.to_owned(), value.to_owned()));
        }
    }
    out
}

/// A config touching every table, with `line` added to `table`.
fn config_with(table: &str, line: &str) -> Config {
    let at = |t: &str| if t == table { line } else { "" };
    let text = format!(
        r#"
[daemon]
interfaces = ["eth0"]
{}

[[listener]]
name = "web"
protocol = "https"
address = "10.0.0.100"
port = 443
target_group = "web"
{}
  [listener.tls]
{}
  [[listener.tls.certificate]]
  cert = "/c.pem"
  key = "/k.pem"
{}

[[target_group]]
name = "web"
protocol = "https"
port = 8443
{}
  [target_group.tls]
  ca_file = "/ca.pem"
{}
  [target_group.health_check]
{}
  [[target_group.target]]
  address = "10.1.0.2"
{}

[api]
{}

[bgp]
{}
"#,
        at("[daemon]"),
        at("[[listener]]"),
        at("[listener.tls]"),
        at("[[listener.tls.certificate]]"),
        at("[[target_group]]"),
        at("[target_group.tls]"),
        at("[target_group.health_check]"),
        at("[[target_group.target]]"),
        at("[api]"),
        at("[bgp]"),
    );
    Config::parse(&text).unwrap_or_else(|e| panic!("{table} {line}: {e}\n{text}"))
}

/// What the code makes of `table` in `c`: the table as parsed, with the
/// optional keys the code defaults later resolved.
fn effective(c: &Config, table: &str) -> Option<String> {
    let l = &c.listeners[0];
    let tls = l.tls.as_ref().expect("listener tls");
    let g = &c.target_groups[0];
    Some(match table {
        "[daemon]" => format!("{:?}", c.daemon),
        "[[listener]]" => format!(
            "{:?} idle {} h2 targets {} normalize {} caps {} {} {}",
            super::Listener {
                idle_timeout: None,
                http2_max_target_connections: None,
                normalize_path: None,
                max_connections: None,
                max_connections_per_client: None,
                client_ipv6_prefix: None,
                ..l.clone()
            },
            l.http_idle_timeout(),
            l.http2_max_target_connections(),
            l.http_normalize_path(),
            l.max_connections(),
            l.max_connections_per_client(),
            l.client_ipv6_prefix(),
        ),
        "[listener.tls]" => format!("{:?} {:?}", tls.security_policy, tls.alpn),
        "[[listener.tls.certificate]]" => format!("{:?}", tls.certificates),
        "[[target_group]]" => format!(
            "{:?} {} {} {} {:?}",
            super::TargetGroup {
                keep_alive_timeout: None,
                response_timeout: None,
                warm_connections: None,
                algorithm: None,
                ..g.clone()
            },
            g.http_keep_alive_timeout(),
            g.http_response_timeout(),
            g.http_warm_connections(),
            g.http_algorithm(),
        ),
        "[target_group.tls]" => format!("{:?}", g.tls),
        "[target_group.health_check]" => format!("{:?}", g.resolved_health_check()),
        "[[target_group.target]]" => format!("{:?}", g.targets),
        "[api]" => format!("{:?}", c.api),
        "[bgp]" => format!("{:?}", c.bgp),
        _ => return None,
    })
}

#[test]
fn documented_defaults_are_the_codes() {
    let documented = documented();
    // The tables above, each with several defaults: the parse found them.
    assert!(documented.len() >= 30, "{documented:?}");
    for (table, key, value) in documented {
        let line = format!("{key} = {value}");
        let unset = effective(&config_with(&table, ""), &table)
            .unwrap_or_else(|| panic!("docs/config.md: {table} documents `{line}`; check it here"));
        let set = effective(&config_with(&table, &line), &table).expect("known table");
        assert_eq!(
            set, unset,
            "docs/config.md: {table} `{line}` is not the code's default"
        );
    }
}
