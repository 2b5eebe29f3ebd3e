//! The operator's side of the real `coordinator` binary: the `accounts` and
//! `fingerprint` commands on a real database file (refused while a
//! coordinator serves it), the fingerprint printed at start against the one
//! a client sees in the handshake, `--name` in the certificate, and a taken
//! port reported once with nothing written.

use crate::support::*;
use common::protocol::{LoginFailure, SessionRequest, SessionResponse};
use common::tls::{
    certificate_fingerprint_line, coordinator_client_config_ca, coordinator_client_config_pinned,
    PinVerifier,
};
use common::Fingerprint;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The binary with the coordinator's own environment removed.
fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coordinator"));
    for var in [
        "P2PCHAT_COORDINATOR_LISTEN",
        "P2PCHAT_COORDINATOR_DATA_DIR",
        "P2PCHAT_COORDINATOR_CERT",
        "P2PCHAT_COORDINATOR_KEY",
        "P2PCHAT_COORDINATOR_NAMES",
        "P2PCHAT_COORDINATOR_DATABASE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "warn").kill_on_drop(true);
    cmd
}

/// Runs `coordinator ARGS --data-dir DATA` to its end, with `stdin` as input.
async fn operator(data: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = binary()
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the coordinator binary");
    let mut input = child.stdin.take().unwrap();
    within(
        "writing the command's input",
        input.write_all(stdin.as_bytes()),
    )
    .await
    .unwrap();
    drop(input);
    within(
        &format!("coordinator {} to finish", args.join(" ")),
        child.wait_with_output(),
    )
    .await
    .expect("run the coordinator binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the command succeeded; its standard output.
fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}, stdout: {}, stderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Asserts the command failed with one sentence on standard error; the sentence.
fn failed(out: &Output) -> String {
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a failure, got stdout: {}",
        text(&out.stdout)
    );
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.ends_with(".\n"), "a sentence ending the line: {err:?}");
    err
}

/// The row of `name` in `accounts list` output, split into its columns
/// (name, created, last login).
fn row(list: &str, name: &str) -> Option<(String, String)> {
    let line = list
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))?;
    let rest = line[name.len()..].trim();
    // "YYYY-MM-DD HH:MM:SS UTC" is 23 characters.
    let (created, last) = rest.split_at(23.min(rest.len()));
    Some((created.trim().to_string(), last.trim().to_string()))
}

/// Logs in to `name` with `password` on a fresh connection; the reply.
async fn try_login(tc: &TestCoordinator, name: &str, password: &str) -> SessionResponse {
    let mut c = tc.client().await;
    c.hello().await;
    c.username(name).await;
    let reply = c.password(password).await;
    c.leave();
    reply
}

#[tokio::test]
async fn list_shows_each_account_with_its_last_login_or_resume() {
    let mut tc = TestCoordinator::start().await;
    let before = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let mut alice = tc.client().await;
    let welcome = alice.register("alice", PASSWORD).await;
    alice.leave();
    tc.shutdown().await;

    let list = succeeded(&operator(tc.data_dir(), &["accounts", "list"], "").await);
    assert!(list.starts_with("NAME "), "a heading first: {list}");
    let (created, last) = row(&list, "alice").unwrap_or_else(|| panic!("no alice in {list}"));
    assert!(created.ends_with("UTC") && created >= before, "{list}");
    assert!(last.ends_with("UTC") && last >= created, "{list}");
    assert!(list.ends_with("1 account.\n"), "{list}");

    // A resume with the session token counts as a login too.
    let db = tc.data_dir().join(coordinator::store::DB_FILE);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("UPDATE accounts SET last_login_at_ms = NULL", [])
        .unwrap();
    let list = succeeded(&operator(tc.data_dir(), &["accounts", "list"], "").await);
    assert_eq!(row(&list, "alice").unwrap().1, "never", "{list}");
    tc.restart().await;
    let mut c = tc.client().await;
    c.hello().await;
    let reply = c
        .ask(SessionRequest::Resume {
            name: "alice".into(),
            token: welcome.token,
        })
        .await;
    assert!(matches!(reply, SessionResponse::Welcome(_)), "{reply:?}");
    c.leave();
    tc.shutdown().await;
    let list = succeeded(&operator(tc.data_dir(), &["accounts", "list"], "").await);
    let (_, last) = row(&list, "alice").unwrap();
    assert!(last.ends_with("UTC") && last >= created, "{list}");
}

