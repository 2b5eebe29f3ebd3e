//! The accounts store, the same tests on both backends: SQLite in a
//! temporary data folder and PostgreSQL in a fresh database of a private
//! server (`testkit`). Then a coordinator on PostgreSQL through an outage:
//! logins fail with a sentence while the database is down and work again,
//! with every account kept, once it is back, without a restart.

use crate::operating::http_get;
use crate::support::*;
use common::close::CloseCode;
use common::protocol::{SessionRequest, SessionResponse};
use coordinator::store::{PgStore, Store};
use coordinator::Database;
use std::sync::Arc;
use tempfile::TempDir;
use testkit::postgres::PgServer;

/// Where a test's accounts live; kept alive for the test's length.
enum Place {
    Sqlite(TempDir),
    Postgres { _server: Arc<PgServer>, url: String },
}

impl Place {
    fn sqlite() -> Place {
        Place::Sqlite(tempfile::tempdir().expect("temporary folder"))
    }

    fn postgres() -> Place {
        let server = shared_pg();
        let url = server.fresh_database();
        Place::Postgres {
            _server: server,
            url,
        }
    }

    /// A store on this place (a second call opens a second one on the same
    /// data, migrating again).
    async fn open(&self) -> Store {
        match self {
            Place::Sqlite(dir) => Store::open(dir.path()).expect("open SQLite"),
            Place::Postgres { url, .. } => Store::Postgres(
                within("PostgreSQL to open", PgStore::open(url))
                    .await
                    .expect("open PostgreSQL"),
            ),
        }
    }
}

/// Each test body runs twice: `sqlite::name` and `postgres::name`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Place::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Place::postgres()).await;
                }
            )*
        }
    };
}

on_both_backends!(
    an_account_is_created_once_and_found_by_name,
    a_token_resumes_once_and_not_when_wrong_or_expired,
    a_token_rotated_twice_at_once_works_once,
    deleting_an_account_revokes_its_tokens,
    a_new_password_revokes_the_tokens,
    accounts_are_listed_by_name_with_their_times,
    the_probe_writes,
    a_second_store_on_the_same_data_migrates_nothing_and_sees_everything,
);

const DAY_MS: i64 = 24 * 3600 * 1000;

async fn an_account_is_created_once_and_found_by_name(place: Place) {
    let store = place.open().await;
    assert!(!store.exists("alice").await.unwrap());
    assert_eq!(store.password_hash("alice").await.unwrap(), None);
    assert!(store.create_account("alice", "phc-1".into()).await.unwrap());
    assert!(
        !store.create_account("alice", "phc-2".into()).await.unwrap(),
        "a taken name is refused"
    );
    assert!(store.exists("alice").await.unwrap());
    assert_eq!(
        store.password_hash("alice").await.unwrap().as_deref(),
        Some("phc-1"),
        "the first creation's hash stays"
    );
    assert!(!store.exists("bob").await.unwrap());
}

async fn a_token_resumes_once_and_not_when_wrong_or_expired(place: Place) {
    let store = place.open().await;
    store.create_account("alice", "phc".into()).await.unwrap();
    store.create_account("bob", "phc".into()).await.unwrap();
    store.add_token("alice", "t1", DAY_MS).await.unwrap();

    assert!(!store
        .rotate_token("alice", "nope", "x", DAY_MS)
        .await
        .unwrap());
    assert!(
        !store.rotate_token("bob", "t1", "x", DAY_MS).await.unwrap(),
        "another account's token"
    );
    assert!(store
        .rotate_token("alice", "t1", "t2", DAY_MS)
        .await
        .unwrap());
    assert!(
        !store
            .rotate_token("alice", "t1", "t3", DAY_MS)
            .await
            .unwrap(),
        "a token works once"
    );
    assert!(store
        .rotate_token("alice", "t2", "t3", DAY_MS)
        .await
        .unwrap());

    store.add_token("alice", "old", -1).await.unwrap();
    assert!(
        !store
            .rotate_token("alice", "old", "t4", DAY_MS)
            .await
            .unwrap(),
        "an expired token"
    );
    assert!(store
        .rotate_token("alice", "t3", "t4", DAY_MS)
        .await
        .unwrap());

    let list = store.list_accounts().await.unwrap();
    let alice = list.iter().find(|a| a.name == "alice").unwrap();
    assert!(alice.last_login_at_ms.is_some(), "{alice:?}");
    let bob = list.iter().find(|a| a.name == "bob").unwrap();
    assert_eq!(bob.last_login_at_ms, None, "{bob:?}");
}

