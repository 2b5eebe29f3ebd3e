//! Making direct peer-to-peer connections: dialing every candidate at once,
//! punching, and the hello exchange on both sides. What runs on a connection
//! once it is up lives in `link_io.rs`.

use common::close::{self, CloseCode};
use common::names::normalize_username;
use common::protocol::{PeerMsg, RequestKind, PROTOCOL_VERSION};
use common::tls::{self, Identity};
use common::wire::{read_frame, write_frame, WireError};
use common::Fingerprint;
use quinn::{RecvStream, SendStream};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::task::JoinSet;

/// Time allowed to reach a candidate, and for the hello exchange.
pub(crate) const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The TLS server name used between peers (names are not checked: the
/// fingerprint is).
const PEER_SERVER_NAME: &str = "p2pchat-peer";

/// Why a direct connection could not be made.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DialError {
    /// A candidate answered with a certificate the coordinator did not vouch for.
    #[error("the peer at {addr} presented a certificate other than the one the coordinator vouched for; the connection was refused")]
    WrongCertificate {
        /// The candidate.
        addr: SocketAddr,
    },
    /// The peer refused our certificate: it was not told to expect us.
    #[error("the peer refused our certificate (it was not expecting this connection)")]
    NotVouched,
    /// No candidate answered.
    #[error("no candidate address answered ({0})")]
    Unreachable(String),
    /// The other side refused the hello.
    #[error("the peer refused the connection: {0}")]
    Refused(String),
    /// The other side broke the protocol during the hello.
    #[error("the hello failed: {0}")]
    Protocol(String),
}

/// How long the dialer keeps trying while the acceptor refuses its
/// certificate: the coordinator tells both sides at once, and the dialer's
/// first packets may arrive before the acceptor has read that it should
/// expect them.
const VOUCH_GRACE: Duration = Duration::from_secs(5);
const VOUCH_RETRY: Duration = Duration::from_millis(100);

/// Dials every candidate at once; the first connection whose certificate
/// matches `expected` wins and the rest are dropped (closing them). A peer
/// that refuses our certificate is tried again for a few seconds.
#[cfg_attr(not(feature = "test-utils"), allow(dead_code))]
pub async fn dial(
    endpoint: &quinn::Endpoint,
    identity: &Identity,
    expected: Fingerprint,
    addrs: &[SocketAddr],
) -> Result<quinn::Connection, DialError> {
    let config = tls::peer_client_config(identity, expected)
        .map_err(|e| DialError::Protocol(e.to_string()))?;
    retry_while_unvouched(|| dial_once(endpoint, &config, addrs)).await
}

/// Runs `attempt` again while it fails with [`DialError::NotVouched`], for
/// at most [`VOUCH_GRACE`].
async fn retry_while_unvouched<T, F, Fut>(mut attempt: F) -> Result<T, DialError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DialError>>,
{
    let started = Instant::now();
    loop {
        match attempt().await {
            Err(DialError::NotVouched) if started.elapsed() < VOUCH_GRACE => {
                tokio::time::sleep(VOUCH_RETRY).await;
            }
            other => return other,
        }
    }
}

/// Dials (as [`dial`]) and says hello. In TLS 1.3 the dialer's handshake
/// completes before the acceptor has checked the dialer's certificate, so a
/// refusal can also surface as a failed hello: that is retried the same way.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    identity: &Identity,
    expected: Fingerprint,
    addrs: &[SocketAddr],
    me: &str,
    kind: RequestKind,
) -> Result<(quinn::Connection, SendStream, RecvStream), DialError> {
    let config = tls::peer_client_config(identity, expected)
        .map_err(|e| DialError::Protocol(e.to_string()))?;
    // Give the acceptor's punch a head start: a packet of ours reaching its
    // NAT first would make the NAT map the punch to another port.
    tokio::time::sleep(PUNCH_HEAD_START).await;
    retry_while_unvouched(|| async {
        let conn = dial_once(endpoint, &config, addrs).await?;
        match hello_as_dialer(&conn, me, kind).await {
            Ok((send, recv)) => Ok((conn, send, recv)),
            Err(_)
                if conn
                    .close_reason()
                    .is_some_and(|r| tls::is_refused_by_peer(&r)) =>
            {
                Err(DialError::NotVouched)
            }
            Err(e) => Err(e),
        }
    })
    .await
}

/// A connected, greeted link: the connection and its stream.
pub(crate) type Link = (quinn::Connection, SendStream, RecvStream);

/// How often a relayed chat's dialer tries the direct path again.
pub(crate) const UPGRADE_EVERY: Duration = Duration::from_secs(5);

