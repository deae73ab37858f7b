//! The Debian package (`cargo xtask package`; `cargo xtask test` builds one
//! around the release binary and passes it as `LB_DEB`), installed with
//! dpkg into a private root (tests/src/private_root.rs: overlays on /usr,
//! /etc, /var in a mount namespace of its own; the host's dpkg database and
//! files are untouched) in front of a topology with real servers.
//!
//! PID 1 here is not systemd: the root's `systemctl` is a stand-in that
//! runs lb.service's own Environment=, ExecStartPre= and ExecStart= lines
//! (Type=notify, KillMode=process), so the package's maintainer scripts and
//! unit are what is exercised, not a real systemd.
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lb_tests::client::EchoConn;
use lb_tests::lab::{self, Pinger};
use lb_tests::netns;
use lb_tests::private_root::{PrivateRoot, describe};
use lb_tests::topology::{Topology, VIP_TCP_PORT};

const UNIT: &str = "lb.service";

fn deb() -> PathBuf {
    let path = std::env::var_os("LB_DEB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("LB_DEB is not set: run through `cargo xtask test`, which builds the package")
        });
    assert!(path.is_file(), "LB_DEB={} does not exist", path.display());
    path
}

/// A topology with one target and, over it, a private root whose units run
/// in the load balancer's namespace; the package installed in it.
struct Installed {
    // Dropped first: the units and the namespace go before the topology.
    root: PrivateRoot,
    topo: Topology,
}

impl Installed {
    fn new(name: &str, deb: &Path) -> Self {
        let topo = lab::topology(name, 1, false);
        let run_entry = topo
            .run_dir()
            .file_name()
            .expect("run dir name")
            .to_string_lossy()
            .into_owned();
        let root = PrivateRoot::new(&topo.run_dir().join("root"), topo.lb.name(), &[&run_entry]);
        let me = Self { root, topo };
        assert!(
            !me.root.output("dpkg-query", &["-W", "lb"]).status.success(),
            "lb is already installed in the private root (and so on the host): the test needs a host without it"
        );
        me.install(deb);
        me
    }

    /// `dpkg -i <deb>`; returns dpkg's output.
    fn install(&self, deb: &Path) -> String {
        self.root.run("dpkg", &[OsStr::new("-i"), deb.as_os_str()])
    }

    /// Replaces /etc/lb/lb.toml (the conffile) with the topology's standard
    /// config: TCP and UDP VIPs over target 1, XDP on the veths, pins in
    /// the topology's bpffs.
    fn configure(&self) -> PathBuf {
        let mut spec = self.topo.config_spec(&[1]);
        lab::fast_checks(&mut spec);
        std::fs::write(self.root.path("/etc/lb/lb.toml"), spec.render())
            .expect("write /etc/lb/lb.toml");
        self.topo.pin_dir()
    }

    fn systemctl(&self, args: &[&str]) -> String {
        self.root.run("systemctl", args)
    }

