//! The `peer` command as scripts and new users meet it (issue 8): the order
//! of prompts through a pipe, lines typed ahead across a decline, fast and
//! honest failures at start, the first-use fingerprint, the commands people
//! reach for, and `peer send`. Real coordinator and peer processes.

use crate::e2e::{start_chat, Pair};
use crate::e2e_support::{free_udp_addr, stored_messages, Coordinator, Peer};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const PW: &str = "correct horse";

/// Runs `peer` with `args` to its end (killed after a minute), with the
/// password in the environment.
fn run_peer(args: &[&str], password: Option<&str>, stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peer"));
    cmd.args(args)
        .env("RUST_LOG", "error")
        .env_remove("P2PCHAT_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(pw) = password {
        cmd.env("P2PCHAT_PASSWORD", pw);
    }
    let mut child = cmd.spawn().expect("starting peer");
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin.as_bytes());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `peer send` as `user` from `dir`.
fn send(coord: &Coordinator, dir: &Path, user: &str, pw: &str, to: &str, msg: &str) -> Output {
    let ca = coord.ca_cert();
    let addr = coord.addr.to_string();
    run_peer(
        &[
            "send",
            to,
            msg,
            "--user",
            user,
            "--coordinator",
            &addr,
            "--ca-cert",
            ca.to_str().unwrap(),
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--wait",
            "20",
        ],
        Some(pw),
        "",
    )
}

/// An account `name` made interactively in `dir`, then signed out.
fn make_account(coord: &Coordinator, dir: &Path, name: &str) {
    let mut p = Peer::start(coord, dir);
    p.login_new(name, PW);
    p.exit();
}

#[test]
fn peer_send_delivers_to_an_online_recipient_and_says_so() {
    let coord = Coordinator::start();
    let (dc, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make_account(&coord, dc.path(), "carol");
    let mut bob = Peer::start(&coord, db.path());
    bob.login_new("bob", PW);

    let out = send(&coord, dc.path(), "carol", PW, "bob", "hello from a script");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Delivered."));
    bob.expect("carol: hello from a script");
    let rows = stored_messages(dc.path(), "carol");
    assert_eq!(rows.len(), 1);
    assert!(rows[0].delivered_at_ms.is_some());
}

#[test]
fn peer_send_keeps_for_an_offline_recipient_and_the_message_arrives_later() {
    let coord = Coordinator::start();
    let (dc, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make_account(&coord, dc.path(), "carol");
    make_account(&coord, db.path(), "bob");

    let out = send(&coord, dc.path(), "carol", PW, "bob", "while you were away");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Kept"));
    let rows = stored_messages(dc.path(), "carol");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].delivered_at_ms, None);

    // Both online later: it is delivered in the background.
    let mut bob = Peer::start(&coord, db.path());
    bob.login("bob", PW);
    let mut carol = Peer::start(&coord, dc.path());
    carol.login("carol", PW);
    bob.expect("carol: while you were away");
}

#[test]
fn peer_send_with_a_wrong_password_fails_and_stores_nothing() {
    let coord = Coordinator::start();
    let (dc, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make_account(&coord, dc.path(), "carol");
    make_account(&coord, db.path(), "bob");

    let out = send(&coord, dc.path(), "carol", "wrong password!", "bob", "x");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("Not sent: login failed"), "{err}");
    assert!(stored_messages(dc.path(), "carol").is_empty());
}

#[test]
fn a_bad_coordinator_address_is_an_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for (addr, says) in [
        ("127.0.0.1", "has no port"),
        ("no-such-host.invalid:7070", "does not resolve"),
    ] {
        let out = run_peer(&["--coordinator", addr, "--data-dir", d], None, "");
        assert_eq!(out.status.code(), Some(2), "{addr}");
        let err = text(&out.stderr);
        assert!(err.starts_with("peer: The coordinator"), "{err}");
        assert!(err.contains(says), "{err}");
        assert!(err.ends_with(".\n"), "{err:?}");
        assert!(text(&out.stdout).is_empty(), "nothing else is said");
    }
    // A data folder that is a file: said once, as a sentence.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let out = run_peer(&["--data-dir", file.to_str().unwrap()], None, "");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        format!(
            "peer: The data folder {} cannot be used: it exists and is not a folder.\n",
            file.display()
        )
    );
}

