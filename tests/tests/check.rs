//! What `lb run` would refuse or get wrong, `lb check` refuses first, with
//! the key path (issue 14, item 11): each config below was accepted by
//! `lb check` and then refused by `lb run` (a bind, an access log that
//! cannot be opened) or run wrongly (a redirect every request turned into
//! a 400, a method rule that can never match, a PROXY header silently not
//! sent, an ALPN protocol nobody speaks, more listeners than `max_vips`).
//! Each must now be refused by both, with the same line.
//!
//! Needs root (`lb run` runs in a namespace of its own) and `LB_BIN`;
//! panics otherwise, never skips.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Output;

use lb_tests::lab::Lab;
use lb_tests::netns;
use lb_tests::proc;

/// An http listener on the namespace's VIP and its group; `@L@` takes
/// more listener keys, `@R@` rules, `@G@` group keys, `@MORE@` more
/// tables.
const BODY: &str = r#"
[[listener]]
name = "web"
protocol = "http"
address = "10.200.0.100"
port = 80
target_group = "web"
@L@
@R@

[[target_group]]
name = "web"
protocol = "http"
port = 8080
@G@
  [[target_group.target]]
  address = "10.200.0.2"

@MORE@
"#;

/// The config: the userspace `[daemon]` table (plus `daemon`), `[api]`
/// (plus `api`), then [`BODY`] with its placeholders filled.
fn config(lab: &Lab, daemon: &str, api: &str, fill: &[(&str, &str)]) -> String {
    let mut body = BODY.to_owned();
    for key in ["@L@", "@R@", "@G@", "@MORE@"] {
        let value = fill.iter().find(|(k, _)| *k == key).map_or("", |(_, v)| v);
        body = body.replace(key, value);
    }
    format!(
        "[daemon]\ndataplane = \"userspace\"\npin_dir = {:?}\n{daemon}\n\n[api]\nsocket = {:?}\n{api}\n{body}",
        lab.topo.pin_dir().display().to_string(),
        lab.topo.api_socket().display().to_string(),
    )
}

fn lb(lab: &Lab, args: &[&OsStr]) -> Output {
    proc::lb_cmd(&lab.lb, lab.topo.lb.name(), args)
}

