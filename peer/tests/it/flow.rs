//! The message path under load and after failures (issue 7): backpressure
//! from a slow receiver, kept messages delivered while both stay online,
//! a backlog past the old frame-rate limit, counts, and a chat peer that
//! comes back after a crash. Engine-level here; the same through the real
//! binaries is in `e2e`.

use crate::engine_support::*;
use common::protocol::Outcome;
use peer::engine::{ChatEnd, Command, Event};

/// Collects the next `n` messages from `from`, in the order shown.
async fn messages(p: &mut TestPeer, from: &str, n: usize) -> Vec<(String, bool)> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        got.push(next_message(p, from).await);
    }
    got
}

/// A receiver whose front end does not read for a while gets every message
/// of a long burst, in order, during the chat; the sender is slowed down
/// instead of dropping or deferring anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_gets_a_long_burst_whole_and_in_order_during_the_chat() {
    const N: usize = 20_000;
    let coord = TestCoordinator::start();
    let mut a = logged_in(&coord, "alice").await;
    let mut b = logged_in(&coord, "bob").await;
    start_chat(&mut a, &mut b).await;

    let handle = a.engine_handle_for_tests();
    let sender = tokio::spawn(async move {
        for i in 0..N {
            let cmd = Command::Send {
                to: "bob".into(),
                body: format!("m{i:05}"),
            };
            if !handle.send(cmd).await {
                return i;
            }
        }
        N
    });
    // Bob's screen is busy: nothing is read for a while.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let got = messages(&mut b, "alice", N).await;
    let want: Vec<(String, bool)> = (0..N).map(|i| (format!("m{i:05}"), false)).collect();
    assert!(got == want, "messages missing, repeated or out of order");
    assert_eq!(within("the sender", sender).await.unwrap(), N);
    let store = a.store();
    eventually("every message marked delivered", || async {
        store
            .undelivered("bob")
            .await
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(count_stored(&b.data_dir, "bob"), N as i64);
    for p in [&mut a, &mut b] {
        p.shutdown().await;
    }
}

/// Messages kept after a decline reach the recipient while both stay
/// online, with nothing else happening, and the sender is told.
#[tokio::test]
async fn kept_messages_after_a_decline_reach_an_online_recipient_without_further_action() {
    let coord = TestCoordinator::start();
    let mut a = logged_in(&coord, "alice").await;
    let mut b = logged_in(&coord, "bob").await;
    a.send(Command::Chat("bob".into())).await;
    b.next_matching("IncomingRequest", |e| {
        matches!(e, Event::IncomingRequest { .. })
    })
    .await;
    b.send(Command::Answer { accept: false }).await;
    a.next_matching("declined", |e| {
        matches!(
            e,
            Event::RequestFailed {
                outcome: Outcome::Declined,
                ..
            }
        )
    })
    .await;
    for body in ["one", "two", "three"] {
        a.send(Command::Send {
            to: "bob".into(),
            body: body.into(),
        })
        .await;
    }
    let got = messages(&mut b, "alice", 3).await;
    let want: Vec<(String, bool)> = ["one", "two", "three"]
        .iter()
        .map(|s| (s.to_string(), true))
        .collect();
    assert_eq!(got, want, "kept messages arrive in order, marked as kept");
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
    for p in [&mut a, &mut b] {
        p.shutdown().await;
    }
}

/// A backlog of 6,000 kept messages (more than the burst the old frame-rate
/// limit allowed) is delivered whole, without the receiver closing the link
/// as a flood, and the sender is told the exact count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_backlog_is_not_taken_for_a_flood_and_is_counted_exactly() {
    const N: usize = 6_000;
    let coord = TestCoordinator::start();
    let mut a = logged_in(&coord, "alice").await;
    let mut b = logged_in(&coord, "bob").await;
    let b_dir = b.data_dir.clone();
    b.shutdown().await;
    a.next_matching("bob offline", |e| {
        matches!(e, Event::Presence { online: false, .. })
    })
    .await;
    // Sent in rounds, each one's "kept" notices read before the next (a
    // front end that never reads its events slows the engine down).
    for round in 0..N / 500 {
        for i in round * 500..(round + 1) * 500 {
            a.send(Command::Send {
                to: "bob".into(),
                body: format!("k{i:05}"),
            })
            .await;
        }
        for _ in 0..500 {
            a.next_matching("Kept", |e| matches!(e, Event::Kept { .. }))
                .await;
        }
    }
    let store = a.store();
    eventually("the backlog to be stored", || async {
        (store.undelivered("bob").await.unwrap().len() == N).then_some(())
    })
    .await;
    let mut b = TestPeer::start(&coord, PeerOpts::in_dir(&b_dir));
    b.login_existing("bob", PASSWORD).await;
    let got = messages(&mut b, "alice", N).await;
    let want: Vec<(String, bool)> = (0..N).map(|i| (format!("k{i:05}"), true)).collect();
    assert!(got == want, "backlog missing, repeated or out of order");
    let mut counts = Vec::new();
    loop {
        match a
            .next_matching("Delivered", |e| {
                matches!(e, Event::Delivered { .. } | Event::ChatEnded { .. })
            })
            .await
        {
            Event::Delivered { count, .. } => {
                counts.push(count);
                if counts.iter().sum::<usize>() >= N {
                    break;
                }
            }
            Event::ChatEnded { reason, .. } => {
                assert!(!matches!(reason, ChatEnd::ProtocolError(_)), "{reason:?}")
            }
            _ => unreachable!(),
        }
    }
    assert_eq!(counts, vec![N], "one report, with the exact count");
    for p in [&mut a, &mut b] {
        p.shutdown().await;
    }
}
