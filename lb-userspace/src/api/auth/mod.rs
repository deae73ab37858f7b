//! IAM-style access control of the management API.
//!
//! A request is first authenticated: uid 0 on the Unix socket is
//! [`Principal::Root`] (the server checks `SO_PEERCRED`); anyone else sends
//! `Authorization: Bearer <token>` ([`bearer_token`]) and
//! [`Authorizer::authenticate`] finds the `[[api.token]]` whose SHA-256 it
//! is, or answers 401 ([`AuthError::refusal`]). Then
//! [`Authorizer::authorize`] evaluates the token's policies for the
//! request's [`Action`] and resource ([`resource`]) as IAM does:
//!
//! 1. default deny;
//! 2. an Allow statement whose action and resource patterns match allows;
//! 3. a matching Deny statement denies, whatever allows.
//!
//! Patterns use `*` (any run, also empty) and `?` (one character).
//! Resources match case-sensitively; actions case-insensitively (IAM
//! action names are case-insensitive). A denial becomes a 403 with AWS's
//! message ([`Decision::refusal`]).
mod authorizer;
mod response;

pub use crate::iam::{Action, resource};
pub use authorizer::{
    AuthError, Authorizer, Decision, Principal, basic_password, bearer_token, generate_token,
    token_digest,
};
pub use response::Refusal;

#[cfg(test)]
mod tests;
