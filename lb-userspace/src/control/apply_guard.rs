//! What a panic while programming the maps does: it must not end the
//! control loop.
//!
//! The reconciler builds changed Maglev tables on several threads and joins
//! them with `expect`, so a build thread's panic is raised again on the
//! control loop's thread, in the middle of [`Reconciler::apply_plan`]
//! (which writes as it goes). Any other panic inside it lands there too.
//! [`apply_plan`] catches it and turns it into an error, as a failed map
//! write is:
//!
//! 1. the change is refused (the API answers with its error, a reload is
//!    refused) and the control loop re-applies the running config, as after
//!    any failed apply;
//! 2. the reconciler's view, which the panic may have left half-updated, is
//!    first rebuilt from the maps themselves ([`Reconciler::recover`], as on
//!    a restart), so that re-apply compares against what the kernel really
//!    holds.
//!
//! The maps are only ever written in the reconciler's order, one update at
//! a time, so the data path saw a consistent state throughout: at worst
//! part of the refused change, which the re-apply takes back.
use std::{
    any::Any,
    panic::{self, AssertUnwindSafe},
};

use tracing::error;

use crate::{
    config::Config,
    state::{ApplyError, Changes, DataPlane, Plan, Reconciler},
};

#[derive(Debug, thiserror::Error)]
pub enum GuardedApplyError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(
        "programming the maps panicked ({message}); the daemon's view was rebuilt from the maps"
    )]
    Panicked { message: String },
    #[error(
        "programming the maps panicked ({message}), and rebuilding the daemon's view from the maps failed: {source}"
    )]
    Unrecovered { message: String, source: ApplyError },
}

/// [`Reconciler::apply_plan`], with a panic inside it caught (see the
/// module docs).
pub fn apply_plan<P: DataPlane>(
    state: &mut Reconciler,
    plane: &mut P,
    config: &Config,
    plan: &Plan,
) -> Result<Changes, GuardedApplyError> {
    // AssertUnwindSafe: after a panic `state` is replaced by one read from
    // the maps, so its broken invariants are never observed.
    let caught = panic::catch_unwind(AssertUnwindSafe(|| state.apply_plan(plane, config, plan)));
    let payload = match caught {
        Ok(result) => return Ok(result?),
        Err(payload) => payload,
    };
    let message = panic_message(payload.as_ref());
    error!(%message, "programming the maps panicked; rebuilding the view from the maps");
    match Reconciler::recover(plane) {
        Ok(recovered) => {
            *state = recovered;
            Err(GuardedApplyError::Panicked { message })
        }
        Err(source) => Err(GuardedApplyError::Unrecovered { message, source }),
    }
}

/// The text a panic was raised with (`panic!` and `expect` give a `&str`
/// or a `String`).
fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

#[cfg(test)]
mod tests;
