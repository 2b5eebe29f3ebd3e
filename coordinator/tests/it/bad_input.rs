//! Bad input: oversized and undecodable frames, wrong or missing ALPN, other
//! protocol versions (old, new and future-format hellos), requests out of
//! order, invalid names and passwords, floods of requests and of streams.
//! Each misbehaving client is closed with its own code while a well-behaved
//! user, logged in at the same time, goes on being served.

use crate::support::*;
use common::close::{code_of, CloseCode};
use common::protocol::{
    LoginFailure, RequestKind, SessionRequest, SessionResponse, SignalRequest, PROTOCOL_VERSION,
};
use common::tls::insecure_client_config_with_alpn;
use common::wire::{encode, read_frame, write_frame};
use quinn::{ConnectionError, TransportErrorCode};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;

/// TLS alert `no_application_protocol` (120) as a QUIC crypto error.
fn no_application_protocol() -> TransportErrorCode {
    TransportErrorCode::crypto(120)
}

#[tokio::test]
async fn a_frame_over_the_cap_closes_with_frame_too_large() {
    let tc = TestCoordinator::start().await;
    let mut b = bystander(&tc).await;
    let mut bad = tc.client().await;
    bad.send_raw(&(1u32 << 20).to_be_bytes()).await;
    assert_eq!(bad.close_code().await, CloseCode::FRAME_TOO_LARGE);
    assert_still_served(&mut b).await;
}

#[tokio::test]
async fn a_frame_over_the_cap_after_login_closes_with_frame_too_large() {
    let tc = TestCoordinator::start().await;
    let mut b = bystander(&tc).await;
    let mut bad = tc.user("bigmouth").await;
    bad.send_raw(&(1u32 << 20).to_be_bytes()).await;
    bad.send_raw(&[0u8; 4096]).await;
    assert_eq!(bad.close_code().await, CloseCode::FRAME_TOO_LARGE);
    assert_still_served(&mut b).await;
}

