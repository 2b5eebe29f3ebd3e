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

#[test]
fn a_url_asking_for_tls_is_refused_at_once() {
    let err = PgStore::connect("postgres://chat@db.internal/accounts?sslmode=require")
        .expect_err("TLS is not spoken");
    assert!(err.to_string().contains("sslmode"), "{err}");
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