    fn connect(&self) -> EchoConn {
        let vip = SocketAddr::new(lb_tests::topology::VIP4.into(), VIP_TCP_PORT);
        EchoConn::connect_in(self.topo.client.name(), vip, lab::IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connection to {vip}: {e:#}\n{}", self.root.journal()))
    }

    /// Interfaces of the load balancer's namespace with an XDP program.
    fn xdp_links(&self) -> Vec<String> {
        let out = netns::exec_in(self.topo.lb.name(), &["ip", "-o", "link", "show"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(" xdp") || l.contains("prog/xdp"))
            .map(|l| l.split(':').nth(1).unwrap_or(l).trim().to_owned())
            .collect()
    }

    fn pins(&self) -> Vec<String> {
        match std::fs::read_dir(self.topo.pin_dir()) {
            Ok(dir) => dir
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn installed_version(&self) -> String {
        let out = self
            .root
            .output("dpkg-query", &["-W", "-f=${Version}", "lb"]);
        assert!(out.status.success(), "dpkg-query -W lb: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Everything a package must hold and do, from `dpkg -i` to `dpkg -P`: the
/// shipped config passes `lb check`, man pages render, bash completes, the
/// unit's command balances real connections, and removal leaves no pin and
/// no XDP attachment behind (stopping the unit alone keeps both, by design).
#[test]
fn package_installs_serves_and_removes_without_a_trace() {
    let deb = deb();
    let host_had_lb = Path::new("/usr/sbin/lb").exists();
    let box_ = Installed::new("pkg", &deb);
    let root = &box_.root;

    // What dpkg installed, as dpkg sees it.
    let conffiles = root.run("dpkg-query", &["-W", "-f=${Conffiles}", "lb"]);
    assert!(conffiles.contains("/etc/lb/lb.toml"), "{conffiles}");
    let files = root.run("dpkg", &["-L", "lb"]);
    for want in [
        "/usr/sbin/lb",
        "/lib/systemd/system/lb.service",
        "/usr/share/lb/examples/example.toml",
        "/usr/share/lb/grafana/lb-dashboard.json",
        "/usr/share/lb/prometheus/lb-alerts.yml",
        "/usr/share/lb/prometheus/prometheus.yml",
        "/usr/share/doc/lb/config.md",
        "/usr/share/doc/lb/copyright",
        "/usr/share/man/man8/lb.8.gz",
        "/usr/share/man/man8/lb-check.8.gz",
        "/usr/share/man/man8/lb-target-attach.8.gz",
        "/usr/share/bash-completion/completions/lb",
        "/usr/share/zsh/vendor-completions/_lb",
        "/usr/share/fish/vendor_completions.d/lb.fish",
    ] {
        assert!(
            files.lines().any(|l| l.trim() == want),
            "{want} is not in the package:\n{files}"
        );
    }
    // The host saw none of it.
    assert_eq!(
        Path::new("/usr/sbin/lb").exists(),
        host_had_lb,
        "the install reached the host's /usr"
    );
    assert!(
        !netns::try_run("dpkg-query", ["-W", "lb"])
            .expect("dpkg-query")
            .status
            .success(),
        "the host's dpkg database lists lb"
    );

    // The shipped config is valid as it is.
    let check = root.run("lb", &["check", "--config", "/etc/lb/lb.toml"]);
    assert!(check.contains("config OK"), "{check}");
    // man finds and renders the pages; bash completes subcommands.
    let page = root.run("sh", &["-c", "MANWIDTH=100 man 8 lb-check | col -b"]);
    assert!(
        page.contains("lb-check") && page.contains("--config"),
        "{page}"
    );
    let page = root.run("sh", &["-c", "MANWIDTH=100 man 8 lb | col -b"]);
    assert!(
        page.contains("target-groups") && page.contains("check"),
        "{page}"
    );
    let words = root.run(
        "bash",
        &["-c", ". /usr/share/bash-completion/completions/lb; COMP_WORDS=(lb che); COMP_CWORD=1; _lb lb che lb; echo \"${COMPREPLY[@]}\""],
    );
    assert!(
        words.contains("check"),
        "bash completion of `lb che`: {words}"
    );

    // The unit's command, as systemd runs it, on a real config.
    let pin_dir = box_.configure();
    box_.systemctl(&["start", UNIT]);
    let pid = root
        .main_pid(UNIT)
        .unwrap_or_else(|| panic!("lb.service not running\n{}", root.journal()));
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe of lb.service");
    assert_eq!(
        exe,
        Path::new("/usr/sbin/lb"),
        "lb.service runs {}",
        exe.display()
    );
    let mut conn = box_.connect();
    conn.echo("through the packaged unit")
        .expect("echo through the VIP");
    assert!(
        !box_.xdp_links().is_empty(),
        "no XDP attachment while lb.service runs"
    );

    // Stopping keeps forwarding (program attached, maps pinned).
    box_.systemctl(&["stop", UNIT]);
    assert_eq!(
        root.main_pid(UNIT),
        None,
        "lb.service still runs after stop"
    );
    conn.echo("after systemctl stop")
        .expect("forwarding stopped with the unit");
    assert!(!box_.pins().is_empty(), "stop removed the pins");

    // Removal: no pin, no attachment, no binary; the conffile stays until purge.
    let removed = root.run("dpkg", &["-r", "lb"]);
    assert_eq!(
        box_.pins(),
        Vec::<String>::new(),
        "pins left in {} after dpkg -r:\n{removed}",
        pin_dir.display()
    );
    assert_eq!(
        box_.xdp_links(),
        Vec::<String>::new(),
        "XDP still attached after dpkg -r:\n{removed}"
    );
    assert!(
        conn.echo("after dpkg -r").is_err(),
        "the VIP still answers after dpkg -r"
    );
    assert!(
        !root.path("/usr/sbin/lb").exists(),
        "dpkg -r left /usr/sbin/lb"
    );
    assert!(
        root.path("/etc/lb/lb.toml").exists(),
        "dpkg -r removed the conffile"
    );
    root.run("dpkg", &["-P", "lb"]);
    assert!(!root.path("/etc/lb").exists(), "dpkg -P left /etc/lb");
    assert!(
        !root.output("dpkg-query", &["-W", "lb"]).status.success(),
        "lb still known to dpkg after purge"
    );
}

/// Upgrading a running package: `dpkg -i` of a newer build restarts
/// lb.service on the new files (the postinst's try-restart), and the new
/// daemon adopts the pinned maps and links: a connection opened before
/// keeps echoing through the whole upgrade, on the same target.
#[test]
fn upgrade_restarts_the_unit_without_dropping_flows() {
    let deb = deb();
    let box_ = Installed::new("pkgup", &deb);
    let root = &box_.root;
    box_.configure();
    box_.systemctl(&["start", UNIT]);
    let old_pid = root
        .main_pid(UNIT)
        .unwrap_or_else(|| panic!("lb.service not running\n{}", root.journal()));
    let old_version = box_.installed_version();

    // The second build: the same package with a higher version.
    let newer = rebuild_with_version(
        &deb,
        &box_.topo.run_dir().join("newer"),
        &format!("{old_version}+up1"),
    );

    let conn = box_.connect();
    let target = conn.target.clone();
    let mut pinger = Pinger::start(conn);
    pinger.expect_progress(5, "before the upgrade");
    let out = box_.install(&newer);
    pinger.expect_progress(20, "after the upgrade");
    let mut conn = pinger.finish();
    conn.echo("after the upgrade")
        .expect("echo after the upgrade");
    assert_eq!(conn.target, target);

    assert_eq!(
        box_.installed_version(),
        format!("{old_version}+up1"),
        "{out}"
    );
    let new_pid = root.main_pid(UNIT).unwrap_or_else(|| {
        panic!(
            "lb.service not running after the upgrade\n{out}\n{}",
            root.journal()
        )
    });
    assert_ne!(
        new_pid,
        old_pid,
        "the upgrade did not restart lb.service:\n{out}\n{}",
        root.journal()
    );
    // It may still be ending (SIGTERM, then its maps handed over) or be a
    // zombie not yet reaped: both count as gone once it is no longer running.
    let ended = Instant::now();
    while runs(old_pid) {
        assert!(
            ended.elapsed() < Duration::from_secs(30),
            "the old daemon still runs"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The new process runs the new file (the old one's is unlinked: "(deleted)").
    let exe = std::fs::read_link(format!("/proc/{new_pid}/exe")).expect("exe");
    assert_eq!(exe, Path::new("/usr/sbin/lb"));
    // And new connections are balanced by it.
    let mut fresh = box_.connect();
    fresh
        .echo("a new connection after the upgrade")
        .expect("new connection after the upgrade");

    // Leave nothing: stop, remove (prerm runs lb down).
    box_.systemctl(&["stop", UNIT]);
    root.run("dpkg", &["-P", "lb"]);
    assert_eq!(box_.xdp_links(), Vec::<String>::new());
}

/// `deb` unpacked, its control file given `version`, packed again under
/// `dir`.
fn rebuild_with_version(deb: &Path, dir: &Path, version: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create the rebuild directory");
    let tree = dir.join("tree");
    netns::run(
        "dpkg-deb",
        [OsStr::new("-R"), deb.as_os_str(), tree.as_os_str()],
    );
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).expect("read control");
    let old = text
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .expect("Version in control")
        .to_owned();
    std::fs::write(
        &control,
        text.replace(
            &format!("Version: {old}\n"),
            &format!("Version: {version}\n"),
        ),
    )
    .expect("write control");
    let out = dir.join(format!("lb_{version}_amd64.deb"));
    netns::run(
        "dpkg-deb",
        [
            OsStr::new("-Zgzip"),
            OsStr::new("--root-owner-group"),
            OsStr::new("-b"),
            tree.as_os_str(),
            out.as_os_str(),
        ],
    );
    out
}

/// Whether process `pid` exists and has not exited (a zombie has).
fn runs(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        // "pid (comm) state ...": the state follows the last ')'.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}
