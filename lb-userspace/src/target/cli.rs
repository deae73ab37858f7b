//! `lb target attach | detach | status`.
use std::{
    io::{self, Write},
    net::IpAddr,
    path::{Path, PathBuf},
};

use clap::{Args, Subcommand, ValueEnum};
use lb_common::decap::{SAVED_MAGIC, SYSCTL_ABSENT, vip_origin};

use super::{
    DEFAULT_PIN_DIR, addrs,
    program::{self, Decap},
    saved,
    setup::{self, AttachSpec},
    sysctl,
};
use crate::bpf::loader::AttachMode;

#[derive(Debug, Subcommand)]
pub enum TargetCommand {
    /// Attach the decapsulation program to an interface (pinned: it stays
    /// after the command), put the VIPs on lo and set the sysctls a dsr
    /// target needs. Running it again changes only what differs.
    Attach(AttachArgs),
    /// Undo `attach`: detach the program, take the VIPs it added off lo,
    /// restore the sysctls, remove the pins.
    Detach(PinDirArgs),
    /// Show what is attached, the VIPs, the sysctls and the counters.
    Status(PinDirArgs),
}

#[derive(Debug, Args)]
pub struct PinDirArgs {
    /// bpffs directory holding the program, its maps and what attach saved.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The interface the encapsulated packets come in on.
    #[arg(short, long, value_name = "IF")]
    pub interface: String,
    /// A VIP this host serves (IPv4 or IPv6; repeat or list several).
    #[arg(long = "vip", value_name = "ADDR", num_args = 1.., required = true)]
    pub vips: Vec<IpAddr>,
    /// XDP mode: driver, falling back to generic (auto), or only one.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    #[command(flatten)]
    pub pins: PinDirArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Mode {
    Auto,
    Driver,
    Generic,
}

impl From<Mode> for AttachMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Auto => AttachMode::Auto,
            Mode::Driver => AttachMode::Driver,
            Mode::Generic => AttachMode::Generic,
        }
    }
}

/// Runs a `lb target` subcommand, printing to `out`.
pub fn dispatch(cmd: &TargetCommand, out: &mut impl Write) -> anyhow::Result<()> {
    match cmd {
        TargetCommand::Attach(a) => {
            let spec = AttachSpec {
                interface: a.interface.clone(),
                vips: a.vips.clone(),
                pin_dir: a.pins.pin_dir.clone(),
                mode: a.mode.into(),
            };
            let done = setup::attach(&spec)?;
            if done.is_empty() {
                writeln!(out, "already attached to {}: nothing changed", a.interface)?;
            }
            print_lines(out, &done)?;
        }
        TargetCommand::Detach(p) => {
            let done = setup::detach(&p.pin_dir)?;
            if done.is_empty() {
                writeln!(
                    out,
                    "nothing attached (nothing pinned in {})",
                    p.pin_dir.display()
                )?;
            }
            print_lines(out, &done)?;
        }
        TargetCommand::Status(p) => status(&p.pin_dir, out)?,
    }
    Ok(())
}

fn print_lines(out: &mut impl Write, lines: &[String]) -> io::Result<()> {
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `lb target status`.
pub fn status(pin_dir: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    if !program::anything_pinned(pin_dir) {
        writeln!(
            out,
            "not attached (nothing pinned in {})",
            pin_dir.display()
        )?;
        return Ok(());
    }
    let links = program::links(pin_dir);
    if links.is_empty() {
        writeln!(
            out,
            "program: not attached (maps pinned in {})",
            pin_dir.display()
        )?;
    }
    for (interface, path) in &links {
        writeln!(
            out,
            "program: {} on {interface} (link {})",
            lb_common::decap::PROGRAM,
            path.display()
        )?;
    }
    let mut d = Decap::open(pin_dir)?;
    let host = addrs::host_addrs()?;
    writeln!(out, "VIPs")?;
    for (vip, origin) in d.vips()? {
        let lo = if addrs::on_lo(&host, vip) {
            "on lo"
        } else {
            "NOT on lo"
        };
        let by = if origin == vip_origin::ADDED {
            "added by lb target"
        } else {
            "there before"
        };
        writeln!(out, "  {:<40} {lo} ({by})", vip.to_string())?;
    }
    writeln!(
        out,
        "local addresses (outer destinations): {}",
        d.local()?
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    )?;
    sysctls(&mut d, out)?;
    chains(out)?;
    writeln!(out, "counters")?;
    for (stat, n) in d.stats()? {
        writeln!(out, "  {:<20} {n:>12}", stat.name())?;
    }
    Ok(())
}

/// Whether a second chance's chain can go on to the previous target.
fn chains(out: &mut impl Write) -> io::Result<()> {
    let off = sysctl::chain_blockers();
    if off.is_empty() {
        writeln!(out, "second chance chains: forwarded (forwarding on lo)")
    } else {
        writeln!(
            out,
            "second chance chains: NOT FORWARDED, moved connections are reset ({} not 1; `lb target attach` sets it)",
            off.join(", ")
        )
    }
}

fn sysctls(d: &mut Decap, out: &mut impl Write) -> anyhow::Result<()> {
    let saved = d.saved()?;
    if saved.magic != SAVED_MAGIC {
        return Ok(());
    }
    let interface = saved::interface(&saved);
    writeln!(out, "sysctls (now, before attach)")?;
    for (s, old) in sysctl::settings(&interface).iter().zip(saved.sysctls) {
        let now = match sysctl::read(&s.path) {
            Ok(v) => v.to_string(),
            Err(_) => "-".into(),
        };
        let old = match old {
            SYSCTL_ABSENT => "-".to_owned(),
            v => v.to_string(),
        };
        writeln!(out, "  {:<40} {now:>3} (was {old})", s.name())?;
    }
    Ok(())
}
