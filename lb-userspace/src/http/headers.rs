//! Proxy header semantics: hop-by-hop fields (RFC 9110 section 7.6.1, and
//! every field the `Connection` header names) are not forwarded; the
//! `X-Forwarded-*` fields tell the target about the client.
use std::net::IpAddr;

use ::http::{
    HeaderMap, HeaderName, HeaderValue,
    header::{self, Entry},
};

/// Fields that only concern one connection.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// Whether `Connection` carries `token` (comma-separated, any case).
pub fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop fields and those `Connection` lists. Most messages
/// carry none: one pass over the names finds them before anything is
/// removed (each removal hashes its name).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// The `X-Forwarded-*` values of one client connection, built once for all
/// its requests.
#[derive(Debug, Clone)]
pub struct Forwarded {
    client: IpAddr,
    /// `X-Forwarded-For` of a request that had none: the client alone.
    client_only: HeaderValue,
    proto: HeaderValue,
    port: HeaderValue,
}

impl Forwarded {
    pub fn new(client: IpAddr, proto: &'static str, port: u16) -> Self {
        Self {
            client,
            client_only: HeaderValue::try_from(client.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("")),
            proto: HeaderValue::from_static(proto),
            port: HeaderValue::from(port),
        }
    }

    /// Appends the client to `X-Forwarded-For` (one field, comma-separated,
    /// as ALB's `append` mode) and sets `X-Forwarded-Proto` and `-Port`.
    pub fn set(&self, headers: &mut HeaderMap) {
        // Room for the three fields up front: one growth of the map at
        // most, not one per field.
        headers.reserve(3);
        match headers.entry(&X_FORWARDED_FOR) {
            Entry::Vacant(v) => {
                v.insert(self.client_only.clone());
            }
            Entry::Occupied(mut o) => {
                let prior: Vec<&str> = o.iter().filter_map(|v| v.to_str().ok()).collect();
                let joined = format!("{}, {}", prior.join(", "), self.client);
                match HeaderValue::try_from(joined) {
                    Ok(v) => {
                        o.insert(v);
                    }
                    // Not a valid field value: the client's field is
                    // dropped, the client alone is sent.
                    Err(_) => {
                        o.insert(self.client_only.clone());
                    }
                }
            }
        }
        headers.insert(&X_FORWARDED_PROTO, self.proto.clone());
        headers.insert(&X_FORWARDED_PORT, self.port.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_listed_fields_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        assert!(connection_has(&h, "KEEP-ALIVE"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
        Forwarded::new("10.0.0.9".parse().unwrap(), "https", 443).set(&mut h);
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 10.0.0.9");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_PORT], "443");
        let mut h = HeaderMap::new();
        Forwarded::new("2001:db8::1".parse().unwrap(), "http", 80).set(&mut h);
        assert_eq!(h[&X_FORWARDED_FOR], "2001:db8::1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_PORT], "80");
    }
}
