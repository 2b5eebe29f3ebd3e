//! Accounts: registration, logging in again, wrong passwords, throttling of
//! failures (per account and per address), session tokens, and accounts
//! surviving a restart. Passwords are stored as Argon2id PHC strings.

use crate::support::*;
use common::protocol::{LoginFailure, SessionRequest, SessionResponse};
use coordinator::auth::AuthLimits;
use std::time::Duration;

fn stored_phc(tc: &TestCoordinator, name: &str) -> String {
    let path = tc.data_dir().join(coordinator::store::DB_FILE);
    let db =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the coordinator database");
    db.query_row("SELECT phc FROM accounts WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .expect("the account row")
}

#[tokio::test]
async fn register_then_log_in_again_on_a_new_connection() {
    let tc = TestCoordinator::start().await;

    let mut first = tc.client().await;
    first.hello().await;
    let status = first.username("Alice").await;
    assert_eq!(
        status,
        SessionResponse::AccountStatus {
            name: "alice".into(),
            exists: false
        },
        "a new name is reported as new, normalised"
    );
    let welcome = match first.password(PASSWORD).await {
        SessionResponse::Welcome(w) => w,
        other => panic!("expected a welcome, got {other:?}"),
    };
    assert_eq!(welcome.name, "alice");
    assert!(welcome.online.is_empty());
    assert_eq!(welcome.observed, first.local_addr());
    let token = welcome.token.expose();
    assert!(token.len() >= 32, "token of 128+ bits: {token}");
    assert!(
        !format!("{welcome:?}").contains(token),
        "Debug hides the token"
    );
    assert!(welcome.token_valid_secs > 0);
    first.leave();

    let phc = stored_phc(&tc, "alice");
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    assert!(!phc.contains(PASSWORD));

    let mut again = tc.client().await;
    let welcome = again.login("ALICE", PASSWORD).await;
    assert_eq!(welcome.name, "alice");
    assert_ne!(
        welcome.token.expose(),
        "",
        "a new token for the new session"
    );
}

#[tokio::test]
async fn wrong_password_then_right_password_on_the_same_connection() {
    let tc = TestCoordinator::start().await;
    tc.user("bob").await.leave();

    let mut c = tc.client().await;
    c.hello().await;
    assert_eq!(
        c.username("bob").await,
        SessionResponse::AccountStatus {
            name: "bob".into(),
            exists: true
        }
    );
    assert_eq!(
        c.password("not the password").await,
        SessionResponse::LoginFailed {
            reason: LoginFailure::WrongPassword,
            retry_after_secs: 0
        }
    );
    match c.password(PASSWORD).await {
        SessionResponse::Welcome(w) => assert_eq!(w.name, "bob"),
        other => panic!("expected a welcome after the retry, got {other:?}"),
    }
}

#[tokio::test]
async fn failures_past_the_free_ones_are_throttled_per_account_and_per_address() {
    let tc = TestCoordinator::start_with(|cfg| {
        cfg.auth = AuthLimits {
            base_delay: Duration::from_secs(1),
            ..AuthLimits::default()
        };
    })
    .await;
    tc.user("carol").await.leave();
    tc.user("dave").await.leave();

    let mut c = tc.client().await;
    c.hello().await;
    c.username("carol").await;
    for attempt in 1..=3 {
        assert_eq!(
            c.password("wrong password").await,
            SessionResponse::LoginFailed {
                reason: LoginFailure::WrongPassword,
                retry_after_secs: 0
            },
            "failure {attempt} is free"
        );
    }
    let wait = match c.password("wrong password").await {
        SessionResponse::LoginFailed {
            reason: LoginFailure::WrongPassword,
            retry_after_secs,
        } => retry_after_secs,
        other => panic!("expected a throttled failure, got {other:?}"),
    };
    assert!(wait > 0, "the fourth failure imposes a wait");

    // Even the right password is not considered during the wait.
    match c.password(PASSWORD).await {
        SessionResponse::LoginFailed {
            reason: LoginFailure::TooManyAttempts,
            retry_after_secs,
        } => assert!(retry_after_secs > 0),
        other => panic!("expected TooManyAttempts, got {other:?}"),
    }

    // Another account from the same address is held back too.
    let mut other = tc.client().await;
    other.hello().await;
    other.username("dave").await;
    match other.password(PASSWORD).await {
        SessionResponse::LoginFailed {
            reason: LoginFailure::TooManyAttempts,
            retry_after_secs,
        } => assert!(retry_after_secs > 0),
        r => panic!("expected the address to be throttled, got {r:?}"),
    }

    // Once the wait is over, the right password works.
    tokio::time::sleep(Duration::from_secs(u64::from(wait))).await;
    match c.password(PASSWORD).await {
        SessionResponse::Welcome(w) => assert_eq!(w.name, "carol"),
        r => panic!("expected a welcome after the wait, got {r:?}"),
    }
}

#[tokio::test]
async fn restart_on_the_same_data_folder_keeps_accounts() {
    let mut tc = TestCoordinator::start().await;
    tc.user("erin").await.leave();
    tc.restart().await;

    let mut c = tc.client().await;
    c.hello().await;
    assert_eq!(
        c.username("erin").await,
        SessionResponse::AccountStatus {
            name: "erin".into(),
            exists: true
        }
    );
    assert!(matches!(
        c.password("not erin's password").await,
        SessionResponse::LoginFailed {
            reason: LoginFailure::WrongPassword,
            ..
        }
    ));
    match c.password(PASSWORD).await {
        SessionResponse::Welcome(w) => assert_eq!(w.name, "erin"),
        r => panic!("expected a welcome after the restart, got {r:?}"),
    }
}

#[tokio::test]
async fn a_session_token_logs_in_once_without_the_password() {
    let tc = TestCoordinator::start().await;
    let mut first = tc.client().await;
    let token = first.register("frank", PASSWORD).await.token;
    first.leave();

    let mut resumed = tc.client().await;
    resumed.hello().await;
    let reply = resumed
        .ask(SessionRequest::Resume {
            name: "frank".into(),
            token: token.clone(),
        })
        .await;
    match reply {
        SessionResponse::Welcome(w) => assert_eq!(w.name, "frank"),
        r => panic!("expected a welcome from the token, got {r:?}"),
    }
    resumed.leave();

    let mut replay = tc.client().await;
    replay.hello().await;
    let reply = replay
        .ask(SessionRequest::Resume {
            name: "frank".into(),
            token,
        })
        .await;
    assert!(
        matches!(
            reply,
            SessionResponse::LoginFailed {
                reason: LoginFailure::BadToken,
                ..
            }
        ),
        "a used token is refused: {reply:?}"
    );
}

#[tokio::test]
async fn account_creation_from_one_address_is_throttled() {
    let tc = TestCoordinator::start_with(|cfg| {
        cfg.auth = AuthLimits {
            free_creations: 2,
            ..AuthLimits::default()
        };
    })
    .await;
    for name in ["one", "two", "three"] {
        tc.user(name).await.leave();
    }
    let mut c = tc.client().await;
    c.hello().await;
    c.username("four").await;
    match c.password(PASSWORD).await {
        SessionResponse::LoginFailed {
            reason: LoginFailure::TooManyAttempts,
            retry_after_secs,
        } => assert!(retry_after_secs > 0),
        other => panic!("expected the creation to be throttled, got {other:?}"),
    }
    // Existing accounts still log in from the same address.
    let mut again = tc.client().await;
    assert_eq!(again.login("one", PASSWORD).await.name, "one");
}
