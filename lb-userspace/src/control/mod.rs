//! The control loop: owns the running config, the target lifecycle (health,
//! draining, slow start, zones) and the data paths, and applies every change
//! in one place. Other tasks talk to it through [`ControlHandle`].
pub mod apply_guard;
pub mod command;
pub mod controller;
mod error;
pub mod lifecycle;
mod reply_alarm;
mod reports;
pub mod transitions;
pub mod verbs;
pub mod xdp;

pub use command::{Command, ControlHandle};
pub use controller::Controller;
pub use error::ControlError;
