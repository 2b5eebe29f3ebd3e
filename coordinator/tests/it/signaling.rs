//! Signaling: immediate outcomes (unknown, offline, self, invalid name),
//! accepted requests giving both sides roles, fingerprints and addresses,
//! declines, busy, cancellations, time-outs, either side leaving, delivery
//! requests, answers to unknown requests, and the limit on pending requests.

use crate::support::*;
use common::protocol::{
    Answer, Outcome, RequestKind, Role, SignalEvent, SignalRequest, Withdrawal,
};
use std::net::SocketAddr;
use std::time::Duration;

/// `a` (requester) and `b` (callee), logged in with their signaling streams open.
async fn pair(tc: &TestCoordinator) -> (Client, Client) {
    let mut a = tc.user("alice").await;
    a.open_signal().await;
    let mut b = tc.user("bob").await;
    b.open_signal().await;
    (a, b)
}

fn request(id: u64, to: &str, kind: RequestKind) -> SignalRequest {
    SignalRequest::Request {
        id,
        to: to.into(),
        kind,
    }
}

/// Sends a request from `a` to `b` and returns the id `b` knows it by.
async fn ring(a: &mut Client, b: &mut Client, id: u64, kind: RequestKind) -> u64 {
    a.signal(request(id, "bob", kind)).await;
    match b.recv_signal().await {
        SignalEvent::Incoming {
            id,
            from,
            kind: got,
        } => {
            assert_eq!(from, "alice");
            assert_eq!(got, kind);
            id
        }
        other => panic!("expected an incoming request, got {other:?}"),
    }
}

#[tokio::test]
async fn requests_that_cannot_be_forwarded_get_an_outcome_at_once() {
    let tc = TestCoordinator::start().await;
    tc.user("olga").await.leave();
    let mut a = tc.user("alice").await;
    a.open_signal().await;

    for (id, to, outcome) in [
        (1, "nobody", Outcome::NoSuchUser),
        (2, "olga", Outcome::Offline),
        (3, "Alice", Outcome::SelfRequest),
        (4, "not a name!", Outcome::InvalidName),
    ] {
        a.signal(request(id, to, RequestKind::Chat)).await;
        assert_eq!(
            a.recv_signal().await,
            SignalEvent::Outcome { id, outcome },
            "request to {to:?}"
        );
    }
}

#[tokio::test]
async fn an_accepted_chat_gives_each_side_the_others_fingerprint_and_addresses() {
    let tc = TestCoordinator::start().await;
    let announced: SocketAddr = "10.1.2.3:4000".parse().unwrap();
    let mut a = tc.client().await;
    a.hello_with(vec![announced]).await;
    a.enter_after_hello("alice", PASSWORD, false).await;
    a.open_signal().await;
    let mut b = tc.client().await;
    // Unusable candidates are dropped; the observed address comes first.
    b.hello_with(vec![
        "0.0.0.0:5000".parse().unwrap(),
        "10.9.9.9:0".parse().unwrap(),
    ])
    .await;
    b.enter_after_hello("bob", PASSWORD, false).await;
    b.open_signal().await;

    let incoming = ring(&mut a, &mut b, 42, RequestKind::Chat).await;
    a.expect_no_signal().await;
    b.signal(SignalRequest::Answer {
        id: incoming,
        answer: Answer::Accept,
    })
    .await;

    assert_eq!(
        a.recv_signal().await,
        SignalEvent::Connect {
            id: 42,
            peer: "bob".into(),
            kind: RequestKind::Chat,
            role: Role::Dialer,
            fingerprint: b.fingerprint,
            addrs: vec![b.local_addr()],
        }
    );
    assert_eq!(
        b.recv_signal().await,
        SignalEvent::Connect {
            id: incoming,
            peer: "alice".into(),
            kind: RequestKind::Chat,
            role: Role::Acceptor,
            fingerprint: a.fingerprint,
            addrs: vec![a.local_addr(), announced],
        }
    );
}

