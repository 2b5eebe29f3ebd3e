//! The accounts store: accounts (name, Argon2id PHC string, when it was
//! created and last logged in) and session tokens (stored only as SHA-256
//! hashes, with an expiry). A one-row `health` table takes the readiness
//! probe's write ([`Store::probe`]).
//!
//! One interface, two places ([`Database`]):
//!
//! - [`sqlite`]: SQLite in the data folder, the default, on the database
//!   thread of [`common::db::Db`];
//! - [`postgres`]: PostgreSQL (`--database postgres://…`), shared by
//!   several coordinators, through a bounded pool whose every call has a
//!   deadline, so an outage is an error within seconds, never a hang.
//!
//! [`Store`] is an enum rather than a trait object: two implementations,
//! async methods, no boxing.

pub mod pg_tls;
pub mod postgres;
pub mod sqlite;

use common::db::{CommitObserver, DbError};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;
use thiserror::Error;

pub use postgres::PgStore;
pub use sqlite::{SqliteStore, DB_FILE};

/// Where the accounts live.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Database {
    /// SQLite in the data folder ([`DB_FILE`]).
    #[default]
    DataDir,
    /// A PostgreSQL database, by URL (`postgres://user:password@host:port/db`
    /// or the `key=value` form). The URL may hold a password: it is never
    /// printed or logged (`Debug` and `Display` leave it out).
    Postgres(String),
}

impl Database {
    /// Where the accounts live, in words fit for a log: the folder's file,
    /// or PostgreSQL's host, port and database name (never a password).
    pub fn describe(&self, data_dir: &Path) -> String {
        match self {
            Database::DataDir => format!("SQLite in {}", data_dir.join(DB_FILE).display()),
            Database::Postgres(url) => match postgres::target(url) {
                Ok(target) => format!("PostgreSQL at {target}"),
                Err(_) => "PostgreSQL (an unreadable URL)".to_string(),
            },
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::DataDir => f.write_str("DataDir"),
            Database::Postgres(url) => {
                let target = postgres::target(url).unwrap_or_else(|_| "?".into());
                write!(f, "Postgres({target})")
            }
        }
    }
}

/// Errors of the accounts store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The SQLite database failed.
    #[error(transparent)]
    Sqlite(#[from] DbError),
    /// PostgreSQL could not be reached, or the connection broke, or it did
    /// not answer in time. Worth retrying shortly: the pool reconnects by
    /// itself once the server is back.
    #[error("the accounts database (PostgreSQL at {target}) is unreachable: {detail}")]
    Unreachable {
        /// `host:port/database`.
        target: String,
        /// What failed, in the driver's or the pool's words.
        detail: String,
    },
    /// PostgreSQL answered, with an error.
    #[error("the accounts database (PostgreSQL at {target}) refused a statement: {detail}")]
    Postgres {
        /// `host:port/database`.
        target: String,
        /// The server's message.
        detail: String,
    },
    /// The TLS negotiation with PostgreSQL failed: the server does not
    /// speak TLS, or its certificate is not the one `sslmode` and
    /// `sslrootcert` ask for. Also an outage as the peers see it (nobody
    /// logs in until it is fixed), but the operator's to fix.
    #[error("the accounts database (PostgreSQL at {target}) failed TLS: {detail}")]
    Tls {
        /// `host:port/database`.
        target: String,
        /// What failed and what to check.
        detail: String,
    },
    /// The `--database` URL does not parse, or asks for what the store
    /// does not do (an unknown `sslmode`, a missing `sslrootcert`).
    #[error("the --database URL is refused: {0}")]
    BadUrl(String),
    /// The PostgreSQL database holds a schema newer than this coordinator
    /// knows (a newer release migrated it).
    #[error(
        "the accounts database (PostgreSQL at {target}) has schema version {found}, newer \
         than this coordinator's {known}: upgrade the coordinator"
    )]
    TooNew {
        /// `host:port/database`.
        target: String,
        /// The version found.
        found: i32,
        /// The newest version this release knows.
        known: i32,
    },
    /// The PostgreSQL database has no accounts tables (no coordinator has
    /// started on it); the operator commands do not create them.
    #[error(
        "there are no accounts tables in PostgreSQL at {target}: start a coordinator with \
         this --database once, or check the URL"
    )]
    NoSchema {
        /// `host:port/database`.
        target: String,
    },
}

