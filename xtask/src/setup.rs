//! `cargo xtask setup`: everything the build, tests, benchmarks and demo need
//! beyond rustup's stable and nightly toolchains. Idempotent; when all is in
//! place it only looks (no apt, no cargo install) and takes well under a
//! second.
use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{cmd::Cmd, project};

/// bpf-linker release known to build against the nightly toolchain's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// cargo-fuzz release that `cargo xtask fuzz` drives (its libFuzzer output
/// and `run` arguments are what fuzz.rs reads).
const CARGO_FUZZ_VERSION: &str = "0.13.1";

/// Debian packages used by the tests, benchmarks and demo.
const APT_PACKAGES: &[&str] = &[
    "bpftool",
    "iproute2",
    "iputils-ping",
    "iperf3",
    "python3-scapy",
    "curl",
    "nftables",
    "ethtool",
    "socat",
    "tcpdump",
    "xdp-tools",
    "haproxy",
    "nghttp2-client",
    "openssl",
    "valgrind",
    // BIRD 2: the BGP daemon beside `lb run` in the scale-out tests (tests/tests/bgp.rs).
    "bird2",
    // Headless Chromium: the status page's browser test (tests/tests/status_page.rs).
    "chromium",
    // Prometheus and promtool: the alert rules and /metrics checked by the
    // real tools (tests/tests/prometheus.rs); man and col render the
    // packaged man pages (tests/tests/package.rs).
    "prometheus",
    "man-db",
    "bsdextrautils",
];

/// What `setup` found or made, for the build.
pub struct Toolchain {
    /// `<cache>/bpf-linker/bin/bpf-linker`.
    pub bpf_linker: PathBuf,
}

pub fn setup() -> Result<Toolchain> {
    let start = Instant::now();
    let nightly = sysroot("+nightly").context(
        "the nightly toolchain is needed for the eBPF build (build-std); \
         install it with `rustup toolchain install nightly`",
    )?;
    let stable = sysroot("+stable").context("the stable toolchain is needed for the host build")?;
    rust_components(&stable, &nightly)?;
    let bpf_linker = bpf_linker(&nightly)?;
    apt_packages()?;
    bpffs()?;
    eprintln!("setup: ready ({:.1?})", start.elapsed());
    Ok(Toolchain { bpf_linker })
}

/// Installs cargo-fuzz (once, into cargo's own bin directory, so that
/// `cargo +nightly fuzz` works by hand too). Only `cargo xtask setup` and
/// `cargo xtask fuzz` need it: builds and tests do not.
pub fn cargo_fuzz() -> Result<()> {
    let installed = Cmd::new("cargo")
        .args(["fuzz", "--version"])
        .try_read()?
        .is_some_and(|v| v.trim().ends_with(CARGO_FUZZ_VERSION));
    if installed {
        return Ok(());
    }
    eprintln!("setup: installing cargo-fuzz {CARGO_FUZZ_VERSION} (about a minute, once)");
    Cmd::new("cargo")
        .args([
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--locked",
        ])
        .run()
        .context("installing cargo-fuzz")
}

fn sysroot(toolchain: &str) -> Result<PathBuf> {
    let out = Cmd::new("rustc")
        .args([toolchain, "--print", "sysroot"])
        .read()?;
    Ok(PathBuf::from(out.trim()))
}

/// rust-src for nightly (`-Z build-std=core`), clippy and rustfmt for `lint`.
fn rust_components(stable: &Path, nightly: &Path) -> Result<()> {
    let wanted = [
        ("nightly", "rust-src", nightly.join("lib/rustlib/src/rust")),
        ("nightly", "clippy", nightly.join("bin/cargo-clippy")),
        ("stable", "clippy", stable.join("bin/cargo-clippy")),
        ("stable", "rustfmt", stable.join("bin/rustfmt")),
    ];
    for (toolchain, component, marker) in wanted {
        if !marker.exists() {
            Cmd::new("rustup")
                .args(["component", "add", component, "--toolchain", toolchain])
                .run()
                .with_context(|| format!("adding {component} to the {toolchain} toolchain"))?;
        }
    }
    Ok(())
}

