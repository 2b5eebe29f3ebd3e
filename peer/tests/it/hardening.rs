//! Attacks on a peer (issue 10): a flood of connection attempts from an
//! address nobody arranged must not stop an arranged chat.

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
