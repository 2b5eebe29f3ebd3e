//! The engine driven in-process against an in-process coordinator: login,
//! presence, chats (accepted, declined, busy, ended), messages kept for later
//! and delivered, a coordinator that disappears mid-chat, certificate checks
//! on both sides of a direct connection, the acceptor's hello, unusable data
//! folders and coordinator pinning.
//!
//! Assertions are on the engine's events and on what it stored.

use crate::engine_support::*;
use common::close::{code_of, CloseCode};
use common::protocol::{Outcome, PeerMsg, RequestKind, PROTOCOL_VERSION};
use common::tls::{self, Vouched};
use common::wire::{read_frame, write_frame};
use common::Fingerprint;
use peer::cli::render::fatal_text;
use peer::engine::test_utils as direct;
use peer::engine::DialError;
use peer::engine::{ChatEnd, Command, EngineError, Event};

#[tokio::test]
async fn register_then_login_and_a_wrong_password_can_be_retried() {
    let coord = TestCoordinator::start();
    let mut first = TestPeer::start(&coord, PeerOpts::default());
    let online = first.login_new("alice", PASSWORD).await;
    assert!(online.is_empty(), "nobody else is online: {online:?}");
    first.shutdown().await;

    // The same data folder, a new engine: the account exists now.
    let mut again = TestPeer::start(&coord, PeerOpts::in_dir(&first.data_dir));
    assert!(
        again.enter_name("Alice").await,
        "names are case-insensitive"
    );
    again
        .send(Command::Password("not the password".into()))
        .await;
    match again
        .next_matching("LoginFailed", |e| matches!(e, Event::LoginFailed { .. }))
        .await
    {
        Event::LoginFailed {
            reason, bad_name, ..
        } => {
            let reason = peer::cli::render::login_failure_text(&reason);
            assert!(reason.contains("wrong password"), "{reason}");
            assert!(!bad_name, "the name was fine");
        }
        _ => unreachable!(),
    }
    again.enter_password("alice", PASSWORD).await;
    again.shutdown().await;
}

#[tokio::test]
async fn presence_and_the_online_list() {
    let coord = TestCoordinator::start();
    let mut a = logged_in(&coord, "alice").await;
    let b = logged_in(&coord, "bob").await;
    a.next_matching("bob online", |e| {
        *e == Event::Presence {
            name: "bob".into(),
            online: true,
        }
    })
    .await;
    a.send(Command::Online).await;
    let list = a
        .next_matching("OnlineList", |e| matches!(e, Event::OnlineList(_)))
        .await;
    assert_eq!(list, Event::OnlineList(vec!["bob".into()]));

    let mut b = b;
    b.shutdown().await;
    a.next_matching("bob offline", |e| {
        *e == Event::Presence {
            name: "bob".into(),
            online: false,
        }
    })
    .await;
    a.send(Command::Online).await;
    let list = a
        .next_matching("OnlineList", |e| matches!(e, Event::OnlineList(_)))
        .await;
    assert_eq!(list, Event::OnlineList(vec![]));
    a.shutdown().await;
}

