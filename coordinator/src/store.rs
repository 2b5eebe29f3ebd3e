//! The coordinator's SQLite database: accounts (name and Argon2id PHC string)
//! and session tokens (stored only as SHA-256 hashes, with an expiry).
//! Every call runs on the database thread of [`common::db::Db`].

use common::db::{Db, DbError};
use rusqlite::OptionalExtension;
use sha2::{Digest, Sha256};
use std::path::Path;

const MIGRATIONS: &[&str] = &["
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
"];

/// File name of the database inside the data folder.
pub const DB_FILE: &str = "coordinator.sqlite3";

/// The accounts store.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

impl Store {
    /// Opens (or creates) the database in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, DbError> {
        Ok(Store {
            db: Db::open(&data_dir.join(DB_FILE), MIGRATIONS)?,
        })
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

    /// Stores the hash of a new session token for `name`, and drops expired ones.
    pub async fn add_token(&self, name: &str, token: &str, valid_ms: i64) -> Result<(), DbError> {
        let (name, hash) = (name.to_string(), token_hash(token));
        self.db
            .call(move |c| {
                let now = common::ids::now_millis();
                c.execute("DELETE FROM tokens WHERE expires_at_ms < ?1", [now])?;
                c.execute(
                    "INSERT OR REPLACE INTO tokens (hash, name, expires_at_ms) VALUES (?1, ?2, ?3)",
                    rusqlite::params![hash, name, now + valid_ms],
                )?;
                Ok(())
            })
            .await
    }

    /// Takes the token `old` of `name` and stores `new` in its place, in one
    /// job on the database thread (one round trip per resume instead of
    /// two); false, with nothing stored, when `old` is unknown or expired.
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
                    c.execute(
                        "INSERT OR REPLACE INTO tokens (hash, name, expires_at_ms) VALUES (?1, ?2, ?3)",
                        rusqlite::params![new, name, now + valid_ms],
                    )?;
                }
                Ok(taken)
            })
            .await
    }
}
