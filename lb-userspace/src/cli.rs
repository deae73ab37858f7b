//! Command-line interface: argument types and one function per subcommand.
//! `main` only parses, sets up logging and calls [`dispatch`].

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::anyhow;
use clap::{Args, Parser, Subcommand};

use crate::{
    bpf::stats::Snapshot,
    config::{Config, ConfigError},
    daemon,
    error_chain::ErrorChain,
    net,
};

#[derive(Debug, Parser)]
#[command(name = "lb", version, about = "XDP layer-4 load balancer")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config file and list every problem with its key path.
    Check(ConfigArgs),
    /// Load and attach the XDP program, program its maps from the config and
    /// keep them in step (SIGHUP reloads).
    Run(ConfigArgs),
    /// Detach the program and remove everything pinned under pin_dir.
    Down(ConfigArgs),
    /// Print the per-VIP, per-target and global counters from the pinned maps.
    Stats(ConfigArgs),
    /// This host as a target of balancers in dsr mode: decapsulate their
    /// IPIP / IP6IP6 packets for the VIPs it serves.
    #[command(subcommand)]
    Target(crate::target::cli::TargetCommand),
    /// API tokens: make a new secret, or the digest a config stores.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Subcommands on the running daemon's management API.
    #[command(flatten)]
    Api(crate::api::cli::ApiCommand),
    /// Write the man pages and shell completions of this binary under
    /// `--out-dir` (for packagers: `cargo xtask package`).
    #[command(hide = true)]
    GenerateDocs {
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new random secret and its SHA-256 for `[[api.token]] sha256`.
    Generate,
    /// Print the SHA-256 of a secret read from standard input (one line).
    Hash,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The TOML config (see docs/config.md).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
}

