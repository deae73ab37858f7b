//! RAII guards for what an attach-level test creates in the kernel: network
//! namespaces, veth pairs and a bpffs mount. Every guard removes its object in
//! `Drop`, so a panicking test still leaves the machine clean; cleanup errors
//! are logged to stderr, never raised (a second panic would abort the run).
//!
//! Names are unique per test: [`unique_id`] combines the process id with a
//! counter, so tests of one binary and of parallel binaries never collide.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Prefix of every object the test support creates (`ip netns list | grep lbt`).
pub const PREFIX: &str = "lbt";

/// Panics unless the process runs as root: attach-level tests need it and must
/// never be skipped silently.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test needs root (network namespaces, XDP, bpffs); running as uid {euid}. \
         Run it with `sudo -E` or through `cargo xtask test`."
    );
}

/// A short identifier unique to this process and call:
/// `lbt<pid base36>_<n base36>`. The pid lets [`reap_stale`] find what a
/// killed run left behind.
pub fn unique_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}_{}", base36(std::process::id()), base36(n))
}

/// The pid encoded in a name made from [`unique_id`].
fn owner_pid(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(PREFIX)?.split('_').next()?;
    u32::from_str_radix(digits, 36).ok()
}

/// Removes namespaces, bpffs mounts and run directories that a run killed
/// before its cleanup (SIGKILL, timeout) left behind: those whose owner
/// process no longer exists. Objects of live processes are never touched.
pub fn reap_stale() {
    let dead = |name: &str| {
        owner_pid(name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dead(&name) {
                eprintln!("removing stale netns {name}");
                cleanup("delete stale netns", "ip", &["netns", "del", &name]);
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/run") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !dead(&name) {
                continue;
            }
            let path = e.path();
            let bpffs = path.join("bpffs");
            if is_bpffs(&bpffs) {
                cleanup(
                    "unmount stale bpffs",
                    "umount",
                    &["-l", &bpffs.to_string_lossy()],
                );
            }
            eprintln!("removing stale {}", path.display());
            if let Err(err) = std::fs::remove_dir_all(&path) {
                eprintln!("cleanup: remove {}: {err}", path.display());
            }
        }
    }
}

fn base36(mut v: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(v % 36) as usize]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii digits")
}

/// Runs a command and returns its output; panics with the command line, exit
/// status and stderr when it fails.
pub fn run<I, S>(program: &str, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let output = Command::new(program)
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    if !output.status.success() {
        panic!(
            "`{}` failed ({}):\nstderr: {}\nstdout: {}",
            command_line(program, &args),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        );
    }
    output
}

/// Like [`run`] but returns the output whatever the exit status (for cleanup
/// and for commands whose failure is the thing being checked).
pub fn try_run<I, S>(program: &str, args: I) -> std::io::Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(program).args(args).output()
}

/// Runs `cmd` (program and arguments) inside namespace `ns` with
/// `ip netns exec` and returns its output; panics with stderr on failure.
pub fn exec_in<S: AsRef<OsStr>>(ns: &str, cmd: &[S]) -> Output {
    let mut args: Vec<&OsStr> = vec![OsStr::new("netns"), OsStr::new("exec"), OsStr::new(ns)];
    args.extend(cmd.iter().map(AsRef::as_ref));
    run("ip", args)
}

/// Like [`exec_in`], returning stdout as a string.
pub fn exec_in_stdout<S: AsRef<OsStr>>(ns: &str, cmd: &[S]) -> String {
    String::from_utf8_lossy(&exec_in(ns, cmd).stdout).into_owned()
}

fn command_line(program: &str, args: &[std::ffi::OsString]) -> String {
    let mut s = program.to_owned();
    for a in args {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Logs a failed cleanup step without panicking.
pub(crate) fn cleanup(what: &str, program: &str, args: &[&str]) {
    match try_run(program, args) {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "cleanup: {what}: `{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!("cleanup: {what}: cannot run {program}: {e}"),
    }
}

/// A network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` with its loopback up.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        run("ip", ["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> <args>`; panics on failure.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", all)
    }

    /// Runs a command inside the namespace; panics on failure.
    pub fn exec<S: AsRef<OsStr>>(&self, cmd: &[S]) -> Output {
        exec_in(&self.name, cmd)
    }

    /// Sets a sysctl inside the namespace (`sysctl -w key=value`).
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")]);
    }

    /// Runs `f` on a thread that entered this namespace; sockets it creates
    /// belong to the namespace and can be used from any thread afterwards.
    pub fn run<T, F>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        in_netns(&self.name, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        cleanup("delete netns", "ip", &["netns", "del", &self.name]);
    }
}

