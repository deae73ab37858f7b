//! The management API.
//!
//! - [`auth`]: IAM-style access control: tokens, policies, decisions and
//!   the 401/403 bodies.
pub mod auth;
