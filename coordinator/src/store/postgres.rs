//! The accounts store in PostgreSQL (`--database postgres://…`), which
//! several coordinators share.
//!
//! - **Bounded.** Connections come from a deadpool pool of
//!   [`POOL_SIZE`]; waiting for one, opening one and checking a returned
//!   one each have a deadline ([`CONNECT_TIMEOUT`]), and every call as a
//!   whole has one too ([`CALL_TIMEOUT`]). While PostgreSQL is down a call
//!   fails within seconds with [`StoreError::Unreachable`]; it never hangs.
//! - **Self-healing.** A broken connection is dropped when it goes back to
//!   the pool (the pool checks `is_closed`), and the next call opens a new
//!   one: once PostgreSQL is back, calls work again with no restart.
//! - **Transactions** as in SQLite: a token rotation (take the old one,
//!   store the new one, set the last login) is one transaction, and two
//!   rotations of one token cannot both succeed (the row lock of the
//!   `DELETE` makes the second find nothing).
//! - **Migrations** by a one-row `schema_version` table, in one transaction
//!   that first takes `pg_advisory_xact_lock`, so coordinators starting at
//!   once against one database migrate it once, one after the other. A
//!   coordinator runs them before its first statement ([`PgStore::connect`]
//!   opens nothing), so it starts while PostgreSQL is down and works as
//!   soon as it is up.
//! - **TLS** as libpq's `sslmode` and `sslrootcert` say (see
//!   [`super::pg_tls`]): none without `sslmode`; `require` without a CA
//!   file encrypts without checking the server (a warning at start);
//!   `verify-full` with `sslrootcert` checks the chain and the host name.
//!   A CA file that cannot be read is refused at start; a failed handshake
//!   is [`StoreError::Tls`], saying what to check.

use super::pg_tls::{self, TlsMode, TlsSettings};
use super::{token_hash, AccountInfo, StoreError};
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;

/// Connections in the pool.
pub const POOL_SIZE: usize = 16;
/// Deadline to open a connection, and to wait for one from the pool.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Deadline of one call as a whole (a connection, then its statements).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(8);
/// How long an established connection may go unanswered (keep-alives or
/// unacknowledged data) before TCP declares it dead.
const DEAD_AFTER: Duration = Duration::from_secs(10);

/// Key of the advisory lock the migrations take ("p2pchat" and 1).
const MIGRATION_LOCK: i64 = 0x7032_7063_6861_7401;

/// The schema, one step per release that changed it; `schema_version`
/// holds how many have run. The same tables as in SQLite.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE accounts (
        name text PRIMARY KEY,
        phc text NOT NULL,
        created_at_ms bigint NOT NULL,
        last_login_at_ms bigint
    );
    CREATE TABLE tokens (
        hash bytea PRIMARY KEY,
        name text NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
        expires_at_ms bigint NOT NULL
    );
    CREATE INDEX tokens_expiry ON tokens(expires_at_ms);
    CREATE INDEX tokens_name ON tokens(name);
    CREATE TABLE health (
        id integer PRIMARY KEY CHECK (id = 1),
        probed_at_ms bigint NOT NULL
    );
"];

/// The schema version this release writes.
fn known_version() -> i32 {
    MIGRATIONS.len() as i32
}

/// `host:port/database` of a URL, for messages (never its password).
pub fn target(url: &str) -> Result<String, StoreError> {
    let (url, _) = pg_tls::split_url(url).map_err(StoreError::BadUrl)?;
    let config: tokio_postgres::Config = url.parse().map_err(bad_url)?;
    Ok(target_of(&config))
}

fn bad_url(e: tokio_postgres::Error) -> StoreError {
    StoreError::BadUrl(format!(
        "{}; the form is postgres://USER:PASSWORD@HOST:PORT/DATABASE",
        chain(&e)
    ))
}

/// An error and its causes, each once ("error connecting to server:
/// Connection refused (os error 111)"): the driver's own message names only
/// the step that failed.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}