async fn a_token_rotated_twice_at_once_works_once(place: Place) {
    let store = place.open().await;
    store.create_account("alice", "phc".into()).await.unwrap();
    for round in 0..10 {
        let old = format!("t{round}");
        store.add_token("alice", &old, DAY_MS).await.unwrap();
        let (a, b) = tokio::join!(
            store.rotate_token("alice", &old, "a", DAY_MS),
            store.rotate_token("alice", &old, "b", DAY_MS),
        );
        assert!(
            a.unwrap() ^ b.unwrap(),
            "round {round}: exactly one rotation wins"
        );
    }
}

async fn deleting_an_account_revokes_its_tokens(place: Place) {
    let store = place.open().await;
    store.create_account("alice", "phc".into()).await.unwrap();
    store.add_token("alice", "t1", DAY_MS).await.unwrap();
    assert!(store.delete_account("alice").await.unwrap());
    assert!(
        !store.delete_account("alice").await.unwrap(),
        "gone already"
    );
    assert!(!store.exists("alice").await.unwrap());
    // The name is free again, and the old token belongs to nobody.
    assert!(store.create_account("alice", "phc-2".into()).await.unwrap());
    assert!(!store
        .rotate_token("alice", "t1", "t2", DAY_MS)
        .await
        .unwrap());
}

async fn a_new_password_revokes_the_tokens(place: Place) {
    let store = place.open().await;
    store.create_account("alice", "phc-1".into()).await.unwrap();
    store.add_token("alice", "t1", DAY_MS).await.unwrap();
    assert!(store.set_password("alice", "phc-2".into()).await.unwrap());
    assert_eq!(
        store.password_hash("alice").await.unwrap().as_deref(),
        Some("phc-2")
    );
    assert!(!store
        .rotate_token("alice", "t1", "t2", DAY_MS)
        .await
        .unwrap());
    assert!(!store.set_password("nobody", "phc".into()).await.unwrap());
}

async fn accounts_are_listed_by_name_with_their_times(place: Place) {
    let store = place.open().await;
    assert!(store.list_accounts().await.unwrap().is_empty());
    let before = common::ids::now_millis();
    for name in ["carol", "alice", "a-b", "bob"] {
        store.create_account(name, "phc".into()).await.unwrap();
    }
    let list = store.list_accounts().await.unwrap();
    let names: Vec<&str> = list.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["a-b", "alice", "bob", "carol"], "byte order");
    let after = common::ids::now_millis();
    for a in &list {
        assert!((before..=after).contains(&a.created_at_ms), "{a:?}");
        assert_eq!(a.last_login_at_ms, None, "{a:?}");
    }
}

async fn the_probe_writes(place: Place) {
    let store = place.open().await;
    store.probe().await.unwrap();
    store.probe().await.unwrap();
}

async fn a_second_store_on_the_same_data_migrates_nothing_and_sees_everything(place: Place) {
    let first = place.open().await;
    first.create_account("alice", "phc".into()).await.unwrap();
    first.add_token("alice", "t1", DAY_MS).await.unwrap();
    drop(first);
    let second = place.open().await;
    assert!(second.exists("alice").await.unwrap());
    assert!(second
        .rotate_token("alice", "t1", "t2", DAY_MS)
        .await
        .unwrap());
}

#[tokio::test]
async fn three_coordinators_migrating_one_postgres_database_at_once_make_one_schema() {
    let server = shared_pg();
    let url = server.fresh_database();
    let opens = (0..3).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { PgStore::open(&url).await })
    });
    let mut stores = Vec::new();
    for open in opens {
        let store = within("a migration", open)
            .await
            .unwrap()
            .expect("every concurrent migration succeeds");
        stores.push(Store::Postgres(store));
    }
    assert!(stores[0]
        .create_account("alice", "phc".into())
        .await
        .unwrap());
    for store in &stores {
        assert!(store.exists("alice").await.unwrap());
    }
}

#[test]
fn a_database_url_is_shown_without_its_password() {
    let db = Database::Postgres("postgres://chat:s3cret@db.internal:6432/accounts".into());
    let dir = std::path::Path::new("/data");
    assert_eq!(db.describe(dir), "PostgreSQL at db.internal:6432/accounts");
    assert!(!format!("{db:?}").contains("s3cret"), "{db:?}");
    let mut config = coordinator::Config::new(dir.into());
    config.database = db;
    assert!(!format!("{config:?}").contains("s3cret"));
}

