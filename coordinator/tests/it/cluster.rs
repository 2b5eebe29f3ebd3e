//! Several coordinators as one (issue 12), in process, over a real private
//! NATS server: presence crosses nodes both ways, a request is declined,
//! accepted and cancelled across nodes, relayed packets cross nodes, a
//! second login on another node replaces the first, a crashed node's users
//! go offline everywhere, and logins fail clearly while NATS is away and
//! work again once it is back.
//!
//! Each node keeps its accounts in its own SQLite file here (shared
//! accounts in PostgreSQL are tested with the real binaries), so a test
//! registers a name on each node it logs in on.

use crate::support::*;
use common::close::CloseCode;
use common::protocol::{
    Answer, Outcome, RelayEvent, RelayRequest, RequestKind, SessionResponse, SignalEvent,
    SignalRequest, Welcome, Withdrawal,
};
use common::wire::{read_frame, write_frame};
use coordinator::cluster::ClusterConfig;
use std::time::Duration;
use testkit::nats::NatsServer;

/// A node not heard from for this long is dead (short, for the tests).
const TTL: Duration = Duration::from_secs(2);

/// `n` coordinators joined through `nats`.
async fn nodes(nats: &NatsServer, n: usize) -> Vec<TestCoordinator> {
    let mut nodes = Vec::new();
    for i in 0..n {
        let url = nats.url();
        nodes.push(
            TestCoordinator::start_with(move |c| {
                c.cluster = Some(ClusterConfig {
                    nats_url: url,
                    node: format!("n{i}"),
                    node_ttl: TTL,
                    replicas: 1,
                });
                c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
            })
            .await,
        );
    }
    nodes
}

/// Waits until `c` is told `name` is `online` (by the welcome's list or
/// by a presence push), skipping other pushes.
async fn sees(c: &mut Client, welcome: &Welcome, name: &str, online: bool) {
    if online && welcome.online.iter().any(|n| n == name) {
        return;
    }
    let limit = TTL * 4;
    within_for(limit, &format!("{name} online={online}"), async {
        loop {
            if let SessionResponse::Presence { name: n, online: o } = c.recv_for(limit).await {
                if n == name && o == online {
                    return;
                }
            }
        }
    })
    .await;
}

/// A user logged in on `tc` with its signaling stream open.
async fn signed_in(tc: &TestCoordinator, name: &str) -> (Client, Welcome) {
    let mut c = tc.client().await;
    let w = c.register(name, PASSWORD).await;
    c.open_signal().await;
    (c, w)
}

#[tokio::test]
async fn presence_crosses_nodes_both_ways() {
    let nats = NatsServer::start();
    let n = nodes(&nats, 3).await;
    let (mut alice, wa) = signed_in(&n[0], "alice").await;
    let (mut bob, wb) = signed_in(&n[1], "bob").await;
    sees(&mut bob, &wb, "alice", true).await;
    sees(&mut alice, &wa, "bob", true).await;
    let (mut carol, wc) = signed_in(&n[2], "carol").await;
    sees(&mut carol, &wc, "alice", true).await;
    sees(&mut carol, &wc, "bob", true).await;

    // A look-up on one node answers for a user on another.
    let mut dave = n[2].client().await;
    dave.register("dave", PASSWORD).await;
    let (_, answer) = within("a look-up", async {
        dave.send(common::protocol::SessionRequest::Lookup {
            name: "alice".into(),
        })
        .await;
        dave.recv_past_presence().await
    })
    .await;
    assert!(
        matches!(answer, SessionResponse::LookupResult { online: true, .. }),
        "{answer:?}"
    );

    // Each node counts its own sessions and knows the others' users.
    let metrics = n[2].metrics.unwrap();
    let scraped = crate::operating::scrape(metrics).await;
    assert_eq!(scraped["p2pchat_sessions_online"], 2.0, "carol and dave");
    assert_eq!(
        scraped["p2pchat_users_on_other_nodes"], 2.0,
        "alice and bob"
    );

    drop(bob);
    sees(&mut alice, &wa, "bob", false).await;
    sees(&mut carol, &wc, "bob", false).await;
}

