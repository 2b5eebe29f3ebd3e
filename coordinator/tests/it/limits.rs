//! Connection limits against one address filling the coordinator: a cap per
//! source on connections not yet logged in, a short deadline per login step,
//! and QUIC address validation (Retry) once handshakes pile up. Loopback
//! addresses 127.0.0.2, .3, … are distinct sources.

use crate::support::*;
use common::close::CloseCode;
use common::protocol::{SessionRequest, SessionResponse, PROTOCOL_VERSION};
use common::tls::coordinator_client_config_ca;
use coordinator::admission::Limits;
use std::net::IpAddr;
use std::time::Duration;

fn ip(last: u8) -> IpAddr {
    [127, 0, 0, last].into()
}

#[tokio::test]
async fn one_address_cannot_fill_the_coordinator_with_idle_connections() {
    let tc = TestCoordinator::start_with(|cfg| {
        cfg.limits = Limits {
            not_logged_in_per_source: 3,
            connections_per_source: 5,
            ..Limits::default()
        };
    })
    .await;
    // The attacker's address holds as many idle connections as it may.
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut c = tc.client_from(ip(9)).await;
        c.hello().await;
        idle.push(c);
    }
    // One more from that address is closed with a reason, not served.
    let mut extra = tc.client_from(ip(9)).await;
    extra
        .send(SessionRequest::Hello {
            version: PROTOCOL_VERSION,
            addrs: Vec::new(),
        })
        .await;
    assert_eq!(extra.close_code().await, CloseCode::TOO_MANY_CONNECTIONS);
    // A real user from another address is served.
    let mut real = tc.user_from(ip(2), "realuser").await;
    assert_eq!(
        real.lookup("realuser").await,
        SessionResponse::LookupResult {
            name: "realuser".into(),
            exists: true,
            online: true
        }
    );
    // A login frees a not-logged-in place for that address.
    idle[0]
        .enter_after_hello("attacker0", PASSWORD, false)
        .await;
    let mut again = tc.client_from(ip(9)).await;
    again.hello().await;
    for c in &idle {
        assert!(
            c.conn.close_reason().is_none(),
            "an admitted connection was closed"
        );
    }
}

#[tokio::test]
async fn a_connection_idle_between_login_steps_is_closed_long_before_the_login_deadline() {
    let tc = TestCoordinator::start_with(|cfg| {
        cfg.login_timeout = Duration::from_secs(300);
        cfg.login_step_timeout = Duration::from_secs(1);
    })
    .await;
    let mut b = bystander(&tc).await;
    let mut idle = tc.client().await;
    idle.hello().await;
    idle.username("nobody").await;
    assert_eq!(idle.close_code().await, CloseCode::TIMEOUT);
    assert_still_served(&mut b).await;
}

#[tokio::test]
async fn handshakes_past_the_threshold_are_retried_and_real_peers_still_get_in() {
    let tc = TestCoordinator::start_with(|cfg| {
        cfg.limits = Limits {
            retry_above: 4,
            max_handshakes: 8,
            ..Limits::default()
        };
    })
    .await;
    // Clients behind a black hole: their handshakes never complete, as with
    // Initials sent from spoofed addresses.
    let hole = BlackHole::start(tc.addr).await;
    let identity = new_identity();
    let cas = certs::load_ca_certs(&tc.ca_path()).unwrap();
    let config = coordinator_client_config_ca(&identity, cas).unwrap();
    let flood = client_endpoint();
    let mut pending = Vec::new();
    for _ in 0..20 {
        pending.push(
            flood
                .connect_with(config.clone(), hole.addr, "localhost")
                .unwrap(),
        );
    }
    within("the coordinator to answer with Retry", async {
        while hole.retries() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // A real peer answers the Retry, is admitted and logs in.
    let mut real = tc.user("realpeer").await;
    assert_eq!(
        real.lookup("realpeer").await,
        SessionResponse::LookupResult {
            name: "realpeer".into(),
            exists: true,
            online: true
        }
    );
    // More real peers than the hard cap on handshakes still get in: the
    // flood is held to `retry_above`, not to `max_handshakes`.
    for n in 0..3 {
        tc.user(&format!("peer{n}")).await;
    }
    drop(pending);
}
