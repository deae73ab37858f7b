//! The host a request is for, checked once (RFC 9112 section 3.2, RFC 9113
//! section 8.3.1): at most one `Host` field, holding one `host[:port]` (no
//! list, no user information, no spaces); the request target's authority
//! (absolute form, or HTTP/2's `:authority`) wins over it (RFC 9112
//! section 3.2.2) and is the `Host` the target gets. Rules see the name
//! without its port and without the trailing dot of a fully qualified
//! name, as certificate selection does: what the rules see is what the
//! target is asked for.
use ::http::{HeaderValue, Version, header, request::Parts};

/// The request's host is malformed, doubled, or missing where HTTP/1.1
/// requires it: 400.
#[derive(Debug, PartialEq, Eq)]
pub struct BadHost;

/// Checks the request's host and makes its `Host` field the one the target
/// is to get. An HTTP/1.0 request may have none (the listener's address is
/// sent); HTTP/2 may carry its host as `:authority` alone.
pub fn settle(parts: &mut Parts) -> Result<(), BadHost> {
    let mut fields = parts.headers.get_all(header::HOST).iter();
    let field = fields.next();
    if fields.next().is_some() {
        return Err(BadHost);
    }
    if let Some(v) = field {
        check(v.as_bytes())?;
    }
    match parts.uri.authority() {
        Some(authority) => {
            check(authority.as_str().as_bytes())?;
            if field.is_none_or(|v| v.as_bytes() != authority.as_str().as_bytes()) {
                let v = HeaderValue::from_str(authority.as_str()).map_err(|_| BadHost)?;
                parts.headers.insert(header::HOST, v);
            }
            Ok(())
        }
        None if field.is_none() && parts.version == Version::HTTP_11 => Err(BadHost),
        None => Ok(()),
    }
}

/// One `host[:port]`, or nothing (RFC 9112 allows an empty `Host` when
/// the target has no authority). A comma (two hosts joined), an `@` (user
/// information) or anything but the characters of a host name, an IPv6
/// literal and a port is refused.
fn check(host: &[u8]) -> Result<(), BadHost> {
    let allowed = |c: &u8| c.is_ascii_alphanumeric() || b"-._~:[]!$&'()*+;=%".contains(c);
    if !host.iter().all(allowed) {
        return Err(BadHost);
    }
    if host.is_empty() {
        return Ok(());
    }
    let host = std::str::from_utf8(host).map_err(|_| BadHost)?;
    host.parse::<::http::uri::Authority>()
        .map_err(|_| BadHost)?;
    // `http` takes any port text; a port is digits, at most 65535.
    let port = host.len() - strip_port(host).len();
    match host
        .get(host.len() - port..)
        .and_then(|p| p.strip_prefix(':'))
    {
        None | Some("") => Ok(()),
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok() => Ok(()),
        Some(_) => Err(BadHost),
    }
}

/// The host as rules match it: from the `Host` that [`settle`] left, without
/// its port and trailing dot; empty when there is none.
pub fn for_rules(parts: &Parts) -> &str {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let name = strip_port(host);
    name.strip_suffix('.').unwrap_or(name)
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, version: Version, hosts: &[&str]) -> Parts {
        let mut b = ::http::Request::builder().uri(uri).version(version);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).unwrap().into_parts().0
    }

    /// `settle`, then what the rules and the target see.
    fn settled(uri: &str, version: Version, hosts: &[&str]) -> Result<(String, String), BadHost> {
        let mut p = parts(uri, version, hosts);
        settle(&mut p)?;
        let sent = p
            .headers
            .get(header::HOST)
            .map_or(String::new(), |h| h.to_str().unwrap().to_owned());
        Ok((for_rules(&p).to_owned(), sent))
    }

    #[test]
    fn one_valid_host_is_taken() {
        let ok = |host: &str, rules: &str| {
            assert_eq!(
                settled("/", Version::HTTP_11, &[host]),
                Ok((rules.to_owned(), host.to_owned())),
                "{host}"
            );
        };
        ok("example.com", "example.com");
        ok("example.com:8080", "example.com");
        ok("Example.COM.", "Example.COM");
        ok("example.com.:443", "example.com");
        ok("[2001:db8::1]:443", "[2001:db8::1]");
        ok("10.0.0.1", "10.0.0.1");
        ok("", "");
    }

    #[test]
    fn doubled_listed_or_odd_hosts_are_refused() {
        for hosts in [
            &["a.example", "b.example"][..],
            &["a.example", "a.example"],
            &["a.example, b.example"],
            &["a.example,b.example"],
            &["user@a.example"],
            &["a example"],
            &["a.example\t"],
            &["a.example/x"],
            &["a.example:port"],
            &["a.example:65536"],
            &["a.example:+80"],
        ] {
            assert_eq!(
                settled("/", Version::HTTP_11, hosts),
                Err(BadHost),
                "{hosts:?}"
            );
        }
        // HTTP/1.1 needs one; HTTP/1.0 and HTTP/2 need not.
        assert_eq!(settled("/", Version::HTTP_11, &[]), Err(BadHost));
        assert_eq!(
            settled("/", Version::HTTP_10, &[]),
            Ok((String::new(), String::new()))
        );
    }

    #[test]
    fn the_target_authority_wins_over_host() {
        for version in [Version::HTTP_11, Version::HTTP_2] {
            assert_eq!(
                settled("http://blocked.example/x", version, &["ok.example"]),
                Ok(("blocked.example".into(), "blocked.example".into()))
            );
            assert_eq!(
                settled("http://a.example:8080/x", version, &[]),
                Ok(("a.example".into(), "a.example:8080".into()))
            );
        }
        assert_eq!(
            settled("http://user@a.example/", Version::HTTP_11, &["a.example"]),
            Err(BadHost)
        );
    }
}
