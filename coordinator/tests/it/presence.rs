//! Presence and look-ups: who is told when a user comes and goes (by closing
//! or by vanishing), the welcome's online list, look-ups of online, offline
//! and unknown users, the online list, and a second login replacing the
//! first without anyone seeing the user leave.

use crate::support::*;
use common::close::CloseCode;
use common::protocol::{SessionRequest, SessionResponse};
use std::time::Duration;

fn presence(name: &str, online: bool) -> SessionResponse {
    SessionResponse::Presence {
        name: name.into(),
        online,
    }
}

#[tokio::test]
async fn others_see_a_user_come_online_and_go_offline() {
    let tc = TestCoordinator::start().await;
    let mut a = tc.user("a").await;
    let mut b = tc.user("b").await;
    assert_eq!(a.recv().await, presence("b", true));

    let mut c = tc.client().await;
    let welcome = c.register("c", PASSWORD).await;
    assert_eq!(welcome.online, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(a.recv().await, presence("c", true));
    assert_eq!(b.recv().await, presence("c", true));
    c.expect_no_session_frame().await;

    c.leave();
    assert_eq!(a.recv().await, presence("c", false));
    assert_eq!(b.recv().await, presence("c", false));
    a.expect_no_session_frame().await;
}

#[tokio::test]
async fn a_vanished_client_goes_offline_after_the_idle_timeout() {
    let tc = TestCoordinator::start().await;
    let mut a = tc.user("watcher").await;
    let relay = UdpRelay::start(tc.addr).await;
    let mut ghost = tc.client_via(&relay).await;
    let welcome = ghost.register("ghost", PASSWORD).await;
    assert_eq!(welcome.observed, relay.addr);
    assert_eq!(a.recv().await, presence("ghost", true));

    relay.cut();
    let limit = common::transport::IDLE_TIMEOUT + Duration::from_secs(5);
    let seen = a.recv_for(limit).await;
    assert_eq!(seen, presence("ghost", false));
}

#[tokio::test]
async fn look_ups_of_online_offline_and_unknown_users_and_the_online_list() {
    let tc = TestCoordinator::start().await;
    let mut a = tc.user("alice").await;
    let b = tc.user("bob").await;
    assert_eq!(a.recv().await, presence("bob", true));
    let dave = tc.user("dave").await;
    assert_eq!(a.recv().await, presence("dave", true));
    dave.leave();
    assert_eq!(a.recv().await, presence("dave", false));

    assert_eq!(
        a.lookup("Bob").await,
        SessionResponse::LookupResult {
            name: "bob".into(),
            exists: true,
            online: true
        }
    );
    assert_eq!(
        a.lookup("dave").await,
        SessionResponse::LookupResult {
            name: "dave".into(),
            exists: true,
            online: false
        }
    );
    assert_eq!(
        a.lookup("nobody").await,
        SessionResponse::LookupResult {
            name: "nobody".into(),
            exists: false,
            online: false
        }
    );
    assert!(
        matches!(a.lookup("no body").await, SessionResponse::Error { .. }),
        "an invalid name is an error, the session goes on"
    );
    assert_eq!(
        a.ask(SessionRequest::ListOnline).await,
        SessionResponse::OnlineList {
            names: vec!["bob".into()]
        }
    );
    drop(b);
}

#[tokio::test]
async fn a_second_login_replaces_the_first_and_nobody_sees_the_user_leave() {
    let tc = TestCoordinator::start().await;
    let first = tc.user("amy").await;
    let mut other = tc.user("ben").await;

    let mut second = tc.client().await;
    let welcome = second.login("amy", PASSWORD).await;
    assert_eq!(welcome.online, vec!["ben".to_string()]);
    assert_eq!(first.close_code().await, CloseCode::REPLACED);

    other.expect_no_session_frame().await;
    assert_eq!(
        other.lookup("amy").await,
        SessionResponse::LookupResult {
            name: "amy".into(),
            exists: true,
            online: true
        }
    );
    assert_eq!(
        second.ask(SessionRequest::ListOnline).await,
        SessionResponse::OnlineList {
            names: vec!["ben".into()]
        }
    );
}
