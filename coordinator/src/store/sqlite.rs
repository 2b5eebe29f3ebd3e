//! The accounts store in SQLite, in the data folder (the default). Every
//! call runs on the database thread of [`common::db::Db`]; migrations go by
//! SQLite's `user_version`.

use common::db::{CommitObserver, Db, DbError};
use rusqlite::OptionalExtension;
use std::path::Path;

use super::{token_hash, AccountInfo};

const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE accounts (
        name TEXT PRIMARY KEY NOT NULL,
        phc TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE tokens (
        hash BLOB PRIMARY KEY NOT NULL,
        name TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
        expires_at_ms INTEGER NOT NULL
    );
    CREATE INDEX tokens_expiry ON tokens(expires_at_ms);
",
    "
    ALTER TABLE accounts ADD COLUMN last_login_at_ms INTEGER;
",
    "
    CREATE TABLE health (
        id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
        probed_at_ms INTEGER NOT NULL
    );
",
];

/// File name of the database inside the data folder.
pub const DB_FILE: &str = "coordinator.sqlite3";

/// The accounts store in the data folder's SQLite database.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    db: Db,
}

/// Stores the token whose hash is `hash` for `name`, sets its last login
/// to now and drops expired tokens (inside the caller's transaction).
fn issue_token(
    c: &rusqlite::Connection,
    name: &str,
    hash: &[u8],
    valid_ms: i64,
) -> rusqlite::Result<()> {
    let now = common::ids::now_millis();
    c.execute("DELETE FROM tokens WHERE expires_at_ms < ?1", [now])?;
    c.execute(
        "UPDATE accounts SET last_login_at_ms = ?2 WHERE name = ?1",
        rusqlite::params![name, now],
    )?;
    c.execute(
        "INSERT OR REPLACE INTO tokens (hash, name, expires_at_ms) VALUES (?1, ?2, ?3)",
        rusqlite::params![hash, name, now + valid_ms],
    )?;
    Ok(())
}

impl SqliteStore {
    /// Opens (or creates) the database in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, DbError> {
        SqliteStore::open_observed(data_dir, None)
    }

    /// [`SqliteStore::open`], with `observer` told about every committed batch.
    pub fn open_observed(
        data_dir: &Path,
        observer: Option<CommitObserver>,
    ) -> Result<SqliteStore, DbError> {
        Ok(SqliteStore {
            db: Db::open_observed(&data_dir.join(DB_FILE), MIGRATIONS, observer)?,
        })
    }

    /// A real write, committed: `Ok` means the database takes writes now.
    pub async fn probe(&self) -> Result<(), DbError> {
        self.db
            .call(|c| {
                c.execute(
                    "INSERT INTO health (id, probed_at_ms) VALUES (1, ?1)
                     ON CONFLICT (id) DO UPDATE SET probed_at_ms = excluded.probed_at_ms",
                    [common::ids::now_millis()],
                )
                .map(drop)
            })
            .await
    }

    /// The PHC string of `name`, if the account exists.
    pub async fn password_hash(&self, name: &str) -> Result<Option<String>, DbError> {
        let name = name.to_string();
        self.db
            .call(move |c| {
                c.query_row("SELECT phc FROM accounts WHERE name = ?1", [&name], |r| {
                    r.get(0)
                })
                .optional()
            })
            .await
    }

    /// Does `name` exist?
    pub async fn exists(&self, name: &str) -> Result<bool, DbError> {
        Ok(self.password_hash(name).await?.is_some())
    }

    /// Creates an account; false when the name was taken meanwhile.
    pub async fn create_account(&self, name: &str, phc: String) -> Result<bool, DbError> {
        let name = name.to_string();
        self.db
            .call(move |c| {
                let n = c.execute(
                    "INSERT OR IGNORE INTO accounts (name, phc, created_at_ms) VALUES (?1, ?2, ?3)",
                    rusqlite::params![name, phc, common::ids::now_millis()],
                )?;
                Ok(n == 1)
            })
            .await
    }

    /// Records a successful login or resume of `name`: stores the hash of
    /// its new session token, sets its last login to now, and drops expired
    /// tokens, in one transaction.
    pub async fn add_token(&self, name: &str, token: &str, valid_ms: i64) -> Result<(), DbError> {
        let (name, hash) = (name.to_string(), token_hash(token));
        self.db
            .call(move |c| issue_token(c, &name, &hash, valid_ms))
            .await
    }

    /// Records a resume of `name`: takes its token `old` and, when it was
    /// valid, stores `new` in its place and sets its last login to now, as
    /// [`SqliteStore::add_token`] does, all in one job on the database thread (one
    /// round trip per resume instead of two); false, with nothing changed,
    /// when `old` is unknown or expired.
    pub async fn rotate_token(
        &self,
        name: &str,
        old: &str,
        new: &str,
        valid_ms: i64,
    ) -> Result<bool, DbError> {
        let (name, old, new) = (name.to_string(), token_hash(old), token_hash(new));
        self.db
            .call(move |c| {
                let now = common::ids::now_millis();
                let taken = c.execute(
                    "DELETE FROM tokens WHERE hash = ?1 AND name = ?2 AND expires_at_ms >= ?3",
                    rusqlite::params![old, name, now],
                )? == 1;
                if taken {
                    issue_token(c, &name, &new, valid_ms)?;
                }
                Ok(taken)
            })
            .await
    }

    /// Every account, by name.
    pub async fn list_accounts(&self) -> Result<Vec<AccountInfo>, DbError> {
        self.db
            .call(|c| {
                let mut stmt = c.prepare(
                    "SELECT name, created_at_ms, last_login_at_ms FROM accounts ORDER BY name",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok(AccountInfo {
                        name: r.get(0)?,
                        created_at_ms: r.get(1)?,
                        last_login_at_ms: r.get(2)?,
                    })
                })?;
                rows.collect()
            })
            .await
    }

    /// Deletes `name` and its session tokens; false when there was no such
    /// account.
    pub async fn delete_account(&self, name: &str) -> Result<bool, DbError> {
        let name = name.to_string();
        self.db
            .call(move |c| {
                c.execute("DELETE FROM tokens WHERE name = ?1", [&name])?;
                Ok(c.execute("DELETE FROM accounts WHERE name = ?1", [&name])? == 1)
            })
            .await
    }

    /// Replaces the password hash of `name` and revokes its session tokens,
    /// so nobody resumes with a token issued under the old password; false
    /// when there is no such account.
    pub async fn set_password(&self, name: &str, phc: String) -> Result<bool, DbError> {
        let name = name.to_string();
        self.db
            .call(move |c| {
                let n = c.execute(
                    "UPDATE accounts SET phc = ?2 WHERE name = ?1",
                    rusqlite::params![name, phc],
                )?;
                c.execute("DELETE FROM tokens WHERE name = ?1", [&name])?;
                Ok(n == 1)
            })
            .await
    }
}
