//! Child processes of a test: spawned inside a namespace with
//! `ip netns exec`, their output collected line by line, killed (with their
//! process group) on drop. [`LbDaemon`] wraps `lb run`.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::netns;

/// Lines a child wrote, shared with the threads reading its pipes.
#[derive(Default)]
struct Log {
    state: Mutex<LogState>,
    changed: Condvar,
}

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    /// Pipes still open (stdout, stderr).
    open: u32,
}

impl Log {
    fn reader(self: &Arc<Self>, label: String, stream: impl Read + Send + 'static, echo: bool) {
        self.state.lock().expect("log lock").open += 1;
        let log = Arc::clone(self);
        thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                        if echo {
                            eprintln!("[{label}] {line}");
                        }
                        let mut st = log.state.lock().expect("log lock");
                        st.lines.push(line);
                        log.changed.notify_all();
                    }
                }
            }
            let mut st = log.state.lock().expect("log lock");
            st.open -= 1;
            log.changed.notify_all();
        });
    }

    /// Waits until a line satisfying `pred` exists. Returns it, or `None` on
    /// timeout or when every pipe closed without one.
    fn wait_for(
        &self,
        from: usize,
        pred: &dyn Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut st = self.state.lock().expect("log lock");
        loop {
            if let Some(l) = st.lines.iter().skip(from).find(|l| pred(l)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if st.open == 0 || now >= deadline {
                return None;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .expect("log lock")
                .0;
        }
    }

    fn wait_closed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut st = self.state.lock().expect("log lock");
        while st.open > 0 {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .expect("log lock")
                .0;
        }
    }

    fn len(&self) -> usize {
        self.state.lock().expect("log lock").lines.len()
    }

    fn text(&self) -> String {
        self.state.lock().expect("log lock").lines.join("\n")
    }
}

/// Line counts of a child's stdout and stderr at some moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct OutputMark {
    stdout: usize,
    stderr: usize,
}

/// A process running inside a network namespace. Dropping it kills its
/// process group (SIGKILL) and reaps it.
pub struct NsChild {
    label: String,
    child: Child,
    stdout: Arc<Log>,
    stderr: Arc<Log>,
    exited: Option<ExitStatus>,
}

impl NsChild {
    /// Starts `program args…` in namespace `ns` in a process group of its
    /// own, killed if the spawning thread dies (`PR_SET_PDEATHSIG`; the
    /// guard's owner must outlive it, as a test's locals do). `ip netns exec` execs the program, so the pid is the program's.
    /// Stdout and stderr are collected; with `echo`, each line is also
    /// printed to the test's stderr prefixed with `label`.
    pub fn spawn<S: AsRef<OsStr>>(
        label: &str,
        ns: &str,
        program: &Path,
        args: &[S],
        echo: bool,
    ) -> Self {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between
        // fork and exec. If the test process dies without running Drop
        // (SIGKILL), the child is killed with it instead of lingering.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} in netns {ns}: {e}", program.display()));
        let stdout = Arc::new(Log::default());
        let stderr = Arc::new(Log::default());
        stdout.reader(
            format!("{label} out"),
            child.stdout.take().expect("piped stdout"),
            echo,
        );
        stderr.reader(
            format!("{label} err"),
            child.stderr.take().expect("piped stderr"),
            echo,
        );
        Self {
            label: label.to_owned(),
            child,
            stdout,
            stderr,
            exited: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Everything written to stdout and stderr so far, for panic messages.
    pub fn output(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.label,
            self.stdout.text(),
            self.label,
            self.stderr.text()
        )
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.text()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.text()
    }

    /// The stdout lines written after `mark`.
    pub fn stdout_lines_after(&self, mark: OutputMark) -> Vec<String> {
        let st = self.stdout.state.lock().expect("log lock");
        st.lines.iter().skip(mark.stdout).cloned().collect()
    }

    /// Exit status if the process has ended.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited
    }

    /// Position in the output, for [`Self::wait_for_line_after`].
    pub fn mark(&self) -> OutputMark {
        OutputMark {
            stdout: self.stdout.len(),
            stderr: self.stderr.len(),
        }
    }