#[test]
fn an_unreachable_coordinator_is_reported_quickly_and_the_end_of_input_quits() {
    let addr = free_udp_addr().to_string();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    // A name typed ahead, then the end of input: nothing can take it.
    let out = run_peer(
        &[
            "--coordinator",
            &addr,
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        None,
        "alice\n",
    );
    let took = started.elapsed();
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "Cannot reach the coordinator at {addr}: no answer within"
        )),
        "{stdout}"
    );
    assert!(
        !stdout.contains("Signing out"),
        "nobody signed in: {stdout}"
    );
    assert!(stdout.contains("Quitting..."), "{stdout}");
    assert_eq!(out.status.code(), Some(1));
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[test]
fn prompts_come_in_order_through_a_pipe_and_typed_ahead_lines_survive_no_decline() {
    let coord = Coordinator::start();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut bob = Peer::start(&coord, db.path());
    bob.login_new("bob", PW);
    let mut alice = Peer::start(&coord, da.path());
    alice.login_new("alice", PW);

    // Alice asks, and types a line while the request is pending; bob declines.
    alice.send("bob");
    alice.expect("Asking bob to chat");
    alice.send("carol");
    bob.expect("Chat with alice? [y/n]");
    bob.send("n");
    alice.expect("bob declined the chat");
    alice.expect("1 line typed ahead while waiting were not used.");
    alice.expect("alice → bob (kept)>");
    alice.send("disconnect");
    alice.expect("Who do you want to chat with?");
    // Nothing was kept for bob, and nobody named carol was asked.
    assert!(stored_messages(da.path(), "alice").is_empty());
    assert_eq!(alice.count("carol"), 0);
    alice.exit();

    // The order of the prompts a script sees.
    let t = alice.transcript();
    let order = [
        "Username:",
        "New account alice. Choose a password:",
        "Repeat the password:",
        "Logged in as alice.",
        "Who do you want to chat with?",
        "Asking bob to chat",
        "bob declined the chat",
        "alice → bob (kept)>",
        "Who do you want to chat with?",
        "Signed out.",
    ];
    let mut at = 0;
    for want in order {
        let found = t[at..].iter().position(|l| l.contains(want));
        assert!(found.is_some(), "{want:?} after line {at}: {t:#?}");
        at += found.unwrap() + 1;
    }
}

#[test]
fn the_commands_people_reach_for_work_in_a_chat() {
    let Pair {
        coord,
        da: _da,
        db: _db,
        mut alice,
        mut bob,
    } = Pair::online();
    alice.send("help");
    alice.expect("/say TEXT sends TEXT");
    start_chat(&mut alice, "alice", &mut bob, "bob");
    alice.send("/status");
    alice.expect(&format!("Coordinator: {} (connected).", coord.addr));
    alice.expect("Logged in as alice; this peer listens on 127.0.0.1:");
    alice.expect("bob (chat): direct to 127.0.0.1:");
    alice.send("/say exit");
    bob.expect("alice: exit");
    alice.send("//disconnect");
    bob.expect("alice: /disconnect");
    alice.send("/nonsense");
    alice.expect("Unknown command /nonsense");
    alice.send("/leave");
    alice.expect("You left the chat with bob.");
    bob.expect("alice left the chat.");
    alice.send("/history bob");
    alice.expect("History with bob (2 messages):");
    alice.expect("alice: exit (delivered)");
    alice.send("/quit");
    alice.expect("Signed out.");
    assert!(alice.wait_exit().success());
    // The other side is told once that alice left, not twice.
    bob.send("/online");
    bob.expect("Nobody else is online.");
    assert_eq!(bob.count("alice went offline."), 1);
}

#[test]
fn a_chat_partner_signing_out_is_told_once() {
    let Pair {
        coord: _coord,
        da: _da,
        db: _db,
        mut alice,
        mut bob,
    } = Pair::online();
    start_chat(&mut alice, "alice", &mut bob, "bob");
    bob.exit();
    alice.expect("bob signed out.");
    alice.expect("Who do you want to chat with?");
    alice.send("/online");
    alice.expect("Nobody else is online.");
    assert_eq!(
        alice.count("bob went offline."),
        0,
        "{:#?}",
        alice.transcript()
    );
}

