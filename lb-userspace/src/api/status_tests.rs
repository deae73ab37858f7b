//! The status page through a real socket, against the fake control loop of
//! [`super::tests`]: off means 404; on, it needs every describe action it
//! shows (401 with a Basic challenge, 403 naming the missing action), takes
//! the token as a Basic password, and prints every value escaped.
use std::sync::Arc;

use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    auth::{Authorizer, token_digest},
    tests::Fixture,
};
use crate::config::Api;
use crate::control::command::{
    CountersReport, ListenerReport, StatsReport, TargetGroupReport, TransitionReport,
};

/// What the page should print escaped: from a listener's name (the config
/// forbids it there, but the page must not rely on that).
const HOSTILE: &str = "web<script>alert('x')</script>";

pub(super) fn listeners() -> Vec<ListenerReport> {
    vec![ListenerReport {
        name: HOSTILE.into(),
        protocol: "tcp".into(),
        address: "10.0.0.1".parse().unwrap(),
        port: 80,
        target_groups: vec!["web".into()],
        deletion_protection: false,
        served_by: "xdp".into(),
    }]
}

pub(super) fn groups() -> Vec<TargetGroupReport> {
    vec![TargetGroupReport {
        name: "web".into(),
        protocol: "tcp".into(),
        port: 80,
        healthy: 1,
        unhealthy: 1,
        draining: 0,
        targets: 2,
        deletion_protection: false,
        deregistration_delay: 300,
        slow_start: 0,
        cross_zone: true,
        unhealthy_connection_termination: true,
    }]
}

fn counters(name: &str, base: u64) -> CountersReport {
    CountersReport {
        name: name.into(),
        packets_in: base,
        bytes_in: base * 100,
        packets_out: base + 1,
        bytes_out: base * 100 + 1,
        new_flows: base / 10,
    }
}

pub(super) fn stats() -> StatsReport {
    StatsReport {
        listeners: vec![counters(HOSTILE, 7000)],
        targets: vec![counters("10.0.1.10:80", 5000)],
        datapath: vec![("tx".into(), 12), ("drop_no_target".into(), 3)],
    }
}

pub(super) fn transitions() -> Vec<TransitionReport> {
    vec![TransitionReport {
        unix_ms: 1,
        target_group: "web".into(),
        target: "[2001:db8::11]:8080".parse().unwrap(),
        from: "healthy".into(),
        to: "unhealthy".into(),
        reason: Some("Target.FailedHealthChecks".into()),
    }]
}

/// One HTTP/1.1 request over TCP: (status, headers as lower-case
/// `name: value` lines, body).
async fn get(f: &Fixture, path: &str, authorization: Option<&str>) -> (u16, Vec<String>, String) {
    let addr = f.server.tcp_addr().unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: lb\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines.map(|l| l.to_ascii_lowercase()).collect();
    (status, headers, body.to_owned())
}

