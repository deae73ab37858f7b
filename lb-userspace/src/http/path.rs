//! Opt-in normalisation of request paths (a listener's `normalize_path`),
//! so that a path rule cannot be walked around by spelling its path
//! another way (`/%61dmin`, `//admin`, `/x/../admin`): RFC 3986 section
//! 6.2.2's syntax-based normalisation, plus merged slashes (as Envoy's
//! `merge_slashes`). What the rules see is what the target gets.
//!
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
//!   decoded; the other percent-encodings keep their meaning (`%2F` stays
//!   an encoded slash, not a separator) with upper-case hex digits;
//! - runs of `/` become one;
//! - `.` and `..` segments are removed (section 5.2.4); `..` never climbs
//!   above the root.
//!
//! The query is left as it is.
use ::http::{Uri, uri::PathAndQuery};

/// Normalises the path of `uri` in place (origin or absolute form; an
/// asterisk or authority form has no path to normalise).
pub fn apply(uri: &mut Uri) {
    if !uri.path().starts_with('/') {
        return;
    }
    let Some(path) = normalize(uri.path()) else {
        return;
    };
    let with_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    // Only decoded unreserved characters and fewer slashes and dots: a
    // path `http` accepted stays one it accepts.
    parts.path_and_query = PathAndQuery::try_from(with_query).ok();
    if let Ok(normal) = Uri::from_parts(parts) {
        *uri = normal;
    }
}

/// The normalised form of `path`, or `None` when it is normal already
/// (most paths: one scan, no allocation).
pub fn normalize(path: &str) -> Option<String> {
    if is_normal(path) {
        return None;
    }
    let decoded = decode_unreserved(path);
    let merged = merge_slashes(&decoded);
    let out = remove_dot_segments(&merged);
    (out != path).then_some(out)
}

/// No `%`, no `//`, no `.` or `..` segment.
fn is_normal(path: &str) -> bool {
    let b = path.as_bytes();
    !b.contains(&b'%')
        && !path.contains("//")
        && !path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Decodes `%XX` of unreserved characters; upper-cases the hex digits of
/// the others. A `%` not followed by two hex digits is left alone.
fn decode_unreserved(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            let c = hi << 4 | lo;
            if is_unreserved(c) {
                out.push(c as char);
            } else {
                out.push('%');
                out.push(char::from(b[i + 1]).to_ascii_uppercase());
                out.push(char::from(b[i + 2]).to_ascii_uppercase());
            }
            i += 3;
            continue;
        }
        // A path `http` accepted is ASCII.
        out.push(b[i] as char);
        i += 1;
    }
    out
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c != '/' || !out.ends_with('/') {
            out.push(c);
        }
    }
    out
}

/// RFC 3986 section 5.2.4, for an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut rest = path.strip_prefix('/').unwrap_or(path).split('/').peekable();
    // Whether the path ends in a directory (`/`, `/.` or `/..`).
    let mut trailing = false;
    while let Some(segment) = rest.next() {
        let last = rest.peek().is_none();
        match segment {
            "." => trailing = last,
            ".." => {
                segments.pop();
                trailing = last;
            }
            s => {
                segments.push(s);
                trailing = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normal_paths_are_left_alone() {
        for p in ["/", "/a", "/a/b/", "/a.b/c..d/.e", "/~user/x-y_z"] {
            assert_eq!(normalize(p), None, "{p}");
        }
    }

    #[test]
    fn disguised_paths_come_out_plain() {
        for (path, want) in [
            ("/%61dmin", "/admin"),
            ("/%41%44MIN", "/ADMIN"),
            ("//admin", "/admin"),
            ("/a///b//", "/a/b/"),
            ("/x/../admin", "/admin"),
            ("/./admin", "/admin"),
            ("/x/%2e%2e/admin", "/admin"),
            ("/x/%2E./admin", "/admin"),
            ("/../../admin", "/admin"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/..", "/"),
            ("/..", "/"),
            ("/%7euser", "/~user"),
            // Reserved characters keep their encoding, upper-cased.
            ("/a/%2f/b", "/a/%2F/b"),
            ("/a%2fb", "/a%2Fb"),
            ("/%20x", "/%20x"),
            // Broken encodings are left as they are.
            ("/%zz/%4", "/%zz/%4"),
        ] {
            assert_eq!(normalize(path).as_deref().unwrap_or(path), want, "{path}");
        }
    }
}
