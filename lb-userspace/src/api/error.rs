//! Every error the API answers with: an HTTP status and the body
//! `{"error":{"code":"...","message":"..."}}`, codes in ELB/IAM style
//! (`TargetGroupNotFound`-like codes are not distinguished: the control loop
//! reports NotFound/Invalid/Conflict/Failed, and the message names the
//! object).
use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header::WWW_AUTHENTICATE};
use serde::{Deserialize, Serialize};

use super::auth::Refusal;
use crate::control::ControlError;

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

/// The JSON body of an error, shared with the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationError", message)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.clone(),
                message: self.message.clone(),
            },
        }
    }
}

/// 401 and 403 from the authorizer, with its codes and AWS's messages.
impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        Self::new(r.status, r.code, r.message)
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let (status, code) = match &e {
            ControlError::NotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
            ControlError::Invalid(_) => (StatusCode::BAD_REQUEST, "ValidationError"),
            ControlError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            ControlError::Failed(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure"),
        };
        Self::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750: a 401 names the scheme it wants.
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