#[tokio::test]
async fn an_old_database_gains_the_last_login_column() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(coordinator::store::DB_FILE);
    {
        // Schema version 1, as coordinators before last logins wrote it.
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE accounts (name TEXT PRIMARY KEY NOT NULL, phc TEXT NOT NULL,
                 created_at_ms INTEGER NOT NULL);
             CREATE TABLE tokens (hash BLOB PRIMARY KEY NOT NULL,
                 name TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
                 expires_at_ms INTEGER NOT NULL);
             CREATE INDEX tokens_expiry ON tokens(expires_at_ms);
             INSERT INTO accounts VALUES ('carol', 'x', 1700000000000);
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let list = succeeded(&operator(dir.path(), &["accounts", "list"], "").await);
    let (created, last) = row(&list, "carol").unwrap_or_else(|| panic!("no carol in {list}"));
    assert_eq!(created, "2023-11-14 22:13:20 UTC");
    assert_eq!(last, "never");
}

#[tokio::test]
async fn a_deleted_account_is_a_new_name_and_its_token_is_void() {
    let mut tc = TestCoordinator::start().await;
    let mut alice = tc.client().await;
    let welcome = alice.register("alice", PASSWORD).await;
    alice.leave();
    tc.user("bob").await.leave();
    tc.shutdown().await;

    let out = succeeded(&operator(tc.data_dir(), &["accounts", "delete", "Alice"], "").await);
    assert_eq!(out, "Deleted the account alice and its session tokens.\n");
    let err = failed(&operator(tc.data_dir(), &["accounts", "delete", "alice"], "").await);
    assert!(err.contains("There is no account named alice"), "{err}");
    let list = succeeded(&operator(tc.data_dir(), &["accounts", "list"], "").await);
    assert!(
        row(&list, "alice").is_none() && row(&list, "bob").is_some(),
        "{list}"
    );

    tc.restart().await;
    let mut c = tc.client().await;
    c.hello().await;
    let reply = c
        .ask(SessionRequest::Resume {
            name: "alice".into(),
            token: welcome.token,
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
        "the deleted account's token still works: {reply:?}"
    );
    assert_eq!(
        c.username("alice").await,
        SessionResponse::AccountStatus {
            name: "alice".into(),
            exists: false
        },
        "a deleted name is free again"
    );
}

#[tokio::test]
async fn a_reset_password_replaces_the_old_one_and_voids_tokens() {
    let mut tc = TestCoordinator::start().await;
    let mut alice = tc.client().await;
    let welcome = alice.register("alice", PASSWORD).await;
    alice.leave();
    tc.shutdown().await;

    // A password the rules refuse changes nothing.
    let err = failed(
        &operator(
            tc.data_dir(),
            &["accounts", "reset-password", "alice"],
            "short\n",
        )
        .await,
    );
    assert!(err.contains("at least 8 characters"), "{err}");
    // From standard input.
    let new = "a new password, long enough";
    let out = succeeded(
        &operator(
            tc.data_dir(),
            &["accounts", "reset-password", "alice"],
            &format!("{new}\n"),
        )
        .await,
    );
    assert!(out.contains("new password for alice"), "{out}");

    tc.restart().await;
    assert!(
        matches!(
            try_login(&tc, "alice", PASSWORD).await,
            SessionResponse::LoginFailed {
                reason: LoginFailure::WrongPassword,
                ..
            }
        ),
        "the old password still works"
    );
    assert!(
        matches!(
            try_login(&tc, "alice", new).await,
            SessionResponse::Welcome(_)
        ),
        "the new password does not work"
    );
    let mut c = tc.client().await;
    c.hello().await;
    let reply = c
        .ask(SessionRequest::Resume {
            name: "alice".into(),
            token: welcome.token,
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
        "a token from before the reset still works: {reply:?}"
    );
    c.leave();

    // From a file.
    tc.shutdown().await;
    let file = tc.data_dir().join("new-password");
    std::fs::write(&file, "from a file, long enough\n").unwrap();
    succeeded(
        &operator(
            tc.data_dir(),
            &[
                "accounts",
                "reset-password",
                "alice",
                "--password-file",
                file.to_str().unwrap(),
            ],
            "",
        )
        .await,
    );
    tc.restart().await;
    assert!(matches!(
        try_login(&tc, "alice", "from a file, long enough").await,
        SessionResponse::Welcome(_)
    ));
}

#[tokio::test]
async fn the_database_of_a_serving_coordinator_is_left_alone() {
    let mut tc = TestCoordinator::start().await;
    tc.user("alice").await.leave();
    let lock = tc.data_dir().join(coordinator::lock::LOCK_FILE);
    for args in [
        &["accounts", "list"][..],
        &["accounts", "delete", "alice"],
        &["accounts", "reset-password", "alice"],
    ] {
        let err = failed(&operator(tc.data_dir(), args, "another password\n").await);
        assert!(
            err.contains(&lock.display().to_string())
                && err.contains("a coordinator is serving this data folder"),
            "{args:?}: {err}"
        );
    }
    tc.shutdown().await;
    let list = succeeded(&operator(tc.data_dir(), &["accounts", "list"], "").await);
    assert!(row(&list, "alice").is_some(), "{list}");
    tc.restart().await;
    assert!(matches!(
        try_login(&tc, "alice", PASSWORD).await,
        SessionResponse::Welcome(_)
    ));
}

/// A serving `coordinator` binary and the lines it printed before listening.
struct Serving {
    child: Child,
    _stdout: Lines<BufReader<ChildStdout>>,
    addr: SocketAddr,
    lines: Vec<String>,
    stderr: PathBuf,
}

impl Serving {
    /// What it wrote on standard error so far.
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap()
    }

    /// Kills it and waits until it is gone (and its lock with it).
    async fn stop(mut self) {
        within("the coordinator to die", self.child.kill())
            .await
            .unwrap();
    }
}

/// Starts the binary on `data` (its standard error goes to a file beside
/// `data`).
async fn serve(data: &Path, extra: &[&str]) -> Serving {
    let stderr = data.with_extension("stderr.log");
    let mut child = binary()
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("spawn the coordinator binary");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut lines = Vec::new();
    let addr = loop {
        let line = within("the coordinator's start-up lines", stdout.next_line())
            .await
            .unwrap()
            .expect("the coordinator exited before listening");
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.parse().unwrap();
        }
        lines.push(line);
    };
    Serving {
        child,
        _stdout: stdout,
        addr,
        lines,
        stderr,
    }
}

