//! Every error the API answers with: an HTTP status and the body
//! `{"error":{"code":"...","message":"..."}}`, codes in ELB/IAM style
//! (`TargetGroupNotFound`-like codes are not distinguished: the control loop
//! reports NotFound/Invalid/Conflict/Failed, and the message names the
//! object).
use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::authorize::{AuthError, Decision, Principal};
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

    /// 401: no credentials, or credentials we do not know.
    pub fn unauthenticated(e: &AuthError) -> Self {
        let code = match e {
            AuthError::Missing => "MissingAuthenticationToken",
            AuthError::Unknown => "UnrecognizedClient",
        };
        let hint = "send `Authorization: Bearer <token>` with a token from [api] in the config, \
                    or connect to the Unix socket as root";
        Self::new(StatusCode::UNAUTHORIZED, code, format!("{e}; {hint}"))
    }

    /// 403 in IAM's words; `None` when the decision allows.
    pub fn denied(
        principal: &Principal,
        action: &str,
        resource: &str,
        decision: &Decision,
    ) -> Option<Self> {
        let why = match decision {
            Decision::Allow => return None,
            Decision::ImplicitDeny => format!("because no policy allows the {action} action"),
            Decision::ExplicitDeny { policy } => {
                format!("with an explicit deny in policy {policy}")
            }
        };
        Some(Self::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            format!(
                "User: {principal} is not authorized to perform: {action} on resource: {resource} {why}"
            ),
        ))
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
        (self.status, Json(self.body())).into_response()
    }
}
