//! `cargo xtask demo` and `cargo xtask run`.
use std::path::Path;

use anyhow::{Result, bail};

use crate::{
    build::{self, Profile},
    cmd::Cmd,
    project,
};

/// Builds, then runs lb-demo (tests crate) against the demo configuration.
pub fn demo(config: &Path, args: &[String]) -> Result<()> {
    let artifacts = build::build(Profile::Release)?;
    let config = project::root().join(config);
    if !config.is_file() {
        bail!("demo configuration {} does not exist", config.display());
    }
    let bin = artifacts.bin_dir.join("lb-demo");
    if !bin.is_file() {
        bail!(
            "{} does not exist: the demo binary (package lb-tests, bin `lb-demo`) \
             has not been written yet",
            bin.display()
        );
    }
    Err(Cmd::new(&bin)
        .arg("--lb")
        .arg(&artifacts.lb)
        .arg("--config")
        .arg(&config)
        .args(args)
        .dir(project::root())
        .envs(artifacts.env())
        .exec())
}

/// Builds, then replaces this process with `lb <args>` (in the caller's
/// directory, so relative paths in the args mean what they say).
pub fn run(args: &[String]) -> Result<()> {
    let artifacts = build::build(Profile::Release)?;
    Err(Cmd::new(&artifacts.lb)
        .args(args)
        .envs(artifacts.env())
        .exec())
}
