//! HTTP/1.1 serving for the operator endpoints (the management API and the
//! Prometheus endpoint), bounded so that no client can hold them:
//!
//! - [`capped`]: a cap on concurrent connections per listener.
//! - [`serve`]: each connection with a time limit on request heads (also
//!   the idle timeout of a kept-alive connection).
//! - [`write_deadline`]: a time limit on writes that make no progress, so a
//!   client that asks and never reads the answer gives its slot back.
//!
//! Lower than both users: it knows nothing of the API or of metrics.
pub mod capped;
pub mod serve;
pub mod write_deadline;

pub use capped::{Capped, MAX_CONNECTIONS};
pub use serve::{HEAD_TIMEOUT, Limits, serve};
pub use write_deadline::{WRITE_TIMEOUT, WriteDeadline};
