//! The management API: HTTP + JSON on a Unix socket (and optionally TCP),
//! in ELB vocabulary, with IAM-style access control.
//!
//! - [`routes`]: the route table (method, path, IAM action, resource) that
//!   both the router and the OpenAPI test read, and the handlers.
//! - [`access`]: who is asking (Unix peer uid or bearer token) and whether
//!   the policies allow the route's action on its resource.
//! - [`authorize`]: the seam to the authorizer (tokens, policies).
//! - [`error`]: the JSON error bodies and their HTTP statuses.
//! - [`body`]: the JSON request-body extractor (size-bounded, 400 on junk).
//! - [`listener`]: the cap on concurrent connections.
//! - [`server`]: binding the socket and the TCP listener, shutdown.
//! - [`client`]: the HTTP client the `lb` subcommands use.
//! - [`cli`]: those subcommands and their tables.
pub mod access;
pub mod authorize;
pub mod body;
pub mod cli;
pub mod client;
pub mod error;
pub mod listener;
pub mod routes;
pub mod server;

#[cfg(test)]
mod tests;

pub use server::{ApiServer, Endpoints, serve};
