//! The L4 listeners the daemon serves itself: a TCP proxy for `tcp` and
//! `tls` listeners (an accept loop, [`accept`], and a task per connection,
//! [`connection`]) and a UDP relay for `udp` listeners ([`udp`]). `tls`
//! listeners always run here; `tcp` and `udp` ones when the XDP path is not
//! there (`dataplane = "userspace"`, or `auto` after a failed attach).
//!
//! Targets are chosen by the weighted round robin of
//! [`crate::round_robin`] over the [`crate::routable`] view; the next ones
//! are tried when a connect fails. The supervisor of the userspace
//! listeners starts, updates and stops these; nothing here knows about the
//! others.
pub mod accept;
mod connection;
mod context;
mod counted;
pub mod metrics;
pub mod proxy_v2;
mod route;
pub mod udp;

pub use connection::{CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT, MAX_ATTEMPTS};
pub use context::ListenerCtx;
pub use metrics::L4Metrics;
pub use route::L4Route;
