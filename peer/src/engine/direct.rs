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
use common::wire::{encode, read_frame, write_frame, WireError};
use common::Fingerprint;
use quinn::{RecvStream, SendStream};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Time allowed to reach a candidate, and for the hello exchange.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames a peer may send in a burst, then per second.
const FRAME_BURST: u32 = 5000;
const FRAME_RATE: u32 = 2000;
/// Frames written in one go while sending held messages.
const WRITE_CHUNK: usize = 64;
/// Batches of frames queued for a session's writer; a peer that lets more
/// pile up is not reading and is closed.
const WRITE_QUEUE: usize = 1024;
/// A delivery with no frame from the other side for this long is closed.
const DELIVERY_IDLE: Duration = Duration::from_secs(30);
/// Most inbound frames handled (and stored) together.
const MAX_BATCH: usize = 256;
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

/// How long the dialer waits for the acceptor's punch to go out first.
const PUNCH_HEAD_START: Duration = Duration::from_millis(300);
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

/// Aborts a task when dropped, so a session's writer ends with it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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

/// What the session loop hands its writer.
enum Out {
    /// Frames to write, in order.
    Frames(Vec<PeerMsg>),
    /// Finish the stream (a delivery is over).
    Finish,
}

/// Writes frames for one session: first `first` (the held messages and
/// `Flushed`), then whatever the session loop queues. Writing in its own
/// task means the loop keeps reading (and acknowledging) while a write
/// waits for flow control, so two peers sending to each other at once
/// cannot block each other.
async fn write_peer(mut send: SendStream, first: Vec<PeerMsg>, mut rx: mpsc::Receiver<Out>) {
    for chunk in first.chunks(WRITE_CHUNK) {
        if write_frames(&mut send, chunk).await.is_err() {
            return;
        }
    }
    while let Some(out) = rx.recv().await {
        match out {
            Out::Frames(frames) => {
                if write_frames(&mut send, &frames).await.is_err() {
                    return;
                }
            }
            Out::Finish => {
                let _ = send.finish();
            }
        }
    }
}

async fn write_frames(send: &mut SendStream, frames: &[PeerMsg]) -> Result<(), WireError> {
    let mut bytes = Vec::new();
    for f in frames {
        bytes.extend(encode(f)?);
    }
    send.write_all(&bytes)
        .await
        .map_err(|e| WireError::Io(e.into()))
}

impl Session {
    /// Runs the session until the connection ends; reports through `events`.
    pub async fn run(self, send: SendStream, recv: RecvStream, mut cmds: mpsc::Receiver<LinkCmd>) {
        let (in_tx, mut in_rx) = mpsc::channel(64);
        let reader = tokio::spawn(read_peer(recv, in_tx));
        let end = match self.exchange(send, &mut in_rx, &mut cmds).await {
            Ok(end) | Err(end) => end,
        };
        reader.abort();
        let _ = self
            .events
            .send(NetEvent::Link(self.link, LinkEvent::Ended(end)))
            .await;
    }

    async fn report(&self, ev: LinkEvent) {
        let _ = self.events.send(NetEvent::Link(self.link, ev)).await;
    }

    /// Ends the session for `why`, closing with `code`. A read or write that
    /// failed because the connection had already closed ends it the way the
    /// close says instead (a peer that signed out is not a protocol error).
    fn fail(&self, code: CloseCode, why: String) -> ChatEnd {
        if let Some(reason) = self.conn.close_reason() {
            return end_reason(&reason);
        }
        tracing::warn!(peer = %self.peer, reason = %why, "closing direct connection");
        close::close(&self.conn, code);
        ChatEnd::ProtocolError(why)
    }

