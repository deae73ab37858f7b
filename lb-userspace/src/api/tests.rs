//! The API through real sockets, against a fake control loop and a fake
//! authorizer that answers from a table (the policy engine has its own
//! tests).
use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr},
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    sync::Arc,
};

use http::{Method, StatusCode};

use super::{
    auth::{Action, AuthError, Authorizer, Principal, token_digest},
    cli,
    client::{Client, Endpoint},
    routes::TargetHealthResponse,
    server::{Endpoints, ServeError, serve},
    table::ROUTES,
};
use crate::config::{Api, ValidationError, ValidationErrors};
use crate::control::{
    Command, ControlError, ControlHandle,
    command::{
        ChangeReport, FlowReport, FlowsReport, HostReport, StatusReport, TargetHealthReport,
        TargetHealthState,
    },
};

/// `[api]` with four tokens: `reader` may describe; `ops` may do
/// everything but delete (an explicit Deny over its `lb:*`); `admin` may do
/// everything; `web` may do everything on target group `web` only.
fn authorizer() -> Arc<Authorizer> {
    let digest = |secret| token_digest(secret);
    let text = format!(
        r#"
        [[policy]]
        name = "read"
        [[policy.statement]]
        effect = "Allow"
        action = ["lb:Describe*"]
        resource = ["*"]

        [[policy]]
        name = "all"
        [[policy.statement]]
        effect = "Allow"
        action = ["lb:*"]
        resource = ["*"]

        [[policy]]
        name = "no-deletes"
        [[policy.statement]]
        sid = "NoDeletes"
        effect = "Deny"
        action = ["lb:Delete*"]
        resource = ["listener/*", "target-group/*"]

        [[policy]]
        name = "web-only"
        [[policy.statement]]
        effect = "Allow"
        action = ["lb:*"]
        resource = ["target-group/web"]

        [[token]]
        name = "reader"
        sha256 = "{}"
        policies = ["read"]
        [[token]]
        name = "ops"
        sha256 = "{}"
        policies = ["all", "no-deletes"]
        [[token]]
        name = "admin"
        sha256 = "{}"
        policies = ["all"]
        [[token]]
        name = "web"
        sha256 = "{}"
        policies = ["web-only"]
        "#,
        digest("reader-secret"),
        digest("ops-secret"),
        digest("admin-secret"),
        digest("web-secret"),
    );
    let api: Api = toml::from_str(&text).expect("test [api] parses");
    Arc::new(Authorizer::new(&api))
}

pub(super) fn targets() -> Vec<TargetHealthReport> {
    vec![
        TargetHealthReport {
            target: "10.0.1.10:80".parse().unwrap(),
            zone: Some("a".into()),
            weight: 1,
            effective_weight: 1,
            state: TargetHealthState::Healthy,
            reason: None,
            description: String::new(),
        },
        TargetHealthReport {
            target: "[2001:db8::11]:8080".parse().unwrap(),
            zone: None,
            weight: 10,
            effective_weight: 0,
            state: TargetHealthState::Unhealthy,
            reason: Some("Target.FailedHealthChecks".into()),
            description: "Health checks failed".into(),
        },
    ]
}

fn host(drained: bool) -> HostReport {
    let vip = "10.0.0.1".parse().unwrap();
    HostReport {
        bgp: true,
        table: 100,
        protocol: 201,
        drained,
        drain_file: "/var/lib/lb/drained".into(),
        announced: if drained { vec![] } else { vec![vip] },
        withheld: if drained { vec![vip] } else { vec![] },
        reason: drained.then(|| "the host is drained (`lb host resume` announces again)".into()),
        last_error: None,
    }
}

/// Answers commands like a control loop with one target group, `web`.
fn fake_control() -> ControlHandle {
    let (handle, mut rx) = ControlHandle::channel(8);
    tokio::spawn(async move {
        let mut reloads = 0;
        while let Some(cmd) = rx.recv().await {
            answer(cmd, &mut reloads);
        }
    });
    handle
}

fn change(message: String) -> Result<ChangeReport, ControlError> {
    Ok(ChangeReport { message })
}

/// A dropped receiver only means the client went away.
fn send<T>(to: tokio::sync::oneshot::Sender<Result<T, ControlError>>, v: Result<T, ControlError>) {
    let _ = to.send(v);
}