/// Runs `f` on a new thread whose network namespace is `ns` (setns is per
/// thread for network namespaces) and returns its result; panics from `f` are
/// propagated.
pub fn in_netns<T, F>(ns: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = PathBuf::from("/run/netns").join(ns);
    let handle = thread::Builder::new()
        .name(format!("netns-{ns}"))
        .spawn(move || {
            let file =
                File::open(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
            // SAFETY: plain syscall on a valid fd; only this thread changes namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert!(
                rc == 0,
                "setns({}) failed: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
            f()
        })
        .expect("spawn netns thread");
    match handle.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A veth pair whose ends live in two namespaces, created directly there (no
/// name ever exists in the root namespace, so parallel tests can reuse names
/// such as `lb-c`). Deleting one end removes both; dropping the namespace
/// removes them too, which makes this guard's drop a no-op then.
#[derive(Debug)]
pub struct VethPair {
    pub a_ns: String,
    pub a: String,
    pub b_ns: String,
    pub b: String,
}

impl VethPair {
    /// Creates `a` in namespace `a_ns` and its peer `b` in `b_ns`, both down.
    pub fn new(a_ns: &Netns, a: &str, b_ns: &Netns, b: &str) -> Self {
        assert!(a.len() <= 15 && b.len() <= 15, "ifname too long: {a} / {b}");
        run(
            "ip",
            [
                "-n",
                a_ns.name(),
                "link",
                "add",
                a,
                "type",
                "veth",
                "peer",
                "name",
                b,
                "netns",
                b_ns.name(),
            ],
        );
        Self {
            a_ns: a_ns.name().to_owned(),
            a: a.to_owned(),
            b_ns: b_ns.name().to_owned(),
            b: b.to_owned(),
        }
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // The link may already be gone with its namespace; only then stay silent.
        if Path::new("/run/netns").join(&self.a_ns).exists() {
            let out = try_run("ip", ["-n", &self.a_ns, "link", "del", &self.a]);
            if let Ok(out) = out {
                let err = String::from_utf8_lossy(&out.stderr);
                if !out.status.success() && !err.contains("Cannot find device") {
                    eprintln!("cleanup: delete veth {}: {}", self.a, err.trim());
                }
            }
        }
    }
}

/// Polls until `ip -n ns link show dev` reports the link up (`LOWER_UP`).
pub fn wait_link_up(ns: &str, dev: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let out = run("ip", ["-n", ns, "link", "show", "dev", dev]);
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("LOWER_UP") && text.contains("state UP") {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "link {dev} in {ns} not up after {timeout:?}: {}",
                text.trim()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A directory created for a test and removed (recursively) on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("cleanup: remove {}: {e}", self.path.display());
        }
    }
}

/// A bpffs mounted from the root mount namespace at a path outside `/sys`, so
/// that pins survive between `ip netns exec` invocations (each of which
/// remounts `/sys`). Unmounted on drop, which releases every pin in it.
#[derive(Debug)]
pub struct Bpffs {
    path: PathBuf,
    mounted_here: bool,
    /// Directories created for the mount point, innermost first; removed
    /// (when empty) after unmounting.
    created_dirs: Vec<PathBuf>,
}

impl Bpffs {
    /// Mounts a fresh bpffs at `path` (created if missing). If a bpffs is
    /// already mounted there it is reused and left mounted on drop.
    pub fn mount(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let created_dirs: Vec<PathBuf> = path
            .ancestors()
            .take_while(|p| !p.exists())
            .map(Path::to_path_buf)
            .collect();
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        if is_bpffs(&path) {
            return Self {
                path,
                mounted_here: false,
                created_dirs,
            };
        }
        run(
            "mount",
            [
                OsStr::new("-t"),
                OsStr::new("bpf"),
                OsStr::new("bpf"),
                path.as_os_str(),
            ],
        );
        Self {
            path,
            mounted_here: true,
            created_dirs,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts a bpffs left at `path` by an earlier run (a killed demo),
    /// then mounts a fresh one.
    pub fn mount_fresh(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        while is_bpffs(&path) {
            let p = path.to_string_lossy().into_owned();
            eprintln!("unmounting stale bpffs at {p}");
            run("umount", [&p]);
        }
        Self::mount(path)
    }

    /// Names of the entries in the bpffs (pins and directories), sorted.
    pub fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.path.display()))
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        if !self.mounted_here {
            return;
        }
        let path = self.path.to_string_lossy().into_owned();
        let ok = try_run("umount", [&path]).is_ok_and(|o| o.status.success());
        if !ok {
            // Still referenced by a mount namespace of a lingering process.
            cleanup("unmount bpffs (lazy)", "umount", &["-l", &path]);
        }
        for dir in &self.created_dirs {
            if std::fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
}

/// Whether `path` is the root of a mounted bpffs (per /proc/self/mountinfo).
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(canon) = path.canonicalize() else {
        return false;
    };
    let canon = canon.to_string_lossy().into_owned();
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        // mount point is field 4; the fs type follows the " - " separator.
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            return false;
        };
        fields.get(4) == Some(&canon.as_str()) && fields.get(sep + 1) == Some(&"bpf")
    })
}

/// Namespaces, mounts and directories left by earlier runs (names starting
/// with [`PREFIX`]); used by tests that check cleanup.
pub fn leftovers() -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(PREFIX) {
                found.push(format!("netns {name}"));
            }
        }
    }
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in info.lines() {
            if let Some(mp) = line.split(' ').nth(4)
                && mp.contains(&format!("/{PREFIX}"))
            {
                found.push(format!("mount {mp}"));
            }
        }
    }
    found
}
