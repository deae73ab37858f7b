//! `cargo xtask <command>`: set-up, build, lint, test, bench, demo and run for
//! the XDP load balancer. `cargo xtask help` lists the commands.
mod bench;
mod build;
mod cmd;
mod demo;
mod fuzz;
mod package;
mod project;
mod setup;
mod soak;
mod test;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, test and run the xdp-lb load balancer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the build and tests need (rust-src, bpf-linker, Debian
    /// packages, bpffs). Idempotent; fast when all is there.
    Setup,
    /// Set up, then build the eBPF object and the user-space binaries.
    Build {
        /// Debug profile (target/debug) instead of release.
        #[arg(long, conflicts_with = "dist")]
        debug: bool,
        /// Also build target/dist/lb, the binary to deploy: release plus
        /// fat LTO and one codegen unit (about a tenth less CPU per proxied
        /// request; several minutes to build).
        #[arg(long)]
        dist: bool,
    },
    /// Build the dist binary, then the Debian package
    /// target/dist/lb_<version>_amd64.deb (binary, systemd unit, default
    /// /etc/lb/lb.toml, examples, docs, dashboards, alert rules, man pages,
    /// shell completions).
    Package,
    /// rustfmt check and clippy (-D warnings) on all crates, eBPF included.
    Lint,
    /// Lint, build, then run every test (as root). Args after `--` go to
    /// `cargo test`, e.g. `cargo xtask test -- my_filter -- --nocapture`.
    Test {
        /// Skip the lint step.
        #[arg(long)]
        no_lint: bool,
        #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
        args: Vec<String>,
    },
    /// Build, then run a benchmark (results in target/bench/). Args after
    /// `--` go to lb-bench.
    Bench {
        #[arg(value_enum)]
        what: bench::Bench,
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Run each cargo-fuzz target (fuzz/) for a bounded time from its seeds
    /// (nightly; installs cargo-fuzz). Never part of `test`.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only these targets (default: all).
        targets: Vec<String>,
    },
    /// Build, then soak `lb run`: TCP, UDP, HTTP/1.1, HTTP/2 and WebSocket
    /// traffic while it is reloaded 100 times, its targets are cycled and
    /// it is restarted; prints every count and failure (must be none).
    /// Args after `--` go to lb-soak (`-- --help` lists them).
    Soak {
        /// Length of the run.
        #[arg(long, default_value_t = 5)]
        minutes: u64,
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Build, then run the demo: the load balancer in front of backends in
    /// network namespaces. Args after `--` go to lb-demo.
    Demo {
        /// Configuration, relative to the repository root.
        #[arg(long, default_value = "config/demo.toml")]
        config: PathBuf,
        /// Three balancer hosts behind an ECMP router (BGP through BIRD, dsr
        /// to three targets); one is taken away while connections stay up.
        #[arg(long, conflicts_with = "config")]
        scale_out: bool,
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Build, then run the `lb` binary with the args after `--`, e.g.
    /// `cargo xtask run -- run --config config/demo.toml`.
    Run {
        #[arg(last = true, value_name = "LB_ARGS")]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain without anyhow's backtrace (RUST_BACKTRACE is
            // often set here and would bury the message).
            eprintln!("xtask error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Setup => {
            setup::setup()?;
            setup::cargo_fuzz()
        }
        Command::Build { debug, dist } => {
            let profile = if debug {
                build::Profile::Debug
            } else {
                build::Profile::Release
            };
            let artifacts = build::build(profile)?;
            if dist {
                build::build_dist(&artifacts)?;
            }
            Ok(())
        }
        Command::Package => {
            let artifacts = build::build(build::Profile::Release)?;
            let lb = build::build_dist(&artifacts)?;
            package::package(&lb, &project::target_dir().join("dist")).map(drop)
        }
        Command::Lint => test::lint(&setup::setup()?),
        Command::Test { no_lint, args } => test::test(!no_lint, &args),
        Command::Bench { what, args } => bench::bench(what, &args),
        Command::Fuzz { seconds, targets } => fuzz::fuzz(seconds, &targets),
        Command::Soak { minutes, args } => soak::soak(minutes, &args),
        Command::Demo {
            config,
            scale_out,
            args,
        } => demo::demo((!scale_out).then_some(config.as_path()), &args),
        Command::Run { args } => demo::run(&args),
    }
}
