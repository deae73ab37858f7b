//! The host's drain state, kept in a file (`bgp.drain_file`): it exists
//! while the host is drained. A file rather than daemon memory, so that a
//! drained host that restarts (the daemon, or the machine: the default is
//! under /var/lib, not tmpfs) stays drained until someone resumes it; and
//! rather than a pin, because bpffs holds no plain files and `lb down`
//! removes the pins, which must not resume the host either.
use std::{
    fs, io,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("reading drain state {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("recording drain state in {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("removing drain state {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
}

/// `bgp.drain_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainFile {
    path: PathBuf,
}

impl DrainFile {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the host is drained: the file exists. Anything but "exists"
    /// or "does not exist" (no permission, a directory in its place) is an
    /// error, which callers treat as drained: announcing by mistake is the
    /// worse failure.
    pub fn is_drained(&self) -> Result<bool, DrainError> {
        match fs::metadata(&self.path) {
            Ok(m) if m.is_file() => Ok(true),
            Ok(_) => Err(DrainError::Read {
                path: self.path.clone(),
                source: io::Error::other("not a regular file"),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(DrainError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Records the drain (creating the directory); durable before it
    /// returns, so a crash right after cannot forget it.
    pub fn set(&self) -> Result<(), DrainError> {
        let err = |source| DrainError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(err)?;
        }
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let text = format!(
            "drained by `lb host drain` at {since} (Unix time); `lb host resume` announces again\n"
        );
        let tmp = self.path.with_extension("tmp");
        fs::write(&tmp, text).map_err(err)?;
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(err)?;
        fs::rename(&tmp, &self.path).map_err(err)?;
        self.sync_dir().map_err(err)
    }

    /// Removes the record; one already gone is fine.
    pub fn clear(&self) -> Result<(), DrainError> {
        let err = |source| DrainError::Remove {
            path: self.path.clone(),
            source,
        };
        match fs::remove_file(&self.path) {
            Ok(()) => self.sync_dir().map_err(err),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    fn sync_dir(&self) -> io::Result<()> {
        match self.path.parent() {
            Some(dir) => fs::File::open(dir)?.sync_all(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_survives_a_new_reader_and_clear_is_idempotent() {
        let dir = std::env::temp_dir().join(format!("lb-drain-test-{}", std::process::id()));
        let path = dir.join("state/drained");
        let file = DrainFile::new(&path);
        assert!(!file.is_drained().unwrap());
        file.set().unwrap();
        assert!(DrainFile::new(&path).is_drained().unwrap());
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("drained by `lb host drain` at "), "{text}");
        file.set().unwrap();
        file.clear().unwrap();
        assert!(!file.is_drained().unwrap());
        file.clear().unwrap();
        fs::create_dir_all(&path).unwrap();
        let err = file.is_drained().unwrap_err().to_string();
        assert_eq!(
            err,
            format!("reading drain state {}: not a regular file", path.display())
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
