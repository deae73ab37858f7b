//! Every error the API answers with: an HTTP status and the body
//! `{"error":{"code":"...","message":"..."}}`, codes in ELB/IAM style
//! (`TargetGroupNotFound`-like codes are not distinguished: the control loop
//! reports NotFound/Invalid/Conflict/Failed, and the message names the
//! object). A config that fails validation adds `errors`, each with its key
//! path; a config file that cannot be read adds `file`.
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
    /// Validation errors of the config a change would produce.
    pub errors: Vec<FieldError>,
    /// The config file that could not be read.
    pub file: Option<String>,
}

/// The JSON body of an error, shared with the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    /// For people: every validation error on a line of its own.
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// One validation error: the key path (`listener[1].port`) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub path: String,
    pub reason: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            errors: Vec::new(),
            file: None,
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
                errors: self.errors.clone(),
                file: self.file.clone(),
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
            ControlError::BadRequest(_) | ControlError::Invalid(_) => {
                (StatusCode::BAD_REQUEST, "ValidationError")
            }
            ControlError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            ControlError::Unreadable { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "ConfigUnreadable")
            }
            ControlError::Failed(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure"),
        };
        let mut api = Self::new(status, code, e.to_string());
        match e {
            ControlError::Invalid(errors) => {
                api.errors = errors
                    .iter()
                    .map(|v| FieldError {
                        path: v.path.clone(),
                        reason: v.reason.clone(),
                    })
                    .collect();
            }
            ControlError::Unreadable { path, .. } => api.file = Some(path.display().to_string()),
            _ => {}
        }
        api
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
