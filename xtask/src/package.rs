//! `cargo xtask package`: the Debian package `lb_<version>_amd64.deb`, built
//! with dpkg-deb from a staged tree (no debian/ source package: the binary
//! comes from `cargo xtask build`, everything else from the repository).
//!
//! What goes where:
//! - `/usr/sbin/lb`; `/lib/systemd/system/lb.service` (deploy/systemd, its
//!   `ExecStart` pointed at /usr/sbin/lb);
//! - `/etc/lb/lb.toml` (conffile, deploy/debian/lb.toml);
//! - `/usr/share/lb/`: examples (config/), grafana/, prometheus/, bird/;
//! - `/usr/share/doc/lb/`: README, ARCHITECTURE, docs/, copyright;
//! - man pages (`lb(8)` and one per subcommand) and bash/zsh/fish
//!   completions, written by the packaged binary itself (`lb
//!   generate-docs`), so they match it;
//! - maintainer scripts (deploy/debian/): an upgrade restarts a running
//!   unit (the new daemon adopts the pins: no flow is dropped); removal
//!   stops it and runs `lb down` (nothing stays attached or pinned).
use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use crate::{cmd::Cmd, project};

/// Where the unit in deploy/systemd expects the binary (a hand install),
/// and where the package puts it.
const UNIT_BIN_BY_HAND: &str = "/usr/local/bin/lb";
const PACKAGE_BIN: &str = "/usr/sbin/lb";

/// Files copied as they are: (repository path, path in the package).
const FILES: &[(&str, &str)] = &[
    ("deploy/debian/lb.toml", "etc/lb/lb.toml"),
    ("config/example.toml", "usr/share/lb/examples/example.toml"),
    ("config/demo.toml", "usr/share/lb/examples/demo.toml"),
    (
        "deploy/grafana/lb-dashboard.json",
        "usr/share/lb/grafana/lb-dashboard.json",
    ),
    (
        "deploy/prometheus/prometheus.yml",
        "usr/share/lb/prometheus/prometheus.yml",
    ),
    (
        "deploy/prometheus/lb-alerts.yml",
        "usr/share/lb/prometheus/lb-alerts.yml",
    ),
    ("deploy/bird/README.md", "usr/share/lb/bird/README.md"),
    (
        "deploy/bird/balancer.conf",
        "usr/share/lb/bird/balancer.conf",
    ),
    ("deploy/bird/router.conf", "usr/share/lb/bird/router.conf"),
    ("README.md", "usr/share/doc/lb/README.md"),
    ("ARCHITECTURE.md", "usr/share/doc/lb/ARCHITECTURE.md"),
    ("docs/config.md", "usr/share/doc/lb/config.md"),
    ("docs/api.md", "usr/share/doc/lb/api.md"),
    ("docs/openapi.yaml", "usr/share/doc/lb/openapi.yaml"),
    ("docs/metrics.md", "usr/share/doc/lb/metrics.md"),
    ("docs/datapath.md", "usr/share/doc/lb/datapath.md"),
    ("deploy/debian/copyright", "usr/share/doc/lb/copyright"),
];

/// Configuration files dpkg keeps the operator's edits of.
const CONFFILES: &[&str] = &["/etc/lb/lb.toml"];

/// Maintainer scripts (deploy/debian/).
const SCRIPTS: &[&str] = &["postinst", "prerm", "postrm"];

/// Completion files `lb generate-docs` writes, and where each shell looks.
const COMPLETIONS: &[(&str, &str)] = &[
    ("bash/lb", "usr/share/bash-completion/completions/lb"),
    ("zsh/_lb", "usr/share/zsh/vendor-completions/_lb"),
    (
        "fish/lb.fish",
        "usr/share/fish/vendor_completions.d/lb.fish",
    ),
];

/// Packages the binary and the maintainer scripts need at run time.
/// libc6: the binary is linked against glibc (symbols up to GLIBC_2.34);
/// iproute2: `lb target` runs `ip`; init-system-helpers: deb-systemd-*.
const DEPENDS: &str = "libc6 (>= 2.34), iproute2, init-system-helpers (>= 1.54)";

/// Builds `<out_dir>/lb_<version>_amd64.deb` around the `lb` binary `lb`;
/// returns its path.
pub fn package(lb: &Path, out_dir: &Path) -> Result<PathBuf> {
    let root = project::root();
    let version = lb_version(lb)?;
    let stage = out_dir.join("deb-root");
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    install(lb, &stage.join(PACKAGE_BIN.trim_start_matches('/')), 0o755)?;
    unit(root, &stage)?;
    for (from, to) in FILES {
        install(&root.join(from), &stage.join(to), 0o644)?;
    }
    generated_docs(lb, out_dir, &stage)?;
    debian_dir(root, &stage, &version)?;
    let deb = out_dir.join(format!("lb_{version}_amd64.deb"));
    Cmd::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&stage)
        .arg(&deb)
        .run()
        .context("dpkg-deb --build")?;
    eprintln!("package: {}", deb.display());
    Ok(deb)
}

