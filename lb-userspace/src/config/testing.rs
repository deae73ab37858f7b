//! The configs the unit tests start from, written once: the `[daemon]`
//! table every test config needs, and the one-listener, one-group config
//! most tests edit.

/// `[daemon]` with the one key it needs; tests append keys of their own.
macro_rules! daemon {
    () => {
        "[daemon]\ninterfaces = [\"eth0\"]\n"
    };
}

/// The tcp listener `web` on 10.0.0.100:80 and the head of its tcp group
/// `web` on port 8080: tests append group keys, then target tables.
macro_rules! web {
    () => {
        r#"
[[listener]]
name = "web"
protocol = "tcp"
address = "10.0.0.100"
port = 80
target_group = "web"

[[target_group]]
name = "web"
protocol = "tcp"
port = 8080
"#
    };
}

pub const DAEMON: &str = daemon!();
pub const WEB: &str = web!();
/// A valid config: [`DAEMON`], [`WEB`] and two targets, 10.1.0.2 and
/// 10.1.0.3.
pub const BASE: &str = concat!(
    // A first empty line, so parse errors point at the same line numbers
    // as in the file this text was once written out in.
    "\n",
    daemon!(),
    web!(),
    "  [[target_group.target]]\n  address = \"10.1.0.2\"\n",
    "  [[target_group.target]]\n  address = \"10.1.0.3\"\n",
);

/// `text` parsed, or a panic with the parser's message.
pub fn parse(text: &str) -> super::Config {
    super::Config::parse(text).unwrap_or_else(|e| panic!("parse failed: {e}"))
}

/// Validation errors of `text` as `lb check` prints them.
pub fn errors(text: &str) -> Vec<String> {
    match parse(text).validate() {
        Ok(()) => vec![],
        Err(errs) => errs.iter().map(ToString::to_string).collect(),
    }
}

/// `[[target_group.target]]` tables for `addresses`.
pub fn targets(addresses: &[&str]) -> String {
    addresses
        .iter()
        .map(|a| format!("  [[target_group.target]]\n  address = \"{a}\"\n"))
        .collect()
}
