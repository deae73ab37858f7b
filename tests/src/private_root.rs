//! A private root for package tests: a mount namespace in which `/usr`,
//! `/etc` and `/var` are overlays on the host's (writes, the dpkg database
//! included, go to upper directories under the topology's run directory),
//! and `/run` is a fresh tmpfs holding only the host's `/run/netns`,
//! `/run/lock` and the test's own run directory. `dpkg -i` in it installs
//! for real, maintainer scripts included, and the host is unchanged: the
//! namespace and its overlays go when the guard drops (also when the test
//! fails).
//!
//! PID 1 of the test machines is not systemd, so the root carries
//! `/run/systemd/system` (what maintainer scripts test to decide that
//! systemd runs) and a `systemctl` stand-in (`systemctl.sh`) that runs a
//! unit's commands as systemd would, in the network namespace given to
//! [`PrivateRoot::new`]. A `/usr/sbin/policy-rc.d` of the host (container
//! images have one that forbids starting services) is removed in the root.
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::netns::TempDir;

/// The stand-in installed as `/usr/bin/systemctl` in the private root.
const SYSTEMCTL: &str = include_str!("systemctl.sh");

/// Where the stand-in keeps its state (pid files, the "journal").
pub const SYSTEMD_STATE: &str = "/run/systemd/lb-test";

/// Sets up the namespace, then holds it (`sleep`) until killed. $1: the
/// overlay directory; $2: the network namespace units run in; $3...: the
/// host /run entries to carry over.
const HOLDER: &str = r#"
set -eu
R=$1; NS=$2; shift 2
for d in usr etc var; do
	mkdir -p "$R/upper/$d" "$R/work/$d"
	mount -t overlay overlay -o "lowerdir=/$d,upperdir=$R/upper/$d,workdir=$R/work/$d" "/$d"
done
cp "$R/systemctl" /usr/bin/systemctl
chmod 755 /usr/bin/systemctl
# A container image's "start no service" policy (exit 101) is no part of
# the hosts the package is for: without it, as on a server.
rm -f /usr/sbin/policy-rc.d
# The host's /run stays reachable as the working directory once hidden
# (mount must not canonicalize ./x: that would resolve in the new /run).
cd /run
mount -t tmpfs -o mode=0755 lb-test-run /run
for x in netns lock "$@"; do
	mkdir -p "/run/$x"
	mount --no-canonicalize --rbind "./$x" "/run/$x"
done
cd /
mkdir -p /run/systemd/system /run/systemd/lb-test
echo "$NS" > /run/systemd/lb-test/netns
echo ready
exec sleep infinity
"#;

pub struct PrivateRoot {
    holder: Child,
    netns: String,
    _dir: TempDir,
}

impl PrivateRoot {
    /// A private root whose units run in network namespace `netns`, under
    /// `dir` (a new directory inside a test's run directory under /run,
    /// which is carried into the root with the entries `run_entries`).
    pub fn new(dir: &Path, netns: &str, run_entries: &[&str]) -> Self {
        let dir = TempDir::new(dir);
        std::fs::write(dir.path().join("systemctl"), SYSTEMCTL).expect("write systemctl stand-in");
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "slave",
            "sh",
            "-c",
            HOLDER,
            "sh",
        ])
        .arg(dir.path())
        .arg(netns)
        .args(run_entries)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0);
        // SAFETY: prctl is async-signal-safe; the holder dies with the test.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut holder = cmd.spawn().expect("start unshare");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("read from the private root's holder");
        let mut root = Self {
            holder,
            netns: netns.to_owned(),
            _dir: dir,
        };
        if line.trim() != "ready" {
            let status = root.holder.wait().ok();
            panic!("setting up the private root failed ({status:?}): {line:?}");
        }
        root
    }

    /// `program args...` inside the private root, in the network namespace
    /// its units run in (as on a real host, where dpkg, systemd and the
    /// daemon share one: `lb down` in prerm withdraws routes there).
    pub fn command<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.holder.id()))
            .args(["--mount", "--", "ip", "netns", "exec", &self.netns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `program args...` in the root; returns its output whatever the
    /// status.
    pub fn output<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> Output {
        self.command(program, args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run nsenter {program}: {e}"))
    }

    /// Runs `program args...` in the root; panics with its output unless it
    /// succeeds; returns stdout and stderr together.
    pub fn run<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> String {
        let out = self.output(program, args);
        let text = describe(&out);
        assert!(
            out.status.success(),
            "`{program} {}` in the private root failed ({}):\n{text}\n{}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" "),
            out.status,
            self.journal()
        );
        text
    }

    /// A path of the root as the host sees it (`/proc/<holder>/root/...`),
    /// to read and write files in it.
    pub fn path(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.holder.id())).join(path.trim_start_matches('/'))
    }

    /// The main pid the systemctl stand-in recorded for `unit`, if it runs.
    pub fn main_pid(&self, unit: &str) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.path(&format!("{SYSTEMD_STATE}/{unit}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        (stat.split_whitespace().nth(2) != Some("Z")).then_some(pid)
    }

    /// What the stand-in and the units it ran wrote, for failure messages.
    pub fn journal(&self) -> String {
        let mut out = String::new();
        let dir = self.path(SYSTEMD_STATE);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".log") {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    out.push_str(&format!("--- {name} ---\n{text}\n"));
                }
            }
        }
        out
    }
}

impl Drop for PrivateRoot {
    fn drop(&mut self) {
        // Units the stand-in started: SIGKILL (nothing they leave in the
        // kernel outlives the test's topology).
        if let Ok(entries) = std::fs::read_dir(self.path(SYSTEMD_STATE)) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !(name.ends_with(".pid") || name.ends_with(".socat")) {
                    continue;
                }
                if let Some(pid) = std::fs::read_to_string(e.path())
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok())
                {
                    // SAFETY: kill(2) on a pid the stand-in started for us.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
        // SAFETY: kill(2) on the holder's process group (we made it).
        unsafe {
            libc::kill(-(self.holder.id() as libc::pid_t), libc::SIGKILL);
        }
        if let Err(e) = self.holder.wait() {
            eprintln!("cleanup: waiting for the private root's holder: {e}");
        }
        // The overlays' upper directories are unmounted with the namespace
        // (its last process gone) before TempDir removes them.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stdout and stderr of `out`, labelled.
pub fn describe(out: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}