#[tokio::test]
async fn garbage_on_the_session_stream_closes_with_protocol_error() {
    let tc = TestCoordinator::start().await;
    let mut b = bystander(&tc).await;
    let mut bad = tc.client().await;
    bad.send_raw(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await;
    assert_eq!(bad.close_code().await, CloseCode::PROTOCOL_ERROR);
    assert_still_served(&mut b).await;
}

#[tokio::test]
async fn garbage_on_the_signaling_stream_closes_with_protocol_error() {
    let tc = TestCoordinator::start().await;
    let mut b = bystander(&tc).await;
    let mut bad = tc.user("mangler").await;
    bad.open_signal().await;
    bad.signal_raw(&[0, 0, 0, 2, 0x7f, 0x7f]).await;
    assert_eq!(bad.close_code().await, CloseCode::PROTOCOL_ERROR);
    assert_still_served(&mut b).await;
}

#[tokio::test]
async fn a_wrong_alpn_fails_the_handshake() {
    let tc = TestCoordinator::start().await;
    let mut b = bystander(&tc).await;
    let config = insecure_client_config_with_alpn(&new_identity(), vec![b"nope".to_vec()]).unwrap();
    let endpoint = client_endpoint();
    let result = within(
        "the handshake",
        endpoint.connect_with(config, tc.addr, "localhost").unwrap(),
    )
    .await;
    match result {
        Err(ConnectionError::ConnectionClosed(close)) => {
            assert_eq!(close.error_code, no_application_protocol());
        }
        other => panic!("expected the handshake to fail, got {other:?}"),
    }
    assert_still_served(&mut b).await;
}

#[tokio::test]
async fn a_missing_alpn_is_refused() {
    let tc = TestCoordinator::start().await;
    let mut b = bystander(&tc).await;
    let config = insecure_client_config_with_alpn(&new_identity(), Vec::new()).unwrap();
    let endpoint = client_endpoint();
    let result = within(
        "the handshake",
        endpoint.connect_with(config, tc.addr, "localhost").unwrap(),
    )
    .await;
    // rustls already refuses a QUIC handshake without ALPN; should one
    // complete, the coordinator must close it with BAD_ALPN.
    match result {
        Err(ConnectionError::ConnectionClosed(close)) => {
            assert_eq!(close.error_code, no_application_protocol());
        }
        Ok(conn) => {
            let err = within("the close", conn.closed()).await;
            assert_eq!(code_of(&err), Some(CloseCode::BAD_ALPN), "{err:?}");
        }
        Err(other) => panic!("unexpected handshake error {other:?}"),
    }
    assert_still_served(&mut b).await;
}

async fn expect_version_mismatch(bad: &mut Client, upgrade: &str) {
    match bad.recv().await {
        SessionResponse::VersionMismatch { supported, message } => {
            assert_eq!(supported, PROTOCOL_VERSION);
            assert!(message.contains(&format!("upgrade {upgrade}")), "{message}");
        }
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    assert_eq!(bad.close_code().await, CloseCode::VERSION_MISMATCH);
}

#[tokio::test]
async fn a_newer_version_is_told_to_upgrade_the_coordinator() {
    let tc = TestCoordinator::start().await;
    let mut b = bystander(&tc).await;
    let mut bad = tc.client().await;
    bad.send(SessionRequest::Hello {
        version: 99,
        addrs: Vec::new(),
    })
    .await;
    expect_version_mismatch(&mut bad, "the coordinator").await;
    assert_still_served(&mut b).await;
}

#[tokio::test]
async fn an_older_version_is_told_to_upgrade_the_peer() {
    let tc = TestCoordinator::start().await;
    let mut bad = tc.client().await;
    bad.send(SessionRequest::Hello {
        version: 0,
        addrs: Vec::new(),
    })
    .await;
    expect_version_mismatch(&mut bad, "the peer").await;
}

#[tokio::test]
async fn a_future_format_hello_still_gets_a_version_mismatch() {
    /// What a later release's session request might look like.
    #[derive(Serialize)]
    enum FutureRequest {
        Hello {
            version: u32,
            client: String,
            features: Vec<u64>,
            resume: Option<[u8; 16]>,
        },
    }
    let tc = TestCoordinator::start().await;
    let mut b = bystander(&tc).await;
    let mut bad = tc.client().await;
    let frame = encode(&FutureRequest::Hello {
        version: 2,
        client: "p2pchat 2.0 with a long client string".into(),
        features: vec![1, 500, 70_000],
        resume: Some([7; 16]),
    })
    .unwrap();
    bad.send_raw(&frame).await;
    expect_version_mismatch(&mut bad, "the coordinator").await;
    assert_still_served(&mut b).await;
}

#[tokio::test]
async fn a_malformed_hello_of_the_current_version_is_a_protocol_error_not_an_upgrade() {
    let tc = TestCoordinator::start().await;
    let mut b = bystander(&tc).await;
    let mut bad = tc.client().await;
    // Variant 0 (hello), our version, then an address list that claims
    // 200 entries and carries garbage: it cannot decode.
    let mut body = vec![0u8, PROTOCOL_VERSION as u8, 200, 1];
    body.extend_from_slice(&[0xff; 8]);
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    bad.send_raw(&frame).await;
    // No "upgrade" sentence: the session stream ends without a frame and
    // the connection closes as a protocol error.
    let got = within(
        "the session stream to end",
        read_frame::<SessionResponse, _>(bad.session_recv()),
    )
    .await;
    assert!(
        !matches!(got, Ok(Some(SessionResponse::VersionMismatch { .. }))),
        "a malformed current-version hello was answered with {got:?}"
    );
    assert_eq!(bad.close_code().await, CloseCode::PROTOCOL_ERROR);
    assert_still_served(&mut b).await;
}

#[tokio::test]
async fn a_look_up_before_login_is_a_protocol_error() {
    let tc = TestCoordinator::start().await;
    let mut b = bystander(&tc).await;

    let mut first_frame = tc.client().await;
    first_frame
        .send(SessionRequest::Lookup {
            name: "bystander".into(),
        })
        .await;
    assert_eq!(first_frame.close_code().await, CloseCode::PROTOCOL_ERROR);

    let mut after_hello = tc.client().await;
    after_hello.hello().await;
    after_hello.send(SessionRequest::ListOnline).await;
    assert_eq!(after_hello.close_code().await, CloseCode::PROTOCOL_ERROR);

    let mut after_name = tc.client().await;
    after_name.hello().await;
    after_name.username("bystander").await;
    after_name
        .send(SessionRequest::Lookup {
            name: "bystander".into(),
        })
        .await;
    assert_eq!(after_name.close_code().await, CloseCode::PROTOCOL_ERROR);
    assert_still_served(&mut b).await;
}

#[tokio::test]
async fn a_signaling_stream_before_login_is_a_protocol_error() {
    let tc = TestCoordinator::start().await;
    let mut b = bystander(&tc).await;
    let mut bad = tc.client().await;
    bad.hello().await;
    bad.open_signal_silent().await;
    bad.signal(SignalRequest::Request {
        id: 1,
        to: "bystander".into(),
        kind: RequestKind::Chat,
    })
    .await;
    let err = within_for(Duration::from_secs(3), "the close", bad.conn.closed()).await;
    assert_eq!(code_of(&err), Some(CloseCode::PROTOCOL_ERROR), "{err:?}");
    assert_still_served(&mut b).await;
}

#[tokio::test]
async fn invalid_names_are_refused_and_the_user_may_try_again() {
    let tc = TestCoordinator::start().await;
    let mut b = bystander(&tc).await;
    let mut c = tc.client().await;
    c.hello().await;
    for bad in [
        "a".repeat(33),
        "al\u{7}ice".to_string(),
        "bob\n".to_string(),
        "\u{1b}[31mred".to_string(),
        String::new(),
    ] {
        match c.username(&bad).await {
            SessionResponse::LoginFailed {
                reason: LoginFailure::Invalid(why),
                ..
            } => assert!(!why.is_empty()),
            other => panic!("expected {bad:?} to be invalid, got {other:?}"),
        }
    }
    let welcome = c.enter_after_hello(&"a".repeat(32), PASSWORD, false).await;
    assert_eq!(welcome.name.len(), 32);
    assert_still_served(&mut b).await;
}

#[tokio::test]
async fn passwords_out_of_bounds_are_refused_for_a_new_account() {
    let tc = TestCoordinator::start().await;
    let mut b = bystander(&tc).await;
    let mut c = tc.client().await;
    c.hello().await;
    c.username("newbie").await;
    for bad in ["short".to_string(), "x".repeat(300)] {
        match c.password(&bad).await {
            SessionResponse::LoginFailed {
                reason: LoginFailure::Invalid(why),
                ..
            } => assert!(why.contains("password"), "{why}"),
            other => panic!(
                "expected a {}-byte password to be invalid, got {other:?}",
                bad.len()
            ),
        }
    }
    match c.password(PASSWORD).await {
        SessionResponse::Welcome(w) => assert_eq!(w.name, "newbie"),
        other => panic!("expected a welcome, got {other:?}"),
    }
    assert_still_served(&mut b).await;
}

#[tokio::test]
async fn a_flood_of_requests_closes_with_flood() {
    let tc = TestCoordinator::start().await;
    let mut b = bystander(&tc).await;
    let mut bad = tc.user("flooder").await;
    let one = encode(&SessionRequest::Lookup {
        name: "bystander".into(),
    })
    .unwrap();
    let burst: Vec<u8> = one.iter().copied().cycle().take(one.len() * 500).collect();
    bad.send_raw(&burst).await;
    assert_eq!(bad.close_code().await, CloseCode::FLOOD);
    assert_still_served(&mut b).await;
}

#[tokio::test]
async fn a_fourth_stream_is_refused() {
    let tc = TestCoordinator::start().await;
    let mut b = bystander(&tc).await;
    let mut c = tc.user("greedy").await;
    c.open_signal().await;
    // The third stream is the relay.
    let (mut relay, _relay_recv) = c.conn.open_bi().await.expect("the relay stream");
    write_frame(&mut relay, &common::protocol::RelayRequest::Open)
        .await
        .unwrap();
    // The coordinator allows three streams: a fourth one cannot even be
    // opened (QUIC flow control); should it open, the coordinator closes
    // with FLOOD.
    let fourth = tokio::time::timeout(QUIET, c.conn.open_bi()).await;
    if let Ok(opened) = fourth {
        let (mut send, _recv) = opened.expect("open a fourth stream");
        let _ = send
            .write_all(&encode(&SessionRequest::ListOnline).unwrap())
            .await;
        assert_eq!(c.close_code().await, CloseCode::FLOOD);
    } else {
        // The first streams still work.
        assert_eq!(
            c.lookup("bystander").await,
            SessionResponse::LookupResult {
                name: "bystander".into(),
                exists: true,
                online: true
            }
        );
    }
    assert_still_served(&mut b).await;
}

#[tokio::test]
async fn too_many_announced_addresses_are_cut_to_the_limit() {
    let tc = TestCoordinator::start().await;
    let mut a = tc.client().await;
    let many: Vec<SocketAddr> = (1..=40)
        .map(|i| SocketAddr::from(([10, 0, 0, i], 4000)))
        .collect();
    a.hello_with(many).await;
    a.enter_after_hello("alice", PASSWORD, false).await;
    a.open_signal().await;
    let mut b = tc.user("bob").await;
    b.open_signal().await;
    b.signal(SignalRequest::Request {
        id: 1,
        to: "alice".into(),
        kind: RequestKind::Chat,
    })
    .await;
    let id = match a.recv_signal().await {
        common::protocol::SignalEvent::Incoming { id, .. } => id,
        other => panic!("expected incoming, got {other:?}"),
    };
    a.signal(SignalRequest::Answer {
        id,
        answer: common::protocol::Answer::Accept,
    })
    .await;
    match b.recv_signal().await {
        common::protocol::SignalEvent::Connect { addrs, .. } => {
            assert_eq!(addrs[0], a.local_addr());
            assert!(
                addrs.len() <= 1 + common::protocol::MAX_CANDIDATES,
                "{} candidates",
                addrs.len()
            );
        }
        other => panic!("expected connect, got {other:?}"),
    }
}

#[tokio::test]
async fn a_connection_that_never_logs_in_is_closed() {
    let tc = TestCoordinator::start_with(|cfg| cfg.login_timeout = Duration::from_secs(1)).await;
    let mut b = bystander(&tc).await;
    let mut idle = tc.client().await;
    idle.hello().await;
    assert_eq!(idle.close_code().await, CloseCode::TIMEOUT);
    assert_still_served(&mut b).await;
}
