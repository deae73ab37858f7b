//! The pin directory and the bpffs it must live on.
use std::{
    ffi::CString,
    io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    #[error("pin directory {path}: not on a bpf filesystem (mount one: `mount -t bpf bpf {path}`)")]
    NotBpffs { path: PathBuf },
    #[error("mounting bpffs at {path}: {source}")]
    Mount { path: PathBuf, source: io::Error },
    #[error("creating pin directory {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

fn mount_bpffs(path: &Path) -> Result<(), BpffsError> {
    let err = |source| BpffsError::Mount {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(path).map_err(err)?;
    let target = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: all pointers are valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}

/// Makes sure `pin_dir` exists on a bpffs. `/sys/fs/bpf` is mounted when it is
/// not (it is not at boot on every distribution); any other location must
/// already be a bpffs mount, because mounting over an arbitrary directory
/// would hide what is there.
pub fn prepare(pin_dir: &Path) -> Result<(), BpffsError> {
    let sys = Path::new("/sys/fs/bpf");
    if pin_dir.starts_with(sys) && !is_bpffs(sys) {
        mount_bpffs(sys)?;
    }
    let mut probe = pin_dir.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    if !is_bpffs(&probe) {
        return Err(BpffsError::NotBpffs {
            path: pin_dir.to_owned(),
        });
    }
    std::fs::create_dir_all(pin_dir).map_err(|source| BpffsError::Create {
        path: pin_dir.to_owned(),
        source,
    })
}

/// Where each pinned object lives under the pin directory.
#[derive(Clone, Debug)]
pub struct Pins {
    pub dir: PathBuf,
}

impl Pins {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }
    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn program(&self) -> PathBuf {
        self.dir.join(lb_common::maps::PROGRAM)
    }
    pub fn link(&self, interface: &str) -> PathBuf {
        self.dir.join(format!("link_{interface}"))
    }
}
