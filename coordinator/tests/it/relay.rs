//! The relay (issue 9): packets go only between two sessions whose chat or
//! delivery was arranged, a sender cannot pass its byte budget or send an
//! oversized packet, and what is relayed arrives as sent.

use crate::support::*;
use common::protocol::{
    Answer, RelayEvent, RelayRequest, RequestKind, SignalEvent, SignalRequest, MAX_RELAY_PACKET,
};
use common::wire::{read_frame, write_frame};
use coordinator::relay::RelayLimits;
use quinn::{RecvStream, SendStream};

/// A logged-in user with its signaling and relay streams open.
async fn with_relay(tc: &TestCoordinator, name: &str) -> (Client, SendStream, RecvStream) {
    let mut c = tc.user(name).await;
    c.open_signal().await;
    let (mut send, recv) = c.conn.open_bi().await.expect("the relay stream");
    write_frame(&mut send, &RelayRequest::Open).await.unwrap();
    (c, send, recv)
}

async fn packet(send: &mut SendStream, to: &str, bytes: Vec<u8>) {
    let req = RelayRequest::Packet {
        to: to.into(),
        packet: bytes,
    };
    within("a relay write", write_frame(send, &req))
        .await
        .unwrap();
}

async fn next(recv: &mut RecvStream) -> RelayEvent {
    within("a relay event", read_frame::<RelayEvent, _>(recv))
        .await
        .unwrap()
        .expect("the relay stream ended")
}

/// Alice asks bob to chat and he accepts: the pair may relay.
async fn arrange(a: &mut Client, b: &mut Client) {
    a.signal(SignalRequest::Request {
        id: 7,
        to: "bob".into(),
        kind: RequestKind::Chat,
    })
    .await;
    let SignalEvent::Incoming { id, .. } = b.recv_signal().await else {
        panic!("bob should be asked");
    };
    b.signal(SignalRequest::Answer {
        id,
        answer: Answer::Accept,
    })
    .await;
    assert!(matches!(a.recv_signal().await, SignalEvent::Connect { .. }));
    assert!(matches!(b.recv_signal().await, SignalEvent::Connect { .. }));
}