#[tokio::test]
async fn accepted_chat_carries_messages_both_ways_and_stores_them() {
    let coord = TestCoordinator::start();
    let mut a = logged_in(&coord, "alice").await;
    let mut b = logged_in(&coord, "bob").await;
    start_chat(&mut a, &mut b).await;

    a.send(Command::Send {
        to: "bob".into(),
        body: "hello bob".into(),
    })
    .await;
    assert_eq!(
        next_message(&mut b, "alice").await,
        ("hello bob".into(), false)
    );
    b.send(Command::Send {
        to: "alice".into(),
        body: "hi alice ✓".into(),
    })
    .await;
    assert_eq!(
        next_message(&mut a, "bob").await,
        ("hi alice ✓".into(), false)
    );

    // Each side holds both messages; each sender's copy gets marked delivered.
    for (p, other, mine, theirs) in [
        (&a, "bob", "hello bob", "hi alice ✓"),
        (&b, "alice", "hi alice ✓", "hello bob"),
    ] {
        let rows = eventually("both messages stored and delivered", || async {
            let rows = p.history(other).await;
            let done = rows.len() == 2
                && rows
                    .iter()
                    .all(|r| !r.outgoing || r.delivered_at_ms.is_some());
            done.then_some(rows)
        })
        .await;
        let out: Vec<_> = rows.iter().filter(|r| r.outgoing).collect();
        let inc: Vec<_> = rows.iter().filter(|r| !r.outgoing).collect();
        assert_eq!(out.len(), 1, "{}: {rows:?}", p.name);
        assert_eq!(out[0].message.body, mine);
        assert!(!out[0].message.held);
        assert_eq!(inc.len(), 1, "{}: {rows:?}", p.name);
        assert_eq!(inc[0].message.body, theirs);
        assert_eq!(inc[0].delivered_at_ms, None);
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn declined_messages_are_kept_and_delivered_to_the_next_login() {
    let coord = TestCoordinator::start();
    let mut a = logged_in(&coord, "alice").await;
    let mut b = logged_in(&coord, "bob").await;

    a.send(Command::Chat("bob".into())).await;
    b.next_matching("IncomingRequest", |e| {
        matches!(e, Event::IncomingRequest { .. })
    })
    .await;
    b.send(Command::Answer { accept: false }).await;
    let failed = a
        .next_matching("RequestFailed", |e| {
            matches!(e, Event::RequestFailed { .. })
        })
        .await;
    assert_eq!(
        failed,
        Event::RequestFailed {
            name: "bob".into(),
            outcome: Outcome::Declined
        }
    );

    // Bob signs out; messages for him are kept; a new engine on his data
    // folder logs in again and gets them.
    let bob_dir = b.data_dir.clone();
    b.shutdown().await;
    a.next_matching("bob offline", |e| {
        matches!(e, Event::Presence { online: false, .. })
    })
    .await;
    let bodies = ["kept one", "kept two", "kept three"];
    for body in bodies {
        a.send(Command::Send {
            to: "bob".into(),
            body: body.into(),
        })
        .await;
        let kept = a
            .next_matching("Kept", |e| matches!(e, Event::Kept { .. }))
            .await;
        assert_eq!(kept, Event::Kept { to: "bob".into() });
    }
    let undelivered = within("undelivered", a.store().undelivered("bob"))
        .await
        .unwrap();
    assert_eq!(undelivered.len(), 3);
    assert!(undelivered.iter().all(|m| m.held));

    let mut b2 = TestPeer::start(&coord, PeerOpts::in_dir(&bob_dir));
    b2.login_existing("bob", PASSWORD).await;

    for body in bodies {
        assert_eq!(
            next_message(&mut b2, "alice").await,
            (body.to_string(), true),
            "held messages arrive in order, marked as sent while away"
        );
    }
    let delivered = a
        .next_matching("Delivered", |e| matches!(e, Event::Delivered { .. }))
        .await;
    assert_eq!(
        delivered,
        Event::Delivered {
            to: "bob".into(),
            count: 3
        }
    );
    let left = within("undelivered", a.store().undelivered("bob"))
        .await
        .unwrap();
    assert!(left.is_empty(), "all marked delivered: {left:?}");
    let got: Vec<_> = b2
        .history("alice")
        .await
        .into_iter()
        .map(|r| (r.outgoing, r.message.body, r.message.held))
        .collect();
    let want: Vec<_> = bodies
        .iter()
        .map(|b| (false, b.to_string(), true))
        .collect();
    assert_eq!(got, want);
    a.shutdown().await;
    b2.shutdown().await;
}

#[tokio::test]
async fn a_busy_callee_is_reported_to_both() {
    let coord = TestCoordinator::start();
    let mut a = logged_in(&coord, "alice").await;
    let mut b = logged_in(&coord, "bob").await;
    let mut c = logged_in(&coord, "carol").await;
    start_chat(&mut a, &mut b).await;

    c.send(Command::Chat("bob".into())).await;
    let failed = c
        .next_matching("RequestFailed", |e| {
            matches!(e, Event::RequestFailed { .. })
        })
        .await;
    assert_eq!(
        failed,
        Event::RequestFailed {
            name: "bob".into(),
            outcome: Outcome::Busy
        }
    );
    b.next_matching("MissedWhileBusy", |e| {
        *e == Event::MissedWhileBusy {
            from: "carol".into(),
        }
    })
    .await;
    for p in [&mut a, &mut b, &mut c] {
        p.shutdown().await;
    }
}

#[tokio::test]
async fn leaving_is_reported_as_peer_left() {
    let coord = TestCoordinator::start();
    let mut a = logged_in(&coord, "alice").await;
    let mut b = logged_in(&coord, "bob").await;
    start_chat(&mut a, &mut b).await;

    a.send(Command::Leave).await;
    let mine = a
        .next_matching("ChatEnded", |e| matches!(e, Event::ChatEnded { .. }))
        .await;
    assert_eq!(
        mine,
        Event::ChatEnded {
            with: "bob".into(),
            reason: ChatEnd::YouLeft
        }
    );
    let theirs = b
        .next_matching("ChatEnded", |e| matches!(e, Event::ChatEnded { .. }))
        .await;
    assert_eq!(
        theirs,
        Event::ChatEnded {
            with: "alice".into(),
            reason: ChatEnd::PeerLeft
        }
    );

    // Both are free again: a second chat works.
    start_chat(&mut b, &mut a).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn signing_out_is_reported_as_peer_signed_out() {
    let coord = TestCoordinator::start();
    let mut a = logged_in(&coord, "alice").await;
    let mut b = logged_in(&coord, "bob").await;
    start_chat(&mut a, &mut b).await;

    b.shutdown().await;
    let ended = a
        .next_matching("ChatEnded", |e| matches!(e, Event::ChatEnded { .. }))
        .await;
    assert_eq!(
        ended,
        Event::ChatEnded {
            with: "bob".into(),
            reason: ChatEnd::PeerSignedOut
        }
    );
    a.shutdown().await;
}

#[tokio::test]
async fn the_chat_goes_on_when_the_coordinator_disappears() {
    let mut coord = TestCoordinator::start();
    let mut a = logged_in(&coord, "alice").await;
    let mut b = logged_in(&coord, "bob").await;
    start_chat(&mut a, &mut b).await;

    coord.stop().await;
    for p in [&mut a, &mut b] {
        p.next_matching("CoordinatorLost", |e| {
            matches!(e, Event::CoordinatorLost { .. })
        })
        .await;
    }

    a.send(Command::Send {
        to: "bob".into(),
        body: "still here?".into(),
    })
    .await;
    assert_eq!(
        next_message(&mut b, "alice").await,
        ("still here?".into(), false)
    );
    b.send(Command::Send {
        to: "alice".into(),
        body: "yes, directly".into(),
    })
    .await;
    assert_eq!(
        next_message(&mut a, "bob").await,
        ("yes, directly".into(), false)
    );
    eventually("alice's message stored and delivered", || async {
        let rows = a.history("bob").await;
        let ok = rows.len() == 2
            && rows
                .iter()
                .any(|r| r.outgoing && r.delivered_at_ms.is_some());
        ok.then_some(())
    })
    .await;
    assert_eq!(b.history("alice").await.len(), 2);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn the_dialer_refuses_a_certificate_other_than_the_vouched_one() {
    let rogue = new_identity();
    let dialer = new_identity();
    let vouched_for = new_identity();
    // The rogue admits anyone (it vouches for the dialer's certificate).
    let admit = Vouched::default();
    admit.allow(dialer.fingerprint());
    let server = peer_server(&rogue, admit);
    let rogue_addr = server.local_addr().unwrap();
    let accepting = tokio::spawn(async move {
        if let Some(incoming) = server.accept().await {
            let _ = incoming.await;
        }
        server
    });

    let endpoint = client_endpoint();
    let err = within(
        "the dial",
        direct::dial(&endpoint, &dialer, vouched_for.fingerprint(), &[rogue_addr]),
    )
    .await
    .expect_err("a rogue certificate must be refused");
    assert_eq!(err, DialError::WrongCertificate { addr: rogue_addr });
    let text = err.to_string();
    assert!(
        text.contains("other than the one the coordinator vouched for"),
        "{text}"
    );
    accepting.abort();
}

#[tokio::test]
async fn the_acceptor_refuses_a_peer_nobody_vouched_for() {
    let coord = TestCoordinator::start();
    let a = logged_in(&coord, "alice").await;
    let engine_fp = certs::file_fingerprint(&a.data_dir.join(certs::PEER_CERT_FILE)).unwrap();

    let rogue = new_identity();
    let endpoint = client_endpoint();
    let cfg = tls::peer_client_config(&rogue, engine_fp).unwrap();
    let connecting = endpoint
        .connect_with(cfg, a.engine().local_addr(), "p2pchat-peer")
        .unwrap();
    // In TLS 1.3 the client may finish its side before the server has
    // checked the client certificate: then the refusal closes the connection.
    let err = match within("the handshake", connecting).await {
        Err(e) => e,
        Ok(conn) => {
            // Whatever it tries, nothing gets through.
            if let Ok((mut send, _recv)) = conn.open_bi().await {
                let hello = PeerMsg::Hello {
                    version: PROTOCOL_VERSION,
                    from: "mallory".into(),
                    kind: RequestKind::Deliver,
                };
                let _ = write_frame(&mut send, &hello).await;
            }
            within("the refusal", conn.closed()).await
        }
    };
    // The acceptor refused us: since issue 10 already for our address
    // (nobody arranged a connection from it; no handshake is even begun),
    // else for our certificate (a TLS alert; the verifier alone is checked
    // in `a_refusal_of_our_certificate_by_the_other_side_is_recognised`).
    let refused = match &err {
        quinn::ConnectionError::ConnectionClosed(c) => {
            c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED
                || String::from_utf8_lossy(&c.reason).contains("certificate")
        }
        quinn::ConnectionError::TransportError(t) => t.reason.contains("certificate"),
        _ => false,
    };
    assert!(refused, "expected a refusal, got {err:?}");
    assert_eq!(count_stored(&a.data_dir, "alice"), 0);
    let mut a = a;
    a.shutdown().await;
}

/// A refusal of our certificate by the other side arrives as
/// `ConnectionClosed` with a TLS alert: `tls::is_refused_by_peer` recognises
/// it (the dialer retries it while the acceptor may not yet be vouching),
/// and it is not taken for our own verifier's refusal.
#[tokio::test]
async fn a_refusal_of_our_certificate_by_the_other_side_is_recognised() {
    let (server_id, client_id) = (new_identity(), new_identity());
    // The server vouches for nobody.
    let server = peer_server(&server_id, Vouched::default());
    let client = client_endpoint();
    let cfg = tls::peer_client_config(&client_id, server_id.fingerprint()).unwrap();
    let connecting = client
        .connect_with(cfg, server.local_addr().unwrap(), "p2pchat-peer")
        .unwrap();
    let accepting = tokio::spawn(async move {
        if let Some(incoming) = server.accept().await {
            let _ = incoming.await;
        }
        server
    });
    let err = match within("the handshake", connecting).await {
        Err(e) => e,
        Ok(conn) => within("the refusal", conn.closed()).await,
    };
    accepting.abort();
    assert!(
        tls::is_refused_by_peer(&err),
        "a refused client certificate is not recognised: {err:?}"
    );
    assert!(!tls::is_certificate_rejection(&err), "{err:?}");
}

/// A server endpoint and a connected client, both with fresh identities;
/// the server admits the client's certificate.
async fn raw_pair() -> (
    quinn::Endpoint,
    quinn::Connection,
    quinn::Endpoint,
    quinn::Connection,
) {
    let (server_id, client_id) = (new_identity(), new_identity());
    let admit = Vouched::default();
    admit.allow(client_id.fingerprint());
    let server = peer_server(&server_id, admit);
    let client = client_endpoint();
    let cfg = tls::peer_client_config(&client_id, server_id.fingerprint()).unwrap();
    let connecting = client
        .connect_with(cfg, server.local_addr().unwrap(), "p2pchat-peer")
        .unwrap();
    let (server_conn, client_conn) = within("the handshake", async {
        let incoming = server.accept().await.expect("an incoming connection");
        let server_conn = incoming.await.expect("server side of the handshake");
        let client_conn = connecting.await.expect("client side of the handshake");
        (server_conn, client_conn)
    })
    .await;
    (server, server_conn, client, client_conn)
}

fn allowed() -> Vec<(String, RequestKind)> {
    vec![("alice".to_string(), RequestKind::Chat)]
}

#[tokio::test]
async fn the_acceptor_closes_on_garbage_instead_of_a_hello() {
    for garbage in [
        // A frame whose body does not decode.
        vec![0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff],
        // A frame announcing 4 GiB.
        vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3],
    ] {
        let (_server, server_conn, _client, client_conn) = raw_pair().await;
        let (mut send, _recv) = within("open a stream", client_conn.open_bi())
            .await
            .unwrap();
        send.write_all(&garbage).await.unwrap();
        let result = within(
            "the acceptor's verdict",
            direct::hello_as_acceptor(&server_conn, &allowed()),
        )
        .await;
        assert!(
            result.is_err(),
            "garbage {garbage:?} must not pass as a hello"
        );
        let err = within("the close", client_conn.closed()).await;
        assert_eq!(
            code_of(&err),
            Some(CloseCode::PROTOCOL_ERROR),
            "garbage {garbage:?}: {err:?}"
        );
    }
}

#[tokio::test]
async fn the_acceptor_refuses_a_hello_from_someone_not_arranged() {
    let (_server, server_conn, _client, client_conn) = raw_pair().await;
    let allowed = allowed();
    let (acceptor, dialer) = tokio::join!(
        direct::hello_as_acceptor(&server_conn, &allowed),
        direct::hello_as_dialer(&client_conn, "mallory", RequestKind::Chat),
    );
    assert!(
        matches!(acceptor, Err(DialError::Refused(_))),
        "{:?}",
        acceptor.map(|(n, k, _, _)| (n, k))
    );
    match dialer {
        Err(DialError::Refused(reason)) => {
            assert!(
                reason.contains("not arranged by the coordinator"),
                "{reason}"
            )
        }
        other => panic!(
            "the dialer should be told it was refused: {:?}",
            other.err()
        ),
    }
    let err = within("the close", client_conn.closed()).await;
    assert_eq!(code_of(&err), Some(CloseCode::UNEXPECTED_PEER), "{err:?}");

    // The right kind matters too: alice may chat, not deliver.
    let (_server, server_conn, _client, client_conn) = raw_pair().await;
    let (acceptor, _) = tokio::join!(
        direct::hello_as_acceptor(&server_conn, &allowed),
        direct::hello_as_dialer(&client_conn, "alice", RequestKind::Deliver),
    );
    assert!(acceptor.is_err(), "a delivery was not arranged");
}

#[tokio::test]
async fn the_acceptor_admits_the_arranged_hello_and_explains_a_version_mismatch() {
    let (_server, server_conn, _client, client_conn) = raw_pair().await;
    let allowed = allowed();
    let (acceptor, dialer) = tokio::join!(
        direct::hello_as_acceptor(&server_conn, &allowed),
        direct::hello_as_dialer(&client_conn, "Alice", RequestKind::Chat),
    );
    let (name, kind, _, _) = acceptor.expect("the arranged peer is admitted");
    assert_eq!((name.as_str(), kind), ("alice", RequestKind::Chat));
    dialer.expect("the dialer gets HelloOk");

    let (_server, server_conn, _client, client_conn) = raw_pair().await;
    let (mut send, mut recv) = within("open a stream", client_conn.open_bi())
        .await
        .unwrap();
    let hello = PeerMsg::Hello {
        version: PROTOCOL_VERSION + 1,
        from: "alice".into(),
        kind: RequestKind::Chat,
    };
    write_frame(&mut send, &hello).await.unwrap();
    let result = within(
        "the acceptor's verdict",
        direct::hello_as_acceptor(&server_conn, &allowed),
    )
    .await;
    assert!(result.is_err());
    match within("the refusal", read_frame::<PeerMsg, _>(&mut recv)).await {
        Ok(Some(PeerMsg::Refused { reason })) => {
            assert!(reason.contains("same p2pchat release"), "{reason}")
        }
        other => panic!("expected a refusal naming the versions, got {other:?}"),
    }
    let err = within("the close", client_conn.closed()).await;
    assert_eq!(code_of(&err), Some(CloseCode::VERSION_MISMATCH), "{err:?}");
}

#[tokio::test]
async fn a_corrupted_account_database_is_fatal_not_a_panic() {
    let coord = TestCoordinator::start();
    let mut p = TestPeer::start(&coord, PeerOpts::default());
    let db = peer::store::account_db_path(&p.data_dir, "alice");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    std::fs::write(&db, b"this is not a database ".repeat(400)).unwrap();

    assert!(!p.enter_name("alice").await);
    p.send(Command::Password(PASSWORD.into())).await;
    let fatal = p
        .next_matching("Fatal", |e| {
            matches!(e, Event::Fatal(_) | Event::LoggedIn { .. })
        })
        .await;
    match fatal {
        Event::Fatal(f) => {
            let text = fatal_text(&f);
            assert!(text.contains("message store"), "{text}")
        }
        other => panic!("logging in over a corrupted database gave {other:?}"),
    }
    let stopped = p.next_event("Stopped").await;
    assert_eq!(stopped, Event::Stopped);
}

#[tokio::test]
async fn a_data_folder_that_is_a_file_is_refused_at_start() {
    let coord = TestCoordinator::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, b"x").unwrap();
    let config = peer::engine::Config {
        coordinator: coord.addr.to_string(),
        data_dir: file.clone(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        advertise: None,
        ca_cert: Some(coord.ca_path()),
        timings: Default::default(),
        confirm_shown: false,
    };
    match peer::engine::start(config) {
        Err(EngineError::DataDir { path, .. }) => assert_eq!(path, file),
        Err(other) => panic!("expected a data folder error, got {other}"),
        Ok(_) => panic!("an engine started on a regular file"),
    }
}

#[tokio::test]
async fn the_coordinator_is_pinned_on_first_use_and_a_changed_key_is_refused() {
    let coord = TestCoordinator::start();
    let mut p = TestPeer::start(
        &coord,
        PeerOpts {
            ca: false,
            data_dir: None,
        },
    );
    p.login_new("alice", PASSWORD).await;
    let pins = p.data_dir.join(peer::trust::PINS_FILE);
    let text = std::fs::read_to_string(&pins).expect("known_coordinators written");
    let coord_fp = certs::file_fingerprint(&coord.cert_path()).unwrap();
    assert!(
        text.lines()
            .any(|l| l == format!("{} {coord_fp}", coord.addr)),
        "{text}"
    );
    p.shutdown().await;

    // A second start with the same pin logs in again.
    let mut again = TestPeer::start(
        &coord,
        PeerOpts {
            ca: false,
            data_dir: Some(p.data_dir.clone()),
        },
    );
    again.login_existing("alice", PASSWORD).await;
    again.shutdown().await;

    // A pin for another key: a loud refusal naming the pin file.
    let dir = tempfile::tempdir().unwrap();
    let other = Fingerprint::of(b"some other certificate");
    let pins = dir.path().join(peer::trust::PINS_FILE);
    std::fs::write(&pins, format!("{} {other}\n", coord.addr)).unwrap();
    let mut changed = TestPeer::start(
        &coord,
        PeerOpts {
            ca: false,
            data_dir: Some(dir.path().to_path_buf()),
        },
    );
    let fatal = changed
        .next_matching("Fatal", |e| matches!(e, Event::Fatal(_) | Event::Connected))
        .await;
    match fatal {
        Event::Fatal(f) => {
            let text = fatal_text(&f);
            assert!(text.contains("pinned"), "{text}");
            assert!(text.contains(&pins.display().to_string()), "{text}");
        }
        other => panic!("a changed coordinator key gave {other:?}"),
    }
    assert_eq!(changed.next_event("Stopped").await, Event::Stopped);
}

/// Two users asking each other at the same time get one chat, not two
/// "busy" answers.
#[tokio::test]
async fn two_users_asking_each_other_at_once_get_one_chat() {
    let coord = TestCoordinator::start();
    let mut a = logged_in(&coord, "alice").await;
    let mut b = logged_in(&coord, "bob").await;
    a.send(Command::Chat("bob".into())).await;
    b.send(Command::Chat("alice".into())).await;
    for (p, other) in [(&mut a, "bob"), (&mut b, "alice")] {
        let ev = p
            .next_matching("the chat (or a failure)", |e| {
                matches!(
                    e,
                    Event::ChatStarted { .. }
                        | Event::RequestFailed { .. }
                        | Event::ChatFailed { .. }
                        | Event::MissedWhileBusy { .. }
                )
            })
            .await;
        assert_eq!(
            ev,
            Event::ChatStarted {
                with: other.into(),
                relayed: false
            }
        );
    }
    a.send(Command::Send {
        to: "bob".into(),
        body: "one chat".into(),
    })
    .await;
    assert_eq!(next_message(&mut b, "alice").await.0, "one chat");
    for p in [&mut a, &mut b] {
        p.shutdown().await;
    }
}

/// Two peers that each hold more for the other than QUIC's flow-control
/// windows take (about 1.5 MB each way) deliver both backlogs once both are
/// online: neither side's writing may stop it from reading.
#[tokio::test]
async fn large_backlogs_both_ways_are_delivered() {
    const N: usize = 400;
    let body = "x".repeat(3_900);
    let coord = TestCoordinator::start();
    let mut a = logged_in(&coord, "alice").await;
    let mut b = logged_in(&coord, "bob").await;
    let (a_dir, b_dir) = (a.data_dir.clone(), b.data_dir.clone());
    a.shutdown().await;

    // Bob keeps a backlog for alice, then leaves; alice keeps one for bob.
    for (sender, to) in [(&mut b, "alice"), (&mut a, "bob")] {
        if sender.data_dir == a_dir {
            *sender = TestPeer::start(&coord, PeerOpts::in_dir(&a_dir));
            sender.login_existing("alice", PASSWORD).await;
        }
        for _ in 0..N {
            sender
                .send(Command::Send {
                    to: to.into(),
                    body: body.clone(),
                })
                .await;
        }
        let store = sender.store();
        eventually("the backlog to be stored", || async {
            let held = store.undelivered(to).await.unwrap().len();
            (held == N).then_some(())
        })
        .await;
        if sender.data_dir == b_dir {
            sender.shutdown().await;
        }
    }

    let mut b = TestPeer::start(&coord, PeerOpts::in_dir(&b_dir));
    b.login_existing("bob", PASSWORD).await;
    let (a_store, b_store) = (a.store(), b.store());
    eventually("both backlogs to be delivered", || async {
        let a_left = a_store.undelivered("bob").await.unwrap().len();
        let b_left = b_store.undelivered("alice").await.unwrap().len();
        (a_left == 0 && b_left == 0).then_some(())
    })
    .await;
    for (store, from) in [(&a_store, "bob"), (&b_store, "alice")] {
        let got = store.history(from, 2 * N as u32).await.unwrap();
        let received = got.iter().filter(|m| !m.outgoing).count();
        assert_eq!(received, N, "{from}'s backlog arrived once, whole");
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// Logging in to the same account from a second place closes the first
/// session, and the first program says why and stops.
#[tokio::test]
async fn a_second_login_elsewhere_stops_the_first_and_says_why() {
    let coord = TestCoordinator::start();
    let mut first = logged_in(&coord, "alice").await;
    let mut second = TestPeer::start(&coord, PeerOpts::default());
    second.login_existing("alice", PASSWORD).await;
    let fatal = first
        .next_matching("Fatal", |e| matches!(e, Event::Fatal(_)))
        .await;
    match fatal {
        Event::Fatal(f) => {
            let text = fatal_text(&f);
            assert!(text.contains("another place"), "{text}")
        }
        other => panic!("unexpected {other:?}"),
    }
    first
        .next_matching("Stopped", |e| matches!(e, Event::Stopped))
        .await;
    second.send(Command::Online).await;
    second
        .next_matching("OnlineList", |e| matches!(e, Event::OnlineList(_)))
        .await;
    second.shutdown().await;
}

/// When the coordinator comes back after a restart, peers log in again by
/// themselves with their session token (no password), are online for each
/// other, and can arrange a new chat.
#[tokio::test]
async fn peers_resume_their_session_when_the_coordinator_comes_back() {
    let mut coord = TestCoordinator::start();
    let mut a = logged_in(&coord, "alice").await;
    let mut b = logged_in(&coord, "bob").await;
    coord.restart().await;
    for p in [&mut a, &mut b] {
        p.next_matching("CoordinatorLost", |e| {
            matches!(e, Event::CoordinatorLost { .. })
        })
        .await;
        p.next_matching("Reconnected", |e| matches!(e, Event::Reconnected))
            .await;
    }
    // A chat request reaches bob through the restarted coordinator.
    start_chat(&mut a, &mut b).await;
    a.shutdown().await;
    b.shutdown().await;
}