fn answer(cmd: Command, reloads: &mut usize) {
    match cmd {
        Command::Status(r) => send(
            r,
            Ok(StatusReport {
                version: "0.1.0".into(),
                config: "/etc/lb/lb.toml".into(),
                dataplane: "xdp".into(),
                zone: Some("a".into()),
                listeners: 1,
                target_groups: 1,
                targets: 2,
                healthy: 1,
                unhealthy: 1,
                uptime_s: 42,
                last_reload: None,
                drained: false,
                announced: vec!["10.0.0.1".parse().unwrap()],
            }),
        ),
        Command::Host(r) => send(r, Ok(host(false))),
        Command::Listeners(r) => send(r, Ok(super::status_tests::listeners())),
        Command::TargetGroups(r) => send(r, Ok(super::status_tests::groups())),
        Command::Stats(r) => send(r, Ok(super::status_tests::stats())),
        Command::Transitions(r) => send(r, Ok(super::status_tests::transitions())),
        Command::DrainHost(r) => send(r, Ok(host(true))),
        Command::ResumeHost(r) => send(
            r,
            Err(ControlError::Conflict(
                "[bgp] is not enabled: this host announces nothing, so there is nothing to drain or resume".into(),
            )),
        ),
        Command::TargetHealth { group, reply } if group == "web" => send(reply, Ok(targets())),
        Command::TargetHealth { group, reply } => send(
            reply,
            Err(ControlError::NotFound(format!(
                "target group {group} not found"
            ))),
        ),
        Command::Flows { limit, reply } => {
            let flow = FlowReport {
                client: "192.0.2.1:40000".parse().unwrap(),
                vip: "10.0.0.1:80".parse().unwrap(),
                protocol: "tcp".into(),
                target: Some("10.0.1.10:80".parse().unwrap()),
                state: "established".into(),
                idle_s: 3,
            };
            send(
                reply,
                Ok(FlowsReport {
                    entries: 5,
                    active: 4,
                    sample: vec![flow; limit.min(5)],
                }),
            )
        }
        Command::Register {
            group,
            targets,
            reply,
        } => send(reply, change(format!("registered {targets:?} in {group}"))),
        Command::SetWeight {
            group,
            target,
            weight,
            reply,
        } => send(reply, change(format!("{group}: {target} weight {weight}"))),
        Command::ModifyListener {
            name,
            attributes,
            reply,
        } => send(reply, change(format!("{name}: {attributes:?}"))),
        Command::DeleteListener { name, reply } => send(
            reply,
            Err(ControlError::Conflict(format!(
                "listener {name} has deletion protection on"
            ))),
        ),
        Command::DeleteTargetGroup { reply, .. } => {
            send(reply, Err(ControlError::Failed("map update failed".into())))
        }
        // The first reload finds an invalid file, the next ones none.
        Command::Reload(reply) => {
            *reloads += 1;
            let refused = if *reloads == 1 {
                ControlError::Invalid(ValidationErrors::from_iter([
                    ValidationError {
                        path: "listener[0].port".into(),
                        reason: "0 is out of range".into(),
                    },
                    ValidationError {
                        path: "target_group[1].name".into(),
                        reason: "\"web\" is used twice".into(),
                    },
                ]))
            } else {
                ControlError::Unreadable {
                    path: "/etc/lb/lb.toml".into(),
                    message: "No such file or directory (os error 2)".into(),
                }
            };
            send(reply, Err(refused))
        }
        other => panic!("the fake control loop does not expect {other:?}"),
    }
}

/// A directory removed when the test ends, even by panic.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lb-api-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running API on a socket in a fresh temp dir and 127.0.0.1:0.
pub(super) struct Fixture {
    pub(super) server: super::ApiServer,
    _dir: TempDir,
}

impl Fixture {
    async fn start(name: &str) -> Self {
        Self::start_with(name, true).await
    }

    /// With the status page on or off.
    pub(super) async fn start_with(name: &str, status_page: bool) -> Self {
        let dir = TempDir::new(name);
        let endpoints = Endpoints {
            socket: dir.0.join("run/api.sock"),
            listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            status_page,
        };
        let server = serve(&endpoints, fake_control(), authorizer())
            .await
            .expect("API starts");
        Self { server, _dir: dir }
    }

