//! `cargo xtask soak`: builds, then runs `lb-soak` (tests/src/bin/lb-soak):
//! minutes of TCP, UDP, HTTP/1.1, HTTP/2 and WebSocket traffic through
//! `lb run` while it is reloaded, its targets cycled and the daemon
//! restarted. Not part of `cargo xtask test`, which runs a short one.
use anyhow::{Result, bail};

use crate::{
    build::{self, Profile},
    cmd::Cmd,
    project,
};

pub fn soak(minutes: u64, args: &[String]) -> Result<()> {
    if !project::is_root() {
        bail!("`cargo xtask soak` must run as root: it builds network namespaces and loads XDP");
    }
    let artifacts = build::build(Profile::Release)?;
    let bin = artifacts.bin_dir.join("lb-soak");
    if !bin.is_file() {
        bail!("{} does not exist after the build", bin.display());
    }
    Err(Cmd::new(&bin)
        .arg("--minutes")
        .arg(minutes.to_string())
        .args(args)
        .dir(project::root())
        .envs(artifacts.env())
        .exec())
}
