//! IAM's wildcards: `*` matches any run of characters (also none), `?`
//! exactly one.

/// Whether `pattern` matches all of `text`.
pub fn matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Greedy with one backtrack point (the last `*`): linear in practice,
    // O(p * t) at worst, never exponential.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character.
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// [`matches`] ignoring ASCII case (IAM action names are case-insensitive).
pub fn matches_ignore_case(pattern: &str, text: &str) -> bool {
    matches(&pattern.to_ascii_lowercase(), &text.to_ascii_lowercase())
}

/// Whether `pattern` has a wildcard.
pub fn is_pattern(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        for (pattern, text, expected) in [
            ("*", "", true),
            ("*", "anything/at all", true),
            ("target-group/web", "target-group/web", true),
            ("target-group/web", "target-group/web2", false),
            ("target-group/web", "target-group/We", false),
            ("target-group/*", "target-group/web", true),
            ("target-group/*", "listener/web", false),
            ("target-group/we?", "target-group/web", true),
            ("target-group/we?", "target-group/we", false),
            ("target-group/we?", "target-group/webs", false),
            ("*/web", "listener/web", true),
            ("*-*/w*b", "target-group/web", true),
            (
                "a*a*a*a*b",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
            ),
            ("lb:Describe*", "lb:DescribeTargetHealth", true),
            ("", "", true),
            ("", "x", false),
        ] {
            assert_eq!(matches(pattern, text), expected, "{pattern:?} ~ {text:?}");
        }
        assert!(matches_ignore_case("LB:describe*", "lb:DescribeFlows"));
        assert!(!matches("LB:describe*", "lb:DescribeFlows"));
    }
}