/// Handshakes with `addr` verifying it against the CA file `ca` for
/// `server_name`.
async fn handshake_with_ca(
    addr: SocketAddr,
    ca: &Path,
    server_name: &str,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let config =
        coordinator_client_config_ca(&new_identity(), certs::load_ca_certs(ca).unwrap()).unwrap();
    let endpoint = client_endpoint();
    let connecting = endpoint.connect_with(config, addr, server_name).unwrap();
    within("a handshake", connecting).await
}

#[tokio::test]
async fn the_printed_fingerprint_is_the_one_a_client_pins() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serving = serve(&data, &[]).await;
    let printed = serving
        .lines
        .iter()
        .find(|l| l.starts_with(common::tls::CERTIFICATE_FINGERPRINT_LABEL))
        .unwrap_or_else(|| panic!("no fingerprint line in {:?}", serving.lines))
        .clone();
    assert!(
        serving
            .lines
            .iter()
            .any(|l| l.starts_with("CA fingerprint: ")),
        "the CA line is kept: {:?}",
        serving.lines
    );

    // What a peer sees in the handshake and pins on first use.
    let verifier = PinVerifier::new(None);
    let config = coordinator_client_config_pinned(&new_identity(), verifier.clone()).unwrap();
    let endpoint = client_endpoint();
    let conn = within(
        "the pinning handshake",
        endpoint
            .connect_with(config, serving.addr, "localhost")
            .unwrap(),
    )
    .await
    .expect("handshake");
    let seen: Fingerprint = verifier
        .seen()
        .expect("a fingerprint seen in the handshake");
    assert_eq!(printed, certificate_fingerprint_line(&seen));
    assert_eq!(
        Fingerprint::of_connection(&conn),
        Some(seen),
        "the certificate the connection presented"
    );
    conn.close(0u32.into(), b"");

    // The operator command, while it serves, prints the same line.
    let out = succeeded(&operator(&data, &["fingerprint"], "").await);
    assert_eq!(out.lines().next(), Some(printed.as_str()), "{out}");
    let ca_line = serving
        .lines
        .iter()
        .find(|l| l.starts_with("CA fingerprint: "))
        .unwrap();
    assert_eq!(out.lines().nth(1), Some(ca_line.as_str()), "{out}");
}

