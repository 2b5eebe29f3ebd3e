//! Login throttling under attack: parallel wrong passwords are refused
//! without hashing once one attempt per account is in flight, a stranger's
//! failures never lock the real owner out (nor block their session token),
//! the per-account ceiling only slows, and many accounts may be created from
//! one (NAT) address. Loopback addresses 127.0.0.2, .3, … are distinct
//! sources.

use crate::support::*;
use common::protocol::{LoginFailure, SessionRequest, SessionResponse};
use coordinator::auth::AuthLimits;
use std::net::IpAddr;
use std::time::Duration;

fn ip(last: u8) -> IpAddr {
    [127, 0, 0, last].into()
}

/// A client from `from` at the password prompt of the existing `name`.
async fn at_password(tc: &TestCoordinator, from: IpAddr, name: &str) -> Client {
    let mut c = tc.client_from(from).await;
    c.hello().await;
    assert_eq!(
        c.username(name).await,
        SessionResponse::AccountStatus {
            name: name.into(),
            exists: true
        }
    );
    c
}

#[tokio::test]
async fn parallel_wrong_passwords_are_refused_without_hashing_and_the_owner_gets_in() {
    let tc = TestCoordinator::start().await;
    let owner = tc.user_from(ip(2), "victim").await;
    owner.leave();
    let free = AuthLimits::default().free_failures as usize;

    let mut attackers = Vec::new();
    for _ in 0..12 {
        attackers.push(at_password(&tc, ip(9), "victim").await);
    }
    // Every guess goes out before any answer is read.
    for a in &mut attackers {
        a.send(SessionRequest::Password {
            password: "wrong guess!".into(),
        })
        .await;
    }
    // The owner logs in from their own address during the burst.
    let mut owner = at_password(&tc, ip(2), "victim").await;
    match owner.password(PASSWORD).await {
        SessionResponse::Welcome(w) => assert_eq!(w.name, "victim"),
        other => panic!("the owner was refused during the burst: {other:?}"),
    }
    let (mut hashed, mut refused) = (0, 0);
    for a in &mut attackers {
        match a.recv().await {
            SessionResponse::LoginFailed {
                reason: LoginFailure::WrongPassword,
                ..
            } => hashed += 1,
            SessionResponse::LoginFailed {
                reason: LoginFailure::TooManyAttempts,
                retry_after_secs,
            } => {
                assert!(retry_after_secs >= 1);
                refused += 1;
            }
            other => panic!("unexpected answer to a wrong guess: {other:?}"),
        }
    }
    assert!(
        hashed <= free + 1,
        "{hashed} of 12 parallel guesses were checked (refused: {refused})"
    );
    assert_eq!(hashed + refused, 12);
}

#[tokio::test]
async fn a_strangers_failures_never_lock_out_the_owner_or_their_token() {
    let tc = TestCoordinator::start_with(|cfg| {
        cfg.auth = AuthLimits {
            base_delay: Duration::from_secs(60),
            ..AuthLimits::default()
        };
    })
    .await;
    let mut first = tc.client_from(ip(2)).await;
    let token = first.register("owner", PASSWORD).await.token;
    first.leave();

    // Eight wrong guesses from another address.
    let mut attacker = at_password(&tc, ip(3), "owner").await;
    for _ in 0..8 {
        let reply = attacker.password("not the password").await;
        assert!(
            matches!(reply, SessionResponse::LoginFailed { .. }),
            "{reply:?}"
        );
    }
    // The guesser's own address is held back…
    assert!(matches!(
        attacker.password(PASSWORD).await,
        SessionResponse::LoginFailed {
            reason: LoginFailure::TooManyAttempts,
            ..
        }
    ));
    // …but the owner's token still resumes…
    let mut resumed = tc.client_from(ip(2)).await;
    resumed.hello().await;
    match resumed
        .ask(SessionRequest::Resume {
            name: "owner".into(),
            token,
        })
        .await
    {
        SessionResponse::Welcome(w) => assert_eq!(w.name, "owner"),
        other => panic!("the owner's token was refused: {other:?}"),
    }
    resumed.leave();
    // …their password works from their address…
    let mut again = tc.client_from(ip(2)).await;
    assert_eq!(again.login("owner", PASSWORD).await.name, "owner");
    again.leave();
    // …and from a new address (a new device) too.
    let mut elsewhere = tc.client_from(ip(4)).await;
    assert_eq!(elsewhere.login("owner", PASSWORD).await.name, "owner");
}

#[tokio::test]
async fn guesses_from_many_addresses_only_slow_the_account() {
    let tc = TestCoordinator::start_with(|cfg| {
        cfg.auth = AuthLimits {
            account_free_failures: 3,
            account_slowdown: Duration::from_millis(200),
            ..AuthLimits::default()
        };
    })
    .await;
    tc.user_from(ip(2), "target").await.leave();
    for last in 10..18 {
        let mut a = at_password(&tc, ip(last), "target").await;
        let reply = a.password("a wrong guess").await;
        assert!(
            matches!(reply, SessionResponse::LoginFailed { .. }),
            "{reply:?}"
        );
    }
    // Past the account's ceiling, the owner from a new address still gets in.
    let mut owner = tc.client_from(ip(5)).await;
    assert_eq!(owner.login("target", PASSWORD).await.name, "target");
}

#[tokio::test]
async fn many_users_behind_one_address_can_create_accounts() {
    let tc = TestCoordinator::start().await;
    for n in 0..15 {
        let c = tc.user(&format!("natuser{n}")).await;
        c.leave();
    }
}
