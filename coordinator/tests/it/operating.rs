//! Operating the coordinator: `/metrics` counts exactly what a scripted run
//! did, `/readyz` turns unready while the database takes no write, and a
//! backup taken while logins run restores with every account it held.

use crate::support::*;
use common::protocol::{
    Answer, LoginFailure, RequestKind, SessionResponse, SignalEvent, SignalRequest,
};
use coordinator::store::DB_FILE;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A coordinator with its HTTP listener on loopback.
pub async fn with_metrics() -> TestCoordinator {
    TestCoordinator::start_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await
}

/// `GET path` on `addr`: the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    within("an HTTP exchange", async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the metrics listener");
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write a request");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read the response");
        let text = String::from_utf8(raw).expect("a UTF-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("a status code");
        (status, body.to_string())
    })
    .await
}

/// Every sample of a scrape, by its name and labels as written.
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Scrapes `/metrics`.
pub async fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("# EOF\n"), "an OpenMetrics exposition");
    samples(&body)
}

/// The counters (`*_total`) that differ between two scrapes, and by how much.
fn moved(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter(|(k, _)| k.split('{').next().is_some_and(|n| n.ends_with("_total")))
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

#[tokio::test]
async fn metrics_count_exactly_what_a_scripted_run_did() {
    let tc = with_metrics().await;
    let http = tc.metrics.expect("a metrics listener");
    let before = scrape(http).await;
    assert_eq!(before["p2pchat_sessions_online"], 0.0);

    let mut alice = tc.user("alice").await;
    let mut bob = tc.user("bob").await;
    assert_eq!(
        alice.recv().await,
        SessionResponse::Presence {
            name: "bob".into(),
            online: true
        }
    );

    // A wrong password on alice's account, then that client goes away.
    let mut guesser = tc.client().await;
    guesser.hello().await;
    guesser.username("alice").await;
    assert_eq!(
        guesser.password("not the password").await,
        SessionResponse::LoginFailed {
            reason: LoginFailure::WrongPassword,
            retry_after_secs: 0
        }
    );
    guesser.leave();

    // A chat request, accepted.
    alice.open_signal().await;
    bob.open_signal().await;
    alice
        .signal(SignalRequest::Request {
            id: 1,
            to: "bob".into(),
            kind: RequestKind::Chat,
        })
        .await;
    let SignalEvent::Incoming { id, .. } = bob.recv_signal().await else {
        panic!("bob expected the incoming request");
    };
    bob.signal(SignalRequest::Answer {
        id,
        answer: Answer::Accept,
    })
    .await;
    assert!(matches!(
        alice.recv_signal().await,
        SignalEvent::Connect { .. }
    ));

    // Bob disconnects; once alice has heard it he logs in again by password.
    bob.leave();
    assert_eq!(
        alice.recv().await,
        SessionResponse::Presence {
            name: "bob".into(),
            online: false
        }
    );
    let mut bob_again = tc.client().await;
    bob_again.login("bob", PASSWORD).await;
    // Presence goes out after a short coalescing window; alice having it
    // means it was counted.
    assert_eq!(
        alice.recv().await,
        SessionResponse::Presence {
            name: "bob".into(),
            online: true
        }
    );

    let normal_closes = "p2pchat_closes_total{by=\"peer\",code=\"normal\"}";
    let after = within("the coordinator to count both closes", async {
        loop {
            let now = scrape(http).await;
            if now.get(normal_closes).copied() == Some(2.0) {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let want: BTreeMap<String, f64> = [
        ("p2pchat_accounts_created_total", 2.0),
        ("p2pchat_logins_total{method=\"new_account\"}", 2.0),
        ("p2pchat_logins_total{method=\"password\"}", 1.0),
        (
            "p2pchat_login_failures_total{reason=\"wrong_password\"}",
            1.0,
        ),
        // Bob online, bob offline, bob online again: each to alice only.
        ("p2pchat_presence_notifications_sent_total", 3.0),
        (
            "p2pchat_signaling_requests_total{outcome=\"forwarded\"}",
            1.0,
        ),
        ("p2pchat_signaling_answers_total{answer=\"accept\"}", 1.0),
        (normal_closes, 2.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(moved(&before, &after), want, "counters that moved");
    assert_eq!(after["p2pchat_sessions_online"], 2.0);
    assert_eq!(after["p2pchat_connections{state=\"logged_in\"}"], 2.0);
    assert_eq!(after["p2pchat_connections{state=\"not_logged_in\"}"], 0.0);
    assert_eq!(after["p2pchat_signaling_pending"], 0.0);
    // Two accounts made and two passwords checked: four hashes.
    assert_eq!(after["p2pchat_hash_wait_seconds_count"], 4.0);
    assert_eq!(after["p2pchat_hash_queue_depth"], 0.0);
    assert!(after["p2pchat_db_commit_seconds_count"] >= 1.0);
    assert_eq!(after["p2pchat_db_commit_failures_total"], 0.0);
    assert!(after["process_resident_memory_bytes"] > 0.0);
    assert!(after["process_open_fds"] > 0.0);
    drop(bob_again);
}

#[tokio::test]
async fn health_endpoints_answer_and_readyz_fails_while_the_database_takes_no_write() {
    let tc = with_metrics().await;
    let http = tc.metrics.expect("a metrics listener");
    assert_eq!(http_get(http, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(http_get(http, "/nothing").await.0, 404);
    let (status, body) = http_get(http, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("database: writable"), "{body}");

    // Another connection takes the write lock and keeps it: the
    // coordinator's writes wait and fail, as on a database that is stuck.
    let lock = rusqlite::Connection::open(tc.data_dir().join(DB_FILE)).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let body = within_for(WAIT * 3, "/readyz to turn unready", async {
        loop {
            let (status, body) = http_get(http, "/readyz").await;
            if status == 503 {
                return body;
            }
        }
    })
    .await;
    assert!(body.contains("database: not writable"), "{body}");
    assert!(body.contains("quic: accepting connections"), "{body}");
    assert_eq!(
        http_get(http, "/healthz").await.0,
        200,
        "still live while unready"
    );

    lock.execute_batch("ROLLBACK").unwrap();
    within_for(WAIT * 3, "/readyz to be ready again", async {
        while http_get(http, "/readyz").await.0 != 200 {}
    })
    .await;
}

/// Waits until `count` reaches `at_least`.
async fn until(count: &AtomicUsize, at_least: usize) {
    within_for(WAIT * 3, "accounts to be created", async {
        while count.load(Ordering::SeqCst) < at_least {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

fn account_names(db: &std::path::Path) -> Vec<String> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let mut st = c
        .prepare("SELECT name FROM accounts ORDER BY name")
        .unwrap();
    let names = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<Vec<String>, _>>()
        .unwrap();
    names
}

#[tokio::test]
async fn a_backup_taken_while_logins_run_restores_with_every_account_it_held() {
    let tc = TestCoordinator::start().await;
    let created = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (addr, ca) = (tc.addr, tc.ca_path());
    let registrar = {
        let (created, stop) = (created.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let mut c = Client::connect(addr, &ca).await;
                c.register(&format!("user{n:03}"), PASSWORD).await;
                c.leave();
                n += 1;
                created.store(n, Ordering::SeqCst);
            }
            n
        })
    };

    until(&created, 3).await;
    let backup_dir = tempfile::tempdir().unwrap();
    let dest = backup_dir.path().join("accounts.sqlite3");
    let (data_dir, to) = (tc.data_dir().to_path_buf(), dest.clone());
    let report =
        tokio::task::spawn_blocking(move || coordinator::backup::backup(&data_dir, &to, false))
            .await
            .unwrap()
            .expect("the backup");
    // Logins go on after the backup: they must not be in it.
    let after_backup = created.load(Ordering::SeqCst);
    until(&created, after_backup + 2).await;
    stop.store(true, Ordering::SeqCst);
    let total = within("the registrar to stop", registrar).await.unwrap();

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the copy holds password hashes");
    let held = account_names(&dest);
    assert_eq!(held.len() as u64, report.accounts);
    assert!(held.len() >= 3, "accounts made before the backup: {held:?}");
    // The account whose welcome was on its way as the backup ended may be in.
    assert!(held.len() <= after_backup + 1 && held.len() < total);
    assert!(
        coordinator::backup::backup(tc.data_dir(), &dest, false).is_err(),
        "an existing copy is not replaced without asking"
    );

    // Restore into a fresh coordinator, as the README says: the file copied
    // into a data folder no coordinator is using.
    let restored = TestCoordinator::start_prepared(
        |dir| {
            std::fs::copy(&dest, dir.join(DB_FILE)).unwrap();
        },
        |_| {},
    )
    .await;
    for name in &held {
        let mut c = restored.client().await;
        c.login(name, PASSWORD).await;
        c.leave();
    }
    let mut missing = restored.client().await;
    missing.hello().await;
    assert_eq!(
        missing.username(&format!("user{:03}", total - 1)).await,
        SessionResponse::AccountStatus {
            name: format!("user{:03}", total - 1),
            exists: false
        },
        "an account made after the backup is not in it"
    );
}

#[tokio::test]
async fn the_backup_command_copies_a_serving_database_and_never_overwrites_unasked() {
    let tc = TestCoordinator::start().await;
    tc.user("alice").await.leave();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("copy.sqlite3");
    let run = |extra: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_coordinator"));
        cmd.arg("--data-dir")
            .arg(tc.data_dir())
            .arg("backup")
            .arg(&dest)
            .args(extra)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true);
        async move { within("coordinator backup", cmd.output()).await.unwrap() }
    };
    let first = run(&[]).await;
    assert!(first.status.success(), "{first:?}");
    let said = String::from_utf8_lossy(&first.stdout);
    assert!(said.starts_with("Backed up 1 account ("), "{said}");
    assert_eq!(account_names(&dest), vec!["alice".to_string()]);

    let again = run(&[]).await;
    assert!(!again.status.success(), "an existing copy is kept");
    let why = String::from_utf8_lossy(&again.stderr);
    assert!(why.contains("--force"), "{why}");
    assert!(run(&["--force"]).await.status.success());
}

#[tokio::test]
async fn a_wrong_current_password_in_a_password_change_counts_as_a_failed_login_step() {
    let tc = with_metrics().await;
    let http = tc.metrics.expect("a metrics listener");
    let mut alice = tc.user("alice").await;
    let before = scrape(http).await;
    let reply = alice
        .ask(common::protocol::SessionRequest::ChangePassword {
            old: "not the password".into(),
            new: "a brand new password".into(),
        })
        .await;
    assert_eq!(
        reply,
        SessionResponse::PasswordNotChanged {
            reason: LoginFailure::WrongPassword,
            retry_after_secs: 0
        }
    );
    let after = scrape(http).await;
    let want: BTreeMap<String, f64> = [(
        "p2pchat_login_failures_total{reason=\"wrong_password\"}".to_string(),
        1.0,
    )]
    .into_iter()
    .collect();
    assert_eq!(moved(&before, &after), want);
}