#[test]
fn the_first_use_fingerprint_is_the_one_the_coordinator_prints() {
    let coord = Coordinator::start();
    let dir = tempfile::tempdir().unwrap();
    let mut p = Peer::spawn(&coord.addr.to_string(), dir.path(), None);
    let line = p.expect("Its certificate fingerprint is ");
    let shown = line
        .split("fingerprint is ")
        .nth(1)
        .unwrap()
        .trim_end_matches('.')
        .to_string();
    assert!(shown.starts_with("sha256:"), "{line}");
    p.expect("later runs accept only this certificate");
    // The coordinator's own words for the certificate peers pin.
    let printed = coord.printed();
    assert!(
        printed.iter().any(|l| l.contains(&shown)),
        "{shown} is not among what the coordinator printed: {printed:#?}"
    );
    p.login_new("alice", PW);
    p.exit();
    // A later run says nothing more about it.
    let mut again = Peer::spawn(&coord.addr.to_string(), dir.path(), None);
    again.login("alice", PW);
    assert_eq!(again.count("First connection"), 0);
}

#[test]
fn a_contact_whose_key_changed_is_warned_about_before_the_chat_starts() {
    let coord = Coordinator::start();
    let (da, db, db2) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let mut alice = Peer::start(&coord, da.path());
    alice.login_new("alice", PW);
    alice.send("/whois bob");
    alice.expect("No key known for bob yet");
    let mut bob = Peer::start(&coord, db.path());
    bob.login_new("bob", PW);
    bob.send("/whois bob");
    let own = bob.expect("Your key (bob): ");
    alice.send("bob");
    bob.expect("Chat with alice? [y/n]");
    bob.send("y");
    alice.expect("You are now chatting with bob");
    alice.send("/whois bob");
    let first = alice.expect("bob's key, as the coordinator last vouched for it: ");
    let key = |line: &str| line.split("sha256:").nth(1).unwrap()[..64].to_string();
    assert_eq!(
        key(&first),
        key(&own),
        "the key alice remembers is bob's own"
    );
    assert_eq!(alice.count("WARNING"), 0);
    bob.exit();
    alice.expect("Who do you want to chat with?");

    // Bob on another computer: a new data folder, so a new key.
    let mut bob2 = Peer::start(&coord, db2.path());
    bob2.login("bob", PW);
    alice.expect("bob is online.");
    alice.send("bob");
    bob2.expect("Chat with alice? [y/n]");
    bob2.send("y");
    let warning = alice.expect("WARNING: bob's key has changed since you last connected.");
    alice.expect("You are now chatting with bob");
    let t = alice.transcript();
    let warned_at = t.iter().rposition(|l| *l == warning).unwrap();
    let started_at = t
        .iter()
        .rposition(|l| l.contains("You are now chatting with bob"))
        .unwrap();
    assert!(warned_at < started_at, "{t:#?}");
    alice.send("/whois bob");
    let now = alice.expect("bob's key, as the coordinator last vouched for it: ");
    assert_ne!(key(&now), key(&first));
    // Told once: a third chat with the same key says nothing.
    assert_eq!(alice.count("WARNING"), 1);
}

#[test]
fn a_password_is_changed_with_the_old_one_and_only_the_new_one_works_after() {
    let coord = Coordinator::start();
    let da = tempfile::tempdir().unwrap();
    let mut alice = Peer::start(&coord, da.path());
    alice.login_new("alice", PW);
    alice.expect("Who do you want to chat with?");
    // A wrong current password changes nothing.
    alice.send("/password");
    alice.expect("Current password:");
    alice.send("not my password");
    alice.expect("New password:");
    alice.send("brand new secret");
    alice.expect("Repeat the new password:");
    alice.send("brand new secret");
    alice.expect("Password not changed: wrong password");
    // The right one does.
    alice.send("/password");
    alice.expect("Current password:");
    alice.send(PW);
    alice.expect("New password:");
    alice.send("brand new secret");
    alice.expect("Repeat the new password:");
    alice.send("brand new secret");
    alice.expect("Password changed.");
    alice.exit();

    let mut again = Peer::start(&coord, da.path());
    again.expect("Username:");
    again.send("alice");
    again.expect("Password for alice:");
    again.send(PW);
    again.expect("Login failed: wrong password");
    again.send("brand new secret");
    again.expect("Logged in as alice.");
}
