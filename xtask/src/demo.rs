//! `cargo xtask demo` and `cargo xtask run`.
use std::path::Path;

use anyhow::{Result, bail};

use crate::{
    build::{self, Profile},
    cmd::Cmd,
    project,
};

/// Builds, then runs lb-demo (tests crate) against the demo configuration,
/// or without one its scale-out demo (`lb-demo --scale-out`: every host's
/// config is generated).
pub fn demo(config: Option<&Path>, args: &[String]) -> Result<()> {
    let artifacts = build::build(Profile::Release)?;
    let config = config.map(|c| project::root().join(c));
    if let Some(config) = config.as_ref().filter(|c| !c.is_file()) {
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
    let config_args: Vec<std::ffi::OsString> = match &config {
        Some(c) => vec!["--config".into(), c.clone().into_os_string()],
        None => vec!["--scale-out".into()],
    };
    Err(Cmd::new(&bin)
        .arg("--lb")
        .arg(&artifacts.lb)
        .args(config_args)
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
