//! A request's transfer codings (RFC 9112 section 6.1). hyper decodes
//! `chunked` when it is the last coding and refuses a request whose last
//! coding is another; the target gets the body as hyper decoded it, framed
//! anew. A proxy that dropped the other codings would hand the target
//! encoded bytes as plain ones, so any coding but `chunked` is refused
//! with 501 (not implemented), and `chunked` applied twice with 400.
use ::http::{HeaderMap, StatusCode, header};

/// The status refusing the request's `Transfer-Encoding`, or `None` when
/// it is absent or `chunked` alone.
pub fn check(headers: &HeaderMap) -> Option<StatusCode> {
    let mut chunked = 0;
    let mut other = false;
    for field in headers.get_all(header::TRANSFER_ENCODING) {
        let Ok(field) = field.to_str() else {
            return Some(StatusCode::BAD_REQUEST);
        };
        // Codings may carry parameters (`gzip;q=1`); empty list elements
        // are allowed (RFC 9110 section 5.6.1).
        for coding in field
            .split(',')
            .map(|c| c.split(';').next().unwrap_or("").trim())
        {
            match coding {
                "" => {}
                c if c.eq_ignore_ascii_case("chunked") => chunked += 1,
                _ => other = true,
            }
        }
    }
    match (chunked, other) {
        (2.., _) => Some(StatusCode::BAD_REQUEST),
        (_, true) => Some(StatusCode::NOT_IMPLEMENTED),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(fields: &[&str]) -> Option<u16> {
        let mut h = HeaderMap::new();
        for f in fields {
            h.append(header::TRANSFER_ENCODING, f.parse().unwrap());
        }
        check(&h).map(|s| s.as_u16())
    }

    #[test]
    fn chunked_alone_passes_others_are_refused() {
        assert_eq!(status(&[]), None);
        assert_eq!(status(&["chunked"]), None);
        assert_eq!(status(&["Chunked"]), None);
        assert_eq!(status(&[" chunked ,"]), None);
        assert_eq!(status(&["gzip, chunked"]), Some(501));
        assert_eq!(status(&["gzip", "chunked"]), Some(501));
        assert_eq!(status(&["identity, chunked"]), Some(501));
        assert_eq!(status(&["x-custom;a=1, chunked"]), Some(501));
        assert_eq!(status(&["chunked, chunked"]), Some(400));
        assert_eq!(status(&["chunked", "chunked"]), Some(400));
        assert_eq!(status(&["gzip, chunked, chunked"]), Some(400));
    }
}
