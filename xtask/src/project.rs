//! Where things are: the repository, the xtask's cache, who we run as.
use std::{
    env,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

/// The workspace root (the parent of `xtask/`).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
}

/// `<root>/target`.
pub fn target_dir() -> PathBuf {
    root().join("target")
}

/// `$LB_XTASK_CACHE`, else `$HOME/.cache/lb-xtask`: the bpf-linker build and
/// the LLVM symlinks it is linked against. It must stay put (the linker's
/// rpath points into it), so it is not under `target/` or `/tmp`.
pub fn cache_dir() -> Result<PathBuf> {
    let dir = match env::var_os("LB_XTASK_CACHE").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .context("neither LB_XTASK_CACHE nor HOME is set: cannot pick a cache directory")?;
            PathBuf::from(home).join(".cache/lb-xtask")
        }
    };
    if dir.is_absolute() {
        Ok(dir)
    } else {
        Ok(env::current_dir()
            .context("reading the current directory")?
            .join(dir))
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
