//! The bodies of 401 and 403 answers, shaped like AWS's:
//! `{"error": {"code": "AccessDenied", "message": "User: token/ci is not
//! authorized to perform: ..."}}`.
use http::StatusCode;
use serde_json::json;

use super::{Action, AuthError, Decision, Principal};

/// A refusal: status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    /// AWS's error code: `MissingAuthenticationToken`,
    /// `UnrecognizedClientException`, `AccessDenied`.
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    /// `{"error": {"code": ..., "message": ...}}`.
    pub fn body(&self) -> String {
        json!({ "error": { "code": self.code, "message": self.message } }).to_string()
    }

    /// 401s also carry `WWW-Authenticate: Bearer` (RFC 6750).
    pub fn www_authenticate(&self) -> Option<&'static str> {
        (self.status == StatusCode::UNAUTHORIZED).then_some("Bearer")
    }
}

impl AuthError {
    /// The 401 answer.
    pub fn refusal(&self) -> Refusal {
        let (code, message) = match self {
            AuthError::MissingToken => (
                "MissingAuthenticationToken",
                "Missing authentication token: send `Authorization: Bearer <token>`",
            ),
            AuthError::InvalidToken => (
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ),
        };
        Refusal {
            status: StatusCode::UNAUTHORIZED,
            code,
            message: message.into(),
        }
    }
}

impl Decision {
    /// The 403 answer for a denial; `None` for `Allow`.
    pub fn refusal(
        &self,
        principal: &Principal,
        action: Action,
        resource: &str,
    ) -> Option<Refusal> {
        let head = format!(
            "User: {principal} is not authorized to perform: {action} on resource: {resource}"
        );
        let message = match self {
            Decision::Allow => return None,
            Decision::ImplicitDeny => {
                format!("{head} because no identity-based policy allows the {action} action")
            }
            Decision::ExplicitDeny { policy, sid } => {
                let sid = sid
                    .as_deref()
                    .map(|s| format!(" (statement {s})"))
                    .unwrap_or_default();
                format!("{head} with an explicit deny in an identity-based policy: {policy}{sid}")
            }
        };
        Some(Refusal {
            status: StatusCode::FORBIDDEN,
            code: "AccessDenied",
            message,
        })
    }
}
