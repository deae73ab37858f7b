//! `http` and `https` listeners: ALB's layer-7 behaviour in the daemon.
//!
//! - [`server`]: accept loop, TLS, HTTP/1.1 and HTTP/2 toward clients;
//!   [`serve`] is the entry point. [`idle`]: the client idle timeout;
//!   [`h2_flood`]: abusive HTTP/2 frame rates.
//! - [`handler`]: one request: [`limits`], [`codings`], [`host`],
//!   [`path`], [`rules`] (with [`crate::wildcard`]
//!   patterns), then an action: forward (one exchange with a target,
//!   [`exchange`]) or one of [`actions`].
//! - [`exchange`] with [`headers`]: proxy semantics, and [`deadline`]: the
//!   response timeout; [`pool`] with [`balance`]: keep-alive connections to
//!   targets and target choice, one pool per group kept across reloads by
//!   [`pools`]; [`upstream`]: HTTP/1.1 on those
//!   connections.
//! - [`body`]: the response body that counts bytes and closes the request's
//!   books; [`access_log`] and [`metrics`]: what it writes.
//! - [`listener`]: a listener compiled from the config.
pub mod access_log;
pub mod actions;
pub mod balance;
pub mod body;
pub mod codings;
pub mod conn_info;
pub mod deadline;
pub mod exchange;
pub mod h2_flood;
pub mod handler;
pub mod headers;
pub mod host;
pub mod idle;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod path;
pub mod pool;
pub mod pools;
pub mod rules;
pub mod server;
mod tls_names;
// Crate-wide for the fuzz targets (crate::fuzzing) only.
pub(crate) mod upstream;

pub use listener::{HttpListener, HttpListenerError};
pub use metrics::HttpMetrics;
pub use pools::Pools;
pub use server::serve;