/// The version `lb --version` reports ("lb 0.1.0" -> "0.1.0").
fn lb_version(lb: &Path) -> Result<String> {
    let out = Cmd::new(lb).arg("--version").read()?;
    match out.trim().strip_prefix("lb ") {
        Some(v)
            if !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".+~-".contains(c)) =>
        {
            Ok(v.to_owned())
        }
        _ => bail!("unexpected `{} --version` output {out:?}", lb.display()),
    }
}

/// The systemd unit, running the packaged binary.
fn unit(root: &Path, stage: &Path) -> Result<()> {
    let src = root.join("deploy/systemd/lb.service");
    let text = fs::read_to_string(&src).with_context(|| format!("reading {}", src.display()))?;
    if !text.contains(&format!("ExecStart={UNIT_BIN_BY_HAND} ")) {
        bail!(
            "{} no longer runs {UNIT_BIN_BY_HAND}: update package.rs",
            src.display()
        );
    }
    let text = text
        .replace(UNIT_BIN_BY_HAND, PACKAGE_BIN)
        .replace(
            "# systemd unit of the lb daemon. Install as /etc/systemd/system/lb.service,\n# the config as /etc/lb/lb.toml, then `systemctl enable --now lb`.",
            "# systemd unit of the lb daemon (from the lb package). Edit\n# /etc/lb/lb.toml, then `systemctl enable --now lb`.",
        );
    write(&stage.join("lib/systemd/system/lb.service"), &text, 0o644)
}

/// Man pages (gzipped, as Debian ships them) and completions, from `lb
/// generate-docs`.
fn generated_docs(lb: &Path, out_dir: &Path, stage: &Path) -> Result<()> {
    let gen_dir = out_dir.join("deb-generated");
    if gen_dir.exists() {
        fs::remove_dir_all(&gen_dir).with_context(|| format!("removing {}", gen_dir.display()))?;
    }
    Cmd::new(lb)
        .args(["generate-docs", "--out-dir"])
        .arg(&gen_dir)
        .read()?;
    let man8 = stage.join("usr/share/man/man8");
    fs::create_dir_all(&man8).with_context(|| format!("creating {}", man8.display()))?;
    let mut pages = 0;
    for entry in fs::read_dir(gen_dir.join("man")).context("listing generated man pages")? {
        let page = entry?.path();
        let dest = man8.join(page.file_name().context("man page name")?);
        fs::copy(&page, &dest).with_context(|| format!("copying {}", page.display()))?;
        // -n: no name or time stamp in the header, so builds are identical.
        Cmd::new("gzip").args(["-9n"]).arg(&dest).run()?;
        pages += 1;
    }
    if pages < 2 {
        bail!("lb generate-docs wrote {pages} man pages");
    }
    for (from, to) in COMPLETIONS {
        install(
            &gen_dir.join("completions").join(from),
            &stage.join(to),
            0o644,
        )?;
    }
    Ok(())
}

/// DEBIAN/: control, conffiles, maintainer scripts, md5sums.
fn debian_dir(root: &Path, stage: &Path, version: &str) -> Result<()> {
    let debian = stage.join("DEBIAN");
    let installed_kib = Cmd::new("du")
        .args(["-sk", "--apparent-size"])
        .arg(stage)
        .read()?
        .split_whitespace()
        .next()
        .map(str::to_owned)
        .context("du printed nothing")?;
    let control = format!(
        "Package: lb\n\
         Version: {version}\n\
         Architecture: amd64\n\
         Maintainer: xdp-lb developers <xdp-lb@localhost>\n\
         Installed-Size: {installed_kib}\n\
         Depends: {DEPENDS}\n\
         Section: net\n\
         Priority: optional\n\
         Description: XDP-accelerated layer-4 load balancer\n \
         lb puts TCP and UDP services behind virtual IPs: an XDP program picks a\n \
         target for each new flow with a weighted Maglev hash, keeps it there and\n \
         forwards at line rate; the daemon programs it from /etc/lb/lb.toml and\n \
         health checks, serves HTTP, HTTPS and TLS listeners itself, a management\n \
         API, and Prometheus metrics.\n"
    );
    write(&debian.join("control"), &control, 0o644)?;
    let conffiles: String = CONFFILES.iter().map(|f| format!("{f}\n")).collect();
    write(&debian.join("conffiles"), &conffiles, 0o644)?;
    for script in SCRIPTS {
        install(
            &root.join("deploy/debian").join(script),
            &debian.join(script),
            0o755,
        )?;
    }
    let sums = Cmd::new("sh")
        .args([
            "-c",
            "find . -type f ! -path './DEBIAN/*' -printf '%P\\0' | sort -z | xargs -0 md5sum",
        ])
        .dir(stage)
        .read()?;
    write(&debian.join("md5sums"), &sums, 0o644)
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", to.display()))
}

fn write(to: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", to.display()))
}
