//! The API client behind the `lb` subcommands: one HTTP/1.1 request per
//! call over the Unix socket or TCP (hyper does the protocol).
use std::{fmt, io, net::SocketAddr, path::PathBuf, str::FromStr};

use bytes::Bytes;
use http::{
    Method, Request, StatusCode,
    header::{AUTHORIZATION, CONTENT_TYPE, HOST},
};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpStream, UnixStream},
};

use super::error::ErrorBody;

/// Where the API is: `unix:/path` (or a bare absolute path) or
/// `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port` as given, resolved when connecting.
    Tcp(String),
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Self::Unix(path.into()));
        }
        if s.starts_with('/') {
            return Ok(Self::Unix(s.into()));
        }
        if let Some(rest) = s.strip_prefix("http://") {
            let authority = rest.trim_end_matches('/');
            if authority.is_empty() || authority.contains('/') {
                return Err(format!("{s:?}: expected http://host:port"));
            }
            return Ok(Self::Tcp(authority.to_owned()));
        }
        Err(format!(
            "{s:?}: expected unix:/path/to/api.sock or http://host:port"
        ))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Tcp(a) => write!(f, "http://{a}"),
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the API at {endpoint}")]
    Connect {
        endpoint: Endpoint,
        #[source]
        source: io::Error,
    },
    #[error("HTTP exchange with the API at {endpoint} failed")]
    Http {
        endpoint: Endpoint,
        #[source]
        source: hyper::Error,
    },
    #[error("bad request: {0}")]
    Request(#[from] http::Error),
    /// The server answered with an error body.
    #[error("{message} ({status}, {code})")]
    Api {
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("unexpected answer from the API ({status}): {detail}")]
    Decode { status: StatusCode, detail: String },
}

/// A connection target plus credentials.
#[derive(Debug, Clone)]
pub struct Client {
    pub endpoint: Endpoint,
    pub token: Option<String>,
}

impl Client {
    pub fn new(endpoint: Endpoint, token: Option<String>) -> Self {
        Self { endpoint, token }
    }

    /// Sends one request and returns the status and body as they came.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let host = match &self.endpoint {
            Endpoint::Unix(_) => "localhost",
            Endpoint::Tcp(authority) => authority.as_str(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(HOST, host);
        if let Some(token) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let connect_err = |source| ClientError::Connect {
            endpoint: self.endpoint.clone(),
            source,
        };
        match &self.endpoint {
            Endpoint::Unix(path) => {
                let io = UnixStream::connect(path).await.map_err(connect_err)?;
                self.exchange(io, req).await
            }
            Endpoint::Tcp(authority) => {
                let io = TcpStream::connect(authority.as_str())
                    .await
                    .map_err(connect_err)?;
                self.exchange(io, req).await
            }
        }
    }

    async fn exchange(
        &self,
        io: impl AsyncRead + AsyncWrite + Send + Unpin + 'static,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let http_err = |source| ClientError::Http {
            endpoint: self.endpoint.clone(),
            source,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(http_err)?;
        // The connection future drives the socket; it ends with the response.
        let conn = tokio::spawn(conn);
        let response = sender.send_request(req).await.map_err(http_err)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(http_err)?
            .to_bytes();
        drop(sender);
        conn.abort();
        Ok((status, body))
    }

    /// Sends a request and returns the body of a 2xx answer; any other
    /// answer becomes [`ClientError::Api`] with the server's message.
    pub async fn call_raw(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let (status, bytes) = self.send(method, path_and_query, body).await?;
        if status.is_success() {
            return Ok(bytes);
        }
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(ErrorBody { error }) => ClientError::Api {
                status,
                code: error.code,
                message: error.message,
            },
            Err(_) => ClientError::Decode {
                status,
                detail: String::from_utf8_lossy(&bytes).into_owned(),
            },
        })
    }

    /// A typed call: `body` serialized as JSON, the answer decoded.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = body.map(|b| serde_json::to_vec(b).expect("request types serialize"));
        let bytes = self.call_raw(method, path_and_query, body).await?;
        decode(&bytes)
    }
}

/// Decodes a 2xx body.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| ClientError::Decode {
        status: StatusCode::OK,
        detail: e.to_string(),
    })
}

/// Percent-encodes one path segment (a name or `[v6]:port` target).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A target as written in paths and deregister bodies.
pub fn target(addr: SocketAddr) -> String {
    segment(&addr.to_string())
}
