//! `cargo xtask bench`: builds and runs the lb-bench binary (bench/).
use std::fs;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

use crate::{
    build::{self, Profile},
    cmd::Cmd,
    project,
};

#[derive(Clone, Copy, ValueEnum)]
pub enum Bench {
    /// The XDP program alone, on crafted packets (BPF_PROG_TEST_RUN).
    Xdp,
    /// End to end through veths and namespaces, client to backends.
    E2e,
    /// Control plane: applying large configs to the maps, health checking.
    Control,
    /// HTTP/HTTPS listeners next to HAProxy: requests/s, p99, handshakes/s.
    Http,
    /// New TCP connections per second through the XDP path, next to
    /// nftables DNAT and no NAT.
    ConnRate,
}

impl Bench {
    fn name(self) -> &'static str {
        match self {
            Bench::Xdp => "xdp",
            Bench::E2e => "e2e",
            Bench::Control => "control",
            Bench::Http => "http",
            Bench::ConnRate => "conn-rate",
        }
    }

    /// Whether it runs the `lb` binary (the others measure the eBPF
    /// program or the library linked into lb-bench).
    fn runs_lb(self) -> bool {
        matches!(self, Bench::E2e | Bench::Http | Bench::ConnRate)
    }
}

pub fn bench(what: Bench, args: &[String]) -> Result<()> {
    let artifacts = build::build(Profile::Release)?;
    // Measure the binary operators deploy, not the test build; it takes
    // minutes to build, so only for the benchmarks that run it.
    let lb = if what.runs_lb() {
        build::build_dist(&artifacts)?
    } else {
        artifacts.lb.clone()
    };
    let out = project::target_dir().join("bench");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let bin = build::build_bench(&artifacts, Profile::Release)?;
    if !bin.is_file() {
        bail!("{} does not exist after building lb-bench", bin.display());
    }
    Err(Cmd::new(&bin)
        .arg(what.name())
        .args(args)
        .dir(project::root())
        .envs(artifacts.env())
        .env("LB_BIN", &lb)
        .env("LB_BENCH_DIR", &out)
        .exec())
}
