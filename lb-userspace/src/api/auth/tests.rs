//! Every rule of authentication and authorization, from a parsed config.
use super::*;
use crate::config::Config;

const CI: &str = "ci-secret";
const OPS: &str = "ops-secret";
const READER: &str = "reader-secret";
const NOBODY: &str = "nobody-secret";

/// Tokens: `ci` may register/deregister on web-* groups but is explicitly
/// denied anything on `target-group/web-prod`; `ops` has `lb:*` on
/// everything; `reader` may describe; `nobody` has no policy.
fn config() -> Config {
    let text = format!(
        r#"
[daemon]
interfaces = ["eth0"]

[[api.policy]]
name = "deploy"
  [[api.policy.statement]]
  sid = "Targets"
  effect = "Allow"
  action = ["lb:RegisterTargets", "lb:DeregisterTargets"]
  resource = ["target-group/web-*"]
  [[api.policy.statement]]
  effect = "Allow"
  action = ["lb:Describe*"]
  resource = ["*", "target-group/*", "listener/*"]

[[api.policy]]
name = "protect-prod"
  [[api.policy.statement]]
  sid = "NoProd"
  effect = "Deny"
  action = ["lb:*"]
  resource = ["target-group/web-prod"]

[[api.policy]]
name = "admin"
  [[api.policy.statement]]
  effect = "Allow"
  action = ["*"]
  resource = ["*", "listener/*", "target-group/*"]

[[api.policy]]
name = "read"
  [[api.policy.statement]]
  effect = "Allow"
  action = ["LB:describe*"]
  resource = ["target-group/?eb", "listener/*"]

[[api.token]]
name = "ci"
sha256 = "{}"
policies = ["deploy", "protect-prod"]

[[api.token]]
name = "ops"
sha256 = "{}"
policies = ["admin"]

[[api.token]]
name = "reader"
sha256 = "{}"
policies = ["read"]

[[api.token]]
name = "nobody"
sha256 = "{}"
"#,
        token_digest(CI),
        token_digest(OPS).to_uppercase(),
        token_digest(READER),
        token_digest(NOBODY),
    );
    let c = Config::parse(&text).unwrap();
    assert_eq!(c.validate(), Ok(()));
    c
}

fn token(name: &str) -> Principal {
    Principal::Token(name.into())
}

fn decide(auth: &Authorizer, who: &str, action: Action, res: &str) -> Decision {
    auth.authorize(&token(who), action, res)
}