fn target_of(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            let port = config
                .get_ports()
                .get(i)
                .or(config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost:5432".to_string()
    } else {
        hosts.join(",")
    };
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{hosts}/{db}")
}

/// The accounts store in PostgreSQL. Cloning shares the pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    target: String,
    tls: Arc<TlsSettings>,
    /// Set once the schema is up to date.
    migrated: Arc<OnceCell<()>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` and brings the schema up to date. Must be called
    /// inside a tokio runtime.
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        let store = PgStore::connect(url)?;
        store.ensure_migrated().await?;
        Ok(store)
    }

    /// Connects to `url` for operator work: refused when no coordinator
    /// ever made the tables there (a mistyped URL creates nothing); an
    /// older schema is brought up to date.
    pub async fn open_existing(url: &str) -> Result<PgStore, StoreError> {
        let store = PgStore::connect(url)?;
        let made = store
            .call_unmigrated(|client| async move {
                let row = client
                    .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
                    .await?;
                Ok(row.get::<_, bool>(0))
            })
            .await?;
        if !made {
            return Err(StoreError::NoSchema {
                target: store.target.clone(),
            });
        }
        store.ensure_migrated().await?;
        Ok(store)
    }

    /// The pool for `url`; no connection is opened yet (the first call
    /// opens one and migrates). Refuses a URL that does not parse, an
    /// `sslmode` it does not know and a `sslrootcert` it cannot read.
    pub fn connect(url: &str) -> Result<PgStore, StoreError> {
        let (url, tls) = pg_tls::split_url(url).map_err(StoreError::BadUrl)?;
        let mut config: tokio_postgres::Config = url.parse().map_err(bad_url)?;
        config.ssl_mode(tls.mode.driver_mode());
        let connector = pg_tls::connector(&tls).map_err(StoreError::BadUrl)?;
        // A server that vanishes without closing (a partition, a dead
        // host) must not leave pooled connections that look alive and
        // make each call wait out its deadline: TCP gives up on it within
        // about DEAD_AFTER, the connection closes, and the pool drops it.
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .application_name("p2pchat-coordinator")
            .keepalives(true)
            .keepalives_idle(DEAD_AFTER / 2)
            .keepalives_interval(DEAD_AFTER / 4)
            .keepalives_retries(2)
            .tcp_user_timeout(DEAD_AFTER);
        let target = target_of(&config);
        if tls.mode != TlsMode::Disable && !tls.verifies() {
            tracing::warn!(
                database = %target,
                sslmode = tls.mode.name(),
                "the connection to PostgreSQL is encrypted but its certificate is not checked \
                 (no sslrootcert): anyone on the path can pose as the server; give \
                 sslmode=verify-full&sslrootcert=CA_FILE"
            );
        }
        let manager = Manager::from_config(
            config,
            connector,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Postgres {
                target: target.clone(),
                detail: e.to_string(),
            })?;
        Ok(PgStore {
            pool,
            target,
            tls: Arc::new(tls),
            migrated: Arc::new(OnceCell::new()),
        })
    }

    /// `host:port/database`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Runs `work` on a pooled connection once the schema is up to date,
    /// within [`CALL_TIMEOUT`], and turns every failure into a
    /// [`StoreError`].
    async fn call<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        self.ensure_migrated().await?;
        self.call_unmigrated(work).await
    }

    /// Migrates unless done already; a failed attempt is tried again by
    /// the next call.
    async fn ensure_migrated(&self) -> Result<(), StoreError> {
        self.migrated
            .get_or_try_init(|| self.migrate())
            .await
            .map(drop)
    }

    /// [`PgStore::call`] without the schema check.
    async fn call_unmigrated<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let run = async {
            let client = self.pool.get().await.map_err(|e| self.pool_error(e))?;
            work(client).await.map_err(|e| self.error(e))
        };
        match tokio::time::timeout(CALL_TIMEOUT, run).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unreachable {
                target: self.target.clone(),
                detail: format!("no answer within {} s", CALL_TIMEOUT.as_secs()),
            }),
        }
    }

    fn pool_error(&self, e: PoolError) -> StoreError {
        match e {
            PoolError::Backend(e) => self.error(e),
            PoolError::Timeout(_) => StoreError::Unreachable {
                target: self.target.clone(),
                detail: format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
            },
            PoolError::Closed => StoreError::Unreachable {
                target: self.target.clone(),
                detail: "the connection pool is closed".into(),
            },
            other => StoreError::Postgres {
                target: self.target.clone(),
                detail: other.to_string(),
            },
        }
    }

    /// An outage (no connection, a broken one, a server shutting down or
    /// starting) is [`StoreError::Unreachable`]; anything else the server
    /// said is [`StoreError::Postgres`].
    fn error(&self, e: tokio_postgres::Error) -> StoreError {
        let target = self.target.clone();
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            let outage = code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(code);
            let detail = db.message().to_string();
            return if outage {
                StoreError::Unreachable { target, detail }
            } else {
                StoreError::Postgres { target, detail }
            };
        }
        if let Some(detail) = pg_tls::failure(&e, &self.tls) {
            return StoreError::Tls { target, detail };
        }
        let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        let text = chain(&e);
        if e.is_closed() || io || text.contains("connect") || text.contains("timeout") {
            StoreError::Unreachable {
                target,
                detail: text,
            }
        } else {
            StoreError::Postgres {
                target,
                detail: text,
            }
        }
    }

    /// Brings the schema up to date: one transaction under an advisory
    /// lock, so concurrent starts wait for each other and the later ones
    /// find nothing to do.
    async fn migrate(&self) -> Result<(), StoreError> {
        let found = self
            .call_unmigrated(|mut client| async move {
                let tx = client.transaction().await?;
                tx.batch_execute(&format!(
                    "SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
                     CREATE TABLE IF NOT EXISTS schema_version (
                         id integer PRIMARY KEY CHECK (id = 1),
                         version integer NOT NULL
                     );
                     INSERT INTO schema_version (id, version) VALUES (1, 0)
                         ON CONFLICT (id) DO NOTHING;"
                ))
                .await?;
                let found: i32 = tx
                    .query_one("SELECT version FROM schema_version WHERE id = 1", &[])
                    .await?
                    .get(0);
                if found > known_version() {
                    return Ok(found);
                }
                for step in MIGRATIONS.iter().skip(found.max(0) as usize) {
                    tx.batch_execute(step).await?;
                }
                tx.execute(
                    "UPDATE schema_version SET version = $1 WHERE id = 1",
                    &[&known_version()],
                )
                .await?;
                tx.commit().await?;
                Ok(found)
            })
            .await?;
        if found > known_version() {
            return Err(StoreError::TooNew {
                target: self.target.clone(),
                found,
                known: known_version(),
            });
        }
        if found < known_version() {
            tracing::info!(
                database = %self.target,
                from = found,
                to = known_version(),
                "accounts schema migrated"
            );
        }
        Ok(())
    }

    /// A real write, committed.
    pub async fn probe(&self) -> Result<(), StoreError> {
        self.call(|client| async move {
            let stmt = client
                .prepare_cached(
                    "INSERT INTO health (id, probed_at_ms) VALUES (1, $1)
                     ON CONFLICT (id) DO UPDATE SET probed_at_ms = excluded.probed_at_ms",
                )
                .await?;
            client
                .execute(&stmt, &[&common::ids::now_millis()])
                .await
                .map(drop)
        })
        .await
    }

    /// The PHC string of `name`, if the account exists.
    pub async fn password_hash(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.call(|client| async move {
            let stmt = client
                .prepare_cached("SELECT phc FROM accounts WHERE name = $1")
                .await?;
            Ok(client.query_opt(&stmt, &[&name]).await?.map(|r| r.get(0)))
        })
        .await
    }

    /// Creates an account; false when the name was taken meanwhile.
    pub async fn create_account(&self, name: &str, phc: &str) -> Result<bool, StoreError> {
        self.call(|client| async move {
            let stmt = client
                .prepare_cached(
                    "INSERT INTO accounts (name, phc, created_at_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO NOTHING",
                )
                .await?;
            let n = client
                .execute(&stmt, &[&name, &phc, &common::ids::now_millis()])
                .await?;
            Ok(n == 1)
        })
        .await
    }

    /// See [`super::Store::add_token`].
    pub async fn add_token(
        &self,
        name: &str,
        token: &str,
        valid_ms: i64,
    ) -> Result<(), StoreError> {
        let hash = token_hash(token);
        self.call(|mut client| async move {
            let tx = client.transaction().await?;
            issue_token(&tx, name, &hash, valid_ms).await?;
            tx.commit().await
        })
        .await
    }

    /// See [`super::Store::rotate_token`].
    pub async fn rotate_token(
        &self,
        name: &str,
        old: &str,
        new: &str,
        valid_ms: i64,
    ) -> Result<bool, StoreError> {
        let (old, new) = (token_hash(old), token_hash(new));
        self.call(|mut client| async move {
            let tx = client.transaction().await?;
            let stmt = tx
                .prepare_cached(
                    "DELETE FROM tokens WHERE hash = $1 AND name = $2 AND expires_at_ms >= $3",
                )
                .await?;
            let taken = tx
                .execute(&stmt, &[&old, &name, &common::ids::now_millis()])
                .await?
                == 1;
            if taken {
                issue_token(&tx, name, &new, valid_ms).await?;
            }
            tx.commit().await?;
            Ok(taken)
        })
        .await
    }

    /// Every account, by name in byte order (as SQLite sorts).
    pub async fn list_accounts(&self) -> Result<Vec<AccountInfo>, StoreError> {
        self.call(|client| async move {
            let rows = client
                .query(
                    "SELECT name, created_at_ms, last_login_at_ms FROM accounts
                     ORDER BY name COLLATE \"C\"",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| AccountInfo {
                    name: r.get(0),
                    created_at_ms: r.get(1),
                    last_login_at_ms: r.get(2),
                })
                .collect())
        })
        .await
    }

    /// Deletes `name` and its session tokens; false when there was no such
    /// account.
    pub async fn delete_account(&self, name: &str) -> Result<bool, StoreError> {
        self.call(|mut client| async move {
            let tx = client.transaction().await?;
            tx.execute("DELETE FROM tokens WHERE name = $1", &[&name])
                .await?;
            let n = tx
                .execute("DELETE FROM accounts WHERE name = $1", &[&name])
                .await?;
            tx.commit().await?;
            Ok(n == 1)
        })
        .await
    }

    /// Replaces the password hash of `name` and revokes its session tokens;
    /// false when there is no such account.
    pub async fn set_password(&self, name: &str, phc: &str) -> Result<bool, StoreError> {
        self.call(|mut client| async move {
            let tx = client.transaction().await?;
            let n = tx
                .execute(
                    "UPDATE accounts SET phc = $2 WHERE name = $1",
                    &[&name, &phc],
                )
                .await?;
            tx.execute("DELETE FROM tokens WHERE name = $1", &[&name])
                .await?;
            tx.commit().await?;
            Ok(n == 1)
        })
        .await
    }
}

/// Stores the token whose hash is `hash` for `name`, sets its last login
/// to now and drops expired tokens (inside the caller's transaction).
async fn issue_token(
    tx: &deadpool_postgres::Transaction<'_>,
    name: &str,
    hash: &[u8],
    valid_ms: i64,
) -> Result<(), tokio_postgres::Error> {
    let now = common::ids::now_millis();
    let expired = tx
        .prepare_cached("DELETE FROM tokens WHERE expires_at_ms < $1")
        .await?;
    tx.execute(&expired, &[&now]).await?;
    let login = tx
        .prepare_cached("UPDATE accounts SET last_login_at_ms = $2 WHERE name = $1")
        .await?;
    tx.execute(&login, &[&name, &now]).await?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO tokens (hash, name, expires_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (hash) DO UPDATE
             SET name = excluded.name, expires_at_ms = excluded.expires_at_ms",
        )
        .await?;
    tx.execute(&insert, &[&hash, &name, &(now + valid_ms)])
        .await?;
    Ok(())
}
