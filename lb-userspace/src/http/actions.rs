//! The answers the listener gives itself: redirects (with ALB's
//! `#{protocol}` `#{host}` `#{port}` `#{path}` `#{query}` templates), fixed
//! responses, and its own errors.
use http::{HeaderValue, Response, StatusCode, header};

use super::body::ProxyBody;
use crate::config::http::{FixedResponse, Redirect};

/// The parts of the request a redirect template may use.
pub struct Origin<'a> {
    /// `http` or `https`.
    pub protocol: &'a str,
    pub host: &'a str,
    pub port: u16,
    /// Without the leading `/`, as ALB's `#{path}`.
    pub path: &'a str,
    pub query: &'a str,
}

impl Origin<'_> {
    fn expand(&self, template: &str) -> String {
        template
            .replace("#{protocol}", self.protocol)
            .replace("#{host}", self.host)
            .replace("#{port}", &self.port.to_string())
            .replace("#{path}", self.path)
            .replace("#{query}", self.query)
    }
}

/// `Location` of a redirect: default ports are left out, an empty query
/// leaves no `?`.
pub fn location(r: &Redirect, origin: &Origin<'_>) -> String {
    let protocol = origin.expand(&r.protocol).to_ascii_lowercase();
    let host = origin.expand(&r.host);
    let port = origin.expand(&r.port);
    let path = origin.expand(&r.path);
    let query = origin.expand(&r.query);
    let default_port = match protocol.as_str() {
        "https" => "443",
        _ => "80",
    };
    let mut out = format!("{protocol}://{host}");
    if port != default_port {
        out.push(':');
        out.push_str(&port);
    }
    out.push_str(&path);
    if !query.is_empty() {
        out.push('?');
        out.push_str(&query);
    }
    out
}

pub fn redirect(r: &Redirect, origin: &Origin<'_>) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::FOUND);
    let location = location(r, origin);
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = status;
    match HeaderValue::try_from(location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        // A template filled with bytes no header may carry.
        Err(_) => return error(StatusCode::BAD_REQUEST),
    }
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

pub fn fixed(f: &FixedResponse) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(f.body.clone()));
    *resp.status_mut() = StatusCode::from_u16(f.status).unwrap_or(StatusCode::OK);
    if let Ok(v) = HeaderValue::try_from(f.content_type.as_str()) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// The listener's own error page, as ALB's: a status line and a short HTML
/// body naming it.
pub fn error(status: StatusCode) -> Response<ProxyBody> {
    let text = format!(
        "<html><body><h1>{} {}</h1></body></html>\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut resp = Response::new(ProxyBody::full(text));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect_to(protocol: &str, host: &str, port: &str, path: &str, query: &str) -> Redirect {
        Redirect {
            status: 301,
            protocol: protocol.into(),
            host: host.into(),
            port: port.into(),
            path: path.into(),
            query: query.into(),
        }
    }

    #[test]
    fn templates() {
        let o = Origin {
            protocol: "http",
            host: "example.com",
            port: 80,
            path: "a/b",
            query: "x=1",
        };
        let r = redirect_to("https", "#{host}", "443", "/#{path}", "#{query}");
        assert_eq!(location(&r, &o), "https://example.com/a/b?x=1");
        let r = redirect_to("#{protocol}", "new.#{host}", "8080", "/v2/#{path}", "");
        assert_eq!(location(&r, &o), "http://new.example.com:8080/v2/a/b");
        let r = redirect_to("HTTPS", "h", "#{port}", "/", "q=#{query}&y");
        assert_eq!(location(&r, &o), "https://h:80/?q=x=1&y");
    }
}