#[tokio::test]
async fn a_request_is_declined_cancelled_and_accepted_across_nodes() {
    let nats = NatsServer::start();
    let n = nodes(&nats, 2).await;
    let (mut alice, wa) = signed_in(&n[0], "alice").await;
    let (mut bob, wb) = signed_in(&n[1], "bob").await;
    sees(&mut alice, &wa, "bob", true).await;
    sees(&mut bob, &wb, "alice", true).await;
    let ask = |id| SignalRequest::Request {
        id,
        to: "bob".into(),
        kind: RequestKind::Chat,
    };

    alice.signal(ask(1)).await;
    let SignalEvent::Incoming { id, from, kind } = bob.recv_signal().await else {
        panic!("bob should be asked");
    };
    assert_eq!((from.as_str(), kind), ("alice", RequestKind::Chat));
    bob.signal(SignalRequest::Answer {
        id,
        answer: Answer::Decline,
    })
    .await;
    assert_eq!(
        alice.recv_signal().await,
        SignalEvent::Outcome {
            id: 1,
            outcome: Outcome::Declined
        }
    );

    alice.signal(ask(2)).await;
    let SignalEvent::Incoming { id, .. } = bob.recv_signal().await else {
        panic!("bob should be asked again");
    };
    // The same id twice is refused on the requester's node.
    alice.signal(ask(2)).await;
    assert_eq!(
        alice.recv_signal().await,
        SignalEvent::Outcome {
            id: 2,
            outcome: Outcome::DuplicateId
        }
    );
    alice.signal(SignalRequest::Cancel { id: 2 }).await;
    assert_eq!(
        bob.recv_signal().await,
        SignalEvent::Withdrawn {
            id,
            reason: Withdrawal::Cancelled
        }
    );

    alice.signal(ask(3)).await;
    let SignalEvent::Incoming { id, .. } = bob.recv_signal().await else {
        panic!("bob should be asked a third time");
    };
    bob.signal(SignalRequest::Answer {
        id,
        answer: Answer::Accept,
    })
    .await;
    match alice.recv_signal().await {
        SignalEvent::Connect {
            id: 3,
            peer,
            fingerprint,
            addrs,
            ..
        } => {
            assert_eq!(peer, "bob");
            assert_eq!(fingerprint, bob.fingerprint);
            assert!(!addrs.is_empty(), "a chat shares addresses");
        }
        other => panic!("alice should connect, got {other:?}"),
    }
    match bob.recv_signal().await {
        SignalEvent::Connect {
            peer, fingerprint, ..
        } => {
            assert_eq!(peer, "alice");
            assert_eq!(fingerprint, alice.fingerprint);
        }
        other => panic!("bob should connect, got {other:?}"),
    }
    // Cancelling what was accepted is an error, said to the requester.
    alice.signal(SignalRequest::Cancel { id: 3 }).await;
    assert!(matches!(
        alice.recv_signal().await,
        SignalEvent::Error { .. }
    ));
}