#[tokio::test]
async fn decline_and_busy_are_told_to_the_requester() {
    let tc = TestCoordinator::start().await;
    let (mut a, mut b) = pair(&tc).await;
    for (id, answer, outcome) in [
        (1, Answer::Decline, Outcome::Declined),
        (2, Answer::Busy, Outcome::Busy),
    ] {
        let incoming = ring(&mut a, &mut b, id, RequestKind::Chat).await;
        b.signal(SignalRequest::Answer {
            id: incoming,
            answer,
        })
        .await;
        assert_eq!(a.recv_signal().await, SignalEvent::Outcome { id, outcome });
        b.expect_no_signal().await;
    }
}

#[tokio::test]
async fn a_cancelled_request_is_withdrawn_from_the_callee() {
    let tc = TestCoordinator::start().await;
    let (mut a, mut b) = pair(&tc).await;
    let incoming = ring(&mut a, &mut b, 5, RequestKind::Chat).await;
    a.signal(SignalRequest::Cancel { id: 5 }).await;
    assert_eq!(
        b.recv_signal().await,
        SignalEvent::Withdrawn {
            id: incoming,
            reason: Withdrawal::Cancelled
        }
    );
    // Answering it afterwards is refused.
    b.signal(SignalRequest::Answer {
        id: incoming,
        answer: Answer::Accept,
    })
    .await;
    assert!(matches!(b.recv_signal().await, SignalEvent::Error { .. }));
    a.expect_no_signal().await;
}

#[tokio::test]
async fn an_unanswered_request_times_out_on_both_sides() {
    let tc = TestCoordinator::start_with(|cfg| cfg.request_timeout = Duration::from_secs(1)).await;
    let (mut a, mut b) = pair(&tc).await;
    let incoming = ring(&mut a, &mut b, 9, RequestKind::Chat).await;
    assert_eq!(
        a.recv_signal().await,
        SignalEvent::Outcome {
            id: 9,
            outcome: Outcome::TimedOut
        }
    );
    assert_eq!(
        b.recv_signal().await,
        SignalEvent::Withdrawn {
            id: incoming,
            reason: Withdrawal::TimedOut
        }
    );
}

#[tokio::test]
async fn a_requester_leaving_withdraws_its_request() {
    let tc = TestCoordinator::start().await;
    let (mut a, mut b) = pair(&tc).await;
    let incoming = ring(&mut a, &mut b, 3, RequestKind::Chat).await;
    a.leave();
    assert_eq!(
        b.recv_signal().await,
        SignalEvent::Withdrawn {
            id: incoming,
            reason: Withdrawal::RequesterLeft
        }
    );
}

#[tokio::test]
async fn a_callee_leaving_is_told_to_the_requester() {
    let tc = TestCoordinator::start().await;
    let (mut a, mut b) = pair(&tc).await;
    ring(&mut a, &mut b, 4, RequestKind::Chat).await;
    b.leave();
    assert_eq!(
        a.recv_signal().await,
        SignalEvent::Outcome {
            id: 4,
            outcome: Outcome::CalleeLeft
        }
    );
}

#[tokio::test]
async fn delivery_requests_are_forwarded_like_chats() {
    let tc = TestCoordinator::start().await;
    let (mut a, mut b) = pair(&tc).await;
    let incoming = ring(&mut a, &mut b, 11, RequestKind::Deliver).await;
    b.signal(SignalRequest::Answer {
        id: incoming,
        answer: Answer::Accept,
    })
    .await;
    match a.recv_signal().await {
        SignalEvent::Connect { id, kind, role, .. } => {
            assert_eq!((id, kind, role), (11, RequestKind::Deliver, Role::Dialer));
        }
        other => panic!("expected connect, got {other:?}"),
    }
    match b.recv_signal().await {
        SignalEvent::Connect { kind, role, .. } => {
            assert_eq!((kind, role), (RequestKind::Deliver, Role::Acceptor));
        }
        other => panic!("expected connect, got {other:?}"),
    }
}