#[tokio::test]
async fn names_given_with_name_are_in_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serving = serve(
        &data,
        &["--name", "192.0.2.7", "--name", "Chat.Example.com"],
    )
    .await;
    let tls = data.join("tls");
    let leaf = tls.join(certs::COORDINATOR_CERT_FILE);

    // The subject alternative names, read by openssl.
    let sans = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&leaf)
        .output()
        .expect("run openssl (the tests need it on the PATH)");
    let sans = text(&sans.stdout);
    for want in [
        "DNS:chat.example.com",
        "IP Address:192.0.2.7",
        "DNS:localhost",
        "IP Address:127.0.0.1",
    ] {
        assert!(sans.contains(want), "{want} missing from {sans}");
    }

    // A client trusting the CA file reaches it by either name (the address
    // it dials is loopback; the name is what the certificate is checked for).
    let ca = tls.join(certs::CA_CERT_FILE);
    for name in ["chat.example.com", "192.0.2.7", "localhost"] {
        handshake_with_ca(serving.addr, &ca, name)
            .await
            .unwrap_or_else(|e| panic!("a client using the CA file for {name}: {e}"));
    }
    let err = handshake_with_ca(serving.addr, &ca, "other.example.com")
        .await
        .expect_err("a name not given is refused");
    assert!(common::tls::is_certificate_rejection(&err), "{err:?}");
}

#[tokio::test]
async fn a_new_name_reissues_the_certificate_from_the_ca_in_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tls = data.join("tls");
    // An operator's folder, CA key included.
    certs::issue_coordinator_files(&tls, &["localhost".into()], &[]).unwrap();
    let ca = tls.join(certs::CA_CERT_FILE);
    let ca_before = certs::file_fingerprint(&ca).unwrap();
    let leaf_before = certs::file_fingerprint(&tls.join(certs::COORDINATOR_CERT_FILE)).unwrap();

    let serving = serve(&data, &["--name", "chat.example.com"]).await;
    let log = serving.stderr();
    assert!(
        log.contains("did not name chat.example.com: reissued it"),
        "the log says so: {log}"
    );
    assert_eq!(certs::file_fingerprint(&ca).unwrap(), ca_before, "same CA");
    let leaf = certs::file_fingerprint(&tls.join(certs::COORDINATOR_CERT_FILE)).unwrap();
    assert_ne!(leaf, leaf_before, "a new certificate");
    assert!(
        serving.lines.contains(&certificate_fingerprint_line(&leaf)),
        "the new fingerprint is printed: {:?}",
        serving.lines
    );
    handshake_with_ca(serving.addr, &ca, "chat.example.com")
        .await
        .expect("a client trusting the old CA file reaches the new name");
    serving.stop().await;

    // Asked again for the same name: nothing to reissue.
    let serving = serve(&data, &["--name", "chat.example.com"]).await;
    assert!(
        !serving.stderr().contains("reissued"),
        "{}",
        serving.stderr()
    );
    assert_eq!(
        certs::file_fingerprint(&tls.join(certs::COORDINATOR_CERT_FILE)).unwrap(),
        leaf
    );
}

#[tokio::test]
async fn without_the_ca_key_a_new_name_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    serve(&data, &[]).await.stop().await;
    let leaf = data.join("tls").join(certs::COORDINATOR_CERT_FILE);
    let before = certs::file_fingerprint(&leaf).unwrap();
    let out = within(
        "the coordinator to refuse",
        binary()
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0", "--name", "chat.example.com"])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap();
    let err = failed(&out);
    assert!(
        err.contains("does not name chat.example.com") && err.contains("p2pchat-certs"),
        "{err}"
    );
    assert_eq!(certs::file_fingerprint(&leaf).unwrap(), before);
}

#[tokio::test]
async fn a_taken_port_is_one_sentence_and_nothing_is_written() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = within(
        "the coordinator to give up",
        binary()
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", &addr])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap();
    let err = failed(&out);
    assert!(
        err.starts_with(&format!("coordinator: Cannot listen on {addr}: ")),
        "{err}"
    );
    let cause = std::io::Error::from(std::io::ErrorKind::AddrInUse).to_string();
    let os = std::io::Error::from_raw_os_error(libc::EADDRINUSE).to_string();
    assert_eq!(
        err.matches(&os).count(),
        1,
        "the cause once ({cause}): {err}"
    );
    assert!(
        !data.exists(),
        "the data folder (and a CA in it) was made for a coordinator that cannot listen"
    );
    assert_eq!(text(&out.stdout), "", "nothing printed on standard output");
}

