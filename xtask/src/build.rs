//! `cargo xtask build`: the eBPF object (nightly, bpf-linker) and then the
//! user-space binaries that embed it.
use std::{ffi::OsString, path::PathBuf, time::Instant};

use anyhow::{Context, Result};

use crate::{cmd::Cmd, project, setup::Toolchain};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Release,
    Debug,
}

impl Profile {
    fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }

    /// `--release` or nothing.
    fn flag(self) -> Option<&'static str> {
        (self == Profile::Release).then_some("--release")
    }
}

/// What a build produces.
pub struct Artifacts {
    /// The eBPF object (`target/bpfel-unknown-none/<profile>/lb-ebpf`).
    pub object: PathBuf,
    /// The load balancer (`target/<profile>/lb`).
    pub lb: PathBuf,
    /// Where the workspace's binaries land (`target/<profile>`): lb-demo,
    /// lb-bench, ...
    pub bin_dir: PathBuf,
}

impl Artifacts {
    pub fn of(profile: Profile) -> Self {
        let target = project::target_dir();
        let bin_dir = target.join(profile.dir());
        Self {
            object: target
                .join("bpfel-unknown-none")
                .join(profile.dir())
                .join("lb-ebpf"),
            lb: bin_dir.join("lb"),
            bin_dir,
        }
    }

    /// Environment for the tests, benchmarks and demo (and for the host
    /// build, where lb-userspace/build.rs embeds LB_EBPF_OBJECT).
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("LB_EBPF_OBJECT", self.object.clone().into()),
            ("LB_BIN", self.lb.clone().into()),
            ("LB_TEST_BIN_DIR", self.bin_dir.clone().into()),
            // Debian's python3 has python3-scapy; a python3 earlier in PATH
            // (pyenv) may not.
            ("LB_PYTHON", "/usr/bin/python3".into()),
        ]
    }
}

/// The cargo arguments shared by `build`, `lint` and `test` for the host
/// crates. Keep these identical so `test` reuses the `build` artifacts (a
/// different package set can change feature unification and rebuild). The
/// benchmarks (lb-bench) are left out: a test build does not compile them;
/// [`build_bench`] does, for `cargo xtask bench`, and `lint` checks them.
/// So are the fuzz targets (lb-fuzz: nightly and libFuzzer, `cargo xtask
/// fuzz`), whose bodies lb-userspace's unit tests run over their seeds.
pub const HOST_PACKAGES: &[&str] = &[
    "--workspace",
    "--exclude",
    "lb-ebpf",
    "--exclude",
    BENCH_PACKAGE,
    "--exclude",
    FUZZ_PACKAGE,
];

/// The cargo-fuzz targets' package (fuzz/).
pub const FUZZ_PACKAGE: &str = "lb-fuzz";

/// The benchmarks' package, binary `lb-bench`.
pub const BENCH_PACKAGE: &str = "lb-bench";

/// Builds `lb-bench` next to the other binaries of `artifacts` (built with
/// `profile`).
pub fn build_bench(artifacts: &Artifacts, profile: Profile) -> Result<PathBuf> {
    Cmd::new("cargo")
        .arg("build")
        .args(profile.flag())
        .args(["-p", BENCH_PACKAGE])
        .dir(project::root())
        .envs(artifacts.env())
        .run()
        .context("building the benchmarks (lb-bench)")?;
    Ok(artifacts.bin_dir.join("lb-bench"))
}

/// Environment for cargo commands run in lb-ebpf/.
pub fn ebpf_env(tc: &Toolchain) -> [(&'static str, OsString); 1] {
    [(
        "CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER",
        tc.bpf_linker.clone().into(),
    )]
}

/// Builds `target/dist/lb`, the load balancer to deploy, with the `dist`
/// profile (fat LTO, one codegen unit), embedding the release eBPF object
/// of `artifacts`. Minutes from scratch, which is why tests use release.
pub fn build_dist(artifacts: &Artifacts) -> Result<PathBuf> {
    let start = Instant::now();
    Cmd::new("cargo")
        .args([
            "build",
            "--profile",
            "dist",
            "-p",
            "lb-userspace",
            "--bin",
            "lb",
        ])
        .dir(project::root())
        .envs(artifacts.env())
        .run()
        .context("building the dist profile of lb")?;
    let lb = project::target_dir().join("dist").join("lb");
    eprintln!(
        "build: dist done ({:.1?})\n  lb (dist):   {}",
        start.elapsed(),
        lb.display()
    );
    Ok(lb)
}

/// Runs setup, then builds.
pub fn build(profile: Profile) -> Result<Artifacts> {
    let tc = crate::setup::setup()?;
    build_with(&tc, profile)
}

/// Builds with a toolchain from an earlier setup.
pub fn build_with(tc: &Toolchain, profile: Profile) -> Result<Artifacts> {
    let start = Instant::now();
    let artifacts = Artifacts::of(profile);

    Cmd::new("cargo")
        .args(["+nightly", "build"])
        .args(profile.flag())
        .dir(project::root().join("lb-ebpf"))
        .envs(ebpf_env(tc))
        .run()
        .context("building the eBPF program (lb-ebpf)")?;
    // The balancer and, beside it, the target-side decapsulation program
    // and the dsr health probes' encapsulation (lb-userspace/build.rs
    // embeds all three).
    for object in [
        artifacts.object.clone(),
        artifacts.object.with_file_name("lb-decap"),
        artifacts.object.with_file_name("lb-probe"),
    ] {
        if !object.is_file() {
            anyhow::bail!(
                "the eBPF build succeeded but {} is not there",
                object.display()
            );
        }
    }

    Cmd::new("cargo")
        .arg("build")
        .args(profile.flag())
        .args(HOST_PACKAGES)
        .arg("--bins")
        .dir(project::root())
        .envs(artifacts.env())
        .run()
        .context("building the user-space binaries")?;

    eprintln!(
        "build: done ({:.1?})\n  eBPF object: {}\n  lb:          {}\n  binaries in: {}",
        start.elapsed(),
        artifacts.object.display(),
        artifacts.lb.display(),
        artifacts.bin_dir.display()
    );
    Ok(artifacts)
}