    /// Waits for a stdout or stderr line containing `needle`; panics (with
    /// the output so far) on timeout or if the process exits first.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        self.wait_for_line_after(OutputMark::default(), needle, timeout)
    }

    /// Like [`Self::wait_for_line`], considering only lines after `mark`.
    pub fn wait_for_line_after(
        &mut self,
        mark: OutputMark,
        needle: &str,
        timeout: Duration,
    ) -> String {
        self.wait_for_any_after(mark, &[needle], timeout)
    }

    /// Waits for a line after `mark` containing any of `needles`.
    pub fn wait_for_any_after(
        &mut self,
        mark: OutputMark,
        needles: &[&str],
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let needle = needles.join("\" or \"");
        let pred = |l: &str| needles.iter().any(|n| l.contains(n));
        let find = |me: &Self, wait: Duration| {
            me.stdout
                .wait_for(mark.stdout, &pred, wait)
                .or_else(|| me.stderr.wait_for(mark.stderr, &pred, Duration::ZERO))
        };
        loop {
            if let Some(l) = find(self, Duration::from_millis(100)) {
                return l;
            }
            if let Some(status) = self.try_status() {
                // Pipes may still hold the line: give the readers a moment.
                self.stdout.wait_closed(Duration::from_secs(1));
                self.stderr.wait_closed(Duration::from_secs(1));
                if let Some(l) = find(self, Duration::ZERO) {
                    return l;
                }
                panic!(
                    "{} exited ({status}) before printing {needle:?}\n{}",
                    self.label,
                    self.output()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not print {needle:?} within {timeout:?}\n{}",
                    self.label,
                    self.output()
                );
            }
        }
    }

    /// Waits for the process to exit; `None` on timeout.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                self.stdout.wait_closed(Duration::from_secs(1));
                self.stderr.wait_closed(Duration::from_secs(1));
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to the process itself (not its group).
    pub fn signal(&self, sig: libc::c_int) {
        if self.exited.is_some() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// SIGTERM, then waits up to `timeout`; SIGKILL to the group if the
    /// process is still there. Returns the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.try_status() {
            return s;
        }
        self.signal(libc::SIGTERM);
        if let Some(s) = self.wait_timeout(timeout) {
            return s;
        }
        eprintln!("{} ignored SIGTERM for {timeout:?}; killing it", self.label);
        self.kill_group();
        self.wait_timeout(Duration::from_secs(5))
            .unwrap_or_else(|| ExitStatus::from_raw(libc::SIGKILL))
    }

    fn kill_group(&mut self) {
        // SAFETY: kill(2) on the process group we created for the child.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            self.kill_group();
            if self.wait_timeout(Duration::from_secs(5)).is_none() {
                eprintln!("cleanup: {} (pid {}) did not die", self.label, self.pid());
            }
        }
    }
}

/// Whether child output is echoed live to stderr (`LB_TEST_VERBOSE=1`);
/// it is always included in panic messages.
pub fn verbose() -> bool {
    std::env::var_os("LB_TEST_VERBOSE").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Polls until a TCP connection to `addr` from namespace `ns` succeeds.
pub fn wait_tcp_port(ns: &str, addr: SocketAddr, timeout: Duration) {
    let ok = netns::in_netns(ns, move || {
        let deadline = Instant::now() + timeout;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    });
    assert!(
        ok,
        "nothing accepts on {addr} in netns {ns} after {timeout:?}"
    );
}

/// Path of the `lb` binary from `LB_BIN`; panics if unset or missing.
pub fn lb_bin() -> PathBuf {
    let path = std::env::var_os("LB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "LB_BIN is not set: run through `cargo xtask test`, or export \
             LB_BIN=<abs path of target/release/lb> (and LB_EBPF_OBJECT)"
            )
        });
    assert!(
        path.is_file(),
        "LB_BIN={} does not exist; build it first (`cargo xtask build`)",
        path.display()
    );
    path
}