impl StoreError {
    /// Is this an outage of the database (worth a "try again shortly")
    /// rather than a fault?
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unreachable { .. } | StoreError::Tls { .. }
        )
    }
}

/// One account as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    /// The (normalised) name.
    pub name: String,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// When it last logged in or resumed, if ever since the column exists.
    pub last_login_at_ms: Option<i64>,
}

/// The accounts store, in SQLite or in PostgreSQL. Cloning shares it.
#[derive(Clone, Debug)]
pub enum Store {
    /// SQLite in the data folder.
    Sqlite(SqliteStore),
    /// PostgreSQL.
    Postgres(PgStore),
}

impl Store {
    /// Opens (or creates) the SQLite database in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Ok(Store::Sqlite(SqliteStore::open(data_dir)?))
    }

    /// Opens the store `database` names: SQLite in `data_dir` (with
    /// `observer` told about every committed batch), or PostgreSQL,
    /// connected and migrated. Must be called inside a tokio runtime.
    pub async fn open_database(
        database: &Database,
        data_dir: &Path,
        observer: Option<CommitObserver>,
    ) -> Result<Store, StoreError> {
        match database {
            Database::DataDir => Ok(Store::Sqlite(SqliteStore::open_observed(
                data_dir, observer,
            )?)),
            Database::Postgres(url) => Ok(Store::Postgres(PgStore::open(url).await?)),
        }
    }

    /// A real write, committed: `Ok` means the database takes writes now.
    pub async fn probe(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => Ok(s.probe().await?),
            Store::Postgres(s) => s.probe().await,
        }
    }

    /// The PHC string of `name`, if the account exists.
    pub async fn password_hash(&self, name: &str) -> Result<Option<String>, StoreError> {
        match self {
            Store::Sqlite(s) => Ok(s.password_hash(name).await?),
            Store::Postgres(s) => s.password_hash(name).await,
        }
    }

    /// Does `name` exist?
    pub async fn exists(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.password_hash(name).await?.is_some())
    }

    /// Creates an account; false when the name was taken meanwhile.
    pub async fn create_account(&self, name: &str, phc: String) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => Ok(s.create_account(name, phc).await?),
            Store::Postgres(s) => s.create_account(name, &phc).await,
        }
    }

    /// Records a successful login or resume of `name`: stores the hash of
    /// its new session token, sets its last login to now, and drops expired
    /// tokens, in one transaction.
    pub async fn add_token(
        &self,
        name: &str,
        token: &str,
        valid_ms: i64,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => Ok(s.add_token(name, token, valid_ms).await?),
            Store::Postgres(s) => s.add_token(name, token, valid_ms).await,
        }
    }

    /// Records a resume of `name`: takes its token `old` and, when it was
    /// valid, stores `new` in its place and sets its last login to now, in
    /// one transaction; false, with nothing changed, when `old` is unknown
    /// or expired (so a token works once).
    pub async fn rotate_token(
        &self,
        name: &str,
        old: &str,
        new: &str,
        valid_ms: i64,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => Ok(s.rotate_token(name, old, new, valid_ms).await?),
            Store::Postgres(s) => s.rotate_token(name, old, new, valid_ms).await,
        }
    }

    /// Every account, by name (byte order, the same in both databases).
    pub async fn list_accounts(&self) -> Result<Vec<AccountInfo>, StoreError> {
        match self {
            Store::Sqlite(s) => Ok(s.list_accounts().await?),
            Store::Postgres(s) => s.list_accounts().await,
        }
    }

    /// Deletes `name` and its session tokens; false when there was no such
    /// account.
    pub async fn delete_account(&self, name: &str) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => Ok(s.delete_account(name).await?),
            Store::Postgres(s) => s.delete_account(name).await,
        }
    }

    /// Replaces the password hash of `name` and revokes its session tokens,
    /// so nobody resumes with a token issued under the old password; false
    /// when there is no such account.
    pub async fn set_password(&self, name: &str, phc: String) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => Ok(s.set_password(name, phc).await?),
            Store::Postgres(s) => s.set_password(name, &phc).await,
        }
    }
}

/// What is stored of a session token: its SHA-256.
pub(crate) fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}
