//! Request bodies, looked at only once the request is authenticated and
//! authorised (the access check runs before any handler): they must say
//! they are JSON (415 otherwise), a `Content-Length` over the limit is
//! refused before a byte of it is read (413), the rest is read within the
//! limit and [`BODY_TIMEOUT`] (413, 408) and parsed as JSON into types that
//! deny unknown fields, every failure a 400 with serde's message, which
//! names the field, line and column. A body left unread closes the
//! connection after the answer (hyper does not reuse it).
use std::time::Duration;

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
};
use http::{
    HeaderMap, StatusCode,
    header::{CONTENT_LENGTH, CONTENT_TYPE},
};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest request body accepted; a register of a thousand targets fits.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// How long a request body may take to arrive whole after its head: 256
/// KiB at 26 KB/s, far slower than any management link, far shorter than a
/// client that stops sending should hold its connection.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Like `axum::Json`: the body must be declared JSON, with our error
/// bodies, the size checked up front and a time limit.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        declared_json(req.headers())?;
        declared_length(req.headers())?;
        let read = tokio::time::timeout(BODY_TIMEOUT, Bytes::from_request(req, state));
        let bytes = read
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "RequestTimeout",
                    format!("the request body did not arrive within {BODY_TIMEOUT:?}"),
                )
            })?
            .map_err(|e| {
                // Only a body over the limit or a broken connection get here.
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large()
                } else {
                    ApiError::bad_request(format!("could not read the request body: {e}"))
                }
            })?;
        parse(&bytes).map(JsonBody)
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PayloadTooLarge",
        format!("request body exceeds {MAX_BODY_BYTES} bytes"),
    )
}

/// 415 unless `Content-Type` is `application/json` or `application/*+json`
/// (parameters such as `charset` allowed): a form-encoded body (curl's
/// `-d` without `-H`) is refused rather than guessed at.
pub fn declared_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let essence = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let json = essence.as_deref().is_some_and(|e| {
        e == "application/json" || (e.starts_with("application/") && e.ends_with("+json"))
    });
    if json {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaType",
        format!(
            "the request body must be JSON, sent with Content-Type: application/json (got {})",
            essence.map_or_else(|| "none".to_owned(), |e| format!("{e:?}"))
        ),
    ))
}

/// 413 for a `Content-Length` over [`MAX_BODY_BYTES`], before reading any
/// of it (hyper answers a malformed one with 400 itself).
pub fn declared_length(headers: &HeaderMap) -> Result<(), ApiError> {
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        Some(n) if n > MAX_BODY_BYTES as u64 => Err(too_large()),
        _ => Ok(()),
    }
}

/// Parses a JSON body; an empty body is reported as such, not as EOF.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("a JSON request body is required"));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON request body: {e}")))
}
