//! `cargo xtask lint` and `cargo xtask test`.
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{
    build::{self, Artifacts, HOST_PACKAGES, Profile},
    cmd::Cmd,
    package, project,
    setup::{self, Toolchain},
};

/// rustfmt, clippy on the host crates, the benchmarks and the eBPF crate.
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
        .args(["clippy", "--release", "-p", build::BENCH_PACKAGE])
        .args(["--all-targets", "--", "-D", "warnings"])
        .dir(project::root())
        .envs(env.iter().cloned())
        .run()
        .context("clippy (benchmarks)")?;
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
    // The package tests install a package of the release build (the dist
    // build takes minutes; the files around the binary are the same).
    let deb = package::package(&artifacts.lb, &artifacts.bin_dir.join("deb"))?;
    let mut total = Totals::default();
    let ok = Cmd::new("cargo")
        .args(["test", "--release", "--no-fail-fast"])
        .args(HOST_PACKAGES)
        .args(cargo_test_args)
        .dir(project::root())
        .envs(artifacts.env())
        .env("LB_DEB", &deb)
        .run_watching(|line| total.add(line))?;
    // One closing line over every test binary (cargo prints one per binary,
    // the last usually being an empty doc-test run).
    println!("{} passed, {} failed", total.passed, total.failed);
    if !ok || total.failed > 0 {
        bail!("tests failed ({:.1?})", start.elapsed());
    }
    if total.passed == 0 {
        bail!("no test ran: check the filter");
    }
    eprintln!("test: all passed ({:.1?})", start.elapsed());
    Ok(())
}

/// Sums cargo's `test result: ok. N passed; M failed; ...` lines.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
}

impl Totals {
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match kind {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn sums_cargo_result_lines() {
        let mut t = Totals::default();
        t.add("test result: ok. 56 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.16s");
        t.add("test result: FAILED. 4 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out");
        t.add("running 3 tests");
        assert_eq!((t.passed, t.failed), (60, 2));
    }
}