/// Builds bpf-linker (once) against the LLVM shipped in the nightly toolchain.
fn bpf_linker(nightly: &Path) -> Result<PathBuf> {
    let cache = project::cache_dir()?;
    let llvm_prefix = cache.join("llvm");
    link_nightly_llvm(nightly, &llvm_prefix.join("lib"))?;

    let root = cache.join("bpf-linker");
    let linker = root.join("bin/bpf-linker");
    if Cmd::new(&linker).arg("--version").succeeds() {
        return Ok(linker);
    }
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against the nightly toolchain's LLVM \
         into {} (takes 1-2 minutes, once)",
        root.display()
    );
    Cmd::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--force",
        ])
        .arg("--root")
        .arg(&root)
        .args(["--no-default-features", "--features", "llvm-22"])
        .env("LLVM_PREFIX", &llvm_prefix)
        .run()
        .context("building bpf-linker")?;
    let version = Cmd::new(&linker)
        .arg("--version")
        .read()
        .context("the freshly built bpf-linker does not run")?;
    eprintln!("setup: {}", version.trim());
    Ok(linker)
}

/// `<lib>/libLLVM.so` and `<lib>/<soname>` -> the nightly sysroot's
/// `lib/libLLVM.so.*`: the LLVM_PREFIX layout llvm-sys expects.
fn link_nightly_llvm(nightly: &Path, lib: &Path) -> Result<()> {
    let sysroot_lib = nightly.join("lib");
    let mut found: Vec<PathBuf> = fs::read_dir(&sysroot_lib)
        .with_context(|| format!("listing {}", sysroot_lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .collect();
    found.sort();
    let Some(llvm) = found.pop() else {
        bail!(
            "no libLLVM.so.* in {}: the nightly toolchain has no shared LLVM to build bpf-linker against",
            sysroot_lib.display()
        );
    };
    fs::create_dir_all(lib).with_context(|| format!("creating {}", lib.display()))?;
    let soname = llvm.file_name().expect("read_dir entries have names");
    for name in [Path::new("libLLVM.so"), Path::new(soname)] {
        let link = lib.join(name);
        if fs::read_link(&link).is_ok_and(|t| t == llvm) {
            continue;
        }
        if fs::symlink_metadata(&link).is_ok() {
            fs::remove_file(&link).with_context(|| format!("removing stale {}", link.display()))?;
        }
        symlink(&llvm, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), llvm.display()))?;
    }
    Ok(())
}

fn apt_packages() -> Result<()> {
    let mut missing = Vec::new();
    for pkg in APT_PACKAGES {
        let status = Cmd::new("dpkg-query")
            .args(["-W", "-f=${Status}", pkg])
            .try_read()
            .context(
                "dpkg-query is needed to check for Debian packages (this set-up assumes Debian)",
            )?;
        if status.as_deref() != Some("install ok installed") {
            missing.push(*pkg);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !project::is_root() {
        bail!(
            "MISSING DEBIAN PACKAGES: {}\n\
             Installing them needs root: run `cargo xtask setup` as root, or \
             `apt-get install {}` yourself.",
            missing.join(" "),
            missing.join(" ")
        );
    }
    eprintln!("setup: installing {}", missing.join(" "));
    Cmd::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;
    Cmd::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
        .context("installing Debian packages")?;
    Ok(())
}

/// Mounts bpffs at /sys/fs/bpf (the kernel does not at boot here).
fn bpffs() -> Result<()> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    let mounted = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fstype) = (f.next(), f.next(), f.next());
        dir == Some("/sys/fs/bpf") && fstype == Some("bpf")
    });
    if mounted {
        return Ok(());
    }
    if !project::is_root() {
        eprintln!("setup: note: bpffs is not mounted at /sys/fs/bpf and only root can mount it");
        return Ok(());
    }
    Cmd::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .run()
        .context("mounting bpffs at /sys/fs/bpf")
}
