//! HTTP/1.1 toward targets, written for a proxy: the request that leases a
//! connection drives it itself, with no task, channel or wake-up between
//! the request and the socket.
//!
//! hyper's client runs every connection in a task of its own and hands
//! each request and response across channels; that took about 40% of the
//! proxy's user-space instructions per request (callgrind), more than the
//! whole client side of HAProxy.
//!
//! - [`request`]: the head written out, and the body framed by what hyper
//!   read of the client's (content length or chunked), streamed.
//! - [`response`]: the head parsed with `httparse`, and how its body ends;
//!   [`chunked`] decodes that coding.
//! - [`conn`]: the connection and one exchange on it; [`body`]: the
//!   response body, which hands the connection back at its end.
mod body;
// Crate-wide for the fuzz targets (crate::fuzzing) only.
pub(crate) mod chunked;
mod conn;
mod request;
pub(crate) mod response;
mod stream;

pub use body::TargetBody;
pub use conn::{BodyProgress, ExchangeError, TargetConn};
pub use request::{BodySender, encode_head, frame, is_idempotent};
pub use response::Head;
pub use stream::Stream;
