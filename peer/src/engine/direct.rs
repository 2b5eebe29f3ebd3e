//! Direct peer-to-peer connections: dialing every candidate at once,
//! accepting vouched peers, the hello exchange, and the session task that
//! moves messages (send, store, acknowledge) over one bidirectional stream.
//!
//! Message rules enforced here: a received message is stored before it is
//! acknowledged, and shown only the first time it is stored; an
//! acknowledgement marks the sender's copy delivered. Undelivered messages go
//! out first, followed by [`PeerMsg::Flushed`].

use super::api::ChatEnd;
use super::NetEvent;
use crate::store::Store;
use common::close::{self, CloseCode};
use common::ids::MessageId;
use common::limits::TokenBucket;
use common::names::{check_message, normalize_username};
use common::protocol::{ChatMessage, PeerMsg, RequestKind, PROTOCOL_VERSION};
use common::tls::{self, Identity};
use common::wire::{read_frame, write_frame, WireError};
use common::Fingerprint;
use quinn::{RecvStream, SendStream};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Time allowed to reach a candidate, and for the hello exchange.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames a peer may send in a burst, then per second.
const FRAME_BURST: u32 = 5000;
const FRAME_RATE: u32 = 2000;
/// Messages a session may have queued for sending.
pub const LINK_QUEUE: usize = 1024;
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
pub async fn dial(
    endpoint: &quinn::Endpoint,
    identity: &Identity,
    expected: Fingerprint,
    addrs: &[SocketAddr],
) -> Result<quinn::Connection, DialError> {
    let config = tls::peer_client_config(identity, expected)
        .map_err(|e| DialError::Protocol(e.to_string()))?;
    let started = Instant::now();
    loop {
        match dial_once(endpoint, &config, addrs).await {
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
    let started = Instant::now();
    loop {
        let attempt = match dial_once(endpoint, &config, addrs).await {
            Ok(conn) => match hello_as_dialer(&conn, me, kind).await {
                Ok((send, recv)) => Ok((conn, send, recv)),
                Err(_)
                    if conn
                        .close_reason()
                        .is_some_and(|r| tls::is_refused_by_peer(&r)) =>
                {
                    Err(DialError::NotVouched)
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match attempt {
            Err(DialError::NotVouched) if started.elapsed() < VOUCH_GRACE => {
                tokio::time::sleep(VOUCH_RETRY).await;
            }
            other => return other,
        }
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
                refused |= tls::is_refused_by_peer(&e);
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

/// Commands from the engine to a running session.
#[derive(Debug)]
pub enum LinkCmd {
    /// Send this (already stored) message.
    Send(ChatMessage),
    /// Close the connection with this code.
    Close(CloseCode),
}

/// What a session reports to the engine.
#[derive(Debug)]
pub enum LinkEvent {
    /// A new message was stored.
    Received(ChatMessage),
    /// Every message that was waiting at the start was acknowledged.
    HeldDelivered(usize),
    /// The session ended.
    Ended(ChatEnd),
}

/// Everything a session task needs.
pub struct Session {
    /// Engine-wide id of this link.
    pub link: u64,
    /// The other user.
    pub peer: String,
    /// Chat or delivery.
    pub kind: RequestKind,
    /// The connection.
    pub conn: quinn::Connection,
    /// This user's store.
    pub store: Store,
    /// Where to report.
    pub events: mpsc::Sender<NetEvent>,
}

enum Inbound {
    Frame(PeerMsg),
    Bad(String, CloseCode),
    Eof,
}

async fn read_peer(mut recv: RecvStream, tx: mpsc::Sender<Inbound>) {
    let mut bucket = TokenBucket::new(FRAME_BURST, FRAME_RATE, Instant::now());
    loop {
        let item = match read_frame::<PeerMsg, _>(&mut recv).await {
            Ok(Some(_)) if !bucket.take(Instant::now()) => {
                Inbound::Bad("too many frames".into(), CloseCode::FLOOD)
            }
            Ok(Some(msg)) => Inbound::Frame(msg),
            Ok(None) => Inbound::Eof,
            Err(WireError::TooLarge { len }) => Inbound::Bad(
                format!("frame of {len} bytes is over the limit"),
                CloseCode::FRAME_TOO_LARGE,
            ),
            Err(WireError::Io(e)) => Inbound::Bad(e.to_string(), CloseCode::PROTOCOL_ERROR),
            Err(e) => Inbound::Bad(e.to_string(), CloseCode::PROTOCOL_ERROR),
        };
        let last = !matches!(item, Inbound::Frame(_));
        if tx.send(item).await.is_err() || last {
            return;
        }
    }
}

fn end_reason(err: &quinn::ConnectionError) -> ChatEnd {
    match close::code_of(err) {
        Some(CloseCode::LEFT_CHAT) => ChatEnd::PeerLeft,
        Some(CloseCode::SIGNED_OUT) => ChatEnd::PeerSignedOut,
        _ => ChatEnd::ConnectionLost(close::describe_connection_error(err)),
    }
}

impl Session {
    /// Runs the session until the connection ends; reports through `events`.
    pub async fn run(
        self,
        mut send: SendStream,
        recv: RecvStream,
        mut cmds: mpsc::Receiver<LinkCmd>,
    ) {
        let (in_tx, mut in_rx) = mpsc::channel(64);
        let reader = tokio::spawn(read_peer(recv, in_tx));
        let end = self.serve(&mut send, &mut in_rx, &mut cmds).await;
        reader.abort();
        let _ = self
            .events
            .send(NetEvent::Link(self.link, LinkEvent::Ended(end)))
            .await;
    }

    async fn report(&self, ev: LinkEvent) {
        let _ = self.events.send(NetEvent::Link(self.link, ev)).await;
    }

    fn fail(&self, code: CloseCode, why: String) -> ChatEnd {
        tracing::warn!(peer = %self.peer, reason = %why, "closing direct connection");
        close::close(&self.conn, code);
        ChatEnd::ProtocolError(why)
    }

    async fn serve(
        &self,
        send: &mut SendStream,
        in_rx: &mut mpsc::Receiver<Inbound>,
        cmds: &mut mpsc::Receiver<LinkCmd>,
    ) -> ChatEnd {
        // Held messages first: their acks are counted to tell the user.
        let held = match self.store.undelivered(&self.peer).await {
            Ok(m) => m,
            Err(e) => return self.fail(CloseCode::INTERNAL, e.to_string()),
        };
        let mut waiting_held: HashMap<MessageId, ()> = HashMap::new();
        let mut outstanding: HashMap<MessageId, ()> = HashMap::new();
        let held_count = held.len();
        for m in held {
            waiting_held.insert(m.id, ());
            outstanding.insert(m.id, ());
            if let Err(e) = write_frame(send, &PeerMsg::Message(m)).await {
                return self.fail(CloseCode::PROTOCOL_ERROR, e.to_string());
            }
        }
        if let Err(e) = write_frame(send, &PeerMsg::Flushed).await {
            return self.fail(CloseCode::PROTOCOL_ERROR, e.to_string());
        }
        let mut peer_flushed = false;
        let mut finished = false;
        let mut peer_eof = false;
        loop {
            let delivery_done =
                self.kind == RequestKind::Deliver && peer_flushed && outstanding.is_empty();
            if delivery_done && !finished {
                let _ = send.finish();
                finished = true;
            }
            if delivery_done && peer_eof {
                close::close(&self.conn, CloseCode::NORMAL);
                return ChatEnd::PeerLeft;
            }
            tokio::select! {
                biased;
                err = self.conn.closed() => return end_reason(&err),
                cmd = cmds.recv() => match cmd {
                    Some(LinkCmd::Send(m)) if !finished => {
                        outstanding.insert(m.id, ());
                        if let Err(e) = write_frame(send, &PeerMsg::Message(m)).await {
                            return self.fail(CloseCode::PROTOCOL_ERROR, e.to_string());
                        }
                    }
                    Some(LinkCmd::Send(_)) => {}
                    Some(LinkCmd::Close(code)) => {
                        close::close(&self.conn, code);
                        return if code == CloseCode::SIGNED_OUT { ChatEnd::PeerSignedOut } else { ChatEnd::YouLeft };
                    }
                    None => {
                        close::close(&self.conn, CloseCode::SIGNED_OUT);
                        return ChatEnd::YouLeft;
                    }
                },
                inbound = in_rx.recv() => match inbound {
                    Some(Inbound::Frame(PeerMsg::Message(m))) => {
                        if let Err(e) = check_message(&m.body) {
                            return self.fail(CloseCode::PROTOCOL_ERROR, format!("{} sent an invalid message: {e}", self.peer));
                        }
                        match self.store.add_incoming(&self.peer, &m).await {
                            Ok(true) => self.report(LinkEvent::Received(m.clone())).await,
                            Ok(false) => {}
                            Err(e) => return self.fail(CloseCode::INTERNAL, e.to_string()),
                        }
                        if let Err(e) = write_frame(send, &PeerMsg::Ack { id: m.id }).await {
                            return self.fail(CloseCode::PROTOCOL_ERROR, e.to_string());
                        }
                    }
                    Some(Inbound::Frame(PeerMsg::Ack { id })) => {
                        if let Err(e) = self.store.mark_delivered(&self.peer, id).await {
                            return self.fail(CloseCode::INTERNAL, e.to_string());
                        }
                        outstanding.remove(&id);
                        if waiting_held.remove(&id).is_some() && waiting_held.is_empty() {
                            self.report(LinkEvent::HeldDelivered(held_count)).await;
                        }
                    }
                    Some(Inbound::Frame(PeerMsg::Flushed)) => peer_flushed = true,
                    Some(Inbound::Frame(_)) => {
                        return self.fail(CloseCode::PROTOCOL_ERROR, format!("{} sent a frame out of order", self.peer));
                    }
                    Some(Inbound::Bad(why, code)) => return self.fail(code, format!("{} sent bad data: {why}", self.peer)),
                    Some(Inbound::Eof) | None => {
                        if self.kind == RequestKind::Chat {
                            // A chat peer never finishes its stream; wait for the close.
                            let err = self.conn.closed().await;
                            return end_reason(&err);
                        }
                        if !(peer_flushed && outstanding.is_empty()) {
                            return self.fail(CloseCode::PROTOCOL_ERROR, format!("{} ended the delivery early", self.peer));
                        }
                        peer_eof = true;
                    }
                },
            }
        }
    }
}
