//! Attacks on a peer (issue 10): a flood of connection attempts from an
//! address nobody arranged must not stop an arranged chat, and a lying
//! coordinator cannot make the peer write outside its data folder.

use crate::engine_support::*;
use common::tls;
use peer::engine::{Command, Event};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;

/// The first datagram (a QUIC Initial) of `n` fresh connection attempts,
/// captured by pointing a real quinn client at a socket that never answers.
async fn captured_initials(n: usize) -> Vec<Vec<u8>> {
    let trap = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let client = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let me = new_identity();
    let config = tls::peer_client_config(&me, new_identity().fingerprint()).unwrap();
    let mut attempts = Vec::new();
    for _ in 0..n {
        attempts.push(
            client
                .connect_with(config.clone(), trap.local_addr().unwrap(), "x")
                .unwrap(),
        );
    }
    let mut initials = Vec::new();
    let mut buf = vec![0u8; 2048];
    while initials.len() < n {
        let (len, _) = within("an Initial", trap.recv_from(&mut buf))
            .await
            .unwrap();
        initials.push(buf[..len].to_vec());
    }
    drop(attempts);
    initials
}

/// 200 handshakes opened from 127.0.0.9 and never answered (more than the
/// peer takes at once) while alice asks bob for a chat: the chat still
/// starts and carries a message. On the old code bob refused alice's
/// connection. (Refusing addresses nobody arranged and the cap per address
/// each stop this flood; `admission`'s unit test checks the first alone.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_attempts_from_a_stranger_do_not_block_an_arranged_chat() {
    let coord = TestCoordinator::start();
    let mut a = logged_in(&coord, "alice").await;
    let mut b = logged_in(&coord, "bob").await;
    let target = b.engine().local_addr();

    let flood = UdpSocket::bind("127.0.0.9:0").await.unwrap();
    for initial in captured_initials(200).await {
        flood.send_to(&initial, target).await.unwrap();
    }
    // Let bob's endpoint take them all before the chat is arranged.
    tokio::time::sleep(Duration::from_millis(300)).await;

    start_chat(&mut a, &mut b).await;
    a.send(Command::Send {
        to: "bob".into(),
        body: "through the flood".into(),
    })
    .await;
    assert_eq!(next_message(&mut b, "alice").await.0, "through the flood");
    a.send(Command::Leave).await;
    b.next_matching("ChatEnded", |e| matches!(e, Event::ChatEnded { .. }))
        .await;
    for p in [&mut a, &mut b] {
        p.shutdown().await;
    }
}

/// A fake coordinator (what a peer meets on first use, when it pins
/// whatever answers) that welcomes the user under a name that is a path
/// and lists a "user" whose name is a terminal escape: the peer stops with
/// a clear error and writes nothing outside its data folder (issue 10,
/// finding 5; the old peer created `pwned/evil.sqlite3` beside it).
#[tokio::test]
async fn a_lying_coordinator_cannot_write_outside_the_data_folder() {
    use common::protocol::{Secret, SessionRequest, SessionResponse, Welcome};
    use common::wire::{read_frame, write_frame};

    let dir = tempfile::tempdir().unwrap();
    let (identity, _) = certs::ensure_coordinator_files(&dir.path().join("tls")).unwrap();
    let server = quinn::Endpoint::server(
        tls::coordinator_server_config(&identity).unwrap(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        loop {
            let reply = match read_frame::<SessionRequest, _>(&mut recv).await {
                Ok(Some(SessionRequest::Hello { .. })) => SessionResponse::HelloOk,
                Ok(Some(SessionRequest::Username { .. })) => SessionResponse::AccountStatus {
                    name: "alice".into(),
                    exists: true,
                },
                Ok(Some(SessionRequest::Password { .. })) => SessionResponse::Welcome(Welcome {
                    name: "../../../pwned/evil".into(),
                    online: vec!["\x1b]0;TITLE\x07\x1b[2J".into()],
                    observed: conn.remote_address(),
                    token: Secret::from("t".to_string()),
                    token_valid_secs: 60,
                }),
                _ => break,
            };
            if write_frame(&mut send, &reply).await.is_err() {
                break;
            }
        }
        conn.closed().await;
    });

    // `accounts/../../../pwned` from here is `DIR/x/pwned`, inside the test's folder.
    let data = dir.path().join("x").join("y").join("data");
    let (handle, mut events) = peer::engine::start(peer::engine::Config {
        coordinator: addr.to_string(),
        data_dir: data.clone(),
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        advertise: None,
        ca_cert: None,
        timings: Default::default(),
        confirm_shown: false,
    })
    .unwrap();
    let mut seen = Vec::new();
    let fatal = within("the engine to refuse the welcome", async {
        loop {
            match events.recv().await {
                Some(Event::Connected) => {
                    handle.send(Command::Username("alice".into())).await;
                }
                Some(Event::AccountStatus { .. }) => {
                    handle.send(Command::Password("correct horse".into())).await;
                }
                Some(Event::Fatal(f)) => return f,
                Some(other) => seen.push(other),
                None => panic!("the engine stopped without a reason; saw {seen:?}"),
            }
        }
    })
    .await;
    let text = peer::cli::render::fatal_text(&fatal);
    assert!(text.contains("not a valid username"), "{text}");
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::LoggedIn { .. } | Event::OnlineList(_))),
        "{seen:?}"
    );
    // Nothing anywhere near the data folder but what the peer owns.
    assert!(!dir.path().join("x").join("pwned").exists());
    assert!(
        !data.join("accounts").exists(),
        "no account store was opened"
    );
    handle.shutdown().await;
    fake.abort();
}
