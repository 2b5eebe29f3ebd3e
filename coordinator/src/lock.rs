//! The data folder's lock: one process at a time works on the accounts
//! database.
//!
//! A serving coordinator holds an exclusive `flock(2)` on
//! `DATA_DIR/coordinator.lock` for as long as it runs; the operator commands
//! ([`crate::operator`]) take the same lock for their few milliseconds. A
//! second holder is refused at once (the lock is never waited for), with the
//! facts: which file, and that a coordinator (or another operator command)
//! is using it. The kernel drops the lock when its holder exits, however it
//! exits, so a crash never leaves a stale lock behind; the file itself stays
//! and is harmless.
//!
//! With the accounts in PostgreSQL (`--database`) the lock still keeps a
//! second coordinator out of the folder (its certificates), but the
//! database itself is shared on purpose, and the operator commands on it
//! take no lock.

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// File name of the lock inside the data folder.
pub const LOCK_FILE: &str = "coordinator.lock";

/// Errors taking the lock.
#[derive(Debug, Error)]
pub enum LockError {
    /// Another process holds the lock: a coordinator serving this folder,
    /// or an operator command working on it.
    #[error(
        "{} is locked by another process: a coordinator is serving this data folder \
         (or another operator command is working on it); stop it first",
        path.display()
    )]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct DataLock {
    _flock: Flock<File>,
    path: PathBuf,
}

impl DataLock {
    /// Takes the lock of `data_dir` (creating the folder with mode 0700 and
    /// the lock file with mode 0600 when missing), or says who holds it.
    pub fn acquire(data_dir: &Path) -> Result<DataLock, LockError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let path = data_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(flock) => Ok(DataLock {
                _flock: flock,
                path,
            }),
            Err((_, Errno::EWOULDBLOCK)) => Err(LockError::Busy { path }),
            Err((_, errno)) => Err(io(std::io::Error::from(errno))),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = DataLock::acquire(&data).unwrap();
        let err = DataLock::acquire(&data).unwrap_err();
        assert!(matches!(err, LockError::Busy { .. }), "{err}");
        assert!(err.to_string().contains(LOCK_FILE), "{err}");
        drop(first);
        let again = DataLock::acquire(&data).unwrap();
        assert_eq!(again.path(), data.join(LOCK_FILE));
    }
}
