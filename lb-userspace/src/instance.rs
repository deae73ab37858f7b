//! One `lb run` per pin directory: two daemons programming the same maps
//! would undo each other's changes, and `lb down` under a running daemon
//! would pull the program out from under it. An advisory `flock` on a file
//! named after the pin directory settles both.
use std::{
    fs::{File, OpenOptions},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

/// Where lock files live (tmpfs: they vanish at reboot with the pins).
const LOCK_DIR: &str = "/run/lock";

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("another `lb run` is serving pin_dir {pin_dir} (lock {lock}); stop it first")]
    Busy { pin_dir: PathBuf, lock: PathBuf },
    #[error("lock file {lock}: {source}")]
    Io {
        lock: PathBuf,
        source: std::io::Error,
    },
}

/// Held while the daemon runs; the lock goes with the file descriptor.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

fn lock_path(pin_dir: &Path) -> PathBuf {
    let name: String = pin_dir
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Path::new(LOCK_DIR).join(format!("lb{name}.lock"))
}

/// Takes the pin directory's lock, or says who holds it.
pub fn acquire(pin_dir: &Path) -> Result<InstanceLock, InstanceError> {
    let lock = lock_path(pin_dir);
    let io = |source| InstanceError::Io {
        lock: lock.clone(),
        source,
    };
    std::fs::create_dir_all(LOCK_DIR).map_err(io)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(io)?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            InstanceError::Busy {
                pin_dir: pin_dir.to_owned(),
                lock,
            }
        } else {
            io(err)
        });
    }
    Ok(InstanceLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_is_dropped() {
        let dir = PathBuf::from(format!("/tmp/lb-instance-test-{}", std::process::id()));
        let first = acquire(&dir).expect("first lock");
        let err = acquire(&dir).expect_err("second lock must be refused");
        assert!(
            matches!(err, InstanceError::Busy { .. }),
            "unexpected error: {err}"
        );
        drop(first);
        let again = acquire(&dir).expect("lock after release");
        drop(again);
        let _cleanup = std::fs::remove_file(lock_path(&dir));
    }

    #[test]
    fn lock_names_differ_per_pin_dir() {
        assert_ne!(
            lock_path(Path::new("/sys/fs/bpf/lb")),
            lock_path(Path::new("/sys/fs/bpf/lb2"))
        );
        assert_eq!(
            lock_path(Path::new("/sys/fs/bpf/lb")),
            PathBuf::from("/run/lock/lb_sys_fs_bpf_lb.lock")
        );
    }
}
