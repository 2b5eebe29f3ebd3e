//! Operator commands on the accounts database: list accounts, delete one,
//! reset a password.
//!
//! On SQLite they work on the database file directly, so they first take
//! the data folder's lock ([`crate::lock`]): while a coordinator serves the
//! folder they are refused with a sentence saying so, and a coordinator
//! cannot start while one of them runs. On PostgreSQL, which several
//! coordinators share while they serve, they take no lock: each change is
//! one transaction. A deleted or reset account's sessions already online
//! stay until they end; its tokens are revoked at once, so none resumes. Names and passwords follow the same rules
//! as a login ([`common::names`]); a new password is hashed exactly as the
//! server hashes one ([`crate::auth::Auth::hash`]). Deleting an account or
//! resetting its password revokes its session tokens, so no peer resumes
//! with a token issued before.

use crate::auth::{Auth, AuthError, AuthLimits};
use crate::lock::{DataLock, LockError};
use crate::store::{AccountInfo, PgStore, Store, StoreError, DB_FILE};
use common::db::DbError;
use common::names::{check_password, normalize_username, RuleError};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Errors of the operator commands.
#[derive(Debug, Error)]
pub enum OperatorError {
    /// The data folder is locked by a running coordinator (or another
    /// operator command), or the lock could not be taken.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// There is no accounts database in the data folder.
    #[error("there is no accounts database at {}; check --data-dir", path.display())]
    NoDatabase {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The database could not be opened, read or written.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The accounts store failed (PostgreSQL unreachable, say).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The name given breaks the username rules.
    #[error("'{name}' is not a valid username: {rule}")]
    BadName {
        /// The name as given.
        name: String,
        /// The rule it breaks.
        rule: RuleError,
    },
    /// No account has that name.
    #[error("there is no account named {0}")]
    NoSuchAccount(String),
    /// The new password breaks the password rules.
    #[error("the new password is refused: {0}")]
    BadPassword(RuleError),
    /// The new password could not be hashed.
    #[error(transparent)]
    Hash(#[from] AuthError),
}

/// The accounts database: of one data folder, held under its lock, or
/// in PostgreSQL.
#[derive(Debug)]
pub struct Accounts {
    store: Store,
    // Released after the store's handle is dropped (none for PostgreSQL).
    _lock: Option<DataLock>,
}

impl Accounts {
    /// Opens the database in `data_dir` for operator work. Refused while a
    /// coordinator serves the folder, and when there is no database there
    /// (a mistyped `--data-dir` creates nothing).
    pub fn open(data_dir: &Path) -> Result<Accounts, OperatorError> {
        let path = data_dir.join(DB_FILE);
        if !path.is_file() {
            return Err(OperatorError::NoDatabase { path });
        }
        let lock = DataLock::acquire(data_dir)?;
        let store = Store::open(data_dir)?;
        Ok(Accounts {
            store,
            _lock: Some(lock),
        })
    }

    /// Opens the accounts in the PostgreSQL database at `url`. Refused when
    /// no coordinator has made its tables there (a mistyped URL creates
    /// nothing).
    pub async fn open_postgres(url: &str) -> Result<Accounts, OperatorError> {
        let store = Store::Postgres(PgStore::open_existing(url).await?);
        Ok(Accounts { store, _lock: None })
    }

    /// Every account with when it was created and last logged in.
    pub async fn list(&self) -> Result<Vec<AccountInfo>, OperatorError> {
        Ok(self.store.list_accounts().await?)
    }

    /// Deletes the account `name` and its session tokens; returns the
    /// name as stored.
    pub async fn delete(&self, name: &str) -> Result<String, OperatorError> {
        let name = account_name(name)?;
        if !self.store.delete_account(&name).await? {
            return Err(OperatorError::NoSuchAccount(name));
        }
        Ok(name)
    }

    /// Sets a new password for `name` and revokes its session tokens;
    /// returns the name as stored.
    pub async fn reset_password(
        &self,
        name: &str,
        password: String,
    ) -> Result<String, OperatorError> {
        let name = account_name(name)?;
        check_password(&password).map_err(OperatorError::BadPassword)?;
        if !self.store.exists(&name).await? {
            return Err(OperatorError::NoSuchAccount(name));
        }
        let auth = Auth::new(AuthLimits {
            hash_concurrency: 1,
            ..AuthLimits::default()
        });
        let phc = auth.hash(password).await?;
        if !self.store.set_password(&name, phc).await? {
            return Err(OperatorError::NoSuchAccount(name));
        }
        Ok(name)
    }
}

fn account_name(name: &str) -> Result<String, OperatorError> {
    normalize_username(name).map_err(|rule| OperatorError::BadName {
        name: common::names::sanitize_for_display(name),
        rule,
    })
}