/// Runs `coordinator ARGS` (no data folder) to its end, with `envs` set and
/// `stdin` as input.
async fn operator_on(args: &[&str], envs: &[(&str, &str)], stdin: &str) -> Output {
    let mut child = binary()
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the coordinator binary");
    let mut input = child.stdin.take().unwrap();
    within(
        "writing the command's input",
        input.write_all(stdin.as_bytes()),
    )
    .await
    .unwrap();
    drop(input);
    within(
        &format!("coordinator {} to finish", args.join(" ")),
        child.wait_with_output(),
    )
    .await
    .expect("run the coordinator binary")
}

#[tokio::test]
async fn accounts_commands_work_on_postgres_and_backup_points_to_pg_dump() {
    use coordinator::store::{PgStore, Store};
    let server = shared_pg();
    let plain = server.fresh_database();
    // The test server trusts every connection, so a password in the URL is
    // ignored: here only to check that no output ever shows it.
    let url = plain.replacen("p2pchat@", "p2pchat:s3cret@", 1);
    let outputs = std::cell::RefCell::new(Vec::new());
    let keep = |out: Output| {
        outputs
            .borrow_mut()
            .push(format!("{}{}", text(&out.stdout), text(&out.stderr)));
        out
    };

    let err = failed(&keep(
        operator_on(&["accounts", "list", "--database", &url], &[], "").await,
    ));
    assert!(
        err.contains("no accounts tables"),
        "a mistyped URL creates nothing: {err}"
    );

    let store = Store::Postgres(
        within("PostgreSQL to open", PgStore::open(&plain))
            .await
            .unwrap(),
    );
    store.create_account("bob", "phc".into()).await.unwrap();
    store.create_account("alice", "phc".into()).await.unwrap();
    store.add_token("alice", "t1", 60_000).await.unwrap();

    let list = succeeded(&keep(
        operator_on(&["accounts", "list", "--database", &url], &[], "").await,
    ));
    assert!(list.starts_with("NAME "), "{list}");
    assert!(
        row(&list, "alice").is_some() && row(&list, "bob").is_some(),
        "{list}"
    );
    assert!(list.ends_with("2 accounts.\n"), "{list}");

    // From the environment too, and while "coordinators" use the database.
    let out = succeeded(&keep(
        operator_on(
            &["accounts", "delete", "bob"],
            &[("P2PCHAT_COORDINATOR_DATABASE", &url)],
            "",
        )
        .await,
    ));
    assert!(out.contains("Deleted the account bob"), "{out}");
    assert!(!store.exists("bob").await.unwrap());

    succeeded(&keep(
        operator_on(
            &["--database", &url, "accounts", "reset-password", "alice"],
            &[],
            "another good password\n",
        )
        .await,
    ));
    assert!(
        !store
            .rotate_token("alice", "t1", "t2", 60_000)
            .await
            .unwrap(),
        "the reset revoked the token"
    );
    assert_ne!(
        store.password_hash("alice").await.unwrap().as_deref(),
        Some("phc")
    );

    let dest = tempfile::tempdir().unwrap();
    let copy = dest.path().join("copy.sqlite3");
    let err = failed(&keep(
        operator_on(
            &["backup", copy.to_str().unwrap(), "--database", &url],
            &[],
            "",
        )
        .await,
    ));
    assert!(err.contains("pg_dump"), "{err}");
    assert!(!copy.exists());

    for out in outputs.borrow().iter() {
        assert!(!out.contains("s3cret"), "a password shown: {out}");
    }
}

#[tokio::test]
async fn the_binary_serves_accounts_from_postgres_and_says_where_without_the_password() {
    let server = shared_pg();
    let url = server
        .fresh_database()
        .replacen("p2pchat@", "p2pchat:s3cret@", 1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serving = serve(&data, &["--database", &url]).await;
    let want = format!("accounts: PostgreSQL at 127.0.0.1:{}/", server.port());
    assert!(
        serving.lines.iter().any(|l| l.starts_with(&want)),
        "{:?}",
        serving.lines
    );
    let mut c = Client::connect(serving.addr, &data.join("tls").join(certs::CA_CERT_FILE)).await;
    c.register("alice", PASSWORD).await;
    c.leave();
    assert!(
        !data.join(coordinator::store::DB_FILE).exists(),
        "no SQLite file beside PostgreSQL"
    );
    let printed = format!("{:?}{}", serving.lines, serving.stderr());
    assert!(!printed.contains("s3cret"), "{printed}");
    serving.stop().await;

    let list = succeeded(&operator_on(&["accounts", "list", "--database", &url], &[], "").await);
    assert!(row(&list, "alice").is_some(), "{list}");
}