/// One arrangement's dialing: who we are and whose certificate we expect.
pub(crate) struct Dialer {
    /// The peer's endpoint.
    pub endpoint: quinn::Endpoint,
    /// Our identity.
    pub identity: Arc<Identity>,
    /// Our name, for the hello.
    pub me: String,
    /// The certificate the coordinator vouched for.
    pub expected: Fingerprint,
    /// Chat or delivery.
    pub kind: RequestKind,
}

impl Dialer {
    /// Dials `addrs` (see [`connect`]).
    pub(crate) async fn dial(&self, addrs: &[SocketAddr]) -> Result<Link, DialError> {
        connect(
            &self.endpoint,
            &self.identity,
            self.expected,
            addrs,
            &self.me,
            self.kind,
        )
        .await
    }

    /// Directly if that works within `relay_after`, else through `relay`
    /// (a stand-in address) when there is one; true when relayed. The
    /// direct attempts are dropped first, so only one link comes up.
    pub(crate) async fn direct_or_relayed(
        &self,
        addrs: &[SocketAddr],
        relay: Option<SocketAddr>,
        relay_after: Duration,
    ) -> (Result<Link, DialError>, bool) {
        let Some(stand_in) = relay else {
            return (self.dial(addrs).await, false);
        };
        if let Ok(Ok(link)) = tokio::time::timeout(relay_after, self.dial(addrs)).await {
            return (Ok(link), false);
        }
        tracing::info!("no direct path; relaying through the coordinator");
        (self.dial(&[stand_in]).await, true)
    }

    /// While `relayed` lives, for up to `window`, tries the direct path
    /// every [`UPGRADE_EVERY`]; the first link that works.
    pub(crate) async fn upgrade(
        &self,
        addrs: &[SocketAddr],
        relayed: &quinn::Connection,
        window: Duration,
    ) -> Option<Link> {
        let deadline = tokio::time::Instant::now() + window;
        while tokio::time::Instant::now() < deadline && relayed.close_reason().is_none() {
            tokio::time::sleep(UPGRADE_EVERY).await;
            let attempt = tokio::time::timeout(UPGRADE_EVERY, self.dial(addrs)).await;
            if let Ok(Ok(link)) = attempt {
                if relayed.close_reason().is_some() {
                    close::close(&link.0, CloseCode::DUPLICATE);
                    return None;
                }
                tracing::info!("a direct path works now; leaving the relay");
                return Some(link);
            }
        }
        None
    }
}

async fn dial_once(
    endpoint: &quinn::Endpoint,
    config: &quinn::ClientConfig,
    addrs: &[SocketAddr],
) -> Result<quinn::Connection, DialError> {
    let ipv6 = endpoint.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    let mut attempts = JoinSet::new();
    for &addr in addrs.iter().filter(|a| ipv6 || a.is_ipv4()) {
        match endpoint.connect_with(config.clone(), addr, PEER_SERVER_NAME) {
            Ok(connecting) => {
                attempts.spawn(async move {
                    (addr, tokio::time::timeout(DIAL_TIMEOUT, connecting).await)
                });
            }
            Err(e) => tracing::debug!(%addr, error = %e, "cannot dial candidate"),
        }
    }
    let mut failures = Vec::new();
    let mut wrong_cert = None;
    let mut refused = false;
    while let Some(done) = attempts.join_next().await {
        let Ok((addr, result)) = done else { continue };
        match result {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) if tls::is_certificate_rejection(&e) => {
                tracing::warn!(%addr, "candidate presented an unexpected certificate");
                wrong_cert = Some(addr);
            }
            Ok(Err(e)) => {
                refused |= tls::is_refused_by_peer(&e) || refused_before_handshake(&e);
                failures.push(format!("{addr}: {e}"));
            }
            Err(_) => failures.push(format!("{addr}: timed out")),
        }
    }
    match wrong_cert {
        Some(addr) => Err(DialError::WrongCertificate { addr }),
        None if refused => Err(DialError::NotVouched),
        None if failures.is_empty() => Err(DialError::Unreachable("no usable address".into())),
        None => Err(DialError::Unreachable(failures.join("; "))),
    }
}

/// The acceptor refused the attempt before any handshake: it does not
/// expect our address yet (it has not read its `Connect`).
fn refused_before_handshake(e: &quinn::ConnectionError) -> bool {
    matches!(e, quinn::ConnectionError::ConnectionClosed(c)
        if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED)
}

/// How long the dialer waits for the acceptor's punch to go out first.
const PUNCH_HEAD_START: Duration = Duration::from_millis(300);
/// How long the acceptor's punch waits for both sides' mapping packets.
const PUNCH_DELAY: Duration = Duration::from_millis(100);
/// How long a punching attempt is kept going.
const PUNCH_TIME: Duration = Duration::from_secs(3);