#[tokio::test]
async fn relayed_packets_cross_nodes_only_for_an_arranged_pair() {
    let nats = NatsServer::start();
    let n = nodes(&nats, 2).await;
    let (mut alice, wa) = signed_in(&n[0], "alice").await;
    let (mut bob, wb) = signed_in(&n[1], "bob").await;
    sees(&mut alice, &wa, "bob", true).await;
    sees(&mut bob, &wb, "alice", true).await;
    let (mut a_send, mut a_recv) = alice.conn.open_bi().await.unwrap();
    write_frame(&mut a_send, &RelayRequest::Open).await.unwrap();
    let (mut b_send, mut b_recv) = bob.conn.open_bi().await.unwrap();
    write_frame(&mut b_send, &RelayRequest::Open).await.unwrap();
    let packet = |to: &str, bytes: Vec<u8>| RelayRequest::Packet {
        to: to.into(),
        packet: bytes,
    };

    write_frame(&mut a_send, &packet("bob", vec![1]))
        .await
        .unwrap();
    let refused = within("a refusal", read_frame::<RelayEvent, _>(&mut a_recv))
        .await
        .unwrap();
    assert!(
        matches!(refused, Some(RelayEvent::Refused { .. })),
        "{refused:?}"
    );

    alice
        .signal(SignalRequest::Request {
            id: 1,
            to: "bob".into(),
            kind: RequestKind::Deliver,
        })
        .await;
    let SignalEvent::Incoming { id, .. } = bob.recv_signal().await else {
        panic!("bob should be asked");
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
    assert!(matches!(
        bob.recv_signal().await,
        SignalEvent::Connect { .. }
    ));

    let sealed: Vec<u8> = (0..1200u32).map(|i| (i * 7) as u8).collect();
    write_frame(&mut a_send, &packet("bob", sealed.clone()))
        .await
        .unwrap();
    let got = within("a packet at bob", read_frame::<RelayEvent, _>(&mut b_recv))
        .await
        .unwrap();
    assert_eq!(
        got,
        Some(RelayEvent::Packet {
            from: "alice".into(),
            packet: sealed
        })
    );
    write_frame(&mut b_send, &packet("alice", vec![9, 9]))
        .await
        .unwrap();
    let got = within(
        "a packet at alice",
        read_frame::<RelayEvent, _>(&mut a_recv),
    )
    .await
    .unwrap();
    assert_eq!(
        got,
        Some(RelayEvent::Packet {
            from: "bob".into(),
            packet: vec![9, 9]
        })
    );
}

#[tokio::test]
async fn a_second_login_on_another_node_replaces_the_first_cluster_wide() {
    let nats = NatsServer::start();
    let n = nodes(&nats, 3).await;
    let (mut carol, wc) = signed_in(&n[2], "carol").await;
    let (first, _) = signed_in(&n[0], "alice").await;
    sees(&mut carol, &wc, "alice", true).await;

    let (mut second, _) = signed_in(&n[1], "alice").await;
    assert_eq!(
        within("the first session to close", first.close_code()).await,
        CloseCode::REPLACED
    );
    // The second one stays, and carol can still reach alice there.
    carol
        .signal(SignalRequest::Request {
            id: 5,
            to: "alice".into(),
            kind: RequestKind::Chat,
        })
        .await;
    assert!(matches!(
        second.recv_signal().await,
        SignalEvent::Incoming { .. }
    ));
    assert!(second.conn.close_reason().is_none());
    // Alice never went offline for carol.
    let quiet = tokio::time::timeout(QUIET, async {
        loop {
            if let SessionResponse::Presence {
                name,
                online: false,
            } = carol.recv().await
            {
                if name == "alice" {
                    return;
                }
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "carol was told alice left");
}

#[tokio::test]
async fn a_crashed_nodes_users_go_offline_everywhere_within_the_ttl() {
    let nats = NatsServer::start();
    let mut n = nodes(&nats, 2).await;
    let (mut alice, wa) = signed_in(&n[0], "alice").await;
    let (_bob, _) = signed_in(&n[1], "bob").await;
    sees(&mut alice, &wa, "bob", true).await;
    n[1].crash().await;
    let started = std::time::Instant::now();
    sees(&mut alice, &wa, "bob", false).await;
    // Within the TTL and a heartbeat or two of sweeping.
    assert!(
        started.elapsed() < TTL * 3,
        "bob went offline only after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn logins_fail_clearly_while_nats_is_away_and_work_again_when_it_is_back() {
    let mut nats = NatsServer::start();
    let n = nodes(&nats, 2).await;
    let (mut alice, wa) = signed_in(&n[0], "alice").await;
    let mut erin = n[1].client().await;
    let erin_token = erin.register("erin", PASSWORD).await.token;
    erin.leave();

    nats.stop();
    // A resume while NATS is away is refused, and does not use up the token.
    let mut resumed = n[1].client().await;
    resumed.hello().await;
    resumed
        .send(common::protocol::SessionRequest::Resume {
            name: "erin".into(),
            token: erin_token.clone(),
        })
        .await;
    let closed = within_for(
        Duration::from_secs(15),
        "erin's refusal",
        resumed.close_code(),
    )
    .await;
    assert_eq!(closed, CloseCode::CLUSTER_UNAVAILABLE);

    let mut bob = n[1].client().await;
    bob.hello().await;
    bob.username("bob").await;
    bob.send(common::protocol::SessionRequest::Password {
        password: PASSWORD.to_string().into(),
    })
    .await;
    let closed = within_for(Duration::from_secs(15), "bob's refusal", bob.closed()).await;
    let said = closed.to_string();
    assert!(
        said.contains("cannot reach the rest of its cluster"),
        "bob was told: {said}"
    );

    nats.start_again();
    // Service resumes by itself: a login on the other node is seen here.
    let mut resumed = None;
    for _ in 0..40 {
        let mut c = n[1].client().await;
        c.hello().await;
        c.username("bob").await;
        c.send(common::protocol::SessionRequest::Password {
            password: PASSWORD.to_string().into(),
        })
        .await;
        match tokio::time::timeout(Duration::from_secs(5), c.recv()).await {
            Ok(SessionResponse::Welcome(w)) => {
                resumed = Some((c, w));
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    let (mut bob, wb) = resumed.expect("bob logs in once NATS is back");
    let mut erin = n[1].client().await;
    erin.hello().await;
    let back = erin
        .ask(common::protocol::SessionRequest::Resume {
            name: "erin".into(),
            token: erin_token,
        })
        .await;
    assert!(
        matches!(back, SessionResponse::Welcome(_)),
        "erin's token resumes once NATS is back: {back:?}"
    );
    bob.open_signal().await;
    sees(&mut alice, &wa, "bob", true).await;
    sees(&mut bob, &wb, "alice", true).await;
}

#[test]
fn the_binary_refuses_a_cluster_without_shared_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--nats", "nats://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("--nats needs --database"), "{said}");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing is written"
    );
}

/// The presence bucket, read and written directly, as another node (or an
/// operator) would.
async fn bucket(nats: &NatsServer) -> (async_nats::Client, async_nats::jetstream::kv::Store) {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let kv = js.get_key_value("p2pchat_presence").await.unwrap();
    (client, kv)
}

fn user_key(name: &str) -> String {
    format!("user.{}", hex::encode(name))
}

#[tokio::test]
async fn a_removed_claim_is_put_back_only_if_nobody_claimed_the_name_since() {
    let nats = NatsServer::start();
    let n = nodes(&nats, 2).await;
    let (alice, _) = signed_in(&n[0], "alice").await;
    let (mut bob, wb) = signed_in(&n[1], "bob").await;
    sees(&mut bob, &wb, "alice", true).await;
    let (_, kv) = bucket(&nats).await;
    let key = user_key("alice");
    let before = kv.entry(key.as_str()).await.unwrap().unwrap();
    // A node that thought n0 dead removes alice's claim, and a later login
    // of alice elsewhere (a node that then dies) claims the name at once.
    kv.delete_expect_revision(&key, Some(before.revision))
        .await
        .unwrap();
    let later = coordinator::cluster::Claim {
        node: "elsewhere-00000000".into(),
        session: 4242,
        fingerprint: alice.fingerprint,
        addrs: vec![],
    };
    kv.put(&key, postcard::to_stdvec(&later).unwrap().into())
        .await
        .unwrap();
    // n0 does not put its claim back over the later one: its alice is
    // replaced, and once the other node is found dead, alice is offline.
    assert_eq!(
        within("alice on n0 to close", alice.close_code()).await,
        CloseCode::REPLACED
    );
    let now = kv.entry(key.as_str()).await.unwrap().unwrap();
    let claim: coordinator::cluster::Claim = postcard::from_bytes(&now.value).unwrap();
    assert_eq!(claim.session, 4242, "the later claim stays");
    // The other node never beats: the survivors remove its claim, and
    // nobody puts alice back.
    within_for(TTL * 4, "the dead node's claim to go", async {
        while kv
            .entry(key.as_str())
            .await
            .unwrap()
            .is_some_and(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    tokio::time::sleep(QUIET).await;
    let (_carol, wc) = signed_in(&n[1], "carol").await;
    assert!(!wc.online.contains(&"alice".to_string()), "{:?}", wc.online);
    let end = kv.entry(key.as_str()).await.unwrap().unwrap();
    assert_ne!(end.operation, async_nats::jetstream::kv::Operation::Put);
}

#[tokio::test]
async fn a_request_waiting_on_a_node_that_dies_ends_for_its_requester() {
    let nats = NatsServer::start();
    let mut n = nodes(&nats, 2).await;
    let (mut alice, wa) = signed_in(&n[0], "alice").await;
    let (mut bob, _) = signed_in(&n[1], "bob").await;
    sees(&mut alice, &wa, "bob", true).await;
    alice
        .signal(SignalRequest::Request {
            id: 1,
            to: "bob".into(),
            kind: RequestKind::Chat,
        })
        .await;
    assert!(matches!(
        bob.recv_signal().await,
        SignalEvent::Incoming { .. }
    ));
    n[1].crash().await;
    assert_eq!(
        alice.recv_signal_for(TTL * 4).await,
        SignalEvent::Outcome {
            id: 1,
            outcome: Outcome::CalleeLeft
        }
    );
}

#[tokio::test]
async fn a_request_arriving_after_its_requester_left_does_not_bring_it_back() {
    let nats = NatsServer::start();
    let n = nodes(&nats, 2).await;
    let (alice, _) = signed_in(&n[0], "alice").await;
    let (_bob, _) = signed_in(&n[1], "bob").await;
    let (mut carol, wc) = signed_in(&n[1], "carol").await;
    sees(&mut carol, &wc, "alice", true).await;
    let (client, kv) = bucket(&nats).await;
    let a = kv.entry(user_key("alice")).await.unwrap().unwrap();
    let b = kv.entry(user_key("bob")).await.unwrap().unwrap();
    let b_claim: coordinator::cluster::Claim = postcard::from_bytes(&b.value).unwrap();
    // Alice asks bob and leaves at once; bob's node happens to hear of her
    // leaving (the bucket) before her request (its subject).
    drop(alice);
    sees(&mut carol, &wc, "alice", false).await;
    let late = coordinator::cluster::NodeMsg::Request {
        from: "alice".into(),
        claim: postcard::from_bytes(&a.value).unwrap(),
        claim_revision: a.revision,
        from_id: 1,
        to: "bob".into(),
        kind: RequestKind::Chat,
    };
    let subject = format!("p2pchat.node.{}", b_claim.node);
    client
        .publish(subject, postcard::to_stdvec(&late).unwrap().into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    tokio::time::sleep(QUIET).await;
    let (_dave, wd) = signed_in(&n[1], "dave").await;
    assert!(!wd.online.contains(&"alice".to_string()), "{:?}", wd.online);
}

#[tokio::test]
async fn a_forwarded_request_whose_answer_never_comes_times_out_for_its_requester() {
    let nats = NatsServer::start();
    let mut n = Vec::new();
    // The requester's node gives up after its own time-out and the margin;
    // the callee's node (60 s) never says anything before that.
    for (i, timeout) in [(0, 1), (1, 60)] {
        let url = nats.url();
        n.push(
            TestCoordinator::start_with(move |c| {
                c.cluster = Some(ClusterConfig {
                    nats_url: url,
                    node: format!("n{i}"),
                    node_ttl: TTL,
                    replicas: 1,
                });
                c.request_timeout = Duration::from_secs(timeout);
            })
            .await,
        );
    }
    let (mut alice, wa) = signed_in(&n[0], "alice").await;
    let (mut bob, _) = signed_in(&n[1], "bob").await;
    sees(&mut alice, &wa, "bob", true).await;
    alice
        .signal(SignalRequest::Request {
            id: 1,
            to: "bob".into(),
            kind: RequestKind::Chat,
        })
        .await;
    assert!(matches!(
        bob.recv_signal().await,
        SignalEvent::Incoming { .. }
    ));
    assert_eq!(
        alice.recv_signal_for(Duration::from_secs(15)).await,
        SignalEvent::Outcome {
            id: 1,
            outcome: Outcome::TimedOut
        }
    );
    // The slot is free again: the same id may be used anew.
    alice
        .signal(SignalRequest::Request {
            id: 1,
            to: "bob".into(),
            kind: RequestKind::Chat,
        })
        .await;
    assert!(matches!(
        bob.recv_signal().await,
        SignalEvent::Incoming { .. }
    ));
}
