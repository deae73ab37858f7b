//! The management API: HTTP + JSON on a Unix socket (and optionally TCP),
//! in ELB vocabulary, with IAM-style access control.
//!
//! - [`table`]: the route table (method, path, IAM action, resource) that
//!   the router, the access check and the OpenAPI test read.
//! - [`routes`]: the router and the handlers.
//! - [`auth`]: IAM-style access control: tokens, policies, decisions and
//!   the 401/403 bodies.
//! - [`access`]: the check in front of every route: who is asking (Unix
//!   peer uid or bearer token) and whether [`auth`] allows it.
//! - [`error`]: the JSON error bodies and their HTTP statuses.
//! - [`status_page`] and [`status_html`]: the optional status page
//!   (`GET /status`): what it reads and who may, and its HTML.
//! - [`body`]: the JSON request-body extractor (size-bounded, 400 on junk).
//! - [`server`]: binding the socket and the TCP listener, each served by
//!   [`crate::admin_http`] (connection cap, head, idle and write timeouts),
//!   shutdown.
//! - [`client`]: the HTTP client the `lb` subcommands use.
//! - [`cli`]: those subcommands and their tables.
pub mod access;
pub mod auth;
pub mod body;
pub mod cli;
pub mod client;
pub mod error;
pub mod routes;
pub mod server;
pub mod status_html;
pub mod status_page;
pub mod table;

#[cfg(test)]
mod status_tests;
#[cfg(test)]
mod tests;

pub use server::{ApiServer, Endpoints, serve};