    fn tcp(&self, token: Option<&str>) -> Client {
        let addr = self.server.tcp_addr().unwrap();
        Client::new(Endpoint::Tcp(addr.to_string()), token.map(Into::into))
    }

    pub(super) fn unix(&self, token: Option<&str>) -> Client {
        let socket = self.server.endpoints().socket.clone();
        Client::new(Endpoint::Unix(socket), token.map(Into::into))
    }
}

/// Sends a request; returns the status and the body as JSON.
async fn call(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let (status, bytes) = client
        .send(method, path, body.map(|b| b.as_bytes().to_vec()))
        .await
        .expect("request goes through");
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{path}: body is not JSON ({e}): {bytes:?}"));
    (status, json)
}

fn error(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"error": {"code": code, "message": message}})
}

#[tokio::test]
async fn tcp_clients_without_a_known_token_get_401() {
    let f = Fixture::start("401").await;
    let (status, body) = call(&f.tcp(None), Method::GET, "/v1/status", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body,
        error(
            "MissingAuthenticationToken",
            "Missing authentication token: send `Authorization: Bearer <token>`"
        )
    );
    let (status, body) = call(&f.tcp(Some("guess")), Method::GET, "/v1/status", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body,
        error(
            "UnrecognizedClientException",
            "The security token included in the request is invalid."
        )
    );
}

