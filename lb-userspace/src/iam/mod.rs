//! IAM's vocabulary, shared by the config's validation of `[[api.policy]]`
//! and the management API's authorizer (`api::auth`): the actions
//! (`lb:RegisterTargets`, ...) and the resources (`listener/NAME`,
//! `target-group/NAME`, `*`) that policies name.
mod action;
pub mod resource;

pub use action::Action;
