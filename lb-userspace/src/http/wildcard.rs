//! ALB's condition patterns: `*` matches any run of characters (also none),
//! `?` exactly one; everything else literally.

/// A compiled pattern; case folding is decided at construction.
#[derive(Debug, Clone)]
pub struct Pattern {
    pattern: Vec<char>,
    ignore_case: bool,
}

impl Pattern {
    pub fn new(pattern: &str, ignore_case: bool) -> Self {
        let pattern = if ignore_case {
            pattern.to_lowercase()
        } else {
            pattern.to_owned()
        };
        Self {
            pattern: pattern.chars().collect(),
            ignore_case,
        }
    }

    /// Whether the whole of `text` matches. Linear backtracking over the last
    /// `*` only, so no input can make it exponential.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = if self.ignore_case {
            text.to_lowercase().chars().collect()
        } else {
            text.chars().collect()
        };
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

#[cfg(test)]
mod tests {
    use super::Pattern;

    #[test]
    fn wildcards() {
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
                Pattern::new(pat, true).matches(text),
                want,
                "{pat} ~ {text}"
            );
        }
        assert!(!Pattern::new("/API/*", false).matches("/api/x"));
        assert!(Pattern::new("/API/*", true).matches("/api/x"));
    }
}
