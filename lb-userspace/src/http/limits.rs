//! ALB's request-head limits, each answered with its own status:
//!
//! | limit | status |
//! |---|---|
//! | request line over 16 KiB | 414 URI Too Long |
//! | one header field (`name: value`) over 16 KiB | 431 Request Header Fields Too Large |
//! | all header fields together over 64 KiB | 400 Bad Request (ALB documents 400 for an oversized header block) |
//!
//! hyper parses the head first, into a read buffer of [`READ_BUFFER`]
//! bytes: every head up to that size gets the exact answer above; a head
//! larger still, or one with more than hyper's 100 header fields, is refused
//! by hyper itself with 431 before we see it.
use ::http::{StatusCode, Version, request::Parts};

pub const MAX_REQUEST_LINE: usize = 16 * 1024;
pub const MAX_HEADER_FIELD: usize = 16 * 1024;
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// hyper's h1 read buffer: the longest valid head (request line + header
/// block + the line that crosses a limit) fits with room to spare.
pub const READ_BUFFER: usize = 128 * 1024;

/// The status a request head over a limit gets, or `None`.
pub fn check(parts: &Parts) -> Option<StatusCode> {
    if matches!(
        parts.version,
        Version::HTTP_10 | Version::HTTP_11 | Version::HTTP_09
    ) {
        // METHOD SP request-target SP HTTP/1.1
        let target = match parts.uri.path_and_query() {
            Some(pq) if parts.uri.scheme().is_none() => pq.as_str().len(),
            _ => parts.uri.to_string().len(),
        };
        if parts.method.as_str().len() + target + 10 > MAX_REQUEST_LINE {
            return Some(StatusCode::URI_TOO_LONG);
        }
    }
    let mut block = 0;
    for (name, value) in &parts.headers {
        let field = name.as_str().len() + 2 + value.len();
        if field > MAX_HEADER_FIELD {
            return Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        block += field + 2;
    }
    (block > MAX_HEADER_BLOCK).then_some(StatusCode::BAD_REQUEST)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, String)]) -> Parts {
        let mut b = ::http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, v.as_str());
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn each_limit_has_its_status() {
        let long = format!("/{}", "a".repeat(MAX_REQUEST_LINE));
        assert_eq!(check(&parts(&long, &[])), Some(StatusCode::URI_TOO_LONG));
        let ok = format!("/{}", "a".repeat(MAX_REQUEST_LINE - 100));
        assert_eq!(check(&parts(&ok, &[])), None);
        let big = "v".repeat(MAX_HEADER_FIELD);
        assert_eq!(
            check(&parts("/", &[("x-big", big)])),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let chunk = "v".repeat(10 * 1024);
        let many: Vec<_> = (0..7).map(|_| ("x-h", chunk.clone())).collect();
        assert_eq!(check(&parts("/", &many)), Some(StatusCode::BAD_REQUEST));
        assert_eq!(check(&parts("/", &many[..6])), None);
    }
}
