//! The seam between the API server and the authorizer that holds the tokens
//! and policies (`[api]` in the config). The server only needs two
//! questions answered: who does this bearer token belong to, and may that
//! principal perform this action on this resource.
//!
//! `Principal` and `Decision` here stand in until the authorizer module
//! (api/auth) lands; then they become re-exports of its types and
//! `Authorize` is implemented for its `Authorizer`.
use std::fmt;

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A uid-0 peer on the Unix socket: may do everything.
    Root,
    /// The holder of a named API token.
    Token(String),
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Root => f.write_str("root"),
            Self::Token(name) => write!(f, "token/{name}"),
        }
    }
}

/// The outcome of evaluating the policies for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No statement allows it (default deny).
    ImplicitDeny,
    /// A `Deny` statement matched; it wins over any `Allow`.
    ExplicitDeny {
        /// The policy holding the matching statement.
        policy: String,
    },
}

/// Why a bearer token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the request carries no bearer token")]
    Missing,
    #[error("the bearer token is not valid")]
    Unknown,
}

/// Tokens and policies, as the server asks about them.
pub trait Authorize: Send + Sync + 'static {
    /// The principal a bearer token stands for.
    fn authenticate(&self, bearer: &str) -> Result<Principal, AuthError>;
    /// Evaluates the policies of `principal` (Root is always allowed).
    fn authorize(&self, principal: &Principal, action: &str, resource: &str) -> Decision;
}