#[tokio::test]
async fn answering_an_unknown_request_is_an_error_and_the_session_goes_on() {
    let tc = TestCoordinator::start().await;
    let (mut a, mut b) = pair(&tc).await;
    b.signal(SignalRequest::Answer {
        id: 12345,
        answer: Answer::Accept,
    })
    .await;
    assert!(matches!(b.recv_signal().await, SignalEvent::Error { .. }));
    // Someone else's request cannot be answered by the requester either.
    let incoming = ring(&mut a, &mut b, 1, RequestKind::Chat).await;
    a.signal(SignalRequest::Answer {
        id: incoming,
        answer: Answer::Accept,
    })
    .await;
    assert!(matches!(a.recv_signal().await, SignalEvent::Error { .. }));
    b.signal(SignalRequest::Answer {
        id: incoming,
        answer: Answer::Decline,
    })
    .await;
    assert_eq!(
        a.recv_signal().await,
        SignalEvent::Outcome {
            id: 1,
            outcome: Outcome::Declined
        }
    );
}

#[tokio::test]
async fn more_than_eight_pending_requests_and_duplicate_ids_are_refused() {
    let tc = TestCoordinator::start().await;
    let (mut a, mut b) = pair(&tc).await;
    for id in 1..=8 {
        ring(&mut a, &mut b, id, RequestKind::Chat).await;
    }
    a.signal(request(9, "bob", RequestKind::Chat)).await;
    assert_eq!(
        a.recv_signal().await,
        SignalEvent::Outcome {
            id: 9,
            outcome: Outcome::TooManyRequests
        }
    );
    a.signal(request(3, "bob", RequestKind::Chat)).await;
    assert_eq!(
        a.recv_signal().await,
        SignalEvent::Outcome {
            id: 3,
            outcome: Outcome::DuplicateId
        }
    );
    b.expect_no_signal().await;
}

/// A callee whose only signaling frame is the opening one still hears of
/// incoming requests (it has nothing else to send).
#[tokio::test]
async fn incoming_reaches_a_callee_that_only_opened_its_signaling_stream() {
    let tc = TestCoordinator::start().await;
    let mut a = tc.user("alice").await;
    a.open_signal().await;
    let mut b = tc.user("bob").await;
    b.open_signal().await;
    b.expect_no_signal().await;
    a.signal(request(1, "bob", RequestKind::Chat)).await;
    let got = b.recv_signal().await;
    assert!(
        matches!(got, SignalEvent::Incoming { ref from, .. } if from == "alice"),
        "{got:?}"
    );
}

#[tokio::test]
async fn a_request_made_before_the_callee_opened_its_signaling_stream_waits_for_it() {
    let tc = TestCoordinator::start().await;
    let mut a = tc.user("alice").await;
    a.open_signal().await;
    let mut b = tc.user("bob").await;
    a.signal(request(1, "bob", RequestKind::Chat)).await;
    a.expect_no_signal().await;
    b.open_signal().await;
    match b.recv_signal().await {
        SignalEvent::Incoming { from, kind, .. } => {
            assert_eq!((from.as_str(), kind), ("alice", RequestKind::Chat));
        }
        other => panic!("expected the held request, got {other:?}"),
    }
}

#[tokio::test]
async fn a_callee_with_many_waiting_requests_is_busy_for_the_next() {
    let tc = TestCoordinator::start().await;
    let mut bob = tc.user("bob").await;
    bob.open_signal().await;
    let mut callers = Vec::new();
    for n in 0..3 {
        let mut c = tc.user(&format!("caller{n}")).await;
        c.open_signal().await;
        callers.push(c);
    }
    // 16 requests wait for bob (two callers, eight each).
    for c in callers.iter_mut().take(2) {
        for id in 1..=8 {
            c.signal(request(id, "bob", RequestKind::Chat)).await;
        }
    }
    for _ in 0..16 {
        assert!(matches!(
            bob.recv_signal().await,
            SignalEvent::Incoming { .. }
        ));
    }
    let third = &mut callers[2];
    third.signal(request(1, "bob", RequestKind::Chat)).await;
    assert_eq!(
        third.recv_signal().await,
        SignalEvent::Outcome {
            id: 1,
            outcome: Outcome::Busy
        }
    );
}