fn basic(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

#[tokio::test]
async fn the_page_is_unknown_when_off() {
    let f = Fixture::start_with("page-off", false).await;
    let (status, _, body) = get(&f, "/status", Some("Bearer admin-secret")).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("UnknownOperation"), "{body}");
    let (status, _, _) = get(&f, "/status", None).await;
    assert_eq!(status, 404);
    // Root on the socket: the same.
    let (status, _) = f
        .unix(None)
        .send(http::Method::GET, "/status", None)
        .await
        .unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(status, http::StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn the_page_needs_a_token_and_offers_basic_to_browsers() {
    let f = Fixture::start_with("page-401", true).await;
    let (status, headers, body) = get(&f, "/status", None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("MissingAuthenticationToken"), "{body}");
    assert!(
        headers.contains(&"www-authenticate: bearer".to_owned()),
        "{headers:?}"
    );
    assert!(
        headers.contains(&"www-authenticate: basic realm=\"lb\", charset=\"utf-8\"".to_owned()),
        "{headers:?}"
    );
    let (status, _, body) = get(&f, "/status", Some(&basic("me", "guess"))).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("UnrecognizedClientException"), "{body}");
    // The token as a Basic password, or as a bearer token.
    let (status, _, body) = get(&f, "/status", Some(&basic("anyone", "reader-secret"))).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = get(&f, "/status", Some("Bearer reader-secret")).await;
    assert_eq!(status, 200);
    // Basic credentials count for the page only: a browser that keeps them
    // can never call the rest of the API with them.
    let (status, _, body) = get(&f, "/v1/status", Some(&basic("anyone", "reader-secret"))).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = get(&f, "/v1/listeners", Some(&basic("anyone", "admin-secret"))).await;
    assert_eq!(status, 401, "{body}");
}

/// A token must be allowed each describe action whose data the page shows.
#[tokio::test]
async fn the_page_needs_every_describe_action_it_shows() {
    let f = Fixture::start_with("page-403", true).await;
    let text = format!(
        r#"
        [[policy]]
        name = "status"
        statement = [{{ effect = "Allow", action = ["lb:DescribeStatus"], resource = ["*"] }}]
        [[policy]]
        name = "no-web-health"
        statement = [
          {{ effect = "Allow", action = ["lb:Describe*"], resource = ["*", "listener/*", "target-group/*"] }},
          {{ effect = "Deny", action = ["lb:DescribeTargetHealth"], resource = ["target-group/web"] }},
        ]
        [[policy]]
        name = "read"
        statement = [{{ effect = "Allow", action = ["lb:Describe*"], resource = ["*", "listener/*", "target-group/*"] }}]
        [[token]]
        name = "status"
        sha256 = "{}"
        policies = ["status"]
        [[token]]
        name = "no-web-health"
        sha256 = "{}"
        policies = ["no-web-health"]
        [[token]]
        name = "reader"
        sha256 = "{}"
        policies = ["read"]
        "#,
        token_digest("status-secret"),
        token_digest("no-web-health-secret"),
        token_digest("reader-secret"),
    );
    let api: Api = toml::from_str(&text).unwrap();
    f.server.set_authorizer(Arc::new(Authorizer::new(&api)));
    for (token, missing) in [
        (
            "status-secret",
            "lb:DescribeListeners on resource: listener/*",
        ),
        (
            "no-web-health-secret",
            "lb:DescribeTargetHealth on resource: target-group/web",
        ),
    ] {
        let (status, _, body) = get(&f, "/status", Some(&format!("Bearer {token}"))).await;
        assert_eq!(status, 403, "{token}: {body}");
        assert!(body.contains(missing), "{token}: {body}");
    }
    let (status, _, body) = get(&f, "/status", Some("Bearer reader-secret")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_page_shows_everything_escaped_under_its_own_policy() {
    let f = Fixture::start_with("page-200", true).await;
    let (status, headers, body) = get(&f, "/status", Some("Bearer reader-secret")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        headers.contains(&"content-type: text/html; charset=utf-8".to_owned()),
        "{headers:?}"
    );
    assert!(headers.contains(&"cache-control: no-store".to_owned()));
    // Listeners with their data path and counters; the hostile name only
    // escaped.
    assert!(!body.contains("<script>alert"), "{body}");
    assert!(
        body.contains("web&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"),
        "{body}"
    );
    assert!(body.contains("<td class=\"datapath\">xdp</td>"), "{body}");
    assert!(
        body.contains("<td class=\"n packets-in\">7000</td><td class=\"n bytes-in\">700000</td>"),
        "{body}"
    );
    // Each target: state, reason, zone, weight, effective weight, counters.
    assert!(
        body.contains(
            "<tr data-group=\"web\" data-target=\"10.0.1.10:80\"><td>10.0.1.10:80</td>\
             <td class=\"state healthy\">healthy</td><td class=\"reason\" title=\"\">-</td>\
             <td class=\"zone\">a</td><td class=\"n weight\">1</td>\
             <td class=\"n effective-weight\">1</td><td class=\"n packets-in\">5000</td>"
        ),
        "{body}"
    );
    assert!(
        body.contains(
            "<tr data-group=\"web\" data-target=\"[2001:db8::11]:8080\"><td>[2001:db8::11]:8080</td>\
             <td class=\"state unhealthy\">unhealthy</td>\
             <td class=\"reason\" title=\"Health checks failed\">Target.FailedHealthChecks</td>\
             <td class=\"zone\">-</td><td class=\"n weight\">10</td>\
             <td class=\"n effective-weight\">0</td>"
        ),
        "{body}"
    );
    // Drops by reason, and the transition.
    assert!(
        body.contains(
            "<tr data-verdict=\"drop_no_target\" class=\"drop\"><td>drop_no_target</td><td class=\"n count\">3</td></tr>"
        ),
        "{body}"
    );
    assert!(
        body.contains("web [2001:db8::11]:8080: healthy &rarr; <span class=\"unhealthy\">unhealthy</span> (Target.FailedHealthChecks)"),
        "{body}"
    );
    // The policy lets exactly the page's script run.
    let csp = headers
        .iter()
        .find_map(|h| h.strip_prefix("content-security-policy: "))
        .expect("a Content-Security-Policy");
    let script = body
        .split_once("<script>")
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .expect("the script")
        .0;
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script));
    assert!(
        csp.contains(&format!(
            "script-src 'sha256-{}'",
            hash.to_ascii_lowercase()
        )),
        "{csp}"
    );
    assert!(csp.starts_with("default-src 'none';"), "{csp}");
}