/// TLS to PostgreSQL (`sslmode`, `sslrootcert`), against a private server
/// that takes TCP connections over TLS only (so any that works was
/// encrypted), and against the plain shared one.
mod tls {
    use super::*;
    use coordinator::store::StoreError;
    use std::path::Path;

    /// One TLS server for the tests of this module that are running.
    fn shared_tls_pg() -> Arc<PgServer> {
        static SHARED: std::sync::Mutex<std::sync::Weak<PgServer>> =
            std::sync::Mutex::new(std::sync::Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(server) = shared.upgrade() {
            return server;
        }
        let server = Arc::new(PgServer::start_with_tls());
        *shared = Arc::downgrade(&server);
        server
    }

    /// `url` with `params` added to its query.
    fn with(url: &str, params: &str) -> String {
        format!("{url}?{params}")
    }

    fn ca_param(path: &Path) -> String {
        format!("sslrootcert={}", path.display())
    }

    /// An account, a token and its rotation: the store works.
    async fn the_store_works(url: &str) {
        let store = Store::Postgres(
            within("PostgreSQL over TLS to open", PgStore::open(url))
                .await
                .expect("open PostgreSQL over TLS"),
        );
        assert!(store
            .create_account("alice", "phc-alice".into())
            .await
            .unwrap());
        assert!(store.exists("alice").await.unwrap());
        store.add_token("alice", "t1", 60_000).await.unwrap();
        assert!(store
            .rotate_token("alice", "t1", "t2", 60_000)
            .await
            .unwrap());
        assert!(!store
            .rotate_token("alice", "t1", "t3", 60_000)
            .await
            .unwrap());
    }

    /// Opening `url` fails, quickly, with a TLS error; its sentence.
    async fn refused(url: &str) -> String {
        let err = within("a refused TLS connection", PgStore::open(url))
            .await
            .expect_err("the connection must be refused");
        let text = err.to_string();
        assert!(matches!(err, StoreError::Tls { .. }), "{err:?}");
        assert!(err.is_unavailable(), "peers are told to try again: {err:?}");
        text
    }

    #[tokio::test]
    async fn verify_full_with_the_servers_ca_connects_and_the_store_works() {
        let pg = shared_tls_pg();
        let ca = ca_param(pg.ca_file().expect("a TLS server"));
        the_store_works(&with(
            &pg.fresh_database(),
            &format!("sslmode=verify-full&{ca}"),
        ))
        .await;
    }

    #[tokio::test]
    async fn a_wrong_ca_is_refused_with_a_sentence() {
        let pg = shared_tls_pg();
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other-ca.pem");
        std::fs::write(&other, certs::generate_ca().unwrap().cert_pem).unwrap();
        for mode in ["verify-full", "verify-ca", "require"] {
            let url = with(
                &pg.fresh_database(),
                &format!("sslmode={mode}&{}", ca_param(&other)),
            );
            let text = refused(&url).await;
            assert!(
                text.contains("not signed by a CA of sslrootcert")
                    && text.contains(&other.display().to_string()),
                "{mode}: {text}"
            );
        }
    }

    #[tokio::test]
    async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
        let pg = shared_tls_pg();
        let ca = ca_param(pg.ca_file().expect("a TLS server"));
        // The TLS name is db.example (not in the certificate); the address
        // dialed is the server's.
        let url = |mode: &str, db: &str| {
            format!(
                "postgres://{}@db.example:{}/{db}?hostaddr=127.0.0.1&sslmode={mode}&{ca}",
                testkit::postgres::USER,
                pg.port()
            )
        };
        let fresh = pg.fresh_database();
        let db = fresh.rsplit('/').next().unwrap();
        let text = refused(&url("verify-full", db)).await;
        assert!(text.contains("does not name the host"), "{text}");
        the_store_works(&url("verify-ca", db)).await;
    }

    #[tokio::test]
    async fn require_without_a_root_file_encrypts_without_checking() {
        let pg = shared_tls_pg();
        the_store_works(&with(&pg.fresh_database(), "sslmode=require")).await;
    }

    #[tokio::test]
    async fn without_sslmode_there_is_no_tls_as_before() {
        // The TLS server rejects plain TCP: the server's own sentence.
        let pg = shared_tls_pg();
        let err = within("a plain connection", PgStore::open(&pg.fresh_database()))
            .await
            .expect_err("plain TCP is rejected by this server");
        assert!(err.to_string().contains("no encryption"), "{err}");
    }

    #[tokio::test]
    async fn require_against_a_server_without_tls_fails_clearly() {
        let pg = shared_pg();
        let text = refused(&with(&pg.fresh_database(), "sslmode=require")).await;
        assert!(
            text.contains("does not support TLS") && text.contains("sslmode=require"),
            "{text}"
        );
    }

