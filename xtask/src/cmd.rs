//! Running external commands with the command line in every error message.
use std::{
    ffi::OsStr,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

/// A `std::process::Command` that prints itself before it runs and names
/// itself (and its directory) when it fails.
pub struct Cmd {
    inner: Command,
    shown: String,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let program = program.as_ref();
        Self {
            inner: Command::new(program),
            shown: program.to_string_lossy().into_owned(),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        let arg = arg.as_ref();
        self.shown.push(' ');
        self.shown.push_str(&quote(&arg.to_string_lossy()));
        self.inner.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> Self {
        self.inner.env(key, val);
        self
    }

    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.inner.envs(vars);
        self
    }

    pub fn dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.inner.current_dir(dir);
        self
    }

    fn describe(&self) -> String {
        match self.inner.get_current_dir() {
            Some(d) => format!("`{}` (in {})", self.shown, d.display()),
            None => format!("`{}`", self.shown),
        }
    }

    /// Runs with inherited stdio; fails unless it exits 0.
    pub fn run(mut self) -> Result<()> {
        eprintln!("$ {}", self.shown);
        let status = self
            .inner
            .status()
            .with_context(|| format!("could not start {}", self.describe()))?;
        if !status.success() {
            bail!("{} failed: {status}", self.describe());
        }
        Ok(())
    }

    /// Runs with stdout piped through `line` (and echoed); stderr inherited.
    /// Returns whether it exited 0.
    pub fn run_watching(mut self, mut line: impl FnMut(&str)) -> Result<bool> {
        use std::io::{BufRead, BufReader, Write};
        eprintln!("$ {}", self.shown);
        let mut child = self
            .inner
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start {}", self.describe()))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut out = std::io::stdout();
        for l in BufReader::new(stdout).lines() {
            let l = l.context("reading child stdout")?;
            line(&l);
            writeln!(out, "{l}")?;
        }
        let status = child
            .wait()
            .with_context(|| format!("waiting for {}", self.describe()))?;
        Ok(status.success())
    }

    /// Runs with stderr piped through `line` (and echoed); stdout inherited.
    /// Returns whether it exited 0.
    pub fn run_watching_stderr(mut self, mut line: impl FnMut(&str)) -> Result<bool> {
        use std::io::{BufRead, BufReader, Write};
        eprintln!("$ {}", self.shown);
        let mut child = self
            .inner
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start {}", self.describe()))?;
        let stderr = child.stderr.take().context("child stderr")?;
        let mut err = std::io::stderr();
        for l in BufReader::new(stderr).split(b'\n') {
            let l = l.context("reading child stderr")?;
            let l = String::from_utf8_lossy(&l);
            line(&l);
            writeln!(err, "{l}")?;
        }
        let status = child
            .wait()
            .with_context(|| format!("waiting for {}", self.describe()))?;
        Ok(status.success())
    }

    /// Runs quietly and returns stdout; fails unless it exits 0 (stderr is
    /// put in the error).
    pub fn read(mut self) -> Result<String> {
        let out = self
            .inner
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("could not start {}", self.describe()))?;
        if !out.status.success() {
            bail!(
                "{} failed: {}\n{}",
                self.describe(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            );
        }
        String::from_utf8(out.stdout)
            .with_context(|| format!("{} printed non-UTF-8", self.describe()))
    }

    /// Runs quietly and returns stdout, or `None` when it exits non-zero.
    pub fn try_read(mut self) -> Result<Option<String>> {
        let out = self
            .inner
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("could not start {}", self.describe()))?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    /// Runs quietly; true when it could start and exited 0.
    pub fn succeeds(mut self) -> bool {
        self.inner
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Replaces this process with the command (so signals such as Ctrl-C go
    /// straight to it). Returns only on failure.
    pub fn exec(mut self) -> anyhow::Error {
        use std::os::unix::process::CommandExt;
        eprintln!("$ {}", self.shown);
        let err = self.inner.exec();
        anyhow::Error::new(err).context(format!("could not exec {}", self.describe()))
    }
}

fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=+:,@%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