/// A binary of this crate (`lb-test-server`, `lb-http-target`, ...): from
/// `LB_TEST_BIN_DIR` (set by `cargo xtask test` and `cargo xtask bench`),
/// else next to the running executable: beside it (`lb-bench`) or one
/// directory up (a test in `target/<profile>/deps/`). The one way every
/// test and benchmark finds one.
pub fn test_bin(name: &str) -> PathBuf {
    let candidates = match std::env::var_os("LB_TEST_BIN_DIR") {
        Some(dir) => vec![PathBuf::from(dir).join(name)],
        None => {
            let exe = std::env::current_exe().expect("current exe");
            let dir = exe.parent().expect("exe dir").to_owned();
            let up = dir.parent().map(|d| d.join(name));
            std::iter::once(dir.join(name)).chain(up).collect()
        }
    };
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{name} is not in {candidates:?}: run through `cargo xtask test` (or `bench`), \
                 which builds it and sets LB_TEST_BIN_DIR"
            )
        })
}

/// Panics unless `tool` is on PATH (`cargo xtask setup` installs what the
/// tests and benchmarks use).
pub fn require_tool(tool: &str) {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is not installed (cargo xtask setup installs it)"
    );
}

/// The line `lb run` prints (to stdout or stderr) once the program is
/// attached and the maps are programmed. Override with `LB_READY_PATTERN`.
pub const LB_READY_PATTERN: &str = "lb running";

fn ready_pattern() -> String {
    std::env::var("LB_READY_PATTERN").unwrap_or_else(|_| LB_READY_PATTERN.to_owned())
}

/// What `lb run` logs after a SIGHUP reload applied the new config.
pub const LB_RELOADED_PATTERN: &str = "config reloaded";
/// What `lb run` logs when a SIGHUP reload was refused.
pub const LB_RELOAD_REFUSED_PATTERN: &str = "reload refused";

/// How long `lb run` may take to become ready (program load and attach).
pub const LB_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// `lb run --config <file>` inside the load balancer's namespace.
///
/// [`LbDaemon::stop`] sends SIGTERM and leaves the XDP program attached and
/// the maps pinned (a restart picks them up). Dropping a daemon that was not
/// stopped also runs `lb down --config` to detach and unpin (errors logged).
pub struct LbDaemon {
    child: NsChild,
    lb: PathBuf,
    ns: String,
    config: PathBuf,
}

impl LbDaemon {
    /// Starts `$LB_BIN run` and waits for its ready line; panics with its
    /// output if it exits or does not become ready in time.
    pub fn start(ns: &str, config: &Path) -> Self {
        Self::start_with(&lb_bin(), ns, config)
    }

    /// Like [`Self::start`] with an explicit `lb` binary.
    pub fn start_with(lb: &Path, ns: &str, config: &Path) -> Self {
        let args = [
            OsStr::new("run"),
            OsStr::new("--config"),
            config.as_os_str(),
        ];
        let mut child = NsChild::spawn("lb run", ns, lb, &args, verbose());
        child.wait_for_line(&ready_pattern(), LB_READY_TIMEOUT);
        Self {
            child,
            lb: lb.to_owned(),
            ns: ns.to_owned(),
            config: config.to_owned(),
        }
    }

    /// The daemon's process id (`ip netns exec` execs `lb`).
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Panics if the daemon has exited.
    pub fn assert_running(&mut self) {
        if let Some(s) = self.child.try_status() {
            panic!("lb run exited unexpectedly ({s})\n{}", self.child.output());
        }
    }

    pub fn output(&self) -> String {
        self.child.output()
    }

    /// Position in the daemon's output, for [`Self::wait_for_line_after`].
    pub fn mark(&self) -> OutputMark {
        self.child.mark()
    }

    /// Waits for a log line after `mark` containing `needle`; panics with
    /// the output on timeout or exit.
    pub fn wait_for_line_after(&mut self, mark: OutputMark, needle: &str) -> String {
        self.child
            .wait_for_line_after(mark, needle, Duration::from_secs(10))
    }

    /// SIGHUP (hot reload) and waits for the daemon to log
    /// [`LB_RELOADED_PATTERN`]; panics if it logs [`LB_RELOAD_REFUSED_PATTERN`]
    /// instead, exits, or says nothing in time.
    pub fn reload(&mut self) {
        self.sighup(LB_RELOADED_PATTERN, "did not apply the new config");
    }

