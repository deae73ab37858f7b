//! Request bodies: read within the body limit, parsed as JSON into types
//! that deny unknown fields, every failure a 400 (413 when too big) with
//! serde's message, which names the field, line and column.
use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
};
use http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest request body accepted; a register of a thousand targets fits.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Like `axum::Json`, with our error bodies and no Content-Type check (curl
/// `-d` sends form encoding by default; the route decides the format).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            // Only a body over the limit or a broken connection get here.
            let status = e.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    status,
                    "PayloadTooLarge",
                    format!("request body exceeds {MAX_BODY_BYTES} bytes"),
                )
            } else {
                ApiError::bad_request(format!("could not read the request body: {e}"))
            }
        })?;
        parse(&bytes).map(JsonBody)
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
