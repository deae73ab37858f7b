use super::*;
use crate::config::testing::{errors, parse};

/// An http listener with rules and two http groups.
const BASE: &str = r#"
[daemon]
interfaces = ["eth0"]

[[listener]]
name = "web"
protocol = "http"
address = "10.0.0.100"
port = 80
default_action = { type = "forward", target_group = "a" }

  [[listener.rule]]
  priority = 10
  conditions.host_header = ["*.example.com"]
  conditions.path_pattern = ["/api/*"]
  conditions.http_request_method = ["GET", "POST"]
  conditions.http_header = [{ name = "x-env", values = ["beta"] }]
  conditions.query_string = [{ key = "v", value = "2" }, { value = "x*" }]
  conditions.source_ip = ["10.0.0.0/8", "2001:db8::1"]
  action = { type = "forward", target_groups = [{ name = "a", weight = 80 }, { name = "b", weight = 20 }] }

  [[listener.rule]]
  priority = 20
  conditions.path_pattern = ["/old"]
  action = { type = "redirect", status = 301, protocol = "https", port = "443" }

  [[listener.rule]]
  priority = 30
  conditions.path_pattern = ["/health"]
  action = { type = "fixed_response", status = 200, content_type = "application/json", body = "{}" }

[[target_group]]
name = "a"
protocol = "http"
port = 8080
keep_alive_timeout = 30
response_timeout = 5
warm_connections = 2
algorithm = "least_outstanding_requests"
  [[target_group.target]]
  address = "10.1.0.2"

[[target_group]]
name = "b"
protocol = "http"
port = 8080
  [[target_group.target]]
  address = "10.1.0.3"
"#;

fn with(from: &str, to: &str) -> String {
    assert_eq!(BASE.matches(from).count(), 1, "{from:?} must occur once");
    BASE.replace(from, to)
}

#[test]
fn full_config_parses_with_defaults() {
    let c = parse(BASE);
    assert_eq!(c.validate(), Ok(()));
    let l = &c.listeners[0];
    assert_eq!(l.rules.len(), 3);
    assert_eq!(l.http_idle_timeout(), 60);
    assert_eq!(l.referenced_groups(), ["a", "b"]);
    let Action::Redirect(r) = &l.rules[1].action else {
        panic!("not a redirect: {:?}", l.rules[1].action)
    };
    assert_eq!(
        (r.host.as_str(), r.path.as_str(), r.query.as_str()),
        ("#{host}", "/#{path}", "#{query}")
    );
    let (a, b) = (&c.target_groups[0], &c.target_groups[1]);
    assert_eq!(a.http_algorithm(), Algorithm::LeastOutstandingRequests);
    assert_eq!(
        (
            a.http_keep_alive_timeout(),
            a.http_response_timeout(),
            a.http_warm_connections()
        ),
        (30, 5, 2)
    );
    assert_eq!(b.http_algorithm(), Algorithm::RoundRobin);
    assert_eq!(
        (
            b.http_keep_alive_timeout(),
            b.http_response_timeout(),
            b.http_warm_connections()
        ),
        (60, 60, 0)
    );
}

#[test]
fn target_group_is_a_default_forward() {
    let text = with(
        r#"default_action = { type = "forward", target_group = "a" }"#,
        r#"target_group = "a""#,
    );
    let c = parse(&text);
    assert_eq!(c.validate(), Ok(()));
    assert_eq!(
        c.listeners[0].http_default_action(),
        Some(Action::Forward {
            target_group: Some("a".into()),
            target_groups: vec![]
        })
    );
    let none = with(
        r#"default_action = { type = "forward", target_group = "a" }"#,
        "",
    );
    assert_eq!(
        errors(&none),
        ["listener[0].default_action: an http listener needs default_action (or target_group)"]
    );
}

