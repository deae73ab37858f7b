//! The wildcard patterns of IAM policies (actions, resources) and of ALB
//! rule conditions (host, path, header, query): `*` matches any run of
//! characters (also none), `?` exactly one, everything else literally. The
//! two differ only in how they fold case, which each caller says with
//! [`Case`].

/// How a pattern compares letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// Exactly (IAM resources, ALB paths).
    Sensitive,
    /// ASCII letters fold (IAM action names are case-insensitive ASCII).
    IgnoreAscii,
    /// Every Unicode letter folds (ALB host names, header and query values).
    IgnoreUnicode,
}

impl Case {
    fn fold(self, s: &str) -> Vec<char> {
        match self {
            Case::Sensitive => s.chars().collect(),
            Case::IgnoreAscii => s.to_ascii_lowercase().chars().collect(),
            Case::IgnoreUnicode => s.to_lowercase().chars().collect(),
        }
    }
}

/// A compiled pattern; case folding is decided at construction.
#[derive(Debug, Clone)]
pub struct Pattern {
    pattern: Vec<char>,
    case: Case,
}

impl Pattern {
    pub fn new(pattern: &str, case: Case) -> Self {
        Self {
            pattern: case.fold(pattern),
            case,
        }
    }

    /// Whether the whole of `text` matches. Greedy with one backtrack point
    /// (the last `*`): linear in practice, O(p * t) at worst, never
    /// exponential.
    pub fn matches(&self, text: &str) -> bool {
        let text = self.case.fold(text);
        let p = &self.pattern;
        let (mut pi, mut ti) = (0, 0);
        // Where to resume after the last `*`: (pattern index, text index).
        let mut star: Option<(usize, usize)> = None;
        while ti < text.len() {
            match p.get(pi) {
                Some('*') => {
                    star = Some((pi + 1, ti));
                    pi += 1;
                }
                Some(&c) if c == '?' || c == text[ti] => {
                    pi += 1;
                    ti += 1;
                }
                _ => match star {
                    // Let the last `*` swallow one more character.
                    Some((sp, st)) => {
                        pi = sp;
                        ti = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|&c| c == '*')
    }
}

/// Whether `pattern` matches all of `text` (a pattern used once).
pub fn matches(pattern: &str, text: &str, case: Case) -> bool {
    Pattern::new(pattern, case).matches(text)
}

/// Whether `pattern` has a wildcard.
pub fn is_pattern(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iam_wildcards() {
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
            assert_eq!(
                matches(pattern, text, Case::Sensitive),
                expected,
                "{pattern:?} ~ {text:?}"
            );
        }
        assert!(matches(
            "LB:describe*",
            "lb:DescribeFlows",
            Case::IgnoreAscii
        ));
        assert!(!matches(
            "LB:describe*",
            "lb:DescribeFlows",
            Case::Sensitive
        ));
    }

    #[test]
    fn alb_wildcards() {
        let cases = [
            ("*.example.com", "api.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "A.B.EXAMPLE.COM", true),
            ("api?.example.com", "api1.example.com", true),
            ("api?.example.com", "api.example.com", false),
            ("/img/*", "/img/a/b.png", true),
            ("/img/*", "/img", false),
            ("*", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("exact", "exact", true),
        ];
        for (pat, text, want) in cases {
            assert_eq!(
                Pattern::new(pat, Case::IgnoreUnicode).matches(text),
                want,
                "{pat} ~ {text}"
            );
        }
        assert!(!Pattern::new("/API/*", Case::Sensitive).matches("/api/x"));
        assert!(Pattern::new("/API/*", Case::IgnoreUnicode).matches("/api/x"));
    }

    #[test]
    fn case_folding_is_the_callers_choice() {
        // Unicode folding reaches letters beyond ASCII; ASCII folding does not.
        assert!(matches("CAFÉ.example", "café.example", Case::IgnoreUnicode));
        assert!(!matches("CAFÉ.example", "café.example", Case::IgnoreAscii));
        assert!(matches("CAFé.example", "café.example", Case::IgnoreAscii));
    }
}