    #[test]
    fn bad_tls_settings_are_refused_at_once() {
        let refused = |url: &str| PgStore::connect(url).expect_err("refused").to_string();
        let text = refused("postgres://chat@db.internal/accounts?sslmode=verify-full");
        assert!(text.contains("needs sslrootcert"), "{text}");
        let text = refused("postgres://chat@db.internal/accounts?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
        assert!(
            text.contains("cannot read sslrootcert /nonexistent/ca.pem"),
            "{text}"
        );
        let text = refused("postgres://chat@db.internal/accounts?sslmode=secure");
        assert!(text.contains("sslmode=secure"), "{text}");
    }
}

/// Logs in to `name` with the password, expecting the close `UNAVAILABLE`
/// (at the name or at the password, whichever meets the outage first);
/// the close's reason as the client receives it.
async fn login_meets_the_outage(tc: &TestCoordinator, name: &str) -> String {
    let mut c = tc.client().await;
    c.hello().await;
    c.send(SessionRequest::Username { name: name.into() }).await;
    let err = c.closed().await;
    match err {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                CloseCode::from_varint(close.error_code),
                CloseCode::UNAVAILABLE,
                "{close:?}"
            );
            String::from_utf8_lossy(&close.reason).into_owned()
        }
        other => panic!("expected an application close, got {other:?}"),
    }
}

#[tokio::test]
async fn while_postgres_is_down_logins_fail_with_a_sentence_and_work_again_when_it_is_back() {
    let mut pg = PgServer::start();
    let url = pg.fresh_database();
    let tc = TestCoordinator::start_with(|c| {
        c.database = Database::Postgres(url.clone());
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let http = tc.metrics.expect("a metrics listener");
    assert_eq!(http_get(http, "/readyz").await.0, 200);

    // An account, a login with its token, and a resume.
    let mut alice = tc.client().await;
    let welcome = alice.register("alice", PASSWORD).await;
    alice.leave();
    let mut again = tc.client().await;
    again.hello().await;
    let token = match again
        .ask(SessionRequest::Resume {
            name: "alice".into(),
            token: welcome.token,
        })
        .await
    {
        SessionResponse::Welcome(w) => w.token,
        other => panic!("expected a resumed welcome, got {other:?}"),
    };
    again.leave();
    // Someone online through the outage, and someone half-way in a login.
    let mut bob = tc.user("bob").await;
    let mut carol = tc.client().await;
    carol.hello().await;
    carol.username("alice").await;

    pg.stop();

    let reason = login_meets_the_outage(&tc, "alice").await;
    assert_eq!(
        reason,
        "the coordinator cannot reach its accounts database; try again shortly"
    );
    assert_eq!(
        CloseCode::UNAVAILABLE.describe(),
        reason,
        "the peer shows the close code's sentence"
    );
    carol
        .send(SessionRequest::Password {
            password: PASSWORD.into(),
        })
        .await;
    assert_eq!(carol.close_code().await, CloseCode::UNAVAILABLE);
    let mut resume = tc.client().await;
    resume.hello().await;
    resume
        .send(SessionRequest::Resume {
            name: "alice".into(),
            token: token.clone(),
        })
        .await;
    assert_eq!(resume.close_code().await, CloseCode::UNAVAILABLE);
    // A session already online stays; its look-up fails with the sentence.
    assert_eq!(
        bob.lookup("dave").await,
        SessionResponse::Error {
            message: CloseCode::UNAVAILABLE.describe().into()
        }
    );
    let (status, body) = http_get(http, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("database: not writable") && body.contains("is unreachable"),
        "{body}"
    );

    pg.start_again();

    // No restart: the pool reconnects at the next call.
    within_for(WAIT * 3, "/readyz to be ready again", async {
        while http_get(http, "/readyz").await.0 != 200 {}
    })
    .await;
    let mut alice = tc.client().await;
    alice.login("alice", PASSWORD).await;
    alice.leave();
    assert!(
        matches!(
            bob.lookup("alice").await,
            SessionResponse::LookupResult { exists: true, .. }
        ),
        "the account made before the outage is still there"
    );
    // The failed resume changed nothing: the token still works.
    let mut resume = tc.client().await;
    resume.hello().await;
    let reply = resume
        .ask(SessionRequest::Resume {
            name: "alice".into(),
            token,
        })
        .await;
    assert!(matches!(reply, SessionResponse::Welcome(_)), "{reply:?}");
}
