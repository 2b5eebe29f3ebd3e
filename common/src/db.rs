//! One thread owns each SQLite database; async code sends it jobs and awaits
//! the replies.
//!
//! Jobs that arrive together run in one transaction (each in its own
//! savepoint, so one failing job does not undo the others), and every reply
//! is sent only after that transaction has committed: a caller that gets
//! `Ok` knows its write is on disk. No SQLite call ever runs on a tokio
//! worker thread.
//!
//! Databases are opened in WAL mode with a busy time-out, created with mode
//! 0600, and migrated with `PRAGMA user_version`.

use rusqlite::{Connection, Transaction};
use std::path::{Path, PathBuf};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

/// Most jobs run in one transaction.
const MAX_BATCH: usize = 512;
/// Jobs that may wait for the database thread.
const QUEUE: usize = 1024;

/// Errors of the database layer.
#[derive(Debug, Error)]
pub enum DbError {
    /// SQLite refused an operation.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database file could not be opened or prepared.
    #[error("cannot open database {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// The database thread is gone (the program is shutting down).
    #[error("the database is closed")]
    Closed,
}

/// Told on the database thread after every batch: how long the batch took
/// to run and commit, and whether it committed (for metrics).
pub type CommitObserver = Box<dyn Fn(std::time::Duration, bool) + Send>;

type Finisher = Box<dyn FnOnce(Option<&rusqlite::Error>) + Send>;
type Job = Box<dyn FnOnce(&mut Transaction<'_>) -> Finisher + Send>;

/// A handle to a database thread. Cloning it shares the thread; the thread
/// ends when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct Db {
    tx: mpsc::Sender<Job>,
}

impl Db {
    /// Opens (creating with mode 0600) the database at `path`, applies
    /// `migrations` (migration `i` brings `user_version` from `i` to `i + 1`)
    /// and starts its thread.
    pub fn open(path: &Path, migrations: &'static [&'static str]) -> Result<Db, DbError> {
        Db::open_observed(path, migrations, None)
    }

    /// [`Db::open`], with `observer` told about every batch.
    pub fn open_observed(
        path: &Path,
        migrations: &'static [&'static str],
        observer: Option<CommitObserver>,
    ) -> Result<Db, DbError> {
        let open_err = |reason: String| DbError::Open {
            path: path.to_path_buf(),
            reason,
        };
        create_private(path).map_err(|e| open_err(e.to_string()))?;
        let mut conn = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        prepare(&mut conn, migrations).map_err(|e| open_err(e.to_string()))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let name = format!(
            "sqlite-{}",
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        std::thread::Builder::new()
            .name(name)
            .spawn(move || run(conn, rx, observer))
            .map_err(|e| open_err(e.to_string()))?;
        Ok(Db { tx })
    }

    /// Runs `f` on the database thread inside a transaction and returns its
    /// result once the transaction has committed.
    pub async fn call<R, F>(&self, f: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel();
        let job: Job = Box::new(move |t: &mut Transaction<'_>| {
            let result = t.savepoint().and_then(|sp| {
                let r = f(&sp)?;
                sp.commit()?;
                Ok(r)
            });
            Box::new(move |commit_err: Option<&rusqlite::Error>| {
                let result = match commit_err {
                    Some(e) => Err(DbError::Open {
                        path: PathBuf::new(),
                        reason: e.to_string(),
                    }),
                    None => result.map_err(DbError::Sqlite),
                };
                let _ = reply_tx.send(result);
            })
        });
        self.tx.send(job).await.map_err(|_| DbError::Closed)?;
        reply_rx.await.map_err(|_| DbError::Closed)?
    }
}

/// Creates the database file with mode 0600, and missing folders above it
/// with mode 0700, whatever the umask.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map(drop)
}

fn prepare(conn: &mut Connection, migrations: &[&str]) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let tx = conn.transaction()?;
    for (i, sql) in migrations.iter().enumerate().skip(version.max(0) as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<Job>, observer: Option<CommitObserver>) {
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut finishers = Vec::with_capacity(jobs.len());
        let started = std::time::Instant::now();
        let commit = conn.transaction().and_then(|mut tx| {
            for job in jobs.drain(..) {
                finishers.push(job(&mut tx));
            }
            tx.commit()
        });
        let err = commit.err();
        if let Some(observe) = &observer {
            observe(started.elapsed(), err.is_none());
        }
        if let Some(e) = &err {
            tracing::error!(error = %e, "database transaction failed");
        }
        for finish in finishers {
            finish(err.as_ref());
        }
        // Jobs never started (the transaction could not begin) are dropped,
        // which tells their callers the database is closed.
        drop(jobs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIGRATIONS: &[&str] = &["CREATE TABLE t (v INTEGER NOT NULL UNIQUE);"];

    #[tokio::test]
    async fn writes_persist_and_failures_stay_local() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite3");
        let db = Db::open(&path, MIGRATIONS).unwrap();
        let mut calls = Vec::new();
        for v in [1, 2, 2, 3] {
            let db = db.clone();
            calls.push(tokio::spawn(async move {
                db.call(move |c| c.execute("INSERT INTO t (v) VALUES (?1)", [v]))
                    .await
            }));
        }
        let mut failures = 0;
        for c in calls {
            if c.await.unwrap().is_err() {
                failures += 1;
            }
        }
        assert_eq!(failures, 1, "only the duplicate fails");
        drop(db);
        let db = Db::open(&path, MIGRATIONS).unwrap();
        let n: i64 = db
            .call(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(n, 3);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.sqlite3");
        std::fs::write(
            &path,
            b"this is not a database, just some text that is long enough",
        )
        .unwrap();
        let err = Db::open(&path, MIGRATIONS).unwrap_err();
        assert!(err.to_string().contains("bad.sqlite3"), "{err}");
    }
}