#[tokio::test]
async fn only_an_arranged_pair_relays_and_packets_arrive_as_sent() {
    let tc = crate::operating::with_metrics().await;
    let (mut a, mut a_send, mut a_recv) = with_relay(&tc, "alice").await;
    let (mut b, mut b_send, mut b_recv) = with_relay(&tc, "bob").await;

    // Not arranged: refused, and bob gets nothing.
    packet(&mut a_send, "bob", vec![1, 2, 3]).await;
    match next(&mut a_recv).await {
        RelayEvent::Refused { to, reason } => {
            assert_eq!(to, "bob");
            assert!(reason.contains("no chat or delivery"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    arrange(&mut a, &mut b).await;
    let sealed: Vec<u8> = (0..MAX_RELAY_PACKET).map(|i| i as u8).collect();
    packet(&mut a_send, "bob", sealed.clone()).await;
    assert_eq!(
        next(&mut b_recv).await,
        RelayEvent::Packet {
            from: "alice".into(),
            packet: sealed,
        }
    );
    packet(&mut b_send, "alice", vec![9; 40]).await;
    assert_eq!(
        next(&mut a_recv).await,
        RelayEvent::Packet {
            from: "bob".into(),
            packet: vec![9; 40],
        }
    );

    // A third user the pair never arranged with gets nothing either way.
    let (_c, mut c_send, mut c_recv) = with_relay(&tc, "carol").await;
    packet(&mut c_send, "bob", vec![0; 10]).await;
    assert!(matches!(
        next(&mut c_recv).await,
        RelayEvent::Refused { .. }
    ));
}

#[tokio::test]
async fn an_oversized_packet_or_a_spent_budget_closes_the_relay_and_says_why() {
    let tc = TestCoordinator::start().await;
    let (mut a, mut a_send, mut a_recv) = with_relay(&tc, "alice").await;
    let (mut b, _b_send, _b_recv) = with_relay(&tc, "bob").await;
    arrange(&mut a, &mut b).await;
    packet(&mut a_send, "bob", vec![0; MAX_RELAY_PACKET + 1]).await;
    match next(&mut a_recv).await {
        RelayEvent::Closed { reason } => assert!(reason.contains("over the limit"), "{reason}"),
        other => panic!("expected the relay closed, got {other:?}"),
    }

    // On a coordinator with a small budget, more than the burst at once.
    let limits = RelayLimits {
        bytes_per_sec: 16 * 1024,
        burst_bytes: 64 * 1024,
    };
    let tc = TestCoordinator::start_with(|c| c.relay = limits).await;
    let (mut a, mut a_send, mut a_recv) = with_relay(&tc, "alice").await;
    let (mut b, _b_send, _b_recv) = with_relay(&tc, "bob").await;
    arrange(&mut a, &mut b).await;
    let n = limits.burst_bytes as usize / MAX_RELAY_PACKET + 100;
    let sender = async {
        for _ in 0..n {
            let req = RelayRequest::Packet {
                to: "bob".into(),
                packet: vec![0; MAX_RELAY_PACKET],
            };
            if write_frame(&mut a_send, &req).await.is_err() {
                break;
            }
        }
    };
    let closed = async {
        loop {
            match read_frame::<RelayEvent, _>(&mut a_recv).await {
                Ok(Some(RelayEvent::Closed { reason })) => return reason,
                Ok(Some(_)) => {}
                other => panic!("the relay ended without a reason: {other:?}"),
            }
        }
    };
    let (_, reason) = within_for(WAIT * 4, "the budget to run out", async {
        tokio::join!(sender, closed)
    })
    .await;
    assert!(reason.contains("byte limit"), "{reason}");
}

/// Accepts a request of `kind` from alice to bob; the two `Connect`s'
/// address lists (alice's view of bob, bob's view of alice).
async fn connect_addrs(
    a: &mut Client,
    b: &mut Client,
    id: u64,
    kind: RequestKind,
) -> (Vec<std::net::SocketAddr>, Vec<std::net::SocketAddr>) {
    a.signal(SignalRequest::Request {
        id,
        to: "bob".into(),
        kind,
    })
    .await;
    let SignalEvent::Incoming { id: incoming, .. } = b.recv_signal().await else {
        panic!("bob should be asked");
    };
    b.signal(SignalRequest::Answer {
        id: incoming,
        answer: Answer::Accept,
    })
    .await;
    let (SignalEvent::Connect { addrs: of_b, .. }, SignalEvent::Connect { addrs: of_a, .. }) =
        (a.recv_signal().await, b.recv_signal().await)
    else {
        panic!("both sides should be told to connect");
    };
    (of_b, of_a)
}

/// A delivery request is answered by the callee's engine by itself, so it
/// must not hand out where a user is: until the two have accepted a chat,
/// neither learns the other's addresses (the delivery runs through the
/// relay); after one, they do.
#[tokio::test]
async fn a_delivery_from_a_stranger_learns_no_address() {
    let tc = TestCoordinator::start().await;
    let mut a = tc.user("alice").await;
    a.open_signal().await;
    let mut b = tc.user("bob").await;
    b.open_signal().await;

    let (of_b, of_a) = connect_addrs(&mut a, &mut b, 1, RequestKind::Deliver).await;
    assert!(of_b.is_empty(), "the prober learned {of_b:?}");
    assert!(of_a.is_empty(), "{of_a:?}");

    let (of_b, of_a) = connect_addrs(&mut a, &mut b, 2, RequestKind::Chat).await;
    assert_eq!(of_b, vec![b.local_addr()]);
    assert_eq!(of_a, vec![a.local_addr()]);
    let (of_b, _) = connect_addrs(&mut a, &mut b, 3, RequestKind::Deliver).await;
    assert_eq!(of_b, vec![b.local_addr()], "contacts deliver directly");
}

/// One session keeps at most `MAX_RELAY_PAIRS` relay pairs: arranging
/// one more forgets its oldest (which can then no longer relay), and the
/// newest relays.
#[tokio::test]
async fn a_session_relays_with_at_most_a_bounded_number_of_peers() {
    use coordinator::signaling::MAX_RELAY_PAIRS;
    let tc = TestCoordinator::start().await;
    let (mut a, mut a_send, mut a_recv) = with_relay(&tc, "alice").await;
    let mut others = Vec::new();
    for i in 0..=MAX_RELAY_PAIRS {
        let name = format!("u{i:02}");
        let (mut b, b_send, b_recv) = with_relay(&tc, &name).await;
        a.signal(SignalRequest::Request {
            id: i as u64 + 1,
            to: name.clone(),
            kind: RequestKind::Deliver,
        })
        .await;
        let SignalEvent::Incoming { id, .. } = b.recv_signal().await else {
            panic!("{name} should be asked");
        };
        b.signal(SignalRequest::Answer {
            id,
            answer: Answer::Accept,
        })
        .await;
        assert!(matches!(a.recv_signal().await, SignalEvent::Connect { .. }));
        others.push((name, b, b_send, b_recv));
    }
    // The first pair was forgotten when the last was allowed.
    packet(&mut a_send, "u00", vec![1]).await;
    assert!(matches!(
        next(&mut a_recv).await,
        RelayEvent::Refused { .. }
    ));
    let last = format!("u{MAX_RELAY_PAIRS:02}");
    packet(&mut a_send, &last, vec![2]).await;
    let (_, _, _, last_recv) = others.last_mut().unwrap();
    assert_eq!(
        next(last_recv).await,
        RelayEvent::Packet {
            from: "alice".into(),
            packet: vec![2],
        }
    );
}
