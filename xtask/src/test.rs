//! `cargo xtask lint` and `cargo xtask test`.
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{
    build::{self, Artifacts, HOST_PACKAGES, Profile},
    cmd::Cmd,
    project,
    setup::{self, Toolchain},
};

/// rustfmt, clippy on the host crates, clippy on the eBPF crate.
pub fn lint(tc: &Toolchain) -> Result<()> {
    let start = Instant::now();
    // Same env as the build so build scripts and fingerprints are shared.
    let env = Artifacts::of(Profile::Release).env();
    Cmd::new("cargo")
        .args(["fmt", "--all", "--", "--check"])
        .dir(project::root())
        .run()
        .context("formatting check failed: run `cargo fmt --all`")?;
    Cmd::new("cargo")
        .args(["clippy", "--release"])
        .args(HOST_PACKAGES)
        .args(["--all-targets", "--", "-D", "warnings"])
        .dir(project::root())
        .envs(env.iter().cloned())
        .run()
        .context("clippy (host crates)")?;
    Cmd::new("cargo")
        .args(["+nightly", "clippy", "--release", "--", "-D", "warnings"])
        .dir(project::root().join("lb-ebpf"))
        .envs(env)
        .envs(build::ebpf_env(tc))
        .run()
        .context("clippy (lb-ebpf)")?;
    eprintln!("lint: clean ({:.1?})", start.elapsed());
    Ok(())
}

pub fn test(lint_first: bool, cargo_test_args: &[String]) -> Result<()> {
    if !project::is_root() {
        bail!(
            "`cargo xtask test` MUST RUN AS ROOT: the tests load XDP programs, create network \
             namespaces and mount bpffs. Nothing was run."
        );
    }
    let start = Instant::now();
    let tc = setup::setup()?;
    if lint_first {
        lint(&tc)?;
    }
    let artifacts = build::build_with(&tc, Profile::Release)?;
    Cmd::new("cargo")
        .args(["test", "--release"])
        .args(HOST_PACKAGES)
        .args(cargo_test_args)
        .dir(project::root())
        .envs(artifacts.env())
        .run()
        .context("tests failed")?;
    eprintln!("test: all passed ({:.1?})", start.elapsed());
    Ok(())
}
