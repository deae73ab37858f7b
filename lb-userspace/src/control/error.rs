//! Why the control loop refused or failed a command. Each variant maps to
//! one HTTP status of the management API, and keeps what the API's answer
//! needs: the key paths of validation errors, the path of a config file
//! that could not be read.
use std::path::PathBuf;

use crate::config::ValidationErrors;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No such listener, target group or target (404).
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be carried out as asked (400): no targets given,
    /// a `[daemon]` key that needs a restart, a file that does not parse, a
    /// listener that cannot bind; the running config stays.
    #[error("{0}")]
    BadRequest(String),
    /// The config the change would produce is invalid (400): every error
    /// with its key path; the running config stays.
    #[error("{0}")]
    Invalid(ValidationErrors),
    /// Refused by deletion protection or a state conflict (409).
    #[error("{0}")]
    Conflict(String),
    /// The config file could not be read (500): the file, not the request,
    /// is at fault; the running config stays.
    #[error("failed to read config {}: {message}", path.display())]
    Unreadable { path: PathBuf, message: String },
    /// Applying failed half-way, or the loop is gone (500).
    #[error("{0}")]
    Failed(String),
}