/// Runs a parsed command line.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Token(TokenCommand::Generate) => {
            let secret = crate::api::auth::generate_token()?;
            println!("secret: {secret}");
            println!("sha256: {}", crate::api::auth::token_digest(&secret));
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(TokenCommand::Hash) => {
            let mut line = String::new();
            io::stdin().read_line(&mut line)?;
            let secret = line.trim_end_matches(['\r', '\n']);
            if secret.is_empty() {
                return Err(anyhow!("no secret on standard input"));
            }
            println!("{}", crate::api::auth::token_digest(secret));
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => {
            let ok = check(&args.config, &mut io::stdout(), &mut io::stderr())?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Run(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime
                .block_on(daemon::run(&args.config))
                .map_err(|e| anyhow!("{}", ErrorChain(&e)))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Down(args) => {
            let done = daemon::down(&args.config).map_err(|e| anyhow!("{}", ErrorChain(&e)))?;
            if done.is_empty() {
                println!("nothing pinned: already down");
            }
            for line in done {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats(args) => {
            let snap = daemon::stats(&args.config).map_err(|e| anyhow!("{}", ErrorChain(&e)))?;
            print_stats(&snap, &mut io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Target(cmd) => {
            // Each error's message already carries its cause.
            crate::target::cli::dispatch(&cmd, &mut io::stdout()).map_err(|e| anyhow!("{e}"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Api(cmd) => crate::api::cli::dispatch(&cmd),
        Command::GenerateDocs { out_dir } => {
            for path in crate::manual::generate(&out_dir)? {
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `lb check`: a summary on `out` when the file is valid, else every problem
/// on `err`, one per line (a TOML syntax error comes with toml's excerpt of
/// the offending line). Returns whether the file is valid.
pub fn check(path: &Path, out: &mut impl Write, err: &mut impl Write) -> io::Result<bool> {
    match Config::load(path) {
        Ok(config) => {
            writeln!(out, "config OK: {}", config.summary())?;
            Ok(true)
        }
        Err(ConfigError::Invalid { errors, .. }) => {
            for e in errors.iter() {
                writeln!(err, "{e}")?;
            }
            Ok(false)
        }
        Err(ConfigError::Read { path, source }) => {
            writeln!(err, "{}: {source}", path.display())?;
            Ok(false)
        }
        Err(ConfigError::Parse { path, source }) => {
            // toml's message is multi-line and ends with a newline.
            write!(err, "{}: {source}", path.display())?;
            Ok(false)
        }
    }
}

/// `lb stats` output: one table per kind, counters summed over CPUs.
pub fn print_stats(s: &Snapshot, out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "VIPs")?;
    writeln!(
        out,
        "  {:<28} {:>4} {:>12} {:>14} {:>12} {:>14} {:>10}",
        "vip", "id", "packets_in", "bytes_in", "packets_out", "bytes_out", "new_flows"
    )?;
    for (key, meta, c) in &s.vips {
        writeln!(
            out,
            "  {:<28} {:>4} {:>12} {:>14} {:>12} {:>14} {:>10}",
            net::display_vip(key),
            meta.vip_id,
            c.packets_in,
            c.bytes_in,
            c.packets_out,
            c.bytes_out,
            c.new_flows
        )?;
    }
    writeln!(out, "targets")?;
    writeln!(
        out,
        "  {:<28} {:>4} {:>9} {:>12} {:>14} {:>12} {:>14} {:>10}",
        "target", "id", "state", "packets_in", "bytes_in", "packets_out", "bytes_out", "new_flows"
    )?;
    for (id, t, c) in &s.targets {
        let endpoint = net::target_endpoint(t)
            .map(|e| e.to_string())
            .unwrap_or_else(|| "?".into());
        writeln!(
            out,
            "  {:<28} {:>4} {:>9} {:>12} {:>14} {:>12} {:>14} {:>10}",
            endpoint,
            id,
            format!("{:?}", lb_common::TargetState::from_u8(t.state)).to_lowercase(),
            c.packets_in,
            c.bytes_in,
            c.packets_out,
            c.bytes_out,
            c.new_flows
        )?;
    }
    writeln!(
        out,
        "flows: {} active ({} unconfirmed) in a connection table of {} slots",
        s.active_flows, s.embryonic_flows, s.flow_capacity
    )?;
    writeln!(out, "connection table by VIP")?;
    writeln!(
        out,
        "  {:<28} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "vip", "syns", "embryonic", "confirmed", "displaced", "untracked"
    )?;
    for (key, meta, _) in &s.vips {
        let f = s.vip_flows.get(&meta.vip_id).copied().unwrap_or_default();
        writeln!(
            out,
            "  {:<28} {:>12} {:>12} {:>12} {:>12} {:>12}",
            net::display_vip(key),
            f.syns,
            f.embryonic,
            f.confirmed,
            f.displaced,
            f.untracked
        )?;
    }
    // Before the data path's table, which readers take to run to the end.
    if !s.probes.is_empty() {
        writeln!(out, "dsr health probes (lb_probe_encap)")?;
        for (stat, n) in &s.probes {
            writeln!(out, "  {:<20} {n:>12}", stat.name())?;
        }
    }
    writeln!(out, "data path")?;
    for (stat, n) in &s.stats {
        writeln!(out, "  {:<20} {n:>12}", stat.name())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// Runs `check` on a file `name` holding `text` (absent when `None`) in
    /// a directory of its own; returns (ok, stdout, stderr without the dir).
    fn run_check(name: &str, text: Option<&str>) -> (bool, String, String) {
        let dir = std::env::temp_dir().join(format!("lb-cli-test-{}-{name}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        if let Some(text) = text {
            fs::write(&path, text).unwrap();
        }
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let ok = check(&path, &mut out, &mut err).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        let err = String::from_utf8(err)
            .unwrap()
            .replace(&format!("{}/", dir.display()), "");
        (ok, String::from_utf8(out).unwrap(), err)
    }

    #[test]
    fn valid_config_prints_a_summary() {
        let demo = include_str!("../../config/demo.toml");
        assert_eq!(
            run_check("demo.toml", Some(demo)),
            (
                true,
                "config OK: 2 listeners, 2 target groups, 6 targets\n".into(),
                String::new()
            )
        );
    }

    #[test]
    fn invalid_config_prints_every_error() {
        let text = "[daemon]\ninterfaces = []\nmaglev_table_size = 65536\n";
        assert_eq!(
            run_check("bad.toml", Some(text)),
            (
                false,
                String::new(),
                "daemon.interfaces: at least one interface is required\n\
                 daemon.maglev_table_size: 65536 is not prime\n"
                    .into()
            )
        );
    }

    #[test]
    fn syntax_and_read_errors_name_the_file() {
        let (ok, _, err) = run_check("syntax.toml", Some("[daemon\n"));
        assert!(!ok);
        assert!(
            err.starts_with("syntax.toml: TOML parse error at line 1, column 8\n"),
            "{err}"
        );
        let (ok, _, err) = run_check("missing.toml", None);
        assert!(!ok);
        assert!(err.starts_with("missing.toml: "), "{err}");
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