#[tokio::test]
async fn unix_socket_peer_uid_decides_root() {
    let f = Fixture::start("root").await;
    let (status, body) = call(&f.unix(None), Method::GET, "/v1/status", None).await;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["uptime_s"], 42);
    } else {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    // A token works on the socket as well.
    let (status, _) = call(
        &f.unix(Some("reader-secret")),
        Method::GET,
        "/v1/status",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_policy_without_the_action_gets_403() {
    let f = Fixture::start("403").await;
    let body = r#"{"targets":[{"address":"10.0.1.12"}]}"#;
    let (status, json) = call(
        &f.tcp(Some("reader-secret")),
        Method::POST,
        "/v1/target-groups/web/targets",
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        json,
        error(
            "AccessDenied",
            "User: token/reader is not authorized to perform: lb:RegisterTargets on resource: \
             target-group/web because no identity-based policy allows the lb:RegisterTargets action"
        )
    );
}

/// Draining the host is an action on the whole load balancer: a token
/// allowed everything on one target group may not, nor may a reader; root
/// and an admin token may, and get the host's report. The control loop's
/// refusal (no `[bgp]`) is a 409.
#[tokio::test]
async fn host_drain_is_iam_controlled() {
    let f = Fixture::start("host").await;
    for (token, action) in [
        ("reader-secret", "lb:DrainHost"),
        ("web-secret", "lb:DrainHost"),
    ] {
        let (status, json) = call(&f.tcp(Some(token)), Method::POST, "/v1/host/drain", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{token}: {json}");
        assert!(
            json["error"]["message"].as_str().unwrap().contains(action),
            "{json}"
        );
    }
    let (status, json) = call(&f.tcp(Some("reader-secret")), Method::GET, "/v1/host", None).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["announced"], serde_json::json!(["10.0.0.1"]));
    let admin = f.tcp(Some("admin-secret"));
    let (status, json) = call(&admin, Method::POST, "/v1/host/drain", None).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let report: HostReport = serde_json::from_value(json).unwrap();
    assert_eq!(report, host(true));
    let (status, json) = call(&admin, Method::POST, "/v1/host/resume", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{json}");
    assert_eq!(json["error"]["code"], "Conflict");
}

#[tokio::test]
async fn an_explicit_deny_says_so() {
    let f = Fixture::start("deny").await;
    let (status, json) = call(
        &f.tcp(Some("ops-secret")),
        Method::DELETE,
        "/v1/listeners/web",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        json,
        error(
            "AccessDenied",
            "User: token/ops is not authorized to perform: lb:DeleteListener on resource: \
             listener/web with an explicit deny in an identity-based policy: no-deletes (statement NoDeletes)"
        )
    );
}

#[tokio::test]
async fn allowed_requests_get_the_control_loops_answer() {
    let f = Fixture::start("200").await;
    let reader = f.tcp(Some("reader-secret"));
    let (status, json) = call(&reader, Method::GET, "/v1/target-groups/web/targets", None).await;
    assert_eq!(status, StatusCode::OK);
    let got: TargetHealthResponse = serde_json::from_value(json).unwrap();
    assert_eq!(got.targets, targets());

    let (status, json) = call(&reader, Method::GET, "/v1/flows?limit=2", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["sample"].as_array().unwrap().len(), 2);

    let ops = f.tcp(Some("ops-secret"));
    let body = r#"{"targets":[{"address":"10.0.1.12","port":8080,"weight":3,"zone":"b"}]}"#;
    let (status, json) = call(
        &ops,
        Method::POST,
        "/v1/target-groups/web/targets",
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        json["message"],
        "registered [TargetSpec { address: 10.0.1.12, port: Some(8080), weight: Some(3), \
         zone: Some(\"b\") }] in web"
    );

    // An IPv6 target in the path, percent-encoded as the CLI sends it.
    let path = format!(
        "/v1/target-groups/web/targets/{}/weight",
        super::client::target("[2001:db8::11]:8080".parse().unwrap())
    );
    assert_eq!(
        path,
        "/v1/target-groups/web/targets/%5B2001:db8::11%5D:8080/weight"
    );
    let (status, json) = call(&ops, Method::PUT, &path, Some(r#"{"weight":5}"#)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["message"], "web: [2001:db8::11]:8080 weight 5");

    let (status, json) = call(
        &ops,
        Method::PATCH,
        "/v1/listeners/web",
        Some(r#"{"deletion_protection":false}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        json["message"],
        "web: ListenerAttributes { deletion_protection: Some(false) }"
    );
}

#[tokio::test]
async fn the_resource_is_the_one_named_in_the_path() {
    let f = Fixture::start("resource").await;
    let web = f.tcp(Some("web-secret"));
    let (status, _) = call(&web, Method::GET, "/v1/target-groups/web/targets", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, json) = call(&web, Method::GET, "/v1/target-groups/api/targets", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        json["error"]["message"],
        "User: token/web is not authorized to perform: lb:DescribeTargetHealth on resource: \
         target-group/api because no identity-based policy allows the lb:DescribeTargetHealth action"
    );
    // Listing every group is a request on `target-group/*`.
    let (status, _) = call(&web, Method::GET, "/v1/target-groups", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn control_errors_map_to_http_statuses() {
    let f = Fixture::start("errors").await;
    let ops = f.tcp(Some("admin-secret"));
    let cases = [
        (
            Method::GET,
            "/v1/target-groups/api/targets",
            StatusCode::NOT_FOUND,
            error("NotFound", "target group api not found"),
        ),
        (
            Method::POST,
            "/v1/reload",
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": {
                "code": "ValidationError",
                "message": "listener[0].port: 0 is out of range\ntarget_group[1].name: \"web\" is used twice",
                "errors": [
                    {"path": "listener[0].port", "reason": "0 is out of range"},
                    {"path": "target_group[1].name", "reason": "\"web\" is used twice"},
                ],
            }}),
        ),
        (
            Method::POST,
            "/v1/reload",
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"error": {
                "code": "ConfigUnreadable",
                "message": "failed to read config /etc/lb/lb.toml: No such file or directory (os error 2)",
                "file": "/etc/lb/lb.toml",
            }}),
        ),
        (
            Method::DELETE,
            "/v1/target-groups/web",
            StatusCode::INTERNAL_SERVER_ERROR,
            error("InternalFailure", "map update failed"),
        ),
    ];
    for (method, path, want_status, want_body) in cases {
        let (status, body) = call(&ops, method, path, None).await;
        assert_eq!((status, body), (want_status, want_body), "{path}");
    }
}

#[tokio::test]
async fn deletion_protection_conflict_is_409() {
    let f = Fixture::start("409").await;
    // admin may delete; the control loop refuses.
    let (status, body) = call(
        &f.tcp(Some("admin-secret")),
        Method::DELETE,
        "/v1/listeners/web",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body,
        error("Conflict", "listener web has deletion protection on")
    );
}

#[tokio::test]
async fn malformed_requests_get_400_with_the_reason() {
    let f = Fixture::start("400").await;
    let ops = f.tcp(Some("ops-secret"));
    let reader = f.tcp(Some("reader-secret"));
    let register = "/v1/target-groups/web/targets";
    let weight = "/v1/target-groups/web/targets/10.0.1.10:80/weight";
    let cases: [(&Client, Method, &str, Option<&str>, &str); 9] = [
        (
            &ops,
            Method::POST,
            register,
            Some("{"),
            "invalid JSON request body: EOF while parsing an object at line 1 column 1",
        ),
        (
            &ops,
            Method::POST,
            register,
            Some(r#"{"targets":[{"address":"10.0.1.12","wieght":2}]}"#),
            "invalid JSON request body: unknown field `wieght`, expected one of `address`, `port`, `weight`, `zone` at line 1 column 43",
        ),
        (
            &ops,
            Method::POST,
            register,
            Some(r#"{"targets":[{"address":"ten"}]}"#),
            "invalid JSON request body: invalid IP address syntax at line 1 column 28",
        ),
        (
            &ops,
            Method::POST,
            register,
            Some(" "),
            "a JSON request body is required",
        ),
        (
            &ops,
            Method::POST,
            register,
            Some(r#"{"targets":[]}"#),
            "targets: at least one target is required",
        ),
        (
            &ops,
            Method::PUT,
            weight,
            Some(r#"{"weight":-1}"#),
            "invalid JSON request body: invalid value: integer `-1`, expected u32 at line 1 column 12",
        ),
        (
            &ops,
            Method::PUT,
            "/v1/target-groups/web/targets/10.0.1.10/weight",
            Some(r#"{"weight":1}"#),
            "target \"10.0.1.10\" is not address:port (IPv6 as [addr]:port)",
        ),
        (
            &reader,
            Method::GET,
            "/v1/flows?limit=many",
            None,
            "Failed to deserialize query string: limit: invalid digit found in string",
        ),
        (
            &reader,
            Method::GET,
            "/v1/flows?limit=10001",
            None,
            "limit: 10001 is above the maximum of 10000",
        ),
    ];
    for (client, method, path, body, message) in cases {
        let (status, json) = call(client, method, path, body).await;
        assert_eq!(
            (status, json),
            (StatusCode::BAD_REQUEST, error("ValidationError", message)),
            "{path} {body:?}"
        );
    }
    // Over the body limit: 413, still a JSON error.
    let big = format!(
        r#"{{"targets":[{}]}}"#,
        "0".repeat(super::body::MAX_BODY_BYTES)
    );
    let (status, json) = call(&ops, Method::POST, register, Some(&big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        json,
        error("PayloadTooLarge", "request body exceeds 262144 bytes")
    );
    // No body, hence no Content-Type: 415 (a body must say it is JSON).
    let (status, json) = call(&ops, Method::POST, register, None).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        json,
        error(
            "UnsupportedMediaType",
            "the request body must be JSON, sent with Content-Type: application/json (got none)"
        )
    );
    // Unknown routes and methods: JSON too.
    let (status, json) = call(&ops, Method::GET, "/v1/nope", None).await;
    assert_eq!(
        (status, json),
        (
            StatusCode::NOT_FOUND,
            error("UnknownOperation", "no such route")
        )
    );
    let (status, _) = call(&ops, Method::DELETE, "/v1/status", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    // A path parameter that is not UTF-8 once decoded: a JSON 400 to a
    // known caller, and to anyone else the 401 every route gives them.
    let undecodable = "/v1/listeners/%FF";
    let (status, json) = call(&ops, Method::DELETE, undecodable, None).await;
    assert_eq!(
        (status, json),
        (
            StatusCode::BAD_REQUEST,
            error("ValidationError", super::access::UNDECODABLE_PATH)
        )
    );
    let (status, json) = call(&f.tcp(None), Method::DELETE, undecodable, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{json}");
}

#[tokio::test]
async fn the_socket_is_0660_a_stale_one_is_replaced_and_shutdown_removes_it() {
    let dir = TempDir::new("socket");
    let socket = dir.0.join("api.sock");
    let endpoints = Endpoints {
        socket: socket.clone(),
        listen: None,
        status_page: false,
    };
    // A stale socket: bound, then its listener closed.
    std::fs::create_dir_all(&dir.0).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let server = serve(&endpoints, fake_control(), authorizer())
        .await
        .unwrap();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);
    // A second server on the same socket is refused.
    let err = serve(&endpoints, fake_control(), authorizer())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ServeError::SocketInUse { .. }), "{err}");
    server.shutdown().await;
    assert!(!socket.exists());
    // Not a socket: left alone.
    std::fs::write(&socket, "data").unwrap();
    let err = serve(&endpoints, fake_control(), authorizer())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ServeError::NotASocket { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(&socket).unwrap(), "data");
}

#[test]
fn bearer_tokens_and_unix_peers() {
    use super::access::{Peer, principal};
    let authz = authorizer();
    let headers = |v: &str| {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        h
    };
    let none = http::HeaderMap::new();
    let root = Peer::Unix { uid: Some(0) };
    let user = Peer::Unix { uid: Some(1000) };
    let unknown = Peer::Unix { uid: None };
    assert_eq!(principal(root, &none, authz.as_ref()), Ok(Principal::Root));
    assert_eq!(
        principal(user, &none, authz.as_ref()),
        Err(AuthError::MissingToken)
    );
    assert_eq!(
        principal(unknown, &none, authz.as_ref()),
        Err(AuthError::MissingToken)
    );
    assert_eq!(
        principal(user, &headers("bearer reader-secret"), authz.as_ref()),
        Ok(Principal::Token("reader".into()))
    );
    // A token sent by root is evaluated as that token.
    assert_eq!(
        principal(root, &headers("Bearer reader-secret"), authz.as_ref()),
        Ok(Principal::Token("reader".into()))
    );
    assert_eq!(
        principal(root, &headers("Bearer guess"), authz.as_ref()),
        Err(AuthError::InvalidToken)
    );
    assert_eq!(
        principal(user, &headers("Basic cmVhZGVy"), authz.as_ref()),
        Err(AuthError::MissingToken)
    );
    assert_eq!(
        principal(user, &headers("Bearer "), authz.as_ref()),
        Err(AuthError::MissingToken)
    );
}

#[test]
fn targets_table_shows_state_and_reason() {
    assert_eq!(
        cli::targets_table(&targets()),
        "\
TARGET               ZONE  WEIGHT  EFFECTIVE  STATE      REASON                     DESCRIPTION
10.0.1.10:80         a     1       1          healthy    -                          
[2001:db8::11]:8080  -     10      0          unhealthy  Target.FailedHealthChecks  Health checks failed
"
    );
}

/// The route table as docs/openapi.yaml lists it: (METHOD, path, action,
/// resource) for every operation under `paths:`. The file is read by
/// indentation (paths at 2 spaces, methods at 4, their keys at 6), which is
/// how it is written; a mis-indented edit fails this test loudly.
fn openapi_routes() -> BTreeSet<(String, String, String, String)> {
    let text = include_str!("../../../docs/openapi.yaml");
    let mut routes = BTreeSet::new();
    let (mut in_paths, mut path, mut op) = (
        false,
        String::new(),
        None::<(String, Option<String>, Option<String>)>,
    );
    let mut flush = |path: &str, op: Option<(String, Option<String>, Option<String>)>| {
        if let Some((method, action, resource)) = op {
            let action = action.unwrap_or_else(|| panic!("{method} {path}: no x-iam-action"));
            let resource = resource.unwrap_or_else(|| panic!("{method} {path}: no x-iam-resource"));
            assert!(routes.insert((method, path.to_owned(), action, resource)));
        }
    };
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let line = line.trim();
        if indent == 0 && !line.is_empty() {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths || line.is_empty() {
            continue;
        }
        let value = |key: &str| {
            line.strip_prefix(key)
                .map(|v| v.trim().trim_matches('"').to_owned())
        };
        match indent {
            2 => {
                flush(&path, op.take());
                path = line.trim_end_matches(':').to_owned();
            }
            4 if ["get:", "put:", "post:", "patch:", "delete:"].contains(&line) => {
                flush(&path, op.take());
                op = Some((line.trim_end_matches(':').to_uppercase(), None, None));
            }
            6 => {
                if let Some(o) = op.as_mut() {
                    if let Some(a) = value("x-iam-action:") {
                        o.1 = Some(a);
                    }
                    if let Some(r) = value("x-iam-resource:") {
                        o.2 = Some(r);
                    }
                }
            }
            _ => {}
        }
    }
    flush(&path, op.take());
    routes
}

#[test]
fn openapi_file_describes_exactly_the_served_routes() {
    let served: BTreeSet<_> = ROUTES
        .iter()
        .map(|r| {
            (
                r.method.to_string(),
                r.path.to_owned(),
                r.action.as_str().to_owned(),
                r.resource.to_owned(),
            )
        })
        .collect();
    assert_eq!(served.len(), ROUTES.len(), "a route is listed twice");
    assert_eq!(openapi_routes(), served);
    // Every action the authorizer knows has a route, except DescribeConfig
    // (no route yet: the control loop has no command for it).
    let routed: BTreeSet<_> = ROUTES.iter().map(|r| r.action.as_str()).collect();
    let known: BTreeSet<_> = Action::ALL
        .iter()
        .map(|a| a.as_str())
        .filter(|a| *a != "lb:DescribeConfig")
        .collect();
    assert_eq!(routed, known);
}

/// Parses an `lb` command line and runs it against the fixture over TCP.
async fn lb(f: &Fixture, args: &[&str]) -> Result<String, String> {
    use clap::Parser;
    let cli = crate::cli::Cli::try_parse_from(std::iter::once("lb").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    let crate::cli::Command::Api(cmd) = cli.command else {
        panic!("{args:?} is not an API subcommand");
    };
    let client = f.tcp(None);
    let client = Client::new(client.endpoint, Some("ops-secret".into()));
    cli::run(&cmd, &client).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn cli_subcommands_print_tables_messages_and_errors() {
    let f = Fixture::start("cli").await;
    assert_eq!(
        lb(&f, &["targets", "web"]).await.unwrap(),
        cli::targets_table(&targets())
    );
    assert_eq!(
        lb(&f, &["set-weight", "web", "10.0.1.10:80", "7"])
            .await
            .unwrap(),
        "web: 10.0.1.10:80 weight 7\n"
    );
    assert_eq!(
        lb(
            &f,
            &[
                "register",
                "web",
                "10.0.1.12",
                "[2001:db8::12]:81",
                "--weight",
                "2"
            ]
        )
        .await
        .unwrap(),
        "registered [TargetSpec { address: 10.0.1.12, port: None, weight: Some(2), zone: None }, \
         TargetSpec { address: 2001:db8::12, port: Some(81), weight: Some(2), zone: None }] in web\n"
    );
    assert_eq!(
        lb(
            &f,
            &["modify-listener", "web", "--deletion-protection", "off"]
        )
        .await
        .unwrap(),
        "web: ListenerAttributes { deletion_protection: Some(false) }\n"
    );
    let json = lb(&f, &["targets", "web", "--json"]).await.unwrap();
    let parsed: TargetHealthResponse = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed.targets, targets());
    // Server errors come back with the server's message and status.
    assert_eq!(
        lb(&f, &["delete-listener", "web"]).await.unwrap_err(),
        "User: token/ops is not authorized to perform: lb:DeleteListener on resource: \
         listener/web with an explicit deny in an identity-based policy: no-deletes (statement NoDeletes) (403 Forbidden, AccessDenied)"
    );
    assert_eq!(
        lb(&f, &["targets", "api"]).await.unwrap_err(),
        "target group api not found (404 Not Found, NotFound)"
    );
    assert!(
        lb(&f, &["drain", "web"])
            .await
            .unwrap_err()
            .contains("required")
    );
}

#[test]
fn endpoints_parse() {
    assert_eq!(
        "unix:/run/lb/api.sock".parse(),
        Ok(Endpoint::Unix("/run/lb/api.sock".into()))
    );
    assert_eq!(
        "/tmp/a.sock".parse(),
        Ok(Endpoint::Unix("/tmp/a.sock".into()))
    );
    assert_eq!(
        "http://127.0.0.1:9000/".parse(),
        Ok(Endpoint::Tcp("127.0.0.1:9000".into()))
    );
    assert!("https://x:1".parse::<Endpoint>().is_err());
    assert!("http://x:1/v1".parse::<Endpoint>().is_err());
}

#[test]
fn the_cli_finds_the_socket_in_the_config() {
    assert_eq!(
        cli::api_socket("[daemon]\ninterfaces = [\"eth0\"]\n"),
        Ok(None)
    );
    assert_eq!(
        cli::api_socket("[api]\nsocket = \"/run/lb-test/api.sock\"\n"),
        Ok(Some("/run/lb-test/api.sock".into()))
    );
    assert_eq!(
        cli::api_socket("[api]\nsocket = 1\n"),
        Err("api.socket: expected a path, found integer".into())
    );
}

/// Runs curl (a real, independent client) with `args`; returns the status
/// code and body.
async fn curl(args: &[&str]) -> (u16, serde_json::Value) {
    let out = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--write-out", "\n%{http_code}"])
        .args(args)
        .output()
        .await
        .expect("curl must be installed (apt-get install curl)");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), serde_json::from_str(body).unwrap())
}

#[tokio::test]
async fn curl_can_use_the_api() {
    let f = Fixture::start("curl").await;
    let base = format!("http://{}", f.server.tcp_addr().unwrap());
    // `-d` alone sends a form content type: refused, the body must say
    // it is JSON.
    let register = format!("{base}/v1/target-groups/web/targets");
    let json_body = r#"{"targets":[{"address":"10.0.1.12"}]}"#;
    let (code, body) = curl(&[
        "-H",
        "Authorization: Bearer ops-secret",
        "-d",
        json_body,
        &register,
    ])
    .await;
    assert_eq!(code, 415, "{body}");
    assert_eq!(body["error"]["code"], "UnsupportedMediaType", "{body}");
    let (code, body) = curl(&[
        "-H",
        "Authorization: Bearer ops-secret",
        "-H",
        "Content-Type: application/json; charset=utf-8",
        "-d",
        json_body,
        &register,
    ])
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = curl(&[&format!("{base}/v1/stats")]).await;
    assert_eq!(code, 401, "{body}");
    // A 401 names the scheme it wants (RFC 6750).
    let out = tokio::process::Command::new("curl")
        .args([
            "--silent",
            "--output",
            "/dev/null",
            "--write-out",
            "%header{www-authenticate}",
        ])
        .arg(format!("{base}/v1/stats"))
        .output()
        .await
        .expect("curl must be installed");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Bearer");
    let socket = f.server.endpoints().socket.to_str().unwrap().to_owned();
    let (code, body) = curl(&[
        "--unix-socket",
        &socket,
        "-H",
        "Authorization: Bearer reader-secret",
        "http://localhost/v1/target-groups/web/targets",
    ])
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["targets"][1]["reason"], "Target.FailedHealthChecks");
}

/// A changed `[api]` re-binds through `retire`, which must not wait for a
/// request in flight (here one whose command the control loop has not
/// answered yet): it returns at once, the same socket path and TCP port
/// bind again right away (while the old connection is still open), and the
/// request still gets its answer once the command is answered. (`shutdown`
/// waited for it, up to 5 s per listener, while the control loop stood
/// still.)
#[tokio::test]
async fn retiring_does_not_wait_for_requests_in_flight() {
    use std::time::{Duration, Instant};
    let dir = TempDir::new("retire");
    let endpoints = Endpoints {
        socket: dir.0.join("run/api.sock"),
        listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        status_page: false,
    };
    let (control, mut unanswered) = ControlHandle::channel(8);
    let server = serve(&endpoints, control, authorizer())
        .await
        .expect("API starts");
    let port = server.tcp_addr().expect("TCP address").port();
    let client = Client::new(
        Endpoint::Tcp(format!("127.0.0.1:{port}")),
        Some("reader-secret".into()),
    );
    let pending = tokio::spawn(async move { client.send(Method::GET, "/v1/status", None).await });
    let in_flight = tokio::time::timeout(Duration::from_secs(5), unanswered.recv())
        .await
        .expect("the request reached the control loop")
        .expect("a command");

    let started = Instant::now();
    server.retire().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "retire waited {took:?} for a request in flight"
    );
    let again = Endpoints {
        listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
        ..endpoints.clone()
    };
    let (control, _rx) = ControlHandle::channel(8);
    let next = serve(&again, control, authorizer())
        .await
        .expect("the same socket path and port bind again at once");
    assert_eq!(next.tcp_addr().map(|a| a.port()), Some(port));
    answer(in_flight, &mut 0);
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("the request in flight is answered")
        .expect("client task")
        .expect("request goes through");
    assert_eq!(status, StatusCode::OK);
}