/// Sends a short-lived connection attempt to each of `addrs` from this
/// endpoint's socket, and abandons it: the packets open this side's NAT or
/// stateful firewall towards the other peer, which is about to dial us (a
/// first step towards hole punching). The attempts are expected to fail.
pub async fn punch(
    endpoint: quinn::Endpoint,
    identity: Arc<Identity>,
    peer: Fingerprint,
    addrs: Vec<SocketAddr>,
) {
    let Ok(config) = tls::peer_client_config(&identity, peer) else {
        return;
    };
    // After the low-TTL mapping packets of both sides (sent when the
    // arrangement came), so that this full-TTL packet finds the dialer's
    // mapping open instead of leaving a stray entry in its NAT.
    tokio::time::sleep(PUNCH_DELAY).await;
    let ipv6 = endpoint.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    let mut attempts = JoinSet::new();
    for &addr in addrs.iter().filter(|a| ipv6 || a.is_ipv4()) {
        if let Ok(connecting) = endpoint.connect_with(config.clone(), addr, PEER_SERVER_NAME) {
            attempts.spawn(async move {
                if let Ok(Ok(conn)) = tokio::time::timeout(PUNCH_TIME, connecting).await {
                    close::close(&conn, CloseCode::DUPLICATE);
                }
            });
        }
    }
    while attempts.join_next().await.is_some() {}
}

/// The dialer's hello: opens the stream, introduces itself, waits for the answer.
pub async fn hello_as_dialer(
    conn: &quinn::Connection,
    me: &str,
    kind: RequestKind,
) -> Result<(SendStream, RecvStream), DialError> {
    let exchange = async {
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| DialError::Protocol(e.to_string()))?;
        let hello = PeerMsg::Hello {
            version: PROTOCOL_VERSION,
            from: me.to_string(),
            kind,
        };
        write_frame(&mut send, &hello)
            .await
            .map_err(|e| DialError::Protocol(e.to_string()))?;
        match read_frame::<PeerMsg, _>(&mut recv).await {
            Ok(Some(PeerMsg::HelloOk)) => Ok((send, recv)),
            Ok(Some(PeerMsg::Refused { reason })) => Err(DialError::Refused(reason)),
            Ok(_) => Err(DialError::Protocol("unexpected answer to hello".into())),
            Err(e) => Err(DialError::Protocol(e.to_string())),
        }
    };
    match tokio::time::timeout(DIAL_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err(DialError::Protocol("no answer to hello".into())),
    }
}

/// The acceptor's hello: reads the dialer's introduction and checks that it
/// names a (user, kind) pair in `allowed` (what the coordinator vouched for
/// this certificate). Refusals are answered and the connection closed.
pub async fn hello_as_acceptor(
    conn: &quinn::Connection,
    allowed: &[(String, RequestKind)],
) -> Result<(String, RequestKind, SendStream, RecvStream), DialError> {
    let exchange = async {
        let (mut send, mut recv) = conn
            .accept_bi()
            .await
            .map_err(|e| DialError::Protocol(e.to_string()))?;
        let verdict = match read_frame::<PeerMsg, _>(&mut recv).await {
            Ok(Some(PeerMsg::Hello { version, .. })) if version != PROTOCOL_VERSION => {
                Err((CloseCode::VERSION_MISMATCH, version_sentence(version)))
            }
            Ok(Some(PeerMsg::Hello { from, kind, .. })) => match normalize_username(&from) {
                Ok(name) if allowed.iter().any(|(p, k)| *p == name && *k == kind) => {
                    Ok((name, kind))
                }
                _ => Err((
                    CloseCode::UNEXPECTED_PEER,
                    "this connection was not arranged by the coordinator".into(),
                )),
            },
            Err(WireError::Decode {
                hello_version: Some(v),
            }) => Err((CloseCode::VERSION_MISMATCH, version_sentence(v))),
            Ok(_) | Err(_) => Err((CloseCode::PROTOCOL_ERROR, "expected a hello".into())),
        };
        match verdict {
            Ok((name, kind)) => {
                write_frame(&mut send, &PeerMsg::HelloOk)
                    .await
                    .map_err(|e| DialError::Protocol(e.to_string()))?;
                Ok((name, kind, send, recv))
            }
            Err((code, reason)) => {
                let _ = write_frame(
                    &mut send,
                    &PeerMsg::Refused {
                        reason: reason.clone(),
                    },
                )
                .await;
                let _ = send.finish();
                let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
                close::close(conn, code);
                Err(DialError::Refused(reason))
            }
        }
    };
    match tokio::time::timeout(DIAL_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => {
            close::close(conn, CloseCode::TIMEOUT);
            Err(DialError::Protocol("no hello in time".into()))
        }
    }
}

fn version_sentence(theirs: u32) -> String {
    format!(
        "this peer speaks protocol version {PROTOCOL_VERSION} and you speak version {theirs}: both must run the same p2pchat release"
    )
}