#[test]
fn digest_is_lowercase_hex_sha256() {
    assert_eq!(
        token_digest("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let t = generate_token().unwrap();
    assert!(t.starts_with("lb_") && t.len() == 67, "{t}");
    assert_ne!(t, generate_token().unwrap());
}

#[test]
fn bearer_header_parsing() {
    assert_eq!(bearer_token("Bearer abc"), Some("abc"));
    assert_eq!(bearer_token("bearer   abc "), Some("abc"));
    assert_eq!(bearer_token("Basic abc"), None);
    assert_eq!(bearer_token("Bearer "), None);
    assert_eq!(bearer_token("abc"), None);
}

#[test]
fn no_token_and_unknown_tokens_are_401() {
    let auth = Authorizer::new(&config().api);
    assert_eq!(auth.authenticate(None), Err(AuthError::MissingToken));
    assert_eq!(
        auth.authenticate(Some("guess")),
        Err(AuthError::InvalidToken)
    );
    // The digest, not the secret, is in the config: sending it fails.
    assert_eq!(
        auth.authenticate(Some(&token_digest(CI))),
        Err(AuthError::InvalidToken)
    );
    assert_eq!(auth.authenticate(Some(CI)), Ok(token("ci")));
    // Digests may be written in upper case.
    assert_eq!(auth.authenticate(Some(OPS)), Ok(token("ops")));

    let missing = AuthError::MissingToken.refusal();
    assert_eq!(missing.status, http::StatusCode::UNAUTHORIZED);
    assert_eq!(missing.www_authenticate(), Some("Bearer"));
    assert_eq!(
        missing.body(),
        r#"{"error":{"code":"MissingAuthenticationToken","message":"Missing authentication token: send `Authorization: Bearer <token>`"}}"#
    );
    assert_eq!(
        AuthError::InvalidToken.refusal().body(),
        r#"{"error":{"code":"UnrecognizedClientException","message":"The security token included in the request is invalid."}}"#
    );
}

#[test]
fn no_tokens_configured_means_only_root() {
    let auth = Authorizer::new(
        &Config::parse("[daemon]\ninterfaces = [\"eth0\"]")
            .unwrap()
            .api,
    );
    assert_eq!(auth.authenticate(Some(CI)), Err(AuthError::InvalidToken));
    assert_eq!(
        auth.authorize(
            &Principal::Root,
            Action::DeleteListener,
            &resource::listener("web")
        ),
        Decision::Allow
    );
    assert_eq!(Principal::Root.to_string(), "root");
}

#[test]
fn allow_statements_grant_exactly_their_actions_and_resources() {
    let auth = Authorizer::new(&config().api);
    let web = resource::target_group("web-blue");
    assert_eq!(
        decide(&auth, "ci", Action::RegisterTargets, &web),
        Decision::Allow
    );
    assert_eq!(
        decide(&auth, "ci", Action::DeregisterTargets, &web),
        Decision::Allow
    );
    assert_eq!(
        decide(&auth, "ci", Action::DescribeTargetHealth, &web),
        Decision::Allow
    );
    assert_eq!(
        decide(&auth, "ci", Action::DescribeStats, resource::GLOBAL),
        Decision::Allow
    );
    // Not the action, not the resource, not a global action.
    assert_eq!(
        decide(&auth, "ci", Action::DeleteTargetGroup, &web),
        Decision::ImplicitDeny
    );
    assert_eq!(
        decide(
            &auth,
            "ci",
            Action::RegisterTargets,
            &resource::target_group("api")
        ),
        Decision::ImplicitDeny
    );
    assert_eq!(
        decide(&auth, "ci", Action::ReloadConfig, resource::GLOBAL),
        Decision::ImplicitDeny
    );
    // A token without policies is denied everything.
    assert_eq!(
        decide(
            &auth,
            "nobody",
            Action::DescribeListeners,
            &resource::listener("web")
        ),
        Decision::ImplicitDeny
    );
    // An unknown principal (e.g. after a reload removed it) too.
    assert_eq!(
        decide(
            &auth,
            "gone",
            Action::DescribeListeners,
            &resource::listener("web")
        ),
        Decision::ImplicitDeny
    );
}

#[test]
fn explicit_deny_beats_allow() {
    let auth = Authorizer::new(&config().api);
    let prod = resource::target_group("web-prod");
    let denied = Decision::ExplicitDeny {
        policy: "protect-prod".into(),
        sid: Some("NoProd".into()),
    };
    // Allowed by "deploy", denied by "protect-prod".
    assert_eq!(decide(&auth, "ci", Action::RegisterTargets, &prod), denied);
    assert_eq!(
        decide(&auth, "ci", Action::DescribeTargetHealth, &prod),
        denied
    );
    // Root is not subject to policies.
    assert_eq!(
        auth.authorize(&Principal::Root, Action::RegisterTargets, &prod),
        Decision::Allow
    );
}

#[test]
fn wildcards_in_actions_and_resources() {
    let auth = Authorizer::new(&config().api);
    // `*` action and resource: everything.
    for action in Action::ALL {
        for res in [resource::GLOBAL, "listener/x", "target-group/y"] {
            assert_eq!(
                decide(&auth, "ops", action, res),
                Decision::Allow,
                "{action} {res}"
            );
        }
    }
    // `LB:describe*`: case-insensitive action; `target-group/?eb`: one
    // character, case-sensitive resource.
    let reader = |action, res: &str| decide(&auth, "reader", action, res);
    assert_eq!(
        reader(Action::DescribeTargetHealth, "target-group/web"),
        Decision::Allow
    );
    assert_eq!(
        reader(Action::DescribeTargetHealth, "target-group/Web"),
        Decision::Allow
    );
    assert_eq!(
        reader(Action::DescribeTargetHealth, "target-group/wweb"),
        Decision::ImplicitDeny
    );
    assert_eq!(
        reader(Action::DescribeTargetHealth, "target-group/WEB"),
        Decision::ImplicitDeny
    );
    assert_eq!(
        reader(Action::DescribeListeners, "listener/any"),
        Decision::Allow
    );
    assert_eq!(
        reader(Action::RegisterTargets, "target-group/web"),
        Decision::ImplicitDeny
    );
}

/// docs/config.md: the whole load balancer's resource `*` is matched by
/// the pattern `*` only; `?` (one character) covers listeners' and groups'
/// names of one character, not it, in Allow and in Deny statements.
#[test]
fn only_the_pattern_star_covers_whole_load_balancer_actions() {
    let text = format!(
        r#"
[daemon]
interfaces = ["eth0"]

[[api.policy]]
name = "odd"
  [[api.policy.statement]]
  effect = "Allow"
  action = ["lb:*"]
  resource = ["?", "target-group/?"]
  [[api.policy.statement]]
  effect = "Deny"
  action = ["lb:DescribeStats"]
  resource = ["?*"]

[[api.policy]]
name = "all"
  [[api.policy.statement]]
  effect = "Allow"
  action = ["lb:DescribeStats"]
  resource = ["*"]

[[api.token]]
name = "odd"
sha256 = "{}"
policies = ["odd"]

[[api.token]]
name = "both"
sha256 = "{}"
policies = ["odd", "all"]
"#,
        token_digest(CI),
        token_digest(OPS),
    );
    let c = Config::parse(&text).unwrap();
    assert_eq!(c.validate(), Ok(()));
    let auth = Authorizer::new(&c.api);
    for action in [
        Action::ReloadConfig,
        Action::DrainHost,
        Action::DescribeStats,
    ] {
        assert_eq!(
            decide(&auth, "odd", action, resource::GLOBAL),
            Decision::ImplicitDeny,
            "{action}"
        );
    }
    assert_eq!(
        decide(&auth, "odd", Action::RegisterTargets, "target-group/a"),
        Decision::Allow
    );
    // The Deny's `?*` does not cover `*` either: `all`'s Allow stands.
    assert_eq!(
        decide(&auth, "both", Action::DescribeStats, resource::GLOBAL),
        Decision::Allow
    );
}

/// `lb check` refuses what `lb run` could not bind: `metrics_listen` and
/// `listen` on one port where an address covers the other.
#[test]
fn metrics_listen_must_not_overlap_listen() {
    let errors = |listen: &str, metrics: &str| {
        let text = format!(
            "[daemon]\ninterfaces = [\"eth0\"]\n[api]\nlisten = \"{listen}\"\nmetrics_listen = \"{metrics}\"\n"
        );
        let c = Config::parse(&text).unwrap();
        c.validate().err().map_or(0, |e| e.iter().count())
    };
    for (listen, metrics) in [
        ("127.0.0.1:9180", "127.0.0.1:9180"),
        ("0.0.0.0:9180", "127.0.0.1:9180"),
        ("127.0.0.1:9180", "0.0.0.0:9180"),
        ("[::]:9180", "127.0.0.1:9180"),
        ("[::1]:9180", "[::]:9180"),
    ] {
        assert_eq!(errors(listen, metrics), 1, "{listen} and {metrics}");
    }
    for (listen, metrics) in [
        ("127.0.0.1:9180", "127.0.0.1:9181"),
        ("127.0.0.1:9180", "127.0.0.2:9180"),
        ("0.0.0.0:9180", "[::1]:9180"),
    ] {
        assert_eq!(errors(listen, metrics), 0, "{listen} and {metrics}");
    }
}

#[test]
fn refusal_messages_are_awss() {
    let ci = token("ci");
    let web = resource::target_group("web");
    let implicit = Decision::ImplicitDeny
        .refusal(&ci, Action::RegisterTargets, &web)
        .unwrap();
    assert_eq!(implicit.status, http::StatusCode::FORBIDDEN);
    assert_eq!(implicit.www_authenticate(), None);
    assert_eq!(
        implicit.body(),
        r#"{"error":{"code":"AccessDenied","message":"User: token/ci is not authorized to perform: lb:RegisterTargets on resource: target-group/web because no identity-based policy allows the lb:RegisterTargets action"}}"#
    );
    let explicit = Decision::ExplicitDeny {
        policy: "protect-prod".into(),
        sid: Some("NoProd".into()),
    }
    .refusal(&ci, Action::RegisterTargets, &web)
    .unwrap();
    assert_eq!(
        explicit.message,
        "User: token/ci is not authorized to perform: lb:RegisterTargets on resource: target-group/web with an explicit deny in an identity-based policy: protect-prod (statement NoProd)"
    );
    assert_eq!(
        Decision::Allow.refusal(&ci, Action::RegisterTargets, &web),
        None
    );
}

#[test]
fn validation_errors_name_their_keys() {
    let text = r#"
[daemon]
interfaces = ["eth0"]

[api]
socket = "run/api.sock"
listen = "127.0.0.1:9180"
metrics_listen = "127.0.0.1:9180"

[[api.policy]]
name = "p"
  [[api.policy.statement]]
  sid = "Bad-Sid"
  effect = "Allow"
  action = ["lb:Register*", "ec2:RunInstances", "lb:Nope*"]
  resource = ["target-group/web", "web", "tg/*"]
  [[api.policy.statement]]
  effect = "Deny"
  action = []
  resource = []

[[api.policy]]
name = "p"
statement = []

[[api.token]]
name = "a b"
sha256 = "xyz"
policies = ["p", "missing"]

[[api.token]]
name = "t"
sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

[[api.token]]
name = "t"
sha256 = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"
"#;
    let errs: Vec<String> = Config::parse(text)
        .unwrap()
        .validate()
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    let s = "api.policy[0].statement";
    assert_eq!(
        errs,
        [
            "api.socket: \"run/api.sock\" must be an absolute path of at most 107 bytes".to_string(),
            "api.metrics_listen: 127.0.0.1:9180 overlaps api.listen 127.0.0.1:9180: one of the two binds would fail (/metrics is also served on api.listen)".into(),
            format!("{s}[0].sid: \"Bad-Sid\" must be 1 or more characters of A-Z a-z 0-9"),
            format!("{s}[0].action[1]: \"ec2:RunInstances\" matches no action (lb:DescribeListeners, lb:RegisterTargets, ...; `lb:*` for all)"),
            format!("{s}[0].action[2]: \"lb:Nope*\" matches no action (lb:DescribeListeners, lb:RegisterTargets, ...; `lb:*` for all)"),
            format!("{s}[0].resource[1]: \"web\" names no resource (\"listener/NAME\", \"target-group/NAME\" or \"*\", with * and ? wildcards)"),
            format!("{s}[0].resource[2]: \"tg/*\" names no resource (\"listener/NAME\", \"target-group/NAME\" or \"*\", with * and ? wildcards)"),
            format!("{s}[1].action: at least one action is required"),
            format!("{s}[1].resource: at least one resource is required"),
            "api.policy[1].statement: a policy needs at least one statement".into(),
            "api.policy[1].name: \"p\" duplicates api.policy[0].name".into(),
            "api.token[0].name: \"a b\" is not a valid name (1 to 64 characters of A-Z a-z 0-9 - _ .)".into(),
            "api.token[0].sha256: must be 64 hex digits: the SHA-256 of the token (`lb token hash`)".into(),
            "api.token[0].policies[1]: unknown policy \"missing\"".into(),
            "api.token[2].name: \"t\" duplicates api.token[1].name".into(),
            "api.token[2].sha256: duplicates api.token[1].sha256 (same secret)".into(),
        ]
    );
}

#[test]
fn api_defaults() {
    let c = Config::parse("[daemon]\ninterfaces = [\"eth0\"]").unwrap();
    assert_eq!(c.api.socket, std::path::PathBuf::from("/run/lb/api.sock"));
    assert_eq!(c.api.listen, None);
    assert_eq!(c.api.metrics_listen, None);
    assert!(c.api.policies.is_empty() && c.api.tokens.is_empty());
    let e = Config::parse("[daemon]\ninterfaces = [\"eth0\"]\n[[api.policy]]\nname = \"p\"\n[[api.policy.statement]]\neffect = \"allow\"\naction = [\"lb:*\"]\nresource = [\"*\"]")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown variant `allow`, expected `Allow` or `Deny`"),
        "{e}"
    );
}