#[test]
fn unknown_action_keys_are_parse_errors() {
    let text = with(
        r#"status = 301, protocol"#,
        r#"status = 301, prot = "x", protocol"#,
    );
    let err = Config::parse(&text).unwrap_err().to_string();
    assert!(err.contains("unknown field `prot`"), "{err}");
    let text = with(r#"type = "fixed_response""#, r#"type = "teapot""#);
    let err = Config::parse(&text).unwrap_err().to_string();
    assert!(err.contains("unknown variant `teapot`"), "{err}");
}

#[test]
fn rule_errors_have_key_paths() {
    let text = BASE
        .replace("priority = 20", "priority = 10")
        .replace("priority = 30", "priority = 50001")
        .replace("\"*.example.com\"", "\"\"")
        .replace("[\"/old\"]", "[\"old\"]")
        .replace("\"GET\", \"POST\"", "\"GE T\"")
        .replace("name = \"x-env\"", "name = \"x env\"")
        .replace("\"10.0.0.0/8\"", "\"10.0.0.0/33\"")
        .replace("weight = 20", "weight = 1000")
        .replace("name = \"b\", weight", "name = \"c\", weight")
        .replace("status = 301", "status = 308")
        .replace("port = \"443\"", "port = \"0\"")
        .replace(
            "status = 200, content_type = \"application/json\"",
            "status = 302, content_type = \"image/png\"",
        );
    assert_eq!(
        errors(&text),
        [
            "listener[0].rule[0].conditions.host_header[0]: must be 1 to 128 characters",
            "listener[0].rule[0].conditions.http_request_method[0]: \"GE T\" is not an HTTP method: 1 to 40 characters of A-Z, - and _ (methods are case-sensitive: \"GET\", not \"get\")",
            "listener[0].rule[0].conditions.http_header[0].name: \"x env\" is not a header name",
            "listener[0].rule[0].conditions.source_ip[0]: \"10.0.0.0/33\" is not a CIDR block or an address",
            "listener[0].rule[0].action.target_groups[1].name: unknown target group \"c\"",
            "listener[0].rule[0].action.target_groups[1].weight: 1000 is outside 0..=999",
            "listener[0].rule[1].priority: 10 duplicates rule[0].priority",
            "listener[0].rule[1].conditions.path_pattern[0]: \"old\" must start with \"/\" or \"*\"",
            "listener[0].rule[1].action.status: 308 is not 301 or 302",
            "listener[0].rule[1].action.port: \"0\" is not a port (1..=65535) or #{port}",
            "listener[0].rule[2].priority: 50001 is outside 1..=50000",
            "listener[0].rule[2].action.status: 302 is not a 2XX, 4XX or 5XX code",
            "listener[0].rule[2].action.content_type: \"image/png\" is not one of text/plain, text/css, text/html, application/javascript, application/json",
        ]
    );
}

#[test]
fn conditions_and_redirects_are_checked() {
    let text = with(
        "  conditions.path_pattern = [\"/old\"]\n  action = { type = \"redirect\", status = 301, protocol = \"https\", port = \"443\" }",
        "  action = { type = \"redirect\", status = 301 }",
    );
    assert_eq!(
        errors(&text),
        [
            "listener[0].rule[1].conditions: a rule needs at least one condition (use default_action for the rest)",
            "listener[0].rule[1].action: a redirect must change at least one of protocol, host, port, path or query",
        ]
    );
    let six = with(
        "[\"/health\"]",
        "[\"/1\", \"/2\", \"/3\", \"/4\", \"/5\", \"/6\"]",
    );
    assert_eq!(
        errors(&six),
        ["listener[0].rule[2].conditions.path_pattern: 6 values; a condition takes 1 to 5"]
    );
    let body = "x".repeat(1025);
    let long = with("body = \"{}\"", &format!("body = \"{body}\""));
    assert_eq!(
        errors(&long),
        ["listener[0].rule[2].action.body: 1025 bytes exceed 1024"]
    );
}

#[test]
fn every_pattern_is_1_to_128_characters() {
    let long = "a".repeat(129);
    let text = with(
        "  conditions.http_header = [{ name = \"x-env\", values = [\"beta\"] }]\n  conditions.query_string = [{ key = \"v\", value = \"2\" }, { value = \"x*\" }]",
        &format!(
            "  conditions.http_header = [{{ name = \"x-env\", values = [\"beta\", \"\", \"{long}\"] }}]\n  conditions.query_string = [{{ key = \"\", value = \"2\" }}, {{ key = \"{long}\", value = \"\" }}, {{ value = \"{long}\" }}]"
        ),
    );
    assert_eq!(
        errors(&text),
        [
            "listener[0].rule[0].conditions.http_header[0].values[1]: must be 1 to 128 characters",
            "listener[0].rule[0].conditions.http_header[0].values[2]: must be 1 to 128 characters",
            "listener[0].rule[0].conditions.query_string[0].key: must be 1 to 128 characters",
            "listener[0].rule[0].conditions.query_string[1].key: must be 1 to 128 characters",
            "listener[0].rule[0].conditions.query_string[1].value: must be 1 to 128 characters",
            "listener[0].rule[0].conditions.query_string[2].value: must be 1 to 128 characters",
        ]
    );
    // 128 is the bound, not past it.
    let edge = "a".repeat(128);
    let text = with("values = [\"beta\"]", &format!("values = [\"{edge}\"]"));
    assert_eq!(errors(&text), Vec::<String>::new());
}

#[test]
fn a_redirect_protocol_is_a_scheme_in_any_case_or_the_exact_placeholder() {
    let at = "protocol = \"https\", port";
    for ok in ["HTTPS", "Http", "#{protocol}"] {
        let text = with(at, &format!("protocol = \"{ok}\", port"));
        assert_eq!(errors(&text), Vec::<String>::new(), "{ok}");
    }
    // Not filled in (placeholders are case-sensitive): it would reach the
    // Location as it is.
    let text = with(at, "protocol = \"#{PROTOCOL}\", port");
    assert_eq!(
        errors(&text),
        ["listener[0].rule[1].action.protocol: \"#{PROTOCOL}\" is not http, https or #{protocol}"]
    );
}

#[test]
fn http2_target_connections_are_bounded() {
    let l = &parse(BASE).listeners[0];
    assert_eq!(l.http2_max_target_connections(), 32);
    let port = "port = 80\n";
    for (n, err) in [
        (
            0,
            Some("listener[0].http2_max_target_connections: 0 is outside 1..=256"),
        ),
        (1, None),
        (256, None),
        (
            257,
            Some("listener[0].http2_max_target_connections: 257 is outside 1..=256"),
        ),
    ] {
        let text = with(port, &format!("{port}http2_max_target_connections = {n}\n"));
        assert_eq!(errors(&text), err.into_iter().collect::<Vec<_>>(), "{n}");
    }
}

#[test]
fn group_settings_are_checked() {
    let text = BASE
        .replace("keep_alive_timeout = 30", "keep_alive_timeout = 0")
        .replace("response_timeout = 5", "response_timeout = 0");
    assert_eq!(
        errors(&text),
        [
            "target_group[0].response_timeout: 0 is outside 1..=4000",
            "target_group[0].warm_connections: warm connections need keep_alive_timeout above 0 (they would close unused)",
        ]
    );
    let text = with("warm_connections = 2", "warm_connections = 1001");
    assert_eq!(
        errors(&text),
        ["target_group[0].warm_connections: 1001 is outside 0..=1000"]
    );
}

#[test]
fn http_keys_are_refused_elsewhere_and_tcp_keeps_its_rules() {
    let text = r#"
[daemon]
interfaces = ["eth0"]

[[listener]]
name = "tcp"
protocol = "tcp"
address = "10.0.0.100"
port = 80
idle_timeout = 10
access_log = "/tmp/x"
http2_max_target_connections = 4
normalize_path = true

[[listener]]
name = "tcp2"
protocol = "tcp"
address = "10.0.0.100"
port = 81

[[listener]]
name = "web"
protocol = "http"
address = "10.0.0.100"
port = 82
target_group = "t"

[[target_group]]
name = "t"
protocol = "tcp"
port = 8080
keep_alive_timeout = 5
algorithm = "round_robin"
"#;
    assert_eq!(
        errors(text),
        [
            "listener[0].target_group: required for tcp listeners",
            "listener[1].target_group: required for tcp listeners",
            "listener[2].target_group: target group \"t\" is tcp, the listener is http",
            "listener[0].idle_timeout: only http and https listeners take it, this one is tcp",
            "listener[0].access_log: only http and https listeners take it, this one is tcp",
            "listener[0].http2_max_target_connections: only http and https listeners take it, this one is tcp",
            "listener[0].normalize_path: only http and https listeners take it, this one is tcp",
            "target_group[0].keep_alive_timeout: only http and https target groups take it, this one is tcp",
            "target_group[0].algorithm: only http and https target groups take it, this one is tcp",
        ]
    );
}
