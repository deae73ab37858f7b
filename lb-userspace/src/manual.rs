//! `lb generate-docs` (hidden): man pages and shell completions made from
//! the clap definitions of [`crate::cli::Cli`], so that what a package
//! ships always matches the binary it ships (`cargo xtask package` runs it).
use std::{
    fs::{self, File},
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// Section of every page: `lb` administers the host (lb(8), like haproxy(8)
/// and bird(8)).
const SECTION: &str = "8";

/// The shells completions are made for, and each one's file name (what the
/// shell's vendor directory expects).
const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "lb"),
    (Shell::Zsh, "_lb"),
    (Shell::Fish, "lb.fish"),
];

/// Writes `<out>/man/lb.8` and one page per visible subcommand
/// (`lb-check.8`, `lb-target-attach.8`, ...), and
/// `<out>/completions/{bash,zsh,fish}/<file>`; returns the files written.
pub fn generate(out: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Subcommands get their full names ("lb-target-attach") only once built.
    cmd.build();
    let man = out.join("man");
    fs::create_dir_all(&man)?;
    man_pages(&cmd, &man, &mut written)?;
    for (shell, file) in SHELLS {
        let dir = out.join("completions").join(shell.to_string());
        fs::create_dir_all(&dir)?;
        let path = dir.join(file);
        let mut w = BufWriter::new(File::create(&path)?);
        clap_complete::generate(shell, &mut Cli::command(), "lb", &mut w);
        w.flush()?;
        written.push(path);
    }
    Ok(written)
}

/// The page of `cmd`, then those of its visible subcommands, recursively.
fn man_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> io::Result<()> {
    let name = cmd
        .get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_owned();
    let page = clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section(SECTION)
        .source(format!("lb {}", env!("CARGO_PKG_VERSION")))
        .manual("System Manager's Manual");
    let path = dir.join(format!("{name}.{SECTION}"));
    let mut w = BufWriter::new(File::create(&path)?);
    page.render(&mut w)?;
    w.flush()?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every visible subcommand, nested ones included, gets its page, and a
    /// page documents its options.
    #[test]
    fn pages_and_completions_cover_the_cli() {
        let dir = std::env::temp_dir().join(format!("lb-manual-test-{}", std::process::id()));
        let written = generate(&dir).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "lb.8",
            "lb-check.8",
            "lb-run.8",
            "lb-target-attach.8",
            "lb-token-generate.8",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
        assert!(
            !names.iter().any(|n| n.starts_with("lb-generate-docs")),
            "{names:?}"
        );
        let check = fs::read_to_string(dir.join("man/lb-check.8")).unwrap();
        assert!(check.contains(".TH LB-CHECK 8"), "{check}");
        assert!(check.contains("\\-\\-config"), "{check}");
        let bash = fs::read_to_string(dir.join("completions/bash/lb")).unwrap();
        assert!(bash.contains("complete -F _lb"), "{bash}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
