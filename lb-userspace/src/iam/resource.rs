//! Resource names policies refer to: `listener/<name>`,
//! `target-group/<name>`, and `*` for actions that concern the whole load
//! balancer (`lb:ReloadConfig`, `lb:DescribeStats`, ...): as in IAM, only a
//! statement whose resource matches `*` itself (i.e. `*`) grants those.
use crate::wildcard::{self, Case};

/// The resource of actions on the whole load balancer.
pub const GLOBAL: &str = "*";

const KINDS: [&str; 2] = ["listener/", "target-group/"];

/// `listener/<name>`.
pub fn listener(name: &str) -> String {
    format!("listener/{name}")
}

/// `target-group/<name>`.
pub fn target_group(name: &str) -> String {
    format!("target-group/{name}")
}

/// Whether a statement's resource `pattern` covers `resource`: the whole
/// load balancer ([`GLOBAL`]) only for the pattern `*` itself (a `?` or
/// `?*` would otherwise match the one-character name `*`), any other
/// resource by wildcard, case-sensitively.
pub fn matches(pattern: &str, resource: &str) -> bool {
    if resource == GLOBAL {
        return pattern == GLOBAL;
    }
    wildcard::matches(pattern, resource, Case::Sensitive)
}

/// Whether a policy's resource pattern can match some resource: `*`, a
/// `kind/name`, or a pattern whose literal start fits a kind.
pub fn plausible_pattern(pattern: &str) -> bool {
    if pattern == GLOBAL {
        return true;
    }
    if !wildcard::is_pattern(pattern) {
        return KINDS
            .iter()
            .any(|k| pattern.len() > k.len() && pattern.starts_with(k));
    }
    let literal = &pattern[..pattern.find(['*', '?']).unwrap_or(pattern.len())];
    KINDS
        .iter()
        .any(|k| k.starts_with(literal) || literal.starts_with(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pattern_star_covers_the_whole_load_balancer() {
        for p in ["*", "?", "?*", "*?", "**"] {
            assert_eq!(matches(p, GLOBAL), p == "*", "{p}");
        }
        for p in ["*", "?*", "listener/*", "listener/we?"] {
            assert!(matches(p, "listener/web"), "{p}");
        }
        assert!(!matches("listener/WEB", "listener/web"), "case-sensitive");
    }

    #[test]
    fn plausible_patterns() {
        for ok in [
            "*",
            "listener/web",
            "target-group/web",
            "target-group/*",
            "target-*",
            "*/web",
            "t?rget-group/web",
            "listener/we?",
        ] {
            assert!(plausible_pattern(ok), "{ok}");
        }
        for bad in [
            "",
            "web",
            "listener/",
            "targetgroup/web",
            "tg/*",
            "loadbalancer",
        ] {
            assert!(!plausible_pattern(bad), "{bad}");
        }
    }
}