    /// Queues frames for the writer; a peer that lets the queue fill up is
    /// not reading, and is closed.
    fn queue(&self, out: &mpsc::Sender<Out>, item: Out) -> Result<(), ChatEnd> {
        out.try_send(item).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => self.fail(
                CloseCode::TOO_SLOW,
                format!("{} is not reading its messages", self.peer),
            ),
            mpsc::error::TrySendError::Closed(_) => self.fail(
                CloseCode::PROTOCOL_ERROR,
                format!("writing to {} failed", self.peer),
            ),
        })
    }

    /// The session proper; `Err` carries the end of a failed session.
    async fn exchange(
        &self,
        send: SendStream,
        in_rx: &mut mpsc::Receiver<Inbound>,
        cmds: &mut mpsc::Receiver<LinkCmd>,
    ) -> Result<ChatEnd, ChatEnd> {
        // Held messages first: their acks are counted to tell the user.
        let held = self
            .store
            .undelivered(&self.peer)
            .await
            .map_err(|e| self.internal(e))?;
        let mut progress = Progress {
            waiting_held: held.iter().map(|m| m.id).collect(),
            held_count: held.len(),
            outstanding: held.iter().map(|m| m.id).collect(),
            peer_flushed: false,
            peer_eof: false,
        };
        let mut first: Vec<PeerMsg> = held.into_iter().map(PeerMsg::Message).collect();
        first.push(PeerMsg::Flushed);
        let (out, out_rx) = mpsc::channel(WRITE_QUEUE);
        let mut writer = AbortOnDrop(tokio::spawn(write_peer(send, first, out_rx)));
        let idle = tokio::time::sleep(DELIVERY_IDLE);
        tokio::pin!(idle);
        let mut finished = false;
        loop {
            let delivery_done = self.kind == RequestKind::Deliver && progress.done();
            if delivery_done && !finished {
                self.queue(&out, Out::Finish)?;
                finished = true;
            }
            if delivery_done && progress.peer_eof {
                // Let the writer's last bytes go before the close.
                drop(out);
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer.0).await;
                close::close(&self.conn, CloseCode::NORMAL);
                return Ok(ChatEnd::PeerLeft);
            }
            tokio::select! {
                biased;
                err = self.conn.closed() => return Ok(end_reason(&err)),
                _ = &mut idle, if self.kind == RequestKind::Deliver => {
                    let why = format!("the delivery with {} made no progress", self.peer);
                    return Err(self.fail(CloseCode::TIMEOUT, why));
                }
                cmd = cmds.recv() => match cmd {
                    Some(LinkCmd::Send(m)) if !finished => {
                        progress.outstanding.insert(m.id);
                        self.queue(&out, Out::Frames(vec![PeerMsg::Message(m)]))?;
                    }
                    Some(LinkCmd::Send(_)) => {}
                    Some(LinkCmd::Close(code)) => {
                        close::close(&self.conn, code);
                        return Ok(if code == CloseCode::SIGNED_OUT { ChatEnd::PeerSignedOut } else { ChatEnd::YouLeft });
                    }
                    None => {
                        close::close(&self.conn, CloseCode::SIGNED_OUT);
                        return Ok(ChatEnd::YouLeft);
                    }
                },
                inbound = in_rx.recv() => {
                    idle.as_mut().reset(tokio::time::Instant::now() + DELIVERY_IDLE);
                    // Take everything already read, so that storage and
                    // acknowledgements are batched under load.
                    let mut batch = vec![inbound.unwrap_or(Inbound::Eof)];
                    while batch.len() < MAX_BATCH {
                        match in_rx.try_recv() {
                            Ok(item) => batch.push(item),
                            Err(_) => break,
                        }
                    }
                    if let Some(end) = self.on_inbound(batch, &out, &mut progress).await? {
                        return Ok(end);
                    }
                }
            }
        }
    }

    /// Handles a batch of inbound items in order: messages are stored (in one
    /// transaction) and then acknowledged, acknowledgements mark messages
    /// delivered. `Some` ends the session.
    async fn on_inbound(
        &self,
        batch: Vec<Inbound>,
        out: &mpsc::Sender<Out>,
        progress: &mut Progress,
    ) -> Result<Option<ChatEnd>, ChatEnd> {
        let mut messages = Vec::new();
        let mut acks = Vec::new();
        let mut last = None;
        for item in batch {
            match item {
                Inbound::Frame(PeerMsg::Message(m)) => {
                    if let Err(e) = check_message(&m.body) {
                        let why = format!("{} sent an invalid message: {e}", self.peer);
                        return Err(self.fail(CloseCode::PROTOCOL_ERROR, why));
                    }
                    messages.push(m);
                }
                Inbound::Frame(PeerMsg::Ack { id }) => acks.push(id),
                Inbound::Frame(PeerMsg::Flushed) => progress.peer_flushed = true,
                other => {
                    last = Some(other);
                    break;
                }
            }
        }
        if !messages.is_empty() {
            let fresh = self
                .store
                .add_incoming(&self.peer, messages.clone())
                .await
                .map_err(|e| self.internal(e))?;
            let reply: Vec<PeerMsg> = messages.iter().map(|m| PeerMsg::Ack { id: m.id }).collect();
            for (m, new) in messages.into_iter().zip(fresh) {
                if new {
                    self.report(LinkEvent::Received(m)).await;
                }
            }
            self.queue(out, Out::Frames(reply))?;
        }
        if !acks.is_empty() {
            self.store
                .mark_delivered(&self.peer, acks.clone())
                .await
                .map_err(|e| self.internal(e))?;
            for id in acks {
                progress.outstanding.remove(&id);
                if progress.waiting_held.remove(&id) && progress.waiting_held.is_empty() {
                    self.report(LinkEvent::HeldDelivered(progress.held_count))
                        .await;
                }
            }
        }
        match last {
            None => Ok(None),
            Some(Inbound::Frame(_)) => {
                let why = format!("{} sent a frame out of order", self.peer);
                Err(self.fail(CloseCode::PROTOCOL_ERROR, why))
            }
            Some(Inbound::Bad(why, code)) => {
                Err(self.fail(code, format!("{} sent bad data: {why}", self.peer)))
            }
            Some(Inbound::Eof) if self.kind == RequestKind::Chat => {
                // A chat peer closes the connection; it never finishes its stream.
                let why = format!("{} ended its stream during a chat", self.peer);
                Err(self.fail(CloseCode::PROTOCOL_ERROR, why))
            }
            Some(Inbound::Eof) if progress.done() => {
                progress.peer_eof = true;
                Ok(None)
            }
            Some(Inbound::Eof) => {
                let why = format!("{} ended the delivery early", self.peer);
                Err(self.fail(CloseCode::PROTOCOL_ERROR, why))
            }
        }
    }

    fn internal(&self, e: common::db::DbError) -> ChatEnd {
        self.fail(
            CloseCode::INTERNAL,
            format!("your message store failed: {e}"),
        )
    }
}

/// What a session has sent and received so far.
struct Progress {
    /// Messages that were waiting at the start and are not acknowledged yet.
    waiting_held: HashSet<MessageId>,
    /// How many were waiting at the start.
    held_count: usize,
    /// Every message sent and not acknowledged yet.
    outstanding: HashSet<MessageId>,
    /// The other side has sent everything it held for us.
    peer_flushed: bool,
    /// The other side finished its stream (a delivery is over).
    peer_eof: bool,
}

impl Progress {
    /// Both sides have delivered everything they held.
    fn done(&self) -> bool {
        self.peer_flushed && self.outstanding.is_empty()
    }
}