    /// SIGHUP with a config the daemon must refuse: waits for
    /// [`LB_RELOAD_REFUSED_PATTERN`] and returns that log line; panics if the
    /// daemon applies it, exits, or says nothing in time.
    pub fn reload_refused(&mut self) -> String {
        let line = self.sighup(
            LB_RELOAD_REFUSED_PATTERN,
            "applied a config it should have refused",
        );
        self.assert_running();
        line
    }

    /// SIGHUP, then the first reload outcome it logs, which must be `want`.
    fn sighup(&mut self, want: &str, otherwise: &str) -> String {
        self.assert_running();
        let mark = self.child.mark();
        self.child.signal(libc::SIGHUP);
        let line = self.child.wait_for_any_after(
            mark,
            &[LB_RELOADED_PATTERN, LB_RELOAD_REFUSED_PATTERN],
            Duration::from_secs(10),
        );
        if !line.contains(want) {
            panic!("lb run {otherwise}: {line}\n{}", self.child.output());
        }
        line
    }

    /// SIGTERM and wait: the XDP program stays attached and the pins stay.
    /// Panics if the daemon does not exit cleanly.
    pub fn stop(mut self) -> String {
        let status = self.child.terminate(Duration::from_secs(10));
        let out = self.child.output();
        assert!(
            status.success(),
            "lb run did not exit cleanly on SIGTERM ({status})\n{out}"
        );
        // Disarm `lb down` in Drop.
        self.config = PathBuf::new();
        out
    }
}

impl LbDaemon {
    /// SIGKILL, as a crash would end it: nothing is cleaned up (program,
    /// pins and whatever else it left in the kernel stay). Returns its
    /// output.
    pub fn kill(mut self) -> String {
        self.child.signal(libc::SIGKILL);
        let status = self.child.wait_timeout(Duration::from_secs(10));
        let out = self.child.output();
        assert!(
            status.is_some_and(|s| s.signal() == Some(libc::SIGKILL)),
            "lb run did not die of SIGKILL ({status:?})\n{out}"
        );
        // Disarm `lb down` in Drop.
        self.config = PathBuf::new();
        out
    }
}

impl Drop for LbDaemon {
    fn drop(&mut self) {
        let status = self.child.terminate(Duration::from_secs(10));
        if self.config.as_os_str().is_empty() {
            return;
        }
        if !status.success() && !thread::panicking() {
            eprintln!("lb run exited with {status}\n{}", self.child.output());
        }
        lb_down_logged(&self.lb, &self.ns, &self.config);
    }
}

/// Runs `lb <args…>` in namespace `ns`; returns the output whatever the status.
pub fn lb_cmd(lb: &Path, ns: &str, args: &[&OsStr]) -> std::process::Output {
    let mut all: Vec<&OsStr> = vec![
        OsStr::new("netns"),
        OsStr::new("exec"),
        OsStr::new(ns),
        lb.as_os_str(),
    ];
    all.extend_from_slice(args);
    netns::try_run("ip", all).expect("run ip netns exec lb")
}

fn lb_checked(lb: &Path, ns: &str, verb: &str, config: &Path) -> String {
    let out = lb_cmd(
        lb,
        ns,
        &[OsStr::new(verb), OsStr::new("--config"), config.as_os_str()],
    );
    assert!(
        out.status.success(),
        "lb {verb} --config {} failed ({}):\nstderr: {}\nstdout: {}",
        config.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `lb stats --config <file>` in `ns`; panics with stderr on failure.
pub fn lb_stats(lb: &Path, ns: &str, config: &Path) -> String {
    lb_checked(lb, ns, "stats", config)
}

/// `lb down --config <file>` in `ns`; panics with stderr on failure.
pub fn lb_down(lb: &Path, ns: &str, config: &Path) -> String {
    lb_checked(lb, ns, "down", config)
}

fn lb_down_logged(lb: &Path, ns: &str, config: &Path) {
    let out = lb_cmd(
        lb,
        ns,
        &[
            OsStr::new("down"),
            OsStr::new("--config"),
            config.as_os_str(),
        ],
    );
    if !out.status.success() {
        eprintln!(
            "cleanup: lb down --config {} failed ({}): {}",
            config.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}
