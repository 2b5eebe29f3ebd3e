//! `coordinator backup DEST`: a consistent copy of the accounts database,
//! safe to take while a coordinator serves it.
//!
//! SQLite's online backup API copies every page in one step, inside one read
//! transaction of its own connection: the copy is the database as of one
//! committed transaction, and in WAL mode that reader never blocks the
//! coordinator's writes (nor do they disturb it). The copy is made in a
//! temporary file beside `DEST` (mode 0600: it holds password hashes),
//! switched to a single-file journal, checked with `PRAGMA integrity_check`,
//! synced, and only then renamed to `DEST`: a `DEST` that exists is complete.
//!
//! Restoring is copying the file back while the coordinator is stopped (the
//! README's "Operating" section says how).

use crate::store::DB_FILE;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// How often a step that found the database busy is tried again.
const BUSY_RETRIES: u32 = 100;
/// The pause between those tries.
const BUSY_PAUSE: Duration = Duration::from_millis(50);

/// Why a backup was not made.
#[derive(Debug, Error)]
pub enum BackupError {
    /// The data folder holds no accounts database.
    #[error("no accounts database at {0}")]
    NoDatabase(PathBuf),
    /// The destination exists and overwriting was not asked for.
    #[error("{0} already exists (give --force to replace it)")]
    Exists(PathBuf),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// SQLite refused a step.
    #[error("{what}: {source}")]
    Sqlite {
        /// The step, in words.
        what: &'static str,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The database stayed locked for every retry.
    #[error("the database stayed busy; try again")]
    Busy,
    /// The copy failed its integrity check.
    #[error("the copy failed its integrity check: {0}")]
    Corrupt(String),
}

/// What a backup copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Accounts in the copy.
    pub accounts: u64,
    /// Size of the copy in bytes.
    pub bytes: u64,
}

fn sqlite(what: &'static str) -> impl FnOnce(rusqlite::Error) -> BackupError {
    move |source| BackupError::Sqlite { what, source }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Copies the accounts database of `data_dir` to `dest`, consistently,
/// whether or not a coordinator is serving it. An existing `dest` is
/// replaced only when `overwrite` is set.
pub fn backup(data_dir: &Path, dest: &Path, overwrite: bool) -> Result<Report, BackupError> {
    let source_path = data_dir.join(DB_FILE);
    if !source_path.is_file() {
        return Err(BackupError::NoDatabase(source_path));
    }
    if dest.exists() && !overwrite {
        return Err(BackupError::Exists(dest.to_path_buf()));
    }
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    let partial = dest.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let result = copy_to(&source_path, &partial).and_then(|report| {
        std::fs::rename(&partial, dest).map_err(io(dest))?;
        sync_parent(dest)?;
        Ok(report)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

fn copy_to(source_path: &Path, partial: &Path) -> Result<Report, BackupError> {
    create_private(partial)?;
    // Read-write so that SQLite can use the coordinator's WAL index; nothing
    // is written through this connection.
    let source = Connection::open_with_flags(
        source_path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite("opening the database"))?;
    source
        .busy_timeout(Duration::from_secs(5))
        .map_err(sqlite("setting a busy time-out"))?;
    let mut copy = Connection::open(partial).map_err(sqlite("creating the copy"))?;
    {
        let backup = Backup::new(&source, &mut copy).map_err(sqlite("starting the backup"))?;
        let mut busy = 0;
        loop {
            // -1: every page in one step, so one read transaction sees them all.
            match backup.step(-1).map_err(sqlite("copying pages"))? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked => {
                    busy += 1;
                    if busy > BUSY_RETRIES {
                        return Err(BackupError::Busy);
                    }
                    std::thread::sleep(BUSY_PAUSE);
                }
                // A future variant: try again, bounded like a busy step.
                _ => busy += 1,
            }
        }
    }
    // A single file, without -wal and -shm beside it.
    copy.pragma_update(None, "journal_mode", "DELETE")
        .map_err(sqlite("switching the copy's journal mode"))?;
    let check: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(sqlite("checking the copy"))?;
    if check != "ok" {
        return Err(BackupError::Corrupt(check));
    }
    let accounts: i64 = copy
        .query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))
        .map_err(sqlite("counting accounts in the copy"))?;
    drop(copy);
    let file = std::fs::File::open(partial).map_err(io(partial))?;
    file.sync_all().map_err(io(partial))?;
    let bytes = file.metadata().map_err(io(partial))?.len();
    Ok(Report {
        accounts: u64::try_from(accounts).unwrap_or(0),
        bytes,
    })
}

/// Creates `path` empty with mode 0600, whatever the umask.
fn create_private(path: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(io(path))
}

/// Syncs the folder holding `path`, so the rename survives a crash.
fn sync_parent(path: &Path) -> Result<(), BackupError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_a_database_is_a_clear_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("copy.sqlite3");
        let err = backup(dir.path(), &dest, false).unwrap_err();
        assert!(matches!(err, BackupError::NoDatabase(_)), "{err}");
        assert!(err.to_string().contains(DB_FILE), "{err}");
        assert!(!dest.exists());
    }

    #[test]
    fn a_failed_copy_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DB_FILE), b"not a database, just some text").unwrap();
        let dest = dir.path().join("copy.sqlite3");
        assert!(backup(dir.path(), &dest, false).is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from(DB_FILE)], "{left:?}");
    }
}
