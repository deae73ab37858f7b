//! Listener rules, compiled: conditions evaluated against a request as ALB
//! does (values within a condition OR, conditions AND), rules in priority
//! order, the first match wins.
use std::net::IpAddr;

use http::{HeaderName, Method, request::Parts};
use ipnet::IpNet;

use crate::config::http::{Action, Conditions, Rule, parse_net};
use crate::wildcard::{Case, Pattern};

/// What a condition looks at, taken once from the request.
pub struct RequestView<'a> {
    pub parts: &'a Parts,
    /// Host name without the port, from `Host` or the HTTP/2 authority.
    pub host: &'a str,
    pub client: IpAddr,
}

/// One rule, ready to match.
#[derive(Debug)]
pub struct CompiledRule {
    pub priority: u32,
    conditions: Vec<Condition>,
    pub action: Action,
}

#[derive(Debug)]
enum Condition {
    Host(Vec<Pattern>),
    Path(Vec<Pattern>),
    Method(Vec<Method>),
    Header(HeaderName, Vec<Pattern>),
    Query(Vec<(Option<Pattern>, Pattern)>),
    Source(Vec<IpNet>),
}

/// The rules of a listener, by priority.
#[derive(Debug, Default)]
pub struct Rules(Vec<CompiledRule>);

impl Rules {
    /// Compiles validated rules (values that do not parse are left out).
    pub fn compile(rules: &[Rule]) -> Self {
        let mut out: Vec<_> = rules
            .iter()
            .map(|r| CompiledRule {
                priority: r.priority,
                conditions: compile_conditions(&r.conditions),
                action: r.action.clone(),
            })
            .collect();
        out.sort_by_key(|r| r.priority);
        Rules(out)
    }

    /// The first rule whose conditions all hold.
    pub fn find(&self, req: &RequestView<'_>) -> Option<&CompiledRule> {
        self.0
            .iter()
            .find(|r| r.conditions.iter().all(|c| c.matches(req)))
    }
}

fn patterns(values: &[String], case: Case) -> Vec<Pattern> {
    values.iter().map(|v| Pattern::new(v, case)).collect()
}

fn compile_conditions(c: &Conditions) -> Vec<Condition> {
    let mut out = Vec::new();
    if let Some(h) = &c.host_header {
        out.push(Condition::Host(patterns(h, Case::IgnoreUnicode)));
    }
    if let Some(p) = &c.path_pattern {
        out.push(Condition::Path(patterns(p, Case::Sensitive)));
    }
    if let Some(m) = &c.http_request_method {
        let methods = m
            .iter()
            .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
            .collect();
        out.push(Condition::Method(methods));
    }
    for h in &c.http_header {
        if let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) {
            out.push(Condition::Header(
                name,
                patterns(&h.values, Case::IgnoreUnicode),
            ));
        }
    }
    if let Some(q) = &c.query_string {
        let pairs = q
            .iter()
            .map(|q| {
                (
                    q.key
                        .as_deref()
                        .map(|k| Pattern::new(k, Case::IgnoreUnicode)),
                    Pattern::new(&q.value, Case::IgnoreUnicode),
                )
            })
            .collect();
        out.push(Condition::Query(pairs));
    }
    if let Some(s) = &c.source_ip {
        out.push(Condition::Source(
            s.iter().filter_map(|n| parse_net(n)).collect(),
        ));
    }
    out
}

impl Condition {
    fn matches(&self, req: &RequestView<'_>) -> bool {
        match self {
            Condition::Host(p) => p.iter().any(|p| p.matches(req.host)),
            Condition::Path(p) => {
                let path = req.parts.uri.path();
                p.iter().any(|p| p.matches(path))
            }
            Condition::Method(m) => m.contains(&req.parts.method),
            Condition::Header(name, p) => req
                .parts
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| p.iter().any(|p| p.matches(v))),
            Condition::Query(pairs) => {
                let query = req.parts.uri.query().unwrap_or("");
                query_pairs(query).any(|(k, v)| {
                    pairs.iter().any(|(pk, pv)| {
                        pk.as_ref().is_none_or(|pk| pk.matches(&k)) && pv.matches(&v)
                    })
                })
            }
            Condition::Source(nets) => nets.iter().any(|n| n.contains(&req.client)),
        }
    }
}

/// `a=1&b&c=%20x` as decoded (key, value) pairs; `+` is a space.
fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (percent_decode(k), percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::http::{HeaderCondition, QueryCondition};

    fn view_of(uri: &str, method: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn rule(priority: u32, conditions: Conditions, body: &str) -> Rule {
        Rule {
            priority,
            conditions,
            action: Action::FixedResponse(crate::config::http::FixedResponse {
                status: 200,
                content_type: "text/plain".into(),
                body: body.into(),
            }),
        }
    }

    fn matched(rules: &Rules, parts: &Parts, host: &str, client: &str) -> Option<u32> {
        let view = RequestView {
            parts,
            host,
            client: client.parse().unwrap(),
        };
        rules.find(&view).map(|r| r.priority)
    }

    #[test]
    fn conditions_and_priorities() {
        let rules = Rules::compile(&[
            rule(
                20,
                Conditions {
                    path_pattern: Some(vec!["/api/*".into()]),
                    ..Default::default()
                },
                "api",
            ),
            rule(
                10,
                Conditions {
                    host_header: Some(vec!["*.example.com".into()]),
                    http_request_method: Some(vec!["POST".into(), "PUT".into()]),
                    ..Default::default()
                },
                "post",
            ),
            rule(
                30,
                Conditions {
                    http_header: vec![HeaderCondition {
                        name: "X-Env".into(),
                        values: vec!["beta*".into()],
                    }],
                    ..Default::default()
                },
                "hdr",
            ),
            rule(
                40,
                Conditions {
                    query_string: Some(vec![QueryCondition {
                        key: Some("v".into()),
                        value: "2".into(),
                    }]),
                    ..Default::default()
                },
                "query",
            ),
            rule(
                50,
                Conditions {
                    source_ip: Some(vec!["192.0.2.0/24".into(), "2001:db8::1".into()]),
                    ..Default::default()
                },
                "src",
            ),
        ]);
        let p = view_of("/api/x", "POST", &[]);
        assert_eq!(matched(&rules, &p, "a.example.com", "10.0.0.1"), Some(10));
        assert_eq!(matched(&rules, &p, "example.org", "10.0.0.1"), Some(20));
        let p = view_of("/x", "GET", &[("x-env", "BETA-1")]);
        assert_eq!(matched(&rules, &p, "a.example.com", "10.0.0.1"), Some(30));
        let p = view_of("/x?a=1&v=2", "GET", &[]);
        assert_eq!(matched(&rules, &p, "h", "10.0.0.1"), Some(40));
        let p = view_of("/x?v=20", "GET", &[]);
        assert_eq!(matched(&rules, &p, "h", "10.0.0.1"), None);
        assert_eq!(matched(&rules, &p, "h", "192.0.2.7"), Some(50));
        assert_eq!(matched(&rules, &p, "h", "2001:db8::1"), Some(50));
    }

    #[test]
    fn query_decoding() {
        let pairs: Vec<_> = query_pairs("a=1&b&c=%41+b&d=%zz").collect();
        assert_eq!(
            pairs,
            [
                ("a".into(), "1".into()),
                ("b".into(), String::new()),
                ("c".into(), "A b".into()),
                ("d".into(), "%zz".into())
            ]
        );
    }
}