/// `lb check` and then `lb run` on `text`: both must fail and print
/// exactly `expected` among their lines (`lb run` within 30 s: a daemon
/// that started is killed, and the assertion says so).
fn refused(lab: &Lab, what: &str, text: &str, expected: &[&str]) {
    let path = lab.topo.run_dir().join("case.toml");
    std::fs::write(&path, text).expect("write the config");
    let out = lb(
        lab,
        &[
            OsStr::new("check"),
            OsStr::new("--config"),
            path.as_os_str(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert!(!out.status.success(), "{what}: lb check accepted it");
    assert_eq!(lines, expected, "{what}: lb check");

    let run = netns::try_run(
        "ip",
        [
            OsStr::new("netns"),
            OsStr::new("exec"),
            OsStr::new(lab.topo.lb.name()),
            OsStr::new("timeout"),
            OsStr::new("-s"),
            OsStr::new("KILL"),
            OsStr::new("30"),
            lab.lb.as_os_str(),
            OsStr::new("run"),
            OsStr::new("--config"),
            path.as_os_str(),
        ],
    )
    .expect("run lb run");
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && run.status.code().is_some(),
        "{what}: lb run did not refuse it ({}): {err}",
        run.status
    );
    for line in expected {
        assert!(err.contains(line), "{what}: lb run said {err}");
    }
}

fn accepted(lab: &Lab, text: &str) {
    let path = lab.topo.run_dir().join("case.toml");
    std::fs::write(&path, text).expect("write the config");
    let out = lb(
        lab,
        &[
            OsStr::new("check"),
            OsStr::new("--config"),
            path.as_os_str(),
        ],
    );
    assert!(
        out.status.success(),
        "the base config is refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn what_lb_run_would_refuse_lb_check_refuses_first() {
    let lab = Lab::bare("check", 0, true);
    let dir: &Path = lab.topo.run_dir();
    let certs = write_certificate(dir);
    let base = config(&lab, "", "", &[]);
    accepted(&lab, &base);

    refused(
        &lab,
        "access log in a missing directory",
        &config(
            &lab,
            "",
            "",
            &[("@L@", "access_log = \"/nonexistent-lb-test/access.log\"")],
        ),
        &[
            "listener[0].access_log: its directory \"/nonexistent-lb-test\" cannot be used (No such file or directory (os error 2)); lb creates the file, not its directory",
        ],
    );
    refused(
        &lab,
        "access log naming a directory",
        &config(
            &lab,
            "",
            "",
            &[(
                "@L@",
                &format!("access_log = {:?}", dir.display().to_string()),
            )],
        ),
        &[&format!(
            "listener[0].access_log: {:?} is a directory; name a file",
            dir.display().to_string()
        )],
    );
    refused(
        &lab,
        "api.listen on a listener's address and port",
        &config(&lab, "", "listen = \"10.200.0.100:80\"", &[]),
        &["api.listen: 10.200.0.100:80 is taken by listener[0] \"web\" (http on 10.200.0.100:80)"],
    );
    refused(
        &lab,
        "more listeners than max_vips, one of them served by the daemon",
        &config(
            &lab,
            "max_vips = 1",
            "",
            &[(
                "@MORE@",
                "[[listener]]\nname = \"web2\"\nprotocol = \"http\"\naddress = \"10.200.0.100\"\nport = 81\ntarget_group = \"web\"\n",
            )],
        ),
        &[
            "daemon.max_vips: 1 is less than the 2 listeners (one VIP each, whatever their protocol)",
        ],
    );
    refused(
        &lab,
        "a redirect with CR LF in its host and a space in its path",
        &config(
            &lab,
            "",
            "",
            &[(
                "@R@",
                "  [[listener.rule]]\n  priority = 1\n  conditions.path_pattern = [\"/old*\"]\n  action = { type = \"redirect\", host = \"a.example\\r\\nX-Evil: 1\", path = \"/new page\", status = 301 }\n",
            )],
        ),
        &[
            "listener[0].rule[0].action.host: \"a.example\\r\\nX-Evil: 1\" must not contain '\\r': only visible ASCII (percent-encode spaces, control and non-ASCII characters)",
            "listener[0].rule[0].action.path: \"/new page\" must not contain ' ': only visible ASCII (percent-encode spaces, control and non-ASCII characters)",
        ],
    );
    refused(
        &lab,
        "proxy_protocol_v2 on an http group",
        &config(&lab, "", "", &[("@G@", "proxy_protocol_v2 = true")]),
        &[
            "target_group[0].proxy_protocol_v2: http target groups do not send PROXY headers (a connection to a target carries many clients' requests; X-Forwarded-For names each client)",
        ],
    );
    refused(
        &lab,
        "a lower-case method",
        &config(
            &lab,
            "",
            "",
            &[(
                "@R@",
                "  [[listener.rule]]\n  priority = 1\n  conditions.http_request_method = [\"get\"]\n  action = { type = \"fixed_response\", status = 404 }\n",
            )],
        ),
        &[
            "listener[0].rule[0].conditions.http_request_method[0]: \"get\" is not an HTTP method: 1 to 40 characters of A-Z, - and _ (methods are case-sensitive: \"GET\", not \"get\")",
        ],
    );
    let https = format!(
        "[[listener]]\nname = \"secure\"\nprotocol = \"https\"\naddress = \"10.200.0.100\"\nport = 443\ntarget_group = \"web\"\n  [listener.tls]\n  alpn = [\"h2\", \"imap\"]\n  [[listener.tls.certificate]]\n  cert = {:?}\n  key = {:?}\n",
        certs.0, certs.1
    );
    refused(
        &lab,
        "an ALPN protocol an https listener does not speak",
        &config(&lab, "", "", &[("@MORE@", &https)]),
        &[
            "listener[1].tls.alpn[1]: \"imap\" is not a protocol an https listener speaks (h2, http/1.1, http/1.0)",
        ],
    );
    // The same https listener with HTTP protocols only is fine.
    accepted(
        &lab,
        &config(
            &lab,
            "",
            "",
            &[("@MORE@", &https.replace("\"imap\"", "\"http/1.1\""))],
        ),
    );
}

/// A self-signed certificate and its key in `dir`: (cert, key) paths.
fn write_certificate(dir: &Path) -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["lb.test".to_owned()]).expect("rcgen");
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.cert.pem()).expect("write cert");
    std::fs::write(&k, cert.key_pair.serialize_pem()).expect("write key");
    (c.display().to_string(), k.display().to_string())
}
